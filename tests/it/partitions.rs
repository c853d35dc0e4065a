//! Partitioned Parquet outputs as Hive, Spark, DuckDB and pyarrow lay them out: NULL is
//! `__HIVE_DEFAULT_PARTITION__`, special characters are escaped, every type reads back as the
//! value it was, in every load mode, and an empty result is still a readable table.

use std::collections::BTreeMap;

use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::common::*;

/// Values that break a directory name when written raw, and NULL, through every load mode;
/// read back by DuckDB, pyarrow, pandas and Polars, and by weir itself (a merge and a
/// replace_partitions rewrite them on the second run).
#[test]
fn null_and_special_partition_values_read_back_as_they_were_in_every_mode() {
    let Some(python) = test_python() else { return };
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"stores:
  raw: { url: "file://raw" }
  lake: { url: "file://lake" }
tasks:
  every:
    extract: { store: raw, path: "*.ndjson" }
  new:
    extract: { store: raw, path: "*.ndjson", incremental: { new_files: true } }
  o:
    load: { from: every, store: lake, path: o/, mode: overwrite, partition_by: [region] }
  a:
    load: { from: new, store: lake, path: a/, mode: append, partition_by: [region] }
  m:
    load: { from: new, store: lake, path: m/, mode: merge, keys: [id], partition_by: [region] }
  r:
    load: { from: new, store: lake, path: r/, mode: replace_partitions, partition_by: [region] }
"#,
    );
    let row = |id: u32, region: Option<&str>, amount: u32| {
        format!("{}\n", serde_json::json!({ "id": id, "region": region, "amount": amount }))
    };
    let first: String = [
        row(1, Some("north"), 10),
        row(2, None, 20),
        row(3, Some("a=b/c"), 30),
        row(4, Some("100%"), 40),
        row(5, Some("x:y#z? 'q'"), 50),
        row(7, Some(""), 70),
    ]
    .concat();
    p.write("raw/a.ndjson", first);
    p.weir(&["run", "p.yaml"]).ok();
    p.write("raw/b.ndjson", [row(2, None, 21), row(6, None, 60), row(3, Some("a=b/c"), 31)].concat());
    p.weir(&["run", "p.yaml"]).ok();

    // The directories are Hive's.
    let mut dirs: Vec<String> = std::fs::read_dir(p.join("lake/m"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('_'))
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            "region=",
            "region=100%25",
            "region=__HIVE_DEFAULT_PARTITION__",
            "region=a%3Db%2Fc",
            "region=north",
            "region=x%3Ay%23z%3F %27q%27"
        ],
        "{dirs:?}"
    );

    // weir reads the files under those directories back, every one of them (a `%`, `#` or `?`
    // in a directory name once made it read another path, and silently nothing).
    p.write(
        "q.yaml",
        "stores:\n  lake: { url: \"file://lake\" }\ntasks:\n  every:\n    extract: { store: lake, path: \"o/**/*.parquet\" }\n  copy:\n    load: { from: every, store: lake, path: copy/ }\n",
    );
    p.weir(&["run", "q.yaml"]).ok();
    let mut ids: Vec<String> = read_rows(&p.join("lake/copy")).into_iter().map(|r| r["id"].clone()).collect();
    ids.sort();
    assert_eq!(ids, ["1", "2", "2", "3", "3", "4", "5", "6", "7"]);

    let script = r#"
import duckdb, pandas as pd, pyarrow.dataset as ds, polars as pl

def norm(rows):
    return sorted((int(i), None if r is None or (isinstance(r, float) and r != r) else str(r), int(a)) for i, r, a in rows)

expected = {
    "o": [(1, "north", 10), (2, None, 20), (3, "a=b/c", 30), (4, "100%", 40), (5, "x:y#z? 'q'", 50), (7, "", 70),
          (2, None, 21), (6, None, 60), (3, "a=b/c", 31)],
    "m": [(1, "north", 10), (2, None, 21), (3, "a=b/c", 31), (4, "100%", 40), (5, "x:y#z? 'q'", 50), (6, None, 60), (7, "", 70)],
    "r": [(1, "north", 10), (2, None, 21), (3, "a=b/c", 31), (4, "100%", 40), (5, "x:y#z? 'q'", 50), (6, None, 60), (7, "", 70)],
}
expected["a"] = expected["o"]
for t, want in expected.items():
    want = norm(want)
    got = norm(duckdb.execute(f"SELECT id, region, amount FROM read_parquet('lake/{t}/**/*.parquet', hive_partitioning = true, hive_types = {{'region': VARCHAR}})").fetchall())
    assert got == want, ("duckdb", t, got, want)
    tab = ds.dataset(f"lake/{t}", format="parquet", partitioning="hive").to_table()
    got = norm(zip(tab["id"].to_pylist(), tab["region"].to_pylist(), tab["amount"].to_pylist()))
    assert got == want, ("pyarrow", t, got, want)
    # pandas: pyarrow (26) cannot turn dictionary-encoded partition values with a NULL into a
    # pandas column ("Cannot yet unify dictionaries with nulls"), whoever wrote the files; with
    # pyarrow-backed columns it reads them.
    df = pd.read_parquet(f"lake/{t}", dtype_backend="pyarrow")
    got = norm(zip(df["id"], [None if pd.isna(v) else v for v in df["region"]], df["amount"]))
    assert got == want, ("pandas", t, got, want)
    pf = pl.read_parquet(f"lake/{t}/**/*.parquet", hive_partitioning=True)
    got = norm(zip(pf["id"].to_list(), pf["region"].to_list(), pf["amount"].to_list()))
    # Polars, like Spark, reads the empty-string directory `region=` as NULL.
    assert [r for r in got if r[0] != 7] == [r for r in want if r[0] != 7], ("polars", t, got, want)
print("ok")
"#;
    run_python(&python, script, p.path());
}

/// NULL in partition columns of other types is NULL again, not `0`, `1970-01-01` or `false`;
/// timestamps are partition columns too, in Hive's text form.
#[test]
fn null_typed_partition_values_are_null_and_timestamps_partition() {
    let Some(python) = test_python() else { return };
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"stores:
  raw: { url: "file://raw" }
  lake: { url: "file://lake" }
tasks:
  src:
    extract: { store: raw, path: "*.ndjson", schema: { n: int, d: date, b: boolean, t: timestamp } }
  typed:
    load: { from: src, store: lake, path: typed/, partition_by: [n, d, b] }
  stamped:
    load: { from: src, store: lake, path: stamped/, partition_by: [t] }
  merged:
    load: { from: src, store: lake, path: merged/, mode: merge, keys: [id], partition_by: [n, t] }
"#,
    );
    p.write(
        "raw/a.ndjson",
        concat!(
            r#"{"id": 1, "n": 5, "d": "2026-11-01", "b": true, "t": "2026-11-01T08:30:00"}"#,
            "\n",
            r#"{"id": 2, "n": null, "d": null, "b": null, "t": null}"#,
            "\n",
            r#"{"id": 3, "n": 0, "d": "1970-01-01", "b": false, "t": "1969-12-31T23:59:59.5"}"#,
            "\n",
        ),
    );
    p.weir(&["run", "p.yaml"]).ok();
    // A second run merges into the typed directories (weir reads them back itself).
    p.weir(&["run", "p.yaml"]).ok();
    assert!(p.join("lake/stamped/t=2026-11-01 08%3A30%3A00").is_dir());
    assert!(p.join("lake/stamped/t=1969-12-31 23%3A59%3A59.500").is_dir());
    assert!(
        p.join("lake/typed/n=__HIVE_DEFAULT_PARTITION__/d=__HIVE_DEFAULT_PARTITION__/b=__HIVE_DEFAULT_PARTITION__")
            .is_dir()
    );
    let script = r#"
import duckdb, pyarrow.dataset as ds
rows = duckdb.execute("SELECT id, n, d, b FROM read_parquet('lake/typed/**/*.parquet', hive_partitioning = true) ORDER BY id").fetchall()
txt = lambda v: None if v is None else str(v).lower()
assert [(r[0], r[1], txt(r[2]), txt(r[3])) for r in rows] == [(1, 5, "2026-11-01", "true"), (2, None, None, None), (3, 0, "1970-01-01", "false")], rows
t = ds.dataset("lake/typed", format="parquet", partitioning="hive").to_table().sort_by("id")
assert t["n"].to_pylist() == [5, None, 0], t
assert [None if v is None else str(v) for v in t["b"].to_pylist()] in (["True", None, "False"], ["true", None, "false"]), t
rows = duckdb.execute("SELECT id, CAST(t AS VARCHAR) FROM read_parquet('lake/stamped/**/*.parquet', hive_partitioning = true) ORDER BY id").fetchall()
# (DuckDB keeps a timestamp with a fraction as text: the value is the same)
assert [(i, v and v.replace(".500", ".5")) for i, v in rows] == [(1, "2026-11-01 08:30:00"), (2, None), (3, "1969-12-31 23:59:59.5")], rows
rows = duckdb.execute("SELECT id, n, CAST(t AS VARCHAR) FROM read_parquet('lake/merged/**/*.parquet', hive_partitioning = true) ORDER BY id").fetchall()
assert [(i, n, v and v.replace(".500", ".5")) for i, n, v in rows] == [(1, 5, "2026-11-01 08:30:00"), (2, None, None), (3, 0, "1969-12-31 23:59:59.5")], rows
print("ok")
"#;
    run_python(&python, script, p.path());
}

/// A partitioned load of no rows still publishes a table readers can open, with every column;
/// when rows come, that empty file goes.
#[test]
fn an_empty_partitioned_result_is_a_readable_empty_table() {
    let Some(python) = test_python() else { return };
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"stores:
  raw: { url: "file://raw" }
  lake: { url: "file://lake" }
tasks:
  src:
    extract: { store: raw, path: "*.csv", incremental: { new_files: true } }
  kept:
    transform: { sql: "SELECT * FROM src WHERE amount > ${min}" }
  out:
    load: { from: kept, store: lake, path: out/, mode: append, partition_by: [region] }
vars: { min: 0 }
"#,
    );
    p.write("raw/a.csv", "id,region,amount\n1,north,10\n");
    p.weir(&["run", "p.yaml", "--var", "min=100"]).ok();
    let script = r#"
import duckdb, pandas as pd
r = duckdb.execute("SELECT count(*) FROM read_parquet('lake/out/**/*.parquet', hive_partitioning = true)").fetchone()
assert r == (0,), r
cols = [c[0] for c in duckdb.execute("DESCRIBE SELECT * FROM read_parquet('lake/out/**/*.parquet', hive_partitioning = true)").fetchall()]
assert sorted(cols) == ["amount", "id", "region"], cols
df = pd.read_parquet("lake/out")
assert sorted(df.columns) == ["amount", "id", "region"] and len(df) == 0, df
print("ok")
"#;
    run_python(&python, script, p.path());
    p.write("raw/b.csv", "id,region,amount\n2,south,20\n");
    p.weir(&["run", "p.yaml"]).ok();
    let top: Vec<String> = std::fs::read_dir(p.join("lake/out"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('_'))
        .collect();
    assert_eq!(top, ["region=south"], "the empty file went when rows came");
    let script = r#"
import duckdb
assert duckdb.execute("SELECT id, region FROM read_parquet('lake/out/**/*.parquet', hive_partitioning = true)").fetchall() == [(2, "south")]
print("ok")
"#;
    run_python(&python, script, p.path());
}

/// A partitioned write starts a new file in a directory once the open one holds
/// `max_rows_per_file` rows, as an unpartitioned write does; every row lands once, in its
/// own directory, whatever the number of partitions the query runs in.
#[test]
fn a_partitioned_write_keeps_files_to_max_rows_per_file() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://raw\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  src:\n    extract: { store: raw, path: \"*.csv\" }\n  out:\n    load: { from: src, store: lake, path: out/, partition_by: [region], max_rows_per_file: 20000 }\n",
    );
    // 100,000 rows in three regions of 50,000, 30,000 and 20,000 rows, in two files.
    let region = |i: u32| match i % 10 {
        0..5 => "north",
        5..8 => "south",
        _ => "east",
    };
    for (name, ids) in [("a.csv", 0..60_000), ("b.csv", 60_000..100_000)] {
        let mut s = String::from("id,region,amount\n");
        for i in ids {
            s.push_str(&format!("{i},{},{}\n", region(i), i % 97));
        }
        p.write(&format!("raw/{name}"), s);
    }
    for partitions in ["1", "2"] {
        p.weir(&["run", "p.yaml", "--target-partitions", partitions]).ok();
        let mut files_of: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for f in parquet_files(&p.join("lake/out")) {
            let dir = f.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
            let rows = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows() as usize;
            files_of.entry(dir).or_default().push(rows);
        }
        let expected = [("region=east", 20_000), ("region=north", 50_000), ("region=south", 30_000)];
        assert_eq!(files_of.keys().map(String::as_str).collect::<Vec<_>>(), expected.map(|(d, _)| d), "{files_of:?}");
        for (dir, total) in expected {
            let sizes = &files_of[dir];
            assert_eq!(sizes.iter().sum::<usize>(), total, "{dir}: {sizes:?}");
            // A batch (up to 8,192 rows) is never split: a file is closed at 20,000 rows or more.
            assert!(sizes.iter().all(|n| *n < 20_000 + 8_192), "{dir}: {sizes:?}");
            assert!(sizes.iter().filter(|n| **n < 20_000).count() <= 1, "one last, smaller file in {dir}: {sizes:?}");
        }
        let rows = read_rows(&p.join("lake/out"));
        let mut ids: Vec<u32> = rows.iter().map(|r| r["id"].parse().unwrap()).collect();
        ids.sort();
        assert_eq!(ids, (0..100_000).collect::<Vec<_>>());
        assert!(rows.iter().all(|r| r["region"] == region(r["id"].parse().unwrap())));
    }
}
