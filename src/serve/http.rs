//! The daemon's HTTP server (axum): `/metrics` and `/healthz` for Prometheus and load
//! balancers, `/api/...` for people and scripts. With a token (`--token` / `WEIR_TOKEN`),
//! `/api` requires `Authorization: Bearer <token>`, compared in constant time; off loopback
//! the daemon refuses to start without one.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{Daemon, Trigger, TriggerError};

pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/pipelines", get(pipelines))
        .route("/api/pipelines/{name}/run", post(run_now))
        .route("/api/runs", get(runs))
        .route("/api/runs/{run_id}", get(run_detail))
        .route("/api/ticks", get(ticks))
        .route("/api/alerts", get(alerts))
        .merge(super::pages::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(d)
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: the API reads with GET; only POST /api/pipelines/{name}/run changes anything",
    )
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = crate::secrets::global().redact(&message.into());
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not found: GET / (the status page), /metrics, /healthz, /api/pipelines, /api/runs?pipeline=, /api/runs/{run_id}, /api/ticks?pipeline=, /api/alerts?pipeline=; POST /api/pipelines/{name}/run",
    )
}

/// The cookie the status page's sign-in sets: the token, out of scripts' reach (`HttpOnly`)
/// and never sent by a request another site makes (`SameSite=Strict`).
pub(super) const COOKIE: &str = "weir_token";

pub(super) fn token_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
    )
}

/// Equal, in constant time.
pub(super) fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether the request carries the token (`Authorization: Bearer`, or the status page's
/// cookie), or no token is set.
pub(super) fn authorized(d: &Daemon, headers: &HeaderMap) -> bool {
    let Some(token) = d.token() else { return true };
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|b| same(b, token)) {
        return true;
    }
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).any(|c| {
        c.trim()
            .strip_prefix(COOKIE)
            .and_then(|v| v.strip_prefix('='))
            .map(|v| {
                url::form_urlencoded::parse(format!("v={v}").as_bytes())
                    .map(|(_, v)| v.into_owned())
                    .next()
                    .unwrap_or_default()
            })
            .is_some_and(|v| same(&v, token))
    })
}

/// A request another site's page made (a form or a script elsewhere posting here): browsers
/// say so in `Sec-Fetch-Site`, or with an `Origin` that is not this host. Such requests change
/// nothing, token or not.
pub(super) fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => url::Url::parse(origin).ok().is_none_or(|o| {
            let authority = match o.port() {
                Some(p) => format!("{}:{p}", o.host_str().unwrap_or("")),
                None => o.host_str().unwrap_or("").to_string(),
            };
            !authority.eq_ignore_ascii_case(host)
        }),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The 401 response to send, unless the request carries the token (when one is set).
fn unauthorized(d: &Daemon, headers: &HeaderMap) -> Option<Response> {
    if authorized(d, headers) {
        None
    } else {
        let mut r = error(StatusCode::UNAUTHORIZED, "this API needs `Authorization: Bearer <token>`");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        Some(r)
    }
}

async fn metrics() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render()).into_response()
}

async fn healthz(State(d): State<Arc<Daemon>>) -> Response {
    let (pipelines, invalid) = d.pipeline_count();
    axum::Json(json!({ "status": "ok", "pipelines": pipelines, "invalid": invalid })).into_response()
}

async fn pipelines(State(d): State<Arc<Daemon>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&d, &headers) {
        return r;
    }
    let v = d.pipelines_json();
    json_redacted(&v)
}

async fn run_now(State(d): State<Arc<Daemon>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if cross_site(&headers) {
        return error(StatusCode::FORBIDDEN, "a request from another site's page cannot start a run");
    }
    if let Some(r) = unauthorized(&d, &headers) {
        return r;
    }
    match d.trigger(&name, Trigger::Manual) {
        Ok(run_id) => (StatusCode::ACCEPTED, axum::Json(json!({ "pipeline": name, "run_id": run_id }))).into_response(),
        Err(e @ TriggerError::Unknown(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ TriggerError::Invalid(_)) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(e @ TriggerError::Running { .. }) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ TriggerError::Stopping) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `?pipeline=…&limit=…`, read by hand: a bad value gets a JSON error, not axum's plain text.
struct ListQuery {
    pipeline: Option<String>,
    limit: Option<usize>,
}

impl ListQuery {
    fn parse(d: &Daemon, raw: Option<&str>, default: usize) -> Result<ListQuery, Response> {
        let mut q = ListQuery { pipeline: None, limit: Some(default) };
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "pipeline" => q.pipeline = Some(v.into_owned()),
                "limit" => match v.parse::<usize>() {
                    Ok(n) => q.limit = Some(n.min(1000)),
                    Err(_) => {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            format!("`limit` must be a whole number (1 to 1000), got `{v}`"),
                        ));
                    }
                },
                other => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        format!("unknown parameter `{other}`: use `pipeline` and `limit`"),
                    ));
                }
            }
        }
        if let Some(p) = &q.pipeline {
            let known = d.known_pipelines();
            if !known.contains(p) {
                let hint = crate::diag::did_you_mean(p, known.iter().map(String::as_str))
                    .map(|h| format!(": {h}"))
                    .unwrap_or_default();
                return Err(error(StatusCode::NOT_FOUND, format!("no pipeline named `{p}`{hint}")));
            }
        }
        Ok(q)
    }
}

async fn runs(State(d): State<Arc<Daemon>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    if let Some(r) = unauthorized(&d, &headers) {
        return r;
    }
    let q = match ListQuery::parse(&d, raw.as_deref(), 50) {
        Ok(q) => q,
        Err(r) => return r,
    };
    match d.state().runs(q.pipeline.as_deref(), q.limit.unwrap_or(50)) {
        Ok(runs) => {
            let v: Vec<_> = runs
                .into_iter()
                .map(|r| {
                    json!({
                        "run_id": r.run_id, "pipeline": r.pipeline, "status": r.status,
                        "logical_date": r.logical_date, "started_at": r.started_at,
                        "finished_at": r.finished_at, "error": r.error,
                    })
                })
                .collect();
            json_redacted(&serde_json::Value::Array(v))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn run_detail(State(d): State<Arc<Daemon>>, headers: HeaderMap, Path(run_id): Path<String>) -> Response {
    if let Some(r) = unauthorized(&d, &headers) {
        return r;
    }
    let state = d.state();
    let run = match state.run(&run_id) {
        Ok(Some(r)) => r,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no run `{run_id}`")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let tasks = state.tasks(&run_id).unwrap_or_default();
    let checks = state.checks(&run_id).unwrap_or_default();
    let v = json!({
        "run_id": run.run_id, "pipeline": run.pipeline, "status": run.status,
        "logical_date": run.logical_date, "started_at": run.started_at,
        "finished_at": run.finished_at, "error": run.error,
        "tasks": tasks.iter().map(|t| json!({
            "task": t.task, "kind": t.kind, "status": t.status, "attempts": t.attempts,
            "started_at": t.started_at, "finished_at": t.finished_at, "rows_in": t.rows_in,
            "rows_out": t.rows_out, "bytes_read": t.bytes_read, "bytes_written": t.bytes_written,
            "files": t.files, "error": t.error, "note": t.note,
        })).collect::<Vec<_>>(),
        "checks": checks.iter().map(|c| json!({
            "task": c.task, "name": c.name, "kind": c.kind, "severity": c.severity,
            "status": c.status, "failing": c.failing, "checked": c.checked, "message": c.message,
        })).collect::<Vec<_>>(),
    });
    json_redacted(&v)
}

async fn ticks(State(d): State<Arc<Daemon>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    if let Some(r) = unauthorized(&d, &headers) {
        return r;
    }
    let q = match ListQuery::parse(&d, raw.as_deref(), 100) {
        Ok(q) => q,
        Err(r) => return r,
    };
    match d.state().ticks(q.pipeline.as_deref(), q.limit.unwrap_or(100)) {
        Ok(t) => json_redacted(&serde_json::to_value(t).unwrap_or_default()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn alerts(State(d): State<Arc<Daemon>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    if let Some(r) = unauthorized(&d, &headers) {
        return r;
    }
    let q = match ListQuery::parse(&d, raw.as_deref(), 100) {
        Ok(q) => q,
        Err(r) => return r,
    };
    match d.state().alerts(q.pipeline.as_deref(), q.limit.unwrap_or(100)) {
        Ok(a) => json_redacted(&serde_json::to_value(a).unwrap_or_default()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// JSON with every known secret replaced (errors and messages may quote them).
fn json_redacted(v: &serde_json::Value) -> Response {
    let text = crate::secrets::global().redact(&serde_json::to_string_pretty(v).unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}
