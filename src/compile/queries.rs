//! SQL: transforms drafted from their analysed queries and planned level by level against
//! their inputs' schemas; DataFusion's errors turned into located diagnostics.

use super::*;

impl Compiler<'_> {
    /// A `transform:` task: the tables its query reads, each a task that has a table.
    pub(super) fn draft_transform(
        &mut self,
        name: &str,
        t: &spec::Transform,
        analysis: Option<Result<sql::Analyzed, Vec<sql::SqlIssue>>>,
        names: &indexmap::IndexSet<&str>,
        loads: &HashSet<&str>,
    ) -> DraftKind {
        let p = self.p;
        let before = self.diags.len();
        let broken = |this: &Self| this.diags.len() > before;
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
                let help =
                    did_you_mean(table, names.iter().copied().filter(|n| !loads.contains(n))).unwrap_or_else(|| {
                        "tables in SQL are task names; declare an `extract` task to read files".to_string()
                    });
                self.diags.push(
                    self.sql_diag(&sql_path, &t.sql, "unknown-table", format!("unknown table `{table}` in SQL"), *span)
                        .help(help),
                );
            }
        }
        if broken(self) {
            DraftKind::Broken
        } else {
            DraftKind::Transform { sql: t.sql.clone(), statement: Some(analyzed.statement), inputs }
        }
    }

    /// Every transform planned against its inputs' schemas, level by level (a level only
    /// reads earlier ones), each level's queries in parallel: planning is CPU-bound and a
    /// large pipeline has wide levels. Extracts are registered as empty tables of their schema.
    pub(super) fn plan_transforms(
        &mut self,
        ctx: &SessionContext,
        state: &SessionState,
        g: &mut TaskGraph,
        schemas: &mut HashMap<NodeIndex, SchemaRef>,
        lineages: &mut HashMap<NodeIndex, lineage::TaskLineage>,
    ) -> Scans {
        let TaskGraph { graph, index, order } = g;
        // Database extracts: which of their columns the transforms read (pushed into the
        // source statement).
        let databases: HashSet<String> = order
            .iter()
            .filter(|&&i| matches!(graph[i].kind, DraftKind::DbExtract { .. }))
            .map(|&i| graph[i].name.clone())
            .collect();
        let mut needed = Scans::new();
        for &i in order.iter() {
            match (&graph[i].kind, schemas.get(&i)) {
                (DraftKind::Extract { .. } | DraftKind::HttpExtract { .. }, Some(s)) => {
                    let _ = ctx.register_table(graph[i].name.as_str(), Arc::new(EmptyTable::new(s.clone())));
                }
                (DraftKind::DbExtract { .. }, Some(s)) => {
                    let _ = ctx.register_table(graph[i].name.as_str(), Arc::new(PushdownStub(s.clone())));
                }
                _ => {}
            }
        }
        // Transforms level by level (a level only reads earlier ones), each level's queries
        // planned in parallel: planning is CPU-bound and a large pipeline has wide levels.
        let mut level: HashMap<NodeIndex, usize> = HashMap::new();
        for &i in order.iter() {
            let l = graph.neighbors_directed(i, petgraph::Direction::Incoming).filter_map(|j| level.get(&j)).max();
            level.insert(i, l.map_or(0, |l| l + 1));
        }
        let mut by_level: std::collections::BTreeMap<usize, Vec<NodeIndex>> = Default::default();
        for &i in order.iter() {
            if matches!(graph[i].kind, DraftKind::Transform { .. }) {
                by_level.entry(level[&i]).or_default().push(i);
            }
        }
        for (_, nodes) in by_level {
            let mut jobs = Vec::new();
            let mut keys: HashMap<NodeIndex, u128> = HashMap::new();
            for i in nodes {
                let name = graph[i].name.clone();
                let DraftKind::Transform { inputs, statement, sql } = &mut graph[i].kind else { continue };
                let mut known: Vec<(&str, &Schema)> = Vec::with_capacity(inputs.len());
                for n in inputs.iter() {
                    match index.get(n).and_then(|j| schemas.get(j)) {
                        Some(s) => known.push((n.as_str(), s.as_ref())),
                        None => break,
                    }
                }
                if known.len() < inputs.len() {
                    continue; // an input has its own error
                }
                // Planned by an earlier compile against the same schemas: not planned again.
                // What a query reads of a database extract is not kept: it is planned.
                if !inputs.iter().any(|n| databases.contains(n)) {
                    known.sort_by_key(|(n, _)| *n);
                    known.dedup_by_key(|(n, _)| *n);
                    let key = memo::plan_key(sql, &known);
                    if let Some((schema, columns, rows)) = self.memo.planned(key) {
                        let _ = ctx.register_table(name.as_str(), Arc::new(EmptyTable::new(schema.clone())));
                        schemas.insert(i, schema);
                        lineages.insert(i, lineage::TaskLineage { columns, rows, ..Default::default() });
                        continue;
                    }
                    keys.insert(i, key);
                }
                let st = match statement.take() {
                    Some(st) => st,
                    // Parsed by an earlier compile: parsed again to be planned.
                    None => match sql::analyze(state, sql) {
                        Ok(a) => a.statement,
                        Err(issues) => {
                            let path = ypath!["tasks", name.as_str(), "transform", "sql"];
                            let sql = sql.clone();
                            for issue in issues {
                                let d = self.sql_diag(&path, &sql, issue.code, issue.message, issue.span);
                                self.diags.push(d.maybe_help(issue.help));
                            }
                            continue;
                        }
                    },
                };
                jobs.push((i, st));
            }
            let is_task = |t: &str| index.contains_key(t);
            for (i, result) in plan_queries_scans(state, jobs, &databases, &is_task) {
                let name = graph[i].name.clone();
                let DraftKind::Transform { sql, .. } = &graph[i].kind else { continue };
                match result {
                    Ok(Planned { schema, scans, lineage }) => {
                        for (table, reads) in scans {
                            add_reads(&mut needed, table, reads);
                        }
                        let (columns, rows) = lineage.into_task();
                        if let Some(key) = keys.remove(&i) {
                            self.memo.add_planned(key, &schema, &columns, &rows);
                        }
                        tracing::debug!(task = %name, "compile: query planned");
                        lineages.insert(i, lineage::TaskLineage { columns, rows, ..Default::default() });
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
        needed
    }

    pub(super) fn sql_diag(
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
    pub(super) fn plan_issue(&self, name: &str, sql: &str, issue: PlanIssue) -> Diagnostic {
        let path = ypath!["tasks", name, "transform", "sql"];
        match issue {
            PlanIssue::DataFusion(e) => self.df_error(&path, sql, &e),
            PlanIssue::Sandbox(m) => self.sql_diag(&path, sql, "sql-sandbox", m, None),
            PlanIssue::DuplicateColumn(c) => self
                .sql_diag(&path, sql, "sql-plan", format!("the query returns two columns named `{c}`"), None)
                .help(format!("give one of them another name, e.g. `... AS {c}_2`")),
        }
    }

    pub(super) fn df_error(&self, path: &YamlPath, sql: &str, e: &DataFusionError) -> Diagnostic {
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
}

pub(super) enum PlanIssue {
    DataFusion(DataFusionError),
    Sandbox(String),
    DuplicateColumn(String),
}

/// Plan one query against the registered tables: its output schema.
pub(super) fn plan_query(state: &SessionState, statement: Box<DfStatement>) -> Result<SchemaRef, PlanIssue> {
    plan_query_scans(state, statement, &HashSet::new(), &|_| false).map(|p| p.schema)
}

/// A query planned: its output schema, what it reads of database extracts, its lineage.
pub(super) struct Planned {
    pub schema: SchemaRef,
    pub scans: Scans,
    pub lineage: super::lineage::QueryLineage,
}

/// What queries read of each table in `tables`, from their optimized plans (so what `SELECT *`
/// later narrows is not counted).
pub(super) type Scans = HashMap<String, Reads>;

/// What queries read of one table.
#[derive(Debug, Clone)]
pub(super) struct Reads {
    /// The columns (`None`: all of them).
    pub columns: Option<std::collections::BTreeSet<String>>,
    /// The rows: per scan, the filters the optimizer pushed into it (all must hold); `None`
    /// when some scan reads every row.
    pub rows: Option<Vec<Vec<datafusion::logical_expr::Expr>>>,
}

impl Reads {
    /// Every column, every row.
    pub fn all() -> Reads {
        Reads { columns: None, rows: None }
    }

    fn scan(columns: Option<std::collections::BTreeSet<String>>, filters: &[datafusion::logical_expr::Expr]) -> Reads {
        Reads { columns, rows: (!filters.is_empty()).then(|| vec![filters.to_vec()]) }
    }

    /// What two sets of queries read together.
    pub fn merge(&mut self, other: Reads) {
        self.columns = match (self.columns.take(), other.columns) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
        self.rows = match (self.rows.take(), other.rows) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
    }
}

/// Add `reads` of `table` to `scans`.
pub(super) fn add_reads(scans: &mut Scans, table: String, reads: Reads) {
    match scans.get_mut(&table) {
        Some(have) => have.merge(reads),
        None => {
            scans.insert(table, reads);
        }
    }
}

/// A database extract's table while compile plans the queries that read it: its schema, no
/// rows, and every filter accepted as `Inexact`, so the optimizer leaves each scan's filters
/// on it (to be pushed to the server) and still applies them itself.
#[derive(Debug)]
pub(super) struct PushdownStub(pub SchemaRef);

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for PushdownStub {
    fn schema(&self) -> SchemaRef {
        self.0.clone()
    }

    fn table_type(&self) -> datafusion::logical_expr::TableType {
        datafusion::logical_expr::TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::logical_expr::Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        EmptyTable::new(self.0.clone()).scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&datafusion::logical_expr::Expr],
    ) -> datafusion::error::Result<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        Ok(vec![datafusion::logical_expr::TableProviderFilterPushDown::Inexact; filters.len()])
    }
}

/// [`plan_query`], the columns it reads of the `tables` it reads (see [`Scans`]), and its
/// lineage over the tables named `is_task`.
pub(super) fn plan_query_scans(
    state: &SessionState,
    statement: Box<DfStatement>,
    tables: &HashSet<String>,
    is_task: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Planned, PlanIssue> {
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
    let lineage = super::lineage::of_query(&analyzed, is_task);
    let mut scans = Scans::new();
    if !tables.is_empty() {
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        let reads = |plan: &datafusion::logical_expr::LogicalPlan, scans: &mut Scans| {
            let _ = plan.apply(|node| {
                if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node
                    && tables.contains(scan.table_name.table())
                {
                    let source = scan.source.schema();
                    let cols: Option<std::collections::BTreeSet<String>> =
                        scan.projection.as_ref().map(|p| p.iter().map(|&k| source.field(k).name().clone()).collect());
                    add_reads(scans, scan.table_name.table().to_string(), Reads::scan(cols, &scan.filters));
                }
                Ok(TreeNodeRecursion::Continue)
            });
        };
        let mut direct = Scans::new();
        reads(&analyzed, &mut direct);
        if !direct.is_empty() {
            // Only what the optimizer keeps is read; any failure to optimize reads everything.
            match state.optimizer().optimize(analyzed, state, |_, _| {}) {
                Ok(optimized) => reads(&optimized, &mut scans),
                Err(_) => scans = direct.into_keys().map(|k| (k, Reads::all())).collect(),
            }
        }
    }
    Ok(Planned { schema, scans, lineage })
}

/// Plan queries on all cores, with the columns each reads of `tables`; results in the order of
/// `jobs`.
pub(super) fn plan_queries_scans(
    state: &SessionState,
    jobs: Vec<(NodeIndex, Box<DfStatement>)>,
    tables: &HashSet<String>,
    is_task: &(dyn Fn(&str) -> bool + Sync),
) -> Vec<(NodeIndex, Result<Planned, PlanIssue>)> {
    par_map(jobs, |(i, st)| (i, plan_query_scans(state, st, tables, is_task)))
}

/// `f` over `items` on all cores (scoped threads; results in order). Small inputs run here.
pub(super) fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
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
pub(super) fn quoted_names(m: &str) -> Vec<String> {
    let re = regex::Regex::new(r#"(?:No field named|column) ['"`]?([A-Za-z_][A-Za-z0-9_.]*)['"`]?"#);
    match re {
        Ok(re) => re.captures_iter(m).map(|c| c[1].to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Byte offset of `word` in `sql` as a whole identifier (case-insensitive).
pub(super) fn find_word(sql: &str, word: &str) -> Option<usize> {
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
    fn finds_whole_words() {
        assert_eq!(find_word("SELECT ab, a FROM t", "a"), Some(11));
        assert_eq!(find_word("SELECT x", "y"), None);
    }
}
