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

/// `vnid config check` on the shipped example (its key files made where
/// it names them) and on broken copies of it: OK, or exit 1 with the reason.
#[test]
fn config_check_accepts_the_example_and_names_what_is_wrong() {
    let dir = temp_dir("config-check");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/vnid.example.toml"),
    )
    .unwrap();
    let etc = dir.join("etc");
    std::fs::create_dir_all(etc.join("keys")).unwrap();
    let example = example.replace("/etc/vnid/", &format!("{}/", etc.display()));
    for key in ["2026-11", "2026-05", "audit-checkpoint"] {
        let out = vnid(&[
            "keygen",
            "--out",
            etc.join(format!("keys/{key}.pem")).to_str().unwrap(),
        ]);
        assert!(out.status.success());
    }
    for secret in ["cache.key", "subject.key"] {
        std::fs::write(etc.join(secret), [7u8; 32]).unwrap();
    }
    let check = |toml: &str| {
        let path = dir.join("vnid.toml");
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_vnid"))
            .args(["config", "check", "--config", path.to_str().unwrap()])
            .env_remove("VNID__ADMIN_LISTEN")
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, said) = check(&example);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.starts_with("configuration OK: listen 127.0.0.1:50051"),
        "{said}"
    );

    let commented_es256 = format!(
        "# es256_key_file = \"{}/keys/es256-2026-11.pem\"",
        etc.display()
    );
    assert!(example.contains(&commented_es256));
    let broken = [
        (
            example.replace("ttl_seconds = 300", "ttl_secs = 300"),
            "ttl_secs",
        ),
        (example.replace("2026-11.pem", "missing.pem"), "missing.pem"),
        (
            example.replace("listen = \"127.0.0.1:50051\"", "listen = \"0.0.0.0:50051\""),
            "requires TLS",
        ),
        (
            example.replace(
                "admin_listen = \"127.0.0.1:9464\"",
                "admin_listen = \"0.0.0.0:9464\"",
            ),
            "admin_allow_remote",
        ),
        (
            example.replace("max_age = \"7d\"", "max_age = \"soon\""),
            "an age",
        ),
        (
            example.replace("audit-checkpoint.pem", "2026-11.pem"),
            "a key of its own",
        ),
        (
            example.replace(
                "# otlp_endpoint = \"http://otel-collector:4317\"",
                "otlp_endpoint = \"otel-collector:4317\"",
            ),
            "telemetry.otlp_endpoint",
        ),
        (
            example.replace("attestation_alg = \"EdDSA\"", "attestation_alg = \"ES256\""),
            "no attestation.es256_key_file is configured",
        ),
        (
            example.replace("attestation_alg = \"EdDSA\"", "attestation_alg = \"RS256\""),
            "attestation_alg",
        ),
        (
            example.replace(
                &commented_es256,
                &format!("es256_key_file = \"{}/keys/2026-11.pem\"", etc.display()),
            ),
            "not a PKCS#8 P-256 private key",
        ),
    ];
    for (toml, reason) in broken {
        let (code, said) = check(&toml);
        assert_eq!(code, 1, "{reason}: {said}");
        assert!(said.contains(reason), "{reason}: {said}");
    }

    // An agency on ES256 with a P-256 key, as OpenSSL makes it.
    let es256 = etc.join("keys/es256-2026-11.pem");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&es256)
        .status()
        .unwrap();
    assert!(made.success());
    let with_es256 = example
        .replace("attestation_alg = \"EdDSA\"", "attestation_alg = \"ES256\"")
        .replace(
            &commented_es256,
            &format!("es256_key_file = \"{}\"", es256.display()),
        );
    let (code, said) = check(&with_es256);
    assert_eq!(code, 0, "{said}");
}
