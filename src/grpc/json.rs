//! The JSON door: the verification calls over HTTP/1.1 or HTTP/2 on the
//! gRPC listener, for systems that speak REST (Java and .NET back ends,
//! government gateways). Each request is handed to the very handler the
//! gRPC call has, with the same connection (so the same mutual-TLS
//! identity), hence the same policy, quotas, defences and audit rows.
//!
//! - `POST /v1/verify`, `POST /v1/verify-card-qr`, `POST /v1/verify-many`:
//!   the request and answer messages in the proto3 JSON mapping (generated
//!   by pbjson-build: `requestId`, `PURPOSE_HEALTHCARE`, RFC 3339 times);
//! - `GET /v1/signing-keys`: `GetSigningKeysResponse`;
//! - `GET /.well-known/jwks.json`: the JWKS itself, with `ETag` and
//!   `Cache-Control` (a matching `If-None-Match` gets `304`).
//!
//! A refusal is the JSON `google.rpc.Status` of the gRPC answer (its
//! `ErrorInfo`, `BadRequest` and `RetryInfo` details, `@type`d), under the
//! HTTP status that maps from its code (Google's API mapping), with
//! `Retry-After` when it says when to try again.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::error::ApiError;
use super::{MANY_BYTES_PER_REQUEST, VerificationApi};
use crate::pb;
use crate::pb::verification_service_server::VerificationService;

/// The JSON door's routes under `/v1/` and `/.well-known/`.
#[derive(Clone)]
pub struct JsonDoor {
    api: Arc<VerificationApi>,
    /// Bytes a request body may have: one request; a `verify-many` call.
    max_bytes: usize,
    max_many_bytes: usize,
}

impl JsonDoor {
    pub fn new(api: VerificationApi, max_request_bytes: usize, max_many_items: usize) -> Self {
        Self {
            api: Arc::new(api),
            max_bytes: max_request_bytes,
            max_many_bytes: max_many_items
                .saturating_mul(MANY_BYTES_PER_REQUEST)
                .max(max_request_bytes),
        }
    }

    /// The door as the service tonic routes `/v1/…` to.
    pub fn v1(&self) -> Routed<V1> {
        Routed(self.clone(), PhantomData)
    }

    /// The door as the service tonic routes `/.well-known/…` to.
    pub fn well_known(&self) -> Routed<WellKnown> {
        Routed(self.clone(), PhantomData)
    }
}

/// The first segment of the paths a [`Routed`] door is given by tonic.
pub trait Prefix: Send + Sync + 'static {
    const NAME: &'static str;
}

/// `/v1/{*rest}`.
pub enum V1 {}

impl Prefix for V1 {
    const NAME: &'static str = "v1";
}

/// `/.well-known/{*rest}`.
pub enum WellKnown {}

impl Prefix for WellKnown {
    const NAME: &'static str = ".well-known";
}

/// The door under one path prefix: tonic routes a service by its name, so
/// each prefix is a service of its own; every one answers by the whole path.
pub struct Routed<P>(JsonDoor, PhantomData<P>);

impl<P> Clone for Routed<P> {
    fn clone(&self) -> Self {
        Self(self.0.clone(), PhantomData)
    }
}

impl<P: Prefix> tonic::server::NamedService for Routed<P> {
    const NAME: &'static str = P::NAME;
}

type Answer = http::Response<tonic::body::Body>;
type Pending = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

impl<P, B> tower::Service<http::Request<B>> for Routed<P>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = Pending;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Pending {
        let door = self.0.clone();
        Box::pin(async move { Ok(door.route(request).await) })
    }
}

impl JsonDoor {
    async fn route<B>(&self, request: http::Request<B>) -> Answer
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        match (path.as_str(), method) {
            ("/v1/verify", Method::POST) => {
                self.unary(request, self.max_bytes, |api, r| async move {
                    api.verify(r).await
                })
                .await
            }
            ("/v1/verify-card-qr", Method::POST) => {
                self.unary(request, self.max_bytes, |api, r| async move {
                    api.verify_card_qr(r).await
                })
                .await
            }
            ("/v1/verify-many", Method::POST) => self.many(request).await,
            ("/v1/signing-keys", Method::GET) => {
                let (parts, _) = request.into_parts();
                let call = tonic::Request::from_parts(
                    tonic::metadata::MetadataMap::from_headers(parts.headers),
                    parts.extensions,
                    pb::GetSigningKeysRequest {},
                );
                match self.api.get_signing_keys(call).await {
                    Ok(keys) => json(StatusCode::OK, keys.get_ref()),
                    Err(status) => refusal(&status),
                }
            }
            ("/.well-known/jwks.json", Method::GET) => self.jwks(request).await,
            (
                "/v1/verify"
                | "/v1/verify-card-qr"
                | "/v1/verify-many"
                | "/v1/signing-keys"
                | "/.well-known/jwks.json",
                _,
            ) => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => refusal(&Status::from(ApiError::Malformed(Status::unimplemented(
                "no such path",
            )))),
        }
    }

    /// Reads `request`'s JSON body as `T`, hands it to `call` with the
    /// request's connection and headers, and writes the answer as JSON.
    async fn unary<B, T, R, F, Fut>(
        &self,
        request: http::Request<B>,
        limit: usize,
        call: F,
    ) -> Answer
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        T: JsonRequest,
        R: Serialize,
        F: FnOnce(Arc<VerificationApi>, tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        match read_json::<B, T>(request, limit).await {
            Ok(call_request) => match call(self.api.clone(), call_request).await {
                Ok(answer) => json(StatusCode::OK, answer.get_ref()),
                Err(status) => refusal(&status),
            },
            Err(status) => refusal(&status),
        }
    }

    async fn many<B>(&self, request: http::Request<B>) -> Answer
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let call = match read_json::<B, pb::VerifyManyRequest>(request, self.max_many_bytes).await {
            Ok(call) => call,
            Err(status) => return refusal(&status),
        };
        match self.api.verify_many(call).await {
            Ok(answer) => {
                let results: Vec<serde_json::Value> =
                    answer.get_ref().results.iter().map(item_json).collect();
                json(StatusCode::OK, &serde_json::json!({ "results": results }))
            }
            Err(status) => refusal(&status),
        }
    }

    async fn jwks<B>(&self, request: http::Request<B>) -> Answer {
        let (parts, _) = request.into_parts();
        let headers = parts.headers.clone();
        let call = tonic::Request::from_parts(
            tonic::metadata::MetadataMap::from_headers(parts.headers),
            parts.extensions,
            pb::GetSigningKeysRequest {},
        );
        match self.api.get_signing_keys(call).await {
            Ok(keys) => crate::admin::jwks_answer(keys.into_inner().jwks_json, &headers)
                .map(tonic::body::Body::new),
            Err(status) => refusal(&status),
        }
    }
}

/// The request's body read as JSON (at most `limit` bytes), as a tonic
/// request carrying the HTTP request's headers and connection.
async fn read_json<B, T>(
    request: http::Request<B>,
    limit: usize,
) -> Result<tonic::Request<T>, Status>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T: JsonRequest,
{
    let (mut parts, body) = request.into_parts();
    // Its audit row says it came by the JSON door.
    parts.extensions.insert(crate::domain::Door::Json);
    let json_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json_type {
        return Err(Status::from(ApiError::Malformed(Status::invalid_argument(
            "the body must be application/json",
        ))));
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let too_large = error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return Err(Status::from(ApiError::Malformed(if too_large {
                Status::out_of_range(format!("the body is larger than {limit} bytes"))
            } else {
                Status::invalid_argument("the body could not be read")
            })));
        }
    };
    // The parser's message names a field or a position, never a value.
    let message = T::from_json(&bytes).map_err(|error| {
        Status::from(ApiError::Malformed(Status::invalid_argument(format!(
            "the body is not the call's JSON message ({})",
            error.classify_and_position()
        ))))
    })?;
    Ok(tonic::Request::from_parts(
        tonic::metadata::MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    ))
}

/// A request message read from its proto3 JSON.
///
/// The mapping lets an enum field be given by number, any number, as the
/// binary encoding does; the generated parser knows only the declared
/// ones. So numbers are taken out before it parses the rest and put back
/// on the message: an unknown one is then refused by the same check, with
/// the same reason (`PURPOSE_UNKNOWN`, …), as over gRPC.
pub trait JsonRequest: Sized {
    fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error>;
}

/// An enum field's number, taken out of `object` (under its JSON or its
/// proto name).
fn take_number(object: Option<&mut serde_json::Value>, names: [&str; 2]) -> Option<i32> {
    let object = object?.as_object_mut()?;
    for name in names {
        if object.get(name).is_some_and(serde_json::Value::is_number) {
            let number = object.remove(name)?;
            return Some(
                number
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .unwrap_or(i32::MAX),
            );
        }
    }
    None
}

/// The enum numbers of one `VerifyRequest`.
struct RequestNumbers {
    purpose: Option<i32>,
    name_match: Option<i32>,
    gender: Option<i32>,
}

impl RequestNumbers {
    fn take(value: &mut serde_json::Value) -> Self {
        Self {
            purpose: take_number(Some(&mut *value), ["purpose", "purpose"]),
            name_match: take_number(Some(&mut *value), ["nameMatch", "name_match"]),
            gender: take_number(value.get_mut("claims"), ["gender", "gender"]),
        }
    }

    fn put(self, request: &mut pb::VerifyRequest) {
        if let Some(n) = self.purpose {
            request.purpose = n;
        }
        if let Some(n) = self.name_match {
            request.name_match = n;
        }
        if let Some(n) = self.gender {
            request.claims.get_or_insert_default().gender = n;
        }
    }
}

impl JsonRequest for pb::VerifyRequest {
    fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
        let numbers = RequestNumbers::take(&mut value);
        let mut request: Self = serde_json::from_value(value)?;
        numbers.put(&mut request);
        Ok(request)
    }
}

impl JsonRequest for pb::VerifyCardQrRequest {
    fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
        let purpose = take_number(Some(&mut value), ["purpose", "purpose"]);
        let name_match = take_number(Some(&mut value), ["nameMatch", "name_match"]);
        let mut request: Self = serde_json::from_value(value)?;
        request.purpose = purpose.unwrap_or(request.purpose);
        request.name_match = name_match.unwrap_or(request.name_match);
        Ok(request)
    }
}

impl JsonRequest for pb::VerifyManyRequest {
    fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
        let numbers: Vec<RequestNumbers> = value
            .get_mut("requests")
            .and_then(serde_json::Value::as_array_mut)
            .map(|items| items.iter_mut().map(RequestNumbers::take).collect())
            .unwrap_or_default();
        let mut many: Self = serde_json::from_value(value)?;
        for (request, numbers) in many.requests.iter_mut().zip(numbers) {
            numbers.put(request);
        }
        Ok(many)
    }
}

/// A `serde_json` error's kind and place, without the text around it.
trait ClassifyAndPosition {
    fn classify_and_position(&self) -> String;
}

impl ClassifyAndPosition for serde_json::Error {
    fn classify_and_position(&self) -> String {
        let kind = match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "a field of the wrong name or type",
            serde_json::error::Category::Eof => "cut short",
        };
        match self.line() {
            0 => kind.to_owned(),
            line => format!("{kind} at line {line} column {}", self.column()),
        }
    }
}

/// A `VerifyBatchResponse` in the proto3 JSON mapping (its error status
/// written as [`status_json`]).
fn item_json(item: &pb::VerifyBatchResponse) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    if !item.request_id.is_empty() {
        object.insert("requestId".into(), item.request_id.clone().into());
    }
    match &item.result {
        Some(pb::verify_batch_response::Result::Response(response)) => {
            object.insert(
                "response".into(),
                serde_json::to_value(response).unwrap_or_default(),
            );
        }
        Some(pb::verify_batch_response::Result::Error(error)) => {
            let status = Status::with_details(
                Code::from(error.code),
                error.message.clone(),
                prost::Message::encode_to_vec(error).into(),
            );
            object.insert("error".into(), status_json(&status));
        }
        None => {}
    }
    object.into()
}

/// A status as the JSON `google.rpc.Status`: code, message, and its
/// details with their `@type`.
pub fn status_json(status: &Status) -> serde_json::Value {
    const TYPES: &str = "type.googleapis.com/google.rpc.";
    let details = status.get_error_details();
    let mut items = Vec::new();
    if let Some(info) = details.error_info() {
        items.push(serde_json::json!({
            "@type": format!("{TYPES}ErrorInfo"),
            "reason": info.reason,
            "domain": info.domain,
            "metadata": info.metadata,
        }));
    }
    if let Some(bad) = details.bad_request() {
        let violations: Vec<serde_json::Value> = bad
            .field_violations
            .iter()
            .map(|v| {
                serde_json::json!({
                    "field": v.field,
                    "description": v.description,
                    "reason": v.reason,
                })
            })
            .collect();
        items.push(serde_json::json!({
            "@type": format!("{TYPES}BadRequest"),
            "fieldViolations": violations,
        }));
    }
    if let Some(retry) = details.retry_info().and_then(|r| r.retry_delay) {
        items.push(serde_json::json!({
            "@type": format!("{TYPES}RetryInfo"),
            "retryDelay": format!("{}s", retry.as_secs_f64()),
        }));
    }
    serde_json::json!({
        "code": status.code() as i32,
        "message": status.message(),
        "details": items,
    })
}

/// The HTTP status of a gRPC code (as Google's APIs map them).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn refusal(status: &Status) -> Answer {
    let mut answer = json(http_status(status.code()), &status_json(status));
    let retry = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay);
    if let Some(delay) = retry {
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            answer.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    answer
}

fn json(status: StatusCode, body: &impl Serialize) -> Answer {
    match serde_json::to_vec(body) {
        Ok(bytes) => http::Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(tonic::body::Body::new(Full::from(bytes)))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error")),
        Err(error) => {
            tracing::error!(%error, "a JSON answer could not be written");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Answer {
    let mut answer = http::Response::new(tonic::body::Body::new(Full::from(text)));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_http_status() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(http_status(Code::AlreadyExists), StatusCode::CONFLICT);
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            http_status(Code::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
    }

    #[test]
    fn a_refusal_is_a_json_google_rpc_status_with_its_details() {
        let status = Status::from(ApiError::InvalidArgument(vec![
            crate::grpc::error::FieldViolation::new("id_number", "ID_NUMBER_FORMAT", "12 digits"),
        ]));
        let answer = status_json(&status);
        assert_eq!(answer["code"], 3);
        assert_eq!(
            answer["details"][0]["@type"],
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
        assert_eq!(answer["details"][0]["reason"], "ID_NUMBER_FORMAT");
        assert_eq!(
            answer["details"][1]["fieldViolations"][0]["field"],
            "id_number"
        );
    }
}
