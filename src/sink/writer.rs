//! Writing Parquet, shared by the sinks and by merge: running a plan into Parquet files (with
//! partition directories), the writer's options and what it learns from the files it replaces,
//! reading an output's current files and their footers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, UInt32Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::config::TableParquetOptions;
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::{ExecutionPlan, collect};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

use super::{SinkError, commit};
use crate::spec::{OutputCompression, OutputFormat};
use crate::storage::Store;

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
    if !partition_by.is_empty() {
        return super::partitioned::write(state, plan, url, &partition_by, options).await;
    }
    let file_type = format_as_file_type(Arc::new(ParquetFormatFactory::new_with_options(options)));
    let copy = LogicalPlanBuilder::copy_to(plan, url.to_string(), file_type, HashMap::new(), vec![])?.build()?;
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

/// `batch`'s rows by group (`group[i]` is row `i`'s, below `groups`): each non-empty group
/// and its rows, in their order. The rows are put in group order by a counting sort and taken
/// once; each group's rows are a slice of that (a batch in one group is returned as it is).
pub(super) fn split_rows(
    batch: &RecordBatch,
    group: &[usize],
    groups: usize,
) -> datafusion::error::Result<Vec<(usize, RecordBatch)>> {
    let mut starts = vec![0usize; groups + 1];
    for &g in group {
        starts[g + 1] += 1;
    }
    for g in 0..groups {
        starts[g + 1] += starts[g];
    }
    let ordered = if starts.windows(2).any(|w| w[1] - w[0] == batch.num_rows()) {
        batch.clone()
    } else {
        let mut next = starts.clone();
        let mut order = vec![0u32; group.len()];
        for (i, &g) in group.iter().enumerate() {
            order[next[g]] = i as u32;
            next[g] += 1;
        }
        datafusion::arrow::compute::take_record_batch(batch, &UInt32Array::from(order))?
    };
    Ok((0..groups)
        .filter(|&g| starts[g + 1] > starts[g])
        .map(|g| (g, ordered.slice(starts[g], starts[g + 1] - starts[g])))
        .collect())
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

/// A Parquet file with `schema` and no rows.
pub(super) fn empty_parquet(schema: &SchemaRef) -> Result<Vec<u8>, SinkError> {
    let mut buf = Vec::new();
    let writer = ArrowWriter::try_new(&mut buf, schema.clone(), None)
        .map_err(|e| SinkError::DataFusion(datafusion::error::DataFusionError::ParquetError(Box::new(e))))?;
    writer.close().map_err(|e| SinkError::DataFusion(datafusion::error::DataFusionError::ParquetError(Box::new(e))))?;
    Ok(buf)
}

pub(super) async fn list_all(
    store: &dyn ObjectStore,
    prefix: &ObjectPath,
) -> Result<Vec<object_store::ObjectMeta>, SinkError> {
    let mut v: Vec<_> = store.list(Some(prefix)).try_collect().await?;
    v.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int32Array};
    use datafusion::arrow::datatypes::{Field, Int32Type, Schema};

    #[test]
    fn split_rows_keeps_each_groups_rows_in_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![10, 11, 12, 13, 14]))]).unwrap();
        let parts = split_rows(&batch, &[2, 0, 2, 0, 2], 3).unwrap();
        let got: Vec<(usize, Vec<i32>)> =
            parts.iter().map(|(g, b)| (*g, b.column(0).as_primitive::<Int32Type>().values().to_vec())).collect();
        assert_eq!(got, vec![(0, vec![11, 13]), (2, vec![10, 12, 14])]);
        let one = split_rows(&batch, &[1; 5], 3).unwrap();
        assert_eq!((one.len(), one[0].0, one[0].1.num_rows()), (1, 1, 5));
    }
}
