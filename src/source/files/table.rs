//! The table of a fixed set of files (an extract's snapshot, or files weir staged itself),
//! read lazily with projection and limit pushed into the scan and filters pushed further by
//! DataFusion's physical optimizer (Parquet row-group pruning); and the conversion of columns
//! read with another type than the extract's.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{Column, ScalarValue, Statistics, project_schema};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::provider_as_source;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType, ViewTable};
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, TableProviderFilterPushDown, cast, lit, when};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use object_store::ObjectMeta;

/// A table over a fixed list of files.
#[derive(Debug)]
pub struct FileSetTable {
    schema: SchemaRef,
    format: Arc<dyn FileFormat>,
    object_store_url: ObjectStoreUrl,
    files: Vec<ObjectMeta>,
    statistics: Statistics,
}

impl FileSetTable {
    pub fn new(
        schema: SchemaRef,
        format: Arc<dyn FileFormat>,
        object_store_url: ObjectStoreUrl,
        files: Vec<ObjectMeta>,
    ) -> Self {
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        let statistics = Statistics::new_unknown(&schema)
            .with_total_byte_size(Precision::Inexact(decoded_size(format.get_ext().as_str(), bytes)));
        FileSetTable { schema, format, object_store_url, files, statistics }
    }

    /// A table over Parquet files weir staged on local disk.
    pub fn staged(schema: SchemaRef, files: Vec<ObjectMeta>) -> Self {
        FileSetTable::new(
            schema,
            Arc::new(datafusion::datasource::file_format::parquet::ParquetFormat::default()),
            ObjectStoreUrl::local_filesystem(),
            files,
        )
    }

    /// The number of rows, when it is known (a staged table's writer counted them).
    pub fn with_rows(mut self, rows: u64) -> Self {
        self.statistics.num_rows = Precision::Inexact(usize::try_from(rows).unwrap_or(usize::MAX));
        self
    }
}

/// An estimate of the in-memory size of `bytes` of files in a format. Only the order of
/// magnitude matters: the join planner builds its hash tables on the smaller side (without
/// an estimate it builds on the left side, which is often the large fact table) and
/// broadcasts sides that are small enough.
fn decoded_size(ext: &str, bytes: u64) -> usize {
    let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    match ext {
        // Compressed and encoded: values take several times their file size once decoded.
        "parquet" => bytes.saturating_mul(4),
        // Every row repeats the field names.
        "json" => bytes / 2,
        _ => bytes,
    }
}

#[async_trait]
impl TableProvider for FileSetTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.files.is_empty() {
            return Ok(Arc::new(EmptyExec::new(project_schema(&self.schema, projection)?)));
        }
        let files: Vec<PartitionedFile> = self.files.iter().cloned().map(PartitionedFile::from).collect();
        let groups = FileGroup::new(files).split_files(state.config().target_partitions().max(1));
        let source = self.format.file_source(TableSchema::from(self.schema.clone()));
        let config = FileScanConfigBuilder::new(self.object_store_url.clone(), source)
            .with_file_groups(groups)
            .with_statistics(self.statistics.clone())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        self.format.create_physical_plan(state, config).await
    }

    fn statistics(&self) -> Option<Statistics> {
        Some(self.statistics.clone())
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Kept above the scan and also pushed into it where the format can prune with them.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
}

/// Wrap a table some of whose columns were read with another type than the extract's (see
/// `compile`'s read schema) so that each has its type: a decimal read with more digits of
/// scale, or as text, is rounded to its scale half away from zero (a value that then does not
/// fit is an error), text is cast; with a `null_text`, that text and empty fields are NULL.
pub fn typed_columns(
    raw: Arc<dyn TableProvider>,
    schema: &SchemaRef,
    null_text: Option<&str>,
) -> Result<Arc<dyn TableProvider>> {
    let read = raw.schema();
    let exprs: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| {
            let c = Expr::Column(Column::new_unqualified(f.name()));
            let read_type = read.field_with_name(f.name()).map(|r| r.data_type().clone()).unwrap_or(DataType::Null);
            let value = if &read_type == f.data_type() { c.clone() } else { cast(c.clone(), f.data_type().clone()) };
            let value = match null_text {
                Some(n) if read_type == DataType::Utf8 => {
                    let is_null = c.clone().eq(lit(n)).or(c.eq(lit("")));
                    when(is_null, lit(ScalarValue::try_from(f.data_type())?)).otherwise(value)?
                }
                _ => value,
            };
            Ok(value.alias(f.name()))
        })
        .collect::<Result<_>>()?;
    let plan = LogicalPlanBuilder::scan("raw", provider_as_source(raw), None)?.project(exprs)?.build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// A column read as `array` (text, or a decimal with more digits of scale) as decimal `dt`:
/// rounded half away from zero to its scale (`1.235` → `1.24`, `-0.005` → `-0.01` in
/// `decimal(5,2)`), as PostgreSQL and DuckDB cast; a value that does not fit the precision
/// after rounding (`999.999`) or is not a number is an error, or NULL with `safe`.
pub fn to_decimal(
    array: &datafusion::arrow::array::ArrayRef,
    dt: &DataType,
    safe: bool,
) -> std::result::Result<datafusion::arrow::array::ArrayRef, datafusion::arrow::error::ArrowError> {
    let opts = datafusion::arrow::compute::CastOptions { safe, ..Default::default() };
    datafusion::arrow::compute::cast_with_options(array, dt, &opts)
}
