//! Parquet output: write to staging, then publish (see the module docs of `sink`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::config::TableParquetOptions;
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::{ExecutionPlan, collect};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::SinkError;
use super::commit::{self, CHECKPOINT_EVERY, CommitRecord, Consumed, RECORDS_DIR};
use crate::compile::LoadPlan;
use crate::failpoint;
use crate::spec::{LoadMode, OutputCompression, OutputFormat};
use crate::storage::{Backend, Store};

/// What a write produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Rows written.
    pub rows: u64,
    /// Rows the query read from its sources.
    pub rows_in: u64,
    /// Files written by this run.
    pub files: u64,
    /// Bytes written by this run.
    pub bytes: u64,
}

/// `df` with its columns converted to the types they are stored with (see
/// `compile::types::stored_type`; compile has refused what cannot be stored). Nanoseconds
/// become microseconds by flooring, so that an instant keeps its date and second before 1970
/// as after (`1969-12-31 23:59:59.999999999` → `…59.999999`, not `1970-01-01 00:00:00`).
pub fn storable(
    df: datafusion::dataframe::DataFrame,
    format: OutputFormat,
) -> Result<datafusion::dataframe::DataFrame, SinkError> {
    use datafusion::logical_expr::{cast, lit, when};
    let stored = |dt: &DataType| crate::compile::types::stored_type(dt, format).ok().flatten();
    let fields = df.schema().fields().clone();
    if !fields.iter().any(|f| stored(f.data_type()).is_some()) {
        return Ok(df);
    }
    let exprs: Vec<datafusion::logical_expr::Expr> = fields
        .iter()
        .map(|f| {
            let c = datafusion::logical_expr::col(datafusion::common::Column::new_unqualified(f.name()));
            Ok(match (f.data_type(), stored(f.data_type())) {
                (DataType::Timestamp(TimeUnit::Nanosecond, _), Some(t)) => {
                    let ns = cast(c, DataType::Int64);
                    let down = ns.clone() / lit(1000i64);
                    let floor = when((ns % lit(1000i64)).lt(lit(0i64)), down.clone() - lit(1i64)).otherwise(down)?;
                    cast(floor, t).alias(f.name())
                }
                (_, Some(t)) => cast(c, t).alias(f.name()),
                (_, None) => c,
            })
        })
        .collect::<Result<_, datafusion::error::DataFusionError>>()?;
    Ok(df.select(exprs)?)
}

/// Writer options for a load (or staging when `load` is `None`).
pub fn parquet_options(compression: OutputCompression, level: u32, row_group_rows: usize) -> TableParquetOptions {
    let mut o = TableParquetOptions::default();
    o.global.compression = Some(match compression {
        OutputCompression::Zstd => format!("zstd({level})"),
        OutputCompression::Snappy => "snappy".into(),
        OutputCompression::Gzip => format!("gzip({level})"),
        OutputCompression::Lz4 => "lz4_raw".into(),
        OutputCompression::None => "uncompressed".into(),
    });
    o.global.max_row_group_size = row_group_rows;
    o.global.created_by = format!("weir {}", env!("CARGO_PKG_VERSION"));
    o
}

/// Writer options for intermediate files (staged rows, materialized transforms), read once or
/// twice by weir itself and then deleted: LZ4, no dictionary pages and row-group statistics
/// only, which is cheaper to write than an output's encoding.
pub fn staging_parquet_options() -> TableParquetOptions {
    let mut o = parquet_options(OutputCompression::Lz4, 0, 1 << 20);
    o.global.dictionary_enabled = Some(false);
    o.global.statistics_enabled = Some("chunk".into());
    o
}

/// Current files whose footers are read by [`learn_encodings`].
const ENCODING_SAMPLE: usize = 4;

/// What the sampled footers say of one column, over all its chunks.
#[derive(Debug)]
struct ColumnSeen {
    /// Every chunk's data pages are all dictionary-encoded (the dictionary held the values).
    dictionary_held: bool,
    /// Every chunk's data pages are all `DELTA_BINARY_PACKED`.
    delta: bool,
    /// The chunks' bytes as stored.
    bytes: u64,
    /// For an integer column whose every chunk has min/max statistics: an upper bound of its
    /// bytes as `DELTA_BINARY_PACKED` (every value in `bit_width(max - min) + 1` bits).
    delta_bound: Option<u64>,
}

impl ColumnSeen {
    /// Add what another chunk of the column shows.
    fn absorb(&mut self, chunk: ColumnSeen) {
        self.dictionary_held &= chunk.dictionary_held;
        self.delta &= chunk.delta;
        self.bytes += chunk.bytes;
        self.delta_bound = self.delta_bound.zip(chunk.delta_bound).map(|(a, b)| a + b);
    }
}

/// Which encoding one column chunk's data pages use, and how many bytes it would take as
/// `DELTA_BINARY_PACKED` at most (integer columns with statistics).
fn chunk_seen(c: &datafusion::parquet::file::metadata::ColumnChunkMetaData) -> ColumnSeen {
    use datafusion::parquet::basic::Encoding;
    use datafusion::parquet::file::statistics::Statistics;
    let dictionary_page = c.dictionary_page_offset().is_some();
    let (dictionary_held, delta) = match c.page_encoding_stats_mask() {
        Some(mask) => {
            let data: Vec<Encoding> = mask.encodings().collect();
            let all = |f: fn(&Encoding) -> bool| !data.is_empty() && data.iter().all(f);
            (
                dictionary_page && all(|e| matches!(e, Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY)),
                all(|e| *e == Encoding::DELTA_BINARY_PACKED),
            )
        }
        // Without page encoding statistics, whether a dictionary held is unknown: kept.
        None => (dictionary_page, !dictionary_page && c.encodings().any(|e| e == Encoding::DELTA_BINARY_PACKED)),
    };
    // max - min (None when max < min: an unsigned column past i64::MAX, for one).
    let range = match c.statistics() {
        Some(Statistics::Int32(v)) => v.min_opt().zip(v.max_opt()).map(|(lo, hi)| i128::from(*hi) - i128::from(*lo)),
        Some(Statistics::Int64(v)) => v.min_opt().zip(v.max_opt()).map(|(lo, hi)| i128::from(*hi) - i128::from(*lo)),
        _ => None,
    }
    .and_then(|r| u64::try_from(r).ok());
    let nulls = c.statistics().and_then(|s| s.null_count_opt()).unwrap_or(0);
    let values = (c.num_values().max(0) as u64).saturating_sub(nulls);
    let delta_bound = range.map(|r| {
        // Deltas lie in [-r, r]: each is packed, less the block's smallest, in
        // bit_width(2r) bits. A block of 128 values also holds that smallest delta (a
        // zigzag varint of at most 2r: 7 bits a byte) and 4 bit widths.
        let bits = u64::from(64 - r.leading_zeros()) + 1;
        values.saturating_mul(bits).div_ceil(8) + values.div_ceil(128) * (bits.div_ceil(7) + 4)
    });
    ColumnSeen { dictionary_held, delta, bytes: c.compressed_size().max(0) as u64, delta_bound }
}

/// Learn the columns' encodings from the current output (its first [`ENCODING_SAMPLE`] files),
/// so that a rewrite encodes each column as well as, and no slower than, the files it replaces:
/// - a column stored as `DELTA_BINARY_PACKED` stays so;
/// - an integer column (ids, amounts, timestamps, foreign keys) that would take no more bytes as
///   `DELTA_BINARY_PACKED` than it takes now, counting every value at the full width of its
///   chunk's min..max range, is written so. That bound holds for any order of the values, so a
///   column only moves when it cannot grow; a dictionary of many values (100,000 customers)
///   costs a hash lookup per value, while delta packing is a subtraction;
/// - a column without a dictionary, or whose dictionary overflowed (data pages fell back to
///   another encoding), is written without one (building a dictionary that overflows costs a
///   hash lookup per value, and the fallback pages compress worse than plain ones);
/// - columns the dictionary holds (statuses, small foreign keys, wide ids of few values) keep it.
pub(super) async fn learn_encodings(
    store: &Store,
    current: &[CurrentFile],
    schema: &SchemaRef,
    options: &mut TableParquetOptions,
) -> Result<(), SinkError> {
    use datafusion::parquet::basic::Type as PhysicalType;
    // The columns this write stores as 32- or 64-bit integers (delta packing takes no other;
    // an overwrite may change a column's type).
    let integers: std::collections::BTreeSet<String> = datafusion::parquet::arrow::ArrowSchemaConverter::new()
        .convert(schema)
        .map(|d| {
            d.columns()
                .iter()
                .filter(|c| matches!(c.physical_type(), PhysicalType::INT32 | PhysicalType::INT64))
                .map(|c| c.path().string())
                .collect()
        })
        .unwrap_or_default();
    let mut seen: BTreeMap<String, ColumnSeen> = BTreeMap::new();
    for f in current.iter().filter(|f| f.meta.size > 0).take(ENCODING_SAMPLE) {
        // A file that is not Parquet teaches nothing (an `overwrite` replaces it; the other
        // modes refuse it where they read the output).
        let meta = match footer(store, &f.meta).await {
            Ok((meta, _)) => meta,
            Err(SinkError::NotParquet { .. }) => continue,
            Err(e) => return Err(e),
        };
        for rg in meta.row_groups() {
            for c in rg.columns() {
                let chunk = chunk_seen(c);
                match seen.get_mut(&c.column_path().string()) {
                    Some(all) => all.absorb(chunk),
                    None => {
                        seen.insert(c.column_path().string(), chunk);
                    }
                }
            }
        }
    }
    for (column, s) in seen {
        if integers.contains(&column) && (s.delta || s.delta_bound.is_some_and(|bound| bound <= s.bytes)) {
            let o = options.column_specific_options.entry(column).or_default();
            o.dictionary_enabled = Some(false);
            o.encoding = Some("delta_binary_packed".into());
        } else if !s.dictionary_held {
            options.column_specific_options.entry(column).or_default().dictionary_enabled = Some(false);
        }
    }
    Ok(())
}

/// Run `plan` and write its rows as Parquet files under the directory `url`.
pub async fn execute_to_parquet(
    state: &SessionState,
    plan: LogicalPlan,
    url: &str,
    partition_by: Vec<String>,
    mut options: TableParquetOptions,
) -> Result<WriteOutcome, SinkError> {
    if let datafusion::execution::memory_pool::MemoryLimit::Finite(_) = state.runtime_env().memory_pool.memory_limit() {
        // Under a memory limit (`--memory-limit`), write each file's columns one after the
        // other: the parallel writer buffers encoded row groups of every column at once.
        options.global.allow_single_file_parallelism = false;
        options.global.maximum_buffered_record_batches_per_stream = 2;
    }
    let file_type = format_as_file_type(Arc::new(ParquetFormatFactory::new_with_options(options)));
    // Partition columns go to the writer as text no value can break (see `hive`); the
    // directories get their Hive names when the load is staged.
    let plan = if partition_by.is_empty() {
        plan
    } else {
        let columns = super::hive::writer_columns(plan.schema().as_arrow(), &partition_by)?;
        LogicalPlanBuilder::from(plan).project(columns)?.build()?
    };
    let copy = LogicalPlanBuilder::copy_to(plan, url.to_string(), file_type, HashMap::new(), partition_by)?.build()?;
    let physical = state.create_physical_plan(&copy).await?;
    tracing::trace!(
        "physical plan of the write to {url}:\n{}",
        datafusion::physical_plan::displayable(physical.as_ref()).indent(true)
    );
    let batches = collect(physical.clone(), state.task_ctx()).await?;
    // One count per writer: one row locally, one per partition written on a cluster.
    let rows = batches
        .iter()
        .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>())
        .flat_map(|a| a.iter().flatten())
        .sum();
    Ok(WriteOutcome { rows, rows_in: leaf_rows(&physical), files: 0, bytes: 0 })
}

/// Rows produced by the leaves (scans) of an executed plan.
pub fn leaf_rows(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let children = plan.children();
    if children.is_empty() {
        plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0) as u64
    } else {
        children.into_iter().map(leaf_rows).sum()
    }
}

/// A load's output, written in full to staging and not yet visible.
#[derive(Debug)]
pub struct Staged {
    store: Arc<Store>,
    target_rel: String,
    staging_rel: String,
    old_rel: String,
    task: String,
    /// Files of the current output that the new version keeps (relative to the output).
    keep: Vec<String>,
    /// (staged, published) data files: relative to staging and to the output.
    files: Vec<(String, String)>,
    /// Records the new version no longer needs (a checkpoint holds their state).
    old_records: Vec<u64>,
    /// What was written.
    pub outcome: WriteOutcome,
    /// The commit record inside the staged version.
    pub record: CommitRecord,
}

/// What a load asks the sink to commit.
pub struct LoadRequest<'a> {
    pub load: &'a LoadPlan,
    pub pipeline: &'a str,
    pub task: &'a str,
    pub run_id: &'a str,
    /// Rebuild from nothing: the current output is replaced, whatever the mode.
    pub full_refresh: bool,
    /// What this run consumed, per incremental extract upstream of the load.
    pub consumed: BTreeMap<String, Consumed>,
    /// A local directory for this load's intermediate files (removed with the run's staging).
    pub scratch: PathBuf,
    /// The commit this run's incremental state was read from (`None`: the load is not
    /// incremental). The load fails, publishing nothing, if the output has moved on since.
    pub base_seq: Option<u64>,
}

/// A data file of the current output.
#[derive(Debug, Clone)]
pub(super) struct CurrentFile {
    /// Relative to the output directory, e.g. `region=north/part-0.parquet`.
    pub rel: String,
    pub meta: object_store::ObjectMeta,
}

impl CurrentFile {
    /// The partition directory (`region=north`), empty at the top.
    pub fn dir(&self) -> &str {
        self.rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
    }
}

/// The data files and commit records of the output `rel` in `store`.
pub(super) async fn current_output(store: &Store, rel: &str) -> Result<(Vec<CurrentFile>, Vec<u64>), SinkError> {
    let target = store.path(rel);
    let parts = target.parts().count();
    let all = match list_all(store.object_store.as_ref(), &target).await {
        Ok(v) => v,
        Err(SinkError::ObjectStore(object_store::Error::NotFound { .. })) => Vec::new(),
        Err(e) => return Err(e),
    };
    let files = all
        .into_iter()
        .filter_map(|meta| {
            let rel: Vec<String> = meta.location.parts().skip(parts).map(|p| p.as_ref().to_string()).collect();
            if rel.iter().any(|p| p.starts_with('.') || p.starts_with('_')) {
                return None;
            }
            Some(CurrentFile { rel: rel.join("/"), meta })
        })
        .collect();
    let seqs = commit::list_records(store, rel).await?;
    Ok((files, seqs))
}

/// Write `plan` for a load to its staging directory, with its commit record. Nothing is
/// visible to readers yet; this step may be cancelled at any point (the next run removes what
/// it left).
pub async fn stage_load(
    state: &SessionState,
    plan: LogicalPlan,
    schema: SchemaRef,
    mut req: LoadRequest<'_>,
) -> Result<Staged, SinkError> {
    let load = req.load;
    let store = &load.store;
    let (parent, base) = match load.path.rsplit_once('/') {
        Some((p, b)) => (p.to_string(), b.to_string()),
        None => (String::new(), load.path.clone()),
    };
    let join = |name: &str| {
        if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") }
    };
    let staging_rel = join(&format!(".{base}.weir-staging-{}", req.run_id));
    let old_rel = join(&format!(".{base}.weir-old-{}", req.run_id));
    remove_leftovers(store, &parent, &base, req.run_id).await?;
    let remote = !matches!(store.backend, Backend::Local(_));
    if remote {
        super::remote::recover(store, &load.path, req.pipeline, req.task, req.run_id).await?;
    }

    let (current, seqs) = current_output(store, &load.path).await?;
    let latest = seqs.last().copied().unwrap_or(0);
    if let Some(base) = req.base_seq {
        ensure_unmoved(store, &load.path, base, latest).await?;
    }
    let seq = latest + 1;
    // Whether the new version builds on the current one.
    let builds_on = !req.full_refresh && load.mode != LoadMode::Overwrite && !current.is_empty();
    if builds_on {
        check_same_columns(store, &current, &schema, &load.partition_by).await?;
    }

    let staging = store.path(&staging_rel);
    // A partitioned output is written one level down, then each file moves to (on local disk)
    // or is published under (on object stores) its partition directories' Hive names.
    let depth = load.partition_by.len();
    let written_dir = if depth == 0 { staging.clone() } else { staging.clone().join(WRITTEN_DIR) };
    let url = store.url_of(&written_dir, true);
    let mut options = parquet_options(load.compression, load.compression_level, load.row_group_rows);
    learn_encodings(store, &current, &schema, &mut options).await?;
    let mut keep: Vec<String> = Vec::new();
    let mut outcome = match load.mode {
        LoadMode::Merge => {
            let m = super::merge::stage_merge(
                state,
                plan,
                &schema,
                load,
                if builds_on { &current } else { &[] },
                &url,
                options,
                &req.scratch,
            )
            .await?;
            keep = m.keep;
            m.outcome
        }
        _ => execute_to_parquet(state, plan, &url, load.partition_by.clone(), options).await?,
    };
    let mut written = written_files(store, &staging_rel, depth).await?;
    if builds_on {
        match load.mode {
            LoadMode::Append => keep = current.iter().map(|f| f.rel.clone()).collect(),
            LoadMode::ReplacePartitions => {
                let replaced: HashSet<&str> = written
                    .iter()
                    .map(|(_, _, rel)| rel.rsplit_once('/').map(|(d, _)| d).unwrap_or_default())
                    .collect();
                keep = current.iter().filter(|f| !replaced.contains(f.dir())).map(|f| f.rel.clone()).collect();
            }
            _ => {}
        }
    }
    if depth > 0 && !written.is_empty() {
        // The empty file a partitioned output holds while it has no rows goes when rows come.
        keep.retain(|rel| rel.contains('/'));
    }
    if written.is_empty() && keep.is_empty() {
        // No rows: still publish a file, so that readers find the table and its schema (at the
        // top, with every column, partition columns included, when the output is partitioned).
        let name = format!("part-{}-empty.parquet", req.run_id);
        store.object_store.put(&staging.clone().join(name.as_str()), empty_parquet(&schema)?.into()).await?;
        written = written_files(store, &staging_rel, 0).await?;
    }
    outcome.files = written.len() as u64;
    outcome.bytes = written.iter().map(|(m, _, _)| m.size).sum();

    // The commit record: a checkpoint (the whole state) when the version does not build on
    // the current one, and every CHECKPOINT_EVERY commits; else this run's consumption only.
    let checkpoint = !builds_on || seqs.is_empty() || seq % CHECKPOINT_EVERY == 0;
    let mut extracts = std::mem::take(&mut req.consumed);
    if checkpoint && builds_on && !seqs.is_empty() {
        let mut folded = commit::read_state(store, &load.path, &seqs).await?;
        for (name, c) in &extracts {
            folded.extracts.entry(name.clone()).or_default().apply(c);
        }
        extracts = folded.extracts.iter().map(|(k, v)| (k.clone(), v.as_consumed())).collect();
    }
    // The data files of the current version the new one does not hold.
    let kept: HashSet<&str> = keep.iter().map(String::as_str).collect();
    let files_removed: Vec<String> =
        current.iter().filter(|f| !kept.contains(f.rel.as_str())).map(|f| f.rel.clone()).collect();
    if !checkpoint {
        keep.extend(seqs.iter().map(|s| format!("{RECORDS_DIR}/{}", commit::record_name(*s))));
    }
    // On object stores the files are published under names that carry this commit.
    let files: Vec<(String, String)> = written
        .into_iter()
        .map(|(_, staged, rel)| {
            let published = if remote { super::remote::published_name(&rel, seq) } else { rel };
            (staged, published)
        })
        .collect();
    let record = CommitRecord {
        rows_written: Some(outcome.rows),
        files_written: files.iter().map(|(_, p)| p.clone()).collect(),
        files_removed,
        ..CommitRecord::new(&req, seq, checkpoint, extracts)
    };
    if !remote {
        // Local disk: the record is part of the staged directory swapped in.
        let record_path = staging.clone().join("_weir").join("commits").join(commit::record_name(seq).as_str());
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| SinkError::Record { path: record_path.to_string(), reason: e.to_string() })?;
        store.object_store.put(&record_path, bytes.into()).await?;
    }

    failpoint::hit("after_data_files", req.task).await.map_err(SinkError::Failpoint)?;
    failpoint::hit("before_publish", req.task).await.map_err(SinkError::Failpoint)?;
    Ok(Staged {
        store: store.clone(),
        target_rel: load.path.clone(),
        staging_rel,
        old_rel,
        task: req.task.to_string(),
        keep,
        files,
        old_records: if checkpoint { seqs } else { Vec::new() },
        outcome,
        record,
    })
}

pub fn mode_name(m: LoadMode) -> &'static str {
    match m {
        LoadMode::Overwrite => "overwrite",
        LoadMode::Append => "append",
        LoadMode::Merge => "merge",
        LoadMode::ReplacePartitions => "replace_partitions",
    }
}

/// The new rows must have the columns of the output they are added to.
async fn check_same_columns(
    store: &Store,
    current: &[CurrentFile],
    schema: &SchemaRef,
    partition_by: &[String],
) -> Result<(), SinkError> {
    let Some(sample) = current.iter().max_by(|a, b| a.meta.last_modified.cmp(&b.meta.last_modified)) else {
        return Ok(());
    };
    // A file at the top of a partitioned output is the empty table written for a load of no
    // rows: it holds the partition columns too.
    let partition_by = if sample.dir().is_empty() { &[] } else { partition_by };
    let (_, file_schema) = footer(store, &sample.meta).await?;
    let have: Vec<(String, String)> = file_schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), crate::compile::types::sql_name(f.data_type())))
        .collect();
    let want: Vec<(String, String)> = schema
        .fields()
        .iter()
        .filter(|f| !partition_by.contains(f.name()))
        .map(|f| (f.name().clone(), crate::compile::types::sql_name(f.data_type())))
        .collect();
    if have != want {
        let show = |v: &[(String, String)]| v.iter().map(|(n, t)| format!("{n} {t}")).collect::<Vec<_>>().join(", ");
        return Err(SinkError::Columns { file: sample.rel.clone(), have: show(&have), want: show(&want) });
    }
    Ok(())
}

/// The Parquet metadata and Arrow schema of a file.
pub(super) async fn footer(
    store: &Store,
    meta: &object_store::ObjectMeta,
) -> Result<(Arc<datafusion::parquet::file::metadata::ParquetMetaData>, SchemaRef), SinkError> {
    use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
    let not_parquet = |reason: String| SinkError::NotParquet { file: store.relative(&meta.location), reason };
    let md = DFParquetMetadata::new(store.object_store.as_ref(), meta).fetch_metadata().await.map_err(|e| match e {
        datafusion::error::DataFusionError::ParquetError(p) => not_parquet(p.to_string()),
        other => SinkError::DataFusion(other),
    })?;
    let schema = datafusion::parquet::arrow::parquet_to_arrow_schema(
        md.file_metadata().schema_descr(),
        md.file_metadata().key_value_metadata(),
    )
    .map_err(|e| not_parquet(e.to_string()))?;
    Ok((md, Arc::new(schema)))
}

impl Staged {
    /// Make the staged output visible (see the module docs). Once started this runs to the
    /// end: the caller must not drop it midway (cancellation and timeouts stop before it).
    pub async fn publish(self) -> Result<(WriteOutcome, CommitRecord), SinkError> {
        let store = &self.store;
        match &store.backend {
            Backend::Local(_) => {
                let path =
                    |rel: &str| store.local_path(rel).ok_or_else(|| SinkError::NotADirectory(PathBuf::from(rel)));
                let (target, staged, old) = (path(&self.target_rel)?, path(&self.staging_rel)?, path(&self.old_rel)?);
                let keep = self.keep.clone();
                tokio::task::spawn_blocking(move || publish_local(&staged, &target, &old, &keep))
                    .await
                    .map_err(|e| SinkError::io("publishing", Path::new(""), std::io::Error::other(e.to_string())))??;
            }
            _ => {
                super::remote::Publish {
                    store,
                    target_rel: &self.target_rel,
                    staging_rel: &self.staging_rel,
                    files: &self.files,
                    record: &self.record,
                    old_records: &self.old_records,
                    task: &self.task,
                }
                .run()
                .await?
            }
        }
        failpoint::hit("after_publish", &self.task).await.map_err(SinkError::Failpoint)?;
        Ok((self.outcome, self.record))
    }
}

/// The directory under a partitioned load's staging directory that the writer writes to.
const WRITTEN_DIR: &str = "_written";

/// The data files staged under `staging`: (object, path relative to `staging`, path in the
/// output). With `depth` partition columns the writer wrote under [`WRITTEN_DIR`] with its own
/// directory names; the output's are the Hive names (`sink::hive`). On local disk the files
/// are moved to them inside the staging directory (which becomes the output as it is).
async fn written_files(
    store: &Store,
    staging_rel: &str,
    depth: usize,
) -> Result<Vec<(object_store::ObjectMeta, String, String)>, SinkError> {
    let staging = store.path(staging_rel);
    let parts = staging.parts().count();
    let rel_of = |m: &object_store::ObjectMeta| -> String {
        m.location.parts().skip(parts).map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/")
    };
    let listed = list_all(store.object_store.as_ref(), &staging).await?;
    let mut files = Vec::with_capacity(listed.len());
    for m in listed {
        let staged = rel_of(&m);
        if staged.starts_with("_weir/") {
            continue;
        }
        let rel = match staged.strip_prefix(WRITTEN_DIR).and_then(|r| r.strip_prefix('/')) {
            Some(inner) if depth > 0 => super::hive::hive_rel(inner, depth),
            _ => staged.clone(),
        };
        files.push((m, staged, rel));
    }
    let Backend::Local(_) = store.backend else { return Ok(files) };
    if depth == 0 || files.iter().all(|(_, staged, rel)| staged == rel) {
        return Ok(files);
    }
    let dir = store.local_path(staging_rel).ok_or_else(|| SinkError::NotADirectory(PathBuf::from(staging_rel)))?;
    let moved = {
        let dir = dir.clone();
        let moves: Vec<(String, String)> = files.iter().map(|(_, s, r)| (s.clone(), r.clone())).collect();
        tokio::task::spawn_blocking(move || -> Result<(), SinkError> {
            for (staged, rel) in moves.iter().filter(|(s, r)| s != r) {
                let (from, to) = (dir.join(staged), dir.join(rel));
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| SinkError::io("creating", parent, e))?;
                }
                std::fs::rename(&from, &to).map_err(|e| SinkError::io("moving", &from, e))?;
            }
            let written = dir.join(WRITTEN_DIR);
            match std::fs::remove_dir_all(&written) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SinkError::io("removing", &written, e)),
                _ => Ok(()),
            }
        })
    };
    moved.await.map_err(|e| SinkError::io("moving", &dir, std::io::Error::other(e.to_string())))??;
    Ok(files
        .into_iter()
        .map(|(mut m, _, rel)| {
            m.location = store.path(&format!("{staging_rel}/{rel}"));
            (m, rel.clone(), rel)
        })
        .collect())
}

/// A Parquet file with `schema` and no rows.
fn empty_parquet(schema: &SchemaRef) -> Result<Vec<u8>, SinkError> {
    let mut buf = Vec::new();
    let writer = ArrowWriter::try_new(&mut buf, schema.clone(), None)
        .map_err(|e| SinkError::DataFusion(datafusion::error::DataFusionError::ParquetError(Box::new(e))))?;
    writer.close().map_err(|e| SinkError::DataFusion(datafusion::error::DataFusionError::ParquetError(Box::new(e))))?;
    Ok(buf)
}

async fn list_all(store: &dyn ObjectStore, prefix: &ObjectPath) -> Result<Vec<object_store::ObjectMeta>, SinkError> {
    let mut v: Vec<_> = store.list(Some(prefix)).try_collect().await?;
    v.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(v)
}

/// Remove staging and old-version directories that earlier runs of this load left behind
/// (a run killed before or during publish).
async fn remove_leftovers(store: &Store, parent: &str, base: &str, run_id: &str) -> Result<(), SinkError> {
    let prefixes = [format!(".{base}.weir-staging-"), format!(".{base}.weir-old-")];
    let is_leftover = |name: &str| prefixes.iter().any(|p| name.starts_with(p.as_str()));
    match &store.backend {
        Backend::Local(_) => {
            let Some(dir) = store.local_path(parent) else {
                return Ok(());
            };
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(SinkError::io("reading", &dir, e)),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_leftover(&name) && !name.ends_with(&format!("-{run_id}")) {
                    tracing::info!(path = %entry.path().display(), "removing what an interrupted run left");
                    std::fs::remove_dir_all(entry.path()).map_err(|e| SinkError::io("removing", &entry.path(), e))?;
                }
            }
        }
        _ => {
            let listing = store.object_store.list_with_delimiter(Some(&store.path(parent))).await?;
            for p in listing.common_prefixes {
                let name = p.filename().unwrap_or_default().to_string();
                if is_leftover(&name) && !name.ends_with(&format!("-{run_id}")) {
                    for m in list_all(store.object_store.as_ref(), &p).await? {
                        store.object_store.delete(&m.location).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Publish a staged directory on local disk with an atomic directory swap. The files of the
/// current version listed in `keep` are hard-linked into the new one first.
fn publish_local(staged: &Path, target: &Path, old: &Path, keep: &[String]) -> Result<(), SinkError> {
    std::fs::create_dir_all(staged).map_err(|e| SinkError::io("creating", staged, e))?;
    let exists = match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => return Err(SinkError::NotADirectory(target.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(SinkError::io("reading", target, e)),
    };
    if exists {
        // The new version = the kept files (hard links, no copying) + the new ones.
        for rel in keep {
            let (src, dst) = (target.join(rel), staged.join(rel));
            if dst.exists() {
                continue;
            }
            if let Some(d) = dst.parent() {
                std::fs::create_dir_all(d).map_err(|e| SinkError::io("creating", d, e))?;
            }
            std::fs::hard_link(&src, &dst)
                .or_else(|_| std::fs::copy(&src, &dst).map(|_| ()))
                .map_err(|e| SinkError::io("linking", &dst, e))?;
        }
    }
    sync_tree(staged)?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| SinkError::io("creating", parent, e))?;
    }
    if !exists {
        std::fs::rename(staged, target).map_err(|e| SinkError::io("publishing", target, e))?;
    } else {
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            staged,
            rustix::fs::CWD,
            target,
            rustix::fs::RenameFlags::EXCHANGE,
        ) {
            Ok(()) => {
                // `staged` now holds the previous version.
                std::fs::rename(staged, old).map_err(|e| SinkError::io("renaming", staged, e))?;
            }
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
                // No atomic exchange on this file system: two renames, never a mix of
                // versions, but for an instant the output directory is missing.
                std::fs::rename(target, old).map_err(|e| SinkError::io("renaming", target, e))?;
                std::fs::rename(staged, target).map_err(|e| SinkError::io("publishing", target, e))?;
            }
            Err(e) => return Err(SinkError::io("publishing", target, e.into())),
        }
        if let Some(parent) = target.parent()
            && let Ok(d) = std::fs::File::open(parent)
        {
            let _ = d.sync_all();
        }
        std::fs::remove_dir_all(old).map_err(|e| SinkError::io("removing", old, e))?;
    }
    Ok(())
}

/// fsync every file and directory under `dir`, so that the publish survives a power loss.
/// The files are synced by several threads at once: the device gets their writes together
/// instead of one file's at a time.
fn sync_tree(dir: &Path) -> Result<(), SinkError> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        let d = dirs[i].clone();
        for entry in std::fs::read_dir(&d).map_err(|e| SinkError::io("reading", &d, e))?.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
        i += 1;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = files.len().clamp(1, 8);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), SinkError> {
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(p) = files.get(k) else { return Ok(()) };
                        if let Ok(f) = std::fs::File::open(p) {
                            f.sync_all().map_err(|e| SinkError::io("syncing", p, e))?;
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join().map_err(|_| SinkError::io("syncing", dir, std::io::Error::other("a sync thread panicked")))?
        })
    })?;
    // Directories last, deepest first: their entries point at synced files.
    for d in dirs.iter().rev() {
        if let Ok(f) = std::fs::File::open(d) {
            let _ = f.sync_all();
        }
    }
    Ok(())
}

/// Fail when the output's latest commit is not `base`, the one this run's state was read
/// from, unless every commit since was a recovery (which consumes nothing): an earlier
/// attempt of this load whose publish reported an error but landed, or another writer.
async fn ensure_unmoved(store: &Store, dir: &str, base: u64, latest: u64) -> Result<(), SinkError> {
    if latest == base {
        return Ok(());
    }
    if latest > base {
        let mut only_recoveries = true;
        for seq in base + 1..=latest {
            if commit::read_record(store, dir, seq).await?.mode != "recover" {
                only_recoveries = false;
                break;
            }
        }
        if only_recoveries {
            return Ok(());
        }
    }
    Err(SinkError::Moved { expected: base, found: latest })
}
