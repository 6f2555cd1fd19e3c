//! Verify calls, each with its own `request_id` (h2load repeats one frame,
//! which the service answers as a retry).

use vnid::pb;

/// The people of a `vnid verify-batch` input file (id_number, full_name),
/// the first `n` of them.
pub fn people_of(csv: &str, n: usize) -> Result<Vec<(String, String)>, Box<dyn std::error::Error>> {
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
    Ok(people)
}

/// `n` calls, call i checking `people[i % len]`.
pub async fn drive(
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
