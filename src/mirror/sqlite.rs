//! The embedded mirror in SQLite: the same record and the same load
//! semantics as Postgres, for running vnid with no database server.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};
use tokio::sync::mpsc;

use super::load::{self, LoadSteps};
use super::row::{StoredDetails, StoredPerson};
use super::{
    Duplicate, ExportRecord, Found, LoadEnd, LoadError, LoadItem, LoadMode, LoadOutcome,
    MirrorAdmin, MirrorStore, RowOrigin, SourcedRecord, StoreError, migrate,
};
use crate::clock::UnixSeconds;
use crate::domain::{CitizenRecord, OldIdNumber, PersonalIdNumber};
use crate::infra::BoxFuture;

#[derive(Debug, Clone)]
pub struct SqliteMirror {
    pool: SqlitePool,
}

fn store_error(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(error)),
        other => StoreError::Query(Box::new(other)),
    }
}

const LOOKUP: &str = "\
SELECT c.full_name, c.birth_year, c.birth_month, c.birth_day, c.gender, c.old_id_numbers,
       c.status, c.record_version, m.generation, m.data_as_of
FROM mirror_state m LEFT JOIN citizen c ON c.id_number = ?1";

const COLUMNS: &str = "id_number, full_name, birth_year, birth_month, birth_day, gender, \
    old_id_numbers, place_of_origin, permanent_residence, status, household_id, \
    relation_to_head, updated_at, src_file, src_line";

const SWAP: &str = "\
DROP TABLE citizen;
ALTER TABLE citizen_next RENAME TO citizen;
CREATE UNIQUE INDEX citizen_pk ON citizen (id_number);
ANALYZE citizen";

const APPLY_DELTA: &str = "\
INSERT INTO citizen (id_number, full_name, birth_year, birth_month, birth_day, gender,
                     old_id_numbers, place_of_origin, permanent_residence, status,
                     household_id, relation_to_head, updated_at)
SELECT id_number, full_name, birth_year, birth_month, birth_day, gender, old_id_numbers,
       place_of_origin, permanent_residence, status, household_id, relation_to_head, updated_at
FROM temp.citizen_delta WHERE true
ON CONFLICT (id_number) DO UPDATE SET
    full_name = excluded.full_name, birth_year = excluded.birth_year,
    birth_month = excluded.birth_month, birth_day = excluded.birth_day,
    gender = excluded.gender, old_id_numbers = excluded.old_id_numbers,
    place_of_origin = excluded.place_of_origin,
    permanent_residence = excluded.permanent_residence, status = excluded.status,
    household_id = excluded.household_id, relation_to_head = excluded.relation_to_head,
    updated_at = excluded.updated_at, record_version = citizen.record_version + 1
WHERE citizen.full_name IS NOT excluded.full_name
   OR citizen.birth_year IS NOT excluded.birth_year
   OR citizen.birth_month IS NOT excluded.birth_month
   OR citizen.birth_day IS NOT excluded.birth_day
   OR citizen.gender IS NOT excluded.gender
   OR citizen.old_id_numbers IS NOT excluded.old_id_numbers
   OR citizen.place_of_origin IS NOT excluded.place_of_origin
   OR citizen.permanent_residence IS NOT excluded.permanent_residence
   OR citizen.status IS NOT excluded.status
   OR citizen.household_id IS NOT excluded.household_id
   OR citizen.relation_to_head IS NOT excluded.relation_to_head";

const DUPLICATES: &str = "\
SELECT rowid AS row_id, id_number, full_name, birth_year, birth_month, birth_day, gender,
       old_id_numbers, place_of_origin, permanent_residence, status, household_id,
       relation_to_head, updated_at, src_file, src_line, kept_file, kept_line
FROM (SELECT s.rowid AS rowid, s.*,
             row_number() OVER w AS rn,
             first_value(src_file) OVER w AS kept_file,
             first_value(src_line) OVER w AS kept_line
      FROM {staging} s
      WHERE id_number IN (SELECT id_number FROM {staging} GROUP BY id_number HAVING count(*) > 1)
      WINDOW w AS (PARTITION BY id_number ORDER BY src_file, src_line))
WHERE rn > 1
ORDER BY src_file, src_line";

/// Rows per multi-row INSERT (15 parameters each, well under SQLite's limit).
const ROWS_PER_INSERT: usize = 64;

impl SqliteMirror {
    /// Opens (creating if missing) the mirror database file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(store_error)?;
        Ok(Self { pool })
    }

    /// How many citizens the mirror holds.
    pub async fn count(&self) -> Result<i64, StoreError> {
        sqlx::query("SELECT count(*) FROM citizen")
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(store_error)
    }

    /// Up to `n` active citizens, for the demo identities printed at start-up.
    pub async fn sample_active(&self, n: i64) -> Result<Vec<ExportRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM citizen WHERE status = 'active' AND birth_day IS NOT NULL \
             AND birth_year BETWEEN 1960 AND 2005 ORDER BY household_id LIMIT ?1",
        )
        .bind(n)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(decode_export).collect()
    }
}

fn person(row: &SqliteRow) -> Result<StoredPerson, sqlx::Error> {
    let joined: String = row.try_get("old_id_numbers")?;
    Ok(StoredPerson {
        full_name: row.try_get("full_name")?,
        birth: [
            row.try_get("birth_year")?,
            row.try_get("birth_month")?,
            row.try_get("birth_day")?,
        ],
        gender: row.try_get("gender")?,
        old_id_numbers: joined
            .split(';')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        status: row.try_get("status")?,
    })
}

fn decode_export(row: &SqliteRow) -> Result<ExportRecord, StoreError> {
    let details = StoredDetails {
        id_number: row.try_get("id_number").map_err(store_error)?,
        place_of_origin: row.try_get("place_of_origin").map_err(store_error)?,
        permanent_residence: row.try_get("permanent_residence").map_err(store_error)?,
        household_id: row.try_get("household_id").map_err(store_error)?,
        relation_to_head: row.try_get("relation_to_head").map_err(store_error)?,
        updated_at: row.try_get("updated_at").map_err(store_error)?,
    };
    person(row).map_err(store_error)?.into_export(details)
}

/// The record of a lookup row; `None` where the LEFT JOIN found no citizen.
fn decode(id: &PersonalIdNumber, row: &SqliteRow) -> Result<Option<CitizenRecord>, StoreError> {
    let found: Option<String> = row.try_get("full_name").map_err(store_error)?;
    if found.is_none() {
        return Ok(None);
    }
    let version = row.try_get("record_version").map_err(store_error)?;
    person(row)
        .map_err(store_error)?
        .into_record(id, version)
        .map(Some)
}

async fn insert_rows(
    tx: &mut Transaction<'_, Sqlite>,
    staging: &str,
    rows: &[SourcedRecord],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let placeholders = vec!["(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"; chunk.len()].join(",");
        let sql = format!("INSERT INTO {staging} ({COLUMNS}) VALUES {placeholders}");
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for SourcedRecord { origin, record: r } in chunk {
            let old: Vec<&str> = r.old_id_numbers.iter().map(OldIdNumber::expose).collect();
            query = query
                .bind(r.id_number.expose().to_owned())
                .bind(r.full_name.clone())
                .bind(i64::from(r.date_of_birth.year()))
                .bind(r.date_of_birth.month().map(i64::from))
                .bind(r.date_of_birth.day().map(i64::from))
                .bind(r.gender.as_str())
                .bind(old.join(";"))
                .bind(r.place_of_origin.clone())
                .bind(r.permanent_residence.clone())
                .bind(r.status.as_str())
                .bind(r.household_id.clone())
                .bind(r.relation_to_head.clone())
                .bind(r.updated_at)
                .bind(i64::from(origin.file))
                .bind(origin.line as i64);
        }
        query.execute(&mut **tx).await.map_err(store_error)?;
    }
    Ok(())
}

fn origin(row: &SqliteRow, file: &str, line: &str) -> Result<RowOrigin, StoreError> {
    let file: i64 = row.try_get(file).map_err(store_error)?;
    let line: i64 = row.try_get(line).map_err(store_error)?;
    Ok(RowOrigin {
        file: file.max(0) as u32,
        line: line.max(0) as u64,
    })
}

async fn deduplicate(
    tx: &mut Transaction<'_, Sqlite>,
    staging: &str,
    budget: u64,
) -> Result<Vec<Duplicate>, LoadError> {
    let rows = sqlx::query(AssertSqlSafe(DUPLICATES.replace("{staging}", staging)))
        .fetch_all(&mut **tx)
        .await
        .map_err(store_error)?;
    let mut found = Vec::with_capacity(rows.len());
    let mut row_ids = Vec::with_capacity(rows.len());
    for row in &rows {
        row_ids.push(row.try_get::<i64, _>("row_id").map_err(store_error)?);
        found.push(Duplicate {
            dropped: origin(row, "src_file", "src_line")?,
            kept: origin(row, "kept_file", "kept_line")?,
            record: decode_export(row)?,
        });
    }
    if found.len() as u64 > budget {
        return Err(LoadError::Duplicates { found });
    }
    for row_id in row_ids {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {staging} WHERE rowid = ?1"
        )))
        .bind(row_id)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    }
    Ok(found)
}

async fn load(
    pool: &SqlitePool,
    mode: LoadMode,
    items: mpsc::Receiver<LoadItem>,
) -> Result<LoadOutcome, LoadError> {
    // IMMEDIATE: take the write lock now, so one import runs at a time.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(store_error)?;
    let staging = match mode {
        LoadMode::Full => "citizen_next",
        LoadMode::Delta => "temp.citizen_delta",
    };
    // The staging table is the mirror's own definition under another name,
    // so that what is swapped in is exactly what the migrations made.
    let definition: String = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'citizen'",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(store_error)?;
    let body = definition
        .split_once('(')
        .map(|(_, body)| body)
        .ok_or_else(|| StoreError::Corrupt("the citizen table has no definition".into()))?;
    let ddl = format!("DROP TABLE IF EXISTS {staging}; CREATE TABLE {staging} ({body}");
    sqlx::raw_sql(AssertSqlSafe(ddl))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
    load::drive(SqliteLoad { tx, staging }, mode, items).await
}

/// A load in progress: its transaction and its staging table.
struct SqliteLoad<'c> {
    tx: Transaction<'c, Sqlite>,
    staging: &'static str,
}

impl LoadSteps for SqliteLoad<'_> {
    async fn stage(
        &mut self,
        items: &mut mpsc::Receiver<LoadItem>,
    ) -> Result<(u64, LoadEnd), LoadError> {
        let mut staged = 0u64;
        loop {
            match items.recv().await {
                Some(LoadItem::Batch(batch)) => {
                    insert_rows(&mut self.tx, self.staging, &batch).await?;
                    staged += batch.len() as u64;
                }
                Some(LoadItem::End {
                    data_as_of,
                    duplicate_budget,
                    digest,
                }) => {
                    return Ok((
                        staged,
                        LoadEnd {
                            data_as_of,
                            duplicate_budget,
                            digest,
                        },
                    ));
                }
                None => return Err(LoadError::Incomplete),
            }
        }
    }

    async fn was_imported(&mut self, digest: &str) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM import_log WHERE digest = ?1)")
            .bind(digest)
            .fetch_one(&mut *self.tx)
            .await
            .map_err(store_error)
    }

    async fn deduplicate(&mut self, budget: u64) -> Result<Vec<Duplicate>, LoadError> {
        deduplicate(&mut self.tx, self.staging, budget).await
    }

    async fn swap(&mut self, data_as_of: UnixSeconds) -> Result<(), StoreError> {
        sqlx::raw_sql(SWAP)
            .execute(&mut *self.tx)
            .await
            .map_err(store_error)?;
        sqlx::query("UPDATE mirror_state SET data_as_of = ?1, generation = generation + 1")
            .bind(data_as_of)
            .execute(&mut *self.tx)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn apply_delta(&mut self, data_as_of: UnixSeconds) -> Result<u64, StoreError> {
        let applied = sqlx::query(APPLY_DELTA)
            .execute(&mut *self.tx)
            .await
            .map_err(store_error)?;
        sqlx::query(
            "UPDATE mirror_state SET data_as_of = max(coalesce(data_as_of, ?1), ?1), \
             generation = generation + 1",
        )
        .bind(data_as_of)
        .execute(&mut *self.tx)
        .await
        .map_err(store_error)?;
        sqlx::raw_sql("DROP TABLE temp.citizen_delta")
            .execute(&mut *self.tx)
            .await
            .map_err(store_error)?;
        Ok(applied.rows_affected())
    }

    async fn log_import(
        &mut self,
        digest: &str,
        mode: LoadMode,
        rows: u64,
        changed: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO import_log (digest, mode, rows, changed, finished_at) \
             VALUES (?1, ?2, ?3, ?4, unixepoch())",
        )
        .bind(digest)
        .bind(mode.as_str())
        .bind(rows as i64)
        .bind(changed as i64)
        .execute(&mut *self.tx)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(store_error)
    }
}

impl MirrorStore for SqliteMirror {
    fn find<'a>(&'a self, id: &'a PersonalIdNumber) -> BoxFuture<'a, Result<Found, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(LOOKUP)
                .bind(id.expose())
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
            Ok(Found {
                record: decode(id, &row)?,
                data_as_of: row.try_get("data_as_of").map_err(store_error)?,
                generation: row.try_get("generation").map_err(store_error)?,
            })
        })
    }

    fn generation(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(async move {
            sqlx::query_scalar("SELECT generation FROM mirror_state")
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)
        })
    }
}

impl MirrorAdmin for SqliteMirror {
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let migrator = migrate::migrator(migrate::SQLITE).await?;
            migrator
                .run(&self.pool)
                .await
                .map_err(|e| StoreError::Query(Box::new(e)))
        })
    }

    fn was_imported<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            sqlx::query("SELECT EXISTS (SELECT 1 FROM import_log WHERE digest = ?1)")
                .bind(digest)
                .fetch_one(&self.pool)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(store_error)
        })
    }

    fn load(
        &self,
        mode: LoadMode,
        items: mpsc::Receiver<LoadItem>,
    ) -> BoxFuture<'_, Result<LoadOutcome, LoadError>> {
        Box::pin(load(&self.pool, mode, items))
    }
}
