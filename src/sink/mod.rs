//! `sink`: one module per kind of output and its commit protocol, behind one load request
//! ([`load`]): a Parquet directory (`parquet`, with `merge` and `remote`), a Delta table
//! (`delta`) and a database table (`table`: one transaction with its commit record); the
//! Parquet writing the file sinks use is `writer`. See `docs/design/connectors.md`.
//!
//! A Parquet output is written in full to a hidden staging directory beside the output,
//! together with the load's commit record (`commit`), then published:
//!
//! - **local disk**: the staging directory and the output directory are swapped with one
//!   `renameat2(RENAME_EXCHANGE)` — atomic: a reader sees the whole old version or the whole
//!   new one. The files the new version keeps (`append`: all; `merge`: those holding no key
//!   of this run; `replace_partitions`: the other partitions; and the commit records since the
//!   last checkpoint) are hard-linked into the staging directory first, so every mode is
//!   atomic, data and record together. The old version is then deleted.
//! - **object stores** (S3, GCS, Azure, memory): the staged data files are copied into place
//!   under names that carry their commit number, then the commit record is put with a
//!   conditional put (the commit point), then the old files are deleted (`remote`). Each
//!   object appears whole, but a reader listing the directory during the copy can see old
//!   and new files together; weir's state never does, and the next run removes what a
//!   killed publish left.
//!
//! A load that fails or is killed before the publish step leaves the output untouched; its
//! staging directory is removed by the next run of the load.

pub mod commit;
pub mod delta;
pub mod hive;
mod merge;
mod parquet;
mod partitioned;
pub mod remote;
mod table;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;

use crate::compile::{FilesTarget, LoadPlan, LoadTarget};
use crate::spec::{LoadMode, OutputFormat};
use commit::{CommitRecord, Consumed};

pub use merge::{KeyCheck, KeyHashes};
pub use writer::{WriteOutcome, execute_to_parquet, leaf_rows, parquet_options, staging_parquet_options, storable};

/// Write a load's rows (`plan`, with `schema`) to its output, atomically with its commit
/// record, as its format says: a Parquet directory (staged in full, then published) or a
/// Delta table (one commit). `cancel` stops it before anything is visible; once the output
/// starts changing it runs to its end. Returns what was written and the commit record.
pub async fn load(
    state: &SessionState,
    plan: LogicalPlan,
    schema: SchemaRef,
    req: LoadRequest<'_>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(WriteOutcome, CommitRecord), LoadError> {
    match &req.load.target {
        // One Delta commit; cancelled before its log entry is written, the table is unchanged.
        LoadTarget::Files(f) if f.format == OutputFormat::Delta => {
            cancellable(cancel, delta::commit_load(state, plan, schema, req)).await
        }
        LoadTarget::Files(_) => {
            let staged = cancellable(cancel, parquet::stage_load(state, plan, schema, req)).await?;
            // From here on the load is not interrupted: the publish is short and atomic.
            staged.publish().await.map_err(LoadError::Failed)
        }
        // One transaction; cancelled before it commits, the table is unchanged.
        LoadTarget::Table(t) => cancellable(cancel, table::load(state, plan, schema, t, req)).await,
    }
}

/// The rows a Parquet output at `rel` in `store` holds now, as its readers see them (partition
/// columns restored from the directories), in the columns of `schema`; `None` when it holds no
/// file.
pub async fn read_parquet_output(
    ctx: &datafusion::prelude::SessionContext,
    store: &crate::storage::Store,
    rel: &str,
    schema: &SchemaRef,
    partition_by: &[String],
) -> Result<Option<datafusion::dataframe::DataFrame>, SinkError> {
    let (files, _) = writer::current_output(store, rel).await?;
    if files.is_empty() {
        return Ok(None);
    }
    merge::read_current(ctx, store, &files, schema, partition_by).await.map(Some)
}

/// The file output of a load the file sinks were given.
fn files_of(load: &LoadPlan) -> Result<&FilesTarget, SinkError> {
    load.files().ok_or_else(|| SinkError::Record {
        path: load.describe_target(),
        reason: "a database table reached a file sink".into(),
    })
}

/// A load's output, as the run reads what it has committed.
pub enum Output {
    /// A Parquet directory and the sequence numbers of its records.
    Parquet { store: std::sync::Arc<crate::storage::Store>, path: String, seqs: Vec<u64> },
    /// A Delta table and its latest commit of the load.
    Delta { store: std::sync::Arc<crate::storage::Store>, path: String, pipeline: String, load: String, latest: u64 },
    /// A database table: the latest record of the load in its commit table, read whole.
    Table(commit::LoadState),
}

impl Output {
    /// The output of `load` (task `task` of `pipeline`), its latest commit found.
    pub async fn open(load: &LoadPlan, pipeline: &str, task: &str) -> Result<Output, SinkError> {
        Ok(match &load.target {
            LoadTarget::Files(f) if f.format == OutputFormat::Delta => Output::Delta {
                store: f.store.clone(),
                path: f.path.clone(),
                pipeline: pipeline.to_string(),
                load: task.to_string(),
                latest: delta::latest_seq(&f.store, &f.path, pipeline, task).await?,
            },
            LoadTarget::Files(f) => Output::Parquet {
                store: f.store.clone(),
                path: f.path.clone(),
                seqs: commit::list_records(&f.store, &f.path).await?,
            },
            LoadTarget::Table(t) => Output::Table(table::read_state(t, pipeline, task).await?),
        })
    }

    /// The latest commit's sequence number (0: none yet).
    pub fn latest_seq(&self) -> u64 {
        match self {
            Output::Parquet { seqs, .. } => seqs.last().copied().unwrap_or(0),
            Output::Delta { latest, .. } => *latest,
            Output::Table(s) => s.seq,
        }
    }

    /// The consumed state the output's records fold to.
    pub async fn read_state(&self) -> Result<commit::LoadState, SinkError> {
        match self {
            Output::Parquet { seqs, .. } if seqs.is_empty() => Ok(commit::LoadState::default()),
            Output::Parquet { store, path, seqs } => commit::read_state(store, path, seqs).await,
            Output::Delta { store, path, pipeline, load, .. } => delta::read_state(store, path, pipeline, load).await,
            Output::Table(s) => Ok(s.clone()),
        }
    }
}

/// `fut` unless `cancel` fires first.
async fn cancellable<T>(
    cancel: &tokio_util::sync::CancellationToken,
    fut: impl std::future::Future<Output = Result<T, SinkError>>,
) -> Result<T, LoadError> {
    tokio::select! {
        r = fut => r.map_err(LoadError::Failed),
        _ = cancel.cancelled() => Err(LoadError::Cancelled),
    }
}

/// Why a load did not commit.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cancelled before anything was published")]
    Cancelled,
    #[error(transparent)]
    Failed(SinkError),
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("{0}")]
    Failpoint(crate::failpoint::Failure),
    #[error("the output path {0} exists and is not a directory")]
    NotADirectory(std::path::PathBuf),
    #[error("commit record {path} cannot be read: {reason}")]
    Record { path: String, reason: String },
    #[error(
        "this run's rows have other columns than the output they would be added to ({file} has: {have}; this run has: {want}); run with --full-refresh to rebuild the output with the new columns"
    )]
    Columns { file: String, have: String, want: String },
    #[error(
        "the output directory holds {file}, which is not a Parquet file ({reason}): a load owns its directory and reads the files in it; move that file elsewhere, or load to another path"
    )]
    NotParquet { file: String, reason: String },
    /// This run's rows cannot be merged as they are (NULL or duplicate keys, ties).
    #[error("{0}")]
    MergeRows(String),
    #[error("invalid `delete_when`: {0}")]
    DeleteWhen(String),
    /// A worker thread or task of the sink ended without an answer.
    #[error("{what} failed: {source}")]
    Worker { what: &'static str, source: tokio::task::JoinError },
    #[error(
        "another writer committed to {output} while this run was writing (commit {seq} is taken): nothing of this run was published; run again"
    )]
    Conflict { output: String, seq: u64 },
    #[error(
        "the output changed since this run read its state (commit {expected} expected, {found} found): another run wrote to it; nothing of this run was published; run again"
    )]
    Moved { expected: u64, found: u64 },
    #[error("Delta table: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    #[error("Delta table {table}: {reason}")]
    DeltaLayout { table: String, reason: String },
    #[error("Delta table URL {url}: {source}")]
    DeltaUrl { url: String, source: url::ParseError },
    #[error("the commit record cannot be written: {0}")]
    RecordJson(#[from] serde_json::Error),
    #[error(transparent)]
    Table(#[from] table::TableError),
}

impl SinkError {
    pub fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        SinkError::Io { action, path: path.to_path_buf(), source }
    }

    /// Whether trying again may succeed: I/O and storage trouble (and a writer that got in the
    /// way) may pass; the data, the output's layout and a bug will not.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::DataFusion(e) => crate::storage::is_transient(e),
            SinkError::ObjectStore(e) => {
                !matches!(e, object_store::Error::NotFound { .. } | object_store::Error::InvalidPath { .. })
            }
            SinkError::Io { .. } | SinkError::Conflict { .. } => true,
            SinkError::Table(e) => e.is_transient(),
            SinkError::Failpoint(f) => matches!(f, crate::failpoint::Failure::Transient(_)),
            _ => false,
        }
    }
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

pub fn mode_name(m: LoadMode) -> &'static str {
    match m {
        LoadMode::Overwrite => "overwrite",
        LoadMode::Append => "append",
        LoadMode::Merge => "merge",
        LoadMode::ReplacePartitions => "replace_partitions",
    }
}
