//! The mirror export format: what `vnid import` reads and
//! `vnid gen-population` writes.
//!
//! CSV (UTF-8, comma-separated, RFC 4180 quoting, the header [`HEADER`]
//! exactly) or NDJSON (one object per line with the same keys). In NDJSON,
//! `old_id_numbers` may be a `;`-separated string, as in CSV, or an array.
//!
//! A bad row is reported with its line, its field and a stable reason; the
//! report never repeats the row's values (they are personal data).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use crate::clock::{format_rfc3339, parse_rfc3339};
use crate::domain::{
    CitizenStatus, Gender, OldIdNumber, PartialDate, PersonName, PersonalIdNumber,
};
use crate::mirror::ExportRecord;

pub const HEADER: [&str; 11] = [
    "id_number",
    "full_name",
    "date_of_birth",
    "gender",
    "old_id_numbers",
    "place_of_origin",
    "permanent_residence",
    "status",
    "household_id",
    "relation_to_head",
    "updated_at",
];

/// The longest free-text field (addresses), in characters.
pub const MAX_TEXT_CHARS: usize = 500;
/// The longest household id or relation, in characters.
pub const MAX_SHORT_TEXT_CHARS: usize = 64;

/// Why a row is bad: the field (or `row`), a stable reason code, and a
/// description that repeats no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason} ({description})")]
pub struct RowError {
    pub field: &'static str,
    pub reason: &'static str,
    pub description: String,
}

impl RowError {
    pub fn new(field: &'static str, reason: &'static str, description: impl ToString) -> Self {
        Self {
            field,
            reason,
            description: description.to_string(),
        }
    }
}

/// A file that cannot be read as an export at all.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: the header must be exactly: {}", HEADER.join(","))]
    Header { path: String },
    #[error("{path}: {message}")]
    Csv { path: String, message: String },
}

/// Characters whose sequences are NFC however they are combined: Latin up
/// to the combining marks, and Latin Extended Additional (all of precomposed
/// Vietnamese). Checked once against Unicode's data.
pub(crate) fn is_nfc_latin(c: char) -> bool {
    matches!(c as u32, 0x20..0x300 | 0x1E00..0x1F00)
}

fn text(field: &'static str, value: &str, max: usize) -> Result<String, RowError> {
    let value = value.trim();
    let (mut chars, mut plain) = (0usize, true);
    for c in value.chars() {
        if c.is_control() {
            return Err(RowError::new(
                field,
                "TEXT_BAD_CHARACTER",
                "holds a control character",
            ));
        }
        chars += 1;
        plain &= is_nfc_latin(c);
    }
    // Exports are NFC already; checking costs less than normalising.
    let value: String = if plain {
        value.to_owned()
    } else {
        value.nfc().collect()
    };
    if (if plain { chars } else { value.chars().count() }) > max {
        return Err(RowError::new(
            field,
            "TEXT_TOO_LONG",
            format!("is longer than {max} characters"),
        ));
    }
    Ok(value)
}

/// Parses one row's fields, in [`HEADER`] order.
pub fn parse_fields(f: [&str; 11]) -> Result<ExportRecord, RowError> {
    let id_number = PersonalIdNumber::parse(f[0])
        .map_err(|e| RowError::new("id_number", e.reason_code(), e))?;
    let full_name = text("full_name", f[1], MAX_TEXT_CHARS)?;
    PersonName::validate(&full_name).map_err(|e| RowError::new("full_name", e.reason_code(), e))?;
    let date_of_birth = PartialDate::parse_iso(f[2])
        .map_err(|e| RowError::new("date_of_birth", e.reason_code(), e))?;
    let gender = Gender::parse(f[3])
        .ok_or_else(|| RowError::new("gender", "GENDER_UNKNOWN", "must be male or female"))?;
    let old_id_numbers = f[4]
        .split(';')
        .filter(|s| !s.is_empty())
        .map(|s| {
            OldIdNumber::parse(s)
                .map_err(|e| RowError::new("old_id_numbers", "OLD_ID_NUMBER_FORMAT", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let status = CitizenStatus::parse(f[7]).ok_or_else(|| {
        RowError::new(
            "status",
            "STATUS_UNKNOWN",
            "must be active, deceased or cancelled",
        )
    })?;
    let updated_at = parse_rfc3339(f[10]).ok_or_else(|| {
        RowError::new(
            "updated_at",
            "TIMESTAMP_FORMAT",
            "must be an RFC 3339 timestamp",
        )
    })?;
    Ok(ExportRecord {
        id_number,
        full_name,
        date_of_birth,
        gender,
        old_id_numbers,
        place_of_origin: text("place_of_origin", f[5], MAX_TEXT_CHARS)?,
        permanent_residence: text("permanent_residence", f[6], MAX_TEXT_CHARS)?,
        status,
        household_id: text("household_id", f[8], MAX_SHORT_TEXT_CHARS)?,
        relation_to_head: text("relation_to_head", f[9], MAX_SHORT_TEXT_CHARS)?,
        updated_at,
    })
}

/// The record's fields in [`HEADER`] order, as the export spells them.
pub fn to_fields(r: &ExportRecord) -> [String; 11] {
    [
        r.id_number.expose().to_owned(),
        r.full_name.clone(),
        r.date_of_birth.to_iso(),
        r.gender.as_str().to_owned(),
        r.old_id_numbers
            .iter()
            .map(OldIdNumber::expose)
            .collect::<Vec<_>>()
            .join(";"),
        r.place_of_origin.clone(),
        r.permanent_residence.clone(),
        r.status.as_str().to_owned(),
        r.household_id.clone(),
        r.relation_to_head.clone(),
        format_rfc3339(r.updated_at),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    /// By extension: `.ndjson`/`.jsonl`/`.json` are NDJSON, anything else CSV.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("ndjson" | "jsonl" | "json") => Self::Ndjson,
            _ => Self::Csv,
        }
    }
}

/// A row as read: its line, the parse result, and its text for a reject file.
#[derive(Debug)]
pub struct Row {
    pub line: u64,
    pub result: Result<ExportRecord, RowError>,
    pub raw: RawRow,
}

#[derive(Debug, Clone)]
pub enum RawRow {
    Csv(csv::StringRecord),
    Json(String),
    /// Unreadable bytes: nothing to write back.
    None,
}

/// What the importer learns from the bytes as they are read: how many (for
/// progress) and their digest (to recognise a repeated import).
#[derive(Default)]
pub struct ReadTap {
    pub bytes: AtomicU64,
    pub digest: std::sync::Mutex<Sha256>,
}

struct Tapped<R> {
    inner: R,
    tap: Arc<ReadTap>,
}

impl<R: Read> Read for Tapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tap.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Ok(mut digest) = self.tap.digest.lock() {
            digest.update(&buf[..n]);
        }
        Ok(n)
    }
}

enum Source {
    Csv(csv::Reader<Tapped<File>>, csv::StringRecord),
    Json(BufReader<Tapped<File>>, u64, String),
}

/// Streams the rows of one export file in constant memory.
pub struct ExportReader {
    path: String,
    source: Source,
}

impl ExportReader {
    /// Opens `path`; `tap` sees its bytes as they are read.
    pub fn open(path: &Path, tap: Arc<ReadTap>) -> Result<Self, FileError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|source| FileError::Io {
            path: shown.clone(),
            source,
        })?;
        let counting = Tapped { inner: file, tap };
        let source = match Format::of(path) {
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .flexible(true)
                    .has_headers(true)
                    .from_reader(counting);
                let header = reader.headers().map_err(|e| FileError::Csv {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
                let header: Vec<&str> = header.iter().collect();
                let bom_free = header.first().map(|h| h.trim_start_matches('\u{feff}'));
                if header.len() != HEADER.len()
                    || bom_free != Some(HEADER[0])
                    || header[1..] != HEADER[1..]
                {
                    return Err(FileError::Header { path: shown });
                }
                Source::Csv(reader, csv::StringRecord::new())
            }
            Format::Ndjson => Source::Json(
                BufReader::with_capacity(1 << 16, counting),
                0,
                String::new(),
            ),
        };
        Ok(Self {
            path: shown,
            source,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The next row, `None` at the end, or an error that ends the file.
    pub fn next_row(&mut self) -> Result<Option<Row>, FileError> {
        match &mut self.source {
            Source::Csv(reader, record) => match reader.read_record(record) {
                Ok(false) => Ok(None),
                Ok(true) => {
                    let line = record.position().map_or(0, |p| p.line());
                    let result = match <[&str; 11]>::try_from(record.iter().collect::<Vec<_>>()) {
                        Ok(fields) => parse_fields(fields),
                        Err(_) => Err(RowError::new(
                            "row",
                            "FIELD_COUNT",
                            format!("has {} fields, not {}", record.len(), HEADER.len()),
                        )),
                    };
                    Ok(Some(Row {
                        line,
                        result,
                        raw: RawRow::Csv(record.clone()),
                    }))
                }
                Err(e) => match e.kind() {
                    csv::ErrorKind::Utf8 { pos, .. } => Ok(Some(Row {
                        line: pos.as_ref().map_or(0, |p| p.line()),
                        result: Err(RowError::new("row", "ENCODING", "is not valid UTF-8")),
                        raw: RawRow::None,
                    })),
                    _ => Err(FileError::Csv {
                        path: self.path.clone(),
                        message: e.to_string(),
                    }),
                },
            },
            Source::Json(reader, line, buf) => loop {
                buf.clear();
                let mut bytes = Vec::new();
                let n = reader
                    .read_until(b'\n', &mut bytes)
                    .map_err(|source| FileError::Io {
                        path: self.path.clone(),
                        source,
                    })?;
                if n == 0 {
                    return Ok(None);
                }
                *line += 1;
                let Ok(text) = String::from_utf8(bytes) else {
                    return Ok(Some(Row {
                        line: *line,
                        result: Err(RowError::new("row", "ENCODING", "is not valid UTF-8")),
                        raw: RawRow::None,
                    }));
                };
                let text = text
                    .trim_end_matches(['\n', '\r'])
                    .trim_start_matches('\u{feff}');
                if text.trim().is_empty() {
                    continue;
                }
                return Ok(Some(Row {
                    line: *line,
                    result: parse_json(text),
                    raw: RawRow::Json(text.to_owned()),
                }));
            },
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum OldIds {
    Joined(String),
    List(Vec<String>),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    id_number: String,
    full_name: String,
    date_of_birth: String,
    gender: String,
    #[serde(default)]
    old_id_numbers: Option<OldIds>,
    #[serde(default)]
    place_of_origin: String,
    #[serde(default)]
    permanent_residence: String,
    status: String,
    #[serde(default)]
    household_id: String,
    #[serde(default)]
    relation_to_head: String,
    updated_at: String,
}

fn parse_json(line: &str) -> Result<ExportRecord, RowError> {
    let row: JsonRow = serde_json::from_str(line).map_err(|e| {
        // serde_json's own messages may quote a value ("invalid type:
        // integer `82090012345`"): say only what kind of fault, and where.
        if e.is_syntax() || e.is_eof() {
            RowError::new("row", "JSON_SYNTAX", format!("is not valid JSON (column {})", e.column()))
        } else {
            RowError::new(
                "row",
                "JSON_SHAPE",
                "is not an object of the export's keys with string values (old_id_numbers: a string or a list)",
            )
        }
    })?;
    let old = match row.old_id_numbers {
        None => String::new(),
        Some(OldIds::Joined(s)) => s,
        Some(OldIds::List(list)) => list.join(";"),
    };
    parse_fields([
        &row.id_number,
        &row.full_name,
        &row.date_of_birth,
        &row.gender,
        &old,
        &row.place_of_origin,
        &row.permanent_residence,
        &row.status,
        &row.household_id,
        &row.relation_to_head,
        &row.updated_at,
    ])
}

/// Writes records in either format. (One writer per file: the size of
/// the CSV variant does not matter.)
#[allow(clippy::large_enum_variant)]
pub enum ExportWriter<W: Write> {
    Csv(csv::Writer<W>),
    Ndjson(W),
}

impl<W: Write> ExportWriter<W> {
    pub fn new(format: Format, out: W) -> std::io::Result<Self> {
        Ok(match format {
            Format::Csv => {
                // Flexible: a rejected row may have the wrong field count.
                let mut writer = csv::WriterBuilder::new().flexible(true).from_writer(out);
                writer.write_record(HEADER)?;
                Self::Csv(writer)
            }
            Format::Ndjson => Self::Ndjson(out),
        })
    }

    pub fn write(&mut self, record: &ExportRecord) -> std::io::Result<()> {
        let fields = to_fields(record);
        match self {
            Self::Csv(writer) => writer.write_record(&fields).map_err(std::io::Error::other),
            Self::Ndjson(out) => {
                let mut object = serde_json::Map::new();
                for (key, value) in HEADER.iter().zip(fields) {
                    let value = if *key == "old_id_numbers" {
                        let list: Vec<serde_json::Value> = value
                            .split(';')
                            .filter(|s| !s.is_empty())
                            .map(|s| s.into())
                            .collect();
                        serde_json::Value::Array(list)
                    } else {
                        serde_json::Value::String(value)
                    };
                    object.insert((*key).to_owned(), value);
                }
                serde_json::to_writer(&mut *out, &object)?;
                out.write_all(b"\n")
            }
        }
    }

    /// Writes a raw rejected row back as it was read.
    pub fn write_raw(&mut self, raw: &RawRow) -> std::io::Result<()> {
        match (self, raw) {
            (Self::Csv(writer), RawRow::Csv(record)) => {
                writer.write_record(record).map_err(std::io::Error::other)
            }
            (Self::Ndjson(out), RawRow::Json(line)) => {
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")
            }
            _ => Ok(()),
        }
    }

    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Self::Csv(writer) => writer.into_inner().map_err(|e| e.into_error()),
            Self::Ndjson(mut out) => {
                out.flush()?;
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: [&str; 11] = [
        "082090012345",
        "Nguyễn Văn Đàm",
        "1990-05-17",
        "male",
        "312345678;312000111",
        "Mỹ Tho, Tiền Giang",
        "12 Ấp Bắc, Mỹ Tho",
        "active",
        "HH-1",
        "head",
        "2025-07-01T00:00:00Z",
    ];

    fn with(index: usize, value: &str) -> Result<ExportRecord, RowError> {
        let mut fields = GOOD;
        fields[index] = value;
        parse_fields(fields)
    }

    #[test]
    fn a_good_row_round_trips() {
        let record = parse_fields(GOOD).unwrap();
        assert_eq!(record.old_id_numbers.len(), 2);
        let fields = to_fields(&record);
        assert_eq!(fields.each_ref().map(String::as_str), GOOD);
        assert_eq!(with(2, "1990").unwrap().date_of_birth.to_iso(), "1990");
        assert_eq!(with(4, "").unwrap().old_id_numbers, vec![]);
    }

    #[test]
    fn each_bad_field_has_its_reason() {
        fn reason(i: usize, v: &str) -> RowError {
            with(i, v).map(|_| ()).unwrap_err()
        }
        assert_eq!(reason(0, "12345").reason, "ID_NUMBER_FORMAT");
        assert_eq!(reason(1, "R2D2").reason, "NAME_BAD_CHARACTER");
        assert_eq!(reason(2, "1990-02-30").reason, "DATE_IMPOSSIBLE");
        assert_eq!(reason(2, "30/02/1990").reason, "DATE_FORMAT");
        assert_eq!(reason(3, "nam").reason, "GENDER_UNKNOWN");
        assert_eq!(reason(4, "3123;x").reason, "OLD_ID_NUMBER_FORMAT");
        assert_eq!(reason(7, "dead").reason, "STATUS_UNKNOWN");
        assert_eq!(reason(10, "2025-07-01").reason, "TIMESTAMP_FORMAT");
        assert_eq!(reason(5, &"x".repeat(501)).reason, "TEXT_TOO_LONG");
        assert_eq!(reason(8, "a\tb").reason, "TEXT_BAD_CHARACTER");
        let e = reason(0, "082090012345x");
        assert!(!e.to_string().contains("082090012345"), "{e}");
    }

    #[test]
    fn json_rows_accept_lists_and_strings() {
        let line = r#"{"id_number":"082090012345","full_name":"Nguyễn Văn Đàm","date_of_birth":"1990","gender":"male","old_id_numbers":["312345678"],"place_of_origin":"","permanent_residence":"","status":"deceased","household_id":"","relation_to_head":"","updated_at":"2025-07-01T00:00:00+07:00"}"#;
        let record = parse_json(line).unwrap();
        assert_eq!(record.status, CitizenStatus::Deceased);
        assert_eq!(record.old_id_numbers.len(), 1);
        let joined = line.replace(r#"["312345678"]"#, r#""312345678""#);
        assert_eq!(parse_json(&joined).unwrap(), record);
        assert_eq!(parse_json("{").unwrap_err().reason, "JSON_SYNTAX");
        let number = line.replace(r#""082090012345""#, "82090012345");
        let e = parse_json(&number).unwrap_err();
        assert_eq!(e.reason, "JSON_SHAPE");
        assert!(!e.to_string().contains("82090012345"), "{e}");
        assert_eq!(
            parse_json(r#"{"id_number":"1"}"#).unwrap_err().reason,
            "JSON_SHAPE"
        );
    }

    #[test]
    fn writers_write_what_readers_read() {
        let dir = std::env::temp_dir().join(format!("vnid-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let record = parse_fields(GOOD).unwrap();
        for name in ["p.csv", "p.ndjson"] {
            let path = dir.join(name);
            let mut writer =
                ExportWriter::new(Format::of(&path), File::create(&path).unwrap()).unwrap();
            writer.write(&record).unwrap();
            writer.finish().unwrap();
            let mut reader = ExportReader::open(&path, Arc::default()).unwrap();
            let row = reader.next_row().unwrap().unwrap();
            assert_eq!(row.result.unwrap(), record, "{name}");
            assert_eq!(row.line, if name.ends_with("csv") { 2 } else { 1 });
            assert!(reader.next_row().unwrap().is_none());
        }
        std::fs::write(dir.join("bad.csv"), "id,name\n").unwrap();
        assert!(matches!(
            ExportReader::open(&dir.join("bad.csv"), Arc::default()),
            Err(FileError::Header { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
