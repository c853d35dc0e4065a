//! PostgreSQL as a source, against a real server: Debian's PostgreSQL, started once for the
//! test binary on a loopback port (as the `postgres` user when the tests run as root), with
//! `wal_level = logical`; each test makes its own database. Values read by weir are compared
//! with what the server itself returns as text.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::common::*;
pub(crate) use crate::databases::rows_of;
use crate::databases::{TestDb, assert_no_file_holds, project};

pub(crate) const PASSWORD: &str = "pg-canary-7Qx2";

pub struct PgServer {
    pub port: u16,
    bin: PathBuf,
}

/// The server, started on first use; `None` when PostgreSQL is not installed (then the tests
/// skip, except in CI, where `.ci/run` installs it and its absence fails them).
pub fn server() -> Option<&'static PgServer> {
    static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();
    SERVER.get_or_init(|| installed().map(|bin| start(bin, "main", "logical"))).as_ref()
}

/// A second server, with `wal_level = replica` (the default): no logical replication.
pub fn server_without_logical_replication() -> Option<&'static PgServer> {
    static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();
    SERVER.get_or_init(|| installed().map(|bin| start(bin, "replica", "replica"))).as_ref()
}

/// The newest installed PostgreSQL's `bin` directory.
fn installed() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max();
        let Some(bin) = bin else {
            assert!(std::env::var_os("CI").is_none(), "PostgreSQL is required in CI (.ci/run installs it)");
            return None;
        };
        Some(bin)
    })
    .clone()
}

/// A command that runs as the `postgres` user when we are root (initdb refuses root).
fn as_owner(program: PathBuf) -> Command {
    if rustix::process::getuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn start(bin: PathBuf, name: &str, wal_level: &str) -> PgServer {
    let dir = std::env::temp_dir().join(format!("weir-pg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, PASSWORD).unwrap();
    if rustix::process::getuid().is_root() {
        let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap().success();
        assert!(ok, "chown of the PostgreSQL directory");
    }
    let data = dir.join("data");
    let out = as_owner(bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", "weir", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c wal_level={wal_level} -c max_replication_slots=16 -c max_wal_senders=8 -c fsync=off -c synchronous_commit=off",
        dir.display()
    );
    let out = as_owner(bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-o", &opts, "-w", "start"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_ctl start: {}{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("log")).unwrap_or_default()
    );
    // Stopped when the test binary ends, however it ends.
    let watchdog = format!(
        "while [ -d /proc/{pid} ]; do sleep 1; done; {ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display()
    );
    let mut w = as_owner(PathBuf::from("/bin/sh"));
    w.args(["-c", &watchdog]);
    w.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    w.spawn().expect("watchdog");
    PgServer { port, bin }
}

impl PgServer {
    /// A new database `name` (dropped first if an earlier run left it).
    pub fn database(&'static self, name: &str) -> PgDb {
        // Two commands: CREATE DATABASE cannot run in the transaction of a multi-statement -c.
        self.psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        PgDb { server: self, name: name.to_string() }
    }

    /// Run `sql` in `db` with psql; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "weir", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(out.status.success(), "psql: {sql}\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

pub struct PgDb {
    server: &'static PgServer,
    pub name: String,
}

impl PgDb {
    pub fn sql(&self, sql: &str) -> String {
        self.server.psql(&self.name, sql)
    }

    /// The `stores:` entry of a store `app` for this database, with the password from the
    /// environment variable `PG_PASSWORD` (see [`Self::run`]).
    pub fn store(&self) -> String {
        format!(
            "  app: {{ url: \"postgres://weir@127.0.0.1:{}/{}\", options: {{ password: \"${{env:PG_PASSWORD}}\" }} }}\n",
            self.server.port, self.name
        )
    }

    /// `weir ARGS` in `p` with the password in the environment.
    pub fn weir(&self, p: &Project, args: &[&str]) -> Run {
        p.weir_env(args, &[("PG_PASSWORD", PASSWORD)])
    }
}

impl TestDb for PgDb {
    fn sql(&self, sql: &str) -> String {
        PgDb::sql(self, sql)
    }
    fn store(&self) -> String {
        PgDb::store(self)
    }
    fn password_env(&self) -> (&'static str, &'static str) {
        ("PG_PASSWORD", PASSWORD)
    }
}

/// Every type weir maps, at the edges of its range and NULL: each value read back from the
/// Parquet output equals the server's own text for it (normalized only where the two text
/// forms differ: `t`/`true`, a space/`T` in timestamps, `+00` offsets).
#[test]
fn every_type_reads_back_as_the_server_has_it() {
    let Some(pg) = server() else { return };
    let db = pg.database("types");
    db.sql(
        "CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE TABLE t (
           id int PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
           n numeric(38,12), m numeric(12,2), b boolean, s text, v varchar(10), c char(3),
           d date, ts timestamp, tz timestamptz, tm time, by bytea, u uuid, j json, jb jsonb, e mood);
         INSERT INTO t VALUES
           (1, 32767, 2147483647, 9223372036854775807, 1.5, 1e300, 12345678901234567890123456.789012345678, 9999999999.99,
            true, 'żółw 🐢 \"q\"', 'abc', 'x', '0001-01-01', '0001-01-01 00:00:00', '2026-06-01 12:00:00+05:30', '23:59:59.999999',
            '\\xdeadbeef', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', '{\"b\": null, \"a\": 1}', 'happy'),
           (2, -32768, -2147483648, -9223372036854775808, -0.25, -2.5e-300, -0.000000000001, -0.01,
            false, '', '', '', '9999-12-31', '9999-12-31 23:59:59.999999', '1969-12-31 23:59:59.5+00', '00:00:00',
            '\\x', '00000000-0000-0000-0000-000000000000', '[]', '[]', 'sad'),
           (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let p = project(&db, "table: public.t");
    let r = db.weir(&p, &["run", "p.yaml"]);
    r.ok();
    let got = read_rows(&p.join("lake/out"));
    let cols =
        ["i2", "i4", "i8", "f4", "f8", "n", "m", "b", "s", "v", "c", "d", "ts", "tz", "tm", "by", "u", "j", "jb", "e"];
    for id in 1..=3 {
        let row = got.iter().find(|r| r["id"] == id.to_string()).unwrap_or_else(|| panic!("row {id} in {got:?}"));
        for c in cols {
            // The server's text, UTC for timestamptz; bytea as hex without the \x.
            let expr = match c {
                "tz" => "to_char(tz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')".to_string(),
                "ts" => "to_char(ts, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')".to_string(),
                "by" => "encode(by, 'hex')".to_string(),
                _ => format!("{c}::text"),
            };
            let want = db.sql(&format!("SELECT coalesce({expr}, '<NULL>') FROM t WHERE id = {id}"));
            let want = want.strip_suffix('\n').unwrap_or(&want);
            let have = row.get(c).cloned().unwrap_or_default();
            assert_eq!(
                normalize_value(c, &have),
                normalize_value(c, want),
                "row {id} column {c}: weir {have:?}, server {want:?}"
            );
        }
    }
}

/// One text form for a value as arrow prints it and as PostgreSQL does.
fn normalize_value(column: &str, v: &str) -> String {
    if v == "NULL" || v == "<NULL>" {
        return "<NULL>".into(); // how the test helpers print a NULL (no text here is `NULL`)
    }
    if v.is_empty() && column != "s" && column != "v" && column != "c" && column != "by" {
        return "<NULL>".into(); // arrow's display of NULL
    }
    match column {
        "b" => match v {
            "t" | "true" => "true".into(),
            "f" | "false" => "false".into(),
            other => other.into(),
        },
        // Fractions of a second to six digits, timestamptz's `Z` dropped (both are UTC here).
        "ts" | "tz" | "tm" => {
            let v = v.trim_end_matches('Z').trim_end_matches("+00:00");
            let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
            format!("{whole}.{:0<6}", frac)
        }
        "f4" | "f8" => v.parse::<f64>().map(|x| format!("{x:e}")).unwrap_or_else(|_| v.into()),
        "c" => v.trim_end().into(),
        _ => v.into(),
    }
}

/// Eight range reads in one snapshot give the same rows as one read, NULL keys included.
#[test]
fn a_partitioned_read_equals_a_single_read() {
    let Some(pg) = server() else { return };
    let db = pg.database("parts");
    db.sql(
        "CREATE TABLE big AS SELECT g AS id, CASE WHEN g % 97 = 0 THEN NULL ELSE g * 7 % 1000 END AS k, md5(g::text) AS s
         FROM generate_series(1, 20000) g;",
    );
    let whole = project(&db, "table: big");
    db.weir(&whole, &["run", "p.yaml"]).ok();
    let parts = project(&db, "table: big, partition: { column: k, parts: 8 }");
    let r = db.weir(&parts, &["run", "p.yaml"]);
    r.ok();
    assert!(r.stderr.contains("streamed into its consumer: 8 parts read in one snapshot"), "{}", r.stderr);
    let a = rows_of(&whole, &["id", "k", "s"]);
    let b = rows_of(&parts, &["id", "k", "s"]);
    assert_eq!(a.len(), 20000);
    assert_eq!(a, b);
    // Two loads read the extract: its rows are staged once, and both get them all.
    let staged = project(&db, "table: big, partition: { column: k, parts: 8 }");
    let yaml = std::fs::read_to_string(staged.join("p.yaml")).unwrap();
    staged.write("p.yaml", format!("{yaml}  again:\n    load: {{ from: src, store: lake, path: again/ }}\n"));
    let r = db.weir(&staged, &["run", "p.yaml"]);
    r.ok();
    assert!(!r.stderr.contains("streamed"), "{}", r.stderr);
    assert_eq!(rows_of(&staged, &["id", "k", "s"]), a);
    assert_eq!(read_rows(&staged.join("lake/again")).len(), 20000);
}

/// A query reads what it selects; transforms read the extract by name; `plan` shows the
/// statement and the columns the catalog gave, and no password.
#[test]
fn a_query_extract_feeds_transforms() {
    let Some(pg) = server() else { return };
    let db = pg.database("query");
    db.sql("CREATE TABLE orders (id int, amount numeric(10,2), region text); INSERT INTO orders VALUES (1, 50, 'n'), (2, 150.5, 's'), (3, 300, 'n');");
    let p = Project::new();
    p.write(
        "p.yaml",
        format!(
            "stores:\n{}  lake: {{ url: \"file://lake\" }}\ntasks:\n  big:\n    extract: {{ store: app, query: \"SELECT id, amount, region FROM orders WHERE amount > 100\" }}\n  by_region:\n    transform: {{ sql: \"SELECT region, sum(amount) AS total FROM big GROUP BY region\" }}\n  out:\n    load: {{ from: by_region, store: lake, path: out/ }}\n",
            db.store()
        ),
    );
    let plan = db.weir(&p, &["plan", "p.yaml"]);
    plan.ok();
    // Only the columns the transform reads cross the wire (`id` is not read).
    assert!(
        plan.stdout.contains("query    SELECT \"amount\", \"region\" FROM (SELECT id, amount, region FROM orders"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("amount decimal(10,2)"), "{}", plan.stdout);
    assert!(!plan.stdout.contains(PASSWORD));
    // Lineage: the query's columns are fields of the query on the server; the total is an
    // aggregate of one of them, grouped by another.
    let lineage = db.weir(&p, &["lineage", "p.yaml", "--column", "by_region.total", "--format", "json"]);
    lineage.ok();
    let doc: serde_json::Value = serde_json::from_str(&lineage.stdout).unwrap();
    let big = doc["pipelines"][0]["tasks"].as_array().unwrap().iter().find(|t| t["task"] == "big").unwrap();
    assert_eq!(big["dataset"]["kind"], "postgres");
    let name = big["dataset"]["name"].as_str().unwrap();
    assert!(name.starts_with("postgres://weir@127.0.0.1:") && name.contains(" query SELECT id, amount"), "{name}");
    let reaches: Vec<String> = doc["focus"]["reaches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}.{}",
                r["how"][0].as_str().unwrap(),
                r["task"].as_str().unwrap(),
                r["column"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(reaches, ["aggregate big.amount", "group_by big.region"]);
    db.weir(&p, &["run", "p.yaml"]).ok();
    assert_eq!(rows_of(&p, &["region", "total"]), ["region=n total=300.00", "region=s total=150.50"]);
}

/// Problems a person can act on, each located in the pipeline file and naming the store or
/// table; the password is in none of them.
#[test]
fn errors_name_the_store_and_table_and_never_the_password() {
    let Some(pg) = server() else { return };
    let db = pg.database("errs");
    db.sql("CREATE TABLE customers (id int, v numeric, x point); CREATE TABLE orders (id int);");
    let mut out = String::new();
    for (what, extract, env) in [
        ("missing table", "table: custmers", PASSWORD),
        ("unconstrained numeric", "query: \"SELECT id, v FROM customers\"", PASSWORD),
        ("unmapped type", "query: \"SELECT id, x FROM customers\"", PASSWORD),
        ("DML as a query", "query: \"DELETE FROM orders\"", PASSWORD),
        ("wrong password", "table: orders", "not-the-password"),
    ] {
        let p = project(&db, extract);
        let r = p.weir_env(&["validate", "p.yaml"], &[("PG_PASSWORD", env)]);
        r.code(2);
        let text = normalize(&r.stderr, p.path()).replace(&pg.port.to_string(), "PORT");
        assert!(!text.contains(PASSWORD) && !text.contains("not-the-password"), "{text}");
        out.push_str(&format!("--- {what}\n{text}\n"));
    }
    // The values the data had are untouched: nothing was written.
    assert_eq!(db.sql("SELECT count(*) FROM orders"), "0\n");
    insta::assert_snapshot!(out);
}

/// Rows changed while a partitioned read is under way are in no part: every part reads the
/// snapshot the coordinator exported. The run is held (fail point) once every part's
/// transaction has adopted the snapshot; the table is then updated and committed; the output
/// is the table as it was before the update, whole.
#[test]
fn a_read_during_updates_is_one_snapshot() {
    let Some(pg) = server() else { return };
    let db = pg.database("snap");
    db.sql("CREATE TABLE big AS SELECT g AS id, 0 AS v FROM generate_series(1, 10000) g;");
    let p = project(&db, "table: big, partition: { column: id, parts: 4 }");
    let mut child = p
        .command(&["run", "p.yaml"])
        .env("PG_PASSWORD", PASSWORD)
        .env("WEIR_FAILPOINT", "source_snapshot@src=sleep(4000)")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The coordinator and the four parts, each idle in its transaction.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n = db.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'weir' AND state = 'idle in transaction'",
        );
        if n.trim() == "5" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the run never held its snapshot ({n})");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    db.sql("UPDATE big SET v = 1; DELETE FROM big WHERE id > 9000; INSERT INTO big SELECT g, 1 FROM generate_series(10001, 11000) g;");
    assert!(child.wait().unwrap().success());
    let rows = read_rows(&p.join("lake/out"));
    assert_eq!(rows.len(), 10000);
    assert!(rows.iter().all(|r| r["v"] == "0"), "a row changed after the snapshot was read");
    assert_eq!(db.sql("SELECT count(*), sum(v) FROM big"), "10000|10000\n");
}

/// The canary: the password, in the URL or in `options`, appears in nothing weir writes —
/// `validate`, `plan`, `graph`, `lineage`, `run` (and a failing run's error), `runs`, the state
/// store and the outputs.
#[test]
fn the_password_appears_nowhere() {
    let Some(pg) = server() else { return };
    let db = pg.database("canary");
    db.sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1); CREATE TABLE narrow (id int CHECK (id > 5));");
    let p = Project::new();
    // Table loads too: one that commits (its record in weir_commits) and one the server refuses.
    p.write(
        "p.yaml",
        format!(
            "stores:\n  app: {{ url: \"postgres://weir:{PASSWORD}@127.0.0.1:{}/{}\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: t }}\n  bad:\n    extract: {{ store: app, query: \"SELECT 1 / (id - 1) AS boom FROM t\" }}\n  out:\n    load: {{ from: src, store: lake, path: out/ }}\n  out2:\n    load: {{ from: bad, store: lake, path: out2/ }}\n  copy:\n    load: {{ from: src, store: app, table: copy_of_t }}\n  refused:\n    load: {{ from: src, store: app, table: narrow, mode: append }}\n",
            pg.port, db.name
        ),
    );
    let mut seen = String::new();
    for args in [
        &["validate", "p.yaml"][..],
        &["plan", "p.yaml"],
        &["graph", "p.yaml"],
        &["lineage", "p.yaml"],
        &["lineage", "p.yaml", "--format", "json"],
        &["run", "p.yaml", "-vv"],
        &["runs", "p", "--json"],
    ] {
        let r = p.weir(args);
        seen.push_str(&r.stdout);
        seen.push_str(&r.stderr);
    }
    assert!(seen.contains("division by zero"), "the failing extract's error is shown: {seen}");
    assert!(seen.contains("narrow_id_check"), "the refused table load's error is shown: {seen}");
    assert!(!seen.contains(PASSWORD), "{seen}");
    let records = db.sql("SELECT record::text FROM weir_commits");
    assert!(records.contains("\"load\": \"copy\""), "{records}");
    assert!(!records.contains(PASSWORD), "{records}");
    assert_no_file_holds(&p, PASSWORD);
}

/// A watermark on a database extract: each run reads (on the server) only the rows whose
/// cursor is past the committed watermark; updated rows replace themselves in a merge; a NULL
/// cursor is counted and not loaded; a run with nothing new loads nothing.
#[test]
fn a_watermark_reads_each_change_once() {
    let Some(pg) = server() else { return };
    let db = pg.database("wm");
    db.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, amount numeric(10,2), updated_at timestamptz);
         INSERT INTO orders VALUES (1, 10, '2026-01-01 00:00:00+00'), (2, 20, '2026-01-02 00:00:00+00'), (3, 30, '2026-01-03 00:00:00+00');",
    );
    let p = Project::new();
    p.write(
        "p.yaml",
        format!(
            "stores:\n{}  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: orders, partition: {{ column: id, parts: 2 }}, incremental: {{ watermark: {{ column: updated_at }} }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: merge, keys: [id] }}\n",
            db.store()
        ),
    );
    db.weir(&p, &["run", "p.yaml"]).ok();
    assert_eq!(rows_of(&p, &["id", "amount"]), ["id=1 amount=10.00", "id=2 amount=20.00", "id=3 amount=30.00"]);
    db.sql(
        "UPDATE orders SET amount = 21, updated_at = '2026-01-04 00:00:00+00' WHERE id = 2;
         INSERT INTO orders VALUES (4, 40, '2026-01-05 00:00:00+00'), (5, 50, NULL);",
    );
    let r = db.weir(&p, &["run", "p.yaml", "--json"]);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let src = report["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "src").unwrap().clone();
    assert_eq!(src["rows_out"], 2, "only the two changed rows were read: {src}");
    assert!(src["note"].as_str().unwrap_or("").contains("1 rows with a NULL `updated_at` not loaded"), "{src}");
    assert_eq!(
        rows_of(&p, &["id", "amount"]),
        ["id=1 amount=10.00", "id=2 amount=21.00", "id=3 amount=30.00", "id=4 amount=40.00"]
    );
    // Nothing new: nothing read, nothing loaded.
    let r = db.weir(&p, &["run", "p.yaml", "--json"]);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let src = report["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "src").unwrap().clone();
    assert_eq!(src["rows_out"], 0, "{src}");
    assert_eq!(rows_of(&p, &["id"]).len(), 4);
}

/// kill -9 at each step of a watermark run (the snapshot held, the data files staged, just
/// before and just after the publish, after the state store) and a rerun: every row is in the
/// output once, with its newest values — the watermark is committed with the data, never
/// before it.
#[test]
fn a_killed_watermark_run_loses_and_doubles_nothing() {
    let Some(pg) = server() else { return };
    let db = pg.database("wmkill");
    db.sql("CREATE TABLE ev (id int PRIMARY KEY, v int, at bigint); INSERT INTO ev SELECT g, 0, g FROM generate_series(1, 100) g;");
    crate::databases::killed_watermark_runs_lose_and_double_nothing(
        &db,
        |base, from, to| {
            format!(
                "UPDATE ev SET v = v + 1, at = {base} WHERE id % 10 = 0; INSERT INTO ev SELECT g, 0, {base} + g FROM generate_series({from}, {to}) g;"
            )
        },
        "SELECT 'id=' || id || ' v=' || v FROM ev",
    );
}

/// Filters of the transforms that read a database extract go to the server when they mean
/// the same there: comparisons of numbers, dates and timestamps, text equality, `IN`, `IS
/// NULL`; each transform's filters joined by OR. A float comparison and a text order stay in
/// weir. The output equals what the transforms compute over the whole table, and only the
/// rows the filters let through are read (the extract's row count).
#[test]
fn transform_filters_are_pushed_to_the_server() {
    let Some(pg) = server() else { return };
    let db = pg.database("pushfilter");
    db.sql(
        "CREATE TABLE orders (id int, amount numeric(10,2), region text, score float8, placed date, note text);
         INSERT INTO orders SELECT g, g * 1.5, CASE WHEN g % 3 = 0 THEN 'n' ELSE 's' END, g / 7.0, DATE '2026-01-01' + g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'x' || g END FROM generate_series(1, 300) g;",
    );
    let p = Project::new();
    p.write(
        "p.yaml",
        format!(
            "stores:\n{}  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: orders }}\n  north:\n    transform: {{ sql: \"SELECT id, amount FROM src WHERE region = 'n' AND amount > 300 AND score > 1.0 AND note IS NOT NULL\" }}\n  early:\n    transform: {{ sql: \"SELECT id, amount FROM src WHERE placed < DATE '2026-01-11' AND id IN (2, 4, 6, 8, 99)\" }}\n  both:\n    transform: {{ sql: \"SELECT * FROM north UNION ALL SELECT * FROM early\" }}\n  out:\n    load: {{ from: both, store: lake, path: out/ }}\n",
            db.store()
        ),
    );
    let plan = db.weir(&p, &["plan", "p.yaml"]);
    plan.ok();
    // The statement as one line (the plan wraps it).
    let text = plan.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("(\"region\" = 'n')"), "{text}");
    assert!(
        text.contains("(\"amount\" > '300.00'::numeric)") || text.contains("(\"amount\" > '300'::numeric)"),
        "{text}"
    );
    assert!(text.contains("(\"note\" IS NOT NULL)"), "{text}");
    assert!(text.contains("(\"placed\" < '2026-01-11'::date)"), "{text}");
    assert!(text.contains("\"id\" IN (2, 4, 6, 8, 99)"), "{text}");
    assert!(text.contains(") OR ("), "{text}");
    assert!(!text.contains("\"score\" >"), "a float comparison is not pushed: {text}");
    let r = db.weir(&p, &["run", "p.yaml", "--json"]);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let src = report["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "src").unwrap().clone();
    let want_read: u64 = db
        .sql("SELECT count(*) FROM orders WHERE (region = 'n' AND amount > 300 AND note IS NOT NULL) OR (placed < DATE '2026-01-11' AND id IN (2, 4, 6, 8, 99))")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(src["rows_out"], want_read, "only the rows the filters let through were read: {src}");
    let want: Vec<String> = db
        .sql(
            "SELECT 'id=' || id || ' amount=' || amount FROM orders WHERE region = 'n' AND amount > 300 AND score > 1.0 AND note IS NOT NULL
             UNION ALL SELECT 'id=' || id || ' amount=' || amount FROM orders WHERE placed < DATE '2026-01-11' AND id IN (2, 4, 6, 8, 99)",
        )
        .lines()
        .map(str::to_string)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(rows_of(&p, &["id", "amount"]), want);
}

/// One-dimensional arrays are lists of their element type (NULL elements, empty arrays and
/// NULL arrays kept apart), written to Parquet as lists: read back, each element equals the
/// server's `unnest` of the array. A two-dimensional array is refused with a clear error.
#[test]
fn arrays_read_as_lists() {
    let Some(pg) = server() else { return };
    let db = pg.database("arrays");
    db.sql(
        "CREATE TABLE arr (id int, ints int4[], texts text[], amounts numeric(6,2)[], days date[]);
         INSERT INTO arr VALUES (1, '{1,NULL,3}', '{a,\"b c\",NULL}', '{1.50,-2.25}', '{2026-01-02}'),
                                (2, '{}', '{}', NULL, '{}'), (3, NULL, NULL, '{0}', NULL);",
    );
    let p = project(&db, "table: arr");
    let plan = db.weir(&p, &["plan", "p.yaml"]);
    plan.ok();
    let text = plan.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("ints integer[]") && text.contains("amounts decimal(6,2)[]"), "{text}");
    db.weir(&p, &["run", "p.yaml"]).ok();
    // Each list, element by element, as the server unnests it.
    let python = match test_python() {
        Some(p) => p,
        None => return,
    };
    let got = run_python(
        &python,
        "import duckdb\nfor r in duckdb.sql(\"SELECT id, ints, texts, amounts, days FROM 'lake/out/*.parquet' ORDER BY id\").fetchall(): print(r)",
        p.path(),
    );
    assert_eq!(
        got.trim(),
        "(1, [1, None, 3], ['a', 'b c', None], [Decimal('1.50'), Decimal('-2.25')], [datetime.date(2026, 1, 2)])\n(2, [], [], None, [])\n(3, None, None, [Decimal('0.00')], None)",
    );
    let want = db.sql("SELECT id, e FROM arr, unnest(ints) WITH ORDINALITY AS u(e, k) ORDER BY id, k");
    assert_eq!(want, "1|1\n1|\n1|3\n");
    // Two dimensions: not a list of lists; the run says so.
    db.sql("CREATE TABLE grid (id int, m int[][]); INSERT INTO grid VALUES (1, '{{1,2},{3,4}}');");
    let p = project(&db, "table: grid");
    let r = db.weir(&p, &["run", "p.yaml"]);
    r.code(1);
    assert!(r.stderr.contains("2-dimensional array"), "{}", r.stderr);
}

/// `weir serve` started while the database is unreachable: the pipeline is not marked
/// invalid for good — it is compiled again at each scan, and runs once the server answers
/// (here a loopback forwarder to the test server is started after the daemon).
#[test]
fn serve_picks_up_a_pipeline_once_its_database_answers() {
    use crate::serve::{Daemon, free_port, http, runs};
    let Some(pg) = server() else { return };
    let db = pg.database("unreachable");
    db.sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);");
    let port = free_port();
    let p = Project::new();
    p.write(
        "p/u.yaml",
        format!(
            "stores:\n  app: {{ url: \"postgres://weir@127.0.0.1:{port}/unreachable\", options: {{ password: \"${{env:PG_PASSWORD}}\", connect_timeout: 2s }} }}\n  lake: {{ url: \"file://../lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: t }}\n  out:\n    load: {{ from: src, store: lake, path: out/ }}\n"
        ),
    );
    let d = Daemon::start(&p, &[], &[("PG_PASSWORD", PASSWORD)]);
    d.wait_for("the daemon to find the server unreachable", || d.log().contains("unreachable"));
    assert_eq!(http("POST", d.port, "/api/pipelines/u/run", None).0, 422, "not runnable while unreachable");
    // The server answers from now on: a forwarder on the store's port.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let target = pg.port;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", target)) else { continue };
            for (mut from, mut to) in [(conn.try_clone().unwrap(), up.try_clone().unwrap()), (up, conn)] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    d.wait_for("the pipeline to be loaded", || http("POST", d.port, "/api/pipelines/u/run", None).0 == 202);
    d.wait_for("the run", || runs(&p, "u").iter().any(|r| r.status == "succeeded"));
    assert_eq!(read_rows(&p.join("lake/out")).len(), 2);
    d.stop();
}
