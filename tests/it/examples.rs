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
