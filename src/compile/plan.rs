//! `Plan`: the compiled pipeline. A petgraph DAG of tasks with resolved stores, file
//! formats and output schemas; edges point from a task to the tasks that need it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::diag::SourceFile;
use crate::secrets::Secrets;
use datafusion::common::ScalarValue;

pub use crate::source::SourcePlan;
pub use crate::source::files::{CsvSettings, FilesPlan, InputFormat};
use crate::spec::{LoadMode, OnSchemaChange, OutputCompression, OutputFormat, Severity, TaskPolicy};
use crate::storage::Store;

/// A compiled pipeline, ready to run.
#[derive(Debug)]
pub struct Plan {
    pub pipeline: String,
    pub description: Option<String>,
    pub source: Arc<SourceFile>,
    pub graph: DiGraph<TaskNode, Edge>,
    /// Tasks in a run order: topological, ties broken by file order.
    pub order: Vec<NodeIndex>,
    pub stores: Vec<Arc<Store>>,
    pub max_parallel: usize,
    pub secrets: Secrets,
    /// Schedule, webhooks and freshness (used by `weir serve`).
    pub watch: super::schedule::Watch,
    /// Where the SQL runs (`engine`).
    pub engine: super::engine::EnginePlan,
    /// The pipeline's tests (`weir test`).
    pub tests: Vec<crate::spec::TestCase>,
    /// Where OpenLineage events go (`openlineage`).
    pub openlineage: Option<super::openlineage::OpenLineagePlan>,
    by_name: HashMap<String, NodeIndex>,
    /// Per task, the incremental extracts it reads through (itself included), in run order.
    incremental_sources: HashMap<NodeIndex, Vec<NodeIndex>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The downstream task reads the upstream task's table.
    Data,
    /// `depends_on`: ordering only.
    Order,
}

#[derive(Debug)]
pub struct TaskNode {
    pub name: String,
    pub description: Option<String>,
    pub kind: TaskKind,
    /// The task's table as SQL sees it (for loads: the schema written).
    pub schema: SchemaRef,
    pub policy: TaskPolicy,
    /// Position among the tasks of the pipeline file (0 = first).
    pub position: usize,
    /// The task's gates (extracts and transforms), evaluated before anything downstream runs.
    pub checks: Vec<CheckPlan>,
    /// Where rows failing row-level checks go, with `on_check_failure: quarantine`.
    pub quarantine: Option<QuarantinePlan>,
    /// Where its columns come from (see `lineage`).
    pub lineage: super::lineage::TaskLineage,
}

/// A compiled check (see `spec::Check`).
#[derive(Debug, Clone)]
pub struct CheckPlan {
    pub name: String,
    pub kind: CheckKind,
    pub severity: Severity,
    /// When the check fails; `None`: never (a warning check, or a quarantining one).
    pub error_if: Option<Threshold>,
    /// When the check warns, if it does not fail.
    pub warn_if: Option<Threshold>,
}

#[derive(Debug, Clone)]
pub enum CheckKind {
    NotNull(Vec<String>),
    Unique(Vec<String>),
    /// Values already cast to the column's type.
    AcceptedValues {
        column: String,
        values: Vec<ScalarValue>,
    },
    /// A condition on the row's own columns (`${vars}` substituted).
    Expression(String),
    RowCount {
        min: Option<u64>,
        max: Option<u64>,
    },
    Relationships {
        column: String,
        to: String,
        field: String,
    },
    Freshness {
        column: String,
        max_age: std::time::Duration,
    },
    /// Expected columns and their types.
    Schema(Vec<(String, DataType)>),
    Sql(String),
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::NotNull(_) => "not_null",
            CheckKind::Unique(_) => "unique",
            CheckKind::AcceptedValues { .. } => "accepted_values",
            CheckKind::Expression(_) => "expression",
            CheckKind::RowCount { .. } => "row_count",
            CheckKind::Relationships { .. } => "relationships",
            CheckKind::Freshness { .. } => "freshness",
            CheckKind::Schema(_) => "schema",
            CheckKind::Sql(_) => "sql",
        }
    }

    /// Judges rows one by one: its failing rows can be quarantined.
    pub fn row_level(&self) -> bool {
        matches!(
            self,
            CheckKind::NotNull(_)
                | CheckKind::Unique(_)
                | CheckKind::AcceptedValues { .. }
                | CheckKind::Expression(_)
                | CheckKind::Relationships { .. }
        )
    }

    /// Counts failing rows, so that thresholds apply.
    pub fn counts_rows(&self) -> bool {
        self.row_level() || matches!(self, CheckKind::Sql(_))
    }
}

/// `error_if` / `warn_if`: a comparison of the failing rows with a count or a share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub op: ThresholdOp,
    pub amount: Amount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Count(u64),
    /// Percent of the rows checked.
    Percent(f64),
}

impl Threshold {
    /// `"> 0"`, `">= 10"`, `"> 1%"`, `"!= 0"`, `"<=2.5 %"`.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let t = text.trim();
        let (op, rest) = [
            (">=", ThresholdOp::Ge),
            ("<=", ThresholdOp::Le),
            ("!=", ThresholdOp::Ne),
            ("<>", ThresholdOp::Ne),
            ("==", ThresholdOp::Eq),
            (">", ThresholdOp::Gt),
            ("<", ThresholdOp::Lt),
            ("=", ThresholdOp::Eq),
        ]
        .into_iter()
        .find_map(|(p, op)| t.strip_prefix(p).map(|r| (op, r.trim())))
        .ok_or_else(|| format!("`{text}` does not start with one of > >= < <= = !="))?;
        let amount = match rest.strip_suffix('%') {
            Some(pct) => {
                let v: f64 = pct.trim().parse().map_err(|_| format!("`{}` is not a percentage", pct.trim()))?;
                if !(0.0..=100.0).contains(&v) {
                    return Err(format!("{v}% is not between 0% and 100%"));
                }
                Amount::Percent(v)
            }
            None => Amount::Count(rest.parse().map_err(|_| format!("`{rest}` is not a whole number of rows"))?),
        };
        Ok(Threshold { op, amount })
    }

    /// Whether `failing` of `checked` rows meet the threshold.
    pub fn met(&self, failing: u64, checked: u64) -> bool {
        let cmp = |a: f64, b: f64| match self.op {
            ThresholdOp::Gt => a > b,
            ThresholdOp::Ge => a >= b,
            ThresholdOp::Lt => a < b,
            ThresholdOp::Le => a <= b,
            ThresholdOp::Eq => a == b,
            ThresholdOp::Ne => a != b,
        };
        match self.amount {
            Amount::Count(n) => match self.op {
                ThresholdOp::Gt => failing > n,
                ThresholdOp::Ge => failing >= n,
                ThresholdOp::Lt => failing < n,
                ThresholdOp::Le => failing <= n,
                ThresholdOp::Eq => failing == n,
                ThresholdOp::Ne => failing != n,
            },
            // The share of an empty table is 0%.
            Amount::Percent(p) => {
                let share = if checked == 0 { 0.0 } else { failing as f64 * 100.0 / checked as f64 };
                cmp(share, p)
            }
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            ThresholdOp::Gt => ">",
            ThresholdOp::Ge => ">=",
            ThresholdOp::Lt => "<",
            ThresholdOp::Le => "<=",
            ThresholdOp::Eq => "=",
            ThresholdOp::Ne => "!=",
        };
        match self.amount {
            Amount::Count(n) => write!(f, "{op} {n}"),
            Amount::Percent(p) => write!(f, "{op} {p}%"),
        }
    }
}

/// Where quarantined rows are written: `<path>/<pipeline>/<task>/<run_id>.parquet` in `store`.
#[derive(Debug, Clone)]
pub struct QuarantinePlan {
    pub store: Arc<Store>,
    /// Relative to the store root, without leading or trailing `/`.
    pub path: String,
    /// Rows failing row-level checks are quarantined (`on_check_failure: quarantine`); else
    /// only malformed input rows are (`bad_rows: quarantine`).
    pub checks: bool,
}

#[derive(Debug)]
pub enum TaskKind {
    Extract(ExtractPlan),
    Transform(TransformPlan),
    Load(LoadPlan),
}

impl TaskKind {
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Extract(_) => "extract",
            TaskKind::Transform(_) => "transform",
            TaskKind::Load(_) => "load",
        }
    }
}

#[derive(Debug)]
pub struct ExtractPlan {
    /// What is read and how: one kind of source (see `source`).
    pub source: SourcePlan,
    pub incremental: Option<IncrementalPlan>,
    pub bad_rows: crate::spec::BadRowsMode,
}

/// What an incremental extract reads (see `spec::Incremental`).
#[derive(Debug, Clone)]
pub struct IncrementalPlan {
    pub new_files: bool,
    pub watermark: Option<WatermarkPlan>,
    /// Changes captured from the database's log (the source plan holds the slot).
    pub cdc: bool,
}

#[derive(Debug, Clone)]
pub struct WatermarkPlan {
    pub column: String,
    /// The column's type in the extract's table; the watermark is a value of this type.
    pub data_type: DataType,
    pub lookback: Option<Lookback>,
}

/// How far behind the watermark rows are read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookback {
    /// For timestamp and date columns.
    Duration(std::time::Duration),
    /// For integer and decimal columns, in the column's unit.
    Number(i64),
}

impl ExtractPlan {
    /// The plan of a files source; `None` for other kinds of source.
    pub fn files(&self) -> Option<&FilesPlan> {
        match &self.source {
            SourcePlan::Files(f) => Some(f),
            _ => None,
        }
    }

    /// Bytes of the files to read (0 for sources that are not files).
    pub fn bytes(&self) -> u64 {
        self.files().map_or(0, FilesPlan::bytes)
    }
}

#[derive(Debug)]
pub struct TransformPlan {
    /// The query, `${vars}` substituted.
    pub sql: String,
    /// Tasks the query reads, sorted.
    pub inputs: Vec<String>,
    pub execution: Execution,
}

/// How a transform runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// Its query is inlined into its one consumer's plan (or nothing reads it).
    Fused,
    /// Several tasks read it: computed once per run into the staging area.
    Shared,
    /// It ends a chain of `MAX_FUSED_DEPTH` fused queries: computed into the staging area.
    ChainBreak,
    /// It has checks: computed once, so that the checks and its consumers read the same rows.
    Checked,
}

impl Execution {
    pub fn materialized(&self) -> bool {
        *self != Execution::Fused
    }
}

#[derive(Debug)]
pub struct LoadPlan {
    pub from: String,
    pub mode: LoadMode,
    /// Parquet: the columns whose values make directories; Delta: partition columns; a
    /// database table: the columns whose values `replace_partitions` replaces.
    pub partition_by: Vec<String>,
    /// `mode: merge`: key columns, tie-breaking columns and the delete condition.
    pub keys: Vec<String>,
    pub order_by: Vec<String>,
    pub delete_when: Option<String>,
    /// Where the rows go.
    pub target: LoadTarget,
}

/// What a load writes: files (Parquet, Delta) or a database table.
#[derive(Debug)]
pub enum LoadTarget {
    Files(FilesTarget),
    Table(TableTarget),
}

/// A Parquet directory or Delta table in a file or object store.
#[derive(Debug)]
pub struct FilesTarget {
    pub store: Arc<Store>,
    /// Directory relative to the store root, without leading or trailing `/`.
    pub path: String,
    pub format: OutputFormat,
    pub compression: OutputCompression,
    /// The codec's level (`zstd`, `gzip`; unused by the others).
    pub compression_level: u32,
    pub row_group_rows: usize,
    pub max_rows_per_file: usize,
}

/// A table of a database store.
#[derive(Debug)]
pub struct TableTarget {
    pub store: crate::source::database::DbStore,
    /// The table as written in the pipeline (`analytics.orders`).
    pub table: String,
    pub on_schema_change: OnSchemaChange,
}

impl LoadPlan {
    /// The file output; `None` for a database table.
    pub fn files(&self) -> Option<&FilesTarget> {
        match &self.target {
            LoadTarget::Files(f) => Some(f),
            LoadTarget::Table(_) => None,
        }
    }

    /// The kind of output: `parquet`, `delta`, or the database's (`postgres`, `mysql`).
    pub fn target_kind(&self) -> &'static str {
        match &self.target {
            LoadTarget::Files(f) => match f.format {
                OutputFormat::Parquet => "parquet",
                OutputFormat::Delta => "delta",
            },
            LoadTarget::Table(t) => t.store.kind().id(),
        }
    }

    /// The output as `weir plan` and messages name it: `store: path/` or `store: table`.
    pub fn describe_target(&self) -> String {
        match &self.target {
            LoadTarget::Files(f) => format!("{}: {}/", f.store.name, f.path),
            LoadTarget::Table(t) => format!("{}: table {}", t.store.name(), t.table),
        }
    }
}

impl Plan {
    pub(crate) fn new(
        pipeline: String,
        description: Option<String>,
        source: Arc<SourceFile>,
        graph: DiGraph<TaskNode, Edge>,
        stores: Vec<Arc<Store>>,
        max_parallel: usize,
        secrets: Secrets,
    ) -> Plan {
        let by_name = graph.node_indices().map(|i| (graph[i].name.clone(), i)).collect();
        let order = stable_topo_order(&graph, |t| t.position).unwrap_or_default();
        let mut plan = Plan {
            pipeline,
            description,
            source,
            graph,
            order,
            stores,
            max_parallel,
            secrets,
            watch: Default::default(),
            engine: Default::default(),
            tests: Vec::new(),
            openlineage: None,
            by_name,
            incremental_sources: HashMap::new(),
        };
        let sources = incremental_sources(
            &plan.graph,
            &plan.order,
            |i| matches!(&plan.graph[i].kind, TaskKind::Extract(e) if e.incremental.is_some()),
            |t| t.position,
        );
        plan.incremental_sources = sources;
        plan
    }

    /// The incremental extracts whose rows reach task `i` (`i` itself if it is one).
    pub fn incremental_sources(&self, i: NodeIndex) -> &[NodeIndex] {
        self.incremental_sources.get(&i).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn index_of(&self, name: &str) -> Option<NodeIndex> {
        self.by_name.get(name).copied()
    }

    pub fn task(&self, i: NodeIndex) -> &TaskNode {
        &self.graph[i]
    }

    pub fn tasks(&self) -> impl Iterator<Item = &TaskNode> {
        self.order.iter().map(|i| &self.graph[*i])
    }

    /// Names of the tasks `i` depends on (data and ordering), sorted.
    pub fn upstream_names(&self, i: NodeIndex) -> Vec<&str> {
        let mut v: Vec<&str> =
            self.graph.neighbors_directed(i, Direction::Incoming).map(|n| self.graph[n].name.as_str()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Names of the tasks that read `i`'s table, sorted.
    pub fn consumers(&self, i: NodeIndex) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .graph
            .edges_directed(i, Direction::Outgoing)
            .filter(|e| *e.weight() == Edge::Data)
            .map(|e| self.graph[e.target()].name.as_str())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The transforms whose queries run inside task `i`'s query: its fused inputs, theirs,
    /// and so on (sorted by name).
    pub fn fused_into(&self, i: NodeIndex) -> Vec<String> {
        let mut out = Vec::new();
        let mut queue: VecDeque<NodeIndex> = VecDeque::from([i]);
        while let Some(n) = queue.pop_front() {
            for e in self.graph.edges_directed(n, Direction::Incoming) {
                let up = e.source();
                if *e.weight() == Edge::Data
                    && let TaskKind::Transform(t) = &self.graph[up].kind
                    && !t.execution.materialized()
                    && !out.contains(&self.graph[up].name)
                {
                    out.push(self.graph[up].name.clone());
                    queue.push_back(up);
                }
            }
        }
        out.sort();
        out
    }

    /// Every task `i` transitively depends on.
    pub fn ancestors(&self, i: NodeIndex) -> HashSet<NodeIndex> {
        self.reach(i, Direction::Incoming)
    }

    /// Every task transitively depending on `i`.
    pub fn descendants(&self, i: NodeIndex) -> HashSet<NodeIndex> {
        self.reach(i, Direction::Outgoing)
    }

    fn reach(&self, i: NodeIndex, dir: Direction) -> HashSet<NodeIndex> {
        let mut seen = HashSet::new();
        let mut queue: VecDeque<NodeIndex> = self.graph.neighbors_directed(i, dir).collect();
        while let Some(n) = queue.pop_front() {
            if seen.insert(n) {
                queue.extend(self.graph.neighbors_directed(n, dir));
            }
        }
        seen
    }

    /// Graphviz DOT of the DAG.
    pub fn to_dot(&self) -> String {
        let mut s = format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n", self.pipeline);
        for i in &self.order {
            let t = &self.graph[*i];
            let shape = match t.kind {
                TaskKind::Extract(_) => "cylinder",
                TaskKind::Transform(_) => "box",
                TaskKind::Load(_) => "folder",
            };
            s.push_str(&format!("  \"{}\" [shape={shape}, label=\"{}\\n({})\"];\n", t.name, t.name, t.kind.name()));
        }
        for e in self.sorted_edges() {
            let style = if e.2 == Edge::Order { " [style=dashed]" } else { "" };
            s.push_str(&format!("  \"{}\" -> \"{}\"{style};\n", e.0, e.1));
        }
        s.push_str("}\n");
        s
    }

    /// Mermaid flowchart of the DAG.
    pub fn to_mermaid(&self) -> String {
        let mut s = String::from("flowchart LR\n");
        for i in &self.order {
            let t = &self.graph[*i];
            let (open, close) = match t.kind {
                TaskKind::Extract(_) => ("[(", ")]"),
                TaskKind::Transform(_) => ("[", "]"),
                TaskKind::Load(_) => ("[/", "/]"),
            };
            s.push_str(&format!("  {}{open}\"{} ({})\"{close}\n", t.name, t.name, t.kind.name()));
        }
        for e in self.sorted_edges() {
            let arrow = if e.2 == Edge::Order { "-.->" } else { "-->" };
            s.push_str(&format!("  {} {arrow} {}\n", e.0, e.1));
        }
        s
    }

    fn sorted_edges(&self) -> Vec<(&str, &str, Edge)> {
        let pos: HashMap<NodeIndex, usize> = self.order.iter().enumerate().map(|(k, i)| (*i, k)).collect();
        let mut edges: Vec<(usize, usize, &str, &str, Edge)> = self
            .graph
            .edge_references()
            .map(|e| {
                (
                    pos[&e.source()],
                    pos[&e.target()],
                    self.graph[e.source()].name.as_str(),
                    self.graph[e.target()].name.as_str(),
                    *e.weight(),
                )
            })
            .collect();
        edges.sort_by_key(|e| (e.0, e.1));
        edges.dedup_by_key(|e| (e.0, e.1));
        edges.into_iter().map(|e| (e.2, e.3, e.4)).collect()
    }
}

/// For every task with any, the incremental extracts whose rows reach it through data edges
/// (itself included), ordered by `key`. `order` is topological.
pub(crate) fn incremental_sources<N, K: Ord>(
    graph: &DiGraph<N, Edge>,
    order: &[NodeIndex],
    is_incremental: impl Fn(NodeIndex) -> bool,
    key: impl Fn(&N) -> K,
) -> HashMap<NodeIndex, Vec<NodeIndex>> {
    let mut sources: HashMap<NodeIndex, Vec<NodeIndex>> = HashMap::new();
    for &i in order {
        let mut v: Vec<NodeIndex> = graph
            .edges_directed(i, Direction::Incoming)
            .filter(|e| *e.weight() == Edge::Data)
            .flat_map(|e| sources.get(&e.source()).cloned().unwrap_or_default())
            .collect();
        if is_incremental(i) {
            v.push(i);
        }
        v.sort_by_key(|n| key(&graph[*n]));
        v.dedup();
        if !v.is_empty() {
            sources.insert(i, v);
        }
    }
    sources
}

/// Kahn's algorithm choosing, among ready nodes, the one with the smallest `key` (the task's
/// position in the file): the order users expect to read. `None` on a cycle.
/// Every node reachable from `i` over data edges.
pub(crate) fn descendants_of<N>(g: &DiGraph<N, Edge>, i: NodeIndex) -> Vec<NodeIndex> {
    let mut seen = HashSet::new();
    let mut stack = vec![i];
    while let Some(n) = stack.pop() {
        for e in g.edges_directed(n, Direction::Outgoing) {
            if *e.weight() == Edge::Data && seen.insert(e.target()) {
                stack.push(e.target());
            }
        }
    }
    seen.into_iter().collect()
}

pub(crate) fn stable_topo_order<N, E>(g: &DiGraph<N, E>, key: impl Fn(&N) -> usize) -> Option<Vec<NodeIndex>> {
    let mut indeg: HashMap<NodeIndex, usize> = g.node_indices().map(|i| (i, 0)).collect();
    for e in g.edge_references() {
        *indeg.entry(e.target()).or_default() += 1;
    }
    let mut ready: std::collections::BTreeSet<(usize, NodeIndex)> =
        indeg.iter().filter(|(_, d)| **d == 0).map(|(i, _)| (key(&g[*i]), *i)).collect();
    let mut out = Vec::with_capacity(g.node_count());
    while let Some(first) = ready.pop_first() {
        out.push(first.1);
        // parallel edges count twice in indeg and are walked twice here
        for n in g.neighbors_directed(first.1, Direction::Outgoing) {
            let d = indeg.get_mut(&n)?;
            *d -= 1;
            if *d == 0 {
                ready.insert((key(&g[n]), n));
            }
        }
    }
    (out.len() == g.node_count()).then_some(out)
}

impl Plan {
    /// Tasks named by `--select` expressions: `name`, `+name` (and everything upstream),
    /// `name+` (and everything downstream). Expressions may also be space-separated.
    pub fn select(&self, exprs: &[String]) -> Result<HashSet<NodeIndex>, String> {
        let mut out = HashSet::new();
        for expr in exprs.iter().flat_map(|e| e.split_whitespace()) {
            let up = expr.starts_with('+');
            let down = expr.ends_with('+') && expr.len() > 1;
            let name = expr.trim_start_matches('+').trim_end_matches('+');
            let Some(i) = self.index_of(name) else {
                let names: Vec<&str> = self.graph.node_weights().map(|t| t.name.as_str()).collect();
                let help = crate::diag::did_you_mean(name, names.iter().copied())
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                return Err(format!("no task `{name}` in pipeline `{}`{help}", self.pipeline));
            };
            out.insert(i);
            if up {
                out.extend(self.ancestors(i));
            }
            if down {
                out.extend(self.descendants(i));
            }
        }
        Ok(out)
    }
}
