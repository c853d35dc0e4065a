//! What analysts use can read what weir writes: DuckDB, pandas (pyarrow), with hive
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
    let out = std::process::Command::new(python).arg("-c").arg(script).current_dir(p.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("duckdb 12 4"), "{stdout}");
}
