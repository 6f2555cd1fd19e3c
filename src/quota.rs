//! Per-agency rates and daily quotas; and per agency and person, the count
//! of failed checks that suspends that agency's further checks of a number
//! it is guessing at (never another agency's), with the count of agencies
//! failing on one number for a cross-agency alert.
//!
//! A rate is a GCRA (generic cell rate algorithm: a token bucket kept as
//! one timestamp): `rate_per_second` sustained, up to `burst` at once. A
//! daily quota counts checks per UTC day. With Redis, the state is shared
//! by every instance (one Lua script decides and counts atomically), and a
//! day's count that Redis does not have (a new day, or a Redis restarted or
//! flushed) is rebuilt from the audit trail, which holds every check
//! answered. When Redis cannot be reached, each instance grants its share
//! (`1 / instances`) of the rate and of what the trail says is left of the
//! day, so that a Redis outage never hands out a fresh quota.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use redis::aio::ConnectionManager;

use crate::audit::{AuditError, AuditStore};
use crate::infra::breaker::Breaker;
use crate::infra::redis::{RedisError, managed_connection, timed};
use crate::policy::Limits;

impl Limits {
    fn unlimited(&self) -> bool {
        self.rate_per_second.is_none() && self.daily.is_none()
    }

    /// Microseconds between two checks at the sustained rate.
    fn interval_us(&self) -> i64 {
        self.rate_per_second
            .map_or(0, |r| 1_000_000 / i64::from(r.max(1)))
    }

    /// How far ahead of the sustained rate a burst may run.
    fn tolerance_us(&self) -> i64 {
        self.interval_us() * i64::from(self.burst.max(1) - 1)
    }
}

/// Why a check is refused, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
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

/// How long failed checks of a person are remembered.
const FAILURE_WINDOW_US: i64 = US_PER_DAY;

/// Failure counters kept per instance at most (beyond them, only Redis
/// counts).
const LOCAL_FAILURE_ENTRIES: usize = 200_000;

const US_PER_DAY: i64 = 86_400 * 1_000_000;

fn until_tomorrow(now_us: i64) -> Duration {
    let left = US_PER_DAY - now_us.rem_euclid(US_PER_DAY);
    Duration::from_micros(u64::try_from(left).unwrap_or(0))
}

/// An agency's failures of one person: an agency id and a keyed hash,
/// nothing personal.
fn failure_key(agency: &str, subject: &str) -> String {
    format!("vnid:f:v2:{agency}:{subject}")
}

fn rate_refused(wait_us: i64) -> Exhausted {
    Exhausted::Rate {
        retry_after: Duration::from_micros(u64::try_from(wait_us.max(1)).unwrap_or(1)),
    }
}

/// Why a check could not be admitted.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    /// The day's count had to be rebuilt from the trail, which cannot be
    /// read: no check is granted on a guess.
    #[error(transparent)]
    Trail(#[from] AuditError),
}

/// One agency's state in this process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// GCRA's theoretical arrival time.
    tat_us: i64,
    day: i64,
    used: u64,
    /// This instance's allowance for a day, rebuilt from the trail and
    /// shared with the other instances: (day, checks).
    allowance: Option<(i64, u64)>,
}

impl Counter {
    /// Decides one check at `now_us`, and counts it if admitted.
    pub fn admit(&mut self, limits: &Limits, now_us: i64) -> Result<(), Exhausted> {
        self.admit_share(limits, now_us, 1)
    }

    /// Whether this counter knows its allowance for `day`.
    fn allowed_on(&self, day: i64) -> bool {
        self.allowance.is_some_and(|(d, _)| d == day)
    }

    /// From now on `day` allows `checks` more here.
    fn allow(&mut self, day: i64, checks: u64) {
        self.allowance = Some((day, checks));
        self.day = day;
        self.used = 0;
    }

    /// [`Counter::admit`] for one of `share` instances: the rate is split
    /// among them, and so is the day, where an allowance was given.
    fn admit_share(&mut self, limits: &Limits, now_us: i64, share: u32) -> Result<(), Exhausted> {
        let interval = limits.interval_us() * i64::from(share.max(1));
        let tolerance = interval * i64::from(limits.burst.max(1) - 1);
        let tat = self.tat_us.max(now_us);
        if interval > 0 && now_us < tat - tolerance {
            return Err(rate_refused(tat - tolerance - now_us));
        }
        let day = now_us.div_euclid(US_PER_DAY);
        let used = if day == self.day { self.used } else { 0 };
        let quota = match self.allowance {
            Some((allowed_day, checks)) if allowed_day == day => limits.daily.map(|_| checks),
            _ => limits.daily,
        };
        if quota.is_some_and(|quota| used >= quota) {
            return Err(Exhausted::Daily {
                retry_after: until_tomorrow(now_us),
            });
        }
        if interval > 0 {
            self.tat_us = tat + interval;
        }
        self.day = day;
        self.used = used + 1;
        Ok(())
    }
}

/// The same decision as [`Counter::admit`], on Redis, for every instance.
/// Returns `{0, 0}` (admitted), `{1, wait_us}` (rate), `{2, 0}` (daily) or
/// `{3, 0}` (the day's count is missing: rebuild it from the trail first).
const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local quota = tonumber(ARGV[4])
local used = redis.call('GET', KEYS[2])
if quota > 0 and not used then return {3, 0} end
local tat = now
if interval > 0 then
  tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
  if now < tat - tolerance then return {1, tat - tolerance - now} end
end
if quota > 0 and tonumber(used) >= quota then return {2, 0} end
if interval > 0 then
  redis.call('SET', KEYS[1], tat + interval, 'PX', math.floor((tat + interval - now) / 1000) + 1000)
end
if quota > 0 then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], 172800)
end
return {0, 0}
";

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

pub struct Quotas {
    local: Mutex<HashMap<String, Counter>>,
    failures: Mutex<(LocalFailures, LocalAgencies)>,
    shared: Option<(ConnectionManager, Duration)>,
    /// A slow or absent Redis costs each check at most one timeout, until
    /// the breaker opens; then checks are counted per instance at once.
    breaker: Breaker,
    /// Where a day's count is rebuilt from (`None`: no trail is kept, and
    /// a day Redis does not know starts at zero).
    trail: Option<Arc<dyn AuditStore>>,
    /// How many instances share the agencies' limits when Redis is gone.
    instances: u32,
}

impl Quotas {
    /// `redis_url`: share the counters there (absent: this process only),
    /// with `timeout` on each call and a breaker that opens after
    /// `failures` failures in a row, for `cooldown`.
    pub fn new(
        redis_url: Option<&str>,
        timeout: Duration,
        failures: u32,
        cooldown: Duration,
    ) -> Result<Self, RedisError> {
        let shared = match redis_url {
            Some(url) => Some((managed_connection(url, timeout)?, timeout)),
            None => None,
        };
        Ok(Self {
            local: Mutex::default(),
            failures: Mutex::default(),
            shared,
            breaker: Breaker::new(failures, cooldown),
            trail: None,
            instances: 1,
        })
    }

    /// Rebuilds a day's count from `trail` when Redis does not have it,
    /// and without Redis grants each of `instances` its share.
    pub fn with_trail(mut self, trail: Arc<dyn AuditStore>, instances: u32) -> Self {
        self.trail = Some(trail);
        self.instances = instances.max(1);
        self
    }

    /// Admits (and counts) one check of `agency`, or says why not.
    pub async fn admit(
        &self,
        agency: &str,
        limits: &Limits,
        now_us: i64,
    ) -> Result<(), QuotaError> {
        if limits.unlimited() {
            return Ok(());
        }
        let day = now_us.div_euclid(US_PER_DAY);
        let day_key = format!("vnid:q:v1:{agency}:day:{day}");
        let mut script = redis::cmd("EVAL");
        script
            .arg(SCRIPT)
            .arg(2)
            .arg(format!("vnid:q:v1:{agency}:rate"))
            .arg(&day_key)
            .arg(now_us)
            .arg(limits.interval_us())
            .arg(limits.tolerance_us())
            .arg(limits.daily.map_or(0, |q| q.min(i64::MAX as u64)));
        let mut pipe = redis::pipe();
        pipe.add_command(script);
        for _ in 0..2 {
            let Some(((code, wait_us),)) = self.on_redis::<((i64, i64),)>("quota", &pipe).await
            else {
                break;
            };
            match code {
                0 => return Ok(()),
                1 => return Err(rate_refused(wait_us).into()),
                2 => {
                    return Err(Exhausted::Daily {
                        retry_after: until_tomorrow(now_us),
                    }
                    .into());
                }
                _ => {
                    // Redis does not know the day: what the trail holds.
                    let used = self.used_today(agency, day).await?;
                    let mut seed = redis::pipe();
                    seed.cmd("SET")
                        .arg(&day_key)
                        .arg(used)
                        .arg("NX")
                        .arg("EX")
                        .arg(2 * US_PER_DAY / 1_000_000)
                        .ignore();
                    if self.on_redis::<()>("quota", &seed).await.is_none() {
                        break;
                    }
                }
            }
        }
        let share = self.instances;
        let needs_allowance = limits.daily.is_some() && {
            let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            local.get(agency).is_none_or(|c| !c.allowed_on(day))
        };
        let allowance = match (needs_allowance, limits.daily) {
            (true, Some(quota)) => {
                Some(quota.saturating_sub(self.used_today(agency, day).await?) / u64::from(share))
            }
            _ => None,
        };
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let counter = local.entry(agency.to_owned()).or_default();
        if let Some(checks) = allowance
            && !counter.allowed_on(day)
        {
            counter.allow(day, checks);
        }
        Ok(counter.admit_share(limits, now_us, share)?)
    }

    /// The checks `agency` was answered on UTC day `day`, by every
    /// instance, as the trail holds them (0 without a trail).
    async fn used_today(&self, agency: &str, day: i64) -> Result<u64, AuditError> {
        match &self.trail {
            Some(trail) => trail.checks_since(agency, day * US_PER_DAY).await,
            None => Ok(0),
        }
    }

    /// `Some(retry_after)` when `agency` has had more than `limit` failed
    /// checks of the person filed under `subject` in the last 24 hours.
    /// Other agencies' failures never count here.
    pub async fn suspended(
        &self,
        agency: &str,
        subject: &str,
        limit: u64,
        now_us: i64,
    ) -> Option<Duration> {
        let key = failure_key(agency, subject);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
        if let Some((count, ttl_ms)) = self.on_redis::<(Option<u64>, i64)>("failures", &pipe).await
        {
            return (count.unwrap_or(0) > limit)
                .then(|| Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(1)));
        }
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (since, count) = *failures.0.get(&(agency.to_owned(), subject.to_owned()))?;
        let left = since + FAILURE_WINDOW_US - now_us;
        (left > 0 && count > limit).then(|| Duration::from_micros(u64::try_from(left).unwrap_or(1)))
    }

    /// Counts a failed check by `agency` of the person filed under
    /// `subject`.
    pub async fn count_failure(&self, agency: &str, subject: &str, now_us: i64) -> Failures {
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
            self.on_redis::<(u64, u64, u64)>("failures", &pipe).await
        {
            return Failures {
                by_agency,
                agencies,
                new_agency: added == 1,
            };
        }
        let mut guard = self.failures.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Runs `pipe` on the shared Redis; `None` (count per instance) when
    /// there is none, its breaker is open, or it fails.
    async fn on_redis<T: redis::FromRedisValue>(
        &self,
        what: &str,
        pipe: &redis::Pipeline,
    ) -> Option<T> {
        let (connection, timeout) = self.shared.as_ref()?;
        if !self.breaker.allow(Instant::now()) {
            return None;
        }
        let mut connection = connection.clone();
        match timed(*timeout, what, pipe.query_async(&mut connection)).await {
            Ok(value) => {
                self.breaker.success();
                Some(value)
            }
            Err(error) => {
                self.breaker.failure(Instant::now());
                tracing::warn!(%error, "shared counters unavailable; counting per instance");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_737_600 * 1_000_000;

    fn limits(rate: u32, burst: u32, daily: Option<u64>) -> Limits {
        Limits {
            rate_per_second: Some(rate),
            burst,
            daily,
        }
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let l = limits(10, 3, None);
        let mut c = Counter::default();
        for _ in 0..3 {
            assert_eq!(c.admit(&l, T0), Ok(()));
        }
        assert_eq!(
            c.admit(&l, T0),
            Err(Exhausted::Rate {
                retry_after: Duration::from_millis(100)
            })
        );
        // One interval later, one more; a refusal counts nothing.
        assert!(c.admit(&l, T0 + 99_999).is_err());
        assert_eq!(c.admit(&l, T0 + 100_000), Ok(()));
        assert!(c.admit(&l, T0 + 100_000).is_err());
        // Idle long enough, the whole burst again.
        for _ in 0..3 {
            assert_eq!(c.admit(&l, T0 + 10_000_000), Ok(()));
        }
    }

    #[test]
    fn a_share_of_the_rate_and_of_what_is_left_of_the_day() {
        let l = limits(10, 1, Some(100));
        let mut c = Counter::default();
        // A third of the day's 40 left, a third of the rate.
        c.allow(T0.div_euclid(US_PER_DAY), 40 / 3);
        let mut admitted = 0;
        for step in 0..1_000 {
            if c.admit_share(&l, T0 + step * 100_000, 3).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 13, "the allowance, not the quota");
        let mut c = Counter::default();
        assert!(c.admit_share(&l, T0, 3).is_ok());
        assert!(c.admit_share(&l, T0 + 200_000, 3).is_err(), "every 300 ms");
        assert!(c.admit_share(&l, T0 + 300_000, 3).is_ok());
    }

    #[test]
    fn a_daily_quota_resets_at_midnight_utc() {
        let l = Limits {
            rate_per_second: None,
            burst: 1,
            daily: Some(2),
        };
        let mut c = Counter::default();
        let evening = T0 + 20 * 3_600 * 1_000_000;
        assert!(c.admit(&l, evening).is_ok());
        assert!(c.admit(&l, evening).is_ok());
        assert_eq!(
            c.admit(&l, evening),
            Err(Exhausted::Daily {
                retry_after: Duration::from_secs(4 * 3_600)
            })
        );
        assert!(c.admit(&l, T0 + US_PER_DAY).is_ok());
    }

    #[test]
    fn one_agencys_failures_suspend_only_its_own_checks() {
        let q = Quotas::new(None, Duration::from_millis(10), 1, Duration::from_secs(1)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let limit = 3;
        for n in 1..=4 {
            let counted = rt.block_on(q.count_failure("enumerator", "subject-a", T0));
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
        let other = rt.block_on(q.count_failure("hospital", "subject-a", T0));
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

    #[test]
    fn unlimited_agencies_are_never_counted() {
        let l = Limits::default();
        assert!(l.unlimited());
        let q = Quotas::new(None, Duration::from_millis(10), 1, Duration::from_secs(1)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for _ in 0..1_000 {
            assert!(rt.block_on(q.admit("a", &l, T0)).is_ok());
        }
        assert!(q.local.lock().unwrap().is_empty());
    }
}
