//! `sink`: output formats and their commit protocols.
//!
//! Parquet (the only format so far) is written in full to a hidden staging directory beside
//! the output, together with the load's commit record (`commit`), then published:
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
pub mod remote;

pub use merge::{KeyCheck, KeyHashes};

pub use parquet::{
    LoadRequest, Staged, WriteOutcome, execute_to_parquet, leaf_rows, mode_name, parquet_options, stage_load,
    staging_parquet_options, storable,
};

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
    #[error("{0}")]
    Merge(String),
    #[error(
        "another writer committed to {output} while this run was writing (commit {seq} is taken): nothing of this run was published; run again"
    )]
    Conflict { output: String, seq: u64 },
    #[error(
        "the output changed since this run read its state (commit {expected} expected, {found} found): another run wrote to it; nothing of this run was published; run again"
    )]
    Moved { expected: u64, found: u64 },
    #[error("Delta table: {0}")]
    Delta(String),
}

impl SinkError {
    pub fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        SinkError::Io { action, path: path.to_path_buf(), source }
    }
}
