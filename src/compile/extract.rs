//! Extracts: a task's source resolved to a `SourcePlan` (files: store, glob, format, the
//! declared types), its schema inferred (see `source::files::infer`), and its incremental plan.

use super::*;

/// The code of a diagnostic about a server that could not be reached: the pipeline may well
/// compile a moment later.
pub const UNREACHABLE: &str = "unreachable";

impl Compiler<'_> {
    /// An `extract:` task: its store, glob, format and declared types.
    pub(super) fn draft_extract(
        &mut self,
        name: &str,
        e: &spec::Extract,
        stores: &indexmap::IndexMap<String, Arc<Store>>,
    ) -> DraftKind {
        let p = self.p;
        if let Some(db) = self.databases.get(&e.store).cloned() {
            return self.draft_database_extract(name, e, db);
        }
        if let Some(api) = self.apis.get(&e.store).cloned() {
            return self.draft_http_extract(name, e, api);
        }
        if e.http.is_some() && (p.spec.stores.contains_key(&e.store) || self.databases.contains_key(&e.store)) {
            self.diags.push(
                p.diag_key(
                    "extract",
                    &ypath!["tasks", name, "extract", "http"],
                    format!("`http` reads an HTTP API; `{}` is not an `http://` or `https://` store", e.store),
                )
                .help("define the API as a store: `url: \"https://api.example.com/v2/\"`"),
            );
            return DraftKind::Broken;
        }
        let before = self.diags.len();
        let broken = |this: &Self| this.diags.len() > before;
        let store = stores.get(&e.store).cloned();
        if store.is_none() && !p.spec.stores.contains_key(&e.store) && !p.broken_stores.contains(&e.store) {
            self.diags.push(self.unknown_store(name, "extract", &e.store));
        }
        let base = ypath!["tasks", name, "extract"];
        for (key, set) in
            [("table", e.table.is_some()), ("query", e.query.is_some()), ("partition", e.partition.is_some())]
        {
            if set && store.is_some() {
                self.diags.push(
                    p.diag_key(
                        "extract",
                        &base.key(key),
                        format!("`{key}` applies to database stores; `{}` is a file store", e.store),
                    )
                    .help("files are read with `path` (and `format`, `csv`, `schema`)"),
                );
            }
        }
        if store.is_some() && e.incremental.as_ref().is_some_and(|i| i.cdc.is_some()) {
            self.diags.push(
                p.diag_key(
                    "incremental",
                    &base.key("incremental").key("cdc"),
                    format!("`cdc` captures the changes of a database table; `{}` is a file store", e.store),
                )
                .help("files are read incrementally with `new_files: true` or a `watermark`"),
            );
        }
        // A misspelt key was left out by the spec stage (`pth:`): the missing `path` is that
        // same mistake, already reported.
        let misspelt = p.problems.iter().any(|d| d.code == "unknown-key" && d.task.as_deref() == Some(name));
        if e.path.is_empty() && misspelt {
            return DraftKind::Broken;
        }
        if e.path.is_empty() {
            self.diags.push(
                p.diag_key(
                    "missing-key",
                    &base,
                    "missing required key `path` in `tasks.{name}.extract`".replace("{name}", name),
                )
                .help("name the files to read, relative to the store's root, e.g. `path: orders/*.csv`"),
            );
            return DraftKind::Broken;
        }
        let path = ypath!["tasks", name, "extract", "path"];
        let glob = match FileGlob::new(&e.path) {
            Ok(g) => Some(g),
            Err(err) => {
                self.diags.push(p.diag_value("path", &path, e.path.len(), err.to_string()));
                None
            }
        };
        let format = self.input_format(name, e);
        if let (Some(f), Some(mode)) = (&format, e.bad_rows)
            && f.kind == FileFormat::Parquet
            && mode != spec::BadRowsMode::Fail
        {
            self.diags.push(
                p.diag_key(
                    "bad-rows",
                    &ypath!["tasks", name, "extract", "bad_rows"],
                    "`bad_rows` applies to CSV and JSON files",
                )
                .help("Parquet files have no malformed rows: remove `bad_rows`"),
            );
        }
        let declared = self.declared_types(name, e);
        match (store, glob, format) {
            (Some(store), Some(glob), Some(format)) if !broken(self) => {
                DraftKind::Extract { store, glob, format, declared, incremental: e.incremental.clone() }
            }
            _ => DraftKind::Broken,
        }
    }

    /// The types `schema:` declares, by column; each that does not parse is reported.
    pub(super) fn declared_types(&mut self, name: &str, e: &spec::Extract) -> Vec<(String, DataType)> {
        let p = self.p;
        let mut declared = Vec::new();
        for (col, ty) in e.schema.iter().flatten() {
            match types::parse_sql_type(ty) {
                Ok(t) => declared.push((col.clone(), t)),
                Err(msg) => self.diags.push(
                    p.diag_value("type", &ypath!["tasks", name, "extract", "schema", col], ty.len(), msg)
                        .help(format!("known types: {}", types::TYPE_NAMES.join(", "))),
                ),
            }
        }
        declared
    }

    /// An extract of a database store: `table` or `query` (one SELECT), optionally `partition`,
    /// and `schema` types read through server-side casts; no file keys.
    fn draft_database_extract(
        &mut self,
        name: &str,
        e: &spec::Extract,
        store: crate::source::database::DbStore,
    ) -> DraftKind {
        use crate::source::database::{Partition, Relation};
        let p = self.p;
        let before = self.diags.len();
        let base = ypath!["tasks", name, "extract"];
        let other = ["path", "format", "compression", "csv", "xml", "http", "infer_rows", "bad_rows"];
        for key in e.kind_keys().into_iter().filter(|k| other.contains(k)) {
            let what = if key == "http" { "HTTP APIs" } else { "files" };
            self.diags.push(
                p.diag_key(
                    "extract",
                    &base.key(key),
                    format!("`{key}` applies to {what}; `{}` is a database store", e.store),
                )
                .help("a database extract names a `table` or a `query`"),
            );
        }
        if e.incremental.as_ref().is_some_and(|i| i.new_files) {
            self.diags.push(
                p.diag_key(
                    "incremental",
                    &base.key("incremental").key("new_files"),
                    "`new_files` applies to files; a database extract reads what is new by a `watermark`",
                )
                .help("e.g. `incremental: { watermark: { column: updated_at } }`"),
            );
        }
        let relation = match (&e.table, &e.query) {
            (Some(t), None) if !t.trim().is_empty() => Some(Relation::Table(t.trim().to_string())),
            (None, Some(q)) => match crate::source::database::check_query(q, store.kind().dialect()) {
                Ok(()) => Some(Relation::Query(q.clone())),
                Err(msg) => {
                    self.diags.push(
                        p.diag_value("query", &base.key("query"), q.len(), format!("`query` {msg}"))
                            .help("a database extract reads with one SELECT statement; transforms do the rest"),
                    );
                    None
                }
            },
            (Some(_), Some(_)) => {
                self.diags.push(
                    p.diag_key("extract", &base.key("query"), "an extract reads a `table` or a `query`, not both")
                        .help("remove one of them"),
                );
                None
            }
            _ => {
                self.diags.push(
                    p.diag_key(
                        "missing-key",
                        &base,
                        format!("a database extract needs `table` or `query` in `tasks.{name}.extract`"),
                    )
                    .help("e.g. `table: public.customers`, or `query: \"SELECT id, amount FROM orders\"`"),
                );
                None
            }
        };
        let partition = e.partition.as_ref().map(|s| Partition { column: s.column.clone(), parts: s.parts });
        if let Some(s) = &e.partition
            && !(1..=64).contains(&s.parts)
        {
            self.diags.push(p.diag_value(
                "partition",
                &base.key("partition").key("parts"),
                s.parts.to_string().len(),
                format!("`parts` is {}; it must be between 1 and 64", s.parts),
            ));
        }
        let declared = self.declared_types(name, e);
        let cdc = match e.incremental.as_ref().and_then(|i| i.cdc.as_ref()) {
            Some(_) if !matches!(store, crate::source::database::DbStore::Postgres(_)) => {
                self.diags.push(
                    p.diag_key(
                        "incremental",
                        &base.key("incremental").key("cdc"),
                        format!(
                            "change data capture reads PostgreSQL's logical replication; `{}` is a {} store",
                            e.store,
                            store.kind().server_name()
                        ),
                    )
                    .help(
                        "read what is new by a `watermark` (e.g. `incremental: { watermark: { column: updated_at } }`)",
                    ),
                );
                None
            }
            Some(c) => self.cdc_plan(name, e, c),
            None => None,
        };
        match relation {
            Some(relation) if self.diags.len() == before => {
                DraftKind::DbExtract { store, relation, declared, partition, incremental: e.incremental.clone(), cdc }
            }
            _ => DraftKind::Broken,
        }
    }

    /// `incremental: { cdc: … }` of a database extract: a `table`, no watermark and no
    /// declared types (changes arrive in the table's own types), names weir can use.
    fn cdc_plan(
        &mut self,
        name: &str,
        e: &spec::Extract,
        c: &spec::Cdc,
    ) -> Option<crate::source::postgres::cdc::CdcPlan> {
        use crate::source::postgres::cdc::{CdcPlan, valid_name};
        let p = self.p;
        let base = ypath!["tasks", name, "extract"];
        let cdc = base.key("incremental").key("cdc");
        let before = self.diags.len();
        if e.query.is_some() {
            self.diags.push(
                p.diag_key("incremental", &cdc, "`cdc` captures the changes of a `table`, not of a `query`")
                    .help("name the table with `table:`; filter and reshape its rows in a transform"),
            );
        }
        if e.incremental.as_ref().is_some_and(|i| i.watermark.is_some()) {
            self.diags.push(
                p.diag_key(
                    "incremental",
                    &base.key("incremental").key("watermark"),
                    "an extract reads changes by `cdc` or rows by a `watermark`, not both",
                )
                .help("remove one of them"),
            );
        }
        if e.schema.is_some() {
            self.diags.push(
                p.diag_key(
                    "incremental",
                    &base.key("schema"),
                    "`schema` casts columns on the server as a table is read; changes arrive in the table's own types",
                )
                .help("remove `schema` and cast in a transform"),
            );
        }
        for (key, value) in [("slot", Some(&c.slot)), ("publication", c.publication.as_ref())] {
            if let Some(v) = value
                && !valid_name(v)
            {
                self.diags.push(
                    p.diag_value(
                        "incremental",
                        &cdc.key(key),
                        v.len(),
                        format!("`{v}` is not a name weir can give a {key}"),
                    )
                    .help("use lower-case letters, digits and `_`, at most 63 characters"),
                );
            }
        }
        let lag_alert = match &c.lag_alert {
            None => None,
            Some(text) => match crate::spec::parse_size(text) {
                Ok(n) => Some(n as u64),
                Err(msg) => {
                    self.diags.push(p.diag_value("incremental", &cdc.key("lag_alert"), text.len(), msg));
                    None
                }
            },
        };
        let decoding_memory = match &c.decoding_memory {
            None => None,
            Some(text) => match crate::spec::parse_size(text) {
                Ok(n) if n >= 64 << 10 => Some(n as u64),
                Ok(_) => {
                    self.diags.push(p.diag_value(
                        "incremental",
                        &cdc.key("decoding_memory"),
                        text.len(),
                        "`decoding_memory` must be at least 64kB".to_string(),
                    ));
                    None
                }
                Err(msg) => {
                    self.diags.push(p.diag_value("incremental", &cdc.key("decoding_memory"), text.len(), msg));
                    None
                }
            },
        };
        (self.diags.len() == before).then(|| CdcPlan::new(c, lag_alert, decoding_memory))
    }

    /// Every extract's files listed and schema inferred, concurrently: the schemas go into
    /// `schemas`; returned, per extract, the files listed and the schema they are read with.
    pub(super) async fn infer_extracts(
        &mut self,
        state: &SessionState,
        g: &TaskGraph,
        schemas: &mut HashMap<NodeIndex, SchemaRef>,
    ) -> Sources {
        let graph = &g.graph;
        let mut files = HashMap::new();
        let extract_jobs: Vec<_> = graph
            .node_indices()
            .filter_map(|i| match &graph[i].kind {
                DraftKind::Extract { store, glob, format, declared, .. } => {
                    Some((i, graph[i].name.clone(), store.clone(), glob.clone(), format.clone(), declared.clone()))
                }
                _ => None,
            })
            .collect();
        let concurrency = state.config_options().execution.meta_fetch_concurrency.get().max(4);
        let results: Vec<_> =
            futures::stream::iter(extract_jobs.into_iter().map(|(i, name, store, glob, format, declared)| {
                let cache = self.cache;
                async move {
                    (
                        i,
                        crate::source::files::infer::infer(state, cache, &name, &store, &glob, &format, &declared)
                            .await,
                    )
                }
            }))
            .buffered(concurrency)
            .collect()
            .await;
        for (i, r) in results {
            match r {
                Ok((listed, schema, read_schema)) => {
                    schemas.insert(i, schema);
                    files.insert(i, (listed, read_schema));
                }
                Err(e) => {
                    let name = graph[i].name.clone();
                    self.diags.push(self.extract_error(&name, e));
                }
            }
        }
        let databases = self.describe_databases(g, schemas).await;
        let apis = self.describe_apis(g, schemas).await;
        Sources { files, databases, apis }
    }

    /// Every database extract's columns, from the server's description of its statement.
    async fn describe_databases(
        &mut self,
        g: &TaskGraph,
        schemas: &mut HashMap<NodeIndex, SchemaRef>,
    ) -> HashMap<NodeIndex, crate::source::database::DbPlan> {
        let graph = &g.graph;
        let jobs: Vec<_> = graph
            .node_indices()
            .filter_map(|i| match &graph[i].kind {
                DraftKind::DbExtract { store, relation, declared, partition, cdc, .. } => {
                    Some((i, store.clone(), relation.clone(), declared.clone(), partition.clone(), cdc.clone()))
                }
                _ => None,
            })
            .collect();
        let results: Vec<_> =
            futures::stream::iter(jobs.into_iter().map(|(i, store, relation, declared, partition, cdc)| async move {
                (i, store.describe(relation, &declared, partition, cdc).await)
            }))
            .buffered(8)
            .collect()
            .await;
        let mut out = HashMap::new();
        for (i, r) in results {
            let name = graph[i].name.clone();
            match r {
                Ok(plan) => {
                    let names = plan.column_names();
                    if let Some(part) = plan.partition()
                        && !names.contains(&part.column)
                    {
                        let known: Vec<&str> = names.iter().map(String::as_str).collect();
                        self.diags.push(
                            self.p
                                .diag_value(
                                    "partition",
                                    &ypath!["tasks", &name, "extract", "partition", "column"],
                                    part.column.len(),
                                    format!("`{}` is not a column of the source", part.column),
                                )
                                .maybe_help(did_you_mean(&part.column, known.iter().copied())),
                        );
                        continue;
                    }
                    schemas.insert(i, plan.schema());
                    out.insert(i, plan);
                }
                Err(e) => {
                    let d = self.database_error(&name, e);
                    self.diags.push(d);
                }
            }
        }
        out
    }

    /// A database source's problem, located at the key it is about.
    fn database_error(&self, name: &str, e: crate::source::database::DbError) -> Diagnostic {
        use crate::source::database::Problem;
        let p = self.p;
        let base = ypath!["tasks", name, "extract"];
        let task = p.spec.tasks.get(name).and_then(|t| t.extract.as_ref());
        let (key, len) = match task {
            Some(e) if e.table.is_some() => ("table", e.table.as_deref().map_or(0, str::len)),
            Some(e) if e.query.is_some() => ("query", e.query.as_deref().map_or(0, str::len)),
            _ => ("store", 0),
        };
        let message = p.secrets.redact(&e.text());
        match e.problem() {
            Problem::NoTable { table, known } => p
                .diag_value("unknown-table", &base.key(key), len, message)
                .maybe_help(did_you_mean(table, known.iter().map(String::as_str)).or_else(|| {
                    (!known.is_empty()).then(|| format!("tables: {}", known.iter().take(20).cloned().collect::<Vec<_>>().join(", ")))
                })),
            Problem::Unmapped { column, convert: None } => p
                .diag_value("type", &base.key(key), len, message)
                .help(format!("read it as text: `schema: {{ {column}: varchar }}` (the server casts it)")),
            Problem::Unmapped { column, convert: Some(f) } => p
                .diag_value("type", &base.key(key), len, message)
                .help(format!("convert it in a `query`: `SELECT {f}({column}) AS {column}, …`")),
            Problem::Unconstrained { column } => p
                .diag_value("type", &base.key(key), len, message)
                .help(format!("declare the type to read it as: `schema: {{ {column}: \"decimal(38,10)\" }}` (values are rounded to that scale by the server)")),
            Problem::Connect { transient, login, no_database } => {
                let store = task.map(|e| e.store.clone()).unwrap_or_default();
                // `unreachable`: it may work in a moment (the daemon tries again), unlike a
                // refused login or a missing database.
                let code = if transient { UNREACHABLE } else { "connect" };
                let d = p.diag_value(code, &base.key("store"), store.len(), message);
                if login {
                    d.help(format!("check the user and `password` of store `{store}`"))
                } else if no_database {
                    d.help(format!("check the database name in the URL of store `{store}`"))
                } else {
                    d.help(format!("is the server of store `{store}` running and reachable?"))
                }
            }
            Problem::Cdc { help } => {
                let help = help.map(str::to_string);
                p.diag_key("cdc", &base.key("incremental").key("cdc"), message).maybe_help(help)
            }
            Problem::Permission => p
                .diag_value("permission", &base.key(key), len, message)
                .help("the store's user needs SELECT on it: `GRANT SELECT ON … TO …`"),
            Problem::Other => p.diag_value("source", &base.key(key), len, message),
        }
    }

    /// The incremental plan of every incremental extract whose schema is known.
    pub(super) fn incremental_plans(
        &mut self,
        g: &TaskGraph,
        schemas: &HashMap<NodeIndex, SchemaRef>,
    ) -> HashMap<NodeIndex, IncrementalPlan> {
        let graph = &g.graph;
        let mut incremental: HashMap<NodeIndex, IncrementalPlan> = HashMap::new();
        for &i in &g.order {
            if let DraftKind::Extract { incremental: Some(inc), .. }
            | DraftKind::DbExtract { incremental: Some(inc), .. }
            | DraftKind::HttpExtract { incremental: Some(inc), .. } = &graph[i].kind
                && let Some(schema) = schemas.get(&i)
            {
                let name = graph[i].name.clone();
                if let Some(plan) = self.incremental_plan(&name, inc, schema) {
                    incremental.insert(i, plan);
                }
            }
        }
        incremental
    }

    /// The format and compression of an extract, from its keys or the path's extension.
    pub(super) fn input_format(&mut self, name: &str, e: &spec::Extract) -> Option<InputFormat> {
        let p = self.p;
        let base = ypath!["tasks", name, "extract"];
        let (ext_format, ext_compression, tsv) = format_from_path(&e.path);
        let kind = match e.format.or(ext_format) {
            Some(k) => k,
            None => {
                self.diags.push(
                    p.diag_value(
                        "format",
                        &base.key("path"),
                        e.path.len(),
                        format!("cannot tell the file format of `{}` from its extension", e.path),
                    )
                    .help("add `format: csv`, `format: json`, `format: parquet` or `format: xml`"),
                );
                return None;
            }
        };
        let compression = e.compression.or(ext_compression).unwrap_or(InputCompression::None);
        if kind == FileFormat::Parquet && e.compression.is_some_and(|c| c != InputCompression::None) {
            self.diags.push(
                p.diag_key("format", &base.key("compression"), "Parquet files carry their own compression")
                    .help("remove `compression` from this extract"),
            );
        }
        let mut csv = CsvSettings::default();
        if tsv {
            csv.delimiter = b'\t';
        }
        if let Some(o) = &e.csv {
            if kind != FileFormat::Csv {
                self.diags.push(
                    p.diag_key(
                        "format",
                        &base.key("csv"),
                        format!("`csv` options apply to CSV files; this extract reads {}", format_name(kind)),
                    )
                    .help("remove `csv`, or set `format: csv`"),
                );
            }
            let mut byte = |key: &str, c: Option<char>| -> Option<u8> {
                let c = c?;
                if c.is_ascii() {
                    Some(c as u8)
                } else {
                    self.diags.push(p.diag_value(
                        "csv",
                        &base.key("csv").key(key),
                        c.len_utf8(),
                        format!("`{key}` must be a single ASCII character"),
                    ));
                    None
                }
            };
            if let Some(d) = byte("delimiter", o.delimiter) {
                csv.delimiter = d;
            }
            if let Some(q) = byte("quote", o.quote) {
                csv.quote = q;
            }
            csv.escape = byte("escape", o.escape);
            csv.comment = byte("comment", o.comment);
            csv.header = o.header.unwrap_or(true);
            csv.multiline = o.multiline.unwrap_or(false);
            csv.null = o.null_value.clone().filter(|n| !n.is_empty());
            if csv.quote == csv.delimiter {
                self.diags.push(p.diag_key("csv", &base.key("csv"), "`quote` and `delimiter` must differ"));
            }
        }
        let xml = self.xml_plan(name, e, kind);
        if kind == FileFormat::Xml && xml.is_none() {
            return None;
        }
        Some(InputFormat { kind, compression, csv, infer_rows: e.infer_rows.unwrap_or(1000).max(1), xml })
    }

    /// The compiled `xml:` of an XML extract (required), every path problem reported; `xml:` on
    /// another format is refused.
    fn xml_plan(
        &mut self,
        name: &str,
        e: &spec::Extract,
        kind: FileFormat,
    ) -> Option<Arc<crate::source::files::xml::XmlPlan>> {
        let p = self.p;
        let base = ypath!["tasks", name, "extract"];
        let Some(x) = &e.xml else {
            if kind == FileFormat::Xml {
                self.diags.push(
                    p.diag_key("missing-key", &base, format!("missing required key `xml` in `tasks.{name}.extract`"))
                        .help("name the repeated element that is a row and the columns' paths: `xml: { record: /ORDERS/ORDER, fields: { id: ID, amount: AMOUNT } }`"),
                );
            }
            return None;
        };
        if kind != FileFormat::Xml {
            self.diags.push(
                p.diag_key(
                    "format",
                    &base.key("xml"),
                    format!("`xml` options apply to XML files; this extract reads {}", format_name(kind)),
                )
                .help("remove `xml`, or set `format: xml`"),
            );
            return None;
        }
        match crate::source::files::xml::XmlPlan::new(&x.record, &x.fields, x.namespaces.as_ref()) {
            Ok(plan) => Some(Arc::new(plan)),
            Err(problems) => {
                for (field, problem) in problems {
                    let (at, len) = match &field {
                        Some(f) => (base.key("xml").key("fields").key(f), x.fields.get(f).map_or(1, |v| v.len())),
                        None => (base.key("xml").key("record"), x.record.len()),
                    };
                    self.diags.push(p.diag_value("xml", &at, len, problem).help(
                        "paths are element names separated by `/`: `E1EDP19/IDTNR`, `MENGE/@unit`, `E1EDPT2[]/TDLINE`, `/ORDERS05/IDOC/EDI_DC40/DOCNUM`",
                    ));
                }
                None
            }
        }
    }

    /// The CSV delimiter of extract `name`, as written (default `,`).
    pub(super) fn delimiter_of(&self, name: &str) -> Option<u8> {
        let e = self.p.spec.tasks.get(name)?.extract.as_ref()?;
        Some(e.csv.as_ref().and_then(|c| c.delimiter).map(|d| d as u8).unwrap_or(b','))
    }

    pub(super) fn extract_error(&self, name: &str, e: crate::source::files::infer::InferError) -> Diagnostic {
        let p = self.p;
        let base = ypath!["tasks", name, "extract"];
        let path_len = p.spec.tasks[name].extract.as_ref().map(|e| e.path.len()).unwrap_or(0);
        match e {
            crate::source::files::infer::InferError::NoFiles { pattern, store, url } => p
                .diag_value("missing-file", &base.key("path"), path_len, format!("no files match `{pattern}` in store `{store}` ({url})"))
                .help("check the path: it is relative to the store's root; hidden files and names starting with `_` are ignored"),
            crate::source::files::infer::InferError::Storage(e) => p.diag_value("storage", &base.key("path"), path_len, p.secrets.redact(&e.to_string())),
            crate::source::files::infer::InferError::Infer { file, error } => p.diag_value(
                "schema",
                &base.key("path"),
                path_len,
                p.secrets.redact(&format!("cannot read the schema of `{file}`: {}", clean_df_message(&error))),
            ),
            crate::source::files::infer::InferError::TypeConflict { column, first, other } => {
                let fits = types::widen(&first.1, &other.1);
                p.diag_value(
                    "schema",
                    &base.key("path"),
                    path_len,
                    p.secrets.redact(&format!(
                        "the files store column `{column}` with different types: {} in {}, {} in {}",
                        types::sql_name(&first.1),
                        first.0,
                        types::sql_name(&other.1),
                        other.0
                    )),
                )
                .help(format!(
                    "declare the type to read it as: `schema: {{ {column}: {} }}` (each file's values are cast to it)",
                    types::sql_name(&fits)
                ))
            }
            crate::source::files::infer::InferError::UnknownColumn { column, known } if known.is_empty() => p
                .diag_key("schema", &base.key("schema").key(&column), format!("column `{column}` is not in the files: they have no columns"))
                .help("the file is empty, or its header line is; a CSV file needs a header line, or `csv: { header: false }` and `schema` naming every column"),
            crate::source::files::infer::InferError::UnknownColumn { column, known } => {
                // One column whose name holds another delimiter: the delimiter is wrong.
                let other = match known.as_slice() {
                    [one] => [';', '\t', '|', ','].into_iter().find(|d| one.contains(*d) && Some(*d as u8) != self.delimiter_of(name)),
                    _ => None,
                };
                let help = match other {
                    Some(d) => format!(
                        "the files have one column, `{}`: is the delimiter `{}`? set `csv: {{ delimiter: \"{}\" }}`",
                        known[0],
                        d.escape_default(),
                        d.escape_default()
                    ),
                    None => did_you_mean(&column, known.iter().map(String::as_str))
                        .unwrap_or_else(|| format!("the files have: {}", known.join(", "))),
                };
                p.diag_key("schema", &base.key("schema").key(&column), format!("column `{column}` is not in the files"))
                    .help(help)
            }
            crate::source::files::infer::InferError::ColumnCount { declared, found } => p
                .diag_key("schema", &base.key("schema"), format!("`schema` lists {declared} columns but the files have {found}"))
                .help("without a header, `schema` names every column in order"),
        }
    }

    /// The watermark column exists and has a type that orders; the lookback fits its type.
    pub(super) fn incremental_plan(
        &mut self,
        name: &str,
        inc: &spec::Incremental,
        schema: &SchemaRef,
    ) -> Option<IncrementalPlan> {
        let p = self.p;
        let base = ypath!["tasks", name, "extract", "incremental", "watermark"];
        let watermark = match &inc.watermark {
            None => None,
            Some(w) => {
                let Ok(field) = schema.field_with_name(&w.column) else {
                    let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    self.diags.push(
                        p.diag_value(
                            "watermark",
                            &base.key("column"),
                            w.column.len(),
                            format!("watermark column `{}` is not in `{name}`", w.column),
                        )
                        .maybe_help(
                            did_you_mean(&w.column, cols.iter().copied())
                                .or_else(|| Some(format!("`{name}` has: {}", cols.join(", ")))),
                        ),
                    );
                    return None;
                };
                let dt = field.data_type().clone();
                let orderable = dt.is_integer()
                    || matches!(
                        dt,
                        DataType::Decimal128(..)
                            | DataType::Decimal256(..)
                            | DataType::Date32
                            | DataType::Date64
                            | DataType::Timestamp(..)
                            | DataType::Utf8
                            | DataType::LargeUtf8
                            | DataType::Utf8View
                    );
                if !orderable {
                    self.diags.push(
                        p.diag_value(
                            "watermark",
                            &base.key("column"),
                            w.column.len(),
                            format!("watermark column `{}` has type {}, which cannot be a cursor", w.column, types::sql_name(&dt)),
                        )
                        .help("use an integer, decimal, date, timestamp or text column that only grows; declare its type under `schema` if it was inferred wrongly"),
                    );
                    return None;
                }
                let lookback = match &w.lookback {
                    None => None,
                    Some(v) => match self.lookback(&base.key("lookback"), v, &dt) {
                        Some(l) => Some(l),
                        None => return None,
                    },
                };
                Some(WatermarkPlan { column: w.column.clone(), data_type: dt, lookback })
            }
        };
        Some(IncrementalPlan { new_files: inc.new_files, watermark, cdc: inc.cdc.is_some() })
    }

    pub(super) fn lookback(&mut self, path: &YamlPath, v: &spec::Scalar, dt: &DataType) -> Option<Lookback> {
        let p = self.p;
        let text = v.to_string();
        let temporal = matches!(dt, DataType::Date32 | DataType::Date64 | DataType::Timestamp(..));
        let numeric = dt.is_integer() || matches!(dt, DataType::Decimal128(..) | DataType::Decimal256(..));
        let err = |this: &mut Self, msg: String, help: &str| {
            this.diags.push(p.diag_value("lookback", path, text.len(), msg).help(help.to_string()));
            None
        };
        match v {
            spec::Scalar::String(s) if temporal => match humantime::parse_duration(s.trim()) {
                Ok(d) if matches!(dt, DataType::Date32 | DataType::Date64) && d.as_secs() % 86_400 != 0 => err(
                    self,
                    format!("lookback `{s}` is not a whole number of days, and the cursor is a date"),
                    "write e.g. `1d` or `7d`",
                ),
                Ok(d) => Some(Lookback::Duration(d)),
                Err(e) => {
                    err(self, format!("invalid lookback `{s}`: {e}"), "write a duration such as `30m`, `2h`, `1d`")
                }
            },
            spec::Scalar::Integer(n) if numeric && *n >= 0 => Some(Lookback::Number(*n)),
            _ if temporal => err(
                self,
                format!("lookback `{text}` is not a duration, and the cursor is a {}", types::sql_name(dt)),
                "write a duration such as `30m`, `2h`, `1d`",
            ),
            _ if numeric => err(
                self,
                format!("lookback `{text}` is not a whole number ≥ 0, and the cursor is a {}", types::sql_name(dt)),
                "write how many units of the cursor to read again, e.g. `100`",
            ),
            _ => err(
                self,
                format!("a lookback needs a number or timestamp cursor; `{}` is text", types::sql_name(dt)),
                "remove `lookback`, or use a timestamp or integer cursor",
            ),
        }
    }
}

/// What the extracts read, as compile resolved it.
pub(super) struct Sources {
    /// Per files extract: the files listed and the schema they are read with.
    pub files: HashMap<NodeIndex, (Vec<object_store::ObjectMeta>, SchemaRef)>,
    /// Per database extract: its plan.
    pub databases: HashMap<NodeIndex, crate::source::database::DbPlan>,
    pub apis: HashMap<NodeIndex, crate::source::http::HttpPlan>,
}

/// (format, compression, is .tsv) from a path's extensions.
pub(super) fn format_from_path(path: &str) -> (Option<FileFormat>, Option<InputCompression>, bool) {
    let lower = path.to_ascii_lowercase();
    let (rest, compression) = [
        (".gz", InputCompression::Gzip),
        (".gzip", InputCompression::Gzip),
        (".zst", InputCompression::Zstd),
        (".zstd", InputCompression::Zstd),
        (".bz2", InputCompression::Bzip2),
        (".xz", InputCompression::Xz),
    ]
    .iter()
    .find_map(|(ext, c)| lower.strip_suffix(ext).map(|r| (r.to_string(), Some(*c))))
    .unwrap_or((lower.clone(), None));
    let format = if rest.ends_with(".csv") || rest.ends_with(".tsv") || rest.ends_with(".txt") {
        Some(FileFormat::Csv)
    } else if rest.ends_with(".json") || rest.ends_with(".jsonl") || rest.ends_with(".ndjson") {
        Some(FileFormat::Json)
    } else if rest.ends_with(".parquet") || rest.ends_with(".pq") {
        Some(FileFormat::Parquet)
    } else if rest.ends_with(".xml") {
        Some(FileFormat::Xml)
    } else {
        None
    };
    (format, compression, rest.ends_with(".tsv"))
}

pub(crate) fn format_name(f: FileFormat) -> &'static str {
    match f {
        FileFormat::Csv => "CSV",
        FileFormat::Json => "JSON",
        FileFormat::Parquet => "Parquet",
        FileFormat::Xml => "XML",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_extensions() {
        assert_eq!(format_from_path("a/*.csv.gz"), (Some(FileFormat::Csv), Some(InputCompression::Gzip), false));
        assert_eq!(format_from_path("x.TSV"), (Some(FileFormat::Csv), None, true));
        assert_eq!(format_from_path("e/*.ndjson.zst"), (Some(FileFormat::Json), Some(InputCompression::Zstd), false));
        assert_eq!(format_from_path("c.parquet"), (Some(FileFormat::Parquet), None, false));
        assert_eq!(format_from_path("dir/"), (None, None, false));
    }
}
