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

mod args;
mod cdc;
#[cfg(feature = "distributed")]
mod cluster;
mod lineage;
mod logging;
mod preview;
mod render;
mod test;

pub use args::*;
pub use lineage::LineageFormat;
use logging::*;
pub use preview::incremental_preview;
pub use render::*;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_INVALID: i32 = 2;

/// mimalloc 3's `mi_option_purge_delay`: its place in mimalloc 3's `mi_option_e` (the
/// constants libmimalloc-sys exports are mimalloc 2's), and its default there.
const MI_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_PURGE_DELAY_DEFAULT_MS: std::ffi::c_long = 1000;

/// mimalloc 3 keeps freed memory for 1 s before it returns it to the system (mimalloc 2: 10
/// ms). weir streams gigabytes through short-lived buffers (object_store allocates a zeroed
/// buffer for every ranged read; record batches), so its peak RSS stood well above what it
/// used. With 10 ms, in the same benchmark runs (release, 2026-12-03): the XML read 276 → 200
/// MB, the refresh 438 → 331 MB, the memory workload 471 → 359 MB, the TPC-H ETL 243 → 236
/// MB, with no cost in time beyond the machine's noise. Set only when the option still holds
/// mimalloc 3's default (`MIMALLOC_PURGE_DELAY` in the environment says otherwise), and only
/// for the commands that move data (`run`, `serve`, `cluster`): a command that only compiles
/// lives a fraction of a second, and memory it returned would be faulted in (and zeroed) again
/// when it allocates anew.
fn return_freed_memory_soon() {
    // SAFETY: mimalloc's option calls take plain integers and may be called at any time.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT_MS
            && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
        {
            libmimalloc_sys::mi_option_set(MI_PURGE_DELAY, 10);
        }
    }
}

/// Entry point: returns the process exit code.
pub fn main() -> i32 {
    // Two rustls crypto providers are linked (deltalake's HTTP client brings aws-lc-rs, the
    // object stores ring); rustls needs one chosen before the first TLS connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. } | Command::Serve { .. }) {
        return_freed_memory_soon();
    }
    #[cfg(feature = "distributed")]
    if let Command::Cluster { role, args } = &cli.command {
        return_freed_memory_soon();
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
        Command::Schema { of } => {
            match of {
                SchemaKind::Pipeline => outln!("{}", schema_text()),
                SchemaKind::Lineage => {
                    outln!("{}", serde_json::to_string_pretty(&compile::lineage::document_schema()).unwrap_or_default())
                }
            }
            EXIT_OK
        }
        Command::Lineage { ref path, ref column, ref downstream, format, ref vars } => {
            let cache = compile_cache(&cli, path);
            let cache = cache.as_deref().map(|c| c as &dyn compile::SchemaCache);
            lineage::lineage_cmd(path, column.as_deref(), downstream.as_deref(), format, vars, cache).await
        }
        Command::Validate { ref paths, ref vars } => validate(&cli, paths, vars).await,
        Command::Test { ref path, ref select, ref junit, ref vars } => {
            let cache = compile_cache(&cli, path);
            let cache = cache.as_deref().map(|c| c as &dyn compile::SchemaCache);
            test::test_cmd(path, select, junit.as_deref(), vars, cache).await
        }
        Command::Plan { ref path, ref vars } => {
            let cache = compile_cache(&cli, path);
            let cache = cache.as_deref().map(|c| c as &dyn compile::SchemaCache);
            match compile_paths(std::slice::from_ref(path), vars, &run::new_run_id(), &today(), cache).await {
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
            let cache = compile_cache(&cli, path);
            let cache = cache.as_deref().map(|c| c as &dyn compile::SchemaCache);
            match compile_paths(std::slice::from_ref(path), vars, &run::new_run_id(), &today(), cache).await {
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
        Command::Cdc { ref action } => cdc::cdc_cmd(action).await,
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

pub(super) fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

fn load_options(vars: &VarArgs, run_id: &str, run_date: &str) -> LoadOptions {
    let mut o = LoadOptions::new(run_id, run_date);
    o.vars = vars.vars.iter().cloned().collect::<IndexMap<_, _>>();
    o
}

/// Load and compile every pipeline under `paths`, with inferred schemas cached in `cache`
/// when given. Every problem of every file is printed; `Err(exit code)` if there is any.
pub(super) async fn compile_paths(
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
    let mut prefetched: Vec<Option<compile::Prefetch>> = Vec::new();
    for f in files {
        let clock = std::time::Instant::now();
        // What earlier compiles of the file planned is read while the file is parsed.
        let prefetch = cache.map(|c| compile::prefetch(c, &f));
        match spec::load(&f, &opts) {
            Ok(p) => {
                tracing::debug!(pipeline = %p.name, ms = clock.elapsed().as_millis() as u64, "loaded");
                loaded.push(p);
                prefetched.push(prefetch);
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
    for (p, prefetch) in loaded.iter().zip(prefetched) {
        match compile::compile_prefetched(p, cache, prefetch).await {
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
    // Parse trees the plans no longer need: a command compiles once, and freeing 10,000 tasks'
    // trees would only delay it (the memory goes back when the process ends).
    std::mem::forget(loaded);
    Ok(plans)
}

/// [`compile_paths`] of one path, for a command that compiles and reads the plans.
pub(super) async fn compile_path(
    path: &Path,
    vars: &VarArgs,
    cache: Option<&dyn compile::SchemaCache>,
) -> Result<Vec<Plan>, i32> {
    compile_paths(&[path.to_path_buf()], vars, &run::new_run_id(), &today(), cache).await
}

async fn validate(cli: &Cli, paths: &[PathBuf], vars: &VarArgs) -> i32 {
    let cache = paths.first().and_then(|p| compile_cache(cli, p));
    let cache = cache.as_deref().map(|c| c as &dyn compile::SchemaCache);
    match compile_paths(paths, vars, &run::new_run_id(), &today(), cache).await {
        Ok(plans) => {
            // The test files beside the pipelines parse.
            if let Err(code) = test::suites(&plans, true) {
                return code;
            }
            for p in &plans {
                outln!("ok  {} ({}): {} tasks", p.pipeline, p.source.name, p.graph.node_count());
            }
            // The process ends here: freeing every task of a large pipeline would only take time.
            std::mem::forget(plans);
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

/// The state store for pipelines at `path` as compile's cache (inferred schemas, planned
/// queries), for commands that only compile: `None`, and no message, when it cannot be opened
/// (a read-only directory): they work without it.
fn compile_cache(cli: &Cli, path: &Path) -> Option<Arc<StateStore>> {
    StateStore::open(&state_path(cli, path)).ok().map(Arc::new)
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
        openlineage,
        vars,
    } = &cli.command
    else {
        return EXIT_INVALID;
    };
    let lineage = openlineage.overrides();
    if let Err(e) = lineage.check() {
        eprintln!("error: --openlineage-url / OPENLINEAGE_URL: {e}");
        return EXIT_INVALID;
    }
    let run_date = match run_date_arg(run_date.as_deref()) {
        Ok(d) => d,
        Err(code) => return code,
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
    let selections = match selections(&plans, select) {
        Ok(s) => s,
        Err(code) => return code,
    };
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
        let opts = RunOptions {
            run_id: if reports.is_empty() { run_id.clone() } else { run::new_run_id() },
            run_date: run_date.clone(),
            select: if select.is_empty() { None } else { Some(sel) },
            staging_dir: staging_dir.clone(),
            cancel: cancel.clone(),
            observer: None,
            state: Some(state.clone()),
            target_partitions: *target_partitions,
            memory_limit: *memory_limit,
            full_refresh: *full_refresh,
            resume,
            logical_time: logical_time(&run_date),
            engine,
        };
        let events = lineage.settings(plan.openlineage.as_ref());
        match run_one(Arc::new(plan), opts, metrics_file.is_some(), *json, events).await {
            Some(report) => {
                if report.status != RunStatus::Succeeded {
                    code = EXIT_FAILED;
                }
                reports.push(report);
            }
            None => code = EXIT_FAILED,
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

/// `--run-date`, normalized (today without it); `Err(exit code)` when it is not a date.
fn run_date_arg(run_date: Option<&str>) -> Result<String, i32> {
    match run_date {
        Some(d) => match chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d") {
            Ok(d) => Ok(d.format("%Y-%m-%d").to_string()),
            Err(_) => {
                eprintln!("error: --run-date `{d}` is not a date like 2026-01-31");
                Err(EXIT_INVALID)
            }
        },
        None => Ok(today()),
    }
}

/// Each pipeline's share of `--select` (`None`: nothing of it is selected); every name must
/// exist in at least one pipeline. Without `--select`, everything.
fn selections(plans: &[Plan], select: &[String]) -> Result<Vec<Option<HashSet<NodeIndex>>>, i32> {
    if select.is_empty() {
        return Ok(plans.iter().map(|_| Some(HashSet::new())).collect());
    }
    let mut unknown: Option<String> = None;
    let mut selections = Vec::new();
    for p in plans {
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
        return Err(EXIT_INVALID);
    }
    Ok(selections)
}

/// Run one pipeline with progress on stderr (and metrics when `metrics`), print its report
/// unless `json`. `None` when the run could not be carried out (the error is printed).
async fn run_one(
    plan: Arc<Plan>,
    mut opts: RunOptions,
    metrics: bool,
    json: bool,
    events: Option<crate::compile::openlineage::OpenLineagePlan>,
) -> Option<RunReport> {
    // With --json, stdout carries the report; the task lines still go to stderr.
    let progress = Progress::new(&plan);
    let mut observers: Vec<Arc<dyn Observer>> = vec![progress.clone()];
    if metrics {
        observers.push(Arc::new(crate::metrics::RunMetrics::new(&plan.pipeline)));
    }
    let emitter = events.map(|s| crate::openlineage::Emitter::start(plan.clone(), &s, None));
    if let Some(e) = &emitter {
        observers.push(e.clone());
    }
    opts.observer = Some(Arc::new(run::Tee(observers)));
    let result = run::run(plan.clone(), opts).await;
    progress.finish();
    if let Some(e) = &emitter {
        for f in e.finish().await {
            eprintln!(
                "warning: {} OpenLineage event{} not delivered ({}): {}",
                f.events,
                if f.events == 1 { "" } else { "s" },
                f.transport,
                crate::secrets::global().redact(&plan.secrets.redact(&f.last_error))
            );
        }
    }
    match result {
        Ok(report) => {
            crate::metrics::run_finished(&report);
            if !json {
                out!("{}", crate::secrets::global().redact(&render_report(&report, &plan.secrets)));
            }
            Some(report)
        }
        Err(e) => {
            crate::metrics::run_errored(&plan.pipeline);
            eprintln!("error: {}", crate::secrets::global().redact(&error_chain(&e)));
            None
        }
    }
}

pub use crate::diag::error_chain;

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
        openlineage,
        vars,
    } = &cli.command
    else {
        return EXIT_INVALID;
    };
    let lineage = openlineage.overrides();
    if let Err(e) = lineage.check() {
        eprintln!("error: --openlineage-url / OPENLINEAGE_URL: {e}");
        return EXIT_INVALID;
    }
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
        openlineage: lineage,
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

#[cfg(test)]
mod tests {
    /// The option at mimalloc 3's `purge_delay` place holds that option's default: the place
    /// is right for the mimalloc linked (one that moved it would fail here).
    #[test]
    fn purge_delay_is_where_mimalloc_3_has_it() {
        // SAFETY: reads an option.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(v, super::MI_PURGE_DELAY_DEFAULT_MS);
        }
    }
}
