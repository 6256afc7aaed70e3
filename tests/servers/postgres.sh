#!/bin/sh
# postgres.sh — runs a command beside a throwaway PostgreSQL cluster.
#
#   tests/servers/postgres.sh COMMAND [ARGS...]
#
# initdb + pg_ctl (from `pg_config --bindir`, else /usr/lib/postgresql/15/bin)
# in a new directory under /tmp, listening on a free port of 127.0.0.1
# only, its unix socket in that directory, fsync on. PostgreSQL refuses to
# run as root: as root the cluster runs as the user postgres (made by
# Debian's postgresql package; nobody if there is none), its directory
# handed to that user. COMMAND runs with
#
#   IDEM_TEST_STORE_URL       the store URL, with %s where a test's
#                             namespace goes (a table prefix) and
#                             clock=caller, for suites that move time
#   IDEM_TEST_PG_URL          the plain libpq URL of the cluster
#   IDEM_TEST_DEAD_STORE_URL  a store URL on a port where nothing listens
#
# The cluster is stopped and its directory removed however COMMAND ends;
# the script exits with COMMAND's status.
set -eu

bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || bindir=/usr/lib/postgresql/15/bin
if [ ! -x "$bindir/initdb" ]; then
    echo "postgres.sh: no initdb (install postgresql: make deps)" >&2
    exit 1
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

dir=$(mktemp -d /tmp/idem-pg-XXXXXX)
as=""
if [ "$(id -u)" = 0 ]; then
    user=postgres
    id -u "$user" >/dev/null 2>&1 || user=nobody
    chown "$user" "$dir"
    as="runuser -u $user --"
fi
port=$(free_port)
dead=$(free_port)

stop() {
    $as "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop \
        >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

$as "$bindir/initdb" -D "$dir/data" -U postgres -A trust --no-sync \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
$as "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=on -c max_connections=300" \
    start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
"$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 30

base="postgres://postgres@127.0.0.1:$port/postgres"
IDEM_TEST_PG_URL=$base
IDEM_TEST_STORE_URL="$base?connect_timeout=5&clock=caller&table=%s"
IDEM_TEST_DEAD_STORE_URL="postgres://postgres@127.0.0.1:$dead/postgres?connect_timeout=1"
export IDEM_TEST_PG_URL IDEM_TEST_STORE_URL IDEM_TEST_DEAD_STORE_URL

status=0
"$@" || status=$?
exit $status
