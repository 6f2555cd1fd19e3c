#!/usr/bin/env bash
# Many writers on one trail: appends per second with 1, 2, 4 and 8
# concurrent writers (each its own connections, as instances of a
# deployment have) against one throwaway Postgres, through the service's
# own append; each on a fresh trail (a database of its own). Postgres' CPU
# per row alongside. Then the same writers each on a trail of its own (no
# head shared: the most any split of the chain could give), so the two
# curves show whether the head's lock is what limits them.
# Run by hand: bash benches/writers.sh [SECONDS] [GROUP]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
seconds=${1:-10}
group=${2:-64}
setup writers
psql_() { psql -qAt -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }
echo "trails  writers  rows  rows/s  Postgres-us/row  (groups of $group rows, ${seconds}s each)"
for trails in one apart; do
  for n in 1 2 4 8; do
    for w in $(seq 0 7); do psql_ -c "DROP DATABASE IF EXISTS writers$w"; done
    if [ "$trails" = one ]; then
      psql_ -c "CREATE DATABASE writers0"
      url="postgres://postgres@127.0.0.1:$pg_port/writers0"
    else
      for w in $(seq 0 $((n - 1))); do psql_ -c "CREATE DATABASE writers$w"; done
      url="postgres://postgres@127.0.0.1:$pg_port/writers{w}"
    fi
    pg_before=$(pg_ticks)
    read -r w rows rate <<<"$("$tools" writers "$url" "$n" "$group" "$seconds")"
    sleep 0.5
    pg_after=$(pg_ticks)
    printf '%6s  %7s  %s  %s  %s\n' "$trails" "$w" "$rows" "$rate" "$(us_per "$pg_before" "$pg_after" "$rows")"
  done
done
