//! The attestation verifies against the published JWKS, says what the
//! response says, and breaks when any byte changes.

use vnid::domain::Spelled;
use vnid::pb;

use crate::helpers::*;

#[tokio::test]
async fn attestation_carries_the_answer_and_verifies_with_the_jwks() {
    let app = spawn_app().await;
    let mut req = request(DAM.id, DAM.name);
    req.claims.as_mut().unwrap().gender = pb::Gender::Male.into();
    let request_id = req.request_id.clone();
    let r = app.verify(req).await.unwrap();
    let claims = app.jwks().await.verify(&r.attestation, NOW).unwrap();
    assert_eq!(claims.iss, "vnid-test");
    assert_eq!(claims.aud, "demo");
    assert_eq!(claims.nonce, request_id);
    assert_eq!(claims.jti, r.attestation_id);
    assert_eq!((claims.iat, claims.exp), (NOW, NOW + 86_400));
    assert_eq!(claims.purpose.name(), "PURPOSE_HEALTHCARE");
    assert_eq!(claims.verdict.name(), "VERDICT_VERIFIED");
    assert_eq!(claims.data_as_of, DATA_AS_OF);
    let checks = claims.checks.unwrap();
    assert_eq!(checks.full_name.outcome.name(), "FIELD_OUTCOME_MATCH");
    assert_eq!(
        checks.full_name.level.map(Spelled::name),
        Some("NAME_MATCH_EXACT")
    );
    assert_eq!(
        checks.date_of_birth.outcome.name(),
        "FIELD_OUTCOME_NOT_CLAIMED"
    );
    assert_eq!(checks.gender.outcome.name(), "FIELD_OUTCOME_MATCH");
    // The subject is pairwise: not the number, stable for the agency.
    assert!(!claims.sub.contains(DAM.id));
    let again = app.verify(request(DAM.id, DAM.name)).await.unwrap();
    let again = app.jwks().await.verify(&again.attestation, NOW).unwrap();
    assert_eq!(again.sub, claims.sub);
    assert_ne!(again.jti, claims.jti);
}

#[tokio::test]
async fn one_changed_byte_breaks_the_attestation() {
    let app = spawn_app().await;
    let r = app.verify(request(DAM.id, DAM.name)).await.unwrap();
    let jwks = app.jwks().await;
    assert!(jwks.verify(&r.attestation, NOW).is_ok());
    let token = r.attestation.as_bytes();
    for i in (0..token.len()).step_by(7).chain([token.len() - 1]) {
        if token[i] == b'.' {
            continue;
        }
        let mut bytes = token.to_vec();
        bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(
            jwks.verify(&tampered, NOW).is_err(),
            "byte {i} changed and it still verified"
        );
    }
    // Expired once its lifetime is over.
    assert!(jwks.verify(&r.attestation, NOW + 86_400).is_err());
}

#[tokio::test]
async fn the_jwks_is_rfc_8037() {
    let app = spawn_app().await;
    let jwks = app
        .client
        .clone()
        .get_signing_keys(pb::GetSigningKeysRequest {})
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&jwks.into_inner().jwks_json).unwrap();
    let key = &doc["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert_eq!(key["x"].as_str().unwrap().len(), 43);
    assert_eq!(key["kid"].as_str().unwrap().len(), 43);
    assert!(
        key.get("d").is_none(),
        "the private key must never be published"
    );
}

/// An agency set to `attestation_alg = "ES256"` gets ES256 attestations and
/// one left at the default gets EdDSA; both verify against the one JWKS
/// (which carries both keys under RFC 7638 kids); a retry of an ES256 check
/// gets its first answer again, and `vnid audit verify` checks every row's
/// signature, whichever the algorithm.
#[tokio::test]
async fn an_agency_set_to_es256_gets_es256_and_the_default_gets_eddsa() {
    use vnid::attest::Alg;
    use vnid::policy::AgencyConfig;
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let settings = |agency: &str| {
        let mut s = test_settings(&url);
        s.plaintext_agency = agency.into();
        s.plaintext_operator = String::new();
        s.agencies = vec![
            AgencyConfig {
                attestation_alg: Alg::Es256,
                ..AgencyConfig::demo("clinic-net")
            },
            AgencyConfig::demo("desk"),
        ];
        s
    };
    let clinic = spawn_app_with(settings("clinic-net")).await;
    let mut desk_settings = settings("desk");
    desk_settings.data_dir = clinic.data_dir.clone();
    let desk = spawn_bare(desk_settings).await;

    let header = |token: &str| -> serde_json::Value {
        use base64ct::{Base64UrlUnpadded, Encoding};
        let part = token.split('.').next().unwrap();
        serde_json::from_slice(&Base64UrlUnpadded::decode_vec(part).unwrap()).unwrap()
    };
    let jwks_json = clinic
        .client
        .clone()
        .get_signing_keys(pb::GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .jwks_json;
    let doc: serde_json::Value = serde_json::from_str(&jwks_json).unwrap();
    let kinds: Vec<_> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kty"].as_str().unwrap(), k["alg"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("OKP", "EdDSA"), ("EC", "ES256")]);
    let ec = &doc["keys"][1];
    assert_eq!(ec["crv"], "P-256");
    assert!(
        ec.get("d").is_none(),
        "the private key must never be published"
    );
    let jwks = vnid::attest::Jwks::parse(&jwks_json).unwrap();

    let request = request(DAM.id, DAM.name);
    let es = clinic.verify(request.clone()).await.unwrap();
    assert_eq!(header(&es.attestation)["alg"], "ES256");
    assert_eq!(header(&es.attestation)["kid"], ec["kid"]);
    assert_eq!(header(&es.attestation)["typ"], "vnid-attestation+jwt");
    let claims = jwks.verify(&es.attestation, NOW).unwrap();
    assert_eq!(claims.aud, "clinic-net");
    assert_eq!(claims.verdict.name(), "VERDICT_VERIFIED");

    let ed = desk.verify(request.clone()).await.unwrap();
    assert_eq!(header(&ed.attestation)["alg"], "EdDSA");
    assert_eq!(header(&ed.attestation)["kid"], doc["keys"][0]["kid"]);
    assert_eq!(jwks.verify(&ed.attestation, NOW).unwrap().aud, "desk");

    // The retry gets the first answer, signature and all.
    let again = clinic.verify(request).await.unwrap();
    assert_eq!(again.attestation, es.attestation);

    // The trail verifies, ES256 rows included.
    let (code, said) = run_to_end(vnid(
        Some(&url),
        &[
            "audit",
            "verify",
            "--data-dir",
            clinic.data_dir.to_str().unwrap(),
        ],
    ));
    assert_eq!(code, 0, "{said}");
    // And `vnid keys list` names both signing keys.
    let (code, said) = run_to_end(vnid(
        Some(&url),
        &[
            "keys",
            "list",
            "--data-dir",
            clinic.data_dir.to_str().unwrap(),
        ],
    ));
    assert_eq!(code, 0, "{said}");
    let signing: Vec<&str> = said.lines().filter(|l| l.contains("signing")).collect();
    assert_eq!(signing.len(), 2, "{said}");
    assert!(
        signing
            .iter()
            .any(|l| l.contains("ES256") && l.trim_end().ends_with(" 1")),
        "{said}"
    );
}
