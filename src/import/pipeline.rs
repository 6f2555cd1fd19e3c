//! `vnid import`: files in, one committed load out — or nothing changed.
//!
//! A reader thread parses and validates the rows (in constant memory) and
//! hands them in batches over a bounded channel to the store's loader, which
//! streams them into its staging table. Bad rows are reported with file,
//! line, field and reason; past `max_errors` the reader stops without the
//! end marker and the loader rolls back.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::Digest;
use tokio::sync::mpsc;

use super::format::{ExportReader, ExportWriter, FileError, Format, RawRow, ReadTap, RowError};
use crate::mirror::{
    Duplicate, LoadError, LoadItem, LoadMode, MirrorAdmin, RowOrigin, SourcedRecord, StoreError,
};

/// Rows per batch handed to the loader.
const BATCH: usize = 2_000;
/// Batches in flight between the reader and the loader.
const IN_FLIGHT: usize = 4;

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub files: Vec<PathBuf>,
    pub mode: LoadMode,
    /// Bad rows (including repeated ID numbers) that may be skipped.
    pub max_errors: u64,
    /// Where skipped rows are written; default `<first file>.rejects.<ext>`.
    pub reject_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportReport {
    pub rows: u64,
    pub changed: u64,
    pub rejected: u64,
    /// The same files were imported before: nothing was done.
    pub already_imported: bool,
    pub reject_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{count} bad rows, more than the {max} allowed (--max-errors); nothing was changed")]
    TooManyErrors { count: u64, max: u64 },
    #[error("{0}; nothing was changed")]
    Load(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the reject file {path}: {source}")]
    Reject {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the reader stopped unexpectedly")]
    Reader,
    #[error("the files hold no valid row: a full load would empty the mirror; nothing was changed")]
    EmptyFullLoad,
}

/// Where the importer says what it is doing: error lines and progress
/// (the command line draws them; tests and embedders may ignore them).
pub trait ImportObserver: Send + Sync {
    /// One bad row, already formatted as `file:line: field: REASON (…)`.
    fn bad_row(&self, line: &str);
    /// `rows` read so far, which are `bytes` of `total_bytes`.
    fn progress(&self, rows: u64, bytes: u64, total_bytes: u64);
    /// Every one of `rows` read.
    fn done(&self, _rows: u64) {}
}

fn default_reject_file(first: &Path) -> PathBuf {
    let ext = match Format::of(first) {
        Format::Csv => "csv",
        Format::Ndjson => "ndjson",
    };
    first.with_extension(format!("rejects.{ext}"))
}

struct Rejects {
    path: PathBuf,
    writer: ExportWriter<BufWriter<File>>,
}

impl Rejects {
    fn create(path: &Path) -> Result<Self, ImportError> {
        use std::os::unix::fs::OpenOptionsExt;
        let error = |source| ImportError::Reject {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(error)?;
        let writer = ExportWriter::new(Format::of(path), BufWriter::new(file)).map_err(error)?;
        Ok(Self {
            path: path.to_owned(),
            writer,
        })
    }
}

struct ReaderSummary {
    errors: u64,
    rejects: Option<Rejects>,
}

/// Reads every file, sends batches, and reports bad rows.
fn read_files(
    options: &ImportOptions,
    tx: &mpsc::Sender<LoadItem>,
    observer: &dyn ImportObserver,
    tap: &Arc<ReadTap>,
    rows_read: &AtomicU64,
) -> Result<ReaderSummary, ImportError> {
    let hash = |bytes: &[u8]| {
        if let Ok(mut digest) = tap.digest.lock() {
            digest.update(bytes);
        }
    };
    hash(options.mode.as_str().as_bytes());
    let mut rejects = match options.max_errors {
        0 => None,
        _ => {
            let path = options
                .reject_file
                .clone()
                .unwrap_or_else(|| default_reject_file(&options.files[0]));
            Some(Rejects::create(&path)?)
        }
    };
    let mut errors = 0u64;
    let mut data_as_of = i64::MIN;
    let mut batch = Vec::with_capacity(BATCH);
    for (index, path) in options.files.iter().enumerate() {
        hash(b"\0file\0");
        let mut reader = ExportReader::open(path, tap.clone())?;
        while let Some(row) = reader.next_row()? {
            rows_read.fetch_add(1, Ordering::Relaxed);
            match row.result {
                Ok(record) => {
                    data_as_of = data_as_of.max(record.updated_at);
                    let origin = RowOrigin {
                        file: index as u32,
                        line: row.line,
                    };
                    batch.push(SourcedRecord { origin, record });
                    if batch.len() == BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        tx.blocking_send(LoadItem::Batch(full))
                            .map_err(|_| ImportError::Reader)?;
                    }
                }
                Err(RowError {
                    field,
                    reason,
                    description,
                }) => {
                    errors += 1;
                    observer.bad_row(&format!(
                        "{}:{}: {field}: {reason} ({description})",
                        reader.path(),
                        row.line
                    ));
                    if errors > options.max_errors {
                        return Err(ImportError::TooManyErrors {
                            count: errors,
                            max: options.max_errors,
                        });
                    }
                    if let Some(rejects) = rejects.as_mut() {
                        write_reject(rejects, &row.raw)?;
                    }
                }
            }
        }
    }
    if data_as_of == i64::MIN && options.mode == LoadMode::Full {
        // A truncated or wrong export must not wipe the mirror out.
        return Err(ImportError::EmptyFullLoad);
    }
    if !batch.is_empty() {
        tx.blocking_send(LoadItem::Batch(batch))
            .map_err(|_| ImportError::Reader)?;
    }
    // The digest of the mode and every byte of every file.
    let digest = tap
        .digest
        .lock()
        .map(|d| {
            d.clone()
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        })
        .map_err(|_| ImportError::Reader)?;
    let end = LoadItem::End {
        data_as_of: if data_as_of == i64::MIN {
            0
        } else {
            data_as_of
        },
        duplicate_budget: options.max_errors - errors,
        digest: Some(digest),
    };
    tx.blocking_send(end).map_err(|_| ImportError::Reader)?;
    Ok(ReaderSummary { errors, rejects })
}

fn write_reject(rejects: &mut Rejects, raw: &RawRow) -> Result<(), ImportError> {
    rejects
        .writer
        .write_raw(raw)
        .map_err(|source| ImportError::Reject {
            path: rejects.path.clone(),
            source,
        })
}

fn describe_duplicate(files: &[PathBuf], d: &Duplicate) -> String {
    let name = |o: RowOrigin| {
        files
            .get(o.file as usize)
            .map_or_else(String::new, |p| p.display().to_string())
    };
    format!(
        "{}:{}: id_number: DUPLICATE_ID (repeats the ID number of {}:{})",
        name(d.dropped),
        d.dropped.line,
        name(d.kept),
        d.kept.line
    )
}

/// Runs one import against `store`.
pub async fn run(
    store: &dyn MirrorAdmin,
    options: ImportOptions,
    observer: Arc<dyn ImportObserver>,
) -> Result<ImportReport, ImportError> {
    let files = options.files.clone();
    let total_bytes: u64 = files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let tap = Arc::new(ReadTap::default());
    let rows_read = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let reader = {
        let (options, observer, tap, rows_read) = (
            options.clone(),
            observer.clone(),
            tap.clone(),
            rows_read.clone(),
        );
        tokio::task::spawn_blocking(move || {
            read_files(&options, &tx, observer.as_ref(), &tap, &rows_read)
        })
    };
    let ticker = {
        let (observer, tap, rows_read) = (observer.clone(), tap.clone(), rows_read.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                observer.progress(
                    rows_read.load(Ordering::Relaxed),
                    tap.bytes.load(Ordering::Relaxed),
                    total_bytes,
                );
            }
        })
    };
    let loaded = store.load(options.mode, rx).await;
    ticker.abort();
    let read = reader.await.map_err(|_| ImportError::Reader)?;
    observer.done(rows_read.load(Ordering::Relaxed));
    let (mut summary, loaded) = match (read, loaded) {
        // The loader stopped first; the reader only saw its channel close.
        (Err(ImportError::Reader), Err(e)) => return Err(e.into()),
        (Err(e), _) => return Err(e),
        (Ok(summary), loaded) => (summary, loaded),
    };
    let outcome = match loaded {
        Ok(outcome) => outcome,
        Err(LoadError::Duplicates { found }) => {
            for d in &found {
                observer.bad_row(&describe_duplicate(&files, d));
            }
            return Err(ImportError::TooManyErrors {
                count: summary.errors + found.len() as u64,
                max: options.max_errors,
            });
        }
        Err(e) => return Err(e.into()),
    };
    if outcome.already_imported {
        return Ok(ImportReport {
            already_imported: true,
            ..Default::default()
        });
    }
    for d in &outcome.dropped_duplicates {
        observer.bad_row(&describe_duplicate(&files, d));
        if let Some(rejects) = summary.rejects.as_mut() {
            rejects
                .writer
                .write(&d.record)
                .map_err(|source| ImportError::Reject {
                    path: rejects.path.clone(),
                    source,
                })?;
        }
    }
    let reject_file = match summary.rejects {
        Some(rejects) => {
            let path = rejects.path.clone();
            rejects
                .writer
                .finish()
                .map_err(|source| ImportError::Reject {
                    path: path.clone(),
                    source,
                })?;
            Some(path)
        }
        None => None,
    };
    Ok(ImportReport {
        rows: outcome.rows,
        changed: outcome.changed,
        rejected: summary.errors + outcome.dropped_duplicates.len() as u64,
        already_imported: false,
        reject_file,
    })
}
