//! `vnid import` and `vnid gen-population` as an operator runs them, and the
//! embedded default as a newcomer meets it.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use vnid::domain::{CitizenStatus, PersonalIdNumber};
use vnid::import::format::{ExportReader, ExportWriter, Format};
use vnid::mirror::{ExportRecord, MirrorStore, PgMirror};
use vnid::pb;

use crate::helpers::*;
use crate::pg::PgServer;
use crate::store::tempdir::Dir;

fn run(database_url: &str, args: &[&str]) -> Output {
    vnid(Some(database_url), args).output().unwrap()
}

/// A full import that must succeed; its report is shown if it does not.
fn import_ok(database_url: &str, file: &Path) {
    let out = run(database_url, &["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn generate(dir: &Path, name: &str, count: u64, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let (count, seed) = (count.to_string(), seed.to_string());
    let out = vnid(
        None,
        &[
            "gen-population",
            "--count",
            &count,
            "--province",
            "082",
            "--seed",
            &seed,
            "--out",
        ],
    )
    .arg(&path)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    path
}

fn read_all(path: &Path) -> Vec<ExportRecord> {
    let mut reader = ExportReader::open(path, Default::default()).unwrap();
    let mut records = Vec::new();
    while let Some(row) = reader.next_row().unwrap() {
        records.push(row.result.unwrap());
    }
    records
}

fn write_all(path: &Path, records: &[ExportRecord]) {
    let mut writer =
        ExportWriter::new(Format::of(path), std::fs::File::create(path).unwrap()).unwrap();
    for r in records {
        writer.write(r).unwrap();
    }
    writer.finish().unwrap();
}

fn first(path: &Path) -> ExportRecord {
    let mut reader = ExportReader::open(path, Default::default()).unwrap();
    reader.next_row().unwrap().unwrap().result.unwrap()
}

async fn mirror(url: &str) -> PgMirror {
    PgMirror::connect_lazy(url, 2, std::time::Duration::from_secs(5)).unwrap()
}

async fn exists(mirror: &PgMirror, id: &PersonalIdNumber) -> bool {
    mirror.find(id).await.unwrap().record.is_some()
}

fn verify_request(r: &ExportRecord) -> pb::VerifyRequest {
    let mut req = request(r.id_number.expose(), &r.full_name);
    let claims = req.claims.as_mut().unwrap();
    let dob = r.date_of_birth;
    claims.date_of_birth = date(
        dob.year().into(),
        dob.month().unwrap_or(0).into(),
        dob.day().unwrap_or(0).into(),
    );
    claims.gender = match r.gender {
        vnid::domain::Gender::Male => pb::Gender::Male.into(),
        vnid::domain::Gender::Female => pb::Gender::Female.into(),
    };
    req
}

#[tokio::test]
async fn generated_population_round_trips_through_import_and_grpc() {
    let dir = Dir::new("import-roundtrip");
    let url = PgServer::shared().fresh_database().await;
    let file = generate(dir.path(), "people.ndjson", 3_000, 11);
    let out = run(&url, &["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("full load committed: 3000 rows"),
        "{}",
        stderr(&out)
    );

    let app = spawn_bare(test_settings(&url)).await;
    let people = read_all(&file);
    let expected_as_of = people.iter().map(|p| p.updated_at).max().unwrap();
    let mut seen = [0; 3];
    for person in people.iter().step_by(97) {
        let r = app.verify(verify_request(person)).await.unwrap();
        let expected = match person.status {
            CitizenStatus::Active => (pb::Verdict::Verified, pb::Reason::Unspecified),
            CitizenStatus::Deceased => (pb::Verdict::NotVerified, pb::Reason::Deceased),
            CitizenStatus::Cancelled => (pb::Verdict::NotVerified, pb::Reason::Cancelled),
        };
        assert_eq!((r.verdict(), r.reason()), expected);
        assert_eq!(r.data_as_of.unwrap().seconds, expected_as_of);
        seen[person.status as usize] += 1;
    }
    assert!(seen[0] >= 25, "{seen:?}");

    // The same import again is a no-op.
    let out = run(&url, &["import", file.to_str().unwrap()]);
    assert!(
        out.status.success() && stderr(&out).contains("nothing to do"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_bad_last_row_leaves_the_previous_mirror_intact() {
    let dir = Dir::new("import-atomic");
    let url = PgServer::shared().fresh_database().await;
    let first_file = generate(dir.path(), "first.csv", 500, 1);
    import_ok(&url, &first_file);

    let second = generate(dir.path(), "second.csv", 500, 2);
    let mut text = std::fs::read_to_string(&second).unwrap();
    text.push_str("082090000001,Nguyễn Văn Sai,1990-02-30,male,,,,active,,,2025-01-01T00:00:00Z\n");
    std::fs::write(&second, text).unwrap();
    let out = run(&url, &["import", second.to_str().unwrap()]);
    assert!(!out.status.success());
    let report = stderr(&out);
    assert!(
        report.contains("second.csv:502: date_of_birth: DATE_IMPOSSIBLE"),
        "{report}"
    );
    assert!(report.contains("nothing was changed"), "{report}");
    assert!(
        !report.contains("Nguyễn Văn Sai") && !report.contains("082090000001"),
        "{report}"
    );

    let mirror = mirror(&url).await;
    assert!(exists(&mirror, &first(&first_file).id_number).await);
    assert!(!exists(&mirror, &first(&second).id_number).await);
}

#[tokio::test]
async fn an_import_killed_midway_changes_nothing() {
    let dir = Dir::new("import-kill");
    let url = PgServer::shared().fresh_database().await;
    let small = generate(dir.path(), "small.csv", 200, 3);
    import_ok(&url, &small);
    let big = generate(dir.path(), "big.csv", 300_000, 4);

    let mut child = vnid(Some(&url), &["import", big.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mirror = mirror(&url).await;
    // Wait until the import is streaming rows into its staging table.
    let started = std::time::Instant::now();
    loop {
        let copied: Option<i64> =
            sqlx::query_scalar("SELECT max(tuples_processed) FROM pg_stat_progress_copy")
                .fetch_one(mirror.pool())
                .await
                .unwrap();
        if copied.unwrap_or(0) > 10_000 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended before it could be killed"
        );
        assert!(
            started.elapsed().as_secs() < 120,
            "the import never started copying"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(exists(&mirror, &first(&small).id_number).await);
    assert!(!exists(&mirror, &first(&big).id_number).await);
    let staging: Option<String> = sqlx::query_scalar("SELECT to_regclass('citizen_next')::text")
        .fetch_one(mirror.pool())
        .await
        .unwrap();
    assert_eq!(staging, None, "a staging table was left behind");
    // Nothing is left locked either: the next import runs.
    let again = generate(dir.path(), "again.csv", 100, 5);
    let out = run(&url, &["import", again.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn a_delta_changes_a_name_adds_a_person_and_records_a_death() {
    let dir = Dir::new("import-delta");
    let url = PgServer::shared().fresh_database().await;
    let base = dir.path().join("base.csv");
    write_all(&base, &fixtures());
    import_ok(&url, &base);

    let mut renamed = record(&DAM);
    renamed.full_name = "Nguyễn Văn Đảm".into();
    let mut died = record(&THUY);
    died.status = CitizenStatus::Deceased;
    died.updated_at = DATA_AS_OF + 86_400;
    let mut newborn = record(&LAN_CANCELLED);
    newborn.id_number = PersonalIdNumber::parse("082325000777").unwrap();
    newborn.full_name = "Võ Thị Mai".into();
    newborn.status = CitizenStatus::Active;
    newborn.date_of_birth = vnid::domain::PartialDate::parse_iso("2025-03-01").unwrap();
    let delta = dir.path().join("delta.csv");
    write_all(
        &delta,
        &[
            renamed.clone(),
            died,
            newborn.clone(),
            record(&HOA_DECEASED),
        ],
    );
    let out = run(&url, &["import", "--delta", delta.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("4 rows, 3 added or changed"),
        "{}",
        stderr(&out)
    );

    let app = spawn_bare(test_settings(&url)).await;
    assert_eq!(
        app.verify(verify_request(&renamed))
            .await
            .unwrap()
            .verdict(),
        pb::Verdict::Verified
    );
    let old_name = app.verify(request(DAM.id, DAM.name)).await.unwrap();
    assert_eq!(old_name.reason(), pb::Reason::FieldMismatch);
    assert_eq!(
        app.verify(verify_request(&newborn))
            .await
            .unwrap()
            .verdict(),
        pb::Verdict::Verified
    );
    let r = app.verify(request(THUY.id, THUY.name)).await.unwrap();
    assert_eq!(r.reason(), pb::Reason::Deceased);
    assert_eq!(r.data_as_of.unwrap().seconds, DATA_AS_OF + 86_400);
    let version: i64 =
        sqlx::query_scalar("SELECT record_version FROM citizen WHERE id_number = $1")
            .bind(DAM.id)
            .fetch_one(app.mirror.pool())
            .await
            .unwrap();
    assert_eq!(version, 2);

    let out = run(&url, &["import", "--delta", delta.to_str().unwrap()]);
    assert!(stderr(&out).contains("nothing to do"), "{}", stderr(&out));
}

const BAD_ROWS: &str = "\
id_number,full_name,date_of_birth,gender,old_id_numbers,place_of_origin,permanent_residence,status,household_id,relation_to_head,updated_at
082090012345,Nguyễn Văn Đàm,1990-05-17,male,312345678,\"Mỹ Tho, Tiền Giang\",\"12 \"\"Ấp Bắc\"\", Mỹ Tho\",active,H1,Chủ hộ,2025-01-01T00:00:00Z
12345,Nguyễn Văn A,1990,male,,,,active,,,2025-01-01T00:00:00Z
082090012346,Nguyễn Văn B,1990-02-30,male,,,,active,,,2025-01-01T00:00:00Z
082090012347,Nguyễn Văn C,1990,nam,,,,active,,,2025-01-01T00:00:00Z
082090012348,Nguyễn Văn D,1990,male,12,,,active,,,2025-01-01T00:00:00Z
082090012349,Nguyễn Văn E,1990,male,,,,dead,,,2025-01-01T00:00:00Z
082090012350,Nguyễn Văn F,1990,male,,,,active,,,yesterday
082090012351,Nguyễn Văn G,1990,male
082090012345,Nguyễn Văn Đàm,1990-05-17,male,312345678,,,active,,,2025-01-01T00:00:00Z
082090012352,R2D2,1990,male,,,,active,,,2025-01-01T00:00:00Z
079301000001,Trần Thị Thủy,2001,female,,,,active,,,2025-01-02T00:00:00+07:00
";

#[tokio::test]
async fn every_bad_row_is_reported_with_its_line_field_and_reason() {
    let dir = Dir::new("import-bad");
    let url = PgServer::shared().fresh_database().await;
    let file = dir.path().join("bad.csv");
    std::fs::write(&file, BAD_ROWS).unwrap();

    let out = run(&url, &["import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("bad.csv:3: id_number: ID_NUMBER_FORMAT"),
        "{}",
        stderr(&out)
    );
    let mirror = mirror(&url).await;
    assert!(!exists(&mirror, &PersonalIdNumber::parse(DAM.id).unwrap()).await);

    let rejects = dir.path().join("rejects.csv");
    let out = run(
        &url,
        &[
            "import",
            "--max-errors",
            "20",
            "--reject-file",
            rejects.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    let report = stderr(&out);
    assert!(out.status.success(), "{report}");
    for expected in [
        "bad.csv:3: id_number: ID_NUMBER_FORMAT",
        "bad.csv:4: date_of_birth: DATE_IMPOSSIBLE",
        "bad.csv:5: gender: GENDER_UNKNOWN",
        "bad.csv:6: old_id_numbers: OLD_ID_NUMBER_FORMAT",
        "bad.csv:7: status: STATUS_UNKNOWN",
        "bad.csv:8: updated_at: TIMESTAMP_FORMAT",
        "bad.csv:9: row: FIELD_COUNT",
        "bad.csv:10: id_number: DUPLICATE_ID (repeats the ID number of ",
        "bad.csv:2)",
        "bad.csv:11: full_name: NAME_BAD_CHARACTER",
        "2 rows, 2 added or changed, 9 rejected",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    let rejected = std::fs::read_to_string(&rejects).unwrap();
    assert_eq!(rejected.lines().count(), 1 + 9, "{rejected}");
    assert!(rejected.starts_with("id_number,full_name,"));
    let dam = mirror
        .find(&PersonalIdNumber::parse(DAM.id).unwrap())
        .await
        .unwrap()
        .record
        .unwrap();
    assert_eq!(dam.full_name.canonical(), "nguyễn văn đàm");
    assert!(exists(&mirror, &PersonalIdNumber::parse(THUY.id).unwrap()).await);
}

#[tokio::test]
async fn the_embedded_default_answers_a_first_call() {
    let dir = Dir::new("embedded");
    let mut served = Served::spawn(vnid(
        None,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
    ));
    assert!(served.next_line().starts_with("embedded demo mirror in"));
    let person = served.next_line();
    let field = |name: &str| {
        person
            .split(name)
            .nth(1)
            .unwrap()
            .split("  ")
            .next()
            .unwrap()
            .trim()
            .trim_matches('"')
            .to_owned()
    };
    let (id, name, dob) = (
        field("id_number "),
        field("full_name "),
        field("date_of_birth "),
    );

    let mut client = served.client().await;
    let mut req = request(&id, &name);
    let parts: Vec<u32> = dob.split('-').map(|p| p.parse().unwrap()).collect();
    req.claims.as_mut().unwrap().date_of_birth = date(parts[0], parts[1], parts[2]);
    let r = client.verify(req).await.unwrap().into_inner();
    assert_eq!(r.verdict(), pb::Verdict::Verified);
    assert!(!r.attestation.is_empty());

    assert!(
        served.stop("-TERM").await.success(),
        "vnid serve did not stop cleanly on SIGTERM"
    );
    assert!(dir.path().join("mirror.sqlite3").exists());
    // The check is in the embedded audit trail, which verifies.
    let out = vnid(
        None,
        &[
            "audit",
            "verify",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("audit trail verified: 1 rows"), "{said}");
}

#[tokio::test]
async fn an_empty_full_load_is_refused() {
    let dir = Dir::new("import-empty");
    let url = PgServer::shared().fresh_database().await;
    let base = dir.path().join("base.csv");
    write_all(&base, &fixtures());
    import_ok(&url, &base);
    let empty = dir.path().join("empty.csv");
    write_all(&empty, &[]);
    let out = run(&url, &["import", empty.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("would empty the mirror"),
        "{}",
        stderr(&out)
    );
    assert!(
        exists(
            &mirror(&url).await,
            &PersonalIdNumber::parse(DAM.id).unwrap()
        )
        .await
    );
}

#[tokio::test]
async fn importing_into_the_embedded_mirror_adds_no_demo_people() {
    let dir = Dir::new("import-embedded");
    let file = dir.path().join("people.csv");
    write_all(&file, &fixtures());
    let data = dir.path().join("data");
    let out = vnid(
        None,
        &[
            "import",
            "--delta",
            "--data-dir",
            data.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mirror = vnid::mirror::SqliteMirror::open(&data.join("mirror.sqlite3"))
        .await
        .unwrap();
    assert_eq!(mirror.count().await.unwrap(), fixtures().len() as i64);
}
