//! A merge that keeps the output clustered by key: each rewritten file keeps its own key
//! range, so that the next merge can again leave untouched the files its keys cannot reach.
//!
//! The current files, ordered by the smallest key they hold, are cut into at most
//! [`MAX_GROUPS`] groups of neighbouring files. Group `g` owns the keys from its smallest key
//! up to the next group's smallest key; keys above every current key make one more group of
//! new files. This run's rows are staged once, straight into one Arrow IPC file per group
//! (per input partition), so no group reads another's rows. Then each group that receives
//! rows, or whose row-group statistics say it may hold one of this run's keys, is rewritten on
//! its own: its current rows whose key is not among this run's keys in its key range, then
//! its share of this run's rows (minus `delete_when`). Groups are rewritten two at a time.
//!
//! When current files overlap in key range (files written by another tool, or by an older
//! weir), the rows a group must drop may belong to a neighbouring group's share: the anti-join
//! reads every share whose key interval meets the group's key range, so nothing is missed;
//! only the clustering is as good as the files were.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{BatchCoalescer, cast, take_record_batch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::common::config::TableParquetOptions;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::{SessionContext, ident};
use futures::{StreamExt, TryStreamExt};

use super::super::SinkError;
use super::super::writer::{CurrentFile, WriteOutcome, execute_to_parquet, leaf_rows};
use super::{
    KeyCheck, KeyHashes, KeyRanges, MergeOutcome, delete_predicate, df_err, groups_range, hit_files, read_current,
};
use crate::compile::LoadPlan;

/// At most this many groups of current files (and IPC files per input partition).
pub(super) const MAX_GROUPS: usize = 256;

/// Groups rewritten at the same time.
const CONCURRENT_GROUPS: usize = 2;

/// The current files in key order, cut into groups.
pub(super) struct Layout {
    key: String,
    key_index: usize,
    groups: Vec<Group>,
    bounds: Bounds,
}

/// The smallest key of groups 1.. (the bounds between groups), and the greatest current key
/// (keys above it go to the group of new files).
enum Bounds {
    /// Integer, date and timestamp keys, as 64-bit integers.
    Int { bounds: Vec<i64>, max: i64 },
    /// Any other key, in Arrow's row format (ordered as the values).
    Rows { converter: RowConverter, bounds: Vec<OwnedRow>, max: OwnedRow },
}

/// Key types whose values all fit, in order, in an `i64`.
fn fits_i64(t: &DataType) -> bool {
    use DataType::*;
    matches!(t, Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | Date32 | Date64 | Timestamp(_, _))
}

/// `v` as an `i64` (for a key type where [`fits_i64`]).
fn scalar_i64(v: &ScalarValue) -> Option<i64> {
    match cast_scalar(v, &DataType::Int64)? {
        ScalarValue::Int64(Some(x)) => Some(x),
        _ => None,
    }
}

struct Group {
    /// Indexes into the current files.
    files: Vec<usize>,
    min: ScalarValue,
    max: ScalarValue,
}

impl Layout {
    /// The layout of `current`, when every file has statistics of the key (`ranges`, from
    /// [`super::all_key_ranges`]) of the type the rows have; None otherwise.
    pub fn new(current: &[CurrentFile], ranges: &KeyRanges, key: &str, schema: &SchemaRef) -> Option<Layout> {
        let key_index = schema.index_of(key).ok()?;
        let key_type = schema.field(key_index).data_type().clone();
        let mut files: Vec<(usize, ScalarValue, ScalarValue)> = Vec::with_capacity(current.len());
        for (i, r) in ranges.iter().enumerate() {
            let groups = r.as_ref()?;
            if groups.is_empty() {
                continue; // an empty file: it holds no key, and is kept
            }
            let (lo, hi) = groups_range(groups)?;
            files.push((i, cast_scalar(&lo, &key_type)?, cast_scalar(&hi, &key_type)?));
        }
        if files.is_empty() {
            return None;
        }
        files.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
        let per_group = files.len().div_ceil(MAX_GROUPS);
        let groups: Vec<Group> = files
            .chunks(per_group)
            .map(|chunk| {
                let mut max = chunk[0].2.clone();
                for (_, _, hi) in chunk {
                    if hi.partial_cmp(&max) == Some(std::cmp::Ordering::Greater) {
                        max = hi.clone();
                    }
                }
                Group { files: chunk.iter().map(|(i, _, _)| *i).collect(), min: chunk[0].1.clone(), max }
            })
            .collect();
        let mut max = groups[0].max.clone();
        for g in &groups {
            if g.max.partial_cmp(&max) == Some(std::cmp::Ordering::Greater) {
                max = g.max.clone();
            }
        }
        let bounds = if fits_i64(&key_type) {
            Bounds::Int {
                bounds: groups[1..].iter().map(|g| scalar_i64(&g.min)).collect::<Option<Vec<_>>>()?,
                max: scalar_i64(&max)?,
            }
        } else {
            let converter = RowConverter::new(vec![SortField::new(key_type)]).ok()?;
            let bounds = groups[1..].iter().map(|g| to_row(&converter, &g.min)).collect::<Option<Vec<_>>>()?;
            let max = to_row(&converter, &max)?;
            Bounds::Rows { converter, bounds, max }
        };
        Some(Layout { key: key.to_string(), key_index, groups, bounds })
    }

    /// The group of each key of `keys`: `groups.len()` for keys above every current key
    /// (a NULL key, refused later, goes to group 0).
    fn group_of(&self, keys: &ArrayRef) -> Result<Vec<usize>, SinkError> {
        let new = self.groups.len();
        match &self.bounds {
            Bounds::Int { bounds, max } => {
                let ints = cast(keys, &DataType::Int64).map_err(|e| df_err(e.into()))?;
                let ints = ints.as_primitive::<Int64Type>();
                Ok(ints
                    .iter()
                    .map(|v| match v {
                        None => 0,
                        Some(v) if v > *max => new,
                        Some(v) => bounds.partition_point(|b| *b <= v),
                    })
                    .collect())
            }
            Bounds::Rows { converter, bounds, max } => {
                let rows = converter.convert_columns(std::slice::from_ref(keys)).map_err(|e| df_err(e.into()))?;
                Ok(rows
                    .iter()
                    .map(|r| if r > max.row() { new } else { bounds.partition_point(|b| b.row() <= r) })
                    .collect())
            }
        }
    }

    /// Whether each group's key range ends below the next group's smallest key. Then a key
    /// that a group's files may hold falls in that group's own share, and the shares alone
    /// say which groups to rewrite.
    fn disjoint(&self) -> bool {
        self.groups.windows(2).all(|w| w[0].max.partial_cmp(&w[1].min) == Some(std::cmp::Ordering::Less))
    }

    /// The group holding the key `v`.
    fn group_of_scalar(&self, v: &ScalarValue) -> Result<usize, SinkError> {
        let array = v.to_array().map_err(df_err)?;
        Ok(self.group_of(&array)?[0])
    }
}

fn cast_scalar(v: &ScalarValue, to: &DataType) -> Option<ScalarValue> {
    if &v.data_type() == to {
        return Some(v.clone());
    }
    let array = cast(&v.to_array().ok()?, to).ok()?;
    let out = ScalarValue::try_from_array(&array, 0).ok()?;
    (!out.is_null()).then_some(out)
}

fn to_row(converter: &RowConverter, v: &ScalarValue) -> Option<OwnedRow> {
    let rows = converter.convert_columns(&[v.to_array().ok()?]).ok()?;
    Some(rows.row(0).owned())
}

/// An IPC file of one group's rows, written in batches of up to [`BATCH_ROWS`] rows.
struct GroupWriter {
    path: PathBuf,
    writer: FileWriter<std::io::BufWriter<std::fs::File>>,
    coalescer: BatchCoalescer,
}

const BATCH_ROWS: usize = 8192;

/// Rows the coalescers of all the group writers of one staging may buffer (a coalescer
/// allocates its whole batch up front): with many groups, each writes smaller batches.
const BUFFERED_ROWS: usize = 1 << 20;

/// The batch size of each of `writers` group writers.
fn batch_rows(writers: usize) -> usize {
    (BUFFERED_ROWS / writers.max(1)).clamp(1024, BATCH_ROWS)
}

impl GroupWriter {
    fn create(path: PathBuf, schema: &SchemaRef, batch_rows: usize) -> Result<GroupWriter, SinkError> {
        let file = std::fs::File::create(&path).map_err(|e| SinkError::io("creating", &path, e))?;
        // Up to 257 groups × input partitions are open at once: a small buffer each (the
        // coalescer already hands the writer whole batches).
        let writer = FileWriter::try_new(std::io::BufWriter::with_capacity(64 << 10, file), schema)
            .map_err(|e| df_err(e.into()))?;
        Ok(GroupWriter { path, writer, coalescer: BatchCoalescer::new(schema.clone(), batch_rows) })
    }

    fn push(&mut self, batch: RecordBatch) -> Result<(), SinkError> {
        self.coalescer.push_batch(batch).map_err(|e| df_err(e.into()))?;
        self.drain()
    }

    fn drain(&mut self) -> Result<(), SinkError> {
        while let Some(b) = self.coalescer.next_completed_batch() {
            self.writer.write(&b).map_err(|e| df_err(e.into()))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<PathBuf, SinkError> {
        self.coalescer.finish_buffered_batch().map_err(|e| df_err(e.into()))?;
        self.drain()?;
        self.writer.finish().map_err(|e| df_err(e.into()))?;
        Ok(self.path)
    }
}

/// This run's rows, staged per group.
struct Shares {
    /// Per group (and the group of new keys last), its IPC files.
    files: Vec<Vec<PathBuf>>,
    rows_in: u64,
    rows: u64,
    /// The check of the keys.
    checked: KeyCheck,
}

/// Run `plan` and write its rows under `dir`, one IPC file per group and input partition,
/// checking the `keys` columns as they pass (see [`KeyHashes`]).
async fn stage_shares(
    state: &SessionState,
    plan: LogicalPlan,
    dir: &Path,
    layout: &Arc<Layout>,
    keys: &[String],
) -> Result<Shares, SinkError> {
    let physical = state.create_physical_plan(&plan).await.map_err(df_err)?;
    let schema = physical.schema();
    let key_indexes: Arc<Vec<usize>> =
        Arc::new(keys.iter().map(|k| schema.index_of(k)).collect::<Result<Vec<_>, _>>().map_err(|e| df_err(e.into()))?);
    std::fs::create_dir_all(dir).map_err(|e| SinkError::io("creating", dir, e))?;
    let n = layout.groups.len() + 1;
    let partitions = physical.properties().output_partitioning().partition_count();
    let group_batch = batch_rows(n * partitions);
    let mut tasks = Vec::new();
    for p in 0..partitions {
        let mut stream = physical.execute(p, state.task_ctx()).map_err(df_err)?;
        let (layout, schema, dir, key_indexes) =
            (layout.clone(), schema.clone(), dir.to_path_buf(), key_indexes.clone());
        tasks.push(tokio::spawn(async move {
            let mut writers: Vec<Option<GroupWriter>> = (0..n).map(|_| None).collect();
            let mut hashes = KeyHashes::new(0);
            let mut rows = 0u64;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(df_err)?;
                if batch.num_rows() == 0 {
                    continue;
                }
                rows += batch.num_rows() as u64;
                let cols: Vec<ArrayRef> = key_indexes.iter().map(|&i| batch.column(i).clone()).collect();
                hashes.add(&cols)?;
                let groups = layout.group_of(batch.column(layout.key_index))?;
                let mut indexes: Vec<Vec<u32>> = vec![Vec::new(); n];
                for (i, g) in groups.into_iter().enumerate() {
                    indexes[g].push(i as u32);
                }
                for (g, idx) in indexes.into_iter().enumerate() {
                    if idx.is_empty() {
                        continue;
                    }
                    let part = if idx.len() == batch.num_rows() {
                        batch.clone()
                    } else {
                        take_record_batch(&batch, &UInt32Array::from(idx)).map_err(|e| df_err(e.into()))?
                    };
                    let w = match &mut writers[g] {
                        Some(w) => w,
                        slot => slot.insert(GroupWriter::create(
                            dir.join(format!("g{g:04}-p{p:03}.arrow")),
                            &schema,
                            group_batch,
                        )?),
                    };
                    w.push(part)?;
                }
            }
            let mut files: Vec<(usize, PathBuf)> = Vec::new();
            for (g, w) in writers.into_iter().enumerate() {
                if let Some(w) = w {
                    files.push((g, w.finish()?));
                }
            }
            Ok::<_, SinkError>((rows, files, hashes))
        }));
    }
    let mut files_of = vec![Vec::new(); n];
    let (mut rows_all, mut all_hashes) = (0u64, Vec::new());
    for t in tasks {
        let (rows, files, hashes) =
            t.await.map_err(|source| SinkError::Worker { what: "staging this run's rows", source })??;
        rows_all += rows;
        for (g, path) in files {
            files_of[g].push(path);
        }
        all_hashes.push(hashes);
    }
    Ok(Shares {
        files: files_of,
        rows_in: leaf_rows(&physical),
        rows: rows_all,
        checked: KeyHashes::check(all_hashes).await?,
    })
}

/// The rows of IPC `files` (with `schema`) as a table.
fn ipc_table(files: &[PathBuf], schema: &SchemaRef) -> Result<Arc<ListingTable>, SinkError> {
    let urls = files
        .iter()
        .map(|f| {
            let abs = std::path::absolute(f).unwrap_or_else(|_| f.clone());
            ListingTableUrl::parse(format!("file://{}", abs.display()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(df_err)?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(ListingOptions::new(Arc::new(ArrowFormat)).with_file_extension(".arrow"))
        .with_schema(schema.clone());
    Ok(Arc::new(ListingTable::try_new(config).map_err(df_err)?))
}

/// The clustered merge (see the module docs) of `plan`'s rows into `current`, written under
/// `url`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stage(
    state: &SessionState,
    plan: LogicalPlan,
    schema: &SchemaRef,
    load: &LoadPlan,
    current: &[CurrentFile],
    ranges: &KeyRanges,
    layout: Layout,
    url: &str,
    options: TableParquetOptions,
    scratch: &Path,
) -> Result<MergeOutcome, SinkError> {
    let layout = Arc::new(layout);
    let ctx = super::merge_context(state);
    // A scan of an IPC file split in byte ranges reads its whole range into memory: the
    // staged files are read whole, one stream each (there is one per input partition).
    let ctx = SessionContext::new_with_state(
        datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state())
            .with_config(ctx.copied_config().set_bool("datafusion.optimizer.repartition_file_scans", false))
            .build(),
    );
    let clock = std::time::Instant::now();
    let mut shares = stage_shares(state, plan, &scratch.join("rows"), &layout, &load.keys).await?;
    tracing::debug!(
        ms = clock.elapsed().as_millis() as u64,
        rows = shares.rows,
        "merge: this run's rows staged by key range"
    );
    let mut outcome = WriteOutcome { rows_in: shares.rows_in, ..Default::default() };
    let keep_all = || current.iter().map(|f| f.rel.clone()).collect::<Vec<_>>();
    if shares.rows == 0 {
        return Ok(MergeOutcome { outcome, keep: keep_all() });
    }
    let all: Vec<PathBuf> = shares.files.iter().flatten().cloned().collect();
    ctx.register_table("__rows", ipc_table(&all, schema)?).map_err(df_err)?;
    let mut source = "__rows";
    if let Some(latest) = super::check_rows(&ctx, load, schema, shares.checked).await? {
        shares = stage_shares(&ctx.state(), latest, &scratch.join("latest"), &layout, &load.keys).await?;
        let all: Vec<PathBuf> = shares.files.iter().flatten().cloned().collect();
        ctx.register_table("__latest", ipc_table(&all, schema)?).map_err(df_err)?;
        source = "__latest";
    }
    tracing::debug!(ms = clock.elapsed().as_millis() as u64, rows = shares.rows, "merge: this run's rows checked");

    // Which groups to rewrite: those receiving rows, and those whose files may hold a key of
    // this run (possible only when groups overlap in key range).
    let hit = if layout.disjoint() {
        vec![false; current.len()]
    } else {
        hit_files(&ctx, ranges, source, &layout.key).await?
    };
    tracing::debug!(ms = clock.elapsed().as_millis() as u64, "merge: groups that may hold this run's keys found");
    let deletes = delete_predicate(state, load, schema)?;
    let mut jobs = Vec::new();
    let mut keep = Vec::new();
    for (g, group) in layout.groups.iter().enumerate() {
        if shares.files[g].is_empty() && !group.files.iter().any(|&i| hit[i]) {
            keep.extend(group.files.iter().map(|&i| current[i].rel.clone()));
            continue;
        }
        jobs.push(g);
    }
    // Files that hold no key (empty files) belong to no group: kept.
    let grouped: std::collections::HashSet<usize> =
        layout.groups.iter().flat_map(|g| g.files.iter().copied()).collect();
    keep.extend((0..current.len()).filter(|i| !grouped.contains(i)).map(|i| current[i].rel.clone()));
    let new_keys = layout.groups.len();
    if !shares.files[new_keys].is_empty() {
        jobs.push(new_keys);
    }
    let rewritten = jobs.iter().filter(|&&g| g < new_keys).count();

    let written: Vec<u64> = futures::stream::iter(jobs.into_iter().map(|g| {
        let (ctx, layout, shares, deletes, options) = (&ctx, &layout, &shares, &deletes, &options);
        async move {
            let mut parts: Vec<datafusion::dataframe::DataFrame> = Vec::new();
            if let Some(group) = layout.groups.get(g) {
                let files: Vec<CurrentFile> = group.files.iter().map(|&i| current[i].clone()).collect();
                let rows = read_current(ctx, &load.store, &files, schema, &[]).await?;
                // This run's keys that can match a row of the group: the shares whose key
                // interval meets the group's key range, within that range.
                let (first, last) = (layout.group_of_scalar(&group.min)?, layout.group_of_scalar(&group.max)?);
                let key_files: Vec<PathBuf> =
                    (first..=last.min(new_keys - 1)).flat_map(|s| shares.files[s].iter().cloned()).collect();
                if key_files.is_empty() {
                    parts.push(rows);
                } else {
                    // Collected (a group's share of keys is small): with their exact size
                    // known, the hash table is built on them and not on the group's rows (IPC
                    // files have no statistics).
                    let key_cols: Vec<Expr> = load.keys.iter().map(ident).collect();
                    let keys = ctx
                        .read_table(ipc_table(&key_files, schema)?)
                        .map_err(df_err)?
                        .filter(super::within(&layout.key, &group.min, &group.max))
                        .map_err(df_err)?
                        .select(key_cols)
                        .map_err(df_err)?;
                    let key_schema = Arc::new(keys.schema().as_arrow().clone());
                    let batches = keys.collect().await.map_err(df_err)?;
                    let keys = ctx
                        .read_table(Arc::new(MemTable::try_new(key_schema, vec![batches]).map_err(df_err)?))
                        .map_err(df_err)?;
                    parts.push(super::without_keys(rows, keys, &load.keys)?);
                }
            }
            if !shares.files[g].is_empty() {
                let mut ups = ctx.read_table(ipc_table(&shares.files[g], schema)?).map_err(df_err)?;
                if let Some(d) = deletes {
                    ups = ups.filter(Expr::Not(Box::new(d.clone()))).map_err(df_err)?;
                }
                parts.push(ups);
            }
            let mut out = parts.remove(0);
            for p in parts {
                out = out.union(p).map_err(df_err)?;
            }
            let w = execute_to_parquet(&ctx.state(), out.logical_plan().clone(), url, vec![], options.clone()).await?;
            Ok::<u64, SinkError>(w.rows)
        }
    }))
    .buffer_unordered(CONCURRENT_GROUPS)
    .try_collect()
    .await?;
    outcome.rows = written.iter().sum();
    tracing::info!(
        files = current.len(),
        groups = layout.groups.len(),
        rewritten,
        kept = keep.len(),
        rows = shares.rows,
        "merge: {rewritten} of {} groups of files rewritten",
        layout.groups.len()
    );
    Ok(MergeOutcome { outcome, keep })
}
