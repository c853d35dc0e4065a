//! Column-level lineage, read from DataFusion's logical plans after analysis (what runs, with
//! `*` expanded, CTEs inlined and casts inserted), not from SQL text. Each query's plan is
//! walked bottom-up: every node maps its output columns to the columns of the tasks it reads,
//! each with how ([`How`]), and keeps the columns its rows depend on (filters, join keys,
//! groups, sorts). Plans of other tasks are never needed: a task's lineage names its inputs'
//! columns, and [`super::Plan`] composes them (`weir lineage`).

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::{Distinct, Expr, LogicalPlan, WindowFunctionDefinition};

/// How a column depends on another. The first three say where its values come from; the
/// others which rows there are, or which rows a value is computed over.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// The value is passed through: selected, renamed, a union's or a join's column, or cast
    /// to a type that holds every value unchanged (a wider integer, a date as a timestamp).
    Copy,
    /// The value is computed from it (an expression, a function, a `CASE`, a cast that can
    /// change values).
    Transform,
    /// The value is computed from it over several rows (`SUM`, `COUNT`, a window aggregate).
    Aggregate,
    /// Rows are kept or dropped by a condition on it (`WHERE`, `HAVING`, `IN (subquery)`,
    /// `EXISTS`, `delete_when`).
    Filter,
    /// Rows are matched on it (join conditions, `USING`, a merge's `keys`).
    Join,
    /// Rows are grouped by it (`GROUP BY`, `DISTINCT ON`).
    GroupBy,
    /// A window function's rows are partitioned or ordered by it.
    Window,
    /// Rows are ordered by it (`ORDER BY`, a merge's `order_by`: which row of a key wins).
    Sort,
}

impl How {
    /// Says where values come from (rather than which rows there are).
    pub fn direct(self) -> bool {
        matches!(self, How::Copy | How::Transform | How::Aggregate)
    }

    pub fn name(self) -> &'static str {
        match self {
            How::Copy => "copy",
            How::Transform => "transform",
            How::Aggregate => "aggregate",
            How::Filter => "filter",
            How::Join => "join",
            How::GroupBy => "group_by",
            How::Window => "window",
            How::Sort => "sort",
        }
    }

    /// `self` seen through a step that is `then`: direct kinds keep the stronger one
    /// (copy < transform < aggregate); an indirect step makes the dependency indirect.
    pub fn then(self, then: How) -> How {
        match (self.direct(), then.direct()) {
            (true, true) => self.max(then),
            (_, false) => then,
            (false, true) => self,
        }
    }
}

/// A column of a task and how another column depends on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dep {
    pub task: String,
    pub column: String,
    pub how: How,
}

/// A task's lineage, as compile found it: per output column the columns of its input tasks,
/// and the columns its rows depend on.
#[derive(Debug, Clone, Default)]
pub struct TaskLineage {
    /// Per column of the task's schema, in order.
    pub columns: Vec<Vec<Dep>>,
    /// Columns that decide which rows the task has (and, for a load, which rows it replaces).
    pub rows: Vec<Dep>,
    /// Extracts: per column, the field of the source it is read from (a file's column, an
    /// XML path, a database column, a JSON key).
    pub fields: Vec<String>,
    /// Per check of the task (by name), the columns it reads.
    pub checks: Vec<CheckReads>,
    /// Loads: the columns that partition the output.
    pub partition_by: Vec<String>,
}

/// The columns a check reads.
#[derive(Debug, Clone)]
pub struct CheckReads {
    pub name: String,
    /// The kind of check (`not_null`, `sql`, …).
    pub kind: &'static str,
    /// (task, column), sorted.
    pub reads: Vec<(String, String)>,
}

/// A column of a task read by a query: (task, column).
type Src = (String, String);
/// What one column depends on.
type Deps = BTreeMap<Src, BTreeSet<How>>;

fn add(deps: &mut Deps, src: &Src, how: How) {
    let set = deps.entry(src.clone()).or_default();
    if how.direct() {
        if let Some(&d) = set.iter().find(|h| h.direct()) {
            if d >= how {
                return;
            }
            set.remove(&d);
        }
    }
    set.insert(how);
}

/// `from` into `into`, each dependency seen through a step that is `step`.
fn merge_as(into: &mut Deps, from: &Deps, step: How) {
    for (src, hows) in from {
        for h in hows {
            add(into, src, h.then(step));
        }
    }
}

/// A query's lineage: per output column and for its rows.
#[derive(Debug, Default)]
pub(super) struct QueryLineage {
    columns: Vec<Deps>,
    rows: Deps,
}

impl QueryLineage {
    /// Per output column, then for the rows: sorted dependencies.
    pub(super) fn into_task(self) -> (Vec<Vec<Dep>>, Vec<Dep>) {
        (self.columns.iter().map(flatten).collect(), flatten(&self.rows))
    }

    /// Every column it reads, however (for checks).
    pub(super) fn reads(&self) -> BTreeSet<Src> {
        self.columns.iter().chain(std::iter::once(&self.rows)).flat_map(|d| d.keys().cloned()).collect()
    }
}

fn flatten(d: &Deps) -> Vec<Dep> {
    d.iter()
        .flat_map(|((t, c), hows)| hows.iter().map(move |&how| Dep { task: t.clone(), column: c.clone(), how }))
        .collect()
}

/// The lineage of an analyzed query whose tables named `is_task` are tasks.
pub(super) fn of_query(plan: &LogicalPlan, is_task: &dyn Fn(&str) -> bool) -> QueryLineage {
    Walker { is_task }.node(plan, None)
}

/// Where a node's expressions find their columns: its inputs' schemas and lineages, and for a
/// subquery the scope it is nested in (its outer references).
struct Scope<'a> {
    parts: Vec<(&'a DFSchema, &'a [Deps])>,
    outer: Option<&'a Scope<'a>>,
}

impl Scope<'_> {
    fn resolve(&self, c: &Column) -> Option<&Deps> {
        self.parts.iter().find_map(|(s, cols)| s.maybe_index_of_column(c).and_then(|k| cols.get(k)))
    }
}

struct Walker<'a> {
    is_task: &'a dyn Fn(&str) -> bool,
}

impl Walker<'_> {
    fn node(&self, plan: &LogicalPlan, outer: Option<&Scope<'_>>) -> QueryLineage {
        let width = plan.schema().fields().len();
        let out = self.node_inner(plan, outer);
        if out.columns.len() == width {
            out
        } else {
            // A shape not understood: every output column depends on every input column.
            self.fallback(plan, outer)
        }
    }

    fn node_inner(&self, plan: &LogicalPlan, outer: Option<&Scope<'_>>) -> QueryLineage {
        match plan {
            LogicalPlan::TableScan(s) => {
                let table = s.table_name.table();
                let mut q = QueryLineage::default();
                let task = (self.is_task)(table);
                for (_, f) in s.projected_schema.iter() {
                    let mut d = Deps::new();
                    if task {
                        add(&mut d, &(table.to_string(), f.name().clone()), How::Copy);
                    }
                    q.columns.push(d);
                }
                if task {
                    for f in &s.filters {
                        for c in f.column_refs() {
                            add(&mut q.rows, &(table.to_string(), c.name.clone()), How::Filter);
                        }
                    }
                }
                q
            }
            LogicalPlan::Projection(p) => {
                let input = self.node(&p.input, outer);
                let scope = Scope { parts: vec![(p.input.schema(), &input.columns)], outer };
                let columns = p.expr.iter().map(|e| self.expr(e, &scope, How::Copy)).collect();
                QueryLineage { columns, rows: input.rows }
            }
            LogicalPlan::Filter(f) => {
                let mut input = self.node(&f.input, outer);
                let scope = Scope { parts: vec![(f.input.schema(), &input.columns)], outer };
                let cond = self.expr(&f.predicate, &scope, How::Copy);
                merge_as(&mut input.rows, &cond, How::Filter);
                input
            }
            LogicalPlan::Window(w) => {
                let mut input = self.node(&w.input, outer);
                let scope = Scope { parts: vec![(w.input.schema(), &input.columns)], outer };
                let added: Vec<Deps> = w.window_expr.iter().map(|e| self.expr(e, &scope, How::Copy)).collect();
                input.columns.extend(added);
                input
            }
            LogicalPlan::Aggregate(a) => {
                let input = self.node(&a.input, outer);
                let scope = Scope { parts: vec![(a.input.schema(), &input.columns)], outer };
                let groups: Vec<&Expr> = datafusion::logical_expr::utils::grouping_set_to_exprlist(&a.group_expr)
                    .unwrap_or_else(|_| a.group_expr.iter().collect());
                let group_deps: Vec<Deps> = groups.iter().map(|e| self.expr(e, &scope, How::Copy)).collect();
                let mut rows = input.rows;
                let mut all_groups = Deps::new();
                for d in &group_deps {
                    merge_as(&mut rows, d, How::GroupBy);
                    merge_as(&mut all_groups, d, How::Transform);
                }
                let mut columns = group_deps;
                // Grouping sets add an internal grouping id after the groups.
                if a.schema.fields().len() == columns.len() + 1 + a.aggr_expr.len() {
                    columns.push(all_groups);
                }
                columns.extend(a.aggr_expr.iter().map(|e| self.expr(e, &scope, How::Copy)));
                QueryLineage { columns, rows }
            }
            LogicalPlan::Sort(s) => {
                let mut input = self.node(&s.input, outer);
                let scope = Scope { parts: vec![(s.input.schema(), &input.columns)], outer };
                let mut by = Deps::new();
                for e in &s.expr {
                    by.extend(self.expr(&e.expr, &scope, How::Copy));
                }
                merge_as(&mut input.rows, &by, How::Sort);
                input
            }
            LogicalPlan::Join(j) => {
                let left = self.node(&j.left, outer);
                let right = self.node(&j.right, outer);
                let scope =
                    Scope { parts: vec![(j.left.schema(), &left.columns), (j.right.schema(), &right.columns)], outer };
                let mut keys = Deps::new();
                for (l, r) in &j.on {
                    merge_as(&mut keys, &self.expr(l, &scope, How::Copy), How::Join);
                    merge_as(&mut keys, &self.expr(r, &scope, How::Copy), How::Join);
                }
                if let Some(f) = &j.filter {
                    merge_as(&mut keys, &self.expr(f, &scope, How::Copy), How::Join);
                }
                let mut columns = Vec::with_capacity(j.schema.fields().len());
                for (q, f) in j.schema.iter() {
                    let col = Column::new(q.cloned(), f.name());
                    columns.push(match scope.resolve(&col) {
                        Some(d) => d.clone(),
                        // A mark join's flag: whether a row matched.
                        None => {
                            let mut d = Deps::new();
                            merge_as(&mut d, &keys, How::Transform);
                            d
                        }
                    });
                }
                let mut rows = left.rows;
                merge_as(&mut rows, &right.rows, How::Copy);
                merge_as(&mut rows, &keys, How::Join);
                QueryLineage { columns, rows }
            }
            LogicalPlan::Union(u) => {
                let parts: Vec<QueryLineage> = u.inputs.iter().map(|i| self.node(i, outer)).collect();
                positional(parts, u.schema.fields().len())
            }
            LogicalPlan::RecursiveQuery(r) => {
                let parts = vec![self.node(&r.static_term, outer), self.node(&r.recursive_term, outer)];
                positional(parts, r.static_term.schema().fields().len())
            }
            LogicalPlan::Subquery(s) => self.node(&s.subquery, outer),
            LogicalPlan::SubqueryAlias(a) => self.node(&a.input, outer),
            LogicalPlan::Limit(l) => self.node(&l.input, outer),
            LogicalPlan::Repartition(r) => self.node(&r.input, outer),
            LogicalPlan::Distinct(Distinct::All(input)) => self.node(input, outer),
            LogicalPlan::Distinct(Distinct::On(d)) => {
                let input = self.node(&d.input, outer);
                let scope = Scope { parts: vec![(d.input.schema(), &input.columns)], outer };
                let columns = d.select_expr.iter().map(|e| self.expr(e, &scope, How::Copy)).collect();
                let mut rows = input.rows.clone();
                for e in &d.on_expr {
                    merge_as(&mut rows, &self.expr(e, &scope, How::Copy), How::GroupBy);
                }
                for e in d.sort_expr.iter().flatten() {
                    merge_as(&mut rows, &self.expr(&e.expr, &scope, How::Copy), How::Sort);
                }
                QueryLineage { columns, rows }
            }
            LogicalPlan::Values(v) => {
                let empty = Scope { parts: Vec::new(), outer };
                let mut columns = vec![Deps::new(); v.schema.fields().len()];
                for row in &v.values {
                    for (k, e) in row.iter().enumerate() {
                        if let Some(c) = columns.get_mut(k) {
                            let d = self.expr(e, &empty, How::Copy);
                            merge_as(c, &d, How::Copy);
                        }
                    }
                }
                QueryLineage { columns, rows: Deps::new() }
            }
            LogicalPlan::EmptyRelation(e) => {
                QueryLineage { columns: vec![Deps::new(); e.schema.fields().len()], rows: Deps::new() }
            }
            _ => self.fallback(plan, outer),
        }
    }

    /// A node without its own rule (`UNNEST`, extensions): an output column named as an
    /// input column is that column; any other depends on every input column.
    fn fallback(&self, plan: &LogicalPlan, outer: Option<&Scope<'_>>) -> QueryLineage {
        let inputs: Vec<(&LogicalPlan, QueryLineage)> =
            plan.inputs().into_iter().map(|i| (i, self.node(i, outer))).collect();
        let mut everything = Deps::new();
        let mut rows = Deps::new();
        for (_, q) in &inputs {
            for c in &q.columns {
                merge_as(&mut everything, c, How::Transform);
            }
            merge_as(&mut rows, &q.rows, How::Copy);
        }
        let scope =
            Scope { parts: inputs.iter().map(|(p, q)| (p.schema().as_ref(), q.columns.as_slice())).collect(), outer };
        let columns = plan
            .schema()
            .iter()
            .map(|(q, f)| match (inputs.len(), scope.resolve(&Column::new(q.cloned(), f.name()))) {
                (1, Some(d)) => d.clone(),
                _ => everything.clone(),
            })
            .collect();
        QueryLineage { columns, rows }
    }

    /// What `e` depends on, each dependency at least as strong as `floor`.
    fn expr(&self, e: &Expr, scope: &Scope<'_>, floor: How) -> Deps {
        let mut out = Deps::new();
        self.expr_into(e, scope, floor, &mut out);
        out
    }

    fn expr_into(&self, e: &Expr, scope: &Scope<'_>, floor: How, out: &mut Deps) {
        let computed = floor.then(How::Transform);
        match e {
            Expr::Alias(a) => self.expr_into(&a.expr, scope, floor, out),
            // A cast that keeps every value (to a wider type, as type coercion adds them) keeps
            // a copy a copy; one that can change values (timestamp to date) transforms.
            Expr::Cast(datafusion::logical_expr::Cast { expr, field })
            | Expr::TryCast(datafusion::logical_expr::TryCast { expr, field }) => {
                let keeps = type_of(expr, scope).is_none_or(|from| lossless(&from, field.data_type()));
                self.expr_into(expr, scope, if keeps { floor } else { computed }, out)
            }
            Expr::Column(c) => {
                if let Some(d) = scope.resolve(c) {
                    merge_as(out, d, floor);
                }
            }
            Expr::OuterReferenceColumn(_, c) => {
                if let Some(d) = scope.outer.and_then(|o| o.resolve(c)) {
                    merge_as(out, d, floor);
                }
            }
            Expr::AggregateFunction(f) => {
                let over = floor.then(How::Aggregate);
                for a in &f.params.args {
                    self.expr_into(a, scope, over, out);
                }
                if let Some(w) = &f.params.filter {
                    merge_as(out, &self.expr(w, scope, How::Copy), How::Filter);
                }
                for s in &f.params.order_by {
                    merge_as(out, &self.expr(&s.expr, scope, How::Copy), How::Sort);
                }
            }
            Expr::WindowFunction(w) => {
                let over = match w.fun {
                    WindowFunctionDefinition::AggregateUDF(_) => floor.then(How::Aggregate),
                    WindowFunctionDefinition::WindowUDF(_) => computed,
                };
                for a in &w.params.args {
                    self.expr_into(a, scope, over, out);
                }
                for p in &w.params.partition_by {
                    merge_as(out, &self.expr(p, scope, How::Copy), How::Window);
                }
                for s in &w.params.order_by {
                    merge_as(out, &self.expr(&s.expr, scope, How::Copy), How::Window);
                }
                if let Some(f) = &w.params.filter {
                    merge_as(out, &self.expr(f, scope, How::Copy), How::Filter);
                }
            }
            Expr::ScalarSubquery(s) => self.subquery(&s.subquery, scope, floor, out),
            Expr::Exists(x) => self.subquery(&x.subquery.subquery, scope, computed, out),
            Expr::InSubquery(x) => {
                self.expr_into(&x.expr, scope, computed, out);
                self.subquery(&x.subquery.subquery, scope, computed, out);
            }
            Expr::SetComparison(x) => {
                self.expr_into(&x.expr, scope, computed, out);
                self.subquery(&x.subquery.subquery, scope, computed, out);
            }
            _ => {
                let _ = e.apply_children(|c| {
                    self.expr_into(c, scope, computed, out);
                    Ok(TreeNodeRecursion::Continue)
                });
            }
        }
    }

    /// A subquery in an expression: its columns' dependencies at `floor`, and what decides
    /// its rows as is.
    fn subquery(&self, plan: &LogicalPlan, scope: &Scope<'_>, floor: How, out: &mut Deps) {
        let q = self.node(plan, Some(scope));
        for c in &q.columns {
            merge_as(out, c, floor);
        }
        merge_as(out, &q.rows, How::Copy);
    }
}

/// The type of a column or cast (`None` for anything else: its dependencies are computed).
fn type_of(e: &Expr, scope: &Scope<'_>) -> Option<DataType> {
    match e {
        Expr::Alias(a) => type_of(&a.expr, scope),
        Expr::Cast(c) => Some(c.field.data_type().clone()),
        Expr::TryCast(c) => Some(c.field.data_type().clone()),
        Expr::Column(c) => scope
            .parts
            .iter()
            .find_map(|(s, _)| s.qualified_field_from_column(c).ok().map(|(_, f)| f.data_type().clone())),
        _ => None,
    }
}

/// Every value of `from` is a value of `to`, unchanged: a wider integer, float or decimal, a
/// date as a timestamp, a finer timestamp, another encoding of text or bytes.
pub(super) fn lossless(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let int_bits = |t: &DataType| -> Option<(bool, u32)> {
        Some(match t {
            Int8 => (true, 8),
            Int16 => (true, 16),
            Int32 => (true, 32),
            Int64 => (true, 64),
            UInt8 => (false, 8),
            UInt16 => (false, 16),
            UInt32 => (false, 32),
            UInt64 => (false, 64),
            _ => return None,
        })
    };
    // Decimal digits an integer type needs.
    let int_digits = |bits: u32| -> u8 {
        match bits {
            8 => 3,
            16 => 5,
            32 => 10,
            _ => 20,
        }
    };
    let decimal = |t: &DataType| -> Option<(u8, i8)> {
        match t {
            Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) => Some((*p, *s)),
            _ => None,
        }
    };
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let bytes = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView);
    let unit_rank = |u: &datafusion::arrow::datatypes::TimeUnit| {
        use datafusion::arrow::datatypes::TimeUnit::*;
        match u {
            Second => 0,
            Millisecond => 1,
            Microsecond => 2,
            Nanosecond => 3,
        }
    };
    if from == to || *from == Null {
        return true;
    }
    if let Dictionary(_, v) = from {
        return lossless(v, to);
    }
    if let (Some((fs, fb)), Some((ts, tb))) = (int_bits(from), int_bits(to)) {
        return (fs == ts && tb >= fb) || (!fs && ts && tb > fb);
    }
    if let (Some((_, bits)), Some((p, s))) = (int_bits(from), decimal(to)) {
        return s >= 0 && (p as i16 - s as i16) >= int_digits(bits) as i16;
    }
    if let Some((_, bits)) = int_bits(from) {
        return matches!((bits, to), (..=16, Float32) | (..=32, Float64));
    }
    if let (Some((fp, fs)), Some((tp, ts))) = (decimal(from), decimal(to)) {
        return ts >= fs && (tp as i16 - ts as i16) >= (fp as i16 - fs as i16);
    }
    match (from, to) {
        (Float16, Float32 | Float64) | (Float32, Float64) => true,
        (Date32, Date64) | (Date32 | Date64, Timestamp(..)) => true,
        (Timestamp(fu, _), Timestamp(tu, _)) => unit_rank(tu) >= unit_rank(fu),
        _ => (text(from) && text(to)) || (bytes(from) && bytes(to)),
    }
}

/// Inputs combined column by column (a `UNION`).
fn positional(parts: Vec<QueryLineage>, width: usize) -> QueryLineage {
    let mut q = QueryLineage { columns: vec![Deps::new(); width], rows: Deps::new() };
    for p in parts {
        for (k, c) in p.columns.iter().enumerate() {
            if let Some(into) = q.columns.get_mut(k) {
                merge_as(into, c, How::Copy);
            }
        }
        merge_as(&mut q.rows, &p.rows, How::Copy);
    }
    q
}

impl super::Compiler<'_> {
    /// The lineage of what is not a query: an extract's columns are fields of its source; a
    /// load's are its input's, its rows matched on its keys (and replaced partitions), ordered by
    /// `order_by` and filtered by `delete_when`; and every check's columns. Transforms' lineage
    /// is already in `lineages` (from their plans).
    pub(super) fn complete_lineage(
        &self,
        state: &datafusion::execution::session_state::SessionState,
        g: &super::TaskGraph,
        schemas: &std::collections::HashMap<super::NodeIndex, super::SchemaRef>,
        checks: &std::collections::HashMap<super::NodeIndex, Vec<super::CheckPlan>>,
        lineages: &mut std::collections::HashMap<super::NodeIndex, TaskLineage>,
    ) {
        use super::DraftKind;
        let p = self.p;
        for &i in &g.order {
            let d = &g.graph[i];
            let Some(schema) = schemas.get(&i) else { continue };
            let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            let mut l = lineages.remove(&i).unwrap_or_default();
            match &d.kind {
                DraftKind::Extract { .. } | DraftKind::DbExtract { .. } | DraftKind::HttpExtract { .. } => {
                    let xml = p.spec.tasks.get(&d.name).and_then(|t| t.extract.as_ref()).and_then(|e| e.xml.as_ref());
                    l.columns = vec![Vec::new(); names.len()];
                    l.fields = names
                        .iter()
                        .map(|c| match (xml.and_then(|x| x.fields.get(c)), c.as_str()) {
                            (Some(path), _) => path.clone(),
                            (None, crate::source::postgres::cdc::OP) if cdc(&d.kind) => {
                                "(change data capture: insert, update or delete)".to_string()
                            }
                            (None, crate::source::postgres::cdc::LSN) if cdc(&d.kind) => {
                                "(change data capture: position in the log)".to_string()
                            }
                            _ => c.clone(),
                        })
                        .collect();
                }
                DraftKind::Load(load) => {
                    let from = &load.from;
                    l.columns = names
                        .iter()
                        .map(|c| vec![Dep { task: from.clone(), column: c.clone(), how: How::Copy }])
                        .collect();
                    let mut rows = Deps::new();
                    for k in &load.keys {
                        add(&mut rows, &(from.clone(), k.clone()), How::Join);
                    }
                    if load.mode == crate::spec::LoadMode::ReplacePartitions {
                        for k in &load.partition_by {
                            add(&mut rows, &(from.clone(), k.clone()), How::Join);
                        }
                    }
                    for k in &load.order_by {
                        add(&mut rows, &(from.clone(), k.clone()), How::Sort);
                    }
                    if let Some(cond) = &load.delete_when
                        && let Ok(e) = super::sql::predicate(state, cond, schema)
                    {
                        for c in e.column_refs() {
                            add(&mut rows, &(from.clone(), c.name.clone()), How::Filter);
                        }
                    }
                    l.rows = flatten(&rows);
                    l.partition_by = load.partition_by.clone();
                }
                _ => {}
            }
            l.checks = checks
                .get(&i)
                .map(|list| list.iter().map(|c| self.check_reads(state, &d.name, schema, c, g)).collect())
                .unwrap_or_default();
            lineages.insert(i, l);
        }
    }

    /// The columns check `c` of task `task` reads.
    fn check_reads(
        &self,
        state: &datafusion::execution::session_state::SessionState,
        task: &str,
        schema: &super::SchemaRef,
        c: &super::CheckPlan,
        g: &super::TaskGraph,
    ) -> CheckReads {
        use super::CheckKind;
        let own = |c: &str| (task.to_string(), c.to_string());
        let mut reads: BTreeSet<Src> = BTreeSet::new();
        match &c.kind {
            CheckKind::NotNull(cols) | CheckKind::Unique(cols) => reads.extend(cols.iter().map(|c| own(c))),
            CheckKind::AcceptedValues { column, .. } | CheckKind::Freshness { column, .. } => {
                reads.insert(own(column));
            }
            CheckKind::Relationships { column, to, field } => {
                reads.insert(own(column));
                reads.insert((to.clone(), field.clone()));
            }
            CheckKind::Schema(cols) => reads.extend(cols.iter().map(|(c, _)| own(c))),
            CheckKind::Expression(text) => {
                if let Ok(e) = super::sql::predicate(state, text, schema) {
                    reads.extend(e.column_refs().into_iter().map(|c| own(&c.name)));
                }
            }
            CheckKind::Sql(query) => {
                if let Ok(a) = super::sql::analyze(state, query)
                    && let Ok(planned) =
                        super::queries::plan_query_scans(state, a.statement, &Default::default(), &|t: &str| {
                            g.index.contains_key(t)
                        })
                {
                    reads.extend(planned.lineage.reads());
                }
            }
            CheckKind::RowCount { .. } => {}
        }
        CheckReads { name: c.name.clone(), kind: c.kind.name(), reads: reads.into_iter().collect() }
    }
}

fn cdc(kind: &super::DraftKind) -> bool {
    matches!(kind, super::DraftKind::DbExtract { cdc: Some(_), .. })
}

// ---------------------------------------------------------------------------------------------
// The document `weir lineage` prints, and the questions it answers.

/// Version of the lineage document's shape; grows only by keys that readers may ignore.
pub const DOCUMENT_VERSION: u32 = 1;

/// `weir lineage --format json`: the column-level lineage of pipelines. With `--column` or
/// `--downstream` only the columns reached are listed, and `focus` answers the question.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineageDocument {
    /// The document's version (1).
    pub weir_lineage: u32,
    pub pipelines: Vec<PipelineLineage>,
    /// The column asked about and what it reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focus: Option<Focus>,
}

/// One pipeline's tasks, in run order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineLineage {
    pub pipeline: String,
    /// The pipeline file, as given on the command line.
    pub file: String,
    pub tasks: Vec<TaskDocument>,
}

/// A task, its columns and what they come from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDocument {
    pub task: String,
    /// `extract`, `transform` or `load`.
    pub kind: String,
    /// Extracts: what is read. Loads: what is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Dataset>,
    pub columns: Vec<ColumnDocument>,
    /// Columns of other tasks that decide which rows this task has (filters, join and merge
    /// keys, groups, sorts), with how.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<ColumnDep>,
    /// The task's checks and the columns each reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckDocument>,
}

/// Where an extract reads or a load writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// The store's name in the pipeline.
    pub store: String,
    /// `files`, `postgres`, `mysql`, `http`, `parquet`, `delta`.
    pub kind: String,
    /// The store's URL (no credentials) with the path, table or query: `file:///data/orders/*.csv`,
    /// `postgres://weir@127.0.0.1:5432/shop` + ` table public.orders`.
    pub name: String,
}

/// A column of a task.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnDocument {
    pub name: String,
    /// Its Arrow type, as `weir plan` shows it.
    pub data_type: String,
    /// Extracts: the field of the source it is read from (a file's column, an XML path, a
    /// database column, a JSON key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Loads: the output is partitioned by it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partition: bool,
    /// The columns of the tasks it reads that it depends on, with how.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<ColumnDep>,
}

/// A column of a task, and how another depends on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnDep {
    pub task: String,
    pub column: String,
    pub how: How,
}

/// A check and the columns it reads.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckDocument {
    pub name: String,
    /// `not_null`, `unique`, `accepted_values`, `expression`, `row_count`, `relationships`,
    /// `freshness`, `schema` or `sql`.
    pub kind: String,
    pub reads: Vec<ColumnName>,
}

/// A column of a task.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnName {
    pub task: String,
    pub column: String,
}

/// `--column` (upstream) or `--downstream`: every column reached from the column asked about.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Focus {
    pub pipeline: String,
    pub task: String,
    pub column: String,
    /// `upstream`: what the column comes from; `downstream`: what depends on it.
    pub direction: Direction,
    /// Each column reached, with every way it is reached. Along a path of direct steps the
    /// strongest names it (`copy` < `transform` < `aggregate`): the values come from the
    /// column read. A path with another step (`filter`, `join`, …) decides rows, and that
    /// step nearest the column read (upstream the column reached, downstream the column
    /// asked about) names it: how the column read is used.
    pub reaches: Vec<Reach>,
    /// Downstream: the checks that read a column reached (or the column itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<FocusCheck>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Upstream,
    Downstream,
}

/// A column reached from the focus.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reach {
    pub task: String,
    pub column: String,
    /// Every way it is reached (see `Focus.reaches`).
    pub how: Vec<How>,
    /// Steps from the focus on the shortest path.
    pub distance: usize,
    /// `extract`, `transform` or `load`.
    pub kind: String,
}

/// A check that reads a column reached downstream.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FocusCheck {
    pub task: String,
    pub check: String,
    pub kind: String,
    pub column: String,
}

/// The lineage of `plan`'s tasks, `file` naming its pipeline file.
pub fn pipeline_document(plan: &super::Plan, file: &str) -> PipelineLineage {
    let tasks = plan
        .order
        .iter()
        .map(|&i| {
            let t = &plan.graph[i];
            let l = &t.lineage;
            let columns = t
                .schema
                .fields()
                .iter()
                .enumerate()
                .map(|(k, f)| ColumnDocument {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    field: l.fields.get(k).cloned(),
                    partition: l.partition_by.iter().any(|p| p == f.name()),
                    from: l.columns.get(k).map(|d| d.iter().map(ColumnDep::from).collect()).unwrap_or_default(),
                })
                .collect();
            TaskDocument {
                task: t.name.clone(),
                kind: t.kind.name().to_string(),
                dataset: dataset(&t.kind),
                columns,
                rows: l.rows.iter().map(ColumnDep::from).collect(),
                checks: l
                    .checks
                    .iter()
                    .map(|c| CheckDocument {
                        name: c.name.clone(),
                        kind: c.kind.to_string(),
                        reads: c.reads.iter().map(|(t, c)| ColumnName { task: t.clone(), column: c.clone() }).collect(),
                    })
                    .collect(),
            }
        })
        .collect();
    PipelineLineage { pipeline: plan.pipeline.clone(), file: file.to_string(), tasks }
}

impl From<&Dep> for ColumnDep {
    fn from(d: &Dep) -> Self {
        ColumnDep { task: d.task.clone(), column: d.column.clone(), how: d.how }
    }
}

/// What an extract reads or a load writes.
pub fn dataset(kind: &super::TaskKind) -> Option<Dataset> {
    use crate::source::SourcePlan;
    match kind {
        super::TaskKind::Extract(e) => Some(match &e.source {
            SourcePlan::Files(f) => Dataset {
                store: f.store.name.clone(),
                kind: "files".to_string(),
                name: format!("{}/{}", f.store.display_url.trim_end_matches('/'), f.glob.pattern),
            },
            SourcePlan::Database(d) => {
                let (store, url) = d.store();
                let what = match d.relation() {
                    crate::source::database::Relation::Table(t) => format!("table {t}"),
                    crate::source::database::Relation::Query(q) => format!("query {}", q.trim()),
                };
                Dataset { store: store.to_string(), kind: d.kind().id().to_string(), name: format!("{url} {what}") }
            }
            SourcePlan::Http(h) => {
                Dataset { store: h.store.name.clone(), kind: "http".to_string(), name: h.describe() }
            }
        }),
        super::TaskKind::Load(l) => Some(match &l.target {
            super::LoadTarget::Files(f) => Dataset {
                store: f.store.name.clone(),
                kind: l.target_kind().to_string(),
                name: format!("{}/{}/", f.store.display_url.trim_end_matches('/'), f.path),
            },
            super::LoadTarget::Table(t) => Dataset {
                store: t.store.name().to_string(),
                kind: l.target_kind().to_string(),
                name: format!("{} table {}", t.store.display_url(), t.table),
            },
        }),
        super::TaskKind::Transform(_) => None,
    }
}

/// A path's dependency, `have` so far and one `step` further from the focus: direct steps keep
/// the strongest; the step that is not direct nearest the column read (upstream the column
/// reached, downstream the focus) names it: how that column is used.
fn along(have: How, step: How, direction: Direction) -> How {
    match direction {
        Direction::Downstream if !have.direct() => have,
        _ => have.then(step),
    }
}

/// Every column reached from `task.column` of `plan` in `direction`; `None` if there is no
/// such column.
pub fn focus(plan: &super::Plan, task: &str, column: &str, direction: Direction) -> Option<Focus> {
    let i = plan.index_of(task)?;
    let start = plan.graph[i].schema.index_of(column).ok()?;
    // Edges as (task index, column index) → [(task index, column index, how)]; `usize::MAX` as
    // a column stands for "every column" (rows).
    type Node = (super::NodeIndex, usize);
    let col_of = |t: super::NodeIndex, c: &str| plan.graph[t].schema.index_of(c).ok();
    let mut next: std::collections::HashMap<Node, Vec<(Node, How)>> = Default::default();
    for &t in &plan.order {
        let l = &plan.graph[t].lineage;
        let width = plan.graph[t].schema.fields().len();
        for (k, deps) in l.columns.iter().enumerate() {
            for d in deps {
                let Some(u) = plan.index_of(&d.task) else { continue };
                let Some(c) = col_of(u, &d.column) else { continue };
                match direction {
                    Direction::Upstream => next.entry((t, k)).or_default().push(((u, c), d.how)),
                    Direction::Downstream => next.entry((u, c)).or_default().push(((t, k), d.how)),
                }
            }
        }
        for d in &l.rows {
            let Some(u) = plan.index_of(&d.task) else { continue };
            let Some(c) = col_of(u, &d.column) else { continue };
            for k in 0..width {
                match direction {
                    Direction::Upstream => next.entry((t, k)).or_default().push(((u, c), d.how)),
                    Direction::Downstream => next.entry((u, c)).or_default().push(((t, k), d.how)),
                }
            }
        }
    }
    let mut reached: std::collections::HashMap<Node, (BTreeSet<How>, usize)> = Default::default();
    let mut queue: std::collections::VecDeque<(Node, How, usize)> = [((i, start), How::Copy, 0)].into();
    while let Some((n, how, dist)) = queue.pop_front() {
        for &(m, step) in next.get(&n).into_iter().flatten() {
            let h = along(how, step, direction);
            let entry = reached.entry(m).or_insert_with(|| (BTreeSet::new(), dist + 1));
            if entry.0.insert(h) {
                queue.push_back((m, h, dist + 1));
            }
        }
    }
    reached.remove(&(i, start));
    let position: std::collections::HashMap<super::NodeIndex, usize> =
        plan.order.iter().enumerate().map(|(k, &t)| (t, k)).collect();
    let mut list: Vec<(Node, BTreeSet<How>, usize)> = reached.into_iter().map(|(n, (h, d))| (n, h, d)).collect();
    list.sort_by_key(|((t, c), _, d)| (*d, position[t], *c));
    let reaches = list
        .iter()
        .map(|((t, c), how, distance)| Reach {
            task: plan.graph[*t].name.clone(),
            column: plan.graph[*t].schema.field(*c).name().clone(),
            how: how.iter().copied().collect(),
            distance: *distance,
            kind: plan.graph[*t].kind.name().to_string(),
        })
        .collect::<Vec<_>>();
    let mut checks = Vec::new();
    if direction == Direction::Downstream {
        let mut columns: BTreeSet<(String, String)> =
            reaches.iter().map(|r| (r.task.clone(), r.column.clone())).collect();
        columns.insert((task.to_string(), column.to_string()));
        for &t in &plan.order {
            for c in &plan.graph[t].lineage.checks {
                for (rt, rc) in &c.reads {
                    if columns.contains(&(rt.clone(), rc.clone())) {
                        checks.push(FocusCheck {
                            task: plan.graph[t].name.clone(),
                            check: c.name.clone(),
                            kind: c.kind.to_string(),
                            column: format!("{rt}.{rc}"),
                        });
                    }
                }
            }
        }
    }
    Some(Focus {
        pipeline: plan.pipeline.clone(),
        task: task.to_string(),
        column: column.to_string(),
        direction,
        reaches,
        checks,
    })
}

/// `doc`'s tasks and columns narrowed to the focus and what it reaches.
pub fn narrow(doc: &mut PipelineLineage, f: &Focus) {
    let mut keep: BTreeSet<(String, String)> = f.reaches.iter().map(|r| (r.task.clone(), r.column.clone())).collect();
    keep.insert((f.task.clone(), f.column.clone()));
    let kept = |t: &str, c: &str| keep.contains(&(t.to_string(), c.to_string()));
    doc.tasks.retain_mut(|t| {
        let name = t.task.clone();
        t.columns.retain(|c| kept(&name, &c.name));
        for c in &mut t.columns {
            c.from.retain(|d| kept(&d.task, &d.column));
        }
        t.rows.retain(|d| kept(&d.task, &d.column));
        t.checks.retain(|c| c.reads.iter().any(|r| kept(&r.task, &r.column)));
        !t.columns.is_empty()
    });
}

/// The JSON Schema of [`LineageDocument`].
pub fn document_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(LineageDocument)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::datasource::empty::EmptyTable;
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    /// The lineage of `sql` over a few tables, as `column ← how task.col, …` lines and a last
    /// `(rows) ← …` line.
    fn lineage(sql: &str) -> Vec<String> {
        let ctx = SessionContext::new_with_state(super::super::session_state(
            super::super::session_config(),
            Default::default(),
        ));
        let tables: [(&str, Vec<(&str, DataType)>); 3] = [
            (
                "orders",
                vec![
                    ("id", DataType::Int64),
                    ("customer_id", DataType::Int64),
                    ("amount", DataType::Decimal128(12, 2)),
                    ("status", DataType::Utf8),
                    ("ts", DataType::Timestamp(TimeUnit::Microsecond, None)),
                ],
            ),
            (
                "customers",
                vec![("customer_id", DataType::Int64), ("region", DataType::Utf8), ("segment", DataType::Utf8)],
            ),
            ("small", vec![("n", DataType::Int32)]),
        ];
        for (name, cols) in tables {
            let schema = Schema::new(cols.into_iter().map(|(c, t)| Field::new(c, t, true)).collect::<Vec<_>>());
            ctx.register_table(name, Arc::new(EmptyTable::new(Arc::new(schema)))).unwrap();
        }
        let state = ctx.state();
        let a = super::super::sql::analyze(&state, sql).unwrap_or_else(|_| panic!("{sql}"));
        let is_task = |t: &str| ["orders", "customers", "small"].contains(&t);
        let planned = super::super::queries::plan_query_scans(&state, a.statement, &Default::default(), &is_task)
            .unwrap_or_else(|_| panic!("{sql}"));
        let show = |deps: &[Dep]| -> String {
            deps.iter().map(|d| format!("{} {}.{}", d.how.name(), d.task, d.column)).collect::<Vec<_>>().join(", ")
        };
        let (columns, rows) = planned.lineage.into_task();
        let mut out: Vec<String> =
            planned.schema.fields().iter().zip(&columns).map(|(f, d)| format!("{} ← {}", f.name(), show(d))).collect();
        out.push(format!("(rows) ← {}", show(&rows)));
        out
    }

    fn check(sql: &str, expected: &[&str]) {
        assert_eq!(lineage(sql), expected, "\n{sql}");
    }

    #[test]
    fn select_star_and_renames_copy() {
        check(
            "SELECT * FROM customers",
            &[
                "customer_id ← copy customers.customer_id",
                "region ← copy customers.region",
                "segment ← copy customers.segment",
                "(rows) ← ",
            ],
        );
        check(
            "SELECT id AS order_id, amount * 2 AS doubled FROM orders o",
            &["order_id ← copy orders.id", "doubled ← transform orders.amount", "(rows) ← "],
        );
    }

    #[test]
    fn ctes_and_subqueries_in_from() {
        check(
            "WITH big AS (SELECT id, amount FROM orders WHERE amount > 100) SELECT id FROM big",
            &["id ← copy orders.id", "(rows) ← filter orders.amount"],
        );
        check(
            "SELECT x.region, x.n FROM (SELECT region, count(*) AS n FROM customers GROUP BY region) x",
            &["region ← copy customers.region", "n ← ", "(rows) ← group_by customers.region"],
        );
    }

    #[test]
    fn joins_using_and_outer() {
        check(
            "SELECT customer_id, o.amount, c.region FROM orders o JOIN customers c USING (customer_id)",
            &[
                "customer_id ← copy orders.customer_id",
                "amount ← copy orders.amount",
                "region ← copy customers.region",
                "(rows) ← join customers.customer_id, join orders.customer_id",
            ],
        );
        check(
            "SELECT COALESCE(o.customer_id, c.customer_id) AS k FROM orders o \
             FULL JOIN customers c ON o.customer_id = c.customer_id AND c.region <> 'x'",
            &[
                "k ← transform customers.customer_id, transform orders.customer_id",
                "(rows) ← join customers.customer_id, join customers.region, join orders.customer_id",
            ],
        );
    }

    #[test]
    fn unions_merge_by_position_and_coercion_keeps_copies() {
        check(
            "SELECT id, amount FROM orders UNION ALL SELECT customer_id, 0 FROM customers",
            &["id ← copy customers.customer_id, copy orders.id", "amount ← copy orders.amount", "(rows) ← "],
        );
        // `n` (int) is cast to bigint by type coercion: still a copy.
        check("SELECT id FROM orders UNION SELECT n FROM small", &["id ← copy orders.id, copy small.n", "(rows) ← "]);
    }

    #[test]
    fn casts_that_change_values_transform() {
        check(
            "SELECT CAST(ts AS DATE) AS day, CAST(id AS DOUBLE) AS f, CAST(customer_id AS DECIMAL(30, 0)) AS d, \
             CAST(n AS BIGINT) AS wide FROM orders, small",
            &[
                "day ← transform orders.ts",
                "f ← transform orders.id",
                "d ← copy orders.customer_id",
                "wide ← copy small.n",
                "(rows) ← ",
            ],
        );
    }

    #[test]
    fn windows_cases_and_aggregates() {
        check(
            "SELECT id, sum(amount) OVER (PARTITION BY customer_id ORDER BY ts) AS running, \
             row_number() OVER (ORDER BY ts) AS rn FROM orders",
            &[
                "id ← copy orders.id",
                "running ← aggregate orders.amount, window orders.customer_id, window orders.ts",
                "rn ← window orders.ts",
                "(rows) ← ",
            ],
        );
        check(
            "SELECT CASE WHEN status = 'paid' THEN amount ELSE 0 END AS paid FROM orders",
            &["paid ← transform orders.amount, transform orders.status", "(rows) ← "],
        );
        check(
            "SELECT customer_id, sum(amount) AS total, count(*) FILTER (WHERE status = 'paid') AS paid \
             FROM orders GROUP BY customer_id HAVING max(ts) > TIMESTAMP '2026-01-01 00:00:00'",
            &[
                "customer_id ← copy orders.customer_id",
                "total ← aggregate orders.amount",
                "paid ← filter orders.status",
                "(rows) ← group_by orders.customer_id, filter orders.ts",
            ],
        );
        check(
            "SELECT region, segment, count(*) AS n FROM customers GROUP BY ROLLUP (region, segment)",
            &[
                "region ← copy customers.region",
                "segment ← copy customers.segment",
                "n ← ",
                "(rows) ← group_by customers.region, group_by customers.segment",
            ],
        );
    }

    #[test]
    fn subqueries_in_expressions() {
        check(
            "SELECT id FROM orders WHERE customer_id IN (SELECT customer_id FROM customers WHERE region = 'north')",
            &[
                "id ← copy orders.id",
                "(rows) ← filter customers.customer_id, filter customers.region, filter orders.customer_id",
            ],
        );
        // A correlated subquery: its outer reference is the outer query's column.
        check(
            "SELECT c.region FROM customers c WHERE EXISTS \
             (SELECT 1 FROM orders o WHERE o.customer_id = c.customer_id AND o.amount > 5)",
            &[
                "region ← copy customers.region",
                "(rows) ← filter customers.customer_id, filter orders.amount, filter orders.customer_id",
            ],
        );
        check(
            "SELECT id, (SELECT max(amount) FROM orders) AS top FROM orders",
            &["id ← copy orders.id", "top ← aggregate orders.amount", "(rows) ← "],
        );
    }

    #[test]
    fn sorts_limits_and_distinct_on() {
        check(
            "SELECT id FROM orders ORDER BY amount DESC LIMIT 10",
            &["id ← copy orders.id", "(rows) ← sort orders.amount"],
        );
        check(
            "SELECT DISTINCT ON (customer_id) customer_id, amount FROM orders ORDER BY customer_id, ts DESC",
            &[
                "customer_id ← copy orders.customer_id",
                "amount ← copy orders.amount",
                "(rows) ← group_by orders.customer_id, sort orders.customer_id, sort orders.ts",
            ],
        );
        check("SELECT DISTINCT region FROM customers", &["region ← copy customers.region", "(rows) ← "]);
    }

    #[test]
    fn constants_depend_on_nothing() {
        check("SELECT 1 AS one, 'x' AS s FROM orders", &["one ← ", "s ← ", "(rows) ← "]);
        check("SELECT * FROM (VALUES (1, 'a')) AS v(k, t)", &["k ← ", "t ← ", "(rows) ← "]);
    }

    #[test]
    fn lossless_casts() {
        use DataType::*;
        assert!(lossless(&Int32, &Int64));
        assert!(!lossless(&Int64, &Int32));
        assert!(lossless(&UInt32, &Int64));
        assert!(!lossless(&UInt64, &Int64));
        assert!(lossless(&Int32, &Float64));
        assert!(!lossless(&Int64, &Float64));
        assert!(lossless(&Decimal128(12, 2), &Decimal128(20, 4)));
        assert!(!lossless(&Decimal128(12, 2), &Decimal128(12, 4)));
        assert!(!lossless(&Decimal128(12, 2), &Decimal128(12, 0)));
        assert!(lossless(&Date32, &Timestamp(TimeUnit::Microsecond, None)));
        assert!(!lossless(&Timestamp(TimeUnit::Microsecond, None), &Date32));
        assert!(lossless(&Utf8, &Utf8View));
        assert!(!lossless(&Int64, &Utf8));
    }

    #[test]
    fn paths_name_how_the_column_read_is_used() {
        // Upstream: the indirect step nearest the column reached names it.
        assert_eq!(along(How::GroupBy, How::Copy, Direction::Upstream), How::GroupBy);
        assert_eq!(along(How::GroupBy, How::Filter, Direction::Upstream), How::Filter);
        assert_eq!(along(How::Copy, How::Aggregate, Direction::Upstream), How::Aggregate);
        assert_eq!(along(How::Aggregate, How::Copy, Direction::Upstream), How::Aggregate);
        // Downstream: the one nearest the focus.
        assert_eq!(along(How::Filter, How::GroupBy, Direction::Downstream), How::Filter);
        assert_eq!(along(How::Transform, How::Join, Direction::Downstream), How::Join);
    }
}
