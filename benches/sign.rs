//! The cost of one attestation (run by hand): `cargo bench --bench sign`.
//! Times `Keyring::sign` of a typical verified-answer claim set, next to
//! the bare Ed25519 signature of the same bytes, in the same run.

#[path = "shared/claims.rs"]
mod claims;

use std::time::Instant;

use ed25519_dalek::{Signer, SigningKey};
use vnid::attest::Keyring;

fn main() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let ring = Keyring::new(key.clone(), vec![]);
    let claims = claims::typical("desk-7:2026-11-27:0001".into());
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
