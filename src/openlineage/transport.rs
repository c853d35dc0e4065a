//! Where events go: an HTTP endpoint and/or a file of newline-delimited JSON. Events are queued
//! as the run goes and sent in order by one background task per transport, so a slow consumer
//! never holds a task (or the other transport) up; a consumer that fails is logged and counted,
//! never fails the run.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::compile::openlineage::OpenLineagePlan;

/// Attempts per event while the endpoint answers; one once it has failed (until it answers
/// again), so that a dead endpoint costs one timeout per event, not three.
const ATTEMPTS: u32 = 3;
const BACKOFF: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];

/// One queue and one sending task per transport: a slow endpoint never delays the file.
pub(super) struct Sender {
    lanes: Vec<Lane>,
    pipeline: String,
    timeout: Duration,
    failures: Arc<Mutex<Vec<Failed>>>,
}

/// A transport's queue, its task, and how many of its events are not yet handled.
struct Lane {
    name: &'static str,
    tx: Mutex<Option<mpsc::UnboundedSender<Arc<str>>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    pending: Arc<AtomicU64>,
}

/// Events a transport could not deliver, and why the last one failed (redacted).
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub transport: &'static str,
    pub events: u64,
    pub last_error: String,
}

impl Sender {
    /// Start the sending tasks (on the current tokio runtime).
    pub(super) fn start(pipeline: &str, settings: &OpenLineagePlan, secrets: crate::secrets::Secrets) -> Sender {
        let mut transports: Vec<Transport> = Vec::new();
        if let Some(url) = &settings.url {
            transports.push(Transport::Http(Http::new(url, settings.api_key.as_deref(), settings.timeout)));
        }
        if let Some(path) = &settings.file {
            transports.push(Transport::File(path.clone()));
        }
        let failures = Arc::new(Mutex::new(Vec::new()));
        let lanes = transports
            .into_iter()
            .map(|transport| {
                let (tx, rx) = mpsc::unbounded_channel::<Arc<str>>();
                let pending = Arc::new(AtomicU64::new(0));
                let name = transport.name();
                let worker = Worker {
                    pipeline: pipeline.to_string(),
                    transport,
                    pending: pending.clone(),
                    secrets: secrets.clone(),
                    failures: failures.clone(),
                };
                let task = tokio::spawn(worker.run(rx));
                Lane { name, tx: Mutex::new(Some(tx)), task: Mutex::new(Some(task)), pending }
            })
            .collect();
        Sender { lanes, pipeline: pipeline.to_string(), timeout: settings.timeout, failures }
    }

    /// Queue one event (a JSON line without its newline) for every transport.
    pub(super) fn send(&self, line: String) {
        let line: Arc<str> = line.into();
        for lane in &self.lanes {
            if let Some(tx) = lock(&lane.tx).as_ref() {
                lane.pending.fetch_add(1, Ordering::SeqCst);
                if tx.send(line.clone()).is_err() {
                    lane.pending.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// No more events: wait for the queues to drain, at most two request timeouts and a second
    /// (what is left is counted as failed and logged). Returns what could not be delivered.
    pub(super) async fn finish(&self) -> Vec<Failed> {
        let wait = self.timeout * 2 + Duration::from_secs(1);
        let deadline = tokio::time::Instant::now() + wait;
        for lane in &self.lanes {
            drop(lock(&lane.tx).take());
        }
        for lane in &self.lanes {
            let Some(mut task) = lock(&lane.task).take() else { continue };
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let left = lane.pending.swap(0, Ordering::SeqCst);
                if left > 0 {
                    let reason = format!("not sent within {wait:?} after the run: the consumer was too slow");
                    tracing::warn!(pipeline = %self.pipeline, transport = lane.name, "{left} OpenLineage events {reason}");
                    metrics::counter!(
                        crate::metrics::OPENLINEAGE_EVENTS_TOTAL,
                        "pipeline" => self.pipeline.clone(),
                        "transport" => lane.name,
                        "outcome" => "failed"
                    )
                    .increment(left);
                    record(&self.failures, lane.name, left, &reason);
                }
            }
        }
        lock(&self.failures).clone()
    }
}

fn record(failures: &Mutex<Vec<Failed>>, transport: &'static str, events: u64, error: &str) {
    let mut f = lock(failures);
    match f.iter_mut().find(|x| x.transport == transport) {
        Some(x) => {
            x.events += events;
            x.last_error = error.to_string();
        }
        None => f.push(Failed { transport, events, last_error: error.to_string() }),
    }
}

enum Transport {
    Http(Http),
    File(std::path::PathBuf),
}

impl Transport {
    fn name(&self) -> &'static str {
        match self {
            Transport::Http(_) => "http",
            Transport::File(_) => "file",
        }
    }
}

struct Http {
    url: String,
    api_key: Option<String>,
    client: Option<reqwest::Client>,
    /// The last event could not be delivered: try the next ones once only.
    down: bool,
}

impl Http {
    fn new(url: &str, api_key: Option<&str>, timeout: Duration) -> Http {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .build()
            .ok();
        Http { url: url.to_string(), api_key: api_key.map(str::to_string), client, down: false }
    }

    async fn post(&mut self, body: &str) -> Result<(), String> {
        let Some(client) = &self.client else { return Err("no HTTP client could be built".into()) };
        let attempts = if self.down { 1 } else { ATTEMPTS };
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(BACKOFF[(attempt as usize - 1).min(BACKOFF.len() - 1)]).await;
            }
            let mut req =
                client.post(&self.url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
            if let Some(k) = &self.api_key {
                req = req.bearer_auth(k);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    self.down = false;
                    return Ok(());
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    let text: String = text.chars().take(200).collect();
                    last = format!("the endpoint answered {status}: {}", text.trim());
                    // A request the consumer refuses is not sent again; one it could not take
                    // now (overloaded, restarting) is.
                    if !(status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS) {
                        break;
                    }
                }
                Err(e) => last = crate::diag::error_chain(&e),
            }
        }
        self.down = true;
        Err(last)
    }
}

struct Worker {
    pipeline: String,
    transport: Transport,
    pending: Arc<AtomicU64>,
    secrets: crate::secrets::Secrets,
    failures: Arc<Mutex<Vec<Failed>>>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Arc<str>>) {
        let name = self.transport.name();
        while let Some(line) = rx.recv().await {
            let result = match &mut self.transport {
                Transport::Http(h) => h.post(&line).await,
                Transport::File(path) => append(path, &line).map_err(|e| format!("{}: {e}", path.display())),
            };
            let outcome = match &result {
                Ok(()) => "sent",
                Err(e) => {
                    let e = crate::secrets::global().redact(&self.secrets.redact(e));
                    tracing::warn!(pipeline = %self.pipeline, transport = name, "OpenLineage event not sent: {e}");
                    record(&self.failures, name, 1, &e);
                    "failed"
                }
            };
            metrics::counter!(
                crate::metrics::OPENLINEAGE_EVENTS_TOTAL,
                "pipeline" => self.pipeline.clone(),
                "transport" => name,
                "outcome" => outcome
            )
            .increment(1);
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Append one line to `path` (its directory created), in one write.
fn append(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    f.write_all(&buf)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
