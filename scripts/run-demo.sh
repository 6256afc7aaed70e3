#!/bin/sh
# run-demo.sh — `make run`: the demo Inquiries API on 127.0.0.1:8081 and
# idemgate in front of it on 127.0.0.1:8080, with the LMDB store in
# ./idemgate-data. Ctrl-C (or SIGTERM) stops both.
set -eu

BUILD=${BUILD:-build}
LISTEN=${LISTEN:-127.0.0.1:8080}
API=${API:-127.0.0.1:8081}
ADMIN=${ADMIN:-127.0.0.1:8082}

"$BUILD/inquiries" --listen "$API" &
api_pid=$!

cleanup() {
    kill "$api_pid" 2>/dev/null || true
    wait "$api_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

cat <<MSG

  idemgate listens on http://$LISTEN in front of the demo Inquiries API
  (http://$API); keys are stored in ./idemgate-data; admin on http://$ADMIN.
  Try it:

    curl -i -X POST http://$LISTEN/api/v1/inquiries \\
         -H 'Idempotency-Key: abc_123' -H 'Content-Type: application/json' \\
         -d '{"data":{"attributes":{"name-first":"Jane"}}}'

  Run it again: the same answer, with Idempotent-Replayed: true. Change the
  body and keep the key: 400 "Idempotency error". Ctrl-C stops.

MSG

"$BUILD/idemgate" --listen "$LISTEN" --upstream "http://$API" \
    --store lmdb:./idemgate-data --admin "$ADMIN" --api-log - &
gate_pid=$!
trap 'kill -TERM "$gate_pid" 2>/dev/null; wait "$gate_pid"; exit 0' INT TERM
wait "$gate_pid"
