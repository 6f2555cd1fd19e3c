//! The JSON door: the same calls over HTTP/1.1 on the gRPC listener, in
//! the proto3 JSON mapping, answered like gRPC (verdict, reason, claims,
//! refusals with the same details), with the JWKS at a URL.

use crate::admin::{Answer, http};
use crate::helpers::*;
use vnid::pb;

/// `POST path` with a JSON body on the app's listener.
pub(crate) async fn post_json(app: &TestApp, path: &str, body: &serde_json::Value) -> Answer {
    http(
        app.addr,
        "POST",
        path,
        &["Content-Type: application/json"],
        &body.to_string(),
    )
    .await
}

fn json_of(answer: &Answer) -> serde_json::Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {}", answer.body))
}

/// The claims of an attestation, less what differs between two checks
/// (their ids and times).
fn lasting_claims(app_jwks: &vnid::attest::Jwks, token: &str) -> serde_json::Value {
    let claims = app_jwks.verify(token, NOW).unwrap();
    let mut claims = serde_json::to_value(claims).unwrap();
    for varying in ["jti", "nonce", "iat", "exp"] {
        claims.as_object_mut().unwrap().remove(varying);
    }
    claims
}

#[tokio::test]
async fn json_and_grpc_give_the_same_answer() {
    let app = spawn_app().await;
    let jwks = app.jwks().await;
    for (n, (person, name)) in [
        (DAM, DAM.name),
        (THUY, THUY.name),
        (DAM, "Nguyễn Văn Sai"),
        (HOA_DECEASED, HOA_DECEASED.name),
    ]
    .into_iter()
    .enumerate()
    {
        let mut grpc_request = request(person.id, name);
        grpc_request.request_id = format!("grpc-{n}");
        let grpc = app.verify(grpc_request.clone()).await.unwrap();
        let mut json_request = grpc_request;
        json_request.request_id = format!("json-{n}");
        let body = serde_json::to_value(&json_request).unwrap();
        assert!(body.get("idNumber").is_some(), "camelCase names: {body}");
        let answer = post_json(&app, "/v1/verify", &body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        let json: pb::VerifyResponse = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(json.verdict, grpc.verdict, "{}", answer.body);
        assert_eq!(json.reason, grpc.reason);
        assert_eq!(json.checks, grpc.checks);
        assert_eq!(json.request_id, format!("json-{n}"));
        assert_eq!(
            lasting_claims(&jwks, &json.attestation),
            lasting_claims(&jwks, &grpc.attestation)
        );
        // Enum values by name, as the mapping has them.
        let raw = json_of(&answer);
        assert!(
            raw["verdict"].as_str().unwrap().starts_with("VERDICT_"),
            "{raw}"
        );
    }
    // A retry over JSON gets the first answer.
    let body = serde_json::to_value(request(DAM.id, DAM.name)).unwrap();
    let first = post_json(&app, "/v1/verify", &body).await;
    let again = post_json(&app, "/v1/verify", &body).await;
    assert_eq!(
        json_of(&first)["attestation"],
        json_of(&again)["attestation"]
    );
}

#[tokio::test]
async fn refusals_over_json_carry_the_grpc_details_and_http_status() {
    let app = spawn_app().await;
    let mut bad = request("12345", DAM.name);
    bad.request_id = "bad-1".into();
    let answer = post_json(&app, "/v1/verify", &serde_json::to_value(&bad).unwrap()).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let status = json_of(&answer);
    assert_eq!(status["code"], 3);
    let details = status["details"].as_array().unwrap();
    assert_eq!(
        details[0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    assert_eq!(details[0]["reason"], "ID_NUMBER_FORMAT");
    assert_eq!(
        details[1]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    assert_eq!(details[1]["fieldViolations"][0]["field"], "id_number");
    assert!(!answer.body.contains("12345"), "echoed: {}", answer.body);

    // Not JSON, or not the message: INVALID_ARGUMENT, named as gRPC names
    // an undecodable message; no value is echoed.
    for body in [
        "{\"requestId\": ",
        "{\"idNumber\": 12, \"secretField\": \"Nguyễn\"}",
    ] {
        let answer = http(
            app.addr,
            "POST",
            "/v1/verify",
            &["Content-Type: application/json"],
            body,
        )
        .await;
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert_eq!(
            json_of(&answer)["details"][0]["reason"],
            "MESSAGE_UNDECODABLE"
        );
        assert!(!answer.body.contains("Nguy"), "{}", answer.body);
    }
    // Not declared JSON.
    let answer = http(
        app.addr,
        "POST",
        "/v1/verify",
        &["Content-Type: text/plain"],
        "{}",
    )
    .await;
    assert_eq!(answer.status, 400);
    // Too large: as over gRPC, OUT_OF_RANGE / MESSAGE_TOO_LARGE.
    let mut big = request(DAM.id, DAM.name);
    big.claims.as_mut().unwrap().full_name = "a ".repeat(20_000);
    let answer = post_json(&app, "/v1/verify", &serde_json::to_value(&big).unwrap()).await;
    assert_eq!(answer.status, 400);
    assert_eq!(json_of(&answer)["code"], 11);
    assert_eq!(
        json_of(&answer)["details"][0]["reason"],
        "MESSAGE_TOO_LARGE"
    );
    // The wrong method; a path there is not.
    assert_eq!(
        http(app.addr, "GET", "/v1/verify", &[], "").await.status,
        405
    );
    let nowhere = http(
        app.addr,
        "POST",
        "/v1/nowhere",
        &["Content-Type: application/json"],
        "{}",
    )
    .await;
    assert_eq!(nowhere.status, 501);
    assert_eq!(json_of(&nowhere)["details"][0]["reason"], "METHOD_UNKNOWN");
}

#[tokio::test]
async fn a_quota_refusal_over_json_says_when_to_retry() {
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.plaintext_agency = "desk".into();
    settings.plaintext_operator = String::new();
    settings.agencies = vec![vnid::policy::AgencyConfig {
        daily_quota: Some(1),
        ..vnid::policy::AgencyConfig::demo("desk")
    }];
    let app = spawn_app_with(settings).await;
    let mut first = request(DAM.id, DAM.name);
    first.request_id = "q-1".into();
    let mut second = first.clone();
    second.request_id = "q-2".into();
    let ok = post_json(&app, "/v1/verify", &serde_json::to_value(&first).unwrap()).await;
    assert_eq!(ok.status, 200);
    let refused = post_json(&app, "/v1/verify", &serde_json::to_value(&second).unwrap()).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let status = json_of(&refused);
    assert_eq!(status["details"][0]["reason"], "DAILY_QUOTA_EXCEEDED");
    assert_eq!(
        status["details"][1]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    let retry_after: u64 = refused.headers["retry-after"].parse().unwrap();
    assert!(retry_after >= 1);
    // And over gRPC, the same reason: one quota for both doors.
    let mut third = first.clone();
    third.request_id = "q-3".into();
    let status = app.verify(third).await.unwrap_err();
    assert_eq!(reason(&status), "DAILY_QUOTA_EXCEEDED");
}

#[tokio::test]
async fn card_qr_many_and_the_keys_over_json() {
    let app = spawn_app().await;
    // VerifyMany: in order, each with its answer or its own error.
    let mut bad = request("12345", DAM.name);
    bad.request_id = "m-2".into();
    let mut good = request(THUY.id, THUY.name);
    good.request_id = "m-1".into();
    let body = serde_json::json!({
        "requests": [serde_json::to_value(&good).unwrap(), serde_json::to_value(&bad).unwrap()]
    });
    let answer = post_json(&app, "/v1/verify-many", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let results = json_of(&answer)["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["requestId"], "m-1");
    assert_eq!(results[0]["response"]["verdict"], "VERDICT_VERIFIED");
    assert_eq!(results[1]["requestId"], "m-2");
    assert_eq!(results[1]["error"]["code"], 3);
    assert_eq!(
        results[1]["error"]["details"][0]["reason"],
        "ID_NUMBER_FORMAT"
    );

    // A card's QR code, as over gRPC.
    let card = serde_json::json!({
        "requestId": "card-1",
        "qrPayload": crate::batch::dam_card(),
        "purpose": "PURPOSE_HEALTHCARE",
    });
    let answer = post_json(&app, "/v1/verify-card-qr", &card).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(json_of(&answer)["verdict"], "VERDICT_VERIFIED");

    // The signing keys, and the JWKS at its well-known URL.
    let keys = http(app.addr, "GET", "/v1/signing-keys", &[], "").await;
    assert_eq!(keys.status, 200);
    let jwks_json = json_of(&keys)["jwksJson"].as_str().unwrap().to_owned();
    let well_known = http(app.addr, "GET", "/.well-known/jwks.json", &[], "").await;
    assert_eq!(well_known.status, 200);
    assert_eq!(well_known.body, jwks_json);
    assert_eq!(well_known.headers["cache-control"], "public, max-age=300");
    let tag = well_known.headers["etag"].clone();
    let unchanged = http(
        app.addr,
        "GET",
        "/.well-known/jwks.json",
        &[&format!("If-None-Match: {tag}")],
        "",
    )
    .await;
    assert_eq!(unchanged.status, 304);
}

/// A gRPC-Web exchange over HTTP/1.1: status, headers, body.
async fn exchange(
    addr: std::net::SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, std::collections::HashMap<String, String>, Vec<u8>) {
    let headers = [
        format!("Content-Type: {content_type}"),
        format!("Accept: {content_type}"),
        "X-Grpc-Web: 1".to_owned(),
    ];
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    crate::admin::http_bytes(addr, "POST", path, &headers, body).await
}

/// gRPC-Web, binary and text, for callers without HTTP/2 trailers: the
/// answer is the gRPC answer, its status in a trailer frame of the body.
#[tokio::test]
async fn grpc_web_binary_and_text() {
    use base64ct::{Base64, Encoding};
    use prost::Message;
    let app = spawn_app().await;
    let framed = |message: &[u8]| {
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(message);
        frame
    };
    // (frames: data, then the trailer frame.)
    let frames = |mut body: &[u8]| {
        let mut out = Vec::new();
        while body.len() >= 5 {
            let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
            out.push((body[0], body[5..5 + len].to_vec()));
            body = &body[5 + len..];
        }
        out
    };
    for (n, text) in [false, true].into_iter().enumerate() {
        let mut r = request(DAM.id, DAM.name);
        r.request_id = format!("web-{n}");
        let body = framed(&r.encode_to_vec());
        let (content_type, body) = if text {
            (
                "application/grpc-web-text",
                Base64::encode_string(&body).into_bytes(),
            )
        } else {
            ("application/grpc-web+proto", body)
        };
        let (status, headers, answer) = exchange(
            app.addr,
            "/vnid.v1.VerificationService/Verify",
            content_type,
            &body,
        )
        .await;
        assert_eq!(status, 200, "{headers:?}");
        assert!(
            headers["content-type"].starts_with(content_type.split('+').next().unwrap()),
            "{headers:?}"
        );
        let answer = if text {
            Base64::decode_vec(std::str::from_utf8(&answer).unwrap().trim()).unwrap()
        } else {
            answer
        };
        let frames = frames(&answer);
        assert_eq!(frames.len(), 2, "a message and the trailers");
        let response = pb::VerifyResponse::decode(frames[0].1.as_slice()).unwrap();
        assert_eq!(response.verdict(), pb::Verdict::Verified);
        assert_eq!(response.request_id, format!("web-{n}"));
        assert_eq!(frames[1].0, 0x80);
        let trailers = String::from_utf8_lossy(&frames[1].1).to_ascii_lowercase();
        assert!(trailers.contains("grpc-status:0"), "{trailers}");
    }
    // A refusal: its status (with its details) in the trailers.
    let mut bad = request("12345", DAM.name);
    bad.request_id = "web-bad".into();
    let (status, headers, answer) = exchange(
        app.addr,
        "/vnid.v1.VerificationService/Verify",
        "application/grpc-web+proto",
        &framed(&bad.encode_to_vec()),
    )
    .await;
    assert_eq!(status, 200);
    // Trailers-only: the status comes in the headers (else in a trailer
    // frame).
    let trailers = frames(&answer)
        .into_iter()
        .find(|(flag, _)| *flag == 0x80)
        .map(|(_, t)| String::from_utf8_lossy(&t).to_ascii_lowercase())
        .unwrap_or_else(|| {
            (headers.iter())
                .map(|(k, v)| format!("{k}:{v}\r\n"))
                .collect()
        });
    assert!(trailers.contains("grpc-status:3"), "{trailers}");
    assert!(trailers.contains("grpc-status-details-bin"), "{trailers}");
}

/// The audit row records the door a check came in by; the trail verifies,
/// and the access history shows it.
#[tokio::test]
async fn the_audit_row_records_the_door() {
    use prost::Message;
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let app = spawn_app_with(test_settings(&url)).await;
    let mut by_grpc = request(DAM.id, DAM.name);
    by_grpc.request_id = "door-grpc".into();
    app.verify(by_grpc).await.unwrap();
    let mut by_json = request(DAM.id, DAM.name);
    by_json.request_id = "door-json".into();
    let answer = post_json(&app, "/v1/verify", &serde_json::to_value(&by_json).unwrap()).await;
    assert_eq!(answer.status, 200);
    let mut by_web = request(DAM.id, DAM.name);
    by_web.request_id = "door-web".into();
    let mut frame = vec![0u8];
    let message = by_web.encode_to_vec();
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let (status, _, _) = exchange(
        app.addr,
        "/vnid.v1.VerificationService/Verify",
        "application/grpc-web+proto",
        &frame,
    )
    .await;
    assert_eq!(status, 200);
    let mut many = request(THUY.id, THUY.name);
    many.request_id = "door-many".into();
    let body = serde_json::json!({ "requests": [serde_json::to_value(&many).unwrap()] });
    assert_eq!(post_json(&app, "/v1/verify-many", &body).await.status, 200);

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let kinds: Vec<(String, String)> = loop {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT request_id, kind FROM audit_log ORDER BY request_id")
                .fetch_all(&pool)
                .await
                .unwrap();
        if rows.len() == 4 {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    pool.close().await;
    let kinds: Vec<(&str, &str)> = kinds
        .iter()
        .map(|(r, k)| (r.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("door-grpc", "verify"),
            ("door-json", "verify.json"),
            ("door-many", "verify_batch.json"),
            ("door-web", "verify.grpc_web"),
        ]
    );
    let (code, said) = run_to_end(vnid(
        Some(&url),
        &[
            "audit",
            "verify",
            "--data-dir",
            app.data_dir.to_str().unwrap(),
        ],
    ));
    assert_eq!(code, 0, "{said}");
    // The access history says which door each check came by.
    let history = vnid::pb::audit_service_client::AuditServiceClient::new(app.channel.clone())
        .list_access_history(pb::ListAccessHistoryRequest {
            request_id: "door-history".into(),
            id_number: DAM.id.into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut doors: Vec<(String, String)> = history
        .records
        .into_iter()
        .map(|r| (r.request_id, r.door))
        .collect();
    doors.sort();
    assert_eq!(
        doors,
        [
            ("door-grpc".to_owned(), "grpc".to_owned()),
            // (the read of the history is in it too)
            ("door-history".to_owned(), "grpc".to_owned()),
            ("door-json".to_owned(), "json".to_owned()),
            ("door-web".to_owned(), "grpc_web".to_owned()),
        ]
    );
}

/// With the doors off (`server.json_door`, `server.grpc_web` false) the
/// listener is gRPC only: no JSON routes, no gRPC-Web, no HTTP/1.1.
#[tokio::test]
async fn the_doors_can_be_closed() {
    let mut settings = test_settings(&crate::pg::PgServer::shared().fresh_database().await);
    settings.server.json_door = false;
    settings.server.grpc_web = false;
    let app = spawn_app_with(settings).await;
    app.verify(request(DAM.id, DAM.name)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let body = serde_json::to_string(&request(THUY.id, THUY.name)).unwrap();
    let head = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("VERDICT_"), "{answer}");
}
