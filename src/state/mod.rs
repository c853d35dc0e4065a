//! `state`: the embedded SQLite store of runs and task runs, with versioned migrations and
//! a per-pipeline run lock. WAL mode and a busy timeout let several `weir` processes share
//! one file. It also caches each load's consumed state (file ledger, watermarks); the source
//! of truth for that is the load's output (its commit records), and the cache is reconciled
//! with it at the start of every run.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::sink::commit::{CommitRecord, LedgerEntry, LoadState, WatermarkValue};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("state store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state store {path} has schema version {found}, newer than this weir understands ({known}); upgrade weir")]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error(
        "pipeline `{pipeline}` is already running (run {run_id}, process {pid} on {host}, since {since}); wait for it to finish"
    )]
    Locked { pipeline: String, run_id: String, pid: i64, host: String, since: String },
    #[error("cannot create {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: runs and task runs
    "CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        pipeline TEXT NOT NULL,
        status TEXT NOT NULL,
        logical_date TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        error TEXT,
        pid INTEGER,
        host TEXT
    );
    CREATE INDEX runs_by_pipeline ON runs (pipeline, started_at);
    CREATE TABLE task_runs (
        run_id TEXT NOT NULL REFERENCES runs (run_id),
        task TEXT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        started_at TEXT,
        finished_at TEXT,
        rows_in INTEGER,
        rows_out INTEGER,
        bytes_read INTEGER,
        bytes_written INTEGER,
        files INTEGER,
        error TEXT,
        note TEXT,
        PRIMARY KEY (run_id, task)
    );
    CREATE TABLE locks (
        pipeline TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        acquired_at TEXT NOT NULL
    );",
    // 2: a cache of what each load's output says it consumed (its commit records)
    "CREATE TABLE load_commits (
        pipeline TEXT NOT NULL,
        load TEXT NOT NULL,
        seq INTEGER NOT NULL,
        run_id TEXT,
        committed_at TEXT,
        PRIMARY KEY (pipeline, load)
    );
    CREATE TABLE ledger (
        pipeline TEXT NOT NULL,
        load TEXT NOT NULL,
        extract TEXT NOT NULL,
        store TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        last_modified TEXT NOT NULL,
        e_tag TEXT,
        PRIMARY KEY (pipeline, load, extract, store, path)
    );
    CREATE TABLE watermarks (
        pipeline TEXT NOT NULL,
        load TEXT NOT NULL,
        extract TEXT NOT NULL,
        column_name TEXT NOT NULL,
        data_type TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (pipeline, load, extract)
    );",
    // 3: check results
    "CREATE TABLE check_results (
        run_id TEXT NOT NULL,
        task TEXT NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        status TEXT NOT NULL,
        failing INTEGER NOT NULL,
        checked INTEGER NOT NULL,
        message TEXT NOT NULL,
        samples TEXT NOT NULL,
        PRIMARY KEY (run_id, task, name)
    );",
    // 4: the daemon's scheduled ticks and alerts
    "CREATE TABLE ticks (
        pipeline TEXT NOT NULL,
        tick_at TEXT NOT NULL,
        action TEXT NOT NULL,
        run_id TEXT,
        recorded_at TEXT NOT NULL,
        PRIMARY KEY (pipeline, tick_at)
    );
    CREATE TABLE watched (
        pipeline TEXT PRIMARY KEY,
        first_seen TEXT NOT NULL,
        health TEXT NOT NULL DEFAULT 'ok',
        stale_alerted_for TEXT
    );
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pipeline TEXT NOT NULL,
        event TEXT NOT NULL,
        run_id TEXT,
        created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        error TEXT
    );
    CREATE INDEX alerts_by_pipeline ON alerts (pipeline, created_at);",
    // 5: schemas compile inferred from input files (see `source::SchemaCache`)
    "CREATE TABLE schema_cache (
        key TEXT PRIMARY KEY,
        schema BLOB NOT NULL,
        used_at TEXT NOT NULL
    );",
    // 6: durable alerts (one row per alert and webhook, delivered apart from runs), what the
    // daemon knows of a pipeline's freshness when its file is gone or broken, and process
    // identity by start time (a pid alone may be a zombie or reused)
    "ALTER TABLE alerts ADD COLUMN hook TEXT;
    ALTER TABLE alerts ADD COLUMN body TEXT;
    ALTER TABLE alerts ADD COLUMN next_attempt_at TEXT;
    ALTER TABLE alerts ADD COLUMN finished_at TEXT;
    UPDATE alerts SET status = 'failed', error = 'lost: written by an older weir that did not keep alerts to retry' WHERE status = 'sending';
    CREATE INDEX alerts_due ON alerts (status, next_attempt_at);
    ALTER TABLE watched ADD COLUMN warn_after_ms INTEGER;
    ALTER TABLE watched ADD COLUMN remind_every_ms INTEGER;
    ALTER TABLE runs ADD COLUMN pid_start INTEGER;
    ALTER TABLE locks ADD COLUMN pid_start INTEGER;",
];

pub struct StateStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore").field("path", &self.path).finish()
    }
}

/// One row of `runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub status: String,
    pub logical_date: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

/// One row of `check_results`. `samples` is a JSON array of up to five failing rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckRecord {
    pub run_id: String,
    pub task: String,
    pub name: String,
    pub kind: String,
    pub severity: String,
    pub status: String,
    pub failing: u64,
    pub checked: u64,
    pub message: String,
    pub samples: String,
}

/// One row of `task_runs`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskRecord {
    pub run_id: String,
    pub task: String,
    pub kind: String,
    pub status: String,
    pub attempts: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub rows_in: Option<u64>,
    pub rows_out: Option<u64>,
    pub bytes_read: Option<u64>,
    pub bytes_written: Option<u64>,
    pub files: Option<u64>,
    pub error: Option<String>,
    pub note: Option<String>,
}

/// One row of `ticks`: a scheduled tick the daemon handled, and what it did with it
/// (`ran`, `queued`, `skipped: …`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TickRecord {
    pub pipeline: String,
    pub tick_at: String,
    pub action: String,
    pub run_id: Option<String>,
    pub recorded_at: String,
}

/// One row of `alerts`: one alert to one webhook. `status` is `pending` (to be delivered,
/// at `next_attempt_at`), `delivered` or `failed` (every attempt used).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertRecord {
    pub id: i64,
    pub pipeline: String,
    pub event: String,
    pub run_id: Option<String>,
    pub created_at: String,
    pub attempts: u32,
    pub status: String,
    pub error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub finished_at: Option<String>,
}

/// An alert waiting for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAlert {
    pub id: i64,
    pub pipeline: String,
    pub event: String,
    /// Which webhook: a fingerprint of its URL (never the URL).
    pub hook: String,
    /// The JSON body, secrets already removed.
    pub body: String,
    pub attempts: u32,
}

/// What the daemon remembers about a pipeline it watches.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    pub first_seen: String,
    /// `ok`, `failing` or `stale`: what the last alert-worthy event said.
    pub health: String,
    /// The silence a `stale` alert was sent for (the last success, or `first_seen`).
    pub stale_alerted_for: Option<String>,
    /// The freshness window of the pipeline's last valid version, kept for when its file is
    /// gone or broken.
    pub warn_after: Option<Duration>,
    pub remind_every: Option<Duration>,
}

fn run_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        run_id: r.get(0)?,
        pipeline: r.get(1)?,
        status: r.get(2)?,
        logical_date: r.get(3)?,
        started_at: r.get(4)?,
        finished_at: r.get(5)?,
        error: r.get(6)?,
    })
}

/// Timestamps are stored as RFC 3339 UTC text with microseconds: sortable as text.
pub fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn host() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// A process's start time (clock ticks since boot, from `/proc/<pid>/stat`) and whether it
/// is a zombie; `None` where `/proc` does not tell.
fn proc_stat(pid: i64) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses; fields follow the last `)`.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = matches!(fields.first(), Some(&"Z") | Some(&"X"));
    // starttime is field 22 of the line, the 20th after the state.
    let start = fields.get(19)?.parse().ok()?;
    Some((start, zombie))
}

/// This process's start time, recorded beside its pid.
pub fn own_start() -> Option<i64> {
    proc_stat(std::process::id() as i64).map(|(s, _)| s as i64)
}

/// Whether the process `pid` that started at `start` (when known) still runs. A zombie (killed,
/// not yet reaped by its parent) does not run; a process with this pid but another start time
/// is another process.
fn process_alive(pid: i64, start: Option<i64>) -> bool {
    if let Some((started, zombie)) = proc_stat(pid) {
        return !zombie && start.is_none_or(|s| s as u64 == started);
    }
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

impl StateStore {
    /// Open (creating if needed) the state store at `path`.
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StateError::Dir { path: dir.to_path_buf(), source: e })?;
        }
        let open_err = |e| StateError::Open { path: path.to_path_buf(), source: e };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        let store = StateStore { path: path.to_path_buf(), conn: Mutex::new(conn) };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn migrate(&self) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StateError::TooNew { path: self.path.clone(), found: version, known });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Take the run lock of `pipeline` for `run_id`. A lock held by a process that no longer
    /// exists (on this host) is taken over, and its run is recorded as abandoned.
    pub fn lock(&self, pipeline: &str, run_id: &str) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let held: Option<(String, i64, String, String, Option<i64>)> = tx
            .query_row(
                "SELECT run_id, pid, host, acquired_at, pid_start FROM locks WHERE pipeline = ?1",
                [pipeline],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        if let Some((other, pid, h, since, start)) = held {
            let stale = h == host() && !process_alive(pid, start);
            if !stale {
                return Err(StateError::Locked { pipeline: pipeline.to_string(), run_id: other, pid, host: h, since });
            }
            tx.execute(
                "UPDATE runs SET status = 'abandoned', finished_at = ?2, error = 'the process running it stopped' WHERE run_id = ?1 AND status = 'running'",
                params![other, now_text()],
            )?;
            tx.execute("UPDATE ticks SET action = 'abandoned' WHERE run_id = ?1 AND action = 'ran'", [&other])?;
            tx.execute("DELETE FROM locks WHERE pipeline = ?1", [pipeline])?;
        }
        tx.execute(
            "INSERT INTO locks (pipeline, run_id, pid, host, acquired_at, pid_start) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![pipeline, run_id, std::process::id() as i64, host(), now_text(), own_start()],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn unlock(&self, pipeline: &str, run_id: &str) -> Result<(), StateError> {
        self.conn().execute("DELETE FROM locks WHERE pipeline = ?1 AND run_id = ?2", params![pipeline, run_id])?;
        Ok(())
    }

    pub fn run_started(&self, run_id: &str, pipeline: &str, logical_date: &str) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO runs (run_id, pipeline, status, logical_date, started_at, pid, host, pid_start) VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7)",
            params![run_id, pipeline, logical_date, now_text(), std::process::id() as i64, host(), own_start()],
        )?;
        Ok(())
    }

    pub fn run_finished(&self, run_id: &str, status: &str, error: Option<&str>) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE runs SET status = ?2, finished_at = ?3, error = ?4 WHERE run_id = ?1",
            params![run_id, status, now_text(), error],
        )?;
        Ok(())
    }

    /// Insert or replace a task run record.
    pub fn record_task(&self, t: &TaskRecord) -> Result<(), StateError> {
        let n = |x: Option<u64>| x.map(|v| v as i64);
        self.conn().execute(
            "INSERT OR REPLACE INTO task_runs (run_id, task, kind, status, attempts, started_at, finished_at, rows_in, rows_out, bytes_read, bytes_written, files, error, note)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                t.run_id, t.task, t.kind, t.status, t.attempts, t.started_at, t.finished_at,
                n(t.rows_in), n(t.rows_out), n(t.bytes_read), n(t.bytes_written), n(t.files), t.error, t.note
            ],
        )?;
        Ok(())
    }

    /// Record the check results of a task run (replacing earlier ones of the same run).
    pub fn record_checks(&self, records: &[CheckRecord]) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for c in records {
            tx.execute(
                "INSERT OR REPLACE INTO check_results (run_id, task, name, kind, severity, status, failing, checked, message, samples)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    c.run_id, c.task, c.name, c.kind, c.severity, c.status, c.failing as i64, c.checked as i64,
                    c.message, c.samples
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The check results of a run, by task and in the order they were recorded.
    pub fn checks(&self, run_id: &str) -> Result<Vec<CheckRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT run_id, task, name, kind, severity, status, failing, checked, message, samples
             FROM check_results WHERE run_id = ?1 ORDER BY task, rowid",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(CheckRecord {
                run_id: r.get(0)?,
                task: r.get(1)?,
                name: r.get(2)?,
                kind: r.get(3)?,
                severity: r.get(4)?,
                status: r.get(5)?,
                failing: r.get::<_, i64>(6)?.max(0) as u64,
                checked: r.get::<_, i64>(7)?.max(0) as u64,
                message: r.get(8)?,
                samples: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The consumed state of a load as last cached, if any.
    pub fn load_state(&self, pipeline: &str, load: &str) -> Result<Option<LoadState>, StateError> {
        let conn = self.conn();
        let head: Option<(i64, Option<String>, Option<String>)> = conn
            .query_row(
                "SELECT seq, run_id, committed_at FROM load_commits WHERE pipeline = ?1 AND load = ?2",
                params![pipeline, load],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((seq, run_id, committed_at)) = head else { return Ok(None) };
        let mut state = LoadState { seq: seq as u64, run_id, committed_at, ..Default::default() };
        let mut stmt = conn.prepare_cached(
            "SELECT extract, store, path, size, last_modified, e_tag FROM ledger WHERE pipeline = ?1 AND load = ?2",
        )?;
        let rows = stmt.query_map(params![pipeline, load], |r| {
            Ok((
                r.get::<_, String>(0)?,
                LedgerEntry {
                    store: r.get(1)?,
                    path: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    last_modified: r.get(4)?,
                    e_tag: r.get(5)?,
                },
            ))
        })?;
        for row in rows {
            let (extract, e) = row?;
            state.extracts.entry(extract).or_default().files.insert((e.store.clone(), e.path.clone()), e);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT extract, column_name, data_type, value FROM watermarks WHERE pipeline = ?1 AND load = ?2",
        )?;
        let rows = stmt.query_map(params![pipeline, load], |r| {
            Ok((r.get::<_, String>(0)?, WatermarkValue { column: r.get(1)?, data_type: r.get(2)?, value: r.get(3)? }))
        })?;
        for row in rows {
            let (extract, w) = row?;
            state.extracts.entry(extract).or_default().watermark = Some(w);
        }
        Ok(Some(state))
    }

    /// Replace the cached state of a load (after reading it from the output's records).
    pub fn replace_load_state(&self, pipeline: &str, load: &str, state: &LoadState) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM ledger WHERE pipeline = ?1 AND load = ?2", params![pipeline, load])?;
        tx.execute("DELETE FROM watermarks WHERE pipeline = ?1 AND load = ?2", params![pipeline, load])?;
        tx.execute("DELETE FROM load_commits WHERE pipeline = ?1 AND load = ?2", params![pipeline, load])?;
        if state.seq > 0 {
            tx.execute(
                "INSERT INTO load_commits (pipeline, load, seq, run_id, committed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![pipeline, load, state.seq as i64, state.run_id, state.committed_at],
            )?;
            for (extract, e) in &state.extracts {
                insert_extract_state(
                    &tx,
                    pipeline,
                    load,
                    extract,
                    &e.files.values().cloned().collect::<Vec<_>>(),
                    e.watermark.as_ref(),
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Apply a load's new commit to the cache (after it was published).
    pub fn record_commit(&self, r: &CommitRecord) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (p, l) = (r.pipeline.as_str(), r.load.as_str());
        if r.checkpoint {
            tx.execute("DELETE FROM ledger WHERE pipeline = ?1 AND load = ?2", params![p, l])?;
            tx.execute("DELETE FROM watermarks WHERE pipeline = ?1 AND load = ?2", params![p, l])?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO load_commits (pipeline, load, seq, run_id, committed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![p, l, r.seq as i64, r.run_id, r.committed_at],
        )?;
        for (extract, c) in &r.extracts {
            insert_extract_state(&tx, p, l, extract, &c.files, c.watermark.as_ref())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The latest runs, newest first, optionally of one pipeline.
    pub fn runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT run_id, pipeline, status, logical_date, started_at, finished_at, error FROM runs
             WHERE ?1 IS NULL OR pipeline = ?1 ORDER BY started_at DESC, run_id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![pipeline, limit as i64], run_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT run_id, pipeline, status, logical_date, started_at, finished_at, error FROM runs WHERE run_id = ?1",
                [run_id],
                run_record,
            )
            .optional()?)
    }

    /// Task runs of a run, in start order.
    pub fn tasks(&self, run_id: &str) -> Result<Vec<TaskRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT run_id, task, kind, status, attempts, started_at, finished_at, rows_in, rows_out, bytes_read, bytes_written, files, error, note
             FROM task_runs WHERE run_id = ?1 ORDER BY started_at IS NULL, started_at, task",
        )?;
        let u = |v: Option<i64>| v.map(|x| x as u64);
        let rows = stmt.query_map([run_id], |r| {
            Ok(TaskRecord {
                run_id: r.get(0)?,
                task: r.get(1)?,
                kind: r.get(2)?,
                status: r.get(3)?,
                attempts: r.get(4)?,
                started_at: r.get(5)?,
                finished_at: r.get(6)?,
                rows_in: u(r.get(7)?),
                rows_out: u(r.get(8)?),
                bytes_read: u(r.get(9)?),
                bytes_written: u(r.get(10)?),
                files: u(r.get(11)?),
                error: r.get(12)?,
                note: r.get(13)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The daemon's records: ticks, watched pipelines, alerts.
impl StateStore {
    /// Record what was done with a scheduled tick (the first record of a tick wins, except that
    /// `queued` is replaced by what happened to it).
    pub fn record_tick(
        &self,
        pipeline: &str,
        tick_at: &str,
        action: &str,
        run_id: Option<&str>,
    ) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO ticks (pipeline, tick_at, action, run_id, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (pipeline, tick_at) DO UPDATE SET action = excluded.action, run_id = excluded.run_id, recorded_at = excluded.recorded_at
             WHERE ticks.action IN ('queued', 'abandoned')",
            params![pipeline, tick_at, action, run_id, now_text()],
        )?;
        Ok(())
    }

    /// The newest tick of `pipeline` the daemon handled: ticks still `queued` or whose run
    /// was `abandoned` (the daemon stopped) do not count, so catch-up sees them as missed.
    pub fn last_tick(&self, pipeline: &str) -> Result<Option<String>, StateError> {
        Ok(self.conn().query_row(
            "SELECT max(tick_at) FROM ticks WHERE pipeline = ?1 AND action NOT IN ('queued', 'abandoned')",
            [pipeline],
            |r| r.get(0),
        )?)
    }

    /// The latest ticks, newest first.
    pub fn ticks(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<TickRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT pipeline, tick_at, action, run_id, recorded_at FROM ticks
             WHERE ?1 IS NULL OR pipeline = ?1 ORDER BY tick_at DESC, pipeline LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![pipeline, limit as i64], |r| {
            Ok(TickRecord {
                pipeline: r.get(0)?,
                tick_at: r.get(1)?,
                action: r.get(2)?,
                run_id: r.get(3)?,
                recorded_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The pipeline's watch record, created (first seen now) if new.
    pub fn watched(&self, pipeline: &str) -> Result<Watched, StateError> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR IGNORE INTO watched (pipeline, first_seen) VALUES (?1, ?2)",
            params![pipeline, now_text()],
        )?;
        Ok(conn.query_row(
            "SELECT first_seen, health, stale_alerted_for, warn_after_ms, remind_every_ms FROM watched WHERE pipeline = ?1",
            [pipeline],
            |r| {
                let ms = |v: Option<i64>| v.map(|m| Duration::from_millis(m.max(0) as u64));
                Ok(Watched {
                    first_seen: r.get(0)?,
                    health: r.get(1)?,
                    stale_alerted_for: r.get(2)?,
                    warn_after: ms(r.get(3)?),
                    remind_every: ms(r.get(4)?),
                })
            },
        )?)
    }

    /// Every pipeline the daemon has watched, by name.
    pub fn watched_pipelines(&self) -> Result<Vec<String>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT pipeline FROM watched ORDER BY pipeline")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Remember the freshness window of the pipeline's valid version (`None`: it has none).
    pub fn set_freshness(
        &self,
        pipeline: &str,
        warn_after: Option<Duration>,
        remind_every: Option<Duration>,
    ) -> Result<(), StateError> {
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis().min(i64::MAX as u128) as i64);
        self.conn().execute(
            "UPDATE watched SET warn_after_ms = ?2, remind_every_ms = ?3 WHERE pipeline = ?1",
            params![pipeline, ms(warn_after), ms(remind_every)],
        )?;
        Ok(())
    }

    pub fn set_health(&self, pipeline: &str, health: &str, stale_alerted_for: Option<&str>) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE watched SET health = ?2, stale_alerted_for = ?3 WHERE pipeline = ?1",
            params![pipeline, health, stale_alerted_for],
        )?;
        Ok(())
    }

    /// When the pipeline's last successful run finished.
    pub fn last_success(&self, pipeline: &str) -> Result<Option<String>, StateError> {
        Ok(self.conn().query_row(
            "SELECT max(finished_at) FROM runs WHERE pipeline = ?1 AND status = 'succeeded'",
            [pipeline],
            |r| r.get(0),
        )?)
    }

    /// Runs left `running` by a process that no longer exists (a daemon killed with -9) and
    /// holding no lock: recorded as abandoned. Returns their ids.
    pub fn abandon_orphans(&self, pipeline: &str) -> Result<Vec<String>, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let running: Vec<(String, Option<i64>, Option<String>, Option<i64>)> = {
            let mut stmt =
                tx.prepare("SELECT run_id, pid, host, pid_start FROM runs WHERE pipeline = ?1 AND status = 'running'")?;
            let rows = stmt.query_map([pipeline], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let me = host();
        let mut out = Vec::new();
        for (run_id, pid, h, start) in running {
            let dead = h.as_deref() == Some(me.as_str()) && pid.is_none_or(|p| !process_alive(p, start));
            if dead {
                tx.execute(
                    "UPDATE runs SET status = 'abandoned', finished_at = ?2, error = 'the process running it stopped' WHERE run_id = ?1",
                    params![run_id, now_text()],
                )?;
                tx.execute(
                    "UPDATE task_runs SET status = 'abandoned' WHERE run_id = ?1 AND status = 'running'",
                    [&run_id],
                )?;
                tx.execute("DELETE FROM locks WHERE pipeline = ?1 AND run_id = ?2", params![pipeline, run_id])?;
                tx.execute("UPDATE ticks SET action = 'abandoned' WHERE run_id = ?1 AND action = 'ran'", [&run_id])?;
                out.push(run_id);
            }
        }
        tx.execute(
            "UPDATE ticks SET action = 'abandoned' WHERE pipeline = ?1 AND action = 'ran' AND run_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.run_id = ticks.run_id)",
            [pipeline],
        )?;
        tx.commit()?;
        Ok(out)
    }

    /// Queue an alert for one webhook (`hook`: a fingerprint of its URL); it is delivered by
    /// the daemon's outbox, now and after restarts, until delivered or out of attempts.
    pub fn alert_queued(
        &self,
        pipeline: &str,
        event: &str,
        run_id: Option<&str>,
        hook: &str,
        body: &str,
    ) -> Result<i64, StateError> {
        let conn = self.conn();
        let now = now_text();
        conn.execute(
            "INSERT INTO alerts (pipeline, event, run_id, created_at, status, hook, body, next_attempt_at) VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?4)",
            params![pipeline, event, run_id, now, hook, body],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Alerts due for an attempt at `now` (oldest first), at most `limit`, except those in
    /// `busy` (being delivered).
    pub fn alerts_due(&self, now: &str, limit: usize, busy: &[i64]) -> Result<Vec<PendingAlert>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, pipeline, event, hook, body, attempts FROM alerts
             WHERE status = 'pending' AND body IS NOT NULL AND next_attempt_at <= ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, (limit + busy.len()) as i64], |r| {
            Ok(PendingAlert {
                id: r.get(0)?,
                pipeline: r.get(1)?,
                event: r.get(2)?,
                hook: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                body: r.get(4)?,
                attempts: r.get(5)?,
            })
        })?;
        let mut out: Vec<PendingAlert> = rows.collect::<Result<_, _>>()?;
        out.retain(|a| !busy.contains(&a.id));
        out.truncate(limit);
        Ok(out)
    }

    /// When the next pending alert is due, if any.
    pub fn next_alert_due(&self) -> Result<Option<String>, StateError> {
        Ok(self.conn().query_row(
            "SELECT min(next_attempt_at) FROM alerts WHERE status = 'pending' AND body IS NOT NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// The outcome of an attempt: `delivered`, `failed` (no attempts left), or `pending` again
    /// at `next_attempt_at`.
    pub fn alert_attempted(
        &self,
        id: i64,
        attempts: u32,
        status: &str,
        error: Option<&str>,
        next_attempt_at: Option<&str>,
    ) -> Result<(), StateError> {
        let finished = (status != "pending").then(now_text);
        self.conn().execute(
            "UPDATE alerts SET attempts = ?2, status = ?3, error = ?4, next_attempt_at = ?5, finished_at = ?6 WHERE id = ?1",
            params![id, attempts, status, error, next_attempt_at, finished],
        )?;
        Ok(())
    }

    /// The newest `stale` alerts of `pipeline` queued for the silence that began at `since`:
    /// (status, created_at, finished_at).
    pub fn stale_alerts(
        &self,
        pipeline: &str,
        since: &str,
    ) -> Result<Vec<(String, String, Option<String>)>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT status, created_at, finished_at FROM alerts
             WHERE pipeline = ?1 AND event = 'stale' AND created_at >= ?2 ORDER BY id DESC",
        )?;
        let rows = stmt.query_map(params![pipeline, since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn alerts(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<AlertRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, pipeline, event, run_id, created_at, attempts, status, error, next_attempt_at, finished_at FROM alerts
             WHERE ?1 IS NULL OR pipeline = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![pipeline, limit as i64], |r| {
            Ok(AlertRecord {
                id: r.get(0)?,
                pipeline: r.get(1)?,
                event: r.get(2)?,
                run_id: r.get(3)?,
                created_at: r.get(4)?,
                attempts: r.get(5)?,
                status: r.get(6)?,
                error: r.get(7)?,
                next_attempt_at: r.get(8)?,
                finished_at: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The process holding `pipeline`'s run lock, when it is not this one and still runs:
    /// (run id, pid).
    pub fn lock_holder(&self, pipeline: &str) -> Result<Option<(String, i64)>, StateError> {
        let held: Option<(String, i64, String, Option<i64>)> = self
            .conn()
            .query_row("SELECT run_id, pid, host, pid_start FROM locks WHERE pipeline = ?1", [pipeline], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        Ok(held
            .filter(|(_, pid, h, start)| {
                *pid != std::process::id() as i64 && (*h != host() || process_alive(*pid, *start))
            })
            .map(|(run, pid, _, _)| (run, pid)))
    }

    /// Set what was done with a tick, whatever was recorded before.
    pub fn retag_tick(
        &self,
        pipeline: &str,
        tick_at: &str,
        action: &str,
        run_id: Option<&str>,
    ) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE ticks SET action = ?3, run_id = ?4, recorded_at = ?5 WHERE pipeline = ?1 AND tick_at = ?2",
            params![pipeline, tick_at, action, run_id, now_text()],
        )?;
        Ok(())
    }
}

fn insert_extract_state(
    tx: &rusqlite::Transaction<'_>,
    pipeline: &str,
    load: &str,
    extract: &str,
    files: &[LedgerEntry],
    watermark: Option<&WatermarkValue>,
) -> Result<(), StateError> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO ledger (pipeline, load, extract, store, path, size, last_modified, e_tag) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for f in files {
        stmt.execute(params![pipeline, load, extract, f.store, f.path, f.size as i64, f.last_modified, f.e_tag])?;
    }
    if let Some(w) = watermark {
        tx.execute(
            "INSERT OR REPLACE INTO watermarks (pipeline, load, extract, column_name, data_type, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![pipeline, load, extract, w.column, w.data_type, w.value],
        )?;
    }
    Ok(())
}

/// Inferred schemas, for compile. Entries not used for 30 days are dropped when new ones come.
impl crate::source::SchemaCache for StateStore {
    fn schema(&self, key: &str) -> Option<Vec<u8>> {
        let conn = self.conn();
        let found: Option<Vec<u8>> =
            conn.query_row("SELECT schema FROM schema_cache WHERE key = ?1", [key], |r| r.get(0)).ok();
        if found.is_some() {
            let _ = conn.execute("UPDATE schema_cache SET used_at = ?2 WHERE key = ?1", params![key, now_text()]);
        }
        found
    }

    fn put_schema(&self, key: &str, schema: &[u8]) {
        let conn = self.conn();
        let now = now_text();
        let _ = conn.execute(
            "INSERT OR REPLACE INTO schema_cache (key, schema, used_at) VALUES (?1, ?2, ?3)",
            params![key, schema, now],
        );
        let cutoff =
            (chrono::Utc::now() - chrono::Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let _ = conn.execute("DELETE FROM schema_cache WHERE used_at < ?1", [cutoff]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_runs_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("x/state.db")).unwrap();
        s.lock("p", "r1").unwrap();
        s.run_started("r1", "p", "2026-01-01").unwrap();
        // a second run of the same pipeline by a live process is refused
        let e = s.lock("p", "r2").unwrap_err();
        assert!(e.to_string().contains("already running (run r1"), "{e}");
        s.record_task(&TaskRecord {
            run_id: "r1".into(),
            task: "t".into(),
            kind: "load".into(),
            status: "succeeded".into(),
            rows_out: Some(5),
            ..Default::default()
        })
        .unwrap();
        s.run_finished("r1", "succeeded", None).unwrap();
        s.unlock("p", "r1").unwrap();
        s.lock("p", "r2").unwrap();
        assert_eq!(s.runs(Some("p"), 10).unwrap()[0].status, "succeeded");
        assert_eq!(s.tasks("r1").unwrap()[0].rows_out, Some(5));
        // reopening applies no migration twice
        drop(s);
        let s = StateStore::open(&dir.path().join("x/state.db")).unwrap();
        assert_eq!(s.runs(None, 10).unwrap().len(), 1);
    }

    #[test]
    fn stale_lock_of_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state.db")).unwrap();
        s.run_started("old", "p", "2026-01-01").unwrap();
        s.conn()
            .execute(
                "INSERT INTO locks (pipeline, run_id, pid, host, acquired_at) VALUES ('p', 'old', 999999999, ?1, '2026-01-01T00:00:00Z')",
                [host()],
            )
            .unwrap();
        s.lock("p", "new").unwrap();
        assert_eq!(s.run("old").unwrap().unwrap().status, "abandoned");
    }

    /// A pid that exists but started at another time is another process (the pid was reused):
    /// its lock is stale. This process, with its own start time, is alive.
    #[test]
    fn a_reused_pid_is_not_the_process_that_took_the_lock() {
        let me = std::process::id() as i64;
        let start = own_start();
        assert!(start.is_some(), "/proc tells this process's start time");
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start.map(|s| s + 1)));
        assert!(!process_alive(999_999_999, None));
    }
}
