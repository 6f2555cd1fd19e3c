#!/usr/bin/env bash
# Compares builds on the batch path in one run (run by hand, not by the
# tests):
#   bash benches/batch_builds.sh ROUNDS ITEMS DIR...
# Each DIR holds a release `vnid` built as one variant (another commit,
# say). On one throwaway Postgres and Redis, with ROUNDS x (number of DIRs)
# x ITEMS generated people, each round runs every variant in turn: its
# server (Redis cache, durable audit trail), and its `vnid verify-batch`
# over ITEMS people no run has checked before, so that every item is a cache
# miss, a mirror read and an audit row, as in batch.sh. Reports items/s and
# the CPU per item of vnid, Postgres, Redis and the client. Machines this
# size are noisy: compare variants within a run, round by round; odd
# rounds run them in the order given, even rounds in reverse.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:?rounds}; items=${2:?items}; shift 2
[ $# -gt 0 ] || { echo "usage: benches/batch_builds.sh ROUNDS ITEMS DIR..." >&2; exit 2; }
for dir in "$@"; do
  [ -x "$dir/vnid" ] || { echo "$dir: needs vnid" >&2; exit 2; }
done

source benches/common.sh
setup batch-builds
slices=()
for k in $(seq $((rounds * $#))); do slices+=("$work/slice-$k.csv:$items"); done
echo "== $((rounds * $# * items)) people into Postgres"
"$vnid" gen-population --count "$((rounds * $# * items))" --province 082 --seed 11 --out "$work/people.csv"
"$vnid" import "$work/people.csv" 2>&1 | tail -1
split_candidates "$work/people.csv" "${slices[@]}"

# Later runs meet a longer trail and a busier Postgres: every other round
# runs the variants in reverse, so that no variant always goes first.
reversed=()
for dir in "$@"; do reversed=("$dir" "${reversed[@]}"); done
k=0
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then order=("$@"); else order=("${reversed[@]}"); fi
  for dir in "${order[@]}"; do
    k=$((k + 1))
    v=$(basename "$dir")
    port=$(free_port)
    vnid="$dir/vnid"
    start_vnid "batch-$k" "$port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/"
    pid=$(cat "$work/batch-$k.pid")
    before=$(ticks "$pid"); pg_before=$(pg_ticks); redis_before=$(ticks "$redis_pid")
    start=$(date +%s.%N)
    /usr/bin/time -f '%U %S' -o "$work/client.time" \
      "$vnid" verify-batch --quiet --server "http://127.0.0.1:$port" --purpose examination \
      --input "$work/slice-$k.csv" --output "$work/results-$k.csv" 2>"$work/client.log" || { cat "$work/client.log"; exit 1; }
    end=$(date +%s.%N)
    after=$(ticks "$pid"); pg_after=$(pg_ticks); redis_after=$(ticks "$redis_pid")
    printf 'round %d %-12s %7.0f items/s  vnid %6s us, Postgres %6s us, Redis %5s us, client %5s us per item  [%s]\n' \
      "$round" "$v" "$(echo "$items / ($end - $start)" | bc -l)" \
      "$(us_per "$before" "$after" "$items")" "$(us_per "$pg_before" "$pg_after" "$items")" \
      "$(us_per "$redis_before" "$redis_after" "$items")" \
      "$(awk -v n="$items" '{printf "%.1f", ($1 + $2) * 1e6 / n}' "$work/client.time")" \
      "$(tail -1 "$work/client.log" | cut -d';' -f1)"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
