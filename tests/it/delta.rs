//! `format: delta`: every load is one Delta commit that also carries what the load consumed,
//! so incremental loads stay exactly-once through kills, and the table is read back through
//! the Delta log (removed and uncommitted files never count).

use std::collections::BTreeMap;

use crate::common::*;

const STORES: &str = "stores:\n  raw: { url: \"file://raw\" }\n  lake: { url: \"file://lake\" }\n";

fn project(tasks: &str) -> Project {
    let p = Project::new();
    p.write("p.yaml", format!("pipeline: dl\n{STORES}tasks:\n{tasks}"));
    p
}

fn deliver(p: &Project, name: &str, ids: std::ops::Range<u32>, version: u32) {
    let mut s = String::from("id,version,region,op\n");
    for i in ids {
        s.push_str(&format!("{i},{version},{},U\n", ["north", "south"][(i % 2) as usize]));
    }
    p.write(&format!("raw/{name}"), s);
}

/// id → versions present in the table's current version.
fn by_id(p: &Project, dir: &str) -> BTreeMap<u32, Vec<u32>> {
    versions_by_id(read_delta_rows(&p.join(dir)))
}

/// weir's records in the log, oldest first: (Delta operation, record).
fn records(p: &Project, dir: &str) -> Vec<(String, serde_json::Value)> {
    delta_log(&p.join(dir))
        .into_iter()
        .filter_map(|entry| {
            let info = entry.iter().find_map(|a| a.get("commitInfo"))?.clone();
            Some((info["operation"].as_str().unwrap_or("").to_string(), info.get("weir")?.clone()))
        })
        .collect()
}

fn load(mode: &str, extra: &str) -> String {
    format!(
        "  src:\n    extract: {{ store: raw, path: \"*.csv\", incremental: {{ new_files: true }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, format: delta, mode: {mode}{extra} }}\n"
    )
}

#[test]
fn append_commits_each_delivery_once_with_its_record() {
    let p = project(&load("append", ""));
    deliver(&p, "d1.csv", 0..100, 1);
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    deliver(&p, "d2.csv", 100..150, 2);
    p.weir(&["run", "p.yaml"]).ok();
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 150);
    assert!(out.values().all(|v| v.len() == 1));

    // Nothing new: no commit, up to date.
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    assert!(status_of(&r.stdout, "out").contains("up to date"), "{}", r.stdout);
    let recs = records(&p, "lake/out");
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(recs.iter().all(|(op, _)| op == "WRITE"), "{recs:?}");
    assert_eq!(recs[1].1["seq"], 2);
    assert_eq!(recs[1].1["checkpoint"], true);
    // the record holds the whole ledger: both files
    let files = recs[1].1["extracts"]["src"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    // and the Delta transaction of the load is at the record's sequence number
    let txns: Vec<serde_json::Value> =
        delta_log(&p.join("lake/out")).into_iter().flatten().filter_map(|a| a.get("txn").cloned()).collect();
    assert_eq!(txns.last().unwrap()["appId"], "weir:dl:out");
    assert_eq!(txns.last().unwrap()["version"], 2);
}

#[test]
fn merge_updates_inserts_and_deletes_in_one_delta_commit() {
    let p = project(&load("merge", ", keys: [id], order_by: version, delete_when: \"op = 'D'\""));
    deliver(&p, "d1.csv", 0..100, 1);
    p.weir(&["run", "p.yaml"]).ok();
    // day 2: ids 50..120 again (update 50..99, insert 100..119), twice for some ids (the
    // later version wins), and deletes of 0..5
    deliver(&p, "d2.csv", 50..120, 2);
    deliver(&p, "d2b.csv", 60..70, 3);
    let mut deletes = String::from("id,version,region,op\n");
    for i in 0..5 {
        deletes.push_str(&format!("{i},9,north,D\n"));
    }
    p.write("raw/d2c.csv", deletes);
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 115, "0..5 deleted, 100..120 inserted");
    assert!((0..5).all(|i| !out.contains_key(&i)));
    assert!((5..50).all(|i| out[&i] == vec![1]), "{out:?}");
    assert!((50..60).all(|i| out[&i] == vec![2]), "{out:?}");
    assert!((60..70).all(|i| out[&i] == vec![3]), "{out:?}");
    assert!((70..120).all(|i| out[&i] == vec![2]), "{out:?}");
    let recs = records(&p, "lake/out");
    assert_eq!(recs.last().unwrap().0, "MERGE", "{recs:?}");
}

#[test]
fn replace_partitions_replaces_only_the_partitions_in_the_delta() {
    let p = project(&load("replace_partitions", ", partition_by: [region]"));
    deliver(&p, "d1.csv", 0..10, 1); // north and south
    p.weir(&["run", "p.yaml"]).ok();
    // only even ids: north
    let mut s = String::from("id,version,region,op\n");
    for i in [100, 102] {
        s.push_str(&format!("{i},2,north,U\n"));
    }
    p.write("raw/d2.csv", s);
    p.weir(&["run", "p.yaml"]).ok();
    let rows = read_delta_rows(&p.join("lake/out"));
    let north: Vec<&str> = rows.iter().filter(|r| r["region"] == "north").map(|r| r["id"].as_str()).collect();
    let south = rows.iter().filter(|r| r["region"] == "south").count();
    assert_eq!(north.len(), 2, "north replaced: {rows:?}");
    assert_eq!(south, 5, "south kept: {rows:?}");
    // partition directories, as Delta writers lay them out
    assert!(p.join("lake/out/region=south").is_dir());
}

#[test]
fn overwrite_and_full_refresh_replace_the_table_and_may_change_its_columns() {
    let p = Project::new();
    p.write("raw/a.csv", "id,name\n1,a\n2,b\n");
    p.write(
        "p.yaml",
        format!(
            "pipeline: dl\n{STORES}tasks:\n  src:\n    extract: {{ store: raw, path: a.csv }}\n  out:\n    load: {{ from: src, store: lake, path: out/, format: delta }}\n"
        ),
    );
    p.weir(&["run", "p.yaml"]).ok();
    p.write("raw/a.csv", "id,name,extra\n3,c,x\n");
    p.weir(&["run", "p.yaml"]).ok();
    let rows = read_delta_rows(&p.join("lake/out"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["extra"], "x");
    // the previous version is still there for time travel
    assert_eq!(delta_log(&p.join("lake/out")).len(), 2);
}

#[test]
fn appending_other_columns_is_refused_and_nothing_is_committed() {
    let p = project(&load("append", ""));
    deliver(&p, "d1.csv", 0..10, 1);
    p.weir(&["run", "p.yaml"]).ok();
    p.write("raw/d2.csv", "id,version,region,op,extra\n10,2,north,U,x\n");
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(r.stdout.contains("other columns") || r.stderr.contains("other columns"), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(delta_log(&p.join("lake/out")).len(), 1);
    // and with --full-refresh the table is rebuilt with the new columns
    p.write("raw/d1.csv", "id,version,region,op,extra\n1,1,north,U,y\n");
    p.weir(&["run", "p.yaml", "--full-refresh"]).ok();
    let rows = read_delta_rows(&p.join("lake/out"));
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["extra"] != "NULL"), "{rows:?}");
}

#[test]
fn a_directory_of_other_files_is_not_turned_into_a_table() {
    let p = project(&load("append", ""));
    deliver(&p, "d1.csv", 0..10, 1);
    p.write("lake/out/someone-elses.parquet", "not ours");
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("is not a Delta table"), "{all}");
    assert!(!p.join("lake/out/_delta_log").exists());
    assert_eq!(std::fs::read(p.join("lake/out/someone-elses.parquet")).unwrap(), b"not ours");
}

/// Kill the run at each point between reading and committing, for append and merge; the next
/// run completes it. Every delivered row is in the table exactly once, at its latest version.
#[test]
fn killed_runs_lose_and_double_nothing() {
    for (mode, extra) in [("append", ""), ("merge", ", keys: [id]")] {
        for point in
            ["after_data_files", "before_publish", "after_publish", "after_publish_before_state", "after_state"]
        {
            let p = project(&load(mode, extra));
            deliver(&p, "d1.csv", 0..100, 1);
            p.weir(&["run", "p.yaml"]).ok();
            let upto = if mode == "merge" { 0..160 } else { 100..160 };
            deliver(&p, "d2.csv", upto, 2);
            let r = p.weir_env(&["run", "p.yaml"], &[("WEIR_FAILPOINT", &format!("{point}@out=kill"))]);
            assert_ne!(r.code, 0, "{mode}: killed at {point}");
            deliver(&p, "d3.csv", 160..170, 3);
            p.weir(&["run", "p.yaml"]).ok();
            let out = by_id(&p, "lake/out");
            assert_eq!(out.len(), 170, "{mode}, killed at {point}: {} ids", out.len());
            let doubled: Vec<_> = out.iter().filter(|(_, v)| v.len() != 1).collect();
            assert!(doubled.is_empty(), "{mode}, killed at {point}: rows loaded twice: {doubled:?}");
            if mode == "merge" {
                assert!((0..160).all(|i| out[&i] == vec![2]), "{mode}, killed at {point}: {out:?}");
            }
            let r = p.weir(&["run", "p.yaml"]);
            assert!(status_of(&r.stdout, "out").contains("up to date"), "{mode}, killed at {point}:\n{}", r.stdout);
        }
    }
}

/// The table, not the state store, is the source of truth: without `.weir/state.db` a run
/// finds what was consumed in the table's last commit.
#[test]
fn the_state_is_rebuilt_from_the_table() {
    let p = project(&load("append", ""));
    deliver(&p, "d1.csv", 0..10, 1);
    p.weir(&["run", "p.yaml"]).ok();
    std::fs::remove_dir_all(p.join(".weir")).unwrap();
    deliver(&p, "d2.csv", 10..20, 2);
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["tasks"][0]["files"], 1, "only the new file: {report}");
    let out = by_id(&p, "lake/out");
    assert_eq!(out.len(), 20);
    assert!(out.values().all(|v| v.len() == 1));
}

/// Another writer's commits after weir's (here: a compaction by the `deltalake` package) do
/// not hide weir's record.
#[test]
fn other_writers_commits_do_not_hide_the_record() {
    let Some(python) = test_python() else { return };
    let p = project(&load("append", ""));
    deliver(&p, "d1.csv", 0..10, 1);
    p.weir(&["run", "p.yaml"]).ok();
    deliver(&p, "d2.csv", 10..20, 2);
    p.weir(&["run", "p.yaml"]).ok();
    let script =
        "import sys, deltalake\nt = deltalake.DeltaTable(sys.argv[1])\nt.optimize.compact()\nprint(t.version())\n";
    let out = std::process::Command::new(&python)
        .args(["-c", script, p.join("lake/out").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(p.join(".weir")).unwrap();
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    assert!(status_of(&r.stdout, "out").contains("up to date"), "{}", r.stdout);
    assert_eq!(by_id(&p, "lake/out").len(), 20);
}
