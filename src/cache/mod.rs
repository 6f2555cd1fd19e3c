//! Cache-aside between the verifier and the mirror.
//!
//! - Keys are `vnid:v1:<generation>:<keyed hash of the ID number>` and values
//!   are sealed (see [`seal`]): the cache never holds a readable ID number,
//!   name or date, and a value moved to another key does not open.
//! - Every committed import starts a new mirror generation. Each instance
//!   learns the generation from every mirror answer and by asking the mirror
//!   every `generation_poll_ms`, so after an import no instance answers from
//!   the old records for longer than that (default 500 ms), whatever the TTL.
//! - Concurrent misses for one key make one mirror query; the others wait
//!   for its answer.
//! - "Not found" is cached too, briefly, so an unknown number and a known one
//!   cost the same.
//! - The cache is never needed: a failing, slow or refusing cache (every call
//!   has a deadline) trips a circuit breaker, lookups go straight to the
//!   mirror (at most `max_db_queries` at once), and the breaker probes until
//!   the cache is back.
//! - The cache never stands in for the mirror: while the mirror does not
//!   answer the generation poll, lookups go to the mirror, and so a mirror
//!   outage is UNAVAILABLE, not a verdict from a cached copy.

mod backend;
pub mod seal;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, Semaphore};

pub use backend::{BackendError, CacheBackend, MemoryBackend, RedisBackend};

use crate::infra::breaker::Breaker;
pub use crate::infra::breaker::BreakerState;
pub use seal::{KEY_PREFIX, Sealer};

use crate::domain::PersonalIdNumber;
use crate::infra::BoxFuture;
use crate::mirror::{Found, MirrorStore, StoreError};

/// How the cache behaves; see `CacheSettings` in the configuration.
#[derive(Debug, Clone)]
pub struct CacheParams {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    /// Each TTL is shortened by up to this share, at random, so that keys
    /// written together do not expire together.
    pub jitter: f64,
    pub generation_poll: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub max_db_queries: usize,
    pub metrics_log: Duration,
    /// How long a used `request_id` stays marked.
    pub request_ttl: Duration,
}

/// Counters, read by tests and logged every `metrics_log` as one
/// `vnid::metrics` event.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    pub hits: AtomicU64,
    pub negative_hits: AtomicU64,
    pub misses: AtomicU64,
    /// Cache calls that failed or timed out.
    pub errors: AtomicU64,
    /// Values that did not open (tampered or moved): refused, never served.
    pub corrupt: AtomicU64,
    /// PointReads that skipped the cache because the breaker was open.
    pub bypassed: AtomicU64,
    /// PointReads not expected to repeat (batch items), sent past the cache.
    pub single_use: AtomicU64,
    pub mirror_queries: AtomicU64,
    /// Misses answered by another call's mirror query.
    pub coalesced: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub hits: u64,
    pub negative_hits: u64,
    pub misses: u64,
    pub errors: u64,
    pub corrupt: u64,
    pub bypassed: u64,
    pub single_use: u64,
    pub mirror_queries: u64,
    pub coalesced: u64,
}

impl CacheMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            hits: get(&self.hits),
            negative_hits: get(&self.negative_hits),
            misses: get(&self.misses),
            errors: get(&self.errors),
            corrupt: get(&self.corrupt),
            bypassed: get(&self.bypassed),
            single_use: get(&self.single_use),
            mirror_queries: get(&self.mirror_queries),
            coalesced: get(&self.coalesced),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

type Shared = Arc<OnceCell<Result<Found, Arc<StoreError>>>>;

struct Inner {
    mirror: Arc<dyn MirrorStore>,
    backend: Arc<dyn CacheBackend>,
    sealer: Sealer,
    /// The newest mirror generation this instance knows of.
    generation: AtomicI64,
    /// Set while the mirror does not answer the generation poll: the cache
    /// then answers nothing, so that a mirror outage is UNAVAILABLE (as
    /// DESIGN.md requires), never a verdict from a copy.
    mirror_down: AtomicBool,
    /// Mirror queries under way, by cache key, for coalescing.
    inflight: Mutex<HashMap<String, Shared>>,
    /// Bounds concurrent mirror queries, above all when the cache is down.
    db_permits: Semaphore,
    breaker: Breaker,
    metrics: CacheMetrics,
    params: CacheParams,
}

/// A [`MirrorStore`] that answers from the cache when it can.
pub struct CachedMirror {
    inner: Arc<Inner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for CachedMirror {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl CachedMirror {
    /// Wraps `mirror`; starts the generation watcher and the metrics log.
    /// Needs a Tokio runtime.
    pub fn new(
        mirror: Arc<dyn MirrorStore>,
        backend: Arc<dyn CacheBackend>,
        sealer: Sealer,
        params: CacheParams,
    ) -> Self {
        let inner = Arc::new(Inner {
            db_permits: Semaphore::new(params.max_db_queries.max(1)),
            breaker: Breaker::new(params.breaker_failures, params.breaker_cooldown),
            mirror,
            backend,
            sealer,
            generation: AtomicI64::new(0),
            mirror_down: AtomicBool::new(false),
            inflight: Mutex::default(),
            metrics: CacheMetrics::default(),
            params,
        });
        let tasks = vec![
            tokio::spawn(watch_generation(Arc::downgrade(&inner))),
            tokio::spawn(log_metrics(Arc::downgrade(&inner))),
        ];
        Self { inner, tasks }
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    pub fn generation(&self) -> i64 {
        self.inner.generation.load(Ordering::Relaxed)
    }
}

async fn watch_generation(inner: Weak<Inner>) {
    let Some(poll) = inner.upgrade().map(|i| i.params.generation_poll) else {
        return;
    };
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        match inner.mirror.generation().await {
            // The mirror is the truth, even if it went back (a restore).
            Ok(generation) => {
                inner.generation.store(generation, Ordering::Relaxed);
                inner.mirror_down.store(false, Ordering::Relaxed);
            }
            Err(StoreError::Unavailable(e)) => {
                inner.mirror_down.store(true, Ordering::Relaxed);
                tracing::debug!(error = %e, "the mirror does not answer");
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the mirror generation"),
        }
    }
}

async fn log_metrics(inner: Weak<Inner>) {
    let Some(every) = inner.upgrade().map(|i| i.params.metrics_log) else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let m = inner.metrics.snapshot();
        tracing::info!(
            target: "vnid::metrics",
            hits = m.hits,
            negative_hits = m.negative_hits,
            misses = m.misses,
            errors = m.errors,
            corrupt = m.corrupt,
            bypassed = m.bypassed,
            single_use = m.single_use,
            mirror_queries = m.mirror_queries,
            coalesced = m.coalesced,
            breaker = inner.breaker.state().as_str(),
            "cache metrics"
        );
    }
}

impl Inner {
    /// A cache read. `second_look` marks the re-check a would-be leader
    /// makes before querying the mirror (its misses are not counted twice).
    async fn read_cache(
        &self,
        key: &str,
        id: &PersonalIdNumber,
        second_look: bool,
    ) -> Option<Found> {
        if !self.breaker.allow(Instant::now()) {
            if !second_look {
                bump(&self.metrics.bypassed);
            }
            return None;
        }
        let read = self.backend.get(key).await;
        let Some(value) = self.note_outcome("cache read", read)? else {
            if !second_look {
                bump(&self.metrics.misses);
            }
            return None;
        };
        match self.sealer.open(key, id, &value) {
            Ok(lookup) => {
                bump(if lookup.record.is_some() {
                    &self.metrics.hits
                } else {
                    &self.metrics.negative_hits
                });
                Some(lookup)
            }
            Err(_) => {
                if !second_look {
                    bump(&self.metrics.corrupt);
                    tracing::warn!("a cached value did not open; it was ignored");
                }
                None
            }
        }
    }

    async fn query_mirror(&self, id: &PersonalIdNumber) -> Result<Found, StoreError> {
        let _permit = self
            .db_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the mirror query queue is closed".into()))?;
        bump(&self.metrics.mirror_queries);
        let lookup = self.mirror.find(id).await?;
        self.generation
            .fetch_max(lookup.generation, Ordering::Relaxed);
        Ok(lookup)
    }

    fn ttl(&self, lookup: &Found) -> Duration {
        let base = if lookup.record.is_some() {
            self.params.ttl
        } else {
            self.params.negative_ttl
        };
        let mut byte = [0u8; 1];
        let shave = match getrandom::fill(&mut byte) {
            Ok(()) => f64::from(byte[0]) / 255.0 * self.params.jitter.clamp(0.0, 0.9),
            Err(_) => 0.0,
        };
        base.mul_f64(1.0 - shave)
    }

    /// A cache call's outcome, told to the breaker and counted: the value,
    /// or `None` when the call failed.
    fn note_outcome<T>(&self, what: &str, result: Result<T, BackendError>) -> Option<T> {
        match result {
            Ok(value) => {
                self.breaker.success();
                Some(value)
            }
            Err(e) => {
                self.breaker.failure(Instant::now());
                bump(&self.metrics.errors);
                tracing::debug!(error = %e, "{what} failed");
                None
            }
        }
    }

    /// Whether the request index can be asked: a shared cache whose breaker
    /// lets calls through.
    fn index_usable(&self) -> bool {
        self.backend.shared() && self.breaker.allow(Instant::now())
    }

    /// Ends coalescing on `shared`: later misses query again.
    fn forget(&self, id_hash: &str, shared: &Shared) {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if inflight
            .get(id_hash)
            .is_some_and(|current| Arc::ptr_eq(current, shared))
        {
            inflight.remove(id_hash);
        }
    }

    /// Writes the answer of a mirror query to the cache, then lets later
    /// misses of the same person query again.
    async fn write_back(
        &self,
        id_hash: String,
        shared: Shared,
        result: Result<Found, Arc<StoreError>>,
    ) {
        if let Ok(lookup) = result
            && self.breaker.allow(Instant::now())
        {
            // Stored under the generation the mirror answered from.
            let key = Sealer::key_of(lookup.generation, &id_hash);
            match self.sealer.seal(&key, &lookup) {
                Ok(value) => {
                    let written = self.backend.set(&key, value, self.ttl(&lookup)).await;
                    self.note_outcome("cache write", written);
                }
                Err(e) => tracing::warn!(error = %e, "cannot seal a cache value"),
            }
        }
        self.forget(&id_hash, &shared);
    }
}

/// What the index knows of an agency's `request_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Unmarked, and now marked by this call: the request is new, and the
    /// trail need not be read.
    New,
    /// Marked for the same request: a retry (or a copy racing the first),
    /// whose first answer the trail holds if it was given.
    Same,
    /// Marked for another request: a conflict, known without the trail.
    Other,
    /// The index cannot tell (no index, breaker open, an old mark): ask
    /// the trail.
    Unknown,
}

/// Which `request_id`s an agency has used, and for what request, so that
/// a first request need not ask the audit trail whether it is a retry.
/// The trail stays the record: it refuses a second request under one id
/// whatever the index says.
pub trait RequestIndex: Send + Sync + 'static {
    /// Marks an agency's `request_id` as used for the request whose keyed
    /// digest is `digest`, in one call, and says what was there. A mark
    /// set for a check that then failed only sends its retry to the trail.
    fn claim<'a>(
        &'a self,
        agency: &'a str,
        request_id: &'a str,
        digest: &'a str,
    ) -> BoxFuture<'a, Claim>;
    /// Takes back the mark of a request refused before it was checked (a
    /// quota), so that refused traffic leaves no marks behind.
    fn release<'a>(&'a self, agency: &'a str, request_id: &'a str) -> BoxFuture<'a, ()>;
}

impl RequestIndex for CachedMirror {
    fn claim<'a>(
        &'a self,
        agency: &'a str,
        request_id: &'a str,
        digest: &'a str,
    ) -> BoxFuture<'a, Claim> {
        Box::pin(async move {
            let inner = &self.inner;
            if !inner.index_usable() {
                return Claim::Unknown;
            }
            let key = inner.sealer.request_key(agency, request_id);
            let ttl = inner.params.request_ttl;
            let mark = digest.as_bytes().to_vec();
            let held = inner.backend.set_if_absent(&key, mark, ttl).await;
            match inner.note_outcome("request index call", held) {
                None => Claim::Unknown,
                Some(None) => Claim::New,
                Some(Some(held)) if held == digest.as_bytes() => Claim::Same,
                // Marks of an earlier version held `1`, not a digest.
                Some(Some(held)) if held == b"1" => Claim::Unknown,
                Some(Some(_)) => Claim::Other,
            }
        })
    }

    fn release<'a>(&'a self, agency: &'a str, request_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            if inner.index_usable() {
                let key = inner.sealer.request_key(agency, request_id);
                let deleted = inner.backend.delete(&key).await;
                inner.note_outcome("request index call", deleted);
            }
        })
    }
}

impl MirrorStore for CachedMirror {
    fn find<'a>(&'a self, id: &'a PersonalIdNumber) -> BoxFuture<'a, Result<Found, StoreError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if inner.mirror_down.load(Ordering::Relaxed) {
                // Straight to the mirror: it answers (and the flag clears at
                // the next poll) or the call is UNAVAILABLE.
                return inner.query_mirror(id).await;
            }
            let known = inner.generation.load(Ordering::Relaxed);
            let hash = inner.sealer.id_hash(id);
            if let Some(found) = inner
                .read_cache(&Sealer::key_of(known, &hash), id, false)
                .await
            {
                return Ok(found);
            }
            // Misses coalesce per person, whatever generation each caller
            // knew when it started.
            let shared = inner
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(hash.clone())
                .or_default()
                .clone();
            let (mut led, mut queried) = (false, false);
            let result = shared
                .get_or_init(|| async {
                    led = true;
                    // Another leader may have written the value between our
                    // miss and now, perhaps under a generation learned since:
                    // look again before asking the mirror.
                    let now_key = Sealer::key_of(inner.generation.load(Ordering::Relaxed), &hash);
                    if let Some(found) = inner.read_cache(&now_key, id, true).await {
                        return Ok(found);
                    }
                    queried = true;
                    inner.query_mirror(id).await.map_err(Arc::new)
                })
                .await
                .clone();
            if queried {
                let (inner, result) = (self.inner.clone(), result.clone());
                tokio::spawn(async move { inner.write_back(hash, shared, result).await });
            } else if led {
                inner.forget(&hash, &shared);
            } else {
                bump(&inner.metrics.coalesced);
            }
            match result {
                // A shared answer from before a generation this caller
                // already knew of: never serve it, ask again.
                Ok(lookup) if lookup.generation < known => inner.query_mirror(id).await,
                other => other.map_err(|e| e.copied()),
            }
        })
    }

    fn find_once<'a>(
        &'a self,
        id: &'a PersonalIdNumber,
    ) -> BoxFuture<'a, Result<Found, StoreError>> {
        Box::pin(async move {
            bump(&self.inner.metrics.single_use);
            self.inner.query_mirror(id).await
        })
    }

    fn generation(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        self.inner.mirror.generation()
    }

    fn gathered(&self) -> Option<crate::mirror::Gathered> {
        self.inner.mirror.gathered()
    }
}
