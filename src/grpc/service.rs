//! `vnid.v1.VerificationService`: authenticate the caller, parse the
//! request, run the use case, answer. One span per call (opened by the
//! server's `trace_fn`) gets the call's non-personal fields recorded.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Span;

use crate::grpc::caller::Callers;
use crate::grpc::error::ApiError;
use crate::grpc::respond;
use crate::pb;
use crate::pb::verification_service_server::VerificationService;
use crate::verify::{Verifier, VerifyCommand, purpose_name, reason_name, verdict_name};

pub struct VerificationApi {
    verifier: Arc<Verifier>,
    callers: Arc<Callers>,
}

impl VerificationApi {
    pub fn new(verifier: Arc<Verifier>, callers: Arc<Callers>) -> Self {
        Self { verifier, callers }
    }
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<pb::VerifyBatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl VerificationService for VerificationApi {
    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let agency = self.callers.agency(&request)?;
            let command = VerifyCommand::try_from(request.into_inner())?;
            let span = Span::current();
            span.record("purpose", purpose_name(command.purpose));
            let outcome = self.verifier.verify(&agency, command).await?;
            span.record("verdict", verdict_name(outcome.verdict));
            if let crate::domain::Verdict::NotVerified(reason) = outcome.verdict {
                span.record("reason", reason_name(reason));
            }
            span.record("attestation_id", outcome.attestation_id.as_str());
            Ok(pb::VerifyResponse::from(outcome))
        }
        .await;
        respond(result, started)
    }

    type VerifyBatchStream = BatchStream;

    async fn verify_batch(
        &self,
        _request: Request<Streaming<pb::VerifyRequest>>,
    ) -> Result<Response<Self::VerifyBatchStream>, Status> {
        respond(
            Err(ApiError::Unimplemented("VerifyBatch is not available yet")),
            Instant::now(),
        )
    }

    async fn verify_card_qr(
        &self,
        _request: Request<pb::VerifyCardQrRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        respond(
            Err(ApiError::Unimplemented("VerifyCardQr is not available yet")),
            Instant::now(),
        )
    }

    async fn get_signing_keys(
        &self,
        _request: Request<pb::GetSigningKeysRequest>,
    ) -> Result<Response<pb::GetSigningKeysResponse>, Status> {
        let jwks_json = self.verifier.jwks_json().to_owned();
        respond(Ok(pb::GetSigningKeysResponse { jwks_json }), Instant::now())
    }
}
