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

/// Write `yaml` as `p.yaml`, check that `weir validate` refuses it (exit 2) and return its
/// stderr with the project path normalized.
fn refused(p: &Project, yaml: &str) -> String {
    p.write("p.yaml", yaml);
    let r = p.weir(&["validate", "p.yaml"]);
    r.code(2);
    normalize(&r.stderr, p.path())
}

#[test]
fn engine_errors_are_located_and_suggest() {
    let p = Project::new();
    let text = refused(
        &p,
        "pipeline: e\nstores:\n  lake: { url: \"file://lake\" }\n  cloud: { url: \"gs://bucket/x\" }\nengine:\n  ballista:\n    scheduler: \"http://host:50050\"\n    staging: { store: lak }\ntasks:\n  a:\n    transform: { sql: \"SELECT 1 AS x\" }\n  out:\n    load: { from: a, store: lake, path: out/ }\n",
    );
    assert!(text.contains("must start with `df://`"), "{text}");
    assert!(text.contains("unknown store `lak` for the engine's staging"), "{text}");
    assert!(text.contains("did you mean `lake`?"), "{text}");
    assert!(text.contains("p.yaml:7:"), "located at the scheduler key: {text}");
    // gs:// with a remote scheduler: the stock executors cannot read it.
    let text = refused(
        &p,
        "pipeline: e\nstores:\n  lake: { url: \"file://lake\" }\n  cloud: { url: \"gs://bucket/x\" }\nengine: { ballista: { scheduler: \"df://localhost:50050\" } }\ntasks:\n  a:\n    transform: { sql: \"SELECT 1 AS x\" }\n  out:\n    load: { from: a, store: lake, path: out/ }\n",
    );
    assert!(text.contains("stock Ballista executors"), "{text}");
    let text = refused(
        &p,
        "pipeline: e\nstores:\n  lake: { url: \"file://lake\" }\nengine: spark\ntasks:\n  a:\n    transform: { sql: \"SELECT 1 AS x\" }\n",
    );
    assert!(text.contains("unknown engine `spark`"), "{text}");
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
    // Only Ballista's own settings: DataFusion's are weir's, the same on both engines.
    let text = refused(
        &p,
        "pipeline: e\nstores:\n  lake: { url: \"file://lake\" }\nengine:\n  ballista:\n    settings:\n      datafusion.execution.batch_size: 10\ntasks:\n  a:\n    transform: { sql: \"SELECT 1 AS x\" }\n",
    );
    assert!(text.contains("`datafusion.execution.batch_size` is not a Ballista setting"), "{text}");
    assert!(text.contains("p.yaml:7:7"), "located at the key: {text}");
    assert!(text.contains("the same on both engines"), "{text}");
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
    assert!(r.stderr.contains("cargo feature `distributed`"), "{}", r.stderr);
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
        assert!(
            r.stderr.contains("on the cluster") || r.stdout.contains("on the cluster"),
            "{}\n{}",
            r.stdout,
            r.stderr
        );
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
        let left: Vec<_> =
            walk(&staging).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
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
        assert!(
            r.stdout
                .contains("engine    ballista (standalone, in-process; staging on store `lake` under _weir_staging/)"),
            "{}",
            r.stdout
        );
        p.weir(&["run", "p.yaml"]).ok();
        assert_eq!(rows_sorted(&p.join("lake/out")).len(), 1);
        // The staging area on the store is cleaned after the run.
        let staged = walk(&p.join("lake/_weir_staging"));
        assert!(staged.is_empty(), "{staged:?}");
    }

    #[test]
    fn ballista_settings_are_checked_and_reach_the_executors() {
        let p = Project::new();
        let pipeline = |settings: &str| {
            format!(
                "pipeline: e\nstores:\n  lake: {{ url: \"file://lake\" }}\nengine:\n  ballista:\n    settings:\n{settings}tasks:\n  a:\n    transform: {{ sql: \"SELECT x, x * 2 AS y FROM (VALUES (1), (2), (3)) AS t(x)\" }}\n  out:\n    load: {{ from: a, store: lake, path: out/ }}\n"
            )
        };
        // Checked at compile time, each located: a misspelt key, values of the wrong type.
        let text = refused(
            &p,
            &pipeline(
                "      ballista.shuffle.compresion.codec: zstd\n      ballista.optimizer.broadcast_join_threshold_bytes: lots\n      ballista.shuffle.compression.codec: brotli\n",
            ),
        );
        assert!(text.contains("unknown Ballista setting `ballista.shuffle.compresion.codec`"), "{text}");
        assert!(text.contains("did you mean `ballista.shuffle.compression.codec`?"), "{text}");
        assert!(text.contains("p.yaml:7:7"), "{text}");
        assert!(
            text.contains("`lots` is not a valid value for `ballista.optimizer.broadcast_join_threshold_bytes`"),
            "{text}"
        );
        assert!(text.contains("p.yaml:8:"), "{text}");
        assert!(text.contains("invalid compression codec brotli"), "{text}");
        assert!(text.contains("p.yaml:9:"), "{text}");
        let r = p.weir(&["run", "p.yaml"]);
        r.code(2);
        assert!(!p.join("lake/out").exists());

        // The settings travel with the queries: Ballista's fault injection, switched on
        // here, fails the transform on the executor, and nothing is published.
        p.write(
            "p.yaml",
            &pipeline(
                "      ballista.testing.chaos_execution.enabled: true\n      ballista.testing.chaos_execution.probability: 1.0\n      ballista.testing.chaos_execution.fault_type: fatal\n",
            ),
        );
        p.weir(&["validate", "p.yaml"]).ok();
        let r = p.weir(&["run", "p.yaml"]);
        r.code(1);
        assert!(
            r.stderr.contains("Injected FATAL FAILURE") || r.stdout.contains("Injected FATAL FAILURE"),
            "{}\n{}",
            r.stdout,
            r.stderr
        );
        assert!(!p.join("lake/out").exists());

        // Settings that change how the cluster plans and shuffles, not what it computes.
        p.write(
            "p.yaml",
            &pipeline(
                "      ballista.shuffle.compression.codec: zstd\n      ballista.optimizer.broadcast_join_threshold_bytes: 0\n      ballista.planner.adaptive.enabled: false\n",
            ),
        );
        let r = p.weir(&["plan", "p.yaml"]);
        r.ok();
        assert!(r.stdout.contains("staging on local disk; 3 settings)"), "{}", r.stdout);
        p.weir(&["run", "p.yaml"]).ok();
        let rows = rows_sorted(&p.join("lake/out"));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].get("y").map(String::as_str), Some("6"), "{rows:?}");
    }

    /// A real Ballista scheduler and executor on loopback, as separate processes (`weir cluster
    /// scheduler` and `weir cluster executor`: Ballista's own, from this build), stopped when
    /// dropped.
    struct RemoteCluster {
        children: Vec<std::process::Child>,
        port: u16,
        work: tempfile::TempDir,
    }

    impl Drop for RemoteCluster {
        fn drop(&mut self) {
            for c in self.children.iter_mut().rev() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    impl RemoteCluster {
        fn log(&self, name: &str) -> String {
            std::fs::read_to_string(self.work.path().join(name)).unwrap_or_default()
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn wait_for_port(port: u16, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "{what} did not listen on {port}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn remote_cluster() -> RemoteCluster {
        let mut cluster = RemoteCluster { children: Vec::new(), port: free_port(), work: tempfile::tempdir().unwrap() };
        let work = cluster.work.path().to_path_buf();
        let log = |name: &str| std::fs::File::create(work.join(name)).unwrap();
        let port = cluster.port.to_string();
        let scheduler = std::process::Command::new(weir_bin())
            .args([
                "cluster",
                "scheduler",
                "--bind-host",
                "127.0.0.1",
                "--external-host",
                "127.0.0.1",
                "--bind-port",
                &port,
            ])
            .stdout(log("scheduler.log"))
            .stderr(log("scheduler.err"))
            .spawn()
            .expect("start the scheduler");
        cluster.children.push(scheduler);
        wait_for_port(cluster.port, "the scheduler");
        let (flight, grpc, health) = (free_port(), free_port(), free_port());
        let dir = work.join("executor");
        std::fs::create_dir_all(&dir).unwrap();
        let executor = std::process::Command::new(weir_bin())
            .args(["cluster", "executor", "--scheduler-host", "127.0.0.1", "--scheduler-port", &port])
            .args(["--bind-host", "127.0.0.1", "--external-host", "127.0.0.1"])
            .args(["--bind-port", &flight.to_string(), "--bind-grpc-port", &grpc.to_string()])
            .args(["--bind-health-port", &health.to_string(), "--vcores", "2"])
            .args(["--scheduler-connect-timeout-seconds", "30"])
            .arg("--work-dir")
            .arg(&dir)
            // Its S3 credentials must come from weir's session, not from the environment.
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdout(log("executor.log"))
            .stderr(log("executor.err"))
            .spawn()
            .expect("start the executor");
        cluster.children.push(executor);
        wait_for_port(flight, "the executor");
        cluster
    }

    /// The demo with its inputs, lake and staging on the S3 test server, its SQL on a real
    /// scheduler and executor: the marts equal a local run's.
    #[test]
    fn the_demo_on_a_real_cluster_with_the_lake_on_s3() {
        let Some(b) = crate::s3::Bucket::new() else { return };
        let cluster = remote_cluster();
        let local = demo_project();
        local.weir(&["run", "pipelines"]).ok();

        b.put_dir(&local.join("examples/shop/data"), "data");
        let yaml = std::fs::read_to_string(local.join("pipelines/daily_orders.yaml")).unwrap();
        let s3 = yaml
            .replace("raw: { url: \"file://${data}\" }", &format!("raw: {}", b.store("data")))
            .replace("lake: { url: \"file://${lake}\" }", &format!("lake: {}", b.store("lake")));
        assert_ne!(s3, yaml, "the demo's stores moved: update this test");
        let s3 = format!(
            "{s3}\nengine:\n  ballista:\n    scheduler: \"df://127.0.0.1:{}\"\n    staging: {{ store: lake, path: _staging }}\n",
            cluster.port
        );
        local.write("remote/daily_orders.yaml", s3);
        let r = local.weir_env(&["run", "remote/"], &[("WEIR_S3_SECRET", crate::s3::SECRET)]);
        assert_eq!(
            r.code,
            0,
            "{}\n{}\n--- scheduler\n{}\n--- executor\n{}",
            r.stdout,
            r.stderr,
            cluster.log("scheduler.err"),
            cluster.log("executor.err")
        );
        for mart in ["daily_revenue", "customer_value", "product_sales"] {
            let a = rows_sorted(&local.join(&format!("lake/marts/{mart}")));
            let pulled = b.get_dir(&format!("lake/marts/{mart}"), &local.join(&format!("pulled/{mart}")));
            assert!(!a.is_empty(), "{mart}");
            assert_eq!(a, rows_sorted(&pulled), "{mart} differs between local and the cluster");
        }
        // The staged tables of the successful run are removed from the store.
        assert!(b.keys("lake/_staging").is_empty(), "{:?}", b.keys("lake/_staging"));
        // The executors wrote the staged tables: their secret came through the session.
        assert!(!r.stderr.contains(crate::s3::SECRET) && !r.stdout.contains(crate::s3::SECRET));
    }
}
