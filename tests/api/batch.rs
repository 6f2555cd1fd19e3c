//! `VerifyBatch` and `VerifyCardQr` against real servers: every item
//! answered once with its id, error items that leave the stream going,
//! bounded memory for a caller that stops reading, cancellation, policy
//! and quotas per item, and card QR codes read as claims.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;
use vnid::config::Secret;
use vnid::domain::Purpose;
use vnid::pb;
use vnid::pb::verify_batch_response::Result as Item;
use vnid::policy::AgencyConfig;

use crate::helpers::*;
use crate::pg::PgServer;

async fn audit_rows(url: &str) -> i64 {
    count_rows(
        url,
        "SELECT count(*) FROM audit_log WHERE kind = 'verify_batch'",
    )
    .await
}

/// The batch rows once their count has stopped growing between two reads
/// `every` apart: the server has finished what it had in hand.
async fn settled_audit_rows(url: &str, every: Duration) -> i64 {
    let mut rows = audit_rows(url).await;
    loop {
        tokio::time::sleep(every).await;
        let now = audit_rows(url).await;
        if now == rows {
            return rows;
        }
        rows = now;
    }
}

/// For the long streams: a debug build on the test's one thread checks a
/// window of 512 items in seconds, and without Redis every item reads the
/// audit trail for its `request_id` through a pool of 16 connections. The
/// tests' 1 s wait for a pooled connection (there for the outage tests)
/// then answers items `AUDIT_UNAVAILABLE` when the machine is busy; here
/// the wait is the service's default (2 s) and more.
fn long_stream_settings(url: &str) -> vnid::config::Settings {
    let mut settings = test_settings(url);
    settings.database.acquire_timeout_ms = 10_000;
    settings
}

/// What an item of the mixed batch should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Verified,
    Mismatch,
    NotFound,
    Malformed,
}

/// Item `n` of a mixed batch: good, mismatching, unknown and malformed.
fn mixed_item(n: u64) -> (pb::VerifyRequest, Expect) {
    let mut request = match n % 4 {
        0 => request(DAM.id, DAM.name),
        1 => request(DAM.id, "Nguyễn Văn Nam"),
        2 => request(UNKNOWN_ID, DAM.name),
        _ => request("08209001234", DAM.name),
    };
    request.request_id = format!("b-{n}");
    let expect = [
        Expect::Verified,
        Expect::Mismatch,
        Expect::NotFound,
        Expect::Malformed,
    ][(n % 4) as usize];
    (request, expect)
}

fn outcome(item: &pb::VerifyBatchResponse) -> Expect {
    match item.result.as_ref().unwrap() {
        Item::Response(r) if r.verdict == pb::Verdict::Verified as i32 => Expect::Verified,
        Item::Response(r) if r.reason == pb::Reason::FieldMismatch as i32 => Expect::Mismatch,
        Item::Response(r) if r.reason == pb::Reason::NotFound as i32 => Expect::NotFound,
        Item::Error(status) if status.code == Code::InvalidArgument as i32 => Expect::Malformed,
        other => panic!("unexpected item {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_of_100_000_mixed_items_is_answered_once_each() {
    const ITEMS: u64 = 100_000;
    let url = PgServer::shared().fresh_database().await;
    let app = spawn_app_with(long_stream_settings(&url)).await;
    let input = tokio_stream::iter(0..ITEMS).map(|n| mixed_item(n).0);
    let mut answers = app
        .client
        .clone()
        .verify_batch(input)
        .await
        .unwrap()
        .into_inner();
    let mut seen: HashMap<String, Expect> = HashMap::new();
    let mut attestations = 0;
    while let Some(item) = answers.next().await {
        let item = item.unwrap();
        if let Some(Item::Response(r)) = &item.result {
            assert_eq!(r.request_id, item.request_id);
            assert!(!r.attestation.is_empty());
            attestations += 1;
        }
        let got = outcome(&item);
        assert!(
            seen.insert(item.request_id.clone(), got).is_none(),
            "{} answered twice",
            item.request_id
        );
    }
    assert_eq!(seen.len() as u64, ITEMS, "every item answered");
    for n in 0..ITEMS {
        let (_, expect) = mixed_item(n);
        assert_eq!(seen[&format!("b-{n}")], expect, "item {n}");
    }
    assert_eq!(
        audit_rows(&url).await,
        attestations,
        "every checked item has its audit row, and no malformed one"
    );
}

#[tokio::test]
async fn a_caller_that_stops_reading_holds_the_server_to_its_window() {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.batch.window = 16;
    let app = spawn_app_with(settings).await;
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let input = tokio_stream::iter(0..1_000_000u64).map(move |n| {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut r = request(DAM.id, DAM.name);
        r.request_id = format!("s-{n}");
        r
    });
    // A caller whose streams take 64 KiB of answers unread (hyper's
    // default is 2 MiB: the caller's own memory, not the server's).
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client = pb::verification_service_client::VerificationServiceClient::new(channel);
    let mut answers = client
        .clone()
        .verify_batch(input)
        .await
        .unwrap()
        .into_inner();
    // Read one answer, then nothing for a while.
    answers.next().await.unwrap().unwrap();
    let mut before = (0, 0);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = (pulled.load(Ordering::Relaxed), audit_rows(&url).await);
        if now == before {
            break;
        }
        before = now;
    }
    let (sent, checked) = before;
    assert_eq!(
        (pulled.load(Ordering::Relaxed), audit_rows(&url).await),
        (sent, checked),
        "the stream stalls"
    );
    // What the server checked is its window (16), its queue (16) and the
    // answers the caller's 64 KiB window takes (about 60): about 100. What
    // the caller could send is what flow control let through: about 1,500
    // (on this machine: 98 and 1,440). A server that read on regardless
    // would have checked everything sent.
    assert!(checked < 400, "{checked} items checked without a reader");
    assert!(sent < 5_000, "{sent} items sent without a reader");
    // The stalled stream holds up no other call on its connection.
    let single = client.verify(request(DAM.id, DAM.name)).await.unwrap();
    assert_eq!(single.into_inner().verdict, pb::Verdict::Verified as i32);
    // Reading again, the stream goes on.
    for _ in 0..5_000 {
        answers.next().await.unwrap().unwrap();
    }
    assert!(pulled.load(Ordering::Relaxed) > sent);
}

/// A client on one TCP connection that the test can cut, as the death of
/// the client's process does.
async fn cuttable_client(
    addr: std::net::SocketAddr,
) -> (
    pb::verification_service_client::VerificationServiceClient<tonic::transport::Channel>,
    std::net::TcpStream,
) {
    let socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_nonblocking(true).unwrap();
    let cut = socket.try_clone().unwrap();
    let socket = std::sync::Mutex::new(Some(socket));
    let connector = tower::service_fn(move |_: http::Uri| {
        let socket = socket.lock().unwrap().take();
        async move {
            let socket = socket.ok_or_else(|| std::io::Error::other("one connection only"))?;
            let socket = tokio::net::TcpStream::from_std(socket)?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(socket))
        }
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap();
    (
        pb::verification_service_client::VerificationServiceClient::new(channel),
        cut,
    )
}

#[tokio::test]
async fn a_client_gone_mid_stream_stops_the_batch_and_every_answer_has_its_row() {
    let url = PgServer::shared().fresh_database().await;
    let app = spawn_app_with(test_settings(&url)).await;
    let (mut client, connection) = cuttable_client(app.addr).await;
    let input = tokio_stream::iter(0..1_000_000u64).map(|n| mixed_item(n).0);
    let mut answers = client.verify_batch(input).await.unwrap().into_inner();
    let mut answered = Vec::new();
    while answered.len() < 500 {
        if let Some(Item::Response(r)) = answers.next().await.unwrap().unwrap().result {
            answered.push(r.attestation_id);
        }
    }
    connection.shutdown(std::net::Shutdown::Both).unwrap();
    let rows = settled_audit_rows(&url, Duration::from_millis(500)).await;
    assert!(rows < 5_000, "checking stopped ({rows} rows)");
    let pool = PgPool::connect(&url).await.unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT attestation_id FROM audit_log")
        .fetch_all(&pool)
        .await
        .unwrap();
    for id in &answered {
        assert!(stored.contains(id), "answered {id} has no row");
    }
    // The server goes on serving.
    let single = app.verify(request(DAM.id, DAM.name)).await.unwrap();
    assert_eq!(single.verdict, pb::Verdict::Verified as i32);
}

fn agency(id: &str) -> AgencyConfig {
    AgencyConfig {
        purposes: vec![Purpose::Examination],
        ..AgencyConfig::demo(id)
    }
}

async fn batch_of(
    app: &TestApp,
    items: Vec<pb::VerifyRequest>,
) -> Result<Vec<Result<pb::VerifyBatchResponse, tonic::Status>>, tonic::Status> {
    let answers = app
        .client
        .clone()
        .verify_batch(tokio_stream::iter(items))
        .await?
        .into_inner();
    Ok(answers.collect().await)
}

fn exam(n: u64) -> pb::VerifyRequest {
    let mut r = request(DAM.id, DAM.name);
    r.request_id = format!("exam-{n}");
    r.purpose = pb::Purpose::Examination.into();
    r
}

#[tokio::test]
async fn policy_and_quotas_apply_to_every_item() {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.plaintext_agency = "board".into();
    settings.plaintext_operator = String::new();
    settings.agencies = vec![AgencyConfig {
        daily_quota: Some(5),
        ..agency("board")
    }];
    let app = spawn_app_with(settings.clone()).await;

    // A purpose the board does not have: that item alone is refused.
    let mut items: Vec<_> = (0..8).map(exam).collect();
    items[1].purpose = pb::Purpose::Healthcare.into();
    let answers = batch_of(&app, items).await.unwrap();
    assert_eq!(answers.len(), 8);
    let mut codes: Vec<String> = answers
        .into_iter()
        .map(|a| match a.unwrap().result.unwrap() {
            Item::Response(_) => "ok".to_owned(),
            Item::Error(status) => {
                let status = status_of(status);
                format!("{:?} {}", status.code(), reason(&status))
            }
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "PermissionDenied PURPOSE_NOT_ALLOWED",
            "ResourceExhausted DAILY_QUOTA_EXCEEDED",
            "ResourceExhausted DAILY_QUOTA_EXCEEDED",
            "ok",
            "ok",
            "ok",
            "ok",
            "ok",
        ],
        "five a day, each item counted"
    );

    // An agency without the batch grant is refused when the stream opens.
    settings.agencies = vec![AgencyConfig {
        allow_batch: false,
        ..agency("board")
    }];
    let url = PgServer::shared().fresh_database().await;
    settings.database_url = Some(Secret::new(&url));
    let app = spawn_app_with(settings).await;
    let refused = batch_of(&app, vec![exam(1)]).await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::PermissionDenied, "BATCH_NOT_ALLOWED")
    );
    assert_eq!(audit_rows(&url).await, 0);
}

/// A `google.rpc.Status` as the `tonic::Status` it came from.
fn status_of(status: tonic_types::pb::Status) -> tonic::Status {
    use prost::Message;
    tonic::Status::with_details(
        Code::from(status.code),
        status.message.clone(),
        status.encode_to_vec().into(),
    )
}

#[tokio::test]
async fn a_batch_over_its_rate_is_paced_not_refused() {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.plaintext_agency = "board".into();
    settings.plaintext_operator = String::new();
    settings.agencies = vec![AgencyConfig {
        rate_per_second: Some(4),
        burst: Some(4),
        ..agency("board")
    }];
    let app = spawn_app_with(settings).await;
    // The tests' clock moves a second every 20 ms while the batch runs.
    let clock = app.clock.clone();
    let ticker = tokio::spawn(async move {
        for t in 1.. {
            tokio::time::sleep(Duration::from_millis(20)).await;
            clock.set(NOW + t);
        }
    });
    let answers = batch_of(&app, (0..40).map(exam).collect()).await.unwrap();
    ticker.abort();
    assert_eq!(answers.len(), 40);
    for answer in answers {
        assert!(
            matches!(answer.unwrap().result, Some(Item::Response(_))),
            "every item waited for the rate and was checked"
        );
    }
}

#[tokio::test]
async fn a_stream_ends_after_its_maximum_items_are_answered() {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.batch.max_items = 10;
    let app = spawn_app_with(settings).await;
    let answers = batch_of(&app, (0..12).map(exam_as_healthcare).collect())
        .await
        .unwrap();
    assert_eq!(answers.len(), 11);
    assert!(answers[..10].iter().all(Result::is_ok));
    let end = answers[10].as_ref().unwrap_err();
    assert_eq!(
        (end.code(), reason(end).as_str()),
        (Code::ResourceExhausted, "BATCH_TOO_LONG")
    );
    assert_eq!(audit_rows(&url).await, 10);
}

fn exam_as_healthcare(n: u64) -> pb::VerifyRequest {
    let mut r = exam(n);
    r.purpose = pb::Purpose::Healthcare.into();
    r
}

/// The QR code of DAM's card.
pub(crate) fn dam_card() -> String {
    format!(
        "{}|312000111|{}|17051990|Nam|12 Ấp Bắc, Phường 10, Mỹ Tho, Tiền Giang|01072021",
        DAM.id, DAM.name
    )
}

fn qr(payload: &str) -> pb::VerifyCardQrRequest {
    let n = request(DAM.id, DAM.name).request_id;
    pb::VerifyCardQrRequest {
        request_id: format!("qr-{n}"),
        qr_payload: payload.to_owned(),
        purpose: pb::Purpose::Healthcare.into(),
        name_match: pb::NameMatch::Unspecified.into(),
    }
}

async fn card(app: &TestApp, payload: &str) -> Result<pb::VerifyResponse, tonic::Status> {
    let response = app.client.clone().verify_card_qr(qr(payload)).await?;
    Ok(response.into_inner())
}

async fn count_rows(url: &str, sql: &'static str) -> i64 {
    let pool = PgPool::connect(url).await.unwrap();
    let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

#[tokio::test]
async fn a_card_qr_code_is_checked_as_claims() {
    let url = PgServer::shared().fresh_database().await;
    let app = spawn_app_with(test_settings(&url)).await;

    // As scanned at the desk: BOM, CRLF, trailing separator.
    let request = qr(&format!("\u{feff}{}|\r\n", dam_card()));
    let request_id = request.request_id.clone();
    let verified = app
        .client
        .clone()
        .verify_card_qr(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.verdict, pb::Verdict::Verified as i32);
    let checks = verified.checks.unwrap();
    assert_eq!(
        checks.old_id_number.unwrap().outcome,
        pb::FieldOutcome::Match as i32,
        "the second recorded old CMND"
    );
    assert_eq!(
        checks.gender.unwrap().outcome,
        pb::FieldOutcome::Match as i32
    );
    let claims = app.jwks().await.verify(&verified.attestation, NOW).unwrap();
    assert_eq!(claims.nonce, request_id);

    // The code is a claim: a forged one with another birth date fails.
    let forged = card(&app, &dam_card().replace("17051990", "18051990"))
        .await
        .unwrap();
    assert_eq!(forged.reason, pb::Reason::FieldMismatch as i32);
    assert_eq!(
        forged.checks.unwrap().date_of_birth.unwrap().outcome,
        pb::FieldOutcome::Mismatch as i32
    );
    let wrong_old = card(&app, &dam_card().replace("312000111", "312999999"))
        .await
        .unwrap();
    assert_eq!(
        wrong_old.checks.unwrap().old_id_number.unwrap().outcome,
        pb::FieldOutcome::Mismatch as i32
    );

    // A malformed code names its field; nothing is checked or recorded.
    let bad = card(&app, &dam_card().replace("|Nam|", "|Male|"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let text = format!("{:?}", bad.get_error_details_vec());
    assert!(text.contains("qr_payload.gender") && text.contains("GENDER_UNKNOWN"));
    assert!(!text.contains("Male"), "the value is not repeated");
    let short = card(&app, "082090012345|Nguyễn Văn Đàm").await.unwrap_err();
    assert_eq!(reason(&short), "QR_FIELD_COUNT");
    assert_eq!(
        count_rows(
            &url,
            "SELECT count(*) FROM audit_log WHERE kind = 'verify_card_qr'"
        )
        .await,
        3
    );
    assert_eq!(count_rows(&url, "SELECT count(*) FROM audit_log").await, 3);
}

#[tokio::test]
async fn card_qr_checks_need_their_grant() {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.plaintext_agency = "clinic".into();
    settings.plaintext_operator = String::new();
    settings.agencies = vec![AgencyConfig {
        allow_card_qr: false,
        ..AgencyConfig::demo("clinic")
    }];
    let app = spawn_app_with(settings).await;
    let refused = app
        .client
        .clone()
        .verify_card_qr(qr(&dam_card()))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::PermissionDenied, "CARD_QR_NOT_ALLOWED")
    );
}

/// A candidates file: verified, mismatching, unknown, malformed at the
/// server (the ID number) and refused by the client (the date).
fn write_candidates(path: &std::path::Path, n: u64) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record([
        "request_id",
        "id_number",
        "full_name",
        "date_of_birth",
        "gender",
        "old_id_number",
    ])
    .unwrap();
    for i in 0..n {
        let id = format!("cand-{i}");
        let row: [&str; 6] = match i % 5 {
            0 => [&id, DAM.id, DAM.name, DAM.dob, "male", "312345678"],
            1 => [&id, DAM.id, "Nguyễn Văn Nam", "", "", ""],
            2 => [&id, UNKNOWN_ID, DAM.name, "", "", ""],
            3 => [&id, "0820900", DAM.name, "", "", ""],
            _ => [&id, DAM.id, DAM.name, "1990-13-01", "", ""],
        };
        w.write_record(row).unwrap();
    }
    w.flush().unwrap();
}

/// The results file's rows by request id, each id once.
fn results(path: &std::path::Path) -> HashMap<String, (String, String, String)> {
    let mut rows = HashMap::new();
    for record in csv::Reader::from_path(path).unwrap().records() {
        let r = record.unwrap();
        let row = (r[1].to_owned(), r[4].to_owned(), r[5].to_owned());
        assert!(
            rows.insert(r[0].to_owned(), row).is_none(),
            "{} written twice",
            &r[0]
        );
    }
    rows
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[tokio::test]
async fn the_batch_cli_writes_one_row_per_candidate_and_resumes_after_being_killed() {
    const CANDIDATES: u64 = 40_000;
    let url = PgServer::shared().fresh_database().await;
    let app = spawn_app_with(long_stream_settings(&url)).await;
    let dir = crate::store::tempdir::Dir::new("verify-batch");
    let (input, output) = (dir.path().join("in.csv"), dir.path().join("out.csv"));
    write_candidates(&input, CANDIDATES);
    let server = format!("http://{}", app.addr);
    let run = || {
        let mut cmd = vnid(
            None,
            &["verify-batch", "--purpose", "healthcare", "--quiet"],
        );
        cmd.arg("--input").arg(&input).arg("--output").arg(&output);
        cmd.args(["--server", &server]);
        cmd
    };

    // The candidates given as the output by mistake: refused, untouched.
    let before = std::fs::read(&input).unwrap();
    let mut mistake = vnid(None, &["verify-batch", "--quiet"]);
    mistake
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&input);
    mistake.args(["--server", &server]);
    let refused = tokio::task::spawn_blocking(move || mistake.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a results file"));
    assert_eq!(std::fs::read(&input).unwrap(), before);

    let mut child = run().spawn().unwrap();
    while lines(&output) < 1_000 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let interrupted = lines(&output) - 1;
    assert!((interrupted as u64) < CANDIDATES, "killed mid-run");
    // The items the server had in hand when the client died are still
    // checked and recorded; the resumed run starts once they are (a copy
    // sent while its first is still being checked may be checked too).
    settled_audit_rows(&url, Duration::from_millis(300)).await;

    // Off the runtime's thread: the server runs on it.
    let mut again = run();
    let resumed = tokio::task::spawn_blocking(move || again.output())
        .await
        .unwrap()
        .unwrap();
    assert!(resumed.status.success(), "{resumed:?}");
    let summary = String::from_utf8_lossy(&resumed.stderr);
    assert!(summary.contains("done before"), "{summary}");

    let rows = results(&output);
    assert_eq!(rows.len() as u64, CANDIDATES, "every candidate once");
    for i in 0..CANDIDATES {
        let (verdict, code, reason) = &rows[&format!("cand-{i}")];
        let want = match i % 5 {
            0 => ("VERDICT_VERIFIED", "", ""),
            1 | 2 => ("VERDICT_NOT_VERIFIED", "", ""),
            3 => ("", "InvalidArgument", "ID_NUMBER_FORMAT"),
            _ => ("", "InvalidArgument", "DATE_IMPOSSIBLE"),
        };
        assert_eq!(
            (verdict.as_str(), code.as_str(), reason.as_str()),
            want,
            "cand-{i}"
        );
    }
    // Candidates answered but not written before the kill were sent again
    // and got their first answer back: nothing was checked twice.
    assert_eq!(audit_rows(&url).await as u64, CANDIDATES / 5 * 3);
}

/// `VerifyMany`: the requests of one unary call answered like batch items,
/// in order, each with its response or its own error; its rows are batch
/// rows, a retry gets the first answers, and a call over the limit, or by
/// an agency without the batch right, is refused whole.
#[tokio::test]
async fn verify_many_answers_each_request_in_order() {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.plaintext_agency = "board".into();
    settings.plaintext_operator = String::new();
    settings.batch.max_many_items = 1_000;
    settings.agencies = vec![AgencyConfig {
        allow_batch: true,
        ..agency("board")
    }];
    let app = spawn_app_with(settings.clone()).await;
    let mut bad = exam(2);
    bad.id_number = "12345".into();
    let requests = vec![exam(1), bad, exam(3)];
    let many = |requests: Vec<pb::VerifyRequest>| {
        let mut client = app.client.clone();
        async move {
            client
                .verify_many(pb::VerifyManyRequest { requests })
                .await
                .map(|r| r.into_inner().results)
        }
    };
    let results = many(requests.clone()).await.unwrap();
    let ids: Vec<&str> = results.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["exam-1", "exam-2", "exam-3"]);
    let Some(Item::Response(first)) = &results[0].result else {
        panic!("{:?}", results[0]);
    };
    assert_eq!(first.verdict(), pb::Verdict::Verified);
    let Some(Item::Error(error)) = &results[1].result else {
        panic!("{:?}", results[1]);
    };
    let error = status_of(error.clone());
    assert_eq!(error.code(), Code::InvalidArgument);
    let fields = error.get_error_details().bad_request().cloned().unwrap();
    assert_eq!(fields.field_violations[0].field, "id_number");
    assert!(matches!(results[2].result, Some(Item::Response(_))));
    assert_eq!(
        settled_audit_rows(&url, Duration::from_millis(100)).await,
        2
    );

    // The same call again: the first answers, no new rows.
    let again = many(requests).await.unwrap();
    assert_eq!(again[0], results[0]);
    assert_eq!(again[2], results[2]);
    assert_eq!(audit_rows(&url).await, 2);

    // A thousand requests (well over one request's 16 KB) in one call.
    let thousand: Vec<_> = (100..1_100).map(exam).collect();
    let results = many(thousand).await.unwrap();
    assert_eq!(results.len(), 1_000);
    assert!(
        results
            .iter()
            .all(|r| matches!(r.result, Some(Item::Response(_))))
    );
    assert_eq!(results[999].request_id, "exam-1099");

    // One more than the limit: refused whole, nothing checked.
    let over = many((2_000..3_001).map(exam).collect()).await.unwrap_err();
    assert_eq!(over.code(), Code::InvalidArgument);
    let fields = over.get_error_details().bad_request().cloned().unwrap();
    assert_eq!(fields.field_violations[0].field, "requests");
    assert_eq!(
        settled_audit_rows(&url, Duration::from_millis(100)).await,
        1_002
    );

    // An agency without the batch right.
    settings.agencies = vec![AgencyConfig {
        allow_batch: false,
        ..agency("board")
    }];
    let other = PgServer::shared().fresh_database().await;
    settings.database_url = Some(Secret::new(&other));
    let refusing = spawn_app_with(settings).await;
    let refused = refusing
        .client
        .clone()
        .verify_many(pb::VerifyManyRequest {
            requests: vec![exam(1)],
        })
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::PermissionDenied, "BATCH_NOT_ALLOWED")
    );
    assert_eq!(audit_rows(&other).await, 0);
}

/// `vnid verify-batch --retries N`: candidates answered UNAVAILABLE (here:
/// the database stopped when the run starts) are retried within the run,
/// after the wait the server's RetryInfo asks, until each has its answer.
#[tokio::test]
async fn the_batch_cli_retries_what_the_server_could_not_answer_yet() {
    const CANDIDATES: u64 = 50;
    // A Postgres of this test's own, so stopping it disturbs no one else.
    let mut pg = PgServer::start();
    let url = pg.url("postgres");
    let app = spawn_app_with(test_settings(&url)).await;
    let dir = crate::store::tempdir::Dir::new("verify-batch-retries");
    let (input, output) = (dir.path().join("in.csv"), dir.path().join("out.csv"));
    write_candidates(&input, CANDIDATES);
    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();

    let mut cmd = vnid(
        None,
        &[
            "verify-batch",
            "--purpose",
            "healthcare",
            "--quiet",
            "--retries",
            "20",
        ],
    );
    cmd.arg("--input").arg(&input).arg("--output").arg(&output);
    cmd.args(["--server", &format!("http://{}", app.addr)]);
    let run = tokio::task::spawn_blocking(move || cmd.output());
    // Back after the first attempt has met the outage.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // (Kept until the end: dropped, it would stop again.)
    let _pg = tokio::task::spawn_blocking(move || {
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    let done = run.await.unwrap().unwrap();
    let said = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{said}");
    assert!(said.contains("to retry: retry 1 of 20"), "{said}");
    let rows = results(&output);
    assert_eq!(
        rows.len() as u64,
        CANDIDATES,
        "every candidate once: {said}"
    );
    for i in 0..CANDIDATES {
        let (verdict, code, _) = &rows[&format!("cand-{i}")];
        let want_verdict = match i % 5 {
            0 => "VERDICT_VERIFIED",
            1 | 2 => "VERDICT_NOT_VERIFIED",
            _ => "",
        };
        assert_eq!(verdict, want_verdict, "cand-{i}: {code} {said}");
        assert_ne!(code, "Unavailable", "cand-{i} not retried");
    }
}
