//! The partitioned Parquet writer: a plan's rows written under Hive partition directories,
//! one file per directory (a second once a file holds `max_rows_per_file` rows), each file
//! written by DataFusion's `ParquetSink` as it writes any file.
//!
//! DataFusion's own partitioned write (`COPY … PARTITIONED BY`) funnels every row through
//! one task that builds, for each row, a vector of owned strings and hashes it (SipHash) to
//! find the row's directory, and it starts no second file in a directory however many rows
//! it gets. On a merge that rewrites 45,000,000 rows into 4 directories that task was the
//! write's bottleneck. Here each of the plan's partitions is split on its own task: the rows'
//! partition values are encoded once per batch (arrow's row format), a row whose values equal
//! the row before's costs one comparison, a batch that falls in one directory is passed on as
//! it is, and a directory's name is computed once, when its first row is seen.
//!
//! Directory names are the writer's text of [`super::hive`] (`region=v6e6f7274…`): the
//! staging step renames them to their Hive names, as for every partitioned write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::config::TableParquetOptions;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::{DataFusionError, exec_datafusion_err};
use datafusion::datasource::file_format::parquet::ParquetSink;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::{FileOutputMode, FileSink, FileSinkConfig};
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use tokio::sync::mpsc;

use super::SinkError;
use super::writer::{WriteOutcome, leaf_rows, split_rows};

type Result<T> = datafusion::error::Result<T>;

/// Run `plan` and write its rows as Parquet files under the directory `url`, in one directory
/// per distinct value of the `partition_by` columns (which the files do not hold).
pub(super) async fn write(
    state: &SessionState,
    plan: LogicalPlan,
    url: &str,
    partition_by: &[String],
    options: TableParquetOptions,
) -> std::result::Result<WriteOutcome, SinkError> {
    // The text of each partition column's directory value (one expression per column of the
    // plan), planned once and evaluated on a directory's first row only.
    let texts = super::hive::writer_columns(plan.schema().as_arrow(), partition_by)?;
    let physical = state.create_physical_plan(&plan).await?;
    let schema = physical.schema();
    let mut columns = Vec::with_capacity(partition_by.len());
    for name in partition_by {
        let index = schema.index_of(name).map_err(DataFusionError::from)?;
        let text = texts.get(index).cloned().ok_or_else(|| exec_datafusion_err!("no partition column `{name}`"))?;
        columns.push((index, state.create_physical_expr(text, plan.schema())?));
    }
    let table = ListingTableUrl::parse(url)?;
    let config = FileSinkConfig {
        original_url: url.to_string(),
        object_store_url: table.object_store(),
        file_group: Default::default(),
        table_paths: vec![table.clone()],
        output_schema: schema.clone(),
        table_partition_cols: columns
            .iter()
            .map(|(i, _)| (schema.field(*i).name().clone(), schema.field(*i).data_type().clone()))
            .collect(),
        insert_op: InsertOp::Append,
        keep_partition_by_columns: false,
        file_extension: "parquet".into(),
        file_output_mode: FileOutputMode::Directory,
    };
    let ctx = state.task_ctx();
    let store = ctx.runtime_env().object_store(&config.object_store_url)?;
    let execution = &state.config().options().execution;
    let (sent, received) = mpsc::unbounded_channel();
    let files = Arc::new(Mutex::new(Files {
        sent,
        base: table.prefix().clone(),
        write_id: uuid::Uuid::new_v4().simple().to_string(),
        max_rows: execution.soft_max_rows_per_output_file.get(),
        buffered: execution.max_buffered_batches_per_output_file.get(),
        dirs: HashMap::new(),
        count: 0,
    }));
    let kept = (0..schema.fields().len()).filter(|i| !partition_by.contains(schema.field(*i).name())).collect();
    let split = Split { columns, kept };
    let demux = SpawnedTask::spawn(demux(physical.clone(), ctx.clone(), Arc::new(split), files));
    let sink = ParquetSink::new(config, options);
    let rows = sink.spawn_writer_tasks_and_join(&ctx, demux, received, store).await?;
    Ok(WriteOutcome { rows, rows_in: leaf_rows(&physical), files: 0, bytes: 0 })
}

/// How a batch is split: its partition columns (index and directory-text expression) and
/// the columns the files hold.
struct Split {
    columns: Vec<(usize, Arc<dyn PhysicalExpr>)>,
    kept: Vec<usize>,
}

/// The files being written, shared by the tasks that split the plan's partitions.
struct Files {
    /// Where a new file is announced to the writer (its path and the channel of its rows).
    sent: mpsc::UnboundedSender<(ObjectPath, mpsc::Receiver<RecordBatch>)>,
    base: ObjectPath,
    write_id: String,
    max_rows: usize,
    buffered: usize,
    /// By directory: the open file's channel and the rows sent to it.
    dirs: HashMap<Vec<String>, (mpsc::Sender<RecordBatch>, usize)>,
    count: usize,
}

impl Files {
    /// The channel of the file in `dir` that takes the next `rows` rows: the open one, or a
    /// new one when there is none or the open one holds `max_rows` rows.
    fn file_for(&mut self, dir: &[String], rows: usize) -> Result<mpsc::Sender<RecordBatch>> {
        if let Some((tx, held)) = self.dirs.get_mut(dir)
            && *held < self.max_rows
        {
            *held += rows;
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel(self.buffered);
        let mut path = self.base.clone();
        for segment in dir {
            path = path.join(segment.as_str());
        }
        let path = path.join(format!("{}_{}.parquet", self.write_id, self.count));
        self.count += 1;
        self.sent.send((path, rx)).map_err(|_| exec_datafusion_err!("the Parquet writer stopped"))?;
        self.dirs.insert(dir.to_vec(), (tx.clone(), rows));
        Ok(tx)
    }
}

/// Split every partition of `plan` on its own task; the files are closed when all are done.
async fn demux(
    plan: Arc<dyn ExecutionPlan>,
    ctx: Arc<TaskContext>,
    split: Arc<Split>,
    files: Arc<Mutex<Files>>,
) -> Result<()> {
    let mut tasks = Vec::new();
    for partition in 0..plan.output_partitioning().partition_count() {
        let stream = plan.execute(partition, ctx.clone())?;
        tasks.push(SpawnedTask::spawn(split_stream(stream, split.clone(), files.clone())));
    }
    for task in tasks {
        task.join_unwind().await.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))??;
    }
    Ok(())
}

/// Split one stream's batches by directory and send each part to its directory's file.
async fn split_stream(
    mut stream: datafusion::execution::SendableRecordBatchStream,
    split: Arc<Split>,
    files: Arc<Mutex<Files>>,
) -> Result<()> {
    let fields: Vec<SortField> =
        split.columns.iter().map(|(i, _)| SortField::new(stream.schema().field(*i).data_type().clone())).collect();
    let converter = RowConverter::new(fields)?;
    // This stream's directories: the encoded partition values → the directory's name.
    let mut known: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut dirs: Vec<Vec<String>> = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        let values: Vec<_> = split.columns.iter().map(|(i, _)| batch.column(*i).clone()).collect();
        let encoded = converter.convert_columns(&values)?;
        let mut dir_of = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let dir = match dir_of.last() {
                Some(&d) if encoded.row(row - 1) == encoded.row(row) => d,
                _ => match known.get(encoded.row(row).as_ref()) {
                    Some(d) => *d,
                    None => {
                        dirs.push(dir_name(&split, &batch, row)?);
                        known.insert(encoded.row(row).as_ref().to_vec(), dirs.len() - 1);
                        dirs.len() - 1
                    }
                },
            };
            dir_of.push(dir);
        }
        for (dir, part) in split_rows(&batch.project(&split.kept)?, &dir_of, dirs.len())? {
            let tx = files
                .lock()
                .map_err(|_| exec_datafusion_err!("a task splitting rows by partition panicked"))?
                .file_for(&dirs[dir], part.num_rows())?;
            tx.send(part)
                .await
                .map_err(|_| exec_datafusion_err!("the Parquet writer of `{}` stopped", dirs[dir].join("/")))?;
        }
    }
    Ok(())
}

/// The directories (`a=…`, `b=…`, writer's text) of `batch`'s row `row`.
fn dir_name(split: &Split, batch: &RecordBatch, row: usize) -> Result<Vec<String>> {
    let one = batch.slice(row, 1);
    let mut segments = Vec::with_capacity(split.columns.len());
    for (index, text) in &split.columns {
        let value = text.evaluate(&one)?.into_array(1)?;
        let value = value
            .as_any()
            .downcast_ref::<StringArray>()
            .filter(|v| v.is_valid(0))
            .ok_or_else(|| exec_datafusion_err!("a partition value's directory text is not text"))?;
        segments.push(format!("{}={}", batch.schema().field(*index).name(), value.value(0)));
    }
    Ok(segments)
}
