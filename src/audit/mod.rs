//! The audit trail: one durable row per check (who checked whom, when, why,
//! with what answer, and the attestation given), written before the answer
//! leaves, hash-chained and checkpointed so that a changed, removed, moved
//! or truncated row is found.
//!
//! - [`chain`]: pure. What a row's hash covers, what a checkpoint signs,
//!   and the walk that names the first row found wrong.
//! - [`store`]: the rows in Postgres (or SQLite for the embedded default),
//!   one SQL for both. Each append takes one chain's head lock, so
//!   instances that share a database append to chains of their own.
//! - [`packed`]: how a row keeps its attestation (as bytes).
//! - [`writer`]: each instance's group-commit writer: concurrent checks
//!   share one transaction, and each waits for its COMMIT.
//!
//! A row never holds an ID number, a name or a birth date: the person is
//! filed under the service-keyed subject index (for their own access
//! history) and the agency's pairwise subject.

pub mod chain;
pub mod export;
pub mod history;
pub mod packed;
pub mod store;
pub mod witness;
mod writer;

use std::sync::Arc;

pub use chain::{ChainId, Finding, Hash, Head, Heads, Summary, TrailKeys};
pub use store::{AuditStore, KeyUse, PruneOutcome, SignCheckpoint, SqlAudit, Verification};
pub use writer::{AuditLog, AuditSink, NoAudit, WriterHandle, WriterParams};

use crate::attest::Keyring;
use crate::clock::Clock;
use crate::domain::{CheckCall, Door, Spelled};

/// What touched a person's data: a check, by the call it arrived by, or
/// an operator's read of the person's access history. Spelled in the
/// trail (and its hash) as `verify`, `verify_batch`, `verify_card_qr`,
/// `access_history`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Check(CheckCall),
    /// An operator listed the person's access history.
    AccessHistory,
}

impl Spelled for AuditKind {
    const ALL: &'static [Self] = &[
        Self::Check(CheckCall::Verify),
        Self::Check(CheckCall::BatchItem),
        Self::Check(CheckCall::CardQr),
        Self::AccessHistory,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Check(CheckCall::Verify) => "verify",
            Self::Check(CheckCall::BatchItem) => "verify_batch",
            Self::Check(CheckCall::CardQr) => "verify_card_qr",
            Self::AccessHistory => "access_history",
        }
    }
}

/// The kind and door of a stored kind (see [`AuditEntry::stored_kind`]).
pub fn parse_stored_kind(text: &str) -> Option<(AuditKind, Door)> {
    let (kind, door) = match text.split_once('.') {
        None => (text, Door::Grpc),
        Some((kind, door)) => (
            kind,
            Door::ALL
                .into_iter()
                .find(|d| *d != Door::Grpc && d.name() == door)?,
        ),
    };
    Some((AuditKind::from_name(kind)?, door))
}

/// One row's content. Enumerated values are spelled as the proto (and the
/// attestation) spells them; empty where they do not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When the check was answered, in microseconds since the epoch.
    pub at_us: i64,
    pub kind: AuditKind,
    /// The agency (or operator) that asked.
    pub agency: String,
    pub purpose: String,
    pub request_id: String,
    /// The agency's pairwise subject token: what the attestation's `sub` says.
    pub subject: String,
    /// The service-keyed token under which the person's history is filed.
    pub subject_index: String,
    pub verdict: String,
    /// The whole reason, whatever the agency was shown.
    pub reason: String,
    pub attestation_id: String,
    /// The compact JWS the caller was given.
    pub attestation: String,
    /// A keyed digest of what was asked (see `SubjectKey::request_digest`):
    /// the same `request_id` with the same digest is a retry, with another
    /// one a conflict.
    pub request_digest: String,
    /// The door the call came in by.
    pub door: Door,
}

impl AuditEntry {
    /// The kind as stored and hashed: its name, then `.` and the door when
    /// that is not gRPC (so rows from before the doors, all gRPC, read and
    /// hash as they always did).
    pub fn stored_kind(&self) -> std::borrow::Cow<'static, str> {
        match self.door {
            Door::Grpc => self.kind.name().into(),
            door => format!("{}.{}", self.kind.name(), door.name()).into(),
        }
    }

    /// The (agency, request_id) a check's row holds, which the trail keeps
    /// unique; `None` for an operator's read of a history.
    pub fn request_key(&self) -> Option<(&str, &str)> {
        (self.kind != AuditKind::AccessHistory).then_some((&self.agency, &self.request_id))
    }
}

/// A row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    /// The chain it links into.
    pub chain: chain::ChainId,
    pub entry: AuditEntry,
    pub prev_hash: Hash,
    pub row_hash: Hash,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit store cannot be reached: the check cannot be answered.
    #[error("the audit store is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("audit store query failed: {0}")]
    Query(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("an audit row is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot sign the audit checkpoint: {0}")]
    Sign(#[from] serde_json::Error),
    /// The agency already has a check under this `request_id` in the
    /// trail: this row was not written.
    #[error("the agency's request_id is already in the trail")]
    Duplicate,
    /// A prune would remove rows that went into no export.
    #[error(
        "rows {first} to {last} were never exported: run `vnid audit export --from {first} \
         --to {last} --out FILE` first (or prune with --force)"
    )]
    Unexported { first: i64, last: i64 },
}

impl AuditError {
    /// The same kind of failure, for each of the checks that shared a
    /// failed group commit (the cause itself is logged once).
    fn for_each_waiter(&self) -> Self {
        match self {
            Self::Unavailable(_) => Self::Unavailable("the group commit failed".into()),
            Self::Duplicate => Self::Duplicate,
            _ => Self::Query("the group commit failed".into()),
        }
    }
}

/// Signs checkpoints with the trail's checkpoint key: a key of its own,
/// never the attestation key that signs every check.
#[derive(Clone)]
pub struct Checkpointer {
    key: Arc<Keyring>,
    issuer: String,
    clock: Arc<dyn Clock>,
}

impl Checkpointer {
    pub fn new(key: Arc<Keyring>, issuer: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            key,
            issuer: issuer.to_owned(),
            clock,
        }
    }

    /// A periodic checkpoint of every chain's head, naming the one before
    /// it.
    pub fn sign(&self, heads: &Heads, prev: Option<&Head>) -> Result<String, AuditError> {
        let claims =
            chain::CheckpointClaims::new(&self.issuer, heads, prev, self.clock.now(), false);
        Ok(self.key.sign_checkpoint(&claims)?)
    }

    /// The cut checkpoint of a prune, at the last row it removed from each
    /// chain: it anchors what is kept.
    pub fn sign_cut(&self, heads: &Heads) -> Result<String, AuditError> {
        let claims =
            chain::CheckpointClaims::new(&self.issuer, heads, None, self.clock.now(), true);
        Ok(self.key.sign_checkpoint(&claims)?)
    }
}
