//! `engine: ballista`: the same pipelines on weir's local DataFusion and on a Ballista cluster
//! (the in-process standalone one) write the same outputs; what the cluster cannot reach is a
//! clear error. Tests that need Ballista run only in a build with the `distributed` feature.

use std::collections::BTreeMap;

use crate::common::*;

/// Every row of every Parquet output under `dir`, sorted (order is not part of the contract).
fn rows_sorted(dir: &std::path::Path) -> Vec<BTreeMap<String, String>> {
    let mut rows = read_rows(dir);
    rows.sort();
    rows
}

#[test]
fn engine_errors_are_located_and_suggest() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "pipeline: e\nstores:\n  lake: { url: \"file://lake\" }\n  cloud: { url: \"gs://bucket/x\" }\nengine:\n  ballista:\n    scheduler: \"http://host:50050\"\n    staging: { store: lak }\ntasks:\n  a:\n    transform: { sql: \"SELECT 1 AS x\" }\n  out:\n    load: { from: a, store: lake, path: out/ }\n",
    );
    let r = p.weir(&["validate", "p.yaml"]);
    r.code(2);
    let text = normalize(&r.stderr, p.path());
    assert!(text.contains("must start with `df://`"), "{text}");
    assert!(text.contains("unknown store `lak` for the engine's staging"), "{text}");
    assert!(text.contains("did you mean `lake`?"), "{text}");
    assert!(text.contains("p.yaml:7:"), "located at the scheduler key: {text}");
    // gs:// with a remote scheduler: the stock executors cannot read it.
    p.write(
        "p.yaml",
        "pipeline: e\nstores:\n  lake: { url: \"file://lake\" }\n  cloud: { url: \"gs://bucket/x\" }\nengine: { ballista: { scheduler: \"df://localhost:50050\" } }\ntasks:\n  a:\n    transform: { sql: \"SELECT 1 AS x\" }\n  out:\n    load: { from: a, store: lake, path: out/ }\n",
    );
    let r = p.weir(&["validate", "p.yaml"]);
    r.code(2);
    assert!(r.stderr.contains("stock Ballista executors"), "{}", r.stderr);
    // --engine is checked too.
    p.write(
        "p.yaml",
        "pipeline: e\nstores:\n  lake: { url: \"file://lake\" }\ntasks:\n  a:\n    transform: { sql: \"SELECT 1 AS x\" }\n  out:\n    load: { from: a, store: lake, path: out/ }\n",
    );
    let r = p.weir(&["run", "p.yaml", "--engine", "spark://x"]);
    r.code(2);
    assert!(r.stderr.contains("--engine: scheduler URL `spark://x` must start with `df://`"), "{}", r.stderr);
    let r = p.weir(&["run", "p.yaml", "--engine", "local"]);
    r.ok();
}

#[cfg(not(feature = "distributed"))]
#[test]
fn a_lean_build_says_how_to_get_ballista() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "pipeline: e\nstores:\n  lake: { url: \"file://lake\" }\nengine: { ballista: {} }\ntasks:\n  a:\n    transform: { sql: \"SELECT 1 AS x\" }\n  out:\n    load: { from: a, store: lake, path: out/ }\n",
    );
    p.weir(&["validate", "p.yaml"]).ok();
    let r = p.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(r.stderr.contains("--features distributed"), "{}", r.stderr);
    assert!(!p.join("lake/out").exists());
    p.weir(&["run", "p.yaml", "--engine", "local"]).ok();
    assert_eq!(rows_sorted(&p.join("lake/out")).len(), 1);
}

#[cfg(feature = "distributed")]
mod on_ballista {
    use super::*;

    fn demo_project() -> Project {
        let p = Project::new();
        p.copy_from_repo("pipelines", "pipelines");
        p.copy_from_repo("examples/shop/data", "examples/shop/data");
        p
    }

    #[test]
    fn the_demo_writes_the_same_marts_on_both_engines() {
        let local = demo_project();
        local.weir(&["run", "pipelines"]).ok();
        let cluster = demo_project();
        let r = cluster.weir(&["run", "pipelines", "--engine", "ballista"]);
        r.ok();
        assert!(r.stderr.contains("on the cluster") || r.stdout.contains("on the cluster"), "{}\n{}", r.stdout, r.stderr);
        for mart in ["daily_revenue", "customer_value", "product_sales"] {
            let dir = format!("lake/marts/{mart}");
            let a = rows_sorted(&local.join(&dir));
            let b = rows_sorted(&cluster.join(&dir));
            assert!(!a.is_empty(), "{mart}");
            assert_eq!(a, b, "{mart} differs between the engines");
            assert_eq!(parquet_schema(&local.join(&dir)), parquet_schema(&cluster.join(&dir)), "{mart} schema");
        }
        // Staged tables of a successful run are gone.
        let staging = cluster.join("pipelines/.weir/staging");
        let left: Vec<_> = walk(&staging).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
        assert!(left.is_empty(), "{left:?}");
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    out.extend(walk(&p));
                } else {
                    out.push(p);
                }
            }
        }
        out
    }

    const MERGE: &str = "pipeline: inc\nstores:\n  raw: { url: \"file://raw\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  kept:\n    transform: { sql: \"SELECT id, version, upper(region) AS region FROM src WHERE region <> 'gone'\" }\n  out:\n    load: { from: kept, store: lake, path: out/, mode: merge, keys: [id], order_by: version }\n";

    #[test]
    fn an_incremental_merge_is_the_same_on_both_engines() {
        let projects = [Project::new(), Project::new()];
        let engines = ["local", "ballista"];
        for p in &projects {
            p.write("p.yaml", MERGE);
            p.write("raw/d1.csv", delivery_csv(0..500, 1));
        }
        for (p, e) in projects.iter().zip(engines) {
            p.weir(&["run", "p.yaml", "--engine", e]).ok();
        }
        for p in &projects {
            let mut s = delivery_csv(250..800, 2);
            s.push_str("900,2,gone\n");
            p.write("raw/d2.csv", s);
        }
        for (p, e) in projects.iter().zip(engines) {
            p.weir(&["run", "p.yaml", "--engine", e]).ok();
        }
        let a = rows_sorted(&projects[0].join("lake/out"));
        let b = rows_sorted(&projects[1].join("lake/out"));
        assert_eq!(a.len(), 800);
        assert_eq!(a, b);
        let by = versions_by_id(b);
        assert_eq!(by[&100], vec![1]);
        assert_eq!(by[&300], vec![2]);
        // Nothing new: up to date on the cluster too.
        let r = projects[1].weir(&["run", "p.yaml", "--engine", "ballista"]);
        r.ok();
        assert!(status_of(&r.stdout, "out").contains("up to date"), "{}", r.stdout);
    }

    const GATE: &str = "pipeline: gate\nstores:\n  raw: { url: \"file://raw\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  payments:\n    extract: { store: raw, path: \"p.csv\" }\n    checks:\n      - accepted_values: { column: currency, values: [EUR, USD] }\n    on_check_failure: quarantine\n  daily:\n    transform: { sql: \"SELECT day, currency, sum(amount) AS total, count(*) AS n FROM payments GROUP BY day, currency\" }\n    checks:\n      - expression: total >= 0\n  out:\n    load: { from: daily, store: lake, path: daily/ }\n";

    #[test]
    fn quarantine_and_a_blocking_gate_behave_the_same_on_both_engines() {
        let good = "day,currency,amount\n2026-01-01,EUR,10\n2026-01-01,USD,5\n2026-01-02,EUR,7\n2026-01-02,XXX,3\n";
        let projects = [Project::new(), Project::new()];
        let engines = ["local", "ballista"];
        for (p, e) in projects.iter().zip(engines) {
            p.write("p.yaml", GATE);
            p.write("raw/p.csv", good);
            let r = p.weir(&["run", "p.yaml", "--engine", e]);
            r.ok();
        }
        let a = rows_sorted(&projects[0].join("lake/daily"));
        assert_eq!(a.len(), 3, "the XXX row is quarantined: {a:?}");
        assert_eq!(a, rows_sorted(&projects[1].join("lake/daily")));
        for p in &projects {
            let q = p.join("lake/_quarantine/gate/payments");
            let rows = read_rows(&q);
            assert_eq!(rows.len(), 1, "{rows:?}");
            assert_eq!(rows[0]["currency"], "XXX");
        }
        // A negative total fails the gate: nothing downstream publishes, on either engine.
        for (p, e) in projects.iter().zip(engines) {
            p.write("raw/p.csv", "day,currency,amount\n2026-01-03,EUR,-10\n");
            let r = p.weir(&["run", "p.yaml", "--engine", e]);
            r.code(1);
            assert!(status_of(&r.stdout, "daily").contains("failed"), "{e}: {}", r.stdout);
            assert!(status_of(&r.stdout, "out").contains("skipped"), "{e}: {}", r.stdout);
            assert_eq!(rows_sorted(&p.join("lake/daily")), a, "{e}: the output is the previous version");
        }
    }

    #[test]
    fn plan_shows_the_engine() {
        let p = Project::new();
        p.write(
            "p.yaml",
            "pipeline: e\nstores:\n  lake: { url: \"file://lake\" }\nengine: { ballista: { staging: { store: lake } } }\ntasks:\n  a:\n    transform: { sql: \"SELECT 1 AS x\" }\n  out:\n    load: { from: a, store: lake, path: out/ }\n",
        );
        let r = p.weir(&["plan", "p.yaml"]);
        r.ok();
        assert!(r.stdout.contains("engine    ballista (standalone, in-process; staging on store `lake` under _weir_staging/)"), "{}", r.stdout);
        p.weir(&["run", "p.yaml"]).ok();
        assert_eq!(rows_sorted(&p.join("lake/out")).len(), 1);
        // The staging area on the store is cleaned after the run.
        let staged = walk(&p.join("lake/_weir_staging"));
        assert!(staged.is_empty(), "{staged:?}");
    }
}
