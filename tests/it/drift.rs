//! Sources drift: files of one extract whose columns differ in order, in number, over time.
//! Values must never land in the wrong column or be replaced by NULL without a word.

use std::io::Write;

use crate::common::*;

fn sorted_rows(dir: &std::path::Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut rows = read_rows(dir);
    rows.sort_by_key(|r| r.get("id").and_then(|v| v.parse::<i64>().ok()));
    rows
}

fn row(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// `price,qty` in one file and `qty,price` in the next: each value in its own column, with the
/// strict reader, the tolerant one, and compressed files.
#[test]
fn csv_files_are_read_by_their_own_headers() {
    for (bad_rows, ext) in [("fail", ""), ("quarantine", ""), ("fail", ".gz"), ("quarantine", ".gz")] {
        let p = Project::new();
        p.write(
            "p.yaml",
            format!(
                "stores:\n  raw: {{ url: \"file://raw\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: raw, path: \"*.csv{ext}\", bad_rows: {bad_rows}, schema: {{ price: \"decimal(6,2)\" }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/ }}\n"
            ),
        );
        let file = |name: &str, text: &str| {
            if ext.is_empty() {
                p.write(&format!("raw/{name}"), text);
            } else {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(text.as_bytes()).unwrap();
                p.write(&format!("raw/{name}{ext}"), gz.finish().unwrap());
            }
        };
        file("a.csv", "id,price,qty\n1,10.50,1\n");
        file("b.csv", "qty,id,price\n3,2,30.25\n");
        file("c.csv", "price,qty,id\n7.00,9,3\n");
        p.weir(&["run", "p.yaml"]).ok();
        assert_eq!(
            sorted_rows(&p.join("lake/out")),
            [
                row(&[("id", "1"), ("price", "10.50"), ("qty", "1")]),
                row(&[("id", "2"), ("price", "30.25"), ("qty", "3")]),
                row(&[("id", "3"), ("price", "7.00"), ("qty", "9")]),
            ],
            "bad_rows: {bad_rows}, {ext}"
        );
    }
}

/// A column added to the source later: the older files' rows get NULL in it (on a full
/// refresh), instead of every older row being called malformed.
#[test]
fn a_csv_column_added_later_is_null_in_older_files() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://raw\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id] }\n",
    );
    p.write("raw/d1.csv", "id,v\n1,10\n2,20\n");
    p.weir(&["run", "p.yaml"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(20));
    p.write("raw/d2.csv", "id,v,note\n3,30,new\n4,40,\n");
    // The output has no `note` yet: an incremental merge refuses, naming both schemas.
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(r.stdout.contains("other columns than the output"), "{}", r.stdout);
    assert!(r.stdout.contains("--full-refresh"), "{}", r.stdout);
    // A full refresh reads every file by its own header.
    p.weir(&["run", "p.yaml", "--full-refresh"]).ok();
    let rows = sorted_rows(&p.join("lake/out"));
    assert_eq!(
        rows,
        [
            row(&[("id", "1"), ("v", "10"), ("note", "NULL")]),
            row(&[("id", "2"), ("v", "20"), ("note", "NULL")]),
            row(&[("id", "3"), ("v", "30"), ("note", "new")]),
            row(&[("id", "4"), ("v", "40"), ("note", "NULL")]),
        ]
    );
}

/// A column that the newest file no longer has was removed from the source: loading the new
/// rows would set it to NULL over good values. Refused, naming the column and the files, and
/// the same whether or not the older files are still there; the output stays as it was.
#[test]
fn a_csv_column_removed_from_the_source_is_a_schema_change() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://raw\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id] }\n",
    );
    p.write("raw/f1.csv", "id,v,w\n1,10,100\n2,20,200\n");
    p.weir(&["run", "p.yaml"]).ok();
    let before = sorted_rows(&p.join("lake/out"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    p.write("raw/f2.csv", "id,v\n2,21\n");
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(r.stdout.contains("column `w` is in older files (f1.csv) but not in f2.csv, the newest"), "{}", r.stdout);
    assert_eq!(sorted_rows(&p.join("lake/out")), before, "nothing was loaded");
    // With f1.csv gone, the new rows lack a column the output has: refused too.
    let f1 = std::fs::read(p.join("raw/f1.csv")).unwrap();
    std::fs::remove_file(p.join("raw/f1.csv")).unwrap();
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(r.stdout.contains("other columns than the output"), "{}", r.stdout);
    assert_eq!(sorted_rows(&p.join("lake/out")), before, "nothing was loaded");
    // The way to accept the change: a full refresh rebuilds the output from every file; the
    // rows of the newest file, which has no `w`, get NULL in it, and nothing else changes.
    p.write("raw/f1.csv", f1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    p.write("raw/f2.csv", "id,v\n3,30\n");
    p.weir(&["run", "p.yaml", "--full-refresh"]).ok();
    assert_eq!(
        sorted_rows(&p.join("lake/out")),
        vec![
            row(&[("id", "1"), ("v", "10"), ("w", "100")]),
            row(&[("id", "2"), ("v", "20"), ("w", "200")]),
            row(&[("id", "3"), ("v", "30"), ("w", "NULL")])
        ]
    );
    // A run that is not a full refresh still refuses while f1.csv has the column.
    std::thread::sleep(std::time::Duration::from_millis(20));
    p.write("raw/f3.csv", "id,v\n4,40\n");
    p.weir(&["run", "p.yaml"]).code(1);
}

/// A Parquet file written with `columns`, each (name, array).
fn parquet(p: &Project, rel: &str, columns: Vec<(&str, datafusion::arrow::array::ArrayRef)>) {
    let batch = datafusion::arrow::array::RecordBatch::try_from_iter(columns).unwrap();
    let mut buf = Vec::new();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    p.write(rel, buf);
}

/// Parquet columns that widened between files (int → bigint, int → decimal, date →
/// timestamp): `validate` names the column, both files (with their paths as the store names
/// them) and both types, and suggests the `schema:` type; with it, every file is read, each
/// cast to the declared type.
#[test]
fn parquet_columns_that_widened_are_read_with_the_declared_type() {
    use datafusion::arrow::array::{ArrayRef, Date32Array, Int32Array, Int64Array, TimestampMicrosecondArray};
    use std::sync::Arc;
    let p = Project::new();
    parquet(
        &p,
        "raw/f1.parquet",
        vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            ("w", Arc::new(Int32Array::from(vec![10, 20])) as ArrayRef),
            ("d", Arc::new(Date32Array::from(vec![0, 1])) as ArrayRef),
        ],
    );
    parquet(
        &p,
        "raw/f2.parquet",
        vec![
            ("id", Arc::new(Int64Array::from(vec![3])) as ArrayRef),
            ("w", Arc::new(Int64Array::from(vec![3_000_000_000])) as ArrayRef),
            ("d", Arc::new(TimestampMicrosecondArray::from(vec![86_400_000_000 * 2 + 3_600_000_000])) as ArrayRef),
        ],
    );
    let yaml = |schema: &str| {
        format!(
            "stores:\n  raw: {{ url: \"file://raw\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: raw, path: \"*.parquet\"{schema} }}\n  out:\n    load: {{ from: src, store: lake, path: out/ }}\n"
        )
    };
    p.write("p.yaml", yaml(""));
    let r = p.weir(&["validate", "p.yaml"]);
    r.code(2);
    let flat = r.stderr.replace("\n  │ ", " ").replace("\n        ", " ");
    assert!(
        flat.contains("the files store column `w` with different types: integer in f1.parquet, bigint in f2.parquet"),
        "{flat}"
    );
    assert!(flat.contains("`schema: { w: bigint }`"), "{flat}");
    assert!(!r.stderr.contains("Fail to merge") && !r.stderr.contains("Int32"), "no Arrow wording: {}", r.stderr);
    p.write("p.yaml", yaml(", schema: { w: bigint, d: timestamp }"));
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(
        sorted_rows(&p.join("lake/out")),
        [
            row(&[("id", "1"), ("w", "10"), ("d", "1970-01-01T00:00:00")]),
            row(&[("id", "2"), ("w", "20"), ("d", "1970-01-02T00:00:00")]),
            row(&[("id", "3"), ("w", "3000000000"), ("d", "1970-01-03T01:00:00")]),
        ]
    );
    // int → decimal
    p.write("p.yaml", yaml(", schema: { w: \"decimal(12,2)\", d: timestamp }"));
    p.weir(&["run", "p.yaml"]).ok();
    let w: Vec<String> = sorted_rows(&p.join("lake/out")).iter().map(|r| r["w"].clone()).collect();
    assert_eq!(w, ["10.00", "20.00", "3000000000.00"]);
}

/// A file that is not Parquet in a load's output directory: `append` and `merge` name it
/// (they read the output); `overwrite` replaces the directory, as documented.
#[test]
fn a_foreign_file_in_the_output_is_named() {
    let p = Project::new();
    p.write("raw/a.csv", "id,v\n1,10\n");
    for mode in ["append", "merge, keys: [id]"] {
        p.write(
            "p.yaml",
            format!("stores:\n  raw: {{ url: \"file://raw\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: raw, path: a.csv }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: {mode} }}\n"),
        );
        p.write("lake/out/notes.txt", "written by hand\n");
        let r = p.weir(&["run", "p.yaml"]);
        r.code(1);
        assert!(
            r.stdout.contains("the output directory holds out/notes.txt, which is not a Parquet file"),
            "{mode}: {}",
            r.stdout
        );
        assert!(p.join("lake/out/notes.txt").exists());
    }
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://raw\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  src:\n    extract: { store: raw, path: a.csv }\n  out:\n    load: { from: src, store: lake, path: out/ }\n",
    );
    p.weir(&["run", "p.yaml"]).ok();
    assert!(!p.join("lake/out/notes.txt").exists(), "overwrite owns the directory");
}

/// Parquet too: a column the newest file lacks was removed from the source — refused with or
/// without the older files, so a merge never sets it to NULL over its values; a column the
/// older files lack was added later — NULL for their rows.
#[test]
fn a_parquet_column_removed_is_a_schema_change_and_one_added_is_null_in_older_files() {
    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use std::sync::Arc;
    let p = Project::new();
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://raw\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  src:\n    extract: { store: raw, path: \"*.parquet\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id] }\n",
    );
    let ints = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
    parquet(
        &p,
        "raw/f1.parquet",
        vec![("id", ints(vec![1, 2])), ("v", ints(vec![10, 20])), ("w", ints(vec![100, 200]))],
    );
    p.weir(&["run", "p.yaml"]).ok();
    let before = sorted_rows(&p.join("lake/out"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    parquet(&p, "raw/f2.parquet", vec![("id", ints(vec![2])), ("v", ints(vec![21]))]);
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(
        r.stdout.contains("column `w` is in older files (f1.parquet) but not in f2.parquet, the newest"),
        "{}",
        r.stdout
    );
    assert_eq!(sorted_rows(&p.join("lake/out")), before, "w keeps its values");
    std::fs::remove_file(p.join("raw/f1.parquet")).unwrap();
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(r.stdout.contains("other columns than the output"), "{}", r.stdout);
    assert_eq!(sorted_rows(&p.join("lake/out")), before);

    // Added later.
    let q = Project::new();
    q.write("p.yaml", std::fs::read_to_string(p.join("p.yaml")).unwrap());
    parquet(&q, "raw/f1.parquet", vec![("id", ints(vec![1])), ("v", ints(vec![10]))]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    parquet(&q, "raw/f2.parquet", vec![("id", ints(vec![2])), ("v", ints(vec![20])), ("n", ints(vec![7]))]);
    q.weir(&["run", "p.yaml"]).ok();
    assert_eq!(
        sorted_rows(&q.join("lake/out")),
        [row(&[("id", "1"), ("v", "10"), ("n", "NULL")]), row(&[("id", "2"), ("v", "20"), ("n", "7")])]
    );
}
