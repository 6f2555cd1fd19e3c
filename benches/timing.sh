#!/usr/bin/env bash
# Timing of negative answers (run by hand, not by the tests):
#   bash benches/timing.sh [ROUNDS]      (default 5000)
# With detail "none", an unknown number, a wrong name and a wrong birth date
# must not be told apart by their answers (tests/api/privacy.rs) nor by
# their timing. Starts a throwaway Postgres and Redis, imports a generated
# population, and runs `load_tools timing` (one call at a time, the three
# kinds in turn, each of its own person, asked once) against a release
# server with the Redis cache and one without a cache. Prints each kind's
# median and p90. The per-number and per-agency failure defences are off
# here: two answers in three fail, which is what they exist to stop.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5000}"

source benches/common.sh
setup timing

# Three people a round, each checked once, and room for those who are not
# active or have no whole birth date.
echo "== $((rounds * 4)) people into Postgres"
"$vnid" gen-population --count "$((rounds * 4))" --province 082 --seed 5 --out "$work/people.csv"
"$vnid" import "$work/people.csv" 2>&1 | tail -1
cat >"$work/blind.toml" <<TOML
plaintext_agency = "blind"
plaintext_operator = ""
[[agencies]]
id = "blind"
name = "An agency that sees verdicts only"
purposes = ["healthcare"]
detail = "none"
[defences]
id_failures_per_day = 0
not_verified_alert_share = 0.0
TOML
for mode in cache nocache; do
  port=$(free_port)
  extra=(VNID__REDIS_URL="redis://127.0.0.1:$redis_port/")
  [ "$mode" = nocache ] && extra=(VNID__CACHE__ENABLED=false)
  env "${extra[@]}" VNID__LOG__FILTER=warn "$vnid" serve --config "$work/blind.toml" \
    --listen "127.0.0.1:$port" --data-dir "$work/$mode" >"$work/$mode.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
  echo "== $mode: $rounds rounds"
  "$tools" timing "127.0.0.1:$port" "$work/people.csv" "$rounds"
done
