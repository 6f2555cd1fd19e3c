//! `vnid keygen` and `vnid verify-attestation`, run as the built binary.

use std::path::Path;
use std::process::{Command, Output};

use vnid::clock::{Clock, SystemClock};

use crate::helpers::*;

fn vnid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vnid"))
        .args(args)
        .output()
        .unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vnid-test-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn keygen_writes_a_private_key_once_and_prints_its_kid() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("keygen");
    let key = dir.join("signing.pem");
    let out = vnid(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kid = String::from_utf8(out.stdout).unwrap();
    assert_eq!(kid.trim().len(), 43);
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let ring = vnid::attest::Keyring::from_pem(&pem).unwrap();
    assert_eq!(ring.signing_kid(), kid.trim());

    let again = vnid(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(!again.status.success());
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        pem,
        "an existing key was overwritten"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn verify_cli(jwks: &Path, token: &str) -> Output {
    vnid(&[
        "verify-attestation",
        "--jwks",
        jwks.to_str().unwrap(),
        token,
    ])
}

#[tokio::test]
async fn verify_attestation_accepts_good_tokens_and_rejects_the_rest() {
    let app = spawn_app().await;
    // This command reads the real clock.
    app.clock.set(SystemClock.now());
    let dir = temp_dir("verify");
    let jwks_path = dir.join("jwks.json");
    let jwks = app
        .client
        .clone()
        .get_signing_keys(vnid::pb::GetSigningKeysRequest {})
        .await
        .unwrap();
    std::fs::write(&jwks_path, jwks.into_inner().jwks_json).unwrap();

    let req = request(DAM.id, DAM.name);
    let request_id = req.request_id.clone();
    let token = app.verify(req).await.unwrap().attestation;
    let out = verify_cli(&jwks_path, &token);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["nonce"], request_id.as_str());
    assert_eq!(claims["verdict"], "VERDICT_VERIFIED");

    // A bad signature.
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let out = verify_cli(&jwks_path, std::str::from_utf8(&tampered).unwrap());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature"));

    // An unknown kid: a JWKS of another key.
    let other_path = dir.join("other.json");
    let other =
        vnid::attest::Keyring::from_pem(&vnid::attest::generate_key_pem().unwrap()).unwrap();
    std::fs::write(&other_path, other.jwks_json()).unwrap();
    let out = verify_cli(&other_path, &token);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kid"));

    // An expired token.
    app.clock.set(SystemClock.now() - 2 * 86_400);
    let old = app
        .verify(request(DAM.id, DAM.name))
        .await
        .unwrap()
        .attestation;
    let out = verify_cli(&jwks_path, &old);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// `vnid audit verify` reads; it never makes the trail or the keys it was
/// asked to check, so a directory with neither cannot "verify".
#[test]
fn audit_verify_on_a_missing_trail_says_so_and_creates_nothing() {
    let dir = temp_dir("verify-nothing");
    for data_dir in [dir.join("never-made"), dir.clone()] {
        let out = crate::helpers::vnid(
            None,
            &["audit", "verify", "--data-dir", data_dir.to_str().unwrap()],
        )
        .output()
        .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(said.contains("there is no audit trail at"), "{said}");
    }
    assert!(!dir.join("never-made").exists());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing created"
    );
    // A trail without the key that signed it cannot be checked either.
    let trail = dir.join("audit.sqlite3");
    std::fs::write(&trail, b"").unwrap();
    let out = crate::helpers::vnid(
        None,
        &["audit", "verify", "--data-dir", dir.to_str().unwrap()],
    )
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("there is no signing key at"), "{said}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["audit.sqlite3"], "no key, no side file made");
    assert_eq!(
        std::fs::metadata(&trail).unwrap().len(),
        0,
        "the trail untouched"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
