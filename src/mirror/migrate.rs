//! Migrations embedded in the binary, so that a deployment needs no files
//! beside it.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::{BoxFuture, StoreError};

pub(super) type Migrations = &'static [(i64, &'static str, &'static str)];

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
];

pub(super) const SQLITE: Migrations = &[(
    1,
    "mirror",
    include_str!("migrations/sqlite/0001_mirror.sql"),
)];

#[derive(Debug)]
struct Embedded(Migrations);

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
