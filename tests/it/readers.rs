//! What analysts use can read what weir writes: DuckDB, pandas (pyarrow), Polars, with hive
//! partitions, decimals and timestamps intact.

use crate::common::*;

#[test]
fn duckdb_and_pandas_read_the_demo_marts() {
    let Some(python) = test_python() else { return };
    let p = Project::new();
    p.copy_from_repo("pipelines", "pipelines");
    p.copy_from_repo("examples/shop/data", "examples/shop/data");
    p.weir(&["run"]).ok();
    let script = r#"
import duckdb, pandas as pd, pyarrow.dataset as ds
con = duckdb.connect()
# DuckDB: hive partitions become a column
r = con.execute("SELECT count(*), count(DISTINCT region), sum(revenue) FROM read_parquet('lake/marts/daily_revenue/**/*.parquet', hive_partitioning = true)").fetchone()
print("duckdb", r[0], r[1], r[2])
# the same total computed by DuckDB from the raw files
raw = con.execute("""
  WITH o AS (SELECT * FROM read_csv('examples/shop/data/orders/*.csv', types = {'unit_price': 'DECIMAL(10,2)', 'discount': 'DECIMAL(4,2)'})),
       c AS (SELECT * FROM read_json('examples/shop/data/customers.ndjson')),
       p AS (SELECT * FROM read_parquet('examples/shop/data/products.parquet'))
  SELECT sum(CAST(quantity * unit_price * (1 - coalesce(discount, 0)) AS DECIMAL(12,2)))
  FROM o JOIN c USING (customer_id) JOIN p USING (product_id)
  WHERE lower(trim(status)) <> 'cancelled'""").fetchone()[0]
print("raw", raw)
assert r[2] == raw, (r[2], raw)
assert r[1] == 4
# pandas through pyarrow: partition column, decimal and timestamp types
df = pd.read_parquet("lake/marts/daily_revenue")
assert set(df["region"].astype(str)) == {"north", "south", "east", "west"}, df["region"].unique()
cv = ds.dataset("lake/marts/customer_value", format="parquet").to_table()
assert str(cv.schema.field("spend").type) == "decimal128(22, 2)", cv.schema
assert str(cv.schema.field("first_order_at").type).startswith("timestamp"), cv.schema
print("pandas", len(df), cv.num_rows)
"#;
    let stdout = run_python(&python, script, p.path());
    assert!(stdout.contains("duckdb 12 4"), "{stdout}");
}

/// An output with commit records (`_weir/commits/*.json`) after appends and merges, partitioned,
/// with delta-packed integer columns: pyarrow (pandas), DuckDB and Polars read the rows and
/// never the records.
#[test]
fn readers_do_not_see_commit_records() {
    let Some(python) = test_python() else { return };
    let p = Project::new();
    p.write(
        "p.yaml",
        "stores:\n  raw: { url: \"file://raw\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  merged:\n    load: { from: src, store: lake, path: merged/, mode: merge, keys: [id], partition_by: [region] }\n  appended:\n    load: { from: src, store: lake, path: appended/, mode: append }\n",
    );
    p.write("raw/a.csv", "id,region,amount\n1,north,10\n2,south,20\n3,north,30\n");
    p.weir(&["run", "p.yaml"]).ok();
    p.write("raw/b.csv", "id,region,amount\n2,south,25\n4,east,40\n");
    p.weir(&["run", "p.yaml"]).ok();
    assert!(p.join("lake/merged/_weir/commits/0000000002.json").exists());
    let script = r#"
import duckdb, glob, pandas as pd, pyarrow.dataset as ds, pyarrow.parquet as pq, polars as pl
# the rewrite learned DELTA_BINARY_PACKED for the integer columns (see learn_encodings)
encodings = {e for f in glob.glob("lake/merged/**/*.parquet", recursive=True)
             for rg in range(pq.ParquetFile(f).metadata.num_row_groups)
             for c in range(pq.ParquetFile(f).metadata.num_columns)
             for e in pq.ParquetFile(f).metadata.row_group(rg).column(c).encodings}
assert "DELTA_BINARY_PACKED" in encodings, encodings
m = ds.dataset("lake/merged", format="parquet", partitioning="hive").to_table()
assert m.num_rows == 4, m.num_rows
assert len(pd.read_parquet("lake/appended")) == 5
assert duckdb.execute("SELECT count(*), sum(amount) FROM read_parquet('lake/merged/**/*.parquet', hive_partitioning = true)").fetchone() == (4, 105)
assert duckdb.execute("SELECT count(*) FROM 'lake/appended/*.parquet'").fetchone() == (5,)
df = pl.read_parquet("lake/merged/**/*.parquet", hive_partitioning=True)
assert df.height == 4 and set(df["region"]) == {"north", "south", "east"}, df
assert pl.scan_parquet("lake/appended/*.parquet").collect().height == 5
print("ok")
"#;
    run_python(&python, script, p.path());
}

/// Delta tables written by weir (created, merged with deletes, partitioned, with decimal,
/// timestamp and date columns) read through the Delta log by the `deltalake` package
/// (pyarrow, pandas) and by Polars, with the same rows weir's own reader sees.
#[test]
fn deltalake_and_polars_read_delta_tables() {
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
  typed:
    transform:
      sql: |
        SELECT id, region, op, CAST(amount AS DECIMAL(10,2)) AS amount,
               CAST(at AS TIMESTAMP) AS at, CAST(at AS DATE) AS day
        FROM src
  merged:
    load: { from: typed, store: lake, path: merged/, format: delta, mode: merge, keys: [id], delete_when: "op = 'D'", partition_by: [region] }
  appended:
    load: { from: typed, store: lake, path: appended/, format: delta, mode: append }
"#,
    );
    p.write(
        "raw/a.csv",
        "id,region,op,amount,at\n1,north,U,10.50,2024-03-01T10:00:00\n2,south,U,20.25,2024-03-01T11:30:00.123456\n3,north,U,30.00,2024-03-02T00:00:00\n",
    );
    p.weir(&["run", "p.yaml"]).ok();
    p.write("raw/b.csv", "id,region,op,amount,at\n2,south,U,25.00,2024-03-03T09:00:00\n4,east,U,40.00,2024-03-03T10:00:00\n3,north,D,0.00,2024-03-03T11:00:00\n");
    p.weir(&["run", "p.yaml"]).ok();
    let ours = read_delta_rows(&p.join("lake/merged"));
    assert_eq!(ours.len(), 3, "{ours:?}");
    let script = r#"
import decimal, datetime, deltalake, polars as pl
t = deltalake.DeltaTable("lake/merged")
a = t.to_pyarrow_table()
rows = sorted(a.to_pylist(), key=lambda r: r["id"])
assert [r["id"] for r in rows] == [1, 2, 4], rows
assert rows[1]["amount"] == decimal.Decimal("25.00"), rows[1]
assert rows[1]["region"] == "south"
assert rows[0]["at"] == datetime.datetime(2024, 3, 1, 10, 0), rows[0]
assert rows[2]["day"] == datetime.date(2024, 3, 3), rows[2]
assert t.metadata().partition_columns == ["region"]
assert len(deltalake.DeltaTable("lake/appended").to_pandas()) == 6
df = pl.read_delta("lake/merged")
assert df.height == 3 and set(df["region"]) == {"north", "south", "east"}, df
assert df.filter(pl.col("id") == 2)["amount"][0] == decimal.Decimal("25.00")
assert pl.scan_delta("lake/appended").collect().height == 6
# weir's record is in the log, under commitInfo
h = t.history(1)[0]
assert h["operation"] == "MERGE" and h["weir"]["seq"] == 2, h
print("ok")
"#;
    run_python(&python, script, p.path());
}
