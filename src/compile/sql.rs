//! Transform SQL: parse, sandbox, and find the tables it reads.
//!
//! The sandbox allows one query (`SELECT`, `WITH … SELECT`, `VALUES`) that reads tasks by
//! their bare names. Refused anywhere in the statement, nested or not: DDL, DML, `COPY`,
//! `SET`, `SELECT … INTO`, `EXPLAIN`, table functions other than `generate_series`/`range`/
//! `unnest`, qualified names (`schema.table`) and file paths or URLs used as tables. The
//! logical plan is verified again with DataFusion's `SQLOptions`.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::execution::context::SQLOptions;
use datafusion::execution::session_state::SessionState;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{ObjectName, Query, SetExpr, Spanned, Statement, TableFactor, Visit, Visitor};
use datafusion::sql::sqlparser::tokenizer::Span;

/// A problem in a transform's SQL; `span` is (byte offset, byte length) in the SQL text.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlIssue {
    pub code: &'static str,
    pub message: String,
    pub help: Option<String>,
    pub span: Option<(usize, usize)>,
}

impl SqlIssue {
    fn new(code: &'static str, message: impl Into<String>, span: Option<(usize, usize)>) -> Self {
        SqlIssue { code, message: message.into(), help: None, span }
    }

    fn help(mut self, h: impl Into<String>) -> Self {
        self.help = Some(h.into());
        self
    }
}

/// A parsed, sandboxed query and the tables it reads.
#[derive(Debug)]
pub struct Analyzed {
    pub statement: Box<DfStatement>,
    /// The tables read (CTE names excluded), each with where it first appears.
    pub tables: Vec<(String, Option<(usize, usize)>)>,
}

/// Table functions that read no files.
const ALLOWED_TABLE_FUNCTIONS: &[&str] = &["generate_series", "range", "unnest"];

/// What a transform's plan may contain: a query, no DDL, DML or statements (`SET`, …).
pub fn query_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// A row condition over a table with `schema` (`delete_when`): one boolean expression of its
/// columns, with no subquery, aggregate or window function.
pub fn predicate(
    state: &SessionState,
    text: &str,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Result<datafusion::logical_expr::Expr, String> {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::{Expr, ExprSchemable};
    let df_schema = datafusion::common::DFSchema::try_from(schema.clone()).map_err(|e| e.strip_backtrace())?;
    let expr = state.create_logical_expr(text, &df_schema).map_err(|e| {
        let m = crate::compile::clean_df_message(&e.strip_backtrace());
        // `SQL error: ParserError("Expected: …")` → `Expected: …`
        match m.split_once("ParserError(\"") {
            Some((_, rest)) => rest.trim_end_matches("\")").replace("\\\"", "\""),
            None => m,
        }
    })?;
    let forbidden = expr
        .exists(|e| {
            Ok(matches!(
                e,
                Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::AggregateFunction(_)
                    | Expr::WindowFunction(_)
                    | Expr::Placeholder(_)
            ))
        })
        .unwrap_or(true);
    if forbidden {
        return Err(
            "only a condition on the row's own columns is allowed (no subquery, aggregate or window function)".into()
        );
    }
    let ty = expr.get_type(&df_schema).map_err(|e| crate::compile::clean_df_message(&e.strip_backtrace()))?;
    if ty != datafusion::arrow::datatypes::DataType::Boolean && ty != datafusion::arrow::datatypes::DataType::Null {
        return Err(format!("the condition is a {}, not true or false", crate::compile::types::sql_name(&ty)));
    }
    Ok(expr)
}

/// Whether `text` is a valid `delete_when` over `schema` (see [`predicate`]).
pub fn check_predicate(
    state: &SessionState,
    text: &str,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Result<(), String> {
    predicate(state, text, schema).map(|_| ())
}

/// Parse and sandbox `sql`. All sandbox problems are reported, not just the first.
pub fn analyze(state: &SessionState, sql: &str) -> Result<Analyzed, Vec<SqlIssue>> {
    if sql.trim().is_empty() {
        return Err(vec![SqlIssue::new("sql-parse", "the SQL is empty", None).help("write one SELECT query")]);
    }
    let dialect = state.config_options().sql_parser.dialect;
    let statement = match state.sql_to_statement(sql, &dialect) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.strip_backtrace();
            if msg.contains("only supports a single SQL statement") {
                return Err(vec![
                    SqlIssue::new("sql-sandbox", "a transform runs exactly one query, found several statements", None)
                        .help("remove the extra statements (and any `;` between them)"),
                ]);
            }
            return Err(vec![parse_issue(sql, &msg)]);
        }
    };

    let query = match &statement {
        DfStatement::Statement(s) => match s.as_ref() {
            Statement::Query(q) => q.clone(),
            other => {
                return Err(vec![refused_statement(&statement_kind(other), Some(span_of(sql, other.span())))]);
            }
        },
        DfStatement::CreateExternalTable(_) => {
            return Err(vec![refused_statement("CREATE EXTERNAL TABLE", None)]);
        }
        DfStatement::CopyTo(_) => return Err(vec![refused_statement("COPY", None)]),
        DfStatement::Explain(_) => return Err(vec![refused_statement("EXPLAIN", None)]),
        DfStatement::Reset(_) => return Err(vec![refused_statement("RESET", None)]),
    };

    let mut v = Sandbox { sql, issues: Vec::new(), relations: Vec::new(), depth: 0 };
    let _ = query.visit(&mut v);
    if !v.issues.is_empty() {
        return Err(v.issues);
    }

    let normalize = state.config_options().sql_parser.enable_ident_normalization;
    let (refs, _ctes) = match datafusion::sql::resolve::resolve_table_references(&statement, normalize) {
        Ok(r) => r,
        Err(e) => return Err(vec![SqlIssue::new("sql-parse", e.strip_backtrace(), None)]),
    };
    let mut tables = Vec::new();
    for r in refs {
        let name = r.table().to_string();
        if ALLOWED_TABLE_FUNCTIONS.contains(&name.as_str()) && v.relations.iter().any(|(n, _, f)| *n == name && *f) {
            continue;
        }
        let span = v.relations.iter().find(|(n, _, _)| *n == name).and_then(|(_, s, _)| *s);
        tables.push((name, span));
    }
    tables.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Analyzed { statement: Box::new(statement), tables })
}

fn refused_statement(kind: &str, span: Option<(usize, usize)>) -> SqlIssue {
    SqlIssue::new("sql-sandbox", format!("`{kind}` is not allowed in a transform: only a query may run"), span)
        .help("a transform is one SELECT (or WITH … SELECT, or VALUES); weir writes outputs through `load` tasks")
}

/// The leading keywords of a statement, e.g. `CREATE TABLE`, `INSERT INTO`, `SET`.
fn statement_kind(s: &Statement) -> String {
    let text = s.to_string();
    let words: Vec<&str> = text.split_whitespace().take(4).collect();
    let first = words.first().copied().unwrap_or("statement").to_ascii_uppercase();
    let takes_next =
        |w: &str| matches!(w, "CREATE" | "DROP" | "ALTER" | "INSERT" | "DELETE" | "TRUNCATE" | "SHOW" | "REPLACE");
    let mut kind = first.clone();
    if takes_next(&first) {
        for w in words.iter().skip(1) {
            let up = w.to_ascii_uppercase();
            let keyword = matches!(
                up.as_str(),
                "TABLE"
                    | "VIEW"
                    | "INTO"
                    | "FROM"
                    | "OR"
                    | "EXTERNAL"
                    | "TEMPORARY"
                    | "TEMP"
                    | "SCHEMA"
                    | "DATABASE"
                    | "FUNCTION"
                    | "INDEX"
                    | "UNBOUNDED"
                    | "TABLES"
                    | "COLUMNS"
                    | "MATERIALIZED"
            );
            if !keyword {
                break;
            }
            kind.push(' ');
            kind.push_str(&up);
        }
    }
    kind
}

struct Sandbox<'a> {
    sql: &'a str,
    issues: Vec<SqlIssue>,
    /// (normalized name, span, used as a table function)
    relations: Vec<(String, Option<(usize, usize)>, bool)>,
    depth: usize,
}

impl Visitor for Sandbox<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        // The root query is visited as a Query, not a Statement: any statement here is nested.
        let kind = statement_kind(s);
        self.issues.push(
            SqlIssue::new(
                "sql-sandbox",
                format!("`{kind}` inside a query is not allowed in a transform"),
                opt_span(self.sql, s.span()),
            )
            .help("a transform may only read data"),
        );
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        self.depth += 1;
        if let SetExpr::Select(sel) = q.body.as_ref()
            && let Some(into) = &sel.into
        {
            self.issues.push(
                SqlIssue::new(
                    "sql-sandbox",
                    "`SELECT … INTO` is not allowed in a transform",
                    opt_span(self.sql, into.name.span()),
                )
                .help("remove `INTO …`: the transform's result is its table"),
            );
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            TableFactor::Table { name, args, .. } => {
                let span = opt_span(self.sql, name.span());
                let text = name_text(name);
                if args.is_some() {
                    if ALLOWED_TABLE_FUNCTIONS.contains(&text.to_ascii_lowercase().as_str()) {
                        self.relations.push((text.to_ascii_lowercase(), span, true));
                    } else {
                        self.issues.push(
                            SqlIssue::new(
                                "sql-sandbox",
                                format!("table function `{text}` is not allowed in a transform"),
                                span,
                            )
                            .help("read files with an `extract` task and refer to it by name"),
                        );
                    }
                    return ControlFlow::Continue(());
                }
                if looks_like_path(&text) {
                    self.issues.push(
                        SqlIssue::new(
                            "sql-sandbox",
                            format!("file paths and URLs cannot be read from SQL: `{text}`"),
                            span,
                        )
                        .help("declare an `extract` task for the files and refer to it by name"),
                    );
                } else if name.0.len() > 1 {
                    self.issues.push(
                        SqlIssue::new("sql-sandbox", format!("qualified table name `{text}` is not allowed"), span)
                            .help("refer to tasks by their bare name"),
                    );
                } else {
                    let normalized = match name.0.first().and_then(|p| p.as_ident()) {
                        Some(id) if id.quote_style.is_some() => id.value.clone(),
                        Some(id) => id.value.to_lowercase(),
                        None => text.clone(),
                    };
                    self.relations.push((normalized, span, false));
                }
            }
            TableFactor::TableFunction { .. } | TableFactor::Function { .. } => {
                self.issues.push(
                    SqlIssue::new(
                        "sql-sandbox",
                        "table functions are not allowed in a transform",
                        opt_span(self.sql, t.span()),
                    )
                    .help("read files with an `extract` task and refer to it by name"),
                );
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

fn name_text(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| p.as_ident().map(|i| i.value.clone()).unwrap_or_else(|| p.to_string()))
        .collect::<Vec<_>>()
        .join(".")
}

fn looks_like_path(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    lower.contains('/')
        || lower.contains('\\')
        || lower.contains("://")
        || [".csv", ".parquet", ".json", ".ndjson", ".jsonl", ".avro", ".arrow", ".gz", ".zst"]
            .iter()
            .any(|e| lower.ends_with(e))
}

/// Like [`span_of`], `None` for an empty span (the parser did not record one).
fn opt_span(sql: &str, span: Span) -> Option<(usize, usize)> {
    (span.start.line != 0).then(|| span_of(sql, span))
}

/// (offset, len) in bytes of an sqlparser span in `sql`.
pub fn span_of(sql: &str, span: Span) -> (usize, usize) {
    if span.start.line == 0 {
        return (0, 0);
    }
    let start = offset_of(sql, span.start.line as usize, span.start.column as usize);
    let end = if span.end.line == 0 { start } else { offset_of(sql, span.end.line as usize, span.end.column as usize) };
    (start, end.saturating_sub(start))
}

/// (offset, len) in bytes of a DataFusion span in `sql`.
pub fn df_span_of(sql: &str, span: &datafusion::common::Span) -> (usize, usize) {
    if span.start.line == 0 {
        return (0, 0);
    }
    let start = offset_of(sql, span.start.line as usize, span.start.column as usize);
    let end = if span.end.line == 0 { start } else { offset_of(sql, span.end.line as usize, span.end.column as usize) };
    (start, end.saturating_sub(start))
}

/// Byte offset of a 1-based line and 1-based column (in characters).
pub fn offset_of(sql: &str, line: usize, col: usize) -> usize {
    let mut off = 0;
    for (i, l) in sql.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return off
                + l.char_indices()
                    .nth(col.saturating_sub(1))
                    .map(|(b, _)| b)
                    .unwrap_or(l.trim_end_matches('\n').len());
        }
        off += l.len();
    }
    sql.len()
}

/// A parser message with `Line: x, Column: y` turned into a located issue.
fn parse_issue(sql: &str, msg: &str) -> SqlIssue {
    let re = regex::Regex::new(r"\s*at Line: (\d+), Column: (\d+)").ok();
    let mut span = None;
    let mut message = msg.to_string();
    if let Some(re) = re
        && let Some(c) = re.captures(msg)
    {
        let line = c[1].parse().unwrap_or(1);
        let col = c[2].parse().unwrap_or(1);
        let off = offset_of(sql, line, col);
        let len =
            sql[off..].find(|c: char| c.is_whitespace() || c == ',' || c == ')').unwrap_or(sql.len() - off).max(1);
        span = Some((off, len.min(sql.len() - off)));
        message = re.replace(msg, "").to_string();
    }
    if span.is_none() && message.contains("found: EOF") {
        // The query ended too early: point at its last character.
        let end = sql.trim_end().len();
        let last = sql[..end].chars().next_back().map(char::len_utf8).unwrap_or(0);
        span = Some((end - last, last));
    }
    let message = message
        .trim_start_matches("SQL error: ")
        .trim_start_matches("ParserError(\"")
        .trim_end_matches("\")")
        .replace("sql parser error: ", "");
    SqlIssue::new("sql-parse", format!("SQL does not parse: {message}"), span)
}

/// SQL types as weir's `schema:` names them: `TIMESTAMP` (and `DATETIME`) without a
/// precision is microseconds, as in DuckDB, Spark and PostgreSQL — DataFusion's own default is
/// nanoseconds, whose range (1677–2262) would turn `CAST(d AS TIMESTAMP)` of an old or far
/// date into a run-time error; `TIMESTAMP WITH TIME ZONE` is microseconds in UTC. A precision
/// given (`TIMESTAMP(9)`) is kept.
#[derive(Debug)]
pub struct SqlTypes;

impl datafusion::logical_expr::planner::TypePlanner for SqlTypes {
    fn plan_type_field(
        &self,
        t: &datafusion::sql::sqlparser::ast::DataType,
    ) -> datafusion::error::Result<Option<datafusion::arrow::datatypes::FieldRef>> {
        use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
        use datafusion::sql::sqlparser::ast::{DataType as Sql, TimezoneInfo};
        let micros = |tz: Option<&str>| {
            Some(Arc::new(Field::new("", DataType::Timestamp(TimeUnit::Microsecond, tz.map(Into::into)), true)))
        };
        Ok(match t {
            Sql::Timestamp(None, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) | Sql::Datetime(None) => {
                micros(None)
            }
            Sql::Timestamp(None, TimezoneInfo::Tz | TimezoneInfo::WithTimeZone) => micros(Some("UTC")),
            Sql::Timestamp(Some(p), TimezoneInfo::Tz | TimezoneInfo::WithTimeZone) => {
                let unit = match p {
                    0 => TimeUnit::Second,
                    3 => TimeUnit::Millisecond,
                    6 => TimeUnit::Microsecond,
                    9 => TimeUnit::Nanosecond,
                    _ => return Ok(None),
                };
                Some(Arc::new(Field::new("", DataType::Timestamp(unit, Some("UTC".into())), true)))
            }
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    fn tables(sql: &str) -> Vec<String> {
        let ctx = SessionContext::new();
        let a = analyze(&ctx.state(), sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        a.tables.into_iter().map(|t| t.0).collect()
    }

    fn refused(sql: &str) -> Vec<SqlIssue> {
        let ctx = SessionContext::new();
        match analyze(&ctx.state(), sql) {
            Ok(a) => panic!("accepted: {sql}: {:?}", a.tables),
            Err(e) => e,
        }
    }

    #[test]
    fn dependencies_exclude_ctes_and_aliases() {
        assert_eq!(tables("SELECT * FROM orders o JOIN customers c ON o.id = c.id"), ["customers", "orders"]);
        assert_eq!(tables("WITH big AS (SELECT * FROM orders) SELECT * FROM big b"), ["orders"]);
        // a non-recursive CTE body may read a table of the same name
        assert_eq!(tables("WITH orders AS (SELECT * FROM orders) SELECT * FROM orders"), ["orders"]);
        assert_eq!(
            tables("SELECT (SELECT max(x) FROM a) FROM b WHERE y IN (SELECT y FROM c) AND EXISTS (SELECT 1 FROM d)"),
            ["a", "b", "c", "d"]
        );
        assert_eq!(tables("SELECT * FROM \"MixedCase\" UNION ALL SELECT * FROM Lower"), ["MixedCase", "lower"]);
        assert_eq!(tables("SELECT * FROM generate_series(1, 3)"), Vec::<String>::new());
        assert!(tables("VALUES (1), (2)").is_empty());
    }

    #[test]
    fn table_spans_point_into_the_sql() {
        let ctx = SessionContext::new();
        let sql = "SELECT *\nFROM orders o\n  JOIN custmers c USING (id)";
        let a = analyze(&ctx.state(), sql).unwrap();
        let (name, span) = &a.tables[0];
        assert_eq!(name, "custmers");
        let (off, len) = span.unwrap();
        assert_eq!(&sql[off..off + len], "custmers");
    }

    #[test]
    fn denylist() {
        let corpus = [
            ("CREATE TABLE x AS SELECT 1", "`CREATE TABLE` is not allowed"),
            ("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'", "`CREATE EXTERNAL TABLE` is not allowed"),
            ("CREATE VIEW v AS SELECT 1", "`CREATE VIEW` is not allowed"),
            ("DROP TABLE orders", "`DROP TABLE` is not allowed"),
            ("INSERT INTO orders VALUES (1)", "`INSERT INTO` is not allowed"),
            ("DELETE FROM orders", "`DELETE FROM` is not allowed"),
            ("UPDATE orders SET a = 1", "`UPDATE` is not allowed"),
            ("COPY orders TO '/tmp/x.csv'", "`COPY` is not allowed"),
            ("SET datafusion.execution.batch_size = 1", "`SET` is not allowed"),
            ("EXPLAIN SELECT 1", "`EXPLAIN` is not allowed"),
            ("SELECT 1; SELECT 2", "exactly one query"),
            ("SELECT * FROM '/etc/passwd'", "file paths and URLs cannot be read"),
            ("SELECT * FROM \"/etc/passwd\"", "file paths and URLs cannot be read"),
            ("SELECT * FROM \"s3://bucket/x.parquet\"", "file paths and URLs cannot be read"),
            ("SELECT * FROM \"data.csv\"", "file paths and URLs cannot be read"),
            ("SELECT * FROM read_csv('x.csv')", "table function `read_csv` is not allowed"),
            ("SELECT * FROM information_schema.tables", "qualified table name"),
            ("SELECT * FROM datafusion.public.orders", "qualified table name"),
            ("SELECT * INTO newtab FROM orders", "`SELECT … INTO` is not allowed"),
            ("WITH x AS (SELECT * FROM orders) SELECT * FROM (SELECT * FROM \"/tmp/y.parquet\") t", "file paths"),
            ("SELECT * FROM orders WHERE id IN (SELECT id FROM \"file:///etc/x.csv\")", "file paths"),
            ("WITH d AS (SELECT 1) DELETE FROM orders", "not allowed"),
            ("", "empty"),
        ];
        for (sql, expected) in corpus {
            let issues = refused(sql);
            assert!(
                issues.iter().any(|i| i.message.contains(expected)),
                "{sql}: expected `{expected}`, got {issues:?}"
            );
        }
    }

    #[test]
    fn parse_errors_are_located() {
        let issues = refused("SELECT a\nFROM t WHERE");
        assert_eq!(issues[0].code, "sql-parse");
        assert!(issues[0].span.is_some(), "{issues:?}");
    }
}
