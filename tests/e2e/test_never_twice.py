"""Never twice: at most one forward per key, whatever happens to the gateway.

SPEC §3, §4, §9 and §10 under the things that really happen to a gateway:
many workers and several gateways on one LMDB store, slow upstreams and
leases, crashes at each step of a request (failpoints, compiled into test
builds only), SIGKILL of one worker, SIGKILL of the whole gateway at random
moments, reload and graceful stop under load, and a store that cannot be
written or is full. Each test is named after the rule it checks.

The upstream is the demo Inquiries API, which counts every request it
receives per Idempotency-Key: `upstream.executions(key)` is the number of
times a key was forwarded.

Environment: IDEM_SOAK_SECONDS (default 30) is how long the kill -9 soak
runs; IDEM_SOAK_SEED replays one soak's random choices (it prints its seed).
"""

import concurrent.futures
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time

import pytest
import requests

from conftest import has_failpoints, unique_key

UNKNOWN_TITLE = "Upstream outcome unknown"
WARN_SETTLED = "the claim was settled meanwhile"

needs_failpoints = pytest.mark.skipif(
    not has_failpoints(),
    reason="the module was built without failpoints: build it with "
           "`make FAILPOINTS=1 module` and run with IDEM_BUILD=build-test "
           "(or a sanitizer build)")


def replayed(resp):
    return resp.headers.get("Idempotent-Replayed") == "true"


def answer(resp):
    """What a client keeps of an answer: status and body bytes."""
    return resp.status_code, resp.content


def expect_unknown_outcome_replay(resp):
    assert resp.status_code == 504, resp.text
    assert replayed(resp)
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["errors"][0]["title"] == UNKNOWN_TITLE


def wait_for(predicate, timeout, step=0.02):
    """Polls predicate until it is true or timeout seconds have passed."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def post_lost(gateway, key, **kw):
    """A request whose answer is lost to a crash: a connection error."""
    with pytest.raises(requests.RequestException):
        gateway.post(key=key, **kw)


# --- many workers, many gateways, one store (§4, §9) -------------------------

def test_duplicates_across_workers_and_gateways_reach_upstream_once(
        gateway_factory, upstream):
    g1 = gateway_factory(workers=2)
    g2 = gateway_factory(workers=2, data=g1.data)
    key = unique_key("spread")
    gateways = [g1, g2]

    def one(i):
        return gateways[i % 2].post(key=key, json_body={"name": "Jane"},
                                    headers={"X-Demo-Delay-Ms": "300"})

    with concurrent.futures.ThreadPoolExecutor(24) as ex:
        results = list(ex.map(one, range(24)))

    assert [r.status_code for r in results] == [201] * 24
    assert len({r.content for r in results}) == 1
    assert sum(1 for r in results if not replayed(r)) == 1
    assert upstream.executions(key) == 1
    # both gateways see the one record
    for g in gateways:
        assert g.admin_get(key).json()["state"] == "complete"
        assert g.post(key=key, json_body={"name": "Jane"}).content == \
            results[0].content
    assert upstream.executions(key) == 1


# --- leases (§4) -------------------------------------------------------------

def test_slow_upstream_inside_its_lease_is_never_taken_for_dead(
        gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_lease 3s;",
                                    "idempotency_wait 5s;"])
    key = unique_key("inlease")
    h = {"X-Demo-Delay-Ms": "1500"}
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        t0 = time.time()
        first = ex.submit(g.post, key=key, json_body={}, headers=h)
        dups = []
        for at in (0.3, 0.7, 1.1):
            time.sleep(max(0.0, t0 + at - time.time()))
            dups.append(ex.submit(g.post, key=key, json_body={}, headers=h))
        a = first.result()
        others = [f.result() for f in dups]
    assert a.status_code == 201 and not replayed(a)
    for r in others:
        assert r.status_code == 201
        assert replayed(r)
        assert r.content == a.content
    assert upstream.executions(key) == 1
    m = g.metrics()
    assert m["idemgate_unknown_outcomes_total"] == 0
    assert m["idemgate_late_completes_total"] == 0


def test_owner_past_its_lease_is_fenced_and_the_key_keeps_the_504(
        gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_lease 1s;",
                                    "idempotency_wait 5s;"],
                        read_timeout="10s")
    key = unique_key("fence")
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        first = ex.submit(g.post, key=key, json_body={},
                          headers={"X-Demo-Delay-Ms": "2500"})
        time.sleep(1.3)
        # the lease has passed: the outcome is unknown, the key is settled
        dup = g.post(key=key, json_body={})
        expect_unknown_outcome_replay(dup)
        assert upstream.executions(key) == 1
        late = first.result()
    # the first request's 201 came back after that: its complete is refused,
    # and its client gets the answer the key keeps, not an unstored 201
    assert late.status_code == dup.status_code
    assert late.content == dup.content
    assert wait_for(lambda: WARN_SETTLED in g.error_log(), 2.0), \
        "no warning about the late complete in the error log"
    assert g.metrics()["idemgate_late_completes_total"] >= 1
    again = g.post(key=key, json_body={})
    expect_unknown_outcome_replay(again)
    assert again.content == dup.content
    assert g.admin_get(key).json()["unknown_outcome"] is True
    assert upstream.executions(key) == 1


def test_duplicate_after_the_lease_executes_anew_under_release(
        gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_lease 1s;",
                                    "idempotency_wait 5s;",
                                    "idempotency_on_unknown release;"],
                        read_timeout="10s")
    key = unique_key("relstale")
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        first = ex.submit(g.post, key=key, json_body={},
                          headers={"X-Demo-Delay-Ms": "2500"})
        time.sleep(1.3)
        dup = g.post(key=key, json_body={})
        assert dup.status_code == 201
        assert not replayed(dup)
        assert upstream.executions(key) == 2
        first.result()
    # the first owner was fenced off: the key holds the duplicate's result
    assert wait_for(lambda: WARN_SETTLED in g.error_log(), 2.0)
    assert g.metrics()["idemgate_late_completes_total"] >= 1
    again = g.post(key=key, json_body={})
    assert replayed(again)
    assert answer(again) == answer(dup)
    assert upstream.executions(key) == 2


# --- crashes (§9, §10: a crash is all processes at once) ---------------------

LEASE_1S = ["idempotency_lease 1s;", "idempotency_wait 3s;"]


@needs_failpoints
def test_crash_after_claim_leaves_an_unknown_outcome_never_an_execution(
        gateway_factory, upstream):
    prefix = "fpclaim%s_" % os.urandom(3).hex()
    g = gateway_factory(directives=LEASE_1S,
                        failpoints="after_claim:crash:" + prefix)
    key = prefix + "a"
    post_lost(g, key, json_body={"a": 1})
    g.kill9()          # reaps what the failpoint killed
    g.start()
    rec = g.admin_get(key).json()
    assert rec["state"] == "in_progress"
    assert upstream.executions(key) == 0
    time.sleep(1.1)
    r = g.post(key=key, json_body={"a": 1})
    expect_unknown_outcome_replay(r)
    assert upstream.executions(key) == 0
    assert g.post(key=key, json_body={"a": 1}).content == r.content
    assert "failpoint after_claim fires" in g.error_log()


@needs_failpoints
def test_crash_after_forward_never_forwards_the_key_again(
        gateway_factory, upstream):
    prefix = "fpfwd%s_" % os.urandom(3).hex()
    g = gateway_factory(directives=LEASE_1S,
                        failpoints="after_forward:crash:" + prefix)
    key = prefix + "a"
    post_lost(g, key, json_body={"a": 1})
    g.kill9()
    g.start()
    assert upstream.executions(key) == 1
    assert g.admin_get(key).json()["state"] == "in_progress"
    time.sleep(1.1)
    for _ in range(3):
        expect_unknown_outcome_replay(g.post(key=key, json_body={"a": 1}))
    assert upstream.executions(key) == 1


@needs_failpoints
def test_crash_after_complete_replays_the_stored_answer(
        gateway_factory, upstream):
    prefix = "fpdone%s_" % os.urandom(3).hex()
    g = gateway_factory(directives=LEASE_1S,
                        failpoints="after_complete:crash:" + prefix)
    key = prefix + "a"
    post_lost(g, key, json_body={"a": 1})
    g.kill9()
    g.start()
    # no lease to wait for: the answer was durable before the crash
    r = g.post(key=key, json_body={"a": 1})
    assert r.status_code == 201
    assert replayed(r)
    assert r.json()["data"]["type"] == "inquiry"
    assert g.admin_get(key).json()["state"] == "complete"
    assert upstream.executions(key) == 1


def wait_for_workers(g, n, timeout=10.0):
    assert wait_for(lambda: len(g.worker_pids()) == n, timeout), \
        "nginx did not respawn its workers: %s" % g.worker_pids()


@needs_failpoints
def test_killed_worker_is_respawned_and_its_key_settled_once(
        gateway_factory, upstream):
    prefix = "fpwrk%s_" % os.urandom(3).hex()
    g = gateway_factory(workers=2, directives=LEASE_1S,
                        failpoints="after_forward:worker:" + prefix)
    master = g.proc.pid
    before = set(g.worker_pids())
    key = prefix + "a"
    post_lost(g, key, json_body={"a": 1})
    wait_for_workers(g, 2)
    assert g.proc.poll() is None and g.proc.pid == master
    assert set(g.worker_pids()) != before
    # service goes on, no restart
    other = unique_key("afterworker")
    assert g.post(key=other, json_body={}).status_code == 201
    time.sleep(1.1)
    expect_unknown_outcome_replay(g.post(key=key, json_body={"a": 1}))
    assert upstream.executions(key) == 1
    assert upstream.executions(other) == 1


@needs_failpoints
def test_worker_killed_in_its_commit_turn_leaves_the_turn_to_the_others(
        gateway_factory, upstream):
    # the workers take turns to commit (a robust process-shared mutex):
    # a worker killed holding the turn, its batch not committed, leaves
    # it to the next one; new keys keep being served by both workers, and
    # the lost request never reached the API (its key's every request meets
    # the failpoint again, so it is not retried here)
    prefix = "fpturn%s_" % os.urandom(3).hex()
    g = gateway_factory(workers=2,
                        failpoints="in_commit_turn:worker:" + prefix)
    before = set(g.worker_pids())
    key = prefix + "a"
    post_lost(g, key, json_body={"a": 1})
    wait_for_workers(g, 2)
    assert set(g.worker_pids()) != before
    keys = [unique_key("afterturn") for _ in range(40)]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        answers = list(ex.map(lambda k: g.post(key=k, json_body={"k": k}),
                              keys))
    assert [a.status_code for a in answers] == [201] * len(keys)
    assert all(upstream.executions(k) == 1 for k in keys)
    assert upstream.executions(key) == 0


@needs_failpoints
def test_a_claim_committed_as_its_worker_stops_is_released_at_once(
        gateway_factory, upstream):
    # the batch with the key is still committing (stalled a second in its
    # commit turn) when nginx is told to stop: the worker waits for it, but
    # its event loop does not run again, so the claim it made reaches no
    # request and nothing goes upstream; the worker releases it on its way
    # out, and the key is free at once, not at the end of its lease
    prefix = "fpstall%s_" % os.urandom(3).hex()
    g = gateway_factory(failpoints="in_commit_turn:stall:" + prefix,
                        directives=["idempotency_lease 60s;"])
    key = prefix + "a"
    t = threading.Thread(target=post_lost, args=(g, key),
                         kwargs=dict(json_body={"a": 1}))
    t.start()
    assert wait_for(lambda: "failpoint in_commit_turn fires" in g.error_log(),
                    5.0)
    g.proc.send_signal(signal.SIGQUIT)
    assert g.proc.wait(10) == 0
    t.join()
    g.failpoints = None
    g.start()
    assert g.admin_get(key).status_code == 404
    assert upstream.executions(key) == 0
    r = g.post(key=key, json_body={"a": 1})
    assert r.status_code == 201
    assert upstream.executions(key) == 1


def test_sigkill_of_a_worker_mid_request_settles_its_key_once(
        gateway_factory, upstream):
    g = gateway_factory(workers=1, directives=LEASE_1S)
    [worker] = g.worker_pids()
    key = unique_key("wkill")
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(g.post, key=key, json_body={"a": 1},
                        headers={"X-Demo-Delay-Ms": "1500"})
        assert wait_for(lambda: upstream.executions(key) == 1, 5.0)
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(requests.RequestException):
            fut.result()
    wait_for_workers(g, 1)
    assert g.worker_pids() != [worker]
    other = unique_key("afterkill")
    assert g.post(key=other, json_body={}).status_code == 201
    time.sleep(1.1)
    expect_unknown_outcome_replay(g.post(key=key, json_body={"a": 1}))
    assert upstream.executions(key) == 1


# --- soak: kill -9 of the whole gateway at random moments --------------------

SOAK_SECONDS = float(os.environ.get("IDEM_SOAK_SECONDS", "30"))
SOAK_KEYS = 160


def test_random_kill9_soak_never_executes_twice_nor_answers_two_ways(
        gateway_factory, upstream):
    """kill -9 of the whole gateway at random moments while 8 clients keep
    retrying a fixed set of keys until they get an answer. The keys come
    into use gradually (the newest ones most often), so that claims, waits
    and stores are in flight at every kill, not only at the start."""
    lease = 2.0
    g = gateway_factory(workers=2, read_timeout="1s",
                        directives=["idempotency_lease 2s;",
                                    "idempotency_wait 3s;"])
    tag = os.urandom(4).hex()
    keys = ["soak%s_%03d" % (tag, i) for i in range(SOAK_KEYS)]
    bodies = {k: json.dumps({"data": {"attributes": {"n": i, "key": k}}})
              for i, k in enumerate(keys)}
    slow = set(keys[::3])
    received = {k: [] for k in keys}
    lock = threading.Lock()
    stats = {"sent": 0, "conn_errors": 0, "retried_409": 0,
             "retried_503": 0, "kills": 0, "unanswered": 0}
    stop = threading.Event()
    seed = (int(os.environ.get("IDEM_SOAK_SEED", "0"))
            or random.randrange(1 << 30))
    started = time.time()

    def pick(rnd):
        """A key in use by now; the newest ones half of the time."""
        used = min(len(keys), 8 + int(len(keys) * (time.time() - started)
                                      / max(SOAK_SECONDS, 1)))
        if rnd.random() < 0.5:
            return keys[rnd.randrange(max(0, used - 8), used)]
        return keys[rnd.randrange(used)]

    def client(n):
        rnd = random.Random(seed + n)
        session = requests.Session()
        while not stop.is_set():
            key = pick(rnd)
            headers = {"Idempotency-Key": key,
                       "Content-Type": "application/json"}
            give_up = None
            while True:
                if stop.is_set():
                    # the gateway stays up now: finish, but not forever
                    give_up = give_up or time.time() + 15
                    if time.time() > give_up:
                        with lock:
                            stats["unanswered"] += 1
                        return
                if key in slow:
                    headers["X-Demo-Delay-Ms"] = str(rnd.randint(0, 300))
                with lock:
                    stats["sent"] += 1
                try:
                    r = session.post(g.url + "/api/v1/inquiries",
                                     data=bodies[key], headers=headers,
                                     timeout=8)
                except requests.RequestException:
                    with lock:
                        stats["conn_errors"] += 1
                    session.close()
                    session = requests.Session()
                    time.sleep(0.02)
                    continue
                if r.status_code in (409, 503):
                    with lock:
                        stats["retried_%d" % r.status_code] += 1
                    time.sleep(0.05)
                    continue
                with lock:
                    received[key].append(answer(r))
                break

    def killer():
        rnd = random.Random(seed)
        deadline = started + SOAK_SECONDS
        while time.time() < deadline:
            time.sleep(rnd.uniform(0.1, 1.0))
            g.kill9()
            stats["kills"] += 1
            g.start()

    clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in clients:
        t.start()
    try:
        killer()
    finally:
        stop.set()
        for t in clients:
            t.join(30)

    # restart, wait out the lease, and ask every key for its stored truth
    g.kill9()
    g.start()
    time.sleep(lease + 0.3)
    executions = {k: upstream.executions(k) for k in keys}
    problems = []
    truths = {}
    for k in keys:
        truth = g.post(key=k, data=bodies[k],
                       headers={"Content-Type": "application/json"})
        truths[k] = truth.status_code
        if received[k] and not replayed(truth):
            problems.append("%s: clients got %d answers but a retry now "
                            "executes (%d)" % (k, len(received[k]),
                                                truth.status_code))
        for got in set(received[k]):
            if got != answer(truth):
                problems.append("%s: a client got %d %r, the replay is %d %r"
                                % (k, got[0], got[1][:80], truth.status_code,
                                   truth.content[:80]))
        if executions[k] > 1:
            problems.append("%s executed %d times" % (k, executions[k]))
    summary = ("soak %.0fs (seed %d): %d requests sent, %d kills, %d "
               "connection errors, %d retried 409, %d retried 503; %d answers "
               "for %d of %d keys, %d unanswered clients; stored truth: %d "
               "keys 201, %d keys 504 (unknown outcome); executions per key: "
               "max %d"
               % (SOAK_SECONDS, seed, stats["sent"], stats["kills"],
                  stats["conn_errors"], stats["retried_409"],
                  stats["retried_503"],
                  sum(len(v) for v in received.values()),
                  sum(1 for v in received.values() if v), len(keys),
                  stats["unanswered"],
                  sum(1 for v in truths.values() if v == 201),
                  sum(1 for v in truths.values() if v == 504),
                  max(executions.values())))
    print("\n" + summary)
    assert not problems, summary + "\n" + "\n".join(problems)
    assert stats["unanswered"] == 0, summary
    assert stats["kills"] >= max(1, int(SOAK_SECONDS / 6)), summary


# --- reload and graceful stop under load (§10) -------------------------------

def start_slow_requests(ex, g, upstream, n=20, delay_ms=500):
    """n slow requests with keys of their own, all reached the upstream."""
    keys = [unique_key("inflight") for _ in range(n)]
    before = upstream.total()
    futs = {k: ex.submit(g.post, key=k, json_body={"k": k},
                         headers={"X-Demo-Delay-Ms": str(delay_ms)})
            for k in keys}
    assert wait_for(lambda: upstream.total() >= before + n, 5.0), \
        "the requests did not all reach the upstream"
    in_flight = sum(1 for f in futs.values() if not f.done())
    assert in_flight >= n // 2, \
        "only %d of %d still in flight" % (in_flight, n)
    return futs


def expect_settled_and_replayed(g, answers):
    for k, a in answers.items():
        assert g.admin_get(k).json()["state"] == "complete", k
        r = g.post(key=k, json_body={"k": k})
        assert replayed(r), k
        assert answer(r) == a, k


def test_reload_under_load_loses_no_request_and_leaves_no_key_in_progress(
        gateway_factory, upstream):
    g = gateway_factory(workers=2)
    old_workers = set(g.worker_pids())
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        futs = start_slow_requests(ex, g, upstream)
        g.proc.send_signal(signal.SIGHUP)
        answers = {k: answer(f.result()) for k, f in futs.items()}
    assert all(a[0] == 201 for a in answers.values()), answers
    assert wait_for(lambda: not old_workers & set(g.worker_pids())
                    and len(g.worker_pids()) == 2, 10.0)
    expect_settled_and_replayed(g, answers)
    for k in answers:
        assert upstream.executions(k) == 1
    r = g.post(key=unique_key("afterreload"), json_body={})
    assert r.status_code == 201
    # the old workers closed what they opened (their commit threads' too)
    assert "[alert]" not in g.error_log(), g.error_log()


def test_graceful_stop_under_load_finishes_every_request_and_its_store(
        gateway_factory, upstream):
    g = gateway_factory(workers=2)
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        futs = start_slow_requests(ex, g, upstream)
        g.proc.send_signal(signal.SIGQUIT)
        answers = {k: answer(f.result()) for k, f in futs.items()}
        assert g.proc.wait(10) == 0
    assert all(a[0] == 201 for a in answers.values()), answers
    # no "open socket left" of a worker that exits
    assert "[alert]" not in g.error_log(), g.error_log()
    g.start()
    expect_settled_and_replayed(g, answers)
    for k in answers:
        assert upstream.executions(k) == 1


# --- store failures (§8, §9) -------------------------------------------------

@pytest.fixture
def root_owned_dir():
    d = tempfile.mkdtemp(prefix="idem-ro-", dir="/tmp")
    yield d
    os.chmod(d, 0o700)
    shutil.rmtree(d, ignore_errors=True)


def expect_store_error(resp):
    assert resp.status_code == 503
    assert resp.headers["Content-Type"].startswith("application/json")
    err = resp.json()["errors"][0]
    assert err["title"] and err["details"]


def test_unwritable_store_is_503_forwards_nothing_and_keeps_nothing(
        gateway_factory, upstream, root_owned_dir):
    # owned by the test's user, mode 0500: the workers (nobody when the
    # tests run as root, the user otherwise) cannot create the store there
    os.chmod(root_owned_dir, 0o500)
    g = gateway_factory(data=root_owned_dir)
    key = unique_key("ro")
    for _ in range(2):
        expect_store_error(g.post(key=key, json_body={"a": 1}))
    assert upstream.executions(key) == 0
    # space comes back: the worker reopens the store (after its 1s back-off)
    os.chmod(root_owned_dir, 0o777)
    time.sleep(1.1)
    assert g.admin_get(key).status_code == 404
    r = g.post(key=key, json_body={"a": 1})
    assert r.status_code == 201 and not replayed(r)
    assert upstream.executions(key) == 1


# A map of 32 pages: a few responses of 20 KB fill it.
TINY_MAP = "map_size=131072"
BIG = {"X-Demo-Body-Bytes": "20000"}


def fill_until_refused(g, prefix, limit=60):
    """New keys with large responses until the store refuses one (503)."""
    answers = {}
    for i in range(limit):
        key = "%s%03d" % (prefix, i)
        r = g.post(key=key, json_body={"i": i}, headers=BIG)
        answers[key] = r
        if r.status_code == 503:
            return answers
    raise AssertionError("the store never filled up after %d keys" % limit)


def test_full_store_refuses_new_keys_and_forwards_nothing(
        gateway_factory, upstream):
    g = gateway_factory(store_options=TINY_MAP,
                        directives=["idempotency_lease 2s;",
                                    "idempotency_wait 300ms;"])
    early = unique_key("small")
    first = g.post(key=early, json_body={})
    assert first.status_code == 201
    answers = fill_until_refused(g, unique_key("fill") + "_")
    refused = [k for k, r in answers.items() if r.status_code == 503]
    for k in refused:
        expect_store_error(answers[k])
        assert upstream.executions(k) == 0, k
        assert g.admin_get(k).status_code == 404, k
    # more refusals: still nothing forwarded, nothing written
    for i in range(3):
        k = unique_key("refused")
        expect_store_error(g.post(key=k, json_body={}, headers=BIG))
        assert upstream.executions(k) == 0
        assert g.admin_get(k).status_code == 404
    # what was stored before still replays
    r = g.post(key=early, json_body={})
    assert replayed(r) and answer(r) == answer(first)


def test_full_store_never_hands_out_an_answer_it_did_not_keep(
        gateway_factory, upstream):
    """Each answer a client got is what the key replays; no key is left in
    progress once its request is over (SPEC §3: stored, then answered)."""
    g = gateway_factory(store_options=TINY_MAP,
                        directives=["idempotency_lease 2s;",
                                    "idempotency_wait 300ms;"])
    answers = fill_until_refused(g, unique_key("fill") + "_")
    problems = []
    for k, r in answers.items():
        if r.status_code == 503:
            continue
        rec = g.admin_get(k).json()
        again = g.post(key=k, json_body={"i": int(k[-3:])}, headers=BIG)
        if rec["state"] != "complete" or not replayed(again) \
                or answer(again) != answer(r):
            problems.append("%s: client got %d (%d bytes, Idempotency-Expires "
                            "%s); record %s; a retry gets %d%s"
                            % (k, r.status_code, len(r.content),
                               r.headers.get("Idempotency-Expires"),
                               rec["state"], again.status_code,
                               " (replay)" if replayed(again) else ""))
        assert upstream.executions(k) == 1, k
    assert not problems, "%d of %d answered keys:\n%s" % (
        len(problems), len(answers) - 1, "\n".join(problems))


def test_full_store_serves_again_once_expired_records_are_pruned(
        gateway_factory, upstream):
    g = gateway_factory(store_options=TINY_MAP, prune_interval="200ms",
                        directives=["idempotency_ttl 1s;",
                                    "idempotency_lease 500ms;",
                                    "idempotency_wait 300ms;"])
    fill_until_refused(g, unique_key("fill") + "_")
    time.sleep(1.0 + 0.6)
    key = unique_key("back")
    r = g.post(key=key, json_body={}, headers=BIG)
    assert r.status_code == 201, (
        "still refused after every record expired; pruned_total=%d"
        % g.metrics()["idemgate_pruned_total"])
    assert replayed(g.post(key=key, json_body={}, headers=BIG))
    assert g.metrics()["idemgate_pruned_total"] >= 1


def test_fast_stop_settles_the_keys_of_the_requests_it_cuts(
        gateway_factory, upstream):
    # a lease far longer than the test: only an explicit settlement by the
    # stopping worker can make the key answer at once after the restart
    g = gateway_factory(directives=["idempotency_lease 60s;",
                                    "idempotency_wait 1s;"],
                        read_timeout="30s")
    keys = [unique_key("cut") for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(len(keys)) as ex:
        futures = [ex.submit(g.post, key=k, json_body={},
                             headers={"X-Demo-Delay-Ms": "3000"})
                   for k in keys]
        assert wait_for(lambda: all(upstream.executions(k) == 1 for k in keys),
                        5.0)
        g.proc.send_signal(signal.SIGTERM)   # nginx's fast shutdown
        g.proc.wait(10)
        for f in futures:
            with pytest.raises(requests.RequestException):
                f.result()
    g.start()
    for k in keys:
        r = g.post(key=k, json_body={})
        expect_unknown_outcome_replay(r)
        assert upstream.executions(k) == 1
