//! Dates: ISO text and wire parts; what parses writes back as it read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnid::domain::PartialDate;

fuzz_target!(|input: (&str, u32, u32, u32)| {
    let (text, year, month, day) = input;
    if let Ok(date) = PartialDate::parse_iso(text) {
        assert_eq!(date.to_iso(), text);
        assert!(date.agrees_with(&date));
    }
    if let Ok(Some(date)) = PartialDate::from_parts(year, month, day) {
        assert_eq!(PartialDate::parse_iso(&date.to_iso()), Ok(date));
    }
});
