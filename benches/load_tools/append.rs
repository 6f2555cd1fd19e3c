//! The trail's own cost in the database: rows appended through the
//! service's own append, without the service around it.

/// An attestation as `benches/load.sh` copies it out: `hex:` and the bytes
/// the trail keeps, or the text of an older row.
fn kept(column: &str) -> Option<String> {
    let Some(hex) = column.strip_prefix("hex:") else {
        return Some(column.to_owned());
    };
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    vnid::audit::packed::unpack(&bytes)
}

/// The trail's own cost in the database, without the service around it.
pub async fn append(url: &str, csv: &str, group: usize) -> Result<(), Box<dyn std::error::Error>> {
    use vnid::audit::{AuditEntry, AuditStore, SqlAudit, parse_stored_kind};

    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(csv)?;
    let mut entries = Vec::new();
    for record in reader.records() {
        let r = record?;
        let text = |i: usize| r.get(i).unwrap_or_default().to_owned();
        let (kind, door) = parse_stored_kind(&text(1)).ok_or("unknown kind")?;
        entries.push(AuditEntry {
            at_us: text(0).parse()?,
            kind,
            door,
            agency: text(2),
            purpose: text(3),
            request_id: text(4),
            subject: text(5),
            subject_index: text(6),
            verdict: text(7),
            reason: text(8),
            attestation_id: text(9),
            attestation: kept(&text(10)).ok_or("an attestation that does not read")?,
            request_digest: text(11),
        });
    }
    let store = SqlAudit::connect_lazy(url, 2, std::time::Duration::from_secs(10))?;
    store.migrate().await?;
    let started = std::time::Instant::now();
    for chunk in entries.chunks(group.max(1)) {
        store.append(chunk).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("{} {:.0}", entries.len(), entries.len() as f64 / elapsed);
    Ok(())
}
