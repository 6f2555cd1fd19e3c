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
    /// Retry, within this run, the candidates answered UNAVAILABLE,
    /// RESOURCE_EXHAUSTED or past a deadline, up to this many times, each
    /// after the wait the server asked for (its RetryInfo).
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// The longest wait a retry may take; a longer one (a daily quota used
    /// up) ends the run, to be run again later.
    #[arg(long, default_value_t = 600)]
    max_wait_seconds: u64,
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
    let max_wait = std::time::Duration::from_secs(args.max_wait_seconds);
    let s = super::block_on(async {
        let channel = crate::client::connect(&connection).await.map_err(fail)?;
        let mut attempt = 0;
        loop {
            let s = crate::client::verify_batch(channel.clone(), &job, &mut report)
                .await
                .map_err(fail)?;
            if s.to_retry == 0 || attempt == args.retries {
                return Ok(s);
            }
            // At least a second: a server that gave no RetryInfo is not
            // hammered.
            let wait = s
                .retry_after
                .unwrap_or_default()
                .max(std::time::Duration::from_secs(1));
            if wait > max_wait {
                eprintln!(
                    "{} to retry, but the server asks to wait {} s (over --max-wait-seconds)",
                    s.to_retry,
                    wait.as_secs()
                );
                return Ok(s);
            }
            attempt += 1;
            eprintln!(
                "{} to retry: retry {attempt} of {} in {:.1} s",
                s.to_retry,
                args.retries,
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
        }
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
