//! Attestations: compact JWS (RFC 7515) signed with Ed25519 (`alg` EdDSA,
//! RFC 8037), the keyring that signs them, the JWKS that verifies them, and
//! the pairwise subject token.
//!
//! Any standard JOSE library verifies a token against the JWKS that
//! `GetSigningKeys` publishes: the header names the key by its RFC 7638
//! thumbprint (`kid`), and the claims are plain JSON.

use std::fmt;
use std::path::{Path, PathBuf};

use base64ct::{Base64UrlUnpadded, Encoding};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::clock::UnixSeconds;
use crate::domain::PersonalIdNumber;

/// The JWS `typ` of every attestation.
pub const TOKEN_TYPE: &str = "vnid-attestation+jwt";

/// The JWS `typ` of a signed audit checkpoint: a different type, so that
/// neither can pass for the other.
pub const CHECKPOINT_TYPE: &str = "vnid-audit-checkpoint+jwt";

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

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is neither a PKCS#8 Ed25519 private key nor an SPKI public key (PEM)")]
    Parse { path: PathBuf },
    #[error("cannot gather randomness: {0}")]
    Random(getrandom::Error),
    #[error("cannot encode the key: {0}")]
    Encode(String),
    #[error("the JWKS is not valid: {0}")]
    Jwks(String),
}

/// Why a token does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("unsupported header (alg must be EdDSA, and typ the expected one)")]
    Header,
    #[error("no published key has kid {0:?}")]
    UnknownKey(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the claims are not valid JSON")]
    Claims,
    #[error("expired at {exp} (now {now})")]
    Expired { exp: UnixSeconds, now: UnixSeconds },
}

/// The RFC 7638 thumbprint of an Ed25519 public key: base64url of the
/// SHA-256 of `{"crv":"Ed25519","kty":"OKP","x":"…"}`.
pub fn thumbprint(key: &VerifyingKey) -> String {
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        b64(key.as_bytes())
    );
    b64(&Sha256::digest(jwk.as_bytes()))
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// Generates a fresh signing key as PKCS#8 PEM.
pub fn generate_key_pem() -> Result<Zeroizing<String>, KeyError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(KeyError::Random)?;
    let key = SigningKey::from_bytes(&seed);
    key.to_pkcs8_pem(Default::default())
        .map_err(|e| KeyError::Encode(e.to_string()))
}

fn read_key_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })
}

/// What is needed to attest: keys, issuer, lifetime.
#[derive(Debug)]
pub struct Attester {
    pub keyring: Keyring,
    pub subject_key: SubjectKey,
    pub issuer: String,
    pub ttl_seconds: i64,
}

/// The signing key and the keys still published for verification.
pub struct Keyring {
    signing: SigningKey,
    /// `base64url(header)` of attestations: the same for every one.
    header_b64: String,
    /// `base64url(header)` of audit checkpoints.
    checkpoint_header_b64: String,
    jwks_json: String,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kid", &self.signing_kid())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// `signing` signs; `published` (private or public PEM files) stay in the
    /// JWKS so that attestations they signed still verify.
    pub fn load(signing: &Path, published: &[PathBuf]) -> Result<Self, KeyError> {
        let pem = read_key_file(signing)?;
        let signing_key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Parse {
            path: signing.to_owned(),
        })?;
        let mut others = Vec::with_capacity(published.len());
        for path in published {
            let pem = read_key_file(path)?;
            let key = SigningKey::from_pkcs8_pem(&pem)
                .map(|k| k.verifying_key())
                .or_else(|_| VerifyingKey::from_public_key_pem(&pem))
                .map_err(|_| KeyError::Parse { path: path.clone() })?;
            others.push(key);
        }
        Ok(Self::new(signing_key, others))
    }

    /// A keyring of one PKCS#8 PEM signing key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|_| KeyError::Parse {
            path: PathBuf::from("<pem>"),
        })?;
        Ok(Self::new(key, Vec::new()))
    }

    pub fn new(signing: SigningKey, published: Vec<VerifyingKey>) -> Self {
        let kid = thumbprint(&signing.verifying_key());
        let header = |typ: &str| {
            b64(
                serde_json::json!({ "alg": "EdDSA", "typ": typ, "kid": kid })
                    .to_string()
                    .as_bytes(),
            )
        };
        let mut keys = vec![signing.verifying_key()];
        keys.extend(
            published
                .into_iter()
                .filter(|k| *k != signing.verifying_key()),
        );
        let jwks = serde_json::json!({ "keys": keys.iter().map(jwk).collect::<Vec<_>>() });
        Self {
            header_b64: header(TOKEN_TYPE),
            checkpoint_header_b64: header(CHECKPOINT_TYPE),
            jwks_json: jwks.to_string(),
            signing,
        }
    }

    pub fn signing_kid(&self) -> String {
        thumbprint(&self.signing.verifying_key())
    }

    /// The RFC 7517 JWKS of every published key, signing key first.
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    pub fn sign(&self, claims: &AttestationClaims) -> Result<String, serde_json::Error> {
        self.sign_with(&self.header_b64, claims)
    }

    /// Signs an audit checkpoint (`typ` [`CHECKPOINT_TYPE`]).
    pub fn sign_checkpoint(&self, claims: &impl Serialize) -> Result<String, serde_json::Error> {
        self.sign_with(&self.checkpoint_header_b64, claims)
    }

    fn sign_with(
        &self,
        header_b64: &str,
        claims: &impl Serialize,
    ) -> Result<String, serde_json::Error> {
        let payload = serde_json::to_vec(claims)?;
        let mut token = String::with_capacity(header_b64.len() + payload.len() * 4 / 3 + 90);
        token.push_str(header_b64);
        token.push('.');
        token.push_str(&b64(&payload));
        let signature = self.signing.sign(token.as_bytes());
        token.push('.');
        token.push_str(&b64(&signature.to_bytes()));
        Ok(token)
    }
}

fn jwk(key: &VerifyingKey) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64(key.as_bytes()),
        "kid": thumbprint(key),
        "alg": "EdDSA",
        "use": "sig",
    })
}

/// The claims of an attestation this service stored itself, unverified
/// (the audit trail's own check verifies signatures).
pub fn stored_claims(token: &str) -> Option<AttestationClaims> {
    let payload = token.split('.').nth(1)?;
    let bytes = Base64UrlUnpadded::decode_vec(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Verification keys read from a JWKS document.
#[derive(Debug, Clone)]
pub struct Jwks(Vec<(String, VerifyingKey)>);

impl Jwks {
    pub fn parse(json: &str) -> Result<Self, KeyError> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<Key>,
        }
        #[derive(Deserialize)]
        struct Key {
            kty: String,
            crv: Option<String>,
            x: Option<String>,
            kid: Option<String>,
        }
        let doc: Doc = serde_json::from_str(json).map_err(|e| KeyError::Jwks(e.to_string()))?;
        let mut keys = Vec::new();
        for key in doc.keys {
            let (Some(crv), Some(x)) = (key.crv, key.x) else {
                continue;
            };
            if key.kty != "OKP" || crv != "Ed25519" {
                continue;
            }
            let bytes = Base64UrlUnpadded::decode_vec(&x)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| KeyError::Jwks("an Ed25519 key's x is not 32 bytes".into()))?;
            let key_bytes = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| KeyError::Jwks("an Ed25519 key is not a curve point".into()))?;
            let kid = key.kid.unwrap_or_else(|| thumbprint(&key_bytes));
            keys.push((kid, key_bytes));
        }
        Ok(Self(keys))
    }

    /// Checks an attestation's signature with the key the header names, then
    /// its expiry.
    pub fn verify(&self, token: &str, now: UnixSeconds) -> Result<AttestationClaims, TokenError> {
        let claims: AttestationClaims = self.verify_signature(token, TOKEN_TYPE)?;
        if claims.exp <= now {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
            });
        }
        Ok(claims)
    }

    /// Checks a token of type `typ` with the key its header names, and
    /// returns its claims; expiry is the caller's business.
    pub fn verify_signature<T: DeserializeOwned>(
        &self,
        token: &str,
        typ: &str,
    ) -> Result<T, TokenError> {
        #[derive(Deserialize)]
        struct Header {
            alg: String,
            typ: Option<String>,
            kid: String,
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |s: &str| Base64UrlUnpadded::decode_vec(s).map_err(|_| TokenError::Malformed);
        let header: Header =
            serde_json::from_slice(&decode(header_b64)?).map_err(|_| TokenError::Malformed)?;
        if header.alg != "EdDSA" || header.typ.as_deref() != Some(typ) {
            return Err(TokenError::Header);
        }
        let key = self
            .0
            .iter()
            .find(|(kid, _)| *kid == header.kid)
            .map(|(_, key)| key)
            .ok_or(TokenError::UnknownKey(header.kid))?;
        let signature =
            Signature::from_slice(&decode(sig_b64)?).map_err(|_| TokenError::Malformed)?;
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        key.verify_strict(&token.as_bytes()[..signed_len], &signature)
            .map_err(|_| TokenError::BadSignature)?;
        serde_json::from_slice(&decode(payload_b64)?).map_err(|_| TokenError::Claims)
    }
}

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

    fn keyring() -> Keyring {
        Keyring::new(SigningKey::from_bytes(&[7; 32]), vec![])
    }

    fn claims(exp: UnixSeconds) -> AttestationClaims {
        AttestationClaims {
            iss: "vnid-test".into(),
            aud: "demo".into(),
            sub: "s".into(),
            iat: 1_000,
            exp,
            jti: "j".into(),
            nonce: "n".into(),
            purpose: "PURPOSE_HEALTHCARE".into(),
            verdict: "VERDICT_VERIFIED".into(),
            reason: None,
            checks: None,
            data_as_of: 900,
        }
    }

    #[test]
    fn rfc_8037_thumbprint_example() {
        // RFC 8037 appendix A.3.
        let x =
            Base64UrlUnpadded::decode_vec("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        let key = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        assert_eq!(
            thumbprint(&key),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn rfc_8037_signature_example() {
        // RFC 8037 appendix A.4: Ed25519 over "Example of Ed25519 signing".
        let d =
            Base64UrlUnpadded::decode_vec("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A").unwrap();
        let key = SigningKey::from_bytes(&d.try_into().unwrap());
        let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        assert_eq!(
            b64(&key.sign(input.as_bytes()).to_bytes()),
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
    }

    #[test]
    fn signed_tokens_verify_against_the_jwks() {
        let ring = keyring();
        let token = ring.sign(&claims(2_000)).unwrap();
        let jwks = Jwks::parse(ring.jwks_json()).unwrap();
        assert_eq!(jwks.verify(&token, 1_500), Ok(claims(2_000)));
        assert_eq!(
            jwks.verify(&token, 2_000),
            Err(TokenError::Expired {
                exp: 2_000,
                now: 2_000
            })
        );
    }

    #[test]
    fn any_changed_byte_fails() {
        let ring = keyring();
        let token = ring.sign(&claims(2_000)).unwrap();
        let jwks = Jwks::parse(ring.jwks_json()).unwrap();
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(jwks.verify(&tampered, 1_500).is_err(), "byte {i}");
        }
    }

    #[test]
    fn unknown_kid_is_rejected_and_old_keys_stay_published() {
        let old = SigningKey::from_bytes(&[9; 32]);
        let old_token = Keyring::new(old.clone(), vec![])
            .sign(&claims(2_000))
            .unwrap();
        let current = keyring();
        let jwks = Jwks::parse(current.jwks_json()).unwrap();
        assert!(matches!(
            jwks.verify(&old_token, 1_500),
            Err(TokenError::UnknownKey(_))
        ));
        let rotated = Keyring::new(SigningKey::from_bytes(&[7; 32]), vec![old.verifying_key()]);
        let jwks = Jwks::parse(rotated.jwks_json()).unwrap();
        assert!(jwks.verify(&old_token, 1_500).is_ok());
        assert_eq!(rotated.signing_kid(), current.signing_kid());
    }

    #[test]
    fn pem_round_trip() {
        let pem = generate_key_pem().unwrap();
        let dir = std::env::temp_dir().join(format!("vnid-attest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.pem");
        std::fs::write(&path, pem.as_bytes()).unwrap();
        let ring = Keyring::load(&path, std::slice::from_ref(&path)).unwrap();
        let doc: serde_json::Value = serde_json::from_str(ring.jwks_json()).unwrap();
        assert_eq!(doc["keys"].as_array().unwrap().len(), 1);
        assert_eq!(doc["keys"][0]["kid"], ring.signing_kid());
        std::fs::remove_dir_all(dir).unwrap();
    }

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

    #[test]
    fn checkpoints_and_attestations_cannot_pass_for_each_other() {
        let ring = keyring();
        let jwks = Jwks::parse(ring.jwks_json()).unwrap();
        let checkpoint = ring.sign_checkpoint(&claims(2_000)).unwrap();
        assert_eq!(jwks.verify(&checkpoint, 1_500), Err(TokenError::Header));
        let back: AttestationClaims = jwks.verify_signature(&checkpoint, CHECKPOINT_TYPE).unwrap();
        assert_eq!(back, claims(2_000));
        let attestation = ring.sign(&claims(2_000)).unwrap();
        assert_eq!(
            jwks.verify_signature::<AttestationClaims>(&attestation, CHECKPOINT_TYPE),
            Err(TokenError::Header)
        );
    }
}
