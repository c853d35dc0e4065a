//! `compile`: a parsed pipeline → a [`Plan`]. Resolves stores and names, infers
//! dependencies from SQL, detects cycles, infers extract schemas (file footers or a bounded
//! sample) and plans every transform against its inputs' schemas. No data is read beyond
//! those samples. Every problem found is reported, each with its place in the file.

mod checks;
pub mod engine;
pub mod plan;
pub mod schedule;
pub mod sql;
pub mod types;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DataFusionError;
use datafusion::datasource::empty::EmptyTable;
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use futures::StreamExt;
use petgraph::graph::{DiGraph, NodeIndex};

pub use engine::{BallistaPlan, EnginePlan};
pub use plan::*;

use crate::diag::{Diagnostic, did_you_mean};
use crate::spec::span::YamlPath;
use crate::spec::{self, FileFormat, InputCompression, LoadMode, LoadedPipeline, Task};
use crate::storage::{FileGlob, StorageError, Store};
use crate::ypath;

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{} problem{} found", .0.len(), if .0.len() == 1 { "" } else { "s" })]
    Invalid(Vec<Diagnostic>),
}

/// Rows per row group and per file when a load does not say.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 1 << 20;
pub const DEFAULT_MAX_ROWS_PER_FILE: usize = 10_000_000;
/// Compression levels when a load does not say.
pub const DEFAULT_ZSTD_LEVEL: u32 = 1;
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// The most transforms fused into one query along a chain; the next one is materialized.
/// Deeper nesting costs planning time and stack for no benefit.
pub const MAX_FUSED_DEPTH: usize = 32;
/// Parquet files sampled for schema inference.
const PARQUET_SCHEMA_SAMPLE: usize = 16;

/// A DataFusion session configured for weir: spans in SQL errors, no catalog tables beyond
/// the tasks, no URL tables.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new().with_information_schema(false);
    let opts = config.options_mut();
    opts.sql_parser.collect_spans = true;
    opts.execution.parquet.pushdown_filters = false;
    // Broadcast (build one hash table, no repartitioning of the other side) join sides up to
    // 32 MiB, estimated: dimension tables of pipelines are mostly below it; the default (1 MiB)
    // repartitions a fact table by hash to join it to a few thousand customers.
    opts.optimizer.hash_join_single_partition_threshold = 32 << 20;
    opts.optimizer.hash_join_single_partition_threshold_rows = 1 << 20;
    config
}

/// A session state for weir's SQL: [`session_config`] and weir's SQL types (`timestamp` is
/// microseconds in SQL as in `schema:`, see [`sql::SqlTypes`]). Every session that plans a
/// pipeline's SQL is built from it: compile, the run, the cluster's client.
pub fn session_state(
    config: SessionConfig,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> datafusion::execution::session_state::SessionState {
    datafusion::execution::session_state::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_type_planner(Arc::new(sql::SqlTypes))
        .build()
}

struct Draft {
    name: String,
    /// Position among the tasks of the file.
    position: usize,
    description: Option<String>,
    policy: spec::TaskPolicy,
    kind: DraftKind,
    /// Tasks its checks read (relationship targets, tables of `sql` checks).
    check_inputs: Vec<String>,
}

enum DraftKind {
    Extract {
        store: Arc<Store>,
        glob: FileGlob,
        format: InputFormat,
        declared: Vec<(String, DataType)>,
        incremental: Option<spec::Incremental>,
    },
    /// `statement` is taken when the query is planned.
    Transform {
        sql: String,
        statement: Option<Box<DfStatement>>,
        inputs: Vec<String>,
    },
    Load(LoadPlan),
    /// The task has errors; it stays in the graph so references to it resolve.
    Broken,
}

/// Where compile keeps the schemas it inferred from input files, keyed by the files' identity
/// (path, size, ETag or time) and the format's settings: a run over files it has seen reads
/// none of them to compile. Implemented by the state store.
pub trait SchemaCache: Send + Sync {
    /// The Arrow IPC encoding of the schema stored under `key`.
    fn schema(&self, key: &str) -> Option<Vec<u8>>;
    /// Store `schema` (Arrow IPC) under `key`.
    fn put_schema(&self, key: &str, schema: &[u8]);
}

/// Compile one pipeline.
pub async fn compile(p: &LoadedPipeline) -> Result<Plan, CompileError> {
    compile_cached(p, None).await
}

/// Compile one pipeline, with inferred schemas cached in `cache`.
pub async fn compile_cached(p: &LoadedPipeline, cache: Option<&dyn SchemaCache>) -> Result<Plan, CompileError> {
    // Problems the spec stage found are reported together with compile's own.
    let mut c = Compiler { p, diags: p.problems.clone(), cache };
    let plan = c.run().await;
    match plan {
        Some(plan) if c.diags.is_empty() => Ok(plan),
        _ => {
            // In file order, as the user reads the file.
            c.diags.sort_by_key(|d| d.location.map(|l| (l.line, l.col)).unwrap_or((usize::MAX, 0)));
            Err(CompileError::Invalid(c.diags))
        }
    }
}

struct Compiler<'a> {
    p: &'a LoadedPipeline,
    diags: Vec<Diagnostic>,
    cache: Option<&'a dyn SchemaCache>,
}

impl Compiler<'_> {
    async fn run(&mut self) -> Option<Plan> {
        let p = self.p;
        let clock = std::time::Instant::now();
        let phase = |what: &str| tracing::debug!(pipeline = %p.name, ms = clock.elapsed().as_millis() as u64, "compile: {what}");
        let stores = self.stores();
        let watch = schedule::compile_watch(p, &mut self.diags);
        let engine = engine::compile_engine(p, &stores, &mut self.diags);
        let ctx = SessionContext::new_with_state(session_state(session_config(), Default::default()));
        let state = ctx.state();
        // Task names in file order (for suggestions) and as a set (for lookups).
        let names: indexmap::IndexSet<&str> = p.spec.tasks.keys().chain(p.broken.iter()).map(String::as_str).collect();
        let loads: HashSet<&str> =
            p.spec.tasks.iter().filter(|(_, t)| t.load.is_some()).map(|(n, _)| n.as_str()).collect();

        // Parse and sandbox every query first, on all cores: each is independent.
        let queries: Vec<(&str, &str)> = p
            .spec
            .tasks
            .iter()
            .filter_map(|(n, t)| t.transform.as_ref().map(|tr| (n.as_str(), tr.sql.as_str())))
            .collect();
        let mut analyses: HashMap<&str, Result<sql::Analyzed, Vec<sql::SqlIssue>>> =
            par_map(queries, |(name, query)| (name, sql::analyze(&state, query))).into_iter().collect();
        phase("queries parsed and checked");
        let mut drafts = Vec::with_capacity(p.spec.tasks.len());
        for (position, (name, task)) in p.spec.tasks.iter().enumerate() {
            let analysis = analyses.remove(name.as_str());
            let kind = self.draft(name, task, analysis, &stores, &names, &loads);
            let check_inputs = self.check_inputs(&state, name, task, &names, &loads);
            drafts.push(Draft {
                name: name.clone(),
                position,
                description: task.description.clone(),
                policy: p.task_policy(task),
                kind,
                check_inputs,
            });
        }
        for name in &p.broken {
            let policy = p.task_policy(&Task::default());
            let position = drafts.len();
            drafts.push(Draft {
                name: name.clone(),
                position,
                description: None,
                policy,
                kind: DraftKind::Broken,
                check_inputs: Vec::new(),
            });
        }
        self.check_load_targets(&drafts);

        // The graph: data edges from inputs, ordering edges from depends_on.
        let mut graph: DiGraph<Draft, Edge> = DiGraph::with_capacity(drafts.len(), drafts.len() * 2);
        let mut index = HashMap::new();
        for d in drafts {
            let name = d.name.clone();
            index.insert(name, graph.add_node(d));
        }
        let mut edges = Vec::new();
        for i in graph.node_indices() {
            let inputs: Vec<String> = match &graph[i].kind {
                DraftKind::Transform { inputs, .. } => inputs.clone(),
                DraftKind::Load(l) => vec![l.from.clone()],
                _ => vec![],
            };
            for input in inputs.iter().chain(&graph[i].check_inputs) {
                if let Some(&from) = index.get(input) {
                    edges.push((from, i, Edge::Data));
                }
            }
            let name = graph[i].name.clone();
            let deps = p.spec.tasks.get(&name).map(|t| t.depends_on.clone()).unwrap_or_default();
            for (k, dep) in deps.iter().enumerate() {
                let path = ypath!["tasks", &name, "depends_on"].index(k);
                match index.get(dep) {
                    Some(&from) if from == i => self.diags.push(p.diag_value(
                        "depends-on",
                        &path,
                        dep.len(),
                        format!("task `{name}` depends on itself"),
                    )),
                    Some(&from) => edges.push((from, i, Edge::Order)),
                    None => self.diags.push(
                        p.diag_value(
                            "unknown-task",
                            &path,
                            dep.len(),
                            format!("`depends_on` names unknown task `{dep}`"),
                        )
                        .maybe_help(did_you_mean(dep, names.iter().copied())),
                    ),
                }
            }
        }
        for (a, b, w) in edges {
            graph.add_edge(a, b, w);
        }

        if !self.report_cycles(&graph) {
            return None;
        }
        phase("graph built");

        // Schemas: extracts by listing and sampling (concurrently), then everything else in
        // topological order.
        let mut schemas: HashMap<NodeIndex, SchemaRef> = HashMap::new();
        let mut files: HashMap<NodeIndex, (Vec<object_store::ObjectMeta>, SchemaRef)> = HashMap::new();
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
                let state = &state;
                let cache = self.cache;
                async move { (i, infer_extract(state, cache, &name, &store, &glob, &format, &declared).await) }
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

        phase("extract schemas inferred");
        let order = plan::stable_topo_order(&graph, |d| d.position)?;
        for &i in &order {
            if let (DraftKind::Extract { .. }, Some(s)) = (&graph[i].kind, schemas.get(&i)) {
                let _ = ctx.register_table(graph[i].name.as_str(), Arc::new(EmptyTable::new(s.clone())));
            }
        }
        // Transforms level by level (a level only reads earlier ones), each level's queries
        // planned in parallel: planning is CPU-bound and a large pipeline has wide levels.
        let mut level: HashMap<NodeIndex, usize> = HashMap::new();
        for &i in &order {
            let l = graph.neighbors_directed(i, petgraph::Direction::Incoming).filter_map(|j| level.get(&j)).max();
            level.insert(i, l.map_or(0, |l| l + 1));
        }
        let mut by_level: std::collections::BTreeMap<usize, Vec<NodeIndex>> = Default::default();
        for &i in &order {
            if matches!(graph[i].kind, DraftKind::Transform { .. }) {
                by_level.entry(level[&i]).or_default().push(i);
            }
        }
        for (_, nodes) in by_level {
            let mut jobs = Vec::new();
            for i in nodes {
                let DraftKind::Transform { inputs, statement, .. } = &mut graph[i].kind else { continue };
                if !inputs.iter().all(|n| index.get(n).is_some_and(|j| schemas.contains_key(j))) {
                    continue; // an input has its own error
                }
                if let Some(st) = statement.take() {
                    jobs.push((i, st));
                }
            }
            for (i, result) in plan_queries(&state, jobs) {
                let name = graph[i].name.clone();
                let DraftKind::Transform { sql, .. } = &graph[i].kind else { continue };
                match result {
                    Ok(schema) => {
                        let _ = ctx.register_table(name.as_str(), Arc::new(EmptyTable::new(schema.clone())));
                        schemas.insert(i, schema);
                    }
                    Err(issue) => {
                        let d = self.plan_issue(&name, sql, issue);
                        self.diags.push(d);
                    }
                }
            }
        }
        for &i in &order {
            if let DraftKind::Load(l) = &graph[i].kind {
                let Some(input) = index.get(&l.from).and_then(|j| schemas.get(j)).cloned() else { continue };
                let name = graph[i].name.clone();
                let merge_ok = self.check_merge(&state, &name, l, &input);
                let storable = self.check_storable(&name, l, &input);
                if self.check_partitions(&name, l, &input) && merge_ok && storable {
                    // The load's schema is what it stores.
                    let stored = Arc::new(Schema::new(
                        input
                            .fields()
                            .iter()
                            .map(|f| match types::stored_type(f.data_type(), l.format) {
                                Ok(Some(t)) => Arc::new(f.as_ref().clone().with_data_type(t)),
                                _ => f.clone(),
                            })
                            .collect::<Vec<_>>(),
                    ));
                    schemas.insert(i, stored);
                }
            }
        }

        let mut incremental: HashMap<NodeIndex, IncrementalPlan> = HashMap::new();
        for &i in &order {
            if let DraftKind::Extract { incremental: Some(inc), .. } = &graph[i].kind
                && let Some(schema) = schemas.get(&i)
            {
                let name = graph[i].name.clone();
                if let Some(plan) = self.incremental_plan(&name, inc, schema) {
                    incremental.insert(i, plan);
                }
            }
        }
        self.check_incremental_loads(&graph, &order, &incremental);

        // Checks, once every table's schema is known.
        let mut fed_incrementally: HashSet<String> = HashSet::new();
        for &i in &order {
            let fed = incremental.contains_key(&i)
                || graph.edges_directed(i, petgraph::Direction::Incoming).any(|e| {
                    *e.weight() == Edge::Data
                        && fed_incrementally.contains(&graph[petgraph::visit::EdgeRef::source(&e)].name)
                });
            if fed {
                fed_incrementally.insert(graph[i].name.clone());
            }
        }
        let mut checks: HashMap<NodeIndex, Vec<CheckPlan>> = HashMap::new();
        let mut quarantines: HashMap<NodeIndex, QuarantinePlan> = HashMap::new();
        {
            let schema_of = |n: &str| -> Option<SchemaRef> {
                let j = index.get(n)?;
                match graph[*j].kind {
                    DraftKind::Extract { .. } | DraftKind::Transform { .. } => schemas.get(j).cloned(),
                    _ => None,
                }
            };
            let tables =
                checks::Tables { schema: &schema_of, names: &names, loads: &loads, incremental: &fed_incrementally };
            for &i in &order {
                let name = graph[i].name.clone();
                let Some(task) = p.spec.tasks.get(&name) else { continue };
                let bad_rows = task.extract.as_ref().and_then(|e| e.bad_rows).is_some();
                if task.load.is_some()
                    || (task.checks.is_empty()
                        && task.on_check_failure.is_none()
                        && task.quarantine.is_none()
                        && !bad_rows)
                {
                    continue;
                }
                let Some(schema) = schemas.get(&i).cloned() else { continue };
                let list = self.compile_checks(&state, &name, task, &schema, &tables);
                // The first load downstream, in file order.
                let first_load = plan::descendants_of(&graph, i)
                    .into_iter()
                    .filter_map(|j| match &graph[j].kind {
                        DraftKind::Load(l) => Some((graph[j].position, graph[j].name.as_str(), l.store.clone())),
                        _ => None,
                    })
                    .min_by_key(|x| x.0)
                    .map(|(_, n, s)| (n, s));
                if let Some(q) = self.quarantine_plan(&name, task, &list, &stores, first_load) {
                    quarantines.insert(i, q);
                }
                checks.insert(i, list);
            }
        }

        phase("queries planned");
        if !self.diags.is_empty() {
            return None;
        }

        // How each transform runs: computed once when several tasks read it, or when fusing it
        // would nest more than MAX_FUSED_DEPTH queries into one; otherwise fused.
        let consumers: HashMap<NodeIndex, usize> = graph
            .node_indices()
            .map(|i| {
                let mut c: Vec<NodeIndex> = graph
                    .edges_directed(i, petgraph::Direction::Outgoing)
                    .filter(|e| *e.weight() == Edge::Data)
                    .map(|e| petgraph::visit::EdgeRef::target(&e))
                    .collect();
                c.sort();
                c.dedup();
                (i, c.len())
            })
            .collect();
        let mut how: HashMap<NodeIndex, Execution> = HashMap::new();
        let mut depth: HashMap<NodeIndex, usize> = HashMap::new();
        for &i in &order {
            let DraftKind::Transform { inputs, .. } = &graph[i].kind else { continue };
            let d =
                1 + inputs.iter().filter_map(|n| index.get(n)).filter_map(|j| depth.get(j)).max().copied().unwrap_or(0);
            let checked = checks.get(&i).is_some_and(|c| !c.is_empty());
            let e = if checked {
                Execution::Checked
            } else if consumers[&i] > 1 {
                Execution::Shared
            } else if d > MAX_FUSED_DEPTH && consumers[&i] == 1 {
                Execution::ChainBreak
            } else {
                Execution::Fused
            };
            depth.insert(i, if e == Execution::Fused { d } else { 0 });
            how.insert(i, e);
        }

        let final_graph = graph.map_owned(
            |i, d| {
                let schema = schemas.get(&i).cloned().unwrap_or_else(|| Arc::new(Schema::empty()));
                let kind = match d.kind {
                    DraftKind::Extract { store, glob, format, declared, .. } => {
                        let (listed, read_schema) = files.remove(&i).unwrap_or_default_pair();
                        TaskKind::Extract(ExtractPlan {
                            store,
                            glob,
                            format,
                            read_schema,
                            declared: declared.into_iter().map(|(c, _)| c).collect(),
                            files: listed,
                            incremental: incremental.remove(&i),
                            bad_rows: p
                                .spec
                                .tasks
                                .get(&d.name)
                                .and_then(|t| t.extract.as_ref())
                                .and_then(|e| e.bad_rows)
                                .unwrap_or_default(),
                        })
                    }
                    DraftKind::Transform { sql, inputs, .. } => {
                        TaskKind::Transform(TransformPlan { sql, inputs, execution: how[&i] })
                    }
                    DraftKind::Load(l) => TaskKind::Load(l),
                    DraftKind::Broken => {
                        unreachable!("compile reports broken tasks before building the plan")
                    }
                };
                TaskNode {
                    name: d.name,
                    description: d.description,
                    kind,
                    schema,
                    policy: d.policy,
                    position: d.position,
                    checks: checks.remove(&i).unwrap_or_default(),
                    quarantine: quarantines.remove(&i),
                }
            },
            |_, e| e,
        );
        phase("plan built");
        let max_parallel = p
            .spec
            .max_parallel
            .map(|m| m as usize)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
        let mut plan = Plan::new(
            p.name.clone(),
            p.spec.description.clone(),
            p.source.clone(),
            final_graph,
            stores.into_values().collect(),
            max_parallel.max(1),
            p.secrets.clone(),
        );
        plan.watch = watch;
        plan.engine = engine;
        Some(plan)
    }

    fn stores(&mut self) -> indexmap::IndexMap<String, Arc<Store>> {
        let p = self.p;
        let mut out: indexmap::IndexMap<String, Arc<Store>> = indexmap::IndexMap::new();
        for (name, s) in &p.spec.stores {
            let options: Vec<(String, String)> = s.options.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            for (k, v) in &options {
                if crate::storage::is_credential(k) {
                    crate::spec::add_secret(&p.secrets, v);
                }
            }
            match Store::new(name, &s.url, &options, &p.dir) {
                Ok(store) => {
                    if let Some(other) = out.values().find(|o| o.conflicts_with(&store)) {
                        self.diags.push(
                            p.diag_key(
                                "store",
                                &ypath!["stores", name],
                                format!(
                                    "stores `{}` and `{name}` use the same bucket with different options",
                                    other.name
                                ),
                            )
                            .help("use one store for the bucket, with one set of options"),
                        );
                    }
                    out.insert(name.clone(), Arc::new(store));
                }
                Err(StorageError::OptionValue { key, reason }) => {
                    self.diags.push(p.diag_key(
                        "store-option",
                        &ypath!["stores", name, "options", &key],
                        format!("option `{key}` {reason}"),
                    ));
                }
                Err(StorageError::Option { key, kind }) => {
                    let known: Vec<&str> =
                        known_options(kind).iter().chain(crate::storage::RETRY_OPTIONS).copied().collect();
                    self.diags.push(
                        p.diag_key(
                            "store-option",
                            &ypath!["stores", name, "options", &key],
                            format!("unknown option `{key}` for a {kind} store"),
                        )
                        .maybe_help(did_you_mean(&key, known.iter().copied())),
                    );
                }
                Err(e) => {
                    let d = p.diag_value(
                        "store",
                        &ypath!["stores", name, "url"],
                        s.url.len(),
                        p.secrets.redact(&e.to_string()),
                    );
                    let d = match e {
                        StorageError::Scheme { .. } => {
                            d.help("supported: file://, s3://, gs://, az://, abfss://, memory://")
                        }
                        _ => d,
                    };
                    self.diags.push(d);
                }
            }
        }
        out
    }

    fn unknown_store(&self, task: &str, section: &str, store: &str) -> Diagnostic {
        let path = ypath!["tasks", task, section, "store"];
        let known: Vec<&str> = self.p.spec.stores.keys().map(String::as_str).collect();
        let help = did_you_mean(store, known.iter().copied()).unwrap_or_else(|| {
            if known.is_empty() {
                "define it under `stores:` (no stores are defined)".to_string()
            } else {
                format!("define it under `stores:`; defined: {}", known.join(", "))
            }
        });
        self.p.diag_value("unknown-store", &path, store.len(), format!("unknown store `{store}`")).help(help)
    }

    fn draft(
        &mut self,
        name: &str,
        task: &Task,
        analysis: Option<Result<sql::Analyzed, Vec<sql::SqlIssue>>>,
        stores: &indexmap::IndexMap<String, Arc<Store>>,
        names: &indexmap::IndexSet<&str>,
        loads: &HashSet<&str>,
    ) -> DraftKind {
        let p = self.p;
        let before = self.diags.len();
        let broken = |this: &Self| this.diags.len() > before;
        if let Some(e) = &task.extract {
            let store = stores.get(&e.store).cloned();
            if store.is_none() && !p.spec.stores.contains_key(&e.store) && !p.broken_stores.contains(&e.store) {
                self.diags.push(self.unknown_store(name, "extract", &e.store));
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
            let mut declared = Vec::new();
            if let Some(schema) = &e.schema {
                for (col, ty) in schema {
                    match types::parse_sql_type(ty) {
                        Ok(t) => declared.push((col.clone(), t)),
                        Err(msg) => self.diags.push(
                            p.diag_value("type", &ypath!["tasks", name, "extract", "schema", col], ty.len(), msg)
                                .help(format!("known types: {}", types::TYPE_NAMES.join(", "))),
                        ),
                    }
                }
            }
            return match (store, glob, format) {
                (Some(store), Some(glob), Some(format)) if !broken(self) => {
                    DraftKind::Extract { store, glob, format, declared, incremental: e.incremental.clone() }
                }
                _ => DraftKind::Broken,
            };
        }
        if let Some(t) = &task.transform {
            let sql_path = ypath!["tasks", name, "transform", "sql"];
            let analyzed = match analysis.unwrap_or_else(|| Err(Vec::new())) {
                Ok(a) => a,
                Err(issues) => {
                    for i in issues {
                        self.diags.push(self.sql_diag(&sql_path, &t.sql, i.code, i.message, i.span).maybe_help(i.help));
                    }
                    return DraftKind::Broken;
                }
            };
            let mut inputs = Vec::new();
            for (table, span) in &analyzed.tables {
                if loads.contains(table.as_str()) {
                    let from = p.spec.tasks[table.as_str()].load.as_ref().map(|l| l.from.clone()).unwrap_or_default();
                    self.diags.push(
                        self.sql_diag(
                            &sql_path,
                            &t.sql,
                            "unknown-table",
                            format!("`{table}` is a load: loads write files and have no table"),
                            *span,
                        )
                        .help(format!("read the task it loads from, `{from}`")),
                    );
                } else if names.contains(table.as_str()) {
                    inputs.push(table.clone());
                } else {
                    let help = did_you_mean(table, names.iter().copied().filter(|n| !loads.contains(n)))
                        .unwrap_or_else(|| {
                            "tables in SQL are task names; declare an `extract` task to read files".to_string()
                        });
                    self.diags.push(
                        self.sql_diag(
                            &sql_path,
                            &t.sql,
                            "unknown-table",
                            format!("unknown table `{table}` in SQL"),
                            *span,
                        )
                        .help(help),
                    );
                }
            }
            return if broken(self) {
                DraftKind::Broken
            } else {
                DraftKind::Transform { sql: t.sql.clone(), statement: Some(analyzed.statement), inputs }
            };
        }
        if let Some(l) = &task.load {
            let from_path = ypath!["tasks", name, "load", "from"];
            if l.from == name {
                self.diags.push(p.diag_value(
                    "unknown-task",
                    &from_path,
                    l.from.len(),
                    format!("task `{name}` loads from itself"),
                ));
            } else if loads.contains(l.from.as_str()) {
                let from = p.spec.tasks[&l.from].load.as_ref().map(|x| x.from.clone()).unwrap_or_default();
                self.diags.push(
                    p.diag_value(
                        "unknown-task",
                        &from_path,
                        l.from.len(),
                        format!("`{}` is a load: loads write files and have no table", l.from),
                    )
                    .help(format!("load from the task it loads from, `{from}`")),
                );
            } else if !names.contains(l.from.as_str()) {
                self.diags.push(
                    p.diag_value(
                        "unknown-task",
                        &from_path,
                        l.from.len(),
                        format!("`from` names unknown task `{}`", l.from),
                    )
                    .maybe_help(did_you_mean(&l.from, names.iter().copied().filter(|n| !loads.contains(n)))),
                );
            }
            let store = stores.get(&l.store).cloned();
            if store.is_none() && !p.spec.stores.contains_key(&l.store) && !p.broken_stores.contains(&l.store) {
                self.diags.push(self.unknown_store(name, "load", &l.store));
            }
            let rel = store_dir(&l.path).unwrap_or_else(|| {
                self.diags.push(
                    p.diag_value("path", &ypath!["tasks", name, "load", "path"], l.path.len(), format!("invalid load path `{}`", l.path))
                        .help("name a directory inside the store, e.g. `marts/orders/`; the load owns it and replaces its content"),
                );
                String::new()
            });
            for (k, col) in l.partition_by.iter().enumerate() {
                if l.partition_by[..k].contains(col) {
                    self.diags.push(p.diag_value(
                        "partition",
                        &ypath!["tasks", name, "load", "partition_by"].index(k),
                        col.len(),
                        format!("`{col}` is listed twice in `partition_by`"),
                    ));
                }
            }
            if let Some(level) = l.compression_level {
                let range = match l.compression {
                    spec::OutputCompression::Zstd => Some(("zstd", 1..=22)),
                    spec::OutputCompression::Gzip => Some(("gzip", 0..=10)),
                    _ => None,
                };
                let path = ypath!["tasks", name, "load", "compression_level"];
                match range {
                    None => self.diags.push(
                        p.diag_key("compression", &path, "`compression_level` applies to `zstd` and `gzip` only")
                            .help("remove `compression_level`, or set `compression: zstd`"),
                    ),
                    Some((codec, r)) if !r.contains(&level) => self.diags.push(p.diag_value(
                        "compression",
                        &path,
                        level.to_string().len(),
                        format!("`compression_level` {level} is out of range for {codec}: {}–{}", r.start(), r.end()),
                    )),
                    Some(_) => {}
                }
            }
            if l.format == spec::OutputFormat::Delta && l.max_rows_per_file.is_some() {
                self.diags.push(
                    p.diag_key(
                        "format",
                        &ypath!["tasks", name, "load", "max_rows_per_file"],
                        "`max_rows_per_file` applies to Parquet outputs: `deltalake` sizes a Delta table's files itself",
                    )
                    .help("remove `max_rows_per_file`, or write `format: parquet`"),
                );
            }
            let Some(store) = store else {
                return DraftKind::Broken;
            };
            if broken(self) {
                return DraftKind::Broken;
            }
            return DraftKind::Load(LoadPlan {
                from: l.from.clone(),
                store,
                path: rel,
                format: l.format,
                mode: l.mode,
                partition_by: l.partition_by.clone(),
                compression: l.compression,
                compression_level: l.compression_level.unwrap_or(match l.compression {
                    spec::OutputCompression::Gzip => DEFAULT_GZIP_LEVEL,
                    _ => DEFAULT_ZSTD_LEVEL,
                }),
                row_group_rows: l.row_group_rows.unwrap_or(DEFAULT_ROW_GROUP_ROWS).max(1),
                max_rows_per_file: l.max_rows_per_file.unwrap_or(DEFAULT_MAX_ROWS_PER_FILE).max(1),
                keys: l.keys.as_ref().map(spec::Columns::to_vec).unwrap_or_default(),
                order_by: l.order_by.as_ref().map(spec::Columns::to_vec).unwrap_or_default(),
                delete_when: l.delete_when.clone(),
            });
        }
        DraftKind::Broken
    }

    /// The format and compression of an extract, from its keys or the path's extension.
    fn input_format(&mut self, name: &str, e: &spec::Extract) -> Option<InputFormat> {
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
                    .help("add `format: csv`, `format: json` or `format: parquet`"),
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
        Some(InputFormat { kind, compression, csv, infer_rows: e.infer_rows.unwrap_or(1000).max(1) })
    }

    fn sql_diag(
        &self,
        path: &YamlPath,
        sql: &str,
        code: &'static str,
        message: String,
        span: Option<(usize, usize)>,
    ) -> Diagnostic {
        match span {
            Some((off, len)) => self.p.diag_in_value(code, path, sql, off, len, message),
            None => self.p.diag_key(code, path, message),
        }
    }

    /// A planning problem as a diagnostic located in the SQL of task `name`.
    fn plan_issue(&self, name: &str, sql: &str, issue: PlanIssue) -> Diagnostic {
        let path = ypath!["tasks", name, "transform", "sql"];
        match issue {
            PlanIssue::DataFusion(e) => self.df_error(&path, sql, &e),
            PlanIssue::Sandbox(m) => self.sql_diag(&path, sql, "sql-sandbox", m, None),
            PlanIssue::DuplicateColumn(c) => self
                .sql_diag(&path, sql, "sql-plan", format!("the query returns two columns named `{c}`"), None)
                .help(format!("give one of them another name, e.g. `... AS {c}_2`")),
        }
    }

    fn df_error(&self, path: &YamlPath, sql: &str, e: &DataFusionError) -> Diagnostic {
        let message = clean_df_message(&e.strip_backtrace());
        let mut span =
            e.diagnostic().and_then(|d| d.span).map(|s| sql::df_span_of(sql, &s)).filter(|s| s.1 > 0 || s.0 > 0);
        if span.is_none() {
            // Point at the first identifier the message quotes, if the SQL contains it.
            span = quoted_names(&message).into_iter().find_map(|n| {
                let bare = n.rsplit('.').next().unwrap_or(&n).to_string();
                find_word(sql, &bare).map(|o| (o, bare.len()))
            });
        }
        let (code, help) = if message.contains("No field named") || message.contains("not found") {
            ("sql-plan", None)
        } else if message.to_lowercase().contains("cannot") || message.contains("coerc") || message.contains("type") {
            ("sql-type", Some("check the column types with `weir plan`; CAST(x AS type) converts".to_string()))
        } else {
            ("sql-plan", None)
        };
        self.sql_diag(path, sql, code, self.p.secrets.redact(&message), span).maybe_help(help)
    }

    /// The CSV delimiter of extract `name`, as written (default `,`).
    fn delimiter_of(&self, name: &str) -> Option<u8> {
        let e = self.p.spec.tasks.get(name)?.extract.as_ref()?;
        Some(e.csv.as_ref().and_then(|c| c.delimiter).map(|d| d as u8).unwrap_or(b','))
    }

    fn extract_error(&self, name: &str, e: ExtractError) -> Diagnostic {
        let p = self.p;
        let base = ypath!["tasks", name, "extract"];
        let path_len = p.spec.tasks[name].extract.as_ref().map(|e| e.path.len()).unwrap_or(0);
        match e {
            ExtractError::NoFiles { pattern, store, url } => p
                .diag_value("missing-file", &base.key("path"), path_len, format!("no files match `{pattern}` in store `{store}` ({url})"))
                .help("check the path: it is relative to the store's root; hidden files and names starting with `_` are ignored"),
            ExtractError::Storage(e) => p.diag_value("storage", &base.key("path"), path_len, p.secrets.redact(&e.to_string())),
            ExtractError::Infer { file, error } => p.diag_value(
                "schema",
                &base.key("path"),
                path_len,
                p.secrets.redact(&format!("cannot read the schema of `{file}`: {}", clean_df_message(&error))),
            ),
            ExtractError::TypeConflict { column, first, other } => {
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
            ExtractError::UnknownColumn { column, known } if known.is_empty() => p
                .diag_key("schema", &base.key("schema").key(&column), format!("column `{column}` is not in the files: they have no columns"))
                .help("the file is empty, or its header line is; a CSV file needs a header line, or `csv: { header: false }` and `schema` naming every column"),
            ExtractError::UnknownColumn { column, known } => {
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
            ExtractError::ColumnCount { declared, found } => p
                .diag_key("schema", &base.key("schema"), format!("`schema` lists {declared} columns but the files have {found}"))
                .help("without a header, `schema` names every column in order"),
        }
    }

    /// The watermark column exists and has a type that orders; the lookback fits its type.
    fn incremental_plan(&mut self, name: &str, inc: &spec::Incremental, schema: &SchemaRef) -> Option<IncrementalPlan> {
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
        Some(IncrementalPlan { new_files: inc.new_files, watermark })
    }

    fn lookback(&mut self, path: &YamlPath, v: &spec::Scalar, dt: &DataType) -> Option<Lookback> {
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

    /// Keys, `order_by` and `delete_when` name real columns and appear only with `mode: merge`;
    /// `replace_partitions` has partitions.
    fn check_merge(&mut self, state: &SessionState, name: &str, l: &LoadPlan, input: &SchemaRef) -> bool {
        let p = self.p;
        let before = self.diags.len();
        let base = ypath!["tasks", name, "load"];
        let cols: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
        let merge = l.mode == LoadMode::Merge;
        if merge && l.keys.is_empty() {
            self.diags.push(
                p.diag_value("merge", &base.key("mode"), 5, "`mode: merge` needs `keys`")
                    .help("name the column(s) that identify a row, e.g. `keys: [order_id]`"),
            );
        }
        if l.mode == LoadMode::ReplacePartitions && l.partition_by.is_empty() {
            self.diags.push(
                p.diag_value(
                    "replace-partitions",
                    &base.key("mode"),
                    18,
                    "`mode: replace_partitions` needs `partition_by`",
                )
                .help("name the column(s) whose values make the partitions, e.g. `partition_by: [day]`"),
            );
        }
        for (key, list) in [("keys", &l.keys), ("order_by", &l.order_by)] {
            if !list.is_empty() && !merge {
                self.diags.push(
                    p.diag_key("merge", &base.key(key), format!("`{key}` is only used by `mode: merge`"))
                        .help("set `mode: merge`, or remove it"),
                );
                continue;
            }
            for (k, col) in list.iter().enumerate() {
                if !cols.contains(&col.as_str()) {
                    let path = if p.spec.tasks[name]
                        .load
                        .as_ref()
                        .and_then(|x| if key == "keys" { x.keys.as_ref() } else { x.order_by.as_ref() })
                        .is_some_and(|c| matches!(c, spec::Columns::Many(_)))
                    {
                        base.key(key).index(k)
                    } else {
                        base.key(key)
                    };
                    self.diags.push(
                        p.diag_value(
                            "merge",
                            &path,
                            col.len(),
                            format!("`{key}` column `{col}` is not in `{}`", l.from),
                        )
                        .maybe_help(
                            did_you_mean(col, cols.iter().copied())
                                .or_else(|| Some(format!("`{}` has: {}", l.from, cols.join(", ")))),
                        ),
                    );
                } else if key == "keys" && l.keys[..k].contains(col) {
                    self.diags.push(p.diag_key("merge", &base.key(key), format!("`{col}` is listed twice in `keys`")));
                }
            }
        }
        if let Some(cond) = &l.delete_when {
            let path = base.key("delete_when");
            if !merge {
                self.diags.push(
                    p.diag_key("merge", &path, "`delete_when` is only used by `mode: merge`")
                        .help("set `mode: merge`, or remove it"),
                );
            } else if let Err(msg) = sql::check_predicate(state, cond, input) {
                self.diags.push(
                    p.diag_value("delete-when", &path, cond.len(), format!("invalid `delete_when`: {msg}"))
                        .help(format!("a SQL condition on the columns of `{}`, e.g. `op = 'D'`", l.from)),
                );
            }
        }
        self.diags.len() == before
    }

    /// Rules between incremental extracts and the loads they feed: a load fed by one must keep
    /// what earlier runs wrote (not `overwrite`); a lookback re-reads rows, so every load it
    /// feeds must merge them by keys.
    fn check_incremental_loads(
        &mut self,
        graph: &DiGraph<Draft, Edge>,
        order: &[NodeIndex],
        incremental: &HashMap<NodeIndex, IncrementalPlan>,
    ) {
        let p = self.p;
        if incremental.is_empty() {
            return;
        }
        let sources = plan::incremental_sources(graph, order, |i| incremental.contains_key(&i), |d| d.position);
        for &i in order {
            let DraftKind::Load(l) = &graph[i].kind else { continue };
            let name = graph[i].name.clone();
            let Some(srcs) = sources.get(&i) else { continue };
            let names: Vec<String> = srcs.iter().map(|s| format!("`{}`", graph[*s].name)).collect();
            if l.mode == LoadMode::Overwrite {
                self.diags.push(
                    p.diag_value(
                        "incremental",
                        &ypath!["tasks", &name, "load", "mode"],
                        9,
                        format!(
                            "load `{name}` reads only new data (through incremental {}) but `mode: overwrite` would replace everything with it",
                            names.join(", ")
                        ),
                    )
                    .help("use `mode: append`, `merge` or `replace_partitions`; `weir run --full-refresh` rebuilds from all input"),
                );
            }
            for s in srcs {
                let lookback = incremental[s].watermark.as_ref().is_some_and(|w| w.lookback.is_some());
                if lookback && (l.mode != LoadMode::Merge || l.keys.is_empty()) {
                    let ext = graph[*s].name.clone();
                    self.diags.push(
                        p.diag_key(
                            "lookback",
                            &ypath!["tasks", &ext, "extract", "incremental", "watermark", "lookback"],
                            format!(
                                "a lookback reads rows again, but load `{name}` would {} them",
                                if l.mode == LoadMode::Append { "append" } else { "write" }
                            ),
                        )
                        .help(format!("give load `{name}` `mode: merge` and `keys`, so rows read again replace themselves; or remove `lookback`")),
                    );
                }
            }
        }
    }

    /// Every column has a type the output format can store (converted or as it is).
    fn check_storable(&mut self, name: &str, l: &LoadPlan, input: &SchemaRef) -> bool {
        let p = self.p;
        let mut ok = true;
        for f in input.fields() {
            if let Err(why) = types::stored_type(f.data_type(), l.format) {
                ok = false;
                self.diags.push(
                    p.diag_key(
                        "load-type",
                        &ypath!["tasks", name, "load", "format"],
                        format!("column `{}` of `{}` cannot be stored in a Delta table: {why}", f.name(), l.from),
                    )
                    .help(format!("cast it in a transform (`CAST({} AS …)`), or write `format: parquet`", f.name())),
                );
            }
        }
        ok
    }

    fn check_partitions(&mut self, name: &str, l: &LoadPlan, input: &SchemaRef) -> bool {
        let p = self.p;
        let mut ok = true;
        let cols: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
        for (k, col) in l.partition_by.iter().enumerate() {
            if !cols.contains(&col.as_str()) {
                ok = false;
                self.diags.push(
                    p.diag_value(
                        "partition",
                        &ypath!["tasks", name, "load", "partition_by"].index(k),
                        col.len(),
                        format!("`partition_by` column `{col}` is not in `{}`", l.from),
                    )
                    .maybe_help(
                        did_you_mean(col, cols.iter().copied())
                            .or_else(|| Some(format!("`{}` has: {}", l.from, cols.join(", ")))),
                    ),
                );
            }
        }
        for (k, col) in l.partition_by.iter().enumerate() {
            let Ok(f) = input.field_with_name(col) else { continue };
            if l.format == spec::OutputFormat::Parquet && !types::partitionable(f.data_type()) {
                ok = false;
                self.diags.push(
                    p.diag_value(
                        "partition",
                        &ypath!["tasks", name, "load", "partition_by"].index(k),
                        col.len(),
                        format!(
                            "`partition_by` column `{col}` is {}: a partition directory holds a scalar value as text",
                            types::sql_name(f.data_type())
                        ),
                    )
                    .help("partition by a text, number, boolean, date or timestamp column (computed in a transform if need be)"),
                );
            }
        }
        if ok && !l.partition_by.is_empty() && l.partition_by.len() >= cols.len() {
            ok = false;
            self.diags.push(p.diag_key(
                "partition",
                &ypath!["tasks", name, "load", "partition_by"],
                "`partition_by` lists every column: no columns would be left in the files",
            ));
        }
        ok
    }

    fn check_load_targets(&mut self, drafts: &[Draft]) {
        let p = self.p;
        let targets: Vec<(&str, &LoadPlan)> = drafts
            .iter()
            .filter_map(|d| match &d.kind {
                DraftKind::Load(l) => Some((d.name.as_str(), l)),
                _ => None,
            })
            .collect();
        for (k, (name, l)) in targets.iter().enumerate() {
            for (other, o) in &targets[..k] {
                let same_store = Arc::ptr_eq(&l.store, &o.store) || l.store.display_url == o.store.display_url;
                let nested = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
                if same_store && (nested(&l.path, &o.path) || nested(&o.path, &l.path)) {
                    self.diags.push(
                        p.diag_value(
                            "load-target",
                            &ypath!["tasks", *name, "load", "path"],
                            l.path.len(),
                            format!(
                                "loads `{other}` and `{name}` write to the same place (`{}` in store `{}`)",
                                l.path, l.store.name
                            ),
                        )
                        .help("each load owns its directory: give them separate paths"),
                    );
                }
            }
        }
    }

    /// Report every cycle as `a → b → c → a`. False if there is one.
    fn report_cycles(&mut self, graph: &DiGraph<Draft, Edge>) -> bool {
        let mut ok = true;
        let mut sccs = petgraph::algo::tarjan_scc(graph);
        sccs.sort_by_key(|c| c.iter().map(|i| graph[*i].position).min());
        for scc in sccs {
            let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            ok = false;
            let members: HashSet<NodeIndex> = scc.iter().copied().collect();
            let start = *scc.iter().min_by_key(|i| graph[**i].position).unwrap_or(&scc[0]);
            let cycle = find_cycle(graph, start, &members);
            let text: Vec<&str> = cycle.iter().map(|i| graph[*i].name.as_str()).collect();
            let name = graph[start].name.clone();
            self.diags.push(
                self.p
                    .diag_key("cycle", &ypath!["tasks", &name], format!("dependency cycle: {}", text.join(" → ")))
                    .help("a task cannot depend on itself, directly or through others: remove one of these references"),
            );
        }
        ok
    }
}

trait DefaultPair {
    fn unwrap_or_default_pair(self) -> (Vec<object_store::ObjectMeta>, SchemaRef);
}

impl DefaultPair for Option<(Vec<object_store::ObjectMeta>, SchemaRef)> {
    fn unwrap_or_default_pair(self) -> (Vec<object_store::ObjectMeta>, SchemaRef) {
        self.unwrap_or_else(|| (Vec::new(), Arc::new(Schema::empty())))
    }
}

enum PlanIssue {
    DataFusion(DataFusionError),
    Sandbox(String),
    DuplicateColumn(String),
}

/// Plan one query against the registered tables: its output schema.
fn plan_query(state: &SessionState, statement: Box<DfStatement>) -> Result<SchemaRef, PlanIssue> {
    // The tables are in-memory schema stubs: planning never waits on I/O.
    let planned = futures::executor::block_on(state.statement_to_plan(*statement)).map_err(PlanIssue::DataFusion)?;
    sql::query_only().verify_plan(&planned).map_err(|e| PlanIssue::Sandbox(e.strip_backtrace()))?;
    // The analyzer applies type coercion: type errors surface here, not at run time.
    let analyzed = state
        .analyzer()
        .execute_and_check(planned, state.config_options(), |_, _| {})
        .map_err(PlanIssue::DataFusion)?;
    let schema: SchemaRef = Arc::new(analyzed.schema().as_arrow().clone());
    let mut seen = HashSet::new();
    for f in schema.fields() {
        if !seen.insert(f.name().as_str()) {
            return Err(PlanIssue::DuplicateColumn(f.name().clone()));
        }
    }
    Ok(schema)
}

/// Plan queries on all cores; results in the order of `jobs`.
fn plan_queries(
    state: &SessionState,
    jobs: Vec<(NodeIndex, Box<DfStatement>)>,
) -> Vec<(NodeIndex, Result<SchemaRef, PlanIssue>)> {
    par_map(jobs, |(i, st)| (i, plan_query(state, st)))
}

/// `f` over `items` on all cores (scoped threads; results in order). Small inputs run here.
fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(items.len() / 16).max(1);
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(per).collect());
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            chunks.into_iter().map(|chunk| scope.spawn(move || chunk.into_iter().map(f).collect::<Vec<R>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

/// The shortest path from `start` back to itself inside the strongly connected component.
fn find_cycle(graph: &DiGraph<Draft, Edge>, start: NodeIndex, members: &HashSet<NodeIndex>) -> Vec<NodeIndex> {
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::new();
    let mut succ: Vec<NodeIndex> = graph.neighbors(start).filter(|n| members.contains(n)).collect();
    succ.sort_by_key(|n| graph[*n].position);
    for n in succ {
        if n == start {
            return vec![start, start];
        }
        if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(n) {
            e.insert(start);
            queue.push_back(n);
        }
    }
    while let Some(n) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = graph.neighbors(n).filter(|m| members.contains(m)).collect();
        next.sort_by_key(|m| graph[*m].position);
        for m in next {
            if m == start {
                let mut path = vec![start, n];
                let mut cur = n;
                while let Some(&p) = prev.get(&cur) {
                    if p == start {
                        break;
                    }
                    path.push(p);
                    cur = p;
                }
                // path is start, n, ..., first successor (reversed after start)
                let mut body: Vec<NodeIndex> = path[1..].to_vec();
                body.reverse();
                let mut out = vec![start];
                out.extend(body);
                out.push(start);
                return out;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(m) {
                e.insert(n);
                queue.push_back(m);
            }
        }
    }
    vec![start, start]
}

#[derive(Debug)]
enum ExtractError {
    NoFiles {
        pattern: String,
        store: String,
        url: String,
    },
    Storage(StorageError),
    Infer {
        file: String,
        error: String,
    },
    /// Files that store a column with different types, and no `schema:` type for it.
    TypeConflict {
        column: String,
        first: (String, DataType),
        other: (String, DataType),
    },
    UnknownColumn {
        column: String,
        known: Vec<String>,
    },
    ColumnCount {
        declared: usize,
        found: usize,
    },
}

/// List an extract's files and work out its schema: inferred from a sample, with the
/// declared types applied. Returns (files, table schema, read schema).
async fn infer_extract(
    state: &datafusion::execution::session_state::SessionState,
    cache: Option<&dyn SchemaCache>,
    _name: &str,
    store: &Arc<Store>,
    glob: &FileGlob,
    format: &InputFormat,
    declared: &[(String, DataType)],
) -> Result<(Vec<object_store::ObjectMeta>, SchemaRef, SchemaRef), ExtractError> {
    let files = store.list(glob).await.map_err(ExtractError::Storage)?;
    if files.is_empty() {
        return Err(ExtractError::NoFiles {
            pattern: glob.pattern.clone(),
            store: store.name.clone(),
            url: store.display_url.clone(),
        });
    }
    let sample: &[object_store::ObjectMeta] = match format.kind {
        FileFormat::Parquet => &files[..files.len().min(PARQUET_SCHEMA_SAMPLE)],
        _ => &files,
    };
    let key = cache.map(|_| schema_key(store, sample, format, declared));
    let cached = match (cache, &key) {
        (Some(c), Some(k)) => c.schema(k).and_then(|bytes| {
            let fb = datafusion::arrow::ipc::root_as_schema(&bytes).ok()?;
            Some(Arc::new(datafusion::arrow::ipc::convert::fb_to_schema(fb)))
        }),
        _ => None,
    };
    let inferred = match cached {
        Some(s) => s,
        None => {
            let s = infer_sample(state, store, &files, sample, format, declared).await?;
            if let (Some(c), Some(k)) = (cache, &key) {
                c.put_schema(k, &schema_bytes(&s));
            }
            s
        }
    };
    // A UTF-8 byte order mark is not part of the first column's name.
    let inferred = match inferred.fields().first() {
        Some(f) if f.name().starts_with('\u{feff}') => {
            let mut fields: Vec<Field> = inferred.fields().iter().map(|f| f.as_ref().clone()).collect();
            let name = fields[0].name().trim_start_matches('\u{feff}').to_string();
            fields[0] = fields[0].clone().with_name(name);
            Arc::new(Schema::new(fields))
        }
        _ => inferred,
    };
    let schema = apply_declared(&inferred, declared, format)?;
    // Columns read with another type and converted after reading (`run::table::typed_columns`):
    // every CSV column as text when a `null` text must be told from values; CSV and JSON
    // decimals with all the digits past their scale that fit, as Arrow's parsers drop the
    // digits past the scale where SQL rounds on them.
    let read_type = |dt: &DataType| -> DataType {
        match (format.kind, dt) {
            (FileFormat::Csv, _) if format.csv.null.is_some() => DataType::Utf8,
            (FileFormat::Csv | FileFormat::Json, DataType::Decimal128(p, s)) if *p < 38 => {
                DataType::Decimal128(38, s + (38 - *p) as i8)
            }
            (FileFormat::Csv | FileFormat::Json, DataType::Decimal128(_, s)) => DataType::Decimal256(76, s + 38),
            (FileFormat::Csv | FileFormat::Json, DataType::Decimal256(p, s)) if *p < 76 => {
                DataType::Decimal256(76, s + (76 - *p) as i8)
            }
            _ => dt.clone(),
        }
    };
    let read_schema = if schema.fields().iter().any(|f| &read_type(f.data_type()) != f.data_type()) {
        Arc::new(Schema::new(
            schema.fields().iter().map(|f| Field::new(f.name(), read_type(f.data_type()), true)).collect::<Vec<_>>(),
        ))
    } else {
        schema.clone()
    };
    Ok((files, schema, read_schema))
}

/// The cache key of the schema inferred from `sample` with `format`: the files' identity
/// (path, size, ETag or modification time), every setting of the format, and the declared
/// types (which let Parquet files that disagree on a column's type be read together).
fn schema_key(
    store: &Store,
    sample: &[object_store::ObjectMeta],
    format: &InputFormat,
    declared: &[(String, DataType)],
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"weir-schema-2\0");
    h.update(store.display_url.as_bytes());
    h.update(format!("\0{format:?}\0{declared:?}\0").as_bytes());
    for m in sample {
        let version = m.e_tag.clone().unwrap_or_else(|| m.last_modified.to_rfc3339());
        h.update(format!("{}\0{}\0{version}\0", m.location, m.size).as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// A schema as Arrow IPC flatbuffer bytes (a `Schema` root; read back with `root_as_schema`).
fn schema_bytes(schema: &Schema) -> Vec<u8> {
    datafusion::arrow::ipc::convert::IpcSchemaEncoder::new().schema_to_fb(schema).finished_data().to_vec()
}

/// The schema of `sample` (of the extract's `files`), read from the files.
async fn infer_sample(
    state: &datafusion::execution::session_state::SessionState,
    store: &Arc<Store>,
    files: &[object_store::ObjectMeta],
    sample: &[object_store::ObjectMeta],
    format: &InputFormat,
    declared: &[(String, DataType)],
) -> Result<SchemaRef, ExtractError> {
    let df_format = format.file_format(true);
    let inferred = match df_format.infer_schema(state, &store.object_store, sample).await {
        Ok(s) => s,
        // Parquet files that store a column with different types (a column that widened):
        // each file's schema; a declared type reads them all (the reader casts each file's
        // values to it), else the first conflict is the error.
        Err(_) if format.kind == FileFormat::Parquet && sample.len() > 1 => {
            let mut merged: Vec<(Field, String)> = Vec::new();
            for f in sample {
                let one =
                    df_format.infer_schema(state, &store.object_store, std::slice::from_ref(f)).await.map_err(|e| {
                        ExtractError::Infer { file: store.relative(&f.location), error: e.strip_backtrace() }
                    })?;
                for field in one.fields() {
                    let declared_type = declared.iter().find(|(c, _)| c == field.name()).map(|(_, t)| t);
                    match merged.iter().find(|(m, _)| m.name() == field.name()) {
                        None => merged.push((field.as_ref().clone(), store.relative(&f.location))),
                        Some((m, _)) if m.data_type() == field.data_type() || declared_type.is_some() => {}
                        Some((m, first)) => {
                            return Err(ExtractError::TypeConflict {
                                column: field.name().clone(),
                                first: (first.clone(), m.data_type().clone()),
                                other: (store.relative(&f.location), field.data_type().clone()),
                            });
                        }
                    }
                }
            }
            Arc::new(Schema::new(merged.into_iter().map(|(f, _)| f).collect::<Vec<_>>()))
        }
        // Text files that disagree on a column's type (`1` in one, `1.5` in another; seconds
        // here, microseconds there): each file's schema, merged to the type that holds both.
        Err(datafusion::error::DataFusionError::ArrowError(e, _))
            if format.kind != FileFormat::Parquet
                && matches!(e.as_ref(), datafusion::arrow::error::ArrowError::SchemaError(_)) =>
        {
            let mut merged: Option<Schema> = None;
            for f in sample {
                let one =
                    df_format.infer_schema(state, &store.object_store, std::slice::from_ref(f)).await.map_err(|e| {
                        ExtractError::Infer { file: store.relative(&f.location), error: e.strip_backtrace() }
                    })?;
                merged = Some(match merged {
                    None => one.as_ref().clone(),
                    Some(m) => types::widen_schemas(&m, &one),
                });
            }
            Arc::new(merged.unwrap_or_else(Schema::empty))
        }
        // Malformed rows in the sample are the run's business (it names them, or sets them
        // aside with `bad_rows`), not the pipeline's: sample the rows that can be read.
        Err(_)
            if format.kind != FileFormat::Parquet
                && let Some(s) = infer_tolerant(store, &files[0], format).await =>
        {
            Arc::new(s)
        }
        Err(e) => {
            return Err(ExtractError::Infer {
                file: sample.first().map(|f| store.relative(&f.location)).unwrap_or_default(),
                error: e.strip_backtrace(),
            });
        }
    };
    Ok(inferred)
}

/// A directory inside a store (a load's output, a quarantine), normalized: no leading or
/// trailing `/`, no `.` or `..` segments, no glob characters. `None` when it is not one.
fn store_dir(raw: &str) -> Option<String> {
    let rel = raw.trim().trim_matches('/').trim_start_matches("./").to_string();
    let bad = rel.is_empty() || rel.split('/').any(|s| s == ".." || s == ".") || rel.contains(['*', '?', '[', '{']);
    (!bad).then_some(rel)
}

/// The schema of a text file some of whose first rows are malformed: CSV lines with the
/// header's number of fields (JSON lines that parse), from the first MiB of `file`.
async fn infer_tolerant(store: &Store, file: &object_store::ObjectMeta, format: &InputFormat) -> Option<Schema> {
    if format.compression != InputCompression::None {
        return None;
    }
    let end = file.size.min(1 << 20);
    let bytes = object_store::ObjectStoreExt::get_range(&store.object_store, &file.location, 0..end).await.ok()?;
    let text: &[u8] = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    // Whole lines only.
    let text = if end < file.size { &text[..memchr::memrchr(b'\n', text)? + 1] } else { text };
    match format.kind {
        FileFormat::Json => {
            let values = text
                .split(|b| *b == b'\n')
                .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
                .filter(|v| v.is_object())
                .take(format.infer_rows)
                .map(Ok::<_, datafusion::arrow::error::ArrowError>);
            datafusion::arrow::json::reader::infer_json_schema_from_iterator(values).ok()
        }
        FileFormat::Csv => {
            let c = &format.csv;
            let count = |line: &[u8]| -> usize {
                let mut r = c.reader();
                let mut out = [0u8; 8192];
                let mut ends = [0usize; 1024];
                let (_, _, _, n) = r.read_record(line, &mut out, &mut ends);
                if n > 0 {
                    return n;
                }
                let (_, _, _, m) = r.read_record(&[], &mut out, &mut ends);
                m
            };
            let mut lines = text.split_inclusive(|b| *b == b'\n');
            let mut kept: Vec<u8> = Vec::new();
            let mut width = 0;
            if c.header {
                let h = lines.next()?;
                kept.extend_from_slice(h);
                width = count(h);
            }
            for l in lines {
                let n = count(l);
                if width == 0 {
                    width = n;
                }
                if n == width && std::str::from_utf8(l).is_ok() {
                    kept.extend_from_slice(l);
                }
            }
            let mut f = datafusion::arrow::csv::reader::Format::default()
                .with_header(c.header)
                .with_delimiter(c.delimiter)
                .with_quote(c.quote);
            if let Some(e) = c.escape {
                f = f.with_escape(e);
            }
            if let Some(cm) = c.comment {
                f = f.with_comment(cm);
            }
            let (schema, _) = f.infer_schema(std::io::Cursor::new(kept), Some(format.infer_rows)).ok()?;
            Some(schema)
        }
        FileFormat::Parquet => None,
    }
}

fn apply_declared(
    inferred: &Schema,
    declared: &[(String, DataType)],
    format: &InputFormat,
) -> Result<SchemaRef, ExtractError> {
    if declared.is_empty() {
        return Ok(Arc::new(Schema::new(
            inferred.fields().iter().map(|f| Field::new(f.name(), f.data_type().clone(), true)).collect::<Vec<_>>(),
        )));
    }
    if format.kind == FileFormat::Csv && !format.csv.header {
        if declared.len() != inferred.fields().len() {
            return Err(ExtractError::ColumnCount { declared: declared.len(), found: inferred.fields().len() });
        }
        return Ok(Arc::new(Schema::new(
            declared.iter().map(|(n, t)| Field::new(n, t.clone(), true)).collect::<Vec<_>>(),
        )));
    }
    let known: Vec<String> = inferred.fields().iter().map(|f| f.name().clone()).collect();
    for (col, _) in declared {
        if !known.contains(col) {
            return Err(ExtractError::UnknownColumn { column: col.clone(), known });
        }
    }
    Ok(Arc::new(Schema::new(
        inferred
            .fields()
            .iter()
            .map(|f| {
                let t = declared
                    .iter()
                    .find(|(n, _)| n == f.name())
                    .map(|(_, t)| t.clone())
                    .unwrap_or_else(|| f.data_type().clone());
                Field::new(f.name(), t, true)
            })
            .collect::<Vec<_>>(),
    )))
}

/// (format, compression, is .tsv) from a path's extensions.
fn format_from_path(path: &str) -> (Option<FileFormat>, Option<InputCompression>, bool) {
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
    } else {
        None
    };
    (format, compression, rest.ends_with(".tsv"))
}

fn format_name(f: FileFormat) -> &'static str {
    match f {
        FileFormat::Csv => "CSV",
        FileFormat::Json => "JSON",
        FileFormat::Parquet => "Parquet",
    }
}

fn known_options(kind: &str) -> &'static [&'static str] {
    match kind {
        "S3" => &[
            "access_key_id",
            "secret_access_key",
            "session_token",
            "region",
            "endpoint",
            "bucket",
            "virtual_hosted_style_request",
            "allow_http",
            "skip_signature",
            "unsigned_payload",
            "checksum_algorithm",
            "conditional_put",
            "imdsv1_fallback",
            "default_region",
            "s3_express",
            "request_payer",
            "timeout",
            "connect_timeout",
            "proxy_url",
        ],
        "GCS" => &[
            "service_account_path",
            "service_account_key",
            "application_credentials",
            "bucket",
            "timeout",
            "proxy_url",
        ],
        "Azure" => &[
            "account_name",
            "access_key",
            "client_id",
            "client_secret",
            "tenant_id",
            "sas_token",
            "token",
            "use_emulator",
            "endpoint",
            "use_fabric_endpoint",
            "container_name",
            "timeout",
            "proxy_url",
        ],
        _ => &[],
    }
}

/// DataFusion messages without their category prefixes.
pub fn clean_df_message(m: &str) -> String {
    let mut s = m.trim().to_string();
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "SQL error: ",
        "Execution error: ",
        "Arrow error: ",
        "This feature is not implemented: ",
        "type_coercion\ncaused by\n",
        "Optimizer rule 'type_coercion' failed\ncaused by\n",
        "Context(\"type_coercion\", ",
    ] {
        while let Some(rest) = s.strip_prefix(prefix) {
            s = rest.to_string();
        }
    }
    s.replace("\ncaused by\n", ": ")
}

/// Identifiers quoted in a message ('x', "x" or `x`).
fn quoted_names(m: &str) -> Vec<String> {
    let re = regex::Regex::new(r#"(?:No field named|column) ['"`]?([A-Za-z_][A-Za-z0-9_.]*)['"`]?"#);
    match re {
        Ok(re) => re.captures_iter(m).map(|c| c[1].to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Byte offset of `word` in `sql` as a whole identifier (case-insensitive).
fn find_word(sql: &str, word: &str) -> Option<usize> {
    let lower = sql.to_lowercase();
    let w = word.to_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(&w) {
        let at = from + i;
        let before = lower[..at].chars().next_back();
        let after = lower[at + w.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !ident(before) && !ident(after) {
            return Some(at);
        }
        from = at + w.len();
    }
    None
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

    #[test]
    fn finds_whole_words() {
        assert_eq!(find_word("SELECT ab, a FROM t", "a"), Some(11));
        assert_eq!(find_word("SELECT x", "y"), None);
    }
}
