//! Commit records: what a load's output says about itself.
//!
//! Every publish of a load puts one record, `_weir/commits/<seq>.json`, into the new version
//! of the output, inside the same atomic step as the data (see `docs/design/incremental.md`).
//! A record holds what the load consumed from each incremental extract upstream of it: the
//! files added to its ledger, and its watermark. The consumed state of a load is the fold of
//! its records from the latest checkpoint on; a checkpoint record holds the whole state, so
//! older records are not carried into new versions.
//!
//! Readers of the output do not see the records: pyarrow/pandas, Spark and Polars skip paths
//! starting with `_`, and `*.parquet` globs (DuckDB) do not match them.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use super::SinkError;
use crate::storage::Store;

/// The folder of a load's output holding its records.
pub const RECORDS_DIR: &str = "_weir/commits";
/// Every this many commits, a record holds the whole state.
pub const CHECKPOINT_EVERY: u64 = 100;
/// The record format this weir writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 1;

/// One commit of a load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRecord {
    pub weir_commit: u32,
    pub pipeline: String,
    pub load: String,
    pub seq: u64,
    pub run_id: String,
    pub committed_at: String,
    pub mode: String,
    /// This record holds the whole consumed state; earlier records do not count.
    pub checkpoint: bool,
    /// Rows in the data files this commit added (Parquet; a Delta log says it per file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_written: Option<u64>,
    /// Data files this commit added, relative to the output directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_written: Vec<String>,
    /// Data files of the previous version this commit no longer holds (relative to the
    /// output directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_removed: Vec<String>,
    /// Per incremental extract: what this commit consumed (the whole state if `checkpoint`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extracts: BTreeMap<String, Consumed>,
}

impl CommitRecord {
    /// Commit `seq` of the load `req` asks for, made now, holding `extracts`.
    pub fn new(
        req: &super::LoadRequest<'_>,
        seq: u64,
        checkpoint: bool,
        extracts: BTreeMap<String, Consumed>,
    ) -> CommitRecord {
        CommitRecord {
            weir_commit: FORMAT_VERSION,
            pipeline: req.pipeline.to_string(),
            load: req.task.to_string(),
            seq,
            run_id: req.run_id.to_string(),
            committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            mode: super::mode_name(req.load.mode).to_string(),
            checkpoint,
            rows_written: None,
            files_written: Vec::new(),
            files_removed: Vec::new(),
            extracts,
        }
    }
}

/// What a load consumed from one incremental extract.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumed {
    /// Files added to the ledger (new or changed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<LedgerEntry>,
    /// The watermark after this commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<WatermarkValue>,
}

/// A file as it was when it was read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    pub store: String,
    /// The object's path in its store.
    pub path: String,
    pub size: u64,
    /// RFC 3339.
    pub last_modified: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
}

impl LedgerEntry {
    pub fn of(store: &str, meta: &ObjectMeta) -> LedgerEntry {
        LedgerEntry {
            store: store.to_string(),
            path: meta.location.to_string(),
            size: meta.size,
            last_modified: meta.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            e_tag: meta.e_tag.clone(),
        }
    }

    /// Whether `meta` is this file unchanged: the same size and ETag when the store gives
    /// ETags (S3, GCS and Azure derive them from the content, so a file uploaded again with
    /// the same bytes is unchanged), else the same size and modification time.
    pub fn matches(&self, meta: &ObjectMeta) -> bool {
        if self.size != meta.size {
            return false;
        }
        match (&self.e_tag, &meta.e_tag) {
            (Some(a), Some(b)) => a == b,
            _ => self.last_modified == meta.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        }
    }
}

/// A watermark: a value of the cursor column, in that column's type and full precision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkValue {
    pub column: String,
    /// The Arrow type, as Arrow displays it (`Timestamp(µs)`, `Int64`, …).
    pub data_type: String,
    /// The value cast to text by Arrow (exact, and read back by the reverse cast).
    pub value: String,
}

/// The state of one extract for one load: its ledger and watermark.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtractState {
    /// By (store, path).
    pub files: BTreeMap<(String, String), LedgerEntry>,
    pub watermark: Option<WatermarkValue>,
}

impl ExtractState {
    pub fn apply(&mut self, c: &Consumed) {
        for f in &c.files {
            self.files.insert((f.store.clone(), f.path.clone()), f.clone());
        }
        if c.watermark.is_some() {
            self.watermark = c.watermark.clone();
        }
    }

    /// Whether `meta` (in store `store`) was consumed and has not changed since.
    pub fn has(&self, store: &str, meta: &ObjectMeta) -> bool {
        self.files.get(&(store.to_string(), meta.location.to_string())).is_some_and(|e| e.matches(meta))
    }

    /// This state as one record's worth of consumption.
    pub fn as_consumed(&self) -> Consumed {
        Consumed { files: self.files.values().cloned().collect(), watermark: self.watermark.clone() }
    }
}

/// What a load's output says it has consumed, folded from its records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadState {
    /// The latest commit's sequence number (0: no commit yet).
    pub seq: u64,
    pub run_id: Option<String>,
    pub committed_at: Option<String>,
    /// Record files from the latest checkpoint on (names in `_weir/commits/`).
    pub records: Vec<String>,
    pub extracts: BTreeMap<String, ExtractState>,
}

impl LoadState {
    pub fn extract(&self, name: &str) -> Option<&ExtractState> {
        self.extracts.get(name)
    }

    /// This state with `consumed` (a run's consumption) applied, as a record's whole state.
    pub fn with(&self, consumed: &BTreeMap<String, Consumed>) -> BTreeMap<String, Consumed> {
        let mut folded = self.extracts.clone();
        for (name, c) in consumed {
            folded.entry(name.clone()).or_default().apply(c);
        }
        folded.iter().map(|(k, v)| (k.clone(), v.as_consumed())).collect()
    }

    /// Fold `r` (the next record) into this state.
    pub fn apply(&mut self, r: &CommitRecord) {
        if r.checkpoint {
            self.extracts.clear();
            self.records.clear();
        }
        for (name, c) in &r.extracts {
            self.extracts.entry(name.clone()).or_default().apply(c);
        }
        self.seq = r.seq;
        self.run_id = Some(r.run_id.clone());
        self.committed_at = Some(r.committed_at.clone());
        self.records.push(record_name(r.seq));
    }
}

pub fn record_name(seq: u64) -> String {
    format!("{seq:010}.json")
}

pub(super) fn record_seq(name: &str) -> Option<u64> {
    name.strip_suffix(".json").filter(|s| s.len() >= 10 && s.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()
}

/// The sequence numbers of the records under the output `dir` of `store`, ascending.
pub async fn list_records(store: &Store, dir: &str) -> Result<Vec<u64>, SinkError> {
    let prefix = store.path(&format!("{dir}/{RECORDS_DIR}"));
    let mut seqs: Vec<u64> = match store.local_path(&format!("{dir}/{RECORDS_DIR}")) {
        Some(local) => match std::fs::read_dir(&local) {
            Ok(entries) => entries.flatten().filter_map(|e| record_seq(&e.file_name().to_string_lossy())).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(SinkError::io("reading", &local, e)),
        },
        None => {
            let metas: Vec<ObjectMeta> = store.object_store.list(Some(&prefix)).try_collect().await?;
            metas.iter().filter_map(|m| m.location.filename().and_then(record_seq)).collect()
        }
    };
    seqs.sort_unstable();
    Ok(seqs)
}

/// Read one record.
pub async fn read_record(store: &Store, dir: &str, seq: u64) -> Result<CommitRecord, SinkError> {
    let path: ObjectPath = store.path(&format!("{dir}/{RECORDS_DIR}/{}", record_name(seq)));
    let bytes = store.object_store.get(&path).await?.bytes().await?;
    let record: CommitRecord = serde_json::from_slice(&bytes).map_err(|e| SinkError::Record {
        path: format!("{}/{dir}/{RECORDS_DIR}/{}", store.display_url, record_name(seq)),
        reason: e.to_string(),
    })?;
    if record.weir_commit > FORMAT_VERSION || record.seq != seq {
        return Err(SinkError::Record {
            path: format!("{}/{dir}/{RECORDS_DIR}/{}", store.display_url, record_name(seq)),
            reason: if record.seq != seq {
                format!("it says it is commit {}", record.seq)
            } else {
                format!(
                    "format {} is newer than this weir understands ({FORMAT_VERSION}); upgrade weir",
                    record.weir_commit
                )
            },
        });
    }
    Ok(record)
}

/// The state of the load whose output is `dir` in `store`, given the sequence numbers present
/// (from [`list_records`]): the latest checkpoint and the records after it.
pub async fn read_state(store: &Store, dir: &str, seqs: &[u64]) -> Result<LoadState, SinkError> {
    let mut chain = Vec::new();
    for &seq in seqs.iter().rev() {
        let r = read_record(store, dir, seq).await?;
        let stop = r.checkpoint;
        chain.push(r);
        if stop {
            break;
        }
    }
    let mut state = LoadState::default();
    for r in chain.iter().rev() {
        state.apply(r);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_unchanged_by_etag_when_the_store_gives_one() {
        let meta = |size: u64, secs: i64, e_tag: Option<&str>| ObjectMeta {
            location: ObjectPath::from("raw/d1.csv"),
            last_modified: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
            size,
            e_tag: e_tag.map(str::to_string),
            version: None,
        };
        let seen = LedgerEntry::of("raw", &meta(10, 1_000, Some("\"abc\"")));
        // uploaded again with the same bytes: a new time, the same ETag
        assert!(seen.matches(&meta(10, 2_000, Some("\"abc\""))));
        assert!(!seen.matches(&meta(10, 1_000, Some("\"def\""))));
        assert!(!seen.matches(&meta(11, 1_000, Some("\"abc\""))));
        // no ETag on one side: by time
        let no_tag = LedgerEntry::of("raw", &meta(10, 1_000, None));
        assert!(no_tag.matches(&meta(10, 1_000, Some("\"abc\""))));
        assert!(!no_tag.matches(&meta(10, 2_000, None)));
    }

    fn rec(seq: u64, checkpoint: bool, files: &[&str], wm: Option<&str>) -> CommitRecord {
        let consumed = Consumed {
            files: files
                .iter()
                .map(|p| LedgerEntry {
                    store: "raw".into(),
                    path: p.to_string(),
                    size: 1,
                    last_modified: "2026-01-01T00:00:00.000000000Z".into(),
                    e_tag: None,
                })
                .collect(),
            watermark: wm.map(|v| WatermarkValue { column: "ts".into(), data_type: "Int64".into(), value: v.into() }),
        };
        CommitRecord {
            weir_commit: 1,
            pipeline: "p".into(),
            load: "l".into(),
            seq,
            run_id: format!("r{seq}"),
            committed_at: "2026-01-01T00:00:00Z".into(),
            mode: "append".into(),
            checkpoint,
            rows_written: Some(0),
            files_written: vec![],
            files_removed: vec![],
            extracts: [("e".to_string(), consumed)].into(),
        }
    }

    #[test]
    fn folds_records_from_the_last_checkpoint() {
        let mut s = LoadState::default();
        for r in [rec(1, true, &["a"], Some("5")), rec(2, false, &["b"], None), rec(3, false, &["c"], Some("9"))] {
            s.apply(&r);
        }
        let e = s.extract("e").unwrap();
        assert_eq!(e.files.len(), 3);
        assert_eq!(e.watermark.as_ref().unwrap().value, "9");
        assert_eq!(s.seq, 3);
        s.apply(&rec(4, true, &["z"], None));
        assert_eq!(s.extract("e").unwrap().files.len(), 1);
        assert_eq!(s.extract("e").unwrap().watermark, None);
        assert_eq!(s.records, vec![record_name(4)]);
    }

    #[test]
    fn record_names_sort_and_parse() {
        assert_eq!(record_name(7), "0000000007.json");
        assert_eq!(record_seq("0000000007.json"), Some(7));
        assert_eq!(record_seq("7.json"), None);
        assert_eq!(record_seq("0000000007.json.tmp"), None);
    }

    #[tokio::test]
    async fn reads_the_state_from_an_output() {
        let store = Store::new("m", "memory://commit-test/lake", &[], std::path::Path::new(".")).unwrap();
        for r in [rec(1, true, &["a"], Some("1")), rec(2, false, &["b"], Some("2"))] {
            let p = store.path(&format!("out/{RECORDS_DIR}/{}", record_name(r.seq)));
            store.object_store.put(&p, serde_json::to_vec(&r).unwrap().into()).await.unwrap();
        }
        let seqs = list_records(&store, "out").await.unwrap();
        assert_eq!(seqs, vec![1, 2]);
        let s = read_state(&store, "out", &seqs).await.unwrap();
        assert_eq!(s.extract("e").unwrap().files.len(), 2);
        assert_eq!(s.extract("e").unwrap().watermark.as_ref().unwrap().value, "2");
        // a record that is not one is a clear error, not a silent reset
        let p = store.path(&format!("out/{RECORDS_DIR}/{}", record_name(3)));
        store.object_store.put(&p, b"{\"weir_commit\": 1".to_vec().into()).await.unwrap();
        let e = read_state(&store, "out", &[1, 2, 3]).await.unwrap_err();
        assert!(e.to_string().contains("0000000003.json"), "{e}");
    }
}
