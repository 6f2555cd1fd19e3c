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
    /// A check must claim something that identifies the person beyond the
    /// number itself; otherwise it would only say whether a number exists.
    pub fn identifies_someone(&self) -> bool {
        self.full_name.is_some() || self.date_of_birth.is_some() || self.old_id_number.is_some()
    }
}
