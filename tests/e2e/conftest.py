"""Fixtures for the end-to-end tests: real nginx with the idempotency module,
the demo Inquiries API as a counting upstream, LMDB in a temporary directory.

Environment:
  IDEM_BUILD      build directory holding the module, inquiries and idemgate
                  (default: build; `make test` uses build-test, whose module
                  has failpoints, and build-address under AddressSanitizer)
  IDEM_SANITIZER  "address" to preload the ASan runtime into nginx and fail
                  any test after which an ASan report was written
  NGINX_BIN       the nginx binary (default /usr/sbin/nginx)
"""

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("IDEM_BUILD", "build"))
MODULE = os.path.join(BUILD, "ngx_http_idempotency_module.so")
INQUIRIES = os.path.join(BUILD, "inquiries")
IDEMGATE = os.path.join(BUILD, "idemgate")
NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
SANITIZER = os.environ.get("IDEM_SANITIZER", "")
IS_ROOT = os.getuid() == 0


_ports_given = set()


def free_port():
    """A loopback port nothing listens on, and one this run has not handed
    out before: the kernel may give a port just closed to the next bind(0),
    and two servers of one test must not get the same one."""
    for _ in range(100):
        with contextlib.closing(
                socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("no fresh loopback port")


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("port %d did not open" % port)


def make_shared_dir(prefix):
    """A directory nginx workers (nobody, when the tests run as root) can use."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(d, 0o777)
    return d


def is_zombie(pid):
    """Whether pid is dead and only waits to be reaped (or already gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def give_to_workers(path):
    if not IS_ROOT:
        return
    nobody = pwd.getpwnam("nobody")
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, nobody.pw_uid, nobody.pw_gid)
        for f in filenames:
            os.chown(os.path.join(dirpath, f), nobody.pw_uid, nobody.pw_gid)


class Upstream:
    """The demo Inquiries API: counts executions per Idempotency-Key."""

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [INQUIRIES, "--listen", "127.0.0.1:%d" % self.port],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.port, proc=self.proc)
        self.url = "http://127.0.0.1:%d" % self.port

    def executions(self, key):
        r = requests.get(self.url + "/_demo/executions",
                         params={"key": key}, timeout=5)
        return r.json()["executions"]

    def total(self):
        return requests.get(self.url + "/_demo/executions", timeout=5).json()["total"]

    def reset(self):
        requests.post(self.url + "/_demo/reset", timeout=5)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


NGINX_CONF = """
load_module {module};
worker_processes {workers};
daemon off;
master_process on;
pid {run}/nginx.pid;
error_log {run}/error.log {log_level};
{user}
env IDEMGATE_FAILPOINTS;
thread_pool idem threads=16;
events {{ worker_connections 1024; }}

http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    client_max_body_size {max_body};
    client_body_buffer_size {body_buffer};

    idempotency_store {store};
    idempotency_thread_pool idem;
    idempotency_prune_interval {prune_interval};

    log_format api escape=none '$idempotency_log_entry';
    log_format outcome '$idempotency_outcome $idempotency_key $status';

    upstream api {{
        server {upstream};
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port};

        location / {{
            idempotency on;
{directives}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ignore_client_abort on;
            proxy_read_timeout {read_timeout};
            proxy_pass http://api;
            access_log {run}/api.log api if=$idempotency_api_log;
            access_log {run}/outcome.log outcome;
        }}

        location /v2/ {{
            idempotency on;
{directives}
            rewrite ^/v2/(.*)$ /api/v1/$1 break;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ignore_client_abort on;
            proxy_pass http://api;
            access_log {run}/outcome.log outcome;
        }}

        location /unreachable/ {{
            idempotency on;
{directives}
            proxy_ignore_client_abort on;
            proxy_pass http://127.0.0.1:{dead_port};
        }}

{extra_locations}
        location = /metrics {{ idempotency_metrics; }}
        location = /healthz {{ idempotency_health; }}
        location /keys/ {{
            idempotency_admin;
{scope_directive}
        }}
    }}
}}
"""


class Gateway:
    """nginx with the module in front of an upstream, from a config template."""

    def __init__(self, upstream, directives=(), store=None, workers=1,
                 max_body="1m", body_buffer="1m", read_timeout="10s",
                 prune_interval="1s", scope=None, failpoints=None,
                 data=None, store_options=None, extra_locations=""):
        self.upstream = upstream
        self.workers = workers
        self.failpoints = failpoints
        self.run = make_shared_dir("idem-run-")
        self.data = data or os.path.join(self.run, "data")
        # store_options: the query of an lmdb: URL, e.g. "map_size=131072"
        query = "?" + store_options if store_options else ""
        self.store = store or ("lmdb:" + self.data + query)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.asan_dir = os.path.join(self.run, "asan")
        os.makedirs(self.asan_dir)
        os.chmod(self.asan_dir, 0o777)
        lines = list(directives)
        scope_directive = ""
        if scope is not None:
            lines.append("idempotency_scope %s;" % scope)
            scope_directive = "            idempotency_scope %s;" % scope
        self.conf = NGINX_CONF.format(
            module=MODULE, workers=workers, run=self.run,
            log_level="info",
            user="user nobody nogroup;" if IS_ROOT else "",
            max_body=max_body, body_buffer=body_buffer,
            store=self.store, prune_interval=prune_interval,
            upstream="127.0.0.1:%d" % upstream.port, port=self.port,
            directives="\n".join("            " + d for d in lines),
            scope_directive=scope_directive,
            read_timeout=read_timeout, dead_port=free_port(),
            extra_locations=extra_locations)
        with open(os.path.join(self.run, "nginx.conf"), "w") as f:
            f.write(self.conf)
        self.proc = None
        self.start()

    def env(self):
        env = dict(os.environ)
        env["TZ"] = "UTC"
        env.pop("IDEMGATE_FAILPOINTS", None)
        if self.failpoints:
            env["IDEMGATE_FAILPOINTS"] = self.failpoints
        if SANITIZER == "address":
            lib = subprocess.check_output(
                ["gcc", "-print-file-name=libasan.so"], text=True).strip()
            env["LD_PRELOAD"] = lib
            env["ASAN_OPTIONS"] = ("log_path=%s/asan:detect_leaks=0:"
                                   "abort_on_error=0" % self.asan_dir)
        return env

    def start(self):
        give_to_workers(self.run)
        self.proc = subprocess.Popen(
            [NGINX, "-p", self.run, "-c", os.path.join(self.run, "nginx.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=self.env(), start_new_session=True)
        wait_port(self.port, proc=self.proc)
        # the master listens before it forks its workers: wait for them too
        deadline = time.time() + 10
        while len(self.worker_pids()) < self.workers:
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("nginx did not start its workers")
            time.sleep(0.01)

    def pids(self):
        """The master and its workers (zombies, already dead, left out)."""
        out = subprocess.run(["pgrep", "-s", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return [int(p) for p in out.split() if not is_zombie(int(p))]

    def worker_pids(self):
        """The workers only (the master is self.proc)."""
        return [p for p in self.pids() if p != self.proc.pid]

    def kill9(self):
        # until none is left: a worker the master forked while we listed
        # its session would otherwise live on, listening on our port
        deadline = time.time() + 5
        while True:
            pids = self.pids()
            if not pids or time.time() > deadline:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        # a dead master leaves its pid file and listening socket behind
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def error_log(self):
        with open(os.path.join(self.run, "error.log"), errors="replace") as f:
            return f.read()

    def api_log(self):
        path = os.path.join(self.run, "api.log")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def asan_reports(self):
        return glob.glob(os.path.join(self.asan_dir, "asan*"))

    def post(self, path="/api/v1/inquiries", key=None, json_body=None,
             data=None, headers=None, **kw):
        h = dict(headers or {})
        if key is not None:
            h["Idempotency-Key"] = key
        if json_body is not None:
            data = json.dumps(json_body)
            h.setdefault("Content-Type", "application/json")
        return requests.post(self.url + path, data=data, headers=h,
                             timeout=kw.pop("timeout", 30), **kw)

    def admin_get(self, key, headers=None):
        return requests.get(self.url + "/keys/" + urllib.parse.quote(key, safe=""),
                            headers=headers or {}, timeout=5)

    def health(self):
        return requests.get(self.url + "/healthz", timeout=5)

    def metrics(self):
        text = requests.get(self.url + "/metrics", timeout=5).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = int(value)
        return out

    def close(self):
        self.stop()
        reports = self.asan_reports()
        if reports:
            text = "".join(open(p, errors="replace").read() for p in reports)
            shutil.rmtree(self.run, ignore_errors=True)
            raise AssertionError("AddressSanitizer reports:\n" + text)
        shutil.rmtree(self.run, ignore_errors=True)


@pytest.fixture(scope="session")
def upstream():
    up = Upstream()
    yield up
    up.stop()


@pytest.fixture
def gateway_factory(upstream):
    made = []

    def make(**kw):
        g = Gateway(upstream, **kw)
        made.append(g)
        return g

    yield make
    errors = []
    for g in made:
        try:
            g.close()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture
def gateway(gateway_factory):
    return gateway_factory(directives=["idempotency_wait 3s;",
                                       "idempotency_lease 15s;"])


def has_failpoints():
    """Whether the module under test was built with failpoints."""
    out = subprocess.run(["nm", "-D", "--defined-only", MODULE],
                         capture_output=True, text=True).stdout
    return "ngx_http_idempotency_failpoint" in out


def unique_key(prefix="k"):
    return "%s_%s" % (prefix, os.urandom(8).hex())


def raw_request(port, data, timeout=5.0):
    """Sends raw bytes, returns the raw response (until close or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
                if b"\r\n\r\n" in b"".join(chunks):
                    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            if len(body) >= int(line.split(b":")[1]):
                                return b"".join(chunks)
        except socket.timeout:
            pass
        return b"".join(chunks)
