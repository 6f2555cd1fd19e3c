//! The attestation's spelling of enumerated values: as the proto spells
//! them (`VERDICT_VERIFIED`, `REASON_NOT_FOUND`, ...), as protobuf's JSON
//! mapping does. The gRPC layer's tests hold these names equal to the
//! generated ones.

use crate::attest::{ChecksClaim, FieldClaim};
use crate::domain::{
    DatePrecision, FieldChecks, FieldOutcome, NameMatchLevel, Purpose, Reason, Verdict,
};

pub fn purpose_name(p: Purpose) -> &'static str {
    match p {
        Purpose::Healthcare => "PURPOSE_HEALTHCARE",
        Purpose::Examination => "PURPOSE_EXAMINATION",
        Purpose::SocialInsurance => "PURPOSE_SOCIAL_INSURANCE",
        Purpose::PublicService => "PURPOSE_PUBLIC_SERVICE",
    }
}

pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Verified => "VERDICT_VERIFIED",
        Verdict::NotVerified(_) => "VERDICT_NOT_VERIFIED",
    }
}

pub fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::NotFound => "REASON_NOT_FOUND",
        Reason::FieldMismatch => "REASON_FIELD_MISMATCH",
        Reason::Deceased => "REASON_DECEASED",
        Reason::Cancelled => "REASON_CANCELLED",
    }
}

pub fn outcome_name(o: FieldOutcome) -> &'static str {
    match o {
        FieldOutcome::Match => "FIELD_OUTCOME_MATCH",
        FieldOutcome::Mismatch => "FIELD_OUTCOME_MISMATCH",
        FieldOutcome::NotClaimed => "FIELD_OUTCOME_NOT_CLAIMED",
    }
}

pub fn name_level_name(l: NameMatchLevel) -> &'static str {
    match l {
        NameMatchLevel::Exact => "NAME_MATCH_EXACT",
        NameMatchLevel::Folded => "NAME_MATCH_FOLDED",
        NameMatchLevel::Partial => "NAME_MATCH_PARTIAL",
    }
}

pub fn precision_name(p: DatePrecision) -> &'static str {
    match p {
        DatePrecision::Year => "DATE_PRECISION_YEAR",
        DatePrecision::Month => "DATE_PRECISION_MONTH",
        DatePrecision::Day => "DATE_PRECISION_DAY",
    }
}

pub(super) fn checks_claim(c: &FieldChecks) -> ChecksClaim {
    let plain = |o: FieldOutcome| FieldClaim {
        outcome: outcome_name(o).to_owned(),
        level: None,
        record_precision: None,
    };
    ChecksClaim {
        full_name: FieldClaim {
            level: c.full_name.level.map(|l| name_level_name(l).to_owned()),
            ..plain(c.full_name.outcome)
        },
        date_of_birth: FieldClaim {
            record_precision: Some(precision_name(c.date_of_birth.record_precision).to_owned()),
            ..plain(c.date_of_birth.outcome)
        },
        gender: plain(c.gender),
        old_id_number: plain(c.old_id_number),
    }
}
