//! Health, reflection and graceful shutdown.

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use vnid::pb;

use crate::helpers::*;
use crate::pg::PgServer;

const SERVICE: &str = "vnid.v1.VerificationService";

#[tokio::test]
async fn health_reports_serving_then_not_serving_on_shutdown_with_a_bounded_drain() {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.server.drain_timeout_ms = 300;
    let mut app = spawn_app_with(settings).await;
    let mut health = HealthClient::new(app.channel.clone());
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    for service in ["", SERVICE] {
        let status = health
            .check(check(service))
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    // A watcher is an in-flight call that never ends by itself.
    let mut watch = health.watch(check(SERVICE)).await.unwrap().into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let server = app.begin_shutdown();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    // The drain is bounded: the open watch does not keep the server alive.
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("vnid.bench")),
        "{names:?}"
    );
    assert!(
        names.contains(&SERVICE) && names.contains(&"grpc.health.v1.Health"),
        "{names:?}"
    );

    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    let mut alpha = AlphaClient::new(app.channel.clone());
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::FileContainingSymbol(SERVICE.into())),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    assert!(response.message_response.is_some());
}

#[tokio::test]
async fn a_call_in_flight_at_shutdown_still_gets_its_answer() {
    use sqlx::Connection;
    let url = PgServer::shared().fresh_database().await;
    let mut app = spawn_app_with(test_settings(&url)).await;
    // Hold the mirror table so that the next lookup waits on it.
    let mut blocker = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE citizen IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let client = app.client.clone();
    let call =
        tokio::spawn(async move { client.clone().verify(request(THUY.id, THUY.name)).await });
    // The call is in flight once its query waits for the lock.
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        )
        .fetch_one(app.mirror.pool())
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let server = app.begin_shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    let answer = call.await.unwrap().unwrap().into_inner();
    assert_eq!(answer.verdict(), vnid::pb::Verdict::Verified);
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}

#[tokio::test]
async fn sighup_reloads_the_agency_registry_without_dropping_connections() {
    let url = database_with_fixtures().await;
    let dir = crate::store::tempdir::Dir::new("sighup");
    let config = dir.path().join("vnid.toml");
    let registry = |purposes: &str| {
        format!(
            "plaintext_agency = \"hospital\"\nplaintext_operator = \"\"\n\
             [[agencies]]\nid = \"hospital\"\npurposes = [{purposes}]\n"
        )
    };
    std::fs::write(&config, registry("\"healthcare\"")).unwrap();
    let mut served = Served::spawn(vnid(
        Some(&url),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
    ));
    let mut client = served.client().await;
    let exam = || {
        let mut r = request(DAM.id, DAM.name);
        r.purpose = pb::Purpose::Examination.into();
        r
    };
    let status = client.verify(exam()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    std::fs::write(&config, registry("\"healthcare\", \"examination\"")).unwrap();
    let hangup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &served.child.id().to_string()])
            .status()
            .unwrap()
    };
    assert!(hangup().success());
    // The same connection, once the server has read the file again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let answer = loop {
        match client.verify(exam()).await {
            Ok(answer) => break answer.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::PermissionDenied);
                assert!(std::time::Instant::now() < deadline, "never reloaded");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(answer.verdict(), pb::Verdict::Verified);

    // A broken file keeps the registry that works.
    std::fs::write(&config, "[[agencies]]\nid = ").unwrap();
    assert!(hangup().success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(client.verify(exam()).await.is_ok());
    assert!(served.stop("-TERM").await.success());
}

/// A key roll as an operator does it: a new signing key, the old one moved
/// to the published keys, SIGHUP. The JWKS changes without a restart,
/// what the old key signed still verifies against it, and `vnid keys list`
/// tells when each key signed.
#[tokio::test]
async fn sighup_rolls_the_signing_key_and_the_jwks_follows() {
    let url = database_with_fixtures().await;
    let dir = crate::store::tempdir::Dir::new("key-roll");
    let key = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, vnid::attest::generate_key_pem().unwrap().as_bytes()).unwrap();
        let kid = vnid::attest::Keyring::load(&path, &[])
            .unwrap()
            .signing_kid();
        (path, kid)
    };
    let ((old_key, old_kid), (new_key, new_kid)) = (key("2026-05.pem"), key("2026-11.pem"));
    let config = dir.path().join("vnid.toml");
    let write_config = |signing: &std::path::Path, published: &[&std::path::Path]| {
        let published: Vec<String> = published
            .iter()
            .map(|p| format!("{:?}", p.to_str().unwrap()))
            .collect();
        std::fs::write(
            &config,
            format!(
                "plaintext_agency = \"hospital\"\nplaintext_operator = \"\"\n\
                 [attestation]\nsigning_key_file = {:?}\npublished_key_files = [{}]\n\
                 [[agencies]]\nid = \"hospital\"\npurposes = [\"healthcare\"]\n",
                signing.to_str().unwrap(),
                published.join(", ")
            ),
        )
        .unwrap();
    };
    write_config(&old_key, &[]);
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.path().to_str().unwrap(),
    ];
    let mut serve = vec!["serve", "--listen", "127.0.0.1:0"];
    serve.extend(args);
    let mut served = Served::spawn(vnid(Some(&url), &serve));
    let mut client = served.client().await;
    let jwks_json =
        |mut client: vnid::pb::verification_service_client::VerificationServiceClient<
            tonic::transport::Channel,
        >| async move {
            client
                .get_signing_keys(pb::GetSigningKeysRequest {})
                .await
                .unwrap()
                .into_inner()
                .jwks_json
        };
    let before = client
        .verify(request(DAM.id, DAM.name))
        .await
        .unwrap()
        .into_inner();
    let kids = |json: &str| vnid::attest::Jwks::parse(json).unwrap().kids();
    assert_eq!(
        kids(&jwks_json(client.clone()).await),
        std::slice::from_ref(&old_kid)
    );

    // The JWKS URL on the listener: one ETag while the keys stay, another
    // once they change.
    let listener: std::net::SocketAddr = served.addr.parse().unwrap();
    let etag = || async move {
        let answer = crate::admin::http(listener, "GET", "/.well-known/jwks.json", &[], "").await;
        assert_eq!(answer.status, 200);
        answer.headers["etag"].clone()
    };
    let tag_before = etag().await;
    assert_eq!(etag().await, tag_before, "the keys did not change");

    write_config(&new_key, &[&old_key]);
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &served.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let rolled = loop {
        let json = jwks_json(client.clone()).await;
        if kids(&json).len() == 2 {
            break json;
        }
        assert!(std::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(kids(&rolled), [new_kid.clone(), old_kid.clone()]);
    let tag_after = etag().await;
    assert_ne!(tag_after, tag_before, "the keys changed");
    assert_eq!(etag().await, tag_after);
    let after = client
        .verify(request(DAM.id, DAM.name))
        .await
        .unwrap()
        .into_inner();
    let jwks = vnid::attest::Jwks::parse(&rolled).unwrap();
    let now = vnid::clock::Clock::now(&vnid::clock::SystemClock);
    // Both verify against the one JWKS; each names its own key.
    assert!(jwks.verify(&before.attestation, now).is_ok());
    assert!(jwks.verify(&after.attestation, now).is_ok());
    let kid_of = |token: &str| {
        let header = token.split('.').next().unwrap();
        let bytes =
            <base64ct::Base64UrlUnpadded as base64ct::Encoding>::decode_vec(header).unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(kid_of(&before.attestation), old_kid);
    assert_eq!(kid_of(&after.attestation), new_kid);
    assert!(served.stop("-TERM").await.success());

    let mut list = vec!["keys", "list"];
    list.extend(args);
    let out = vnid(Some(&url), &list).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line_of = |kid: &str| {
        said.lines()
            .find(|line| line.starts_with(kid))
            .unwrap_or_else(|| panic!("{kid} not listed: {said}"))
            .to_owned()
    };
    let (new_line, old_line) = (line_of(&new_kid), line_of(&old_kid));
    assert!(
        new_line.contains("signing") && new_line.ends_with(" 1"),
        "{said}"
    );
    assert!(
        old_line.contains("published") && old_line.ends_with(" 1"),
        "{said}"
    );
    let year = &vnid::clock::format_rfc3339(now)[..5];
    assert_eq!(old_line.matches(year).count(), 2, "first and last: {said}");
}

/// A fresh database holding the fixtures' mirror, for a `vnid serve`.
pub(crate) async fn database_with_fixtures() -> String {
    let url = crate::pg::PgServer::shared().fresh_database().await;
    let mirror =
        vnid::mirror::PgMirror::connect_lazy(&url, 2, std::time::Duration::from_secs(5)).unwrap();
    vnid::mirror::MirrorAdmin::migrate(&mirror).await.unwrap();
    vnid::mirror::load_records(
        &mirror,
        vnid::mirror::LoadMode::Full,
        None,
        fixtures().into_iter(),
    )
    .await
    .unwrap();
    url
}
