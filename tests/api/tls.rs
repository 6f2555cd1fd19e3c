//! Mutual TLS with certificates made in the test: who may connect, who the
//! caller is, and what each caller may do.

use std::net::SocketAddr;

use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use vnid::clock::{Clock, SystemClock};
use vnid::config::TlsSettings;
use vnid::devcerts::{DevCa, Holder, Pem, Validity};
use vnid::domain::Purpose;
use vnid::pb;
use vnid::pb::audit_service_client::AuditServiceClient;
use vnid::pb::verification_service_client::VerificationServiceClient;
use vnid::policy::{AgencyConfig, Role};

use crate::helpers::*;
use crate::pg::PgServer;
use crate::store::tempdir::Dir;

/// Certificates are checked against the real clock, not the tests' fixed one.
fn valid() -> Validity {
    Validity::days_from(SystemClock.now(), 30)
}

struct World {
    app: TestApp,
    /// What the server was started with, to reload changed.
    settings: vnid::config::Settings,
    ca: DevCa,
    /// The database of the mirror and the audit trail.
    url: String,
    _dir: Dir,
}

/// A server with mutual TLS on a non-loopback listener, and a registry of
/// a hospital, an exam board, a disabled agency and an operator.
async fn world() -> World {
    let ca = DevCa::new("test agency CA", valid()).unwrap();
    let server = ca.server(&["localhost"], valid()).unwrap();
    let dir = Dir::new("tls");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.listen = "0.0.0.0:0".parse().unwrap();
    settings.tls = Some(TlsSettings {
        cert_file: file("server.pem", &server.cert),
        key_file: file("server.key", &server.key),
        client_ca_file: file("ca.pem", &ca.pem().cert),
        crl_files: Vec::new(),
    });
    let agency = |id: &str, purposes: Vec<Purpose>| AgencyConfig {
        purposes,
        ..AgencyConfig::demo(id)
    };
    let mut closed = agency("closed-clinic", Purpose::ALL.to_vec());
    closed.enabled = false;
    // A hospital scans cards but sends no batches; an exam board the
    // reverse.
    settings.agencies = vec![
        AgencyConfig {
            allow_batch: false,
            ..agency("bv-tien-giang", vec![Purpose::Healthcare])
        },
        AgencyConfig {
            allow_card_qr: false,
            ..agency("exam-board", vec![Purpose::Examination])
        },
        closed,
        AgencyConfig::operator("ombudsman"),
    ];
    World {
        app: spawn_app_with(settings.clone()).await,
        settings,
        ca,
        url,
        _dir: dir,
    }
}

async fn channel(
    addr: SocketAddr,
    ca: &Pem,
    identity: Option<&Pem>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.cert))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

impl World {
    async fn as_client(&self, identity: &Pem) -> Channel {
        channel(self.app.addr, &self.ca.pem().clone(), Some(identity))
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_handshake_without_a_good_client_certificate_fails() {
    let w = world().await;
    let ca = w.ca.pem().clone();
    let other_ca = DevCa::new("another CA", valid()).unwrap();
    let now = SystemClock.now();
    let expired = Validity {
        not_before: now - 400 * 86_400,
        not_after: now - 30 * 86_400,
    };
    let not_yet = Validity {
        not_before: now + 30 * 86_400,
        not_after: now + 400 * 86_400,
    };
    let cases = [
        ("no certificate", None),
        (
            "another CA",
            Some(other_ca.client(&agency("bv-tien-giang"), valid()).unwrap()),
        ),
        (
            "expired",
            Some(w.ca.client(&agency("bv-tien-giang"), expired).unwrap()),
        ),
        (
            "not yet valid",
            Some(w.ca.client(&agency("bv-tien-giang"), not_yet).unwrap()),
        ),
    ];
    for (case, identity) in cases {
        // Under TLS 1.3 the server's refusal may come at the first call.
        let answer = match channel(w.app.addr, &ca, identity.as_ref()).await {
            Err(_) => None,
            Ok(channel) => VerificationServiceClient::new(channel)
                .verify(request(DAM.id, DAM.name))
                .await
                .ok(),
        };
        assert!(answer.is_none(), "{case}: answered");
    }
    // Plaintext to the TLS port: no answer either.
    let plain = VerificationServiceClient::new(w.app.channel.clone())
        .verify(request(DAM.id, DAM.name))
        .await;
    assert!(plain.is_err());
}

fn agency(id: &str) -> Holder {
    Holder::Agency(id.into())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rpc {
    Verify(Purpose),
    Batch(Purpose),
    CardQr(Purpose),
    AccessHistory,
    SigningKeys,
}

fn purpose(p: Purpose) -> pb::Purpose {
    match p {
        Purpose::Healthcare => pb::Purpose::Healthcare,
        Purpose::Examination => pb::Purpose::Examination,
        Purpose::SocialInsurance => pb::Purpose::SocialInsurance,
        Purpose::PublicService => pb::Purpose::PublicService,
    }
}

async fn call(channel: Channel, rpc: Rpc) -> Result<(), tonic::Status> {
    match rpc {
        Rpc::Verify(p) => {
            let mut r = request(DAM.id, DAM.name);
            r.purpose = purpose(p).into();
            let answer = VerificationServiceClient::new(channel).verify(r).await?;
            assert_eq!(answer.into_inner().verdict(), pb::Verdict::Verified);
        }
        Rpc::Batch(p) => {
            let mut r = request(DAM.id, DAM.name);
            r.purpose = purpose(p).into();
            let mut answers = VerificationServiceClient::new(channel)
                .verify_batch(tokio_stream::iter([r]))
                .await?
                .into_inner();
            let item = answers.message().await?.expect("one answer");
            match item.result.expect("a result") {
                pb::verify_batch_response::Result::Response(answer) => {
                    assert_eq!(answer.verdict(), pb::Verdict::Verified);
                }
                pb::verify_batch_response::Result::Error(status) => {
                    use prost::Message;
                    return Err(tonic::Status::with_details(
                        Code::from(status.code),
                        status.message.clone(),
                        status.encode_to_vec().into(),
                    ));
                }
            }
        }
        Rpc::CardQr(p) => {
            let answer = VerificationServiceClient::new(channel)
                .verify_card_qr(pb::VerifyCardQrRequest {
                    request_id: request(DAM.id, DAM.name).request_id,
                    qr_payload: format!(
                        "{}||{}|17051990|Nam|12 Ấp Bắc, Mỹ Tho|01072021",
                        DAM.id, DAM.name
                    ),
                    purpose: purpose(p).into(),
                    name_match: pb::NameMatch::Unspecified.into(),
                })
                .await?;
            assert_eq!(answer.into_inner().verdict(), pb::Verdict::Verified);
        }
        Rpc::AccessHistory => {
            AuditServiceClient::new(channel)
                .list_access_history(pb::ListAccessHistoryRequest {
                    request_id: "case-1".into(),
                    id_number: DAM.id.into(),
                    ..Default::default()
                })
                .await?;
        }
        Rpc::SigningKeys => {
            VerificationServiceClient::new(channel)
                .get_signing_keys(pb::GetSigningKeysRequest {})
                .await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_rpc_role_and_purpose_is_allowed_only_by_policy() {
    let w = world().await;
    // (certificate's holder, role, purposes, (batch, card QR) grants), as
    // the registry says; unknown and disabled agencies have no rights.
    type Caller<'a> = (Holder, Option<Role>, &'a [Purpose], (bool, bool));
    let callers: [Caller; 5] = [
        (
            agency("bv-tien-giang"),
            Some(Role::Agency),
            &[Purpose::Healthcare],
            (false, true),
        ),
        (
            agency("exam-board"),
            Some(Role::Agency),
            &[Purpose::Examination],
            (true, false),
        ),
        (
            Holder::Operator("ombudsman".into()),
            Some(Role::Operator),
            &[],
            (false, false),
        ),
        (agency("closed-clinic"), None, &[], (false, false)),
        (agency("nobody-registered"), None, &[], (false, false)),
    ];
    let mut rpcs: Vec<Rpc> = Vec::new();
    for p in Purpose::ALL {
        rpcs.extend([Rpc::Verify(p), Rpc::Batch(p), Rpc::CardQr(p)]);
    }
    rpcs.extend([Rpc::AccessHistory, Rpc::SigningKeys]);
    let mut unexpected = Vec::new();
    let mut cells = 0;
    for (holder, role, purposes, (batch, card_qr)) in callers {
        let id = holder.id().to_owned();
        let cert = w.ca.client(&holder, valid()).unwrap();
        let channel = w.as_client(&cert).await;
        for rpc in &rpcs {
            cells += 1;
            let allowed = match (rpc, role) {
                (Rpc::SigningKeys, _) => true,
                (Rpc::Verify(p), Some(Role::Agency)) => purposes.contains(p),
                (Rpc::Batch(p), Some(Role::Agency)) => batch && purposes.contains(p),
                (Rpc::CardQr(p), Some(Role::Agency)) => card_qr && purposes.contains(p),
                (Rpc::AccessHistory, Some(Role::Operator)) => true,
                _ => false,
            };
            let result = call(channel.clone(), *rpc).await;
            match (&result, allowed) {
                (Ok(()), true) => {}
                (Err(status), false) if status.code() == Code::PermissionDenied => {
                    let expected = match (rpc, role) {
                        (Rpc::AccessHistory, Some(Role::Agency) | None) => "OPERATOR_ROLE_REQUIRED",
                        (_, None) => "AGENCY_UNKNOWN",
                        (Rpc::Verify(_) | Rpc::Batch(_) | Rpc::CardQr(_), Some(Role::Operator)) => {
                            "AGENCY_ROLE_REQUIRED"
                        }
                        (Rpc::Batch(_), _) if !batch => "BATCH_NOT_ALLOWED",
                        (Rpc::CardQr(_), _) if !card_qr => "CARD_QR_NOT_ALLOWED",
                        (Rpc::Verify(_) | Rpc::Batch(_) | Rpc::CardQr(_), _) => {
                            "PURPOSE_NOT_ALLOWED"
                        }
                        _ => "OPERATOR_ROLE_REQUIRED",
                    };
                    assert_eq!(reason(status), expected, "{id} {rpc:?}");
                }
                _ => unexpected.push(format!("{id} {rpc:?}: {result:?}")),
            }
        }
    }
    assert_eq!(cells, 70);
    assert!(unexpected.is_empty(), "{unexpected:#?}");
}

#[tokio::test]
async fn the_certificate_is_the_attestations_audience() {
    let w = world().await;
    let jwks = w
        .app
        .jwks_over(
            w.as_client(&w.ca.client(&agency("exam-board"), valid()).unwrap())
                .await,
        )
        .await;
    let mut r = request(DAM.id, DAM.name);
    r.purpose = pb::Purpose::Examination.into();
    let cert = w.ca.client(&agency("exam-board"), valid()).unwrap();
    let answer = VerificationServiceClient::new(w.as_client(&cert).await)
        .verify(r)
        .await
        .unwrap()
        .into_inner();
    let claims = jwks.verify(&answer.attestation, NOW).unwrap();
    assert_eq!(claims.aud, "exam-board");
}

#[tokio::test]
async fn the_batch_cli_speaks_mutual_tls_as_its_agency() {
    let w = world().await;
    let dir = Dir::new("tls-cli");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let board = w.ca.client(&agency("exam-board"), valid()).unwrap();
    let (ca, cert, key) = (
        write("ca.pem", &w.ca.pem().cert),
        write("board.pem", &board.cert),
        write("board.key", &board.key),
    );
    let input = write(
        "in.csv",
        &format!(
            "request_id,id_number,full_name\nk-1,{},{}\nk-2,{},Nguyễn Văn Nam\n",
            DAM.id, DAM.name, DAM.id
        ),
    );
    let output = dir.path().join("out.csv");
    let server = format!("https://127.0.0.1:{}", w.app.addr.port());
    let mut cmd = vnid(
        None,
        &["verify-batch", "--quiet", "--tls-name", "localhost"],
    );
    cmd.args(["--server", &server]);
    for (flag, path) in [
        ("--ca", &ca),
        ("--cert", &cert),
        ("--key", &key),
        ("--input", &input),
        ("--output", &output),
    ] {
        cmd.arg(flag).arg(path);
    }
    let done = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(done.status.success(), "{done:?}");
    let text = std::fs::read_to_string(&output).unwrap();
    let verdicts: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(verdicts.len(), 2);
    assert!(verdicts.contains(&"VERDICT_VERIFIED") && verdicts.contains(&"VERDICT_NOT_VERIFIED"));
    let audited: Vec<String> =
        sqlx::query_scalar("SELECT agency FROM audit_log WHERE kind = 'verify_batch'")
            .fetch_all(&sqlx::PgPool::connect(&w.url).await.unwrap())
            .await
            .unwrap();
    assert_eq!(audited, ["exam-board", "exam-board"]);
}

/// The verification call every holder below tries, and the audit call.
async fn verify_and_history(channel: Channel) -> (tonic::Status, tonic::Status) {
    let verify = VerificationServiceClient::new(channel.clone())
        .verify(request(DAM.id, DAM.name))
        .await
        .unwrap_err();
    let history = AuditServiceClient::new(channel)
        .list_access_history(pb::ListAccessHistoryRequest {
            request_id: "h-1".into(),
            id_number: DAM.id.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    (verify, history)
}

#[tokio::test]
async fn only_a_san_uri_names_the_caller_and_only_for_its_role() {
    let w = world().await;
    // A certificate of the agency CA whose CN is a registered operator's
    // id, and no SAN: nobody.
    let cn_only = w.ca.cn_only("ombudsman", valid()).unwrap();
    let (verify, history) = verify_and_history(w.as_client(&cn_only).await).await;
    assert_eq!(verify.code(), Code::Unauthenticated);
    assert_eq!(history.code(), Code::Unauthenticated);
    // An agency URI naming the operator, an operator URI naming an agency:
    // neither is let act as the other.
    for (holder, verify_reason) in [
        (agency("ombudsman"), "AGENCY_ROLE_REQUIRED"),
        (
            Holder::Operator("bv-tien-giang".into()),
            "AGENCY_ROLE_REQUIRED",
        ),
    ] {
        let cert = w.ca.client(&holder, valid()).unwrap();
        let (verify, history) = verify_and_history(w.as_client(&cert).await).await;
        assert_eq!(verify.code(), Code::PermissionDenied, "{holder:?}");
        assert_eq!(reason(&verify), verify_reason, "{holder:?}");
        assert_eq!(history.code(), Code::PermissionDenied, "{holder:?}");
        assert_eq!(reason(&history), "OPERATOR_ROLE_REQUIRED", "{holder:?}");
    }
}

fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

async fn verify_as(w: &World, cert: &Pem) -> Result<pb::VerifyResponse, tonic::Status> {
    let channel = channel(w.app.addr, w.ca.pem(), Some(cert))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    VerificationServiceClient::new(channel)
        .verify(request(DAM.id, DAM.name))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn pins_and_revocation_lists_take_certificates_back() {
    let w = world().await;
    let hospital = agency("bv-tien-giang");
    let (pinned, other) = (
        w.ca.client(&hospital, valid()).unwrap(),
        w.ca.client(&hospital, valid()).unwrap(),
    );
    assert!(verify_as(&w, &other).await.is_ok());

    // Pinned: only the pinned certificate acts as the hospital.
    let mut settings = w.settings.clone();
    settings.agencies[0].certificate_sha256 = vec![sha256_hex(&pinned.der)];
    w.app.reloader.reload(&settings).unwrap();
    assert!(verify_as(&w, &pinned).await.is_ok());
    let refused = verify_as(&w, &other).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(reason(&refused), "CERTIFICATE_NOT_PINNED");

    // Revoked by the CA's list, loaded by a reload: no new connection.
    let crl = w
        .settings
        .tls
        .as_ref()
        .unwrap()
        .client_ca_file
        .with_file_name("ca.crl");
    std::fs::write(
        &crl,
        w.ca.revocation_list(&[&pinned], SystemClock.now(), 7)
            .unwrap(),
    )
    .unwrap();
    let mut settings = w.settings.clone();
    settings.tls.as_mut().unwrap().crl_files = vec![crl.clone()];
    w.app.reloader.reload(&settings).unwrap();
    assert!(
        verify_as(&w, &pinned).await.is_err(),
        "a revoked certificate"
    );
    assert!(verify_as(&w, &other).await.is_ok());
    // A list that does not parse is refused, and the one in force stays.
    std::fs::write(
        &crl,
        "-----BEGIN X509 CRL-----\nnot a list\n-----END X509 CRL-----\n",
    )
    .unwrap();
    assert!(w.app.reloader.reload(&settings).is_err());
    assert!(verify_as(&w, &pinned).await.is_err());
}

#[tokio::test]
async fn with_tls_the_registry_must_list_its_callers() {
    let w = world().await;
    let mut settings = w.settings.clone();
    settings.agencies.clear();
    let refused = vnid::app::Application::build(&settings)
        .await
        .err()
        .unwrap();
    assert!(refused.to_string().contains("[[agencies]]"), "{refused}");
    assert!(w.app.reloader.reload(&settings).is_err());
}

/// Whether the server closed `stream` within `within` (it reads EOF or
/// an error), sending nothing more than `send` first.
async fn closed_within(
    mut stream: tokio::net::TcpStream,
    send: &[u8],
    within: std::time::Duration,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(send).await.unwrap();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn silent_and_half_open_connections_are_closed_and_capped() {
    let w = world().await;
    let ca = DevCa::new("cap CA", valid()).unwrap();
    let mut settings = w.settings.clone();
    settings.tls.as_mut().unwrap().client_ca_file = {
        let path = w
            .settings
            .tls
            .as_ref()
            .unwrap()
            .client_ca_file
            .with_file_name("cap.pem");
        std::fs::write(&path, &ca.pem().cert).unwrap();
        path
    };
    settings.server.tls_handshake_timeout_ms = 300;
    settings.server.first_bytes_timeout_ms = 300;
    let app = spawn_app_with(settings.clone()).await;
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", app.addr.port()));
    let second = std::time::Duration::from_secs(2);
    // Silent, and half a ClientHello: both closed by the handshake deadline.
    assert!(closed_within(connect().await.unwrap(), b"", second).await);
    assert!(closed_within(connect().await.unwrap(), &[0x16, 0x03, 0x01, 0x02], second).await);

    // Plaintext: a connection that never sends the HTTP/2 preface.
    let url = PgServer::shared().fresh_database().await;
    let mut plain = test_settings(&url);
    plain.server.first_bytes_timeout_ms = 300;
    plain.server.max_connections = 2;
    let app = spawn_app_with(plain).await;
    let connect = || tokio::net::TcpStream::connect(app.addr);
    assert!(closed_within(connect().await.unwrap(), b"PRI * HTTP/2.0", second).await);
    // The cap: the harness' own client holds one place; one more is let
    // in, the next is closed at once, long before any deadline.
    let held = connect().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let over = connect().await.unwrap();
    assert!(closed_within(over, b"", std::time::Duration::from_millis(200)).await);
    assert_eq!(
        app.connections
            .over_cap
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    drop(held);
}
