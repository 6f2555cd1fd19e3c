//! Server assembly: configuration in, a bound server out.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;

use sqlx::{Postgres, Sqlite};

use crate::attest::{KeyError, Keyring, SubjectKey, generate_key_pem};
use crate::audit::history::AccessHistory;
use crate::audit::{
    AuditError, AuditLog, AuditSink, AuditStore, Checkpointer, NoAudit, SqlAudit, WriterHandle,
    WriterParams,
};
use crate::clock::{Clock, SystemClock};
use crate::config::{AuditSinkKind, Secret, Settings};
use crate::defence::ShareWatch;
use crate::grpc::batch::BatchParams;
use crate::grpc::caller::Identities;
use crate::grpc::listener::{self, Admission, Connections};
use crate::grpc::tls::{ServerTls, TlsError};
use crate::grpc::{AuditApi, Callers, ErrorDetailsLayer, VerificationApi, call_span};
use crate::lookup::RequestIndex;
use crate::lookup::{CacheBackend, CacheParams, CachedMirror, MemoryBackend, RedisBackend, Sealer};
use crate::mirror::generate::{GenOptions, Generator};
use crate::mirror::{
    ExportRecord, LoadMode, MirrorAdmin, MirrorStore, PgMirror, SqliteMirror, StoreError,
    load_records,
};
use crate::pb::audit_service_server::AuditServiceServer;
use crate::pb::verification_service_server::VerificationServiceServer;
use crate::policy::{Registry, Role};
use crate::quota::Quotas;
use crate::verify::{Attester, Verifier};
use crate::verify::{Defences, Replays};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot prepare {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// HTTP/2 flow-control window of one stream: HTTP/2's own default. At
/// about 60 bytes a `VerifyRequest`, a thousand batch items.
const STREAM_WINDOW_BYTES: u32 = 65_535;

/// A bound, ready server. `local_addr` is known before it runs, so tests
/// bind port 0 and connect without sleeping.
pub struct Application {
    listener: TcpListener,
    router: Router<tower::layer::util::Stack<ErrorDetailsLayer, tower::layer::util::Identity>>,
    /// Flipped to NOT_SERVING when shutdown begins, so load balancers stop
    /// sending new calls while in-flight ones finish.
    health: HealthReporter,
    drain_timeout: Duration,
    /// The cache in front of the mirror, for its counters.
    cache: Option<Arc<CachedMirror>>,
    /// Who may call: replaced when the registry is reloaded (SIGHUP).
    callers: Arc<Callers>,
    /// Mutual TLS (`None`: plaintext loopback): reloaded with the registry.
    tls: Option<Arc<ServerTls>>,
    /// How connections are let in.
    admission: Admission,
    connections: Arc<Connections>,
    /// The audit trail's group-commit writer, stopped (last rows, last
    /// checkpoint) once no call is answered any more.
    audit_writer: Option<WriterHandle>,
}

/// What SIGHUP reloads: the registry and the TLS files (certificate, CA,
/// CRLs). Connections already open keep their handshake; every call from
/// then on is authorized against the new registry.
#[derive(Clone)]
pub struct Reloader {
    callers: Arc<Callers>,
    tls: Option<Arc<ServerTls>>,
}

impl Reloader {
    /// Takes what `settings` say; on an error nothing changes.
    pub fn reload(&self, settings: &Settings) -> Result<(), StartupError> {
        let identities = identities(settings)?;
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
        Ok(())
    }
}

type Service = VerificationServiceServer<VerificationApi>;

impl Application {
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        if settings.tls.is_none() && !settings.listen.ip().is_loopback() {
            return Err(StartupError::Refused(format!(
                "{} is not a loopback address, and a non-loopback listener requires TLS",
                settings.listen
            )));
        }
        // The registry first: a configuration mistake should not wait for
        // the stores.
        let identities = identities(settings)?;
        let mirror = open_mirror(settings, Seed::Demo).await?;
        let attester = Arc::new(load_attester(settings)?);
        tracing::info!(kid = %attester.keyring.signing_kid(), "attestation key loaded");
        let cache = cache_in_front_of(settings, mirror.clone())?;
        let store: Arc<dyn MirrorStore> = match &cache {
            Some(cache) => cache.clone(),
            None => mirror,
        };
        let audit_store = open_audit_store(settings).await?;
        let (audit, audit_writer): (Arc<dyn AuditSink>, _) = match settings.audit.sink {
            AuditSinkKind::Store => {
                let (log, writer) = AuditLog::spawn(
                    audit_store.clone(),
                    Checkpointer::new(attester.clone(), clock.clone()),
                    clock.clone(),
                    writer_params(settings),
                );
                (Arc::new(log), Some(writer))
            }
            AuditSinkKind::None => {
                tracing::error!(
                    "audit.sink = \"none\": NO AUDIT TRAIL IS KEPT. For measurements only."
                );
                (Arc::new(NoAudit), None)
            }
        };
        let quotas = Quotas::new(
            settings.redis_url.as_ref().map(Secret::expose),
            Duration::from_millis(settings.cache.timeout_ms),
            settings.cache.breaker_failures,
            Duration::from_millis(settings.cache.breaker_cooldown_ms),
        )
        .map_err(|e| StartupError::Refused(format!("redis_url: {e}")))?;
        let quotas = match settings.audit.sink {
            AuditSinkKind::Store => {
                quotas.with_trail(audit_store.clone(), settings.quota.instances)
            }
            AuditSinkKind::None => quotas,
        };
        let verifier = Arc::new(Verifier::new(
            store,
            attester.clone(),
            audit.clone(),
            (settings.audit.sink == AuditSinkKind::Store).then(|| Replays {
                trail: audit_store.clone(),
                index: cache.clone().map(|c| -> Arc<dyn RequestIndex> { c }),
            }),
            Arc::new(quotas),
            Defences {
                id_failure_limit: settings.defences.id_failures_per_day,
                id_failure_agencies_alert: settings.defences.id_failure_agencies_alert,
                shares: ShareWatch::new(settings.defences.share_limits()),
            },
            clock.clone(),
        ));
        let history = Arc::new(AccessHistory::new(audit_store, audit, attester, clock));
        let callers = Arc::new(Callers::new(identities, settings.tls.is_some()));
        let api = VerificationApi::new(
            verifier,
            callers.clone(),
            BatchParams {
                window: settings.batch.window,
                max_items: settings.batch.max_items,
                idle_timeout: Duration::from_millis(settings.batch.idle_timeout_ms.max(1)),
                item_timeout: Duration::from_millis(settings.batch.item_timeout_ms.max(1)),
            },
        );
        let callers_handle = callers.clone();
        let audit_api = AuditApi::new(history, callers);

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<Service>().await;
        health.set_serving::<AuditServiceServer<AuditApi>>().await;
        // Only the services served here: the descriptor set also holds the
        // load benchmark's baseline service.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("vnid.v1.VerificationService")
                .with_service_name("vnid.v1.AuditService")
                .with_service_name("grpc.health.v1.Health")
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
            .layer(ErrorDetailsLayer)
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
            .add_service(
                Service::new(api)
                    .max_decoding_message_size(server.max_request_bytes)
                    .max_encoding_message_size(4 * server.max_request_bytes),
            )
            .add_service(
                AuditServiceServer::new(audit_api)
                    .max_decoding_message_size(server.max_request_bytes),
            );

        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        Ok(Self {
            listener,
            router,
            health,
            drain_timeout: Duration::from_millis(server.drain_timeout_ms),
            cache,
            callers: callers_handle,
            tls,
            admission: Admission {
                max_connections: server.max_connections,
                handshake_timeout: Duration::from_millis(server.tls_handshake_timeout_ms.max(1)),
                first_bytes_timeout: Duration::from_millis(server.first_bytes_timeout_ms.max(1)),
                tcp_keepalive: (server.tcp_keepalive_seconds > 0)
                    .then(|| Duration::from_secs(server.tcp_keepalive_seconds)),
            },
            connections: Arc::default(),
            audit_writer,
        })
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
        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight calls");
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
        served
    }
}

/// The registry, and the plaintext callers' identities in it, checked.
pub fn identities(settings: &Settings) -> Result<Identities, StartupError> {
    // The built-in demo agency and operator have every right: they exist
    // only for the plaintext loopback default, never behind TLS.
    if settings.tls.is_some() && settings.agencies.is_empty() {
        return Err(StartupError::Refused(
            "with TLS, the registry must list its agencies ([[agencies]]): the built-in demo \
             agency and operator serve only the plaintext loopback default"
                .into(),
        ));
    }
    let registry =
        Registry::new(&settings.agencies()).map_err(|e| StartupError::Refused(e.to_string()))?;
    let must_be = |id: &str, key: &str, role: Role| match registry.agency(id) {
        Ok(caller) if caller.role == role => Ok(()),
        _ => Err(StartupError::Refused(format!(
            "{key} {id:?} is not an enabled {role:?} of the registry"
        ))),
    };
    // With TLS, callers are their certificates: no one is plaintext.
    if settings.tls.is_none() {
        must_be(&settings.plaintext_agency, "plaintext_agency", Role::Agency)?;
    }
    if settings.tls.is_none() && !settings.plaintext_operator.is_empty() {
        must_be(
            &settings.plaintext_operator,
            "plaintext_operator",
            Role::Operator,
        )?;
    }
    Ok(Identities {
        registry,
        plaintext_agency: settings.plaintext_agency.clone(),
        plaintext_operator: settings.plaintext_operator.clone(),
    })
}

fn writer_params(settings: &Settings) -> WriterParams {
    let a = &settings.audit;
    WriterParams {
        queue: a.queue,
        max_batch: a.max_batch.max(1),
        write_timeout: Duration::from_millis(a.write_timeout_ms),
        checkpoint_rows: a.checkpoint_rows.max(1),
        checkpoint_interval: Duration::from_secs(a.checkpoint_interval_seconds.max(1)),
    }
}

/// The audit trail: Postgres at `audit.database_url`, else at
/// `database_url`, else SQLite under the data directory; migrated when
/// `database.migrate` says so.
pub async fn open_audit_store(settings: &Settings) -> Result<Arc<dyn AuditStore>, StartupError> {
    let url = settings
        .audit
        .database_url
        .as_ref()
        .or(settings.database_url.as_ref());
    let store: Arc<dyn AuditStore> = match url {
        Some(url) => Arc::new(SqlAudit::<Postgres>::connect_with(
            url.expose(),
            &settings
                .database
                .pool(settings.audit.max_connections.max(1)),
        )?),
        None => {
            Arc::new(SqlAudit::<Sqlite>::open(&private_database(settings, "audit.sqlite3")?).await?)
        }
    };
    if settings.database.migrate || url.is_none() {
        store.migrate().await?;
    }
    Ok(store)
}

/// The population the embedded default is seeded with on first run.
const DEMO_POPULATION: GenOptions = GenOptions {
    count: 20_000,
    province: 82,
    seed: 2026,
    as_of: crate::mirror::generate::DEFAULT_AS_OF,
};

/// Whether an empty embedded mirror is seeded with the demo population:
/// yes for `vnid serve`, never for `vnid import` (an operator's first
/// import must not be mixed with synthetic people).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    Demo,
    Nothing,
}

/// The configured mirror: Postgres at `database_url`, or the embedded
/// SQLite mirror under the data directory (created on first run, and
/// seeded with a synthetic demo population when `seed` says so).
pub async fn open_mirror(
    settings: &Settings,
    seed: Seed,
) -> Result<Arc<dyn MirrorAdmin>, StartupError> {
    let db = &settings.database;
    let Some(url) = &settings.database_url else {
        let mirror = SqliteMirror::open(&private_database(settings, "mirror.sqlite3")?).await?;
        mirror.migrate().await?;
        if seed == Seed::Demo && mirror.count().await? == 0 {
            tracing::info!(
                people = DEMO_POPULATION.count,
                "seeding the embedded mirror with a synthetic population"
            );
            let people = Generator::new(DEMO_POPULATION.clone());
            load_records(&mirror, LoadMode::Full, None, people)
                .await
                .map_err(|e| StartupError::Refused(e.to_string()))?;
        }
        return Ok(Arc::new(mirror));
    };
    let mirror = PgMirror::connect_with(url.expose(), &db.pool(db.max_connections))?;
    if db.migrate {
        mirror.migrate().await?;
    }
    Ok(Arc::new(mirror))
}

/// A few people of the embedded demo population to try, when the mirror is
/// the embedded one.
pub async fn demo_identities(settings: &Settings) -> Vec<ExportRecord> {
    if settings.database_url.is_some() {
        return Vec::new();
    }
    match SqliteMirror::open(&settings.data_dir.join("mirror.sqlite3")).await {
        Ok(mirror) => mirror.sample_active(3).await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// The cache in front of the mirror: Redis at `redis_url`, or in-process;
/// `None` when the cache is disabled.
pub fn cache_in_front_of(
    settings: &Settings,
    mirror: Arc<dyn MirrorAdmin>,
) -> Result<Option<Arc<CachedMirror>>, StartupError> {
    let c = &settings.cache;
    if !c.enabled {
        return Ok(None);
    }
    let key_file = match &c.key_file {
        Some(path) => path.clone(),
        None => {
            let path = data_dir(settings)?.join("cache.key");
            create_secret_file_once(&path, || Ok(SubjectKey::generate_bytes()?.to_vec()))?;
            path
        }
    };
    let secret = zeroize::Zeroizing::new(std::fs::read(&key_file).map_err(|source| {
        StartupError::DataDir {
            path: key_file.clone(),
            source,
        }
    })?);
    let sealer = Sealer::new(&secret)
        .map_err(|e| StartupError::Refused(format!("{}: {e}", key_file.display())))?;
    let timeout = Duration::from_millis(c.timeout_ms);
    let backend: Arc<dyn CacheBackend> = match &settings.redis_url {
        Some(url) => Arc::new(
            RedisBackend::new(url.expose(), timeout)
                .map_err(|e| StartupError::Refused(e.to_string()))?,
        ),
        None => Arc::new(MemoryBackend::new(c.memory_capacity)),
    };
    let params = CacheParams {
        ttl: Duration::from_secs(c.ttl_seconds),
        negative_ttl: Duration::from_secs(c.negative_ttl_seconds),
        jitter: f64::from(c.ttl_jitter_percent) / 100.0,
        generation_poll: Duration::from_millis(c.generation_poll_ms.max(10)),
        breaker_failures: c.breaker_failures,
        breaker_cooldown: Duration::from_millis(c.breaker_cooldown_ms),
        max_db_queries: c.max_db_queries,
        metrics_log: Duration::from_secs(c.metrics_log_seconds.max(1)),
        request_ttl: Duration::from_secs(c.request_mark_seconds.max(1)),
    };
    Ok(Some(Arc::new(CachedMirror::new(
        mirror, backend, sealer, params,
    ))))
}

pub fn load_attester(settings: &Settings) -> Result<Attester, StartupError> {
    let a = &settings.attestation;
    let signing = match &a.signing_key_file {
        Some(path) => path.clone(),
        None => {
            let path = data_dir(settings)?.join("dev-signing-key.pem");
            create_secret_file_once(&path, || Ok(generate_key_pem()?.as_bytes().to_vec()))?;
            tracing::warn!(
                "no attestation.signing_key_file configured: signing with a generated dev key"
            );
            path
        }
    };
    let subject = match &a.subject_key_file {
        Some(path) => path.clone(),
        None => {
            let path = data_dir(settings)?.join("subject.key");
            create_secret_file_once(&path, || Ok(SubjectKey::generate_bytes()?.to_vec()))?;
            path
        }
    };
    Ok(Attester {
        keyring: Keyring::load(&signing, &a.published_key_files)?,
        subject_key: SubjectKey::load(&subject)?,
        issuer: a.issuer.clone(),
        ttl_seconds: a.ttl_seconds,
    })
}

/// The data directory, created if missing and made its owner's alone: it
/// holds the population mirror, the audit trail and the keys.
pub fn data_dir(settings: &Settings) -> Result<&Path, StartupError> {
    let dir = &settings.data_dir;
    crate::files::private_dir(dir).map_err(|source| StartupError::DataDir {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// A SQLite database under the data directory, its owner's alone (SQLite
/// gives its journal files the database's mode).
fn private_database(settings: &Settings, name: &str) -> Result<PathBuf, StartupError> {
    let path = data_dir(settings)?.join(name);
    crate::files::private_file(&path).map_err(|source| StartupError::DataDir {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Writes a new secret file, readable by its owner only, unless it exists
/// (never through a symlink; whole or not at all). A missing directory is
/// made its owner's alone. Returns whether it wrote one.
pub fn create_secret_file_once(
    path: &Path,
    contents: impl FnOnce() -> Result<Vec<u8>, KeyError>,
) -> Result<bool, StartupError> {
    let io_error = |source| StartupError::DataDir {
        path: path.to_owned(),
        source,
    };
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(false);
    }
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        crate::files::private_dir(dir).map_err(io_error)?;
    }
    let bytes = zeroize::Zeroizing::new(contents()?);
    crate::files::write_new(path, &bytes, 0o600).map_err(io_error)
}
