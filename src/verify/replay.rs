//! Retries: where the first answer to a `request_id` is found again, and
//! that answer read back from its audit row.

use std::sync::Arc;

use super::names::{name_level_name, outcome_name, precision_name, reason_name, verdict_name};
use super::{VerifyError, VerifyOutcome};
use crate::attest::{ChecksClaim, FieldClaim};
use crate::audit::{AuditEntry, AuditError, AuditRecord, AuditStore};
use crate::cache::{Claim, RequestIndex};
use crate::domain::{
    DatePrecision, FieldChecks, FieldOutcome, NameMatchLevel, Reason, RequestId, Verdict,
};

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
    let reason = match &claims.reason {
        Some(name) => Some(named(&REASONS, reason_name, name).ok_or_else(unknown)?),
        None => None,
    };
    // The verdict is the signed one, never the row's unsigned column; the
    // row's whole reason stands in only where the agency was shown none.
    let verdict = if claims.verdict == verdict_name(Verdict::Verified) {
        Verdict::Verified
    } else if claims.verdict == verdict_name(Verdict::NotVerified(Reason::NotFound)) {
        Verdict::NotVerified(match reason {
            Some(shown) => shown,
            None => named(&REASONS, reason_name, &first.reason).ok_or_else(unknown)?,
        })
    } else {
        return Err(unknown());
    };
    let checks = match &claims.checks {
        Some(c) => Some(field_checks(c).ok_or_else(unknown)?),
        None => None,
    };
    Ok(VerifyOutcome {
        request_id,
        verdict,
        reason,
        checks,
        attestation_id: claims.jti,
        data_as_of: (claims.data_as_of != 0).then_some(claims.data_as_of),
        attestation: first.attestation.clone(),
    })
}

const REASONS: [Reason; 4] = [
    Reason::NotFound,
    Reason::FieldMismatch,
    Reason::Deceased,
    Reason::Cancelled,
];
const OUTCOMES: [FieldOutcome; 3] = [
    FieldOutcome::Match,
    FieldOutcome::Mismatch,
    FieldOutcome::NotClaimed,
];
const LEVELS: [NameMatchLevel; 3] = [
    NameMatchLevel::Exact,
    NameMatchLevel::Folded,
    NameMatchLevel::Partial,
];
const PRECISIONS: [DatePrecision; 3] = [
    DatePrecision::Year,
    DatePrecision::Month,
    DatePrecision::Day,
];

/// The value whose proto name is `name`.
fn named<T: Copy>(all: &[T], name_of: fn(T) -> &'static str, name: &str) -> Option<T> {
    all.iter().copied().find(|v| name_of(*v) == name)
}

/// The inverse of `checks_claim`.
fn field_checks(c: &ChecksClaim) -> Option<FieldChecks> {
    let outcome = |f: &FieldClaim| named(&OUTCOMES, outcome_name, &f.outcome);
    Some(FieldChecks {
        full_name: crate::domain::NameCheck {
            outcome: outcome(&c.full_name)?,
            level: match &c.full_name.level {
                Some(l) => Some(named(&LEVELS, name_level_name, l)?),
                None => None,
            },
        },
        date_of_birth: crate::domain::DateCheck {
            outcome: outcome(&c.date_of_birth)?,
            record_precision: named(
                &PRECISIONS,
                precision_name,
                c.date_of_birth.record_precision.as_deref()?,
            )?,
        },
        gender: outcome(&c.gender)?,
        old_id_number: outcome(&c.old_id_number)?,
    })
}
