//! The cost of one attestation (run by hand): `cargo bench --bench sign`.
//! Times `Keyring::sign` of a typical verified-answer claim set, next to
//! the bare Ed25519 signature of the same bytes, in the same run.

use std::time::Instant;

use ed25519_dalek::{Signer, SigningKey};
use vnid::attest::{AttestationClaims, Keyring};

fn main() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let ring = Keyring::new(key.clone(), vec![]);
    let claims = AttestationClaims {
        iss: "vnid".into(),
        aud: "bv-tien-giang".into(),
        sub: "mldjzE97T4vJElOLJXpTta1uSZt1l8rd-AoVs_deGnM".into(),
        iat: 1_795_737_600,
        exp: 1_795_824_000,
        jti: "d6711195-2073-42f8-a3d9-ec9dd51608c9".into(),
        nonce: "desk-7:2026-11-27:0001".into(),
        purpose: "PURPOSE_HEALTHCARE".into(),
        verdict: "VERDICT_VERIFIED".into(),
        reason: None,
        checks: None,
        data_as_of: 1_795_734_000,
    };
    let n = 20_000;
    let token = ring.sign(&claims).unwrap_or_default();
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(ring.sign(std::hint::black_box(&claims)).ok());
    }
    let jws = start.elapsed().as_secs_f64() / f64::from(n) * 1e6;
    let signed = token
        .rsplit_once('.')
        .map_or("", |(s, _)| s)
        .as_bytes()
        .to_vec();
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(key.sign(std::hint::black_box(&signed)));
    }
    let bare = start.elapsed().as_secs_f64() / f64::from(n) * 1e6;
    println!("compact JWS ({} bytes): {jws:.1} us/sign", token.len());
    println!("bare Ed25519 signature : {bare:.1} us/sign");
    println!("ratio                  : {:.2}x", jws / bare);
}
