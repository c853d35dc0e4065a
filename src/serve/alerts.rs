//! Webhook alerts: a Slack-compatible JSON body (`{"text": ...}` plus structured fields),
//! delivered with retries and backoff, recorded in the state store. Webhook URLs are secrets:
//! they are never logged, stored or shown, and errors from the HTTP client (which quote the
//! URL) are redacted before they go anywhere.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use crate::compile::schedule::NotifyPlan;
use crate::secrets::Secrets;
use crate::spec::NotifyEvent;
use crate::state::StateStore;

/// Attempts per alert (the first and four retries).
pub const ATTEMPTS: u32 = 5;

/// What an alert says.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Plain text for chat tools (Slack, Mattermost, Teams' Slack-compatible hooks).
    pub text: String,
    pub event: &'static str,
    pub pipeline: String,
    pub run_id: Option<String>,
    pub task: Option<String>,
    pub error: Option<String>,
}

impl Alert {
    pub fn new(
        event: NotifyEvent,
        pipeline: &str,
        run_id: Option<&str>,
        task: Option<&str>,
        error: Option<&str>,
    ) -> Alert {
        let run = run_id.map(|r| format!(" (run {r})")).unwrap_or_default();
        let text = match event {
            NotifyEvent::Failure => format!(
                "weir: pipeline `{pipeline}` failed{run}{}{}",
                task.map(|t| format!(": task `{t}`")).unwrap_or_default(),
                error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
            NotifyEvent::CheckFailed => format!(
                "weir: pipeline `{pipeline}`{run}: checks failed{}{}; downstream tasks were blocked",
                task.map(|t| format!(" on task `{t}`")).unwrap_or_default(),
                error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
            NotifyEvent::Recovered => format!("weir: pipeline `{pipeline}` recovered: run{run} succeeded"),
            NotifyEvent::Stale => format!(
                "weir: pipeline `{pipeline}` is stale: {}",
                error.unwrap_or("no successful run within its freshness window")
            ),
        };
        Alert {
            text,
            event: event.as_str(),
            pipeline: pipeline.to_string(),
            run_id: run_id.map(str::to_string),
            task: task.map(str::to_string),
            error: error.map(str::to_string),
        }
    }

    fn redacted(mut self, secrets: &Secrets) -> Alert {
        let redact = |s: &str| crate::secrets::global().redact(&secrets.redact(s));
        self.error = self.error.as_deref().map(redact);
        self.text = redact(&self.text);
        self
    }
}

/// Sends alerts. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    state: Arc<StateStore>,
    /// The wait before the first retry; each further one waits 4× longer (with ±20 % jitter).
    backoff: Duration,
}

impl Sender {
    pub fn new(state: Arc<StateStore>, backoff: Duration) -> Sender {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Sender { client, state, backoff }
    }

    /// Deliver `alert` to every hook subscribed to `event`; returns when all are done (or
    /// have used up their attempts).
    pub async fn send(&self, hooks: &[NotifyPlan], event: NotifyEvent, alert: Alert, secrets: &Secrets) {
        let alert = alert.redacted(secrets);
        let targets: Vec<&NotifyPlan> = hooks.iter().filter(|h| h.on.contains(&event)).collect();
        if targets.is_empty() {
            return;
        }
        let deliveries = targets.into_iter().map(|hook| self.deliver(hook, &alert, secrets));
        futures::future::join_all(deliveries).await;
    }

    async fn deliver(&self, hook: &NotifyPlan, alert: &Alert, secrets: &Secrets) {
        let id = self.state.alert_created(&alert.pipeline, alert.event, alert.run_id.as_deref()).ok();
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.client.post(&hook.url).json(alert).send().await {
                Ok(resp) if resp.status().is_success() => {
                    tracing::info!(pipeline = %alert.pipeline, event = alert.event, attempt, "alert delivered");
                    metrics::counter!(crate::metrics::ALERTS_TOTAL, "pipeline" => alert.pipeline.clone(), "event" => alert.event)
                        .increment(1);
                    if let Some(id) = id {
                        let _ = self.state.alert_done(id, attempt, "delivered", None);
                    }
                    return;
                }
                // reqwest's errors quote the URL: strip it before anything sees the text.
                Ok(resp) => last_error = format!("the webhook answered HTTP {}", resp.status()),
                Err(e) => last_error = describe(&e, &hook.url),
            }
            last_error = crate::secrets::global().redact(&secrets.redact(&last_error));
            if attempt < ATTEMPTS {
                let wait = self
                    .backoff
                    .saturating_mul(4u32.saturating_pow(attempt - 1))
                    .mul_f64(rand::rng().random_range(0.8..1.2));
                tracing::warn!(pipeline = %alert.pipeline, event = alert.event, attempt, error = %last_error, wait_ms = wait.as_millis() as u64, "alert not delivered; retrying");
                tokio::time::sleep(wait).await;
            }
        }
        tracing::error!(pipeline = %alert.pipeline, event = alert.event, error = %last_error, "alert could not be delivered");
        metrics::counter!(crate::metrics::ALERT_FAILURES_TOTAL, "pipeline" => alert.pipeline.clone(), "event" => alert.event)
            .increment(1);
        if let Some(id) = id {
            let _ = self.state.alert_done(id, ATTEMPTS, "failed", Some(&last_error));
        }
    }
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
