//! The archive of a range of the trail: `vnid audit export` writes it,
//! `vnid audit verify --file` checks it with no database, and `vnid audit
//! prune` removes only rows that went into one.
//!
//! One JSON document per line:
//!
//! 1. `{"export": {...}}`: the format, the range (`from`, `to`), each
//!    chain's newest row before the range (`after`: what its first row
//!    follows) and in it (`through`: where it ends), when, and the keys
//!    that check it (`attestation_keys`, `checkpoint_keys`: JWKS
//!    documents). Format 1 (one chain) named `after_hash` and `to_head`.
//! 2. one `{"checkpoint": {"seq", "token"}}` per signed checkpoint in the
//!    range, in `seq` order: first, so that the rows are checked as they
//!    are read, never held in memory.
//! 3. one `{"row": {...}}` per row, in `seq` order: every column.
//! 4. `{"end": {"rows": n, "sha256": …}}`: the count, and the SHA-256 of
//!    every line before it, so that a file cut short or edited without
//!    re-signing anything is told from one that was never whole.
//!
//! The chain, the checkpoints (signed by the checkpoint key) and each
//! row's attestation are checked exactly as in the database; the keys in
//! the file are named by their kid in the verdict, and `--witness` or
//! `--expect` tie the file to evidence kept elsewhere.

use std::io::{BufRead, Write};

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::chain::{
    ChainCheck, ChainHeadClaim, ChainId, FIRST_CHAIN, Finding, Hash, Head, Heads, StoredCheckpoint,
    Summary, TrailKeys,
};
use super::{AuditEntry, AuditRecord, parse_stored_kind};
use crate::attest::Jwks;

/// The `format` of the first line.
pub const FORMAT: &str = "vnid-audit-export/2";
/// The format before chains, still read.
const FORMAT_1: &str = "vnid-audit-export/1";

/// The first line: what the file holds, and the keys that check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    pub format: String,
    /// The first row exported.
    pub from: i64,
    /// The last row exported.
    pub to: i64,
    /// Each chain's newest row before `from`: what its first row in the
    /// file follows.
    #[serde(default)]
    pub after: Vec<ChainHeadClaim>,
    /// Each chain's newest row up to `to`: where its rows in the file end.
    #[serde(default)]
    pub through: Vec<ChainHeadClaim>,
    /// Format 1: base64url of the last row's hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_head: Option<String>,
    /// Format 1: base64url of the hash the first row follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_hash: Option<String>,
    /// Microseconds since the epoch.
    pub exported_at_us: i64,
    pub attestation_keys: serde_json::Value,
    pub checkpoint_keys: serde_json::Value,
}

/// One row, every column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RowLine {
    seq: i64,
    #[serde(default = "first_chain")]
    chain: ChainId,
    at_us: i64,
    kind: String,
    agency: String,
    purpose: String,
    request_id: String,
    subject: String,
    subject_index: String,
    verdict: String,
    reason: String,
    attestation_id: String,
    attestation: String,
    request_digest: String,
    prev_hash: String,
    row_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CheckpointLine {
    seq: i64,
    token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EndLine {
    rows: u64,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Export(Box<ExportHeader>),
    Row(Box<RowLine>),
    Checkpoint(CheckpointLine),
    End(EndLine),
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write the export: {0}")]
    Write(#[source] std::io::Error),
    #[error("cannot read the export: {0}")]
    Read(#[source] std::io::Error),
    /// The file is not an export.
    #[error("line {line}: {what}")]
    Malformed { line: usize, what: String },
    /// The file is not what was written: cut short, or edited.
    #[error("it is not the file that was written: {0}")]
    Altered(&'static str),
}

fn first_chain() -> ChainId {
    FIRST_CHAIN
}

fn b64(hash: &Hash) -> String {
    Base64UrlUnpadded::encode_string(hash)
}

fn unb64(text: &str) -> Option<Hash> {
    Base64UrlUnpadded::decode_vec(text)
        .ok()
        .and_then(|h| h.try_into().ok())
}

/// Writes an export line by line, hashing what it writes.
pub struct ExportWriter<W: Write> {
    out: W,
    digest: Sha256,
    rows: u64,
}

impl<W: Write> ExportWriter<W> {
    pub fn start(out: W, header: ExportHeader) -> Result<Self, ExportError> {
        let mut writer = Self {
            out,
            digest: Sha256::new(),
            rows: 0,
        };
        writer.line(&Line::Export(Box::new(header)))?;
        Ok(writer)
    }

    fn line(&mut self, line: &Line) -> Result<(), ExportError> {
        let mut text = serde_json::to_vec(line).map_err(|e| ExportError::Write(e.into()))?;
        text.push(b'\n');
        self.digest.update(&text);
        self.out.write_all(&text).map_err(ExportError::Write)
    }

    pub fn row(&mut self, record: &AuditRecord) -> Result<(), ExportError> {
        let e = &record.entry;
        self.rows += 1;
        self.line(&Line::Row(Box::new(RowLine {
            seq: record.seq,
            chain: record.chain,
            at_us: e.at_us,
            kind: e.stored_kind().into_owned(),
            agency: e.agency.clone(),
            purpose: e.purpose.clone(),
            request_id: e.request_id.clone(),
            subject: e.subject.clone(),
            subject_index: e.subject_index.clone(),
            verdict: e.verdict.clone(),
            reason: e.reason.clone(),
            attestation_id: e.attestation_id.clone(),
            attestation: e.attestation.clone(),
            request_digest: e.request_digest.clone(),
            prev_hash: b64(&record.prev_hash),
            row_hash: b64(&record.row_hash),
        })))
    }

    pub fn checkpoint(&mut self, cp: &StoredCheckpoint) -> Result<(), ExportError> {
        self.line(&Line::Checkpoint(CheckpointLine {
            seq: cp.seq,
            token: cp.token.clone(),
        }))
    }

    /// Ends the file with its count and digest; returns the digest and
    /// the writer.
    pub fn finish(mut self) -> Result<(String, W), ExportError> {
        let sha256 = Base64UrlUnpadded::encode_string(&self.digest.clone().finalize());
        self.line(&Line::End(EndLine {
            rows: self.rows,
            sha256: sha256.clone(),
        }))?;
        self.out.flush().map_err(ExportError::Write)?;
        Ok((sha256, self.out))
    }
}

/// What an export holds that verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Its rows start after `summary.anchor`.
    pub summary: Summary,
    /// The kids of the keys it was checked with.
    pub attestation_kids: Vec<String>,
    pub checkpoint_kids: Vec<String>,
}

/// Checks an export as `vnid audit verify` checks a trail, reading it
/// once, a row at a time (an export of a day at national volume does not
/// fit in memory): `Err` when the file cannot be read as a whole export,
/// `Ok(Err)` when it was changed.
pub fn verify(
    input: impl BufRead,
    witnessed: &[StoredCheckpoint],
    expected: &[Head],
) -> Result<Result<ExportSummary, Finding>, ExportError> {
    let mut lines = Lines::new(input);
    let Some(Line::Export(header)) = lines.next()? else {
        return Err(lines.malformed("the export's header is not first"));
    };
    if header.format != FORMAT && header.format != FORMAT_1 {
        return Err(lines.malformed(&format!("format {:?}, not {FORMAT:?}", header.format)));
    }
    let keys = |doc: &serde_json::Value| {
        Jwks::parse(&doc.to_string()).map_err(|e| lines.malformed(&e.to_string()))
    };
    let attestations = keys(&header.attestation_keys)?;
    let checkpoint_keys = keys(&header.checkpoint_keys)?;
    let trail = TrailKeys {
        attestations: &attestations,
        checkpoints: &checkpoint_keys,
    };
    let one_chain = |seq: i64, text: &Option<String>, what: &str| {
        let hash = text.as_deref().and_then(unb64);
        hash.map(|hash| Heads::one(Head { seq, hash }))
            .ok_or_else(|| lines.malformed(what))
    };
    let (after, through) = if header.format == FORMAT_1 {
        (
            one_chain(
                header.from - 1,
                &header.after_hash,
                "after_hash is not a hash",
            )?,
            one_chain(header.to, &header.to_head, "to_head is not a hash")?,
        )
    } else {
        let heads = |claims: &[ChainHeadClaim], what: &str| {
            ChainHeadClaim::heads(claims).ok_or_else(|| lines.malformed(what))
        };
        (
            heads(&header.after, "after names a head that is not a hash")?,
            heads(&header.through, "through names a head that is not a hash")?,
        )
    };
    // The checkpoints, then the rows, then the end.
    let mut checkpoints = Vec::new();
    let mut line = lines.next()?;
    while let Some(Line::Checkpoint(cp)) = line {
        checkpoints.push(StoredCheckpoint {
            seq: cp.seq,
            token: cp.token,
        });
        line = lines.next()?;
    }
    let mut walk = match ChainCheck::after(trail, header.from - 1, after, &checkpoints)
        .and_then(|walk| walk.witnessed(witnessed))
        .and_then(|walk| {
            expected
                .iter()
                .try_fold(walk, |walk, head| walk.expect(*head))
        }) {
        Ok(walk) => walk,
        Err(finding) => return Ok(Err(finding)),
    };
    let mut rows = 0u64;
    let mut finding = None;
    while let Some(Line::Row(row)) = line {
        let record = record(*row).map_err(|what| lines.malformed(&what))?;
        rows += 1;
        // The first finding is the verdict; the rest of the file is still
        // read, so that a file cut short is told apart.
        if finding.is_none()
            && let Err(found) = walk.push(&record)
        {
            finding = Some(match found {
                // No database to look the predecessor up in.
                Finding::Unlinked { seq, .. } => Finding::Changed {
                    seq,
                    what: "it does not follow the row before it",
                },
                found => found,
            });
        }
        line = lines.next()?;
    }
    match line {
        Some(Line::End(end)) => {
            if end.sha256 != lines.sha256_before_end || end.rows != rows {
                return Err(ExportError::Altered(
                    "its lines do not hash to its end line (edited, or lines removed)",
                ));
            }
        }
        None => return Err(ExportError::Altered("it has no end line (cut short)")),
        Some(_) => return Err(lines.malformed("a line out of its place")),
    }
    if lines.next()?.is_some() {
        return Err(lines.malformed("a line after the end"));
    }
    if let Some(finding) = finding {
        return Ok(Err(finding));
    }
    Ok(walk.finish(&through).map(|summary| ExportSummary {
        summary,
        attestation_kids: attestations.kids(),
        checkpoint_kids: checkpoint_keys.kids(),
    }))
}

/// An export's lines, parsed one at a time, hashed as they go.
struct Lines<R> {
    input: std::io::Lines<R>,
    number: usize,
    digest: Sha256,
    /// The SHA-256 of every line before the end line, once it is read.
    sha256_before_end: String,
}

impl<R: BufRead> Lines<R> {
    fn new(input: R) -> Self {
        Self {
            input: input.lines(),
            number: 0,
            digest: Sha256::new(),
            sha256_before_end: String::new(),
        }
    }

    fn next(&mut self) -> Result<Option<Line>, ExportError> {
        let Some(text) = self.input.next() else {
            return Ok(None);
        };
        let text = text.map_err(ExportError::Read)?;
        self.number += 1;
        let line: Line = serde_json::from_str(&text)
            .map_err(|e| self.malformed(&format!("not an export line: {e}")))?;
        if matches!(line, Line::End(_)) {
            self.sha256_before_end =
                Base64UrlUnpadded::encode_string(&self.digest.clone().finalize());
        }
        self.digest.update(text.as_bytes());
        self.digest.update(b"\n");
        Ok(Some(line))
    }

    fn malformed(&self, what: &str) -> ExportError {
        ExportError::Malformed {
            line: self.number.max(1),
            what: what.to_owned(),
        }
    }
}

fn record(row: RowLine) -> Result<AuditRecord, String> {
    let hash = |text: &str, what: &str| unb64(text).ok_or_else(|| format!("{what} is not a hash"));
    let (kind, door) =
        parse_stored_kind(&row.kind).ok_or_else(|| format!("kind {:?} is unknown", row.kind))?;
    Ok(AuditRecord {
        seq: row.seq,
        chain: row.chain,
        prev_hash: hash(&row.prev_hash, "prev_hash")?,
        row_hash: hash(&row.row_hash, "row_hash")?,
        entry: AuditEntry {
            at_us: row.at_us,
            kind,
            door,
            agency: row.agency,
            purpose: row.purpose,
            request_id: row.request_id,
            subject: row.subject,
            subject_index: row.subject_index,
            verdict: row.verdict,
            reason: row.reason,
            attestation_id: row.attestation_id,
            attestation: row.attestation,
            request_digest: row.request_digest,
        },
    })
}

/// Which rows of `first..=last` no export covers (the first such run),
/// given the exported ranges.
pub fn unexported(first: i64, last: i64, exported: &[(i64, i64)]) -> Option<(i64, i64)> {
    let mut ranges = exported.to_vec();
    ranges.sort_unstable();
    let mut next = first;
    for (from, to) in ranges {
        if next > last {
            break;
        }
        if from > next {
            return Some((next, (from - 1).min(last)));
        }
        next = next.max(to + 1);
    }
    (next <= last).then_some((next, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unexported_rows_are_found_between_and_after_exports() {
        assert_eq!(unexported(1, 10, &[(1, 10)]), None);
        assert_eq!(unexported(1, 10, &[(1, 4), (5, 12)]), None);
        assert_eq!(unexported(1, 10, &[]), Some((1, 10)));
        assert_eq!(unexported(1, 10, &[(1, 4), (7, 10)]), Some((5, 6)));
        assert_eq!(unexported(1, 10, &[(3, 10)]), Some((1, 2)));
        assert_eq!(unexported(5, 10, &[(1, 7)]), Some((8, 10)));
        assert_eq!(unexported(5, 4, &[]), None);
    }
}
