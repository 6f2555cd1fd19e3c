#!/usr/bin/env bash
# The trail on disk through its migrations: bytes per row (table, TOAST,
# indexes, and audit_request) for ROWS check-sized rows (default 1,000,000)
# on a throwaway Postgres. The rows are written by SQL with the sizes a
# check's row has (a 956-character compact JWS as the attestation: a
# 100-character header, 768 of payload, a 64-byte signature; 43-character
# tokens; each row its own person and request), under the schema of
# migrations 0001-0003; then migrations 0004 (partitions), 0005
# (attestations as bytes, for new rows) and 0006 (chains) run on them,
# each timed, and the rows are measured after each; then the same rows
# written as the service now writes them (attestation as bytes, with their
# audit_request rows) into a trail of their own. No build needed.
# Run by hand: bash benches/trail_size.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
rows=${1:-1000000}
start_postgres trail-size
db=trail
psql_() { psql -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d "$db" "$@"; }
psql -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -c "CREATE DATABASE trail"
for m in src/audit/migrations/postgres/000[123]_*.sql; do psql_ -f "$m" >/dev/null; done
# The attestation's parts, as bytes.
header="convert_to('{\"alg\":\"EdDSA\",\"typ\":\"vnid-attestation+jwt\",\"kid\":\"0123456789abcdefghijklmn', 'UTF8')"
payload="convert_to(repeat(md5('a' || g), 18), 'UTF8')"
signature="sha256(('s' || g)::bytea) || sha256(('t' || g)::bytea)"
b64url() { echo "rtrim(translate(replace(encode($1, 'base64'), E'\\n', ''), '+/', '-_'), '=')"; }
psql_ -c "
  INSERT INTO audit_log
  SELECT g, 1795000000000000 + g, 'verify', 'hospital-cho-ray', 'PURPOSE_HEALTHCARE',
         'req-' || g, lpad(md5(g::text), 43, 's'), lpad(md5('i' || g), 43, 'i'),
         'VERDICT_VERIFIED', '', lpad(g::text, 36, '0'), $(b64url "$header") || '.' || $(b64url "$payload") || '.' || $(b64url "$signature"),
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
for m in 0004_partitions 0005_attestation_bytes 0006_chains; do
  started=$(date +%s.%N)
  psql_ -f "src/audit/migrations/postgres/$m.sql" >/dev/null
  printf 'migration %s on %s rows: %.1f s\n' "$m" "$rows" "$(echo "$(date +%s.%N) - $started" | bc)"
  measure "${m%%_*}"
done
# The same rows as the service writes them now, in a trail of their own.
psql -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -c "CREATE DATABASE trail_now"
db=trail_now
for m in src/audit/migrations/postgres/000?_*.sql; do psql_ -f "$m" >/dev/null; done
psql_ -c "CREATE TABLE audit_log_rows PARTITION OF audit_log FOR VALUES FROM (1) TO (MAXVALUE)"
psql_ -c "
  INSERT INTO audit_log (seq, at_us, kind, agency, purpose, request_id, subject, subject_index,
                         verdict, reason, attestation_id, attestation_bytes, request_digest,
                         prev_hash, row_hash)
  SELECT g, 1795000000000000 + g, 'verify', 'hospital-cho-ray', 'PURPOSE_HEALTHCARE',
         'req-' || g, lpad(md5(g::text), 43, 's'), lpad(md5('i' || g), 43, 'i'),
         'VERDICT_VERIFIED', '', lpad(g::text, 36, '0'),
         '\\x01'::bytea || $header || '\\x00'::bytea || $payload || '\\x00'::bytea || $signature,
         lpad(md5('d' || g), 43, 'd'), sha256(('p' || g)::bytea), sha256(('r' || g)::bytea)
  FROM generate_series(1, $rows) g"
psql_ -c "INSERT INTO audit_request SELECT 'hospital-cho-ray', 'req-' || g, g FROM generate_series(1, $rows) g"
measure now
