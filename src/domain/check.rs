//! The verdict: a claim set compared with the mirror's record.
//!
//! Verified means the number exists, the record is active (alive, card not
//! cancelled) and every claimed field matches. A claimed gender or birth
//! year must also agree with what the number itself encodes.
//!
//! When a claimed field mismatches, the reason is `FieldMismatch` even if the
//! record is deceased or cancelled: the caller may be asking about someone
//! else, and the status of a person they did not identify is not theirs to
//! learn.

use super::{
    CitizenRecord, CitizenStatus, Claims, DatePrecision, NameMatchLevel, PersonalIdNumber,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    NotFound,
    FieldMismatch,
    Deceased,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Verified,
    NotVerified(Reason),
}

/// A verdict without its reason: what an attestation states, where the
/// reason may be withheld from the agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerdictKind {
    Verified,
    NotVerified,
}

impl Verdict {
    /// A failure the guard counts against the agency: the number is
    /// unknown or a claim is wrong, as when numbers are guessed. (A
    /// deceased or cancelled record is an answer about a real person.)
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::NotVerified(Reason::NotFound | Reason::FieldMismatch)
        )
    }

    pub fn kind(self) -> VerdictKind {
        match self {
            Self::Verified => VerdictKind::Verified,
            Self::NotVerified(_) => VerdictKind::NotVerified,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOutcome {
    Match,
    Mismatch,
    NotClaimed,
}

impl FieldOutcome {
    fn of(claimed: bool, matches: bool) -> Self {
        match (claimed, matches) {
            (false, _) => Self::NotClaimed,
            (true, true) => Self::Match,
            (true, false) => Self::Mismatch,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NameCheck {
    pub outcome: FieldOutcome,
    /// The strictest level at which the names agree, claimed or not.
    pub level: Option<NameMatchLevel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateCheck {
    pub outcome: FieldOutcome,
    pub record_precision: DatePrecision,
}

/// Per-field outcomes; present only when the number was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldChecks {
    pub full_name: NameCheck,
    pub date_of_birth: DateCheck,
    pub gender: FieldOutcome,
    pub old_id_number: FieldOutcome,
}

impl FieldChecks {
    fn all_match(&self) -> bool {
        [
            self.full_name.outcome,
            self.date_of_birth.outcome,
            self.gender,
            self.old_id_number,
        ]
        .iter()
        .all(|o| *o != FieldOutcome::Mismatch)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Assessment {
    pub verdict: Verdict,
    pub checks: Option<FieldChecks>,
}

/// Compares the claims about `id` with its record (`None`: not in the
/// mirror). `accepted` is the least strict name level that counts.
pub fn assess(
    id: &PersonalIdNumber,
    claims: &Claims,
    accepted: NameMatchLevel,
    record: Option<&CitizenRecord>,
) -> Assessment {
    let Some(record) = record else {
        return Assessment {
            verdict: Verdict::NotVerified(Reason::NotFound),
            checks: None,
        };
    };
    let level = claims
        .full_name
        .as_ref()
        .and_then(|n| n.compare(&record.full_name));
    let checks = FieldChecks {
        full_name: NameCheck {
            outcome: FieldOutcome::of(
                claims.full_name.is_some(),
                level.is_some_and(|l| l <= accepted),
            ),
            level,
        },
        date_of_birth: DateCheck {
            outcome: FieldOutcome::of(
                claims.date_of_birth.is_some(),
                claims.date_of_birth.is_some_and(|d| {
                    d.agrees_with(&record.date_of_birth) && d.year() == id.birth_year()
                }),
            ),
            record_precision: record.date_of_birth.precision(),
        },
        gender: FieldOutcome::of(
            claims.gender.is_some(),
            claims
                .gender
                .is_some_and(|g| g == record.gender && g == id.gender()),
        ),
        old_id_number: FieldOutcome::of(
            claims.old_id_number.is_some(),
            claims
                .old_id_number
                .as_ref()
                .is_some_and(|o| record.old_id_numbers.contains(o)),
        ),
    };
    let verdict = match record.status {
        _ if !checks.all_match() => Verdict::NotVerified(Reason::FieldMismatch),
        CitizenStatus::Active => Verdict::Verified,
        CitizenStatus::Deceased => Verdict::NotVerified(Reason::Deceased),
        CitizenStatus::Cancelled => Verdict::NotVerified(Reason::Cancelled),
    };
    Assessment {
        verdict,
        checks: Some(checks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Gender, OldIdNumber, PartialDate, PersonName};
    use FieldOutcome::*;

    fn record() -> CitizenRecord {
        CitizenRecord {
            id_number: PersonalIdNumber::parse("082090012345").unwrap(),
            full_name: PersonName::parse("Nguyễn Văn Đàm").unwrap(),
            date_of_birth: PartialDate::from_parts(1990, 5, 17).unwrap().unwrap(),
            gender: Gender::Male,
            old_id_numbers: vec![OldIdNumber::parse("312345678").unwrap()],
            status: CitizenStatus::Active,
            record_version: 1,
        }
    }

    fn claims(name: &str, dob: (u32, u32, u32), gender: Option<Gender>) -> Claims {
        Claims {
            full_name: (!name.is_empty()).then(|| PersonName::parse(name).unwrap()),
            date_of_birth: PartialDate::from_parts(dob.0, dob.1, dob.2).unwrap(),
            gender,
            old_id_number: None,
        }
    }

    fn run(claims: &Claims, accepted: NameMatchLevel, record: &CitizenRecord) -> Assessment {
        assess(&record.id_number, claims, accepted, Some(record))
    }

    #[test]
    fn all_fields_matching_verifies() {
        let a = run(
            &claims("nguyễn văn đàm", (1990, 5, 17), Some(Gender::Male)),
            NameMatchLevel::Exact,
            &record(),
        );
        assert_eq!(a.verdict, Verdict::Verified);
        let c = a.checks.unwrap();
        assert_eq!(
            (c.full_name.outcome, c.full_name.level),
            (Match, Some(NameMatchLevel::Exact))
        );
        assert_eq!(
            (c.date_of_birth.outcome, c.gender, c.old_id_number),
            (Match, Match, NotClaimed)
        );
    }

    #[test]
    fn name_level_must_be_accepted() {
        let c = claims("NGUYEN VAN DAM", (0, 0, 0), None);
        let strict = run(&c, NameMatchLevel::Exact, &record());
        assert_eq!(strict.verdict, Verdict::NotVerified(Reason::FieldMismatch));
        assert_eq!(
            strict.checks.unwrap().full_name.level,
            Some(NameMatchLevel::Folded)
        );
        assert_eq!(
            run(&c, NameMatchLevel::Folded, &record()).verdict,
            Verdict::Verified
        );
        assert_eq!(
            run(&c, NameMatchLevel::Partial, &record()).verdict,
            Verdict::Verified
        );
    }

    #[test]
    fn each_mismatch_is_reported_on_its_field() {
        let r = record();
        let dob = run(&claims("", (1990, 5, 18), None), NameMatchLevel::Exact, &r);
        assert_eq!(dob.verdict, Verdict::NotVerified(Reason::FieldMismatch));
        assert_eq!(dob.checks.unwrap().date_of_birth.outcome, Mismatch);
        let gender = run(
            &claims("", (0, 0, 0), Some(Gender::Female)),
            NameMatchLevel::Exact,
            &r,
        );
        assert_eq!(gender.checks.unwrap().gender, Mismatch);
        let mut old = claims("", (0, 0, 0), None);
        old.old_id_number = Some(OldIdNumber::parse("999999999").unwrap());
        assert_eq!(
            run(&old, NameMatchLevel::Exact, &r)
                .checks
                .unwrap()
                .old_id_number,
            Mismatch
        );
        old.old_id_number = Some(OldIdNumber::parse("312345678").unwrap());
        assert_eq!(
            run(&old, NameMatchLevel::Exact, &r).verdict,
            Verdict::Verified
        );
    }

    #[test]
    fn claims_must_agree_with_the_number_itself() {
        // The record (wrongly) says female and 1991, but the number says male, 1990.
        let mut r = record();
        r.gender = Gender::Female;
        r.date_of_birth = PartialDate::from_parts(1991, 0, 0).unwrap().unwrap();
        let a = run(
            &claims("", (1991, 0, 0), Some(Gender::Female)),
            NameMatchLevel::Exact,
            &r,
        );
        let c = a.checks.unwrap();
        assert_eq!((c.gender, c.date_of_birth.outcome), (Mismatch, Mismatch));
    }

    #[test]
    fn partial_dates_match_on_known_parts_and_say_so() {
        let mut r = record();
        r.date_of_birth = PartialDate::from_parts(1990, 0, 0).unwrap().unwrap();
        let a = run(&claims("", (1990, 5, 17), None), NameMatchLevel::Exact, &r);
        assert_eq!(a.verdict, Verdict::Verified);
        assert_eq!(
            a.checks.unwrap().date_of_birth.record_precision,
            DatePrecision::Year
        );
    }

    #[test]
    fn status_reasons_only_when_the_claims_match() {
        let mut r = record();
        let good = claims("Nguyễn Văn Đàm", (1990, 0, 0), None);
        let bad = claims("Trần Văn Đàm", (1990, 0, 0), None);
        r.status = CitizenStatus::Deceased;
        assert_eq!(
            run(&good, NameMatchLevel::Exact, &r).verdict,
            Verdict::NotVerified(Reason::Deceased)
        );
        assert_eq!(
            run(&bad, NameMatchLevel::Exact, &r).verdict,
            Verdict::NotVerified(Reason::FieldMismatch)
        );
        r.status = CitizenStatus::Cancelled;
        assert_eq!(
            run(&good, NameMatchLevel::Exact, &r).verdict,
            Verdict::NotVerified(Reason::Cancelled)
        );
    }

    #[test]
    fn not_found_has_no_field_detail() {
        let r = record();
        let a = assess(
            &r.id_number,
            &claims("Nguyễn Văn Đàm", (0, 0, 0), None),
            NameMatchLevel::Exact,
            None,
        );
        assert_eq!(
            a,
            Assessment {
                verdict: Verdict::NotVerified(Reason::NotFound),
                checks: None
            }
        );
    }
}
