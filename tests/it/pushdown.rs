//! Projections and filters reach the scan: only the needed columns, and only the Parquet row
//! groups whose statistics can match, are read.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_plan::{collect, displayable};
use datafusion::prelude::SessionContext;
use object_store::ObjectStoreExt;
use weir::source::files::table::FileSetTable;

#[tokio::test]
async fn projection_and_row_group_pruning_reach_the_parquet_scan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, false),
        Field::new("c", DataType::Utf8, false),
    ]));
    // 10 row groups of 1,000 rows; b increases, so its min/max prune all but one group
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(1000)).build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema.clone(), Some(props)).unwrap();
    let n = 10_000i64;
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("row {i}")))),
        ],
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let store = object_store::local::LocalFileSystem::new();
    let meta = store.head(&object_store::path::Path::from_absolute_path(&path).unwrap()).await.unwrap();
    let table =
        FileSetTable::new(schema, Arc::new(ParquetFormat::default()), ObjectStoreUrl::local_filesystem(), vec![meta]);
    let ctx = SessionContext::new_with_config(weir::compile::session_config());
    ctx.register_table("t", Arc::new(table)).unwrap();
    let df = ctx.sql("SELECT a FROM t WHERE b >= 9500").await.unwrap();
    let plan = df.create_physical_plan().await.unwrap();
    let text = displayable(plan.as_ref()).indent(true).to_string();
    assert!(text.contains("projection=[a, b]"), "only a and b are read:\n{text}");
    assert!(text.contains("predicate=b@1 >= 9500"), "the filter reaches the scan:\n{text}");
    let batches = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 500);
    // the scan's metrics: 9 of the 10 row groups pruned by their statistics, column c never read
    let shown = datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan.as_ref())
        .indent(true)
        .to_string();
    assert!(shown.contains("row_groups_pruned_statistics=10 total → 1 matched"), "{shown}");
}

/// The join planner sees each table's estimated size: a large fact table joined to a small
/// dimension table builds its hash table on the dimension (whichever side the SQL names it)
/// and broadcasts it instead of repartitioning the fact table by hash.
#[tokio::test]
async fn joins_build_on_the_smaller_side() {
    let dir = tempfile::tempdir().unwrap();
    let mut facts = String::from("customer_id,amount\n");
    for i in 0..50_000 {
        facts.push_str(&format!("{},{}\n", i % 100, i));
    }
    std::fs::write(dir.path().join("facts.csv"), facts).unwrap();
    let mut dims = String::from("customer_id,region\n");
    for i in 0..100 {
        dims.push_str(&format!("{i},r{}\n", i % 7));
    }
    std::fs::write(dir.path().join("dims.csv"), dims).unwrap();

    let store = object_store::local::LocalFileSystem::new();
    let ctx = SessionContext::new_with_config(weir::compile::session_config().with_target_partitions(2));
    for (name, columns) in [("facts", ["customer_id", "amount"]), ("dims", ["customer_id", "region"])] {
        let path = dir.path().join(format!("{name}.csv"));
        let meta = store.head(&object_store::path::Path::from_absolute_path(&path).unwrap()).await.unwrap();
        let types =
            if name == "facts" { [DataType::Int64, DataType::Int64] } else { [DataType::Int64, DataType::Utf8] };
        let schema =
            Arc::new(Schema::new(columns.iter().zip(types).map(|(c, t)| Field::new(*c, t, true)).collect::<Vec<_>>()));
        let format = datafusion::datasource::file_format::csv::CsvFormat::default().with_has_header(true);
        let table = FileSetTable::new(schema, Arc::new(format), ObjectStoreUrl::local_filesystem(), vec![meta]);
        ctx.register_table(name, Arc::new(table)).unwrap();
    }
    let df = ctx
        .sql("SELECT d.region, sum(f.amount) FROM facts f JOIN dims d USING (customer_id) GROUP BY 1")
        .await
        .unwrap();
    let plan = df.create_physical_plan().await.unwrap();
    let text = displayable(plan.as_ref()).indent(true).to_string();
    let join = text.lines().position(|l| l.contains("HashJoinExec")).expect(&text);
    assert!(text.lines().nth(join).unwrap().contains("mode=CollectLeft"), "the small side is broadcast:\n{text}");
    let build = text.lines().skip(join + 1).find(|l| l.contains("DataSourceExec")).unwrap();
    assert!(build.contains("dims.csv"), "the hash table is built on the small table:\n{text}");
    let batches = collect(plan, ctx.task_ctx()).await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 7);
}
