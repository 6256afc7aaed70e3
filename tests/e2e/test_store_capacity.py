"""The LMDB store's size and its directory under a running gateway
(SPEC §8, §9): map_size=SIZE in the store URL, the 503 with Retry-After of
a full store and its way back once expired records are pruned, the store
gauges of /metrics, and a store directory removed or replaced while the
gateway runs (/healthz fails, new keys get 503, the error log says why,
nothing is reopened behind the operator's back).

The full-store tests run nginx with the module from conftest's template;
the directory tests run the idemgate command itself, as an operator would,
in front of the demo Inquiries API.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import (IDEMGATE, MODULE, NGINX, SANITIZER, free_port,
                      give_to_workers, make_shared_dir, unique_key, wait_port)

MiB = 1 << 20
# a 1 MiB map (256 pages) holds a few dozen responses of 20 KB
SMALL_MAP = "map_size=1m"
BIG = {"X-Demo-Body-Bytes": "20000"}


def sanitizer_env(asan_dir, base=None):
    """The environment of a process that runs nginx: under ASan, with the
    runtime preloaded and reports written into asan_dir."""
    env = dict(base or os.environ)
    if SANITIZER == "address":
        os.makedirs(asan_dir, exist_ok=True)
        os.chmod(asan_dir, 0o777)
        env["LD_PRELOAD"] = subprocess.check_output(
            ["gcc", "-print-file-name=libasan.so"], text=True).strip()
        env["ASAN_OPTIONS"] = ("log_path=%s/asan:detect_leaks=0:"
                               "abort_on_error=0" % asan_dir)
    return env


def asan_reports(asan_dir):
    if not os.path.isdir(asan_dir):
        return ""
    return "".join(open(os.path.join(asan_dir, n), errors="replace").read()
                   for n in os.listdir(asan_dir) if n.startswith("asan"))


def replayed(resp):
    return resp.headers.get("Idempotent-Replayed") == "true"


def wait_for(predicate, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def fill_until_refused(g, prefix, limit=200):
    """New keys with 20 KB responses until the store refuses one."""
    answers = {}
    for i in range(limit):
        key = "%s%03d" % (prefix, i)
        r = g.post(key=key, json_body={"i": i}, headers=BIG)
        answers[key] = r
        if r.status_code == 503:
            return answers
    raise AssertionError("the store never filled up after %d keys" % limit)


def expect_full(resp, retry_after):
    assert resp.status_code == 503
    assert resp.headers["Content-Type"].startswith("application/json")
    err = resp.json()["errors"][0]
    assert err["title"] and err["details"]
    assert resp.headers.get("Retry-After") == str(retry_after), resp.headers


# --- a full store (§8, §9) ---------------------------------------------------

def test_full_store_is_503_with_retry_after_and_the_gauges_show_it(
        gateway_factory, upstream):
    g = gateway_factory(store_options=SMALL_MAP, prune_interval="3s")
    m = g.metrics()
    assert m["idemgate_store_bytes_limit"] == MiB
    assert 0 < m["idemgate_store_claim_bytes_limit"] < MiB
    assert m["idemgate_store_records"] == 0
    assert m["idemgate_store_healthy"] == 1
    empty = m["idemgate_store_bytes_used"]

    answers = fill_until_refused(g, unique_key("fill") + "_")
    kept = [k for k, r in answers.items() if r.status_code == 201]
    refused = [k for k, r in answers.items() if r.status_code == 503]
    assert len(kept) >= 10 and len(refused) == 1
    # the next prune is at most 3 s away: that is when room may come back
    expect_full(answers[refused[0]], 3)
    assert upstream.executions(refused[0]) == 0

    m = g.metrics()
    assert m["idemgate_store_records"] == len(kept)
    used = m["idemgate_store_bytes_used"]
    # each 20 KB response takes five overflow pages: the map is nearly full
    assert used >= empty + len(kept) * 20000
    assert used > m["idemgate_store_claim_bytes_limit"] - 64 * 1024
    assert used <= m["idemgate_store_bytes_limit"]
    # what it kept still replays; only new keys are refused
    k = kept[0]
    assert replayed(g.post(key=k, json_body={"i": 0}, headers=BIG))
    expect_full(g.post(key=unique_key("more"), json_body={}, headers=BIG), 3)


def test_full_store_takes_new_keys_again_after_retry_after(
        gateway_factory, upstream):
    g = gateway_factory(store_options=SMALL_MAP, prune_interval="200ms",
                        directives=["idempotency_ttl 1s;",
                                    "idempotency_lease 500ms;",
                                    "idempotency_wait 300ms;"])
    answers = fill_until_refused(g, unique_key("fill") + "_")
    full = g.metrics()
    key, first = list(answers.items())[-1]
    expect_full(first, 1)
    # every record is past its TTL, and the next prune is Retry-After away
    time.sleep(1.0 + int(first.headers["Retry-After"]))
    r = g.post(key=key, json_body={"i": len(answers) - 1}, headers=BIG)
    assert r.status_code == 201 and not replayed(r)
    assert upstream.executions(key) == 1
    m = g.metrics()
    assert m["idemgate_pruned_total"] >= len(answers) - 1
    assert m["idemgate_store_records"] < full["idemgate_store_records"]
    assert m["idemgate_store_bytes_used"] < full["idemgate_store_bytes_used"]


# --- the store URL ----------------------------------------------------------

def nginx_t(store_url):
    """nginx -t on a configuration whose only store is store_url."""
    run = make_shared_dir("idem-conf-")
    try:
        conf = os.path.join(run, "nginx.conf")
        with open(conf, "w") as f:
            f.write("load_module %s;\nerror_log stderr;\npid %s/nginx.pid;\n"
                    "events {}\nhttp {\n    idempotency_store \"%s\";\n}\n"
                    % (MODULE, run, store_url))
        asan_dir = os.path.join(run, "asan")
        r = subprocess.run([NGINX, "-t", "-p", run, "-c", conf],
                           capture_output=True, text=True, timeout=20,
                           env=sanitizer_env(asan_dir))
        assert not asan_reports(asan_dir), asan_reports(asan_dir)
        return r
    finally:
        shutil.rmtree(run, ignore_errors=True)


@pytest.mark.parametrize("query,why", [
    ("colour=blue", 'unknown lmdb option "colour"'),
    ("map_size=12x", 'lmdb map_size "12x" is not a size from 64k to 16384g'),
    ("map_size=1k", "from 64k to 16384g"),
    ("sync=2", "lmdb option sync is 0 or 1"),
])
def test_module_refuses_a_bad_store_url_with_its_reason(query, why):
    r = nginx_t("lmdb:/tmp/idem-never-made?" + query)
    assert r.returncode != 0
    assert 'invalid idempotency_store "lmdb:/tmp/idem-never-made?%s": ' \
        % query in r.stderr, r.stderr
    assert why in r.stderr, r.stderr
    assert not os.path.exists("/tmp/idem-never-made")


def test_module_takes_map_size_with_a_suffix():
    r = nginx_t("lmdb:/tmp/idem-never-made?map_size=64g&sync=1")
    assert r.returncode == 0, r.stderr


def run_cli(*args):
    return subprocess.run([IDEMGATE] + list(args), capture_output=True,
                          text=True, timeout=20)


BASE = ["--listen", "127.0.0.1:18080", "--upstream", "http://127.0.0.1:18081"]


def test_gateway_takes_map_size_in_its_store_url():
    r = run_cli(*BASE, "--store", "lmdb:/tmp/idem-s?map_size=2g",
                "--print-config")
    assert r.returncode == 0, r.stderr
    assert "idempotency_store lmdb:/tmp/idem-s?map_size=2g;" in r.stdout \
        or 'idempotency_store "lmdb:/tmp/idem-s?map_size=2g";' in r.stdout
    help_text = run_cli("--help").stdout
    assert "lmdb:DIR[?map_size=SIZE]" in help_text


@pytest.mark.parametrize("query,message", [
    ("map_size=lots", 'map_size "lots" is not a size from 64k to 16384g'),
    ("map_size=1k", 'map_size "1k" is not a size from 64k to 16384g'),
    ("map_size=20000g", 'map_size "20000g" is not a size from 64k'),
    ("colour=blue", 'unknown lmdb option "colour"'),
])
def test_gateway_refuses_a_bad_map_size(query, message):
    r = run_cli(*BASE, "--store", "lmdb:/tmp/idem-s?" + query,
                "--print-config")
    assert r.returncode == 2
    assert message in r.stderr, r.stderr


# --- the store directory under a running gateway (§9) -----------------------

class Idemgate:
    """The idemgate command, one worker, its store in store_dir."""

    def __init__(self, upstream, store_dir, workdir):
        self.port, self.admin_port = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.admin_url = "http://127.0.0.1:%d" % self.admin_port
        self.store_dir = store_dir
        self.err_path = os.path.join(workdir, "idemgate-%d.err" % self.port)
        self.err = open(self.err_path, "wb")
        tmp = os.path.join(workdir, "tmp")
        os.makedirs(tmp, exist_ok=True)
        self.asan_dir = os.path.join(workdir, "asan")
        self.proc = subprocess.Popen(
            [IDEMGATE, "--listen", "127.0.0.1:%d" % self.port,
             "--upstream", upstream.url,
             "--admin", "127.0.0.1:%d" % self.admin_port,
             "--store", "lmdb:" + store_dir, "--workers", "1",
             "--wait", "1s"],
            cwd=workdir,
            env=sanitizer_env(self.asan_dir,
                              dict(os.environ, TMPDIR=tmp, TZ="UTC")),
            stdout=subprocess.DEVNULL, stderr=self.err,
            start_new_session=True)
        wait_port(self.port, proc=self.proc)
        wait_port(self.admin_port, proc=self.proc)

    def post(self, key, body):
        return requests.post(self.url + "/api/v1/inquiries",
                             data=json.dumps(body),
                             headers={"Idempotency-Key": key,
                                      "Content-Type": "application/json"},
                             timeout=10)

    def health(self):
        return requests.get(self.admin_url + "/healthz", timeout=5)

    def metrics(self):
        text = requests.get(self.admin_url + "/metrics", timeout=5).text
        return dict(line.rsplit(" ", 1) for line in text.splitlines()
                    if line and not line.startswith("#"))

    def error_log(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.err.close()
        reports = asan_reports(self.asan_dir)
        assert not reports, "AddressSanitizer reports:\n" + reports


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="idem-watch-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def idemgate(upstream, workdir):
    made = []

    def make(store_dir):
        g = Idemgate(upstream, store_dir, workdir)
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


def failing_health(g, says):
    """Waits for /healthz to fail saying says; returns its details."""
    seen = []

    def failing():
        r = g.health()
        seen.append((r.status_code, r.text))
        return r.status_code == 503 and says in r.json().get("details", "")

    assert wait_for(failing, 5.0), "health never failed with %r: %r" % (
        says, seen[-3:])
    r = g.health()
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["status"] == "failing"
    return r.json()["details"]


def expect_refused_and_replays(g, upstream, kept, body):
    """New keys get 503 and reach nobody; the kept key still replays."""
    fresh = unique_key("after")
    r = g.post(fresh, {"n": 2})
    assert r.status_code == 503 and "Retry-After" not in r.headers
    assert r.json()["errors"][0]["title"]
    assert upstream.executions(fresh) == 0
    again = g.post(kept, body)
    assert again.status_code == 201 and replayed(again)
    assert upstream.executions(kept) == 1
    assert g.metrics()["idemgate_store_healthy"] == "0"


def test_removed_store_directory_fails_health_and_new_keys(
        idemgate, upstream, workdir):
    store = os.path.join(workdir, "store")
    g = idemgate(store)
    kept = unique_key("kept")
    assert g.post(kept, {"n": 1}).status_code == 201
    assert g.health().status_code == 200
    assert g.health().json() == {"status": "ok"}
    assert g.metrics()["idemgate_store_healthy"] == "1"

    shutil.rmtree(store)
    details = failing_health(g, "data.mdb is gone")
    assert store in details and "removed or moved away" in details
    expect_refused_and_replays(g, upstream, kept, {"n": 1})
    log = g.error_log()
    assert 'idempotency store "lmdb:%s" lost: %s/data.mdb is gone' % (
        store, store) in log
    # nothing was reopened behind the operator's back
    assert not os.path.exists(store)


def test_replaced_store_directory_fails_health_until_it_is_back(
        idemgate, upstream, workdir):
    store = os.path.join(workdir, "store")
    g = idemgate(store)
    kept = unique_key("kept")
    assert g.post(kept, {"n": 1}).status_code == 201

    os.rename(store, store + ".old")
    os.mkdir(store)
    give_to_workers(store)
    failing_health(g, "data.mdb is gone")
    # a second gateway started on the path makes a new, empty store there
    other = idemgate(store)
    assert other.health().status_code == 200
    assert other.post(unique_key("other"), {"n": 3}).status_code == 201
    details = failing_health(g, "data.mdb is another file now")
    assert "replaced" in details
    expect_refused_and_replays(g, upstream, kept, {"n": 1})
    assert "data.mdb is another file now" in g.error_log()
    assert g.health().status_code == 503   # not healed by a reopen

    # the operator puts the old directory back: the gateway serves again
    other.close()
    shutil.rmtree(store)
    os.rename(store + ".old", store)
    assert wait_for(lambda: g.health().status_code == 200, 5.0)
    fresh = unique_key("back")
    assert g.post(fresh, {"n": 4}).status_code == 201
    assert upstream.executions(fresh) == 1
    assert replayed(g.post(kept, {"n": 1}))
    assert "names its open files again" in g.error_log()


def worker_pids(g):
    """The workers of g's nginx (the children of the master, idemgate's
    child)."""
    def children(pid):
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                             text=True).stdout.split()
        return [int(p) for p in out]
    masters = children(g.proc.pid)
    return sorted(p for m in masters for p in children(m))


def test_a_worker_started_after_the_directory_went_does_not_start_afresh(
        idemgate, upstream, workdir):
    store = os.path.join(workdir, "store")
    g = idemgate(store)
    kept = unique_key("kept")
    assert g.post(kept, {"n": 1}).status_code == 201
    shutil.rmtree(store)
    failing_health(g, "data.mdb is gone")
    os.mkdir(store)
    give_to_workers(store)
    # the worker dies; nginx starts another, which opens the path anew and
    # makes an empty store there
    old = worker_pids(g)
    assert len(old) == 1
    os.kill(old[0], signal.SIGKILL)
    assert wait_for(lambda: worker_pids(g) not in ([], old), 10.0)
    details = failing_health(g, "this worker opened other files")
    assert "removed or replaced" in details
    fresh = unique_key("after")
    r = g.post(fresh, {"n": 2})
    assert r.status_code == 503
    assert upstream.executions(fresh) == 0
    assert "this worker opened other files" in g.error_log()
