//! Migrations embedded in the binary, so that a deployment needs no files
//! beside it.

use crate::infra::sql::Migrations;

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
