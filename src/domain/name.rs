//! Vietnamese personal names: normalisation and the three match levels.
//!
//! Names are compared in a canonical form: Unicode NFC, whitespace trimmed
//! and collapsed, lower case, the look-alike `Ð`/`ð` (U+00D0/U+00F0) read as
//! `Đ`/`đ`, and the tone mark moved to one canonical vowel of each syllable
//! (the "new style": `hoà`, `khoẻ`, `thuỷ`), so that `hòa` and `hoà` are the
//! same name. Three levels, each weaker than the one before:
//!
//! * **exact**: equal canonical forms;
//! * **folded**: equal once diacritics are removed and `đ` is read as `d`, as
//!   legacy systems and card MRZ lines write names (`NGUYEN VAN DAM`);
//! * **partial**: the folded family name (first word) and given name (last
//!   word) agree and each claimed middle word stands, in order, among the
//!   recorded ones, whole or as an initial (`Nguyen V. An`, `Nguyen An`); or
//!   the same words in another order (`An Nguyen Van`).

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// The longest name accepted, in characters, after normalisation.
pub const MAX_NAME_CHARS: usize = 150;

/// The match levels, strictest first: `Exact < Folded < Partial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NameMatchLevel {
    Exact,
    Folded,
    Partial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_NAME_CHARS} characters")]
    TooLong,
    #[error("may hold only letters, spaces, apostrophes, hyphens and dots")]
    BadCharacter,
    #[error("has a syllable with more than one tone mark")]
    ToneMarks,
}

impl NameError {
    pub fn reason_code(self) -> &'static str {
        match self {
            Self::Empty => "NAME_EMPTY",
            Self::TooLong => "NAME_TOO_LONG",
            Self::BadCharacter => "NAME_BAD_CHARACTER",
            Self::ToneMarks => "NAME_TONE_MARKS",
        }
    }
}

/// A personal name in canonical form, with its folded form beside it.
/// `Debug` hides the name.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonName {
    canonical: String,
    folded: String,
}

impl PersonName {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let Normalized {
            canonical,
            folded,
            tones_doubled,
            stray_tone,
        } = normalize_both(input);
        if canonical.is_empty() {
            return Err(NameError::Empty);
        }
        if canonical.chars().count() > MAX_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        let allowed = |c: char| {
            c.is_alphabetic() || is_combining_mark(c) || matches!(c, ' ' | '\'' | '-' | '.')
        };
        if !canonical.chars().all(allowed) {
            return Err(NameError::BadCharacter);
        }
        // A syllable takes one tone; a second would be dropped silently,
        // and `Hoàá` match `Hoà` exactly. (A tone mark with no letter to
        // sit on is caught as a bad character.)
        if tones_doubled {
            return Err(NameError::ToneMarks);
        }
        if stray_tone {
            return Err(NameError::BadCharacter);
        }
        Ok(Self { canonical, folded })
    }

    /// Whether `parse` would accept `input`, without building its forms:
    /// the importer checks millions of names. Plain precomposed Latin and
    /// Vietnamese names are decided by one scan; anything else by `parse`.
    pub fn validate(input: &str) -> Result<(), NameError> {
        let (mut chars, mut letters, mut plain) = (0usize, 0usize, true);
        let mut word_tones = 0;
        for c in input.trim().chars() {
            chars += 1;
            if c.is_alphabetic() {
                letters += 1;
            }
            if c.is_whitespace() {
                word_tones = 0;
            } else if !c.is_ascii() {
                word_tones += tones_in(c);
                plain &= word_tones <= 1;
            }
            // U+0130 lower-cases to two characters.
            plain &= matches!(c as u32, 0x20..0x300 | 0x1E00..0x1F00)
                && c != '\u{0130}'
                && (c.is_alphabetic() || matches!(c, ' ' | '\'' | '-' | '.'));
        }
        // A margin below the limit: normalising never lengthens such names
        // by more than a tone mark or two.
        if plain && letters > 0 && chars <= MAX_NAME_CHARS - 50 {
            Ok(())
        } else {
            Self::parse(input).map(|_| ())
        }
    }

    /// The canonical form. Personal data: never log it.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The strictest level at which a claimed name (`self`) agrees with the
    /// recorded one, or `None`.
    pub fn compare(&self, record: &PersonName) -> Option<NameMatchLevel> {
        if self.canonical == record.canonical {
            Some(NameMatchLevel::Exact)
        } else if self.folded == record.folded {
            Some(NameMatchLevel::Folded)
        } else if partial_match(&self.folded, &record.folded) {
            Some(NameMatchLevel::Partial)
        } else {
            None
        }
    }
}

impl fmt::Debug for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonName(..)")
    }
}

/// The canonical form of a name (see the module documentation). Idempotent;
/// NFC and NFD spellings of one name give the same result.
pub fn normalize(input: &str) -> String {
    normalize_both(input).canonical
}

/// How many tone marks `c` holds (precomposed, or itself one): `ṹ` holds
/// two.
fn tones_in(c: char) -> usize {
    let mut tones = 0;
    unicode_normalization::char::decompose_canonical(c, |d| {
        tones += usize::from(TONE_MARKS.contains(&d) || matches!(d, '\u{0340}' | '\u{0341}'));
    });
    tones
}

/// A name's two forms, whether a syllable carried two tone marks, and
/// whether a word was a tone mark alone (dropped from both forms).
struct Normalized {
    canonical: String,
    folded: String,
    tones_doubled: bool,
    stray_tone: bool,
}

const TONE_MARKS: [char; 5] = ['\u{0300}', '\u{0301}', '\u{0303}', '\u{0309}', '\u{0323}'];

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y')
}

/// One letter of a syllable: where its base character stands in the
/// syllable's characters, and whether vowel-quality marks (circumflex,
/// breve, horn) follow it.
#[derive(Clone, Copy)]
struct Letter {
    start: usize,
    marked: bool,
}

/// The canonical form and the folded form (every diacritic removed, `đ`
/// read as `d`), in one pass: names are normalised on every check.
fn normalize_both(input: &str) -> Normalized {
    let (mut tones_doubled, mut stray_tone) = (false, false);
    let mut canonical = String::with_capacity(input.len() + 4);
    let mut folded = String::with_capacity(input.len());
    let mut chars: Vec<char> = Vec::with_capacity(16);
    let mut letters: Vec<Letter> = Vec::with_capacity(8);
    let mut syllable = String::with_capacity(32);
    for word in input.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        let lengths = (canonical.len(), folded.len());
        if !canonical.is_empty() {
            canonical.push(' ');
            folded.push(' ');
        }
        chars.clear();
        letters.clear();
        let mut tone = None;
        for c in word.nfd().flat_map(char::to_lowercase) {
            let c = match c {
                'ð' => 'đ',
                // The deprecated tone-mark code points decompose to these.
                '\u{0340}' => '\u{0300}',
                '\u{0341}' => '\u{0301}',
                c => c,
            };
            if TONE_MARKS.contains(&c) {
                tones_doubled |= tone.is_some();
                tone = tone.or(Some(c));
            } else if is_combining_mark(c) {
                match letters.last_mut() {
                    Some(letter) => letter.marked = true,
                    None => letters.push(Letter {
                        start: chars.len(),
                        marked: false,
                    }),
                }
                chars.push(c);
            } else {
                letters.push(Letter {
                    start: chars.len(),
                    marked: false,
                });
                chars.push(c);
                folded.push(if c == 'đ' { 'd' } else { c });
            }
        }
        if letters.is_empty() {
            // Nothing but tone marks: no syllable, and no separator.
            stray_tone |= tone.is_some();
            canonical.truncate(lengths.0);
            folded.truncate(lengths.1);
            continue;
        }
        let tone_at = tone.map(|_| tone_position(&chars, &letters));
        syllable.clear();
        for (i, letter) in letters.iter().enumerate() {
            let end = letters.get(i + 1).map_or(chars.len(), |next| next.start);
            syllable.extend(&chars[letter.start..end]);
            if tone_at == Some(i) {
                syllable.extend(tone);
            }
        }
        canonical.extend(syllable.nfc());
    }
    Normalized {
        canonical,
        folded,
        tones_doubled,
        stray_tone,
    }
}

/// Where the tone mark goes, in the new-style orthography.
fn tone_position(chars: &[char], letters: &[Letter]) -> usize {
    let base = |i: usize| letters.get(i).map(|l| chars[l.start]);
    let vowel_at = |i: usize| base(i).is_some_and(is_vowel);
    let Some(mut start) = (0..letters.len()).find(|&i| vowel_at(i)) else {
        return letters.len().saturating_sub(1);
    };
    // In "qu…" and "gi…" followed by another vowel, the u or i is part of
    // the initial consonant: quý, giữ (but gì).
    let initial_is = |c: char| start == 1 && base(0) == Some(c);
    let first = base(start);
    if vowel_at(start + 1)
        && ((first == Some('u') && initial_is('q')) || (first == Some('i') && initial_is('g')))
    {
        start += 1;
    }
    let end = (start..letters.len())
        .find(|&i| !vowel_at(i))
        .unwrap_or(letters.len());
    let nucleus = &letters[start..end];
    if let Some(marked) = nucleus.iter().rposition(|l| l.marked) {
        return start + marked;
    }
    let has_final_consonant = end < letters.len();
    match nucleus.len() {
        0 | 1 => start,
        _ if has_final_consonant => end - 1,
        2 => {
            let pair = (chars[nucleus[0].start], chars[nucleus[1].start]);
            if matches!(pair, ('o', 'a') | ('o', 'e') | ('u', 'y')) {
                start + 1
            } else {
                start
            }
        }
        n => start + n / 2,
    }
}

fn partial_match(claim: &str, record: &str) -> bool {
    let claim: Vec<&str> = claim.split(' ').collect();
    let record: Vec<&str> = record.split(' ').collect();
    family_given_and_middles_agree(&claim, &record) || same_words_reordered(&claim, &record)
}

fn family_given_and_middles_agree(claim: &[&str], record: &[&str]) -> bool {
    let ([family, claim_middles @ .., given], [r_family, record_middles @ .., r_given]) =
        (claim, record)
    else {
        return false;
    };
    if family != r_family || given != r_given {
        return false;
    }
    let mut recorded = record_middles.iter();
    claim_middles.iter().all(|word| {
        let initial = word.strip_suffix('.').filter(|w| w.chars().count() == 1);
        recorded.any(|r| match initial {
            Some(initial) => r.starts_with(initial),
            None => r == word,
        })
    })
}

fn same_words_reordered(claim: &[&str], record: &[&str]) -> bool {
    if claim.len() < 2 || claim.len() != record.len() {
        return false;
    }
    let (mut a, mut b) = (claim.to_vec(), record.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> PersonName {
        PersonName::parse(s).unwrap()
    }

    fn level(claim: &str, record: &str) -> Option<NameMatchLevel> {
        name(claim).compare(&name(record))
    }

    #[test]
    fn tone_placement_variants_are_one_name() {
        for (old, new) in [
            ("hòa", "hoà"),
            ("thủy", "thuỷ"),
            ("khỏe", "khoẻ"),
            ("Lê Thị Thúy", "Lê Thị Thuý"),
            ("Hoàng Văn Toán", "Hoàng Văn Toán"),
        ] {
            assert_eq!(normalize(old), normalize(new), "{old} / {new}");
        }
        assert_eq!(normalize("Hòa"), "hoà");
        assert_eq!(normalize("THỦY"), "thuỷ");
    }

    #[test]
    fn tone_stays_on_the_right_vowel() {
        for word in [
            "người", "cứu", "quý", "quà", "giữ", "gì", "hoài", "khuỷu", "xoáy", "mùa", "núi",
            "tài", "hoàng", "toán", "quỳnh", "chuyện", "thuyết", "nguyễn", "đặng", "trịnh",
        ] {
            assert_eq!(normalize(word), word.nfc().collect::<String>(), "{word}");
        }
    }

    #[test]
    fn whitespace_case_and_eth_are_normalised() {
        assert_eq!(normalize("  NGUYỄN \t văn\u{00A0} AN \n"), "nguyễn văn an");
        assert_eq!(normalize("ÐẶNG"), normalize("Đặng"));
        assert_eq!(normalize("ðặng"), "đặng");
    }

    #[test]
    fn levels() {
        use NameMatchLevel::*;
        assert_eq!(level("Nguyễn Văn An", "nguyễn văn  an"), Some(Exact));
        assert_eq!(level("NGUYEN VAN DAM", "Nguyễn Văn Đàm"), Some(Folded));
        assert_eq!(level("Nguyen Van Dam", "Nguyễn Văn Đàm"), Some(Folded));
        assert_eq!(level("Nguyễn Đàm", "Nguyễn Văn Đàm"), Some(Partial));
        assert_eq!(level("Nguyễn V. Đàm", "Nguyễn Văn Đàm"), Some(Partial));
        assert_eq!(
            level("Tran T. Minh Thu", "Trần Thị Minh Thư"),
            Some(Partial)
        );
        assert_eq!(level("Tran Minh T. Thu", "Trần Thị Minh Thu"), None);
        assert_eq!(level("Đàm Nguyễn Văn", "Nguyễn Văn Đàm"), Some(Partial));
        assert_eq!(level("Nguyễn Văn Đàm", "Nguyễn Văn Đam"), Some(Folded));
        assert_eq!(level("Nguyễn Văn Bình", "Nguyễn Văn An"), None);
        assert_eq!(level("Nguyễn", "Nguyễn Văn An"), None);
        assert_eq!(level("Nguyễn Hữu Văn An", "Nguyễn Văn An"), None);
        assert_eq!(level("Nguyễn X. An", "Nguyễn Văn An"), None);
        assert!(Exact < Folded && Folded < Partial);
    }

    #[test]
    fn rejects_what_is_not_a_name() {
        assert_eq!(PersonName::parse("  \t "), Err(NameError::Empty));
        assert_eq!(PersonName::parse("Nguyễn 4n"), Err(NameError::BadCharacter));
        assert_eq!(PersonName::parse("a\u{0}b"), Err(NameError::BadCharacter));
        assert_eq!(PersonName::parse(&"a".repeat(151)), Err(NameError::TooLong));
        assert!(PersonName::parse("H'Hen Niê").is_ok());
    }

    #[test]
    fn a_syllable_with_two_tone_marks_is_no_name() {
        for doubled in [
            "Lê Văn Hoàá",
            "Lê Văn Hoa\u{0300}\u{0301}",
            "Lê Văn Hòa\u{0323}",
            "Lê Vắn\u{0301} Hoà",
            "\u{1E78}",
        ] {
            assert_eq!(
                PersonName::parse(doubled),
                Err(NameError::ToneMarks),
                "{doubled}"
            );
            assert_eq!(
                PersonName::validate(doubled),
                Err(NameError::ToneMarks),
                "{doubled}"
            );
        }
        // A tone mark alone is no syllable; normalising drops it.
        assert_eq!(
            PersonName::parse("Trần \u{0309}"),
            Err(NameError::BadCharacter)
        );
        assert_eq!(normalize("Tra\u{0300}n \u{0309}"), "tràn");
        // One tone a syllable, however spelled, stays a name.
        for one in ["Lê Văn Hoà", "Lê Văn Hòa", "Nguyễn Thị Thuỷ", "Ngô Quý Đức"] {
            assert!(PersonName::parse(one).is_ok(), "{one}");
            assert_eq!(PersonName::validate(one), Ok(()), "{one}");
        }
    }

    #[test]
    fn debug_hides_the_name() {
        assert!(!format!("{:?}", name("Nguyễn Văn An")).contains("guy"));
    }

    proptest! {
        #[test]
        fn normalize_never_panics_and_is_idempotent(s in "\\PC{0,40}") {
            let once = normalize(&s);
            prop_assert_eq!(normalize(&once), once.clone());
            let _ = PersonName::parse(&s);
        }

        #[test]
        fn validate_agrees_with_parse_on_marked_names(s in "[a-zA-Z ăâđêôơưàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵṹḉ\u{0300}\u{0301}\u{0303}\u{0309}\u{0323}'.-]{0,30}") {
            prop_assert_eq!(PersonName::validate(&s).is_ok(), PersonName::parse(&s).is_ok());
        }

        #[test]
        fn nfc_and_nfd_spellings_are_equal(s in "[a-zA-ZàáảãạăằắẳẵặâầấẩẫậđèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵĐ ]{0,40}") {
            let nfc: String = s.nfc().collect();
            let nfd: String = s.nfd().collect();
            prop_assert_eq!(normalize(&nfc), normalize(&nfd));
        }

        #[test]
        fn folded_is_the_canonical_form_without_diacritics(s in "\\PC{0,40}") {
            let Normalized { canonical, folded, .. } = normalize_both(&s);
            let expected: String = canonical
                .nfd()
                .filter(|c| !is_combining_mark(*c))
                .map(|c| if c == 'đ' { 'd' } else { c })
                .collect();
            prop_assert_eq!(folded, expected);
        }

        #[test]
        fn validate_agrees_with_parse(s in "[a-zA-ZàáảãạăằắẳẵặâầấẩẫậđèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵĐİ .'0-9-]{0,60}") {
            prop_assert_eq!(PersonName::validate(&s), PersonName::parse(&s).map(|_| ()));
        }

        #[test]
        fn output_is_nfc_and_single_spaced(s in "\\PC{0,40}") {
            let n = normalize(&s);
            prop_assert!(unicode_normalization::is_nfc(&n));
            prop_assert!(!n.contains("  ") && n.trim() == n);
        }
    }
}
