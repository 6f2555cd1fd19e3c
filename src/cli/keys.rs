//! The keys and certificates: `vnid keygen` (an attestation signing key),
//! `vnid keys list` (each key and when it signed), `vnid
//! verify-attestation` (a token against a JWKS), `vnid dev-certs` (a
//! development CA for trying mutual TLS).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Failure, Place, block_on, fail};
use crate::attest::{Jwks, Keyring, generate_key_pem};
use crate::clock::{Clock, SystemClock, format_rfc3339};
use crate::devcerts::Holder;
use crate::startup::{ExistingKeys, create_secret_file_once, existing_audit_store};

#[derive(Debug, Args)]
pub(super) struct Keygen {
    #[arg(long)]
    out: PathBuf,
}

pub(super) fn keygen(args: Keygen) -> Result<(), Failure> {
    let pem = generate_key_pem().map_err(fail)?;
    let kid = Keyring::from_pem(&pem).map_err(fail)?.signing_kid();
    if !create_secret_file_once(&args.out, || Ok(pem.as_bytes().to_vec())).map_err(fail)? {
        return Err(fail(format!(
            "{} exists; refusing to overwrite a key",
            args.out.display()
        )));
    }
    println!("{kid}");
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct VerifyAttestation {
    /// The JWKS document (as GetSigningKeys returns it).
    #[arg(long)]
    jwks: PathBuf,
    /// The compact JWS.
    token: String,
}

pub(super) fn verify_attestation(args: VerifyAttestation) -> Result<(), Failure> {
    let jwks = std::fs::read_to_string(&args.jwks)
        .map_err(|e| e.to_string())
        .and_then(|text| Jwks::parse(&text).map_err(|e| e.to_string()))
        .map_err(|e| fail(format!("cannot read the JWKS: {e}")))?;
    let claims = jwks
        .verify(args.token.trim(), SystemClock.now())
        .map_err(|e| fail(format!("attestation rejected: {e}")))?;
    println!("{}", serde_json::to_string_pretty(&claims).map_err(fail)?);
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct DevCerts {
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
}

pub(super) fn dev_certs(args: DevCerts) -> Result<(), Failure> {
    let holders: Vec<Holder> = if args.agencies.is_empty() && args.operators.is_empty() {
        vec![
            Holder::Agency("demo".into()),
            Holder::Operator("operator".into()),
        ]
    } else {
        let agencies = args.agencies.into_iter().map(Holder::Agency);
        agencies
            .chain(args.operators.into_iter().map(Holder::Operator))
            .collect()
    };
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let files =
        crate::devcerts::write(&args.out, &names, &holders, SystemClock.now()).map_err(fail)?;
    for file in files {
        println!("{}", file.display());
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
    /// Each attestation key: its kid, its algorithm, whether it signs or is
    /// only published, and the time of its first and last attestation in
    /// the audit trail, so that an operator knows when an old key may leave
    /// the JWKS (once no attestation it signed is still needed). Keys that
    /// signed rows of the trail but are no longer configured are listed
    /// too. Reads every row of the trail once.
    List(ListKeys),
}

pub(super) fn run(command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::List(args) => list(args),
    }
}

#[derive(Debug, Args)]
pub(super) struct ListKeys {
    #[command(flatten)]
    place: Place,
}

fn list(args: ListKeys) -> Result<(), Failure> {
    let settings = args.place.settings()?;
    let uses = block_on(async {
        let store = existing_audit_store(&settings).await.map_err(fail)?;
        store.key_uses().await.map_err(fail)
    })?;
    let keys = ExistingKeys::read(&settings).map_err(fail)?;
    // Every kid the configuration publishes (signing keys first), then any
    // the trail holds that it does not.
    let mut listed: Vec<(String, String, &str)> = keys
        .attestations
        .algs()
        .into_iter()
        .map(|(kid, alg)| {
            let signs = keys.attestation_signers.contains(&kid);
            let status = if signs { "signing" } else { "published" };
            (kid, alg.to_owned(), status)
        })
        .collect();
    let mut used = std::collections::HashMap::new();
    for key_use in &uses {
        let Some((kid, alg)) = header_key(&key_use.header) else {
            continue;
        };
        if !listed.iter().any(|(k, _, _)| *k == kid) {
            listed.push((kid.clone(), alg, "NOT published"));
        }
        used.insert(kid, key_use);
    }
    println!(
        "{:<43}  {:<6}  {:<13}  {:<20}  {:<20}  ROWS",
        "KID", "ALG", "STATUS", "FIRST ATTESTATION", "LAST ATTESTATION"
    );
    for (kid, alg, status) in listed {
        let (first, last, rows) = used.get(&kid).map_or_else(
            || ("-".to_owned(), "-".to_owned(), 0),
            |u| {
                (
                    format_rfc3339(u.first_us.div_euclid(1_000_000)),
                    format_rfc3339(u.last_us.div_euclid(1_000_000)),
                    u.rows,
                )
            },
        );
        println!("{kid:<43}  {alg:<6}  {status:<13}  {first:<20}  {last:<20}  {rows}");
    }
    Ok(())
}

/// The kid and algorithm a JWS header (its JSON) names.
fn header_key(header: &[u8]) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Header {
        alg: String,
        kid: String,
    }
    let header: Header = serde_json::from_slice(header).ok()?;
    Some((header.kid, header.alg))
}
