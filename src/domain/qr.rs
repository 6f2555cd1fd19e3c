//! The QR code printed on a chip-based citizen identity card (CCCD).
//!
//! Its text is seven `|`-separated fields:
//! `ID12|old CMND or empty|Full name|DDMMYYYY|Nam or Nữ|address|issue date DDMMYYYY`.
//! The code is not signed: what it says are claims like any other, and are
//! checked against the mirror.
//!
//! Tolerated, because scanners and card batches in the field produce them:
//! a leading byte-order mark, whitespace or a line end (CRLF) around the
//! payload or a field, one trailing `|`, an empty old-CMND field, dates
//! written `DD/MM/YYYY` (one-digit day and month too), `00` for an unknown
//! day or month of birth, and `Nam`/`Nữ` in any case or Unicode form.
//! Anything else is refused, naming the field.

use unicode_normalization::UnicodeNormalization;

use super::{Gender, OldIdNumber, PartialDate, PersonName, PersonalIdNumber};

/// The longest payload read. A card's code holds about 150 bytes.
pub const MAX_QR_PAYLOAD_BYTES: usize = 1024;

/// The fields a card's QR code holds.
const FIELDS: usize = 7;

/// A card's QR code, parsed. The address is not kept: it is not matched,
/// and what is not needed is not held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardQr {
    pub id_number: PersonalIdNumber,
    pub old_id_number: Option<OldIdNumber>,
    pub full_name: PersonName,
    pub date_of_birth: PartialDate,
    pub gender: Gender,
    pub issue_date: PartialDate,
}

/// A field of the payload, as violations name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrField {
    /// The payload as a whole.
    Payload,
    IdNumber,
    OldIdNumber,
    FullName,
    DateOfBirth,
    Gender,
    IssueDate,
}

impl QrField {
    /// The field's path under the request's `qr_payload`.
    pub fn path(self) -> &'static str {
        match self {
            Self::Payload => "qr_payload",
            Self::IdNumber => "qr_payload.id_number",
            Self::OldIdNumber => "qr_payload.old_id_number",
            Self::FullName => "qr_payload.full_name",
            Self::DateOfBirth => "qr_payload.date_of_birth",
            Self::Gender => "qr_payload.gender",
            Self::IssueDate => "qr_payload.issue_date",
        }
    }
}

/// Why one field of a payload was refused. The description never repeats
/// the value: it is personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrError {
    pub field: QrField,
    /// A stable reason code, the same as `Verify` gives for that field.
    pub reason: &'static str,
    pub description: String,
}

impl QrError {
    fn new(field: QrField, reason: &'static str, description: impl ToString) -> Self {
        Self {
            field,
            reason,
            description: description.to_string(),
        }
    }
}

impl CardQr {
    /// Parses a payload, reporting every bad field.
    pub fn parse(payload: &str) -> Result<Self, Vec<QrError>> {
        let payload = payload.strip_prefix('\u{feff}').unwrap_or(payload).trim();
        if payload.is_empty() {
            return Err(vec![QrError::new(QrField::Payload, "QR_EMPTY", "is empty")]);
        }
        if payload.len() > MAX_QR_PAYLOAD_BYTES {
            return Err(vec![QrError::new(
                QrField::Payload,
                "QR_TOO_LONG",
                format_args!("is longer than {MAX_QR_PAYLOAD_BYTES} bytes"),
            )]);
        }
        let mut fields: Vec<&str> = payload.split('|').map(str::trim).collect();
        if fields.len() == FIELDS + 1 && fields.last() == Some(&"") {
            fields.pop();
        }
        let [id, old, name, birth, gender, _address, issued] = fields[..] else {
            return Err(vec![QrError::new(
                QrField::Payload,
                "QR_FIELD_COUNT",
                format_args!(
                    "has {} fields separated by '|'; a card's code has {FIELDS}",
                    fields.len()
                ),
            )]);
        };
        let mut errors = Vec::new();
        let id_number = keep(
            &mut errors,
            QrField::IdNumber,
            PersonalIdNumber::parse(id).map_err(|e| (e.reason_code(), e.to_string())),
        );
        let old_id_number = keep(
            &mut errors,
            QrField::OldIdNumber,
            match old {
                "" => Ok(None),
                old => OldIdNumber::parse(old)
                    .map(Some)
                    .map_err(|e| ("OLD_ID_NUMBER_FORMAT", e.to_string())),
            },
        );
        let full_name = keep(
            &mut errors,
            QrField::FullName,
            PersonName::parse(name).map_err(|e| (e.reason_code(), e.to_string())),
        );
        let date_of_birth = keep(&mut errors, QrField::DateOfBirth, card_date(birth, false));
        let gender = keep(&mut errors, QrField::Gender, card_gender(gender));
        let issue_date = keep(&mut errors, QrField::IssueDate, card_date(issued, true));
        let parsed = || {
            Some(Self {
                id_number: id_number?,
                old_id_number: old_id_number?,
                full_name: full_name?,
                date_of_birth: date_of_birth?,
                gender: gender?,
                issue_date: issue_date?,
            })
        };
        parsed().ok_or(errors)
    }
}

/// The value of a field that parsed; otherwise its error is kept.
fn keep<T>(
    errors: &mut Vec<QrError>,
    field: QrField,
    result: Result<T, (&'static str, String)>,
) -> Option<T> {
    result
        .map_err(|(reason, description)| errors.push(QrError::new(field, reason, description)))
        .ok()
}

/// `DDMMYYYY` or `D/M/YYYY`; `00` for an unknown day or month unless the
/// whole date is required.
fn card_date(text: &str, whole: bool) -> Result<PartialDate, (&'static str, String)> {
    const FORMAT: &str = "must be DDMMYYYY or DD/MM/YYYY";
    let digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
        (len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let parts = match text.split('/').collect::<Vec<_>>()[..] {
        // Sliced only once known to be ASCII digits: no char boundary to miss.
        [all] if all.len() == 8 && all.bytes().all(|b| b.is_ascii_digit()) => {
            digits(&all[..2], 2..=2)
                .zip(digits(&all[2..4], 2..=2))
                .zip(digits(&all[4..], 4..=4))
        }
        [d, m, y] => digits(d, 1..=2).zip(digits(m, 1..=2)).zip(digits(y, 4..=4)),
        _ => None,
    };
    let ((day, month), year) = parts.ok_or(("DATE_FORMAT", FORMAT.to_owned()))?;
    let date = PartialDate::from_parts(year, month, day)
        .map_err(|e| (e.reason_code(), e.to_string()))?
        .ok_or(("DATE_FORMAT", FORMAT.to_owned()))?;
    if whole && date.day().is_none() {
        return Err(("DATE_MISSING_PART", "must be a whole date".to_owned()));
    }
    Ok(date)
}

fn card_gender(text: &str) -> Result<Gender, (&'static str, String)> {
    let text: String = text.nfc().flat_map(char::to_lowercase).collect();
    match text.as_str() {
        "nam" => Ok(Gender::Male),
        "nữ" => Ok(Gender::Female),
        _ => Err(("GENDER_UNKNOWN", "must be Nam or Nữ".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CARD: &str = "082090012345|312345678|Nguyễn Văn Đàm|17051990|Nam|12 Ấp Bắc, Phường 10, Mỹ Tho, Tiền Giang|01072021";

    fn reasons(payload: &str) -> Vec<(&'static str, &'static str)> {
        CardQr::parse(payload)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field.path(), e.reason))
            .collect()
    }

    #[test]
    fn reads_a_card() {
        let qr = CardQr::parse(CARD).unwrap();
        assert_eq!(qr.id_number.expose(), "082090012345");
        assert_eq!(qr.old_id_number.unwrap().expose(), "312345678");
        assert_eq!(qr.full_name, PersonName::parse("Nguyễn Văn Đàm").unwrap());
        assert_eq!(qr.date_of_birth.to_iso(), "1990-05-17");
        assert_eq!(qr.gender, Gender::Male);
        assert_eq!(qr.issue_date.to_iso(), "2021-07-01");
    }

    #[test]
    fn tolerates_what_scanners_and_card_batches_produce() {
        let same = CardQr::parse(CARD).unwrap();
        let variants = [
            format!("{CARD}|"),
            format!("  {CARD}  "),
            format!("{CARD}\r\n"),
            format!("\u{feff}{CARD}"),
            format!("\u{feff}{CARD}|\r\n"),
            CARD.replace("17051990", "17/05/1990")
                .replace("01072021", "1/7/2021"),
            CARD.replace("|Nam|", "| NAM |"),
            CARD.replace("|Nguyễn", "| Nguyễn"),
        ];
        for variant in &variants {
            assert_eq!(CardQr::parse(variant).as_ref(), Ok(&same), "{variant:?}");
        }
        let no_old = CardQr::parse(&CARD.replace("312345678", "")).unwrap();
        assert_eq!(no_old.old_id_number, None);
        // Decomposed (NFD) "Nữ", as some scanners send it.
        let female = CARD
            .replace("082090", "082190")
            .replace("|Nam|", "|Nu\u{31b}\u{303}|");
        assert_eq!(CardQr::parse(&female).unwrap().gender, Gender::Female);
        let year_only = CardQr::parse(&CARD.replace("17051990", "00001990")).unwrap();
        assert_eq!(year_only.date_of_birth.to_iso(), "1990");
    }

    #[test]
    fn refuses_anything_else_naming_the_field() {
        let refused = |field: &str, reason: &str, payloads: &[String]| {
            for payload in payloads {
                assert_eq!(reasons(payload), [(field, reason)], "{payload:?}");
            }
        };
        let date = |bad: &str| CARD.replace("17051990", bad);
        let gender = |bad: &str| CARD.replace("|Nam|", &format!("|{bad}|"));
        refused(
            "qr_payload",
            "QR_EMPTY",
            &[String::new(), "\u{feff} \r\n".into()],
        );
        let long = "1".repeat(MAX_QR_PAYLOAD_BYTES + 1);
        refused("qr_payload", "QR_TOO_LONG", &[long]);
        let short = "082090012345|312345678|Nguyễn Văn Đàm".to_owned();
        let (extra, two) = (format!("{CARD}|extra"), format!("{CARD}||"));
        refused("qr_payload", "QR_FIELD_COUNT", &[extra, two, short]);
        let id = CARD.replace("082090012345", "08209001234");
        refused("qr_payload.id_number", "ID_NUMBER_FORMAT", &[id]);
        let old = CARD.replace("312345678", "31234567x");
        refused("qr_payload.old_id_number", "OLD_ID_NUMBER_FORMAT", &[old]);
        let name = CARD.replace("Nguyễn Văn Đàm", "");
        refused("qr_payload.full_name", "NAME_EMPTY", &[name]);
        let formats = ["1705199", "17-05-1990", "1705199x", "17/05/90", "/05/1990"].map(date);
        refused("qr_payload.date_of_birth", "DATE_FORMAT", &formats);
        refused(
            "qr_payload.date_of_birth",
            "DATE_IMPOSSIBLE",
            &[date("31021990")],
        );
        refused(
            "qr_payload.date_of_birth",
            "DATE_MISSING_PART",
            &[date("17001990")],
        );
        let issued = CARD.replace("01072021", "00072021");
        refused("qr_payload.issue_date", "DATE_MISSING_PART", &[issued]);
        let genders = ["Male", "Nu", "N", ""].map(gender);
        refused("qr_payload.gender", "GENDER_UNKNOWN", &genders);
        // Every bad field is named at once.
        assert_eq!(
            reasons("1|2|3|4|5|6|7"),
            [
                ("qr_payload.id_number", "ID_NUMBER_FORMAT"),
                ("qr_payload.old_id_number", "OLD_ID_NUMBER_FORMAT"),
                ("qr_payload.full_name", "NAME_BAD_CHARACTER"),
                ("qr_payload.date_of_birth", "DATE_FORMAT"),
                ("qr_payload.gender", "GENDER_UNKNOWN"),
                ("qr_payload.issue_date", "DATE_FORMAT"),
            ]
        );
    }

    #[test]
    fn descriptions_never_repeat_the_value() {
        let payload = "082090012345|31234567x|Nguyễn Văn Đàm|99999999|Nữ Nam|addr|00000000";
        for error in CardQr::parse(payload).unwrap_err() {
            for value in ["31234567x", "99999999", "Nữ Nam", "00000000"] {
                assert!(!error.description.contains(value), "{error:?}");
            }
        }
    }

    fn field() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9]{0,13}",
            "[0-9/]{0,11}",
            "\\PC{0,12}",
            Just("Nam".to_owned()),
            Just("Nữ".to_owned()),
            Just(String::new()),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(s in "\\PC{0,300}") {
            let _ = CardQr::parse(&s);
        }

        #[test]
        fn never_panics_on_card_shaped_text(
            fields in prop::collection::vec(field(), 5..10),
            bom in any::<bool>(),
            tail in prop_oneof![Just(""), Just("|"), Just("\r\n"), Just(" |\r\n")],
        ) {
            let payload = format!("{}{}{tail}", if bom { "\u{feff}" } else { "" }, fields.join("|"));
            match CardQr::parse(&payload) {
                Ok(qr) => prop_assert!(fields.len() >= FIELDS && fields.len() <= FIELDS + 1, "{qr:?}"),
                Err(errors) => prop_assert!(!errors.is_empty()),
            }
        }

        #[test]
        fn every_real_card_date_reads_back(day in 1u32..=28, month in 1u32..=12, year in 1900u32..2100) {
            let card = CARD.replace("17051990", &format!("{day:02}{month:02}{year}"));
            let qr = CardQr::parse(&card).unwrap();
            prop_assert_eq!(qr.date_of_birth.to_iso(), format!("{year}-{month:02}-{day:02}"));
            let slashed = CARD.replace("17051990", &format!("{day}/{month}/{year}"));
            prop_assert_eq!(CardQr::parse(&slashed).unwrap(), qr);
        }
    }
}
