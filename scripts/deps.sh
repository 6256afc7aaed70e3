#!/bin/sh
# deps.sh — installs the Debian packages idemgate needs to build, test and run.
#
# Called by `make deps` (and so by `make test` and `make run`). Checks each
# package with dpkg; when some are missing it installs them with apt-get if
# run as root, and otherwise prints the exact command to run and fails.
set -eu

PACKAGES="
build-essential pkg-config clang libclang-rt-14-dev clang-format
liblmdb-dev lmdb-utils libjansson-dev libssl-dev libcmocka-dev
libpq-dev postgresql
libhiredis-dev redis-server
nginx nginx-dev
python3-pytest python3-requests python3-prometheus-client
wrk gnuplot-nox valgrind procps bc curl
ca-certificates openssl man-db groff-base dpkg-dev systemd
"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

# node and npm run the real API client SDKs of the end-to-end tests; a
# machine may have them from elsewhere than Debian's packages
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    missing="$missing nodejs npm"
fi

[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "idemgate needs these Debian packages:$missing" >&2
    echo "run: sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
fi

echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packaged nginx must not start a system server of its own: policy-rc.d
# refuses service starts for the length of the install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
apt-get install -y -qq --no-install-recommends $missing
[ "$created_policy" = 1 ] && rm -f "$policy"
exit 0
