//! A MySQL/MariaDB table as a load's output.
//!
//! - **Rows** go by `LOAD DATA LOCAL INFILE` from a stream: the rows as tab-separated text,
//!   made batch by batch while the server reads them (nothing on disk). Where the server
//!   has `local_infile` off (MySQL 8's default), or the store says `local_infile: false`, by
//!   multi-row `INSERT … VALUES` statements of up to 1 MB instead.
//! - **Nothing is changed quietly.** Every session runs in strict mode, and because MySQL
//!   turns data errors of a `LOAD DATA LOCAL` into warnings (the client cannot be stopped
//!   mid-file), a load with any warning, or with fewer rows taken than sent, fails and rolls
//!   back, quoting the server's first warnings.
//! - **One transaction** holds the rows and the commit record. MySQL's DDL commits at once,
//!   so what cannot be in it comes first, outside it: the commit table, a missing table, the
//!   columns `add_columns` adds (all empty until the transaction commits rows), the staging
//!   table (temporary). An `overwrite` deletes the old rows in the transaction (readers see
//!   the old rows until the commit). Only InnoDB tables are written (a MyISAM table cannot
//!   roll back). A full refresh that changes the table's columns drops and re-creates it
//!   first: a reader may see it empty until the commit.
//! - A `merge` is one `INSERT … SELECT … ON DUPLICATE KEY UPDATE` when the table's only
//!   unique keys are exactly `keys` (another unique key could make it update a different
//!   row), else a `DELETE … JOIN` and an `INSERT … SELECT`.
//! - One run of a load at a time: `GET_LOCK` of the load, held by the session.

use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::{SinkExt, StreamExt};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::sync::Arc;

use super::super::commit::CommitRecord;
use super::super::writer::{WriteOutcome, leaf_rows};
use super::super::{LoadRequest, SinkError};
use super::{
    CHUNK, COMMITS, DELETE_FLAG, KEEP_RECORDS, TableError, join_on, names, next_record, output_name, rebuilds,
};
use crate::compile::TableTarget;
use crate::failpoint;
use crate::source::mysql::target::{self as my, Framing, Row, TargetTable};
use crate::source::mysql::{DIALECT, MyError, MyStore, quote_ident};
use crate::spec::{LoadMode, OnSchemaChange};

/// The session's SQL mode: errors, not warnings, for values a column cannot hold; backslash
/// escapes in literals; a 0 written into an auto-increment column stays 0.
const SQL_MODE: &str = "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO";
/// The staging table of a merge or a replacement of partitions (temporary: the session's).
const STAGE: &str = "weir_stage";
/// How long a load waits for the lock of its load.
const LOCK_WAIT_SECONDS: u32 = 5;
/// Server errors: a duplicate key.
const DUPLICATE_KEY: u16 = 1062;

/// The latest commit record of load `task` beside `t`'s table.
pub(super) async fn latest(
    store: &MyStore,
    t: &TableTarget,
    pipeline: &str,
    task: &str,
) -> Result<Option<CommitRecord>, SinkError> {
    let output = output_name(t);
    let mut conn = store.connect().await.map_err(|e| TableError::server(&output, e))?;
    let record = latest_record(&mut conn, &t.table, pipeline, task).await;
    let _ = conn.disconnect().await;
    record.map_err(|e| TableError::server(&output, e))
}

/// The latest record of `task`, if the commit table beside `table` exists and holds one.
async fn latest_record(
    conn: &mut Conn,
    table: &str,
    pipeline: &str,
    task: &str,
) -> Result<Option<CommitRecord>, MyError> {
    let (db, _) = my::table_parts(table);
    let exists: Option<u8> = conn
        .exec_first(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?",
            (db, COMMITS),
        )
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let (_, commits) = names(table, &DIALECT);
    let text: Option<String> = conn
        .exec_first(
            format!("SELECT record FROM {commits} WHERE pipeline = ? AND `load` = ? ORDER BY seq DESC LIMIT 1"),
            (pipeline, task),
        )
        .await?;
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| MyError::Value { column: "record".into(), message: format!("{commits}: {e}") })
}

/// Write `plan`'s rows into the table of `t` as the load's mode says, in one transaction
/// with the load's commit record.
pub(super) async fn load(
    state: &SessionState,
    plan: LogicalPlan,
    schema: SchemaRef,
    store: &MyStore,
    t: &TableTarget,
    req: LoadRequest<'_>,
) -> Result<(WriteOutcome, CommitRecord), SinkError> {
    let output = output_name(t);
    let mut conn = store.connect().await.map_err(|e| TableError::server(&output, e))?;
    let done = load_on(&mut conn, state, plan, schema, store, t, req).await;
    if done.is_err() {
        let _ = conn.query_drop("ROLLBACK").await;
    }
    // The lock and the staging table end with the session.
    let _ = conn.disconnect().await;
    done
}

async fn load_on(
    conn: &mut Conn,
    state: &SessionState,
    plan: LogicalPlan,
    schema: SchemaRef,
    store: &MyStore,
    t: &TableTarget,
    mut req: LoadRequest<'_>,
) -> Result<(WriteOutcome, CommitRecord), SinkError> {
    let load = req.load;
    let output = output_name(t);
    let server = |e: MyError| TableError::server(&output, e);
    let db = |e: mysql_async::Error| server(MyError::Server(e));
    let (table, commits) = names(&t.table, &DIALECT);
    conn.query_drop(format!("SET SESSION sql_mode = '{SQL_MODE}'")).await.map_err(db)?;

    // One run of a load at a time (a lock name has at most 64 characters). A few seconds'
    // wait: the session of a run killed a moment ago holds the lock until the server has
    // noticed and rolled it back.
    let lock = format!("{}:{}:{}", req.pipeline, req.task, t.table);
    let locked: Option<Option<i64>> =
        conn.exec_first("SELECT GET_LOCK(CONCAT('weir:', SHA1(?)), ?)", (lock, LOCK_WAIT_SECONDS)).await.map_err(db)?;
    if locked.flatten() != Some(1) {
        return Err(TableError::Busy { output, load: req.task.to_string() }.into());
    }
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {commits} (pipeline varchar(200) NOT NULL, `load` varchar(200) NOT NULL, \
         seq bigint NOT NULL, run_id varchar(100) NOT NULL, committed_at datetime(6) NOT NULL, record json NOT NULL, \
         PRIMARY KEY (pipeline, `load`, seq)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    ))
    .await
    .map_err(db)?;
    let current = latest_record(conn, &t.table, req.pipeline, req.task).await.map_err(server)?;
    let mut record = next_record(current.as_ref(), &mut req)?;
    let seq = record.seq;
    let rebuild = rebuilds(&req);
    let super::Rows { plan: rows, merge, rows_in } = super::rows(state, plan, &schema, &req).await?;

    // The table, created or widened before the transaction (DDL commits at once).
    let add = t.on_schema_change == OnSchemaChange::AddColumns;
    let mut described = my::describe_table(conn, &t.table).await.map_err(server)?;
    if let Some(tbl) = &described {
        let problems = my::problems(&schema, Some(tbl), add);
        if !problems.is_empty() {
            if !req.full_refresh || tbl.engine.is_none() {
                return Err(TableError::Columns { output, problems: problems.join("; ") }.into());
            }
            // A full refresh rebuilds the table with the load's columns.
            conn.query_drop(format!("DROP TABLE {table}")).await.map_err(db)?;
            described = None;
        }
    }
    let created = described.is_none();
    let columns = match described {
        None => {
            let problems = my::problems(&schema, None, add);
            if !problems.is_empty() {
                return Err(TableError::Columns { output, problems: problems.join("; ") }.into());
            }
            conn.query_drop(create_table(&table, &schema, &load.keys)).await.map_err(db)?;
            None
        }
        Some(tbl) => {
            let missing: Vec<String> = schema
                .fields()
                .iter()
                .filter(|f| !tbl.columns.iter().any(|c| c.name == *f.name()))
                .map(|f| {
                    let ty = my::column_type(f.data_type(), false).unwrap_or_else(|_| "longtext".into());
                    format!("ADD COLUMN {} {ty}", quote_ident(f.name()))
                })
                .collect();
            if missing.is_empty() {
                Some(tbl)
            } else {
                conn.query_drop(format!("ALTER TABLE {table} {}", missing.join(", "))).await.map_err(db)?;
                None
            }
        }
    };
    let tbl = match columns {
        Some(tbl) => tbl,
        None => my::describe_table(conn, &t.table).await.map_err(server)?.ok_or_else(|| TableError::Columns {
            output: output.clone(),
            problems: "the table is gone: it was dropped while the load wrote it".into(),
        })?,
    };
    let mut wire =
        wire_columns(&schema, &tbl).map_err(|problems| TableError::Columns { output: output.clone(), problems })?;
    let list = schema.fields().iter().map(|f| quote_ident(f.name())).collect::<Vec<_>>().join(", ");
    let infile = store.local_infile && {
        let on: Option<i64> = conn.query_first("SELECT @@local_infile").await.map_err(db)?;
        on == Some(1)
    };
    let staged = !(rebuild || load.mode == LoadMode::Append);
    if staged {
        // This run's rows go first into a temporary table with the target's column types.
        let flag = if merge { format!(", FALSE AS {DELETE_FLAG}") } else { String::new() };
        conn.query_drop(format!(
            "DROP TEMPORARY TABLE IF EXISTS {STAGE}; CREATE TEMPORARY TABLE {STAGE} ENGINE=InnoDB SELECT {list}{flag} FROM {table} LIMIT 0"
        ))
        .await
        .map_err(db)?;
        if merge {
            wire.push(Wire { name: DELETE_FLAG.into(), arrow: DataType::Boolean, fraction: 0 });
        }
    }

    conn.query_drop("START TRANSACTION").await.map_err(db)?;
    let into = if staged { STAGE } else { &table };
    if rebuild && !created {
        conn.query_drop(format!("DELETE FROM {table}")).await.map_err(db)?;
    }
    let sent = send(conn, state, rows, into, &wire, infile, req.task, &output).await?;
    let written = if staged {
        let keys = |cols: &[String], op: &str| join_on("t", "s", cols, op, quote_ident);
        let (delete, insert) = if merge {
            let insert = format!("INSERT INTO {table} ({list}) SELECT {list} FROM {STAGE} WHERE NOT {DELETE_FLAG}");
            if upserts(&tbl, &load.keys) {
                let set: Vec<String> = schema
                    .fields()
                    .iter()
                    .filter(|f| !load.keys.contains(f.name()))
                    .map(|f| format!("{c} = VALUES({c})", c = quote_ident(f.name())))
                    .collect();
                // No other column: a row that is there stays as it is.
                let set = if set.is_empty() {
                    let k = quote_ident(&load.keys[0]);
                    format!("{k} = {k}")
                } else {
                    set.join(", ")
                };
                (
                    load.delete_when.as_ref().map(|_| {
                        format!(
                            "DELETE t FROM {table} AS t JOIN {STAGE} AS s ON {} WHERE s.{DELETE_FLAG}",
                            keys(&load.keys, "=")
                        )
                    }),
                    format!("{insert} ON DUPLICATE KEY UPDATE {set}"),
                )
            } else {
                (Some(format!("DELETE t FROM {table} AS t JOIN {STAGE} AS s ON {}", keys(&load.keys, "="))), insert)
            }
        } else {
            let parts = load.partition_by.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
            (
                Some(format!(
                    "DELETE t FROM {table} AS t JOIN (SELECT DISTINCT {parts} FROM {STAGE}) AS s ON {}",
                    keys(&load.partition_by, "<=>")
                )),
                format!("INSERT INTO {table} ({list}) SELECT {list} FROM {STAGE}"),
            )
        };
        if let Some(delete) = delete {
            conn.query_drop(delete).await.map_err(db)?;
        }
        conn.query_drop(&insert).await.map_err(db)?;
        if merge {
            let kept: Option<u64> =
                conn.query_first(format!("SELECT COUNT(*) FROM {STAGE} WHERE NOT {DELETE_FLAG}")).await.map_err(db)?;
            kept.unwrap_or(0)
        } else {
            sent.rows
        }
    } else {
        sent.rows
    };
    failpoint::hit("after_data_files", req.task).await.map_err(SinkError::Failpoint)?;

    record.rows_written = Some(written);
    let text = serde_json::to_string(&record)?;
    let inserted = conn
        .exec_drop(
            format!(
                "INSERT INTO {commits} (pipeline, `load`, seq, run_id, committed_at, record) VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6), ?)"
            ),
            (req.pipeline, req.task, seq as i64, req.run_id, text),
        )
        .await;
    match inserted {
        Err(mysql_async::Error::Server(e)) if e.code == DUPLICATE_KEY => {
            return Err(SinkError::Conflict { output, seq });
        }
        other => other.map_err(db)?,
    }
    conn.exec_drop(
        format!("DELETE FROM {commits} WHERE pipeline = ? AND `load` = ? AND seq <= ?"),
        (req.pipeline, req.task, seq as i64 - KEEP_RECORDS),
    )
    .await
    .map_err(db)?;
    failpoint::hit("before_publish", req.task).await.map_err(SinkError::Failpoint)?;
    conn.query_drop("COMMIT").await.map_err(db)?;
    failpoint::hit("after_publish", req.task).await.map_err(SinkError::Failpoint)?;
    let rows_in = rows_in.unwrap_or_else(|| leaf_rows(&sent.physical));
    Ok((WriteOutcome { rows: written, rows_in, files: 0, bytes: sent.bytes }, record))
}

/// Whether `INSERT … ON DUPLICATE KEY UPDATE` updates exactly the row with the same `keys`:
/// the table's unique keys are all on exactly those columns.
fn upserts(table: &TargetTable, keys: &[String]) -> bool {
    let mut want: Vec<&str> = keys.iter().map(String::as_str).collect();
    want.sort_unstable();
    !table.unique.is_empty()
        && table.unique.iter().all(|cols| {
            let mut cols: Vec<&str> = cols.iter().map(String::as_str).collect();
            cols.sort_unstable();
            cols == want
        })
}

/// `CREATE TABLE` with the load's columns (`keys`: the primary key).
fn create_table(table: &str, schema: &Schema, keys: &[String]) -> String {
    let mut cols = Vec::new();
    for f in schema.fields() {
        let key = keys.contains(f.name());
        // Checked by `problems` before.
        let ty = my::column_type(f.data_type(), key).unwrap_or_else(|_| "longtext".into());
        let not_null = if key { " NOT NULL" } else { "" };
        cols.push(format!("{} {ty}{not_null}", quote_ident(f.name())));
    }
    if !keys.is_empty() {
        cols.push(format!("PRIMARY KEY ({})", keys.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ")));
    }
    format!("CREATE TABLE {table} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4", cols.join(", "))
}

/// A load's column as it is sent: the Arrow type it is cast to, and the fractional digits
/// of a second its column keeps.
struct Wire {
    name: String,
    arrow: DataType,
    fraction: u32,
}

fn wire_columns(schema: &Schema, table: &TargetTable) -> Result<Vec<Wire>, String> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for f in schema.fields() {
        let Some(c) = table.columns.iter().find(|c| c.name == *f.name()) else {
            problems.push(format!("the table has no column `{}`", f.name()));
            continue;
        };
        match my::wire_type(f.data_type(), c) {
            Ok(arrow) => out.push(Wire { name: f.name().clone(), arrow, fraction: c.fraction }),
            Err(why) => problems.push(format!("column `{}`: {why}", f.name())),
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems.join("; ")) }
}

/// What [`send`] sent.
struct Sent {
    rows: u64,
    bytes: u64,
    physical: Arc<dyn ExecutionPlan>,
}

/// Run `rows` and write them into `into` (columns `wire`, in order): by `LOAD DATA LOCAL
/// INFILE` from a stream (`infile`), else by `INSERT … VALUES` statements. Every row must be
/// taken, without a warning.
#[allow(clippy::too_many_arguments)]
async fn send(
    conn: &mut Conn,
    state: &SessionState,
    rows: LogicalPlan,
    into: &str,
    wire: &[Wire],
    infile: bool,
    task: &str,
    output: &str,
) -> Result<Sent, SinkError> {
    let physical = state.create_physical_plan(&rows).await?;
    let stream = execute_stream(physical.clone(), state.task_ctx())?;
    let names: Vec<String> = wire.iter().map(|w| w.name.clone()).collect();
    let (tx, mut rx) = futures::channel::mpsc::channel::<bytes::Bytes>(4);
    let list = names.iter().map(|n| quote_ident(n)).collect::<Vec<_>>().join(", ");
    let framing = if infile { Framing::Infile } else { Framing::Values };
    // An `INSERT` at most this long (the server's packet limit holds it).
    let statement = if infile {
        CHUNK
    } else {
        let max: Option<u64> = conn
            .query_first("SELECT @@max_allowed_packet")
            .await
            .map_err(|e| TableError::server(output, MyError::Server(e)))?;
        (max.unwrap_or(1 << 22) as usize / 2).min(CHUNK)
    };
    let prefix = (!infile).then(|| format!("INSERT INTO {into} ({list}) VALUES "));
    let producer = produce(stream, wire, &names, framing, prefix, statement, tx, task, output);
    let server = |e: mysql_async::Error| TableError::server(output, MyError::Server(e));
    let (taken, produced) = if infile {
        // Columns of bytes arrive as hexadecimal, through a variable.
        let targets: Vec<String> = wire
            .iter()
            .enumerate()
            .map(|(k, w)| if w.arrow == DataType::Binary { format!("@w{k}") } else { quote_ident(&w.name) })
            .collect();
        let set: Vec<String> = wire
            .iter()
            .enumerate()
            .filter(|(_, w)| w.arrow == DataType::Binary)
            .map(|(k, w)| format!("{} = UNHEX(@w{k})", quote_ident(&w.name)))
            .collect();
        let set = if set.is_empty() { String::new() } else { format!(" SET {}", set.join(", ")) };
        let sql = format!(
            "LOAD DATA LOCAL INFILE 'weir' INTO TABLE {into} CHARACTER SET utf8mb4 \
             FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({}){set}",
            targets.join(", ")
        );
        conn.set_infile_handler(async move { Ok(rx.map(Ok::<_, std::io::Error>).boxed()) });
        let query = Box::pin(async {
            conn.query_drop(sql).await?;
            Ok::<_, mysql_async::Error>((conn.affected_rows(), conn.get_warnings()))
        });
        // The server may refuse the statement before it reads a row: then the rows are not
        // waited for.
        match futures::future::select(query, Box::pin(producer)).await {
            futures::future::Either::Left((q, producer)) => match q {
                Ok(q) => (Ok(q), producer.await),
                Err(e) => (Err(e), Ok(Produced::default())),
            },
            futures::future::Either::Right((p, query)) => (query.await, p),
        }
    } else {
        let consume = async {
            let (mut taken, mut warnings) = (0u64, 0u16);
            while let Some(statement) = rx.next().await {
                let sql = String::from_utf8_lossy(&statement).into_owned();
                conn.query_drop(sql).await?;
                taken += conn.affected_rows();
                warnings = warnings.saturating_add(conn.get_warnings());
                if warnings > 0 {
                    break;
                }
            }
            Ok::<_, mysql_async::Error>((taken, warnings))
        };
        let (q, p) = futures::join!(consume, producer);
        (q, p)
    };
    let (taken, warnings) = taken.map_err(server)?;
    let produced = produced?;
    if warnings > 0 {
        let shown: Vec<(String, u32, String)> = conn.query("SHOW WARNINGS LIMIT 5").await.map_err(server)?;
        let said: Vec<String> = shown.into_iter().map(|(_, code, message)| format!("{message} ({code})")).collect();
        return Err(TableError::Rows {
            output: output.to_string(),
            message: format!(
                "the server changed or dropped values it was sent ({warnings} warnings: {}): nothing was written",
                said.join("; ")
            ),
        }
        .into());
    }
    if taken != produced.rows {
        return Err(TableError::Rows {
            output: output.to_string(),
            message: format!("the server took {taken} of the {} rows sent: nothing was written", produced.rows),
        }
        .into());
    }
    Ok(Sent { rows: produced.rows, bytes: produced.bytes, physical })
}

/// What [`produce`] made.
#[derive(Default)]
struct Produced {
    rows: u64,
    bytes: u64,
}

/// The rows of `stream`, each column cast to its wire type, as text in `framing`, sent into
/// `tx` in chunks of about `chunk` bytes (each an `INSERT` statement when `prefix` is one).
/// Stops quietly when the receiver has gone (the server's error says why).
#[allow(clippy::too_many_arguments)]
async fn produce(
    mut stream: datafusion::execution::SendableRecordBatchStream,
    wire: &[Wire],
    names: &[String],
    framing: Framing,
    prefix: Option<String>,
    chunk: usize,
    mut tx: futures::channel::mpsc::Sender<bytes::Bytes>,
    task: &str,
    output: &str,
) -> Result<Produced, SinkError> {
    let rows_err = |message: String| SinkError::Table(TableError::Rows { output: output.to_string(), message });
    let options = CastOptions { safe: false, ..Default::default() };
    let fractions: Vec<u32> = wire.iter().map(|w| w.fraction).collect();
    let mut made = Produced::default();
    let mut buf: Vec<u8> = Vec::with_capacity(chunk + chunk / 4);
    let start = |buf: &mut Vec<u8>| {
        if let Some(p) = &prefix {
            buf.extend_from_slice(p.as_bytes());
        }
    };
    start(&mut buf);
    let mut in_chunk = 0usize;
    let mut chunks = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let cols: Vec<_> = batch
            .columns()
            .iter()
            .zip(wire)
            .map(|(a, w)| {
                if *a.data_type() == w.arrow {
                    Ok(a.clone())
                } else {
                    cast_with_options(a, &w.arrow, &options)
                        .map_err(|e| rows_err(format!("column `{}` cannot be written as {}: {e}", w.name, w.arrow)))
                }
            })
            .collect::<Result<_, _>>()?;
        let mut row = Row::new(&cols, &fractions, framing).map_err(rows_err)?;
        for i in 0..batch.num_rows() {
            if prefix.is_some() && in_chunk > 0 {
                buf.push(b',');
            }
            row.write(i, names, &mut buf).map_err(rows_err)?;
            in_chunk += 1;
            made.rows += 1;
            if buf.len() >= chunk {
                made.bytes += buf.len() as u64;
                if tx.send(bytes::Bytes::from(std::mem::take(&mut buf))).await.is_err() {
                    return Ok(made);
                }
                buf.reserve(chunk + chunk / 4);
                start(&mut buf);
                in_chunk = 0;
                chunks += 1;
                if chunks == 1 {
                    failpoint::hit("mid_copy", task).await.map_err(SinkError::Failpoint)?;
                }
            }
        }
    }
    if in_chunk > 0 || (prefix.is_none() && !buf.is_empty()) {
        made.bytes += buf.len() as u64;
        let _ = tx.send(bytes::Bytes::from(buf)).await;
    }
    Ok(made)
}
