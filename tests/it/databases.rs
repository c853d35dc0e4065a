//! What the database-source tests share, whichever server they run against (`postgres.rs`,
//! `mysql.rs`): the project around an extract, the rows it wrote, and the tests whose steps
//! are the same on every server.

use std::path::{Path, PathBuf};

use crate::common::*;

/// A test database on a server the tests started.
pub(crate) trait TestDb {
    /// Run `sql` in the database; its output, a row per line.
    fn sql(&self, sql: &str) -> String;
    /// The `stores:` entry of a store `app` for this database, with the password from the
    /// environment variable [`Self::password_env`] names.
    fn store(&self) -> String;
    /// The environment variable the store reads its password from, and the password.
    fn password_env(&self) -> (&'static str, &'static str);

    /// `weir ARGS` in `p` with the password in the environment.
    fn run_weir(&self, p: &Project, args: &[&str]) -> Run {
        p.weir_env(args, &[self.password_env()])
    }
}

/// A project whose pipeline has the store `app` of `db`, a store `lake`, and `tasks` (YAML
/// lines under `tasks:`).
pub(crate) fn project_with(db: &dyn TestDb, tasks: &str) -> Project {
    let p = Project::new();
    p.write("p.yaml", format!("stores:\n{}  lake: {{ url: \"file://lake\" }}\ntasks:\n{tasks}", db.store()));
    p
}

/// A project reading `extract` (the keys of a database extract) from `db` into `lake/out`.
pub(crate) fn project(db: &dyn TestDb, extract: &str) -> Project {
    project_with(
        db,
        &format!(
            "  src:\n    extract: {{ store: app, {extract} }}\n  out:\n    load: {{ from: src, store: lake, path: out/ }}\n"
        ),
    )
}

/// Rows of `lake/out`, each as `col=value` pairs in column order, sorted.
pub(crate) fn rows_of(p: &Project, cols: &[&str]) -> Vec<String> {
    let mut rows: Vec<String> = read_rows(&p.join("lake/out"))
        .iter()
        .map(|r| {
            cols.iter().map(|c| format!("{c}={}", r.get(*c).cloned().unwrap_or_default())).collect::<Vec<_>>().join(" ")
        })
        .collect();
    rows.sort();
    rows
}

/// The report of `task` in a `weir run --json` output.
pub(crate) fn task_report(stdout: &str, task: &str) -> serde_json::Value {
    let report: serde_json::Value = serde_json::from_str(stdout).unwrap();
    report["tasks"].as_array().unwrap().iter().find(|t| t["name"] == task).unwrap().clone()
}

/// The lines of `sql`'s output, sorted.
pub(crate) fn sorted_lines(db: &dyn TestDb, sql: &str) -> Vec<String> {
    let mut lines: Vec<String> = db.sql(sql).lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// No file weir wrote under `p` (the pipeline file aside) holds `secret`.
pub(crate) fn assert_no_file_holds(p: &Project, secret: &str) {
    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else if path.file_name().is_some_and(|n| n != "p.yaml") {
                out.push(path);
            }
        }
        out
    }
    for entry in walk(p.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{} holds the password", entry.display());
    }
}

/// kill -9 at each step of a watermark run (the snapshot held, the data files staged, just
/// before and just after the publish, after the state store) and a rerun: every row of the
/// table `ev` (`id`, `v`, `at`, 100 rows) is in the output once, with its newest values.
/// `change(base, from, to)` is the server's SQL that bumps `v` of every tenth row with the
/// cursor `at = base` and inserts the ids `from..=to` with cursors past `base`; `rows` selects
/// each row of `ev` as `id=… v=…`.
pub(crate) fn killed_watermark_runs_lose_and_double_nothing(
    db: &dyn TestDb,
    change: impl Fn(usize, usize, usize) -> String,
    rows: &str,
) {
    let p = project_with(
        db,
        "  src:\n    extract: { store: app, table: ev, incremental: { watermark: { column: at } } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id] }\n",
    );
    db.run_weir(&p, &["run", "p.yaml"]).ok();
    let mut next = 100;
    for (k, point) in
        ["source_snapshot", "after_data_files", "before_publish", "after_publish_before_state", "after_state"]
            .into_iter()
            .enumerate()
    {
        // Some updates and some new rows, each with a cursor past the watermark.
        db.sql(&change(10_000 * (k + 1), next + 1, next + 5));
        next += 5;
        let r = p.weir_env(&["run", "p.yaml"], &[db.password_env(), ("WEIR_FAILPOINT", &format!("{point}=kill"))]);
        assert_ne!(r.code, 0, "{point}: the run was killed");
        db.run_weir(&p, &["run", "p.yaml"]).ok();
        assert_eq!(rows_of(&p, &["id", "v"]), sorted_lines(db, rows), "after a kill at {point}");
    }
}
