#!/bin/sh
# redis.sh — runs a command beside a throwaway redis-server.
#
#   tests/servers/redis.sh COMMAND [ARGS...]
#
# Starts redis-server on a free loopback port with its data in a new
# temporary directory (no RDB snapshots, an append-only file fsynced at
# every write, noeviction), waits until it answers PING, runs COMMAND
# with IDEM_TEST_STORE_URL=redis://127.0.0.1:PORT (and IDEM_TEST_REDIS_PORT,
# IDEM_TEST_REDIS_DIR) in its environment, then stops the server and
# removes the directory whatever happened. Exits with COMMAND's status.
set -u

dir=$(mktemp -d /tmp/idem-redis-XXXXXX) || exit 1
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') || exit 1
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

IDEM_TEST_STORE_URL="redis://127.0.0.1:$port" \
IDEM_TEST_REDIS_PORT="$port" IDEM_TEST_REDIS_DIR="$dir" "$@"
