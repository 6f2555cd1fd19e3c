//! `spawn_app`: a real server on port 0 against a fresh Postgres database
//! (real migrations), and a real generated gRPC client.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use vnid::app::Application;
use vnid::clock::FixedClock;
use vnid::config::{LogSettings, Secret, Settings};
use vnid::domain::{CitizenStatus, Gender, OldIdNumber, PartialDate, PersonalIdNumber};
use vnid::mirror::{ExportRecord, LoadMode, PgMirror, load_records};
use vnid::pb;
use vnid::pb::verification_service_client::VerificationServiceClient;

use crate::pg::PgServer;

/// 2026-11-27T00:00:00Z: the tests' "now".
pub const NOW: i64 = 1_795_737_600;
/// When the fixture mirror was last updated.
pub const DATA_AS_OF: i64 = NOW - 3_600;

/// Everything every test process logs, to prove what is never in it.
pub fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(Default::default)
}

#[derive(Clone, Copy)]
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        captured_logs().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let settings = LogSettings {
            filter: "debug,h2=info,hyper=info,tower=info".into(),
            ..Default::default()
        };
        let _no_traces = vnid::telemetry::init(&settings, &Default::default(), || Capture).unwrap();
    });
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin endpoint (health, readiness, JWKS).
    pub admin: Option<SocketAddr>,
    pub client: VerificationServiceClient<Channel>,
    pub channel: Channel,
    pub mirror: PgMirror,
    pub clock: Arc<FixedClock>,
    pub data_dir: PathBuf,
    /// The cache in front of the mirror, for its counters.
    pub cache: Option<Arc<vnid::cache::CachedMirror>>,
    /// What SIGHUP would reload.
    pub reloader: vnid::app::Reloader,
    /// Connections the listener refused.
    pub connections: Arc<vnid::grpc::listener::Connections>,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<JoinHandle<Result<(), vnid::startup::StartupError>>>,
}

/// The keys that check the trail of a server whose data directory is
/// `data_dir` (its generated attestation and checkpoint keys).
pub fn trail_keys(data_dir: &std::path::Path) -> vnid::startup::ExistingKeys {
    let mut settings = Settings::load(None, []).unwrap();
    settings.data_dir = data_dir.to_owned();
    vnid::startup::ExistingKeys::read(&settings).unwrap()
}

pub fn test_settings(database_url: &str) -> Settings {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut settings = Settings::load(None, []).unwrap();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.admin_listen = "127.0.0.1:0".into();
    settings.database_url = Some(Secret::new(database_url));
    settings.database.acquire_timeout_ms = 1_000;
    settings.data_dir =
        std::env::temp_dir().join(format!("vnid-test-app-{}-{n}", std::process::id()));
    settings.attestation.issuer = "vnid-test".into();
    settings.cache.generation_poll_ms = 50;
    // Load tests fail the same numbers many times; the defence has its own
    // tests (`quota::…`).
    settings.defences.id_failures_per_day = 0;
    settings.defences.not_verified_alert_share = 0.0;
    settings
}

/// A server on the shared Postgres, with the fixture population loaded.
pub async fn spawn_app() -> TestApp {
    let url = PgServer::shared().fresh_database().await;
    spawn_app_with(test_settings(&url)).await
}

/// A server with the fixture population loaded.
pub async fn spawn_app_with(settings: Settings) -> TestApp {
    let app = spawn_bare(settings).await;
    load_records(&app.mirror, LoadMode::Delta, None, fixtures().into_iter())
        .await
        .unwrap();
    app
}

/// A server over whatever the database holds.
pub async fn spawn_bare(settings: Settings) -> TestApp {
    init_logging();
    let clock = Arc::new(FixedClock::new(NOW));
    let app = Application::build_with_clock(&settings, clock.clone())
        .await
        .unwrap();
    let addr = app.local_addr().unwrap();
    let admin = app.admin_addr();
    let cache = app.cache();
    let reloader = app.reloader();
    let connections = app.connections();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let url = settings.database_url.as_ref().unwrap().expose().to_owned();
    let mirror = PgMirror::connect_lazy(&url, 2, std::time::Duration::from_secs(5)).unwrap();
    // Under TLS the tests make their own channels; this one stays unused.
    let endpoint = Channel::from_shared(format!("http://{addr}")).unwrap();
    let channel = if settings.tls.is_some() {
        endpoint.connect_lazy()
    } else {
        endpoint.connect().await.unwrap()
    };
    TestApp {
        addr,
        admin,
        client: VerificationServiceClient::new(channel.clone()),
        channel,
        mirror,
        clock,
        data_dir: settings.data_dir.clone(),
        cache,
        reloader,
        connections,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    /// Sends the shutdown signal; returns the server's task.
    pub fn begin_shutdown(&mut self) -> JoinHandle<Result<(), vnid::startup::StartupError>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take().unwrap()
    }

    pub async fn jwks(&self) -> vnid::attest::Jwks {
        let jwks = self
            .client
            .clone()
            .get_signing_keys(pb::GetSigningKeysRequest {})
            .await
            .unwrap();
        vnid::attest::Jwks::parse(&jwks.into_inner().jwks_json).unwrap()
    }

    /// The JWKS, asked over `channel`.
    pub async fn jwks_over(&self, channel: Channel) -> vnid::attest::Jwks {
        let jwks = VerificationServiceClient::new(channel)
            .get_signing_keys(pb::GetSigningKeysRequest {})
            .await
            .unwrap();
        vnid::attest::Jwks::parse(&jwks.into_inner().jwks_json).unwrap()
    }

    pub async fn verify(
        &self,
        request: pb::VerifyRequest,
    ) -> Result<pb::VerifyResponse, tonic::Status> {
        self.client
            .clone()
            .verify(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The fixture citizens. Each ID number agrees with its person's gender
/// and birth year.
pub struct Person {
    pub id: &'static str,
    pub name: &'static str,
    pub dob: &'static str,
    pub gender: Gender,
    pub old: &'static [&'static str],
    pub status: CitizenStatus,
}

/// Male, 1990-05-17, two old CMND numbers.
pub const DAM: Person = Person {
    id: "082090012345",
    name: "Nguyễn Văn Đàm",
    dob: "1990-05-17",
    gender: Gender::Male,
    old: &["312345678", "312000111"],
    status: CitizenStatus::Active,
};
/// Female, birth year only, written with the old-style tone mark.
pub const THUY: Person = Person {
    id: "079301000001",
    name: "Trần Thị Thủy",
    dob: "2001",
    gender: Gender::Female,
    old: &[],
    status: CitizenStatus::Active,
};
pub const HOA_DECEASED: Person = Person {
    id: "001045000002",
    name: "Lê Văn Hoà",
    dob: "1945-08",
    gender: Gender::Male,
    old: &["011234567"],
    status: CitizenStatus::Deceased,
};
pub const LAN_CANCELLED: Person = Person {
    id: "048195000003",
    name: "Phạm Thị Lan",
    dob: "1995-12-01",
    gender: Gender::Female,
    old: &[],
    status: CitizenStatus::Cancelled,
};
/// Well-formed, but in no mirror.
pub const UNKNOWN_ID: &str = "082090999999";

pub fn record(p: &Person) -> ExportRecord {
    ExportRecord {
        id_number: PersonalIdNumber::parse(p.id).unwrap(),
        full_name: p.name.into(),
        date_of_birth: PartialDate::parse_iso(p.dob).unwrap(),
        gender: p.gender,
        old_id_numbers: p
            .old
            .iter()
            .map(|o| OldIdNumber::parse(o).unwrap())
            .collect(),
        place_of_origin: "Xã Tân Mỹ Chánh, Mỹ Tho, Tiền Giang".into(),
        permanent_residence: "12 Ấp Bắc, Phường 10, Mỹ Tho, Tiền Giang".into(),
        status: p.status,
        household_id: "HH-1".into(),
        relation_to_head: "head".into(),
        updated_at: DATA_AS_OF,
    }
}

pub fn fixtures() -> Vec<ExportRecord> {
    [&DAM, &THUY, &HOA_DECEASED, &LAN_CANCELLED]
        .into_iter()
        .map(record)
        .collect()
}

/// A request for `id` claiming a name, with purpose healthcare.
pub fn request(id: &str, name: &str) -> pb::VerifyRequest {
    pb::VerifyRequest {
        request_id: format!(
            "req-{}",
            NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
        id_number: id.into(),
        claims: Some(pb::Claims {
            full_name: name.into(),
            ..Default::default()
        }),
        purpose: pb::Purpose::Healthcare.into(),
        name_match: pb::NameMatch::Unspecified.into(),
    }
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub fn date(year: u32, month: u32, day: u32) -> Option<pb::PartialDate> {
    Some(pb::PartialDate { year, month, day })
}

/// The `vnid` binary, without this process's `VNID__` environment.
/// Runs `cmd` to its end: its exit code, and what it said (standard
/// output, then standard error).
pub fn run_to_end(mut cmd: Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), said)
}

pub fn vnid(database_url: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vnid"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("VNID__")) {
        cmd.env_remove(key);
    }
    if let Some(url) = database_url {
        cmd.env("VNID__DATABASE_URL", url);
    }
    // Tests run side by side: each server's admin endpoint on a port of
    // its own.
    cmd.env("VNID__ADMIN_LISTEN", "127.0.0.1:0");
    cmd.args(args);
    cmd
}

/// `vnid serve` on a free loopback port, over `database_url`, keeping its
/// state in `data_dir`.
pub fn serve_on_loopback(database_url: &str, data_dir: &std::path::Path) -> Command {
    let data_dir = data_dir.to_str().unwrap();
    vnid(
        Some(database_url),
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
    )
}

/// A `vnid serve` child process, once it listens.
pub struct Served {
    pub child: Child,
    pub addr: String,
    /// The admin endpoint's address.
    pub admin_addr: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Served {
    /// Spawns `cmd` (a `vnid serve`) and waits for its banner.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut served = Self {
            child,
            addr: String::new(),
            admin_addr: String::new(),
            lines: rx,
        };
        let banner = served.next_line();
        served.addr = banner
            .strip_prefix("vnid listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected banner {banner:?}"))
            .to_owned();
        let admin = served.next_line();
        served.admin_addr = admin
            .strip_prefix("vnid admin endpoint on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected admin banner {admin:?}"))
            .to_owned();
        served
    }

    /// The next line the server writes to standard error.
    pub fn next_line(&mut self) -> String {
        self.lines
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("vnid serve said nothing")
    }

    pub async fn client(&self) -> VerificationServiceClient<Channel> {
        VerificationServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Sends `signal` (e.g. `-TERM`, `-KILL`) and waits for the exit,
    /// leaving this test's runtime free to close its connections meanwhile.
    pub async fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `google.rpc.ErrorInfo` reason of a refusal ("" if none).
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}
