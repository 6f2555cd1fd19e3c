//! The gRPC transport: services, the `pb` ↔ domain seam, and the one
//! mapping of errors to `tonic::Status`.

mod audit;
pub mod batch;
pub mod caller;
pub mod convert;
pub mod error;
pub mod json;
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

use crate::domain::Door;
use crate::pb::verification_service_server::VerificationServiceServer;

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

/// `vnid.v1.VerificationService` with two message limits: `VerifyMany`
/// carries up to `batch.max_many_items` requests in one message, every
/// other method one request of at most `server.max_request_bytes`. tonic
/// sets its limits per service; this routes each call to a copy of the
/// service with the limits its method needs.
#[derive(Clone)]
pub struct VerificationRoutes {
    one: VerificationServiceServer<VerificationApi>,
    many: VerificationServiceServer<VerificationApi>,
}

/// What one request of a `VerifyMany` call may take on average.
pub const MANY_BYTES_PER_REQUEST: usize = 1024;

impl VerificationRoutes {
    pub fn new(api: VerificationApi, max_request_bytes: usize, max_many_items: usize) -> Self {
        let one = VerificationServiceServer::new(api)
            .max_decoding_message_size(max_request_bytes)
            .max_encoding_message_size(4 * max_request_bytes);
        let many_bytes = max_many_items
            .saturating_mul(MANY_BYTES_PER_REQUEST)
            .max(max_request_bytes);
        let many = one
            .clone()
            .max_decoding_message_size(many_bytes)
            // Each answer carries its attestation (about 1 KB).
            .max_encoding_message_size(max_many_items.saturating_mul(4 * 1024).max(many_bytes));
        Self { one, many }
    }
}

impl tonic::server::NamedService for VerificationRoutes {
    const NAME: &'static str =
        <VerificationServiceServer<VerificationApi> as tonic::server::NamedService>::NAME;
}

impl<B> tower::Service<http::Request<B>> for VerificationRoutes
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        <VerificationServiceServer<VerificationApi> as tower::Service<http::Request<B>>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() == VERIFY_MANY_PATH {
            self.many.call(request)
        } else {
            self.one.call(request)
        }
    }
}

/// The door a call came in by: the JSON door and gRPC-Web mark their
/// requests; a call with no mark came by gRPC.
pub fn door_of<T>(request: &tonic::Request<T>) -> Door {
    request
        .extensions()
        .get::<Door>()
        .copied()
        .unwrap_or_default()
}

const VERIFY_MANY_PATH: &str = "/vnid.v1.VerificationService/VerifyMany";

/// gRPC-Web (binary and text) for the callers that ask for it by its
/// content type, translated to gRPC before anything else sees it; every
/// other request (gRPC, the JSON door) passes untouched. tonic-web alone
/// would answer any other HTTP/1.1 request `400`.
/// Off (`server.grpc_web = false`), every request passes untouched.
#[derive(Debug, Clone, Copy)]
pub struct GrpcWebWhenAsked {
    pub enabled: bool,
}

impl<S: Clone> tower::Layer<S> for GrpcWebWhenAsked {
    type Service = WebOrNot<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WebOrNot {
            web: tower::Layer::layer(&tonic_web::GrpcWebLayer::new(), inner.clone()),
            inner,
            enabled: self.enabled,
        }
    }
}

#[derive(Clone)]
pub struct WebOrNot<S> {
    inner: S,
    web: tonic_web::GrpcWebService<S>,
    enabled: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for WebOrNot<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ReqBody: http_body::Body<Data = hyper::body::Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError> + std::fmt::Display,
    ResBody: http_body::Body<Data = hyper::body::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + std::fmt::Display,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => <tonic_web::GrpcWebService<S> as tower::Service<
                http::Request<ReqBody>,
            >>::poll_ready(&mut self.web, cx),
            other => other,
        }
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let grpc_web = self.enabled
            && request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc-web"));
        if grpc_web {
            let mut request = request;
            request.extensions_mut().insert(Door::GrpcWeb);
            Box::pin(self.web.call(request))
        } else {
            let answer = self.inner.call(request.map(tonic::body::Body::new));
            Box::pin(async move { Ok(answer.await?.map(tonic::body::Body::new)) })
        }
    }
}
