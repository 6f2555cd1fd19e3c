//! The server's side of mutual TLS: its certificate, the agency CA every
//! client certificate must chain to, and the certificate revocation lists
//! that take a certificate back before it expires. Built by vnid (not by
//! tonic) so that the handshake has a deadline, and so that SIGHUP can
//! load new CRLs for every handshake from then on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSettings;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Content { path: PathBuf, what: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The configuration every new handshake uses; replaced whole on reload,
/// while connections already open keep the one they were made with.
pub struct ServerTls {
    current: RwLock<TlsAcceptor>,
}

impl ServerTls {
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        Ok(Self {
            current: RwLock::new(acceptor(settings)?),
        })
    }

    /// Reads the files again (certificate, key, CA, CRLs); on an error the
    /// configuration in force stays.
    pub fn reload(&self, settings: &TlsSettings) -> Result<(), TlsError> {
        let fresh = acceptor(settings)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certificates(&settings.client_ca_file)? {
        roots.add(ca).map_err(|e| TlsError::Content {
            path: settings.client_ca_file.clone(),
            what: e.to_string(),
        })?;
    }
    let mut crls = Vec::new();
    for path in &settings.crl_files {
        crls.extend(revocation_lists(path)?);
    }
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if !crls.is_empty() {
        // The agency CA's own list says which client certificates it took
        // back; a certificate from an issuer with no list here is refused.
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = verifier
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|e| TlsError::Content {
        path: settings.key_file.clone(),
        what: format!("no private key: {e}"),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(&settings.cert_file)?, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // gRPC needs HTTP/2; the JSON door also takes HTTP/1.1 (older .NET and
    // Java stacks, gateways).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pem_objects(path, &read(path)?, "certificate")
}

/// CRLs in PEM (one or more) or one DER list.
fn revocation_lists(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    if bytes.starts_with(b"-----") {
        pem_objects(path, &bytes, "revocation list")
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

/// Every PEM object of one kind in a file: at least one.
fn pem_objects<T: PemObject>(path: &Path, bytes: &[u8], what: &str) -> Result<Vec<T>, TlsError> {
    let content = |what: String| TlsError::Content {
        path: path.to_owned(),
        what,
    };
    let objects = T::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(e.to_string()))?;
    if objects.is_empty() {
        return Err(content(format!("holds no PEM {what}")));
    }
    Ok(objects)
}
