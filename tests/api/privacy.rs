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
