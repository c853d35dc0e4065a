//! Every project in `examples/` runs, and its output holds what its input says it should.

use std::collections::BTreeMap;
use std::io::Read;

use crate::common::*;

fn run_example(name: &str, extra: &[&str]) -> Project {
    let p = Project::new();
    p.copy_from_repo(&format!("examples/{name}"), name);
    let out = p.join(&format!("{name}/out"));
    if out.exists() {
        std::fs::remove_dir_all(&out).unwrap();
    }
    let pipeline = format!("{name}/pipeline.yaml");
    let mut args = vec!["run", pipeline.as_str()];
    args.extend_from_slice(extra);
    p.weir(&args).ok();
    p
}

#[test]
fn csv_basics() {
    let p = run_example("csv-basics", &[]);
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(repo().join("examples/csv-basics/data/sales.csv.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    // Independently: rows whose quantity is not NA, and their revenue in cents.
    let mut expected: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for line in text.lines().skip(1) {
        // the note may be a quoted field containing the delimiter
        let fields: Vec<&str> = line.splitn(7, ';').collect();
        if fields[4] == "NA" {
            continue;
        }
        let qty: i64 = fields[4].parse().unwrap();
        let price: i64 = fields[5].replace('.', "").parse().unwrap();
        let note = fields[6].trim_matches('"');
        let note = if note == "NA" { "NULL".to_string() } else { note.to_string() };
        expected.insert(fields[0].to_string(), (note, qty * price));
    }
    let rows = read_rows(&p.join("csv-basics/out/sales"));
    assert_eq!(rows.len(), expected.len());
    assert_eq!(rows.len(), 189);
    for r in rows {
        let (note, cents) = &expected[&r["sale_id"]];
        assert_eq!(&r["note"], note, "sale {}", r["sale_id"]);
        assert_eq!(r["revenue"], format!("{}.{:02}", cents / 100, cents % 100));
        assert_eq!(r["country"], r["country"].to_uppercase());
    }
    let schema = parquet_schema(&p.join("csv-basics/out/sales"));
    let ty = |c: &str| schema.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone()).unwrap();
    assert_eq!(ty("sold_on"), "Date32");
    assert_eq!(ty("quantity"), "Int32");
    assert_eq!(ty("price"), "Decimal128(8, 2)");
}

#[test]
fn star_schema() {
    let p = run_example("star-schema", &[]);
    let mut units = 0i64;
    let mut sales = 0usize;
    for f in ["sales-2026-09.csv", "sales-2026-10.csv"] {
        let mut r = csv::Reader::from_path(repo().join("examples/star-schema/data/sales").join(f)).unwrap();
        for rec in r.records() {
            units += rec.unwrap()[4].parse::<i64>().unwrap();
            sales += 1;
        }
    }
    let by_category = read_rows(&p.join("star-schema/out/by_category"));
    assert_eq!(by_category.len(), 4);
    assert_eq!(by_category.iter().map(|r| r["units"].parse::<i64>().unwrap()).sum::<i64>(), units);
    let by_store = read_rows(&p.join("star-schema/out/by_store"));
    assert_eq!(by_store.len(), 5);
    assert_eq!(by_store.iter().map(|r| r["sales"].parse::<usize>().unwrap()).sum::<usize>(), sales);
    let by_month = read_rows(&p.join("star-schema/out/by_month"));
    assert_eq!(by_month.len(), 2 * 3, "two months, three countries");
}

#[test]
fn partitioned() {
    let p = run_example("partitioned", &["--var", "min_value=100"]);
    let events = read_rows(&p.join("partitioned/out/events"));
    assert_eq!(events.len(), 900);
    for day in ["2026-11-01", "2026-11-02", "2026-11-03"] {
        for t in ["page_view", "add_to_cart", "checkout"] {
            let dir = p.join(&format!("partitioned/out/events/event_date={day}/type={t}"));
            assert!(dir.is_dir(), "{} missing", dir.display());
            for f in parquet_files(&dir) {
                let schema = parquet_schema(f.parent().unwrap());
                assert!(
                    !schema.iter().any(|(n, _)| n == "event_date" || n == "type"),
                    "partition columns stay in directory names"
                );
            }
        }
    }
    for r in &events {
        assert!(r["event_id"].starts_with(&r["event_date"].replace('-', "")));
    }
    // --var min_value=100 overrides the file's 50
    let valuable = read_rows(&p.join("partitioned/out/valuable"));
    assert!(!valuable.is_empty());
    assert!(valuable.iter().all(|r| r["value"].parse::<f64>().unwrap() >= 100.0));
}

/// The change feed arrives one day at a time; after each run the customers table is the
/// replay of every change so far (computed here independently), and a run with no new file
/// reads nothing.
#[test]
fn incremental_cdc() {
    let p = Project::new();
    p.copy_from_repo("examples/incremental-cdc", "cdc");
    let _ = std::fs::remove_dir_all(p.join("cdc/out"));
    let days = ["2026-11-01.csv", "2026-11-02.csv", "2026-11-03.csv"];
    let held = p.join("held");
    std::fs::create_dir_all(&held).unwrap();
    for d in &days[1..] {
        std::fs::rename(p.join("cdc/data/changes").join(d), held.join(d)).unwrap();
    }
    // customer_id → (email, tier) after replaying `n` days of changes in time order
    let replay = |n: usize| {
        let mut changes = Vec::new();
        for d in &days[..n] {
            let mut r = csv::Reader::from_path(repo().join("examples/incremental-cdc/data/changes").join(d)).unwrap();
            for rec in r.records() {
                let rec = rec.unwrap();
                changes.push((
                    rec[5].to_string(),
                    rec[0].to_string(),
                    rec[1].to_string(),
                    rec[3].to_lowercase(),
                    rec[4].to_string(),
                ));
            }
        }
        changes.sort();
        let mut state: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (_, op, id, email, tier) in changes {
            if op == "D" {
                state.remove(&id);
            } else {
                state.insert(id, (email, tier));
            }
        }
        state
    };
    for n in 1..=days.len() {
        if n > 1 {
            std::fs::rename(held.join(days[n - 1]), p.join("cdc/data/changes").join(days[n - 1])).unwrap();
        }
        p.weir(&["run", "cdc/pipeline.yaml"]).ok();
        let got: BTreeMap<String, (String, String)> = read_rows(&p.join("cdc/out/customers"))
            .into_iter()
            .map(|r| (r["customer_id"].clone(), (r["email"].clone(), r["tier"].clone())))
            .collect();
        assert_eq!(got, replay(n), "after day {n}");
        let delta: BTreeMap<String, (String, String)> = read_delta_rows(&p.join("cdc/out/customers_delta"))
            .into_iter()
            .map(|r| (r["customer_id"].clone(), (r["email"].clone(), r["tier"].clone())))
            .collect();
        assert_eq!(delta, replay(n), "Delta table after day {n}");
        let per_day = read_rows(&p.join("cdc/out/daily_changes"));
        let days_seen: std::collections::BTreeSet<_> = per_day.iter().map(|r| r["change_date"].clone()).collect();
        assert_eq!(days_seen.len(), n, "one partition per day so far: {days_seen:?}");
    }
    let r = p.weir(&["run", "cdc/pipeline.yaml"]);
    r.ok();
    assert!(r.stdout.lines().filter(|l| l.contains("up to date")).count() >= 5, "{}", r.stdout);
}

#[test]
fn quality_gates() {
    let p = Project::new();
    p.copy_from_repo("examples/quality-gates", "quality-gates");
    let r = p.weir(&["run", "quality-gates/pipeline.yaml", "--json"]);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let run_id = report["run_id"].as_str().unwrap();
    // Independently: the rows the file says are good (a known account, a listed currency, a
    // positive amount, a payment id that occurs once) and those it says are not.
    let accounts: Vec<String> = csv::Reader::from_path(repo().join("examples/quality-gates/data/accounts.csv"))
        .unwrap()
        .records()
        .map(|r| r.unwrap()[0].to_string())
        .collect();
    let mut rows: Vec<Vec<String>> = csv::Reader::from_path(repo().join("examples/quality-gates/data/payments.csv"))
        .unwrap()
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    let count = |id: &str, rows: &[Vec<String>]| rows.iter().filter(|r| r[0] == id).count();
    let snapshot = rows.clone();
    let good = |r: &Vec<String>| {
        accounts.contains(&r[1])
            && ["EUR", "GBP", "USD"].contains(&r[2].as_str())
            && r[3].parse::<f64>().unwrap() > 0.0
            && count(&r[0], &snapshot) == 1
    };
    let total = rows.len();
    rows.retain(good);
    let mut want: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    want.sort();
    let loaded = read_rows(&p.join("quality-gates/out/payments"));
    let mut got: Vec<String> = loaded.iter().map(|r| r["payment_id"].clone()).collect();
    got.sort();
    assert_eq!(got, want);
    let q = p.join(&format!("quality-gates/out/_quarantine/quality_gates/payments/{run_id}.parquet"));
    let qdir = p.join("q");
    std::fs::create_dir_all(&qdir).unwrap();
    std::fs::copy(q, qdir.join("q.parquet")).unwrap();
    let quarantined = read_rows(&qdir);
    assert_eq!(quarantined.len() + loaded.len(), total, "rows in = passed + quarantined");
    assert!(quarantined.iter().all(|r| !r["_check"].is_empty() && !r["_reason"].is_empty()));
    // The totals were checked and written.
    let totals = read_rows(&p.join("quality-gates/out/daily_totals"));
    assert_eq!(totals.len(), 2, "EUR and GBP on one day");
}
