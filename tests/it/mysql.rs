//! MySQL/MariaDB as a source, against a real server: Debian's MariaDB, started once for the
//! test binary on a loopback port (as the `mysql` user when the tests run as root); each test
//! makes its own database. Values read by weir are compared with what the server itself
//! returns as text.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::common::*;
use crate::databases::{TestDb, assert_no_file_holds, project, rows_of, sorted_lines, task_report};

pub(crate) const PASSWORD: &str = "my-canary-4Zp9";

pub struct MyServer {
    pub port: u16,
    dir: PathBuf,
}

/// The server, started on first use; `None` when MariaDB is not installed (then the tests
/// skip, except in CI, where `.ci/run` installs it and its absence fails them).
pub fn server() -> Option<&'static MyServer> {
    static SERVER: OnceLock<Option<MyServer>> = OnceLock::new();
    SERVER.get_or_init(start).as_ref()
}

fn installed() -> Option<PathBuf> {
    ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"].into_iter().map(PathBuf::from).find(|p| p.exists())
}

// The server and its watchdog live as long as the test binary (the watchdog kills the server).
#[allow(clippy::zombie_processes)]
fn start() -> Option<MyServer> {
    let Some(bin) = installed() else {
        assert!(std::env::var_os("CI").is_none(), "MariaDB is required in CI (.ci/run installs it)");
        return None;
    };
    let dir = std::env::temp_dir().join(format!("weir-my-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let root = rustix::process::getuid().is_root();
    let user = if root { "mysql" } else { "" };
    if root {
        let ok = Command::new("chown").args(["-R", "mysql:mysql"]).arg(&dir).status().unwrap().success();
        assert!(ok, "chown of the MariaDB directory");
    }
    let data = dir.join("data");
    let mut install = Command::new("mariadb-install-db");
    install.arg("--no-defaults").arg(format!("--datadir={}", data.display()));
    install.args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if root {
        install.arg(format!("--user={user}"));
    }
    let out = install.output().unwrap();
    assert!(out.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new(&bin);
    server
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.join("sock").display()))
        .arg(format!("--port={port}"))
        .arg(format!("--log-error={}", dir.join("log").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .args([
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-buffer-pool-size=256M",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--max-connections=500",
        ]);
    if root {
        server.arg(format!("--user={user}"));
    }
    server.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let child = server.spawn().expect("mariadbd");
    let s = MyServer { port, dir: dir.clone() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ok = Command::new("mariadb")
            .args(["--no-defaults", "-uroot"])
            .arg(format!("--socket={}", dir.join("sock").display()))
            .args(["-e", "SELECT 1"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mariadbd did not start: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s.root(&format!(
        "CREATE USER weir@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON *.* TO weir@'127.0.0.1';
         CREATE USER reader@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; CREATE USER nobody@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
    ));
    // Stopped when the test binary ends, however it ends.
    let watchdog = format!(
        "while [ -d /proc/{pid} ]; do sleep 1; done; kill -9 {server} 2>/dev/null; rm -rf {dir}",
        pid = std::process::id(),
        server = child.id(),
        dir = dir.display()
    );
    Command::new("/bin/sh")
        .args(["-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("watchdog");
    Some(s)
}

impl MyServer {
    /// Run `sql` as root over the socket.
    fn root(&self, sql: &str) -> String {
        self.client(&["-uroot", &format!("--socket={}", self.dir.join("sock").display())], None, sql)
    }

    fn client(&self, login: &[&str], db: Option<&str>, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "--default-character-set=utf8mb4", "-N", "-B", "-r"])
            .args(login)
            .args(db)
            .args(["-e", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "mariadb: {sql}\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A new database `name` (dropped first if an earlier run left it).
    pub fn database(&'static self, name: &str) -> MyDb {
        self.root(&format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"));
        MyDb { server: self, name: name.to_string() }
    }
}

pub struct MyDb {
    server: &'static MyServer,
    pub name: String,
}

impl MyDb {
    /// Run `sql` in the database (as `weir`, over TCP, in UTC); its output, tab-separated.
    pub fn sql(&self, sql: &str) -> String {
        let port = self.server.port.to_string();
        self.server.client(
            &["-h", "127.0.0.1", "-P", &port, "-uweir", &format!("-p{PASSWORD}")],
            Some(&self.name),
            &format!("SET time_zone = '+00:00'; {sql}"),
        )
    }

    /// The `stores:` entry of a store `app` for this database, with the password from the
    /// environment variable `MY_PASSWORD`.
    pub fn store(&self) -> String {
        self.store_as("weir")
    }

    pub fn store_as(&self, user: &str) -> String {
        format!(
            "  app: {{ url: \"mysql://{user}@127.0.0.1:{}/{}\", options: {{ password: \"${{env:MY_PASSWORD}}\" }} }}\n",
            self.server.port, self.name
        )
    }

    /// `weir ARGS` in `p` with the password in the environment.
    pub fn weir(&self, p: &Project, args: &[&str]) -> Run {
        p.weir_env(args, &[("MY_PASSWORD", PASSWORD)])
    }
}

impl TestDb for MyDb {
    fn sql(&self, sql: &str) -> String {
        MyDb::sql(self, sql)
    }
    fn store(&self) -> String {
        MyDb::store(self)
    }
    fn password_env(&self) -> (&'static str, &'static str) {
        ("MY_PASSWORD", PASSWORD)
    }
}

/// Every type weir maps, at the edges of its range, NULL and MySQL's zero dates: each value
/// read back from the Parquet output equals the server's own text for it (normalized only
/// where the two text forms differ), and the Parquet types are the ones the reference names.
#[test]
fn every_type_reads_back_as_the_server_has_it() {
    let Some(my) = server() else { return };
    let db = my.database("types");
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY, ti tinyint, tu tinyint unsigned, si smallint, su smallint unsigned,
           mi mediumint, mu mediumint unsigned, i int, iu int unsigned, bi bigint, bu bigint unsigned,
           f float, d double, n decimal(38,12), m decimal(12,2), mu2 decimal(10,2) unsigned, big decimal(65,30),
           b boolean, s varchar(20), c char(3), tx text, bl blob, vb varbinary(10), e enum('sad','happy'), st set('a','b'),
           j json, dt date, dtt datetime(6), ts timestamp(6) NULL, tm time(6), y year, bt bit(10), u uuid,
           l1 varchar(10) CHARACTER SET latin1);
         INSERT INTO t VALUES
          (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615,
           1.5, 1e300, 12345678901234567890123456.789012345678, 9999999999.99, 12.5,
           12345678901234567890123456789012345.123456789012345678901234567891, true, 'żółw 🐢 \"q\"', 'x', 'long\\ntext', x'deadbeef', x'00ff',
           'happy', 'a,b', '{\"a\": [1, 2]}', '1000-01-01', '1000-01-01 00:00:00', '1970-01-01 00:00:01', '23:59:59.999999', 1901,
           b'1010101010', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'café'),
          (2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0,
           -0.25, -2.5e-300, -0.000000000001, -0.01, 0, -0.000000000000000000000000000001, false, '', '', '', x'', x'',
           'sad', '', '[]', '9999-12-31', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', '00:00:00', 2155,
           b'0', '00000000-0000-0000-0000-000000000000', ''),
          (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, '0000-00-00', '0000-00-00 00:00:00', NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let p = project(&db, "table: t");
    db.weir(&p, &["run", "p.yaml"]).ok();
    let got = read_rows(&p.join("lake/out"));
    let cols = [
        "ti", "tu", "si", "su", "mi", "mu", "i", "iu", "bi", "bu", "f", "d", "n", "m", "mu2", "big", "b", "s", "c",
        "tx", "bl", "vb", "e", "st", "j", "dt", "dtt", "ts", "tm", "y", "bt", "u", "l1",
    ];
    for id in 1..=3 {
        let row = got.iter().find(|r| r["id"] == id.to_string()).unwrap_or_else(|| panic!("row {id} in {got:?}"));
        for c in cols {
            // The server's text; bytes in hex; zero dates are NULL (what weir reads them as).
            let expr = match c {
                "bl" | "vb" => format!("lower(hex({c}))"),
                "bt" => format!("{c} + 0"),
                "dt" | "dtt" => format!("IF(YEAR({c}) = 0, NULL, {c})"),
                _ => c.to_string(),
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
    // The Parquet types, as a reader sees them.
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    let schema = parquet_schema(&p.join("lake/out"));
    for (col, ty) in [
        ("tu", DataType::UInt8),
        ("bu", DataType::UInt64),
        ("n", DataType::Decimal128(38, 12)),
        ("big", DataType::Decimal256(65, 30)),
        ("b", DataType::Int8),
        ("bl", DataType::Binary),
        ("dtt", DataType::Timestamp(TimeUnit::Microsecond, None)),
        ("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))),
        ("tm", DataType::Time64(TimeUnit::Microsecond)),
        ("bt", DataType::UInt64),
    ] {
        assert!(schema.contains(&(col.to_string(), ty.to_string())), "{col} is not {ty}: {schema:?}");
    }
}

/// One text form for a value as arrow prints it and as MariaDB does.
fn normalize_value(column: &str, v: &str) -> String {
    if v == "NULL" || v == "<NULL>" {
        return "<NULL>".into();
    }
    if v.is_empty() && !matches!(column, "s" | "c" | "tx" | "bl" | "vb" | "st" | "l1") {
        return "<NULL>".into(); // arrow's display of NULL
    }
    match column {
        "ts" | "dtt" | "tm" => {
            let v = v.trim_end_matches('Z').trim_end_matches("+00:00").replace('T', " ");
            let (whole, frac) = v.split_once('.').unwrap_or((&v, ""));
            format!("{whole}.{:0<6}", frac)
        }
        "f" | "d" => v.parse::<f64>().map(|x| format!("{x:e}")).unwrap_or_else(|_| v.into()),
        _ => v.into(),
    }
}

/// Eight range reads give the same rows as one read, NULL keys included; so do ranges of an
/// unsigned key and of a datetime key. Two loads of the extract each get all the rows.
#[test]
fn a_partitioned_read_equals_a_single_read() {
    let Some(my) = server() else { return };
    let db = my.database("parts");
    db.sql(
        "CREATE TABLE big (id int unsigned PRIMARY KEY, k int NULL, at datetime NULL, s varchar(40));
         INSERT INTO big SELECT seq, IF(seq % 97 = 0, NULL, seq * 7 % 1000), IF(seq % 89 = 0, NULL, TIMESTAMPADD(MINUTE, seq, '2020-01-01')), md5(seq)
         FROM seq_1_to_20000;",
    );
    let whole = project(&db, "table: big");
    db.weir(&whole, &["run", "p.yaml"]).ok();
    let a = rows_of(&whole, &["id", "k", "at", "s"]);
    assert_eq!(a.len(), 20000);
    // A query's parts start their snapshots under FLUSH TABLES WITH READ LOCK.
    for (key, relation) in
        [("k", "table: big"), ("id", "table: big"), ("at", "table: big"), ("k", "query: \"SELECT * FROM big\"")]
    {
        let parts = project(&db, &format!("{relation}, partition: {{ column: {key}, parts: 8 }}"));
        let r = db.weir(&parts, &["run", "p.yaml"]);
        r.ok();
        assert!(r.stderr.contains("streamed into its consumer: 8 parts read in one snapshot"), "{key}: {}", r.stderr);
        assert_eq!(rows_of(&parts, &["id", "k", "at", "s"]), a, "partitioned by {key}");
    }
    let staged = project(&db, "table: big, partition: { column: k, parts: 8 }");
    let yaml = std::fs::read_to_string(staged.join("p.yaml")).unwrap();
    staged.write("p.yaml", format!("{yaml}  again:\n    load: {{ from: src, store: lake, path: again/ }}\n"));
    db.weir(&staged, &["run", "p.yaml"]).ok();
    assert_eq!(rows_of(&staged, &["id", "k", "at", "s"]), a);
    assert_eq!(read_rows(&staged.join("lake/again")).len(), 20000);
}

/// Rows written while a partitioned read is under way are in no part, and every part reads
/// the same instant: a writer moves amounts between rows of different parts in transactions
/// (the sum never changes) for the whole read, and the rows read still sum to the total. Then
/// the run is held (fail point) once every part has its snapshot; the table is changed; the
/// output is the table as it was.
#[test]
fn a_read_during_writes_is_one_instant() {
    let Some(my) = server() else { return };
    let db = my.database("snap");
    db.sql(
        "CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO acct SELECT seq, 100 FROM seq_1_to_8000;",
    );
    // The busy writer: each transaction moves 1 from a row of the first part to a row of the last.
    let mut script = String::from("SET autocommit = 0;\n");
    for k in 0..20_000 {
        let from = 1 + k % 900;
        let to = 7001 + k % 900;
        script.push_str(&format!(
            "UPDATE acct SET v = v - 1 WHERE id = {from}; UPDATE acct SET v = v + 1 WHERE id = {to}; COMMIT;\n"
        ));
    }
    let mut writer = Command::new("mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-P", &my.port.to_string(), "-uweir"])
        .arg(format!("-p{PASSWORD}"))
        .arg(&db.name)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(script.as_bytes());
    });
    let p = project(&db, "table: acct, partition: { column: id, parts: 4 }");
    for _ in 0..5 {
        db.weir(&p, &["run", "p.yaml"]).ok();
        let rows = read_rows(&p.join("lake/out"));
        assert_eq!(rows.len(), 8000);
        let sum: i64 = rows.iter().map(|r| r["v"].parse::<i64>().unwrap()).sum();
        assert_eq!(sum, 800_000, "the parts read different instants");
    }
    let _ = writer.kill();
    let _ = writer.wait();
    let _ = feeder.join();

    db.sql("UPDATE acct SET v = 0");
    let mut child = p
        .command(&["run", "p.yaml"])
        .env("MY_PASSWORD", PASSWORD)
        .env("WEIR_FAILPOINT", "source_snapshot@src=sleep(4000)")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The four parts, each idle in its snapshot (the lock is released once all have one,
    // and the run then sleeps at the fail point before reading).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n = db.sql(
            "SELECT count(*) FROM information_schema.processlist WHERE user = 'weir' AND db = 'snap' AND command = 'Sleep' AND time >= 1",
        );
        if n.trim() == "4" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the run never held its snapshots ({n})");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    db.sql("UPDATE acct SET v = 1; DELETE FROM acct WHERE id > 7000; INSERT INTO acct SELECT seq, 1 FROM seq_8001_to_9000;");
    assert!(child.wait().unwrap().success());
    let rows = read_rows(&p.join("lake/out"));
    assert_eq!(rows.len(), 8000);
    assert!(rows.iter().all(|r| r["v"] == "0"), "a row changed after the snapshots were taken");
}

/// A watermark: each run reads (on the server) only the rows past it; updated rows replace
/// themselves in a merge; a NULL cursor is counted and not loaded; nothing new, nothing read.
#[test]
fn a_watermark_reads_each_change_once() {
    let Some(my) = server() else { return };
    let db = my.database("wm");
    db.sql(
        "CREATE TABLE items (id int PRIMARY KEY, amount decimal(10,2), changed_at timestamp(6) NULL);
         INSERT INTO items VALUES (1, 10, '2026-01-01 00:00:00'), (2, 20, '2026-01-02 00:00:00'), (3, 30, '2026-01-03 00:00:00');",
    );
    let p = Project::new();
    p.write(
        "p.yaml",
        format!(
            "stores:\n{}  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: items, partition: {{ column: id, parts: 2 }}, incremental: {{ watermark: {{ column: changed_at }} }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: merge, keys: [id] }}\n",
            db.store()
        ),
    );
    db.weir(&p, &["run", "p.yaml"]).ok();
    assert_eq!(rows_of(&p, &["id", "amount"]), ["id=1 amount=10.00", "id=2 amount=20.00", "id=3 amount=30.00"]);
    db.sql(
        "UPDATE items SET amount = 21, changed_at = '2026-01-04 00:00:00.5' WHERE id = 2;
         INSERT INTO items VALUES (4, 40, '2026-01-05 00:00:00'), (5, 50, NULL);",
    );
    let r = db.weir(&p, &["run", "p.yaml", "--json"]);
    r.ok();
    let src = task_report(&r.stdout, "src");
    assert_eq!(src["rows_out"], 2, "only the two changed rows were read: {src}");
    assert!(src["note"].as_str().unwrap_or("").contains("1 rows with a NULL `changed_at` not loaded"), "{src}");
    assert_eq!(
        rows_of(&p, &["id", "amount"]),
        ["id=1 amount=10.00", "id=2 amount=21.00", "id=3 amount=30.00", "id=4 amount=40.00"]
    );
    let r = db.weir(&p, &["run", "p.yaml", "--json"]);
    r.ok();
    assert_eq!(task_report(&r.stdout, "src")["rows_out"], 0);
    assert_eq!(rows_of(&p, &["id"]).len(), 4);
}

/// kill -9 at each step of a watermark run and a rerun: every row is in the output once,
/// with its newest values.
#[test]
fn a_killed_watermark_run_loses_and_doubles_nothing() {
    let Some(my) = server() else { return };
    let db = my.database("wmkill");
    db.sql("CREATE TABLE ev (id int PRIMARY KEY, v int, at bigint unsigned); INSERT INTO ev SELECT seq, 0, seq FROM seq_1_to_100;");
    crate::databases::killed_watermark_runs_lose_and_double_nothing(
        &db,
        |base, from, to| {
            format!(
                "UPDATE ev SET v = v + 1, at = {base} WHERE id % 10 = 0; INSERT INTO ev SELECT seq, 0, {base} + seq FROM seq_{from}_to_{to};"
            )
        },
        "SELECT CONCAT('id=', id, ' v=', v) FROM ev",
    );
}

/// Filters of the transforms go to the server when they mean the same there (with MySQL's
/// case-insensitive text equality only widening what is read); the output equals what the
/// transforms compute, and only the rows the filters let through are read.
#[test]
fn transform_filters_are_pushed_to_the_server() {
    let Some(my) = server() else { return };
    let db = my.database("pushfilter");
    db.sql(
        "CREATE TABLE orders (id int, amount decimal(10,2), region varchar(4), score double, placed date, note varchar(10));
         INSERT INTO orders SELECT seq, seq * 1.5, CASE WHEN seq % 3 = 0 THEN 'n' WHEN seq % 7 = 0 THEN 'N' ELSE 's' END, seq / 7.0,
           DATE_ADD('2026-01-01', INTERVAL seq DAY), IF(seq % 5 = 0, NULL, CONCAT('x', seq)) FROM seq_1_to_300;",
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
    let text = plan.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "(`region` = 'n')",
        "(`note` IS NOT NULL)",
        "(`placed` < DATE'2026-01-11')",
        "`id` IN (2, 4, 6, 8, 99)",
        ") OR (",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    assert!(text.contains("(`amount` > 300"), "{text}");
    assert!(!text.contains("`score` >"), "a float comparison is not pushed: {text}");
    let r = db.weir(&p, &["run", "p.yaml", "--json"]);
    r.ok();
    let read: u64 = db
        .sql("SELECT count(*) FROM orders WHERE (region = 'n' AND amount > 300 AND note IS NOT NULL) OR (placed < DATE '2026-01-11' AND id IN (2, 4, 6, 8, 99))")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(task_report(&r.stdout, "src")["rows_out"], read, "only the rows the filters let through were read");
    // `region = 'n'` is case-sensitive in weir: the server's looser match read 'N' rows too,
    // and weir dropped them.
    let want = sorted_lines(
        &db,
        "SELECT CONCAT('id=', id, ' amount=', amount) FROM orders WHERE region = BINARY 'n' AND amount > 300 AND score > 1.0 AND note IS NOT NULL
         UNION ALL SELECT CONCAT('id=', id, ' amount=', amount) FROM orders WHERE placed < DATE '2026-01-11' AND id IN (2, 4, 6, 8, 99)",
    );
    assert_eq!(rows_of(&p, &["id", "amount"]), want);
}

/// `schema:` reads a column through a cast on the server: a `tinyint(1)` as boolean, a TIME
/// longer than a day as text, an unsigned bigint as a decimal. Without the cast, the long
/// TIME fails the run with an error naming the column and the fix, and nothing is written.
#[test]
fn declared_types_are_read_through_server_casts() {
    let Some(my) = server() else { return };
    let db = my.database("casts");
    db.sql(
        "CREATE TABLE t (id int, flag boolean, span time, big bigint unsigned);
         INSERT INTO t VALUES (1, true, '838:59:59', 18446744073709551615), (2, false, '-00:00:01', 0), (3, NULL, NULL, NULL);",
    );
    let p = project(&db, "table: t, schema: { flag: boolean, span: varchar, big: \"decimal(20,0)\" }");
    let plan = db.weir(&p, &["plan", "p.yaml"]);
    plan.ok();
    assert!(plan.stdout.contains("CAST(`span` AS CHAR) AS `span`"), "{}", plan.stdout);
    db.weir(&p, &["run", "p.yaml"]).ok();
    assert_eq!(
        rows_of(&p, &["id", "flag", "span", "big"]),
        [
            "id=1 flag=true span=838:59:59 big=18446744073709551615",
            "id=2 flag=false span=-00:00:01 big=0",
            "id=3 flag=NULL span=NULL big=NULL"
        ]
    );
    let bare = project(&db, "table: t");
    let r = db.weir(&bare, &["run", "p.yaml"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("column `span`") && r.stderr.contains("outside one day"), "{}", r.stderr);
    assert!(!bare.join("lake/out").exists() || read_rows(&bare.join("lake/out")).is_empty());
}

/// Problems a person can act on, each located in the pipeline file and naming the store,
/// table or privilege; the password is in none of them.
#[test]
fn errors_name_the_store_and_table_and_never_the_password() {
    let Some(my) = server() else { return };
    let db = my.database("errs");
    db.sql("CREATE TABLE customers (id int, g geometry); CREATE TABLE orders (id int);");
    my.root("GRANT SELECT ON errs.* TO reader@'127.0.0.1'");
    let mut out = String::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let cases: [(&str, &str, &str, &str); 8] = [
        ("server unreachable", "table: orders", "weir", PASSWORD),
        ("missing table", "table: custmers", "weir", PASSWORD),
        ("unmapped type", "query: \"SELECT id, g FROM customers\"", "weir", PASSWORD),
        ("DML as a query", "query: \"DELETE FROM orders\"", "weir", PASSWORD),
        ("change data capture", "table: orders, incremental: { cdc: { slot: s } }", "weir", PASSWORD),
        ("wrong password", "table: orders", "weir", "not-the-password"),
        ("no privilege on the table", "table: orders", "nobody", PASSWORD),
        (
            "no LOCK TABLES privilege for parts",
            "table: orders, partition: { column: id, parts: 2 }",
            "reader",
            PASSWORD,
        ),
    ];
    for (what, extract, user, password) in cases {
        let p = Project::new();
        p.write(
            "p.yaml",
            format!(
                "stores:\n{}  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, {extract} }}\n  out:\n    load: {{ from: src, store: lake, path: out/ }}\n",
                if what == "server unreachable" { db.store_as(user).replace(&my.port.to_string(), &closed) } else { db.store_as(user) }
            ),
        );
        let verb = if what.contains("parts") { "run" } else { "validate" };
        let r = p.weir_env(&[verb, "p.yaml"], &[("MY_PASSWORD", password)]);
        assert_ne!(r.code, 0, "{what}");
        let text = normalize(&r.stderr, p.path()).replace(&my.port.to_string(), "PORT").replace(&closed, "CLOSED");
        assert!(!text.contains(PASSWORD) && !text.contains("not-the-password"), "{text}");
        out.push_str(&format!("--- {what}\n{text}\n"));
    }
    assert_eq!(db.sql("SELECT count(*) FROM orders"), "0\n");
    insta::assert_snapshot!(out);
}

/// The canary: the password, in the URL or in `options`, appears in nothing weir writes.
#[test]
fn the_password_appears_nowhere() {
    let Some(my) = server() else { return };
    let db = my.database("canary");
    db.sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1); CREATE TABLE narrow (id int CHECK (id > 5));");
    let p = Project::new();
    // Table loads too: one that commits (its record in weir_commits) and one the server refuses.
    p.write(
        "p.yaml",
        format!(
            "stores:\n  app: {{ url: \"mysql://weir:{PASSWORD}@127.0.0.1:{}/{}\" }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n  src:\n    extract: {{ store: app, table: t }}\n  bad:\n    extract: {{ store: app, query: \"SELECT id FROM no_such_table\" }}\n  out:\n    load: {{ from: src, store: lake, path: out/ }}\n  copy:\n    load: {{ from: src, store: app, table: copy_of_t }}\n  refused:\n    load: {{ from: src, store: app, table: narrow, mode: append }}\n",
            my.port, db.name
        ),
    );
    let mut seen = String::new();
    for args in [&["validate", "p.yaml"][..], &["plan", "p.yaml"], &["graph", "p.yaml"], &["lineage", "p.yaml"]] {
        let r = p.weir(args);
        seen.push_str(&r.stdout);
        seen.push_str(&r.stderr);
    }
    assert!(seen.contains("no_such_table"), "the failing extract's error is shown: {seen}");
    // Without the broken extract, a run and its history.
    let yaml = std::fs::read_to_string(p.join("p.yaml")).unwrap();
    p.write(
        "p.yaml",
        yaml.replace("  bad:\n    extract: { store: app, query: \"SELECT id FROM no_such_table\" }\n", ""),
    );
    for args in [&["lineage", "p.yaml", "--format", "json"][..], &["run", "p.yaml", "-vv"], &["runs", "p", "--json"]] {
        let r = p.weir(args);
        seen.push_str(&r.stdout);
        seen.push_str(&r.stderr);
    }
    assert!(seen.contains("\"kind\": \"mysql\""), "the lineage names the table's server: {seen}");
    assert!(seen.contains("CONSTRAINT"), "the refused table load's error is shown: {seen}");
    assert!(!seen.contains(PASSWORD), "{seen}");
    let records = db.sql("SELECT record FROM weir_commits");
    assert!(records.contains("\"load\":\"copy\""), "{records}");
    assert!(!records.contains(PASSWORD), "{records}");
    assert_no_file_holds(&p, PASSWORD);
}
