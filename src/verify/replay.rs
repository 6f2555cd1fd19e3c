//! Retries: where the first answer to a `request_id` is found again, and
//! that answer read back from its audit row.

use std::sync::Arc;

use super::{VerifyError, VerifyOutcome};
use crate::audit::{AuditEntry, AuditError, AuditRecord, AuditStore};
use crate::cache::{Claim, RequestIndex};
use crate::domain::{Reason, RequestId, Spelled, Verdict, VerdictKind};

/// Where retries find their first answer: the audit trail, which is the
/// record; and a shared mark of used ids, set as a check begins, which
/// spares a new request the trail's read.
pub struct Replays {
    pub trail: Arc<dyn AuditStore>,
    pub index: Option<Arc<dyn RequestIndex>>,
}

/// What came before a request under its `request_id`.
pub(super) enum Prior {
    /// Nothing kept: a new check (`marked`: this call set the index's
    /// mark, to take back if the check is refused).
    New { marked: bool },
    /// The index holds the id for another request.
    Conflict,
    /// The first check under the id, from the trail.
    First(Box<AuditRecord>),
}

impl Replays {
    /// What the agency sent before under `request_id`: the index answers
    /// for a new id and a conflict at once; a retry reads the trail.
    pub(super) async fn prior(
        &self,
        agency: &str,
        request_id: &str,
        digest: &str,
    ) -> Result<Prior, AuditError> {
        if let Some(index) = &self.index {
            match index.claim(agency, request_id, digest).await {
                Claim::New => return Ok(Prior::New { marked: true }),
                Claim::Other => return Ok(Prior::Conflict),
                Claim::Same | Claim::Unknown => {}
            }
        }
        Ok(match self.trail.first_request(agency, request_id).await? {
            Some(first) => Prior::First(Box::new(first)),
            None => Prior::New { marked: false },
        })
    }

    /// Takes back a mark `first` set.
    pub(super) async fn release(&self, agency: &str, request_id: &str) {
        if let Some(index) = &self.index {
            index.release(agency, request_id).await;
        }
    }
}

/// The first answer under a `request_id` if it answered the same request
/// (`digest`); a conflict otherwise.
pub(super) fn answer_again(
    first: &AuditRecord,
    digest: &str,
    request_id: RequestId,
) -> Result<VerifyOutcome, VerifyError> {
    if first.entry.request_digest == digest {
        replayed(&first.entry, request_id)
    } else {
        Err(VerifyError::RequestIdReused)
    }
}

/// The first answer to a request, read back from its audit row: the same
/// verdict, reason and checks, and the same attestation.
fn replayed(first: &AuditEntry, request_id: RequestId) -> Result<VerifyOutcome, VerifyError> {
    let claims = crate::attest::stored_claims(&first.attestation)
        .ok_or(VerifyError::StoredAnswer("its attestation does not parse"))?;
    let unknown = || VerifyError::StoredAnswer("it holds a name this version does not know");
    // The verdict is the signed one, never the row's unsigned column; the
    // row's whole reason stands in only where the agency was shown none.
    let verdict = match claims.verdict {
        VerdictKind::Verified => Verdict::Verified,
        VerdictKind::NotVerified => Verdict::NotVerified(match claims.reason {
            Some(shown) => shown,
            None => Reason::from_name(&first.reason).ok_or_else(unknown)?,
        }),
    };
    let checks = match &claims.checks {
        Some(c) => Some(c.field_checks().ok_or_else(unknown)?),
        None => None,
    };
    Ok(VerifyOutcome {
        request_id,
        verdict,
        reason: claims.reason,
        checks,
        attestation_id: claims.jti,
        data_as_of: (claims.data_as_of != 0).then_some(claims.data_as_of),
        attestation: first.attestation.clone(),
    })
}
