//! The gRPC transport: services, the `pb` ↔ domain seam, and the one
//! mapping of errors to `tonic::Status`.

mod audit;
pub mod batch;
pub mod caller;
pub mod convert;
pub mod error;
mod service;

use std::time::Instant;

use tonic::{Response, Status};
use tracing::Span;

pub use audit::AuditApi;
pub use caller::Callers;
pub use service::VerificationApi;

use error::ApiError;

/// Turns a call's result into its answer, and logs the end of the call.
fn respond<T>(result: Result<T, ApiError>, started: Instant) -> Result<Response<T>, Status> {
    let result = result.map(Response::new).map_err(Status::from);
    let code = result
        .as_ref()
        .map_or_else(Status::code, |_| tonic::Code::Ok);
    let span = Span::current();
    span.record("grpc.code", code as i32);
    tracing::info!(elapsed_us = started.elapsed().as_micros() as u64, code = ?code, "call finished");
    result
}

/// The span every call runs in. Fields are declared empty here and
/// recorded by the handler; none of them is personal data (the caller's
/// `request_id` is not recorded: callers may put anything in it).
pub fn call_span(request: &http::Request<()>) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        method = %request.uri().path(),
        agency = tracing::field::Empty,
        purpose = tracing::field::Empty,
        verdict = tracing::field::Empty,
        reason = tracing::field::Empty,
        attestation_id = tracing::field::Empty,
        grpc.code = tracing::field::Empty,
    )
}
