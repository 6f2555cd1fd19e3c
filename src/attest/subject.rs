//! The keyed digests of a person and a request: the pairwise subject
//! token (`sub`: one per agency and person), the subject index (one per
//! person, for the audit trail), and the request digest (what makes two
//! checks the same check).

use std::fmt;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{KeyError, b64};
use crate::domain::PersonalIdNumber;

/// The key of the pairwise subject token. Secret: whoever holds it can test
/// a guessed ID number against a token. The keyed HMAC state is built once
/// and cloned per use; it is zeroized on drop.
#[derive(Clone)]
pub struct SubjectKey(Hmac<Sha256>);

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey([redacted])")
    }
}

/// The shortest subject key accepted, in bytes.
pub const MIN_SUBJECT_KEY_BYTES: usize = 32;

impl SubjectKey {
    pub fn new(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() < MIN_SUBJECT_KEY_BYTES {
            return Err(KeyError::Encode(format!(
                "the subject key must hold at least {MIN_SUBJECT_KEY_BYTES} bytes"
            )));
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(bytes)
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        Ok(Self(mac))
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path)
            .map(Zeroizing::new)
            .map_err(|source| KeyError::Read {
                path: path.to_owned(),
                source,
            })?;
        Self::new(&bytes)
    }

    /// Fresh random key material, for a key file.
    pub fn generate_bytes() -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let mut bytes = Zeroizing::new(vec![0u8; MIN_SUBJECT_KEY_BYTES]);
        getrandom::fill(&mut bytes).map_err(KeyError::Random)?;
        Ok(bytes)
    }

    /// `base64url(HMAC-SHA256(key, "vnid-sub-v1" 0 agency 0 id))`: stable
    /// for one agency and person, unlinkable across agencies, and not
    /// reversible to the number without the key.
    pub fn pairwise_subject(&self, agency: &str, id: &PersonalIdNumber) -> String {
        let mut mac = self.0.clone();
        mac.update(b"vnid-sub-v1\0");
        mac.update(agency.as_bytes());
        mac.update(b"\0");
        mac.update(id.expose().as_bytes());
        b64(&mac.finalize().into_bytes())
    }

    /// `base64url(HMAC-SHA256(key, "vnid-req-v1" 0 agency 0 request))`:
    /// what an agency asked, comparable between a request and its retry
    /// without keeping what was asked (the request holds a person's data).
    pub fn request_digest(&self, agency: &str, request: &str) -> String {
        let mut mac = self.0.clone();
        mac.update(b"vnid-req-v1\0");
        mac.update(agency.as_bytes());
        mac.update(b"\0");
        mac.update(request.as_bytes());
        b64(&mac.finalize().into_bytes())
    }

    /// `base64url(HMAC-SHA256(key, "vnid-audit-index-v1" 0 id))`: the one
    /// token under which the audit trail files every check of a person,
    /// whichever agency asked, so that the person's access history can be
    /// listed without the trail holding the number.
    pub fn subject_index(&self, id: &PersonalIdNumber) -> String {
        let mut mac = self.0.clone();
        mac.update(b"vnid-audit-index-v1\0");
        mac.update(id.expose().as_bytes());
        b64(&mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_subjects_differ_by_agency_and_hide_the_number() {
        let key = SubjectKey::new(&[1; 32]).unwrap();
        let id = PersonalIdNumber::parse("082090012345").unwrap();
        let a = key.pairwise_subject("hospital-a", &id);
        assert_eq!(a, key.pairwise_subject("hospital-a", &id));
        assert_ne!(a, key.pairwise_subject("hospital-b", &id));
        assert!(!a.contains("082090012345") && a.len() == 43);
        assert!(SubjectKey::new(&[1; 31]).is_err());
        assert_eq!(format!("{key:?}"), "SubjectKey([redacted])");
    }

    #[test]
    fn the_subject_index_is_one_per_person_and_no_pairwise_subject() {
        let key = SubjectKey::new(&[1; 32]).unwrap();
        let id = PersonalIdNumber::parse("082090012345").unwrap();
        let other = PersonalIdNumber::parse("082090012346").unwrap();
        let index = key.subject_index(&id);
        assert_eq!(index, key.subject_index(&id));
        assert_ne!(index, key.subject_index(&other));
        assert_ne!(index, key.pairwise_subject("", &id));
        assert_ne!(
            index,
            SubjectKey::new(&[2; 32]).unwrap().subject_index(&id),
            "keyed"
        );
    }
}
