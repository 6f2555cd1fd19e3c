//! Names: normalising is idempotent, `validate` agrees with `parse`, and
//! a name always matches itself exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnid::domain::{NameMatchLevel, PersonName, normalize_name};

fuzz_target!(|text: &str| {
    let once = normalize_name(text);
    assert_eq!(normalize_name(&once), once);
    let parsed = PersonName::parse(text);
    assert_eq!(PersonName::validate(text).is_ok(), parsed.is_ok());
    if let Ok(name) = parsed {
        assert_eq!(name.compare(&name), Some(NameMatchLevel::Exact));
        assert_eq!(format!("{name:?}"), "PersonName(..)");
    }
});
