//! The gRPC transport: services, the `pb` ↔ domain seam, and the one
//! mapping of errors to `tonic::Status`.

mod audit;
pub mod batch;
pub mod caller;
pub mod convert;
pub mod error;
pub mod listener;
mod service;
pub mod tls;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
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
    let method = request.uri().path();
    let span = tracing::info_span!(
        "rpc",
        otel.name = crate::metrics::call_name(method),
        otel.kind = "server",
        rpc.system = "grpc",
        method,
        agency = tracing::field::Empty,
        purpose = tracing::field::Empty,
        verdict = tracing::field::Empty,
        reason = tracing::field::Empty,
        attestation_id = tracing::field::Empty,
        grpc.code = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(&span, request.headers());
    span
}

/// The layer that gives tonic's own refusals (a message too large or not
/// decodable, an unknown method, a call past its deadline) the
/// `ErrorInfo` every refusal of vnid carries ([`error::add_missing_details`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorDetailsLayer;

impl<S> tower::Layer<S> for ErrorDetailsLayer {
    type Service = WithErrorDetails<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithErrorDetails(inner)
    }
}

#[derive(Debug, Clone)]
pub struct WithErrorDetails<S>(S);

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for WithErrorDetails<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let answer = self.0.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            error::add_missing_details(response.headers_mut());
            Ok(response)
        })
    }
}
