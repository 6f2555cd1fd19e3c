//! The guard: what stands between an agency and the next check, against
//! overuse and harvesting. One `admit` before a check, one `record` after
//! its answer, one refusal type; the alerts they raise are logged here.
//!
//! - `quota`: an agency's rate (GCRA) and daily quota, shared by every
//!   instance on Redis, rebuilt from the audit trail when Redis lost it.
//! - `failures`: per agency and person, failed checks that suspend that
//!   agency's checks of a number it is guessing at.
//! - `share`: an agency's share of NOT_VERIFIED answers, which throttles
//!   a credential walking through candidate numbers.
//! - `shared`: the Redis connection of the counters, behind a breaker.
//! - `alerts`: the `vnid::alert` log lines, with nothing personal.

mod alerts;
mod failures;
mod quota;
mod share;
mod shared;

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditError, AuditStore};
use crate::infra::redis::RedisError;
use crate::metrics::Metrics;
use crate::policy::Agency;

pub use share::{ShareChange, ShareLimits};
pub use shared::SharedParams;

use failures::NumberFailures;
use quota::Quotas;
use share::ShareWatch;

const US_PER_DAY: i64 = 86_400 * 1_000_000;

/// Why a check is refused for now, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the agency's request rate is exceeded")]
    Rate { retry_after: Duration },
    #[error("the agency's daily quota is used up")]
    Daily { retry_after: Duration },
    /// Too many failed checks of this ID number by this agency, lately.
    #[error("the agency's checks of this ID number are suspended for a while")]
    Suspended { retry_after: Duration },
    /// Too many of the agency's answers were NOT_VERIFIED lately.
    #[error("the agency's checks are slowed: too many of its checks fail")]
    Throttled { retry_after: Duration },
}

/// Why a check was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The day's count had to be rebuilt from the trail, which cannot be
    /// read: no check is granted on a guess.
    #[error(transparent)]
    Trail(#[from] AuditError),
}

/// How the guard is set.
#[derive(Debug, Clone, Copy)]
pub struct GuardParams {
    /// The counters' Redis: deadline and breaker.
    pub shared: SharedParams,
    /// How many instances share the agencies' limits while Redis is away.
    pub instances: u32,
    /// Failed checks of one number by one agency in 24 h beyond which
    /// that agency's checks of it are suspended (0: no limit).
    pub id_failure_limit: u64,
    /// Agencies failing on one number in 24 h that raise an alert (0: off).
    pub id_failure_agencies_alert: u64,
    /// Each agency's share of NOT_VERIFIED answers.
    pub shares: ShareLimits,
}

pub struct Guard {
    quotas: Quotas,
    failures: NumberFailures,
    shares: ShareWatch,
    id_failure_limit: u64,
    id_failure_agencies_alert: u64,
    metrics: Option<Arc<Metrics>>,
}

impl Refusal {
    /// Its name in `/metrics` (`vnid_refusals_total{reason}`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Rate { .. } => "rate",
            Self::Daily { .. } => "daily_quota",
            Self::Suspended { .. } => "suspended",
            Self::Throttled { .. } => "throttled",
        }
    }
}

impl Guard {
    /// `redis_url`: the counters every instance shares (absent: this
    /// process only); `trail`: where a day's count is rebuilt from
    /// (absent: no trail is kept, and a day Redis does not know starts at
    /// zero).
    pub fn new(
        redis_url: Option<&str>,
        trail: Option<Arc<dyn AuditStore>>,
        params: GuardParams,
    ) -> Result<Self, RedisError> {
        let shared = Arc::new(shared::Shared::new(redis_url, params.shared)?);
        Ok(Self {
            quotas: Quotas::new(shared.clone(), trail, params.instances),
            failures: NumberFailures::new(shared),
            shares: ShareWatch::new(params.shares),
            id_failure_limit: params.id_failure_limit,
            id_failure_agencies_alert: params.id_failure_agencies_alert,
            metrics: None,
        })
    }

    /// Counts the alerts it raises in `metrics` (`vnid_alerts_total`).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn raised(&self, alert: &str, agency: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.alerts.with_label_values(&[alert, agency]).inc();
        }
    }

    /// Admits (and counts against its rate and quota) one check by
    /// `agency` of the person filed under `subject`, or says why not: its
    /// rate or quota, its throttle, or its suspension on that number.
    pub async fn admit(
        &self,
        agency: &Agency,
        subject: &str,
        now_us: i64,
    ) -> Result<(), GuardError> {
        self.quotas
            .admit(&agency.id, &agency.limits, now_us)
            .await?;
        self.shares
            .admit(&agency.id, now_us)
            .map_err(|retry_after| Refusal::Throttled { retry_after })?;
        let limit = self.id_failure_limit;
        if limit > 0
            && let Some(retry_after) = self
                .failures
                .suspended(&agency.id, subject, limit, now_us)
                .await
        {
            return Err(Refusal::Suspended { retry_after }.into());
        }
        Ok(())
    }

    /// Records the answer to an admitted check: `failed` when the number
    /// is unknown or a claim was wrong. Raises the alerts it crosses.
    pub async fn record(&self, agency: &str, subject: &str, failed: bool, now_us: i64) {
        if let Some(alert) = alerts::share_changed(agency, self.shares.record(agency, failed)) {
            self.raised(alert, agency);
        }
        if self.id_failure_limit == 0 || !failed {
            return;
        }
        let failures = self.failures.count(agency, subject, now_us).await;
        if failures.by_agency == self.id_failure_limit + 1 {
            self.raised(
                alerts::number_suspended(agency, subject, failures.by_agency),
                agency,
            );
        }
        let agencies_alert = self.id_failure_agencies_alert;
        if agencies_alert > 0 && failures.new_agency && failures.agencies == agencies_alert {
            self.raised(
                alerts::number_failed_across_agencies(agency, subject, failures.agencies),
                agency,
            );
        }
    }
}
