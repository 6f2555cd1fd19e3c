//! Dates of birth whose parts may be unknown.
//!
//! The population database holds some births with only a year, or a year
//! and a month. A claim matches a record when they agree on every part both
//! know; the answer also says how precise the record is, so that a full date
//! claimed against a year-only record is visibly a weaker match.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DatePrecision {
    Year,
    Month,
    Day,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("the year must be between 1 and 9999")]
    Year,
    #[error("the month must be between 1 and 12")]
    Month,
    #[error("the day does not exist in that month")]
    Day,
    #[error("a month needs a year, and a day needs a month")]
    MissingPart,
    #[error("must be YYYY, YYYY-MM or YYYY-MM-DD")]
    Format,
}

impl DateError {
    pub fn reason_code(self) -> &'static str {
        match self {
            Self::Year | Self::Month | Self::Day => "DATE_IMPOSSIBLE",
            Self::MissingPart => "DATE_MISSING_PART",
            Self::Format => "DATE_FORMAT",
        }
    }
}

/// A calendar-valid date of which at least the year is known.
/// `Debug` hides it: a birth date is personal data.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartialDate {
    year: u16,
    month: Option<u8>,
    day: Option<u8>,
}

impl PartialDate {
    /// From parts where 0 means unknown. `Ok(None)` when all are unknown.
    pub fn from_parts(year: u32, month: u32, day: u32) -> Result<Option<Self>, DateError> {
        match (year, month, day) {
            (0, 0, 0) => Ok(None),
            (0, _, _) | (_, 0, 1..) => Err(DateError::MissingPart),
            (y, m, d) => {
                let year = u16::try_from(y).ok().filter(|y| (1..=9999).contains(y));
                let year = year.ok_or(DateError::Year)?;
                let month = match m {
                    0 => None,
                    1..=12 => Some(m as u8),
                    _ => return Err(DateError::Month),
                };
                let day = match (month, d) {
                    (_, 0) => None,
                    (Some(month), d) if d <= u32::from(days_in_month(year, month)) => Some(d as u8),
                    _ => return Err(DateError::Day),
                };
                Ok(Some(Self { year, month, day }))
            }
        }
    }

    /// Parses `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, as in the mirror export.
    pub fn parse_iso(input: &str) -> Result<Self, DateError> {
        let mut parts = input.split('-');
        let mut next = |len: usize| -> Result<u32, DateError> {
            match parts.next() {
                None => Ok(0),
                Some(p) if p.len() == len && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map_err(|_| DateError::Format)
                }
                Some(_) => Err(DateError::Format),
            }
        };
        let (year, month, day) = (next(4)?, next(2)?, next(2)?);
        // `00` is no month or day: an unknown part is left out, not zeroed.
        let zeroed = (month == 0 && input.len() > 4) || (day == 0 && input.len() > 7);
        if parts.next().is_some() || zeroed {
            return Err(DateError::Format);
        }
        Self::from_parts(year, month, day)?.ok_or(DateError::Format)
    }

    pub fn year(&self) -> u16 {
        self.year
    }

    pub fn month(&self) -> Option<u8> {
        self.month
    }

    pub fn day(&self) -> Option<u8> {
        self.day
    }

    pub fn precision(&self) -> DatePrecision {
        match (self.month, self.day) {
            (_, Some(_)) => DatePrecision::Day,
            (Some(_), None) => DatePrecision::Month,
            (None, _) => DatePrecision::Year,
        }
    }

    /// Whether two dates agree on every part both know.
    pub fn agrees_with(&self, other: &PartialDate) -> bool {
        fn same<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
        }
        self.year == other.year && same(self.month, other.month) && same(self.day, other.day)
    }

    /// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`. Personal data: never log it.
    pub fn to_iso(&self) -> String {
        match (self.month, self.day) {
            (Some(m), Some(d)) => format!("{:04}-{m:02}-{d:02}", self.year),
            (Some(m), None) => format!("{:04}-{m:02}", self.year),
            _ => format!("{:04}", self.year),
        }
    }
}

impl fmt::Debug for PartialDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartialDate({:?})", self.precision())
    }
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(y: u32, m: u32, d: u32) -> PartialDate {
        PartialDate::from_parts(y, m, d).unwrap().unwrap()
    }

    #[test]
    fn parts_and_precision() {
        assert_eq!(PartialDate::from_parts(0, 0, 0), Ok(None));
        assert_eq!(date(1990, 0, 0).precision(), DatePrecision::Year);
        assert_eq!(date(1990, 5, 0).precision(), DatePrecision::Month);
        assert_eq!(date(1990, 5, 31).precision(), DatePrecision::Day);
        assert_eq!(
            PartialDate::from_parts(0, 5, 1),
            Err(DateError::MissingPart)
        );
        assert_eq!(
            PartialDate::from_parts(1990, 0, 1),
            Err(DateError::MissingPart)
        );
        assert_eq!(PartialDate::from_parts(1990, 13, 0), Err(DateError::Month));
        assert_eq!(PartialDate::from_parts(1990, 4, 31), Err(DateError::Day));
        assert_eq!(PartialDate::from_parts(2001, 2, 29), Err(DateError::Day));
        assert!(PartialDate::from_parts(2000, 2, 29).is_ok());
        assert_eq!(PartialDate::from_parts(1900, 2, 29), Err(DateError::Day));
        assert_eq!(PartialDate::from_parts(10000, 1, 1), Err(DateError::Year));
    }

    #[test]
    fn agreement_on_known_parts() {
        assert!(date(1990, 5, 17).agrees_with(&date(1990, 0, 0)));
        assert!(date(1990, 5, 17).agrees_with(&date(1990, 5, 0)));
        assert!(!date(1990, 5, 17).agrees_with(&date(1990, 6, 0)));
        assert!(!date(1990, 5, 17).agrees_with(&date(1991, 0, 0)));
        assert!(!date(1990, 5, 17).agrees_with(&date(1990, 5, 18)));
        assert!(date(1990, 0, 0).agrees_with(&date(1990, 12, 31)));
    }

    #[test]
    fn iso_round_trip_and_rejects() {
        for s in ["1990", "1990-05", "1990-05-17", "0001-01-01"] {
            assert_eq!(PartialDate::parse_iso(s).unwrap().to_iso(), s);
        }
        for s in [
            "",
            "90",
            "1990-5",
            "1990-05-1",
            "1990-13",
            "1990-02-30",
            "1990--01",
            "1990-05-17-",
            "199a",
            "1990-00",
            "1990-05-00",
            "1990-00-00",
        ] {
            assert!(PartialDate::parse_iso(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn debug_hides_the_date() {
        assert!(!format!("{:?}", date(1990, 5, 17)).contains("1990"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,12}", y in any::<u32>(), m in any::<u32>(), d in any::<u32>()) {
            let _ = PartialDate::parse_iso(&s);
            let _ = PartialDate::from_parts(y, m, d);
        }

        #[test]
        fn valid_dates_round_trip(y in 1u32..=9999, m in 0u32..=12, d in 0u32..=28) {
            let d = if m == 0 { 0 } else { d };
            let date = PartialDate::from_parts(y, m, d).unwrap().unwrap();
            prop_assert_eq!(PartialDate::parse_iso(&date.to_iso()), Ok(date));
            prop_assert!(date.agrees_with(&date));
        }
    }
}
