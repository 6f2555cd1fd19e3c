//! What an attestation says, and its id.

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::{Deserialize, Serialize};

use crate::clock::UnixSeconds;

/// The signed claims. Enumerated values use the proto enum names
/// (`VERDICT_VERIFIED`, `REASON_NOT_FOUND`, …), as protobuf's JSON mapping
/// does, so an attestation reads like the response it came with.
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
    pub purpose: String,
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_precision: Option<String>,
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
