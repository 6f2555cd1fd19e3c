//! The mirror of the national population database: the store trait the
//! verifier reads through, and its Postgres implementation.

mod postgres;

use std::future::Future;
use std::pin::Pin;

pub use postgres::PgMirror;

use crate::clock::UnixSeconds;
use crate::domain::{
    CitizenRecord, CitizenStatus, Gender, OldIdNumber, PartialDate, PersonalIdNumber,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The answer of a point lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub record: Option<CitizenRecord>,
    /// When the mirror was last updated; `None` before the first load.
    pub data_as_of: Option<UnixSeconds>,
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

/// Read access to the mirror. Object-safe so that the verifier holds an
/// `Arc<dyn MirrorStore>` whatever the backing database.
pub trait MirrorStore: Send + Sync + 'static {
    fn lookup<'a>(&'a self, id: &'a PersonalIdNumber) -> BoxFuture<'a, Result<Lookup, StoreError>>;
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
