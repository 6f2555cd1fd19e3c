//! Appending a group of rows to the chain: on Postgres one statement that
//! moves the head only if it is still where this store left it (no lock
//! held between round trips), falling back to the locking append every
//! database has.

use std::sync::{Arc, OnceLock};

use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, IntoArguments, Postgres, Type};

use super::{
    COLUMN_COUNT, COLUMNS, Dialect, HEAD, MOVE_HEAD, ROWS_PER_INSERT, SqlAudit, audit_error,
};
use crate::audit::chain::{Head, row_hash};
use crate::audit::{AuditEntry, AuditError, packed};
use crate::domain::Spelled;

/// Appends a group in one statement, if the head is still where this store
/// left it: the head moves and the rows go in together, or neither.
const APPEND_EXPECTING: &str = "\
WITH moved AS (
    UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3 AND hash = $4
    RETURNING 1
), requests AS (
    INSERT INTO audit_request (agency, request_id, seq)
    SELECT agency, request_id, seq FROM UNNEST($8::text[], $10::text[], $5::bigint[], $7::text[])
        AS r(agency, request_id, seq, kind)
    WHERE kind <> 'access_history' AND EXISTS (SELECT 1 FROM moved)
)
INSERT INTO audit_log (seq, at_us, kind, agency, purpose, request_id, subject, subject_index,
                       verdict, reason, attestation_id, attestation_bytes, request_digest,
                       prev_hash, row_hash)
SELECT * FROM UNNEST($5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[],
                     $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::bytea[],
                     $17::text[], $18::bytea[], $19::bytea[])
WHERE EXISTS (SELECT 1 FROM moved)";

/// Optimistic appends tried before taking the head's lock.
const OPTIMISTIC_TRIES: usize = 3;

impl SqlAudit<Postgres> {
    /// One round trip per group: the statement is its own transaction, and
    /// holds the head's row lock only while it runs. Under load on a busy
    /// machine, the five round trips of a locking transaction (each waiting
    /// for a CPU) cost more than the rows. If another instance appended
    /// meanwhile, nothing is written and the group is chained again onto
    /// the new head; after a few such misses, the locking append.
    pub(super) async fn append_expecting(
        &self,
        entries: &[AuditEntry],
    ) -> Result<Head, AuditError> {
        for _ in 0..OPTIMISTIC_TRIES {
            let cached = *self.last_head.lock().map_err(|_| poisoned())?;
            let expected = match cached {
                Some(head) => head,
                None => Self::head_of(
                    &sqlx::query(HEAD)
                        .fetch_one(&self.writes)
                        .await
                        .map_err(audit_error::<Postgres>)?,
                )?,
            };
            let n = entries.len();
            self.ensure_partitions(expected.seq + n as i64).await?;
            let mut head = expected;
            let (mut seq, mut at, mut prev, mut this) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for e in entries {
                let row_hash = row_hash(&head.hash, e);
                head.seq += 1;
                seq.push(head.seq);
                at.push(e.at_us);
                prev.push(head.hash.to_vec());
                this.push(row_hash.to_vec());
                head.hash = row_hash;
            }
            let text = |f: fn(&AuditEntry) -> &str| entries.iter().map(f).collect::<Vec<_>>();
            let inserted = sqlx::query(APPEND_EXPECTING)
                .bind(head.seq)
                .bind(head.hash.to_vec())
                .bind(expected.seq)
                .bind(expected.hash.to_vec())
                .bind(seq)
                .bind(at)
                .bind(text(|e| e.kind.name()))
                .bind(text(|e| &e.agency))
                .bind(text(|e| &e.purpose))
                .bind(text(|e| &e.request_id))
                .bind(text(|e| &e.subject))
                .bind(text(|e| &e.subject_index))
                .bind(text(|e| &e.verdict))
                .bind(text(|e| &e.reason))
                .bind(text(|e| &e.attestation_id))
                .bind(
                    entries
                        .iter()
                        .map(|e| packed::pack(&e.attestation))
                        .collect::<Vec<_>>(),
                )
                .bind(text(|e| &e.request_digest))
                .bind(prev)
                .bind(this)
                .execute(&self.writes)
                .await
                .map_err(audit_error::<Postgres>)?
                .rows_affected();
            let moved = inserted as usize == n;
            *self.last_head.lock().map_err(|_| poisoned())? = moved.then_some(head);
            if moved {
                return Ok(head);
            }
        }
        let head = self.append_rows(entries).await?;
        *self.last_head.lock().map_err(|_| poisoned())? = Some(head);
        Ok(head)
    }
}

fn poisoned() -> AuditError {
    AuditError::Corrupt("the cached audit head's lock is poisoned".into())
}

/// `INSERT … VALUES ($1, …, $15), …` of rows for `rows` rows, built once
/// per size.
fn insert_sql(rows: usize) -> AssertSqlSafe<Arc<str>> {
    static SQL: OnceLock<Vec<Arc<str>>> = OnceLock::new();
    AssertSqlSafe(
        inserts(&SQL, "audit_log", COLUMNS, COLUMN_COUNT)[rows.min(ROWS_PER_INSERT)].clone(),
    )
}

/// The same for the rows' (agency, request_id, seq).
fn insert_request_sql(rows: usize) -> AssertSqlSafe<Arc<str>> {
    static SQL: OnceLock<Vec<Arc<str>>> = OnceLock::new();
    AssertSqlSafe(
        inserts(&SQL, "audit_request", "agency, request_id, seq", 3)[rows.min(ROWS_PER_INSERT)]
            .clone(),
    )
}

/// `INSERT INTO table (columns) VALUES …` for 0 to `ROWS_PER_INSERT`
/// rows of `count` columns.
fn inserts<'a>(
    cell: &'a OnceLock<Vec<Arc<str>>>,
    table: &str,
    columns: &str,
    count: usize,
) -> &'a [Arc<str>] {
    cell.get_or_init(|| {
        (0..=ROWS_PER_INSERT)
            .map(|n| {
                let values: Vec<String> = (0..n)
                    .map(|r| {
                        let params: Vec<String> =
                            (1..=count).map(|c| format!("${}", r * count + c)).collect();
                        format!("({})", params.join(", "))
                    })
                    .collect();
                Arc::from(format!(
                    "INSERT INTO {table} ({columns}) VALUES {}",
                    values.join(", ")
                ))
            })
            .collect()
    })
}

impl<DB> SqlAudit<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB>,
    for<'r> Option<i64>: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    pub(super) async fn append_rows(&self, entries: &[AuditEntry]) -> Result<Head, AuditError> {
        let mut tx = self.writes.begin().await.map_err(audit_error::<DB>)?;
        let row = sqlx::query(DB::LOCK_HEAD)
            .fetch_one(&mut *tx)
            .await
            .map_err(audit_error::<DB>)?;
        let mut head = Self::head_of(&row)?;
        for chunk in entries.chunks(ROWS_PER_INSERT) {
            let mut insert = sqlx::query(insert_sql(chunk.len()));
            for e in chunk {
                let row_hash = row_hash(&head.hash, e);
                head.seq += 1;
                insert = insert
                    .bind(head.seq)
                    .bind(e.at_us)
                    .bind(e.kind.name())
                    .bind(e.agency.as_str())
                    .bind(e.purpose.as_str())
                    .bind(e.request_id.as_str())
                    .bind(e.subject.as_str())
                    .bind(e.subject_index.as_str())
                    .bind(e.verdict.as_str())
                    .bind(e.reason.as_str())
                    .bind(e.attestation_id.as_str())
                    .bind(packed::pack(&e.attestation))
                    .bind(e.request_digest.as_str())
                    .bind(head.hash.to_vec())
                    .bind(row_hash.to_vec())
                    // The text column, for rows written before bytes.
                    .bind("");
                head.hash = row_hash;
            }
            insert.execute(&mut *tx).await.map_err(audit_error::<DB>)?;
        }
        // Each check's (agency, request_id), unique: a second one fails the
        // whole append as a duplicate.
        let first = head.seq - entries.len() as i64 + 1;
        let checks: Vec<(i64, &AuditEntry)> = (first..)
            .zip(entries)
            .filter(|(_, e)| e.request_key().is_some())
            .collect();
        for chunk in checks.chunks(ROWS_PER_INSERT) {
            let mut insert = sqlx::query(insert_request_sql(chunk.len()));
            for (seq, e) in chunk {
                insert = insert
                    .bind(e.agency.as_str())
                    .bind(e.request_id.as_str())
                    .bind(*seq);
            }
            insert.execute(&mut *tx).await.map_err(audit_error::<DB>)?;
        }
        sqlx::query(MOVE_HEAD)
            .bind(head.seq)
            .bind(head.hash.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(audit_error::<DB>)?;
        tx.commit().await.map_err(audit_error::<DB>)?;
        Ok(head)
    }
}
