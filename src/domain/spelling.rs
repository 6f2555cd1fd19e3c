//! One spelling per enumerated value: the name the proto gives it
//! (`PURPOSE_HEALTHCARE`, `REASON_NOT_FOUND`, …), which the attestation,
//! the audit trail and the logs all write, as protobuf's JSON mapping
//! does. Each value is spelled here once; everything that writes or reads
//! a name goes through [`Spelled`]. (The configuration file has its own,
//! lower-case spelling of a purpose: an operator's, at that edge only.)

use super::{DatePrecision, FieldOutcome, NameMatchLevel, Purpose, Reason, VerdictKind};

/// An enumeration with one name per value.
pub trait Spelled: Copy + Sized + 'static {
    /// Every value.
    const ALL: &'static [Self];

    fn name(self) -> &'static str;

    /// The value named `name`, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }
}

macro_rules! spelled {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl Spelled for $ty {
            const ALL: &'static [Self] = &[$(Self::$variant),+];

            fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }
    };
}

// `Purpose::ALL` (an array, inherent) is the same list, in the same order.
spelled!(Purpose {
    Healthcare => "PURPOSE_HEALTHCARE",
    Examination => "PURPOSE_EXAMINATION",
    SocialInsurance => "PURPOSE_SOCIAL_INSURANCE",
    PublicService => "PURPOSE_PUBLIC_SERVICE",
});

spelled!(VerdictKind {
    Verified => "VERDICT_VERIFIED",
    NotVerified => "VERDICT_NOT_VERIFIED",
});

spelled!(Reason {
    NotFound => "REASON_NOT_FOUND",
    FieldMismatch => "REASON_FIELD_MISMATCH",
    Deceased => "REASON_DECEASED",
    Cancelled => "REASON_CANCELLED",
});

spelled!(FieldOutcome {
    Match => "FIELD_OUTCOME_MATCH",
    Mismatch => "FIELD_OUTCOME_MISMATCH",
    NotClaimed => "FIELD_OUTCOME_NOT_CLAIMED",
});

spelled!(NameMatchLevel {
    Exact => "NAME_MATCH_EXACT",
    Folded => "NAME_MATCH_FOLDED",
    Partial => "NAME_MATCH_PARTIAL",
});

spelled!(DatePrecision {
    Year => "DATE_PRECISION_YEAR",
    Month => "DATE_PRECISION_MONTH",
    Day => "DATE_PRECISION_DAY",
});

/// `#[serde(with = "by_name")]`: a [`Spelled`] value as its name.
pub mod by_name {
    use super::Spelled;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<T: Spelled, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.name())
    }

    pub fn deserialize<'de, T: Spelled, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        T::from_name(&name).ok_or_else(|| D::Error::custom(format!("unknown name {name:?}")))
    }

    /// The same, for an optional value (absent: `None`).
    pub mod option {
        use super::Spelled;
        use serde::{Deserialize, Deserializer, Serializer, de::Error};

        pub fn serialize<T: Spelled, S: Serializer>(
            value: &Option<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(v) => s.serialize_str(v.name()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, T: Spelled, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<T>, D::Error> {
            match <Option<std::borrow::Cow<'de, str>>>::deserialize(d)? {
                Some(name) => T::from_name(&name)
                    .map(Some)
                    .ok_or_else(|| D::Error::custom(format!("unknown name {name:?}"))),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: Spelled + PartialEq + std::fmt::Debug>() {
        let mut names: Vec<_> = T::ALL.iter().map(|v| v.name()).collect();
        for v in T::ALL {
            assert_eq!(T::from_name(v.name()), Some(*v));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), T::ALL.len(), "one name per value");
        assert_eq!(T::from_name("NOT_A_NAME"), None);
    }

    #[test]
    fn every_name_reads_back_as_its_value() {
        round_trips::<Purpose>();
        round_trips::<VerdictKind>();
        round_trips::<Reason>();
        round_trips::<FieldOutcome>();
        round_trips::<NameMatchLevel>();
        round_trips::<DatePrecision>();
        assert_eq!(<Purpose as Spelled>::ALL, Purpose::ALL.as_slice());
    }
}
