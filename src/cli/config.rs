//! `vnid config check`: loads a configuration and checks it as `vnid
//! serve` would before opening a store — the file and environment parse,
//! the listeners obey their rules, the agency registry checks, the TLS
//! files and every configured key load — and changes nothing (no key is
//! generated, no store opened). For a ConfigMap before it is rolled out.

use clap::Subcommand;

use super::{Failure, Place, fail};
use crate::attest::{Keyring, SubjectKey};
use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub(super) enum ConfigCommand {
    /// Loads and checks a configuration; exits 1 with the reason if it
    /// would not serve.
    Check(Place),
}

pub(super) fn run(command: ConfigCommand) -> Result<(), Failure> {
    match command {
        ConfigCommand::Check(place) => {
            let settings = place.settings()?;
            let summary = check(&settings).map_err(fail)?;
            println!("configuration OK: {summary}");
            Ok(())
        }
    }
}

/// What `settings` would serve, or why it would not.
fn check(settings: &Settings) -> Result<String, String> {
    let error = |e: &dyn std::fmt::Display| e.to_string();
    if settings.tls.is_none() && !settings.listen.ip().is_loopback() {
        return Err(format!(
            "listen {} is not a loopback address, and a non-loopback listener requires TLS",
            settings.listen
        ));
    }
    let admin = crate::admin::listen_address(&settings.admin_listen, settings.admin_allow_remote)
        .map_err(|e| error(&e))?;
    crate::startup::identities(settings).map_err(|e| error(&e))?;
    let traces = settings.telemetry.endpoint()?;
    if let Some(tls) = &settings.tls {
        crate::grpc::tls::ServerTls::load(tls).map_err(|e| error(&e))?;
    }
    let (a, audit) = (&settings.attestation, &settings.audit);
    let mut generated = Vec::new();
    match &a.signing_key_file {
        Some(path) => {
            let mut keys = Keyring::load(path, &a.published_key_files).map_err(|e| error(&e))?;
            if let Some(es256) = &a.es256_key_file {
                keys = keys.with_es256_file(es256).map_err(|e| error(&e))?;
            }
            crate::startup::keys_serve_the_registry(&keys, &settings.agencies())
                .map_err(|e| error(&e))?;
            if let Some(checkpoints) = &audit.checkpoint_key_file {
                let checkpoints = Keyring::load(checkpoints, &audit.published_checkpoint_key_files)
                    .map_err(|e| error(&e))?;
                if checkpoints.signing_kid() == keys.signing_kid() {
                    return Err(
                        "audit.checkpoint_key_file is the attestation signing key: it needs a \
                         key of its own"
                            .into(),
                    );
                }
            }
        }
        None => {
            generated.push("the attestation signing key");
            match &a.es256_key_file {
                Some(path) => {
                    let pem = std::fs::read_to_string(path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    crate::attest::Es256Signing::from_pkcs8_pem(&pem).ok_or_else(|| {
                        error(&crate::attest::KeyError::ParseEs256 { path: path.clone() })
                    })?;
                }
                None => generated.push("the ES256 key"),
            }
        }
    }
    match &audit.checkpoint_key_file {
        Some(path) => {
            Keyring::load(path, &audit.published_checkpoint_key_files).map_err(|e| error(&e))?;
        }
        None => generated.push("the audit checkpoint key"),
    }
    match &a.subject_key_file {
        Some(path) => {
            SubjectKey::load(path).map_err(|e| error(&e))?;
        }
        None => generated.push("the subject key"),
    }
    if settings.cache.enabled {
        match &settings.cache.key_file {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                SubjectKey::new(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            None => generated.push("the cache key"),
        }
    }
    let mut summary = format!(
        "listen {} ({}), admin {}, {} agencies, mirror {}, cache {}",
        settings.listen,
        if settings.tls.is_some() {
            "mutual TLS"
        } else {
            "plaintext"
        },
        admin.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        settings.agencies().len(),
        if settings.database_url.is_some() {
            "Postgres"
        } else {
            "embedded"
        },
        match (settings.cache.enabled, settings.redis_url.is_some()) {
            (false, _) => "off",
            (true, true) => "Redis",
            (true, false) => "in-process",
        },
    );
    if let Some(collector) = traces {
        summary.push_str(&format!(", traces to {collector}"));
    }
    if !generated.is_empty() {
        summary.push_str(&format!(
            "; not configured, so generated under {} at first start: {}",
            settings.data_dir.display(),
            generated.join(", ")
        ));
    }
    Ok(summary)
}
