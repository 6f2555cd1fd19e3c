//! The citizen's access history: the use case behind
//! `AuditService.ListAccessHistory`. The query is itself audited, durably,
//! before any row is read.

use std::sync::Arc;

use super::{AuditEntry, AuditError, AuditKind, AuditRecord, AuditSink, AuditStore};
use crate::attest::Attester;
use crate::clock::Clock;
use crate::domain::{Door, PersonalIdNumber, RequestId};
use crate::policy::{Agency, Denial};

/// Records per page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Records per page at most.
pub const MAX_PAGE_SIZE: u32 = 500;

/// One page request, parsed.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub request_id: RequestId,
    pub id_number: PersonalIdNumber,
    pub page_size: u32,
    /// Records older than this `seq` (from the previous page's token).
    pub before: Option<i64>,
    /// The door the read came in by, for its own audit row.
    pub door: Door,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Newest first.
    pub records: Vec<AuditRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next_before: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Denied(#[from] Denial),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

pub struct AccessHistory {
    store: Arc<dyn AuditStore>,
    sink: Arc<dyn AuditSink>,
    attester: Arc<Attester>,
    clock: Arc<dyn Clock>,
}

impl AccessHistory {
    pub fn new(
        store: Arc<dyn AuditStore>,
        sink: Arc<dyn AuditSink>,
        attester: Arc<Attester>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            sink,
            attester,
            clock,
        }
    }

    pub async fn list(
        &self,
        operator: &Agency,
        query: HistoryQuery,
    ) -> Result<HistoryPage, HistoryError> {
        operator.authorize_history()?;
        let key = &self.attester.subject_key;
        let subject_index = key.subject_index(&query.id_number);
        self.sink
            .record(AuditEntry {
                at_us: self.clock.now_micros(),
                kind: AuditKind::AccessHistory,
                door: query.door,
                agency: operator.id.clone(),
                purpose: String::new(),
                request_id: query.request_id.as_str().to_owned(),
                subject: key.pairwise_subject(&operator.id, &query.id_number),
                subject_index: subject_index.clone(),
                verdict: String::new(),
                reason: String::new(),
                attestation_id: String::new(),
                attestation: String::new(),
                request_digest: String::new(),
            })
            .await?;
        let size = query.page_size.clamp(1, MAX_PAGE_SIZE);
        let mut records = self
            .store
            .history(&subject_index, query.before, i64::from(size) + 1)
            .await?;
        let next_before = if records.len() > size as usize {
            records.truncate(size as usize);
            records.last().map(|r| r.seq)
        } else {
            None
        };
        Ok(HistoryPage {
            records,
            next_before,
        })
    }
}
