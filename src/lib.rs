//! # vnid
//!
//! Verifies Vietnamese personal identification numbers (số định danh cá
//! nhân) and claimed personal fields against a mirror of the national
//! population database, and answers with a signed attestation.
//!
//! # Layout
//!
//! The data flows down this list, never up:
//!
//! - [`cli`]: the `vnid` subcommands. `main.rs` only calls it.
//! - [`app`]: server assembly: configuration in, a bound server out
//!   (health, reflection, limits, graceful shutdown).
//! - [`grpc`]: the `vnid.v1` services, the `pb` ↔ domain seam
//!   (`grpc::convert`), the batch stream's bounded window (`grpc::batch`),
//!   the one mapping of errors to `tonic::Status` (`grpc::error`), and the
//!   listener that lets connections in (`grpc::listener`, `grpc::tls`:
//!   cap, deadlines, mutual TLS with CRLs).
//! - [`verify`]: the use case — policy, lookup, match, attest, audit —
//!   with retries (`verify::replay`) and the attestation's spelling of
//!   enumerated values (`verify::names`) beside it.
//! - [`lookup`]: cache-aside (Redis or in-process) in front of the mirror:
//!   sealed values, coalesced misses, a circuit breaker.
//! - [`mirror`]: the store traits, Postgres and the embedded SQLite, the
//!   export format, `vnid import` and the population generator.
//! - [`domain`]: pure types and rules: ID numbers, names, dates, verdicts,
//!   card QR codes. No I/O, no clock.
//!
//! Beside them, each a room of its own: [`audit`] (the hash-chained trail,
//! its group-commit writer, checkpoints, the access history),
//! [`attest`] (JWS, keys, JWKS, pairwise subjects), [`quota`] (rates and
//! daily quotas), [`defence`] (an agency's share of failed checks),
//! [`policy`] (agencies and what they may ask), [`client`] (the
//! `vnid verify-batch` client),
//! [`config`] (typed settings), [`telemetry`] (logs), [`clock`] (the one
//! reader of the wall clock), [`devcerts`] (a development CA for trying
//! mutual TLS), [`files`] (keys and secrets written whole, private
//! directories).
//!
//! Beneath them all, [`infra`]: plumbing the rooms draw on and that
//! imports nothing of theirs — the boxed future of the store traits, SQL
//! pools that bound every session, embedded migrations, the gatherer that
//! sends reads from many calls as one query, the Redis connection with a
//! deadline on every call, and the circuit breaker (used by the cache and
//! the quotas alike).
//!
//! Personal data — ID numbers, names, birth dates, and the caller's
//! `request_id` — never reaches a log line or an error message: the domain
//! types that hold it mask their `Debug`, and the call span records only
//! non-personal fields.

pub mod app;
pub mod attest;
pub mod audit;
pub mod cache;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod devcerts;
pub mod domain;
pub mod files;
pub mod grpc;
pub mod guard;
pub mod import;
pub mod infra;
pub mod mirror;
pub mod policy;
pub mod startup;
pub mod telemetry;
pub mod verify;

/// The generated protobuf types and gRPC stubs of `vnid.v1`.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
pub mod pb {
    tonic::include_proto!("vnid.v1");

    /// For server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vnid_descriptor");
}
