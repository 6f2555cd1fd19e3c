//! The mirror in a SQL database: one implementation, as the audit trail's,
//! over what differs between Postgres and the embedded SQLite (a
//! [`Dialect`]): how rows are staged and swapped in, how a citizen's row
//! is spelled, how point reads are sent. Everything else — the store
//! traits, the load's steps and its import log, the decoding of rows into
//! domain types, the classification of errors — is written once here.

use std::fmt;

use sqlx::migrate::Migrator;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row,
    Transaction, Type,
};
use tokio::sync::mpsc;

use super::row::{StoredDetails, StoredPerson};
use super::{
    Duplicate, ExportRecord, Found, Gathered, LoadEnd, LoadError, LoadItem, LoadMode, LoadOutcome,
    MirrorAdmin, MirrorStore, RowOrigin, StoreError,
};
use crate::clock::UnixSeconds;
use crate::domain::{CitizenRecord, PersonalIdNumber};
use crate::infra::BoxFuture;
use crate::infra::sql::{Embedded, Migrations};

/// What differs between the two databases.
pub trait Dialect: Database + Sized {
    /// What point reads go through besides the pool (Postgres: a batcher
    /// on warm connections; SQLite: nothing).
    type Reads: Clone + fmt::Debug + Send + Sync + 'static;
    const MIGRATIONS: Migrations;
    /// `$1`/`?1`: the digest. One row, one boolean.
    const WAS_IMPORTED: &'static str;
    /// The digest, the mode, rows and records changed.
    const LOG_IMPORT: &'static str;
    /// The mirror's generation: one row, one integer.
    const GENERATION: &'static str = "SELECT generation FROM mirror_state";
    /// Replaces the mirror with the staging table, in order ...
    const SWAP: &'static [&'static str];
    /// ... and then sets `data_as_of` (`$1`, seconds) and a new generation.
    const SWAPPED: &'static str;
    /// Upserts the staged rows: new records added, changed ones updated
    /// with their version bumped, unchanged ones left alone ...
    const APPLY_DELTA: &'static str;
    /// ... then moves `data_as_of` (`$1`, seconds) on and starts a new
    /// generation ...
    const DELTA_APPLIED: &'static str;
    /// ... and drops what the delta staged.
    const AFTER_DELTA: &'static [&'static str];

    fn is_unavailable(error: &sqlx::Error) -> bool;
    /// What the point reads' queries carried, if they are gathered.
    fn gathered(_reads: &Self::Reads) -> Option<Gathered> {
        None
    }
    fn rows_affected(done: &Self::QueryResult) -> u64;
    /// The matchable columns of a citizen row, as this database stores them.
    fn person(row: &Self::Row) -> Result<StoredPerson, sqlx::Error>;
    fn find<'a>(
        mirror: &'a SqlMirror<Self>,
        id: &'a PersonalIdNumber,
    ) -> BoxFuture<'a, Result<Found, StoreError>>;
    /// Begins a load's transaction, one import at a time, with an empty
    /// staging table.
    fn begin_load(
        pool: &Pool<Self>,
        mode: LoadMode,
    ) -> BoxFuture<'_, Result<Staging<Self>, StoreError>>;
    /// Streams the rows into the staging table until `LoadItem::End`.
    fn stage<'a>(
        load: &'a mut Staging<Self>,
        items: &'a mut mpsc::Receiver<LoadItem>,
    ) -> BoxFuture<'a, Result<(u64, LoadEnd), LoadError>>;
    /// Drops the later rows of each repeated ID number if `budget` allows,
    /// or fails naming them all.
    fn deduplicate(
        load: &mut Staging<Self>,
        budget: u64,
    ) -> BoxFuture<'_, Result<Vec<Duplicate>, LoadError>>;
    fn run_migrations<'a>(
        migrator: &'a Migrator,
        pool: &'a Pool<Self>,
    ) -> BoxFuture<'a, Result<(), sqlx::migrate::MigrateError>>;
}

/// A load in progress: its transaction and its staging table. A load
/// dropped before `commit` changes nothing.
pub struct Staging<DB: Database> {
    pub(super) tx: Transaction<'static, DB>,
    pub(super) table: &'static str,
}

/// The mirror in a SQL database.
pub struct SqlMirror<DB: Dialect> {
    pub(super) pool: Pool<DB>,
    pub(super) reads: DB::Reads,
}

impl<DB: Dialect> Clone for SqlMirror<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            reads: self.reads.clone(),
        }
    }
}

impl<DB: Dialect> fmt::Debug for SqlMirror<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlMirror")
            .field("pool", &self.pool)
            .field("reads", &self.reads)
            .finish()
    }
}

impl<DB: Dialect> SqlMirror<DB> {
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

/// An error of `DB` as the mirror reports it: an outage is `Unavailable`.
pub(super) fn store_error<DB: Dialect>(error: sqlx::Error) -> StoreError {
    if DB::is_unavailable(&error) {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Query(Box::new(error))
    }
}

impl<DB> SqlMirror<DB>
where
    DB: Dialect,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> Option<i64>: Decode<'r, DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    /// A row of the export columns (the staging table's duplicates, the
    /// demo sample), as the export format has it.
    pub(super) fn export_record(row: &DB::Row) -> Result<ExportRecord, StoreError> {
        let text = |column: &str| row.try_get::<String, _>(column).map_err(store_error::<DB>);
        let details = StoredDetails {
            id_number: text("id_number")?,
            place_of_origin: text("place_of_origin")?,
            permanent_residence: text("permanent_residence")?,
            household_id: text("household_id")?,
            relation_to_head: text("relation_to_head")?,
            updated_at: row.try_get("updated_at").map_err(store_error::<DB>)?,
        };
        DB::person(row)
            .map_err(store_error::<DB>)?
            .into_export(details)
    }

    /// A point read's row: the record (`None` where the LEFT JOIN found no
    /// citizen), the mirror's age and generation.
    pub(super) fn found(id: &PersonalIdNumber, row: &DB::Row) -> Result<Found, StoreError> {
        let name: Option<String> = row.try_get("full_name").map_err(store_error::<DB>)?;
        let record = match name {
            None => None,
            Some(_) => Some(Self::record(id, row)?),
        };
        Ok(Found {
            record,
            data_as_of: row.try_get("data_as_of").map_err(store_error::<DB>)?,
            generation: row.try_get("generation").map_err(store_error::<DB>)?,
        })
    }

    fn record(id: &PersonalIdNumber, row: &DB::Row) -> Result<CitizenRecord, StoreError> {
        let version = row.try_get("record_version").map_err(store_error::<DB>)?;
        DB::person(row)
            .map_err(store_error::<DB>)?
            .into_record(id, version)
    }

    /// The rows of a staging table's duplicates query: each later row of a
    /// repeated ID number, with the row kept for it.
    pub(super) fn duplicates(rows: &[DB::Row]) -> Result<Vec<Duplicate>, StoreError> {
        let origin = |row: &DB::Row, file: &str, line: &str| -> Result<RowOrigin, StoreError> {
            let file: i64 = row.try_get(file).map_err(store_error::<DB>)?;
            let line: i64 = row.try_get(line).map_err(store_error::<DB>)?;
            Ok(RowOrigin {
                file: u32::try_from(file.max(0)).unwrap_or(u32::MAX),
                line: line.max(0) as u64,
            })
        };
        rows.iter()
            .map(|row| {
                Ok(Duplicate {
                    dropped: origin(row, "src_file", "src_line")?,
                    kept: origin(row, "kept_file", "kept_line")?,
                    record: Self::export_record(row)?,
                })
            })
            .collect()
    }
}

impl<DB> Staging<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
{
    /// The one shape of every load, whichever database: stage the rows,
    /// stop if the import is a repeat, drop or refuse repeated ID numbers,
    /// then swap (full) or upsert (delta), log the import, commit. The
    /// dialect supplies the steps that differ, inside one transaction: a
    /// load that stops at any step — or never reaches `commit` — changes
    /// nothing.
    pub(super) async fn run(
        mut self,
        mode: LoadMode,
        mut items: mpsc::Receiver<LoadItem>,
    ) -> Result<LoadOutcome, LoadError> {
        let (staged, end) = DB::stage(&mut self, &mut items).await?;
        if let Some(digest) = &end.digest
            && self.was_imported(digest).await?
        {
            // A repeat: the transaction rolls back as `self` is dropped.
            return Ok(LoadOutcome {
                already_imported: true,
                ..LoadOutcome::default()
            });
        }
        let dropped = DB::deduplicate(&mut self, end.duplicate_budget).await?;
        let rows = staged - dropped.len() as u64;
        let changed = match mode {
            LoadMode::Full => {
                self.swap(end.data_as_of).await?;
                rows
            }
            LoadMode::Delta => self.apply_delta(end.data_as_of).await?,
        };
        if let Some(digest) = &end.digest {
            self.log_import(digest, mode, rows, changed).await?;
        }
        self.commit().await?;
        Ok(LoadOutcome {
            rows,
            changed,
            dropped_duplicates: dropped,
            already_imported: false,
        })
    }

    pub(super) async fn was_imported(&mut self, digest: &str) -> Result<bool, StoreError> {
        sqlx::query_scalar(AssertSqlSafe(DB::WAS_IMPORTED))
            .bind(digest)
            .fetch_one(&mut *self.tx)
            .await
            .map_err(store_error::<DB>)
    }

    pub(super) async fn log_import(
        &mut self,
        digest: &str,
        mode: LoadMode,
        rows: u64,
        changed: u64,
    ) -> Result<(), StoreError> {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        sqlx::query(AssertSqlSafe(DB::LOG_IMPORT))
            .bind(digest)
            .bind(mode.as_str())
            .bind(count(rows))
            .bind(count(changed))
            .execute(&mut *self.tx)
            .await
            .map_err(store_error::<DB>)?;
        Ok(())
    }

    /// Replaces the mirror with the staging table; a new generation.
    pub(super) async fn swap(&mut self, data_as_of: UnixSeconds) -> Result<(), StoreError> {
        for statement in DB::SWAP {
            self.execute(statement).await?;
        }
        sqlx::query(AssertSqlSafe(DB::SWAPPED))
            .bind(data_as_of)
            .execute(&mut *self.tx)
            .await
            .map_err(store_error::<DB>)?;
        Ok(())
    }

    /// Upserts the staged rows; returns how many records were added or
    /// changed. A new generation.
    pub(super) async fn apply_delta(&mut self, data_as_of: UnixSeconds) -> Result<u64, StoreError> {
        let applied = self.execute(DB::APPLY_DELTA).await?;
        sqlx::query(AssertSqlSafe(DB::DELTA_APPLIED))
            .bind(data_as_of)
            .execute(&mut *self.tx)
            .await
            .map_err(store_error::<DB>)?;
        for statement in DB::AFTER_DELTA {
            self.execute(statement).await?;
        }
        Ok(applied)
    }

    /// Runs `sql` (one or more statements, no parameters); the rows it
    /// touched.
    async fn execute(&mut self, sql: &'static str) -> Result<u64, StoreError> {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *self.tx)
            .await
            .map(|done| DB::rows_affected(&done))
            .map_err(store_error::<DB>)
    }

    pub(super) async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(store_error::<DB>)
    }
}

impl<DB> MirrorStore for SqlMirror<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
{
    fn find<'a>(&'a self, id: &'a PersonalIdNumber) -> BoxFuture<'a, Result<Found, StoreError>> {
        DB::find(self, id)
    }

    fn generation(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(async move {
            sqlx::query_scalar(AssertSqlSafe(DB::GENERATION))
                .fetch_one(&self.pool)
                .await
                .map_err(store_error::<DB>)
        })
    }

    fn gathered(&self) -> Option<Gathered> {
        DB::gathered(&self.reads)
    }
}

impl<DB> MirrorAdmin for SqlMirror<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
{
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let migrator = Migrator::new(Embedded(DB::MIGRATIONS))
                .await
                .map_err(|e| StoreError::Query(Box::new(e)))?;
            DB::run_migrations(&migrator, &self.pool)
                .await
                .map_err(|e| match e {
                    sqlx::migrate::MigrateError::Execute(e) => store_error::<DB>(e),
                    other => StoreError::Query(Box::new(other)),
                })
        })
    }

    fn was_imported<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            sqlx::query_scalar(AssertSqlSafe(DB::WAS_IMPORTED))
                .bind(digest)
                .fetch_one(&self.pool)
                .await
                .map_err(store_error::<DB>)
        })
    }

    fn load(
        &self,
        mode: LoadMode,
        items: mpsc::Receiver<LoadItem>,
    ) -> BoxFuture<'_, Result<LoadOutcome, LoadError>> {
        Box::pin(async move {
            let staging = DB::begin_load(&self.pool, mode).await?;
            staging.run(mode, items).await
        })
    }
}
