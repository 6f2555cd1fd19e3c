//! ID numbers and old CMND numbers: any text, never a panic; what parses
//! is 12 (or 9) ASCII digits that read back as given, and the structure
//! (gender, birth year) is derived without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnid::domain::{OldIdNumber, PersonalIdNumber};

fuzz_target!(|text: &str| {
    if let Ok(id) = PersonalIdNumber::parse(text) {
        assert_eq!(id.expose().len(), 12);
        assert!(id.expose().bytes().all(|b| b.is_ascii_digit()));
        let _ = (id.gender(), id.birth_year(), id.registration_code());
        assert!(!format!("{id:?}").contains(id.expose()));
    }
    if let Ok(old) = OldIdNumber::parse(text) {
        assert_eq!(old.expose().len(), 9);
    }
});
