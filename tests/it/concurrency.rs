//! The executor: independent branches overlap (proven from the run record), `max_parallel`
//! bounds them, and a failure skips only what is downstream of it.

use crate::common::*;

fn two_branch_project(max_parallel: u32) -> Project {
    let p = Project::new();
    p.write("data/a.csv", "x\n1\n2\n3\n");
    p.write("data/b.csv", "y\n10\n20\n");
    p.write(
        "p.yaml",
        format!(
            "pipeline: branches\nmax_parallel: {max_parallel}\nstores:\n  src: {{ url: \"file://data\" }}\n  out: {{ url: \"file://out\" }}\ntasks:\n  a:\n    extract: {{ store: src, path: a.csv }}\n  b:\n    extract: {{ store: src, path: b.csv }}\n  slow_a:\n    transform: {{ sql: SELECT sum(x) AS s FROM a }}\n  slow_b:\n    transform: {{ sql: SELECT sum(y) AS s FROM b }}\n  load_a:\n    load: {{ from: slow_a, store: out, path: a/ }}\n  load_b:\n    load: {{ from: slow_b, store: out, path: b/ }}\n"
        ),
    );
    p
}

/// (start, end) of each task from the state store, via `weir runs --run ID --json`.
fn task_times(p: &Project, run_id: &str) -> std::collections::HashMap<String, (String, String, String)> {
    let r = p.weir(&["runs", "--dir", ".", "--run", run_id, "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["task"].as_str().unwrap().to_string(),
                (
                    t["started_at"].as_str().unwrap_or("").to_string(),
                    t["finished_at"].as_str().unwrap_or("").to_string(),
                    t["status"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

fn run_slow(p: &Project) -> String {
    let r = p.weir_env(
        &["run", "p.yaml", "--json"],
        &[("WEIR_FAILPOINT", "task_start@slow_a=sleep(700),task_start@slow_b=sleep(700)")],
    );
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["run_id"].as_str().unwrap().to_string()
}

#[test]
fn independent_slow_branches_overlap() {
    let p = two_branch_project(2);
    let run_id = run_slow(&p);
    let t = task_times(&p, &run_id);
    let (a_start, a_end, _) = &t["slow_a"];
    let (b_start, b_end, _) = &t["slow_b"];
    // RFC 3339 UTC with fixed width: text order is time order
    assert!(
        a_start < b_end && b_start < a_end,
        "slow_a {a_start}..{a_end} and slow_b {b_start}..{b_end} did not overlap"
    );
}

#[test]
fn max_parallel_one_runs_them_one_after_the_other() {
    let p = two_branch_project(1);
    let run_id = run_slow(&p);
    let t = task_times(&p, &run_id);
    let (a_start, a_end, _) = &t["slow_a"];
    let (b_start, b_end, _) = &t["slow_b"];
    assert!(
        a_end <= b_start || b_end <= a_start,
        "with max_parallel: 1 the branches overlapped: {a_start}..{a_end} / {b_start}..{b_end}"
    );
}

#[test]
fn a_failure_skips_downstream_and_unrelated_branches_finish() {
    let p = two_branch_project(2);
    let r = p.weir_env(&["run", "p.yaml", "--json"], &[("WEIR_FAILPOINT", "task_start@slow_a=error")]);
    r.code(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["status"], "failed");
    let status = |name: &str| {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["status"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(status("slow_a"), "failed");
    assert_eq!(status("load_a"), "skipped");
    assert_eq!(status("slow_b"), "fused");
    assert_eq!(status("load_b"), "succeeded");
    assert!(p.join("out/b").is_dir(), "the unrelated branch published");
    assert!(!p.join("out/a").exists(), "nothing downstream of the failure published");
    let t = task_times(&p, v["run_id"].as_str().unwrap());
    assert_eq!(t["load_a"].2, "skipped");
}

#[test]
fn shared_transform_is_computed_once() {
    let p = Project::new();
    p.write("data/a.csv", "x\n1\n2\n3\n");
    p.write(
        "p.yaml",
        "stores:\n  src: { url: \"file://data\" }\n  out: { url: \"file://out\" }\ntasks:\n  a:\n    extract: { store: src, path: a.csv }\n  shared:\n    transform: { sql: SELECT x * 2 AS y FROM a }\n  left:\n    transform: { sql: SELECT sum(y) AS s FROM shared }\n  right:\n    transform: { sql: SELECT max(y) AS m FROM shared }\n  l:\n    load: { from: left, store: out, path: l/ }\n  r:\n    load: { from: right, store: out, path: r/ }\n",
    );
    let r = p.weir(&["run", "p.yaml", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let task = |name: &str| v["tasks"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap().clone();
    assert_eq!(task("shared")["status"], "succeeded");
    assert_eq!(task("shared")["rows_out"], 3);
    assert_eq!(task("left")["status"], "fused");
    // the loads read the staged rows (3 each), not the source again through the transform
    assert_eq!(task("l")["rows_in"], 3);
    assert_eq!(read_rows(&p.join("out/l"))[0]["s"], "12");
    assert_eq!(read_rows(&p.join("out/r"))[0]["m"], "6");
}

#[test]
fn a_panicking_task_fails_alone() {
    let p = two_branch_project(2);
    let r = p.weir_env(&["run", "p.yaml", "--json"], &[("WEIR_FAILPOINT", "task_start@slow_a=panic")]);
    r.code(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let task = |name: &str| v["tasks"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap().clone();
    assert_eq!(task("slow_a")["status"], "failed");
    assert!(task("slow_a")["error"].as_str().unwrap().contains("internal error"), "{}", task("slow_a"));
    assert_eq!(task("load_a")["status"], "skipped");
    assert_eq!(task("load_b")["status"], "succeeded");
}

#[test]
fn long_chains_of_fused_transforms_are_broken_up() {
    let p = Project::new();
    let mut y =
        String::from("stores:\n  out: { url: \"file://out\" }\ntasks:\n  t0:\n    transform: { sql: SELECT 1 AS x }\n");
    for i in 1..80 {
        y.push_str(&format!("  t{i}:\n    transform: {{ sql: SELECT x + 1 AS x FROM t{} }}\n", i - 1));
    }
    y.push_str("  l:\n    load: { from: t79, store: out, path: l/ }\n");
    p.write("p.yaml", y);
    let plan = p.weir(&["plan", "p.yaml"]);
    plan.ok();
    assert_eq!(plan.stdout.matches("materialized (ends a chain of fused queries)").count(), 2, "t32 and t65");
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(read_rows(&p.join("out/l"))[0]["x"], "80");
}
