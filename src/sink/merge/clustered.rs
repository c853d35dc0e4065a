//! A merge that keeps the output clustered by key: each rewritten file keeps its own key
//! range, so that the next merge can again leave untouched the files its keys cannot reach.
//!
//! The current files are first cut into *pieces*: a file whose row groups hold ascending,
//! disjoint key ranges (any file a merge wrote, or one written in key order) and that holds
//! more than [`PIECE_ROWS`] rows becomes runs of consecutive row groups of up to that many
//! rows; any other file is one piece. The pieces, ordered by their smallest key, are cut into
//! at most [`MAX_GROUPS`] groups of neighbours. Group `g` owns the keys from its smallest key
//! up to the next group's smallest key; keys above every current key make one more group of
//! new files. This run's rows are staged once, straight into one Arrow IPC file per group
//! (per input partition), so no group reads another's rows. Groups whose key ranges overlap
//! form runs ([`Layout::clusters`]); each run that receives rows is rewritten on its own: its
//! current rows whose key is not among this run's keys in its key range, then its shares of
//! this run's rows (minus `delete_when`). A file with a piece in such a run is replaced: its
//! other pieces are copied, a group at a time. Rewrites run two at a time.
//! What one rewrite holds in memory (the hash table of this run's keys in its range) is
//! bounded by the piece, not by how many rows a file holds.
//!
//! When current files overlap in key range (files written by another tool, or by an older
//! weir), the rows a group must drop may belong to a neighbouring group's share: the anti-join
//! reads every share whose key interval meets the group's key range, so nothing is missed;
//! only the clustering is as good as the files were.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{BatchCoalescer, cast};
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
use super::super::writer::{CurrentFile, WriteOutcome, execute_to_parquet, leaf_rows, split_rows};
use super::{
    KeyCheck, KeyHashes, KeyRanges, MergeOutcome, RowGroupKeys, delete_predicate, df_err, read_current, widen_range,
    within,
};
use crate::compile::LoadPlan;

/// At most this many groups of current files (and IPC files per input partition).
pub(super) const MAX_GROUPS: usize = 256;

/// Groups rewritten at the same time.
const CONCURRENT_GROUPS: usize = 2;

/// A file of more rows than this (or than the load's `max_rows_per_file`, when smaller) whose
/// row groups hold ascending, disjoint key ranges is cut into pieces of consecutive row
/// groups of up to this many rows (a row group is never cut): what one rewrite holds in
/// memory (this run's keys in the piece's range) then depends on the piece, not on how many
/// rows the file holds.
pub(super) const PIECE_ROWS: u64 = 2 << 20;

/// The current files in key order, cut into pieces and groups.
pub(super) struct Layout {
    key: String,
    key_index: usize,
    pieces: Vec<Piece>,
    groups: Vec<Group>,
    bounds: Bounds,
}

/// Consecutive row groups of one current file, and the keys they hold.
struct Piece {
    /// Index into the current files.
    file: usize,
    /// The piece is the whole file.
    whole: bool,
    min: ScalarValue,
    max: ScalarValue,
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

/// Key types whose order in Parquet statistics is the order of a filter on them, so that a
/// file may be read a piece at a time by a filter on its key range (floats are not: NaN).
fn cuttable(t: &DataType) -> bool {
    use DataType::*;
    fits_i64(t)
        || matches!(
            t,
            UInt64 | Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | Decimal128(_, _) | Decimal256(_, _)
        )
}

/// `v` as an `i64` (for a key type where [`fits_i64`]).
fn scalar_i64(v: &ScalarValue) -> Option<i64> {
    match cast_scalar(v, &DataType::Int64)? {
        ScalarValue::Int64(Some(x)) => Some(x),
        _ => None,
    }
}

fn less(a: &ScalarValue, b: &ScalarValue) -> bool {
    a.partial_cmp(b) == Some(std::cmp::Ordering::Less)
}

struct Group {
    /// Indexes into the layout's pieces.
    pieces: Vec<usize>,
    min: ScalarValue,
    max: ScalarValue,
}

impl Layout {
    /// The layout of `current`, when every file has statistics of the key (`ranges`, from
    /// [`super::all_key_ranges`]) of the type the rows have; None otherwise.
    /// Files are cut in pieces of up to `piece_rows` rows (see [`PIECE_ROWS`]).
    pub fn new(ranges: &KeyRanges, key: &str, schema: &SchemaRef, piece_rows: u64) -> Option<Layout> {
        let key_index = schema.index_of(key).ok()?;
        let key_type = schema.field(key_index).data_type().clone();
        let mut pieces: Vec<Piece> = Vec::new();
        for (file, r) in ranges.iter().enumerate() {
            let row_groups = r.as_ref()?;
            if row_groups.is_empty() {
                continue; // an empty file: it holds no key, and is kept
            }
            pieces.extend(cut(file, row_groups, &key_type, piece_rows)?);
        }
        if pieces.is_empty() {
            return None;
        }
        pieces.sort_by(|a, b| a.min.partial_cmp(&b.min).unwrap_or(std::cmp::Ordering::Equal));
        let per_group = pieces.len().div_ceil(MAX_GROUPS);
        let order: Vec<usize> = (0..pieces.len()).collect();
        let groups: Vec<Group> = order
            .chunks(per_group)
            .map(|chunk| {
                let mut max = pieces[chunk[0]].max.clone();
                for &p in chunk {
                    if less(&max, &pieces[p].max) {
                        max = pieces[p].max.clone();
                    }
                }
                Group { pieces: chunk.to_vec(), min: pieces[chunk[0]].min.clone(), max }
            })
            .collect();
        let mut max = groups[0].max.clone();
        for g in &groups {
            if less(&max, &g.max) {
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
        Some(Layout { key: key.to_string(), key_index, pieces, groups, bounds })
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

    /// The groups, in runs whose key ranges overlap (a run ends where every group of it ends
    /// below the next group's smallest key). A key a piece may hold is in the share of a
    /// group of the piece's run, so each run is merged on its own, with the keys of its
    /// groups' shares; groups that do not overlap are each a run of their own.
    fn clusters(&self) -> Vec<Cluster> {
        let mut out: Vec<Cluster> = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            match out.last_mut() {
                Some(c) if !less(&c.max, &group.min) => {
                    c.groups.end = g + 1;
                    if less(&c.max, &group.max) {
                        c.max = group.max.clone();
                    }
                }
                _ => out.push(Cluster { groups: g..g + 1, min: group.min.clone(), max: group.max.clone() }),
            }
        }
        out
    }
}

/// Groups whose key ranges overlap, and the range they span.
struct Cluster {
    groups: std::ops::Range<usize>,
    min: ScalarValue,
    max: ScalarValue,
}

/// The pieces of file `file` whose row groups hold `row_groups` keys: the whole file, or, when
/// it has more than `piece_rows` rows in row groups of ascending disjoint key ranges, runs of
/// consecutive row groups of up to `piece_rows` rows. None when a range is unknown.
fn cut(file: usize, row_groups: &[RowGroupKeys], key_type: &DataType, piece_rows: u64) -> Option<Vec<Piece>> {
    let mut bounds: Vec<(ScalarValue, ScalarValue)> = Vec::with_capacity(row_groups.len());
    for rg in row_groups {
        let lo = ScalarValue::try_from_array(&rg.min, 0).ok()?;
        let hi = ScalarValue::try_from_array(&rg.max, 0).ok()?;
        if lo.is_null() || hi.is_null() {
            return None;
        }
        bounds.push((cast_scalar(&lo, key_type)?, cast_scalar(&hi, key_type)?));
    }
    let rows: u64 = row_groups.iter().map(|rg| rg.rows).sum();
    let ascending = bounds.windows(2).all(|w| less(&w[0].1, &w[1].0));
    if rows <= piece_rows || row_groups.len() < 2 || !ascending || !cuttable(key_type) {
        let (min, max) = bounds.into_iter().fold(None, |range, (lo, hi)| Some(widen_range(range, lo, hi)))?;
        return Some(vec![Piece { file, whole: true, min, max }]);
    }
    let mut pieces = Vec::new();
    let (mut start, mut held) = (0usize, 0u64);
    for (i, rg) in row_groups.iter().enumerate() {
        if i > start && held + rg.rows > piece_rows {
            pieces.push((start, i));
            (start, held) = (i, 0);
        }
        held += rg.rows;
    }
    pieces.push((start, row_groups.len()));
    let whole = pieces.len() == 1;
    Some(
        pieces
            .into_iter()
            .map(|(a, b)| Piece { file, whole, min: bounds[a].0.clone(), max: bounds[b - 1].1.clone() })
            .collect(),
    )
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
                for (g, part) in split_rows(&batch, &groups, n).map_err(df_err)? {
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

/// One rewrite: the pieces of a merged run of groups, without the keys of the groups'
/// shares, plus those shares (`cluster`); the pieces of replaced files in a group this run's
/// keys do not reach, copied (no `cluster`, no `shares`); or the share of new keys alone.
struct Job {
    /// The run merged (an index into the clusters).
    cluster: Option<usize>,
    /// The groups whose shares of this run's rows are written.
    shares: std::ops::Range<usize>,
    pieces: Vec<usize>,
}

/// The rows of `pieces` of `layout`: whole files read as they are, the pieces of a cut file
/// by a filter on their key range (its row groups hold disjoint ranges, so the filter selects
/// exactly their rows, and the Parquet reader skips the other row groups by their statistics).
async fn read_pieces(
    ctx: &SessionContext,
    load: &LoadPlan,
    layout: &Layout,
    current: &[CurrentFile],
    pieces: &[usize],
    schema: &SchemaRef,
) -> Result<datafusion::dataframe::DataFrame, SinkError> {
    let mut whole: Vec<CurrentFile> = Vec::new();
    // Per cut file, the key range of its pieces here (consecutive in the file: a group is a
    // run of pieces in key order).
    let mut ranges: std::collections::BTreeMap<usize, (ScalarValue, ScalarValue)> = Default::default();
    for &p in pieces {
        let piece = &layout.pieces[p];
        if piece.whole {
            whole.push(current[piece.file].clone());
            continue;
        }
        ranges
            .entry(piece.file)
            .and_modify(|(lo, hi)| {
                if less(&piece.min, lo) {
                    *lo = piece.min.clone();
                }
                if less(hi, &piece.max) {
                    *hi = piece.max.clone();
                }
            })
            .or_insert_with(|| (piece.min.clone(), piece.max.clone()));
    }
    let mut out = if whole.is_empty() {
        None
    } else {
        Some(read_current(ctx, &super::super::files_of(load)?.store, &whole, schema, &load.partition_by).await?)
    };
    for (file, (lo, hi)) in ranges {
        let df = read_current(
            ctx,
            &super::super::files_of(load)?.store,
            std::slice::from_ref(&current[file]),
            schema,
            &load.partition_by,
        )
        .await?
        .filter(within(&layout.key, &lo, &hi))
        .map_err(df_err)?;
        out = Some(match out {
            None => df,
            Some(o) => o.union(df).map_err(df_err)?,
        });
    }
    out.ok_or_else(|| SinkError::MergeRows("the merge found no current rows to read".into()))
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
            .with_config(
                ctx.copied_config()
                    .set_bool("datafusion.optimizer.repartition_file_scans", false)
                    // Rewrites run two at a time: each writes its files one at a time (each
                    // file's columns are still encoded in parallel), not four, so that a run
                    // of overlapping files rewritten alone buffers one file's row group, not
                    // four (on the layouts benchmark: 1,029 MB peak RSS with four).
                    .set_usize("datafusion.execution.minimum_parallel_output_files", 1),
            )
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
    if let Some(latest) = super::check_rows(&ctx, load, schema, shares.checked).await? {
        shares = stage_shares(&ctx.state(), latest, &scratch.join("latest"), &layout, &load.keys).await?;
    }
    tracing::debug!(ms = clock.elapsed().as_millis() as u64, rows = shares.rows, "merge: this run's rows checked");

    // Which runs of overlapping groups to merge: those receiving rows. A key this run's rows
    // hold that a current piece may hold falls in the share of a group of the piece's run.
    let clusters = layout.clusters();
    let deletes = delete_predicate(state, load, schema)?;
    let merged: Vec<bool> = clusters.iter().map(|c| c.groups.clone().any(|g| !shares.files[g].is_empty())).collect();
    // A file with a piece in a merged run is replaced: its pieces elsewhere are copied as
    // they are.
    let mut replaced = vec![false; current.len()];
    for (c, cluster) in clusters.iter().enumerate() {
        if merged[c] {
            for g in cluster.groups.clone() {
                for &p in &layout.groups[g].pieces {
                    replaced[layout.pieces[p].file] = true;
                }
            }
        }
    }
    let mut jobs: Vec<Job> = Vec::new();
    for (c, cluster) in clusters.iter().enumerate() {
        let pieces = cluster.groups.clone().flat_map(|g| layout.groups[g].pieces.iter().copied());
        if merged[c] {
            jobs.push(Job { cluster: Some(c), shares: cluster.groups.clone(), pieces: pieces.collect() });
        } else {
            // Each group on its own: a copy needs no keys, and smaller jobs write files of
            // one key range each.
            for g in cluster.groups.clone() {
                let copy: Vec<usize> =
                    layout.groups[g].pieces.iter().copied().filter(|&p| replaced[layout.pieces[p].file]).collect();
                if !copy.is_empty() {
                    jobs.push(Job { cluster: None, shares: 0..0, pieces: copy });
                }
            }
        }
    }
    // Kept: the files no merged run reaches, and those that hold no key (empty files belong
    // to no group).
    let keep: Vec<String> = (0..current.len()).filter(|&i| !replaced[i]).map(|i| current[i].rel.clone()).collect();
    let new_keys = layout.groups.len();
    if !shares.files[new_keys].is_empty() {
        jobs.push(Job { cluster: None, shares: new_keys..new_keys + 1, pieces: Vec::new() });
    }
    let rewritten = replaced.iter().filter(|r| **r).count();
    tracing::debug!(
        ms = clock.elapsed().as_millis() as u64,
        runs = clusters.len(),
        merged = merged.iter().filter(|m| **m).count(),
        jobs = jobs.len(),
        "merge: rewrites planned"
    );

    let written: Vec<u64> = futures::stream::iter(jobs.into_iter().map(|job| {
        let (ctx, layout, shares, deletes, options, clusters) = (&ctx, &layout, &shares, &deletes, &options, &clusters);
        async move {
            let mut parts: Vec<datafusion::dataframe::DataFrame> = Vec::new();
            let mut held = None;
            let share_files: Vec<PathBuf> = job.shares.clone().flat_map(|g| shares.files[g].iter().cloned()).collect();
            if !job.pieces.is_empty() {
                let rows = read_pieces(ctx, load, layout, current, &job.pieces, schema).await?;
                match job.cluster.map(|c| &clusters[c]) {
                    None => parts.push(rows),
                    Some(cluster) => {
                        // This run's keys in the run's range.
                        let key_cols: Vec<Expr> = load.keys.iter().map(ident).collect();
                        let keys = ctx
                            .read_table(ipc_table(&share_files, schema)?)
                            .map_err(df_err)?
                            .filter(within(&layout.key, &cluster.min, &cluster.max))
                            .map_err(df_err)?
                            .select(key_cols)
                            .map_err(df_err)?;
                        if let [key] = load.keys.as_slice()
                            && super::keyset::fits(keys.schema().field(0).data_type())
                        {
                            // One integer key: a hash set of the keys, and a filter.
                            let mut set = super::keyset::Keys::default();
                            let mut stream = keys.execute_stream().await.map_err(df_err)?;
                            while let Some(batch) = stream.next().await {
                                super::keyset::add(&mut set, batch.map_err(df_err)?.column(0).as_ref())
                                    .map_err(df_err)?;
                            }
                            // Held until the rewrite ends, out of the query memory pool
                            // (`--memory-limit`) as the join's hash table was.
                            let reservation = datafusion::execution::memory_pool::MemoryConsumer::new("merge keys")
                                .register(&ctx.state().runtime_env().memory_pool);
                            reservation.try_grow(super::keyset::bytes(&set)).map_err(df_err)?;
                            held = Some(reservation);
                            let kept = super::keyset::not_in(set).call(vec![ident(key)]);
                            parts.push(rows.filter(kept).map_err(df_err)?);
                        } else {
                            // Collected (their exact size known, the join's hash table is
                            // built on them and not on the current rows: IPC files have no
                            // statistics), then an anti-join.
                            let key_schema = Arc::new(keys.schema().as_arrow().clone());
                            let batches = keys.collect().await.map_err(df_err)?;
                            let keys = ctx
                                .read_table(Arc::new(MemTable::try_new(key_schema, vec![batches]).map_err(df_err)?))
                                .map_err(df_err)?;
                            parts.push(super::without_keys(rows, keys, &load.keys)?);
                        }
                    }
                }
            }
            if !share_files.is_empty() {
                let mut ups = ctx.read_table(ipc_table(&share_files, schema)?).map_err(df_err)?;
                if let Some(d) = deletes {
                    ups = ups.filter(Expr::Not(Box::new(d.clone()))).map_err(df_err)?;
                }
                parts.push(ups);
            }
            let mut out = parts.remove(0);
            for p in parts {
                out = out.union(p).map_err(df_err)?;
            }
            let w = execute_to_parquet(
                &ctx.state(),
                out.logical_plan().clone(),
                url,
                load.partition_by.clone(),
                options.clone(),
            )
            .await?;
            drop(held);
            Ok::<u64, SinkError>(w.rows)
        }
    }))
    .buffer_unordered(CONCURRENT_GROUPS)
    .try_collect()
    .await?;
    outcome.rows = written.iter().sum();
    tracing::info!(
        files = current.len(),
        pieces = layout.pieces.len(),
        groups = layout.groups.len(),
        rewritten,
        kept = keep.len(),
        rows = shares.rows,
        "merge: {rewritten} of {} files rewritten",
        current.len()
    );
    Ok(MergeOutcome { outcome, keep })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    fn groups(ranges: &[(i64, i64, u64)]) -> Vec<RowGroupKeys> {
        ranges
            .iter()
            .map(|&(lo, hi, rows)| RowGroupKeys {
                min: Arc::new(Int64Array::from(vec![lo])),
                max: Arc::new(Int64Array::from(vec![hi])),
                rows,
            })
            .collect()
    }

    fn shape(pieces: &[Piece]) -> Vec<(bool, i64, i64)> {
        pieces.iter().map(|p| (p.whole, scalar_i64(&p.min).unwrap(), scalar_i64(&p.max).unwrap())).collect()
    }

    #[test]
    fn files_in_key_order_are_cut_into_pieces_of_whole_row_groups() {
        let rgs = groups(&[(0, 9, 10), (10, 19, 10), (20, 29, 10), (30, 39, 10), (40, 44, 5)]);
        let pieces = cut(3, &rgs, &DataType::Int64, 20).unwrap();
        assert_eq!(shape(&pieces), vec![(false, 0, 19), (false, 20, 39), (false, 40, 44)]);
        assert!(pieces.iter().all(|p| p.file == 3));
        // A row group bigger than a piece is a piece of its own.
        let pieces = cut(0, &rgs, &DataType::Int64, 7).unwrap();
        assert_eq!(pieces.len(), 5);
        // Small enough: the whole file.
        assert_eq!(shape(&cut(0, &rgs, &DataType::Int64, 45).unwrap()), vec![(true, 0, 44)]);
    }

    #[test]
    fn files_whose_row_groups_overlap_or_touch_stay_whole() {
        let overlapping = groups(&[(0, 15, 10), (10, 19, 10), (20, 29, 10)]);
        assert_eq!(shape(&cut(0, &overlapping, &DataType::Int64, 10).unwrap()), vec![(true, 0, 29)]);
        // A key may be in both row groups when one ends where the next begins.
        let touching = groups(&[(0, 10, 10), (10, 19, 10)]);
        assert_eq!(shape(&cut(0, &touching, &DataType::Int64, 10).unwrap()), vec![(true, 0, 19)]);
        let descending = groups(&[(20, 29, 10), (0, 9, 10)]);
        assert_eq!(shape(&cut(0, &descending, &DataType::Int64, 10).unwrap()), vec![(true, 0, 29)]);
        // Float keys are never cut (NaN is above every number in statistics, not in a filter).
        let rgs = vec![
            RowGroupKeys {
                min: Arc::new(datafusion::arrow::array::Float64Array::from(vec![0.0])),
                max: Arc::new(datafusion::arrow::array::Float64Array::from(vec![1.0])),
                rows: 10,
            },
            RowGroupKeys {
                min: Arc::new(datafusion::arrow::array::Float64Array::from(vec![2.0])),
                max: Arc::new(datafusion::arrow::array::Float64Array::from(vec![3.0])),
                rows: 10,
            },
        ];
        assert_eq!(cut(0, &rgs, &DataType::Float64, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_layout_groups_pieces_of_files_in_key_order() {
        let schema: SchemaRef =
            Arc::new(datafusion::arrow::datatypes::Schema::new(vec![datafusion::arrow::datatypes::Field::new(
                "id",
                DataType::Int64,
                false,
            )]));
        // File 0: ids 100..199 in two row groups; file 1: ids 0..99 in four; file 2 is empty.
        let ranges: KeyRanges = vec![
            Some(groups(&[(100, 149, 50), (150, 199, 50)])),
            Some(groups(&[(0, 24, 25), (25, 49, 25), (50, 74, 25), (75, 99, 25)])),
            Some(Vec::new()),
        ];
        let layout = Layout::new(&ranges, "id", &schema, 50).unwrap();
        let order: Vec<(usize, i64)> = layout.pieces.iter().map(|p| (p.file, scalar_i64(&p.min).unwrap())).collect();
        assert_eq!(order, vec![(1, 0), (1, 50), (0, 100), (0, 150)]);
        assert_eq!(layout.clusters().len(), 4, "no two pieces overlap");
        let keys: ArrayRef = Arc::new(Int64Array::from(vec![-5, 0, 49, 50, 120, 150, 199, 200]));
        assert_eq!(layout.group_of(&keys).unwrap(), vec![0, 0, 0, 1, 2, 3, 3, 4]);
        // Files that overlap: runs of groups.
        let ranges: KeyRanges = vec![
            Some(groups(&[(0, 100, 10)])),
            Some(groups(&[(50, 150, 10)])),
            Some(groups(&[(200, 210, 10)])),
            Some(groups(&[(205, 300, 10)])),
            Some(groups(&[(400, 500, 10)])),
        ];
        let layout = Layout::new(&ranges, "id", &schema, 50).unwrap();
        let runs: Vec<(std::ops::Range<usize>, i64, i64)> = layout
            .clusters()
            .into_iter()
            .map(|c| (c.groups, scalar_i64(&c.min).unwrap(), scalar_i64(&c.max).unwrap()))
            .collect();
        assert_eq!(runs, vec![(0..2, 0, 150), (2..4, 200, 300), (4..5, 400, 500)]);
        // Unknown statistics: no layout.
        assert!(Layout::new(&vec![None], "id", &schema, 50).is_none());
    }
}
