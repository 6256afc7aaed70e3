"""End-to-end tests of the demo Inquiries API (examples/inquiries).

The demo API is the upstream that `make run`, the gateway's end-to-end
tests and the benchmarks put behind idemgate, so its endpoints, its
execution counters and its X-Demo-* switches are checked here against the
real binary. Nothing is built here: the binary is INQUIRIES_BIN, else
$IDEM_BUILD/inquiries, else build/inquiries. It is started once per module
on a free loopback port (--listen 127.0.0.1:0; the port is read from its
log line), and the counters are reset before each test.
"""

import json
import os
import re
import socket
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("INQUIRIES_BIN") or
           REPO / os.environ.get("IDEM_BUILD", "build") / "inquiries")

ID_RE = re.compile(r"^inq_[A-Za-z0-9]{24}$")
MiB = 1 << 20


class Inquiries:
    """A running `inquiries` process on 127.0.0.1."""

    def __init__(self, *args):
        if not BIN.exists():
            pytest.fail(f"{BIN} does not exist: build it first "
                        "(make build/inquiries) or set INQUIRIES_BIN",
                        pytrace=False)
        self.proc = subprocess.Popen(
            [str(BIN), "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m is None:
            self.proc.kill()
            rest = self.proc.stderr.read()
            pytest.fail(f"inquiries did not start: {line}{rest}",
                        pytrace=False)
        self.port = int(m.group(1))
        self.base = f"http://127.0.0.1:{self.port}"

    def url(self, path):
        return self.base + path

    def stop(self):
        """SIGTERM; returns the exit status and what it wrote to stderr."""
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            return None, err
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def server():
    srv = Inquiries()
    yield srv
    rc, err = srv.stop()
    assert rc == 0, f"inquiries exited with {rc}:\n{err}"
    assert "Sanitizer" not in err and "runtime error" not in err, err


@pytest.fixture(autouse=True)
def fresh_counts(server):
    r = requests.post(server.url("/_demo/reset"), timeout=5)
    assert r.status_code == 200


def executions(server, key=None):
    params = None if key is None else {"key": key}
    r = requests.get(server.url("/_demo/executions"), params=params,
                     timeout=5)
    assert r.status_code == 200
    return r.json()


def create(server, body=b'{"data":{"attributes":{"name-first":"Jane"}}}',
           headers=None, **kw):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return requests.post(server.url("/api/v1/inquiries"), data=body,
                         headers=h, timeout=kw.pop("timeout", 10), **kw)


# ---- raw HTTP over a socket, for what an HTTP library will not send ------

class Raw:
    """One TCP connection; reads responses framed by Content-Length."""

    def __init__(self, server, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", server.port),
                                             timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def response(self, head_only=False):
        """(status, headers with lower-case names, body)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        n = 0 if head_only or status == 100 else int(
            headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def closed(self):
        """True when the server closes the connection (EOF or reset)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


@pytest.fixture
def raw(server):
    conns = []

    def connect(timeout=5.0):
        c = Raw(server, timeout)
        conns.append(c)
        return c

    yield connect
    for c in conns:
        c.close()


def get_req(path="/healthz", extra=""):
    return (f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").encode()


# ---- endpoints ----------------------------------------------------------

def test_healthz(server):
    r = requests.get(server.url("/healthz"), timeout=5)
    assert r.status_code == 200
    assert r.text == "ok"
    assert "Date" in r.headers
    assert int(r.headers["X-Request-Count"]) >= 1


def test_head_is_get_without_body(server):
    r = requests.head(server.url("/healthz"), timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "2"
    assert r.content == b""


def test_create_inquiry(server):
    r = create(server, headers={"Idempotency-Key": "k-create"})
    assert r.status_code == 201
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Date"].endswith(" GMT")
    assert re.match(r"demo_session=[A-Za-z0-9]+; Path=/",
                    r.headers["Set-Cookie"])
    assert int(r.headers["X-Request-Count"]) >= 1
    doc = r.json()["data"]
    assert doc["type"] == "inquiry"
    assert ID_RE.match(doc["id"])
    assert r.headers["Location"] == f"/api/v1/inquiries/{doc['id']}"
    attrs = doc["attributes"]
    assert attrs["status"] == "created"
    assert attrs["name-first"] == "Jane"
    created = datetime.strptime(attrs["created-at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    age = datetime.now(timezone.utc) - created.replace(tzinfo=timezone.utc)
    assert abs(age.total_seconds()) < 60


def test_create_with_any_object_keeps_server_attributes(server):
    r = create(server, body=json.dumps(
        {"name-last": "Doe", "status": "approved", "tags": [1, {"a": None}]}))
    assert r.status_code == 201
    attrs = r.json()["data"]["attributes"]
    assert attrs["status"] == "created"
    assert attrs["name-last"] == "Doe"
    assert attrs["tags"] == [1, {"a": None}]


def test_create_with_empty_body(server):
    r = create(server, body=b"")
    assert r.status_code == 201
    assert set(r.json()["data"]["attributes"]) == {"status", "created-at"}


def test_ids_are_unique(server):
    ids = {create(server).json()["data"]["id"] for _ in range(50)}
    assert len(ids) == 50


@pytest.mark.parametrize("body", [b'{"data":', b"not json", b"[1,2]",
                                  b'"text"', b'{"data":[]}',
                                  b'{"data":{"attributes":3}}'])
def test_create_rejects_bad_json(server, body):
    r = create(server, body=body, headers={"Idempotency-Key": "bad"})
    assert r.status_code == 400
    err = r.json()["errors"][0]
    assert err["title"] == "Bad request"
    assert err["details"]
    # The request reached the API and ran: it counts as an execution.
    assert executions(server, "bad")["executions"] == 1


def test_get_inquiry(server):
    made = create(server).json()
    iid = made["data"]["id"]
    r = requests.get(server.url(f"/api/v1/inquiries/{iid}"), timeout=5)
    assert r.status_code == 200
    assert r.json() == made
    h = requests.head(server.url(f"/api/v1/inquiries/{iid}"), timeout=5)
    assert h.status_code == 200
    assert h.headers["Content-Length"] == str(len(r.content))


@pytest.mark.parametrize("iid", ["inq_000000000000000000000000", "nope",
                                 "inq_%22%5C"])
def test_get_unknown_inquiry(server, iid):
    r = requests.get(server.url(f"/api/v1/inquiries/{iid}"), timeout=5)
    assert r.status_code == 404
    assert r.json()["errors"][0]["title"] == "Not found"


def test_list_newest_first(server):
    ids = [create(server).json()["data"]["id"] for _ in range(3)]
    r = requests.get(server.url("/api/v1/inquiries"), timeout=5)
    assert r.status_code == 200
    listed = [d["id"] for d in r.json()["data"]]
    assert listed[:3] == ids[::-1]
    assert len(listed) <= 100


def test_unknown_path(server):
    r = requests.post(server.url("/api/v2/nothing"), timeout=5)
    assert r.status_code == 404
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["errors"][0]["title"] == "Not found"


@pytest.mark.parametrize("method,path,allow", [
    ("DELETE", "/api/v1/inquiries", "GET, HEAD, POST"),
    ("POST", "/healthz", "GET, HEAD"),
    ("PUT", "/api/v1/inquiries/inq_x", "GET, HEAD"),
    ("GET", "/_demo/reset", "POST"),
    ("POST", "/_demo/executions", "GET, HEAD"),
])
def test_method_not_allowed(server, method, path, allow):
    r = requests.request(method, server.url(path), timeout=5)
    assert r.status_code == 405
    assert r.headers["Allow"] == allow
    assert r.json()["errors"][0]["title"] == "Method not allowed"


def test_bench(server):
    for method in ("GET", "POST"):
        r = requests.request(method, server.url("/bench"), timeout=5)
        assert r.status_code == 200
        assert r.json() == {"ok": True}
    counts = executions(server)
    assert counts["total"] == 1  # the POST
    assert counts["keys"] == {"": 1}


# ---- counters -----------------------------------------------------------

def test_executions_per_key(server):
    for _ in range(3):
        create(server, headers={"Idempotency-Key": "key-a"})
    create(server, headers={"Idempotency-Key": 'b+&="x'})
    create(server)
    create(server)
    requests.get(server.url("/api/v1/inquiries"), timeout=5)

    assert executions(server, "key-a") == {"key": "key-a", "executions": 3}
    assert executions(server, 'b+&="x')["executions"] == 1
    assert executions(server, "")["executions"] == 2
    assert executions(server, "never")["executions"] == 0
    full = executions(server)
    assert full["total"] == 6
    assert full["untracked"] == 0
    assert full["keys"] == {"key-a": 3, 'b+&="x': 1, "": 2}
    assert full["requests"] >= 7


def test_reset_clears_counts(server):
    create(server, headers={"Idempotency-Key": "gone"})
    assert executions(server, "gone")["executions"] == 1
    r = requests.post(server.url("/_demo/reset"), timeout=5)
    assert r.json() == {"reset": True}
    assert r.headers["X-Request-Count"] == "0"
    assert executions(server) == {"total": 0, "requests": 1, "untracked": 0,
                                  "keys": {}}


def test_request_count_grows_on_every_path(server):
    counts = [int(requests.get(server.url(p), timeout=5)
                  .headers["X-Request-Count"])
              for p in ("/healthz", "/nothing", "/bench", "/healthz")]
    assert counts == list(range(counts[0], counts[0] + 4))


# ---- demo switches --------------------------------------------------------

def test_delay_does_not_block_others(server):
    result = {}

    def slow():
        t0 = time.monotonic()
        r = create(server, headers={"Idempotency-Key": "slow",
                                    "X-Demo-Delay-Ms": "1500"})
        result["status"] = r.status_code
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert requests.get(server.url("/healthz"), timeout=5).status_code == 200
    assert time.monotonic() - t0 < 0.5
    # Executed on arrival; only the answer waits.
    assert executions(server, "slow")["executions"] == 1
    t.join()
    assert result["status"] == 201
    assert result["elapsed"] >= 1.4


def test_fail_executes_then_answers_the_status(server):
    before = len(requests.get(server.url("/api/v1/inquiries"),
                              timeout=5).json()["data"])
    r = create(server, headers={"Idempotency-Key": "f", "X-Demo-Fail": "503"})
    assert r.status_code == 503
    assert r.headers["Content-Type"] == "application/json"
    err = r.json()["errors"][0]
    assert err["title"] == "Service Unavailable"
    assert "X-Demo-Fail" in err["details"]
    assert "Location" not in r.headers
    assert executions(server, "f")["executions"] == 1
    after = requests.get(server.url("/api/v1/inquiries"), timeout=5).json()
    assert len(after["data"]) == min(before + 1, 100)


@pytest.mark.parametrize("header,value", [
    ("X-Demo-Fail", "200"), ("X-Demo-Fail", "600"), ("X-Demo-Fail", "x"),
    ("X-Demo-Delay-Ms", "-1"), ("X-Demo-Delay-Ms", "600001"),
    ("X-Demo-Drop", "yes"), ("X-Demo-Body-Bytes", str(64 * MiB + 1)),
])
def test_bad_switch_is_refused_unexecuted(server, header, value):
    r = create(server, headers={"Idempotency-Key": "sw", header: value})
    assert r.status_code == 400
    assert header in r.json()["errors"][0]["details"]
    assert executions(server, "sw")["executions"] == 0


def test_drop_executes_then_closes(server, raw):
    with pytest.raises(requests.ConnectionError):
        create(server, headers={"Idempotency-Key": "d", "X-Demo-Drop": "1"})
    assert executions(server, "d")["executions"] == 1

    c = raw()
    c.send(b"POST /api/v1/inquiries HTTP/1.1\r\nHost: t\r\n"
           b"Idempotency-Key: d\r\nX-Demo-Drop: 1\r\n"
           b"Content-Length: 2\r\n\r\n{}")
    assert c.closed()
    assert c.buf == b""
    assert executions(server, "d")["executions"] == 2


def test_drop_with_reset(server, raw):
    c = raw()
    c.send(b"POST /bench HTTP/1.1\r\nHost: t\r\nIdempotency-Key: r\r\n"
           b"X-Demo-Drop: rst\r\nContent-Length: 0\r\n\r\n")
    assert c.closed()
    assert c.buf == b""
    assert executions(server, "r")["executions"] == 1


def test_drop_after_delay(server, raw):
    c = raw()
    t0 = time.monotonic()
    c.send(b"POST /bench HTTP/1.1\r\nHost: t\r\nIdempotency-Key: dd\r\n"
           b"X-Demo-Drop: 1\r\nX-Demo-Delay-Ms: 300\r\n"
           b"Content-Length: 0\r\n\r\n")
    assert c.closed()
    assert time.monotonic() - t0 >= 0.25
    assert executions(server, "dd")["executions"] == 1


@pytest.mark.parametrize("n", [0, 1, 1000, 9 * MiB])
def test_body_bytes_pads_json(server, n):
    r = requests.get(server.url("/bench"),
                     headers={"X-Demo-Body-Bytes": str(n)}, timeout=30)
    assert r.status_code == 200
    doc = r.json()
    assert doc["ok"] is True
    if n:
        assert doc["padding"] == "x" * n
    assert int(r.headers["Content-Length"]) == len(r.content)


def test_body_bytes_on_empty_object_and_errors(server):
    r = create(server, headers={"X-Demo-Body-Bytes": "10",
                                "X-Demo-Fail": "500"})
    assert r.status_code == 500
    assert r.json()["padding"] == "x" * 10
    r = requests.get(server.url("/healthz"),
                     headers={"X-Demo-Body-Bytes": "5"}, timeout=5)
    assert r.text == "ok" + "x" * 5


def test_body_bytes_with_head(server):
    g = requests.get(server.url("/bench"),
                     headers={"X-Demo-Body-Bytes": "4096"}, timeout=5)
    h = requests.head(server.url("/bench"),
                      headers={"X-Demo-Body-Bytes": "4096"}, timeout=5)
    assert h.status_code == 200
    assert h.headers["Content-Length"] == str(len(g.content))
    assert h.content == b""


def test_padded_response_keeps_connection_usable(server):
    with requests.Session() as s:
        for n in (3 * MiB, 10, 2 * MiB):
            r = s.get(server.url("/bench"),
                      headers={"X-Demo-Body-Bytes": str(n)}, timeout=30)
            assert len(r.json()["padding"]) == n


# ---- HTTP/1.1 handling ------------------------------------------------------

def test_keep_alive_and_pipelining(server, raw):
    c = raw()
    c.send(get_req())
    s1, h1, b1 = c.response()
    c.send(get_req("/bench"))
    s2, h2, b2 = c.response()
    assert (s1, b1, s2, json.loads(b2)) == (200, b"ok", 200, {"ok": True})
    assert int(h2["x-request-count"]) == int(h1["x-request-count"]) + 1
    # Two requests in one segment, answered in order.
    c.send(get_req("/nothing") + get_req("/healthz"))
    assert c.response()[0] == 404
    assert c.response()[0] == 200
    assert not c.closed()


def test_http10_closes_unless_keep_alive(server, raw):
    c = raw()
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    status, headers, body = c.response()
    assert (status, body) == (200, b"ok")
    assert headers["connection"] == "close"
    assert c.closed()

    c = raw()
    c.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert c.response()[1]["connection"] == "keep-alive"
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert c.response()[0] == 200
    assert c.closed()


def test_connection_close(server, raw):
    c = raw()
    c.send(get_req(extra="Connection: close\r\n"))
    assert c.response()[1]["connection"] == "close"
    assert c.closed()


def test_body_split_across_packets(server, raw):
    c = raw()
    body = json.dumps({"name-first": "Slow"}).encode()
    c.send(b"POST /api/v1/inquiries HTTP/1.1\r\nHost: t\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
    time.sleep(0.1)
    c.send(body[5:])
    status, _, rbody = c.response()
    assert status == 201
    assert json.loads(rbody)["data"]["attributes"]["name-first"] == "Slow"


def test_chunked_request_body(server, raw):
    c = raw()
    c.send(b"POST /api/v1/inquiries HTTP/1.1\r\nHost: t\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\n{\"nam\r\nD\r\ne-fi")
    time.sleep(0.05)
    c.send(b"rst\":\"C\"}\r")
    time.sleep(0.05)
    c.send(b"\n0\r\nX-Trailer: 1\r\n\r\n" + get_req())
    status, _, body = c.response()
    assert status == 201
    assert json.loads(body)["data"]["attributes"]["name-first"] == "C"
    assert c.response()[2] == b"ok"


def test_expect_100_continue(server, raw):
    c = raw()
    c.send(b"POST /bench HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
           b"Expect: 100-continue\r\n\r\n")
    assert c.response()[0] == 100
    c.send(b"{}")
    assert c.response()[0] == 200


def test_empty_lines_before_request_are_ignored(server, raw):
    c = raw()
    c.send(b"\r\n\r\n" + get_req())
    assert c.response()[0] == 200


def test_body_over_limit_is_413(server, raw):
    c = raw()
    c.send(b"POST /api/v1/inquiries HTTP/1.1\r\nHost: t\r\n"
           b"Idempotency-Key: big\r\nContent-Length: %d\r\n\r\n"
           % (MiB + 1))
    status, headers, body = c.response()
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body)["errors"][0]["details"]
    assert c.closed()
    # A client that sends the whole body still reads the 413.
    r = create(server, body=b"x" * (2 * MiB))
    assert r.status_code == 413
    assert executions(server, "big")["executions"] == 0
    # Exactly 1 MiB is accepted (and is not JSON).
    assert create(server, body=b" " * MiB).status_code == 400


def test_chunked_body_over_limit_is_413(server, raw):
    c = raw()
    c.send(b"POST /bench HTTP/1.1\r\nHost: t\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n100001\r\n")
    assert c.response()[0] == 413
    assert c.closed()


def test_header_section_over_16k_is_431(server, raw):
    c = raw()
    c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: "
           + b"a" * (16 * 1024) + b"\r\n\r\n")
    status, _, body = c.response()
    assert status == 431
    assert json.loads(body)["errors"][0]["title"]
    assert c.closed()
    # Just under the limit is fine.
    c = raw()
    head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: \r\n\r\n"
    filler = b"a" * (16 * 1024 - len(head))
    c.send(head[:-4] + filler + b"\r\n\r\n")
    assert c.response()[0] == 200


def test_too_many_headers_is_431(server, raw):
    c = raw()
    c.send(get_req(extra="".join(f"X-{i}: v\r\n" for i in range(101))))
    assert c.response()[0] == 431


@pytest.mark.parametrize("request_bytes,status", [
    (b"HELLO\r\n\r\n", 400),
    (b"GET /healthz\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET  /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\r\n folded\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET /he\x01lthz HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400),
    (b"POST /bench HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", 400),
    (b"POST /bench HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
     b"Content-Length: 2\r\n\r\nab", 400),
    (b"POST /bench HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /bench HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
     501),
    (b"POST /bench HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\n", 400),
    (b"POST /bench HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"2\r\nabc\r\n", 400),
    (b"GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nExpect: magic\r\n\r\n", 417),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
])
def test_malformed_requests(server, raw, request_bytes, status):
    c = raw()
    c.send(request_bytes)
    got, headers, body = c.response()
    assert got == status
    assert headers["connection"] == "close"
    assert json.loads(body)["errors"][0]["title"]
    assert c.closed()


def test_garbage_does_not_hurt_the_server(server, raw):
    for blob in (bytes(range(256)) * 70, b"\r\n" * 9000, b"\n\n\n",
                 b"GET / HTTP/1.1\r\n" + b"A" * 20000):
        c = raw(timeout=2.0)
        try:
            c.send(blob)
        except (BrokenPipeError, ConnectionResetError):
            pass
        c.closed()
    assert requests.get(server.url("/healthz"), timeout=5).text == "ok"


def test_many_concurrent_connections(server, raw):
    conns = [raw() for _ in range(300)]
    for c in conns:
        c.send(get_req("/bench"))
    for c in conns:
        assert c.response()[0] == 200


# ---- process ---------------------------------------------------------------

def test_sigterm_exits_cleanly_with_open_connections():
    srv = Inquiries("--max-inquiries", "2")
    try:
        idle = socket.create_connection(("127.0.0.1", srv.port))
        busy = socket.create_connection(("127.0.0.1", srv.port))
        busy.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
                     b"X-Demo-Delay-Ms: 60000\r\n\r\n")
        ids = [create(srv).json()["data"]["id"] for _ in range(3)]
        # Only the two newest are kept.
        assert requests.get(srv.url(f"/api/v1/inquiries/{ids[0]}"),
                            timeout=5).status_code == 404
        listed = requests.get(srv.url("/api/v1/inquiries"), timeout=5).json()
        assert [d["id"] for d in listed["data"]] == ids[:0:-1]
        time.sleep(0.1)
    finally:
        t0 = time.monotonic()
        rc, err = srv.stop()
    assert rc == 0, err
    assert time.monotonic() - t0 < 5
    assert "Sanitizer" not in err and "runtime error" not in err, err
    idle.close()
    busy.close()


def test_bad_command_line():
    if not BIN.exists():
        pytest.skip("binary missing")
    r = subprocess.run([str(BIN), "--no-such-flag"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2
    assert "usage" in r.stderr
    r = subprocess.run([str(BIN), "--listen", "nonsense"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "HOST:PORT" in r.stderr
