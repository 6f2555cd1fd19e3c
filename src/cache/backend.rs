//! Where sealed values live: Redis, or (with no `redis_url`) this process.

use std::sync::Arc;
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

/// The in-process cache of the embedded default: bounded, each entry
/// with its own TTL. When full, it admits and evicts by how often and how
/// lately keys are read (TinyLFU), so that a burst of one-off keys does not
/// push the desks' hot entries out.
pub struct MemoryBackend {
    entries: moka::sync::Cache<String, Entry>,
}

/// A value and how long it lives.
#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    ttl: Duration,
}

/// Each entry expires its own TTL after it was written.
struct EntryTtl;

impl moka::Expiry<String, Entry> for EntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _at: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl MemoryBackend {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(u64::try_from(capacity.max(1)).unwrap_or(u64::MAX))
                .expire_after(EntryTtl)
                .build(),
        }
    }
}

impl CacheBackend for MemoryBackend {
    fn shared(&self) -> bool {
        false
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>> {
        let value = self.entries.get(key).map(|entry| entry.value.to_vec());
        Box::pin(std::future::ready(Ok(value)))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        self.entries.insert(key.to_owned(), Entry::new(value, ttl));
        Box::pin(std::future::ready(Ok(())))
    }

    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>> {
        let entry = self
            .entries
            .entry(key.to_owned())
            .or_insert_with(|| Entry::new(value, ttl));
        let held = (!entry.is_fresh()).then(|| entry.into_value().value.to_vec());
        Box::pin(std::future::ready(Ok(held)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        self.entries.invalidate(key);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Entry {
    fn new(value: Vec<u8>, ttl: Duration) -> Self {
        Self {
            value: value.into(),
            ttl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(future: BoxFuture<'_, Result<T, BackendError>>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
            .unwrap()
    }

    #[test]
    fn each_entry_lives_its_own_ttl() {
        let cache = MemoryBackend::new(100);
        run(cache.set("short", b"a".to_vec(), Duration::from_millis(50)));
        run(cache.set("long", b"b".to_vec(), Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(run(cache.get("short")), None);
        assert_eq!(run(cache.get("long")), Some(b"b".to_vec()));
    }

    #[test]
    fn set_if_absent_keeps_the_first_value_and_says_so() {
        let cache = MemoryBackend::new(100);
        let ttl = Duration::from_secs(60);
        assert_eq!(run(cache.set_if_absent("k", b"first".to_vec(), ttl)), None);
        assert_eq!(
            run(cache.set_if_absent("k", b"second".to_vec(), ttl)),
            Some(b"first".to_vec())
        );
        run(cache.delete("k"));
        assert_eq!(run(cache.set_if_absent("k", b"third".to_vec(), ttl)), None);
        assert_eq!(run(cache.get("k")), Some(b"third".to_vec()));
    }

    #[test]
    fn a_flood_of_one_off_keys_leaves_the_hot_ones() {
        let cache = MemoryBackend::new(100);
        let ttl = Duration::from_secs(60);
        for hot in 0..10 {
            run(cache.set(&format!("hot-{hot}"), vec![1], ttl));
        }
        for round in 0..50 {
            for hot in 0..10 {
                assert!(
                    run(cache.get(&format!("hot-{hot}"))).is_some(),
                    "round {round}"
                );
            }
            for cold in 0..20 {
                run(cache.set(&format!("cold-{round}-{cold}"), vec![0], ttl));
            }
            cache.entries.run_pending_tasks();
        }
        assert!(cache.entries.entry_count() <= 100);
    }
}
