"""End-to-end tests of the idemgate command's hardening: the Host an
HTTP/1.0 client without one is forwarded with, the workers' user (--user)
and the store files it must reach, the exact header-section limit of
--max-header-bytes, and what --client-timeout bounds.

Built on the helpers of test_gateway_cli.py: its in-process echo upstream,
its Gateway (one idemgate process on free loopback ports) and its raw
socket client.
"""

import contextlib
import glob
import grp
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import time

import pytest

from test_gateway_cli import (BASE, BUILD, IDEMGATE, IS_ROOT, NGINX,
                              asan_reports, assert_error_body,
                              conf_directives, echo, free_port,
                              gateway_factory, nginx_env, raw_request,
                              run_cli, workdir)

# imported for pytest, which finds fixtures among a module's names
__all__ = ["echo", "gateway_factory", "workdir"]

INQUIRIES = os.path.join(BUILD, "inquiries")


def wait_port(port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError("exited with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("port %d did not open" % port)


@pytest.fixture
def demo_api():
    """The demo Inquiries API, which refuses an HTTP/1.1 request without
    Host (RFC 9112) the way real API servers do."""
    port = free_port()
    proc = subprocess.Popen([INQUIRIES, "--listen", "127.0.0.1:%d" % port],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    yield "http://127.0.0.1:%d" % port
    proc.terminate()
    proc.wait(5)


# --------------------------------------------------------------------------
# Host: an HTTP/1.0 request without one
# --------------------------------------------------------------------------

def test_http10_request_without_host_is_forwarded_with_the_listen_address(
        gateway_factory, echo):
    g = gateway_factory()
    status, _, body, _ = raw_request(
        g.port, b"POST /v1/h10 HTTP/1.0\r\nIdempotency-Key: k-h10-echo\r\n"
        b"Content-Length: 1\r\n\r\nx")
    assert status == 201, body
    method, path, headers = echo.seen[-1]
    assert (method, path) == ("POST", "/v1/h10")
    # what an HTTP/1.1 client connecting to the same address sends
    assert headers["Host"] == "127.0.0.1:%d" % g.port
    # a Host the client sent is still forwarded as it is
    status, _, _, _ = raw_request(
        g.port, b"POST /v1/h10 HTTP/1.0\r\nHost: api.example:8443\r\n"
        b"Content-Length: 1\r\n\r\nx")
    assert status == 201
    assert echo.seen[-1][2]["Host"] == "api.example:8443"


def test_http10_request_without_host_reaches_an_api_that_requires_host(
        gateway_factory, demo_api):
    """Before, nginx forwarded no Host at all: the demo API answered 400,
    and the key kept that 400 for its whole TTL."""
    g = gateway_factory(upstream=demo_api)
    body = json.dumps({"data": {"attributes": {"name-first": "Ada"}}}).encode()
    request = (b"POST /api/v1/inquiries HTTP/1.0\r\n"
               b"Idempotency-Key: k-h10-demo\r\n"
               b"Content-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    status, headers, first, _ = raw_request(g.port, request)
    assert status == 201, first
    assert "idempotent-replayed" not in headers
    status, headers, again, _ = raw_request(g.port, request)
    assert status == 201
    assert headers["idempotent-replayed"] == "true"
    assert again == first


@pytest.mark.parametrize("listen,value", [
    ("127.0.0.1:7201", '"" "127.0.0.1:7201";'),
    ("localhost:7201", '"" "localhost:7201";'),
    ("[::1]:7201", '"" "[::1]:7201";'),
    ("0.0.0.0:7201", '"" "$server_addr:$server_port";'),
    ("[::]:7201", '"" "[$server_addr]:$server_port";'),
])
def test_print_config_host_fallback(listen, value):
    r = run_cli("--listen", listen, "--upstream", "http://127.0.0.1:7202",
                "--print-config")
    assert r.returncode == 0, r.stderr
    d = conf_directives(r.stdout)
    assert "proxy_set_header Host $idemgate_host;" in d
    start = d.index("map $http_host $idemgate_host {")
    assert d[start + 1:start + 4] == [value, "default $http_host;", "}"]


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("wildcard,family,address", [
    ("0.0.0.0", socket.AF_INET, "127.0.0.1"),
    ("[::]", socket.AF_INET6, "::1"),
])
def test_wildcard_listen_forwards_the_connection_address_as_host(
        workdir, echo, wildcard, family, address):
    if family == socket.AF_INET6 and not ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    port = free_port()
    env = nginx_env(os.path.join(workdir, "asan"),
                    dict(os.environ, TMPDIR=workdir))
    proc = subprocess.Popen(
        [IDEMGATE, "--listen", "%s:%d" % (wildcard, port), "--upstream",
         echo.url, "--admin", "off", "--workers", "1", "--store",
         "lmdb:" + os.path.join(workdir, "store")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 15
        while True:
            assert proc.poll() is None and time.time() < deadline
            try:
                s = socket.create_connection((address, port), timeout=5)
                break
            except OSError:
                time.sleep(0.02)
        with s:
            s.sendall(b"POST /v1/wild HTTP/1.0\r\nContent-Length: 1\r\n\r\nx")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 201 "), data
        host = address if family == socket.AF_INET else "[%s]" % address
        assert echo.seen[-1][2]["Host"] == "%s:%d" % (host, port)
    finally:
        proc.terminate()
        proc.wait(15)
    assert asan_reports(os.path.join(workdir, "asan")) == ""


def test_print_config_with_wildcard_listen_is_accepted_by_nginx(workdir):
    for i, listen in enumerate(["0.0.0.0:%d" % free_port(),
                                "[::]:%d" % free_port()]):
        run = os.path.join(workdir, "run%d" % i)
        os.makedirs(run)
        r = run_cli("--listen", listen, "--upstream", "http://127.0.0.1:3000",
                    "--admin", "off", "--store",
                    "lmdb:" + os.path.join(workdir, "store"), "--print-config")
        assert r.returncode == 0, r.stderr
        conf = os.path.join(run, "nginx.conf")
        with open(conf, "w") as f:
            f.write(r.stdout)
        asan_dir = os.path.join(workdir, "asan")
        t = subprocess.run([NGINX, "-t", "-e", "stderr", "-p", run, "-c", conf],
                           env=nginx_env(asan_dir), capture_output=True,
                           text=True, timeout=20)
        assert t.returncode == 0, t.stderr
        assert asan_reports(asan_dir) == ""


# --------------------------------------------------------------------------
# --max-header-bytes: the request line, the header lines and the empty line
# that ends them, CRLFs included, exactly
# --------------------------------------------------------------------------

def section(size, head=b"GET /hdr HTTP/1.1\r\nHost: x\r\n", line=0,
            connection=b"close"):
    """A header section of exactly size bytes: head, Connection, then
    headers of line bytes each (when line is not 0) and one X-Fill header
    that makes up the rest, then the empty line."""
    out = head + b"Connection: " + connection + b"\r\n"
    rest = size - len(out) - 2
    i = 0
    while line and rest > line + 20:
        out += b"X-F%03d: " % i + b"b" * (line - 10) + b"\r\n"
        rest -= line
        i += 1
    assert rest >= 10
    out += b"X-Fill: " + b"a" * (rest - 10) + b"\r\n\r\n"
    assert len(out) == size
    return out


def statuses(port, data):
    """Sends data, reads until the gateway closes, returns the statuses of
    the responses in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return [int(x) for x in re.findall(rb"HTTP/1\.1 (\d{3}) ", buf)], buf


@pytest.mark.parametrize("flag,limit", [(None, 16384), ("1k", 1024),
                                        ("4k", 4096), ("5000", 5000)])
def test_header_limit_is_exact(gateway_factory, flag, limit):
    """A section of exactly the limit passes, one byte more gets the 431
    page, whatever the lines look like; before, nginx's two buffers let
    through up to 1 KiB more than the flag said."""
    g = gateway_factory(*(["--max-header-bytes", flag] if flag else []))
    # one long line; lines that end at other places around the 1k buffer
    # (fewer than the echo server's 100 headers); lines of 700 bytes
    for line in (0, limit // 60 + 7, 700):
        if line >= limit // 2:
            continue
        status, _, body, _ = raw_request(g.port, section(limit, line=line))
        assert status == 200, (line, body)
        status, headers, body, _ = raw_request(g.port,
                                               section(limit + 1, line=line))
        assert status == 431, (line, body)
        assert headers["content-type"] == "application/json"
        err = assert_error_body(body)
        assert err["title"] == "Request header fields too large"
        assert "%d bytes" % limit in err["details"]


def test_header_limit_holds_on_the_admin_server(gateway_factory):
    g = gateway_factory("--max-header-bytes", "2k")
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    status, _, body, _ = raw_request(g.admin_port, section(2048, head))
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body, _ = raw_request(g.admin_port, section(2049, head))
    assert status == 431
    assert_error_body(body)


def test_header_limit_comes_before_the_key(gateway_factory, echo):
    """The body does not count; a section over the limit is refused before
    the key is claimed, so the key stays free."""
    g = gateway_factory("--max-header-bytes", "3k")
    head = (b"POST /v1/hdr HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k-hdr\r\n"
            b"Content-Length: 5000\r\n")
    before = echo.count
    status, _, body, _ = raw_request(g.port, section(3073, head) + b"x" * 5000)
    assert status == 431, body
    assert echo.count == before
    status, headers, body, _ = raw_request(g.port,
                                           section(3072, head) + b"x" * 5000)
    assert status == 201, body
    assert "idempotent-replayed" not in headers
    assert echo.count == before + 1


def test_header_limit_is_exact_for_a_pipelined_request(gateway_factory):
    """A request that starts in the middle of the previous one's buffer
    still has the whole limit."""
    g = gateway_factory("--max-header-bytes", "4k")
    first = section(4096, line=97, connection=b"keep-alive")
    got, _ = statuses(g.port, first + section(4096, line=97))
    assert got == [200, 200]
    got, _ = statuses(g.port, first + section(4097, line=97))
    assert got == [200, 431]


def test_request_line_over_the_limit_is_414(gateway_factory):
    g = gateway_factory("--max-header-bytes", "2k")
    line = b"GET /" + b"u" * (2049 - 16) + b" HTTP/1.1\r\n"
    assert len(line) == 2048 + 1
    status, _, body, _ = raw_request(g.port, line + b"Host: x\r\n\r\n")
    assert status == 414
    assert "2048 bytes" in assert_error_body(body)["details"]


@pytest.mark.parametrize("limit", [1024, 1999, 4096, 9999, 10000, 16384,
                                   65535, 1048576])
def test_print_config_header_limit_regex(limit):
    """The regex nginx gets matches exactly the numbers above the limit."""
    r = run_cli(*(BASE + ["--max-header-bytes", str(limit), "--print-config"]))
    assert r.returncode == 0, r.stderr
    d = conf_directives(r.stdout)
    assert "large_client_header_buffers 2 %s;" % (
        "1m" if limit == 1048576 else "%dk" % (limit // 1024)
        if limit % 1024 == 0 else str(limit)) in d
    start = d.index("map $request_length $idemgate_header_too_large {")
    m = re.fullmatch(r'"~(.*)" 1;', d[start + 1])
    assert m and d[start + 2] == 'default "";'
    above = re.compile(m.group(1))
    for n in list(range(0, 2 * limit + 3, max(1, limit // 997))) + [
            limit - 1, limit, limit + 1, 10 * limit, 10 ** 12]:
        assert bool(above.match(str(n))) == (n > limit), n
    # every location a client reaches checks it first
    assert r.stdout.count("if ($idemgate_header_too_large) {") == 5


# --------------------------------------------------------------------------
# --user: whom the workers run as, and what they must reach
# --------------------------------------------------------------------------

needs_root = pytest.mark.skipif(not IS_ROOT,
                                reason="workers change user only under root")
OTHER = "daemon"     # a system user of every Debian machine, not nobody


def other_user():
    pw = pwd.getpwnam(OTHER)
    return pw, grp.getgrgid(pw.pw_gid).gr_name


def uid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid in /proc/%d/status" % pid)


def test_help_and_print_config_have_user(workdir):
    r = run_cli("--help")
    assert re.search(r"(?m)^  --user NAME +the workers' user when idemgate "
                     r"runs as root", r.stdout), r.stdout
    conf = os.path.join(workdir, "idemgate.conf")
    with open(conf, "w") as f:
        f.write("user = %s\n" % OTHER)
    r = run_cli(*(BASE + ["--config", conf, "--print-config"]))
    if IS_ROOT:
        assert r.returncode == 0, r.stderr
        pw, group = other_user()
        assert 'user "%s" "%s";' % (OTHER, group) in conf_directives(r.stdout)
    else:
        assert r.returncode == 2
        assert "--user: only root can run the nginx workers as" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--user", "no-such-user-x"], "--user: no user 'no-such-user-x' on this system"),
    (["--user", "a b"], "--user: 'a b' is not a user name"),
])
def test_bad_user_exits_2(args, message):
    r = run_cli(*(BASE + args + ["--print-config"]))
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["idemgate: " + message]


@needs_root
def test_user_only_works_for_root(workdir):
    """Not root, nginx ignores `user`: idemgate says so instead of running
    the workers as someone else than the flag said."""
    exe = shutil.which("setpriv")
    if exe is None:
        pytest.skip("no setpriv")
    as_other = [exe, "--reuid", OTHER, "--regid", OTHER, "--clear-groups"]
    r = subprocess.run(as_other + [IDEMGATE] + BASE + ["--user", "nobody",
                                                       "--print-config"],
                       cwd=workdir, capture_output=True, text=True, timeout=20)
    assert r.returncode == 2
    assert r.stderr == ("idemgate: --user: only root can run the nginx workers "
                        "as nobody; idemgate runs as %s, and so do they (leave "
                        "--user out, or start idemgate as root)\n" % OTHER)
    # naming the user it runs as is no change: no `user` directive
    r = subprocess.run(as_other + [IDEMGATE] + BASE + ["--user", OTHER,
                                                       "--print-config"],
                       cwd=workdir, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert not any(x.startswith("user ") for x in conf_directives(r.stdout))


@needs_root
def test_store_file_out_of_reach_is_named_without_root_too(workdir):
    """Run as another user, idemgate checks the store as itself."""
    exe = shutil.which("setpriv")
    if exe is None:
        pytest.skip("no setpriv")
    pw, _ = other_user()
    store = os.path.join(workdir, "own-store")
    os.mkdir(store, 0o700)
    os.chown(store, pw.pw_uid, pw.pw_gid)
    data = os.path.join(store, "data.mdb")
    with open(data, "w"):
        pass
    os.chmod(data, 0o600)
    r = subprocess.run([exe, "--reuid", OTHER, "--regid", OTHER,
                        "--clear-groups", IDEMGATE] + BASE +
                       ["--store", "lmdb:" + store, "--admin", "off"],
                       cwd=workdir, env=dict(os.environ, TMPDIR=workdir),
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2
    assert r.stderr == ("idemgate: --store: cannot read and write %s: "
                        "Permission denied; the store's files must be "
                        "readable and writable by idemgate's user\n" % data)


@needs_root
def test_user_runs_the_workers_and_gets_the_directories(gateway_factory,
                                                       workdir):
    pw, _ = other_user()
    g = gateway_factory("--user", OTHER, "--runtime-dir",
                        os.path.join(workdir, "run"))
    workers = g.worker_pids()
    assert workers and all(uid_of(p) == pw.pw_uid for p in workers)
    assert uid_of(g.master_pid()) == 0
    # the directories idemgate made are the workers'
    store = os.path.join(workdir, "store")
    assert os.stat(store).st_uid == pw.pw_uid
    assert os.stat(store).st_gid == pw.pw_gid
    assert os.stat(os.path.join(workdir, "run")).st_uid == pw.pw_uid
    assert g.post(key="k-user", data="x").status_code == 201
    assert g.post(key="k-user", data="x").headers["Idempotent-Replayed"] == "true"
    for name in ("data.mdb", "lock.mdb"):
        assert os.stat(os.path.join(store, name)).st_uid == pw.pw_uid


@needs_root
def test_user_can_use_a_store_nobody_cannot_reach(gateway_factory, workdir):
    pw, _ = other_user()
    private = os.path.join(workdir, "private")
    os.mkdir(private, 0o700)
    os.chown(private, pw.pw_uid, pw.pw_gid)
    g = gateway_factory("--user", OTHER, "--store",
                        "lmdb:" + os.path.join(private, "s"))
    assert g.post(key="k-private", data="x").status_code == 201
    # nobody, the default, is refused (see test_gateway_cli.py)
    r = run_cli(*(BASE + ["--store", "lmdb:" + os.path.join(private, "t")]),
                cwd=workdir, env=dict(os.environ, TMPDIR=workdir))
    assert r.returncode == 2
    assert r.stderr == (
        "idemgate: --store: the nginx workers run as nobody (idemgate runs as "
        "root) and cannot use %s/t: Permission denied; let nobody read, write "
        "and enter it, through every parent directory (or run the workers as "
        "another user with --user NAME)\n" % private)


@needs_root
def test_existing_directory_is_not_given_away(workdir):
    """Only what idemgate makes changes hands: a directory that was there
    (a mistyped --store could name a system one) keeps its owner, and one
    the workers cannot use is refused."""
    existing = os.path.join(workdir, "existing")
    os.mkdir(existing, 0o755)
    with open(os.path.join(existing, "notes"), "w") as f:
        f.write("x")
    r = run_cli(*(BASE + ["--user", OTHER, "--store", "lmdb:" + existing]),
                cwd=workdir, env=dict(os.environ, TMPDIR=workdir))
    assert r.returncode == 2
    assert r.stderr == (
        "idemgate: --store: the nginx workers run as %s (idemgate runs as "
        "root) and cannot use %s: Permission denied; let %s read, write and "
        "enter it, through every parent directory\n" % (OTHER, existing, OTHER))
    assert os.stat(existing).st_uid == 0
    assert os.stat(os.path.join(existing, "notes")).st_uid == 0


@needs_root
@pytest.mark.parametrize("name,spoil", [
    ("data.mdb", "chmod 000"),
    ("data.mdb", "root 0600"),
    ("lock.mdb", "root 0600"),
])
def test_store_file_the_workers_cannot_use_is_named(gateway_factory, workdir,
                                                    name, spoil):
    """Before, idemgate checked only the directory: nginx started and every
    request with a key got a 503."""
    g = gateway_factory("--user", OTHER)
    assert g.post(key="k-spoil", data="x").status_code == 201
    g.close()
    store = os.path.join(workdir, "store")
    path = os.path.join(store, name)
    if spoil == "chmod 000":
        os.chmod(path, 0)
    else:
        os.chown(path, 0, 0)
        os.chmod(path, 0o600)
    r = run_cli(*(BASE + ["--user", OTHER, "--store", "lmdb:" + store]),
                cwd=workdir, env=dict(os.environ, TMPDIR=workdir))
    assert r.returncode == 2
    assert r.stderr == (
        "idemgate: --store: the nginx workers run as %s (idemgate runs as "
        "root) and cannot read and write %s: Permission denied; the store's "
        "files must be readable and writable by %s\n" % (OTHER, path, OTHER))
    assert glob.glob(os.path.join(workdir, "tmp", "idemgate.*")) == []


# --------------------------------------------------------------------------
# --client-timeout: a deadline for the header section, the longest pause
# while the body arrives (nginx 1.22 has no deadline for a whole body)
# --------------------------------------------------------------------------

def closed_within(s, seconds):
    """Waits up to seconds for the peer to close s without sending a byte;
    returns whether it did."""
    s.settimeout(seconds)
    try:
        data = s.recv(65536)
    except socket.timeout:
        return False
    except ConnectionResetError:
        data = b""
    assert data == b""
    return True


def test_help_says_what_client_timeout_bounds():
    r = run_cli("--help")
    text = " ".join(r.stdout.split())
    assert ("--client-timeout DURATION the request line and headers must "
            "arrive within it; the body and the response may pause this "
            "long between two reads or writes, however long they take in "
            "all (default 30s)") in text, r.stdout


def test_client_timeout_is_a_pause_limit_for_the_body(gateway_factory, echo):
    """A body whose bytes come 0.4 s apart is read to its end although it
    takes longer than --client-timeout in all."""
    g = gateway_factory("--client-timeout", "1s")
    before = echo.count
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        s.sendall(b"POST /drip HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k-drip\r\n"
                  b"Content-Length: 6\r\nConnection: close\r\n\r\n")
        start = time.time()
        for b in b"abcdef":
            time.sleep(0.4)
            s.sendall(bytes([b]))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert time.time() - start > 2.0
    assert data.startswith(b"HTTP/1.1 201 "), data
    assert json.loads(data.partition(b"\r\n\r\n")[2])["body"] == "abcdef"
    assert echo.count == before + 1


def test_client_timeout_closes_a_body_that_pauses_too_long(gateway_factory,
                                                          echo):
    g = gateway_factory("--client-timeout", "1s")
    before = echo.count
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        s.sendall(b"POST /drip HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k-pause\r\n"
                  b"Content-Length: 6\r\n\r\n")
        for b in b"abc":
            time.sleep(0.4)
            s.sendall(bytes([b]))
        last = time.time()
        assert not closed_within(s, 0.7)
        assert closed_within(s, 1.5)
        assert 0.8 < time.time() - last < 2.2
    assert echo.count == before
    # nothing was claimed: the key is free
    r = g.post("/drip", key="k-pause", data="abcdef")
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers


def test_client_timeout_is_a_deadline_for_the_header_section(gateway_factory,
                                                            echo):
    """Header lines that come 0.3 s apart, each pause shorter than the
    timeout, are cut off once the timeout has passed since the connection
    opened."""
    g = gateway_factory("--client-timeout", "1s")
    before = echo.count
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        start = time.time()
        s.sendall(b"POST /drip HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for i in range(10):
            if closed_within(s, 0.3):
                closed = True
                break
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(b"X-Slow-%d: 1\r\n" % i)
        assert closed
        assert 0.8 < time.time() - start < 1.8
    assert echo.count == before
