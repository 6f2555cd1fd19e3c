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

/// The signing key and the keys still published for verification.
pub struct Keyring {
    signing: SigningKey,
    /// `base64url(header)` of attestations: the same for every one.
    header_b64: String,
    /// `base64url(header)` of audit checkpoints.
    checkpoint_header_b64: String,
    jwks_json: String,
    /// The kid of every published key, signing key first.
    kids: Vec<String>,
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
            kids: keys.iter().map(thumbprint).collect(),
            signing,
        }
    }

    pub fn signing_kid(&self) -> String {
        thumbprint(&self.signing.verifying_key())
    }

    /// Whether the JWKS holds the key `kid`.
    pub fn publishes(&self, kid: &str) -> bool {
        self.kids.iter().any(|k| k == kid)
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
