"""End-to-end tests of streamed responses (issue 12, item 7): a
text/event-stream answer (or any answer under idempotency_stream pass /
--stream pass) reaches the client as it arrives while it is recorded; the
key keeps it whole and replays it whole; a stream cut short settles as an
unknown outcome.

The upstream is a small SSE server in this file. It sends its first event,
then waits for the test to open a gate before it sends the rest, so that
"the first event reached the client before the stream ended" is a matter
of order, never of timing. The latency of the first event through the
gateway is measured and printed (pytest -s), not asserted.
"""

import http.server
import json
import os
import socket
import socketserver
import threading
import time

import pytest
import requests
import urllib3

from conftest import Gateway, has_failpoints, unique_key
# the idemgate command's fixtures (its gateway_factory, not conftest's)
from test_gateway_cli import echo, gateway_factory, workdir  # noqa: F401

EVENTS = [b"id: 1\ndata: one\n\n", b"id: 2\ndata: two\n\n",
          b"id: 3\ndata: {\"n\":3}\n\n"]


class SseHandler(http.server.BaseHTTPRequestHandler):
    """POST /events/NAME: an event stream. POST /cut/NAME: its first event,
    then the connection dropped without the stream's end. POST /json/NAME:
    a JSON body in two pieces. Each waits at the gate NAME (opened by the
    test) after its first piece."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        kind, name = self.path.strip("/").split("/")[:2]
        server = self.server
        with server.lock:
            server.count += 1
            gate = server.gates.setdefault(name, threading.Event())
        if kind == "nocontent":
            self.send_response(204)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if kind == "json"
                         else "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        first = b'{"part":1,' if kind == "json" else EVENTS[0]
        server.sent_at[name] = time.monotonic()
        self.chunk(first)
        gate.wait(20)
        if kind == "cut":
            # no terminating chunk: the stream is cut short
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if kind == "json":
            self.chunk(b'"part":2}')
        else:
            for e in EVENTS[1:]:
                self.chunk(e)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class SseServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), SseHandler)
        self.lock = threading.Lock()
        self.count = 0
        self.gates = {}
        self.sent_at = {}
        self.port = self.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port

    def gate(self, name):
        with self.lock:
            return self.gates.setdefault(name, threading.Event())


@pytest.fixture(scope="module")
def sse():
    server = SseServer()
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    # let every handler still waiting go
    for g in list(server.gates.values()):
        g.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def module_gateway(sse):
    made = []

    def make(*directives):
        g = Gateway(sse, directives=["idempotency_wait 10s;",
                                     "idempotency_lease 30s;"]
                    + list(directives), read_timeout="30s")
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def open_stream(url, key, path):
    return requests.post(url + path, data=json.dumps({"q": 1}),
                         headers={"Idempotency-Key": key,
                                  "Content-Type": "application/json"},
                         stream=True, timeout=30)


def read_first_event(sse, resp, name):
    """Reads until the first event is in; returns (bytes so far, the
    chunk iterator). The upstream is still held at its gate meanwhile."""
    got = b""
    chunks = resp.raw.read_chunked(decode_content=False)
    for c in chunks:
        got += c
        if EVENTS[0] in got:
            break
    latency = time.monotonic() - sse.sent_at[name]
    print("first event through the gateway after %.1f ms" % (latency * 1e3))
    return got, chunks


def check_streamed_then_replayed(sse, url, path_kind="events"):
    name = unique_key("s")
    key = unique_key()
    gate = sse.gate(name)
    before = sse.count
    resp = open_stream(url, key, "/%s/%s" % (path_kind, name))
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    got, chunks = read_first_event(sse, resp, name)
    # the first event arrived while the upstream had not ended the stream
    assert not gate.is_set()
    assert got == EVENTS[0]
    gate.set()
    for c in chunks:
        got += c
    assert got == b"".join(EVENTS)
    assert resp.headers.get("Idempotent-Replayed") is None
    # the key keeps it whole, and the replay is the same bytes at once
    again = requests.post(url + "/%s/%s" % (path_kind, name),
                          data=json.dumps({"q": 1}),
                          headers={"Idempotency-Key": key,
                                   "Content-Type": "application/json"},
                          timeout=10)
    assert again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.headers["Content-Type"] == "text/event-stream"
    assert again.headers["Cache-Control"] == "no-cache"
    assert again.content == got
    assert sse.count == before + 1
    return key


def check_cut_is_unknown_outcome(sse, url, admin_get):
    name = unique_key("c")
    key = unique_key()
    gate = sse.gate(name)
    before = sse.count
    resp = open_stream(url, key, "/cut/%s" % name)
    got, chunks = read_first_event(sse, resp, name)
    assert got == EVENTS[0]
    gate.set()
    # the client's stream ends short, in error, not with a clean end
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for c in chunks:
            got += c
    # the retry meets the stored unknown outcome (waiting for it if the
    # settlement is still on its way), and nothing runs twice
    again = requests.post(url + "/cut/%s" % name, data=json.dumps({"q": 1}),
                          headers={"Idempotency-Key": key,
                                   "Content-Type": "application/json"},
                          timeout=30)
    assert again.status_code == 504, again.text
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "outcome is unknown" in again.text
    assert sse.count == before + 1
    rec = admin_get(key).json()
    assert rec["state"] == "complete" and rec["unknown_outcome"] is True
    # the stored error keeps one Date, as an upstream's answer does
    assert "date" in [h[0].lower() for h in rec["headers"]]
    time.sleep(1.1)
    later = requests.post(url + "/cut/%s" % name, data=json.dumps({"q": 1}),
                          headers={"Idempotency-Key": key,
                                   "Content-Type": "application/json"},
                          timeout=30)
    assert later.status_code == 504
    assert later.headers["Date"] == again.headers["Date"]


# --------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------

def test_module_event_stream_flows_and_replays_whole(module_gateway, sse):
    g = module_gateway()
    check_streamed_then_replayed(sse, g.url)


def test_module_cut_stream_is_an_unknown_outcome(module_gateway, sse):
    g = module_gateway()
    check_cut_is_unknown_outcome(sse, g.url, g.admin_get)
    # the API log has the status the key keeps, not the one the cut
    # stream began with (SPEC §7)
    time.sleep(0.2)
    cut = [e for e in g.api_log() if e["path"].startswith("/cut/")]
    assert [e["status"] for e in cut] == [504]


def test_module_hold_keeps_even_an_event_stream(module_gateway, sse):
    g = module_gateway("idempotency_stream hold;")
    check_held_until_the_end(sse, g.url, "events")


def test_module_other_media_held_unless_pass(module_gateway, sse):
    g = module_gateway()
    check_held_until_the_end(sse, g.url, "json")
    p = module_gateway("idempotency_stream pass;")
    check_json_streams(sse, p.url)


def check_held_until_the_end(sse, url, kind):
    """Nothing of the response reaches the client before it is stored."""
    name = unique_key("h")
    key = unique_key()
    gate = sse.gate(name)
    answered = threading.Event()
    out = {}

    def client():
        out["r"] = requests.post(url + "/%s/%s" % (kind, name),
                                 data=json.dumps({"q": 1}),
                                 headers={"Idempotency-Key": key,
                                          "Content-Type": "application/json"},
                                 timeout=30)
        answered.set()

    t = threading.Thread(target=client)
    t.start()
    deadline = time.monotonic() + 10
    while name not in sse.sent_at and time.monotonic() < deadline:
        time.sleep(0.01)
    assert name in sse.sent_at
    # the upstream sent its first piece and waits: the client has nothing
    # (a slow machine only makes this wait longer, never makes it fail)
    assert not answered.wait(0.3)
    gate.set()
    t.join(30)
    assert answered.is_set()
    assert out["r"].status_code == 200


def check_json_streams(sse, url):
    name = unique_key("j")
    key = unique_key()
    gate = sse.gate(name)
    resp = open_stream(url, key, "/json/%s" % name)
    assert resp.headers["Content-Type"] == "application/json"
    chunks = resp.raw.read_chunked(decode_content=False)
    got = next(chunks)
    assert not gate.is_set()
    assert got == b'{"part":1,'
    gate.set()
    for c in chunks:
        got += c
    assert got == b'{"part":1,"part":2}'
    again = requests.post(url + "/json/%s" % name, data=json.dumps({"q": 1}),
                          headers={"Idempotency-Key": key,
                                   "Content-Type": "application/json"},
                          timeout=10)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.content == got


def stream_whole(sse, url, key, name):
    gate = sse.gate(name)
    resp = open_stream(url, key, "/events/%s" % name)
    got, chunks = read_first_event(sse, resp, name)
    assert not gate.is_set()
    gate.set()
    for c in chunks:
        got += c
    return got


def test_module_too_large_stream_flows_and_keeps_the_error(module_gateway,
                                                           sse):
    # the stream (55 bytes) is over the limit: the client gets all of it,
    # the key keeps the "too large" error
    g = module_gateway("idempotency_max_response_size 20;")
    key = unique_key()
    name = unique_key("t")
    before = sse.count
    assert stream_whole(sse, g.url, key, name) == b"".join(EVENTS)
    again = requests.post(g.url + "/events/%s" % name, data=json.dumps(
        {"q": 1}), headers={"Idempotency-Key": key,
                            "Content-Type": "application/json"}, timeout=10)
    assert again.status_code == 502
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "larger than the gateway stores" in again.text
    assert sse.count == before + 1


def test_module_released_status_stream_frees_the_key(module_gateway, sse):
    g = module_gateway("idempotency_release_status 200;")
    key = unique_key()
    name = unique_key("r")
    before = sse.count
    assert stream_whole(sse, g.url, key, name) == b"".join(EVENTS)
    # not kept: the same key runs again
    sse.gate(name).clear()
    assert stream_whole(sse, g.url, key, name) == b"".join(EVENTS)
    assert sse.count == before + 2


@pytest.mark.skipif(not has_failpoints(),
                    reason="needs a module built with FAILPOINTS=1")
def test_module_gateway_dying_mid_stream_settles_unknown(sse):
    # the whole gateway dies once the stream was passed on, before it was
    # stored: the client's stream is cut, and once the claim's lease has
    # passed the key answers with the unknown outcome, never a second run
    prefix = "fpstream%s_" % os.urandom(3).hex()
    g = Gateway(sse, directives=["idempotency_lease 1s;",
                                 "idempotency_wait 3s;"],
                failpoints="after_forward:crash:" + prefix,
                read_timeout="30s")
    try:
        key = prefix + "a"
        name = unique_key("d")
        gate = sse.gate(name)
        before = sse.count
        resp = open_stream(g.url, key, "/events/%s" % name)
        got, chunks = read_first_event(sse, resp, name)
        gate.set()
        with pytest.raises(urllib3.exceptions.ProtocolError):
            for c in chunks:
                got += c
        g.kill9()
        g.start()
        assert g.admin_get(key).json()["state"] == "in_progress"
        time.sleep(1.1)
        r = requests.post(g.url + "/events/%s" % name,
                          data=json.dumps({"q": 1}),
                          headers={"Idempotency-Key": key,
                                   "Content-Type": "application/json"},
                          timeout=10)
        assert r.status_code == 504, r.text
        assert r.headers.get("Idempotent-Replayed") == "true"
        assert "outcome is unknown" in r.text
        assert sse.count == before + 1
    finally:
        g.close()


def test_module_pass_keeps_answers_without_a_body(module_gateway, sse):
    g = module_gateway("idempotency_stream pass;")
    key = unique_key()
    before = sse.count
    first = requests.post(g.url + "/nocontent/x", data="{}",
                          headers={"Idempotency-Key": key}, timeout=10)
    assert first.status_code == 204
    again = requests.post(g.url + "/nocontent/x", data="{}",
                          headers={"Idempotency-Key": key}, timeout=10)
    assert again.status_code == 204
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert sse.count == before + 1


# --------------------------------------------------------------------------
# The gateway
# --------------------------------------------------------------------------

def test_gateway_event_stream_flows_and_replays_whole(gateway_factory, sse):
    g = gateway_factory("--lease", "70s", upstream=sse.url)
    check_streamed_then_replayed(sse, g.url)


def test_gateway_cut_stream_is_an_unknown_outcome(gateway_factory, sse):
    g = gateway_factory("--lease", "70s", upstream=sse.url)

    def admin_get(key):
        return requests.get(g.admin_url + "/keys/" + key, timeout=5)

    check_cut_is_unknown_outcome(sse, g.url, admin_get)


def test_gateway_stream_pass_and_hold(gateway_factory, sse):
    p = gateway_factory("--stream", "pass", upstream=sse.url)
    check_json_streams(sse, p.url)
    h = gateway_factory("--stream", "hold", upstream=sse.url)
    check_held_until_the_end(sse, h.url, "events")


class BigSseHandler(http.server.BaseHTTPRequestHandler):
    """A long event stream, written as fast as the socket takes it."""
    protocol_version = "HTTP/1.1"
    total = 3 * 1024 * 1024

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = 429 if self.path.startswith("/status/429") else 200
        self.send_response(status)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        event = b"data: " + b"x" * 4000 + b"\n\n"
        sent = 0
        while sent < self.total:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            sent += len(event)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def big_sse():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), BigSseHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class Upstream:
        port = server.server_address[1]
    yield Upstream()
    server.shutdown()
    server.server_close()


def read_slowly(port, key, path="/events"):
    """A client with a small receive window that starts reading late: the
    whole answer, or what came before the gateway stalled."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(("POST %s HTTP/1.1\r\nHost: a\r\nIdempotency-Key: %s\r\n"
               "Content-Length: 0\r\nConnection: close\r\n\r\n"
               % (path, key)).encode())
    time.sleep(1.5)
    s.settimeout(10)
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except socket.timeout:
        pass
    s.close()
    return data


def dechunk(body):
    """The data of a chunked body."""
    out = b""
    while True:
        size, _, body = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return out
        out += body[:n]
        body = body[n + 2:]


def test_module_stream_to_a_slow_client_is_whole(big_sse):
    g = Gateway(big_sse, directives=["idempotency_lease 30s;"],
                read_timeout="30s")
    try:
        key = unique_key()
        first = read_slowly(g.port, key)
        head, _, body = first.partition(b"\r\n\r\n")
        assert b"200 OK" in head.split(b"\r\n")[0]
        # chunked to the client: ends with the last chunk, nothing missing
        assert body.endswith(b"0\r\n\r\n"), len(body)
        events = dechunk(body)
        assert events.count(b"data: ") == -(-BigSseHandler.total // 4008)
        replay = requests.post(g.url + "/events", headers={
            "Idempotency-Key": key}, timeout=30)
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.content == events
    finally:
        g.close()


def test_module_released_status_stream_tells_no_expiry(big_sse):
    g = Gateway(big_sse, directives=["idempotency_release_status 429;"])
    try:
        r = requests.post(g.url + "/status/429", timeout=30,
                          headers={"Idempotency-Key": unique_key()})
        assert r.status_code == 429
        assert "Idempotency-Expires" not in r.headers
    finally:
        g.close()
