//! Appending a group of rows to one chain of the trail: on Postgres one
//! statement that moves the chain's head only if it is still where this
//! store left it (no lock held between round trips), falling back to the
//! locking append every database has, which takes a chain no other writer
//! holds (or waits for one).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, IntoArguments, Postgres, Type};

use super::{COLUMN_COUNT, COLUMNS, Dialect, MOVE_HEAD, ROWS_PER_INSERT, SqlAudit, audit_error};
use crate::audit::chain::{ChainId, FIRST_CHAIN, Head, row_hash};
use crate::audit::{AuditEntry, AuditError, packed};

/// Appends a group to chain `$18` in one statement, if its head is still
/// where this store left it: the rows are numbered from `audit_seq`, and
/// the head moves and the rows go in together, or neither. Returns the
/// last row's number (none: the head had moved).
const APPEND_EXPECTING: &str = "\
WITH numbered AS MATERIALIZED (
    SELECT seq, row_number() OVER (ORDER BY seq) AS i
    FROM (SELECT nextval('audit_seq') AS seq FROM generate_series(1, cardinality($4::bigint[]))) s
), moved AS (
    UPDATE audit_head SET seq = (SELECT max(seq) FROM numbered), hash = $1
    WHERE id = $18 AND seq = $2 AND hash = $3
    RETURNING 1
), grouped AS MATERIALIZED (
    SELECT n.seq, r.* FROM UNNEST($4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[],
                                  $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
                                  $14::bytea[], $15::text[], $16::bytea[], $17::bytea[])
        WITH ORDINALITY AS r(at_us, kind, agency, purpose, request_id, subject, subject_index,
                             verdict, reason, attestation_id, attestation_bytes, request_digest,
                             prev_hash, row_hash, i)
    JOIN numbered n ON n.i = r.i
    WHERE EXISTS (SELECT 1 FROM moved)
), requests AS (
    INSERT INTO audit_request (agency, request_id, seq)
    SELECT agency, request_id, seq FROM grouped WHERE kind <> 'access_history'
), inserted AS (
    INSERT INTO audit_log (seq, at_us, kind, agency, purpose, request_id, subject, subject_index,
                           verdict, reason, attestation_id, attestation_bytes, request_digest,
                           prev_hash, row_hash, chain)
    SELECT seq, at_us, kind, agency, purpose, request_id, subject, subject_index, verdict, reason,
           attestation_id, attestation_bytes, request_digest, prev_hash, row_hash, $18::smallint
    FROM grouped
    RETURNING seq
)
SELECT max(seq) FROM inserted";

/// SQLSTATE of a row no partition takes.
const NO_PARTITION: &str = "23514";

impl SqlAudit<Postgres> {
    /// One round trip per group: the statement is its own transaction, and
    /// holds the chain head's row lock only while it runs. Under load on a
    /// busy machine, the round trips of a locking transaction (each waiting
    /// for a CPU) cost more than the rows. If another writer appended to
    /// this chain meanwhile, nothing is written and the locking append
    /// takes a chain no one holds; this store appends there from then on.
    pub(super) async fn append_expecting(
        &self,
        entries: &[AuditEntry],
    ) -> Result<Head, AuditError> {
        let cached = *self.last_head.lock().map_err(|_| poisoned())?;
        if let Some((chain, expected)) = cached {
            let n = entries.len();
            // Rows are numbered in the statement; partitions are made
            // ahead of the newest number this store has seen.
            let newest = self.newest_seq.load(Ordering::Relaxed).max(expected.seq);
            self.ensure_partitions(newest + n as i64).await?;
            let mut hash = expected.hash;
            let (mut at, mut prev, mut this) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for e in entries {
                let row_hash = row_hash(&hash, e);
                at.push(e.at_us);
                prev.push(hash.to_vec());
                this.push(row_hash.to_vec());
                hash = row_hash;
            }
            let text = |f: fn(&AuditEntry) -> &str| entries.iter().map(f).collect::<Vec<_>>();
            let appended: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(APPEND_EXPECTING)
                .bind(hash.to_vec())
                .bind(expected.seq)
                .bind(expected.hash.to_vec())
                .bind(at)
                .bind(
                    entries
                        .iter()
                        .map(|e| e.stored_kind().into_owned())
                        .collect::<Vec<_>>(),
                )
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
                .bind(chain)
                .fetch_one(&self.writes)
                .await;
            match appended {
                Ok(Some(seq)) => {
                    self.newest_seq.fetch_max(seq, Ordering::Relaxed);
                    let head = Head { seq, hash };
                    *self.last_head.lock().map_err(|_| poisoned())? = Some((chain, head));
                    return Ok(head);
                }
                // The head had moved: another writer on this chain.
                Ok(None) => {}
                // Numbered past the partitions made: the locking append
                // makes room for the numbers it takes.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(NO_PARTITION) => {}
                Err(error) => return Err(audit_error::<Postgres>(error)),
            }
        }
        let taken = self.append_rows(entries).await;
        *self.last_head.lock().map_err(|_| poisoned())? = taken.as_ref().ok().copied();
        let (_, head) = taken?;
        self.newest_seq.fetch_max(head.seq, Ordering::Relaxed);
        Ok(head)
    }
}

fn poisoned() -> AuditError {
    AuditError::Corrupt("the cached audit head's lock is poisoned".into())
}

/// `INSERT … VALUES ($1, …, $17), …` of rows for `rows` rows, built once
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
    for<'q> i16: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'r> i16: Decode<'r, DB>,
    for<'r> i32: Decode<'r, DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB>,
    for<'r> Option<i64>: Decode<'r, DB>,
    for<'r> bool: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Appends under a chain head's lock: a chain no other writer holds
    /// (the least advanced), or, with every chain taken, the one this
    /// store appended to last. Returns the chain and its new head.
    pub(super) async fn append_rows(
        &self,
        entries: &[AuditEntry],
    ) -> Result<(ChainId, Head), AuditError> {
        let preferred = (*self.last_head.lock().map_err(|_| poisoned())?)
            .map_or(FIRST_CHAIN, |(chain, _)| chain);
        let mut tx = self.writes.begin().await.map_err(audit_error::<DB>)?;
        let free = sqlx::query(DB::LOCK_FREE_CHAIN)
            .fetch_optional(&mut *tx)
            .await
            .map_err(audit_error::<DB>)?;
        let row = match free {
            Some(row) => row,
            None => sqlx::query(DB::LOCK_CHAIN)
                .bind(i32::from(preferred))
                .fetch_one(&mut *tx)
                .await
                .map_err(audit_error::<DB>)?,
        };
        let (chain, mut head) = Self::chain_head_of(&row)?;
        // Numbered once the chain is held: each chain's rows in order.
        let seqs: Vec<i64> = match DB::NEXT_SEQS {
            Some(next) => {
                let mut seqs: Vec<i64> = sqlx::query_scalar(next)
                    .bind(entries.len() as i64)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(audit_error::<DB>)?;
                seqs.sort_unstable();
                seqs
            }
            None => (1..=entries.len() as i64).map(|i| head.seq + i).collect(),
        };
        if let Some(&last) = seqs.last() {
            DB::make_room(self, last).await?;
        }
        let numbered: Vec<(i64, &AuditEntry)> = seqs.iter().copied().zip(entries).collect();
        for chunk in numbered.chunks(ROWS_PER_INSERT) {
            let kinds: Vec<_> = chunk.iter().map(|(_, e)| e.stored_kind()).collect();
            let mut insert = sqlx::query(insert_sql(chunk.len()));
            for (&(seq, e), kind) in chunk.iter().zip(&kinds) {
                let row_hash = row_hash(&head.hash, e);
                insert = insert
                    .bind(seq)
                    .bind(e.at_us)
                    .bind(kind.as_ref())
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
                    .bind("")
                    .bind(chain);
                head = Head {
                    seq,
                    hash: row_hash,
                };
            }
            insert.execute(&mut *tx).await.map_err(audit_error::<DB>)?;
        }
        // Each check's (agency, request_id), unique: a second one fails the
        // whole append as a duplicate.
        let checks: Vec<&(i64, &AuditEntry)> = numbered
            .iter()
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
            .bind(i32::from(chain))
            .execute(&mut *tx)
            .await
            .map_err(audit_error::<DB>)?;
        tx.commit().await.map_err(audit_error::<DB>)?;
        Ok((chain, head))
    }
}
