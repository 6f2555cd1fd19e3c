//! No ID number, name or birth date in any log line.

use crate::helpers::*;

#[tokio::test]
async fn logs_hold_no_personal_data() {
    let app = spawn_app().await;
    let mut req = request(DAM.id, DAM.name);
    req.claims.as_mut().unwrap().date_of_birth = date(1990, 5, 17);
    req.claims.as_mut().unwrap().old_id_number = "312345678".into();
    let r = app.verify(req).await.unwrap();
    let mut bad = request("0820900999x9", "Nguyễn Văn Đàm");
    bad.claims.as_mut().unwrap().date_of_birth = date(1990, 5, 17);
    assert!(app.verify(bad).await.is_err());
    assert!(
        app.verify(request(UNKNOWN_ID, "Nguyễn Văn Đàm"))
            .await
            .is_ok()
    );

    let logs = String::from_utf8(captured_logs().lock().unwrap().clone()).unwrap();
    // The calls were logged, with the fields an operator needs ...
    assert!(
        logs.contains(&r.attestation_id),
        "the call's log line is missing"
    );
    assert!(logs.contains("VERDICT_VERIFIED") && logs.contains("\"agency\":\"demo\""));
    // ... and nothing personal (any test's fixtures, in any form).
    for secret in [
        DAM.id,
        UNKNOWN_ID,
        "0820900999x9",
        THUY.id,
        HOA_DECEASED.id,
        "312345678",
        "Nguyễn",
        "Nguyen",
        "nguyễn",
        "Đàm",
        "1990-05-17",
        "Thủy",
        "Thuỷ",
        "Trần",
    ] {
        assert!(!logs.contains(secret), "{secret:?} was logged");
    }
}

/// With detail `none`, an unknown number, a wrong name and a wrong birth
/// date give the same answer: the same bytes on the wire and in the
/// attestation, apart from the request's own id, the attestation's id and
/// signature, and `sub` (a keyed hash of the number asked about, of the
/// same length whatever the number, that says nothing of its existence).
#[tokio::test]
async fn with_detail_none_every_negative_answer_looks_the_same() {
    use base64ct::{Base64UrlUnpadded, Encoding};
    use prost::Message;

    let url = crate::pg::PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.plaintext_agency = "blind".into();
    settings.plaintext_operator = String::new();
    settings.agencies = vec![vnid::policy::AgencyConfig {
        detail: vnid::policy::DetailLevel::None,
        ..vnid::policy::AgencyConfig::demo("blind")
    }];
    let app = spawn_app_with(settings).await;
    let ask = |id: &str, name: &str, day: u32, n: u32| {
        let mut r = request(id, name);
        r.request_id = format!("neg-{n}");
        r.claims.as_mut().unwrap().date_of_birth = date(1990, 5, day);
        r
    };
    let mut answers = Vec::new();
    for r in [
        ask(UNKNOWN_ID, DAM.name, 17, 1),
        ask(DAM.id, "Nguyễn Văn Sai", 17, 2),
        ask(DAM.id, DAM.name, 18, 3),
    ] {
        answers.push(app.verify(r).await.unwrap());
    }
    let wire: Vec<Vec<u8>> = answers
        .iter()
        .map(|a| {
            vnid::pb::VerifyResponse {
                request_id: String::new(),
                attestation: String::new(),
                attestation_id: String::new(),
                ..a.clone()
            }
            .encode_to_vec()
        })
        .collect();
    assert_eq!(wire[0], wire[1]);
    assert_eq!(wire[1], wire[2]);
    assert_eq!(answers[0].encoded_len(), answers[1].encoded_len());
    assert_eq!(answers[1].encoded_len(), answers[2].encoded_len());

    type Claims = serde_json::Map<String, serde_json::Value>;
    // Each attestation's header and claims, the claims that vary set apart
    // with their lengths.
    let split = |a: &vnid::pb::VerifyResponse| -> (String, Claims, Vec<usize>) {
        let parts: Vec<&str> = a.attestation.split('.').collect();
        let json = Base64UrlUnpadded::decode_vec(parts[1]).unwrap();
        let mut claims: Claims = serde_json::from_slice(&json).unwrap();
        let lengths = ["jti", "nonce", "sub"]
            .map(|k| claims.remove(k).unwrap().as_str().unwrap().len())
            .to_vec();
        (parts[0].to_owned(), claims, lengths)
    };
    let first = split(&answers[0]);
    assert!(!first.1.contains_key("reason") && !first.1.contains_key("checks"));
    for answer in &answers[1..] {
        assert_eq!(split(answer), first);
        assert_eq!(answer.attestation.len(), answers[0].attestation.len());
    }
}
