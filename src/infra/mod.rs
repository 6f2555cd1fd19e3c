//! Plumbing every feature room draws on, and which imports nothing of vnid
//! but `domain`: the boxed future of the store traits, SQL pools and
//! embedded migrations, and the read gatherer.

pub mod gather;
pub mod sql;

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future: what the object-safe store traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
