//! The mirror in Postgres.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::{BoxFuture, ExportRecord, Lookup, MirrorStore, StoreError};
use crate::clock::UnixSeconds;
use crate::domain::{
    CitizenRecord, CitizenStatus, Gender, OldIdNumber, PartialDate, PersonName, PersonalIdNumber,
};

/// The migrations, embedded in the binary so that a deployment needs no
/// files beside it.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "mirror",
    include_str!("migrations/postgres/0001_mirror.sql"),
)];

#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
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

#[derive(Debug, Clone)]
pub struct PgMirror {
    pool: PgPool,
}

/// Whether an error means "the database is not there right now" (retry
/// later) rather than "this query is wrong".
pub(crate) fn is_unavailable(error: &sqlx::Error) -> bool {
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

pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    if is_unavailable(&error) {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Query(Box::new(error))
    }
}

const LOOKUP: &str = "\
SELECT c.full_name, c.birth_year, c.birth_month, c.birth_day, c.gender, c.old_id_numbers,
       c.status, c.record_version, extract(epoch FROM m.data_as_of)::bigint AS data_as_of
FROM mirror_state m LEFT JOIN citizen c ON c.id_number = $1";

const UPSERT: &str = "\
INSERT INTO citizen (id_number, full_name, birth_year, birth_month, birth_day, gender,
                     old_id_numbers, place_of_origin, permanent_residence, status,
                     household_id, relation_to_head, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, to_timestamp($13))
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

impl PgMirror {
    /// A pool that connects lazily: the server starts, and reports
    /// UNAVAILABLE per call, while the database is down.
    pub fn connect_lazy(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_lazy(url)
            .map_err(|e| StoreError::Query(Box::new(e)))?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = Migrator::new(Embedded)
            .await
            .map_err(|e| StoreError::Query(Box::new(e)))?;
        migrator.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => store_error(e),
            other => StoreError::Query(Box::new(other)),
        })
    }

    /// Inserts or updates records in one transaction, bumping the version
    /// of each record that changed, and moves `data_as_of` forward.
    pub async fn upsert(
        &self,
        records: &[ExportRecord],
        data_as_of: UnixSeconds,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        for record in records {
            upsert_one(&mut tx, record).await?;
        }
        sqlx::query("UPDATE mirror_state SET data_as_of = greatest(data_as_of, to_timestamp($1))")
            .bind(data_as_of as f64)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }
}

async fn upsert_one(
    tx: &mut Transaction<'_, Postgres>,
    r: &ExportRecord,
) -> Result<(), StoreError> {
    let old: Vec<&str> = r.old_id_numbers.iter().map(OldIdNumber::expose).collect();
    sqlx::query(UPSERT)
        .bind(r.id_number.expose())
        .bind(&r.full_name)
        .bind(r.date_of_birth.year() as i16)
        .bind(r.date_of_birth.month().map(i16::from))
        .bind(r.date_of_birth.day().map(i16::from))
        .bind(r.gender.as_str())
        .bind(&old)
        .bind(&r.place_of_origin)
        .bind(&r.permanent_residence)
        .bind(r.status.as_str())
        .bind(&r.household_id)
        .bind(&r.relation_to_head)
        .bind(r.updated_at as f64)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    Ok(())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("bad {what}"))
}

/// The record of a lookup row; `None` where the LEFT JOIN found no citizen.
fn decode(id: &PersonalIdNumber, row: &PgRow) -> Result<Option<CitizenRecord>, StoreError> {
    let Some(name) = row
        .try_get::<Option<String>, _>("full_name")
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let part = |column: &str| -> Result<u32, StoreError> {
        let value: Option<i16> = row.try_get(column).map_err(store_error)?;
        Ok(value.map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX)))
    };
    let text =
        |column: &str| -> Result<String, StoreError> { row.try_get(column).map_err(store_error) };
    let old: Vec<String> = row.try_get("old_id_numbers").map_err(store_error)?;
    Ok(Some(CitizenRecord {
        id_number: id.clone(),
        full_name: PersonName::parse(&name).map_err(|_| corrupt("full_name"))?,
        date_of_birth: PartialDate::from_parts(
            part("birth_year")?,
            part("birth_month")?,
            part("birth_day")?,
        )
        .ok()
        .flatten()
        .ok_or_else(|| corrupt("date of birth"))?,
        gender: Gender::parse(&text("gender")?).ok_or_else(|| corrupt("gender"))?,
        old_id_numbers: old
            .iter()
            .map(|o| OldIdNumber::parse(o).map_err(|_| corrupt("old_id_numbers")))
            .collect::<Result<_, _>>()?,
        status: CitizenStatus::parse(&text("status")?).ok_or_else(|| corrupt("status"))?,
        record_version: row.try_get("record_version").map_err(store_error)?,
    }))
}

impl MirrorStore for PgMirror {
    fn lookup<'a>(&'a self, id: &'a PersonalIdNumber) -> BoxFuture<'a, Result<Lookup, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(LOOKUP)
                .bind(id.expose())
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
            let record = decode(id, &row)?;
            let data_as_of = row
                .try_get::<Option<i64>, _>("data_as_of")
                .map_err(store_error)?;
            Ok(Lookup { record, data_as_of })
        })
    }
}
