//! Migrations embedded in the binary, so that a deployment needs no files
//! beside it.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::{BoxFuture, StoreError};

pub(crate) type Migrations = &'static [(i64, &'static str, &'static str)];

pub(super) const POSTGRES: Migrations = &[
    (
        1,
        "mirror",
        include_str!("migrations/postgres/0001_mirror.sql"),
    ),
    (
        2,
        "imports",
        include_str!("migrations/postgres/0002_imports.sql"),
    ),
    (
        3,
        "id collation",
        include_str!("migrations/postgres/0003_id_collation.sql"),
    ),
];

pub(super) const SQLITE: Migrations = &[(
    1,
    "mirror",
    include_str!("migrations/sqlite/0001_mirror.sql"),
)];

/// Migrations compiled into the binary, as a source for sqlx's migrator.
#[derive(Debug)]
pub(crate) struct Embedded(pub(crate) Migrations);

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

pub(super) async fn migrator(migrations: Migrations) -> Result<Migrator, StoreError> {
    Migrator::new(Embedded(migrations))
        .await
        .map_err(|e| StoreError::Query(Box::new(e)))
}
