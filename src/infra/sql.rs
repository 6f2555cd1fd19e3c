//! SQL plumbing shared by the mirror and the audit trail: Postgres pools
//! that connect lazily and bound every session, embedded SQLite files, the
//! one reading of each database's errors as an outage, and migrations
//! embedded in the binary.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::{Migration, MigrationSource, MigrationType};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::BoxFuture;

/// A connection idle this long is pinged before it is used again; one in
/// steady use is not.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Embedded migrations: (version, description, SQL).
pub type Migrations = &'static [(i64, &'static str, &'static str)];

/// A pool that connects on first use, so that a server starts while the
/// database is down and answers UNAVAILABLE until it is back.
///
/// sqlx pings every connection it hands out by default: a round trip
/// before each query, 5.5 % of the server's CPU in a `perf record` of it
/// under `benches/batch.sh`. Here only connections idle for `PING_AFTER_IDLE`
/// are pinged: those a restarted or vanished database would have broken
/// while nobody used them. One broken in use fails its call UNAVAILABLE,
/// as it would have with the ping, and is closed.
///
/// Every session is bounded: a statement runs at most `statement_timeout`
/// and a transaction idles at most `idle_in_transaction_timeout`, so a
/// stuck query or a lost client never holds a connection or a lock
/// forever. (Imports and prunes lift the statement bound inside their own
/// transaction.)
pub fn lazy_pool(url: &str, settings: &PoolSettings) -> Result<PgPool, sqlx::Error> {
    let millis = |d: Duration| d.as_millis().to_string();
    let options = url.parse::<sqlx::postgres::PgConnectOptions>()?.options([
        ("statement_timeout", millis(settings.statement_timeout)),
        (
            "idle_in_transaction_session_timeout",
            millis(settings.idle_in_transaction_timeout),
        ),
    ]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// An embedded SQLite database file, created if missing, in WAL mode (readers
/// never wait for the writer), each connection waiting up to five seconds
/// for another's write lock; `synchronous` says when a commit is on disk.
pub fn sqlite_file(path: &Path, synchronous: SqliteSynchronous) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(Duration::from_secs(5))
}

/// Whether a SQLite error is an outage (the file or the pool is gone),
/// not a query's failure.
pub fn sqlite_is_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

/// How a Postgres pool is sized and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a query waits for a connection before it fails UNAVAILABLE.
    pub acquire_timeout: Duration,
    /// Postgres' `statement_timeout` for every session.
    pub statement_timeout: Duration,
    /// Postgres' `idle_in_transaction_session_timeout`.
    pub idle_in_transaction_timeout: Duration,
}

impl PoolSettings {
    /// `max_connections` and `acquire_timeout`, with the default session
    /// bounds (30 s a statement, 60 s idle in a transaction).
    pub fn new(max_connections: u32, acquire_timeout: Duration) -> Self {
        Self {
            max_connections,
            acquire_timeout,
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(60),
        }
    }
}

/// Lifts the session's statement bound for the rest of a transaction that
/// may rightly take long (a whole import, a prune).
pub const UNBOUNDED_STATEMENTS: &str = "SET LOCAL statement_timeout = 0";

/// Whether an error means "the database is not there right now" (retry
/// later) rather than "this query is wrong".
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Connection exceptions, admin shutdown, cannot connect now,
            // too many connections, read-only standby.
            code.starts_with("08") || code.starts_with("57P") || code == "53300" || code == "25006"
        }),
        _ => false,
    }
}

/// Migrations compiled into the binary, as a source for sqlx's migrator.
#[derive(Debug)]
pub struct Embedded(pub Migrations);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        sqlx::SqlStr::from_static(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}
