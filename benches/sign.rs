//! The cost of one attestation (run by hand): `cargo bench --bench sign`.
//! Times `Keyring::sign` of a typical verified-answer claim set, next to
//! the bare Ed25519 signature of the same bytes, and the same attestation
//! signed ES256, in the same run.

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
    // The same claims signed ES256 (P-256, ring), for the agencies whose
    // JOSE libraries take no EdDSA; alternated with EdDSA, twice.
    let dir = std::env::temp_dir().join(format!("vnid-sign-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let p256 = dir.join("p256.pem");
    let pem = vnid::attest::generate_es256_pem().unwrap_or_default();
    let ring = std::fs::write(&p256, pem.as_bytes())
        .ok()
        .and_then(|()| ring.with_es256_file(&p256).ok());
    let _ = std::fs::remove_dir_all(&dir);
    let Some(ring) = ring else {
        println!("no ES256 key: ES256 not measured");
        return;
    };
    let time = |alg: vnid::attest::Alg| {
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(ring.sign_as(alg, std::hint::black_box(&claims)).ok());
        }
        start.elapsed().as_secs_f64() / f64::from(n) * 1e6
    };
    let es_token = ring
        .sign_as(vnid::attest::Alg::Es256, &claims)
        .unwrap_or_default();
    let mut rounds = Vec::new();
    for _ in 0..2 {
        rounds.push((
            time(vnid::attest::Alg::EdDsa),
            time(vnid::attest::Alg::Es256),
        ));
    }
    println!("compact JWS ({} bytes): {jws:.1} us/sign", token.len());
    println!("bare Ed25519 signature : {bare:.1} us/sign");
    println!("ratio                  : {:.2}x", jws / bare);
    for (ed, es) in rounds {
        println!(
            "EdDSA {ed:.1} us, ES256 ({} bytes) {es:.1} us per attestation: ES256/EdDSA {:.2}x",
            es_token.len(),
            es / ed
        );
    }
}
