//! What both the server and the command line open before they work: the
//! stores (mirror, audit trail), the cache in front of the mirror, the
//! attestation keys, the agency registry, and the secrets kept under the
//! data directory. `app` assembles a server from these; `cli` commands
//! such as `vnid import` and `vnid audit verify` use them alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::{Postgres, Sqlite};

use crate::attest::{Jwks, KeyError, Keyring, SubjectKey, generate_es256_pem, generate_key_pem};
use crate::audit::witness::WitnessDatabase;
use crate::audit::{AuditError, AuditStore, SqlAudit, TrailKeys};
use crate::cache::{CacheBackend, CachedMirror, MemoryBackend, RedisBackend, Sealer};
use crate::config::Settings;
use crate::grpc::caller::Identities;
use crate::grpc::tls::TlsError;
use crate::import::generate::{GenOptions, Generator};
use crate::mirror::{
    ExportRecord, LoadMode, MirrorAdmin, PgMirror, SqliteMirror, StoreError, load_records,
};
use crate::policy::{AgencyConfig, Registry, Role};
use crate::verify::Attester;

/// The embedded default's files under the data directory.
const EMBEDDED_TRAIL: &str = "audit.sqlite3";
const EMBEDDED_MIRROR: &str = "mirror.sqlite3";
/// The signing key generated when none is configured.
const DEV_SIGNING_KEY: &str = "dev-signing-key.pem";
/// The ES256 (P-256) key generated when no key is configured at all.
const DEV_ES256_KEY: &str = "dev-es256-key.pem";
/// The audit checkpoint key generated when none is configured.
const CHECKPOINT_KEY: &str = "audit-checkpoint-key.pem";
/// The note of the newest checkpoint this instance stored.
const NEWEST_CHECKPOINT: &str = "audit-newest-checkpoint.json";

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

/// The audit trail: Postgres at `audit.database_url`, else at
/// `database_url`, else SQLite under the data directory; migrated when
/// `database.migrate` says so.
pub async fn open_audit_store(settings: &Settings) -> Result<Arc<dyn AuditStore>, StartupError> {
    let url = audit_url(settings);
    let store: Arc<dyn AuditStore> = match url {
        Some(url) => Arc::new(
            SqlAudit::<Postgres>::connect_with(
                url.expose(),
                &settings
                    .database
                    .pool(settings.audit.max_connections.max(1)),
            )?
            .with_partition_rows(settings.audit.partition_rows.max(1))
            .with_chains(settings.audit.chains),
        ),
        None => {
            Arc::new(SqlAudit::<Sqlite>::open(&private_database(settings, EMBEDDED_TRAIL)?).await?)
        }
    };
    if settings.database.migrate || url.is_none() {
        store.migrate().await?;
    }
    Ok(store)
}

/// Whether there is an audit trail to read: with the embedded default, its
/// `audit.sqlite3` (a trail in Postgres is found by reading it). Looks
/// only; opens nothing.
pub fn trail_exists(settings: &Settings) -> Result<(), StartupError> {
    let path = settings.data_dir.join(EMBEDDED_TRAIL);
    if audit_url(settings).is_none() && !path.is_file() {
        return Err(StartupError::Refused(format!(
            "there is no audit trail at {}",
            path.display()
        )));
    }
    Ok(())
}

/// The audit trail as it is, to read: never created, never migrated. With
/// the embedded default, a missing `audit.sqlite3` is an error naming it,
/// not a new empty trail that would "verify".
pub async fn existing_audit_store(
    settings: &Settings,
) -> Result<Arc<dyn AuditStore>, StartupError> {
    trail_exists(settings)?;
    Ok(match audit_url(settings) {
        Some(url) => Arc::new(SqlAudit::<Postgres>::connect_with(
            url.expose(),
            &settings.database.pool(1),
        )?),
        None => Arc::new(SqlAudit::<Sqlite>::open(&settings.data_dir.join(EMBEDDED_TRAIL)).await?),
    })
}

/// Where the audit trail's Postgres is: `audit.database_url`, else the
/// mirror's `database_url`; `None`: the embedded SQLite trail.
fn audit_url(settings: &Settings) -> Option<&crate::config::Secret> {
    settings
        .audit
        .database_url
        .as_ref()
        .or(settings.database_url.as_ref())
}

/// The keys that verify what this deployment signed, read as they are:
/// nothing is generated, and a missing key is an error naming it.
#[derive(Debug, Clone)]
pub struct ExistingKeys {
    /// The attestation signing keys' public halves and the published ones.
    pub attestations: Jwks,
    /// The kids of the keys that sign attestations now (Ed25519, then
    /// P-256 if configured).
    pub attestation_signers: Vec<String>,
    /// The checkpoint key's public half and the older ones.
    pub checkpoints: Jwks,
    /// The same, as JWKS documents.
    pub attestations_json: String,
    pub checkpoints_json: String,
}

impl ExistingKeys {
    pub fn read(settings: &Settings) -> Result<Self, StartupError> {
        let existing = |configured: &Option<PathBuf>, default: &str, what: &str, older| {
            let path = configured
                .clone()
                .unwrap_or_else(|| settings.data_dir.join(default));
            if !path.is_file() {
                return Err(StartupError::Refused(format!(
                    "there is no {what} at {}",
                    path.display()
                )));
            }
            Ok(Keyring::load(&path, older)?)
        };
        let jwks = |ring: Keyring| -> Result<(Jwks, String), StartupError> {
            let json = ring.jwks_json().to_owned();
            Ok((Jwks::parse(&json)?, json))
        };
        let (a, audit) = (&settings.attestation, &settings.audit);
        let mut attestation_keys = existing(
            &a.signing_key_file,
            DEV_SIGNING_KEY,
            "signing key",
            &a.published_key_files,
        )?;
        // The ES256 key as configured, or the dev one if it was made.
        let dev_es256 = || {
            let path = settings.data_dir.join(DEV_ES256_KEY);
            (a.signing_key_file.is_none() && path.is_file()).then_some(path)
        };
        if let Some(path) = a.es256_key_file.clone().or_else(dev_es256) {
            attestation_keys = attestation_keys.with_es256_file(&path)?;
        }
        let attestation_signers = std::iter::once(attestation_keys.signing_kid())
            .chain(attestation_keys.es256_kid())
            .collect();
        let (attestations, attestations_json) = jwks(attestation_keys)?;
        let (checkpoints, checkpoints_json) = jwks(existing(
            &audit.checkpoint_key_file,
            CHECKPOINT_KEY,
            "audit checkpoint key",
            &audit.published_checkpoint_key_files,
        )?)?;
        Ok(Self {
            attestation_signers,
            attestations,
            checkpoints,
            attestations_json,
            checkpoints_json,
        })
    }

    pub fn trail(&self) -> TrailKeys<'_> {
        TrailKeys {
            attestations: &self.attestations,
            checkpoints: &self.checkpoints,
        }
    }
}

/// The population the embedded default is seeded with on first run.
const DEMO_POPULATION: GenOptions = GenOptions {
    count: 20_000,
    province: 82,
    seed: 2026,
    as_of: crate::import::generate::DEFAULT_AS_OF,
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
        let mirror = SqliteMirror::open(&private_database(settings, EMBEDDED_MIRROR)?).await?;
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
    match SqliteMirror::open(&settings.data_dir.join(EMBEDDED_MIRROR)).await {
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
    let backend: Arc<dyn CacheBackend> = match &settings.redis_url {
        Some(url) => Arc::new(
            RedisBackend::new(url.expose(), c.timeout())
                .map_err(|e| StartupError::Refused(e.to_string()))?,
        ),
        None => Arc::new(MemoryBackend::new(c.memory_capacity)),
    };
    Ok(Some(Arc::new(CachedMirror::new(
        mirror,
        backend,
        sealer,
        c.params(),
    ))))
}

/// The witness database, when one is configured (not connected yet).
pub fn witness_database(settings: &Settings) -> Result<Option<WitnessDatabase>, StartupError> {
    settings
        .audit
        .witness_database_url
        .as_ref()
        .map(|url| WitnessDatabase::connect(url.expose(), &settings.database.pool(2)))
        .transpose()
        .map_err(|e| StartupError::Refused(format!("audit.witness_database_url: {e}")))
}

/// Where an instance notes the newest checkpoint it stored: under its
/// data directory, which it needs anyway for its keys.
pub fn newest_checkpoint_note(settings: &Settings) -> Result<PathBuf, StartupError> {
    Ok(data_dir(settings)?.join(NEWEST_CHECKPOINT))
}

/// The key that signs the trail's checkpoints (generated under the data
/// directory when none is configured), with the older ones. Refused when
/// it is the attestation key: a checkpoint must not be signable by the
/// key every check uses.
pub fn load_checkpoint_key(
    settings: &Settings,
    attester: &Attester,
) -> Result<Keyring, StartupError> {
    let audit = &settings.audit;
    let path = match &audit.checkpoint_key_file {
        Some(path) => path.clone(),
        None => {
            let path = data_dir(settings)?.join(CHECKPOINT_KEY);
            create_secret_file_once(&path, || Ok(generate_key_pem()?.as_bytes().to_vec()))?;
            path
        }
    };
    let key = Keyring::load(&path, &audit.published_checkpoint_key_files)?;
    if key.signing_kid() == attester.keyring().signing_kid() {
        return Err(StartupError::Refused(format!(
            "audit.checkpoint_key_file {} is the attestation signing key: checkpoints need a key \
             of their own",
            path.display()
        )));
    }
    Ok(key)
}

pub fn load_attester(settings: &Settings) -> Result<Attester, StartupError> {
    let a = &settings.attestation;
    let subject = match &a.subject_key_file {
        Some(path) => path.clone(),
        None => {
            let path = data_dir(settings)?.join("subject.key");
            create_secret_file_once(&path, || Ok(SubjectKey::generate_bytes()?.to_vec()))?;
            path
        }
    };
    Ok(Attester::new(
        load_keyring(settings)?,
        SubjectKey::load(&subject)?,
        &a.issuer,
        a.ttl_seconds,
    ))
}

/// The attestation signing key (a dev key generated under the data
/// directory when none is configured) and the keys still published: what
/// start-up and SIGHUP load.
pub fn load_keyring(settings: &Settings) -> Result<Keyring, StartupError> {
    let a = &settings.attestation;
    let signing = match &a.signing_key_file {
        Some(path) => path.clone(),
        None => {
            let path = data_dir(settings)?.join(DEV_SIGNING_KEY);
            create_secret_file_once(&path, || Ok(generate_key_pem()?.as_bytes().to_vec()))?;
            tracing::warn!(
                "no attestation.signing_key_file configured: signing with a generated dev key"
            );
            path
        }
    };
    let keyring = Keyring::load(&signing, &a.published_key_files)?;
    let es256 = match (&a.es256_key_file, &a.signing_key_file) {
        (Some(path), _) => Some(path.clone()),
        // The embedded default signs both ways with dev keys.
        (None, None) => {
            let path = data_dir(settings)?.join(DEV_ES256_KEY);
            create_secret_file_once(&path, || {
                let pem = generate_es256_pem().ok_or(KeyError::GenerateEs256)?;
                Ok(pem.as_bytes().to_vec())
            })?;
            Some(path)
        }
        (None, Some(_)) => None,
    };
    let keyring = match es256 {
        Some(path) => keyring.with_es256_file(&path)?,
        None => keyring,
    };
    keys_serve_the_registry(&keyring, &settings.agencies())?;
    Ok(keyring)
}

/// Refuses a keyring that cannot sign for an agency as its registry entry
/// asks (ES256 with no P-256 key).
pub fn keys_serve_the_registry(
    keyring: &Keyring,
    agencies: &[AgencyConfig],
) -> Result<(), StartupError> {
    match agencies.iter().find(|a| !keyring.signs(a.attestation_alg)) {
        Some(agency) => Err(StartupError::Refused(format!(
            "agency {:?} has attestation_alg = \"{}\", and no attestation.es256_key_file is \
             configured",
            agency.id,
            agency.attestation_alg.name()
        ))),
        None => Ok(()),
    }
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
