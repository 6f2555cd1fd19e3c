//! A JWKS read back: it verifies attestations and checkpoints as any
//! JOSE library would (EdDSA or ES256 as the key's type says, the expected
//! `typ`, a published `kid`).

use base64ct::{Base64UrlUnpadded, Encoding};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::es256::Es256Public;
use super::keys::thumbprint;
use super::{AttestationClaims, KeyError, TOKEN_TYPE, TokenError};
use crate::clock::UnixSeconds;

/// Verification keys read from a JWKS document.
#[derive(Debug, Clone)]
pub struct Jwks(Vec<(String, PublicKey)>);

/// A published key of either algorithm.
#[derive(Debug, Clone)]
enum PublicKey {
    Ed25519(VerifyingKey),
    P256(Es256Public),
}

impl Jwks {
    /// Reads the Ed25519 (`OKP`) and P-256 (`EC`) keys of a JWKS; keys of
    /// other types are skipped.
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
            y: Option<String>,
            kid: Option<String>,
        }
        let doc: Doc = serde_json::from_str(json).map_err(|e| KeyError::Jwks(e.to_string()))?;
        let decode = |c: &str| {
            Base64UrlUnpadded::decode_vec(c)
                .map_err(|_| KeyError::Jwks("a key's coordinate is not base64url".into()))
        };
        let mut keys = Vec::new();
        for key in doc.keys {
            let (Some(crv), Some(x)) = (key.crv, key.x) else {
                continue;
            };
            let (kid, public) = match (key.kty.as_str(), crv.as_str()) {
                ("OKP", "Ed25519") => {
                    let bytes = <[u8; 32]>::try_from(decode(&x)?)
                        .map_err(|_| KeyError::Jwks("an Ed25519 key's x is not 32 bytes".into()))?;
                    let public = VerifyingKey::from_bytes(&bytes).map_err(|_| {
                        KeyError::Jwks("an Ed25519 key is not a curve point".into())
                    })?;
                    (thumbprint(&public), PublicKey::Ed25519(public))
                }
                ("EC", "P-256") => {
                    let y = key
                        .y
                        .ok_or_else(|| KeyError::Jwks("a P-256 key has no y".into()))?;
                    let public = Es256Public::from_coordinates(&decode(&x)?, &decode(&y)?)
                        .ok_or_else(|| {
                            KeyError::Jwks("a P-256 key's x or y is not 32 bytes".into())
                        })?;
                    (public.kid(), PublicKey::P256(public))
                }
                _ => continue,
            };
            keys.push((key.kid.unwrap_or(kid), public));
        }
        Ok(Self(keys))
    }

    /// The kid and JWS `alg` of every key, in the document's order.
    pub fn algs(&self) -> Vec<(String, &'static str)> {
        (self.0.iter())
            .map(|(kid, key)| {
                let alg = match key {
                    PublicKey::Ed25519(_) => "EdDSA",
                    PublicKey::P256(_) => "ES256",
                };
                (kid.clone(), alg)
            })
            .collect()
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
        if !matches!(header.alg.as_str(), "EdDSA" | "ES256") || header.typ.as_deref() != Some(typ) {
            return Err(TokenError::Header);
        }
        let key = self
            .0
            .iter()
            .find(|(kid, _)| *kid == header.kid)
            .map(|(_, key)| key)
            .ok_or(TokenError::UnknownKey(header.kid))?;
        let signature = decode(sig_b64)?;
        let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        // The key decides the algorithm; a header naming another is refused.
        match (key, header.alg.as_str()) {
            (PublicKey::Ed25519(key), "EdDSA") => {
                let signature =
                    Signature::from_slice(&signature).map_err(|_| TokenError::Malformed)?;
                key.verify_strict(signed, &signature)
                    .map_err(|_| TokenError::BadSignature)?;
            }
            (PublicKey::P256(key), "ES256") => {
                if !key.verify(signed, &signature) {
                    return Err(TokenError::BadSignature);
                }
            }
            _ => return Err(TokenError::Header),
        }
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

    fn es256_keyring() -> (Keyring, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "vnid-es256-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p256.pem");
        std::fs::write(
            &path,
            crate::attest::generate_es256_pem().unwrap().as_bytes(),
        )
        .unwrap();
        (keyring().with_es256_file(&path).unwrap(), dir)
    }

    #[test]
    fn es256_tokens_verify_against_the_same_jwks() {
        let (ring, dir) = es256_keyring();
        let jwks = Jwks::parse(ring.jwks_json()).unwrap();
        assert_eq!(
            jwks.kids(),
            [ring.signing_kid(), ring.es256_kid().unwrap()],
            "both signing keys, Ed25519 first"
        );
        let es256 = ring
            .sign_as(crate::attest::Alg::Es256, &claims(2_000))
            .unwrap();
        let eddsa = ring
            .sign_as(crate::attest::Alg::EdDsa, &claims(2_000))
            .unwrap();
        for token in [&es256, &eddsa] {
            assert_eq!(jwks.verify(token, 1_500), Ok(claims(2_000)));
        }
        let header = |t: &str| {
            let h = Base64UrlUnpadded::decode_vec(t.split('.').next().unwrap()).unwrap();
            serde_json::from_slice::<serde_json::Value>(&h).unwrap()
        };
        assert_eq!(header(&es256)["alg"], "ES256");
        assert_eq!(header(&es256)["kid"], ring.es256_kid().unwrap());
        assert_eq!(header(&es256)["typ"], TOKEN_TYPE);
        assert_eq!(header(&eddsa)["alg"], "EdDSA");
        // An ES256 signature is 64 bytes (r ‖ s), as JWS has it.
        let sig = es256.rsplit('.').next().unwrap();
        assert_eq!(Base64UrlUnpadded::decode_vec(sig).unwrap().len(), 64);
        // Any changed byte fails.
        for i in 0..es256.len() {
            let mut bytes = es256.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(jwks.verify(&tampered, 1_500).is_err(), "byte {i}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_header_cannot_pick_another_algorithm_for_a_key() {
        let (ring, dir) = es256_keyring();
        let jwks = Jwks::parse(ring.jwks_json()).unwrap();
        let es256 = ring
            .sign_as(crate::attest::Alg::Es256, &claims(2_000))
            .unwrap();
        // The ES256 token's header, relabelled EdDSA (same kid).
        let mut parts = es256.splitn(2, '.');
        let header = Base64UrlUnpadded::decode_vec(parts.next().unwrap()).unwrap();
        let relabelled = String::from_utf8(header)
            .unwrap()
            .replace("\"ES256\"", "\"EdDSA\"");
        let forged = format!("{}.{}", b64(relabelled.as_bytes()), parts.next().unwrap());
        assert_eq!(jwks.verify(&forged, 1_500), Err(TokenError::Header));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn without_a_p256_key_es256_is_not_signed() {
        let ring = keyring();
        assert!(!ring.signs(crate::attest::Alg::Es256));
        assert!(matches!(
            ring.sign_as(crate::attest::Alg::Es256, &claims(2_000)),
            Err(crate::attest::SignError::NoKey(crate::attest::Alg::Es256))
        ));
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
