//! `vnid verify-batch`: a CSV file of candidates through `VerifyBatch`,
//! one results row each; run again, it resumes.

use std::path::PathBuf;

use clap::Args;

use super::progress::Progress;
use super::{Failure, fail};
use crate::client::{BatchJob, Connection};
use crate::pb;

#[derive(Debug, Args)]
pub(super) struct VerifyBatch {
    /// Candidates: a header with request_id and id_number, and any of
    /// full_name, date_of_birth (YYYY[-MM[-DD]]), gender, old_id_number.
    #[arg(long)]
    input: PathBuf,
    /// Results: request_id,verdict,reason,attestation_id,error_code,error_reason,error_detail.
    #[arg(long)]
    output: PathBuf,
    /// The server: http://… for the embedded default, https://… for mutual TLS.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// healthcare, examination, social_insurance or public_service.
    #[arg(long, default_value = "examination", value_parser = parse_purpose)]
    purpose: pb::Purpose,
    /// exact, folded or partial: the least strict name level that counts.
    #[arg(long, default_value = "exact", value_parser = parse_name_match)]
    name_match: pb::NameMatch,
    /// With https: the CA of the server's certificate (PEM).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// With https: the agency's client certificate (PEM).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// With https: the agency's key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the host of --server).
    #[arg(long)]
    tls_name: Option<String>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn parse_purpose(s: &str) -> Result<pb::Purpose, String> {
    pb::Purpose::from_str_name(&format!("PURPOSE_{}", s.to_uppercase()))
        .filter(|p| *p != pb::Purpose::Unspecified)
        .ok_or_else(|| "healthcare, examination, social_insurance or public_service".into())
}

fn parse_name_match(s: &str) -> Result<pb::NameMatch, String> {
    pb::NameMatch::from_str_name(&format!("NAME_MATCH_{}", s.to_uppercase()))
        .filter(|p| *p != pb::NameMatch::Unspecified)
        .ok_or_else(|| "exact, folded or partial".into())
}

pub(super) fn run(args: VerifyBatch) -> Result<(), Failure> {
    let connection = Connection {
        server: args.server,
        ca: args.ca,
        cert: args.cert,
        key: args.key,
        tls_name: args.tls_name,
    };
    let job = BatchJob {
        input: args.input,
        output: args.output,
        purpose: args.purpose,
        name_match: args.name_match,
    };
    let mut progress = Progress::new("candidates", !args.quiet);
    let mut report = |done: u64, total: u64, finished: bool| {
        let share = if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
        };
        progress.update(done, share, finished);
    };
    let s = super::block_on(async {
        let channel = crate::client::connect(&connection).await.map_err(fail)?;
        crate::client::verify_batch(channel, &job, &mut report)
            .await
            .map_err(fail)
    })?;
    eprintln!(
        "{} verified, {} not verified, {} errors ({} to retry: run again); {} done before; results in {}",
        s.verified,
        s.not_verified,
        s.errors,
        s.to_retry,
        s.skipped,
        job.output.display()
    );
    Ok(())
}
