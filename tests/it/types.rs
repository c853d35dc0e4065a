//! Values keep their value from source to output, read back by every reader: decimals round
//! as SQL rounds, timestamps keep their instant, types the output format lacks are converted
//! or refused before anything runs.

use crate::common::*;

fn project(extract: &str, load: &str) -> Project {
    let p = Project::new();
    p.write(
        "p.yaml",
        format!(
            "stores:\n  raw: {{ url: \"file://raw\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {extract}\n  out:\n    load: {load}\n"
        ),
    );
    p
}

fn values(p: &Project, dir: &str, column: &str) -> Vec<String> {
    let mut rows = read_rows(&p.join(dir));
    rows.sort_by_key(|r| r["id"].parse::<i64>().unwrap_or(0));
    rows.iter().map(|r| r[column].clone()).collect()
}

/// CSV decimals are rounded half away from zero to their scale, as PostgreSQL and DuckDB cast
/// them (Arrow's parser alone truncates); a value that does not fit after rounding is a
/// malformed row in every `bad_rows` mode, never a silently different number.
#[test]
fn csv_decimals_round_and_values_that_do_not_fit_are_malformed() {
    let csv = "id,b\n1,1.239\n2,-0.005\n3,1.235\n4,-1.234\n5,12\n6,999.999\n7,0.0049\n";
    for null in ["", ", csv: { null_value: NA }"] {
        let p = project(
            &format!("{{ store: raw, path: a.csv, schema: {{ b: \"decimal(5,2)\" }}, bad_rows: skip{null} }}"),
            "{ from: src, store: lake, path: out/ }",
        );
        p.write("raw/a.csv", csv);
        let r = p.weir(&["run", "p.yaml", "--json"]);
        r.ok();
        assert_eq!(values(&p, "lake/out", "b"), ["1.24", "-0.01", "1.24", "-1.23", "12.00", "0.00"], "{null}");
        let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(report["tasks"][0]["bad_rows"], 1, "{null}: {report}");
        assert!(
            report["tasks"][0]["note"]
                .as_str()
                .unwrap()
                .contains("a.csv:7: column b: \"999.999\" does not fit decimal(5,2)"),
            "{report}"
        );
    }
    // bad_rows: fail names the row; nothing is loaded.
    let p = project(
        "{ store: raw, path: a.csv, schema: { b: \"decimal(5,2)\" } }",
        "{ from: src, store: lake, path: out/ }",
    );
    p.write("raw/a.csv", csv);
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(r.stdout.contains("a.csv:7: column b: \"999.999\" does not fit decimal(5,2)"), "{}", r.stdout);
    assert!(!p.join("lake/out").exists());
    // quarantine keeps it.
    let p = project(
        "{ store: raw, path: a.csv, schema: { b: \"decimal(5,2)\" }, bad_rows: quarantine }",
        "{ from: src, store: lake, path: out/ }",
    );
    p.write("raw/a.csv", csv);
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(values(&p, "lake/out", "b").len(), 6);
}

/// JSON decimals (numbers or strings) round the same way.
#[test]
fn json_decimals_round_too() {
    let p = project(
        "{ store: raw, path: a.ndjson, schema: { b: \"decimal(5,2)\" }, bad_rows: skip }",
        "{ from: src, store: lake, path: out/ }",
    );
    p.write(
        "raw/a.ndjson",
        "{\"id\": 1, \"b\": 1.239}\n{\"id\": 2, \"b\": -0.005}\n{\"id\": 3, \"b\": \"1.235\"}\n{\"id\": 4, \"b\": 999.999}\n{\"id\": 5, \"b\": null}\n",
    );
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.ok();
    assert_eq!(values(&p, "lake/out", "b"), ["1.24", "-0.01", "1.24", "NULL"]);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["tasks"][0]["bad_rows"], 1, "{report}");
}

/// Types Delta lacks: timestamps in nanoseconds are floored to microseconds (an instant before
/// 1970 keeps its date), other time zones become UTC (the same instants), unsigned integers
/// go to the next signed type that holds them; every reader gets the values back. What has no
/// Delta type is refused at validate, naming the column.
#[test]
fn delta_stores_what_it_has_no_type_for_or_refuses_it_at_validate() {
    let Some(python) = test_python() else { return };
    let p = project("{ store: raw, path: a.csv }", "{ from: t, store: lake, path: d/, format: delta }");
    p.write("raw/a.csv", "id\n1\n2\n");
    let yaml = std::fs::read_to_string(p.join("p.yaml")).unwrap().replace(
        "  out:\n",
        "  t:\n    transform:\n      sql: |\n        SELECT id,\n          CASE id WHEN 1 THEN CAST('1969-12-31T23:59:59.999999999' AS TIMESTAMP(9)) ELSE CAST('2026-01-01T00:00:00.000000500' AS TIMESTAMP(9)) END AS ns,\n          arrow_cast(CAST('2026-06-01T12:00:00' AS TIMESTAMP), 'Timestamp(Microsecond, Some(\"+05:30\"))') AS local,\n          CAST(id * 100 AS TINYINT UNSIGNED) AS u8,\n          CAST(id * 2000000000 AS INT UNSIGNED) AS u32,\n          CASE id WHEN 1 THEN CAST('18446744073709551614' AS BIGINT UNSIGNED) ELSE CAST('5' AS BIGINT UNSIGNED) END AS u64\n        FROM src\n  out:\n",
    );
    p.write("p.yaml", &yaml);
    let plan = p.weir(&["plan", "p.yaml"]);
    plan.ok();
    assert!(plan.stdout.contains("u64 decimal(20,0)"), "plan shows the stored types: {}", plan.stdout);
    p.weir(&["run", "p.yaml"]).ok();
    let script = r#"
import deltalake, duckdb, polars as pl
t = deltalake.DeltaTable("lake/d").to_pyarrow_table().sort_by("id")
rows = t.to_pylist()
assert str(rows[0]["ns"]) == "1969-12-31 23:59:59.999999", rows[0]
assert str(rows[1]["ns"]) == "2026-01-01 00:00:00", rows[1]
assert str(rows[0]["local"]) == "2026-06-01 06:30:00+00:00", rows[0]
assert [r["u8"] for r in rows] == [100, 200], rows
assert [r["u32"] for r in rows] == [2000000000, 4000000000], rows
assert [int(r["u64"]) for r in rows] == [18446744073709551614, 5], rows
df = pl.read_delta("lake/d").sort("id")
assert df["u32"].to_list() == [2000000000, 4000000000], df
assert [int(v) for v in df["u64"].to_list()] == [18446744073709551614, 5], df
pdf = deltalake.DeltaTable("lake/d").to_pandas().sort_values("id")
assert list(pdf["u8"]) == [100, 200], pdf
print("ok")
"#;
    run_python(&python, script, p.path());
    // No Delta type: refused at validate, naming the column.
    p.write("p.yaml", yaml.replace("AS u64\n", "AS u64,\n          CAST('12:00:00' AS TIME) AS at\n"));
    let r = p.weir(&["validate", "p.yaml"]);
    r.code(2);
    let flat = r.stderr.replace("\n  │ ", " ");
    assert!(flat.contains("column `at` of `t` cannot be stored in a Delta table: it is a time of day"), "{flat}");
}

/// `timestamp` in SQL means what it means in `schema:`: microseconds. Dates far from 1970 cast
/// to it (nanoseconds would end in 2262), and `plan` shows `timestamp`, not `timestamp(9)`.
#[test]
fn timestamp_in_sql_is_microseconds_like_in_schema() {
    let p = project("{ store: raw, path: a.csv, schema: { d: date } }", "{ from: t, store: lake, path: out/ }");
    p.write("raw/a.csv", "id,d\n1,0001-01-01\n2,9999-12-31\n3,2026-11-01\n");
    let yaml = std::fs::read_to_string(p.join("p.yaml")).unwrap().replace(
        "  out:\n",
        "  t:\n    transform: { sql: \"SELECT id, CAST(d AS TIMESTAMP) AS t, CAST('2026-01-01 10:00:00' AS TIMESTAMP WITH TIME ZONE) AS tz, CAST('2026-01-01 10:00:00.123456789' AS TIMESTAMP(9)) AS exact FROM src\" }\n  out:\n",
    );
    p.write("p.yaml", yaml);
    let plan = p.weir(&["plan", "p.yaml"]);
    plan.ok();
    let flat = plan.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("t timestamp, tz timestamp with time zone, exact timestamp(9)"), "{}", plan.stdout);
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(values(&p, "lake/out", "t"), ["0001-01-01T00:00:00", "9999-12-31T00:00:00", "2026-11-01T00:00:00"]);
    assert_eq!(values(&p, "lake/out", "exact")[0], "2026-01-01T10:00:00.123456789");
}
