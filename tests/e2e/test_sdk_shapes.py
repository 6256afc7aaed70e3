"""End-to-end tests of what SDKs read in the gateway's answers: the stripe
error style (SPEC §5) and the retry hints every replay carries.

Real nginx with the module (conftest's Gateway), in front of a small
in-process upstream whose answers carry the retry headers an API may send.
"""

import http.server
import os
import json
import socketserver
import threading
import time

import pytest
import requests

from conftest import Gateway, unique_key


class RetryHeadersHandler(http.server.BaseHTTPRequestHandler):
    """Answers every POST with a status from the path (/status/NNN, else
    201) and the API's own retry hints set to true."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        parts = self.path.strip("/").split("/")
        status = int(parts[1]) if parts[0] == "status" else 201
        with self.server.lock:
            self.server.count += 1
            count = self.server.count
        body = json.dumps({"id": "obj_%d" % count}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Should-Retry", "true")
        self.send_header("Stripe-Should-Retry", "true")
        self.send_header("X-Other", "kept")
        self.end_headers()
        self.wfile.write(body)


class RetryHeadersServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RetryHeadersHandler)
        self.lock = threading.Lock()
        self.count = 0
        self.port = self.server_address[1]


@pytest.fixture(scope="module")
def hinting_upstream():
    server = RetryHeadersServer()
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def hinting_gateway(hinting_upstream):
    made = []

    def make(*directives):
        g = Gateway(hinting_upstream, directives=list(directives))
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def post(g, key, body=None, path="/v1/things", headers=None):
    h = {"Content-Type": "application/json"}
    if key is not None:
        h["Idempotency-Key"] = key
    h.update(headers or {})
    return requests.post(g.url + path, data=json.dumps(body or {}),
                         headers=h, timeout=10)


# --- replays tell clients not to retry ---------------------------------------

@pytest.mark.parametrize("path", ["/v1/things", "/status/500", "/status/429",
                                  "/status/409"])
def test_replay_says_do_not_retry_in_place_of_the_stored_hints(
        hinting_gateway, hinting_upstream, path):
    g = hinting_gateway()
    key = unique_key()
    first = post(g, key, path=path)
    # the first answer is the API's own, hints and all
    assert first.headers["X-Should-Retry"] == "true"
    assert first.headers["Stripe-Should-Retry"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    replay = post(g, key, path=path)
    assert replay.status_code == first.status_code
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["X-Should-Retry"] == "false"
    assert replay.headers["Stripe-Should-Retry"] == "false"
    assert replay.headers["X-Other"] == "kept"
    assert replay.content == first.content
    # one value each, not the stored one beside ours
    raw = requests.post(g.url + path, data="{}", headers={
        "Idempotency-Key": key, "Content-Type": "application/json"},
        timeout=10, stream=True).raw
    names = [n.lower() for n in raw.headers.keys()]
    assert names.count("x-should-retry") == 1
    assert names.count("stripe-should-retry") == 1


def test_every_replay_says_do_not_retry(gateway, upstream):
    key = unique_key()
    first = gateway.post(key=key, json_body={"a": 1})
    assert "X-Should-Retry" not in first.headers
    replay = gateway.post(key=key, json_body={"a": 1})
    assert replay.headers["X-Should-Retry"] == "false"
    # Stripe's own header only in the stripe style or where it was stored
    assert "Stripe-Should-Retry" not in replay.headers


def test_stripe_style_replays_carry_stripe_should_retry(gateway_factory):
    g = gateway_factory(directives=["idempotency_error_style stripe;"])
    key = unique_key()
    g.post(key=key, json_body={})
    replay = g.post(key=key, json_body={})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Stripe-Should-Retry"] == "false"
    assert replay.headers["X-Should-Retry"] == "false"


# --- the stripe error style ---------------------------------------------------

def stripe_error(r):
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"]
    assert set(body["error"]) == {"type", "message"}
    return body["error"]


def test_stripe_style_mismatch_is_an_idempotency_error(gateway_factory,
                                                       upstream):
    g = gateway_factory(directives=["idempotency_error_style stripe;"])
    key = unique_key()
    g.post(key=key, json_body={"a": 1})
    r = g.post(key=key, json_body={"a": 2})
    assert r.status_code == 400
    err = stripe_error(r)
    assert err["type"] == "idempotency_error"
    assert err["message"].startswith(
        "Keys for idempotent requests can only be used with the same "
        "parameters they were first used with. Try using a key other than '"
        + key + "'")
    assert upstream.executions(key) == 1


def test_stripe_style_key_errors_are_idempotency_errors(gateway_factory):
    g = gateway_factory(directives=["idempotency_error_style stripe;",
                                    "idempotency_require_key on;"])
    for key in (None, "x" * 300, ""):
        r = g.post(key=key, json_body={})
        assert r.status_code == 400
        assert stripe_error(r)["type"] == "idempotency_error"


def test_stripe_style_conflict_and_unknown_outcome_are_api_errors(
        gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_error_style stripe;",
                                    "idempotency_wait 200ms;"],
                        read_timeout="1s")
    key = unique_key()
    slow = {"X-Demo-Delay-Ms": "2500"}
    t = threading.Thread(target=g.post,
                         kwargs=dict(key=key, json_body={}, headers=slow))
    t.start()
    try:
        time.sleep(0.3)
        r = g.post(key=key, json_body={}, headers=slow)
        assert r.status_code == 409
        assert stripe_error(r)["type"] == "api_error"
    finally:
        t.join()
    # the first request timed out upstream: its key keeps a 504
    r = g.post(key=key, json_body={})
    assert r.status_code == 504
    assert stripe_error(r)["type"] == "api_error"
    assert r.headers["Stripe-Should-Retry"] == "false"
    assert upstream.executions(key) == 1


# --- key header names ---------------------------------------------------------

KEY_HEADERS = ["X-Idempotency-Key", "chargebee-idempotency-key",
               "Cko-Idempotency-Key", "PayPal-Request-Id", "Idempotence-Key"]


@pytest.fixture
def named_key_gateway(gateway_factory):
    return gateway_factory(directives=[
        "idempotency_key_header " + " ".join(KEY_HEADERS) + ";"])


@pytest.mark.parametrize("name", KEY_HEADERS + ["x-IDEMPOTENCY-key"])
def test_key_header_names_carry_the_key(named_key_gateway, upstream, name):
    key = unique_key()
    a = named_key_gateway.post(json_body={"a": 1}, headers={name: key})
    assert a.status_code == 201
    b = named_key_gateway.post(json_body={"a": 1}, headers={name: key})
    assert b.headers["Idempotent-Replayed"] == "true"
    assert b.content == a.content
    c = named_key_gateway.post(json_body={"a": 2}, headers={name: key})
    assert c.status_code == 400
    # the replay is the first answer itself: one inquiry, one id
    assert b.json()["data"]["id"] == a.json()["data"]["id"]


def test_key_in_another_header_is_the_same_key(named_key_gateway):
    key = unique_key()
    a = named_key_gateway.post(key=key, json_body={})
    b = named_key_gateway.post(json_body={},
                               headers={"X-Idempotency-Key": key})
    assert b.headers["Idempotent-Replayed"] == "true"
    assert b.content == a.content


def test_key_headers_that_disagree_are_refused(named_key_gateway):
    r = named_key_gateway.post(key="k-one", json_body={},
                               headers={"X-Idempotency-Key": "k-two"})
    assert r.status_code == 400
    assert r.json()["errors"][0]["title"] == "Idempotency error"
    # the same key under both names is one key
    key = unique_key()
    r = named_key_gateway.post(key=key, json_body={},
                               headers={"PayPal-Request-Id": key})
    assert r.status_code == 201


def test_key_header_value_is_validated_like_the_key(named_key_gateway):
    r = named_key_gateway.post(json_body={},
                               headers={"X-Idempotency-Key": "x" * 256})
    assert r.status_code == 400
    assert "255" in r.json()["errors"][0]["details"]


def test_other_names_are_not_keys_unless_configured(gateway):
    key = unique_key()
    a = gateway.post(json_body={}, headers={"X-Idempotency-Key": key})
    b = gateway.post(json_body={}, headers={"X-Idempotency-Key": key})
    assert "Idempotent-Replayed" not in b.headers
    assert a.json() != b.json()


# --- statuses that free the key -----------------------------------------------

def test_release_status_reaches_the_client_and_frees_the_key(gateway_factory,
                                                             upstream):
    g = gateway_factory(directives=["idempotency_release_status 429 503;"])
    key = unique_key()
    shed = g.post(key=key, json_body={}, headers={"X-Demo-Fail": "429"})
    assert shed.status_code == 429
    assert "Idempotency-Expires" not in shed.headers
    assert "Idempotent-Replayed" not in shed.headers
    assert g.admin_get(key).status_code == 404
    again = g.post(key=key, json_body={}, headers={"X-Demo-Fail": "503"})
    assert again.status_code == 503
    assert g.admin_get(key).status_code == 404
    ok = g.post(key=key, json_body={})
    assert ok.status_code == 201 and "Idempotency-Expires" in ok.headers
    replay = g.post(key=key, json_body={}, headers={"X-Demo-Fail": "429"})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.status_code == 201
    assert upstream.executions(key) == 3
    time.sleep(0.2)
    mine = [e for e in g.api_log() if e["key"] == key]
    assert [(e["status"], e.get("key_released", False)) for e in mine] == [
        (429, True), (503, True), (201, False)]


def test_other_statuses_are_stored_as_before(gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_release_status 429;"])
    key = unique_key()
    first = g.post(key=key, json_body={}, headers={"X-Demo-Fail": "500"})
    assert first.status_code == 500
    replay = g.post(key=key, json_body={})
    assert replay.status_code == 500
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert upstream.executions(key) == 1


def test_by_default_every_status_is_stored(gateway, upstream):
    key = unique_key()
    gateway.post(key=key, json_body={}, headers={"X-Demo-Fail": "429"})
    replay = gateway.post(key=key, json_body={})
    assert replay.status_code == 429
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert upstream.executions(key) == 1


@pytest.mark.parametrize("bad", ["99", "600", "abc"])
def test_release_status_must_be_a_status(gateway_factory, bad):
    # nginx refuses the configuration: the gateway does not start
    with pytest.raises(RuntimeError, match="exited"):
        gateway_factory(directives=["idempotency_release_status %s;" % bad])


# --- scopes by who the client is ----------------------------------------------

class PrincipalHandler(http.server.BaseHTTPRequestHandler):
    """An auth service: tokens t1 and t2 are alice's (t2 is t1 rotated), t3
    is bob's; anything else is refused."""
    protocol_version = "HTTP/1.1"
    principals = {"Bearer t1": "alice", "Bearer t2": "alice",
                  "Bearer t3": "bob"}

    def log_message(self, *args):
        pass

    def do_GET(self):
        who = self.principals.get(self.headers.get("Authorization", ""))
        self.send_response(200 if who else 401)
        if who:
            self.send_header("X-Principal", who)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def auth_service():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0),
                                             PrincipalHandler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_scope_by_the_principal_auth_request_returns(gateway_factory,
                                                     upstream, auth_service):
    g = gateway_factory(
        directives=["auth_request /_auth;",
                    "auth_request_set $principal $upstream_http_x_principal;",
                    "idempotency_scope $principal;"],
        extra_locations="""
        location = /_auth {
            internal;
            proxy_pass http://127.0.0.1:%d;
            proxy_method GET;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }
""" % auth_service)
    key = unique_key()
    a = g.post(key=key, json_body={}, headers={"Authorization": "Bearer t1"})
    assert a.status_code == 201
    # the token rotated, the client is the same: the same key
    b = g.post(key=key, json_body={}, headers={"Authorization": "Bearer t2"})
    assert b.headers["Idempotent-Replayed"] == "true"
    assert b.content == a.content
    # another principal: another scope, another execution
    c = g.post(key=key, json_body={}, headers={"Authorization": "Bearer t3"})
    assert "Idempotent-Replayed" not in c.headers
    # no principal: auth refuses before the key is looked at
    d = g.post(key=key, json_body={}, headers={"Authorization": "Bearer x"})
    assert d.status_code == 401
    assert upstream.executions(key) == 2


def test_no_scope_input_is_said_once_in_the_error_log(gateway, upstream):
    for _ in range(3):
        gateway.post(key=unique_key(), json_body={})
    with open(os.path.join(gateway.run, "error.log")) as f:
        log = f.read()
    assert log.count("carries none of the scope's inputs") == 1
    # a request with the header says nothing
    before = log.count("carries none")
    gateway.post(key=unique_key(), json_body={},
                 headers={"Authorization": "Bearer z"})
    with open(os.path.join(gateway.run, "error.log")) as f:
        assert f.read().count("carries none") == before
