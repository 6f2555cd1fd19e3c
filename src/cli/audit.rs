//! `vnid audit verify` and `vnid audit prune`: the trail, checked or cut
//! back to its retention.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::{Failure, Place, block_on, fail};
use crate::audit::{Checkpointer, Head, witness};
use crate::clock::{Clock, SystemClock};
use crate::startup::{
    existing_audit_store, existing_jwks, load_attester, open_audit_store, trail_exists,
};

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Recomputes the hash chain and checks every signed checkpoint and
    /// attestation; names the first row changed, removed, moved or cut off.
    /// Read-only: it creates, migrates and generates nothing (a missing
    /// trail or key cannot be checked).
    /// Exit status 0: verified; 1: tampering found; 2: could not check.
    Verify(Verify),
    /// Removes rows older than the retention period (audit.retention_days),
    /// leaving a signed cut checkpoint so that the rest still verifies.
    Prune(Prune),
}

pub(super) fn run(command: AuditCommand) -> Result<(), Failure> {
    match command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Prune(args) => prune(args),
    }
}

#[derive(Debug, Args)]
pub(super) struct Verify {
    #[command(flatten)]
    place: Place,
    /// A witness file (`audit.witness_file`) the trail must reach and agree
    /// with, checkpoint by checkpoint; repeat for several.
    #[arg(long = "witness")]
    witnesses: Vec<PathBuf>,
    /// SEQ:HEAD, a head this trail must still hold (as the last line of
    /// an earlier `audit verify` prints it: row and base64url hash);
    /// repeat for several.
    #[arg(long = "expect", value_parser = parse_head)]
    expected: Vec<Head>,
}

fn parse_head(text: &str) -> Result<Head, String> {
    let usage = || "SEQ:HEAD, e.g. 10:3q2-7w…(base64url of 32 bytes)".to_owned();
    let (seq, hash) = text.split_once(':').ok_or_else(usage)?;
    let seq = seq.parse().map_err(|_| usage())?;
    let hash = <base64ct::Base64UrlUnpadded as base64ct::Encoding>::decode_vec(hash)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(usage)?;
    Ok(Head { seq, hash })
}

/// The exit status of a check that could not be made (as `diff` uses it).
const CANNOT_CHECK: u8 = 2;

fn verify(args: Verify) -> Result<(), Failure> {
    // Anything but a finding means the trail was not checked.
    let cannot_check = |failure: Failure| Failure {
        message: format!("cannot verify the audit trail: {}", failure.message),
        status: CANNOT_CHECK,
    };
    let settings = args.place.settings().map_err(cannot_check)?;
    let finding = block_on(async {
        // Looked for before anything is opened: reading a SQLite trail in
        // WAL mode writes its side files.
        trail_exists(&settings).map_err(fail)?;
        let jwks = existing_jwks(&settings).map_err(fail)?;
        let mut witnessed = Vec::new();
        for path in &args.witnesses {
            witnessed.extend(witness::read(path).map_err(fail)?);
        }
        let store = existing_audit_store(&settings).await.map_err(fail)?;
        store
            .verify_witnessed(&jwks, &witnessed, &args.expected)
            .await
            .map_err(fail)
    })
    .map_err(cannot_check)?;
    let summary =
        finding.map_err(|finding| fail(format!("audit trail NOT verified: {finding}")))?;
    let witnessed = match args.witnesses.len() {
        0 => String::new(),
        n => format!("; it agrees with {n} witness file(s)"),
    };
    println!(
        "audit trail verified: {} rows (rows {} to {}), head {}, newest signed checkpoint: {}{witnessed}",
        summary.rows,
        summary.anchor + 1,
        summary.head.seq,
        <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(&summary.head.hash),
        summary
            .checkpoint
            .map_or_else(|| "none".to_owned(), |seq| format!("row {seq}")),
    );
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct Prune {
    #[command(flatten)]
    place: Place,
    /// Overrides audit.retention_days.
    #[arg(long)]
    older_than_days: Option<u32>,
}

fn prune(args: Prune) -> Result<(), Failure> {
    let settings = args.place.settings()?;
    let days = args
        .older_than_days
        .unwrap_or(settings.audit.retention_days);
    let outcome = block_on(async {
        let attester = Arc::new(load_attester(&settings).map_err(fail)?);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let before_us = clock
            .now_micros()
            .saturating_sub(i64::from(days) * 86_400 * 1_000_000);
        let checkpointer = Checkpointer::new(attester, clock);
        let store = open_audit_store(&settings).await.map_err(fail)?;
        store
            .prune(before_us, &|head| checkpointer.sign(head, true))
            .await
            .map_err(|e| fail(format!("prune failed: {e}")))
    })?;
    match outcome.cut {
        Some(cut) => eprintln!(
            "vnid audit prune: removed {} rows older than {days} days; the trail now starts after row {cut}",
            outcome.removed
        ),
        None => eprintln!("vnid audit prune: no row is older than {days} days"),
    }
    Ok(())
}
