//! Reads gathered into shared queries. Each read is queued for a gatherer
//! task, which sends whatever has queued as one query as soon as one of its
//! few query slots is free. Alone, a read goes at once, as itself; under
//! load, reads that arrive while the slots are busy share a query: the
//! database parses, plans and answers one statement for many, on one pooled
//! connection instead of one each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::mirror::BoxFuture;

/// Keys in one query at most, for the stores' gatherers.
pub const MAX_KEYS: usize = 64;
/// Queries at once, for the stores' gatherers.
pub const SLOTS: usize = 4;

/// What a [`Gatherer`] reads.
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

struct Pending<R: ReadMany> {
    key: R::Key,
    reply: oneshot::Sender<Result<R::Value, R::Error>>,
}

pub struct Gatherer<R: ReadMany> {
    reader: Arc<R>,
    /// Started by the first read, on its runtime.
    queue: OnceLock<mpsc::Sender<Pending<R>>>,
    /// Queries sent (each for one key or several).
    queries: Arc<AtomicU64>,
    /// Keys in one query at most.
    max_keys: usize,
    /// Queries at once at most.
    slots: usize,
}

impl<R: ReadMany> std::fmt::Debug for Gatherer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gatherer")
            .field("queries", &self.queries())
            .field("max_keys", &self.max_keys)
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl<R: ReadMany> Gatherer<R> {
    pub fn new(reader: R, max_keys: usize, slots: usize) -> Self {
        Self {
            reader: Arc::new(reader),
            queue: OnceLock::new(),
            queries: Arc::default(),
            max_keys: max_keys.max(1),
            slots: slots.max(1),
        }
    }

    /// Queries sent so far: fewer than reads when they were gathered.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    pub async fn read(&self, key: R::Key) -> Result<R::Value, R::Error> {
        let queue = self.queue.get_or_init(|| {
            let (queue, gathered) = mpsc::channel(4 * self.max_keys * self.slots);
            let task = Task {
                reader: self.reader.clone(),
                queries: self.queries.clone(),
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
        self.queries.fetch_add(1, Ordering::Relaxed);
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
    queries: Arc<AtomicU64>,
    max_keys: usize,
    slots: usize,
}

impl<R: ReadMany> Task<R> {
    async fn run(self, mut queue: mpsc::Receiver<Pending<R>>) {
        let slots = Arc::new(Semaphore::new(self.slots));
        let mut pending = Vec::with_capacity(self.max_keys);
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            if queue.recv_many(&mut pending, self.max_keys).await == 0 {
                return;
            }
            let reads = std::mem::replace(&mut pending, Vec::with_capacity(self.max_keys));
            let reader = self.reader.clone();
            self.queries.fetch_add(1, Ordering::Relaxed);
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
            });
        }
    }
}
