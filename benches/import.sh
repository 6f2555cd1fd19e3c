#!/usr/bin/env bash
# Import benchmark (run by hand, not by the tests):
#   bash benches/import.sh [COUNT]      (default 2093800: Tiền Giang)
# Generates a province with `vnid gen-population`, imports it into a
# throwaway Postgres with `vnid import`, and in the same run loads the same
# file with `psql \copy` into an empty table of text columns. Reports rows/s
# for both, their ratio, and vnid's resident memory sampled across the load.
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-2093800}"

pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d /tmp/vnid-bench-import.XXXXXX)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres:postgres "$work"
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
cleanup() {
  [ -n "${pg_pid:-}" ] && kill -INT "$pg_pid" 2>/dev/null && wait "$pg_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# Statements over 300 ms land in $work/pg.log; kept on exit as /tmp/vnid-bench-import-pg.log.
trap 'cp "$work/pg.log" /tmp/vnid-bench-import-pg.log 2>/dev/null || true; cleanup' EXIT

echo "== building (release)"
cargo build --release --quiet
vnid="$PWD/target/release/vnid"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/data" --auth=trust --username=postgres --no-sync -E UTF8 --locale=C >/dev/null
"${as_pg[@]}" "$pg_bin/postgres" -D "$work/data" -k "$work" -p "$port" \
  -c listen_addresses=127.0.0.1 -c max_wal_size=4GB -c shared_buffers=512MB -c log_min_duration_statement=300 >"$work/pg.log" 2>&1 &
pg_pid=$!
until grep -q "ready to accept connections" "$work/pg.log"; do sleep 0.1; done
url="postgres://postgres@127.0.0.1:$port/postgres"

echo "== generating $count people (province 082)"
gen_start=$(date +%s.%N)
"$vnid" gen-population --count "$count" --province 082 --seed 1 --out "$work/people.csv"
gen_end=$(date +%s.%N)
ls -l "$work/people.csv" | awk '{printf "file: %.1f MiB\n", $5/1048576}'
printf 'generated in %.1f s\n' "$(echo "$gen_end - $gen_start" | bc)"

psql -q "$url" -c "SELECT 1" >/dev/null

# Each load starts after a checkpoint, so neither pays for the other's
# dirty buffers; the baseline goes first.
psql -q "$url" -c "CREATE TABLE bare (id_number text, full_name text, date_of_birth text, gender text,
  old_id_numbers text, place_of_origin text, permanent_residence text, status text,
  household_id text, relation_to_head text, updated_at timestamptz)"
psql -q "$url" -c "CHECKPOINT"
echo "== psql \\copy into an empty table"
start=$(date +%s.%N)
psql -q "$url" -c "\\copy bare FROM '$work/people.csv' WITH (FORMAT csv, HEADER true)"
end=$(date +%s.%N)
copy_secs=$(echo "$end - $start" | bc)
copy_rate=$(echo "$count / $copy_secs" | bc)
psql -q "$url" -c "CHECKPOINT"

echo "== vnid import (full load)"
start=$(date +%s.%N)
VNID__DATABASE_URL="$url" "$vnid" import "$work/people.csv" 2>"$work/import.log" &
import_pid=$!
: >"$work/rss"
while kill -0 "$import_pid" 2>/dev/null; do
  awk '/VmRSS/ {print $2}' "/proc/$import_pid/status" 2>/dev/null >>"$work/rss" || true
  sleep 0.5
done
wait "$import_pid"
end=$(date +%s.%N)
tail -1 "$work/import.log"
vnid_secs=$(echo "$end - $start" | bc)
vnid_rate=$(echo "$count / $vnid_secs" | bc)

echo
echo "== results ($count rows, $(nproc) cores)"
printf 'vnid import : %6.1f s  %8d rows/s\n' "$vnid_secs" "$vnid_rate"
printf 'psql \\copy  : %6.1f s  %8d rows/s\n' "$copy_secs" "$copy_rate"
printf 'ratio       : %.2f x \\copy\n' "$(echo "scale=4; $vnid_rate / $copy_rate" | bc)"
sort -n "$work/rss" | awk '{a[NR]=$1} END {printf "vnid RSS    : min %.1f MiB, median %.1f MiB, max %.1f MiB over %d samples\n", a[1]/1024, a[int((NR+1)/2)]/1024, a[NR]/1024, NR}'
awk 'NR>2 {print $1}' "$work/rss" | awk '{v[NR]=$1} END {n=NR; q=int(n/4); if (q<1) exit; s1=0; s4=0; for(i=1;i<=q;i++){s1+=v[i]; s4+=v[n-q+i]}; printf "vnid RSS    : first quarter mean %.1f MiB, last quarter mean %.1f MiB\n", s1/q/1024, s4/q/1024}'
