//! How a row keeps its attestation: any text is kept so that it comes back
//! exactly (else a row's hash would no longer hold), and any bytes a
//! database hands back are read without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnid::audit::packed;

fuzz_target!(|data: &[u8]| {
    let _ = packed::unpack(data);
    let _ = packed::header_json(data);
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(packed::unpack(&packed::pack(text)).as_deref(), Some(text));
    }
});
