//! Negative checks timed one at a time: an unknown number, a wrong name,
//! a wrong birth date, each of a person not asked before.

use vnid::pb;

/// One call at a time, so that queueing does not blur the difference.
pub async fn timing(addr: &str, csv: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
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
