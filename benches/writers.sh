#!/usr/bin/env bash
# Many writers on one trail: appends per second with 1, 2, 4 and 8
# concurrent writers (each its own connections, as instances of a
# deployment have) against one throwaway Postgres, through the service's
# own append; each run on a fresh trail (a database of its own), Postgres'
# CPU per row alongside. Three ways: the trail as one chain (every append
# through one head's lock, as before chains), as 8 chains (the default:
# each writer takes a chain of its own), and each writer on a trail of its
# own (nothing shared: the most any split could give).
# Run by hand: bash benches/writers.sh [SECONDS] [GROUP]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
seconds=${1:-10}
group=${2:-64}
setup writers
psql_() { psql -qAt -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }
echo "trail  writers  rows  rows/s  Postgres-us/row  (groups of $group rows, ${seconds}s each)"
export PGOPTIONS='-c client_min_messages=warning'
for trails in one-chain 8-chains apart; do
  for n in 1 2 4 8; do
    for w in $(seq 0 7); do psql_ -c "DROP DATABASE IF EXISTS writers$w"; done
    chains=1
    if [ "$trails" = apart ]; then
      for w in $(seq 0 $((n - 1))); do psql_ -c "CREATE DATABASE writers$w"; done
      url="postgres://postgres@127.0.0.1:$pg_port/writers{w}"
    else
      [ "$trails" = 8-chains ] && chains=8
      psql_ -c "CREATE DATABASE writers0"
      url="postgres://postgres@127.0.0.1:$pg_port/writers0"
    fi
    pg_before=$(pg_ticks)
    read -r w rows rate <<<"$("$tools" writers "$url" "$n" "$group" "$seconds" "$chains")"
    sleep 0.5
    pg_after=$(pg_ticks)
    printf '%9s  %7s  %s  %s  %s\n' "$trails" "$w" "$rows" "$rate" "$(us_per "$pg_before" "$pg_after" "$rows")"
  done
done
