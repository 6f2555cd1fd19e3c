# Shared by the load benchmarks (sourced, run by hand): a throwaway Postgres
# and Redis on free ports, the release binaries, one deployment's keys.
# After `setup NAME`: $work, $vnid, $tools, $pg_port, $pg_pid, $redis_port,
# VNID__DATABASE_URL and the key files exported; everything started is
# stopped, and $work removed, on exit.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# CPU ticks (user + system) of a process.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Postgres' CPU: the postmaster and its backends (those still running).
pg_ticks() { for p in $pg_pid $(pgrep -P "$pg_pid"); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{s += $1} END {print s}'; }
# Microseconds of CPU per item: us_per TICKS_BEFORE TICKS_AFTER ITEMS
us_per() { echo "scale=1; ($2 - $1) * 1000000 / $(getconf CLK_TCK) / $3" | bc; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

setup() { # NAME
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  work=$(mktemp -d "/tmp/vnid-bench-$1.XXXXXX")
  chmod 755 "$work"
  as_pg=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$work"
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
  fi
  trap cleanup EXIT

  echo "== building (release)"
  cargo build --release --quiet
  cargo build --release --benches --quiet
  vnid="$PWD/target/release/vnid"
  tools=$(ls -t target/release/deps/load_tools-* | grep -v '\.d$' | head -1)

  pg_port=$(free_port)
  "${as_pg[@]}" "$pg_bin/initdb" -D "$work/data" --auth=trust --username=postgres --no-sync -E UTF8 --locale=C >/dev/null
  "${as_pg[@]}" "$pg_bin/postgres" -D "$work/data" -k "$work" -p "$pg_port" -c listen_addresses=127.0.0.1 >"$work/pg.log" 2>&1 &
  pids+=($!)
  pg_pid=$!
  until grep -q "ready to accept connections" "$work/pg.log"; do sleep 0.1; done
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
  pids+=($!)
  wait_port "$redis_port"
  export VNID__DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
  # One deployment: every instance signs with the same keys.
  "$vnid" keygen --out "$work/signing.pem" >/dev/null
  head -c 32 /dev/urandom >"$work/subject.key"
  export VNID__ATTESTATION__SIGNING_KEY_FILE="$work/signing.pem"
  export VNID__ATTESTATION__SUBJECT_KEY_FILE="$work/subject.key"
}

start_vnid() { # NAME PORT [ENV=VALUE...]: a release server, its pid in $work/NAME.pid
  local name=$1 port=$2; shift 2
  env "$@" VNID__LOG__FILTER=warn "$vnid" serve --listen "127.0.0.1:$port" --data-dir "$work/$name" >"$work/$name.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
  echo $! >"$work/$name.pid"
}
