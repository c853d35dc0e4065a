//! Compiling `checks`, `on_check_failure` and `quarantine`: every column resolved against the
//! task's schema, conditions and queries planned, thresholds parsed, the quarantine location
//! resolved. All problems are reported with their place in the file.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::execution::session_state::SessionState;

use super::plan::{CheckKind, CheckPlan, QuarantinePlan, Threshold};
use super::{Compiler, DraftKind, Edge, HashMap, IncrementalPlan, NodeIndex, TaskGraph, plan, plan_query, sql, types};
use crate::diag::did_you_mean;
use crate::spec::span::YamlPath;
use crate::spec::{self, OnCheckFailure, Scalar, Severity};
use crate::storage::Store;
use crate::ypath;

/// What checks may refer to besides the task's own table.
pub(super) struct Tables<'a> {
    /// The schema of an extract or transform by name (`None`: a load, unknown, or broken).
    pub schema: &'a dyn Fn(&str) -> Option<SchemaRef>,
    /// Every task name (for suggestions), and the loads among them.
    pub names: &'a indexmap::IndexSet<&'a str>,
    pub loads: &'a HashSet<&'a str>,
    /// Tasks that read only what is new (incremental extracts and everything they feed).
    pub incremental: &'a HashSet<String>,
}

impl Compiler<'_> {
    /// The tasks a task's checks read (relationship targets, tables of `sql` checks), which
    /// must run before it. Problems found here (a check on a load, SQL outside the sandbox,
    /// unknown tables) are reported.
    pub(super) fn check_inputs(
        &mut self,
        state: &SessionState,
        name: &str,
        task: &spec::Task,
        names: &indexmap::IndexSet<&str>,
        loads: &HashSet<&str>,
    ) -> Vec<String> {
        let p = self.p;
        let base = ypath!["tasks", name];
        if task.load.is_some() {
            if !task.checks.is_empty() {
                let from = task.load.as_ref().map(|l| l.from.as_str()).unwrap_or_default();
                self.diags.push(
                    p.diag_key("checks", &base.key("checks"), "a load has no table of its own to check")
                        .help(format!("put the checks on the task it loads, `{from}`: they gate this load")),
                );
            }
            for key in ["on_check_failure", "quarantine"] {
                let set = if key == "quarantine" { task.quarantine.is_some() } else { task.on_check_failure.is_some() };
                if set {
                    self.diags.push(
                        p.diag_key("checks", &base.key(key), format!("`{key}` belongs to the task whose checks fail"))
                            .help("put it next to the `checks` of the task this load reads"),
                    );
                }
            }
            return Vec::new();
        }
        let mut inputs = Vec::new();
        for (k, c) in task.checks.iter().enumerate() {
            let path = base.key("checks").index(k);
            if let Some(r) = &c.relationships
                && r.to != name
            {
                inputs.push(r.to.clone());
            }
            let Some(query) = &c.sql else { continue };
            let sql_path = path.key("sql");
            match sql::analyze(state, query) {
                Ok(a) => {
                    for (table, span) in a.tables {
                        if table == name {
                            continue;
                        }
                        if loads.contains(table.as_str()) {
                            self.diags.push(self.sql_diag(
                                &sql_path,
                                query,
                                "unknown-table",
                                format!("`{table}` is a load: loads write files and have no table"),
                                span,
                            ));
                        } else if names.contains(table.as_str()) {
                            inputs.push(table);
                        } else {
                            let help = did_you_mean(&table, names.iter().copied().filter(|n| !loads.contains(n)))
                                .unwrap_or_else(|| "tables in SQL are task names".to_string());
                            self.diags.push(
                                self.sql_diag(
                                    &sql_path,
                                    query,
                                    "unknown-table",
                                    format!("unknown table `{table}` in SQL"),
                                    span,
                                )
                                .help(help),
                            );
                        }
                    }
                }
                Err(issues) => {
                    for i in issues {
                        self.diags.push(self.sql_diag(&sql_path, query, i.code, i.message, i.span).maybe_help(i.help));
                    }
                }
            }
        }
        inputs.sort();
        inputs.dedup();
        inputs
    }

    /// Compile the checks of task `name`, whose table has `schema`.
    pub(super) fn compile_checks(
        &mut self,
        state: &SessionState,
        name: &str,
        task: &spec::Task,
        schema: &SchemaRef,
        tables: &Tables<'_>,
    ) -> Vec<CheckPlan> {
        let base = ypath!["tasks", name, "checks"];
        let quarantine = task.on_check_failure == Some(OnCheckFailure::Quarantine);
        let mut out = Vec::new();
        let mut names: Vec<(String, YamlPath)> = Vec::new();
        let mut counters: std::collections::HashMap<&'static str, usize> = Default::default();
        for (k, c) in task.checks.iter().enumerate() {
            let path = base.index(k);
            let before = self.diags.len();
            let Some(kind) = self.check_kind(state, name, c, &path, schema, tables) else { continue };
            let (severity, error_if, warn_if) = self.thresholds(c, &path, &kind, quarantine);
            let check_name = self.check_name(name, c, &path, &kind, &mut counters, &names);
            names.push((check_name.clone(), path.clone()));
            if self.diags.len() == before {
                out.push(CheckPlan { name: check_name, kind, severity, error_if, warn_if });
            }
        }
        out
    }

    /// What check `c` (at `path`) checks; `None` when it names no kind, or two.
    fn check_kind(
        &mut self,
        state: &SessionState,
        name: &str,
        c: &spec::Check,
        path: &YamlPath,
        schema: &SchemaRef,
        tables: &Tables<'_>,
    ) -> Option<CheckKind> {
        let p = self.p;
        let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let kinds: Vec<&'static str> = [
            c.not_null.as_ref().map(|_| "not_null"),
            c.unique.as_ref().map(|_| "unique"),
            c.accepted_values.as_ref().map(|_| "accepted_values"),
            c.expression.as_ref().map(|_| "expression"),
            c.row_count.as_ref().map(|_| "row_count"),
            c.relationships.as_ref().map(|_| "relationships"),
            c.freshness.as_ref().map(|_| "freshness"),
            c.schema.as_ref().map(|_| "schema"),
            c.sql.as_ref().map(|_| "sql"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match kinds.len() {
            0 => {
                self.diags.push(
                    p.diag_key("checks", &path, "this check names no kind of check")
                        .help("use one of not_null, unique, accepted_values, expression, row_count, relationships, freshness, schema, sql"),
                );
                return None;
            }
            1 => {}
            _ => {
                self.diags.push(
                    p.diag_key(
                        "checks",
                        &path.key(kinds[1]),
                        format!("one check has both `{}` and `{}`", kinds[0], kinds[1]),
                    )
                    .help("write each as its own item of `checks`"),
                );
                return None;
            }
        }
        Some(if let Some(list) = &c.not_null {
            CheckKind::NotNull(self.check_columns(name, &cols, list, &path.key("not_null")))
        } else if let Some(list) = &c.unique {
            CheckKind::Unique(self.check_columns(name, &cols, list, &path.key("unique")))
        } else if let Some(av) = &c.accepted_values {
            self.accepted_values(name, &cols, av, &path.key("accepted_values"), schema)
        } else if let Some(cond) = &c.expression {
            if let Err(msg) = sql::check_predicate(state, cond, schema) {
                self.diags.push(
                    p.diag_value("checks", &path.key("expression"), cond.len(), format!("invalid `expression`: {msg}"))
                        .help(format!("a SQL condition every row of `{name}` must satisfy, e.g. `amount >= 0`")),
                );
            }
            CheckKind::Expression(cond.clone())
        } else if let Some(rc) = &c.row_count {
            if rc.min.is_none() && rc.max.is_none() {
                self.diags.push(
                    p.diag_key("checks", &path.key("row_count"), "`row_count` needs `min`, `max` or both")
                        .help("e.g. `row_count: { min: 1 }`"),
                );
            }
            if let (Some(lo), Some(hi)) = (rc.min, rc.max)
                && lo > hi
            {
                self.diags.push(p.diag_key(
                    "checks",
                    &path.key("row_count"),
                    format!("`min` ({lo}) is greater than `max` ({hi})"),
                ));
            }
            CheckKind::RowCount { min: rc.min, max: rc.max }
        } else if let Some(r) = &c.relationships {
            self.relationship(name, &cols, r, &path.key("relationships"), schema, tables)
        } else if let Some(f) = &c.freshness {
            self.freshness(name, &cols, f, &path.key("freshness"), schema)
        } else if let Some(expected) = &c.schema {
            let mut list = Vec::new();
            if expected.is_empty() {
                self.diags.push(p.diag_key("checks", &path.key("schema"), "`schema` lists no columns"));
            }
            for (col, ty) in expected {
                match types::parse_sql_type(ty) {
                    Ok(t) => list.push((col.clone(), t)),
                    Err(msg) => self.diags.push(
                        p.diag_value("type", &path.key("schema").key(col), ty.len(), msg)
                            .help(format!("known types: {}", types::TYPE_NAMES.join(", "))),
                    ),
                }
            }
            CheckKind::Schema(list)
        } else if let Some(query) = &c.sql {
            self.sql_check(state, name, query, &path.key("sql"), tables)
        } else {
            return None;
        })
    }

    /// Whether `col` is a column of `name` (`cols`); reported at `at` when not.
    fn check_column(&mut self, name: &str, cols: &[&str], col: &str, at: &YamlPath) -> bool {
        if cols.contains(&col) {
            return true;
        }
        let p = self.p;
        self.diags.push(
            p.diag_value("checks", at, col.len(), format!("column `{col}` is not in `{name}`")).maybe_help(
                did_you_mean(col, cols.iter().copied()).or_else(|| Some(format!("`{name}` has: {}", cols.join(", ")))),
            ),
        );
        false
    }

    /// The columns `list` names, each a column of `name` and named once.
    fn check_columns(&mut self, name: &str, cols: &[&str], list: &spec::Columns, at: &YamlPath) -> Vec<String> {
        let p = self.p;
        let v = list.to_vec();
        if v.is_empty() {
            self.diags.push(p.diag_key("checks", at, "name at least one column"));
        }
        for (j, col) in v.iter().enumerate() {
            let at = if matches!(list, spec::Columns::Many(_)) { at.index(j) } else { at.clone() };
            if self.check_column(name, cols, col, &at) && v[..j].contains(col) {
                self.diags.push(p.diag_value("checks", &at, col.len(), format!("`{col}` is listed twice")));
            }
        }
        v
    }

    /// `accepted_values` (at `at`): its values read as the column's type.
    fn accepted_values(
        &mut self,
        name: &str,
        cols: &[&str],
        av: &spec::AcceptedValues,
        at: &YamlPath,
        schema: &SchemaRef,
    ) -> CheckKind {
        let p = self.p;
        let mut values = Vec::new();
        if self.check_column(name, cols, &av.column, &at.key("column")) {
            let dt = schema.field_with_name(&av.column).map(|f| f.data_type().clone()).unwrap_or(DataType::Utf8);
            if av.values.is_empty() {
                self.diags.push(p.diag_key("checks", &at.key("values"), "`values` is empty"));
            }
            for (j, v) in av.values.iter().enumerate() {
                match accepted_value(v, &dt) {
                    Ok(s) => values.push(s),
                    Err(()) => self.diags.push(
                        p.diag_value(
                            "checks",
                            &at.key("values").index(j),
                            v.to_string().len(),
                            format!("`{v}` is not a value of column `{}` ({})", av.column, types::sql_name(&dt)),
                        )
                        .help("accepted values are written as the column's values"),
                    ),
                }
            }
        }
        CheckKind::AcceptedValues { column: av.column.clone(), values }
    }

    /// `relationships` (at `at`): the target is a task with a table read whole, with the
    /// field, of a type comparable with the column's.
    fn relationship(
        &mut self,
        name: &str,
        cols: &[&str],
        r: &spec::Relationships,
        at: &YamlPath,
        schema: &SchemaRef,
        tables: &Tables<'_>,
    ) -> CheckKind {
        let p = self.p;
        self.check_column(name, cols, &r.column, &at.key("column"));
        let target = if r.to == name { Some(schema.clone()) } else { (tables.schema)(&r.to) };
        if tables.loads.contains(r.to.as_str()) {
            self.diags.push(
                p.diag_value("checks", &at.key("to"), r.to.len(), format!("`{}` is a load and has no table", r.to))
                    .help("name the task it loads from"),
            );
        } else if !tables.names.contains(r.to.as_str()) {
            self.diags.push(
                p.diag_value("unknown-task", &at.key("to"), r.to.len(), format!("unknown task `{}`", r.to))
                    .maybe_help(did_you_mean(&r.to, tables.names.iter().copied())),
            );
        } else if tables.incremental.contains(&r.to) {
            self.diags.push(
                p.diag_value(
                    "checks",
                    &at.key("to"),
                    r.to.len(),
                    format!(
                        "`{}` reads only what is new (incremental): most referenced rows would be missing from it",
                        r.to
                    ),
                )
                .help("point `to` at a task that reads the whole table"),
            );
        } else if let Some(target) = target {
            match (target.field_with_name(&r.field), schema.field_with_name(&r.column)) {
                (Err(_), _) => {
                    let tcols: Vec<&str> = target.fields().iter().map(|f| f.name().as_str()).collect();
                    self.diags.push(
                        p.diag_value(
                            "checks",
                            &at.key("field"),
                            r.field.len(),
                            format!("column `{}` is not in `{}`", r.field, r.to),
                        )
                        .maybe_help(
                            did_you_mean(&r.field, tcols.iter().copied())
                                .or_else(|| Some(format!("`{}` has: {}", r.to, tcols.join(", ")))),
                        ),
                    );
                }
                (Ok(f), Ok(c)) if !comparable(f.data_type(), c.data_type()) => {
                    self.diags.push(p.diag_value(
                        "checks",
                        &at.key("field"),
                        r.field.len(),
                        format!(
                            "`{}.{}` is {} but `{}` is {}: they cannot be compared",
                            r.to,
                            r.field,
                            types::sql_name(f.data_type()),
                            r.column,
                            types::sql_name(c.data_type())
                        ),
                    ));
                }
                _ => {}
            }
        }
        CheckKind::Relationships { column: r.column.clone(), to: r.to.clone(), field: r.field.clone() }
    }

    /// `freshness` (at `at`): a timestamp or date column and a duration.
    fn freshness(
        &mut self,
        name: &str,
        cols: &[&str],
        f: &spec::FreshnessCheck,
        at: &YamlPath,
        schema: &SchemaRef,
    ) -> CheckKind {
        let p = self.p;
        if self.check_column(name, cols, &f.column, &at.key("column")) {
            let dt = schema.field_with_name(&f.column).map(|f| f.data_type().clone()).unwrap_or(DataType::Null);
            if !matches!(dt, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64) {
                self.diags.push(
                    p.diag_value(
                        "checks",
                        &at.key("column"),
                        f.column.len(),
                        format!("`{}` is {}, not a timestamp or date", f.column, types::sql_name(&dt)),
                    )
                    .help("freshness compares the newest timestamp or date with the run's logical time"),
                );
            }
        }
        let max_age = match spec::parse_duration(&f.max_age) {
            Ok(d) => d,
            Err(e) => {
                self.diags.push(
                    p.diag_value(
                        "duration",
                        &at.key("max_age"),
                        f.max_age.0.len(),
                        format!("invalid duration `{}`: {e}", f.max_age.0),
                    )
                    .help("write a number with a unit, e.g. `26h`, `2d`, `90m`"),
                );
                std::time::Duration::ZERO
            }
        };
        CheckKind::Freshness { column: f.column.clone(), max_age }
    }

    /// `sql` (at `sql_path`): a query planned once the tables it reads are.
    fn sql_check(
        &mut self,
        state: &SessionState,
        name: &str,
        query: &str,
        sql_path: &YamlPath,
        tables: &Tables<'_>,
    ) -> CheckKind {
        if let Ok(a) = sql::analyze(state, query) {
            // Tables not planned (their own errors) make this query fail too: skip it then.
            let ready = a.tables.iter().all(|(t, _)| t == name || (tables.schema)(t).is_some());
            if ready && let Err(issue) = plan_query(state, a.statement) {
                let d = match issue {
                    super::PlanIssue::DataFusion(e) => Some(self.df_error(sql_path, query, &e)),
                    super::PlanIssue::Sandbox(m) => Some(self.sql_diag(sql_path, query, "sql-sandbox", m, None)),
                    // Failing rows are counted, whatever their columns are called.
                    super::PlanIssue::DuplicateColumn(_) => None,
                };
                self.diags.extend(d);
            }
        }
        CheckKind::Sql(query.to_string())
    }

    /// Severity and thresholds of check `c`: counts of failing rows exist for row-level
    /// checks and `sql`; quarantined rows are set aside, not an error, unless `error_if` says so.
    fn thresholds(
        &mut self,
        c: &spec::Check,
        path: &YamlPath,
        kind: &CheckKind,
        quarantine: bool,
    ) -> (Severity, Option<Threshold>, Option<Threshold>) {
        let p = self.p;
        let severity = c.severity.unwrap_or_default();
        let parse = |this: &mut Self, key: &str, text: &Option<String>| -> Option<Threshold> {
            let text = text.as_ref()?;
            match Threshold::parse(text) {
                Ok(t) => Some(t),
                Err(msg) => {
                    this.diags.push(
                        p.diag_value("threshold", &path.key(key), text.len(), format!("invalid `{key}`: {msg}"))
                            .help("e.g. \"> 0\", \">= 10\", \"> 1%\""),
                    );
                    None
                }
            }
        };
        let error_if = parse(self, "error_if", &c.error_if);
        let warn_if = parse(self, "warn_if", &c.warn_if);
        if !kind.counts_rows() {
            for (key, set) in [("error_if", c.error_if.is_some()), ("warn_if", c.warn_if.is_some())] {
                if set {
                    self.diags.push(
                        p.diag_key("threshold", &path.key(key), format!("`{key}` does not apply to `{}`", kind.name()))
                            .help(
                                "thresholds count failing rows; this check passes or fails as a whole: use `severity`",
                            ),
                    );
                }
            }
        }
        if severity == Severity::Warn && c.error_if.is_some() {
            self.diags.push(
                p.diag_key("threshold", &path.key("error_if"), "`error_if` has no effect with `severity: warn`")
                    .help("remove `severity: warn` to let the check fail, or remove `error_if`"),
            );
        }
        let routed = quarantine && kind.row_level();
        let default = Threshold::parse("> 0").ok();
        let (error_if, warn_if) = match severity {
            // Quarantined rows are set aside, not an error, unless `error_if` says so.
            Severity::Error if routed => (error_if, warn_if.or(default)),
            Severity::Error => (error_if.or(default), warn_if.or(default)),
            Severity::Warn => (None, warn_if.or(default)),
        };
        (severity, error_if, warn_if)
    }

    /// The check's name (given, or made from its kind), unique among the task's checks.
    fn check_name(
        &mut self,
        name: &str,
        c: &spec::Check,
        path: &YamlPath,
        kind: &CheckKind,
        counters: &mut std::collections::HashMap<&'static str, usize>,
        names: &[(String, YamlPath)],
    ) -> String {
        let p = self.p;
        let check_name = match &c.name {
            Some(n) => {
                if n.is_empty() || !n.chars().all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch)) {
                    self.diags.push(
                        p.diag_value("checks", &path.key("name"), n.len(), format!("invalid check name `{n}`"))
                            .help("use letters, digits, `_`, `-` and `.`"),
                    );
                }
                n.clone()
            }
            None => default_name(kind, counters),
        };
        if let Some((_, first)) = names.iter().find(|(n, _)| *n == check_name) {
            let line = p.spans.key_pos(first).map(|p| p.line).unwrap_or(0);
            let at = if c.name.is_some() { path.key("name") } else { path.clone() };
            self.diags.push(
                p.diag_value(
                    "checks",
                    &at,
                    check_name.len(),
                    format!("two checks of `{name}` are named `{check_name}`"),
                )
                .help(format!("give one a different `name:` (the other is on line {line})")),
            );
        }
        check_name
    }

    /// Where task `name` quarantines rows; `first_load` is the first load downstream of it.
    pub(super) fn quarantine_plan(
        &mut self,
        name: &str,
        task: &spec::Task,
        checks: &[CheckPlan],
        stores: &indexmap::IndexMap<String, Arc<Store>>,
        first_load: Option<(&str, Arc<Store>)>,
    ) -> Option<QuarantinePlan> {
        let p = self.p;
        let base = ypath!["tasks", name];
        let by_checks = task.on_check_failure == Some(OnCheckFailure::Quarantine);
        let by_rows = task.extract.as_ref().and_then(|e| e.bad_rows) == Some(spec::BadRowsMode::Quarantine);
        if !by_checks && !by_rows {
            if task.quarantine.is_some() {
                self.diags.push(
                    p.diag_key(
                        "checks",
                        &base.key("quarantine"),
                        "`quarantine` is only used with `on_check_failure: quarantine` or `bad_rows: quarantine`",
                    )
                    .help("set one of them, or remove `quarantine`"),
                );
            }
            return None;
        }
        if by_checks
            && !task.checks.is_empty()
            && !checks.iter().any(|c| c.kind.row_level())
            && checks.len() == task.checks.len()
        {
            self.diags.push(
                p.diag_key("checks", &base.key("on_check_failure"), "no row-level check to quarantine rows by")
                    .help("quarantine applies to not_null, unique, accepted_values, expression and relationships"),
            );
            return None;
        }
        if by_checks && task.checks.is_empty() {
            self.diags.push(
                p.diag_key("checks", &base.key("on_check_failure"), format!("`{name}` has no `checks`"))
                    .help("add the checks whose failing rows should be set aside"),
            );
            return None;
        }
        let at = if by_checks { base.key("on_check_failure") } else { base.key("extract").key("bad_rows") };
        let spec_q = task.quarantine.clone().unwrap_or_default();
        let store = match &spec_q.store {
            Some(s) => match stores.get(s) {
                Some(st) => st.clone(),
                None => {
                    if !p.spec.stores.contains_key(s) && !p.broken_stores.contains(s) {
                        self.diags.push(self.unknown_store(name, "quarantine", s));
                    }
                    return None;
                }
            },
            None => match first_load {
                Some((_, st)) => st,
                None => {
                    self.diags.push(
                        p.diag_key(
                            "checks",
                            &at,
                            format!("no load downstream of `{name}` to take the quarantine store from"),
                        )
                        .help("name one: `quarantine: { store: lake }`"),
                    );
                    return None;
                }
            },
        };
        let raw = spec_q.path.clone().unwrap_or_else(|| "_quarantine".into());
        let Some(rel) = super::store_dir(&raw) else {
            self.diags.push(p.diag_value(
                "path",
                &base.key("quarantine").key("path"),
                raw.len(),
                format!("invalid quarantine path `{raw}`"),
            ));
            return None;
        };
        Some(QuarantinePlan { store, path: rel, checks: by_checks })
    }
}

/// `not_null_order_id_customer_id`, `unique_order_id`, `expression_2`, …
fn default_name(kind: &CheckKind, counters: &mut std::collections::HashMap<&'static str, usize>) -> String {
    let k = kind.name();
    match kind {
        CheckKind::NotNull(c) | CheckKind::Unique(c) => format!("{k}_{}", c.join("_")),
        CheckKind::AcceptedValues { column, .. } | CheckKind::Freshness { column, .. } => format!("{k}_{column}"),
        CheckKind::Relationships { column, to, .. } => format!("{k}_{column}_{to}"),
        CheckKind::RowCount { .. } | CheckKind::Schema(_) | CheckKind::Expression(_) | CheckKind::Sql(_) => {
            let n = counters.entry(k).or_insert(0);
            *n += 1;
            if *n == 1 { k.to_string() } else { format!("{k}_{n}") }
        }
    }
}

/// A YAML value of `accepted_values` as a value of the column's type.
fn accepted_value(v: &Scalar, dt: &DataType) -> Result<ScalarValue, ()> {
    let s = match v {
        Scalar::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Scalar::Integer(i) => ScalarValue::Int64(Some(*i)),
        Scalar::Float(f) => ScalarValue::Float64(Some(*f)),
        Scalar::Bool(b) => ScalarValue::Boolean(Some(*b)),
    };
    let cast = s.cast_to(dt).map_err(|_| ())?;
    if cast.is_null() {
        return Err(());
    }
    // A lossy cast (1.5 into an integer column) is not the value written.
    if let (Scalar::Float(f), Ok(back)) = (v, cast.cast_to(&DataType::Float64))
        && back != ScalarValue::Float64(Some(*f))
    {
        return Err(());
    }
    Ok(cast)
}

/// Whether values of the two types can be matched by equality.
fn comparable(a: &DataType, b: &DataType) -> bool {
    let family = |t: &DataType| -> u8 {
        use DataType::*;
        match t {
            Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float16 | Float32 | Float64
            | Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => 1,
            Utf8 | LargeUtf8 | Utf8View => 2,
            Date32 | Date64 | Timestamp(..) => 3,
            Boolean => 4,
            Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => 5,
            _ => 0,
        }
    };
    a == b || (family(a) != 0 && family(a) == family(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_and_compare_on_both_sides() {
        let t = |s: &str| Threshold::parse(s).unwrap();
        // (threshold, failing, checked, met)
        let cases = [
            ("> 0", 0, 10, false),
            ("> 0", 1, 10, true),
            (">= 10", 9, 100, false),
            (">= 10", 10, 100, true),
            ("< 5", 5, 100, false),
            ("< 5", 4, 100, true),
            ("<= 5", 6, 100, false),
            ("<= 5", 5, 100, true),
            ("= 3", 2, 100, false),
            ("= 3", 3, 100, true),
            ("!= 0", 0, 100, false),
            ("!= 0", 1, 100, true),
            ("> 1%", 1, 100, false),
            ("> 1%", 2, 100, true),
            (">=1%", 1, 100, true),
            ("> 2.5 %", 25, 1000, false),
            ("> 2.5 %", 26, 1000, true),
            ("> 0%", 0, 0, false),
        ];
        for (text, failing, checked, met) in cases {
            assert_eq!(t(text).met(failing, checked), met, "{text} with {failing} of {checked}");
        }
        for bad in ["0", "> x", ">= -1", "> 101%", "~ 3", "> 1.5"] {
            assert!(Threshold::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(t(">=1%").to_string(), ">= 1%");
    }

    #[test]
    fn accepted_values_take_the_column_type() {
        assert_eq!(accepted_value(&Scalar::Integer(3), &DataType::Int32), Ok(ScalarValue::Int32(Some(3))));
        assert_eq!(accepted_value(&Scalar::String("7".into()), &DataType::Int64), Ok(ScalarValue::Int64(Some(7))));
        assert!(accepted_value(&Scalar::String("x".into()), &DataType::Int64).is_err());
        assert!(accepted_value(&Scalar::Float(1.5), &DataType::Int64).is_err());
        assert_eq!(accepted_value(&Scalar::Integer(3), &DataType::Utf8), Ok(ScalarValue::Utf8(Some("3".into()))));
    }
}

impl Compiler<'_> {
    /// The checks and quarantine of every task that has them, once every table's schema is
    /// known; a quarantine goes to the store of the first load downstream.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plan_checks(
        &mut self,
        state: &SessionState,
        g: &TaskGraph,
        schemas: &HashMap<NodeIndex, SchemaRef>,
        incremental: &HashMap<NodeIndex, IncrementalPlan>,
        stores: &indexmap::IndexMap<String, Arc<Store>>,
        names: &indexmap::IndexSet<&str>,
        loads: &HashSet<&str>,
    ) -> (HashMap<NodeIndex, Vec<CheckPlan>>, HashMap<NodeIndex, QuarantinePlan>) {
        let p = self.p;
        let TaskGraph { graph, index, order } = g;
        // Checks, once every table's schema is known.
        let mut fed_incrementally: HashSet<String> = HashSet::new();
        for &i in order {
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
                    DraftKind::Extract { .. }
                    | DraftKind::DbExtract { .. }
                    | DraftKind::HttpExtract { .. }
                    | DraftKind::Transform { .. } => schemas.get(j).cloned(),
                    _ => None,
                }
            };
            let tables = Tables { schema: &schema_of, names, loads, incremental: &fed_incrementally };
            for &i in order {
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
                let list = self.compile_checks(state, &name, task, &schema, &tables);
                // The first load downstream, in file order.
                let first_load = plan::descendants_of(&graph, i)
                    .into_iter()
                    .filter_map(|j| match &graph[j].kind {
                        DraftKind::Load(l) => {
                            l.files().map(|f| (graph[j].position, graph[j].name.as_str(), f.store.clone()))
                        }
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

        (checks, quarantines)
    }
}
