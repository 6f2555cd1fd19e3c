//! The pure domain: what an ID number, a name, a date and a verdict are.
//! Nothing here knows about gRPC, SQL, the clock or the network.

mod check;
mod date;
mod id_number;
mod name;
mod person;
mod qr;
mod request;
mod spelling;

pub use check::{
    Assessment, DateCheck, FieldChecks, FieldOutcome, NameCheck, Reason, Verdict, VerdictKind,
    assess,
};
pub use date::{DateError, DatePrecision, PartialDate};
pub use id_number::{
    IdNumberError, OldIdNumber, OldIdNumberError, PROVINCES, PersonalIdNumber, province_name,
};
pub use name::{NameError, NameMatchLevel, PersonName, normalize as normalize_name};
pub use person::{CitizenRecord, CitizenStatus, Claims, Gender};
pub use qr::{CardQr, MAX_QR_PAYLOAD_BYTES, QrError, QrField};
pub use request::{CheckCall, Door, MAX_REQUEST_ID_LEN, Purpose, RequestId, RequestIdError};
pub use spelling::{Spelled, by_name};
