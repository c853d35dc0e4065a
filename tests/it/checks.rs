//! Checks as gates: an error check blocks everything downstream (the load's target stays as
//! it was), a warning does not; thresholds on both sides; quarantine with exact row
//! accounting; results in the run report and the state store.

use std::collections::BTreeMap;

use crate::common::*;

const CLEAN: &str = "order_id,customer_id,status,amount,updated_at\n\
1,10,paid,10.50,2026-01-31T10:00:00\n\
2,11,new,5.00,2026-01-31T11:00:00\n\
3,12,shipped,7.25,2026-01-31T12:00:00\n\
4,10,paid,3.00,2026-01-31T13:00:00\n";

/// Four bad rows out of eight: a NULL customer, an unknown status, a negative amount and a
/// customer that does not exist; order 1 appears twice (rows 1 and 8).
const DIRTY: &str = "order_id,customer_id,status,amount,updated_at\n\
1,10,paid,10.50,2026-01-31T10:00:00\n\
2,,new,5.00,2026-01-31T11:00:00\n\
3,12,lost,7.25,2026-01-31T12:00:00\n\
4,10,paid,-3.00,2026-01-31T13:00:00\n\
5,99,paid,1.00,2026-01-31T13:30:00\n\
6,11,new,2.00,2026-01-31T14:00:00\n\
7,12,shipped,4.00,2026-01-31T15:00:00\n\
1,11,paid,9.00,2026-01-31T16:00:00\n";

const CUSTOMERS: &str = "customer_id,segment\n10,a\n11,b\n12,c\n";

fn project(orders: &str) -> Project {
    let p = Project::new();
    p.write("data/orders.csv", orders);
    p.write("data/customers.csv", CUSTOMERS);
    p
}

/// A pipeline: orders (with `checks`) → mart, customers for relationships.
fn pipeline(checks: &str, extra: &str) -> String {
    format!(
        "stores:\n  raw: {{ url: \"file://data\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  customers:\n    extract: {{ store: raw, path: customers.csv }}\n  orders:\n    extract: {{ store: raw, path: orders.csv, schema: {{ amount: \"decimal(10,2)\" }} }}\n    checks:\n{checks}{extra}  mart:\n    load: {{ from: orders, store: lake, path: mart/ }}\n"
    )
}

const ALL_CHECKS: &str = "      - not_null: [order_id, customer_id]
      - unique: order_id
      - accepted_values: { column: status, values: [new, paid, shipped] }
      - expression: amount >= 0
      - relationships: { column: customer_id, to: customers, field: customer_id }
      - row_count: { min: 1, max: 100 }
      - freshness: { column: updated_at, max_age: 2d }
      - schema: { order_id: bigint, amount: \"decimal(10,2)\" }
      - sql: SELECT * FROM orders WHERE amount > 1000
";

fn report(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// The task report of `task`.
fn task<'a>(rep: &'a serde_json::Value, task: &str) -> &'a serde_json::Value {
    rep["tasks"].as_array().unwrap().iter().find(|t| t["name"] == task).unwrap_or_else(|| panic!("no task {task}"))
}

/// Check name → (status, failing).
fn results(rep: &serde_json::Value, t: &str) -> BTreeMap<String, (String, u64)> {
    task(rep, t)["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap().to_string(),
                        (c["status"].as_str().unwrap().to_string(), c["failing"].as_u64().unwrap()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ids(rows: &[BTreeMap<String, String>]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|r| r["order_id"].clone()).collect();
    v.sort();
    v
}

#[test]
fn every_kind_passes_on_clean_data_and_an_error_check_blocks_the_load() {
    let p = project(CLEAN);
    p.write("p.yaml", pipeline(ALL_CHECKS, ""));
    // `weir plan` lists them.
    let plan = p.weir(&["plan", "p.yaml"]);
    plan.ok();
    assert!(plan.stdout.contains("     checks   not_null_order_id_customer_id, unique_order_id,"), "{}", plan.stdout);
    let r = p.weir(&["run", "p.yaml", "--json", "--run-date", "2026-01-31"]);
    r.ok();
    let rep = report(&r);
    let res = results(&rep, "orders");
    assert_eq!(res.len(), 9, "{res:?}");
    assert!(res.values().all(|(s, f)| s == "passed" && *f == 0), "{res:?}");
    let before = read_rows(&p.join("lake/mart"));
    assert_eq!(ids(&before), ["1", "2", "3", "4"]);
    let files_before = parquet_files(&p.join("lake/mart"));

    // The same pipeline over bad rows: each check counts exactly its failures.
    p.write("data/orders.csv", DIRTY);
    let r = p.weir(&["run", "p.yaml", "--json", "--run-date", "2026-01-31"]);
    r.code(1);
    let rep = report(&r);
    let res = results(&rep, "orders");
    let want: BTreeMap<String, (String, u64)> = [
        ("not_null_order_id_customer_id", ("failed", 1)),
        ("unique_order_id", ("failed", 2)),
        ("accepted_values_status", ("failed", 1)),
        ("expression", ("failed", 1)),
        ("relationships_customer_id_customers", ("failed", 1)),
        ("row_count", ("passed", 0)),
        ("freshness_updated_at", ("passed", 0)),
        ("schema", ("passed", 0)),
        ("sql", ("passed", 0)),
    ]
    .into_iter()
    .map(|(k, (s, n))| (k.to_string(), (s.to_string(), n)))
    .collect();
    assert_eq!(res, want);
    assert_eq!(task(&rep, "orders")["status"], "failed");
    assert_eq!(task(&rep, "mart")["status"], "skipped");
    // Samples are the failing rows, in column order.
    let nn = &task(&rep, "orders")["checks"][0];
    assert_eq!(nn["samples"].as_array().unwrap().len(), 1);
    assert_eq!(nn["samples"][0]["order_id"], 2);
    assert!(nn["samples"][0]["customer_id"].is_null());
    let dup = &task(&rep, "orders")["checks"][1];
    assert_eq!(dup["samples"][0]["order_id"], 1);
    assert_eq!(dup["samples"][0]["rows"], 2);
    // The gate held: the target is exactly as before.
    assert_eq!(parquet_files(&p.join("lake/mart")), files_before);
    assert_eq!(read_rows(&p.join("lake/mart")), before);

    // Without --json, the failing checks are printed with their samples.
    let r = p.weir(&["run", "p.yaml", "--run-date", "2026-01-31"]);
    r.code(1);
    let out = normalize(&r.stdout, p.path());
    assert!(out.contains("FAILED: orders.accepted_values_status (accepted_values): 1 of 8 rows (12.5%): `status` not in the accepted values"), "{out}");
    assert!(
        out.contains(
            r#"{"order_id":3,"customer_id":12,"status":"lost","amount":7.25,"updated_at":"2026-01-31T12:00:00"}"#
        ),
        "{out}"
    );
    assert!(out.contains("task `orders` failed: 5 checks failed:"), "{out}");
}

#[test]
fn results_are_kept_in_the_state_store() {
    let p = project(DIRTY);
    p.write("p.yaml", pipeline("      - expression: amount >= 0\n        name: non_negative\n      - not_null: customer_id\n        severity: warn\n", ""));
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.code(1);
    let run_id = report(&r)["run_id"].as_str().unwrap().to_string();
    let r = p.weir(&["runs", "--run", &run_id, "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let orders = v.as_array().unwrap().iter().find(|t| t["task"] == "orders").unwrap();
    let checks = orders["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["name"], "non_negative");
    assert_eq!(checks[0]["status"], "failed");
    assert_eq!(checks[0]["failing"], 1);
    assert_eq!(checks[0]["checked"], 8);
    assert_eq!(checks[0]["samples"][0]["amount"], -3.0);
    assert_eq!(checks[1]["status"], "warned");
    assert_eq!(checks[1]["severity"], "warn");
    let text = p.weir(&["runs", "--run", &run_id]);
    assert!(text.stdout.contains("non_negative"), "{}", text.stdout);
    // The task table has a header and shows rows, bytes and times, as the reference says.
    let head = text.stdout.lines().next().unwrap_or_default();
    for column in ["task", "kind", "status", "attempts", "rows in", "rows out", "read", "written", "started", "time"] {
        assert!(head.contains(column), "{column} in {head}");
    }
    let orders = text.stdout.lines().find(|l| l.trim_start().starts_with("orders ")).unwrap();
    assert!(regex::Regex::new(r"\d+ B .* \d\d:\d\d:\d\d +\d+ ms").unwrap().is_match(orders), "{orders}");
    assert!(text.stdout.contains("task `orders` failed:"), "{}", text.stdout);
}

#[test]
fn a_warning_does_not_block() {
    let p = project(DIRTY);
    p.write(
        "p.yaml",
        pipeline(
            "      - accepted_values: { column: status, values: [new, paid, shipped] }\n        severity: warn\n",
            "",
        ),
    );
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.ok();
    let rep = report(&r);
    assert_eq!(results(&rep, "orders")["accepted_values_status"], ("warned".to_string(), 1));
    assert_eq!(task(&rep, "mart")["status"], "succeeded");
    assert_eq!(read_rows(&p.join("lake/mart")).len(), 8);
}

#[test]
fn thresholds_on_both_sides() {
    // DIRTY has 1 of 8 rows (12.5%) with a status outside the list.
    let p = project(DIRTY);
    let check = |threshold: &str| {
        pipeline(
            &format!(
                "      - accepted_values: {{ column: status, values: [new, paid, shipped] }}\n        {threshold}\n"
            ),
            "",
        )
    };
    // (threshold, status, exit code)
    let cases = [
        ("error_if: \"> 1\"", "warned", 0),
        ("error_if: \">= 1\"", "failed", 1),
        ("error_if: \"> 12%\"", "failed", 1),
        ("error_if: \"> 13%\"", "warned", 0),
        ("error_if: \"!= 1\"", "warned", 0),
        ("error_if: \"= 1\"", "failed", 1),
        ("error_if: \"> 5\"\n        warn_if: \"> 1\"", "passed", 0),
        ("error_if: \"> 5\"\n        warn_if: \">= 1\"", "warned", 0),
        ("severity: warn\n        warn_if: \"> 20%\"", "passed", 0),
        ("severity: warn\n        warn_if: \"> 10%\"", "warned", 0),
    ];
    for (threshold, status, code) in cases {
        p.write("p.yaml", check(threshold));
        let r = p.weir(&["run", "p.yaml", "--json"]);
        r.code(code);
        assert_eq!(results(&report(&r), "orders")["accepted_values_status"].0, status, "{threshold}");
    }
}

#[test]
fn table_level_checks_fail_on_the_right_side() {
    let p = project(CLEAN);
    // (check, passes with four rows dated 2026-01-31 10:00–13:00)
    let cases = [
        ("row_count: { min: 4 }", true),
        ("row_count: { min: 5 }", false),
        ("row_count: { max: 4 }", true),
        ("row_count: { min: 1, max: 3 }", false),
        ("schema: { status: varchar, amount: \"decimal(10,2)\" }", true),
        ("schema: { amount: double }", false),
        ("schema: { discount: double }", false),
        ("sql: SELECT * FROM orders o JOIN customers c USING (customer_id) WHERE c.segment = 'z'", true),
        ("sql: SELECT * FROM orders WHERE amount > 10", false),
    ];
    for (check, passes) in cases {
        p.write("p.yaml", pipeline(&format!("      - {check}\n"), ""));
        let r = p.weir(&["run", "p.yaml", "--json"]);
        r.code(if passes { 0 } else { 1 });
        let rep = report(&r);
        let res = results(&rep, "orders");
        let (status, _) = res.values().next().unwrap();
        assert_eq!(status, if passes { "passed" } else { "failed" }, "{check}: {res:?}");
    }
    // A missing column is named.
    p.write("p.yaml", pipeline("      - schema: { discount: double, amount: bigint }\n", ""));
    let r = p.weir(&["run", "p.yaml", "--json"]);
    let msg = task(&report(&r), "orders")["checks"][0]["message"].as_str().unwrap().to_string();
    assert_eq!(msg, "`discount` is missing; `amount` is decimal(10,2), expected bigint");
}

#[test]
fn freshness_is_measured_from_the_logical_time() {
    let p = project(CLEAN);
    // The newest row is 2026-01-31 13:00. A run of 2026-01-31 sees the end of that day.
    p.write("p.yaml", pipeline("      - freshness: { column: updated_at, max_age: 11h }\n", ""));
    p.weir(&["run", "p.yaml", "--run-date", "2026-01-31"]).ok();
    p.write("p.yaml", pipeline("      - freshness: { column: updated_at, max_age: 10h }\n", ""));
    let r = p.weir(&["run", "p.yaml", "--run-date", "2026-01-31", "--json"]);
    r.code(1);
    let rep = report(&r);
    let c = &task(&rep, "orders")["checks"][0];
    assert_eq!(c["status"], "failed");
    assert_eq!(
        c["message"],
        "newest `updated_at` is 2026-01-31 13:00:00 UTC (11h old at 2026-02-01 00:00:00 UTC); allowed: 10h"
    );
    // With severity warn, staleness is reported and the load goes on.
    p.write("p.yaml", pipeline("      - freshness: { column: updated_at, max_age: 1d }\n        severity: warn\n", ""));
    let r = p.weir(&["run", "p.yaml", "--run-date", "2026-02-03", "--json"]);
    r.ok();
    assert_eq!(task(&report(&r), "orders")["checks"][0]["status"], "warned");
}

#[test]
fn quarantine_sets_failing_rows_aside_with_exact_accounting() {
    let p = project(DIRTY);
    let checks = "      - not_null: customer_id\n      - unique: order_id\n      - accepted_values: { column: status, values: [new, paid, shipped] }\n      - expression: amount >= 0\n      - relationships: { column: customer_id, to: customers, field: customer_id }\n      - row_count: { min: 1 }\n";
    p.write("p.yaml", pipeline(checks, "    on_check_failure: quarantine\n"));
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.ok();
    let rep = report(&r);
    let run_id = rep["run_id"].as_str().unwrap().to_string();
    let orders = task(&rep, "orders");
    // rows 2 (NULL customer), 3 (lost), 4 (negative), 5 (customer 99), 1 and 1' (duplicate)
    assert_eq!(orders["quarantined"], 6);
    assert_eq!(orders["rows_out"], 2);
    let res = results(&rep, "orders");
    assert_eq!(res["unique_order_id"], ("quarantined".to_string(), 2));
    assert_eq!(res["row_count"], ("passed".to_string(), 0));
    // The load got exactly the passing rows.
    assert_eq!(ids(&read_rows(&p.join("lake/mart"))), ["6", "7"]);
    // ... and counts them as its input: 2 rows in, not the 8 before quarantine.
    assert_eq!(task(&rep, "mart")["rows_in"], 2, "{}", task(&rep, "mart"));
    // The quarantine file holds the others, once each, with why.
    let q = p.join(&format!("lake/_quarantine/p/orders/{run_id}.parquet"));
    assert!(q.exists(), "{}", q.display());
    let qdir = p.join("qread");
    std::fs::create_dir_all(&qdir).unwrap();
    std::fs::copy(&q, qdir.join("q.parquet")).unwrap();
    let rows = read_rows(&qdir);
    assert_eq!(ids(&rows), ["1", "1", "2", "3", "4", "5"]);
    let by: BTreeMap<String, &BTreeMap<String, String>> =
        rows.iter().map(|r| (format!("{}-{}", r["order_id"], r["customer_id"]), r)).collect();
    assert_eq!(by["2-NULL"]["_check"], "not_null_customer_id");
    assert_eq!(by["2-NULL"]["_reason"], "customer_id is NULL");
    assert_eq!(by["3-12"]["_check"], "accepted_values_status");
    assert_eq!(by["3-12"]["_reason"], "status = 'lost' is not an accepted value");
    assert_eq!(by["4-10"]["_reason"], "fails `amount >= 0`");
    assert_eq!(by["5-99"]["_check"], "relationships_customer_id_customers");
    assert_eq!(by["5-99"]["_reason"], "customer_id = '99' is not in customers.customer_id");
    assert_eq!(by["1-10"]["_check"], "unique_order_id");
    assert!(rows.iter().all(|r| r["_run_id"] == run_id));
    // rows in = passed + quarantined
    assert_eq!(orders["rows_out"].as_u64().unwrap() + orders["quarantined"].as_u64().unwrap(), 8);

    // An explicit `error_if` still fails the task when too many rows are bad; nothing loads.
    let before = read_rows(&p.join("lake/mart"));
    p.write(
        "p.yaml",
        pipeline(
            "      - accepted_values: { column: status, values: [new, paid] }\n        error_if: \"> 10%\"\n",
            "    on_check_failure: quarantine\n    quarantine: { store: raw, path: rejected }\n",
        ),
    );
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.code(1);
    let rep = report(&r);
    let run_id = rep["run_id"].as_str().unwrap().to_string();
    assert_eq!(results(&rep, "orders")["accepted_values_status"], ("failed".to_string(), 2));
    assert_eq!(read_rows(&p.join("lake/mart")), before);
    // The configured location is used.
    assert!(p.join(&format!("data/rejected/p/orders/{run_id}.parquet")).exists());
}

#[test]
fn checks_on_a_transform_gate_its_consumers() {
    let p = project(DIRTY);
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://data\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  orders:\n    extract: { store: raw, path: orders.csv }\n  paid:\n    transform: { sql: \"SELECT * FROM orders WHERE status = 'paid'\" }\n    checks:\n      - expression: amount >= 0\n  mart:\n    load: { from: paid, store: lake, path: mart/ }\n  other:\n    load: { from: orders, store: lake, path: other/ }\n",
    );
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.code(1);
    let rep = report(&r);
    assert_eq!(task(&rep, "paid")["status"], "failed");
    assert_eq!(task(&rep, "mart")["status"], "skipped");
    // An unrelated branch still loads.
    assert_eq!(task(&rep, "other")["status"], "succeeded");
    assert!(!p.join("lake/mart").exists());
    assert_eq!(read_rows(&p.join("lake/other")).len(), 8);
}

#[test]
fn a_blocked_incremental_load_reads_the_same_file_again_once_fixed() {
    let p = Project::new();
    p.write("data/in/a.csv", DIRTY);
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://data\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  orders:\n    extract: { store: raw, path: \"in/*.csv\", incremental: { new_files: true } }\n    checks:\n      - not_null: customer_id\n  mart:\n    load: { from: orders, store: lake, path: mart/, mode: append }\n",
    );
    p.weir(&["run", "p.yaml"]).code(1);
    assert!(!p.join("lake/mart").exists());
    // Nothing was consumed: the next run reads the same file again, and still blocks.
    p.weir(&["run", "p.yaml"]).code(1);
    // Fixed at the source, it loads, once.
    p.write("data/in/a.csv", CLEAN);
    p.weir(&["run", "p.yaml"]).ok();
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(ids(&read_rows(&p.join("lake/mart"))), ["1", "2", "3", "4"]);
}

#[test]
fn check_mistakes_are_reported_together() {
    let p = project(CLEAN);
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://data\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  customers:\n    extract: { store: raw, path: customers.csv }\n  orders:\n    extract: { store: raw, path: orders.csv }\n    checks:\n      - not_null: [order_id, custmer_id]\n      - accepted_values: { column: order_id, values: [1, two] }\n      - expression: amount >=\n      - row_count: { min: 1 }\n        error_if: \"> 0\"\n      - unique: order_id\n        not_null: order_id\n      - relationships: { column: customer_id, to: customer, field: customer_id }\n      - relationships: { column: customer_id, to: customers, field: segment }\n      - freshness: { column: status, max_age: 1 day }\n      - expression: amount > 0\n        error_if: \"more than 3\"\n      - sql: SELECT * FROM orderz\n      - not_null: status\n        name: status_set\n      - not_null: amount\n        name: status_set\n    on_check_failure: quarantine\n  loose:\n    extract: { store: raw, path: customers.csv }\n    checks:\n      - row_count: { min: 1 }\n    on_check_failure: quarantine\n  mart:\n    load: { from: orders, store: lake, path: mart/ }\n    checks:\n      - not_null: order_id\n",
    );
    let r = p.weir(&["validate", "p.yaml"]);
    r.code(2);
    insta::assert_snapshot!(normalize(&r.stderr, p.path()));
}

#[test]
fn checks_on_a_watermark_extract_count_the_same() {
    // A watermark extract is staged by its own reader; its checks take the aggregate query.
    let p = project(DIRTY);
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://data\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  orders:\n    extract: { store: raw, path: orders.csv, schema: { updated_at: timestamp }, incremental: { watermark: { column: updated_at } } }\n    checks:\n      - not_null: customer_id\n      - unique: order_id\n      - unique: [order_id, customer_id]\n      - expression: amount >= 0\n      - freshness: { column: updated_at, max_age: 9h }\n  mart:\n    load: { from: orders, store: lake, path: mart/, mode: append }\n",
    );
    let r = p.weir(&["run", "p.yaml", "--json", "--run-date", "2026-01-31"]);
    r.code(1);
    let res = results(&report(&r), "orders");
    let want: BTreeMap<String, (String, u64)> = [
        ("not_null_customer_id", ("failed", 1)),
        ("unique_order_id", ("failed", 2)),
        ("unique_order_id_customer_id", ("passed", 0)),
        ("expression", ("failed", 1)),
        ("freshness_updated_at", ("passed", 0)),
    ]
    .into_iter()
    .map(|(k, (s, n))| (k.to_string(), (s.to_string(), n)))
    .collect();
    assert_eq!(res, want);
    assert!(!p.join("lake/mart").exists());
}
