#!/usr/bin/env python3
"""report.py — the tables and the plot of one bench/run.sh run.

Reads the runs (a TSV: mode, conns, scenario, proxy, rps, p50_ms, p99_ms,
cpu_us, requests) and the in-flight duplicate counters, and writes into
--out: latest.md (the machine, the command, one table per mode), a dated
copy of it (STAMP.md), latest.tsv (the raw runs) and latest.png (gnuplot:
requests/s and p99 per scenario, both proxies, per connection count and
mode). Prints the Markdown on stdout. With --readme, the same tables and
plot go between the README's bench markers (its Benchmarks section).
"""

import argparse
import csv
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile

SCENARIOS = [
    ("get", "GET passthrough"),
    ("nokey", "POST, no key"),
    ("newkey", "POST, new key each (LMDB)"),
    ("replay", "POST, replay (LMDB)"),
    ("dup", "POST, in-flight duplicates (LMDB)"),
    ("redis-new", "POST, new key each (Redis)"),
    ("redis-replay", "POST, replay (Redis)"),
    ("pg-new", "POST, new key each (PostgreSQL)"),
    ("pg-replay", "POST, replay (PostgreSQL)"),
    ("gw-get", "GET passthrough (idemgate command)"),
    ("gw-nokey", "POST, no key (idemgate command)"),
    ("gw-newkey", "POST, new key each (idemgate command)"),
    ("gw-replay", "POST, replay (idemgate command)"),
]
LABEL = dict(SCENARIOS)
ORDER = {s: i for i, (s, _) in enumerate(SCENARIOS)}


def sh(*cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main():
    ap = argparse.ArgumentParser()
    for a in ("tsv", "notes", "out", "stamp", "seconds", "conns", "modes",
              "proxy-cpu", "other-cpu", "nginx", "command", "repeat"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--readme", default="-", help="a README whose Benchmarks section to update")
    ap.add_argument("--bounds", default=None, help="run.sh's floor and sync_probe lines")
    o = ap.parse_args()

    every = {}
    with open(o.tsv) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            every.setdefault((r["mode"], int(r["conns"]), r["scenario"], r["proxy"]), []).append(r)
    runs = {k: median_run(v) for k, v in every.items()}
    notes = {}
    with open(o.notes) as f:
        for line in f:
            mode, conns, req, ex, rp, wt = line.split()
            old = notes.get((mode, int(conns)), (0, 0, 0, 0))
            notes[(mode, int(conns))] = tuple(a + int(b) for a, b in zip(old, (req, ex, rp, wt)))

    floors, syncs = read_bounds(o.bounds)

    modes = o.modes.split()
    conns = [int(c) for c in o.conns.split()]
    scen = sorted({k[2] for k in runs}, key=ORDER.get)
    env = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in sorted(os.environ.items())
                   if k in ("BENCH_SECONDS", "BENCH_CONNS", "BENCH_SCENARIOS", "BENCH_MODES",
                            "BENCH_DUP_BATCH", "BENCH_REPEAT"))
    command = (env + " " if env else "") + o.command
    date = o.stamp.replace("T", " ")[:-3] + ":" + o.stamp[-3:-1] + " UTC"

    def body(h, png):
        """the report; h: the heading marks of its sections, png: the plot's link"""
        md = []
        md.append("Made by `%s` on %s.\n" % (command, date))
        md.append("- machine: %s CPUs (`nproc`), %s; Linux %s; %s; %s"
                  % (sh("nproc"), cpu_model(), platform.release(),
                     sh(o.nginx, "-v").replace("nginx version: ", ""),
                     sh("wrk", "-v").split(" [")[0]))
        md.append("- each cell: %s of %s s (`wrk --timeout 10s`, one thread per CPU it "
                  "may use), plain nginx and idemgate in turn; requests carry an `Authorization` header, every POST a 205-byte JSON "
                  "body; the upstream of both proxies is a third nginx answering every request "
                  "with `return 201` and a 197-byte JSON body"
                  % ("one wrk run" if o.repeat == "1" else
                     "the median (by requests/s) of %s wrk runs" % o.repeat, o.seconds))
        md.append("- ratio: idemgate's requests/s over plain nginx's; CPU µs/req: user + system "
                  "time of the proxy's nginx processes (master, workers and their threads, "
                  "`/proc/PID/stat`) during the run, over the requests wrk completed")
        md.append("- stores: LMDB `lmdb:DIR` (durable: every commit in its write-ahead log, fsynced, on %s); Redis with "
                  "`appendonly yes`, `appendfsync always`; PostgreSQL with `fsync=on`, "
                  "`synchronous_commit=on`, `pool=16` per worker; both on loopback, throwaway "
                  "(tests/servers/)" % fs_of("/var/tmp"))
        md.append("- requests: a new key's body differs from every other request's (its order "
                  "number), as new requests do; a replay repeats its first request byte for byte, "
                  "as a retry does")
        md.append("- rows without a mark run the module under a minimal nginx.conf (`idempotency "
                  "on`, `proxy_pass`); \"idemgate command\" rows run the `idemgate` command, "
                  "whose own nginx.conf adds Host, X-Forwarded-For, X-Forwarded-Proto and "
                  "X-Request-Id to every proxied request, checks the header size for 431 and "
                  "answers nginx's errors in JSON (its defaults, but the LMDB store's path and "
                  "`--workers`; so also nginx's default of 1000 requests per client connection, "
                  "where the other proxies keep one connection for the run)")
        md.append("- in-flight duplicates (bench/dup.lua): the key changes every time a wrk "
                  "thread has sent %s, so the connections "
                  "send each key about together: one executes, the others wait for it (or, "
                  "arriving after it completed, replay it)"
                  % ("%s requests" % os.environ["BENCH_DUP_BATCH"] if os.environ.get("BENCH_DUP_BATCH")
                     else "as many requests as it has connections"))
        md.append("")
        for mode in modes:
            if mode == "pinned":
                md.append("%s One worker each, pinned: proxy on CPU %s; wrk, upstream, Redis, "
                          "PostgreSQL on CPU %s\n" % (h, o.proxy_cpu, o.other_cpu))
            else:
                md.append("%s All CPUs: no pinning, `worker_processes auto`\n" % h)
            md.append("| scenario | conns | req/s nginx | req/s idemgate | ratio | p50 ms nginx "
                      "| p50 ms idemgate | p99 ms nginx | p99 ms idemgate | CPU µs/req nginx "
                      "| CPU µs/req idemgate |")
            md.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for c in conns:
                for s in scen:
                    a = runs.get((mode, c, s, "nginx"))
                    b = runs.get((mode, c, s, "idemgate"))
                    if a is None or b is None:
                        sys.exit("report: no run for %s -c%d %s" % (mode, c, s))
                    ratio = float(b["rps"]) / float(a["rps"])
                    md.append("| %s | %d | %s | %s | %.2f | %s | %s | %s | %s | %s | %s |" % (
                        LABEL[s], c, a["rps"], b["rps"], ratio, a["p50_ms"], b["p50_ms"],
                        a["p99_ms"], b["p99_ms"], a["cpu_us"], b["cpu_us"]))
            md.append("")
            dup = [(c, notes[(mode, c)]) for c in conns if (mode, c) in notes]
            if dup:
                md.append("In-flight duplicates, idemgate's counters over the run%s: "
                          % ("" if o.repeat == "1" else "s") + "; ".join(
                    "-c%d: %d requests, %d keys executed, %d replayed, of which %d waited for "
                    "the in-flight first request" % (c, req, ex, rp, wt)
                    for c, (req, ex, rp, wt) in dup) + ".\n")
            if mode == "pinned" and (floors or syncs):
                md.extend(bounds_section(h, floors, syncs, runs, conns))
        md.append("![requests/s and p99 per scenario, plain nginx and idemgate](%s)\n" % png)
        return "\n".join(md)

    text = "# idemgate beside plain nginx\n\n" + body("##", "latest.png")
    os.makedirs(o.out, exist_ok=True)
    for name in ("latest.md", o.stamp + ".md"):
        with open(os.path.join(o.out, name), "w") as f:
            f.write(text)
    shutil.copyfile(o.tsv, os.path.join(o.out, "latest.tsv"))
    plot(runs, modes, conns, scen, o, os.path.join(o.out, "latest.png"), date)
    sys.stdout.write(text)
    print("\nwrote latest.md, %s.md, latest.tsv, latest.png in %s/" % (o.stamp, o.out))
    if o.readme != "-":
        readme(o.readme, body("###", os.path.join(os.path.relpath(o.out, os.path.dirname(
            os.path.abspath(o.readme)) or "."), "latest.png")))


def median_run(v):
    """a cell of several runs: the run of the median requests/s (the lower
    of the two middle ones)"""
    return sorted(v, key=lambda r: float(r["rps"]))[(len(v) - 1) // 2]


def read_bounds(path):
    """run.sh's bounds file: {(conns, proxy): run} and [sync_probe run]"""
    floors, syncs = {}, []
    if not path:
        return floors, syncs
    every = {}
    with open(path) as f:
        for line in f:
            kind, *fields = line.split()
            kv = dict(x.split("=", 1) for x in fields)
            if kind == "floor":
                every.setdefault((int(kv["conns"]), kv["proxy"]), []).append(kv)
            elif kind == "SYNC":
                syncs.append(kv)
    for k, v in every.items():
        floors[k] = median_run(v)
    return floors, syncs


def bounds_section(h, floors, syncs, runs, conns):
    """What bounds the ratios: the floors run.sh measured, the ceilings they set"""
    md = ["%s What bounds the ratios (pinned as above)\n" % h]
    if floors:
        md.append("A replay is an answer nginx serves without the upstream. Its floor is nginx "
                  "answering the very same request itself (`return 201` with the upstream's "
                  "answer, on the proxy's CPU, no module): the most a replay could do if the "
                  "module's lookup, checks and stored headers cost nothing.\n")
        md.append("| conns | req/s plain nginx (proxying) | CPU µs/req | req/s nginx answering "
                  "itself | CPU µs/req | ceiling of the replay ratio | idemgate's replay ratio |")
        md.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for c in conns:
            a, b = floors.get((c, "plain")), floors.get((c, "self"))
            if a is None or b is None:
                continue
            ra, rb = runs.get(("pinned", c, "replay", "nginx")), runs.get(("pinned", c, "replay", "idemgate"))
            got = "%.2f" % (float(rb["rps"]) / float(ra["rps"])) if ra and rb else "—"
            md.append("| %d | %s | %s | %s | %s | %.2f | %s |" % (
                c, a["rps"], a["cpu_us"], b["rps"], b["cpu_us"],
                float(b["rps"]) / float(a["rps"]), got))
        md.append("")
    if syncs:
        md.append("A durable new key waits for two durable writes in turn: its claim before the "
                  "request is forwarded, its response before the client is answered. Their floor "
                  "is one durable append alone (`bench/sync_probe`: 10 KiB `pwrite` + "
                  "`fdatasync` at the end of a log filled ahead, in the directory the LMDB store "
                  "uses, on the proxy's CPU), one writer and two at once:\n")
        md.append("| writers | appends/s | p50 ms | p90 ms | p99 ms | max ms |")
        md.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in syncs:
            md.append("| %s | %s | %.2f | %.2f | %.2f | %.2f |" % (
                r["writers"], r["per_s"], int(r["p50_us"]) / 1000, int(r["p90_us"]) / 1000,
                int(r["p99_us"]) / 1000, int(r["max_us"]) / 1000))
        md.append("")
        one = next((r for r in syncs if r["writers"] == "1"), syncs[0])
        sync_ms = int(one["p50_us"]) / 1000
        est = []
        for c in conns:
            a = runs.get(("pinned", c, "newkey", "nginx"))
            b = runs.get(("pinned", c, "newkey", "idemgate"))
            if a is None or b is None:
                continue
            lat = float(a["p50_ms"]) + 2 * sync_ms
            ceil = c / (lat / 1000)
            est.append("-c%d: plain nginx's p50 %.2f ms + 2 × %.2f ms = %.2f ms, so at most "
                       "about %.0f req/s with every CPU cost at zero, a ratio of at most about "
                       "%.2f (idemgate: %.2f, p99 %s ms against %s)"
                       % (c, float(a["p50_ms"]), sync_ms, lat, ceil,
                          min(ceil / float(a["rps"]), 9.99),
                          float(b["rps"]) / float(a["rps"]), b["p99_ms"], a["p99_ms"]))
        if est:
            md.append("With the median single append, a closed loop of C connections in which "
                      "every request waits for two appends gets at most C / (p50 + 2 × append) "
                      "requests per second (a request that arrives while a commit is under way "
                      "waits for the rest of it too, so the real bound is lower): "
                      + "; ".join(est) + ". A request's p99 cannot beat one append's p99 (%.2f ms "
                      "here) over plain nginx's.\n" % (int(one["p99_us"]) / 1000))
    return md


BEGIN = "<!-- bench/results/latest.md begins: make bench writes what follows -->"
END = "<!-- bench/results/latest.md ends -->"


def readme(path, text):
    """puts TEXT between the README's markers (when it has them)"""
    with open(path) as f:
        old = f.read()
    i, j = old.find(BEGIN), old.find(END)
    if i < 0 or j < i:
        print("report: no bench markers in %s, left as it is" % path)
        return
    new = old[:i + len(BEGIN)] + "\n\n" + text + "\n" + old[j:]
    if new != old:
        with open(path, "w") as f:
            f.write(new)
        print("updated the Benchmarks section of %s" % path)


def fs_of(path):
    try:
        with open("/proc/mounts") as f:
            best = ("", "?")
            for line in f:
                dev, mnt, fs = line.split()[:3]
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                    best = (mnt, fs)
        return best[1]
    except OSError:
        return "?"


SHORT = {"get": "GET", "nokey": "POST no key", "newkey": "new key LMDB",
         "replay": "replay LMDB", "dup": "in-flight dup LMDB", "redis-new": "new key Redis",
         "redis-replay": "replay Redis", "pg-new": "new key PG", "pg-replay": "replay PG",
         "gw-get": "GET command", "gw-nokey": "no key command", "gw-newkey": "new key command",
         "gw-replay": "replay command"}


def plot(runs, modes, conns, scen, o, png, date):
    tmp = tempfile.mkdtemp(prefix="idem-plot-")
    try:
        cols = []
        for c in conns:
            cols += [("nginx", c), ("idemgate", c)]
        for mode in modes:
            with open(os.path.join(tmp, mode + ".dat"), "w") as f:
                for s in scen:
                    row = ['"%s"' % SHORT[s]]
                    row += [runs[(mode, c, s, p)]["rps"] for p, c in cols]
                    row += [runs[(mode, c, s, p)]["p99_ms"] for p, c in cols]
                    f.write(" ".join(row) + "\n")
        n = len(cols)
        colors = ["#9e9e9e", "#1f77b4", "#616161", "#ff7f0e", "#424242", "#2ca02c"]
        title = {"pinned": "pinned, one worker (proxy CPU %s)" % o.proxy_cpu,
                 "all": "all CPUs, worker_processes auto"}
        gp = [
            "set terminal pngcairo size 1600,%d font 'sans,10'" % (450 * len(modes)),
            "set output '%s'" % png,
            "set multiplot layout %d,2 title 'plain nginx and idemgate (%s, %s s per run)'"
            % (len(modes), date, o.seconds),
            "set style data histograms",
            "set style histogram clustered gap 1",
            "set style fill solid 0.9 border -1",
            "set boxwidth 0.9",
            "set grid ytics",
            "set termoption noenhanced",
            "set key outside right top vertical font ',9'",
            "set xtics font ',8' rotate by 35 right",
            "set bmargin 7",
        ]
        for mode in modes:
            dat = os.path.join(tmp, mode + ".dat")
            for what, off, ylabel in (("requests/s", 2, "requests/s"), ("p99 latency", 2 + n, "p99 ms (log)")):
                gp.append("set title '%s: %s'" % (what, title[mode]))
                gp.append("set ylabel '%s'" % ylabel)
                gp.append("set logscale y" if off > 2 else "unset logscale y")
                gp.append("set yrange [*:*]" if off > 2 else "set yrange [0:*]")
                series = []
                for i, (p, c) in enumerate(cols):
                    series.append("'%s' using %d:xtic(1) title '%s -c%d' lc rgb '%s'"
                                  % (dat, off + i, p, c, colors[i % len(colors)]))
                gp.append("plot " + ", ".join(series))
        gp.append("unset multiplot")
        script = os.path.join(tmp, "plot.gp")
        with open(script, "w") as f:
            f.write("\n".join(gp) + "\n")
        r = subprocess.run(["gnuplot", script], capture_output=True, text=True)
        if r.returncode != 0 or not os.path.getsize(png):
            sys.exit("report: gnuplot failed:\n" + r.stderr)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
