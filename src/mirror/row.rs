//! A citizen row as a store reads it, checked into domain types in one
//! place for both stores. A row that breaks the schema's promises is
//! `StoreError::Corrupt` — never a silently wrong answer.

use super::{ExportRecord, StoreError};
use crate::clock::UnixSeconds;
use crate::domain::{
    CitizenRecord, CitizenStatus, Gender, OldIdNumber, PartialDate, PersonName, PersonalIdNumber,
};

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("bad {what}"))
}

/// The matchable columns, as stored.
pub struct StoredPerson {
    pub full_name: String,
    /// Year, month and day; `None` is unknown.
    pub birth: [Option<i64>; 3],
    pub gender: String,
    pub old_id_numbers: Vec<String>,
    pub status: String,
}

/// The other columns of the export format, as stored.
pub struct StoredDetails {
    pub id_number: String,
    pub place_of_origin: String,
    pub permanent_residence: String,
    pub household_id: String,
    pub relation_to_head: String,
    pub updated_at: UnixSeconds,
}

impl StoredPerson {
    fn date_of_birth(&self) -> Result<PartialDate, StoreError> {
        let part = |p: Option<i64>| p.map_or(Some(0), |v| u32::try_from(v).ok());
        let [year, month, day] = self.birth.map(part);
        match (year, month, day) {
            (Some(y), Some(m), Some(d)) => PartialDate::from_parts(y, m, d).ok().flatten(),
            _ => None,
        }
        .ok_or_else(|| corrupt("date of birth"))
    }

    fn gender(&self) -> Result<Gender, StoreError> {
        Gender::parse(&self.gender).ok_or_else(|| corrupt("gender"))
    }

    fn status(&self) -> Result<CitizenStatus, StoreError> {
        CitizenStatus::parse(&self.status).ok_or_else(|| corrupt("status"))
    }

    fn old_id_numbers(&self) -> Result<Vec<OldIdNumber>, StoreError> {
        self.old_id_numbers
            .iter()
            .map(|o| OldIdNumber::parse(o).map_err(|_| corrupt("old_id_numbers")))
            .collect()
    }

    pub fn into_record(
        self,
        id: &PersonalIdNumber,
        record_version: i64,
    ) -> Result<CitizenRecord, StoreError> {
        Ok(CitizenRecord {
            id_number: id.clone(),
            full_name: PersonName::parse(&self.full_name).map_err(|_| corrupt("full_name"))?,
            date_of_birth: self.date_of_birth()?,
            gender: self.gender()?,
            old_id_numbers: self.old_id_numbers()?,
            status: self.status()?,
            record_version,
        })
    }

    pub fn into_export(self, details: StoredDetails) -> Result<ExportRecord, StoreError> {
        Ok(ExportRecord {
            id_number: PersonalIdNumber::parse(&details.id_number)
                .map_err(|_| corrupt("id_number"))?,
            date_of_birth: self.date_of_birth()?,
            gender: self.gender()?,
            old_id_numbers: self.old_id_numbers()?,
            status: self.status()?,
            full_name: self.full_name,
            place_of_origin: details.place_of_origin,
            permanent_residence: details.permanent_residence,
            household_id: details.household_id,
            relation_to_head: details.relation_to_head,
            updated_at: details.updated_at,
        })
    }
}
