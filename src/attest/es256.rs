//! ES256 (ECDSA over P-256 with SHA-256, RFC 7518 §3.4) beside Ed25519,
//! for the agencies whose JOSE libraries take no EdDSA (the mainstream .NET
//! ones, Java's common path). Signing and verifying are ring's; the key
//! files are PKCS#8 PEM (private) or SPKI PEM (public), as OpenSSL writes
//! them.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use sha2::{Digest, Sha256};
use x509_cert::der::pem::LineEnding;
use x509_cert::der::{Decode, SecretDocument};
use x509_cert::spki::SubjectPublicKeyInfoRef;
use zeroize::Zeroizing;

use super::b64;

/// `id-ecPublicKey` and the named curve `prime256v1` (P-256).
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const P256: &str = "1.2.840.10045.3.1.7";

/// A P-256 public key: the uncompressed point (`0x04 ‖ x ‖ y`).
#[derive(Clone, PartialEq, Eq)]
pub struct Es256Public([u8; 65]);

impl fmt::Debug for Es256Public {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Es256Public").field(&self.kid()).finish()
    }
}

impl Es256Public {
    /// From the uncompressed point, if it is one on P-256.
    pub fn from_point(point: &[u8]) -> Option<Self> {
        let point: [u8; 65] = point.try_into().ok()?;
        // ring checks the point when it verifies; a point off the curve
        // verifies nothing. Reject the obviously malformed here.
        (point[0] == 4).then_some(Self(point))
    }

    /// From the JWK's `x` and `y` (32 bytes each).
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Option<Self> {
        if x.len() != 32 || y.len() != 32 {
            return None;
        }
        let mut point = [4u8; 65];
        point[1..33].copy_from_slice(x);
        point[33..].copy_from_slice(y);
        Some(Self(point))
    }

    /// From an SPKI PEM (`-----BEGIN PUBLIC KEY-----`) of a P-256 key.
    pub fn from_spki_pem(pem: &str) -> Option<Self> {
        let (label, document) = SecretDocument::from_pem(pem).ok()?;
        if label != "PUBLIC KEY" {
            return None;
        }
        let spki = SubjectPublicKeyInfoRef::from_der(document.as_bytes()).ok()?;
        let curve = spki
            .algorithm
            .parameters?
            .decode_as::<x509_cert::der::asn1::ObjectIdentifier>()
            .ok()?;
        if spki.algorithm.oid.to_string() != EC_PUBLIC_KEY || curve.to_string() != P256 {
            return None;
        }
        Self::from_point(spki.subject_public_key.as_bytes()?)
    }

    fn x(&self) -> &[u8] {
        &self.0[1..33]
    }

    fn y(&self) -> &[u8] {
        &self.0[33..]
    }

    /// The RFC 7638 thumbprint: base64url of the SHA-256 of
    /// `{"crv":"P-256","kty":"EC","x":"…","y":"…"}`.
    pub fn kid(&self) -> String {
        let jwk = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            b64(self.x()),
            b64(self.y())
        );
        b64(&Sha256::digest(jwk.as_bytes()))
    }

    /// The key as a JWK of the published set.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64(self.x()),
            "y": b64(self.y()),
            "kid": self.kid(),
            "alg": "ES256",
            "use": "sig",
        })
    }

    /// Whether `signature` (`r ‖ s`, 64 bytes, as JWS has it) signs
    /// `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.0[..])
            .verify(message, signature)
            .is_ok()
    }
}

/// A P-256 signing key.
pub struct Es256Signing {
    pair: EcdsaKeyPair,
    public: Es256Public,
    random: SystemRandom,
}

impl fmt::Debug for Es256Signing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Es256Signing")
            .field(&self.public.kid())
            .finish()
    }
}

impl Es256Signing {
    /// From a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) of a P-256 key
    /// (with its public key, as OpenSSL and ring write them).
    pub fn from_pkcs8_pem(pem: &str) -> Option<Self> {
        let (label, document) = SecretDocument::from_pem(pem).ok()?;
        if label != "PRIVATE KEY" {
            return None;
        }
        Self::from_pkcs8_der(document.as_bytes())
    }

    fn from_pkcs8_der(der: &[u8]) -> Option<Self> {
        let random = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &random).ok()?;
        let public = Es256Public::from_point(pair.public_key().as_ref())?;
        Some(Self {
            pair,
            public,
            random,
        })
    }

    pub fn public(&self) -> &Es256Public {
        &self.public
    }

    /// The signature of `message`: `r ‖ s`, 64 bytes.
    pub fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        let signature = self.pair.sign(&self.random, message).ok()?;
        Some(signature.as_ref().to_vec())
    }
}

/// Generates a fresh P-256 signing key as PKCS#8 PEM.
pub fn generate_es256_pem() -> Option<Zeroizing<String>> {
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .ok()?;
    let document = SecretDocument::try_from(der.as_ref()).ok()?;
    document.to_pem("PRIVATE KEY", LineEnding::LF).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7517 appendix A.1's P-256 key; its RFC 7638 thumbprint as
    /// jwcrypto (Python) computes it.
    #[test]
    fn thumbprint_of_the_rfc_7517_example_key() {
        use base64ct::{Base64UrlUnpadded, Encoding};
        let x =
            Base64UrlUnpadded::decode_vec("MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4").unwrap();
        let y =
            Base64UrlUnpadded::decode_vec("4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM").unwrap();
        let key = Es256Public::from_coordinates(&x, &y).unwrap();
        assert_eq!(key.kid(), "cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s");
    }

    #[test]
    fn a_generated_key_signs_what_its_public_key_verifies() {
        let pem = generate_es256_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let key = Es256Signing::from_pkcs8_pem(&pem).unwrap();
        let signature = key.sign(b"message").unwrap();
        assert_eq!(signature.len(), 64);
        assert!(key.public().verify(b"message", &signature));
        assert!(!key.public().verify(b"messagf", &signature));
        // ECDSA signs with a fresh nonce: two signatures differ, both verify.
        let again = key.sign(b"message").unwrap();
        assert_ne!(signature, again);
        assert!(key.public().verify(b"message", &again));
    }

    #[test]
    fn an_ed25519_key_is_not_an_es256_key() {
        let pem = crate::attest::generate_key_pem().unwrap();
        assert!(Es256Signing::from_pkcs8_pem(&pem).is_none());
        assert!(Es256Public::from_spki_pem(&pem).is_none());
    }
}
