//! A client no one here wrote: Python's grpcio with stubs generated from
//! our proto by grpcio-tools, and PyJWT verifying the attestation against
//! the JWKS from GetSigningKeys; then `requests` through the JSON door,
//! against the JWKS URL.

use std::process::Command;

use crate::helpers::*;

#[tokio::test]
async fn python_grpcio_and_pyjwt_verify_the_attestation() {
    let app = spawn_app().await;
    // PyJWT checks exp against the real clock.
    app.clock
        .set(vnid::clock::Clock::now(&vnid::clock::SystemClock));
    let root = env!("CARGO_MANIFEST_DIR");
    // The README's test command prepares this venv and names it.
    let python = std::env::var("VNID_PYTHON")
        .unwrap_or_else(|_| format!("{root}/target/interop-venv/bin/python"));
    let out_dir = std::env::temp_dir().join(format!("vnid-test-py-{}", std::process::id()));
    let app_addr = app.addr.to_string();
    let (id, name) = (DAM.id, DAM.name);
    let script = format!("{root}/tests/interop/verify_client.py");
    let out_dir_s = out_dir.to_string_lossy().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args([
                &script,
                "--addr",
                &app_addr,
                "--proto-root",
                &format!("{root}/proto"),
                "--out",
                &out_dir_s,
            ])
            .args(["--id", id, "--name", name])
            .output()
    })
    .await
    .unwrap()
    .expect("python3 could not be run (the README's test command installs it)");
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(
        output.status.success(),
        "the Python client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("interop ok"));
}
