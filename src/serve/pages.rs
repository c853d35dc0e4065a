//! The status page: HTML rendered by the daemon from the state store and the compiled plans,
//! on the API's listener and under its token rules. Every view is a plain page that works
//! without JavaScript (links, forms, tables, inline SVG); the one embedded script only refreshes
//! a page while something on it is running. The CSS and the script are compiled into the
//! binary: nothing is fetched from anywhere else.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use petgraph::Direction as Dir;
use serde_json::Value;

use super::http::{authorized, cross_site, token_cookie};
use super::{Daemon, Trigger, TriggerError};
use crate::compile::lineage::Direction;
use crate::diag::{fmt_bytes, fmt_duration};
use crate::state::{CheckRecord, RunRecord, TaskRecord};

const CSS: &str = include_str!("status.css");
const JS: &str = include_str!("status.js");
/// Runs shown in a pipeline's grid.
const GRID_RUNS: usize = 25;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/", get(pipelines_page))
        .route("/pipelines/{name}", get(pipeline_page))
        .route("/pipelines/{name}/run", post(run_now))
        .route("/pipelines/{name}/lineage", get(lineage_page))
        .route("/runs/{run_id}", get(run_page))
        .route("/login", get(login_page).post(login))
        .route("/static/status.css", get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .route("/static/status.js", get(|| async { asset("text/javascript; charset=utf-8", JS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// HTML-escape text (`<`, `>`, `&`, `'`, `"`: safe in content and in quoted attributes).
fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// A path segment or query value, percent-encoded.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A whole page. `live`: something on it is running, the script (or, without it, a refresh
/// header) reloads it.
fn page(title: &str, live: bool, crumbs: &[(&str, String)], body: &str) -> Response {
    let mut nav = String::from("<a href=\"/\">Pipelines</a>");
    for (text, href) in crumbs {
        let _ = write!(nav, " <span aria-hidden=\"true\">›</span> <a href=\"{}\">{}</a>", esc(href), esc(text));
    }
    let refresh = if live { "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>" } else { "" };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · weir</title><link rel=\"stylesheet\" href=\"/static/status.css\">{refresh}\
<script src=\"/static/status.js\" defer></script></head>\
<body data-live=\"{live}\"><a class=\"skip\" href=\"#main\">Skip to content</a>\
<header><span class=\"brand\">weir</span><nav aria-label=\"Breadcrumbs\">{nav}</nav></header>\
<main id=\"main\" tabindex=\"-1\">{body}</main></body></html>",
        title = esc(title),
    );
    let html = crate::secrets::global().redact(&html);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], html).into_response()
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let mut r = page(title, false, &[], &format!("<h1>{}</h1><p>{}</p>", esc(title), esc(text)));
    *r.status_mut() = status;
    r
}

/// The login page's address for a page that needs the token.
fn to_login(next: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/login?next={}", enc(next))) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Statuses, times and numbers, as text that does not rely on colour.

/// A status as a badge: a symbol and the word (colour only repeats them).
fn badge(status: &str) -> String {
    format!("<span class=\"badge st-{}\">{} {}</span>", css_status(status), symbol(status), esc(status))
}

fn css_status(status: &str) -> &'static str {
    match status {
        "succeeded" | "ok" | "passed" | "sent" | "delivered" => "ok",
        "failed" | "failing" | "invalid" | "abandoned" => "failed",
        "running" | "pending" => "running",
        "stale" | "warned" | "quarantined" => "warn",
        "cancelled" | "skipped" => "skipped",
        "fused" | "up to date" => "quiet",
        _ => "quiet",
    }
}

fn symbol(status: &str) -> &'static str {
    match status {
        "succeeded" | "ok" | "passed" | "delivered" => "✓",
        "failed" | "failing" | "invalid" | "abandoned" => "✗",
        "running" | "pending" => "▶",
        "stale" | "warned" | "quarantined" => "!",
        "cancelled" => "■",
        "skipped" => "–",
        "fused" => "↷",
        "up to date" => "=",
        _ => "·",
    }
}

fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&Utc))
}

/// `2026-12-04 15:56:51 UTC (3 min ago)`, in a `<time>` element.
fn when(t: &str) -> String {
    match parse_time(t) {
        Some(at) => {
            let ago = Utc::now() - at;
            let rel = if ago.num_seconds() < 0 {
                format!("in {}", span(-ago.num_milliseconds() as f64 / 1000.0))
            } else {
                format!("{} ago", span(ago.num_milliseconds() as f64 / 1000.0))
            };
            format!(
                "<time datetime=\"{}\">{} <span class=\"rel\">({rel})</span></time>",
                esc(t),
                at.format("%Y-%m-%d %H:%M:%S UTC")
            )
        }
        None => esc(t),
    }
}

/// A length of time in seconds, as the CLI shows one.
fn span(secs: f64) -> String {
    fmt_duration(std::time::Duration::from_secs_f64(secs.max(0.0)))
}

fn duration(start: Option<&str>, end: Option<&str>) -> Option<f64> {
    let s = parse_time(start?)?;
    let e = end.and_then(parse_time).unwrap_or_else(Utc::now);
    Some((e - s).num_milliseconds() as f64 / 1000.0)
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Pipelines.

/// How urgent a pipeline's state is: failing and stale first.
fn rank(p: &Value) -> u8 {
    if p["running"].is_string() {
        return 3;
    }
    match p["health"].as_str() {
        Some("failing") => 0,
        Some("stale") => 1,
        Some("invalid") => 2,
        _ if !p["valid"].as_bool().unwrap_or(true) => 2,
        _ => 4,
    }
}

async fn pipelines_page(State(d): State<Arc<Daemon>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    if !authorized(&d, &headers) {
        return to_login("/");
    }
    let sort = url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "sort")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let Value::Array(mut list) = d.pipelines_json() else {
        return message_page(StatusCode::INTERNAL_SERVER_ERROR, "Error", "no pipelines");
    };
    let alerts = d.state().alerts(None, 1000).unwrap_or_default();
    let name = |p: &Value| p["name"].as_str().unwrap_or("").to_string();
    match sort.as_str() {
        "name" => list.sort_by_key(name),
        "last_run" => {
            list.sort_by_key(|p| std::cmp::Reverse(p["last_run"]["started_at"].as_str().unwrap_or("").to_string()))
        }
        "next_tick" => list.sort_by_key(|p| p["next_tick"].as_str().map(str::to_string).unwrap_or_else(|| "~".into())),
        _ => list.sort_by_key(|p| (rank(p), name(p))),
    }
    let live = list.iter().any(|p| p["running"].is_string());
    let mut rows = String::new();
    for p in &list {
        let n = name(p);
        let health = if p["running"].is_string() {
            "running".to_string()
        } else {
            p["health"].as_str().unwrap_or("ok").to_string()
        };
        let fresh = match (p["health"].as_str(), p["freshness"].as_str()) {
            (Some("stale"), w) => {
                let since = match p["last_success"].as_str() {
                    Some(t) => format!("since {}", when(t)),
                    None => "never succeeded".to_string(),
                };
                format!("{} {since}", badge("stale"))
                    + &w.map(|w| format!(" <span class=\"rel\">(window {})</span>", esc(w))).unwrap_or_default()
            }
            (_, Some(w)) => format!("{} <span class=\"rel\">(within {})</span>", badge("ok"), esc(w)),
            _ => "<span class=\"rel\">no window</span>".to_string(),
        };
        let last = match p["last_run"].as_object() {
            Some(r) => {
                let id = r["run_id"].as_str().unwrap_or("");
                let took = duration(r["started_at"].as_str(), r["finished_at"].as_str()).map(span).unwrap_or_default();
                format!(
                    "<a href=\"/runs/{}\">{}</a> {} <span class=\"rel\">took {}</span>",
                    enc(id),
                    badge(r["status"].as_str().unwrap_or("")),
                    r["started_at"].as_str().map(when).unwrap_or_default(),
                    took
                )
            }
            None => "<span class=\"rel\">never ran</span>".to_string(),
        };
        let schedule = match p["schedule"].as_object() {
            Some(s) => format!(
                "<code>{}</code> {}",
                esc(s["cron"].as_str().unwrap_or("")),
                esc(s["timezone"].as_str().unwrap_or(""))
            ),
            None => "<span class=\"rel\">none</span>".into(),
        };
        let open: Vec<&str> =
            alerts.iter().filter(|a| a.pipeline == n && a.status == "pending").map(|a| a.event.as_str()).collect();
        let open = if open.is_empty() { String::new() } else { format!("{} {}", open.len(), esc(&open.join(", "))) };
        let errors = p["errors"].as_array().map(|e| e.len()).unwrap_or(0);
        let errors = if errors > 0 {
            format!(
                "<a href=\"/pipelines/{}#errors\">{} {}</a>",
                enc(&n),
                badge("invalid"),
                if errors == 1 { "1 problem".into() } else { format!("{errors} problems") }
            )
        } else {
            String::new()
        };
        let _ = write!(
            rows,
            "<tr data-pipeline=\"{n_attr}\" data-health=\"{h_attr}\"><th scope=\"row\"><a href=\"/pipelines/{n_enc}\">{n_html}</a></th><td>{health}</td><td>{schedule}</td><td>{next}</td><td>{last}</td><td>{fresh}</td><td>{open}</td><td>{errors}</td></tr>",
            n_attr = esc(&n),
            h_attr = esc(&health),
            n_enc = enc(&n),
            n_html = esc(&n),
            health = badge(&health),
            next = p["next_tick"].as_str().map(when).unwrap_or_default(),
        );
    }
    let th = |key: &str, label: &str| -> String {
        let current = if sort == key || (sort.is_empty() && key == "status") { " aria-sort=\"ascending\"" } else { "" };
        let href = if key == "status" { "/".to_string() } else { format!("/?sort={key}") };
        format!("<th scope=\"col\"{current}><a href=\"{href}\">{label}</a></th>")
    };
    let body = format!(
        "<h1>Pipelines</h1><p class=\"rel\">{} pipelines; failing and stale first. Sort by a column's name.</p>\
<div class=\"scroll\"><table class=\"list\" id=\"pipelines\"><caption class=\"sr\">Pipelines and their state</caption><thead><tr>{}{}<th scope=\"col\">Schedule</th>{}{}<th scope=\"col\">Freshness</th><th scope=\"col\">Open alerts</th><th scope=\"col\">File</th></tr></thead><tbody>{rows}</tbody></table></div>",
        list.len(),
        th("name", "Pipeline"),
        th("status", "Status"),
        th("next_tick", "Next tick"),
        th("last_run", "Last run"),
    );
    page("Pipelines", live, &[], &body)
}

// ---------------------------------------------------------------------------------------------
// A pipeline: schedule, run now, the DAG, the grid of runs × tasks.

async fn pipeline_page(State(d): State<Arc<Daemon>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if !authorized(&d, &headers) {
        return to_login(&format!("/pipelines/{}", enc(&name)));
    }
    let Value::Array(list) = d.pipelines_json() else {
        return message_page(StatusCode::INTERNAL_SERVER_ERROR, "Error", "");
    };
    let p = list.into_iter().find(|p| p["name"] == name.as_str());
    let runs = d.state().runs(Some(&name), GRID_RUNS).unwrap_or_default();
    if p.is_none() && runs.is_empty() {
        return message_page(StatusCode::NOT_FOUND, "Not found", &format!("no pipeline named `{name}`"));
    }
    let p = p.unwrap_or(Value::Null);
    let plan = d.plan_of(&name);
    let mut body = format!("<h1>{}</h1>", esc(&name));
    if let Some(desc) = p["description"].as_str() {
        let _ = write!(body, "<p>{}</p>", esc(desc));
    }
    // What it is and when it runs.
    let mut facts = String::new();
    let mut fact = |k: &str, v: String| {
        let _ = write!(facts, "<dt>{}</dt><dd>{}</dd>", esc(k), v);
    };
    let health = if p["running"].is_string() { "running" } else { p["health"].as_str().unwrap_or("ok") };
    fact("Status", badge(health));
    fact("File", format!("<code>{}</code>", esc(p["file"].as_str().unwrap_or("(removed)"))));
    match p["schedule"].as_object() {
        Some(s) => {
            fact(
                "Schedule",
                format!(
                    "<code>{}</code> in {}; catch-up <code>{}</code>, overlap <code>{}</code>",
                    esc(s["cron"].as_str().unwrap_or("")),
                    esc(s["timezone"].as_str().unwrap_or("")),
                    esc(s["catchup"].as_str().unwrap_or("")),
                    esc(s["overlap"].as_str().unwrap_or(""))
                ),
            );
            fact("Next tick", p["next_tick"].as_str().map(when).unwrap_or_else(|| "—".into()));
        }
        None => fact("Schedule", "none (runs when asked)".into()),
    }
    fact(
        "Freshness",
        p["freshness"].as_str().map(|f| format!("a success within {}", esc(f))).unwrap_or_else(|| "no window".into()),
    );
    fact("Last success", p["last_success"].as_str().map(when).unwrap_or_else(|| "never".into()));
    let _ = write!(body, "<dl class=\"facts\">{facts}</dl>");
    // Run now: a form (works without JavaScript); the daemon answers with the run's page.
    if plan.is_some() {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/pipelines/{}/run\" class=\"inline\"><button type=\"submit\" id=\"run-now\">Run now</button></form> <a href=\"/pipelines/{}/lineage\">Column lineage</a>",
            enc(&name),
            enc(&name)
        );
    }
    if let Some(errors) = p["errors"].as_array().filter(|e| !e.is_empty()) {
        let _ = write!(
            body,
            "<h2 id=\"errors\">The file on disk does not compile</h2><p>The daemon keeps running its last valid version.</p>"
        );
        for e in errors {
            let _ = write!(body, "<pre class=\"error\">{}</pre>", esc(e.as_str().unwrap_or("")));
        }
    }
    // The latest run's status of each task.
    let latest: HashMap<String, String> = runs
        .first()
        .map(|r| d.state().tasks(&r.run_id).unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.task, t.status))
        .collect();
    if let Some(plan) = &plan {
        let _ = write!(body, "<h2>Tasks</h2>{}", dag(plan, &latest));
    }
    let _ = write!(body, "<h2>Runs</h2>{}", grid(&d, plan.as_deref(), &runs));
    let live = p["running"].is_string() || runs.first().is_some_and(|r| r.status == "running");
    page(&name, live, &[(&name, format!("/pipelines/{}", enc(&name)))], &body)
}

/// The DAG as inline SVG: tasks in columns by depth, each with its latest status as symbol,
/// word and colour, linked to its column lineage.
fn dag(plan: &crate::compile::Plan, latest: &HashMap<String, String>) -> String {
    let mut depth: HashMap<petgraph::graph::NodeIndex, usize> = HashMap::new();
    for &i in &plan.order {
        let d =
            plan.graph.neighbors_directed(i, Dir::Incoming).filter_map(|u| depth.get(&u)).max().map_or(0, |d| d + 1);
        depth.insert(i, d);
    }
    let mut columns: BTreeMap<usize, Vec<petgraph::graph::NodeIndex>> = BTreeMap::new();
    for &i in &plan.order {
        columns.entry(depth[&i]).or_default().push(i);
    }
    let layout = Layout { w: 190.0, h: 44.0, gap_x: 60.0, gap_y: 16.0 };
    let (w, h) = (layout.w, layout.h);
    let (pos, width, height) = layout.place(&columns.into_values().collect::<Vec<_>>());
    let mut svg = format!(
        "<div class=\"scroll\"><svg class=\"dag\" role=\"img\" aria-labelledby=\"dag-title\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\"><title id=\"dag-title\">The tasks of {} and how they depend on each other, with each task's status in the latest run</title>",
        esc(&plan.pipeline)
    );
    for e in plan.graph.edge_indices() {
        let Some((a, b)) = plan.graph.edge_endpoints(e) else { continue };
        svg.push_str(&layout.edge(pos[&a], pos[&b], plan.graph[e] == crate::compile::Edge::Order));
    }
    for &i in &plan.order {
        let t = plan.task(i);
        let (x, y) = pos[&i];
        let status = latest.get(&t.name).map(String::as_str).unwrap_or("not run");
        let _ = write!(
            svg,
            "<a href=\"/pipelines/{p}/lineage?task={t_enc}\" class=\"node\" data-task=\"{t}\" data-status=\"{s}\"><title>{t}: {kind}, {s} in the latest run</title>\
<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"6\" class=\"st-{c}\"/>\
<text x=\"{tx}\" y=\"{ty1}\" class=\"name\">{sym} {t}</text><text x=\"{tx}\" y=\"{ty2}\" class=\"kind\">{kind} · {s}</text></a>",
            p = enc(&plan.pipeline),
            t_enc = enc(&t.name),
            t = esc(&t.name),
            kind = t.kind.name(),
            s = esc(status),
            c = css_status(status),
            sym = symbol(status),
            tx = x + 10.0,
            ty1 = y + 19.0,
            ty2 = y + 36.0,
        );
    }
    svg.push_str("</svg></div>");
    svg
}

/// Runs × tasks, newest run first: each cell the task's status in that run, linked to the run.
fn grid(d: &Daemon, plan: Option<&crate::compile::Plan>, runs: &[RunRecord]) -> String {
    if runs.is_empty() {
        return "<p>No runs yet.</p>".into();
    }
    let per_run: Vec<HashMap<String, TaskRecord>> = runs
        .iter()
        .map(|r| d.state().tasks(&r.run_id).unwrap_or_default().into_iter().map(|t| (t.task.clone(), t)).collect())
        .collect();
    // Tasks in the plan's order, then any only history knows.
    let mut tasks: Vec<String> = plan.map(|p| p.tasks().map(|t| t.name.clone()).collect()).unwrap_or_default();
    for m in &per_run {
        let mut extra: Vec<&String> = m.keys().filter(|t| !tasks.contains(t)).collect();
        extra.sort();
        tasks.extend(extra.into_iter().cloned());
    }
    let mut head = String::from("<th scope=\"col\">Task</th>");
    for r in runs {
        let at = parse_time(&r.started_at).map(|t| t.format("%m-%d %H:%M").to_string()).unwrap_or_default();
        let _ = write!(
            head,
            "<th scope=\"col\"><a href=\"/runs/{}\" title=\"{} {}\">{}<br><span class=\"rel\">{at}</span></a></th>",
            enc(&r.run_id),
            esc(&r.run_id),
            esc(&r.status),
            symbol(&r.status)
        );
    }
    let mut rows = String::new();
    for t in &tasks {
        let _ = write!(rows, "<tr><th scope=\"row\">{}</th>", esc(t));
        for (r, m) in runs.iter().zip(&per_run) {
            match m.get(t) {
                Some(x) => {
                    let label = format!("{t} in run {}: {}", r.run_id, x.status);
                    let _ = write!(
                        rows,
                        "<td><a class=\"cell st-{}\" href=\"/runs/{}#task-{}\" title=\"{}\" aria-label=\"{}\">{}</a></td>",
                        css_status(&x.status),
                        enc(&r.run_id),
                        esc(t),
                        esc(&label),
                        esc(&label),
                        symbol(&x.status)
                    );
                }
                None => rows.push_str("<td><span class=\"cell\" aria-label=\"not in this run\">&nbsp;</span></td>"),
            }
        }
        rows.push_str("</tr>");
    }
    format!(
        "<p class=\"rel\">The last {} runs, newest first. ✓ succeeded, ✗ failed, – skipped, ■ cancelled, ↷ fused, = up to date, ▶ running.</p><div class=\"scroll\"><table class=\"grid\" id=\"grid\"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>",
        runs.len()
    )
}

async fn run_now(State(d): State<Arc<Daemon>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if cross_site(&headers) {
        return message_page(StatusCode::FORBIDDEN, "Refused", "a request from another site cannot start a run");
    }
    if !authorized(&d, &headers) {
        return to_login(&format!("/pipelines/{}", enc(&name)));
    }
    match d.trigger(&name, Trigger::Manual) {
        Ok(run_id) => redirect(&format!("/runs/{}", enc(&run_id))),
        Err(e @ TriggerError::Unknown(_)) => message_page(StatusCode::NOT_FOUND, "Not found", &e.to_string()),
        Err(e @ TriggerError::Invalid(_)) => {
            message_page(StatusCode::UNPROCESSABLE_ENTITY, "Cannot run", &e.to_string())
        }
        Err(e @ TriggerError::Running { .. }) => message_page(StatusCode::CONFLICT, "Already running", &e.to_string()),
        Err(e @ TriggerError::Stopping) => message_page(StatusCode::SERVICE_UNAVAILABLE, "Stopping", &e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// A run: timeline, tasks, checks with their failing rows.

async fn run_page(State(d): State<Arc<Daemon>>, headers: HeaderMap, Path(run_id): Path<String>) -> Response {
    if !authorized(&d, &headers) {
        return to_login(&format!("/runs/{}", enc(&run_id)));
    }
    let state = d.state();
    let run = match state.run(&run_id) {
        Ok(Some(r)) => r,
        // A run just triggered is recorded when it starts: say so, and look again shortly.
        Ok(None) => {
            let body =
                format!("<h1>Run {}</h1><p>{} Waiting for the run to start.</p>", esc(&run_id), badge("pending"));
            return page(&run_id, true, &[], &body);
        }
        Err(e) => return message_page(StatusCode::INTERNAL_SERVER_ERROR, "Error", &e.to_string()),
    };
    let tasks = state.tasks(&run_id).unwrap_or_default();
    let checks = state.checks(&run_id).unwrap_or_default();
    let took = duration(Some(&run.started_at), run.finished_at.as_deref());
    let mut body = format!("<h1>Run <code>{}</code></h1>", esc(&run.run_id));
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>Status</dt><dd id=\"run-status\" data-status=\"{s}\">{b}</dd><dt>Pipeline</dt><dd><a href=\"/pipelines/{pe}\">{p}</a></dd><dt>Logical date</dt><dd>{ld}</dd><dt>Started</dt><dd>{st}</dd><dt>Finished</dt><dd>{fi}</dd><dt>Took</dt><dd>{took}</dd></dl>",
        s = esc(&run.status),
        b = badge(&run.status),
        pe = enc(&run.pipeline),
        p = esc(&run.pipeline),
        ld = esc(&run.logical_date),
        st = when(&run.started_at),
        fi = run.finished_at.as_deref().map(when).unwrap_or_else(|| "—".into()),
        took = took.map(span).unwrap_or_default(),
    );
    if let Some(e) = &run.error {
        let _ = write!(body, "<h2>Why it failed</h2><pre class=\"error\" id=\"run-error\">{}</pre>", esc(e));
    }
    let _ = write!(body, "<h2>Timeline</h2>{}", timeline(&run, &tasks));
    let _ = write!(body, "<h2>Tasks</h2>{}", task_table(&tasks));
    if !checks.is_empty() {
        let _ = write!(body, "<h2>Checks</h2>{}", check_list(&checks));
    }
    let crumbs = [
        (run.pipeline.as_str(), format!("/pipelines/{}", enc(&run.pipeline))),
        (run.run_id.as_str(), format!("/runs/{}", enc(&run.run_id))),
    ];
    page(&format!("Run {}", run.run_id), run.status == "running", &crumbs, &body)
}

/// Each task as a bar from its start to its end, on the run's time axis.
fn timeline(run: &RunRecord, tasks: &[TaskRecord]) -> String {
    let Some(start) = parse_time(&run.started_at) else { return String::new() };
    let end = tasks
        .iter()
        .filter_map(|t| t.finished_at.as_deref().and_then(parse_time))
        .chain(run.finished_at.as_deref().and_then(parse_time))
        .max()
        .unwrap_or_else(Utc::now)
        .max(start + chrono::Duration::milliseconds(1));
    let total = (end - start).num_milliseconds().max(1) as f64;
    let mut rows = String::new();
    for t in tasks {
        let (Some(s), e) =
            (t.started_at.as_deref().and_then(parse_time), t.finished_at.as_deref().and_then(parse_time))
        else {
            let _ = write!(
                rows,
                "<li><span class=\"label\">{}</span><span class=\"track\"><span class=\"rel\">{} not run</span></span></li>",
                esc(&t.task),
                badge(&t.status)
            );
            continue;
        };
        let e = e.unwrap_or_else(Utc::now);
        let left = (s - start).num_milliseconds() as f64 / total * 100.0;
        let width = ((e - s).num_milliseconds() as f64 / total * 100.0).max(0.5);
        let text = format!(
            "{}: {} after {}, for {}",
            t.task,
            t.status,
            span((s - start).num_milliseconds() as f64 / 1000.0),
            span((e - s).num_milliseconds() as f64 / 1000.0)
        );
        let _ = write!(
            rows,
            "<li><span class=\"label\">{}</span><span class=\"track\"><span class=\"bar st-{}\" style=\"left:{left:.2}%;width:{width:.2}%\" title=\"{t_attr}\"></span><span class=\"sr\">{t_attr}</span></span></li>",
            esc(&t.task),
            css_status(&t.status),
            t_attr = esc(&text),
        );
    }
    format!(
        "<ul class=\"gantt\" aria-label=\"When each task ran, on the run's {} time axis\">{rows}</ul>",
        span(total / 1000.0)
    )
}

fn task_table(tasks: &[TaskRecord]) -> String {
    let mut rows = String::new();
    for t in tasks {
        let error = t.error.as_deref().map(|e| format!("<pre class=\"error\">{}</pre>", esc(e))).unwrap_or_default();
        let _ = write!(
            rows,
            "<tr id=\"task-{id}\" data-task=\"{id}\" data-status=\"{s}\"><th scope=\"row\">{id}</th><td>{kind}</td><td>{b}</td><td>{retries}</td><td>{start}</td><td>{took}</td><td class=\"num\">{ri}</td><td class=\"num\">{ro}</td><td class=\"num\">{br}</td><td class=\"num\">{bw}</td><td class=\"num\">{files}</td><td>{note}{error}</td></tr>",
            id = esc(&t.task),
            kind = esc(&t.kind),
            s = esc(&t.status),
            b = badge(&t.status),
            retries = t.attempts.saturating_sub(1),
            start = t
                .started_at
                .as_deref()
                .and_then(parse_time)
                .map(|s| s.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_default(),
            took = duration(t.started_at.as_deref(), t.finished_at.as_deref())
                .filter(|_| t.finished_at.is_some())
                .map(span)
                .unwrap_or_default(),
            ri = opt(t.rows_in),
            ro = opt(t.rows_out),
            br = t.bytes_read.map(fmt_bytes).unwrap_or_default(),
            bw = t.bytes_written.map(fmt_bytes).unwrap_or_default(),
            files = opt(t.files),
            note = t.note.as_deref().map(esc).unwrap_or_default(),
        );
    }
    format!(
        "<div class=\"scroll\"><table class=\"list\" id=\"tasks\"><thead><tr><th scope=\"col\">Task</th><th scope=\"col\">Kind</th><th scope=\"col\">Status</th><th scope=\"col\">Retries</th><th scope=\"col\">Started</th><th scope=\"col\">Took</th><th scope=\"col\">Rows in</th><th scope=\"col\">Rows out</th><th scope=\"col\">Read</th><th scope=\"col\">Written</th><th scope=\"col\">Files</th><th scope=\"col\">Note</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
}

fn check_list(checks: &[CheckRecord]) -> String {
    let mut out = String::new();
    for c in checks {
        // In the table's column order, as stored.
        let samples: Vec<indexmap::IndexMap<String, Value>> = serde_json::from_str(&c.samples).unwrap_or_default();
        let mut table = String::new();
        if !samples.is_empty() {
            let cols: Vec<&String> = samples[0].keys().collect();
            let head: String = cols.iter().map(|k| format!("<th scope=\"col\">{}</th>", esc(k))).collect();
            let body: String = samples
                .iter()
                .map(|r| {
                    let cells: String = cols
                        .iter()
                        .map(|k| match r.get(*k) {
                            Some(Value::String(s)) => format!("<td>{}</td>", esc(s)),
                            Some(Value::Null) | None => "<td class=\"rel\">null</td>".to_string(),
                            Some(v) => format!("<td>{}</td>", esc(&v.to_string())),
                        })
                        .collect();
                    format!("<tr>{cells}</tr>")
                })
                .collect();
            table = format!(
                "<table class=\"list samples\"><caption>Failing rows (up to five)</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            );
        }
        let _ = write!(
            out,
            "<section class=\"check\" data-check=\"{name}\" data-status=\"{s}\"><h3>{b} <code>{task}</code> · {name} <span class=\"rel\">({kind}, {sev})</span></h3><p>{failing} of {checked} rows failing. {msg}</p>{table}</section>",
            name = esc(&c.name),
            s = esc(&c.status),
            b = badge(&c.status),
            task = esc(&c.task),
            kind = esc(&c.kind),
            sev = esc(&c.severity),
            failing = c.failing,
            checked = c.checked,
            msg = esc(&c.message),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Lineage: a task's columns; a column's upstream and downstream.

async fn lineage_page(
    State(d): State<Arc<Daemon>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if !authorized(&d, &headers) {
        return to_login(&format!("/pipelines/{}/lineage", enc(&name)));
    }
    let Some(plan) = d.plan_of(&name) else {
        return message_page(StatusCode::NOT_FOUND, "Not found", &format!("no valid pipeline named `{name}`"));
    };
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()).into_owned().collect();
    let link = |t: &str, c: &str| format!("/pipelines/{}/lineage?column={}", enc(&name), enc(&format!("{t}.{c}")));
    let mut body = format!("<h1>Column lineage of {}</h1>", esc(&name));
    if let Some(col) = q.get("column")
        && let Some((task, column)) = col.split_once('.')
    {
        let _ = write!(body, "<h2><code>{}</code></h2>", esc(col));
        let up = crate::compile::lineage::focus(&plan, task, column, Direction::Upstream);
        let down = crate::compile::lineage::focus(&plan, task, column, Direction::Downstream);
        if let (Some(up), Some(down)) = (&up, &down) {
            body.push_str(&lineage_graph(&plan, &name, task, column, up, down));
        }
        for (title, dir, focus) in
            [("Where it comes from", Direction::Upstream, &up), ("What depends on it", Direction::Downstream, &down)]
        {
            let _ = write!(body, "<h3>{title}</h3>");
            match focus {
                Some(f) if !f.reaches.is_empty() => {
                    let mut reaches = f.reaches.clone();
                    reaches.sort_by(|a, b| (a.distance, &a.task, &a.column).cmp(&(b.distance, &b.task, &b.column)));
                    let rows: String = reaches
                        .iter()
                        .map(|r| {
                            let how: Vec<&str> = r.how.iter().map(|h| h.name()).collect();
                            format!(
                                "<tr><td class=\"num\">{}</td><td><a href=\"{}\"><code>{}.{}</code></a></td><td>{}</td><td>{}</td></tr>",
                                r.distance,
                                esc(&link(&r.task, &r.column)),
                                esc(&r.task),
                                esc(&r.column),
                                esc(&r.kind),
                                esc(&how.join(", "))
                            )
                        })
                        .collect();
                    let _ = write!(
                        body,
                        "<table class=\"list lineage\" data-direction=\"{}\"><thead><tr><th scope=\"col\">Steps</th><th scope=\"col\">Column</th><th scope=\"col\">Task kind</th><th scope=\"col\">How</th></tr></thead><tbody>{rows}</tbody></table>",
                        if dir == Direction::Upstream { "upstream" } else { "downstream" }
                    );
                }
                Some(_) => body.push_str("<p>Nothing.</p>"),
                None => {
                    let _ = write!(body, "<p>No column <code>{}</code>.</p>", esc(col));
                    break;
                }
            }
        }
    }
    let only = q.get("task");
    let _ = write!(
        body,
        "<h2>Columns</h2><p class=\"rel\">Choose a column to see where it comes from and what depends on it.</p>"
    );
    for t in plan.tasks().filter(|t| only.is_none_or(|o| *o == t.name)) {
        let cols: String = t
            .schema
            .fields()
            .iter()
            .map(|f| {
                format!(
                    "<li><a href=\"{}\"><code>{}</code></a> <span class=\"rel\">{}</span></li>",
                    esc(&link(&t.name, f.name())),
                    esc(f.name()),
                    esc(&f.data_type().to_string())
                )
            })
            .collect();
        let _ = write!(
            body,
            "<section class=\"columns\"><h3>{} <span class=\"rel\">{}</span></h3><ul>{cols}</ul></section>",
            esc(&t.name),
            t.kind.name()
        );
    }
    if only.is_some() {
        let _ = write!(body, "<p><a href=\"/pipelines/{}/lineage\">All tasks</a></p>", enc(&name));
    }
    let crumbs = [
        (name.as_str(), format!("/pipelines/{}", enc(&name))),
        ("lineage", format!("/pipelines/{}/lineage", enc(&name))),
    ];
    page(&format!("Lineage of {name}"), false, &crumbs, &body)
}

/// Boxes in columns, left to right, and curved edges between them (the DAG, a column's
/// lineage).
struct Layout {
    w: f64,
    h: f64,
    gap_x: f64,
    gap_y: f64,
}

impl Layout {
    /// Each item's top-left corner, and the drawing's width and height.
    fn place<K: Clone + Eq + std::hash::Hash>(&self, columns: &[Vec<K>]) -> (HashMap<K, (f64, f64)>, f64, f64) {
        let mut pos = HashMap::new();
        for (c, items) in columns.iter().enumerate() {
            for (r, k) in items.iter().enumerate() {
                pos.insert(
                    k.clone(),
                    (c as f64 * (self.w + self.gap_x) + 10.0, r as f64 * (self.h + self.gap_y) + 10.0),
                );
            }
        }
        let width = columns.len() as f64 * (self.w + self.gap_x) + 10.0;
        let height = columns.iter().map(Vec::len).max().unwrap_or(1) as f64 * (self.h + self.gap_y) + 10.0;
        (pos, width, height)
    }

    /// A curve from the right side of the box at `a` to the left side of the box at `b`.
    fn edge(&self, (ax, ay): (f64, f64), (bx, by): (f64, f64), dashed: bool) -> String {
        let (w, h, g) = (self.w, self.h, self.gap_x);
        let dash = if dashed { " stroke-dasharray=\"4 3\"" } else { "" };
        format!(
            "<path d=\"M{:.0} {:.0} C{:.0} {:.0} {:.0} {:.0} {:.0} {:.0}\" class=\"edge\"{dash}/>",
            ax + w,
            ay + h / 2.0,
            ax + w + g / 2.0,
            ay + h / 2.0,
            bx - g / 2.0,
            by + h / 2.0,
            bx,
            by + h / 2.0
        )
    }
}

/// A column's lineage drawn: what it comes from on the left (one column of boxes per step),
/// the column in the middle, what depends on it on the right; an edge for each dependency
/// between them (dashed when it decides rows rather than values). The tables after it say the
/// same in text.
fn lineage_graph(
    plan: &crate::compile::Plan,
    pipeline: &str,
    task: &str,
    column: &str,
    up: &crate::compile::lineage::Focus,
    down: &crate::compile::lineage::Focus,
) -> String {
    type Col = (String, String);
    let mut layer: BTreeMap<Col, i64> = BTreeMap::new();
    layer.insert((task.to_string(), column.to_string()), 0);
    for r in &up.reaches {
        layer.entry((r.task.clone(), r.column.clone())).or_insert(-(r.distance as i64));
    }
    for r in &down.reaches {
        layer.entry((r.task.clone(), r.column.clone())).or_insert(r.distance as i64);
    }
    // The dependencies of a column: its own, and those deciding its task's rows.
    let deps = |(t, c): &Col| -> Vec<(Col, bool)> {
        let Some(i) = plan.index_of(t) else { return Vec::new() };
        let node = plan.task(i);
        let own = node.schema.index_of(c).ok().and_then(|k| node.lineage.columns.get(k)).cloned().unwrap_or_default();
        own.iter().chain(&node.lineage.rows).map(|d| ((d.task.clone(), d.column.clone()), d.how.direct())).collect()
    };
    let mut edges: Vec<(Col, Col, bool)> = Vec::new();
    for n in layer.keys() {
        for (from, direct) in deps(n) {
            if layer.contains_key(&from) && !edges.iter().any(|(a, b, _)| *a == from && b == n) {
                edges.push((from, n.clone(), direct));
            }
        }
    }
    let mut columns: BTreeMap<i64, Vec<&Col>> = BTreeMap::new();
    for (c, l) in &layer {
        columns.entry(*l).or_default().push(c);
    }
    let layout = Layout { w: 200.0, h: 34.0, gap_x: 70.0, gap_y: 12.0 };
    let (w, h) = (layout.w, layout.h);
    // Distances are contiguous: the layers in order are the columns left to right.
    let (pos, width, height) = layout.place(&columns.into_values().collect::<Vec<_>>());
    let mut svg = format!(
        "<div class=\"scroll\"><svg class=\"dag lineage-graph\" role=\"img\" aria-label=\"{} columns upstream and {} downstream of {}.{}; the tables below list them\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">",
        up.reaches.len(),
        down.reaches.len(),
        esc(task),
        esc(column)
    );
    for (a, b, direct) in &edges {
        svg.push_str(&layout.edge(pos[a], pos[b], !direct));
    }
    let mut placed: Vec<(&&Col, &(f64, f64))> = pos.iter().collect();
    placed.sort_by(|a, b| a.0.cmp(b.0));
    for (c, (x, y)) in placed {
        let focus = c.0 == task && c.1 == column;
        let _ = write!(
            svg,
            "<a href=\"/pipelines/{}/lineage?column={}\" class=\"node\"><rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"6\" class=\"{}\"/><text x=\"{}\" y=\"{}\" class=\"name\">{}.{}</text></a>",
            enc(pipeline),
            enc(&format!("{}.{}", c.0, c.1)),
            if focus { "st-running" } else { "st-quiet" },
            x + 10.0,
            y + 21.0,
            esc(&c.0),
            esc(&c.1)
        );
    }
    svg.push_str("</svg></div><p class=\"rel\">Solid edges: the values come from it; dashed: it decides which rows (filters, joins, groups, windows, sorts).</p>");
    svg
}

// ---------------------------------------------------------------------------------------------
// The token, for a browser: a form that sets an HttpOnly, SameSite=Strict cookie.

async fn login_page(State(d): State<Arc<Daemon>>, RawQuery(raw): RawQuery) -> Response {
    let next = next_of(raw.as_deref());
    if d.token().is_none() {
        return redirect(&next);
    }
    let body = format!(
        "<h1>Sign in</h1><p>This daemon needs its token (<code>--token</code> or <code>WEIR_TOKEN</code>).</p>\
<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"next\" value=\"{}\"><label for=\"token\">Token</label> \
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus> <button type=\"submit\">Sign in</button></form>",
        esc(&next)
    );
    page("Sign in", false, &[], &body)
}

/// `next`, if it is a path on this site (never another site's address).
fn next_of(raw: Option<&str>) -> String {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or_else(|| "/".into())
}

async fn login(State(d): State<Arc<Daemon>>, headers: HeaderMap, body: Bytes) -> Response {
    if cross_site(&headers) {
        return message_page(StatusCode::FORBIDDEN, "Refused", "a sign-in from another site is refused");
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let next = next_of(Some(&format!("next={}", enc(form.get("next").map(String::as_str).unwrap_or("/")))));
    let given = form.get("token").map(String::as_str).unwrap_or("");
    match d.token() {
        Some(t) if super::http::same(given, t) => {
            let mut r = redirect(&next);
            if let Ok(v) = HeaderValue::from_str(&token_cookie(t)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Some(_) => message_page(StatusCode::UNAUTHORIZED, "Wrong token", "that is not this daemon's token"),
        None => redirect(&next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_next_stays_on_this_site() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;");
        assert_eq!(next_of(Some("next=%2Fruns%2Fx")), "/runs/x");
        assert_eq!(next_of(Some("next=https%3A%2F%2Fevil.example")), "/");
        assert_eq!(next_of(Some("next=%2F%2Fevil.example")), "/");
        assert_eq!(next_of(None), "/");
    }

    #[test]
    fn lengths_of_time_read_as_words() {
        assert_eq!(span(0.25), "250 ms");
        assert_eq!(span(12.34), "12.34 s");
        assert_eq!(span(245.0), "4m 05s");
        assert_eq!(span(3.0 * 3600.0 + 120.0), "3h 02m");
        assert_eq!(span(2.0 * 86400.0 + 4.0 * 3600.0), "2d 04h");
        assert_eq!(span(-1.0), "0 ms");
        assert_eq!(fmt_bytes(1536), "1.5 KB");
    }

    #[test]
    fn every_status_has_a_symbol_and_a_word() {
        for s in ["succeeded", "failed", "skipped", "cancelled", "fused", "up to date", "running", "stale", "passed"] {
            assert_ne!(symbol(s), "·", "{s}");
            assert!(badge(s).contains(s));
        }
    }
}
