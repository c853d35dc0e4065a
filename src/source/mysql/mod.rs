//! MySQL and MariaDB as a source: a table (`table:`) or one query (`query:`) of a `mysql://`
//! (or `mariadb://`) store, through `mysql_async`.
//!
//! - **Plan (compile time).** The statement is prepared, never run: the server's column
//!   definitions give each column's name, type, flags (`UNSIGNED`, binary character set) and
//!   length and decimals (a `decimal(12,2)`'s precision and scale), mapped to Arrow types
//!   exactly ([`arrow_type`]). A type without a mapping is an error naming it and the
//!   `schema:` entry that reads it through a cast on the server.
//! - **Read (run time).** Prepared statements (the binary protocol: integers, floats, dates
//!   and times arrive as binary values, decimals and text as text), decoded straight into
//!   Arrow batches ([`decode`]), streamed. Every connection is in UTC (`time_zone = '+00:00'`,
//!   so `timestamp` values are UTC instants) and reads in a `REPEATABLE READ, READ ONLY`
//!   transaction started `WITH CONSISTENT SNAPSHOT`.
//! - **One instant for every part.** MySQL cannot hand a snapshot from one connection to
//!   another (PostgreSQL's `SET TRANSACTION SNAPSHOT`). With `partition: { column, parts }`
//!   weir holds a read lock while the parts start their snapshots — `LOCK TABLES t READ` for a
//!   table (privilege `LOCK TABLES`), `FLUSH TABLES WITH READ LOCK` for a query (privilege
//!   `RELOAD`) — so no write commits between the first part's snapshot and the last one's;
//!   the lock is released as soon as they all have one (milliseconds), before any row is read.

pub mod target;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, i256};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::streaming::PartitionStream;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::database::{
    Dialect, Emit, PartRange, PartReader, Partition, Problem, Relation, SourceColumn, columns_schema, cut_ranges,
    part_streams, select_list, source_sql,
};

/// Rows per Arrow batch.
const BATCH_ROWS: usize = 8192;
/// The binary character set: a string column of it holds bytes.
const BINARY_CHARSET: u16 = 63;
/// How long the lock that lines the parts' snapshots up may wait for writers to finish.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Options a `mysql://` store knows (besides those in its URL).
pub const OPTIONS: &[&str] = &["password", "connect_timeout", "local_infile"];

/// Whether `url` names a MySQL or MariaDB server.
pub fn is_mysql_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("mysql://") || lower.starts_with("mariadb://")
}

/// A `mysql://` store: where to connect, and how to name it without its password.
#[derive(Clone)]
pub struct MyStore {
    pub name: String,
    /// The URL without password, for messages and `weir plan`.
    pub display_url: String,
    opts: mysql_async::Opts,
    connect_timeout: Duration,
    /// Loads send their rows by `LOAD DATA LOCAL INFILE` when the server allows it (`false`:
    /// always by `INSERT`).
    pub local_infile: bool,
}

impl std::fmt::Debug for MyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MyStore").field("name", &self.name).field("url", &self.display_url).finish()
    }
}

/// Why a MySQL source cannot be planned or read.
#[derive(Debug, thiserror::Error)]
pub enum MyError {
    #[error("invalid MySQL URL: {0}")]
    Url(String),
    #[error("option `{key}` {reason}")]
    Option { key: String, reason: String },
    #[error("unknown option `{0}` for a MySQL store")]
    UnknownOption(String),
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("cannot connect to {url}: no answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{0}")]
    Server(#[from] mysql_async::Error),
    #[error("table `{table}` does not exist in {url}")]
    NoTable { table: String, url: String, known: Vec<String> },
    #[error("column `{column}` is {my_type}, which weir cannot read as it is")]
    Unmapped { column: String, my_type: String },
    #[error("column `{column}`: {message}")]
    Value { column: String, message: String },
    #[error("partition column `{column}` is {my_type}: ranges need an integer, date or timestamp column")]
    PartitionType { column: String, my_type: String },
    /// The lock that gives every part one instant could not be taken.
    #[error("{message}")]
    Lock { message: String },
}

/// Server error codes: access denied (login), unknown database, and the ones a retry may cure.
const ACCESS_DENIED: u16 = 1045;
const UNKNOWN_DATABASE: u16 = 1049;
const NO_SUCH_TABLE: u16 = 1146;

impl MyError {
    fn server_code(&self) -> Option<u16> {
        match self {
            MyError::Connect { source: mysql_async::Error::Server(s), .. }
            | MyError::Server(mysql_async::Error::Server(s)) => Some(s.code),
            _ => None,
        }
    }

    /// Whether trying again could help: connections that failed or dropped, a server that
    /// is too busy or shutting down, a deadlock or a lock wait — not refused logins, missing
    /// tables or bad values.
    pub fn is_transient(&self) -> bool {
        match self {
            MyError::Timeout { .. } => true,
            MyError::Connect { source, .. } | MyError::Server(source) => match source {
                mysql_async::Error::Server(s) => {
                    // too many connections, lock wait timeout, deadlock, shutdown, killed, read-only for now
                    matches!(s.code, 1040 | 1053 | 1205 | 1213 | 1927 | 2006 | 2013)
                }
                mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
                _ => false,
            },
            _ => false,
        }
    }

    /// What kind of problem this is, for compile's message.
    pub fn problem(&self) -> Problem<'_> {
        match self {
            MyError::NoTable { table, known, .. } => Problem::NoTable { table, known },
            // A geometry cast to text is its binary form: ST_AsText gives its text.
            MyError::Unmapped { column, my_type } => {
                Problem::Unmapped { column, convert: (my_type == "geometry").then_some("ST_AsText") }
            }
            // A login that may not use the database.
            MyError::Connect { .. } if self.server_code() == Some(1044) => Problem::Permission,
            MyError::Connect { .. } | MyError::Timeout { .. } => Problem::Connect {
                transient: self.is_transient(),
                login: self.server_code() == Some(ACCESS_DENIED),
                no_database: self.server_code() == Some(UNKNOWN_DATABASE),
            },
            // command, column or database access denied
            MyError::Server(_) if matches!(self.server_code(), Some(1142 | 1143 | 1044)) => Problem::Permission,
            _ => Problem::Other,
        }
    }
}

impl MyStore {
    /// The store `name` at `url` (`mysql://user@host:port/database`) with `options`
    /// (`password`, `connect_timeout`, `local_infile`).
    pub fn new(name: &str, url: &str, options: &[(String, String)]) -> Result<MyStore, MyError> {
        let parsed = url::Url::parse(url.trim()).map_err(|e| MyError::Url(e.to_string()))?;
        let mut display = parsed.clone();
        let _ = display.set_password(None);
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| MyError::Url("no host: write mysql://user@host:port/database".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let database = parsed.path().trim_start_matches('/');
        if database.is_empty() || database.contains('/') {
            return Err(MyError::Url("no database: write mysql://user@host:port/database".into()));
        }
        if parsed.query().is_some() {
            return Err(MyError::Url("parameters in the URL are not read: put them under `options:`".into()));
        }
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let mut password = parsed.password().map(decode);
        let mut connect_timeout = Duration::from_secs(10);
        let mut local_infile = true;
        for (k, v) in options {
            match k.as_str() {
                "password" => password = Some(v.clone()),
                "connect_timeout" => {
                    connect_timeout = humantime::parse_duration(v)
                        .map_err(|e| MyError::Option { key: k.clone(), reason: format!("is not a duration: {e}") })?;
                }
                "local_infile" => {
                    local_infile = match v.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "on" => true,
                        "false" | "0" | "off" => false,
                        _ => {
                            return Err(MyError::Option { key: k.clone(), reason: "is not true or false".into() });
                        }
                    };
                }
                _ => return Err(MyError::UnknownOption(k.clone())),
            }
        }
        let user = (!parsed.username().is_empty()).then(|| decode(parsed.username()));
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(parsed.port().unwrap_or(3306))
            .user(user)
            .pass(password)
            .db_name(Some(decode(database)))
            // Always the network address the URL names (not a local socket found through it).
            .prefer_socket(false)
            .stmt_cache_size(0)
            // Run in order (the driver runs them last to first): UTC, UTF-8, a stalled reader
            // (a consumer slower than the server) is not cut off after a minute.
            .init(vec![
                "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ".to_string(),
                "SET SESSION net_write_timeout = 3600".to_string(),
                "SET time_zone = '+00:00'".to_string(),
                "SET NAMES utf8mb4".to_string(),
            ]);
        Ok(MyStore {
            name: name.to_string(),
            display_url: display.to_string(),
            opts: opts.into(),
            connect_timeout,
            local_infile,
        })
    }

    /// A connection.
    pub async fn connect(&self) -> Result<Conn, MyError> {
        match tokio::time::timeout(self.connect_timeout, Conn::new(self.opts.clone())).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(source)) => Err(MyError::Connect { url: self.display_url.clone(), source }),
            Err(_) => Err(MyError::Timeout { url: self.display_url.clone(), after: self.connect_timeout }),
        }
    }
}

/// A MySQL source as compile resolved it.
#[derive(Debug, Clone)]
pub struct MyPlan {
    pub store: Arc<MyStore>,
    pub relation: Relation,
    /// The columns read, in order.
    pub columns: Vec<MyColumn>,
    pub partition: Option<Partition>,
    /// Rows read: only those for which this holds (a run's watermark condition).
    pub filter: Option<String>,
    /// A condition the rows downstream queries read all meet (pushed from their filters).
    pub pushed: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MyColumn {
    pub name: String,
    /// The server's type, for messages (`decimal(12,2)`, `bigint unsigned`).
    pub my_name: String,
    pub arrow: DataType,
    /// Read through `CAST(… AS …)` (`schema:` declared a type for it).
    pub cast: Option<String>,
    /// A text column the server compares by its collation.
    text: bool,
}

impl SourceColumn for MyColumn {
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
        self.text
    }
}

/// MySQL's way of writing names and literals (the same in MariaDB, whatever `sql_mode` is).
pub struct MyDialect;

pub static DIALECT: MyDialect = MyDialect;

impl Dialect for MyDialect {
    fn quote_ident(&self, s: &str) -> String {
        quote_ident(s)
    }
    fn literal(&self, value: &datafusion::common::ScalarValue) -> Option<String> {
        literal(value)
    }
    fn exact_text_equality(&self) -> bool {
        false
    }
    fn parser(&self) -> Box<dyn datafusion::sql::sqlparser::dialect::Dialect> {
        Box::new(datafusion::sql::sqlparser::dialect::MySqlDialect {})
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// `value` as a MySQL literal of its type, for a condition weir writes itself (a watermark
/// bound, a pushed filter); `None` for a type without one. Text with a backslash is written in
/// hexadecimal, which means the same whether or not `NO_BACKSLASH_ESCAPES` is set.
pub fn literal(value: &datafusion::common::ScalarValue) -> Option<String> {
    use datafusion::common::ScalarValue as S;
    Some(match value {
        S::Boolean(Some(v)) => if *v { "TRUE" } else { "FALSE" }.into(),
        S::Int8(Some(v)) => v.to_string(),
        S::Int16(Some(v)) => v.to_string(),
        S::Int32(Some(v)) => v.to_string(),
        S::Int64(Some(v)) => v.to_string(),
        S::UInt8(Some(v)) => v.to_string(),
        S::UInt16(Some(v)) => v.to_string(),
        S::UInt32(Some(v)) => v.to_string(),
        S::UInt64(Some(v)) => v.to_string(),
        // An exact-value literal: compared as a decimal, not as a double.
        S::Decimal128(Some(_), _, _) => value.to_string(),
        S::Utf8(Some(s)) | S::LargeUtf8(Some(s)) | S::Utf8View(Some(s)) => {
            if s.contains('\\') || s.contains('\0') {
                let hex: String = s.bytes().map(|b| format!("{b:02X}")).collect();
                format!("_utf8mb4 X'{hex}'")
            } else {
                format!("'{}'", s.replace('\'', "''"))
            }
        }
        S::Date32(Some(d)) => {
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163)?;
            format!("DATE'{}'", date.format("%Y-%m-%d"))
        }
        S::TimestampMicrosecond(Some(us), _) => {
            // Sessions are in UTC: a `timestamp` column compares as UTC, a `datetime` as written.
            let t = chrono::DateTime::from_timestamp_micros(*us)?.naive_utc();
            format!("TIMESTAMP'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"))
        }
        _ => return None,
    })
}

impl MyPlan {
    /// The extract's schema: the columns read.
    pub fn schema(&self) -> SchemaRef {
        columns_schema(&self.columns)
    }

    fn select_list(&self) -> String {
        select_list(&self.columns, &DIALECT)
    }

    /// The rows the read covers: every column, with the pushed filters and the run's filter.
    fn source_sql(&self) -> String {
        source_sql(&self.select_list(), &self.relation, &[self.pushed.as_deref(), self.filter.as_deref()], &DIALECT)
    }

    /// The statement a part runs: rows whose partition key is in `range`.
    fn part_statement(&self, range: Option<&PartRange>) -> String {
        let sql = self.source_sql();
        match (&self.partition, range) {
            (Some(p), Some(r)) => {
                format!("SELECT * FROM ({sql}) AS weir_part WHERE {}", r.condition(&quote_ident(&p.column)))
            }
            _ => sql,
        }
    }

    /// The statements of the read, as `weir plan` shows them.
    pub fn describe_read(&self) -> String {
        let mut base = format!("SELECT {} FROM {}", self.select_list(), self.relation.from_sql(&DIALECT));
        if let Some(c) = &self.pushed {
            base.push_str(&format!(" WHERE {c}"));
        }
        match &self.partition {
            Some(p) if p.parts > 1 => {
                let lock = match self.relation {
                    Relation::Table(_) => "LOCK TABLES … READ",
                    Relation::Query(_) => "FLUSH TABLES WITH READ LOCK",
                };
                format!(
                    "{base} — in {} ranges of `{}`, one instant (snapshots started under {lock})",
                    p.parts, p.column
                )
            }
            _ => base,
        }
    }
}

/// The columns of `relation`, from the server's description of the prepared statement (no
/// row is read). `declared`: `schema:` types, by column, read through a cast on the server.
pub async fn describe(
    store: &MyStore,
    relation: &Relation,
    declared: &[(String, DataType)],
) -> Result<Vec<MyColumn>, MyError> {
    let mut conn = store.connect().await?;
    let sql = format!("SELECT * FROM {}", relation.from_sql(&DIALECT));
    let stmt = match conn.prep(&sql).await {
        Ok(s) => s,
        Err(mysql_async::Error::Server(e)) if e.code == NO_SUCH_TABLE => {
            if let Relation::Table(t) = relation {
                let known: Vec<String> = conn
                    .query(
                        "SELECT CASE WHEN table_schema = DATABASE() THEN table_name ELSE CONCAT(table_schema, '.', table_name) END AS t \
                         FROM information_schema.tables \
                         WHERE table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1",
                    )
                    .await
                    .unwrap_or_default();
                let _ = conn.disconnect().await;
                return Err(MyError::NoTable { table: t.clone(), url: store.display_url.clone(), known });
            }
            return Err(mysql_async::Error::Server(e).into());
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for c in stmt.columns().iter() {
        let name = c.name_str().into_owned();
        let my_name = type_name(c);
        let text = is_text(c);
        let column = match declared.iter().find(|(n, _)| *n == name) {
            Some((_, t)) => MyColumn {
                cast: Some(my_cast(t).ok_or_else(|| MyError::Unmapped {
                    column: name.clone(),
                    my_type: format!("declared {}", crate::types::sql_name(t)),
                })?),
                name,
                my_name,
                arrow: t.clone(),
                text: false,
            },
            None => MyColumn { arrow: arrow_type(&name, c)?, name, my_name, cast: None, text },
        };
        out.push(column);
    }
    let _ = conn.close(stmt).await;
    let _ = conn.disconnect().await;
    Ok(out)
}

/// A string column compared by its collation (not JSON, not bytes).
fn is_text(c: &mysql_async::Column) -> bool {
    use ColumnType::*;
    matches!(c.column_type(), MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING | MYSQL_TYPE_STRING)
        && c.character_set() != BINARY_CHARSET
}

/// A `decimal`'s precision from its display length (MySQL's `my_decimal_length_to_precision`).
fn decimal_precision(c: &mysql_async::Column) -> u32 {
    let unsigned = c.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let length = c.column_length();
    length.saturating_sub(u32::from(c.decimals() > 0)).saturating_sub(u32::from(!unsigned && length > 0))
}

/// The type's name as MySQL writes it, for messages and `weir plan`.
fn type_name(c: &mysql_async::Column) -> String {
    use ColumnType::*;
    let unsigned = if c.flags().contains(ColumnFlags::UNSIGNED_FLAG) { " unsigned" } else { "" };
    let binary = c.character_set() == BINARY_CHARSET;
    let flags = c.flags();
    match c.column_type() {
        MYSQL_TYPE_TINY => format!("tinyint{unsigned}"),
        MYSQL_TYPE_SHORT => format!("smallint{unsigned}"),
        MYSQL_TYPE_INT24 => format!("mediumint{unsigned}"),
        MYSQL_TYPE_LONG => format!("int{unsigned}"),
        MYSQL_TYPE_LONGLONG => format!("bigint{unsigned}"),
        MYSQL_TYPE_YEAR => "year".into(),
        MYSQL_TYPE_FLOAT => "float".into(),
        MYSQL_TYPE_DOUBLE => "double".into(),
        MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => {
            format!("decimal({},{}){unsigned}", decimal_precision(c), c.decimals())
        }
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => "date".into(),
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => "datetime".into(),
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => "timestamp".into(),
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => "time".into(),
        MYSQL_TYPE_BIT => format!("bit({})", c.column_length()),
        MYSQL_TYPE_JSON => "json".into(),
        MYSQL_TYPE_GEOMETRY => "geometry".into(),
        MYSQL_TYPE_ENUM => "enum".into(),
        MYSQL_TYPE_SET => "set".into(),
        _ if flags.contains(ColumnFlags::ENUM_FLAG) => "enum".into(),
        _ if flags.contains(ColumnFlags::SET_FLAG) => "set".into(),
        MYSQL_TYPE_STRING if binary => "binary".into(),
        MYSQL_TYPE_STRING => "char".into(),
        MYSQL_TYPE_VAR_STRING | MYSQL_TYPE_VARCHAR if binary => "varbinary".into(),
        MYSQL_TYPE_VAR_STRING | MYSQL_TYPE_VARCHAR => "varchar".into(),
        MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB | MYSQL_TYPE_BLOB if binary => {
            "blob".into()
        }
        MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB | MYSQL_TYPE_BLOB => "text".into(),
        other => format!("{other:?}").trim_start_matches("MYSQL_TYPE_").to_lowercase(),
    }
}

/// The Arrow type a MySQL column is read as.
pub fn arrow_type(column: &str, c: &mysql_async::Column) -> Result<DataType, MyError> {
    use ColumnType::*;
    let unsigned = c.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let unmapped = || MyError::Unmapped { column: column.to_string(), my_type: type_name(c) };
    Ok(match c.column_type() {
        MYSQL_TYPE_TINY if unsigned => DataType::UInt8,
        MYSQL_TYPE_TINY => DataType::Int8,
        MYSQL_TYPE_SHORT if unsigned => DataType::UInt16,
        MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => DataType::Int16,
        MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG if unsigned => DataType::UInt32,
        MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG => DataType::Int32,
        MYSQL_TYPE_LONGLONG if unsigned => DataType::UInt64,
        MYSQL_TYPE_LONGLONG => DataType::Int64,
        MYSQL_TYPE_FLOAT => DataType::Float32,
        MYSQL_TYPE_DOUBLE => DataType::Float64,
        MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => {
            let (p, s) = (decimal_precision(c), c.decimals() as u32);
            match p {
                1..=38 if s <= p => DataType::Decimal128(p as u8, s as i8),
                39..=76 if s <= p => DataType::Decimal256(p as u8, s as i8),
                _ => return Err(unmapped()),
            }
        }
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => DataType::Date32,
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => DataType::Timestamp(TimeUnit::Microsecond, None),
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => DataType::Time64(TimeUnit::Microsecond),
        MYSQL_TYPE_BIT if c.column_length() <= 64 => DataType::UInt64,
        MYSQL_TYPE_JSON | MYSQL_TYPE_ENUM | MYSQL_TYPE_SET => DataType::Utf8,
        MYSQL_TYPE_STRING
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB => {
            if c.character_set() == BINARY_CHARSET
                && !c.flags().intersects(ColumnFlags::ENUM_FLAG | ColumnFlags::SET_FLAG)
            {
                DataType::Binary
            } else {
                DataType::Utf8
            }
        }
        _ => return Err(unmapped()),
    })
}

/// The MySQL cast a declared Arrow type is read through (`CAST(col AS …)`).
fn my_cast(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean | DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => "SIGNED".into(),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => "UNSIGNED".into(),
        DataType::Float32 | DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if *p <= 65 && *s >= 0 => format!("DECIMAL({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "CHAR".into(),
        DataType::Binary => "BINARY".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => "DATETIME(6)".into(),
        DataType::Time64(TimeUnit::Microsecond) => "TIME(6)".into(),
        _ => return None,
    })
}

/// Open a read of `plan` in one instant, of the rows for which `filter` holds: one
/// connection per part, ranges from the partition column's minimum and maximum in it.
pub async fn open_where(plan: Arc<MyPlan>, filter: Option<String>) -> Result<Vec<Arc<dyn PartitionStream>>, MyError> {
    let plan = match filter {
        Some(f) => Arc::new(MyPlan { filter: Some(f), ..(*plan).clone() }),
        None => plan,
    };
    let parts = plan.partition.as_ref().map_or(1, |p| p.parts.max(1)) as usize;
    // Several parts: no write may commit while they start their snapshots.
    let locker = if parts > 1 { Some(lock(&plan).await?) } else { None };
    let mut conns = Vec::with_capacity(parts);
    let started: Result<(), MyError> = async {
        for _ in 0..parts {
            let mut c = plan.store.connect().await?;
            c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").await?;
            conns.push(c);
        }
        Ok(())
    }
    .await;
    if let Some(mut l) = locker {
        l.query_drop("UNLOCK TABLES").await?;
        let _ = l.disconnect().await;
    }
    started?;
    let ranges = match &plan.partition {
        Some(p) if parts > 1 => ranges(&mut conns[0], &plan, p).await?,
        _ => vec![None],
    };
    for extra in conns.drain(ranges.len()..) {
        let _ = extra.disconnect().await;
    }
    Ok(part_streams(plan.clone(), plan.schema(), ranges.into_iter().zip(conns).collect(), None))
}

/// A connection holding a read lock on what `plan` reads.
async fn lock(plan: &MyPlan) -> Result<Conn, MyError> {
    let mut c = plan.store.connect().await?;
    c.query_drop(format!("SET SESSION lock_wait_timeout = {}", LOCK_WAIT.as_secs())).await?;
    let (sql, privilege) = match &plan.relation {
        Relation::Table(_) => (format!("LOCK TABLES {} READ", plan.relation.from_sql(&DIALECT)), "LOCK TABLES"),
        Relation::Query(_) => ("FLUSH TABLES WITH READ LOCK".to_string(), "RELOAD"),
    };
    match c.query_drop(&sql).await {
        Ok(()) => Ok(c),
        Err(mysql_async::Error::Server(e)) => {
            let why = match e.code {
                1044 | 1142 | 1227 => format!(
                    "the parts of a partitioned read start their snapshots under `{sql}`, which needs the {privilege} privilege: {}",
                    e.message
                ),
                1205 => format!(
                    "`{sql}` waited {} s for transactions writing the source to end: {}",
                    LOCK_WAIT.as_secs(),
                    e.message
                ),
                _ => return Err(mysql_async::Error::Server(e).into()),
            };
            Err(MyError::Lock {
                message: format!(
                    "{why}; grant it (`GRANT {privilege} ON … TO …`), or read in one part (no `partition`), which needs no lock"
                ),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// `parts` ranges of equal width between the partition column's minimum and maximum, read
/// in `conn`'s snapshot.
async fn ranges(conn: &mut Conn, plan: &MyPlan, p: &Partition) -> Result<Vec<Option<PartRange>>, MyError> {
    let column = plan
        .columns
        .iter()
        .find(|c| c.name == p.column)
        .ok_or_else(|| MyError::Value { column: p.column.clone(), message: "is not a column of the source".into() })?;
    let col = quote_ident(&p.column);
    let (as_number, date) = match &column.arrow {
        t if t.is_integer() => (col.clone(), None),
        DataType::Date32 => (format!("TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {col})"), Some(true)),
        DataType::Timestamp(..) => (format!("TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {col})"), Some(false)),
        _ => return Err(MyError::PartitionType { column: p.column.clone(), my_type: column.my_name.clone() }),
    };
    let sql = format!("SELECT MIN({as_number}), MAX({as_number}) FROM ({}) AS weir_src", plan.source_sql());
    let row: Option<(Value, Value)> = conn.exec_first(sql, ()).await?;
    let number = |v: &Value| match v {
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse::<f64>().ok(),
        _ => None,
    };
    let Some((Some(lo), Some(hi))) = row.as_ref().map(|(a, b)| (number(a), number(b))) else {
        return Ok(vec![None]); // no keys: one part reads everything (NULL keys included)
    };
    let literal = |x: f64| -> String {
        match date {
            Some(true) => format!("DATE(TIMESTAMPADD(SECOND, {}, '1970-01-01 00:00:00'))", x.floor() as i64),
            Some(false) => format!("TIMESTAMPADD(SECOND, {}, '1970-01-01 00:00:00')", x.floor() as i64),
            None => format!("{}", x.floor() as i128),
        }
    };
    Ok(cut_ranges(lo, hi, p.parts, literal))
}

impl PartReader for MyPlan {
    type Conn = Conn;
    type Error = MyError;
    const SERVER: &'static str = "MySQL";

    fn read_part(
        self: Arc<Self>,
        mut conn: Conn,
        range: Option<PartRange>,
        emit: Emit,
    ) -> futures::future::BoxFuture<'static, Result<(), MyError>> {
        Box::pin(async move {
            read_part(&mut conn, &self, range.as_ref(), &emit).await?;
            let _ = conn.query_drop("COMMIT").await;
            let _ = conn.disconnect().await;
            Ok(())
        })
    }
}

/// Run one part's statement and hand its rows to `emit` in batches.
async fn read_part(conn: &mut Conn, plan: &MyPlan, range: Option<&PartRange>, emit: &Emit) -> Result<(), MyError> {
    let schema = &emit.schema;
    let mut columns = plan
        .columns
        .iter()
        .map(|c| Column::new(&c.arrow).map_err(|message| MyError::Value { column: c.name.clone(), message }))
        .collect::<Result<Vec<_>, _>>()?;
    let mut result = conn.exec_iter(plan.part_statement(range), ()).await?;
    let mut rows = 0;
    let finish = |columns: &mut Vec<Column>| {
        let arrays: Vec<ArrayRef> = columns.iter_mut().map(Column::finish).collect();
        RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| MyError::Value { column: String::new(), message: e.to_string() })
    };
    while let Some(row) = result.next().await? {
        for ((value, c), column) in row.unwrap().into_iter().zip(&plan.columns).zip(columns.iter_mut()) {
            column.push(value).map_err(|message| MyError::Value { column: c.name.clone(), message })?;
        }
        rows += 1;
        if rows == BATCH_ROWS {
            if !emit.send(finish(&mut columns)?).await {
                return Ok(()); // the reader is gone: the connection is dropped with the rest
            }
            rows = 0;
        }
    }
    drop(result);
    if rows > 0 {
        emit.send(finish(&mut columns)?).await;
    }
    Ok(())
}

/// One column's builder, of its Arrow type: a value (as the binary protocol gives it) is
/// appended with one `match`, without looking the builder up by type for each value.
pub enum Column {
    Boolean(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt8(UInt8Builder),
    UInt16(UInt16Builder),
    UInt32(UInt32Builder),
    UInt64(UInt64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal128(Decimal128Builder, u8, i8),
    Decimal256(Decimal256Builder, u8, i8),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date32(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time64(Time64MicrosecondBuilder),
}

/// An integer value of the binary protocol (or a `bit(n)`'s big-endian bytes) as `T`.
fn integer<T: TryFrom<i64> + TryFrom<u64>>(value: Value, dt: &str) -> Result<Option<T>, String> {
    let out_of_range = |v: &dyn std::fmt::Display| format!("{v} is out of range for {dt}");
    Ok(Some(match value {
        Value::NULL => return Ok(None),
        Value::Int(i) => T::try_from(i).map_err(|_| out_of_range(&i))?,
        Value::UInt(u) => T::try_from(u).map_err(|_| out_of_range(&u))?,
        Value::Bytes(bytes) if bytes.len() <= 8 => {
            let u = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            T::try_from(u).map_err(|_| out_of_range(&u))?
        }
        other => return Err(format!("{other:?} is not an integer")),
    }))
}

impl Column {
    pub fn new(dt: &DataType) -> Result<Column, String> {
        let n = BATCH_ROWS;
        Ok(match dt {
            DataType::Boolean => Column::Boolean(BooleanBuilder::with_capacity(n)),
            DataType::Int8 => Column::Int8(Int8Builder::with_capacity(n)),
            DataType::Int16 => Column::Int16(Int16Builder::with_capacity(n)),
            DataType::Int32 => Column::Int32(Int32Builder::with_capacity(n)),
            DataType::Int64 => Column::Int64(Int64Builder::with_capacity(n)),
            DataType::UInt8 => Column::UInt8(UInt8Builder::with_capacity(n)),
            DataType::UInt16 => Column::UInt16(UInt16Builder::with_capacity(n)),
            DataType::UInt32 => Column::UInt32(UInt32Builder::with_capacity(n)),
            DataType::UInt64 => Column::UInt64(UInt64Builder::with_capacity(n)),
            DataType::Float32 => Column::Float32(Float32Builder::with_capacity(n)),
            DataType::Float64 => Column::Float64(Float64Builder::with_capacity(n)),
            DataType::Decimal128(p, s) => {
                Column::Decimal128(Decimal128Builder::with_capacity(n).with_data_type(dt.clone()), *p, *s)
            }
            DataType::Decimal256(p, s) => {
                Column::Decimal256(Decimal256Builder::with_capacity(n).with_data_type(dt.clone()), *p, *s)
            }
            DataType::Utf8 => Column::Utf8(StringBuilder::with_capacity(n, n * 16)),
            DataType::Binary => Column::Binary(BinaryBuilder::with_capacity(n, n * 16)),
            DataType::Date32 => Column::Date32(Date32Builder::with_capacity(n)),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Column::Timestamp(TimestampMicrosecondBuilder::with_capacity(n).with_data_type(dt.clone()))
            }
            DataType::Time64(TimeUnit::Microsecond) => Column::Time64(Time64MicrosecondBuilder::with_capacity(n)),
            other => return Err(format!("no decoder for {other}")),
        })
    }

    /// The values appended so far, as an array; the builder starts again empty.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Boolean(b) => Arc::new(b.finish()),
            Column::Int8(b) => Arc::new(b.finish()),
            Column::Int16(b) => Arc::new(b.finish()),
            Column::Int32(b) => Arc::new(b.finish()),
            Column::Int64(b) => Arc::new(b.finish()),
            Column::UInt8(b) => Arc::new(b.finish()),
            Column::UInt16(b) => Arc::new(b.finish()),
            Column::UInt32(b) => Arc::new(b.finish()),
            Column::UInt64(b) => Arc::new(b.finish()),
            Column::Float32(b) => Arc::new(b.finish()),
            Column::Float64(b) => Arc::new(b.finish()),
            Column::Decimal128(b, ..) => Arc::new(b.finish()),
            Column::Decimal256(b, ..) => Arc::new(b.finish()),
            Column::Utf8(b) => Arc::new(b.finish()),
            Column::Binary(b) => Arc::new(b.finish()),
            Column::Date32(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
            Column::Time64(b) => Arc::new(b.finish()),
        }
    }

    /// Append one value, as the binary protocol gives it.
    pub fn push(&mut self, value: Value) -> Result<(), String> {
        match self {
            Column::Boolean(b) => b.append_option(match value {
                Value::NULL => None,
                Value::Int(i) => Some(i != 0),
                Value::UInt(u) => Some(u != 0),
                other => return Err(format!("{other:?} is not a boolean")),
            }),
            Column::Int8(b) => b.append_option(integer(value, "tinyint")?),
            Column::Int16(b) => b.append_option(integer(value, "smallint")?),
            Column::Int32(b) => b.append_option(integer(value, "integer")?),
            Column::Int64(b) => b.append_option(integer(value, "bigint")?),
            Column::UInt8(b) => b.append_option(integer(value, "tinyint unsigned")?),
            Column::UInt16(b) => b.append_option(integer(value, "smallint unsigned")?),
            Column::UInt32(b) => b.append_option(integer(value, "integer unsigned")?),
            Column::UInt64(b) => b.append_option(integer(value, "bigint unsigned")?),
            Column::Float32(b) => b.append_option(match value {
                Value::NULL => None,
                Value::Float(f) => Some(f),
                Value::Double(d) => Some(d as f32),
                other => return Err(format!("{other:?} is not a number")),
            }),
            Column::Float64(b) => b.append_option(match value {
                Value::NULL => None,
                Value::Float(f) => Some(f64::from(f)),
                Value::Double(d) => Some(d),
                other => return Err(format!("{other:?} is not a number")),
            }),
            Column::Decimal128(b, p, s) => b.append_option(match value {
                Value::NULL => None,
                Value::Bytes(bytes) => Some(decimal_i128(&bytes, *p, *s)?),
                Value::Int(i) => Some(i128::from(i) * 10i128.pow(*s as u32)),
                Value::UInt(u) => Some(i128::from(u) * 10i128.pow(*s as u32)),
                other => return Err(format!("{other:?} is not a decimal")),
            }),
            Column::Decimal256(b, p, s) => b.append_option(match value {
                Value::NULL => None,
                Value::Bytes(bytes) => {
                    let digits = decimal_digits(&bytes, *p, *s)?;
                    Some(i256::from_string(&digits).ok_or_else(|| format!("{digits} is not a decimal"))?)
                }
                other => return Err(format!("{other:?} is not a decimal")),
            }),
            Column::Utf8(b) => match value {
                Value::NULL => b.append_null(),
                Value::Bytes(bytes) => {
                    b.append_value(std::str::from_utf8(&bytes).map_err(|e| format!("not UTF-8 text: {e}"))?)
                }
                other => return Err(format!("{other:?} is not text")),
            },
            Column::Binary(b) => match value {
                Value::NULL => b.append_null(),
                Value::Bytes(bytes) => b.append_value(bytes),
                other => return Err(format!("{other:?} is not bytes")),
            },
            Column::Date32(b) => b.append_option(match value {
                Value::NULL => None,
                Value::Date(y, m, d, ..) => epoch_days(y, m, d)?,
                other => return Err(format!("{other:?} is not a date")),
            }),
            Column::Timestamp(b) => b.append_option(match value {
                Value::NULL => None,
                Value::Date(y, mo, d, h, mi, s, us) => match epoch_days(y, mo, d)? {
                    None => None,
                    Some(_) if h > 23 || mi > 59 || s > 59 || us > 999_999 => {
                        return Err(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06} is not a time"));
                    }
                    Some(days) => Some(
                        i64::from(days) * 86_400_000_000
                            + ((i64::from(h) * 60 + i64::from(mi)) * 60 + i64::from(s)) * 1_000_000
                            + i64::from(us),
                    ),
                },
                other => return Err(format!("{other:?} is not a timestamp")),
            }),
            Column::Time64(b) => b.append_option(match value {
                Value::NULL => None,
                Value::Time(negative, days, h, m, s, us) => {
                    if negative || days > 0 {
                        let sign = if negative { "-" } else { "" };
                        return Err(format!(
                            "{sign}{}:{m:02}:{s:02} is a duration outside one day, which a `time` column of weir cannot hold; read it as text with `schema:` (varchar)",
                            days * 24 + u32::from(h)
                        ));
                    }
                    Some(((i64::from(h) * 60 + i64::from(m)) * 60 + i64::from(s)) * 1_000_000 + i64::from(us))
                }
                other => return Err(format!("{other:?} is not a time")),
            }),
        }
        Ok(())
    }
}

/// Days from 1970-01-01 to a date; `None` for MySQL's zero dates (`0000-00-00`, or a zero
/// month or day), which stand for "no date" and are read as NULL. Integer arithmetic only
/// (the proleptic Gregorian calendar, as `chrono`'s).
fn epoch_days(y: u16, m: u8, d: u8) -> Result<Option<i32>, String> {
    if y == 0 || m == 0 || d == 0 {
        return Ok(None);
    }
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    };
    if d > month_days {
        return Err(format!("{y:04}-{m:02}-{d:02} is not a date"));
    }
    // Howard Hinnant's days_from_civil, for years 1–9999 (no negative eras).
    let (y, m, d) = (i32::from(y) - i32::from(m <= 2), i32::from(m), i32::from(d));
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok(Some(era * 146_097 + doe - 719_468))
}

/// A decimal's text (`-123.45`) as an integer at `scale` (`-12345` at 2), checked against
/// `precision` (at most 38), without allocating; [`decimal_digits`] says what is wrong.
fn decimal_i128(text: &[u8], precision: u8, scale: i8) -> Result<i128, String> {
    let wrong = || decimal_digits(text, precision, scale).err().unwrap_or_else(|| "not a decimal".into());
    let scale = scale.max(0) as usize;
    let (negative, rest) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut v: i128 = 0;
    let mut significant = 0usize;
    let mut fraction: Option<usize> = None;
    let mut any = false;
    for &b in rest {
        match b {
            b'0'..=b'9' => {
                any = true;
                if let Some(f) = fraction.as_mut() {
                    if *f == scale {
                        if b != b'0' {
                            return Err(wrong());
                        }
                        continue;
                    }
                    *f += 1;
                }
                if v != 0 || b != b'0' {
                    significant += 1;
                    if significant > precision as usize {
                        return Err(wrong());
                    }
                }
                v = v * 10 + i128::from(b - b'0');
            }
            b'.' if fraction.is_none() => fraction = Some(0),
            _ => return Err(wrong()),
        }
    }
    if !any {
        return Err(wrong());
    }
    for _ in fraction.unwrap_or(0)..scale {
        if v != 0 {
            significant += 1;
            if significant > precision as usize {
                return Err(wrong());
            }
        }
        v *= 10;
    }
    Ok(if negative { -v } else { v })
}

/// A decimal's text (`-123.45`) as the digits of an integer at `scale` (`-12345` at 2),
/// checked against `precision`; digits past the scale must be zeros.
fn decimal_digits(text: &[u8], precision: u8, scale: i8) -> Result<String, String> {
    let text = std::str::from_utf8(text).map_err(|e| e.to_string())?.trim();
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let scale = scale.max(0) as usize;
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("{text} is not a decimal"));
    }
    if frac.len() > scale && frac[scale..].bytes().any(|b| b != b'0') {
        return Err(format!("{text} has more than {scale} digits after the point"));
    }
    let mut digits = whole.trim_start_matches('0').to_string();
    let kept = &frac[..frac.len().min(scale)];
    digits.push_str(kept);
    digits.extend(std::iter::repeat_n('0', scale - kept.len()));
    let significant = digits.trim_start_matches('0');
    if significant.len() > precision as usize {
        return Err(format!("{text} does not fit decimal({precision},{scale})"));
    }
    let significant = if significant.is_empty() { "0" } else { significant };
    Ok(if negative && significant != "0" { format!("-{significant}") } else { significant.to_string() })
}

/// A message for `e` with what the server said, never the connection's password.
pub fn error_text(e: &MyError) -> String {
    let server = |source: &mysql_async::Error| -> String {
        match source {
            mysql_async::Error::Server(s) => s.message.clone(),
            // The driver's wrappers repeat themselves ("Input/output error: Input/output
            // error: …"): the innermost cause says it.
            other => {
                let mut last: &dyn std::error::Error = other;
                while let Some(c) = last.source() {
                    last = c;
                }
                last.to_string()
            }
        }
    };
    match e {
        MyError::Connect { url, source } => format!("cannot connect to {url}: {}", server(source)),
        MyError::Server(source) => format!("MySQL: {}", server(source)),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_without_allocating_as_they_do_through_text() {
        for (text, p, s) in [
            ("123.45", 5, 2),
            ("-0.01", 12, 2),
            ("0.00", 12, 2),
            ("-0.00", 12, 2),
            ("7", 5, 2),
            ("1.5000", 5, 2),
            ("1.505", 5, 2),
            ("1234.5", 5, 2),
            ("abc", 5, 2),
            ("", 5, 2),
            (".", 5, 2),
            ("1.2.3", 5, 2),
            ("99999999999999999999999999999999999999", 38, 0),
            ("999999999999999999999999999999999999999", 38, 0),
            ("-12345678901234567890123456.789012345678", 38, 12),
            ("00012.5", 4, 1),
        ] {
            let slow = decimal_digits(text.as_bytes(), p, s).map(|d| d.parse::<i128>().unwrap());
            assert_eq!(decimal_i128(text.as_bytes(), p, s), slow, "{text} as decimal({p},{s})");
        }
    }

    #[test]
    fn decimals_read_at_their_scale() {
        assert_eq!(decimal_digits(b"123.45", 5, 2).unwrap(), "12345");
        assert_eq!(decimal_digits(b"-0.01", 12, 2).unwrap(), "-1");
        assert_eq!(decimal_digits(b"0.00", 12, 2).unwrap(), "0");
        assert_eq!(decimal_digits(b"-0.00", 12, 2).unwrap(), "0");
        assert_eq!(decimal_digits(b"7", 5, 2).unwrap(), "700");
        assert_eq!(decimal_digits(b"1.5000", 5, 2).unwrap(), "150");
        assert!(decimal_digits(b"1.505", 5, 2).is_err());
        assert!(decimal_digits(b"1234.5", 5, 2).is_err());
        assert!(decimal_digits(b"abc", 5, 2).is_err());
        assert_eq!(
            decimal_digits(b"99999999999999999999999999999999999999999999999999999999999999999", 65, 0).unwrap().len(),
            65
        );
    }

    #[test]
    fn literals_mean_the_same_in_every_sql_mode() {
        use datafusion::common::ScalarValue as S;
        assert_eq!(literal(&S::Utf8(Some("it's".into()))).as_deref(), Some("'it''s'"));
        assert_eq!(literal(&S::Utf8(Some("a\\b".into()))).as_deref(), Some("_utf8mb4 X'615C62'"));
        assert_eq!(literal(&S::UInt64(Some(u64::MAX))).as_deref(), Some("18446744073709551615"));
        assert_eq!(literal(&S::Decimal128(Some(1234), 10, 2)).as_deref(), Some("12.34"));
        assert_eq!(literal(&S::Date32(Some(0))).as_deref(), Some("DATE'1970-01-01'"));
        assert_eq!(
            literal(&S::TimestampMicrosecond(Some(1_500_000), None)).as_deref(),
            Some("TIMESTAMP'1970-01-01 00:00:01.500000'")
        );
    }

    #[test]
    fn urls_lose_their_password_and_need_a_database() {
        let s = MyStore::new("erp", "mysql://etl:hunter2@127.0.0.1:3306/erp", &[]).unwrap();
        assert!(!s.display_url.contains("hunter2"), "{}", s.display_url);
        assert!(is_mysql_url("mariadb://h/db"));
        assert!(MyStore::new("erp", "mysql://h", &[]).is_err());
        assert!(MyStore::new("erp", "mysql://h/db?ssl=true", &[]).is_err());
        assert!(matches!(
            MyStore::new("erp", "mysql://h/db", &[("sslmode".into(), "x".into())]),
            Err(MyError::UnknownOption(_))
        ));
    }

    #[test]
    fn dates_count_days_as_chrono_does_and_zero_dates_are_null() {
        assert_eq!(epoch_days(0, 0, 0), Ok(None));
        assert_eq!(epoch_days(2020, 0, 1), Ok(None));
        assert!(epoch_days(2021, 2, 29).is_err());
        assert!(epoch_days(2021, 4, 31).is_err());
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        let mut day = chrono::NaiveDate::from_ymd_opt(1, 1, 1).unwrap();
        let last = chrono::NaiveDate::from_ymd_opt(9999, 12, 31).unwrap();
        use chrono::Datelike;
        while day <= last {
            let want = (day - epoch).num_days() as i32;
            assert_eq!(epoch_days(day.year() as u16, day.month() as u8, day.day() as u8), Ok(Some(want)), "{day}");
            day = day + chrono::Days::new(1);
        }
    }
}
