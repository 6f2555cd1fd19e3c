//! Reads batched into shared queries. Each read is queued for a batcher
//! task. With no query running, whatever has queued goes at once as one
//! query; while queries run, the next waits for them to end, or for a full
//! query's worth of reads, which then takes a further slot. Alone, a read
//! goes at once, as itself; under load, reads share queries: the database
//! parses, plans and answers one statement for many, on one pooled
//! connection instead of one each. Further slots go only to full queries:
//! on a busy machine a query's fixed cost in the database outweighs the
//! wait, while a load too big for one query at a time, or a slow query,
//! still spreads over the slots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use super::BoxFuture;

/// Keys in one query at most, for the stores' batchers.
pub const MAX_KEYS: usize = 64;
/// Queries at once, for the stores' batchers.
pub const SLOTS: usize = 4;

/// What a [`ReadBatcher`] reads.
pub trait ReadMany: Send + Sync + 'static {
    type Key: Clone + Send + Sync + 'static;
    type Value: Send + 'static;
    type Error: Send + 'static;

    /// Reads `keys` (one or more) in one query: one value per key, in
    /// their order.
    fn read_many<'a>(
        &'a self,
        keys: &'a [Self::Key],
    ) -> BoxFuture<'a, Result<Vec<Self::Value>, Self::Error>>;

    /// The error each read of a failed query gets (errors are not `Clone`).
    fn for_each_read(error: &Self::Error) -> Self::Error;

    /// A query that answered `values` values for `keys` keys.
    fn miscounted(keys: usize, values: usize) -> Self::Error;
}

/// The upper bounds of the gathered sizes counted: powers of two up to
/// [`MAX_KEYS`] (a batcher with a larger maximum counts the rest in the
/// last).
pub const SIZE_BOUNDS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Queries a batcher sent, the keys they carried, and how many queries
/// carried how many keys (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gathered {
    pub queries: u64,
    pub keys: u64,
    /// Queries by size: `[i]` counts those of more than `SIZE_BOUNDS[i - 1]`
    /// keys and at most `SIZE_BOUNDS[i]`.
    pub by_size: [u64; SIZE_BOUNDS.len()],
}

#[derive(Debug, Default)]
struct Sent {
    queries: AtomicU64,
    keys: AtomicU64,
    by_size: [AtomicU64; SIZE_BOUNDS.len()],
}

impl Sent {
    fn count(&self, keys: usize) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.keys.fetch_add(keys as u64, Ordering::Relaxed);
        let size = SIZE_BOUNDS
            .iter()
            .position(|&bound| keys as u64 <= bound)
            .unwrap_or(SIZE_BOUNDS.len() - 1);
        self.by_size[size].fetch_add(1, Ordering::Relaxed);
    }
}

struct Pending<R: ReadMany> {
    key: R::Key,
    reply: oneshot::Sender<Result<R::Value, R::Error>>,
}

pub struct ReadBatcher<R: ReadMany> {
    reader: Arc<R>,
    /// Started by the first read, on its runtime.
    queue: OnceLock<mpsc::Sender<Pending<R>>>,
    /// Queries sent (each for one key or several), and their keys.
    sent: Arc<Sent>,
    /// Keys in one query at most.
    max_keys: usize,
    /// Queries at once at most.
    slots: usize,
}

impl<R: ReadMany> std::fmt::Debug for ReadBatcher<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBatcher")
            .field("sent", &self.sent())
            .field("max_keys", &self.max_keys)
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl<R: ReadMany> ReadBatcher<R> {
    pub fn new(reader: R, max_keys: usize, slots: usize) -> Self {
        Self {
            reader: Arc::new(reader),
            queue: OnceLock::new(),
            sent: Arc::default(),
            max_keys: max_keys.max(1),
            slots: slots.max(1),
        }
    }

    /// Queries sent so far: fewer than reads when they were gathered.
    pub fn queries(&self) -> u64 {
        self.sent().queries
    }

    /// Queries sent so far and the keys they carried.
    pub fn sent(&self) -> Gathered {
        Gathered {
            queries: self.sent.queries.load(Ordering::Relaxed),
            keys: self.sent.keys.load(Ordering::Relaxed),
            by_size: std::array::from_fn(|i| self.sent.by_size[i].load(Ordering::Relaxed)),
        }
    }

    pub async fn read(&self, key: R::Key) -> Result<R::Value, R::Error> {
        let queue = self.queue.get_or_init(|| {
            let (queue, gathered) = mpsc::channel(4 * self.max_keys * self.slots);
            let task = Task {
                reader: self.reader.clone(),
                sent: self.sent.clone(),
                max_keys: self.max_keys,
                slots: self.slots,
            };
            tokio::spawn(task.run(gathered));
            queue
        });
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            key: key.clone(),
            reply,
        };
        if queue.send(pending).await.is_ok()
            && let Ok(answer) = answer.await
        {
            return answer;
        }
        // The gatherer is gone with the runtime that started it: the read
        // goes alone.
        self.sent.count(1);
        let keys = [key];
        let mut values = counted::<R>(self.reader.read_many(&keys).await, 1)?;
        values.pop().ok_or_else(|| R::miscounted(1, 0))
    }
}

/// The values of a query for `keys` keys, if it answered one for each.
fn counted<R: ReadMany>(
    values: Result<Vec<R::Value>, R::Error>,
    keys: usize,
) -> Result<Vec<R::Value>, R::Error> {
    let values = values?;
    if values.len() == keys {
        Ok(values)
    } else {
        Err(R::miscounted(keys, values.len()))
    }
}

struct Task<R: ReadMany> {
    reader: Arc<R>,
    sent: Arc<Sent>,
    max_keys: usize,
    slots: usize,
}

impl<R: ReadMany> Task<R> {
    async fn run(self, mut queue: mpsc::Receiver<Pending<R>>) {
        let slots = Arc::new(Semaphore::new(self.slots));
        // Told each time a query ends and gives its slot back.
        let ended = Arc::new(Notify::new());
        let mut pending = Vec::with_capacity(self.max_keys);
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            if queue.recv_many(&mut pending, self.max_keys).await == 0 {
                return;
            }
            // Another query is running: this one waits to be full, or for
            // every other to end.
            while pending.len() < self.max_keys && slots.available_permits() + 1 < self.slots {
                let room = self.max_keys - pending.len();
                tokio::select! {
                    received = queue.recv_many(&mut pending, room) => if received == 0 {
                        break;
                    },
                    () = ended.notified() => {}
                }
            }
            let reads = std::mem::replace(&mut pending, Vec::with_capacity(self.max_keys));
            let reader = self.reader.clone();
            let ended = ended.clone();
            self.sent.count(reads.len());
            tokio::spawn(async move {
                let (keys, replies): (Vec<_>, Vec<_>) =
                    reads.into_iter().map(|p| (p.key, p.reply)).unzip();
                match counted::<R>(reader.read_many(&keys).await, keys.len()) {
                    Ok(values) => {
                        for (reply, value) in replies.into_iter().zip(values) {
                            let _ = reply.send(Ok(value));
                        }
                    }
                    Err(error) => {
                        for reply in replies {
                            let _ = reply.send(Err(R::for_each_read(&error)));
                        }
                    }
                }
                drop(slot);
                ended.notify_one();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Answers each key doubled, once the test lets the query through: each
    /// query takes one permit of `gate`. Records each query's size.
    struct Gated {
        sizes: Mutex<Vec<usize>>,
        gate: Semaphore,
    }

    impl ReadMany for Arc<Gated> {
        type Key = u32;
        type Value = u32;
        type Error = String;

        fn read_many<'a>(&'a self, keys: &'a [u32]) -> BoxFuture<'a, Result<Vec<u32>, String>> {
            Box::pin(async move {
                self.sizes
                    .lock()
                    .map_err(|e| e.to_string())?
                    .push(keys.len());
                self.gate
                    .acquire()
                    .await
                    .map_err(|e| e.to_string())?
                    .forget();
                Ok(keys.iter().map(|k| k * 2).collect())
            })
        }

        fn for_each_read(error: &String) -> String {
            error.clone()
        }

        fn miscounted(keys: usize, values: usize) -> String {
            format!("{keys} keys, {values} values")
        }
    }

    impl Gated {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                sizes: Mutex::default(),
                gate: Semaphore::new(0),
            })
        }

        fn sizes(&self) -> Vec<usize> {
            self.sizes.lock().unwrap().clone()
        }

        /// Waits (at most 5 s) until the queries sent are `want`.
        async fn sent(&self, want: &[usize]) {
            for _ in 0..5_000 {
                if self.sizes() == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(self.sizes(), want, "queries sent");
        }
    }

    /// A spawned read: its key and what it got.
    type Read = tokio::task::JoinHandle<(u32, Result<u32, String>)>;

    fn spawn_reads(
        gatherer: &Arc<ReadBatcher<Arc<Gated>>>,
        keys: std::ops::Range<u32>,
    ) -> Vec<Read> {
        keys.map(|k| {
            let g = gatherer.clone();
            tokio::spawn(async move { (k, g.read(k).await) })
        })
        .collect()
    }

    async fn each_got_its_own(reads: Vec<Read>) {
        for read in reads {
            let (key, value) = read.await.unwrap();
            assert_eq!(value, Ok(key * 2));
        }
    }

    #[tokio::test]
    async fn while_a_query_runs_the_next_waits_for_it_to_end() {
        let reader = Gated::new();
        let gatherer = Arc::new(ReadBatcher::new(reader.clone(), 8, 4));
        let first = spawn_reads(&gatherer, 0..1);
        reader.sent(&[1]).await;
        let next = spawn_reads(&gatherer, 1..6);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(reader.sizes(), [1], "three slots free, yet the five wait");
        reader.gate.add_permits(1);
        reader.sent(&[1, 5]).await;
        reader.gate.add_permits(1);
        each_got_its_own(first).await;
        each_got_its_own(next).await;
        assert_eq!(
            gatherer.sent(),
            Gathered {
                queries: 2,
                keys: 6,
                // One query of one key, one of five (at most 8).
                by_size: [1, 0, 0, 1, 0, 0, 0],
            }
        );
    }

    #[tokio::test]
    async fn a_full_query_takes_a_further_slot() {
        let reader = Gated::new();
        let gatherer = Arc::new(ReadBatcher::new(reader.clone(), 8, 3));
        let first = spawn_reads(&gatherer, 0..1);
        reader.sent(&[1]).await;
        let full = spawn_reads(&gatherer, 1..9);
        reader.sent(&[1, 8]).await;
        // Two running: a third slot is free, but two reads are not a full
        // query; they go when both running queries have ended.
        let rest = spawn_reads(&gatherer, 9..11);
        reader.gate.add_permits(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(reader.sizes(), [1, 8], "one query still runs");
        reader.gate.add_permits(1);
        reader.sent(&[1, 8, 2]).await;
        reader.gate.add_permits(1);
        each_got_its_own(first).await;
        each_got_its_own(full).await;
        each_got_its_own(rest).await;
    }

    #[tokio::test]
    async fn alone_a_read_goes_at_once() {
        let reader = Gated::new();
        reader.gate.add_permits(1);
        let gatherer = ReadBatcher::new(reader.clone(), 8, 4);
        assert_eq!(gatherer.read(21).await, Ok(42));
        assert_eq!(reader.sizes(), [1]);
    }
}
