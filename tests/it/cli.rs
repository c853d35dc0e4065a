//! The command line: exit codes, selection, variables, plan/graph output, history, locks,
//! logs, and secrets that stay secret.

use crate::common::*;

fn demo() -> Project {
    let p = Project::new();
    p.copy_from_repo("pipelines", "pipelines");
    p.copy_from_repo("examples/shop/data", "examples/shop/data");
    p
}

fn small() -> Project {
    let p = Project::new();
    p.write("data/a.csv", "id,region,amount\n1,north,10\n2,south,20\n3,north,5\n");
    p.write(
        "p.yaml",
        "pipeline: small\nvars: { region: north }\nstores:\n  src: { url: \"file://data\" }\n  out: { url: \"file://out\" }\ntasks:\n  a:\n    extract: { store: src, path: a.csv }\n  filtered:\n    transform: { sql: \"SELECT id, amount FROM a WHERE region = '${region}'\" }\n  by_day:\n    load: { from: filtered, store: out, path: \"runs/${run_date}/\" }\n",
    );
    p
}

#[test]
fn exit_codes() {
    let p = small();
    p.weir(&["validate", "p.yaml"]).code(0);
    p.weir(&["run", "p.yaml"]).code(0);
    p.weir(&["run", "p.yaml", "--no-such-flag"]).code(2);
    p.weir(&["run", "missing.yaml"]).code(2);
    p.weir(&["run", "p.yaml", "--select", "nope"]).code(2);
    p.weir_env(&["run", "p.yaml"], &[("WEIR_FAILPOINT", "task_start@by_day=error")]).code(1);
    p.write("bad.yaml", "tasks: { a: { extract: { store: nowhere, path: x.csv } } }\n");
    p.weir(&["run", "bad.yaml"]).code(2);
    p.weir(&["run", "p.yaml", "--resume", "x"]).code(2);
    p.weir(&["run", "p.yaml", "--run-date", "yesterday"]).code(2);
}

#[test]
fn vars_and_run_date() {
    let p = small();
    p.weir(&["run", "p.yaml", "--run-date", "2026-03-04"]).ok();
    let rows = read_rows(&p.join("out/runs/2026-03-04"));
    let mut ids: Vec<_> = rows.iter().map(|r| r["id"].clone()).collect();
    ids.sort();
    assert_eq!(ids, ["1", "3"]);
    p.weir(&["run", "p.yaml", "--run-date", "2026-03-05", "--var", "region=south"]).ok();
    let rows = read_rows(&p.join("out/runs/2026-03-05"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], "2");
    let r = p.weir(&["run", "p.yaml", "--var", "bad name=1"]);
    r.code(2);
}

#[test]
fn select_runs_the_selection_and_what_it_reads() {
    let p = demo();
    let r = p.weir(&["run", "--select", "daily_revenue_mart", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut names: Vec<&str> = v["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        ["customers", "daily_revenue", "daily_revenue_mart", "orders", "orders_clean", "orders_enriched", "products"]
    );
    assert!(p.join("lake/marts/daily_revenue").is_dir());
    assert!(!p.join("lake/marts/customer_value").exists());

    // downstream selection
    let r = p.weir(&["run", "--select", "customer_value+", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let names: Vec<&str> = v["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"customer_value_mart") && !names.contains(&"product_sales_mart"), "{names:?}");

    let r = p.weir(&["run", "--select", "daly_revenue_mart"]);
    r.code(2);
    assert!(r.stderr.contains("did you mean `daily_revenue_mart`?"), "{}", r.stderr);
}

#[test]
fn plan_output() {
    let p = demo();
    let r = p.weir(&["plan"]);
    r.ok();
    insta::assert_snapshot!(normalize(&r.stdout, p.path()));
}

#[test]
fn graph_output() {
    let p = demo();
    let dot = p.weir(&["graph", "--format", "dot"]);
    dot.ok();
    insta::assert_snapshot!("graph_dot", dot.stdout);
    let mermaid = p.weir(&["graph", "--format", "mermaid"]);
    mermaid.ok();
    insta::assert_snapshot!("graph_mermaid", mermaid.stdout);
}

#[test]
fn run_summary_and_history() {
    let p = small();
    let r = p.weir(&["run", "p.yaml", "--run-date", "2026-01-01"]);
    r.ok();
    // column widths follow the timings: compare with runs of spaces collapsed
    let table: String = normalize(&r.stdout, p.path())
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("run_summary", table);
    // one line per task on stderr when not on a terminal
    assert!(r.stderr.contains("ok     by_day (load) 2 rows"), "{}", r.stderr);
    let h = p.weir(&["runs", "--dir", "."]);
    h.ok();
    assert!(
        h.stdout.contains("small") && h.stdout.contains("succeeded") && h.stdout.contains("2026-01-01"),
        "{}",
        h.stdout
    );
    let h = p.weir(&["runs", "other", "--dir", "."]);
    h.ok();
    assert!(h.stdout.contains("no runs"));
}

#[test]
fn a_second_run_of_the_same_pipeline_waits_its_turn() {
    let p = small();
    let mut first = p
        .command(&["run", "p.yaml"])
        .env("WEIR_FAILPOINT", "task_start@by_day=sleep(3000)")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    p.wait_until_running(); // the first run holds the lock
    let second = p.weir(&["run", "p.yaml"]);
    second.code(1);
    assert!(second.stderr.contains("pipeline `small` is already running"), "{}", second.stderr);
    assert!(first.wait().unwrap().success());
    p.weir(&["run", "p.yaml"]).ok();
}

#[test]
fn json_logs_carry_run_pipeline_and_task() {
    let p = small();
    let r = p.weir(&["--log-format", "json", "-v", "run", "p.yaml"]);
    r.ok();
    let lines: Vec<serde_json::Value> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let finished: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["fields"]["message"] == "task finished").collect();
    assert_eq!(finished.len(), 3, "{}", r.stderr);
    for l in finished {
        let spans = l["spans"].as_array().unwrap();
        assert!(spans.iter().any(|s| s["run_id"].is_string() && s["pipeline"] == "small"), "{l}");
    }
}

#[test]
fn secrets_stay_out_of_errors_logs_and_state() {
    let secret = "s3cr3t-token-7f9a2c";
    let p = Project::new();
    p.write("data/a.csv", "x\n1\n");
    p.write(
        "p.yaml",
        "vars: { dir: \"${env:WEIR_TEST_SECRET}\" }\nstores:\n  src: { url: \"file://data\" }\n  out: { url: \"file://out/${env:WEIR_TEST_SECRET}\" }\ntasks:\n  a:\n    extract: { store: src, path: \"${dir}/*.csv\" }\n",
    );
    let r = p.weir_env(&["-vv", "validate", "p.yaml"], &[("WEIR_TEST_SECRET", secret)]);
    r.code(2);
    assert!(r.stderr.contains("no files match `***/*.csv`"), "{}", r.stderr);
    let r2 = p.weir_env(&["-vv", "--log-format", "json", "plan", "p.yaml"], &[("WEIR_TEST_SECRET", secret)]);
    // a load through a secret path, with a failure forced inside it
    p.write(
        "q.yaml",
        "stores:\n  src: { url: \"file://data\" }\n  out: { url: \"file://out/${env:WEIR_TEST_SECRET}\" }\ntasks:\n  a:\n    extract: { store: src, path: a.csv }\n  l:\n    load: { from: a, store: out, path: x/ }\n",
    );
    let r3 = p.weir_env(
        &["-vvv", "run", "q.yaml"],
        &[("WEIR_TEST_SECRET", secret), ("WEIR_FAILPOINT", "task_start@l=error")],
    );
    r3.code(1);
    let r4 = p.weir_env(&["-vv", "plan", "q.yaml"], &[("WEIR_TEST_SECRET", secret)]);
    r4.ok();
    assert!(r4.stdout.contains("out/***"), "{}", r4.stdout);
    for out in [&r, &r2, &r3, &r4] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "secret leaked:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
    let db = std::fs::read(p.join(".weir/state.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains(secret), "secret in the state store");
}

/// Every field that can hold a variable, with a `${env:…}` value in each: `validate`, `plan`,
/// `graph` (both formats), `lineage` (text, JSON, DOT), `run` (table and JSON), `runs` and
/// the OpenLineage events (whose API key is the secret too) never show it.
#[test]
fn secrets_stay_out_of_plan_graph_and_every_field_that_takes_a_variable() {
    let secret = "hunter2-canary-5e1d";
    let p = Project::new();
    p.write(&format!("data/{secret}file.csv"), "x\n1\n");
    p.write(
        "p.yaml",
        "pipeline: canary\ndescription: \"owned by ${env:WEIR_TEST_SECRET}\"\nvars: { pre: \"${env:WEIR_TEST_SECRET}\" }\nstores:\n  src: { url: \"file://data\" }\n  out: { url: \"file://out\" }\ntasks:\n  a:\n    description: \"from ${env:WEIR_TEST_SECRET}'s system\"\n    extract: { store: src, path: \"${pre}file.csv\" }\n  l:\n    description: \"${pre} mart\"\n    load: { from: a, store: out, path: \"mart_${pre}/\" }\nopenlineage: { file: events.ndjson, api_key: \"${env:WEIR_TEST_SECRET}\", url: \"http://127.0.0.1:9/${env:WEIR_TEST_SECRET}\", timeout: 200ms }\n",
    );
    let env = [("WEIR_TEST_SECRET", secret)];
    let mut outputs = Vec::new();
    for args in [
        &["validate", "p.yaml"][..],
        &["plan", "p.yaml"],
        &["graph", "p.yaml"],
        &["graph", "p.yaml", "--format", "mermaid"],
        &["lineage", "p.yaml"],
        &["lineage", "p.yaml", "--format", "json"],
        &["lineage", "p.yaml", "--downstream", "a.x", "--format", "dot"],
        &["-vv", "run", "p.yaml"],
        &["run", "p.yaml", "--json", "--full-refresh"],
        &["runs", "--dir", "."],
        &["runs", "--dir", ".", "--json"],
    ] {
        let r = p.weir_env(args, &env);
        r.ok();
        outputs.push((args.join(" "), r));
    }
    let plan = &outputs[1].1.stdout;
    assert!(plan.contains("owned by ***"), "{plan}");
    assert!(plan.contains("about    from ***'s system"), "the task's description is shown: {plan}");
    assert!(plan.contains("reads    src: ***file.csv"), "{plan}");
    for (args, r) in &outputs {
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "`weir {args}` shows the secret:\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }
    // The events name the files, the description and the endpoint's failure, redacted.
    let events = std::fs::read_to_string(p.join("events.ndjson")).unwrap();
    assert!(!events.contains(secret), "{events}");
    assert!(events.contains("owned by ***") && events.contains("***file.csv"), "{events}");
    assert!(outputs[7].1.stderr.contains("OpenLineage event not sent"), "{}", outputs[7].1.stderr);
}

/// A `--var` no pipeline has is a usage error with a suggestion, not a run with other results.
#[test]
fn an_unknown_var_is_a_usage_error_with_a_suggestion() {
    let p = Project::new();
    p.write("data/a.csv", "q\n1\n3\n");
    p.write(
        "p.yaml",
        "vars: { min_quantity: 1 }\nstores:\n  src: { url: \"file://data\" }\n  out: { url: \"file://out\" }\ntasks:\n  a:\n    extract: { store: src, path: a.csv }\n  big:\n    transform: { sql: \"SELECT * FROM a WHERE q >= ${min_quantity} AND '${extra}' = '${extra}'\" }\n  l:\n    load: { from: big, store: out, path: o/ }\n",
    );
    for cmd in ["validate", "plan", "run", "graph"] {
        let r = p.weir(&[cmd, "p.yaml", "--var", "extra=x", "--var", "min_quantitiy=2"]);
        r.code(2);
        assert!(
            r.stderr.contains(
                "--var min_quantitiy: no pipeline has a variable `min_quantitiy`: did you mean `min_quantity`?"
            ),
            "{cmd}: {}",
            r.stderr
        );
    }
    assert!(!p.join("out").exists(), "nothing ran");
    // A variable used only as `${extra}` (given by --var alone) is known.
    p.weir(&["run", "p.yaml", "--var", "extra=x", "--var", "min_quantity=2"]).ok();
    assert_eq!(read_rows(&p.join("out/o")).len(), 1);
}

/// A reader that stops early (`weir runs --json | head`) ends the output quietly: no panic.
#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    let p = Project::new();
    p.write("data/a.csv", "x\n1\n");
    p.write(
        "p.yaml",
        "stores:\n  src: { url: \"file://data\" }\ntasks:\n  a:\n    extract: { store: src, path: a.csv }\n",
    );
    p.weir(&["run", "p.yaml"]).ok();
    for args in [&["runs", "--dir", ".", "--json"][..], &["runs", "--dir", "."], &["schema"], &["plan", "p.yaml"]] {
        let mut child =
            p.command(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?}\n{stderr}", out.status);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

#[test]
fn validate_a_directory_reports_every_file() {
    let p = Project::new();
    p.write("data/a.csv", "x\n1\n");
    p.write(
        "pipes/one.yaml",
        "stores: { s: { url: \"file://../data\" } }\ntasks: { a: { extract: { store: s, path: a.csv } } }\n",
    );
    p.write("pipes/two.yaml", "tasks: { b: { transform: { sql: SELECT * FROM nothing } } }\n");
    p.write("pipes/three.yml", "pipeline: one\ntasks: { c: { transform: { sql: SELECT 1 AS x } } }\n");
    let r = p.weir(&["validate", "pipes"]);
    r.code(2);
    assert!(r.stderr.contains("unknown table `nothing`"), "{}", r.stderr);
    assert!(r.stderr.contains("pipeline name `one` is also used by"), "{}", r.stderr);
    let r = p.weir(&["validate", "pipes/one.yaml"]);
    r.ok();
    assert!(r.stdout.contains("ok  one"));
}

#[test]
fn schema_command_prints_json_schema() {
    let r = Project::new().weir(&["schema"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["title"], "weir pipeline");
    assert!(v["properties"]["tasks"].is_object());
}

/// `--memory-limit` bounds query memory: a sort and a group-by over more data than the limit
/// spill to disk and finish with the right result; a size weir cannot read is refused.
#[test]
fn memory_limit_makes_big_sorts_and_aggregations_spill() {
    let p = Project::new();
    let mut csv = String::from("id,k,pad\n");
    for i in 0..400_000u64 {
        let k = (i * 7_919) % 400_000;
        csv.push_str(&format!("{i},{k},padding-{:08}\n", (i * 31) % 99_991));
    }
    p.write("raw/big.csv", csv);
    p.write(
        "p.yaml",
        "pipeline: mem\nmax_parallel: 1\nstores:\n  raw: { url: \"file://raw\" }\n  lake: { url: \"file://lake\" }\ntasks:\n  big:\n    extract: { store: raw, path: big.csv }\n  sorted:\n    transform:\n      sql: SELECT * FROM big ORDER BY k DESC, pad\n  groups:\n    transform:\n      sql: SELECT pad, count(*) AS n, max(id) AS top FROM big GROUP BY pad\n  s:\n    load: { from: sorted, store: lake, path: sorted/, row_group_rows: 10000 }\n  g:\n    load: { from: groups, store: lake, path: groups/, row_group_rows: 10000 }\n",
    );
    // Writers cannot spill, and a writer holds a row group: with row groups of 50,000 rows
    // the group-by's writer (4.6 MB) was refused about once in 30 runs on a busy machine,
    // when the aggregations held their whole share of the 16 MB pool as it grew.
    let r = p.weir(&["run", "p.yaml", "--memory-limit", "32MB"]);
    r.ok();
    let sorted = read_rows(&p.join("lake/sorted"));
    assert_eq!(sorted.len(), 400_000);
    let keys: Vec<u64> = sorted.iter().map(|r| r["k"].parse().unwrap()).collect();
    assert!(keys.windows(2).all(|w| w[0] >= w[1]), "not sorted by k descending");
    let groups = read_rows(&p.join("lake/groups"));
    assert_eq!(groups.len(), 99_991);
    assert_eq!(groups.iter().map(|r| r["n"].parse::<u64>().unwrap()).sum::<u64>(), 400_000);

    // the limit is real: far too little memory fails, naming it
    let r = p.weir(&["run", "p.yaml", "--memory-limit", "1MB", "--full-refresh"]);
    r.code(1);
    assert!(r.stderr.contains("Resources exhausted"), "{}", r.stderr);
    // ... and fails every time: a refused repartition once spilled to a file its reader could
    // wait on forever (apache/datafusion#24883), and about one run in twelve of this
    // group-by on two partitions never ended.
    for attempt in 0..16 {
        let mut child = p
            .command(&["run", "p.yaml", "--memory-limit", "1MB", "--full-refresh"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > std::time::Duration::from_secs(60) {
                let _ = child.kill();
                panic!("attempt {attempt}: the run under a 1 MB limit neither ended nor failed in 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(1), "attempt {attempt}");
    }

    let r = p.weir(&["run", "p.yaml", "--memory-limit", "2XB"]);
    r.code(2);
    assert!(r.stderr.contains("unknown unit `XB`"), "{}", r.stderr);
}
