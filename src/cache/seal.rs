//! What the cache may hold: keys that are keyed hashes of ID numbers, and
//! values encrypted (ChaCha20-Poly1305) and bound to their key, so Redis
//! never holds a readable ID number, name or date, and a value copied to
//! another key fails to open.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, KeyInit, Mac};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::clock::UnixSeconds;
use crate::domain::{
    CitizenRecord, CitizenStatus, Gender, OldIdNumber, PartialDate, PersonName, PersonalIdNumber,
};
use crate::mirror::Found;

/// The prefix of every key: the key scheme's version. Keys look like
/// `vnid:v1:<generation>:<22 characters of base64url>`.
pub const KEY_PREFIX: &str = "vnid:v1";
/// The first byte of every value: the value format's version.
const VALUE_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
/// Plaintexts are padded to a multiple of this; a record holds about 150
/// bytes.
const PAD_BLOCK: usize = 256;

/// The cache's secrets, derived from one key file: an index key for the
/// key names and an encryption key for the values.
pub struct Sealer {
    index: Hmac<Sha256>,
    aead: LessSafeKey,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the cache key must hold at least 32 bytes")]
    ShortKey,
    #[error("cannot gather randomness")]
    Random,
    #[error("a cached value does not open under its key")]
    Open,
    #[error("a cached value cannot be encoded")]
    Encode,
}

fn derive(secret: &[u8], label: &[u8]) -> Result<[u8; 32], SealError> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| SealError::ShortKey)?;
    mac.update(label);
    Ok(mac.finalize().into_bytes().into())
}

impl Sealer {
    pub fn new(secret: &[u8]) -> Result<Self, SealError> {
        if secret.len() < 32 {
            return Err(SealError::ShortKey);
        }
        let index = derive(secret, b"vnid-cache-index-v1")?;
        let aead = derive(secret, b"vnid-cache-aead-v1")?;
        Ok(Self {
            index: <Hmac<Sha256> as KeyInit>::new_from_slice(&index)
                .map_err(|_| SealError::ShortKey)?,
            aead: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, &aead).map_err(|_| SealError::ShortKey)?,
            ),
        })
    }

    /// The keyed hash that names an ID number in the cache.
    pub fn id_hash(&self, id: &PersonalIdNumber) -> String {
        let mut mac = self.index.clone();
        mac.update(id.expose().as_bytes());
        Base64UrlUnpadded::encode_string(&mac.finalize().into_bytes()[..16])
    }

    /// The key that marks an agency's `request_id` as used:
    /// `vnid:r:v1:<16-byte keyed hash, base64url>`.
    pub fn request_key(&self, agency: &str, request_id: &str) -> String {
        let mut mac = self.index.clone();
        // A leading NUL: no ID number (12 digits) hashes the same way.
        mac.update(b"\0request\0");
        mac.update(agency.as_bytes());
        mac.update(b"\0");
        mac.update(request_id.as_bytes());
        let hash = Base64UrlUnpadded::encode_string(&mac.finalize().into_bytes()[..16]);
        format!("vnid:r:v1:{hash}")
    }

    /// The cache key of an ID number (by its [`Sealer::id_hash`]) in a
    /// mirror generation.
    pub fn key_of(generation: i64, id_hash: &str) -> String {
        format!("{KEY_PREFIX}:{generation}:{id_hash}")
    }

    /// The cache key of an ID number in a mirror generation.
    pub fn key(&self, generation: i64, id: &PersonalIdNumber) -> String {
        Self::key_of(generation, &self.id_hash(id))
    }

    /// Encrypts `lookup`, bound to `key`.
    pub fn seal(&self, key: &str, lookup: &Found) -> Result<Vec<u8>, SealError> {
        let mut body = serde_json::to_vec(&Cached::from(lookup)).map_err(|_| SealError::Encode)?;
        // Padded with spaces (which JSON ignores) to a whole block: a value's
        // length does not say whether the number has a record, and sealing
        // either costs the same.
        body.resize(body.len().div_ceil(PAD_BLOCK).max(1) * PAD_BLOCK, b' ');
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError::Random)?;
        self.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut body,
            )
            .map_err(|_| SealError::Encode)?;
        let mut value = Vec::with_capacity(1 + NONCE_LEN + body.len());
        value.push(VALUE_VERSION);
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&body);
        Ok(value)
    }

    /// Decrypts a value read under `key`. Anything that does not open —
    /// tampered, moved from another key, another format — is an error,
    /// never a record.
    pub fn open(&self, key: &str, id: &PersonalIdNumber, value: &[u8]) -> Result<Found, SealError> {
        let [version, rest @ ..] = value else {
            return Err(SealError::Open);
        };
        if *version != VALUE_VERSION || rest.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut sealed = sealed.to_vec();
        let body = self
            .aead
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut sealed)
            .map_err(|_| SealError::Open)?;
        let cached: Cached = serde_json::from_slice(body).map_err(|_| SealError::Open)?;
        cached.into_lookup(id).ok_or(SealError::Open)
    }
}

/// The plaintext inside a sealed value.
#[derive(Serialize, Deserialize)]
struct Cached {
    r: Option<CachedRecord>,
    a: Option<UnixSeconds>,
    g: i64,
}

#[derive(Serialize, Deserialize)]
struct CachedRecord {
    name: String,
    dob: String,
    gender: String,
    old: Vec<String>,
    status: String,
    version: i64,
}

impl From<&Found> for Cached {
    fn from(l: &Found) -> Self {
        Self {
            r: l.record.as_ref().map(|r| CachedRecord {
                name: r.full_name.canonical().to_owned(),
                dob: r.date_of_birth.to_iso(),
                gender: r.gender.as_str().to_owned(),
                old: r
                    .old_id_numbers
                    .iter()
                    .map(|o| o.expose().to_owned())
                    .collect(),
                status: r.status.as_str().to_owned(),
                version: r.record_version,
            }),
            a: l.data_as_of,
            g: l.generation,
        }
    }
}

impl Cached {
    fn into_lookup(self, id: &PersonalIdNumber) -> Option<Found> {
        let record = match self.r {
            None => None,
            Some(r) => Some(CitizenRecord {
                id_number: id.clone(),
                full_name: PersonName::parse(&r.name).ok()?,
                date_of_birth: PartialDate::parse_iso(&r.dob).ok()?,
                gender: Gender::parse(&r.gender)?,
                old_id_numbers: r
                    .old
                    .iter()
                    .map(|o| OldIdNumber::parse(o).ok())
                    .collect::<Option<_>>()?,
                status: CitizenStatus::parse(&r.status)?,
                record_version: r.version,
            }),
        };
        Some(Found {
            record,
            data_as_of: self.a,
            generation: self.g,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup() -> Found {
        Found {
            record: Some(CitizenRecord {
                id_number: PersonalIdNumber::parse("082090012345").unwrap(),
                full_name: PersonName::parse("Nguyễn Văn Đàm").unwrap(),
                date_of_birth: PartialDate::parse_iso("1990-05").unwrap(),
                gender: Gender::Male,
                old_id_numbers: vec![OldIdNumber::parse("312345678").unwrap()],
                status: CitizenStatus::Deceased,
                record_version: 3,
            }),
            data_as_of: Some(1_000),
            generation: 7,
        }
    }

    #[test]
    fn sealed_values_open_only_under_their_key() {
        let sealer = Sealer::new(&[5; 32]).unwrap();
        let id = PersonalIdNumber::parse("082090012345").unwrap();
        let other = PersonalIdNumber::parse("082090012346").unwrap();
        let key = sealer.key(7, &id);
        assert!(key.starts_with("vnid:v1:7:") && key.len() == "vnid:v1:7:".len() + 22);
        assert!(!key.contains("082090012345"));
        let value = sealer.seal(&key, &lookup()).unwrap();
        assert_eq!(sealer.open(&key, &id, &value).unwrap(), lookup());
        // Moved to another key, or to another generation: refused.
        assert!(sealer.open(&sealer.key(7, &other), &other, &value).is_err());
        assert!(sealer.open(&sealer.key(8, &id), &id, &value).is_err());
        // Any changed byte: refused.
        for i in 0..value.len() {
            let mut bad = value.clone();
            bad[i] ^= 1;
            assert!(sealer.open(&key, &id, &bad).is_err(), "byte {i}");
        }
        // No plaintext inside.
        let text = String::from_utf8_lossy(&value);
        for secret in [
            "082090012345",
            "Nguy",
            "nguy",
            "1990",
            "312345678",
            "deceased",
        ] {
            assert!(!text.contains(secret));
        }
        // Another secret: another key name, and nothing opens.
        let stranger = Sealer::new(&[6; 32]).unwrap();
        assert_ne!(stranger.key(7, &id), key);
        assert!(stranger.open(&key, &id, &value).is_err());
        assert!(Sealer::new(&[1; 31]).is_err());
    }

    #[test]
    fn negative_answers_seal_too() {
        let sealer = Sealer::new(&[5; 32]).unwrap();
        let id = PersonalIdNumber::parse("082090012345").unwrap();
        let key = sealer.key(1, &id);
        let none = Found {
            record: None,
            data_as_of: None,
            generation: 1,
        };
        let sealed = sealer.seal(&key, &none).unwrap();
        assert_eq!(sealer.open(&key, &id, &sealed).unwrap(), none);
        assert_eq!(
            sealed.len(),
            sealer.seal(&key, &lookup()).unwrap().len(),
            "a value's length does not tell a record from none"
        );
    }
}
