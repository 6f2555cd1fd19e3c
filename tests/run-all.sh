#!/usr/bin/env bash
# The test command (README, .ci/run). On a fresh Debian machine with Rust it
# installs what is missing (Postgres and Redis server binaries, Python's
# venv, promtool, binutils for readelf), prepares the Python interop clients, then runs the format check,
# clippy and every test. The tests start their own throwaway servers on free
# ports; nothing here touches a server already running on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

missing=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v setpriv >/dev/null || missing+=(util-linux)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
# promtool checks what /metrics serves.
command -v promtool >/dev/null || missing+=(prometheus)
# readelf and objdump check the binary's shared libraries (tests/deploy.sh).
command -v readelf >/dev/null || missing+=(binutils)
# openssl makes keys as compose's secrets service does.
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

venv="target/interop-venv"
if ! "$venv/bin/python" -c 'import grpc, grpc_tools, jwt, cryptography, requests' 2>/dev/null; then
  log "preparing the Python interop clients in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    'grpcio>=1.60' 'grpcio-tools>=1.60' 'pyjwt[crypto]>=2.8' 'cryptography>=42' 'requests>=2.31'
fi
export VNID_PYTHON="$PWD/$venv/bin/python"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

log "cargo test"
cargo test --locked

log "the deployment files (image, Kubernetes, compose, alerts, dashboard)"
bash tests/deploy.sh target/debug/vnid

log "fuzzing the parsers that face input (bounded)"
bash tests/fuzz.sh "${VNID_FUZZ_SECONDS:-20}"
