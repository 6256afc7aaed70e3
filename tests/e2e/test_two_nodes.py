"""Two gateways, one networked store (SPEC §4, §7, §9), on every store that
machines can share: Redis and PostgreSQL, one server of each per test run
(redis_server.py, postgres_server.py), a namespace (key prefix, table) per
test. The rules of one gateway hold across both:

  - concurrent duplicates spread over both reach the upstream once, and
    every answer is the same; a key run on one node replays on the other;
  - the first mismatch of a key is API-logged once across both nodes;
  - kill -9 of a whole gateway mid-request never lets the other run the key
    again: after the lease the key answers with the stored unknown outcome.

What only one store has (Redis's eviction policy, PostgreSQL's pruning,
each server killed and restarted) is in test_redis_store.py and
test_postgres_store.py. `upstream.executions(key)` counts forwards.
"""

import concurrent.futures
import time

import pytest
import requests

from conftest import unique_key
from postgres_server import pg_store, postgres  # noqa: F401 (fixtures)
from redis_server import redis_prefix, redis_server, redis_url  # noqa: F401

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


@pytest.fixture(params=["redis", "postgres"])
def store_url(request):
    """This test's namespace on one shared store."""
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    url, _ = request.getfixturevalue("pg_store")
    return url


@pytest.fixture
def two_nodes(gateway_factory, store_url):
    """Two gateways of two workers each on the store."""
    def make(directives=("idempotency_wait 5s;", "idempotency_lease 15s;")):
        return [gateway_factory(store=store_url, workers=2,
                                directives=directives) for _ in range(2)]
    return make


def test_duplicates_over_two_nodes_reach_the_upstream_once(two_nodes,
                                                           upstream):
    nodes = two_nodes()
    key = unique_key("spread")

    def one(i):
        return nodes[i % 2].post(key=key, json_body={"name": "Jane"},
                                 headers={"X-Demo-Delay-Ms": "300"})

    with concurrent.futures.ThreadPoolExecutor(24) as ex:
        results = list(ex.map(one, range(24)))

    assert [r.status_code for r in results] == [201] * 24
    assert len({r.content for r in results}) == 1
    assert sum(1 for r in results if not replayed(r)) == 1
    assert upstream.executions(key) == 1


def test_a_key_run_on_one_node_replays_on_the_other(two_nodes, upstream):
    a, b = two_nodes()
    key = unique_key("other")
    first = a.post(key=key, json_body={"n": 1})
    assert first.status_code == 201 and not replayed(first)
    again = b.post(key=key, json_body={"n": 1})
    assert again.status_code == 201 and replayed(again)
    assert again.content == first.content
    assert again.headers["Idempotency-Expires"] == \
        first.headers["Idempotency-Expires"]
    assert b.admin_get(key).json()["state"] == "complete"
    # other parameters are a mismatch on either node
    assert b.post(key=key, json_body={"n": 2}).status_code == 400
    assert upstream.executions(key) == 1


def test_first_mismatch_is_api_logged_once_across_nodes(two_nodes,
                                                        upstream):
    a, b = two_nodes()
    key = unique_key("mismatch")
    assert a.post(key=key, json_body={"n": 1}).status_code == 201
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(lambda i: (a, b)[i % 2].post(
            key=key, json_body={"n": 2 + i}).status_code, range(8)))
    assert codes == [400] * 8
    time.sleep(0.3)
    entries = [e for g in (a, b) for e in g.api_log() if e["key"] == key]
    assert sorted(e["outcome"] for e in entries) == [
        "executed", "idempotency_error"]
    assert upstream.executions(key) == 1


def test_kill9_of_a_node_mid_request_never_runs_the_key_again(two_nodes,
                                                              upstream):
    a, b = two_nodes(directives=("idempotency_wait 5s;",
                                 "idempotency_lease 1s;"))
    key = unique_key("killed")
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        lost = ex.submit(a.post, key=key, json_body={"n": 1},
                         headers={"X-Demo-Delay-Ms": "2000"})
        assert wait_for(lambda: upstream.executions(key) == 1, 5)
        a.kill9()
        with pytest.raises(requests.RequestException):
            lost.result()
    # the other node waits out the lease: the outcome is unknown, and that
    # is the key's answer from now on
    first = b.post(key=key, json_body={"n": 1})
    assert first.status_code == 504, first.text
    assert replayed(first)
    assert first.json()["errors"][0]["title"] == UNKNOWN_TITLE
    time.sleep(1.2)  # the upstream's slow answer has gone nowhere
    again = b.post(key=key, json_body={"n": 1})
    assert again.status_code == 504 and again.content == first.content
    assert b.admin_get(key).json()["unknown_outcome"] is True
    assert upstream.executions(key) == 1
