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
            report["tasks"][0]["note"].as_str().unwrap().contains("a.csv:7: column b: \"999.999\" does not fit decimal(5,2)"),
            "{report}"
        );
    }
    // bad_rows: fail names the row; nothing is loaded.
    let p = project("{ store: raw, path: a.csv, schema: { b: \"decimal(5,2)\" } }", "{ from: src, store: lake, path: out/ }");
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
    let p = project("{ store: raw, path: a.ndjson, schema: { b: \"decimal(5,2)\" }, bad_rows: skip }", "{ from: src, store: lake, path: out/ }");
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
