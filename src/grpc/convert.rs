//! The seam between the wire and the domain: `pb` requests parsed into
//! commands (every bad field reported, none touched further), outcomes
//! turned back into `pb` responses.

use base64ct::{Base64UrlUnpadded, Encoding};

use crate::audit::history::{DEFAULT_PAGE_SIZE, HistoryPage, HistoryQuery};
use crate::audit::{AuditKind, AuditRecord};
use crate::domain::{
    CardQr, CheckCall, Claims, DatePrecision, Door, FieldChecks, FieldOutcome, Gender,
    NameMatchLevel, OldIdNumber, PartialDate, PersonName, PersonalIdNumber, Purpose, Reason,
    RequestId, Verdict,
};
use crate::grpc::error::FieldViolation;
use crate::pb;
use crate::verify::{VerifyCommand, VerifyOutcome};

/// Collects the violations of one request while parsing its fields.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn check<T, E>(
        &mut self,
        field: &'static str,
        result: Result<T, E>,
        reason: impl Fn(&E) -> &'static str,
    ) -> Option<T>
    where
        E: std::fmt::Display,
    {
        result
            .map_err(|e| self.0.push(FieldViolation::new(field, reason(&e), &e)))
            .ok()
    }

    /// The two fields every request about a person carries.
    fn request_id_and_number(
        &mut self,
        request_id: &str,
        id_number: &str,
    ) -> (Option<RequestId>, Option<PersonalIdNumber>) {
        (
            self.check("request_id", RequestId::parse(request_id), |e| {
                e.reason_code()
            }),
            self.check("id_number", PersonalIdNumber::parse(id_number), |e| {
                e.reason_code()
            }),
        )
    }

    fn push(&mut self, field: &'static str, reason: &'static str, description: &str) {
        self.0.push(FieldViolation::new(field, reason, description));
    }
}

impl TryFrom<pb::VerifyRequest> for VerifyCommand {
    type Error = Vec<FieldViolation>;

    fn try_from(request: pb::VerifyRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let (request_id, id_number) =
            v.request_id_and_number(&request.request_id, &request.id_number);
        let claims = parse_claims(request.claims.unwrap_or_default(), &mut v);
        let purpose = parse_purpose(request.purpose, &mut v);
        let name_match = parse_name_match(request.name_match, &mut v);
        match (request_id, id_number, claims, purpose, name_match) {
            (Some(request_id), Some(id_number), Some(claims), Some(purpose), Some(name_match))
                if v.0.is_empty() =>
            {
                Ok(VerifyCommand {
                    door: Door::Grpc,
                    request_id,
                    id_number,
                    claims,
                    purpose,
                    name_match,
                })
            }
            _ => Err(v.0),
        }
    }
}

impl TryFrom<pb::VerifyCardQrRequest> for VerifyCommand {
    type Error = Vec<FieldViolation>;

    /// The card's fields become the claims: ID number, name, birth date,
    /// gender and, when printed, the old CMND number.
    fn try_from(request: pb::VerifyCardQrRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let request_id = v.check("request_id", RequestId::parse(&request.request_id), |e| {
            e.reason_code()
        });
        let card = CardQr::parse(&request.qr_payload)
            .map_err(|errors| {
                for e in errors {
                    v.push(e.field.path(), e.reason, &e.description);
                }
            })
            .ok();
        let purpose = parse_purpose(request.purpose, &mut v);
        let name_match = parse_name_match(request.name_match, &mut v);
        match (request_id, card, purpose, name_match) {
            (Some(request_id), Some(card), Some(purpose), Some(name_match)) if v.0.is_empty() => {
                Ok(VerifyCommand {
                    door: Door::Grpc,
                    request_id,
                    id_number: card.id_number,
                    claims: Claims {
                        full_name: Some(card.full_name),
                        date_of_birth: Some(card.date_of_birth),
                        gender: Some(card.gender),
                        old_id_number: card.old_id_number,
                    },
                    purpose,
                    name_match,
                })
            }
            _ => Err(v.0),
        }
    }
}

impl TryFrom<pb::ListAccessHistoryRequest> for HistoryQuery {
    type Error = Vec<FieldViolation>;

    fn try_from(request: pb::ListAccessHistoryRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let (request_id, id_number) =
            v.request_id_and_number(&request.request_id, &request.id_number);
        let page_size = match u32::try_from(request.page_size) {
            Ok(0) => Some(DEFAULT_PAGE_SIZE),
            Ok(n) => Some(n),
            Err(_) => {
                v.push("page_size", "PAGE_SIZE_NEGATIVE", "must not be negative");
                None
            }
        };
        let before = if request.page_token.is_empty() {
            Some(None)
        } else {
            let seq = parse_page_token(&request.page_token);
            if seq.is_none() {
                v.push(
                    "page_token",
                    "PAGE_TOKEN_INVALID",
                    "is not a token this service gave",
                );
            }
            seq.map(Some)
        };
        match (request_id, id_number, page_size, before) {
            (Some(request_id), Some(id_number), Some(page_size), Some(before))
                if v.0.is_empty() =>
            {
                Ok(HistoryQuery {
                    request_id,
                    id_number,
                    page_size,
                    before,
                    door: Door::Grpc,
                })
            }
            _ => Err(v.0),
        }
    }
}

/// Page tokens say where the next page starts; they are opaque to callers
/// only so that their form may change.
const PAGE_TOKEN_PREFIX: &str = "h1.";

fn page_token(before: i64) -> String {
    Base64UrlUnpadded::encode_string(format!("{PAGE_TOKEN_PREFIX}{before}").as_bytes())
}

fn parse_page_token(token: &str) -> Option<i64> {
    let bytes = Base64UrlUnpadded::decode_vec(token).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let seq: i64 = text.strip_prefix(PAGE_TOKEN_PREFIX)?.parse().ok()?;
    (seq > 0).then_some(seq)
}

fn access_kind(kind: AuditKind) -> pb::AccessKind {
    match kind {
        AuditKind::Check(CheckCall::Verify) => pb::AccessKind::Verify,
        AuditKind::Check(CheckCall::BatchItem) => pb::AccessKind::VerifyBatch,
        AuditKind::Check(CheckCall::CardQr) => pb::AccessKind::VerifyCardQr,
        AuditKind::AccessHistory => pb::AccessKind::AccessHistory,
    }
}

/// One audit row as the access history shows it; `agency_name` looks up
/// the display name of an agency id.
pub fn access_record(
    record: AuditRecord,
    agency_name: impl Fn(&str) -> String,
) -> pb::AccessRecord {
    let e = record.entry;
    // Rows spell enumerated values as the proto does; an unknown spelling
    // (none is written) shows as unspecified.
    let purpose = pb::Purpose::from_str_name(&e.purpose).unwrap_or(pb::Purpose::Unspecified);
    let verdict = pb::Verdict::from_str_name(&e.verdict).unwrap_or(pb::Verdict::Unspecified);
    let reason = pb::Reason::from_str_name(&e.reason).unwrap_or(pb::Reason::Unspecified);
    pb::AccessRecord {
        time: Some(pbjson_types::Timestamp {
            seconds: e.at_us.div_euclid(1_000_000),
            nanos: i32::try_from(e.at_us.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
        }),
        agency_name: agency_name(&e.agency),
        agency_id: e.agency,
        kind: access_kind(e.kind).into(),
        purpose: purpose.into(),
        verdict: verdict.into(),
        reason: reason.into(),
        request_id: e.request_id,
        attestation_id: e.attestation_id,
        audit_seq: record.seq,
        door: e.door.name().to_owned(),
    }
}

pub fn history_response(
    page: HistoryPage,
    agency_name: impl Fn(&str) -> String,
) -> pb::ListAccessHistoryResponse {
    pb::ListAccessHistoryResponse {
        records: page
            .records
            .into_iter()
            .map(|r| access_record(r, &agency_name))
            .collect(),
        next_page_token: page.next_before.map(page_token).unwrap_or_default(),
    }
}

fn parse_claims(claims: pb::Claims, v: &mut Violations) -> Option<Claims> {
    let full_name = if claims.full_name.is_empty() {
        Some(None)
    } else {
        v.check(
            "claims.full_name",
            PersonName::parse(&claims.full_name),
            |e| e.reason_code(),
        )
        .map(Some)
    };
    let date = claims.date_of_birth.unwrap_or_default();
    let date_of_birth = v.check(
        "claims.date_of_birth",
        PartialDate::from_parts(date.year, date.month, date.day),
        |e| e.reason_code(),
    );
    let gender = match pb::Gender::try_from(claims.gender) {
        Ok(pb::Gender::Unspecified) => Some(None),
        Ok(pb::Gender::Male) => Some(Some(Gender::Male)),
        Ok(pb::Gender::Female) => Some(Some(Gender::Female)),
        Err(_) => {
            v.push(
                "claims.gender",
                "GENDER_UNKNOWN",
                "is not a known gender value",
            );
            None
        }
    };
    let old_id_number = if claims.old_id_number.is_empty() {
        Some(None)
    } else {
        v.check(
            "claims.old_id_number",
            OldIdNumber::parse(&claims.old_id_number),
            |_| "OLD_ID_NUMBER_FORMAT",
        )
        .map(Some)
    };
    let claims = Claims {
        full_name: full_name?,
        date_of_birth: date_of_birth?,
        gender: gender?,
        old_id_number: old_id_number?,
    };
    if !claims.identifies_someone() {
        v.push(
            "claims",
            "CLAIMS_EMPTY",
            "claim a full_name, an old_id_number or a date_of_birth with at least its month: \
             the birth year and gender alone are written in the ID number itself",
        );
        return None;
    }
    Some(claims)
}

fn parse_purpose(value: i32, v: &mut Violations) -> Option<Purpose> {
    match pb::Purpose::try_from(value) {
        Ok(pb::Purpose::Healthcare) => Some(Purpose::Healthcare),
        Ok(pb::Purpose::Examination) => Some(Purpose::Examination),
        Ok(pb::Purpose::SocialInsurance) => Some(Purpose::SocialInsurance),
        Ok(pb::Purpose::PublicService) => Some(Purpose::PublicService),
        Ok(pb::Purpose::Unspecified) => {
            v.push(
                "purpose",
                "PURPOSE_UNSPECIFIED",
                "must name the purpose of the check",
            );
            None
        }
        Err(_) => {
            v.push("purpose", "PURPOSE_UNKNOWN", "is not a known purpose");
            None
        }
    }
}

fn parse_name_match(value: i32, v: &mut Violations) -> Option<NameMatchLevel> {
    match pb::NameMatch::try_from(value) {
        Ok(pb::NameMatch::Unspecified | pb::NameMatch::Exact) => Some(NameMatchLevel::Exact),
        Ok(pb::NameMatch::Folded) => Some(NameMatchLevel::Folded),
        Ok(pb::NameMatch::Partial) => Some(NameMatchLevel::Partial),
        Err(_) => {
            v.push(
                "name_match",
                "NAME_MATCH_UNKNOWN",
                "is not a known name match level",
            );
            None
        }
    }
}

fn verdict(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::Verified => pb::Verdict::Verified,
        Verdict::NotVerified(_) => pb::Verdict::NotVerified,
    }
}

fn reason(r: Reason) -> pb::Reason {
    match r {
        Reason::NotFound => pb::Reason::NotFound,
        Reason::FieldMismatch => pb::Reason::FieldMismatch,
        Reason::Deceased => pb::Reason::Deceased,
        Reason::Cancelled => pb::Reason::Cancelled,
    }
}

fn outcome(o: FieldOutcome) -> i32 {
    match o {
        FieldOutcome::Match => pb::FieldOutcome::Match,
        FieldOutcome::Mismatch => pb::FieldOutcome::Mismatch,
        FieldOutcome::NotClaimed => pb::FieldOutcome::NotClaimed,
    }
    .into()
}

fn name_level(l: Option<NameMatchLevel>) -> pb::NameMatch {
    match l {
        None => pb::NameMatch::Unspecified,
        Some(NameMatchLevel::Exact) => pb::NameMatch::Exact,
        Some(NameMatchLevel::Folded) => pb::NameMatch::Folded,
        Some(NameMatchLevel::Partial) => pb::NameMatch::Partial,
    }
}

fn precision(p: DatePrecision) -> pb::DatePrecision {
    match p {
        DatePrecision::Year => pb::DatePrecision::Year,
        DatePrecision::Month => pb::DatePrecision::Month,
        DatePrecision::Day => pb::DatePrecision::Day,
    }
}

fn checks(c: FieldChecks) -> pb::FieldChecks {
    pb::FieldChecks {
        full_name: Some(pb::NameCheck {
            outcome: outcome(c.full_name.outcome),
            level: name_level(c.full_name.level).into(),
        }),
        date_of_birth: Some(pb::DateCheck {
            outcome: outcome(c.date_of_birth.outcome),
            record_precision: precision(c.date_of_birth.record_precision).into(),
        }),
        gender: Some(pb::FieldCheck {
            outcome: outcome(c.gender),
        }),
        old_id_number: Some(pb::FieldCheck {
            outcome: outcome(c.old_id_number),
        }),
    }
}

impl From<VerifyOutcome> for pb::VerifyResponse {
    fn from(o: VerifyOutcome) -> Self {
        pb::VerifyResponse {
            request_id: o.request_id.as_str().to_owned(),
            verdict: verdict(o.verdict).into(),
            reason: o.reason.map_or(pb::Reason::Unspecified, reason).into(),
            checks: o.checks.map(checks),
            attestation: o.attestation,
            attestation_id: o.attestation_id,
            data_as_of: o
                .data_as_of
                .map(|seconds| pbjson_types::Timestamp { seconds, nanos: 0 }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Spelled;

    fn request() -> pb::VerifyRequest {
        pb::VerifyRequest {
            request_id: "r-1".into(),
            id_number: "082090012345".into(),
            claims: Some(pb::Claims {
                full_name: "Nguyễn Văn An".into(),
                date_of_birth: Some(pb::PartialDate {
                    year: 1990,
                    month: 5,
                    day: 0,
                }),
                gender: pb::Gender::Male.into(),
                old_id_number: "312345678".into(),
            }),
            purpose: pb::Purpose::Healthcare.into(),
            name_match: pb::NameMatch::Unspecified.into(),
        }
    }

    fn fields(
        result: Result<VerifyCommand, Vec<FieldViolation>>,
    ) -> Vec<(&'static str, &'static str)> {
        result
            .unwrap_err()
            .iter()
            .map(|v| (v.field, v.reason))
            .collect()
    }

    #[test]
    fn a_good_request_parses() {
        let command = VerifyCommand::try_from(request()).unwrap();
        assert_eq!(command.name_match, NameMatchLevel::Exact);
        assert_eq!(command.purpose, Purpose::Healthcare);
        assert_eq!(command.claims.gender, Some(Gender::Male));
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = pb::VerifyRequest {
            request_id: "has space".into(),
            id_number: "12345".into(),
            claims: Some(pb::Claims {
                full_name: "R2D2".into(),
                date_of_birth: Some(pb::PartialDate {
                    year: 1990,
                    month: 2,
                    day: 30,
                }),
                gender: 7,
                old_id_number: "12".into(),
            }),
            purpose: pb::Purpose::Unspecified.into(),
            name_match: 9,
        };
        assert_eq!(
            fields(VerifyCommand::try_from(bad)),
            [
                ("request_id", "REQUEST_ID_BAD_CHARACTER"),
                ("id_number", "ID_NUMBER_FORMAT"),
                ("claims.full_name", "NAME_BAD_CHARACTER"),
                ("claims.date_of_birth", "DATE_IMPOSSIBLE"),
                ("claims.gender", "GENDER_UNKNOWN"),
                ("claims.old_id_number", "OLD_ID_NUMBER_FORMAT"),
                ("purpose", "PURPOSE_UNSPECIFIED"),
                ("name_match", "NAME_MATCH_UNKNOWN"),
            ]
        );
    }

    #[test]
    fn a_check_must_claim_something() {
        let mut r = request();
        r.claims = Some(pb::Claims {
            gender: pb::Gender::Male.into(),
            ..Default::default()
        });
        assert_eq!(
            fields(VerifyCommand::try_from(r)),
            [("claims", "CLAIMS_EMPTY")]
        );
    }

    #[test]
    fn the_numbers_own_year_and_gender_identify_nobody() {
        let mut r = request();
        r.claims = Some(pb::Claims {
            date_of_birth: Some(pb::PartialDate {
                year: 1990,
                month: 0,
                day: 0,
            }),
            gender: pb::Gender::Male.into(),
            ..Default::default()
        });
        assert_eq!(
            fields(VerifyCommand::try_from(r)),
            [("claims", "CLAIMS_EMPTY")]
        );
    }

    #[test]
    fn violations_never_echo_the_input() {
        let mut r = request();
        r.id_number = "08209001234X".into();
        let violations = VerifyCommand::try_from(r).unwrap_err();
        assert!(
            violations
                .iter()
                .all(|v| !v.description.contains("0820900"))
        );
    }

    #[test]
    fn attestation_names_equal_the_proto_names() {
        for p in Purpose::ALL {
            let proto = pb::Purpose::from_str_name(p.name()).unwrap();
            assert_eq!(
                parse_purpose(proto.into(), &mut Violations::default()),
                Some(p)
            );
        }
        for r in [
            Reason::NotFound,
            Reason::FieldMismatch,
            Reason::Deceased,
            Reason::Cancelled,
        ] {
            assert_eq!(r.name(), reason(r).as_str_name());
        }
        for v in [Verdict::Verified, Verdict::NotVerified(Reason::NotFound)] {
            assert_eq!(v.kind().name(), verdict(v).as_str_name());
        }
        for o in [
            FieldOutcome::Match,
            FieldOutcome::Mismatch,
            FieldOutcome::NotClaimed,
        ] {
            assert_eq!(
                Some(o.name()),
                pb::FieldOutcome::try_from(outcome(o))
                    .ok()
                    .map(|x| x.as_str_name())
            );
        }
        for l in [
            NameMatchLevel::Exact,
            NameMatchLevel::Folded,
            NameMatchLevel::Partial,
        ] {
            assert_eq!(l.name(), name_level(Some(l)).as_str_name());
        }
        for p in [
            DatePrecision::Year,
            DatePrecision::Month,
            DatePrecision::Day,
        ] {
            assert_eq!(p.name(), precision(p).as_str_name());
        }
    }

    fn history_request() -> pb::ListAccessHistoryRequest {
        pb::ListAccessHistoryRequest {
            request_id: "petition-2026-0042".into(),
            id_number: "082090012345".into(),
            page_size: 0,
            page_token: String::new(),
        }
    }

    #[test]
    fn history_requests_parse_with_their_page() {
        let query = HistoryQuery::try_from(history_request()).unwrap();
        assert_eq!((query.page_size, query.before), (DEFAULT_PAGE_SIZE, None));
        let query = HistoryQuery::try_from(pb::ListAccessHistoryRequest {
            page_size: 7,
            page_token: page_token(1234),
            ..history_request()
        })
        .unwrap();
        assert_eq!((query.page_size, query.before), (7, Some(1234)));
    }

    #[test]
    fn bad_history_fields_are_named() {
        let violations = HistoryQuery::try_from(pb::ListAccessHistoryRequest {
            request_id: String::new(),
            id_number: "12345".into(),
            page_size: -1,
            page_token: "not-ours".into(),
        })
        .unwrap_err();
        let fields: Vec<_> = violations.iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            ["request_id", "id_number", "page_size", "page_token"]
        );
        for token in [
            page_token(0),
            page_token(-5),
            Base64UrlUnpadded::encode_string(b"h2.5"),
        ] {
            assert_eq!(parse_page_token(&token), None);
        }
    }

    #[test]
    fn every_audit_kind_has_its_access_kind() {
        let names: Vec<_> = AuditKind::ALL
            .iter()
            .map(|k| access_kind(*k).as_str_name())
            .collect();
        assert_eq!(
            names,
            [
                "ACCESS_KIND_VERIFY",
                "ACCESS_KIND_VERIFY_BATCH",
                "ACCESS_KIND_VERIFY_CARD_QR",
                "ACCESS_KIND_ACCESS_HISTORY"
            ]
        );
    }
}
