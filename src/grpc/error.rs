//! The one boundary error of the gRPC layer and its one mapping to
//! `tonic::Status`. Every refusal carries a stable machine-readable reason
//! (`google.rpc.ErrorInfo`, domain [`ERROR_DOMAIN`]); bad fields also carry
//! `google.rpc.BadRequest` field violations. Internal causes are logged
//! here, in full, and never returned.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::audit::AuditError;
use crate::audit::history::HistoryError;
use crate::guard::Refusal;
use crate::mirror::StoreError;
use crate::policy::Denial;
use crate::verify::VerifyError;

/// The `domain` of every `ErrorInfo` vnid returns.
pub const ERROR_DOMAIN: &str = "vnid.gov.vn";

/// One rejected field: its path in the request, a stable reason code and a
/// description that never repeats the rejected value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub reason: &'static str,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: &'static str, reason: &'static str, description: impl ToString) -> Self {
        Self {
            field,
            reason,
            description: description.to_string(),
        }
    }
}

#[derive(Debug)]
pub enum ApiError {
    InvalidArgument(Vec<FieldViolation>),
    Unauthenticated,
    PermissionDenied(Denial),
    /// A store cannot be reached: retry later.
    Unavailable(Unreachable),
    Internal,
    ResourceExhausted(Refusal),
    /// The caller's `request_id` names another request.
    AlreadyExists,
    /// A batch stream carried more than this many items.
    BatchTooLong(u64),
    /// Something took longer than it may.
    DeadlineExceeded(Deadline),
    /// A message that does not decode as the call's request (or is too
    /// large to): tonic's own refusal, given vnid's details.
    Malformed(Status),
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// A batch stream's caller sent nothing for too long.
    BatchIdle,
    /// One batch item, its wait for the rate included.
    BatchItem,
}

/// Which store an UNAVAILABLE answer is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    Mirror,
    Audit,
    /// The mirror answers, but its data is older than `mirror.max_age`.
    Stale,
}

impl Unreachable {
    fn reason_code(self) -> &'static str {
        match self {
            Self::Mirror => "MIRROR_UNAVAILABLE",
            Self::Audit => "AUDIT_UNAVAILABLE",
            Self::Stale => "MIRROR_STALE",
        }
    }

    /// When to try again: a stale mirror waits for an import.
    fn retry_after(self) -> Duration {
        match self {
            Self::Mirror | Self::Audit => Duration::from_secs(1),
            Self::Stale => Duration::from_secs(60),
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(error: AuditError) -> Self {
        match error {
            AuditError::Unavailable(source) => {
                tracing::warn!(error = %source, "audit store unavailable");
                Self::Unavailable(Unreachable::Audit)
            }
            other => {
                tracing::error!(error = %other, "audit failed");
                Self::Internal
            }
        }
    }
}

impl From<HistoryError> for ApiError {
    fn from(error: HistoryError) -> Self {
        match error {
            HistoryError::Denied(denial) => Self::PermissionDenied(denial),
            HistoryError::Audit(error) => error.into(),
        }
    }
}

impl From<Vec<FieldViolation>> for ApiError {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Self::InvalidArgument(violations)
    }
}

impl From<VerifyError> for ApiError {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Denied(denial) => Self::PermissionDenied(denial),
            VerifyError::Store(StoreError::Unavailable(source)) => {
                tracing::warn!(error = %source, "mirror unavailable");
                Self::Unavailable(Unreachable::Mirror)
            }
            VerifyError::Audit(error) => error.into(),
            VerifyError::Refused(why) => Self::ResourceExhausted(why),
            VerifyError::RequestIdReused => Self::AlreadyExists,
            VerifyError::Stale { age } => {
                tracing::warn!(age_seconds = age, "check refused: the mirror is stale");
                Self::Unavailable(Unreachable::Stale)
            }
            VerifyError::NeverImported => {
                tracing::warn!("check refused: nothing was ever imported into the mirror");
                Self::Unavailable(Unreachable::Stale)
            }
            other => {
                tracing::error!(error = %other, "verification failed");
                Self::Internal
            }
        }
    }
}

/// The reason of a refusal tonic makes before any handler runs, by its
/// code: a message too large, one that does not decode, a method this
/// server does not have, a call past the server's deadline.
pub fn transport_reason(code: Code) -> &'static str {
    match code {
        Code::OutOfRange | Code::ResourceExhausted => "MESSAGE_TOO_LARGE",
        Code::Unimplemented => "METHOD_UNKNOWN",
        Code::Cancelled | Code::DeadlineExceeded => "CALL_TIMEOUT",
        Code::Unavailable => "SHUTTING_DOWN",
        _ => "MESSAGE_UNDECODABLE",
    }
}

/// Gives a refusal that tonic answered on its own (headers only, without
/// `grpc-status-details-bin`) the same `ErrorInfo` every other refusal
/// carries. Its code and message stay as tonic made them.
pub fn add_missing_details(headers: &mut http::HeaderMap) {
    const DETAILS: &str = "grpc-status-details-bin";
    if headers.contains_key(DETAILS) {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() == Code::Ok {
        return;
    }
    let with_details = Status::from(ApiError::Malformed(status));
    let mut fresh = http::HeaderMap::new();
    if with_details.add_header(&mut fresh).is_ok() {
        for (name, value) in fresh {
            if let Some(name) = name {
                headers.insert(name, value);
            }
        }
    }
}

fn error_info(reason: &str) -> ErrorDetails {
    ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new())
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument(violations) => {
                let reason = match violations.as_slice() {
                    [one] => one.reason,
                    _ => "INVALID_FIELDS",
                };
                let mut details = error_info(reason);
                details.set_bad_request(
                    violations
                        .iter()
                        .map(|v| tonic_types::FieldViolation {
                            field: v.field.to_owned(),
                            description: v.description.clone(),
                            reason: v.reason.to_owned(),
                            localized_message: None,
                        })
                        .collect::<Vec<_>>(),
                );
                let fields: Vec<&str> = violations.iter().map(|v| v.field).collect();
                let message = format!("invalid request fields: {}", fields.join(", "));
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::Unauthenticated => Status::with_error_details(
                Code::Unauthenticated,
                "the caller is not authenticated",
                error_info("UNAUTHENTICATED"),
            ),
            ApiError::PermissionDenied(denial) => Status::with_error_details(
                Code::PermissionDenied,
                denial.to_string(),
                error_info(denial.reason_code()),
            ),
            ApiError::Unavailable(store) => {
                let mut details = error_info(store.reason_code());
                details.set_retry_info(Some(store.retry_after()));
                Status::with_error_details(
                    Code::Unavailable,
                    "the service cannot answer right now; retry later",
                    details,
                )
            }
            ApiError::Internal => {
                Status::with_error_details(Code::Internal, "internal error", error_info("INTERNAL"))
            }
            ApiError::AlreadyExists => Status::with_error_details(
                Code::AlreadyExists,
                "this request_id was already used for a different request",
                error_info("REQUEST_ID_REUSED"),
            ),
            ApiError::BatchTooLong(max) => Status::with_error_details(
                Code::ResourceExhausted,
                format!("a stream carries at most {max} items; send the rest on a new stream"),
                error_info("BATCH_TOO_LONG"),
            ),
            ApiError::DeadlineExceeded(which) => {
                let (reason, message) = match which {
                    Deadline::BatchIdle => (
                        "BATCH_IDLE",
                        "the stream sent nothing for too long; open a new one to go on",
                    ),
                    Deadline::BatchItem => (
                        "ITEM_DEADLINE",
                        "the item was not answered in time; send it again",
                    ),
                };
                Status::with_error_details(Code::DeadlineExceeded, message, error_info(reason))
            }
            ApiError::Malformed(status) => Status::with_error_details(
                status.code(),
                status.message().to_owned(),
                error_info(transport_reason(status.code())),
            ),
            ApiError::ResourceExhausted(why) => {
                let (reason, retry_after) = match why {
                    Refusal::Rate { retry_after } => ("RATE_LIMITED", retry_after),
                    Refusal::Daily { retry_after } => ("DAILY_QUOTA_EXCEEDED", retry_after),
                    Refusal::Suspended { retry_after } => ("ID_NUMBER_SUSPENDED", retry_after),
                    Refusal::Throttled { retry_after } => ("AGENCY_THROTTLED", retry_after),
                };
                let mut details = error_info(reason);
                details.set_retry_info(Some(retry_after));
                Status::with_error_details(Code::ResourceExhausted, why.to_string(), details)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(status: &Status) -> String {
        status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_default()
    }

    #[test]
    fn every_variant_maps_to_its_code_and_reason() {
        let cases = [
            (
                ApiError::InvalidArgument(vec![FieldViolation::new(
                    "id_number",
                    "ID_NUMBER_FORMAT",
                    "bad",
                )]),
                Code::InvalidArgument,
                "ID_NUMBER_FORMAT",
            ),
            (
                ApiError::Unauthenticated,
                Code::Unauthenticated,
                "UNAUTHENTICATED",
            ),
            (
                ApiError::PermissionDenied(Denial::PurposeNotAllowed),
                Code::PermissionDenied,
                "PURPOSE_NOT_ALLOWED",
            ),
            (
                ApiError::Unavailable(Unreachable::Mirror),
                Code::Unavailable,
                "MIRROR_UNAVAILABLE",
            ),
            (
                ApiError::Unavailable(Unreachable::Audit),
                Code::Unavailable,
                "AUDIT_UNAVAILABLE",
            ),
            (
                ApiError::Unavailable(Unreachable::Stale),
                Code::Unavailable,
                "MIRROR_STALE",
            ),
            (
                ApiError::PermissionDenied(Denial::NotAnOperator),
                Code::PermissionDenied,
                "OPERATOR_ROLE_REQUIRED",
            ),
            (ApiError::Internal, Code::Internal, "INTERNAL"),
            (
                ApiError::AlreadyExists,
                Code::AlreadyExists,
                "REQUEST_ID_REUSED",
            ),
            (
                ApiError::ResourceExhausted(Refusal::Rate {
                    retry_after: Duration::from_millis(100),
                }),
                Code::ResourceExhausted,
                "RATE_LIMITED",
            ),
            (
                ApiError::ResourceExhausted(Refusal::Throttled {
                    retry_after: Duration::from_secs(1),
                }),
                Code::ResourceExhausted,
                "AGENCY_THROTTLED",
            ),
            (
                ApiError::ResourceExhausted(Refusal::Suspended {
                    retry_after: Duration::from_secs(1),
                }),
                Code::ResourceExhausted,
                "ID_NUMBER_SUSPENDED",
            ),
            (
                ApiError::BatchTooLong(10),
                Code::ResourceExhausted,
                "BATCH_TOO_LONG",
            ),
            (
                ApiError::DeadlineExceeded(Deadline::BatchIdle),
                Code::DeadlineExceeded,
                "BATCH_IDLE",
            ),
            (
                ApiError::DeadlineExceeded(Deadline::BatchItem),
                Code::DeadlineExceeded,
                "ITEM_DEADLINE",
            ),
            (
                ApiError::Malformed(Status::internal("failed to decode Protobuf message")),
                Code::Internal,
                "MESSAGE_UNDECODABLE",
            ),
            (
                ApiError::Malformed(Status::out_of_range("decoded message length too large")),
                Code::OutOfRange,
                "MESSAGE_TOO_LARGE",
            ),
            (
                ApiError::PermissionDenied(Denial::BatchNotAllowed),
                Code::PermissionDenied,
                "BATCH_NOT_ALLOWED",
            ),
            (
                ApiError::PermissionDenied(Denial::CardQrNotAllowed),
                Code::PermissionDenied,
                "CARD_QR_NOT_ALLOWED",
            ),
            (
                ApiError::ResourceExhausted(Refusal::Daily {
                    retry_after: Duration::from_secs(60),
                }),
                Code::ResourceExhausted,
                "DAILY_QUOTA_EXCEEDED",
            ),
        ];
        for (error, code, expected) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(reason(&status), expected);
        }
    }

    #[test]
    fn tonics_own_refusals_get_an_error_info_and_ours_keep_theirs() {
        let mut headers = http::HeaderMap::new();
        Status::out_of_range("Error, decoded message length too large")
            .add_header(&mut headers)
            .unwrap();
        add_missing_details(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(reason(&status), "MESSAGE_TOO_LARGE");

        let mut headers = http::HeaderMap::new();
        Status::from(ApiError::AlreadyExists)
            .add_header(&mut headers)
            .unwrap();
        add_missing_details(&mut headers);
        assert_eq!(
            reason(&Status::from_header_map(&headers).unwrap()),
            "REQUEST_ID_REUSED"
        );
    }

    #[test]
    fn field_violations_are_all_listed() {
        let status = Status::from(ApiError::InvalidArgument(vec![
            FieldViolation::new("id_number", "ID_NUMBER_FORMAT", "must be 12 digits"),
            FieldViolation::new("purpose", "PURPOSE_UNSPECIFIED", "must be set"),
        ]));
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        let fields: Vec<_> = violations
            .iter()
            .map(|v| (v.field.as_str(), v.reason.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("id_number", "ID_NUMBER_FORMAT"),
                ("purpose", "PURPOSE_UNSPECIFIED")
            ]
        );
        assert_eq!(reason(&status), "INVALID_FIELDS");
        assert_eq!(
            status.message(),
            "invalid request fields: id_number, purpose"
        );
    }

    #[test]
    fn internal_causes_never_reach_the_caller() {
        let source =
            std::io::Error::other("password authentication failed for user vnid at 10.0.0.5");
        let status = Status::from(ApiError::from(VerifyError::Store(StoreError::Unavailable(
            Box::new(source),
        ))));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("10.0.0.5"));
        assert!(status.get_error_details().retry_info().is_some());
        let status = Status::from(ApiError::from(VerifyError::Store(StoreError::Corrupt(
            "bad gender".into(),
        ))));
        assert_eq!(
            (status.code(), status.message()),
            (Code::Internal, "internal error")
        );
        let status = Status::from(ApiError::from(VerifyError::Audit(AuditError::Unavailable(
            Box::new(std::io::Error::other("connection to 10.0.0.6 refused")),
        ))));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(reason(&status), "AUDIT_UNAVAILABLE");
        assert!(!status.message().contains("10.0.0.6"));
        let status = Status::from(ApiError::from(VerifyError::Audit(AuditError::Corrupt(
            "row 7".into(),
        ))));
        assert_eq!(
            (status.code(), status.message()),
            (Code::Internal, "internal error")
        );
    }
}
