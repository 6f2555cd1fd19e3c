//! Server assembly: configuration in, a bound server out; it runs until
//! a signal stops it (SIGTERM, SIGINT) and reloads its registry and TLS
//! files on SIGHUP.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;
use tower::layer::util::Stack;

use crate::admin::{AdminServer, AdminState, Readiness};
use crate::audit::history::AccessHistory;
use crate::audit::{AuditLog, AuditSink, Checkpointer, NoAudit, WriterHandle};
use crate::cache::{BreakerState, CachedMirror, RequestIndex};
use crate::clock::{Clock, SystemClock};
use crate::config::{Secret, Settings};
use crate::grpc::json::JsonDoor;
use crate::grpc::listener::{self, Admission, Connections};
use crate::grpc::tls::ServerTls;
use crate::grpc::{
    AuditApi, Callers, ErrorDetailsLayer, GrpcWebWhenAsked, VerificationApi, VerificationRoutes,
    call_span,
};
use crate::guard::Guard;
use crate::infra::read_batch::SIZE_BOUNDS;
use crate::metrics::{Distribution, GrpcMetricsLayer, Metrics, Pull, Samples};
use crate::mirror::{Gathered, MirrorStore};
use crate::pb::audit_service_server::AuditServiceServer;
use crate::pb::verification_service_server::VerificationServiceServer;
use crate::startup::{
    Seed, StartupError, cache_in_front_of, identities, load_attester, load_checkpoint_key,
    load_keyring, newest_checkpoint_note, open_audit_store, open_mirror, witness_database,
};
use crate::verify::Attester;
use crate::verify::{Replays, Verifier};

/// HTTP/2 flow-control window of one stream: HTTP/2's own default. At
/// about 60 bytes a `VerifyRequest`, a thousand batch items.
const STREAM_WINDOW_BYTES: u32 = 65_535;

/// The layers every call passes, from the outside in: gRPC-Web
/// translation, error details, metrics.
type Layers = Stack<
    GrpcMetricsLayer,
    Stack<ErrorDetailsLayer, Stack<GrpcWebWhenAsked, tower::layer::util::Identity>>,
>;

/// A bound, ready server. `local_addr` is known before it runs, so tests
/// bind port 0 and connect without sleeping.
pub struct Application {
    listener: TcpListener,
    router: Router<Layers>,
    /// Flipped to NOT_SERVING when shutdown begins, so load balancers stop
    /// sending new calls while in-flight ones finish.
    health: HealthReporter,
    drain_timeout: Duration,
    /// The cache in front of the mirror, for its counters.
    cache: Option<Arc<CachedMirror>>,
    /// Who may call: replaced when the registry is reloaded (SIGHUP).
    callers: Arc<Callers>,
    /// The attestation keys: replaced when they are reloaded (SIGHUP).
    attester: Arc<Attester>,
    checkpoint_kid: Option<String>,
    /// Mutual TLS (`None`: plaintext loopback): reloaded with the registry.
    tls: Option<Arc<ServerTls>>,
    /// How connections are let in.
    admission: Admission,
    connections: Arc<Connections>,
    /// The audit trail's group-commit writer, stopped (last rows, last
    /// checkpoint) once no call is answered any more.
    audit_writer: Option<WriterHandle>,
    /// Whether this instance should get calls: `/readyz` and
    /// `grpc.health.v1` say the same.
    readiness: Arc<Readiness>,
    /// The operators' HTTP endpoint (`None`: `admin_listen` empty).
    admin: Option<AdminServer>,
    metrics: Arc<Metrics>,
}

/// What SIGHUP reloads: the registry, the TLS files (certificate, CA,
/// CRLs) and the attestation keys (the signing key and the published
/// ones: the JWKS changes without a restart). Connections already open
/// keep their handshake; every call from then on is authorized against
/// the new registry and signed with the new key.
#[derive(Clone)]
pub struct Reloader {
    callers: Arc<Callers>,
    tls: Option<Arc<ServerTls>>,
    attester: Arc<Attester>,
    /// The checkpoint key's kid, which no attestation key may share.
    checkpoint_kid: Option<String>,
}

impl Reloader {
    /// Takes what `settings` say; on an error nothing changes.
    pub fn reload(&self, settings: &Settings) -> Result<(), StartupError> {
        let identities = identities(settings)?;
        let keyring = load_keyring(settings)?;
        if self.checkpoint_kid.as_deref() == Some(&keyring.signing_kid()) {
            return Err(StartupError::Refused(
                "the new attestation signing key is the audit checkpoint key".into(),
            ));
        }
        match (&self.tls, &settings.tls) {
            (Some(tls), Some(files)) => tls.reload(files)?,
            (None, None) => {}
            _ => {
                return Err(StartupError::Refused(
                    "TLS cannot be turned on or off without a restart".into(),
                ));
            }
        }
        self.callers.replace(identities);
        let new_kid = keyring.signing_kid();
        let old_kid = self.attester.keyring().signing_kid();
        let old_published = keyring.publishes(&old_kid);
        self.attester.replace_keyring(keyring);
        if old_kid != new_kid {
            tracing::info!(kid = %new_kid, previous = %old_kid, "attestation signing key rolled");
            if !old_published {
                tracing::warn!(
                    previous = %old_kid,
                    "the previous signing key is no longer published \
                     (attestation.published_key_files): what it signed no longer verifies"
                );
            }
        }
        Ok(())
    }
}

type Service = VerificationServiceServer<VerificationApi>;

/// Whether checks are written to the audit trail: always, in service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trail {
    Kept,
    NotKept,
}

impl Application {
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        Self::assemble(settings, clock, Trail::Kept).await
    }

    /// A server that keeps NO audit trail (so no retries, and quotas only
    /// in Redis), which DESIGN never lets serve: for the benchmarks that
    /// measure what the trail costs, and nothing else. No configuration
    /// reaches it.
    #[doc(hidden)]
    pub async fn build_to_measure_without_trail(settings: &Settings) -> Result<Self, StartupError> {
        Self::assemble(settings, Arc::new(SystemClock), Trail::NotKept).await
    }

    async fn assemble(
        settings: &Settings,
        clock: Arc<dyn Clock>,
        trail: Trail,
    ) -> Result<Self, StartupError> {
        if settings.tls.is_none() && !settings.listen.ip().is_loopback() {
            return Err(StartupError::Refused(format!(
                "{} is not a loopback address, and a non-loopback listener requires TLS",
                settings.listen
            )));
        }
        let admin_addr =
            crate::admin::listen_address(&settings.admin_listen, settings.admin_allow_remote)?;
        let metrics = Metrics::new(settings.telemetry.metrics)
            .map_err(|e| StartupError::Refused(format!("metrics: {e}")))?;
        // The registry first: a configuration mistake should not wait for
        // the stores.
        let identities = identities(settings)?;
        let mirror = open_mirror(settings, Seed::Demo).await?;
        let mirror_to_probe = mirror.clone();
        let attester = Arc::new(load_attester(settings)?);
        tracing::info!(kid = %attester.keyring().signing_kid(), "attestation key loaded");
        let cache = cache_in_front_of(settings, mirror.clone())?;
        let store: Arc<dyn MirrorStore> = match &cache {
            Some(cache) => cache.clone(),
            None => mirror,
        };
        let audit_store = open_audit_store(settings).await?;
        let (audit, audit_writer, checkpoint_kid): (Arc<dyn AuditSink>, _, _) = match trail {
            Trail::Kept => {
                let witness_database = witness_database(settings)?;
                if let Some(database) = &witness_database {
                    database
                        .prepare()
                        .await
                        .map_err(|e| StartupError::Refused(e.to_string()))?;
                }
                let newest_note = newest_checkpoint_note(settings)?;
                trail_reaches_its_witness(
                    settings,
                    audit_store.as_ref(),
                    &newest_note,
                    witness_database.as_ref(),
                )
                .await?;
                let checkpoint_key = load_checkpoint_key(settings, &attester)?;
                let checkpoint_kid = checkpoint_key.signing_kid();
                let (log, writer) = AuditLog::spawn(
                    audit_store.clone(),
                    Checkpointer::new(Arc::new(checkpoint_key), &attester.issuer, clock.clone()),
                    clock.clone(),
                    crate::audit::WriterParams {
                        newest_note: Some(newest_note),
                        witness_database,
                        metrics: Some(metrics.clone()),
                        ..settings.audit.writer_params()
                    },
                );
                let log = Arc::new(log);
                let queue = Arc::downgrade(&log);
                (metrics.pull(
                    "vnid_audit_queue_rows",
                    "Audit rows handed to the writer and waiting for it.",
                    Pull::Gauge,
                    &[],
                    move || {
                        queue
                            .upgrade()
                            .map(|log| (vec![], log.queued() as f64))
                            .into_iter()
                            .collect()
                    },
                ))
                .map_err(|e| StartupError::Refused(format!("metrics: {e}")))?;
                (log, Some(writer), Some(checkpoint_kid))
            }
            Trail::NotKept => {
                tracing::error!(
                    "NO AUDIT TRAIL IS KEPT: a server built to measure, never to serve"
                );
                (Arc::new(NoAudit), None, None)
            }
        };
        let trail = (trail == Trail::Kept).then(|| audit_store.clone());
        let readiness = Arc::new(Readiness::new(mirror_to_probe, trail.clone()));
        let guard = Guard::new(
            settings.redis_url.as_ref().map(Secret::expose),
            trail.clone(),
            settings.guard_params(),
        )
        .map_err(|e| StartupError::Refused(format!("redis_url: {e}")))?
        .with_metrics(metrics.clone());
        read_when_scraped(&metrics, cache.as_ref(), &store)
            .map_err(|e| StartupError::Refused(format!("metrics: {e}")))?;
        let verifier = Arc::new(
            Verifier::new(
                store,
                attester.clone(),
                audit.clone(),
                trail.clone().map(|trail| Replays {
                    trail,
                    index: cache.clone().map(|c| -> Arc<dyn RequestIndex> { c }),
                }),
                guard,
                clock.clone(),
                metrics.clone(),
            )
            .with_max_age(
                settings.mirror.max_age.map(|a| a.0),
                settings.mirror.warn_age.map(|a| a.0),
            ),
        );
        let history = Arc::new(AccessHistory::new(
            audit_store,
            audit,
            attester.clone(),
            clock,
        ));
        let callers = Arc::new(Callers::new(identities, settings.tls.is_some()));
        let api = VerificationApi::new(verifier, callers.clone(), settings.batch.params());
        // The same calls as JSON over HTTP/1.1 and HTTP/2, on this listener.
        let json_door = JsonDoor::new(
            api.clone(),
            settings.server.max_request_bytes,
            settings.batch.max_many_items,
        );
        let callers_handle = callers.clone();
        let audit_api = AuditApi::new(history, callers);

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<Service>().await;
        health.set_serving::<AuditServiceServer<AuditApi>>().await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let server = &settings.server;
        let tls = match &settings.tls {
            Some(files) => Some(Arc::new(ServerTls::load(files)?)),
            None => None,
        };
        let mut builder = Server::builder();
        if server.max_connection_age_seconds > 0 {
            builder = builder
                .max_connection_age(Duration::from_secs(server.max_connection_age_seconds))
                .max_connection_age_grace(Duration::from_secs(
                    server.max_connection_age_grace_seconds,
                ));
        }
        let router = builder
            // The JSON door and gRPC-Web take HTTP/1.1 too.
            .accept_http1(server.json_door || server.grpc_web)
            // gRPC-Web (binary and text) becomes gRPC before anything else
            // sees it: the same limits, errors, metrics and handlers.
            .layer(GrpcWebWhenAsked {
                enabled: server.grpc_web,
            })
            .layer(ErrorDetailsLayer)
            .layer(GrpcMetricsLayer(metrics.clone()))
            .trace_fn(call_span)
            .timeout(Duration::from_millis(server.request_timeout_ms))
            .max_concurrent_streams(server.max_concurrent_streams)
            // A batch stream may be idle for a long time while its caller
            // reads slowly; a peer that vanished without closing is found
            // by its missing ping answer, and its stream let go.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            // What one stream may send unread is small, and the connection
            // has room for every stream's: a batch caller that stops
            // reading stalls its own stream, never the other calls on its
            // connection, and a connection holds at most this much input.
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(
                STREAM_WINDOW_BYTES.saturating_mul(server.max_concurrent_streams.max(1)),
            )
            .add_service(health_service)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(VerificationRoutes::new(
                api.clone(),
                server.max_request_bytes,
                settings.batch.max_many_items,
            ))
            .add_service(
                AuditServiceServer::new(audit_api)
                    .max_decoding_message_size(server.max_request_bytes),
            );
        let router = if server.json_door {
            router
                .add_service(json_door.v1())
                .add_service(json_door.well_known())
        } else {
            router
        };

        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let admin = match admin_addr {
            Some(addr) => Some(
                AdminServer::bind(
                    addr,
                    Arc::new(AdminState {
                        readiness: readiness.clone(),
                        attester: attester.clone(),
                        metrics: metrics.clone(),
                    }),
                )
                .await?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            router,
            health,
            drain_timeout: Duration::from_millis(server.drain_timeout_ms),
            cache,
            callers: callers_handle,
            attester,
            checkpoint_kid,
            tls,
            admission: server.admission(),
            connections: Arc::default(),
            audit_writer,
            readiness,
            admin,
            metrics,
        })
    }

    /// Where the admin endpoint listens, if it does.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// Who may call; `replace` it with a reloaded registry.
    pub fn callers(&self) -> Arc<Callers> {
        self.callers.clone()
    }

    /// What SIGHUP reloads.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            callers: self.callers.clone(),
            tls: self.tls.clone(),
            attester: self.attester.clone(),
            checkpoint_kid: self.checkpoint_kid.clone(),
        }
    }

    /// Connections let in, and refused by the listener's rules, so far.
    pub fn connections(&self) -> Arc<Connections> {
        self.connections.clone()
    }

    pub fn cache(&self) -> Option<Arc<CachedMirror>> {
        self.cache.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops taking calls, reports
    /// NOT_SERVING and lets in-flight calls finish for at most the drain
    /// timeout.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        if let Ok(addr) = self.local_addr() {
            tracing::info!(%addr, "serving");
        }
        let health = self.health;
        let readiness = self.readiness;
        tokio::spawn(readiness.clone().keep_probing());
        tokio::spawn(report_health(
            readiness.clone(),
            health.clone(),
            self.metrics.clone(),
        ));
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(admin) = self.admin {
            tokio::spawn(admin.run(async move {
                let _ = admin_stopped.await;
            }));
        }
        let draining = readiness.clone();
        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight calls");
            draining.drain();
            health.set_not_serving::<Service>().await;
            health
                .set_not_serving::<AuditServiceServer<AuditApi>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            let _ = draining_tx.send(());
        };
        let (admission, connections) = (self.admission, self.connections);
        let serve: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = match self.tls {
            Some(tls) => {
                let incoming =
                    listener::incoming(self.listener, admission, connections, move |tcp| {
                        let acceptor = tls.acceptor();
                        async move { acceptor.accept(tcp).await }
                    });
                Box::pin(self.router.serve_with_incoming_shutdown(incoming, signal))
            }
            None => {
                let incoming = listener::incoming(self.listener, admission, connections, |tcp| {
                    std::future::ready(Ok(tcp))
                });
                Box::pin(self.router.serve_with_incoming_shutdown(incoming, signal))
            }
        };
        let drain_timeout = self.drain_timeout;
        let deadline = async move {
            if draining_rx.await.is_ok() {
                tokio::time::sleep(drain_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let served = tokio::select! {
            result = serve => result.map_err(StartupError::from),
            () = deadline => {
                tracing::warn!("drain timeout reached; abandoning in-flight calls");
                Ok(())
            }
        };
        // No call is answered any more: the audit writer commits what it
        // holds, signs a last checkpoint, and stops.
        if let Some(writer) = self.audit_writer
            && !writer.stop(drain_timeout).await
        {
            tracing::warn!("the audit writer did not finish in time");
        }
        let _ = admin_stop.send(());
        served
    }
}

/// Reports readiness through `grpc.health.v1`, per service, as it
/// changes (the same answer as `/readyz`).
/// The counters the cache and the mirror keep anyway, shown by
/// `/metrics` when scraped: nothing is added to a check for them.
fn read_when_scraped(
    metrics: &Metrics,
    cache: Option<&Arc<CachedMirror>>,
    store: &Arc<dyn MirrorStore>,
) -> Result<(), prometheus::Error> {
    if let Some(cache) = cache {
        let weak = Arc::downgrade(cache);
        let read = move |values: fn(&CachedMirror) -> Samples| {
            let weak = weak.clone();
            move || weak.upgrade().map(|c| values(&c)).unwrap_or_default()
        };
        metrics.pull(
            "vnid_cache_lookups_total",
            "Mirror lookups by how the cache answered: hit, negative_hit (a number \
             known to be absent), miss, corrupt (a value that did not open, refused), \
             bypassed (breaker open), single_use (batch items, sent past the cache).",
            Pull::Counter,
            &["result"],
            read(|cache| {
                let m = cache.metrics();
                [
                    ("hit", m.hits),
                    ("negative_hit", m.negative_hits),
                    ("miss", m.misses),
                    ("corrupt", m.corrupt),
                    ("bypassed", m.bypassed),
                    ("single_use", m.single_use),
                ]
                .into_iter()
                .map(|(result, n)| (vec![result], n as f64))
                .collect()
            }),
        )?;
        metrics.pull(
            "vnid_cache_errors_total",
            "Cache calls that failed or passed their deadline.",
            Pull::Counter,
            &[],
            read(|cache| vec![(vec![], cache.metrics().errors as f64)]),
        )?;
        metrics.pull(
            "vnid_cache_breaker_state",
            "The cache's circuit breaker: 1 for the state it is in (closed: the cache \
             is used; open: lookups go to the mirror; half_open: one call probes).",
            Pull::Gauge,
            &["state"],
            read(|cache| {
                let now = cache.breaker_state();
                [
                    BreakerState::Closed,
                    BreakerState::Open,
                    BreakerState::HalfOpen,
                ]
                .into_iter()
                .map(|state| (vec![state.as_str()], f64::from(u8::from(state == now))))
                .collect()
            }),
        )?;
        metrics.pull(
            "vnid_mirror_lookups_total",
            "Lookups that went to the mirror (misses, bypasses, single-use), and \
             of those, coalesced: answered by another call's lookup of the same number.",
            Pull::Counter,
            &["shared"],
            read(|cache| {
                let m = cache.metrics();
                vec![
                    (vec!["own"], m.mirror_queries as f64),
                    (vec!["coalesced"], m.coalesced as f64),
                ]
            }),
        )?;
    }
    if store.gathered().is_some() {
        let weak = Arc::downgrade(store);
        let read = move |value: fn(Gathered) -> u64| {
            let weak = weak.clone();
            move || {
                (weak.upgrade().and_then(|store| store.gathered()))
                    .map(|sent| (vec![], value(sent) as f64))
                    .into_iter()
                    .collect()
            }
        };
        metrics.pull(
            "vnid_mirror_queries_total",
            "Point-read queries sent to the mirror database.",
            Pull::Counter,
            &[],
            read(|sent| sent.queries),
        )?;
        let weak = Arc::downgrade(store);
        metrics.pull_histogram(
            "vnid_mirror_query_keys",
            "ID numbers per point-read query: the gathered batch size.",
            &SIZE_BOUNDS.map(|bound| bound as f64),
            move || {
                let sent = weak.upgrade()?.gathered()?;
                Some(Distribution {
                    counts: sent.by_size.to_vec(),
                    sum: sent.keys as f64,
                })
            },
        )?;
    }
    Ok(())
}

async fn report_health(readiness: Arc<Readiness>, health: HealthReporter, metrics: Arc<Metrics>) {
    let mut changes = readiness.subscribe();
    while changes.changed().await.is_ok() {
        let ready = changes.borrow_and_update().is_empty();
        metrics.ready.set(i64::from(ready));
        let status = if ready {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        health
            .set_service_status(<Service as tonic::server::NamedService>::NAME, status)
            .await;
        health
            .set_service_status(
                <AuditServiceServer<AuditApi> as tonic::server::NamedService>::NAME,
                status,
            )
            .await;
        if readiness.draining() {
            return;
        }
    }
}

/// Refuses to serve on a trail shorter than its witnesses say it was
/// (emptied, replaced by an older copy, or cut): the witness file, the
/// witness database, and the note of the newest checkpoint kept in the
/// data directory. Appending to it would chain new rows onto a trail that
/// lost evidence. Restore the trail, or set the witness aside if that
/// loss is known and recorded.
async fn trail_reaches_its_witness(
    settings: &Settings,
    store: &dyn crate::audit::AuditStore,
    note: &std::path::Path,
    database: Option<&crate::audit::witness::WitnessDatabase>,
) -> Result<(), StartupError> {
    use crate::audit::witness;
    let refused = |e: witness::WitnessError| StartupError::Refused(e.to_string());
    // Of witnesses vouching for one row, the last listed is named: a
    // witness outside the data directory before the directory's own note.
    let mut evidence: Vec<(i64, String)> = witness::newest_noted(note)
        .map_err(refused)?
        .map(|seq| (seq, format!("the data directory's note {}", note.display())))
        .into_iter()
        .collect();
    if let Some(path) = settings.audit.witness_file.as_ref().filter(|p| p.exists()) {
        let seq = witness::last_seq(path).map_err(refused)?;
        evidence.extend(seq.map(|seq| (seq, format!("the witness file {}", path.display()))));
    }
    if let Some(database) = database {
        let seq = database.last_seq().await.map_err(refused)?;
        evidence.extend(seq.map(|seq| (seq, "the witness database".to_owned())));
    }
    let Some((vouched, by)) = evidence.into_iter().max_by_key(|(seq, _)| *seq) else {
        return Ok(());
    };
    let head = store.heads().await?.newest();
    if head.seq < vouched {
        return Err(StartupError::Refused(format!(
            "the audit trail ends at row {}, but {by} vouches for row {vouched}: restore the \
             trail (or set that witness aside, if the loss is known and recorded) before serving",
            head.seq,
        )));
    }
    Ok(())
}

/// On SIGHUP, reads the configuration again (`load`) and takes its agency
/// registry (and plaintext identities) for every call from then on, and
/// its TLS files (CRLs included) for every handshake; connections stay up.
/// A configuration that does not load or check keeps the old one.
pub async fn reload_on_hangup<E: std::fmt::Display>(
    reloader: Reloader,
    load: impl Fn() -> Result<Settings, E>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; the registry cannot be reloaded");
        return;
    };
    while hangup.recv().await.is_some() {
        let reloaded = load()
            .map_err(|e| e.to_string())
            .and_then(|s| reloader.reload(&s).map_err(|e| e.to_string()));
        match reloaded {
            Ok(()) => tracing::info!("agency registry, TLS files and attestation keys reloaded"),
            Err(error) => {
                tracing::error!(%error, "agency registry NOT reloaded; the previous one stays")
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT: the `shutdown` of `run_until_stopped`.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
