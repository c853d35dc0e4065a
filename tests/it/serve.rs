//! `weir serve`: schedules, catch-up, overlap, reload, shutdown, kill -9, HTTP, metrics and
//! webhooks. Assertions are on the state store's run and tick records, never on wall-clock
//! thresholds; seconds-resolution cron keeps the tests short.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use weir::state::StateStore;

use crate::common::*;

/// A project with pipeline directory `p/`, input `data/a.csv` (2 rows) and an append load
/// (so every successful run adds 2 rows to `out/mart`).
pub(crate) fn project(name: &str, head: &str) -> Project {
    let p = Project::new();
    p.write("data/a.csv", "x\n1\n2\n");
    write_pipeline(&p, name, head);
    p
}

pub(crate) fn write_pipeline(p: &Project, name: &str, head: &str) {
    p.write(
        &format!("p/{name}.yaml"),
        format!(
            "{head}\nstores:\n  src: {{ url: \"file://../data\" }}\n  out: {{ url: \"file://../out\" }}\ntasks:\n  a:\n    extract: {{ store: src, path: a.csv }}\n  mart:\n    load: {{ from: a, store: out, path: mart/, mode: append }}\n"
        ),
    );
}

pub(crate) fn state(p: &Project) -> StateStore {
    StateStore::open(&p.join("p/.weir/state.db")).unwrap()
}

fn rows(p: &Project) -> usize {
    if !p.join("out/mart").exists() {
        return 0;
    }
    read_rows(&p.join("out/mart")).len()
}

/// Runs of `pipeline`, oldest first: (status, logical tick or "").
pub(crate) fn runs(p: &Project, pipeline: &str) -> Vec<weir::state::RunRecord> {
    let mut r = state(p).runs(Some(pipeline), 1000).unwrap();
    r.reverse();
    r
}

pub(crate) fn ticks(p: &Project, pipeline: &str) -> Vec<weir::state::TickRecord> {
    let mut t = state(p).ticks(Some(pipeline), 10_000).unwrap();
    t.reverse();
    t
}

/// Pretend the daemon last handled a tick of `pipeline` `minutes` minutes ago (a downtime).
pub(crate) fn handled_minutes_ago(p: &Project, pipeline: &str, minutes: i64) {
    let t = (Utc::now() - chrono::Duration::minutes(minutes)).trunc_subsecs(0);
    let t = t - chrono::Duration::seconds(chrono::Timelike::second(&t) as i64);
    state(p).record_tick(pipeline, &t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(), "ran", None).unwrap();
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `weir serve`.
pub(crate) struct Daemon {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub(crate) fn start(p: &Project, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args =
            vec!["serve", "p", "--listen", &listen, "--reload-interval", "200ms", "--stale-interval", "200ms"];
        args.extend_from_slice(extra);
        let mut cmd = p.command(&args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start weir serve");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut g = l.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        let d = Daemon { child, port, log };
        d.wait_for("the daemon to answer", || http("GET", d.port, "/healthz", None).0 == 200);
        d
    }

    pub(crate) fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = http("GET", self.port, path, None);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub(crate) fn get_with(&self, path: &str, token: &str) -> serde_json::Value {
        let (status, body) = http("GET", self.port, path, Some(token));
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub(crate) fn wait_for(&self, what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(30), "timed out waiting for {what}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn signal(&self, sig: &str) {
        std::process::Command::new("kill").args(["-s", sig, &self.child.id().to_string()]).status().unwrap();
    }

    /// SIGTERM and wait for the exit status.
    pub(crate) fn stop(mut self) -> (i32, String) {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        (status.code().unwrap_or(-1), self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client: (status, body).
pub(crate) fn http(method: &str, port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// How a test receiver answers a request (numbered from 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Reply {
    Ok,
    Fail,
    /// Hold the connection this long without answering.
    Hang(Duration),
}

/// A webhook receiver: records the body of every request it answers 200 (each connection on
/// its own thread, so one that hangs does not hold the others).
pub(crate) struct Receiver {
    port: u16,
    pub bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    pub hits: Arc<Mutex<u32>>,
    /// `Idempotency-Key` of every request, answered or not.
    pub keys: Arc<Mutex<Vec<String>>>,
    /// The request line and `Authorization` header of every request, answered or not.
    pub heads: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    /// Answers 500 to the first `fail_first` requests, then 200.
    pub(crate) fn start(fail_first: u32) -> Receiver {
        Receiver::with(move |n| if n <= fail_first { Reply::Fail } else { Reply::Ok })
    }

    pub(crate) fn with(reply: impl Fn(u32) -> Reply + Send + Sync + 'static) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(Mutex::new(0u32));
        let keys = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (b, h, k, hd) = (bodies.clone(), hits.clone(), keys.clone(), heads.clone());
        let reply = Arc::new(reply);
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (b, h, k, hd, reply) = (b.clone(), h.clone(), k.clone(), hd.clone(), reply.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut len = 0usize;
                    let mut request = String::new();
                    let _ = reader.read_line(&mut request);
                    let mut auth = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if lower.starts_with("authorization:") {
                            auth = line["authorization:".len()..].trim().to_string();
                        }
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if let Some(v) = lower.strip_prefix("idempotency-key:") {
                            k.lock().unwrap().push(v.trim().to_string());
                        }
                    }
                    hd.lock().unwrap().push((request.trim().to_string(), auth));
                    let mut body = vec![0; len];
                    let _ = reader.read_exact(&mut body);
                    let n = {
                        let mut h = h.lock().unwrap();
                        *h += 1;
                        *h
                    };
                    let status = match reply(n) {
                        Reply::Ok => "200 OK",
                        Reply::Fail => "500 Internal Server Error",
                        Reply::Hang(d) => {
                            std::thread::sleep(d);
                            return;
                        }
                    };
                    if status.starts_with("200") {
                        b.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or_default());
                    }
                    let _ = conn.write_all(
                        format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").as_bytes(),
                    );
                });
            }
        });
        Receiver { port, bodies, hits, keys, heads }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/T0K3N-webhook-secret", self.port)
    }

    pub(crate) fn events(&self) -> Vec<String> {
        self.bodies.lock().unwrap().iter().map(|b| b["event"].as_str().unwrap_or("").to_string()).collect()
    }
}

#[test]
fn a_first_once_only_registers_and_a_tick_is_run_once() {
    let p = project("tick", "schedule: { cron: \"* * * * *\" }");
    let r = p.weir(&["serve", "p", "--once"]);
    r.ok();
    assert!(r.stdout.contains("nothing due"), "{}", r.stdout);
    assert!(runs(&p, "tick").is_empty());
    // a tick two minutes back was the last one handled: the missed minute runs, once
    handled_minutes_ago(&p, "tick", 2);
    let r = p.weir(&["serve", "p", "--once"]);
    r.ok();
    assert!(r.stdout.contains("succeeded  tick run"), "{}", r.stdout);
    assert_eq!(runs(&p, "tick").len(), 1);
    assert_eq!(rows(&p), 2);
    // and not again
    p.weir(&["serve", "p", "--once"]).ok();
    assert_eq!(runs(&p, "tick").len(), 1);
}

#[test]
fn catch_up_none_last_all_after_a_downtime() {
    for (policy, expect_runs, expect_skipped) in [("none", 0, 10), ("last", 1, 9), ("all", 10, 0)] {
        let p = project("c", &format!("schedule: {{ cron: \"* * * * *\", catchup: {policy} }}"));
        p.weir(&["serve", "p", "--once"]).ok();
        handled_minutes_ago(&p, "c", 10);
        p.weir(&["serve", "p", "--once"]).ok();
        let r = runs(&p, "c");
        assert_eq!(r.len(), expect_runs, "catchup {policy}");
        assert!(r.iter().all(|r| r.status == "succeeded"));
        assert_eq!(rows(&p), 2 * expect_runs, "catchup {policy}");
        let t = ticks(&p, "c");
        let skipped = t.iter().filter(|t| t.action.starts_with("skipped: catchup")).count();
        let ran: Vec<_> = t.iter().filter(|t| t.action == "ran" && t.run_id.is_some()).collect();
        assert_eq!(skipped, expect_skipped, "catchup {policy}: {t:#?}");
        assert_eq!(ran.len(), expect_runs, "catchup {policy}");
        // each run's logical date is its tick's; `all` runs them oldest first
        for w in ran.windows(2) {
            assert!(w[0].tick_at < w[1].tick_at);
            let started = |id: &str| r.iter().find(|x| x.run_id == id).unwrap().started_at.clone();
            assert!(started(w[0].run_id.as_deref().unwrap()) <= started(w[1].run_id.as_deref().unwrap()));
        }
        if policy == "last" {
            // the newest missed tick is the one that ran
            assert_eq!(t.last().unwrap().action, "ran");
        }
    }
}

#[test]
fn overlap_skip_and_queue_never_run_two_at_once() {
    for overlap in ["skip", "queue"] {
        let p = project("o", &format!("schedule: {{ cron: \"* * * * * *\", overlap: {overlap} }}"));
        let d = Daemon::start(&p, &[], &[("WEIR_FAILPOINT", "task_start@mart=sleep(2200)")]);
        d.wait_for("two finished runs", || runs(&p, "o").iter().filter(|r| r.status == "succeeded").count() >= 2);
        let (code, log) = d.stop();
        assert_eq!(code, 0, "{log}");
        let r = runs(&p, "o");
        // never two at once: each run starts after the previous one finished
        for w in r.windows(2) {
            let prev_end = w[0].finished_at.clone().expect("finished");
            assert!(w[1].started_at >= prev_end, "overlapping runs: {r:#?}");
        }
        let t = ticks(&p, "o");
        let actions: Vec<&str> = t.iter().map(|t| t.action.as_str()).collect();
        if overlap == "skip" {
            assert!(actions.contains(&"skipped: overlap"), "{actions:?}");
            assert!(!actions.contains(&"queued"), "{actions:?}");
        } else {
            // one tick waits behind the run (and then runs); the others are skipped
            assert!(actions.contains(&"skipped: queue full"), "{actions:?}");
            assert!(!actions.contains(&"skipped: overlap"), "{actions:?}");
            let queued_then_ran = r.windows(2).any(|w| {
                let gap = chrono::DateTime::parse_from_rfc3339(&w[1].started_at).unwrap()
                    - chrono::DateTime::parse_from_rfc3339(w[0].finished_at.as_deref().unwrap()).unwrap();
                gap < chrono::Duration::milliseconds(500)
            });
            assert!(queued_then_ran, "a queued tick starts as soon as the run before it ends: {r:#?}");
        }
        assert_eq!(rows(&p), 2 * r.iter().filter(|r| r.status == "succeeded").count());
    }
}

#[test]
fn reload_picks_up_a_good_edit_and_keeps_the_last_good_version_on_a_bad_one() {
    let p = project("r", "schedule: { cron: \"0 2 * * *\" }");
    let d = Daemon::start(&p, &[], &[]);
    let pipeline = |d: &Daemon| d.get("/api/pipelines")[0].clone();
    assert_eq!(pipeline(&d)["schedule"]["cron"], "0 2 * * *");
    assert_eq!(pipeline(&d)["valid"], true);

    // a bad edit: errors reported, the previous version stays scheduled and runnable
    std::thread::sleep(Duration::from_millis(20));
    write_pipeline(&p, "r", "schedule: { cron: \"0 3 * * *\" }\nmax_paralel: 2");
    d.wait_for("the bad edit to be reported", || pipeline(&d)["valid"] == false);
    let v = pipeline(&d);
    assert_eq!(v["schedule"]["cron"], "0 2 * * *", "{v}");
    let errors = v["errors"].to_string();
    assert!(errors.contains("unknown key `max_paralel`") && errors.contains("max_parallel"), "{errors}");
    let (_, metrics) = http("GET", d.port, "/metrics", None);
    assert!(metrics.contains("weir_pipeline_load_errors{pipeline=\"r\"} 1"), "{metrics}");
    let (status, body) = http("POST", d.port, "/api/pipelines/r/run", None);
    assert_eq!(status, 202, "{body}");
    d.wait_for("the run of the old version", || runs(&p, "r").iter().any(|r| r.status == "succeeded"));

    // a good edit replaces it
    std::thread::sleep(Duration::from_millis(20));
    write_pipeline(&p, "r", "schedule: { cron: \"30 4 * * *\", timezone: Europe/Berlin }");
    d.wait_for("the good edit", || pipeline(&d)["valid"] == true);
    let v = pipeline(&d);
    assert_eq!(v["schedule"]["cron"], "30 4 * * *");
    assert_eq!(v["schedule"]["timezone"], "Europe/Berlin");
    assert!(v["errors"].as_array().unwrap().is_empty());
    let (_, metrics) = http("GET", d.port, "/metrics", None);
    assert!(metrics.contains("weir_pipeline_load_errors{pipeline=\"r\"} 0"), "{metrics}");
    assert!(d.log().contains("invalid edit: the previous version stays scheduled"), "{}", d.log());
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn http_api_runs_and_token() {
    let p = project("h", "");
    // off loopback without a token: refused
    let port = free_port();
    let r = p.weir(&["serve", "p", "--listen", &format!("0.0.0.0:{port}")]);
    r.code(1);
    assert!(r.stderr.contains("without a token"), "{}", r.stderr);

    let d = Daemon::start(&p, &["--token", "s3cr3t-tok"], &[]);
    assert_eq!(http("GET", d.port, "/api/pipelines", None).0, 401);
    assert_eq!(http("GET", d.port, "/api/pipelines", Some("wrong")).0, 401);
    assert_eq!(http("GET", d.port, "/metrics", None).0, 200);
    assert_eq!(http("GET", d.port, "/healthz", None).0, 200);
    let (status, body) = http("POST", d.port, "/api/pipelines/h/run", Some("s3cr3t-tok"));
    assert_eq!(status, 202, "{body}");
    let run_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["run_id"].as_str().unwrap().to_string();
    assert_eq!(http("POST", d.port, "/api/pipelines/nope/run", Some("s3cr3t-tok")).0, 404);
    d.wait_for("the run", || runs(&p, "h").iter().any(|r| r.status == "succeeded"));
    let (status, body) = http("GET", d.port, "/api/runs?pipeline=h", Some("s3cr3t-tok"));
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["run_id"], run_id.as_str());
    assert_eq!(v[0]["status"], "succeeded");
    let (_, body) = http("GET", d.port, &format!("/api/runs/{run_id}"), Some("s3cr3t-tok"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tasks"].as_array().unwrap().len(), 2, "{v}");
    assert!(!d.log().contains("s3cr3t-tok"));
    d.stop();
}

#[test]
fn sigterm_lets_a_run_finish_within_the_grace_period_or_cancels_it() {
    for (grace, expect) in [("20s", "succeeded"), ("300ms", "cancelled")] {
        let p = project("g", "");
        let d = Daemon::start(&p, &["--grace", grace], &[("WEIR_FAILPOINT", "before_publish@mart=sleep(1500)")]);
        let (status, _) = http("POST", d.port, "/api/pipelines/g/run", None);
        assert_eq!(status, 202);
        d.wait_for("the run to start", || runs(&p, "g").iter().any(|r| r.status == "running"));
        std::thread::sleep(Duration::from_millis(200));
        let (code, log) = d.stop();
        assert_eq!(code, 0, "{log}");
        let r = runs(&p, "g");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, expect, "grace {grace}: {log}");
        // a cancelled run published nothing
        assert_eq!(rows(&p), if expect == "succeeded" { 2 } else { 0 });
    }
}

#[test]
fn kill_9_mid_run_then_restart_records_it_abandoned_and_catches_up() {
    let p = project("k", "schedule: { cron: \"* * * * * *\", catchup: last }");
    let d = Daemon::start(&p, &[], &[("WEIR_FAILPOINT", "before_publish@mart=sleep(30000)")]);
    d.wait_for("a run to be going", || runs(&p, "k").iter().any(|r| r.status == "running"));
    std::thread::sleep(Duration::from_millis(300));
    drop(d); // SIGKILL
    assert_eq!(rows(&p), 0, "nothing was published");
    std::thread::sleep(Duration::from_millis(1100));
    let r = p.weir(&["serve", "p", "--once"]);
    r.ok();
    let r = runs(&p, "k");
    assert_eq!(r[0].status, "abandoned", "{r:#?}");
    assert_eq!(r.last().unwrap().status, "succeeded", "{r:#?}");
    assert_eq!(r.iter().filter(|r| r.status == "succeeded").count(), 1);
    // the killed run's tick was missed again: catch-up (`last`) decided it; the newest tick ran
    let t = ticks(&p, "k");
    assert!(!t.iter().any(|t| t.run_id.as_deref() == Some(r[0].run_id.as_str())), "{t:#?}");
    assert_eq!(t.last().unwrap().run_id.as_deref(), Some(r.last().unwrap().run_id.as_str()), "{t:#?}");
    assert_eq!(rows(&p), 2, "exactly one run's rows");
}

#[test]
fn webhooks_for_failure_check_failed_recovered_and_stale() {
    let rx = Receiver::start(2);
    let notify = format!("notify: [{{ url: \"{}\" }}]", rx.url());
    // failure: the first two deliveries are refused (HTTP 500): retried with backoff
    let p = project("w", &format!("schedule: {{ cron: \"* * * * * *\" }}\n{notify}"));
    // each call runs the newest tick since the last one (seconds cron, catchup: last)
    let once = |env: &[(&str, &str)]| {
        std::thread::sleep(Duration::from_millis(1100));
        p.weir_env(&["serve", "p", "--once", "--alert-backoff", "20ms"], env)
    };
    p.weir(&["serve", "p", "--once"]).ok();
    let r = once(&[("WEIR_FAILPOINT", "task_start@mart=error")]);
    r.code(1);
    assert_eq!(rx.events(), ["failure"]);
    assert_eq!(*rx.hits.lock().unwrap(), 3);
    let body = rx.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["pipeline"], "w");
    assert_eq!(body["task"], "mart");
    assert!(body["text"].as_str().unwrap().contains("pipeline `w` failed"), "{body}");
    assert!(body["run_id"].as_str().is_some());
    let alerts = state(&p).alerts(Some("w"), 10).unwrap();
    assert_eq!((alerts[0].status.as_str(), alerts[0].attempts), ("delivered", 3));

    // recovered
    once(&[]).ok();
    assert_eq!(rx.events(), ["failure", "recovered"]);
    // a success after a success says nothing
    once(&[]).ok();
    assert_eq!(rx.events().len(), 2);

    // check_failed: an error check blocks the load
    let text = std::fs::read_to_string(p.join("p/w.yaml")).unwrap().replace(
        "    extract: { store: src, path: a.csv }\n",
        "    extract: { store: src, path: a.csv }\n    checks:\n      - expression: \"x > 1\"\n",
    );
    p.write("p/w.yaml", text);
    once(&[]).code(1);
    assert_eq!(rx.events(), ["failure", "recovered", "check_failed"]);
    let body = rx.bodies.lock().unwrap()[2].clone();
    assert_eq!(body["task"], "a");

    // the URL is a secret: not in any output, nor the state store
    let db = std::fs::read(p.join("p/.weir/state.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains("T0K3N-webhook-secret"));
    let r = p.weir(&["plan", "p"]);
    assert!(!r.stdout.contains("T0K3N") && !r.stderr.contains("T0K3N"), "{}", r.stdout);
}

#[test]
fn stale_fires_when_a_pipeline_never_ran_and_once_per_silence() {
    let rx = Receiver::start(0);
    // scheduled far in the future: it never runs
    let p = project(
        "s",
        &format!(
            "schedule: {{ cron: \"0 0 1 1 *\" }}\nfreshness: {{ warn_after: 1s }}\nnotify: [{{ url: \"{}\", on: [stale] }}]",
            rx.url()
        ),
    );
    p.weir(&["serve", "p", "--once"]).ok();
    assert!(rx.events().is_empty());
    std::thread::sleep(Duration::from_millis(1300));
    p.weir(&["serve", "p", "--once"]).ok();
    assert_eq!(rx.events(), ["stale"]);
    let body = rx.bodies.lock().unwrap()[0].clone();
    assert!(body["text"].as_str().unwrap().contains("no successful run since weir started watching it"), "{body}");
    // the same silence is not reported twice
    p.weir(&["serve", "p", "--once"]).ok();
    assert_eq!(rx.events(), ["stale"]);

    // the daemon's own timer fires it too
    let p2 =
        project("s2", &format!("freshness: {{ warn_after: 1s }}\nnotify: [{{ url: \"{}\", on: [stale] }}]", rx.url()));
    let d = Daemon::start(&p2, &[], &[]);
    d.wait_for("the stale alert", || rx.events().len() == 2);
    d.stop();
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("dashboards/weir.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 7, "{exprs:?}");
    let names: std::collections::BTreeSet<String> =
        exprs.iter().flat_map(|e| weir::metrics::names_in_promql(e)).collect();

    // a scheduled pipeline with a warning check that trips, so every series exists
    let p = project("m", "schedule: { cron: \"* * * * * *\" }");
    let text = std::fs::read_to_string(p.join("p/m.yaml")).unwrap().replace(
        "    extract: { store: src, path: a.csv }\n",
        "    extract: { store: src, path: a.csv }\n    checks:\n      - expression: \"x > 1\"\n        severity: warn\n",
    );
    p.write("p/m.yaml", text);
    let d = Daemon::start(&p, &[], &[]);
    d.wait_for("a run", || runs(&p, "m").iter().any(|r| r.status == "succeeded"));
    let (_, metrics) = http("GET", d.port, "/metrics", None);
    for n in &names {
        assert!(metrics.contains(&format!("\n{n}")), "the dashboard queries `{n}`, which is not exported:\n{metrics}");
    }
    assert!(
        metrics.contains("weir_check_failures_total{pipeline=\"m\",task=\"a\",check=\"expression\",severity=\"warn\"}"),
        "{metrics}"
    );
    d.stop();

    // promtool (Debian's prometheus package) where installed; CI installs it
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    match promtool {
        Ok(mut c) => {
            c.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => assert!(std::env::var_os("CI").is_none(), "promtool is not installed (the prometheus package)"),
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", serde_json::Value::String(s)) if s.contains("weir_") => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

#[test]
fn weir_run_writes_a_metrics_file() {
    let p = project("f", "");
    p.weir(&["run", "p", "--metrics-file", "metrics/weir.prom"]).ok();
    let text = std::fs::read_to_string(p.join("metrics/weir.prom")).unwrap();
    assert!(text.contains("weir_runs_total{pipeline=\"f\",status=\"succeeded\"} 1"), "{text}");
    assert!(text.contains("weir_rows_total{pipeline=\"f\",task=\"mart\",direction=\"out\"} 2"), "{text}");
    assert!(text.contains("weir_last_success_timestamp_seconds{pipeline=\"f\"}"), "{text}");
}
