//! The embedded mirror in SQLite: the same record and the same load
//! semantics as Postgres, for running vnid with no database server. What
//! differs from Postgres is here; the rest is `store`'s.

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Pool, Row, Sqlite, Transaction};
use tokio::sync::mpsc;

use super::row::StoredPerson;
use super::store::{Dialect, SqlMirror, Staging, store_error};
use super::{
    Duplicate, ExportRecord, Found, LoadEnd, LoadError, LoadItem, LoadMode, SourcedRecord,
    StoreError, migrate,
};
use crate::domain::{OldIdNumber, PersonalIdNumber};
use crate::infra::BoxFuture;
use crate::infra::sql::{Migrations, sqlite_file, sqlite_is_unavailable};

/// The embedded mirror.
pub type SqliteMirror = SqlMirror<Sqlite>;

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

impl SqlMirror<Sqlite> {
    /// Opens (creating if missing) the mirror database file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = sqlite_file(path, SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(store_error::<Sqlite>)?;
        Ok(Self { pool, reads: () })
    }

    /// How many citizens the mirror holds.
    pub async fn count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT count(*) FROM citizen")
            .fetch_one(&self.pool)
            .await
            .map_err(store_error::<Sqlite>)
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
        .map_err(store_error::<Sqlite>)?;
        rows.iter().map(Self::export_record).collect()
    }
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
        query
            .execute(&mut **tx)
            .await
            .map_err(store_error::<Sqlite>)?;
    }
    Ok(())
}

impl Dialect for Sqlite {
    type Reads = ();
    const MIGRATIONS: Migrations = migrate::SQLITE;
    const WAS_IMPORTED: &'static str = "SELECT EXISTS (SELECT 1 FROM import_log WHERE digest = ?1)";
    const SWAP: &'static [&'static str] = &[SWAP];
    const SWAPPED: &'static str =
        "UPDATE mirror_state SET data_as_of = ?1, generation = generation + 1";
    const APPLY_DELTA: &'static str = APPLY_DELTA;
    const DELTA_APPLIED: &'static str = "UPDATE mirror_state \
        SET data_as_of = max(coalesce(data_as_of, ?1), ?1), generation = generation + 1";
    const AFTER_DELTA: &'static [&'static str] = &["DROP TABLE temp.citizen_delta"];
    const LOG_IMPORT: &'static str = "INSERT INTO import_log (digest, mode, rows, changed, finished_at) \
         VALUES (?1, ?2, ?3, ?4, unixepoch())";

    fn is_unavailable(error: &sqlx::Error) -> bool {
        sqlite_is_unavailable(error)
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
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

    fn find<'a>(
        mirror: &'a SqlMirror<Self>,
        id: &'a PersonalIdNumber,
    ) -> BoxFuture<'a, Result<Found, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(LOOKUP)
                .bind(id.expose())
                .fetch_one(&mirror.pool)
                .await
                .map_err(store_error::<Sqlite>)?;
            SqlMirror::<Sqlite>::found(id, &row)
        })
    }

    fn begin_load(
        pool: &Pool<Self>,
        mode: LoadMode,
    ) -> BoxFuture<'_, Result<Staging<Self>, StoreError>> {
        Box::pin(async move {
            // IMMEDIATE: take the write lock now, so one import runs at a time.
            let mut tx = pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(store_error::<Sqlite>)?;
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
            .map_err(store_error::<Sqlite>)?;
            let body = definition
                .split_once('(')
                .map(|(_, body)| body)
                .ok_or_else(|| StoreError::Corrupt("the citizen table has no definition".into()))?;
            let ddl = format!("DROP TABLE IF EXISTS {staging}; CREATE TABLE {staging} ({body}");
            sqlx::raw_sql(AssertSqlSafe(ddl))
                .execute(&mut *tx)
                .await
                .map_err(store_error::<Sqlite>)?;
            Ok(Staging { tx, table: staging })
        })
    }

    fn stage<'a>(
        load: &'a mut Staging<Self>,
        items: &'a mut mpsc::Receiver<LoadItem>,
    ) -> BoxFuture<'a, Result<(u64, LoadEnd), LoadError>> {
        Box::pin(async move {
            let mut staged = 0u64;
            loop {
                match items.recv().await.map(LoadItem::into_batch) {
                    Some(Ok(batch)) => {
                        insert_rows(&mut load.tx, load.table, &batch).await?;
                        staged += batch.len() as u64;
                    }
                    Some(Err(end)) => return Ok((staged, end)),
                    None => return Err(LoadError::Incomplete),
                }
            }
        })
    }

    fn deduplicate(
        load: &mut Staging<Self>,
        budget: u64,
    ) -> BoxFuture<'_, Result<Vec<Duplicate>, LoadError>> {
        Box::pin(async move {
            let (tx, staging) = (&mut load.tx, load.table);
            let rows = sqlx::query(AssertSqlSafe(DUPLICATES.replace("{staging}", staging)))
                .fetch_all(&mut **tx)
                .await
                .map_err(store_error::<Sqlite>)?;
            let found = SqlMirror::<Sqlite>::duplicates(&rows)?;
            if found.len() as u64 > budget {
                return Err(LoadError::Duplicates { found });
            }
            for row in &rows {
                let row_id: i64 = row.try_get("row_id").map_err(store_error::<Sqlite>)?;
                sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM {staging} WHERE rowid = ?1"
                )))
                .bind(row_id)
                .execute(&mut **tx)
                .await
                .map_err(store_error::<Sqlite>)?;
            }
            Ok(found)
        })
    }

    fn run_migrations<'a>(
        migrator: &'a Migrator,
        pool: &'a Pool<Self>,
    ) -> BoxFuture<'a, Result<(), sqlx::migrate::MigrateError>> {
        Box::pin(migrator.run(pool))
    }
}
