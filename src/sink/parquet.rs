//! Parquet output: write to staging, then publish (see the module docs of `sink`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::arrow::datatypes::SchemaRef;
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
use crate::compile::LoadPlan;
use crate::failpoint;
use crate::spec::{LoadMode, OutputCompression};
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

/// Writer options for a load (or staging when `load` is `None`).
pub fn parquet_options(compression: OutputCompression, row_group_rows: usize) -> TableParquetOptions {
    let mut o = TableParquetOptions::default();
    o.global.compression = Some(
        match compression {
            OutputCompression::Zstd => "zstd(3)",
            OutputCompression::Snappy => "snappy",
            OutputCompression::Gzip => "gzip(6)",
            OutputCompression::Lz4 => "lz4_raw",
            OutputCompression::None => "uncompressed",
        }
        .to_string(),
    );
    o.global.max_row_group_size = row_group_rows;
    o.global.created_by = format!("weir {}", env!("CARGO_PKG_VERSION"));
    o
}

/// Run `plan` and write its rows as Parquet files under the directory `url`.
pub async fn execute_to_parquet(
    state: &SessionState,
    plan: LogicalPlan,
    url: &str,
    partition_by: Vec<String>,
    options: TableParquetOptions,
) -> Result<WriteOutcome, SinkError> {
    let file_type = format_as_file_type(Arc::new(ParquetFormatFactory::new_with_options(options)));
    let copy = LogicalPlanBuilder::copy_to(plan, url.to_string(), file_type, HashMap::new(), partition_by)?.build()?;
    let physical = state.create_physical_plan(&copy).await?;
    let batches = collect(physical.clone(), state.task_ctx()).await?;
    let rows = batches
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<UInt64Array>().filter(|a| !a.is_empty()).map(|a| a.value(0)))
        .unwrap_or(0);
    Ok(WriteOutcome { rows, rows_in: leaf_rows(&physical), files: 0, bytes: 0 })
}

/// Rows produced by the leaves (scans) of an executed plan.
fn leaf_rows(plan: &Arc<dyn ExecutionPlan>) -> u64 {
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
    mode: LoadMode,
    task: String,
    /// What was written.
    pub outcome: WriteOutcome,
}

/// Write `plan` for `load` to its staging directory. Nothing is visible to readers yet; this
/// step may be cancelled at any point (the next run removes what it left).
pub async fn stage_parquet(
    state: &SessionState,
    plan: LogicalPlan,
    schema: SchemaRef,
    load: &LoadPlan,
    run_id: &str,
    task: &str,
) -> Result<Staged, SinkError> {
    let store = &load.store;
    let (parent, base) = match load.path.rsplit_once('/') {
        Some((p, b)) => (p.to_string(), b.to_string()),
        None => (String::new(), load.path.clone()),
    };
    let join = |name: &str| {
        if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") }
    };
    let staging_rel = join(&format!(".{base}.weir-staging-{run_id}"));
    let old_rel = join(&format!(".{base}.weir-old-{run_id}"));
    remove_leftovers(store, &parent, &base, run_id).await?;

    let staging = store.path(&staging_rel);
    let url = store.url_of(&staging, true);
    let options = parquet_options(load.compression, load.row_group_rows);
    let mut outcome = execute_to_parquet(state, plan, &url, load.partition_by.clone(), options).await?;

    let mut written = list_all(store.object_store.as_ref(), &staging).await?;
    if written.is_empty() && load.partition_by.is_empty() {
        // No rows: still publish a file, so that readers find the table and its schema.
        let empty = staging.clone().join(format!("part-{run_id}-empty.parquet").as_str());
        store.object_store.put(&empty, empty_parquet(&schema)?.into()).await?;
        written = list_all(store.object_store.as_ref(), &staging).await?;
    }
    outcome.files = written.len() as u64;
    outcome.bytes = written.iter().map(|m| m.size).sum();
    failpoint::hit("after_data_files", task).await.map_err(SinkError::Failpoint)?;
    failpoint::hit("before_publish", task).await.map_err(SinkError::Failpoint)?;
    Ok(Staged {
        store: store.clone(),
        target_rel: load.path.clone(),
        staging_rel,
        old_rel,
        mode: load.mode,
        task: task.to_string(),
        outcome,
    })
}

impl Staged {
    /// Make the staged output visible (see the module docs). Once started this runs to the
    /// end: the caller must not drop it midway (cancellation and timeouts stop before it).
    pub async fn publish(self) -> Result<WriteOutcome, SinkError> {
        let store = &self.store;
        match &store.backend {
            Backend::Local(_) => {
                let path =
                    |rel: &str| store.local_path(rel).ok_or_else(|| SinkError::NotADirectory(PathBuf::from(rel)));
                let (target, staged, old) = (path(&self.target_rel)?, path(&self.staging_rel)?, path(&self.old_rel)?);
                let mode = self.mode;
                tokio::task::spawn_blocking(move || publish_local(&staged, &target, &old, mode))
                    .await
                    .map_err(|e| SinkError::io("publishing", Path::new(""), std::io::Error::other(e.to_string())))??;
            }
            _ => {
                publish_remote(store, &store.path(&self.staging_rel), &store.path(&self.target_rel), self.mode).await?
            }
        }
        failpoint::hit("after_publish", &self.task).await.map_err(SinkError::Failpoint)?;
        Ok(self.outcome)
    }
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

/// Publish a staged directory on local disk with an atomic directory swap.
fn publish_local(staged: &Path, target: &Path, old: &Path, mode: LoadMode) -> Result<(), SinkError> {
    std::fs::create_dir_all(staged).map_err(|e| SinkError::io("creating", staged, e))?;
    let exists = match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => return Err(SinkError::NotADirectory(target.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(SinkError::io("reading", target, e)),
    };
    if exists && mode == LoadMode::Append {
        // The new version = the current files (hard links, no copying) + the new ones.
        link_tree(target, staged)?;
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

/// Hard-link every file under `from` into `to` at the same relative path.
fn link_tree(from: &Path, to: &Path) -> Result<(), SinkError> {
    for entry in std::fs::read_dir(from).map_err(|e| SinkError::io("reading", from, e))? {
        let entry = entry.map_err(|e| SinkError::io("reading", from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ft = entry.file_type().map_err(|e| SinkError::io("reading", &src, e))?;
        if ft.is_dir() {
            std::fs::create_dir_all(&dst).map_err(|e| SinkError::io("creating", &dst, e))?;
            link_tree(&src, &dst)?;
        } else if !dst.exists() {
            std::fs::hard_link(&src, &dst)
                .or_else(|_| std::fs::copy(&src, &dst).map(|_| ()))
                .map_err(|e| SinkError::io("linking", &dst, e))?;
        }
    }
    Ok(())
}

/// fsync every file and directory under `dir`, so that the publish survives a power loss.
fn sync_tree(dir: &Path) -> Result<(), SinkError> {
    for entry in std::fs::read_dir(dir).map_err(|e| SinkError::io("reading", dir, e))?.flatten() {
        let p = entry.path();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            sync_tree(&p)?;
        } else if let Ok(f) = std::fs::File::open(&p) {
            f.sync_all().map_err(|e| SinkError::io("syncing", &p, e))?;
        }
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Publish on an object store: copy the staged objects into place, then delete what the
/// new version replaces (overwrite) and the staging objects.
async fn publish_remote(
    store: &Store,
    staging: &ObjectPath,
    target: &ObjectPath,
    mode: LoadMode,
) -> Result<(), SinkError> {
    let os = store.object_store.as_ref();
    let staged = list_all(os, staging).await?;
    let before: Vec<_> = if mode == LoadMode::Overwrite { list_all(os, target).await? } else { Vec::new() };
    let staging_parts = staging.parts().count();
    let mut new_paths = HashSet::new();
    for m in &staged {
        let mut dst = target.clone();
        for part in m.location.parts().skip(staging_parts) {
            dst = dst.join(part);
        }
        os.copy(&m.location, &dst).await?;
        new_paths.insert(dst);
    }
    for m in before {
        if !new_paths.contains(&m.location) {
            os.delete(&m.location).await?;
        }
    }
    for m in staged {
        os.delete(&m.location).await?;
    }
    Ok(())
}
