"""End-to-end tests of error templates (SPEC §5): idempotency_error_template
FILE in the module and --error-template FILE in the gateway give every
gateway-made error the API's own shape, with {status}, {title}, {details}
and {key} put in JSON-escaped, and a bad template stops the start.

Real nginx with the module (conftest's Gateway) and the idemgate command
(test_gateway_cli's Gateway), in front of test_gateway_cli's echo server.
"""

import json
import os
import subprocess
import tempfile

import pytest
import requests

import test_gateway_cli as cli
from conftest import MODULE, NGINX, Gateway, unique_key
# the idemgate command's fixtures (its gateway_factory, not conftest's)
from test_gateway_cli import echo, gateway_factory, workdir  # noqa: F401

ACME = ("Content-Type: application/vnd.acme.error+json\n"
        '{"fault":{"http":{status},"summary":"{title}",'
        '"text":"{details}","idempotency_key":"{key}",'
        '"note":"costs $5, it\'s {{literal}"}}\n')

MISMATCH = ("Keys for idempotent requests can only be used with the same "
            "parameters they were first used with.")


def write_template(text):
    fd, path = tempfile.mkstemp(prefix="idem-tpl-", suffix=".txt", dir="/tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


@pytest.fixture
def acme_path():
    path = write_template(ACME)
    yield path
    os.unlink(path)


def fault(r, status):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/vnd.acme.error+json"
    doc = r.json()
    assert set(doc) == {"fault"}
    f = doc["fault"]
    assert f["http"] == status
    assert f["note"] == "costs $5, it's {literal}"
    return f


def post(url, key, doc, path="/v1/things"):
    return requests.post(url + path, data=json.dumps(doc),
                         headers={"Idempotency-Key": key,
                                  "Content-Type": "application/json"},
                         timeout=10)


@pytest.fixture
def module_gateway(echo):
    made = []

    def make(*directives, **kw):
        g = Gateway(echo, directives=list(directives), **kw)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def nginx_t(directive):
    run = tempfile.mkdtemp(prefix="idem-tpl-")
    conf = os.path.join(run, "nginx.conf")
    with open(conf, "w") as f:
        f.write("load_module %s;\nerror_log stderr;\npid %s/nginx.pid;\n"
                "events {}\nhttp {\n  idempotency_store lmdb:%s/data;\n"
                "  server { listen 127.0.0.1:%d; location / {\n"
                "    idempotency on;\n    %s\n"
                "    proxy_pass http://127.0.0.1:9; } }\n}\n"
                % (MODULE, run, run, cli.free_port(), directive))
    asan_dir = os.path.join(run, "asan")
    r = subprocess.run([NGINX, "-t", "-p", run, "-c", conf],
                       capture_output=True, text=True, timeout=20,
                       env=cli.nginx_env(asan_dir))
    assert cli.asan_reports(asan_dir) == ""
    return r


# --------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------

def test_module_mismatch_in_the_template(module_gateway, acme_path):
    g = module_gateway("idempotency_error_template %s;" % acme_path)
    key = unique_key()
    first = post(g.url, key, {"a": 1})
    assert first.status_code == 201
    f = fault(post(g.url, key, {"a": 2}), 400)
    assert f["summary"] == "Idempotency error"
    assert f["text"].startswith(MISMATCH)
    assert key in f["text"]
    assert f["idempotency_key"] == key
    # a replay is the API's answer, untouched
    again = post(g.url, key, {"a": 1})
    assert again.content == first.content


def test_module_values_are_json_escaped(module_gateway, acme_path):
    g = module_gateway("idempotency_error_template %s;" % acme_path)
    key = 'k\\"' + unique_key()
    assert post(g.url, key, {"a": 1}).status_code == 201
    f = fault(post(g.url, key, {"a": 2}), 400)
    assert f["idempotency_key"] == key
    assert key in f["text"]


def test_module_invalid_key_and_unreachable_upstream(module_gateway,
                                                    acme_path):
    g = module_gateway("idempotency_error_template %s;" % acme_path)
    r = requests.post(g.url + "/v1/things", data="{}",
                      headers={"Idempotency-Key": "x" * 256}, timeout=10)
    f = fault(r, 400)
    assert "longer than 255" in f["text"]
    # nothing executed upstream: the gateway's own 502
    key = unique_key()
    f = fault(post(g.url, key, {"a": 1}, path="/unreachable/x"), 502)
    assert f["summary"] == "Bad gateway"
    assert f["idempotency_key"] == key


def test_module_stored_unknown_outcome_in_the_template(module_gateway,
                                                      acme_path):
    # the upstream answers after 3 s, nginx waits 1 s: the key keeps a 504
    # made on the thread pool, replayed as it was stored
    g = module_gateway("idempotency_error_template %s;" % acme_path,
                       "idempotency_lease 20s;", read_timeout="1s")
    key = unique_key()
    first = post(g.url, key, {"a": 1}, path="/sleep/3")
    f = fault(first, 504)
    assert f["summary"] == "Upstream outcome unknown"
    assert f["idempotency_key"] == key
    again = post(g.url, key, {"a": 1}, path="/sleep/3")
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.status_code == 504
    assert again.content == first.content


def test_module_template_without_a_type_line_is_json(module_gateway):
    path = write_template('{"oops":"{details}","s":{status}}')
    try:
        g = module_gateway("idempotency_error_template %s;" % path)
        key = unique_key()
        assert post(g.url, key, {"a": 1}).status_code == 201
        r = post(g.url, key, {"a": 2})
        assert r.status_code == 400
        assert r.headers["Content-Type"] == "application/json"
        assert r.json()["s"] == 400
        assert r.json()["oops"].startswith(MISMATCH)
    finally:
        os.unlink(path)


def test_module_without_a_template_the_style_answers(module_gateway):
    g = module_gateway()
    key = unique_key()
    assert post(g.url, key, {"a": 1}).status_code == 201
    r = post(g.url, key, {"a": 2})
    assert r.status_code == 400
    assert r.json()["errors"][0]["details"].startswith(MISMATCH)


def test_module_unknown_placeholder_stops_nginx():
    path = write_template('Content-Type: application/json\n{"a":\n{code}}')
    try:
        r = nginx_t("idempotency_error_template %s;" % path)
        assert r.returncode != 0
        assert "unknown placeholder {code} on line 3" in r.stderr
    finally:
        os.unlink(path)


def test_module_missing_template_stops_nginx():
    r = nginx_t("idempotency_error_template /nonexistent/tpl.json;")
    assert r.returncode != 0
    assert "/nonexistent/tpl.json" in r.stderr


# --------------------------------------------------------------------------
# The gateway
# --------------------------------------------------------------------------

def test_gateway_errors_in_the_template(gateway_factory, acme_path):
    g = gateway_factory("--error-template", acme_path,
                        "--max-body-bytes", "1k")
    key = unique_key()
    assert post(g.url, key, {"a": 1}).status_code == 201
    f = fault(post(g.url, key, {"a": 2}), 400)
    assert f["idempotency_key"] == key and key in f["text"]
    # nginx's own errors too, '$' and quotes and all
    r = requests.post(g.url + "/v1/things", data="x" * 4096,
                      headers={"Idempotency-Key": unique_key()}, timeout=10)
    f = fault(r, 413)
    assert f["summary"] == "Request too large"
    assert f["idempotency_key"] == ""


def test_gateway_bad_template_is_one_clear_line(workdir):
    path = os.path.join(workdir, "bad.tpl")
    with open(path, "w") as f:
        f.write('{"e":"{message}"}')
    r = cli.run_cli(*(cli.BASE + ["--error-template", path, "--print-config"]))
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("idemgate: --error-template: ")
    assert "unknown placeholder {message} on line 1" in lines[0]
    r = cli.run_cli(*(cli.BASE + ["--error-template",
                                  os.path.join(workdir, "none.tpl"),
                                  "--print-config"]))
    assert r.returncode == 2
    assert "cannot read" in r.stderr


def test_gateway_writes_the_directive(workdir, acme_path):
    r = cli.run_cli(*(cli.BASE + ["--error-template", acme_path,
                                  "--print-config"]))
    assert r.returncode == 0, r.stderr
    assert ('idempotency_error_template "%s";' % acme_path) in r.stdout
    assert 'default_type "application/vnd.acme.error+json";' in r.stdout
