"""A throwaway redis-server for the end-to-end tests.

One server per test session (the `redis_server` fixture), on a free
loopback port, its data in a temporary directory: no RDB snapshots, an
append-only file fsynced at every write (appendfsync always), noeviction.
Each test gets a key prefix of its own (`redis_url`), so tests never see
each other's keys. Tests may kill it (kill9) and start it again on the same
port and directory (start), which replays its append-only file.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import free_port


class RedisServer:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="idem-redis-", dir="/tmp")
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", self.dir, "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--maxmemory-policy", "noeviction",
             "--daemonize", "no",
             "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while True:
            try:
                if self.cli("PING") == "PONG":
                    return
            except OSError:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start on port %d"
                                   % self.port)
            time.sleep(0.02)

    def kill9(self):
        """Ends the server as a crash does: no shutdown, no save."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        self.kill9()
        shutil.rmtree(self.dir, ignore_errors=True)

    def cli(self, *args):
        """Runs one command (RESP over a socket); returns the reply."""
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        with socket.create_connection(("127.0.0.1", self.port),
                                      timeout=5) as s:
            s.sendall(b"".join(parts))
            f = s.makefile("rb")
            return self._reply(f)

    def _reply(self, f):
        line = f.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return rest.decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)[:n]
            return data.decode(errors="replace")
        if kind == b"*":
            return [self._reply(f) for _ in range(int(rest))]
        raise RuntimeError("bad reply %r" % line)

    def keys(self, prefix):
        return self.cli("KEYS", prefix + "*")

    def url(self, prefix, options=""):
        return "redis://127.0.0.1:%d?prefix=%s%s" % (
            self.port, prefix, "&" + options if options else "")


class CuttingProxy:
    """A TCP relay in front of Redis that can lose a script's answer: once
    armed (cut(n)), the next n connections that send an EVALSHA have it
    delivered to Redis and are then closed before its reply comes back,
    as a network blip between a write and its acknowledgement would."""

    def __init__(self, port):
        self.target = port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.armed = 0
        self.cuts = 0
        self.cut_log = []  # when and what each cut dropped, for a report
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, n=1):
        with self.lock:
            self.armed = n

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            state = {"cut": False}
            threading.Thread(target=self._up, args=(client, server, state),
                             daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state),
                             daemon=True).start()

    def _up(self, client, server, state):
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                cut = False
                if b"EVALSHA" in data:
                    with self.lock:
                        if self.armed > 0:
                            self.armed -= 1
                            self.cuts += 1
                            self.cut_log.append((round(time.time(), 3),
                                                 data[:48]))
                            cut = state["cut"] = True
                server.sendall(data)
                if cut:
                    time.sleep(0.1)  # Redis runs it; the answer is dropped
                    break
        except OSError:
            pass
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _down(self, server, client, state):
        try:
            while True:
                data = server.recv(65536)
                if not data or state["cut"]:
                    break
                client.sendall(data)
        except OSError:
            pass

    def close(self):
        self.sock.close()


@pytest.fixture(scope="session")
def redis_server():
    r = RedisServer()
    yield r
    r.stop()


@pytest.fixture
def redis_prefix():
    return "e2e-%s:" % os.urandom(6).hex()


@pytest.fixture
def redis_url(redis_server, redis_prefix):
    # a test may have killed it: every test starts with a server up
    if redis_server.proc.poll() is not None:
        redis_server.start()
    return redis_server.url(redis_prefix)
