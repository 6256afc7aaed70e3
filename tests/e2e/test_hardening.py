"""End-to-end tests of the hardening of the module's answers and API log: a
request target with a fragment, the API log of an unknown outcome and of
paths that are not UTF-8, absent and empty scope headers, error bodies whose
status agrees with their status line, and the retry hint of the 409.

Against real nginx with the module (conftest's Gateway) in front of the demo
API, and, where nginx's own error pages take part, the idemgate command
(test_gateway_cli's Gateway).
"""

import json
import os
import re
import socket
import threading
import time

import pytest
import requests

import test_gateway_cli as cli
from conftest import unique_key


def raw(port, data, timeout=5.0):
    """Sends raw bytes, returns (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            buf += chunk
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m and len(rest) >= int(m.group(1)):
                    break
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def post_raw(port, target, key=None, extra=b"", body=b"{}"):
    req = (b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Content-Type: application/json\r\nConnection: close\r\n")
    if key is not None:
        req += b"Idempotency-Key: " + key.encode() + b"\r\n"
    req += extra
    req += b"Content-Length: %d\r\n\r\n" % len(body) + body
    return raw(port, req)


# --- a request target with a fragment ----------------------------------------

def test_target_with_a_fragment_is_refused_and_nothing_stored(gateway, upstream):
    key = unique_key()
    status, headers, body = post_raw(gateway.port,
                                     b"/api/v1/inquiries?a=1#frag", key)
    assert status == 400
    assert headers["content-type"] == "application/json"
    err = json.loads(body)["errors"][0]
    assert err["title"] == "Idempotency error"
    assert "fragment" in err["details"]
    assert upstream.executions(key) == 0
    assert gateway.admin_get(key).status_code == 404
    # two targets that differ only after '#' can never share a record
    status, _, _ = post_raw(gateway.port, b"/api/v1/inquiries?a=1#other", key)
    assert status == 400
    assert upstream.executions(key) == 0
    # the same key without a fragment executes: nothing was kept
    status, _, _ = post_raw(gateway.port, b"/api/v1/inquiries?a=1", key)
    assert status == 201
    assert upstream.executions(key) == 1


def test_fragment_in_the_path_is_refused_too(gateway, upstream):
    key = unique_key()
    status, _, body = post_raw(gateway.port, b"/api/v1/inquiries#x", key)
    assert status == 400 and b"fragment" in body
    assert upstream.executions(key) == 0


def test_fragment_without_a_key_is_passed_through(gateway, upstream):
    # forwarded unchanged: the demo API itself answers (and, seeing the
    # fragment in its target, knows no such resource)
    before = upstream.total()
    status, _, body = post_raw(gateway.port, b"/api/v1/inquiries#x")
    assert status == 404 and b"fragment" not in body
    assert upstream.total() == before + 1


def test_fragment_is_a_problem_in_the_ietf_style(gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_error_style ietf;"])
    key = unique_key()
    status, headers, body = post_raw(g.port, b"/api/v1/inquiries?#", key)
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == 400 and "fragment" in problem["detail"]
    assert upstream.executions(key) == 0


# --- the API log --------------------------------------------------------------

def read_api_log(path):
    """Every line, decoded strictly: invalid UTF-8 or JSON fails the test."""
    with open(path, "rb") as f:
        data = f.read()
    return [json.loads(line.decode("utf-8", errors="strict"))
            for line in data.splitlines() if line]


@pytest.fixture
def demo_gateway(upstream):
    """idemgate in front of the demo API, with an API log and short
    upstream timeout (nginx's own 502/504 pages take part)."""
    workdir = cli.tempfile.mkdtemp(prefix="idemgate-hard-", dir="/tmp")
    os.chmod(workdir, 0o755)
    made = []

    def make(*args):
        g = cli.Gateway(workdir, upstream.url,
                        ("--api-log", "api.log", "--upstream-timeout", "1s",
                         "--lease", "5s") + args)
        made.append(g)
        return g

    yield make, os.path.join(workdir, "api.log")
    for g in made:
        g.close()
    cli.shutil.rmtree(workdir, ignore_errors=True)


def wait_log(path, pred, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            entries = read_api_log(path)
            if pred(entries):
                return entries
        time.sleep(0.05)
    return read_api_log(path) if os.path.exists(path) else []


@pytest.mark.parametrize("switch,status", [
    ({"X-Demo-Drop": "1"}, 502),           # reset before any header
    ({"X-Demo-Delay-Ms": "3000"}, 504),    # upstream timeout
])
def test_api_log_names_the_client_request_of_an_unknown_outcome(
        demo_gateway, switch, status):
    make, log = demo_gateway
    g = make()
    key = unique_key()
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    headers.update(switch)
    r = requests.post(g.url + "/api/v1/inquiries?x=1", data="{}",
                      headers=headers, timeout=10)
    assert r.status_code == status
    entries = wait_log(log, lambda es: any(e["key"] == key for e in es))
    mine = [e for e in entries if e["key"] == key]
    assert len(mine) == 1
    assert mine[0]["method"] == "POST"
    assert mine[0]["path"] == "/api/v1/inquiries"
    assert mine[0]["status"] == status
    assert "idemgate-error" not in json.dumps(entries)


def test_api_log_names_the_request_of_a_failed_passthrough(demo_gateway):
    make, log = demo_gateway
    g = make()
    r = requests.post(g.url + "/api/v1/inquiries", data="{}",
                      headers={"X-Demo-Drop": "1",
                               "Content-Type": "application/json"},
                      timeout=10)
    assert r.status_code == 502
    entries = wait_log(log, lambda es: any(e["status"] == 502 for e in es))
    failed = [e for e in entries if e["status"] == 502]
    assert [(e["method"], e["path"], e["key"]) for e in failed] == [
        ("POST", "/api/v1/inquiries", None)]


def test_api_log_is_valid_utf8_whatever_the_path(gateway, upstream):
    key1, key2 = unique_key(), unique_key()
    # a raw 0xFF and a broken sequence in the target (the demo API refuses
    # those with its own 400), and a percent-encoded one
    assert post_raw(gateway.port, b"/api/v1/inquiries/\xff\xc3(x", key1)[0] \
        in (400, 404)
    assert post_raw(gateway.port, b"/api/v1/inquiries/%ff", key2)[0] == 405
    # the same without a key: passthrough entries are logged too
    post_raw(gateway.port, b"/api/v1/\xed\xa0\x80")
    time.sleep(0.3)
    path = os.path.join(gateway.run, "api.log")
    entries = read_api_log(path)            # strict: fails on invalid UTF-8
    by_key = {e["key"]: e for e in entries}
    assert by_key[key1]["path"] == "/api/v1/inquiries/\ufffd\ufffd(x"
    assert by_key[key2]["path"] == "/api/v1/inquiries/%ff"
    assert any(e["key"] is None and e["path"] == "/api/v1/\ufffd\ufffd\ufffd"
               for e in entries)


# --- absent and empty scope headers -------------------------------------------

def test_absent_and_empty_scope_headers_are_different_scopes(gateway, upstream):
    key = unique_key()
    s1, h1, b1 = post_raw(gateway.port, b"/api/v1/inquiries", key)
    assert s1 == 201 and "idempotent-replayed" not in h1
    # an empty Authorization header: another scope, so another key
    s2, h2, b2 = post_raw(gateway.port, b"/api/v1/inquiries", key,
                          extra=b"Authorization:\r\n")
    assert s2 == 201 and "idempotent-replayed" not in h2
    assert json.loads(b2) != json.loads(b1)
    assert upstream.executions(key) == 2
    # each replays within its own scope
    s3, h3, b3 = post_raw(gateway.port, b"/api/v1/inquiries", key)
    assert h3.get("idempotent-replayed") == "true" and b3 == b1
    s4, h4, b4 = post_raw(gateway.port, b"/api/v1/inquiries", key,
                          extra=b"Authorization: \r\n")
    assert h4.get("idempotent-replayed") == "true" and b4 == b2
    assert upstream.executions(key) == 2


def test_absent_and_empty_are_distinct_for_each_scope_header(
        gateway_factory, upstream):
    g = gateway_factory(directives=[
        "idempotency_scope $http_authorization $http_x_tenant;"])
    key = unique_key()
    post_raw(g.port, b"/api/v1/inquiries", key, extra=b"X-Tenant: \r\n")
    post_raw(g.port, b"/api/v1/inquiries", key)
    post_raw(g.port, b"/api/v1/inquiries", key, extra=b"Authorization: \r\n")
    assert upstream.executions(key) == 3
    # a scope value that is not one variable alone is never absent
    g2 = gateway_factory(directives=["idempotency_scope t=$http_x_tenant;"])
    key2 = unique_key()
    post_raw(g2.port, b"/api/v1/inquiries", key2)
    _, h, _ = post_raw(g2.port, b"/api/v1/inquiries", key2,
                       extra=b"X-Tenant: \r\n")
    assert h.get("idempotent-replayed") == "true"


# --- status line and body agree -----------------------------------------------

@pytest.mark.parametrize("style", ["persona", "ietf"])
@pytest.mark.parametrize("switch,status", [
    ({"X-Demo-Drop": "1"}, 502),
    ({"X-Demo-Delay-Ms": "3000"}, 504),
])
def test_unknown_outcome_status_agrees_with_its_body(
        demo_gateway, style, switch, status):
    make, _ = demo_gateway
    g = make("--error-style", style)
    key = unique_key()
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    headers.update(switch)
    first = requests.post(g.url + "/api/v1/inquiries", data="{}",
                          headers=headers, timeout=10)
    replay = requests.post(g.url + "/api/v1/inquiries", data="{}",
                           headers={"Idempotency-Key": key,
                                    "Content-Type": "application/json"},
                           timeout=10)
    for r in (first, replay):
        assert r.status_code == status
        body = r.json()
        if style == "ietf":
            assert r.headers["Content-Type"] == "application/problem+json"
            assert body["status"] == status
            assert body["title"] == {502: "Bad Gateway",
                                     504: "Gateway Timeout"}[status]
        else:
            assert body["errors"][0]["title"] == "Upstream outcome unknown"
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == first.content


# --- the retry hint of the 409 ------------------------------------------------

def conflict_while_slow(g, delay_ms, after_s):
    """Sends a slow first request of a new key, and after after_s a
    duplicate; returns (the duplicate's answer, the key) once the first is
    done."""
    key = unique_key()
    slow = {"X-Demo-Delay-Ms": str(delay_ms)}
    t = threading.Thread(target=g.post,
                         kwargs=dict(key=key, json_body={}, headers=slow))
    t.start()
    try:
        time.sleep(after_s)
        return g.post(key=key, json_body={}, headers=slow), key
    finally:
        t.join()


def test_in_progress_409_has_a_short_honest_retry_hint(gateway_factory,
                                                       upstream):
    g = gateway_factory(directives=["idempotency_wait 300ms;",
                                    "idempotency_lease 70s;"],
                        read_timeout="60s")
    r, key = conflict_while_slow(g, 3000, 0.3)
    assert r.status_code == 409
    after = int(r.headers["Retry-After"])
    after_ms = int(r.headers["Retry-After-Ms"])
    # short (SDKs ignore a minute or more), never 0, and the two agree
    assert 1 <= after <= 2
    assert 100 <= after_ms <= 2000
    assert after == (after_ms + 999) // 1000
    assert upstream.executions(key) == 1


def test_retry_hint_is_no_later_than_the_lease(gateway_factory, upstream):
    g = gateway_factory(directives=["idempotency_wait 200ms;",
                                    "idempotency_lease 1s;"],
                        read_timeout="3s")
    r, _ = conflict_while_slow(g, 2500, 0.5)
    assert r.status_code == 409
    # about 1000 - 500 - 200 ms of the lease are left
    assert int(r.headers["Retry-After-Ms"]) <= 600
    assert r.headers["Retry-After"] == "1"
