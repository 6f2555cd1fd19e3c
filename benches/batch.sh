#!/usr/bin/env bash
# Batch benchmark (run by hand, not by the tests):
#   bash benches/batch.sh [CANDIDATES] [UNARY]     (defaults 1000000, 100000)
# Starts a throwaway Postgres and Redis, imports a generated population of
# CANDIDATES + UNARY people and starts one release `vnid serve` (Redis cache,
# durable audit trail). In the same run it then measures:
#   1. unary Verify: load_tools drive-file, 8 connections x 16 concurrent
#      calls, over the last UNARY people;
#   2. VerifyBatch: `vnid verify-batch` (one stream, the real client, which
#      writes the results file) over the first CANDIDATES people.
# Every person is checked once, with the name, birth date and gender an exam
# board holds: each check is a cache miss, a mirror read and an audit row,
# and neither run warms the cache for the other. Reports items/s, the ratio
# batch/unary, CPU per item of vnid, Postgres, Redis and the client (next to
# what 60 s for the lot would allow), and checks that every candidate has
# exactly one results row. BATCH_WINDOW sets batch.window.
set -euo pipefail
cd "$(dirname "$0")/.."
candidates="${1:-1000000}"
unary="${2:-100000}"
people=$((candidates + unary))

source benches/common.sh
setup batch

echo "== $people people into Postgres"
"$vnid" gen-population --count "$people" --province 082 --seed 11 --out "$work/people.csv"
"$vnid" import "$work/people.csv" 2>&1 | tail -1
split_candidates "$work/people.csv" "$work/candidates.csv:$candidates" "$work/unary.csv:$unary"

port=$(free_port)
start_vnid server "$port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/" \
  ${BATCH_WINDOW:+VNID__BATCH__WINDOW=$BATCH_WINDOW}
pid=$(cat "$work/server.pid")
now() { date +%s.%N; }

echo "== unary Verify: $unary calls, 8 connections x 16 streams"
before=$(ticks "$pid"); pg_before=$(pg_ticks)
read -r unary_rate p50 p99 ok < <("$tools" drive-file "127.0.0.1:$port" "$work/unary.csv" "$unary" 8 16)
after=$(ticks "$pid"); pg_after=$(pg_ticks)
[ "$ok" = "$unary" ] || echo "FAILED: $ok of $unary calls succeeded"
printf 'unary       %9.0f checks/s  p50 %s ms, p99 %s ms  vnid CPU %s us, Postgres %s us per check\n' \
  "$unary_rate" "$p50" "$p99" "$(us_per "$before" "$after" "$unary")" "$(us_per "$pg_before" "$pg_after" "$unary")"

echo "== VerifyBatch: $candidates candidates through vnid verify-batch (one stream)"
before=$(ticks "$pid"); pg_before=$(pg_ticks); redis_before=$(ticks "$redis_pid")
commits_before=$(commits); rows_before=$(audit_rows); appends_before=$(appends)
start=$(now)
# The client's own CPU (user and system seconds) into client.time.
/usr/bin/time -f '%U %S' -o "$work/client.time" \
  "$vnid" verify-batch --quiet --server "http://127.0.0.1:$port" --purpose examination \
  --input "$work/candidates.csv" --output "$work/results.csv" 2>"$work/client.log" || { cat "$work/client.log"; exit 1; }
end=$(now)
after=$(ticks "$pid"); pg_after=$(pg_ticks); redis_after=$(ticks "$redis_pid")
secs=$(echo "$end - $start" | bc)
batch_rate=$(echo "$candidates / $secs" | bc)
client_us=$(awk -v n="$candidates" '{printf "%.1f", ($1 + $2) * 1e6 / n}' "$work/client.time")
printf 'batch       %9d items/s   %.1f s for %d  vnid CPU %s us, Postgres %s us, Redis %s us, client %s us per item\n' \
  "$batch_rate" "$secs" "$candidates" "$(us_per "$before" "$after" "$candidates")" "$(us_per "$pg_before" "$pg_after" "$candidates")" \
  "$(us_per "$redis_before" "$redis_after" "$candidates")" "$client_us"
printf '            the goal (1,000,000 in 60 s) leaves %.1f us of CPU per item on %d cores, all four together\n' \
  "$(echo "scale=4; 60 * $(nproc) * 1000000 / 1000000" | bc)" "$(nproc)"
tail -1 "$work/client.log"
rows=$(( $(audit_rows) - rows_before )); groups=$(( $(appends) - appends_before ))
echo "audit rows written: $rows in $groups group commits ($(( rows / (groups > 0 ? groups : 1) )) rows each), of $(( $(commits) - commits_before )) Postgres transactions (all of them: group commits, reads, polls)"
python3 - "$work/results.csv" "$candidates" <<'PY'
import collections, csv, sys
rows = list(csv.DictReader(open(sys.argv[1], encoding="utf-8")))
ids = collections.Counter(r["request_id"] for r in rows)
want = {f"cand-{i}" for i in range(int(sys.argv[2]))}
dup = sum(1 for c in ids.values() if c > 1)
print(f"results: {len(rows)} rows, {len(want - set(ids))} candidates missing, {dup} written twice;",
      dict(collections.Counter(r["verdict"] or r["error_code"] + " " + r["error_reason"] for r in rows)))
PY
printf 'ratio batch/unary %.2f\n' "$(echo "scale=4; $batch_rate / $unary_rate" | bc)"
