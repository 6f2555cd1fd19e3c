//! The use case: one check of one person for one agency. Policy, lookup,
//! match, attest, audit — in that order, and nothing else. The answer
//! leaves only once its audit row is durable.

use std::sync::Arc;

pub use crate::attest::Attester;
use crate::attest::{AttestationClaims, ChecksClaim, FieldClaim};
use crate::audit::{AuditEntry, AuditError, AuditKind, AuditSink};
use crate::clock::{Clock, UnixSeconds};
use crate::domain::{
    Claims, DatePrecision, FieldChecks, FieldOutcome, NameMatchLevel, PersonalIdNumber, Purpose,
    Reason, RequestId, Verdict, assess,
};
use crate::mirror::{MirrorStore, StoreError};
use crate::policy::{Agency, Denial};
use crate::quota::{Exhausted, Quotas};

/// One check, parsed and valid.
#[derive(Debug, Clone)]
pub struct VerifyCommand {
    pub request_id: RequestId,
    pub id_number: PersonalIdNumber,
    pub claims: Claims,
    pub purpose: Purpose,
    /// The least strict name level that counts as a match.
    pub name_match: NameMatchLevel,
}

/// The answer, already cut to what the agency may see.
#[derive(Debug, Clone)]
pub struct VerifyOutcome {
    pub request_id: RequestId,
    pub verdict: Verdict,
    /// The reason the agency may see (`None` when verified or hidden).
    pub reason: Option<Reason>,
    pub checks: Option<FieldChecks>,
    pub attestation: String,
    pub attestation_id: String,
    pub data_as_of: Option<UnixSeconds>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Denied(#[from] Denial),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    #[error("cannot sign the attestation: {0}")]
    Sign(#[from] serde_json::Error),
    #[error("cannot draw an attestation id: {0}")]
    Random(getrandom::Error),
}

pub struct Verifier {
    mirror: Arc<dyn MirrorStore>,
    attester: Arc<Attester>,
    audit: Arc<dyn AuditSink>,
    quotas: Arc<Quotas>,
    clock: Arc<dyn Clock>,
}

impl Verifier {
    pub fn new(
        mirror: Arc<dyn MirrorStore>,
        attester: Arc<Attester>,
        audit: Arc<dyn AuditSink>,
        quotas: Arc<Quotas>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            mirror,
            attester,
            audit,
            quotas,
            clock,
        }
    }

    pub fn jwks_json(&self) -> &str {
        self.attester.keyring.jwks_json()
    }

    pub async fn verify(
        &self,
        agency: &Agency,
        command: VerifyCommand,
    ) -> Result<VerifyOutcome, VerifyError> {
        self.check(agency, command, AuditKind::Verify).await
    }

    /// One check, audited as `kind`.
    pub async fn check(
        &self,
        agency: &Agency,
        command: VerifyCommand,
        kind: AuditKind,
    ) -> Result<VerifyOutcome, VerifyError> {
        agency.authorize_check(command.purpose, command.name_match)?;
        self.quotas
            .admit(&agency.id, &agency.limits, self.clock.now_micros())
            .await?;
        let lookup = self.mirror.lookup(&command.id_number).await?;
        let assessment = assess(
            &command.id_number,
            &command.claims,
            command.name_match,
            lookup.record.as_ref(),
        );
        let (reason, checks) = agency.disclose(&assessment);
        let attestation_id = new_attestation_id().map_err(VerifyError::Random)?;
        let at_us = self.clock.now_micros();
        let now = at_us.div_euclid(1_000_000);
        let subject_key = &self.attester.subject_key;
        let claims = AttestationClaims {
            iss: self.attester.issuer.clone(),
            aud: agency.id.clone(),
            sub: subject_key.pairwise_subject(&agency.id, &command.id_number),
            iat: now,
            exp: now.saturating_add(self.attester.ttl_seconds),
            jti: attestation_id.clone(),
            nonce: command.request_id.as_str().to_owned(),
            purpose: purpose_name(command.purpose).to_owned(),
            verdict: verdict_name(assessment.verdict).to_owned(),
            reason: reason.map(|r| reason_name(r).to_owned()),
            checks: checks.as_ref().map(checks_claim),
            data_as_of: lookup.data_as_of.unwrap_or(0),
        };
        let attestation = self.attester.keyring.sign(&claims)?;
        let reason_recorded = match assessment.verdict {
            Verdict::Verified => "",
            Verdict::NotVerified(reason) => reason_name(reason),
        };
        self.audit
            .record(AuditEntry {
                at_us,
                kind,
                subject_index: subject_key.subject_index(&command.id_number),
                reason: reason_recorded.to_owned(),
                attestation: attestation.clone(),
                agency: claims.aud,
                purpose: claims.purpose,
                request_id: claims.nonce,
                subject: claims.sub,
                verdict: claims.verdict,
                attestation_id: claims.jti,
            })
            .await?;
        Ok(VerifyOutcome {
            request_id: command.request_id,
            verdict: assessment.verdict,
            reason,
            checks,
            attestation,
            attestation_id,
            data_as_of: lookup.data_as_of,
        })
    }
}

/// A random (version 4) UUID.
fn new_attestation_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

// The attestation spells enumerated values as the proto does; the gRPC
// layer's tests hold these names equal to the generated ones.

pub fn purpose_name(p: Purpose) -> &'static str {
    match p {
        Purpose::Healthcare => "PURPOSE_HEALTHCARE",
        Purpose::Examination => "PURPOSE_EXAMINATION",
        Purpose::SocialInsurance => "PURPOSE_SOCIAL_INSURANCE",
        Purpose::PublicService => "PURPOSE_PUBLIC_SERVICE",
    }
}

pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Verified => "VERDICT_VERIFIED",
        Verdict::NotVerified(_) => "VERDICT_NOT_VERIFIED",
    }
}

pub fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::NotFound => "REASON_NOT_FOUND",
        Reason::FieldMismatch => "REASON_FIELD_MISMATCH",
        Reason::Deceased => "REASON_DECEASED",
        Reason::Cancelled => "REASON_CANCELLED",
    }
}

pub fn outcome_name(o: FieldOutcome) -> &'static str {
    match o {
        FieldOutcome::Match => "FIELD_OUTCOME_MATCH",
        FieldOutcome::Mismatch => "FIELD_OUTCOME_MISMATCH",
        FieldOutcome::NotClaimed => "FIELD_OUTCOME_NOT_CLAIMED",
    }
}

pub fn name_level_name(l: NameMatchLevel) -> &'static str {
    match l {
        NameMatchLevel::Exact => "NAME_MATCH_EXACT",
        NameMatchLevel::Folded => "NAME_MATCH_FOLDED",
        NameMatchLevel::Partial => "NAME_MATCH_PARTIAL",
    }
}

pub fn precision_name(p: DatePrecision) -> &'static str {
    match p {
        DatePrecision::Year => "DATE_PRECISION_YEAR",
        DatePrecision::Month => "DATE_PRECISION_MONTH",
        DatePrecision::Day => "DATE_PRECISION_DAY",
    }
}

fn checks_claim(c: &FieldChecks) -> ChecksClaim {
    let plain = |o: FieldOutcome| FieldClaim {
        outcome: outcome_name(o).to_owned(),
        level: None,
        record_precision: None,
    };
    ChecksClaim {
        full_name: FieldClaim {
            level: c.full_name.level.map(|l| name_level_name(l).to_owned()),
            ..plain(c.full_name.outcome)
        },
        date_of_birth: FieldClaim {
            record_precision: Some(precision_name(c.date_of_birth.record_precision).to_owned()),
            ..plain(c.date_of_birth.outcome)
        },
        gender: plain(c.gender),
        old_id_number: plain(c.old_id_number),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestation_ids_are_v4_uuids() {
        let id = new_attestation_id().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, new_attestation_id().unwrap());
    }
}
