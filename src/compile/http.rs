//! HTTP extracts: an `http:` request on an `http://`/`https://` store, its schema from the
//! first page (cached) or declared.

use super::*;
use crate::source::http::{HttpError, HttpPlan, HttpStore, Limiter, Request};

impl Compiler<'_> {
    /// An HTTP API store.
    pub(super) fn http_store(&mut self, name: &str, url: &str, options: &[(String, String)]) {
        let p = self.p;
        match HttpStore::new(name, url, options) {
            Ok(s) => {
                self.apis.insert(name.to_string(), Arc::new(s));
            }
            Err(HttpError::UnknownOption(key)) => self.diags.push(
                p.diag_key(
                    "store-option",
                    &ypath!["stores", name, "options", &key],
                    format!("unknown option `{key}` for an HTTP store"),
                )
                .maybe_help(
                    did_you_mean(&key, crate::source::http::OPTIONS.iter().copied())
                        .or_else(|| Some(format!("known: {}", crate::source::http::OPTIONS.join(", ")))),
                ),
            ),
            Err(HttpError::Option { key, reason }) => self.diags.push(p.diag_key(
                "store-option",
                &ypath!["stores", name, "options", &key],
                format!("option `{key}` {reason}"),
            )),
            Err(e) => self.diags.push(p.diag_value(
                "store",
                &ypath!["stores", name, "url"],
                url.len(),
                p.secrets.redact(&e.to_string()),
            )),
        }
    }

    /// An extract of an HTTP store: `http:` and no file or database keys.
    pub(super) fn draft_http_extract(&mut self, name: &str, e: &spec::Extract, store: Arc<HttpStore>) -> DraftKind {
        let p = self.p;
        let before = self.diags.len();
        let base = ypath!["tasks", name, "extract"];
        let Some(h) = &e.http else {
            self.diags.push(
                p.diag_key(
                    "missing-key",
                    &base,
                    format!("an extract of HTTP store `{}` needs `http:` in `tasks.{name}.extract`", e.store),
                )
                .help("e.g. `http: { path: contacts, records: data.items }`"),
            );
            return DraftKind::Broken;
        };
        let other = ["path", "compression", "csv", "xml", "infer_rows", "bad_rows", "table", "query", "partition"];
        for key in e.kind_keys().into_iter().filter(|k| other.contains(k)) {
            let help = if key == "path" {
                "the resource goes in `http.path`"
            } else {
                "an HTTP extract reads JSON pages as `http:` says"
            };
            self.diags.push(
                p.diag_key("extract", &base.key(key), format!("`{key}` does not apply to HTTP store `{}`", e.store))
                    .help(help),
            );
        }
        if let Some(f) = e.format
            && f != spec::FileFormat::Json
        {
            self.diags.push(
                p.diag_key(
                    "format",
                    &base.key("format"),
                    format!("HTTP APIs are read as JSON, not {}", extract::format_name(f)),
                )
                .help("write `format: json`, or leave `format` out"),
            );
        }
        if let Some(inc) = &e.incremental {
            for (key, set) in [("new_files", inc.new_files), ("cdc", inc.cdc.is_some())] {
                if set {
                    self.diags.push(
                        p.diag_key(
                            "incremental",
                            &base.key("incremental").key(key),
                            format!("`{key}` does not apply to an HTTP API"),
                        )
                        .help("read what is new by a `watermark`, sent to the API with `${watermark}` in a parameter"),
                    );
                }
            }
        }
        let hp = base.key("http");
        if h.path.trim().is_empty() {
            self.diags.push(
                p.diag_key("http", &hp.key("path"), "`http.path` is empty").help("the resource, e.g. `path: contacts`"),
            );
        }
        let rate = match &h.rate_limit {
            None => None,
            Some(r) => match spec::parse_duration(&r.per) {
                Ok(per) if r.requests > 0 && !per.is_zero() => Some((r.requests, per)),
                Ok(_) => {
                    self.diags.push(p.diag_key(
                        "http",
                        &hp.key("rate_limit"),
                        "`rate_limit` needs at least 1 request per a non-zero `per`",
                    ));
                    None
                }
                Err(_) => {
                    self.diags.push(
                        p.diag_value(
                            "http",
                            &hp.key("rate_limit").key("per"),
                            r.per.0.len(),
                            format!("`per` is `{}`, not a duration", r.per.0),
                        )
                        .help("e.g. `per: 1s`, `per: 1m`"),
                    );
                    None
                }
            },
        };
        if let Some(pg) = &h.paginate {
            let pp = hp.key("paginate");
            let set: Vec<&str> = [
                ("cursor", pg.cursor.is_some()),
                ("page", pg.page.is_some()),
                ("offset", pg.offset.is_some()),
                ("next_url", pg.next_url.is_some()),
                ("link_header", pg.link_header.is_some()),
            ]
            .into_iter()
            .filter_map(|(k, on)| on.then_some(k))
            .collect();
            if set.len() != 1 {
                self.diags.push(
                    p.diag_key(
                        "http",
                        &pp,
                        format!(
                            "`paginate` takes one style; {}",
                            if set.is_empty() {
                                "none is given".to_string()
                            } else {
                                format!("given: {}", set.join(", "))
                            }
                        ),
                    )
                    .help("one of `cursor`, `page`, `offset`, `next_url`, `link_header`"),
                );
            }
            if let Some(page) = &pg.page {
                if page.size == Some(0) {
                    self.diags.push(p.diag_key("http", &pp.key("page").key("size"), "`size` must be at least 1"));
                } else if page.size_param.is_some() && page.size.is_none() {
                    self.diags.push(
                        p.diag_key("http", &pp.key("page"), "`size_param` needs `size`")
                            .help("e.g. `page: { param: page, size_param: per_page, size: 100 }`"),
                    );
                }
            }
            if pg.offset.as_ref().is_some_and(|o| o.limit == 0) {
                self.diags.push(p.diag_key("http", &pp.key("offset").key("limit"), "`limit` must be at least 1"));
            }
        }
        let request = Request::new(h, rate);
        let watermark = e.incremental.as_ref().and_then(|i| i.watermark.as_ref());
        if request.uses_watermark() && watermark.is_none() {
            self.diags.push(
                p.diag_key(
                    "http",
                    &hp,
                    "`${watermark}` is used, but the extract has no `incremental: { watermark: … }`",
                )
                .help("e.g. `incremental: { watermark: { column: updated_at } }`"),
            );
        }
        if h.path.contains(spec::WATERMARK_PLACEHOLDER) {
            self.diags.push(
                p.diag_key("http", &hp.key("path"), "`${watermark}` goes in a parameter, not the path")
                    .help("the first run has no watermark, and a parameter is then left out"),
            );
        }
        let declared = self.declared_types(name, e);
        if self.diags.len() > before {
            return DraftKind::Broken;
        }
        DraftKind::HttpExtract { store, request, declared, incremental: e.incremental.clone() }
    }

    /// Every HTTP extract's schema: cached, else from its first page.
    pub(super) async fn describe_apis(
        &mut self,
        g: &TaskGraph,
        schemas: &mut HashMap<NodeIndex, SchemaRef>,
    ) -> HashMap<NodeIndex, HttpPlan> {
        let graph = &g.graph;
        let cache = self.cache;
        let jobs: Vec<_> = graph
            .node_indices()
            .filter_map(|i| match &graph[i].kind {
                DraftKind::HttpExtract { store, request, declared, .. } => {
                    Some((i, store.clone(), request.clone(), declared.clone()))
                }
                _ => None,
            })
            .collect();
        let results: Vec<_> = futures::stream::iter(jobs.into_iter().map(|(i, store, request, declared)| async move {
            let key = crate::source::http::schema_key(&store, &request, &declared);
            let limiter = Limiter::shared(&store, request.rate);
            let cached = cache
                .and_then(|c| c.schema(&key))
                .and_then(|bytes| crate::source::files::infer::schema_from_bytes(&bytes));
            let mut plan = HttpPlan {
                store,
                request,
                schema: Arc::new(Schema::empty()),
                read_schema: Arc::new(Schema::empty()),
                cache_key: key.clone(),
                limiter,
            };
            let schema = match cached {
                Some(s) => Ok(s),
                None => match plan.first_page().await {
                    Ok(records) => match crate::source::http::infer_schema(&records, &declared) {
                        Ok(s) => {
                            let s = Arc::new(s);
                            if let Some(c) = cache {
                                c.put_schema(&key, &crate::source::files::infer::schema_bytes(&s));
                            }
                            Ok(s)
                        }
                        Err(msg) => Err((format!("the first page's records: {msg}"), false)),
                    },
                    Err(e) => {
                        let transient = e.is_transient();
                        Err((e.to_string(), transient))
                    }
                },
            };
            (
                i,
                schema.map(|s| {
                    plan.read_schema = Arc::new(Schema::new(
                        s.fields()
                            .iter()
                            .map(|f| {
                                datafusion::arrow::datatypes::Field::new(
                                    f.name(),
                                    crate::source::http::read_type(f.data_type()),
                                    true,
                                )
                            })
                            .collect::<Vec<_>>(),
                    ));
                    plan.schema = s;
                    plan
                }),
            )
        }))
        .buffered(8)
        .collect()
        .await;
        let mut out = HashMap::new();
        for (i, r) in results {
            let name = graph[i].name.clone();
            match r {
                Ok(plan) => {
                    if plan.schema.fields().is_empty() {
                        self.diags.push(
                            self.p
                                .diag_key(
                                    "http",
                                    &ypath!["tasks", &name, "extract", "http"],
                                    "the first page has no records to learn the columns from",
                                )
                                .help("declare the columns and their types in `schema:`"),
                        );
                        continue;
                    }
                    schemas.insert(i, plan.schema.clone());
                    out.insert(i, plan);
                }
                Err((message, transient)) => {
                    let code = if transient { extract::UNREACHABLE } else { "http" };
                    let path = ypath!["tasks", &name, "extract", "http", "path"];
                    let len = self
                        .p
                        .spec
                        .tasks
                        .get(&name)
                        .and_then(|t| t.extract.as_ref())
                        .and_then(|e| e.http.as_ref())
                        .map_or(0, |h| h.path.len());
                    let d = self.p.diag_value(code, &path, len, self.p.secrets.redact(&message));
                    let d = if transient {
                        d.help("is the API up and reachable? (the schema comes from its first page, or declare every column in `schema:`)")
                    } else {
                        d
                    };
                    self.diags.push(d);
                }
            }
        }
        out
    }
}
