//! The seam every database source sits behind (PostgreSQL, MySQL/MariaDB): what compile and
//! run ask of one, whatever the server. A kind of database brings a store (how to connect), a
//! plan (what is read, with which columns), a [`Dialect`] (how to quote names and write
//! literals) and its own errors; compile describes, prunes and pushes filters through
//! [`DbStore`] and [`DbPlan`], and the run reads through [`DbPlan::open_where`] or
//! [`DbTable`], never naming the server.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::streaming::PartitionStream;

use super::mysql::{MyError, MyPlan, MyStore};
use super::postgres::{PgError, PgPlan, PgStore};

/// What an extract reads from a database store.
#[derive(Debug, Clone)]
pub enum Relation {
    /// A table or view, schema-qualified or not (as written, e.g. `public.orders`).
    Table(String),
    /// One SELECT statement.
    Query(String),
}

impl Relation {
    /// The relation as SQL: a table name quoted part by part (a part already quoted is kept),
    /// or the query as a subquery.
    pub fn from_sql(&self, d: &dyn Dialect) -> String {
        match self {
            Relation::Table(t) => t
                .split('.')
                .map(|p| if p.starts_with(['"', '`']) { p.to_string() } else { d.quote_ident(p) })
                .collect::<Vec<_>>()
                .join("."),
            Relation::Query(q) => format!("({}) AS weir_query", q.trim().trim_end_matches(';')),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Relation::Table(t) => t.clone(),
            Relation::Query(_) => "query".into(),
        }
    }
}

/// `partition: { column, parts }`: ranges of `column` read on `parts` connections at once.
#[derive(Debug, Clone)]
pub struct Partition {
    pub column: String,
    pub parts: u32,
}

/// One part's key range: `low <= key < high` (SQL literals); the last part also reads NULL keys.
#[derive(Debug, Clone, PartialEq)]
pub struct PartRange {
    pub low: Option<String>,
    pub high: Option<String>,
}

impl PartRange {
    /// The range as a condition on `column` (quoted).
    pub fn condition(&self, column: &str) -> String {
        match (&self.low, &self.high) {
            (Some(lo), Some(hi)) => format!("{column} >= {lo} AND {column} < {hi}"),
            (Some(lo), None) => format!("({column} >= {lo} OR {column} IS NULL)"),
            (None, Some(hi)) => format!("{column} < {hi}"),
            (None, None) => "1 = 1".into(),
        }
    }
}

/// `parts` ranges of equal width between `lo` and `hi` (the key's minimum and maximum as
/// numbers), each bound written by `literal`; a range too narrow to cut is not cut. The first
/// range has no lower bound and the last no upper one, so every key is in exactly one.
pub fn cut_ranges(lo: f64, hi: f64, parts: u32, literal: impl Fn(f64) -> String) -> Vec<Option<PartRange>> {
    let n = parts.max(1) as usize;
    let width = (hi - lo) / n as f64;
    let mut out = Vec::with_capacity(n);
    let mut low: Option<String> = None;
    for k in 1..=n {
        let high = if k == n { None } else { Some(literal(lo + width * k as f64)) };
        if high.is_some() && high == low {
            continue;
        }
        out.push(Some(PartRange { low: low.clone(), high: high.clone() }));
        low = high;
    }
    out
}

/// How a kind of database writes what weir writes into its statements.
pub trait Dialect: Sync {
    fn quote_ident(&self, s: &str) -> String;
    /// `value` as a literal of its type; `None` for a type without one.
    fn literal(&self, value: &ScalarValue) -> Option<String>;
    /// Whether text `=` on the server is byte equality (PostgreSQL's default collations), or
    /// looser (MySQL's: case- and trailing-space-insensitive): a looser one may be pushed (it
    /// lets through every row an exact one keeps) but never negated.
    fn exact_text_equality(&self) -> bool;
    /// The SQL parser's dialect, for `query` checks.
    fn parser(&self) -> Box<dyn datafusion::sql::sqlparser::dialect::Dialect>;
}

/// A column of a database source, as the filter pushdown sees it.
pub trait SourceColumn {
    fn name(&self) -> &str;
    fn arrow(&self) -> &DataType;
    /// The type it is read as through a cast `schema:` declared (then nothing is pushed on it).
    fn cast_to(&self) -> Option<&str>;
    /// A text column whose `=` the server can evaluate.
    fn text(&self) -> bool;
}

/// `expr` (a filter DataFusion pushed to a scan of the source, over the source's `columns`)
/// as a condition for the server that holds for every row `expr` keeps, and whether it is
/// exact. Only forms that mean the same on both sides are written: comparisons of integer,
/// decimal, date and timestamp columns with literals, text equality and `IN` lists, boolean
/// columns, `IS [NOT] NULL`, `BETWEEN`, and `AND`/`OR`/`NOT` of those (a part of an `AND`
/// that cannot be written is left out, which only lets more rows through). Floats (NaN
/// orders differently), text order (collations), `LIKE` and functions are never pushed.
pub fn condition<C: SourceColumn>(
    expr: &datafusion::logical_expr::Expr,
    columns: &[C],
    d: &dyn Dialect,
) -> Option<(String, bool)> {
    use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
    let column = |e: &Expr| -> Option<&C> {
        match e {
            Expr::Column(c) => columns.iter().find(|pc| pc.name() == c.name),
            _ => None,
        }
    };
    let ordered = |c: &C| {
        (c.arrow().is_integer()
            || matches!(
                c.arrow(),
                DataType::Decimal128(..) | DataType::Date32 | DataType::Timestamp(TimeUnit::Microsecond, _)
            ))
            && c.cast_to().is_none()
    };
    let text = |c: &C| c.text() && c.cast_to().is_none();
    let boolean = |c: &C| *c.arrow() == DataType::Boolean && c.cast_to().is_none();
    // A literal the column can be compared with on the server.
    let value = |c: &C, e: &Expr| -> Option<String> {
        let Expr::Literal(v, _) = e else { return None };
        if v.is_null() {
            return None;
        }
        let fits = match (c.arrow(), v.data_type()) {
            (a, b) if a.is_integer() && b.is_integer() => true,
            (DataType::Decimal128(..), DataType::Decimal128(..)) => true,
            (DataType::Timestamp(TimeUnit::Microsecond, a), DataType::Timestamp(TimeUnit::Microsecond, b)) => {
                a.is_some() == b.is_some()
            }
            (a, b) => *a == b,
        };
        if fits { d.literal(v) } else { None }
    };
    let q = |c: &C| d.quote_ident(c.name());
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            match (condition(left, columns, d), condition(right, columns, d)) {
                (Some((l, le)), Some((r, re))) => Some((format!("({l} AND {r})"), le && re)),
                (Some((x, _)), None) | (None, Some((x, _))) => Some((x, false)),
                (None, None) => None,
            }
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            let (l, le) = condition(left, columns, d)?;
            let (r, re) = condition(right, columns, d)?;
            Some((format!("({l} OR {r})"), le && re))
        }
        Expr::Not(inner) => match inner.as_ref() {
            Expr::Column(_) => {
                let c = column(inner).filter(|c| boolean(c))?;
                Some((format!("(NOT {})", q(c)), true))
            }
            other => match condition(other, columns, d)? {
                (sql, true) => Some((format!("(NOT {sql})"), true)),
                _ => None,
            },
        },
        Expr::Column(_) => {
            let c = column(expr).filter(|c| boolean(c))?;
            Some((q(c), true))
        }
        Expr::IsNull(e) => Some((format!("({} IS NULL)", q(column(e)?)), true)),
        Expr::IsNotNull(e) => Some((format!("({} IS NOT NULL)", q(column(e)?)), true)),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (c, lit, op) = match (column(left), column(right)) {
                (Some(c), None) => (c, right.as_ref(), *op),
                (None, Some(c)) => (c, left.as_ref(), op.swap()?),
                _ => return None,
            };
            let sql_op = match op {
                Operator::Eq => "=",
                Operator::NotEq if ordered(c) => "<>",
                Operator::Lt if ordered(c) => "<",
                Operator::LtEq if ordered(c) => "<=",
                Operator::Gt if ordered(c) => ">",
                Operator::GtEq if ordered(c) => ">=",
                _ => return None,
            };
            let exact = if ordered(c) || boolean(c) {
                true
            } else if text(c) && op == Operator::Eq {
                d.exact_text_equality()
            } else {
                return None;
            };
            Some((format!("({} {sql_op} {})", q(c), value(c, lit)?), exact))
        }
        Expr::InList(list) => {
            let c = column(&list.expr)?;
            let exact = if ordered(c) {
                true
            } else if text(c) && !list.negated {
                d.exact_text_equality()
            } else {
                return None;
            };
            if list.list.is_empty() {
                return None;
            }
            let values = list.list.iter().map(|e| value(c, e)).collect::<Option<Vec<_>>>()?;
            let not = if list.negated { "NOT " } else { "" };
            Some((format!("({} {not}IN ({}))", q(c), values.join(", ")), exact))
        }
        Expr::Between(Between { expr, negated: false, low, high }) => {
            let c = column(expr).filter(|c| ordered(c))?;
            Some((format!("({} BETWEEN {} AND {})", q(c), value(c, low)?, value(c, high)?), true))
        }
        _ => None,
    }
}

/// Whether `query` is one SELECT statement (no DDL, DML, `SELECT … INTO`, several
/// statements, row locks); the reason when it is not.
pub fn check_query(query: &str, d: &dyn Dialect) -> Result<(), String> {
    use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
    use datafusion::sql::sqlparser::parser::Parser;
    let parser = d.parser();
    let statements = Parser::parse_sql(parser.as_ref(), query).map_err(|e| format!("does not parse: {e}"))?;
    match statements.as_slice() {
        [Statement::Query(q)] => {
            if let SetExpr::Select(s) = q.body.as_ref()
                && s.into.is_some()
            {
                return Err("creates a table (`SELECT … INTO`): it must only read".into());
            }
            if !q.locks.is_empty() {
                return Err("locks rows (`FOR UPDATE`/`FOR SHARE`): it must only read".into());
            }
            Ok(())
        }
        [] => Err("is empty".into()),
        [_] => Err("is not a SELECT: it must only read".into()),
        _ => Err(format!("holds {} statements; it must be one SELECT", statements.len())),
    }
}

/// The SELECT list of `columns`, each read through its cast when `schema:` declared one.
pub fn select_list<C: SourceColumn>(columns: &[C], d: &dyn Dialect) -> String {
    columns
        .iter()
        .map(|c| match c.cast_to() {
            Some(t) => format!("CAST({} AS {t}) AS {}", d.quote_ident(c.name()), d.quote_ident(c.name())),
            None => d.quote_ident(c.name()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The statement of a read: `select` from `relation`, with the conditions that hold (pushed
/// filters, a run's watermark) around it.
pub fn source_sql(select: &str, relation: &Relation, conditions: &[Option<&str>], d: &dyn Dialect) -> String {
    let sql = format!("SELECT {select} FROM {}", relation.from_sql(d));
    let conditions: Vec<&str> = conditions.iter().flatten().copied().collect();
    match conditions.as_slice() {
        [] => sql,
        [c] => format!("SELECT * FROM ({sql}) AS weir_src WHERE {c}"),
        cs => format!("SELECT * FROM ({sql}) AS weir_src WHERE ({})", cs.join(") AND (")),
    }
}

/// The schema of `columns`, every column nullable.
pub fn columns_schema<C: SourceColumn>(columns: &[C]) -> SchemaRef {
    Arc::new(datafusion::arrow::datatypes::Schema::new(
        columns
            .iter()
            .map(|c| datafusion::arrow::datatypes::Field::new(c.name(), c.arrow().clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Where a part's batches go: the stream DataFusion reads.
pub struct Emit {
    pub schema: SchemaRef,
    tx: tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>,
}

impl Emit {
    /// Hand on `batch`; `false` when the reader is gone (a `LIMIT` was met, the query
    /// failed): the part stops reading.
    pub async fn send(&self, batch: RecordBatch) -> bool {
        self.tx.send(Ok(batch)).await.is_ok()
    }
}

/// How one kind of database reads one part of a read: on the part's own connection (already
/// in its snapshot), the rows of its key range, handed to `emit` in batches; then it ends the
/// connection's transaction.
pub trait PartReader: Send + Sync + 'static {
    type Conn: Send + 'static;
    type Error: std::error::Error + Send + Sync + 'static;
    /// The server's name, for messages.
    const SERVER: &'static str;
    fn read_part(
        self: Arc<Self>,
        conn: Self::Conn,
        range: Option<PartRange>,
        emit: Emit,
    ) -> futures::future::BoxFuture<'static, Result<(), Self::Error>>;
}

/// A part's connection until the part is read.
type Slot<C> = std::sync::Mutex<Option<C>>;

/// A read in progress: the connections of its parts, each in its snapshot, and whatever must
/// stay open until the parts are done (PostgreSQL's exporting coordinator).
struct Read<R: PartReader> {
    reader: Arc<R>,
    schema: SchemaRef,
    parts: Vec<(Option<PartRange>, Slot<R::Conn>)>,
    _hold: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// One part of a read, as a DataFusion partition.
struct Part<R: PartReader> {
    read: Arc<Read<R>>,
    index: usize,
}

impl<R: PartReader> std::fmt::Debug for Part<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part").field("server", &R::SERVER).field("index", &self.index).finish()
    }
}

/// The parts of a read as DataFusion partitions, each read once, on its own connection.
pub fn part_streams<R: PartReader>(
    reader: Arc<R>,
    schema: SchemaRef,
    parts: Vec<(Option<PartRange>, R::Conn)>,
    hold: Option<Box<dyn std::any::Any + Send + Sync>>,
) -> Vec<Arc<dyn PartitionStream>> {
    let read = Arc::new(Read {
        reader,
        schema,
        parts: parts.into_iter().map(|(r, c)| (r, std::sync::Mutex::new(Some(c)))).collect(),
        _hold: hold,
    });
    (0..read.parts.len())
        .map(|index| Arc::new(Part { read: read.clone(), index }) as Arc<dyn PartitionStream>)
        .collect()
}

impl<R: PartReader> PartitionStream for Part<R> {
    fn schema(&self) -> &SchemaRef {
        &self.read.schema
    }

    fn execute(
        &self,
        _ctx: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::execution::SendableRecordBatchStream {
        let mut builder =
            datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder::new(self.read.schema.clone(), 2);
        let emit = Emit { schema: self.read.schema.clone(), tx: builder.tx() };
        let read = self.read.clone();
        let index = self.index;
        builder.spawn(async move {
            let (range, slot) = &read.parts[index];
            let conn = slot
                .lock()
                .map_err(|_| DataFusionError::Execution(format!("a {} part was poisoned", R::SERVER)))?
                .take()
                .ok_or_else(|| DataFusionError::Execution(format!("a {} source is read once per run", R::SERVER)))?;
            read.reader
                .clone()
                .read_part(conn, range.clone(), emit)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))
        });
        builder.build()
    }
}

/// A column of a table a load writes, as its server describes it.
pub trait TargetColumn {
    fn name(&self) -> &str;
    /// The type as the server writes it (`numeric(12,2)`, `varchar(20)`).
    fn sql_type(&self) -> &str;
}

/// What stands between a load's columns (`input`) and a table (`columns`; `None`: it does
/// not exist and will be created): one message per problem, empty when the load can write.
/// `column_type`: the type a new column of an Arrow type gets; `wire_type`: the type a
/// load's column is sent as into an existing column, or why it cannot be.
pub fn target_problems<C: TargetColumn>(
    input: &Schema,
    columns: Option<&[C]>,
    add_columns: bool,
    column_type: impl Fn(&DataType) -> Result<String, String>,
    wire_type: impl Fn(&DataType, &C) -> Result<DataType, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let Some(columns) = columns else {
        for f in input.fields() {
            if let Err(why) = column_type(f.data_type()) {
                out.push(format!("column `{}`: {why}", f.name()));
            }
        }
        return out;
    };
    let mut missing = Vec::new();
    for f in input.fields() {
        match columns.iter().find(|c| c.name() == f.name()) {
            Some(c) => {
                if let Err(why) = wire_type(f.data_type(), c) {
                    out.push(format!("column `{}`: {why}", f.name()));
                }
            }
            None if add_columns => {
                if let Err(why) = column_type(f.data_type()) {
                    out.push(format!("column `{}` cannot be added: {why}", f.name()));
                }
            }
            None => missing.push(f),
        }
    }
    if !missing.is_empty() {
        let table: Vec<String> = columns.iter().map(|c| format!("{} {}", c.name(), c.sql_type())).collect();
        let load: Vec<String> =
            input.fields().iter().map(|f| format!("{} {}", f.name(), crate::types::sql_name(f.data_type()))).collect();
        let names: Vec<String> = missing.iter().map(|f| format!("`{}`", f.name())).collect();
        out.push(format!(
            "the table has no column {} (the table has: {}; the load has: {})",
            names.join(", "),
            table.join(", "),
            load.join(", ")
        ));
    }
    out
}

/// A database store: where to connect.
#[derive(Debug, Clone)]
pub enum DbStore {
    Postgres(Arc<PgStore>),
    Mysql(Arc<MyStore>),
}

/// The kinds of database weir reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Postgres,
    Mysql,
}

impl DbKind {
    /// The kind of server `url` names, if it names a database.
    pub fn of_url(url: &str) -> Option<DbKind> {
        if super::postgres::is_postgres_url(url) {
            Some(DbKind::Postgres)
        } else if super::mysql::is_mysql_url(url) {
            Some(DbKind::Mysql)
        } else {
            None
        }
    }

    /// The server's name, as messages write it.
    pub fn server_name(self) -> &'static str {
        match self {
            DbKind::Postgres => "PostgreSQL",
            DbKind::Mysql => "MySQL",
        }
    }

    /// The source kind, as `weir plan` names it (also its URL scheme).
    pub fn id(self) -> &'static str {
        match self {
            DbKind::Postgres => "postgres",
            DbKind::Mysql => "mysql",
        }
    }

    /// The options a store of this kind knows (besides those in its URL).
    pub fn options(self) -> &'static [&'static str] {
        match self {
            DbKind::Postgres => super::postgres::OPTIONS,
            DbKind::Mysql => super::mysql::OPTIONS,
        }
    }

    pub fn dialect(self) -> &'static dyn Dialect {
        match self {
            DbKind::Postgres => &super::postgres::DIALECT,
            DbKind::Mysql => &super::mysql::DIALECT,
        }
    }
}

impl DbStore {
    /// The store `name` of `kind` at `url` with `options`.
    pub fn new(kind: DbKind, name: &str, url: &str, options: &[(String, String)]) -> Result<DbStore, DbError> {
        Ok(match kind {
            DbKind::Mysql => DbStore::Mysql(Arc::new(MyStore::new(name, url, options)?)),
            DbKind::Postgres => DbStore::Postgres(Arc::new(PgStore::new(name, url, options)?)),
        })
    }

    pub fn kind(&self) -> DbKind {
        match self {
            DbStore::Postgres(_) => DbKind::Postgres,
            DbStore::Mysql(_) => DbKind::Mysql,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            DbStore::Postgres(s) => &s.name,
            DbStore::Mysql(s) => &s.name,
        }
    }

    /// The URL without password, for messages and `weir plan`.
    pub fn display_url(&self) -> &str {
        match self {
            DbStore::Postgres(s) => &s.display_url,
            DbStore::Mysql(s) => &s.display_url,
        }
    }

    /// What stands between a load's columns and `table` as a load target (one message per
    /// problem; empty: the load can write it, creating it when it does not exist). Nothing is
    /// written.
    pub async fn target_problems(
        &self,
        table: &str,
        input: &Schema,
        add_columns: bool,
    ) -> Result<Vec<String>, DbError> {
        let unquoted = table;
        let table = Relation::Table(table.to_string()).from_sql(self.kind().dialect());
        match self {
            DbStore::Postgres(store) => {
                let client = store.connect().await?;
                let columns = super::postgres::target::describe_table(&client, &table).await?;
                Ok(super::postgres::target::problems(input, columns.as_deref(), add_columns))
            }
            DbStore::Mysql(store) => {
                let mut conn = store.connect().await?;
                let described = super::mysql::target::describe_table(&mut conn, unquoted).await;
                let _ = conn.disconnect().await;
                Ok(super::mysql::target::problems(input, described?.as_ref(), add_columns))
            }
        }
    }

    /// The plan of an extract of `relation`: its columns from the server's description of
    /// the statement (no row is read), `declared` types read through casts.
    pub async fn describe(
        &self,
        relation: Relation,
        declared: &[(String, DataType)],
        partition: Option<Partition>,
        cdc: Option<super::postgres::cdc::CdcPlan>,
    ) -> Result<DbPlan, DbError> {
        match self {
            DbStore::Postgres(store) => {
                let columns = super::postgres::describe(store, &relation, declared).await?;
                if let (Some(c), Relation::Table(t)) = (&cdc, &relation) {
                    super::postgres::cdc::check(store, t, c).await?;
                }
                Ok(DbPlan::Postgres(Arc::new(PgPlan {
                    store: store.clone(),
                    relation,
                    columns,
                    partition,
                    filter: None,
                    cdc,
                    pushed: None,
                })))
            }
            DbStore::Mysql(store) => {
                let columns = super::mysql::describe(store, &relation, declared).await?;
                Ok(DbPlan::Mysql(Arc::new(MyPlan {
                    store: store.clone(),
                    relation,
                    columns,
                    partition,
                    filter: None,
                    pushed: None,
                })))
            }
        }
    }
}

/// A database source as compile resolved it.
#[derive(Debug, Clone)]
pub enum DbPlan {
    Postgres(Arc<PgPlan>),
    Mysql(Arc<MyPlan>),
}

impl DbPlan {
    /// The extract's schema.
    pub fn schema(&self) -> SchemaRef {
        match self {
            DbPlan::Postgres(p) => p.schema(),
            DbPlan::Mysql(p) => p.schema(),
        }
    }

    pub fn kind(&self) -> DbKind {
        match self {
            DbPlan::Postgres(_) => DbKind::Postgres,
            DbPlan::Mysql(_) => DbKind::Mysql,
        }
    }

    pub fn dialect(&self) -> &'static dyn Dialect {
        self.kind().dialect()
    }

    /// The store's name and its URL without password.
    pub fn store(&self) -> (&str, &str) {
        match self {
            DbPlan::Postgres(p) => (&p.store.name, &p.store.display_url),
            DbPlan::Mysql(p) => (&p.store.name, &p.store.display_url),
        }
    }

    pub fn relation(&self) -> &Relation {
        match self {
            DbPlan::Postgres(p) => &p.relation,
            DbPlan::Mysql(p) => &p.relation,
        }
    }

    pub fn partition(&self) -> Option<&Partition> {
        match self {
            DbPlan::Postgres(p) => p.partition.as_ref(),
            DbPlan::Mysql(p) => p.partition.as_ref(),
        }
    }

    /// The PostgreSQL plan when the extract captures changes.
    pub fn cdc(&self) -> Option<(&Arc<PgPlan>, &super::postgres::cdc::CdcPlan)> {
        match self {
            DbPlan::Postgres(p) => p.cdc.as_ref().map(|c| (p, c)),
            DbPlan::Mysql(_) => None,
        }
    }

    /// The names of the columns read, in order.
    pub fn column_names(&self) -> Vec<String> {
        match self {
            DbPlan::Postgres(p) => p.columns.iter().map(|c| c.name.clone()).collect(),
            DbPlan::Mysql(p) => p.columns.iter().map(|c| c.name.clone()).collect(),
        }
    }

    /// `expr` as a condition for the server (see [`condition`]).
    pub fn condition(&self, expr: &datafusion::logical_expr::Expr) -> Option<String> {
        let d = self.dialect();
        match self {
            DbPlan::Postgres(p) => condition(expr, &p.columns, d).map(|(sql, _)| sql),
            DbPlan::Mysql(p) => condition(expr, &p.columns, d).map(|(sql, _)| sql),
        }
    }

    /// The plan reading only the rows for which `pushed` holds.
    pub fn with_pushed(&self, pushed: String) -> DbPlan {
        match self {
            DbPlan::Postgres(p) => DbPlan::Postgres(Arc::new(PgPlan { pushed: Some(pushed), ..p.as_ref().clone() })),
            DbPlan::Mysql(p) => DbPlan::Mysql(Arc::new(MyPlan { pushed: Some(pushed), ..p.as_ref().clone() })),
        }
    }

    /// The plan reading only the columns in `keep` (the first column when none is kept, to
    /// count rows).
    pub fn with_columns(&self, keep: &[String]) -> DbPlan {
        fn pick<C: Clone + SourceColumn>(columns: &[C], keep: &[String]) -> Vec<C> {
            let mut out: Vec<C> = columns.iter().filter(|c| keep.iter().any(|k| k == c.name())).cloned().collect();
            if out.is_empty() {
                out.extend(columns.first().cloned());
            }
            out
        }
        match self {
            DbPlan::Postgres(p) => {
                DbPlan::Postgres(Arc::new(PgPlan { columns: pick(&p.columns, keep), ..p.as_ref().clone() }))
            }
            DbPlan::Mysql(p) => {
                DbPlan::Mysql(Arc::new(MyPlan { columns: pick(&p.columns, keep), ..p.as_ref().clone() }))
            }
        }
    }

    /// The statements of the read, as `weir plan` shows them.
    pub fn describe_read(&self) -> String {
        match self {
            DbPlan::Postgres(p) => p.describe_read(),
            DbPlan::Mysql(p) => p.describe_read(),
        }
    }

    /// The condition `column > after OR column IS NULL` (a watermark), for the server.
    pub fn watermark_filter(&self, column: &str, after: &ScalarValue) -> Option<String> {
        let d = self.dialect();
        let lit = d.literal(after)?;
        let col = d.quote_ident(column);
        Some(format!("({col} > {lit} OR {col} IS NULL)"))
    }

    /// Open a read of every part, in one snapshot, of the rows for which `filter` holds.
    pub async fn open_where(&self, filter: Option<String>) -> Result<Vec<Arc<dyn PartitionStream>>, DbError> {
        Ok(match self {
            DbPlan::Postgres(p) => super::postgres::open_where(p.clone(), filter).await?,
            DbPlan::Mysql(p) => super::mysql::open_where(p.clone(), filter).await?,
        })
    }
}

/// A database source read where it is scanned: each scan opens its own read (one snapshot
/// for all its parts), so the rows stream from the server straight into the one query that
/// reads them, and a retried query reads again. For an extract with a single consumer; with
/// several, the run stages the rows once instead (so that all read the same rows).
#[derive(Debug)]
pub struct DbTable {
    pub plan: DbPlan,
    /// The extract task, for the `source_snapshot` fail point.
    pub task: String,
}

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for DbTable {
    fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    fn table_type(&self) -> datafusion::logical_expr::TableType {
        datafusion::logical_expr::TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        _filters: &[datafusion::logical_expr::Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        let parts = self.plan.open_where(None).await.map_err(DbError::into_datafusion)?;
        crate::failpoint::hit("source_snapshot", &self.task)
            .await
            .map_err(|f| DataFusionError::Execution(format!("{f:?}")))?;
        Ok(Arc::new(datafusion::physical_plan::streaming::StreamingTableExec::try_new(
            self.plan.schema(),
            parts,
            projection,
            Vec::new(),
            false,
            None,
        )?))
    }
}

/// Why a database source cannot be planned or read.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Mysql(#[from] MyError),
}

/// What kind of problem a database error is, for the message compile writes around it.
#[derive(Debug)]
pub enum Problem<'a> {
    NoTable {
        table: &'a str,
        known: &'a [String],
    },
    /// A type without a mapping (`column` may be read through `schema:`, or `convert` it in a
    /// `query`, when the server's text for it is not readable text).
    Unmapped {
        convert: Option<&'a str>,
        column: &'a str,
    },
    /// A number without a fixed scale.
    Unconstrained {
        column: &'a str,
    },
    Connect {
        transient: bool,
        login: bool,
        no_database: bool,
    },
    Cdc {
        help: Option<&'a str>,
    },
    Permission,
    Other,
}

impl DbError {
    /// The message, with what the server said, never a password.
    pub fn text(&self) -> String {
        match self {
            DbError::Postgres(e) => super::postgres::error_text(e),
            DbError::Mysql(e) => super::mysql::error_text(e),
        }
    }

    /// Whether trying again could help.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Postgres(e) => e.is_transient(),
            DbError::Mysql(e) => e.is_transient(),
        }
    }

    pub fn problem(&self) -> Problem<'_> {
        match self {
            DbError::Postgres(e) => e.problem(),
            DbError::Mysql(e) => e.problem(),
        }
    }

    /// The error inside a DataFusion error, for a scan (the run finds it again by downcast).
    pub fn into_datafusion(self) -> DataFusionError {
        match self {
            DbError::Postgres(e) => DataFusionError::External(Box::new(e)),
            DbError::Mysql(e) => DataFusionError::External(Box::new(e)),
        }
    }

    /// The database error a DataFusion error carries, if any: its message and whether
    /// trying again could help.
    pub fn inside(e: &DataFusionError) -> Option<(String, bool)> {
        use datafusion::error::DataFusionError as E;
        match e {
            E::External(inner) => {
                if let Some(pg) = inner.downcast_ref::<PgError>() {
                    return Some((super::postgres::error_text(pg), pg.is_transient()));
                }
                inner.downcast_ref::<MyError>().map(|my| (super::mysql::error_text(my), my.is_transient()))
            }
            E::Context(_, inner) => DbError::inside(inner),
            E::Shared(inner) => DbError::inside(inner),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_key_once() {
        let r = cut_ranges(0.0, 100.0, 4, |x| format!("{}", x as i64));
        assert_eq!(r.len(), 4);
        assert_eq!(r[0], Some(PartRange { low: None, high: Some("25".into()) }));
        assert_eq!(r[3], Some(PartRange { low: Some("75".into()), high: None }));
        // A range narrower than the parts: fewer parts, still covering everything.
        let r = cut_ranges(5.0, 5.0, 8, |x| format!("{}", x as i64));
        assert_eq!(
            r,
            vec![
                Some(PartRange { low: None, high: Some("5".into()) }),
                Some(PartRange { low: Some("5".into()), high: None })
            ]
        );
    }
}
