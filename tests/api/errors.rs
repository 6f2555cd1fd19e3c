//! Bad input, refusals and outages: the right code, the right fields, and
//! never a false verdict.

use tonic::Code;
use tonic_types::StatusExt;
use vnid::pb;

use crate::helpers::*;
use crate::pg::PgServer;

fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.reason.clone()))
                .collect()
        })
        .unwrap_or_default()
}

type Edit = fn(&mut pb::VerifyRequest);

/// Each bad field, and the field and reason its refusal names.
fn bad_fields() -> Vec<(Edit, &'static str, &'static str)> {
    vec![
        (
            |r| r.request_id = String::new(),
            "request_id",
            "REQUEST_ID_EMPTY",
        ),
        (
            |r| r.request_id = "x".repeat(65),
            "request_id",
            "REQUEST_ID_TOO_LONG",
        ),
        (
            |r| r.request_id = "a/b".into(),
            "request_id",
            "REQUEST_ID_BAD_CHARACTER",
        ),
        (
            |r| r.id_number = "08209001234".into(),
            "id_number",
            "ID_NUMBER_FORMAT",
        ),
        (
            |r| r.id_number = "08209001234５".into(),
            "id_number",
            "ID_NUMBER_FORMAT",
        ),
        (
            |r| r.id_number = "099090012345".into(),
            "id_number",
            "ID_NUMBER_UNKNOWN_PREFIX",
        ),
        (
            |r| r.claims.as_mut().unwrap().full_name = "Nguyễn 2".into(),
            "claims.full_name",
            "NAME_BAD_CHARACTER",
        ),
        (
            |r| r.claims.as_mut().unwrap().full_name = " \t ".into(),
            "claims.full_name",
            "NAME_EMPTY",
        ),
        (
            |r| r.claims.as_mut().unwrap().full_name = "a".repeat(151),
            "claims.full_name",
            "NAME_TOO_LONG",
        ),
        (
            |r| r.claims.as_mut().unwrap().date_of_birth = date(1990, 2, 30),
            "claims.date_of_birth",
            "DATE_IMPOSSIBLE",
        ),
        (
            |r| r.claims.as_mut().unwrap().date_of_birth = date(1990, 13, 0),
            "claims.date_of_birth",
            "DATE_IMPOSSIBLE",
        ),
        (
            |r| r.claims.as_mut().unwrap().date_of_birth = date(0, 5, 1),
            "claims.date_of_birth",
            "DATE_MISSING_PART",
        ),
        (
            |r| r.claims.as_mut().unwrap().gender = 3,
            "claims.gender",
            "GENDER_UNKNOWN",
        ),
        (
            |r| r.claims.as_mut().unwrap().old_id_number = "31234567".into(),
            "claims.old_id_number",
            "OLD_ID_NUMBER_FORMAT",
        ),
        (|r| r.claims = None, "claims", "CLAIMS_EMPTY"),
        (
            |r| r.purpose = pb::Purpose::Unspecified.into(),
            "purpose",
            "PURPOSE_UNSPECIFIED",
        ),
        (|r| r.purpose = 99, "purpose", "PURPOSE_UNKNOWN"),
        (|r| r.name_match = 42, "name_match", "NAME_MATCH_UNKNOWN"),
    ]
}

#[tokio::test]
async fn each_bad_field_is_named() {
    let app = spawn_app().await;
    for (edit, field, code) in bad_fields() {
        let mut req = request(DAM.id, DAM.name);
        edit(&mut req);
        let status = app.verify(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(
            violations(&status),
            [(field.to_owned(), code.to_owned())],
            "{field}"
        );
        assert_eq!(reason(&status), code);
    }
}

/// A request in the proto3 JSON mapping, its enum fields as numbers (the
/// mapping takes any number, known or not, as the binary encoding does).
fn as_json(request: &pb::VerifyRequest) -> serde_json::Value {
    let mut known = request.clone();
    known.purpose = 0;
    known.name_match = 0;
    if let Some(claims) = known.claims.as_mut() {
        claims.gender = 0;
    }
    let mut json = serde_json::to_value(&known).unwrap();
    json["purpose"] = request.purpose.into();
    json["nameMatch"] = request.name_match.into();
    if let Some(claims) = &request.claims {
        json["claims"]["gender"] = claims.gender.into();
    }
    json
}

/// The same table over the JSON door: the same HTTP 400 for each, with the
/// same field and reason as over gRPC.
#[tokio::test]
async fn each_bad_field_is_named_over_json_too() {
    let app = spawn_app().await;
    for (edit, field, code) in bad_fields() {
        let mut req = request(DAM.id, DAM.name);
        edit(&mut req);
        let answer = crate::json::post_json(&app, "/v1/verify", &as_json(&req)).await;
        assert_eq!(answer.status, 400, "{field}: {}", answer.body);
        let status: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(status["code"], 3, "{field}: {status}");
        assert_eq!(status["details"][0]["reason"], code, "{field}: {status}");
        let violations: Vec<(&str, &str)> = status["details"][1]["fieldViolations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["field"].as_str().unwrap(), v["reason"].as_str().unwrap()))
            .collect();
        assert_eq!(violations, [(field, code)], "{field}");
    }
    // And a good one, as numbers too, is answered.
    let good =
        crate::json::post_json(&app, "/v1/verify", &as_json(&request(DAM.id, DAM.name))).await;
    assert_eq!(good.status, 200, "{}", good.body);
}

#[tokio::test]
async fn errors_never_echo_personal_data() {
    let app = spawn_app().await;
    let mut req = request("0820900123456", "Nguyễn Văn Đàm 7");
    req.claims.as_mut().unwrap().date_of_birth = date(1990, 2, 30);
    let status = app.verify(req).await.unwrap_err();
    assert_eq!(violations(&status).len(), 3);
    let everything = format!("{status:?} {:?}", status.get_error_details());
    for secret in ["0820900123456", "Nguy", "1990"] {
        assert!(
            !everything.contains(secret),
            "{secret} echoed in {everything}"
        );
    }
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let app = spawn_app().await;
    let mut req = request(DAM.id, DAM.name);
    req.claims.as_mut().unwrap().full_name = "a ".repeat(20_000);
    let status = app.verify(req).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(reason(&status), "MESSAGE_TOO_LARGE");
}

/// A message whose field 1 is a number where `VerifyRequest` has text.
#[derive(Clone, PartialEq, prost::Message)]
struct NotAVerifyRequest {
    #[prost(uint64, tag = "1")]
    request_id: u64,
}

/// Sends a `NotAVerifyRequest` to `path`; the refusal.
async fn send_not_a_request(app: &TestApp, path: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(NotAVerifyRequest { request_id: 7 }),
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<NotAVerifyRequest, pb::VerifyResponse>::default(),
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn undecodable_requests_carry_an_error_info_too() {
    let app = spawn_app().await;
    let status = send_not_a_request(&app, "/vnid.v1.VerificationService/Verify").await;
    assert_ne!(status.code(), Code::Ok);
    assert_eq!(reason(&status), "MESSAGE_UNDECODABLE");
    // A method this server does not have.
    let status = send_not_a_request(&app, "/vnid.v1.VerificationService/Nope").await;
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(reason(&status), "METHOD_UNKNOWN");
}

#[tokio::test]
async fn the_first_checks_after_a_postgres_restart_are_answered() {
    // Connections in steady use are not pinged before each query, and the
    // mirror keeps some between reads; those left idle are pinged, or given
    // back to the pool, so the restart breaks no call made after it: neither
    // a mirror read nor an audit append.
    let mut pg = PgServer::start();
    let app = spawn_app_with(test_settings(&pg.url("postgres"))).await;
    for person in [DAM, THUY] {
        app.verify(request(person.id, person.name)).await.unwrap();
    }
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    // Longer than a connection may sit idle without a ping.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    for person in [DAM, THUY, HOA_DECEASED, LAN_CANCELLED] {
        let answer = app.verify(request(person.id, person.name)).await;
        assert!(answer.is_ok(), "{}: {answer:?}", person.id);
    }
    drop(pg);
}

#[tokio::test]
async fn postgres_down_is_unavailable_never_a_verdict() {
    // A server of this test's own, so stopping it disturbs no one else.
    let mut pg = PgServer::start();
    let url = pg.url("postgres");
    // The audit trail elsewhere: this test is about the mirror.
    let mut settings = test_settings(&url);
    let audit_url = PgServer::shared().fresh_database().await;
    settings.audit.database_url = Some(vnid::config::Secret::new(audit_url.as_str()));
    let app = spawn_app_with(settings).await;
    assert_eq!(
        app.verify(request(DAM.id, DAM.name))
            .await
            .unwrap()
            .verdict(),
        pb::Verdict::Verified
    );

    pg.stop();
    // What was never cached needs the mirror: no verdict without it.
    for id in [THUY.id, UNKNOWN_ID] {
        let status = app.verify(request(id, THUY.name)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(reason(&status), "MIRROR_UNAVAILABLE");
        assert!(status.get_error_details().retry_info().is_some());
        assert!(
            !status.message().contains("127.0.0.1"),
            "{}",
            status.message()
        );
    }
    // Not even from the cache, once the instance has seen the mirror go
    // (it polls every 50 ms here).
    let mut cached = app.verify(request(DAM.id, DAM.name)).await;
    for _ in 0..100 {
        if cached.is_err() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        cached = app.verify(request(DAM.id, DAM.name)).await;
    }
    assert_eq!(cached.unwrap_err().code(), Code::Unavailable);
    // Malformed input is refused before any database is touched.
    let status = app.verify(request("123", DAM.name)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // The public keys need no database either.
    assert!(
        app.client
            .clone()
            .get_signing_keys(pb::GetSigningKeysRequest {})
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn batch_items_and_card_qr_codes_check_their_input_like_verify() {
    let app = spawn_app().await;
    let status = app
        .client
        .clone()
        .verify_card_qr(pb::VerifyCardQrRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&status),
        [
            ("request_id".to_owned(), "REQUEST_ID_EMPTY".to_owned()),
            ("qr_payload".to_owned(), "QR_EMPTY".to_owned()),
            ("purpose".to_owned(), "PURPOSE_UNSPECIFIED".to_owned()),
        ]
    );
    // A bad item is answered with its error; the good one after it too.
    let stream = tokio_stream::iter(vec![
        pb::VerifyRequest {
            request_id: "bad-1".into(),
            ..Default::default()
        },
        request(DAM.id, DAM.name),
    ]);
    let mut answers = app
        .client
        .clone()
        .verify_batch(stream)
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(item) = answers.message().await.unwrap() {
        match item.result.unwrap() {
            pb::verify_batch_response::Result::Error(e) => {
                assert_eq!(item.request_id, "bad-1");
                assert_eq!(e.code, Code::InvalidArgument as i32);
                seen.push("error");
            }
            pb::verify_batch_response::Result::Response(r) => {
                assert_eq!(r.verdict(), pb::Verdict::Verified);
                seen.push("verified");
            }
        }
    }
    seen.sort();
    assert_eq!(seen, ["error", "verified"]);
}

#[tokio::test]
async fn policy_refusals_are_permission_denied() {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    let mut agency = vnid::policy::AgencyConfig::demo("hospital");
    agency.purposes = vec![vnid::domain::Purpose::Healthcare];
    agency.least_strict_name_match = vnid::policy::NameLevelConfig::Exact;
    settings.agencies = vec![agency];
    settings.plaintext_agency = "hospital".into();
    settings.plaintext_operator = String::new();
    let app = spawn_app_with(settings).await;

    let mut exam = request(DAM.id, DAM.name);
    exam.purpose = pb::Purpose::Examination.into();
    let status = app.verify(exam).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::PermissionDenied, "PURPOSE_NOT_ALLOWED")
    );

    let mut loose = request(DAM.id, DAM.name);
    loose.name_match = pb::NameMatch::Folded.into();
    let status = app.verify(loose).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::PermissionDenied, "NAME_MATCH_NOT_ALLOWED")
    );

    assert_eq!(
        app.verify(request(DAM.id, DAM.name))
            .await
            .unwrap()
            .verdict(),
        pb::Verdict::Verified
    );
}
