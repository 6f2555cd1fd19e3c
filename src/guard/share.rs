//! Against harvesting by a registered agency: the share of its answers that
//! are NOT_VERIFIED because the number is unknown or a claim is wrong.
//!
//! A desk that types numbers from cards gets a few per cent of those; a
//! credential used to walk through candidate numbers gets nearly all. Per
//! agency, the share is a moving average over about its last
//! `1 / weight` checks. Once at least `min_checks` are seen and the share
//! passes `alert_share`, an alert is logged (agency and share; no personal
//! data) and the agency is throttled to `throttle_per_second` checks, refused
//! beyond it with `RESOURCE_EXHAUSTED`. The throttle lifts when the share
//! falls back below half the alert level.
//!
//! Each instance watches the agencies it serves. A share needs no sharing:
//! an enumerator spread over several instances shows the same share on each.
//! Time is passed in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The watch's settings. `alert_share` 0 turns it off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShareLimits {
    pub alert_share: f64,
    pub weight: f64,
    pub min_checks: u64,
    pub throttle_per_second: u32,
}

/// What recording an answer changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShareChange {
    None,
    /// The share passed the alert level: alert, and throttle.
    Raised {
        share: f64,
        checks: u64,
    },
    /// The share fell back: the throttle lifts.
    Cleared {
        share: f64,
    },
}

#[derive(Debug, Default)]
struct AgencyShare {
    share: f64,
    checks: u64,
    throttled: bool,
    /// When the next check is admitted while throttled.
    next_us: i64,
}

/// Agencies watched at most per instance (beyond them, new agencies are
/// not watched until an entry is freed): the registry is far smaller.
const MAX_AGENCIES: usize = 10_000;

pub struct ShareWatch {
    limits: ShareLimits,
    agencies: Mutex<HashMap<String, AgencyShare>>,
}

impl ShareWatch {
    pub fn new(limits: ShareLimits) -> Self {
        Self {
            limits,
            agencies: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.limits.alert_share > 0.0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AgencyShare>> {
        self.agencies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(retry_after)` when the agency is throttled and its next check
    /// is not due yet.
    pub fn admit(&self, agency: &str, now_us: i64) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let mut agencies = self.lock();
        let Some(state) = agencies.get_mut(agency).filter(|s| s.throttled) else {
            return Ok(());
        };
        if now_us < state.next_us {
            let wait = u64::try_from(state.next_us - now_us).unwrap_or(0);
            return Err(Duration::from_micros(wait));
        }
        let interval = 1_000_000 / i64::from(self.limits.throttle_per_second.max(1));
        state.next_us = now_us.saturating_add(interval);
        Ok(())
    }

    /// Records one answer: `failed` is NOT_VERIFIED for an unknown number
    /// or a wrong claim.
    pub fn record(&self, agency: &str, failed: bool) -> ShareChange {
        if !self.enabled() {
            return ShareChange::None;
        }
        let mut agencies = self.lock();
        if !agencies.contains_key(agency) && agencies.len() >= MAX_AGENCIES {
            return ShareChange::None;
        }
        let state = agencies.entry(agency.to_owned()).or_default();
        let limits = &self.limits;
        let x = if failed { 1.0 } else { 0.0 };
        state.share += limits.weight * (x - state.share);
        state.checks = state.checks.saturating_add(1);
        if !state.throttled && state.checks >= limits.min_checks && state.share > limits.alert_share
        {
            state.throttled = true;
            return ShareChange::Raised {
                share: state.share,
                checks: state.checks,
            };
        }
        if state.throttled && state.share < limits.alert_share / 2.0 {
            state.throttled = false;
            return ShareChange::Cleared { share: state.share };
        }
        ShareChange::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> ShareWatch {
        ShareWatch::new(ShareLimits {
            alert_share: 0.5,
            weight: 0.01,
            min_checks: 100,
            throttle_per_second: 1,
        })
    }

    /// The check at which the alert is raised, if any.
    fn raised_at(w: &ShareWatch, answers: impl Iterator<Item = bool>) -> Option<usize> {
        answers
            .enumerate()
            .find(|(_, failed)| matches!(w.record("a", *failed), ShareChange::Raised { .. }))
            .map(|(i, _)| i + 1)
    }

    #[test]
    fn an_enumerator_is_caught_within_a_few_hundred_checks() {
        // One existing number in 200 candidates.
        let w = watch();
        let at = raised_at(&w, (0..500).map(|i| i % 200 != 0));
        assert_eq!(at, Some(100), "at the first check it may be judged");
        // Throttled: one check a second.
        assert_eq!(w.admit("a", 0), Ok(()));
        assert_eq!(w.admit("a", 1), Err(Duration::from_micros(999_999)));
        assert_eq!(w.admit("a", 1_000_000), Ok(()));
        assert_eq!(w.admit("other", 1), Ok(()), "only that agency");
    }

    #[test]
    fn a_desk_with_typos_and_bad_runs_is_left_alone() {
        let w = watch();
        // 5 % failures, and a run of 20 failures in a row (a bad batch of
        // cards) in the middle.
        let desk = (0..20_000).map(|i| (i % 20 == 7) || (5_000..5_020).contains(&i));
        assert_eq!(raised_at(&w, desk), None);
        assert_eq!(w.admit("a", 0), Ok(()));
    }

    #[test]
    fn the_throttle_lifts_when_the_share_falls() {
        let w = watch();
        assert_eq!(raised_at(&w, std::iter::repeat_n(true, 150)), Some(100));
        let cleared = (0..500).find_map(|_| match w.record("a", false) {
            ShareChange::Cleared { share } => Some(share),
            _ => None,
        });
        assert!(cleared.is_some_and(|s| s < 0.25));
        assert_eq!(w.admit("a", 0), Ok(()));
        assert_eq!(w.admit("a", 1), Ok(()));
    }

    #[test]
    fn off_when_the_alert_share_is_zero() {
        let w = ShareWatch::new(ShareLimits {
            alert_share: 0.0,
            ..watch().limits
        });
        assert_eq!(raised_at(&w, std::iter::repeat_n(true, 1_000)), None);
    }
}
