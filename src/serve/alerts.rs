//! Webhook alerts: a Slack-compatible JSON body (`{"text": ...}` plus structured fields),
//! queued in the state store and delivered by the daemon's outbox, apart from the runs that
//! raised them: a slow or failing receiver never holds a pipeline's lock or delays a tick, an
//! alert survives a restart or `kill -9` until it is delivered or its attempts are used up,
//! and a shutdown does not wait for it.
//!
//! Webhook URLs are secrets: they are never logged, stored or shown. A queued alert names its
//! webhook by a fingerprint of the URL (a hash), resolved to the URL through the pipelines the
//! daemon has loaded; errors from the HTTP client (which quote the URL) are redacted before
//! they go anywhere. Each request carries `Idempotency-Key: weir-alert-<id>` (and `id` in the
//! body), so a receiver can drop the copy of an alert whose answer was lost.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::compile::schedule::NotifyPlan;
use crate::secrets::Secrets;
use crate::spec::NotifyEvent;
use crate::state::{PendingAlert, StateStore};

/// Attempts per alert and webhook (the first and four retries).
pub const ATTEMPTS: u32 = 5;

/// Deliveries under way at once.
const PARALLEL: usize = 8;

/// A failed task, for an alert.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailedTask {
    pub task: String,
    /// One line, secrets removed.
    pub error: String,
    /// Transforms fused into this task's query: the failure may be in one of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fused: Vec<String>,
}

/// What an alert says.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Plain text for chat tools (Slack, Mattermost, Teams' Slack-compatible hooks).
    pub text: String,
    pub event: &'static str,
    pub pipeline: String,
    pub run_id: Option<String>,
    /// The first failed task (see `tasks` for all of them).
    pub task: Option<String>,
    pub error: Option<String>,
    /// Every failed task with its own error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<FailedTask>,
}

/// `text` on one line: line breaks and runs of spaces become single spaces, and the box
/// drawing of rendered diagnostics goes.
pub fn one_line(text: &str) -> String {
    let cleaned: String =
        text.chars().map(|c| if ('\u{2500}'..='\u{257F}').contains(&c) || c == '×' { ' ' } else { c }).collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Alert {
    pub fn new(
        event: NotifyEvent,
        pipeline: &str,
        run_id: Option<&str>,
        task: Option<&str>,
        error: Option<&str>,
    ) -> Alert {
        let tasks = match (task, error) {
            (Some(t), Some(e)) => vec![FailedTask { task: t.to_string(), error: one_line(e), fused: Vec::new() }],
            _ => Vec::new(),
        };
        Alert::with_tasks(event, pipeline, run_id, tasks, error)
    }

    /// An alert naming every failed task of a run with its own error (`error`: the run's
    /// error when no task carries one, e.g. the pipeline no longer compiles).
    pub fn with_tasks(
        event: NotifyEvent,
        pipeline: &str,
        run_id: Option<&str>,
        tasks: Vec<FailedTask>,
        error: Option<&str>,
    ) -> Alert {
        let run = run_id.map(|r| format!(" (run {r})")).unwrap_or_default();
        let failed = tasks
            .iter()
            .map(|t| {
                let fused = if t.fused.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (its query includes the fused transform{} {})",
                        if t.fused.len() == 1 { "" } else { "s" },
                        t.fused.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                    )
                };
                format!("task `{}`{fused}: {}", t.task, t.error)
            })
            .collect::<Vec<_>>()
            .join("; ");
        let error = error.map(one_line);
        let what = if failed.is_empty() { error.clone().unwrap_or_default() } else { failed };
        let text = match event {
            NotifyEvent::Failure => {
                format!(
                    "weir: pipeline `{pipeline}` failed{run}{}",
                    if what.is_empty() { String::new() } else { format!(": {what}") }
                )
            }
            NotifyEvent::CheckFailed => format!(
                "weir: pipeline `{pipeline}`{run}: checks failed{}; downstream tasks were blocked",
                if what.is_empty() { String::new() } else { format!(": {what}") }
            ),
            NotifyEvent::Recovered => format!("weir: pipeline `{pipeline}` recovered: run{run} succeeded"),
            NotifyEvent::CdcLag => format!("weir: pipeline `{pipeline}`{run}: {what}"),
            NotifyEvent::Stale => format!(
                "weir: pipeline `{pipeline}` is stale: {}",
                error.as_deref().unwrap_or("no successful run within its freshness window")
            ),
        };
        Alert {
            text,
            event: event.as_str(),
            pipeline: pipeline.to_string(),
            run_id: run_id.map(str::to_string),
            task: tasks.first().map(|t| t.task.clone()),
            error: tasks.first().map(|t| t.error.clone()).or(error),
            tasks,
        }
    }

    fn redacted(mut self, secrets: &Secrets) -> Alert {
        let redact = |s: &str| crate::secrets::global().redact(&secrets.redact(s));
        self.error = self.error.as_deref().map(redact);
        self.text = redact(&self.text);
        for t in &mut self.tasks {
            t.error = redact(&t.error);
        }
        self
    }
}

/// The name a webhook is known by in the state store: a hash of its URL, never the URL.
pub fn fingerprint(url: &str) -> String {
    blake3::hash(url.trim().as_bytes()).to_hex()[..16].to_string()
}

/// The daemon's outbox: queues alerts in the state store and delivers them. Cheap to share.
pub struct Outbox {
    client: reqwest::Client,
    state: Arc<StateStore>,
    /// The wait before the first retry; each further one waits 4× longer (with ±20 % jitter).
    backoff: Duration,
    /// Webhook URLs by fingerprint, with the secrets to redact from their errors: every
    /// webhook of every pipeline version the daemon loaded.
    hooks: Mutex<HashMap<String, (String, Secrets)>>,
    /// Ids being delivered now.
    busy: Mutex<HashSet<i64>>,
    wake: tokio::sync::Notify,
}

impl Outbox {
    pub fn new(state: Arc<StateStore>, backoff: Duration) -> Arc<Outbox> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Arc::new(Outbox {
            client,
            state,
            backoff,
            hooks: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Make `hooks` known for delivery (their alerts may be queued before a restart).
    pub fn know(&self, hooks: &[NotifyPlan], secrets: &Secrets) {
        let mut known = lock(&self.hooks);
        for h in hooks {
            known.insert(fingerprint(&h.url), (h.url.clone(), secrets.clone()));
        }
    }

    /// Queue `alert` for every hook subscribed to `event`. Returns at once: the outbox
    /// delivers. Returns how many webhooks it was queued for.
    pub fn queue(&self, hooks: &[NotifyPlan], event: NotifyEvent, alert: Alert, secrets: &Secrets) -> usize {
        let alert = alert.redacted(secrets);
        let targets: Vec<&NotifyPlan> = hooks.iter().filter(|h| h.on.contains(&event)).collect();
        if targets.is_empty() {
            return 0;
        }
        let body = serde_json::to_string(&alert).unwrap_or_default();
        let mut queued = 0;
        for hook in targets {
            let fp = fingerprint(&hook.url);
            lock(&self.hooks).insert(fp.clone(), (hook.url.clone(), secrets.clone()));
            match self.state.alert_queued(&alert.pipeline, alert.event, alert.run_id.as_deref(), &fp, &body) {
                Ok(_) => queued += 1,
                Err(e) => {
                    tracing::error!(pipeline = %alert.pipeline, event = alert.event, "cannot queue an alert: {e}")
                }
            }
        }
        self.wake.notify_one();
        queued
    }

    /// Deliver queued alerts until `stop`: due ones at once (a few at a time), retries at
    /// their time. Stopped, deliveries under way are dropped; their alerts stay queued for the
    /// next start.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut deliveries: JoinSet<()> = JoinSet::new();
        loop {
            let busy: Vec<i64> = lock(&self.busy).iter().copied().collect();
            let room = PARALLEL.saturating_sub(busy.len());
            let due = if room > 0 {
                self.state.alerts_due(&crate::state::now_text(), room, &busy).unwrap_or_else(|e| {
                    tracing::error!("cannot read the alert queue: {e}");
                    Vec::new()
                })
            } else {
                Vec::new()
            };
            for a in due {
                lock(&self.busy).insert(a.id);
                let me = self.clone();
                deliveries.spawn(async move {
                    let id = a.id;
                    me.attempt(a).await;
                    lock(&me.busy).remove(&id);
                });
            }
            // Sleep until something is due, a delivery ends, an alert is queued, or stop.
            let next = self.state.next_alert_due().ok().flatten().and_then(|t| {
                let at = chrono::DateTime::parse_from_rfc3339(&t).ok()?.with_timezone(&Utc);
                Some((at - Utc::now()).to_std().unwrap_or_default())
            });
            let wait =
                next.unwrap_or(Duration::from_secs(60)).clamp(Duration::from_millis(20), Duration::from_secs(60));
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        deliveries.abort_all();
    }

    /// One attempt at delivering `a`, and its outcome recorded.
    async fn attempt(&self, a: PendingAlert) {
        let hook = lock(&self.hooks).get(&a.hook).cloned();
        let Some((url, secrets)) = hook else {
            // Its pipeline has no valid version loaded (yet): the URL is unknown. This does not
            // use an attempt; it is looked for again.
            let later = ts(Utc::now() + chrono::Duration::seconds(30));
            let why = "the webhook is not known: its pipeline has no valid version loaded";
            let _ = self.state.alert_attempted(a.id, a.attempts, "pending", Some(why), Some(&later));
            return;
        };
        let mut body: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
        body["id"] = serde_json::json!(a.id);
        let attempt = a.attempts + 1;
        let result =
            self.client.post(&url).header("Idempotency-Key", format!("weir-alert-{}", a.id)).json(&body).send().await;
        let error = match result {
            Ok(resp) if resp.status().is_success() => None,
            // reqwest's errors quote the URL: strip it before anything sees the text.
            Ok(resp) => Some(format!("the webhook answered HTTP {}", resp.status())),
            Err(e) => Some(describe(&e, &url)),
        };
        let event: &'static str =
            NotifyEvent::ALL.iter().map(|e| e.as_str()).find(|e| *e == a.event).unwrap_or("alert");
        match error {
            None => {
                tracing::info!(pipeline = %a.pipeline, event, attempt, alert = a.id, "alert delivered");
                metrics::counter!(crate::metrics::ALERTS_TOTAL, "pipeline" => a.pipeline.clone(), "event" => event)
                    .increment(1);
                let _ = self.state.alert_attempted(a.id, attempt, "delivered", None, None);
            }
            Some(e) => {
                let e = crate::secrets::global().redact(&secrets.redact(&e));
                if attempt >= ATTEMPTS {
                    tracing::error!(pipeline = %a.pipeline, event, alert = a.id, error = %e, "alert could not be delivered");
                    metrics::counter!(crate::metrics::ALERT_FAILURES_TOTAL, "pipeline" => a.pipeline.clone(), "event" => event)
                        .increment(1);
                    let _ = self.state.alert_attempted(a.id, attempt, "failed", Some(&e), None);
                } else {
                    let wait = self
                        .backoff
                        .saturating_mul(4u32.saturating_pow(attempt - 1))
                        .mul_f64(rand::rng().random_range(0.8..1.2));
                    tracing::warn!(pipeline = %a.pipeline, event, attempt, alert = a.id, error = %e, wait_ms = wait.as_millis() as u64, "alert not delivered; retrying");
                    let at = ts(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default());
                    let _ = self.state.alert_attempted(a.id, attempt, "pending", Some(&e), Some(&at));
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ts(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// An HTTP client error without the URL it carries (reqwest's `Display` quotes it).
fn describe(e: &reqwest::Error, url: &str) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg.replace(url, "***")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_are_plain_text_and_name_every_failed_task() {
        let a = Alert::with_tasks(
            NotifyEvent::Failure,
            "p",
            Some("r1"),
            vec![
                FailedTask { task: "load".into(), error: "disk full".into(), fused: vec!["clean".into()] },
                FailedTask {
                    task: "other".into(),
                    error: one_line("  × bad\n   ╭─[p.yaml:3:1]\n 3 │ x\n"),
                    fused: vec![],
                },
            ],
            None,
        );
        assert_eq!(
            a.text,
            "weir: pipeline `p` failed (run r1): task `load` (its query includes the fused transform `clean`): disk full; task `other`: bad [p.yaml:3:1] 3 x"
        );
        assert_eq!(a.task.as_deref(), Some("load"));
        assert!(!a.text.contains('\n'));
        assert_eq!(fingerprint("http://x/y").len(), 16);
        assert_ne!(fingerprint("http://x/y"), fingerprint("http://x/z"));
    }
}
