//! Per-agency rates and daily quotas.
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::shared::Shared;
use super::{GuardError, Refusal, US_PER_DAY};
use crate::audit::{AuditError, AuditStore};
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

fn until_tomorrow(now_us: i64) -> Duration {
    let left = US_PER_DAY - now_us.rem_euclid(US_PER_DAY);
    Duration::from_micros(u64::try_from(left).unwrap_or(0))
}

fn rate_refused(wait_us: i64) -> Refusal {
    Refusal::Rate {
        retry_after: Duration::from_micros(u64::try_from(wait_us.max(1)).unwrap_or(1)),
    }
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

    /// Decides one check at `now_us`, and counts it if admitted, for one
    /// of `share` instances: the rate is split among them, and so is the
    /// day, where an allowance was given.
    fn admit_share(&mut self, limits: &Limits, now_us: i64, share: u32) -> Result<(), Refusal> {
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
            return Err(Refusal::Daily {
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

/// The same decision as [`Counter::admit_share`] (of one instance), on Redis, for every instance.
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

pub(super) struct Quotas {
    local: Mutex<HashMap<String, Counter>>,
    shared: Arc<Shared>,
    /// Where a day's count is rebuilt from (`None`: no trail is kept, and
    /// a day Redis does not know starts at zero).
    trail: Option<Arc<dyn AuditStore>>,
    /// How many instances share the agencies' limits when Redis is gone.
    instances: u32,
}

impl Quotas {
    pub(super) fn new(
        shared: Arc<Shared>,
        trail: Option<Arc<dyn AuditStore>>,
        instances: u32,
    ) -> Self {
        Self {
            local: Mutex::default(),
            shared,
            trail,
            instances: instances.max(1),
        }
    }

    /// Admits (and counts) one check of `agency`, or says why not.
    pub(super) async fn admit(
        &self,
        agency: &str,
        limits: &Limits,
        now_us: i64,
    ) -> Result<(), GuardError> {
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
            let Some(((code, wait_us),)) = self.shared.run::<((i64, i64),)>("quota", &pipe).await
            else {
                break;
            };
            match code {
                0 => return Ok(()),
                1 => return Err(rate_refused(wait_us).into()),
                2 => {
                    return Err(Refusal::Daily {
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
                    if self.shared.run::<()>("quota", &seed).await.is_none() {
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
            assert_eq!(c.admit_share(&l, T0, 1), Ok(()));
        }
        assert_eq!(
            c.admit_share(&l, T0, 1),
            Err(Refusal::Rate {
                retry_after: Duration::from_millis(100)
            })
        );
        // One interval later, one more; a refusal counts nothing.
        assert!(c.admit_share(&l, T0 + 99_999, 1).is_err());
        assert_eq!(c.admit_share(&l, T0 + 100_000, 1), Ok(()));
        assert!(c.admit_share(&l, T0 + 100_000, 1).is_err());
        // Idle long enough, the whole burst again.
        for _ in 0..3 {
            assert_eq!(c.admit_share(&l, T0 + 10_000_000, 1), Ok(()));
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
        assert!(c.admit_share(&l, evening, 1).is_ok());
        assert!(c.admit_share(&l, evening, 1).is_ok());
        assert_eq!(
            c.admit_share(&l, evening, 1),
            Err(Refusal::Daily {
                retry_after: Duration::from_secs(4 * 3_600)
            })
        );
        assert!(c.admit_share(&l, T0 + US_PER_DAY, 1).is_ok());
    }

    #[test]
    fn unlimited_agencies_are_never_counted() {
        let l = Limits::default();
        assert!(l.unlimited());
        let shared = Shared::new(
            None,
            super::super::shared::SharedParams {
                timeout: Duration::from_millis(10),
                breaker_failures: 1,
                breaker_cooldown: Duration::from_secs(1),
            },
        )
        .unwrap();
        let q = Quotas::new(Arc::new(shared), None, 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for _ in 0..1_000 {
            assert!(rt.block_on(q.admit("a", &l, T0)).is_ok());
        }
        assert!(q.local.lock().unwrap().is_empty());
    }
}
