//! The gRPC transport: services, the `pb` ↔ domain seam, and the one
//! mapping of errors to `tonic::Status`.

pub mod convert;
pub mod error;
mod service;

pub use service::VerificationApi;

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
