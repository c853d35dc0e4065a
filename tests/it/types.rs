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

/// Every type the reference lists, at the edges of its range and NULL, loaded to Parquet and to
/// Delta and read back by DuckDB, pyarrow, pandas, Polars and deltalake: each reader gets each
/// value back (as text in a common form), or the test names the type, reader and value.
#[test]
fn every_type_reads_back_the_same_in_every_reader() {
    let Some(python) = test_python() else { return };
    let p = project("{ store: raw, path: a.csv }", "{ from: t, store: lake, path: p/ }");
    p.write("raw/a.csv", "id\n1\n2\n3\n");
    let sql = "SELECT id,
      CASE id WHEN 1 THEN CAST(9223372036854775807 AS BIGINT) WHEN 2 THEN CAST(-9223372036854775807 - 1 AS BIGINT) END AS big,
      CASE id WHEN 1 THEN CAST(2147483647 AS INT) WHEN 2 THEN CAST(-2147483648 AS INT) END AS i32,
      CASE id WHEN 1 THEN CAST(32767 AS SMALLINT) WHEN 2 THEN CAST(-32768 AS SMALLINT) END AS i16,
      CASE id WHEN 1 THEN CAST('12345678901234567890123456.789012345678' AS DECIMAL(38,12)) WHEN 2 THEN CAST('-0.000000000001' AS DECIMAL(38,12)) END AS dec,
      CASE id WHEN 1 THEN CAST(1.5 AS DOUBLE) WHEN 2 THEN CAST('-1e300' AS DOUBLE) END AS dbl,
      CASE id WHEN 1 THEN CAST('0001-01-01 00:00:00' AS TIMESTAMP) WHEN 2 THEN CAST('9999-12-31 23:59:59.999999' AS TIMESTAMP) END AS ts,
      CASE id WHEN 1 THEN CAST('0001-01-01' AS DATE) WHEN 2 THEN CAST('9999-12-31' AS DATE) END AS d,
      CASE id WHEN 1 THEN true WHEN 2 THEN false END AS b,
      CASE id WHEN 1 THEN 'żółw 🐢 \"q\"' WHEN 2 THEN '' END AS s,
      CASE id WHEN 1 THEN CAST('2026-06-01T12:00:00+05:30' AS TIMESTAMP WITH TIME ZONE) WHEN 2 THEN CAST('1969-12-31T23:59:59.5Z' AS TIMESTAMP WITH TIME ZONE) END AS tz
    FROM src";
    let yaml = std::fs::read_to_string(p.join("p.yaml")).unwrap().replace(
        "  out:\n",
        &format!(
            "  t:\n    transform:\n      sql: |\n{}\n  out:\n",
            sql.lines().map(|l| format!("        {}", l.trim())).collect::<Vec<_>>().join("\n")
        ),
    );
    let yaml = format!("{yaml}  delta:\n    load: {{ from: t, store: lake, path: d/, format: delta }}\n");
    p.write("p.yaml", yaml);
    p.weir(&["run", "p.yaml"]).ok();
    let script = r#"
import datetime, decimal, math, duckdb, pandas as pd, polars as pl, pyarrow.parquet as pq, deltalake

def norm(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    try:
        if v is pd.NaT or (not isinstance(v, (str, bytes)) and pd.isna(v)):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(v, bool):
        return str(v).lower()
    if hasattr(v, "item") and not isinstance(v, (str, bytes)) and not hasattr(v, "isoformat"):
        v = v.item()
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, pd.Timestamp):
        v = v.to_pydatetime()
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
            return v.isoformat(sep=" ") + "Z"
        return v.isoformat(sep=" ")
    if isinstance(v, datetime.date):
        return v.isoformat()
    return str(v)

expected = {
    1: {"big": "9223372036854775807", "i32": "2147483647", "i16": "32767", "dec": "12345678901234567890123456.789012345678",
        "dbl": "1.5", "ts": "0001-01-01 00:00:00", "d": "0001-01-01", "b": "true", "s": 'żółw 🐢 "q"', "tz": "2026-06-01 06:30:00Z"},
    2: {"big": "-9223372036854775808", "i32": "-2147483648", "i16": "-32768", "dec": "-0.000000000001",
        "dbl": "-1e+300", "ts": "9999-12-31 23:59:59.999999", "d": "9999-12-31", "b": "false", "s": "", "tz": "1969-12-31 23:59:59.500000Z"},
    3: {c: None for c in ["big", "i32", "i16", "dec", "dbl", "ts", "d", "b", "s", "tz"]},
}

def check(reader, rows):
    rows = {int(r["id"]): r for r in rows}
    for i, want in expected.items():
        for c, v in want.items():
            got = norm(rows[i][c])
            assert got == v, f"{reader}: row {i} column {c}: got {got!r}, want {v!r}"

check("pyarrow", pq.read_table("lake/p").to_pylist())
# pandas reads an integer column with NULLs as float64 unless asked for nullable types
# (see the reference, "Reading the outputs").
check("pandas", pd.read_parquet("lake/p", dtype_backend="pyarrow").to_dict("records"))
check("polars", pl.read_parquet("lake/p/*.parquet").to_dicts())
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
rel = con.execute("SELECT * FROM read_parquet('lake/p/*.parquet')")
cols = [d[0] for d in rel.description]
check("duckdb", [dict(zip(cols, r)) for r in rel.fetchall()])
check("deltalake", deltalake.DeltaTable("lake/d").to_pyarrow_table().to_pylist())
check("polars (delta)", pl.read_delta("lake/d").to_dicts())
print("ok")
"#;
    run_python(&python, script, p.path());
}
