//! Who is calling, and as what. Until mutual TLS identifies callers by
//! their certificates, every caller is on the loopback plaintext listener
//! and acts as the configured plaintext agency (on the verification
//! service) or plaintext operator (on the audit service).

use std::sync::Arc;

use tonic::Request;
use tracing::Span;

use crate::grpc::error::ApiError;
use crate::policy::{Agency, Denial, Registry};

pub struct Callers {
    /// Who may ask what.
    pub registry: Arc<Registry>,
    /// The agency plaintext callers act as.
    plaintext_agency: String,
    /// The operator plaintext callers act as on the audit service; empty:
    /// nobody.
    plaintext_operator: String,
}

impl Callers {
    pub fn new(
        registry: Arc<Registry>,
        plaintext_agency: String,
        plaintext_operator: String,
    ) -> Self {
        Self {
            registry,
            plaintext_agency,
            plaintext_operator,
        }
    }

    /// The agency making a verification call.
    pub fn agency<T>(&self, _request: &Request<T>) -> Result<&Agency, ApiError> {
        self.registered(&self.plaintext_agency)
    }

    /// The operator making an audit-service call.
    pub fn operator<T>(&self, _request: &Request<T>) -> Result<&Agency, ApiError> {
        if self.plaintext_operator.is_empty() {
            return Err(ApiError::PermissionDenied(Denial::NotAnOperator));
        }
        self.registered(&self.plaintext_operator)
    }

    fn registered(&self, id: &str) -> Result<&Agency, ApiError> {
        let caller = self
            .registry
            .agency(id)
            .map_err(ApiError::PermissionDenied)?;
        Span::current().record("agency", caller.id.as_str());
        Ok(caller)
    }

    /// The display name of a registered id (empty if it is no longer
    /// registered).
    pub fn name_of(&self, id: &str) -> String {
        self.registry
            .agency(id)
            .map(|a| a.name.clone())
            .unwrap_or_default()
    }
}
