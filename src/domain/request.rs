//! What identifies and justifies a check: the caller's request id and the
//! purpose of processing.

use std::fmt;

/// Why a check is made. The personal-data protection law ties every
/// processing to a purpose, and each agency may use only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Healthcare,
    Examination,
    SocialInsurance,
    PublicService,
}

impl Purpose {
    /// Every purpose, in the proto's order (as [`super::Spelled::ALL`]).
    pub const ALL: [Purpose; 4] = [
        Self::Healthcare,
        Self::Examination,
        Self::SocialInsurance,
        Self::PublicService,
    ];
}

/// The door a call came in by, kept in its audit row: gRPC, gRPC-Web or
/// the JSON door. One policy, quota and trail whatever the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Door {
    #[default]
    Grpc,
    GrpcWeb,
    Json,
}

impl Door {
    pub const ALL: [Self; 3] = [Self::Grpc, Self::GrpcWeb, Self::Json];

    pub fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::GrpcWeb => "grpc_web",
            Self::Json => "json",
        }
    }
}

/// The call a check arrives by; each may be allowed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckCall {
    Verify,
    /// One item of a `VerifyBatch` stream.
    BatchItem,
    CardQr,
}

/// The longest request id accepted.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// A caller-chosen request id: 1–64 characters of `[A-Za-z0-9._:-]`,
/// unique per agency. Signed into the attestation as its `nonce`.
///
/// Callers choose it, and some may put a patient's ID number in it, so it
/// is treated as personal data: never logged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestIdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_REQUEST_ID_LEN} characters")]
    TooLong,
    #[error("may hold only A-Z, a-z, 0-9, '.', '_', ':' and '-'")]
    BadCharacter,
}

impl RequestIdError {
    pub fn reason_code(self) -> &'static str {
        match self {
            Self::Empty => "REQUEST_ID_EMPTY",
            Self::TooLong => "REQUEST_ID_TOO_LONG",
            Self::BadCharacter => "REQUEST_ID_BAD_CHARACTER",
        }
    }
}

impl RequestId {
    pub fn parse(input: &str) -> Result<Self, RequestIdError> {
        if input.is_empty() {
            return Err(RequestIdError::Empty);
        }
        if input.len() > MAX_REQUEST_ID_LEN {
            return Err(RequestIdError::TooLong);
        }
        let ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
        if !input.as_bytes().iter().all(ok) {
            return Err(RequestIdError::BadCharacter);
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestId(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_ids() {
        assert!(RequestId::parse("exam-2026:HN.000_1").is_ok());
        assert!(RequestId::parse(&"a".repeat(64)).is_ok());
        assert_eq!(RequestId::parse(""), Err(RequestIdError::Empty));
        assert_eq!(
            RequestId::parse(&"a".repeat(65)),
            Err(RequestIdError::TooLong)
        );
        assert_eq!(RequestId::parse("a b"), Err(RequestIdError::BadCharacter));
        assert_eq!(RequestId::parse("é"), Err(RequestIdError::BadCharacter));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            if let Ok(id) = RequestId::parse(&s) {
                prop_assert_eq!(id.as_str(), s.as_str());
            }
        }
    }
}
