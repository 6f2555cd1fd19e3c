//! Attestation verification: any token against a real JWKS is refused
//! without a panic; one that verifies was signed by the key.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vnid::attest::{Jwks, Keyring};

static JWKS: LazyLock<Jwks> = LazyLock::new(|| {
    let ring = vnid::attest::generate_key_pem()
        .and_then(|pem| Keyring::from_pem(&pem))
        .unwrap_or_else(|_| std::process::abort());
    Jwks::parse(ring.jwks_json()).unwrap_or_else(|_| std::process::abort())
});

fuzz_target!(|token: &str| {
    // Nothing the fuzzer writes carries the key's signature.
    assert!(JWKS.verify(token, 1_795_737_600).is_err());
    let _ = vnid::attest::stored_claims(token);
    let _ = Jwks::parse(token);
});
