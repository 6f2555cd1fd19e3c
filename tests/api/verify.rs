//! The verdict over gRPC: every outcome a caller can get.

use unicode_normalization::UnicodeNormalization;
use vnid::domain::Spelled;
use vnid::pb;

use crate::helpers::*;

fn checks(response: &pb::VerifyResponse) -> &pb::FieldChecks {
    response.checks.as_ref().expect("field checks")
}

const MATCH: i32 = pb::FieldOutcome::Match as i32;
const MISMATCH: i32 = pb::FieldOutcome::Mismatch as i32;
const NOT_CLAIMED: i32 = pb::FieldOutcome::NotClaimed as i32;

#[tokio::test]
async fn every_claim_matching_is_verified() {
    let app = spawn_app().await;
    let mut req = request(DAM.id, "  NGUYỄN   văn đàm ");
    let claims = req.claims.as_mut().unwrap();
    claims.date_of_birth = date(1990, 5, 17);
    claims.gender = pb::Gender::Male.into();
    claims.old_id_number = "312000111".into();
    let request_id = req.request_id.clone();
    let r = app.verify(req).await.unwrap();
    assert_eq!(r.request_id, request_id);
    assert_eq!(r.verdict(), pb::Verdict::Verified);
    assert_eq!(r.reason(), pb::Reason::Unspecified);
    let c = checks(&r);
    let name = c.full_name.as_ref().unwrap();
    assert_eq!((name.outcome, name.level()), (MATCH, pb::NameMatch::Exact));
    let dob = c.date_of_birth.as_ref().unwrap();
    assert_eq!(
        (dob.outcome, dob.record_precision()),
        (MATCH, pb::DatePrecision::Day)
    );
    assert_eq!(c.gender.as_ref().unwrap().outcome, MATCH);
    assert_eq!(c.old_id_number.as_ref().unwrap().outcome, MATCH);
    assert_eq!(r.data_as_of.unwrap().seconds, DATA_AS_OF);
    assert!(!r.attestation.is_empty() && !r.attestation_id.is_empty());
}

#[tokio::test]
async fn tone_placement_and_unicode_forms_do_not_matter() {
    let app = spawn_app().await;
    // Recorded "Trần Thị Thủy" (old style); claimed new style, decomposed.
    let nfd: String = "Trần Thị Thuỷ".nfd().collect();
    let r = app.verify(request(THUY.id, &nfd)).await.unwrap();
    assert_eq!(r.verdict(), pb::Verdict::Verified);
    assert_eq!(
        checks(&r).full_name.as_ref().unwrap().level(),
        pb::NameMatch::Exact
    );
    // The Icelandic eth look-alike for Đ.
    let r = app.verify(request(DAM.id, "Nguyễn Văn Ðàm")).await.unwrap();
    assert_eq!(r.verdict(), pb::Verdict::Verified);
}

#[tokio::test]
async fn name_levels_count_only_when_requested() {
    let app = spawn_app().await;
    let folded = request(DAM.id, "NGUYEN VAN DAM");
    let r = app.verify(folded.clone()).await.unwrap();
    assert_eq!(
        (r.verdict(), r.reason()),
        (pb::Verdict::NotVerified, pb::Reason::FieldMismatch)
    );
    let name = checks(&r).full_name.unwrap();
    assert_eq!(
        (name.outcome, name.level()),
        (MISMATCH, pb::NameMatch::Folded)
    );

    let mut accepted = folded;
    accepted.request_id.push_str("-folded");
    accepted.name_match = pb::NameMatch::Folded.into();
    assert_eq!(
        app.verify(accepted).await.unwrap().verdict(),
        pb::Verdict::Verified
    );

    let mut partial = request(DAM.id, "Nguyen V. Dam");
    partial.name_match = pb::NameMatch::Partial.into();
    let r = app.verify(partial).await.unwrap();
    assert_eq!(r.verdict(), pb::Verdict::Verified);
    assert_eq!(
        checks(&r).full_name.as_ref().unwrap().level(),
        pb::NameMatch::Partial
    );

    let mut wrong = request(DAM.id, "Nguyễn Văn Bình");
    wrong.name_match = pb::NameMatch::Partial.into();
    let r = app.verify(wrong).await.unwrap();
    assert_eq!(r.reason(), pb::Reason::FieldMismatch);
    assert_eq!(
        checks(&r).full_name.as_ref().unwrap().level(),
        pb::NameMatch::Unspecified
    );
}

#[tokio::test]
async fn each_mismatch_kind_is_named_on_its_field() {
    let app = spawn_app().await;
    let run = |edit: fn(&mut pb::Claims)| {
        let mut req = request(DAM.id, DAM.name);
        edit(req.claims.as_mut().unwrap());
        app.verify(req)
    };
    let r = run(|c| c.date_of_birth = date(1990, 5, 18)).await.unwrap();
    assert_eq!(r.reason(), pb::Reason::FieldMismatch);
    assert_eq!(checks(&r).date_of_birth.as_ref().unwrap().outcome, MISMATCH);
    assert_eq!(checks(&r).full_name.as_ref().unwrap().outcome, MATCH);

    let r = run(|c| c.gender = pb::Gender::Female.into()).await.unwrap();
    assert_eq!(r.reason(), pb::Reason::FieldMismatch);
    assert_eq!(checks(&r).gender.as_ref().unwrap().outcome, MISMATCH);

    let r = run(|c| c.old_id_number = "999999999".into()).await.unwrap();
    assert_eq!(r.reason(), pb::Reason::FieldMismatch);
    assert_eq!(checks(&r).old_id_number.as_ref().unwrap().outcome, MISMATCH);

    let r = run(|c| c.full_name = "Nguyễn Văn Đam".into())
        .await
        .unwrap();
    assert_eq!(r.reason(), pb::Reason::FieldMismatch);
    assert_eq!(checks(&r).full_name.as_ref().unwrap().outcome, MISMATCH);

    // Unclaimed fields are said to be so.
    let r = run(|_| ()).await.unwrap();
    assert_eq!(r.verdict(), pb::Verdict::Verified);
    assert_eq!(checks(&r).gender.as_ref().unwrap().outcome, NOT_CLAIMED);
}

#[tokio::test]
async fn partial_birth_dates_match_on_known_parts_and_say_so() {
    let app = spawn_app().await;
    let mut req = request(THUY.id, THUY.name);
    req.claims.as_mut().unwrap().date_of_birth = date(2001, 3, 9);
    let r = app.verify(req).await.unwrap();
    assert_eq!(r.verdict(), pb::Verdict::Verified);
    let dob = checks(&r).date_of_birth.unwrap();
    assert_eq!(
        (dob.outcome, dob.record_precision()),
        (MATCH, pb::DatePrecision::Year)
    );

    let mut req = request(THUY.id, THUY.name);
    req.claims.as_mut().unwrap().date_of_birth = date(2002, 0, 0);
    let r = app.verify(req).await.unwrap();
    assert_eq!(checks(&r).date_of_birth.as_ref().unwrap().outcome, MISMATCH);
}

#[tokio::test]
async fn a_claim_contradicting_the_number_itself_mismatches() {
    let app = spawn_app().await;
    // THUY's number encodes a woman born in 2001.
    let mut req = request(THUY.id, THUY.name);
    req.claims.as_mut().unwrap().gender = pb::Gender::Male.into();
    let r = app.verify(req).await.unwrap();
    assert_eq!(checks(&r).gender.as_ref().unwrap().outcome, MISMATCH);
}

#[tokio::test]
async fn unknown_numbers_are_not_found_and_still_attested() {
    let app = spawn_app().await;
    let r = app.verify(request(UNKNOWN_ID, DAM.name)).await.unwrap();
    assert_eq!(
        (r.verdict(), r.reason()),
        (pb::Verdict::NotVerified, pb::Reason::NotFound)
    );
    assert!(r.checks.is_none());
    let claims = app.jwks().await.verify(&r.attestation, NOW).unwrap();
    assert_eq!(claims.verdict.name(), "VERDICT_NOT_VERIFIED");
    assert_eq!(claims.reason.map(Spelled::name), Some("REASON_NOT_FOUND"));
}

#[tokio::test]
async fn deceased_and_cancelled_are_never_verified() {
    let app = spawn_app().await;
    let r = app
        .verify(request(HOA_DECEASED.id, "Lê Văn Hòa"))
        .await
        .unwrap();
    assert_eq!(
        (r.verdict(), r.reason()),
        (pb::Verdict::NotVerified, pb::Reason::Deceased)
    );
    let r = app
        .verify(request(LAN_CANCELLED.id, LAN_CANCELLED.name))
        .await
        .unwrap();
    assert_eq!(
        (r.verdict(), r.reason()),
        (pb::Verdict::NotVerified, pb::Reason::Cancelled)
    );
    // A wrong name says nothing about the status of whoever holds the number.
    let r = app
        .verify(request(HOA_DECEASED.id, "Lê Văn Bình"))
        .await
        .unwrap();
    assert_eq!(r.reason(), pb::Reason::FieldMismatch);
}

#[tokio::test]
async fn mirror_updates_are_seen_with_their_date() {
    let app = spawn_app().await;
    let mut changed = record(&DAM);
    changed.status = vnid::domain::CitizenStatus::Deceased;
    changed.updated_at = DATA_AS_OF + 60;
    let mode = vnid::mirror::LoadMode::Delta;
    vnid::mirror::load_records(&app.mirror, mode, None, [changed].into_iter())
        .await
        .unwrap();
    let r = app.verify(request(DAM.id, DAM.name)).await.unwrap();
    assert_eq!(r.reason(), pb::Reason::Deceased);
    assert_eq!(r.data_as_of.unwrap().seconds, DATA_AS_OF + 60);
}
