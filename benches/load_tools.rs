//! Helpers of `benches/load.sh` (run by hand, not by the tests):
//!
//!   load_tools frame verify ID NAME OUT   a gRPC frame of a VerifyRequest
//!   load_tools frame hello OUT            a gRPC frame of a HelloRequest
//!   load_tools hello ADDR [signed]        the baseline server: one trivial
//!                                         tonic method of the same crate;
//!                                         `signed`: each answer also carries
//!                                         an attestation signed as a check
//!                                         signs one (the floor under any
//!                                         check, whose answer DESIGN has
//!                                         signed anew for its request)
//!   load_tools drive ADDR ID NAME N CONNS STREAMS
//!                                         N Verify calls, each with its own
//!                                         request_id (h2load repeats one
//!                                         frame, which the service answers
//!                                         as a retry), on CONNS connections
//!                                         x STREAMS concurrent calls; prints
//!                                         "rate p50_ms p99_ms ok"
//!   load_tools drive-file ADDR CSV N CONNS STREAMS
//!                                         the same, over the candidates of
//!                                         a `vnid verify-batch` input file
//!                                         (id_number, full_name): call i
//!                                         checks candidate i (cycling)
//!   load_tools timing ADDR CSV N          N rounds of three negative checks
//!                                         in turn (an unknown number, a
//!                                         wrong name, a wrong birth date),
//!                                         each of a person of the mirror
//!                                         export CSV not asked before, one
//!                                         call at a time; prints each
//!                                         kind's median and p90 latency
//!   load_tools append URL CSV GROUP       appends the rows of CSV (the
//!                                         entry columns of audit_log, as
//!                                         `\copy` writes them) to a fresh
//!                                         trail at URL through the
//!                                         service's own append, GROUP rows
//!                                         per transaction, one after
//!                                         another as the writer does;
//!                                         prints "rows rows_per_s"
//!
//! A gRPC frame is a 0 byte (not compressed), the length as a big-endian
//! u32, and the protobuf message: what h2load sends as the request body.

#[path = "shared/claims.rs"]
mod claims;

use ed25519_dalek::SigningKey;
use prost::Message;
use tonic::{Request, Response, Status};
use vnid::attest::Keyring;
use vnid::pb;
use vnid::pb::bench::hello_service_server::{HelloService, HelloServiceServer};

/// The service's allocator, so that the baseline differs from it only in
/// what a call does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

struct Hello {
    /// Signs each answer, when set.
    keyring: Option<Keyring>,
}

#[tonic::async_trait]
impl HelloService for Hello {
    async fn say_hello(
        &self,
        request: Request<pb::bench::HelloRequest>,
    ) -> Result<Response<pb::bench::HelloResponse>, Status> {
        let name = request.into_inner().name;
        let message = match &self.keyring {
            None => format!("hello {name}"),
            Some(keyring) => keyring
                .sign(&claims::typical(name))
                .map_err(|e| Status::internal(e.to_string()))?,
        };
        Ok(Response::new(pb::bench::HelloResponse { message }))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["frame", "verify", id, name, out] => {
            let request = pb::VerifyRequest {
                request_id: "load-1".into(),
                id_number: (*id).into(),
                claims: Some(pb::Claims {
                    full_name: (*name).into(),
                    ..Default::default()
                }),
                purpose: pb::Purpose::Healthcare.into(),
                name_match: pb::NameMatch::Exact.into(),
            };
            std::fs::write(out, frame(&request))?;
        }
        ["frame", "hello", out] => {
            std::fs::write(
                out,
                frame(&pb::bench::HelloRequest {
                    name: "vnid".into(),
                }),
            )?;
        }
        ["hello", addr, rest @ ..] => {
            let addr: std::net::SocketAddr = addr.parse()?;
            let keyring = match rest {
                [] => None,
                ["signed"] => Some(Keyring::new(SigningKey::from_bytes(&[7; 32]), vec![])),
                _ => return Err(format!("unknown hello option: {rest:?}").into()),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                tonic::transport::Server::builder()
                    .max_concurrent_streams(256)
                    .add_service(HelloServiceServer::new(Hello { keyring }))
                    .serve_with_incoming(incoming)
                    .await?;
                Ok::<(), Box<dyn std::error::Error>>(())
            })?;
        }
        ["drive", addr, id, name, n, conns, streams] => {
            let (n, conns, streams): (usize, usize, usize) =
                (n.parse()?, conns.parse()?, streams.parse()?);
            // One client thread, as h2load's -t 1.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let people = vec![((*id).to_owned(), (*name).to_owned())];
            runtime.block_on(drive(addr, people, n, conns, streams))?;
        }
        ["drive-file", addr, csv, n, conns, streams] => {
            let (n, conns, streams): (usize, usize, usize) =
                (n.parse()?, conns.parse()?, streams.parse()?);
            let mut reader = csv::Reader::from_path(csv)?;
            let headers = reader.headers()?.clone();
            let column = |name: &str| headers.iter().position(|h| h == name);
            let (id, name) = (column("id_number"), column("full_name"));
            let (Some(id), Some(name)) = (id, name) else {
                return Err("the file needs id_number and full_name columns".into());
            };
            let mut people = Vec::new();
            for record in reader.records().take(n) {
                let record = record?;
                people.push((record[id].to_owned(), record[name].to_owned()));
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            runtime.block_on(drive(addr, people, n, conns, streams))?;
        }
        ["timing", addr, csv, n] => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(timing(addr, csv, n.parse()?))?;
        }
        ["append", url, csv, group] => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(append(url, csv, group.parse()?))?;
        }
        _ => eprintln!("usage: see the comment at the top of benches/load_tools.rs"),
    }
    Ok(())
}

/// `n` calls, call i checking `people[i % len]`.
async fn drive(
    addr: &str,
    people: Vec<(String, String)>,
    n: usize,
    conns: usize,
    streams: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use vnid::pb::verification_service_client::VerificationServiceClient;

    // Ids unique across runs against one trail.
    let run = std::process::id();
    let next = Arc::new(AtomicUsize::new(0));
    let people = Arc::new(people);
    if people.is_empty() {
        return Err("no one to check".into());
    }
    let mut tasks = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..conns {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        for _ in 0..streams {
            let mut client = VerificationServiceClient::new(channel.clone());
            let next = next.clone();
            let people = people.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut ok = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let (id, name) = &people[i % people.len()];
                    let request = pb::VerifyRequest {
                        request_id: format!("load-{run}-{i}"),
                        id_number: id.clone(),
                        claims: Some(pb::Claims {
                            full_name: name.clone(),
                            ..Default::default()
                        }),
                        purpose: pb::Purpose::Healthcare.into(),
                        name_match: pb::NameMatch::Exact.into(),
                    };
                    let sent = std::time::Instant::now();
                    if client.verify(request).await.is_ok() {
                        ok += 1;
                    }
                    latencies.push(sent.elapsed());
                }
                (ok, latencies)
            }));
        }
    }
    let mut ok = 0;
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        let (k, l) = task.await?;
        ok += k;
        latencies.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{:.2} {:.2} {:.2} {ok}",
        n as f64 / elapsed,
        at(0.50),
        at(0.99)
    );
    Ok(())
}

/// One call at a time, so that queueing does not blur the difference.
async fn timing(addr: &str, csv: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    use std::collections::HashSet;
    use vnid::pb::verification_service_client::VerificationServiceClient;

    let mut reader = csv::Reader::from_path(csv)?;
    let mut people = Vec::new();
    let mut known = HashSet::new();
    for record in reader.records() {
        let r = record?;
        known.insert(r[0].to_owned());
        // Active, with a whole birth date: a claim that could verify.
        if r[7] == *"active" && r[2].len() == 10 && people.len() < 3 * n {
            people.push((r[0].to_owned(), r[1].to_owned(), r[2].to_owned()));
        }
    }
    let date = |iso: &str, wrong: bool| -> Option<pb::PartialDate> {
        let p: Vec<u32> = iso.split('-').filter_map(|x| x.parse().ok()).collect();
        let day = match (wrong, p[2]) {
            (false, day) => day,
            (_, 1) => 2,
            (_, day) => day - 1,
        };
        Some(pb::PartialDate {
            year: p[0],
            month: p[1],
            day,
        })
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = VerificationServiceClient::new(channel);
    let run = std::process::id();
    let mut latencies: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut suffix = 0u32;
    // Three people a round, one for each kind: each check is the first of
    // its number (no kind finds another's record in the cache).
    for (i, round) in people.chunks_exact(3).enumerate() {
        let [
            (a_id, a_name, a_dob),
            (b_id, _, b_dob),
            (c_id, c_name, c_dob),
        ] = round
        else {
            continue;
        };
        // A number of the same prefix that is in no record.
        let unknown = loop {
            suffix = (suffix + 7_919) % 1_000_000;
            let candidate = format!("{}{suffix:06}", &a_id[..6]);
            if !known.contains(&candidate) {
                break candidate;
            }
        };
        let asks = [
            (unknown.as_str(), a_name.as_str(), date(a_dob, false)),
            (b_id.as_str(), "Nguyễn Văn Sai", date(b_dob, false)),
            (c_id.as_str(), c_name.as_str(), date(c_dob, true)),
        ];
        // The order turns each round, so no kind always goes first.
        for k in 0..3 {
            let kind = (i + k) % 3;
            let (id, name, dob) = &asks[kind];
            let request = pb::VerifyRequest {
                request_id: format!("t-{run}-{i}-{kind}"),
                id_number: (*id).to_owned(),
                claims: Some(pb::Claims {
                    full_name: (*name).to_owned(),
                    date_of_birth: *dob,
                    ..Default::default()
                }),
                purpose: pb::Purpose::Healthcare.into(),
                name_match: pb::NameMatch::Exact.into(),
            };
            let sent = std::time::Instant::now();
            let answer = client.verify(request).await?.into_inner();
            latencies[kind].push(sent.elapsed().as_secs_f64() * 1e6);
            if answer.verdict != pb::Verdict::NotVerified as i32 {
                return Err("a negative check verified".into());
            }
        }
    }
    for (kind, mut l) in ["unknown number", "wrong name", "wrong birth date"]
        .into_iter()
        .zip(latencies)
    {
        l.sort_by(f64::total_cmp);
        let at = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)];
        println!(
            "{kind:<18} median {:7.1} us  p90 {:7.1} us  ({} calls)",
            at(0.5),
            at(0.9),
            l.len()
        );
    }
    Ok(())
}

/// The trail's own cost in the database, without the service around it.
async fn append(url: &str, csv: &str, group: usize) -> Result<(), Box<dyn std::error::Error>> {
    use vnid::audit::{AuditEntry, AuditKind, AuditStore, SqlAudit};

    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(csv)?;
    let mut entries = Vec::new();
    for record in reader.records() {
        let r = record?;
        let text = |i: usize| r.get(i).unwrap_or_default().to_owned();
        entries.push(AuditEntry {
            at_us: text(0).parse()?,
            kind: AuditKind::parse(&text(1)).ok_or("unknown kind")?,
            agency: text(2),
            purpose: text(3),
            request_id: text(4),
            subject: text(5),
            subject_index: text(6),
            verdict: text(7),
            reason: text(8),
            attestation_id: text(9),
            attestation: text(10),
            request_digest: text(11),
        });
    }
    let store = SqlAudit::connect_lazy(url, 2, std::time::Duration::from_secs(10))?;
    store.migrate().await?;
    let started = std::time::Instant::now();
    for chunk in entries.chunks(group.max(1)) {
        store.append(chunk).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("{} {:.0}", entries.len(), entries.len() as f64 / elapsed);
    Ok(())
}
