//! The one shape of every load, whichever store: stage the rows, stop if
//! the import is a repeat, drop or refuse repeated ID numbers, then swap
//! (full) or upsert (delta), log the import, commit. Each store supplies
//! the steps in its own SQL, inside one transaction: a load that stops at
//! any step — or never reaches `commit` — changes nothing.

use tokio::sync::mpsc;

use super::{
    Duplicate, LoadEnd, LoadError, LoadItem, LoadMode, LoadOutcome, StoreError, UnixSeconds,
};

/// One store's steps of a load, all inside the transaction it holds.
pub(super) trait LoadSteps {
    /// Streams the rows into the staging table until `LoadItem::End`.
    async fn stage(
        &mut self,
        items: &mut mpsc::Receiver<LoadItem>,
    ) -> Result<(u64, LoadEnd), LoadError>;
    async fn was_imported(&mut self, digest: &str) -> Result<bool, StoreError>;
    /// Drops the later rows of each repeated ID number if `budget` allows,
    /// or fails naming them all.
    async fn deduplicate(&mut self, budget: u64) -> Result<Vec<Duplicate>, LoadError>;
    /// Replaces the mirror with the staging table; a new generation.
    async fn swap(&mut self, data_as_of: UnixSeconds) -> Result<(), StoreError>;
    /// Upserts the staged rows; returns how many records were added or
    /// changed. A new generation.
    async fn apply_delta(&mut self, data_as_of: UnixSeconds) -> Result<u64, StoreError>;
    async fn log_import(
        &mut self,
        digest: &str,
        mode: LoadMode,
        rows: u64,
        changed: u64,
    ) -> Result<(), StoreError>;
    async fn commit(self) -> Result<(), StoreError>;
}

pub(super) async fn drive(
    mut steps: impl LoadSteps,
    mode: LoadMode,
    mut items: mpsc::Receiver<LoadItem>,
) -> Result<LoadOutcome, LoadError> {
    let (staged, end) = steps.stage(&mut items).await?;
    if let Some(digest) = &end.digest
        && steps.was_imported(digest).await?
    {
        // A repeat: the transaction rolls back as `steps` is dropped.
        return Ok(LoadOutcome {
            already_imported: true,
            ..LoadOutcome::default()
        });
    }
    let dropped = steps.deduplicate(end.duplicate_budget).await?;
    let rows = staged - dropped.len() as u64;
    let changed = match mode {
        LoadMode::Full => {
            steps.swap(end.data_as_of).await?;
            rows
        }
        LoadMode::Delta => steps.apply_delta(end.data_as_of).await?,
    };
    if let Some(digest) = &end.digest {
        steps.log_import(digest, mode, rows, changed).await?;
    }
    steps.commit().await?;
    Ok(LoadOutcome {
        rows,
        changed,
        dropped_duplicates: dropped,
        already_imported: false,
    })
}
