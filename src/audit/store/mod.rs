//! The audit rows in Postgres, or in SQLite for the embedded default: the
//! same SQL for both, written once over `sqlx::Database`.
//!
//! An append is one transaction on one chain: lock that chain's head row
//! (Postgres' `FOR UPDATE`, a chain no one else holds; SQLite's write
//! lock, its one chain), number the rows, chain them onto the head, insert
//! them, move the head, commit. Writers sharing a database append to
//! chains of their own, each group after the one before it in its chain,
//! and a crash mid-append leaves neither rows nor a moved head.
//!
//! - `append`: the appends (Postgres' optimistic one, and the locking one).
//! - `walk`: the chain read in order: verification, and the prune.
//!
//! Here: the store's trait, the dialects, the pools, the reads of single
//! rows (a retry's first answer, a person's history, a day's count).

mod append;
mod partitions;
mod walk;

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqlitePoolOptions, SqliteSynchronous};
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Postgres,
    Row, Sqlite, Type,
};

use super::chain::{
    ChainId, CheckpointClaims, Finding, GENESIS, Hash, Head, Heads, StoredCheckpoint, Summary,
    TrailKeys,
};
use super::{AuditEntry, AuditError, AuditRecord, packed, parse_stored_kind};
use crate::infra::BoxFuture;
use crate::infra::read_batch::{self, ReadBatcher, ReadMany};
use crate::infra::sql::{
    Embedded, Migrations, PoolSettings, UNBOUNDED_STATEMENTS, lazy_pool, sqlite_file,
    sqlite_is_unavailable,
};

/// Where the audit's own migrations are recorded: apart from the mirror's,
/// since the trail may share the mirror's database or have its own.
const MIGRATIONS_TABLE: &str = "_vnid_audit_migrations";

const POSTGRES_MIGRATIONS: Migrations = &[
    (
        1,
        "audit",
        include_str!("../migrations/postgres/0001_audit.sql"),
    ),
    (
        2,
        "request unique",
        include_str!("../migrations/postgres/0002_request_unique.sql"),
    ),
    (
        3,
        "export",
        include_str!("../migrations/postgres/0003_export.sql"),
    ),
    (
        4,
        "partitions",
        include_str!("../migrations/postgres/0004_partitions.sql"),
    ),
    (
        5,
        "attestation bytes",
        include_str!("../migrations/postgres/0005_attestation_bytes.sql"),
    ),
    (
        6,
        "chains",
        include_str!("../migrations/postgres/0006_chains.sql"),
    ),
];
const SQLITE_MIGRATIONS: Migrations = &[
    (
        1,
        "audit",
        include_str!("../migrations/sqlite/0001_audit.sql"),
    ),
    (
        2,
        "request unique",
        include_str!("../migrations/sqlite/0002_request_unique.sql"),
    ),
    (
        3,
        "export",
        include_str!("../migrations/sqlite/0003_export.sql"),
    ),
    (
        4,
        "request table",
        include_str!("../migrations/sqlite/0004_partitions.sql"),
    ),
    (
        5,
        "attestation bytes",
        include_str!("../migrations/sqlite/0005_attestation_bytes.sql"),
    ),
    (
        6,
        "chains",
        include_str!("../migrations/sqlite/0006_chains.sql"),
    ),
];

/// A row: the attestation as bytes (see [`packed`]), or for a row
/// written before that, as text; and the chain it links into.
const COLUMNS: &str = "seq, at_us, kind, agency, purpose, request_id, subject, subject_index, \
    verdict, reason, attestation_id, attestation_bytes, request_digest, prev_hash, row_hash, \
    attestation, chain";
const COLUMN_COUNT: usize = 17;

/// Chains of a Postgres trail unless configured: more than the writers of
/// most deployments, few enough that a checkpoint stays short.
pub const DEFAULT_CHAINS: ChainId = 8;

/// Rows per INSERT statement (17 parameters each).
const ROWS_PER_INSERT: usize = 128;

const MOVE_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = $3";
/// Every chain's head.
const HEADS: &str = "SELECT id, seq, hash FROM audit_head ORDER BY id";
/// The newest row of chain `$1` at or before row `$2`.
const CHAIN_HEAD_AT: &str =
    "SELECT seq, row_hash FROM audit_log WHERE chain = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1";

/// Connections for appends and checkpoints: the writer's, and one for a
/// checkpoint or a second instance's writer in the same process.
const WRITE_CONNECTIONS: u32 = 2;

/// Rows read per page while verifying.
const SCAN_PAGE: i64 = 10_000;

/// What `vnid audit verify` found.
pub type Verification = Result<Summary, Finding>;

/// What `vnid audit prune` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneOutcome {
    /// Rows removed.
    pub removed: u64,
    /// The last row removed, where the signed cut now anchors the trail,
    /// and the cut checkpoint.
    pub cut: Option<(Head, String)>,
    /// Rows removed that no export held: only when forced.
    pub unexported: Option<(i64, i64)>,
}

impl PruneOutcome {
    /// Nothing old enough to remove.
    pub const NOTHING: Self = Self {
        removed: 0,
        cut: None,
        unexported: None,
    };
}

/// The attestations of the trail signed under one JWS header (so by one
/// key): how many, and when the first and the last were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    /// The JWS header (its JSON).
    pub header: Vec<u8>,
    pub first_us: i64,
    pub last_us: i64,
    pub rows: i64,
}

/// Signs the cut checkpoint of a prune (the last row it removes from each
/// chain), inside its transaction.
pub type SignCut<'a> = &'a (dyn Fn(&Heads) -> Result<String, AuditError> + Sync);

/// Signs a periodic checkpoint of every chain's head, naming the
/// checkpoint before it (if any), inside the transaction that stores it.
pub type SignCheckpoint<'a> =
    &'a (dyn Fn(&Heads, Option<&Head>) -> Result<String, AuditError> + Sync);

pub trait AuditStore: Send + Sync + 'static {
    fn migrate(&self) -> BoxFuture<'_, Result<(), AuditError>>;

    /// Appends `entries` in this order, to one chain, in one transaction;
    /// returns that chain's head after them (the last entry's row).
    fn append<'a>(&'a self, entries: &'a [AuditEntry]) -> BoxFuture<'a, Result<Head, AuditError>>;

    /// Signs and stores a checkpoint of every chain's head, chained onto
    /// the newest checkpoint in the trail, with the checkpoints locked so
    /// that instances sharing the trail sign one chain of checkpoints.
    /// Returns its head ([`Heads::identity`]) and token, or `None` when a
    /// checkpoint at or after the newest row is there already (another
    /// instance's vouches for these rows). The database gives up after
    /// `within` (a lock held elsewhere never holds a connection longer).
    fn add_checkpoint<'a>(
        &'a self,
        at_us: i64,
        sign: SignCheckpoint<'a>,
        within: Duration,
    ) -> BoxFuture<'a, Result<Option<(Head, String)>, AuditError>>;

    /// The rows filed under `subject_index`, newest first, older than
    /// `before` (a `seq`) when given.
    fn history<'a>(
        &'a self,
        subject_index: &'a str,
        before: Option<i64>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, AuditError>>;

    /// The first check an agency made under `request_id`, if any.
    fn first_request<'a>(
        &'a self,
        agency: &'a str,
        request_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<AuditRecord>, AuditError>>;

    /// How many checks `agency` was answered at or after `since_us`.
    fn checks_since<'a>(
        &'a self,
        agency: &'a str,
        since_us: i64,
    ) -> BoxFuture<'a, Result<u64, AuditError>>;

    /// Each chain's head; [`Heads::newest`] is where the trail ends.
    fn heads(&self) -> BoxFuture<'_, Result<Heads, AuditError>>;

    /// Whether rows can be appended now: the database reachable, and not
    /// a read-only one (a replica, or a primary set read-only).
    fn writable(&self) -> BoxFuture<'_, Result<bool, AuditError>>;

    /// Each chain's newest row at or before row `seq`: what the rows after
    /// `seq` follow.
    fn heads_at(&self, seq: i64) -> BoxFuture<'_, Result<Heads, AuditError>>;

    /// Walks the whole trail, as of one snapshot, against the checkpoints
    /// and attestations `keys` verify.
    fn verify<'a>(
        &'a self,
        keys: TrailKeys<'a>,
    ) -> BoxFuture<'a, Result<Verification, AuditError>> {
        self.verify_witnessed(keys, &[], &[])
    }

    /// [`AuditStore::verify`], holding the trail also to checkpoints a
    /// witness kept outside its database, and to heads the operator
    /// expects.
    fn verify_witnessed<'a>(
        &'a self,
        keys: TrailKeys<'a>,
        witnessed: &'a [StoredCheckpoint],
        expected: &'a [Head],
    ) -> BoxFuture<'a, Result<Verification, AuditError>>;

    /// Removes the rows older than `before_us`, oldest first, up to the
    /// first row that is not, and leaves a signed cut checkpoint at the
    /// last one removed, in the same transaction. Refuses
    /// ([`AuditError::Unexported`]) when some of those rows went into no
    /// export, unless `force`.
    fn prune<'a>(
        &'a self,
        before_us: i64,
        force: bool,
        sign_cut: SignCut<'a>,
    ) -> BoxFuture<'a, Result<PruneOutcome, AuditError>>;

    /// Up to `limit` rows after row `after` and up to row `through`, in
    /// order.
    fn rows<'a>(
        &'a self,
        after: i64,
        through: i64,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, AuditError>>;

    /// The stored checkpoints of rows `from` to `to`, in order.
    fn checkpoints<'a>(
        &'a self,
        from: i64,
        to: i64,
    ) -> BoxFuture<'a, Result<Vec<StoredCheckpoint>, AuditError>>;

    /// Which keys signed the attestations kept in the trail, and when
    /// first and last: one read of every row.
    fn key_uses(&self) -> BoxFuture<'_, Result<Vec<KeyUse>, AuditError>>;

    /// Records that rows `from` to `to` went into an export whose lines
    /// hash to `sha256`.
    fn record_export<'a>(
        &'a self,
        from: i64,
        to: i64,
        at_us: i64,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<(), AuditError>>;
}

/// What differs between the two databases.
pub trait Dialect: Database + Sized {
    const MIGRATIONS: Migrations;
    /// Takes a chain no one else is appending to (the least advanced),
    /// holding its head until the transaction ends: `id, seq, hash`; none
    /// when every chain is taken.
    const LOCK_FREE_CHAIN: &'static str;
    /// Waits for chain `$1`'s head, then holds it.
    const LOCK_CHAIN: &'static str;
    /// `$1` new row numbers, in order (none: the head's next ones).
    const NEXT_SEQS: Option<&'static str>;
    /// How many chains the trail may have.
    const MAX_CHAINS: ChainId;
    /// Whether the database takes writes now.
    const WRITABLE: &'static str;
    /// Holds the checkpoints against other writers (not readers, nor
    /// appends) until the transaction ends.
    const LOCK_CHECKPOINTS: &'static str;
    /// The JWS header of a row's attestation as kept (see
    /// [`packed::header_json`]).
    const TOKEN_HEADER: &'static str;
    /// The first statement of a transaction that must read one snapshot.
    const SNAPSHOT: Option<&'static str>;
    /// Lifts the session's statement bound in a long transaction (prune).
    const UNBOUNDED: Option<&'static str>;
    /// Bounds the statements of a transaction to `$1` milliseconds.
    const BOUNDED: Option<&'static str>;
    fn is_unavailable(error: &sqlx::Error) -> bool;
    fn append<'a>(
        store: &'a SqlAudit<Self>,
        entries: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<Head, AuditError>>;
    /// Makes room for rows up to `through` (partitions, on Postgres).
    fn make_room(store: &SqlAudit<Self>, through: i64) -> BoxFuture<'_, Result<(), AuditError>>;
    /// Postgres drops whole partitions; SQLite deletes rows.
    fn prune<'a>(
        store: &'a SqlAudit<Self>,
        before_us: i64,
        force: bool,
        sign_cut: SignCut<'a>,
    ) -> BoxFuture<'a, Result<PruneOutcome, AuditError>>;
    fn run_migrations<'a>(
        migrator: &'a Migrator,
        pool: &'a Pool<Self>,
    ) -> BoxFuture<'a, Result<(), sqlx::migrate::MigrateError>>;
}

impl Dialect for Postgres {
    const MIGRATIONS: Migrations = POSTGRES_MIGRATIONS;
    // A row lock, and no dead row version per append.
    const LOCK_FREE_CHAIN: &'static str =
        "SELECT id, seq, hash FROM audit_head ORDER BY seq, id FOR UPDATE SKIP LOCKED LIMIT 1";
    const LOCK_CHAIN: &'static str =
        "SELECT id, seq, hash FROM audit_head WHERE id = $1 FOR UPDATE";
    const NEXT_SEQS: Option<&'static str> =
        Some("SELECT nextval('audit_seq') FROM generate_series(1, $1)");
    const MAX_CHAINS: ChainId = 1000;
    const WRITABLE: &'static str =
        "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'";
    const LOCK_CHECKPOINTS: &'static str = "LOCK TABLE audit_checkpoint IN EXCLUSIVE MODE";
    const TOKEN_HEADER: &'static str = "CASE \
         WHEN attestation_bytes IS NULL THEN convert_to(split_part(attestation, '.', 1), 'UTF8') \
         WHEN length(attestation_bytes) = 0 THEN ''::bytea \
         WHEN get_byte(attestation_bytes, 0) = 1 THEN substring(attestation_bytes \
             FROM 2 FOR position('\\x00'::bytea IN attestation_bytes) - 2) \
         ELSE substring(attestation_bytes \
             FROM 1 FOR position('\\x2e'::bytea IN attestation_bytes) - 1) END";
    const SNAPSHOT: Option<&'static str> =
        Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    const UNBOUNDED: Option<&'static str> = Some(UNBOUNDED_STATEMENTS);
    const BOUNDED: Option<&'static str> = Some("SELECT set_config('statement_timeout', $1, true)");

    fn is_unavailable(error: &sqlx::Error) -> bool {
        crate::infra::sql::is_unavailable(error)
    }

    fn append<'a>(
        store: &'a SqlAudit<Self>,
        entries: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<Head, AuditError>> {
        Box::pin(store.append_expecting(entries))
    }

    fn make_room(store: &SqlAudit<Self>, through: i64) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(store.ensure_partitions(through))
    }

    fn prune<'a>(
        store: &'a SqlAudit<Self>,
        before_us: i64,
        force: bool,
        sign_cut: SignCut<'a>,
    ) -> BoxFuture<'a, Result<PruneOutcome, AuditError>> {
        Box::pin(store.prune_partitions(before_us, force, sign_cut))
    }

    fn run_migrations<'a>(
        migrator: &'a Migrator,
        pool: &'a Pool<Self>,
    ) -> BoxFuture<'a, Result<(), sqlx::migrate::MigrateError>> {
        Box::pin(migrator.run(pool))
    }
}

impl Dialect for Sqlite {
    const MIGRATIONS: Migrations = SQLITE_MIGRATIONS;
    // One chain; a write takes the database's write lock at once (a read
    // first could not be upgraded while another connection writes).
    const LOCK_FREE_CHAIN: &'static str =
        "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING id, seq, hash";
    const LOCK_CHAIN: &'static str =
        "UPDATE audit_head SET seq = seq WHERE id = $1 RETURNING id, seq, hash";
    const NEXT_SEQS: Option<&'static str> = None;
    const MAX_CHAINS: ChainId = 1;
    // A file the process opened for writing.
    const WRITABLE: &'static str = "SELECT 1 = 1";
    // Any write takes SQLite's one write lock.
    const LOCK_CHECKPOINTS: &'static str = "UPDATE audit_head SET seq = seq WHERE id = 1";
    const TOKEN_HEADER: &'static str = "CASE \
         WHEN attestation_bytes IS NULL THEN substr(attestation, 1, instr(attestation, '.') - 1) \
         WHEN substr(attestation_bytes, 1, 1) = x'01' \
         THEN substr(attestation_bytes, 2, instr(attestation_bytes, x'00') - 2) \
         ELSE substr(attestation_bytes, 1, instr(attestation_bytes, '.') - 1) END";
    // A read transaction in WAL mode sees one snapshot from its first read.
    const SNAPSHOT: Option<&'static str> = None;
    const UNBOUNDED: Option<&'static str> = None;
    // A write waits at most the pool's busy timeout for SQLite's lock.
    const BOUNDED: Option<&'static str> = None;

    fn append<'a>(
        store: &'a SqlAudit<Self>,
        entries: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<Head, AuditError>> {
        Box::pin(async move { Ok(store.append_rows(entries).await?.1) })
    }

    fn make_room(_: &SqlAudit<Self>, _: i64) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async { Ok(()) })
    }

    fn prune<'a>(
        store: &'a SqlAudit<Self>,
        before_us: i64,
        force: bool,
        sign_cut: SignCut<'a>,
    ) -> BoxFuture<'a, Result<PruneOutcome, AuditError>> {
        Box::pin(store.prune_rows(before_us, force, sign_cut))
    }

    fn is_unavailable(error: &sqlx::Error) -> bool {
        sqlite_is_unavailable(error)
    }

    fn run_migrations<'a>(
        migrator: &'a Migrator,
        pool: &'a Pool<Self>,
    ) -> BoxFuture<'a, Result<(), sqlx::migrate::MigrateError>> {
        Box::pin(migrator.run(pool))
    }
}

/// The audit trail in a SQL database.
#[derive(Debug, Clone)]
pub struct SqlAudit<DB: Database> {
    /// Reads: retries' first answers, histories, verification.
    pool: Pool<DB>,
    /// Appends and checkpoints, apart from the reads, so that a group
    /// commit never queues behind them.
    writes: Pool<DB>,
    /// The chain this store last appended to, and its head after that
    /// append (Postgres): the next append expects it, and so needs no lock
    /// (see `append_expecting`).
    last_head: Arc<std::sync::Mutex<Option<(ChainId, Head)>>>,
    /// The newest row number this store has seen (Postgres): partitions
    /// are made ahead of it.
    newest_seq: Arc<std::sync::atomic::AtomicI64>,
    /// The chains this store makes sure the trail has.
    chains: ChainId,
    /// Retries' first answers, gathered into shared queries (Postgres).
    first_requests: Option<Arc<ReadBatcher<FirstRequests>>>,
    /// The partitions of the rows, created ahead of the head (Postgres).
    partitions: Arc<partitions::Partitions>,
}

impl SqlAudit<Postgres> {
    /// Connects on first use, so that a server starts while Postgres is
    /// down and answers UNAVAILABLE until it is back.
    pub fn connect_lazy(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, AuditError> {
        Self::connect_with(url, &PoolSettings::new(max_connections, acquire_timeout))
    }

    /// [`SqlAudit::connect_lazy`] with every pool setting (appends get
    /// their own two connections).
    pub fn connect_with(url: &str, settings: &PoolSettings) -> Result<Self, AuditError> {
        let pool = |max_connections| {
            lazy_pool(
                url,
                &PoolSettings {
                    max_connections,
                    ..*settings
                },
            )
            .map_err(|e| AuditError::Query(Box::new(e)))
        };
        let reads = pool(settings.max_connections)?;
        Ok(Self {
            first_requests: Some(Arc::new(ReadBatcher::new(
                FirstRequests {
                    pool: reads.clone(),
                },
                read_batch::MAX_KEYS,
                read_batch::SLOTS,
            ))),
            pool: reads,
            writes: pool(WRITE_CONNECTIONS)?,
            last_head: Arc::default(),
            newest_seq: Arc::default(),
            chains: DEFAULT_CHAINS,
            partitions: Arc::new(partitions::Partitions::new(partitions::DEFAULT_ROWS)),
        })
    }

    /// How many chains the trail has (at least; `migrate` adds those
    /// missing): instances sharing the trail append to different ones.
    #[must_use]
    pub fn with_chains(mut self, chains: ChainId) -> Self {
        self.chains = chains.clamp(1, <Postgres as Dialect>::MAX_CHAINS);
        self
    }

    /// Rows per partition of the trail: the partitions this store creates
    /// ahead of the head take this many rows each.
    #[must_use]
    pub fn with_partition_rows(mut self, rows: i64) -> Self {
        self.partitions = Arc::new(partitions::Partitions::new(rows));
        self
    }
}

impl SqlAudit<Sqlite> {
    /// Opens (creating if missing) the embedded audit database. `FULL`
    /// synchronous mode: a row is on disk when its COMMIT returns.
    pub async fn open(path: &Path) -> Result<Self, AuditError> {
        let options = sqlite_file(path, SqliteSynchronous::Full);
        let pool = |max| {
            SqlitePoolOptions::new()
                .max_connections(max)
                .connect_with(options.clone())
        };
        let unavailable = |e| AuditError::Unavailable(Box::new(e));
        Ok(Self {
            pool: pool(4).await.map_err(unavailable)?,
            writes: pool(WRITE_CONNECTIONS).await.map_err(unavailable)?,
            last_head: Arc::default(),
            newest_seq: Arc::default(),
            chains: 1,
            first_requests: None,
            partitions: Arc::new(partitions::Partitions::new(0)),
        })
    }
}

impl<DB: Database> SqlAudit<DB> {
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Queries sent for retries' first answers (Postgres): fewer than
    /// retries when they were gathered.
    pub fn first_request_queries(&self) -> u64 {
        self.first_requests.as_ref().map_or(0, |g| g.queries())
    }
}

/// The first check an agency made under a `request_id`.
/// Up to `$3` rows after row `$1` and up to row `$2`, in order.
static ROWS_AFTER: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3")
});

static FIRST_REQUEST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS} FROM audit_log WHERE seq = \
         (SELECT seq FROM audit_request WHERE agency = $1 AND request_id = $2)"
    )
});

/// `FIRST_REQUEST` for several (agency, request_id) pairs at once: a row
/// for each pair that has one, with the pair's place (from 1) last.
static FIRST_REQUESTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT a.*, q.n FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q(agency, request_id, n) \
         JOIN audit_request r ON r.agency = q.agency AND r.request_id = q.request_id \
         CROSS JOIN LATERAL (SELECT {COLUMNS} FROM audit_log WHERE seq = r.seq) a"
    )
});

/// Retries' first answers in Postgres, one or several in one query.
struct FirstRequests {
    pool: Pool<Postgres>,
}

impl ReadMany for FirstRequests {
    /// The agency and the `request_id`.
    type Key = (String, String);
    type Value = Option<AuditRecord>;
    type Error = AuditError;

    fn read_many<'a>(
        &'a self,
        keys: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<Option<AuditRecord>>, AuditError>> {
        Box::pin(async move {
            if let [(agency, request_id)] = keys {
                return Ok(vec![
                    SqlAudit::<Postgres>::first_request_alone(&self.pool, agency, request_id)
                        .await?,
                ]);
            }
            let (agencies, request_ids): (Vec<&str>, Vec<&str>) =
                keys.iter().map(|(a, r)| (a.as_str(), r.as_str())).unzip();
            let rows = sqlx::query(AssertSqlSafe(FIRST_REQUESTS.as_str()))
                .bind(agencies)
                .bind(request_ids)
                .fetch_all(&self.pool)
                .await
                .map_err(audit_error::<Postgres>)?;
            let mut firsts: Vec<Option<AuditRecord>> = keys.iter().map(|_| None).collect();
            for row in &rows {
                let n: i64 = row
                    .try_get(COLUMN_COUNT)
                    .map_err(|e| AuditError::Corrupt(e.to_string()))?;
                let first = usize::try_from(n - 1)
                    .ok()
                    .and_then(|i| firsts.get_mut(i))
                    .ok_or_else(|| AuditError::Corrupt(format!("an answer for request {n}")))?;
                *first = Some(SqlAudit::<Postgres>::record(row)?);
            }
            Ok(firsts)
        })
    }

    fn for_each_read(error: &AuditError) -> AuditError {
        // The cause, once for the query; each read gets its kind.
        tracing::warn!(%error, "reading retries' first answers failed");
        error.for_each_waiter()
    }

    fn miscounted(keys: usize, values: usize) -> AuditError {
        AuditError::Corrupt(format!("{values} answers for {keys} requests"))
    }
}

fn audit_error<DB: Dialect>(error: sqlx::Error) -> AuditError {
    if let sqlx::Error::Database(e) = &error
        && e.is_unique_violation()
    {
        return AuditError::Duplicate;
    }
    if DB::is_unavailable(&error) {
        AuditError::Unavailable(Box::new(error))
    } else {
        AuditError::Query(Box::new(error))
    }
}

fn hash(bytes: Vec<u8>, what: &str) -> Result<Hash, AuditError> {
    Hash::try_from(bytes).map_err(|_| AuditError::Corrupt(format!("{what} is not 32 bytes")))
}

impl<DB> SqlAudit<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> i16: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'r> i16: Decode<'r, DB>,
    for<'r> i32: Decode<'r, DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB>,
    for<'r> Option<i64>: Decode<'r, DB>,
    for<'r> bool: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn first_request_alone(
        pool: &Pool<DB>,
        agency: &str,
        request_id: &str,
    ) -> Result<Option<AuditRecord>, AuditError> {
        sqlx::query(AssertSqlSafe(FIRST_REQUEST.as_str()))
            .bind(agency)
            .bind(request_id)
            .fetch_optional(pool)
            .await
            .map_err(audit_error::<DB>)?
            .as_ref()
            .map(Self::record)
            .transpose()
    }

    /// A row of `SELECT seq, token FROM audit_checkpoint`.
    fn checkpoint(row: &DB::Row) -> Result<StoredCheckpoint, AuditError> {
        let corrupt = |e: sqlx::Error| AuditError::Corrupt(e.to_string());
        Ok(StoredCheckpoint {
            seq: row.try_get(0).map_err(corrupt)?,
            token: row.try_get(1).map_err(corrupt)?,
        })
    }

    fn record(row: &DB::Row) -> Result<AuditRecord, AuditError> {
        let corrupt = |e: sqlx::Error| AuditError::Corrupt(e.to_string());
        let text = |i: usize| row.try_get::<String, _>(i).map_err(corrupt);
        let seq: i64 = row.try_get(0).map_err(corrupt)?;
        let (kind, door) = parse_stored_kind(&text(2)?)
            .ok_or_else(|| AuditError::Corrupt(format!("row {seq} has an unknown kind")))?;
        let entry = AuditEntry {
            at_us: row.try_get(1).map_err(corrupt)?,
            kind,
            door,
            agency: text(3)?,
            purpose: text(4)?,
            request_id: text(5)?,
            subject: text(6)?,
            subject_index: text(7)?,
            verdict: text(8)?,
            reason: text(9)?,
            attestation_id: text(10)?,
            attestation: match row.try_get::<Option<Vec<u8>>, _>(11).map_err(corrupt)? {
                Some(kept) => packed::unpack(&kept).ok_or_else(|| {
                    AuditError::Corrupt(format!("row {seq} keeps no readable attestation"))
                })?,
                None => text(15)?,
            },
            request_digest: text(12)?,
        };
        Ok(AuditRecord {
            seq,
            chain: row.try_get(16).map_err(corrupt)?,
            entry,
            prev_hash: hash(row.try_get(13).map_err(corrupt)?, "prev_hash")?,
            row_hash: hash(row.try_get(14).map_err(corrupt)?, "row_hash")?,
        })
    }

    fn head_of(row: &DB::Row) -> Result<Head, AuditError> {
        let corrupt = |e: sqlx::Error| AuditError::Corrupt(e.to_string());
        Ok(Head {
            seq: row.try_get(0).map_err(corrupt)?,
            hash: hash(row.try_get(1).map_err(corrupt)?, "the head's hash")?,
        })
    }

    /// A row of `SELECT id, seq, hash FROM audit_head`.
    fn chain_head_of(row: &DB::Row) -> Result<(ChainId, Head), AuditError> {
        let corrupt = |e: sqlx::Error| AuditError::Corrupt(e.to_string());
        let chain: i32 = row.try_get(0).map_err(corrupt)?;
        let chain = ChainId::try_from(chain)
            .map_err(|_| AuditError::Corrupt(format!("audit_head holds chain {chain}")))?;
        Ok((
            chain,
            Head {
                seq: row.try_get(1).map_err(corrupt)?,
                hash: hash(row.try_get(2).map_err(corrupt)?, "the head's hash")?,
            },
        ))
    }

    /// Each chain's newest row at or before row `seq`: kept, or where the
    /// newest cut up to `seq` left the chain.
    async fn heads_before(
        tx: &mut sqlx::Transaction<'_, DB>,
        seq: i64,
    ) -> Result<Heads, AuditError> {
        let chains = Self::read_heads(&mut **tx).await?;
        let cut = sqlx::query(
            "SELECT seq, token FROM audit_checkpoint WHERE cut AND seq <= $1 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(seq)
        .fetch_optional(&mut **tx)
        .await
        .map_err(audit_error::<DB>)?;
        let cut = match cut {
            Some(row) => {
                let StoredCheckpoint { seq, token } = Self::checkpoint(&row)?;
                CheckpointClaims::unverified_heads(&token).ok_or_else(|| {
                    AuditError::Corrupt(format!("the checkpoint at row {seq} cannot be read"))
                })?
            }
            None => Heads::default(),
        };
        let mut heads = Vec::new();
        for (chain, head) in chains.iter() {
            if head.seq <= seq {
                heads.push((chain, head));
                continue;
            }
            let row = sqlx::query(CHAIN_HEAD_AT)
                .bind(chain)
                .bind(seq)
                .fetch_optional(&mut **tx)
                .await
                .map_err(audit_error::<DB>)?;
            if let Some(row) = row {
                heads.push((chain, Self::head_of(&row)?));
            } else if let Some(cut) = cut.get(chain) {
                heads.push((chain, cut));
            }
        }
        Ok(Heads::new(heads))
    }

    /// Every chain's head, as `executor` sees them.
    async fn read_heads<'e, E>(executor: E) -> Result<Heads, AuditError>
    where
        E: Executor<'e, Database = DB>,
    {
        let rows = sqlx::query(HEADS)
            .fetch_all(executor)
            .await
            .map_err(audit_error::<DB>)?;
        Ok(Heads::new(
            rows.iter()
                .map(Self::chain_head_of)
                .collect::<Result<Vec<_>, _>>()?,
        ))
    }
}

impl<DB> AuditStore for SqlAudit<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> i16: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'r> i16: Decode<'r, DB>,
    for<'r> i32: Decode<'r, DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB>,
    for<'r> Option<i64>: Decode<'r, DB>,
    for<'r> bool: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn migrate(&self) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async move {
            let mut migrator = Migrator::new(Embedded(DB::MIGRATIONS))
                .await
                .map_err(|e| AuditError::Query(Box::new(e)))?;
            migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
            DB::run_migrations(&migrator, &self.pool)
                .await
                .map_err(|e| match e {
                    sqlx::migrate::MigrateError::Execute(e) => audit_error::<DB>(e),
                    other => AuditError::Query(Box::new(other)),
                })?;
            // The chains configured, each empty until a writer takes it.
            for chain in 2..=self.chains.min(DB::MAX_CHAINS) {
                sqlx::query(
                    "INSERT INTO audit_head (id, seq, hash) VALUES ($1, 0, $2) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(i32::from(chain))
                .bind(GENESIS.to_vec())
                .execute(&self.pool)
                .await
                .map_err(audit_error::<DB>)?;
            }
            Ok(())
        })
    }

    fn append<'a>(&'a self, entries: &'a [AuditEntry]) -> BoxFuture<'a, Result<Head, AuditError>> {
        DB::append(self, entries)
    }

    fn add_checkpoint<'a>(
        &'a self,
        at_us: i64,
        sign: SignCheckpoint<'a>,
        within: Duration,
    ) -> BoxFuture<'a, Result<Option<(Head, String)>, AuditError>> {
        Box::pin(async move {
            let mut tx = self.writes.begin().await.map_err(audit_error::<DB>)?;
            if let Some(bounded) = DB::BOUNDED {
                let millis = within.as_millis().max(1).to_string();
                sqlx::query(bounded)
                    .bind(millis.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(audit_error::<DB>)?;
            }
            sqlx::query(DB::LOCK_CHECKPOINTS)
                .execute(&mut *tx)
                .await
                .map_err(audit_error::<DB>)?;
            // One statement: the chains' heads as of one moment.
            let heads = Self::read_heads(&mut *tx).await?;
            let head = heads.identity();
            if head.seq == 0 {
                return Ok(None);
            }
            let newest =
                sqlx::query("SELECT seq, token FROM audit_checkpoint ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(audit_error::<DB>)?;
            let prev = match newest {
                None => None,
                Some(row) => {
                    let StoredCheckpoint { seq, token } = Self::checkpoint(&row)?;
                    if seq >= head.seq {
                        return Ok(None);
                    }
                    Some(CheckpointClaims::unverified_head(&token).ok_or_else(|| {
                        AuditError::Corrupt(format!("the checkpoint at row {seq} cannot be read"))
                    })?)
                }
            };
            let token = sign(&heads, prev.as_ref())?;
            sqlx::query(
                "INSERT INTO audit_checkpoint (seq, at_us, cut, token) VALUES ($1, $2, $3, $4)",
            )
            .bind(head.seq)
            .bind(at_us)
            .bind(false)
            .bind(token.as_str())
            .execute(&mut *tx)
            .await
            .map_err(audit_error::<DB>)?;
            tx.commit().await.map_err(audit_error::<DB>)?;
            Ok(Some((head, token)))
        })
    }

    fn history<'a>(
        &'a self,
        subject_index: &'a str,
        before: Option<i64>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, AuditError>> {
        Box::pin(async move {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM audit_log WHERE subject_index = $1 AND seq < $2 \
                 ORDER BY seq DESC LIMIT $3"
            )))
            .bind(subject_index)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(audit_error::<DB>)?
            .iter()
            .map(Self::record)
            .collect()
        })
    }

    fn first_request<'a>(
        &'a self,
        agency: &'a str,
        request_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<AuditRecord>, AuditError>> {
        Box::pin(async move {
            match &self.first_requests {
                Some(gathered) => {
                    gathered
                        .read((agency.to_owned(), request_id.to_owned()))
                        .await
                }
                None => Self::first_request_alone(&self.pool, agency, request_id).await,
            }
        })
    }

    fn heads(&self) -> BoxFuture<'_, Result<Heads, AuditError>> {
        Box::pin(Self::read_heads(&self.pool))
    }

    fn writable(&self) -> BoxFuture<'_, Result<bool, AuditError>> {
        Box::pin(async move {
            sqlx::query(DB::WRITABLE)
                .fetch_one(&self.pool)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(audit_error::<DB>)
        })
    }

    fn heads_at(&self, seq: i64) -> BoxFuture<'_, Result<Heads, AuditError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(audit_error::<DB>)?;
            let heads = Self::heads_before(&mut tx, seq).await?;
            tx.rollback().await.map_err(audit_error::<DB>)?;
            Ok(heads)
        })
    }

    fn checks_since<'a>(
        &'a self,
        agency: &'a str,
        since_us: i64,
    ) -> BoxFuture<'a, Result<u64, AuditError>> {
        Box::pin(async move {
            let count: i64 = sqlx::query(
                "SELECT count(*) FROM audit_log WHERE agency = $1 AND at_us >= $2 \
                 AND kind <> 'access_history'",
            )
            .bind(agency)
            .bind(since_us)
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(audit_error::<DB>)?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    fn verify_witnessed<'a>(
        &'a self,
        keys: TrailKeys<'a>,
        witnessed: &'a [StoredCheckpoint],
        expected: &'a [Head],
    ) -> BoxFuture<'a, Result<Verification, AuditError>> {
        Box::pin(self.walk(keys, witnessed, expected))
    }

    fn prune<'a>(
        &'a self,
        before_us: i64,
        force: bool,
        sign_cut: SignCut<'a>,
    ) -> BoxFuture<'a, Result<PruneOutcome, AuditError>> {
        DB::prune(self, before_us, force, sign_cut)
    }

    fn rows<'a>(
        &'a self,
        after: i64,
        through: i64,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, AuditError>> {
        Box::pin(async move {
            sqlx::query(AssertSqlSafe(ROWS_AFTER.as_str()))
                .bind(after)
                .bind(through)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(audit_error::<DB>)?
                .iter()
                .map(Self::record)
                .collect()
        })
    }

    fn checkpoints<'a>(
        &'a self,
        from: i64,
        to: i64,
    ) -> BoxFuture<'a, Result<Vec<StoredCheckpoint>, AuditError>> {
        Box::pin(async move {
            sqlx::query(
                "SELECT seq, token FROM audit_checkpoint WHERE seq >= $1 AND seq <= $2 \
                 ORDER BY seq",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await
            .map_err(audit_error::<DB>)?
            .iter()
            .map(Self::checkpoint)
            .collect()
        })
    }

    fn key_uses(&self) -> BoxFuture<'_, Result<Vec<KeyUse>, AuditError>> {
        Box::pin(async move {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT {header} AS header, min(at_us), max(at_us), count(*) FROM audit_log \
                 WHERE kind <> 'access_history' GROUP BY header ORDER BY min(at_us)",
                header = DB::TOKEN_HEADER
            )))
            .fetch_all(&self.pool)
            .await
            .map_err(audit_error::<DB>)?;
            let corrupt = |e: sqlx::Error| AuditError::Corrupt(e.to_string());
            // One header may be kept in both forms (text before packing).
            let mut uses: Vec<KeyUse> = Vec::with_capacity(rows.len());
            for row in &rows {
                let kept: Vec<u8> = row.try_get(0).map_err(corrupt)?;
                let header = packed::header_json(&kept).unwrap_or(kept);
                let (first_us, last_us, count): (i64, i64, i64) = (
                    row.try_get(1).map_err(corrupt)?,
                    row.try_get(2).map_err(corrupt)?,
                    row.try_get(3).map_err(corrupt)?,
                );
                match uses.iter_mut().find(|u| u.header == header) {
                    Some(u) => {
                        u.first_us = u.first_us.min(first_us);
                        u.last_us = u.last_us.max(last_us);
                        u.rows += count;
                    }
                    None => uses.push(KeyUse {
                        header,
                        first_us,
                        last_us,
                        rows: count,
                    }),
                }
            }
            Ok(uses)
        })
    }

    fn record_export<'a>(
        &'a self,
        from: i64,
        to: i64,
        at_us: i64,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO audit_export (from_seq, to_seq, at_us, sha256) VALUES ($1, $2, $3, $4)",
            )
            .bind(from)
            .bind(to)
            .bind(at_us)
            .bind(sha256)
            .execute(&self.writes)
            .await
            .map_err(audit_error::<DB>)?;
            Ok(())
        })
    }
}
