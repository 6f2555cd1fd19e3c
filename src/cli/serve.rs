//! `vnid serve`: the gRPC server, until SIGTERM or SIGINT.

use std::net::SocketAddr;

use clap::Args;

use super::{Failure, Place, block_on, fail};
use crate::app::{Application, reload_on_hangup, shutdown_signal};

#[derive(Debug, Args)]
pub(super) struct Serve {
    #[command(flatten)]
    place: Place,
    /// The listen address, e.g. 127.0.0.1:50051.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The admin endpoint's address (health, readiness, JWKS), e.g.
    /// 127.0.0.1:9464; empty for none.
    #[arg(long)]
    admin_listen: Option<String>,
}

pub(super) fn run(args: Serve) -> Result<(), Failure> {
    let mut settings = args.place.settings()?;
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        settings.admin_listen = admin;
    }
    block_on(async {
        // In the runtime: the trace exporter runs on it.
        let traces = crate::telemetry::init(&settings.log, &settings.telemetry, std::io::stdout)
            .map_err(fail)?;
        let served = serve(settings, args.place).await;
        traces.shutdown().await;
        served
    })
}

async fn serve(settings: crate::config::Settings, place: Place) -> Result<(), Failure> {
    let app = Application::build(&settings).await.map_err(fail)?;
    greet(&app, &settings).await;
    tokio::spawn(reload_on_hangup(app.reloader(), move || place.settings()));
    app.run_until_stopped(shutdown_signal()).await.map_err(|e| {
        tracing::error!(error = %e, "server stopped");
        fail(e)
    })
}

/// Says where the server listens, and with the embedded demo mirror whom
/// to try. Standard error, not the log: the demo identities are
/// synthetic, but the log never carries anything that looks like a person.
async fn greet(app: &Application, settings: &crate::config::Settings) {
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
    if let Some(addr) = app.admin_addr() {
        eprintln!(
            "vnid admin endpoint on http://{addr} (/healthz, /readyz, /.well-known/jwks.json)"
        );
    }
    let demo = crate::startup::demo_identities(settings).await;
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
}
