//! `vnid dev-certs`: a development CA, a server certificate and client
//! certificates for named agencies, so that an operator can try mutual TLS
//! in minutes. Not for production: the CA's key is written beside the
//! certificates it signed.
//!
//! A client certificate names its holder by a SAN URI, the only name the
//! server reads: `urn:vnid:agency:<id>` for an agency,
//! `urn:vnid:operator:<id>` for an operator (the subject CN repeats the id
//! for people reading the certificate).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::clock::{UnixSeconds, civil_from_days};
use crate::grpc::caller::{AGENCY_URI_PREFIX, OPERATOR_URI_PREFIX};

/// Who a client certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Agency(String),
    Operator(String),
}

impl Holder {
    pub fn id(&self) -> &str {
        match self {
            Self::Agency(id) | Self::Operator(id) => id,
        }
    }

    fn uri(&self) -> String {
        match self {
            Self::Agency(id) => format!("{AGENCY_URI_PREFIX}{id}"),
            Self::Operator(id) => format!("{OPERATOR_URI_PREFIX}{id}"),
        }
    }
}

/// Names that would overwrite the CA's or the server's own files.
const RESERVED: [&str; 2] = ["ca", "server"];

#[derive(Debug, thiserror::Error)]
pub enum DevCertsError {
    #[error("cannot make the certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0:?} is not an agency id (letters, digits, '.', '_' and '-')")]
    BadAgency(String),
    #[error("{0:?} is reserved for the CA's and the server's own files")]
    Reserved(String),
    #[error("{0:?} is named twice (an id is an agency or an operator, never both)")]
    Twice(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its serial number, for a revocation list.
    pub serial: Vec<u8>,
}

/// When a certificate is valid, in whole days (UTC midnights).
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: UnixSeconds,
    pub not_after: UnixSeconds,
}

impl Validity {
    /// From yesterday for `days` days.
    pub fn days_from(now: UnixSeconds, days: i64) -> Self {
        Self {
            not_before: now - 86_400,
            not_after: now + days * 86_400,
        }
    }

    fn apply(self, params: &mut CertificateParams) {
        let date = |t: UnixSeconds| {
            let (y, m, d) = civil_from_days(t.div_euclid(86_400));
            rcgen::date_time_ymd(i32::try_from(y).unwrap_or(9999), m as u8, d as u8)
        };
        params.not_before = date(self.not_before);
        params.not_after = date(self.not_after);
    }
}

/// A development certificate authority.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    pem: Pem,
}

impl DevCa {
    pub fn new(name: &str, validity: Validity) -> Result<Self, DevCertsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity.apply(&mut params);
        let cert = params.self_signed(&key)?;
        let pem = Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
            serial: Vec::new(),
        };
        Ok(Self {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    pub fn pem(&self) -> &Pem {
        &self.pem
    }

    /// The server's certificate, for these DNS names.
    pub fn server(&self, names: &[&str], validity: Validity) -> Result<Pem, DevCertsError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, "vnid");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, validity)
    }

    /// A client certificate for an agency or an operator.
    pub fn client(&self, holder: &Holder, validity: Validity) -> Result<Pem, DevCertsError> {
        let mut params = client_params(holder.id())?;
        params.subject_alt_names = vec![SanType::URI(holder.uri().try_into()?)];
        self.sign(params, validity)
    }

    /// A client certificate that names `cn` in its subject only: the
    /// server refuses it (for trying that it does).
    pub fn cn_only(&self, cn: &str, validity: Validity) -> Result<Pem, DevCertsError> {
        self.sign(client_params(cn)?, validity)
    }

    /// A revocation list (PEM) of this CA that takes back `revoked`,
    /// valid from yesterday for `days` days.
    pub fn revocation_list(
        &self,
        revoked: &[&Pem],
        now: UnixSeconds,
        days: i64,
    ) -> Result<String, DevCertsError> {
        let validity = Validity::days_from(now, days);
        let date = |t: UnixSeconds| {
            let (y, m, d) = civil_from_days(t.div_euclid(86_400));
            rcgen::date_time_ymd(i32::try_from(y).unwrap_or(9999), m as u8, d as u8)
        };
        let params = rcgen::CertificateRevocationListParams {
            this_update: date(validity.not_before),
            next_update: date(validity.not_after),
            crl_number: rcgen::SerialNumber::from(u64::try_from(now).unwrap_or(1)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|pem| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(&pem.serial),
                    revocation_time: date(validity.not_before),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        validity: Validity,
    ) -> Result<Pem, DevCertsError> {
        validity.apply(&mut params);
        // A positive serial of 16 random bytes, known to the caller.
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(|_| rcgen::Error::RingUnspecified)?;
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
            serial: serial.to_vec(),
        })
    }
}

fn client_params(id: &str) -> Result<CertificateParams, DevCertsError> {
    let valid = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(DevCertsError::BadAgency(id.to_owned()));
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, id);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// Writes `ca.pem`/`ca.key`, `server.pem`/`server.key` (for `localhost`
/// and `names`) and `<id>.pem`/`<id>.key` for each holder into `dir`;
/// keys are readable by their owner only, whatever was there before, and
/// each file is written whole, never through a symlink. Returns the files
/// written.
pub fn write(
    dir: &Path,
    names: &[&str],
    holders: &[Holder],
    now: UnixSeconds,
) -> Result<Vec<PathBuf>, DevCertsError> {
    let mut ids = std::collections::HashSet::new();
    for holder in holders {
        let id = holder.id();
        if RESERVED.contains(&id) {
            return Err(DevCertsError::Reserved(id.to_owned()));
        }
        if !ids.insert(id) {
            return Err(DevCertsError::Twice(id.to_owned()));
        }
    }
    let validity = Validity::days_from(now, 365);
    let ca = DevCa::new("vnid dev agency CA", validity)?;
    let mut server_names = vec!["localhost"];
    server_names.extend(names.iter().copied().filter(|n| *n != "localhost"));
    let mut files = vec![("ca", ca.pem().clone())];
    files.push(("server", ca.server(&server_names, validity)?));
    for holder in holders {
        files.push((holder.id(), ca.client(holder, validity)?));
    }
    std::fs::create_dir_all(dir).map_err(|source| DevCertsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    for (name, pem) in files {
        for (ext, text, mode) in [("pem", &pem.cert, 0o644), ("key", &pem.key, 0o600)] {
            let path = dir.join(format!("{name}.{ext}"));
            write_file(&path, text.as_bytes(), mode)?;
            written.push(path);
        }
    }
    Ok(written)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DevCertsError> {
    crate::files::replace(path, bytes, mode).map_err(|source| DevCertsError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_repeated_names_are_refused() {
        let dir = std::env::temp_dir().join(format!("vnid-devcerts-{}", std::process::id()));
        for name in RESERVED {
            let holders = [Holder::Agency(name.into())];
            assert!(matches!(
                write(&dir, &[], &holders, 1_795_737_600),
                Err(DevCertsError::Reserved(_))
            ));
        }
        let both = [Holder::Agency("x".into()), Holder::Operator("x".into())];
        assert!(matches!(
            write(&dir, &[], &both, 1_795_737_600),
            Err(DevCertsError::Twice(_))
        ));
        assert!(!dir.exists(), "nothing is written for a refused call");
    }
}
