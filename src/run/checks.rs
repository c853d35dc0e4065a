//! Evaluating a task's checks over its staged table, before anything downstream runs.
//!
//! Passes over the rows: one aggregate query for every row condition (`not_null`,
//! `accepted_values`, `expression`), the row count and the newest `freshness` value; one
//! `GROUP BY` per `unique`; one anti join per `relationships`; the `sql` queries; `schema`
//! reads no data. Samples are fetched only for the checks that trip. With
//! `on_check_failure: quarantine`, the rows failing row-level checks are written once each to
//! the quarantine location and the task's table becomes the rows that pass.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{JoinType, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, ExprFunctionExt, cast, ident, lit, not, when};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::error::{TaskError, cancellable};
use super::stage::{ScanResults, ScanSpec};
use crate::compile::types::{sql_name, widen};
use crate::compile::{CheckKind, CheckPlan, QuarantinePlan, TaskNode};
use crate::spec::Severity;

/// How many failing rows a result shows.
pub const SAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passed,
    /// Tripped its `warn_if` (or failed with `severity: warn`): reported, nothing blocked.
    Warned,
    /// Tripped its `error_if`: the task failed.
    Failed,
    /// Its failing rows were set aside (`on_check_failure: quarantine`).
    Quarantined,
}

impl CheckStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckStatus::Passed => "passed",
            CheckStatus::Warned => "warned",
            CheckStatus::Failed => "failed",
            CheckStatus::Quarantined => "quarantined",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    pub name: String,
    pub kind: &'static str,
    pub severity: &'static str,
    pub status: CheckStatus,
    /// Failing rows (row-level checks and `sql`); 1 or 0 for table-level checks.
    pub failing: u64,
    /// Rows checked.
    pub checked: u64,
    /// What failed, in words.
    pub message: String,
    /// Up to five failing rows (for `unique`: duplicated keys with their count).
    pub samples: Vec<SampleRow>,
}

/// A row as `column: value` pairs in the table's column order; serialized as a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow(pub Vec<(String, serde_json::Value)>);

impl serde::Serialize for SampleRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl std::fmt::Display for SampleRow {
    /// Compact JSON.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).unwrap_or_default())
    }
}

/// What the checks of a task found.
#[derive(Debug, Default)]
pub struct Checked {
    pub results: Vec<CheckResult>,
    /// Set when an error-severity check failed: the task fails with this message.
    pub gate: Option<String>,
    /// Rows written to the quarantine location, and where.
    pub quarantined: u64,
    pub quarantine_file: Option<String>,
    /// Rows of the table (before quarantine).
    pub rows: u64,
}

impl Checked {
    /// Rows that pass on to the task's consumers.
    pub fn passed(&self) -> u64 {
        self.rows.saturating_sub(self.quarantined)
    }
}

/// What a run's checks need to know about it.
pub struct CheckEnv<'a> {
    pub pipeline: &'a str,
    pub run_id: &'a str,
    pub logical_time: DateTime<Utc>,
    /// This run's staging directory (local disk), where the rows that pass a quarantine go.
    pub staging_dir: &'a std::path::Path,
    /// Quarantined rows are written to the quarantine store; `false` in `weir test`: they are
    /// counted and left out of the table, and nothing is written anywhere.
    pub set_aside: bool,
}

/// One check's failing rows, as the quarantine sees them.
enum Failing {
    /// The rows where this condition is false.
    Condition(Expr),
    /// The rows whose key columns match a row of this table of bad keys.
    Keys { columns: Vec<String>, keys: Arc<MemTable> },
}

/// The row conditions of `node`'s checks (`None` for checks without one), as logical
/// expressions over its table.
fn row_conditions(
    state: &datafusion::execution::session_state::SessionState,
    node: &TaskNode,
    schema: &SchemaRef,
) -> Result<Vec<Option<Expr>>, TaskError> {
    let mut conditions = Vec::with_capacity(node.checks.len());
    for c in &node.checks {
        conditions.push(match &c.kind {
            CheckKind::NotNull(cols) => cols.iter().map(|c| ident(c).is_not_null()).reduce(Expr::and),
            CheckKind::AcceptedValues { column, values } => {
                let list = values.iter().map(|v| lit(v.clone())).collect();
                Some(ident(column).in_list(list, false).or(ident(column).is_null()))
            }
            CheckKind::Expression(text) => Some(
                crate::compile::sql::predicate(state, text, schema)
                    .map_err(|m| TaskError::fatal(format!("check `{}`: {m}", c.name)))?,
            ),
            _ => None,
        });
    }
    Ok(conditions)
}

/// What to compute while `node`'s table (with `schema`) is staged: its row conditions (in
/// check order), freshness columns and `unique` keys.
pub fn scan_spec(
    state: &datafusion::execution::session_state::SessionState,
    node: &TaskNode,
    schema: &datafusion::common::DFSchema,
) -> Result<ScanSpec, TaskError> {
    let arrow: SchemaRef = Arc::new(schema.as_arrow().clone());
    let mut spec = ScanSpec::default();
    for cond in row_conditions(state, node, &arrow)?.into_iter().flatten() {
        spec.conditions.push(state.create_physical_expr(cond, schema)?);
    }
    let index = |c: &str| arrow.index_of(c).map_err(|e| TaskError::fatal(e.to_string()));
    for c in &node.checks {
        match &c.kind {
            CheckKind::Freshness { column, .. } => spec.maxima.push(index(column)?),
            CheckKind::Unique(cols) => spec.uniques.push(cols.iter().map(|c| index(c)).collect::<Result<_, _>>()?),
            _ => {}
        }
    }
    Ok(spec)
}

/// Evaluate the checks of `node`, whose table is registered (and staged) in `ctx`. `scanned`:
/// what staging computed (see [`scan_spec`]); without it, one aggregate query computes the
/// same. With quarantine, the table is registered again as the passing rows.
pub async fn evaluate(
    ctx: &SessionContext,
    node: &TaskNode,
    env: &CheckEnv<'_>,
    scanned: Option<ScanResults>,
    cancel: &CancellationToken,
) -> Result<Checked, TaskError> {
    let name = node.name.as_str();
    let table = ctx.table_provider(name).await?;
    let df = ctx.read_table(table.clone())?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let state = ctx.state();
    let routing = node.quarantine.as_ref().is_some_and(|q| q.checks);
    let conditions = row_conditions(&state, node, &schema)?;
    let clock = std::time::Instant::now();
    let scanned = match scanned {
        Some(s) => s,
        None => aggregate_pass(&df, node, &conditions, cancel).await?,
    };
    tracing::debug!(task = %name, ms = clock.elapsed().as_millis() as u64, "checks: counts ready");
    let rows = scanned.rows;
    // The scan's slots, in check order.
    let (mut next_fail, mut next_max, mut next_unique) = (0usize, 0usize, 0usize);

    let mut out = Checked { rows, ..Default::default() };
    let mut routed: Vec<(usize, Failing)> = Vec::new();
    let eval = Eval { ctx, df: &df, schema: &schema, rows, routing, cancel };
    for (k, c) in node.checks.iter().enumerate() {
        let Evaluated { failing, message, failing_rows, samples } = match &c.kind {
            CheckKind::NotNull(_) | CheckKind::AcceptedValues { .. } | CheckKind::Expression(_) => {
                let failing = scanned.fails.get(next_fail).copied().unwrap_or(0);
                next_fail += 1;
                eval.condition(&c.kind, conditions[k].clone().unwrap_or_else(|| lit(true)), failing).await?
            }
            CheckKind::Unique(cols) if !scanned.maybe_dups.get(next_unique).copied().unwrap_or(true) => {
                // No two keys hash alike: certainly unique, nothing more to read.
                next_unique += 1;
                Evaluated::whole(false, format!("({}) is unique in {rows} rows", cols.join(", ")))
            }
            CheckKind::Unique(cols) => {
                next_unique += 1;
                eval.unique(cols).await?
            }
            CheckKind::Relationships { column, to, field } => eval.relationship(column, to, field).await?,
            CheckKind::RowCount { min, max } => row_count(rows, *min, *max),
            CheckKind::Freshness { column, max_age } => {
                let newest = scanned.maxima.get(next_max).cloned().flatten().and_then(|v| newest_time(&v));
                next_max += 1;
                freshness(column, *max_age, newest, env.logical_time)
            }
            CheckKind::Schema(expected) => schema_check(&schema, expected),
            CheckKind::Sql(query) => eval.sql(query).await?,
        };
        tracing::debug!(task = %name, check = %c.name, ms = clock.elapsed().as_millis() as u64, "checks: evaluated");
        let status = judge(c, failing, rows, routing);
        if routing
            && c.kind.row_level()
            && failing > 0
            && let Some(f) = failing_rows
        {
            routed.push((k, f));
        }
        out.results.push(CheckResult {
            name: c.name.clone(),
            kind: c.kind.name(),
            severity: match c.severity {
                Severity::Error => "error",
                Severity::Warn => "warn",
            },
            status,
            failing,
            checked: rows,
            message,
            samples,
        });
    }

    let failed: Vec<&CheckResult> = out.results.iter().filter(|r| r.status == CheckStatus::Failed).collect();
    out.gate = match failed.as_slice() {
        [] => None,
        [one] => Some(format!("check `{}` failed: {}", one.name, one.message)),
        many => Some(format!(
            "{} checks failed: {}",
            many.len(),
            many.iter().map(|r| format!("`{}`", r.name)).collect::<Vec<_>>().join(", ")
        )),
    };
    if let (Some(q), false) = (node.quarantine.as_ref().filter(|q| q.checks), routed.is_empty()) {
        let (quarantined, file) = quarantine(ctx, node, q, df, &schema, &routed, env, cancel).await?;
        out.quarantined = quarantined;
        out.quarantine_file = Some(file);
    }
    Ok(out)
}

/// What evaluating one check found.
struct Evaluated {
    failing: u64,
    message: String,
    /// The failing rows, as a condition or keys, for quarantine.
    failing_rows: Option<Failing>,
    samples: Vec<SampleRow>,
}

impl Evaluated {
    /// A check that passes or fails as a whole.
    fn whole(failed: bool, message: String) -> Self {
        Evaluated { failing: u64::from(failed), message, failing_rows: None, samples: Vec::new() }
    }
}

/// The table under check and what evaluating a check needs besides.
struct Eval<'a> {
    ctx: &'a SessionContext,
    df: &'a DataFrame,
    schema: &'a SchemaRef,
    rows: u64,
    /// Failing rows are quarantined: find them, not only count them.
    routing: bool,
    cancel: &'a CancellationToken,
}

impl Eval<'_> {
    /// `not_null`, `accepted_values`, `expression`: `failing` rows (counted by the scan)
    /// fail `cond`; samples of them.
    async fn condition(&self, kind: &CheckKind, cond: Expr, failing: u64) -> Result<Evaluated, TaskError> {
        let (df, rows, cancel) = (self.df, self.rows, self.cancel);
        let mut samples = Vec::new();
        if failing > 0 {
            let rows = df.clone().filter(fails(cond.clone()))?.limit(0, Some(SAMPLES))?;
            samples = json_rows(&cancellable(cancel, rows.collect()).await?)?;
        }
        let what = match kind {
            CheckKind::NotNull(cols) => format!("NULL in {}", cols.join(" or ")),
            CheckKind::AcceptedValues { column, .. } => format!("`{column}` not in the accepted values"),
            CheckKind::Expression(e) => format!("not `{e}`"),
            _ => String::new(),
        };
        Ok(Evaluated {
            failing,
            message: rows_message(failing, rows, &what),
            failing_rows: Some(Failing::Condition(cond)),
            samples,
        })
    }

    /// `unique`: the duplicated keys counted, the most duplicated ones sampled.
    async fn unique(&self, cols: &[String]) -> Result<Evaluated, TaskError> {
        let (df, rows, routing, cancel) = (self.df, self.rows, self.routing, self.cancel);
        let mut samples = Vec::new();
        let keys: Vec<Expr> = cols.iter().map(ident).collect();
        let present = cols.iter().map(|c| ident(c).is_not_null()).reduce(Expr::and).unwrap_or(lit(true));
        let groups = df
            .clone()
            .filter(present)?
            .aggregate(keys, vec![datafusion::functions_aggregate::expr_fn::count(lit(1)).alias("__n")])?
            .filter(datafusion::logical_expr::col("__n").gt(lit(1i64)))?;
        let summary = groups.clone().aggregate(
            vec![],
            vec![
                datafusion::functions_aggregate::expr_fn::count(lit(1)).alias("__groups"),
                datafusion::functions_aggregate::expr_fn::sum(datafusion::logical_expr::col("__n")).alias("__dups"),
            ],
        )?;
        let summary = cancellable(cancel, summary.collect()).await?;
        let (ngroups, failing) = summary
            .first()
            .map(|b| {
                let v = |i: usize| -> u64 {
                    let a = b.column(i);
                    match cast_i64(a) {
                        Some(x) if !x.is_null(0) => x.value(0).max(0) as u64,
                        _ => 0,
                    }
                };
                (v(0), v(1))
            })
            .unwrap_or((0, 0));
        let mut failing_rows = None;
        if failing > 0 {
            let top = groups
                .clone()
                .sort(vec![datafusion::logical_expr::col("__n").sort(false, false)])?
                .limit(0, Some(SAMPLES))?
                .with_column_renamed("__n", "rows")?;
            samples = json_rows(&cancellable(cancel, top.collect()).await?)?;
            if routing {
                let keys = groups.select(cols.iter().map(ident).collect::<Vec<_>>())?;
                failing_rows = Some(Failing::Keys { columns: cols.to_vec(), keys: memtable(keys, cancel).await? });
            }
        }
        let what = format!(
            "({}) not unique ({} duplicated value{})",
            cols.join(", "),
            ngroups,
            if ngroups == 1 { "" } else { "s" }
        );
        let message = if failing == 0 {
            format!("({}) is unique in {rows} rows", cols.join(", "))
        } else {
            rows_message(failing, rows, &what)
        };
        Ok(Evaluated { failing, message, failing_rows, samples })
    }

    /// `relationships`: rows whose `column` is not among `to.field`'s values.
    async fn relationship(&self, column: &str, to: &str, field: &str) -> Result<Evaluated, TaskError> {
        let (ctx, df, schema, rows, routing, cancel) =
            (self.ctx, self.df, self.schema, self.rows, self.routing, self.cancel);
        let mut samples = Vec::new();
        let target = ctx.table(to).await?;
        let left_type = schema.field_with_name(column).map(|f| f.data_type().clone()).unwrap_or(DataType::Utf8);
        let right_type =
            target.schema().as_arrow().field_with_name(field).map(|f| f.data_type().clone()).unwrap_or(DataType::Utf8);
        let common = if left_type == right_type { left_type.clone() } else { widen(&left_type, &right_type) };
        let right = target.select(vec![cast(ident(field), common.clone()).alias("__ref")])?;
        let orphans = df.clone().filter(ident(column).is_not_null())?.join_on(
            right,
            JoinType::LeftAnti,
            vec![cast(ident(column), common).eq(datafusion::logical_expr::col("__ref"))],
        )?;
        let failing = cancellable(cancel, orphans.clone().count()).await? as u64;
        let mut failing_rows = None;
        if failing > 0 {
            samples = json_rows(&cancellable(cancel, orphans.clone().limit(0, Some(SAMPLES))?.collect()).await?)?;
            if routing {
                let keys = orphans.select(vec![ident(column)])?.distinct()?;
                failing_rows =
                    Some(Failing::Keys { columns: vec![column.to_string()], keys: memtable(keys, cancel).await? });
            }
        }
        let what = format!("`{column}` not found in `{to}.{field}`");
        Ok(Evaluated { failing, message: rows_message(failing, rows, &what), failing_rows, samples })
    }

    /// `sql`: the rows the query returns fail.
    async fn sql(&self, query: &str) -> Result<Evaluated, TaskError> {
        let (ctx, cancel) = (self.ctx, self.cancel);
        let mut samples = Vec::new();
        let q = ctx.sql_with_options(query, crate::compile::sql::query_only()).await?;
        let failing = cancellable(cancel, q.clone().count()).await? as u64;
        if failing > 0 {
            samples = json_rows(&cancellable(cancel, q.limit(0, Some(SAMPLES))?.collect()).await?)?;
        }
        let message = format!("the query returned {failing} row{}", if failing == 1 { "" } else { "s" });
        Ok(Evaluated { failing, message, failing_rows: None, samples })
    }
}

/// `row_count`: `rows` between `min` and `max`.
fn row_count(rows: u64, min: Option<u64>, max: Option<u64>) -> Evaluated {
    let low = min.is_some_and(|m| rows < m);
    let high = max.is_some_and(|m| rows > m);
    let bounds = match (min, max) {
        (Some(a), Some(b)) => format!("between {a} and {b}"),
        (Some(a), None) => format!("at least {a}"),
        (None, Some(b)) => format!("at most {b}"),
        (None, None) => "any number".into(),
    };
    Evaluated::whole(low || high, format!("{rows} rows; expected {bounds}"))
}

/// `freshness`: the newest value of `column` no older than `max_age` at `now` (the run's
/// logical time).
fn freshness(
    column: &str,
    max_age: std::time::Duration,
    newest: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Evaluated {
    let limit = humantime::format_duration(max_age);
    match newest {
        None => Evaluated::whole(true, format!("`{column}` has no values: no row is newer than {limit}")),
        Some(t) => {
            let age = now.signed_duration_since(t);
            let too_old = age.to_std().is_ok_and(|a| a > max_age);
            let age_text = match age.to_std() {
                Ok(a) => format!("{} old", humantime::format_duration(std::time::Duration::from_secs(a.as_secs()))),
                Err(_) => "in the future".to_string(),
            };
            Evaluated::whole(
                too_old,
                format!(
                    "newest `{column}` is {} ({age_text} at {}); allowed: {limit}",
                    t.format("%Y-%m-%d %H:%M:%S UTC"),
                    now.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            )
        }
    }
}

/// `schema`: every expected column present with its type.
fn schema_check(schema: &SchemaRef, expected: &[(String, DataType)]) -> Evaluated {
    let mut problems = Vec::new();
    for (col, want) in expected {
        match schema.field_with_name(col) {
            Err(_) => problems.push(format!("`{col}` is missing")),
            Ok(f) if sql_name(f.data_type()) != sql_name(want) => {
                problems.push(format!("`{col}` is {}, expected {}", sql_name(f.data_type()), sql_name(want)))
            }
            Ok(_) => {}
        }
    }
    let message = if problems.is_empty() {
        format!("{} column{} as expected", expected.len(), if expected.len() == 1 { "" } else { "s" })
    } else {
        problems.join("; ")
    };
    Evaluated::whole(!problems.is_empty(), message)
}

/// NOT coalesce(cond, false): NULL fails.
fn fails(cond: Expr) -> Expr {
    not(datafusion::functions::expr_fn::coalesce(vec![cond, lit(false)]))
}

/// The status a check's failing count gives it.
fn judge(c: &CheckPlan, failing: u64, checked: u64, routing: bool) -> CheckStatus {
    if !c.kind.counts_rows() {
        // Table-level: failing is 1 or 0.
        return match (failing > 0, c.severity) {
            (false, _) => CheckStatus::Passed,
            (true, Severity::Error) => CheckStatus::Failed,
            (true, Severity::Warn) => CheckStatus::Warned,
        };
    }
    if c.error_if.is_some_and(|t| t.met(failing, checked)) {
        CheckStatus::Failed
    } else if routing && c.kind.row_level() && failing > 0 {
        CheckStatus::Quarantined
    } else if c.warn_if.is_some_and(|t| t.met(failing, checked)) {
        CheckStatus::Warned
    } else {
        CheckStatus::Passed
    }
}

fn rows_message(failing: u64, rows: u64, what: &str) -> String {
    if failing == 0 {
        return format!("all {rows} rows pass");
    }
    let pct = failing as f64 * 100.0 / rows.max(1) as f64;
    format!("{failing} of {rows} rows ({}): {what}", fmt_pct(pct))
}

fn fmt_pct(p: f64) -> String {
    if p == p.round() {
        format!("{p:.0}%")
    } else if p >= 0.1 {
        format!("{p:.1}%")
    } else {
        format!("{p:.3}%")
    }
}

fn cast_i64(a: &ArrayRef) -> Option<Int64Array> {
    let c = datafusion::arrow::compute::cast(a, &DataType::Int64).ok()?;
    c.as_any().downcast_ref::<Int64Array>().cloned()
}

/// One aggregate query over the table: the row count, the failing rows of every row
/// condition, every freshness maximum. `unique` keys are not hashed here: they are checked
/// exactly.
async fn aggregate_pass(
    df: &DataFrame,
    node: &TaskNode,
    conditions: &[Option<Expr>],
    cancel: &CancellationToken,
) -> Result<ScanResults, TaskError> {
    let mut aggs = vec![datafusion::functions_aggregate::expr_fn::count(lit(1)).alias("__rows")];
    let mut fails_cols = Vec::new();
    let mut max_cols = Vec::new();
    for (k, cond) in conditions.iter().enumerate() {
        if let Some(cond) = cond {
            let alias = format!("__fail_{k}");
            aggs.push(
                datafusion::functions_aggregate::expr_fn::count(lit(1))
                    .filter(fails(cond.clone()))
                    .build()?
                    .alias(alias.clone()),
            );
            fails_cols.push(alias);
        }
        if let CheckKind::Freshness { column, .. } = &node.checks[k].kind {
            let alias = format!("__max_{k}");
            aggs.push(datafusion::functions_aggregate::expr_fn::max(ident(column)).alias(alias.clone()));
            max_cols.push(alias);
        }
    }
    let totals = cancellable(cancel, df.clone().aggregate(vec![], aggs)?.collect()).await?;
    let total = |col: &str| -> Option<ArrayRef> {
        let b = totals.first()?;
        let i = b.schema().index_of(col).ok()?;
        Some(b.column(i).clone())
    };
    let count_of = |col: &str| -> u64 {
        total(col).and_then(|a| a.as_any().downcast_ref::<Int64Array>().map(|a| a.value(0).max(0) as u64)).unwrap_or(0)
    };
    let uniques = node.checks.iter().filter(|c| matches!(c.kind, CheckKind::Unique(_))).count();
    Ok(ScanResults {
        rows: count_of("__rows"),
        fails: fails_cols.iter().map(|c| count_of(c)).collect(),
        maxima: max_cols
            .iter()
            .map(|c| {
                total(c).and_then(|a| {
                    if a.is_empty() || a.is_null(0) { None } else { ScalarValue::try_from_array(&a, 0).ok() }
                })
            })
            .collect(),
        maybe_dups: vec![true; uniques],
    })
}

/// A timestamp or date value as UTC.
fn newest_time(v: &ScalarValue) -> Option<DateTime<Utc>> {
    let micros = match v.clone() {
        ScalarValue::Date32(Some(d)) => d as i64 * 86_400_000_000,
        ScalarValue::Date64(Some(ms)) => ms * 1000,
        ScalarValue::TimestampSecond(Some(s), _) => s * 1_000_000,
        ScalarValue::TimestampMillisecond(Some(ms), _) => ms * 1000,
        ScalarValue::TimestampMicrosecond(Some(us), _) => us,
        ScalarValue::TimestampNanosecond(Some(ns), _) => ns / 1000,
        _ => return None,
    };
    DateTime::<Utc>::from_timestamp_micros(micros)
}

/// Rows as JSON objects in column order (NULLs written as `null`).
fn json_rows(batches: &[RecordBatch]) -> Result<Vec<SampleRow>, TaskError> {
    let Some(first) = batches.first() else { return Ok(Vec::new()) };
    let names: Vec<String> = first.schema().fields().iter().map(|f| f.name().clone()).collect();
    Ok(json_values(batches)?
        .into_iter()
        .map(|v| {
            let mut obj = match v {
                serde_json::Value::Object(o) => o,
                _ => Default::default(),
            };
            SampleRow(names.iter().map(|n| (n.clone(), obj.remove(n).unwrap_or(serde_json::Value::Null))).collect())
        })
        .collect())
}

fn json_values(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>, TaskError> {
    let mut buf = Vec::new();
    {
        let mut w = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut buf);
        for b in batches {
            w.write(b).map_err(|e| TaskError::fatal(format!("cannot show sample rows: {e}")))?;
        }
        w.finish().map_err(|e| TaskError::fatal(format!("cannot show sample rows: {e}")))?;
    }
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_slice::<serde_json::Value>(&buf) {
        Ok(serde_json::Value::Array(v)) => Ok(v),
        _ => Ok(Vec::new()),
    }
}

/// Collect a (small) table of bad keys into memory.
async fn memtable(df: DataFrame, cancel: &CancellationToken) -> Result<Arc<MemTable>, TaskError> {
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = cancellable(cancel, df.collect()).await?;
    Ok(Arc::new(MemTable::try_new(schema, vec![batches])?))
}

/// Write the rows failing `routed` checks to the quarantine location, and register the rows
/// that pass as the task's table. Returns the rows written and the file's URL.
#[allow(clippy::too_many_arguments)]
async fn quarantine(
    ctx: &SessionContext,
    node: &TaskNode,
    q: &QuarantinePlan,
    df: DataFrame,
    schema: &SchemaRef,
    routed: &[(usize, Failing)],
    env: &CheckEnv<'_>,
    cancel: &CancellationToken,
) -> Result<(u64, String), TaskError> {
    // Each key-set check joins its bad keys with a marker column; conditions are direct.
    let mut annotated = df;
    let mut fail_exprs: Vec<(usize, Expr)> = Vec::new();
    for (j, (k, f)) in routed.iter().enumerate() {
        match f {
            Failing::Condition(cond) => fail_exprs.push((*k, fails(cond.clone()))),
            Failing::Keys { columns, keys } => {
                let marker = format!("__bad_{j}");
                let renamed: Vec<Expr> = columns
                    .iter()
                    .enumerate()
                    .map(|(m, c)| ident(c).alias(format!("__key_{j}_{m}")))
                    .chain(std::iter::once(lit(true).alias(marker.clone())))
                    .collect();
                let right = ctx.read_table(keys.clone())?.select(renamed)?;
                let on: Vec<Expr> = columns
                    .iter()
                    .enumerate()
                    .map(|(m, c)| ident(c).eq(datafusion::logical_expr::col(format!("__key_{j}_{m}"))))
                    .collect();
                annotated = annotated.join_on(right, JoinType::Left, on)?;
                fail_exprs.push((*k, datafusion::logical_expr::col(marker).is_not_null()));
            }
        }
    }
    let any_fail = fail_exprs.iter().map(|(_, e)| e.clone()).reduce(Expr::or).unwrap_or(lit(false));
    let original: Vec<Expr> = schema.fields().iter().map(|f| ident(f.name())).collect();

    let names: Vec<Expr> = fail_exprs
        .iter()
        .map(|(k, e)| when(e.clone(), lit(node.checks[*k].name.clone())).end())
        .collect::<Result<_, _>>()?;
    let reasons: Vec<Expr> =
        fail_exprs.iter().map(|(k, e)| when(e.clone(), reason(&node.checks[*k])).end()).collect::<Result<_, _>>()?;
    let mut projection = original.clone();
    projection.push(datafusion::functions::expr_fn::concat_ws(lit(","), names).alias("_check"));
    projection.push(datafusion::functions::expr_fn::concat_ws(lit("; "), reasons).alias("_reason"));
    projection.push(lit(env.run_id.to_string()).alias("_run_id"));
    let bad = annotated.clone().filter(any_fail.clone())?.select(projection)?;
    if !env.set_aside {
        let n = cancellable(cancel, bad.count()).await? as u64;
        let passed = annotated.filter(not(any_fail))?.select(original)?;
        let rows = cancellable(cancel, passed.collect()).await?;
        ctx.deregister_table(node.name.as_str())?;
        ctx.register_table(node.name.as_str(), Arc::new(MemTable::try_new(schema.clone(), vec![rows])?))?;
        return Ok((n, "(set aside in memory by `weir test`)".to_string()));
    }

    let rel = format!("{}/{}/{}/{}.parquet", q.path, env.pipeline, node.name, env.run_id);
    let path = q.store.path(&rel);
    let url = q.store.url_of(&path, false);
    let out_schema: SchemaRef = Arc::new(Schema::new(
        bad.schema().as_arrow().fields().iter().map(|f| f.as_ref().clone()).collect::<Vec<Field>>(),
    ));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).map_err(|e| TaskError::fatal(e.to_string()))?))
        .build();
    let write = async {
        let mut stream = bad.execute_stream().await?;
        // The object is visible only once complete (a multipart upload; locally a rename).
        let writer = object_store::buffered::BufWriter::new(q.store.object_store.clone(), path.clone());
        let mut w = AsyncArrowWriter::try_new(writer, out_schema, Some(props))?;
        let mut n = 0u64;
        while let Some(b) = stream.next().await {
            let b = b?;
            n += b.num_rows() as u64;
            w.write(&b).await?;
        }
        w.close().await?;
        Ok::<u64, datafusion::error::DataFusionError>(n)
    };
    let n = cancellable(cancel, write).await?;

    // The rows that pass, staged once: consumers read them (and count them as their input)
    // without computing the checks' joins again.
    let passed = annotated.filter(not(any_fail))?.select(original)?;
    let area = super::stage::Area::Local(env.staging_dir);
    let (written, files) = super::stage::stage_parquet(
        &area,
        &ctx.state(),
        passed.logical_plan().clone(),
        &format!("{}.passed", node.name),
        cancel,
    )
    .await?;
    ctx.deregister_table(node.name.as_str())?;
    ctx.register_table(
        node.name.as_str(),
        Arc::new(crate::source::files::table::FileSetTable::staged(schema.clone(), files).with_rows(written.rows)),
    )?;
    tracing::info!(task = %node.name, rows = n, file = %url, "rows quarantined");
    Ok((n, url))
}

/// Why a row fails check `c`, as an expression over the row (used where it fails).
fn reason(c: &CheckPlan) -> Expr {
    let text = |e: Expr| cast(e, DataType::Utf8);
    match &c.kind {
        CheckKind::NotNull(cols) => datafusion::functions::expr_fn::concat_ws(
            lit(", "),
            cols.iter()
                .map(|col| {
                    when(ident(col).is_null(), lit(format!("{col} is NULL")))
                        .end()
                        .unwrap_or_else(|_| lit(format!("{col} is NULL")))
                })
                .collect(),
        ),
        CheckKind::AcceptedValues { column, .. } => datafusion::functions::expr_fn::concat(vec![
            lit(format!("{column} = '")),
            text(ident(column)),
            lit("' is not an accepted value"),
        ]),
        CheckKind::Expression(e) => lit(format!("fails `{e}`")),
        CheckKind::Unique(cols) => lit(format!("({}) occurs more than once", cols.join(", "))),
        CheckKind::Relationships { column, to, field } => datafusion::functions::expr_fn::concat(vec![
            lit(format!("{column} = '")),
            text(ident(column)),
            lit(format!("' is not in {to}.{field}")),
        ]),
        _ => lit(c.name.clone()),
    }
}
