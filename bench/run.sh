#!/bin/bash
# run.sh — idemgate against plain nginx, side by side, in one run.
#
#   demo API (build/inquiries, POST/GET /bench: a small fixed answer)
#     ^                         ^
#     | proxy_pass              | proxy_pass + idempotency on (LMDB, durable)
#   plain nginx :P1           nginx with the module :P2
#     ^                         ^
#     wrk, one after the other, same settings
#
# Scenarios: GET passthrough, POST without a key (passthrough), POST with a
# new key per request (claim + complete, both durable), POST with one key
# (replays). Each result is given as requests/s and as a ratio to plain
# nginx on the same request. With redis-server installed, the two keyed
# scenarios run again on a third nginx whose store is a throwaway Redis
# (appendfsync always, loopback). Settings: BENCH_SECONDS (5), BENCH_CONNS
# (32), BENCH_WORKERS (1), BUILD (build).
#
# On a machine of two cores or more, each proxy (its workers and their
# thread pool) runs on CPU BENCH_PROXY_CPU (0), and wrk, the demo API and
# Redis on CPU BENCH_OTHER_CPU (1), so that the ratio shows the proxy's own
# cost, not a fight for one core.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECONDS_EACH=${BENCH_SECONDS:-5}
CONNS=${BENCH_CONNS:-32}
WORKERS=${BENCH_WORKERS:-1}
NGINX=${NGINX_BIN:-/usr/sbin/nginx}

run=$(mktemp -d /tmp/idem-bench-XXXXXX)
chmod 0777 "$run"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$run"
}
trap cleanup EXIT

pin_proxy=() pin_other=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    pin_proxy=(taskset -c "${BENCH_PROXY_CPU:-0}")
    pin_other=(taskset -c "${BENCH_OTHER_CPU:-1}")
fi

port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
API=$(port); P1=$(port); P2=$(port)

"${pin_other[@]}" "$BUILD/inquiries" --listen "127.0.0.1:$API" >/dev/null 2>&1 &
pids+=($!)

user=""
[ "$(id -u)" = 0 ] && user="user nobody nogroup;"

conf() {  # conf NAME PORT MODULE-LINES LOCATION-LINES
    mkdir -p "$run/$1"
    cat >"$run/$1/nginx.conf" <<CONF
$3
worker_processes $WORKERS;
daemon off;
pid $run/$1/nginx.pid;
error_log $run/$1/error.log warn;
$user
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $run/$1/body;
    proxy_temp_path $run/$1/proxy;
    fastcgi_temp_path $run/$1/fastcgi;
    uwsgi_temp_path $run/$1/uwsgi;
    scgi_temp_path $run/$1/scgi;
    client_body_buffer_size 1m;
    upstream api { server 127.0.0.1:$API; keepalive 64; }
    $( [ -n "$3" ] && echo "idempotency_store ${STORE_URL:-lmdb:$run/$1/data${STORE_OPTS:-}};" )
    server {
        listen 127.0.0.1:$2;
        location / {
            $4
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ignore_client_abort on;
            proxy_pass http://api;
        }
    }
}
CONF
    [ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$run/$1"
    "${pin_proxy[@]}" "$NGINX" -p "$run/$1" -c "$run/$1/nginx.conf" &
    pids+=($!)
}

conf plain "$P1" "" ""
conf idem "$P2" "load_module $PWD/$BUILD/ngx_http_idempotency_module.so;" \
    "idempotency on;"

# the same module on a Redis store, when there is a redis-server
P3=""
if command -v redis-server >/dev/null 2>&1; then
    RP=$(port); P3=$(port)
    mkdir -p "$run/redis"
    "${pin_other[@]}" redis-server --bind 127.0.0.1 --port "$RP" --dir "$run/redis" --save '' \
        --appendonly yes --appendfsync always --maxmemory-policy noeviction \
        --daemonize no --logfile "$run/redis/redis.log" &
    pids+=($!)
    for _ in $(seq 100); do
        redis-cli -p "$RP" ping 2>/dev/null | grep -q PONG && break
        sleep 0.05
    done
    STORE_URL="redis://127.0.0.1:$RP?prefix=bench:" conf idemredis "$P3" \
        "load_module $PWD/$BUILD/ngx_http_idempotency_module.so;" \
        "idempotency on;"
fi

for p in "$API" "$P1" "$P2" $P3; do
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break
        sleep 0.05
    done
done

rps() {  # rps PORT [SCRIPT]
    local script=()
    [ -n "${2:-}" ] && script=(-s "bench/$2")
    "${pin_other[@]}" wrk -t1 -c"$CONNS" -d"${SECONDS_EACH}s" "${script[@]}" \
        "http://127.0.0.1:$1/bench" | awk '/Requests\/sec/ {print $2}'
}

printf '%-34s %12s %12s %8s\n' scenario "nginx rps" "idemgate rps" ratio
best() {  # best A B: the larger of two figures
    echo "if ($1 > $2) $1 else $2" | bc -l
}

row() {  # row NAME PLAIN-SCRIPT IDEM-SCRIPT [PORT]: interleaved, best of two
    local a1 b1 a2 b2 a b q=${4:-$P2}
    a1=$(rps "$P1" "$2"); b1=$(rps "$q" "$3")
    a2=$(rps "$P1" "$2"); b2=$(rps "$q" "$3")
    a=$(best "$a1" "$a2"); b=$(best "$b1" "$b2")
    printf '%-34s %12.0f %12.0f %8.2f\n' "$1" "$a" "$b" \
        "$(echo "$b / $a" | bc -l)"
}

# warm both up (connections to the API, page cache, LMDB file)
SECONDS_EACH=1 rps "$P1" "" >/dev/null
SECONDS_EACH=1 rps "$P2" newkey.lua >/dev/null

row "GET (passthrough)" "" ""
row "POST without key (passthrough)" nokey.lua nokey.lua
row "POST, one key (replays)" nokey.lua replay.lua
row "POST, new key each (durable)" nokey.lua newkey.lua
if [ -n "$P3" ]; then
    SECONDS_EACH=1 rps "$P3" newkey.lua >/dev/null
    row "POST, one key (replays), Redis" nokey.lua replay.lua "$P3"
    row "POST, new key each (Redis, fsync)" nokey.lua newkey.lua "$P3"
fi
