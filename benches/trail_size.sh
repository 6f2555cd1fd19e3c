#!/usr/bin/env bash
# The trail on disk, before and after the partitions migration: bytes per
# row (table, TOAST, indexes, and audit_request) for ROWS check-sized rows
# (default 1,000,000) on a throwaway Postgres. The rows are written by SQL
# with the sizes a check's row has (a 955-character attestation, 43-character
# tokens, each row its own person and request), under the schema of
# migrations 0001-0003; then migration 0004 runs on them (timed) and the
# same rows are measured again. No build needed.
# Run by hand: bash benches/trail_size.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
rows=${1:-1000000}
start_postgres trail-size
psql_() { psql -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d trail "$@"; }
psql -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -c "CREATE DATABASE trail"
for m in src/audit/migrations/postgres/000[123]_*.sql; do psql_ -f "$m" >/dev/null; done
psql_ -c "
  INSERT INTO audit_log
  SELECT g, 1795000000000000 + g, 'verify', 'hospital-cho-ray', 'PURPOSE_HEALTHCARE',
         'req-' || g, lpad(md5(g::text), 43, 's'), lpad(md5('i' || g), 43, 'i'),
         'VERDICT_VERIFIED', '', lpad(g::text, 36, '0'), lpad(md5('a' || g), 955, 'a'),
         lpad(md5('d' || g), 43, 'd'), sha256(('p' || g)::bytea), sha256(('r' || g)::bytea)
  FROM generate_series(1, $rows) g"
psql_ -c "UPDATE audit_head SET seq = $rows"
measure() { # LABEL
  psql_ -c "VACUUM ANALYZE" >/dev/null
  psql_ -F ' ' -c "
    SELECT (SELECT count(*) FROM audit_log),
           sum(pg_relation_size(c.oid)),
           sum(pg_table_size(c.oid) - pg_relation_size(c.oid)),
           sum(pg_indexes_size(c.oid)),
           coalesce(pg_total_relation_size(to_regclass('audit_request')), 0)
    FROM pg_class c
    WHERE c.relkind = 'r' AND (c.relname = 'audit_log' OR c.oid IN
          (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'audit_log'::regclass))" | {
    read -r n heap toast indexes requests
    printf '%-7s %s rows: bytes per row: table %d, TOAST and maps %d, indexes %d, audit_request %d; total %d\n' \
      "$1" "$n" $((heap / n)) $((toast / n)) $((indexes / n)) $((requests / n)) \
      $(( (heap + toast + indexes + requests) / n ))
  }
}
measure before
started=$(date +%s.%N)
psql_ -f src/audit/migrations/postgres/0004_partitions.sql >/dev/null
printf 'migration 0004 on %s rows: %.1f s\n' "$rows" "$(echo "$(date +%s.%N) - $started" | bc)"
measure after
