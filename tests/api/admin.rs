//! The operators' door: the plaintext admin endpoint (health, readiness,
//! the JWKS) and `grpc.health.v1`, saying the same thing about readiness.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::helpers::*;
use crate::pg::PgServer;

/// An HTTP/1.1 answer: status, headers (lower-case names), body.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// `METHOD path` over HTTP/1.1 (the admin endpoint, or the JSON door of a
/// plaintext listener), with `extra` header lines and `body`.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[&str],
    body: &str,
) -> Answer {
    let (status, headers, body) = http_bytes(addr, method, path, extra, body.as_bytes()).await;
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The same with a body of bytes: status, headers (lower-case names), and
/// the answer's body (a chunked one put together).
pub(crate) async fn http_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[&str],
    body: &[u8],
) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        let mut whole = Vec::new();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap(), 16).unwrap();
            if size == 0 {
                break;
            }
            whole.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest.drain(..end + 2 + size + 2);
        }
        rest = whole;
    }
    (status, headers, rest)
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Answer {
    http(addr, "GET", path, &[], "").await
}

/// Waits (a few seconds at most) until `/readyz` answers `status`.
async fn readyz_becomes(addr: SocketAddr, status: u16) -> Answer {
    let started = Instant::now();
    loop {
        let answer = get(addr, "/readyz").await;
        if answer.status == status || started.elapsed() > Duration::from_secs(15) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn grpc_health(app: &TestApp, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(app.channel.clone());
    let answer = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap();
    answer.into_inner().status()
}

#[tokio::test]
async fn the_admin_endpoint_answers_health_readiness_and_the_keys() {
    let app = spawn_app().await;
    let admin = app.admin.unwrap();
    let alive = get(admin, "/healthz").await;
    assert_eq!((alive.status, alive.body.as_str()), (200, "ok\n"));
    let ready = readyz_becomes(admin, 200).await;
    assert_eq!(ready.body, "ready\n");
    assert_eq!(grpc_health(&app, "").await, ServingStatus::Serving);
    assert_eq!(
        grpc_health(&app, "vnid.v1.VerificationService").await,
        ServingStatus::Serving
    );

    // The published keys, as GetSigningKeys gives them, cacheable.
    let jwks = get(admin, "/.well-known/jwks.json").await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.headers["content-type"], "application/jwk-set+json");
    assert_eq!(jwks.headers["cache-control"], "public, max-age=300");
    let over_grpc = app
        .client
        .clone()
        .get_signing_keys(vnid::pb::GetSigningKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jwks_json;
    let parsed = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    assert_eq!(parsed(&jwks.body), parsed(&over_grpc));
    let tag = jwks.headers["etag"].clone();
    let again = http(
        admin,
        "GET",
        "/.well-known/jwks.json",
        &[&format!("If-None-Match: {tag}")],
        "",
    )
    .await;
    assert_eq!((again.status, again.body.as_str()), (304, ""));
    let other = http(
        admin,
        "GET",
        "/.well-known/jwks.json",
        &["If-None-Match: \"other\""],
        "",
    )
    .await;
    assert_eq!(other.status, 200);

    assert_eq!(get(admin, "/nothing-here").await.status, 404);
    assert_eq!(
        http(admin, "POST", "/readyz", &["Content-Length: 0"], "")
            .await
            .status,
        405
    );

    // Plaintext, so loopback only unless said otherwise.
    let mut settings = test_settings(&PgServer::shared().fresh_database().await);
    settings.admin_listen = "0.0.0.0:0".into();
    let refused = vnid::app::Application::build(&settings)
        .await
        .err()
        .unwrap();
    assert!(
        refused.to_string().contains("admin_allow_remote"),
        "{refused}"
    );
}

#[tokio::test]
async fn readiness_follows_the_database_out_and_back() {
    // A Postgres of this test's own, so stopping it disturbs no one else.
    let mut pg = PgServer::start();
    let app = spawn_app_with(test_settings(&pg.url("postgres"))).await;
    let admin = app.admin.unwrap();
    assert_eq!(readyz_becomes(admin, 200).await.status, 200);

    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    let stopped = Instant::now();
    let down = readyz_becomes(admin, 503).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "not ready only after {:?}",
        stopped.elapsed()
    );
    assert!(
        down.body.contains("the mirror cannot be read"),
        "{}",
        down.body
    );
    assert!(
        down.body.contains("the audit store cannot be reached"),
        "{}",
        down.body
    );
    assert_eq!(grpc_health(&app, "").await, ServingStatus::NotServing);
    // Alive all the same: a probe that restarts it would not help.
    assert_eq!(get(admin, "/healthz").await.status, 200);

    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    let back = readyz_becomes(admin, 200).await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(grpc_health(&app, "").await, ServingStatus::Serving);
    drop(pg);
}

/// The value of the sample of `name` whose labels include every one of
/// `labels` (`key="value"`); 0 when there is none.
pub(crate) fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_the_calls_made_and_pass_promtool() {
    use vnid::pb;
    let app = spawn_app().await;
    let admin = app.admin.unwrap();
    for person in [DAM, THUY] {
        app.verify(request(person.id, person.name)).await.unwrap();
    }
    app.verify(request(DAM.id, "Nguyễn Văn Sai")).await.unwrap();
    let bad = app.verify(request("12345", DAM.name)).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let started = Instant::now();
    let text = loop {
        let text = get(admin, "/metrics").await.body;
        // The writer commits the rows a moment after the answers.
        if sample(&text, "vnid_audit_rows_total", &[]) >= 3.0
            || started.elapsed() > Duration::from_secs(10)
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let verify = [
        "grpc_service=\"vnid.v1.VerificationService\"",
        "grpc_method=\"Verify\"",
        "grpc_type=\"unary\"",
    ];
    assert_eq!(
        sample(&text, "grpc_server_started_total", &verify),
        4.0,
        "{text}"
    );
    let handled = |code: &str| {
        let mut labels = verify.to_vec();
        let code = format!("grpc_code=\"{code}\"");
        labels.push(&code);
        sample(&text, "grpc_server_handled_total", &labels)
    };
    assert_eq!(
        (handled("OK"), handled("InvalidArgument")),
        (3.0, 1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "grpc_server_handling_seconds_count", &verify),
        4.0,
        "{text}"
    );
    let checks = |verdict: &str| {
        sample(
            &text,
            "vnid_checks_total",
            &[
                &format!("verdict=\"{verdict}\""),
                "agency=\"demo\"",
                "purpose=\"PURPOSE_HEALTHCARE\"",
            ],
        )
    };
    assert_eq!(
        (checks("VERDICT_VERIFIED"), checks("VERDICT_NOT_VERIFIED")),
        (2.0, 1.0),
        "{text}"
    );
    assert!(text.contains("reason=\"REASON_FIELD_MISMATCH\""), "{text}");
    assert_eq!(sample(&text, "vnid_audit_rows_total", &[]), 3.0, "{text}");
    assert_eq!(sample(&text, "vnid_audit_write_failures_total", &[]), 0.0);
    assert!(sample(&text, "vnid_mirror_data_as_of_timestamp_seconds", &[]) > 0.0);
    assert_eq!(sample(&text, "vnid_build_info", &[]), 1.0);
    // No label holds a person's data or a request id (the tests' request
    // ids are all `req-N`).
    let labels = label_sets(&text);
    for secret in [
        DAM.id,
        THUY.id,
        DAM.name,
        THUY.name,
        "Nguyễn Văn Sai",
        "12345",
        "req-",
    ] {
        assert!(!labels.contains(secret), "{secret} in /metrics: {labels}");
    }
    // A path no method has counts as unknown, not as a label of its own.
    let mut raw = tonic::client::Grpc::new(app.channel.clone());
    raw.ready().await.unwrap();
    let unknown = raw
        .unary::<pb::VerifyRequest, pb::VerifyResponse, _>(
            tonic::Request::new(request(DAM.id, DAM.name)),
            http::uri::PathAndQuery::from_static("/vnid.v1.VerificationService/Guess"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unimplemented);
    let text = get(admin, "/metrics").await.body;
    assert!(!text.contains("Guess"), "{text}");
    assert_eq!(
        sample(
            &text,
            "grpc_server_started_total",
            &["grpc_method=\"unknown\""]
        ),
        1.0
    );

    // promtool, as Prometheus' own tooling reads it.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; the test command installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// The counters the cache, the mirror, the guard, the trail's writer and
/// batches keep show in /metrics, and move as the calls did.
#[tokio::test]
async fn metrics_follow_the_cache_the_guard_and_batches() {
    use tokio_stream::StreamExt;
    let redis = crate::redis_server::RedisServer::start();
    let mut settings = test_settings(&PgServer::shared().fresh_database().await);
    settings.redis_url = Some(vnid::config::Secret::new(redis.url()));
    settings.plaintext_agency = "desk".into();
    settings.plaintext_operator = String::new();
    settings.agencies = vec![vnid::policy::AgencyConfig {
        daily_quota: Some(6),
        ..vnid::policy::AgencyConfig::demo("desk")
    }];
    let app = spawn_app_with(settings).await;
    let admin = app.admin.unwrap();
    // A miss, a hit, an unknown number twice (a miss, then a negative hit).
    for (n, (id, name)) in [(DAM.id, DAM.name), (DAM.id, DAM.name)]
        .into_iter()
        .chain([(UNKNOWN_ID, DAM.name); 2])
        .enumerate()
    {
        let mut r = request(id, name);
        r.request_id = format!("one-{n}");
        app.verify(r).await.unwrap();
        // The cache is written a moment after the answer.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A batch of two: single-use lookups, past the cache.
    let items: Vec<_> = [THUY, DAM]
        .iter()
        .enumerate()
        .map(|(n, p)| {
            let mut r = request(p.id, p.name);
            r.request_id = format!("item-{n}");
            r
        })
        .collect();
    let answers: Vec<_> = (app.client.clone())
        .verify_batch(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    // The day's quota (6) is used up: the seventh is refused.
    let status = app.verify(request(THUY.id, THUY.name)).await.unwrap_err();
    assert_eq!(reason(&status), "DAILY_QUOTA_EXCEEDED");

    let text = get(admin, "/metrics").await.body;
    let lookups = |result: &str| {
        sample(
            &text,
            "vnid_cache_lookups_total",
            &[&format!("result=\"{result}\"")],
        )
    };
    assert_eq!(
        [
            lookups("miss"),
            lookups("hit"),
            lookups("negative_hit"),
            lookups("single_use")
        ],
        [2.0, 1.0, 1.0, 2.0],
        "{text}"
    );
    assert_eq!(sample(&text, "vnid_cache_errors_total", &[]), 0.0);
    assert_eq!(
        sample(&text, "vnid_cache_breaker_state", &["state=\"closed\""]),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "vnid_cache_breaker_state", &["state=\"open\""]),
        0.0
    );
    // Two misses and two batch items went to the mirror, in at most four
    // queries (the Postgres reads are gathered).
    assert_eq!(
        sample(&text, "vnid_mirror_lookups_total", &["shared=\"own\""]),
        4.0,
        "{text}"
    );
    let queries = sample(&text, "vnid_mirror_queries_total", &[]);
    assert!((1.0..=4.0).contains(&queries), "{text}");
    // The gathered sizes: as many queries, carrying the four numbers.
    assert_eq!(sample(&text, "vnid_mirror_query_keys_count", &[]), queries);
    assert_eq!(sample(&text, "vnid_mirror_query_keys_sum", &[]), 4.0);
    assert_eq!(
        sample(&text, "vnid_mirror_query_keys_bucket", &["le=\"+Inf\""]),
        queries,
        "{text}"
    );
    assert_eq!(
        sample(&text, "vnid_mirror_query_keys_bucket", &["le=\"4\""]),
        queries,
        "no query of more than four numbers: {text}"
    );
    assert_eq!(sample(&text, "vnid_batch_streams_total", &[]), 1.0);
    assert_eq!(
        sample(&text, "vnid_batch_items_total", &["outcome=\"verdict\""]),
        2.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "vnid_refusals_total",
            &["reason=\"daily_quota\"", "agency=\"desk\""]
        ),
        1.0,
        "{text}"
    );
    assert!(
        text.contains("# TYPE vnid_audit_queue_rows gauge"),
        "{text}"
    );
    let labels = label_sets(&text);
    for secret in [DAM.id, THUY.id, UNKNOWN_ID, "one-", "item-"] {
        assert!(!labels.contains(secret), "{secret} in /metrics: {labels}");
    }
}

/// Every sample's labels (`{…}`), and the help texts: what is text in
/// /metrics. (Values are numbers, where a short number such as `12345` can
/// turn up by chance.)
fn label_sets(text: &str) -> String {
    text.lines()
        .map(|line| match (line.find('{'), line.rfind('}')) {
            _ if line.starts_with('#') => line,
            (Some(open), Some(close)) if open < close => &line[open..=close],
            _ => line.split(' ').next().unwrap_or(""),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Past `mirror.max_age`, checks are refused as stale, never answered from
/// data too old to trust; readiness does not fail on it (every replica
/// would leave the balancer at once), and the age shows in /metrics.
#[tokio::test]
async fn a_stale_mirror_answers_mirror_stale_and_stays_ready() {
    let mut settings = test_settings(&PgServer::shared().fresh_database().await);
    settings.mirror.max_age = Some(vnid::config::Age(2 * 3_600));
    let app = spawn_app_with(settings).await;
    let admin = app.admin.unwrap();
    // The fixtures' data is an hour old: fresh enough.
    app.verify(request(DAM.id, DAM.name)).await.unwrap();

    app.clock.set(DATA_AS_OF + 2 * 3_600 + 1);
    // Whether the person was looked up before (cached) or not.
    for person in [THUY, DAM] {
        let status = app
            .verify(request(person.id, person.name))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert_eq!(reason(&status), "MIRROR_STALE");
        let retry = status.get_error_details().retry_info().cloned().unwrap();
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(60)));
    }
    assert_eq!(readyz_becomes(admin, 200).await.status, 200);
    let text = get(admin, "/metrics").await.body;
    assert_eq!(
        sample(&text, "vnid_mirror_data_as_of_timestamp_seconds", &[]),
        DATA_AS_OF as f64
    );

    // A newer import (here: the clock back) and checks are answered again.
    app.clock.set(NOW);
    app.verify(request(THUY.id, THUY.name)).await.unwrap();
}

/// A mirror nothing was ever imported into has no data to trust: under an
/// age bound its checks answer MIRROR_STALE, never NOT_FOUND for everyone.
#[tokio::test]
async fn a_mirror_never_imported_is_stale_under_an_age_bound() {
    let mut settings = test_settings(&PgServer::shared().fresh_database().await);
    settings.mirror.max_age = Some(vnid::config::Age(7 * 86_400));
    let app = spawn_bare(settings).await;
    let status = app.verify(request(DAM.id, DAM.name)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "MIRROR_STALE");
    let text = get(app.admin.unwrap(), "/metrics").await.body;
    assert_eq!(
        sample(&text, "vnid_refusals_total", &["reason=\"mirror_stale\""]),
        1.0,
        "{text}"
    );
    // Loaded, it answers.
    vnid::mirror::load_records(
        &app.mirror,
        vnid::mirror::LoadMode::Delta,
        None,
        fixtures().into_iter(),
    )
    .await
    .unwrap();
    let answer = app.verify(request(THUY.id, THUY.name)).await.unwrap();
    assert_eq!(answer.verdict(), vnid::pb::Verdict::Verified);
}
