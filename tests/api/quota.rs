//! Per-agency rates and daily quotas, shared by two instances through a
//! Redis server the test starts, and held per instance once it is gone.
//! Time is the tests' fixed clock, moved by hand.

use tonic::Code;
use vnid::config::Secret;
use vnid::domain::Purpose;
use vnid::pb;
use vnid::policy::AgencyConfig;

use crate::helpers::*;
use crate::pg::PgServer;
use crate::redis_server::RedisServer;

fn reason_and_retry(status: &tonic::Status) -> (String, Option<std::time::Duration>) {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    (
        details
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_default(),
        details.retry_info().and_then(|r| r.retry_delay),
    )
}

/// `n` checks; how many were admitted, and the last refusal.
async fn checks(app: &TestApp, n: usize) -> (usize, Option<tonic::Status>) {
    let mut admitted = 0;
    let mut refused = None;
    for _ in 0..n {
        match app.verify(request(DAM.id, DAM.name)).await {
            Ok(_) => admitted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused = Some(status);
            }
        }
    }
    (admitted, refused)
}

/// A server for one agency (`hospital`, healthcare only) sharing `redis`.
fn hospital_settings(
    url: &str,
    redis: &RedisServer,
    hospital: AgencyConfig,
) -> vnid::config::Settings {
    let mut s = test_settings(url);
    s.redis_url = Some(Secret::new(redis.url()));
    s.plaintext_agency = hospital.id.clone();
    s.plaintext_operator = String::new();
    s.agencies = vec![AgencyConfig {
        purposes: vec![Purpose::Healthcare],
        ..hospital
    }];
    s
}

/// Two instances of `settings` on one database (the fixtures loaded once).
async fn two_instances(settings: vnid::config::Settings) -> (TestApp, TestApp) {
    let a = spawn_app_with(settings.clone()).await;
    let mut shared = settings;
    shared.data_dir = a.data_dir.clone();
    let b = spawn_bare(shared).await;
    (a, b)
}

#[tokio::test]
async fn rates_and_daily_quotas_hold_across_instances_and_without_redis() {
    let mut redis = RedisServer::start();
    let url = PgServer::shared().fresh_database().await;
    // One a second, three at once, six a day.
    let hospital = AgencyConfig {
        rate_per_second: Some(1),
        burst: Some(3),
        daily_quota: Some(6),
        ..AgencyConfig::demo("hospital")
    };
    let (a, b) = two_instances(hospital_settings(&url, &redis, hospital)).await;
    let at = |t: i64| {
        a.clock.set(t);
        b.clock.set(t);
    };

    at(NOW);
    assert_eq!(checks(&a, 2).await.0, 2);
    assert_eq!(checks(&b, 1).await.0, 1, "the burst is shared");
    let (admitted, refused) = checks(&b, 1).await;
    assert_eq!(admitted, 0);
    let (reason, retry) = reason_and_retry(&refused.unwrap());
    assert_eq!(reason, "RATE_LIMITED");
    assert_eq!(retry, Some(std::time::Duration::from_secs(1)));
    assert_eq!(checks(&a, 1).await.0, 0);

    at(NOW + 1);
    assert_eq!(checks(&a, 2).await.0, 1, "one more each second");

    at(NOW + 60);
    // Four used today: two more, then the day is over for this agency.
    let (admitted, refused) = checks(&b, 3).await;
    assert_eq!(admitted, 2);
    let (reason, retry) = reason_and_retry(&refused.unwrap());
    assert_eq!(reason, "DAILY_QUOTA_EXCEEDED");
    assert_eq!(retry, Some(std::time::Duration::from_secs(86_400 - 60)));
    assert_eq!(checks(&a, 1).await.0, 0);

    // The next day, with Redis gone: each instance holds the limits alone.
    redis.kill();
    at(NOW + 86_400);
    assert_eq!(checks(&a, 5).await.0, 3, "instance A: its own burst");
    assert_eq!(checks(&b, 5).await.0, 3, "instance B: its own burst");
    at(NOW + 86_400 + 60);
    assert_eq!(checks(&a, 5).await.0, 3);
    assert_eq!(checks(&a, 5).await.0, 0, "six a day, per instance");
}

#[tokio::test]
async fn a_number_failing_too_often_is_suspended_for_the_failing_agency_alone_with_alerts() {
    let mut redis = RedisServer::start();
    let url = PgServer::shared().fresh_database().await;
    let settings = |agency: &str| {
        let mut s = test_settings(&url);
        s.redis_url = Some(Secret::new(redis.url()));
        s.defences.id_failures_per_day = 3;
        s.defences.id_failure_agencies_alert = 2;
        s.plaintext_agency = agency.into();
        s.plaintext_operator = String::new();
        s.agencies = vec![AgencyConfig::demo(agency)];
        s
    };
    let hospital = spawn_app_with(settings("hospital")).await;
    let mut other = settings("exam-board");
    other.data_dir = hospital.data_dir.clone();
    let board = spawn_bare(other).await;

    // Four wrong names for one number, from one agency.
    for _ in 0..4 {
        let r = board
            .verify(request(DAM.id, "Nguyễn Văn Sai"))
            .await
            .unwrap();
        assert_eq!(r.verdict(), pb::Verdict::NotVerified);
    }
    // Now even its right name fails fast for that agency ...
    let status = board.verify(request(DAM.id, DAM.name)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let (reason, retry) = reason_and_retry(&status);
    assert_eq!(reason, "ID_NUMBER_SUSPENDED");
    assert!(retry.is_some_and(|r| r > std::time::Duration::from_secs(23 * 3_600)));
    // ... while a hospital with the right claims is never refused for it.
    for _ in 0..3 {
        assert_eq!(
            hospital
                .verify(request(DAM.id, DAM.name))
                .await
                .unwrap()
                .verdict(),
            pb::Verdict::Verified
        );
    }
    // A second agency failing on the number raises the cross-agency alert.
    hospital
        .verify(request(DAM.id, "Nguyễn Văn Sai"))
        .await
        .unwrap();
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    let alerts: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("id_number_failures"))
        .collect();
    assert!(
        alerts
            .iter()
            .any(|l| l.contains("\"alert\":\"id_number_failures\"") && l.contains("exam-board")),
        "the agency's alert is logged"
    );
    assert!(
        alerts
            .iter()
            .any(|l| l.contains("id_number_failures_across_agencies")),
        "the cross-agency alert is logged"
    );
    assert!(
        alerts
            .iter()
            .all(|l| !l.contains(DAM.id) && !l.contains("Sai"))
    );

    // Without Redis, each instance counts on its own, still per agency.
    redis.kill();
    for _ in 0..4 {
        board.verify(request(UNKNOWN_ID, DAM.name)).await.unwrap();
    }
    let status = board
        .verify(request(UNKNOWN_ID, DAM.name))
        .await
        .unwrap_err();
    assert_eq!(reason_and_retry(&status).0, "ID_NUMBER_SUSPENDED");
    assert!(hospital.verify(request(UNKNOWN_ID, DAM.name)).await.is_ok());
}

#[tokio::test]
async fn an_enumerating_agency_is_alerted_on_and_throttled_and_a_busy_desk_is_not() {
    let url = PgServer::shared().fresh_database().await;
    let settings = |agency: &str| {
        let mut s = test_settings(&url);
        s.defences.not_verified_alert_share = 0.5;
        s.plaintext_agency = agency.into();
        s.plaintext_operator = String::new();
        s.agencies = vec![AgencyConfig {
            detail: vnid::policy::DetailLevel::None,
            ..AgencyConfig::demo(agency)
        }];
        s
    };
    let harvester = spawn_app_with(settings("harvester")).await;
    let mut desk_settings = settings("busy-desk");
    desk_settings.data_dir = harvester.data_dir.clone();
    let desk = spawn_bare(desk_settings).await;

    // Walking through the men born in 1990 and registered in Tiền Giang,
    // with a common name.
    let mut refused_at = None;
    for k in 0..500 {
        let id = format!("082090{k:06}");
        match harvester.verify(request(&id, "Nguyễn Văn An")).await {
            Ok(answer) => assert_eq!(answer.verdict(), pb::Verdict::NotVerified),
            Err(status) => {
                assert_eq!(reason_and_retry(&status).0, "AGENCY_THROTTLED");
                refused_at = Some(k + 1);
                break;
            }
        }
    }
    let refused_at = refused_at.expect("throttled within 500 checks");
    assert!(refused_at <= 500, "throttled at check {refused_at}");
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    let alerts: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("not_verified_share") && l.contains("harvester"))
        .collect();
    assert_eq!(alerts.len(), 1, "one alert");
    assert!(!alerts[0].contains("082090") && !alerts[0].contains("An\""));
    // Throttled: one check a second.
    harvester.clock.set(NOW + 1);
    assert!(
        harvester
            .verify(request(UNKNOWN_ID, DAM.name))
            .await
            .is_ok()
    );
    let status = harvester
        .verify(request(UNKNOWN_ID, DAM.name))
        .await
        .unwrap_err();
    assert_eq!(reason_and_retry(&status).0, "AGENCY_THROTTLED");
    // The alert and the refusals show in /metrics.
    let metrics = crate::admin::get(harvester.admin.unwrap(), "/metrics")
        .await
        .body;
    let harvester_label = "agency=\"harvester\"";
    assert_eq!(
        crate::admin::sample(
            &metrics,
            "vnid_alerts_total",
            &["alert=\"not_verified_share\"", harvester_label]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        crate::admin::sample(
            &metrics,
            "vnid_refusals_total",
            &["reason=\"throttled\"", harvester_label]
        ),
        2.0,
        "{metrics}"
    );

    // A hospital desk: mostly right, a wrong name now and then, a mistyped
    // number, and a bad quarter hour of five failures in a row.
    for i in 0..1_000 {
        let r = match i % 40 {
            _ if (500..505).contains(&i) => request(UNKNOWN_ID, DAM.name),
            7 => request(DAM.id, "Nguyễn Văn Đam"),
            19 => request("082090012354", DAM.name),
            n if n % 2 == 0 => request(DAM.id, DAM.name),
            _ => request(THUY.id, THUY.name),
        };
        desk.verify(r).await.expect("the desk is never throttled");
    }
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("not_verified_share") && l.contains("busy-desk"))
    );
}

#[tokio::test]
async fn a_day_used_up_stays_used_up_when_redis_is_flushed_or_gone() {
    let mut redis = RedisServer::start();
    let url = PgServer::shared().fresh_database().await;
    let hospital = AgencyConfig {
        daily_quota: Some(6),
        ..AgencyConfig::demo("hospital")
    };
    let mut settings = hospital_settings(&url, &redis, hospital);
    settings.quota.instances = 2;
    let (a, b) = two_instances(settings).await;
    let at = |t: i64| {
        a.clock.set(t);
        b.clock.set(t);
    };
    at(NOW);
    assert_eq!(checks(&a, 4).await.0, 4);
    // Redis restarted empty: the day's count comes back from the trail.
    let mut conn = redis.client().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let (admitted, refused) = checks(&b, 4).await;
    assert_eq!(admitted, 2, "six a day, whatever Redis forgot");
    assert_eq!(
        reason_and_retry(&refused.unwrap()).0,
        "DAILY_QUOTA_EXCEEDED"
    );

    // Redis gone: no instance hands out a fresh day either.
    redis.kill();
    assert_eq!(checks(&a, 3).await.0, 0);
    assert_eq!(checks(&b, 3).await.0, 0);
    // The next day each of the two instances grants at most its half of
    // what the trail says is left when it first needs to know: never more
    // than the day's quota in all.
    at(NOW + 86_400);
    assert_eq!(checks(&a, 5).await.0, 3, "half of six");
    assert_eq!(checks(&b, 5).await.0, 1, "half of the three left");
}
