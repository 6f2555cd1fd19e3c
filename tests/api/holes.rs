//! The holes an outside review found (a hostile caller, a careless
//! deployment), each shut and held shut here.

use tokio_stream::StreamExt;
use tonic::Code;
use vnid::pb;

use crate::helpers::*;

/// Claims the number itself gives away: its birth year, and the gender
/// its century digit encodes.
fn derivable(id: &str, year: u32, gender: pb::Gender) -> pb::VerifyRequest {
    let mut r = request(id, "");
    r.claims = Some(pb::Claims {
        date_of_birth: date(year, 0, 0),
        gender: gender.into(),
        ..Default::default()
    });
    r
}

#[tokio::test]
async fn claims_the_number_gives_away_are_no_check_at_all() {
    let app = spawn_app().await;
    // An existing active record and an unknown number answer alike:
    // refused, before any lookup.
    for id in [DAM.id, UNKNOWN_ID] {
        for req in [
            derivable(id, 1990, pb::Gender::Male),
            derivable(id, 1990, pb::Gender::Unspecified),
            derivable(id, 0, pb::Gender::Male),
        ] {
            let status = app.verify(req).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(reason(&status), "CLAIMS_EMPTY");
        }
    }
    // A batch item is refused the same way, alone.
    let items = vec![
        derivable(DAM.id, 1990, pb::Gender::Male),
        request(DAM.id, DAM.name),
    ];
    let answers: Vec<_> = app
        .client
        .clone()
        .verify_batch(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    let mut refused = 0;
    for answer in answers {
        match answer.unwrap().result.unwrap() {
            pb::verify_batch_response::Result::Error(status) => {
                assert_eq!(status.code, Code::InvalidArgument as i32);
                refused += 1;
            }
            pb::verify_batch_response::Result::Response(r) => {
                assert_eq!(r.verdict, pb::Verdict::Verified as i32);
            }
        }
    }
    assert_eq!(refused, 1);
    // A birth month is knowledge the number does not hold.
    let mut with_month = derivable(DAM.id, 1990, pb::Gender::Male);
    with_month.claims.as_mut().unwrap().date_of_birth = date(1990, 5, 0);
    let answer = app.verify(with_month).await.unwrap();
    assert_eq!(answer.verdict, pb::Verdict::Verified as i32);
}
