//! The command line: argument parsing, exit codes, and everything printed for humans.
//!
//! Exit codes: 0 success, 1 a run failed (or was cancelled), 2 invalid pipeline or usage.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;
use tokio_util::sync::CancellationToken;

use crate::compile::{self, CompileError, Execution, Plan, TaskKind, types::sql_name};
use crate::diag::Diagnostic;
use crate::run::{self, CheckResult, CheckStatus, Observer, RunOptions, RunReport, RunStatus, TaskReport, TaskStatus};
use crate::secrets::Secrets;
use crate::spec::{self, LoadOptions, LoadedPipeline, SpecError};
use crate::state::StateStore;

#[cfg(feature = "distributed")]
mod cluster;

/// Write to stdout. When the reader has gone (`weir runs --json | head`), nothing more is
/// written and the command ends as it would have: no panic, no error message.
fn write_out(text: std::fmt::Arguments<'_>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static CLOSED: AtomicBool = AtomicBool::new(false);
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(text).and_then(|_| o.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

macro_rules! out {
    ($($arg:tt)*) => { write_out(format_args!($($arg)*)) };
}

macro_rules! outln {
    () => { write_out(format_args!("\n")) };
    ($($arg:tt)*) => { write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_INVALID: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Declarative data pipelines: YAML compiled into a DAG of extract, SQL transform and load tasks"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// More logging: -v info, -vv debug, -vvv trace. `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The state store (SQLite). Default: `.weir/state.db` beside the pipelines.
    #[arg(long, env = "WEIR_STATE", global = true)]
    pub state: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and compile pipelines; report every problem at once.
    Validate {
        /// Pipeline files or directories of them.
        #[arg(default_value = "pipelines")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Show the DAG: tasks in run order, what each reads and writes, and output schemas.
    Plan {
        #[arg(default_value = "pipelines")]
        path: PathBuf,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Run pipelines.
    Run {
        #[arg(default_value = "pipelines")]
        path: PathBuf,
        /// Run only these tasks: names, `+name` (with everything upstream), `name+` (with
        /// everything downstream). Repeat or separate with commas. Tasks whose tables the
        /// selection reads run too.
        #[arg(long, short = 's', value_delimiter = ',')]
        select: Vec<String>,
        /// Rebuild outputs from all input: incremental extracts read everything, and every load
        /// replaces its output.
        #[arg(long)]
        full_refresh: bool,
        /// Continue a failed or cancelled run: its loads that committed are not run again, its
        /// materialized transforms are reused; everything else runs.
        #[arg(long, value_name = "RUN_ID")]
        resume: Option<String>,
        /// The run's logical date (`${run_date}`), YYYY-MM-DD. Default: today (UTC).
        #[arg(long, value_name = "DATE")]
        run_date: Option<String>,
        /// Print the run report as JSON on stdout instead of the table.
        #[arg(long)]
        json: bool,
        /// DataFusion partitions per query. Default: CPU cores (1 under `--memory-limit`).
        #[arg(long)]
        target_partitions: Option<usize>,
        /// Also write the run's metrics (the names `weir serve` exports) to this file in the
        /// Prometheus text format, atomically: for node_exporter's textfile collector.
        #[arg(long, value_name = "FILE")]
        metrics_file: Option<PathBuf>,
        /// Memory budget for running queries (e.g. `2GB`, `512MiB`): sorts, aggregations and
        /// joins that need more spill to disk instead. Half goes to DataFusion's spilling pool,
        /// half is headroom for readers, writers and operators' transient copies. Default: no limit.
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        memory_limit: Option<usize>,
        /// Where the SQL runs, overriding the pipeline's `engine`: `local`, `ballista` (the
        /// pipeline's cluster, or an in-process standalone one), `standalone`, or a Ballista
        /// scheduler `df://host:port`. Ballista is in the default build (cargo feature `distributed`).
        #[arg(long, value_name = "ENGINE")]
        engine: Option<String>,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Run the pipelines of a directory on their schedules: a daemon with metrics, alerts and
    /// an HTTP API. Stops on SIGTERM / Ctrl-C, letting running runs finish.
    Serve {
        /// The directory of pipeline files.
        #[arg(default_value = "pipelines")]
        dir: PathBuf,
        /// Where the HTTP server listens (`/metrics`, `/healthz`, `/api`).
        #[arg(long, default_value = "127.0.0.1:9187")]
        listen: std::net::SocketAddr,
        /// Bearer token for `/api` (required when listening on a non-loopback address).
        #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Run what is due now (ticks since the last handled one, by each catch-up policy),
        /// check freshness, deliver alerts, and exit: for running from cron.
        #[arg(long)]
        once: bool,
        /// How long running runs get to finish after SIGTERM before they are cancelled.
        #[arg(long, default_value = "60s", value_parser = parse_duration_arg)]
        grace: Duration,
        /// How often pipeline files are checked for changes.
        #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
        reload_interval: Duration,
        /// How often freshness is checked for `stale` alerts.
        #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
        stale_interval: Duration,
        /// The wait before a webhook's first retry (then ×4 each time, 5 attempts).
        #[arg(long, default_value = "1s", value_parser = parse_duration_arg)]
        alert_backoff: Duration,
        /// The daemon's own webhook (repeatable; env `WEIR_NOTIFY`, comma-separated): it gets the
        /// `stale` alerts of pipelines with no webhook of their own to tell — none configured, or
        /// their file deleted or unreadable.
        #[arg(long, value_name = "URL", env = "WEIR_NOTIFY", hide_env_values = true, value_delimiter = ',')]
        notify: Vec<String>,
        /// Memory budget for each run's queries, as for `weir run`.
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        memory_limit: Option<usize>,
        /// DataFusion partitions per query, as for `weir run`.
        #[arg(long)]
        target_partitions: Option<usize>,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Print the DAG as Graphviz DOT or a Mermaid flowchart.
    Graph {
        #[arg(default_value = "pipelines")]
        path: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Run history from the state store.
    Runs {
        /// Only this pipeline's runs.
        pipeline: Option<String>,
        /// The directory whose state store is read (when --state is not given).
        #[arg(long, default_value = "pipelines")]
        dir: PathBuf,
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Show the tasks of this run.
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of pipeline files.
    Schema,
    /// Run a Ballista scheduler or executor of this build (cargo feature `distributed`): a
    /// cluster for `engine: { ballista: ... }` on the same DataFusion and Ballista versions as
    /// this weir. The arguments are those of Ballista's `ballista-scheduler` and
    /// `ballista-executor` (`weir cluster executor --help`).
    #[cfg(feature = "distributed")]
    Cluster {
        #[arg(value_enum)]
        role: cluster::Role,
        /// Ballista's own arguments, e.g. `--bind-port 50050`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct VarArgs {
    /// Set a variable: `--var region=north`. Overrides `vars:` in the file.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (write e.g. 500ms, 30s, 2m)"))
}

/// A size like `2GB`, `512MiB`, `1.5G` or `1000000` (bytes); `K`/`M`/`G`/`T` are powers of 1024
/// with or without `i`/`B` (as memory is counted).
fn parse_size_arg(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a size (write e.g. 2GB, 512MiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().trim_end_matches('B').trim_end_matches('I') {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (write e.g. 2GB, 512MiB)")),
    };
    let bytes = n * mult;
    if !(1.0..=(usize::MAX as f64)).contains(&bytes) {
        return Err(format!("`{s}` is not a usable size"));
    }
    Ok(bytes as usize)
}

#[cfg(test)]
#[test]
fn sizes_parse_in_powers_of_1024() {
    assert_eq!(parse_size_arg("2GB"), Ok(2 << 30));
    assert_eq!(parse_size_arg("512MiB"), Ok(512 << 20));
    assert_eq!(parse_size_arg("1.5g"), Ok(3 << 29));
    assert_eq!(parse_size_arg("1000"), Ok(1000));
    assert!(parse_size_arg("2XB").is_err());
    assert!(parse_size_arg("GB").is_err());
    assert!(parse_size_arg("0").is_err());
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    let k = k.trim();
    if !spec::is_identifier(k) {
        return Err(format!("invalid variable name `{k}`"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Entry point: returns the process exit code.
pub fn main() -> i32 {
    // Two rustls crypto providers are linked (deltalake's HTTP client brings aws-lc-rs, the
    // object stores ring); rustls needs one chosen before the first TLS connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    #[cfg(feature = "distributed")]
    if let Command::Cluster { role, args } = &cli.command {
        return cluster::main(*role, args);
    }
    init_logging(&cli);
    // Deep query plans recurse: give worker threads more than the 2 MiB default stack.
    let runtime = match tokio::runtime::Builder::new_multi_thread().thread_stack_size(8 << 20).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    let code = runtime.block_on(dispatch(cli));
    runtime.shutdown_timeout(Duration::from_secs(10));
    code
}

async fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Schema => {
            outln!("{}", schema_text());
            EXIT_OK
        }
        Command::Validate { ref paths, ref vars } => validate(paths, vars).await,
        Command::Plan { ref path, ref vars } => {
            match compile_paths(std::slice::from_ref(path), vars, &run::new_run_id(), &today(), None).await {
                Ok(plans) => {
                    let mut out = String::new();
                    for (k, p) in plans.iter().enumerate() {
                        if k > 0 {
                            out.push('\n');
                        }
                        let reads = incremental_preview(p).await;
                        // A description or a path can hold a `${env:…}` value.
                        out.push_str(&p.secrets.redact(&render_plan(p, &reads)));
                    }
                    out!("{out}");
                    EXIT_OK
                }
                Err(code) => code,
            }
        }
        Command::Graph { ref path, format, ref vars } => {
            match compile_paths(std::slice::from_ref(path), vars, &run::new_run_id(), &today(), None).await {
                Ok(plans) => {
                    for p in plans {
                        let text = match format {
                            GraphFormat::Dot => p.to_dot(),
                            GraphFormat::Mermaid => p.to_mermaid(),
                        };
                        out!("{}", p.secrets.redact(&text));
                    }
                    EXIT_OK
                }
                Err(code) => code,
            }
        }
        Command::Runs { ref pipeline, ref dir, limit, ref run, json } => {
            runs(&cli, pipeline.as_deref(), dir, limit, run.as_deref(), json)
        }
        Command::Run { .. } => run_cmd(&cli).await,
        Command::Serve { .. } => serve_cmd(&cli).await,
        #[cfg(feature = "distributed")]
        Command::Cluster { .. } => EXIT_INVALID,
    }
}

/// The JSON Schema, pretty-printed (the content of `pipeline.schema.json`).
pub fn schema_text() -> String {
    serde_json::to_string_pretty(&spec::json_schema()).unwrap_or_default()
}

/// The time `freshness` checks measure from: now for a run of today, else the end of the
/// run's logical date (a backfill of 2026-01-31 sees the data as of that day's end).
fn logical_time(run_date: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if run_date == today() {
        return None;
    }
    let d = chrono::NaiveDate::parse_from_str(run_date, "%Y-%m-%d").ok()?;
    Some(d.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc())
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    // Without -v the CLI's own lines say what happens; logs are for -v and JSON consumers.
    let daemon = matches!(cli.command, Command::Serve { once: false, .. });
    let default = match (cli.verbose, cli.log_format) {
        // A daemon's log is its voice.
        (0, _) if daemon => "weir=info,warn",
        (0, LogFormat::Text) => "weir=off,error",
        (0, LogFormat::Json) | (1, _) => "weir=info,warn",
        (2, _) => "weir=debug,info",
        _ => "trace",
    };
    // The HTTP client's own debug lines name the hosts it connects to (webhooks are secrets):
    // kept at warnings unless RUST_LOG asks.
    let default = if cli.verbose < 3 {
        format!("{default},reqwest=warn,hyper=warn,hyper_util=warn")
    } else {
        default.to_string()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let writer = RedactingWriter;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(false);
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

/// Writes log lines to stderr with every known secret replaced.
#[derive(Clone, Copy)]
struct RedactingWriter;

struct RedactingHandle(Vec<u8>);

impl Write for RedactingHandle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingHandle {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().write_all(crate::secrets::global().redact(&text).as_bytes());
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingWriter {
    type Writer = RedactingHandle;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingHandle(Vec::new())
    }
}

/// Print diagnostics the way compilers do: heading, source excerpt, help.
pub fn print_diagnostics(diags: &[Diagnostic]) {
    let stderr = std::io::stderr();
    let color = stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = String::new();
    for d in diags {
        out.push_str(&render_diagnostic(d, color));
        out.push('\n');
    }
    let n = diags.len();
    out.push_str(&format!("{n} problem{} found\n", if n == 1 { "" } else { "s" }));
    let _ = stderr.lock().write_all(crate::secrets::global().redact(&out).as_bytes());
}

/// One diagnostic as text (`color` off for tests and pipes).
pub fn render_diagnostic(d: &Diagnostic, color: bool) -> String {
    crate::diag::render(d, color)
}

fn load_options(vars: &VarArgs, run_id: &str, run_date: &str) -> LoadOptions {
    let mut o = LoadOptions::new(run_id, run_date);
    o.vars = vars.vars.iter().cloned().collect::<IndexMap<_, _>>();
    o
}

/// Load and compile every pipeline under `paths`. Every problem of every file is printed;
/// `Err(exit code)` if there is any.
/// Compile the pipelines at `paths`; inferred schemas are cached in `cache` when given.
async fn compile_paths(
    paths: &[PathBuf],
    vars: &VarArgs,
    run_id: &str,
    run_date: &str,
    cache: Option<&dyn compile::SchemaCache>,
) -> Result<Vec<Plan>, i32> {
    let files = match spec::discover(paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(EXIT_INVALID);
        }
    };
    let opts = load_options(vars, run_id, run_date);
    let mut loaded: Vec<LoadedPipeline> = Vec::new();
    let mut diags = Vec::new();
    let mut io_error = false;
    for f in files {
        let clock = std::time::Instant::now();
        match spec::load(&f, &opts) {
            Ok(p) => {
                tracing::debug!(pipeline = %p.name, ms = clock.elapsed().as_millis() as u64, "loaded");
                loaded.push(p)
            }
            Err(SpecError::Invalid(d)) => diags.extend(d),
            Err(e) => {
                eprintln!("error: {}", crate::secrets::global().redact(&e.to_string()));
                io_error = true;
            }
        }
    }
    // A `--var` that no pipeline has would change nothing: a misspelling, most likely.
    if diags.is_empty() && !io_error {
        for (name, _) in &vars.vars {
            if !loaded.iter().any(|p| p.uses_var(name)) {
                let known: Vec<&str> = loaded.iter().flat_map(|p| p.spec.vars.keys().map(String::as_str)).collect();
                let hint = match crate::diag::did_you_mean(name, known.iter().copied()) {
                    Some(h) => format!(": {h}"),
                    None if known.is_empty() => ": the pipelines have no variables".to_string(),
                    None => format!(" (variables: {})", known.join(", ")),
                };
                eprintln!("error: --var {name}: no pipeline has a variable `{name}`{hint}");
                return Err(EXIT_INVALID);
            }
        }
    }
    // Pipeline names must be unique: they key the state store.
    let mut seen: IndexMap<String, PathBuf> = IndexMap::new();
    for p in &loaded {
        if let Some(first) = seen.get(&p.name) {
            diags.push(
                p.diag_key(
                    "pipeline-name",
                    &crate::ypath!["pipeline"],
                    format!("pipeline name `{}` is also used by {}", p.name, first.display()),
                )
                .help("pipeline names key the run history: give each pipeline its own `pipeline:` name"),
            );
        } else {
            seen.insert(p.name.clone(), p.source.path.clone());
        }
    }
    let mut plans = Vec::new();
    for p in &loaded {
        match compile::compile_cached(p, cache).await {
            Ok(plan) => plans.push(plan),
            Err(CompileError::Invalid(d)) => diags.extend(d),
        }
    }
    if !diags.is_empty() {
        print_diagnostics(&diags);
        return Err(EXIT_INVALID);
    }
    if io_error {
        return Err(EXIT_INVALID);
    }
    Ok(plans)
}

async fn validate(paths: &[PathBuf], vars: &VarArgs) -> i32 {
    match compile_paths(paths, vars, &run::new_run_id(), &today(), None).await {
        Ok(plans) => {
            for p in &plans {
                outln!("ok  {} ({}): {} tasks", p.pipeline, p.source.name, p.graph.node_count());
            }
            EXIT_OK
        }
        Err(code) => code,
    }
}

/// The state store for pipelines at `path` and the staging directory beside it (`None`, the
/// error printed, when the store cannot be opened).
fn open_state(cli: &Cli, path: &Path) -> Option<(Arc<StateStore>, PathBuf)> {
    let state_file = state_path(cli, path);
    let state = match StateStore::open(&state_file) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    let staging_dir = state_file.parent().map(|d| d.join("staging")).unwrap_or_else(|| PathBuf::from(".weir/staging"));
    Some((state, staging_dir))
}

/// Where the state store lives for pipelines at `path`.
fn state_path(cli: &Cli, path: &Path) -> PathBuf {
    if let Some(p) = &cli.state {
        return p.clone();
    }
    let dir = if path.is_dir() { path.to_path_buf() } else { path.parent().map(Path::to_path_buf).unwrap_or_default() };
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    dir.join(".weir").join("state.db")
}

async fn run_cmd(cli: &Cli) -> i32 {
    let Command::Run {
        path,
        select,
        full_refresh,
        resume,
        run_date,
        json,
        target_partitions,
        metrics_file,
        memory_limit,
        engine,
        vars,
    } = &cli.command
    else {
        return EXIT_INVALID;
    };
    let run_date = match run_date {
        Some(d) => match chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d") {
            Ok(d) => d.format("%Y-%m-%d").to_string(),
            Err(_) => {
                eprintln!("error: --run-date `{d}` is not a date like 2026-01-31");
                return EXIT_INVALID;
            }
        },
        None => today(),
    };
    if metrics_file.is_some() {
        // Before compiling: the listings and schema reads of compile are counted too.
        crate::metrics::install();
    }
    let Some((state, staging_dir)) = open_state(cli, path) else {
        return EXIT_FAILED;
    };
    let run_id = run::new_run_id();
    let cache: &dyn compile::SchemaCache = state.as_ref();
    let plans = match compile_paths(std::slice::from_ref(path), vars, &run_id, &run_date, Some(cache)).await {
        Ok(p) => p,
        Err(code) => return code,
    };

    // Selection: every name must exist in at least one pipeline.
    let mut selections = Vec::new();
    if !select.is_empty() {
        let mut unknown: Option<String> = None;
        for p in &plans {
            match p.select(select) {
                Ok(s) => selections.push(Some(s)),
                Err(e) => {
                    unknown.get_or_insert(e);
                    selections.push(None);
                }
            }
        }
        if selections.iter().all(Option::is_none) {
            eprintln!("error: --select: {}", unknown.unwrap_or_default());
            return EXIT_INVALID;
        }
    } else {
        selections = plans.iter().map(|_| Some(HashSet::new())).collect();
    }

    let resume_from = match resume {
        None => None,
        Some(id) => match resume_info(&state, id, &plans, &staging_dir) {
            Ok(r) => Some(r),
            Err(msg) => {
                eprintln!("error: --resume {id}: {msg}");
                return EXIT_INVALID;
            }
        },
    };

    let cancel = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(cancel.clone()));
    let mut code = EXIT_OK;
    let mut reports = Vec::new();
    for (plan, sel) in plans.into_iter().zip(selections) {
        let Some(sel) = sel else { continue };
        let resume = match &resume_from {
            Some(r) if r.pipeline == plan.pipeline => Some(r.clone()),
            Some(_) => continue,
            None => None,
        };
        if cancel.is_cancelled() {
            break;
        }
        let engine = match engine {
            Some(e) => match plan.engine.with_override(e, &plan.stores) {
                Ok(e) => Some(e),
                Err(msg) => {
                    eprintln!("error: --engine: {}", plan.secrets.redact(&msg));
                    return EXIT_INVALID;
                }
            },
            None => None,
        };
        let plan = Arc::new(plan);
        let this_run = if reports.is_empty() { run_id.clone() } else { run::new_run_id() };
        // With --json, stdout carries the report; the task lines still go to stderr.
        let progress = Progress::new(&plan);
        let observer: Arc<dyn Observer> = if metrics_file.is_some() {
            Arc::new(run::Tee(vec![progress.clone(), Arc::new(crate::metrics::RunMetrics::new(&plan.pipeline))]))
        } else {
            progress.clone()
        };
        let opts = RunOptions {
            run_id: this_run,
            run_date: run_date.clone(),
            select: if select.is_empty() { None } else { Some(sel) },
            staging_dir: staging_dir.clone(),
            cancel: cancel.clone(),
            observer: Some(observer),
            state: Some(state.clone()),
            target_partitions: *target_partitions,
            memory_limit: *memory_limit,
            full_refresh: *full_refresh,
            resume,
            logical_time: logical_time(&run_date),
            engine,
        };
        match run::run(plan.clone(), opts).await {
            Ok(report) => {
                progress.finish();
                crate::metrics::run_finished(&report);
                if report.status != RunStatus::Succeeded {
                    code = EXIT_FAILED;
                }
                if !*json {
                    out!("{}", crate::secrets::global().redact(&render_report(&report, &plan.secrets)));
                }
                reports.push(report);
            }
            Err(e) => {
                progress.finish();
                crate::metrics::run_errored(&plan.pipeline);
                eprintln!("error: {}", crate::secrets::global().redact(&e.to_string()));
                code = EXIT_FAILED;
            }
        }
    }
    signals.abort();
    if let Some(f) = metrics_file
        && let Err(e) = crate::metrics::write_file(f)
    {
        eprintln!("error: cannot write the metrics file {}: {e}", f.display());
        code = code.max(EXIT_FAILED);
    }
    if *json {
        let v = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])
        } else {
            serde_json::to_string_pretty(&reports)
        };
        outln!("{}", v.unwrap_or_default());
    }
    code
}

async fn serve_cmd(cli: &Cli) -> i32 {
    let Command::Serve {
        dir,
        listen,
        token,
        once,
        grace,
        reload_interval,
        stale_interval,
        alert_backoff,
        notify,
        memory_limit,
        target_partitions,
        vars,
    } = &cli.command
    else {
        return EXIT_INVALID;
    };
    if !dir.is_dir() {
        eprintln!("error: {} is not a directory of pipeline files", dir.display());
        return EXIT_INVALID;
    }
    if let Some(t) = token {
        crate::secrets::global().add(t);
    }
    let Some((state, staging_dir)) = open_state(cli, dir) else {
        return EXIT_FAILED;
    };
    let opts = crate::serve::ServeOptions {
        dir: dir.clone(),
        vars: vars.vars.clone(),
        state,
        staging_dir,
        listen: (!*once).then_some(*listen),
        token: token.clone().filter(|t| !t.is_empty()),
        grace: *grace,
        reload_interval: *reload_interval,
        stale_interval: *stale_interval,
        alert_backoff: *alert_backoff,
        notify: notify
            .iter()
            .filter(|u| !u.trim().is_empty())
            .map(|u| {
                crate::secrets::global().add(u.trim());
                crate::compile::schedule::NotifyPlan {
                    url: u.trim().to_string(),
                    on: crate::spec::NotifyEvent::ALL.to_vec(),
                }
            })
            .collect(),
        memory_limit: *memory_limit,
        target_partitions: *target_partitions,
    };
    if !*once {
        return match crate::serve::serve(opts).await {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("error: {}", crate::secrets::global().redact(&e.to_string()));
                EXIT_FAILED
            }
        };
    }
    let (daemon, outcomes) = match crate::serve::once(opts).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {}", crate::secrets::global().redact(&e.to_string()));
            return EXIT_FAILED;
        }
    };
    let mut code = EXIT_OK;
    for (name, errors) in daemon.errors() {
        eprintln!("error: pipeline `{name}` is invalid and was not run:");
        for e in errors {
            eprintln!("{e}");
        }
        code = EXIT_INVALID;
    }
    if outcomes.is_empty() {
        outln!("nothing due");
    }
    for o in &outcomes {
        let why = match o.trigger {
            crate::serve::Trigger::Tick { at, catchup } => {
                format!("tick {}{}", at.format("%Y-%m-%dT%H:%M:%SZ"), if catchup { " (catch-up)" } else { "" })
            }
            crate::serve::Trigger::Manual => "manual".into(),
        };
        let error = o.error.as_deref().map(|e| format!(": {}", e.lines().next().unwrap_or(""))).unwrap_or_default();
        outln!("{:<10} {} run {} for {why}{error}", o.status, o.pipeline, o.run_id);
        if o.status == "failed" {
            code = code.max(EXIT_FAILED);
        }
    }
    code
}

/// What `--resume RUN_ID` continues: a failed, cancelled or abandoned run of one of `plans`.
fn resume_info(state: &StateStore, run_id: &str, plans: &[Plan], staging_dir: &Path) -> Result<run::Resume, String> {
    let rec = state.run(run_id).map_err(|e| e.to_string())?.ok_or("no such run in the state store")?;
    if !plans.iter().any(|p| p.pipeline == rec.pipeline) {
        return Err(format!("it is a run of pipeline `{}`, which is not in this path", rec.pipeline));
    }
    match rec.status.as_str() {
        "succeeded" => return Err("that run succeeded: there is nothing to resume".into()),
        "running" => return Err("that run is still running".into()),
        _ => {}
    }
    let succeeded = state
        .tasks(run_id)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|t| t.status == "succeeded")
        .map(|t| t.task)
        .collect();
    Ok(run::Resume {
        run_id: run_id.to_string(),
        pipeline: rec.pipeline.clone(),
        succeeded,
        staging: staging_dir.join(&rec.pipeline).join(run_id),
    })
}

/// Ctrl-C or SIGTERM cancels the run; a second one exits at once.
async fn watch_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    eprintln!(
        "\nstopping: cancelling running tasks (nothing half-written is published); press Ctrl-C again to exit now"
    );
    cancel.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    std::process::exit(130);
}

/// Task progress: a bar on a terminal, one line per task otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    running: Mutex<Vec<String>>,
}

impl Progress {
    fn new(plan: &Plan) -> Arc<Progress> {
        let tty = std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let b = indicatif::ProgressBar::new(plan.graph.node_count() as u64);
            let style = indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:20}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> ");
            b.set_style(style);
            b.set_prefix(plan.pipeline.clone());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Arc::new(Progress { bar, running: Mutex::new(Vec::new()) })
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn line(&self, s: String) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn update(&self) {
        if let Some(b) = &self.bar {
            let r = self.running.lock().unwrap_or_else(|e| e.into_inner());
            b.set_message(format!("running: {}", r.join(", ")));
        }
    }
}

impl Observer for Progress {
    fn task_started(&self, task: &str, kind: &str) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).push(task.to_string());
        self.update();
        if self.bar.is_none() {
            self.line(format!("start  {task} ({kind})"));
        }
    }

    fn task_retrying(&self, task: &str, attempt: u32, error: &str, wait: Duration) {
        self.line(format!("retry  {task}: attempt {attempt} failed ({error}); retrying in {}", fmt_duration(wait)));
    }

    fn task_finished(&self, r: &TaskReport) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).retain(|t| t != &r.name);
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        self.update();
        let what = match r.status {
            TaskStatus::Succeeded => "ok    ",
            TaskStatus::Fused => "fused ",
            TaskStatus::Failed => "FAILED",
            TaskStatus::Skipped => "skip  ",
            TaskStatus::Cancelled => "cancel",
            TaskStatus::UpToDate => "fresh ",
        };
        let mut detail = Vec::new();
        if let Some(n) = r.rows_out {
            detail.push(format!("{} rows", fmt_count(n)));
        }
        if let (Some(f), Some(b)) = (r.files, r.bytes_read) {
            detail.push(format!("{f} file{}, {}", if f == 1 { "" } else { "s" }, fmt_bytes(b)));
        }
        if let Some(b) = r.bytes_written {
            detail.push(format!("{} written", fmt_bytes(b)));
        }
        if let Some(d) = r.duration {
            detail.push(fmt_duration(d));
        }
        if !r.checks.is_empty() {
            detail.push(checks_summary(&r.checks));
        }
        if let Some(e) = &r.error {
            detail.push(e.clone());
        } else if let Some(n) = &r.note
            && (r.status != TaskStatus::Succeeded || r.kind == "extract")
        {
            detail.push(n.clone());
        }
        self.line(format!("{what} {} ({}) {}", r.name, r.kind, detail.join(", ")));
    }
}

pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (k, c) in s.chars().enumerate() {
        if k > 0 && (s.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let s = d.as_secs();
        format!("{}m {:02}s", s / 60, s % 60)
    }
}

/// `checks: 6 passed, 1 warned`
pub fn checks_summary(checks: &[CheckResult]) -> String {
    let mut parts = Vec::new();
    for (status, word) in [
        (CheckStatus::Passed, "passed"),
        (CheckStatus::Warned, "warned"),
        (CheckStatus::Quarantined, "quarantined"),
        (CheckStatus::Failed, "failed"),
    ] {
        let n = checks.iter().filter(|c| c.status == status).count();
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    format!("checks: {}", parts.join(", "))
}

/// The run summary table.
/// Rows under a header, columns padded to their widest cell; columns from `right` on are
/// right-aligned (numbers).
fn text_table<R: AsRef<[String]>>(header: &[&str], rows: &[R], right: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (k, c) in row.as_ref().iter().enumerate() {
            widths[k] = widths[k].max(c.chars().count());
        }
    }
    let fmt_row = |cells: &[String]| -> String {
        let mut line = String::from(" ");
        for (k, c) in cells.iter().enumerate() {
            let pad = widths[k] - c.chars().count();
            if k >= right {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            }
            line.push_str("  ");
        }
        line.trim_end().to_string() + "\n"
    };
    let mut s = fmt_row(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in rows {
        s.push_str(&fmt_row(row.as_ref()));
    }
    s
}

pub fn render_report(r: &RunReport, secrets: &Secrets) -> String {
    let mut s =
        format!("\nRun {} of `{}`: {} in {}\n\n", r.run_id, r.pipeline, r.status.as_str(), fmt_duration(r.duration));
    let header = ["task", "kind", "status", "rows in", "rows out", "read", "written", "time"];
    let dash = || "-".to_string();
    let rows: Vec<[String; 8]> = r
        .tasks
        .iter()
        .map(|t| {
            [
                t.name.clone(),
                t.kind.to_string(),
                t.status.as_str().to_string(),
                t.rows_in.map(fmt_count).unwrap_or_else(dash),
                t.rows_out.map(fmt_count).unwrap_or_else(dash),
                t.bytes_read.map(fmt_bytes).unwrap_or_else(dash),
                t.bytes_written.map(fmt_bytes).unwrap_or_else(dash),
                t.duration.map(fmt_duration).unwrap_or_else(dash),
            ]
        })
        .collect();
    s.push_str(&text_table(&header, &rows, 3));
    let failures: Vec<&TaskReport> = r.tasks.iter().filter(|t| t.status == TaskStatus::Failed).collect();
    if !failures.is_empty() {
        s.push('\n');
        for t in failures {
            s.push_str(&format!(
                "task `{}` failed: {}\n",
                t.name,
                secrets.redact(t.error.as_deref().unwrap_or("unknown error"))
            ));
        }
    }
    let tripped: Vec<(&TaskReport, &CheckResult)> = r
        .tasks
        .iter()
        .flat_map(|t| t.checks.iter().map(move |c| (t, c)))
        .filter(|(_, c)| c.status != CheckStatus::Passed)
        .collect();
    let all_checks: Vec<CheckResult> = r.tasks.iter().flat_map(|t| t.checks.iter().cloned()).collect();
    if !all_checks.is_empty() {
        s.push_str(&format!("\n{}\n", checks_summary(&all_checks)));
    }
    for (t, c) in tripped {
        let status = match c.status {
            CheckStatus::Failed => "FAILED",
            CheckStatus::Warned => "warning",
            CheckStatus::Quarantined => "quarantined",
            CheckStatus::Passed => "passed",
        };
        s.push_str(&format!("  {status}: {}.{} ({}): {}\n", t.name, c.name, c.kind, secrets.redact(&c.message)));
        for row in &c.samples {
            let mut line = secrets.redact(&row.to_string());
            if line.chars().count() > 160 {
                line = line.chars().take(157).collect::<String>() + "...";
            }
            s.push_str(&format!("      {line}\n"));
        }
    }
    for t in r.tasks.iter().filter(|t| t.quarantined.is_some()) {
        if let Some(note) = &t.note {
            s.push_str(&format!("  {}: {}\n", t.name, note));
        }
    }
    let skipped = r.tasks.iter().filter(|t| t.status == TaskStatus::Skipped).count();
    if skipped > 0 {
        s.push_str(&format!(
            "{skipped} task{} skipped because an upstream task failed or the run was cancelled\n",
            if skipped == 1 { "" } else { "s" }
        ));
    }
    s
}

/// `weir plan` output.
/// Per incremental extract, what a run would read for each load it feeds (from the loads'
/// outputs, the source of truth).
pub async fn incremental_preview(p: &Plan) -> HashMap<NodeIndex, Vec<String>> {
    let mut out: HashMap<NodeIndex, Vec<String>> = HashMap::new();
    let all: HashSet<NodeIndex> = p.graph.node_indices().collect();
    let states = match run::incremental::load_states(p, &all, None).await {
        Ok(s) => s,
        Err(e) => {
            for &i in &p.order {
                if let TaskKind::Extract(ex) = &p.task(i).kind
                    && ex.incremental.is_some()
                {
                    out.entry(i).or_default().push(format!("unknown: {}", p.secrets.redact(&e.to_string())));
                }
            }
            return out;
        }
    };
    for &l in &p.order {
        let Some(ls) = states.get(&l) else { continue };
        let load = &p.task(l).name;
        for &s in p.incremental_sources(l) {
            let TaskKind::Extract(e) = &p.task(s).kind else { continue };
            let Some(inc) = &e.incremental else { continue };
            let name = &p.task(s).name;
            let empty = Default::default();
            let st = ls.extract(name).unwrap_or(&empty);
            let line = match run::incremental::extract_input(name, e, st) {
                Err(err) => format!("unknown: {err}"),
                Ok(input) => {
                    let mut parts = Vec::new();
                    if inc.new_files {
                        let bytes: u64 = input.files.iter().map(|f| f.size).sum();
                        parts.push(format!(
                            "new files: {} new or changed of {} ({})",
                            input.files.len(),
                            e.files.len(),
                            fmt_bytes(bytes)
                        ));
                    }
                    if let Some(w) = &inc.watermark {
                        parts.push(match &input.after {
                            Some(after) => format!("rows with {} > {}", w.column, run::incremental::display(after)),
                            None => format!("all rows with a {} (no watermark yet)", w.column),
                        });
                    }
                    format!("{} for load `{load}`", parts.join("; "))
                }
            };
            out.entry(s).or_default().push(line);
        }
    }
    out
}

/// Schedule, webhooks and freshness for `weir plan` (empty when there are none).
pub fn render_watch(w: &crate::compile::schedule::Watch, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut s = String::new();
    if let Some(sch) = &w.schedule {
        let mut next = Vec::new();
        let mut t = now;
        while next.len() < 3 {
            let Some(n) = sch.next_after(t) else { break };
            next.push(n.with_timezone(&sch.timezone).format("%Y-%m-%d %H:%M:%S %Z").to_string());
            t = n;
        }
        s.push_str(&format!(
            "  schedule  {}, catchup {}, overlap {} (weir serve); next: {}\n",
            sch.describe(),
            format!("{:?}", sch.catchup).to_lowercase(),
            format!("{:?}", sch.overlap).to_lowercase(),
            next.join(", ")
        ));
    }
    for n in &w.notify {
        let on: Vec<&str> = n.on.iter().map(|e| e.as_str()).collect();
        s.push_str(&format!("  notify    *** on {}\n", on.join(", ")));
    }
    if let Some(d) = w.stale_after {
        s.push_str(&format!("  freshness stale after {} without a successful run\n", humantime::format_duration(d)));
    }
    s
}

pub fn render_plan(p: &Plan, reads: &HashMap<NodeIndex, Vec<String>>) -> String {
    let mut s = format!("Pipeline `{}` ({})\n", p.pipeline, p.source.name);
    if let Some(d) = &p.description {
        s.push_str(&format!("  {}\n", d.trim()));
    }
    s.push_str(&render_watch(&p.watch, chrono::Utc::now()));
    if let crate::compile::EnginePlan::Ballista(_) = &p.engine {
        s.push_str(&format!("  engine    {}\n", p.engine.describe()));
    }
    s.push_str(&format!("\n{} tasks in run order, at most {} at once:\n", p.graph.node_count(), p.max_parallel));
    for (k, &i) in p.order.iter().enumerate() {
        let t = p.task(i);
        s.push_str(&format!("\n{:>3}. {} ({})\n", k + 1, t.name, t.kind.name()));
        if let Some(d) = &t.description {
            s.push_str(&wrap_text("     about    ", d.trim()));
        }
        let ups = p.upstream_names(i);
        match &t.kind {
            TaskKind::Extract(e) => {
                let fmt = format!("{:?}", e.format.kind).to_lowercase();
                s.push_str(&format!(
                    "     reads    {}: {} ({fmt}) — {} file{}, {}\n",
                    e.store.name,
                    e.glob.pattern,
                    e.files.len(),
                    if e.files.len() == 1 { "" } else { "s" },
                    fmt_bytes(e.bytes())
                ));
                if let Some(inc) = &e.incremental {
                    let lines = reads.get(&i).cloned().unwrap_or_else(|| {
                        vec![if inc.watermark.is_some() && !inc.new_files {
                            "rows past the watermark (no load reads it)".into()
                        } else {
                            "new files (no load reads it)".into()
                        }]
                    });
                    for line in lines {
                        s.push_str(&format!("     incremental  {line}\n"));
                    }
                }
            }
            TaskKind::Transform(tr) => {
                s.push_str(&format!(
                    "     reads    {}\n",
                    if tr.inputs.is_empty() { "(no tables)".to_string() } else { tr.inputs.join(", ") }
                ));
                let how = match tr.execution {
                    Execution::Fused => "fused into its consumer's query",
                    Execution::Shared => "materialized once (read by several tasks)",
                    Execution::ChainBreak => "materialized (ends a chain of fused queries)",
                    Execution::Checked => "materialized (checked before its consumers read it)",
                };
                s.push_str(&format!("     runs     {how}\n"));
            }
            TaskKind::Load(l) => {
                let mut how =
                    format!("{}, {}", format!("{:?}", l.format).to_lowercase(), format!("{:?}", l.mode).to_lowercase());
                if !l.partition_by.is_empty() {
                    how.push_str(&format!(", partitioned by {}", l.partition_by.join(", ")));
                }
                s.push_str(&format!("     writes   {}: {}/ ({how}) from {}\n", l.store.name, l.path, l.from));
            }
        }
        if !t.checks.is_empty() {
            let names: Vec<String> = t
                .checks
                .iter()
                .map(|c| match c.severity {
                    spec::Severity::Warn => format!("{} (warn)", c.name),
                    spec::Severity::Error => c.name.clone(),
                })
                .collect();
            s.push_str(&wrap_columns("     checks   ", &names));
        }
        if let TaskKind::Extract(e) = &t.kind
            && e.bad_rows != spec::BadRowsMode::Fail
        {
            let mode = format!("{:?}", e.bad_rows).to_lowercase();
            s.push_str(&format!("     bad rows {mode}\n"));
        }
        if let Some(q) = &t.quarantine {
            s.push_str(&format!("     quarantine  {}: {}/{}/{}/\n", q.store.name, q.path, p.pipeline, t.name));
        }
        let extra: Vec<&str> = ups
            .iter()
            .copied()
            .filter(|u| match &t.kind {
                TaskKind::Transform(tr) => !tr.inputs.iter().any(|x| x == u),
                TaskKind::Load(l) => l.from != *u,
                _ => true,
            })
            .collect();
        if !extra.is_empty() {
            s.push_str(&format!("     after    {}\n", extra.join(", ")));
        }
        if !t.schema.fields().is_empty() {
            let cols: Vec<String> =
                t.schema.fields().iter().map(|f| format!("{} {}", f.name(), sql_name(f.data_type()))).collect();
            s.push_str(&wrap_columns("     columns  ", &cols));
        }
    }
    let stores: Vec<String> =
        p.stores.iter().map(|st| format!("  {}: {}", st.name, p.secrets.redact(&st.display_url))).collect();
    if !stores.is_empty() {
        s.push_str("\nStores:\n");
        s.push_str(&stores.join("\n"));
        s.push('\n');
    }
    s
}

/// `text` after `prefix`, wrapped at 100 columns under it.
fn wrap_text(prefix: &str, text: &str) -> String {
    let indent = " ".repeat(prefix.len());
    let mut out = String::new();
    let mut line = prefix.to_string();
    for word in text.split_whitespace() {
        if line.len() + word.len() + 1 > 100 && line.len() > prefix.len() {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.clone();
        }
        if line.len() > prefix.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

fn wrap_columns(prefix: &str, cols: &[String]) -> String {
    let indent = " ".repeat(prefix.len());
    let mut out = String::new();
    let mut line = prefix.to_string();
    for (k, c) in cols.iter().enumerate() {
        let piece = if k + 1 < cols.len() { format!("{c}, ") } else { c.clone() };
        if line.len() + piece.len() > 100 && line.trim().len() > prefix.trim().len() {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.clone();
        }
        line.push_str(&piece);
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

fn runs(cli: &Cli, pipeline: Option<&str>, dir: &Path, limit: usize, run: Option<&str>, json: bool) -> i32 {
    let path = state_path(cli, dir);
    if !path.exists() {
        eprintln!("no run history yet: {} does not exist", path.display());
        return EXIT_OK;
    }
    let state = match StateStore::open(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    if let Some(run_id) = run {
        let tasks = match state.tasks(run_id) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_FAILED;
            }
        };
        if tasks.is_empty() {
            eprintln!("error: no run `{run_id}` in {}", path.display());
            return EXIT_FAILED;
        }
        let checks = state.checks(run_id).unwrap_or_default();
        if json {
            let v: Vec<serde_json::Value> = tasks
                .iter()
                .map(|t| {
                    let own: Vec<serde_json::Value> = checks
                        .iter()
                        .filter(|c| c.task == t.task)
                        .map(|c| {
                            serde_json::json!({
                                "name": c.name, "kind": c.kind, "severity": c.severity, "status": c.status,
                                "failing": c.failing, "checked": c.checked, "message": c.message,
                                "samples": serde_json::from_str::<serde_json::Value>(&c.samples).unwrap_or_default(),
                            })
                        })
                        .collect();
                    serde_json::json!({
                        "task": t.task, "kind": t.kind, "status": t.status, "attempts": t.attempts,
                        "started_at": t.started_at, "finished_at": t.finished_at, "rows_in": t.rows_in,
                        "rows_out": t.rows_out, "bytes_read": t.bytes_read, "bytes_written": t.bytes_written,
                        "files": t.files, "error": t.error, "note": t.note, "checks": own,
                    })
                })
                .collect();
            outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            let dash = || "-".to_string();
            let time = |t: &Option<String>| t.as_deref().and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok());
            let header =
                ["task", "kind", "status", "attempts", "rows in", "rows out", "read", "written", "started", "time"];
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|t| {
                    let (start, end) = (time(&t.started_at), time(&t.finished_at));
                    vec![
                        t.task.clone(),
                        t.kind.clone(),
                        t.status.clone(),
                        t.attempts.to_string(),
                        t.rows_in.map(fmt_count).unwrap_or_else(dash),
                        t.rows_out.map(fmt_count).unwrap_or_else(dash),
                        t.bytes_read.map(fmt_bytes).unwrap_or_else(dash),
                        t.bytes_written.map(fmt_bytes).unwrap_or_else(dash),
                        start
                            .map(|s| s.with_timezone(&chrono::Utc).format("%H:%M:%S").to_string())
                            .unwrap_or_else(dash),
                        match (start, end) {
                            (Some(a), Some(b)) => fmt_duration((b - a).to_std().unwrap_or_default()),
                            _ => dash(),
                        },
                    ]
                })
                .collect();
            out!("{}", text_table(&header, &rows, 3));
            for t in tasks.iter().filter(|t| t.error.is_some()) {
                outln!("\ntask `{}` {}: {}", t.task, t.status, t.error.as_deref().unwrap_or_default());
            }
            if !checks.is_empty() {
                outln!();
                for c in &checks {
                    outln!(
                        "{:<24} {:<32} {:<11} {:>10} {}",
                        c.task,
                        c.name,
                        c.status,
                        format!("{}/{}", fmt_count(c.failing), fmt_count(c.checked)),
                        c.message
                    );
                }
            }
        }
        return EXIT_OK;
    }
    let list = match state.runs(pipeline, limit) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    if json {
        let v: Vec<serde_json::Value> = list
            .iter()
            .map(|r| {
                serde_json::json!({
                    "run_id": r.run_id, "pipeline": r.pipeline, "status": r.status, "logical_date": r.logical_date,
                    "started_at": r.started_at, "finished_at": r.finished_at, "error": r.error,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return EXIT_OK;
    }
    if list.is_empty() {
        outln!("no runs");
        return EXIT_OK;
    }
    outln!("{:<24} {:<20} {:<10} {:<10} {:<20} error", "run", "pipeline", "status", "date", "started");
    for r in list {
        let started = r.started_at.get(..19).unwrap_or(&r.started_at).replace('T', " ");
        let err = r.error.unwrap_or_default();
        let err: String = err.chars().take(80).collect();
        outln!("{:<24} {:<20} {:<10} {:<10} {:<20} {err}", r.run_id, r.pipeline, r.status, r.logical_date, started);
    }
    EXIT_OK
}
