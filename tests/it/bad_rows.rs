//! Malformed input: one file per class under `tests/data/bad/`. With `bad_rows: fail` the run
//! stops naming file, line, column and value (snapshot); `skip` counts; `quarantine` keeps
//! each bad row's text, file, line and reason, and rows in = rows loaded + rows set aside.

use std::collections::BTreeMap;

use crate::common::*;

const SCHEMA: &str = "{ id: bigint, name: varchar, amount: \"decimal(10,2)\" }";

/// A project with the corpus under `data/` and a pipeline reading `file` with `extract`
/// options `opts` into a load.
fn project(file: &str, opts: &str) -> Project {
    let p = Project::new();
    copy_dir(&repo().join("tests/data/bad"), &p.join("data"));
    let format = if file.ends_with(".ndjson") { "json" } else { "csv" };
    p.write(
        "p.yaml",
        format!(
            "stores:\n  raw: {{ url: \"file://data\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  t:\n    extract: {{ store: raw, path: {file}, format: {format}, schema: {SCHEMA}{opts} }}\n  out:\n    load: {{ from: t, store: lake, path: out/ }}\n"
        ),
    );
    p
}

/// Every malformed class in `fail` mode: the run's message, one line per file.
#[test]
fn each_class_is_named_precisely() {
    let mut out = String::new();
    for (file, opts) in [
        ("too_many_fields.csv", ""),
        ("too_few_fields.csv", ""),
        ("bad_value.csv", ""),
        ("invalid_utf8.csv", ""),
        ("unterminated_quote.csv", ""),
        ("multiline.csv", ", csv: { multiline: true }"),
        ("crlf.csv", ""),
        ("bad_lines.ndjson", ""),
    ] {
        let p = project(file, opts);
        let r = p.weir(&["run", "p.yaml"]);
        let text = normalize(&format!("{}{}", r.stdout, r.stderr), p.path());
        let line = text
            .lines()
            .find(|l| l.starts_with("task `") && l.contains("failed"))
            .or_else(|| text.lines().find(|l| l.contains('×')))
            .unwrap_or_else(|| panic!("{file}: no error in\n{text}"));
        assert!(r.code == 1 || r.code == 2, "{file}: exit {}\n{text}", r.code);
        out.push_str(&format!("{file}: {}\n", line.trim()));
        assert!(!p.join("lake/out").exists(), "{file}: nothing is loaded");
    }
    insta::assert_snapshot!(out);
}

/// File-level problems: an empty file, a wrong delimiter (compile errors), a header without
/// rows and a byte order mark (read fine), CRLF line ends.
#[test]
fn empty_files_delimiters_bom_and_crlf() {
    let p = project("empty.csv", "");
    let r = p.weir(&["validate", "p.yaml"]);
    r.code(2);
    let empty = normalize(&r.stderr, p.path());
    let p = project("wrong_delimiter.csv", "");
    let r = p.weir(&["validate", "p.yaml"]);
    r.code(2);
    insta::assert_snapshot!(format!("{empty}\n{}", normalize(&r.stderr, p.path())));

    let p = project("header_only.csv", "");
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(read_rows(&p.join("lake/out")).len(), 0);

    let p = project("bom.csv", "");
    p.weir(&["run", "p.yaml"]).ok();
    let rows = read_rows(&p.join("lake/out"));
    assert_eq!(rows.iter().map(|r| r["id"].as_str()).collect::<Vec<_>>(), ["1", "2"]);

    let p = project("crlf.csv", ", bad_rows: skip");
    p.weir(&["run", "p.yaml"]).ok();
    let rows = read_rows(&p.join("lake/out"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["name"], "b", "no carriage return left in values");
    assert_eq!(rows[1]["amount"], "2.50");
}

/// (file, extract options, rows that load, bad rows as (line, column, reason start)).
#[allow(clippy::type_complexity)]
fn cases() -> Vec<(&'static str, &'static str, usize, Vec<(u64, Option<&'static str>, &'static str)>)> {
    vec![
        ("too_many_fields.csv", "", 2, vec![(3, None, "4 fields, expected 3")]),
        ("too_few_fields.csv", "", 2, vec![(3, None, "2 fields, expected 3")]),
        (
            "bad_value.csv",
            "",
            2,
            vec![(3, None, "4 fields, expected 3"), (4, Some("amount"), "\"abc\" is not a decimal(10,2)")],
        ),
        ("invalid_utf8.csv", "", 2, vec![(3, Some("name"), "invalid UTF-8")]),
        ("unterminated_quote.csv", "", 2, vec![(3, None, "unterminated quoted field")]),
        (
            "multiline.csv",
            ", csv: { multiline: true }",
            2,
            vec![(6, Some("amount"), "\"not_a_number\" is not a decimal(10,2)")],
        ),
        ("crlf.csv", "", 2, vec![(4, Some("amount"), "\"x\" is not a decimal(10,2)")]),
        (
            "bad_lines.ndjson",
            "",
            3,
            vec![(2, None, "not a JSON object"), (4, None, "not a JSON object"), (5, None, "not a JSON object")],
        ),
    ]
}

#[test]
fn skip_counts_and_quarantine_keeps_every_bad_row() {
    for (file, opts, good, bad) in cases() {
        // skip: the good rows load, the bad ones are counted.
        let p = project(file, &format!("{opts}, bad_rows: skip"));
        let r = p.weir(&["run", "p.yaml", "--json"]);
        r.ok();
        let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let t = rep["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "t").unwrap();
        assert_eq!(t["bad_rows"], bad.len(), "{file}");
        assert_eq!(read_rows(&p.join("lake/out")).len(), good, "{file}");
        assert!(!p.join("lake/_quarantine").exists(), "{file}: skip writes no quarantine");

        // quarantine: the same, and each bad row is kept with its text, file, line and reason.
        let p = project(file, &format!("{opts}, bad_rows: quarantine"));
        let r = p.weir(&["run", "p.yaml", "--json"]);
        r.ok();
        let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let run_id = rep["run_id"].as_str().unwrap();
        assert_eq!(read_rows(&p.join("lake/out")).len(), good, "{file}");
        let q = p.join(&format!("lake/_quarantine/p/t/{run_id}.bad_rows.parquet"));
        let dir = p.join("q");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&q, dir.join("q.parquet")).unwrap_or_else(|e| panic!("{file}: {e}"));
        let rows: Vec<BTreeMap<String, String>> = read_rows(&dir);
        assert_eq!(rows.len(), bad.len(), "{file}: {rows:#?}");
        for (row, (line, column, reason)) in rows.iter().zip(&bad) {
            assert_eq!(row["file"], file);
            assert_eq!(row["line"], line.to_string(), "{file}: {row:?}");
            assert_eq!(row["column"], column.unwrap_or("NULL"), "{file}: {row:?}");
            assert!(row["reason"].starts_with(reason), "{file}: {row:?}");
            assert!(!row["raw"].is_empty());
            assert_eq!(row["_run_id"], run_id);
        }
        // rows in = rows loaded + rows set aside: every data line is one or the other
        let text = std::fs::read(repo().join("tests/data/bad").join(file)).unwrap();
        let records = if file.ends_with(".ndjson") {
            text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count()
        } else if file == "multiline.csv" {
            3
        } else {
            text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() - 1
        };
        assert_eq!(good + bad.len(), records, "{file}");
    }
}

#[test]
fn bad_rows_in_a_large_file_read_in_pieces_keep_their_line_numbers() {
    // Big enough to be cut into several pieces read in parallel (32 MiB each at least).
    let p = Project::new();
    let mut text = String::from("id,name,amount\n");
    let mut bad = Vec::new();
    let mut line = 1u64;
    let mut k = 0u64;
    while text.len() < 80 << 20 {
        line += 1;
        k += 1;
        if k.is_multiple_of(250_000) {
            text.push_str(&format!("{k},bad,not_a_number\n"));
            bad.push(line);
        } else {
            text.push_str(&format!("{k},name_{k},{}.{:02}\n", k % 1000, k % 100));
        }
    }
    p.write("data/big.csv", &text);
    p.write(
        "p.yaml",
        format!("stores:\n  raw: {{ url: \"file://data\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  t:\n    extract: {{ store: raw, path: big.csv, schema: {SCHEMA}, bad_rows: quarantine }}\n  out:\n    load: {{ from: t, store: lake, path: out/ }}\n"),
    );
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.ok();
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let run_id = rep["run_id"].as_str().unwrap();
    let out = rep["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "out").unwrap();
    assert_eq!(out["rows_out"].as_u64().unwrap(), k - bad.len() as u64);
    let dir = p.join("q");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(p.join(&format!("lake/_quarantine/p/t/{run_id}.bad_rows.parquet")), dir.join("q.parquet")).unwrap();
    let lines: Vec<u64> = read_rows(&dir).iter().map(|r| r["line"].parse().unwrap()).collect();
    assert_eq!(lines, bad);
}

#[test]
fn piece_boundaries_lose_and_double_nothing() {
    // A file cut into pieces of a few dozen bytes: every line boundary case (a piece starting
    // exactly at a line, inside one, on a CRLF) comes up. Each good row loads once; each bad
    // row is reported once, at its line.
    let p = Project::new();
    let mut text = String::from("id,name,amount\r\n");
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for k in 1..=600u64 {
        let line = k + 1;
        match k % 37 {
            0 => {
                text.push_str(&format!("{k},x,oops\r\n"));
                bad.push(line);
            }
            5 => {
                text.push_str(&format!("{k},\"quoted, with comma\",{k}.5,extra\r\n"));
                bad.push(line);
            }
            _ => {
                text.push_str(&format!("{k},\"n{k}\",{}.{:02}\r\n", k % 97, k % 100));
                good.push(k);
            }
        }
    }
    p.write("data/cut.csv", &text);
    p.write(
        "p.yaml",
        format!("stores:\n  raw: {{ url: \"file://data\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  t:\n    extract: {{ store: raw, path: cut.csv, schema: {SCHEMA}, bad_rows: quarantine }}\n  out:\n    load: {{ from: t, store: lake, path: out/ }}\n"),
    );
    for piece in ["23", "64", "1000"] {
        let _ = std::fs::remove_dir_all(p.join("lake"));
        let r = p.weir_env(&["run", "p.yaml", "--json"], &[("WEIR_TEST_PIECE_BYTES", piece)]);
        r.ok();
        let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let run_id = rep["run_id"].as_str().unwrap();
        let mut ids: Vec<u64> = read_rows(&p.join("lake/out")).iter().map(|r| r["id"].parse().unwrap()).collect();
        ids.sort();
        assert_eq!(ids, good, "pieces of {piece} bytes");
        let dir = p.join("q");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(p.join(&format!("lake/_quarantine/p/t/{run_id}.bad_rows.parquet")), dir.join("q.parquet"))
            .unwrap();
        let lines: Vec<u64> = read_rows(&dir).iter().map(|r| r["line"].parse().unwrap()).collect();
        assert_eq!(lines, bad, "pieces of {piece} bytes");
    }
}

/// A value past the sampled rows that does not fit the inferred type: the hint is to declare a
/// type that holds it (or sample more rows), not to set the row aside — that would drop rows
/// that are right.
#[test]
fn a_value_past_the_sample_suggests_a_type_before_setting_rows_aside() {
    let p = Project::new();
    let mut csv = String::from("id,qty\n");
    for i in 0..1100 {
        csv.push_str(&format!("{i},{}\n", if i == 1050 { "2.5".to_string() } else { i.to_string() }));
    }
    p.write("data/a.csv", csv);
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://data\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  t:\n    extract: { store: raw, path: a.csv }\n  out:\n    load: { from: t, store: lake, path: out/ }\n",
    );
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(r.stdout.contains("a.csv:1052: column qty: \"2.5\" is not a bigint"), "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "`qty` is bigint by inference from the first 1000 rows: if the value is right, declare a type that holds it (`schema: { qty: double }`) or sample more rows (`infer_rows`); if the row is wrong, set `bad_rows: skip`"
        ),
        "{}",
        r.stdout
    );
    // Following the hint loads every row.
    p.write(
        "p.yaml",
        std::fs::read_to_string(p.join("p.yaml"))
            .unwrap()
            .replace("path: a.csv }", "path: a.csv, schema: { qty: double } }"),
    );
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(read_rows(&p.join("lake/out")).len(), 1100);
}

/// Schema inference counts fields as the reader does: with an escape character and comment
/// lines, a sample that has a malformed row is inferred from the rows that are well formed
/// (`1,"a\",b",3` has three fields; the comment line is no row), so `id` is a number.
#[test]
fn inference_honours_escape_and_comment_lines() {
    let p = Project::new();
    p.write(
        "data/e.csv",
        "id,name,qty\n# a comment, with, more, delimiters\n1,\"a\\\",b\",3\n2,\"c\\\",d\",4\n3,too,many,fields\n4,\"e\\\",f\",5\n",
    );
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://data\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  t:\n    extract: { store: raw, path: e.csv, csv: { escape: \"\\\\\", comment: \"#\" }, bad_rows: skip }\n  twice:\n    transform: { sql: \"SELECT id * 2 AS twice, name, qty FROM t ORDER BY id\" }\n  out:\n    load: { from: twice, store: lake, path: out/ }\n",
    );
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    assert!(r.stderr.contains("1 malformed row skipped"), "{}", r.stderr);
    let rows: Vec<String> =
        read_rows(&p.join("lake/out")).iter().map(|r| format!("{}|{}|{}", r["twice"], r["name"], r["qty"])).collect();
    assert_eq!(rows, ["2|a\",b|3", "4|c\",d|4", "8|e\",f|5"], "{}", r.stdout);
    assert_eq!(parquet_schema(&p.join("lake/out"))[0], ("twice".to_string(), "Int64".to_string()));
}
