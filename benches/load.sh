#!/usr/bin/env bash
# Load benchmark (run by hand, not by the tests):
#   bash benches/load.sh [REQUESTS] [PEOPLE]      (defaults 200000, 100000)
# Starts a throwaway Postgres and Redis, imports a generated population,
# starts the release `vnid serve` twice (cache on; cache off, so every call
# is a cache miss) and the baseline hello-world tonic server of the same
# crate (benches/load_tools.rs), and drives each with h2load (nghttp2-client)
# sending a prepared gRPC frame. Every response is checked to be a whole,
# successful answer: gRPC errors come back as HTTP 200 with no message, so
# the DATA bytes must equal REQUESTS x the size of one good answer.
# Reports throughput, p50/p99 latency, server CPU per request, the ratio
# Verify/hello, and p99 at a fixed 5,000 req/s. A third vnid with the audit
# sink "none" (no trail: for this measurement only) gives what the durable
# audit trail costs: cache hits with the trail vs without, run alternately
# twice (A B A B) in the same run.
# With the trail, h2load's one frame repeats one request_id, so every call
# after the first is a retry, answered from the trail: the "hit" and "miss"
# rows measure that path. The "hit-cache" and "miss-cache" rows measure the
# cache itself, on instances without a trail (hence without retries), where
# every call is a check.
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-200000}"
people="${2:-100000}"
command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }

source benches/common.sh
setup load

echo "== $people people into Postgres"
"$vnid" gen-population --count "$people" --province 082 --seed 7 --out "$work/people.csv"
"$vnid" import "$work/people.csv" 2>&1 | tail -1
# One active person with a full birth date: the request of every call.
person=$(python3 -c '
import csv, sys
for row in csv.DictReader(open(sys.argv[1], encoding="utf-8")):
    if row["status"] == "active" and len(row["date_of_birth"]) == 10:
        print(row["id_number"] + "\t" + row["full_name"]); break' "$work/people.csv")
id=${person%%$'\t'*}
name=${person#*$'\t'}
"$tools" frame verify "$id" "$name" "$work/verify.bin"
"$tools" frame hello "$work/hello.bin"

hit_port=$(free_port); miss_port=$(free_port); hello_port=$(free_port); noaudit_port=$(free_port)
start_vnid hit "$hit_port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/"
start_vnid noaudit "$noaudit_port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/" VNID__AUDIT__SINK=none
start_vnid miss "$miss_port" VNID__CACHE__ENABLED=false
miss_cache_port=$(free_port)
start_vnid miss-cache "$miss_cache_port" VNID__CACHE__ENABLED=false VNID__AUDIT__SINK=none
cp "$work/noaudit.pid" "$work/hit-cache.pid"
"$tools" hello "127.0.0.1:$hello_port" &
pids+=($!)
echo $! >"$work/hello.pid"
wait_port "$hello_port"

# run NAME PORT PATH FRAME N [h2load options...]: prints one result line.
run() {
  local name=$1 port=$2 path=$3 frame=$4 n=$5; shift 5
  local pid; pid=$(cat "$work/$name.pid")
  local args=(-n "$n" -t 1 --header 'content-type: application/grpc' --header 'te: trailers' -d "$frame")
  # The size of one good answer, from one call.
  h2load -n 1 -c 1 "${args[@]:2}" "http://127.0.0.1:$port$path" >"$work/one.out"
  local one; one=$(awk '/^traffic:/ {gsub(/[()]/,""); for (i=1;i<=NF;i++) if ($i=="data") print $(i-1)}' "$work/one.out" | tail -1)
  local before; before=$(ticks "$pid")
  local pg_before; pg_before=$(pg_ticks)
  h2load "${args[@]}" "$@" --log-file="$work/$name.tsv" "http://127.0.0.1:$port$path" >"$work/$name.out"
  local after; after=$(ticks "$pid")
  local pg_after; pg_after=$(pg_ticks)
  local rate; rate=$(awk '/^finished in/ {print $4}' "$work/$name.out")
  local ok; ok=$(awk '/^requests:/ {print $8}' "$work/$name.out")
  local data; data=$(awk '/^traffic:/ {gsub(/[()]/,""); for (i=1;i<=NF;i++) if ($i=="data") print $(i-1)}' "$work/$name.out" | tail -1)
  local check="all $n answers whole and successful"
  if [ "$ok" != "$n" ] || [ "$data" != "$((one * n))" ]; then
    check="FAILED: $ok of $n HTTP-succeeded, $data data bytes, expected $((one * n))"
  fi
  local pcts; pcts=$(cut -f3 "$work/$name.tsv" | sort -n | awk '{a[NR]=$1} END {printf "p50 %.2f ms, p99 %.2f ms", a[int(NR*0.50)]/1000, a[int(NR*0.99)]/1000}')
  local cpu_us; cpu_us=$(us_per "$before" "$after" "$n")
  local pg_us; pg_us=$(us_per "$pg_before" "$pg_after" "$n")
  printf '%-22s %10s req/s  %s  server CPU %6s us/req, Postgres %6s us/req  [%s]\n' "$name" "$rate" "$pcts" "$cpu_us" "$pg_us" "$check"
  echo "$rate" >"$work/$name.rate"
}

echo "== warming the cache"
for port in "$hit_port" "$noaudit_port"; do
  h2load -n 2000 -c 4 -m 8 --header 'content-type: application/grpc' --header 'te: trailers' -d "$work/verify.bin" \
    "http://127.0.0.1:$port/vnid.v1.VerificationService/Verify" >/dev/null
done

if [ -z "${AUDIT_ONLY:-}" ]; then
echo "== load: $requests requests each, 8 connections x 16 streams, one h2load thread ($(nproc) cores)"
run hello "$hello_port" /vnid.bench.v1.HelloService/SayHello "$work/hello.bin" "$requests" -c 8 -m 16
run hit "$hit_port" /vnid.v1.VerificationService/Verify "$work/verify.bin" "$requests" -c 8 -m 16
run miss "$miss_port" /vnid.v1.VerificationService/Verify "$work/verify.bin" "$requests" -c 8 -m 16
run hit-cache "$noaudit_port" /vnid.v1.VerificationService/Verify "$work/verify.bin" "$requests" -c 8 -m 16
run miss-cache "$miss_cache_port" /vnid.v1.VerificationService/Verify "$work/verify.bin" "$requests" -c 8 -m 16
ratio() { echo "scale=4; $(cat "$work/$1.rate") / $(cat "$work/hello.rate")" | bc; }
printf 'ratio Verify/hello     retries: cache hits %.2f, cache misses %.2f; checks without a trail: cache hits %.2f, cache misses %.2f\n' \
  "$(ratio hit)" "$(ratio miss)" "$(ratio hit-cache)" "$(ratio miss-cache)"
fi

commits() { psql -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"; }
audit_rows() { psql -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -c "SELECT count(*) FROM audit_log"; }
# drive NAME PORT N: like run, with load_tools' driver: every call its own
# request_id, so each is a check (h2load's one frame is a retry after the
# first call, answered from the audit trail).
drive() {
  local name=$1 port=$2 n=$3
  local pid; pid=$(cat "$work/$name.pid")
  local before; before=$(ticks "$pid"); local pg_before; pg_before=$(pg_ticks)
  local out; out=$("$tools" drive "127.0.0.1:$port" "$id" "$name_claimed" "$n" 8 16)
  local after; after=$(ticks "$pid"); local pg_after; pg_after=$(pg_ticks)
  read -r rate p50 p99 ok <<<"$out"
  local check="all $n answers successful"
  [ "$ok" = "$n" ] || check="FAILED: $ok of $n succeeded"
  local cpu_us; cpu_us=$(us_per "$before" "$after" "$n")
  local pg_us; pg_us=$(us_per "$pg_before" "$pg_after" "$n")
  printf '%-22s %10s req/s  p50 %s ms, p99 %s ms  server CPU %6s us/req, Postgres %6s us/req  [%s]\n' \
    "$name" "$rate" "$p50" "$p99" "$cpu_us" "$pg_us" "$check"
  echo "$rate" >"$work/$name.rate"
}
name_claimed=$name

echo "== the audit trail's cost: cache hits with it (audit) and without (noaudit), A B A B, each call a new request_id"
commits_before=$(commits); rows_before=$(audit_rows)
cp "$work/hit.pid" "$work/audit.pid"; cp "$work/hit.pid" "$work/audit-2.pid"
cp "$work/noaudit.pid" "$work/noaudit-2.pid"
drive audit "$hit_port" "$requests"
drive noaudit "$noaudit_port" "$requests"
drive audit-2 "$hit_port" "$requests"
drive noaudit-2 "$noaudit_port" "$requests"
printf 'ratio audit/no audit   %.2f, %.2f\n' \
  "$(echo "scale=4; $(cat "$work/audit.rate") / $(cat "$work/noaudit.rate")" | bc)" \
  "$(echo "scale=4; $(cat "$work/audit-2.rate") / $(cat "$work/noaudit-2.rate")" | bc)"
commits_after=$(commits); rows_after=$(audit_rows)
echo "audit rows written: $((rows_after - rows_before)) in $((commits_after - commits_before)) Postgres transactions (all of them, group commits and polls)"
"$vnid" audit verify | cut -c1-60

[ -n "${AUDIT_ONLY:-}" ] && exit 0
echo "== fixed rate: 5000 req/s (10 connections x 500 req/s) for 10 s"
cp "$work/hit.pid" "$work/hit-5000.pid"
run hit-5000 "$hit_port" /vnid.v1.VerificationService/Verify "$work/verify.bin" 50000 -c 10 --rps 500
cp "$work/noaudit.pid" "$work/hit-cache-5000.pid"
run hit-cache-5000 "$noaudit_port" /vnid.v1.VerificationService/Verify "$work/verify.bin" 50000 -c 10 --rps 500
