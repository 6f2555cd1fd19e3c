#!/usr/bin/env bash
# Fuzzes each parser that faces input for a bounded time (coverage-guided,
# cargo fuzz with libFuzzer on the nightly toolchain), and prints each
# target's executions and crashes. Usage: bash tests/fuzz.sh [SECONDS]
# (per target, default 20). A crash fails the run; its input is left under
# target/fuzz-artifacts/<target>/ to replay with
#   cargo +nightly fuzz run --fuzz-dir tests/fuzz <target> <file>
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain here; cargo fuzz needs one" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked --quiet
fi

export CARGO_TARGET_DIR="$PWD/target/fuzz"
targets=$(cargo +nightly fuzz list --fuzz-dir tests/fuzz)
cargo +nightly fuzz build --fuzz-dir tests/fuzz -O --debug-assertions >/dev/null

failed=0
summary=()
for t in $targets; do
  corpus="target/fuzz-corpus/$t"
  artifacts="target/fuzz-artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  seeds=()
  [ -d "tests/fuzz/seeds/$t" ] && seeds=("tests/fuzz/seeds/$t")
  log="target/fuzz-artifacts/$t.log"
  set +e
  cargo +nightly fuzz run --fuzz-dir tests/fuzz -O --debug-assertions "$t" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  crashes=$(find "$artifacts" -type f | wc -l)
  summary+=("$t: ${runs:-0} executions, $crashes crashes")
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed=$((failed + 1))
    tail -40 "$log" >&2
  fi
done
printf 'fuzz: %s\n' "${summary[@]}"
total=$(wc -w <<<"$targets")
echo "fuzz: $((total - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
