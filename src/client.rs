//! `vnid verify-batch`: an exam board's candidates file through
//! `VerifyBatch`, one results row per candidate, resumable.
//!
//! The input is CSV with a header naming its columns: `request_id` and
//! `id_number` are required; `full_name`, `date_of_birth` (`YYYY`,
//! `YYYY-MM` or `YYYY-MM-DD`), `gender` (`male`/`female`, or `nam`/`nữ`)
//! and `old_id_number` are claimed when present and not empty. The output
//! is CSV: `request_id,verdict,reason,attestation_id,error_code,error_reason,error_detail`.
//!
//! Resuming: the output is the record of what is done. Run the same command
//! again after an interruption and the candidates whose answer is final
//! (a verdict, or an error that a retry would repeat) are skipped; the
//! others are sent again. A candidate answered by the server but not yet
//! written when the client died is sent again under the same `request_id`,
//! and the server returns its first answer: nothing is checked twice.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::domain::{MAX_REQUEST_ID_LEN, PartialDate, RequestId};
use crate::pb;
use crate::pb::verification_service_client::VerificationServiceClient;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `http://host:port` (the embedded default) or `https://host:port`.
    pub server: String,
    /// With `https`: the CA that issued the server's certificate, and the
    /// agency's certificate and key.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the host).
    pub tls_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BatchJob {
    pub input: PathBuf,
    pub output: PathBuf,
    pub purpose: pb::Purpose,
    pub name_match: pb::NameMatch,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Candidates already done by an earlier run.
    pub skipped: u64,
    pub verified: u64,
    pub not_verified: u64,
    /// Items answered with an error (final or to retry).
    pub errors: u64,
    /// Items whose error a later run retries.
    pub to_retry: u64,
    /// The longest wait the server asked for before one of them is retried.
    pub retry_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to {server}: {source}")]
    Connect {
        server: String,
        source: tonic::transport::Error,
    },
    #[error("the server refused the batch: {0}")]
    Refused(tonic::Status),
    #[error("interrupted after {done} answers ({status}); run the same command again to resume")]
    Interrupted { done: u64, status: tonic::Status },
}

/// The output's columns.
const OUTPUT_HEADER: [&str; 7] = [
    "request_id",
    "verdict",
    "reason",
    "attestation_id",
    "error_code",
    "error_reason",
    "error_detail",
];

/// Answers sent ahead of the server's, in items: enough to keep its window
/// busy, little enough to hold.
const SEND_AHEAD: usize = 1_024;

pub async fn connect(connection: &Connection) -> Result<Channel, ClientError> {
    let failed = |source| ClientError::Connect {
        server: connection.server.clone(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(connection.server.clone()).map_err(failed)?;
    if connection.server.starts_with("https://") {
        let read = |path: &Option<PathBuf>, what: &str| -> Result<Vec<u8>, ClientError> {
            let path = path
                .as_ref()
                .ok_or_else(|| ClientError::Usage(format!("https needs --{what}")))?;
            std::fs::read(path).map_err(|source| ClientError::File {
                path: path.clone(),
                source,
            })
        };
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&connection.ca, "ca")?))
            .identity(Identity::from_pem(
                read(&connection.cert, "cert")?,
                read(&connection.key, "key")?,
            ));
        if let Some(name) = &connection.tls_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint = endpoint.tls_config(tls).map_err(failed)?;
    }
    endpoint.connect().await.map_err(failed)
}

/// One output row.
#[derive(Debug, Clone, Default)]
struct Row {
    request_id: String,
    verdict: String,
    reason: String,
    attestation_id: String,
    error_code: String,
    error_reason: String,
    error_detail: String,
    /// When the server said to try again (its `RetryInfo`); not written.
    retry_after: Option<Duration>,
}

impl Row {
    fn fields(&self) -> [&str; 7] {
        [
            &self.request_id,
            &self.verdict,
            &self.reason,
            &self.attestation_id,
            &self.error_code,
            &self.error_reason,
            &self.error_detail,
        ]
    }

    fn from_answer(answer: pb::VerifyBatchResponse) -> Self {
        match answer.result {
            Some(pb::verify_batch_response::Result::Response(r)) => Self {
                verdict: name(pb::Verdict::try_from(r.verdict).map(|v| v.as_str_name())),
                reason: match pb::Reason::try_from(r.reason) {
                    Ok(pb::Reason::Unspecified) => String::new(),
                    other => name(other.map(|v| v.as_str_name())),
                },
                attestation_id: r.attestation_id,
                request_id: answer.request_id,
                ..Self::default()
            },
            Some(pb::verify_batch_response::Result::Error(status)) => {
                Self::error(answer.request_id, &status)
            }
            None => Self {
                request_id: answer.request_id,
                error_code: format!("{:?}", Code::Unknown),
                ..Self::default()
            },
        }
    }

    fn error(request_id: String, status: &tonic_types::pb::Status) -> Self {
        let mut reason = String::new();
        let mut detail = Vec::new();
        let mut retry_after = None;
        for any in &status.details {
            if any.type_url.ends_with("google.rpc.RetryInfo")
                && let Ok(retry) = tonic_types::pb::RetryInfo::decode(any.value.as_slice())
            {
                retry_after = retry.retry_delay.and_then(|d| {
                    Some(Duration::new(
                        u64::try_from(d.seconds).ok()?,
                        u32::try_from(d.nanos).ok()?,
                    ))
                });
            } else if any.type_url.ends_with("google.rpc.ErrorInfo")
                && let Ok(info) = tonic_types::pb::ErrorInfo::decode(any.value.as_slice())
            {
                reason = info.reason;
            } else if any.type_url.ends_with("google.rpc.BadRequest")
                && let Ok(bad) = tonic_types::pb::BadRequest::decode(any.value.as_slice())
            {
                detail.extend(
                    bad.field_violations
                        .into_iter()
                        .map(|v| format!("{}: {}", v.field, v.reason)),
                );
            }
        }
        Self {
            request_id,
            error_code: format!("{:?}", Code::from(status.code)),
            error_reason: reason,
            error_detail: detail.join("; "),
            retry_after,
            ..Self::default()
        }
    }

    /// Refused here, before sending: a field the request cannot carry.
    fn local(request_id: &str, field: &str, reason: &str) -> Self {
        Self {
            request_id: request_id.to_owned(),
            error_code: format!("{:?}", Code::InvalidArgument),
            error_reason: reason.to_owned(),
            error_detail: format!("{field}: {reason}"),
            ..Self::default()
        }
    }

    /// Is this the answer, or would a retry give another?
    fn is_final(&self) -> bool {
        if self.error_code.is_empty() {
            return !self.verdict.is_empty();
        }
        [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::AlreadyExists,
        ]
        .iter()
        .any(|c| format!("{c:?}") == self.error_code)
    }
}

fn name(n: Result<&str, prost::UnknownEnumValue>) -> String {
    n.map(str::to_owned).unwrap_or_default()
}

/// The results file: final rows kept from earlier runs, new rows appended.
struct Output {
    writer: csv::Writer<BufWriter<File>>,
    path: PathBuf,
    last_flush: Instant,
}

impl Output {
    /// Keeps the final rows of an earlier run (dropping rows to retry and
    /// a line cut short by an interruption) and returns their ids.
    fn open(path: &Path) -> Result<(Self, HashSet<String>), ClientError> {
        let file_error = |source| ClientError::File {
            path: path.to_owned(),
            source,
        };
        let csv_error = |source| ClientError::Csv {
            path: path.to_owned(),
            source,
        };
        let mut kept = Vec::new();
        if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_path(path)
                .map_err(csv_error)?;
            // Never rewrite a file that is not a results file: it may be
            // the candidates themselves, given by mistake.
            let header = reader.headers().map_err(csv_error)?;
            if !header.iter().eq(OUTPUT_HEADER) {
                return Err(ClientError::Usage(format!(
                    "{} exists and is not a results file; give another --output",
                    path.display()
                )));
            }
            for record in reader.records() {
                let Ok(record) = record else { continue };
                if record.len() != OUTPUT_HEADER.len() {
                    continue;
                }
                let field = |i: usize| record.get(i).unwrap_or_default().to_owned();
                let row = Row {
                    request_id: field(0),
                    verdict: field(1),
                    reason: field(2),
                    attestation_id: field(3),
                    error_code: field(4),
                    error_reason: field(5),
                    error_detail: field(6),
                    retry_after: None,
                };
                if row.is_final() {
                    kept.push(row);
                }
            }
        }
        // Written beside, then renamed over: an interruption here leaves
        // the old file whole.
        let partial = path.with_extension("partial");
        let mut writer =
            csv::Writer::from_writer(BufWriter::new(File::create(&partial).map_err(file_error)?));
        writer.write_record(OUTPUT_HEADER).map_err(csv_error)?;
        let mut done = HashSet::new();
        for row in kept {
            writer.write_record(row.fields()).map_err(csv_error)?;
            done.insert(row.request_id);
        }
        writer.flush().map_err(file_error)?;
        std::fs::rename(&partial, path).map_err(file_error)?;
        Ok((
            Self {
                writer,
                path: path.to_owned(),
                last_flush: Instant::now(),
            },
            done,
        ))
    }

    /// Writes a row; what is written reaches the file within a second.
    fn write(&mut self, row: &Row) -> Result<(), ClientError> {
        self.writer
            .write_record(row.fields())
            .map_err(|source| ClientError::Csv {
                path: self.path.clone(),
                source,
            })?;
        if self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        self.last_flush = Instant::now();
        self.writer.flush().map_err(|source| ClientError::File {
            path: self.path.clone(),
            source,
        })
    }
}

/// One input row, ready to send, or refused here.
enum Candidate {
    Send(pb::VerifyRequest),
    Refused(Row),
}

/// The input's column positions.
struct Columns {
    request_id: usize,
    id_number: usize,
    full_name: Option<usize>,
    date_of_birth: Option<usize>,
    gender: Option<usize>,
    old_id_number: Option<usize>,
}

impl Columns {
    fn of(header: &csv::StringRecord) -> Result<Self, String> {
        let find = |name: &str| header.iter().position(|h| h.trim() == name);
        let need = |name: &str| find(name).ok_or_else(|| format!("no {name} column"));
        Ok(Self {
            request_id: need("request_id")?,
            id_number: need("id_number")?,
            full_name: find("full_name"),
            date_of_birth: find("date_of_birth"),
            gender: find("gender"),
            old_id_number: find("old_id_number"),
        })
    }

    fn candidate(
        &self,
        record: &csv::StringRecord,
        purpose: pb::Purpose,
        name_match: pb::NameMatch,
    ) -> Candidate {
        let get = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or_default().trim();
        let request_id = get(Some(self.request_id));
        if let Err(e) = RequestId::parse(request_id) {
            let shown: String = request_id.chars().take(MAX_REQUEST_ID_LEN).collect();
            return Candidate::Refused(Row::local(&shown, "request_id", e.reason_code()));
        }
        let date_of_birth = match get(self.date_of_birth) {
            "" => None,
            text => match PartialDate::parse_iso(text) {
                Ok(d) => Some(pb::PartialDate {
                    year: d.year().into(),
                    month: d.month().map_or(0, u32::from),
                    day: d.day().map_or(0, u32::from),
                }),
                Err(e) => {
                    return Candidate::Refused(Row::local(
                        request_id,
                        "date_of_birth",
                        e.reason_code(),
                    ));
                }
            },
        };
        let gender = match get(self.gender).to_lowercase().as_str() {
            "" => pb::Gender::Unspecified,
            "male" | "nam" | "m" => pb::Gender::Male,
            "female" | "nữ" | "nu" | "f" => pb::Gender::Female,
            _ => {
                return Candidate::Refused(Row::local(request_id, "gender", "GENDER_UNKNOWN"));
            }
        };
        Candidate::Send(pb::VerifyRequest {
            request_id: request_id.to_owned(),
            id_number: get(Some(self.id_number)).to_owned(),
            claims: Some(pb::Claims {
                full_name: get(self.full_name).to_owned(),
                date_of_birth,
                gender: gender.into(),
                old_id_number: get(self.old_id_number).to_owned(),
            }),
            purpose: purpose.into(),
            name_match: name_match.into(),
        })
    }
}

/// Sends every candidate not yet done on one `VerifyBatch` stream and
/// writes each answer as it comes, telling `progress` how many of how many
/// are done (and, once, that the run is over).
pub async fn verify_batch(
    channel: Channel,
    job: &BatchJob,
    progress: &mut (dyn FnMut(u64, u64, bool) + Send),
) -> Result<Summary, ClientError> {
    let csv_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ClientError::Csv { path, source }
    };
    let (output, done) = Output::open(&job.output)?;
    let output = Arc::new(Mutex::new(output));
    let mut reader = csv::Reader::from_path(&job.input).map_err(csv_error(&job.input))?;
    let columns = Columns::of(reader.headers().map_err(csv_error(&job.input))?)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", job.input.display())))?;
    let total = csv::Reader::from_path(&job.input)
        .map_err(csv_error(&job.input))?
        .records()
        .count() as u64;
    let mut summary = Summary {
        skipped: done.len() as u64,
        ..Summary::default()
    };

    // The reader: a blocking thread that feeds the stream, writing the
    // rows it refuses itself.
    let (requests, stream) = mpsc::channel(SEND_AHEAD);
    let (purpose, name_match) = (job.purpose, job.name_match);
    let refused_rows = output.clone();
    let input_path = job.input.clone();
    let reader_task = tokio::task::spawn_blocking(move || -> Result<u64, ClientError> {
        let mut refused = 0;
        for record in reader.records() {
            let record = record.map_err(csv_error(&input_path))?;
            let candidate = columns.candidate(&record, purpose, name_match);
            let id = match &candidate {
                Candidate::Send(r) => r.request_id.as_str(),
                Candidate::Refused(row) => row.request_id.as_str(),
            };
            if done.contains(id) {
                continue;
            }
            match candidate {
                Candidate::Send(request) => {
                    if requests.blocking_send(request).is_err() {
                        break;
                    }
                }
                Candidate::Refused(row) => {
                    refused += 1;
                    let mut out = output_lock(&refused_rows);
                    out.write(&row)?;
                }
            }
        }
        Ok(refused)
    });

    let mut client = VerificationServiceClient::new(channel);
    let mut answers = client
        .verify_batch(ReceiverStream::new(stream))
        .await
        .map_err(ClientError::Refused)?
        .into_inner();
    let mut answered = 0;
    let ended = loop {
        match answers.next().await {
            Some(Ok(answer)) => {
                let row = Row::from_answer(answer);
                if !row.error_code.is_empty() {
                    summary.errors += 1;
                    if !row.is_final() {
                        summary.to_retry += 1;
                        summary.retry_after = summary.retry_after.max(row.retry_after);
                    }
                } else if row.verdict == pb::Verdict::Verified.as_str_name() {
                    summary.verified += 1;
                } else {
                    summary.not_verified += 1;
                }
                output_lock(&output).write(&row)?;
                answered += 1;
                progress(summary.skipped + answered, total, false);
            }
            Some(Err(status)) => break Some(status),
            None => break None,
        }
    };
    drop(answers);
    // The reader ends once its stream is gone; it is not waited for long
    // when the stream broke (the run is then resumed anyway).
    let wait = if ended.is_some() {
        Duration::from_secs(5)
    } else {
        Duration::MAX
    };
    let refused = match tokio::time::timeout(wait, reader_task).await {
        Ok(Ok(result)) => result?,
        Ok(Err(e)) => return Err(ClientError::Usage(format!("the input reader failed: {e}"))),
        Err(_) => 0,
    };
    summary.errors += refused;
    output_lock(&output).flush()?;
    progress(summary.skipped + answered + refused, total, true);
    match ended {
        Some(status) => Err(ClientError::Interrupted {
            done: answered,
            status,
        }),
        None => Ok(summary),
    }
}

fn output_lock(output: &Mutex<Output>) -> std::sync::MutexGuard<'_, Output> {
    output.lock().unwrap_or_else(|e| e.into_inner())
}
