"""End-to-end tests of what the fingerprint compares (SPEC §4): fields left
out with idempotency_fingerprint_ignore / --fingerprint-ignore, headers
brought in with idempotency_fingerprint_header / --fingerprint-header, and
the admin key inspection that shows both.

Real nginx with the module (conftest's Gateway) and the idemgate command
(test_gateway_cli's Gateway), both in front of the echo server of
test_gateway_cli, which counts what it executes and says so in its body.
"""

import json
import os
import socket
import subprocess
import tempfile
import urllib.parse

import pytest
import requests

import test_gateway_cli as cli
from conftest import MODULE, NGINX, Gateway, unique_key
# the idemgate command's fixtures (its gateway_factory, not conftest's)
from test_gateway_cli import echo, gateway_factory, workdir  # noqa: F401

MISMATCH = ("Keys for idempotent requests can only be used with the same "
            "parameters they were first used with.")


def body(client_time, order="ord_1", amount=100):
    return {"amount": amount,
            "metadata": {"client_time": client_time, "order": order}}


def post_json(url, key, doc, headers=None, path="/v1/charges"):
    h = {"Idempotency-Key": key, "Content-Type": "application/json"}
    h.update(headers or {})
    return requests.post(url + path, data=json.dumps(doc), headers=h,
                         timeout=10)


def post_form(url, key, form, query="", path="/v1/charges"):
    h = {"Idempotency-Key": key,
         "Content-Type": "application/x-www-form-urlencoded"}
    target = url + path + ("?" + query if query else "")
    return requests.post(target, data=form, headers=h, timeout=10)


def assert_replay_of(first, again):
    assert again.status_code == first.status_code
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.content == first.content


def assert_mismatch(r, key):
    assert r.status_code == 400, r.text
    assert r.headers.get("Idempotent-Replayed") is None
    details = r.json()["errors"][0]["details"]
    assert details.startswith(MISMATCH)
    assert key in details


@pytest.fixture
def module_gateway(echo):
    made = []

    def make(*directives, extra_locations=""):
        g = Gateway(echo, directives=list(directives),
                    extra_locations=extra_locations)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


# --------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------

def test_module_ignored_member_replays(module_gateway, echo):
    g = module_gateway("idempotency_fingerprint_ignore /metadata/client_time;")
    key = unique_key()
    first = post_json(g.url, key, body(client_time=1700000000))
    assert first.status_code == 201
    before = echo.count
    # the SDK's retry carries a new timestamp: still the same request
    again = post_json(g.url, key, body(client_time=1700000042))
    assert_replay_of(first, again)
    # present or absent alike
    doc = body(0)
    del doc["metadata"]["client_time"]
    assert_replay_of(first, post_json(g.url, key, doc))
    assert echo.count == before


def test_module_other_values_still_mismatch(module_gateway, echo):
    g = module_gateway("idempotency_fingerprint_ignore /metadata/client_time;")
    key = unique_key()
    assert post_json(g.url, key, body(1)).status_code == 201
    before = echo.count
    assert_mismatch(post_json(g.url, key, body(2, order="ord_2")), key)
    assert_mismatch(post_json(g.url, key, body(2, amount=101)), key)
    # the same name elsewhere is another value
    doc = body(1)
    doc["client_time"] = 5
    assert_mismatch(post_json(g.url, key, doc), key)
    assert echo.count == before


def test_module_large_body_fingerprinted_on_the_thread_pool(module_gateway,
                                                            echo):
    # over 16 KiB the body is fingerprinted off the event loop: the options
    # must reach that path too
    g = module_gateway("idempotency_fingerprint_ignore /metadata/client_time;",
                       "idempotency_fingerprint_header Stripe-Version;")
    key = unique_key()
    v = {"Stripe-Version": "1"}
    doc = body(1)
    doc["padding"] = "x" * 40000
    first = post_json(g.url, key, doc, headers=v)
    assert first.status_code == 201
    before = echo.count
    doc["metadata"]["client_time"] = 2
    assert_replay_of(first, post_json(g.url, key, doc, headers=v))
    assert_mismatch(post_json(g.url, key, doc, headers={"Stripe-Version": "2"}),
                    key)
    doc["padding"] = "y" * 40000
    assert_mismatch(post_json(g.url, key, doc, headers=v), key)
    assert echo.count == before


def test_module_without_the_option_a_new_timestamp_mismatches(module_gateway):
    g = module_gateway()
    key = unique_key()
    assert post_json(g.url, key, body(1)).status_code == 201
    assert_mismatch(post_json(g.url, key, body(2)), key)


def test_module_array_index_and_escaped_pointer(module_gateway, echo):
    g = module_gateway(
        'idempotency_fingerprint_ignore "/lines/0/nonce" "/x~1y";')
    key = unique_key()
    doc = {"lines": [{"nonce": "a", "q": 1}, {"nonce": "b"}], "x/y": 1}
    first = post_json(g.url, key, doc)
    assert first.status_code == 201
    before = echo.count
    doc["lines"][0]["nonce"] = "c"
    doc["x/y"] = 2
    assert_replay_of(first, post_json(g.url, key, doc))
    # the second line's nonce is not ignored
    doc["lines"][1]["nonce"] = "z"
    assert_mismatch(post_json(g.url, key, doc), key)
    assert echo.count == before


def test_module_form_and_query_fields_ignored(module_gateway, echo):
    g = module_gateway("idempotency_fingerprint_ignore nonce ts;")
    key = unique_key()
    first = post_form(g.url, key, "amount=100&nonce=n1", query="ts=1&v=2")
    assert first.status_code == 201
    before = echo.count
    # new values, another order, an escaped spelling of the name
    again = post_form(g.url, key, "%6Eonce=n2&amount=100", query="v=2&ts=9")
    assert_replay_of(first, again)
    assert_mismatch(post_form(g.url, key, "amount=101&nonce=n1",
                              query="ts=1&v=2"), key)
    assert_mismatch(post_form(g.url, key, "amount=100&nonce=n1",
                              query="ts=1&v=3"), key)
    assert echo.count == before


def test_module_header_brought_in(module_gateway, echo):
    g = module_gateway("idempotency_fingerprint_header Stripe-Version;")
    key = unique_key()
    first = post_json(g.url, key, body(1),
                      headers={"Stripe-Version": "2024-06-20"})
    assert first.status_code == 201
    before = echo.count
    assert_replay_of(first, post_json(g.url, key, body(1),
                                      headers={"Stripe-Version": "2024-06-20"}))
    # the same body under another version is other parameters
    assert_mismatch(post_json(g.url, key, body(1),
                              headers={"Stripe-Version": "2023-10-16"}), key)
    assert_mismatch(post_json(g.url, key, body(1)), key)
    # absent and empty are different
    key2 = unique_key()
    assert post_json(g.url, key2, body(1)).status_code == 201
    assert_mismatch(post_json(g.url, key2, body(1),
                              headers={"Stripe-Version": ""}), key2)
    assert echo.count == before + 1


def test_module_repeated_header_fields_join_like_one_list(module_gateway):
    # "X-Fp:" then "X-Fp: a" is the list ", a", the same as one field
    # ", a": the empty first field still takes its place
    g = module_gateway("idempotency_fingerprint_header X-Fp;")
    key = unique_key()

    def send(*fields):
        head = "".join("X-Fp:%s\r\n" % (" " + f if f else "")
                       for f in fields)
        req = ("POST /v1/charges HTTP/1.1\r\nHost: a\r\nIdempotency-Key: %s"
               "\r\nContent-Type: application/json\r\n%sContent-Length: 2"
               "\r\nConnection: close\r\n\r\n{}" % (key, head)).encode()
        with socket.create_connection(("127.0.0.1", g.port), timeout=10) as c:
            c.sendall(req)
            data = b""
            while True:
                d = c.recv(65536)
                if not d:
                    break
                data += d
        return data.split(b"\r\n", 1)[0], data

    status, _ = send(", a")
    assert b"201" in status
    for _ in range(5):
        status, data = send("", "a")
        assert b"201" in status and b"Idempotent-Replayed: true" in data
    status, _ = send("a", "")
    assert b"400" in status


def test_module_without_the_header_option_it_is_not_compared(module_gateway):
    g = module_gateway()
    key = unique_key()
    first = post_json(g.url, key, body(1), headers={"Stripe-Version": "a"})
    assert first.status_code == 201
    assert_replay_of(first, post_json(g.url, key, body(1),
                                      headers={"Stripe-Version": "b"}))


def test_module_admin_shows_the_lists(module_gateway):
    extra = """
        location /fpkeys/ {
            idempotency_admin;
            idempotency_fingerprint_ignore /metadata/client_time "a\\"b";
            idempotency_fingerprint_header Stripe-Version;
        }
"""
    g = module_gateway("idempotency_fingerprint_ignore /metadata/client_time "
                       '"a\\"b";',
                       "idempotency_fingerprint_header Stripe-Version;",
                       extra_locations=extra)
    key = unique_key()
    assert post_json(g.url, key, body(1)).status_code == 201
    r = requests.get(g.url + "/fpkeys/" + urllib.parse.quote(key, safe=""),
                     timeout=5)
    assert r.status_code == 200
    doc = r.json()
    assert doc["key"] == key
    assert doc["fingerprint_ignore"] == ["/metadata/client_time", 'a"b']
    assert doc["fingerprint_headers"] == ["stripe-version"]
    # a location without them says so
    plain = g.admin_get(key).json()
    assert plain["fingerprint_ignore"] == []
    assert plain["fingerprint_headers"] == []
    assert plain["fingerprint"] == doc["fingerprint"]


@pytest.mark.parametrize("entry", ['"/a~2"', '"/a~"', '""'])
def test_module_refuses_a_bad_pointer_at_startup(entry):
    run = tempfile.mkdtemp(prefix="idem-fp-")
    conf = os.path.join(run, "nginx.conf")
    with open(conf, "w") as f:
        f.write("load_module %s;\nerror_log stderr;\npid %s/nginx.pid;\n"
                "events {}\nhttp {\n  idempotency_store lmdb:%s/data;\n"
                "  server { listen 127.0.0.1:%d; location / {\n"
                "    idempotency on;\n"
                "    idempotency_fingerprint_ignore %s;\n"
                "    proxy_pass http://127.0.0.1:9; } }\n}\n"
                % (MODULE, run, run, cli.free_port(), entry))
    asan_dir = os.path.join(run, "asan")
    r = subprocess.run([NGINX, "-t", "-p", run, "-c", conf],
                       capture_output=True, text=True, timeout=20,
                       env=cli.nginx_env(asan_dir))
    assert cli.asan_reports(asan_dir) == ""
    assert r.returncode != 0
    assert "invalid fingerprint ignore entry" in r.stderr


# --------------------------------------------------------------------------
# The gateway
# --------------------------------------------------------------------------

GW_FLAGS = ("--fingerprint-ignore", "/metadata/client_time",
            "--fingerprint-ignore", "nonce",
            "--fingerprint-header", "Stripe-Version")


def test_gateway_ignored_member_replays(gateway_factory, echo):
    g = gateway_factory(*GW_FLAGS)
    key = unique_key()
    v = {"Stripe-Version": "2024-06-20"}
    first = post_json(g.url, key, body(1), headers=v)
    assert first.status_code == 201
    before = echo.count
    assert_replay_of(first, post_json(g.url, key, body(99), headers=v))
    # another value elsewhere is still a 400
    assert_mismatch(post_json(g.url, key, body(99, order="ord_9"),
                              headers=v), key)
    # the same body under another version header is a 400
    assert_mismatch(post_json(g.url, key, body(1),
                              headers={"Stripe-Version": "2023-10-16"}), key)
    assert echo.count == before


def test_gateway_form_field_ignored(gateway_factory, echo):
    g = gateway_factory(*GW_FLAGS)
    key = unique_key()
    first = post_form(g.url, key, "amount=1&nonce=a")
    assert first.status_code == 201
    before = echo.count
    assert_replay_of(first, post_form(g.url, key, "nonce=b&amount=1"))
    assert_mismatch(post_form(g.url, key, "nonce=b&amount=2"), key)
    assert echo.count == before


def test_gateway_admin_shows_the_lists(gateway_factory):
    g = gateway_factory(*GW_FLAGS)
    key = unique_key()
    assert post_json(g.url, key, body(1)).status_code == 201
    r = requests.get(g.admin_url + "/keys/" + urllib.parse.quote(key, safe=""),
                     timeout=5)
    assert r.status_code == 200
    doc = r.json()
    assert doc["fingerprint_ignore"] == ["/metadata/client_time", "nonce"]
    assert doc["fingerprint_headers"] == ["stripe-version"]


def test_gateway_writes_the_directives():
    r = cli.run_cli(*(cli.BASE + list(GW_FLAGS) + ["--print-config"]))
    assert r.returncode == 0, r.stderr
    directives = cli.conf_directives(r.stdout)
    ignore = [d for d in directives
              if d.startswith("idempotency_fingerprint_ignore")]
    header = [d for d in directives
              if d.startswith("idempotency_fingerprint_header")]
    # the API location and the admin's key inspection
    assert ignore == ['idempotency_fingerprint_ignore '
                      '"/metadata/client_time" "nonce";'] * 2
    assert header == ['idempotency_fingerprint_header "Stripe-Version";'] * 2


def test_gateway_config_file_takes_the_lists(workdir):
    path = os.path.join(workdir, "idemgate.conf")
    with open(path, "w") as f:
        f.write("fingerprint-ignore = /a/0\nfingerprint_header = X-Account\n")
    r = cli.run_cli(*(cli.BASE + ["--config", path, "--print-config"]))
    assert r.returncode == 0, r.stderr
    assert 'idempotency_fingerprint_ignore "/a/0";' in r.stdout
    assert 'idempotency_fingerprint_header "X-Account";' in r.stdout
