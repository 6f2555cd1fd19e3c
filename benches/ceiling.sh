#!/usr/bin/env bash
# How close a cache-hit check can come to hello (run by hand, not by the tests):
#   bash benches/ceiling.sh [ROUNDS] [REQUESTS]     (defaults 4, 100000)
# Each round drives three servers in turn with h2load (8 connections x 16
# streams): the hello baseline of benches/load_tools.rs; the same hello
# signing a typical attestation per call ("signed"), the least any check
# does, since every answer is signed anew; and cache-hit checks on a release
# `vnid serve` with Redis and without a trail (load.sh's hit-cache row). It
# prints each rate and the server's CPU per request, then the ratios
# signed/hello, check/hello and check/signed of the round. A check does all
# that signed hello does and more, so signed/hello bounds check/hello (up to
# the machine's noise between the runs of a round).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-4}"
requests="${2:-100000}"

source benches/common.sh
need_h2load
setup ceiling
populate 10000 7
"$tools" frame verify "$person_id" "$person_name" "$work/verify.bin"
"$tools" frame hello "$work/hello.bin"

check_port=$(free_port)
start_vnid_without_trail check "$check_port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/"
hello_port=$(free_port)
start_hello hello "$hello_port"
signed_port=$(free_port)
start_hello signed "$signed_port" signed
warm "$check_port"

share() { echo "scale=4; $(cat "$work/$1.rate") / $(cat "$work/$2.rate")" | bc; }
for round in $(seq "$rounds"); do
  echo "== round $round"
  for name in hello signed check; do cp "$work/$name.pid" "$work/$name-$round.pid"; done
  run "hello-$round" "$hello_port" "$hello_path" "$work/hello.bin" "$requests" -c 8 -m 16
  run "signed-$round" "$signed_port" "$hello_path" "$work/hello.bin" "$requests" -c 8 -m 16
  run "check-$round" "$check_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
  printf 'round %d: signed/hello %.2f  check/hello %.2f  check/signed %.2f\n' "$round" \
    "$(share "signed-$round" "hello-$round")" "$(share "check-$round" "hello-$round")" \
    "$(share "check-$round" "signed-$round")"
done
