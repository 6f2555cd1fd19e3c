//! Who is calling, and as what. With mutual TLS, a caller is the registry
//! entry its client certificate names by a SAN URI — `urn:vnid:agency:<id>`
//! for an agency, `urn:vnid:operator:<id>` for an operator — and nothing
//! else: the subject CN is never read, a certificate naming two entries (or
//! none) is refused, and a name is honoured only for the role its prefix
//! says, so one certificate can never act as both. An entry may also pin
//! the fingerprints of the certificates that may act as it. The handshake
//! has already refused certificates that are missing, expired, not yet
//! valid, revoked, or not issued by the agency CA. On the plaintext
//! loopback listener, every caller acts as the configured plaintext agency
//! (verification service) or operator (audit service).

use std::sync::{Arc, RwLock};

use tonic::Request;
use tracing::Span;

use x509_cert::der::Decode;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use sha2::{Digest, Sha256};

use crate::grpc::error::ApiError;
use crate::policy::{Agency, Denial, Registry, Role};

/// The SAN URI prefix that names an agency in its client certificate.
pub const AGENCY_URI_PREFIX: &str = "urn:vnid:agency:";
/// The SAN URI prefix that names an operator.
pub const OPERATOR_URI_PREFIX: &str = "urn:vnid:operator:";

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
            Some(cert) => certified_as(&current, &cert, Role::Agency),
            None => registered(&current, &current.plaintext_agency),
        }
    }

    /// The operator making an audit-service call.
    pub fn operator<T>(&self, request: &Request<T>) -> Result<Arc<Agency>, ApiError> {
        let current = self.current();
        if let Some(cert) = self.certified(request)? {
            return certified_as(&current, &cert, Role::Operator);
        }
        if current.plaintext_operator.is_empty() {
            return Err(ApiError::PermissionDenied(Denial::NotAnOperator));
        }
        registered(&current, &current.plaintext_operator)
    }

    /// The agency `id` as the registry in force has it now, for the
    /// items of a stream opened earlier: a caller the registry no longer
    /// lets check is refused.
    pub fn agency_now(&self, id: &str) -> Result<Arc<Agency>, Denial> {
        self.current().registry.agency(id).cloned()
    }

    /// Who the caller's client certificate names; `None` on plaintext.
    fn certified<T>(&self, request: &Request<T>) -> Result<Option<Certified>, ApiError> {
        if !self.tls {
            return Ok(None);
        }
        let certs = request.peer_certs().ok_or(ApiError::Unauthenticated)?;
        certs
            .first()
            .and_then(|cert| Certified::of(cert.as_ref()))
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

/// The registry entry a certificate names, if it has the role the
/// certificate's URI claims (and the role the call needs), and the
/// certificate is among its pins when it has any.
fn certified_as(
    identities: &Identities,
    cert: &Certified,
    needed: Role,
) -> Result<Arc<Agency>, ApiError> {
    let refused = match needed {
        Role::Agency => Denial::NotAnAgency,
        Role::Operator => Denial::NotAnOperator,
    };
    if cert.role != needed {
        return Err(ApiError::PermissionDenied(refused));
    }
    let caller = registered(identities, &cert.id)?;
    if caller.role != cert.role {
        return Err(ApiError::PermissionDenied(refused));
    }
    if !caller.pins.is_empty() && !caller.pins.contains(&cert.fingerprint) {
        return Err(ApiError::PermissionDenied(Denial::CertificateNotPinned));
    }
    Ok(caller)
}

/// What a client certificate says of its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certified {
    pub role: Role,
    pub id: String,
    /// SHA-256 of the certificate (DER), for pins.
    pub fingerprint: [u8; 32],
}

impl Certified {
    /// The one registry entry a client certificate (DER) names by a SAN
    /// URI; `None` if it names none, or more than one.
    pub fn of(der: &[u8]) -> Option<Self> {
        let cert = x509_cert::Certificate::from_der(der).ok()?;
        let Ok(Some((_, san))) = cert.tbs_certificate().get_extension::<SubjectAltName>() else {
            return None;
        };
        let mut named = san.0.iter().filter_map(|name| match name {
            GeneralName::UniformResourceIdentifier(uri) => {
                let uri: &str = uri.as_ref();
                [
                    (AGENCY_URI_PREFIX, Role::Agency),
                    (OPERATOR_URI_PREFIX, Role::Operator),
                ]
                .into_iter()
                .find_map(|(prefix, role)| Some((role, uri.strip_prefix(prefix)?.to_owned())))
            }
            _ => None,
        });
        let (role, id) = named.next()?;
        if named.next().is_some() || id.is_empty() {
            return None;
        }
        Some(Self {
            role,
            id,
            fingerprint: Sha256::digest(der).into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devcerts::{DevCa, Holder, Validity};

    #[test]
    fn only_a_san_uri_names_the_caller_and_its_prefix_its_role() {
        let validity = Validity::days_from(1_795_737_600, 30);
        let ca = DevCa::new("test CA", validity).unwrap();
        let agency = ca
            .client(&Holder::Agency("bv-tien-giang".into()), validity)
            .unwrap();
        let named = Certified::of(&agency.der).unwrap();
        assert_eq!(
            (named.role, named.id.as_str()),
            (Role::Agency, "bv-tien-giang")
        );
        let fingerprint: [u8; 32] = Sha256::digest(&agency.der).into();
        assert_eq!(named.fingerprint, fingerprint);
        let operator = ca
            .client(&Holder::Operator("ombud".into()), validity)
            .unwrap();
        let named = Certified::of(&operator.der).unwrap();
        assert_eq!((named.role, named.id.as_str()), (Role::Operator, "ombud"));
        // A CN alone names nobody, even one that is a registered name.
        let cn_only = ca.cn_only("ombud", validity).unwrap();
        assert_eq!(Certified::of(&cn_only.der), None);
        let server = ca.server(&["localhost"], validity).unwrap();
        assert_eq!(Certified::of(&server.der), None);
        assert_eq!(Certified::of(b"not a certificate"), None);
        assert!(ca.client(&Holder::Agency("a b".into()), validity).is_err());
    }
}
