//! Staging: tables the run computes once and reads from files — a materialized transform, the
//! rows that pass a quarantine, a table handed to the cluster — written as Parquet to the
//! run's staging area (local disk, or the cluster's) by one helper, [`stage_parquet`]; and the
//! rows a watermark extract reads: one pass over the files that writes the rows with a cursor
//! to local Parquet, counts the rows without one, and keeps the greatest cursor. The watermark
//! a load commits is therefore the greatest cursor it was actually given.

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

/// Where a run stages tables.
pub enum Area<'a> {
    /// This run's staging directory on local disk.
    Local(&'a Path),
    /// The cluster's staging area (a store its executors reach, or local disk beside them).
    Cluster(&'a super::engine::Cluster),
}

impl Area<'_> {
    /// The URL of `name`'s directory (ends with `/`).
    pub fn url(&self, name: &str) -> String {
        match self {
            Area::Local(dir) => {
                let d = dir.join(name);
                let d = std::path::absolute(&d).unwrap_or(d);
                format!("file://{}/", d.display())
            }
            Area::Cluster(c) => c.dir_url(name),
        }
    }

    /// Where the object store of the area is registered.
    pub fn object_store_url(&self) -> datafusion::execution::object_store::ObjectStoreUrl {
        match self {
            Area::Local(_) => datafusion::execution::object_store::ObjectStoreUrl::local_filesystem(),
            Area::Cluster(c) => c.object_store_url(),
        }
    }
}

/// Run `plan` (planned in `state`) and write its rows as Parquet (staging options: written
/// once, read once or twice) to `name` in `area`. Returns what was written and the files.
pub async fn stage_parquet(
    area: &Area<'_>,
    state: &datafusion::execution::session_state::SessionState,
    plan: datafusion::logical_expr::LogicalPlan,
    name: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> std::result::Result<(crate::sink::WriteOutcome, Vec<ObjectMeta>), super::error::TaskError> {
    use super::error::{TaskError, cancellable};
    if let Area::Cluster(c) = area {
        c.prepare(name).map_err(|e| TaskError::transient(format!("staging `{name}`: {e}")))?;
    }
    let url = area.url(name);
    let options = crate::sink::staging_parquet_options();
    let written = cancellable(cancel, crate::sink::execute_to_parquet(state, plan, &url, vec![], options)).await?;
    let files = match area {
        Area::Local(dir) => list_local(&dir.join(name)).await?,
        Area::Cluster(c) => c.list(name).await?,
    };
    Ok((written, files))
}

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

/// The size at which a staged IPC file is closed and the next one started.
const STAGED_FILE_BYTES: usize = 64 << 20;

/// What to compute while a checked table is staged (see [`stage_checked`]).
#[derive(Default)]
pub struct ScanSpec {
    /// Row conditions: a row fails when one is false or NULL.
    pub conditions: Vec<std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    /// Columns whose greatest value is wanted.
    pub maxima: Vec<usize>,
    /// Key columns (of each `unique` check) whose rows may not repeat; rows with a NULL key
    /// column are left out.
    pub uniques: Vec<Vec<usize>>,
}

/// What [`stage_checked`] found.
#[derive(Debug, Default)]
pub struct ScanResults {
    pub rows: u64,
    /// Per condition, the rows failing it.
    pub fails: Vec<u64>,
    /// Per `maxima` column, its greatest value (`None`: no value).
    pub maxima: Vec<Option<ScalarValue>>,
    /// Per `uniques` entry: two rows may share a key (their key hashes are equal; the caller
    /// checks exactly). `false` is certain.
    pub maybe_dups: Vec<bool>,
}

/// A table staged by [`stage_checked`].
#[derive(Debug)]
pub struct StagedChecked {
    pub files: Vec<ObjectMeta>,
    /// Rows read from the sources.
    pub rows_in: u64,
    pub results: ScanResults,
}

/// Run `df` and stage its rows under `dir` (created) as Arrow IPC files, one per output
/// partition, computing the row-level check results of `spec` on each batch as it passes: the
/// checks of a table cost no extra read of it.
pub async fn stage_checked(
    ctx: &datafusion::prelude::SessionContext,
    df: DataFrame,
    dir: &Path,
    spec: std::sync::Arc<ScanSpec>,
) -> Result<StagedChecked> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::ipc::writer::{FileWriter, IpcWriteOptions};
    std::fs::create_dir_all(dir)?;
    let plan = df.create_physical_plan().await?;
    let schema = plan.schema();
    let partitions = plan.properties().output_partitioning().partition_count();
    let mut set = tokio::task::JoinSet::new();
    for p in 0..partitions {
        let mut stream = plan.execute(p, ctx.task_ctx())?;
        let dir = dir.to_path_buf();
        let schema = schema.clone();
        let spec = spec.clone();
        set.spawn(async move {
            let mut writer: Option<FileWriter<std::io::BufWriter<std::fs::File>>> = None;
            let mut fails = vec![0u64; spec.conditions.len()];
            let mut maxima = spec
                .maxima
                .iter()
                .map(|&c| MaxAccumulator::try_new(schema.field(c).data_type()))
                .collect::<Result<Vec<_>>>()?;
            let mut hashes: Vec<crate::sink::KeyHashes> =
                spec.uniques.iter().map(|_| crate::sink::KeyHashes::new(0)).collect();
            let mut rows = 0u64;
            // Files of about STAGED_FILE_BYTES: readers load an IPC file whole.
            let (mut file_no, mut file_bytes) = (0usize, 0usize);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let n = batch.num_rows();
                if n == 0 {
                    continue;
                }
                rows += n as u64;
                for (k, cond) in spec.conditions.iter().enumerate() {
                    let v = cond.evaluate(&batch)?.into_array(n)?;
                    // true_count counts the valid true values: false and NULL fail.
                    fails[k] += (n - v.as_boolean().true_count()) as u64;
                }
                for (acc, &c) in maxima.iter_mut().zip(&spec.maxima) {
                    acc.update_batch(&[batch.column(c).clone()])?;
                }
                for (h, cols) in hashes.iter_mut().zip(&spec.uniques) {
                    let keys: Vec<_> = cols.iter().map(|&c| batch.column(c).clone()).collect();
                    let keys = if keys.iter().any(|a| a.null_count() > 0) {
                        let present = keys
                            .iter()
                            .map(|a| is_not_null(a))
                            .reduce(|a, b| datafusion::arrow::compute::and(&a?, &b?))
                            .transpose()?;
                        match present {
                            Some(mask) => keys
                                .iter()
                                .map(|a| datafusion::arrow::compute::filter(a, &mask))
                                .collect::<std::result::Result<Vec<_>, _>>()?,
                            None => keys,
                        }
                    } else {
                        keys
                    };
                    h.add(&keys).map_err(|e| DataFusionError::External(Box::new(e)))?;
                }
                if file_bytes >= STAGED_FILE_BYTES
                    && let Some(mut w) = writer.take()
                {
                    w.finish()?;
                    file_no += 1;
                    file_bytes = 0;
                }
                file_bytes += batch.get_array_memory_size();
                if writer.is_none() {
                    let path = dir.join(format!("part-{p:04}-{file_no:05}.arrow"));
                    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
                    // Uncompressed: written and read back at memory speed (it is read once, soon,
                    // usually from the page cache), and removed after the run.
                    writer = Some(FileWriter::try_new_with_options(file, &schema, IpcWriteOptions::default())?);
                }
                if let Some(w) = writer.as_mut() {
                    w.write(&batch)?;
                }
            }
            if let Some(mut w) = writer {
                w.finish()?;
            }
            let maxima = maxima.iter_mut().map(|a| a.evaluate()).collect::<Result<Vec<_>>>()?;
            Ok::<_, DataFusionError>((rows, fails, maxima, hashes))
        });
    }
    let mut results = ScanResults {
        fails: vec![0; spec.conditions.len()],
        maxima: vec![None; spec.maxima.len()],
        ..Default::default()
    };
    let mut parts: Vec<Vec<crate::sink::KeyHashes>> = spec.uniques.iter().map(|_| Vec::new()).collect();
    while let Some(joined) = set.join_next().await {
        let (rows, fails, maxima, hashes) = joined.map_err(|e| DataFusionError::External(Box::new(e)))??;
        results.rows += rows;
        for (a, b) in results.fails.iter_mut().zip(fails) {
            *a += b;
        }
        for (a, b) in results.maxima.iter_mut().zip(maxima) {
            if !b.is_null() {
                *a = super::incremental::max_watermark(a.take(), Some(b));
            }
        }
        for (p, h) in parts.iter_mut().zip(hashes) {
            p.push(h);
        }
    }
    for p in parts {
        let check = crate::sink::KeyHashes::check(p).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
        results.maybe_dups.push(check.maybe_dups());
    }
    Ok(StagedChecked { files: list_local(dir).await?, rows_in: crate::sink::leaf_rows(&plan), results })
}
