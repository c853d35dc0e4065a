//! The demo pipeline, run by the real binary on the shipped data; its marts compared with
//! values computed here from the raw files, independently of weir and DataFusion's SQL.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::{Array, BooleanArray, Int64Array, StringArray};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::common::*;

struct Order {
    customer_id: i64,
    product_id: i64,
    quantity: i64,
    /// amount in cents, rounded half away from zero like CAST(... AS DECIMAL(12,2))
    amount_cents: i128,
    date: String,
    ordered_at: String,
}

fn demo_project() -> Project {
    let p = Project::new();
    p.copy_from_repo("pipelines", "pipelines");
    p.copy_from_repo("examples/shop/data", "examples/shop/data");
    p
}

fn cents(s: &str) -> i128 {
    let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<2}");
    whole.parse::<i128>().unwrap() * 100 + frac[..2].parse::<i128>().unwrap()
}

fn fmt_cents(c: i128) -> String {
    format!("{}.{:02}", c / 100, (c % 100).abs())
}

/// Orders as `orders_clean` defines them: status trimmed and lowercased, cancelled removed.
fn expected_orders() -> Vec<Order> {
    let mut out = Vec::new();
    let mut files: Vec<_> =
        std::fs::read_dir(repo().join("examples/shop/data/orders")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        let mut r = csv::Reader::from_path(f).unwrap();
        for rec in r.records() {
            let rec = rec.unwrap();
            let status = rec[6].trim().to_lowercase();
            if status == "cancelled" {
                continue;
            }
            let quantity: i64 = rec[3].parse().unwrap();
            let price = cents(&rec[4]);
            let discount_pct = if rec[5].is_empty() { 0 } else { cents(&rec[5]) }; // 0.15 -> 15
            // quantity * price * (1 - discount), in units of 1/10000 of a currency unit
            let raw = quantity as i128 * price * (100 - discount_pct);
            // to cents: divide by 100, round half away from zero
            let amount_cents = (raw + 50) / 100;
            out.push(Order {
                customer_id: rec[1].parse().unwrap(),
                product_id: rec[2].parse().unwrap(),
                quantity,
                amount_cents,
                date: rec[7][..10].to_string(),
                ordered_at: rec[7].to_string(),
            });
        }
    }
    out
}

fn customers() -> HashMap<i64, (String, String)> {
    let text = std::fs::read_to_string(repo().join("examples/shop/data/customers.ndjson")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["customer_id"].as_i64().unwrap(),
                (v["segment"].as_str().unwrap().to_string(), v["region"].as_str().unwrap().to_string()),
            )
        })
        .collect()
}

/// product_id → (category, sku, name, active)
fn products() -> HashMap<i64, (String, String, String, bool)> {
    let file = std::fs::File::open(repo().join("examples/shop/data/products.parquet")).unwrap();
    let mut out = HashMap::new();
    for b in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
        let b = b.unwrap();
        let col = |n: &str| b.column(b.schema().index_of(n).unwrap()).clone();
        let id = col("product_id");
        let id = id.as_any().downcast_ref::<Int64Array>().unwrap();
        let cat = col("category");
        let cat = cat.as_any().downcast_ref::<StringArray>().unwrap();
        let sku = col("sku");
        let sku = sku.as_any().downcast_ref::<StringArray>().unwrap();
        let name = col("name");
        let name = name.as_any().downcast_ref::<StringArray>().unwrap();
        let active = col("active");
        let active = active.as_any().downcast_ref::<BooleanArray>().unwrap();
        for r in 0..b.num_rows() {
            out.insert(
                id.value(r),
                (cat.value(r).to_string(), sku.value(r).to_string(), name.value(r).to_string(), active.value(r)),
            );
        }
    }
    out
}

#[test]
fn demo_marts_match_an_independent_computation() {
    let p = demo_project();
    let r = p.weir(&["run"]);
    r.ok();
    assert!(r.stdout.contains("succeeded"), "{}", r.stdout);

    let orders = expected_orders();
    let customers = customers();
    let products = products();
    // orders_enriched is an inner join: orders whose customer and product exist
    let enriched: Vec<&Order> = orders
        .iter()
        .filter(|o| customers.contains_key(&o.customer_id) && products.contains_key(&o.product_id))
        .collect();
    assert!(enriched.len() > 5000, "the demo has a few thousand orders");

    // daily_revenue: by (date, region): orders, units, revenue
    let mut daily: BTreeMap<(String, String), (i64, i64, i128)> = BTreeMap::new();
    for o in &enriched {
        let region = customers[&o.customer_id].1.clone();
        let e = daily.entry((o.date.clone(), region)).or_default();
        e.0 += 1;
        e.1 += o.quantity;
        e.2 += o.amount_cents;
    }
    let rows = read_rows(&p.join("lake/marts/daily_revenue"));
    assert_eq!(rows.len(), daily.len());
    for row in &rows {
        let key = (row["order_date"].clone(), row["region"].clone());
        let (n, units, revenue) = daily.get(&key).unwrap_or_else(|| panic!("unexpected group {key:?}"));
        assert_eq!(row["orders"], n.to_string(), "{key:?}");
        assert_eq!(row["units"], units.to_string(), "{key:?}");
        assert_eq!(row["revenue"], fmt_cents(*revenue), "{key:?}");
    }
    // partitioned by region: one directory per region, the column not repeated in the files
    let regions: std::collections::BTreeSet<&String> = customers.values().map(|c| &c.1).collect();
    for region in regions {
        assert!(p.join(&format!("lake/marts/daily_revenue/region={region}")).is_dir());
    }
    assert!(!parquet_schema(&p.join("lake/marts/daily_revenue")).iter().any(|(n, _)| n == "region"));

    // customer_value: per customer orders, spend, first/last order, rank by spend in segment
    let mut per_customer: HashMap<i64, (i64, i128, String, String)> = HashMap::new();
    for o in &enriched {
        let e = per_customer.entry(o.customer_id).or_insert((0, 0, o.ordered_at.clone(), o.ordered_at.clone()));
        e.0 += 1;
        e.1 += o.amount_cents;
        if o.ordered_at < e.2 {
            e.2 = o.ordered_at.clone();
        }
        if o.ordered_at > e.3 {
            e.3 = o.ordered_at.clone();
        }
    }
    let mut ranks: HashMap<i64, u64> = HashMap::new();
    let mut by_segment: HashMap<&str, Vec<(i128, i64)>> = HashMap::new();
    for (id, v) in &per_customer {
        by_segment.entry(customers[id].0.as_str()).or_default().push((v.1, *id));
    }
    for list in by_segment.values_mut() {
        list.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut rank = 0;
        for (k, (spend, id)) in list.iter().enumerate() {
            if k == 0 || list[k - 1].0 != *spend {
                rank = k as u64 + 1;
            }
            ranks.insert(*id, rank);
        }
    }
    let rows = read_rows(&p.join("lake/marts/customer_value"));
    assert_eq!(rows.len(), per_customer.len());
    for row in &rows {
        let id: i64 = row["customer_id"].parse().unwrap();
        let (n, spend, first, last) = &per_customer[&id];
        assert_eq!(row["orders"], n.to_string());
        assert_eq!(row["spend"], fmt_cents(*spend));
        assert_eq!(row["first_order_at"].replace('T', " "), *first);
        assert_eq!(row["last_order_at"].replace('T', " "), *last);
        assert_eq!(row["rank_in_segment"], ranks[&id].to_string(), "customer {id}");
        assert_eq!(row["segment"], customers[&id].0);
    }

    // product_sales: every active product, with its units and revenue (0 when unsold)
    let rows = read_rows(&p.join("lake/marts/product_sales"));
    let active: Vec<i64> = products.iter().filter(|(_, v)| v.3).map(|(k, _)| *k).collect();
    assert_eq!(rows.len(), active.len());
    for row in &rows {
        let id: i64 = row["product_id"].parse().unwrap();
        let sold: Vec<&&Order> = enriched.iter().filter(|o| o.product_id == id).collect();
        assert_eq!(row["units"], sold.iter().map(|o| o.quantity).sum::<i64>().to_string());
        assert_eq!(row["revenue"], fmt_cents(sold.iter().map(|o| o.amount_cents).sum()));
        assert_eq!(row["category"], products[&id].0);
    }
}

#[test]
fn demo_runs_again_and_replaces_its_output() {
    let p = demo_project();
    p.weir(&["run"]).ok();
    let first = read_rows(&p.join("lake/marts/customer_value"));
    let files_first = parquet_files(&p.join("lake/marts/customer_value"));
    p.weir(&["run"]).ok();
    let second = read_rows(&p.join("lake/marts/customer_value"));
    let files_second = parquet_files(&p.join("lake/marts/customer_value"));
    assert_eq!(first.len(), second.len(), "an overwrite must not add to the previous output");
    assert_ne!(files_first, files_second, "the second run wrote new files");
    // nothing left beside the outputs: no staging or old versions
    let leftovers: Vec<_> = std::fs::read_dir(p.join("lake/marts")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 3, "{leftovers:?}");
    // and the run is in the history
    let runs = p.weir(&["runs", "--dir", "pipelines", "--json"]);
    runs.ok();
    let v: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(v.as_array().unwrap().iter().all(|r| r["status"] == "succeeded" && r["pipeline"] == "daily_orders"));
}

/// The demo's own tests pass (`weir test pipelines/`), and a run is not affected by them.
#[test]
fn demo_tests_pass() {
    let p = demo_project();
    let r = p.weir(&["test", "pipelines"]);
    r.ok();
    assert!(r.stdout.contains("2 tests, 0 failed"), "{}", r.stdout);
    assert!(!p.join("lake").exists(), "a test writes nothing");
}
