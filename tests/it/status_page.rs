//! The status page of `weir serve`, in a real browser: Debian's Chromium driven by Playwright
//! (tests/browser/status_page.mjs) signs in with the token, reads the pipelines' statuses, a
//! failed run's failing check rows, presses "run now" and watches the run finish, and reads a
//! column's lineage; what it saw is compared here with what the state store says. Screenshots
//! of each page are written (`WEIR_SCREENSHOTS=dir` keeps them, e.g. `docs/images`). Without a
//! browser the pages are still checked over plain HTTP.

use std::time::Instant;

use serde_json::Value;

use crate::common::*;
use crate::serve::{Daemon, http, runs};

const TOKEN: &str = "st4tus-page-T0KEN";

/// `good` succeeds, `bad` fails a check on two rows, `late` has never succeeded within its
/// one-second freshness window.
fn project() -> Project {
    let p = Project::new();
    p.write("data/orders.csv", "order_id,region,amount\n1,north,10.5\n2,south,20\n3,,7\n4,north,1.5\n5,,3\n");
    let stores = "stores:\n  src: { url: \"file://../data\" }\n  out: { url: \"file://../out\" }\n";
    p.write(
        "p/good.yaml",
        format!("description: Revenue by region\n{stores}tasks:\n  orders:\n    extract: {{ store: src, path: orders.csv }}\n  by_region:\n    transform: {{ sql: \"SELECT coalesce(region, 'none') AS region, sum(amount) AS revenue FROM orders GROUP BY 1\" }}\n  mart:\n    load: {{ from: by_region, store: out, path: by_region/ }}\n"),
    );
    p.write(
        "p/bad.yaml",
        format!("{stores}tasks:\n  orders:\n    extract: {{ store: src, path: orders.csv }}\n    checks:\n      - not_null: [region]\n  mart:\n    load: {{ from: orders, store: out, path: bad/ }}\n"),
    );
    p.write(
        "p/late.yaml",
        format!("freshness: {{ warn_after: 1s }}\n{stores}tasks:\n  orders:\n    extract: {{ store: src, path: orders.csv }}\n  mart:\n    load: {{ from: orders, store: out, path: late/ }}\n"),
    );
    p
}

fn wait_for_runs(d: &Daemon, p: &Project, pipeline: &str, n: usize) {
    d.wait_for(&format!("{n} finished runs of {pipeline}"), || {
        let r = runs(p, pipeline);
        r.len() >= n && r.iter().all(|r| r.status != "running")
    });
}

/// A GET with the status page's cookie: (status, body).
fn get(d: &Daemon, path: &str, cookie: bool) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let c = if cookie { format!("Cookie: weir_token={TOKEN}\r\n") } else { String::new() };
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{c}Connection: close\r\n\r\n", d.port).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

#[test]
fn the_status_page_in_a_browser() {
    let p = project();
    let d = Daemon::start(&p, &["--token", TOKEN], &[]);
    // One run of `good` and one of `bad`; `late` never runs.
    assert_eq!(http("POST", d.port, "/api/pipelines/good/run", Some(TOKEN)).0, 202);
    assert_eq!(http("POST", d.port, "/api/pipelines/bad/run", Some(TOKEN)).0, 202);
    wait_for_runs(&d, &p, "good", 1);
    wait_for_runs(&d, &p, "bad", 1);
    d.wait_for("`late` to be stale", || d.get_with("/api/pipelines", TOKEN).to_string().contains("\"stale\""));

    // Over plain HTTP, without a browser: the token rules, and what the pages say.
    let (status, head) = get(&d, "/", false);
    assert_eq!(status, 303);
    assert!(head.contains("location: /login?next=%2F"), "{head}");
    let (status, page) = get(&d, "/", true);
    assert_eq!(status, 200);
    let order: Vec<&str> = page.split("data-pipeline=\"").skip(1).map(|s| s.split('"').next().unwrap()).collect();
    assert_eq!(order, ["bad", "late", "good"], "failing and stale first");
    assert!(!page.contains(TOKEN));
    let bad_run = runs(&p, "bad").pop().unwrap();
    assert_eq!(bad_run.status, "failed");
    let (status, run_page) = get(&d, &format!("/runs/{}", bad_run.run_id), true);
    assert_eq!(status, 200);
    assert!(run_page.contains("data-check=\"not_null_region\" data-status=\"failed\""), "{run_page}");
    // A page on another site cannot start a run, token or not.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        write!(s, "POST /pipelines/good/run HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nOrigin: http://evil.example\r\nCookie: weir_token={TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", d.port).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    }
    assert_eq!(runs(&p, "good").len(), 1);

    let (Some(playwright), Some(chromium)) = (browser_env("WEIR_TEST_PLAYWRIGHT"), browser_env("WEIR_TEST_CHROMIUM"))
    else {
        return;
    };
    let shots =
        std::env::var("WEIR_SCREENSHOTS").map(std::path::PathBuf::from).unwrap_or_else(|_| p.join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let base = format!("http://127.0.0.1:{}", d.port);
    let t = Instant::now();
    let out = std::process::Command::new("node")
        .arg(repo().join("tests/browser/status_page.mjs"))
        .args([&playwright, &chromium, &base, TOKEN, &shots.display().to_string()])
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{}\n--- daemon\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    eprintln!("browser test: {:?}", t.elapsed());
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();

    assert_eq!(v["login_url"], "/login");
    assert_eq!(v["wrong_token_status"], "Wrong token");
    let seen: Vec<(String, String)> = v["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["pipeline"].as_str().unwrap().into(), r["health"].as_str().unwrap().into()))
        .collect();
    let expect = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(seen, [expect("bad", "failing"), expect("late", "stale"), expect("good", "ok")]);
    let late = v["pipelines"].as_array().unwrap().iter().find(|r| r["pipeline"] == "late").unwrap();
    assert!(late["text"].as_str().unwrap().contains("stale never succeeded"), "{late}");
    assert_eq!(v["first_tab"], "Skip to content");

    assert_eq!(v["failed_run"]["status"], "failed");
    assert!(v["failed_run"]["error"].as_str().unwrap().contains("not_null_region"), "{}", v["failed_run"]);
    let check = &v["failed_run"]["checks"][0];
    assert_eq!(check["check"], "not_null_region");
    assert_eq!(check["status"], "failed");
    // The rows with no region, as the data file has them.
    let ids: Vec<&str> = check["rows"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(ids, ["3", "5"]);

    assert_eq!(v["dag_nodes"], serde_json::json!(["orders:succeeded", "by_region:fused", "mart:succeeded"]));
    let run_id = v["run_now_url"].as_str().unwrap().trim_start_matches("/runs/").to_string();
    // The page showed the run finishing without being reloaded.
    assert_eq!(v["run_now_reloads"], 0);
    assert_eq!(v["run_now_tasks"], serde_json::json!(["orders:succeeded", "by_region:fused", "mart:succeeded"]));
    assert!(v["gantt_bars"].as_u64().unwrap() >= 2);
    let good = runs(&p, "good");
    assert_eq!(good.len(), 2);
    assert_eq!(good[1].run_id, run_id);
    assert_eq!(good[1].status, "succeeded");

    assert_eq!(
        v["lineage_upstream"],
        serde_json::json!(["orders.amount aggregate", "orders.region group_by"]),
        "{}",
        v["lineage_upstream"]
    );
    // orders.amount and orders.region → by_region.revenue → mart.revenue
    assert_eq!(v["lineage_nodes"], 4);
    assert!(
        v["zoomed_overflow"].as_i64().unwrap() <= 0,
        "the page scrolls sideways at 200 %: {}",
        v["zoomed_overflow"]
    );
    assert_eq!(v["nojs_pipelines"], 3);
    assert_eq!(v["nojs_run_status"], "succeeded");
    assert_eq!(v["stranger_api"], 401);
    assert_eq!(v["stranger_run_now"], 303);
    assert_eq!(runs(&p, "good").len(), 2, "a request without the token started a run");
    assert_eq!(v["elsewhere"], serde_json::json!([]), "the browser asked for something else than the daemon");
    for shot in ["pipelines", "run-failed", "pipeline", "run", "lineage"] {
        let f = shots.join(format!("{shot}.png"));
        assert!(std::fs::metadata(&f).map(|m| m.len() > 10_000).unwrap_or(false), "{}", f.display());
    }
}

/// The demo pipeline's pages, over plain HTTP: every page of a real run answers and shows
/// every task.
#[test]
fn the_pages_of_the_demo() {
    let p = Project::new();
    p.copy_from_repo("pipelines", "p");
    p.copy_from_repo("examples/shop", "examples/shop");
    let d = Daemon::start(&p, &[], &[]);
    assert_eq!(http("POST", d.port, "/api/pipelines/daily_orders/run", None).0, 202);
    wait_for_runs(&d, &p, "daily_orders", 1);
    let run = runs(&p, "daily_orders").pop().unwrap();
    assert_eq!(run.status, "succeeded", "{:?}", run.error);
    let tasks: Vec<String> = weir::state::StateStore::open(&p.join("p/.weir/state.db"))
        .unwrap()
        .tasks(&run.run_id)
        .unwrap()
        .into_iter()
        .map(|t| t.task)
        .collect();
    assert!(tasks.len() >= 8, "{tasks:?}");
    let (status, list) = get(&d, "/", false);
    assert_eq!(status, 200);
    assert!(list.contains("data-pipeline=\"daily_orders\" data-health=\"ok\""), "{list}");
    let (status, pipeline) = get(&d, "/pipelines/daily_orders", false);
    assert_eq!(status, 200);
    let (status, run_page) = get(&d, &format!("/runs/{}", run.run_id), false);
    assert_eq!(status, 200);
    for t in &tasks {
        assert!(pipeline.contains(&format!("data-task=\"{t}\" data-status=\"")), "{t} not in the DAG");
        assert!(run_page.contains(&format!("<tr id=\"task-{t}\"")), "{t} not in the run");
    }
    let (status, lineage) = get(&d, "/pipelines/daily_orders/lineage?column=daily_revenue.revenue", false);
    assert_eq!(status, 200);
    assert!(
        lineage.contains("<code>orders.unit_price</code>")
            && lineage.contains("<code>daily_revenue_mart.revenue</code>"),
        "{lineage}"
    );
    // The assets are the embedded ones.
    let (status, css) = get(&d, "/static/status.css", false);
    assert_eq!(status, 200);
    assert!(css.contains("prefers-color-scheme"));
}

/// A browser test's tool from the environment; in CI it must be there.
fn browser_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {var} is not: .ci/run must install the browser test's tools"
            );
            eprintln!("skipping the browser part: set {var}");
            None
        }
    }
}
