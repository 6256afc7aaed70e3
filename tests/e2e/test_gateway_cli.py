"""End-to-end tests of the idemgate command: its flags, --config files,
--print-config, --help, the errors for bad values, the signals it forwards to
nginx, and the JSON pages it configures for nginx's own errors (400, 413,
414, 431, 502, 504, ...).

Self-contained: an in-process HTTP upstream that echoes what it gets, and
each gateway on free loopback ports with its store and runtime directory
in a temporary directory.

Environment:
  IDEMGATE_BIN     the idemgate binary (default $IDEM_BUILD/idemgate); the module
                   is the one beside it unless IDEMGATE_MODULE names one
  NGINX_BIN        the nginx binary (default /usr/sbin/nginx)
  IDEM_BUILD,      when IDEM_SANITIZER is "address" and idemgate comes from
  IDEM_SANITIZER   IDEM_BUILD, nginx runs with the ASan runtime preloaded
                   and any ASan report fails the test
"""

import contextlib
import glob
import grp
import http.server
import json
import os
import pwd
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from conftest import free_port  # noqa: E402  one pool of ports for all

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("IDEM_BUILD", "build"))
IDEMGATE = os.path.abspath(os.environ.get("IDEMGATE_BIN")
                           or os.path.join(BUILD, "idemgate"))
MODULE_OVERRIDE = os.environ.get("IDEMGATE_MODULE")
NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
ASAN = (os.environ.get("IDEM_SANITIZER") == "address"
        and os.path.dirname(IDEMGATE) == os.path.abspath(BUILD))
IS_ROOT = os.getuid() == 0



# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------



def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def nginx_env(asan_dir, base=None):
    """The environment for a process that runs nginx: under ASan, with the
    runtime preloaded and reports written into asan_dir."""
    env = dict(base or os.environ)
    if ASAN:
        os.makedirs(asan_dir, exist_ok=True)
        os.chmod(asan_dir, 0o777)
        lib = subprocess.check_output(
            ["gcc", "-print-file-name=libasan.so"], text=True).strip()
        env["LD_PRELOAD"] = lib
        env["ASAN_OPTIONS"] = ("log_path=%s/asan:detect_leaks=0:"
                               "abort_on_error=0" % asan_dir)
    return env


def asan_reports(asan_dir):
    reports = glob.glob(os.path.join(asan_dir, "asan*"))
    return "".join(open(p, errors="replace").read() for p in reports)


def run_cli(*args, cwd=None, env=None, timeout=20):
    """Runs idemgate to completion (--help, --print-config, bad flags)."""
    return subprocess.run([IDEMGATE] + list(args), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def raw_request(port, data, timeout=5.0):
    """Sends raw bytes; returns (status, headers, body, closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        closed = False
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                buf += chunk
                head, sep, body = buf.partition(b"\r\n\r\n")
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if sep and m and len(body) >= int(m.group(1)):
                    # the answer is whole: wait briefly for a close
                    s.settimeout(1.0)
        except socket.timeout:
            pass
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines and lines[0] else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body, closed


def assert_error_body(body):
    """Every gateway-made body: {"errors":[{"title":..., "details":...}]}."""
    doc = json.loads(body)
    assert set(doc) == {"errors"}, doc
    assert len(doc["errors"]) == 1
    err = doc["errors"][0]
    assert set(err) == {"title", "details"}, err
    assert err["title"] and err["details"]
    return err


def conf_directives(text):
    """The nginx configuration as a list of directive strings."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def sanitized():
    """Whether idemgate was built with ASan or UBSan (valgrind can't run it)."""
    with open(IDEMGATE, "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"__ubsan_handle" in data


def nobody_group():
    return grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name


def blocks_sigterm(pid):
    """Whether pid has SIGTERM blocked (idemgate does while it runs nginx)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1))
    return 0


def quiet_post(g, path):
    with contextlib.suppress(requests.RequestException):
        g.post(path, data="x", timeout=10)


# --------------------------------------------------------------------------
# The upstream: echoes every request as JSON and counts them
# --------------------------------------------------------------------------

class EchoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        server = self.server
        with server.lock:
            server.count += 1
            count = server.count
            server.seen.append((self.command, self.path, dict(self.headers)))
        path = self.path.split("?")[0]
        parts = path.strip("/").split("/")
        status = 201 if self.command == "POST" else 200
        if parts[0] == "sleep":
            time.sleep(float(parts[1]))
        if parts[0] == "status":
            status = int(parts[1])
        out = json.dumps({"method": self.command, "path": self.path,
                          "count": count,
                          "body": body.decode("latin-1")}).encode()
        if parts[0] == "big":
            out = b"x" * int(parts[1])
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.send_header("X-Trace", "trace-%d" % count)
            self.end_headers()
            self.wfile.write(out)
        except OSError:
            # the gateway gave up on this request (a timeout under test)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


class EchoServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.lock = threading.Lock()
        self.count = 0
        self.seen = []
        self.port = self.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port


@pytest.fixture(scope="module")
def echo():
    server = EchoServer()
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------
# Gateways
# --------------------------------------------------------------------------

@pytest.fixture
def workdir():
    """A temporary directory the nginx workers can reach when they run as
    nobody (pytest's own tmp_path is private to root)."""
    d = tempfile.mkdtemp(prefix="idemgate-cli-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Gateway:
    """One idemgate process, started with the given flags."""

    def __init__(self, workdir, upstream_url, args=(), admin=True, ready=True):
        self.workdir = workdir
        self.port = free_port()
        self.admin_port = free_port() if admin else None
        self.url = "http://127.0.0.1:%d" % self.port
        self.admin_url = ("http://127.0.0.1:%d" % self.admin_port
                          if admin else None)
        self.tmpdir = os.path.join(workdir, "tmp")
        os.makedirs(self.tmpdir, exist_ok=True)
        self.stderr_path = os.path.join(workdir, "idemgate-%d.err" % self.port)
        self.stdout_path = os.path.join(workdir, "idemgate-%d.out" % self.port)
        self.asan_dir = os.path.join(workdir, "asan")
        argv = [IDEMGATE, "--listen", "127.0.0.1:%d" % self.port,
                "--upstream", upstream_url,
                "--admin", ("127.0.0.1:%d" % self.admin_port) if admin else "off",
                "--store", "lmdb:" + os.path.join(workdir, "store"),
                "--workers", "1"]
        if MODULE_OVERRIDE:
            argv += ["--module", MODULE_OVERRIDE]
        argv += list(args)
        env = nginx_env(self.asan_dir,
                        dict(os.environ, TMPDIR=self.tmpdir, TZ="UTC"))
        self.argv = argv
        self.out = open(self.stdout_path, "wb")
        self.err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=workdir, env=env,
                                     stdout=self.out, stderr=self.err,
                                     start_new_session=True)
        if ready:
            self.wait_ready()

    def wait_ready(self, timeout=15.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("idemgate exited with %s:\n%s"
                                     % (self.proc.returncode, self.stderr()))
            if port_open(self.port) and (self.admin_port is None
                                         or port_open(self.admin_port)):
                return
            time.sleep(0.02)
        raise AssertionError("idemgate did not open its ports:\n" + self.stderr())

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def stdout(self):
        with open(self.stdout_path, errors="replace") as f:
            return f.read()

    def runtime_dirs(self):
        return glob.glob(os.path.join(self.tmpdir, "idemgate.*"))

    def master_pid(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)],
                             capture_output=True, text=True).stdout.split()
        return int(out[0]) if out else None

    def worker_pids(self):
        master = self.master_pid()
        if master is None:
            return []
        out = subprocess.run(["pgrep", "-P", str(master)],
                             capture_output=True, text=True).stdout.split()
        return sorted(int(p) for p in out)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=15):
        return self.proc.wait(timeout)

    def post(self, path="/v1/things", key=None, **kw):
        headers = dict(kw.pop("headers", None) or {})
        if key is not None:
            headers["Idempotency-Key"] = key
        return requests.post(self.url + path, headers=headers,
                             timeout=kw.pop("timeout", 10), **kw)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.out.close()
        self.err.close()
        reports = asan_reports(self.asan_dir)
        if reports:
            raise AssertionError("AddressSanitizer reports:\n" + reports)


@pytest.fixture
def gateway_factory(workdir, echo):
    made = []

    def make(*args, upstream=None, **kw):
        g = Gateway(workdir, upstream or echo.url, args, **kw)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


@pytest.fixture
def gw(gateway_factory):
    return gateway_factory()


BASE = ["--listen", "127.0.0.1:18080", "--upstream", "http://127.0.0.1:18081"]


# --------------------------------------------------------------------------
# --help and bad flags
# --------------------------------------------------------------------------

FLAGS = ["listen", "upstream", "store", "ttl", "wait", "methods",
         "scope-header", "scope-cookie", "require-key", "on-unknown", "stream", "error-style", "api-log",
         "max-body-bytes", "max-header-bytes", "max-response-bytes",
         "client-timeout", "upstream-timeout", "lease", "workers", "user", "admin",
         "no-store-header", "key-header", "release-status",
         "fingerprint-ignore", "fingerprint-header", "error-template",
         "runtime-dir",
         "nginx", "module",
         "config",
         "print-config", "help"]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_flag(flag):
    r = run_cli(flag)
    assert r.returncode == 0
    assert r.stdout.startswith("usage: idemgate --listen HOST:PORT")
    for name in FLAGS:
        assert "--" + name in r.stdout
    assert r.stderr == ""
    assert max(len(line) for line in r.stdout.splitlines()) <= 79


def test_help_wins_over_missing_flags():
    r = run_cli("--ttl", "1s", "--help")
    assert r.returncode == 0 and "usage:" in r.stdout


BAD = [
    ([], "--listen is required"),
    (["--listen", "127.0.0.1:8080"], "--upstream is required"),
    (BASE + ["--ttl", "abc"], "--ttl: invalid duration 'abc'"),
    (BASE + ["--ttl", "3d"], "--ttl: invalid duration '3d'"),
    (BASE + ["--ttl", "0"], "--ttl: '0' is out of range"),
    (BASE + ["--wait", "-1s"], "--wait: invalid duration"),
    (BASE + ["--lease", "1x"], "--lease: invalid duration"),
    (BASE + ["--client-timeout", "0ms"], "--client-timeout: '0ms' is out of range"),
    (BASE + ["--upstream-timeout", "25h"], "--upstream-timeout: '25h' is out of range"),
    (BASE + ["--methods", "GET"], "--methods: invalid method list 'GET'"),
    (BASE + ["--methods", "POST PATCH"], "--methods: invalid method list"),
    (BASE + ["--methods", ""], "--methods: invalid method list"),
    (BASE + ["--max-body-bytes", "1t"], "--max-body-bytes: invalid size '1t'"),
    (BASE + ["--max-body-bytes", "0"], "--max-body-bytes: '0' is out of range"),
    (BASE + ["--max-body-bytes", "2g"], "--max-body-bytes: '2g' is out of range"),
    (BASE + ["--max-header-bytes", "512"], "--max-header-bytes: '512' is out of range"),
    (BASE + ["--max-response-bytes", "lots"], "--max-response-bytes: invalid size"),
    (BASE + ["--workers", "0"], "--workers: invalid value '0'"),
    (BASE + ["--workers", "many"], "--workers: invalid value 'many'"),
    (BASE + ["--admin", "localhost"], "--admin: invalid address 'localhost'"),
    (["--listen", "127.0.0.1:8080", "--upstream", "http://127.0.0.1:3000",
      "--admin", "127.0.0.1:8080"], "--admin: 127.0.0.1:8080 clashes with --listen"),
    (BASE + ["--store", "mem:"], "--store: unsupported store URL 'mem:'"),
    (BASE + ["--store", "/var/lib/x"], "--store: unsupported store URL"),
    (BASE + ["--store", "ftp://127.0.0.1/x"], "--store: unsupported store URL"),
    (BASE + ["--store", "lmdb:"], "--store: 'lmdb:': lmdb: needs a directory"),
    (BASE + ["--store", "lmdb:./d?fsync=1"], "--store: 'lmdb:./d?fsync=1': unknown lmdb option \"fsync\""),
    (BASE + ["--on-unknown", "retry"], "--on-unknown: invalid value 'retry' (store or release)"),
    (BASE + ["--error-style", "rfc"], "--error-style: invalid value 'rfc' (persona, ietf or stripe)"),
    (BASE + ["--scope-header", "X_Tenant"], "--scope-header: 'X_Tenant' is not a header name"),
    (BASE + ["--scope-header", "none", "--scope-header", "X-Tenant"],
     "--scope-header: none cannot be combined with header names"),
    (BASE + ["--scope-header", "A"] * 9, "--scope-header: at most 8 scope headers"),
    (BASE + ["--no-store-header", "X Trace"], "--no-store-header: 'X Trace' is not a header name"),
    (BASE + ["--stream", "always"], "--stream: invalid value 'always' (auto, pass or hold)"),
    (BASE + ["--fingerprint-ignore", "/a~2"],
     "--fingerprint-ignore: '/a~2' is neither a JSON Pointer"),
    (BASE + ["--fingerprint-ignore", ""],
     "--fingerprint-ignore: '' is neither a JSON Pointer"),
    (BASE + ["--fingerprint-header", "Stripe Version"],
     "--fingerprint-header: 'Stripe Version' is not a header name"),
    (BASE + ["--require-key=maybe"], "--require-key: invalid value 'maybe' (true or false)"),
    (BASE + ["--api-log", "/tmp/$host.log"], "--api-log: '/tmp/$host.log': the path may not contain '$'"),
    (BASE + ["--print-config=yes"], "--print-config takes no value"),
    (BASE + ["--frobnicate"], "unknown flag '--frobnicate'"),
    (BASE + ["--frobnicate=1"], "unknown flag '--frobnicate'"),
    (BASE + ["stray"], "unexpected argument 'stray'"),
    (BASE + ["--ttl"], "--ttl needs a value"),
    (BASE + ["--ttl", "--wait", "1s"], "--ttl needs a value"),
    (["--listen", "8080", "--upstream", "http://127.0.0.1:3000"], "--listen: invalid address '8080'"),
    (["--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:3000"], "--listen: invalid address"),
    (["--listen", "127.0.0.1:65536", "--upstream", "http://127.0.0.1:3000"], "--listen: invalid address"),
    (["--listen", "::1:8080", "--upstream", "http://127.0.0.1:3000"], "put an IPv6 address in brackets"),
    (["--listen", "127.0.0.1:8080", "--upstream", "127.0.0.1:3000"], "--upstream: '127.0.0.1:3000' is not an http://HOST:PORT"),
    (["--listen", "127.0.0.1:8080", "--upstream", "ftp://127.0.0.1:3000"], "--upstream: 'ftp://127.0.0.1:3000' is not an http://HOST:PORT[/prefix] or https://HOST[:PORT][/prefix] URL"),
    (["--listen", "127.0.0.1:8080", "--upstream", "http://127.0.0.1"], "(the port is required)"),
    (["--listen", "127.0.0.1:8080", "--upstream", "http://127.0.0.1:3000/a?b"], "the path prefix may not contain '?'"),
    (["--listen", "127.0.0.1:8080", "--upstream", "http://127.0.0.1:8080"], "--upstream: 127.0.0.1:8080 is the gateway's own --listen address"),
    (BASE + ["--config", "/nonexistent/idemgate.conf"], "--config: cannot read /nonexistent/idemgate.conf"),
    (BASE + ["--config", "/dev/null", "--config", "/dev/null"], "--config: given more than once"),
]


def bad_id(args):
    return " ".join(args[4:] if args[:4] == BASE else args) or "no flags"


@pytest.mark.parametrize("args,message", BAD, ids=[bad_id(a) for a, _ in BAD])
def test_bad_flags_exit_2_with_one_clear_line(args, message):
    r = run_cli(*(args + ["--print-config"]))
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("idemgate: ")
    assert message in lines[0]


def test_bad_values_also_stop_a_real_start(workdir):
    r = run_cli(*(BASE + ["--ttl", "soon"]), cwd=workdir)
    assert r.returncode == 2
    assert "--ttl: invalid duration 'soon'" in r.stderr
    assert os.listdir(workdir) == []


def test_missing_nginx_or_module_exit_2(workdir):
    env = dict(os.environ, TMPDIR=workdir)
    r = run_cli(*(BASE + ["--nginx", "/nonexistent/nginx"]), cwd=workdir, env=env)
    assert r.returncode == 2
    assert r.stderr.strip() == ("idemgate: --nginx: cannot run /nonexistent/nginx: "
                                "No such file or directory")
    r = run_cli(*(BASE + ["--module", "/nonexistent/m.so"]), cwd=workdir, env=env)
    assert r.returncode == 2
    assert "idemgate: --module: cannot read /nonexistent/m.so" in r.stderr
    assert not glob.glob(os.path.join(workdir, "idemgate.*"))


def test_lease_shorter_than_upstream_timeout_warns():
    r = run_cli(*(BASE + ["--lease", "5s", "--print-config"]))
    assert r.returncode == 0
    assert "warning: --lease 5s is not longer than --upstream-timeout 60s" in r.stderr


# --------------------------------------------------------------------------
# --print-config
# --------------------------------------------------------------------------

def test_print_config_defaults(workdir):
    r = run_cli(*(BASE + ["--print-config"]), cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    d = conf_directives(r.stdout)
    module = MODULE_OVERRIDE or os.path.join(os.path.dirname(IDEMGATE),
                                             "ngx_http_idempotency_module.so")
    assert d[0] == 'load_module "%s";' % os.path.realpath(module)
    for line in [
            "worker_processes auto;", "daemon off;", "master_process on;",
            "pid nginx.pid;", "error_log stderr notice;",
            "thread_pool idemgate threads=32;",
            "worker_connections 4096;",
            "access_log off;", "server_tokens off;",
            "log_format idemgate_api escape=none '$idempotency_log_entry';",
            "client_max_body_size 1m;", "client_body_buffer_size 1m;",
            "client_header_buffer_size 1k;",
            "large_client_header_buffers 2 16k;",
            "client_header_timeout 30s;", "client_body_timeout 30s;",
            "send_timeout 30s;", "keepalive_timeout 65s;",
            "client_body_temp_path client_body_temp;",
            "proxy_temp_path proxy_temp;", "fastcgi_temp_path fastcgi_temp;",
            "uwsgi_temp_path uwsgi_temp;", "scgi_temp_path scgi_temp;",
            'idempotency_store "lmdb:%s/idemgate-data";' % workdir,
            "idempotency_thread_pool idemgate;",
            "idempotency_fast_request_id on;",
            "upstream idemgate_upstream {", "server 127.0.0.1:18081;",
            "keepalive 512;",
            "proxy_http_version 1.1;", 'proxy_set_header Connection "";',
            "proxy_set_header Host $idemgate_host;",
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_set_header X-Request-Id $request_id;",
            "proxy_read_timeout 60s;", "proxy_send_timeout 60s;",
            "proxy_connect_timeout 10s;", "proxy_ignore_client_abort on;",
            "proxy_buffering on;", "proxy_max_temp_file_size 0;",
            "listen 127.0.0.1:18080;",
            "idempotency on;", "idempotency_methods POST;",
            "idempotency_scope $http_authorization;",
            "idempotency_ttl 24h;", "idempotency_wait 10s;",
            "idempotency_lease 70s;", "idempotency_on_unknown store;",
            "idempotency_error_style persona;",
            "idempotency_require_key off;",
            "idempotency_max_response_size 8m;",
            "proxy_pass http://idemgate_upstream;",
            "error_page 494 =431 //idemgate-error/431;",
            "error_page 413 =413 //idemgate-error/413;",
            "listen 127.0.0.1:9090;", "location = /healthz {",
            "idempotency_metrics;", "location /keys/ {", "idempotency_admin;"]:
        assert line in d, line
    assert ("user \"nobody\" \"%s\";" % nobody_group() in d) == IS_ROOT
    assert not any(x.startswith("access_log \"") for x in d)
    assert not any(x.startswith("idempotency_no_store_header") for x in d)
    # the admin location scopes keys like the API location
    assert d.count("idempotency_scope $http_authorization;") == 2
    # printing has no side effects: no store, no runtime directory
    assert os.listdir(workdir) == []


def test_print_config_from_flags(workdir):
    r = run_cli("--listen", "127.0.0.1:7001", "--upstream",
                "http://localhost:7002/api/v1/", "--store", "lmdb:data?sync=0",
                "--ttl", "90", "--wait", "250ms", "--methods", "post, patch,PUT",
                "--scope-header", "X-Tenant", "--scope-header", "Authorization",
                "--require-key", "--on-unknown", "release",
                "--error-style", "ietf", "--api-log", "logs/api.log",
                "--max-body-bytes", "64k", "--max-header-bytes", "8KiB",
                "--max-response-bytes", "1000", "--client-timeout", "5s",
                "--upstream-timeout", "2m", "--workers", "3",
                "--admin", "127.0.0.1:7003", "--no-store-header", "X-Trace",
                "--no-store-header", "X-Request-Cost", "--runtime-dir", "run",
                "--nginx", "/usr/local/sbin/nginx", "--module", "m/idem.so",
                "--print-config", cwd=workdir)
    assert r.returncode == 0, r.stderr
    d = conf_directives(r.stdout)
    for line in [
            'load_module "%s/m/idem.so";' % workdir,
            "worker_processes 3;",
            "client_max_body_size 64k;", "client_body_buffer_size 64k;",
            "large_client_header_buffers 2 8k;",
            "client_header_timeout 5s;", "client_body_timeout 5s;",
            "send_timeout 5s;",
            'idempotency_store "lmdb:%s/data?sync=0";' % workdir,
            "server localhost:7002;",
            "proxy_read_timeout 120s;", "proxy_send_timeout 120s;",
            "proxy_connect_timeout 10s;",
            "listen 127.0.0.1:7001;",
            'access_log "%s/logs/api.log" idemgate_api if=$idempotency_api_log;' % workdir,
            "idempotency_methods POST PATCH PUT;",
            "idempotency_scope $http_x_tenant $http_authorization;",
            "idempotency_ttl 90s;", "idempotency_wait 250ms;",
            "idempotency_lease 130s;", "idempotency_on_unknown release;",
            "idempotency_error_style ietf;", "idempotency_require_key on;",
            "idempotency_max_response_size 1000;",
            'idempotency_no_store_header "X-Trace" "X-Request-Cost";',
            'proxy_pass "http://idemgate_upstream/api/v1$request_uri";',
            "default_type application/problem+json;",
            "listen 127.0.0.1:7003;"]:
        assert line in d, line
    assert any('"status":413' in x and "65536 bytes" in x for x in d)
    assert any('"status":431' in x and "8192 bytes" in x for x in d)
    assert os.listdir(workdir) == []


def test_print_config_scope_none_admin_off_lease():
    r = run_cli(*(BASE + ["--scope-header", "none", "--admin", "off",
                          "--lease", "2h", "--upstream-timeout", "3s",
                          "--api-log", "-", "--print-config"]))
    assert r.returncode == 0, r.stderr
    d = conf_directives(r.stdout)
    assert d.count("idempotency_scope none;") == 1
    assert "idempotency_lease 2h;" in d
    assert "proxy_connect_timeout 3s;" in d
    assert 'access_log "/dev/stdout" idemgate_api if=$idempotency_api_log;' in d
    assert not any("idempotency_admin" in x or "idempotency_metrics" in x for x in d)
    assert sum(1 for x in d if x.startswith("listen ")) == 1


def test_print_config_is_accepted_by_nginx(workdir):
    """nginx -t loads the module and checks every directive written."""
    if not os.path.exists(NGINX):
        pytest.skip("no nginx")
    for i, extra in enumerate([[], ["--error-style", "ietf", "--scope-header", "none",
                                    "--api-log", "-", "--admin", "off"],
                               ["--upstream", "http://127.0.0.1:3000/p",
                                "--methods", "POST,PATCH,PUT,DELETE",
                                "--no-store-header", "X-A", "--require-key",
                                "--scope-header", "X-Tenant", "--max-header-bytes", "1k"]]):
        run = os.path.join(workdir, "run%d" % i)
        os.makedirs(run)
        # --upstream is repeatable: an extra one replaces the default here
        upstream = [] if "--upstream" in extra else ["--upstream",
                                                     "http://127.0.0.1:3000"]
        r = run_cli(*(["--listen", "127.0.0.1:%d" % free_port()] + upstream
                      + ["--admin", "127.0.0.1:%d" % free_port(),
                       "--store", "lmdb:" + os.path.join(workdir, "store")]
                      + extra + ["--print-config"]))
        assert r.returncode == 0, r.stderr
        conf = os.path.join(run, "nginx.conf")
        with open(conf, "w") as f:
            f.write(r.stdout)
        asan_dir = os.path.join(workdir, "asan")
        t = subprocess.run([NGINX, "-t", "-e", "stderr", "-p", run, "-c", conf],
                           env=nginx_env(asan_dir), capture_output=True,
                           text=True, timeout=20)
        assert t.returncode == 0, t.stderr
        assert "test is successful" in t.stderr
        assert asan_reports(asan_dir) == ""


def test_print_config_valgrind_clean(workdir):
    if shutil.which("valgrind") is None:
        pytest.skip("no valgrind")
    if sanitized():
        pytest.skip("idemgate is built with a sanitizer")
    conf = os.path.join(workdir, "idemgate.conf")
    with open(conf, "w") as f:
        f.write("listen = 127.0.0.1:8080\nupstream = http://127.0.0.1:3000/a\n"
                "scope-header = X-A\nno-store-header = X-B\napi-log = a.log\n")
    for args in (["--config", conf, "--scope-header", "X-C", "--print-config"],
                 ["--config", conf, "--ttl", "bad"], ["--help"]):
        r = subprocess.run(["valgrind", "-q", "--leak-check=full",
                            "--show-leak-kinds=all", "--errors-for-leak-kinds=all",
                            "--error-exitcode=99", IDEMGATE] + args,
                           capture_output=True, text=True, cwd=workdir, timeout=120)
        assert r.returncode in (0, 2), r.stderr
        assert "==" not in r.stderr, r.stderr


# --------------------------------------------------------------------------
# --config FILE
# --------------------------------------------------------------------------

def test_config_file_settings_and_overrides(workdir):
    conf = os.path.join(workdir, "idemgate.conf")
    with open(conf, "w") as f:
        f.write("# idemgate settings\n"
                "listen = 127.0.0.1:7101\n"
                "upstream = http://127.0.0.1:7102   # the API\n"
                "\n"
                "ttl=2h\n"
                "  wait =  3s  \n"
                "methods = POST,PATCH\n"
                "scope-header = X-Tenant\n"
                "scope_header = X-Org\n"
                "no-store-header = X-A\n"
                "require-key = yes\n"
                'api-log = "/var/log/idem api.log"\n'
                "admin = off\n")
    r = run_cli("--config", conf, "--print-config", cwd=workdir)
    assert r.returncode == 0, r.stderr
    d = conf_directives(r.stdout)
    for line in ["listen 127.0.0.1:7101;", "server 127.0.0.1:7102;",
                 "idempotency_ttl 2h;", "idempotency_wait 3s;",
                 "idempotency_methods POST PATCH;",
                 "idempotency_scope $http_x_tenant $http_x_org;",
                 'idempotency_no_store_header "X-A";',
                 "idempotency_require_key on;",
                 'access_log "/var/log/idem api.log" idemgate_api if=$idempotency_api_log;']:
        assert line in d, line
    assert not any("idempotency_admin" in x for x in d)

    # the command line overrides the file; a repeatable flag replaces it
    r = run_cli("--ttl", "5m", "--config", conf, "--scope-header", "X-User",
                "--require-key=false", "--admin", "127.0.0.1:7103",
                "--listen", "127.0.0.1:7104", "--print-config", cwd=workdir)
    assert r.returncode == 0, r.stderr
    d = conf_directives(r.stdout)
    for line in ["listen 127.0.0.1:7104;", "idempotency_ttl 300s;",
                 "idempotency_wait 3s;", "idempotency_scope $http_x_user;",
                 "idempotency_require_key off;", "listen 127.0.0.1:7103;"]:
        assert line in d, line


@pytest.mark.parametrize("text,message", [
    ("listen = 127.0.0.1:8080\nfrobnicate = 1\n", "idemgate.conf:2: unknown setting 'frobnicate'"),
    ("listen 127.0.0.1:8080\n", "idemgate.conf:1: expected \"name = value\""),
    ("\n\nttl = forever\n", "idemgate.conf:3: ttl: invalid duration 'forever'"),
    ("ttl =\n", "idemgate.conf:1: ttl needs a value"),
    ("print-config = true\n", "idemgate.conf:1: print-config is only a command-line flag"),
    ("config = other.conf\n", "idemgate.conf:1: config is only a command-line flag"),
    ("upstream = ftp://x:1\n", "idemgate.conf:1: upstream: 'ftp://x:1' is not an http://"),
])
def test_config_file_errors_name_file_and_line(workdir, text, message):
    conf = os.path.join(workdir, "idemgate.conf")
    with open(conf, "w") as f:
        f.write(text)
    r = run_cli("--config", conf, "--listen", "127.0.0.1:8080", "--upstream",
                "http://127.0.0.1:3000", "--print-config", cwd=workdir)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1
    assert message in r.stderr, r.stderr


# --------------------------------------------------------------------------
# Running: replay, flags at work
# --------------------------------------------------------------------------

def test_post_with_key_is_stored_and_replayed(gw, echo):
    body = {"name": "Jane", "n": 1}
    r1 = gw.post(key="k-replay-1", json=body)
    assert r1.status_code == 201
    assert "Idempotent-Replayed" not in r1.headers
    assert "Idempotency-Expires" in r1.headers
    count = r1.json()["count"]
    r2 = gw.post(key="k-replay-1", data='{ "n":1, "name":"Jane" }',
                 headers={"Content-Type": "application/json"})
    assert r2.status_code == 201
    assert r2.headers["Idempotent-Replayed"] == "true"
    assert r2.content == r1.content
    assert echo.count == count
    # a GET and a POST without a key are proxied every time
    assert requests.get(gw.url + "/v1/things", timeout=5).json()["count"] == count + 1
    assert gw.post(json=body).json()["count"] == count + 2
    # the proxy headers of the configuration reach the upstream
    method, path, headers = echo.seen[-1]
    assert headers["Host"] == "127.0.0.1:%d" % gw.port
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-Id"])
    # a different body under the same key is the idempotency error
    r3 = gw.post(key="k-replay-1", json={"name": "John"})
    assert r3.status_code == 400
    assert assert_error_body(r3.content)["title"] == "Idempotency error"


def test_store_directory_is_created_for_the_workers(gw, workdir):
    gw.post(key="k-store", data="x")
    store = os.path.join(workdir, "store")
    assert os.path.isfile(os.path.join(store, "data.mdb"))
    if IS_ROOT:
        nobody = pwd.getpwnam("nobody")
        assert os.stat(store).st_uid == nobody.pw_uid
        for name in os.listdir(store):
            assert os.stat(os.path.join(store, name)).st_uid == nobody.pw_uid


@pytest.mark.skipif(not IS_ROOT, reason="workers change user only under root")
def test_store_out_of_the_workers_reach_is_refused(workdir):
    private = os.path.join(workdir, "private")
    os.mkdir(private, 0o700)
    r = run_cli(*(BASE + ["--store", "lmdb:" + os.path.join(private, "s")]),
                cwd=workdir, env=dict(os.environ, TMPDIR=workdir))
    assert r.returncode == 2
    assert ("--store: the nginx workers run as nobody (idemgate runs as root) "
            "and cannot use %s/s" % private) in r.stderr
    assert not glob.glob(os.path.join(workdir, "idemgate.*"))


def test_default_store_is_relative_to_the_working_directory(gateway_factory, workdir):
    g = gateway_factory("--store", "lmdb:./rel-store")
    assert g.post(key="k-rel", data="x").status_code == 201
    assert os.path.isfile(os.path.join(workdir, "rel-store", "data.mdb"))


def test_upstream_prefix_keeps_the_raw_uri(gateway_factory, echo):
    g = gateway_factory(upstream=echo.url + "/base/")
    r = requests.get(g.url + "/v1/a%2Fb?x=1&y=%20", timeout=5)
    assert r.json()["path"] == "/base/v1/a%2Fb?x=1&y=%20"
    g2 = gateway_factory()
    r = requests.get(g2.url + "/v1/a%2Fb?x=1", timeout=5)
    assert r.json()["path"] == "/v1/a%2Fb?x=1"


def test_methods_and_require_key(gateway_factory, echo):
    g = gateway_factory("--methods", "POST,PATCH", "--require-key")
    r1 = requests.patch(g.url + "/p", data="a", headers={"Idempotency-Key": "k-m"}, timeout=5)
    r2 = requests.patch(g.url + "/p", data="a", headers={"Idempotency-Key": "k-m"}, timeout=5)
    assert r2.headers.get("Idempotent-Replayed") == "true"
    assert r1.json()["count"] == r2.json()["count"]
    r3 = requests.put(g.url + "/p", data="a", headers={"Idempotency-Key": "k-m"}, timeout=5)
    r4 = requests.put(g.url + "/p", data="a", headers={"Idempotency-Key": "k-m"}, timeout=5)
    assert r4.json()["count"] == r3.json()["count"] + 1
    r5 = g.post(data="a")
    assert r5.status_code == 400
    assert "Idempotency-Key" in assert_error_body(r5.content)["details"]


def test_scope_headers(gateway_factory):
    g = gateway_factory("--scope-header", "X-Tenant")
    a = g.post(key="k-s", data="x", headers={"X-Tenant": "a"}).json()["count"]
    b = g.post(key="k-s", data="x", headers={"X-Tenant": "b"}).json()["count"]
    assert a != b
    # Authorization is no longer part of the scope
    assert g.post(key="k-s", data="x", headers={"X-Tenant": "a",
                                               "Authorization": "Bearer z"}).json()["count"] == a
    g2 = gateway_factory("--scope-header", "none")
    c = g2.post(key="k-s2", data="x", headers={"Authorization": "Bearer 1"}).json()["count"]
    r = g2.post(key="k-s2", data="x", headers={"Authorization": "Bearer 2"})
    assert r.headers.get("Idempotent-Replayed") == "true"
    assert r.json()["count"] == c


def test_scope_cookie(gateway_factory):
    g = gateway_factory("--scope-cookie", "session")
    a = g.post(key="k-c", data="x", headers={"Cookie": "session=s1"})
    b = g.post(key="k-c", data="x", headers={"Cookie": "theme=dark; session=s2"})
    assert a.json()["count"] != b.json()["count"]
    # the same session, another token: the same scope (the cookie alone,
    # not the default Authorization, scopes keys)
    c = g.post(key="k-c", data="x", headers={"Cookie": "session=s1",
                                             "Authorization": "Bearer new"})
    assert c.headers.get("Idempotent-Replayed") == "true"
    assert c.json()["count"] == a.json()["count"]
    # no cookie and an empty one are different scopes too
    d = g.post(key="k-c", data="x")
    e = g.post(key="k-c", data="x", headers={"Cookie": "session="})
    assert d.json()["count"] != e.json()["count"]
    r = run_cli(*BASE, "--scope-header", "X-Tenant", "--scope-cookie", "sid",
                "--print-config")
    assert "idempotency_scope $http_x_tenant $cookie_sid;" in r.stdout
    for args, message in (
            (["--scope-cookie", "a-b"], "is not a cookie name"),
            (["--scope-header", "none", "--scope-cookie", "sid"],
             "cannot be combined")):
        r = run_cli(*BASE, *args, "--print-config")
        assert r.returncode == 2 and message in r.stderr, r.stderr


def test_no_store_header_and_max_response_bytes(gateway_factory):
    g = gateway_factory("--no-store-header", "X-Trace", "--max-response-bytes", "1k")
    r1 = g.post(key="k-ns", data="x")
    assert "X-Trace" in r1.headers
    r2 = g.post(key="k-ns", data="x")
    assert r2.headers.get("Idempotent-Replayed") == "true"
    assert "X-Trace" not in r2.headers
    big1 = g.post("/big/2000", key="k-big", data="x")
    assert big1.status_code == 201 and big1.content == b"x" * 2000
    big2 = g.post("/big/2000", key="k-big", data="x")
    assert big2.headers.get("Idempotent-Replayed") == "true"
    assert big2.status_code >= 500
    assert assert_error_body(big2.content)


def test_a_bad_key_is_named_by_its_header(gateway_factory):
    # the rule a bad key broke names the header it came in
    g = gateway_factory("--key-header", "X-Idempotency-Key")
    r = requests.post(g.url + "/v1/things", data="x", timeout=10,
                      headers={"X-Idempotency-Key": ""})
    assert r.status_code == 400
    details = r.json()["errors"][0]["details"]
    assert details.startswith("The X-Idempotency-Key header is empty"), details
    r = requests.post(g.url + "/v1/things", data="x", timeout=10,
                      headers={"Idempotency-Key": "a", "X-Idempotency-Key": "b"})
    assert r.status_code == 400
    assert "X-Idempotency-Key" in r.json()["errors"][0]["details"]
    # the default header keeps its own words
    r = requests.post(g.url + "/v1/things", data="x", timeout=10,
                      headers={"Idempotency-Key": "x" * 256})
    assert r.status_code == 400
    assert r.json()["errors"][0]["details"].startswith(
        "The Idempotency-Key is longer")


def test_key_header(gateway_factory, echo, workdir):
    g = gateway_factory("--key-header", "X-Idempotency-Key",
                        "--key-header", "chargebee-idempotency-key")
    before = echo.count
    a = requests.post(g.url + "/v1/things", data="x", timeout=10,
                      headers={"chargebee-idempotency-key": "k-named"})
    b = requests.post(g.url + "/v1/things", data="x", timeout=10,
                      headers={"X-Idempotency-Key": "k-named"})
    c = g.post(key="k-named", data="x")
    assert b.headers.get("Idempotent-Replayed") == "true"
    assert c.headers.get("Idempotent-Replayed") == "true"
    assert a.content == b.content == c.content
    assert echo.count - before == 1
    # forwarded unchanged: the API may read its own header too
    assert echo.seen[-1][2].get("chargebee-idempotency-key") == "k-named"
    r = run_cli(*BASE, "--key-header", "PayPal-Request-Id", "--print-config")
    assert 'idempotency_key_header "PayPal-Request-Id";' in r.stdout
    r = run_cli(*BASE, "--key-header", "Bad Name", "--print-config")
    assert r.returncode == 2 and "--key-header" in r.stderr


def test_release_status(gateway_factory, echo):
    g = gateway_factory("--release-status", "429,503")
    before = echo.count
    a = g.post("/status/429", key="k-rel", data="x")
    b = g.post("/status/429", key="k-rel", data="x")
    assert a.status_code == b.status_code == 429
    assert "Idempotent-Replayed" not in b.headers
    c = g.post("/v1/ok", key="k-rel2", data="x")
    d = g.post("/v1/ok", key="k-rel2", data="x")
    assert d.headers.get("Idempotent-Replayed") == "true"
    assert echo.count - before == 3
    r = run_cli(*BASE, "--release-status", "429,503", "--print-config")
    assert "idempotency_release_status 429 503;" in r.stdout
    for bad in ("42", "429;503", "700", "429,"):
        r = run_cli(*BASE, "--release-status", bad, "--print-config")
        assert r.returncode == 2 and "--release-status" in r.stderr, bad


def test_ttl(gateway_factory):
    g = gateway_factory("--ttl", "1s")
    a = g.post(key="k-ttl", data="x").json()["count"]
    assert g.post(key="k-ttl", data="x").json()["count"] == a
    time.sleep(1.3)
    assert g.post(key="k-ttl", data="x").json()["count"] != a


def test_api_log_file(gateway_factory, workdir):
    g = gateway_factory("--api-log", "api.log")
    g.post(key="k-log", data="x")
    g.post(key="k-log", data="x")          # a replay: not logged
    requests.get(g.url + "/plain", timeout=5)
    g.close()
    with open(os.path.join(workdir, "api.log")) as f:
        entries = [json.loads(line) for line in f]
    assert [(e["method"], e["path"], e["status"], e["key"], e["outcome"])
            for e in entries] == [("POST", "/v1/things", 201, "k-log", "executed"),
                                  ("GET", "/plain", 200, None, "executed")]
    for e in entries:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"])
        assert re.fullmatch(r"[0-9a-f]{32}", e["request_id"])
        assert isinstance(e["duration_ms"], int)


def test_request_id_is_one_per_request_in_log_and_upstream(gateway_factory,
                                                          echo, workdir):
    # the gateway makes $request_id itself (idempotency_fast_request_id):
    # the X-Request-Id the API gets is the API log's request_id, and no two
    # requests share one (two workers, each with its own key; which worker
    # takes a connection is the kernel's choice)
    g = gateway_factory("--api-log", "api.log", "--workers", "2")
    start = len(echo.seen)
    sent = []
    for i in range(120):
        if i % 3 == 0:
            r = requests.get(g.url + "/plain/%d" % i, timeout=5)
        else:
            r = g.post("/v1/rid/%d" % i, key="k-rid-%d" % i, data="x%d" % i)
        assert r.status_code in (200, 201)
        sent.append(i)
    g.close()
    seen = {}
    for method, path, headers in echo.seen[start:]:
        assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-Id"])
        seen[path] = headers["X-Request-Id"]
    assert len(seen) == 120
    assert len(set(seen.values())) == 120
    with open(os.path.join(workdir, "api.log")) as f:
        entries = [json.loads(line) for line in f]
    assert len(entries) == 120
    for e in entries:
        assert seen[e["path"]] == e["request_id"], e


def test_api_log_stdout(gateway_factory):
    g = gateway_factory("--api-log", "-")
    g.post(key="k-stdout", data="x")
    g.close()
    lines = [json.loads(x) for x in g.stdout().splitlines() if x.startswith("{")]
    assert [x["key"] for x in lines] == ["k-stdout"]


def test_admin_server(gw):
    r = requests.get(gw.admin_url + "/healthz", timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["Content-Type"] == "application/json"
    gw.post(key="k-admin", data="x", headers={"Authorization": "Bearer t"})
    m = requests.get(gw.admin_url + "/metrics", timeout=5)
    assert 'idemgate_requests_total{outcome="executed"}' in m.text
    k = requests.get(gw.admin_url + "/keys/k-admin",
                     headers={"Authorization": "Bearer t"}, timeout=5)
    assert k.status_code == 200 and k.json()["state"] == "complete"
    other = requests.get(gw.admin_url + "/keys/k-admin",
                         headers={"Authorization": "Bearer u"}, timeout=5)
    assert other.status_code == 404
    d = requests.delete(gw.admin_url + "/keys/k-admin",
                        headers={"Authorization": "Bearer t"}, timeout=5)
    assert d.status_code == 200
    for path, status in (("/", 404), ("/nothing/here", 404)):
        r = requests.get(gw.admin_url + path, timeout=5)
        assert r.status_code == status
        assert assert_error_body(r.content)["title"] == "Not found"
    r = requests.post(gw.admin_url + "/keys/x", timeout=5)
    assert r.status_code == 405
    assert_error_body(r.content)


def test_admin_off(gateway_factory):
    g = gateway_factory("--admin", "off", admin=False)
    assert g.post(data="x").status_code == 201
    deadline = time.time() + 5
    while "idemgate: serving" not in g.stderr() and time.time() < deadline:
        time.sleep(0.05)
    line = [x for x in g.stderr().splitlines() if x.startswith("idemgate: serving")]
    assert line and "admin" not in line[0]


# --------------------------------------------------------------------------
# nginx's own errors: JSON pages
# --------------------------------------------------------------------------

def test_header_over_the_limit_is_431_json(gateway_factory):
    g = gateway_factory("--max-header-bytes", "4k")
    ok = requests.get(g.url + "/h", headers={"X-Fill": "a" * 3000}, timeout=5)
    assert ok.status_code == 200
    # one long header line, and many short ones adding up
    for extra in ([("X-Big", "a" * 6000)],
                  [("X-H%d" % i, "b" * 500) for i in range(12)]):
        r = requests.get(g.url + "/h", headers=dict(extra), timeout=5)
        assert r.status_code == 431
        assert r.headers["Content-Type"] == "application/json"
        err = assert_error_body(r.content)
        assert err["title"] == "Request header fields too large"
        assert "4096 bytes" in err["details"]


def test_default_header_limit_is_16k(gw):
    assert requests.get(gw.url + "/h", headers={"X-Fill": "a" * 14000},
                        timeout=5).status_code == 200
    assert requests.get(gw.url + "/h", headers={"X-Fill": "a" * 17000},
                        timeout=5).status_code == 431
    many = {"X-H%d" % i: "c" * 1000 for i in range(20)}
    assert requests.get(gw.url + "/h", headers=many, timeout=5).status_code == 431


def test_body_over_the_limit_is_413_json_and_nothing_is_stored(gateway_factory, echo):
    g = gateway_factory("--max-body-bytes", "1k")
    before = echo.count
    r = g.post(key="k-413", data="x" * 2000)
    assert r.status_code == 413
    assert r.headers["Content-Type"] == "application/json"
    err = assert_error_body(r.content)
    assert err["title"] == "Request too large"
    assert "1024 bytes" in err["details"]
    assert echo.count == before
    # chunked, no Content-Length: the limit holds while reading
    r = g.post(key="k-413", data=iter([b"y" * 600, b"y" * 600]))
    assert r.status_code == 413
    assert_error_body(r.content)
    # the key is still free: the same key with a small body executes
    ok = g.post(key="k-413", data="x" * 1024)
    assert ok.status_code == 201 and "Idempotent-Replayed" not in ok.headers
    assert echo.count == before + 1


RAW = [
    ("malformed header", b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", 400, "Bad request"),
    ("garbage request line", b"HELLO THERE\r\n\r\n", 400, "Bad request"),
    ("bad version", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP version not supported"),
    ("long request line", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI too long"),
    ("unknown transfer coding", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "Not implemented"),
    ("huge header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n", 431, "Request header fields too large"),
    ("large body announced", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n", 413, "Request too large"),
]


@pytest.mark.parametrize("data,status,title", [r[1:] for r in RAW], ids=[r[0] for r in RAW])
def test_nginx_errors_answer_json_and_close(gw, data, status, title):
    got, headers, body, closed = raw_request(gw.port, data)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert assert_error_body(body)["title"] == title
    if status != 413:
        # (after a 413 nginx reads on for a while to drain the body)
        assert closed


def test_error_pages_follow_ietf_style(gateway_factory):
    g = gateway_factory("--error-style", "ietf", "--max-body-bytes", "10")
    r = g.post(data="x" * 11)
    assert r.status_code == 413
    assert r.headers["Content-Type"] == "application/problem+json"
    doc = r.json()
    assert doc["status"] == 413 and doc["title"] == "Content Too Large"
    assert "10 bytes" in doc["detail"]


def test_error_pages_follow_stripe_style(gateway_factory):
    g = gateway_factory("--error-style", "stripe", "--max-body-bytes", "10")
    r = g.post(data="x" * 11)
    assert r.status_code == 413
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "10 bytes" in r.json()["error"]["message"]
    r = requests.get(g.url + "/sleep/0", timeout=10)
    assert r.status_code == 200
    r = g.post(key="k-stripe-1", data="a")
    r = g.post(key="k-stripe-1", data="b")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "idempotency_error"


def test_upstream_down_is_502_json(gateway_factory):
    dead = free_port()
    g = gateway_factory(upstream="http://127.0.0.1:%d" % dead)
    r = requests.get(g.url + "/x", timeout=10)
    assert r.status_code == 502
    assert r.headers["Content-Type"] == "application/json"
    assert assert_error_body(r.content)["title"] == "Bad gateway"
    r = g.post(key="k-down", data="x")
    assert r.status_code == 502
    assert_error_body(r.content)


def test_upstream_timeout_is_504_json(gateway_factory):
    g = gateway_factory("--upstream-timeout", "1s")
    r = requests.get(g.url + "/sleep/2.5", timeout=10)
    assert r.status_code == 504
    err = assert_error_body(r.content)
    assert err["title"] == "Gateway timeout"
    assert "1s" in err["details"]
    # with a key, the unknown outcome is stored and replayed (SPEC section 3)
    r1 = g.post("/sleep/2.5", key="k-504", data="x")
    assert r1.status_code == 504
    assert_error_body(r1.content)
    r2 = g.post("/sleep/2.5", key="k-504", data="x")
    assert r2.status_code == 504 and r2.headers["Idempotent-Replayed"] == "true"


def test_client_timeout_closes_a_slow_request(gateway_factory, echo):
    """A request whose body stalls is dropped after --client-timeout (nginx
    closes the connection without an answer of its own); the upstream never
    sees it and the key stays free."""
    g = gateway_factory("--client-timeout", "1s")
    before = echo.count
    with socket.create_connection(("127.0.0.1", g.port), timeout=6) as s:
        s.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k-slow\r\n"
                  b"Content-Length: 10\r\n\r\nabc")
        start = time.time()
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            data = b""
        assert data == b""
        assert 0.8 < time.time() - start < 5
    assert echo.count == before
    assert g.post("/slow", key="k-slow", data="abcdefghij").status_code == 201


# --------------------------------------------------------------------------
# Signals and the runtime directory
# --------------------------------------------------------------------------

def test_runtime_dir_holds_the_configuration_and_goes_away(gw):
    dirs = gw.runtime_dirs()
    assert len(dirs) == 1
    with open(os.path.join(dirs[0], "nginx.conf")) as f:
        conf = f.read()
    # what runs is what --print-config shows for the same flags
    printed = run_cli(*(gw.argv[1:] + ["--print-config"]), cwd=gw.workdir)
    assert printed.returncode == 0
    assert conf == printed.stdout
    assert os.path.exists(os.path.join(dirs[0], "nginx.pid"))
    gw.signal(signal.SIGTERM)
    assert gw.wait() == 0
    assert gw.runtime_dirs() == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_stop_signal_finishes_in_flight_requests(gateway_factory, sig):
    g = gateway_factory()
    result = {}

    def slow():
        result["r"] = g.post("/sleep/1.5", key="k-inflight-%d" % sig, data="x", timeout=10)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.4)
    g.signal(sig)
    t.join(10)
    assert result["r"].status_code == 201
    assert g.wait() == 0
    assert not port_open(g.port)
    assert g.runtime_dirs() == []
    assert "idemgate: nginx" not in g.stderr()


def test_second_sigint_stops_at_once(gateway_factory):
    g = gateway_factory()
    t = threading.Thread(target=quiet_post, args=(g, "/sleep/5"))
    t.start()
    time.sleep(0.4)
    start = time.time()
    g.signal(signal.SIGINT)
    time.sleep(0.3)
    assert g.proc.poll() is None          # the first one waits for the request
    g.signal(signal.SIGINT)
    assert g.wait() == 0
    assert time.time() - start < 3
    assert g.runtime_dirs() == []
    t.join(10)


def test_sigusr1_reopens_the_api_log(gateway_factory, workdir):
    g = gateway_factory("--api-log", "api.log")
    log = os.path.join(workdir, "api.log")
    g.post(key="k-usr1-a", data="x")
    os.rename(log, log + ".1")
    g.signal(signal.SIGUSR1)
    # the master reopens, then tells its (one) worker to
    deadline = time.time() + 5
    while (len(set(re.findall(r"(\d+)#\d+: reopening logs", g.stderr()))) < 2
           and time.time() < deadline):
        time.sleep(0.05)
    g.post(key="k-usr1-b", data="x")
    g.close()
    with open(log + ".1") as f:
        assert [json.loads(x)["key"] for x in f] == ["k-usr1-a"]
    with open(log) as f:
        assert [json.loads(x)["key"] for x in f] == ["k-usr1-b"]


def test_stop_before_nginx_is_ready_still_exits_0(gateway_factory):
    """A stop that comes while idemgate prepares, before nginx has its
    signal handlers, is held and then delivered: still a graceful exit."""
    g = gateway_factory(ready=False)
    deadline = time.time() + 5
    while not blocks_sigterm(g.proc.pid) and time.time() < deadline:
        time.sleep(0.001)
    g.signal(signal.SIGTERM)
    assert g.wait() == 0
    assert g.runtime_dirs() == []


def test_sighup_reloads_nginx(gateway_factory):
    g = gateway_factory()
    assert g.post(key="k-hup", data="x").status_code == 201
    master = g.master_pid()
    before = g.worker_pids()
    assert before
    g.signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline:
        after = g.worker_pids()
        if after and not set(after) & set(before):
            break
        time.sleep(0.05)
    assert after and not set(after) & set(before)
    assert g.master_pid() == master
    assert g.proc.poll() is None
    r = g.post(key="k-hup", data="x")
    assert r.headers.get("Idempotent-Replayed") == "true"
    assert "reconfiguring" in g.stderr()
    g.signal(signal.SIGTERM)
    assert g.wait() == 0
    assert g.runtime_dirs() == []


def test_nginx_that_cannot_start_fails_idemgate(workdir):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = nginx_env(os.path.join(workdir, "asan"),
                        dict(os.environ, TMPDIR=workdir))
        r = subprocess.run([IDEMGATE, "--listen", "127.0.0.1:%d" % port,
                            "--upstream", "http://127.0.0.1:1", "--admin", "off",
                            "--store", "lmdb:" + os.path.join(workdir, "s")],
                           env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "Address already in use" in r.stderr
    assert "idemgate: nginx exited with status 1" in r.stderr
    assert not glob.glob(os.path.join(workdir, "idemgate.*"))


def test_runtime_dir_flag(gateway_factory, workdir):
    run = os.path.join(workdir, "run-new")
    g = gateway_factory("--runtime-dir", run)
    assert os.path.exists(os.path.join(run, "nginx.conf"))
    g.signal(signal.SIGTERM)
    assert g.wait() == 0
    assert not os.path.exists(run)          # made by idemgate: removed
    kept = os.path.join(workdir, "run-kept")
    os.mkdir(kept)
    os.chmod(kept, 0o755)
    g = gateway_factory("--runtime-dir", kept)
    g.signal(signal.SIGTERM)
    assert g.wait() == 0
    assert os.path.isdir(kept)              # given: left in place


def test_killed_idemgate_takes_nginx_down(gateway_factory):
    g = gateway_factory()
    master = g.master_pid()
    os.kill(g.proc.pid, signal.SIGKILL)
    g.wait()
    deadline = time.time() + 10
    while time.time() < deadline and port_open(g.port):
        time.sleep(0.05)
    assert not port_open(g.port)
    # the master is gone, or a zombie waiting for a reaper
    with contextlib.suppress(FileNotFoundError):
        with open("/proc/%d/stat" % master) as f:
            assert f.read().split(")")[1].split()[0] == "Z"
    for d in g.runtime_dirs():
        shutil.rmtree(d, ignore_errors=True)
