//! Every class of error message, snapshot-tested: what the user sees when `weir validate`
//! refuses a pipeline. Each must name the file, line, column and task.

use crate::common::*;

/// A project with two small CSV sources and a `lake` store.
fn project() -> Project {
    let p = Project::new();
    p.write("data/orders.csv", "order_id,customer_id,amount,status\n1,10,9.50,paid\n2,11,20.00,new\n");
    p.write("data/customers.csv", "customer_id,name,segment\n10,Ann,smb\n11,Bob,consumer\n");
    p
}

const HEAD: &str = "stores:\n  raw: { url: \"file://data\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  orders:\n    extract: { store: raw, path: orders.csv }\n  customers:\n    extract: { store: raw, path: customers.csv }\n";

/// Validate `yaml` (appended to the common head when `with_head`), expect exit 2, return
/// the normalized message.
fn refused(yaml: &str) -> String {
    let p = project();
    p.write("p.yaml", yaml);
    let r = p.weir(&["validate", "p.yaml"]);
    r.code(2);
    assert!(r.stdout.is_empty(), "nothing on stdout for an invalid pipeline: {}", r.stdout);
    normalize(&r.stderr, p.path())
}

fn with_head(tasks: &str) -> String {
    format!("{HEAD}{tasks}")
}

#[test]
fn unknown_key_with_suggestion() {
    let out = refused(&with_head("  mart:\n    load: { from: orders, stor: lake, path: out/ }\n"));
    assert!(out.contains("p.yaml:10:"), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn unknown_top_level_key_and_enum_value() {
    let out = refused(&format!(
        "{HEAD}  mart:\n    load: {{ from: orders, store: lake, path: out/, compression: zstandard }}\nmax_paralel: 2\n"
    ));
    insta::assert_snapshot!(out);
}

#[test]
fn cycle() {
    let out = refused(&with_head(
        "  a:\n    transform: { sql: SELECT * FROM c }\n  b:\n    transform: { sql: SELECT * FROM a }\n  c:\n    transform: { sql: SELECT * FROM b }\n",
    ));
    assert!(out.contains("a → c → b → a") || out.contains("a → b → c → a"), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn self_reference_and_depends_on_cycle() {
    let out = refused(&with_head(
        "  a:\n    transform: { sql: SELECT * FROM a }\n  b:\n    transform: { sql: SELECT 1 AS x }\n    depends_on: [c]\n  c:\n    transform: { sql: SELECT 2 AS y }\n    depends_on: [b]\n",
    ));
    assert!(out.contains("a → a"), "{out}");
    assert!(out.contains("b → c → b"), "{out}");
}

#[test]
fn unknown_table_in_sql() {
    let out = refused(&with_head(
        "  enriched:\n    transform:\n      sql: |\n        SELECT o.*, c.segment\n        FROM orders o\n        JOIN custmers c USING (customer_id)\n",
    ));
    // the error points inside the SQL block: line 14, at `custmers`
    assert!(out.contains("p.yaml:14:14"), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn unknown_column_in_sql() {
    let out = refused(&with_head(
        "  t:\n    transform:\n      sql: |\n        SELECT order_id, amout\n        FROM orders\n",
    ));
    assert!(out.contains("p.yaml:12:"), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn type_error_in_sql() {
    let out = refused(&with_head("  t:\n    transform:\n      sql: SELECT order_id + status AS x FROM orders\n"));
    insta::assert_snapshot!(out);
}

#[test]
fn sql_that_does_not_parse() {
    let out = refused(&with_head(
        "  t:\n    transform:\n      sql: |\n        SELECT order_id,\n        FROM orders WHERE\n",
    ));
    insta::assert_snapshot!(out);
}

#[test]
fn sandbox_refusal() {
    let out = refused(&with_head(
        "  t:\n    transform: { sql: \"COPY (SELECT * FROM orders) TO '/tmp/x.csv'\" }\n  u:\n    transform:\n      sql: SELECT * FROM \"/etc/passwd\"\n",
    ));
    insta::assert_snapshot!(out);
}

#[test]
fn missing_file() {
    let out = refused(&with_head("  extra:\n    extract: { store: raw, path: \"returns/*.csv\" }\n"));
    insta::assert_snapshot!(out);
}

#[test]
fn unknown_store_and_task_references() {
    let out = refused(&with_head(
        "  t:\n    transform: { sql: SELECT * FROM orders }\n  mart:\n    load: { from: tt, store: laek, path: out/ }\n    depends_on: [ordrs]\n",
    ));
    insta::assert_snapshot!(out);
}

#[test]
fn every_problem_is_reported_at_once() {
    let out = refused(&format!(
        "{HEAD}  a:\n    transform: {{ sql: SELECT * FROM nope }}\n  b:\n    load: {{ from: a, store: missing, path: x/ }}\n  c:\n    extract: {{ store: raw, pth: y.csv }}\n"
    ));
    for expected in ["unknown table `nope`", "unknown store `missing`", "unknown key `pth`"] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    assert!(out.contains("3 problems found"), "{out}");
}

/// Problems in different phases of compilation (a misspelt key, a misspelt column in the SQL
/// that reads the task, a merge without keys) are reported in one round of `validate`.
#[test]
fn problems_of_every_phase_are_reported_at_once() {
    let out = refused(&with_head(
        "  t:\n    transform: { sql: \"SELECT order_id, amout FROM orders\" }\n  out:\n    load: { from: t, store: lake, path: out/, mode: merge }\n",
    ).replace("path: orders.csv }", "path: orders.csv, delimter: \",\" }"));
    for expected in ["unknown key `delimter`", "amout", "`mode: merge` needs `keys`"] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    assert!(out.contains("3 problems found"), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn duplicate_task_names() {
    let out = refused(&with_head("  orders:\n    transform: { sql: SELECT 1 AS x }\n"));
    insta::assert_snapshot!(out);
}

#[test]
fn invalid_yaml() {
    let out = refused("tasks:\n  a:\n    transform: { sql: SELECT 1\n  b: [\n");
    insta::assert_snapshot!(out);
}

#[test]
fn variables_and_secrets() {
    let p = project();
    p.write(
        "p.yaml",
        &with_head("  t:\n    transform:\n      sql: SELECT * FROM orders WHERE status = '${env:WEIR_TEST_TOKEN}' AND x = '${regon}'\nvars:\n  region: north\n"),
    );
    let r = p.weir_env(&["validate", "p.yaml"], &[("WEIR_TEST_TOKEN", "tok-secret-value-123")]);
    r.code(2);
    assert!(!r.stderr.contains("tok-secret-value-123"), "a secret leaked: {}", r.stderr);
    insta::assert_snapshot!(normalize(&r.stderr, p.path()));
}

#[test]
fn schedule_and_alert_mistakes_are_reported_together() {
    let out = refused(&format!(
        "schedule: {{ cron: '0 2 * *', timezone: Europe/Berln }}\nnotify:\n  - url: \"ftp://hooks.example/T0SECRETPATH\"\n    on: [failure, stale]\n{HEAD}"
    ));
    assert!(!out.contains("T0SECRETPATH"), "a webhook URL was shown: {out}");
    insta::assert_snapshot!(out);
    let out = refused(&format!(
        "schedule: {{ cron: '61 * * * *', overlap: queue }}\nfreshness: {{ warn_after: soon }}\n{HEAD}"
    ));
    insta::assert_snapshot!("schedule_value_mistakes", out);
}

#[test]
fn partition_column_and_schema_problems() {
    let out = refused(&with_head(
        "  mart:\n    load: { from: orders, store: lake, path: out/, partition_by: [stats] }\n  typed:\n    extract: { store: raw, path: customers.csv, schema: { customer_id: bigint, segmnt: varchar } }\n  typed2:\n    extract: { store: raw, path: customers.csv, schema: { name: numbr } }\n",
    ));
    insta::assert_snapshot!(out);
}

#[test]
fn a_column_without_a_text_form_cannot_be_a_partition_column() {
    let out = refused(&with_head(
        "  tagged:\n    transform: { sql: \"SELECT order_id, make_array(status) AS tags FROM orders\" }\n  mart:\n    load: { from: tagged, store: lake, path: out/, partition_by: [tags] }\n",
    ));
    assert!(out.contains("p.yaml:12:"), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn bad_task_shapes() {
    let out = refused(&with_head(
        "  Bad-Name:\n    transform: { sql: SELECT 1 AS x }\n  both:\n    transform: { sql: SELECT 1 AS x }\n    load: { from: orders, store: lake, path: o/ }\n  two:\n    load: { from: orders, store: lake, path: o/ }\n",
    ));
    insta::assert_snapshot!(out);
}

#[test]
fn incremental_and_merge_misconfigurations() {
    let out = refused(&format!(
        "stores:\n  raw: {{ url: \"file://data\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  orders:\n    extract: {{ store: raw, path: orders.csv, incremental: {{ watermark: {{ column: amount_x, lookback: 2h }} }} }}\n  late:\n    extract: {{ store: raw, path: orders.csv, incremental: {{ new_files: true, watermark: {{ column: order_id, lookback: 2h }} }} }}\n  inc:\n    extract: {{ store: raw, path: orders.csv, incremental: {{ watermark: {{ column: order_id, lookback: 5 }} }} }}\n  none:\n    extract: {{ store: raw, path: customers.csv, incremental: {{ new_files: false }} }}\n  replaced:\n    load: {{ from: inc, store: lake, path: a/ }}\n  merged:\n    load: {{ from: inc, store: lake, path: b/, mode: merge, keys: [order_idd], delete_when: \"amount +\" }}\n  merged2:\n    load: {{ from: inc, store: lake, path: c/, mode: merge, order_by: amount }}\n  parts:\n    load: {{ from: customers, store: lake, path: d/, mode: replace_partitions, keys: customer_id }}\n  customers:\n    extract: {{ store: raw, path: customers.csv }}\n"
    ));
    for want in [
        "watermark column `amount_x` is not in `orders`",
        "lookback `2h` is not a whole number",
        "`incremental` says neither",
        "reads only new data (through incremental `inc`)",
        "`keys` column `order_idd` is not in `inc`",
        "invalid `delete_when`",
        "`mode: merge` needs `keys`",
        "`mode: replace_partitions` needs `partition_by`",
        "`keys` is only used by `mode: merge`",
        "a lookback reads rows again, but load `replaced` would write them",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    insta::assert_snapshot!(out);
}

#[test]
fn max_rows_per_file_on_a_delta_table() {
    let out = refused(&with_head(
        "  d:\n    load: { from: orders, store: lake, path: d/, format: delta, max_rows_per_file: 1000 }\n  p:\n    load: { from: orders, store: lake, path: p/, max_rows_per_file: 1000 }\n",
    ));
    assert!(out.contains("`max_rows_per_file` applies to Parquet outputs"), "{out}");
    assert!(out.contains("1 problem found"), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn compression_level_out_of_range_or_for_another_codec() {
    let out = refused(&with_head(
        "  a:\n    load: { from: orders, store: lake, path: a/, compression_level: 23 }\n  b:\n    load: { from: orders, store: lake, path: b/, compression: snappy, compression_level: 3 }\n  g:\n    load: { from: orders, store: lake, path: g/, compression: gzip, compression_level: 11 }\n  ok:\n    load: { from: orders, store: lake, path: ok/, compression: gzip, compression_level: 0 }\n",
    ));
    for want in [
        "`compression_level` 23 is out of range for zstd: 1–22",
        "`compression_level` applies to `zstd` and `gzip` only",
        "`compression_level` 11 is out of range for gzip: 0–10",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(out.contains("3 problems found"), "{out}");
    insta::assert_snapshot!(out);
}
