"""One gateway pair on Redis: what only Redis has (SPEC §9, issue 8). The
rules every shared store keeps across two gateways are in test_two_nodes.py;
here, with redis-server (redis_server.py, one per session, a key prefix per
test):

  - Redis killed under load: 503, nothing forwarded, health says so; back
    on the same port, service resumes by itself, and every completed key
    replays (appendfsync always); killed with requests in flight, no key
    runs twice and no client's answer changes;
  - an evicting maxmemory-policy is refused unless allow_eviction=1;
  - a write whose answer is lost on the way back (the connection cut)
    is read back, not taken for an unknown outcome;
  - the ready gateway (idemgate --store redis://...) does the same.
"""

import concurrent.futures
import os
import signal
import subprocess
import time

import pytest
import requests

from conftest import BUILD, SANITIZER, free_port, unique_key, wait_port
from redis_server import CuttingProxy
from redis_server import redis_prefix, redis_server, redis_url  # noqa: F401

DIRECTIVES = ["idempotency_wait 5s;", "idempotency_lease 15s;"]


def replayed(resp):
    return resp.headers.get("Idempotent-Replayed") == "true"


def wait_for(predicate, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture
def two_nodes(gateway_factory, redis_url):
    """Two gateways (two workers each) on one Redis."""
    return [gateway_factory(store=redis_url, workers=2, directives=DIRECTIVES)
            for _ in range(2)]


def test_redis_down_fails_closed_and_heals_by_itself(two_nodes, upstream,
                                                     redis_server):
    a, b = two_nodes
    kept = unique_key("kept")
    assert a.post(key=kept, json_body={"n": 1}).status_code == 201
    total = upstream.total()

    redis_server.kill9()
    try:
        answers = []
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            answers = list(ex.map(
                lambda i: two_nodes[i % 2].post(key=unique_key("down"),
                                                json_body={"i": i}),
                range(24)))
        assert [r.status_code for r in answers] == [503] * 24
        assert b.post(key=kept, json_body={"n": 1}).status_code == 503
        assert upstream.total() == total  # nothing forwarded

        def failing(g):
            h = g.health()
            return h.status_code == 503 and "unreachable" in h.text

        for g in two_nodes:
            assert wait_for(lambda: failing(g), 5), g.health().text
            assert g.metrics()["idemgate_store_healthy"] == 0
            assert "unavailable: redis 127.0.0.1:%d is unreachable" % \
                redis_server.port in g.error_log()
    finally:
        redis_server.start()

    fresh = unique_key("back")
    assert wait_for(lambda: a.post(key=fresh, json_body={}).status_code
                    == 201, 5)
    for g in two_nodes:
        assert wait_for(lambda: g.health().status_code == 200, 5)
        r = g.post(key=kept, json_body={"n": 1})
        assert r.status_code == 201 and replayed(r)
        assert wait_for(lambda: "answers again: serving new keys" in g.error_log(), 3)
    assert upstream.executions(fresh) == 1
    assert upstream.executions(kept) == 1


def test_every_completed_key_survives_a_redis_crash(two_nodes, upstream,
                                                    redis_server):
    a, b = two_nodes
    keys = [unique_key("durable") for _ in range(40)]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        firsts = list(ex.map(lambda i: two_nodes[i % 2].post(
            key=keys[i], json_body={"i": i}), range(len(keys))))
    assert [r.status_code for r in firsts] == [201] * len(keys)

    redis_server.kill9()  # appendfsync always: every answer was on disk
    redis_server.start()

    for i, key in enumerate(keys):
        def replay():
            r = two_nodes[(i + 1) % 2].post(key=key, json_body={"i": i})
            return r if r.status_code != 503 else None
        r = None
        deadline = time.time() + 5
        while r is None and time.time() < deadline:
            r = replay()
            if r is None:
                time.sleep(0.05)
        assert r is not None and r.status_code == 201 and replayed(r)
        assert r.content == firsts[i].content
        assert upstream.executions(key) == 1


def test_an_evicting_policy_is_refused_unless_allowed(
        gateway_factory, upstream, redis_server, redis_prefix):
    redis_server.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    try:
        g = gateway_factory(store=redis_server.url(redis_prefix))
        key = unique_key("evict")
        r = g.post(key=key, json_body={})
        assert r.status_code == 503
        assert upstream.executions(key) == 0
        assert wait_for(lambda: "maxmemory-policy" in g.error_log(), 3)
        h = g.health()
        assert h.status_code == 503 and "maxmemory-policy" in h.text

        ok = gateway_factory(store=redis_server.url(redis_prefix,
                                                    "allow_eviction=1"))
        r = ok.post(key=key, json_body={})
        assert r.status_code == 201
        assert upstream.executions(key) == 1
    finally:
        redis_server.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")


def test_the_ready_gateway_runs_on_redis(upstream, redis_url, tmp_path):
    """idemgate --store redis://...: two gateways, one key, one execution."""
    env = dict(os.environ, TMPDIR="/tmp")
    if SANITIZER == "address":  # the module is built with ASan: preload it
        env["LD_PRELOAD"] = subprocess.check_output(
            ["gcc", "-print-file-name=libasan.so"], text=True).strip()
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"
    procs, ports = [], []
    try:
        for _ in range(2):
            port, admin = free_port(), free_port()
            procs.append(subprocess.Popen(
                [os.path.join(BUILD, "idemgate"),
                 "--listen", "127.0.0.1:%d" % port,
                 "--upstream", upstream.url, "--admin", "127.0.0.1:%d" % admin,
                 "--store", redis_url, "--workers", "1"],
                cwd=str(tmp_path), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
                env=env))
            wait_port(port, proc=procs[-1])
            wait_port(admin, proc=procs[-1])
            ports.append((port, admin))
        key = unique_key("cli")
        answers = [requests.post("http://127.0.0.1:%d/api/v1/inquiries" % p,
                                 json={"n": 1}, timeout=10,
                                 headers={"Idempotency-Key": key})
                   for p, _ in ports]
        assert [r.status_code for r in answers] == [201, 201]
        assert not replayed(answers[0]) and replayed(answers[1])
        assert answers[0].content == answers[1].content
        assert upstream.executions(key) == 1
        for _, admin in ports:
            h = requests.get("http://127.0.0.1:%d/healthz" % admin, timeout=5)
            assert h.status_code == 200, h.text
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


def test_a_lost_answer_to_a_write_is_read_back(gateway_factory, upstream,
                                              redis_server, redis_prefix):
    proxy = CuttingProxy(redis_server.port)
    try:
        g = gateway_factory(
            store="redis://127.0.0.1:%d?prefix=%s" % (proxy.port,
                                                      redis_prefix),
            directives=DIRECTIVES)
        key = unique_key("cut")
        proxy.cut(2)  # the claim's answer, then the complete's
        r = g.post(key=key, json_body={"n": 1})
        why = "cut %r; answer %d %r; error log:\n%s" % (
            proxy.cut_log, r.status_code, r.text, g.error_log()[-4000:])
        assert r.status_code == 201 and not replayed(r), why
        assert proxy.cuts == 2, why
        again = g.post(key=key, json_body={"n": 1})
        assert again.status_code == 201 and replayed(again)
        assert again.content == r.content
        assert upstream.executions(key) == 1
    finally:
        proxy.close()


def test_the_ready_gateway_refuses_an_evicting_redis(redis_server,
                                                      redis_prefix, upstream):
    redis_server.cli("CONFIG", "SET", "maxmemory-policy", "volatile-lru")
    try:
        out = subprocess.run(
            [os.path.join(BUILD, "idemgate"),
             "--listen", "127.0.0.1:%d" % free_port(),
             "--upstream", upstream.url, "--admin", "off",
             "--store", redis_server.url(redis_prefix)],
            capture_output=True, text=True, timeout=20)
        assert out.returncode != 0
        assert "maxmemory-policy" in out.stderr, out.stderr
    finally:
        redis_server.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")


def test_redis_killed_mid_flight_never_runs_a_key_twice(
        gateway_factory, upstream, redis_server, redis_url):
    nodes = [gateway_factory(store=redis_url, workers=2,
                             directives=["idempotency_wait 3s;",
                                         "idempotency_lease 1s;"])
             for _ in range(2)]
    keys = [unique_key("flight") for _ in range(12)]

    def first(i):
        try:
            return nodes[i % 2].post(key=keys[i], json_body={"i": i},
                                     headers={"X-Demo-Delay-Ms": "400"})
        except requests.RequestException:
            return None

    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        futs = [ex.submit(first, i) for i in range(len(keys))]
        time.sleep(0.2)  # claimed and forwarded; the upstream still works
        redis_server.kill9()
        answers = [f.result() for f in futs]
    redis_server.start()
    time.sleep(1.2)  # every lease has passed
    for i, key in enumerate(keys):
        assert upstream.executions(key) <= 1
        again = nodes[(i + 1) % 2].post(key=key, json_body={"i": i})
        a = answers[i]
        if a is not None and a.status_code == 201:
            # a client that got an answer gets the same one again
            assert again.status_code == 201 and replayed(again)
            assert again.content == a.content
        assert upstream.executions(key) <= 1, again.status_code
        # and once more: nothing changes any longer
        third = nodes[i % 2].post(key=key, json_body={"i": i})
        assert (third.status_code, third.content) == \
            (again.status_code, again.content)
        assert upstream.executions(key) <= 1
