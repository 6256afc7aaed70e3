"""End-to-end tests of idemgate run for real: TLS and HTTP/2 on the
listener (--tls-cert, --tls-key), https upstreams (--upstream https://,
--upstream-ca, --upstream-insecure) and several upstream servers
(--upstream repeated).

A throwaway CA and its certificates are made with the openssl command in a
temporary directory; clients are curl processes (HTTP/1.1 and HTTP/2 by
ALPN); the https upstream is a plain nginx the tests start, with TLS server
blocks in front of the in-process echo upstream of test_gateway_cli.py,
whose Gateway (one idemgate process on free loopback ports) runs the
gateway.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from test_gateway_cli import (BASE, IDEMGATE, NGINX, asan_reports,
                              assert_error_body, conf_directives, echo,
                              free_port, gateway_factory, nginx_env, port_open,
                              run_cli, sanitized, workdir)

# imported for pytest, which finds fixtures among a module's names
__all__ = ["echo", "gateway_factory", "workdir"]

IS_ROOT = os.getuid() == 0


# --------------------------------------------------------------------------
# A throwaway PKI
# --------------------------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   capture_output=True, timeout=60)


def make_cert(d, name, sans, ca="ca"):
    """name.key and name.crt, signed by ca, for the subjectAltNames sans."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
            "-subj", "/CN=" + sans[0].split(":", 1)[1], cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n" % ",".join(sans))
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt",
            "-CAkey", ca + ".key", "-CAcreateserial", "-days", "2",
            "-out", name + ".crt", "-extfile", name + ".ext", cwd=d)


class Pki:
    def __init__(self, d):
        self.dir = d
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key",
                "-out", "ca.crt", "-subj", "/CN=idemgate test CA", "-days", "2",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        make_cert(d, "server", ["DNS:localhost", "IP:127.0.0.1"])
        make_cert(d, "wrong", ["DNS:wrong.example"])
        for f in os.listdir(d):
            os.chmod(os.path.join(d, f), 0o644)

    def path(self, name):
        return os.path.join(self.dir, name)


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="idemgate-pki-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Pki(d)
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# curl
# --------------------------------------------------------------------------

class Answer:
    def __init__(self, status, version, headers, body):
        self.status = status
        self.version = version  # "1.1" or "2"
        self.headers = headers  # [(lowercase name, value)], in order
        self.body = body

    def header(self, name):
        values = [v for n, v in self.headers if n == name.lower()]
        return values[0] if values else None

    def end_to_end(self):
        """The headers a replay must repeat: all but the hop-by-hop ones
        HTTP/1.1 has and HTTP/2 has not."""
        return [(n, v) for n, v in self.headers
                if n not in ("connection", "keep-alive")]

    def json(self):
        return json.loads(self.body)


def curl_argv(url, out, version="2", key=None, data=None, cacert=None,
              headers=()):
    argv = ["curl", "-sS", "--max-time", "20",
            "--http2" if version == "2" else "--http1.1",
            "-D", out + ".h", "-o", out + ".b",
            "-w", "%{http_code} %{http_version}"]
    if cacert:
        argv += ["--cacert", cacert]
    if key is not None:
        argv += ["-H", "Idempotency-Key: " + key]
    for h in headers:
        argv += ["-H", h]
    if data is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", data]
    return argv + [url]


def read_answer(out, written):
    status, version = written.split()
    with open(out + ".h", "rb") as f:
        lines = f.read().decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    with open(out + ".b", "rb") as f:
        body = f.read()
    return Answer(int(status), version, headers, body)


def curl(tmp, url, **kw):
    out = os.path.join(tmp, "curl-%s" % os.urandom(6).hex())
    r = subprocess.run(curl_argv(url, out, **kw), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return read_answer(out, r.stdout)


def lower_keys(headers):
    return {n.lower(): v for n, v in headers.items()}


def seen(echo, key):
    """The requests with this Idempotency-Key that reached the echo API, as
    (method, path, headers with lowercase names): over HTTP/2 the names
    arrive in lowercase."""
    with echo.lock:
        requests_seen = [(m, p, lower_keys(h)) for m, p, h in echo.seen]
    return [s for s in requests_seen if s[2].get("idempotency-key") == key]


def unique(prefix):
    return "%s-%s" % (prefix, os.urandom(6).hex())


# --------------------------------------------------------------------------
# TLS on the listener: flags
# --------------------------------------------------------------------------

def test_help_lists_the_tls_and_upstream_flags():
    r = run_cli("--help")
    assert r.returncode == 0
    for flag in ["--tls-cert FILE", "--tls-key FILE", "--upstream URL",
                 "--upstream-ca FILE", "--upstream-insecure"]:
        assert flag in r.stdout, flag
    assert "https://HOST[:PORT][/prefix]" in r.stdout
    assert "repeatable" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 79


def test_print_config_tls_listener(pki, workdir):
    # relative paths start from the working directory
    shutil.copy(pki.path("server.crt"), os.path.join(workdir, "gw.crt"))
    shutil.copy(pki.path("server.key"), os.path.join(workdir, "gw.key"))
    r = run_cli(*(BASE + ["--tls-cert", "gw.crt", "--tls-key", "./gw.key",
                          "--print-config"]), cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    d = conf_directives(r.stdout)
    for line in ["listen 127.0.0.1:18080 ssl http2;",
                 'ssl_certificate "%s/gw.crt";' % workdir,
                 'ssl_certificate_key "%s/gw.key";' % workdir,
                 "ssl_protocols TLSv1.2 TLSv1.3;",
                 "ssl_session_cache shared:idemgate_tls:10m;",
                 "ssl_session_tickets off;",
                 # plain HTTP sent to the TLS port gets the JSON 400
                 "error_page 497 =400 //idemgate-error/400;",
                 "proxy_set_header X-Forwarded-Proto $scheme;"]:
        assert line in d, line
    # the admin server stays plain HTTP on loopback
    assert "listen 127.0.0.1:9090;" in d
    assert sum(1 for x in d if x.startswith("ssl_certificate ")) == 1

    plain = conf_directives(run_cli(*(BASE + ["--print-config"])).stdout)
    assert "listen 127.0.0.1:18080;" in plain
    assert not any(x.startswith("ssl_") or "497" in x for x in plain)


def test_tls_settings_in_a_config_file(pki, workdir):
    conf = os.path.join(workdir, "idemgate.conf")
    with open(conf, "w") as f:
        f.write("listen = 127.0.0.1:7443\nupstream = http://127.0.0.1:7000\n"
                "tls-cert = %s\ntls_key = %s\n"
                % (pki.path("server.crt"), pki.path("server.key")))
    r = run_cli("--config", conf, "--print-config", cwd=workdir)
    assert r.returncode == 0, r.stderr
    d = conf_directives(r.stdout)
    assert "listen 127.0.0.1:7443 ssl http2;" in d
    assert 'ssl_certificate_key "%s";' % pki.path("server.key") in d


def tls_bad_cases(pki, workdir):
    cert, key = pki.path("server.crt"), pki.path("server.key")
    notpem = os.path.join(workdir, "notpem")
    with open(notpem, "w") as f:
        f.write("hello\n")
    return [
        (["--tls-cert", cert], "--tls-cert needs --tls-key FILE"),
        (["--tls-key", key], "--tls-key needs --tls-cert FILE"),
        (["--tls-cert", "/nonexistent/c.pem", "--tls-key", key],
         "--tls-cert: cannot read /nonexistent/c.pem: No such file or directory"),
        (["--tls-cert", cert, "--tls-key", "/nonexistent/k.pem"],
         "--tls-key: cannot read /nonexistent/k.pem: No such file or directory"),
        # a directory opens, but cannot be read
        (["--tls-cert", workdir, "--tls-key", key],
         "--tls-cert: cannot read %s: Is a directory" % workdir),
        (["--tls-cert", notpem, "--tls-key", key],
         "--tls-cert: %s holds no PEM certificate" % notpem),
        (["--tls-cert", cert, "--tls-key", notpem],
         "--tls-key: %s holds no unencrypted PEM private key" % notpem),
        (["--tls-cert", cert, "--tls-key", pki.path("wrong.key")],
         "--tls-key: %s is not the key of the certificate in %s"
         % (pki.path("wrong.key"), cert)),
        (["--tls-cert", "/tmp/$x.pem", "--tls-key", key],
         "--tls-cert: '/tmp/$x.pem': the path may not contain '$'"),
    ]


def test_bad_tls_flags_exit_2_with_one_clear_line(pki, workdir):
    for args, message in tls_bad_cases(pki, workdir):
        for tail in (["--print-config"], []):
            r = run_cli(*(BASE + args + tail), cwd=workdir)
            assert r.returncode == 2, (args, r.stderr)
            lines = r.stderr.splitlines()
            assert len(lines) == 1, r.stderr
            assert lines[0].startswith("idemgate: " + message), lines[0]
            assert r.stdout == ""


def test_an_encrypted_key_is_refused_not_prompted_for(pki, workdir):
    enc = os.path.join(workdir, "enc.key")
    openssl("pkey", "-in", pki.path("server.key"), "-aes256", "-passout",
            "pass:secret", "-out", enc, cwd=workdir)
    r = subprocess.run([IDEMGATE] + BASE +
                       ["--tls-cert", pki.path("server.crt"), "--tls-key", enc,
                        "--print-config"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "--tls-key: %s holds no unencrypted PEM private key" % enc in r.stderr


def test_print_config_tls_is_accepted_by_nginx(pki, workdir):
    for extra in (["--tls-cert", pki.path("server.crt"),
                   "--tls-key", pki.path("server.key")],
                  ["--tls-cert", pki.path("server.crt"),
                   "--tls-key", pki.path("server.key"),
                   "--upstream", "https://localhost:3443/p",
                   "--upstream", "https://localhost:3444/p",
                   "--upstream-ca", pki.path("ca.crt")],
                  ["--upstream", "https://localhost", "--upstream-insecure"],
                  ["--upstream", "http://127.0.0.1:3000",
                   "--upstream", "http://127.0.0.1:3001"]):
        run = tempfile.mkdtemp(dir=workdir)
        upstream = ([] if "--upstream" in extra
                    else ["--upstream", "http://127.0.0.1:3000"])
        r = run_cli(*(["--listen", "127.0.0.1:%d" % free_port()] + upstream +
                      ["--admin", "127.0.0.1:%d" % free_port(),
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
        assert t.returncode == 0, (extra, t.stderr)
        assert asan_reports(asan_dir) == ""


# --------------------------------------------------------------------------
# TLS on the listener: behaviour over HTTP/1.1 and HTTP/2
# --------------------------------------------------------------------------

@pytest.fixture
def tls_gw(gateway_factory, pki):
    g = gateway_factory("--tls-cert", pki.path("server.crt"),
                        "--tls-key", pki.path("server.key"), "--wait", "10s")
    g.https = "https://127.0.0.1:%d" % g.port
    return g


@pytest.mark.parametrize("first,second", [("1.1", "1.1"), ("2", "2"),
                                          ("1.1", "2"), ("2", "1.1")])
def test_tls_keyed_post_executes_once_and_replays_byte_identical(
        tls_gw, echo, pki, workdir, first, second):
    key = unique("tls-replay")
    body = '{"amount": 100, "currency": "eur"}'
    a = curl(workdir, tls_gw.https + "/v1/charges", version=first, key=key,
             data=body, cacert=pki.path("ca.crt"))
    assert a.version == first
    assert a.status == 201
    assert a.header("idempotent-replayed") is None
    assert a.json()["body"] == body
    # the API learns that the client spoke TLS
    assert seen(echo, key)[0][2].get("x-forwarded-proto") == "https"

    # the same request again, the members in another order
    b = curl(workdir, tls_gw.https + "/v1/charges", version=second, key=key,
             data='{"currency":"eur","amount":100}', cacert=pki.path("ca.crt"))
    assert b.version == second
    assert b.status == 201
    assert b.header("idempotent-replayed") == "true"
    assert b.body == a.body
    for h in a.end_to_end():
        assert h in b.headers, h
    assert len(seen(echo, key)) == 1


@pytest.mark.parametrize("version", ["1.1", "2"])
def test_tls_key_reused_with_other_parameters_is_400(tls_gw, echo, pki,
                                                     workdir, version):
    key = unique("tls-mismatch")
    a = curl(workdir, tls_gw.https + "/v1/charges", version=version, key=key,
             data='{"amount":1}', cacert=pki.path("ca.crt"))
    assert a.status == 201
    b = curl(workdir, tls_gw.https + "/v1/charges", version=version, key=key,
             data='{"amount":2}', cacert=pki.path("ca.crt"))
    assert b.version == version
    assert b.status == 400
    assert b.header("content-type") == "application/json"
    err = assert_error_body(b.body)
    assert err["title"] == "Idempotency error"
    assert "Try using a key other than '%s'" % key in err["details"]
    # the stored record is unchanged, and the API ran once
    c = curl(workdir, tls_gw.https + "/v1/charges", version=version, key=key,
             data='{"amount":1}', cacert=pki.path("ca.crt"))
    assert c.status == 201 and c.body == a.body
    assert len(seen(echo, key)) == 1


@pytest.mark.parametrize("version", ["1.1", "2"])
def test_tls_concurrent_duplicates_reach_the_api_once(tls_gw, echo, pki,
                                                      workdir, version):
    key = unique("tls-dup")
    procs = []
    for i in range(6):
        out = os.path.join(workdir, "dup-%s-%d" % (version, i))
        argv = curl_argv(tls_gw.https + "/sleep/1", out, version=version,
                         key=key, data='{"n":1}', cacert=pki.path("ca.crt"))
        procs.append((out, subprocess.Popen(argv, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE,
                                            text=True)))
    answers = []
    for out, p in procs:
        written, errors = p.communicate(timeout=30)
        assert p.returncode == 0, errors
        answers.append(read_answer(out, written))
    assert len(seen(echo, key)) == 1
    assert all(a.version == version for a in answers)
    assert all(a.status == 201 for a in answers), [a.status for a in answers]
    assert len({a.body for a in answers}) == 1
    replayed = [a for a in answers if a.header("idempotent-replayed") == "true"]
    assert len(replayed) == len(answers) - 1


def test_plain_http_on_the_tls_port_gets_the_json_400(tls_gw):
    r = requests.get("http://127.0.0.1:%d/v1/things" % tls_gw.port, timeout=5)
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/json"
    assert assert_error_body(r.content)["title"] == "Bad request"


def tls_handshake(port, cafile, alpn, version):
    """(the ALPN protocol chosen, the TLS version) of one handshake."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(alpn)
    ctx.minimum_version = ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.selected_alpn_protocol(), s.version()


def test_tls_listener_offers_h2_and_http11_by_alpn(tls_gw, pki):
    ca = pki.path("ca.crt")
    v12, v13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    assert tls_handshake(tls_gw.port, ca, ["h2", "http/1.1"], v13) == \
        ("h2", "TLSv1.3")
    assert tls_handshake(tls_gw.port, ca, ["http/1.1"], v13) == \
        ("http/1.1", "TLSv1.3")
    assert tls_handshake(tls_gw.port, ca, ["h2", "http/1.1"], v12) == \
        ("h2", "TLSv1.2")


# --------------------------------------------------------------------------
# https upstreams
# --------------------------------------------------------------------------

UPSTREAM_NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log info;
{user}
events {{ worker_connections 256; }}

http {{
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    log_format conn '$server_port $connection $connection_requests $ssl_server_name';
    access_log {run}/access.log conn;
    keepalive_timeout 60s;

    # what the gateway sends reaches the echo API as it was sent
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;

    server {{
        listen 127.0.0.1:{good} ssl;
        ssl_certificate {pki}/server.crt;
        ssl_certificate_key {pki}/server.key;
        location / {{
            proxy_pass http://127.0.0.1:{echo};
            add_header X-SNI $ssl_server_name always;
        }}
    }}

    server {{
        listen 127.0.0.1:{wrong} ssl;
        ssl_certificate {pki}/wrong.crt;
        ssl_certificate_key {pki}/wrong.key;
        location / {{
            proxy_pass http://127.0.0.1:{echo};
        }}
    }}
}}
"""


class TlsUpstream:
    """A plain nginx with two TLS server blocks in front of the echo API:
    `good` has a certificate for localhost and 127.0.0.1, `wrong` one for
    wrong.example; both from the test CA."""

    def __init__(self, pki, echo):
        self.run = tempfile.mkdtemp(prefix="idemgate-tlsup-", dir="/tmp")
        os.chmod(self.run, 0o755)
        self.good, self.wrong = free_port(), free_port()
        conf = os.path.join(self.run, "nginx.conf")
        with open(conf, "w") as f:
            f.write(UPSTREAM_NGINX_CONF.format(
                run=self.run, pki=pki.dir, echo=echo.port, good=self.good,
                wrong=self.wrong,
                user="user nobody nogroup;" if IS_ROOT else ""))
        self.proc = subprocess.Popen([NGINX, "-p", self.run, "-c", conf],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.time() + 10
        while not (port_open(self.good) and port_open(self.wrong)):
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError("the TLS upstream did not start:\n"
                                     + self.error_log())
            time.sleep(0.02)

    def error_log(self):
        with contextlib.suppress(OSError):
            with open(os.path.join(self.run, "error.log")) as f:
                return f.read()
        return ""

    def connections(self, port):
        """(connection, requests on it, SNI) of each request on a port."""
        with contextlib.suppress(OSError):
            with open(os.path.join(self.run, "access.log")) as f:
                rows = [line.split() for line in f]
            return [(r[1], int(r[2]), r[3] if len(r) > 3 else "")
                    for r in rows if r and r[0] == str(port)]
        return []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.run, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_upstream(pki, echo):
    up = TlsUpstream(pki, echo)
    yield up
    up.stop()


def test_print_config_https_upstream(pki):
    r = run_cli("--listen", "127.0.0.1:8080", "--upstream",
                "https://api.example.com/v1/", "--print-config")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    d = conf_directives(r.stdout)
    for line in ["server api.example.com:443;", "keepalive 512;",
                 'proxy_set_header Host "api.example.com";',
                 "proxy_set_header X-Forwarded-Host $idemgate_host;",
                 "proxy_ssl_protocols TLSv1.2 TLSv1.3;",
                 "proxy_ssl_server_name on;",
                 'proxy_ssl_name "api.example.com";',
                 "proxy_ssl_verify on;", "proxy_ssl_verify_depth 4;",
                 'proxy_ssl_trusted_certificate '
                 '"/etc/ssl/certs/ca-certificates.crt";',
                 "proxy_ssl_session_reuse on;",
                 'proxy_pass "https://idemgate_upstream/v1$request_uri";']:
        assert line in d, line
    assert "proxy_set_header Host $idemgate_host;" not in d

    # a port other than 443 is part of the Host; --upstream-ca replaces
    # the system bundle
    r = run_cli("--listen", "127.0.0.1:8080", "--upstream",
                "https://localhost:8443", "--upstream-ca", pki.path("ca.crt"),
                "--print-config")
    assert r.returncode == 0, r.stderr
    d = conf_directives(r.stdout)
    for line in ["server localhost:8443;",
                 'proxy_set_header Host "localhost:8443";',
                 'proxy_ssl_name "localhost";',
                 'proxy_ssl_trusted_certificate "%s";' % pki.path("ca.crt"),
                 "proxy_pass https://idemgate_upstream;"]:
        assert line in d, line

    # plain http upstreams keep the client's Host and have no proxy_ssl_
    d = conf_directives(run_cli(*(BASE + ["--print-config"])).stdout)
    assert "proxy_set_header Host $idemgate_host;" in d
    assert not any(x.startswith("proxy_ssl") for x in d)


def test_upstream_insecure_is_explicit_and_warned_about():
    r = run_cli("--listen", "127.0.0.1:8080", "--upstream",
                "https://localhost:8443", "--upstream-insecure",
                "--print-config")
    assert r.returncode == 0
    assert r.stderr == ("idemgate: warning: --upstream-insecure: the "
                        "upstream's certificate and name are not verified\n")
    d = conf_directives(r.stdout)
    assert "proxy_ssl_verify off;" in d
    assert not any(x.startswith("proxy_ssl_trusted_certificate") for x in d)


def upstream_bad_cases(pki, workdir):
    notpem = os.path.join(workdir, "notpem")
    with open(notpem, "w") as f:
        f.write("hello\n")
    L = ["--listen", "127.0.0.1:8080"]
    https = L + ["--upstream", "https://localhost:8443"]
    return [
        (BASE + ["--upstream-ca", pki.path("ca.crt")],
         "--upstream-ca is only for https:// upstreams"),
        (BASE + ["--upstream-insecure"],
         "--upstream-insecure is only for https:// upstreams"),
        (https + ["--upstream-ca", pki.path("ca.crt"), "--upstream-insecure"],
         "--upstream-ca and --upstream-insecure exclude each other"),
        (https + ["--upstream-ca", "/nonexistent/ca.pem"],
         "--upstream-ca: cannot read /nonexistent/ca.pem: No such file or "
         "directory"),
        (https + ["--upstream-ca", notpem],
         "--upstream-ca: %s holds no PEM certificate" % notpem),
        (https + ["--upstream-insecure=maybe"],
         "--upstream-insecure: invalid value 'maybe' (true or false)"),
        (L + ["--upstream", "https://"],
         "--upstream: 'https://' is not an https://HOST[:PORT][/prefix] URL"),
        (L + ["--upstream", "https://localhost:0"],
         "--upstream: 'https://localhost:0' is not an https://"),
        (L + ["--upstream", "https://localhost/a$b"],
         "the path prefix may not contain '$'"),
        (L + ["--upstream", "https://127.0.0.1:8080"],
         "--upstream: 127.0.0.1:8080 is the gateway's own --listen address"),
    ]


def test_bad_upstream_tls_flags_exit_2_with_one_clear_line(pki, workdir):
    for args, message in upstream_bad_cases(pki, workdir):
        r = run_cli(*(args + ["--print-config"]), cwd=workdir)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith("idemgate: ") and message in lines[0], \
            (message, lines[0])
        assert r.stdout == ""


def test_https_upstream_verified_with_upstream_ca(gateway_factory, echo, pki,
                                                  tls_upstream):
    url = "https://localhost:%d" % tls_upstream.good
    g = gateway_factory("--upstream-ca", pki.path("ca.crt"), upstream=url)
    key = unique("https-up")
    r = g.post(key=key, data="one", headers={"Host": "client.example"})
    assert r.status_code == 201, r.text
    assert r.json()["body"] == "one"
    # SNI and Host name the upstream, not the gateway the client called
    assert r.headers["X-SNI"] == "localhost"
    (method, path, headers), = seen(echo, key)
    assert headers["host"] == "localhost:%d" % tls_upstream.good
    assert headers["x-forwarded-host"] == "client.example"
    assert headers["x-forwarded-proto"] == "http"

    again = g.post(key=key, data="one")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == r.content
    assert len(seen(echo, key)) == 1

    # keepalive: the next requests ride the same TLS connection
    for i in range(3):
        assert g.post(key=unique("https-ka"), data="x").status_code == 201
    conns = tls_upstream.connections(tls_upstream.good)
    assert conns[-1][1] >= 2, conns
    assert conns[-1][2] == "localhost"


def assert_refused_and_nothing_stored(g, echo, key):
    r = g.post(key=key, data="must not run")
    assert r.status_code == 502, r.text
    err = assert_error_body(r.content)
    assert "nothing was executed" in err["details"]
    assert seen(echo, key) == []
    # the key was freed, not stored as executed
    admin = requests.get(g.admin_url + "/keys/" + key, timeout=5)
    assert admin.status_code == 404, admin.text
    return r


def test_https_upstream_with_a_wrong_name_is_refused(gateway_factory, echo,
                                                     pki, tls_upstream,
                                                     workdir):
    # the certificate chains to the CA given, but names wrong.example
    url = "https://localhost:%d" % tls_upstream.wrong
    g = gateway_factory("--upstream-ca", pki.path("ca.crt"), upstream=url)
    key = unique("https-wrong")
    assert_refused_and_nothing_stored(g, echo, key)
    assert "certificate" in g.stderr() and "upstream" in g.stderr()
    assert tls_upstream.connections(tls_upstream.wrong) == []
    g.close()

    # the same store, the right upstream: the key executes, once
    fixed = gateway_factory("--upstream-ca", pki.path("ca.crt"),
                            upstream="https://localhost:%d" % tls_upstream.good)
    r = fixed.post(key=key, data="must not run")
    assert r.status_code == 201
    assert "Idempotent-Replayed" not in r.headers
    assert len(seen(echo, key)) == 1


def test_https_upstream_not_in_the_system_bundle_is_refused(
        gateway_factory, echo, tls_upstream):
    # verification is on by default: the test CA is in no system bundle
    g = gateway_factory(upstream="https://localhost:%d" % tls_upstream.good)
    assert_refused_and_nothing_stored(g, echo, unique("https-untrusted"))


def test_https_upstream_insecure_skips_verification(gateway_factory, echo,
                                                    tls_upstream):
    g = gateway_factory("--upstream-insecure",
                        upstream="https://localhost:%d" % tls_upstream.wrong)
    key = unique("https-insecure")
    r = g.post(key=key, data="x")
    assert r.status_code == 201, r.text
    assert len(seen(echo, key)) == 1
    assert "warning: --upstream-insecure" in g.stderr()


def test_tls_end_to_end_with_http2(gateway_factory, echo, pki, tls_upstream,
                                   workdir):
    """TLS and HTTP/2 on the listener, TLS to the upstream."""
    g = gateway_factory("--tls-cert", pki.path("server.crt"),
                        "--tls-key", pki.path("server.key"),
                        "--upstream-ca", pki.path("ca.crt"),
                        upstream="https://localhost:%d/api" % tls_upstream.good)
    key = unique("tls-both")
    url = "https://127.0.0.1:%d/v1/x?a=1" % g.port
    a = curl(workdir, url, key=key, data="{}", cacert=pki.path("ca.crt"))
    assert (a.status, a.version) == (201, "2")
    assert a.json()["path"] == "/api/v1/x?a=1"
    b = curl(workdir, url, key=key, data="{}", cacert=pki.path("ca.crt"))
    assert b.header("idempotent-replayed") == "true" and b.body == a.body
    (method, path, headers), = seen(echo, key)
    assert headers["x-forwarded-proto"] == "https"


# --------------------------------------------------------------------------
# Several upstream servers
# --------------------------------------------------------------------------

def test_print_config_several_upstreams():
    r = run_cli("--listen", "127.0.0.1:8080",
                "--upstream", "http://10.0.0.1:3000/api",
                "--upstream", "http://10.0.0.2:3001/api/",
                "--upstream", "http://api.internal:3002/api",
                "--methods", "POST,PATCH", "--print-config")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    d = conf_directives(text)
    assert d.count("upstream idemgate_upstream {") == 1
    block = d[d.index("upstream idemgate_upstream {"):]
    block = block[:block.index("}")]
    assert block[1:] == ["server 10.0.0.1:3000;", "server 10.0.0.2:3001;",
                         "server api.internal:3002;", "keepalive 512;",
                         "keepalive_requests 10000;",
                         "keepalive_timeout 4s;"]
    assert 'proxy_pass "http://idemgate_upstream/api$request_uri";' in d
    # a failed connect goes to the next server; nothing sent is retried
    # for POST or PATCH: nginx's non_idempotent is never set
    assert "proxy_next_upstream error timeout;" in d
    assert "non_idempotent" not in text
    assert "proxy_set_header Host $idemgate_host;" in d


def test_print_config_several_https_upstreams_of_one_name(pki):
    r = run_cli("--listen", "127.0.0.1:8080",
                "--upstream", "https://localhost:8443",
                "--upstream", "https://localhost:8444",
                "--upstream-ca", pki.path("ca.crt"), "--print-config")
    assert r.returncode == 0, r.stderr
    d = conf_directives(r.stdout)
    for line in ["server localhost:8443;", "server localhost:8444;",
                 'proxy_ssl_name "localhost";',
                 # no one port: the Host is the name alone
                 'proxy_set_header Host "localhost";']:
        assert line in d, line


def test_upstreams_in_a_config_file(workdir):
    conf = os.path.join(workdir, "idemgate.conf")
    with open(conf, "w") as f:
        f.write("listen = 127.0.0.1:8080\n"
                "upstream = http://127.0.0.1:3000\n"
                "upstream = http://127.0.0.1:3001\n")
    d = conf_directives(run_cli("--config", conf, "--print-config").stdout)
    assert "server 127.0.0.1:3000;" in d and "server 127.0.0.1:3001;" in d
    # the command line replaces the file's list
    r = run_cli("--config", conf, "--upstream", "http://127.0.0.1:4000",
                "--print-config")
    d = conf_directives(r.stdout)
    assert [x for x in d if x.startswith("server 127.")] == ["server 127.0.0.1:4000;"]


SEVERAL_BAD = [
    (["--upstream", "http://127.0.0.1:3000", "--upstream", "https://localhost:3443"],
     "--upstream: 'http://127.0.0.1:3000' and 'https://localhost:3443' mix "
     "http:// and https:// (one scheme for every server)"),
    (["--upstream", "http://127.0.0.1:3000/a", "--upstream", "http://127.0.0.1:3001/b"],
     "--upstream: 'http://127.0.0.1:3000/a' and 'http://127.0.0.1:3001/b' "
     "have different path prefixes (one prefix for every server)"),
    (["--upstream", "https://a.example", "--upstream", "https://b.example"],
     "--upstream: 'https://a.example' and 'https://b.example' have different "
     "host names"),
    (["--upstream", "http://127.0.0.1:3000", "--upstream", "http://127.0.0.1:3001",
      "--methods", "POST,PUT"],
     "--methods: PUT and DELETE cannot take part with several --upstream servers"),
    (["--upstream", "http://127.0.0.1:3000", "--upstream", "http://127.0.0.1:3001",
      "--methods", "DELETE"],
     "--methods: PUT and DELETE cannot take part with several --upstream servers"),
    (["--upstream", "http://127.0.0.1:3000", "--upstream", "http://127.0.0.1:8080"],
     "--upstream: 127.0.0.1:8080 is the gateway's own --listen address"),
    (["--upstream", "http://127.0.0.1:3000", "--upstream", "http://127.0.0.1"],
     "--upstream: 'http://127.0.0.1' is not an http://HOST:PORT[/prefix] URL "
     "(the port is required)"),
]


@pytest.mark.parametrize("args,message", SEVERAL_BAD)
def test_bad_upstream_lists_exit_2_with_one_clear_line(args, message):
    r = run_cli(*(["--listen", "127.0.0.1:8080"] + args + ["--print-config"]))
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("idemgate: " + message), r.stderr


class ResetServer:
    """An upstream that reads a whole request, then resets the connection
    (SO_LINGER 0): the request was sent, no answer comes back."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.lock = threading.Lock()
        self.requests = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.reset_after_request, args=(conn,),
                             daemon=True).start()

    def reset_after_request(self, conn):
        data = b""
        with conn:
            conn.settimeout(10)
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(body) < length:
                    body += conn.recv(65536)
            except OSError:
                return
            with self.lock:
                self.requests.append(head)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def close(self):
        self.sock.close()


@pytest.fixture
def reset_server():
    s = ResetServer()
    yield s
    s.close()


def test_a_failed_connect_goes_to_the_next_server(gateway_factory, echo):
    dead = "http://127.0.0.1:%d" % free_port()
    # the dead server first: nginx's round robin starts with it
    g = gateway_factory("--upstream", echo.url, upstream=dead)
    keys = [unique("failover") for _ in range(6)]
    for key in keys:
        r = g.post(key=key, data="x")
        assert r.status_code == 201, r.text
        assert "Idempotent-Replayed" not in r.headers
    for key in keys:
        assert len(seen(echo, key)) == 1
        r = g.post(key=key, data="x")
        assert r.headers.get("Idempotent-Replayed") == "true"
        assert len(seen(echo, key)) == 1
    assert "Connection refused" in g.stderr()


def test_all_servers_down_is_502_and_frees_the_key(gateway_factory, echo):
    g = gateway_factory("--upstream", "http://127.0.0.1:%d" % free_port(),
                        upstream="http://127.0.0.1:%d" % free_port())
    key = unique("all-down")
    r = g.post(key=key, data="x")
    assert r.status_code == 502
    assert "nothing was executed" in assert_error_body(r.content)["details"]
    assert requests.get(g.admin_url + "/keys/" + key, timeout=5).status_code == 404


def test_a_request_sent_then_reset_is_not_retried_on_the_next_server(
        gateway_factory, echo, reset_server):
    # the resetting server first: nginx's round robin starts with it
    g = gateway_factory("--upstream", echo.url, upstream=reset_server.url)
    answers = {}
    for i in range(4):
        key = unique("reset")
        answers[key] = g.post(key=key, data="charge %d" % i)
    reset = [k for k, r in answers.items() if r.status_code == 502]
    assert reset, {k: r.status_code for k, r in answers.items()}
    assert len(reset) == len(reset_server.requests)
    for key, r in answers.items():
        if key in reset:
            # sent, then no answer: the outcome is unknown, and the other
            # server never saw the request
            assert assert_error_body(r.content)["title"] == \
                "Upstream outcome unknown"
            assert seen(echo, key) == []
            again = g.post(key=key, data="charge %d" % list(answers).index(key))
            assert again.status_code == 502
            assert again.headers.get("Idempotent-Replayed") == "true"
            assert again.content == r.content
            assert seen(echo, key) == []
        else:
            assert r.status_code == 201
            assert len(seen(echo, key)) == 1
    assert len(reset_server.requests) == len(reset)


def test_an_https_upstream_named_by_ip_address_is_warned_about():
    for url, host in (("https://10.0.0.1", "10.0.0.1"),
                      ("https://[::1]:8443", "[::1]")):
        r = run_cli("--listen", "127.0.0.1:8080", "--upstream", url,
                    "--print-config")
        assert r.returncode == 0
        assert r.stderr.startswith("idemgate: warning: --upstream: %s is an "
                                   "IP address; nginx verifies" % host), \
            r.stderr
    r = run_cli("--listen", "127.0.0.1:8080", "--upstream", "https://localhost",
                "--print-config")
    assert r.stderr == ""


def test_an_https_upstream_named_by_ip_address_is_refused(
        gateway_factory, echo, pki, tls_upstream):
    """The certificate lists IP:127.0.0.1, which nginx 1.22 does not check:
    the name must be a DNS name of the certificate."""
    g = gateway_factory("--upstream-ca", pki.path("ca.crt"),
                        upstream="https://127.0.0.1:%d" % tls_upstream.good)
    assert_refused_and_nothing_stored(g, echo, unique("https-ip"))
    assert 'upstream SSL certificate does not match "127.0.0.1"' in g.stderr()


def test_tls_and_upstream_settings_are_valgrind_clean(pki, workdir):
    if shutil.which("valgrind") is None:
        pytest.skip("no valgrind")
    if sanitized():
        pytest.skip("idemgate is built with a sanitizer")
    cert, key, ca = (pki.path("server.crt"), pki.path("server.key"),
                     pki.path("ca.crt"))
    for args in (["--tls-cert", cert, "--tls-key", key,
                  "--upstream", "https://localhost:8443/a",
                  "--upstream", "https://localhost:8444/a",
                  "--upstream-ca", ca, "--print-config"],
                 ["--upstream", "http://127.0.0.1:3000",
                  "--upstream", "http://127.0.0.1:3001", "--print-config"],
                 ["--tls-cert", cert, "--tls-key", pki.path("wrong.key"),
                  "--upstream", "http://127.0.0.1:3000", "--print-config"],
                 ["--upstream", "https://a.example",
                  "--upstream", "http://b.example:1", "--print-config"],
                 ["--upstream", "https://localhost", "--upstream-ca",
                  "/nonexistent", "--print-config"]):
        r = subprocess.run(["valgrind", "-q", "--leak-check=full",
                            "--show-leak-kinds=all",
                            "--errors-for-leak-kinds=all",
                            "--error-exitcode=99", IDEMGATE,
                            "--listen", "127.0.0.1:8080"] + args,
                           capture_output=True, text=True, cwd=workdir,
                           timeout=120)
        assert r.returncode in (0, 2), r.stderr
        assert "==" not in r.stderr, r.stderr


def test_header_limit_over_http2(gateway_factory, echo, pki, workdir):
    """HTTP/1.1 over TLS keeps the exact 431; over HTTP/2 nginx 1.22 counts
    the header block as HPACK sends it and, past twice the limit decoded,
    ends the connection instead of answering. Either way nothing reaches
    the API."""
    g = gateway_factory("--tls-cert", pki.path("server.crt"),
                        "--tls-key", pki.path("server.key"),
                        "--max-header-bytes", "4k")
    url = "https://127.0.0.1:%d/v1/big" % g.port
    key = unique("h2-big")
    # incompressible values: 4 x 2500 bytes, over 2 x 4k decoded
    big = ["X-Big-%d: %s" % (i, os.urandom(1875).hex()[:2500])
           for i in range(4)]
    a = curl(workdir, url, version="1.1", key=key, data="{}",
             cacert=pki.path("ca.crt"), headers=big)
    assert a.status == 431
    out = os.path.join(workdir, "h2-big")
    r = subprocess.run(curl_argv(url, out, version="2", key=key, data="{}",
                                 cacert=pki.path("ca.crt"), headers=big),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and r.stdout.startswith("000"), (r.stdout,
                                                              r.stderr)
    assert seen(echo, key) == []
    # within the limit, HTTP/2 is served
    small = curl(workdir, url, version="2", key=key, data="{}",
                 cacert=pki.path("ca.crt"), headers=big[:1])
    assert small.status == 201 and len(seen(echo, key)) == 1


def served_cert(port, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert(binary_form=True)


def pem_to_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_sighup_serves_a_renewed_certificate(gateway_factory, echo, pki,
                                            workdir):
    cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
    shutil.copy(pki.path("server.crt"), cert)
    shutil.copy(pki.path("server.key"), key)
    g = gateway_factory("--tls-cert", cert, "--tls-key", key)
    ca = pki.path("ca.crt")
    assert served_cert(g.port, ca) == pem_to_der(pki.path("server.crt"))
    url = "https://127.0.0.1:%d/v1/renew" % g.port
    k = unique("renew")
    first = curl(workdir, url, key=k, data="{}", cacert=ca)
    assert first.status == 201

    # renewal: the files are replaced, then idemgate gets SIGHUP
    name = "renewed-%s" % os.urandom(4).hex()
    make_cert(pki.dir, name, ["DNS:localhost", "IP:127.0.0.1"])
    shutil.copy(pki.path(name + ".crt"), cert)
    shutil.copy(pki.path(name + ".key"), key)
    g.signal(signal.SIGHUP)
    want = pem_to_der(pki.path(name + ".crt"))
    deadline = time.time() + 15
    while served_cert(g.port, ca) != want:
        assert time.time() < deadline, "the renewed certificate is not served"
        time.sleep(0.1)
    # keys survive the reload
    again = curl(workdir, url, key=k, data="{}", cacert=ca)
    assert again.header("idempotent-replayed") == "true"
    assert again.body == first.body
    assert len(seen(echo, k)) == 1
