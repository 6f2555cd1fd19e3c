#!/usr/bin/env bash
# Compares builds of the service in one run (run by hand, not by the tests):
#   bash benches/builds.sh ROUNDS REQUESTS DIR...
# Each DIR holds a release `vnid` and its `load_tools` (from
# target/release/deps/load_tools-*), built as one variant: another commit,
# allocator or target CPU. On one throwaway Postgres and Redis with 100,000
# generated people, each round runs every variant in turn: its hello
# baseline (h2load), cache-hit checks without a trail (h2load, as load.sh's
# hit-cache, flat out and at a fixed 5,000 req/s), checks with the trail
# and without (load_tools drive, each call its own request_id, as load.sh's
# audit rows), cache hits of the in-process cache (no Redis: the embedded
# default's cache, h2load), and cache misses without a trail (h2load, as
# load.sh's miss-cache: each call a mirror read, flat out and at 5,000
# req/s).
# Machines this size are noisy: compare variants within a run, round by
# round.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:?rounds}; requests=${2:?requests}; shift 2
[ $# -gt 0 ] || { echo "usage: benches/builds.sh ROUNDS REQUESTS DIR..." >&2; exit 2; }
for dir in "$@"; do
  [ -x "$dir/vnid" ] && [ -x "$dir/load_tools" ] || { echo "$dir: needs vnid and load_tools" >&2; exit 2; }
done

source benches/common.sh
need_h2load
setup builds
populate 100000 7
"$tools" frame verify "$person_id" "$person_name" "$work/verify.bin"
"$tools" frame hello "$work/hello.bin"

# stop NAME: stops the server started as NAME.
stop() { kill "$(cat "$work/$1.pid")"; wait "$(cat "$work/$1.pid")" 2>/dev/null || true; }

for round in $(seq "$rounds"); do
  for dir in "$@"; do
    v=$(basename "$dir")
    echo "== round $round: $v"
    vnid="$dir/vnid" tools="$dir/load_tools"
    port=$(free_port)
    start_hello "hello-$v" "$port"
    run "hello-$v" "$port" "$hello_path" "$work/hello.bin" "$requests" -c 8 -m 16
    stop "hello-$v"

    port=$(free_port)
    start_vnid_without_trail "checks-$v" "$port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/"
    warm "$port"
    run "checks-$v" "$port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
    cp "$work/checks-$v.pid" "$work/checks-5000-$v.pid"
    run "checks-5000-$v" "$port" "$verify_path" "$work/verify.bin" 50000 -c 10 --rps 500
    cp "$work/checks-$v.pid" "$work/noaudit-$v.pid"
    drive "noaudit-$v" "$port" "$requests"
    stop "checks-$v"

    port=$(free_port)
    start_vnid_without_trail "memory-$v" "$port"
    warm "$port"
    run "memory-$v" "$port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
    stop "memory-$v"

    port=$(free_port)
    start_vnid "audit-$v" "$port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/"
    drive "audit-$v" "$port" "$requests"
    stop "audit-$v"

    port=$(free_port)
    start_vnid_without_trail "misses-$v" "$port" VNID__CACHE__ENABLED=false
    run "misses-$v" "$port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
    cp "$work/misses-$v.pid" "$work/misses-5000-$v.pid"
    run "misses-5000-$v" "$port" "$verify_path" "$work/verify.bin" 50000 -c 10 --rps 500
    stop "misses-$v"

    ratio() { echo "scale=4; $(cat "$work/$1.rate") / $(cat "$work/$2.rate")" | bc; }
    printf '%s: ratio cache-hit checks/hello %.2f, audit/no audit %.2f\n' "$v" \
      "$(ratio "checks-$v" "hello-$v")" "$(ratio "audit-$v" "noaudit-$v")"
  done
done
