//! The keys and certificates: `vnid keygen` (an attestation signing key),
//! `vnid verify-attestation` (a token against a JWKS), `vnid dev-certs`
//! (a development CA for trying mutual TLS).

use std::path::PathBuf;

use clap::Args;

use super::{Failure, fail};
use crate::attest::{Jwks, Keyring, generate_key_pem};
use crate::clock::{Clock, SystemClock};
use crate::devcerts::Holder;
use crate::startup::create_secret_file_once;

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
