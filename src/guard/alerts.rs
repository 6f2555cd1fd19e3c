//! The guard's alerts: log lines under the `vnid::alert` target, each
//! with a stable `alert` name to match on. An agency id and a subject
//! index (a keyed hash that finds the person's rows in the audit trail)
//! at most; never an ID number. Each returns the alert's name, which
//! `/metrics` counts.

use super::ShareChange;

pub(super) fn share_changed(agency: &str, change: ShareChange) -> Option<&'static str> {
    match change {
        ShareChange::Raised { share, checks } => {
            tracing::warn!(
                target: "vnid::alert",
                alert = NOT_VERIFIED_SHARE,
                agency,
                share,
                checks,
                "most of an agency's checks fail, as when numbers are enumerated; it is throttled"
            );
            Some(NOT_VERIFIED_SHARE)
        }
        ShareChange::Cleared { share } => {
            tracing::info!(
                target: "vnid::alert",
                alert = NOT_VERIFIED_SHARE_CLEARED,
                agency,
                share,
                "the agency's share of failed checks fell back; its throttle is lifted"
            );
            Some(NOT_VERIFIED_SHARE_CLEARED)
        }
        ShareChange::None => None,
    }
}

const NOT_VERIFIED_SHARE: &str = "not_verified_share";
const NOT_VERIFIED_SHARE_CLEARED: &str = "not_verified_share_cleared";
const ID_NUMBER_FAILURES: &str = "id_number_failures";
const ID_NUMBER_FAILURES_ACROSS_AGENCIES: &str = "id_number_failures_across_agencies";

pub(super) fn number_suspended(agency: &str, subject_index: &str, failures: u64) -> &'static str {
    tracing::warn!(
        target: "vnid::alert",
        alert = ID_NUMBER_FAILURES,
        agency,
        subject_index,
        failures,
        "an agency failed too many checks of one ID number in 24 h; \
         its checks of that number are suspended"
    );
    ID_NUMBER_FAILURES
}

pub(super) fn number_failed_across_agencies(
    agency: &str,
    subject_index: &str,
    agencies: u64,
) -> &'static str {
    tracing::warn!(
        target: "vnid::alert",
        alert = ID_NUMBER_FAILURES_ACROSS_AGENCIES,
        agency,
        subject_index,
        agencies,
        "several agencies failed checks of one ID number in 24 h"
    );
    ID_NUMBER_FAILURES_ACROSS_AGENCIES
}
