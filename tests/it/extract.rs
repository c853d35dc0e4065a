//! Every reader option changes what is read; formats, compression and globs.

use std::io::Write;

use crate::common::*;

/// Run a pipeline with one extract `t` (YAML body `extract`) loaded to `out/t/`; the rows.
fn read_with(p: &Project, extract: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    p.write(
        "p.yaml",
        format!(
            "stores:\n  src: {{ url: \"file://data\" }}\n  out: {{ url: \"file://out\" }}\ntasks:\n  t:\n    extract: {extract}\n  l:\n    load: {{ from: t, store: out, path: t/ }}\n"
        ),
    );
    p.weir(&["run", "p.yaml"]).ok();
    let mut rows = read_rows(&p.join("out/t"));
    // in a stable order: by `id` when there is one, else by all values
    rows.sort_by_key(|r| (r.get("id").and_then(|v| v.parse::<i64>().ok()), r.values().cloned().collect::<Vec<_>>()));
    rows
}

fn col(rows: &[std::collections::BTreeMap<String, String>], c: &str) -> Vec<String> {
    rows.iter().map(|r| r[c].clone()).collect()
}

#[test]
fn header_and_schema() {
    let p = Project::new();
    p.write("data/a.csv", "1,x\n2,y\n");
    let rows = read_with(&p, "{ store: src, path: a.csv, csv: { header: false } }");
    assert_eq!(col(&rows, "column_1"), ["1", "2"]);
    let rows =
        read_with(&p, "{ store: src, path: a.csv, csv: { header: false }, schema: { id: bigint, name: varchar } }");
    assert_eq!(col(&rows, "name"), ["x", "y"]);
    // with a header the first line is names, not data
    let rows = read_with(&p, "{ store: src, path: a.csv }");
    assert_eq!(rows.len(), 1);
}

#[test]
fn delimiter_quote_escape_comment() {
    let p = Project::new();
    p.write("data/a.csv", "a|b\n1|x,y\n");
    assert_eq!(col(&read_with(&p, "{ store: src, path: a.csv, csv: { delimiter: \"|\" } }"), "b"), ["x,y"]);
    p.write("data/a.csv", "a,b\n1,'x,y'\n");
    assert_eq!(col(&read_with(&p, "{ store: src, path: a.csv, csv: { quote: \"'\" } }"), "b"), ["x,y"]);
    p.write("data/a.csv", "a,b\n1,\"say \\\"hi\\\"\"\n");
    assert_eq!(col(&read_with(&p, "{ store: src, path: a.csv, csv: { escape: \"\\\\\" } }"), "b"), ["say \"hi\""]);
    p.write("data/a.csv", "a,b\n# a comment line\n1,x\n");
    let rows = read_with(&p, "{ store: src, path: a.csv, csv: { comment: \"#\" } }");
    assert_eq!(col(&rows, "a"), ["1"]);
    // a tab-separated file is read with tabs by default
    p.write("data/a.tsv", "a\tb\n1\tx,y\n");
    assert_eq!(col(&read_with(&p, "{ store: src, path: a.tsv }"), "b"), ["x,y"]);
}

#[test]
fn null_text() {
    let p = Project::new();
    p.write("data/a.csv", "id,amount,note\n1,NA,hello\n2,5,NA\n3,,\n");
    let rows = read_with(&p, "{ store: src, path: a.csv, csv: { null_value: NA } }");
    assert_eq!(col(&rows, "amount"), ["NULL", "5", "NULL"]);
    assert_eq!(col(&rows, "note"), ["hello", "NULL", "NULL"]);
    let types = parquet_schema(&p.join("out/t"));
    assert_eq!(types.iter().find(|(n, _)| n == "amount").unwrap().1, "Int64", "NA does not make the column text");
    // without the option, `NA` is text
    let rows = read_with(&p, "{ store: src, path: a.csv }");
    assert_eq!(col(&rows, "amount"), ["NA", "5", "NULL"]);
    // declared types apply after the NULL text is removed
    let rows =
        read_with(&p, "{ store: src, path: a.csv, csv: { null_value: NA }, schema: { amount: \"decimal(6,2)\" } }");
    assert_eq!(col(&rows, "amount"), ["NULL", "5.00", "NULL"]);
}

#[test]
fn multiline_fields() {
    let p = Project::new();
    p.write("data/a.csv", "id,text\n1,\"line one\nline two\"\n2,plain\n");
    let rows = read_with(&p, "{ store: src, path: a.csv, csv: { multiline: true } }");
    assert_eq!(col(&rows, "text"), ["line one\nline two", "plain"]);
}

#[test]
fn compressed_files_by_extension_and_by_key() {
    let p = Project::new();
    let csv = "id,v\n1,a\n2,b\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(csv.as_bytes()).unwrap();
    p.write("data/gz/a.csv.gz", gz.finish().unwrap());
    assert_eq!(col(&read_with(&p, "{ store: src, path: gz/a.csv.gz }"), "v"), ["a", "b"]);
    p.write("data/zst/a.csv.zst", zstd::encode_all(csv.as_bytes(), 3).unwrap());
    assert_eq!(col(&read_with(&p, "{ store: src, path: \"zst/*.csv.zst\" }"), "v"), ["a", "b"]);
    // no extension to go by: the key says it
    p.write("data/raw/export", zstd::encode_all(csv.as_bytes(), 3).unwrap());
    assert_eq!(
        col(&read_with(&p, "{ store: src, path: raw/export, format: csv, compression: zstd }"), "v"),
        ["a", "b"]
    );
    let json = "{\"id\": 1, \"v\": \"a\"}\n{\"id\": 2, \"v\": \"b\"}\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json.as_bytes()).unwrap();
    p.write("data/j/a.ndjson.gz", gz.finish().unwrap());
    assert_eq!(col(&read_with(&p, "{ store: src, path: j/a.ndjson.gz }"), "v"), ["a", "b"]);
}

#[test]
fn json_and_parquet_with_declared_types() {
    let p = Project::new();
    p.write("data/e.json", "{\"id\": 1, \"at\": \"2026-01-02T03:04:05\", \"amount\": 2.5}\n{\"id\": 2, \"at\": \"2026-01-03T00:00:00\", \"amount\": null}\n");
    let rows = read_with(&p, "{ store: src, path: e.json, schema: { at: timestamp, amount: \"decimal(5,1)\" } }");
    assert_eq!(col(&rows, "at"), ["2026-01-02T03:04:05", "2026-01-03T00:00:00"]);
    assert_eq!(col(&rows, "amount"), ["2.5", "NULL"]);
    // a Parquet file written by weir, read back with a wider declared type
    std::fs::create_dir_all(p.join("data/pq")).unwrap();
    let f = parquet_files(&p.join("out/t")).remove(0);
    std::fs::copy(f, p.join("data/pq/e.parquet")).unwrap();
    let rows = read_with(&p, "{ store: src, path: pq/e.parquet, schema: { amount: double } }");
    assert_eq!(col(&rows, "amount"), ["2.5", "NULL"]);
    assert_eq!(parquet_schema(&p.join("out/t")).iter().find(|(n, _)| n == "amount").unwrap().1, "Float64");
}

#[test]
fn globs_span_directories_and_skip_hidden_files() {
    let p = Project::new();
    p.write("data/2026/01/a.csv", "id\n1\n");
    p.write("data/2026/02/b.csv", "id\n2\n");
    p.write("data/2026/02/_SUCCESS", "");
    p.write("data/2026/02/.c.csv", "id\n99\n");
    p.write("data/2026/02/notes.txt.bak", "junk");
    let rows = read_with(&p, "{ store: src, path: \"2026/**/*.csv\" }");
    assert_eq!(col(&rows, "id"), ["1", "2"]);
    let rows = read_with(&p, "{ store: src, path: \"2026/0*/a.csv\" }");
    assert_eq!(col(&rows, "id"), ["1"]);
}

#[test]
fn the_tolerant_reader_honours_every_option() {
    // `bad_rows: skip` reads through weir's tolerant reader: each option must read the same
    // rows as DataFusion's strict reader does.
    let p = Project::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"id,name\n1,x\n2,y\n").unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("a.csv", b"1,x\n2,y\n".to_vec(), "csv: { header: false }, schema: { id: bigint, name: varchar }"),
        ("a.csv", b"id|b\n1|x,y\n".to_vec(), "csv: { delimiter: \"|\" }"),
        ("a.csv", b"id,b\n1,'x,y'\n".to_vec(), "csv: { quote: \"'\" }"),
        ("a.csv", b"id,b\n1,\"say \\\"hi\\\"\"\n".to_vec(), "csv: { escape: \"\\\\\" }"),
        ("a.csv", b"id,b\n# a comment line\n1,x\n".to_vec(), "csv: { comment: \"#\" }"),
        ("a.csv", b"id,amount,note\n1,NA,hello\n2,5,NA\n3,,\n".to_vec(), "csv: { null_value: NA }"),
        ("a.csv", b"id,note\n1,\"two\nlines\"\n2,one\n".to_vec(), "csv: { multiline: true }"),
        ("a.tsv", b"id\tb\n1\tx,y\n".to_vec(), "format: csv"),
        ("a.csv.gz", gz.finish().unwrap(), "compression: gzip"),
        ("a.ndjson", b"{\"id\": 1, \"v\": \"x\"}\n{\"id\": 2, \"v\": null}\n".to_vec(), "format: json"),
    ];
    for (file, content, opts) in cases {
        let _ = std::fs::remove_dir_all(p.join("data"));
        p.write(&format!("data/{file}"), content);
        let strict = read_with(&p, &format!("{{ store: src, path: {file}, {opts} }}"));
        let tolerant = read_with(&p, &format!("{{ store: src, path: {file}, {opts}, bad_rows: skip }}"));
        assert!(!strict.is_empty(), "{file} {opts}");
        assert_eq!(tolerant, strict, "{file} with {opts}");
    }
}
