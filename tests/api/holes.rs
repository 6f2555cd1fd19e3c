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

/// A batch stream whose items the test sends one by one, keeping it open.
struct OpenStream {
    items: tokio::sync::mpsc::Sender<pb::VerifyRequest>,
    answers: tonic::Streaming<pb::VerifyBatchResponse>,
}

impl OpenStream {
    async fn open(app: &TestApp) -> Self {
        let (items, rx) = tokio::sync::mpsc::channel(16);
        let answers = app
            .client
            .clone()
            .verify_batch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { items, answers }
    }

    /// Sends `item` and reads the next answer (or the stream's end).
    async fn ask(
        &mut self,
        item: pb::VerifyRequest,
    ) -> Result<pb::VerifyBatchResponse, tonic::Status> {
        self.items.send(item).await.unwrap();
        self.next().await
    }

    async fn next(&mut self) -> Result<pb::VerifyBatchResponse, tonic::Status> {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.answers.message())
            .await
            .expect("no answer in 10 s")
            .map(|m| m.expect("the stream ended without a status"))
    }
}

fn batch_settings(url: &str) -> vnid::config::Settings {
    let mut settings = test_settings(url);
    settings.plaintext_agency = "board".into();
    settings.plaintext_operator = String::new();
    settings.agencies = vec![vnid::policy::AgencyConfig {
        purposes: vec![vnid::domain::Purpose::Healthcare],
        ..vnid::policy::AgencyConfig::demo("board")
    }];
    settings
}

#[tokio::test]
async fn a_silent_batch_stream_ends_with_deadline_exceeded() {
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let mut settings = batch_settings(&url);
    settings.batch.idle_timeout_ms = 300;
    let app = spawn_app_with(settings).await;
    let mut stream = OpenStream::open(&app).await;
    let first = stream.ask(request(DAM.id, DAM.name)).await.unwrap();
    assert!(matches!(
        first.result,
        Some(pb::verify_batch_response::Result::Response(_))
    ));
    // Then nothing, with the stream left open.
    let end = stream.next().await.unwrap_err();
    assert_eq!(end.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&end), "BATCH_IDLE");
}

#[tokio::test]
async fn a_paced_batch_item_has_a_deadline() {
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let mut settings = batch_settings(&url);
    settings.agencies[0].rate_per_second = Some(1);
    settings.agencies[0].burst = Some(1);
    settings.batch.item_timeout_ms = 300;
    let app = spawn_app_with(settings).await;
    let items: Vec<_> = (0..3).map(|_| request(DAM.id, DAM.name)).collect();
    let answers: Vec<_> = app
        .client
        .clone()
        .verify_batch(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    let mut late = Vec::new();
    for answer in answers {
        if let Some(pb::verify_batch_response::Result::Error(status)) = answer.unwrap().result {
            assert_eq!(status.code, Code::DeadlineExceeded as i32);
            late.push(status);
        }
    }
    // One item goes at once; the others would wait a second for the rate.
    assert_eq!(late.len(), 2, "{late:?}");
}

#[tokio::test]
async fn an_agency_that_loses_its_right_loses_its_open_stream() {
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let settings = batch_settings(&url);
    let app = spawn_app_with(settings.clone()).await;
    let mut stream = OpenStream::open(&app).await;
    assert!(stream.ask(request(DAM.id, DAM.name)).await.is_ok());
    // SIGHUP takes the batch right away: the next item ends the stream.
    let mut reloaded = settings.clone();
    reloaded.agencies[0].allow_batch = false;
    app.reloader.reload(&reloaded).unwrap();
    let end = stream.ask(request(DAM.id, DAM.name)).await.unwrap_err();
    assert_eq!(end.code(), Code::PermissionDenied);
    assert_eq!(reason(&end), "BATCH_NOT_ALLOWED");
}
