//! The `vnid` command line: one file per command group, one runtime, and
//! one mapping of a command's failure to its exit status.
//!
//! - [`serve`]: `vnid serve`.
//! - [`import`]: `vnid import`, `vnid gen-population`.
//! - [`audit`]: `vnid audit verify`, `vnid audit prune`, `vnid audit export`.
//! - [`keys`]: `vnid keygen`, `vnid keys list`, `vnid verify-attestation`,
//!   `vnid dev-certs`.
//! - [`verify_batch`]: `vnid verify-batch`.
//! - [`config`]: `vnid config check`.

mod audit;
mod config;
mod import;
mod keys;
mod progress;
mod serve;
mod verify_batch;

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Settings;

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
    Serve(serve::Serve),
    /// Loads the configured mirror (the embedded one by default) from export files.
    Import(import::Import),
    /// Writes a deterministic synthetic population in the export format.
    GenPopulation(import::GenPopulation),
    /// Generates an Ed25519 signing key (PKCS#8 PEM, mode 0600) and prints its kid.
    Keygen(keys::Keygen),
    /// The attestation keys: `vnid keys list`.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Writes a development CA, a server certificate and agency client
    /// certificates (PEM; keys mode 0600) for trying mutual TLS.
    DevCerts(keys::DevCerts),
    /// The audit trail: verify it, or prune rows past their retention.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Configuration: `vnid config check`.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Checks a CSV file of candidates through VerifyBatch and writes one
    /// results row per candidate; run it again to resume after an
    /// interruption.
    VerifyBatch(verify_batch::VerifyBatch),
    /// Verifies an attestation against a JWKS file and prints its claims.
    VerifyAttestation(keys::VerifyAttestation),
}

impl Cli {
    pub fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Serve(args) => serve::run(args),
            Command::Import(args) => import::run(args),
            Command::GenPopulation(args) => import::gen_population(args),
            Command::Keygen(args) => keys::keygen(args),
            Command::Keys { command } => keys::run(command),
            Command::DevCerts(args) => keys::dev_certs(args),
            Command::VerifyAttestation(args) => keys::verify_attestation(args),
            Command::Audit { command } => audit::run(command),
            Command::VerifyBatch(args) => verify_batch::run(args),
            Command::Config { command } => config::run(command),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => {
                eprintln!("vnid: {}", failure.message);
                ExitCode::from(failure.status)
            }
        }
    }
}

/// Why a command failed, and the exit status that says so.
#[derive(Debug)]
struct Failure {
    message: String,
    status: u8,
}

impl Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The status of most failures.
const FAILED: u8 = 1;

/// A command that could not do its work: exit status 1.
fn fail(message: impl Display) -> Failure {
    Failure {
        message: message.to_string(),
        status: FAILED,
    }
}

/// Where the configuration is, for the commands that open the stores.
#[derive(Debug, Args)]
struct Place {
    /// A TOML configuration file (environment overrides: VNID__KEY, VNID__SECTION__KEY).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where generated state lives (default ./vnid-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl Place {
    fn settings(&self) -> Result<Settings, Failure> {
        let mut settings =
            Settings::load(self.config.as_deref(), std::env::vars()).map_err(fail)?;
        if let Some(dir) = &self.data_dir {
            settings.data_dir = dir.clone();
        }
        Ok(settings)
    }
}

/// Runs `work` on the one multi-threaded runtime of a command.
fn block_on<T>(work: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(fail)?
        .block_on(work)
}
