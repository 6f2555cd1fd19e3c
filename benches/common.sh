# Shared by the load benchmarks (sourced, run by hand): a throwaway Postgres
# and Redis on free ports, the release binaries, one deployment's keys.
# After `setup NAME`: $work, $vnid, $tools, $pg_port, $pg_pid, $redis_port,
# VNID__DATABASE_URL and the key files exported; everything started is
# stopped, and $work removed, on exit.

# The gRPC paths h2load drives.
verify_path=/vnid.v1.VerificationService/Verify
hello_path=/vnid.bench.v1.HelloService/SayHello
need_h2load() { command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# CPU ticks (user + system) of a process.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Postgres' CPU: the postmaster, its backends still running, and those that
# have ended (which the postmaster has reaped: its children's time).
pg_ticks() {
  { awk '{print $14 + $15 + $16 + $17}' "/proc/$pg_pid/stat"
    for p in $(pgrep -P "$pg_pid"); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done
  } | awk '{s += $1} END {print s}'
}
# The machine's idle and total ticks ("idle total"), all cores.
machine_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t}' /proc/stat; }
# Percent of the machine busy between two machine_ticks readings.
busy_pct() { echo "$1 $2" | awk '{printf "%.0f", 100 * (1 - ($3 - $1) / ($4 - $2))}'; }
# Microseconds of CPU per item: us_per TICKS_BEFORE TICKS_AFTER ITEMS
us_per() { echo "scale=1; ($2 - $1) * 1000000 / $(getconf CLK_TCK) / $3" | bc; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# start_postgres NAME: $work, and a throwaway Postgres on $pg_port ($pg_pid).
start_postgres() {
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  work=$(mktemp -d "/tmp/vnid-bench-$1.XXXXXX")
  chmod 755 "$work"
  as_pg=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$work"
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
  fi
  trap cleanup EXIT
  pg_port=$(free_port)
  "${as_pg[@]}" "$pg_bin/initdb" -D "$work/data" --auth=trust --username=postgres --no-sync -E UTF8 --locale=C >/dev/null
  "${as_pg[@]}" "$pg_bin/postgres" -D "$work/data" -k "$work" -p "$pg_port" -c listen_addresses=127.0.0.1 >"$work/pg.log" 2>&1 &
  pids+=($!)
  pg_pid=$!
  until grep -qs "ready to accept connections" "$work/pg.log"; do sleep 0.1; done
}

setup() { # NAME
  start_postgres "$1"
  echo "== building (release)"
  cargo build --release --quiet
  cargo build --release --benches --quiet
  vnid="$PWD/target/release/vnid"
  tools=$(ls -t target/release/deps/load_tools-* | grep -v '\.d$' | head -1)
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
  pids+=($!)
  redis_pid=$!
  wait_port "$redis_port"
  export VNID__DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
  # Several servers run side by side: no admin endpoint (its port is fixed).
  export VNID__ADMIN_LISTEN=""
  # One deployment: every instance signs with the same keys.
  "$vnid" keygen --out "$work/signing.pem" >/dev/null
  head -c 32 /dev/urandom >"$work/subject.key"
  "$vnid" keygen --out "$work/checkpoint.pem" >/dev/null
  export VNID__ATTESTATION__SIGNING_KEY_FILE="$work/signing.pem"
  export VNID__ATTESTATION__SUBJECT_KEY_FILE="$work/subject.key"
  export VNID__AUDIT__CHECKPOINT_KEY_FILE="$work/checkpoint.pem"
  # And ES256, for agencies set to it (a P-256 key, as OpenSSL makes it).
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/es256.pem" 2>/dev/null
  export VNID__ATTESTATION__ES256_KEY_FILE="$work/es256.pem"
}

start_vnid() { # NAME PORT [ENV=VALUE...]: a release server, its pid in $work/NAME.pid
  local name=$1 port=$2; shift 2
  env "$@" VNID__LOG__FILTER=warn "$vnid" serve --listen "127.0.0.1:$port" --data-dir "$work/$name" >"$work/$name.log" 2>&1 &
  pids+=($!)
  wait_port "$port" || { echo "$name did not start:" >&2; tail -5 "$work/$name.log" >&2; return 1; }
  echo $! >"$work/$name.pid"
}

# start_vnid_without_trail NAME PORT [ENV=VALUE...]: the same server keeping
# NO audit trail (load_tools serve-without-trail), to measure what the trail
# costs. A build from before that command runs `vnid serve` with the
# audit.sink = "none" it had then.
start_vnid_without_trail() {
  local name=$1 port=$2; shift 2
  if "$tools" 2>&1 | grep -q serve-without-trail; then
    env "$@" VNID__LOG__FILTER=warn "$tools" serve-without-trail "127.0.0.1:$port" "$work/$name" >"$work/$name.log" 2>&1 &
  else
    env "$@" VNID__AUDIT__SINK=none VNID__LOG__FILTER=warn "$vnid" serve --listen "127.0.0.1:$port" --data-dir "$work/$name" >"$work/$name.log" 2>&1 &
  fi
  pids+=($!)
  wait_port "$port" || { echo "$name did not start:" >&2; tail -5 "$work/$name.log" >&2; return 1; }
  echo $! >"$work/$name.pid"
}

# start_hello NAME PORT [signed]: the hello baseline of load_tools (signing an
# attestation per call with `signed`), its pid in $work/NAME.pid
start_hello() {
  local name=$1 port=$2; shift 2
  "$tools" hello "127.0.0.1:$port" "$@" &
  pids+=($!)
  echo $! >"$work/$name.pid"
  wait_port "$port"
}

# warm PORT: 2,000 calls of the prepared Verify frame, which fill the cache.
warm() {
  h2load -n 2000 -c 4 -m 8 --header 'content-type: application/grpc' --header 'te: trailers' \
    -d "$work/verify.bin" "http://127.0.0.1:$1$verify_path" >/dev/null
}

# populate COUNT SEED: a generated population imported into Postgres;
# $person_id and $person_name: one active person with a full birth date.
populate() {
  echo "== $1 people into Postgres"
  "$vnid" gen-population --count "$1" --province 082 --seed "$2" --out "$work/people.csv"
  "$vnid" import "$work/people.csv" 2>&1 | tail -1
  local person; person=$(python3 -c '
import csv, sys
for row in csv.DictReader(open(sys.argv[1], encoding="utf-8")):
    if row["status"] == "active" and len(row["date_of_birth"]) == 10:
        print(row["id_number"] + "\t" + row["full_name"]); break' "$work/people.csv")
  person_id=${person%%$'\t'*}
  person_name=${person#*$'\t'}
}

# split_candidates SOURCE OUT:COUNT...: the people of the export SOURCE, in
# order, as `vnid verify-batch` input files (request_id cand-I): the first
# COUNT into the first OUT, the next into the next, and so on.
split_candidates() {
  python3 - "$@" <<'PY'
import csv, sys
rows = csv.DictReader(open(sys.argv[1], encoding="utf-8"))
header = ["request_id", "id_number", "full_name", "date_of_birth", "gender"]
i = 0
for spec in sys.argv[2:]:
    out, count = spec.rsplit(":", 1)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for _ in range(int(count)):
            row = next(rows)
            w.writerow([f"cand-{i}", row["id_number"], row["full_name"], row["date_of_birth"], row["gender"]])
            i += 1
PY
}

# run NAME PORT PATH FRAME N [h2load options...]: prints one result line.
run() {
  local name=$1 port=$2 path=$3 frame=$4 n=$5; shift 5
  local pid; pid=$(cat "$work/$name.pid")
  # CONTENT_TYPE: another door's (the JSON door's, gRPC-Web's).
  local args=(-n "$n" -t 1 --header "content-type: ${CONTENT_TYPE:-application/grpc}" --header 'te: trailers' -d "$frame")
  # The size of one good answer, from one call.
  h2load -n 1 -c 1 "${args[@]:2}" "http://127.0.0.1:$port$path" >"$work/one.out"
  local one; one=$(awk '/^traffic:/ {gsub(/[()]/,""); for (i=1;i<=NF;i++) if ($i=="data") print $(i-1)}' "$work/one.out" | tail -1)
  local before; before=$(ticks "$pid")
  local pg_before; pg_before=$(pg_ticks)
  local redis_before; redis_before=$(ticks "$redis_pid")
  local machine_before; machine_before=$(machine_ticks)
  # The driver's own CPU (user and system seconds), from bash's `time`.
  local TIMEFORMAT='%U %S'
  { time h2load "${args[@]}" "$@" --log-file="$work/$name.tsv" "http://127.0.0.1:$port$path" >"$work/$name.out" ; } 2>"$work/$name.driver-time"
  local after; after=$(ticks "$pid")
  local pg_after; pg_after=$(pg_ticks)
  local redis_after; redis_after=$(ticks "$redis_pid")
  local busy; busy=$(busy_pct "$machine_before" "$(machine_ticks)")
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
  local redis_us; redis_us=$(us_per "$redis_before" "$redis_after" "$n")
  local driver_us; driver_us=$(awk -v n="$n" '{printf "%.1f", ($1 + $2) * 1000000 / n}' "$work/$name.driver-time")
  printf '%-22s %10s req/s  %s  server CPU %6s us/req, Postgres %6s, Redis %5s, driver %5s us/req, machine %s%% busy  [%s]\n' \
    "$name" "$rate" "$pcts" "$cpu_us" "$pg_us" "$redis_us" "$driver_us" "$busy" "$check"
  echo "$rate" >"$work/$name.rate"
  echo "$cpu_us $pg_us $redis_us" >"$work/$name.cpu"
}

# Transactions committed in the database so far (all of them: group
# commits, reads, polls), and the audit rows in it.
commits() { psql -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"; }
audit_rows() { psql -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -c "SELECT count(*) FROM audit_log"; }
# Audit appends so far: each moves the head row once.
appends() { psql -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -c "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'audit_head'"; }

# pin CPUS PID...: moves these processes, every thread, onto CPUS.
pin() { local cpus=$1; shift; for p in "$@"; do taskset -apc "$cpus" "$p" >/dev/null; done; }

# run and drive leave NAME.rate (req/s) and NAME.cpu (microseconds of CPU
# per request: the server, Postgres, Redis) in $work.

# drive NAME PORT N: like run, with load_tools' driver: every call its own
# request_id, so each is a check (h2load's one frame is a retry after the
# first call, answered from the audit trail). DRIVE_CPUS: the driver's CPUs.
drive() {
  local name=$1 port=$2 n=$3
  local pid; pid=$(cat "$work/$name.pid")
  local before; before=$(ticks "$pid"); local pg_before; pg_before=$(pg_ticks)
  local redis_before; redis_before=$(ticks "$redis_pid")
  local machine_before; machine_before=$(machine_ticks)
  local out; out=$(${DRIVE_CPUS:+taskset -c "$DRIVE_CPUS"} "$tools" drive "127.0.0.1:$port" "$person_id" "$person_name" "$n" 8 16)
  local after; after=$(ticks "$pid"); local pg_after; pg_after=$(pg_ticks)
  local redis_after; redis_after=$(ticks "$redis_pid")
  local busy; busy=$(busy_pct "$machine_before" "$(machine_ticks)")
  read -r rate p50 p99 ok <<<"$out"
  local check="all $n answers successful"
  [ "$ok" = "$n" ] || check="FAILED: $ok of $n succeeded"
  local cpu_us; cpu_us=$(us_per "$before" "$after" "$n")
  local pg_us; pg_us=$(us_per "$pg_before" "$pg_after" "$n")
  local redis_us; redis_us=$(us_per "$redis_before" "$redis_after" "$n")
  printf '%-22s %10s req/s  p50 %s ms, p99 %s ms  server CPU %6s us/req, Postgres %6s, Redis %5s us/req, machine %s%% busy  [%s]\n' \
    "$name" "$rate" "$p50" "$p99" "$cpu_us" "$pg_us" "$redis_us" "$busy" "$check"
  echo "$rate" >"$work/$name.rate"
  echo "$cpu_us $pg_us $redis_us" >"$work/$name.cpu"
}
