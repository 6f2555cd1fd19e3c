//! The holes an outside review found (a hostile caller, a careless
//! deployment), each shut and held shut here.

use tokio_stream::StreamExt;
use tonic::Code;
use vnid::pb;

use crate::helpers::*;

/// Claims the number itself gives away: its birth year, and the gender
/// its century digit encodes.
fn derivable(id: &str, year: u32, gender: pb::Gender) -> pb::VerifyRequest {
    let mut r = request(id, "");
    r.claims = Some(pb::Claims {
        date_of_birth: date(year, 0, 0),
        gender: gender.into(),
        ..Default::default()
    });
    r
}

/// The answers of one whole `VerifyBatch` stream of `items`.
async fn batch(app: &TestApp, items: Vec<pb::VerifyRequest>) -> Vec<pb::VerifyBatchResponse> {
    app.client
        .clone()
        .verify_batch(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner()
        .map(Result::unwrap)
        .collect()
        .await
}

#[tokio::test]
async fn claims_the_number_gives_away_are_no_check_at_all() {
    let app = spawn_app().await;
    // An existing active record and an unknown number answer alike:
    // refused, before any lookup.
    for id in [DAM.id, UNKNOWN_ID] {
        for req in [
            derivable(id, 1990, pb::Gender::Male),
            derivable(id, 1990, pb::Gender::Unspecified),
            derivable(id, 0, pb::Gender::Male),
        ] {
            let status = app.verify(req).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(reason(&status), "CLAIMS_EMPTY");
        }
    }
    // A batch item is refused the same way, alone.
    let items = vec![
        derivable(DAM.id, 1990, pb::Gender::Male),
        request(DAM.id, DAM.name),
    ];
    let mut refused = 0;
    for answer in batch(&app, items).await {
        match answer.result.unwrap() {
            pb::verify_batch_response::Result::Error(status) => {
                assert_eq!(status.code, Code::InvalidArgument as i32);
                refused += 1;
            }
            pb::verify_batch_response::Result::Response(r) => {
                assert_eq!(r.verdict, pb::Verdict::Verified as i32);
            }
        }
    }
    assert_eq!(refused, 1);
    // A birth month is knowledge the number does not hold.
    let mut with_month = derivable(DAM.id, 1990, pb::Gender::Male);
    with_month.claims.as_mut().unwrap().date_of_birth = date(1990, 5, 0);
    let answer = app.verify(with_month).await.unwrap();
    assert_eq!(answer.verdict, pb::Verdict::Verified as i32);
}

/// A batch stream whose items the test sends one by one, keeping it open.
struct OpenStream {
    items: tokio::sync::mpsc::Sender<pb::VerifyRequest>,
    answers: tonic::Streaming<pb::VerifyBatchResponse>,
}

impl OpenStream {
    async fn open(app: &TestApp) -> Self {
        let (items, rx) = tokio::sync::mpsc::channel(16);
        let answers = app
            .client
            .clone()
            .verify_batch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { items, answers }
    }

    /// Sends `item` and reads the next answer (or the stream's end).
    async fn ask(
        &mut self,
        item: pb::VerifyRequest,
    ) -> Result<pb::VerifyBatchResponse, tonic::Status> {
        self.items.send(item).await.unwrap();
        self.next().await
    }

    async fn next(&mut self) -> Result<pb::VerifyBatchResponse, tonic::Status> {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.answers.message())
            .await
            .expect("no answer in 10 s")
            .map(|m| m.expect("the stream ended without a status"))
    }
}

fn batch_settings(url: &str) -> vnid::config::Settings {
    let mut settings = test_settings(url);
    settings.plaintext_agency = "board".into();
    settings.plaintext_operator = String::new();
    settings.agencies = vec![vnid::policy::AgencyConfig {
        purposes: vec![vnid::domain::Purpose::Healthcare],
        ..vnid::policy::AgencyConfig::demo("board")
    }];
    settings
}

#[tokio::test]
async fn a_silent_batch_stream_ends_with_deadline_exceeded() {
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let mut settings = batch_settings(&url);
    settings.batch.idle_timeout_ms = 300;
    let app = spawn_app_with(settings).await;
    let mut stream = OpenStream::open(&app).await;
    let first = stream.ask(request(DAM.id, DAM.name)).await.unwrap();
    assert!(matches!(
        first.result,
        Some(pb::verify_batch_response::Result::Response(_))
    ));
    // Then nothing, with the stream left open.
    let end = stream.next().await.unwrap_err();
    assert_eq!(end.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&end), "BATCH_IDLE");
}

#[tokio::test]
async fn a_paced_batch_item_has_a_deadline() {
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let mut settings = batch_settings(&url);
    settings.agencies[0].rate_per_second = Some(1);
    settings.agencies[0].burst = Some(1);
    settings.batch.item_timeout_ms = 300;
    let app = spawn_app_with(settings).await;
    let items: Vec<_> = (0..3).map(|_| request(DAM.id, DAM.name)).collect();
    let mut late = Vec::new();
    for answer in batch(&app, items).await {
        if let Some(pb::verify_batch_response::Result::Error(status)) = answer.result {
            assert_eq!(status.code, Code::DeadlineExceeded as i32);
            late.push(status);
        }
    }
    // One item goes at once; the others would wait a second for the rate.
    assert_eq!(late.len(), 2, "{late:?}");
}

#[tokio::test]
async fn an_agency_that_loses_its_right_loses_its_open_stream() {
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let settings = batch_settings(&url);
    let app = spawn_app_with(settings.clone()).await;
    let mut stream = OpenStream::open(&app).await;
    assert!(stream.ask(request(DAM.id, DAM.name)).await.is_ok());
    // SIGHUP takes the batch right away: the next item ends the stream.
    let mut reloaded = settings.clone();
    reloaded.agencies[0].allow_batch = false;
    app.reloader.reload(&reloaded).unwrap();
    let end = stream.ask(request(DAM.id, DAM.name)).await.unwrap_err();
    assert_eq!(end.code(), Code::PermissionDenied);
    assert_eq!(reason(&end), "BATCH_NOT_ALLOWED");
}

#[tokio::test]
async fn one_request_id_gets_one_check_however_close_two_copies_come() {
    // Two instances on one trail, no Redis: the trail alone decides.
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let a = spawn_app_with(test_settings(&url)).await;
    let mut shared = test_settings(&url);
    shared.data_dir = a.data_dir.clone();
    let b = spawn_bare(shared).await;
    let mut pairs = Vec::new();
    for n in 0..70 {
        let mut mine = request(DAM.id, DAM.name);
        mine.request_id = format!("race-{n}");
        let mut other = request(THUY.id, THUY.name);
        other.request_id = mine.request_id.clone();
        // Two instances, and (the last 20) one instance's one group.
        let there = if n < 50 { &b } else { &a };
        pairs.push(tokio::join!(a.verify(mine), there.verify(other)));
    }
    for (n, (first, second)) in pairs.into_iter().enumerate() {
        let answered = usize::from(first.is_ok()) + usize::from(second.is_ok());
        assert_eq!(answered, 1, "pair {n}: {first:?} {second:?}");
        let refused = first.err().or(second.err()).unwrap();
        assert_eq!(refused.code(), Code::AlreadyExists, "pair {n}");
        assert_eq!(reason(&refused), "REQUEST_ID_REUSED");
    }
    // Copies of one request racing: both get the first answer, one row.
    for n in 0..20 {
        let mut same = request(DAM.id, DAM.name);
        same.request_id = format!("copy-{n}");
        let (x, y) = tokio::join!(a.verify(same.clone()), b.verify(same));
        assert_eq!(x.unwrap(), y.unwrap(), "copy {n}");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&sqlx::PgPool::connect(&url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(rows, 90);
}

#[tokio::test]
async fn a_request_id_holds_after_redis_loses_its_marks() {
    let redis = crate::redis_server::RedisServer::start();
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.redis_url = Some(vnid::config::Secret::new(redis.url()));
    let app = spawn_app_with(settings).await;
    let mine = request(DAM.id, DAM.name);
    let first = app.verify(mine.clone()).await.unwrap();
    // A different request under the same id is known at once from the
    // mark, which holds the request's keyed digest.
    let mut other = request(THUY.id, THUY.name);
    other.request_id = mine.request_id.clone();
    let refused = app.verify(other.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);

    let mut conn = redis.client().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    // Redis forgot; the trail did not.
    let refused = app.verify(other).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert_eq!(reason(&refused), "REQUEST_ID_REUSED");
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    assert_eq!(
        app.verify(mine).await.unwrap(),
        first,
        "a retry: the first answer"
    );
}

#[tokio::test]
async fn a_replay_answers_what_the_attestation_signed_not_what_a_column_says() {
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let app = spawn_app_with(test_settings(&url)).await;
    let wrong = request(DAM.id, "Nguyễn Văn Sai");
    let first = app.verify(wrong.clone()).await.unwrap();
    assert_eq!(first.verdict(), pb::Verdict::NotVerified);
    // The database's owner rewrites the row's verdict column.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for sql in [
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "UPDATE audit_log SET verdict = 'VERDICT_VERIFIED', reason = ''",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let again = app.verify(wrong).await.unwrap();
    assert_eq!(again.verdict(), pb::Verdict::NotVerified);
    assert_eq!(again.attestation, first.attestation);
}

#[tokio::test]
async fn postgres_sessions_are_bounded() {
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.database.statement_timeout_ms = 1_500;
    settings.database.idle_in_transaction_timeout_ms = 2_500;
    let pool = settings.database.pool(1);
    let mirror = vnid::mirror::PgMirror::connect_with(&url, &pool).unwrap();
    for (setting, expected) in [
        ("statement_timeout", "1500ms"),
        ("idle_in_transaction_session_timeout", "2500ms"),
    ] {
        let shown: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(mirror.pool())
            .await
            .unwrap();
        assert_eq!(shown, expected, "{setting}");
    }
}

#[tokio::test]
async fn a_stuck_checkpoint_write_does_not_stop_the_trail() {
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.audit.checkpoint_rows = 1;
    settings.audit.write_timeout_ms = 300;
    let app = spawn_app_with(settings).await;
    app.verify(request(DAM.id, DAM.name)).await.unwrap();
    // Someone holds the checkpoint table: every checkpoint write waits.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE audit_checkpoint IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    for _ in 0..3 {
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            app.verify(request(DAM.id, DAM.name)),
        )
        .await
        .expect("the writer is stuck behind a checkpoint");
        assert!(answer.is_ok(), "{answer:?}");
    }
    holder.rollback().await.unwrap();
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_the_owners_alone() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = crate::store::tempdir::Dir::new("private-data");
    let data = dir.path().join("vnid-data");
    // An operator's careless mkdir: world-readable.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut settings = vnid::config::Settings::load(None, []).unwrap();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.data_dir = data.clone();
    let app = vnid::app::Application::build(&settings).await.unwrap();
    drop(app);
    let mode = |name: &str| std::fs::metadata(data.join(name)).unwrap().mode() & 0o777;
    assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o777, 0o700);
    for file in [
        "mirror.sqlite3",
        "audit.sqlite3",
        "dev-signing-key.pem",
        "subject.key",
        "cache.key",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
    for entry in std::fs::read_dir(&data).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().mode() & 0o077;
        assert_eq!(mode, 0, "{:?} is readable by others", entry.file_name());
    }
}

#[tokio::test]
async fn connections_are_kept_alive_and_aged_out() {
    use std::sync::atomic::Ordering;
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.server.tcp_keepalive_seconds = 30;
    settings.server.max_connection_age_seconds = 1;
    settings.server.max_connection_age_grace_seconds = 1;
    let app = spawn_app_with(settings).await;
    // The kernel probes the server's side of every connection.
    let _silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let ss = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("( sport = :{} )", app.addr.port()))
        .output()
        .expect("ss (iproute2) runs");
    let sockets = String::from_utf8_lossy(&ss.stdout);
    assert!(!sockets.trim().is_empty(), "no server socket listed");
    assert!(
        sockets.lines().all(|l| l.contains("keepalive")),
        "{sockets}"
    );
    // A connection older than its age is closed; the client reconnects.
    app.verify(request(DAM.id, DAM.name)).await.unwrap();
    let before = app.connections.accepted.load(Ordering::Relaxed);
    tokio::time::sleep(std::time::Duration::from_millis(3_000)).await;
    app.verify(request(DAM.id, DAM.name)).await.unwrap();
    let after = app.connections.accepted.load(Ordering::Relaxed);
    assert!(after > before, "the client's connection was never aged out");
}
