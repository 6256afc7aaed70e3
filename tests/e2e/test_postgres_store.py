"""One gateway pair on PostgreSQL: what only PostgreSQL has (SPEC §9). The
rules every shared store keeps across two gateways are in
test_two_nodes.py; here, on a throwaway cluster (postgres_server.py), each
test in a table of its own: the store going away under load means 503s and
nothing forwarded, and service comes back by itself; a restart of
PostgreSQL keeps every completed key; expired rows are pruned in bounded
batches.

`upstream.executions(key)` is the number of times a key was forwarded.
"""

import concurrent.futures
import threading
import time

import pytest
import requests

from conftest import unique_key
from postgres_server import pg_store, postgres  # noqa: F401 (fixtures)

UNKNOWN_TITLE = "Upstream outcome unknown"


def replayed(resp):
    return resp.headers.get("Idempotent-Replayed") == "true"


def wait_for(predicate, timeout, step=0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture
def two_gateways(gateway_factory, pg_store):
    """Two gateways of two workers each on this test's table."""
    url, _ = pg_store

    def make(directives=("idempotency_wait 5s;", "idempotency_lease 15s;"),
             **kw):
        return [gateway_factory(store=url, workers=2, directives=directives,
                                **kw) for _ in range(2)]
    return make


def test_postgres_down_under_load_is_503_nothing_forwarded_then_back(
        two_gateways, upstream, postgres):
    gateways = two_gateways()
    done = unique_key("pgbefore")
    assert gateways[0].post(key=done, json_body={}).status_code == 201

    answers = []  # (time, key, status)
    lock = threading.Lock()
    stop = threading.Event()

    def load(n):
        session = requests.Session()
        i = 0
        while not stop.is_set():
            key = "pgload%d_%d_%s" % (n, i, unique_key(""))
            i += 1
            try:
                r = session.post(gateways[n % 2].url + "/api/v1/inquiries",
                                 json={"n": i}, headers={"Idempotency-Key": key},
                                 timeout=10)
                status = r.status_code
            except requests.RequestException:
                status = None
            with lock:
                answers.append((time.time(), key, status))
            time.sleep(0.01)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        postgres.stop("immediate")
        down_at = time.time()
        time.sleep(1.5)
        up_at = time.time()
        postgres.start()
        # service resumes by itself, on both gateways, nginx untouched
        back = wait_for(lambda: any(t > up_at and s == 201
                                    for t, _, s in list(answers)), 10.0)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert back, "no 201 after PostgreSQL came back"
    first_back = min(t for t, _, s in answers if t > up_at and s == 201)
    print("PostgreSQL down %.1fs: %d answers 503; service back %.2fs after "
          "the start returned" % (up_at - down_at,
                                  sum(1 for _, _, s in answers if s == 503),
                                  first_back - up_at))
    # 504: forwarded just before the stop, its response could not be
    # stored, so the client gets the unknown outcome its key will keep
    statuses = {s for _, _, s in answers}
    assert statuses <= {201, 503, 504}, statuses
    during = [(k, s) for t, k, s in answers if down_at + 0.2 < t < up_at]
    assert during and all(s == 503 for _, s in during), during[:5]
    # every 503 forwarded nothing (fail closed); every 201 ran once
    for _, k, s in answers:
        want = {201: (1,), 503: (0,), 504: (0, 1)}[s]
        assert upstream.executions(k) in want, (k, s)
    for g in gateways:
        # every worker of both gateways heals (each within its backoff)
        for _ in range(8):
            assert wait_for(lambda: g.post(key=unique_key("pgafter"),
                                           json_body={}).status_code == 201,
                            5.0, step=0.1)
        r = g.post(key=done, json_body={})
        assert r.status_code == 201 and replayed(r)
        # each worker's store check (once a second) said so, both ways
        log = g.error_log()
        assert "unavailable: PostgreSQL is unreachable" in log
        assert wait_for(lambda: "answers again: serving new keys"
                        in g.error_log(), 3.0)
    assert upstream.executions(done) == 1


def test_a_postgres_restart_keeps_every_completed_key(two_gateways, upstream,
                                                      postgres):
    gateways = two_gateways()
    keys = [unique_key("pgdurable") for _ in range(20)]
    first = {}
    for i, k in enumerate(keys):
        r = gateways[i % 2].post(key=k, json_body={"i": i})
        assert r.status_code == 201
        first[k] = r.content
    postgres.stop("immediate")  # a crash: no checkpoint, no clean shutdown
    postgres.start()
    for i, k in enumerate(keys):
        # the gateways reconnect by themselves (a 503 or two at most)
        r = gateways[(i + 1) % 2].post(key=k, json_body={"i": i})
        if r.status_code == 503:
            time.sleep(1.1)
            r = gateways[(i + 1) % 2].post(key=k, json_body={"i": i})
        assert r.status_code == 201 and replayed(r), r.text
        assert r.content == first[k]
        assert upstream.executions(k) == 1


def test_expired_rows_are_pruned_in_bounded_batches(gateway_factory, pg_store,
                                                   postgres):
    url, table = pg_store
    # the TTL outlasts the 60 writes below, two synchronous commits each on
    # a slow disk: none may expire before they are counted
    g = gateway_factory(store=url, directives=["idempotency_ttl 4s;"],
                        prune_interval="500ms")
    # a small prune budget: the directive is the http block's
    g.stop()
    g.conf = g.conf.replace("idempotency_prune_interval 500ms;",
                            "idempotency_prune_interval 500ms;\n"
                            "    idempotency_prune_budget 7;")
    with open(g.run + "/nginx.conf", "w") as f:
        f.write(g.conf)
    g.start()
    n = 60
    for i in range(n):
        assert g.post(key=unique_key("pgprune"),
                      json_body={"i": i}).status_code == 201
    count = lambda: int(postgres.sql("SELECT count(*) FROM %s" % table))  # noqa
    assert count() == n
    seen = set()
    deadline = time.time() + 15
    while time.time() < deadline:
        c = count()
        seen.add(c)
        if c == 0:
            break
        time.sleep(0.005)
    assert count() == 0, "expired rows were not pruned"
    # the rows went in batches of at most 7, not in one DELETE
    assert any(0 < c < n for c in seen), sorted(seen)
    assert g.metrics()["idemgate_pruned_total"] == n
