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
