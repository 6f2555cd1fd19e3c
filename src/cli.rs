//! The `vnid` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{Application, create_secret_file_once};
use crate::attest::{Jwks, generate_key_pem};
use crate::clock::{Clock, SystemClock};
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
    /// Generates an Ed25519 signing key (PKCS#8 PEM, mode 0600) and prints its kid.
    Keygen {
        #[arg(long)]
        out: PathBuf,
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

impl Cli {
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Serve {
                config,
                data_dir,
                listen,
            } => serve(config, data_dir, listen),
            Command::Keygen { out } => keygen(&out),
            Command::VerifyAttestation { jwks, token } => verify_attestation(&jwks, &token),
        }
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("vnid: {message}");
    ExitCode::FAILURE
}

fn serve(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
) -> ExitCode {
    let mut settings = match Settings::load(config.as_deref(), std::env::vars()) {
        Ok(settings) => settings,
        Err(e) => return fail(e),
    };
    if let Some(dir) = data_dir {
        settings.data_dir = dir;
    }
    if let Some(listen) = listen {
        settings.listen = listen;
    }
    if let Err(e) = crate::telemetry::init(&settings.log, std::io::stdout) {
        return fail(e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(e),
    };
    let result = runtime.block_on(async {
        let app = Application::build(&settings).await?;
        if let Ok(addr) = app.local_addr() {
            eprintln!("vnid listening on {addr} (plaintext gRPC)");
        }
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

fn keygen(out: &std::path::Path) -> ExitCode {
    if out.exists() {
        return fail(format!(
            "{} exists; refusing to overwrite a key",
            out.display()
        ));
    }
    let mut pem = None;
    let created = create_secret_file_once(out, || {
        let key = generate_key_pem()?;
        pem = Some(key.clone());
        Ok(key.as_bytes().to_vec())
    });
    if let Err(e) = created {
        return fail(e);
    }
    let Some(pem) = pem else {
        return fail(format!(
            "{} appeared while writing; not overwritten",
            out.display()
        ));
    };
    match crate::attest::Keyring::from_pem(&pem) {
        Ok(ring) => {
            println!("{}", ring.signing_kid());
            ExitCode::SUCCESS
        }
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
