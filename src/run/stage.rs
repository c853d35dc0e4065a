//! Staging the rows a watermark extract reads: one pass over the files that writes the rows
//! with a cursor to local Parquet, counts the rows without one, and keeps the greatest cursor.
//! The watermark a load commits is therefore the greatest cursor it was actually given.

use std::path::{Path, PathBuf};

use datafusion::arrow::compute::{filter_record_batch, is_not_null};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::functions_aggregate::min_max::MaxAccumulator;
use datafusion::logical_expr::Accumulator;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore};

/// What was staged.
#[derive(Debug)]
pub struct StagedDelta {
    pub files: Vec<ObjectMeta>,
    /// Rows staged (with a cursor).
    pub rows: u64,
    /// Rows scanned from the files.
    pub rows_in: u64,
    /// Rows left out because their cursor is NULL.
    pub nulls: u64,
    /// The greatest cursor staged.
    pub max: Option<ScalarValue>,
}

/// Run `df` and stage its rows under `dir` (created), one file per output partition.
pub async fn stage_watermarked(
    ctx: &datafusion::prelude::SessionContext,
    df: DataFrame,
    column: &str,
    dir: &Path,
) -> Result<StagedDelta> {
    std::fs::create_dir_all(dir)?;
    let plan = df.create_physical_plan().await?;
    let schema = plan.schema();
    let idx = schema.index_of(column)?;
    let dt = schema.field(idx).data_type().clone();
    let partitions = plan.properties().output_partitioning().partition_count();
    let mut set = tokio::task::JoinSet::new();
    for p in 0..partitions {
        let mut stream = plan.execute(p, ctx.task_ctx())?;
        let path = dir.join(format!("part-{p:04}.parquet"));
        let schema = schema.clone();
        let dt = dt.clone();
        set.spawn(async move {
            let mut writer: Option<ArrowWriter<std::fs::File>> = None;
            let mut acc = MaxAccumulator::try_new(&dt)?;
            let (mut rows, mut nulls) = (0u64, 0u64);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let c = batch.column(idx);
                let batch = if c.null_count() > 0 {
                    nulls += c.null_count() as u64;
                    filter_record_batch(&batch, &is_not_null(c)?)?
                } else {
                    batch
                };
                if batch.num_rows() == 0 {
                    continue;
                }
                acc.update_batch(&[batch.column(idx).clone()])?;
                rows += batch.num_rows() as u64;
                if writer.is_none() {
                    let props = WriterProperties::builder().set_compression(Compression::LZ4_RAW).build();
                    let file = std::fs::File::create(&path)?;
                    writer = Some(ArrowWriter::try_new(file, schema.clone(), Some(props))?);
                }
                if let Some(w) = writer.as_mut() {
                    w.write(&batch)?;
                }
            }
            if let Some(w) = writer {
                w.close()?;
            }
            let max = acc.evaluate()?;
            Ok::<_, DataFusionError>((rows, nulls, (!max.is_null()).then_some(max)))
        });
    }
    let mut out = StagedDelta { files: Vec::new(), rows: 0, rows_in: 0, nulls: 0, max: None };
    while let Some(joined) = set.join_next().await {
        let (rows, nulls, max) = joined.map_err(|e| DataFusionError::External(Box::new(e)))??;
        out.rows += rows;
        out.nulls += nulls;
        out.max = super::incremental::max_watermark(out.max.take(), max);
    }
    out.rows_in = crate::sink::leaf_rows(&plan);
    out.files = list_local(dir).await?;
    Ok(out)
}

/// The files under a local directory, as object store metadata.
pub async fn list_local(dir: &Path) -> Result<Vec<ObjectMeta>> {
    let dir: PathBuf = std::path::absolute(dir)?;
    let store = object_store::local::LocalFileSystem::new();
    let prefix =
        object_store::path::Path::from_absolute_path(&dir).map_err(|e| DataFusionError::External(Box::new(e)))?;
    let mut files = Vec::new();
    let mut stream = store.list(Some(&prefix));
    while let Some(m) = stream.next().await {
        match m {
            Ok(m) => files.push(m),
            Err(object_store::Error::NotFound { .. }) => break,
            Err(e) => return Err(DataFusionError::ObjectStore(Box::new(e))),
        }
    }
    files.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(files)
}
