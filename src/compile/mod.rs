//! `compile`: a parsed pipeline → a [`Plan`]. Resolves stores and names, infers
//! dependencies from SQL, detects cycles, infers extract schemas (file footers or a bounded
//! sample) and plans every transform against its inputs' schemas. No data is read beyond
//! those samples. Every problem found is reported, each with its place in the file.

mod checks;
pub mod engine;
mod extract;
mod fixtures;
pub use extract::UNREACHABLE;
mod graph;
mod http;
pub mod lineage;
mod loads;
mod memo;
pub mod openlineage;
pub mod plan;
mod queries;
pub mod schedule;
pub mod sql;
mod stores;
pub use crate::source::SchemaCache;
pub use crate::types;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::DataFusionError;
use datafusion::datasource::empty::EmptyTable;
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use futures::StreamExt;
use petgraph::graph::{DiGraph, NodeIndex};

pub use engine::{BallistaPlan, EnginePlan};
pub use plan::*;
pub use queries::clean_df_message;

use graph::*;
use queries::*;
use stores::*;

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
    /// A table or query of a database.
    DbExtract {
        store: crate::source::database::DbStore,
        relation: crate::source::database::Relation,
        declared: Vec<(String, DataType)>,
        partition: Option<crate::source::database::Partition>,
        incremental: Option<spec::Incremental>,
        cdc: Option<crate::source::postgres::cdc::CdcPlan>,
    },
    /// The pages of an HTTP API.
    HttpExtract {
        store: Arc<crate::source::http::HttpStore>,
        request: crate::source::http::Request,
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

/// Compile one pipeline.
pub async fn compile(p: &LoadedPipeline) -> Result<Plan, CompileError> {
    compile_cached(p, None).await
}

/// Compile one pipeline, with inferred schemas cached in `cache`.
pub async fn compile_cached(p: &LoadedPipeline, cache: Option<&dyn SchemaCache>) -> Result<Plan, CompileError> {
    compile_prefetched(p, cache, None).await
}

/// The queries an earlier compile of a pipeline file parsed and planned, being read from the
/// cache on another thread (see `memo`): started before the file is parsed, both happen at
/// once.
pub struct Prefetch {
    key: String,
    /// `None`: no thread could be started; read when compiling.
    memo: Option<std::thread::JoinHandle<memo::MemoUse>>,
}

/// Start reading what earlier compiles of the pipeline file at `path` planned.
pub fn prefetch(cache: &dyn SchemaCache, path: &std::path::Path) -> Prefetch {
    let key = memo_key(path);
    let bytes = cache.schema(&key);
    let memo =
        std::thread::Builder::new().name("weir-memo".into()).spawn(move || memo::MemoUse::from_bytes(bytes)).ok();
    Prefetch { key, memo }
}

/// Where the cache keeps what compiles of the pipeline file at `path` planned.
fn memo_key(path: &std::path::Path) -> String {
    let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    format!("compiled-queries:{}", file.display())
}

/// [`compile_cached`], with what earlier compiles planned read by `prefetch` (started with
/// [`prefetch`] on this pipeline's file).
pub async fn compile_prefetched(
    p: &LoadedPipeline,
    cache: Option<&dyn SchemaCache>,
    prefetch: Option<Prefetch>,
) -> Result<Plan, CompileError> {
    let memo_key = memo_key(&p.source.path);
    let memo = match (cache, prefetch) {
        (None, _) => memo::MemoUse::default(),
        (Some(c), Some(Prefetch { key, memo: Some(thread) })) if key == memo_key => {
            thread.join().unwrap_or_else(|_| memo::MemoUse::load(c, &memo_key))
        }
        (Some(c), _) => memo::MemoUse::load(c, &memo_key),
    };
    // Problems the spec stage found are reported together with compile's own.
    let mut c =
        Compiler { p, diags: p.problems.clone(), cache, databases: Default::default(), apis: Default::default(), memo };
    let plan = c.run().await;
    if let Some(cache) = cache {
        let memo = std::mem::take(&mut c.memo);
        tracing::debug!(pipeline = %p.name, planned = memo.misses, "compile: queries planned or parsed anew");
        memo.save(cache, &memo_key);
    }
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
    /// Database stores, by name (object stores are `stores()`' answer).
    databases: indexmap::IndexMap<String, crate::source::database::DbStore>,
    /// HTTP API stores, by name.
    apis: indexmap::IndexMap<String, Arc<crate::source::http::HttpStore>>,
    /// Queries parsed and planned by earlier compiles (see `memo`).
    memo: memo::MemoUse,
}

impl Compiler<'_> {
    /// The phases, in order. Each reports every problem it finds and goes on where it can, so
    /// that one `validate` shows every problem that does not depend on another.
    async fn run(&mut self) -> Option<Plan> {
        let p = self.p;
        let clock = std::time::Instant::now();
        let phase = |what: &str| tracing::debug!(pipeline = %p.name, ms = clock.elapsed().as_millis() as u64, "compile: {what}");
        let stores = self.stores();
        let watch = schedule::compile_watch(p, &mut self.diags);
        let openlineage = openlineage::compile(p, &mut self.diags);
        let engine = engine::compile_engine(p, &stores, &mut self.diags);
        let ctx = SessionContext::new_with_state(session_state(session_config(), Default::default()));
        let state = ctx.state();
        // Task names in file order (for suggestions) and as a set (for lookups).
        let names: indexmap::IndexSet<&str> = p.spec.tasks.keys().chain(p.broken.iter()).map(String::as_str).collect();
        let loads: HashSet<&str> =
            p.spec.tasks.iter().filter(|(_, t)| t.load.is_some()).map(|(n, _)| n.as_str()).collect();

        let drafts = self.drafts(&state, &stores, &names, &loads);
        self.check_load_targets(&drafts);
        let mut g = self.graph(drafts, &names)?;
        phase("graph built");

        let mut schemas: HashMap<NodeIndex, SchemaRef> = HashMap::new();
        let mut sources = self.infer_extracts(&state, &g, &mut schemas).await;
        phase("extract schemas inferred");
        let mut lineages = HashMap::new();
        let needed = self.plan_transforms(&ctx, &state, &mut g, &mut schemas, &mut lineages);
        self.plan_loads(&state, &g, &mut schemas);
        if self.diags.is_empty() {
            self.check_tables(&g, &schemas).await;
        }
        let mut incremental = self.incremental_plans(&g, &schemas);
        self.check_incremental_loads(&g.graph, &g.order, &incremental);
        self.check_tests(&g, &schemas);
        let (mut checks, mut quarantines) =
            self.plan_checks(&state, &g, &schemas, &incremental, &stores, &names, &loads);
        phase("queries planned");
        if !self.diags.is_empty() {
            return None;
        }

        self.complete_lineage(&state, &g, &schemas, &checks, &mut lineages);
        prune_database_columns(&g, &mut sources.databases, &needed, &checks, &incremental);
        let how = g.executions(&checks);
        let final_graph = g.graph.map_owned(
            |i, d| {
                let schema = schemas.get(&i).cloned().unwrap_or_else(|| Arc::new(Schema::empty()));
                let kind = match d.kind {
                    DraftKind::Extract { store, glob, format, declared, .. } => {
                        let (listed, read_schema) =
                            sources.files.remove(&i).unwrap_or_else(|| (Vec::new(), Arc::new(Schema::empty())));
                        TaskKind::Extract(ExtractPlan {
                            source: crate::source::SourcePlan::Files(crate::source::files::FilesPlan {
                                store,
                                glob,
                                format,
                                read_schema,
                                declared: declared.into_iter().map(|(c, _)| c).collect(),
                                files: listed,
                            }),
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
                    DraftKind::DbExtract { .. } => match sources.databases.remove(&i) {
                        Some(plan) => TaskKind::Extract(ExtractPlan {
                            source: crate::source::SourcePlan::Database(plan),
                            incremental: incremental.remove(&i),
                            bad_rows: Default::default(),
                        }),
                        None => unreachable!("compile reports database sources it could not describe"),
                    },
                    DraftKind::HttpExtract { .. } => match sources.apis.remove(&i) {
                        Some(plan) => TaskKind::Extract(ExtractPlan {
                            source: crate::source::SourcePlan::Http(plan),
                            incremental: incremental.remove(&i),
                            bad_rows: Default::default(),
                        }),
                        None => unreachable!("compile reports HTTP sources it could not describe"),
                    },
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
                    lineage: lineages.remove(&i).unwrap_or_default(),
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
        plan.tests = p.spec.tests.clone();
        plan.openlineage = openlineage;
        Some(plan)
    }

    /// Every task drafted: its kind's keys resolved, its query parsed and sandboxed (all
    /// queries first, on all cores: each is independent). Tasks the spec stage could not
    /// read are drafted as broken, so that references to them resolve.
    fn drafts(
        &mut self,
        state: &SessionState,
        stores: &indexmap::IndexMap<String, Arc<Store>>,
        names: &indexmap::IndexSet<&str>,
        loads: &HashSet<&str>,
    ) -> Vec<Draft> {
        let p = self.p;
        // Queries parsed by an earlier compile are not parsed again, unless a table they read
        // is not a task's (its error needs the parse's places).
        let mut parsed: HashMap<&str, Vec<String>> = HashMap::new();
        for (n, t) in &p.spec.tasks {
            if let Some(tr) = &t.transform
                && let Some(tables) = self.memo.parsed(&tr.sql)
                && tables.iter().all(|t| names.contains(t.as_str()) && !loads.contains(t.as_str()))
            {
                parsed.insert(n.as_str(), tables.to_vec());
            }
        }
        let queries: Vec<(&str, &str)> = p
            .spec
            .tasks
            .iter()
            .filter(|(n, _)| !parsed.contains_key(n.as_str()))
            .filter_map(|(n, t)| t.transform.as_ref().map(|tr| (n.as_str(), tr.sql.as_str())))
            .collect();
        let mut analyses: HashMap<&str, Result<sql::Analyzed, Vec<sql::SqlIssue>>> =
            par_map(queries, |(name, query)| (name, sql::analyze(state, query))).into_iter().collect();
        let mut drafts = Vec::with_capacity(p.spec.tasks.len() + p.broken.len());
        for (position, (name, task)) in p.spec.tasks.iter().enumerate() {
            let kind = if let Some(e) = &task.extract {
                self.draft_extract(name, e, stores)
            } else if let Some(t) = &task.transform {
                match parsed.remove(name.as_str()) {
                    Some(inputs) => DraftKind::Transform { sql: t.sql.clone(), statement: None, inputs },
                    None => {
                        let kind = self.draft_transform(name, t, analyses.remove(name.as_str()), names, loads);
                        if let DraftKind::Transform { inputs, .. } = &kind {
                            self.memo.add_parsed(&t.sql, inputs.clone());
                        }
                        kind
                    }
                }
            } else if let Some(l) = &task.load {
                let kind = self.draft_load(name, l, stores, names, loads);
                self.check_mode(name, l);
                kind
            } else {
                DraftKind::Broken
            };
            let check_inputs = self.check_inputs(state, name, task, names, loads);
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
            drafts.push(Draft {
                name: name.clone(),
                position: drafts.len(),
                description: None,
                policy: p.task_policy(&Task::default()),
                kind: DraftKind::Broken,
                check_inputs: Vec::new(),
            });
        }
        drafts
    }
}

/// Push what the transforms read into each database extract's statement: when every task
/// reading the extract is a transform (and no check reads it), only the columns their planned
/// queries read — with the partition and watermark columns — cross the wire, and only the
/// rows that meet the filters each scan of the extract has (one scan's filters that can be
/// written for the server, OR the next scan's; see `database::condition`). Anything else (a
/// load, a check, `SELECT *` kept to the end, a scan without filters) reads every column or
/// row; change data capture reads every row (a filtered change stream would lose deletes).
fn prune_database_columns(
    g: &TaskGraph,
    databases: &mut HashMap<NodeIndex, crate::source::database::DbPlan>,
    needed: &queries::Scans,
    checks: &HashMap<NodeIndex, Vec<CheckPlan>>,
    incremental: &HashMap<NodeIndex, IncrementalPlan>,
) {
    use petgraph::visit::EdgeRef;
    for (&i, plan) in databases.iter_mut() {
        let name = &g.graph[i].name;
        let only_queries = g.graph.edges_directed(i, petgraph::Direction::Outgoing).all(|e| {
            let consumer = &g.graph[e.target()];
            matches!(consumer.kind, DraftKind::Transform { .. }) && !consumer.check_inputs.contains(name)
        });
        let Some(reads) = needed.get(name.as_str()) else { continue };
        if !only_queries || checks.get(&i).is_some_and(|c| !c.is_empty()) {
            continue;
        }
        if plan.cdc().is_none()
            && let Some(scans) = &reads.rows
        {
            let mut conditions: Vec<String> = Vec::new();
            for filters in scans {
                let parts: Vec<String> = filters.iter().filter_map(|f| plan.condition(f)).collect();
                if parts.is_empty() {
                    conditions.clear();
                    break;
                }
                let one = parts.join(" AND ");
                if !conditions.contains(&one) {
                    conditions.push(one);
                }
            }
            if !conditions.is_empty() {
                let pushed = if conditions.len() == 1 {
                    conditions.remove(0)
                } else {
                    format!("({})", conditions.join(") OR ("))
                };
                *plan = plan.with_pushed(pushed);
            }
        }
        let Some(cols) = &reads.columns else { continue };
        let mut keep = cols.clone();
        keep.extend(plan.partition().map(|p| p.column.clone()));
        keep.extend(incremental.get(&i).and_then(|inc| inc.watermark.as_ref()).map(|w| w.column.clone()));
        // A count reads no column: the first is read, to count its rows.
        let names = plan.column_names();
        if names.iter().filter(|n| keep.contains(*n)).count() < names.len() {
            *plan = plan.with_columns(&keep.into_iter().collect::<Vec<_>>());
        }
    }
}
