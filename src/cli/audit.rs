//! `vnid audit verify` and `vnid audit prune`: the trail, checked or cut
//! back to its retention.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::{Failure, Place, block_on, fail};
use crate::audit::chain::ChainHeadClaim;
use crate::audit::{Checkpointer, Head, Summary, export, witness};
use crate::clock::{Clock, SystemClock};
use crate::files::NewFile;
use crate::startup::{
    ExistingKeys, existing_audit_store, load_attester, load_checkpoint_key, open_audit_store,
    trail_exists, witness_database,
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
    /// Refuses to remove rows no export holds, unless --force.
    Prune(Prune),
    /// Writes rows, their checkpoints and the keys that check them to a
    /// file that `vnid audit verify --file` checks with no database.
    Export(Export),
}

pub(super) fn run(command: AuditCommand) -> Result<(), Failure> {
    match command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Prune(args) => prune(args),
        AuditCommand::Export(args) => export(args),
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
    /// Holds the trail to the witness database too
    /// (`audit.witness_database_url`).
    #[arg(long)]
    witness_database: bool,
    /// SEQ:HEAD, a head this trail must still hold (as the last line of
    /// an earlier `audit verify` prints it: row and base64url hash);
    /// repeat for several.
    #[arg(long = "expect", value_parser = parse_head)]
    expected: Vec<Head>,
    /// Checks an export (`vnid audit export`) instead of the trail, with
    /// no database and with the keys the file carries (named by kid in the
    /// verdict; `--witness` and `--expect` tie it to evidence kept
    /// elsewhere).
    #[arg(long = "file")]
    file: Option<PathBuf>,
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

/// Anything but a finding means the trail was not checked.
fn cannot_check(failure: Failure) -> Failure {
    Failure {
        message: format!("cannot verify the audit trail: {}", failure.message),
        status: CANNOT_CHECK,
    }
}

fn verify(args: Verify) -> Result<(), Failure> {
    if let Some(file) = &args.file {
        return verify_export(file, &args);
    }
    let settings = args.place.settings().map_err(cannot_check)?;
    let finding = block_on(async {
        // Looked for before anything is opened: reading a SQLite trail in
        // WAL mode writes its side files.
        trail_exists(&settings).map_err(fail)?;
        let keys = ExistingKeys::read(&settings).map_err(fail)?;
        let mut witnessed = Vec::new();
        for path in &args.witnesses {
            witnessed.extend(witness::read(path).map_err(fail)?);
        }
        if args.witness_database {
            let database = witness_database(&settings).map_err(fail)?.ok_or_else(|| {
                fail("--witness-database: no audit.witness_database_url is configured")
            })?;
            witnessed.extend(database.read().await.map_err(fail)?);
        }
        let store = existing_audit_store(&settings).await.map_err(fail)?;
        store
            .verify_witnessed(keys.trail(), &witnessed, &args.expected)
            .await
            .map_err(fail)
    })
    .map_err(cannot_check)?;
    let summary =
        finding.map_err(|finding| fail(format!("audit trail NOT verified: {finding}")))?;
    println!("audit trail verified: {}", described(&summary, &args));
    Ok(())
}

/// What a trail (or an export) that verifies holds, as its verdict says.
fn described(summary: &Summary, args: &Verify) -> String {
    let witnessed = match (args.witnesses.len(), args.witness_database) {
        (0, false) => String::new(),
        (0, true) => "; it agrees with the witness database".to_owned(),
        (n, false) => format!("; it agrees with {n} witness file(s)"),
        (n, true) => format!("; it agrees with {n} witness file(s) and the witness database"),
    };
    let b64 = <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string;
    // Each chain's head, as `--expect` takes it.
    let heads: Vec<String> = (summary.heads.iter())
        .map(|(_, head)| format!("{}:{}", head.seq, b64(&head.hash)))
        .collect();
    let heads = if heads.len() > 1 {
        format!("; chain heads {}", heads.join(" "))
    } else {
        String::new()
    };
    format!(
        "{} rows (rows {} to {}), head {}, newest signed checkpoint: {}{witnessed}{heads}",
        summary.rows,
        summary.anchor + 1,
        summary.head.seq,
        b64(&summary.head.hash),
        summary
            .checkpoint
            .map_or_else(|| "none".to_owned(), |seq| format!("row {seq}")),
    )
}

/// `vnid audit verify --file`: the export alone, no database, no settings.
fn verify_export(file: &Path, args: &Verify) -> Result<(), Failure> {
    let mut witnessed = Vec::new();
    for path in &args.witnesses {
        witnessed.extend(witness::read(path).map_err(fail).map_err(cannot_check)?);
    }
    let input = std::fs::File::open(file)
        .map_err(|e| cannot_check(fail(format!("cannot open {}: {e}", file.display()))))?;
    let checked = export::verify(std::io::BufReader::new(input), &witnessed, &args.expected)
        .map_err(|e| match e {
            export::ExportError::Altered(_) => Failure {
                message: format!("audit export {} NOT verified: {e}", file.display()),
                status: 1,
            },
            e => cannot_check(fail(format!("{}: {e}", file.display()))),
        })?;
    let export = checked.map_err(|finding| Failure {
        message: format!("audit export {} NOT verified: {finding}", file.display()),
        status: 1,
    })?;
    println!(
        "audit export verified: {}; attestation keys {}; checkpoint keys {}",
        described(&export.summary, args),
        export.attestation_kids.join(", "),
        export.checkpoint_kids.join(", "),
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
    /// Removes rows even if no export holds them (logged as a warning).
    #[arg(long)]
    force: bool,
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
        let key = load_checkpoint_key(&settings, &attester).map_err(fail)?;
        let checkpointer = Checkpointer::new(Arc::new(key), &attester.issuer, clock);
        let store = open_audit_store(&settings).await.map_err(fail)?;
        let outcome = store
            .prune(before_us, args.force, &|head| checkpointer.sign_cut(head))
            .await
            .map_err(|e| fail(format!("prune refused: {e}")))?;
        if let (Some((head, token)), Some(database)) =
            (&outcome.cut, witness_database(&settings).map_err(fail)?)
        {
            let line = witness::WitnessLine::new(head, token);
            if let Err(error) = database.append(&line).await {
                eprintln!(
                    "vnid audit prune: the cut checkpoint is NOT in the witness database: {error}"
                );
            }
        }
        Ok(outcome)
    })?;
    if let Some((first, last)) = outcome.unexported {
        eprintln!(
            "vnid audit prune: WARNING: --force removed rows {first} to {last}, which no export holds"
        );
    }
    match outcome.cut {
        Some((head, token)) => {
            let line = witness::WitnessLine::new(&head, &token);
            if let Err(error) = witness::keep(settings.audit.witness_file.as_deref(), &line) {
                eprintln!("vnid audit prune: the cut checkpoint is NOT witnessed: {error}");
            }
            eprintln!(
                "vnid audit prune: removed {} rows older than {days} days; the trail now starts after row {}",
                outcome.removed, head.seq
            )
        }
        None => eprintln!("vnid audit prune: no row is older than {days} days"),
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct Export {
    #[command(flatten)]
    place: Place,
    /// The first row to export. Default: the oldest row kept.
    #[arg(long)]
    from: Option<i64>,
    /// The last row to export. Default: the newest signed checkpoint, so
    /// that the file ends on a row a checkpoint vouches for.
    #[arg(long)]
    to: Option<i64>,
    /// The file to write (never replaced: a new name for each export).
    #[arg(long)]
    out: PathBuf,
}

/// Rows read and written per page.
const EXPORT_PAGE: i64 = 10_000;

fn export(args: Export) -> Result<(), Failure> {
    let settings = args.place.settings()?;
    let (rows, from, to) = block_on(async {
        trail_exists(&settings).map_err(fail)?;
        let keys = ExistingKeys::read(&settings).map_err(fail)?;
        let store = open_audit_store(&settings).await.map_err(fail)?;
        let head = store.heads().await.map_err(fail)?.newest();
        let oldest = store.rows(i64::MIN, head.seq, 1).await.map_err(fail)?;
        let Some(oldest) = oldest.first() else {
            return Err(fail("the audit trail holds no rows to export"));
        };
        let from = args.from.unwrap_or(oldest.seq);
        let to = match args.to {
            Some(to) => to,
            None => (store.checkpoints(from, head.seq).await.map_err(fail)?)
                .last()
                .map_or(head.seq, |cp| cp.seq),
        };
        if from < oldest.seq || to > head.seq || from > to {
            return Err(fail(format!(
                "rows {from} to {to} are not in the trail, which holds rows {} to {}",
                oldest.seq, head.seq
            )));
        }
        if store.rows(from - 1, to, 1).await.map_err(fail)?.is_empty() {
            return Err(fail(format!("rows {from} to {to} are not in the trail")));
        }
        // Rows up to `to` may still be going in on other chains (numbered
        // before, committed after): each chain's end is read first, rows
        // past it refuse the export, and it is read again at the end.
        let through = store.heads_at(to).await.map_err(fail)?;
        let unsettled = || {
            fail(format!(
                "rows up to {to} were still being written: export again (or with an earlier --to)"
            ))
        };
        let json = |doc: &str| serde_json::from_str(doc).map_err(fail);
        let header = export::ExportHeader {
            format: export::FORMAT.to_owned(),
            from,
            to,
            after: ChainHeadClaim::list(&store.heads_at(from - 1).await.map_err(fail)?),
            through: ChainHeadClaim::list(&through),
            to_head: None,
            after_hash: None,
            exported_at_us: SystemClock.now_micros(),
            attestation_keys: json(&keys.attestations_json)?,
            checkpoint_keys: json(&keys.checkpoints_json)?,
        };
        let written = |e: std::io::Error| fail(format!("{}: {e}", args.out.display()));
        let file = NewFile::create(&args.out, 0o600).map_err(written)?;
        let mut out =
            export::ExportWriter::start(std::io::BufWriter::new(file), header).map_err(fail)?;
        for cp in store.checkpoints(from, to).await.map_err(fail)? {
            out.checkpoint(&cp).map_err(fail)?;
        }
        let mut after = from - 1;
        let mut rows = 0u64;
        while after < to {
            let page = store.rows(after, to, EXPORT_PAGE).await.map_err(fail)?;
            let Some(newest) = page.last() else { break };
            after = newest.seq;
            for row in &page {
                if through.get(row.chain).is_none_or(|end| row.seq > end.seq) {
                    return Err(unsettled());
                }
                out.row(row).map_err(fail)?;
            }
            rows += page.len() as u64;
        }
        if store.heads_at(to).await.map_err(fail)? != through {
            return Err(unsettled());
        }
        let (sha256, buffered) = out.finish().map_err(fail)?;
        let file = buffered.into_inner().map_err(|e| written(e.into_error()))?;
        if !file.link().map_err(written)? {
            return Err(fail(format!("{} exists already", args.out.display())));
        }
        store
            .record_export(from, to, SystemClock.now_micros(), &sha256)
            .await
            .map_err(fail)?;
        Ok((rows, from, to))
    })?;
    eprintln!(
        "vnid audit export: rows {from} to {to} ({rows} rows) written to {}",
        args.out.display()
    );
    Ok(())
}
