//! A citizen as the mirror records them, and what a caller claims about one.

use super::{OldIdNumber, PartialDate, PersonName, PersonalIdNumber};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gender {
    Male,
    Female,
}

impl Gender {
    /// The mirror export's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Male => "male",
            Self::Female => "female",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "male" => Some(Self::Male),
            "female" => Some(Self::Female),
            _ => None,
        }
    }
}

/// Whether the record may verify: only `Active` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CitizenStatus {
    Active,
    Deceased,
    /// The citizen's card was cancelled.
    Cancelled,
}

impl CitizenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deceased => "deceased",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "deceased" => Some(Self::Deceased),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// The matchable part of a mirror record. Every field is personal data;
/// the `Debug` of each hides its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CitizenRecord {
    pub id_number: PersonalIdNumber,
    pub full_name: PersonName,
    pub date_of_birth: PartialDate,
    pub gender: Gender,
    pub old_id_numbers: Vec<OldIdNumber>,
    pub status: CitizenStatus,
    /// Bumped by every update of the record; caches key on it.
    pub record_version: i64,
}

/// What a caller claims. `None` is "not claimed".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub full_name: Option<PersonName>,
    pub date_of_birth: Option<PartialDate>,
    pub gender: Option<Gender>,
    pub old_id_number: Option<OldIdNumber>,
}

impl Claims {
    /// A check must claim something the number itself does not give away:
    /// a full name, an old CMND number, or a birth date with at least its
    /// month. The number encodes its holder's birth year and gender, so a
    /// claim of those alone carries no knowledge, and its answer would
    /// only say whether the number exists.
    pub fn identifies_someone(&self) -> bool {
        self.full_name.is_some()
            || self.old_id_number.is_some()
            || self.date_of_birth.is_some_and(|d| d.month().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_claims_the_number_cannot_give_away_identify() {
        let year = PartialDate::from_parts(1990, 0, 0).unwrap();
        let month = PartialDate::from_parts(1990, 5, 0).unwrap();
        let derivable = [
            Claims::default(),
            Claims {
                gender: Some(Gender::Male),
                ..Claims::default()
            },
            Claims {
                date_of_birth: year,
                gender: Some(Gender::Female),
                ..Claims::default()
            },
        ];
        for claims in derivable {
            assert!(!claims.identifies_someone(), "{claims:?}");
        }
        let identifying = [
            Claims {
                date_of_birth: month,
                ..Claims::default()
            },
            Claims {
                full_name: PersonName::parse("Lê Văn Tám").ok(),
                ..Claims::default()
            },
            Claims {
                old_id_number: OldIdNumber::parse("312345678").ok(),
                date_of_birth: year,
                ..Claims::default()
            },
        ];
        for claims in identifying {
            assert!(claims.identifies_someone(), "{claims:?}");
        }
    }
}
