//! `vnid dev-certs`: a development CA, a server certificate and client
//! certificates for named agencies, so that an operator can try mutual TLS
//! in minutes. Not for production: the CA's key is written beside the
//! certificates it signed.
//!
//! A client certificate names its agency twice: as a SAN URI
//! `urn:vnid:agency:<id>` (what the server reads first) and as the subject
//! CN (what it reads when there is no such URI).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::clock::{UnixSeconds, civil_from_days};

/// The SAN URI prefix that names an agency in its client certificate.
pub const AGENCY_URI_PREFIX: &str = "urn:vnid:agency:";

#[derive(Debug, thiserror::Error)]
pub enum DevCertsError {
    #[error("cannot make the certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0:?} is not an agency id (letters, digits, '.', '_' and '-')")]
    BadAgency(String),
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

    /// An agency's client certificate; `with_uri` adds the SAN URI (else
    /// only the CN names the agency).
    pub fn client(
        &self,
        agency: &str,
        validity: Validity,
        with_uri: bool,
    ) -> Result<Pem, DevCertsError> {
        let valid = !agency.is_empty()
            && agency
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(DevCertsError::BadAgency(agency.to_owned()));
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, agency);
        if with_uri {
            params.subject_alt_names = vec![SanType::URI(
                format!("{AGENCY_URI_PREFIX}{agency}").try_into()?,
            )];
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, validity)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        validity: Validity,
    ) -> Result<Pem, DevCertsError> {
        validity.apply(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }
}

/// Writes `ca.pem`/`ca.key`, `server.pem`/`server.key` (for `localhost`
/// and `names`) and `<agency>.pem`/`<agency>.key` for each agency into
/// `dir`; keys are readable by their owner only. Returns the files written.
pub fn write(
    dir: &Path,
    names: &[&str],
    agencies: &[&str],
    now: UnixSeconds,
) -> Result<Vec<PathBuf>, DevCertsError> {
    let validity = Validity::days_from(now, 365);
    let ca = DevCa::new("vnid dev agency CA", validity)?;
    let mut server_names = vec!["localhost"];
    server_names.extend(names.iter().copied().filter(|n| *n != "localhost"));
    let mut files = vec![("ca", ca.pem().clone())];
    files.push(("server", ca.server(&server_names, validity)?));
    for agency in agencies {
        files.push((agency, ca.client(agency, validity, true)?));
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
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| DevCertsError::Write {
            path: path.to_owned(),
            source,
        })
}
