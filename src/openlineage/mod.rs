//! OpenLineage run events for `weir run` and `weir serve`: a START and a COMPLETE, FAIL or
//! ABORT event for the run (job `<pipeline>`) and for each task (job `<pipeline>.<task>`, its
//! run's `parent` the pipeline's run), with input and output datasets, their schema, the
//! columnLineage compile found (`crate::compile::lineage`), output statistics and the checks'
//! results. An [`Emitter`] is an [`Observer`] of one run: it builds each event when the run
//! reports progress and queues it for the transports (see `transport`).

mod events;
mod transport;

pub use transport::Failed;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::compile::Plan;
use crate::compile::openlineage::{DEFAULT_TIMEOUT, OpenLineagePlan, endpoint_url};
use crate::run::{Observer, RunReport, TaskReport, TaskStatus};

/// Settings from flags and the environment; each one given replaces the pipeline's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The consumer's base URL (`--openlineage-url`, `OPENLINEAGE_URL`).
    pub url: Option<String>,
    /// `OPENLINEAGE_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `OPENLINEAGE_API_KEY` (a secret).
    pub api_key: Option<String>,
    /// `--openlineage-file`, `WEIR_OPENLINEAGE_FILE`.
    pub file: Option<PathBuf>,
    /// `OPENLINEAGE_NAMESPACE`.
    pub namespace: Option<String>,
    /// `OPENLINEAGE_DISABLED=true`: no events, whatever the pipelines say.
    pub disabled: bool,
}

impl Overrides {
    /// `url` and `file` as given (flags, which read their own environment variables), the
    /// rest from the environment. The API key is registered as a secret.
    pub fn new(url: Option<String>, file: Option<PathBuf>) -> Overrides {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let api_key = var("OPENLINEAGE_API_KEY");
        if let Some(k) = &api_key {
            crate::secrets::global().add(k);
        }
        Overrides {
            url: url.filter(|u| !u.trim().is_empty()),
            endpoint: var("OPENLINEAGE_ENDPOINT"),
            api_key,
            file: file.filter(|f| !f.as_os_str().is_empty()),
            namespace: var("OPENLINEAGE_NAMESPACE"),
            disabled: var("OPENLINEAGE_DISABLED").is_some_and(|v| matches!(v.trim(), "true" | "1" | "yes")),
        }
    }

    /// A mistake in the settings (an URL that is not http), said before anything runs.
    pub fn check(&self) -> Result<(), String> {
        match &self.url {
            Some(u) => endpoint_url(u, self.endpoint.as_deref()).map(|_| ()),
            None => Ok(()),
        }
    }

    /// What a pipeline's runs use: its `openlineage` key with these on top; `None` when no
    /// event goes anywhere.
    pub fn settings(&self, pipeline: Option<&OpenLineagePlan>) -> Option<OpenLineagePlan> {
        if self.disabled {
            return None;
        }
        let mut s = pipeline.cloned().unwrap_or_else(|| OpenLineagePlan {
            namespace: crate::compile::openlineage::DEFAULT_NAMESPACE.to_string(),
            timeout: DEFAULT_TIMEOUT,
            ..Default::default()
        });
        if let Some(u) = &self.url {
            s.url = endpoint_url(u, self.endpoint.as_deref()).ok();
        }
        if let Some(k) = &self.api_key {
            s.api_key = Some(k.clone());
        }
        if let Some(f) = &self.file {
            s.file = Some(f.clone());
        }
        if let Some(n) = &self.namespace {
            s.namespace = n.clone();
        }
        s.enabled().then_some(s)
    }
}

/// The events of one run.
pub struct Emitter {
    plan: Arc<Plan>,
    namespace: String,
    /// When a scheduled run was due (`weir serve`).
    nominal: Option<DateTime<Utc>>,
    ids: Mutex<Ids>,
    out: transport::Sender,
}

#[derive(Default)]
struct Ids {
    weir_run_id: String,
    run: Option<Uuid>,
    /// Tasks whose START was sent.
    tasks: HashMap<String, Uuid>,
}

impl Emitter {
    /// An emitter for a run of `plan` with `settings` (see [`Overrides::settings`]); its
    /// sending task runs on the current tokio runtime.
    pub fn start(plan: Arc<Plan>, settings: &OpenLineagePlan, nominal: Option<DateTime<Utc>>) -> Arc<Emitter> {
        let out = transport::Sender::start(&plan.pipeline, settings, plan.secrets.clone());
        Arc::new(Emitter { namespace: settings.namespace.clone(), plan, nominal, ids: Mutex::default(), out })
    }

    /// Wait for the queued events to be delivered (bounded: see `transport`); what could not
    /// be, per transport.
    pub async fn finish(&self) -> Vec<Failed> {
        self.out.finish().await
    }

    fn events(&self) -> events::Events<'_> {
        events::Events { plan: &self.plan, namespace: &self.namespace }
    }

    fn send(&self, event: serde_json::Value) {
        let line = serde_json::to_string(&event).unwrap_or_default();
        // Texts were redacted where they came from; this is the last line of defence.
        let line = crate::secrets::global().redact(&self.plan.secrets.redact(&line));
        self.out.send(line);
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A time-ordered UUID (version 7), as OpenLineage recommends for run ids.
fn new_uuid() -> Uuid {
    let ms = Utc::now().timestamp_millis().max(0) as u64;
    let bytes: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(ms, &bytes).into_uuid()
}

impl Observer for Emitter {
    fn run_started(&self, run_id: &str) {
        let id = new_uuid();
        {
            let mut ids = self.ids();
            ids.weir_run_id = run_id.to_string();
            ids.run = Some(id);
        }
        let e = self.events().run_event(events::Kind::Start, Utc::now(), id, run_id, self.nominal, None);
        self.send(e);
    }

    fn task_started(&self, task: &str, _kind: &str) {
        let (run, weir_run_id, id) = {
            let mut ids = self.ids();
            let id = new_uuid();
            ids.tasks.insert(task.to_string(), id);
            (ids.run, ids.weir_run_id.clone(), id)
        };
        let Some(run) = run else { return };
        if let Some(e) = self.events().task_event(task, events::Kind::Start, Utc::now(), id, run, &weir_run_id, None) {
            self.send(e);
        }
    }

    fn task_finished(&self, report: &TaskReport) {
        let kind = match report.status {
            TaskStatus::Succeeded | TaskStatus::Fused | TaskStatus::UpToDate => events::Kind::Complete,
            TaskStatus::Failed => events::Kind::Fail,
            TaskStatus::Cancelled => events::Kind::Abort,
            // Never started: the run's event says why.
            TaskStatus::Skipped => return,
        };
        let (run, weir_run_id, started) = {
            let ids = self.ids();
            (ids.run, ids.weir_run_id.clone(), ids.tasks.get(&report.name).copied())
        };
        let Some(run) = run else { return };
        let id = match started {
            Some(id) => id,
            None => {
                // Finished without starting (fused into its consumer, up to date, reused by
                // `--resume`): its START is sent now, so that the run has both.
                let id = new_uuid();
                let at = report.started_at.unwrap_or_else(Utc::now);
                let e = self.events().task_event(&report.name, events::Kind::Start, at, id, run, &weir_run_id, None);
                if let Some(e) = e {
                    self.send(e);
                }
                id
            }
        };
        let at = report.finished_at.unwrap_or_else(Utc::now);
        if let Some(e) = self.events().task_event(&report.name, kind, at, id, run, &weir_run_id, Some(report)) {
            self.send(e);
        }
    }

    fn run_finished(&self, report: &RunReport) {
        let Some(run) = self.ids().run else { return };
        let kind = match report.status {
            crate::run::RunStatus::Succeeded => events::Kind::Complete,
            crate::run::RunStatus::Failed => events::Kind::Fail,
            crate::run::RunStatus::Cancelled => events::Kind::Abort,
        };
        let error = report
            .tasks
            .iter()
            .find(|t| t.status == TaskStatus::Failed)
            .map(|t| format!("task `{}` failed: {}", t.name, t.error.as_deref().unwrap_or("")));
        let e = self.events().run_event(kind, Utc::now(), run, &report.run_id, self.nominal, error.as_deref());
        self.send(e);
    }

    fn run_errored(&self, error: &str) {
        let (run, weir_run_id) = {
            let ids = self.ids();
            (ids.run, ids.weir_run_id.clone())
        };
        let Some(run) = run else { return };
        let e = self.events().run_event(events::Kind::Fail, Utc::now(), run, &weir_run_id, self.nominal, Some(error));
        self.send(e);
    }
}
