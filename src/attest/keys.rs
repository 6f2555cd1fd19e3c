//! The keyring: the key that signs, and the older keys still published
//! (as a JWKS, each named by its RFC 7638 thumbprint) so that what they
//! signed still verifies.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::es256::{Es256Public, Es256Signing};
use super::{AttestationClaims, CHECKPOINT_TYPE, KeyError, TOKEN_TYPE, b64};

/// The RFC 7638 thumbprint of an Ed25519 public key: base64url of the
/// SHA-256 of `{"crv":"Ed25519","kty":"OKP","x":"…"}`.
pub fn thumbprint(key: &VerifyingKey) -> String {
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        b64(key.as_bytes())
    );
    b64(&Sha256::digest(jwk.as_bytes()))
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

/// The signature algorithm of an agency's attestations (its registry
/// entry's `attestation_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum Alg {
    /// Ed25519 (RFC 8037), the default.
    #[default]
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// ECDSA P-256 with SHA-256 (RFC 7518), for JOSE libraries without
    /// EdDSA.
    #[serde(rename = "ES256")]
    Es256,
}

impl Alg {
    /// The JWS `alg`.
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
        }
    }
}

/// Why an attestation could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("no {} signing key is configured", .0.name())]
    NoKey(Alg),
    #[error("the ES256 signature could not be made")]
    Es256,
}

/// The signing keys (Ed25519 always, P-256 where configured) and the keys
/// still published for verification.
pub struct Keyring {
    signing: SigningKey,
    es256: Option<Es256Signing>,
    /// Older keys, still published.
    published: Vec<VerifyingKey>,
    published_es256: Vec<Es256Public>,
    /// `base64url(header)` of attestations: the same for every one of an
    /// algorithm.
    header_b64: String,
    es256_header_b64: String,
    /// `base64url(header)` of audit checkpoints.
    checkpoint_header_b64: String,
    jwks_json: String,
    /// The kid of every published key, signing keys first.
    kids: Vec<String>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kid", &self.signing_kid())
            .field("es256_kid", &self.es256_kid())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// `signing` (Ed25519) signs; `published` (private or public PEM
    /// files, Ed25519 or P-256) stay in the JWKS so that attestations they
    /// signed still verify.
    pub fn load(signing: &Path, published: &[PathBuf]) -> Result<Self, KeyError> {
        let pem = read_key_file(signing)?;
        let signing_key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Parse {
            path: signing.to_owned(),
        })?;
        let mut ed25519 = Vec::with_capacity(published.len());
        let mut p256 = Vec::new();
        for path in published {
            let pem = read_key_file(path)?;
            if let Some(key) = SigningKey::from_pkcs8_pem(&pem)
                .map(|k| k.verifying_key())
                .ok()
                .or_else(|| VerifyingKey::from_public_key_pem(&pem).ok())
            {
                ed25519.push(key);
            } else if let Some(key) = Es256Signing::from_pkcs8_pem(&pem)
                .map(|k| k.public().clone())
                .or_else(|| Es256Public::from_spki_pem(&pem))
            {
                p256.push(key);
            } else {
                return Err(KeyError::Parse { path: path.clone() });
            }
        }
        Ok(Self::assemble(signing_key, None, ed25519, p256))
    }

    /// A keyring of one PKCS#8 PEM signing key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|_| KeyError::Parse {
            path: PathBuf::from("<pem>"),
        })?;
        Ok(Self::new(key, Vec::new()))
    }

    pub fn new(signing: SigningKey, published: Vec<VerifyingKey>) -> Self {
        Self::assemble(signing, None, published, Vec::new())
    }

    /// This keyring, also signing ES256 with the P-256 key in `path`
    /// (PKCS#8 PEM).
    pub fn with_es256_file(self, path: &Path) -> Result<Self, KeyError> {
        let pem = read_key_file(path)?;
        let key = Es256Signing::from_pkcs8_pem(&pem).ok_or_else(|| KeyError::ParseEs256 {
            path: path.to_owned(),
        })?;
        Ok(Self::assemble(
            self.signing,
            Some(key),
            self.published,
            self.published_es256,
        ))
    }

    fn assemble(
        signing: SigningKey,
        es256: Option<Es256Signing>,
        published: Vec<VerifyingKey>,
        published_es256: Vec<Es256Public>,
    ) -> Self {
        let header = |alg: Alg, kid: &str, typ: &str| {
            b64(
                serde_json::json!({ "alg": alg.name(), "typ": typ, "kid": kid })
                    .to_string()
                    .as_bytes(),
            )
        };
        let kid = thumbprint(&signing.verifying_key());
        let es256_kid = es256.as_ref().map(|k| k.public().kid()).unwrap_or_default();
        let mut ed25519 = vec![signing.verifying_key()];
        ed25519.extend(published.iter().filter(|k| **k != signing.verifying_key()));
        let mut p256: Vec<&Es256Public> = es256.iter().map(Es256Signing::public).collect();
        p256.extend(
            published_es256
                .iter()
                .filter(|k| es256.as_ref().is_none_or(|s| s.public() != *k)),
        );
        // Signing keys first: Ed25519, then P-256, then the older ones.
        let (signing_keys, older_ed25519) = ed25519.split_at(1);
        let (signing_p256, older_p256) = p256.split_at(usize::from(es256.is_some()));
        let jwks: Vec<serde_json::Value> = (signing_keys.iter().map(jwk))
            .chain(signing_p256.iter().map(|k| k.jwk()))
            .chain(older_ed25519.iter().map(jwk))
            .chain(older_p256.iter().map(|k| k.jwk()))
            .collect();
        let kids = jwks
            .iter()
            .filter_map(|k| k["kid"].as_str().map(str::to_owned))
            .collect();
        Self {
            header_b64: header(Alg::EdDsa, &kid, TOKEN_TYPE),
            es256_header_b64: header(Alg::Es256, &es256_kid, TOKEN_TYPE),
            checkpoint_header_b64: header(Alg::EdDsa, &kid, CHECKPOINT_TYPE),
            jwks_json: serde_json::json!({ "keys": jwks }).to_string(),
            kids,
            signing,
            es256,
            published,
            published_es256,
        }
    }

    /// The Ed25519 signing key's kid.
    pub fn signing_kid(&self) -> String {
        thumbprint(&self.signing.verifying_key())
    }

    /// The P-256 signing key's kid, if there is one.
    pub fn es256_kid(&self) -> Option<String> {
        self.es256.as_ref().map(|k| k.public().kid())
    }

    /// Whether the keyring can sign with `alg`.
    pub fn signs(&self, alg: Alg) -> bool {
        match alg {
            Alg::EdDsa => true,
            Alg::Es256 => self.es256.is_some(),
        }
    }

    /// Whether the JWKS holds the key `kid`.
    pub fn publishes(&self, kid: &str) -> bool {
        self.kids.iter().any(|k| k == kid)
    }

    /// The RFC 7517 JWKS of every published key, signing keys first.
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    /// Signs an attestation with Ed25519.
    pub fn sign(&self, claims: &AttestationClaims) -> Result<String, serde_json::Error> {
        self.sign_with(&self.header_b64, claims)
    }

    /// Signs an attestation with `alg`.
    pub fn sign_as(&self, alg: Alg, claims: &AttestationClaims) -> Result<String, SignError> {
        match alg {
            Alg::EdDsa => Ok(self.sign(claims)?),
            Alg::Es256 => {
                let key = self.es256.as_ref().ok_or(SignError::NoKey(alg))?;
                let mut token = signing_input(&self.es256_header_b64, claims)?;
                let signature = key.sign(token.as_bytes()).ok_or(SignError::Es256)?;
                token.push('.');
                token.push_str(&b64(&signature));
                Ok(token)
            }
        }
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
        let mut token = signing_input(header_b64, claims)?;
        let signature = self.signing.sign(token.as_bytes());
        token.push('.');
        token.push_str(&b64(&signature.to_bytes()));
        Ok(token)
    }
}

/// `header.payload`, with room for the signature.
fn signing_input(header_b64: &str, claims: &impl Serialize) -> Result<String, serde_json::Error> {
    let payload = serde_json::to_vec(claims)?;
    let mut token = String::with_capacity(header_b64.len() + payload.len() * 4 / 3 + 90);
    token.push_str(header_b64);
    token.push('.');
    token.push_str(&b64(&payload));
    Ok(token)
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64ct::{Base64UrlUnpadded, Encoding};

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
}
