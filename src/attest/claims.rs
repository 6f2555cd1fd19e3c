//! What an attestation says, and its id.

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::{Deserialize, Serialize};

use crate::clock::UnixSeconds;
use crate::domain::{
    DateCheck, DatePrecision, FieldChecks, FieldOutcome, NameCheck, NameMatchLevel, Purpose,
    Reason, VerdictKind, by_name,
};

/// The signed claims. Enumerated values are typed here and written by
/// their one spelling, the proto enum names (`VERDICT_VERIFIED`,
/// `REASON_NOT_FOUND`, …), as protobuf's JSON mapping does, so an
/// attestation reads like the response it came with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationClaims {
    pub iss: String,
    /// The agency that asked.
    pub aud: String,
    /// The pairwise subject token of (agency, ID number).
    pub sub: String,
    pub iat: UnixSeconds,
    pub exp: UnixSeconds,
    /// The attestation id.
    pub jti: String,
    /// The caller's `request_id`.
    pub nonce: String,
    #[serde(with = "by_name")]
    pub purpose: Purpose,
    #[serde(with = "by_name")]
    pub verdict: VerdictKind,
    /// The reason the agency may see (absent: verified, or withheld).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "by_name::option"
    )]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<ChecksClaim>,
    /// When the mirror was last updated.
    pub data_as_of: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksClaim {
    pub full_name: FieldClaim,
    pub date_of_birth: FieldClaim,
    pub gender: FieldClaim,
    pub old_id_number: FieldClaim,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldClaim {
    #[serde(with = "by_name")]
    pub outcome: FieldOutcome,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "by_name::option"
    )]
    pub level: Option<NameMatchLevel>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "by_name::option"
    )]
    pub record_precision: Option<DatePrecision>,
}

impl From<&FieldChecks> for ChecksClaim {
    fn from(c: &FieldChecks) -> Self {
        let plain = |outcome| FieldClaim {
            outcome,
            level: None,
            record_precision: None,
        };
        Self {
            full_name: FieldClaim {
                level: c.full_name.level,
                ..plain(c.full_name.outcome)
            },
            date_of_birth: FieldClaim {
                record_precision: Some(c.date_of_birth.record_precision),
                ..plain(c.date_of_birth.outcome)
            },
            gender: plain(c.gender),
            old_id_number: plain(c.old_id_number),
        }
    }
}

impl ChecksClaim {
    /// The field checks these claims state (`None` if the birth date's
    /// precision is missing, which no attestation of this service lacks).
    pub fn field_checks(&self) -> Option<FieldChecks> {
        Some(FieldChecks {
            full_name: NameCheck {
                outcome: self.full_name.outcome,
                level: self.full_name.level,
            },
            date_of_birth: DateCheck {
                outcome: self.date_of_birth.outcome,
                record_precision: self.date_of_birth.record_precision?,
            },
            gender: self.gender.outcome,
            old_id_number: self.old_id_number.outcome,
        })
    }
}

/// The claims of an attestation this service stored itself, unverified
/// (the audit trail's own check verifies signatures).
pub fn stored_claims(token: &str) -> Option<AttestationClaims> {
    let payload = token.split('.').nth(1)?;
    let bytes = Base64UrlUnpadded::decode_vec(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A new attestation id (`jti`): a random (version 4) UUID.
pub fn new_attestation_id() -> Result<String, getrandom::Error> {
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
