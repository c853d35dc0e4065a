//! `run`: the DAG executor. A ready queue over the plan's graph runs at most
//! `max_parallel` tasks at once; a failed task skips everything downstream of it while
//! unrelated branches finish; cancellation stops running tasks before they publish.
//! Every task start and end is recorded in the state store as it happens.

mod cdc;
pub use cdc::SlotReport;
mod checks;
mod engine;
mod error;
pub mod fixtures;
pub mod incremental;
mod malformed;
mod pool;
mod stage;
pub mod table;
mod tasks;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use petgraph::Direction;
use petgraph::graph::NodeIndex;
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::compile::{Edge, Plan, session_config};
use crate::state::{StateError, StateStore, TaskRecord};

pub use checks::{CheckResult, CheckStatus, SampleRow};
pub use error::TaskError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot create the staging directory {path}: {source}")]
    Staging { path: PathBuf, source: std::io::Error },
    #[error("invalid engine setting: {0}")]
    Engine(String),
    #[error("load `{load}`: {source}")]
    Output { load: String, source: crate::sink::SinkError },
    /// A file an `append` load consumed has changed: appending it again would double rows.
    #[error("load `{load}`: {message}")]
    Changed { load: String, message: String },
    #[error("extract `{extract}`: {message}")]
    Watermark { extract: String, message: String },
}

/// Receives progress as the run goes (progress bar, log lines, metrics, OpenLineage events).
/// Every text it is given is redacted.
pub trait Observer: Send + Sync {
    /// The run holds its pipeline's lock and is recorded; tasks start next.
    fn run_started(&self, _run_id: &str) {}
    fn task_started(&self, _task: &str, _kind: &str) {}
    fn task_retrying(&self, _task: &str, _attempt: u32, _error: &str, _wait: Duration) {}
    fn task_finished(&self, _report: &TaskReport) {}
    /// The run is over, with this report (after `run_started`).
    fn run_finished(&self, _report: &RunReport) {}
    /// The run could not go on (after `run_started`): the state store or staging failed.
    fn run_errored(&self, _error: &str) {}
}

/// Several observers as one.
pub struct Tee(pub Vec<Arc<dyn Observer>>);

impl Observer for Tee {
    fn run_started(&self, run_id: &str) {
        self.0.iter().for_each(|o| o.run_started(run_id));
    }
    fn run_finished(&self, report: &RunReport) {
        self.0.iter().for_each(|o| o.run_finished(report));
    }
    fn run_errored(&self, error: &str) {
        self.0.iter().for_each(|o| o.run_errored(error));
    }
    fn task_started(&self, task: &str, kind: &str) {
        self.0.iter().for_each(|o| o.task_started(task, kind));
    }
    fn task_retrying(&self, task: &str, attempt: u32, error: &str, wait: Duration) {
        self.0.iter().for_each(|o| o.task_retrying(task, attempt, error, wait));
    }
    fn task_finished(&self, report: &TaskReport) {
        self.0.iter().for_each(|o| o.task_finished(report));
    }
}

pub struct RunOptions {
    pub run_id: String,
    pub run_date: String,
    /// Tasks to run (see [`Plan::select`]); `None` runs all.
    pub select: Option<HashSet<NodeIndex>>,
    /// Where materialized intermediate tables are staged (local disk).
    pub staging_dir: PathBuf,
    pub cancel: CancellationToken,
    pub observer: Option<Arc<dyn Observer>>,
    pub state: Option<Arc<StateStore>>,
    /// Target partitions for DataFusion (default: CPU cores).
    pub target_partitions: Option<usize>,
    /// Memory budget in bytes for running queries; half of it is DataFusion's spilling pool
    /// (see `query_pool_size`), past which sorts, aggregations and joins spill to disk.
    /// `None`: no limit.
    pub memory_limit: Option<usize>,
    /// Rebuild every output from all input, ignoring what loads consumed before.
    pub full_refresh: bool,
    /// Continue an earlier run that did not succeed.
    pub resume: Option<Resume>,
    /// The time `freshness` checks measure from. Default: when the run starts.
    pub logical_time: Option<DateTime<Utc>>,
    /// Where the SQL runs, overriding the pipeline's `engine` (`weir run --engine`).
    pub engine: Option<crate::compile::EnginePlan>,
}

/// An earlier run that `--resume` continues.
#[derive(Debug, Clone)]
pub struct Resume {
    pub run_id: String,
    pub pipeline: String,
    /// Tasks that succeeded in it.
    pub succeeded: HashSet<String>,
    /// Its staging directory (materialized transforms), if still there.
    pub staging: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Succeeded,
    /// A transform whose query was inlined into its one consumer.
    Fused,
    Failed,
    /// Not run: an upstream task failed, or the run was cancelled before it started.
    Skipped,
    /// Stopped while running by Ctrl-C / SIGTERM.
    Cancelled,
    /// Not run: its incremental inputs have nothing new.
    #[serde(rename = "up_to_date")]
    UpToDate,
}

impl TaskStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Fused => "fused",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::UpToDate => "up to date",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskReport {
    pub name: String,
    pub kind: &'static str,
    pub status: TaskStatus,
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ser_duration")]
    pub duration: Option<Duration>,
    /// Rows the task's query read from its sources.
    pub rows_in: Option<u64>,
    /// Rows the task produced (written, for loads and materialized transforms).
    pub rows_out: Option<u64>,
    /// Bytes of input files (extracts).
    pub bytes_read: Option<u64>,
    pub bytes_written: Option<u64>,
    /// Files read (extracts) or written (loads).
    pub files: Option<u64>,
    pub error: Option<String>,
    pub note: Option<String>,
    /// Results of the task's checks, in the order they are declared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// Rows set aside by `on_check_failure: quarantine`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<u64>,
    /// Malformed input rows left out (`bad_rows: skip | quarantine`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad_rows: Option<u64>,
}

fn ser_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl TaskReport {
    fn new(name: &str, kind: &'static str, status: TaskStatus) -> Self {
        TaskReport {
            name: name.to_string(),
            kind,
            status,
            attempts: 0,
            started_at: None,
            finished_at: None,
            duration: None,
            rows_in: None,
            rows_out: None,
            bytes_read: None,
            bytes_written: None,
            files: None,
            error: None,
            note: None,
            checks: Vec::new(),
            quarantined: None,
            bad_rows: None,
        }
    }

    fn record(&self, run_id: &str) -> TaskRecord {
        let ts = |t: &Option<DateTime<Utc>>| t.map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        TaskRecord {
            run_id: run_id.to_string(),
            task: self.name.clone(),
            kind: self.kind.to_string(),
            status: self.status.as_str().to_string(),
            attempts: self.attempts,
            started_at: ts(&self.started_at),
            finished_at: ts(&self.finished_at),
            rows_in: self.rows_in,
            rows_out: self.rows_out,
            bytes_read: self.bytes_read,
            bytes_written: self.bytes_written,
            files: self.files,
            error: self.error.clone(),
            note: self.note.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub pipeline: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_duration_req")]
    pub duration: Duration,
    /// In run order.
    pub tasks: Vec<TaskReport>,
    /// Change data capture slots after the run: the WAL each holds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<cdc::SlotReport>,
}

fn ser_duration_req<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// How long running tasks get to stop after a cancellation before they are aborted.
const CANCEL_GRACE: Duration = Duration::from_secs(30);

/// A new run id: UTC time and a random suffix, sortable.
pub fn new_run_id() -> String {
    // 32 random bits: runs started in the same second (tests, `weir serve` catching up) must
    // not share an id (16 bits collided in practice).
    let suffix: u32 = rand::rng().random();
    format!("{}-{suffix:08x}", Utc::now().format("%Y%m%dT%H%M%SZ"))
}

/// Run a compiled plan.
pub async fn run(plan: Arc<Plan>, opts: RunOptions) -> Result<RunReport, RunError> {
    let started_at = Utc::now();
    let clock = Instant::now();
    if let Some(state) = &opts.state {
        state.lock(&plan.pipeline, &opts.run_id)?;
        if let Err(e) = state.run_started(&opts.run_id, &plan.pipeline, &opts.run_date) {
            let _ = state.unlock(&plan.pipeline, &opts.run_id);
            return Err(e.into());
        }
    }
    if let Some(o) = &opts.observer {
        o.run_started(&opts.run_id);
    }
    let span = tracing::info_span!("run", run_id = %opts.run_id, pipeline = %plan.pipeline);
    let result = execute(&plan, &opts).instrument(span).await;
    let (status, reports, slots) = match result {
        Ok(r) => r,
        Err(e) => {
            let error = plan.secrets.redact(&e.to_string());
            if let Some(state) = &opts.state {
                let _ = state.run_finished(&opts.run_id, "failed", Some(&error));
                let _ = state.unlock(&plan.pipeline, &opts.run_id);
            }
            if let Some(o) = &opts.observer {
                o.run_errored(&error);
            }
            return Err(e);
        }
    };
    // Staged intermediate tables are kept after a run that did not succeed, for `--resume`
    // (the next run of the pipeline removes them); a resumed run's are no longer needed.
    if status == RunStatus::Succeeded {
        let run_staging = opts.staging_dir.join(&plan.pipeline).join(&opts.run_id);
        let _ = std::fs::remove_dir_all(&run_staging);
        if let Some(r) = &opts.resume {
            let _ = std::fs::remove_dir_all(&r.staging);
        }
    }
    if let Some(state) = &opts.state {
        let error = reports
            .iter()
            .find(|t| t.status == TaskStatus::Failed)
            .map(|t| format!("task `{}` failed: {}", t.name, t.error.as_deref().unwrap_or("")));
        let recorded = state
            .run_finished(&opts.run_id, status.as_str(), error.as_deref())
            .and_then(|()| state.unlock(&plan.pipeline, &opts.run_id));
        if let Err(e) = recorded {
            if let Some(o) = &opts.observer {
                o.run_errored(&plan.secrets.redact(&e.to_string()));
            }
            return Err(e.into());
        }
    }
    let report = RunReport {
        run_id: opts.run_id.clone(),
        pipeline: plan.pipeline.clone(),
        status,
        started_at,
        duration: clock.elapsed(),
        tasks: reports,
        slots,
    };
    if let Some(o) = &opts.observer {
        o.run_finished(&report);
    }
    Ok(report)
}

/// The tasks a run executes: the selection plus the upstream tasks whose tables it reads.
pub fn run_set(plan: &Plan, select: Option<&HashSet<NodeIndex>>) -> HashSet<NodeIndex> {
    let Some(sel) = select else {
        return plan.graph.node_indices().collect();
    };
    let mut out = sel.clone();
    let mut stack: Vec<NodeIndex> = sel.iter().copied().collect();
    while let Some(i) = stack.pop() {
        for e in plan.graph.edges_directed(i, Direction::Incoming) {
            use petgraph::visit::EdgeRef;
            if *e.weight() == Edge::Data && out.insert(e.source()) {
                stack.push(e.source());
            }
        }
    }
    out
}

type Executed = (RunStatus, Vec<TaskReport>, Vec<cdc::SlotReport>);

async fn execute(plan: &Arc<Plan>, opts: &RunOptions) -> Result<Executed, RunError> {
    let staging = prepare_staging(plan, opts)?;
    let selection = run_set(plan, opts.select.as_ref());
    let states = incremental::load_states(plan, &selection, opts.state.as_deref()).await?;
    let passes = incremental::passes(plan, &selection, &states, opts.full_refresh)?;
    let several = passes.len() > 1;
    if several {
        tracing::warn!(
            passes = passes.len(),
            "loads fed by the same incremental extract disagree on what they consumed (an earlier run stopped between their commits): running them in {} passes",
            passes.len()
        );
    }
    let mut reports: HashMap<NodeIndex, TaskReport> = HashMap::new();
    let mut cancelled = false;
    for (k, pass) in passes.into_iter().enumerate() {
        let dir = if several { staging.join(format!("pass-{}", k + 1)) } else { staging.clone() };
        let (c, r) = execute_pass(plan, opts, Arc::new(pass), dir).await?;
        for (i, mut rep) in r {
            if let Some(prev) = reports.get(&i) {
                rep.note = Some(format!("ran in several passes; {}", rep.note.clone().unwrap_or_default()));
                if matches!(prev.status, TaskStatus::Failed | TaskStatus::Cancelled | TaskStatus::Skipped) {
                    continue;
                }
            }
            reports.insert(i, rep);
        }
        if c {
            cancelled = true;
            break;
        }
    }
    let list: Vec<TaskReport> = plan.order.iter().filter_map(|i| reports.remove(i)).collect();
    let status = if cancelled {
        RunStatus::Cancelled
    } else if list.iter().any(|t| matches!(t.status, TaskStatus::Failed | TaskStatus::Skipped | TaskStatus::Cancelled))
    {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    // Slots move only now, after every load of the run has committed (or failed).
    let slots = if cancelled { Vec::new() } else { cdc::advance_slots(plan, opts, &selection).await };
    Ok((status, list, slots))
}

/// Run the tasks of one pass. Returns whether the run was cancelled, and the task reports.
async fn execute_pass(
    plan: &Arc<Plan>,
    opts: &RunOptions,
    pass: incremental::PassRef,
    staging: PathBuf,
) -> Result<(bool, HashMap<NodeIndex, TaskReport>), RunError> {
    let ctx = Arc::new(session(plan, opts)?);
    let planning = Arc::new(table::unoptimized(&ctx.state()));
    let cluster = engine::connect(
        plan,
        opts.engine.as_ref().unwrap_or(&plan.engine),
        &staging,
        &opts.run_id,
        opts.resume.as_ref().map(|r| r.run_id.as_str()),
        opts.target_partitions,
    )
    .await?;
    let selected = pass.tasks.clone();
    let order: Vec<NodeIndex> = plan.order.iter().copied().filter(|i| selected.contains(i)).collect();
    let position: HashMap<NodeIndex, usize> = order.iter().enumerate().map(|(k, i)| (*i, k)).collect();

    let mut waiting: HashMap<NodeIndex, usize> = HashMap::new();
    for &i in &order {
        let n = plan
            .graph
            .neighbors_directed(i, Direction::Incoming)
            .filter(|u| selected.contains(u))
            .collect::<HashSet<_>>()
            .len();
        waiting.insert(i, n);
    }
    let mut ready: BTreeSet<usize> = order.iter().filter(|i| waiting[i] == 0).map(|i| position[i]).collect();
    let mut reports: HashMap<NodeIndex, TaskReport> = HashMap::new();
    let mut running: JoinSet<(NodeIndex, TaskReport)> = JoinSet::new();
    let mut cancelled = opts.cancel.is_cancelled();
    let mut grace: Option<tokio::time::Instant> = None;
    let mut task_ids: HashMap<tokio::task::Id, NodeIndex> = HashMap::new();
    let logical_time = opts.logical_time.unwrap_or_else(Utc::now);

    loop {
        // The token is read here as well as in the `select!` below: that one may take a task's
        // result before it sees the cancellation which caused it.
        if !cancelled && opts.cancel.is_cancelled() {
            cancelled = true;
            grace = Some(tokio::time::Instant::now() + CANCEL_GRACE);
        }
        while !cancelled && running.len() < plan.max_parallel {
            let Some(k) = ready.pop_first() else { break };
            let i = order[k];
            let node = plan.task(i);
            if let Some(r) = resume_reuse(plan, opts, i, cluster.is_some()).await {
                let from = opts.resume.as_ref().map(|x| x.run_id.as_str()).unwrap_or_default();
                let note = match r {
                    Reuse::Committed => Some(format!("committed by run {from}")),
                    Reuse::Staged(files) => match tasks::register_staged(&ctx, plan, i, files) {
                        Ok(()) => Some(format!("reused from run {from}")),
                        Err(e) => {
                            tracing::warn!(task = %node.name, "cannot reuse the staged table of run {from}: {}", e.message);
                            None
                        }
                    },
                };
                if let Some(note) = note {
                    let mut rep = TaskReport::new(&node.name, node.kind.name(), TaskStatus::Succeeded);
                    rep.note = Some(note);
                    finish(plan, opts, &mut reports, i, rep)?;
                    release_downstream(plan, i, &mut waiting, &reports, &mut ready, &position);
                    continue;
                }
            }
            if let Some(sources) = pass.up_to_date(plan, i) {
                let mut r = TaskReport::new(&node.name, node.kind.name(), TaskStatus::UpToDate);
                r.note = Some(format!("nothing new in {}", sources.join(", ")));
                finish(plan, opts, &mut reports, i, r)?;
                release_downstream(plan, i, &mut waiting, &reports, &mut ready, &position);
                continue;
            }
            let mut report = TaskReport::new(&node.name, node.kind.name(), TaskStatus::Succeeded);
            report.started_at = Some(Utc::now());
            if let Some(o) = &opts.observer {
                o.task_started(&node.name, node.kind.name());
            }
            if let Some(state) = &opts.state {
                let mut rec = report.record(&opts.run_id);
                rec.status = "running".into();
                state.record_task(&rec)?;
            }
            let ctx = ctx.clone();
            let plan = plan.clone();
            let env = tasks::TaskEnv {
                run_id: opts.run_id.clone(),
                staging_dir: staging.clone(),
                observer: opts.observer.clone(),
                planning: planning.clone(),
                pass: pass.clone(),
                state: opts.state.clone(),
                pipeline: plan.pipeline.clone(),
                logical_time,
                cluster: cluster.clone(),
            };
            let span = tracing::info_span!("task", task = %node.name, kind = node.kind.name());
            let cancel = opts.cancel.clone();
            let handle = running.spawn(
                async move {
                    let report = run_with_policy(&ctx, &plan, i, &env, &cancel, report).await;
                    (i, report)
                }
                .instrument(span),
            );
            task_ids.insert(handle.id(), i);
        }
        if running.is_empty() {
            break;
        }
        // On cancellation, running tasks stop at their next check (before publishing) and
        // report it; only a task that does not stop within the grace period is aborted.
        let joined = tokio::select! {
            j = running.join_next_with_id() => j,
            _ = opts.cancel.cancelled(), if !cancelled => {
                cancelled = true;
                grace = Some(tokio::time::Instant::now() + CANCEL_GRACE);
                continue;
            }
            _ = async { tokio::time::sleep_until(grace.unwrap_or_else(tokio::time::Instant::now)).await }, if grace.is_some() => {
                tracing::warn!("tasks did not stop within {CANCEL_GRACE:?} of cancellation: aborting them");
                running.abort_all();
                grace = None;
                continue;
            }
        };
        let Some(joined) = joined else { break };
        let (i, report) = match joined {
            Ok((_, x)) => x,
            Err(e) if e.is_cancelled() => continue,
            Err(e) => {
                // A panic is a bug in weir or a library; the task fails, the run goes on.
                let Some(&i) = task_ids.get(&e.id()) else { continue };
                let node = plan.task(i);
                let mut r = TaskReport::new(&node.name, node.kind.name(), TaskStatus::Failed);
                r.error = Some(format!("internal error (a bug; please report it): {e}"));
                tracing::error!(task = %node.name, "task panicked: {e}");
                (i, r)
            }
        };
        finish(plan, opts, &mut reports, i, report.clone())?;
        if report.status == TaskStatus::Cancelled {
            // its downstream is reported when the loop ends
        } else if matches!(report.status, TaskStatus::Succeeded | TaskStatus::Fused | TaskStatus::UpToDate) {
            release_downstream(plan, i, &mut waiting, &reports, &mut ready, &position);
        } else {
            // Skip everything downstream of the failure.
            for d in plan.descendants(i) {
                if selected.contains(&d) && !reports.contains_key(&d) {
                    ready.remove(&position[&d]);
                    let node = plan.task(d);
                    let mut r = TaskReport::new(&node.name, node.kind.name(), TaskStatus::Skipped);
                    r.note = Some(format!("upstream task `{}` failed", plan.task(i).name));
                    finish(plan, opts, &mut reports, d, r)?;
                }
            }
        }
    }

    cancelled |= opts.cancel.is_cancelled();
    if let Some(c) = &cluster
        && !cancelled
        && reports
            .values()
            .all(|r| !matches!(r.status, TaskStatus::Failed | TaskStatus::Skipped | TaskStatus::Cancelled))
    {
        c.clean().await;
    }
    if cancelled {
        for &i in &order {
            if reports.contains_key(&i) {
                continue;
            }
            // Not started, or aborted after the grace period.
            let node = plan.task(i);
            let mut r = TaskReport::new(&node.name, node.kind.name(), TaskStatus::Skipped);
            r.note = Some("the run was cancelled".into());
            finish(plan, opts, &mut reports, i, r)?;
        }
    }

    Ok((cancelled, reports))
}

/// Task `i` is done: its consumers wait for one task fewer, and those waiting for none are ready.
fn release_downstream(
    plan: &Plan,
    i: NodeIndex,
    waiting: &mut HashMap<NodeIndex, usize>,
    reports: &HashMap<NodeIndex, TaskReport>,
    ready: &mut BTreeSet<usize>,
    position: &HashMap<NodeIndex, usize>,
) {
    for d in plan.graph.neighbors_directed(i, Direction::Outgoing).collect::<HashSet<_>>() {
        if let Some(w) = waiting.get_mut(&d) {
            *w -= 1;
            if *w == 0 && !reports.contains_key(&d) {
                ready.insert(position[&d]);
            }
        }
    }
}

fn finish(
    plan: &Plan,
    opts: &RunOptions,
    reports: &mut HashMap<NodeIndex, TaskReport>,
    i: NodeIndex,
    mut report: TaskReport,
) -> Result<(), RunError> {
    // Every text of the report is redacted before anyone sees it: observers included.
    let redact = |t: &str| plan.secrets.redact(t);
    report.error = report.error.map(|e| redact(&e));
    report.note = report.note.map(|n| redact(&n));
    for c in &mut report.checks {
        c.message = redact(&c.message);
        for row in &mut c.samples {
            for (_, v) in &mut row.0 {
                if let serde_json::Value::String(text) = v {
                    *text = redact(text);
                }
            }
        }
    }
    if let Some(o) = &opts.observer {
        o.task_finished(&report);
    }
    if let Some(state) = &opts.state {
        state.record_task(&report.record(&opts.run_id))?;
        if !report.checks.is_empty() {
            let records: Vec<crate::state::CheckRecord> = report
                .checks
                .iter()
                .map(|c| crate::state::CheckRecord {
                    run_id: opts.run_id.clone(),
                    task: report.name.clone(),
                    name: c.name.clone(),
                    kind: c.kind.to_string(),
                    severity: c.severity.to_string(),
                    status: c.status.as_str().to_string(),
                    failing: c.failing,
                    checked: c.checked,
                    message: c.message.clone(),
                    samples: serde_json::to_string(&c.samples).unwrap_or_default(),
                })
                .collect();
            state.record_checks(&records)?;
        }
    }
    match report.status {
        TaskStatus::Failed => {
            tracing::error!(task = %report.name, error = report.error.as_deref().unwrap_or(""), "task failed")
        }
        _ => tracing::info!(task = %report.name, status = report.status.as_str(), "task finished"),
    }
    reports.insert(i, report);
    Ok(())
}

enum Reuse {
    /// A load that committed in the resumed run.
    Committed,
    /// A materialized transform's staged files.
    Staged(Vec<object_store::ObjectMeta>),
}

/// What `--resume` reuses of task `i`: loads that committed, and materialized transforms
/// whose staged files are still there. Tasks fed by incremental extracts are computed again
/// (their delta may have grown since; nothing of it was committed).
async fn resume_reuse(plan: &Plan, opts: &RunOptions, i: NodeIndex, on_cluster: bool) -> Option<Reuse> {
    let r = opts.resume.as_ref()?;
    let node = plan.task(i);
    if !r.succeeded.contains(&node.name) {
        return None;
    }
    match &node.kind {
        crate::compile::TaskKind::Load(_) => Some(Reuse::Committed),
        // A checked task runs its checks again (a quarantined table is a view, not the files).
        // On a cluster, transforms are computed again (their staged files are the cluster's).
        crate::compile::TaskKind::Transform(t)
            if !on_cluster
                && t.execution.materialized()
                && plan.incremental_sources(i).is_empty()
                && node.checks.is_empty() =>
        {
            let dir = r.staging.join(&node.name);
            if !dir.is_dir() {
                return None;
            }
            let files = stage::list_local(&dir).await.ok()?;
            (!files.is_empty()).then_some(Reuse::Staged(files))
        }
        _ => None,
    }
}

/// Run one task with its retries and timeout. Cancellation (of the run, or by the timeout)
/// reaches the task through a token it checks until it starts publishing.
async fn run_with_policy(
    ctx: &SessionContext,
    plan: &Plan,
    i: NodeIndex,
    env: &tasks::TaskEnv,
    run_cancel: &CancellationToken,
    mut report: TaskReport,
) -> TaskReport {
    let node = plan.task(i);
    let policy = node.policy;
    let clock = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        report.attempts = attempt;
        let token = run_cancel.child_token();
        let timer = policy.timeout.map(|t| {
            let token = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(t).await;
                token.cancel();
            })
        });
        let result = tasks::execute(ctx, plan, i, env, &token).await;
        if let Some(timer) = timer {
            timer.abort();
        }
        match result {
            Ok(outcome) => {
                report.status = if outcome.fused {
                    TaskStatus::Fused
                } else if outcome.up_to_date {
                    TaskStatus::UpToDate
                } else {
                    TaskStatus::Succeeded
                };
                report.rows_in = outcome.rows_in;
                report.rows_out = outcome.rows_out;
                report.bytes_read = outcome.bytes_read;
                report.bytes_written = outcome.bytes_written;
                report.files = outcome.files;
                report.note = outcome.note;
                report.checks = outcome.checks;
                report.quarantined = outcome.quarantined;
                report.bad_rows = outcome.bad_rows;
                if let Some(gate) = outcome.gate {
                    // A failing gate is not retried: the same rows fail the same checks.
                    report.status = TaskStatus::Failed;
                    report.error = Some(gate);
                }
                break;
            }
            Err(e) if e.cancelled && run_cancel.is_cancelled() => {
                report.status = TaskStatus::Cancelled;
                report.note = Some("the run was cancelled; nothing was published".into());
                break;
            }
            Err(e) if e.cancelled => {
                let t = policy.timeout.unwrap_or_default();
                report.status = TaskStatus::Failed;
                report.error = Some(format!("timed out after {}", humantime::format_duration(t)));
                break;
            }
            Err(e) if e.retryable && attempt <= policy.retries => {
                let base = policy.retry_backoff.saturating_mul(1 << (attempt - 1).min(16));
                let jitter = rand::rng().random_range(0.8..1.2);
                let wait = base.mul_f64(jitter);
                tracing::warn!(task = %node.name, attempt, error = %e.message, wait_ms = wait.as_millis() as u64, "retrying");
                if let Some(o) = &env.observer {
                    o.task_retrying(&node.name, attempt, &plan.secrets.redact(&e.message), wait);
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = run_cancel.cancelled() => {
                        report.status = TaskStatus::Cancelled;
                        report.note = Some("the run was cancelled while waiting to retry".into());
                        break;
                    }
                }
            }
            Err(e) => {
                report.status = TaskStatus::Failed;
                report.error = Some(e.message);
                break;
            }
        }
    }
    report.finished_at = Some(Utc::now());
    report.duration = Some(clock.elapsed());
    report
}

/// The DataFusion session of a run, with every store registered.
fn session(plan: &Plan, opts: &RunOptions) -> Result<SessionContext, RunError> {
    let mut config = session_config();
    if let Some(n) = opts.target_partitions {
        config = config.with_target_partitions(n.max(1));
    }
    let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
    if let Some(limit) = opts.memory_limit {
        let pool = query_pool_size(limit);
        // Each partition's sort keeps back what merging its spilled runs needs (10 MiB by
        // default), outside what can spill: together they take at most an eighth of the
        // pool, however many partitions there are, or a small limit fails instead of
        // spilling. The sorted partitions are then merged by a streaming merge that holds a
        // batch per partition (see docs/design/memory.md).
        let partitions = config.target_partitions().max(1);
        let exec = &mut config.options_mut().execution;
        exec.sort_spill_reservation_bytes = exec.sort_spill_reservation_bytes.min(pool / (8 * partitions));
        runtime = runtime.with_memory_pool(Arc::new(pool::HeadroomPool::new(pool)));
    }
    let runtime = runtime.build_arc().map_err(|e| RunError::Engine(e.strip_backtrace()))?;
    let ctx = SessionContext::new_with_state(crate::compile::session_state(config, runtime));
    for s in &plan.stores {
        ctx.register_object_store(s.object_store_url.as_ref(), s.object_store.clone());
    }
    Ok(ctx)
}

/// The part of `--memory-limit` given to DataFusion's memory pool: half. Operators hold
/// more than they reserve at moments — a spilling aggregation emits its whole state as a batch
/// before it frees the state (apache/datafusion#12937), so it briefly holds twice its
/// reservation — and readers, writers and the process itself are outside the pool. Measured
/// on TPC-H SF1 (bench/, memory workload): a pool of the whole limit peaked at 1.8x the limit,
/// half of it at 1.03x.
fn query_pool_size(limit: usize) -> usize {
    limit / 2
}

/// This run's staging directory, after removing what earlier runs of the pipeline left
/// (runs that were killed). The pipeline's run lock makes this safe.
fn prepare_staging(plan: &Plan, opts: &RunOptions) -> Result<PathBuf, RunError> {
    let root = opts.staging_dir.join(&plan.pipeline);
    let resumed = opts.resume.as_ref().map(|r| r.run_id.as_str());
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != opts.run_id && Some(name.as_str()) != resumed {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = root.join(&opts.run_id);
    std::fs::create_dir_all(&dir).map_err(|e| RunError::Staging { path: dir.clone(), source: e })?;
    Ok(dir)
}
