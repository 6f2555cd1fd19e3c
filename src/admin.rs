//! The operators' door: a plaintext HTTP/1.1 listener (`admin_listen`,
//! default `127.0.0.1:9464`) for probes and scrapers, apart from the
//! mutual-TLS gRPC listener that no probe can pass.
//!
//! - `GET /metrics`: Prometheus text format ([`crate::metrics`]).
//! - `GET /healthz`: the process is alive (200 whenever it answers).
//! - `GET /readyz`: it should get calls: 200 `ready`, or 503 and what is
//!   not ready (draining; the mirror or the audit store unreachable, or
//!   the trail's database not writable). Read from [`Readiness`], which
//!   `grpc.health.v1` reports too.
//! - `GET /.well-known/jwks.json`: the published keys, with an `ETag` and
//!   `Cache-Control` (and 304 to a matching `If-None-Match`).
//!
//! It knows no caller, so it serves nothing personal (no metric label
//! holds personal data), and listens on loopback unless
//! `admin_allow_remote` says otherwise (then behind a network policy).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::audit::AuditStore;
use crate::metrics::Metrics;
use crate::mirror::MirrorStore;
use crate::startup::StartupError;
use crate::verify::Attester;

/// Where the admin endpoint listens unless configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// How long a store may take to answer a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often readiness is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;

/// A request's head must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the JWKS may be cached by its readers.
const JWKS_MAX_AGE_SECONDS: u32 = 300;

/// `admin_listen` as configured: `None` when empty (no admin endpoint).
/// A non-loopback address is refused unless `allow_remote`: the endpoint
/// has no mutual TLS.
pub fn listen_address(
    configured: &str,
    allow_remote: bool,
) -> Result<Option<SocketAddr>, StartupError> {
    let configured = configured.trim();
    if configured.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = configured.parse().map_err(|_| {
        StartupError::Refused(format!(
            "admin_listen {configured:?} is not an address and port (e.g. {DEFAULT_LISTEN})"
        ))
    })?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(StartupError::Refused(format!(
            "admin_listen {addr} is not a loopback address, and the admin endpoint has no \
             mutual TLS: set admin_allow_remote = true to serve it there (behind a network \
             policy)"
        )));
    }
    Ok(Some(addr))
}

/// Whether this instance should get calls, probed every
/// [`PROBE_INTERVAL`] and at once when draining begins.
pub struct Readiness {
    draining: AtomicBool,
    mirror: Arc<dyn MirrorStore>,
    audit: Option<Arc<dyn AuditStore>>,
    /// What is not ready (empty: ready), as last probed.
    state: watch::Sender<Vec<&'static str>>,
}

impl Readiness {
    /// Not ready until first probed.
    pub fn new(mirror: Arc<dyn MirrorStore>, audit: Option<Arc<dyn AuditStore>>) -> Self {
        Self {
            draining: AtomicBool::new(false),
            mirror,
            audit,
            state: watch::Sender::new(vec!["not probed yet"]),
        }
    }

    /// Probes the stores and publishes the result.
    pub async fn probe(&self) {
        let mut not_ready = Vec::new();
        let mirror = tokio::time::timeout(PROBE_TIMEOUT, self.mirror.generation()).await;
        if !matches!(mirror, Ok(Ok(_))) {
            not_ready.push("the mirror cannot be read");
        }
        if let Some(audit) = &self.audit {
            match tokio::time::timeout(PROBE_TIMEOUT, audit.writable()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => not_ready.push("the audit store is read-only"),
                _ => not_ready.push("the audit store cannot be reached"),
            }
        }
        // Under the state's lock: a drain that began meanwhile stays.
        self.state.send_modify(|state| {
            if self.draining() {
                not_ready.insert(0, "draining");
            }
            *state = not_ready;
        });
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Draining: not ready from now on, whatever the stores say.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.state.send_modify(|not_ready| {
            if !not_ready.contains(&"draining") {
                not_ready.insert(0, "draining");
            }
        });
    }

    /// What is not ready now (empty: ready).
    pub fn not_ready(&self) -> Vec<&'static str> {
        self.state.borrow().clone()
    }

    /// Changes of readiness, for those that report it (`grpc.health.v1`).
    pub fn subscribe(&self) -> watch::Receiver<Vec<&'static str>> {
        self.state.subscribe()
    }

    /// Probes every [`PROBE_INTERVAL`] until draining begins.
    pub async fn keep_probing(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.draining() {
            tick.tick().await;
            self.probe().await;
        }
    }
}

/// What the admin endpoint reads.
pub struct AdminState {
    pub readiness: Arc<Readiness>,
    pub attester: Arc<Attester>,
    pub metrics: Arc<Metrics>,
}

/// The admin endpoint, bound.
pub struct AdminServer {
    listener: TcpListener,
    state: Arc<AdminState>,
}

impl AdminServer {
    pub async fn bind(addr: SocketAddr, state: Arc<AdminState>) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` resolves.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(stop);
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut stop => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let state = self.state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, &request)) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%error, "admin endpoint: connection ended");
                }
                drop(permit);
            });
        }
    }
}

/// The answer to one request.
fn route(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let not_ready = state.readiness.not_ready();
            if not_ready.is_empty() {
                text(StatusCode::OK, "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", not_ready.join("; ")),
                )
            }
        }
        "/.well-known/jwks.json" => jwks(state, request),
        "/metrics" => {
            let mut response = text(StatusCode::OK, state.metrics.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn jwks(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    jwks_answer(
        state.attester.keyring().jwks_json().to_owned(),
        request.headers(),
    )
}

/// The JWKS as served over HTTP (here and on the JSON door): `ETag` (of
/// its bytes: it changes when the keys do, and only then),
/// `Cache-Control`, and `304` for a matching `If-None-Match`.
pub fn jwks_answer(body: String, headers: &http::HeaderMap) -> Response<Full<Bytes>> {
    let digest = Sha256::digest(body.as_bytes());
    let tag = format!(
        "\"{}\"",
        <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(&digest[..16])
    );
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == tag || v.trim() == "*");
    let (status, body) = if matches {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from(body))
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/jwk-set+json")
        .header(
            header::CACHE_CONTROL,
            format!("public, max-age={JWKS_MAX_AGE_SECONDS}"),
        )
        .header(header::ETAG, tag)
        .body(Full::new(body))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, String::new()))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_address_is_loopback_unless_allowed() {
        assert_eq!(listen_address("", false).unwrap(), None);
        assert_eq!(
            listen_address("127.0.0.1:9464", false).unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert!(listen_address("[::1]:9464", false).unwrap().is_some());
        let refused = listen_address("0.0.0.0:9464", false)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("admin_allow_remote"), "{refused}");
        assert!(listen_address("0.0.0.0:9464", true).unwrap().is_some());
        assert!(listen_address("localhost", false).is_err());
    }
}
