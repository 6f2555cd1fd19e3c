//! Attestations: compact JWS (RFC 7515) signed with Ed25519 (`alg` EdDSA,
//! RFC 8037).
//!
//! - `claims`: what an attestation says, and its id.
//! - `keys`: the keyring that signs (and the JWKS it publishes).
//! - `jws`: a JWKS read back, that verifies tokens.
//! - `subject`: the keyed pairwise subject token, request digest and
//!   subject index.
//!
//! Any standard JOSE library verifies a token against the JWKS that
//! `GetSigningKeys` publishes: the header names the key by its RFC 7638
//! thumbprint (`kid`), and the claims are plain JSON.

mod claims;
mod es256;
mod jws;
mod keys;
mod subject;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use base64ct::{Base64UrlUnpadded, Encoding};

use crate::clock::UnixSeconds;

pub use claims::{AttestationClaims, ChecksClaim, FieldClaim, new_attestation_id, stored_claims};
pub use es256::{Es256Public, Es256Signing, generate_es256_pem};
pub use jws::Jwks;
pub use keys::{Alg, Keyring, SignError, generate_key_pem, thumbprint};
pub use subject::{MIN_SUBJECT_KEY_BYTES, SubjectKey};

/// The JWS `typ` of every attestation.
pub const TOKEN_TYPE: &str = "vnid-attestation+jwt";

/// The JWS `typ` of a signed audit checkpoint: a different type, so that
/// neither can pass for the other.
pub const CHECKPOINT_TYPE: &str = "vnid-audit-checkpoint+jwt";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is neither a PKCS#8 private key nor an SPKI public key (PEM) of Ed25519 or P-256"
    )]
    Parse { path: PathBuf },
    #[error("{path} is not a PKCS#8 P-256 private key (PEM) for ES256")]
    ParseEs256 { path: PathBuf },
    #[error("cannot gather randomness: {0}")]
    Random(getrandom::Error),
    #[error("cannot encode the key: {0}")]
    Encode(String),
    #[error("cannot generate a P-256 key")]
    GenerateEs256,
    #[error("the JWKS is not valid: {0}")]
    Jwks(String),
}

/// Why a token does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("unsupported header (alg must be EdDSA or ES256, and typ the expected one)")]
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

/// What is needed to attest: keys, issuer, lifetime.
#[derive(Debug)]
pub struct Attester {
    /// The signing key and the published ones: replaced whole when the
    /// keys are reloaded (SIGHUP); a check signs with the keyring it read.
    keyring: ArcSwap<Keyring>,
    /// Never reloaded: every pairwise subject and subject index depends
    /// on it.
    pub subject_key: SubjectKey,
    pub issuer: String,
    pub ttl_seconds: i64,
}

impl Attester {
    pub fn new(keyring: Keyring, subject_key: SubjectKey, issuer: &str, ttl_seconds: i64) -> Self {
        Self {
            keyring: ArcSwap::from_pointee(keyring),
            subject_key,
            issuer: issuer.to_owned(),
            ttl_seconds,
        }
    }

    /// The keyring now.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring.load_full()
    }

    /// Signs with the signing key now.
    pub fn sign(&self, claims: &AttestationClaims) -> Result<String, serde_json::Error> {
        self.keyring.load().sign(claims)
    }

    /// Signs with the signing key of `alg` now.
    pub fn sign_as(&self, alg: Alg, claims: &AttestationClaims) -> Result<String, SignError> {
        self.keyring.load().sign_as(alg, claims)
    }

    /// Takes `keyring` for every check from now on.
    pub fn replace_keyring(&self, keyring: Keyring) {
        self.keyring.store(Arc::new(keyring));
    }
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}
