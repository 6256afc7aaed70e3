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

from test_gateway_cli import (BASE, IDEMGATE, NGINX, Gateway, asan_reports,
                              assert_error_body, conf_directives, echo,
                              free_port, gateway_factory, nginx_env, port_open,
                              run_cli, workdir)

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
