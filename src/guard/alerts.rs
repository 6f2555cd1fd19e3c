//! The guard's alerts: log lines under the `vnid::alert` target, each
//! with a stable `alert` name to match on. An agency id and a subject
//! index (a keyed hash that finds the person's rows in the audit trail)
//! at most; never an ID number.

use super::ShareChange;

pub(super) fn share_changed(agency: &str, change: ShareChange) {
    match change {
        ShareChange::Raised { share, checks } => tracing::warn!(
            target: "vnid::alert",
            alert = "not_verified_share",
            agency,
            share,
            checks,
            "most of an agency's checks fail, as when numbers are enumerated; it is throttled"
        ),
        ShareChange::Cleared { share } => tracing::info!(
            target: "vnid::alert",
            alert = "not_verified_share_cleared",
            agency,
            share,
            "the agency's share of failed checks fell back; its throttle is lifted"
        ),
        ShareChange::None => {}
    }
}

pub(super) fn number_suspended(agency: &str, subject_index: &str, failures: u64) {
    tracing::warn!(
        target: "vnid::alert",
        alert = "id_number_failures",
        agency,
        subject_index,
        failures,
        "an agency failed too many checks of one ID number in 24 h; \
         its checks of that number are suspended"
    );
}

pub(super) fn number_failed_across_agencies(agency: &str, subject_index: &str, agencies: u64) {
    tracing::warn!(
        target: "vnid::alert",
        alert = "id_number_failures_across_agencies",
        agency,
        subject_index,
        agencies,
        "several agencies failed checks of one ID number in 24 h"
    );
}
