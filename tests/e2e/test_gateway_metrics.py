"""End-to-end tests of the gateway's /metrics as Prometheus reads it: every
metric documented (# HELP, # TYPE) and accepted by the Prometheus client's
own text parser; latency histograms of store calls and of the upstream
that move with traffic; the in-progress gauge and the counters summed over
all workers; and the Grafana dashboard in examples/, whose every query
names a metric the gateway serves.

Built on test_gateway_cli.py: its in-process echo upstream (which sleeps
on /sleep/SECONDS) and its Gateway (one idemgate process on free loopback
ports).
"""

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import threading
import time

import pytest
import requests
from prometheus_client import parser

from test_gateway_cli import ROOT, echo, free_port, gateway_factory, workdir

# imported for pytest, which finds fixtures among a module's names
__all__ = ["echo", "gateway_factory", "workdir"]

DASHBOARD = os.path.join(ROOT, "examples", "grafana", "idemgate-dashboard.json")

HISTOGRAMS = {
    "idemgate_store_op_duration_microseconds":
        {"claim", "complete", "release", "replay_read"},
    "idemgate_upstream_duration_microseconds": None,
}


def scrape(g):
    r = requests.get(g.admin_url + "/metrics", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return r.text


def families(g):
    return {f.name: f for f in parser.text_string_to_metric_families(scrape(g))}


def sample(fams, name, **labels):
    """The value of one sample, found by its full name and labels."""
    for f in fams.values():
        for s in f.samples:
            if s.name == name and all(s.labels.get(k) == v
                                      for k, v in labels.items()):
                return s.value
    raise KeyError((name, labels))


def hist(fams, name, **labels):
    """(buckets as [(le, cumulative count)], sum, count) of one histogram."""
    f = fams[name]
    buckets = [(s.labels["le"], s.value) for s in f.samples
               if s.name == name + "_bucket"
               and all(s.labels.get(k) == v for k, v in labels.items())]
    return (buckets, sample(fams, name + "_sum", **labels),
            sample(fams, name + "_count", **labels))


def unique(prefix):
    return "%s-%s" % (prefix, os.urandom(6).hex())


def test_every_metric_has_help_and_type_and_parses(gateway_factory):
    g = gateway_factory("--workers", "2")
    g.post(key=unique("m-parse"), data="x")
    text = scrape(g)
    fams = families(g)
    assert fams, text
    for name, f in fams.items():
        assert f.documentation, name
        assert f.type in ("counter", "gauge", "histogram"), (name, f.type)
        assert f.samples, name
    # the raw text: one # HELP and one # TYPE per family, HELP first
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    types = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert helps == types
    assert len(set(helps)) == len(helps)
    for line in text.splitlines():
        if line and not line.startswith("#"):
            base = re.sub(r"(_bucket|_sum|_count)?(\{.*\})? \S+$", "", line)
            assert base in types or base + "_total" in line, line
    for name in ["idemgate_requests", "idemgate_keys_in_progress",
                 "idemgate_store_healthy", "idemgate_store_bytes_used",
                 "idemgate_store_bytes_limit", "idemgate_store_records"]:
        assert name in fams, name
    for name, ops in HISTOGRAMS.items():
        assert fams[name].type == "histogram"
        got = {s.labels.get("op") for s in fams[name].samples}
        assert got == (ops or {None}), got


def assert_well_formed(buckets, count):
    les = [le for le, _ in buckets]
    assert les[-1] == "+Inf"
    bounds = [float(le) for le in les[:-1]]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds)
    values = [v for _, v in buckets]
    assert values == sorted(values), buckets
    assert values[-1] == count


def test_histograms_move_with_traffic(gateway_factory, echo):
    g = gateway_factory("--workers", "1")
    before = families(g)
    keys = [unique("m-hist") for _ in range(5)]
    for key in keys:
        assert g.post(key=key, data="x").status_code == 201
    for key in keys[:3]:
        assert g.post(key=key, data="x").headers["Idempotent-Replayed"] == "true"
    # one slow upstream answer: 300 ms at least
    assert g.post("/sleep/0.3", key=unique("m-slow"), data="x").status_code == 201
    after = families(g)

    def grew(name, **labels):
        b = hist(before, name, **labels)
        a = hist(after, name, **labels)
        assert_well_formed(a[0], a[2])
        return a[2] - b[2], a[1] - b[1], a

    n, total, _ = grew("idemgate_store_op_duration_microseconds", op="claim")
    assert n == 6 and total > 0
    n, total, _ = grew("idemgate_store_op_duration_microseconds", op="complete")
    assert n == 6 and total > 0
    n, total, _ = grew("idemgate_store_op_duration_microseconds",
                       op="replay_read")
    assert n == 3
    n, total, (buckets, _, _) = grew("idemgate_upstream_duration_microseconds")
    assert n == 6
    assert total >= 300000, total
    # the slow one is above the 250 ms bound, the others below it
    below = dict(buckets)["250000"] - dict(hist(before,
        "idemgate_upstream_duration_microseconds")[0])["250000"]
    assert below == 5
    assert sample(after, "idemgate_requests_total", outcome="replayed") - \
        sample(before, "idemgate_requests_total", outcome="replayed") == 3


def test_release_is_timed_when_nothing_ran(gateway_factory):
    g = gateway_factory(upstream="http://127.0.0.1:%d" % free_port())
    before = families(g)
    assert g.post(key=unique("m-release"), data="x").status_code == 502
    after = families(g)
    name = "idemgate_store_op_duration_microseconds"
    assert hist(after, name, op="release")[2] - \
        hist(before, name, op="release")[2] == 1
    assert sample(after, "idemgate_released_total") - \
        sample(before, "idemgate_released_total") == 1


def in_progress(g):
    return sample(families(g), "idemgate_keys_in_progress")


def wait_for(cond, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_in_progress_gauge_sums_all_workers(gateway_factory, echo):
    g = gateway_factory("--workers", "2")
    assert in_progress(g) == 0
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        # on separate connections, so both workers take some
        futures = [pool.submit(g.post, "/sleep/1.5", key=unique("m-busy"),
                               data="x", headers={"Connection": "close"})
                   for _ in range(4)]
        assert wait_for(lambda: in_progress(g) == 4), in_progress(g)
        # every scrape, whichever worker answers it, sees all four
        for _ in range(6):
            assert in_progress(g) == 4
        assert all(f.result().status_code == 201 for f in futures)
    assert wait_for(lambda: in_progress(g) == 0)


def test_counters_sum_all_workers(gateway_factory):
    g = gateway_factory("--workers", "2")
    before = families(g)
    for _ in range(10):
        r = g.post(key=unique("m-count"), data="x",
                   headers={"Connection": "close"})
        assert r.status_code == 201
    for _ in range(4):
        after = families(g)
        assert sample(after, "idemgate_requests_total", outcome="executed") - \
            sample(before, "idemgate_requests_total", outcome="executed") == 10


def test_a_killed_worker_leaves_no_keys_in_progress(gateway_factory, echo):
    g = gateway_factory("--workers", "1")
    def slow():
        # the worker dies under it: the connection breaks
        with contextlib.suppress(requests.RequestException):
            requests.post(g.url + "/sleep/3", data="x",
                          headers={"Idempotency-Key": unique("m-killed")},
                          timeout=10)

    t = threading.Thread(target=slow)
    t.daemon = True
    t.start()
    assert wait_for(lambda: in_progress(g) == 1)
    (worker,) = g.worker_pids()
    os.kill(worker, signal.SIGKILL)
    # the master starts another worker, which takes the dead one's slot
    assert wait_for(lambda: g.worker_pids() not in ([], [worker])), \
        g.worker_pids()
    assert wait_for(lambda: in_progress(g) == 0), in_progress(g)
    t.join(15)


def test_a_scrape_under_load_shows_the_histograms_moving(gateway_factory, echo):
    g = gateway_factory("--workers", "2")
    name = "idemgate_store_op_duration_microseconds"
    stop = threading.Event()

    def load():
        s = requests.Session()
        while not stop.is_set():
            key = unique("m-load")
            s.post(g.url + "/v1/load", data="x",
                   headers={"Idempotency-Key": key}, timeout=10)
            s.post(g.url + "/v1/load", data="x",
                   headers={"Idempotency-Key": key}, timeout=10)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        counts = []
        for _ in range(4):
            time.sleep(0.3)
            fams = families(g)
            counts.append((hist(fams, name, op="claim")[2],
                           hist(fams, name, op="replay_read")[2],
                           hist(fams, "idemgate_upstream_duration_microseconds")[2]))
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    for a, b in zip(counts, counts[1:]):
        assert all(y > x for x, y in zip(a, b)), counts


def dashboard_queries():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    out = []
    for panel in dash["panels"]:
        assert panel["title"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            out.append((panel["title"], t["expr"]))
    return dash, out


def test_grafana_dashboard_names_only_metrics_that_exist(gateway_factory):
    g = gateway_factory()
    g.post(key=unique("m-dash"), data="x")
    served = set()
    for f in families(g).values():
        served.update(s.name for s in f.samples)
    dash, queries = dashboard_queries()
    assert dash["title"] and dash["uid"]
    assert len(queries) >= 8
    named = set()
    for title, expr in queries:
        names = re.findall(r"\bidemgate_[a-z0-9_]+", expr)
        assert names, (title, expr)
        for n in names:
            assert n in served, (title, n)
        named.update(names)
        # balanced, and labels matched are labels the metric has
        assert expr.count("(") == expr.count(")"), expr
        for label in re.findall(r"\b(?:by|on) \(([^)]*)\)", expr):
            for l in label.split(","):
                assert l.strip() in ("le", "op", "outcome"), (title, l)
    # every histogram and the gauge are on the dashboard
    for n in ["idemgate_store_op_duration_microseconds_bucket",
              "idemgate_upstream_duration_microseconds_bucket",
              "idemgate_keys_in_progress", "idemgate_store_bytes_used",
              "idemgate_requests_total"]:
        assert n in named, n
