//! Witnesses: copies of every signed checkpoint kept outside the trail's
//! database, so that its owner cannot remove rows together with the
//! checkpoints that vouch for them.
//!
//! A witness file holds one JSON line per checkpoint, `{"seq":…,"head":…,
//! "token":…}` (the head is base64url, the token the checkpoint's compact
//! JWS), appended and synced to disk before the writer goes on; it is
//! opened for appending only and never rewritten. Each checkpoint is also
//! logged once under the `vnid::witness` target, so that log shipping
//! keeps a copy of its own. `vnid audit verify --witness FILE` holds the
//! trail to every line.
//!
//! A witness database (`audit.witness_database_url`: another Postgres, or
//! at least other credentials, whose owner is not the trail's) keeps the
//! same lines in a table, `vnid_audit_witness`, for deployments whose
//! instances have no file that outlives them; vnid needs only `INSERT` and
//! `SELECT` on it. `vnid audit verify --witness-database` reads it.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::{Deserialize, Serialize};

use super::chain::{Head, StoredCheckpoint};

/// One witnessed checkpoint, as a line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessLine {
    pub seq: i64,
    /// base64url of the row's hash.
    pub head: String,
    /// The signed checkpoint.
    pub token: String,
}

impl WitnessLine {
    pub fn new(head: &Head, token: &str) -> Self {
        Self {
            seq: head.seq,
            head: Base64UrlUnpadded::encode_string(&head.hash),
            token: token.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("cannot write the witness file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the witness file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a witnessed checkpoint")]
    Line { path: PathBuf, line: usize },
    #[error("{path}: its last line is not a witnessed checkpoint")]
    Last { path: PathBuf },
    #[error("the witness database: {0}")]
    Database(#[source] sqlx::Error),
}

/// Copies a stored checkpoint to its witnesses: the log (target
/// `vnid::witness`), and the witness file at `path` when there is one,
/// synced before this returns.
pub fn keep(path: Option<&Path>, line: &WitnessLine) -> Result<(), WitnessError> {
    tracing::info!(
        target: "vnid::witness",
        seq = line.seq,
        head = %line.head,
        token = %line.token,
        "audit checkpoint"
    );
    path.map_or(Ok(()), |path| append(path, line))
}

/// The witness table, created by vnid when it may (its owner may create it
/// instead and grant vnid `INSERT, SELECT` only).
const WITNESS_TABLE: &str = "CREATE TABLE IF NOT EXISTS vnid_audit_witness (
    seq   bigint PRIMARY KEY,
    head  text   NOT NULL,
    token text   NOT NULL
)";

/// Checkpoints kept in a database other than the trail's.
#[derive(Debug, Clone)]
pub struct WitnessDatabase {
    pool: sqlx::PgPool,
}

impl WitnessDatabase {
    /// Connects on first use.
    pub fn connect(
        url: &str,
        settings: &crate::infra::sql::PoolSettings,
    ) -> Result<Self, WitnessError> {
        crate::infra::sql::lazy_pool(url, settings)
            .map(|pool| Self { pool })
            .map_err(WitnessError::Database)
    }

    /// Creates the witness table if it is missing (and vnid may).
    pub async fn prepare(&self) -> Result<(), WitnessError> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('vnid_audit_witness')::text")
                .fetch_one(&self.pool)
                .await
                .map_err(WitnessError::Database)?;
        if exists.is_none() {
            sqlx::query(WITNESS_TABLE)
                .execute(&self.pool)
                .await
                .map_err(WitnessError::Database)?;
        }
        Ok(())
    }

    /// Keeps `line` (a checkpoint kept already is kept once).
    pub async fn append(&self, line: &WitnessLine) -> Result<(), WitnessError> {
        sqlx::query(
            "INSERT INTO vnid_audit_witness (seq, head, token) VALUES ($1, $2, $3) \
             ON CONFLICT (seq) DO NOTHING",
        )
        .bind(line.seq)
        .bind(&line.head)
        .bind(&line.token)
        .execute(&self.pool)
        .await
        .map_err(WitnessError::Database)?;
        Ok(())
    }

    /// Every checkpoint it holds, in order.
    pub async fn read(&self) -> Result<Vec<StoredCheckpoint>, WitnessError> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, token FROM vnid_audit_witness ORDER BY seq")
                .fetch_all(&self.pool)
                .await
                .map_err(WitnessError::Database)?;
        Ok(rows
            .into_iter()
            .map(|(seq, token)| StoredCheckpoint { seq, token })
            .collect())
    }

    /// The row of the newest checkpoint it holds; `None` when it holds none.
    pub async fn last_seq(&self) -> Result<Option<i64>, WitnessError> {
        sqlx::query_scalar("SELECT max(seq) FROM vnid_audit_witness")
            .fetch_one(&self.pool)
            .await
            .map_err(WitnessError::Database)
    }
}

/// Replaces the note of the newest checkpoint an instance stored (one
/// witness line, in a file of its own under its data directory), so that
/// the data directory remembers how far the trail reached even when no
/// witness file is configured.
pub fn note_newest(path: &Path, line: &WitnessLine) -> Result<(), WitnessError> {
    let error = |source| WitnessError::Write {
        path: path.to_owned(),
        source,
    };
    let text = serde_json::to_vec(line).map_err(|e| error(e.into()))?;
    crate::files::replace(path, &text, 0o600).map_err(error)
}

/// The row of the newest checkpoint noted at `path`; `None` when there is
/// no note.
pub fn newest_noted(path: &Path) -> Result<Option<i64>, WitnessError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(WitnessError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice::<WitnessLine>(&text)
        .map(|line| Some(line.seq))
        .map_err(|_| WitnessError::Last {
            path: path.to_owned(),
        })
}

/// Appends `line` to the witness file at `path` (created, its owner's
/// alone, if missing) and syncs it to disk.
pub fn append(path: &Path, line: &WitnessLine) -> Result<(), WitnessError> {
    let error = |source| WitnessError::Write {
        path: path.to_owned(),
        source,
    };
    let mut text = serde_json::to_string(line).map_err(|e| error(e.into()))?;
    text.push('\n');
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_data().map_err(error)
}

/// Every checkpoint a witness file holds, in its order. A line that is not
/// one is an error naming it: a witness is evidence, never skipped.
pub fn read(path: &Path) -> Result<Vec<StoredCheckpoint>, WitnessError> {
    let file = std::fs::File::open(path).map_err(|source| WitnessError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut checkpoints = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| WitnessError::Read {
            path: path.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let witnessed: WitnessLine =
            serde_json::from_str(&line).map_err(|_| WitnessError::Line {
                path: path.to_owned(),
                line: n + 1,
            })?;
        checkpoints.push(StoredCheckpoint {
            seq: witnessed.seq,
            token: witnessed.token,
        });
    }
    Ok(checkpoints)
}

/// The row of the newest checkpoint a witness file holds (its last line,
/// read from the end: the file grows for as long as the trail lives);
/// `None` for an empty file.
pub fn last_seq(path: &Path) -> Result<Option<i64>, WitnessError> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    let read_error = |source| WitnessError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let len = file.metadata().map_err(read_error)?.len();
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start)).map_err(read_error)?;
    let mut tail = String::new();
    file.read_to_string(&mut tail).map_err(read_error)?;
    // A tail that starts mid-line drops that first, partial line.
    let last = tail
        .lines()
        .skip(usize::from(start > 0))
        .filter(|line| !line.trim().is_empty())
        .last();
    match last {
        None if start > 0 => Ok(read(path)?.last().map(|c| c.seq)),
        None => Ok(None),
        Some(line) => serde_json::from_str::<WitnessLine>(line)
            .map(|last| Some(last.seq))
            .map_err(|_| WitnessError::Last {
                path: path.to_owned(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_and_read_back_in_order() {
        let dir = std::env::temp_dir().join(format!("vnid-witness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("witness.jsonl");
        let _ = std::fs::remove_file(&path);
        for seq in [5, 10] {
            let head = Head {
                seq,
                hash: [seq as u8; 32],
            };
            append(&path, &WitnessLine::new(&head, &format!("token-{seq}"))).unwrap();
        }
        assert_eq!(last_seq(&path).unwrap(), Some(10));
        let read = read(&path).unwrap();
        assert_eq!(
            read.iter()
                .map(|c| (c.seq, c.token.as_str()))
                .collect::<Vec<_>>(),
            [(5, "token-5"), (10, "token-10")]
        );
        std::fs::write(&path, "").unwrap();
        assert_eq!(last_seq(&path).unwrap(), None);
        // A file longer than the tail read is read from its end.
        for seq in 1..=300 {
            let head = Head { seq, hash: [7; 32] };
            append(&path, &WitnessLine::new(&head, &"t".repeat(300))).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() > 64 * 1024);
        assert_eq!(last_seq(&path).unwrap(), Some(300));
        std::fs::write(&path, "{\"seq\":1}\n").unwrap();
        assert!(matches!(
            super::read(&path),
            Err(WitnessError::Line { line: 1, .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
