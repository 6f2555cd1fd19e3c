//! Parse throughput of the export reader (run by hand):
//!   cargo bench --bench parse -- FILE.csv
//! Reports rows/s of `ExportReader` (parse and validate every field) next to
//! bare `csv` record iteration of the same file in the same run.

use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        eprintln!("usage: cargo bench --bench parse -- FILE.csv");
        return Ok(());
    };
    let path = std::path::PathBuf::from(path);

    let start = Instant::now();
    let mut reader = csv::Reader::from_path(&path)?;
    let mut record = csv::StringRecord::new();
    let mut bare = 0u64;
    while reader.read_record(&mut record)? {
        bare += 1;
    }
    let bare_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut reader = vnid::import::format::ExportReader::open(&path, Arc::default())?;
    let (mut rows, mut bad) = (0u64, 0u64);
    while let Some(row) = reader.next_row()? {
        rows += 1;
        bad += u64::from(row.result.is_err());
    }
    let parse_secs = start.elapsed().as_secs_f64();

    let rate = |n: u64, s: f64| n as f64 / s;
    println!(
        "bare csv      : {bare} rows in {bare_secs:.2} s, {:.0} rows/s",
        rate(bare, bare_secs)
    );
    println!(
        "ExportReader  : {rows} rows ({bad} bad) in {parse_secs:.2} s, {:.0} rows/s",
        rate(rows, parse_secs)
    );
    println!(
        "ratio         : {:.2}x bare csv",
        rate(rows, parse_secs) / rate(bare, bare_secs)
    );
    Ok(())
}
