//! The population files: `vnid import` loads export files into the
//! configured mirror; `vnid gen-population` writes a synthetic one.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Args;

use super::progress::Progress;
use super::{Failure, Place, block_on, fail};
use crate::clock::parse_rfc3339;
use crate::import::format::{ExportWriter, Format};
use crate::import::generate::{DEFAULT_AS_OF, GenOptions, Generator};
use crate::import::{ImportObserver, ImportOptions};
use crate::mirror::LoadMode;
use crate::startup::{Seed, open_mirror};

#[derive(Debug, Args)]
pub(super) struct Import {
    #[command(flatten)]
    place: Place,
    /// Add and update records instead of replacing the whole mirror.
    #[arg(long)]
    delta: bool,
    /// Bad rows that may be skipped (written to the reject file); by
    /// default any bad row aborts the import and nothing changes.
    #[arg(long, default_value_t = 0)]
    max_errors: u64,
    /// Where skipped rows go (default: <first file>.rejects.csv|ndjson).
    #[arg(long)]
    reject_file: Option<PathBuf>,
    /// CSV or NDJSON (.ndjson, .jsonl) export files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub(super) fn run(args: Import) -> Result<(), Failure> {
    let settings = args.place.settings()?;
    let mode = if args.delta {
        LoadMode::Delta
    } else {
        LoadMode::Full
    };
    let options = ImportOptions {
        files: args.files,
        mode,
        max_errors: args.max_errors,
        reject_file: args.reject_file,
    };
    let report = block_on(async {
        let mirror = open_mirror(&settings, Seed::Nothing).await.map_err(fail)?;
        let observer = Arc::new(ImportProgress(Mutex::new(Progress::new("rows", true))));
        crate::import::run(mirror.as_ref(), options, observer)
            .await
            .map_err(|e| fail(format!("import failed: {e}")))
    })?;
    if report.already_imported {
        eprintln!("vnid import: these files were imported before; nothing to do");
        return Ok(());
    }
    eprintln!(
        "vnid import: {} load committed: {} rows, {} added or changed, {} rejected",
        mode.as_str(),
        report.rows,
        report.changed,
        report.rejected
    );
    if let Some(path) = report.reject_file.filter(|_| report.rejected > 0) {
        eprintln!("vnid import: rejected rows written to {}", path.display());
    }
    Ok(())
}

/// The importer's rejected rows and progress (the share of bytes read).
struct ImportProgress(Mutex<Progress>);

impl ImportProgress {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ImportObserver for ImportProgress {
    fn bad_row(&self, line: &str) {
        self.progress().line(line);
    }

    fn progress(&self, rows: u64, bytes: u64, total_bytes: u64) {
        let read = if total_bytes == 0 {
            1.0
        } else {
            bytes as f64 / total_bytes as f64
        };
        self.progress().update(rows, read, false);
    }

    fn done(&self, rows: u64) {
        self.progress().update(rows, 1.0, true);
    }
}

#[derive(Debug, Args)]
pub(super) struct GenPopulation {
    #[arg(long)]
    count: u64,
    /// The registration province code, e.g. 082 (Tiền Giang).
    #[arg(long, default_value = "082")]
    province: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// CSV, or NDJSON if the name ends in .ndjson or .jsonl.
    #[arg(long)]
    out: PathBuf,
    /// The date the population is as of (RFC 3339); ages count back from it.
    #[arg(long)]
    as_of: Option<String>,
}

pub(super) fn gen_population(args: GenPopulation) -> Result<(), Failure> {
    let province = args
        .province
        .parse::<u16>()
        .ok()
        .filter(|p| (1..=999).contains(p))
        .ok_or_else(|| fail("--province takes a 3-digit registration code such as 082"))?;
    if province < 100 && crate::domain::province_name(province).is_none() {
        return Err(fail(format!("{province:03} is not a province code")));
    }
    let as_of = match args.as_of {
        None => DEFAULT_AS_OF,
        Some(text) => {
            parse_rfc3339(&text).ok_or_else(|| fail("--as-of takes an RFC 3339 timestamp"))?
        }
    };
    let out = &args.out;
    let written = (|| -> std::io::Result<()> {
        let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
        let mut writer = ExportWriter::new(Format::of(out), file)?;
        for record in Generator::new(GenOptions {
            count: args.count,
            province,
            seed: args.seed,
            as_of,
        }) {
            writer.write(&record)?;
        }
        writer.finish()?.flush()
    })();
    written.map_err(|e| fail(format!("cannot write {}: {e}", out.display())))
}
