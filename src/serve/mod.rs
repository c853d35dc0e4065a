//! `serve`: the scheduler daemon. It loads every pipeline in a directory, runs the scheduled
//! ones on their cron ticks (tokio-cron-scheduler fires each pipeline's next tick, computed
//! by croner in the pipeline's time zone), never runs two runs of one pipeline at once,
//! catches up on ticks missed while it was down, picks up edited files (keeping the last
//! good version when an edit is invalid), raises alerts, and serves metrics and an HTTP API.
//!
//! It sits after `run`: it calls `run::run` like the CLI does and records what it decided
//! (ticks, alerts) in the state store. A run is compiled from the pipeline text at the time
//! it starts, with the tick's logical date, so `${run_date}` and freshness checks see the
//! tick, also when it is caught up later.

pub mod alerts;
pub mod http;
mod pages;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::compile::schedule::{CATCHUP_LIMIT, NotifyPlan, SchedulePlan, Watch};
use crate::compile::{self, CompileError, Plan};
use crate::run::{self, RunOptions, RunReport, RunStatus, TaskStatus};
use crate::secrets::Secrets;
use crate::spec::{self, LoadOptions, SpecError};
use crate::spec::{Catchup, NotifyEvent, Overlap};
use crate::state::{StateError, StateStore};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(
        "refusing to serve the API on {0} (not a loopback address) without a token: set --token or WEIR_TOKEN, or listen on 127.0.0.1"
    )]
    NoToken(SocketAddr),
    #[error("the scheduler could not start: {0}")]
    Scheduler(String),
    #[error("{0}")]
    Pipelines(String),
}

pub struct ServeOptions {
    /// The directory of pipeline files.
    pub dir: PathBuf,
    /// `--var` overrides for every pipeline.
    pub vars: Vec<(String, String)>,
    pub state: Arc<StateStore>,
    pub staging_dir: PathBuf,
    /// Where the HTTP server listens (`None`: no server, as with `--once`).
    pub listen: Option<SocketAddr>,
    /// Bearer token for `/api` (required off loopback).
    pub token: Option<String>,
    /// How long running runs get to finish after SIGTERM before they are cancelled.
    pub grace: Duration,
    /// How often pipeline files are checked for changes.
    pub reload_interval: Duration,
    /// How often freshness (`stale`) is checked.
    pub stale_interval: Duration,
    /// The wait before an alert's first retry.
    pub alert_backoff: Duration,
    /// The daemon's own webhooks (`--notify`): they get the alerts of pipelines whose own
    /// webhooks are unknown (a file deleted, or broken since the daemon started).
    pub notify: Vec<NotifyPlan>,
    /// Memory budget and partitions for each run, as `weir run` takes them.
    pub memory_limit: Option<usize>,
    pub target_partitions: Option<usize>,
    /// Where OpenLineage events go, over the pipelines' own settings.
    pub openlineage: crate::openlineage::Overrides,
}

/// How often a `stale` alert that was not delivered is raised again, unless the pipeline says.
const DEFAULT_REMIND_EVERY: Duration = Duration::from_secs(3600);

/// Why a run starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// A scheduled tick; `catchup` when it was missed while the daemon was down.
    Tick { at: DateTime<Utc>, catchup: bool },
    /// `POST /api/pipelines/{name}/run`.
    Manual,
}

impl Trigger {
    fn tick(&self) -> Option<DateTime<Utc>> {
        match self {
            Trigger::Tick { at, .. } => Some(*at),
            Trigger::Manual => None,
        }
    }
}

/// Why a trigger did not start a run.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("no pipeline named `{0}`")]
    Unknown(String),
    #[error("pipeline `{0}` has no valid version to run (see its errors)")]
    Invalid(String),
    #[error("pipeline `{pipeline}` is already running (run {run_id})")]
    Running { pipeline: String, run_id: String },
    #[error("the daemon is shutting down")]
    Stopping,
}

/// The last version of a pipeline file that compiled.
#[derive(Clone)]
struct Good {
    text: String,
    /// The compiled plan (its task graph and lineage, for the status page).
    plan: Arc<Plan>,
    watch: Watch,
    secrets: Secrets,
    tasks: usize,
    description: Option<String>,
    loaded_at: DateTime<Utc>,
}

/// A pipeline file that does not compile: its problems rendered for logs and `/api`, as one
/// line each for alerts, and what could be read of its `notify` and `freshness` (the file
/// parses, but a query or an input is wrong).
struct Broken {
    rendered: Vec<String>,
    lines: Vec<(Option<String>, String)>,
    watch: Option<(Watch, Secrets)>,
    /// A server the pipeline reads could not be reached: the file may be fine, try again.
    unreachable: bool,
}

/// One pipeline file.
struct Entry {
    name: String,
    file: PathBuf,
    /// A hash of the text last read: an edit is seen whatever it does to times and sizes.
    hash: Option<String>,
    good: Option<Good>,
    /// `notify` and `freshness` of a file that is broken now, when they could be read.
    fallback: Option<(Watch, Secrets)>,
    /// Problems of the file as it is on disk (empty when that is the good version).
    errors: Vec<String>,
    /// Timer generation: a timer armed for an older version is ignored when it fires.
    generation: u64,
    job: Option<uuid::Uuid>,
    next_tick: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Runner {
    running: Option<String>,
    pending: VecDeque<Trigger>,
}

/// A finished run, for `--once`'s summary.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub pipeline: String,
    pub run_id: String,
    pub trigger: Trigger,
    pub status: String,
    pub error: Option<String>,
}

pub struct Daemon {
    opts: ServeOptions,
    /// By file path.
    entries: Mutex<BTreeMap<PathBuf, Entry>>,
    /// By pipeline name.
    runners: Mutex<HashMap<String, Runner>>,
    scheduler: tokio::sync::Mutex<Option<JobScheduler>>,
    outbox: Arc<alerts::Outbox>,
    /// The last valid `notify` and `freshness` of pipelines whose file was removed: they are
    /// still watched for freshness.
    gone: Mutex<HashMap<String, (Watch, Secrets)>>,
    /// Cancelled on shutdown: no new runs start.
    stopping: CancellationToken,
    /// Cancelled when the grace period is over: running runs stop before publishing.
    cancel_runs: CancellationToken,
    /// Runs under way.
    active: TaskTracker,
    generation: AtomicU64,
    outcomes: Mutex<Vec<Outcome>>,
    /// (pipeline, task) of change data capture slots over their `lag_alert` (alerted once).
    lagging: Mutex<HashSet<(String, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc))
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Daemon {
    pub fn new(opts: ServeOptions) -> Arc<Daemon> {
        let outbox = alerts::Outbox::new(opts.state.clone(), opts.alert_backoff);
        outbox.know(&opts.notify, crate::secrets::global());
        Arc::new(Daemon {
            opts,
            entries: Mutex::new(BTreeMap::new()),
            runners: Mutex::new(HashMap::new()),
            scheduler: tokio::sync::Mutex::new(None),
            outbox,
            gone: Mutex::new(HashMap::new()),
            stopping: CancellationToken::new(),
            cancel_runs: CancellationToken::new(),
            active: TaskTracker::new(),
            generation: AtomicU64::new(0),
            outcomes: Mutex::new(Vec::new()),
            lagging: Mutex::new(HashSet::new()),
        })
    }

    pub fn state(&self) -> &StateStore {
        &self.opts.state
    }

    fn load_options(&self, run_id: &str, run_date: &str) -> LoadOptions {
        let mut o = LoadOptions::new(run_id, run_date);
        o.vars = self.opts.vars.iter().cloned().collect::<IndexMap<_, _>>();
        o
    }

    /// Parse and compile a pipeline text.
    async fn compile_text(&self, file: &Path, text: &str, run_id: &str, run_date: &str) -> Result<Plan, Broken> {
        let opts = self.load_options(run_id, run_date);
        let loaded = match spec::parse(file, text.to_string(), &opts) {
            Ok(l) => l,
            Err(SpecError::Invalid(d)) => {
                return Err(Broken { rendered: render_all(&d), lines: lines(&d), watch: None, unreachable: false });
            }
            Err(e) => {
                let e = crate::secrets::global().redact(&e.to_string());
                return Err(Broken {
                    rendered: vec![e.clone()],
                    lines: vec![(None, e)],
                    watch: None,
                    unreachable: false,
                });
            }
        };
        let cache: &dyn compile::SchemaCache = self.opts.state.as_ref();
        match compile::compile_cached(&loaded, Some(cache)).await {
            Ok(p) => Ok(p),
            Err(CompileError::Invalid(d)) => {
                let mut ignored = Vec::new();
                let watch = compile::schedule::compile_watch(&loaded, &mut ignored);
                let unreachable = d.iter().any(|x| x.code == compile::UNREACHABLE);
                Err(Broken {
                    rendered: render_all(&d),
                    lines: lines(&d),
                    watch: Some((watch, loaded.secrets.clone())),
                    unreachable,
                })
            }
        }
    }

    /// Scan the directory: load new files, reload changed ones, drop removed ones. Returns
    /// the names of pipelines whose schedule must be (re)armed.
    pub async fn scan(self: &Arc<Self>) -> Vec<PathBuf> {
        let files = match spec::discover(std::slice::from_ref(&self.opts.dir)) {
            Ok(f) => f,
            Err(SpecError::NoPipelines(_)) => Vec::new(),
            Err(e) => {
                tracing::error!("{e}");
                return Vec::new();
            }
        };
        let mut changed = Vec::new();
        // Removed files: unscheduled (a run under way finishes).
        let removed: Vec<PathBuf> = lock(&self.entries).keys().filter(|f| !files.contains(f)).cloned().collect();
        for f in removed {
            if let Some(e) = lock(&self.entries).remove(&f) {
                tracing::warn!(pipeline = %e.name, file = %f.display(), "pipeline file removed: unscheduled, still watched for freshness");
                metrics::gauge!(crate::metrics::PIPELINE_LOAD_ERRORS, "pipeline" => e.name.clone()).set(0.0);
                if let Some(w) = e.good.map(|g| (g.watch, g.secrets)).or(e.fallback) {
                    lock(&self.gone).insert(e.name.clone(), w);
                }
                changed.push(f);
            }
        }
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(file = %file.display(), "cannot read: {e}");
                    continue;
                }
            };
            // Pipeline files are small: reading and hashing them every scan sees every edit,
            // also one that keeps the size and modification time (`cp -p`, `touch -r`).
            let hash = blake3::hash(text.as_bytes()).to_hex().to_string();
            let known = lock(&self.entries).get(&file).map(|e| e.hash.clone());
            if known.is_some_and(|h| h.as_deref() == Some(hash.as_str())) {
                continue;
            }
            let today = Utc::now().format("%Y-%m-%d").to_string();
            let result = self.compile_text(&file, &text, "validate", &today).await;
            let result = result.and_then(|plan| {
                // Names key the run history: two files may not share one.
                let taken = lock(&self.entries).values().any(|e| e.file != file && e.name == plan.pipeline);
                if taken {
                    let msg = format!(
                        "{}: pipeline name `{}` is already used by another file in {}; give each pipeline its own `pipeline:` name",
                        file.display(),
                        plan.pipeline,
                        self.opts.dir.display()
                    );
                    Err(Broken { rendered: vec![msg.clone()], lines: vec![(None, msg)], watch: None, unreachable: false })
                } else {
                    Ok(plan)
                }
            });
            let mut entries = lock(&self.entries);
            let fallback = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let entry = entries.entry(file.clone()).or_insert_with(|| Entry {
                name: fallback,
                file: file.clone(),
                hash: None,
                good: None,
                fallback: None,
                errors: Vec::new(),
                generation: 0,
                job: None,
                next_tick: None,
            });
            entry.hash = Some(hash);
            match result {
                Ok(plan) => {
                    let reloaded = entry.good.is_some();
                    entry.name = plan.pipeline.clone();
                    entry.errors.clear();
                    entry.fallback = None;
                    lock(&self.gone).remove(&entry.name);
                    self.outbox.know(&plan.watch.notify, &plan.secrets);
                    let _ = self.state().watched(&entry.name);
                    let _ = self.state().set_freshness(&entry.name, plan.watch.stale_after, plan.watch.remind_every);
                    let plan = Arc::new(plan);
                    entry.good = Some(Good {
                        text,
                        plan: plan.clone(),
                        watch: plan.watch.clone(),
                        secrets: plan.secrets.clone(),
                        tasks: plan.graph.node_count(),
                        description: plan.description.clone(),
                        loaded_at: Utc::now(),
                    });
                    metrics::gauge!(crate::metrics::PIPELINE_LOAD_ERRORS, "pipeline" => entry.name.clone()).set(0.0);
                    tracing::info!(
                        pipeline = %entry.name,
                        file = %file.display(),
                        schedule = plan.watch.schedule.as_ref().map(|s| s.describe()).unwrap_or_else(|| "none".into()),
                        "{}", if reloaded { "pipeline reloaded" } else { "pipeline loaded" }
                    );
                    changed.push(file.clone());
                }
                Err(broken) => {
                    let errors = broken.rendered;
                    if let Some((w, secrets)) = &broken.watch {
                        self.outbox.know(&w.notify, secrets);
                    }
                    // A server it reads is unreachable: not this file's fault. It is compiled
                    // again at the next scan (the file is not marked as seen), so the pipeline
                    // is scheduled as soon as the server answers.
                    if broken.unreachable {
                        entry.hash = None;
                    }
                    entry.fallback = broken.watch;
                    let kept = entry.good.is_some();
                    tracing::error!(
                        pipeline = %entry.name,
                        file = %file.display(),
                        problems = errors.len(),
                        "{}:\n{}",
                        match (broken.unreachable, kept) {
                            (true, true) => "a server it reads is unreachable: the edit is compiled again at the next scan; the previous version stays scheduled",
                            (true, false) => "a server it reads is unreachable: not scheduled yet, compiled again at the next scan",
                            (false, true) => "invalid edit: the previous version stays scheduled",
                            (false, false) => "invalid pipeline: not scheduled",
                        },
                        errors.join("\n")
                    );
                    metrics::gauge!(crate::metrics::PIPELINE_LOAD_ERRORS, "pipeline" => entry.name.clone())
                        .set(errors.len() as f64);
                    if !kept && entry.fallback.is_some() {
                        // Watched for freshness under its name even though it cannot run.
                        let _ = self.state().watched(&entry.name);
                    }
                    entry.errors = errors;
                }
            }
        }
        changed
    }

    /// Names of the pipelines with a good version.
    fn good_pipelines(&self) -> Vec<(PathBuf, String, Good)> {
        lock(&self.entries)
            .values()
            .filter_map(|e| e.good.clone().map(|g| (e.file.clone(), e.name.clone(), g)))
            .collect()
    }

    fn find(&self, name: &str) -> Option<(PathBuf, Good)> {
        lock(&self.entries).values().find(|e| e.name == name).and_then(|e| e.good.clone().map(|g| (e.file.clone(), g)))
    }

    /// At start: record runs a killed daemon left behind as abandoned (their ticks become
    /// missed ticks again), then apply each schedule's catch-up policy as of `now`.
    pub fn recover_and_catch_up(self: &Arc<Self>, now: DateTime<Utc>) {
        for (_, name, good) in self.good_pipelines() {
            match self.state().abandon_orphans(&name) {
                Ok(ids) if !ids.is_empty() => {
                    tracing::warn!(pipeline = %name, runs = ?ids, "runs interrupted by a stopped daemon recorded as abandoned")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(pipeline = %name, "{e}"),
            }
            if let Some(s) = &good.watch.schedule {
                self.catch_up(&name, s, now);
            }
        }
    }

    /// Ticks of `name` missed before `now`, handled by its `catchup` policy.
    fn catch_up(self: &Arc<Self>, name: &str, s: &SchedulePlan, now: DateTime<Utc>) {
        let state = self.state();
        let since = match state.last_tick(name) {
            Ok(Some(t)) => parse_ts(&t),
            Ok(None) => state.watched(name).ok().and_then(|w| parse_ts(&w.first_seen)),
            Err(e) => {
                tracing::error!(pipeline = %name, "{e}");
                None
            }
        };
        let Some(since) = since else { return };
        let missed = s.ticks_between(since, now);
        let Some(&newest) = missed.last() else { return };
        let skip = |ticks: &[DateTime<Utc>], why: &str| {
            // The newest ones are recorded (what the history shows); older are only counted.
            let from = ticks.len().saturating_sub(CATCHUP_LIMIT);
            for t in &ticks[from..] {
                let _ = state.record_tick(name, &ts(*t), why, None);
            }
            metrics::counter!(crate::metrics::TICKS_TOTAL, "pipeline" => name.to_string(), "action" => "skipped")
                .increment(ticks.len() as u64);
        };
        tracing::info!(pipeline = %name, missed = missed.len(), policy = ?s.catchup, "ticks missed while the daemon was down");
        match s.catchup {
            Catchup::None => skip(&missed, "skipped: catchup none"),
            Catchup::Last => {
                skip(&missed[..missed.len() - 1], "skipped: catchup last");
                let _ = self.trigger(name, Trigger::Tick { at: newest, catchup: true });
            }
            Catchup::All => {
                let from = missed.len().saturating_sub(CATCHUP_LIMIT);
                if from > 0 {
                    tracing::warn!(pipeline = %name, skipped = from, "catchup all runs the newest {CATCHUP_LIMIT} missed ticks; older ones are skipped");
                    skip(&missed[..from], "skipped: catchup limit");
                }
                for t in &missed[from..] {
                    let _ = self.trigger(name, Trigger::Tick { at: *t, catchup: true });
                }
            }
        }
    }

    /// Start a run of `name`, or deal with the trigger as the overlap policy says when one
    /// is running. Returns the new run's id.
    pub fn trigger(self: &Arc<Self>, name: &str, t: Trigger) -> Result<String, TriggerError> {
        if self.stopping.is_cancelled() {
            return Err(TriggerError::Stopping);
        }
        let Some((_, good)) = self.find(name) else {
            let exists = lock(&self.entries).values().any(|e| e.name == name);
            return Err(if exists { TriggerError::Invalid(name.into()) } else { TriggerError::Unknown(name.into()) });
        };
        let overlap = good.watch.schedule.as_ref().map(|s| s.overlap).unwrap_or_default();
        let mut runners = lock(&self.runners);
        let r = runners.entry(name.to_string()).or_default();
        if let Some(current) = r.running.clone() {
            let record = |action: &str| {
                if let Some(at) = t.tick() {
                    let _ = self.state().record_tick(name, &ts(at), action, None);
                    let kind = if action == "queued" { "queued" } else { "skipped" };
                    metrics::counter!(crate::metrics::TICKS_TOTAL, "pipeline" => name.to_string(), "action" => kind)
                        .increment(1);
                }
            };
            match t {
                Trigger::Manual => return Err(TriggerError::Running { pipeline: name.into(), run_id: current }),
                Trigger::Tick { catchup: true, .. } => {
                    r.pending.push_back(t);
                    record("queued");
                }
                Trigger::Tick { catchup: false, at } => {
                    let waiting = r.pending.iter().any(|p| matches!(p, Trigger::Tick { catchup: false, .. }));
                    match overlap {
                        Overlap::Queue if !waiting => {
                            r.pending.push_back(t);
                            record("queued");
                            tracing::info!(pipeline = %name, tick = %at, running = %current, "tick queued behind the running run");
                        }
                        Overlap::Queue => {
                            record("skipped: queue full");
                            tracing::warn!(pipeline = %name, tick = %at, running = %current, "tick skipped: a tick is already queued behind the running run");
                        }
                        Overlap::Skip => {
                            record("skipped: overlap");
                            tracing::warn!(pipeline = %name, tick = %at, running = %current, "tick skipped: the previous run is still going");
                        }
                    }
                }
            }
            return Err(TriggerError::Running { pipeline: name.into(), run_id: current });
        }
        let run_id = run::new_run_id();
        r.running = Some(run_id.clone());
        drop(runners);
        let me = self.clone();
        let (n, id) = (name.to_string(), run_id.clone());
        self.active.spawn(async move { me.execute(n, t, id).await });
        Ok(run_id)
    }

    /// One run, then whatever waits behind it.
    async fn execute(self: Arc<Self>, name: String, trigger: Trigger, run_id: String) {
        let mut next = Some((trigger, run_id));
        while let Some((t, id)) = next.take() {
            self.execute_one(&name, t, &id).await;
            let mut runners = lock(&self.runners);
            let r = runners.entry(name.clone()).or_default();
            r.running = None;
            if self.stopping.is_cancelled() {
                // Queued ticks stay `queued` in the state store: catch-up handles them after a restart.
                break;
            }
            if let Some(t) = r.pending.pop_front() {
                let id = run::new_run_id();
                r.running = Some(id.clone());
                next = Some((t, id));
            }
        }
    }

    async fn execute_one(self: &Arc<Self>, name: &str, trigger: Trigger, run_id: &str) {
        let Some((file, good)) = self.find(name) else { return };
        let state = self.opts.state.clone();
        let tz = good.watch.schedule.as_ref().map(|s| s.timezone);
        let (run_date, logical_time) = match (trigger.tick(), tz) {
            (Some(at), Some(tz)) => (at.with_timezone(&tz).format("%Y-%m-%d").to_string(), Some(at)),
            (Some(at), None) => (at.format("%Y-%m-%d").to_string(), Some(at)),
            (None, _) => (Utc::now().format("%Y-%m-%d").to_string(), None),
        };
        if let Some(at) = trigger.tick() {
            let lag = (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!(crate::metrics::SCHEDULER_LAG).set(lag);
            // Another process (a `weir run` by hand) holding the pipeline: the tick is skipped,
            // not run (it would fail on the lock).
            if let Ok(Some((other, pid))) = state.lock_holder(name) {
                self.skipped_elsewhere(name, at, trigger, run_id, &other, pid);
                return;
            }
            let _ = state.record_tick(name, &ts(at), "ran", Some(run_id));
            metrics::counter!(crate::metrics::TICKS_TOTAL, "pipeline" => name.to_string(), "action" => "ran")
                .increment(1);
        }
        tracing::info!(pipeline = %name, run_id, trigger = ?trigger, "run starting");
        let plan = match self.compile_text(&file, &good.text, run_id, &run_date).await {
            Ok(p) => Arc::new(p),
            Err(broken) => {
                // It compiled when loaded; now its inputs say otherwise (a schema changed, a
                // store is unreachable). That is a failed run, recorded and alerted, naming
                // each task with its problem.
                let error = format!("the pipeline does not compile any more:\n{}", broken.rendered.join("\n"));
                let _ = state.run_started(run_id, name, &run_date);
                let _ = state.run_finished(run_id, "failed", Some(&error));
                crate::metrics::run_errored(name);
                tracing::error!(pipeline = %name, run_id, "{error}");
                self.record_outcome(name, run_id, trigger, "failed", Some(error.clone()));
                let mut tasks: Vec<alerts::FailedTask> = Vec::new();
                let mut general: Vec<String> = Vec::new();
                for (task, line) in broken.lines {
                    match task {
                        Some(t) => match tasks.iter_mut().find(|f| f.task == t) {
                            Some(f) => f.error = format!("{}; {line}", f.error),
                            None => tasks.push(alerts::FailedTask { task: t, error: line, fused: Vec::new() }),
                        },
                        None => general.push(line),
                    }
                }
                let summary = format!("the pipeline does not compile any more: {}", general.join("; "));
                self.after_failure(name, run_id, &good, tasks, &summary, false);
                return;
            }
        };
        let mut observers: Vec<Arc<dyn run::Observer>> = vec![Arc::new(crate::metrics::RunMetrics::new(name))];
        let emitter = self
            .opts
            .openlineage
            .settings(plan.openlineage.as_ref())
            .map(|s| crate::openlineage::Emitter::start(plan.clone(), &s, trigger.tick()));
        if let Some(e) = &emitter {
            observers.push(e.clone());
        }
        let opts = RunOptions {
            run_id: run_id.to_string(),
            run_date,
            select: None,
            staging_dir: self.opts.staging_dir.clone(),
            cancel: self.cancel_runs.child_token(),
            observer: Some(Arc::new(run::Tee(observers))),
            state: Some(state.clone()),
            target_partitions: self.opts.target_partitions,
            memory_limit: self.opts.memory_limit,
            full_refresh: false,
            resume: None,
            logical_time,
            engine: None,
        };
        let result = run::run(plan.clone(), opts).await;
        if let Some(e) = emitter {
            if self.opts.listen.is_none() {
                // `--once`: the process ends after this; what is queued goes out first.
                e.finish().await;
            } else {
                // Delivered in the background: a slow consumer never holds the scheduler up.
                tokio::spawn(async move {
                    e.finish().await;
                });
            }
        }
        match result {
            Ok(report) => {
                crate::metrics::run_finished(&report);
                tracing::info!(pipeline = %name, run_id, status = report.status.as_str(), seconds = report.duration.as_secs_f64(), "run finished");
                let error = failed_tasks(&plan, &report).first().map(|t| t.error.clone());
                self.record_outcome(name, run_id, trigger, report.status.as_str(), error);
                self.after_run(name, &good, &plan, &report);
            }
            Err(run::RunError::State(StateError::Locked { run_id: other, pid, .. })) => {
                // Another process took the pipeline between the check above and the run.
                match trigger.tick() {
                    Some(at) => {
                        let _ = state.retag_tick(name, &ts(at), "skipped: running elsewhere", Some(&other));
                        self.skipped_elsewhere(name, at, trigger, run_id, &other, pid);
                    }
                    None => self.skipped_elsewhere_manual(name, trigger, run_id, &other, pid),
                }
            }
            Err(e) => {
                let error = plan.secrets.redact(&e.to_string());
                crate::metrics::run_errored(name);
                tracing::error!(pipeline = %name, run_id, "run failed: {error}");
                self.record_outcome(name, run_id, trigger, "failed", Some(error.clone()));
                self.after_failure(name, run_id, &good, Vec::new(), &error, false);
            }
        }
    }

    /// A tick not run because another process runs the pipeline.
    fn skipped_elsewhere(&self, name: &str, at: DateTime<Utc>, trigger: Trigger, run_id: &str, other: &str, pid: i64) {
        let _ = self.state().record_tick(name, &ts(at), "skipped: running elsewhere", Some(other));
        metrics::counter!(crate::metrics::TICKS_TOTAL, "pipeline" => name.to_string(), "action" => "skipped")
            .increment(1);
        self.skipped_elsewhere_manual(name, trigger, run_id, other, pid);
    }

    fn skipped_elsewhere_manual(&self, name: &str, trigger: Trigger, run_id: &str, other: &str, pid: i64) {
        tracing::warn!(pipeline = %name, other_run = %other, pid, "not run: another process is running this pipeline");
        self.record_outcome(
            name,
            run_id,
            trigger,
            "skipped",
            Some(format!("run {other} of another process was running")),
        );
    }

    fn record_outcome(&self, name: &str, run_id: &str, trigger: Trigger, status: &str, error: Option<String>) {
        lock(&self.outcomes).push(Outcome {
            pipeline: name.into(),
            run_id: run_id.into(),
            trigger,
            status: status.into(),
            error,
        });
    }

    /// Alerts for a finished run, queued (the outbox delivers them; the run is over).
    fn after_run(&self, name: &str, good: &Good, plan: &Plan, report: &RunReport) {
        self.slot_alerts(name, good, report);
        match report.status {
            RunStatus::Succeeded => {
                let w = self.state().watched(name).ok();
                if let Some(w) = w
                    && w.health != "ok"
                {
                    let _ = self.state().set_health(name, "ok", None);
                    let alert = alerts::Alert::new(NotifyEvent::Recovered, name, Some(&report.run_id), None, None);
                    self.outbox.queue(&good.watch.notify, NotifyEvent::Recovered, alert, &good.secrets);
                }
            }
            // Stopped by a shutdown: not the pipeline's fault.
            RunStatus::Cancelled => {}
            RunStatus::Failed => {
                let tasks = failed_tasks(plan, report);
                if tasks.is_empty() {
                    return;
                }
                let checks_only = report
                    .tasks
                    .iter()
                    .filter(|t| t.status == TaskStatus::Failed)
                    .all(|t| t.checks.iter().any(|c| c.status == run::CheckStatus::Failed));
                let summary = tasks.first().map(|t| t.error.clone()).unwrap_or_default();
                self.after_failure(name, &report.run_id, good, tasks, &summary, checks_only);
            }
        }
    }

    /// `cdc_lag` for each slot that went over its `lag_alert` with this run (once, until it
    /// comes back under).
    fn slot_alerts(&self, name: &str, good: &Good, report: &RunReport) {
        for s in &report.slots {
            let key = (name.to_string(), s.task.clone());
            let over = s.alert_bytes.is_some_and(|limit| s.lag_bytes > limit);
            let newly = if over {
                lock(&self.lagging).insert(key)
            } else {
                lock(&self.lagging).remove(&key);
                false
            };
            if !newly {
                continue;
            }
            let why = format!(
                "slot `{}` of task `{}` holds {} bytes of WAL on its server, more than its `lag_alert` ({} bytes): runs are not keeping up with the changes, or have stopped. The server keeps this WAL until the slot moves; `weir cdc drop` removes the slot of a pipeline that is gone",
                s.slot,
                s.task,
                s.lag_bytes,
                s.alert_bytes.unwrap_or_default()
            );
            let alert = alerts::Alert::new(NotifyEvent::CdcLag, name, Some(&report.run_id), Some(&s.task), Some(&why));
            self.outbox.queue(&good.watch.notify, NotifyEvent::CdcLag, alert, &good.secrets);
        }
    }

    /// `check_failed` when the run failed only on checks (hooks that do not take
    /// `check_failed` get it as a `failure`), else `failure`. Queued, not awaited.
    fn after_failure(
        &self,
        name: &str,
        run_id: &str,
        good: &Good,
        tasks: Vec<alerts::FailedTask>,
        error: &str,
        checks_only: bool,
    ) {
        let stale_for = self.state().watched(name).ok().and_then(|w| w.stale_alerted_for);
        let _ = self.state().set_health(name, "failing", stale_for.as_deref());
        let hooks = &good.watch.notify;
        let error = (!error.is_empty()).then_some(error);
        if checks_only {
            let (cf, rest): (Vec<_>, Vec<_>) =
                hooks.iter().cloned().partition(|h| h.on.contains(&NotifyEvent::CheckFailed));
            let alert = alerts::Alert::with_tasks(NotifyEvent::CheckFailed, name, Some(run_id), tasks.clone(), error);
            self.outbox.queue(&cf, NotifyEvent::CheckFailed, alert, &good.secrets);
            let alert = alerts::Alert::with_tasks(NotifyEvent::Failure, name, Some(run_id), tasks, error);
            self.outbox.queue(&rest, NotifyEvent::Failure, alert, &good.secrets);
        } else {
            let alert = alerts::Alert::with_tasks(NotifyEvent::Failure, name, Some(run_id), tasks, error);
            self.outbox.queue(hooks, NotifyEvent::Failure, alert, &good.secrets);
        }
    }

    /// The `notify` and `freshness` the daemon knows for pipeline `name`: its valid version's,
    /// else what a broken file of it says, else the last valid version of a removed file.
    fn watch_of(&self, name: &str) -> Option<(Watch, Secrets)> {
        let from_entry = lock(&self.entries)
            .values()
            .find(|e| e.name == name)
            .and_then(|e| e.good.as_ref().map(|g| (g.watch.clone(), g.secrets.clone())).or_else(|| e.fallback.clone()));
        from_entry.or_else(|| lock(&self.gone).get(name).cloned())
    }

    /// The dead-man's switch: a `stale` alert for each pipeline weir has watched whose last
    /// success (or, if it never succeeded, the time weir first saw it) is older than its
    /// `freshness.warn_after` — also when its file is broken or gone: freshness belongs to the
    /// pipeline's name and history, not to a valid file. One alert per silence, raised again
    /// every `remind_every` while none of its deliveries succeeded.
    pub fn check_stale(self: &Arc<Self>, now: DateTime<Utc>) {
        let mut names: Vec<String> = self.state().watched_pipelines().unwrap_or_default();
        for e in lock(&self.entries).values() {
            if !names.contains(&e.name) {
                names.push(e.name.clone());
            }
        }
        for name in names {
            let watch = self.watch_of(&name);
            let Ok(w) = self.state().watched(&name) else { continue };
            let Some(after) = watch.as_ref().and_then(|(w, _)| w.stale_after).or(w.warn_after) else { continue };
            let remind =
                watch.as_ref().and_then(|(w, _)| w.remind_every).or(w.remind_every).unwrap_or(DEFAULT_REMIND_EVERY);
            let last = self.state().last_success(&name).ok().flatten();
            let reference = last.clone().unwrap_or_else(|| w.first_seen.clone());
            let Some(since) = parse_ts(&reference) else { continue };
            let silent = (now - since).to_std().unwrap_or_default();
            if silent <= after {
                continue;
            }
            if w.stale_alerted_for.as_deref() == Some(reference.as_str()) {
                // Alerted for this silence: again only when no delivery of it succeeded or is
                // still being tried, and the last one is `remind_every` old.
                let raised = self.state().stale_alerts(&name, &reference).unwrap_or_default();
                let trying = raised.iter().any(|(status, _, _)| status == "delivered" || status == "pending");
                let newest = raised.first().and_then(|(_, created, _)| parse_ts(created));
                if trying || newest.is_some_and(|t| (now - t).to_std().unwrap_or_default() < remind) {
                    continue;
                }
            }
            let window = humantime::format_duration(after);
            let mut why = match &last {
                Some(t) => format!("no successful run since {t} (freshness.warn_after: {window})"),
                None => format!(
                    "no successful run since weir started watching it at {} (freshness.warn_after: {window})",
                    w.first_seen
                ),
            };
            let schedulable = lock(&self.entries).values().any(|e| e.name == name && e.good.is_some());
            if !schedulable {
                why.push_str(if lock(&self.gone).contains_key(&name) || watch.is_none() {
                    "; its pipeline file is gone or cannot be read, so it is not scheduled"
                } else {
                    "; its pipeline file is invalid, so it is not scheduled"
                });
            }
            tracing::warn!(pipeline = %name, "stale: {why}");
            let _ = self.state().set_health(&name, "stale", Some(&reference));
            let alert = alerts::Alert::new(NotifyEvent::Stale, &name, None, None, Some(&why));
            match &watch {
                Some((w, secrets)) if !w.notify.is_empty() => {
                    self.outbox.queue(&w.notify, NotifyEvent::Stale, alert, secrets);
                }
                // No webhook of its own is known: the daemon's (`--notify`).
                _ if !self.opts.notify.is_empty() => {
                    self.outbox.queue(&self.opts.notify, NotifyEvent::Stale, alert, crate::secrets::global());
                }
                _ => {
                    tracing::error!(pipeline = %name, "stale, and no webhook to tell (set `notify` in the pipeline, or `weir serve --notify`)")
                }
            }
        }
    }

    /// Arm the timer of each file in `files` for its schedule's next tick after `now`.
    pub async fn arm(self: &Arc<Self>, files: &[PathBuf], now: DateTime<Utc>) {
        for f in files {
            let (old, plan) = {
                let mut entries = lock(&self.entries);
                let Some(e) = entries.get_mut(f) else { continue };
                let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                e.generation = g;
                let schedule = e.good.as_ref().and_then(|g| g.watch.schedule.clone());
                // A tick that was due under the old timer and has not fired yet is not lost.
                let from = e.next_tick.filter(|t| *t <= now).map(|t| t - chrono::Duration::seconds(1)).unwrap_or(now);
                let next = schedule.as_ref().and_then(|s| s.next_after(from));
                e.next_tick = next;
                (e.job.take(), next.map(|n| (n, g, e.name.clone())))
            };
            let sched = self.scheduler.lock().await;
            let Some(sched) = sched.as_ref() else { continue };
            if let Some(old) = old {
                let _ = sched.remove(&old).await;
            }
            if let Some((tick, g, name)) = plan {
                match self.timer(sched, f.clone(), g, tick).await {
                    Ok(id) => {
                        if let Some(e) = lock(&self.entries).get_mut(f) {
                            e.job = Some(id);
                        }
                        tracing::debug!(pipeline = %name, next = %tick, "scheduled");
                    }
                    Err(e) => tracing::error!(pipeline = %name, "cannot schedule: {e}"),
                }
            }
        }
    }

    /// A one-shot timer at `tick`: it starts the tick's run and arms the next tick. (Boxed
    /// with an explicit `Send`: the timer's callback arms the next timer.)
    fn timer<'a>(
        self: &'a Arc<Self>,
        sched: &'a JobScheduler,
        file: PathBuf,
        generation: u64,
        tick: DateTime<Utc>,
    ) -> futures::future::BoxFuture<'a, Result<uuid::Uuid, String>> {
        let wait = (tick - Utc::now()).to_std().unwrap_or_default();
        let me = Arc::downgrade(self);
        let job = Job::new_one_shot_at_instant_async(std::time::Instant::now() + wait, move |_, _| {
            let me = me.clone();
            let file = file.clone();
            Box::pin(async move {
                if let Some(me) = me.upgrade() {
                    me.fired(file, generation, tick).await;
                }
            })
        });
        Box::pin(async move {
            let job = job.map_err(|e| e.to_string())?;
            sched.add(job).await.map_err(|e| e.to_string())
        })
    }

    async fn fired(self: Arc<Self>, file: PathBuf, generation: u64, tick: DateTime<Utc>) {
        // The scheduler works in whole seconds: never start before the tick.
        if let Ok(early) = (tick - Utc::now()).to_std() {
            tokio::time::sleep(early).await;
        }
        let (name, schedule) = {
            let mut entries = lock(&self.entries);
            let Some(e) = entries.get_mut(&file).filter(|e| e.generation == generation) else { return };
            // Taken: a reload arming a new timer now must not see this tick as still due.
            e.next_tick = None;
            (e.name.clone(), e.good.as_ref().and_then(|g| g.watch.schedule.clone()))
        };
        if self.stopping.is_cancelled() {
            return;
        }
        let Some(schedule) = schedule else { return };
        let _ = self.trigger(&name, Trigger::Tick { at: tick, catchup: false });
        // The next tick after this one (if the daemon fell behind, it is due at once).
        let next = schedule.next_after(tick);
        let sched = self.scheduler.lock().await;
        let Some(sched) = sched.as_ref() else { return };
        let Some(next) = next else { return };
        let g = {
            let mut entries = lock(&self.entries);
            let Some(e) = entries.get_mut(&file).filter(|e| e.generation == generation) else { return };
            e.next_tick = Some(next);
            e.job = None;
            e.generation
        };
        match self.timer(sched, file.clone(), g, next).await {
            Ok(id) => {
                if let Some(e) = lock(&self.entries).get_mut(&file).filter(|e| e.generation == g) {
                    e.job = Some(id);
                }
            }
            Err(e) => tracing::error!(pipeline = %name, "cannot schedule the next tick: {e}"),
        }
    }

    /// Finished runs so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        lock(&self.outcomes).clone()
    }

    /// Wait until runs and deliveries under way are done.
    pub async fn drain(&self) {
        self.active.close();
        self.active.wait().await;
    }

    /// For the API: every pipeline with what the daemon knows of it.
    pub fn pipelines_json(&self) -> serde_json::Value {
        let entries = lock(&self.entries);
        let runners = lock(&self.runners);
        let mut out = Vec::new();
        for e in entries.values() {
            let state = self.state();
            let last = state.runs(Some(&e.name), 1).ok().and_then(|r| r.into_iter().next());
            let watched = state.watched(&e.name).ok();
            let good = e.good.as_ref();
            let schedule = good.and_then(|g| g.watch.schedule.as_ref());
            out.push(serde_json::json!({
                "name": e.name,
                "file": e.file.display().to_string(),
                "valid": e.errors.is_empty(),
                "loaded_at": good.map(|g| ts(g.loaded_at)),
                "description": good.and_then(|g| g.description.clone()),
                "tasks": good.map(|g| g.tasks),
                "errors": e.errors,
                "schedule": schedule.map(|s| serde_json::json!({
                    "cron": s.expr,
                    "timezone": s.timezone.name(),
                    "catchup": s.catchup,
                    "overlap": s.overlap,
                })),
                "next_tick": e.next_tick.map(ts),
                "notify": good.map(|g| g.watch.notify.iter().map(|n| serde_json::json!({"url": "***", "on": n.on})).collect::<Vec<_>>()),
                "freshness": good.and_then(|g| g.watch.stale_after).map(|d| humantime::format_duration(d).to_string()),
                "running": runners.get(&e.name).and_then(|r| r.running.clone()),
                "queued": runners.get(&e.name).map(|r| r.pending.len()).unwrap_or(0),
                // Without a valid version a pipeline is not `ok` (but `stale` or `failing` say more).
                "health": match (good, watched.as_ref().map(|w| w.health.as_str())) {
                    (None, None | Some("ok")) => Some("invalid".to_string()),
                    (_, h) => h.map(str::to_string),
                },
                "last_success": state.last_success(&e.name).ok().flatten(),
                "last_run": last.map(|r| serde_json::json!({
                    "run_id": r.run_id, "status": r.status, "started_at": r.started_at,
                    "finished_at": r.finished_at, "error": r.error,
                })),
            }));
        }
        serde_json::Value::Array(out)
    }

    /// Every pipeline name the daemon knows: loaded, broken, removed, or in its history.
    pub fn known_pipelines(&self) -> Vec<String> {
        let mut names: Vec<String> = self.state().watched_pipelines().unwrap_or_default();
        names.extend(lock(&self.entries).values().map(|e| e.name.clone()));
        if let Ok(runs) = self.state().runs(None, 1000) {
            names.extend(runs.into_iter().map(|r| r.pipeline));
        }
        names.sort();
        names.dedup();
        names
    }

    /// The compiled plan of the pipeline's last valid version.
    pub fn plan_of(&self, name: &str) -> Option<Arc<Plan>> {
        lock(&self.entries).values().find(|e| e.name == name).and_then(|e| e.good.as_ref()).map(|g| g.plan.clone())
    }

    pub fn token(&self) -> Option<&str> {
        self.opts.token.as_deref()
    }

    /// Pipelines whose file on disk is invalid, with the rendered problems.
    pub fn errors(&self) -> Vec<(String, Vec<String>)> {
        lock(&self.entries)
            .values()
            .filter(|e| !e.errors.is_empty())
            .map(|e| (e.name.clone(), e.errors.clone()))
            .collect()
    }

    pub fn pipeline_count(&self) -> (usize, usize) {
        let e = lock(&self.entries);
        (e.len(), e.values().filter(|e| !e.errors.is_empty()).count())
    }
}

/// Every failed task of a run with its own error, on one line, and the transforms fused into
/// its query (a failure may be in one of them).
fn failed_tasks(plan: &Plan, report: &RunReport) -> Vec<alerts::FailedTask> {
    report
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .map(|t| alerts::FailedTask {
            task: t.name.clone(),
            error: alerts::one_line(&plan.secrets.redact(t.error.as_deref().unwrap_or("unknown error"))),
            fused: plan.index_of(&t.name).map(|i| plan.fused_into(i)).unwrap_or_default(),
        })
        .collect()
}

fn render_all(diags: &[crate::diag::Diagnostic]) -> Vec<String> {
    diags.iter().map(|d| crate::secrets::global().redact(&crate::diag::render(d, false))).collect()
}

/// Each problem as one plain line (`file:line:col: message (help)`), with its task.
fn lines(diags: &[crate::diag::Diagnostic]) -> Vec<(Option<String>, String)> {
    diags
        .iter()
        .map(|d| {
            let place = d.place().map(|p| format!("{p}: ")).unwrap_or_default();
            let help = d.help.as_ref().map(|h| format!(" ({h})")).unwrap_or_default();
            let line = alerts::one_line(&format!("{place}{}{help}", d.message));
            (d.task.clone(), crate::secrets::global().redact(&line))
        })
        .collect()
}

/// `weir serve --once`: load the pipelines, run what is due now (ticks missed since the last
/// handled one, by each catch-up policy), check freshness, wait for runs and alerts, exit.
pub async fn once(opts: ServeOptions) -> Result<(Arc<Daemon>, Vec<Outcome>), ServeError> {
    crate::metrics::install();
    let d = Daemon::new(opts);
    d.scan().await;
    let now = Utc::now();
    d.recover_and_catch_up(now);
    d.check_stale(now);
    let stop = CancellationToken::new();
    let outbox = tokio::spawn(d.outbox.clone().run(stop.clone()));
    d.drain().await;
    // Alerts queued by the runs and the freshness check (and left by earlier runs) are
    // delivered for up to `--grace`; what is still pending then waits for the next start.
    let until = tokio::time::Instant::now() + d.opts.grace;
    while tokio::time::Instant::now() < until && d.state().next_alert_due().ok().flatten().is_some() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let _ = outbox.await;
    let outcomes = d.outcomes();
    Ok((d, outcomes))
}

/// `weir serve`: run until SIGTERM / SIGINT.
pub async fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    crate::metrics::install();
    if let Some(addr) = opts.listen
        && !addr.ip().is_loopback()
        && opts.token.is_none()
    {
        return Err(ServeError::NoToken(addr));
    }
    let listener = match opts.listen {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| ServeError::Listen { addr, source: e })?)
        }
        None => None,
    };
    let d = Daemon::new(opts);
    let sched = JobScheduler::new().await.map_err(|e| ServeError::Scheduler(e.to_string()))?;
    sched.start().await.map_err(|e| ServeError::Scheduler(e.to_string()))?;
    *d.scheduler.lock().await = Some(sched);

    let files = d.scan().await;
    let (total, invalid) = d.pipeline_count();
    tracing::info!(pipelines = total, invalid, dir = %d.opts.dir.display(), "weir serve started");
    // What the metrics say of pipelines from before this start: their last success.
    for name in d.state().watched_pipelines().unwrap_or_default() {
        if let Some(at) = d.state().last_success(&name).ok().flatten().as_deref().and_then(parse_ts) {
            metrics::gauge!(crate::metrics::LAST_SUCCESS, "pipeline" => name)
                .set(at.timestamp_millis() as f64 / 1000.0);
        }
    }
    // Alerts are delivered apart from runs, from the queue in the state store (also those a
    // stopped daemon left).
    let outbox_stop = CancellationToken::new();
    let outbox = tokio::spawn(d.outbox.clone().run(outbox_stop.clone()));
    let now = Utc::now();
    d.recover_and_catch_up(now);
    d.arm(&files, now).await;

    // HTTP.
    let server = listener.map(|l| {
        let addr = l.local_addr().ok();
        tracing::info!(address = ?addr, "listening: /metrics /healthz /api");
        let app = http::router(d.clone());
        let stop = d.stopping.clone();
        tokio::spawn(async move {
            let _ = axum::serve(l, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
        })
    });

    // Reload, freshness and metric upkeep.
    let background = {
        let d = d.clone();
        tokio::spawn(async move {
            let mut reload = tokio::time::interval(d.opts.reload_interval);
            let mut stale = tokio::time::interval(d.opts.stale_interval);
            loop {
                tokio::select! {
                    _ = d.stopping.cancelled() => break,
                    _ = reload.tick() => {
                        let changed = d.scan().await;
                        if !changed.is_empty() {
                            let now = Utc::now();
                            // A pipeline seen for the first time has missed nothing; one
                            // whose file changed keeps its tick history.
                            d.arm(&changed, now).await;
                        }
                    }
                    _ = stale.tick() => d.check_stale(Utc::now()),
                }
            }
        })
    };

    wait_for_signal().await;
    eprintln!(
        "stopping: no new runs; running runs get {} to finish (signal again to exit now)",
        humantime::format_duration(d.opts.grace)
    );
    tracing::info!("shutting down");
    d.stopping.cancel();
    if let Some(mut s) = d.scheduler.lock().await.take() {
        let _ = s.shutdown().await;
    }
    let _ = background.await;
    let second = tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("exiting now: nothing half-written is published");
        std::process::exit(130);
    });
    d.active.close();
    if tokio::time::timeout(d.opts.grace, d.active.wait()).await.is_err() {
        tracing::warn!(
            "runs did not finish within the grace period: cancelling them (nothing half-written is published)"
        );
        d.cancel_runs.cancel();
        d.active.wait().await;
    }
    second.abort();
    // Alerts not delivered yet stay queued for the next start: the grace period is for runs.
    outbox_stop.cancel();
    let _ = outbox.await;
    if let Some(s) = server {
        let _ = s.await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
}
