//! HTTP APIs as a source, against a server in this test binary on a loopback port: every
//! pagination style, every kind of authentication (an OAuth2 token refused mid-read and
//! renewed), 429/503 with `Retry-After`, a dropped connection, a page past the timeout, a
//! rate limit the server checks, `${watermark}` increments, kill -9 mid-pagination then a
//! rerun, fields that appear mid-read, and the secrets in nothing weir writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::common::*;

const TOKEN: &str = "bearer-canary-7Qx2";
const PASSWORD: &str = "basic-canary-9Lm4";
const API_KEY: &str = "apikey-canary-3Vt8";
const CLIENT_SECRET: &str = "client-canary-5Rw1";

/// What a request to the API must carry.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    Nothing,
    Bearer,
    Basic,
    KeyHeader,
    KeyParam,
    OAuth2,
}

/// A failure the server answers a request with (by the request's number among API requests,
/// from 1).
#[derive(Clone)]
enum Fault {
    Status(u16, Option<u64>),
    Drop,
    Slow(Duration),
}

#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    path: String,
    query: BTreeMap<String, String>,
}

#[derive(Default)]
struct Api {
    records: Mutex<Vec<Value>>,
    hits: Mutex<Vec<Hit>>,
    expect: Mutex<HashMap<String, Expect>>,
    faults: Mutex<HashMap<usize, Fault>>,
    /// Every request to this path fails with this status.
    broken: Mutex<Option<(String, u16)>>,
    tokens: Mutex<BTreeSet<String>>,
    issued: AtomicU32,
    /// Requests a token is good for before the server refuses it (401).
    token_uses: Mutex<HashMap<String, u32>>,
    /// Kill this process at the API request with this number.
    kill_at: Mutex<Option<(usize, u32)>>,
    /// Answer this long after a request arrives.
    latency: Mutex<Duration>,
}

struct Server {
    port: u16,
    api: Arc<Api>,
}

impl Server {
    fn start(records: Vec<Value>) -> Server {
        let api = Arc::new(Api::default());
        *api.records.lock().unwrap() = records;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = api.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app =
                    axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap, body: axum::body::Bytes| {
                        let api = state.clone();
                        async move { handle(api, m, u, h, body).await }
                    });
                axum::serve(listener, app).await.unwrap();
            });
        });
        Server { port, api }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v2/", self.port)
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.api.hits.lock().unwrap().iter().filter(|h| h.path.ends_with(path)).cloned().collect()
    }
}

/// The records: ids 1..=n, a nested object, a list, a sometimes-null field, a timestamp
/// that grows with the id.
fn records(ids: std::ops::RangeInclusive<u32>) -> Vec<Value> {
    ids.map(|i| {
        json!({
            "id": i,
            "name": format!("contact {i}"),
            "updated_at": format!("2026-11-01T{:02}:{:02}:00Z", i / 60, i % 60),
            "address": { "city": format!("city {}", i % 3), "zip": format!("{:05}", i * 7) },
            "tags": (0..i % 3).map(|t| format!("t{t}")).collect::<Vec<_>>(),
            "score": if i % 4 == 0 { Value::Null } else { json!(i as f64 / 4.0) },
        })
    })
    .collect()
}

fn query_of(u: &Uri) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(u.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn json_response(status: StatusCode, v: Value, extra: &[(&str, String)]) -> Response {
    let mut r = (status, [("content-type", "application/json")], v.to_string()).into_response();
    for (k, val) in extra {
        r.headers_mut().insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), val.parse().unwrap());
    }
    r
}

async fn handle(api: Arc<Api>, m: Method, u: Uri, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let path = u.path().to_string();
    let q = query_of(&u);
    if path == "/oauth/token" {
        use base64_like::basic;
        let ok = m == Method::POST
            && h.get("authorization").and_then(|v| v.to_str().ok())
                == Some(basic("weir-client", CLIENT_SECRET).as_str())
            && String::from_utf8_lossy(&body).contains("grant_type=client_credentials");
        if !ok {
            return json_response(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}), &[]);
        }
        let n = api.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("oauth-canary-token-{n}-Zk");
        api.tokens.lock().unwrap().insert(token.clone());
        api.token_uses.lock().unwrap().insert(token.clone(), 2);
        return json_response(
            StatusCode::OK,
            json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}),
            &[],
        );
    }
    let n = {
        let mut hits = api.hits.lock().unwrap();
        hits.push(Hit { at: Instant::now(), path: path.clone(), query: q.clone() });
        hits.len()
    };
    let kill = *api.kill_at.lock().unwrap();
    if let Some((at, pid)) = kill
        && at == n
    {
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let latency = *api.latency.lock().unwrap();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let kind = path.trim_start_matches("/v2/").to_string();
    // Authentication, per resource.
    let expect = api.expect.lock().unwrap().get(&kind).copied().unwrap_or(Expect::Nothing);
    let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let authorized = match expect {
        Expect::Nothing => true,
        Expect::Bearer => auth == format!("Bearer {TOKEN}"),
        Expect::Basic => auth == base64_like::basic("etl", PASSWORD),
        Expect::KeyHeader => h.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(API_KEY),
        Expect::KeyParam => q.get("key").map(String::as_str) == Some(API_KEY),
        Expect::OAuth2 => {
            let t = auth.trim_start_matches("Bearer ").to_string();
            let mut uses = api.token_uses.lock().unwrap();
            match uses.get_mut(&t) {
                Some(0) | None => false,
                Some(left) => {
                    *left -= 1;
                    true
                }
            }
        }
    };
    if !authorized {
        return json_response(StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}), &[]);
    }
    let broken = api.broken.lock().unwrap().clone();
    if let Some((p, status)) = broken
        && path.ends_with(&p)
    {
        return json_response(
            StatusCode::from_u16(status).unwrap(),
            json!({"error": "the backend is down", "trace": "x".repeat(2000)}),
            &[],
        );
    }
    let fault = api.faults.lock().unwrap().remove(&n);
    match fault {
        Some(Fault::Status(s, after)) => {
            let extra: Vec<(&str, String)> = after.map(|a| vec![("retry-after", a.to_string())]).unwrap_or_default();
            return json_response(StatusCode::from_u16(s).unwrap(), json!({"error": "slow down"}), &extra);
        }
        Some(Fault::Drop) => {
            let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = vec![
                Ok(axum::body::Bytes::from_static(b"{\"data\": {\"items\": [")),
                Err(std::io::Error::other("dropped")),
            ];
            return Response::builder().status(200).body(Body::from_stream(futures::stream::iter(chunks))).unwrap();
        }
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let all = api.records.lock().unwrap().clone();
    let since = q.get("updated_since").cloned();
    let rows: Vec<Value> = all
        .into_iter()
        .filter(|r| since.as_ref().is_none_or(|s| r["updated_at"].as_str().unwrap() >= s.as_str()))
        .collect();
    let num = |k: &str, d: usize| q.get(k).and_then(|v| v.parse::<usize>().ok()).unwrap_or(d);
    let slice = |from: usize, n: usize| rows.iter().skip(from).take(n).cloned().collect::<Vec<_>>();
    match kind.as_str() {
        // Cursor: the cursor is the index of the next record, as text.
        "cursor" | "bearer" | "basic" | "keyheader" | "keyparam" | "oauth" | "limited" | "flaky" | "grows"
        | "contacts" => {
            let from = q.get("cursor").map(|c| c.trim_start_matches('c').parse::<usize>().unwrap()).unwrap_or(0);
            let page = slice(from, 10);
            let next = if from + 10 < rows.len() { json!(format!("c{}", from + 10)) } else { Value::Null };
            json_response(StatusCode::OK, json!({"data": {"items": page}, "meta": {"next_cursor": next}}), &[])
        }
        "page" => {
            let size = num("per_page", 10);
            let page = num("page", 1);
            json_response(StatusCode::OK, Value::Array(slice((page - 1) * size, size)), &[])
        }
        "offset" => {
            let limit = num("limit", 10);
            json_response(StatusCode::OK, json!({"results": slice(num("offset", 0), limit), "count": rows.len()}), &[])
        }
        "next" => {
            let from = num("after", 0);
            let next =
                if from + 10 < rows.len() { json!(format!("/v2/next?after={}", from + 10)) } else { Value::Null };
            json_response(StatusCode::OK, json!({"items": slice(from, 10), "links": {"next": next}}), &[])
        }
        "link" => {
            let from = num("after", 0);
            let mut extra = vec![];
            if from + 10 < rows.len() {
                extra.push((
                    "link",
                    format!(
                        "<http://{}/v2/link?after={}>; rel=\"next\", <http://x/last>; rel=\"last\"",
                        h.get("host").and_then(|v| v.to_str().ok()).unwrap_or(""),
                        from + 10
                    ),
                ));
            }
            json_response(StatusCode::OK, Value::Array(slice(from, 10)), &extra)
        }
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "no such resource"}), &[]),
    }
}

/// HTTP Basic's header value, written out here rather than with the code under test.
mod base64_like {
    pub fn basic(user: &str, password: &str) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let input = format!("{user}:{password}");
        let b = input.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = (chunk[0] as u32) << 16
                | (*chunk.get(1).unwrap_or(&0) as u32) << 8
                | *chunk.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        format!("Basic {out}")
    }
}

/// The rows of a load, by id, with the columns the tests compare.
fn by_id(p: &Project, dir: &str) -> BTreeMap<u32, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for r in read_rows(&p.join(dir)) {
        let id: u32 = r["id"].parse().unwrap();
        assert!(out.insert(id, r).is_none(), "id {id} loaded twice");
    }
    out
}

/// The records as the loads should hold them (a few columns, as the readers print them).
fn expected(v: &[Value]) -> BTreeMap<u32, (String, String, String)> {
    v.iter()
        .map(|r| {
            let id = r["id"].as_u64().unwrap() as u32;
            (
                id,
                (
                    r["name"].as_str().unwrap().to_string(),
                    r["address"]["city"].as_str().unwrap().to_string(),
                    r["tags"].as_array().unwrap().len().to_string(),
                ),
            )
        })
        .collect()
}

fn project(server: &Server, store_options: &str, tasks: &str) -> Project {
    let p = Project::new();
    p.write(
        "p.yaml",
        format!(
            "stores:\n  api: {{ url: \"{}\"{store_options} }}\n  lake: {{ url: \"file://lake\" }}\ntasks:\n{tasks}",
            server.url()
        ),
    );
    p
}

#[test]
fn every_pagination_style_reads_every_record_once() {
    let server = Server::start(records(1..=45));
    let tasks = "
  cursor:
    extract: { store: api, format: json, http: { path: cursor, records: data.items, paginate: { cursor: { param: cursor, next: meta.next_cursor } } } }
  page:
    extract: { store: api, http: { path: page, paginate: { page: { param: page, size_param: per_page, size: 10 } } } }
  offset:
    extract: { store: api, http: { path: offset, records: results, paginate: { offset: { param: offset, limit_param: limit, limit: 10 } } } }
  next:
    extract: { store: api, http: { path: next, records: items, paginate: { next_url: links.next } } }
  link:
    extract: { store: api, http: { path: link, paginate: { link_header: true } } }
  c_out: { load: { from: cursor, store: lake, path: cursor/ } }
  p_out: { load: { from: page, store: lake, path: page/ } }
  o_out: { load: { from: offset, store: lake, path: offset/ } }
  n_out: { load: { from: next, store: lake, path: next/ } }
  l_out: { load: { from: link, store: lake, path: link/ } }
";
    let p = project(&server, "", tasks);
    let plan = p.weir(&["plan", "p.yaml"]);
    plan.ok();
    assert!(plan.stdout.contains(&format!("GET {}cursor (json)", server.url())), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("pages    by cursor: `cursor` from the answer's `meta.next_cursor`"),
        "{}",
        plan.stdout
    );
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    let want = expected(&records(1..=45));
    for dir in ["cursor", "page", "offset", "next", "link"] {
        let rows = by_id(&p, &format!("lake/{dir}"));
        let got: BTreeMap<u32, (String, String, String)> = rows
            .iter()
            .map(|(id, r)| {
                let tags = r["tags"].trim_matches(['[', ']']).split(',').filter(|s| !s.trim().is_empty()).count();
                let city = r["address"]
                    .split("city: ")
                    .nth(1)
                    .map(|s| s.split(',').next().unwrap().trim_end_matches('}').to_string())
                    .unwrap_or_default();
                (*id, (r["name"].clone(), city, tags.to_string()))
            })
            .collect();
        assert_eq!(got, want, "{dir}");
        assert_eq!(rows[&4]["score"], "NULL", "{dir}: null stays null");
        assert_eq!(rows[&5]["score"], "1.25", "{dir}");
        assert_eq!(rows[&7]["updated_at"], "2026-11-01T00:07:00Z", "{dir}");
    }
    // Pages asked for: 5 of 10 records each (numbered and offset pages would end with an
    // empty one only if the last were full), and the first page once for `plan`'s compile,
    // which keeps the schema it inferred in the state store: the run's compile reads it there.
    for path in ["cursor", "page", "offset", "next", "link"] {
        assert_eq!(server.hits(path).len(), 5 + 1, "{path}: {:?}", server.hits(path));
    }
    assert!(r.stderr.contains("45 records in 5 pages (5 requests)"), "{}", r.stderr);
    // A second run compiles from the cached schema: no first page asked for.
    let before = server.hits("page").len();
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(server.hits("page").len(), before + 5);
}

#[test]
fn every_kind_of_authentication_and_the_secrets_appear_nowhere() {
    let server = Server::start(records(1..=25));
    for (path, e) in [
        ("bearer", Expect::Bearer),
        ("basic", Expect::Basic),
        ("keyheader", Expect::KeyHeader),
        ("keyparam", Expect::KeyParam),
        ("oauth", Expect::OAuth2),
    ] {
        server.api.expect.lock().unwrap().insert(path.to_string(), e);
    }
    let p = Project::new();
    let base = server.url();
    let paging = "records: data.items, paginate: { cursor: { param: cursor, next: meta.next_cursor } }";
    p.write(
        "p.yaml",
        format!(
            "stores:
  s_bearer: {{ url: \"{base}\", options: {{ bearer_token: \"${{env:T}}\" }} }}
  s_basic: {{ url: \"{base}\", options: {{ basic_user: etl, basic_password: \"${{env:P}}\" }} }}
  s_keyheader: {{ url: \"{base}\", options: {{ api_key: \"${{env:K}}\", api_key_header: X-API-Key }} }}
  s_keyparam: {{ url: \"{base}\", options: {{ api_key: \"${{env:K}}\", api_key_param: key, retries: 1, timeout: 5s }} }}
  s_oauth: {{ url: \"{base}\", options: {{ oauth2_token_url: /oauth/token, client_id: weir-client, client_secret: \"${{env:C}}\" }} }}
  lake: {{ url: \"file://lake\" }}
tasks:
  bearer: {{ extract: {{ store: s_bearer, http: {{ path: bearer, {paging} }} }} }}
  basic: {{ extract: {{ store: s_basic, http: {{ path: basic, {paging} }} }} }}
  keyheader: {{ extract: {{ store: s_keyheader, http: {{ path: keyheader, {paging} }} }} }}
  keyparam: {{ extract: {{ store: s_keyparam, http: {{ path: keyparam, {paging} }} }} }}
  oauth: {{ extract: {{ store: s_oauth, http: {{ path: oauth, {paging} }} }} }}
  all:
    transform:
      sql: SELECT id, 'bearer' AS via FROM bearer UNION ALL SELECT id, 'basic' FROM basic UNION ALL SELECT id, 'keyheader' FROM keyheader UNION ALL SELECT id, 'keyparam' FROM keyparam UNION ALL SELECT id, 'oauth' FROM oauth
  out: {{ load: {{ from: all, store: lake, path: all/ }} }}
"
        ),
    );
    let env = [("T", TOKEN), ("P", PASSWORD), ("K", API_KEY), ("C", CLIENT_SECRET)];
    let mut seen = String::new();
    for args in [
        &["validate", "p.yaml"][..],
        &["plan", "p.yaml"],
        &["lineage", "p.yaml", "--format", "json"],
        &["run", "p.yaml", "-vv"],
    ] {
        let r = p.weir_env(args, &env);
        seen.push_str(&r.stdout);
        seen.push_str(&r.stderr);
        r.ok();
    }
    let rows = read_rows(&p.join("lake/all"));
    assert_eq!(rows.len(), 125, "25 records by each kind");
    // OAuth2: a token is good for two requests here; the server refused it on the third and
    // weir asked for another: 3 pages after the first (compile's) need 2 tokens in all.
    assert!(server.api.issued.load(Ordering::SeqCst) >= 2, "the token was renewed");
    // A page that fails after the retries names the URL (key removed), status and body.
    *server.api.broken.lock().unwrap() = Some(("keyparam".into(), 500));
    p.write("p.yaml", std::fs::read_to_string(p.join("p.yaml")).unwrap().replace("path: all/", "path: all2/"));
    let r = p.weir_env(&["run", "p.yaml", "-vv", "--metrics-file", "m.prom"], &env);
    seen.push_str(&r.stdout);
    seen.push_str(&r.stderr);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let metrics = std::fs::read_to_string(p.join("m.prom")).unwrap();
    assert!(metrics.contains("weir_task_duration_seconds"), "{metrics}");
    assert!(
        r.stdout.contains(&format!(
            "GET {base}keyparam?key=***&cursor=c10: HTTP 500 (after 1 retry): {{\"error\":\"the backend is down\""
        )) || r.stdout.contains(&format!("GET {base}keyparam?key=***: HTTP 500 (after 1 retry)")),
        "{}",
        r.stdout
    );
    assert!(!p.join("lake/all2").exists() || read_rows(&p.join("lake/all2")).is_empty(), "nothing loaded");
    for args in [&["runs", "p", "--json"][..]] {
        let r = p.weir_env(args, &env);
        seen.push_str(&r.stdout);
        seen.push_str(&r.stderr);
    }
    let issued: Vec<String> = server.api.tokens.lock().unwrap().iter().cloned().collect();
    for secret in [TOKEN, PASSWORD, API_KEY, CLIENT_SECRET].iter().map(|s| s.to_string()).chain(issued) {
        assert!(!seen.contains(&secret), "{secret} shown: {seen}");
        crate::databases::assert_no_file_holds(&p, &secret);
    }
}

#[test]
fn retries_honour_retry_after_and_survive_a_dropped_connection_and_a_slow_page() {
    let server = Server::start(records(1..=55));
    // Request 1 is compile's first page; the run's pages are requests 2.. .
    server.api.faults.lock().unwrap().extend([
        (3, Fault::Status(429, Some(1))),
        (5, Fault::Status(503, Some(1))),
        (7, Fault::Drop),
        (9, Fault::Slow(Duration::from_secs(4))),
        (11, Fault::Status(502, None)),
    ]);
    let p = project(
        &server,
        ", options: { timeout: 1s }",
        "  flaky: { extract: { store: api, http: { path: flaky, records: data.items, paginate: { cursor: { param: cursor, next: meta.next_cursor } } } } }\n  out: { load: { from: flaky, store: lake, path: out/ } }\n",
    );
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    assert_eq!(by_id(&p, "lake/out").len(), 55);
    assert!(r.stderr.contains("55 records in 6 pages (11 requests, 5 retried)"), "{}", r.stderr);
    let hits = server.hits("flaky");
    // After a 429 or 503 with `Retry-After: 1`, the next request came at least 1 s later.
    for at in [3, 5] {
        let gap = hits[at].at - hits[at - 1].at;
        assert!(gap >= Duration::from_secs(1), "request {} came {gap:?} after the {at}th", at + 1);
    }
    // The page after the dropped connection and the slow one was asked for again, same cursor.
    assert_eq!(hits[7].query, hits[6].query);
    assert_eq!(hits[9].query, hits[8].query);
}

#[test]
fn the_rate_limit_is_never_exceeded() {
    let server = Server::start(records(1..=100));
    let p = project(
        &server,
        "",
        "  limited: { extract: { store: api, http: { path: limited, records: data.items, paginate: { cursor: { param: cursor, next: meta.next_cursor } }, rate_limit: { requests: 3, per: 1s } } } }\n  out: { load: { from: limited, store: lake, path: out/ } }\n",
    );
    let t = Instant::now();
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(by_id(&p, "lake/out").len(), 100);
    let hits = server.hits("limited");
    assert_eq!(hits.len(), 11, "compile's first page and 10 pages");
    // Every window of 1 s, on the server's clock, holds at most 3 requests (compile's too).
    for w in hits.windows(4) {
        let span = w[3].at - w[0].at;
        assert!(
            span >= Duration::from_secs(1),
            "4 requests within {span:?}: {:?}",
            hits.iter().map(|h| h.at - hits[0].at).collect::<Vec<_>>()
        );
    }
    assert!(t.elapsed() >= Duration::from_secs(3));
}

#[test]
fn watermark_increments_ask_only_for_what_is_new() {
    let server = Server::start(records(1..=30));
    let p = project(
        &server,
        "",
        "  grows:\n    extract:\n      store: api\n      http: { path: grows, params: { updated_since: \"${watermark}\", status: active }, records: data.items, paginate: { cursor: { param: cursor, next: meta.next_cursor } } }\n      incremental: { watermark: { column: updated_at } }\n      schema: { updated_at: timestamp with time zone }\n  out: { load: { from: grows, store: lake, path: out/, mode: append } }\n",
    );
    let plan = p.weir(&["plan", "p.yaml"]);
    plan.ok();
    assert!(plan.stdout.contains("grows?updated_since=${watermark}&status=active"), "{}", plan.stdout);
    p.weir(&["run", "p.yaml"]).ok();
    let first: Vec<Hit> = server.hits("grows");
    assert!(first.iter().all(|h| !h.query.contains_key("updated_since") && h.query["status"] == "active"), "{first:?}");
    assert_eq!(by_id(&p, "lake/out").len(), 30);
    // New records, and one old record changed (its updated_at moves past the watermark).
    {
        let mut all = server.api.records.lock().unwrap();
        all.extend(records(31..=34));
        all[4]["updated_at"] = json!("2026-11-01T01:00:00Z");
        all[4]["name"] = json!("contact 5, renamed");
        all.sort_by(|a, b| a["updated_at"].as_str().cmp(&b["updated_at"].as_str()));
    }
    let n = server.hits("grows").len();
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    let second: Vec<Hit> = server.hits("grows")[n..].to_vec();
    assert!(second.iter().all(|h| h.query["updated_since"] == "2026-11-01T00:30:00Z"), "{second:?}");
    // The API's `updated_since` is inclusive: record 30 came back and was filtered out.
    let rows = read_rows(&p.join("lake/out"));
    assert_eq!(rows.len(), 35, "30 + 4 new + the changed one: {}", r.stdout);
    assert_eq!(rows.iter().filter(|r| r["id"] == "5").count(), 2, "the changed record appended once");
    let n = server.hits("grows").len();
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    assert!(server.hits("grows")[n..].iter().all(|h| h.query["updated_since"] == "2026-11-01T01:00:00Z"));
    assert_eq!(read_rows(&p.join("lake/out")).len(), 35, "{}", r.stdout);
}

#[test]
fn kill_mid_pagination_then_rerun_loads_every_record_once() {
    let server = Server::start(records(1..=60));
    *server.api.latency.lock().unwrap() = Duration::from_millis(20);
    let p = project(
        &server,
        "",
        "  grows:\n    extract:\n      store: api\n      http: { path: grows, params: { updated_since: \"${watermark}\" }, records: data.items, paginate: { cursor: { param: cursor, next: meta.next_cursor } } }\n      incremental: { watermark: { column: updated_at } }\n  out: { load: { from: grows, store: lake, path: out/, mode: append } }\n",
    );
    p.weir(&["validate", "p.yaml"]).ok();
    let n = server.hits("grows").len();
    let child = p
        .command(&["run", "p.yaml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The third request of the run: its compile's first page, then the first page of the
    // read; killed while the second is answered, more to come.
    *server.api.kill_at.lock().unwrap() = Some((n + 3, child.id()));
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "killed");
    assert_eq!(server.hits("grows").len(), n + 3, "killed at the second page");
    assert!(read_rows(&p.join("lake/out")).is_empty(), "nothing committed");
    *server.api.kill_at.lock().unwrap() = None;
    server.api.records.lock().unwrap().extend(records(61..=65));
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(by_id(&p, "lake/out").len(), 65, "every record once");
    p.weir(&["run", "p.yaml"]).ok();
    assert_eq!(by_id(&p, "lake/out").len(), 65);
}

#[test]
fn fields_that_appear_mid_read_fail_the_run_then_are_read() {
    let mut recs = records(1..=30);
    recs[25]["vip"] = json!(true);
    recs[25]["address"]["country"] = json!("PL");
    let server = Server::start(recs);
    let p = project(
        &server,
        "",
        "  cursor: { extract: { store: api, http: { path: cursor, records: data.items, paginate: { cursor: { param: cursor, next: meta.next_cursor } } } } }\n  out: { load: { from: cursor, store: lake, path: out/ } }\n",
    );
    let r = p.weir(&["run", "p.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("the records have fields the extract's schema does not: `address.country`, `vip`"),
        "{}",
        r.stdout
    );
    assert!(read_rows(&p.join("lake/out")).is_empty());
    let r = p.weir(&["run", "p.yaml"]);
    r.ok();
    let rows = by_id(&p, "lake/out");
    assert_eq!(rows.len(), 30);
    assert_eq!(rows[&26]["vip"], "true");
    assert_eq!(rows[&25]["vip"], "NULL");
    assert!(rows[&26]["address"].contains("PL"), "{:?}", rows[&26]);
}

#[test]
fn validate_errors() {
    let server = Server::start(records(1..=3));
    let p = Project::new();
    p.write("raw/a.csv", "a\n1\n");
    p.write(
        "p.yaml",
        format!(
            "stores:
  api: {{ url: \"{0}\", options: {{ bearer: x }} }}
  keyed: {{ url: \"{0}\", options: {{ api_key: abcdef }} }}
  two: {{ url: \"{0}\", options: {{ bearer_token: abcdef, basic_user: u }} }}
  ok: {{ url: \"{0}\" }}
  raw: {{ url: \"file://raw\" }}
  db: {{ url: \"postgres://weir@127.0.0.1:1/nothing\" }}
tasks:
  a: {{ extract: {{ store: ok, http: {{ path: cursor, params: {{ since: \"${{watermark}}\" }} }}, format: csv }} }}
  b: {{ extract: {{ store: raw, path: a.csv, http: {{ path: x }} }} }}
  c: {{ extract: {{ store: ok, path: x.json }} }}
  d: {{ extract: {{ store: ok, http: {{ path: cursor, records: data.rows }} }} }}
  e: {{ extract: {{ store: ok, http: {{ path: cursor, paginate: {{ page: {{ param: p, size: 0 }} }}, rate_limit: {{ requests: 5, per: soon }} }} }} }}
  f: {{ extract: {{ store: ok, http: {{ path: missing }} }} }}
  g: {{ extract: {{ store: ok, http: {{ path: cursor }} }} }}
  h: {{ extract: {{ store: db, table: t, http: {{ path: x }} }} }}
",
            server.url()
        ),
    );
    let r = p.weir(&["validate", "p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let port = format!("127.0.0.1:{}", server.port);
    insta::assert_snapshot!(normalize(&r.stderr, p.path()).replace(&port, "127.0.0.1:PORT"));
}

/// Under `weir serve`: a run whose API fails mid-read sends its failure webhook, and neither
/// the webhook, the daemon's log, `/metrics` nor the API show the store's key.
#[test]
fn a_failing_api_under_serve_alerts_without_its_key() {
    use crate::serve::{Daemon, Receiver, runs};
    let server = Server::start(records(1..=30));
    server.api.expect.lock().unwrap().insert("keyparam".into(), Expect::KeyParam);
    // Compile's first page answers; every request of the run fails.
    server.api.faults.lock().unwrap().extend((2..=20).map(|n| (n, Fault::Status(500, None))));
    let rx = Receiver::start(0);
    let p = Project::new();
    p.write(
        "p/h.yaml",
        format!(
            "notify: [{{ url: \"{}\" }}]\nstores:\n  api: {{ url: \"{}\", options: {{ api_key: \"${{env:K}}\", api_key_param: key, retries: 1 }} }}\n  out: {{ url: \"file://../out\" }}\ntasks:\n  a: {{ extract: {{ store: api, http: {{ path: keyparam, records: data.items, paginate: {{ cursor: {{ param: cursor, next: meta.next_cursor }} }} }} }} }}\n  mart: {{ load: {{ from: a, store: out, path: mart/ }} }}\n",
            rx.url(),
            server.url()
        ),
    );
    let d = Daemon::start(&p, &["-vv"], &[("K", API_KEY)]);
    assert_eq!(crate::serve::http("POST", d.port, "/api/pipelines/h/run", None).0, 202, "{}", d.log());
    d.wait_for("the failure webhook", || !rx.bodies.lock().unwrap().is_empty());
    assert!(runs(&p, "h").iter().any(|r| r.status == "failed"));
    let body = rx.bodies.lock().unwrap()[0].to_string();
    assert!(body.contains("key=***") && body.contains("HTTP 500"), "{body}");
    let (_, metrics) = crate::serve::http("GET", d.port, "/metrics", None);
    let (_, api_runs) = crate::serve::http("GET", d.port, "/api/runs", None);
    let (_, api_alerts) = crate::serve::http("GET", d.port, "/api/alerts", None);
    let (_, log) = d.stop();
    for text in [&body, &metrics, &api_runs, &api_alerts, &log] {
        assert!(!text.contains(API_KEY), "{text}");
    }
    crate::databases::assert_no_file_holds(&p, API_KEY);
}

/// `examples/http-api` against the test server: the first run merges every contact, a rerun
/// after changes asks only for what changed since the watermark and merges it.
#[test]
fn the_http_api_example_runs() {
    let server = Server::start(records(1..=25));
    server.api.expect.lock().unwrap().insert("contacts".into(), Expect::Bearer);
    let p = Project::new();
    p.copy_from_repo("examples/http-api", "ex");
    let _ = std::fs::remove_dir_all(p.join("ex/out"));
    let url = format!("crm_url={}", server.url());
    let run = || p.weir_env(&["run", "ex/pipeline.yaml", "--var", &url], &[("CRM_TOKEN", TOKEN)]);
    run().ok();
    let rows = by_id(&p, "ex/out/contacts");
    assert_eq!(rows.len(), 25);
    assert_eq!(rows[&7]["city"], "city 1");
    assert_eq!(rows[&7]["tag_count"], "1");
    assert_eq!(rows[&3]["tag_count"], "0", "an empty list");
    {
        let mut all = server.api.records.lock().unwrap();
        all[6]["name"] = json!("contact 7, moved");
        all[6]["updated_at"] = json!("2026-11-01T02:00:00Z");
        all.extend(records(26..=28));
        all.sort_by(|a, b| a["updated_at"].as_str().cmp(&b["updated_at"].as_str()));
    }
    let n = server.hits("contacts").len();
    run().ok();
    assert!(server.hits("contacts")[n..].iter().all(|h| h.query["updated_since"] == "2026-11-01T00:25:00Z"));
    let rows = by_id(&p, "ex/out/contacts");
    assert_eq!(rows.len(), 28);
    assert_eq!(rows[&7]["name"], "contact 7, moved");
}
