#!/bin/bash
# run.sh — idemgate against plain nginx, side by side, in one run.
#
#   upstream: a third nginx, `return 201` with a 197-byte JSON body
#     ^                          ^
#     | proxy_pass               | proxy_pass + idempotency on
#   plain nginx                nginx with the module (one per store:
#     ^                          LMDB durable, Redis, PostgreSQL)
#     wrk, the same script and settings, one proxy after the other
#
# Scenarios (BENCH_SCENARIOS, names in this order by default):
#   get           GET passthrough
#   nokey         POST without a key (passthrough)
#   newkey        POST, a new key per request (claim + complete, LMDB durable)
#   replay        POST, one key for all (the first executes, the rest replay)
#   dup           POST, duplicates of an in-flight key (bench/dup.lua: a new
#                 key per batch of as many requests as a wrk thread has
#                 connections, so each key's duplicates wait for its first)
#   redis-new     newkey on Redis (appendfsync always)
#   redis-replay  replay on Redis
#   pg-new        newkey on PostgreSQL (fsync on, synchronous_commit on)
#   pg-replay     replay on PostgreSQL
#   gw-get        GET passthrough through the idemgate command (its own
#                 nginx.conf from its flags: proxy headers, X-Request-Id,
#                 the header-size check, JSON error pages) on LMDB
#   gw-nokey      POST without a key, through the idemgate command
#   gw-newkey     POST, a new key per request, through the idemgate command
#   gw-replay     POST replay, through the idemgate command
# Every POST carries a 205-byte JSON body; plain nginx gets the very same
# requests (keys included) and just forwards them.
#
# Each scenario runs at every connection count of BENCH_CONNS, in each mode
# of BENCH_MODES:
#   pinned  one worker per nginx; the proxies (master, worker, the worker's
#           threads) on CPU BENCH_PROXY_CPU (0); wrk, the upstream,
#           Redis and PostgreSQL on CPU BENCH_OTHER_CPU (1)
#   all     no pinning, worker_processes auto everywhere, wrk with one
#           thread per CPU
#
# Per run: requests/s, p50 and p99 latency (wrk's histogram, printed by
# bench/common.lua's done()), and the proxy's CPU time per request: utime +
# stime of the proxy's master and workers (/proc/PID/stat fields 14 and 15;
# a process's totals include its threads, so the worker's threads are counted),
# read before and after the wrk run, divided by the requests wrk completed.
#
# Settings: BENCH_SECONDS (4, per wrk run), BENCH_REPEAT (1: runs per cell,
# plain and idemgate in turn; the table has the median), BENCH_CONNS ("32 128"),
# BENCH_SCENARIOS (all above), BENCH_MODES ("pinned all"), BENCH_OUT
# (bench/results: latest.md, a dated copy, latest.tsv, latest.png),
# BENCH_README (README.md when BENCH_OUT is bench/results, else -: the
# README whose Benchmarks section gets the tables and the plot),
# BENCH_DUP_BATCH (requests per key in dup: a wrk thread's connections),
# BENCH_METRICS (a directory: each idemgate run's /metrics before and
# after it, SCENARIO-PROXY-cCONNS-RUN.before/.after, for diagnosis),
# BENCH_BOUNDS (1: in pinned mode, also measure what bounds the ratios:
# nginx answering the replay's request itself, and durable appends alone;
# 0: not), BENCH_PROXY_CPU, BENCH_OTHER_CPU, BUILD (build), NGINX_BIN.
#
# Redis and PostgreSQL come from tests/servers/redis.sh and
# tests/servers/postgres.sh (throwaway servers, PostgreSQL as an
# unprivileged user); run.sh runs itself under them when a scenario needs
# one and IDEM_TEST_REDIS_URL / IDEM_TEST_PG_URL is not set. Any server
# that does not start, and any run with errors or no requests, stops the
# benchmark with the reason.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECS=${BENCH_SECONDS:-4}
CONNS_LIST=${BENCH_CONNS:-32 128}
SCENARIOS=${BENCH_SCENARIOS:-get nokey newkey replay dup redis-new redis-replay pg-new pg-replay gw-get gw-nokey gw-newkey gw-replay}
MODES=${BENCH_MODES:-pinned all}
REPEAT=${BENCH_REPEAT:-1}
OUT=${BENCH_OUT:-bench/results}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
OTHER_CPU=${BENCH_OTHER_CPU:-1}
NGINX=${NGINX_BIN:-/usr/sbin/nginx}
MODULE=$PWD/$BUILD/ngx_http_idempotency_module.so

die() { echo "bench: $*" >&2; exit 1; }

for s in $SCENARIOS; do
    case $s in
    get | nokey | newkey | replay | dup | redis-new | redis-replay | pg-new | pg-replay) ;;
    gw-get | gw-nokey | gw-newkey | gw-replay) ;;
    *) die "unknown scenario '$s' (BENCH_SCENARIOS)" ;;
    esac
done
case $REPEAT in '' | *[!0-9]* | 0) die "BENCH_REPEAT must be a count of runs" ;; esac
for m in $MODES; do
    case $m in pinned | all) ;; *) die "unknown mode '$m' (BENCH_MODES: pinned all)" ;; esac
done
case " $SCENARIOS " in *" redis-"*) need_redis=1 ;; *) need_redis=0 ;; esac
case " $SCENARIOS " in *" pg-"*) need_pg=1 ;; *) need_pg=0 ;; esac

# the servers a scenario needs: run again beside them
if [ "$need_pg" = 1 ] && [ -z "${IDEM_TEST_PG_URL:-}" ]; then
    exec tests/servers/postgres.sh "$0" "$@"
fi
if [ "$need_redis" = 1 ] && [ -z "${IDEM_TEST_REDIS_URL:-}" ]; then
    exec tests/servers/redis.sh "$0" "$@"
fi

[ -f "$MODULE" ] || die "no $MODULE (run make first)"
case " $SCENARIOS " in *" gw-"*) need_gw=1 ;; *) need_gw=0 ;; esac
[ "$need_gw" = 0 ] || [ -x "$BUILD/idemgate" ] || die "no $BUILD/idemgate (run make first)"
BOUNDS=${BENCH_BOUNDS:-1}
case " $MODES " in *" pinned "*) ;; *) BOUNDS=0 ;; esac
[ "$BOUNDS" = 0 ] || [ -x "$BUILD/bench/sync_probe" ] || die "no $BUILD/bench/sync_probe (run make first)"
command -v wrk >/dev/null || die "no wrk (make deps)"
command -v gnuplot >/dev/null || die "no gnuplot (make deps: gnuplot-nox)"
NCPU=$(nproc)
case " $MODES " in
*" pinned "*)
    command -v taskset >/dev/null || die "pinned mode needs taskset (util-linux)"
    [ "$NCPU" -ge 2 ] || die "pinned mode needs two CPUs, this machine has $NCPU (BENCH_MODES=all)"
    ;;
esac
ALL_CPUS="0-$((NCPU - 1))"
HZ=$(getconf CLK_TCK)

run=$(mktemp -d /var/tmp/idem-bench-XXXXXX)
chmod 0755 "$run"
masters=()
cleanup() {
    for p in "${masters[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${masters[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

user=""
[ "$(id -u)" = 0 ] && user="user nobody nogroup;"

# set_affinity CPUS PID: PID, all its threads and all its descendants (a
# child that exits meanwhile, e.g. a PostgreSQL backend, is no error)
set_affinity() {
    taskset -a -p -c "$1" "$2" >/dev/null || die "cannot pin process $2 to CPUs $1"
    affinity_children "$1" "$2"
}
affinity_children() {
    local c
    for c in $(pgrep -P "$2" || true); do
        taskset -a -p -c "$1" "$c" >/dev/null 2>&1 || true
        affinity_children "$1" "$c"
    done
}

# the PID of the Redis and PostgreSQL servers, to pin them with the rest
redis_pid="" pg_pid=""
if [ "$need_redis" = 1 ]; then
    rport=${IDEM_TEST_REDIS_URL##*:}
    redis_pid=$(redis-cli -h 127.0.0.1 -p "$rport" info server | tr -d '\r' |
        sed -n 's/^process_id://p' || true)
    [ -n "$redis_pid" ] || die "redis at $IDEM_TEST_REDIS_URL does not answer"
fi
if [ "$need_pg" = 1 ]; then
    pg_pid=$(psql "$IDEM_TEST_PG_URL" -XAtc "select pg_read_file('postmaster.pid')" | head -1 || true)
    [ -n "$pg_pid" ] || die "PostgreSQL at $IDEM_TEST_PG_URL does not answer"
fi

# start_nginx NAME PORT CPUS WORKERS MAIN-LINES HTTP-LINES: a server of its
# own under $run/NAME, its master's PID in $master
start_nginx() {
    local d=$run/$1
    mkdir -p "$d"
    cat >"$d/nginx.conf" <<CONF
$5
worker_processes $4;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log warn;
$user
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    keepalive_requests 1000000;
    $6
}
CONF
    [ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$d"
    if [ -n "$3" ]; then
        taskset -c "$3" "$NGINX" -p "$d" -c "$d/nginx.conf" 2>>"$d/error.log" &
    else
        "$NGINX" -p "$d" -c "$d/nginx.conf" 2>>"$d/error.log" &
    fi
    master=$!
    masters+=("$master")
    for _ in $(seq 200); do
        if ! kill -0 "$master" 2>/dev/null; then
            cat "$d/error.log" >&2
            die "nginx '$1' did not start (config: $d/nginx.conf)"
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && [ -n "$(pgrep -P "$master")" ]; then
            return 0
        fi
        sleep 0.05
    done
    cat "$d/error.log" >&2
    die "nginx '$1' does not answer on port $2"
}

stop_nginx() {  # stop_nginx MASTER-PID
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# proxy NAME CPUS WORKERS STORE-URL: a proxy to the upstream on port
# ${port_of[NAME]}; with a store URL, idemgate (the module, idempotency on,
# and its counters on ${metrics_of[NAME]}/metrics)
declare -A port_of metrics_of master_of
proxy() {
    local p m main="" store="" loc="" extra=""
    p=$(port)
    port_of[$1]=$p
    if [ -n "$4" ]; then
        m=$(port)
        metrics_of[$1]=$m
        main="load_module $MODULE;"
        store="idempotency_store $4;"
        loc="idempotency on;"
        extra="server { listen 127.0.0.1:$m; location /metrics { idempotency_metrics; } }"
    fi
    start_nginx "$1" "$p" "$2" "$3" "$main" "
    upstream api { server 127.0.0.1:$UPSTREAM; keepalive 256; keepalive_requests 1000000; }
    client_body_buffer_size 1m;
    $store
    server {
        listen 127.0.0.1:$p backlog=4096;
        location / {
            $loc
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_ignore_client_abort on;
            proxy_pass http://api;
        }
    }
    $extra"
    master_of[$1]=$master
    # a first keyed request opens the store (and PostgreSQL's table)
    if [ -n "$4" ]; then
        curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' \
            -H "Idempotency-Key: warm-$$-$RANDOM$RANDOM" -d '{}' \
            "http://127.0.0.1:$p/bench" ||
            { cat "$run/$1/error.log" >&2; die "idemgate '$1' ($4) does not serve a keyed request"; }
    fi
}

# gateway NAME CPUS WORKERS: the idemgate command in front of the upstream,
# with its defaults but the store (LMDB under $run/NAME) and the workers;
# its admin server gives ${metrics_of[NAME]}/metrics. master_of is nginx's
# master (whose processes cpu_us counts), gw_of the idemgate process.
declare -A gw_of
gateway() {
    local p m d=$run/$1 g
    p=$(port) m=$(port)
    port_of[$1]=$p metrics_of[$1]=$m
    mkdir -p "$d"
    [ "$(id -u)" = 0 ] && chown nobody:nogroup "$d"
    local cmd=("$BUILD/idemgate" --listen "127.0.0.1:$p" --upstream "http://127.0.0.1:$UPSTREAM"
        --workers "$3" --store "lmdb:$d/data" --admin "127.0.0.1:$m" --runtime-dir "$d/run"
        --nginx "$NGINX")
    if [ -n "$2" ]; then
        taskset -c "$2" "${cmd[@]}" >"$d/idemgate.log" 2>&1 &
    else
        "${cmd[@]}" >"$d/idemgate.log" 2>&1 &
    fi
    g=$!
    gw_of[$1]=$g
    masters+=("$g")
    for _ in $(seq 200); do
        kill -0 "$g" 2>/dev/null || { cat "$d/idemgate.log" >&2; die "idemgate '$1' did not start"; }
        master=$(pgrep -P "$g" -f 'nginx: master' || true)
        if [ -n "$master" ] && [ -n "$(pgrep -P "$master")" ] &&
            curl -fsS -o /dev/null "http://127.0.0.1:$m/healthz" 2>/dev/null; then
            master_of[$1]=$master
            curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' \
                -H "Idempotency-Key: warm-$$-$RANDOM$RANDOM" -d '{}' "http://127.0.0.1:$p/bench" ||
                { cat "$d/idemgate.log" >&2; die "idemgate '$1' does not serve a keyed request"; }
            return 0
        fi
        sleep 0.05
    done
    cat "$d/idemgate.log" >&2
    die "idemgate '$1' does not answer on port $p"
}

# cpu_us MASTER: CPU time (user + system) of the master and its workers,
# threads included, in microseconds
cpu_us() {
    local pids
    pids="$1 $(pgrep -P "$1" | tr '\n' ' ')"
    for p in $pids; do cat "/proc/$p/stat" 2>/dev/null; done |
        awk -v hz="$HZ" '{ sub(/^.*\) /, ""); t += $12 + $13 } END { printf "%.0f\n", t * 1e6 / hz }'
}

counter() {  # counter NAME TEXT: one series of idemgate's metrics, summed
    awk -v n="$1" 'index($0, n) == 1 { v += $NF } END { printf "%.0f\n", v }' <<<"$2"
}

# wrk_run NAME SCRIPT CONNS: one wrk run on proxy NAME; sets rps p50 p99
# (ms) cpu (µs per request) requests
wrk_run() {
    local name=$1 script=$2 conns=$3 out c0 c1 line threads=$WRK_THREADS
    [ "$threads" -gt "$conns" ] && threads=$conns
    c0=$(cpu_us "${master_of[$name]}")
    out=$("${pin_other[@]}" wrk -t"$threads" -c"$conns" -d"${SECS}s" --timeout 10s \
        -s "bench/$script.lua" "http://127.0.0.1:${port_of[$name]}/bench" \
        -- "${BENCH_DUP_BATCH:-$((conns / threads))}" 2>&1) || { echo "$out" >&2; die "wrk failed on $name ($script, -c$conns)"; }
    c1=$(cpu_us "${master_of[$name]}")
    line=$(grep '^BENCH ' <<<"$out") || { echo "$out" >&2; die "wrk printed no result on $name ($script)"; }
    local w_requests w_duration_us w_p50_us w_p99_us w_status_errors w_socket_errors
    eval "$(sed 's/^BENCH //; s/\([a-z0-9_]*\)=/w_\1=/g' <<<"$line")"
    if [ "$w_requests" -le 0 ] || [ "$w_status_errors" -ne 0 ] || [ "$w_socket_errors" -ne 0 ]; then
        echo "$out" >&2
        tail -5 "$run/$name/error.log" >&2 2>/dev/null || tail -5 "$run/$name/idemgate.log" >&2 || true
        die "$name, $script, -c$conns: $w_requests requests, $w_status_errors answers >= 400, $w_socket_errors socket errors"
    fi
    requests=$w_requests
    rps=$(awk -v n="$w_requests" -v d="$w_duration_us" 'BEGIN { printf "%.0f", n / (d / 1e6) }')
    p50=$(awk -v v="$w_p50_us" 'BEGIN { printf "%.2f", v / 1000 }')
    p99=$(awk -v v="$w_p99_us" 'BEGIN { printf "%.2f", v / 1000 }')
    cpu=$(awk -v c="$((c1 - c0))" -v n="$w_requests" 'BEGIN { printf "%.1f", c / n }')
}

tsv=$run/results.tsv
notes=$run/notes.txt
: >"$notes"
bounds=$run/bounds.txt
: >"$bounds"
# the upstream's answer (and the floor's, below): a 197-byte JSON body
ANSWER='{\"id\":\"inq_5f2c9a1e7b3d4c6a\",\"object\":\"inquiry\",\"status\":\"received\",\"amount\":1000,\"currency\":\"usd\",\"created\":1764633600,\"subject\":\"Delivery window and invoice copy for order 4471\",\"livemode\":false}'
printf 'mode\tconns\tscenario\tproxy\trps\tp50_ms\tp99_ms\tcpu_us\trequests\n' >"$tsv"

declare -A label=(
    [get]="GET passthrough"
    [nokey]="POST, no key"
    [newkey]="POST, new key each (LMDB)"
    [replay]="POST, replay (LMDB)"
    [dup]="POST, in-flight duplicates (LMDB)"
    [redis-new]="POST, new key each (Redis)"
    [redis-replay]="POST, replay (Redis)"
    [pg-new]="POST, new key each (PostgreSQL)"
    [pg-replay]="POST, replay (PostgreSQL)"
    [gw-get]="GET passthrough (idemgate command)"
    [gw-nokey]="POST, no key (idemgate command)"
    [gw-newkey]="POST, new key each (idemgate command)"
    [gw-replay]="POST, replay (idemgate command)"
)
declare -A script_of=(
    [get]=get [nokey]=nokey [newkey]=newkey [replay]=replay [dup]=dup
    [redis-new]=newkey [redis-replay]=replay [pg-new]=newkey [pg-replay]=replay
    [gw-get]=get [gw-nokey]=nokey [gw-newkey]=newkey [gw-replay]=replay
)
declare -A store_of=(
    [get]=lmdb [nokey]=lmdb [newkey]=lmdb [replay]=lmdb [dup]=lmdb
    [redis-new]=redis [redis-replay]=redis [pg-new]=pg [pg-replay]=pg
    [gw-get]=gw [gw-nokey]=gw [gw-newkey]=gw [gw-replay]=gw
)

# measure_bounds: what no proxy of one core beats (report.py's "What
# bounds the ratios"), in the pinned setup: nginx answering the replay's
# request itself (`return 201` with the upstream's answer, on the proxy's
# CPU: a replay served with no work of the module's at all), beside plain
# nginx proxying it; then durable appends alone (bench/sync_probe: a 10 KiB
# pwrite + fdatasync, like one commit's log frame) in the directory the
# LMDB store uses, one writer and two, on the proxy's CPU.
# start_floor starts that nginx with the proxies (so the warm-up covers it).
start_floor() {
    local self
    self=$(port)
    start_nginx "self-$mode" "$self" "$pcpu" "$workers" "" "
    client_body_buffer_size 1m;
    server {
        listen 127.0.0.1:$self backlog=4096;
        location / { default_type application/json; return 201 '$ANSWER'; }
    }"
    port_of[self-$mode]=$self master_of[self-$mode]=$master
}
measure_bounds() {
    local w line
    for conns in $CONNS_LIST; do
        for ((r = 1; r <= REPEAT; r++)); do
            for n in plain self; do
                wrk_run "$n-$mode" replay "$conns"
                printf 'floor conns=%s proxy=%s rps=%s p50_ms=%s p99_ms=%s cpu_us=%s\n' \
                    "$conns" "$n" "$rps" "$p50" "$p99" "$cpu" >>"$bounds"
            done
        done
    done
    for w in 1 2; do
        line=$(taskset -c "$pcpu" "$BUILD/bench/sync_probe" -d "$run" -t "$SECS" -w "$w") ||
            die "bench/sync_probe failed in $run"
        echo "$line" >>"$bounds"
        echo "  durable appends alone: $line" >&2
    done
}

for mode in $MODES; do
    if [ "$mode" = pinned ]; then
        pcpu=$PROXY_CPU ocpu=$OTHER_CPU workers=1 WRK_THREADS=1
        pin_other=(taskset -c "$OTHER_CPU")
    else
        pcpu="" ocpu="" workers=auto WRK_THREADS=$NCPU
        pin_other=()
    fi
    [ -n "$redis_pid" ] && set_affinity "${ocpu:-$ALL_CPUS}" "$redis_pid"
    [ -n "$pg_pid" ] && set_affinity "${ocpu:-$ALL_CPUS}" "$pg_pid"

    UPSTREAM=$(port)
    start_nginx "upstream-$mode" "$UPSTREAM" "$ocpu" "$workers" "" "
    server {
        listen 127.0.0.1:$UPSTREAM backlog=4096;
        location / {
            default_type application/json;
            return 201 '$ANSWER';
        }
    }"
    upstream_master=$master

    proxy "plain-$mode" "$pcpu" "$workers" ""
    proxy "lmdb-$mode" "$pcpu" "$workers" "lmdb:$run/lmdb-$mode/data${BENCH_LMDB_OPTS:+?$BENCH_LMDB_OPTS}"
    [ "$need_redis" = 1 ] && proxy "redis-$mode" "$pcpu" "$workers" \
        "$IDEM_TEST_REDIS_URL?prefix=bench-$mode:"
    [ "$need_pg" = 1 ] && proxy "pg-$mode" "$pcpu" "$workers" \
        "$IDEM_TEST_PG_URL?table=bench_$mode&pool=16"
    [ "$need_gw" = 1 ] && gateway "gw-$mode" "$pcpu" "$workers"
    [ "$mode" = pinned ] && [ "$BOUNDS" = 1 ] && start_floor

    # warm up: connections to the upstream, page cache, the stores' files
    SECS=1
    for n in "${!port_of[@]}"; do
        case $n in *-"$mode") wrk_run "$n" newkey 32 ;; esac
    done
    SECS=${BENCH_SECONDS:-4}

    echo "== $mode: $( [ "$mode" = pinned ] && echo "proxies on CPU $PROXY_CPU, wrk/upstream/stores on CPU $OTHER_CPU, one worker each" || echo "all $NCPU CPUs, worker_processes auto, wrk -t$NCPU")" >&2
    for conns in $CONNS_LIST; do
        for s in $SCENARIOS; do
            idem="${store_of[$s]}-$mode"
            for ((r = 1; r <= REPEAT; r++)); do
                wrk_run "plain-$mode" "${script_of[$s]}" "$conns"
                printf '%s\t%s\t%s\tnginx\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$conns" "$s" \
                    "$rps" "$p50" "$p99" "$cpu" "$requests" >>"$tsv"
                a_rps=$rps a_p99=$p99
                before=$(curl -fsS "http://127.0.0.1:${metrics_of[$idem]}/metrics")
                wrk_run "$idem" "${script_of[$s]}" "$conns"
                printf '%s\t%s\t%s\tidemgate\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$conns" "$s" \
                    "$rps" "$p50" "$p99" "$cpu" "$requests" >>"$tsv"
                after=$(curl -fsS "http://127.0.0.1:${metrics_of[$idem]}/metrics")
                if [ -n "${BENCH_METRICS:-}" ]; then
                    # the module's counters and histograms before and after
                    mkdir -p "$BENCH_METRICS"
                    printf '%s\n' "$before" >"$BENCH_METRICS/$s-$idem-c$conns-$r.before"
                    printf '%s\n' "$after" >"$BENCH_METRICS/$s-$idem-c$conns-$r.after"
                fi
                ex=$(($(counter 'idemgate_requests_total{outcome="executed"}' "$after") -
                    $(counter 'idemgate_requests_total{outcome="executed"}' "$before")))
                rp=$(($(counter 'idemgate_requests_total{outcome="replayed"}' "$after") -
                    $(counter 'idemgate_requests_total{outcome="replayed"}' "$before")))
                wt=$(($(counter 'idemgate_waits_total' "$after") -
                    $(counter 'idemgate_waits_total' "$before")))
                # the run took the path it is named after (at least 95% of it)
                case ${script_of[$s]} in
                newkey) [ $((ex * 100)) -ge $((requests * 95)) ] ||
                    die "$s on $idem: $ex of $requests requests executed as new keys" ;;
                replay) [ $((rp * 100)) -ge $((requests * 95)) ] ||
                    die "$s on $idem: $rp of $requests requests replayed" ;;
                get | nokey) [ $((ex + rp)) -eq 0 ] ||
                    die "$s on $idem: $((ex + rp)) requests taken as keyed" ;;
                dup) printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$conns" "$requests" \
                    "$ex" "$rp" "$wt" >>"$notes" ;;
                esac
                printf '  %-34s -c%-4s nginx %8s/s p99 %7s ms   idemgate %8s/s p99 %7s ms\n' \
                    "${label[$s]}" "$conns" "$a_rps" "$a_p99" "$rps" "$p99" >&2
            done
        done
    done

    if [ "$mode" = pinned ] && [ "$BOUNDS" = 1 ]; then
        measure_bounds
    fi

    for n in "${!master_of[@]}"; do
        case $n in *-"$mode") stop_nginx "${gw_of[$n]:-${master_of[$n]}}"; unset "master_of[$n]" "port_of[$n]" ;; esac
    done
    stop_nginx "$upstream_master"
done

mkdir -p "$OUT"
stamp=$(date -u +%Y-%m-%dT%H%MZ)
python3 bench/report.py --tsv "$tsv" --notes "$notes" --bounds "$bounds" --out "$OUT" --stamp "$stamp" \
    --seconds "$SECS" --repeat "$REPEAT" --conns "$CONNS_LIST" --modes "$MODES" \
    --proxy-cpu "$PROXY_CPU" --other-cpu "$OTHER_CPU" --nginx "$NGINX" \
    --command "${BENCH_COMMAND:-bench/run.sh}" \
    --readme "${BENCH_README:-$([ "$OUT" = bench/results ] && echo README.md || echo -)}"
