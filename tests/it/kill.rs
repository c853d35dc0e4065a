//! All or nothing: a load that is killed (SIGKILL) at any point leaves the previous output
//! exactly as it was; the next run publishes the new one and clears what the killed run left.

use std::time::Duration;

use crate::common::*;

fn write_orders(p: &Project, version: u32, rows: usize) {
    let mut s = String::from("id,version,region,amount\n");
    for i in 0..rows {
        s.push_str(&format!("{i},{version},{},{}\n", ["north", "south", "east"][i % 3], i % 97));
    }
    p.write("data/orders.csv", s);
}

fn project(partitioned: bool, mode: &str) -> Project {
    let p = Project::new();
    let partition = if partitioned { ", partition_by: [region]" } else { "" };
    p.write(
        "p.yaml",
        format!(
            "pipeline: killme\nstores:\n  src: {{ url: \"file://data\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  orders:\n    extract: {{ store: src, path: orders.csv }}\n  mart:\n    load: {{ from: orders, store: lake, path: marts/orders/, mode: {mode}, max_rows_per_file: 5000{partition} }}\n"
        ),
    );
    p
}

/// (rows, set of versions) of the output.
fn output(p: &Project) -> (usize, std::collections::BTreeSet<String>) {
    let rows = read_rows(&p.join("lake/marts/orders"));
    let versions = rows.iter().map(|r| r["version"].clone()).collect();
    (rows.len(), versions)
}

fn leftovers(p: &Project) -> Vec<String> {
    std::fs::read_dir(p.join("lake/marts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "orders")
        .collect()
}

#[test]
fn killed_overwrite_leaves_the_old_output_intact() {
    for point in ["after_data_files", "before_publish"] {
        for partitioned in [false, true] {
            let p = project(partitioned, "overwrite");
            write_orders(&p, 1, 12_000);
            p.weir(&["run", "p.yaml"]).ok();
            let before = output(&p);
            let files_before = parquet_files(&p.join("lake/marts/orders"));
            assert_eq!(before.0, 12_000);

            write_orders(&p, 2, 9_000);
            let r = p.weir_env(&["run", "p.yaml"], &[("WEIR_FAILPOINT", &format!("{point}=kill"))]);
            assert_ne!(r.code, 0, "the run was killed at {point}");
            assert_eq!(output(&p), before, "killed at {point} (partitioned: {partitioned}): the output changed");
            assert_eq!(parquet_files(&p.join("lake/marts/orders")), files_before);
            assert!(!leftovers(&p).is_empty(), "the killed run left its staging directory (cleaned by the next run)");

            // The next run publishes version 2 whole and removes what the killed run left.
            p.weir(&["run", "p.yaml"]).ok();
            let after = output(&p);
            assert_eq!(after.0, 9_000);
            assert_eq!(after.1.into_iter().collect::<Vec<_>>(), ["2"]);
            assert!(leftovers(&p).is_empty(), "leftovers: {:?}", leftovers(&p));
        }
    }
}

#[test]
fn killed_append_adds_nothing() {
    let p = project(false, "append");
    write_orders(&p, 1, 3_000);
    p.weir(&["run", "p.yaml"]).ok();
    write_orders(&p, 2, 3_000);
    let r = p.weir_env(&["run", "p.yaml"], &[("WEIR_FAILPOINT", "before_publish=kill")]);
    assert_ne!(r.code, 0);
    assert_eq!(output(&p).0, 3_000);
    p.weir(&["run", "p.yaml"]).ok();
    let (n, versions) = output(&p);
    assert_eq!(n, 6_000);
    assert_eq!(versions.into_iter().collect::<Vec<_>>(), ["1", "2"]);
    // --full-refresh rebuilds an append output from the current input only
    p.weir(&["run", "p.yaml", "--full-refresh"]).ok();
    assert_eq!(output(&p).0, 3_000);
}

#[test]
fn failed_load_leaves_the_old_output_and_reports_the_failure() {
    let p = project(false, "overwrite");
    write_orders(&p, 1, 100);
    p.weir(&["run", "p.yaml"]).ok();
    write_orders(&p, 2, 50);
    let r = p.weir_env(&["run", "p.yaml"], &[("WEIR_FAILPOINT", "after_data_files=error")]);
    r.code(1);
    assert!(r.stdout.contains("task `mart` failed: fail point `after_data_files` triggered"), "{}", r.stdout);
    assert_eq!(output(&p).0, 100);
}

/// SIGKILL from outside at many moments of a run: the output is always one whole version.
#[test]
fn kill_at_random_moments_never_mixes_versions() {
    let p = project(true, "overwrite");
    write_orders(&p, 1, 60_000);
    p.weir(&["run", "p.yaml"]).ok();
    let v1 = output(&p);
    write_orders(&p, 2, 45_000);
    // How long a whole run takes here, to spread the kills over it.
    let t = std::time::Instant::now();
    let probe = project(true, "overwrite");
    write_orders(&probe, 2, 45_000);
    probe.weir(&["run", "p.yaml"]).ok();
    let full = t.elapsed();
    let mut seen_new = false;
    for k in 0..12u32 {
        let delay = full.mul_f64(k as f64 / 10.0);
        p.weir_killed_after(&["run", "p.yaml"], delay);
        let out = output(&p);
        let is_v1 = out == v1;
        let is_v2 = out.0 == 45_000 && out.1.iter().all(|v| v == "2");
        assert!(
            is_v1 || is_v2,
            "after a kill at {delay:?} the output is neither version: {} rows, versions {:?}",
            out.0,
            out.1
        );
        seen_new |= is_v2;
        if is_v2 {
            // back to version 1 for the next round
            write_orders(&p, 1, 60_000);
            p.weir(&["run", "p.yaml"]).ok();
            assert_eq!(output(&p), v1);
            write_orders(&p, 2, 45_000);
        }
    }
    // A run that is allowed to finish publishes version 2 and leaves nothing behind.
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(output(&p).0, 45_000);
    assert!(leftovers(&p).is_empty());
    let _ = seen_new;
}

/// A reader listing and reading the output while runs publish sees whole versions only.
#[test]
fn concurrent_reader_sees_whole_versions() {
    let p = project(false, "overwrite");
    write_orders(&p, 1, 20_000);
    p.weir(&["run", "p.yaml"]).ok();
    let dir = p.join("lake/marts/orders");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let dir = dir.clone();
        std::thread::spawn(move || {
            let (mut whole, mut vanished) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // a read that races with the swap may fail (files renamed away): that is an
                // error, never a mixed or partial result
                match try_read_rows(&dir) {
                    Ok(rows) => {
                        let versions: std::collections::BTreeSet<_> =
                            rows.iter().map(|r| r["version"].clone()).collect();
                        assert!(rows.len() == 20_000 || rows.len() == 10_000, "read {} rows", rows.len());
                        assert_eq!(versions.len(), 1, "mixed versions {versions:?}");
                        whole += 1;
                    }
                    Err(_) => vanished += 1,
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (whole, vanished)
        })
    };
    for k in 0..6 {
        let (v, n) = if k % 2 == 0 { (2, 10_000) } else { (1, 20_000) };
        write_orders(&p, v, n);
        p.weir(&["run", "p.yaml"]).ok();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (whole, _vanished) = reader.join().expect("the reader saw a partial or mixed output");
    assert!(whole > 0);
}
