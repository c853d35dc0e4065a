//! Database tables as load targets, against the real PostgreSQL and MariaDB servers of
//! `postgres.rs` and `mysql.rs`: every mode on both servers compared with rows computed here;
//! every type weir writes, read back as the server's text; schema mismatches (snapshots);
//! kill -9 at every step and a rerun; a reader during an overwrite; a second run of the same
//! load; gates; CDC from one database into a table of another.

use std::collections::BTreeSet;

use crate::common::*;
use crate::databases::TestDb;
use crate::mysql::MyDb;
use crate::postgres::{PASSWORD, PgDb, server};

/// A database a load writes into, with what the tests ask of it that differs by server.
trait TargetDb: TestDb + Sync {
    /// A new schema (PostgreSQL) or database (MySQL) named after `name`, as a load names it.
    fn new_schema(&self, name: &str) -> String;
    /// The columns of `table` (`name` or `schema.name`) as `name type, …`.
    fn columns(&self, table: &str) -> String;
    /// The columns of `table`'s primary key, comma-separated.
    fn primary_key(&self, table: &str) -> String;
    fn table_exists(&self, table: &str) -> bool;
    /// Whether load `t` holds its lock (PostgreSQL: an advisory lock is held; MySQL: the
    /// table it creates after taking the lock exists).
    fn writing(&self) -> bool;
    /// `name` quoted as an identifier (`load` is a reserved word in MySQL).
    fn ident(&self, name: &str) -> String;
    fn weir(&self, p: &Project, args: &[&str]) -> Run {
        self.run_weir(p, args)
    }
}

impl TargetDb for PgDb {
    fn new_schema(&self, name: &str) -> String {
        self.sql(&format!("CREATE SCHEMA {name}"));
        name.to_string()
    }
    fn columns(&self, table: &str) -> String {
        self.sql(&format!("SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped")).trim().to_string()
    }
    fn primary_key(&self, table: &str) -> String {
        self.sql(&format!("SELECT string_agg(a.attname, ',') FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '{table}'::regclass AND i.indisprimary")).trim().to_string()
    }
    fn table_exists(&self, table: &str) -> bool {
        self.sql(&format!("SELECT to_regclass('{table}') IS NOT NULL")).trim() == "t"
    }
    fn writing(&self) -> bool {
        self.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").trim() != "0"
    }
    fn ident(&self, name: &str) -> String {
        format!("\"{name}\"")
    }
}

impl TargetDb for MyDb {
    fn new_schema(&self, name: &str) -> String {
        let db = format!("{}_{name}", self.name);
        self.sql(&format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"));
        db
    }
    fn columns(&self, table: &str) -> String {
        let (db, name) = my_parts(table);
        self.sql(&format!("SELECT GROUP_CONCAT(CONCAT(column_name, ' ', column_type) ORDER BY ordinal_position SEPARATOR ', ') FROM information_schema.columns WHERE table_schema = {db} AND table_name = '{name}'")).trim().to_string()
    }
    fn primary_key(&self, table: &str) -> String {
        let (db, name) = my_parts(table);
        self.sql(&format!("SELECT GROUP_CONCAT(column_name ORDER BY seq_in_index) FROM information_schema.statistics WHERE table_schema = {db} AND table_name = '{name}' AND index_name = 'PRIMARY'")).trim().to_string()
    }
    fn table_exists(&self, table: &str) -> bool {
        let (db, name) = my_parts(table);
        self.sql(&format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = {db} AND table_name = '{name}'"
        ))
        .trim()
            == "1"
    }
    fn writing(&self) -> bool {
        // The load takes its lock, then creates table `t` (DDL: before its transaction).
        self.table_exists("t")
    }
    fn ident(&self, name: &str) -> String {
        format!("`{name}`")
    }
}

/// `table` as the schema condition and name of an `information_schema` query.
fn my_parts(table: &str) -> (String, &str) {
    match table.split_once('.') {
        Some((db, name)) => (format!("'{db}'"), name),
        None => ("DATABASE()".to_string(), table),
    }
}

/// The MariaDB database `name`, or `None` (the test skips) when MariaDB is not installed.
fn mariadb(name: &str) -> Option<MyDb> {
    crate::mysql::server().map(|s| s.database(name))
}

/// The PostgreSQL database `name`, or `None` (the test skips) when PostgreSQL is not installed.
fn postgres(name: &str) -> Option<PgDb> {
    server().map(|s| s.database(name))
}

/// A project with the store `app` of `db`, a file store `lake` and `tasks`.
fn project(db: &dyn TestDb, tasks: &str) -> Project {
    crate::databases::project_with(db, tasks)
}

/// The rows of `sql` on the server, sorted.
fn sorted(db: &dyn TestDb, sql: &str) -> Vec<String> {
    crate::databases::sorted_lines(db, sql)
}

fn csv(rows: &[(u32, &str, i64, &str)]) -> String {
    let mut s = String::from("id,region,amount,op\n");
    for (id, region, amount, op) in rows {
        s.push_str(&format!("{id},{region},{amount},{op}\n"));
    }
    s
}

fn table_rows(db: &dyn TestDb, table: &str) -> Vec<String> {
    sorted(db, &format!("SELECT concat_ws(' ', id, region, amount) FROM {table}"))
}

/// Runs `$body` (a function of a `&dyn TargetDb`) as a test on each server: `$name_postgres`
/// and `$name_mariadb`, each with its own database.
macro_rules! on_both {
    ($pg:ident, $my:ident, $db:literal, $body:ident) => {
        #[test]
        fn $pg() {
            let Some(db) = postgres($db) else { return };
            $body(&db);
        }
        #[test]
        fn $my() {
            let Some(db) = mariadb($db) else { return };
            $body(&db);
        }
    };
}

on_both!(overwrite_and_append_postgres, overwrite_and_append_mariadb, "tl_modes", overwrite_and_append);
/// `overwrite` and `append` write exactly the rows, into a table weir creates.
fn overwrite_and_append(db: &dyn TargetDb) {
    let schema = db.new_schema("analytics");
    let p = project(
        db,
        &format!(
            "  src: {{ extract: {{ store: lake, path: \"in/*.csv\", format: csv }} }}\n  snap:\n    load: {{ from: src, store: app, table: {schema}.snapshot, mode: overwrite }}\n  hist:\n    load: {{ from: src, store: app, table: history, mode: append }}\n"
        ),
    );
    p.write("lake/in/a.csv", csv(&[(1, "north", 10, ""), (2, "south", 20, "")]));
    db.weir(&p, &["run", "p.yaml"]).ok();
    let snapshot = format!("{schema}.snapshot");
    assert_eq!(table_rows(db, &snapshot), ["1 north 10", "2 south 20"]);
    assert_eq!(table_rows(db, "history"), ["1 north 10", "2 south 20"]);
    // The table was created from the load's columns.
    assert!(
        [
            "id bigint, region text, amount bigint, op text",
            "id bigint(20), region longtext, amount bigint(20), op longtext"
        ]
        .contains(&db.columns(&snapshot).as_str()),
        "{}",
        db.columns(&snapshot)
    );
    p.write("lake/in/a.csv", csv(&[(3, "east", 30, "")]));
    db.weir(&p, &["run", "p.yaml"]).ok();
    assert_eq!(table_rows(db, &snapshot), ["3 east 30"]);
    assert_eq!(table_rows(db, "history"), ["1 north 10", "2 south 20", "3 east 30"]);
    // The commit table beside each table holds its loads' records.
    let commits = |table: &str| sorted(db, &format!("SELECT concat_ws(' ', {}, seq) FROM {table}", db.ident("load")));
    assert_eq!(commits(&format!("{schema}.weir_commits")), ["snap 1", "snap 2"]);
    assert_eq!(commits("weir_commits"), ["hist 1", "hist 2"]);
}

on_both!(merge_postgres, merge_mariadb, "tl_merge", merge_updates_adds_and_deletes_by_keys);
/// `orders` is created by weir, with `id` as its primary key (an upsert applies the rows);
/// `plain` has no unique key (a delete and an insert apply them); `other` has a unique key
/// besides `id` (an upsert could update the wrong row: a delete and an insert).
fn merge_updates_adds_and_deletes_by_keys(db: &dyn TargetDb) {
    db.sql("CREATE TABLE plain (id bigint, region text, amount bigint, op text)");
    db.sql("CREATE TABLE other (id bigint PRIMARY KEY, region varchar(20), amount bigint, op text, UNIQUE (region, amount))");
    let p = project(
        db,
        "  src: { extract: { store: lake, path: \"in/*.csv\", format: csv, incremental: { new_files: true } } }\n  t:\n    load: { from: src, store: app, table: orders, mode: merge, keys: [id], order_by: amount, delete_when: \"op = 'D'\" }\n  t2:\n    load: { from: src, store: app, table: plain, mode: merge, keys: [id], order_by: amount, delete_when: \"op = 'D'\" }\n  t3:\n    load: { from: src, store: app, table: other, mode: merge, keys: [id], order_by: amount, delete_when: \"op = 'D'\" }\n",
    );
    p.write("lake/in/1.csv", csv(&[(1, "north", 10, ""), (2, "south", 20, ""), (3, "east", 30, "")]));
    db.weir(&p, &["run", "p.yaml"]).ok();
    // `keys` became the primary key of the table weir created.
    assert_eq!(db.primary_key("orders"), "id");
    // 1 updated twice (the greater amount wins), 2 deleted, 4 added; 3 untouched.
    p.write(
        "lake/in/2.csv",
        csv(&[(1, "north", 11, ""), (1, "west", 12, ""), (2, "south", 0, "D"), (4, "north", 40, "")]),
    );
    db.weir(&p, &["run", "p.yaml"]).ok();
    for t in ["orders", "plain", "other"] {
        assert_eq!(table_rows(db, t), ["1 west 12", "3 east 30", "4 north 40"], "{t}");
    }
    // A delivery of no rows changes nothing, and is committed.
    p.write("lake/in/2b.csv", "id,region,amount,op\n");
    db.weir(&p, &["run", "p.yaml"]).ok();
    assert_eq!(table_rows(db, "orders"), ["1 west 12", "3 east 30", "4 north 40"]);
    let seq = format!("SELECT max(seq) FROM weir_commits WHERE {} = 't'", db.ident("load"));
    assert_eq!(db.sql(&seq).trim(), "3", "the empty file was committed");
    // Nothing new: nothing changes, and no file is read twice.
    db.weir(&p, &["run", "p.yaml", "--json"]).ok();
    assert_eq!(table_rows(db, "orders"), ["1 west 12", "3 east 30", "4 north 40"]);
    // Ties on `order_by` are refused and change nothing.
    p.write("lake/in/3.csv", csv(&[(3, "a", 5, ""), (3, "b", 5, "")]));
    let r = db.weir(&p, &["run", "p.yaml"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("same `order_by`"), "{}", r.stderr);
    assert_eq!(table_rows(db, "orders"), ["1 west 12", "3 east 30", "4 north 40"]);
    std::fs::remove_file(p.join("lake/in/3.csv")).unwrap();
    // A row that breaks the other unique key fails the load of `other` (never updating the
    // row that holds that key) and writes nothing to it.
    p.write("lake/in/4.csv", csv(&[(5, "east", 30, "")]));
    let r = db.weir(&p, &["run", "p.yaml"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_eq!(table_rows(db, "other"), ["1 west 12", "3 east 30", "4 north 40"]);
    assert_eq!(table_rows(db, "orders"), ["1 west 12", "3 east 30", "4 north 40", "5 east 30"]);
}

on_both!(replace_partitions_postgres, replace_partitions_mariadb, "tl_parts", replace_partitions);
/// `replace_partitions` replaces only the partitions present (a NULL partition matches NULL).
fn replace_partitions(db: &dyn TargetDb) {
    let p = project(
        db,
        "  src: { extract: { store: lake, path: \"in/*.csv\", format: csv } }\n  t:\n    load: { from: src, store: app, table: daily, mode: replace_partitions, partition_by: [region] }\n",
    );
    p.write("lake/in/a.csv", csv(&[(1, "north", 10, ""), (2, "south", 20, ""), (3, "south", 30, "")]));
    db.weir(&p, &["run", "p.yaml"]).ok();
    db.sql("INSERT INTO daily VALUES (9, NULL, 90, ''), (8, NULL, 80, '')");
    // south is replaced (2 and 3 go), east is added, north and the NULL region stay.
    p.write("lake/in/a.csv", csv(&[(4, "south", 40, ""), (5, "east", 50, "")]));
    db.weir(&p, &["run", "p.yaml"]).ok();
    let rows = "SELECT concat_ws(' ', id, coalesce(region, 'NULL'), amount) FROM daily";
    assert_eq!(sorted(db, rows), ["1 north 10", "4 south 40", "5 east 50", "8 NULL 80", "9 NULL 90"]);
    // A NULL partition replaces the NULL rows.
    p.write("lake/in/a.csv", "id,region,amount,op\n7,,70,\n");
    db.weir(&p, &["run", "p.yaml"]).ok();
    assert_eq!(sorted(db, rows), ["1 north 10", "4 south 40", "5 east 50", "7 NULL 70"]);
}

on_both!(killed_load_postgres, killed_load_mariadb, "tl_kill", a_killed_load_loses_and_doubles_nothing);
/// kill -9 while the rows are being sent, before the commit, and after the commit before the
/// state cache is written: after a rerun, every source row is in the table once.
fn a_killed_load_loses_and_doubles_nothing(db: &dyn TargetDb) {
    let p = project(
        db,
        "  src: { extract: { store: lake, path: \"in/*.csv\", format: csv, incremental: { new_files: true } } }\n  t:\n    load: { from: src, store: app, table: events, mode: append }\n",
    );
    let mut want = Vec::new();
    for (k, point) in ["mid_copy", "before_publish", "after_publish_before_state"].iter().enumerate() {
        // Big enough that the rows are sent in more than one chunk.
        let rows: Vec<(u32, &str, i64, &str)> =
            (0..60_000).map(|i| (k as u32 * 100_000 + i, "north", i as i64, "")).collect();
        want.extend(rows.iter().map(|r| r.0));
        p.write(&format!("lake/in/{k}.csv"), csv(&rows));
        let r = p.weir_env(&["run", "p.yaml"], &[db.password_env(), ("WEIR_FAILPOINT", &format!("{point}=kill"))]);
        assert_ne!(r.code, 0, "{point}: the run was killed");
        db.weir(&p, &["run", "p.yaml"]).ok();
        let count = db.sql("SELECT concat(count(*), ' ', count(DISTINCT id)) FROM events");
        assert_eq!(count.trim(), format!("{n} {n}", n = want.len()), "after a kill at {point} and a rerun");
    }
    want.sort();
    let mut ids: Vec<u32> = sorted(db, "SELECT id FROM events").iter().map(|s| s.parse().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, want);
}

on_both!(reader_postgres, reader_mariadb, "tl_reader", a_reader_never_sees_a_partial_overwrite);
/// A reader counting the rows while the table is overwritten again and again sees the old
/// count or the new one, never a part.
fn a_reader_never_sees_a_partial_overwrite(db: &dyn TargetDb) {
    let p = project(
        db,
        "  src: { extract: { store: lake, path: \"in/*.csv\", format: csv } }\n  t:\n    load: { from: src, store: app, table: big, mode: overwrite }\n",
    );
    let small: Vec<(u32, &str, i64, &str)> = (0..50_000).map(|i| (i, "n", 1, "")).collect();
    let large: Vec<(u32, &str, i64, &str)> = (0..150_000).map(|i| (i, "n", 1, "")).collect();
    p.write("lake/in/a.csv", csv(&small));
    db.weir(&p, &["run", "p.yaml"]).ok();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut seen = BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.insert(db.sql("SELECT count(*) FROM big").trim().to_string());
            }
            seen
        });
        for k in 0..4 {
            p.write("lake/in/a.csv", csv(if k % 2 == 0 { &large } else { &small }));
            db.weir(&p, &["run", "p.yaml"]).ok();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert!(seen.iter().all(|c| c == "50000" || c == "150000"), "counts seen: {seen:?}");
}

on_both!(second_run_postgres, second_run_mariadb, "tl_busy", a_second_run_of_a_load_is_refused_while_the_first_writes);
/// Two runs of one load at once: the second is refused at once, writes nothing, and the
/// first commits.
fn a_second_run_of_a_load_is_refused_while_the_first_writes(db: &dyn TargetDb) {
    let p = project(
        db,
        "  src: { extract: { store: lake, path: \"in/*.csv\", format: csv } }\n  t:\n    load: { from: src, store: app, table: t, mode: append }\n",
    );
    // No retry: the second run's refusal is the answer.
    let yaml = std::fs::read_to_string(p.join("p.yaml")).unwrap();
    p.write("p.yaml", format!("defaults: {{ retries: 0 }}\n{yaml}"));
    p.write("lake/in/a.csv", csv(&[(1, "north", 10, "")]));
    let (var, password) = db.password_env();
    let mut first = p
        .command(&["run", "p.yaml"])
        .env(var, password)
        // Much longer than a MySQL load waits for the lock (5 s), a busy machine included.
        .env("WEIR_FAILPOINT", "before_publish=sleep(15000)")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first run holds the lock and has written its rows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !db.writing() {
        if let Ok(Some(_)) = first.try_wait() {
            let out = first.wait_with_output().unwrap();
            panic!("the first run ended: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(std::time::Instant::now() < deadline, "the first run never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Another machine: its own state store.
    let second = db.weir(&p, &["run", "p.yaml", "--state", "elsewhere.db"]);
    assert_ne!(second.code, 0);
    assert!(second.stderr.contains("another run of load `t` is writing"), "{}", second.stderr);
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(table_rows(db, "t"), ["1 north 10"]);
}

on_both!(gates_postgres, gates_mariadb, "tl_gates", gates_hold_for_tables);
/// A failed error check writes nothing to the table; quarantine sets the failing rows aside
/// in files and loads the rest.
fn gates_hold_for_tables(db: &dyn TargetDb) {
    let p = project(
        db,
        "  src:\n    extract: { store: lake, path: \"in/*.csv\", format: csv }\n    checks: [ { not_null: region } ]\n  t:\n    load: { from: src, store: app, table: t }\n",
    );
    p.write("lake/in/a.csv", "id,region,amount,op\n1,north,10,\n2,,20,\n");
    let r = db.weir(&p, &["run", "p.yaml"]);
    assert_ne!(r.code, 0);
    assert!(!db.table_exists("t"), "no table was created");
    let yaml = std::fs::read_to_string(p.join("p.yaml")).unwrap().replace(
        "checks: [ { not_null: region } ]",
        "checks: [ { not_null: region } ]\n    on_check_failure: quarantine\n    quarantine: { store: lake }",
    );
    p.write("p.yaml", yaml);
    db.weir(&p, &["run", "p.yaml"]).ok();
    assert_eq!(table_rows(db, "t"), ["1 north 10"]);
    let q = parquet_files(&p.join("lake/_quarantine"));
    assert!(!q.is_empty(), "the failing row is quarantined in files");
}

/// Every Arrow type weir's queries make, written into a new table and read back as the
/// server's text.
#[test]
fn every_type_round_trips() {
    let Some(db) = postgres("tl_types") else { return };
    let p = project(
        &db,
        r#"  v:
    transform:
      sql: |
        SELECT * FROM (VALUES
          (1, true, CAST(-32768 AS SMALLINT), CAST(2147483647 AS INT), CAST(-9223372036854775808 AS BIGINT),
           CAST(255 AS TINYINT UNSIGNED), CAST(18446744073709551615 AS BIGINT UNSIGNED), CAST(1.5 AS REAL), CAST(-2.5e-300 AS DOUBLE),
           CAST('-12345678901234567890.123456' AS DECIMAL(38,6)), CAST('0.01' AS DECIMAL(5,2)), 'żółw 🐢 "q"',
           CAST('0001-01-01' AS DATE), CAST('9999-12-31T23:59:59.999999' AS TIMESTAMP), to_timestamp_micros(1780315200123456) AT TIME ZONE 'UTC',
           CAST('23:59:59.999999' AS TIME), CAST('deadbeef' AS BYTEA), make_array(1, NULL, 3), make_array('a', 'b')),
          (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
        ) AS t(id, b, i2, i4, i8, u1, u8, f4, f8, d38, d5, s, d, ts, tz, tm, by, li, ls)
  t:
    load: { from: v, store: app, table: alltypes }
"#,
    );
    db.weir(&p, &["run", "p.yaml"]).ok();
    let types = db.sql(
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'alltypes'::regclass AND attnum > 0",
    );
    assert_eq!(
        types.trim(),
        "id bigint, b boolean, i2 smallint, i4 integer, i8 bigint, u1 smallint, u8 numeric(20,0), f4 real, \
         f8 double precision, d38 numeric(38,6), d5 numeric(5,2), s text, d date, ts timestamp without time zone, \
         tz timestamp with time zone, tm time without time zone, by bytea, li bigint[], ls text[]"
    );
    let row = db.sql(
        "SET TIME ZONE 'UTC'; SELECT concat_ws(' | ', b, i2, i4, i8, u1, u8, f4, f8, d38, d5, s, d, ts, tz, tm, encode(by, 'hex'), li, ls) FROM alltypes WHERE id = 1",
    );
    // Each value as DataFusion computed it, as PostgreSQL writes it (the bytes are those of
    // the text 'deadbeef').
    assert_eq!(
        row.trim(),
        "SET\nt | -32768 | 2147483647 | -9223372036854775808 | 255 | 18446744073709551615 | 1.5 | -2.5e-300 | \
         -12345678901234567890.123456 | 0.01 | żółw 🐢 \"q\" | 0001-01-01 | 9999-12-31 23:59:59.999999 | \
         2026-06-01 12:00:00.123456+00 | 23:59:59.999999 | 6465616462656566 | {1,NULL,3} | {a,b}"
    );
    let nulls = db.sql(
        "SELECT count(*) FROM alltypes WHERE id = 2 AND num_nulls(b, i2, i4, i8, u1, u8, f4, f8, d38, d5, s, d, ts, tz, tm, by, li, ls) = 18",
    );
    assert_eq!(nulls.trim(), "1");
}

#[test]
fn a_table_with_other_columns_is_refused_before_anything_is_written() {
    let Some(db) = postgres("tl_schema") else { return };
    db.sql("CREATE TABLE t (id integer, region varchar(20), extra text); INSERT INTO t VALUES (7, 'x', 'kept')");
    let p = project(
        &db,
        "  src: { extract: { store: lake, path: \"in/*.csv\", format: csv } }\n  t:\n    load: { from: src, store: app, table: t, mode: append }\n",
    );
    p.write("lake/in/a.csv", csv(&[(1, "north", 10, "")]));
    // bigint into integer narrows; `amount` and `op` are missing.
    let r = db.weir(&p, &["validate", "p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    insta::assert_snapshot!(normalize(&r.stderr, p.path()));
    assert!(!r.stderr.contains(PASSWORD));
    let r = db.weir(&p, &["run", "p.yaml"]);
    assert_ne!(r.code, 0);
    assert_eq!(db.sql("SELECT count(*) FROM t").trim(), "1");
    // With the table widened and `add_columns`, the missing columns are added and filled.
    db.sql("ALTER TABLE t ALTER COLUMN id TYPE bigint");
    let yaml = std::fs::read_to_string(p.join("p.yaml"))
        .unwrap()
        .replace("mode: append", "mode: append, on_schema_change: add_columns");
    p.write("p.yaml", yaml);
    db.weir(&p, &["validate", "p.yaml"]).ok();
    db.weir(&p, &["run", "p.yaml"]).ok();
    assert_eq!(
        sorted(
            &db,
            "SELECT id || ' ' || region || ' ' || coalesce(extra, 'NULL') || ' ' || coalesce(amount::text, 'NULL') FROM t"
        ),
        ["1 north NULL 10", "7 x kept NULL"]
    );
}

/// CDC from a PostgreSQL database into a table of another database (PostgreSQL, MariaDB):
/// after inserts, updates and deletes the target table equals the source table.
fn cdc_into(dst: &dyn TargetDb, slot: &str) {
    let Some(pg) = server() else { return };
    let src = pg.database(&format!("{slot}_src"));
    src.sql("CREATE TABLE orders (id int PRIMARY KEY, v text, amount numeric(10,2)); ALTER TABLE orders REPLICA IDENTITY FULL; INSERT INTO orders SELECT g, 'v' || g, g * 1.5 FROM generate_series(1, 100) g");
    let p = Project::new();
    let dst_store = dst.store().replace("  app:", "  target:");
    p.write(
        "p.yaml",
        format!(
            "stores:\n{}{dst_store}tasks:\n  src:\n    extract: {{ store: app, table: orders, incremental: {{ cdc: {{ slot: {slot} }} }} }}\n  copy:\n    transform: {{ sql: \"SELECT id, v, amount, _lsn, _op FROM src\" }}\n  out:\n    load: {{ from: copy, store: target, table: orders_copy, mode: merge, keys: [id], order_by: _lsn, delete_when: \"_op = 'delete'\" }}\n",
            src.store()
        ),
    );
    let run = || {
        p.weir_env(&["run", "p.yaml"], &[src.password_env(), dst.password_env()]).ok();
    };
    run();
    let same = |what: &str| {
        let want = sorted(&src, "SELECT concat_ws(' ', id, v, amount) FROM orders");
        let got = sorted(dst, "SELECT concat_ws(' ', id, v, amount) FROM orders_copy");
        assert_eq!(got, want, "{what}");
    };
    same("after the snapshot");
    src.sql("INSERT INTO orders VALUES (101, 'new', 1); UPDATE orders SET v = 'changed', amount = amount + 1 WHERE id % 10 = 0; DELETE FROM orders WHERE id % 7 = 0; UPDATE orders SET v = 'twice' WHERE id = 1; UPDATE orders SET v = 'thrice' WHERE id = 1");
    run();
    same("after inserts, updates and deletes");
}

#[test]
fn cdc_into_a_postgres_table() {
    let Some(dst) = postgres("tl_cdc_dst") else { return };
    cdc_into(&dst, "tl_cdc");
}

#[test]
fn cdc_into_a_mariadb_table() {
    let Some(dst) = mariadb("tl_cdc_dst") else { return };
    cdc_into(&dst, "tl_cdc_my");
}

/// The store `app` of `db` as a store `name` that sends rows by `INSERT` statements.
fn inserting_store(db: &dyn TestDb, name: &str) -> String {
    db.store().replace("  app:", &format!("  {name}:")).replace("options: {", "options: { local_infile: false,")
}

/// Every Arrow type weir's queries make, written into new MariaDB tables by `LOAD DATA` and
/// by `INSERT`, read back as the server's text.
#[test]
fn every_type_round_trips_mariadb() {
    let Some(db) = mariadb("tl_types") else { return };
    let p = project(
        &db,
        r#"  v:
    transform:
      sql: |
        SELECT * FROM (VALUES
          (1, true, CAST(-32768 AS SMALLINT), CAST(2147483647 AS INT), CAST(-9223372036854775808 AS BIGINT),
           CAST(255 AS TINYINT UNSIGNED), CAST(18446744073709551615 AS BIGINT UNSIGNED), CAST(1.5 AS REAL), CAST(-2.5e-300 AS DOUBLE),
           CAST('-12345678901234567890.123456' AS DECIMAL(38,6)), CAST('0.01' AS DECIMAL(5,2)), 'żółw 🐢 "q"',
           concat('t', chr(9), 'n', chr(10), 'b', chr(92), 'q', chr(39), 'r', chr(13), 'z', chr(26), 'N'),
           CAST('1000-01-01' AS DATE), CAST('9999-12-31T23:59:59.999999' AS TIMESTAMP), to_timestamp_micros(1780315200123456) AT TIME ZONE 'UTC',
           CAST('23:59:59.999999' AS TIME), CAST('deadbeef' AS BYTEA), make_array(1, NULL, 3), make_array('a"', 'b')),
          (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
        ) AS t(id, b, i2, i4, i8, u1, u8, f4, f8, d38, d5, s, e, d, ts, tz, tm, by, li, ls)
  t:
    load: { from: v, store: app, table: alltypes }
  t2:
    load: { from: v, store: inserts, table: alltypes2 }
"#,
    );
    let yaml = std::fs::read_to_string(p.join("p.yaml")).unwrap();
    p.write("p.yaml", yaml.replace("stores:\n", &format!("stores:\n{}", inserting_store(&db, "inserts"))));
    db.weir(&p, &["run", "p.yaml"]).ok();
    assert_eq!(
        db.columns("alltypes"),
        "id bigint(20), b tinyint(1), i2 smallint(6), i4 int(11), i8 bigint(20), u1 tinyint(3) unsigned, \
         u8 bigint(20) unsigned, f4 float, f8 double, d38 decimal(38,6), d5 decimal(5,2), s longtext, e longtext, \
         d date, ts datetime(6), tz datetime(6), tm time(6), by longblob, li longtext, ls longtext"
    );
    let row = |table: &str| {
        db.sql(&format!(
            "SELECT concat_ws(' | ', b, i2, i4, i8, u1, u8, f4, f8, d38, d5, s, hex(e), d, ts, tz, tm, hex(`by`), li, ls) FROM {table} WHERE id = 1"
        ))
    };
    // Each value as DataFusion computed it, as MariaDB writes it (the bytes are those of the
    // text 'deadbeef'; a zoned timestamp is its UTC time; lists are JSON arrays).
    assert_eq!(
        row("alltypes").trim(),
        "1 | -32768 | 2147483647 | -9223372036854775808 | 255 | 18446744073709551615 | 1.5 | -2.5e-300 | \
         -12345678901234567890.123456 | 0.01 | żółw 🐢 \"q\" | 7409 6E0A 625C 7127 720D 7A1A 4E | 1000-01-01 | \
         9999-12-31 23:59:59.999999 | 2026-06-01 12:00:00.123456 | 23:59:59.999999 | 6465616462656566 | [1,null,3] | [\"a\\\"\",\"b\"]"
            .replace("7409 6E0A 625C 7127 720D 7A1A 4E", "74096E0A625C7127720D7A1A4E")
    );
    assert_eq!(row("alltypes2"), row("alltypes"), "INSERT writes what LOAD DATA writes");
    for table in ["alltypes", "alltypes2"] {
        let nulls = db.sql(&format!(
            "SELECT count(*) FROM {table} WHERE id = 2 AND coalesce(b, i2, i4, i8, u1, u8, f4, f8, d38, d5, s, e, d, ts, tz, tm, `by`, li, ls) IS NULL"
        ));
        assert_eq!(nulls.trim(), "1", "{table}");
    }
}

/// A MariaDB table whose columns differ, a MyISAM table (it cannot roll back) and a view are
/// refused by `validate` and by the run, naming both sides; with `add_columns` the missing
/// columns are added and filled.
#[test]
fn a_mariadb_table_with_other_columns_is_refused_before_anything_is_written() {
    let Some(db) = mariadb("tl_schema") else { return };
    db.sql(
        "CREATE TABLE t (id int, region varchar(20), extra text); INSERT INTO t VALUES (7, 'x', 'kept');
         CREATE TABLE old (id bigint, region text, amount bigint, op text) ENGINE=MyISAM; CREATE VIEW v AS SELECT * FROM old",
    );
    let p = project(
        &db,
        "  src: { extract: { store: lake, path: \"in/*.csv\", format: csv } }\n  t:\n    load: { from: src, store: app, table: t, mode: append }\n  old:\n    load: { from: src, store: app, table: old, mode: append }\n  v:\n    load: { from: src, store: app, table: v, mode: append }\n",
    );
    p.write("lake/in/a.csv", csv(&[(1, "north", 10, "")]));
    let r = db.weir(&p, &["validate", "p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    insta::assert_snapshot!(normalize(&r.stderr, p.path()));
    assert!(!r.stderr.contains(crate::mysql::PASSWORD));
    let r = db.weir(&p, &["run", "p.yaml"]);
    assert_ne!(r.code, 0);
    assert_eq!(db.sql("SELECT count(*) FROM t").trim(), "1");
    assert_eq!(db.sql("SELECT count(*) FROM old").trim(), "0");
    // With the table widened and `add_columns`, the missing columns are added and filled.
    db.sql("ALTER TABLE t MODIFY id bigint");
    p.write(
        "p.yaml",
        std::fs::read_to_string(p.join("p.yaml"))
            .unwrap()
            .replace("table: t, mode: append", "table: t, mode: append, on_schema_change: add_columns")
            .split("  old:\n")
            .next()
            .unwrap(),
    );
    db.weir(&p, &["validate", "p.yaml"]).ok();
    db.weir(&p, &["run", "p.yaml"]).ok();
    assert_eq!(
        sorted(&db, "SELECT concat_ws(' ', id, region, coalesce(extra, 'NULL'), coalesce(amount, 'NULL')) FROM t"),
        ["1 north NULL 10", "7 x kept NULL"]
    );
}

/// Values a MariaDB column would hold differently are refused, by either way of sending
/// rows, and nothing is written: text longer than a `varchar(3)` (MySQL makes that a warning
/// under `LOAD DATA LOCAL`), fractions of a second a `datetime` would round, NaN.
#[test]
fn values_a_mariadb_column_would_change_are_refused() {
    let Some(db) = mariadb("tl_values") else { return };
    db.sql("CREATE TABLE short (id bigint, region varchar(3), amount bigint, op text); CREATE TABLE short2 LIKE short; CREATE TABLE secs (id bigint, at datetime); CREATE TABLE f (x double)");
    let p = project(
        &db,
        "  src: { extract: { store: lake, path: \"in/*.csv\", format: csv } }\n  a:\n    load: { from: src, store: app, table: short, mode: append }\n  b:\n    load: { from: src, store: inserts, table: short2, mode: append }\n  c:\n    load: { from: at, store: app, table: secs, mode: append }\n  d:\n    load: { from: nan, store: app, table: f, mode: append }\n  at: { transform: { sql: \"SELECT 1 AS id, to_timestamp_micros(1500000) AS at\" } }\n  nan: { transform: { sql: \"SELECT CAST('NaN' AS DOUBLE) AS x\" } }\n",
    );
    let yaml = std::fs::read_to_string(p.join("p.yaml")).unwrap();
    p.write("p.yaml", yaml.replace("stores:\n", &format!("stores:\n{}", inserting_store(&db, "inserts"))));
    p.write("lake/in/a.csv", csv(&[(1, "abc", 10, ""), (2, "north", 20, "")]));
    let r = db.weir(&p, &["run", "p.yaml", "--json"]);
    assert_ne!(r.code, 0);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stderr));
    let error = |task: &str| {
        report["tasks"].as_array().unwrap().iter().find(|t| t["name"] == task).unwrap()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        error("a").contains("Data too long for column 'region'") || error("a").contains("Data truncated"),
        "{}",
        error("a")
    );
    assert!(error("b").contains("Data too long for column 'region'"), "{}", error("b"));
    assert!(error("c").contains("fractional digits"), "{}", error("c"));
    assert!(error("d").contains("NaN"), "{}", error("d"));
    for t in ["short", "short2", "secs", "f"] {
        assert_eq!(db.sql(&format!("SELECT count(*) FROM {t}")).trim(), "0", "{t}");
    }
}

/// Each way a load can mix up files and tables, all reported at once by `validate`.
#[test]
fn file_and_table_keys_are_not_mixed() {
    let Some(db) = postgres("tl_keys") else { return };
    let p = project(
        &db,
        "  src: { extract: { store: lake, path: \"in/*.csv\", format: csv } }\n  no_table: { load: { from: src, store: app } }\n  both: { load: { from: src, store: app, table: t1, path: out/ } }\n  settings: { load: { from: src, store: app, table: t2, format: delta, row_group_rows: 10 } }\n  table_in_files: { load: { from: src, store: lake, table: t3 } }\n  no_path: { load: { from: src, store: lake } }\n  schema_change: { load: { from: src, store: lake, path: out/, on_schema_change: add_columns } }\n  same_a: { load: { from: src, store: app, table: same } }\n  same_b: { load: { from: src, store: app, table: same } }\n",
    );
    p.write("lake/in/a.csv", csv(&[(1, "north", 10, "")]));
    let r = db.weir(&p, &["validate", "p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!r.stderr.contains(PASSWORD));
    insta::assert_snapshot!(normalize(&r.stderr, p.path()));
}
