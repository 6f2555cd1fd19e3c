//! The mirror of the national population database: the store traits the
//! verifier reads through and `vnid import` writes through, with their
//! Postgres and SQLite implementations. The files it is loaded from are
//! `import`'s.
//!
//! The mirror changes only in whole transactions: a full load streams the
//! rows into a staging table and swaps it in; a delta stages its rows and
//! upserts them, bumping the version of each record that changed. A failed
//! or interrupted load changes nothing.

pub(crate) mod migrate;
pub(crate) mod postgres;
mod row;
mod sqlite;
mod store;

use crate::infra::BoxFuture;
pub use crate::infra::read_batch::Gathered;
pub use crate::infra::sql::PoolSettings;
pub use postgres::PgMirror;
pub use sqlite::SqliteMirror;

use crate::clock::UnixSeconds;
use crate::domain::{
    CitizenRecord, CitizenStatus, Gender, OldIdNumber, PartialDate, PersonalIdNumber,
};

/// The answer of a point lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub record: Option<CitizenRecord>,
    /// When the mirror was last updated; `None` before the first load.
    pub data_as_of: Option<UnixSeconds>,
    /// Bumped by every full load; with `record_version`, what caches key on.
    pub generation: i64,
}

/// Why the store could not answer. Never "not found": that is an answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded; the call may be retried.
    #[error("the mirror is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored row breaks the schema's promises.
    #[error("a mirror record is corrupt: {0}")]
    Corrupt(String),
    #[error("mirror query failed: {0}")]
    Query(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// The same kind of error, for one held by several waiters (errors are
    /// not `Clone`).
    pub fn copied(&self) -> Self {
        let message = self.to_string();
        match self {
            Self::Unavailable(_) => Self::Unavailable(message.into()),
            Self::Corrupt(m) => Self::Corrupt(m.clone()),
            Self::Query(_) => Self::Query(message.into()),
        }
    }
}

/// Where a staged row came from: the input file's index and the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowOrigin {
    pub file: u32,
    pub line: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcedRecord {
    pub origin: RowOrigin,
    pub record: ExportRecord,
}

/// What the reader hands the loader. The load commits only after `End`:
/// a stream that stops without it (a reader that failed or was stopped)
/// changes nothing.
#[derive(Debug)]
pub enum LoadItem {
    Batch(Vec<SourcedRecord>),
    End {
        /// The newest `updated_at` of the rows.
        data_as_of: UnixSeconds,
        /// How many duplicate rows may still be dropped (the operator's
        /// `--max-errors` less the bad rows already rejected).
        duplicate_budget: u64,
        /// Recorded in the import log; a load whose digest is there already
        /// is rolled back as a repeat. `None`: not recorded.
        digest: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Replace the whole mirror.
    Full,
    /// Add and update records; bump the version of each that changed.
    Delta,
}

impl LoadMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Delta => "delta",
        }
    }
}

/// A row dropped because an earlier row has its ID number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub dropped: RowOrigin,
    pub kept: RowOrigin,
    pub record: ExportRecord,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadOutcome {
    /// Rows now in the mirror from this load.
    pub rows: u64,
    /// Records added or changed (a full load: every row).
    pub changed: u64,
    pub dropped_duplicates: Vec<Duplicate>,
    /// The digest was in the import log: the load was rolled back unchanged.
    pub already_imported: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{} rows repeat an earlier row's ID number", found.len())]
    Duplicates { found: Vec<Duplicate> },
    #[error("the rows ended before the import was complete; nothing was changed")]
    Incomplete,
}

impl LoadItem {
    /// A batch's rows, or what the end tells the loader.
    pub(crate) fn into_batch(self) -> Result<Vec<SourcedRecord>, LoadEnd> {
        match self {
            Self::Batch(rows) => Ok(rows),
            Self::End {
                data_as_of,
                duplicate_budget,
                digest,
            } => Err(LoadEnd {
                data_as_of,
                duplicate_budget,
                digest,
            }),
        }
    }
}

/// What `LoadItem::End` tells the loader.
#[derive(Debug, Clone)]
pub struct LoadEnd {
    data_as_of: UnixSeconds,
    duplicate_budget: u64,
    digest: Option<String>,
}

/// Loads records held in memory or generated (fixtures, the embedded
/// default's demo population) through the same path as `vnid import`.
/// A `digest` is recorded in the import log.
pub async fn load_records(
    admin: &dyn MirrorAdmin,
    mode: LoadMode,
    digest: Option<&str>,
    records: impl Iterator<Item = ExportRecord> + Send,
) -> Result<LoadOutcome, LoadError> {
    const BATCH: usize = 2_000;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let digest = digest.map(str::to_owned);
    let send = async move {
        let mut data_as_of = 0;
        let mut batch = Vec::with_capacity(BATCH);
        for (i, record) in records.enumerate() {
            data_as_of = data_as_of.max(record.updated_at);
            batch.push(SourcedRecord {
                origin: RowOrigin {
                    file: 0,
                    line: i as u64 + 1,
                },
                record,
            });
            if batch.len() == BATCH
                && tx
                    .send(LoadItem::Batch(std::mem::take(&mut batch)))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if tx.send(LoadItem::Batch(batch)).await.is_ok() {
            let _ = tx
                .send(LoadItem::End {
                    data_as_of,
                    duplicate_budget: 0,
                    digest,
                })
                .await;
        }
    };
    let (outcome, ()) = tokio::join!(admin.load(mode, rx), send);
    outcome
}

/// Write access for `vnid import`.
pub trait MirrorAdmin: MirrorStore {
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Whether an import with this digest has committed before.
    fn was_imported<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Loads the rows of `items` in one transaction.
    fn load(
        &self,
        mode: LoadMode,
        items: tokio::sync::mpsc::Receiver<LoadItem>,
    ) -> BoxFuture<'_, Result<LoadOutcome, LoadError>>;
}

/// Read access to the mirror. Object-safe so that the verifier holds an
/// `Arc<dyn MirrorStore>` whatever the backing database.
pub trait MirrorStore: Send + Sync + 'static {
    fn find<'a>(&'a self, id: &'a PersonalIdNumber) -> BoxFuture<'a, Result<Found, StoreError>>;

    /// A lookup that is not expected to repeat soon (a batch item: each
    /// candidate of an exam list is checked once). A cache in front of the
    /// mirror neither reads nor keeps it, so that a million single-use
    /// lookups cost no cache round trips and do not push the desks' hot
    /// entries out of the cache. By default, a plain lookup.
    fn find_once<'a>(
        &'a self,
        id: &'a PersonalIdNumber,
    ) -> BoxFuture<'a, Result<Found, StoreError>> {
        self.find(id)
    }

    /// The mirror's generation: bumped by every committed load, so that
    /// caches keyed on it never serve records from before a load.
    fn generation(&self) -> BoxFuture<'_, Result<i64, StoreError>>;

    /// The queries point reads were gathered into so far, where they are
    /// gathered (for `/metrics`); `None` where each read is its own.
    fn gathered(&self) -> Option<Gathered> {
        None
    }
}

/// One citizen as the mirror export carries it: every field of the record,
/// matchable or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    pub id_number: PersonalIdNumber,
    /// As exported (NFC); compared only after normalisation.
    pub full_name: String,
    pub date_of_birth: PartialDate,
    pub gender: Gender,
    pub old_id_numbers: Vec<OldIdNumber>,
    pub place_of_origin: String,
    pub permanent_residence: String,
    pub status: CitizenStatus,
    pub household_id: String,
    pub relation_to_head: String,
    pub updated_at: UnixSeconds,
}
