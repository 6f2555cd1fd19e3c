//! Plumbing every feature room draws on, and which imports nothing of vnid
//! but `domain`: the boxed future of the store traits, SQL pools and
//! embedded migrations, the read batcher, the Redis connection with its
//! deadlines, and the circuit breaker.

pub mod breaker;
pub mod read_batch;
pub mod redis;
pub mod sql;

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future: what the object-safe store traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
