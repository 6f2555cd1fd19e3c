//! # vnid
//!
//! Verifies Vietnamese personal identification numbers (số định danh cá
//! nhân) and claimed personal fields against a mirror of the national
//! population database, and answers with a signed attestation.
//!
//! # Layout
//!
//! A call flows down this list, never up:
//!
//! - [`cli`]: the `vnid` subcommands, one file per command group, one
//!   runtime, one mapping of failures to exit statuses. `main.rs` only
//!   calls it.
//! - [`app`]: the server assembled from the settings, run until a signal
//!   stops it, its registry and TLS files reloaded on SIGHUP.
//! - [`startup`]: what the server and the CLI both open: the stores, the
//!   cache, the keys, the registry, the secrets under the data directory.
//! - [`grpc`]: transport only: the `vnid.v1` services, the `pb` ↔ domain
//!   seam (`grpc::convert`), the batch stream's bounded window
//!   (`grpc::batch`), the one mapping of errors to `tonic::Status`
//!   (`grpc::error`), who the caller is (`grpc::caller`), the listener
//!   that lets connections in (`grpc::listener`, `grpc::tls`), and the
//!   other doors on it: the JSON door (`grpc::json`) and gRPC-Web.
//! - [`verify`]: the use case, a short pipeline — policy, retry or admit,
//!   find, assess, attest, record — with retries (`verify::replay`) and a
//!   batch item's pacing beside it.
//! - [`guard`]: what stands before a check: an agency's rate and daily
//!   quota, its failures on one number, its share of failed answers; one
//!   admit/record API, one refusal type, the alerts.
//! - [`cache`]: cache-aside (Redis or in-process) in front of the mirror:
//!   sealed values, coalesced misses, a circuit breaker; and the shared
//!   mark of used `request_id`s.
//! - [`mirror`]: the store traits and one SQL implementation over a
//!   dialect (Postgres, the embedded SQLite).
//! - [`domain`]: pure types and rules: ID numbers, names, dates, verdicts,
//!   card QR codes, and one spelling of each enumerated value. No I/O, no
//!   clock.
//!
//! Beside them, each a room of its own: [`audit`] (the hash-chained trail,
//! its store, group-commit writer, checkpoints, the access history),
//! [`attest`] (typed claims, the keyring and its JWKS, JWS verification,
//! keyed subjects), [`policy`] (agencies and what they may ask),
//! [`import`] (the export format, `vnid import`'s pipeline, the population
//! generator), [`client`] (the `vnid verify-batch` client), [`config`]
//! (typed settings that build their own parts, clamped at load),
//! [`telemetry`] (logs and traces), [`metrics`] and [`admin`] (the operators'
//! endpoint), [`clock`] (the one reader of the wall clock),
//! [`devcerts`] (a development CA for trying mutual TLS), [`files`] (keys
//! and secrets written whole, private directories).
//!
//! Beneath them all, [`infra`]: plumbing the rooms draw on and that
//! imports nothing of theirs — the boxed future of the store traits, SQL
//! pools that bound every session, embedded SQLite files, migrations, the
//! batcher that sends reads from many calls as one query, the Redis
//! connection with a deadline on every call, and the circuit breaker.
//!
//! Personal data — ID numbers, names, birth dates, and the caller's
//! `request_id` — never reaches a log line or an error message: the domain
//! types that hold it mask their `Debug`, and the call span records only
//! non-personal fields.

pub mod admin;
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
pub mod metrics;
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
    // The proto3 JSON mapping of the same messages (the JSON door).
    include!(concat!(env!("OUT_DIR"), "/vnid.v1.serde.rs"));

    /// For server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vnid_descriptor");
}
