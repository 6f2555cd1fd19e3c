#!/usr/bin/env bash
# Many writers on one trail: appends per second with 1, 2, 4 and 8
# concurrent writers (each its own connections, as instances of a
# deployment have) against one throwaway Postgres, through the service's
# own append; each on a fresh trail (a database of its own). Postgres' CPU
# per row alongside. Run by hand: bash benches/writers.sh [SECONDS] [GROUP]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
seconds=${1:-10}
group=${2:-64}
setup writers
psql_() { psql -qAt -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }
echo "writers  rows  rows/s  Postgres-us/row  (groups of $group rows, ${seconds}s each)"
for n in 1 2 4 8; do
  psql_ -c "DROP DATABASE IF EXISTS writers" -c "CREATE DATABASE writers"
  pg_before=$(pg_ticks)
  read -r w rows rate <<<"$("$tools" writers "postgres://postgres@127.0.0.1:$pg_port/writers" "$n" "$group" "$seconds")"
  sleep 0.5
  pg_after=$(pg_ticks)
  printf '%7s  %s  %s  %s\n' "$w" "$rows" "$rate" "$(us_per "$pg_before" "$pg_after" "$rows")"
done
