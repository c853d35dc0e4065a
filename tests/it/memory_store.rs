//! A pipeline over object stores (the in-memory one), through the library: the publish path
//! that copies into place and deletes the replaced objects, used by S3, GCS and Azure.

use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use weir::compile;
use weir::run::{self, RunOptions, RunStatus};
use weir::spec::{self, LoadOptions};
use weir::storage::Store;

async fn run_once(yaml: &str, staging: &Path) -> run::RunReport {
    let run_id = run::new_run_id();
    let loaded =
        spec::parse(Path::new("mem.yaml"), yaml.to_string(), &LoadOptions::new(&run_id, "2026-01-01")).unwrap();
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let plan = compile::compile(&loaded).await.unwrap_or_else(|e| panic!("{e:?}"));
    let opts = RunOptions {
        run_id,
        run_date: "2026-01-01".into(),
        select: None,
        staging_dir: staging.to_path_buf(),
        cancel: Default::default(),
        observer: None,
        state: None,
        target_partitions: Some(2),
        memory_limit: None,
        full_refresh: false,
        resume: None,
        logical_time: None,
        engine: None,
    };
    run::run(Arc::new(plan), opts).await.unwrap()
}

/// Data files under `prefix` (commit records left out).
async fn list(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> =
        store.list(Some(&ObjectPath::from(prefix))).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
    v.retain(|p| !p.contains("/_weir/"));
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_and_append_on_an_object_store() {
    let staging = tempfile::tempdir().unwrap();
    let store = Store::new("m", "memory://weir-it-memory", &[], Path::new(".")).unwrap().object_store;
    store
        .put(&ObjectPath::from("src/a.csv"), PutPayload::from_static(b"id,region\n1,north\n2,south\n3,north\n"))
        .await
        .unwrap();
    let yaml = |mode: &str| {
        format!(
            "stores:\n  src: {{ url: \"memory://weir-it-memory/src\" }}\n  lake: {{ url: \"memory://weir-it-memory/lake\" }}\ntasks:\n  a:\n    extract: {{ store: src, path: a.csv }}\n  out:\n    load: {{ from: a, store: lake, path: marts/a/, mode: {mode}, partition_by: [region] }}\n"
        )
    };
    let r = run_once(&yaml("overwrite"), staging.path()).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    let first = list(&store, "lake").await;
    assert_eq!(first.len(), 2, "one file per region: {first:?}");
    assert!(first.iter().all(|f| f.starts_with("lake/marts/a/region=")), "{first:?}");

    // overwrite: the new files replace the old ones, nothing staged is left
    store.put(&ObjectPath::from("src/a.csv"), PutPayload::from_static(b"id,region\n4,east\n")).await.unwrap();
    let r = run_once(&yaml("overwrite"), staging.path()).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    let second = list(&store, "lake").await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(second[0].starts_with("lake/marts/a/region=east/"), "{second:?}");

    // append: the old files stay, the new ones are added
    let r = run_once(&yaml("append"), staging.path()).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    let third = list(&store, "lake").await;
    assert_eq!(third.len(), 2, "{third:?}");
    assert!(third.contains(&second[0]));
    assert_eq!(r.tasks.iter().find(|t| t.name == "out").unwrap().rows_out, Some(1));
    // each version carries its commit record; append keeps the earlier ones
    let mut records: Vec<String> = store
        .list(Some(&ObjectPath::from("lake/marts/a/_weir")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    records.sort();
    assert_eq!(records, ["lake/marts/a/_weir/commits/0000000002.json", "lake/marts/a/_weir/commits/0000000003.json"]);
}

/// Incremental merge and replace_partitions on an object store: the publish keeps the files
/// the new version keeps, replaces the others, and the commit records say what was consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_merge_and_replace_partitions_on_an_object_store() {
    let staging = tempfile::tempdir().unwrap();
    let store = Store::new("m", "memory://weir-it-memory-inc", &[], Path::new(".")).unwrap().object_store;
    let put = |p: &'static str, body: &'static [u8]| {
        let store = store.clone();
        async move { store.put(&ObjectPath::from(p), PutPayload::from_static(body)).await.unwrap() }
    };
    put("src/d1.csv", b"id,region,v\n1,north,1\n2,south,1\n3,north,1\n").await;
    let yaml = "stores:\n  src: { url: \"memory://weir-it-memory-inc/src\" }\n  lake: { url: \"memory://weir-it-memory-inc/lake\" }\ntasks:\n  a:\n    extract: { store: src, path: \"*.csv\", incremental: { new_files: true } }\n  merged:\n    load: { from: a, store: lake, path: merged/, mode: merge, keys: [region, id], partition_by: [region] }\n  parts:\n    load: { from: a, store: lake, path: parts/, mode: replace_partitions, partition_by: [region] }\n";
    let r = run_once(yaml, staging.path()).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    put("src/d2.csv", b"id,region,v\n2,south,2\n4,east,2\n").await;
    let r = run_once(yaml, staging.path()).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    let merged = list(&store, "lake/merged").await;
    let north: Vec<_> = merged.iter().filter(|p| p.contains("region=north/")).collect();
    assert_eq!(north.len(), 1, "the north partition holds no key of the second delivery: kept: {merged:?}");
    assert!(merged.iter().any(|p| p.contains("region=east/")));
    let parts = list(&store, "lake/parts").await;
    assert_eq!(parts.iter().filter(|p| p.contains("region=south/")).count(), 1, "south replaced: {parts:?}");
    assert_eq!(parts.iter().filter(|p| p.contains("region=north/")).count(), 1, "north kept: {parts:?}");
    // a third run has nothing new: up to date, nothing written
    let r = run_once(yaml, staging.path()).await;
    assert!(r.tasks.iter().all(|t| t.name == "a" || t.status == run::TaskStatus::UpToDate), "{:?}", r.tasks);
    assert_eq!(list(&store, "lake/merged").await, merged);
    let records: Vec<String> = store
        .list(Some(&ObjectPath::from("lake/merged/_weir/commits")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
}
