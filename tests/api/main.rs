//! The one integration-test binary: real server, real Postgres, real gRPC
//! clients (tonic here, Python's grpcio in `interop`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod attestation;
mod audit;
mod batch;
mod cache;
mod cli;
mod errors;
mod helpers;
mod holes;
mod import;
mod interop;
mod json;
mod lifecycle;
mod pg;
mod privacy;
mod quota;
mod redis_server;
pub mod store;
mod tls;
mod traces;
mod verify;
