//! PostgreSQL as a source: a table (`table:`) or one query (`query:`) of a `postgres://` store.
//!
//! - **Plan (compile time).** The statement is prepared, never run: the server's row
//!   description gives each column's name, type and type modifier (a `numeric(12,2)`'s
//!   precision and scale), mapped to Arrow types exactly ([`arrow_type`]). A column of a type
//!   without a mapping is an error naming it and the `schema:` entry that reads it as text.
//! - **Read (run time).** `COPY (SELECT …) TO STDOUT (FORMAT binary)`, decoded straight into
//!   Arrow batches ([`decode`]), streamed. With `partition: { column, parts }` the key range of
//!   `column` (its minimum and maximum, read in the snapshot) is cut into `parts` ranges read on
//!   `parts` connections at once, every one in **the same snapshot**: a coordinator exports its
//!   snapshot (`pg_export_snapshot()`) and every part's transaction adopts it (`SET TRANSACTION
//!   SNAPSHOT`) before any part reads, so rows written during the read are in no part.
//!   Every transaction is `REPEATABLE READ, READ ONLY`.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder, ListBuilder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, IntervalUnit, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{StreamExt, pin_mut};
use tokio_postgres::types::{Kind, Type};
use tokio_postgres::{Client, NoTls};

pub mod cdc;
pub mod pgoutput;
pub mod target;

use super::database::{
    Dialect, Emit, PartRange, PartReader, Problem, SourceColumn, columns_schema, cut_ranges, part_streams, select_list,
    source_sql,
};
pub use super::database::{Partition, Relation};

/// Rows per Arrow batch.
const BATCH_ROWS: usize = 8192;
/// Days from 1970-01-01 (Arrow) to 2000-01-01 (PostgreSQL).
pub(crate) const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
pub(crate) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Options a `postgres://` store knows (besides those in its URL).
pub const OPTIONS: &[&str] = &["password", "sslmode", "connect_timeout", "application_name"];

/// A `postgres://` store: where to connect, and how to name it without its password.
#[derive(Clone)]
pub struct PgStore {
    pub name: String,
    /// The URL without password, for messages and `weir plan`.
    pub display_url: String,
    config: tokio_postgres::Config,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("name", &self.name).field("url", &self.display_url).finish()
    }
}

/// Why a PostgreSQL source cannot be planned or read.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    #[error("option `{key}` {reason}")]
    Option { key: String, reason: String },
    #[error("unknown option `{0}` for a PostgreSQL store")]
    UnknownOption(String),
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{0}")]
    Server(#[from] tokio_postgres::Error),
    #[error("table `{table}` does not exist in {url}")]
    NoTable { table: String, url: String, known: Vec<String> },
    #[error("column `{column}` is {pg_type}, which weir cannot read as it is")]
    Unmapped { column: String, pg_type: String },
    #[error("column `{column}` is an unconstrained `numeric`: its values have no fixed scale")]
    Unconstrained { column: String },
    #[error("column `{column}`: {message}")]
    Value { column: String, message: String },
    /// Change data capture cannot work as the server is set up.
    #[error("{message}")]
    Cdc { message: String, help: Option<String> },
    #[error("partition column `{column}` is {pg_type}: ranges need an integer, date or timestamp column")]
    PartitionType { column: String, pg_type: String },
}

impl PgError {
    /// Whether trying again could help: connection failures and dropped connections, not
    /// refused logins, missing tables or bad values.
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Connect { source, .. } | PgError::Server(source) => match source.as_db_error() {
                // Refused logins (28xxx), missing objects (42xxx), bad data (22xxx) stay refused.
                Some(db) => {
                    let code = db.code().code();
                    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code == "40001"
                }
                None => source.is_closed() || std::error::Error::source(source).is_some(),
            },
            _ => false,
        }
    }

    /// What kind of problem this is, for compile's message.
    pub fn problem(&self) -> Problem<'_> {
        match self {
            PgError::NoTable { table, known, .. } => Problem::NoTable { table, known },
            PgError::Unmapped { column, .. } => Problem::Unmapped { column, convert: None },
            PgError::Unconstrained { column } => Problem::Unconstrained { column },
            PgError::Connect { .. } => Problem::Connect {
                transient: self.is_transient(),
                login: matches!(self.code(), Some("28P01") | Some("28000")),
                no_database: self.code() == Some("3D000"),
            },
            PgError::Cdc { help, .. } => Problem::Cdc { help: help.as_deref() },
            PgError::Server(_) if self.code() == Some("42501") => Problem::Permission,
            _ => Problem::Other,
        }
    }

    /// The server's SQLSTATE, when it answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Connect { source, .. } | PgError::Server(source) => source.as_db_error().map(|d| d.code().code()),
            _ => None,
        }
    }
}

/// Whether `url` names a PostgreSQL server.
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

impl PgStore {
    /// The store `name` at `url` with `options` (`password`, `sslmode`: `disable` or `prefer`,
    /// `connect_timeout`, `application_name`).
    pub fn new(name: &str, url: &str, options: &[(String, String)]) -> Result<PgStore, PgError> {
        let parsed = url::Url::parse(url.trim()).map_err(|e| PgError::Url(e.to_string()))?;
        let mut display = parsed.clone();
        let _ = display.set_password(None);
        let mut config: tokio_postgres::Config = url.trim().parse().map_err(|e: tokio_postgres::Error| {
            // The driver's message may quote the URL (and its password): say what is wrong only.
            let _ = e;
            PgError::Url("expected postgres://user@host:port/database".into())
        })?;
        if config.get_hosts().is_empty() {
            return Err(PgError::Url("no host: write postgres://user@host:port/database".into()));
        }
        config.connect_timeout(Duration::from_secs(10));
        config.application_name("weir");
        for (k, v) in options {
            match k.as_str() {
                "password" => {
                    config.password(v.as_bytes());
                }
                "sslmode" => match v.as_str() {
                    "disable" => {
                        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                    }
                    "prefer" => {
                        config.ssl_mode(tokio_postgres::config::SslMode::Prefer);
                    }
                    other => {
                        return Err(PgError::Option {
                            key: k.clone(),
                            reason: format!(
                                "`{other}` is not supported: weir connects without TLS (`disable`) or tries TLS and falls back (`prefer`); TLS-only connections are not available yet"
                            ),
                        });
                    }
                },
                "connect_timeout" => {
                    let d = humantime::parse_duration(v)
                        .map_err(|e| PgError::Option { key: k.clone(), reason: format!("is not a duration: {e}") })?;
                    config.connect_timeout(d);
                }
                "application_name" => {
                    config.application_name(v);
                }
                _ => return Err(PgError::UnknownOption(k.clone())),
            }
        }
        Ok(PgStore { name: name.to_string(), display_url: display.to_string(), config })
    }

    /// A connection; its driver task runs until the client is dropped.
    pub async fn connect(&self) -> Result<Client, PgError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|source| PgError::Connect { url: self.display_url.clone(), source })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("postgres connection closed: {e}");
            }
        });
        Ok(client)
    }
}

/// A PostgreSQL source as compile resolved it.
#[derive(Debug, Clone)]
pub struct PgPlan {
    pub store: Arc<PgStore>,
    pub relation: Relation,
    /// The columns read, in order: name, the server's type, the Arrow type read.
    pub columns: Vec<PgColumn>,
    pub partition: Option<Partition>,
    /// Rows read: only those for which this holds (a run's watermark condition).
    pub filter: Option<String>,
    /// Change data capture: the table's changes, after its snapshot on the first run.
    pub cdc: Option<cdc::CdcPlan>,
    /// A condition the rows downstream queries read all meet (pushed from their filters;
    /// they filter again, so it only has to let through every row they keep).
    pub pushed: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PgColumn {
    pub name: String,
    pub pg_type: Type,
    /// The server's type name with its modifier, for messages (`numeric(12,2)`).
    pub pg_name: String,
    pub arrow: DataType,
    /// Read as text and converted by the server (`schema:` declared a type for it).
    pub cast: Option<String>,
}

impl SourceColumn for PgColumn {
    fn name(&self) -> &str {
        &self.name
    }
    fn arrow(&self) -> &DataType {
        &self.arrow
    }
    fn cast_to(&self) -> Option<&str> {
        self.cast.as_deref()
    }
    fn text(&self) -> bool {
        matches!(self.pg_type, Type::TEXT | Type::VARCHAR | Type::NAME)
    }
}

/// PostgreSQL's way of writing names and literals.
pub struct PgDialect;

pub static DIALECT: PgDialect = PgDialect;

impl Dialect for PgDialect {
    fn quote_ident(&self, s: &str) -> String {
        quote_ident(s)
    }
    fn literal(&self, value: &datafusion::common::ScalarValue) -> Option<String> {
        literal(value)
    }
    fn exact_text_equality(&self) -> bool {
        true
    }
    fn parser(&self) -> Box<dyn datafusion::sql::sqlparser::dialect::Dialect> {
        Box::new(datafusion::sql::sqlparser::dialect::PostgreSqlDialect {})
    }
}

impl PgPlan {
    /// The extract's schema: the columns read, and with change data capture `_op` and `_lsn`.
    pub fn schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self.columns.iter().map(|c| Field::new(&c.name, c.arrow.clone(), true)).collect();
        if self.cdc.is_some() {
            fields.extend(cdc::change_fields());
        }
        Arc::new(Schema::new(fields))
    }

    /// The schema of the rows a table read (a snapshot) gives: the columns read.
    pub fn table_schema(&self) -> SchemaRef {
        columns_schema(&self.columns)
    }

    /// The SELECT list, with the casts `schema:` asked for.
    fn select_list(&self) -> String {
        select_list(&self.columns, &DIALECT)
    }

    /// The rows the read covers: every column, with the pushed filters and the run's filter.
    fn source_sql(&self) -> String {
        source_sql(&self.select_list(), &self.relation, &[self.pushed.as_deref(), self.filter.as_deref()], &DIALECT)
    }

    fn copy_statement(&self, range: Option<&PartRange>) -> String {
        let mut sql = self.source_sql();
        if let (Some(p), Some(r)) = (&self.partition, range) {
            let cond = r.condition(&quote_ident(&p.column));
            sql = format!("SELECT * FROM ({sql}) AS weir_part WHERE {cond}");
        }
        format!("COPY ({sql}) TO STDOUT (FORMAT binary)")
    }

    /// The statements of the read, as `weir plan` shows them.
    pub fn describe_read(&self) -> String {
        let mut base = format!("SELECT {} FROM {}", self.select_list(), self.relation.from_sql(&DIALECT));
        if let Some(c) = &self.pushed {
            base.push_str(&format!(" WHERE {c}"));
        }
        if let Some(c) = &self.cdc {
            return format!(
                "changes from slot `{}` (publication `{}`, pgoutput), since the position the loads committed; first run: {base}{}, then the changes",
                c.slot,
                c.publication,
                self.partition
                    .as_ref()
                    .map(|p| format!(" in {} ranges of `{}`", p.parts, p.column))
                    .unwrap_or_default()
            );
        }
        match &self.partition {
            Some(p) => format!("{base} — in {} ranges of `{}`, one snapshot", p.parts, p.column),
            None => base,
        }
    }
}

/// `schema.table` with each part quoted as an identifier (unless it already is).
pub fn quote_table(t: &str) -> String {
    Relation::Table(t.to_string()).from_sql(&DIALECT)
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The columns of `relation`, from the server's description of the statement (no row is
/// read). `declared`: `schema:` types, by column, read through a cast on the server.
pub async fn describe(
    store: &PgStore,
    relation: &Relation,
    declared: &[(String, DataType)],
) -> Result<Vec<PgColumn>, PgError> {
    let client = store.connect().await?;
    let sql = format!("SELECT * FROM {}", relation.from_sql(&DIALECT));
    let stmt = match client.prepare(&sql).await {
        Ok(s) => s,
        Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "42P01") => {
            if let Relation::Table(t) = relation {
                let known = client
                    .query(
                        "SELECT CASE WHEN table_schema = 'public' THEN table_name ELSE table_schema || '.' || table_name END \
                         FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
                        &[],
                    )
                    .await
                    .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
                    .unwrap_or_default();
                return Err(PgError::NoTable { table: t.clone(), url: store.display_url.clone(), known });
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for c in stmt.columns() {
        let name = c.name().to_string();
        let pg_name = type_name(c.type_(), c.type_modifier());
        let column = match declared.iter().find(|(n, _)| *n == name) {
            Some((_, t)) => PgColumn {
                name: name.clone(),
                pg_type: c.type_().clone(),
                pg_name,
                arrow: t.clone(),
                cast: Some(pg_cast(t).ok_or_else(|| PgError::Unmapped {
                    column: name.clone(),
                    pg_type: format!("declared {}", crate::types::sql_name(t)),
                })?),
            },
            None => PgColumn {
                arrow: arrow_type(&name, c.type_(), c.type_modifier())?,
                name,
                pg_type: c.type_().clone(),
                pg_name,
                cast: None,
            },
        };
        out.push(column);
    }
    Ok(out)
}

/// The type name with its modifier, as PostgreSQL writes it.
fn type_name(t: &Type, typmod: i32) -> String {
    match (t, numeric_typmod(typmod)) {
        (&Type::NUMERIC, Some((p, s))) => format!("numeric({p},{s})"),
        _ => t.name().to_string(),
    }
}

/// A numeric's (precision, scale) from its type modifier; `None` when unconstrained.
fn numeric_typmod(typmod: i32) -> Option<(u16, i16)> {
    if typmod < 4 {
        return None;
    }
    let t = typmod - 4;
    // The scale is an 11-bit signed number (PostgreSQL 15 allows negative scales).
    let scale = ((t & 0x7ff) ^ 0x400) - 0x400;
    Some((((t >> 16) & 0xffff) as u16, scale as i16))
}

/// The Arrow type a PostgreSQL column is read as.
pub fn arrow_type(column: &str, t: &Type, typmod: i32) -> Result<DataType, PgError> {
    let unmapped = || PgError::Unmapped { column: column.to_string(), pg_type: type_name(t, typmod) };
    Ok(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::OID => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::NUMERIC => match numeric_typmod(typmod) {
            Some((p, s)) if (1..=38).contains(&p) && (0..=p as i16).contains(&s) => {
                DataType::Decimal128(p as u8, s as i8)
            }
            Some(_) => return Err(unmapped()),
            None => return Err(PgError::Unconstrained { column: column.to_string() }),
        },
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR | Type::UUID | Type::JSON | Type::JSONB => {
            DataType::Utf8
        }
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Type::TIME => DataType::Time64(TimeUnit::Microsecond),
        Type::BYTEA => DataType::Binary,
        _ if matches!(t.kind(), Kind::Enum(_)) => DataType::Utf8,
        // One-dimensional arrays of a mapped type: lists (the element keeps the typmod).
        _ if let Kind::Array(member) = t.kind() => match arrow_type(column, member, typmod) {
            Ok(inner) if !matches!(member.kind(), Kind::Array(_)) => {
                DataType::List(Arc::new(Field::new("item", inner, true)))
            }
            Err(PgError::Unconstrained { column }) => return Err(PgError::Unconstrained { column }),
            _ => return Err(unmapped()),
        },
        _ => return Err(unmapped()),
    })
}

/// The PostgreSQL type a declared Arrow type is read through (`CAST(col AS …)`).
fn pg_cast(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        _ => return None,
    })
}

/// Whether `t` can be cut into ranges.
fn rangeable(t: &Type) -> bool {
    matches!(*t, Type::INT2 | Type::INT4 | Type::INT8 | Type::DATE | Type::TIMESTAMP | Type::TIMESTAMPTZ)
}

/// Open a read of `plan`: one snapshot, one connection per part, ranges from the partition
/// column's minimum and maximum in that snapshot.
pub async fn open(plan: Arc<PgPlan>) -> Result<Vec<Arc<dyn PartitionStream>>, PgError> {
    open_where(plan, None).await
}

/// [`open`], reading only the rows for which `filter` (SQL over the source's columns) holds.
pub async fn open_where(plan: Arc<PgPlan>, filter: Option<String>) -> Result<Vec<Arc<dyn PartitionStream>>, PgError> {
    Ok(open_snapshot(plan, filter).await?.0)
}

/// [`open_where`], and which transactions the read's snapshot sees (`pg_current_snapshot()`)
/// and where the server's WAL ended when it was taken.
pub async fn open_snapshot(
    plan: Arc<PgPlan>,
    filter: Option<String>,
) -> Result<(Vec<Arc<dyn PartitionStream>>, cdc::Snapshot, u64), PgError> {
    let plan = match filter {
        Some(f) => Arc::new(PgPlan { filter: Some(f), ..(*plan).clone() }),
        None => plan,
    };
    let coordinator = plan.store.connect().await?;
    coordinator.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    // The transaction's snapshot is taken by its first statement: this one.
    let row = coordinator
        .query_one("SELECT pg_export_snapshot(), pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text", &[])
        .await?;
    let snapshot: String = row.get(0);
    let seen = cdc::Snapshot::parse(&row.get::<_, String>(1)).ok_or_else(|| PgError::Value {
        column: String::new(),
        message: "an unreadable pg_current_snapshot()".into(),
    })?;
    let wal_end = pgoutput::parse_lsn(&row.get::<_, String>(2)).unwrap_or(0);
    let ranges = match &plan.partition {
        Some(p) if p.parts > 1 => ranges(&coordinator, &plan, p).await?,
        _ => vec![None],
    };
    let mut parts = Vec::new();
    for r in ranges {
        let client = plan.store.connect().await?;
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        client.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{}'", snapshot.replace('\'', "''"))).await?;
        parts.push((r, client));
    }
    // The coordinator stays open until the parts are done.
    let parts = part_streams(plan.clone(), plan.table_schema(), parts, Some(Box::new(coordinator)));
    Ok((parts, seen, wal_end))
}

/// `parts` ranges of equal width between the partition column's minimum and maximum.
async fn ranges(client: &Client, plan: &PgPlan, p: &Partition) -> Result<Vec<Option<PartRange>>, PgError> {
    let column = plan
        .columns
        .iter()
        .find(|c| c.name == p.column)
        .ok_or_else(|| PgError::Value { column: p.column.clone(), message: "is not a column of the source".into() })?;
    if !rangeable(&column.pg_type) {
        return Err(PgError::PartitionType { column: p.column.clone(), pg_type: column.pg_name.clone() });
    }
    // Bounds as numbers: integers as they are, dates and timestamps as epoch seconds.
    let col = quote_ident(&p.column);
    let as_number = match column.pg_type {
        Type::DATE | Type::TIMESTAMP | Type::TIMESTAMPTZ => format!("extract(epoch from {col})::float8"),
        _ => format!("{col}::float8"),
    };
    let row = client
        .query_one(&format!("SELECT min({as_number}), max({as_number}) FROM ({}) AS weir_src", plan.source_sql()), &[])
        .await?;
    let (Some(lo), Some(hi)) = (row.get::<_, Option<f64>>(0), row.get::<_, Option<f64>>(1)) else {
        return Ok(vec![None]); // no keys: one part reads everything (NULL keys included)
    };
    let literal = |x: f64| -> String {
        match column.pg_type {
            Type::DATE => format!("(to_timestamp({x})::date)"),
            Type::TIMESTAMP => format!("(to_timestamp({x}) AT TIME ZONE 'UTC')"),
            Type::TIMESTAMPTZ => format!("to_timestamp({x})"),
            _ => format!("{}", x.floor() as i64),
        }
    };
    Ok(cut_ranges(lo, hi, p.parts, literal))
}

impl PartReader for PgPlan {
    type Conn = Client;
    type Error = PgError;
    const SERVER: &'static str = "PostgreSQL";

    fn read_part(
        self: Arc<Self>,
        client: Client,
        range: Option<PartRange>,
        emit: Emit,
    ) -> futures::future::BoxFuture<'static, Result<(), PgError>> {
        Box::pin(async move {
            let result = copy_part(&client, &self, range.as_ref(), &emit).await;
            let _ = client.batch_execute("COMMIT").await;
            result
        })
    }
}

/// Run one part's COPY and hand its rows to `emit` in batches.
async fn copy_part(client: &Client, plan: &PgPlan, range: Option<&PartRange>, emit: &Emit) -> Result<(), PgError> {
    let schema = &emit.schema;
    let stream = client.copy_out(&plan.copy_statement(range)).await?;
    let types: Vec<Type> = plan.columns.iter().map(|c| c.pg_type.clone()).collect();
    let rows = tokio_postgres::binary_copy::BinaryCopyOutStream::new(stream, &types);
    pin_mut!(rows);
    let mut builders = Builders::new(schema);
    while let Some(row) = rows.next().await {
        let row = row?;
        for (i, c) in plan.columns.iter().enumerate() {
            let raw: Raw<'_> = row.try_get(i)?;
            let pg = if c.cast.is_some() { &Type::UNKNOWN } else { &c.pg_type };
            decode(&mut builders.0[i], &c.arrow, pg, raw.0)
                .map_err(|message| PgError::Value { column: c.name.clone(), message })?;
        }
        builders.1 += 1;
        if builders.1 == BATCH_ROWS && !emit.send(builders.finish(schema)?).await {
            return Ok(()); // the reader is gone
        }
    }
    if builders.1 > 0 {
        emit.send(builders.finish(schema)?).await;
    }
    Ok(())
}

/// A value as the server sent it (binary format), or NULL.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// One builder per column, and the rows in them.
struct Builders(Vec<Box<dyn ArrayBuilder>>, usize);

impl Builders {
    fn new(schema: &SchemaRef) -> Self {
        Builders(
            schema.fields().iter().map(|f| datafusion::arrow::array::make_builder(f.data_type(), BATCH_ROWS)).collect(),
            0,
        )
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, PgError> {
        let columns: Vec<ArrayRef> = self.0.iter_mut().map(|b| b.finish()).collect();
        self.1 = 0;
        RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| PgError::Value { column: String::new(), message: e.to_string() })
    }
}

fn be<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.try_into().map_err(|_| format!("expected {N} bytes, got {}", raw.len()))
}

/// Append one value of type `pg` (PostgreSQL binary format; `None` is NULL) to `builder`,
/// whose type is `dt`.
pub fn decode(builder: &mut Box<dyn ArrayBuilder>, dt: &DataType, pg: &Type, raw: Option<&[u8]>) -> Result<(), String> {
    macro_rules! b {
        ($t:ty) => {
            builder.as_any_mut().downcast_mut::<$t>().ok_or_else(|| format!("no builder for {dt}"))?
        };
    }
    match dt {
        DataType::Boolean => b!(BooleanBuilder).append_option(raw.map(|r| r.first() == Some(&1))),
        DataType::Int16 => b!(Int16Builder).append_option(raw.map(|r| be::<2>(r).map(i16::from_be_bytes)).transpose()?),
        DataType::Int32 => b!(Int32Builder).append_option(raw.map(|r| be::<4>(r).map(i32::from_be_bytes)).transpose()?),
        DataType::Int64 => {
            // OID is 4 bytes unsigned.
            let v = match raw {
                Some(r) if r.len() == 4 => Some(u32::from_be_bytes(be::<4>(r)?) as i64),
                Some(r) => Some(i64::from_be_bytes(be::<8>(r)?)),
                None => None,
            };
            b!(Int64Builder).append_option(v)
        }
        DataType::Float32 => {
            b!(Float32Builder).append_option(raw.map(|r| be::<4>(r).map(f32::from_be_bytes)).transpose()?)
        }
        DataType::Float64 => {
            b!(Float64Builder).append_option(raw.map(|r| be::<8>(r).map(f64::from_be_bytes)).transpose()?)
        }
        DataType::Decimal128(_, s) => {
            b!(Decimal128Builder).append_option(raw.map(|r| numeric_to_i128(r, *s)).transpose()?)
        }
        DataType::Utf8 => match raw {
            None => b!(StringBuilder).append_null(),
            // uuid: 16 bytes, written in its canonical text form.
            Some(r) if *pg == Type::UUID => {
                let u = uuid::Uuid::from_slice(r).map_err(|e| e.to_string())?;
                b!(StringBuilder).append_value(u.hyphenated().to_string())
            }
            // jsonb: a version byte (1), then the JSON text.
            Some(r) if *pg == Type::JSONB => {
                let text = r.strip_prefix(&[1u8]).ok_or_else(|| "unknown jsonb version".to_string())?;
                b!(StringBuilder).append_value(std::str::from_utf8(text).map_err(|e| e.to_string())?)
            }
            Some(r) => b!(StringBuilder).append_value(std::str::from_utf8(r).map_err(|e| e.to_string())?),
        },
        DataType::Date32 => b!(Date32Builder).append_option(
            raw.map(|r| {
                let d = i32::from_be_bytes(be::<4>(r)?);
                if d == i32::MAX || d == i32::MIN {
                    return Err("infinity is not a date weir can store".to_string());
                }
                d.checked_add(PG_EPOCH_DAYS).ok_or_else(|| "date out of range".to_string())
            })
            .transpose()?,
        ),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let v = raw
                .map(|r| {
                    let t = i64::from_be_bytes(be::<8>(r)?);
                    if t == i64::MAX || t == i64::MIN {
                        return Err("infinity is not a timestamp weir can store".to_string());
                    }
                    t.checked_add(PG_EPOCH_MICROS).ok_or_else(|| "timestamp out of range".to_string())
                })
                .transpose()?;
            let _ = tz;
            b!(TimestampMicrosecondBuilder).append_option(v)
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            b!(Time64MicrosecondBuilder).append_option(raw.map(|r| be::<8>(r).map(i64::from_be_bytes)).transpose()?)
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => b!(IntervalMonthDayNanoBuilder).append_option(
            raw.map(|r| {
                let r = be::<16>(r)?;
                let micros = i64::from_be_bytes(r[0..8].try_into().map_err(|_| "interval".to_string())?);
                let days = i32::from_be_bytes(r[8..12].try_into().map_err(|_| "interval".to_string())?);
                let months = i32::from_be_bytes(r[12..16].try_into().map_err(|_| "interval".to_string())?);
                Ok::<_, String>(IntervalMonthDayNano::new(months, days, micros.saturating_mul(1000)))
            })
            .transpose()?,
        ),
        DataType::Binary => b!(BinaryBuilder).append_option(raw),
        DataType::List(item) => {
            let list = b!(ListBuilder<Box<dyn ArrayBuilder>>);
            let Some(r) = raw else {
                list.append_null();
                return Ok(());
            };
            let member = match pg.kind() {
                Kind::Array(m) => m.clone(),
                _ => return Err(format!("a list read from {pg}, which is not an array")),
            };
            decode_array(list.values(), item.data_type(), &member, r)?;
            list.append(true);
        }
        other => return Err(format!("no decoder for {other}")),
    }
    Ok(())
}

/// The elements of a one-dimensional array in PostgreSQL's binary form (dimensions, element
/// type, then each element's length and bytes; length -1 is NULL), appended to `values`.
fn decode_array(values: &mut Box<dyn ArrayBuilder>, dt: &DataType, member: &Type, raw: &[u8]) -> Result<(), String> {
    let int = |at: usize| -> Result<i32, String> {
        raw.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes)
            .ok_or_else(|| "an array value too short".to_string())
    };
    let ndim = int(0)?;
    match ndim {
        0 => return Ok(()),
        1 => {}
        n => return Err(format!("a {n}-dimensional array: weir reads one-dimensional arrays as lists")),
    }
    let len = int(12)?;
    let mut at = 20;
    for _ in 0..len.max(0) {
        let n = int(at)?;
        at += 4;
        if n < 0 {
            decode(values, dt, member, None)?;
        } else {
            let end = at + n as usize;
            let bytes = raw.get(at..end).ok_or_else(|| "an array value too short".to_string())?;
            decode(values, dt, member, Some(bytes))?;
            at = end;
        }
    }
    Ok(())
}

/// A `numeric` in PostgreSQL's binary form (base-10000 digits) as an integer at `scale`.
fn numeric_to_i128(raw: &[u8], scale: i8) -> Result<i128, String> {
    if raw.len() < 8 {
        return Err("a numeric value too short".into());
    }
    let ndigits = i16::from_be_bytes([raw[0], raw[1]]) as usize;
    let weight = i16::from_be_bytes([raw[2], raw[3]]) as i32;
    let sign = u16::from_be_bytes([raw[4], raw[5]]);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN is not a decimal weir can store".into()),
        _ => return Err("infinity is not a decimal weir can store".into()),
    }
    if raw.len() < 8 + 2 * ndigits {
        return Err("a numeric value too short".into());
    }
    // value = Σ digit[i] · 10000^(weight − i); as an integer at `scale`: Σ digit[i] · 10^(4(weight − i) + scale)
    let overflow = || "a numeric value too large for its type".to_string();
    let mut v: i128 = 0;
    for i in 0..ndigits {
        let d = u16::from_be_bytes([raw[8 + 2 * i], raw[9 + 2 * i]]) as i128;
        let exp = 4 * (weight - i as i32) + scale as i32;
        if exp >= 0 {
            let m = 10i128.checked_pow(exp as u32).ok_or_else(overflow)?;
            v = v.checked_add(d.checked_mul(m).ok_or_else(overflow)?).ok_or_else(overflow)?;
        } else if exp > -4 {
            // A digit group straddling the scale: the server rounded to the column's scale,
            // so the dropped digits are zeros.
            v = v.checked_add(d / 10i128.pow((-exp) as u32)).ok_or_else(overflow)?;
        }
    }
    Ok(if sign == 0x4000 { -v } else { v })
}

/// `value` as a PostgreSQL literal of the column's type, for a condition weir writes itself
/// (a watermark bound); `None` for a type without one.
pub fn literal(value: &datafusion::common::ScalarValue) -> Option<String> {
    use datafusion::common::ScalarValue as S;
    let quoted = |s: &str| format!("'{}'", s.replace('\'', "''"));
    Some(match value {
        S::Boolean(Some(v)) => v.to_string(),
        S::Int8(Some(v)) => v.to_string(),
        S::Int16(Some(v)) => v.to_string(),
        S::Int32(Some(v)) => v.to_string(),
        S::Int64(Some(v)) => v.to_string(),
        S::Decimal128(Some(_), _, _) => format!("{}::numeric", quoted(&value.to_string())),
        S::Utf8(Some(s)) | S::LargeUtf8(Some(s)) | S::Utf8View(Some(s)) => quoted(s),
        S::Date32(Some(d)) => {
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163)?;
            format!("{}::date", quoted(&date.format("%Y-%m-%d").to_string()))
        }
        S::TimestampMicrosecond(Some(us), tz) => {
            let t = chrono::DateTime::from_timestamp_micros(*us)?.naive_utc();
            let text = t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
            match tz {
                Some(_) => format!("{}::timestamptz", quoted(&format!("{text}+00"))),
                None => format!("{}::timestamp", quoted(&text)),
            }
        }
        _ => return None,
    })
}

/// A message for `e` with what the server said (its message, detail and hint), never the
/// connection's password.
pub fn error_text(e: &PgError) -> String {
    let server = |source: &tokio_postgres::Error| -> String {
        match source.as_db_error() {
            Some(db) => {
                let mut m = db.message().to_string();
                if let Some(d) = db.detail() {
                    m.push_str(&format!(" ({d})"));
                }
                if let Some(h) = db.hint() {
                    m.push_str(&format!("; {h}"));
                }
                m
            }
            None => {
                let mut m = source.to_string();
                let mut cause = std::error::Error::source(source);
                while let Some(c) = cause {
                    m.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                m
            }
        }
    };
    match e {
        PgError::Connect { url, source } => format!("cannot connect to {url}: {}", server(source)),
        PgError::Server(source) => format!("PostgreSQL: {}", server(source)),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((digits.len() as i16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_decode_at_their_scale() {
        // 12345.67 = [1, 2345, 6700] weight 1
        assert_eq!(numeric_to_i128(&numeric(1, 0, 2, &[1, 2345, 6700]), 2), Ok(1_234_567));
        // -0.000000000001 at scale 12 = [0001] weight -3 (10^-12 = 1 · 10000^-3)
        assert_eq!(numeric_to_i128(&numeric(-3, 0x4000, 12, &[1]), 12), Ok(-1));
        // 0
        assert_eq!(numeric_to_i128(&numeric(0, 0, 2, &[]), 2), Ok(0));
        // 10000 = [1] weight 1
        assert_eq!(numeric_to_i128(&numeric(1, 0, 0, &[1]), 0), Ok(10_000));
        assert!(numeric_to_i128(&numeric(0, 0xC000, 0, &[]), 2).is_err());
    }

    #[test]
    fn watermark_literals() {
        use datafusion::common::ScalarValue as S;
        assert_eq!(literal(&S::Int64(Some(42))).as_deref(), Some("42"));
        assert_eq!(literal(&S::Utf8(Some("it's".into()))).as_deref(), Some("'it''s'"));
        assert_eq!(literal(&S::Date32(Some(0))).as_deref(), Some("'1970-01-01'::date"));
        assert_eq!(
            literal(&S::TimestampMicrosecond(Some(1_500_000), Some("UTC".into()))).as_deref(),
            Some("'1970-01-01 00:00:01.500000+00'::timestamptz")
        );
        assert_eq!(literal(&S::Decimal128(Some(1234), 10, 2)).as_deref(), Some("'12.34'::numeric"));
    }

    #[test]
    fn typmods_give_precision_and_scale() {
        assert_eq!(numeric_typmod(((12 << 16) | 2) + 4), Some((12, 2)));
        assert_eq!(numeric_typmod(((1000 << 16) | 500) + 4), Some((1000, 500)));
        // numeric(5,-2)
        assert_eq!(numeric_typmod(((5 << 16) | (0x7ff & -2i32)) + 4), Some((5, -2)));
        assert_eq!(numeric_typmod(-1), None);
    }

    #[test]
    fn only_one_select_is_a_query() {
        assert!(crate::source::database::check_query("SELECT id FROM orders WHERE amount > 100", &DIALECT).is_ok());
        assert!(crate::source::database::check_query("WITH x AS (SELECT 1) SELECT * FROM x", &DIALECT).is_ok());
        assert!(crate::source::database::check_query("DELETE FROM orders", &DIALECT).is_err());
        assert!(crate::source::database::check_query("SELECT 1; DROP TABLE orders", &DIALECT).is_err());
        assert!(crate::source::database::check_query("SELECT * INTO copy FROM orders", &DIALECT).is_err());
        assert!(crate::source::database::check_query("SELECT * FROM orders FOR UPDATE", &DIALECT).is_err());
    }

    #[test]
    fn urls_lose_their_password_for_display() {
        let s = PgStore::new("app", "postgres://weir:hunter2@127.0.0.1:5432/shop", &[]).unwrap();
        assert!(!s.display_url.contains("hunter2"), "{}", s.display_url);
        assert!(is_postgres_url("postgresql://h/db"));
        assert!(PgStore::new("app", "postgres://h/db", &[("sslmode".into(), "require".into())]).is_err());
    }
}
