//! The rows' partitions on Postgres: ranges of `seq` of
//! `audit.partition_rows` rows each, created ahead of the head by whichever
//! instance appends and listed in `audit_partition`; and the prune that
//! drops whole partitions, with no row deleted and nothing left to vacuum.
//!
//! Rows are appended in time order, so a partition holds one stretch of
//! time: retention keeps a partition until every row in it is older than
//! the retention period, and then drops it whole (once exported).

use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::{AssertSqlSafe, Postgres, Row};

use super::{PruneOutcome, SignCut, SqlAudit, audit_error};
use crate::audit::AuditError;

/// Rows per partition unless configured: about a day of a busy province.
pub const DEFAULT_ROWS: i64 = 10_000_000;

/// How long creating or dropping a partition waits for the locks it needs
/// (a long `audit verify` holds one): appends queue behind the request.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '2s'";

/// How far the partitions reach, as this store last saw them.
#[derive(Debug)]
pub struct Partitions {
    /// Rows per partition created; 0: the rows are not partitioned.
    rows: i64,
    /// The first `seq` no partition takes (0: not read yet).
    end: AtomicI64,
}

impl Partitions {
    pub fn new(rows: i64) -> Self {
        Self {
            rows,
            end: AtomicI64::new(0),
        }
    }
}

impl SqlAudit<Postgres> {
    /// Makes sure partitions take every row up to `through` and a whole
    /// partition more, creating them if not (instances serialized by the
    /// lock on `audit_partition`). A partition that cannot be created now
    /// while there is room left is logged and tried again on a later
    /// append; with no room, the append fails.
    pub(super) async fn ensure_partitions(&self, through: i64) -> Result<(), AuditError> {
        let p = &self.partitions;
        if p.rows <= 0 || through + p.rows < p.end.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.create_partitions(through).await {
            Ok(end) => {
                p.end.fetch_max(end, Ordering::Relaxed);
                Ok(())
            }
            Err(error) if through < p.end.load(Ordering::Relaxed) => {
                tracing::warn!(%error, "audit partition not created yet; will retry");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Creates partitions until they reach a partition past `through`;
    /// returns where they end.
    async fn create_partitions(&self, through: i64) -> Result<i64, AuditError> {
        let rows = self.partitions.rows;
        let mut tx = self.writes.begin().await.map_err(audit_error::<Postgres>)?;
        sqlx::query(LOCK_TIMEOUT)
            .execute(&mut *tx)
            .await
            .map_err(audit_error::<Postgres>)?;
        sqlx::query("LOCK TABLE audit_partition IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(audit_error::<Postgres>)?;
        let mut end: i64 = sqlx::query("SELECT max(to_seq) FROM audit_partition")
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get::<Option<i64>, _>(0))
            .map_err(audit_error::<Postgres>)?
            .ok_or_else(|| AuditError::Corrupt("audit_partition lists no partition".into()))?;
        // What exists already, whether or not more can be created now.
        self.partitions.end.fetch_max(end, Ordering::Relaxed);
        while end <= through + rows {
            let name = format!("audit_log_s{end}");
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE {name} PARTITION OF audit_log FOR VALUES FROM ({end}) TO ({})",
                end + rows
            )))
            .execute(&mut *tx)
            .await
            .map_err(audit_error::<Postgres>)?;
            sqlx::query("INSERT INTO audit_partition (name, from_seq, to_seq) VALUES ($1, $2, $3)")
                .bind(&name)
                .bind(end)
                .bind(end + rows)
                .execute(&mut *tx)
                .await
                .map_err(audit_error::<Postgres>)?;
            end += rows;
        }
        tx.commit().await.map_err(audit_error::<Postgres>)?;
        Ok(end)
    }

    /// Drops the partitions whose every row is older than `before_us`,
    /// leaving a signed cut checkpoint at the last row they held, in one
    /// transaction. Rows of a partition that still holds a younger row
    /// wait for the next prune.
    pub(super) async fn prune_partitions(
        &self,
        before_us: i64,
        force: bool,
        sign_cut: SignCut<'_>,
    ) -> Result<PruneOutcome, AuditError> {
        let mut tx = self.pool.begin().await.map_err(audit_error::<Postgres>)?;
        for statement in [
            crate::infra::sql::UNBOUNDED_STATEMENTS,
            LOCK_TIMEOUT,
            // Checkpoints are signed one after another; the cut too.
            "LOCK TABLE audit_checkpoint IN EXCLUSIVE MODE",
        ] {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(audit_error::<Postgres>)?;
        }
        let head = Self::read_heads(&mut *tx).await?.newest();
        let old_enough = Self::old_enough(&mut tx, before_us, &head).await?;
        let dropped: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, to_seq FROM audit_partition WHERE to_seq - 1 <= $1")
                .bind(old_enough)
                .fetch_all(&mut *tx)
                .await
                .map_err(audit_error::<Postgres>)?;
        let Some(cut) = dropped.iter().map(|(_, to)| to - 1).max() else {
            return Ok(PruneOutcome::NOTHING);
        };
        // None: nothing but empty partitions (or rows pruned already).
        let Some(outcome) = Self::cut_at(&mut tx, cut, before_us, force, sign_cut).await? else {
            return Ok(PruneOutcome::NOTHING);
        };
        sqlx::query("DELETE FROM audit_partition WHERE to_seq - 1 <= $1")
            .bind(cut)
            .execute(&mut *tx)
            .await
            .map_err(audit_error::<Postgres>)?;
        // Last: dropping takes the rows' table whole until the commit.
        for (name, _) in &dropped {
            if !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(AuditError::Corrupt(format!(
                    "audit_partition names {name:?}, not a partition of vnid's"
                )));
            }
            sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")))
                .execute(&mut *tx)
                .await
                .map_err(audit_error::<Postgres>)?;
        }
        tx.commit().await.map_err(audit_error::<Postgres>)?;
        Ok(outcome)
    }
}
