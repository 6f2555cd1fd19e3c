//! Group commit: each instance runs one writer task. A check hands its row
//! to the writer and waits; the writer takes every row waiting, appends
//! them in one transaction, and answers each only after the COMMIT. While
//! one transaction commits the next group gathers, so the cost of a
//! durable write is shared by all the checks that arrived meanwhile.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::store::AuditStore;
use super::witness::{self, WitnessDatabase, WitnessLine};
use super::{AuditEntry, AuditError, Checkpointer, Head, Heads};
use crate::clock::Clock;
use crate::infra::BoxFuture;
use crate::metrics::Metrics;

/// Where a check's audit row goes. The answer may leave only once
/// `record` has returned `Ok`.
pub trait AuditSink: Send + Sync + 'static {
    /// Makes the row durable.
    fn record(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), AuditError>>;
}

/// Keeps nothing. Only for measuring what the audit costs
/// (`Application::build_to_measure_without_trail`, which the benchmarks
/// alone call); never in service: DESIGN has no attestation leave without
/// its row.
#[derive(Debug, Default)]
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _entry: AuditEntry) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async { Ok(()) })
    }
}

#[derive(Debug, Clone)]
pub struct WriterParams {
    /// Rows waiting for the writer at most; further checks wait to hand
    /// theirs over.
    pub queue: usize,
    /// Rows per transaction at most.
    pub max_batch: usize,
    /// How long one append may take before its checks fail UNAVAILABLE.
    pub write_timeout: Duration,
    /// A checkpoint is signed after this many rows ...
    pub checkpoint_rows: i64,
    /// ... or this long after the last one, whichever comes first.
    pub checkpoint_interval: Duration,
    /// Where every checkpoint is also appended, outside the database.
    pub witness_file: Option<PathBuf>,
    /// A database other than the trail's that keeps every checkpoint too.
    pub witness_database: Option<WitnessDatabase>,
    /// Where the newest checkpoint this instance stored is noted (under
    /// its data directory): the server refuses to start on a trail that
    /// no longer reaches it.
    pub newest_note: Option<PathBuf>,
    /// Where commits, their sizes and times, failures and checkpoints
    /// are counted.
    pub metrics: Option<Arc<Metrics>>,
}

impl Default for WriterParams {
    fn default() -> Self {
        Self {
            queue: 8_192,
            max_batch: 512,
            write_timeout: Duration::from_secs(5),
            checkpoint_rows: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            witness_file: None,
            witness_database: None,
            newest_note: None,
            metrics: None,
        }
    }
}

/// How many times a group that met a pair already in the trail is
/// sorted and appended again (each round removes the pairs found).
const DUPLICATE_ROUNDS: usize = 3;

struct Pending {
    entry: AuditEntry,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// The durable audit trail of one instance.
pub struct AuditLog {
    queue: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Starts the writer task. It stops when told to (or when the last
    /// `AuditLog` handle is dropped), after writing what was handed to it
    /// and signing a last checkpoint.
    pub fn spawn(
        store: Arc<dyn AuditStore>,
        checkpointer: Checkpointer,
        clock: Arc<dyn Clock>,
        params: WriterParams,
    ) -> (Self, WriterHandle) {
        let (queue, rx) = mpsc::channel(params.queue.max(1));
        let writer = Writer {
            store,
            checkpointer,
            clock,
            params,
            last_checkpoint: (0, Instant::now()),
            unvouched: None,
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(writer.run(rx, stopped));
        (Self { queue }, WriterHandle { stop, task })
    }

    /// Rows handed over and waiting for the writer (for `/metrics`).
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// Stops the writer: rows already handed over are written; later ones are
/// refused (UNAVAILABLE).
pub struct WriterHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl WriterHandle {
    /// Stops the writer and waits for it, at most `timeout`; `false` if it
    /// did not finish in time.
    pub async fn stop(self, timeout: Duration) -> bool {
        let _ = self.stop.send(());
        tokio::time::timeout(timeout, self.task).await.is_ok()
    }
}

impl AuditSink for AuditLog {
    fn record(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async move {
            let (done, answer) = oneshot::channel();
            let stopped = || AuditError::Unavailable("the audit writer has stopped".into());
            self.queue
                .send(Pending { entry, done })
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        })
    }
}

struct Writer {
    store: Arc<dyn AuditStore>,
    checkpointer: Checkpointer,
    clock: Arc<dyn Clock>,
    params: WriterParams,
    /// The `seq` of the newest checkpoint this writer signed, and when.
    last_checkpoint: (i64, Instant),
    /// The newest head this writer appended and no checkpoint covers yet.
    unvouched: Option<Head>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>, mut stop: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(self.params.checkpoint_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut group = Vec::with_capacity(self.params.max_batch);
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = &mut stop, if !stopping => {
                    // Take nothing new; write what is queued, then end.
                    stopping = true;
                    rx.close();
                }
                n = rx.recv_many(&mut group, self.params.max_batch) => {
                    if n == 0 {
                        break;
                    }
                    self.commit(std::mem::take(&mut group)).await;
                    self.checkpoint_if_due(false).await;
                }
                _ = tick.tick() => self.checkpoint_if_due(false).await,
            }
        }
        // Stopping: vouch for the last rows now.
        self.checkpoint_if_due(true).await;
    }

    async fn commit(&mut self, group: Vec<Pending>) {
        // The trail keeps one check per (agency, request_id): a second row
        // under a pair already in the group is not written, and is answered
        // `Duplicate` once the first is durable.
        let first: Vec<bool> = {
            let mut pairs = HashSet::new();
            (group.iter())
                .map(|p| p.entry.request_key().is_none_or(|pair| pairs.insert(pair)))
                .collect()
        };
        // The rows to append and, in the same order, who waits for each.
        let (mut rows, mut waiting) = (
            Vec::with_capacity(group.len()),
            Vec::with_capacity(group.len()),
        );
        let mut repeats = Vec::new();
        for (pending, first) in group.into_iter().zip(first) {
            if first {
                rows.push(pending.entry);
                waiting.push(pending.done);
            } else {
                repeats.push(pending.done);
            }
        }
        let mut appended = self.append(&rows).await;
        for _ in 0..DUPLICATE_ROUNDS {
            if !matches!(appended, Err(AuditError::Duplicate)) {
                break;
            }
            // Some pair is in the trail already (another instance, or an
            // earlier group): those rows are answered so, the rest go again.
            match self.already_in_trail(&rows).await {
                Ok(taken) => {
                    let mut kept = (
                        Vec::with_capacity(rows.len()),
                        Vec::with_capacity(rows.len()),
                    );
                    for ((entry, done), taken) in rows.into_iter().zip(waiting).zip(taken) {
                        if taken {
                            let _ = done.send(Err(AuditError::Duplicate));
                        } else {
                            kept.0.push(entry);
                            kept.1.push(done);
                        }
                    }
                    (rows, waiting) = kept;
                    appended = self.append(&rows).await;
                }
                Err(error) => appended = Err(error),
            }
        }
        match &appended {
            Ok(Some(head)) => {
                for done in waiting {
                    let _ = done.send(Ok(()));
                }
                self.unvouched = Some(*head);
            }
            Ok(None) => {}
            Err(error) => {
                if let Some(metrics) = &self.params.metrics {
                    metrics.audit_write_failures.inc();
                }
                tracing::warn!(%error, rows = rows.len(), "audit group commit failed");
                for done in waiting {
                    let _ = done.send(Err(error.for_each_waiter()));
                }
            }
        }
        for done in repeats {
            let answer = match &appended {
                Ok(_) => AuditError::Duplicate,
                Err(error) => error.for_each_waiter(),
            };
            let _ = done.send(Err(answer));
        }
    }

    /// Appends `rows` in one transaction, within the write timeout; `None`
    /// when there is nothing to append.
    async fn append(&self, rows: &[AuditEntry]) -> Result<Option<Head>, AuditError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let appended =
            match tokio::time::timeout(self.params.write_timeout, self.store.append(rows)).await {
                Ok(result) => result.map(Some),
                Err(_) => Err(AuditError::Unavailable(
                    "the audit store did not answer in time".into(),
                )),
            };
        if let (Some(metrics), Ok(_)) = (&self.params.metrics, &appended) {
            metrics.audit_rows.inc_by(rows.len() as u64);
            metrics.audit_groups.observe(rows.len() as f64);
            metrics
                .audit_commit_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        appended
    }

    /// For each row, whether the trail already holds its (agency,
    /// request_id).
    async fn already_in_trail(&self, rows: &[AuditEntry]) -> Result<Vec<bool>, AuditError> {
        let mut taken = Vec::with_capacity(rows.len());
        for entry in rows {
            let found = match entry.request_key() {
                Some((agency, request_id)) => tokio::time::timeout(
                    self.params.write_timeout,
                    self.store.first_request(agency, request_id),
                )
                .await
                .map_err(|_| {
                    AuditError::Unavailable("the audit store did not answer in time".into())
                })??
                .is_some(),
                None => false,
            };
            taken.push(found);
        }
        Ok(taken)
    }

    /// Signs the newest head this writer appended, once enough rows or
    /// time have passed since its last checkpoint (or now, if `force`).
    async fn checkpoint_if_due(&mut self, force: bool) {
        let Some(head) = self.unvouched else { return };
        let (seq, at) = self.last_checkpoint;
        let due = force
            || head.seq - seq >= self.params.checkpoint_rows
            || at.elapsed() >= self.params.checkpoint_interval;
        if !due {
            return;
        }
        let checkpointer = &self.checkpointer;
        let sign = |heads: &Heads, prev: Option<&Head>| checkpointer.sign(heads, prev);
        let stored = tokio::time::timeout(
            self.params.write_timeout,
            self.store
                .add_checkpoint(self.clock.now_micros(), &sign, self.params.write_timeout),
        )
        .await
        .unwrap_or_else(|_| {
            Err(AuditError::Unavailable(
                "the checkpoint was not written in time".into(),
            ))
        });
        match stored {
            Ok(signed) => {
                self.last_checkpoint = (head.seq, Instant::now());
                self.unvouched = None;
                if let Some((checkpoint, token)) = signed {
                    if let Some(metrics) = &self.params.metrics {
                        metrics.audit_checkpoints.inc();
                    }
                    self.witness(&checkpoint, &token).await;
                }
            }
            Err(error) => tracing::warn!(%error, "audit checkpoint not written; will retry"),
        }
    }

    /// Copies a stored checkpoint to its witnesses ([`witness::keep`]),
    /// synced before the writer goes on. A witness that cannot be written
    /// is logged as an error; the checkpoint stands in the trail.
    async fn witness(&self, head: &Head, token: &str) {
        let line = WitnessLine::new(head, token);
        if let Some(database) = &self.params.witness_database {
            let kept =
                tokio::time::timeout(self.params.write_timeout, database.append(&line)).await;
            match kept {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "audit checkpoint NOT witnessed"),
                Err(_) => tracing::error!(
                    "audit checkpoint NOT witnessed: the witness database did not answer in time"
                ),
            }
        }
        let (path, note) = (
            self.params.witness_file.clone(),
            self.params.newest_note.clone(),
        );
        let written = tokio::task::spawn_blocking(move || {
            witness::keep(path.as_deref(), &line)?;
            note.map_or(Ok(()), |note| witness::note_newest(&note, &line))
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "audit checkpoint NOT witnessed"),
            Err(error) => tracing::error!(%error, "audit checkpoint NOT witnessed"),
        }
    }
}
