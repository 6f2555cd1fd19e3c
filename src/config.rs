//! Typed configuration, loaded once at start-up: a TOML file, then
//! environment overrides `VNID__KEY` or `VNID__SECTION__KEY` (keys are
//! lower-cased; a value is read as TOML when it parses as one, as a string
//! otherwise). Unknown keys are errors, so a typo never silently falls back
//! to a default. Secrets are read from files or wrapped so that `Debug`
//! never prints them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::policy::AgencyConfig;

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "VNID__";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the gRPC server listens. Any non-loopback address needs TLS.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The operators' plaintext HTTP endpoint (health, readiness, JWKS):
    /// an address and port, or empty for none. Loopback only unless
    /// `admin_allow_remote`.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Serves the admin endpoint on a non-loopback address (it has no
    /// mutual TLS: put it behind a network policy).
    #[serde(default)]
    pub admin_allow_remote: bool,
    /// Where generated state lives (dev keys; the embedded mirror).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `postgres://…`. It may hold a password, so it is never printed.
    #[serde(default)]
    pub database_url: Option<Secret>,
    #[serde(default)]
    pub database: DatabaseSettings,
    /// `redis://…` (or `rediss://…`). Absent: an in-process cache.
    #[serde(default)]
    pub redis_url: Option<Secret>,
    #[serde(default)]
    pub cache: CacheSettings,
    #[serde(default)]
    pub mirror: MirrorSettings,
    #[serde(default)]
    pub attestation: AttestationSettings,
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default)]
    pub defences: DefenceSettings,
    #[serde(default)]
    pub quota: QuotaSettings,
    #[serde(default)]
    pub batch: BatchSettings,
    #[serde(default)]
    pub server: ServerSettings,
    /// Mutual TLS. Absent: plaintext, loopback only.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// The agency registry. Empty: one `demo` agency with every right.
    #[serde(default)]
    pub agencies: Vec<AgencyConfig>,
    /// The agency that callers on the plaintext loopback listener act as.
    #[serde(default = "default_plaintext_agency")]
    pub plaintext_agency: String,
    /// The operator that callers on the plaintext loopback listener act as
    /// on the audit service; empty: nobody may.
    #[serde(default = "default_plaintext_operator")]
    pub plaintext_operator: String,
}

/// The server's certificate and the CA that issues agencies' client
/// certificates. Every caller must present one (mutual TLS); the caller is
/// named by the certificate's SAN URI only: `urn:vnid:agency:<id>` or
/// `urn:vnid:operator:<id>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The server's certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Its private key, PEM.
    pub key_file: PathBuf,
    /// The agency CA's certificate(s), PEM.
    pub client_ca_file: PathBuf,
    /// Certificate revocation lists of the agency CA (PEM or DER), read at
    /// start-up and again on SIGHUP. Empty: no revocation.
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// `postgres://…` of the audit trail. Absent: the mirror's database
    /// (`database_url`), or with the embedded mirror, `audit.sqlite3` under
    /// the data directory.
    pub database_url: Option<Secret>,
    /// Connections for reads (retries' first answers, histories); appends
    /// have two of their own.
    pub max_connections: u32,
    /// Accepted for older configurations: `store`, the only value. A trail
    /// is always kept; the benchmarks that measure its cost start a server
    /// without one themselves (`benches/load_tools.rs`).
    #[serde(rename = "sink")]
    pub legacy_sink: Option<LegacySink>,
    /// Rows waiting for the group-commit writer at most.
    pub queue: usize,
    /// Rows per group commit at most.
    pub max_batch: usize,
    /// A group commit slower than this fails its checks with UNAVAILABLE.
    pub write_timeout_ms: u64,
    /// A signed checkpoint after this many rows ...
    pub checkpoint_rows: i64,
    /// ... or this many seconds, whichever comes first.
    pub checkpoint_interval_seconds: u64,
    /// `vnid audit prune` removes rows older than this.
    pub retention_days: u32,
    /// A witness outside the database: every signed checkpoint is also
    /// appended here (one JSON line each, synced), for
    /// `vnid audit verify --witness`. Absent: the log is the only witness.
    pub witness_file: Option<PathBuf>,
    /// `postgres://…` of a witness database (other credentials than the
    /// trail's, ideally another server): every checkpoint also goes into
    /// its `vnid_audit_witness` table, for `vnid audit verify
    /// --witness-database`.
    pub witness_database_url: Option<Secret>,
    /// The Ed25519 key (PKCS#8 PEM) that signs the trail's checkpoints: a
    /// key of its own, never the attestation key. Absent: one generated
    /// under the data directory (`audit-checkpoint-key.pem`).
    pub checkpoint_key_file: Option<PathBuf>,
    /// Older checkpoint keys (private or public PEM) that checkpoints
    /// still in the trail were signed with; `vnid audit verify` accepts
    /// them.
    pub published_checkpoint_key_files: Vec<PathBuf>,
    /// Rows per partition of a Postgres trail: `vnid audit prune` drops a
    /// partition whole once every row in it is past retention. Size it to
    /// a day or a week of checks.
    pub partition_rows: i64,
    /// Hash chains of a Postgres trail (at least; never fewer once made):
    /// instances sharing the trail append to different chains, each under
    /// its own head's lock. More than the instances that write.
    pub chains: i16,
}

/// Against harvesting: someone who knows a province, a gender and a birth
/// year faces only a million candidate numbers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefenceSettings {
    /// Failed checks (not found, or a claimed field wrong) of one ID number
    /// by one agency in 24 hours beyond which that agency's checks of it
    /// are suspended (`RESOURCE_EXHAUSTED`, `ID_NUMBER_SUSPENDED`) and an
    /// alert is logged. Other agencies' checks of the number go on. 0: no
    /// limit.
    pub id_failures_per_day: u64,
    /// Agencies with failed checks of one ID number in 24 hours at which
    /// one cross-agency alert is logged (`id_number_failures_across_agencies`).
    /// 0: off.
    pub id_failure_agencies_alert: u64,
    /// Share of an agency's recent answers that are NOT_VERIFIED (unknown
    /// number or wrong claim) past which an alert is logged and the agency
    /// throttled (`RESOURCE_EXHAUSTED`, `AGENCY_THROTTLED`) until the share
    /// falls below half of it. 0: off.
    pub not_verified_alert_share: f64,
    /// Weight of each answer in the moving share: about the last
    /// 1 / weight answers count.
    pub not_verified_weight: f64,
    /// Answers seen before an agency's share is judged.
    pub not_verified_min_checks: u64,
    /// Checks a second a throttled agency still gets.
    pub throttle_per_second: u32,
}

impl Default for DefenceSettings {
    fn default() -> Self {
        Self {
            id_failures_per_day: 20,
            id_failure_agencies_alert: 3,
            not_verified_alert_share: 0.5,
            not_verified_weight: 0.01,
            not_verified_min_checks: 100,
            throttle_per_second: 1,
        }
    }
}

/// Agencies' rates and daily quotas across instances, and the Redis
/// counters the guard keeps (quotas, per-number failures).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    /// How many instances serve the same agencies. While Redis cannot be
    /// reached, each grants `1 / instances` of an agency's rate and of what
    /// the audit trail says is left of its day.
    pub instances: u32,
    /// The deadline of every counter call to Redis.
    pub timeout_ms: u64,
    /// Consecutive counter failures that open the breaker (counting then
    /// goes per instance at once) ...
    pub breaker_failures: u32,
    /// ... for this long, before Redis is probed again.
    pub breaker_cooldown_ms: u64,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            instances: 1,
            timeout_ms: 100,
            breaker_failures: 5,
            breaker_cooldown_ms: 2_000,
        }
    }
}

impl Settings {
    /// The guard: quotas (`quota.*`) and defences (`defences.*`).
    pub fn guard_params(&self) -> crate::guard::GuardParams {
        let (q, d) = (&self.quota, &self.defences);
        crate::guard::GuardParams {
            shared: crate::guard::SharedParams {
                timeout: Duration::from_millis(q.timeout_ms),
                breaker_failures: q.breaker_failures,
                breaker_cooldown: Duration::from_millis(q.breaker_cooldown_ms),
            },
            instances: q.instances,
            id_failure_limit: d.id_failures_per_day,
            id_failure_agencies_alert: d.id_failure_agencies_alert,
            shares: crate::guard::ShareLimits {
                alert_share: d.not_verified_alert_share,
                weight: d.not_verified_weight.clamp(0.0, 1.0),
                min_checks: d.not_verified_min_checks,
                throttle_per_second: d.throttle_per_second,
            },
        }
    }
}

/// `VerifyBatch` streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Items of one stream checked at once, and answers queued for a caller
    /// that reads slowly: what one stream may hold in memory.
    pub window: usize,
    /// Items one stream may carry.
    pub max_items: u64,
    /// A stream whose caller sends nothing for this long, while nothing of
    /// it is being checked, ends with `DEADLINE_EXCEEDED` (`BATCH_IDLE`).
    pub idle_timeout_ms: u64,
    /// One item's deadline, its wait for the agency's rate included; past
    /// it the item is answered `DEADLINE_EXCEEDED` (`ITEM_DEADLINE`).
    pub item_timeout_ms: u64,
    /// Requests one `VerifyMany` call may carry.
    pub max_many_items: usize,
}

impl BatchSettings {
    pub fn params(&self) -> crate::grpc::batch::BatchParams {
        crate::grpc::batch::BatchParams {
            window: self.window,
            max_items: self.max_items,
            idle_timeout: Duration::from_millis(self.idle_timeout_ms.max(1)),
            item_timeout: Duration::from_millis(self.item_timeout_ms.max(1)),
            max_many_items: self.max_many_items.max(1),
        }
    }
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            window: 512,
            max_items: 1_000_000,
            idle_timeout_ms: 60_000,
            item_timeout_ms: 30_000,
            max_many_items: 1_000,
        }
    }
}

/// The one value `audit.sink` ever takes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LegacySink {
    Store,
}

impl AuditSettings {
    /// How the group-commit writer batches, times out and checkpoints.
    pub fn writer_params(&self) -> crate::audit::WriterParams {
        crate::audit::WriterParams {
            queue: self.queue,
            max_batch: self.max_batch.max(1),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            checkpoint_rows: self.checkpoint_rows.max(1),
            checkpoint_interval: Duration::from_secs(self.checkpoint_interval_seconds.max(1)),
            witness_file: self.witness_file.clone(),
            witness_database: None,
            newest_note: None,
            metrics: None,
        }
    }
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            database_url: None,
            max_connections: 16,
            legacy_sink: None,
            queue: 8_192,
            max_batch: 512,
            write_timeout_ms: 5_000,
            checkpoint_rows: 10_000,
            checkpoint_interval_seconds: 60,
            // Five years.
            retention_days: 1_826,
            witness_file: None,
            witness_database_url: None,
            checkpoint_key_file: None,
            published_checkpoint_key_files: Vec::new(),
            partition_rows: 10_000_000,
            chains: crate::audit::store::DEFAULT_CHAINS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    pub max_connections: u32,
    /// How long a query waits for a connection before the call fails with
    /// UNAVAILABLE.
    pub acquire_timeout_ms: u64,
    /// Run the migrations at start-up.
    pub migrate: bool,
    /// Postgres' `statement_timeout` for every connection (mirror and
    /// trail): no query of a check runs longer. Imports and prunes lift it
    /// inside their own transaction.
    pub statement_timeout_ms: u64,
    /// Postgres' `idle_in_transaction_session_timeout`: a transaction left
    /// idle this long is ended and its locks let go.
    pub idle_in_transaction_timeout_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout_ms: 2_000,
            migrate: true,
            statement_timeout_ms: 30_000,
            idle_in_transaction_timeout_ms: 60_000,
        }
    }
}

impl DatabaseSettings {
    /// A pool of `max_connections` with these bounds.
    pub fn pool(&self, max_connections: u32) -> crate::infra::sql::PoolSettings {
        crate::infra::sql::PoolSettings {
            max_connections,
            acquire_timeout: Duration::from_millis(self.acquire_timeout_ms),
            statement_timeout: Duration::from_millis(self.statement_timeout_ms.max(1)),
            idle_in_transaction_timeout: Duration::from_millis(
                self.idle_in_transaction_timeout_ms.max(1),
            ),
        }
    }
}

/// How old the mirror's data may be (its `data_as_of`: the newest
/// import's newest record) before checks stop trusting it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorSettings {
    /// Past this, checks answer `UNAVAILABLE` (`MIRROR_STALE`), never a
    /// verdict. Seconds, or a number with `s`, `m`, `h` or `d`
    /// (`"36h"`). Absent: no bound.
    pub max_age: Option<Age>,
    /// Past this, a warning is logged (at most every ten minutes).
    pub warn_age: Option<Age>,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        Self {
            max_age: None,
            warn_age: Some(Age(86_400)),
        }
    }
}

/// A length of time in whole seconds, written as seconds or with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(pub i64);

impl<'de> Deserialize<'de> for Age {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Seconds(i64),
            Text(String),
        }
        let seconds = match Written::deserialize(d)? {
            Written::Seconds(s) => Some(s),
            Written::Text(text) => Age::parse(&text),
        };
        seconds.filter(|s| *s > 0).map(Age).ok_or_else(|| {
            serde::de::Error::custom(
                "an age: seconds, or a number with s, m, h or d (e.g. \"36h\")",
            )
        })
    }
}

impl Age {
    fn parse(text: &str) -> Option<i64> {
        let text = text.trim();
        let (number, unit) = match text.char_indices().last()? {
            (i, c) if c.is_ascii_alphabetic() => (&text[..i], c),
            _ => (text, 's'),
        };
        let unit = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return None,
        };
        number.trim().parse::<i64>().ok()?.checked_mul(unit)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    pub enabled: bool,
    /// At least 32 secret bytes, the same on every instance: keys the
    /// cache's key names and encrypts its values. Absent: generated under
    /// the data directory on first run.
    pub key_file: Option<PathBuf>,
    pub ttl_seconds: u64,
    /// How long "not found" is cached.
    pub negative_ttl_seconds: u64,
    /// Each TTL is shortened by up to this many percent, at random.
    pub ttl_jitter_percent: u8,
    /// The deadline of every cache call.
    pub timeout_ms: u64,
    /// How often each instance asks the mirror for its generation: after an
    /// import, the longest any instance answers from the old records.
    pub generation_poll_ms: u64,
    /// Consecutive cache failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before it probes the cache again.
    pub breaker_cooldown_ms: u64,
    /// Mirror queries under way at once (whatever the cache is doing).
    pub max_db_queries: usize,
    /// Entries of the in-process cache (no `redis_url`).
    pub memory_capacity: usize,
    /// How often the cache counters are logged.
    pub metrics_log_seconds: u64,
    /// How long Redis marks an agency's `request_id` as used. Within it, a
    /// new request costs no audit-trail read; the trail stays the record.
    pub request_mark_seconds: u64,
}

impl CacheSettings {
    /// The deadline of every cache call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn params(&self) -> crate::cache::CacheParams {
        crate::cache::CacheParams {
            ttl: Duration::from_secs(self.ttl_seconds),
            negative_ttl: Duration::from_secs(self.negative_ttl_seconds),
            jitter: f64::from(self.ttl_jitter_percent) / 100.0,
            generation_poll: Duration::from_millis(self.generation_poll_ms.max(10)),
            breaker_failures: self.breaker_failures,
            breaker_cooldown: Duration::from_millis(self.breaker_cooldown_ms),
            max_db_queries: self.max_db_queries,
            metrics_log: Duration::from_secs(self.metrics_log_seconds.max(1)),
            request_ttl: Duration::from_secs(self.request_mark_seconds.max(1)),
        }
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            key_file: None,
            ttl_seconds: 300,
            negative_ttl_seconds: 30,
            ttl_jitter_percent: 10,
            timeout_ms: 100,
            generation_poll_ms: 500,
            breaker_failures: 5,
            breaker_cooldown_ms: 2_000,
            max_db_queries: 64,
            memory_capacity: 100_000,
            metrics_log_seconds: 60,
            request_mark_seconds: 7 * 86_400,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationSettings {
    /// The `iss` of every attestation.
    pub issuer: String,
    /// Seconds from `iat` to `exp`.
    pub ttl_seconds: i64,
    /// PKCS#8 PEM private key that signs. Absent: a dev key generated under
    /// the data directory on first run.
    pub signing_key_file: Option<PathBuf>,
    /// Older keys (private or public PEM) still published in the JWKS.
    pub published_key_files: Vec<PathBuf>,
    /// At least 32 bytes of secret that key the pairwise subject tokens.
    /// Absent: generated under the data directory on first run.
    pub subject_key_file: Option<PathBuf>,
    /// PKCS#8 PEM P-256 private key that signs ES256, for the agencies set
    /// to `attestation_alg = "ES256"`. Absent: with no `signing_key_file`
    /// either, a dev key generated under the data directory; else none.
    pub es256_key_file: Option<PathBuf>,
}

impl Default for AttestationSettings {
    fn default() -> Self {
        Self {
            issuer: "vnid".into(),
            ttl_seconds: 24 * 3600,
            signing_key_file: None,
            published_key_files: Vec::new(),
            subject_key_file: None,
            es256_key_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Largest request message, in bytes.
    pub max_request_bytes: usize,
    /// Per-call deadline, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long in-flight calls may take to finish after a shutdown signal.
    pub drain_timeout_ms: u64,
    pub max_concurrent_streams: u32,
    /// Connections open at once; one more is closed as it arrives.
    pub max_connections: usize,
    /// A TLS handshake not finished in this time is dropped.
    pub tls_handshake_timeout_ms: u64,
    /// A connection whose HTTP/2 preface (its first 24 bytes, after TLS)
    /// has not arrived in this time is dropped.
    pub first_bytes_timeout_ms: u64,
    /// TCP keepalive: idle seconds before the first probe (0: off).
    pub tcp_keepalive_seconds: u64,
    /// A connection is asked to close (HTTP/2 GOAWAY) after this long, so
    /// that clients reconnect, spreading over replicas behind a layer-4
    /// balancer and presenting their certificates anew (0: never).
    pub max_connection_age_seconds: u64,
    /// ... and is closed this long after that, calls under way or not.
    pub max_connection_age_grace_seconds: u64,
    /// The JSON door (`/v1/…`, `/.well-known/jwks.json`) on this listener.
    pub json_door: bool,
    /// gRPC-Web on this listener.
    pub grpc_web: bool,
}

impl ServerSettings {
    /// How the listener lets connections in.
    pub fn admission(&self) -> crate::grpc::listener::Admission {
        crate::grpc::listener::Admission {
            max_connections: self.max_connections,
            handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms.max(1)),
            first_bytes_timeout: Duration::from_millis(self.first_bytes_timeout_ms.max(1)),
            tcp_keepalive: (self.tcp_keepalive_seconds > 0)
                .then(|| Duration::from_secs(self.tcp_keepalive_seconds)),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 * 1024,
            request_timeout_ms: 10_000,
            drain_timeout_ms: 10_000,
            max_concurrent_streams: 256,
            max_connections: 4_096,
            tls_handshake_timeout_ms: 10_000,
            first_bytes_timeout_ms: 10_000,
            tcp_keepalive_seconds: 60,
            max_connection_age_seconds: 3_600,
            max_connection_age_grace_seconds: 600,
            json_door: true,
            grpc_web: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub filter: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Json,
        }
    }
}

/// Traces: each call's span, exported over OTLP (gRPC) when an endpoint
/// is set, continuing the caller's W3C `traceparent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// The OTLP/gRPC collector, e.g. `http://otel-collector:4317`.
    /// Absent: no traces.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans.
    pub service_name: String,
    /// The share of calls traced when the caller's trace is not sampled
    /// already (a sampled `traceparent` is always followed), 0 to 1.
    pub sample_ratio: f64,
    /// Counts calls and checks for `/metrics` (false: only what the parts
    /// count anyway shows there; for measuring what counting costs).
    pub metrics: bool,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "vnid".into(),
            sample_ratio: 1.0,
            metrics: true,
        }
    }
}

impl TelemetrySettings {
    /// The collector's address, if traces are on: an `http` or `https`
    /// URI with a host.
    pub fn endpoint(&self) -> Result<Option<http::Uri>, String> {
        let Some(endpoint) = self.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) else {
            return Ok(None);
        };
        let bad = |why: &str| format!("telemetry.otlp_endpoint {endpoint:?}: {why}");
        let uri: http::Uri = endpoint.parse().map_err(|_| bad("not a URI"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad("an http:// or https:// address with a host is needed"));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(format!(
                "telemetry.sample_ratio {}: between 0 and 1",
                self.sample_ratio
            ));
        }
        Ok(Some(uri))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

fn default_admin_listen() -> String {
    crate::admin::DEFAULT_LISTEN.to_owned()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./vnid-data")
}

fn default_plaintext_agency() -> String {
    "demo".into()
}

fn default_plaintext_operator() -> String {
    "operator".into()
}

/// A secret string: `Debug` shows `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment override {0} names a key inside a value that is not a table")]
    EnvConflict(String),
}

impl Settings {
    /// The file (if any) and then every `VNID__…` pair of `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    message: describe(&e, &text),
                })?
            }
            None => toml::Table::new(),
        };
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        overrides.sort();
        for (key, value) in overrides {
            apply_override(&mut table, &key, value)?;
        }
        let mut settings =
            Settings::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                path: "configuration".into(),
                message: redact_values(&e.to_string()),
            })?;
        settings.clamp();
        Ok(settings)
    }

    /// Brings every duration into a range that means something (a TTL of
    /// a thousand years overflows a clock later; a negative one signs
    /// expired attestations), here at load rather than in a panic later.
    fn clamp(&mut self) {
        const MINUTE: u64 = 60;
        const HOUR: u64 = 3_600;
        const DAY: u64 = 86_400;
        fn bound<T: Ord + Copy>(value: &mut T, low: T, high: T) {
            *value = (*value).clamp(low, high);
        }
        let c = &mut self.cache;
        bound(&mut c.ttl_seconds, 1, 30 * DAY);
        bound(&mut c.negative_ttl_seconds, 1, DAY);
        bound(&mut c.request_mark_seconds, 1, 366 * DAY);
        bound(&mut c.timeout_ms, 1, MINUTE * 1_000);
        bound(&mut c.generation_poll_ms, 10, MINUTE * 1_000);
        bound(&mut c.breaker_cooldown_ms, 1, HOUR * 1_000);
        bound(&mut c.metrics_log_seconds, 1, DAY);
        bound(&mut c.ttl_jitter_percent, 0, 90);
        let q = &mut self.quota;
        bound(&mut q.timeout_ms, 1, MINUTE * 1_000);
        bound(&mut q.breaker_cooldown_ms, 1, HOUR * 1_000);
        bound(&mut self.attestation.ttl_seconds, 60, 366 * DAY as i64);
        let s = &mut self.server;
        bound(&mut s.request_timeout_ms, 1, HOUR * 1_000);
        bound(&mut s.drain_timeout_ms, 0, HOUR * 1_000);
        bound(&mut s.tls_handshake_timeout_ms, 1, 5 * MINUTE * 1_000);
        bound(&mut s.first_bytes_timeout_ms, 1, 5 * MINUTE * 1_000);
        bound(&mut s.tcp_keepalive_seconds, 0, 2 * HOUR);
        bound(&mut s.max_connection_age_seconds, 0, 30 * DAY);
        bound(&mut s.max_connection_age_grace_seconds, 0, DAY);
        bound(&mut s.max_connections, 1, 1_000_000);
        let b = &mut self.batch;
        bound(&mut b.idle_timeout_ms, 1, DAY * 1_000);
        bound(&mut b.item_timeout_ms, 1, DAY * 1_000);
        let a = &mut self.audit;
        bound(&mut a.write_timeout_ms, 1, 5 * MINUTE * 1_000);
        bound(&mut a.checkpoint_interval_seconds, 1, DAY);
        let d = &mut self.database;
        bound(&mut d.acquire_timeout_ms, 1, HOUR * 1_000);
        bound(&mut d.statement_timeout_ms, 1, DAY * 1_000);
        bound(&mut d.idle_in_transaction_timeout_ms, 1, DAY * 1_000);
    }

    /// The agency registry; when none is configured, the built-in `demo`
    /// agency and the local operator.
    pub fn agencies(&self) -> Vec<AgencyConfig> {
        if self.agencies.is_empty() {
            let mut builtin = vec![AgencyConfig::demo(&self.plaintext_agency)];
            if !self.plaintext_operator.is_empty() {
                builtin.push(AgencyConfig::operator(&self.plaintext_operator));
            }
            builtin
        } else {
            self.agencies.clone()
        }
    }
}

/// A parse error as the operator may see it (and a log may keep): where it
/// is and what is wrong, never the offending line, which may hold a
/// password.
fn describe(error: &toml::de::Error, text: &str) -> String {
    let at = error
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| format!("line {}: ", before.matches('\n').count() + 1))
        .unwrap_or_default();
    format!("{at}{}", redact_values(error.message()))
}

/// The message with every quoted value taken out (`"…"`); key names, which
/// the messages quote with backticks, stay.
fn redact_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        match (c, quoted) {
            ('"', false) => {
                quoted = true;
                out.push_str("\"…");
            }
            ('"', true) => {
                quoted = false;
                out.push('"');
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

fn apply_override(table: &mut toml::Table, key: &str, value: String) -> Result<(), ConfigError> {
    let path: Vec<String> = key[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    let Some((last, sections)) = path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for section in sections {
        let entry = current
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::EnvConflict(key.to_owned()))?;
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or(toml::Value::String(value));
    current.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_age_is_seconds_or_a_number_with_a_unit() {
        let age = |text: &str| toml::from_str::<MirrorSettings>(text).map(|m| m.max_age);
        assert_eq!(age("max_age = 90").unwrap(), Some(Age(90)));
        assert_eq!(age("max_age = \"36h\"").unwrap(), Some(Age(36 * 3_600)));
        assert_eq!(age("max_age = \"2d\"").unwrap(), Some(Age(2 * 86_400)));
        assert_eq!(age("max_age = \"45m\"").unwrap(), Some(Age(45 * 60)));
        assert_eq!(age("max_age = \"600\"").unwrap(), Some(Age(600)));
        for bad in [
            "max_age = 0",
            "max_age = \"soon\"",
            "max_age = \"3w\"",
            "max_age = -5",
        ] {
            assert!(age(bad).is_err(), "{bad}");
        }
        assert_eq!(age("").unwrap(), None);
    }

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let s = Settings::load(None, []).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:50051");
        assert!(s.database_url.is_none());
        assert_eq!(s.agencies().len(), 2, "demo and the local operator");
        assert_eq!(s.attestation.ttl_seconds, 86_400);
    }

    #[test]
    fn file_then_environment() {
        let dir = std::env::temp_dir().join(format!("vnid-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vnid.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\n[attestation]\nissuer = \"file\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&path),
            env(&[
                ("VNID__ATTESTATION__ISSUER", "env"),
                ("VNID__DATABASE_URL", "postgres://u:hunter2@db/vnid"),
                ("VNID__DATABASE__MAX_CONNECTIONS", "4"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(s.listen.port(), 7000);
        assert_eq!(s.attestation.issuer, "env");
        assert_eq!(s.database.max_connections, 4);
        assert_eq!(
            s.database_url.as_ref().unwrap().expose(),
            "postgres://u:hunter2@db/vnid"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_deployed_example_parses() {
        let example: toml::Table =
            toml::from_str(include_str!("../deploy/vnid.example.toml")).unwrap();
        let s = Settings::deserialize(toml::Value::Table(example)).unwrap();
        assert_eq!(s.agencies().len(), 3);
        assert_eq!(s.audit.retention_days, 1_826);
        assert_eq!(s.attestation.published_key_files.len(), 1);
        assert_eq!(s.batch.window, BatchSettings::default().window);
        assert_eq!(
            s.defences.not_verified_alert_share,
            DefenceSettings::default().not_verified_alert_share
        );
        let allowed: Vec<(bool, bool)> = s
            .agencies()
            .iter()
            .map(|a| (a.allow_batch, a.allow_card_qr))
            .collect();
        assert_eq!(allowed, [(true, true), (false, true), (false, false)]);
    }

    #[test]
    fn a_parse_error_names_the_line_never_its_text() {
        let dir = std::env::temp_dir().join(format!("vnid-config-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vnid.toml");
        for text in [
            "listen = \"127.0.0.1:7000\"\ndatabase_url = \"postgres://u:hunter2@db/vnid\n",
            "listen = \"127.0.0.1:7000\"\ndatabase_url = postgres://u:hunter2@db/vnid\n",
            "[database]\nmax_connections = \"hunter2\"\n",
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Settings::load(Some(&path), []).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
        std::fs::write(&path, "listen = \"x\"\n\ndatabase_url = hunter2\n").unwrap();
        let err = Settings::load(Some(&path), []).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        let err = Settings::load(None, env(&[("VNID__SERVER__MAX_CONNECTIONS", "hunter2")]))
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("hunter2") && err.contains("max_connections"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn no_configuration_turns_the_audit_trail_off() {
        // Older configurations said `sink = "store"`, which still loads.
        assert!(Settings::load(None, env(&[("VNID__AUDIT__SINK", "store")])).is_ok());
        let err = Settings::load(None, env(&[("VNID__AUDIT__SINK", "none")])).unwrap_err();
        assert!(err.to_string().contains("sink"), "{err}");
    }

    #[test]
    fn absurd_durations_are_clamped_at_load() {
        let s = Settings::load(
            None,
            env(&[
                ("VNID__CACHE__TTL_SECONDS", "9223372036854775807"),
                ("VNID__CACHE__REQUEST_MARK_SECONDS", "9223372036854775807"),
                ("VNID__ATTESTATION__TTL_SECONDS", "-5"),
                ("VNID__SERVER__REQUEST_TIMEOUT_MS", "0"),
                ("VNID__AUDIT__WRITE_TIMEOUT_MS", "9223372036854775807"),
            ]),
        )
        .unwrap();
        assert_eq!(s.cache.ttl_seconds, 30 * 86_400);
        assert_eq!(s.cache.request_mark_seconds, 366 * 86_400);
        assert_eq!(s.attestation.ttl_seconds, 60);
        assert_eq!(s.server.request_timeout_ms, 1);
        assert_eq!(s.audit.write_timeout_ms, 300_000);
        // What a clock does with them cannot overflow.
        let later = std::time::Instant::now()
            + std::time::Duration::from_secs(s.cache.request_mark_seconds);
        assert!(later > std::time::Instant::now());
        // Sensible values pass as they are.
        let d = Settings::load(None, []).unwrap();
        assert_eq!(d.cache.ttl_seconds, CacheSettings::default().ttl_seconds);
        assert_eq!(d.attestation.ttl_seconds, 86_400);
    }

    #[test]
    fn the_systemd_unit_keeps_files_private_and_room_for_connections() {
        let unit = include_str!("../deploy/vnid.service");
        let value = |key: &str| {
            unit.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        };
        assert_eq!(value("UMask"), Some("0077"));
        let files: usize = value("LimitNOFILE").unwrap().parse().unwrap();
        assert!(files > 2 * ServerSettings::default().max_connections);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Settings::load(None, env(&[("VNID__LISTNE", "x")])).unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
        let err = Settings::load(None, env(&[("VNID__SERVER__NOPE", "1")])).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(
            Settings::load(
                None,
                env(&[("VNID__LISTEN__X", "1"), ("VNID__LISTEN", "1")])
            )
            .is_err()
        );
    }
}
