//! Metrics in the Prometheus text format. The names and labels below are a contract:
//! `dashboards/weir.json` and users' alert rules query them, and a test checks that every
//! metric the dashboard uses is exported.
//!
//! weir records through the `metrics` facade into `metrics-exporter-prometheus`'s recorder;
//! `weir serve` renders it at `GET /metrics`, `weir run --metrics-file` writes it to a file
//! (for node_exporter's textfile collector).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::run::{CheckStatus, Observer, RunReport, RunStatus, TaskReport, TaskStatus};

pub const RUNS_TOTAL: &str = "weir_runs_total";
pub const TASK_DURATION: &str = "weir_task_duration_seconds";
pub const ROWS_TOTAL: &str = "weir_rows_total";
pub const BYTES_WRITTEN_TOTAL: &str = "weir_bytes_written_total";
pub const CHECK_FAILURES_TOTAL: &str = "weir_check_failures_total";
pub const LAST_SUCCESS: &str = "weir_last_success_timestamp_seconds";
pub const SCHEDULER_LAG: &str = "weir_scheduler_lag_seconds";
pub const RUNNING_TASKS: &str = "weir_running_tasks";
pub const TASK_RETRIES_TOTAL: &str = "weir_task_retries_total";
pub const QUARANTINED_ROWS_TOTAL: &str = "weir_quarantined_rows_total";
pub const BAD_ROWS_TOTAL: &str = "weir_bad_rows_total";
pub const PIPELINE_LOAD_ERRORS: &str = "weir_pipeline_load_errors";
pub const TICKS_TOTAL: &str = "weir_ticks_total";
pub const ALERTS_TOTAL: &str = "weir_alerts_total";
pub const ALERT_FAILURES_TOTAL: &str = "weir_alert_failures_total";
pub const RUN_DURATION: &str = "weir_run_duration_seconds";
pub const CDC_SLOT_LAG: &str = "weir_cdc_slot_lag_bytes";
pub const OPENLINEAGE_EVENTS_TOTAL: &str = "weir_openlineage_events_total";
pub use crate::storage::STORE_REQUESTS_TOTAL;

/// Task and run duration buckets: 10 ms to 2 h.
const DURATION_BUCKETS: &[f64] =
    &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process's recorder (once) and return its handle.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), DURATION_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// The exposition text of everything recorded so far.
pub fn render() -> String {
    match HANDLE.get().and_then(Option::as_ref) {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    }
}

/// Write the exposition to `path` atomically (a temporary file renamed over it), as the
/// textfile collector expects.
pub fn write_file(path: &Path) -> std::io::Result<()> {
    let text = render();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "weir.prom".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(RUNS_TOTAL, "Pipeline runs finished, by status (succeeded, failed, cancelled).");
    describe_histogram!(TASK_DURATION, metrics::Unit::Seconds, "Task run time, by pipeline, task and kind.");
    describe_histogram!(RUN_DURATION, metrics::Unit::Seconds, "Pipeline run time.");
    describe_counter!(ROWS_TOTAL, "Rows read (direction=in) and produced (direction=out) by tasks.");
    describe_counter!(BYTES_WRITTEN_TOTAL, "Bytes written by tasks.");
    describe_counter!(CHECK_FAILURES_TOTAL, "Checks that did not pass, by check and severity (error, warn).");
    describe_gauge!(LAST_SUCCESS, "Unix time of the pipeline's last successful run.");
    describe_gauge!(SCHEDULER_LAG, "Seconds between a scheduled tick and the start of its run (latest run).");
    describe_gauge!(RUNNING_TASKS, "Tasks running now.");
    describe_counter!(TASK_RETRIES_TOTAL, "Task attempts that failed transiently and were retried.");
    describe_counter!(QUARANTINED_ROWS_TOTAL, "Rows set aside by on_check_failure: quarantine.");
    describe_counter!(BAD_ROWS_TOTAL, "Malformed input rows left out (bad_rows: skip | quarantine).");
    describe_gauge!(
        PIPELINE_LOAD_ERRORS,
        "Problems in the pipeline file on disk (0: it loads; the daemon keeps the last good version otherwise)."
    );
    describe_counter!(TICKS_TOTAL, "Scheduled ticks handled, by action (ran, skipped, queued).");
    describe_counter!(ALERTS_TOTAL, "Webhook alerts delivered, by event.");
    describe_counter!(
        STORE_REQUESTS_TOTAL,
        "Object store calls, by store and op (get, head, put, copy, delete, list, rename)."
    );
    describe_gauge!(
        CDC_SLOT_LAG,
        metrics::Unit::Bytes,
        "WAL a change data capture slot holds on its server (after the pipeline's latest run), by pipeline, task and slot."
    );
    describe_counter!(ALERT_FAILURES_TOTAL, "Webhook alerts that could not be delivered after every retry.");
    describe_counter!(
        OPENLINEAGE_EVENTS_TOTAL,
        "OpenLineage events handed to a transport, by pipeline, transport (http, file) and outcome (sent, failed)."
    );
}

/// Records a run's task metrics as they happen.
pub struct RunMetrics {
    pipeline: String,
    started: Mutex<HashSet<String>>,
}

impl RunMetrics {
    pub fn new(pipeline: &str) -> RunMetrics {
        RunMetrics { pipeline: pipeline.to_string(), started: Mutex::new(HashSet::new()) }
    }
}

impl Observer for RunMetrics {
    fn task_started(&self, task: &str, _kind: &str) {
        self.started.lock().unwrap_or_else(|e| e.into_inner()).insert(task.to_string());
        gauge!(RUNNING_TASKS).increment(1.0);
    }

    fn task_retrying(&self, task: &str, _attempt: u32, _error: &str, _wait: std::time::Duration) {
        counter!(TASK_RETRIES_TOTAL, "pipeline" => self.pipeline.clone(), "task" => task.to_string()).increment(1);
    }

    fn task_finished(&self, r: &TaskReport) {
        if self.started.lock().unwrap_or_else(|e| e.into_inner()).remove(&r.name) {
            gauge!(RUNNING_TASKS).decrement(1.0);
        }
        let (p, t) = (self.pipeline.clone(), r.name.clone());
        if let Some(d) = r.duration
            && !matches!(r.status, TaskStatus::Skipped | TaskStatus::UpToDate)
        {
            histogram!(TASK_DURATION, "pipeline" => p.clone(), "task" => t.clone(), "kind" => r.kind)
                .record(d.as_secs_f64());
        }
        if let Some(n) = r.rows_in {
            counter!(ROWS_TOTAL, "pipeline" => p.clone(), "task" => t.clone(), "direction" => "in").increment(n);
        }
        if let Some(n) = r.rows_out {
            counter!(ROWS_TOTAL, "pipeline" => p.clone(), "task" => t.clone(), "direction" => "out").increment(n);
        }
        if let Some(n) = r.bytes_written {
            counter!(BYTES_WRITTEN_TOTAL, "pipeline" => p.clone(), "task" => t.clone()).increment(n);
        }
        if let Some(n) = r.quarantined {
            counter!(QUARANTINED_ROWS_TOTAL, "pipeline" => p.clone(), "task" => t.clone()).increment(n);
        }
        if let Some(n) = r.bad_rows {
            counter!(BAD_ROWS_TOTAL, "pipeline" => p.clone(), "task" => t.clone()).increment(n);
        }
        for c in &r.checks {
            if matches!(c.status, CheckStatus::Failed | CheckStatus::Warned | CheckStatus::Quarantined) {
                let severity = if c.status == CheckStatus::Warned { "warn" } else { "error" };
                counter!(CHECK_FAILURES_TOTAL, "pipeline" => p.clone(), "task" => t.clone(), "check" => c.name.clone(), "severity" => severity)
                    .increment(1);
            }
        }
    }
}

/// Record a finished run.
pub fn run_finished(report: &RunReport) {
    let p = report.pipeline.clone();
    counter!(RUNS_TOTAL, "pipeline" => p.clone(), "status" => report.status.as_str()).increment(1);
    histogram!(RUN_DURATION, "pipeline" => p.clone()).record(report.duration.as_secs_f64());
    for s in &report.slots {
        gauge!(CDC_SLOT_LAG, "pipeline" => p.clone(), "task" => s.task.clone(), "slot" => s.slot.clone())
            .set(s.lag_bytes as f64);
    }
    if report.status == RunStatus::Succeeded {
        let at = report.started_at + chrono::Duration::from_std(report.duration).unwrap_or_default();
        gauge!(LAST_SUCCESS, "pipeline" => p).set(at.timestamp_millis() as f64 / 1000.0);
    }
}

/// Record a run that could not start or crashed before reporting (counted as failed).
pub fn run_errored(pipeline: &str) {
    counter!(RUNS_TOTAL, "pipeline" => pipeline.to_string(), "status" => "failed").increment(1);
}

/// Metric names a PromQL expression uses (`weir_…`, with histogram suffixes removed).
pub fn names_in_promql(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\bweir_[a-z_]+").expect("static regex");
    let mut out: Vec<String> = re
        .find_iter(expr)
        .map(|m| {
            let n = m.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
                .unwrap_or(n)
                .to_string()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_names() {
        let q = "histogram_quantile(0.95, sum by (le, task) (rate(weir_task_duration_seconds_bucket{pipeline=~\"$pipeline\"}[5m]))) / weir_runs_total";
        assert_eq!(names_in_promql(q), ["weir_runs_total", "weir_task_duration_seconds"]);
    }
}
