//! A JWKS read back: it verifies attestations and checkpoints as any
//! JOSE library would (EdDSA, the expected `typ`, a published `kid`).

use base64ct::{Base64UrlUnpadded, Encoding};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::keys::thumbprint;
use super::{AttestationClaims, KeyError, TOKEN_TYPE, TokenError};
use crate::clock::UnixSeconds;

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

    /// The kid of every key, in the document's order.
    pub fn kids(&self) -> Vec<String> {
        self.0.iter().map(|(kid, _)| kid.clone()).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::{CHECKPOINT_TYPE, Keyring, b64};
    use ed25519_dalek::{Signer, SigningKey};

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
            purpose: crate::domain::Purpose::Healthcare,
            verdict: crate::domain::VerdictKind::Verified,
            reason: None,
            checks: None,
            data_as_of: 900,
        }
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
