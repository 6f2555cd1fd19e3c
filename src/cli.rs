//! The `vnid` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{Application, create_secret_file_once};
use crate::attest::{Jwks, generate_key_pem};
use std::io::Write;
use std::sync::Arc;

use crate::client::{BatchJob, Connection};
use crate::clock::{Clock, SystemClock, parse_rfc3339};
use crate::config::Settings;
use crate::mirror::LoadMode;
use crate::mirror::export::{ExportWriter, Format};
use crate::mirror::generate::{DEFAULT_AS_OF, GenOptions, Generator};
use crate::mirror::import::{ImportOptions, StderrObserver};

#[derive(Debug, Parser)]
#[command(
    name = "vnid",
    version,
    about = "Verifies Vietnamese personal identification numbers"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the gRPC server.
    Serve {
        /// A TOML configuration file (environment overrides: VNID__KEY, VNID__SECTION__KEY).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where generated state lives (default ./vnid-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The listen address, e.g. 127.0.0.1:50051.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Loads the configured mirror (the embedded one by default) from export files.
    Import {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
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
    },
    /// Writes a deterministic synthetic population in the export format.
    GenPopulation {
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
    },
    /// Generates an Ed25519 signing key (PKCS#8 PEM, mode 0600) and prints its kid.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes a development CA, a server certificate and agency client
    /// certificates (PEM; keys mode 0600) for trying mutual TLS.
    DevCerts {
        #[arg(long)]
        out: PathBuf,
        /// An agency id to issue a client certificate for
        /// (`urn:vnid:agency:<id>`); repeat for several.
        #[arg(long = "agency")]
        agencies: Vec<String>,
        /// An operator id to issue a client certificate for
        /// (`urn:vnid:operator:<id>`); repeat for several. With neither
        /// flag: agency `demo` and operator `operator`.
        #[arg(long = "operator")]
        operators: Vec<String>,
        /// More DNS names for the server certificate (localhost is always in).
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// The audit trail: verify it, or prune rows past their retention.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Checks a CSV file of candidates through VerifyBatch and writes one
    /// results row per candidate; run it again to resume after an
    /// interruption.
    VerifyBatch {
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
        purpose: crate::pb::Purpose,
        /// exact, folded or partial: the least strict name level that counts.
        #[arg(long, default_value = "exact", value_parser = parse_name_match)]
        name_match: crate::pb::NameMatch,
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
    },
    /// Verifies an attestation against a JWKS file and prints its claims.
    VerifyAttestation {
        /// The JWKS document (as GetSigningKeys returns it).
        #[arg(long)]
        jwks: PathBuf,
        /// The compact JWS.
        token: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recomputes the hash chain and checks every signed checkpoint and
    /// attestation; names the first row changed, removed, moved or cut off.
    /// Exit status 0: verified; 1: tampering found; 2: could not check.
    Verify {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Removes rows older than the retention period (audit.retention_days),
    /// leaving a signed cut checkpoint so that the rest still verifies.
    Prune {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Overrides audit.retention_days.
        #[arg(long)]
        older_than_days: Option<u32>,
    },
}

impl Cli {
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Serve {
                config,
                data_dir,
                listen,
            } => serve(config, data_dir, listen),
            Command::Import {
                config,
                data_dir,
                delta,
                max_errors,
                reject_file,
                files,
            } => {
                let mode = if delta {
                    LoadMode::Delta
                } else {
                    LoadMode::Full
                };
                let options = ImportOptions {
                    files,
                    mode,
                    max_errors,
                    reject_file,
                };
                import(config, data_dir, options)
            }
            Command::GenPopulation {
                count,
                province,
                seed,
                out,
                as_of,
            } => gen_population(count, &province, seed, &out, as_of.as_deref()),
            Command::Keygen { out } => keygen(&out),
            Command::VerifyAttestation { jwks, token } => verify_attestation(&jwks, &token),
            Command::VerifyBatch {
                input,
                output,
                server,
                purpose,
                name_match,
                ca,
                cert,
                key,
                tls_name,
                quiet,
            } => verify_batch(
                Connection {
                    server,
                    ca,
                    cert,
                    key,
                    tls_name,
                },
                BatchJob {
                    input,
                    output,
                    purpose,
                    name_match,
                    progress: !quiet,
                },
            ),
            Command::DevCerts {
                out,
                agencies,
                operators,
                names,
            } => dev_certs(&out, agencies, operators, &names),
            Command::Audit {
                command: AuditCommand::Verify { config, data_dir },
            } => audit_verify(config, data_dir),
            Command::Audit {
                command:
                    AuditCommand::Prune {
                        config,
                        data_dir,
                        older_than_days,
                    },
            } => audit_prune(config, data_dir, older_than_days),
        }
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("vnid: {message}");
    ExitCode::FAILURE
}

fn settings(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<Settings, ExitCode> {
    let mut settings = Settings::load(config.as_deref(), std::env::vars()).map_err(fail)?;
    if let Some(dir) = data_dir {
        settings.data_dir = dir;
    }
    Ok(settings)
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(fail)
}

fn serve(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
) -> ExitCode {
    let mut settings = match settings(config.clone(), data_dir) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    if let Some(listen) = listen {
        settings.listen = listen;
    }
    if let Err(e) = crate::telemetry::init(&settings.log, std::io::stdout) {
        return fail(e);
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let app = Application::build(&settings).await?;
        // Standard error, not the log: the demo identities are synthetic,
        // but the log never carries anything that looks like a person.
        if let Ok(addr) = app.local_addr() {
            if settings.tls.is_some() {
                eprintln!(
                    "vnid listening on {addr} (mutual TLS; callers are known by their certificates)"
                );
            } else {
                eprintln!(
                    "vnid listening on {addr} (plaintext gRPC; every caller is agency {:?})",
                    settings.plaintext_agency
                );
            }
        }
        let demo = crate::app::demo_identities(&settings).await;
        if !demo.is_empty() {
            eprintln!(
                "embedded demo mirror in {}; people to try:",
                settings.data_dir.display()
            );
            for p in demo {
                eprintln!(
                    "  id_number {}  full_name {:?}  date_of_birth {}",
                    p.id_number.expose(),
                    p.full_name,
                    p.date_of_birth.to_iso()
                );
            }
        }
        tokio::spawn(reload_on_hangup(app.reloader(), config));
        app.run_until_stopped(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server stopped");
            fail(e)
        }
    }
}

/// On SIGHUP, reads the configuration again and takes its agency registry
/// (and plaintext identities) for every call from then on, and its TLS
/// files (CRLs included) for every handshake; connections stay up. A
/// configuration that does not load or check keeps the old one.
async fn reload_on_hangup(reloader: crate::app::Reloader, config: Option<PathBuf>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; the registry cannot be reloaded");
        return;
    };
    while hangup.recv().await.is_some() {
        let reloaded = Settings::load(config.as_deref(), std::env::vars())
            .map_err(|e| e.to_string())
            .and_then(|s| reloader.reload(&s).map_err(|e| e.to_string()));
        match reloaded {
            Ok(()) => tracing::info!("agency registry and TLS files reloaded"),
            Err(error) => {
                tracing::error!(%error, "agency registry NOT reloaded; the previous one stays")
            }
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn import(config: Option<PathBuf>, data_dir: Option<PathBuf>, options: ImportOptions) -> ExitCode {
    let settings = match settings(config, data_dir) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let mode = options.mode;
    let result = runtime.block_on(async {
        let mirror = crate::app::open_mirror(&settings, crate::app::Seed::Nothing)
            .await
            .map_err(|e| e.to_string())?;
        crate::mirror::import::run(
            mirror.as_ref(),
            options,
            Arc::new(StderrObserver::default()),
        )
        .await
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(report) if report.already_imported => {
            eprintln!("vnid import: these files were imported before; nothing to do");
            ExitCode::SUCCESS
        }
        Ok(report) => {
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
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("import failed: {e}")),
    }
}

fn gen_population(
    count: u64,
    province: &str,
    seed: u64,
    out: &std::path::Path,
    as_of: Option<&str>,
) -> ExitCode {
    let Some(province) = province
        .parse::<u16>()
        .ok()
        .filter(|p| (1..=999).contains(p))
    else {
        return fail("--province takes a 3-digit registration code such as 082");
    };
    if province < 100 && crate::domain::province_name(province).is_none() {
        return fail(format!("{province:03} is not a province code"));
    }
    let as_of = match as_of {
        None => DEFAULT_AS_OF,
        Some(text) => match parse_rfc3339(text) {
            Some(t) => t,
            None => return fail("--as-of takes an RFC 3339 timestamp"),
        },
    };
    let written = (|| -> std::io::Result<()> {
        let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
        let mut writer = ExportWriter::new(Format::of(out), file)?;
        for record in Generator::new(GenOptions {
            count,
            province,
            seed,
            as_of,
        }) {
            writer.write(&record)?;
        }
        writer.finish()?.flush()
    })();
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("cannot write {}: {e}", out.display())),
    }
}

fn keygen(out: &std::path::Path) -> ExitCode {
    let key = generate_key_pem()
        .and_then(|pem| Ok((crate::attest::Keyring::from_pem(&pem)?.signing_kid(), pem)));
    let (kid, pem) = match key {
        Ok(key) => key,
        Err(e) => return fail(e),
    };
    match create_secret_file_once(out, || Ok(pem.as_bytes().to_vec())) {
        Ok(true) => {
            println!("{kid}");
            ExitCode::SUCCESS
        }
        Ok(false) => fail(format!(
            "{} exists; refusing to overwrite a key",
            out.display()
        )),
        Err(e) => fail(e),
    }
}

fn verify_attestation(jwks: &std::path::Path, token: &str) -> ExitCode {
    let jwks = match std::fs::read_to_string(jwks)
        .map_err(|e| e.to_string())
        .and_then(|text| Jwks::parse(&text).map_err(|e| e.to_string()))
    {
        Ok(jwks) => jwks,
        Err(e) => return fail(format!("cannot read the JWKS: {e}")),
    };
    match jwks.verify(token.trim(), SystemClock.now()) {
        Ok(claims) => match serde_json::to_string_pretty(&claims) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Err(e) => fail(format!("attestation rejected: {e}")),
    }
}

fn parse_purpose(s: &str) -> Result<crate::pb::Purpose, String> {
    crate::pb::Purpose::from_str_name(&format!("PURPOSE_{}", s.to_uppercase()))
        .filter(|p| *p != crate::pb::Purpose::Unspecified)
        .ok_or_else(|| "healthcare, examination, social_insurance or public_service".into())
}

fn parse_name_match(s: &str) -> Result<crate::pb::NameMatch, String> {
    crate::pb::NameMatch::from_str_name(&format!("NAME_MATCH_{}", s.to_uppercase()))
        .filter(|p| *p != crate::pb::NameMatch::Unspecified)
        .ok_or_else(|| "exact, folded or partial".into())
}

fn verify_batch(connection: Connection, job: BatchJob) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let channel = crate::client::connect(&connection).await?;
        crate::client::verify_batch(channel, &job).await
    });
    match result {
        Ok(s) => {
            eprintln!(
                "{} verified, {} not verified, {} errors ({} to retry: run again); {} done before; results in {}",
                s.verified,
                s.not_verified,
                s.errors,
                s.to_retry,
                s.skipped,
                job.output.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// The exit status of a check that could not be made (as `diff` uses it).
const CANNOT_CHECK: u8 = 2;

fn audit_verify(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> ExitCode {
    let settings = match settings(config, data_dir) {
        Ok(settings) => settings,
        Err(_) => return ExitCode::from(CANNOT_CHECK),
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(_) => return ExitCode::from(CANNOT_CHECK),
    };
    let result = runtime.block_on(async {
        let attester = crate::app::load_attester(&settings).map_err(|e| e.to_string())?;
        let jwks = Jwks::parse(attester.keyring.jwks_json()).map_err(|e| e.to_string())?;
        let store = crate::app::open_audit_store(&settings)
            .await
            .map_err(|e| e.to_string())?;
        store.verify(&jwks).await.map_err(|e| e.to_string())
    });
    match result {
        Ok(Ok(summary)) => {
            println!(
                "audit trail verified: {} rows (rows {} to {}), head {}, newest signed checkpoint: {}",
                summary.rows,
                summary.anchor + 1,
                summary.head.seq,
                <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(
                    &summary.head.hash
                ),
                summary
                    .checkpoint
                    .map_or_else(|| "none".to_owned(), |seq| format!("row {seq}")),
            );
            ExitCode::SUCCESS
        }
        Ok(Err(finding)) => {
            eprintln!("vnid: audit trail NOT verified: {finding}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("vnid: cannot verify the audit trail: {e}");
            ExitCode::from(CANNOT_CHECK)
        }
    }
}

fn audit_prune(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    older_than_days: Option<u32>,
) -> ExitCode {
    let settings = match settings(config, data_dir) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let days = older_than_days.unwrap_or(settings.audit.retention_days);
    let result = runtime.block_on(async {
        let attester = Arc::new(crate::app::load_attester(&settings).map_err(|e| e.to_string())?);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let before_us = clock
            .now_micros()
            .saturating_sub(i64::from(days) * 86_400 * 1_000_000);
        let checkpointer = crate::audit::Checkpointer::new(attester, clock);
        let store = crate::app::open_audit_store(&settings)
            .await
            .map_err(|e| e.to_string())?;
        store
            .prune(before_us, &|head| checkpointer.sign(head, true))
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(outcome) => {
            match outcome.cut {
                Some(cut) => eprintln!(
                    "vnid audit prune: removed {} rows older than {days} days; the trail now starts after row {cut}",
                    outcome.removed
                ),
                None => eprintln!("vnid audit prune: no row is older than {days} days"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("prune failed: {e}")),
    }
}

fn dev_certs(
    out: &std::path::Path,
    agencies: Vec<String>,
    operators: Vec<String>,
    names: &[String],
) -> ExitCode {
    use crate::devcerts::Holder;
    let holders: Vec<Holder> = if agencies.is_empty() && operators.is_empty() {
        vec![
            Holder::Agency("demo".into()),
            Holder::Operator("operator".into()),
        ]
    } else {
        let agencies = agencies.into_iter().map(Holder::Agency);
        agencies
            .chain(operators.into_iter().map(Holder::Operator))
            .collect()
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    match crate::devcerts::write(out, &names, &holders, SystemClock.now()) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
