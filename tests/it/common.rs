//! Helpers: run the real `weir` binary in a scratch project, read back what it wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub fn weir_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weir")
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory holding a pipeline project.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        Project { dir: tempfile::Builder::new().prefix("weir-it-").tempdir().expect("tempdir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write a file (parents created).
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Copy a directory of the repository into the project.
    pub fn copy_from_repo(&self, from: &str, to: &str) {
        copy_dir(&repo().join(from), &self.join(to));
    }

    /// Run `weir ARGS` with the project as working directory.
    pub fn weir(&self, args: &[&str]) -> Run {
        self.weir_env(args, &[])
    }

    pub fn weir_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run weir"))
    }

    /// Wait (at most 20 s) until a run of a pipeline in the project is recorded as running:
    /// from then on it holds the pipeline's lock.
    pub fn wait_until_running(&self) {
        let t = std::time::Instant::now();
        loop {
            if self.weir(&["runs", "--dir", ".", "--json"]).stdout.contains("\"running\"") {
                return;
            }
            assert!(t.elapsed().as_secs() < 20, "the run never started");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Start `weir ARGS`, SIGKILL it after `delay` (if it is still running), and wait for it.
    pub fn weir_killed_after(&self, args: &[&str], delay: std::time::Duration) {
        self.weir_killed_after_env(args, delay, &[]);
    }

    /// [`Project::weir_killed_after`] with environment variables.
    pub fn weir_killed_after_env(&self, args: &[&str], delay: std::time::Duration, env: &[(&str, &str)]) {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child =
            cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().expect("start weir");
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }

    /// `weir ARGS` in the project, without weir's variables from the caller's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(weir_bin());
        cmd.args(args)
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("WEIR_FAILPOINT");
        for var in [
            "OPENLINEAGE_URL",
            "OPENLINEAGE_ENDPOINT",
            "OPENLINEAGE_API_KEY",
            "OPENLINEAGE_NAMESPACE",
            "OPENLINEAGE_DISABLED",
            "WEIR_OPENLINEAGE_FILE",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        // what runs in the working tree leave behind is not part of the project
        if matches!(e.file_name().to_str(), Some(".weir" | "out" | "lake")) {
            continue;
        }
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "weir failed\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }
}

/// Every Parquet file under `dir` (recursively, skipping hidden and `_` files), sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else if name.ends_with(".parquet") {
                out.push(e.path());
            }
        }
    }
    walk(dir, &mut out);
    out.sort();
    out
}

/// All rows of the Parquet files under `dir`, with hive partition values (`k=v` directory
/// names) added as text columns. Read with the `parquet` crate directly, not through weir.
pub fn read_rows(dir: &Path) -> Vec<BTreeMap<String, String>> {
    try_read_rows(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
}

/// Like [`read_rows`], but a file that disappears between listing and opening (a publish
/// swapped the directory) is an `Err`. A file that is there but unreadable still panics:
/// that would be a partial file.
pub fn try_read_rows(dir: &Path) -> Result<Vec<BTreeMap<String, String>>, std::io::Error> {
    let mut rows = Vec::new();
    for f in parquet_files(dir) {
        let partitions: Vec<(String, String)> = f
            .strip_prefix(dir)
            .unwrap()
            .parent()
            .map(|p| {
                p.components()
                    .filter_map(|c| {
                        c.as_os_str().to_str()?.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let file = std::fs::File::open(&f)?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap_or_else(|e| panic!("{} is not a whole Parquet file: {e}", f.display()))
            .build()
            .unwrap();
        for batch in reader {
            for mut row in batch_rows(&batch.unwrap()) {
                for (k, v) in &partitions {
                    row.insert(k.clone(), v.clone());
                }
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// Column names and Arrow types of the first Parquet file under `dir`.
pub fn parquet_schema(dir: &Path) -> Vec<(String, String)> {
    let f = parquet_files(dir).into_iter().next().expect("a parquet file");
    let file = std::fs::File::open(f).unwrap();
    let b = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    b.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect()
}

/// Python with duckdb, pyarrow, pandas and polars (.ci/requirements.txt), when the environment provides one (`WEIR_TEST_PYTHON`).
/// In CI (`CI` set) it is required.
pub fn test_python() -> Option<String> {
    match std::env::var("WEIR_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but WEIR_TEST_PYTHON is not: .ci/run must provide a Python with duckdb and pyarrow");
            }
            eprintln!("skipping: set WEIR_TEST_PYTHON to a python with duckdb and pyarrow to run this test");
            None
        }
    }
}

/// Remove what varies between runs (run ids, timings, temp paths) from CLI output.
pub fn normalize(text: &str, project: &Path) -> String {
    let mut s = text.replace(&project.display().to_string(), "[PROJECT]");
    let patterns = [
        (r"\d{8}T\d{6}Z-[0-9a-f]{8}", "[RUN_ID]"),
        (r"\d+(\.\d+)? (ms|s)\b", "[TIME]"),
        (r"\d+m \d{2}s", "[TIME]"),
        (r"\d+(\.\d+)? (B|KB|MB|GB)\b", "[BYTES]"),
    ];
    for (p, r) in patterns {
        s = regex::Regex::new(p).unwrap().replace_all(&s, r).into_owned();
    }
    s
}

/// All rows of the current version of the Delta table at `dir`, read through `deltalake`'s
/// own table provider (which follows the Delta log: removed and uncommitted files are not read).
pub fn read_delta_rows(dir: &Path) -> Vec<BTreeMap<String, String>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url = url::Url::from_directory_path(std::path::absolute(dir).unwrap()).unwrap();
        let table =
            deltalake::open_table(url).await.unwrap_or_else(|e| panic!("{} is not a Delta table: {e}", dir.display()));
        let ctx = datafusion::prelude::SessionContext::new();
        table.update_datafusion_session(&ctx.state()).unwrap();
        let provider = table.table_provider().await.unwrap();
        let batches = ctx.read_table(provider).unwrap().collect().await.unwrap();
        batches.iter().flat_map(batch_rows).collect()
    })
}

/// The rows of `batch` as column name → value text (`NULL` for nulls).
pub fn batch_rows(batch: &RecordBatch) -> Vec<BTreeMap<String, String>> {
    (0..batch.num_rows())
        .map(|r| {
            batch
                .schema()
                .fields()
                .iter()
                .enumerate()
                .map(|(k, field)| {
                    let col = batch.column(k);
                    let v = if col.is_null(r) {
                        "NULL".to_string()
                    } else {
                        datafusion::arrow::util::display::array_value_to_string(col, r).unwrap()
                    };
                    (field.name().clone(), v)
                })
                .collect()
        })
        .collect()
}

/// id → the `version` values present, from rows with `id` and `version` columns.
pub fn versions_by_id(rows: Vec<BTreeMap<String, String>>) -> BTreeMap<u32, Vec<u32>> {
    let mut m: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for r in rows {
        m.entry(r["id"].parse().unwrap()).or_default().push(r["version"].parse().unwrap());
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

/// The line of a run's summary table for `task`.
pub fn status_of<'a>(stdout: &'a str, task: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{task} ")))
        .unwrap_or_else(|| panic!("no line for {task} in\n{stdout}"))
}

/// Run a Python script in `dir` with `python`; panic with its output when it fails. A script
/// that ran to its end exits at once, without the interpreter's teardown: with deltalake,
/// DuckDB and Polars loaded, that teardown once aborted ("terminate called without an active
/// exception") after a script had checked everything and printed its result. An exception
/// still fails the run.
pub fn run_python(python: &str, script: &str, dir: &Path) -> String {
    let script =
        format!("{script}\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n_sys.stderr.flush()\n_os._exit(0)\n");
    let out = Command::new(python).arg("-c").arg(script).current_dir(dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "python failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The entries of a Delta table's log, oldest first (each entry's actions as JSON values).
pub fn delta_log(dir: &Path) -> Vec<Vec<serde_json::Value>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir.join("_delta_log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.file_stem().is_some_and(|s| s.len() == 20))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        })
        .collect()
}

/// A CSV delivery (`id,version,region`) of `ids`, each with `version`.
pub fn delivery_csv(ids: std::ops::Range<u32>, version: u32) -> String {
    let mut s = String::from("id,version,region\n");
    for i in ids {
        s.push_str(&format!("{i},{version},{}\n", ["north", "south"][(i % 2) as usize]));
    }
    s
}

/// Run a future to completion on a fresh single-threaded runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}
