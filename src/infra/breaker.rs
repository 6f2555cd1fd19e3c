//! A circuit breaker for a remote service (the cache's Redis, the quotas'):
//! after a run of failures, stop asking (the caller falls back: lookups go
//! straight to the mirror, quotas count per instance) and probe again after
//! a cool-down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// The cache is used.
    Closed,
    /// The cache is skipped until the cool-down ends.
    Open,
    /// One call probes the cache; its outcome closes or re-opens.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    opened_at: Option<Instant>,
    probing: bool,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: None,
                probing: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Whether this call may use the cache, at `now`.
    pub fn allow(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => true,
            BreakerState::Open => {
                if inner
                    .opened_at
                    .is_some_and(|t| now.duration_since(t) >= self.cooldown)
                {
                    inner.state = BreakerState::HalfOpen;
                    inner.probing = true;
                    tracing::info!(state = "half_open", "cache breaker probing");
                    true
                } else {
                    false
                }
            }
            BreakerState::HalfOpen => {
                if inner.probing {
                    false
                } else {
                    inner.probing = true;
                    true
                }
            }
        }
    }

    pub fn success(&self) {
        let mut inner = self.lock();
        if inner.state != BreakerState::Closed {
            tracing::info!(state = "closed", "cache breaker closed: the cache is back");
        }
        *inner = Inner {
            state: BreakerState::Closed,
            failures: 0,
            opened_at: None,
            probing: false,
        };
    }

    pub fn failure(&self, now: Instant) {
        let mut inner = self.lock();
        inner.failures += 1;
        inner.probing = false;
        let trip = inner.state == BreakerState::HalfOpen || inner.failures >= self.threshold;
        if trip && inner.state != BreakerState::Open {
            tracing::warn!(
                state = "open",
                failures = inner.failures,
                "cache breaker open: lookups go to the mirror"
            );
        }
        if trip {
            inner.state = BreakerState::Open;
            inner.opened_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_probes_after_cooldown_and_closes_on_success() {
        let breaker = Breaker::new(3, Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(breaker.allow(t0));
        breaker.failure(t0);
        breaker.failure(t0);
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.failure(t0);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allow(t0 + Duration::from_secs(1)));
        // After the cool-down, exactly one probe.
        let later = t0 + Duration::from_secs(2);
        assert!(breaker.allow(later));
        assert!(!breaker.allow(later));
        breaker.failure(later);
        assert_eq!(breaker.state(), BreakerState::Open);
        let again = later + Duration::from_secs(2);
        assert!(breaker.allow(again));
        breaker.success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.allow(again));
    }
}
