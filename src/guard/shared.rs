//! The counters every instance shares, on Redis: each call under a
//! deadline and behind a breaker, so that a slow or absent Redis costs a
//! check at most one timeout until the breaker opens, and from then on
//! the guard counts per instance at once.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use crate::infra::breaker::Breaker;
use crate::infra::redis::{RedisError, managed_connection, timed};

/// How the guard reaches Redis.
#[derive(Debug, Clone, Copy)]
pub struct SharedParams {
    /// The deadline of every call.
    pub timeout: Duration,
    /// Failures in a row that open the breaker ...
    pub breaker_failures: u32,
    /// ... for this long.
    pub breaker_cooldown: Duration,
}

pub(super) struct Shared {
    /// `None`: no Redis; every counter is this instance's.
    connection: Option<ConnectionManager>,
    timeout: Duration,
    breaker: Breaker,
}

impl Shared {
    /// `redis_url`: share the counters there (absent: this process only).
    pub(super) fn new(redis_url: Option<&str>, params: SharedParams) -> Result<Self, RedisError> {
        let connection = match redis_url {
            Some(url) => Some(managed_connection(url, params.timeout)?),
            None => None,
        };
        Ok(Self {
            connection,
            timeout: params.timeout,
            breaker: Breaker::new(params.breaker_failures, params.breaker_cooldown),
        })
    }

    /// Runs `pipe` on the shared Redis; `None` (count per instance) when
    /// there is none, its breaker is open, or it fails.
    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        what: &str,
        pipe: &redis::Pipeline,
    ) -> Option<T> {
        let mut connection = self.connection.clone()?;
        if !self.breaker.allow(Instant::now()) {
            return None;
        }
        match timed(self.timeout, what, pipe.query_async(&mut connection)).await {
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
