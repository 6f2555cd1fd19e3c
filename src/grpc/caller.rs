//! Who is calling, and as what. With mutual TLS, a caller is the registry
//! entry its client certificate names (SAN URI `urn:vnid:agency:<id>`, or
//! else the subject CN); the handshake has already refused certificates
//! that are missing, expired, not yet valid or not issued by the agency CA.
//! On the plaintext loopback listener, every caller acts as the configured
//! plaintext agency (verification service) or operator (audit service).

use std::sync::{Arc, RwLock};

use tonic::Request;
use tracing::Span;

use x509_cert::der::Decode;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::devcerts::AGENCY_URI_PREFIX;
use crate::grpc::error::ApiError;
use crate::policy::{Agency, Denial, Registry};

/// Who may call, and as whom plaintext callers act: replaced whole when
/// the registry is reloaded.
pub struct Identities {
    /// Who may ask what.
    pub registry: Registry,
    /// The agency plaintext callers act as.
    pub plaintext_agency: String,
    /// The operator plaintext callers act as on the audit service; empty:
    /// nobody.
    pub plaintext_operator: String,
}

pub struct Callers {
    current: RwLock<Arc<Identities>>,
    /// Callers are known by their certificates; none is plaintext. Fixed
    /// for the listener's life.
    tls: bool,
}

impl Callers {
    pub fn new(identities: Identities, tls: bool) -> Self {
        Self {
            current: RwLock::new(Arc::new(identities)),
            tls,
        }
    }

    /// Takes a new registry for every call from now on; calls under way
    /// finish with the one they started with. Connections stay up.
    pub fn replace(&self, identities: Identities) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(identities);
    }

    fn current(&self) -> Arc<Identities> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The agency making a verification call.
    pub fn agency<T>(&self, request: &Request<T>) -> Result<Arc<Agency>, ApiError> {
        let current = self.current();
        match self.certified(request)? {
            Some(id) => registered(&current, &id),
            None => registered(&current, &current.plaintext_agency),
        }
    }

    /// The operator making an audit-service call.
    pub fn operator<T>(&self, request: &Request<T>) -> Result<Arc<Agency>, ApiError> {
        let current = self.current();
        if let Some(id) = self.certified(request)? {
            return registered(&current, &id);
        }
        if current.plaintext_operator.is_empty() {
            return Err(ApiError::PermissionDenied(Denial::NotAnOperator));
        }
        registered(&current, &current.plaintext_operator)
    }

    /// The id the caller's client certificate names; `None` on plaintext.
    fn certified<T>(&self, request: &Request<T>) -> Result<Option<String>, ApiError> {
        if !self.tls {
            return Ok(None);
        }
        let certs = request.peer_certs().ok_or(ApiError::Unauthenticated)?;
        certs
            .first()
            .and_then(|cert| agency_id_of(cert.as_ref()))
            .map(Some)
            .ok_or(ApiError::Unauthenticated)
    }

    /// The display name of a registered id (empty if it is no longer
    /// registered).
    pub fn name_of(&self, id: &str) -> String {
        self.current()
            .registry
            .agency(id)
            .map(|a| a.name.clone())
            .unwrap_or_default()
    }
}

fn registered(identities: &Identities, id: &str) -> Result<Arc<Agency>, ApiError> {
    let caller = identities
        .registry
        .agency(id)
        .map_err(ApiError::PermissionDenied)?;
    Span::current().record("agency", caller.id.as_str());
    Ok(caller.clone())
}

/// The agency a client certificate (DER) names: its SAN URI
/// `urn:vnid:agency:<id>`, or else its subject CN.
pub fn agency_id_of(der: &[u8]) -> Option<String> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = cert.tbs_certificate();
    if let Ok(Some((_, san))) = tbs.get_extension::<SubjectAltName>() {
        let named = san.0.iter().find_map(|name| match name {
            GeneralName::UniformResourceIdentifier(uri) => {
                let uri: &str = uri.as_ref();
                uri.strip_prefix(AGENCY_URI_PREFIX).map(str::to_owned)
            }
            _ => None,
        });
        if named.is_some() {
            return named.filter(|id| !id.is_empty());
        }
    }
    let cn = tbs.subject().common_name().ok()??;
    Some(cn.value().into_owned()).filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devcerts::{DevCa, Validity};

    #[test]
    fn the_san_uri_names_the_agency_and_the_cn_stands_in() {
        let validity = Validity::days_from(1_795_737_600, 30);
        let ca = DevCa::new("test CA", validity).unwrap();
        let with_uri = ca.client("bv-tien-giang", validity, true).unwrap();
        assert_eq!(
            agency_id_of(&with_uri.der).as_deref(),
            Some("bv-tien-giang")
        );
        let cn_only = ca.client("exam-board", validity, false).unwrap();
        assert_eq!(agency_id_of(&cn_only.der).as_deref(), Some("exam-board"));
        let server = ca.server(&["localhost"], validity).unwrap();
        assert_eq!(agency_id_of(&server.der).as_deref(), Some("vnid"));
        assert_eq!(agency_id_of(b"not a certificate"), None);
        assert!(ca.client("a b", validity, true).is_err());
    }
}
