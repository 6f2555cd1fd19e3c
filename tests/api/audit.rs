//! The audit trail against real servers: every answered check has its
//! durable row, nothing is lost or doubled, tampering is found and named,
//! and the citizen's access history is for operators only.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use sqlx::{PgPool, Postgres, Row};
use tonic::Code;
use vnid::attest::Jwks;
use vnid::audit::{AuditStore, Finding, SqlAudit};
use vnid::domain::Spelled;
use vnid::mirror::{LoadMode, MirrorAdmin, PgMirror, load_records};
use vnid::pb;
use vnid::pb::audit_service_client::AuditServiceClient;

use crate::helpers::*;
use crate::pg::PgServer;
use crate::store::tempdir::Dir;

fn audit_store(url: &str) -> SqlAudit<Postgres> {
    SqlAudit::<Postgres>::connect_lazy(url, 2, std::time::Duration::from_secs(5)).unwrap()
}

async fn attestation_ids(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT attestation_id FROM audit_log ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A mix of answers: verified, mismatched, unknown, deceased.
fn mixed_request(n: usize) -> pb::VerifyRequest {
    match n % 4 {
        0 => request(DAM.id, DAM.name),
        1 => request(THUY.id, "Trần Thị Thu"),
        2 => request(UNKNOWN_ID, DAM.name),
        _ => request(HOA_DECEASED.id, HOA_DECEASED.name),
    }
}

#[tokio::test]
async fn two_instances_under_concurrent_load_lose_and_double_nothing() {
    let url = PgServer::shared().fresh_database().await;
    // 200 calls at once per instance, each reading the trail (no Redis):
    // on a busy test machine they may wait for a connection longer than
    // the tests' usual 1 s (which is for the outage tests).
    let settings = || {
        let mut s = test_settings(&url);
        s.database.acquire_timeout_ms = 30_000;
        s
    };
    let a = spawn_app_with(settings()).await;
    // Instances of one deployment share their keys.
    let mut shared = settings();
    shared.data_dir = a.data_dir.clone();
    let b = spawn_bare(shared).await;
    let calls = (0..400).map(|n| {
        let mut client = if n % 2 == 0 { &a } else { &b }.client.clone();
        let request = mixed_request(n);
        async move {
            let response = client.verify(request.clone()).await.unwrap();
            (request.request_id, response.into_inner())
        }
    });
    let answers = futures_join_all(calls).await;

    let store = audit_store(&url);
    let rows = sqlx::query(
        "SELECT seq, request_id, attestation_id, attestation_bytes, subject_index FROM audit_log \
         ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 400, "one row per check");
    // Numbered in order, each once (an append that failed may have taken
    // numbers no row holds); the two instances on chains of their own.
    let seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let chains: i64 = sqlx::query_scalar("SELECT count(DISTINCT chain) FROM audit_log")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(chains >= 2, "both instances appended to chain 1 alone");
    let stored: BTreeSet<(String, String, String)> = rows
        .iter()
        .map(|r| {
            let kept: Vec<u8> = r.get(3);
            (
                r.get(1),
                r.get(2),
                vnid::audit::packed::unpack(&kept).unwrap(),
            )
        })
        .collect();
    let answered: BTreeSet<(String, String, String)> = answers
        .into_iter()
        .map(|(id, r)| (id, r.attestation_id, r.attestation))
        .collect();
    assert_eq!(
        stored, answered,
        "each answer's own row, with its attestation"
    );
    for row in &rows {
        let index: String = row.get(4);
        assert!(!index.contains(DAM.id) && index.len() == 43);
    }
    let keys = trail_keys(&a.data_dir);
    let summary = store.verify(keys.trail()).await.unwrap().unwrap();
    assert_eq!((summary.rows, summary.head.seq), (400, 400));
}

/// `futures::future::join_all` without the dependency: every call runs
/// concurrently on this task's runtime.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    calls: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn no_attestation_leaves_without_its_row_when_the_audit_store_stops() {
    // The trail on a server of this test's own; the mirror stays up.
    let mut audit_pg = PgServer::start();
    let audit_url = audit_pg.url("postgres");
    let mirror_url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&mirror_url);
    settings.audit.database_url = Some(vnid::config::Secret::new(audit_url.as_str()));
    settings.audit.write_timeout_ms = 2_000;
    let app = spawn_app_with(settings).await;

    let mut given = Vec::new();
    for n in 0..8 {
        given.push(app.verify(mixed_request(n)).await.unwrap().attestation_id);
    }
    let store = audit_store(&audit_url);
    assert_eq!(attestation_ids(store.pool()).await, given);
    store.pool().close().await;

    audit_pg.stop();
    for n in 0..8 {
        let status = app.verify(mixed_request(n)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(reason(&status), "AUDIT_UNAVAILABLE");
        assert!(!status.message().contains("127.0.0.1"));
    }
    // Bad input is still refused as such, before anything is written.
    let status = app.verify(request("12345", DAM.name)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_server_killed_during_load_keeps_every_answered_checks_row() {
    let url = PgServer::shared().fresh_database().await;
    let mirror = PgMirror::connect_lazy(&url, 2, std::time::Duration::from_secs(5)).unwrap();
    mirror.migrate().await.unwrap();
    load_records(&mirror, LoadMode::Full, None, fixtures().into_iter())
        .await
        .unwrap();
    let dir = Dir::new("audit-kill");
    let serve = || {
        let mut cmd = serve_on_loopback(&url, dir.path());
        // The load fails the same numbers again and again, and half its
        // answers, on purpose: the defences against harvesting are off.
        cmd.env("VNID__DEFENCES__ID_FAILURES_PER_DAY", "0");
        cmd.env("VNID__DEFENCES__NOT_VERIFIED_ALERT_SHARE", "0");
        Served::spawn(cmd)
    };

    let mut served = serve();
    let client = served.client().await;
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let mut client = client.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    match client.verify(mixed_request(w + n)).await {
                        Ok(r) => answered.lock().unwrap().push(r.into_inner().attestation_id),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while answered.lock().unwrap().len() < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "the load never got going"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Mid-load: SIGKILL, no drain, no goodbye.
    assert!(!served.stop("-KILL").await.success());
    for worker in workers {
        worker.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();

    let mut served = serve();
    let after = served
        .client()
        .await
        .verify(request(DAM.id, DAM.name))
        .await
        .unwrap()
        .into_inner();
    assert!(served.stop("-TERM").await.success());

    let out = vnid(
        Some(&url),
        &[
            "audit",
            "verify",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored: BTreeSet<String> = attestation_ids(audit_store(&url).pool())
        .await
        .into_iter()
        .collect();
    let missing: Vec<_> = answered.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(missing.is_empty(), "answered without a row: {missing:?}");
    assert!(stored.contains(&after.attestation_id));
}

/// A trail of ten checks on its own database (checkpoints every 5 rows),
/// and the command that verifies it.
struct Drill {
    url: String,
    pool: PgPool,
    dir: Dir,
    /// Stopped, but kept: dropping it removes its data directory.
    _app: TestApp,
}

impl Drill {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// A drill whose server's settings `configure` changes first.
    async fn with(configure: impl FnOnce(&mut vnid::config::Settings)) -> Self {
        let url = PgServer::shared().fresh_database().await;
        let mut settings = test_settings(&url);
        let dir = Dir::new("audit-drill");
        settings.data_dir = dir.path().to_owned();
        settings.audit.checkpoint_rows = 5;
        settings.audit.witness_file = Some(dir.path().join("witness.jsonl"));
        configure(&mut settings);
        let mut app = spawn_app_with(settings).await;
        for n in 0..10 {
            app.verify(mixed_request(n)).await.unwrap();
        }
        // Stopping the server lets its writer finish its last checkpoint.
        app.begin_shutdown().await.unwrap().unwrap();
        let pool = PgPool::connect(&url).await.unwrap();
        Self {
            url,
            pool,
            dir,
            _app: app,
        }
    }

    async fn sql(&self, statements: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_owned()))
            .execute(&self.pool)
            .await
            .unwrap();
    }

    /// `vnid audit verify`: (exit code, what it said).
    fn verify(&self) -> (i32, String) {
        self.verify_with(&[])
    }

    /// `vnid audit verify --witness` with the drill's witness file.
    fn verify_witnessed(&self) -> (i32, String) {
        let witness = self.dir.path().join("witness.jsonl");
        self.verify_with(&["--witness", witness.to_str().unwrap()])
    }

    fn verify_with(&self, more: &[&str]) -> (i32, String) {
        let mut args = vec![
            "audit",
            "verify",
            "--data-dir",
            self.dir.path().to_str().unwrap(),
        ];
        args.extend_from_slice(more);
        run_to_end(vnid(Some(&self.url), &args))
    }
}

const UNGUARDED: &str = "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;";

impl Drill {
    /// What an owner of the database can do after changing rows: chain
    /// every row again from the genesis, and move the head to the last.
    async fn rechain(&self) {
        use vnid::audit::AuditEntry;
        use vnid::audit::chain::{GENESIS, row_hash};
        self.sql(UNGUARDED).await;
        let rows = sqlx::query(
            "SELECT seq, at_us, kind, agency, purpose, request_id, subject, subject_index, \
             verdict, reason, attestation_id, attestation_bytes, request_digest \
             FROM audit_log ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let mut prev = GENESIS;
        let mut last = 0i64;
        for row in rows {
            let text = |i: usize| row.get::<String, _>(i);
            let (kind, door) = vnid::audit::parse_stored_kind(&text(2)).unwrap();
            let entry = AuditEntry {
                at_us: row.get(1),
                kind,
                door,
                agency: text(3),
                purpose: text(4),
                request_id: text(5),
                subject: text(6),
                subject_index: text(7),
                verdict: text(8),
                reason: text(9),
                attestation_id: text(10),
                attestation: vnid::audit::packed::unpack(&row.get::<Vec<u8>, _>(11)).unwrap(),
                request_digest: text(12),
            };
            let hash = row_hash(&prev, &entry);
            last = row.get(0);
            sqlx::query("UPDATE audit_log SET prev_hash = $1, row_hash = $2 WHERE seq = $3")
                .bind(prev.to_vec())
                .bind(hash.to_vec())
                .bind(last)
                .execute(&self.pool)
                .await
                .unwrap();
            prev = hash;
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(last)
            .bind(prev.to_vec())
            .execute(&self.pool)
            .await
            .unwrap();
    }
}

/// What removes evidence together with the checkpoints that vouch for it
/// passes `audit verify` on the database alone, and is caught by the
/// witness file the server kept outside it.
#[tokio::test]
async fn what_the_database_owner_can_hide_the_witness_shows() {
    let untouched = Drill::new().await;
    let (code, said) = untouched.verify_witnessed();
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("agrees with 1 witness file"), "{said}");
    let lines = std::fs::read_to_string(untouched.dir.path().join("witness.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count(),
        2,
        "checkpoints at rows 5 and 10: {lines}"
    );
    // Signed by the checkpoint key, which is not the attestation key.
    let keys = trail_keys(untouched.dir.path());
    let token =
        serde_json::from_str::<serde_json::Value>(lines.lines().next().unwrap()).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
    let signed: Result<vnid::audit::chain::CheckpointClaims, _> = keys
        .checkpoints
        .verify_signature(&token, vnid::attest::CHECKPOINT_TYPE);
    assert!(signed.is_ok());
    assert!(matches!(
        keys.attestations
            .verify_signature::<vnid::audit::chain::CheckpointClaims>(
                &token,
                vnid::attest::CHECKPOINT_TYPE
            ),
        Err(vnid::attest::TokenError::UnknownKey(_))
    ));

    // The newest rows cut off together with their checkpoints, the head rewound.
    let cut = Drill::new().await;
    cut.sql(
        "DELETE FROM audit_log WHERE seq > 5; DELETE FROM audit_checkpoint WHERE seq > 5; \
         UPDATE audit_head SET seq = 5, hash = (SELECT row_hash FROM audit_log WHERE seq = 5) \
             WHERE id = 1",
    )
    .await;
    assert_eq!(cut.verify().0, 0, "the database alone cannot tell");
    let (code, said) = cut.verify_witnessed();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("truncated: it ends at row 5, but a witnessed checkpoint vouches for row 10"),
        "{said}"
    );

    // One row in the middle deleted, the rest renumbered and chained again.
    let middle = Drill::new().await;
    middle
        .sql(&format!(
            "{UNGUARDED} DELETE FROM audit_log WHERE seq = 6; \
             UPDATE audit_log SET seq = -seq WHERE seq > 6; \
             UPDATE audit_log SET seq = -seq - 1 WHERE seq < 0; \
             DELETE FROM audit_checkpoint WHERE seq > 5"
        ))
        .await;
    middle.rechain().await;
    assert_eq!(middle.verify().0, 0, "the database alone cannot tell");
    let (code, said) = middle.verify_witnessed();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("truncated: it ends at row 9, but a witnessed checkpoint vouches for row 10"),
        "{said}"
    );

    // A row filed under another person's subject index (so the access shows
    // in the wrong history), the chain recomputed, its checkpoints dropped.
    let refiled = Drill::new().await;
    refiled
        .sql(&format!(
            "{UNGUARDED} UPDATE audit_log SET subject_index = 'someone-else' WHERE seq = 3; \
             DELETE FROM audit_checkpoint"
        ))
        .await;
    refiled.rechain().await;
    assert_eq!(refiled.verify().0, 0, "the database alone cannot tell");
    let (code, said) = refiled.verify_witnessed();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("up to row 5 were rewritten: row 5 does not match its signed checkpoint"),
        "{said}"
    );

    // Only the newest checkpoint deleted.
    let unsigned = Drill::new().await;
    unsigned
        .sql("DELETE FROM audit_checkpoint WHERE seq = 10")
        .await;
    assert_eq!(unsigned.verify().0, 0, "the database alone cannot tell");
    let (code, said) = unsigned.verify_witnessed();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("the checkpoint at row 10 was removed from the trail"),
        "{said}"
    );

    // An older checkpoint deleted: the checkpoints are chained, so the
    // database alone shows it, by the checkpoint that names it.
    let unchained = Drill::new().await;
    unchained
        .sql("DELETE FROM audit_checkpoint WHERE seq = 5")
        .await;
    let (code, said) = unchained.verify();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("the checkpoint at row 5 is missing: the checkpoint at row 10 names it"),
        "{said}"
    );

    // The whole trail emptied.
    let emptied = Drill::new().await;
    emptied
        .sql(
            "DELETE FROM audit_log; DELETE FROM audit_checkpoint; \
             UPDATE audit_head SET seq = 0, hash = decode(repeat('00', 32), 'hex')",
        )
        .await;
    assert_eq!(emptied.verify().0, 0, "the database alone cannot tell");
    let (code, said) = emptied.verify_witnessed();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("truncated: it ends at row 0, but a witnessed checkpoint vouches for row 10"),
        "{said}"
    );
    // Without a witness file, a head copied from an earlier verify does
    // the same for the rows up to it.
    let expected = Drill::new().await;
    let (code, said) = expected.verify();
    assert_eq!(code, 0, "{said}");
    let head = said
        .split("head ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let expect = format!("10:{head}");
    assert_eq!(expected.verify_with(&["--expect", &expect]).0, 0);
    let wrong = format!("10:{}", "A".repeat(43));
    let (code, said) = expected.verify_with(&["--expect", &wrong]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("disagrees with the expected head"), "{said}");
    expected
        .sql(
            "DELETE FROM audit_log WHERE seq > 5; DELETE FROM audit_checkpoint WHERE seq > 5; \
             UPDATE audit_head SET seq = 5, hash = (SELECT row_hash FROM audit_log WHERE seq = 5) \
             WHERE id = 1",
        )
        .await;
    assert_eq!(expected.verify().0, 0, "the database alone cannot tell");
    let (code, said) = expected.verify_with(&["--expect", &expect]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("truncated: it ends at row 5, but the expected head vouches for row 10"),
        "{said}"
    );

    // Nor will the server chain new rows onto the emptied trail; onto the
    // untouched one it does.
    let settings_of = |drill: &Drill| {
        let mut settings = test_settings(&drill.url);
        settings.data_dir = drill.dir.path().to_owned();
        settings.audit.witness_file = Some(drill.dir.path().join("witness.jsonl"));
        settings
    };
    match vnid::app::Application::build(&settings_of(&emptied)).await {
        Ok(_) => panic!("a server started on an emptied trail"),
        Err(error) => assert!(
            error
                .to_string()
                .contains("the audit trail ends at row 0, but the witness file"),
            "{error}"
        ),
    }
    // Without a witness file, the data directory remembers the newest
    // checkpoint its server stored.
    let mut unwitnessed = settings_of(&emptied);
    unwitnessed.audit.witness_file = None;
    match vnid::app::Application::build(&unwitnessed).await {
        Ok(_) => panic!("a server started on an emptied trail"),
        Err(error) => assert!(
            error
                .to_string()
                .contains("the audit trail ends at row 0, but the data directory's note")
                && error.to_string().contains("vouches for row 10"),
            "{error}"
        ),
    }
    assert!(
        vnid::app::Application::build(&settings_of(&untouched))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn tampering_is_found_and_the_row_named() {
    let untouched = Drill::new().await;
    let (code, said) = untouched.verify();
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("verified: 10 rows"), "{said}");
    assert!(said.contains("newest signed checkpoint: row 10"), "{said}");
    // Rows are append-only unless the guard is taken down.
    assert!(
        sqlx::query("UPDATE audit_log SET verdict = 'VERDICT_VERIFIED' WHERE seq = 4")
            .execute(&untouched.pool)
            .await
            .is_err()
    );

    let changed = Drill::new().await;
    changed
        .sql(&format!(
            "{UNGUARDED} UPDATE audit_log SET verdict = 'VERDICT_VERIFIED' WHERE seq = 4"
        ))
        .await;
    let (code, said) = changed.verify();
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("audit row 4 was changed"), "{said}");

    let removed = Drill::new().await;
    removed.sql("DELETE FROM audit_log WHERE seq = 6").await;
    let (code, said) = removed.verify();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("audit rows were removed from chain 1 between row 5 and row 7"),
        "{said}"
    );

    let renumbered = Drill::new().await;
    renumbered
        .sql(&format!(
            "{UNGUARDED} DELETE FROM audit_log WHERE seq = 6; \
             UPDATE audit_log SET seq = -seq WHERE seq > 6; \
             UPDATE audit_log SET seq = -seq - 1 WHERE seq < 0"
        ))
        .await;
    let (code, said) = renumbered.verify();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("audit rows were removed from chain 1 between row 5 and row 6"),
        "{said}"
    );

    let reordered = Drill::new().await;
    reordered
        .sql(&format!(
            "{UNGUARDED} UPDATE audit_log SET seq = -3 WHERE seq = 3; \
             UPDATE audit_log SET seq = 3 WHERE seq = 5; \
             UPDATE audit_log SET seq = 5 WHERE seq = -3"
        ))
        .await;
    let (code, said) = reordered.verify();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("audit row 3 was moved: it follows row 4"),
        "{said}"
    );

    let truncated = Drill::new().await;
    truncated.sql("DELETE FROM audit_log WHERE seq > 7").await;
    let (code, said) = truncated.verify();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("truncated: it ends at row 7, but the trail's head vouches for row 10"),
        "{said}"
    );
    // The head rewound as well: the signed checkpoint at row 10 remains.
    truncated
        .sql(
            "UPDATE audit_head SET seq = 7, \
             hash = (SELECT row_hash FROM audit_log WHERE seq = 7) WHERE id = 1",
        )
        .await;
    let (code, said) = truncated.verify();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("a signed checkpoint vouches for row 10"),
        "{said}"
    );
}

#[tokio::test]
async fn prune_removes_old_rows_and_leaves_a_trail_that_verifies() {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    let dir = Dir::new("audit-prune");
    settings.data_dir = dir.path().to_owned();
    // Partitions of three rows: the three old checks fill one.
    settings.audit.partition_rows = 3;
    let mut app = spawn_app_with(settings).await;
    // Three checks 400 days ago, two now.
    app.clock.set(NOW - 400 * 86_400);
    for n in 0..3 {
        app.verify(mixed_request(n)).await.unwrap();
    }
    app.clock.set(NOW);
    for n in 0..2 {
        app.verify(mixed_request(n)).await.unwrap();
    }
    app.begin_shutdown().await.unwrap().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let prune = || {
        vnid(
            Some(&url),
            &[
                "audit",
                "prune",
                "--older-than-days",
                "365",
                "--data-dir",
                data_dir,
            ],
        )
    };
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--data-dir", data_dir]);
        run_to_end(vnid(Some(&url), &all))
    };
    // Nothing was exported: the prune refuses, and removes nothing.
    let out = prune().output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("rows 1 to 3 were never exported"), "{said}");
    let store = audit_store(&url);
    assert_eq!(attestation_ids(store.pool()).await.len(), 5);

    // An export of the old rows, checked with no database at all.
    let export = dir.path().join("export-1-3.jsonl");
    let export_path = export.to_str().unwrap();
    let export_1_3 = [
        "audit",
        "export",
        "--from",
        "1",
        "--to",
        "3",
        "--out",
        export_path,
    ];
    let (code, said) = run(&export_1_3);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("rows 1 to 3 (3 rows)"), "{said}");
    let offline = |path: &str| run_to_end(vnid(None, &["audit", "verify", "--file", path]));
    let (code, said) = offline(export_path);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("verified: 3 rows (rows 1 to 3)"), "{said}");
    // A second export under the same name is refused, the first kept.
    let (code, said) = run(&export_1_3);
    assert_ne!(code, 0, "{said}");
    assert!(said.contains("exists already"), "{said}");
    assert_eq!(offline(export_path).0, 0);
    // One byte changed: the file is not what was written.
    let text = std::fs::read_to_string(&export).unwrap();
    let changed = dir.path().join("changed.jsonl");
    std::fs::write(
        &changed,
        text.replacen("VERDICT_VERIFIED", "VERDICT_VERIFIEE", 1),
    )
    .unwrap();
    let (code, said) = offline(changed.to_str().unwrap());
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("NOT verified"), "{said}");
    // A row's verdict changed, and the end line made to match: the
    // attestation in the row still says otherwise.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let row = lines
        .iter()
        .position(|l| l.starts_with("{\"row\""))
        .unwrap();
    lines[row] = lines[row].replacen("VERDICT_VERIFIED", "VERDICT_NOT_VERIFIED", 1);
    let end = lines.len() - 1;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(
        lines[..end]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    let mut end_line: serde_json::Value = serde_json::from_str(&lines[end]).unwrap();
    end_line["end"]["sha256"] =
        <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(&digest).into();
    lines[end] = end_line.to_string();
    std::fs::write(&changed, lines.join("\n") + "\n").unwrap();
    let (code, said) = offline(changed.to_str().unwrap());
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("NOT verified: audit row 1 was changed"),
        "{said}"
    );
    // Cut short.
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&changed, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
    let (code, said) = offline(changed.to_str().unwrap());
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("cut short"), "{said}");

    // Exported, the rows may go.
    let out = prune().output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("removed 3 rows"), "{said}");
    // The rest exports from the cut, and verifies.
    let rest = dir.path().join("export-rest.jsonl");
    let (code, said) = run(&["audit", "export", "--out", rest.to_str().unwrap()]);
    assert_eq!(code, 0, "{said}");
    let (code, said) = offline(rest.to_str().unwrap());
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("verified: 2 rows (rows 4 to 5)"), "{said}");
    // Pruning again removes nothing; dropping a kept row is still found.
    let out = prune().output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no row is older"));
    sqlx::query("DELETE FROM audit_log WHERE seq = 4")
        .execute(store.pool())
        .await
        .unwrap();
    let keys = trail_keys(dir.path());
    assert_eq!(
        store.verify(keys.trail()).await.unwrap(),
        Err(Finding::Removed {
            chain: 1,
            after: 3,
            before: 5
        })
    );
}

fn history_request(id: &str, page_size: i32, page_token: String) -> pb::ListAccessHistoryRequest {
    pb::ListAccessHistoryRequest {
        request_id: "petition-42".into(),
        id_number: id.into(),
        page_size,
        page_token,
    }
}

#[tokio::test]
async fn the_access_history_lists_a_persons_checks_newest_first_in_pages() {
    let app = spawn_app().await;
    let mut checks = Vec::new();
    for purpose in [
        pb::Purpose::Healthcare,
        pb::Purpose::Examination,
        pb::Purpose::SocialInsurance,
        pb::Purpose::Healthcare,
        pb::Purpose::PublicService,
    ] {
        let mut r = request(DAM.id, DAM.name);
        r.purpose = purpose.into();
        let answer = app.verify(r.clone()).await.unwrap();
        checks.push((r.request_id, purpose, answer.attestation_id));
    }
    app.verify(request(THUY.id, THUY.name)).await.unwrap();
    app.verify(request(DAM.id, "Nguyễn Văn Đam")).await.unwrap();

    let mut audit = AuditServiceClient::new(app.channel.clone());
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .list_access_history(history_request(DAM.id, 2, token))
            .await
            .unwrap()
            .into_inner();
        assert!(page.records.len() <= 2);
        pages.push(page.records);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let records: Vec<pb::AccessRecord> = pages.concat();
    // This query itself, the mismatch, then the five checks, newest first.
    assert_eq!(records.len(), 7, "{records:#?}");
    assert_eq!(records[0].kind(), pb::AccessKind::AccessHistory);
    assert_eq!(records[0].agency_id, "operator");
    assert_eq!(records[0].request_id, "petition-42");
    assert_eq!(
        (records[1].verdict(), records[1].reason()),
        (pb::Verdict::NotVerified, pb::Reason::FieldMismatch)
    );
    let listed: Vec<_> = records[2..]
        .iter()
        .map(|r| (r.request_id.clone(), r.purpose(), r.attestation_id.clone()))
        .collect();
    let mut expected = checks.clone();
    expected.reverse();
    assert_eq!(listed, expected);
    for r in &records[1..] {
        assert_eq!(r.kind(), pb::AccessKind::Verify);
        assert_eq!(
            (r.agency_id.as_str(), r.agency_name.as_str()),
            ("demo", "Demo agency")
        );
        assert_eq!(r.time.unwrap().seconds, NOW);
    }
    let seqs: Vec<i64> = records.iter().map(|r| r.audit_seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );

    // Each page query was itself recorded.
    let again = audit
        .list_access_history(history_request(DAM.id, 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    let queries = again
        .records
        .iter()
        .filter(|r| r.kind() == pb::AccessKind::AccessHistory)
        .count();
    assert_eq!(queries, pages.len() + 1);
}

#[tokio::test]
async fn the_access_history_is_for_operators_only_and_checks_its_input() {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.plaintext_operator = String::new();
    let app = spawn_app_with(settings).await;
    let mut audit = AuditServiceClient::new(app.channel.clone());
    let status = audit
        .list_access_history(history_request(DAM.id, 0, String::new()))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::PermissionDenied, "OPERATOR_ROLE_REQUIRED")
    );

    // An agency cannot be made the plaintext operator.
    let mut settings = test_settings(&url);
    settings.agencies = vec![
        vnid::policy::AgencyConfig::demo("demo"),
        vnid::policy::AgencyConfig::demo("hospital"),
    ];
    settings.plaintext_operator = "hospital".into();
    let refused = vnid::app::Application::build(&settings).await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("plaintext_operator")),
        "an agency as operator must be refused"
    );

    let app = spawn_app().await;
    let mut audit = AuditServiceClient::new(app.channel.clone());
    for (request, field) in [
        (history_request("12345", 0, String::new()), "id_number"),
        (history_request(DAM.id, -1, String::new()), "page_size"),
        (history_request(DAM.id, 0, "forged".into()), "page_token"),
    ] {
        let status = audit.list_access_history(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        use tonic_types::StatusExt;
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(fields, [field]);
    }
    // Refused queries were never recorded.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(app.mirror.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

/// Rows as a check writes them, signed with `ring`, `n` of them filed under
/// two people, the first `old` of them a year earlier.
fn entries(ring: &vnid::attest::Keyring, n: i64, old: i64) -> Vec<vnid::audit::AuditEntry> {
    entries_named(ring, n, old, "req")
}

/// [`entries`], their request ids `{prefix}-{i}`.
fn entries_named(
    ring: &vnid::attest::Keyring,
    n: i64,
    old: i64,
    prefix: &str,
) -> Vec<vnid::audit::AuditEntry> {
    (0..n)
        .map(|i| {
            let claims = vnid::attest::AttestationClaims {
                iss: "vnid-test".into(),
                aud: "demo".into(),
                sub: format!("sub-{i}"),
                iat: NOW,
                exp: NOW + 60,
                jti: format!("att-{i}"),
                nonce: format!("{prefix}-{i}"),
                purpose: vnid::domain::Purpose::Healthcare,
                verdict: vnid::domain::VerdictKind::Verified,
                reason: None,
                checks: None,
                data_as_of: DATA_AS_OF,
            };
            let at = if i < old { NOW - 366 * 86_400 } else { NOW };
            vnid::audit::AuditEntry {
                at_us: at * 1_000_000 + i,
                kind: vnid::audit::AuditKind::Check(vnid::domain::CheckCall::Verify),
                agency: claims.aud.clone(),
                purpose: claims.purpose.name().to_owned(),
                request_id: claims.nonce.clone(),
                subject: claims.sub.clone(),
                subject_index: format!("person-{}", i % 2),
                verdict: claims.verdict.name().to_owned(),
                reason: String::new(),
                attestation_id: claims.jti.clone(),
                attestation: ring.sign(&claims).unwrap(),
                request_digest: format!("digest-{i}"),
                door: vnid::domain::Door::Grpc,
            }
        })
        .collect()
}

/// One suite for both stores: the embedded default keeps the same trail.
async fn store_suite(store: &dyn AuditStore, tamper: &str, run_sql: impl AsyncFn(&str)) {
    let new_key =
        || vnid::attest::Keyring::from_pem(&vnid::attest::generate_key_pem().unwrap()).unwrap();
    let (ring, checkpoint_key) = (new_key(), new_key());
    let jwks = Jwks::parse(ring.jwks_json()).unwrap();
    let checkpoint_jwks = Jwks::parse(checkpoint_key.jwks_json()).unwrap();
    let keys = vnid::audit::TrailKeys {
        attestations: &jwks,
        checkpoints: &checkpoint_jwks,
    };
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let all = entries(&ring, 9, 4);
    // A checkpoint after each group, of every chain's head; each chains
    // onto the newest one; one with no newer row is not signed (the newer
    // one vouches for its rows).
    let sign = |heads: &vnid::audit::Heads, prev: Option<&vnid::audit::Head>| {
        Ok(
            checkpoint_key.sign_checkpoint(&vnid::audit::chain::CheckpointClaims::new(
                "vnid-test",
                heads,
                prev,
                NOW,
                false,
            ))?,
        )
    };
    let within = std::time::Duration::from_secs(5);
    let mut signed = Vec::new();
    for (at, group) in (1..).zip(all.chunks(4)) {
        store.append(group).await.unwrap();
        signed.push(
            store
                .add_checkpoint(at, &sign, within)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let seqs: Vec<i64> = signed.iter().map(|(head, _)| head.seq).collect();
    assert_eq!(seqs, [4, 8, 9]);
    let named = vnid::audit::chain::CheckpointClaims::unverified_head(&signed[1].1);
    assert_eq!(named.map(|h| h.seq), Some(8));
    let claims: vnid::audit::chain::CheckpointClaims = checkpoint_jwks
        .verify_signature(&signed[2].1, vnid::attest::CHECKPOINT_TYPE)
        .unwrap();
    assert_eq!(claims.prev_seq, Some(8), "the third names the second");
    assert_eq!(store.add_checkpoint(4, &sign, within).await.unwrap(), None);
    let summary = store.verify(keys).await.unwrap().unwrap();
    assert_eq!((summary.rows, summary.head.seq), (9, 9));
    assert_eq!(summary.checkpoint, Some(9));
    // Which key signed the rows, and when first and last.
    let uses = store.key_uses().await.unwrap();
    assert_eq!(uses.len(), 1);
    assert_eq!(
        (uses[0].rows, uses[0].first_us <= uses[0].last_us),
        (9, true)
    );
    let header_b64 = all[0].attestation.split('.').next().unwrap();
    assert_eq!(
        uses[0].header,
        <base64ct::Base64UrlUnpadded as base64ct::Encoding>::decode_vec(header_b64).unwrap()
    );

    // Person 1's rows (seq 2, 4, 6, 8), newest first, two at a time.
    let page = store.history("person-1", None, 2).await.unwrap();
    let seqs: Vec<i64> = page.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [8, 6]);
    assert_eq!(page[0].entry, all[7]);
    let page = store.history("person-1", Some(6), 10).await.unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 2]);

    let sign = |heads: &vnid::audit::Heads| {
        Ok(
            checkpoint_key.sign_checkpoint(&vnid::audit::chain::CheckpointClaims::new(
                "vnid-test",
                heads,
                None,
                NOW,
                true,
            ))?,
        )
    };
    // Rows no export holds are not pruned.
    assert!(matches!(
        store.prune(NOW * 1_000_000, false, &sign).await,
        Err(vnid::audit::AuditError::Unexported { first: 1, last: 4 })
    ));
    store.record_export(1, 3, NOW, "digest").await.unwrap();
    assert!(matches!(
        store.prune(NOW * 1_000_000, false, &sign).await,
        Err(vnid::audit::AuditError::Unexported { first: 4, last: 4 })
    ));
    // Forced: pruned all the same, and said so.
    let outcome = store.prune(NOW * 1_000_000, true, &sign).await.unwrap();
    assert_eq!(
        (
            outcome.removed,
            outcome.cut.map(|(head, _)| head.seq),
            outcome.unexported
        ),
        (4, Some(4), Some((4, 4)))
    );
    let summary = store.verify(keys).await.unwrap().unwrap();
    assert_eq!((summary.rows, summary.anchor), (5, 4));

    run_sql(tamper).await;
    assert_eq!(
        store.verify(keys).await.unwrap(),
        Err(Finding::Changed {
            seq: 7,
            what: "its content does not hash to its recorded hash"
        })
    );
}

#[tokio::test]
async fn both_stores_keep_the_same_trail() {
    let dir = Dir::new("audit-sqlite");
    let sqlite = SqlAudit::<sqlx::Sqlite>::open(&dir.path().join("audit.sqlite3"))
        .await
        .unwrap();
    let pool = sqlite.pool().clone();
    store_suite(
        &sqlite,
        "DROP TRIGGER audit_log_append_only; \
         UPDATE audit_log SET purpose = 'PURPOSE_EXAMINATION' WHERE seq = 7",
        async |sql| {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&pool)
                .await
                .unwrap();
        },
    )
    .await;

    // Postgres' rows in partitions of 4: the prune drops the first (and
    // the empty one the migration left), and the rest follow the head.
    let url = PgServer::shared().fresh_database().await;
    let postgres = audit_store(&url).with_partition_rows(4);
    let pool = postgres.pool().clone();
    let partitions = async |pool: &sqlx::PgPool| -> Vec<(i64, i64)> {
        sqlx::query_as(
            "SELECT p.from_seq, p.to_seq FROM audit_partition p \
             JOIN pg_inherits i ON i.inhrelid = p.name::regclass \
             WHERE i.inhparent = 'audit_log'::regclass ORDER BY p.to_seq",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    };
    store_suite(
        &postgres,
        &format!("{UNGUARDED} UPDATE audit_log SET purpose = 'PURPOSE_EXAMINATION' WHERE seq = 7"),
        async |sql| {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&pool)
                .await
                .unwrap();
        },
    )
    .await;
    assert_eq!(
        partitions(&pool).await,
        [(5, 9), (9, 13), (13, 17)],
        "rows 1 to 4 dropped with their partition; one partition ahead of the head"
    );
}

/// Without the Redis index, every check reads the trail for its
/// `request_id`: under load those reads share queries, and each still gets
/// its own first answer.
#[tokio::test]
async fn postgres_gathers_concurrent_retry_reads_and_each_gets_its_first_answer() {
    let url = PgServer::shared().fresh_database().await;
    let store = audit_store(&url);
    store.migrate().await.unwrap();
    let ring = vnid::attest::Keyring::from_pem(&vnid::attest::generate_key_pem().unwrap()).unwrap();
    // req-0 … req-19; req-0 … req-3 again are refused by the trail: one
    // check per (agency, request_id), and nothing of the group is written.
    store.append(&entries(&ring, 20, 0)).await.unwrap();
    assert!(matches!(
        store.append(&entries(&ring, 4, 0)).await,
        Err(vnid::audit::AuditError::Duplicate)
    ));

    let asks: Vec<(&str, String)> = (0..400)
        .map(|i| match i % 5 {
            0 => ("demo", format!("req-{}", i % 7)),
            1 => ("demo", format!("req-{}", i % 20)),
            2 => ("demo", format!("never-{i}")),
            3 => ("another-agency", format!("req-{}", i % 20)),
            _ => ("demo", format!("req-{}", i % 3)),
        })
        .collect();
    let expected = |agency: &str, request_id: &str| -> Option<i64> {
        let n: i64 = request_id.strip_prefix("req-")?.parse().ok()?;
        (agency == "demo").then_some(n + 1)
    };

    let before = store.first_request_queries();
    let alone = store.first_request("demo", "req-2").await.unwrap().unwrap();
    assert_eq!((alone.seq, alone.entry.request_id.as_str()), (3, "req-2"));
    assert_eq!(store.first_request_queries() - before, 1, "alone, at once");

    let before = store.first_request_queries();
    let answers = crate::store::futures_util_join(
        asks.iter()
            .map(|(agency, id)| store.first_request(agency, id)),
    )
    .await;
    for ((agency, id), answer) in asks.iter().zip(answers) {
        let answer = answer.unwrap();
        assert_eq!(
            answer.as_ref().map(|r| r.seq),
            expected(agency, id),
            "{agency} {id}"
        );
        if let Some(record) = answer {
            assert_eq!(
                (record.entry.agency.as_str(), &record.entry.request_id),
                (*agency, id)
            );
        }
    }
    let queries = store.first_request_queries() - before;
    assert!(queries < 100, "400 reads took {queries} queries");
}

#[tokio::test]
async fn a_retried_request_gets_its_first_answer_and_a_reused_id_is_refused() {
    let url = PgServer::shared().fresh_database().await;
    let a = spawn_app_with(test_settings(&url)).await;
    let mut shared = test_settings(&url);
    shared.data_dir = a.data_dir.clone();
    let b = spawn_bare(shared).await;

    for first_request in [
        request(DAM.id, DAM.name),
        request(UNKNOWN_ID, DAM.name),
        request(THUY.id, "Trần Thị Thu"),
    ] {
        let first = a.verify(first_request.clone()).await.unwrap();
        // Retried on the same instance and on another: the same answer,
        // the same attestation, and no second check.
        for app in [&a, &b] {
            assert_eq!(app.verify(first_request.clone()).await.unwrap(), first);
        }
        // The same id for another request.
        let mut other = first_request.clone();
        other.claims.as_mut().unwrap().full_name = "Lê Văn Khác".into();
        let status = b.verify(other).await.unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::AlreadyExists, "REQUEST_ID_REUSED")
        );
        let mut other_purpose = first_request.clone();
        other_purpose.purpose = pb::Purpose::Examination.into();
        assert_eq!(
            a.verify(other_purpose).await.unwrap_err().code(),
            Code::AlreadyExists
        );
    }
    let rows = attestation_ids(audit_store(&url).pool()).await;
    assert_eq!(rows.len(), 3, "one row per request, none per retry");

    // Another agency may use the same request_id for its own request.
    let mut hospital = test_settings(&url);
    hospital.data_dir = a.data_dir.clone();
    hospital.plaintext_agency = "hospital".into();
    hospital.plaintext_operator = String::new();
    hospital.agencies = vec![vnid::policy::AgencyConfig::demo("hospital")];
    let c = spawn_bare(hospital).await;
    let mut same_id = request(HOA_DECEASED.id, HOA_DECEASED.name);
    same_id.request_id = "req-shared".into();
    let mut theirs = request(DAM.id, DAM.name);
    theirs.request_id = "req-shared".into();
    assert_eq!(
        a.verify(same_id).await.unwrap().verdict(),
        pb::Verdict::NotVerified
    );
    assert_eq!(
        c.verify(theirs).await.unwrap().verdict(),
        pb::Verdict::Verified
    );
}

#[tokio::test]
async fn with_redis_a_new_request_skips_the_trail_and_a_retry_still_finds_it() {
    let redis = crate::redis_server::RedisServer::start();
    let url = PgServer::shared().fresh_database().await;
    let settings = || {
        let mut s = test_settings(&url);
        s.redis_url = Some(vnid::config::Secret::new(redis.url()));
        s
    };
    let a = spawn_app_with(settings()).await;
    let mut shared = settings();
    shared.data_dir = a.data_dir.clone();
    let b = spawn_bare(shared).await;

    let first_request = request(DAM.id, DAM.name);
    let first = a.verify(first_request.clone()).await.unwrap();
    let mut conn = redis.client().await;
    let marks: Vec<String> = redis::cmd("KEYS")
        .arg("vnid:r:v1:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(marks.len(), 1, "the used id is marked, by a keyed hash");
    assert!(!marks[0].contains(first_request.request_id.as_str()));
    assert_eq!(b.verify(first_request.clone()).await.unwrap(), first);
    let mut other = first_request.clone();
    other.purpose = pb::Purpose::Examination.into();
    assert_eq!(
        b.verify(other).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    assert_eq!(attestation_ids(audit_store(&url).pool()).await.len(), 1);

    // A request refused by a quota leaves no mark: refused traffic does
    // not fill Redis, and its retry, once admitted, is a new check.
    let mut limited = settings();
    limited.data_dir = a.data_dir.clone();
    limited.plaintext_agency = "limited".into();
    limited.plaintext_operator = String::new();
    let mut agency = vnid::policy::AgencyConfig::demo("limited");
    agency.rate_per_second = Some(1);
    agency.burst = Some(1);
    limited.agencies = vec![agency];
    let c = spawn_bare(limited).await;
    let marks = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("vnid:r:v1:*")
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.len()
        }
    };
    let mut admitted = request(DAM.id, DAM.name);
    admitted.request_id = "limited-1".into();
    c.verify(admitted).await.unwrap();
    assert_eq!(marks(&mut conn).await, 2);
    let mut refused = request(DAM.id, DAM.name);
    refused.request_id = "limited-2".into();
    let status = c.verify(refused.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(marks(&mut conn).await, 2, "no mark for a refused request");
    c.clock.set(NOW + 2);
    let answered = c.verify(refused).await.unwrap();
    assert_eq!(answered.verdict(), pb::Verdict::Verified);
    assert_eq!(marks(&mut conn).await, 3);
}

/// For instances with no file that outlives them: a witness database (of
/// its own) keeps every checkpoint, holds the trail to them in `audit
/// verify --witness-database`, and keeps a server off a trail it lost.
#[tokio::test]
async fn a_witness_database_keeps_what_the_trail_database_lost() {
    let witness_url = PgServer::shared().fresh_database().await;
    let drill = Drill::with(|settings| {
        settings.audit.witness_file = None;
        settings.audit.witness_database_url = Some(vnid::config::Secret::new(&witness_url));
    })
    .await;
    let witness = PgPool::connect(&witness_url).await.unwrap();
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM vnid_audit_witness ORDER BY seq")
        .fetch_all(&witness)
        .await
        .unwrap();
    assert_eq!(seqs, [5, 10]);
    let verify = || {
        let mut cmd = vnid(
            Some(&drill.url),
            &[
                "audit",
                "verify",
                "--witness-database",
                "--data-dir",
                drill.dir.path().to_str().unwrap(),
            ],
        );
        cmd.env("VNID__AUDIT__WITNESS_DATABASE_URL", &witness_url);
        run_to_end(cmd)
    };
    let (code, said) = verify();
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("agrees with the witness database"), "{said}");

    // The newest rows cut off with their checkpoints, the head rewound.
    drill
        .sql(
            "DELETE FROM audit_log WHERE seq > 5; DELETE FROM audit_checkpoint WHERE seq > 5; \
             UPDATE audit_head SET seq = 5, hash = (SELECT row_hash FROM audit_log WHERE seq = 5) \
             WHERE id = 1",
        )
        .await;
    assert_eq!(drill.verify().0, 0, "the database alone cannot tell");
    let (code, said) = verify();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("truncated: it ends at row 5, but a witnessed checkpoint vouches for row 10"),
        "{said}"
    );
    // Nor does a server start on it, with no other witness left.
    std::fs::remove_file(drill.dir.path().join("audit-newest-checkpoint.json")).unwrap();
    let mut settings = test_settings(&drill.url);
    settings.data_dir = drill.dir.path().to_owned();
    settings.audit.witness_database_url = Some(vnid::config::Secret::new(&witness_url));
    match vnid::app::Application::build(&settings).await {
        Ok(_) => panic!("a server started on a cut trail"),
        Err(error) => assert!(
            error
                .to_string()
                .contains("ends at row 5, but the witness database vouches for row 10"),
            "{error}"
        ),
    }
}

/// A partition that cannot be created for the moment (a long reader holds
/// the rows' table) holds up no append while the partitions have room.
#[tokio::test]
async fn appends_go_on_while_a_partition_cannot_be_created_yet() {
    let ring = vnid::attest::Keyring::from_pem(&vnid::attest::generate_key_pem().unwrap()).unwrap();
    let url = PgServer::shared().fresh_database().await;
    let first = audit_store(&url).with_partition_rows(4);
    first.migrate().await.unwrap();
    let all = entries(&ring, 3, 0);
    first.append(&all[0..2]).await.unwrap();
    // A reader holding the table: no partition can be created meanwhile.
    let pool = PgPool::connect(&url).await.unwrap();
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE audit_log IN ACCESS SHARE MODE")
        .execute(&mut *reader)
        .await
        .unwrap();
    // Another instance wanting partitions of 100 rows ahead: it cannot
    // create one, but row 3 has its partition already.
    let second = audit_store(&url).with_partition_rows(100);
    assert_eq!(second.append(&all[2..3]).await.unwrap().seq, 3);
    reader.rollback().await.unwrap();
    let ends: Vec<i64> = sqlx::query_scalar("SELECT to_seq FROM audit_partition ORDER BY to_seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        ends.last(),
        Some(&9),
        "nothing created while the table was held: {ends:?}"
    );
}

/// Rows written before attestations were kept as bytes keep their text:
/// they read back, verify and count for their key as the new ones do, in
/// both stores; a new row's attestation takes a quarter less room.
#[tokio::test]
async fn rows_kept_as_text_before_the_bytes_still_read_and_verify() {
    let dir = Dir::new("audit-text-rows");
    let sqlite = SqlAudit::<sqlx::Sqlite>::open(&dir.path().join("audit.sqlite3"))
        .await
        .unwrap();
    let pool = sqlite.pool().clone();
    text_rows_suite(
        &sqlite,
        "DROP TRIGGER audit_log_append_only;",
        async |sql| {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_optional(&pool)
                .await
                .unwrap()
        },
    )
    .await;
    let postgres = audit_store(&PgServer::shared().fresh_database().await);
    let pool = postgres.pool().clone();
    text_rows_suite(&postgres, UNGUARDED, async |sql| {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_optional(&pool)
            .await
            .unwrap()
    })
    .await;
}

/// `run_sql` runs one statement, giving its first column's integer if any.
async fn text_rows_suite(
    store: &dyn AuditStore,
    unguard: &str,
    run_sql: impl AsyncFn(String) -> Option<i64>,
) {
    let ring = vnid::attest::Keyring::from_pem(&vnid::attest::generate_key_pem().unwrap()).unwrap();
    let jwks = Jwks::parse(ring.jwks_json()).unwrap();
    let keys = vnid::audit::TrailKeys {
        attestations: &jwks,
        checkpoints: &jwks,
    };
    let all = entries(&ring, 6, 0);
    store.migrate().await.unwrap();
    store.append(&all).await.unwrap();
    // A new row's attestation as kept: packed, a quarter smaller.
    let kept = run_sql(
        "SELECT CAST(length(attestation_bytes) AS BIGINT) FROM audit_log WHERE seq = 1".into(),
    )
    .await
    .unwrap();
    let text = all[0].attestation.len() as i64;
    assert!(
        kept * 4 <= text * 3 + 12,
        "{kept} bytes for {text} characters"
    );
    // Rows 1 to 3 as the schema before kept them.
    run_sql(unguard.into()).await;
    for e in &all[..3] {
        run_sql(format!(
            "UPDATE audit_log SET attestation = '{}', attestation_bytes = NULL \
             WHERE attestation_id = '{}'",
            e.attestation, e.attestation_id
        ))
        .await;
    }
    let summary = store.verify(keys).await.unwrap().unwrap();
    assert_eq!(summary.rows, 6);
    let read: Vec<String> = (store.rows(0, 6, 10).await.unwrap().into_iter())
        .map(|r| r.entry.attestation)
        .collect();
    let given: Vec<String> = all.iter().map(|e| e.attestation.clone()).collect();
    assert_eq!(read, given, "every row's attestation exactly as given");
    let uses = store.key_uses().await.unwrap();
    assert_eq!(uses.len(), 1, "one key, whichever way its rows are kept");
    assert_eq!(uses[0].rows, 6);
}

/// Writers that share a trail append to chains of their own: each store
/// takes a chain no other holds, the checkpoint names every chain's head,
/// and everything the single chain showed still shows, chain by chain.
#[tokio::test]
async fn several_writers_append_to_chains_of_their_own_and_each_chain_is_held() {
    use vnid::audit::witness::{self, WitnessLine};
    let drill = Drill::new().await;
    let dir = drill.dir.path();
    let pem = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let ring = vnid::attest::Keyring::from_pem(&pem("dev-signing-key.pem")).unwrap();
    let checkpoints =
        Arc::new(vnid::attest::Keyring::from_pem(&pem("audit-checkpoint-key.pem")).unwrap());
    // Three more writers, as three instances would be, at once.
    let writers: Vec<SqlAudit<Postgres>> = (0..3)
        .map(|_| audit_store(&drill.url).with_chains(4))
        .collect();
    writers[0].migrate().await.unwrap();
    let rows = entries_named(&ring, 60, 0, "writer");
    let append = async |w: usize| {
        for part in rows[w * 20..w * 20 + 20].chunks(5) {
            writers[w].append(part).await.unwrap();
        }
    };
    tokio::join!(append(0), append(1), append(2));
    let chains: Vec<i16> =
        sqlx::query_scalar("SELECT DISTINCT chain FROM audit_log ORDER BY chain")
            .fetch_all(&drill.pool)
            .await
            .unwrap();
    assert!(chains.len() >= 3, "rows went into chains {chains:?}");
    // A checkpoint of every chain's head, witnessed.
    let checkpointer = vnid::audit::Checkpointer::new(
        checkpoints,
        "vnid-test",
        Arc::new(vnid::clock::SystemClock),
    );
    let sign = |heads: &vnid::audit::Heads, prev: Option<&vnid::audit::Head>| {
        checkpointer.sign(heads, prev)
    };
    let (head, token) = writers[1]
        .add_checkpoint(1, &sign, std::time::Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let claims = vnid::audit::chain::CheckpointClaims::unverified_heads(&token).unwrap();
    assert_eq!(claims.iter().count(), chains.len(), "every chain's head");
    witness::keep(
        Some(&dir.join("witness.jsonl")),
        &WitnessLine::new(&head, &token),
    )
    .unwrap();
    let (code, said) = drill.verify_witnessed();
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("verified: 70 rows") && said.contains("chain heads"),
        "{said}"
    );
    // An export of them verifies with no database.
    let out = dir.join("chains.jsonl");
    let (code, said) = run_to_end(vnid(
        Some(&drill.url),
        &[
            "audit",
            "export",
            "--data-dir",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(code, 0, "{said}");
    let (code, said) = run_to_end(vnid(
        None,
        &["audit", "verify", "--file", out.to_str().unwrap()],
    ));
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("70 rows"), "{said}");

    // The middle row of the last chain deleted: that chain says so.
    let chain = *chains.last().unwrap();
    let seqs: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM audit_log WHERE chain = $1 ORDER BY seq")
            .bind(chain)
            .fetch_all(&drill.pool)
            .await
            .unwrap();
    let (before, gone, after) = (seqs[9], seqs[10], seqs[11]);
    sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(gone)
        .execute(&drill.pool)
        .await
        .unwrap();
    let (code, said) = drill.verify();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains(&format!(
            "audit rows were removed from chain {chain} between row {before} and row {after}"
        )),
        "{said}"
    );
    // That chain's tail deleted and its head rewound, with the checkpoints:
    // the database alone cannot tell; the witness can.
    let last_kept = seqs[8];
    drill
        .sql(&format!(
            "DELETE FROM audit_log WHERE chain = {chain} AND seq > {last_kept}; \
             DELETE FROM audit_checkpoint WHERE seq > 10; \
             UPDATE audit_head SET seq = {last_kept}, \
             hash = (SELECT row_hash FROM audit_log WHERE seq = {last_kept}) WHERE id = {chain}"
        ))
        .await;
    assert_eq!(drill.verify().0, 0, "the database alone cannot tell");
    let (code, said) = drill.verify_witnessed();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("truncated") && said.contains("a witnessed checkpoint"),
        "{said}"
    );
}

/// A writer numbers its rows past the partitions it knows of when other
/// writers' chains have moved on: its append makes room and goes in.
#[tokio::test]
async fn a_writer_behind_the_others_numbers_past_the_partitions_and_still_appends() {
    let url = PgServer::shared().fresh_database().await;
    let ring = vnid::attest::Keyring::from_pem(&vnid::attest::generate_key_pem().unwrap()).unwrap();
    let store = || audit_store(&url).with_partition_rows(4).with_chains(2);
    let (ahead, behind) = (store(), store());
    ahead.migrate().await.unwrap();
    let rows = entries_named(&ring, 40, 0, "behind");
    behind.append(&rows[..2]).await.unwrap();
    for part in rows[2..32].chunks(5) {
        ahead.append(part).await.unwrap();
    }
    // Eight at once: past the one partition ahead that the other made.
    behind.append(&rows[32..]).await.unwrap();
    let jwks = Jwks::parse(ring.jwks_json()).unwrap();
    let keys = vnid::audit::TrailKeys {
        attestations: &jwks,
        checkpoints: &jwks,
    };
    let summary = ahead.verify(keys).await.unwrap().unwrap();
    assert_eq!((summary.rows, summary.heads.iter().count()), (40, 2));
}

/// A prune of a trail of several chains drops whole partitions and cuts
/// each chain where the partitions ended: what is kept verifies from the
/// cut, and the writers go on appending after it.
#[tokio::test]
async fn a_prune_cuts_every_chain_and_what_is_kept_verifies() {
    let url = PgServer::shared().fresh_database().await;
    let ring = vnid::attest::Keyring::from_pem(&vnid::attest::generate_key_pem().unwrap()).unwrap();
    let checkpoint_key =
        vnid::attest::Keyring::from_pem(&vnid::attest::generate_key_pem().unwrap()).unwrap();
    let store = || audit_store(&url).with_partition_rows(4).with_chains(3);
    let (a, b) = (store(), store());
    a.migrate().await.unwrap();
    // 12 rows a year old, then 8 of now, the two writers taking turns.
    let rows = entries_named(&ring, 20, 12, "pruned");
    for (i, part) in rows.chunks(2).enumerate() {
        if i % 2 == 0 { &a } else { &b }.append(part).await.unwrap();
    }
    a.record_export(1, 1_000, NOW, "all").await.unwrap();
    let sign = |heads: &vnid::audit::Heads| {
        Ok(
            checkpoint_key.sign_checkpoint(&vnid::audit::chain::CheckpointClaims::new(
                "vnid-test",
                heads,
                None,
                NOW,
                true,
            ))?,
        )
    };
    let outcome = a.prune(NOW * 1_000_000 - 1, false, &sign).await.unwrap();
    let (cut, token) = outcome.cut.unwrap();
    let named = vnid::audit::chain::CheckpointClaims::unverified_heads(&token).unwrap();
    assert_eq!(
        named.iter().count(),
        2,
        "the cut names both chains' last rows"
    );
    assert!(
        outcome.removed > 0 && outcome.removed <= 12,
        "{}",
        outcome.removed
    );
    let jwks = Jwks::parse(ring.jwks_json()).unwrap();
    let checkpoint_jwks = Jwks::parse(checkpoint_key.jwks_json()).unwrap();
    let keys = vnid::audit::TrailKeys {
        attestations: &jwks,
        checkpoints: &checkpoint_jwks,
    };
    let summary = a.verify(keys).await.unwrap().unwrap();
    assert_eq!(summary.anchor, cut.seq);
    assert_eq!(summary.rows, 20 - outcome.removed);
    let more = entries_named(&ring, 4, 0, "after");
    a.append(&more[..2]).await.unwrap();
    b.append(&more[2..]).await.unwrap();
    let summary = b.verify(keys).await.unwrap().unwrap();
    assert_eq!(summary.rows, 24 - outcome.removed);
}
