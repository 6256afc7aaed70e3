#!/bin/sh
# redis.sh — runs a command beside a throwaway redis-server.
#
#   tests/servers/redis.sh COMMAND [ARGS...]
#
# Starts redis-server on a free loopback port with its data in a new
# temporary directory (no RDB snapshots, an append-only file fsynced at
# every write, noeviction), waits until it answers PING, runs COMMAND with
# these in its environment, then stops the server and removes the
# directory whatever happened. Exits with COMMAND's status.
#
#   IDEM_TEST_STORE_URL       the store URL, with %s where a test's
#                             namespace goes (its key prefix), planning
#                             with the caller's clock (tests move time)
#   IDEM_TEST_REDIS_URL       the plain URL of the server
#   IDEM_TEST_REDIS_PORT      its port (for redis-cli)
#   IDEM_TEST_DEAD_STORE_URL  a store URL on a port where nothing listens
set -u

dir=$(mktemp -d /tmp/idem-redis-XXXXXX) || exit 1
ports=$(python3 -c 'import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])') || exit 1
port=${ports% *}
dead=${ports#* }
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' \
    --appendonly yes --appendfsync always --maxmemory-policy noeviction \
    --daemonize no --logfile "$dir/redis.log" &
pid=$!

i=0
until redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; do
    i=$((i + 1))
    if [ "$i" -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "redis-server did not start on port $port:" >&2
        cat "$dir/redis.log" >&2
        exit 1
    fi
    sleep 0.05
done

IDEM_TEST_REDIS_URL="redis://127.0.0.1:$port"
IDEM_TEST_STORE_URL="$IDEM_TEST_REDIS_URL?prefix=idemtest:%s:&clock=caller"
IDEM_TEST_REDIS_PORT=$port
IDEM_TEST_DEAD_STORE_URL="redis://127.0.0.1:$dead?timeout=500ms"
export IDEM_TEST_REDIS_URL IDEM_TEST_STORE_URL IDEM_TEST_REDIS_PORT \
    IDEM_TEST_DEAD_STORE_URL
"$@"
