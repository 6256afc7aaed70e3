"""Edges of the module against nginx's own machinery: rewrites, conditional
requests, an upstream that fails after its header, the API log of a request
that never reached the upstream. Each test is named after the rule."""

import socket
import threading
import time

import pytest
import requests

from conftest import Gateway, free_port, raw_request, unique_key


class RawUpstream:
    """A socket-level upstream: /partial sends a header announcing 1000
    bytes, 100 of them, then closes; anything else is 200 with an ETag."""

    def __init__(self):
        self.port = free_port()
        self.count = {}
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, rest = buf.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                path = lines[0].split()[1].decode()
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(rest) < length:
                    rest += conn.recv(65536)
                buf = rest[length:]
                self.count[path] = self.count.get(path, 0) + 1
                if path.startswith("/partial"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: 1000\r\n\r\n" + b"a" * 100)
                    time.sleep(0.1)
                    return
                body = b'{"ok":true}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"ETag: \"v1\"\r\nLast-Modified: Sat, 01 Jan 2000 "
                             b"00:00:00 GMT\r\nContent-Length: %d\r\n\r\n"
                             % len(body) + body)

    def stop(self):
        self.sock.close()


@pytest.fixture
def raw_gateway():
    up = RawUpstream()
    g = Gateway(up, directives=["idempotency_methods POST PATCH;"])
    yield g, up
    g.close()
    up.stop()


def test_rewritten_request_still_takes_part(gateway, upstream):
    key = unique_key()
    a = gateway.post(path="/v2/inquiries", key=key, json_body={"a": 1})
    b = gateway.post(path="/v2/inquiries", key=key, json_body={"a": 1})
    assert a.status_code == 201
    assert b.headers["Idempotent-Replayed"] == "true"
    assert b.content == a.content
    assert upstream.executions(key) == 1


@pytest.mark.parametrize("header", [("If-Match", '"v1"'),
                                    ("If-Unmodified-Since",
                                     "Sat, 01 Jan 2000 00:00:00 GMT")])
def test_conditional_request_replays_the_stored_answer(raw_gateway, header):
    g, up = raw_gateway
    key = unique_key()
    h = {"Idempotency-Key": key, header[0]: header[1]}
    a = requests.patch(g.url + "/items/1", data="x", headers=h, timeout=5)
    b = requests.patch(g.url + "/items/1", data="x", headers=h, timeout=5)
    assert a.status_code == 200
    assert b.status_code == 200 and b.headers["Idempotent-Replayed"] == "true"
    assert b.content == a.content
    assert up.count["/items/1"] == 1


def test_upstream_failing_after_its_header_gets_the_unknown_outcome_at_once(raw_gateway):
    g, up = raw_gateway
    key = unique_key()
    t0 = time.time()
    a = g.post(path="/partial", key=key, data="x", timeout=10)
    assert time.time() - t0 < 5
    assert a.status_code in (502, 504)
    assert a.json()["errors"][0]["title"] == "Upstream outcome unknown"
    b = g.post(path="/partial", key=key, data="x", timeout=10)
    assert b.headers["Idempotent-Replayed"] == "true"
    assert b.status_code == a.status_code and b.content == a.content
    assert g.admin_get(key).json()["state"] == "complete"
    assert up.count["/partial"] == 1


def test_request_that_never_reached_the_upstream_is_not_api_logged(gateway):
    key = unique_key()
    r = gateway.post(path="/unreachable/x", key=key, json_body={})
    assert r.status_code == 502
    time.sleep(0.2)
    assert [e for e in gateway.api_log() if e["key"] == key] == []


def test_location_replays_as_first_sent(gateway):
    key = unique_key()
    raw = ("POST /api/v1/inquiries HTTP/1.1\r\nHost: gw.example\r\n"
           "Idempotency-Key: %s\r\nContent-Type: application/json\r\n"
           "Content-Length: 2\r\nConnection: close\r\n\r\n{}" % key).encode()
    first = raw_request(gateway.port, raw)
    again = raw_request(gateway.port, raw)

    def location(resp):
        for line in resp.split(b"\r\n"):
            if line.lower().startswith(b"location:"):
                return line
        return None

    assert location(first) is not None
    assert location(again) == location(first)
