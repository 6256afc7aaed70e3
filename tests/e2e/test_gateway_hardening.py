"""End-to-end tests of the idemgate command's hardening: the Host an
HTTP/1.0 client without one is forwarded with, the workers' user (--user)
and the store files it must reach, the exact header-section limit of
--max-header-bytes, and what --client-timeout bounds.

Built on the helpers of test_gateway_cli.py: its in-process echo upstream,
its Gateway (one idemgate process on free loopback ports) and its raw
socket client.
"""

import json
import os
import pwd
import grp
import re
import socket
import subprocess
import time

import pytest
import requests

from test_gateway_cli import (BASE, BUILD, IS_ROOT, NGINX, asan_reports,
                              assert_error_body, conf_directives, echo,
                              free_port, gateway_factory, nginx_env,
                              raw_request, run_cli, workdir)

# pytest finds the imported fixtures by these names
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
