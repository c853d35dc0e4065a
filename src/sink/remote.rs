//! The commit protocol of Parquet outputs on object stores (S3, GCS, Azure, memory), where a
//! directory cannot be swapped atomically.
//!
//! - Data files are copied from staging into the output under names that carry their commit:
//!   `c{seq:010}-{name}` (`region=north/c0000000007-V8BbUYLuZrjbEiKE.parquet`).
//! - The commit point is the commit record `_weir/commits/{seq:010}.json`, written with a
//!   conditional put (`PutMode::Create`): of two writers racing for one commit, one wins and
//!   the other fails with [`SinkError::Conflict`], publishing nothing.
//! - Then the files the new version no longer holds (the record's `files_removed`) are
//!   deleted, and the staging objects.
//!
//! Whatever a writer that was killed (or lost a race) left behind is told apart from the
//! committed version by name alone, given the latest record (see [`recover`]), and removed by
//! the next run of the load before it stages anything. A writer's files with a commit number
//! above the latest record are *fenced* first: a recovery record takes that number with a
//! conditional put, so that the writer, if it is still alive, can no longer commit files that
//! are being deleted under it.
//!
//! Readers listing the directory between the first copy and the end of the deletes can see
//! the old and the new files together; weir's own state never does. Delta tables (`format:
//! delta`) are atomic for readers too: their log decides what a version holds.

use std::collections::HashSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::SinkError;
use super::commit::{self, CommitRecord, RECORDS_DIR};
use crate::failpoint;
use crate::storage::Store;

/// Copies and deletes in flight at once.
const CONCURRENCY: usize = 8;

/// The name a staged data file is published under by commit `seq` (`rel` is relative to the
/// output; its directories are kept).
pub fn published_name(rel: &str, seq: u64) -> String {
    match rel.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/c{seq:010}-{name}"),
        None => format!("c{seq:010}-{rel}"),
    }
}

/// The commit a published data file belongs to; `None` for files named otherwise (written
/// before this protocol, or copied in by hand), which count as committed.
pub fn file_seq(rel: &str) -> Option<u64> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let digits = name.strip_prefix('c')?.get(..10)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || name.as_bytes().get(11) != Some(&b'-') {
        return None;
    }
    digits.parse().ok()
}

/// What is under an output besides its committed version.
#[derive(Debug, Default, PartialEq)]
pub struct Leftovers {
    /// Data files of commits above the latest record: a writer killed mid-publish (or one
    /// still writing).
    pub uncommitted: Vec<ObjectPath>,
    /// Data files of the latest commit's number that its record does not list (a writer that
    /// lost the race for that number), and files the latest commit removed but a kill left.
    pub stale: Vec<ObjectPath>,
    /// Records older than the latest checkpoint.
    pub old_records: Vec<ObjectPath>,
    /// The highest commit number among `uncommitted`.
    pub fence_at: Option<u64>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.uncommitted.is_empty() && self.stale.is_empty() && self.old_records.is_empty()
    }

    fn count(&self) -> usize {
        self.uncommitted.len() + self.stale.len() + self.old_records.len()
    }
}

/// Sort the objects under an output (`rel`: relative to it) into the committed version and
/// [`Leftovers`], given its latest record.
pub fn classify<'a>(
    objects: impl IntoIterator<Item = (&'a str, &'a ObjectPath)>,
    latest: Option<&CommitRecord>,
    checkpoints: &[u64],
) -> Leftovers {
    let latest_seq = latest.map(|r| r.seq).unwrap_or(0);
    let written: HashSet<&str> =
        latest.map(|r| r.files_written.iter().map(String::as_str).collect()).unwrap_or_default();
    let removed: HashSet<&str> =
        latest.map(|r| r.files_removed.iter().map(String::as_str).collect()).unwrap_or_default();
    let last_checkpoint = checkpoints.iter().copied().max();
    let mut out = Leftovers::default();
    for (rel, path) in objects {
        if let Some(name) = rel.strip_prefix(&format!("{RECORDS_DIR}/")) {
            if let (Some(seq), Some(cp)) = (commit::record_seq(name), last_checkpoint)
                && seq < cp
            {
                out.old_records.push(path.clone());
            }
            continue;
        }
        if rel.split('/').any(|p| p.starts_with('.') || p.starts_with('_')) {
            continue;
        }
        match file_seq(rel) {
            Some(seq) if seq > latest_seq => {
                out.uncommitted.push(path.clone());
                out.fence_at = out.fence_at.max(Some(seq));
            }
            Some(seq) if seq == latest_seq && !written.contains(rel) => out.stale.push(path.clone()),
            _ if removed.contains(rel) => out.stale.push(path.clone()),
            _ => {}
        }
    }
    out
}

/// Make the output at `dir` hold its committed version only: remove what killed or beaten
/// writers left (see the module docs). `run_id` signs the recovery record, if one is needed.
/// Returns the latest commit number afterwards.
pub async fn recover(store: &Store, dir: &str, pipeline: &str, load: &str, run_id: &str) -> Result<u64, SinkError> {
    for _ in 0..5 {
        let target = store.path(dir);
        let parts = target.parts().count();
        let objects: Vec<object_store::ObjectMeta> = match store.object_store.list(Some(&target)).try_collect().await {
            Ok(v) => v,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        if objects.is_empty() {
            return Ok(0);
        }
        let rels: Vec<(String, ObjectPath)> = objects
            .into_iter()
            .map(|m| {
                let rel = m.location.parts().skip(parts).map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/");
                (rel, m.location)
            })
            .collect();
        let seqs: Vec<u64> = {
            let mut s: Vec<u64> = rels
                .iter()
                .filter_map(|(r, _)| r.strip_prefix(&format!("{RECORDS_DIR}/")).and_then(commit::record_seq))
                .collect();
            s.sort_unstable();
            s
        };
        let latest = match seqs.last() {
            Some(&s) => Some(commit::read_record(store, dir, s).await?),
            None => None,
        };
        // Records before the latest checkpoint are no longer read; only the latest's own
        // flag is known without reading them all, which is enough: it is the one that
        // removes the older ones.
        let checkpoints: Vec<u64> = latest.iter().filter(|r| r.checkpoint).map(|r| r.seq).collect();
        let leftovers = classify(rels.iter().map(|(r, p)| (r.as_str(), p)), latest.as_ref(), &checkpoints);
        let latest_seq = latest.as_ref().map(|r| r.seq).unwrap_or(0);
        if leftovers.is_empty() {
            return Ok(latest_seq);
        }
        if let Some(fence) = leftovers.fence_at {
            // Take the numbers the other writer would commit under, one after the other,
            // before deleting its files: if it is alive, its commit now fails.
            let mut seq = latest_seq + 1;
            while seq <= fence {
                let record = CommitRecord {
                    weir_commit: commit::FORMAT_VERSION,
                    pipeline: pipeline.to_string(),
                    load: load.to_string(),
                    seq,
                    run_id: run_id.to_string(),
                    committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    mode: "recover".to_string(),
                    checkpoint: false,
                    rows_written: Some(0),
                    files_written: Vec::new(),
                    files_removed: Vec::new(),
                    extracts: Default::default(),
                };
                match put_record(store, dir, &record).await {
                    Ok(()) => {}
                    // The other writer committed this number meanwhile: look again.
                    Err(SinkError::Conflict { .. }) => break,
                    Err(e) => return Err(e),
                }
                seq += 1;
            }
            if seq <= fence {
                continue;
            }
        }
        tracing::info!(
            output = %store.url_of(&target, true),
            objects = leftovers.count(),
            "removing what an interrupted run left in the output"
        );
        let doomed = leftovers.uncommitted.into_iter().chain(leftovers.stale).chain(leftovers.old_records);
        delete_all(&store.object_store, doomed.collect()).await?;
        if leftovers.fence_at.is_none() {
            return Ok(latest_seq);
        }
    }
    // Another writer keeps committing while this one cleans up.
    Err(SinkError::Conflict { output: store.url_of(&store.path(dir), true), seq: 0 })
}

/// Put `record` in place with a conditional put: [`SinkError::Conflict`] when its number is
/// taken.
pub async fn put_record(store: &Store, dir: &str, record: &CommitRecord) -> Result<(), SinkError> {
    let path = store.path(&format!("{dir}/{RECORDS_DIR}/{}", commit::record_name(record.seq)));
    let bytes = serde_json::to_vec_pretty(record)
        .map_err(|e| SinkError::Record { path: path.to_string(), reason: e.to_string() })?;
    let conflict = || SinkError::Conflict { output: store.url_of(&store.path(dir), true), seq: record.seq };
    let payload = PutPayload::from(bytes);
    match store.object_store.put_opts(&path, payload.clone(), PutOptions::from(PutMode::Create)).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
            // A retried put whose first attempt landed (its response lost) finds its own
            // record: that is a success, not a conflict.
            match commit::read_record(store, dir, record.seq).await {
                Ok(there) if there.run_id == record.run_id && there.load == record.load => Ok(()),
                _ => Err(conflict()),
            }
        }
        Err(object_store::Error::NotImplemented { .. }) => {
            // A store configured without conditional puts: check, then put. Two writers can
            // still race in between; see the reference on one writer per output.
            match store.object_store.head(&path).await {
                Ok(_) => Err(conflict()),
                Err(object_store::Error::NotFound { .. }) => {
                    store.object_store.put(&path, payload).await?;
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn delete_all(os: &Arc<dyn ObjectStore>, paths: Vec<ObjectPath>) -> Result<(), SinkError> {
    futures::stream::iter(paths)
        .map(|p| {
            let os = Arc::clone(os);
            async move {
                match os.delete(&p).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(SinkError::from(e)),
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// What a publish on an object store does, in order (see the module docs).
pub struct Publish<'a> {
    pub store: &'a Store,
    /// The output, relative to the store.
    pub target_rel: &'a str,
    /// The staging directory, relative to the store.
    pub staging_rel: &'a str,
    /// (staged, published) data file names, relative to staging and to the output.
    pub files: &'a [(String, String)],
    pub record: &'a CommitRecord,
    /// Older records to delete once committed (a checkpoint makes them unneeded).
    pub old_records: &'a [u64],
    pub task: &'a str,
}

impl Publish<'_> {
    pub async fn run(self) -> Result<(), SinkError> {
        let os = &self.store.object_store;
        // (Names as stored: a Hive directory's escapes are not escaped again.)
        let under = |root: &str, rel: &str| self.store.path(&format!("{root}/{rel}"));
        // 1. The data files, under their commit's names.
        let mut copies: Vec<(ObjectPath, ObjectPath)> =
            self.files.iter().map(|(s, f)| (under(self.staging_rel, s), under(self.target_rel, f))).collect();
        let rest = copies.split_off(copies.len().min(1));
        if let Some((from, to)) = copies.pop() {
            os.copy(&from, &to).await?;
            failpoint::hit("mid_publish", self.task).await.map_err(SinkError::Failpoint)?;
        }
        futures::stream::iter(rest)
            .map(|(from, to)| {
                let os = Arc::clone(os);
                async move { os.copy(&from, &to).await }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        // 2. The commit point.
        if let Err(e) = put_record(self.store, self.target_rel, self.record).await {
            if matches!(e, SinkError::Conflict { .. }) {
                // Beaten: take back what this writer put in place (the next run would too).
                let mine = self.files.iter().map(|(_, f)| under(self.target_rel, f)).collect();
                let _ = delete_all(os, mine).await;
            }
            return Err(e);
        }
        failpoint::hit("before_cleanup", self.task).await.map_err(SinkError::Failpoint)?;
        // 3. What the new version no longer holds, then staging.
        let removed = self.record.files_removed.iter().map(|r| under(self.target_rel, r));
        let records = self
            .old_records
            .iter()
            .map(|s| under(self.target_rel, &format!("{RECORDS_DIR}/{}", commit::record_name(*s))));
        delete_all(os, removed.chain(records).collect()).await?;
        let staged: Vec<ObjectPath> =
            os.list(Some(&self.store.path(self.staging_rel))).map_ok(|m| m.location).try_collect().await?;
        delete_all(os, staged).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, written: &[&str], removed: &[&str], checkpoint: bool) -> CommitRecord {
        CommitRecord {
            weir_commit: 1,
            pipeline: "p".into(),
            load: "l".into(),
            seq,
            run_id: "r".into(),
            committed_at: "2026-01-01T00:00:00Z".into(),
            mode: "append".into(),
            checkpoint,
            rows_written: None,
            files_written: written.iter().map(|s| s.to_string()).collect(),
            files_removed: removed.iter().map(|s| s.to_string()).collect(),
            extracts: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_record_put_again_by_its_writer_is_not_a_conflict() {
        let store = Store::new("m", "memory://remote-put-record/out", &[], std::path::Path::new(".")).unwrap();
        let mine = record(1, &[], &[], true);
        put_record(&store, "t", &mine).await.unwrap();
        // the same writer again (a retry whose first attempt landed)
        put_record(&store, "t", &mine).await.unwrap();
        // another writer for the same number
        let theirs = CommitRecord { run_id: "other".into(), ..mine.clone() };
        assert!(matches!(put_record(&store, "t", &theirs).await, Err(SinkError::Conflict { seq: 1, .. })));
    }

    #[test]
    fn names_carry_their_commit() {
        assert_eq!(published_name("region=n/abc_0.parquet", 7), "region=n/c0000000007-abc_0.parquet");
        assert_eq!(published_name("abc.parquet", 12), "c0000000012-abc.parquet");
        assert_eq!(file_seq("region=n/c0000000007-abc_0.parquet"), Some(7));
        assert_eq!(file_seq("c0000000012-abc.parquet"), Some(12));
        // DataFusion's own names, and near misses, belong to no commit
        for other in
            ["V8BbUYLuZrjbEiKE.parquet", "c00000000-x.parquet", "c0000000012x.parquet", "c000000001a-x.parquet"]
        {
            assert_eq!(file_seq(other), None, "{other}");
        }
    }

    #[test]
    fn leftovers_are_told_apart_by_name_and_the_latest_record() {
        let objects = [
            "c0000000001-a.parquet",      // committed by 1, kept
            "c0000000002-b.parquet",      // committed by 2
            "c0000000002-lost.parquet",   // a writer that lost the race for 2
            "c0000000003-killed.parquet", // a writer killed before its record
            "c0000000001-gone.parquet",   // removed by 2, delete interrupted
            "legacy.parquet",             // named otherwise: committed
            "_weir/commits/0000000001.json",
            "_weir/commits/0000000002.json",
            ".hidden/x",
        ];
        let paths: Vec<(String, ObjectPath)> = objects.iter().map(|o| (o.to_string(), ObjectPath::from(*o))).collect();
        let latest = record(2, &["c0000000002-b.parquet"], &["c0000000001-gone.parquet"], false);
        let l = classify(paths.iter().map(|(r, p)| (r.as_str(), p)), Some(&latest), &[]);
        let names = |v: &[ObjectPath]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&l.uncommitted), ["c0000000003-killed.parquet"]);
        assert_eq!(l.fence_at, Some(3));
        assert_eq!(names(&l.stale), ["c0000000002-lost.parquet", "c0000000001-gone.parquet"]);
        assert!(l.old_records.is_empty());

        // a checkpoint at 2 makes record 1 a leftover
        let cp = record(2, &["c0000000002-b.parquet"], &[], true);
        let l = classify(paths.iter().map(|(r, p)| (r.as_str(), p)), Some(&cp), &[2]);
        assert_eq!(names(&l.old_records), ["_weir/commits/0000000001.json"]);

        // no record at all: every commit-named file is uncommitted, other names are kept
        let l = classify(paths.iter().map(|(r, p)| (r.as_str(), p)), None, &[]);
        assert_eq!(l.uncommitted.len(), 5);
        assert_eq!(l.fence_at, Some(3));
    }
}
