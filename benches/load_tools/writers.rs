//! Many writers on one trail: what several instances appending to one
//! Postgres get together, each through the service's own append.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64ct::Encoding;

use vnid::audit::{AuditEntry, AuditKind, AuditStore, SqlAudit};
use vnid::domain::CheckCall;

/// A compact JWS of the size and shape of a check's attestation (956
/// characters: a 100-character header, 768 of payload, a 64-byte
/// signature), which the trail keeps as bytes.
fn attestation() -> String {
    let b64 = |bytes: &[u8]| base64ct::Base64UrlUnpadded::encode_string(bytes);
    let header = br#"{"alg":"EdDSA","typ":"vnid-attestation+jwt","kid":"0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"}"#;
    format!(
        "{}.{}.{}",
        b64(&header[..75]),
        b64(&[b'x'; 576]),
        b64(&[7; 64])
    )
}

/// A row the size of a check's: the attestation above, the tokens and ids
/// of the sizes the service writes.
fn entry(writer: usize, n: u64) -> AuditEntry {
    AuditEntry {
        at_us: 1_795_000_000_000_000 + n as i64,
        kind: AuditKind::Check(CheckCall::Verify),
        agency: "hospital-cho-ray".into(),
        purpose: "PURPOSE_HEALTHCARE".into(),
        request_id: format!("writer-{writer}-{n}"),
        subject: "s".repeat(43),
        subject_index: "i".repeat(43),
        verdict: "VERDICT_VERIFIED".into(),
        reason: String::new(),
        attestation_id: format!("{writer:08}-{n:024}"),
        attestation: attestation(),
        request_digest: "d".repeat(43),
        door: vnid::domain::Door::Grpc,
    }
}

/// WRITERS tasks, each with its own connections (as separate instances
/// have), append groups of GROUP rows one after another for SECONDS;
/// prints "writers rows rows_per_s". The trail has `chains` chains; a URL
/// holding `{w}` gives each writer a trail (a database) of its own, named
/// by its number: nothing shared, the most any split could give.
pub async fn writers(
    url: &str,
    writers: usize,
    group: usize,
    seconds: u64,
    chains: i16,
) -> Result<(), Box<dyn std::error::Error>> {
    let url_of = |w: usize| url.replace("{w}", &w.to_string());
    let trails = if url.contains("{w}") { writers } else { 1 };
    for w in 0..trails {
        SqlAudit::connect_lazy(&url_of(w), 2, Duration::from_secs(30))?
            .with_chains(chains)
            .migrate()
            .await?;
    }
    let rows = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store =
            SqlAudit::connect_lazy(&url_of(w), 2, Duration::from_secs(30))?.with_chains(chains);
        let (rows, stop) = (rows.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let entries: Vec<AuditEntry> = (0..group as u64).map(|i| entry(w, n + i)).collect();
                store.append(&entries).await?;
                n += group as u64;
                rows.fetch_add(group as u64, Ordering::Relaxed);
            }
            Ok::<_, vnid::audit::AuditError>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rows = rows.load(Ordering::Relaxed);
    println!("{writers} {rows} {:.0}", rows as f64 / elapsed);
    Ok(())
}

/// ROWS check-sized rows appended to the trail at URL, in groups of
/// GROUP, one writer: what `benches/trail_size.sh` measures on disk.
pub async fn fill(url: &str, rows: u64, group: u64) -> Result<(), Box<dyn std::error::Error>> {
    let store = SqlAudit::connect_lazy(url, 2, Duration::from_secs(30))?;
    store.migrate().await?;
    let mut n = 0;
    while n < rows {
        let size = group.min(rows - n);
        let entries: Vec<AuditEntry> = (n..n + size).map(|i| entry(0, i)).collect();
        store.append(&entries).await?;
        n += size;
    }
    println!("{n}");
    Ok(())
}
