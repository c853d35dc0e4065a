//! HTTP APIs as a source (`source::http`): an `http://` or `https://` store with its
//! authentication, and an extract's `http:` request — pages fetched one after another, each
//! JSON response's records decoded into Arrow.
//!
//! - **Store** ([`HttpStore`]): the base URL, one kind of authentication (bearer token,
//!   basic, an API key in a header or a parameter, OAuth2 client credentials), the timeout
//!   of one request and how many times a failed request is tried again.
//! - **Plan** ([`HttpPlan`]): the request (path, parameters, headers, where the records
//!   are, pagination, rate limit) and the schema — inferred at compile from the first page
//!   (cached in the state store) or declared.
//! - **Read** ([`HttpRead`]): a DataFusion `PartitionStream` that asks for page after page
//!   until the API says it is done. Every request passes the rate limiter; `429` and `503`
//!   wait as long as `Retry-After` says; other transient failures (connection errors,
//!   timeouts, `408`, `5xx`) are tried again with exponential backoff. A page that still
//!   fails fails the read, naming the URL with its secrets removed, the status and the
//!   start of the body.
//! - **Position**: a watermark, as for any source with an ordered cursor: `${watermark}` in
//!   the path or a parameter is the committed watermark (minus `lookback`), and the rows are
//!   filtered by it again after reading (an API's `updated_since` is often inclusive).

mod paging;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use serde_json::Value;
use url::Url;

pub use paging::{Paging, link_next};

use crate::secrets::REDACTED;
use crate::spec;

/// Options an HTTP store knows.
pub const OPTIONS: &[&str] = &[
    "bearer_token",
    "basic_user",
    "basic_password",
    "api_key",
    "api_key_header",
    "api_key_param",
    "oauth2_token_url",
    "client_id",
    "client_secret",
    "scope",
    "oauth2_client_auth",
    "timeout",
    "retries",
];

/// Bytes of a failing response's body quoted in its error.
const BODY_EXCERPT: usize = 300;
/// The longest `Retry-After` honoured; longer fails the page.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Records decoded into one batch (pages are gathered until then).
const BATCH_ROWS: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("unknown option `{0}`")]
    UnknownOption(String),
    #[error("option `{key}` {reason}")]
    Option { key: String, reason: String },
    #[error("{0}")]
    Url(String),
    /// The read itself went wrong (the decoder, a value its declared type cannot hold).
    #[error("{0}")]
    Read(String),
    /// The server answered with an error status (after the retries, when it was worth one).
    #[error("GET {url}: HTTP {status}{retried}{body}")]
    Status { url: String, status: u16, retried: String, body: String, transient: bool },
    /// No answer: connection refused or dropped, a timeout.
    #[error("GET {url}: {message}{retried}")]
    Request { url: String, message: String, retried: String, transient: bool },
    /// An answer that is not what the extract expects (not JSON, no records where they
    /// should be, a value not of its column's type).
    #[error("GET {url}: {message}")]
    Response { url: String, message: String },
    /// Records with fields the extract's schema lacks. `schema` is the extract's schema with
    /// them added (for the next compile).
    #[error(
        "GET {url}: the records have fields the extract's schema does not: {}. Nothing was loaded; the next run reads them as new columns (the cached schema now has them), or declare their types in `schema:`",
        fields.join(", ")
    )]
    NewFields { url: String, fields: Vec<String>, schema: SchemaRef },
    #[error("OAuth2 token from {url}: {message}")]
    Token { url: String, message: String, transient: bool },
}

impl HttpError {
    /// Worth trying the whole read again.
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Status { transient, .. }
            | HttpError::Request { transient, .. }
            | HttpError::Token { transient, .. } => *transient,
            _ => false,
        }
    }

    /// An HTTP error inside `e` or its causes (a read's stream fails with one, wrapped in
    /// DataFusion's errors).
    pub fn inside<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a HttpError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(h) = err.downcast_ref::<HttpError>() {
                return Some(h);
            }
            if let Some(datafusion::error::DataFusionError::External(inner)) =
                err.downcast_ref::<datafusion::error::DataFusionError>()
            {
                cur = Some(inner.as_ref());
                continue;
            }
            cur = err.source();
        }
        None
    }
}

/// How requests authenticate.
#[derive(Debug)]
enum Auth {
    None,
    Bearer(String),
    Basic { user: String, password: Option<String> },
    ApiKeyHeader { header: reqwest::header::HeaderName, key: String },
    ApiKeyParam { param: String, key: String },
    OAuth2(OAuth2),
}

/// OAuth2 client credentials (RFC 6749 §4.4): a token asked for when needed and again when
/// it expires or is refused.
#[derive(Debug)]
struct OAuth2 {
    token_url: Url,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    /// Client authentication in the body (`client_secret_post`) instead of HTTP Basic.
    post: bool,
    token: tokio::sync::Mutex<Option<(String, Option<Instant>)>>,
}

/// An `http://` or `https://` store.
#[derive(Debug)]
pub struct HttpStore {
    pub name: String,
    /// The base URL (ending in `/`).
    base: Url,
    auth: Auth,
    timeout: Duration,
    retries: u32,
    client: reqwest::Client,
    /// Values never shown (the store's credentials, tokens it was given).
    secrets: crate::secrets::Secrets,
}

/// Whether `url` names an HTTP API store.
pub fn is_http_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

impl HttpStore {
    pub fn new(name: &str, url: &str, options: &[(String, String)]) -> Result<HttpStore, HttpError> {
        let mut base = Url::parse(url.trim()).map_err(|e| HttpError::Url(format!("`{url}` is not a URL: {e}")))?;
        if !base.username().is_empty() || base.password().is_some() {
            return Err(HttpError::Url(
                "credentials in an HTTP store's URL are not supported: use `basic_user` and `basic_password` in `options`"
                    .into(),
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let get = |k: &str| options.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        for (k, _) in options {
            if !OPTIONS.contains(&k.as_str()) {
                return Err(HttpError::UnknownOption(k.clone()));
            }
        }
        let opt_err = |key: &str, reason: &str| HttpError::Option { key: key.into(), reason: reason.into() };
        let secrets = crate::secrets::Secrets::new();
        for (k, v) in options {
            if crate::storage::is_credential(k) {
                secrets.add(v);
            }
        }
        let kinds: Vec<&str> = [
            ("bearer_token", get("bearer_token").is_some()),
            ("basic_user", get("basic_user").is_some()),
            ("api_key", get("api_key").is_some()),
            ("oauth2_token_url", get("oauth2_token_url").is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if kinds.len() > 1 {
            return Err(opt_err(
                kinds[1],
                &format!("cannot be used with `{}`: one kind of authentication per store", kinds[0]),
            ));
        }
        let auth = if let Some(t) = get("bearer_token") {
            Auth::Bearer(t)
        } else if let Some(user) = get("basic_user") {
            Auth::Basic { user, password: get("basic_password") }
        } else if let Some(key) = get("api_key") {
            match (get("api_key_header"), get("api_key_param")) {
                (Some(h), None) => Auth::ApiKeyHeader {
                    header: reqwest::header::HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| opt_err("api_key_header", "is not a valid header name"))?,
                    key,
                },
                (None, Some(param)) => Auth::ApiKeyParam { param, key },
                _ => {
                    return Err(opt_err(
                        "api_key",
                        "needs exactly one of `api_key_header` (e.g. `X-API-Key`) and `api_key_param` (e.g. `key`)",
                    ));
                }
            }
        } else if let Some(t) = get("oauth2_token_url") {
            let token_url = base.join(&t).map_err(|e| opt_err("oauth2_token_url", &format!("is not a URL: {e}")))?;
            let (Some(client_id), Some(client_secret)) = (get("client_id"), get("client_secret")) else {
                return Err(opt_err(
                    "oauth2_token_url",
                    "needs `client_id` and `client_secret` (OAuth2 client credentials)",
                ));
            };
            let post = match get("oauth2_client_auth").as_deref() {
                None | Some("basic") => false,
                Some("post") => true,
                Some(_) => return Err(opt_err("oauth2_client_auth", "must be `basic` (the default) or `post`")),
            };
            Auth::OAuth2(OAuth2 {
                token_url,
                client_id,
                client_secret,
                scope: get("scope"),
                post,
                token: tokio::sync::Mutex::new(None),
            })
        } else {
            Auth::None
        };
        for (key, needs) in [
            ("basic_password", "basic_user"),
            ("api_key_header", "api_key"),
            ("api_key_param", "api_key"),
            ("client_id", "oauth2_token_url"),
            ("client_secret", "oauth2_token_url"),
            ("scope", "oauth2_token_url"),
            ("oauth2_client_auth", "oauth2_token_url"),
        ] {
            if get(key).is_some() && get(needs).is_none() {
                return Err(opt_err(key, &format!("needs `{needs}`")));
            }
        }
        let timeout = match get("timeout") {
            Some(v) => humantime::parse_duration(v.trim())
                .map_err(|_| opt_err("timeout", "must be a duration like `30s` or `2m`"))?,
            None => Duration::from_secs(30),
        };
        let retries = match get("retries") {
            Some(v) => v.trim().parse::<u32>().map_err(|_| opt_err("retries", "must be a whole number"))?,
            None => 5,
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // Redirects are followed only on the same host: credentials go nowhere else.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same = attempt.previous().first().is_some_and(|first| same_origin(first, attempt.url()));
                if same && attempt.previous().len() < 10 { attempt.follow() } else { attempt.stop() }
            }))
            .build()
            .map_err(|e| HttpError::Read(format!("HTTP client: {e}")))?;
        Ok(HttpStore { name: name.to_string(), base, auth, timeout, retries, client, secrets })
    }

    /// The store's URL, as shown.
    pub fn display_url(&self) -> String {
        self.base.to_string()
    }

    /// `text` with every credential of the store (and tokens it was given) replaced.
    pub fn redact(&self, text: &str) -> String {
        let out = self.secrets.redact(text);
        crate::secrets::global().redact(&out)
    }

    /// A URL as messages show it: an API key parameter's value replaced.
    fn shown(&self, url: &Url) -> String {
        let mut u = url.clone();
        if let Auth::ApiKeyParam { param, .. } = &self.auth {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    if k == param.as_str() {
                        (k.into_owned(), REDACTED.to_string())
                    } else {
                        (k.into_owned(), v.into_owned())
                    }
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
        }
        self.redact(u.as_str()).replace("%2A%2A%2A", REDACTED)
    }

    async fn bearer(&self, o: &OAuth2, fresh: bool) -> Result<String, HttpError> {
        let mut slot = o.token.lock().await;
        if !fresh
            && let Some((t, until)) = slot.as_ref()
            && until.is_none_or(|u| Instant::now() + Duration::from_secs(30) < u)
        {
            return Ok(t.clone());
        }
        let shown = self.shown(&o.token_url);
        let err = |message: String, transient: bool| HttpError::Token { url: shown.clone(), message, transient };
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(s) = &o.scope {
                form.append_pair("scope", s);
            }
            if o.post {
                form.append_pair("client_id", &o.client_id);
                form.append_pair("client_secret", &o.client_secret);
            }
            form.finish()
        };
        let mut req = self
            .client
            .post(o.token_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout)
            .body(body);
        if !o.post {
            req = req.basic_auth(&o.client_id, Some(&o.client_secret));
        }
        let resp = req.send().await.map_err(|e| err(self.redact(&request_text(&e, self.timeout)), true))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| err(self.redact(&request_text(&e, self.timeout)), true))?;
        if !status.is_success() {
            return Err(err(
                format!("HTTP {}{}", status.as_u16(), self.excerpt(&body)),
                status.is_server_error() || status.as_u16() == 429,
            ));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| err(format!("the answer is not JSON: {e}"), false))?;
        let Some(token) = v.get("access_token").and_then(Value::as_str) else {
            return Err(err("the answer has no `access_token`".into(), false));
        };
        self.secrets.add(token);
        crate::secrets::global().add(token);
        let until = v.get("expires_in").and_then(Value::as_u64).map(|s| Instant::now() + Duration::from_secs(s));
        *slot = Some((token.to_string(), until));
        Ok(token.to_string())
    }

    /// ": <the start of the body>", redacted, on one line; empty for an empty body.
    fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT * 4)]);
        let mut one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if one.chars().count() > BODY_EXCERPT {
            one = one.chars().take(BODY_EXCERPT).collect::<String>() + "…";
        }
        if one.is_empty() { String::new() } else { format!(": {}", self.redact(&one)) }
    }

    /// One GET, tried again while it fails in a way worth it. Every attempt passes `limiter`.
    async fn get(
        &self,
        url: &Url,
        headers: &[(String, String)],
        limiter: &Limiter,
        stats: &Stats,
    ) -> Result<Answer, HttpError> {
        let shown = self.shown(url);
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            let mut req = self.client.get(url.clone()).timeout(self.timeout);
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
            req = match &self.auth {
                Auth::None | Auth::ApiKeyParam { .. } => req,
                Auth::Bearer(t) => req.bearer_auth(t),
                Auth::Basic { user, password } => req.basic_auth(user, password.as_ref()),
                Auth::ApiKeyHeader { header, key } => req.header(header.clone(), key.as_str()),
                Auth::OAuth2(o) => req.bearer_auth(self.bearer(o, false).await?),
            };
            let sent = {
                let mut slot = limiter.slot().await;
                stats.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let r = req.send().await;
                slot.done();
                r
            };
            let retried = |n: u32| {
                if n == 0 { String::new() } else { format!(" (after {n} retr{})", if n == 1 { "y" } else { "ies" }) }
            };
            let (wait, failure) = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let resp_headers = resp.headers().clone();
                    let body = match resp.bytes().await {
                        Ok(b) => Ok(b),
                        Err(e) => Err(self.redact(&request_text(&e, self.timeout))),
                    };
                    match body {
                        Ok(body) if status.is_success() => {
                            stats.bytes.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
                            return Ok(Answer { headers: resp_headers, body });
                        }
                        Ok(body) => {
                            let code = status.as_u16();
                            if code == 401
                                && !refreshed
                                && let Auth::OAuth2(o) = &self.auth
                            {
                                // The token expired early or was revoked: a new one, once.
                                refreshed = true;
                                self.bearer(o, true).await?;
                                continue;
                            }
                            let transient = matches!(code, 408 | 425 | 429 | 500 | 502 | 503 | 504);
                            let after = if matches!(code, 429 | 503) { retry_after(&resp_headers) } else { None };
                            if let Some(a) = after
                                && a > MAX_RETRY_AFTER
                            {
                                return Err(HttpError::Status {
                                    url: shown,
                                    status: code,
                                    retried: format!(" (Retry-After {} s is longer than weir waits)", a.as_secs()),
                                    body: self.excerpt(&body),
                                    transient: false,
                                });
                            }
                            let e = HttpError::Status {
                                url: shown.clone(),
                                status: code,
                                retried: retried(attempt),
                                body: self.excerpt(&body),
                                transient,
                            };
                            (after, e)
                        }
                        Err(message) => (
                            None,
                            HttpError::Request {
                                url: shown.clone(),
                                message,
                                retried: retried(attempt),
                                transient: true,
                            },
                        ),
                    }
                }
                Err(e) => {
                    let transient = e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() || e.is_decode();
                    let message = self.redact(&request_text(&e, self.timeout));
                    (None, HttpError::Request { url: shown.clone(), message, retried: retried(attempt), transient })
                }
            };
            if !failure.is_transient() || attempt >= self.retries {
                return Err(failure);
            }
            attempt += 1;
            stats.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let wait = wait.unwrap_or_else(|| backoff(attempt));
            tracing::warn!(url = %shown, attempt, wait_ms = wait.as_millis() as u64, error = %failure, "request failed; trying again");
            tokio::time::sleep(wait).await;
        }
    }
}

/// The wait before retry `attempt` (1, 2, …): 500 ms doubled each time, at most 30 s, with
/// up to a quarter more at random (so that several readers do not retry in step).
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(1u32 << attempt.min(6).saturating_sub(1))
        .min(Duration::from_secs(30));
    base + base.mul_f64(rand::random::<f64>() * 0.25)
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
    Some(Duration::from_millis(ms.max(0) as u64))
}

/// A request error's text without its URL (which may carry a key): what went wrong and why.
fn request_text(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} (the store's `timeout`)", humantime::format_duration(timeout));
    }
    let what = if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the connection failed while the answer was read"
    } else {
        "the request failed"
    };
    let mut causes = Vec::new();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let t = c.to_string();
        if !causes.contains(&t) {
            causes.push(t);
        }
        cur = c.source();
    }
    if causes.is_empty() { what.to_string() } else { format!("{what}: {}", causes.join(": ")) }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// A successful answer.
struct Answer {
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

/// Counts of one read, for the run report.
#[derive(Debug, Default)]
pub struct Stats {
    pub pages: std::sync::atomic::AtomicU64,
    pub records: std::sync::atomic::AtomicU64,
    pub requests: std::sync::atomic::AtomicU64,
    pub retries: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
}

impl Stats {
    pub fn get(&self, c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// At most `requests` requests in any window of `per`, as the server sees them. A request is
/// sent only when the one `requests` before it was answered at least `per` ago; requests are
/// one at a time, so each arrived at the server before its answer came back, and the window
/// holds on the server's clock too.
#[derive(Debug)]
pub struct Limiter {
    rate: Option<(usize, Duration)>,
    answered: tokio::sync::Mutex<VecDeque<Instant>>,
}

/// The limiter's turn: held while one request is out.
struct Slot<'a> {
    guard: tokio::sync::MutexGuard<'a, VecDeque<Instant>>,
    n: usize,
}

impl Slot<'_> {
    fn done(&mut self) {
        if self.n == 0 {
            return;
        }
        if self.guard.len() == self.n {
            self.guard.pop_front();
        }
        self.guard.push_back(Instant::now());
    }
}

impl Limiter {
    fn unlimited() -> Limiter {
        Limiter { rate: None, answered: tokio::sync::Mutex::new(VecDeque::new()) }
    }

    /// The limiter of `store`'s rate `rate`: one per process for each store and rate, so that
    /// extracts of one API with the same limit share it, and compile's first page counts.
    pub fn shared(store: &HttpStore, rate: Option<(u32, Duration)>) -> Arc<Limiter> {
        static ALL: LazyLock<Mutex<std::collections::HashMap<String, Arc<Limiter>>>> = LazyLock::new(Default::default);
        let Some((n, per)) = rate else { return Arc::new(Limiter::unlimited()) };
        let key = format!("{}\0{}\0{n}\0{per:?}", store.name, store.base);
        let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(key)
            .or_insert_with(|| {
                Arc::new(Limiter {
                    rate: Some((n as usize, per)),
                    answered: tokio::sync::Mutex::new(VecDeque::with_capacity(n as usize)),
                })
            })
            .clone()
    }

    async fn slot(&self) -> Slot<'_> {
        let guard = self.answered.lock().await;
        let Some((n, per)) = self.rate else { return Slot { guard, n: 0 } };
        if guard.len() == n
            && let Some(first) = guard.front()
        {
            tokio::time::sleep_until((*first + per).into()).await;
        }
        Slot { guard, n }
    }
}

/// What an extract asks of the API.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub params: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// The dot path of the records as written; `None`: the answer is the list.
    pub records: Option<String>,
    pub paginate: Option<Paging>,
    pub rate: Option<(u32, Duration)>,
}

impl Request {
    pub fn new(h: &spec::HttpOptions, rate: Option<(u32, Duration)>) -> Request {
        Request {
            path: h.path.clone(),
            params: h.params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
            headers: h.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            records: h.records.clone().filter(|r| !pointer(r).is_empty()),
            paginate: h.paginate.as_ref().and_then(Paging::of),
            rate,
        }
    }

    /// Whether the request depends on the watermark.
    pub fn uses_watermark(&self) -> bool {
        self.path.contains(spec::WATERMARK_PLACEHOLDER)
            || self.params.iter().any(|(_, v)| v.contains(spec::WATERMARK_PLACEHOLDER))
    }
}

/// How a paging style reads, as `weir plan` says it.
pub fn paging_text(p: &Paging) -> String {
    match p {
        Paging::Cursor(c) => format!("by cursor: `{}` from the answer's `{}`", c.param, c.next),
        Paging::Page(pg) => format!(
            "numbered: `{}` from {}{}",
            pg.param,
            pg.first.unwrap_or(1),
            match (&pg.size_param, pg.size) {
                (Some(sp), Some(n)) => format!(", `{sp}` = {n}"),
                _ => String::new(),
            }
        ),
        Paging::Offset(o) => format!("by offset: `{}` in steps of `{}` = {}", o.param, o.limit_param, o.limit),
        Paging::NextUrl(path) => format!("the next page's URL from the answer's `{path}`"),
        Paging::LinkHeader => "the next page's URL from the `Link` header".into(),
    }
}

/// A dot path (`data.items`; a number steps into a list) as the JSON pointer serde_json's
/// `Value::pointer` takes (`/data/items`).
pub fn pointer(dot: &str) -> String {
    dot.split('.')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The watermark as an API parameter's text: RFC 3339 (UTC, `Z`) for a timestamp with a
/// time zone, without a zone for one without, ISO dates, numbers and text as they are.
pub fn watermark_text(v: &ScalarValue) -> Option<String> {
    use chrono::SecondsFormat;
    let ts = |n: Option<i64>, per_sec: i64| -> Option<chrono::DateTime<chrono::Utc>> {
        let n = n?;
        let secs = n.div_euclid(per_sec);
        let nanos = (n.rem_euclid(per_sec) * (1_000_000_000 / per_sec)) as u32;
        chrono::DateTime::from_timestamp(secs, nanos)
    };
    let (t, zoned) = match v {
        ScalarValue::TimestampSecond(n, tz) => (ts(*n, 1)?, tz.is_some()),
        ScalarValue::TimestampMillisecond(n, tz) => (ts(*n, 1_000)?, tz.is_some()),
        ScalarValue::TimestampMicrosecond(n, tz) => (ts(*n, 1_000_000)?, tz.is_some()),
        ScalarValue::TimestampNanosecond(n, tz) => (ts(*n, 1_000_000_000)?, tz.is_some()),
        ScalarValue::Date32(Some(d)) => {
            return chrono::NaiveDate::from_num_days_from_ce_opt(*d + 719_163)
                .map(|d| d.format("%Y-%m-%d").to_string());
        }
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            return Some(s.clone());
        }
        v if v.is_null() => return None,
        v => return Some(v.to_string()),
    };
    Some(if zoned {
        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    } else {
        t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string()
    })
}

/// An extract of an HTTP API: the store, the request, the schema the records are read with.
#[derive(Debug, Clone)]
pub struct HttpPlan {
    pub store: Arc<HttpStore>,
    pub request: Request,
    /// The extract's schema (inferred and declared columns).
    pub schema: SchemaRef,
    /// The schema the records are decoded with (decimals with more digits, see
    /// `read_type`), cast to `schema` after.
    pub read_schema: SchemaRef,
    /// Where compile cached the inferred schema (the state store's schema cache).
    pub cache_key: String,
    pub limiter: Arc<Limiter>,
}

impl HttpPlan {
    /// The first request's URL, as shown (no secrets), with `${watermark}` as written.
    pub fn describe(&self) -> String {
        match self.first_url(None, true) {
            Ok(u) => self.store.shown(&u).replace("%24%7Bwatermark%7D", spec::WATERMARK_PLACEHOLDER),
            Err(e) => e.to_string(),
        }
    }

    /// The API's origin (`https://api.example.com:443` without a default port) and the
    /// path of the records (no query): how OpenLineage names the dataset.
    pub fn origin_and_path(&self) -> (String, String) {
        let u = self.first_url(None, true).unwrap_or_else(|_| self.store.base.clone());
        let path = u.path().replace("%24%7Bwatermark%7D", spec::WATERMARK_PLACEHOLDER);
        (u.origin().ascii_serialization(), path)
    }

    /// The first page's URL: `${watermark}` replaced by `after`; without one, parameters that
    /// use it are left out (and the path keeps it when `keep`).
    fn first_url(&self, after: Option<&str>, keep: bool) -> Result<Url, HttpError> {
        let r = &self.request;
        let fill = |s: &str| after.map(|a| s.replace(spec::WATERMARK_PLACEHOLDER, a));
        let path = if r.path.contains(spec::WATERMARK_PLACEHOLDER) {
            match fill(&r.path) {
                Some(p) => p,
                None if keep => r.path.clone(),
                None => {
                    return Err(HttpError::Url(
                        "the path uses `${watermark}`, which has no value before the first run: put it in a parameter"
                            .into(),
                    ));
                }
            }
        } else {
            r.path.clone()
        };
        let mut url = self.store.base.join(path.trim()).map_err(|e| HttpError::Url(format!("`{path}`: {e}")))?;
        if !same_origin(&url, &self.store.base) {
            return Err(HttpError::Url(format!("`{path}` is not on the store's host ({})", self.store.base)));
        }
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &r.params {
                if v.contains(spec::WATERMARK_PLACEHOLDER) {
                    match fill(v) {
                        Some(v) => {
                            q.append_pair(k, &v);
                        }
                        None if keep => {
                            q.append_pair(k, v);
                        }
                        None => {}
                    }
                } else {
                    q.append_pair(k, v);
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(url)
    }

    /// The records of the first page (with no watermark), for inference at compile.
    pub async fn first_page(&self) -> Result<Vec<Value>, HttpError> {
        let url = self.first_url(None, false)?;
        let url = paging::start(&self.request.paginate, url);
        let url = self.with_key(url);
        let stats = Stats::default();
        let answer = self.store.get(&url, &self.request.headers, &self.limiter, &stats).await?;
        let (records, _) = self.records(&url, &answer)?;
        Ok(records)
    }

    fn with_key(&self, mut url: Url) -> Url {
        if let Auth::ApiKeyParam { param, key } = &self.store.auth
            && !url.query_pairs().any(|(k, _)| k == param.as_str())
        {
            url.query_pairs_mut().append_pair(param, key);
        }
        url
    }

    /// The records of an answer, and the answer parsed.
    fn records(&self, url: &Url, answer: &Answer) -> Result<(Vec<Value>, Value), HttpError> {
        let shown = self.store.shown(url);
        let bad = |message: String| HttpError::Response { url: shown.clone(), message };
        let mut v: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| bad(format!("the answer is not JSON ({e}){}", self.store.excerpt(&answer.body))))?;
        let list = match &self.request.records {
            None => match &mut v {
                Value::Array(a) => std::mem::take(a),
                Value::Object(m) => {
                    let lists: Vec<&str> = m.iter().filter(|(_, v)| v.is_array()).map(|(k, _)| k.as_str()).collect();
                    return Err(bad(format!(
                        "the answer is an object, not a list of records{}",
                        if lists.is_empty() {
                            String::new()
                        } else {
                            format!(": say where the records are with `records:` (lists in it: {})", lists.join(", "))
                        }
                    )));
                }
                other => return Err(bad(format!("the answer is {}, not a list of records", kind_of(other)))),
            },
            Some(dot) => match v.pointer_mut(&pointer(dot)) {
                Some(Value::Array(a)) => std::mem::take(a),
                // An empty page may say so with null.
                Some(Value::Null) => Vec::new(),
                Some(other) => {
                    return Err(bad(format!("`{dot}` is {}, not a list of records", kind_of(other))));
                }
                None => {
                    let keys = match &v {
                        Value::Object(m) => {
                            format!(" (keys of the answer: {})", m.keys().cloned().collect::<Vec<_>>().join(", "))
                        }
                        _ => String::new(),
                    };
                    return Err(bad(format!("the answer has no `{dot}`{keys}")));
                }
            },
        };
        if let Some((i, r)) = list.iter().enumerate().find(|(_, r)| !r.is_object()) {
            return Err(bad(format!("record {} is {}, not an object", i + 1, kind_of(r))));
        }
        Ok((list, v))
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The schema of records: inferred (fields in name order; a field only ever null is text),
/// with the declared types (and declared columns the records lack) applied.
pub fn infer_schema(records: &[Value], declared: &[(String, DataType)]) -> Result<Schema, String> {
    let inferred = datafusion::arrow::json::reader::infer_json_schema_from_iterator(
        records.iter().map(Ok::<_, datafusion::arrow::error::ArrowError>),
    )
    .map_err(|e| e.to_string())?;
    let mut fields: Vec<Field> = inferred.fields().iter().map(|f| no_null_type(f)).collect();
    for (name, dt) in declared {
        match fields.iter_mut().find(|f| f.name() == name) {
            Some(f) => *f = Field::new(name, dt.clone(), true),
            None => fields.push(Field::new(name, dt.clone(), true)),
        }
    }
    Ok(Schema::new(fields))
}

/// `Null` (a field never seen with a value) as text, in structs and lists too.
fn no_null_type(f: &Field) -> Field {
    let dt = match f.data_type() {
        DataType::Null => DataType::Utf8,
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(|f| Arc::new(no_null_type(f))).collect::<Fields>()),
        DataType::List(inner) => DataType::List(Arc::new(no_null_type(inner))),
        other => other.clone(),
    };
    Field::new(f.name(), dt, true)
}

/// Fields of `found` (dotted for nested ones) that `schema` lacks.
fn missing_fields(schema: &Fields, found: &Fields, prefix: &str, out: &mut Vec<String>) {
    for f in found {
        let name = format!("{prefix}{}", f.name());
        match schema.iter().find(|s| s.name() == f.name()) {
            None => out.push(name),
            Some(s) => match (s.data_type(), f.data_type()) {
                (DataType::Struct(a), DataType::Struct(b)) => missing_fields(a, b, &format!("{name}."), out),
                (DataType::List(a), DataType::List(b)) => {
                    if let (DataType::Struct(a), DataType::Struct(b)) = (a.data_type(), b.data_type()) {
                        missing_fields(a, b, &format!("{name}[]."), out)
                    }
                }
                _ => {}
            },
        }
    }
}

/// `schema` with the fields of `found` it lacks added (nested ones in their struct).
fn merged(schema: &Fields, found: &Fields) -> Fields {
    let mut out: Vec<Field> = Vec::new();
    for s in schema {
        let f = found.iter().find(|f| f.name() == s.name());
        let dt = match (s.data_type(), f.map(|f| f.data_type())) {
            (DataType::Struct(a), Some(DataType::Struct(b))) => DataType::Struct(merged(a, b)),
            (DataType::List(a), Some(DataType::List(b))) => match (a.data_type(), b.data_type()) {
                (DataType::Struct(x), DataType::Struct(y)) => {
                    DataType::List(Arc::new(Field::new(a.name(), DataType::Struct(merged(x, y)), true)))
                }
                _ => s.data_type().clone(),
            },
            _ => s.data_type().clone(),
        };
        out.push(Field::new(s.name(), dt, true));
    }
    for f in found {
        if !schema.iter().any(|s| s.name() == f.name()) {
            out.push(no_null_type(f));
        }
    }
    out.into()
}

/// What a read needs at run time besides the plan.
#[derive(Debug, Clone)]
pub struct HttpRead {
    pub plan: HttpPlan,
    /// `${watermark}`'s value this run; `None`: parameters that use it are left out.
    pub after: Option<String>,
    pub stats: Arc<Stats>,
}

impl PartitionStream for HttpRead {
    fn schema(&self) -> &SchemaRef {
        &self.plan.schema
    }

    /// The pages are fetched by a task of their own, up to [`AHEAD`] pages ahead of the
    /// decoding: the next request goes out while a page is decoded.
    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = self.plan.schema.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
        let fetch = Fetch::new(self.clone());
        let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(fetch.run(tx)));
        let pages = Pages::new(self.clone(), rx, task);
        let stream = futures::stream::try_unfold(pages, |mut p| async move {
            match p.next_batch().await {
                Ok(Some(b)) => Ok(Some((b, p))),
                Ok(None) => Ok(None),
                Err(e) => Err(datafusion::error::DataFusionError::External(Box::new(e))),
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

/// Pages fetched ahead of the decoding.
const AHEAD: usize = 4;

/// What the fetching task sends: a page's records, or that there are no more.
enum Page {
    Records(Url, Vec<Value>),
    Done,
}

/// The requests of one read, one page after another.
struct Fetch {
    read: HttpRead,
    next: Option<Url>,
    state: paging::State,
    /// Digests of the answers so far: an API that ignores the paging parameter answers the
    /// same page forever.
    seen: HashSet<[u8; 32]>,
}

impl Fetch {
    fn new(read: HttpRead) -> Fetch {
        Fetch { read, next: None, state: paging::State::default(), seen: HashSet::new() }
    }

    async fn run(mut self, tx: tokio::sync::mpsc::Sender<Result<Page, HttpError>>) {
        let mut first = true;
        loop {
            let page = self.page(first).await;
            first = false;
            let last = matches!(page, Ok(Page::Done) | Err(_));
            if tx.send(page).await.is_err() || last {
                return;
            }
        }
    }

    async fn page(&mut self, first: bool) -> Result<Page, HttpError> {
        let plan = &self.read.plan;
        let url = if first {
            let url = plan.first_url(self.read.after.as_deref(), false)?;
            paging::start(&plan.request.paginate, url)
        } else {
            match self.next.take() {
                Some(u) => u,
                None => return Ok(Page::Done),
            }
        };
        let url = plan.with_key(url);
        let answer = plan.store.get(&url, &plan.request.headers, &plan.limiter, &self.read.stats).await?;
        let digest: [u8; 32] = *blake3::hash(&answer.body).as_bytes();
        let (records, parsed) = plan.records(&url, &answer)?;
        let shown = || plan.store.shown(&url);
        if !records.is_empty() && !self.seen.insert(digest) {
            return Err(HttpError::Response {
                url: shown(),
                message: "the API answered with a page it gave before: does it take the paging parameter? (stopped instead of reading forever)".into(),
            });
        }
        self.next =
            paging::next(&plan.request.paginate, &mut self.state, &url, &answer.headers, &parsed, records.len())
                .map_err(|message| HttpError::Response { url: shown(), message })?;
        if let Some(n) = &self.next
            && !same_origin(n, &plan.store.base)
        {
            return Err(HttpError::Response {
                url: shown(),
                message: format!(
                    "the next page is on another host ({}): weir sends the store's credentials to its own host only",
                    n.origin().ascii_serialization()
                ),
            });
        }
        self.read.stats.pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.read.stats.records.fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(Page::Records(url, records))
    }
}

/// The decoding side of one read: pages in, batches out.
struct Pages {
    read: HttpRead,
    rx: tokio::sync::mpsc::Receiver<Result<Page, HttpError>>,
    /// The fetching task, aborted when the read is dropped.
    _task: tokio_util::task::AbortOnDropHandle<()>,
    decoder: Option<datafusion::arrow::json::reader::Decoder>,
    /// The records given to the decoder since its last batch (its errors come at the batch:
    /// a field the schema lacks is found in them).
    pending: Vec<Value>,
    done: bool,
}

impl Pages {
    fn new(
        read: HttpRead,
        rx: tokio::sync::mpsc::Receiver<Result<Page, HttpError>>,
        task: tokio_util::task::AbortOnDropHandle<()>,
    ) -> Pages {
        Pages { read, rx, _task: task, decoder: None, pending: Vec::new(), done: false }
    }

    fn decoder(&mut self) -> Result<&mut datafusion::arrow::json::reader::Decoder, HttpError> {
        if self.decoder.is_none() {
            let d = datafusion::arrow::json::reader::ReaderBuilder::new(self.read.plan.read_schema.clone())
                .with_batch_size(BATCH_ROWS)
                .with_coerce_primitive(true)
                .with_strict_mode(true)
                .build_decoder()
                .map_err(|e| HttpError::Read(e.to_string()))?;
            self.decoder = Some(d);
        }
        Ok(self.decoder.as_mut().expect("set above"))
    }

    /// Decoded records, `BATCH_ROWS` at a time; `None` when the API has no more.
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, HttpError> {
        let mut last: Option<Url> = None;
        loop {
            if self.done {
                return self.flush(last.as_ref());
            }
            let (url, records) = match self.rx.recv().await {
                Some(Ok(Page::Records(url, records))) => (url, records),
                Some(Ok(Page::Done)) => {
                    self.done = true;
                    continue;
                }
                Some(Err(e)) => return Err(e),
                // Never taken for the end: a read that stops without saying so is an error.
                None => return Err(HttpError::Read("the page reader stopped before the last page".into())),
            };
            if records.is_empty() {
                continue;
            }
            if let Err(e) = self.decoder()?.serialize(&records) {
                self.pending = records;
                return Err(self.decode_error(&url, e));
            }
            self.pending.extend(records);
            if self.pending.len() >= BATCH_ROWS {
                return self.flush(Some(&url));
            }
            last = Some(url);
        }
    }

    /// The records decoded so far as a batch.
    fn flush(&mut self, url: Option<&Url>) -> Result<Option<RecordBatch>, HttpError> {
        let flushed = self.decoder()?.flush();
        let batch = match flushed {
            Ok(b) => b,
            Err(e) => {
                let url = url.cloned().unwrap_or_else(|| self.read.plan.store.base.clone());
                return Err(self.decode_error(&url, e));
            }
        };
        self.pending.clear();
        batch.map(|b| self.typed(b)).transpose()
    }

    /// The decoder's error about the pending records (of the pages up to `url`).
    fn decode_error(&self, url: &Url, e: datafusion::arrow::error::ArrowError) -> HttpError {
        let text = e.to_string();
        if text.contains("missing from schema") {
            return self.new_fields(url, &self.pending, text);
        }
        HttpError::Response { url: self.read.plan.store.shown(url), message: clean_arrow(&text) }
    }

    fn new_fields(&self, url: &Url, records: &[Value], text: String) -> HttpError {
        let shown = self.read.plan.store.shown(url);
        let found = match infer_schema(records, &[]) {
            Ok(s) => s,
            Err(e) => return HttpError::Response { url: shown, message: format!("{}; {e}", clean_arrow(&text)) },
        };
        let schema = self.read.plan.schema.fields();
        let mut fields = Vec::new();
        missing_fields(schema, found.fields(), "", &mut fields);
        if fields.is_empty() {
            return HttpError::Response { url: shown, message: clean_arrow(&text) };
        }
        let fields = fields.into_iter().map(|f| format!("`{f}`")).collect();
        HttpError::NewFields { url: shown, fields, schema: Arc::new(Schema::new(merged(schema, found.fields()))) }
    }

    /// A decoded batch with every column of its declared type.
    fn typed(&self, b: RecordBatch) -> Result<RecordBatch, HttpError> {
        let plan = &self.read.plan;
        if plan.read_schema == plan.schema {
            return Ok(b);
        }
        let opts = datafusion::arrow::compute::CastOptions { safe: false, ..Default::default() };
        let cols = b
            .columns()
            .iter()
            .zip(plan.schema.fields())
            .map(|(c, f)| datafusion::arrow::compute::cast_with_options(c, f.data_type(), &opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                HttpError::Read(format!("a value does not fit its declared type: {}", clean_arrow(&e.to_string())))
            })?;
        RecordBatch::try_new(plan.schema.clone(), cols).map_err(|e| HttpError::Read(e.to_string()))
    }
}

fn clean_arrow(text: &str) -> String {
    text.trim_start_matches("Json error: ").trim_start_matches("Parser error: ").to_string()
}

/// The type records are decoded as for a column of type `dt`: decimals with every digit
/// that fits past the scale (Arrow's JSON decoder drops digits past the scale where SQL
/// rounds), then cast.
pub fn read_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Decimal128(p, s) if *p < 38 => DataType::Decimal128(38, s + (38 - *p) as i8),
        DataType::Decimal256(p, s) if *p < 76 => DataType::Decimal256(76, s + (76 - *p) as i8),
        other => other.clone(),
    }
}

/// The cache key of an extract's inferred schema: the store's URL, the request (without
/// secrets: they are in the store's options, not here) and the declared types.
pub fn schema_key(store: &HttpStore, request: &Request, declared: &[(String, DataType)]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"weir-http-schema-1\0");
    h.update(store.base.as_str().as_bytes());
    h.update(format!("\0{}\0{:?}\0{:?}\0{declared:?}", request.path, request.params, request.records).as_bytes());
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(options: &[(&str, &str)]) -> Result<HttpStore, HttpError> {
        let o: Vec<(String, String)> = options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        HttpStore::new("api", "http://127.0.0.1:9/v2", &o)
    }

    #[test]
    fn store_options() {
        assert!(
            matches!(store(&[("bearer_token", "abcd"), ("basic_user", "u")]), Err(HttpError::Option { key, .. }) if key == "basic_user")
        );
        assert!(matches!(store(&[("api_key", "abcd")]), Err(HttpError::Option { key, .. }) if key == "api_key"));
        assert!(
            matches!(store(&[("basic_password", "abcd")]), Err(HttpError::Option { key, .. }) if key == "basic_password")
        );
        assert!(matches!(store(&[("bearer", "abcd")]), Err(HttpError::UnknownOption(k)) if k == "bearer"));
        assert!(matches!(store(&[("oauth2_token_url", "/token"), ("client_id", "x")]), Err(HttpError::Option { .. })));
        let s = store(&[("api_key", "k3y-secret"), ("api_key_param", "key")]).unwrap();
        assert_eq!(s.display_url(), "http://127.0.0.1:9/v2/");
        let u = Url::parse("http://127.0.0.1:9/v2/x?a=1&key=k3y-secret").unwrap();
        assert_eq!(s.shown(&u), "http://127.0.0.1:9/v2/x?a=1&key=***");
    }

    #[test]
    fn watermark_texts() {
        let us = ScalarValue::TimestampMicrosecond(Some(1_762_000_000_123_000), Some("UTC".into()));
        assert_eq!(watermark_text(&us).unwrap(), "2025-11-01T12:26:40.123Z");
        let naive = ScalarValue::TimestampSecond(Some(1_762_000_000), None);
        assert_eq!(watermark_text(&naive).unwrap(), "2025-11-01T12:26:40");
        assert_eq!(watermark_text(&ScalarValue::Date32(Some(20_393))).unwrap(), "2025-11-01");
        assert_eq!(watermark_text(&ScalarValue::Int64(Some(42))).unwrap(), "42");
        assert_eq!(watermark_text(&ScalarValue::Int64(None)), None);
    }

    #[test]
    fn schemas_merge_new_fields() {
        let records: Vec<Value> = serde_json::from_str(r#"[{"id": 1, "a": {"x": 1}, "n": null}]"#).unwrap();
        let s = infer_schema(&records, &[("when".into(), DataType::Date32)]).unwrap();
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["a", "id", "n", "when"]);
        assert_eq!(s.field_with_name("n").unwrap().data_type(), &DataType::Utf8);
        let later: Vec<Value> = serde_json::from_str(r#"[{"id": 2, "a": {"x": 1, "y": "b"}, "z": true}]"#).unwrap();
        let found = infer_schema(&later, &[]).unwrap();
        let mut missing = Vec::new();
        missing_fields(s.fields(), found.fields(), "", &mut missing);
        assert_eq!(missing, ["a.y", "z"]);
        let m = merged(s.fields(), found.fields());
        let names: Vec<&str> = m.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["a", "id", "n", "when", "z"]);
    }

    #[test]
    fn dot_paths_are_json_pointers() {
        assert_eq!(pointer("data.items"), "/data/items");
        assert_eq!(pointer(" a . b/c.~d "), "/a/b~1c/~0d");
        assert_eq!(pointer(""), "");
        let v = serde_json::json!({"data": {"pages": [{"next": "x"}]}});
        assert_eq!(v.pointer(&pointer("data.pages.0.next")), Some(&serde_json::json!("x")));
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(backoff(1) >= Duration::from_millis(500) && backoff(1) <= Duration::from_millis(625));
        assert!(backoff(3) >= Duration::from_secs(2));
        assert!(backoff(30) <= Duration::from_millis(37_500));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later =
            (chrono::Utc::now() + chrono::Duration::seconds(20)).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        h.insert(reqwest::header::RETRY_AFTER, later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(17) && d <= Duration::from_secs(20), "{d:?}");
    }
}
