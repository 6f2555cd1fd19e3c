//! Reading the chain in order: `vnid audit verify`'s walk over every row
//! and checkpoint, and the prune that cuts the oldest rows under a signed
//! checkpoint.

use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::{
    Dialect, PruneOutcome, ROWS_AFTER, SCAN_PAGE, SignCut, SqlAudit, Verification, audit_error,
};
use crate::audit::AuditError;
use crate::audit::chain::{
    ChainCheck, ChainId, FIRST_CHAIN, Finding, Hash, Head, StoredCheckpoint, TrailKeys,
};

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
    pub(super) async fn walk(
        &self,
        keys: TrailKeys<'_>,
        witnessed: &[StoredCheckpoint],
        expected: &[Head],
    ) -> Result<Verification, AuditError> {
        let mut tx = self.pool.begin().await.map_err(audit_error::<DB>)?;
        if let Some(snapshot) = DB::SNAPSHOT {
            sqlx::query(snapshot)
                .execute(&mut *tx)
                .await
                .map_err(audit_error::<DB>)?;
        }
        // The heads first: rows appended after them are left for next time.
        let heads = Self::read_heads(&mut *tx).await?;
        let checkpoints = sqlx::query("SELECT seq, token FROM audit_checkpoint ORDER BY seq")
            .fetch_all(&mut *tx)
            .await
            .map_err(audit_error::<DB>)?
            .iter()
            .map(Self::checkpoint)
            .collect::<Result<Vec<_>, _>>()?;
        let walk = ChainCheck::new(keys, &checkpoints)
            .and_then(|walk| walk.witnessed(witnessed))
            .and_then(|walk| {
                expected
                    .iter()
                    .try_fold(walk, |walk, head| walk.expect(*head))
            });
        let mut walk = match walk {
            Ok(walk) => walk,
            Err(finding) => return Ok(Err(finding)),
        };
        let mut after = i64::MIN;
        loop {
            let rows = sqlx::query(AssertSqlSafe(ROWS_AFTER.as_str()))
                .bind(after)
                .bind(heads.newest().seq)
                .bind(SCAN_PAGE)
                .fetch_all(&mut *tx)
                .await
                .map_err(audit_error::<DB>)?;
            for row in &rows {
                let record = Self::record(row)?;
                match walk.push(&record) {
                    Ok(()) => {}
                    Err(Finding::Unlinked {
                        seq,
                        chain,
                        after,
                        prev,
                    }) => {
                        let finding = Self::explain_unlinked(&mut tx, seq, chain, after, prev);
                        return Ok(Err(finding.await?));
                    }
                    Err(finding) => return Ok(Err(finding)),
                }
                after = record.seq;
            }
            if rows.len() < SCAN_PAGE as usize {
                break;
            }
        }
        tx.rollback().await.map_err(audit_error::<DB>)?;
        Ok(walk.finish(&heads))
    }

    /// Row `seq` points at a predecessor other than the row before it in
    /// its chain (`after`): if that predecessor is elsewhere in the trail,
    /// rows were moved; otherwise it is gone.
    async fn explain_unlinked(
        tx: &mut sqlx::Transaction<'_, DB>,
        seq: i64,
        chain: ChainId,
        after: i64,
        prev: Hash,
    ) -> Result<Finding, AuditError> {
        let found: Option<i64> = sqlx::query("SELECT min(seq) FROM audit_log WHERE row_hash = $1")
            .bind(prev.to_vec())
            .fetch_one(&mut **tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(audit_error::<DB>)?;
        Ok(match found {
            Some(follows) => Finding::Reordered { seq, follows },
            None => Finding::Removed {
                chain,
                after,
                before: seq,
            },
        })
    }

    /// The ranges of rows exports hold, those reaching row `from` or later.
    async fn exported_ranges(
        tx: &mut sqlx::Transaction<'_, DB>,
        from: i64,
    ) -> Result<Vec<(i64, i64)>, AuditError> {
        sqlx::query("SELECT from_seq, to_seq FROM audit_export WHERE to_seq >= $1")
            .bind(from)
            .fetch_all(&mut **tx)
            .await
            .map_err(audit_error::<DB>)?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<(i64, i64)>, sqlx::Error>>()
            .map_err(|e| AuditError::Corrupt(e.to_string()))
    }

    /// The row before the oldest one young enough to keep (the head when
    /// every row is old). No index on the time: every append would pay
    /// for it. Rows go in in time order, so this reads the rows it is
    /// about to remove, in primary-key order, and stops at the first one
    /// to keep.
    pub(super) async fn old_enough(
        tx: &mut sqlx::Transaction<'_, DB>,
        before_us: i64,
        head: &Head,
    ) -> Result<i64, AuditError> {
        let keep_from: Option<i64> =
            sqlx::query("SELECT seq FROM audit_log WHERE at_us >= $1 ORDER BY seq LIMIT 1")
                .bind(before_us)
                .fetch_optional(&mut **tx)
                .await
                .and_then(|row| row.map(|row| row.try_get(0)).transpose())
                .map_err(audit_error::<DB>)?;
        Ok(keep_from.map_or(head.seq, |seq| seq - 1))
    }

    /// What every prune does once it knows its cut, the last row it
    /// removes: refuses rows no export holds (unless `force`), signs the
    /// cut checkpoint, and removes the rows' request entries and the
    /// checkpoints older than the cut. The rows themselves are the
    /// caller's to remove. The cut checkpoint names each chain's last row
    /// removed. `None`: no row up to `cut`, nothing to prune.
    pub(super) async fn cut_at(
        tx: &mut sqlx::Transaction<'_, DB>,
        cut: i64,
        before_us: i64,
        force: bool,
        sign_cut: SignCut<'_>,
    ) -> Result<Option<PruneOutcome>, AuditError> {
        let (first, removed): (Option<i64>, i64) =
            sqlx::query("SELECT min(seq), count(*) FROM audit_log WHERE seq <= $1")
                .bind(cut)
                .fetch_one(&mut **tx)
                .await
                .and_then(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .map_err(audit_error::<DB>)?;
        let Some(first) = first else {
            return Ok(None);
        };
        let exported = Self::exported_ranges(tx, first).await?;
        let unexported = crate::audit::export::unexported(first, cut, &exported);
        if let (Some((first, last)), false) = (unexported, force) {
            return Err(AuditError::Unexported { first, last });
        }
        let heads = Self::heads_before(tx, cut).await?;
        let cut_head = heads.identity();
        let token = sign_cut(&heads)?;
        for statement in [
            "DELETE FROM audit_request WHERE seq <= $1",
            // Older checkpoints vouch for rows no longer kept.
            "DELETE FROM audit_checkpoint WHERE seq <= $1",
        ] {
            sqlx::query(statement)
                .bind(cut)
                .execute(&mut **tx)
                .await
                .map_err(audit_error::<DB>)?;
        }
        sqlx::query(
            "INSERT INTO audit_checkpoint (seq, at_us, cut, token) VALUES ($1, $2, $3, $4)",
        )
        .bind(cut_head.seq)
        .bind(before_us)
        .bind(true)
        .bind(token.as_str())
        .execute(&mut **tx)
        .await
        .map_err(audit_error::<DB>)?;
        Ok(Some(PruneOutcome {
            removed: u64::try_from(removed).unwrap_or(0),
            cut: Some((cut_head, token)),
            unexported,
        }))
    }

    /// The embedded trail's prune: the rows up to the cut deleted, under
    /// the head's lock.
    pub(super) async fn prune_rows(
        &self,
        before_us: i64,
        force: bool,
        sign_cut: SignCut<'_>,
    ) -> Result<PruneOutcome, AuditError> {
        let mut tx = self.pool.begin().await.map_err(audit_error::<DB>)?;
        if let Some(unbounded) = DB::UNBOUNDED {
            sqlx::query(unbounded)
                .execute(&mut *tx)
                .await
                .map_err(audit_error::<DB>)?;
        }
        // The embedded trail's one chain, held (and with it, SQLite's lock).
        let (_, head) = Self::chain_head_of(
            &sqlx::query(DB::LOCK_CHAIN)
                .bind(i32::from(FIRST_CHAIN))
                .fetch_one(&mut *tx)
                .await
                .map_err(audit_error::<DB>)?,
        )?;
        let cut = Self::old_enough(&mut tx, before_us, &head).await?;
        let Some(outcome) = Self::cut_at(&mut tx, cut, before_us, force, sign_cut).await? else {
            // Nothing older than the cut is left (or the trail is empty).
            return Ok(PruneOutcome::NOTHING);
        };
        sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(cut)
            .execute(&mut *tx)
            .await
            .map_err(audit_error::<DB>)?;
        tx.commit().await.map_err(audit_error::<DB>)?;
        Ok(outcome)
    }
}
