#!/bin/bash
# scale.sh — does idemgate on LMDB keep its speed as the store grows, while
# it prunes, and over many requests? Three checks, each against the same
# pinned setup as bench/run.sh (one nginx worker and its thread pool on CPU
# BENCH_PROXY_CPU, wrk and a `return 201` upstream on BENCH_OTHER_CPU):
#
#   size    replay and new-key requests/s and p99 on a store holding
#           SCALE_KEYS (10,000,000) records, beside one holding 1,000;
#           made with store_bench -F (large batches, no fsync, then one)
#   prune   new-key p99 while the prune timer removes SCALE_EXPIRED
#           (1,000,000) expired records (prune every 1 s, its default
#           budget), beside the same load on a store with none to prune;
#           the pruned count is read from /metrics afterwards
#   memory  the worker's resident memory (its own, RssAnon, and the
#           store's mapped pages, RssFile) every 10 % of SCALE_REQUESTS
#           (1,000,000) new-key requests
#
# Prints a table per check; writes nothing else. The stores stay until the
# end (removing gigabytes meanwhile would set the disk discarding under
# the next check). Settings: SCALE_CHECKS ("size prune memory"), SCALE_KEYS,
# SCALE_EXPIRED, SCALE_REQUESTS, SCALE_SECONDS (5, per wrk run), SCALE_CONNS
# (32), SCALE_DIR (a directory on the disk to measure: /var/tmp), BUILD
# (build). The stores need room: about 750 bytes per record.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEYS=${SCALE_KEYS:-10000000}
EXPIRED=${SCALE_EXPIRED:-1000000}
REQUESTS=${SCALE_REQUESTS:-1000000}
SECS=${SCALE_SECONDS:-5}
CONNS=${SCALE_CONNS:-32}
CHECKS=${SCALE_CHECKS:-size prune memory}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
OTHER_CPU=${BENCH_OTHER_CPU:-1}
NGINX=${NGINX_BIN:-/usr/sbin/nginx}
MODULE=$(cd "$BUILD" && pwd)/ngx_http_idempotency_module.so
FILL=$(cd "$BUILD" && pwd)/bench/store_bench

die() { echo "scale: $*" >&2; exit 1; }
for t in wrk taskset curl; do
    command -v $t >/dev/null || die "$t is missing"
done
[ -x "$FILL" ] && [ -f "$MODULE" ] || die "build first (make)"

run=$(mktemp -d "${SCALE_DIR:-/var/tmp}/idem-scale-XXXXXX")
chmod 0755 "$run"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$run"
}
trap cleanup EXIT

port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    die "nothing listens on port $1 (see $run/*/error.log)"
}

user=""
[ "$(id -u)" = 0 ] && user="user nobody nogroup;"

# the upstream: a fixed 201 answer
UP=$(port)
mkdir -p "$run/up"
cat >"$run/up/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $run/up/nginx.pid;
error_log $run/up/error.log warn; $user
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$UP; location / {
  return 201 '{"id":"obj_1","object":"payment","amount":1000,"currency":"usd","status":"succeeded","created":1700000000,"metadata":{"order":"12345"},"description":"a fixed answer for benchmarks"}';
} } }
CONF
taskset -c "$OTHER_CPU" "$NGINX" -p "$run/up" -c "$run/up/nginx.conf" &
pids+=($!)
wait_port "$UP"

# gateway NAME PORT: nginx with the module on the store $run/NAME/data
gateway() {
    local d=$run/$1
    mkdir -p "$d/data"
    cat >"$d/nginx.conf" <<CONF
load_module $MODULE;
worker_processes 1; daemon off; pid $d/nginx.pid;
error_log $d/error.log warn; $user
thread_pool idem threads=32;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/body; proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi; uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    upstream api { server 127.0.0.1:$UP; keepalive 512; }
    idempotency_store lmdb:$d/data;
    idempotency_thread_pool idem;
    idempotency_prune_interval 1s;
    ${SCALE_PRUNE_BUDGET:+idempotency_prune_budget $SCALE_PRUNE_BUDGET;}
    server {
        listen 127.0.0.1:$2;
        location / {
            idempotency on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://api;
        }
        location = /metrics { idempotency_metrics; }
    }
}
CONF
    [ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$d"
    taskset -c "$PROXY_CPU" "$NGINX" -p "$d" -c "$d/nginx.conf" &
    pids+=($!)
    wait_port "$2"
}

stop() {  # stop NAME
    local pid
    pid=$(cat "$run/$1/nginx.pid")
    kill -QUIT "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

fill() {  # fill NAME RECORDS [-x]
    mkdir -p "$run/$1/data"
    "$FILL" -F "$run/$1/data" -p "$2" ${3:-} >/dev/null ||
        die "filling $1 failed"
}

# wrk PORT SCRIPT [SECONDS]: "requests/s p99-ms"
bench() {
    taskset -c "$OTHER_CPU" wrk -t1 -c"$CONNS" -d"${3:-$SECS}s" \
        -s "bench/$2" "http://127.0.0.1:$1/bench" |
        awk '/^BENCH / {
                 for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
                 if (f["status_errors"] + f["socket_errors"] > 0) bad = 1
                 printf "%.0f %.2f\n", f["requests"] / (f["duration_us"] / 1e6),
                        f["p99_us"] / 1000
             }
             END { if (bad) exit 1 }' || die "a run had errors"
}

metric() {  # metric PORT NAME
    curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2}'
}

worker_rss_kib() {  # worker_rss_kib NAME: "heap-and-stacks mapped-files"
    local master
    master=$(cat "$run/$1/nginx.pid")
    awk '/^RssAnon/ {a = $2} /^RssFile/ {f = $2} END {print a, f}' \
        "/proc/$(pgrep -P "$master" | head -1)/status"
}

want() { case " $CHECKS " in *" $1 "*) return 0 ;; esac; return 1; }

if want size; then
echo "== size: $KEYS records against 1,000 ($SECS s per run, -c$CONNS)"
t0=$(date +%s)
fill small 1000
fill large "$KEYS"
sync
echo "   (filled in $(($(date +%s) - t0)) s; data.mdb of the large store:" \
    "$(du -h "$run/large/data/data.mdb" | cut -f1))"
PS=$(port); PL=$(port)
gateway small "$PS"; gateway large "$PL"
printf '   %-22s %14s %14s %8s\n' run "1,000 keys" "$KEYS keys" ratio
for s in newkey.lua replay.lua; do
    bench "$PS" "$s" 2 >/dev/null; bench "$PL" "$s" 2 >/dev/null
    r=$(bench "$PS" "$s")
    read -r a ap <<<"$r"
    r=$(bench "$PL" "$s")
    read -r b bp <<<"$r"
    printf '   %-22s %8s/s %4sms %8s/s %4sms %8s\n' "${s%.lua}" "$a" "$ap" \
        "$b" "$bp" "$(echo "scale=2; $b / $a" | bc)"
done
stop small; stop large
fi

if want prune; then
echo "== prune: new keys while $EXPIRED expired records are pruned"
fill pruning "$EXPIRED" -x
fill quiet "$EXPIRED"
sync
# one gateway at a time: a prune's commits share the disk with the
# other's
PP=$(port); PQ=$(port)
gateway quiet "$PQ"
bench "$PQ" newkey.lua 2 >/dev/null
r=$(bench "$PQ" newkey.lua)
read -r q qp <<<"$r"
stop quiet
gateway pruning "$PP"
bench "$PP" newkey.lua 2 >/dev/null
r=$(bench "$PP" newkey.lua)
read -r p pp <<<"$r"
pruned=$(metric "$PP" idemgate_pruned_total)
printf '   %-34s %8s/s  p99 %6s ms\n' "no expired records" "$q" "$qp"
printf '   %-34s %8s/s  p99 %6s ms  (%s pruned meanwhile)\n' \
    "pruning $EXPIRED expired" "$p" "$pp" "${pruned:-0}"
echo "   p99 while pruning / without: $(echo "scale=2; $pp / $qp" | bc)"
stop pruning
fi

if want memory; then
echo "== memory: the worker's RSS over $REQUESTS new-key requests"
PM=$(port)
gateway memory "$PM"
step=$((REQUESTS / 10))
done_reqs=0
# RssAnon is the worker's own memory (heap, stacks); RssFile counts the
# pages of the store's map it has touched, which grow with the store
printf '   %12s %14s %14s\n' requests "RssAnon KiB" "RssFile KiB"
r=$(worker_rss_kib memory)
read -r anon file <<<"$r"
printf '   %12s %14s %14s\n' 0 "$anon" "$file"
while [ "$done_reqs" -lt "$REQUESTS" ]; do
    # about step requests: wrk stops at a time, so run until the count
    # the gateway reports has grown by step
    before=$(metric "$PM" 'idemgate_requests_total{outcome="executed"}')
    while :; do
        bench "$PM" newkey.lua 2 >/dev/null
        now=$(metric "$PM" 'idemgate_requests_total{outcome="executed"}')
        [ $((now - before)) -ge "$step" ] && break
    done
    done_reqs=$((done_reqs + now - before))
    r=$(worker_rss_kib memory)
    read -r anon file <<<"$r"
    printf '   %12s %14s %14s\n' "$done_reqs" "$anon" "$file"
done
stop memory
fi
