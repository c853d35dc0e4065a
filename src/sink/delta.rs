//! Delta Lake output (`format: delta`) through `deltalake`.
//!
//! Each load is one Delta commit, made by `deltalake`'s own operations: `append` and
//! `overwrite` are writes, `replace_partitions` is an overwrite with a replace-where predicate
//! naming exactly the partitions present in this run's rows, and `merge` is a Delta MERGE
//! (matched and not deleted: update; matched and `delete_when`: delete; not matched: insert).
//! Readers see a new version only when its log entry `_delta_log/<version>.json` exists;
//! the data files written before it are invisible until then (a crash leaves them unreferenced,
//! and `VACUUM` removes them).
//!
//! **Exactly once.** The commit carries weir's commit record (the load's whole consumed state,
//! see `commit`) in its `commitInfo` under the key `weir`, and a Delta application transaction
//! `weir:<pipeline>:<load>` whose version is the record's sequence number. Both are in the one
//! log entry the commit writes, so data and consumption are committed together. At the start
//! of a run the transaction version says which commit is the latest (it survives Delta
//! checkpoints); the record is read from that commit's log entry.

use std::ops::Range;
use std::sync::{Arc, Once};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{Column, ScalarValue};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, col, lit};
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::{SchemaMode, WriteBuilder};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::LoadRequest;
use super::SinkError;
use super::commit::{self, CommitRecord, LoadState};
use super::writer::{WriteOutcome, execute_to_parquet, staging_parquet_options};
use crate::compile::{FilesTarget, LoadPlan};
use crate::failpoint;
use crate::spec::{LoadMode, OutputCompression};
use crate::storage::Store;

/// The key of weir's record in a Delta commit's `commitInfo`.
pub const RECORD_KEY: &str = "weir";

/// The Delta application id of a load's commits.
pub fn app_id(pipeline: &str, load: &str) -> String {
    format!("weir:{pipeline}:{load}")
}

fn delta_err(e: DeltaTableError) -> SinkError {
    SinkError::Delta(e)
}

/// Delta log stores for the object-store schemes weir uses (`deltalake` itself registers
/// only `file` and `memory` without its cloud features): the default log store, which commits
/// with a conditional put (`PutMode::Create`).
fn register_log_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        struct Default;
        impl deltalake::logstore::LogStoreFactory for Default {
            fn with_options(
                &self,
                prefixed_store: deltalake::logstore::ObjectStoreRef,
                root_store: deltalake::logstore::ObjectStoreRef,
                location: &url::Url,
                options: &deltalake::logstore::StorageConfig,
            ) -> deltalake::DeltaResult<deltalake::logstore::LogStoreRef> {
                Ok(deltalake::logstore::default_logstore(prefixed_store, root_store, location, options))
            }
        }
        let registry = deltalake::logstore::logstore_factories();
        for scheme in ["s3://", "s3a://", "gs://", "az://", "azure://", "abfs://", "abfss://", "adl://"] {
            if let Ok(u) = url::Url::parse(scheme)
                && !registry.contains_key(&u)
            {
                registry.insert(u, Arc::new(Default));
            }
        }
    });
}

/// The table at `rel` in `store`, not loaded. Commits through it reach the fail points
/// `after_data_files` and `before_publish` of `task` just before the log entry is written.
fn table(store: &Store, rel: &str, task: Option<&str>) -> Result<DeltaTable, SinkError> {
    register_log_stores();
    let url = store.url_of(&store.path(rel), true);
    let url = url::Url::parse(&url).map_err(|source| SinkError::DeltaUrl { url: url.clone(), source })?;
    let object_store: Arc<dyn ObjectStore> = match task {
        Some(task) => Arc::new(Gated { inner: store.object_store.clone(), task: task.to_string() }),
        None => store.object_store.clone(),
    };
    DeltaTableBuilder::from_url(url.clone())
        .map_err(delta_err)?
        .with_storage_backend(object_store, url)
        .build()
        .map_err(delta_err)
}

/// The Delta table at `rel`, loaded, or `None` when there is none.
pub async fn open(store: &Store, rel: &str) -> Result<Option<DeltaTable>, SinkError> {
    open_for(store, rel, None).await
}

async fn open_for(store: &Store, rel: &str, task: Option<&str>) -> Result<Option<DeltaTable>, SinkError> {
    let log = store.path(&format!("{rel}/_delta_log"));
    let mut listing = store.object_store.list(Some(&log));
    match futures::StreamExt::next(&mut listing).await {
        None => return Ok(None),
        Some(Err(object_store::Error::NotFound { .. })) => return Ok(None),
        Some(Err(e)) => return Err(e.into()),
        Some(Ok(_)) => {}
    }
    let mut t = table(store, rel, task)?;
    match t.load().await {
        Ok(()) => Ok(Some(t)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(delta_err(e)),
    }
}

/// The sequence number of the latest commit of load `load` to the table (0: none).
pub async fn latest_seq(store: &Store, rel: &str, pipeline: &str, load: &str) -> Result<u64, SinkError> {
    match open(store, rel).await? {
        None => Ok(0),
        Some(t) => txn_version(&t, pipeline, load).await,
    }
}

async fn txn_version(t: &DeltaTable, pipeline: &str, load: &str) -> Result<u64, SinkError> {
    let state = t.snapshot().map_err(delta_err)?;
    let v = state.transaction_version(t.log_store().as_ref(), app_id(pipeline, load)).await.map_err(delta_err)?;
    Ok(v.map(|v| v.max(0) as u64).unwrap_or(0))
}

/// What the table says load `load` has consumed: the record of its latest commit.
pub async fn read_state(store: &Store, rel: &str, pipeline: &str, load: &str) -> Result<LoadState, SinkError> {
    match open(store, rel).await? {
        None => Ok(LoadState::default()),
        Some(t) => state_of(store, rel, &t, pipeline, load).await,
    }
}

async fn state_of(
    store: &Store,
    rel: &str,
    t: &DeltaTable,
    pipeline: &str,
    load: &str,
) -> Result<LoadState, SinkError> {
    let seq = txn_version(t, pipeline, load).await?;
    if seq == 0 {
        return Ok(LoadState::default());
    }
    let Some(version) = t.version() else { return Ok(LoadState::default()) };
    // Newest first: the commit holding this load's record with that sequence number.
    for v in (0..=version).rev() {
        let entry = match read_log_entry(store, rel, v).await {
            Ok(e) => e,
            Err(SinkError::ObjectStore(object_store::Error::NotFound { .. })) => break,
            Err(e) => return Err(e),
        };
        if let Some(r) = entry.record
            && r.pipeline == pipeline
            && r.load == load
        {
            if r.seq != seq {
                return Err(SinkError::Record {
                    path: log_entry_display(store, rel, v),
                    reason: format!(
                        "its weir record is commit {} but the table's transaction `{}` is at {seq}",
                        r.seq,
                        app_id(pipeline, load)
                    ),
                });
            }
            let mut s = LoadState::default();
            s.apply(&r);
            return Ok(s);
        }
    }
    Err(SinkError::Record {
        path: format!("{}/{rel}/_delta_log", store.display_url),
        reason: format!(
            "the table says load `{load}` committed {seq} times, but the log entry with its latest record is gone (removed by log retention?); run with --full-refresh to rebuild the table and its state"
        ),
    })
}

/// One log entry of a table: weir's record (if any) and the files it added.
#[derive(Debug, Default)]
struct LogEntry {
    record: Option<CommitRecord>,
    added_files: u64,
    added_bytes: u64,
    added_rows: u64,
}

fn log_entry_display(store: &Store, rel: &str, version: u64) -> String {
    format!("{}/{rel}/_delta_log/{version:020}.json", store.display_url)
}

async fn read_log_entry(store: &Store, rel: &str, version: u64) -> Result<LogEntry, SinkError> {
    let path = store.path(&format!("{rel}/_delta_log/{version:020}.json"));
    let bytes = store.object_store.get(&path).await?.bytes().await?;
    let bad = |reason: String| SinkError::Record { path: log_entry_display(store, rel, version), reason };
    let mut out = LogEntry::default();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
        let action: serde_json::Value = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
        if let Some(info) = action.get("commitInfo")
            && let Some(r) = info.get(RECORD_KEY)
        {
            let r: CommitRecord = serde_json::from_value(r.clone()).map_err(|e| bad(e.to_string()))?;
            if r.weir_commit > commit::FORMAT_VERSION {
                return Err(bad(format!(
                    "its weir record has format {}, newer than this weir understands ({}); upgrade weir",
                    r.weir_commit,
                    commit::FORMAT_VERSION
                )));
            }
            out.record = Some(r);
        }
        if let Some(add) = action.get("add") {
            out.added_files += 1;
            out.added_bytes += add.get("size").and_then(serde_json::Value::as_u64).unwrap_or(0);
            let rows = add
                .get("stats")
                .and_then(serde_json::Value::as_str)
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|s| s.get("numRecords").and_then(serde_json::Value::as_u64));
            out.added_rows += rows.unwrap_or(0);
        }
    }
    Ok(out)
}

fn writer_properties(load: &FilesTarget) -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::{Compression, GzipLevel, ZstdLevel};
    let compression = match load.compression {
        OutputCompression::Zstd => {
            Compression::ZSTD(ZstdLevel::try_new(load.compression_level as i32).unwrap_or_default())
        }
        OutputCompression::Snappy => Compression::SNAPPY,
        OutputCompression::Gzip => Compression::GZIP(GzipLevel::try_new(load.compression_level).unwrap_or_default()),
        OutputCompression::Lz4 => Compression::LZ4_RAW,
        OutputCompression::None => Compression::UNCOMPRESSED,
    };
    deltalake::parquet::file::properties::WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(load.row_group_rows))
        .set_created_by(format!("weir {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Commit `plan`'s rows to the Delta table of `req.load`, with the load's record. Cancelling
/// this before the log entry is written leaves the table as it was.
pub async fn commit_load(
    state: &SessionState,
    plan: LogicalPlan,
    schema: SchemaRef,
    mut req: LoadRequest<'_>,
) -> Result<(WriteOutcome, CommitRecord), SinkError> {
    let load = req.load;
    let out = super::files_of(load)?;
    let store = &out.store;
    let rel = out.path.as_str();
    let existing = open_for(store, rel, Some(req.task)).await?;
    if existing.is_none() {
        refuse_non_delta_files(store, rel).await?;
    }
    // The record's sequence number is the table's transaction version (`state_of` checks it).
    let current = match &existing {
        Some(t) => state_of(store, rel, t, req.pipeline, req.task).await?,
        None => LoadState::default(),
    };
    let latest = current.seq;
    let seq = latest + 1;
    let builds_on = existing.is_some() && !req.full_refresh && load.mode != LoadMode::Overwrite;
    if builds_on && let Some(t) = &existing {
        check_same_columns(store, rel, t, &schema, &load.partition_by)?;
    }
    // The record holds the whole state (it is the only place the state is kept).
    let mut extracts = std::mem::take(&mut req.consumed);
    if builds_on {
        extracts = current.with(&extracts);
    }
    let mut record = CommitRecord::new(&req, seq, true, extracts);

    // The run's session (object stores, settings) with Delta's planner for its write nodes.
    let state = &datafusion::execution::SessionStateBuilder::new_from_existing(state.clone())
        .with_query_planner(deltalake::delta_datafusion::planner::DeltaPlanner::new())
        .build();
    let session: Arc<dyn datafusion::catalog::Session> = Arc::new(state.clone());
    let table = match existing {
        Some(t) => t,
        None => table(store, rel, Some(req.task))?,
    };
    let snapshot = table.snapshot().ok().map(|s| s.snapshot().clone());
    let log_store = table.log_store();
    let writer = || {
        WriteBuilder::new(log_store.clone(), snapshot.clone())
            .with_session_state(session.clone())
            .with_writer_properties(writer_properties(out))
            .with_partition_columns(load.partition_by.clone())
    };
    let mut rows_in = None;
    let commit_props = |record: &CommitRecord| -> Result<CommitProperties, SinkError> {
        let value = serde_json::to_value(record)?;
        Ok(CommitProperties::default()
            .with_metadata([(RECORD_KEY.to_string(), value)])
            .with_application_transaction(Transaction::new(app_id(req.pipeline, req.task), seq as i64)))
    };
    let committed: DeltaTable = if !builds_on {
        // A new table, or a rebuild: the rows replace whatever is there (columns included).
        let rows = match load.mode {
            LoadMode::Merge => {
                let p = super::merge::prepare_rows(state, plan, &schema, load, &req.scratch).await?;
                rows_in = Some(p.rows_in);
                upserts(&p, state, load, &schema).await?
            }
            _ => plan,
        };
        writer()
            .with_input_plan(rows)
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(SchemaMode::Overwrite)
            .with_commit_properties(commit_props(&record)?)
            .await
            .map_err(delta_err)?
    } else {
        match load.mode {
            LoadMode::Append | LoadMode::Overwrite => writer()
                .with_input_plan(plan)
                .with_save_mode(SaveMode::Append)
                .with_commit_properties(commit_props(&record)?)
                .await
                .map_err(delta_err)?,
            LoadMode::ReplacePartitions => {
                let (staged, where_, n_in) = stage_partitions(state, plan, load, &req.scratch).await?;
                rows_in = Some(n_in);
                let w = writer().with_input_plan(staged);
                let w = match where_ {
                    // Only the partitions present in this run's rows are replaced.
                    Some(pred) => w.with_save_mode(SaveMode::Overwrite).with_replace_where(pred),
                    // No rows: nothing is replaced; the commit records the consumption.
                    None => w.with_save_mode(SaveMode::Append),
                };
                w.with_commit_properties(commit_props(&record)?).await.map_err(delta_err)?
            }
            LoadMode::Merge => {
                let p = super::merge::prepare_rows(state, plan, &schema, load, &req.scratch).await?;
                rows_in = Some(p.rows_in);
                if p.rows == 0 {
                    writer()
                        .with_input_plan(p.ctx.table(p.source).await?.logical_plan().clone())
                        .with_save_mode(SaveMode::Append)
                        .with_commit_properties(commit_props(&record)?)
                        .await
                        .map_err(delta_err)?
                } else {
                    merge(&table, &p, state, load, &schema, session.clone(), commit_props(&record)?).await?
                }
            }
        }
    };
    failpoint::hit("after_publish", req.task).await.map_err(SinkError::Failpoint)?;
    let version = committed.version().unwrap_or(0);
    let entry = read_log_entry(store, rel, version).await?;
    if entry.record.as_ref().map(|r| r.seq) != Some(seq) {
        return Err(SinkError::Record {
            path: log_entry_display(store, rel, version),
            reason: format!("the commit just made does not hold weir's record {seq}"),
        });
    }
    record.rows_written = Some(entry.added_rows);
    let outcome = WriteOutcome {
        rows: entry.added_rows,
        rows_in: rows_in.unwrap_or(entry.added_rows),
        files: entry.added_files,
        bytes: entry.added_bytes,
    };
    Ok((outcome, record))
}

/// Without a Delta log, the output directory must hold no data files: weir never turns a
/// directory of other files into a table that silently ignores them.
async fn refuse_non_delta_files(store: &Store, rel: &str) -> Result<(), SinkError> {
    let root = store.path(rel);
    let parts = root.parts().count();
    let mut listing = store.object_store.list(Some(&root));
    while let Some(m) = futures::StreamExt::next(&mut listing).await {
        let m = match m {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let rel_parts: Vec<String> = m.location.parts().skip(parts).map(|p| p.as_ref().to_string()).collect();
        if rel_parts.iter().any(|p| p.starts_with('.') || p.starts_with('_')) {
            continue;
        }
        return Err(SinkError::DeltaLayout {
            table: format!("{}/{rel}", store.display_url),
            reason: format!(
                "the directory holds files but is not a Delta table (no _delta_log/), for example {}; remove them or choose another path",
                rel_parts.join("/")
            ),
        });
    }
    Ok(())
}

fn check_same_columns(
    store: &Store,
    rel: &str,
    t: &DeltaTable,
    schema: &SchemaRef,
    partition_by: &[String],
) -> Result<(), SinkError> {
    let state = t.snapshot().map_err(delta_err)?;
    let table_schema = state.snapshot().arrow_schema();
    let show =
        |fields: Vec<(String, String)>| fields.iter().map(|(n, t)| format!("{n} {t}")).collect::<Vec<_>>().join(", ");
    let name = |dt: &datafusion::arrow::datatypes::DataType| crate::compile::types::sql_name(dt);
    let have: Vec<(String, String)> =
        table_schema.fields().iter().map(|f| (f.name().clone(), name(f.data_type()))).collect();
    let want: Vec<(String, String)> = schema.fields().iter().map(|f| (f.name().clone(), name(f.data_type()))).collect();
    let mut have_sorted = have.clone();
    let mut want_sorted = want.clone();
    have_sorted.sort();
    want_sorted.sort();
    if have_sorted != want_sorted {
        return Err(SinkError::Columns {
            file: format!("{}/{rel} (Delta table)", store.display_url),
            have: show(have),
            want: show(want),
        });
    }
    let parts = state.metadata().partition_columns();
    if parts.iter().map(String::as_str).ne(partition_by.iter().map(String::as_str)) {
        return Err(SinkError::DeltaLayout {
            table: format!("{}/{rel}", store.display_url),
            reason: format!(
                "it is partitioned by [{}] but the load says partition_by: [{}]; run with --full-refresh to rebuild it",
                parts.join(", "),
                partition_by.join(", ")
            ),
        });
    }
    Ok(())
}

/// The rows a rebuild writes for a merge: this run's latest row per key, minus deletions.
async fn upserts(
    p: &super::merge::Prepared,
    state: &SessionState,
    load: &LoadPlan,
    schema: &SchemaRef,
) -> Result<LogicalPlan, SinkError> {
    let mut df = p.ctx.table(p.source).await?;
    if let Some(deletes) = super::merge::delete_predicate(state, load, schema)? {
        df = df.filter(Expr::Not(Box::new(deletes)))?;
    }
    Ok(df.logical_plan().clone())
}

/// A Delta MERGE of this run's rows (one per key) into the table.
async fn merge(
    table: &DeltaTable,
    p: &super::merge::Prepared,
    state: &SessionState,
    load: &LoadPlan,
    schema: &SchemaRef,
    session: Arc<dyn datafusion::catalog::Session>,
    props: CommitProperties,
) -> Result<DeltaTable, SinkError> {
    const DELETE: &str = "__weir_delete";
    let mut source = p.ctx.table(p.source).await?;
    let deletes = super::merge::delete_predicate(state, load, schema)?;
    if let Some(d) = &deletes {
        source = source.with_column(DELETE, d.clone())?;
    }
    let s = |c: &str| col(Column::new(Some("source"), c));
    let t = |c: &str| col(Column::new(Some("target"), c));
    let on = load.keys.iter().map(|k| t(k).eq(s(k))).reduce(Expr::and).unwrap_or_else(|| lit(false));
    let upsert = deletes.as_ref().map(|_| Expr::Not(Box::new(s(DELETE))));
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut m = table
        .clone()
        .merge(source, on)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_session_state(session)
        .with_writer_properties(writer_properties(super::files_of(load)?))
        .with_commit_properties(props);
    if deletes.is_some() {
        m = m.when_matched_delete(|d| d.predicate(s(DELETE))).map_err(delta_err)?;
    }
    let (u, i) = (upsert.clone(), upsert);
    // Keys are matched, not updated.
    let cols: Vec<String> = columns.iter().filter(|c| !load.keys.contains(c)).cloned().collect();
    m = m
        .when_matched_update(move |mut b| {
            if let Some(u) = u {
                b = b.predicate(u);
            }
            for c in &cols {
                b = b.update(Column::new_unqualified(c.as_str()), s(c));
            }
            b
        })
        .map_err(delta_err)?;
    m = m
        .when_not_matched_insert(move |mut b| {
            if let Some(i) = i {
                b = b.predicate(i);
            }
            for c in &columns {
                b = b.set(Column::new_unqualified(c.as_str()), s(c));
            }
            b
        })
        .map_err(delta_err)?;
    let (t, metrics) = m.await.map_err(delta_err)?;
    tracing::info!(
        inserted = metrics.num_target_rows_inserted,
        updated = metrics.num_target_rows_updated,
        deleted = metrics.num_target_rows_deleted,
        files_rewritten = metrics.num_target_files_removed,
        "Delta merge"
    );
    Ok(t)
}

/// Stage this run's rows (`replace_partitions`) and build the replace-where predicate naming
/// each partition present in them (`None`: no rows).
async fn stage_partitions(
    state: &SessionState,
    plan: LogicalPlan,
    load: &LoadPlan,
    scratch: &std::path::Path,
) -> Result<(LogicalPlan, Option<Expr>, u64), SinkError> {
    let dir = std::path::absolute(scratch.join("rows")).unwrap_or_else(|_| scratch.join("rows"));
    let url = format!("file://{}/", dir.display());
    let staged = execute_to_parquet(state, plan, &url, vec![], staging_parquet_options()).await?;
    let ctx = datafusion::prelude::SessionContext::new_with_state(state.clone());
    let df = ctx.read_parquet(url.as_str(), datafusion::prelude::ParquetReadOptions::default()).await?;
    if staged.rows == 0 {
        return Ok((df.logical_plan().clone(), None, staged.rows_in));
    }
    let cols: Vec<Expr> = load.partition_by.iter().map(|c| col(Column::new_unqualified(c.as_str()))).collect();
    let values = df.clone().aggregate(cols, vec![])?.collect().await?;
    let mut any: Vec<Expr> = Vec::new();
    for b in &values {
        for r in 0..b.num_rows() {
            let mut all: Vec<Expr> = Vec::new();
            for (k, name) in load.partition_by.iter().enumerate() {
                let v = ScalarValue::try_from_array(b.column(k), r)?;
                let c = col(Column::new_unqualified(name.as_str()));
                all.push(if v.is_null() { c.is_null() } else { c.eq(lit(v)) });
            }
            if let Some(e) = all.into_iter().reduce(Expr::and) {
                any.push(e);
            }
        }
    }
    Ok((df.logical_plan().clone(), any.into_iter().reduce(Expr::or), staged.rows_in))
}

/// The load's store, with fail points before a Delta log entry is written (for crash tests).
#[derive(Debug)]
struct Gated {
    inner: Arc<dyn ObjectStore>,
    task: String,
}

impl std::fmt::Display for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.inner)
    }
}

impl Gated {
    async fn before_commit(&self, location: &ObjectPath) -> object_store::Result<()> {
        let is_entry = location.parts().rev().nth(1).is_some_and(|p| p.as_ref() == "_delta_log")
            && location
                .filename()
                .and_then(|f| f.strip_suffix(".json"))
                .is_some_and(|v| v.len() == 20 && v.bytes().all(|b| b.is_ascii_digit()));
        if is_entry {
            for point in ["after_data_files", "before_publish"] {
                failpoint::hit(point, &self.task).await.map_err(|e| object_store::Error::Generic {
                    store: "weir",
                    source: Box::new(std::io::Error::other(e.to_string())),
                })?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for Gated {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.before_commit(location).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &ObjectPath, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &ObjectPath, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&ObjectPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjectPath>,
        offset: &ObjectPath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&ObjectPath>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &ObjectPath, to: &ObjectPath, options: CopyOptions) -> object_store::Result<()> {
        self.before_commit(to).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.before_commit(to).await?;
        self.inner.rename_opts(from, to, options).await
    }
}
