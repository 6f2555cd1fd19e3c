//! The 12-digit personal identification number (số định danh cá nhân) and
//! the old 9-digit CMND number.
//!
//! Layout of the 12 digits: `PPP C YY RRRRRR` — the province (or country)
//! where the birth was registered, a century-and-gender digit, the last two
//! digits of the birth year, and six random digits. There is no check digit,
//! so only the mirror can say that a number exists; the structure still
//! lets a claimed gender or birth year be checked against the number itself.
//!
//! The prefix is where the birth was *registered*: it is never the person's
//! current province (provinces merged in 2025, numbers did not change).

use std::fmt;

use super::Gender;

/// The 63 provinces of the registration prefix, from
/// `shared/reference/province-codes.csv` (names as they were before the 2025
/// mergers: the prefix records where a birth was registered, then).
/// Codes 100 and up are countries.
pub const PROVINCES: [(u16, &str); 63] = [
    (1, "Hà Nội"),
    (2, "Hà Giang"),
    (4, "Cao Bằng"),
    (6, "Bắc Kạn"),
    (8, "Tuyên Quang"),
    (10, "Lào Cai"),
    (11, "Điện Biên"),
    (12, "Lai Châu"),
    (14, "Sơn La"),
    (15, "Yên Bái"),
    (17, "Hòa Bình"),
    (19, "Thái Nguyên"),
    (20, "Lạng Sơn"),
    (22, "Quảng Ninh"),
    (24, "Bắc Giang"),
    (25, "Phú Thọ"),
    (26, "Vĩnh Phúc"),
    (27, "Bắc Ninh"),
    (30, "Hải Dương"),
    (31, "Hải Phòng"),
    (33, "Hưng Yên"),
    (34, "Thái Bình"),
    (35, "Hà Nam"),
    (36, "Nam Định"),
    (37, "Ninh Bình"),
    (38, "Thanh Hóa"),
    (40, "Nghệ An"),
    (42, "Hà Tĩnh"),
    (44, "Quảng Bình"),
    (45, "Quảng Trị"),
    (46, "Thừa Thiên Huế"),
    (48, "Đà Nẵng"),
    (49, "Quảng Nam"),
    (51, "Quảng Ngãi"),
    (52, "Bình Định"),
    (54, "Phú Yên"),
    (56, "Khánh Hòa"),
    (58, "Ninh Thuận"),
    (60, "Bình Thuận"),
    (62, "Kon Tum"),
    (64, "Gia Lai"),
    (66, "Đắk Lắk"),
    (67, "Đắk Nông"),
    (68, "Lâm Đồng"),
    (70, "Bình Phước"),
    (72, "Tây Ninh"),
    (74, "Bình Dương"),
    (75, "Đồng Nai"),
    (77, "Bà Rịa – Vũng Tàu"),
    (79, "Hồ Chí Minh"),
    (80, "Long An"),
    (82, "Tiền Giang"),
    (83, "Bến Tre"),
    (84, "Trà Vinh"),
    (86, "Vĩnh Long"),
    (87, "Đồng Tháp"),
    (89, "An Giang"),
    (91, "Kiên Giang"),
    (92, "Cần Thơ"),
    (93, "Hậu Giang"),
    (94, "Sóc Trăng"),
    (95, "Bạc Liêu"),
    (96, "Cà Mau"),
];

/// The province name of a registration code, if it is a province.
pub fn province_name(code: u16) -> Option<&'static str> {
    PROVINCES
        .binary_search_by_key(&code, |(c, _)| *c)
        .ok()
        .map(|i| PROVINCES[i].1)
}

/// The first code that names a country rather than a province.
const FIRST_COUNTRY_CODE: u16 = 100;

/// Why a string is not a personal identification number. Each variant is a
/// stable reason code on the wire (see `reason_code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    #[error("must be exactly 12 ASCII digits")]
    NotTwelveDigits,
    #[error("the first three digits are not a known province or country code")]
    UnknownRegistrationCode,
}

impl IdNumberError {
    pub fn reason_code(self) -> &'static str {
        match self {
            Self::NotTwelveDigits => "ID_NUMBER_FORMAT",
            Self::UnknownRegistrationCode => "ID_NUMBER_UNKNOWN_PREFIX",
        }
    }
}

/// A structurally valid personal identification number.
///
/// Holding one means the string was 12 ASCII digits with a known prefix.
/// Its `Debug` masks every digit and it has no `Display`: printing the
/// number takes an explicit [`PersonalIdNumber::expose`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PersonalIdNumber([u8; 12]);

impl PersonalIdNumber {
    pub fn parse(input: &str) -> Result<Self, IdNumberError> {
        let bytes: [u8; 12] = input
            .as_bytes()
            .try_into()
            .map_err(|_| IdNumberError::NotTwelveDigits)?;
        if !bytes.iter().all(u8::is_ascii_digit) {
            return Err(IdNumberError::NotTwelveDigits);
        }
        let id = Self(bytes);
        let code = id.registration_code();
        if code < FIRST_COUNTRY_CODE && province_name(code).is_none() {
            return Err(IdNumberError::UnknownRegistrationCode);
        }
        Ok(id)
    }

    /// The digits, for the mirror query and keyed hashes. Never log them.
    pub fn expose(&self) -> &str {
        // Only ASCII digits are ever stored (checked in `parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    fn digit(&self, index: usize) -> u16 {
        u16::from(self.0[index] - b'0')
    }

    /// The province or country code where the birth was registered.
    pub fn registration_code(&self) -> u16 {
        self.digit(0) * 100 + self.digit(1) * 10 + self.digit(2)
    }

    /// Even digits are male, odd are female.
    pub fn gender(&self) -> Gender {
        if self.digit(3).is_multiple_of(2) {
            Gender::Male
        } else {
            Gender::Female
        }
    }

    /// 0/1 = 1900s, 2/3 = 2000s, 4/5 = 2100s, and so on.
    pub fn birth_year(&self) -> u16 {
        1900 + (self.digit(3) / 2) * 100 + self.digit(4) * 10 + self.digit(5)
    }
}

impl fmt::Debug for PersonalIdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonalIdNumber(************)")
    }
}

/// An old 9-digit identity card (CMND) number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OldIdNumber([u8; 9]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be exactly 9 ASCII digits")]
pub struct OldIdNumberError;

impl OldIdNumber {
    pub fn parse(input: &str) -> Result<Self, OldIdNumberError> {
        let bytes: [u8; 9] = input.as_bytes().try_into().map_err(|_| OldIdNumberError)?;
        if bytes.iter().all(u8::is_ascii_digit) {
            Ok(Self(bytes))
        } else {
            Err(OldIdNumberError)
        }
    }

    pub fn expose(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for OldIdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OldIdNumber(*********)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_structure() {
        let id = PersonalIdNumber::parse("082301012345").unwrap();
        assert_eq!(id.registration_code(), 82);
        assert_eq!(id.gender(), Gender::Female);
        assert_eq!(id.birth_year(), 2001);
        let id = PersonalIdNumber::parse("001085012345").unwrap();
        assert_eq!((id.gender(), id.birth_year()), (Gender::Male, 1985));
        let id = PersonalIdNumber::parse("079499000001").unwrap();
        assert_eq!(id.birth_year(), 2199);
    }

    #[test]
    fn accepts_every_reference_province_and_country_codes() {
        for code in PROVINCES.iter().map(|(c, _)| *c).chain([100, 704, 999]) {
            let s = format!("{code:03}085012345");
            assert!(PersonalIdNumber::parse(&s).is_ok(), "{s}");
        }
    }

    #[test]
    fn rejects_malformed_numbers() {
        for bad in [
            "",
            "08230101234",
            "0823010123456",
            "08230101234a",
            "０82301012345",
            " 82301012345",
        ] {
            assert_eq!(
                PersonalIdNumber::parse(bad),
                Err(IdNumberError::NotTwelveDigits),
                "{bad:?}"
            );
        }
        for bad in ["000085012345", "003085012345", "099085012345"] {
            assert_eq!(
                PersonalIdNumber::parse(bad),
                Err(IdNumberError::UnknownRegistrationCode)
            );
        }
    }

    #[test]
    fn debug_never_shows_digits() {
        let id = PersonalIdNumber::parse("082301012345").unwrap();
        let shown = format!("{id:?} {:?}", Some(&id));
        assert!(!shown.chars().any(|c| c.is_ascii_digit()), "{shown}");
        let old = OldIdNumber::parse("312345678").unwrap();
        assert!(!format!("{old:?}").chars().any(|c| c.is_ascii_digit()));
    }

    #[test]
    fn provinces_are_sorted_for_binary_search() {
        assert!(PROVINCES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(province_name(82), Some("Tiền Giang"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,20}") {
            let _ = PersonalIdNumber::parse(&s);
            let _ = OldIdNumber::parse(&s);
        }

        #[test]
        fn every_valid_number_round_trips(prefix in proptest::sample::select(PROVINCES.map(|(c, _)| c).to_vec()),
                                          rest in "[0-9]{9}") {
            let s = format!("{prefix:03}{rest}");
            let id = PersonalIdNumber::parse(&s).unwrap();
            prop_assert_eq!(id.expose(), s.as_str());
            prop_assert!((1900..2400).contains(&id.birth_year()));
        }
    }
}
