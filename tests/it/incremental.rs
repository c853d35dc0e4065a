//! Incremental loads: only what is new is read, and every source row is loaded exactly once,
//! also when a run is killed at any point between reading and committing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::common::*;

const STORES: &str = "stores:\n  raw: { url: \"file://raw\" }\n  lake: { url: \"file://lake\" }\n";

fn project(tasks: &str) -> Project {
    let p = Project::new();
    p.write("p.yaml", format!("pipeline: inc\n{STORES}tasks:\n{tasks}"));
    p
}

/// A CSV delivery of `ids`, each with `version`.
fn deliver(p: &Project, name: &str, ids: std::ops::Range<u32>, version: u32) {
    let mut s = String::from("id,version,region,updated_at\n");
    for i in ids {
        s.push_str(&format!(
            "{i},{version},{},2024-01-{:02}T00:00:00\n",
            ["north", "south"][(i % 2) as usize],
            1 + version.min(27)
        ));
    }
    p.write(&format!("raw/{name}"), s);
}

/// id → versions present, over the whole output.
fn by_id(p: &Project, dir: &str) -> BTreeMap<u32, Vec<u32>> {
    versions_by_id(read_rows(&p.join(dir)))
}

const APPEND: &str = "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: append }\n";

#[test]
fn new_files_are_read_once_and_a_run_with_nothing_new_is_up_to_date() {
    let p = project(APPEND);
    deliver(&p, "d1.csv", 0..100, 1);
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(by_id(&p, "lake/out").len(), 100);

    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    assert!(status_of(&r.stdout, "src").contains("up to date"), "{}", r.stdout);
    assert!(status_of(&r.stdout, "out").contains("up to date"), "{}", r.stdout);
    assert!(r.stderr.contains("no new files, 1 unchanged not read"), "{}", r.stderr);
    assert_eq!(by_id(&p, "lake/out").len(), 100);

    deliver(&p, "d2.csv", 100..150, 2);
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let src = report["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "src").unwrap();
    assert_eq!(src["files"], 1, "only the new file is read: {src}");
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 150);
    assert!(out.values().all(|v| v.len() == 1), "no row twice");
}

#[test]
fn a_changed_file_is_read_again() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id] }\n",
    );
    deliver(&p, "d1.csv", 0..10, 1);
    deliver(&p, "d2.csv", 10..20, 1);
    p.weir(&["run", "p.yaml"]).ok();
    // the same file name, new content (a bigger file: its size and time differ)
    deliver(&p, "d1.csv", 0..12, 2);
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["tasks"][0]["files"], 1, "only the changed file");
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 20);
    assert!((0..12).all(|i| out[&i] == vec![2]), "{out:?}");
    assert!((12..20).all(|i| out[&i] == vec![1]), "{out:?}");
}

/// A file that grew after an `append` loaded it would be appended whole again (its first rows
/// twice): refused, naming the file, with nothing loaded; new files are still appended.
#[test]
fn append_refuses_a_file_that_changed_since_it_was_appended() {
    let p = project(APPEND);
    deliver(&p, "d1.csv", 0..3, 1);
    p.weir(&["run", "p.yaml"]).ok();
    std::fs::OpenOptions::new()
        .append(true)
        .open(p.join("raw/d1.csv"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"3,1,south,2024-01-02T00:00:00\n"))
        .unwrap();
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(r.stderr.contains("load `out`: raw: d1.csv changed since this load appended it"), "{}", r.stderr);
    assert!(r.stderr.contains("would add its rows twice"), "{}", r.stderr);
    assert!(r.stderr.contains("`mode: merge` with `keys`"), "{}", r.stderr);
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 3, "nothing loaded: {out:?}");
    assert!(out.values().all(|v| v.len() == 1), "{out:?}");
    // A full refresh rebuilds from every file, each row once.
    p.weir(&["run", "p.yaml", "--full-refresh"]).ok();
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 4);
    assert!(out.values().all(|v| v.len() == 1), "{out:?}");
}

/// Kill the run at each point between reading and committing; the next run completes it.
/// Every delivered row ends up in the output exactly once.
#[test]
fn killed_runs_lose_and_double_nothing() {
    for point in ["after_data_files", "before_publish", "after_publish", "after_publish_before_state", "after_state"] {
        let p = project(APPEND);
        deliver(&p, "d1.csv", 0..100, 1);
        p.weir(&["run", "p.yaml"]).ok();
        deliver(&p, "d2.csv", 100..160, 2);
        let r = p.weir_env(&["run", "p.yaml"], &[("WEIR_FAILPOINT", &format!("{point}=kill"))]);
        assert_ne!(r.code, 0, "killed at {point}");
        deliver(&p, "d3.csv", 160..170, 3);
        p.weir(&["run", "p.yaml"]).ok();
        let out = by_id(&p, "lake/out");
        assert_eq!(out.len(), 170, "killed at {point}: {} ids", out.len());
        let doubled: Vec<_> = out.iter().filter(|(_, v)| v.len() != 1).collect();
        assert!(doubled.is_empty(), "killed at {point}: rows loaded twice: {doubled:?}");
        // and nothing is pending
        let r = p.weir(&["run", "p.yaml"]);
        assert!(status_of(&r.stdout, "out").contains("up to date"), "killed at {point}:\n{}", r.stdout);
    }
}

/// SIGKILL at random moments of a run over many files, then a clean run: exactly once.
#[test]
fn kill_at_random_moments_loads_every_row_once() {
    let p = project(APPEND);
    let mut next = 0;
    for k in 0..8u32 {
        deliver(&p, &format!("d{k:02}.csv"), next..next + 2_000, k);
        next += 2_000;
    }
    for k in 0..8u64 {
        p.weir_killed_after(&["run", "p.yaml"], std::time::Duration::from_millis(15 * k));
        deliver(&p, &format!("e{k:02}.csv"), next..next + 500, 100 + k as u32);
        next += 500;
    }
    p.weir(&["run", "p.yaml"]).ok();
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len() as u32, next);
    assert!(out.values().all(|v| v.len() == 1));
}

/// One extract, two loads; the run dies between their commits. The next run gives each load
/// what it has not consumed: the lagging one the whole delivery, the other nothing again.
#[test]
fn loads_that_disagree_get_their_own_delta() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  a:\n    load: { from: src, store: lake, path: a/, mode: append }\n  b:\n    load: { from: src, store: lake, path: b/, mode: append }\n",
    );
    p.write(
        "p.yaml",
        std::fs::read_to_string(p.join("p.yaml"))
            .unwrap()
            .replace("pipeline: inc\n", "pipeline: inc\nmax_parallel: 1\n"),
    );
    deliver(&p, "d1.csv", 0..50, 1);
    p.weir(&["run", "p.yaml"]).ok();
    deliver(&p, "d2.csv", 50..80, 2);
    let r = p.weir_env(&["run", "p.yaml"], &[("WEIR_FAILPOINT", "after_publish@a=kill")]);
    assert_ne!(r.code, 0);
    assert_eq!(by_id(&p, "lake/a").len(), 80);
    assert_eq!(by_id(&p, "lake/b").len(), 50);
    deliver(&p, "d3.csv", 80..90, 3);
    let r = p.weir_env(&["run", "p.yaml"], &[("RUST_LOG", "warn")]);
    r.ok();
    assert!(r.stderr.contains("in 2 passes") || r.stdout.contains("several passes"), "{}\n{}", r.stdout, r.stderr);
    for dir in ["lake/a", "lake/b"] {
        let out = by_id(&p, dir);
        assert_eq!(out.len(), 90, "{dir}");
        assert!(out.values().all(|v| v.len() == 1), "{dir}: {out:?}");
    }
}

/// The outputs are the source of truth: without the state store, a run still knows what
/// each load consumed; with an output restored to an older version, the rows after it are
/// read again.
#[test]
fn the_state_store_is_rebuilt_from_the_outputs() {
    let p = project(APPEND);
    deliver(&p, "d1.csv", 0..10, 1);
    p.weir(&["run", "p.yaml"]).ok();
    let backup = p.join("backup");
    copy_dir(&p.join("lake/out"), &backup);
    deliver(&p, "d2.csv", 10..20, 2);
    p.weir(&["run", "p.yaml"]).ok();

    std::fs::remove_dir_all(p.join(".weir")).unwrap();
    let r = p.weir(&["run", "p.yaml"]);
    assert!(status_of(&r.ok().stdout, "out").contains("up to date"), "{}", r.stdout);

    // restore the first version: d2 is new to it again
    std::fs::remove_dir_all(p.join("lake/out")).unwrap();
    copy_dir(&backup, &p.join("lake/out"));
    let r = p.weir_env(&["run", "p.yaml"], &[("RUST_LOG", "warn")]);
    r.ok();
    assert!(r.stderr.contains("older than the state store remembers"), "{}", r.stderr);
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 20);
    assert!(out.values().all(|v| v.len() == 1));
}

#[test]
fn full_refresh_rebuilds_from_all_input_and_a_failed_one_keeps_the_output() {
    let p = project(APPEND);
    deliver(&p, "d1.csv", 0..10, 1);
    deliver(&p, "d2.csv", 10..20, 1);
    p.weir(&["run", "p.yaml"]).ok();
    deliver(&p, "d1.csv", 0..5, 2); // d1 shrinks: a rebuild has 15 rows
    let r = p.weir_env(&["run", "p.yaml", "--full-refresh"], &[("WEIR_FAILPOINT", "before_publish=error")]);
    r.code(1);
    assert_eq!(by_id(&p, "lake/out").len(), 20, "the previous output stays");
    p.weir(&["run", "p.yaml", "--full-refresh"]).ok();
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 15);
    // the rebuild's record holds every file: the next run has nothing new
    let r = p.weir(&["run", "p.yaml"]);
    assert!(status_of(&r.ok().stdout, "out").contains("up to date"), "{}", r.stdout);
    let records: Vec<_> = std::fs::read_dir(p.join("lake/out/_weir/commits")).unwrap().collect();
    assert_eq!(records.len(), 1, "a full refresh starts a new chain of records");
}

fn ts_rows(p: &Project, name: &str, rows: &[(u32, &str, Option<&str>)]) {
    let mut s = String::from("id,version,updated_at\n");
    for (id, v, ts) in rows {
        s.push_str(&format!("{id},{v},{}\n", ts.unwrap_or("")));
    }
    p.write(&format!("raw/{name}"), s);
}

const WATERMARK_MERGE: &str = "  src:\n    extract: { store: raw, path: \"*.csv\", schema: { updated_at: timestamp }, incremental: { watermark: { column: updated_at, lookback: 1h } } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id], order_by: updated_at }\n";

#[test]
fn watermark_reads_rows_past_it_with_lookback_ties_and_nulls() {
    let p = project(WATERMARK_MERGE);
    ts_rows(
        &p,
        "a.csv",
        &[(1, "1", Some("2024-01-01T10:00:00")), (2, "1", Some("2024-01-01T12:00:00")), (3, "1", None)],
    );
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    assert!(r.stderr.contains("1 rows with a NULL `updated_at` not loaded"), "{}", r.stderr);
    assert_eq!(by_id(&p, "lake/out").keys().copied().collect::<Vec<_>>(), [1, 2]);
    // watermark is 12:00. A late row at 11:30 (inside the 1 h lookback) is read; one at
    // 10:30 (beyond it) is not; a tie at 12:00 is read through the lookback window.
    ts_rows(
        &p,
        "a.csv",
        &[
            (1, "1", Some("2024-01-01T10:00:00")),
            (2, "1", Some("2024-01-01T12:00:00")),
            (4, "2", Some("2024-01-01T11:30:00")),
            (5, "2", Some("2024-01-01T10:30:00")),
            (6, "2", Some("2024-01-01T12:00:00")),
            (7, "2", Some("2024-01-01T13:00:00.000001")),
        ],
    );
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    assert!(r.stderr.contains("rows with updated_at > 2024-01-01T11:00:00"), "{}", r.stderr);
    let out = by_id(&p, "lake/out");
    assert_eq!(out.keys().copied().collect::<Vec<_>>(), [1, 2, 4, 6, 7], "{out:?}");
    assert!(out.values().all(|v| v.len() == 1), "merge: rows read again replace themselves: {out:?}");
    // the watermark keeps microseconds: a row 1 µs later is new, the same instant is not
    let rec = latest_record(&p, "lake/out");
    assert_eq!(rec["extracts"]["src"]["watermark"]["value"], "2024-01-01T13:00:00.000001", "{rec}");
}

#[test]
fn watermark_without_lookback_is_strictly_greater() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", schema: { updated_at: timestamp }, incremental: { watermark: { column: updated_at } } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: append }\n",
    );
    ts_rows(&p, "a.csv", &[(1, "1", Some("2024-01-01T10:00:00"))]);
    p.weir(&["run", "p.yaml"]).ok();
    ts_rows(&p, "b.csv", &[(2, "2", Some("2024-01-01T10:00:00")), (3, "2", Some("2024-01-01T10:00:01"))]);
    p.weir(&["run", "p.yaml"]).ok();
    let out = by_id(&p, "lake/out");
    // the tie (id 2) arrived after the run that set the watermark: it is not read
    assert_eq!(out.keys().copied().collect::<Vec<_>>(), [1, 3]);
    let r = p.weir(&["run", "p.yaml"]);
    assert!(status_of(&r.ok().stdout, "out").contains("up to date"), "{}", r.stdout);
}

fn latest_record(p: &Project, dir: &str) -> serde_json::Value {
    let mut names: Vec<_> =
        std::fs::read_dir(p.join(dir).join("_weir/commits")).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    serde_json::from_str(&std::fs::read_to_string(names.last().unwrap()).unwrap()).unwrap()
}

#[test]
fn merge_updates_inserts_deletes_and_rewrites_only_files_holding_the_keys() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id], order_by: version, delete_when: \"region = 'gone'\", max_rows_per_file: 10000 }\n",
    );
    p.write(
        "p.yaml",
        std::fs::read_to_string(p.join("p.yaml"))
            .unwrap()
            .replace("pipeline: inc\n", "pipeline: inc\nmax_parallel: 1\n"),
    );
    // 50,000 rows in key order: files of about 10,000 rows with disjoint key ranges
    deliver(&p, "d1.csv", 0..50_000, 1);
    p.weir(&["run", "p.yaml", "--target-partitions", "1"]).ok();
    let before: BTreeSet<_> = parquet_files(&p.join("lake/out")).into_iter().collect();
    assert!(before.len() >= 3, "{before:?}");

    // update ids 10..20 twice (version 3 wins), insert 90000, delete 30
    let mut s = String::from("id,version,region,updated_at\n");
    for i in 10..20 {
        s.push_str(&format!("{i},2,north,2024-01-02T00:00:00\n{i},3,north,2024-01-03T00:00:00\n"));
    }
    s.push_str("90000,2,south,2024-01-02T00:00:00\n30,2,gone,2024-01-02T00:00:00\n");
    p.write("raw/d2.csv", s);
    let r = p.weir_env(&["run", "p.yaml", "--target-partitions", "1"], &[("RUST_LOG", "info")]);
    r.ok();
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 50_000, "50,000 + 1 inserted - 1 deleted");
    assert!((10..20).all(|i| out[&i] == vec![3]), "the latest version wins");
    assert!(!out.contains_key(&30) && out[&90000] == vec![2]);
    assert!(out.values().all(|v| v.len() == 1));
    let after: BTreeSet<_> = parquet_files(&p.join("lake/out")).into_iter().collect();
    let kept = before.intersection(&after).count();
    assert_eq!(kept, before.len() - 1, "only the file holding the first ids is rewritten (log: {})", r.stderr);
}

/// The `[min, max]` of `id` in each Parquet file under `dir` (read from the rows).
fn id_ranges(dir: &Path) -> BTreeMap<PathBuf, (u32, u32)> {
    let mut out = BTreeMap::new();
    for f in parquet_files(dir) {
        let rows = read_rows_of_file(&f);
        let ids: Vec<u32> = rows.iter().map(|r| r["id"].parse().unwrap()).collect();
        if let (Some(lo), Some(hi)) = (ids.iter().min(), ids.iter().max()) {
            out.insert(f, (*lo, *hi));
        }
    }
    out
}

fn read_rows_of_file(f: &Path) -> Vec<BTreeMap<String, String>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap()).unwrap().build().unwrap();
    reader.flat_map(|b| batch_rows(&b.unwrap())).collect()
}

#[test]
fn merges_keep_the_output_clustered_by_key_so_the_next_merge_rewrites_little() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id], max_rows_per_file: 10000 }\n",
    );
    // 50,000 rows in key order: files with disjoint key ranges.
    deliver(&p, "d1.csv", 0..50_000, 1);
    p.weir(&["run", "p.yaml", "--target-partitions", "1"]).ok();
    let first = id_ranges(&p.join("lake/out"));
    assert!(first.len() >= 3, "{first:?}");

    // Day 2: updates spread over every file (every 7th id, in a scrambled order) and new ids.
    let mut s = String::from("id,version,region,updated_at\n");
    for k in 0..7_143u32 {
        let i = (k * 3_571) % 7_143 * 7;
        s.push_str(&format!("{i},2,north,2024-01-02T00:00:00\n"));
    }
    for i in 50_000..53_000 {
        s.push_str(&format!("{i},2,south,2024-01-02T00:00:00\n"));
    }
    p.write("raw/d2.csv", s);
    p.weir(&["run", "p.yaml"]).ok();
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 53_000);
    assert!(out.iter().all(|(i, v)| v == &vec![if i % 7 == 0 || *i >= 50_000 { 2 } else { 1 }]), "{out:?}");
    // Every file still holds one key range of the first layout (or only new ids).
    let second = id_ranges(&p.join("lake/out"));
    let old: Vec<(u32, u32)> = first.values().copied().collect();
    for (f, (lo, hi)) in &second {
        assert!(
            old.iter().any(|(a, b)| a <= lo && hi <= b) || *lo >= 50_000,
            "{} holds ids {lo}..={hi}, across the first layout {old:?}",
            f.display()
        );
    }

    // Day 3: updates in the first key range only: one file is rewritten, the others are kept.
    let mut s = String::from("id,version,region,updated_at\n");
    for i in (0..5_000).step_by(100) {
        s.push_str(&format!("{i},3,north,2024-01-03T00:00:00\n"));
    }
    p.write("raw/d3.csv", s);
    let r = p.weir_env(&["run", "p.yaml"], &[("RUST_LOG", "info")]);
    r.ok();
    let third = id_ranges(&p.join("lake/out"));
    // Only the files whose key range meets the updated ids (the first file of day 2, and the
    // file that got its share of day 2's rows, when that was split off) are rewritten.
    let kept = second.keys().filter(|f| third.contains_key(*f)).count();
    let touching = second.values().filter(|(lo, _)| *lo <= 4_900).count();
    assert!(touching <= 2 && second.len() >= 5, "{second:?}");
    assert_eq!(kept, second.len() - touching, "only the files of the first ids are rewritten (log: {})", r.stderr);
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 53_000);
    assert!((0..5_000).step_by(100).all(|i| out[&i] == vec![3]));
    assert!(out.values().all(|v| v.len() == 1));
}

fn row_groups_of(file: &Path) -> usize {
    ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap().metadata().num_row_groups()
}

#[test]
fn a_big_file_is_merged_a_piece_of_row_groups_at_a_time_and_stays_mergeable() {
    let tasks = |max_rows: u32| {
        format!(
            "  src:\n    extract: {{ store: raw, path: \"*.csv\", incremental: {{ new_files: true }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: merge, keys: [id], row_group_rows: 1000, max_rows_per_file: {max_rows} }}\n"
        )
    };
    let p = project(&tasks(1_000_000));
    // One file of 50,000 rows in key order: 50 row groups of 1,000 rows, disjoint key ranges.
    deliver(&p, "d1.csv", 0..50_000, 1);
    p.weir(&["run", "p.yaml", "--target-partitions", "1"]).ok();
    let files = parquet_files(&p.join("lake/out"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(row_groups_of(&files[0]), 50);

    // Files of at most 5,000 rows from now on: the merge cuts the big file into pieces of 5
    // row groups, each rewritten on its own (this run's keys in its range, not in the file's).
    p.write("p.yaml", format!("pipeline: inc\n{STORES}tasks:\n{}", tasks(5_000)));
    let mut s = String::from("id,version,region,updated_at\n");
    for i in (12_000..13_000).chain(40_000..40_010).chain(50_000..50_020) {
        s.push_str(&format!("{i},2,north,2024-01-02T00:00:00\n"));
    }
    s.push_str("999,2,north,2024-01-02T00:00:00\n");
    p.write("raw/d2.csv", s);
    let r = p.weir_env(&["run", "p.yaml"], &[("RUST_LOG", "info")]);
    r.ok();
    assert!(r.stderr.contains("pieces=10"), "the file is cut in 10 pieces: {}", r.stderr);
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 50_020);
    for (i, v) in &out {
        let updated = (12_000..13_000).contains(i) || (40_000..40_010).contains(i) || *i >= 50_000 || *i == 999;
        assert_eq!(v, &vec![if updated { 2 } else { 1 }], "id {i}");
    }
    // Every file holds the keys of one piece (or only new keys).
    let second = id_ranges(&p.join("lake/out"));
    assert!(second.len() >= 10, "{second:?}");
    for (f, (lo, hi)) in &second {
        assert!(lo / 5_000 == hi / 5_000 || *lo >= 50_000, "{} holds ids {lo}..={hi}", f.display());
    }

    // The next merge, into ids 20,000..20,010, rewrites only the file of their piece.
    let mut s = String::from("id,version,region,updated_at\n");
    for i in 20_000..20_010 {
        s.push_str(&format!("{i},3,north,2024-01-03T00:00:00\n"));
    }
    p.write("raw/d3.csv", s);
    p.weir(&["run", "p.yaml"]).ok();
    let third = id_ranges(&p.join("lake/out"));
    let kept = second.keys().filter(|f| third.contains_key(*f)).count();
    assert_eq!(kept, second.len() - 1, "{second:?} then {third:?}");
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 50_020);
    assert!((20_000..20_010).all(|i| out[&i] == vec![3]) && out[&20_010] == vec![1]);
}

#[test]
fn merge_into_files_whose_key_ranges_overlap_still_finds_every_key() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id], delete_when: \"region = 'gone'\", max_rows_per_file: 3000 }\n",
    );
    // Ids in a scrambled order: every file spans nearly the whole key range.
    let mut s = String::from("id,version,region,updated_at\n");
    for k in 0..10_000u32 {
        s.push_str(&format!("{},1,north,2024-01-01T00:00:00\n", (k * 7919) % 10_000));
    }
    p.write("raw/d1.csv", s);
    p.weir(&["run", "p.yaml", "--target-partitions", "1"]).ok();
    let ranges = id_ranges(&p.join("lake/out"));
    assert!(ranges.len() >= 2 && ranges.values().all(|(lo, hi)| *lo < 100 && *hi > 9_900), "{ranges:?}");

    // Updates, deletes and inserts over the whole range.
    let mut s = String::from("id,version,region,updated_at\n");
    for i in (0..10_000).step_by(3) {
        let region = if i % 2 == 0 { "gone" } else { "north" };
        s.push_str(&format!("{i},2,{region},2024-01-02T00:00:00\n"));
    }
    for i in 10_000..10_500 {
        s.push_str(&format!("{i},2,south,2024-01-02T00:00:00\n"));
    }
    p.write("raw/d2.csv", s);
    p.weir(&["run", "p.yaml"]).ok();
    let out = by_id(&p, "lake/out");
    for i in 0..10_500u32 {
        let want: Option<Vec<u32>> = if i >= 10_000 {
            Some(vec![2])
        } else if i % 3 == 0 && i % 2 == 0 {
            None
        } else if i % 3 == 0 {
            Some(vec![2])
        } else {
            Some(vec![1])
        };
        assert_eq!(out.get(&i).cloned(), want, "id {i}");
    }
}

/// Per column of `file`: whether it has a dictionary page.
fn dictionary_pages(file: &Path) -> BTreeMap<String, bool> {
    let b = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap();
    let rg = b.metadata().row_group(0);
    rg.columns().iter().map(|c| (c.column_path().string(), c.dictionary_page_offset().is_some())).collect()
}

#[test]
fn columns_whose_dictionary_overflowed_are_written_plain_next_time() {
    let p = project(APPEND);
    // 200,000 unique ids overflow a 1 MB dictionary; two regions do not.
    deliver(&p, "d1.csv", 0..200_000, 1);
    p.weir(&["run", "p.yaml", "--target-partitions", "1"]).ok();
    let first = parquet_files(&p.join("lake/out"));
    let d = dictionary_pages(&first[0]);
    assert!(d["id"] && d["region"], "the first load tries dictionaries everywhere: {d:?}");

    deliver(&p, "d2.csv", 200_000..201_000, 1);
    p.weir(&["run", "p.yaml"]).ok();
    let second: Vec<_> = parquet_files(&p.join("lake/out")).into_iter().filter(|f| !first.contains(f)).collect();
    assert_eq!(second.len(), 1);
    let d = dictionary_pages(&second[0]);
    assert!(!d["id"], "ids overflowed their dictionary: written plain: {d:?}");
    assert!(d["region"] && d["version"], "columns the dictionary held keep it: {d:?}");
    assert_eq!(by_id(&p, "lake/out").len(), 201_000);
}

/// Per column of `file`'s first row group: its encodings and its bytes as stored.
fn chunk_encodings(file: &Path) -> BTreeMap<String, (Vec<String>, i64)> {
    let b = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap();
    let rg = b.metadata().row_group(0);
    rg.columns()
        .iter()
        .map(|c| {
            let encodings = c.encodings().map(|e| format!("{e:?}")).collect();
            (c.column_path().string(), (encodings, c.compressed_size()))
        })
        .collect()
}

#[test]
fn integer_columns_that_delta_packing_cannot_grow_are_delta_packed_next_time() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id] }\n",
    );
    // `customer`: 20,000 values in a narrow range, in no order (its dictionary holds them, at a
    // hash lookup a value); `code`: 3 values near 10^15 (as deltas, 51 bits each).
    let customer = |i: u64| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 20_000;
    let delivery = |ids: std::ops::Range<u64>, version: u64| {
        let mut s = String::from("id,customer,code,version\n");
        for i in ids {
            s.push_str(&format!(
                "{i},{},{},{version}\n",
                customer(i),
                1_000_000_000_000_000 + (i % 3) * 1_000_000_000_000
            ));
        }
        s
    };
    p.write("raw/d1.csv", delivery(0..100_000, 1));
    p.weir(&["run", "p.yaml", "--target-partitions", "1"]).ok();
    let files = parquet_files(&p.join("lake/out"));
    assert_eq!(files.len(), 1);
    let first = chunk_encodings(&files[0]);
    for c in ["customer", "code"] {
        assert!(
            first[c].0.contains(&"RLE_DICTIONARY".to_string()),
            "{c}: the first load tries a dictionary: {first:?}"
        );
    }

    // An update inside the key range: the file is rewritten, with what its footer taught.
    p.write("raw/d2.csv", delivery(0..100, 2));
    p.weir(&["run", "p.yaml", "--target-partitions", "1"]).ok();
    let files = parquet_files(&p.join("lake/out"));
    assert_eq!(files.len(), 1);
    let second = chunk_encodings(&files[0]);
    assert!(second["customer"].0.contains(&"DELTA_BINARY_PACKED".to_string()), "{second:?}");
    assert!(second["customer"].1 <= first["customer"].1, "delta packing may not grow the column: {first:?} {second:?}");
    assert!(
        second["code"].0.contains(&"RLE_DICTIONARY".to_string()),
        "few wide values keep their dictionary: {second:?}"
    );

    // Once delta-packed, it stays so; and every row is there, exactly.
    p.write("raw/d3.csv", delivery(50..150, 3));
    p.weir(&["run", "p.yaml", "--target-partitions", "1"]).ok();
    let files = parquet_files(&p.join("lake/out"));
    let third = chunk_encodings(&files[0]);
    assert!(third["customer"].0.contains(&"DELTA_BINARY_PACKED".to_string()), "{third:?}");
    assert!(third["code"].0.contains(&"RLE_DICTIONARY".to_string()), "{third:?}");
    let rows = read_rows(&p.join("lake/out"));
    assert_eq!(rows.len(), 100_000);
    for r in &rows {
        let id: u64 = r["id"].parse().unwrap();
        assert_eq!(r["customer"], customer(id).to_string(), "{r:?}");
        assert_eq!(r["code"], (1_000_000_000_000_000 + (id % 3) * 1_000_000_000_000).to_string(), "{r:?}");
        let want = if id < 50 {
            2
        } else if id < 150 {
            3
        } else {
            1
        };
        assert_eq!(r["version"], want.to_string(), "{r:?}");
    }

    // An overwrite that makes the delta-packed column text: what was learned does not apply.
    p.write(
        "p2.yaml",
        format!("pipeline: inc2\n{STORES}tasks:\n  src:\n    extract: {{ store: raw, path: \"text/*.csv\" }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: overwrite }}\n"),
    );
    p.write("raw/text/t.csv", "id,customer,code,version\n1,c-17,7,1\n2,c-18,8,1\n");
    p.weir(&["run", "p2.yaml"]).ok();
    let rows = read_rows(&p.join("lake/out"));
    assert_eq!(rows.iter().map(|r| r["customer"].as_str()).collect::<Vec<_>>(), ["c-17", "c-18"]);
}

#[test]
fn merge_refuses_ambiguous_and_null_keys_and_publishes_nothing() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id] }\n",
    );
    deliver(&p, "d1.csv", 0..10, 1);
    p.weir(&["run", "p.yaml"]).ok();
    p.write(
        "raw/d2.csv",
        "id,version,region,updated_at\n3,2,north,2024-01-01T00:00:00\n3,3,north,2024-01-01T00:00:00\n",
    );
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(
        r.stdout.contains("several of this run's rows have the same keys (for example id=3 (2 rows)); set `order_by`"),
        "{}",
        r.stdout
    );
    assert!(by_id(&p, "lake/out").values().all(|v| v == &vec![1]));
    p.write("raw/d2.csv", "id,version,region,updated_at\n,2,north,2024-01-01T00:00:00\n");
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(r.stdout.contains("1 of this run's rows have a NULL in the merge keys (id)"), "{}", r.stdout);
    // fixed delivery: the ledger had not advanced, so it is read now
    p.write("raw/d2.csv", "id,version,region,updated_at\n3,2,north,2024-01-01T00:00:00\n");
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(by_id(&p, "lake/out")[&3], vec![2]);
}

#[test]
fn partitioned_merge_moves_a_row_between_partitions() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id], partition_by: [region] }\n",
    );
    deliver(&p, "d1.csv", 0..10, 1);
    p.weir(&["run", "p.yaml"]).ok();
    // id 2 was north; now south
    p.write("raw/d2.csv", "id,version,region,updated_at\n2,2,south,2024-01-05T00:00:00\n");
    p.weir(&["run", "p.yaml"]).ok();
    let rows = read_rows(&p.join("lake/out"));
    let two: Vec<_> = rows.iter().filter(|r| r["id"] == "2").collect();
    assert_eq!(two.len(), 1, "{two:?}");
    assert_eq!(two[0]["region"], "south");
    assert_eq!(rows.len(), 10);
}

#[test]
fn a_partitioned_merge_keeps_each_partition_clustered_by_key() {
    let load = |max: u32| {
        format!(
            "  src:\n    extract: {{ store: raw, path: \"*.csv\", incremental: {{ new_files: true }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: merge, keys: [id], partition_by: [region], row_group_rows: 1000, max_rows_per_file: {max} }}\n"
        )
    };
    let p = project(&load(100_000));
    // 40,000 rows, north and south alternating: a file per region, in key order, in row groups
    // of 1,000 rows.
    deliver(&p, "d1.csv", 0..40_000, 1);
    p.weir(&["run", "p.yaml", "--target-partitions", "1"]).ok();
    let files = parquet_files(&p.join("lake/out"));
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| row_groups_of(f) == 20));
    // Files now bigger than the load's `max_rows_per_file` (written before it was lowered, or
    // by another tool) are merged in pieces of 5,000 rows: ids 0..10,000 of both regions, and
    // so on.
    p.write("p.yaml", format!("pipeline: inc\n{STORES}tasks:\n{}", load(5_000)));
    let first: BTreeMap<PathBuf, (u32, u32)> =
        (0..4).map(|k| (PathBuf::from(k.to_string()), (k * 10_000, k * 10_000 + 9_999))).collect();

    // Updates across the whole key range, two ids moving to the other region, new ids.
    let mut s = String::from("id,version,region,updated_at\n");
    for i in (0..40_000).step_by(10) {
        let region = if i == 10 || i == 20_000 {
            ["south", "north"][(i % 2) as usize]
        } else {
            ["north", "south"][(i % 2) as usize]
        };
        s.push_str(&format!("{i},2,{region},2024-01-02T00:00:00\n"));
    }
    for i in 40_000..41_000 {
        s.push_str(&format!("{i},2,{},2024-01-02T00:00:00\n", ["north", "south"][(i % 2) as usize]));
    }
    p.write("raw/d2.csv", s);
    p.weir(&["run", "p.yaml"]).ok();
    let rows = read_rows(&p.join("lake/out"));
    assert_eq!(rows.len(), 41_000);
    let mut seen = BTreeSet::new();
    for r in &rows {
        let i: u32 = r["id"].parse().unwrap();
        assert!(seen.insert(i), "id {i} twice");
        let version = if i % 10 == 0 || i >= 40_000 { "2" } else { "1" };
        let moved = i == 10 || i == 20_000;
        let region = ["north", "south"][((i % 2 == 1) ^ moved) as usize];
        assert_eq!((r["version"].as_str(), r["region"].as_str()), (version, region), "id {i}");
    }
    // Every rewritten file still holds one key range of the first layout (or only new ids).
    let second = id_ranges(&p.join("lake/out"));
    let old: Vec<(u32, u32)> = first.values().copied().collect();
    for (f, (lo, hi)) in &second {
        assert!(
            old.iter().any(|(a, b)| a <= lo && hi <= b) || *lo >= 40_000,
            "{} holds ids {lo}..={hi}, across the first layout {old:?}",
            f.display()
        );
    }

    // A merge of ids in the first range rewrites only the files of that range (one per region).
    let mut s = String::from("id,version,region,updated_at\n");
    for i in 100..110 {
        s.push_str(&format!("{i},3,{},2024-01-03T00:00:00\n", ["north", "south"][(i % 2) as usize]));
    }
    p.write("raw/d3.csv", s);
    p.weir(&["run", "p.yaml"]).ok();
    let third = id_ranges(&p.join("lake/out"));
    let kept = second.keys().filter(|f| third.contains_key(*f)).count();
    let touching = second.values().filter(|(lo, hi)| *lo <= 109 && *hi >= 100).count();
    assert!(touching <= 2, "{second:?}");
    assert_eq!(kept, second.len() - touching, "{second:?} then {third:?}");
    assert_eq!(read_rows(&p.join("lake/out")).len(), 41_000);
}

#[test]
fn replace_partitions_replaces_only_the_partitions_present() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: replace_partitions, partition_by: [region] }\n",
    );
    deliver(&p, "d1.csv", 0..10, 1); // north and south
    p.weir(&["run", "p.yaml"]).ok();
    p.write(
        "raw/d2.csv",
        "id,version,region,updated_at\n100,2,south,2024-01-05T00:00:00\n101,2,east,2024-01-05T00:00:00\n",
    );
    p.weir(&["run", "p.yaml"]).ok();
    let rows = read_rows(&p.join("lake/out"));
    let by_region =
        |r: &str| rows.iter().filter(|x| x["region"] == r).map(|x| x["id"].clone()).collect::<BTreeSet<_>>();
    assert_eq!(by_region("north").len(), 5, "north untouched");
    assert_eq!(by_region("south"), ["100".to_string()].into(), "south replaced");
    assert_eq!(by_region("east"), ["101".to_string()].into(), "east added");
}

#[test]
fn plan_shows_what_an_incremental_run_would_read() {
    let p = project(APPEND);
    deliver(&p, "d1.csv", 0..10, 1);
    p.weir(&["run", "p.yaml"]).ok();
    deliver(&p, "d2.csv", 10..20, 2);
    let r = p.weir(&["plan", "p.yaml"]);
    r.ok();
    assert!(r.stdout.contains("incremental  new files: 1 new or changed of 2 (339 B) for load `out`"), "{}", r.stdout);
}

#[test]
fn appending_other_columns_is_refused() {
    let p = project(APPEND);
    deliver(&p, "d1.csv", 0..10, 1);
    p.weir(&["run", "p.yaml"]).ok();
    std::fs::remove_file(p.join("raw/d1.csv")).unwrap();
    p.write("raw/d2.csv", "id,version\n1,2\n");
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(r.stdout.contains("this run's rows have other columns than the output"), "{}", r.stdout);
    assert!(r.stdout.contains("--full-refresh"), "{}", r.stdout);
}

fn run_id_of(r: &Run) -> String {
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    v["run_id"].as_str().unwrap().to_string()
}

#[test]
fn resume_reuses_committed_loads_and_staged_transforms() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\" }\n  shared:\n    transform: { sql: \"SELECT id, version, region FROM src WHERE id >= 0\" }\n  a:\n    load: { from: shared, store: lake, path: a/ }\n  b:\n    load: { from: shared, store: lake, path: b/ }\n",
    );
    deliver(&p, "d1.csv", 0..100, 1);
    let r = p.weir_env(&["run", "p.yaml", "--json"], &[("WEIR_FAILPOINT", "after_data_files@b=error")]);
    r.code(1);
    let failed = run_id_of(&r);
    let a_files = parquet_files(&p.join("lake/a"));
    assert_eq!(a_files.len(), 1);
    assert!(!p.join("lake/b").exists());

    // `shared` would fail if it ran again: it is reused; `a` is not written again
    let r =
        p.weir_env(&["run", "p.yaml", "--resume", &failed, "--json"], &[("WEIR_FAILPOINT", "task_start@shared=error")]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let note = |t: &str| v["tasks"].as_array().unwrap().iter().find(|x| x["name"] == t).unwrap()["note"].clone();
    assert_eq!(note("shared"), format!("reused from run {failed}"));
    assert_eq!(note("a"), format!("committed by run {failed}"));
    assert_eq!(parquet_files(&p.join("lake/a")), a_files);
    assert_eq!(by_id(&p, "lake/b").len(), 100);

    // a run that succeeded has nothing to resume
    let done = run_id_of(&r);
    let r = p.weir(&["run", "p.yaml", "--resume", &done]);
    r.code(2);
    assert!(r.stderr.contains("that run succeeded"), "{}", r.stderr);
    let r = p.weir(&["run", "p.yaml", "--resume", "nope"]);
    r.code(2);
    assert!(r.stderr.contains("no such run"), "{}", r.stderr);
}

#[test]
fn resume_of_a_run_that_failed_before_any_task_ran_runs_everything() {
    let p = project(APPEND);
    deliver(&p, "d1.csv", 0..10, 1);
    let r = p.weir_env(&["run", "p.yaml", "--json"], &[("WEIR_FAILPOINT", "task_start@src=error")]);
    r.code(1);
    let failed = run_id_of(&r);
    p.weir(&["run", "p.yaml", "--resume", &failed]).ok();
    assert_eq!(by_id(&p, "lake/out").len(), 10);
}

#[test]
fn new_files_and_watermark_together_scan_only_new_files_for_new_rows() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", schema: { updated_at: timestamp }, incremental: { new_files: true, watermark: { column: updated_at } } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: append }\n",
    );
    ts_rows(&p, "a.csv", &[(1, "1", Some("2024-01-01T10:00:00")), (2, "1", Some("2024-01-01T11:00:00"))]);
    p.weir(&["run", "p.yaml"]).ok();
    // a new file repeating an old row (at the watermark) and bringing a new one
    ts_rows(&p, "b.csv", &[(2, "1", Some("2024-01-01T11:00:00")), (3, "2", Some("2024-01-01T12:00:00"))]);
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["tasks"][0]["files"], 1, "only the new file is scanned");
    let out = by_id(&p, "lake/out");
    assert_eq!(out.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert!(out.values().all(|v| v.len() == 1), "{out:?}");
}

/// Nanosecond cursors: a row 1 ns past the watermark is read, one at it is not.
#[test]
fn nanosecond_watermark_keeps_every_digit() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", schema: { updated_at: timestamp(9) }, incremental: { watermark: { column: updated_at } } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: append }\n",
    );
    ts_rows(&p, "a.csv", &[(1, "1", Some("2024-01-01T10:00:00.123456789"))]);
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(latest_record(&p, "lake/out")["extracts"]["src"]["watermark"]["value"], "2024-01-01T10:00:00.123456789");
    ts_rows(
        &p,
        "a.csv",
        &[
            (1, "1", Some("2024-01-01T10:00:00.123456789")),
            (2, "2", Some("2024-01-01T10:00:00.123456789")),
            (3, "2", Some("2024-01-01T10:00:00.123456790")),
        ],
    );
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(by_id(&p, "lake/out").keys().copied().collect::<Vec<_>>(), [1, 3]);
}

/// A text cursor with quotes and SQL in it: the watermark is a bound value, never SQL text.
#[test]
fn text_watermark_values_are_bound_not_formatted() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { watermark: { column: cursor } } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: append }\n",
    );
    p.write("raw/a.csv", "id,version,cursor\n1,1,a'b\n2,1,\"a' OR '1'='1\"\n");
    p.weir(&["run", "p.yaml"]).ok();
    p.write("raw/a.csv", "id,version,cursor\n1,1,a'b\n2,1,\"a' OR '1'='1\"\n3,2,b'\n");
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(by_id(&p, "lake/out").keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(latest_record(&p, "lake/out")["extracts"]["src"]["watermark"]["value"], "b'");
}

/// Kill a merge at each point between reading and committing: the output ends as the latest
/// version of every key, each key once.
#[test]
fn killed_merges_end_with_the_latest_version_of_every_key() {
    let tasks = "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id], order_by: version }\n";
    for point in ["after_data_files", "before_publish", "after_publish", "after_publish_before_state"] {
        let p = project(tasks);
        deliver(&p, "d1.csv", 0..100, 1);
        p.weir(&["run", "p.yaml"]).ok();
        deliver(&p, "d2.csv", 50..150, 2);
        let r = p.weir_env(&["run", "p.yaml"], &[("WEIR_FAILPOINT", &format!("{point}=kill"))]);
        assert_ne!(r.code, 0);
        deliver(&p, "d3.csv", 140..160, 3);
        p.weir(&["run", "p.yaml"]).ok();
        let out = by_id(&p, "lake/out");
        assert_eq!(out.len(), 160, "killed at {point}");
        for (id, versions) in &out {
            let want = if *id >= 140 {
                3
            } else if *id >= 50 {
                2
            } else {
                1
            };
            assert_eq!(versions, &vec![want], "killed at {point}: id {id}");
        }
    }
}

#[test]
fn compression_level_reaches_the_writer() {
    let mut sizes = Vec::new();
    for level in [1, 19] {
        let p = project(&format!(
            "  src:\n    extract: {{ store: raw, path: \"*.csv\" }}\n  out:\n    load: {{ from: src, store: lake, path: out/, compression_level: {level} }}\n"
        ));
        deliver(&p, "d1.csv", 0..100_000, 1);
        p.weir(&["run", "p.yaml", "--target-partitions", "1"]).ok();
        sizes.push(parquet_files(&p.join("lake/out")).iter().map(|f| f.metadata().unwrap().len()).sum::<u64>());
        assert_eq!(by_id(&p, "lake/out").len(), 100_000);
    }
    assert!(sizes[1] < sizes[0], "zstd level 19 writes smaller files than level 1: {sizes:?}");
}

/// A merge keyed by a text column (the anti-join path; an integer key takes a hash set of the
/// run's keys): updates replace their rows, new keys are added, every key once.
#[test]
fn a_merge_keyed_by_text_replaces_and_adds_rows() {
    let p = project(
        "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [code], max_rows_per_file: 10000 }\n",
    );
    let csv = |ids: std::ops::Range<u32>, version: u32| {
        let mut s = String::from("code,version\n");
        for i in ids {
            s.push_str(&format!("c{i:06},{version}\n"));
        }
        s
    };
    p.write("raw/d1.csv", csv(0..30_000, 1));
    p.weir(&["run", "p.yaml"]).ok();
    p.write("raw/d2.csv", csv(25_000..35_000, 2));
    p.weir(&["run", "p.yaml"]).ok();
    let rows = read_rows(&p.join("lake/out"));
    let mut seen = BTreeMap::new();
    for r in &rows {
        assert!(seen.insert(r["code"].clone(), r["version"].clone()).is_none(), "{} twice", r["code"]);
    }
    assert_eq!(seen.len(), 35_000);
    for i in 0..35_000u32 {
        assert_eq!(seen[&format!("c{i:06}")], if i < 25_000 { "1" } else { "2" }, "c{i:06}");
    }
}
