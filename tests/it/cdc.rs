//! Change data capture from PostgreSQL against a real server (see `postgres.rs` for the
//! harness): inserts, updates, deletes and a rolled-back transaction merged into Parquet and
//! Delta; a first run while a writer is busy; kill -9 at every step and a rerun; the slot's
//! position; errors a person can act on.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;
use crate::postgres::{PASSWORD, PgDb, server};

/// A pipeline reading `table` by CDC through `slot` into a merge load `out` (Parquet or Delta)
/// and, with `log`, an append load `log` that keeps every change row.
fn cdc_project(db: &PgDb, table: &str, slot: &str, delta: bool, log: bool) -> Project {
    let p = Project::new();
    let format = if delta { ", format: delta" } else { "" };
    let mut yaml = format!(
        "stores:\n{}  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: {table}, incremental: {{ cdc: {{ slot: {slot} }} }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: merge, keys: [id], order_by: _lsn, delete_when: \"_op = 'delete'\"{format} }}\n",
        db.store()
    );
    if log {
        yaml.push_str("  log:\n    load: { from: src, store: lake, path: log/, mode: append }\n");
    }
    p.write("p.yaml", yaml);
    p
}

/// The table as the server has it: `id=… v=…` per row, sorted.
fn table_rows(db: &PgDb, table: &str) -> Vec<String> {
    let rows: BTreeSet<String> = db
        .sql(&format!(
            "SELECT 'id=' || id || ' v=' || coalesce(v::text, '') || ' big=' || coalesce(length(big), 0) FROM {table}"
        ))
        .lines()
        .map(str::to_string)
        .collect();
    rows.into_iter().collect()
}

/// `id=… v=…` of every row of `table` on the server, sorted.
fn server_id_v(db: &PgDb, table: &str) -> Vec<String> {
    let rows: BTreeSet<String> =
        db.sql(&format!("SELECT 'id=' || id || ' v=' || v FROM {table}")).lines().map(str::to_string).collect();
    rows.into_iter().collect()
}

/// `id=… v=…` of every row of the Parquet output `lake/out`, sorted.
fn output_id_v(p: &Project) -> Vec<String> {
    let mut got: Vec<String> =
        read_rows(&p.join("lake/out")).iter().map(|r| format!("id={} v={}", r["id"], r["v"])).collect();
    got.sort();
    got
}

fn output_rows(p: &Project, delta: bool) -> Vec<String> {
    let rows = if delta { read_delta_rows(&p.join("lake/out")) } else { read_rows(&p.join("lake/out")) };
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            let big = r.get("big").map_or(0, |b| if b == "NULL" { 0 } else { b.len() });
            format!("id={} v={} big={big}", r["id"], r.get("v").cloned().unwrap_or_default())
        })
        .collect();
    out.sort();
    out
}

/// `got` equals `want`; on failure, only the rows that differ are shown.
fn assert_same(got: &[String], want: &[String], what: &str) {
    if got != want {
        let g: BTreeSet<&String> = got.iter().collect();
        let w: BTreeSet<&String> = want.iter().collect();
        let extra: Vec<_> = g.difference(&w).take(20).collect();
        let missing: Vec<_> = w.difference(&g).take(20).collect();
        panic!("{what}: {} rows, want {}; not in the table: {extra:?}; missing: {missing:?}", got.len(), want.len());
    }
}

fn report(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn task<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["tasks"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()
}

/// The slot's confirmed position, as PostgreSQL writes it.
fn slot_position(db: &PgDb, slot: &str) -> String {
    db.sql(&format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"))
        .trim()
        .to_string()
}

/// An LSN (`16/B374D848`) as a number.
fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.trim().split_once('/').unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// The position the run's note says the loads committed.
fn noted_position(src: &serde_json::Value) -> String {
    let note = src["note"].as_str().unwrap_or("");
    note.rsplit("position now ").next().unwrap_or("").trim().to_string()
}

/// Inserts, updates (one row twice in one transaction, one row with a large TOASTed value
/// left unchanged), deletes and a rolled-back transaction: after each run the merged output
/// is the table, the slot is at the position the load committed, and a run with nothing new
/// loads nothing. In Parquet and in Delta.
#[test]
fn changes_merge_into_parquet_and_delta_exactly_as_the_table() {
    let Some(pg) = server() else { return };
    for delta in [false, true] {
        let name = if delta { "cdc_delta" } else { "cdc_parquet" };
        let db = pg.database(name);
        db.sql(
            "CREATE TABLE t (id int PRIMARY KEY, v text, big text);
             ALTER TABLE t REPLICA IDENTITY FULL;
             INSERT INTO t SELECT g, 'v' || g, NULL FROM generate_series(1, 50) g;
             UPDATE t SET big = (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400)) WHERE id <= 3;",
        );
        // The large values are stored out of line (TOAST): an update that leaves them as they
        // are does not send them.
        assert_eq!(db.sql("SELECT pg_relation_size(reltoastrelid) > 0 FROM pg_class WHERE relname = 't'"), "t\n");
        let p = cdc_project(&db, "t", "weir_t", delta, false);
        let r = db.weir(&p, &["run", "p.yaml", "--json"]);
        r.ok();
        let src = task(&report(&r), "src").clone();
        assert_eq!(src["rows_out"], 50, "{src}");
        assert!(src["note"].as_str().unwrap().contains("first run: 50 rows of the table"), "{src}");
        assert_eq!(output_rows(&p, delta), table_rows(&db, "t"));
        assert_eq!(slot_position(&db, "weir_t"), noted_position(&src), "the slot moved to the committed position");

        db.sql(
            "INSERT INTO t SELECT g, 'v' || g FROM generate_series(51, 55) g;
             UPDATE t SET v = v || '+' WHERE id % 10 = 0;
             UPDATE t SET v = 'toasted row, big unchanged' WHERE id = 2;
             DELETE FROM t WHERE id IN (1, 3, 52);
             BEGIN; UPDATE t SET v = 'first' WHERE id = 7; UPDATE t SET v = 'second' WHERE id = 7; COMMIT;
             BEGIN; UPDATE t SET v = 'rolled back' WHERE id = 8; INSERT INTO t VALUES (999, 'rolled back'); ROLLBACK;
             INSERT INTO t VALUES (1, 'back again');",
        );
        let r = db.weir(&p, &["run", "p.yaml", "--json"]);
        r.ok();
        let src = task(&report(&r), "src").clone();
        // 5 inserts, 5 + 1 updates, 3 deletes, 2 updates, 1 insert.
        assert_eq!(src["rows_out"], 17, "{src}");
        assert_eq!(output_rows(&p, delta), table_rows(&db, "t"));
        assert!(!output_rows(&p, delta).iter().any(|r| r.contains("rolled back")));
        assert_eq!(slot_position(&db, "weir_t"), noted_position(&src));

        let r = db.weir(&p, &["run", "p.yaml", "--json"]);
        r.ok();
        let rep = report(&r);
        assert_eq!(task(&rep, "src")["rows_out"], 0, "{rep}");
        assert_eq!(task(&rep, "out")["status"], "up_to_date", "{rep}");
        assert_eq!(rep["slots"][0]["slot"], "weir_t", "{rep}");
        assert_eq!(output_rows(&p, delta), table_rows(&db, "t"));

        // `--full-refresh`: the table read again in a snapshot (and the changes since), the
        // output replaced; the next run goes on from there.
        db.sql("UPDATE t SET v = 'before the refresh' WHERE id = 4; DELETE FROM t WHERE id = 5;");
        db.weir(&p, &["run", "p.yaml", "--full-refresh"]).ok();
        assert_eq!(output_rows(&p, delta), table_rows(&db, "t"));
        db.sql("UPDATE t SET v = 'after the refresh' WHERE id = 6; INSERT INTO t VALUES (5, 'again');");
        let r = db.weir(&p, &["run", "p.yaml", "--json"]);
        r.ok();
        assert_eq!(task(&report(&r), "src")["rows_out"], 2, "{}", r.stdout);
        assert_eq!(output_rows(&p, delta), table_rows(&db, "t"));

        // `weir cdc status` and `weir cdc drop`: the slot and the publication weir made go.
        let r = db.weir(&p, &["cdc", "status", "p.yaml"]);
        r.ok();
        assert!(r.stdout.contains("slot `weir_t`") && r.stdout.contains("holding"), "{}", r.stdout);
        db.weir(&p, &["cdc", "drop", "p.yaml"]).ok();
        assert_eq!(db.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'weir_t'"), "0\n");
        assert_eq!(db.sql("SELECT count(*) FROM pg_publication WHERE pubname = 'weir_t'"), "0\n");
        // Changes made while there is no slot are nowhere: the next run says so and loads
        // nothing; `--full-refresh` reads the table again.
        db.sql("UPDATE t SET v = 'while dropped' WHERE id = 9;");
        let r = db.weir(&p, &["run", "p.yaml"]);
        r.code(1);
        assert!(r.stderr.contains("--full-refresh") && r.stderr.contains("weir_t"), "{}", r.stderr);
        assert!(!output_rows(&p, delta).iter().any(|r| r.contains("while dropped")));
        db.weir(&p, &["run", "p.yaml", "--full-refresh"]).ok();
        assert_eq!(output_rows(&p, delta), table_rows(&db, "t"));
        db.weir(&p, &["cdc", "drop", "p.yaml"]).ok();
    }
}

/// A table that does not change on a server that does: once the other tables' WAL passes a
/// quarter of `lag_alert`, a run commits the new position with no rows and the slot moves, so
/// the server can drop that WAL; the output is untouched. Below that, nothing is committed.
#[test]
fn a_quiet_table_does_not_hold_the_servers_wal() {
    let Some(pg) = server() else { return };
    let db = pg.database("cdc_quiet");
    db.sql("CREATE TABLE q (id int PRIMARY KEY, v int); INSERT INTO q SELECT g, g FROM generate_series(1, 10) g; CREATE TABLE noise (id int, t text);");
    let p = Project::new();
    p.write(
        "p.yaml",
        format!(
            "stores:\n{}  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: q, incremental: {{ cdc: {{ slot: weir_quiet, lag_alert: 64MB }} }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: merge, keys: [id], order_by: _lsn, delete_when: \"_op = 'delete'\" }}\n",
            db.store()
        ),
    );
    db.weir(&p, &["run", "p.yaml"]).ok();
    let lag = |db: &PgDb| -> i64 {
        db.sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'weir_quiet'")
            .trim()
            .parse()
            .unwrap()
    };
    // A little WAL elsewhere: nothing to commit, the slot stays.
    db.sql("INSERT INTO noise SELECT g, 'x' FROM generate_series(1, 100) g;");
    let r = db.weir(&p, &["run", "p.yaml", "--json"]);
    r.ok();
    assert_eq!(task(&report(&r), "out")["status"], "up_to_date", "{}", r.stdout);
    // Tens of MB elsewhere (past a quarter of `lag_alert`: 16 MB): the position moves with no
    // rows, and the slot with it. (Other tests share the server and write WAL too: the bounds
    // leave room for them.)
    db.sql("INSERT INTO noise SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 250000) g;");
    let before = lag(&db);
    assert!(before > 24 << 20, "the noise made WAL: {before}");
    let r = db.weir(&p, &["run", "p.yaml", "--json"]);
    r.ok();
    let rep = report(&r);
    assert_eq!(task(&rep, "src")["rows_out"], 0, "{rep}");
    assert_eq!(task(&rep, "out")["status"], "succeeded", "{rep}");
    assert!(lag(&db) < before / 4, "the slot moved past the other tables' WAL: {} of {before}", lag(&db));
    let mut got: Vec<String> =
        read_rows(&p.join("lake/out")).iter().map(|r| format!("{}={}", r["id"], r["v"])).collect();
    got.sort();
    let mut want: Vec<String> = (1..=10).map(|g| format!("{g}={g}")).collect();
    want.sort();
    assert_eq!(got, want);
    // A change after that is read as usual.
    db.sql("UPDATE q SET v = 100 WHERE id = 3;");
    db.weir(&p, &["run", "p.yaml"]).ok();
    assert!(read_rows(&p.join("lake/out")).iter().any(|r| r["id"] == "3" && r["v"] == "100"));
}

/// A first run while a writer inserts and updates rows: every insert is in the change log
/// exactly once (in the snapshot or in the stream, never both, never neither), and after a
/// second run the merged output is the table.
#[test]
fn a_first_run_during_writes_has_every_change_once() {
    let Some(pg) = server() else { return };
    let db = pg.database("cdc_busy");
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, 0 FROM generate_series(1, 2000) g;");
    let p = Project::new();
    p.write(
        "p.yaml",
        format!(
            "stores:\n{}  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: t, partition: {{ column: id, parts: 2 }}, incremental: {{ cdc: {{ slot: weir_busy }} }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: merge, keys: [id], order_by: _lsn, delete_when: \"_op = 'delete'\" }}\n  log:\n    load: {{ from: src, store: lake, path: log/, mode: append }}\n",
            db.store()
        ),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut next = 2001;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sql = format!(
                    "INSERT INTO t SELECT g, 0 FROM generate_series({next}, {}) g; UPDATE t SET v = v + 1 WHERE id % 97 = {};",
                    next + 9,
                    next % 97
                );
                pg.psql("cdc_busy", &sql);
                next += 10;
            }
            next
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    db.weir(&p, &["run", "p.yaml"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = writer.join().unwrap();
    assert!(last > 2001, "the writer wrote during the run");
    db.weir(&p, &["run", "p.yaml"]).ok();
    let want = server_id_v(&db, "t");
    let got = output_id_v(&p);
    assert_same(&got, &want, "merged output");
    let mut inserts: BTreeMap<String, u32> = BTreeMap::new();
    for r in read_rows(&p.join("lake/log")) {
        if r["_op"] == "insert" {
            *inserts.entry(r["id"].clone()).or_default() += 1;
        }
    }
    let twice: Vec<_> = inserts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "ids inserted more than once: {twice:?}");
    assert_eq!(inserts.len(), want.len(), "every row's insert is in the log");
}

/// kill -9 at each step of a CDC run — the snapshot held (first run), the changes read and
/// staged, the data files written, just before and after a publish, before the slot moves,
/// after the state store — then a rerun: the merged output is the table, the change log holds
/// every change once, and the slot is at the committed position.
#[test]
fn a_killed_cdc_run_loses_and_doubles_nothing() {
    let Some(pg) = server() else { return };
    let db = pg.database("cdc_kill");
    db.sql("CREATE TABLE ev (id int PRIMARY KEY, v int); INSERT INTO ev SELECT g, 0 FROM generate_series(1, 100) g;");
    let p = Project::new();
    p.write(
        "p.yaml",
        format!(
            "stores:\n{}  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: ev, incremental: {{ cdc: {{ slot: weir_kill }} }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: merge, keys: [id], order_by: _lsn, delete_when: \"_op = 'delete'\" }}\n  log:\n    load: {{ from: src, store: lake, path: log/, mode: append }}\n",
            db.store()
        ),
    );
    let env = |point: &str| vec![("PG_PASSWORD", PASSWORD.to_string()), ("WEIR_FAILPOINT", format!("{point}=kill"))];
    let weir_killed = |point: &str| {
        let e = env(point);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = p.weir_env(&["run", "p.yaml"], &e);
        assert_ne!(r.code, 0, "{point}: the run was killed");
    };
    // The first run, killed while its snapshot is held, then done.
    weir_killed("source_snapshot");
    db.weir(&p, &["run", "p.yaml"]).ok();
    let mut changes = 100; // the snapshot's rows
    let mut before = lsn(&slot_position(&db, "weir_kill"));
    let mut next = 100;
    for (k, point) in [
        "cdc_changes_read",
        "after_data_files",
        "before_publish",
        "after_publish_before_state",
        "cdc_before_advance",
        "after_state",
    ]
    .into_iter()
    .enumerate()
    {
        let updated: usize = db.sql(&format!("SELECT count(*) FROM ev WHERE id % 10 = {k}")).trim().parse().unwrap();
        db.sql(&format!(
            "UPDATE ev SET v = v + 1 WHERE id % 10 = {k}; INSERT INTO ev SELECT g, 0 FROM generate_series({}, {}) g; DELETE FROM ev WHERE id = {};",
            next + 1,
            next + 5,
            k + 20
        ));
        // The rows updated, the 5 inserted, the one deleted.
        changes += updated + 5 + 1;
        next += 5;
        weir_killed(point);
        let r = db.weir(&p, &["run", "p.yaml", "--json"]);
        r.ok();
        let want = server_id_v(&db, "ev");
        let got = output_id_v(&p);
        assert_same(&got, &want, &format!("after a kill at {point}"));
        let log = read_rows(&p.join("lake/log"));
        let lsns: BTreeSet<(String, String)> =
            log.iter().filter(|r| r["_lsn"] != "0").map(|r| (r["_lsn"].clone(), r["id"].clone())).collect();
        assert_eq!(
            lsns.len(),
            log.iter().filter(|r| r["_lsn"] != "0").count(),
            "after a kill at {point}: a change twice in the log"
        );
        assert_eq!(log.len(), changes, "after a kill at {point}: every change in the log once");
        // The slot moved, to the lowest position the two loads committed (when the rerun ran
        // them in two passes, the last pass's note may name a later one).
        let src = task(&report(&r), "src").clone();
        let slot = lsn(&slot_position(&db, "weir_kill"));
        assert!(
            slot > before && slot <= lsn(&noted_position(&src)),
            "after a kill at {point}: slot at {slot:X}, {src}"
        );
        before = slot;
    }
}

/// Problems with the server, the table or the keys, found by `weir validate` without
/// changing anything on the server; never the password.
#[test]
fn cdc_errors_say_what_to_change() {
    let Some(pg) = server() else { return };
    let db = pg.database("cdc_errs");
    db.sql(
        "CREATE TABLE nokey (id int, v int); CREATE TABLE texty (id int PRIMARY KEY, note text); CREATE TABLE fine (id int PRIMARY KEY, v int);
         DROP ROLE IF EXISTS norepl; CREATE ROLE norepl LOGIN NOREPLICATION PASSWORD 'pg-canary-7Qx2'; GRANT SELECT ON fine TO norepl;",
    );
    let mut out = String::new();
    for (what, extract, user) in [
        ("no primary key", "table: nokey, incremental: { cdc: { slot: s1 } }", "weir"),
        (
            "a TOASTable column without REPLICA IDENTITY FULL",
            "table: texty, incremental: { cdc: { slot: s1 } }",
            "weir",
        ),
        (
            "a publication that does not exist",
            "table: fine, incremental: { cdc: { slot: s1, publication: nopub } }",
            "weir",
        ),
        ("a user without REPLICATION", "table: fine, incremental: { cdc: { slot: s1 } }", "norepl"),
        ("a query", "query: \"SELECT id FROM fine\", incremental: { cdc: { slot: s1 } }", "weir"),
        ("a bad slot name", "table: fine, incremental: { cdc: { slot: Bad-Name } }", "weir"),
    ] {
        let p = Project::new();
        p.write(
            "p.yaml",
            format!(
                "stores:\n  app: {{ url: \"postgres://{user}@127.0.0.1:{}/cdc_errs\", options: {{ password: \"${{env:PG_PASSWORD}}\" }} }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, {extract} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: merge, keys: [id], order_by: _lsn, delete_when: \"_op = 'delete'\" }}\n",
                pg.port
            ),
        );
        let r = p.weir_env(&["validate", "p.yaml"], &[("PG_PASSWORD", PASSWORD)]);
        r.code(2);
        let text = normalize(&r.stderr, p.path()).replace(&pg.port.to_string(), "PORT");
        assert!(!text.contains(PASSWORD), "{text}");
        out.push_str(&format!("--- {what}\n{text}\n"));
    }
    // A server without logical replication (`wal_level = replica`, the default).
    if let Some(pg2) = crate::postgres::server_without_logical_replication() {
        let db2 = pg2.database("cdc_nowal");
        db2.sql("CREATE TABLE fine (id int PRIMARY KEY, v int);");
        let p = Project::new();
        p.write(
            "p.yaml",
            format!(
                "stores:\n{}  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: fine, incremental: {{ cdc: {{ slot: s1 }} }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: merge, keys: [id], order_by: _lsn, delete_when: \"_op = 'delete'\" }}\n",
                db2.store()
            ),
        );
        let r = p.weir_env(&["validate", "p.yaml"], &[("PG_PASSWORD", PASSWORD)]);
        r.code(2);
        let text = normalize(&r.stderr, p.path()).replace(&pg2.port.to_string(), "PORT");
        assert!(!text.contains(PASSWORD), "{text}");
        out.push_str(&format!("--- a server without logical replication\n{text}\n"));
    }
    // Validation changed nothing on the server.
    assert_eq!(db.sql("SELECT count(*) FROM pg_replication_slots WHERE database = 'cdc_errs'"), "0\n");
    assert_eq!(db.sql("SELECT count(*) FROM pg_publication"), "0\n");
    insta::assert_snapshot!(out);
}

/// Under `weir serve`, a slot that holds more WAL than its `lag_alert` after a run raises one
/// `cdc_lag` alert (not again while it stays over), and `/metrics` exports the figure. The
/// WAL is made while the run waits just before moving the slot (fail point), so the slot is
/// behind when the run ends; the next run moves it and the alert is armed again.
#[test]
fn a_lagging_slot_raises_one_alert_and_a_metric() {
    use crate::serve::{Daemon, Receiver, http, runs};
    let Some(pg) = server() else { return };
    let db = pg.database("cdc_lag");
    db.sql(
        "CREATE TABLE q (id int PRIMARY KEY, v int); INSERT INTO q VALUES (1, 1); CREATE TABLE noise (id int, t text);",
    );
    let rx = Receiver::start(0);
    let p = Project::new();
    p.write(
        "p/c.yaml",
        format!(
            "notify: [{{ url: \"{}\", on: [cdc_lag] }}]\nstores:\n{}  lake: {{ url: \"file://../lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: q, incremental: {{ cdc: {{ slot: weir_lag, lag_alert: 1MB }} }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: merge, keys: [id], order_by: _lsn, delete_when: \"_op = 'delete'\" }}\n",
            rx.url(),
            db.store()
        ),
    );
    let d =
        Daemon::start(&p, &[], &[("PG_PASSWORD", PASSWORD), ("WEIR_FAILPOINT", "cdc_before_advance@src=sleep(4000)")]);
    let (status, body) = http("POST", d.port, "/api/pipelines/c/run", None);
    assert_eq!(status, 202, "{body}");
    // Once the load has committed, the run waits before moving the slot: 2 MB of WAL elsewhere.
    d.wait_for("the load's commit", || !parquet_files(&p.join("lake/out")).is_empty());
    db.sql("INSERT INTO noise SELECT g, md5(g::text) FROM generate_series(1, 30000) g;");
    d.wait_for("the run", || runs(&p, "c").iter().any(|r| r.status == "succeeded"));
    d.wait_for("the alert", || rx.events() == ["cdc_lag"]);
    let body = rx.bodies.lock().unwrap()[0].to_string();
    assert!(body.contains("weir_lag") && body.contains("lag_alert"), "{body}");
    let (_, metrics) = http("GET", d.port, "/metrics", None);
    let line = metrics.lines().find(|l| l.starts_with("weir_cdc_slot_lag_bytes{")).unwrap_or_default().to_string();
    assert!(line.contains("slot=\"weir_lag\""), "{metrics}");
    let lag: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(lag > 1_048_576.0, "{line}");
    // The next run commits the new position (no rows) and moves the slot: no second alert.
    let (status, _) = http("POST", d.port, "/api/pipelines/c/run", None);
    assert_eq!(status, 202);
    d.wait_for("the second run", || runs(&p, "c").iter().filter(|r| r.status == "succeeded").count() == 2);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(rx.events(), ["cdc_lag"]);
    d.stop();
}

/// A named publication may publish other tables too: only the extract's table's changes are
/// read (and a change to another table, even one with the same columns, is not).
#[test]
fn a_named_publication_of_several_tables_gives_only_the_tables_changes() {
    let Some(pg) = server() else { return };
    let db = pg.database("cdc_pub");
    db.sql(
        "CREATE TABLE a (id int PRIMARY KEY, v int); CREATE TABLE b (id int PRIMARY KEY, v int);
         INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 100);
         CREATE PUBLICATION pub_ab FOR TABLE a, b;",
    );
    let p = Project::new();
    p.write(
        "p.yaml",
        format!(
            "stores:\n{}  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: a, incremental: {{ cdc: {{ slot: weir_pub, publication: pub_ab }} }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: merge, keys: [id], order_by: _lsn, delete_when: \"_op = 'delete'\" }}\n",
            db.store()
        ),
    );
    db.weir(&p, &["run", "p.yaml"]).ok();
    db.sql("INSERT INTO a VALUES (2, 2); INSERT INTO b VALUES (2, 200); UPDATE b SET v = 101 WHERE id = 1; DELETE FROM b WHERE id = 2;");
    let r = db.weir(&p, &["run", "p.yaml", "--json"]);
    r.ok();
    assert_eq!(task(&report(&r), "src")["rows_out"], 1, "{}", r.stdout);
    let mut got: Vec<String> =
        read_rows(&p.join("lake/out")).iter().map(|r| format!("{}={}", r["id"], r["v"])).collect();
    got.sort();
    assert_eq!(got, ["1=1", "2=2"]);
    // The table goes: the pipeline no longer validates, but its slot (which keeps the
    // server's WAL) can still be seen and dropped. The publication was named: it stays.
    db.sql("DROP TABLE a;");
    db.weir(&p, &["validate", "p.yaml"]).code(2);
    let r = db.weir(&p, &["cdc", "status", "p.yaml"]);
    r.ok();
    assert!(r.stdout.contains("p.src (slot `weir_pub` on store `app`): at "), "{}", r.stdout);
    assert!(!r.stdout.contains(PASSWORD));
    db.weir(&p, &["cdc", "drop", "p.yaml"]).ok();
    assert_eq!(db.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'weir_pub'"), "0\n");
    assert_eq!(db.sql("SELECT count(*) FROM pg_publication WHERE pubname = 'pub_ab'"), "1\n");
}
