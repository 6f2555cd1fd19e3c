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
# Verify/hello, and p99 at a fixed 5,000 req/s. A second hello server signs
# an attestation in each answer, as every check must: its ratio to hello is
# the most any check can reach on this machine. A third vnid keeping no
# trail (load_tools serve-without-trail: for this measurement only) gives what the durable
# audit trail costs: cache hits with the trail vs without, run alternately
# twice (A B A B) in the same run. METRICS_ONLY=1 runs only what counting
# for /metrics costs (cache-hit checks with telemetry.metrics on and off,
# A B A B); ALG_ONLY=1 what ES256 costs against EdDSA (the same, signed
# each way); DOORS_ONLY=1 what the JSON door and gRPC-Web cost against
# gRPC (the same server, in turn).
# With the trail, h2load's one frame repeats one request_id, so every call
# after the first is a retry, answered from the trail: the "hit" and "miss"
# rows measure that path. The "hit-cache" and "miss-cache" rows measure the
# cache itself, on instances without a trail (hence without retries), where
# every call is a check.
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-200000}"
people="${2:-100000}"

source benches/common.sh
need_h2load
setup load

populate "$people" 7
"$tools" frame verify "$person_id" "$person_name" "$work/verify.bin"
"$tools" frame hello "$work/hello.bin"

hit_port=$(free_port); miss_port=$(free_port); hello_port=$(free_port); noaudit_port=$(free_port)
start_vnid hit "$hit_port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/"
start_vnid_without_trail noaudit "$noaudit_port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/"
start_vnid miss "$miss_port" VNID__CACHE__ENABLED=false
miss_cache_port=$(free_port)
start_vnid_without_trail miss-cache "$miss_cache_port" VNID__CACHE__ENABLED=false
cp "$work/noaudit.pid" "$work/hit-cache.pid"
start_hello hello "$hello_port"
# Hello that also signs an attestation per call: the floor under a check.
signed_port=$(free_port)
start_hello hello-signed "$signed_port" signed

echo "== warming the cache"
warm "$hit_port"
warm "$noaudit_port"

if [ -n "${METRICS_ONLY:-}" ]; then
  # What counting calls and checks for /metrics costs: cache-hit checks (no
  # trail, so each call is a check) on the server above, which counts, and
  # on one with telemetry.metrics = false, A B A B.
  nometrics_port=$(free_port)
  start_vnid_without_trail nometrics "$nometrics_port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/" VNID__TELEMETRY__METRICS=false
  warm "$nometrics_port"
  echo "== what metrics cost: cache-hit checks counted (metrics) and not (nometrics), A B A B, $requests requests each"
  for r in metrics metrics-2; do cp "$work/noaudit.pid" "$work/$r.pid"; done
  cp "$work/nometrics.pid" "$work/nometrics-2.pid"
  run metrics "$noaudit_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
  run nometrics "$nometrics_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
  run metrics-2 "$noaudit_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
  run nometrics-2 "$nometrics_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
  printf 'ratio metrics/no metrics   %.3f, %.3f\n' \
    "$(echo "scale=4; $(cat "$work/metrics.rate") / $(cat "$work/nometrics.rate")" | bc)" \
    "$(echo "scale=4; $(cat "$work/metrics-2.rate") / $(cat "$work/nometrics-2.rate")" | bc)"
  exit 0
fi

if [ -n "${DOORS_ONLY:-}" ]; then
  # What the other doors cost a check against gRPC, on one server: cache-hit
  # checks (no trail) by gRPC (HTTP/2, 8 connections x 16 streams), by the
  # JSON door over HTTP/1.1 (128 connections) and HTTP/2, and by gRPC-Web
  # over HTTP/1.1; twice, in turn.
  "$tools" json verify "$person_id" "$person_name" "$work/verify.json"
  doors_port=$(free_port)
  start_vnid_without_trail doors "$doors_port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/"
  # The same without the doors (HTTP/2 only, no JSON routes, no gRPC-Web):
  # what serving them costs a gRPC check.
  nodoors_port=$(free_port)
  start_vnid_without_trail nodoors "$nodoors_port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/" \
    VNID__SERVER__JSON_DOOR=false VNID__SERVER__GRPC_WEB=false
  warm "$doors_port"; warm "$nodoors_port"
  echo "== the doors: gRPC, JSON (HTTP/1.1, HTTP/2), gRPC-Web (HTTP/1.1), $requests requests each, twice"
  for round in 1 2; do
    for r in grpc json-h1 json-h2 web-h1; do cp "$work/doors.pid" "$work/$r-$round.pid"; done
    cp "$work/nodoors.pid" "$work/grpc-nodoors-$round.pid"
    run "grpc-nodoors-$round" "$nodoors_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
    run "grpc-$round" "$doors_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
    CONTENT_TYPE=application/json run "json-h1-$round" "$doors_port" /v1/verify "$work/verify.json" "$requests" -c 128 --h1
    CONTENT_TYPE=application/json run "json-h2-$round" "$doors_port" /v1/verify "$work/verify.json" "$requests" -c 8 -m 16
    CONTENT_TYPE=application/grpc-web+proto run "web-h1-$round" "$doors_port" "$verify_path" "$work/verify.bin" "$requests" -c 128 --h1
  done
  for round in 1 2; do
    printf 'gRPC with the doors/without, round %s: server CPU per check %.3f, throughput %.3f\n' "$round" \
      "$(paste -d' ' "$work/grpc-$round.cpu" "$work/grpc-nodoors-$round.cpu" | awk '{printf "%.4f", $1 / $4}')" \
      "$(echo "scale=4; $(cat "$work/grpc-$round.rate") / $(cat "$work/grpc-nodoors-$round.rate")" | bc)"
    for door in json-h1 json-h2 web-h1; do
      printf '%s/gRPC, round %s: server CPU per check %.3f, throughput %.3f\n' "$door" "$round" \
        "$(paste -d' ' "$work/$door-$round.cpu" "$work/grpc-$round.cpu" | awk '{printf "%.4f", $1 / $4}')" \
        "$(echo "scale=4; $(cat "$work/$door-$round.rate") / $(cat "$work/grpc-$round.rate")" | bc)"
    done
  done
  exit 0
fi

if [ -n "${ALG_ONLY:-}" ]; then
  # What ES256 costs a check against EdDSA: cache-hit checks (no trail) by
  # the same agency, signed EdDSA on one instance and ES256 on another,
  # A B A B.
  registry() { echo "[{ id = \"demo\", purposes = [\"healthcare\"], detail = \"fields\", least_strict_name_match = \"partial\", attestation_alg = \"$1\" }]"; }
  eddsa_port=$(free_port); es256_port=$(free_port)
  start_vnid_without_trail eddsa "$eddsa_port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/" VNID__PLAINTEXT_OPERATOR= VNID__AGENCIES="$(registry EdDSA)"
  start_vnid_without_trail es256 "$es256_port" VNID__REDIS_URL="redis://127.0.0.1:$redis_port/" VNID__PLAINTEXT_OPERATOR= VNID__AGENCIES="$(registry ES256)"
  warm "$eddsa_port"; warm "$es256_port"
  echo "== ES256 against EdDSA: cache-hit checks, A B A B, $requests requests each"
  cp "$work/eddsa.pid" "$work/eddsa-2.pid"; cp "$work/es256.pid" "$work/es256-2.pid"
  run eddsa "$eddsa_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
  run es256 "$es256_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
  run eddsa-2 "$eddsa_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
  run es256-2 "$es256_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
  for pair in "es256 eddsa" "es256-2 eddsa-2"; do
    read -r e d <<<"$pair"
    printf 'ES256/EdDSA: throughput %.3f, server CPU per check %.3f\n' \
      "$(echo "scale=4; $(cat "$work/$e.rate") / $(cat "$work/$d.rate")" | bc)" \
      "$(paste -d' ' "$work/$e.cpu" "$work/$d.cpu" | awk '{printf "%.4f", $1 / $4}')"
  done
  exit 0
fi

if [ -z "${AUDIT_ONLY:-}" ]; then
echo "== load: $requests requests each, 8 connections x 16 streams, one h2load thread ($(nproc) cores)"
run hello "$hello_port" "$hello_path" "$work/hello.bin" "$requests" -c 8 -m 16
run hello-signed "$signed_port" "$hello_path" "$work/hello.bin" "$requests" -c 8 -m 16
run hit "$hit_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
run miss "$miss_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
run hit-cache "$noaudit_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
run miss-cache "$miss_cache_port" "$verify_path" "$work/verify.bin" "$requests" -c 8 -m 16
ratio() { echo "scale=4; $(cat "$work/$1.rate") / $(cat "$work/hello.rate")" | bc; }
printf 'ratio Verify/hello     retries: cache hits %.2f, cache misses %.2f; checks without a trail: cache hits %.2f, cache misses %.2f\n' \
  "$(ratio hit)" "$(ratio miss)" "$(ratio hit-cache)" "$(ratio miss-cache)"
printf 'ratio signed hello/hello %.2f: the most a check can reach while it signs its answer; cache-hit checks reach %.2f of signed hello\n' \
  "$(ratio hello-signed)" "$(echo "scale=4; $(cat "$work/hit-cache.rate") / $(cat "$work/hello-signed.rate")" | bc)"
# Before the audit part: its appends leave Postgres checkpointing and
# vacuuming for a while, which would blur the tail.
echo "== fixed rate: 5000 req/s (10 connections x 500 req/s) for 10 s"
cp "$work/hit.pid" "$work/hit-5000.pid"
run hit-5000 "$hit_port" "$verify_path" "$work/verify.bin" 50000 -c 10 --rps 500
cp "$work/noaudit.pid" "$work/hit-cache-5000.pid"
run hit-cache-5000 "$noaudit_port" "$verify_path" "$work/verify.bin" 50000 -c 10 --rps 500
fi


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
if [ "$(nproc)" -ge 2 ]; then
  # Again with the database on a core of its own, as it is on servers of
  # its own in a deployment: vnid and the driver on core 0, Postgres and
  # Redis on core 1. What the trail then costs is what it costs the service.
  echo "== the same, with Postgres and Redis on core 1, vnid and the driver on core 0"
  pin 1 "$pg_pid" $(pgrep -P "$pg_pid") "$redis_pid"
  pin 0 "$(cat "$work/hit.pid")" "$(cat "$work/noaudit.pid")"
  for r in audit-pinned noaudit-pinned audit-pinned-2 noaudit-pinned-2; do
    cp "$work/${r%%-pinned*}.pid" "$work/$r.pid"
  done
  DRIVE_CPUS=0 drive audit-pinned "$hit_port" "$requests"
  DRIVE_CPUS=0 drive noaudit-pinned "$noaudit_port" "$requests"
  DRIVE_CPUS=0 drive audit-pinned-2 "$hit_port" "$requests"
  DRIVE_CPUS=0 drive noaudit-pinned-2 "$noaudit_port" "$requests"
  printf 'ratio audit/no audit, database on its own core   %.2f, %.2f\n' \
    "$(echo "scale=4; $(cat "$work/audit-pinned.rate") / $(cat "$work/noaudit-pinned.rate")" | bc)" \
    "$(echo "scale=4; $(cat "$work/audit-pinned-2.rate") / $(cat "$work/noaudit-pinned-2.rate")" | bc)"
  pin "0-$(( $(nproc) - 1 ))" "$pg_pid" $(pgrep -P "$pg_pid") "$redis_pid" "$(cat "$work/hit.pid")" "$(cat "$work/noaudit.pid")"
  commits_after=$(commits); rows_after=$(audit_rows)
fi
echo "audit rows written: $((rows_after - rows_before)) in $((commits_after - commits_before)) Postgres transactions (all of them, group commits and polls)"
"$vnid" audit verify | cut -c1-60

# What the trail costs the database alone: the same rows appended again,
# through the service's own append, to a fresh trail (a database of its
# own on the same Postgres), one transaction after another, with nothing
# else running. Once with the group size the load above gave, once with
# the writer's largest group.
psql_() { psql -qAt -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }
# The attestation as kept: bytes (hex, prefixed), or text for older rows.
psql_ -c "\\copy (SELECT at_us, kind, agency, purpose, request_id, subject, subject_index, verdict, reason, attestation_id, CASE WHEN attestation_bytes IS NULL THEN attestation ELSE 'hex:' || encode(attestation_bytes, 'hex') END, request_digest FROM audit_log ORDER BY seq) TO '$work/rows.csv' CSV"
group=$(( (rows_after - rows_before) / (commits_after - commits_before) ))
for g in $(( group > 0 ? group : 1 )) 512; do
  psql_ -c "DROP DATABASE IF EXISTS floor" -c "CREATE DATABASE floor"
  backends=$(pgrep -c -P "$pg_pid")
  pg_before=$(pg_ticks)
  read -r rows rate <<<"$("$tools" append "postgres://postgres@127.0.0.1:$pg_port/floor" "$work/rows.csv" "$g")"
  # The tool's backends count once they have ended and been reaped.
  for _ in $(seq 50); do [ "$(pgrep -c -P "$pg_pid")" -le "$backends" ] && break; sleep 0.1; done
  pg_after=$(pg_ticks)
  printf 'the trail alone: %s rows, %s per transaction: %s rows/s, Postgres CPU %s us/row\n' \
    "$rows" "$g" "$rate" "$(us_per "$pg_before" "$pg_after" "$rows")"
done
# On a machine the load keeps busy, throughput is its CPU over the CPU a
# check costs everything on it: the audit may add at most 0.15 / 0.85 of
# a check without it (2 cores / its rate) for the goal of 15 %.
# What it added: the server's, Postgres' and Redis' CPU per check with the
# trail, less the same without it (the driver's is the same in both).
for pair in "audit noaudit" "audit-2 noaudit-2"; do
  read -r a n <<<"$pair"
  printf 'a 15%% cost allows the audit at most %.1f us of CPU per check (%s: %s req/s on %s cores); ' \
    "$(echo "scale=4; 0.15 * $(nproc) * 1000000 / (0.85 * $(cat "$work/$n.rate"))" | bc)" "$n" "$(cat "$work/$n.rate")" "$(nproc)"
  paste -d' ' "$work/$a.cpu" "$work/$n.cpu" | awk '{printf "it added %.1f (server %+.1f, Postgres %+.1f, Redis %+.1f)\n", ($1+$2+$3)-($4+$5+$6), $1-$4, $2-$5, $3-$6}'
done
