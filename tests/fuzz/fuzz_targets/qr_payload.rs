//! The text of a CCCD card's QR code, as a scanner might send anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnid::domain::{CardQr, MAX_QR_PAYLOAD_BYTES};

fuzz_target!(|text: &str| {
    match CardQr::parse(text) {
        Ok(card) => {
            assert!(text.len() <= MAX_QR_PAYLOAD_BYTES);
            assert_eq!(card.id_number.expose().len(), 12);
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
});
