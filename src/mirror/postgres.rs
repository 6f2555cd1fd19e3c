//! The mirror in Postgres: what differs from SQLite (binary COPY into the
//! staging table, point reads batched on warm connections, an advisory
//! lock for one import at a time); the rest is `store`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Pool, Postgres, Row, Transaction};
use tokio::sync::mpsc;

use super::row::StoredPerson;
use super::store::{Dialect, SqlMirror, Staging, store_error};
use super::{Duplicate, Found, LoadEnd, LoadError, LoadItem, LoadMode, StoreError, migrate};
use crate::domain::PersonalIdNumber;
use crate::infra::BoxFuture;
use crate::infra::read_batch::{self, Gathered, ReadBatcher, ReadMany};
use crate::infra::sql::{
    Migrations, PING_AFTER_IDLE, PoolSettings, UNBOUNDED_STATEMENTS, is_unavailable, lazy_pool,
};

/// The mirror in Postgres.
pub type PgMirror = SqlMirror<Postgres>;

/// Connections kept between the mirror's reads. sqlx pings every
/// connection that goes back to its pool: a round trip per query that a
/// kept connection does not make.
struct WarmConnections {
    pool: PgPool,
    /// Most recently used last, each with when it was put back.
    idle: std::sync::Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
    /// WarmConnections at most: fewer than the pool holds, so that its other users
    /// (the generation poll, imports) are never starved by idle ones.
    max: usize,
}

impl WarmConnections {
    fn new(pool: PgPool, max_connections: u32, max: usize) -> Self {
        let half = usize::try_from(max_connections / 2).unwrap_or(0);
        Self {
            pool,
            idle: std::sync::Mutex::default(),
            max: max.min(half),
        }
    }

    /// A kept connection used within `PING_AFTER_IDLE`, or one from the
    /// pool (which pings those idle longer). Older kept ones go back to the
    /// pool, whose ping of each returning connection closes any that a
    /// database restart broke.
    async fn take(&self) -> Result<WarmConnection<'_>, sqlx::Error> {
        let (hot, stale) = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            match idle.pop() {
                Some((connection, since)) if since.elapsed() < PING_AFTER_IDLE => {
                    (Some(connection), Vec::new())
                }
                Some(newest) => {
                    let mut stale = std::mem::take(&mut *idle);
                    stale.push(newest);
                    (None, stale)
                }
                None => (None, Vec::new()),
            }
        };
        drop(stale);
        let connection = match hot {
            Some(connection) => connection,
            None => self.pool.acquire().await?,
        };
        Ok(WarmConnection {
            connection,
            home: self,
        })
    }
}

/// A connection taken from `WarmConnections`. `keep` puts it back after a query that
/// succeeded; dropped otherwise (an error, a cancelled read), it goes back
/// to the pool, whose ping closes it if it is broken.
struct WarmConnection<'a> {
    connection: PoolConnection<Postgres>,
    home: &'a WarmConnections,
}

impl WarmConnection<'_> {
    fn keep(self) {
        let Self { connection, home } = self;
        let mut idle = home.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < home.max {
            idle.push((connection, Instant::now()));
        }
    }
}

const LOOKUP: &str = "\
SELECT c.full_name, c.birth_year, c.birth_month, c.birth_day, c.gender, c.old_id_numbers,
       c.status, c.record_version, m.generation,
       extract(epoch FROM m.data_as_of)::bigint AS data_as_of
FROM mirror_state m LEFT JOIN citizen c ON c.id_number = $1";

/// `LOOKUP` for several numbers at once, one row each, in their order.
const LOOKUP_MANY: &str = "\
SELECT c.full_name, c.birth_year, c.birth_month, c.birth_day, c.gender, c.old_id_numbers,
       c.status, c.record_version, m.generation,
       extract(epoch FROM m.data_as_of)::bigint AS data_as_of
FROM mirror_state m
CROSS JOIN unnest($1::text[]) WITH ORDINALITY AS i(id, n)
LEFT JOIN citizen c ON c.id_number = i.id COLLATE \"C\"
ORDER BY i.n";

/// The columns a load stages, in COPY order.
const COLUMNS: &str = "id_number, full_name, birth_year, birth_month, birth_day, gender, \
    old_id_numbers, place_of_origin, permanent_residence, status, household_id, \
    relation_to_head, updated_at";

/// The staging table of a full load has no CHECK constraints while rows
/// stream in (the importer validated every row, and checking again costs
/// a fifth of the COPY); `ADOPT_CHECKS` gives it the mirror's constraints,
/// enforced for every later write, before it is swapped in.
/// (LIKE does not carry the id's "C" collation of migration 3: it is set
/// again, on the empty table.)
const STAGE_FULL: &str = "\
DROP TABLE IF EXISTS citizen_next;
CREATE TABLE citizen_next (LIKE citizen INCLUDING DEFAULTS,
                           src_file integer NOT NULL, src_line bigint NOT NULL);
ALTER TABLE citizen_next ALTER COLUMN id_number TYPE text COLLATE \"C\"";

const ADOPT_CHECKS: &str = "\
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
             WHERE conrelid = 'citizen'::regclass AND contype = 'c'
    LOOP
        EXECUTE format('ALTER TABLE citizen_next ADD CONSTRAINT %I %s NOT VALID', c.conname, c.def);
    END LOOP;
END $$";

const STAGE_DELTA: &str = "\
CREATE TEMP TABLE citizen_delta (LIKE citizen INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
                                 src_file integer NOT NULL, src_line bigint NOT NULL)
    ON COMMIT DROP";

/// No ANALYZE: point lookups by primary key need no statistics, and
/// autovacuum gathers them soon after.
const SWAP: &str = "\
ALTER TABLE citizen_next DROP COLUMN src_file, DROP COLUMN src_line;
DROP TABLE citizen;
ALTER TABLE citizen_next RENAME TO citizen;
ALTER INDEX citizen_next_pkey RENAME TO citizen_pkey";

/// Applies a staged delta: new records are added, changed ones updated
/// with their version bumped, unchanged ones left alone.
const APPLY_DELTA: &str = "\
INSERT INTO citizen (id_number, full_name, birth_year, birth_month, birth_day, gender,
                     old_id_numbers, place_of_origin, permanent_residence, status,
                     household_id, relation_to_head, updated_at)
SELECT id_number, full_name, birth_year, birth_month, birth_day, gender, old_id_numbers,
       place_of_origin, permanent_residence, status, household_id, relation_to_head, updated_at
FROM citizen_delta
ON CONFLICT (id_number) DO UPDATE SET
    full_name = EXCLUDED.full_name, birth_year = EXCLUDED.birth_year,
    birth_month = EXCLUDED.birth_month, birth_day = EXCLUDED.birth_day,
    gender = EXCLUDED.gender, old_id_numbers = EXCLUDED.old_id_numbers,
    place_of_origin = EXCLUDED.place_of_origin,
    permanent_residence = EXCLUDED.permanent_residence, status = EXCLUDED.status,
    household_id = EXCLUDED.household_id, relation_to_head = EXCLUDED.relation_to_head,
    updated_at = EXCLUDED.updated_at, record_version = citizen.record_version + 1
WHERE (citizen.full_name, citizen.birth_year, citizen.birth_month, citizen.birth_day,
       citizen.gender, citizen.old_id_numbers, citizen.place_of_origin,
       citizen.permanent_residence, citizen.status, citizen.household_id,
       citizen.relation_to_head)
  IS DISTINCT FROM
      (EXCLUDED.full_name, EXCLUDED.birth_year, EXCLUDED.birth_month, EXCLUDED.birth_day,
       EXCLUDED.gender, EXCLUDED.old_id_numbers, EXCLUDED.place_of_origin,
       EXCLUDED.permanent_residence, EXCLUDED.status, EXCLUDED.household_id,
       EXCLUDED.relation_to_head)";

/// The later rows of each repeated ID number, with the row kept for it.
const DUPLICATES: &str = "\
SELECT id_number, full_name, birth_year, birth_month, birth_day, gender, old_id_numbers,
       place_of_origin, permanent_residence, status, household_id, relation_to_head,
       extract(epoch FROM updated_at)::bigint AS updated_at,
       src_file::bigint AS src_file, src_line, kept_file::bigint AS kept_file, kept_line
FROM (SELECT s.*,
             row_number() OVER w AS rn,
             first_value(src_file) OVER w AS kept_file,
             first_value(src_line) OVER w AS kept_line
      FROM {staging} s
      WHERE id_number IN (SELECT id_number FROM {staging} GROUP BY id_number HAVING count(*) > 1)
      WINDOW w AS (PARTITION BY id_number ORDER BY src_file, src_line)) d
WHERE rn > 1
ORDER BY src_file, src_line";

/// An advisory lock key: one import at a time per database.
const IMPORT_LOCK: i64 = 0x766e_6964_696d;

impl SqlMirror<Postgres> {
    /// A pool that connects lazily: the server starts, and reports
    /// UNAVAILABLE per call, while the database is down.
    pub fn connect_lazy(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        Self::connect_with(url, &PoolSettings::new(max_connections, acquire_timeout))
    }

    /// [`PgMirror::connect_lazy`] with every pool setting.
    pub fn connect_with(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        let max_connections = settings.max_connections;
        let pool = lazy_pool(url, settings).map_err(|e| StoreError::Query(Box::new(e)))?;
        Ok(Self {
            reads: Arc::new(ReadBatcher::new(
                PointReads {
                    connections: WarmConnections::new(
                        pool.clone(),
                        max_connections,
                        read_batch::SLOTS,
                    ),
                },
                read_batch::MAX_KEYS,
                read_batch::SLOTS,
            )),
            pool,
        })
    }

    /// Point-read queries sent so far: fewer than lookups when they are
    /// gathered.
    pub fn lookup_queries(&self) -> u64 {
        self.reads.queries()
    }
}

/// The header of binary COPY: signature, flags, no extension.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The trailer of binary COPY.
const BINARY_TRAILER: &[u8] = &[0xff, 0xff];
/// The OID of `text`, the element type of `old_id_numbers`.
const TEXT_OID: i32 = 25;
/// Seconds from the Unix epoch to Postgres's (2000-01-01).
const PG_EPOCH: i64 = 946_684_800;

/// Writes one row in binary COPY format: Postgres then parses no text at
/// all (binary COPY of typed columns beats text COPY by a wide margin).
fn encode(buf: &mut Vec<u8>, r: &super::SourcedRecord) {
    fn len(buf: &mut Vec<u8>, n: usize) {
        buf.extend_from_slice(&i32::try_from(n).unwrap_or(i32::MAX).to_be_bytes());
    }
    fn text(buf: &mut Vec<u8>, s: &str) {
        len(buf, s.len());
        buf.extend_from_slice(s.as_bytes());
    }
    fn small(buf: &mut Vec<u8>, n: Option<i16>) {
        match n {
            Some(n) => {
                len(buf, 2);
                buf.extend_from_slice(&n.to_be_bytes());
            }
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    let (rec, origin) = (&r.record, r.origin);
    let dob = rec.date_of_birth;
    buf.extend_from_slice(&15i16.to_be_bytes());
    text(buf, rec.id_number.expose());
    text(buf, &rec.full_name);
    small(buf, i16::try_from(dob.year()).ok());
    small(buf, dob.month().map(i16::from));
    small(buf, dob.day().map(i16::from));
    text(buf, rec.gender.as_str());
    // text[]: dimensions, flags, element type, [size, lower bound], elements.
    let olds = &rec.old_id_numbers;
    let dims = usize::from(!olds.is_empty());
    len(buf, 12 + dims * 8 + olds.len() * (4 + 9));
    for word in [dims as i32, 0, TEXT_OID] {
        buf.extend_from_slice(&word.to_be_bytes());
    }
    if dims == 1 {
        len(buf, olds.len());
        buf.extend_from_slice(&1i32.to_be_bytes());
        for old in olds {
            text(buf, old.expose());
        }
    }
    text(buf, &rec.place_of_origin);
    text(buf, &rec.permanent_residence);
    text(buf, rec.status.as_str());
    text(buf, &rec.household_id);
    text(buf, &rec.relation_to_head);
    len(buf, 8);
    let micros = rec
        .updated_at
        .saturating_sub(PG_EPOCH)
        .saturating_mul(1_000_000);
    buf.extend_from_slice(&micros.to_be_bytes());
    len(buf, 4);
    buf.extend_from_slice(&i32::try_from(origin.file).unwrap_or(i32::MAX).to_be_bytes());
    len(buf, 8);
    buf.extend_from_slice(&i64::try_from(origin.line).unwrap_or(i64::MAX).to_be_bytes());
}

/// The flush threshold of the COPY buffer: memory stays flat.
const COPY_CHUNK: usize = 1 << 20;

async fn stage(
    tx: &mut Transaction<'_, Postgres>,
    staging: &str,
    items: &mut mpsc::Receiver<LoadItem>,
) -> Result<(u64, LoadEnd), LoadError> {
    let statement =
        format!("COPY {staging} ({COLUMNS}, src_file, src_line) FROM STDIN (FORMAT binary)");
    let mut copy = tx
        .copy_in_raw(&statement)
        .await
        .map_err(store_error::<Postgres>)?;
    let mut buf = Vec::with_capacity(COPY_CHUNK + 4096);
    buf.extend_from_slice(BINARY_HEADER);
    let mut rows = 0u64;
    let end = loop {
        match items.recv().await.map(LoadItem::into_batch) {
            Some(Ok(batch)) => {
                for record in &batch {
                    encode(&mut buf, record);
                    if buf.len() >= COPY_CHUNK {
                        copy.send(buf.as_slice())
                            .await
                            .map_err(store_error::<Postgres>)?;
                        buf.clear();
                    }
                }
                rows += batch.len() as u64;
            }
            Some(Err(end)) => break end,
            None => {
                let _ = copy.abort("the import stopped before its end").await;
                return Err(LoadError::Incomplete);
            }
        }
    };
    buf.extend_from_slice(BINARY_TRAILER);
    copy.send(buf.as_slice())
        .await
        .map_err(store_error::<Postgres>)?;
    copy.finish().await.map_err(store_error::<Postgres>)?;
    Ok((rows, end))
}

fn person(row: &PgRow) -> Result<StoredPerson, sqlx::Error> {
    let part = |c: &str| row.try_get::<Option<i16>, _>(c).map(|v| v.map(i64::from));
    Ok(StoredPerson {
        full_name: row.try_get("full_name")?,
        birth: [
            part("birth_year")?,
            part("birth_month")?,
            part("birth_day")?,
        ],
        gender: row.try_get("gender")?,
        old_id_numbers: row.try_get("old_id_numbers")?,
        status: row.try_get("status")?,
    })
}

/// Adds the staging table's primary key; where ID numbers repeat, drops
/// the later rows if the budget allows, or fails naming them all.
async fn deduplicate(
    tx: &mut Transaction<'_, Postgres>,
    staging: &str,
    budget: u64,
) -> Result<Vec<Duplicate>, LoadError> {
    let add_key =
        format!("ALTER TABLE {staging} ADD CONSTRAINT {staging}_pkey PRIMARY KEY (id_number)");
    sqlx::raw_sql(sqlx::AssertSqlSafe("SAVEPOINT dedup"))
        .execute(&mut **tx)
        .await
        .map_err(store_error::<Postgres>)?;
    match sqlx::raw_sql(sqlx::AssertSqlSafe(add_key.clone()))
        .execute(&mut **tx)
        .await
    {
        Ok(_) => return Ok(Vec::new()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {}
        Err(e) => return Err(store_error::<Postgres>(e).into()),
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe("ROLLBACK TO SAVEPOINT dedup"))
        .execute(&mut **tx)
        .await
        .map_err(store_error::<Postgres>)?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(
        DUPLICATES.replace("{staging}", staging),
    ))
    .fetch_all(&mut **tx)
    .await
    .map_err(store_error::<Postgres>)?;
    let found = SqlMirror::<Postgres>::duplicates(&rows)?;
    if found.len() as u64 > budget {
        return Err(LoadError::Duplicates { found });
    }
    let files: Vec<i32> = found.iter().map(|d| d.dropped.file as i32).collect();
    let lines: Vec<i64> = found.iter().map(|d| d.dropped.line as i64).collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {staging} s USING unnest($1::integer[], $2::bigint[]) AS d(f, l) \
         WHERE s.src_file = d.f AND s.src_line = d.l"
    )))
    .bind(&files)
    .bind(&lines)
    .execute(&mut **tx)
    .await
    .map_err(store_error::<Postgres>)?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(add_key))
        .execute(&mut **tx)
        .await
        .map_err(store_error::<Postgres>)?;
    Ok(found)
}

/// The mirror's lookups, one number or several in one query, on kept
/// connections.
pub struct PointReads {
    connections: WarmConnections,
}

impl ReadMany for PointReads {
    type Key = PersonalIdNumber;
    type Value = Found;
    type Error = StoreError;

    fn read_many<'a>(
        &'a self,
        ids: &'a [PersonalIdNumber],
    ) -> BoxFuture<'a, Result<Vec<Found>, StoreError>> {
        Box::pin(async move {
            let mut connection = self
                .connections
                .take()
                .await
                .map_err(store_error::<Postgres>)?;
            let rows = match ids {
                [one] => vec![
                    sqlx::query(LOOKUP)
                        .bind(one.expose())
                        .fetch_one(&mut *connection.connection)
                        .await
                        .map_err(store_error::<Postgres>)?,
                ],
                _ => {
                    let numbers: Vec<&str> = ids.iter().map(PersonalIdNumber::expose).collect();
                    sqlx::query(LOOKUP_MANY)
                        .bind(numbers)
                        .fetch_all(&mut *connection.connection)
                        .await
                        .map_err(store_error::<Postgres>)?
                }
            };
            connection.keep();
            if rows.len() != ids.len() {
                return Err(Self::miscounted(ids.len(), rows.len()));
            }
            ids.iter()
                .zip(&rows)
                .map(|(id, row)| SqlMirror::<Postgres>::found(id, row))
                .collect()
        })
    }

    fn for_each_read(error: &StoreError) -> StoreError {
        error.copied()
    }

    fn miscounted(keys: usize, values: usize) -> StoreError {
        StoreError::Corrupt(format!("{values} rows for {keys} numbers"))
    }
}

impl Dialect for Postgres {
    /// Point reads, batched into shared queries.
    type Reads = Arc<ReadBatcher<PointReads>>;
    const MIGRATIONS: Migrations = migrate::POSTGRES;
    const WAS_IMPORTED: &'static str = "SELECT EXISTS (SELECT 1 FROM import_log WHERE digest = $1)";
    const LOG_IMPORT: &'static str =
        "INSERT INTO import_log (digest, mode, rows, changed) VALUES ($1, $2, $3, $4)";
    const SWAP: &'static [&'static str] = &[ADOPT_CHECKS, SWAP];
    const SWAPPED: &'static str = "UPDATE mirror_state \
        SET data_as_of = to_timestamp($1::bigint), generation = generation + 1";
    const APPLY_DELTA: &'static str = APPLY_DELTA;
    const DELTA_APPLIED: &'static str = "UPDATE mirror_state \
        SET data_as_of = greatest(data_as_of, to_timestamp($1::bigint)), \
        generation = generation + 1";
    // The staging table is dropped on commit.
    const AFTER_DELTA: &'static [&'static str] = &[];

    fn is_unavailable(error: &sqlx::Error) -> bool {
        is_unavailable(error)
    }

    fn gathered(reads: &Self::Reads) -> Option<Gathered> {
        Some(reads.sent())
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn person(row: &PgRow) -> Result<StoredPerson, sqlx::Error> {
        person(row)
    }

    fn find<'a>(
        mirror: &'a SqlMirror<Self>,
        id: &'a PersonalIdNumber,
    ) -> BoxFuture<'a, Result<Found, StoreError>> {
        Box::pin(mirror.reads.read(id.clone()))
    }

    fn begin_load(
        pool: &Pool<Self>,
        mode: LoadMode,
    ) -> BoxFuture<'_, Result<Staging<Self>, StoreError>> {
        Box::pin(async move {
            let mut tx = pool.begin().await.map_err(store_error::<Postgres>)?;
            // The primary key of a province sorts in memory rather than on disk;
            // a whole country's load may take longer than any one query of a check.
            for setting in [
                "SET LOCAL maintenance_work_mem = '512MB'",
                UNBOUNDED_STATEMENTS,
            ] {
                sqlx::raw_sql(setting)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error::<Postgres>)?;
            }
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(IMPORT_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(store_error::<Postgres>)?;
            let (staging, ddl) = match mode {
                LoadMode::Full => ("citizen_next", STAGE_FULL),
                LoadMode::Delta => ("citizen_delta", STAGE_DELTA),
            };
            sqlx::raw_sql(ddl)
                .execute(&mut *tx)
                .await
                .map_err(store_error::<Postgres>)?;
            Ok(Staging { tx, table: staging })
        })
    }

    fn stage<'a>(
        load: &'a mut Staging<Self>,
        items: &'a mut mpsc::Receiver<LoadItem>,
    ) -> BoxFuture<'a, Result<(u64, LoadEnd), LoadError>> {
        Box::pin(stage(&mut load.tx, load.table, items))
    }

    fn deduplicate(
        load: &mut Staging<Self>,
        budget: u64,
    ) -> BoxFuture<'_, Result<Vec<Duplicate>, LoadError>> {
        Box::pin(deduplicate(&mut load.tx, load.table, budget))
    }

    fn run_migrations<'a>(
        migrator: &'a Migrator,
        pool: &'a Pool<Self>,
    ) -> BoxFuture<'a, Result<(), sqlx::migrate::MigrateError>> {
        Box::pin(migrator.run(pool))
    }
}
