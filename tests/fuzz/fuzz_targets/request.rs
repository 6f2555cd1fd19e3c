//! Wire bytes to commands: any bytes decode or not, and a decoded message
//! converts to a command or to field violations, none of which repeats a
//! number it was given (six digits or more: an ID or CMND number).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use vnid::audit::history::HistoryQuery;
use vnid::pb;
use vnid::verify::VerifyCommand;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(request) = pb::VerifyRequest::decode(bytes) {
        let id = request.id_number.clone();
        if let Err(violations) = VerifyCommand::try_from(request) {
            assert!(!violations.is_empty());
            let digits = id.bytes().filter(u8::is_ascii_digit).count();
            if digits >= 6 {
                assert!(violations.iter().all(|v| !v.description.contains(&id)));
            }
        }
    }
    if let Ok(request) = pb::VerifyCardQrRequest::decode(bytes) {
        let _ = VerifyCommand::try_from(request);
    }
    if let Ok(request) = pb::ListAccessHistoryRequest::decode(bytes) {
        let _ = HistoryQuery::try_from(request);
    }
});
