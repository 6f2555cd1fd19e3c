//! `VerifyBatch`: many checks on one stream, answered in any order.
//!
//! Items are checked concurrently, at most `window` at a time, and their
//! answers wait in a queue of `window` places for the caller to read them.
//! When the caller reads slowly the queue fills, no further item is read,
//! and HTTP/2 flow control stops the caller's sending: the server holds at
//! most about `2 × window` items whatever the stream's length.
//!
//! Each item is one check as `Verify` makes it (policy, quotas, audit row,
//! attestation), audited as `verify_batch`. A bad item is answered with an
//! error item and the stream goes on. Over its rate, an item waits for the
//! rate to allow it (`Verifier::check_batch_item`: paced, not refused). The
//! stream ends with an error status only when the caller sends more than
//! `max_items` items (`BATCH_TOO_LONG`, after every accepted item is
//! answered) or a message that is not a `VerifyRequest`.
//!
//! Each item is authorized against the registry in force when it is read:
//! a stream whose agency was disabled (or lost its batch right) by a
//! reload ends with `PERMISSION_DENIED` once the items under way are
//! answered. A caller that sends nothing for `idle_timeout` while nothing of
//! its stream is being checked has its stream ended with
//! `DEADLINE_EXCEEDED` (`BATCH_IDLE`); an item not answered within
//! `item_timeout` (its wait for the rate included) is answered
//! `DEADLINE_EXCEEDED` (`ITEM_DEADLINE`). If the caller goes away, items
//! already being checked finish (so each has its audit row, and a retry of
//! its `request_id` gets its answer); no new item is read.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::domain::{CheckCall, Door};
use crate::grpc::caller::Callers;
use crate::grpc::error::{ApiError, Deadline};
use crate::pb;
use crate::policy::Agency;
use crate::verify::{Verifier, VerifyCommand};

/// How a batch stream is run.
#[derive(Debug, Clone, Copy)]
pub struct BatchParams {
    /// Items checked at once, and answers queued for the caller.
    pub window: usize,
    /// Items one stream may carry.
    pub max_items: u64,
    /// How long a caller may send nothing while nothing is being checked.
    pub idle_timeout: Duration,
    /// One item's deadline, its wait for the rate included.
    pub item_timeout: Duration,
    /// Requests one `VerifyMany` call may carry.
    pub max_many_items: usize,
}

pub type BatchStream = Pin<Box<dyn Stream<Item = Result<pb::VerifyBatchResponse, Status>> + Send>>;

/// Starts checking `input`'s items for the agency `agency_id`, each
/// authorized by `callers` as it is read; their answers are the returned
/// stream.
pub fn run(
    verifier: Arc<Verifier>,
    callers: Arc<Callers>,
    agency_id: String,
    input: Streaming<pb::VerifyRequest>,
    params: BatchParams,
) -> BatchStream {
    let window = params.window.max(1);
    let (answers, rx) = mpsc::channel(window);
    let batch = Batch {
        verifier,
        callers,
        agency_id,
        window,
        params,
        answers,
    };
    tokio::spawn(batch.run(input).in_current_span());
    Box::pin(ReceiverStream::new(rx))
}

struct Batch {
    verifier: Arc<Verifier>,
    callers: Arc<Callers>,
    agency_id: String,
    window: usize,
    params: BatchParams,
    answers: mpsc::Sender<Result<pb::VerifyBatchResponse, Status>>,
}

/// What a stream did, for its log line.
#[derive(Debug, Default)]
struct Tally {
    items: u64,
    answered: u64,
    errors: u64,
}

impl Batch {
    async fn run(self, mut input: Streaming<pb::VerifyRequest>) {
        self.verifier.metrics().batch_streams.inc();
        let mut in_flight = JoinSet::new();
        // The request id of each item being checked, should its task fail.
        let mut ids = HashMap::new();
        let mut tally = Tally::default();
        let mut reading = true;
        let mut end: Option<Status> = None;
        let mut caller_gone = false;
        let idle = tokio::time::sleep(self.params.idle_timeout);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                biased;
                done = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    let answer = match done {
                        Some(Ok((id, answer))) => {
                            ids.remove(&id);
                            answer
                        }
                        Some(Err(failed)) => {
                            tracing::error!(error = %failed, "a batch item's task failed");
                            let request_id = ids.remove(&failed.id()).unwrap_or_default();
                            error_item(request_id, ApiError::Internal)
                        }
                        None => continue,
                    };
                    let error =
                        matches!(answer.result, Some(pb::verify_batch_response::Result::Error(_)));
                    tally.errors += u64::from(error);
                    (self.verifier.metrics().batch_items)
                        .with_label_values(&[if error { "error" } else { "verdict" }])
                        .inc();
                    if self.answers.send(Ok(answer)).await.is_err() {
                        caller_gone = true;
                        break;
                    }
                    tally.answered += 1;
                    idle.as_mut().reset(Instant::now() + self.params.idle_timeout);
                }
                message = input.message(), if reading && in_flight.len() < self.window => {
                    idle.as_mut().reset(Instant::now() + self.params.idle_timeout);
                    match message {
                        Ok(Some(request)) if tally.items < self.params.max_items => {
                            let agency = match self.authorized() {
                                Ok(agency) => agency,
                                Err(refused) => {
                                    reading = false;
                                    end = Some(refused.into());
                                    continue;
                                }
                            };
                            tally.items += 1;
                            let request_id = request.request_id.clone();
                            let item = check_item(
                                self.verifier.clone(),
                                agency,
                                request,
                                Door::Grpc,
                                self.params.item_timeout,
                            );
                            let task = in_flight.spawn(item.in_current_span());
                            ids.insert(task.id(), request_id);
                        }
                        Ok(Some(_)) => {
                            reading = false;
                            end = Some(ApiError::BatchTooLong(self.params.max_items).into());
                        }
                        Ok(None) => reading = false,
                        Err(status) => {
                            reading = false;
                            end = Some(ApiError::Malformed(status).into());
                        }
                    }
                }
                () = &mut idle, if reading && in_flight.is_empty() => {
                    reading = false;
                    end = Some(ApiError::DeadlineExceeded(Deadline::BatchIdle).into());
                }
                else => break,
            }
        }
        if caller_gone {
            // Let the checks under way finish: each gets its audit row, and
            // the caller's retry its answer.
            in_flight.detach_all();
        } else if let Some(end) = end {
            let _ = self.answers.send(Err(end)).await;
        }
        tracing::info!(
            items = tally.items,
            answered = tally.answered,
            errors = tally.errors,
            caller_gone,
            "batch finished"
        );
    }
}

impl Batch {
    /// The stream's agency as the registry in force has it, if it may
    /// still send batches.
    fn authorized(&self) -> Result<Arc<Agency>, ApiError> {
        let agency = self
            .callers
            .agency_now(&self.agency_id)
            .map_err(ApiError::PermissionDenied)?;
        agency
            .authorize_call(CheckCall::BatchItem)
            .map_err(ApiError::PermissionDenied)?;
        Ok(agency)
    }
}

/// A `VerifyMany` call's requests, checked like batch items, at most
/// `window` at once: their answers, in the order of the requests.
pub async fn many(
    verifier: Arc<Verifier>,
    agency: Arc<Agency>,
    requests: Vec<pb::VerifyRequest>,
    door: Door,
    params: BatchParams,
) -> Vec<pb::VerifyBatchResponse> {
    verifier.metrics().batch_streams.inc();
    let permits = Arc::new(tokio::sync::Semaphore::new(params.window.max(1)));
    // A caller that goes away lets the checks under way finish: each gets
    // its audit row, and the caller's retry its answer.
    let mut in_flight = Detached(JoinSet::new());
    let in_flight = &mut in_flight.0;
    let request_ids: Vec<String> = requests.iter().map(|r| r.request_id.clone()).collect();
    for (index, request) in requests.into_iter().enumerate() {
        let (verifier, agency, permits) = (verifier.clone(), agency.clone(), permits.clone());
        in_flight.spawn(
            async move {
                let _permit = permits.acquire_owned().await;
                (
                    index,
                    check_item(verifier, agency, request, door, params.item_timeout).await,
                )
            }
            .in_current_span(),
        );
    }
    let mut answers: Vec<Option<pb::VerifyBatchResponse>> = vec![None; request_ids.len()];
    while let Some(done) = in_flight.join_next().await {
        let (index, answer) = match done {
            Ok((index, answer)) => (index, answer),
            Err(failed) => {
                // Its slot stays empty, and is answered INTERNAL below.
                tracing::error!(error = %failed, "a VerifyMany item's task failed");
                continue;
            }
        };
        let error = matches!(
            answer.result,
            Some(pb::verify_batch_response::Result::Error(_))
        );
        (verifier.metrics().batch_items)
            .with_label_values(&[if error { "error" } else { "verdict" }])
            .inc();
        if let Some(slot) = answers.get_mut(index) {
            *slot = Some(answer);
        }
    }
    (answers.into_iter().zip(request_ids))
        .map(|(answer, request_id)| {
            answer.unwrap_or_else(|| error_item(request_id, ApiError::Internal))
        })
        .collect()
}

/// Tasks left to finish when their set is dropped.
struct Detached<T: 'static>(JoinSet<T>);

impl<T: 'static> Drop for Detached<T> {
    fn drop(&mut self) {
        self.0.detach_all();
    }
}

/// One item: parsed, then checked like `Verify`, waiting out the rate,
/// all within `deadline`.
async fn check_item(
    verifier: Arc<Verifier>,
    agency: Arc<Agency>,
    request: pb::VerifyRequest,
    door: Door,
    deadline: Duration,
) -> pb::VerifyBatchResponse {
    let request_id = request.request_id.clone();
    let check = async {
        let command = VerifyCommand {
            door,
            ..VerifyCommand::try_from(request)?
        };
        Ok(verifier.check_batch_item(&agency, command).await?)
    };
    let result = tokio::time::timeout(deadline, check)
        .await
        .unwrap_or(Err(ApiError::DeadlineExceeded(Deadline::BatchItem)));
    match result {
        Ok(outcome) => pb::VerifyBatchResponse {
            request_id,
            result: Some(pb::verify_batch_response::Result::Response(outcome.into())),
        },
        Err(error) => error_item(request_id, error),
    }
}

fn error_item(request_id: String, error: ApiError) -> pb::VerifyBatchResponse {
    pb::VerifyBatchResponse {
        request_id,
        result: Some(pb::verify_batch_response::Result::Error(rpc_status(
            Status::from(error),
        ))),
    }
}

/// A status as a `google.rpc.Status` message, with its details: the one
/// mapping of errors to statuses stays the only one.
pub fn rpc_status(status: Status) -> tonic_types::pb::Status {
    tonic_types::pb::Status::decode(status.details())
        .ok()
        .filter(|s| s.code == status.code() as i32)
        .unwrap_or_else(|| tonic_types::pb::Status {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: Vec::new(),
        })
}
