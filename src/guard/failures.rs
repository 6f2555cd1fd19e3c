//! Per agency and person: the count of failed checks (unknown number, or
//! a claim wrong) that suspends that agency's further checks of a number
//! it is guessing at, never another agency's; and per person, the count
//! of agencies failing on it, for a cross-agency alert. Shared on Redis;
//! per instance while Redis is away. A person is filed under the keyed
//! subject index, never the number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::US_PER_DAY;
use super::shared::Shared;

/// How long failed checks of a person are remembered.
const FAILURE_WINDOW_US: i64 = US_PER_DAY;

/// Failure counters kept per instance at most (beyond them, only Redis
/// counts).
const LOCAL_FAILURE_ENTRIES: usize = 200_000;

/// An agency's failures of one person: an agency id and a keyed hash,
/// nothing personal.
fn failure_key(agency: &str, subject: &str) -> String {
    format!("vnid:f:v2:{agency}:{subject}")
}

/// A failed check as counted: the agency's failures of the number in
/// the window, and how many agencies failed on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failures {
    pub by_agency: u64,
    pub agencies: u64,
    /// This failure made its agency one more of those.
    pub new_agency: bool,
}

/// Per agency and person in this process: when the window began, failures.
type LocalFailures = HashMap<(String, String), (i64, u64)>;
/// Per person in this process: when the window began, the agencies.
type LocalAgencies = HashMap<String, (i64, std::collections::HashSet<String>)>;

pub(super) struct NumberFailures {
    shared: Arc<Shared>,
    local: Mutex<(LocalFailures, LocalAgencies)>,
}

impl NumberFailures {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            local: Mutex::default(),
        }
    }

    /// `Some(retry_after)` when `agency` has had more than `limit` failed
    /// checks of the person filed under `subject` in the last 24 hours.
    /// Other agencies' failures never count here.
    pub(super) async fn suspended(
        &self,
        agency: &str,
        subject: &str,
        limit: u64,
        now_us: i64,
    ) -> Option<Duration> {
        let key = failure_key(agency, subject);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
        if let Some((count, ttl_ms)) = self
            .shared
            .run::<(Option<u64>, i64)>("failures", &pipe)
            .await
        {
            return (count.unwrap_or(0) > limit)
                .then(|| Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(1)));
        }
        let failures = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let (since, count) = *failures.0.get(&(agency.to_owned(), subject.to_owned()))?;
        let left = since + FAILURE_WINDOW_US - now_us;
        (left > 0 && count > limit).then(|| Duration::from_micros(u64::try_from(left).unwrap_or(1)))
    }

    /// Counts a failed check by `agency` of the person filed under
    /// `subject`.
    pub(super) async fn count(&self, agency: &str, subject: &str, now_us: i64) -> Failures {
        let key = failure_key(agency, subject);
        let agencies_key = format!("vnid:fa:v1:{subject}");
        let window_ms = FAILURE_WINDOW_US / 1_000;
        let mut pipe = redis::pipe();
        pipe.cmd("INCR")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window_ms)
            .arg("NX")
            .ignore()
            .cmd("SADD")
            .arg(&agencies_key)
            .arg(agency)
            .cmd("PEXPIRE")
            .arg(&agencies_key)
            .arg(window_ms)
            .arg("NX")
            .ignore()
            .cmd("SCARD")
            .arg(&agencies_key);
        if let Some((by_agency, added, agencies)) =
            self.shared.run::<(u64, u64, u64)>("failures", &pipe).await
        {
            return Failures {
                by_agency,
                agencies,
                new_agency: added == 1,
            };
        }
        let mut guard = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let (failures, agencies) = &mut *guard;
        if failures.len() >= LOCAL_FAILURE_ENTRIES {
            failures.retain(|_, (since, _)| *since + FAILURE_WINDOW_US > now_us);
            agencies.retain(|_, (since, _)| *since + FAILURE_WINDOW_US > now_us);
        }
        let pair = (agency.to_owned(), subject.to_owned());
        if failures.len() >= LOCAL_FAILURE_ENTRIES && !failures.contains_key(&pair) {
            return Failures {
                by_agency: 0,
                agencies: 0,
                new_agency: false,
            };
        }
        let entry = failures.entry(pair).or_insert((now_us, 0));
        if entry.0 + FAILURE_WINDOW_US <= now_us {
            *entry = (now_us, 0);
        }
        entry.1 += 1;
        let by_agency = entry.1;
        let seen = agencies
            .entry(subject.to_owned())
            .or_insert_with(|| (now_us, Default::default()));
        if seen.0 + FAILURE_WINDOW_US <= now_us {
            *seen = (now_us, Default::default());
        }
        let new_agency = seen.1.insert(agency.to_owned());
        Failures {
            by_agency,
            agencies: seen.1.len() as u64,
            new_agency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::shared::SharedParams;
    use super::*;

    const T0: i64 = 1_795_737_600 * 1_000_000;

    #[test]
    fn one_agencys_failures_suspend_only_its_own_checks() {
        let shared = Shared::new(
            None,
            SharedParams {
                timeout: Duration::from_millis(10),
                breaker_failures: 1,
                breaker_cooldown: Duration::from_secs(1),
            },
        )
        .unwrap();
        let q = NumberFailures::new(Arc::new(shared));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let limit = 3;
        for n in 1..=4 {
            let counted = rt.block_on(q.count("enumerator", "subject-a", T0));
            assert_eq!(counted.by_agency, n);
            assert_eq!((counted.agencies, counted.new_agency), (1, n == 1));
        }
        assert!(
            rt.block_on(q.suspended("enumerator", "subject-a", limit, T0))
                .is_some()
        );
        assert_eq!(
            rt.block_on(q.suspended("hospital", "subject-a", limit, T0)),
            None
        );
        let other = rt.block_on(q.count("hospital", "subject-a", T0));
        assert_eq!(
            (other.by_agency, other.agencies, other.new_agency),
            (1, 2, true)
        );
        // The window ends.
        assert_eq!(
            rt.block_on(q.suspended("enumerator", "subject-a", limit, T0 + US_PER_DAY)),
            None
        );
    }
}
