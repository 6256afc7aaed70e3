"""SPEC §1-§8 on one node: real nginx with the module, the demo Inquiries API
behind it, LMDB in a temporary directory. Each test is named after the rule
it checks."""

import concurrent.futures
import http.client
import json
import os
import time

import pytest
import requests

from conftest import raw_request, unique_key

SEED_DETAILS = ("Keys for idempotent requests can only be used with the same "
                "parameters they were first used with. Try using a key other "
                "than '{}' if you meant to execute a different request.")


def seed_body(key_json_escaped):
    return ('{"errors":[{"title":"Idempotency error","details":"'
            + SEED_DETAILS.format(key_json_escaped) + '"}]}')


# --- §1 which requests take part ---------------------------------------------

def test_post_with_key_executes_once_and_replays(gateway, upstream):
    key = unique_key()
    first = gateway.post(key=key, json_body={"data": {"name": "Jane"}})
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    second = gateway.post(key=key, json_body={"data": {"name": "Jane"}})
    assert second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.content == first.content
    assert upstream.executions(key) == 1


def test_key_header_is_forwarded_to_upstream(gateway, upstream):
    key = unique_key()
    gateway.post(key=key, json_body={})
    # the demo API counts executions by the Idempotency-Key it received
    assert upstream.executions(key) == 1


def test_post_without_key_is_proxied_unchanged(gateway, upstream):
    before = upstream.executions("")
    a = gateway.post(json_body={"a": 1})
    b = gateway.post(json_body={"a": 1})
    assert a.status_code == b.status_code == 201
    assert a.json()["data"]["id"] != b.json()["data"]["id"]
    assert "Idempotent-Replayed" not in b.headers
    assert upstream.executions("") == before + 2


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT", "OPTIONS", "HEAD"])
def test_other_methods_ignore_the_key(gateway, method):
    key = unique_key()
    for _ in range(2):
        r = requests.request(method, gateway.url + "/api/v1/inquiries",
                             headers={"Idempotency-Key": key}, timeout=5)
        assert "Idempotent-Replayed" not in r.headers
        assert "Idempotency-Expires" not in r.headers
    assert gateway.admin_get(key).status_code == 404


def test_methods_setting_adds_patch(gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_methods POST PATCH;"])
    key = unique_key()
    r1 = requests.patch(g.url + "/api/v1/inquiries", data="x",
                        headers={"Idempotency-Key": key}, timeout=5)
    r2 = requests.patch(g.url + "/api/v1/inquiries", data="x",
                        headers={"Idempotency-Key": key}, timeout=5)
    assert r2.status_code == r1.status_code
    assert r2.headers.get("Idempotent-Replayed") == "true"
    # POST still takes part
    assert g.post(key=unique_key(), json_body={}).status_code == 201


def test_require_key_rejects_post_without_key(gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_require_key on;"])
    before = upstream.total()
    r = g.post(json_body={"a": 1})
    assert r.status_code == 400
    err = r.json()["errors"][0]
    assert err["title"] == "Idempotency error"
    assert "required" in err["details"]
    assert upstream.total() == before
    # GET needs no key
    assert requests.get(g.url + "/healthz", timeout=5).status_code == 200


# --- §2 the key ---------------------------------------------------------------

def expect_key_error(resp, word):
    assert resp.status_code == 400
    assert resp.headers["Content-Type"].startswith("application/json")
    err = resp.json()["errors"][0]
    assert err["title"] == "Idempotency error"
    assert word in err["details"]


def test_key_of_255_characters_is_accepted(gateway):
    key = ("k" + os.urandom(8).hex()).ljust(255, "x")
    assert gateway.post(key=key, json_body={}).status_code == 201
    assert gateway.post(key=key, json_body={}).headers["Idempotent-Replayed"] == "true"


def test_key_longer_than_255_characters_is_rejected(gateway, upstream):
    before = upstream.total()
    expect_key_error(gateway.post(key="x" * 256, json_body={}), "255")
    assert upstream.total() == before


def test_empty_key_is_rejected(gateway, upstream):
    raw = (b"POST /api/v1/inquiries HTTP/1.1\r\nHost: x\r\nIdempotency-Key: \r\n"
           b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    resp = raw_request(gateway.port, raw)
    assert resp.startswith(b"HTTP/1.1 400")
    assert b"empty" in resp


@pytest.mark.parametrize("value", [b"abc\x01def", b"caf\xc3\xa9", b"a b"])
def test_key_with_bytes_outside_printable_ascii_is_rejected(gateway, upstream, value):
    before = upstream.total()
    raw = (b"POST /api/v1/inquiries HTTP/1.1\r\nHost: x\r\nIdempotency-Key: "
           + value + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    resp = raw_request(gateway.port, raw)
    assert resp.startswith(b"HTTP/1.1 400")
    assert b"printable ASCII" in resp
    assert upstream.total() == before


def test_quoted_key_means_its_content(gateway, upstream):
    key = unique_key()
    a = gateway.post(key='"%s"' % key, json_body={})
    b = gateway.post(key=key, json_body={})
    assert b.headers["Idempotent-Replayed"] == "true"
    assert a.content == b.content
    assert upstream.executions('"%s"' % key) == 1


def test_malformed_quoted_key_is_rejected(gateway):
    expect_key_error(gateway.post(key='"a"b"', json_body={}), "quoted")


def test_key_twice_with_different_values_is_rejected(gateway, upstream):
    raw = (b"POST /api/v1/inquiries HTTP/1.1\r\nHost: x\r\n"
           b"Idempotency-Key: one\r\nIdempotency-Key: two\r\n"
           b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    resp = raw_request(gateway.port, raw)
    assert resp.startswith(b"HTTP/1.1 400")
    assert b"more than once" in resp


def test_key_twice_with_the_same_value_is_one_key(gateway):
    key = unique_key().encode()
    raw = (b"POST /api/v1/inquiries HTTP/1.1\r\nHost: x\r\n"
           b"Idempotency-Key: " + key + b"\r\nIdempotency-Key: " + key + b"\r\n"
           b"Content-Type: application/json\r\n"
           b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert raw_request(gateway.port, raw).startswith(b"HTTP/1.1 201")


def test_invalid_key_stores_nothing(gateway, upstream):
    before = upstream.total()
    gateway.post(key='"unterminated', json_body={})
    assert gateway.admin_get('"unterminated').status_code == 404
    assert upstream.total() == before


def test_same_key_in_two_scopes_is_two_keys(gateway, upstream):
    key = unique_key()
    a = gateway.post(key=key, json_body={}, headers={"Authorization": "Bearer a"})
    b = gateway.post(key=key, json_body={}, headers={"Authorization": "Bearer b"})
    assert "Idempotent-Replayed" not in b.headers
    assert a.json()["data"]["id"] != b.json()["data"]["id"]
    assert upstream.executions(key) == 2
    again = gateway.post(key=key, json_body={}, headers={"Authorization": "Bearer a"})
    assert again.content == a.content


def test_scope_none_shares_keys_between_clients(gateway_factory, upstream):
    g = gateway_factory(scope="none")
    key = unique_key()
    g.post(key=key, json_body={}, headers={"Authorization": "Bearer a"})
    b = g.post(key=key, json_body={}, headers={"Authorization": "Bearer b"})
    assert b.headers["Idempotent-Replayed"] == "true"
    assert upstream.executions(key) == 1


def test_scope_value_is_never_stored(gateway):
    key = unique_key()
    secret = "Bearer sk_live_" + os.urandom(12).hex()
    gateway.post(key=key, json_body={}, headers={"Authorization": secret})
    for root, _, files in os.walk(gateway.data):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert secret.encode() not in fh.read()


# --- §3 first use -------------------------------------------------------------

def test_stored_500_is_replayed(gateway, upstream):
    key = unique_key()
    a = gateway.post(key=key, json_body={}, headers={"X-Demo-Fail": "500"})
    b = gateway.post(key=key, json_body={}, headers={"X-Demo-Fail": "500"})
    assert a.status_code == b.status_code == 500
    assert b.headers["Idempotent-Replayed"] == "true"
    assert a.content == b.content
    assert upstream.executions(key) == 1


def test_unreachable_upstream_releases_key(gateway, upstream):
    key = unique_key()
    r = gateway.post(path="/unreachable/x", key=key, json_body={})
    assert r.status_code == 502
    assert r.json()["errors"][0]["title"]
    assert "Idempotent-Replayed" not in r.headers
    assert gateway.admin_get(key).status_code == 404
    # a retry executes (and fails the same way): nothing was stored
    r2 = gateway.post(path="/unreachable/x", key=key, json_body={})
    assert r2.status_code == 502
    assert "Idempotent-Replayed" not in r2.headers


def test_reset_without_response_stores_unknown_outcome(gateway, upstream):
    key = unique_key()
    a = gateway.post(key=key, json_body={}, headers={"X-Demo-Drop": "1"})
    assert a.status_code in (502, 504)
    assert a.json()["errors"][0]["title"] == "Upstream outcome unknown"
    b = gateway.post(key=key, json_body={}, headers={"X-Demo-Drop": "1"})
    assert b.headers["Idempotent-Replayed"] == "true"
    assert b.status_code == a.status_code and b.content == a.content
    assert upstream.executions(key) == 1


def test_timeout_stores_unknown_outcome_504(gateway_factory, upstream):
    g = gateway_factory(read_timeout="500ms")
    key = unique_key()
    h = {"X-Demo-Delay-Ms": "1500"}
    a = g.post(key=key, json_body={}, headers=h)
    assert a.status_code == 504
    b = g.post(key=key, json_body={}, headers=h)
    assert b.status_code == 504 and b.headers["Idempotent-Replayed"] == "true"
    assert upstream.executions(key) == 1


def test_on_unknown_release_frees_key(gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_on_unknown release;"])
    key = unique_key()
    a = g.post(key=key, json_body={}, headers={"X-Demo-Drop": "1"})
    assert a.status_code == 502
    details = a.json()["errors"][0]["details"]
    # the answer tells the truth: the key is free, a retry runs again
    assert "the key was released" in details
    assert "will not run it again" not in details
    b = g.post(key=key, json_body={})
    assert b.status_code == 201
    assert "Idempotent-Replayed" not in b.headers
    assert upstream.executions(key) == 2


def test_on_unknown_store_says_the_key_will_not_run_again(gateway_factory):
    g = gateway_factory()
    key = unique_key()
    a = g.post(key=key, json_body={}, headers={"X-Demo-Drop": "1"})
    assert a.status_code == 502
    details = a.json()["errors"][0]["details"]
    assert "will not run it again" in details
    assert "released" not in details


def test_upstream_idempotency_headers_are_not_doubled(gateway_factory):
    # an upstream that sends the gateway's own headers itself: the first
    # answer carries one value of each, the gateway's
    extra = """
        location /own/ {
            idempotency on;
            rewrite ^/own/(.*)$ /_up/$1 break;
            proxy_pass http://127.0.0.1:$server_port;
        }
        location /_up/ {
            add_header Idempotency-Expires bogus always;
            add_header Idempotent-Replayed false always;
            return 201 '{"ok":true}';
        }
"""
    g = gateway_factory(extra_locations=extra)
    key = unique_key()
    conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=5)
    conn.request("POST", "/own/x", body="{}",
                  headers={"Idempotency-Key": key,
                           "Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    assert r.status == 201
    expires = r.msg.get_all("Idempotency-Expires")
    assert len(expires) == 1 and expires[0] != "bogus"
    assert r.msg.get_all("Idempotent-Replayed") is None
    conn.request("POST", "/own/x", body="{}",
                 headers={"Idempotency-Key": key,
                          "Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    assert r.msg.get_all("Idempotent-Replayed") == ["true"]
    assert r.msg.get_all("Idempotency-Expires") == expires
    conn.close()


def test_set_cookie_and_hop_by_hop_headers_are_not_stored(gateway):
    key = unique_key()
    a = gateway.post(key=key, json_body={})
    assert "Set-Cookie" in a.headers
    b = gateway.post(key=key, json_body={})
    assert "Set-Cookie" not in b.headers
    assert "Transfer-Encoding" not in b.headers
    stored = [h[0].lower() for h in gateway.admin_get(key).json()["headers"]]
    for name in ("set-cookie", "connection", "keep-alive", "transfer-encoding"):
        assert name not in stored


def test_no_store_header_is_not_stored(gateway_factory):
    g = gateway_factory(directives=["idempotency_no_store_header X-Request-Count;"])
    key = unique_key()
    a = g.post(key=key, json_body={})
    assert "X-Request-Count" in a.headers
    b = g.post(key=key, json_body={})
    assert "X-Request-Count" not in b.headers


def test_replay_keeps_the_original_date(gateway):
    key = unique_key()
    a = gateway.post(key=key, json_body={})
    time.sleep(1.1)
    b = gateway.post(key=key, json_body={})
    assert b.headers["Date"] == a.headers["Date"]


def test_replay_has_content_length_and_exact_headers(gateway):
    key = unique_key()
    a = gateway.post(key=key, json_body={"x": 1})
    b = gateway.post(key=key, json_body={"x": 1})
    assert int(b.headers["Content-Length"]) == len(a.content)
    for name in ("Content-Type", "X-Request-Count", "Date"):
        assert b.headers[name] == a.headers[name]


# --- §4 reuse -----------------------------------------------------------------

def test_json_member_order_and_whitespace_are_ignored(gateway, upstream):
    key = unique_key()
    gateway.post(key=key, data='{"a": 1, "b": [1, 2]}',
                 headers={"Content-Type": "application/json"})
    b = gateway.post(key=key, data='{"b":[1,2],\n "a":1}',
                     headers={"Content-Type": "application/json"})
    assert b.headers["Idempotent-Replayed"] == "true"
    assert upstream.executions(key) == 1


def test_json_array_order_matters(gateway):
    key = unique_key()
    gateway.post(key=key, json_body={"a": [1, 2]})
    assert gateway.post(key=key, json_body={"a": [2, 1]}).status_code == 400


def test_query_parameter_order_is_ignored(gateway):
    key = unique_key()
    gateway.post(path="/api/v1/inquiries?a=1&b=2", key=key, json_body={})
    b = gateway.post(path="/api/v1/inquiries?b=2&a=1", key=key, json_body={})
    assert b.headers["Idempotent-Replayed"] == "true"


def test_repeated_query_values_keep_their_order(gateway):
    key = unique_key()
    gateway.post(path="/api/v1/inquiries?a=1&a=2", key=key, json_body={})
    assert gateway.post(path="/api/v1/inquiries?a=2&a=1", key=key,
                        json_body={}).status_code == 400


def test_form_pair_order_is_ignored(gateway):
    key = unique_key()
    h = {"Content-Type": "application/x-www-form-urlencoded"}
    gateway.post(path="/bench", key=key, data="a=1&b=2", headers=h)
    b = gateway.post(path="/bench", key=key, data="b=2&a=1", headers=h)
    assert b.headers["Idempotent-Replayed"] == "true"


def test_other_bodies_compare_byte_for_byte(gateway):
    key = unique_key()
    h = {"Content-Type": "text/plain"}
    gateway.post(path="/bench", key=key, data="a b", headers=h)
    assert gateway.post(path="/bench", key=key, data="a  b",
                        headers=h).status_code == 400


def test_other_parameters_get_the_exact_seed_error(gateway, upstream):
    key = "abc_123_" + os.urandom(4).hex()
    gateway.post(key=key, json_body={"a": 1})
    r = gateway.post(key=key, json_body={"a": 2})
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/json"
    assert r.text == seed_body(key)
    assert upstream.executions(key) == 1


def test_key_in_seed_error_is_json_escaped(gateway):
    key = 'q"u\\o' + os.urandom(4).hex()
    gateway.post(key=key, json_body={"a": 1})
    r = gateway.post(key=key, json_body={"a": 2})
    assert r.status_code == 400
    assert r.text == seed_body(key.replace("\\", "\\\\").replace('"', '\\"'))
    assert r.json()["errors"][0]["details"] == SEED_DETAILS.format(key)


@pytest.mark.parametrize("change", ["path", "media_type", "query"])
def test_other_path_query_or_media_type_is_a_mismatch(gateway, change):
    key = unique_key()
    gateway.post(path="/bench?x=1", key=key, data="{}",
                 headers={"Content-Type": "application/json"})
    path, ctype = "/bench?x=1", "application/json"
    if change == "path":
        path = "/bench2?x=1"
    elif change == "query":
        path = "/bench?x=2"
    else:
        ctype = "text/plain"
    r = gateway.post(path=path, key=key, data="{}", headers={"Content-Type": ctype})
    assert r.status_code == 400


def test_mismatch_leaves_the_record_unchanged(gateway):
    key = unique_key()
    a = gateway.post(key=key, json_body={"a": 1})
    gateway.post(key=key, json_body={"a": 2})
    b = gateway.post(key=key, json_body={"a": 1})
    assert b.headers["Idempotent-Replayed"] == "true"
    assert b.content == a.content


def test_concurrent_duplicates_reach_upstream_once(gateway, upstream):
    key = unique_key()

    def one(_):
        return gateway.post(key=key, json_body={"n": 1},
                            headers={"X-Demo-Delay-Ms": "400"})

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        results = list(ex.map(one, range(16)))
    assert all(r.status_code == 201 for r in results)
    assert len({r.content for r in results}) == 1
    assert sum(1 for r in results if "Idempotent-Replayed" not in r.headers) == 1
    assert upstream.executions(key) == 1


def test_in_progress_past_the_wait_is_409_with_retry_after(gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_wait 300ms;"])
    key = unique_key()
    h = {"X-Demo-Delay-Ms": "2000"}
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        first = ex.submit(g.post, key=key, json_body={}, headers=h)
        time.sleep(0.3)
        r = g.post(key=key, json_body={}, headers=h)
        assert r.status_code == 409
        assert int(r.headers["Retry-After"]) >= 1
        err = r.json()["errors"][0]
        assert err["title"] == "Idempotency error"
        assert "in progress" in err["details"]
        assert first.result().status_code == 201
    assert upstream.executions(key) == 1


def test_waiting_duplicate_gets_the_replay(gateway, upstream):
    key = unique_key()
    h = {"X-Demo-Delay-Ms": "800"}
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        first = ex.submit(gateway.post, key=key, json_body={}, headers=h)
        time.sleep(0.2)
        second = gateway.post(key=key, json_body={}, headers=h)
        assert second.headers["Idempotent-Replayed"] == "true"
        assert second.content == first.result().content


def test_store_commits_and_fingerprint_cache_are_counted(gateway, upstream):
    before = gateway.metrics()
    keys = [unique_key() for _ in range(5)]
    for i, k in enumerate(keys):
        assert gateway.post(key=k, json_body={"n": i}).status_code == 201
    # a retry byte for byte: its fingerprint comes from the worker's cache
    r = gateway.post(key=keys[0], json_body={"n": 0})
    assert r.headers["Idempotent-Replayed"] == "true"
    # after that hit, other parameters under the key are still refused,
    # and parameters that only read the same are still the same request
    r = gateway.post(key=keys[0], json_body={"n": 99})
    assert r.status_code == 400
    assert r.json()["errors"][0]["title"] == "Idempotency error"
    r = gateway.post(key=keys[0], data='{ "n" : 0 }',
                     headers={"Content-Type": "application/json"})
    assert r.headers["Idempotent-Replayed"] == "true"
    after = gateway.metrics()

    def grew(name):
        return after.get(name, 0) - before.get(name, 0)

    assert grew('idemgate_fingerprint_cache_total{result="hit"}') == 1
    assert grew('idemgate_fingerprint_cache_total{result="miss"}') == 7
    commits = grew("idemgate_store_commits_total")
    ops = grew("idemgate_store_batched_ops_total")
    # 5 claims, 5 results and the first mismatch's mark, in 1 to 11 commits
    assert 1 <= commits <= ops and ops >= 11
    assert all(upstream.executions(k) == 1 for k in keys)


def test_waiters_are_woken_by_the_settlement_in_their_worker(gateway, upstream):
    # duplicates waiting for a first request of the same worker are woken
    # when its result is stored (idemgate_waits_woken_total counts each
    # wake), and replay it; the waiter of another key still in progress is
    # not woken by that (it would count twice: once in vain, once by its
    # own key)
    key, other = unique_key(), unique_key()
    h = {"X-Demo-Delay-Ms": "600"}
    before = gateway.metrics()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        first = ex.submit(gateway.post, key=key, json_body={"a": 1}, headers=h)
        slow = ex.submit(gateway.post, key=other, json_body={"a": 1},
                         headers={"X-Demo-Delay-Ms": "1500"})
        time.sleep(0.2)
        dups = [ex.submit(gateway.post, key=key, json_body={"a": 1}, headers=h)
                for _ in range(3)]
        wait_other = ex.submit(gateway.post, key=other, json_body={"a": 1})
        assert first.result().status_code == 201
        for d in dups:
            r = d.result()
            assert r.headers["Idempotent-Replayed"] == "true"
            assert r.content == first.result().content
        assert slow.result().status_code == 201
        r = wait_other.result()
        assert r.headers["Idempotent-Replayed"] == "true"
    after = gateway.metrics()
    woken = (after["idemgate_waits_woken_total"]
             - before["idemgate_waits_woken_total"])
    waited = after["idemgate_waits_total"] - before["idemgate_waits_total"]
    assert waited == 4
    assert woken == 4
    assert upstream.executions(key) == 1 and upstream.executions(other) == 1


def test_stale_claim_of_a_dead_gateway_becomes_unknown_outcome(gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_lease 1s;"], read_timeout="5s")
    key = unique_key()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(g.post, key=key, json_body={},
                        headers={"X-Demo-Delay-Ms": "3000"})
        time.sleep(0.5)
        g.kill9()
        with pytest.raises(requests.RequestException):
            fut.result()
    g.start()
    time.sleep(1.0)
    r = g.post(key=key, json_body={})
    assert r.status_code == 504
    assert r.headers["Idempotent-Replayed"] == "true"
    assert r.json()["errors"][0]["title"] == "Upstream outcome unknown"
    # the stored error keeps its Date, as an upstream's answer does
    assert r.headers.get("Date")
    time.sleep(1.1)
    again = g.post(key=key, json_body={})
    assert again.status_code == 504
    assert again.headers["Date"] == r.headers["Date"]


def test_stale_claim_is_released_under_on_unknown_release(gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_lease 1s;",
                                    "idempotency_on_unknown release;"])
    key = unique_key()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(g.post, key=key, json_body={},
                        headers={"X-Demo-Delay-Ms": "3000"})
        time.sleep(0.5)
        g.kill9()
        with pytest.raises(requests.RequestException):
            fut.result()
    g.start()
    time.sleep(1.0)
    r = g.post(key=key, json_body={})
    assert r.status_code == 201
    assert "Idempotent-Replayed" not in r.headers


# --- §5 error style -----------------------------------------------------------

def test_ietf_style_mismatch_is_422_problem_json(gateway_factory):
    g = gateway_factory(directives=["idempotency_error_style ietf;"])
    key = unique_key()
    g.post(key=key, json_body={"a": 1})
    r = g.post(key=key, json_body={"a": 2})
    assert r.status_code == 422
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["status"] == 422


def test_ietf_style_missing_and_malformed_key_is_400(gateway_factory):
    g = gateway_factory(directives=["idempotency_error_style ietf;",
                                    "idempotency_require_key on;"])
    r = g.post(json_body={})
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("application/problem+json")
    r = g.post(key="x" * 300, json_body={})
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("application/problem+json")


def test_ietf_style_in_progress_is_409(gateway_factory):
    g = gateway_factory(directives=["idempotency_error_style ietf;",
                                    "idempotency_wait 200ms;"])
    key = unique_key()
    h = {"X-Demo-Delay-Ms": "1500"}
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        first = ex.submit(g.post, key=key, json_body={}, headers=h)
        time.sleep(0.3)
        r = g.post(key=key, json_body={}, headers=h)
        assert r.status_code == 409
        assert r.headers["Content-Type"].startswith("application/problem+json")
        first.result()


# --- §6 expiry ----------------------------------------------------------------

def test_expired_key_executes_as_new(gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_ttl 1s;"])
    key = unique_key()
    g.post(key=key, json_body={})
    time.sleep(1.2)
    r = g.post(key=key, json_body={"other": "parameters"})
    assert r.status_code == 201
    assert "Idempotent-Replayed" not in r.headers
    assert upstream.executions(key) == 2


def test_idempotency_expires_on_first_answer_and_replays(gateway_factory):
    g = gateway_factory(directives=["idempotency_ttl 1h;"])
    key = unique_key()
    a = g.post(key=key, json_body={})
    b = g.post(key=key, json_body={})
    assert a.headers["Idempotency-Expires"] == b.headers["Idempotency-Expires"]
    exp = time.mktime(time.strptime(a.headers["Idempotency-Expires"],
                                    "%a, %d %b %Y %H:%M:%S GMT")) - time.timezone
    assert 3590 <= exp - time.time() <= 3602


def test_expired_records_are_pruned_in_the_background(gateway_factory):
    g = gateway_factory(directives=["idempotency_ttl 1s;"], prune_interval="200ms")
    keys = [unique_key() for _ in range(5)]
    for k in keys:
        g.post(key=k, json_body={})
    time.sleep(2.0)
    for k in keys:
        assert g.admin_get(k).status_code == 404
    assert g.metrics()["idemgate_pruned_total"] >= 5


# --- §7 the API log -----------------------------------------------------------

def test_api_log_follows_personas_rules(gateway, upstream):
    key = unique_key()
    gateway.post(key=key, json_body={"a": 1}, headers={"Authorization": "Bearer secret-token"})
    gateway.post(key=key, json_body={"a": 1}, headers={"Authorization": "Bearer secret-token"})
    gateway.post(key=key, json_body={"a": 2}, headers={"Authorization": "Bearer secret-token"})
    gateway.post(key=key, json_body={"a": 3}, headers={"Authorization": "Bearer secret-token"})
    gateway.post(json_body={"no": "key"})
    requests.get(gateway.url + "/api/v1/inquiries", timeout=5)
    time.sleep(0.2)
    entries = gateway.api_log()
    mine = [e for e in entries if e["key"] == key]
    assert [(e["status"], e["outcome"]) for e in mine] == [
        (201, "executed"), (400, "idempotency_error")]
    keyless = [e for e in entries if e["key"] is None]
    assert [e["method"] for e in keyless] == ["POST", "GET"]
    for e in entries:
        for member in ("time", "request_id", "method", "path", "status",
                       "key", "outcome", "duration_ms"):
            assert member in e
        assert e["time"].endswith("Z")
        assert isinstance(e["status"], int) and isinstance(e["duration_ms"], int)
    with open(os.path.join(gateway.run, "api.log")) as f:
        assert "secret-token" not in f.read()


def test_api_log_unknown_outcome_has_the_stored_status(gateway):
    key = unique_key()
    gateway.post(key=key, json_body={}, headers={"X-Demo-Drop": "1"})
    time.sleep(0.2)
    mine = [e for e in gateway.api_log() if e["key"] == key]
    assert len(mine) == 1 and mine[0]["status"] in (502, 504)


def test_api_log_first_mismatch_is_logged_once_across_workers(gateway_factory):
    g = gateway_factory(workers=2)
    key = unique_key()
    g.post(key=key, json_body={"a": 1})
    for i in range(6):
        assert g.post(key=key, json_body={"a": i + 2}).status_code == 400
    time.sleep(0.2)
    mine = [e for e in g.api_log() if e["key"] == key]
    assert [e["outcome"] for e in mine] == ["executed", "idempotency_error"]


# --- §8 bad input and limits --------------------------------------------------

def test_body_over_the_limit_is_413_and_nothing_stored(gateway_factory, upstream):
    g = gateway_factory(max_body="1k", body_buffer="1k")
    key = unique_key()
    r = g.post(key=key, data="x" * 4096)
    assert r.status_code == 413
    assert g.admin_get(key).status_code == 404
    assert upstream.executions(key) == 0


def test_body_in_a_temp_file_is_fingerprinted(gateway_factory, upstream):
    g = gateway_factory(max_body="4m", body_buffer="8k")
    key = unique_key()
    body = json.dumps({"blob": "x" * 200000, "a": 1})
    a = g.post(key=key, data=body, headers={"Content-Type": "application/json"})
    assert a.status_code == 201
    reordered = json.dumps({"a": 1, "blob": "x" * 200000})
    b = g.post(key=key, data=reordered, headers={"Content-Type": "application/json"})
    assert b.headers["Idempotent-Replayed"] == "true"
    c = g.post(key=key, data=body.replace('"a": 1', '"a": 2'),
               headers={"Content-Type": "application/json"})
    assert c.status_code == 400
    assert upstream.executions(key) == 1


def test_store_unavailable_is_503_and_nothing_forwarded(gateway_factory, upstream, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    g = gateway_factory(store="lmdb:%s/sub" % blocker)
    key = unique_key()
    r = g.post(key=key, json_body={})
    assert r.status_code == 503
    assert r.json()["errors"][0]["title"]
    assert upstream.executions(key) == 0
    # requests without a key still pass
    assert g.post(json_body={}).status_code == 201


def test_response_over_the_limit_reaches_client_and_stores_an_error(gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_max_response_size 64k;"])
    key = unique_key()
    h = {"X-Demo-Body-Bytes": str(300 * 1024)}
    a = g.post(key=key, json_body={}, headers=h)
    assert a.status_code == 201
    assert len(a.content) > 300 * 1024
    a.json()
    b = g.post(key=key, json_body={}, headers=h)
    assert b.headers["Idempotent-Replayed"] == "true"
    assert "too large" in b.json()["errors"][0]["details"].lower() or \
        "larger" in b.json()["errors"][0]["details"]
    assert upstream.executions(key) == 1


def test_response_at_the_limit_is_stored_whole(gateway_factory):
    g = gateway_factory(directives=["idempotency_max_response_size 64k;"])
    key = unique_key()
    a = g.post(key=key, json_body={}, headers={"X-Demo-Body-Bytes": "1000"})
    b = g.post(key=key, json_body={}, headers={"X-Demo-Body-Bytes": "1000"})
    assert b.headers["Idempotent-Replayed"] == "true"
    assert b.content == a.content


def test_client_gone_does_not_cancel_the_store(gateway, upstream):
    key = unique_key()
    with pytest.raises(requests.RequestException):
        gateway.post(key=key, json_body={}, headers={"X-Demo-Delay-Ms": "800"},
                     timeout=0.3)
    time.sleep(1.0)
    r = gateway.post(key=key, json_body={}, headers={"X-Demo-Delay-Ms": "800"})
    assert r.headers["Idempotent-Replayed"] == "true"
    assert upstream.executions(key) == 1


# --- durability ---------------------------------------------------------------

def test_kill_9_of_nginx_then_restart_replays_stored_responses(gateway_factory, upstream):
    g = gateway_factory(workers=2)
    keys = [unique_key() for _ in range(10)]
    first = {k: g.post(key=k, json_body={"k": k}) for k in keys}
    g.kill9()
    g.start()
    for k in keys:
        r = g.post(key=k, json_body={"k": k})
        assert r.headers["Idempotent-Replayed"] == "true"
        assert r.status_code == first[k].status_code
        assert r.content == first[k].content
        assert upstream.executions(k) == 1


# --- variables and metrics ------------------------------------------------------

def test_outcome_variable_names_each_outcome(gateway):
    key = unique_key()
    gateway.post(key=key, json_body={"a": 1})
    gateway.post(key=key, json_body={"a": 1})
    gateway.post(key=key, json_body={"a": 2})
    gateway.post(key="x" * 300, json_body={})
    gateway.post(json_body={})
    time.sleep(0.2)
    with open(os.path.join(gateway.run, "outcome.log")) as f:
        outcomes = [line.split()[0] for line in f if line.strip()]
    assert outcomes[-5:] == ["executed", "replayed", "mismatch", "invalid", "bypass"]


def test_metrics_count_outcomes(gateway):
    key = unique_key()
    gateway.post(key=key, json_body={})
    gateway.post(key=key, json_body={})
    m = gateway.metrics()
    assert m['idemgate_requests_total{outcome="executed"}'] >= 1
    assert m['idemgate_requests_total{outcome="replayed"}'] >= 1


def test_admin_names_a_key_with_a_slash(gateway):
    # every character 0x21-0x7E may be in a key, '/' too: the admin
    # location takes all of the URI after /keys/, sent as is or as %2F
    key = "sl/ash_" + os.urandom(4).hex()
    assert gateway.post(key=key, json_body={}).status_code == 201
    r = gateway.admin_get(key)          # /keys/sl%2Fash_...
    assert r.status_code == 200 and r.json()["key"] == key
    r = requests.get(gateway.url + "/keys/" + key, timeout=5)
    assert r.status_code == 200 and r.json()["key"] == key
    d = requests.delete(gateway.url + "/keys/" + key, timeout=5)
    assert d.status_code in (200, 204)
    assert gateway.admin_get(key).status_code == 404
