//! Appending a group of rows to one chain of the trail: on Postgres one
//! statement that moves the chain's head only if it is still where this
//! store left it (no lock held between round trips), falling back to the
//! locking append every database has, which takes a chain no other writer
//! holds (or waits for one).

use std::sync::{Arc, OnceLock};

use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, IntoArguments, Postgres, Type};

use super::{COLUMN_COUNT, COLUMNS, Dialect, MOVE_HEAD, ROWS_PER_INSERT, SqlAudit, audit_error};
use crate::audit::chain::{ChainId, FIRST_CHAIN, Head, row_hash};
use crate::audit::{AuditEntry, AuditError, packed};
use crate::domain::Spelled;

/// Appends a group to chain `$20` in one statement, if its head is still
/// where this store left it: the head moves and the rows go in together,
/// or neither.
const APPEND_EXPECTING: &str = "\
WITH moved AS (
    UPDATE audit_head SET seq = $1, hash = $2 WHERE id = $20 AND seq = $3 AND hash = $4
    RETURNING 1
), requests AS (
    INSERT INTO audit_request (agency, request_id, seq)
    SELECT agency, request_id, seq FROM UNNEST($8::text[], $10::text[], $5::bigint[], $7::text[])
        AS r(agency, request_id, seq, kind)
    WHERE kind <> 'access_history' AND EXISTS (SELECT 1 FROM moved)
)
INSERT INTO audit_log (seq, at_us, kind, agency, purpose, request_id, subject, subject_index,
                       verdict, reason, attestation_id, attestation_bytes, request_digest,
                       prev_hash, row_hash, chain)
SELECT *, $20::smallint FROM UNNEST($5::bigint[], $6::bigint[], $7::text[], $8::text[],
                     $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                     $15::text[], $16::bytea[], $17::text[], $18::bytea[], $19::bytea[])
WHERE EXISTS (SELECT 1 FROM moved)";

impl SqlAudit<Postgres> {
    /// One round trip per group (and one for its row numbers): the
    /// statement is its own transaction, and holds the chain head's row
    /// lock only while it runs. Under load on a busy machine, the round
    /// trips of a locking transaction (each waiting for a CPU) cost more
    /// than the rows. If another writer appended to this chain meanwhile,
    /// nothing is written and the locking append takes a chain no one
    /// holds; this store appends there from then on.
    pub(super) async fn append_expecting(
        &self,
        entries: &[AuditEntry],
    ) -> Result<Head, AuditError> {
        let cached = *self.last_head.lock().map_err(|_| poisoned())?;
        if let Some((chain, expected)) = cached {
            let n = entries.len();
            let seqs = self.next_seqs(n).await?;
            if let Some(&last) = seqs.last() {
                self.ensure_partitions(last).await?;
            }
            let mut head = expected;
            let (mut at, mut prev, mut this) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for (e, &seq) in entries.iter().zip(&seqs) {
                let row_hash = row_hash(&head.hash, e);
                at.push(e.at_us);
                prev.push(head.hash.to_vec());
                this.push(row_hash.to_vec());
                head = Head {
                    seq,
                    hash: row_hash,
                };
            }
            let text = |f: fn(&AuditEntry) -> &str| entries.iter().map(f).collect::<Vec<_>>();
            let inserted = sqlx::query(APPEND_EXPECTING)
                .bind(head.seq)
                .bind(head.hash.to_vec())
                .bind(expected.seq)
                .bind(expected.hash.to_vec())
                .bind(seqs)
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
                .bind(chain)
                .execute(&self.writes)
                .await
                .map_err(audit_error::<Postgres>)?
                .rows_affected();
            if inserted as usize == n {
                *self.last_head.lock().map_err(|_| poisoned())? = Some((chain, head));
                return Ok(head);
            }
        }
        let taken = self.append_rows(entries).await;
        *self.last_head.lock().map_err(|_| poisoned())? = taken.as_ref().ok().copied();
        Ok(taken?.1)
    }

    /// `n` new row numbers, in order.
    async fn next_seqs(&self, n: usize) -> Result<Vec<i64>, AuditError> {
        let mut seqs: Vec<i64> =
            sqlx::query_scalar("SELECT nextval('audit_seq') FROM generate_series(1, $1)")
                .bind(n as i64)
                .fetch_all(&self.writes)
                .await
                .map_err(audit_error::<Postgres>)?;
        seqs.sort_unstable();
        Ok(seqs)
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
            let mut insert = sqlx::query(insert_sql(chunk.len()));
            for &(seq, e) in chunk {
                let row_hash = row_hash(&head.hash, e);
                insert = insert
                    .bind(seq)
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
