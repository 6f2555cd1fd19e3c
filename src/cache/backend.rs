//! Where sealed values live: Redis, or (with no `redis_url`) this process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use crate::infra::BoxFuture;
use crate::infra::redis::{RedisError, managed_connection, timed};

#[derive(Debug, thiserror::Error)]
#[error("cache: {0}")]
pub struct BackendError(String);

impl From<RedisError> for BackendError {
    fn from(error: RedisError) -> Self {
        Self(error.to_string())
    }
}

pub trait CacheBackend: Send + Sync + 'static {
    /// Whether every instance sees the same entries (Redis), so that an
    /// absent key means absent everywhere.
    fn shared(&self) -> bool;

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>>;
    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    /// Sets `key` unless it is there: `None` if this call set it, else
    /// the value that was there (left as it was).
    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>>;
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BackendError>>;
}

/// Redis through one managed, multiplexed connection that reconnects by
/// itself. Every call has a deadline.
pub struct RedisBackend {
    connection: ConnectionManager,
    timeout: Duration,
}

impl RedisBackend {
    /// Connects lazily: the server starts, and serves from the mirror,
    /// while Redis is down.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, BackendError> {
        Ok(Self {
            connection: managed_connection(url, timeout)?,
            timeout,
        })
    }
}

impl RedisBackend {
    /// One command on the shared connection, with the deadline.
    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &str,
        command: redis::Cmd,
    ) -> Result<T, BackendError> {
        let mut connection = self.connection.clone();
        Ok(timed(
            self.timeout,
            what,
            command.query_async::<T>(&mut connection),
        )
        .await?)
    }
}

impl CacheBackend for RedisBackend {
    fn shared(&self) -> bool {
        true
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>> {
        let mut command = redis::cmd("GET");
        command.arg(key);
        Box::pin(self.run("GET", command))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let mut command = redis::cmd("SET");
        command.arg(key).arg(value).arg("PX").arg(millis(ttl));
        Box::pin(self.run("SET", command))
    }

    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>> {
        // With GET, nil when the key was absent (and is now set), else the
        // value it holds (Redis 7.0 and later).
        let mut command = redis::cmd("SET");
        command
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(millis(ttl));
        Box::pin(self.run("SET NX GET", command))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        let mut command = redis::cmd("DEL");
        command.arg(key);
        Box::pin(self.run("DEL", command))
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The in-process cache of the embedded default: bounded, with expiry.
pub struct MemoryBackend {
    capacity: usize,
    entries: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

impl MemoryBackend {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::default(),
        }
    }
}

impl CacheBackend for MemoryBackend {
    fn shared(&self) -> bool {
        false
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let value = match entries.get(key) {
            Some((expires, value)) if *expires > now => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        };
        Box::pin(std::future::ready(Ok(value)))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let expires = Instant::now() + ttl;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.insert(&mut entries, key, value, expires);
        Box::pin(std::future::ready(Ok(())))
    }

    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let held = entries
            .get(key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, value)| value.clone());
        if held.is_none() {
            self.insert(&mut entries, key, value, now + ttl);
        }
        Box::pin(std::future::ready(Ok(held)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(key);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl MemoryBackend {
    fn insert(
        &self,
        entries: &mut HashMap<String, (Instant, Vec<u8>)>,
        key: &str,
        value: Vec<u8>,
        expires: Instant,
    ) {
        if entries.len() >= self.capacity {
            let now = Instant::now();
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= self.capacity {
                // Still full of live entries: start over rather than grow.
                entries.clear();
            }
        }
        entries.insert(key.to_owned(), (expires, value));
    }
}
