//! OpenLineage events of `weir run` and `weir serve`, received over HTTP on loopback and read
//! from the NDJSON file; every event validated against the OpenLineage project's own model of
//! the spec (tests/support/openlineage_check.py); datasets, statistics, column lineage and
//! checks compared with what the run wrote, read back independently; consumers that fail.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::*;
use crate::serve::{Receiver, Reply, free_port};

/// The pipeline of tests/it/lineage.rs, whose lineage is known by hand.
fn shop() -> Project {
    let p = Project::new();
    p.copy_from_repo("tests/data/lineage", ".");
    p
}

fn events(p: &Project, file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(p.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Every event of the files is valid OpenLineage (and the validator does reject a wrong one).
fn validate(p: &Project, files: &[&str]) {
    let Some(python) = test_python() else { return };
    let check = repo().join("tests/support/openlineage_check.py");
    let out = std::process::Command::new(&python).arg(&check).args(files).current_dir(p.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "invalid OpenLineage events:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    // The validator is not a yes-machine: the first event with an unknown key fails it.
    let mut first = events(p, files[0]).remove(0);
    first["run"]["facets"]["processing_engine"]["engine"] = Value::from("weir");
    p.write("wrong.ndjson", format!("{first}\n"));
    let out =
        std::process::Command::new(&python).arg(&check).arg("wrong.ndjson").current_dir(p.path()).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stdout).contains("has no key ['engine']"));
}

fn job<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["job"]["name"] == name).collect()
}

fn types(events: &[&Value]) -> Vec<String> {
    events.iter().map(|e| e["eventType"].as_str().unwrap().to_string()).collect()
}

/// The last event of a task's job: its end, with statistics and checks.
fn end<'a>(events: &'a [Value], task: &str) -> &'a Value {
    job(events, &format!("shop.{task}")).last().copied().unwrap_or_else(|| panic!("no events of {task}"))
}

/// `namespace name`
fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{} {}", d["namespace"].as_str().unwrap(), d["name"].as_str().unwrap()))
        .collect()
}

/// `TYPE/SUBTYPE name.field` of a column's (or, with `None`, the dataset's) input fields.
fn lineage(output: &Value, column: Option<&str>) -> Vec<String> {
    let facet = &output["facets"]["columnLineage"];
    let list = match column {
        Some(c) => &facet["fields"][c]["inputFields"],
        None => &facet["dataset"],
    };
    let mut v: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("no lineage for {column:?} in {facet}"))
        .iter()
        .flat_map(|f| {
            f["transformations"].as_array().unwrap().iter().map(move |t| {
                format!(
                    "{}/{} {}.{}",
                    t["type"].as_str().unwrap(),
                    t["subtype"].as_str().unwrap(),
                    f["name"].as_str().unwrap(),
                    f["field"].as_str().unwrap()
                )
            })
        })
        .collect();
    v.sort();
    v
}

fn abs(p: &Project, rel: &str) -> String {
    std::path::absolute(p.join(rel)).unwrap().display().to_string()
}

#[test]
fn a_run_sends_valid_events_with_datasets_lineage_statistics_and_checks() {
    let p = shop();
    let rx = Receiver::start(0);
    let url = format!("http://127.0.0.1:{}", rx.port());
    let key = "oL-k3y-CANARY-71";
    let r = p.weir_env(
        &["run", "shop.yaml", "--json", "--openlineage-url", &url, "--openlineage-file", "out/events.ndjson"],
        &[("OPENLINEAGE_API_KEY", key)],
    );
    r.ok();
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let events = events(&p, "out/events.ndjson");
    validate(&p, &["out/events.ndjson"]);

    // The endpoint got the same events, in the same order, each POSTed with the key.
    assert_eq!(*rx.bodies.lock().unwrap(), events);
    let heads = rx.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), events.len());
    assert!(
        heads.iter().all(|(line, auth)| line == "POST /api/v1/lineage HTTP/1.1" && *auth == format!("Bearer {key}"))
    );
    // The key is in no event, and nowhere in what weir printed.
    let file = std::fs::read_to_string(p.join("out/events.ndjson")).unwrap();
    assert!(!file.contains(key) && !r.stdout.contains(key) && !r.stderr.contains(key));

    // The run: START first, COMPLETE last, weir's run id as a tag.
    let run = job(&events, "shop");
    assert_eq!(types(&run), ["START", "COMPLETE"]);
    assert_eq!(events.first(), Some(run[0]));
    assert_eq!(events.last(), Some(run[1]));
    let run_id = run[0]["run"]["runId"].as_str().unwrap();
    assert_eq!(run[1]["run"]["runId"], run_id);
    assert_eq!(run[0]["job"]["namespace"], "weir");
    assert_eq!(run[0]["run"]["facets"]["tags"]["tags"][0]["value"], report["run_id"]);
    assert_eq!(run[0]["job"]["facets"]["jobType"]["jobType"], "DAG");

    // Every task: a START and a COMPLETE of one run whose parent is the pipeline's run, the
    // fused view (`paid`) included.
    let tasks: Vec<&str> = report["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tasks.len(), 7);
    let mut task_runs = BTreeSet::new();
    for t in &tasks {
        let ev = job(&events, &format!("shop.{t}"));
        assert_eq!(types(&ev), ["START", "COMPLETE"], "{t}");
        assert_eq!(ev[0]["run"]["runId"], ev[1]["run"]["runId"]);
        assert!(ev[0]["eventTime"].as_str() <= ev[1]["eventTime"].as_str());
        assert_eq!(ev[1]["run"]["facets"]["parent"]["run"]["runId"], run_id);
        assert_eq!(ev[1]["run"]["facets"]["parent"]["job"]["name"], "shop");
        assert!(task_runs.insert(ev[0]["run"]["runId"].as_str().unwrap().to_string()), "{t} shares a run id");
    }
    assert!(!task_runs.contains(run_id));
    let stat =
        |t: &str, k: &str| report["tasks"].as_array().unwrap().iter().find(|x| x["name"] == t).unwrap()[k].clone();

    // An extract reads the directory of its glob, with what it read; hands on its table.
    let orders = end(&events, "orders");
    assert_eq!(ids(&orders["inputs"]), BTreeSet::from([format!("file {}", abs(&p, "data/orders"))]));
    let csv = std::fs::read_dir(p.join("data/orders")).unwrap().count();
    let read = &orders["inputs"][0]["inputFacets"]["inputStatistics"];
    assert_eq!(read["fileCount"], csv as u64);
    assert_eq!(read["rowCount"], stat("orders", "rows_in"));
    assert_eq!(ids(&orders["outputs"]), BTreeSet::from(["weir shop.orders".to_string()]));
    let items = end(&events, "items");
    assert_eq!(
        lineage(&items["outputs"][0], Some("order_id")),
        [format!("DIRECT/IDENTITY {}.@order", abs(&p, "data/items.xml"))]
    );

    // A transform: its inputs' tables, its SQL, the lineage `weir lineage` reports, in
    // OpenLineage's terms, and its checks' results.
    let enriched = end(&events, "enriched");
    assert_eq!(
        ids(&enriched["inputs"]),
        BTreeSet::from(["weir shop.customers", "weir shop.items", "weir shop.paid"].map(String::from))
    );
    assert!(enriched["job"]["facets"]["sql"]["query"].as_str().unwrap().contains("JOIN c USING (customer_id)"));
    let out = &enriched["outputs"][0];
    assert_eq!(lineage(out, Some("order_id")), ["DIRECT/IDENTITY shop.paid.order_id"]);
    assert_eq!(lineage(out, Some("region")), ["DIRECT/TRANSFORMATION shop.customers.region"]);
    assert_eq!(
        lineage(out, Some("items")),
        ["INDIRECT/FILTER shop.items.order_id", "INDIRECT/FILTER shop.paid.order_id"]
    );
    assert_eq!(lineage(out, None), ["INDIRECT/JOIN shop.customers.customer_id", "INDIRECT/JOIN shop.paid.customer_id"]);
    let fields: Vec<&str> =
        out["facets"]["schema"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(fields, ["order_id", "customer_id", "amount", "updated_at", "region", "items"]);
    let assertions = out["facets"]["dataQualityAssertions"]["assertions"].as_array().unwrap();
    let names: Vec<&str> = assertions.iter().map(|a| a["assertion"].as_str().unwrap()).collect();
    let checks = stat("enriched", "checks");
    let checks: Vec<&str> = checks.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, checks);
    assert!(assertions.iter().all(|a| a["success"] == true));
    assert_eq!(assertions[0]["column"], "order_id");
    assert_eq!(out["outputFacets"]["outputStatistics"]["rowCount"], stat("enriched", "rows_out"));
    let by_region = end(&events, "by_region");
    assert_eq!(lineage(&by_region["outputs"][0], Some("revenue")), ["DIRECT/AGGREGATION shop.enriched.amount"]);
    assert_eq!(lineage(&by_region["outputs"][0], Some("place")), ["INDIRECT/WINDOW shop.enriched.amount"]);
    assert_eq!(lineage(&by_region["outputs"][0], None), ["INDIRECT/GROUP_BY shop.enriched.region"]);

    // A load: the directory it wrote, what is in it (read back), and what decides its rows.
    let mart = end(&events, "mart");
    assert_eq!(ids(&mart["outputs"]), BTreeSet::from([format!("file {}", abs(&p, "lake/mart"))]));
    let written = &mart["outputs"][0]["outputFacets"]["outputStatistics"];
    let files = parquet_files(&p.join("lake/mart"));
    assert_eq!(written["rowCount"], read_rows(&p.join("lake/mart")).len() as u64);
    assert_eq!(written["fileCount"], files.len() as u64);
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert_eq!(written["size"], bytes);
    assert_eq!(lineage(&mart["outputs"][0], Some("region")), ["DIRECT/IDENTITY shop.enriched.region"]);
    assert_eq!(
        lineage(&mart["outputs"][0], None),
        [
            "INDIRECT/FILTER shop.enriched.amount",
            "INDIRECT/JOIN shop.enriched.order_id",
            "INDIRECT/SORT shop.enriched.updated_at"
        ]
    );
}

#[test]
fn a_consumer_that_fails_never_fails_the_run() {
    let p = shop();
    let rx = Receiver::with(|_| Reply::Fail);
    let yaml = std::fs::read_to_string(p.join("shop.yaml")).unwrap();
    p.write(
        "shop.yaml",
        format!(
            "{yaml}\nopenlineage:\n  url: http://127.0.0.1:{}\n  api_key: \"${{env:OL_KEY}}\"\n  file: out/events.ndjson\n  namespace: analytics\n  timeout: 300ms\n",
            rx.port()
        ),
    );
    let key = "pipeline-OL-secret-5521";
    let r = p.weir_env(&["run", "shop.yaml", "--metrics-file", "m.prom"], &[("OL_KEY", key)]);
    r.ok();
    let events = events(&p, "out/events.ndjson");
    validate(&p, &["out/events.ndjson"]);
    assert!(events.iter().all(|e| e["job"]["namespace"] == "analytics"));
    let n = events.len();
    assert!(
        r.stderr.contains(&format!("warning: {n} OpenLineage events not delivered (http): the endpoint answered 500")),
        "{}",
        r.stderr
    );
    // The first event is tried three times; the endpoint is then known to be down and the
    // others are tried once each.
    let n = n as u32;
    assert_eq!(*rx.hits.lock().unwrap(), 3 + (n - 1));
    let metrics = std::fs::read_to_string(p.join("m.prom")).unwrap();
    let count = |transport: &str, outcome: &str| -> u32 {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("weir_openlineage_events_total")
                    && l.contains(&format!("transport=\"{transport}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .unwrap_or_else(|| panic!("no {transport} {outcome} in\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(count("http", "failed"), n);
    assert_eq!(count("file", "sent"), n);
    for text in [&r.stdout, &r.stderr, &metrics, &std::fs::read_to_string(p.join("out/events.ndjson")).unwrap()] {
        assert!(!text.contains(key));
    }
    assert!(rx.heads.lock().unwrap().iter().all(|(_, auth)| *auth == format!("Bearer {key}")));

    // Nobody listening: the run goes on as fast as refused connections allow.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let r = p.weir_env(&["run", "shop.yaml", "--full-refresh", "--openlineage-url", &closed], &[("OL_KEY", key)]);
    r.ok();
    assert!(r.stderr.contains("OpenLineage events not delivered (http)"), "{}", r.stderr);
    // And the events still went to the file.
    assert_eq!(self::events(&p, "out/events.ndjson").len(), 2 * events.len());

    // A consumer that never answers: weir waits two timeouts and a second after the run, then
    // gives up on what is left; the file, on its own queue, has every event.
    let hang = Receiver::with(|_| Reply::Hang(std::time::Duration::from_secs(30)));
    let url = format!("http://127.0.0.1:{}", hang.port());
    let r = p.weir_env(&["run", "shop.yaml", "--full-refresh", "--openlineage-url", &url], &[("OL_KEY", key)]);
    r.ok();
    assert!(r.stderr.contains("OpenLineage events not delivered (http)"), "{}", r.stderr);
    assert_eq!(self::events(&p, "out/events.ndjson").len(), 3 * events.len());
}

#[test]
fn a_failed_task_sends_fail_with_its_error_and_a_cancelled_run_abort() {
    let p = shop();
    let r = p.weir_env(
        &["run", "shop.yaml", "--openlineage-file", "fail.ndjson"],
        &[("WEIR_FAILPOINT", "after_data_files@mart=error")],
    );
    r.code(1);
    let events = events(&p, "fail.ndjson");
    validate(&p, &["fail.ndjson"]);
    let mart = job(&events, "shop.mart");
    assert_eq!(types(&mart), ["START", "FAIL"]);
    let error = &mart[1]["run"]["facets"]["errorMessage"];
    assert!(error["message"].as_str().unwrap().contains("fail point"), "{error}");
    assert_eq!(error["programmingLanguage"], "rust");
    assert_eq!(types(&job(&events, "shop.by_region")), ["START", "COMPLETE"]);
    let run = job(&events, "shop");
    assert_eq!(types(&run), ["START", "FAIL"]);
    assert!(run[1]["run"]["facets"]["errorMessage"]["message"].as_str().unwrap().contains("task `mart` failed"));

    let child = p
        .command(&["run", "shop.yaml", "--openlineage-file", "abort.ndjson"])
        .env("WEIR_FAILPOINT", "before_publish@mart=sleep(20000)")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    p.wait_until_running();
    // The load is past its start (its files written) when the signal comes.
    let t = std::time::Instant::now();
    while !std::fs::read_to_string(p.join("abort.ndjson")).unwrap_or_default().contains("\"shop.mart\"") {
        assert!(t.elapsed().as_secs() < 20, "the load never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::process::Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let events = self::events(&p, "abort.ndjson");
    validate(&p, &["abort.ndjson"]);
    assert_eq!(types(&job(&events, "shop.mart")), ["START", "ABORT"]);
    assert_eq!(types(&job(&events, "shop")), ["START", "ABORT"]);
}

#[test]
fn a_scheduled_run_says_when_it_was_due() {
    let p = Project::new();
    p.copy_from_repo("tests/data/lineage", "p");
    let yaml = std::fs::read_to_string(p.join("p/shop.yaml")).unwrap();
    p.write("p/shop.yaml", format!("{yaml}\nschedule: {{ cron: \"* * * * *\" }}\n"));
    crate::serve::handled_minutes_ago(&p, "shop", 2);
    let r = p.weir_env(&["serve", "p", "--once"], &[("WEIR_OPENLINEAGE_FILE", "events.ndjson")]);
    r.ok();
    let events = events(&p, "events.ndjson");
    validate(&p, &["events.ndjson"]);
    let run = job(&events, "shop");
    assert_eq!(types(&run), ["START", "COMPLETE"]);
    let due = run[0]["run"]["facets"]["nominalTime"]["nominalStartTime"].as_str().unwrap();
    let tick = crate::serve::ticks(&p, "shop").into_iter().rfind(|t| t.action == "ran").unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(due).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&tick.tick_at).unwrap()
    );
    assert_eq!(job(&events, "shop.mart").len(), 2);
    // OPENLINEAGE_DISABLED turns every transport off.
    crate::serve::handled_minutes_ago(&p, "shop", 2);
    std::fs::remove_file(p.join("events.ndjson")).unwrap();
    p.weir_env(
        &["serve", "p", "--once"],
        &[("WEIR_OPENLINEAGE_FILE", "events.ndjson"), ("OPENLINEAGE_DISABLED", "true")],
    )
    .ok();
    assert!(!p.join("events.ndjson").exists());
}

#[test]
fn mistakes_in_the_settings_are_reported_before_anything_runs() {
    let p = shop();
    let yaml = std::fs::read_to_string(p.join("shop.yaml")).unwrap();
    p.write(
        "shop.yaml",
        format!("{yaml}\nopenlineage:\n  url: ftp://127.0.0.1/x\n  namespace: \"\"\n  timeout: soon\n"),
    );
    let r = p.weir(&["validate", "shop.yaml"]);
    r.code(2);
    insta::assert_snapshot!("openlineage_settings_mistakes", normalize(&r.stderr, p.path()));
    p.write("shop.yaml", format!("{yaml}\nopenlineage:\n  file: e.ndjson\n  retries: 3\n"));
    let r = p.weir(&["validate", "shop.yaml"]);
    r.code(2);
    assert!(r.stderr.contains("unknown key `retries` in `openlineage`"), "{}", r.stderr);
    p.write("shop.yaml", format!("{yaml}\nopenlineage: {{ namespace: lake }}\n"));
    let r = p.weir(&["validate", "shop.yaml"]);
    r.code(2);
    assert!(r.stderr.contains("`openlineage` sends events nowhere"), "{}", r.stderr);
    p.write("shop.yaml", &yaml);
    let r = p.weir(&["run", "shop.yaml", "--openlineage-url", "localhost:5000"]);
    r.code(2);
    assert!(r.stderr.contains("--openlineage-url"), "{}", r.stderr);
    assert!(!p.join("lake").exists(), "a run with a wrong setting ran");
}
