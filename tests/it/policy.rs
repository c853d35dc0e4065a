//! Retries, timeouts and cancellation (Ctrl-C / SIGTERM).

use std::time::Duration;

use crate::common::*;

fn project(policy: &str) -> Project {
    let p = Project::new();
    p.write("data/a.csv", "x\n1\n2\n");
    p.write(
        "p.yaml",
        format!(
            "pipeline: policy\n{policy}\nstores:\n  src: {{ url: \"file://data\" }}\n  out: {{ url: \"file://out\" }}\ntasks:\n  a:\n    extract: {{ store: src, path: a.csv }}\n  mart:\n    load: {{ from: a, store: out, path: mart/ }}\n"
        ),
    );
    p
}

fn task(report: &serde_json::Value, name: &str) -> serde_json::Value {
    report["tasks"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap().clone()
}

#[test]
fn transient_failures_are_retried() {
    let p = project("defaults: { retries: 2, retry_backoff: 10ms }");
    let r = p.weir_env(&["run", "p.yaml", "--json"], &[("WEIR_FAILPOINT", "task_start@mart=transient(2)")]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(task(&v, "mart")["status"], "succeeded");
    assert_eq!(task(&v, "mart")["attempts"], 3);
    assert!(r.stderr.contains("retry  mart: attempt 1 failed"), "{}", r.stderr);
    assert_eq!(read_rows(&p.join("out/mart")).len(), 2);
}

#[test]
fn retries_run_out() {
    let p = project("defaults: { retries: 1, retry_backoff: 10ms }");
    let r = p.weir_env(&["run", "p.yaml", "--json"], &[("WEIR_FAILPOINT", "task_start@mart=transient(5)")]);
    r.code(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(task(&v, "mart")["status"], "failed");
    assert_eq!(task(&v, "mart")["attempts"], 2);
}

#[test]
fn permanent_failures_are_not_retried() {
    let p = project("defaults: { retries: 3, retry_backoff: 10ms }");
    let r = p.weir_env(&["run", "p.yaml", "--json"], &[("WEIR_FAILPOINT", "task_start@mart=error")]);
    r.code(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(task(&v, "mart")["attempts"], 1);
}

#[test]
fn timeout_cancels_the_task_and_publishes_nothing() {
    let p = project("defaults: { timeout: 300ms }");
    let r = p.weir_env(&["run", "p.yaml", "--json"], &[("WEIR_FAILPOINT", "before_publish@mart=sleep(5000)")]);
    r.code(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(task(&v, "mart")["status"], "failed");
    assert_eq!(task(&v, "mart")["error"], "timed out after 300ms");
    assert!(!p.join("out/mart").exists(), "a timed-out load published");
    // a per-task timeout overrides the default
    let p = project("defaults: { timeout: 300ms }");
    let text =
        std::fs::read_to_string(p.join("p.yaml")).unwrap().replace("path: mart/ }", "path: mart/ }\n    timeout: 10s");
    p.write("p.yaml", text);
    p.weir_env(&["run", "p.yaml"], &[("WEIR_FAILPOINT", "before_publish@mart=sleep(600)")]).ok();
}

fn interrupt(signal: &str) {
    let p = project("");
    p.weir(&["run", "p.yaml"]).ok();
    let before = read_rows(&p.join("out/mart"));
    p.write("data/a.csv", "x\n7\n8\n9\n");
    let child = p
        .command(&["run", "p.yaml", "--json"])
        .env("WEIR_FAILPOINT", "before_publish@mart=sleep(20000)")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    p.wait_until_running();
    std::thread::sleep(Duration::from_millis(300));
    let status = std::process::Command::new("kill").args(["-s", signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["status"], "cancelled");
    assert_eq!(task(&v, "mart")["status"], "cancelled");
    assert!(t.elapsed() < Duration::from_secs(15), "cancellation did not stop the 20 s task");
    assert_eq!(read_rows(&p.join("out/mart")), before, "a cancelled load changed the output");
    let h = p.weir(&["runs", "--dir", ".", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(runs[0]["status"], "cancelled");
    // the lock was released: the next run proceeds
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(read_rows(&p.join("out/mart")).len(), 3);
}

#[test]
fn ctrl_c_cancels_cleanly() {
    interrupt("INT");
}

#[test]
fn sigterm_cancels_cleanly() {
    interrupt("TERM");
}

#[test]
fn retry_waits_grow_exponentially() {
    let p = project("defaults: { retries: 3, retry_backoff: 100ms }");
    let r = p.weir_env(&["run", "p.yaml", "--json"], &[("WEIR_FAILPOINT", "task_start@mart=transient(3)")]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(task(&v, "mart")["attempts"], 4);
    // "retry  mart: attempt N failed (...); retrying in 123 ms"
    let waits: Vec<f64> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("retry  mart"))
        .map(|l| {
            let w = l.rsplit("retrying in ").next().unwrap();
            let (n, unit) = w.split_once(' ').unwrap();
            n.parse::<f64>().unwrap() * if unit == "s" { 1000.0 } else { 1.0 }
        })
        .collect();
    assert_eq!(waits.len(), 3, "{}", r.stderr);
    // 100, 200, 400 ms, each ±20 % jitter: every wait is longer than the one before
    for (k, w) in waits.iter().enumerate() {
        let base = 100.0 * 2f64.powi(k as i32);
        assert!((base * 0.8..=base * 1.2).contains(w), "wait {k} is {w} ms: {waits:?}");
    }
}
