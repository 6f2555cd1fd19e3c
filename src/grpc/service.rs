//! `vnid.v1.VerificationService`: authenticate the caller, parse the
//! request, run the use case, answer. One span per call (opened by the
//! server's `trace_fn`) gets the call's non-personal fields recorded.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status, Streaming};
use tracing::Span;

use crate::domain::CheckCall;
use crate::domain::Spelled;
use crate::grpc::batch::{self, BatchParams, BatchStream};
use crate::grpc::caller::Callers;
use crate::grpc::error::{ApiError, FieldViolation};
use crate::grpc::{door_of, respond};
use crate::pb;
use crate::pb::verification_service_server::VerificationService;
use crate::policy::Agency;
use crate::verify::{Verifier, VerifyCommand};

#[derive(Clone)]
pub struct VerificationApi {
    verifier: Arc<Verifier>,
    callers: Arc<Callers>,
    batch: BatchParams,
}

impl VerificationApi {
    pub fn new(verifier: Arc<Verifier>, callers: Arc<Callers>, batch: BatchParams) -> Self {
        Self {
            verifier,
            callers,
            batch,
        }
    }
}

impl VerificationApi {
    /// One check of a unary call, its non-personal fields recorded on the
    /// call's span.
    async fn check(
        &self,
        agency: &Agency,
        command: VerifyCommand,
        call: CheckCall,
    ) -> Result<pb::VerifyResponse, ApiError> {
        let span = Span::current();
        span.record("purpose", command.purpose.name());
        let outcome = self.verifier.check(agency, command, call).await?;
        span.record("verdict", outcome.verdict.kind().name());
        if let crate::domain::Verdict::NotVerified(reason) = outcome.verdict {
            span.record("reason", reason.name());
        }
        span.record("attestation_id", outcome.attestation_id.as_str());
        Ok(pb::VerifyResponse::from(outcome))
    }
}

#[tonic::async_trait]
impl VerificationService for VerificationApi {
    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let agency = self.callers.agency(&request)?;
            let door = door_of(&request);
            let command = VerifyCommand::try_from(request.into_inner())?;
            self.check(
                &agency,
                VerifyCommand { door, ..command },
                CheckCall::Verify,
            )
            .await
        }
        .await;
        respond(result, started)
    }

    type VerifyBatchStream = BatchStream;

    async fn verify_batch(
        &self,
        request: Request<Streaming<pb::VerifyRequest>>,
    ) -> Result<Response<Self::VerifyBatchStream>, Status> {
        let started = Instant::now();
        let result = (|| {
            let agency = self.callers.agency(&request)?;
            agency
                .authorize_call(CheckCall::BatchItem)
                .map_err(ApiError::PermissionDenied)?;
            Ok(batch::run(
                self.verifier.clone(),
                self.callers.clone(),
                agency.id.clone(),
                request.into_inner(),
                self.batch,
            ))
        })();
        respond(result, started)
    }

    async fn verify_many(
        &self,
        request: Request<pb::VerifyManyRequest>,
    ) -> Result<Response<pb::VerifyManyResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let agency = self.callers.agency(&request)?;
            agency
                .authorize_call(CheckCall::BatchItem)
                .map_err(ApiError::PermissionDenied)?;
            let door = door_of(&request);
            let requests = request.into_inner().requests;
            let most = self.batch.max_many_items;
            if requests.len() > most {
                return Err(ApiError::InvalidArgument(vec![FieldViolation::new(
                    "requests",
                    "TOO_MANY_REQUESTS",
                    format!("at most {most} requests in one VerifyMany call"),
                )]));
            }
            let results =
                batch::many(self.verifier.clone(), agency, requests, door, self.batch).await;
            Ok(pb::VerifyManyResponse { results })
        }
        .await;
        respond(result, started)
    }

    async fn verify_card_qr(
        &self,
        request: Request<pb::VerifyCardQrRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let agency = self.callers.agency(&request)?;
            agency
                .authorize_call(CheckCall::CardQr)
                .map_err(ApiError::PermissionDenied)?;
            let door = door_of(&request);
            let command = VerifyCommand::try_from(request.into_inner())?;
            self.check(
                &agency,
                VerifyCommand { door, ..command },
                CheckCall::CardQr,
            )
            .await
        }
        .await;
        respond(result, started)
    }

    async fn get_signing_keys(
        &self,
        _request: Request<pb::GetSigningKeysRequest>,
    ) -> Result<Response<pb::GetSigningKeysResponse>, Status> {
        let jwks_json = self.verifier.jwks_json();
        respond(Ok(pb::GetSigningKeysResponse { jwks_json }), Instant::now())
    }
}
