//! Parquet output: write to staging, then publish (see the module docs of `sink`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use object_store::{ObjectStore, ObjectStoreExt};

use super::commit::{self, CHECKPOINT_EVERY, CommitRecord, RECORDS_DIR};
use super::writer::{
    CurrentFile, WriteOutcome, current_output, empty_parquet, execute_to_parquet, footer, learn_encodings, list_all,
    parquet_options,
};
use super::{LoadRequest, SinkError};
use crate::failpoint;
use crate::spec::LoadMode;
use crate::storage::{Backend, Store};

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
    let out = super::files_of(load)?;
    let store = &out.store;
    let (parent, base) = match out.path.rsplit_once('/') {
        Some((p, b)) => (p.to_string(), b.to_string()),
        None => (String::new(), out.path.clone()),
    };
    let join = |name: &str| {
        if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") }
    };
    let staging_rel = join(&format!(".{base}.weir-staging-{}", req.run_id));
    let old_rel = join(&format!(".{base}.weir-old-{}", req.run_id));
    remove_leftovers(store, &parent, &base, req.run_id).await?;
    let remote = !matches!(store.backend, Backend::Local(_));
    if remote {
        super::remote::recover(store, &out.path, req.pipeline, req.task, req.run_id).await?;
    }

    let (current, seqs) = current_output(store, &out.path).await?;
    let latest = seqs.last().copied().unwrap_or(0);
    if let Some(base) = req.base_seq {
        ensure_unmoved(store, &out.path, base, latest).await?;
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
    let mut options = parquet_options(out.compression, out.compression_level, out.row_group_rows);
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
        extracts = commit::read_state(store, &out.path, &seqs).await?.with(&extracts);
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
        target_rel: out.path.clone(),
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
