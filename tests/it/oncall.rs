//! `weir serve` as the on-call engineer meets it at 3 a.m.: webhook receivers that fail, hang
//! or come back, restarts, `kill -9`, files broken or deleted, a `weir run` by hand. The
//! daemon must keep its schedule, deliver every alert once it can, and never go quiet.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::serve::{Daemon, Receiver, Reply, http, project, runs, state, ticks, write_pipeline};

fn alerts(p: &Project, pipeline: &str) -> Vec<weir::state::AlertRecord> {
    let mut a = state(p).alerts(Some(pipeline), 1000).unwrap();
    a.reverse();
    a
}

/// A receiver that is down (HTTP 500 to everything) must not hold the pipeline: a run that
/// fails in milliseconds ends in milliseconds, every tick of a 1-second cron runs, a manual run
/// is accepted, and SIGTERM returns within `--grace` with the alerts left queued.
#[test]
fn a_failing_webhook_never_delays_ticks_or_holds_the_pipeline() {
    let rx = Receiver::with(|_| Reply::Fail);
    let p = project("f", &format!("schedule: {{ cron: \"* * * * * *\" }}\nnotify: [{{ url: \"{}\" }}]", rx.url()));
    let d = Daemon::start(&p, &["--grace", "2s", "-vv"], &[("WEIR_FAILPOINT", "task_start@mart=error")]);
    d.wait_for("five failed runs", || runs(&p, "f").iter().filter(|r| r.status == "failed").count() >= 5);
    let t = ticks(&p, "f");
    assert!(t.iter().all(|t| !t.action.starts_with("skipped")), "no tick waits for an alert: {t:#?}");
    // A manual run is taken (no run holds the pipeline for its alert's sake).
    let mut accepted = false;
    for _ in 0..20 {
        let (status, _) = http("POST", d.port, "/api/pipelines/f/run", None);
        if status == 202 {
            accepted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(accepted, "POST /run was refused while only alerts were being retried");
    // The alerts wait in the queue, with their attempts counted.
    let a = alerts(&p, "f");
    assert!(a.len() >= 5, "{a:#?}");
    assert!(a.iter().any(|a| a.status == "pending" && a.attempts >= 1), "{a:#?}");
    let started = Instant::now();
    let (code, log) = d.stop();
    assert_eq!(code, 0, "{log}");
    assert!(started.elapsed() < Duration::from_secs(10), "SIGTERM took {:?} with --grace 2s", started.elapsed());
    assert!(alerts(&p, "f").iter().any(|a| a.status == "pending"), "undelivered alerts stay queued");
    // Not even the webhook's host and port in a debug log (the URL is a secret).
    assert!(!log.contains(&format!("127.0.0.1:{}", rx.port())), "{log}");
}

/// An alert whose delivery is under way when the daemon is killed (-9) is delivered after the
/// restart, once; both attempts carry the same idempotency key.
#[test]
fn an_alert_in_flight_survives_kill_9_and_arrives_once() {
    let rx = Receiver::with(|n| if n == 1 { Reply::Hang(Duration::from_secs(20)) } else { Reply::Ok });
    let p = project("k", &format!("notify: [{{ url: \"{}\" }}]", rx.url()));
    let d = Daemon::start(&p, &[], &[("WEIR_FAILPOINT", "task_start@mart=error")]);
    assert_eq!(http("POST", d.port, "/api/pipelines/k/run", None).0, 202);
    d.wait_for("the delivery to hang", || *rx.hits.lock().unwrap() == 1);
    d.signal("KILL");
    drop(d);
    let d = Daemon::start(&p, &[], &[]);
    d.wait_for("the alert after the restart", || !rx.bodies.lock().unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.events(), ["failure"], "delivered once");
    let keys = rx.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1], "the same idempotency key");
    let a = alerts(&p, "k");
    assert_eq!((a.len(), a[0].status.as_str(), a[0].attempts), (1, "delivered", 1), "{a:#?}");
    let body = rx.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["id"], a[0].id, "{body}");
    d.stop();
}

/// The dead-man's switch belongs to the pipeline's name and history: it fires when the file is
/// broken at startup (its `notify` still read), when the file is deleted, and again after
/// every delivery of the alert failed (`remind_every`); and the last success is on
/// `/metrics` right after a restart.
#[test]
fn stale_fires_for_broken_and_deleted_files_and_again_after_a_failed_delivery() {
    let rx = Receiver::with(|n| if n <= 5 { Reply::Fail } else { Reply::Ok });
    let head = format!(
        "freshness: {{ warn_after: 1s, remind_every: 1s }}\nnotify: [{{ url: \"{}\", on: [stale] }}]",
        rx.url()
    );
    let p = project("b", &head);
    p.weir(&["run", "p/b.yaml"]).ok();
    // Broken: a query over a column the input does not have.
    let broken = std::fs::read_to_string(p.join("p/b.yaml"))
        .unwrap()
        .replace("  mart:\n", "  bad:\n    transform: { sql: \"SELECT nosuch FROM a\" }\n  mart:\n");
    p.write("p/b.yaml", &broken);
    let d = Daemon::start(&p, &["--alert-backoff", "10ms"], &[]);
    let (_, metrics) = http("GET", d.port, "/metrics", None);
    assert!(
        metrics.contains("weir_last_success_timestamp_seconds{pipeline=\"b\"}"),
        "right after the start: {metrics}"
    );
    d.wait_for("the stale alert, delivered on a reminder after five failed attempts", || rx.events() == ["stale"]);
    let a = alerts(&p, "b");
    assert_eq!(a.iter().map(|a| a.status.as_str()).collect::<Vec<_>>(), ["failed", "delivered"], "{a:#?}");
    let body = rx.bodies.lock().unwrap()[0].clone();
    assert!(body["text"].as_str().unwrap().contains("its pipeline file is invalid, so it is not scheduled"), "{body}");
    let v = d.get("/api/pipelines");
    assert_eq!(v[0]["health"], "stale", "{v}");
    // Delivered: not again for the same silence.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rx.events(), ["stale"]);
    d.stop();

    // Deleted while the daemon runs: still watched, with the hooks it had.
    let rx2 = Receiver::start(0);
    let p2 =
        project("g", &format!("freshness: {{ warn_after: 2s }}\nnotify: [{{ url: \"{}\", on: [stale] }}]", rx2.url()));
    p2.weir(&["run", "p/g.yaml"]).ok();
    let d = Daemon::start(&p2, &[], &[]);
    std::fs::remove_file(p2.join("p/g.yaml")).unwrap();
    d.wait_for("the stale alert of a deleted pipeline", || rx2.events() == ["stale"]);
    let body = rx2.bodies.lock().unwrap()[0].clone();
    assert!(body["text"].as_str().unwrap().contains("its pipeline file is gone"), "{body}");
    d.stop();
}

/// A file that never was valid, with its `notify` unreadable (the YAML does not parse): the
/// pipeline is `invalid`, not `ok`, and the daemon's own webhook (`--notify`) gets its stale
/// alert once it was seen succeed.
#[test]
fn a_never_valid_pipeline_is_not_ok_and_the_daemon_webhook_hears_of_it() {
    let rx = Receiver::start(0);
    let p = project("n", "freshness: { warn_after: 1s }");
    p.weir(&["run", "p/n.yaml"]).ok();
    let d = Daemon::start(&p, &[], &[]);
    d.stop();
    p.write("p/n.yaml", "tasks: [this is: not: yaml\n");
    p.write("p/never.yaml", "tasks: { a: { extract: { store: nosuch, path: x.csv } } }\n");
    let d = Daemon::start(&p, &["--notify", &rx.url()], &[]);
    let v = d.get("/api/pipelines");
    let health = |name: &str| v.as_array().unwrap().iter().find(|x| x["name"] == name).unwrap()["health"].clone();
    assert_eq!(health("never"), "invalid", "{v}");
    assert_ne!(health("n"), "ok", "{v}");
    d.wait_for("the stale alert on the daemon's webhook", || rx.events() == ["stale"]);
    assert!(!d.log().contains("T0K3N"), "the URL is a secret");
    d.stop();
}

/// A tick that finds the pipeline held by another process (a `weir run` by hand) is recorded
/// `skipped: running elsewhere` and counted as skipped, with no run id of a run that does not
/// exist.
#[test]
fn a_tick_while_weir_run_holds_the_pipeline_is_skipped() {
    let p = project("h", "schedule: { cron: \"* * * * * *\" }");
    let mut manual = p.command(&["run", "p/h.yaml"]);
    let mut manual = manual
        .env("WEIR_FAILPOINT", "task_start@mart=sleep(4000)")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while runs(&p, "h").is_empty() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let d = Daemon::start(&p, &[], &[]);
    d.wait_for("a skipped tick", || ticks(&p, "h").iter().any(|t| t.action == "skipped: running elsewhere"));
    let (_, metrics) = http("GET", d.port, "/metrics", None);
    d.stop();
    let _ = manual.wait();
    let t = ticks(&p, "h");
    let known: Vec<String> = runs(&p, "h").into_iter().map(|r| r.run_id).collect();
    for tick in t.iter().filter(|t| t.action == "ran") {
        assert!(known.contains(tick.run_id.as_ref().unwrap()), "tick {tick:?} names a run that does not exist");
    }
    assert!(
        metrics.lines().any(|l| l.starts_with("weir_ticks_total{")
            && l.contains("action=\"skipped\"")
            && l.contains("pipeline=\"h\"")),
        "{metrics}"
    );
}

/// An edit that keeps the file's size and modification time (`cp -p`, `touch -r`) is seen.
#[test]
fn an_edit_with_the_same_size_and_time_is_picked_up() {
    let p = project("e", "schedule: { cron: \"0 2 * * *\" }");
    let d = Daemon::start(&p, &[], &[]);
    assert_eq!(d.get("/api/pipelines")[0]["schedule"]["cron"], "0 2 * * *");
    std::fs::copy(p.join("p/e.yaml"), p.join("stamp")).unwrap();
    write_pipeline(&p, "e", "schedule: { cron: \"0 3 * * *\" }");
    let touched =
        std::process::Command::new("touch").arg("-r").arg(p.join("stamp")).arg(p.join("p/e.yaml")).status().unwrap();
    assert!(touched.success());
    d.wait_for("the edit", || d.get("/api/pipelines")[0]["schedule"]["cron"] == "0 3 * * *");
    d.stop();
}

/// A failure alert names every failed task with its own error, on one line; a task whose
/// query fuses transforms says so; a pipeline that no longer compiles names the task.
#[test]
fn alerts_name_every_failed_task_in_plain_text() {
    let rx = Receiver::start(0);
    let p = Project::new();
    p.write("data/a.csv", "x\n1\n2\n");
    p.write(
        "p/t.yaml",
        format!(
            "notify: [{{ url: \"{}\" }}]\nstores:\n  src: {{ url: \"file://../data\" }}\n  out: {{ url: \"file://../out\" }}\ntasks:\n  a:\n    extract: {{ store: src, path: a.csv }}\n  doubled:\n    transform: {{ sql: \"SELECT x * 2 AS y FROM a\" }}\n  one:\n    load: {{ from: doubled, store: out, path: one/ }}\n  two:\n    load: {{ from: a, store: out, path: two/ }}\n",
            rx.url()
        ),
    );
    p.weir_env(&["serve", "p", "--once", "--grace", "5s"], &[]).ok();
    let d = Daemon::start(&p, &[], &[("WEIR_FAILPOINT", "task_start@one=error,task_start@two=error")]);
    assert_eq!(http("POST", d.port, "/api/pipelines/t/run", None).0, 202);
    d.wait_for("the failure alert", || rx.events() == ["failure"]);
    d.stop();
    let body = rx.bodies.lock().unwrap()[0].clone();
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("task `one` (its query includes the fused transform `doubled`): "), "{text}");
    assert!(text.contains("task `two`: "), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert_eq!(body["tasks"].as_array().unwrap().len(), 2, "{body}");

    // No longer compiles: the input lost the column the transform reads.
    p.write("data/a.csv", "z\n1\n");
    let d = Daemon::start(&p, &[], &[]);
    let v = d.get("/api/pipelines");
    assert_eq!(v[0]["valid"], false, "{v}");
    d.stop();
    p.write("data/a.csv", "x\n1\n");
    let d = Daemon::start(&p, &[], &[]);
    p.write("data/a.csv", "z\n1\n");
    assert_eq!(http("POST", d.port, "/api/pipelines/t/run", None).0, 202);
    d.wait_for("the compile failure alert", || rx.events().len() == 2);
    d.stop();
    let body = rx.bodies.lock().unwrap()[1].clone();
    assert_eq!(body["task"], "doubled", "{body}");
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("task `doubled`: ") && !text.contains('│') && !text.contains('\n'), "{text}");
}

/// API errors are JSON, with a suggestion for a misspelt pipeline.
#[test]
fn api_errors_are_json() {
    let p = project("api", "");
    let d = Daemon::start(&p, &[], &[]);
    let (status, body) = http("GET", d.port, "/api/runs?limit=abc", None);
    assert_eq!(status, 400);
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].as_str().unwrap().contains("`limit`"));
    let (status, body) = http("GET", d.port, "/api/runs?pipeline=apj", None);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("did you mean `api`?"), "{body}");
    let (status, body) = http("DELETE", d.port, "/api/pipelines", None);
    assert_eq!(status, 405);
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string(), "{body}");
    d.stop();
}

/// `kill -9` and a restart at once (the killed process not even reaped yet): the killed run is
/// abandoned at startup, not at some later tick.
#[test]
fn a_run_killed_with_9_is_abandoned_at_a_restart_right_after() {
    let p = project("z", "");
    let d = Daemon::start(&p, &[], &[("WEIR_FAILPOINT", "task_start@mart=sleep(30000)")]);
    assert_eq!(http("POST", d.port, "/api/pipelines/z/run", None).0, 202);
    d.wait_for("the run to start", || runs(&p, "z").iter().any(|r| r.status == "running"));
    // SIGKILL through `kill`, without waiting on the child: it stays a zombie meanwhile.
    std::process::Command::new("kill").args(["-9", &d.pid().to_string()]).status().unwrap();
    let d2 = Daemon::start(&p, &[], &[]);
    let r = runs(&p, "z");
    assert_eq!(r.last().unwrap().status, "abandoned", "{r:#?}\n{}", d2.log());
    d2.stop();
    drop(d);
}
