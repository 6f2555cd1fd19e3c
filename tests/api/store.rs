//! One store test-suite, run against both mirrors: Postgres and the
//! embedded SQLite.

use tokio::sync::mpsc;
use vnid::domain::{CitizenStatus, PersonalIdNumber};
use vnid::mirror::{
    ExportRecord, LoadError, LoadItem, LoadMode, MirrorAdmin, MirrorStore, PgMirror, RowOrigin,
    SourcedRecord, SqliteMirror, load_records,
};

use crate::helpers::*;
use crate::pg::PgServer;

async fn postgres() -> PgMirror {
    let url = PgServer::shared().fresh_database().await;
    let mirror = PgMirror::connect_lazy(&url, 4, std::time::Duration::from_secs(5)).unwrap();
    mirror.migrate().await.unwrap();
    mirror
}

async fn sqlite() -> (SqliteMirror, tempdir::Dir) {
    let dir = tempdir::Dir::new("store");
    let mirror = SqliteMirror::open(&dir.path().join("mirror.sqlite3"))
        .await
        .unwrap();
    mirror.migrate().await.unwrap();
    (mirror, dir)
}

/// A tiny self-removing temporary directory.
pub mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new(name: &str) -> Self {
            static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("vnid-test-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn lookup(store: &dyn MirrorAdmin, id: &str) -> vnid::mirror::Found {
    store
        .find(&PersonalIdNumber::parse(id).unwrap())
        .await
        .unwrap()
}

fn sourced(records: &[ExportRecord], file: u32) -> Vec<SourcedRecord> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| SourcedRecord {
            origin: RowOrigin {
                file,
                line: i as u64 + 2,
            },
            record: r.clone(),
        })
        .collect()
}

async fn full_load_replaces_and_starts_a_generation(store: &dyn MirrorAdmin) {
    let empty = lookup(store, DAM.id).await;
    assert_eq!((empty.record, empty.data_as_of), (None, None));
    let out = load_records(
        store,
        LoadMode::Full,
        Some("digest-1"),
        fixtures().into_iter(),
    )
    .await
    .unwrap();
    assert_eq!((out.rows, out.changed), (4, 4));
    let found = lookup(store, DAM.id).await;
    let record = found.record.unwrap();
    assert_eq!(record.full_name.canonical(), "nguyễn văn đàm");
    assert_eq!(record.old_id_numbers.len(), 2);
    assert_eq!(record.date_of_birth.to_iso(), "1990-05-17");
    assert_eq!(found.data_as_of, Some(DATA_AS_OF));
    assert!(store.was_imported("digest-1").await.unwrap());
    assert!(!store.was_imported("digest-2").await.unwrap());

    // A second full load without DAM removes DAM.
    let rest: Vec<_> = fixtures()
        .into_iter()
        .filter(|r| r.id_number.expose() != DAM.id)
        .collect();
    load_records(store, LoadMode::Full, Some("digest-2"), rest.into_iter())
        .await
        .unwrap();
    let after = lookup(store, DAM.id).await;
    assert!(after.record.is_none());
    assert_eq!(after.generation, found.generation + 1);
    assert_eq!(
        lookup(store, THUY.id)
            .await
            .record
            .unwrap()
            .date_of_birth
            .to_iso(),
        "2001"
    );
}

async fn delta_adds_changes_and_bumps_versions(store: &dyn MirrorAdmin) {
    load_records(store, LoadMode::Full, None, fixtures().into_iter())
        .await
        .unwrap();
    let before = lookup(store, DAM.id).await.record.unwrap().record_version;
    let mut renamed = record(&DAM);
    renamed.full_name = "Nguyễn Văn Đảm".into();
    renamed.updated_at = DATA_AS_OF + 100;
    let mut died = record(&THUY);
    died.status = CitizenStatus::Deceased;
    let mut newborn = record(&DAM);
    newborn.id_number = PersonalIdNumber::parse("082325000777").unwrap();
    newborn.full_name = "Nguyễn Thị Mai".into();
    newborn.gender = vnid::domain::Gender::Female;
    newborn.date_of_birth = vnid::domain::PartialDate::parse_iso("2025-03-01").unwrap();
    newborn.old_id_numbers.clear();
    let unchanged = record(&LAN_CANCELLED);
    let delta = vec![renamed, died, newborn, unchanged];
    let out = load_records(store, LoadMode::Delta, None, delta.clone().into_iter())
        .await
        .unwrap();
    assert_eq!(
        (out.rows, out.changed),
        (4, 3),
        "the unchanged record is not counted"
    );

    let dam = lookup(store, DAM.id).await;
    assert_eq!(
        dam.record.as_ref().unwrap().full_name.canonical(),
        "nguyễn văn đảm"
    );
    assert_eq!(dam.record.unwrap().record_version, before + 1);
    assert_eq!(dam.data_as_of, Some(DATA_AS_OF + 100));
    assert_eq!(
        lookup(store, THUY.id).await.record.unwrap().status,
        CitizenStatus::Deceased
    );
    assert!(lookup(store, "082325000777").await.record.is_some());
    assert_eq!(
        lookup(store, LAN_CANCELLED.id)
            .await
            .record
            .unwrap()
            .record_version,
        1
    );

    // The same delta again changes nothing.
    let again = load_records(store, LoadMode::Delta, None, delta.into_iter())
        .await
        .unwrap();
    assert_eq!(again.changed, 0);
    assert_eq!(
        lookup(store, DAM.id).await.record.unwrap().record_version,
        before + 1
    );
}

async fn an_unfinished_load_changes_nothing(store: &dyn MirrorAdmin) {
    load_records(store, LoadMode::Full, None, fixtures().into_iter())
        .await
        .unwrap();
    for mode in [LoadMode::Full, LoadMode::Delta] {
        let (tx, rx) = mpsc::channel(4);
        let mut changed = record(&DAM);
        changed.status = CitizenStatus::Deceased;
        tx.send(LoadItem::Batch(sourced(&[changed], 0)))
            .await
            .unwrap();
        drop(tx); // The reader stops without the end marker.
        let result = store.load(mode, rx).await;
        assert!(matches!(result, Err(LoadError::Incomplete)), "{result:?}");
        assert_eq!(
            lookup(store, DAM.id).await.record.unwrap().status,
            CitizenStatus::Active
        );
        assert!(!store.was_imported("never").await.unwrap());
    }
}

async fn duplicates_are_named_and_dropped_only_within_budget(store: &dyn MirrorAdmin) {
    load_records(store, LoadMode::Full, None, fixtures().into_iter())
        .await
        .unwrap();
    let mut twin = record(&THUY);
    twin.full_name = "Trần Thị Twin".into();
    let rows = [record(&THUY), record(&HOA_DECEASED), twin.clone()];
    for (budget, mode) in [(0, LoadMode::Full), (0, LoadMode::Delta)] {
        let (tx, rx) = mpsc::channel(4);
        tx.send(LoadItem::Batch(sourced(&rows, 1))).await.unwrap();
        tx.send(LoadItem::End {
            data_as_of: DATA_AS_OF,
            duplicate_budget: budget,
            digest: None,
        })
        .await
        .unwrap();
        let Err(LoadError::Duplicates { found }) = store.load(mode, rx).await else {
            panic!("duplicates were accepted with no budget");
        };
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].dropped, found[0].kept),
            (
                RowOrigin { file: 1, line: 4 },
                RowOrigin { file: 1, line: 2 }
            )
        );
        assert_eq!(found[0].record, twin);
        assert!(
            lookup(store, DAM.id).await.record.is_some(),
            "a failed full load replaced the mirror"
        );
    }
    let (tx, rx) = mpsc::channel(4);
    tx.send(LoadItem::Batch(sourced(&rows, 1))).await.unwrap();
    tx.send(LoadItem::End {
        data_as_of: DATA_AS_OF,
        duplicate_budget: 1,
        digest: None,
    })
    .await
    .unwrap();
    let out = store.load(LoadMode::Full, rx).await.unwrap();
    assert_eq!((out.rows, out.dropped_duplicates.len()), (2, 1));
    assert_eq!(
        lookup(store, THUY.id)
            .await
            .record
            .unwrap()
            .full_name
            .canonical(),
        "trần thị thuỷ"
    );
    assert!(lookup(store, DAM.id).await.record.is_none());
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod postgres_store {
            $(#[tokio::test] async fn $name() { super::$name(&super::postgres().await).await; })*
        }
        mod sqlite_store {
            $(#[tokio::test] async fn $name() { let (m, _dir) = super::sqlite().await; super::$name(&m).await; })*
        }
    };
}

/// Many lookups at once, the same numbers more than once, known and
/// unknown: each gets its own answer.
async fn concurrent_lookups_each_get_their_own_answer(store: &dyn MirrorAdmin) {
    load_records(store, LoadMode::Full, None, fixtures().into_iter())
        .await
        .unwrap();
    let ids = [
        DAM.id,
        UNKNOWN_ID,
        THUY.id,
        HOA_DECEASED.id,
        LAN_CANCELLED.id,
    ];
    let asks: Vec<&str> = (0..300).map(|i| ids[(i * 7) % ids.len()]).collect();
    let parsed: Vec<PersonalIdNumber> = asks
        .iter()
        .map(|id| PersonalIdNumber::parse(id).unwrap())
        .collect();
    let answers = futures_util_join(parsed.iter().map(|id| store.find(id))).await;
    for (id, answer) in asks.iter().zip(answers) {
        let answer = answer.unwrap();
        match answer.record {
            Some(record) => assert_eq!(record.id_number.expose(), *id),
            None => assert_eq!(*id, UNKNOWN_ID),
        }
        assert_eq!(answer.data_as_of, Some(DATA_AS_OF));
    }
}

/// Polls every future on this task until all are done.
pub(crate) async fn futures_util_join<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, result) in pending.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn postgres_gathers_concurrent_lookups_into_fewer_queries() {
    let mirror = postgres().await;
    load_records(&mirror, LoadMode::Full, None, fixtures().into_iter())
        .await
        .unwrap();
    let id = PersonalIdNumber::parse(DAM.id).unwrap();
    let before = mirror.lookup_queries();
    assert!(mirror.find(&id).await.unwrap().record.is_some());
    assert_eq!(mirror.lookup_queries() - before, 1, "alone, at once");
    let before = mirror.lookup_queries();
    let answers = futures_util_join((0..400).map(|_| mirror.find(&id))).await;
    assert!(answers.iter().all(|a| a.as_ref().unwrap().record.is_some()));
    let queries = mirror.lookup_queries() - before;
    assert!(queries < 100, "400 lookups took {queries} queries");
}

both_stores!(
    concurrent_lookups_each_get_their_own_answer,
    full_load_replaces_and_starts_a_generation,
    delta_adds_changes_and_bumps_versions,
    an_unfinished_load_changes_nothing,
    duplicates_are_named_and_dropped_only_within_budget,
);

#[tokio::test]
async fn postgres_keeps_its_check_constraints_across_full_loads() {
    let store = postgres().await;
    for digest in ["a", "b", "c"] {
        load_records(&store, LoadMode::Full, Some(digest), fixtures().into_iter())
            .await
            .unwrap();
    }
    let bad = sqlx::query(
        "INSERT INTO citizen (id_number, full_name, birth_year, gender, status, updated_at) \
         VALUES ('082090000001', 'x', 1990, 'robot', 'active', now())",
    )
    .execute(store.pool())
    .await
    .unwrap_err();
    let code = bad
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("23514"), "{bad}");
    let checks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'citizen'::regclass AND contype = 'c'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(checks, 7, "every CHECK of the migration, once");
}

#[tokio::test]
async fn postgres_compares_id_numbers_bytewise_through_full_loads() {
    let store = postgres().await;
    let collation = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT c.collname::text FROM pg_attribute a \
             JOIN pg_collation c ON c.oid = a.attcollation \
             WHERE a.attrelid = 'citizen'::regclass AND a.attname = 'id_number'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    };
    assert_eq!(collation().await, "C", "as migrated");
    load_records(&store, LoadMode::Full, None, fixtures().into_iter())
        .await
        .unwrap();
    assert_eq!(collation().await, "C", "after a full load");
}
