//! A PostgreSQL table as a load's output: binary `COPY … FROM STDIN` (each value in the
//! column's binary form, `source::postgres::target::encode`), a transaction-scoped advisory
//! lock, `INSERT … ON CONFLICT` when a unique index covers exactly the keys. An `overwrite`'s
//! `TRUNCATE` makes readers wait for the commit instead of seeing a part, then the new rows.

use std::sync::Arc;

use bytes::BytesMut;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use futures::{SinkExt, StreamExt};
use tokio_postgres::GenericClient;

use super::super::commit::CommitRecord;
use super::super::writer::{WriteOutcome, leaf_rows};
use super::super::{LoadRequest, SinkError};
use super::{CHUNK, DELETE_FLAG, KEEP_RECORDS, TableError, join_on, names, next_record, output_name, rebuilds};
use crate::compile::TableTarget;
use crate::failpoint;
use crate::source::postgres::target::{self as pg, TargetColumn};
use crate::source::postgres::{DIALECT, PgError, PgStore, quote_ident};
use crate::spec::{LoadMode, OnSchemaChange};

/// The latest commit record of load `task` beside `t`'s table.
pub(super) async fn latest(
    store: &PgStore,
    t: &TableTarget,
    pipeline: &str,
    task: &str,
) -> Result<Option<CommitRecord>, SinkError> {
    let output = output_name(t);
    let client = store.connect().await.map_err(|e| TableError::server(&output, e))?;
    let (_, commits) = names(&t.table, &DIALECT);
    latest_record(&client, &commits, pipeline, task).await.map_err(|e| TableError::server(&output, e))
}

/// Write `plan`'s rows into the table of `t` as the load's mode says, in one transaction
/// with the load's commit record.
pub(super) async fn load(
    state: &SessionState,
    plan: LogicalPlan,
    schema: SchemaRef,
    store: &PgStore,
    t: &TableTarget,
    mut req: LoadRequest<'_>,
) -> Result<(WriteOutcome, CommitRecord), SinkError> {
    let load = req.load;
    let output = output_name(t);
    let server = |source: PgError| TableError::server(&output, source);
    let db = |e: tokio_postgres::Error| server(PgError::Server(e));
    let (table, commits) = names(&t.table, &DIALECT);
    let mut client = store.connect().await.map_err(server)?;

    // One run of a load at a time: the lock is the session's, released when it ends.
    let lock = format!("weir:{}:{}:{table}", req.pipeline, req.task);
    let locked: bool =
        client.query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&lock]).await.map_err(db)?.get(0);
    if !locked {
        return Err(TableError::Busy { output, load: req.task.to_string() }.into());
    }
    ensure_commits_table(&client, &commits).await.map_err(server)?;
    let current = latest_record(&client, &commits, req.pipeline, req.task).await.map_err(server)?;
    let mut record = next_record(current.as_ref(), &mut req)?;
    let seq = record.seq;
    let rebuild = rebuilds(&req);
    let super::Rows { plan: rows, merge: staged_merge, rows_in } = super::rows(state, plan, &schema, &req).await?;

    let tx = client.transaction().await.map_err(db)?;
    let mut columns = pg::describe_table(&tx, &table).await.map_err(server)?;
    let add = t.on_schema_change == OnSchemaChange::AddColumns;
    if let Some(cols) = &columns {
        let problems = pg::problems(&schema, Some(cols), add);
        if !problems.is_empty() {
            if !req.full_refresh {
                return Err(TableError::Columns { output, problems: problems.join("; ") }.into());
            }
            // A full refresh rebuilds the table with the load's columns.
            tx.batch_execute(&format!("DROP TABLE {table}")).await.map_err(db)?;
            columns = None;
        }
    }
    match &columns {
        None => {
            let problems = pg::problems(&schema, None, add);
            if !problems.is_empty() {
                return Err(TableError::Columns { output, problems: problems.join("; ") }.into());
            }
            tx.batch_execute(&create_table(&table, &schema, &load.keys)).await.map_err(db)?;
        }
        Some(cols) => {
            for f in schema.fields().iter().filter(|f| !cols.iter().any(|c| c.name == *f.name())) {
                let ty = pg::column_type(f.data_type())
                    .map_err(|problem| TableError::Columns { output: output.clone(), problems: problem })?;
                tx.batch_execute(&format!("ALTER TABLE {table} ADD COLUMN {} {ty}", quote_ident(f.name())))
                    .await
                    .map_err(db)?;
            }
        }
    }
    // Read again only when this transaction created the table or added columns.
    let columns = match columns {
        Some(cols) if schema.fields().iter().all(|f| cols.iter().any(|c| c.name == *f.name())) => cols,
        _ => pg::describe_table(&tx, &table).await.map_err(server)?.unwrap_or_default(),
    };
    let wire =
        wire_columns(&schema, &columns).map_err(|problems| TableError::Columns { output: output.clone(), problems })?;
    let list = schema.fields().iter().map(|f| quote_ident(f.name())).collect::<Vec<_>>().join(", ");

    let (sent, physical, bytes) = if rebuild || load.mode == LoadMode::Append {
        if rebuild {
            tx.batch_execute(&format!("TRUNCATE {table}")).await.map_err(db)?;
        }
        copy_rows(
            &tx,
            state,
            rows,
            &format!("COPY {table} ({list}) FROM STDIN (FORMAT binary)"),
            &wire,
            req.task,
            &output,
        )
        .await?
    } else {
        // This run's rows into a temporary table with the target's column types.
        tx.batch_execute(&format!(
            "CREATE TEMPORARY TABLE weir_stage ON COMMIT DROP AS SELECT {list} FROM {table} WITH NO DATA"
        ))
        .await
        .map_err(db)?;
        let mut wire = wire;
        let mut staged_list = list.clone();
        if staged_merge {
            tx.batch_execute(&format!("ALTER TABLE weir_stage ADD COLUMN {DELETE_FLAG} boolean")).await.map_err(db)?;
            wire.push((DataType::Boolean, tokio_postgres::types::Type::BOOL));
            staged_list.push_str(&format!(", {DELETE_FLAG}"));
        }
        let copied = copy_rows(
            &tx,
            state,
            rows,
            &format!("COPY weir_stage ({staged_list}) FROM STDIN (FORMAT binary)"),
            &wire,
            req.task,
            &output,
        )
        .await?;
        // No ANALYZE: the planner sizes the staged table by its pages, which is enough to pick
        // the join (ANALYZE took 0.28 s of the benchmark's 1.5 s merge).
        let (delete, insert) = if staged_merge && unique_on(&tx, &table, &load.keys).await.map_err(server)? {
            // A unique index on the keys: one upsert (a lookup and an update per row) instead
            // of a delete and an insert; the rows `delete_when` flags are deleted first.
            let keys = load.keys.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
            let set: Vec<String> = schema
                .fields()
                .iter()
                .filter(|f| !load.keys.contains(f.name()))
                .map(|f| format!("{c} = EXCLUDED.{c}", c = quote_ident(f.name())))
                .collect();
            let action =
                if set.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", set.join(", ")) };
            (
                load.delete_when.as_ref().map(|_| {
                    format!(
                        "DELETE FROM {table} AS t USING weir_stage AS s WHERE {} AND s.{DELETE_FLAG}",
                        join_on("t", "s", &load.keys, "=", quote_ident)
                    )
                }),
                format!(
                    "INSERT INTO {table} ({list}) SELECT {list} FROM weir_stage WHERE NOT {DELETE_FLAG} ON CONFLICT ({keys}) {action}"
                ),
            )
        } else if staged_merge {
            (
                Some(format!(
                    "DELETE FROM {table} AS t USING weir_stage AS s WHERE {}",
                    join_on("t", "s", &load.keys, "=", quote_ident)
                )),
                format!("INSERT INTO {table} ({list}) SELECT {list} FROM weir_stage WHERE NOT {DELETE_FLAG}"),
            )
        } else {
            let parts = load.partition_by.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
            (
                Some(format!(
                    "DELETE FROM {table} AS t USING (SELECT DISTINCT {parts} FROM weir_stage) AS p WHERE {}",
                    join_on("p", "t", &load.partition_by, "IS NOT DISTINCT FROM", quote_ident)
                )),
                format!("INSERT INTO {table} ({list}) SELECT {list} FROM weir_stage"),
            )
        };
        if let Some(delete) = delete {
            tx.execute(&delete, &[]).await.map_err(db)?;
        }
        let inserted = tx.execute(&insert, &[]).await.map_err(db)?;
        (inserted, copied.1, copied.2)
    };
    failpoint::hit("after_data_files", req.task).await.map_err(SinkError::Failpoint)?;

    record.rows_written = Some(sent);
    let text = serde_json::to_string(&record)?;
    let inserted = tx
        .execute(
            &format!(
                "INSERT INTO {commits} (pipeline, load, seq, run_id, committed_at, record) VALUES ($1, $2, $3, $4, now(), $5::text::jsonb)"
            ),
            &[&req.pipeline, &req.task, &(seq as i64), &req.run_id, &text],
        )
        .await;
    if let Err(e) = inserted {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            return Err(SinkError::Conflict { output, seq });
        }
        return Err(db(e));
    }
    tx.execute(
        &format!("DELETE FROM {commits} WHERE pipeline = $1 AND load = $2 AND seq <= $3"),
        &[&req.pipeline, &req.task, &(seq as i64 - KEEP_RECORDS)],
    )
    .await
    .map_err(db)?;
    failpoint::hit("before_publish", req.task).await.map_err(SinkError::Failpoint)?;
    tx.commit().await.map_err(db)?;
    failpoint::hit("after_publish", req.task).await.map_err(SinkError::Failpoint)?;
    let rows_in = rows_in.unwrap_or_else(|| leaf_rows(&physical));
    // Bytes: the COPY data sent (no files).
    Ok((WriteOutcome { rows: sent, rows_in, files: 0, bytes }, record))
}

/// Whether `table` has a unique index (or constraint) on exactly the columns `keys`, checked
/// at once and without a condition: what `ON CONFLICT (keys)` needs.
async fn unique_on(client: &impl GenericClient, table: &str, keys: &[String]) -> Result<bool, PgError> {
    let rows = client
        .query(
            "SELECT array_agg(a.attname::text) FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[]) \
             WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indimmediate \
             AND i.indpred IS NULL AND i.indexprs IS NULL GROUP BY i.indexrelid",
            &[&table],
        )
        .await?;
    let mut want: Vec<&str> = keys.iter().map(String::as_str).collect();
    want.sort_unstable();
    Ok(rows.iter().any(|r| {
        let mut cols: Vec<String> = r.get(0);
        cols.sort_unstable();
        cols == want
    }))
}

/// `CREATE TABLE` with the load's columns (`keys`: the primary key).
fn create_table(table: &str, schema: &Schema, keys: &[String]) -> String {
    let mut cols = Vec::new();
    for f in schema.fields() {
        // Checked by `problems` before.
        let ty = pg::column_type(f.data_type()).unwrap_or_else(|_| "text".into());
        let not_null = if keys.contains(f.name()) { " NOT NULL" } else { "" };
        cols.push(format!("{} {ty}{not_null}", quote_ident(f.name())));
    }
    if !keys.is_empty() {
        cols.push(format!("PRIMARY KEY ({})", keys.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ")));
    }
    format!("CREATE TABLE {table} ({})", cols.join(", "))
}

/// The commit table, created when missing (two loads creating it at once: one wins).
async fn ensure_commits_table(client: &impl GenericClient, commits: &str) -> Result<(), PgError> {
    let created = client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {commits} (pipeline text NOT NULL, load text NOT NULL, seq bigint NOT NULL, \
             run_id text NOT NULL, committed_at timestamptz NOT NULL, record jsonb NOT NULL, \
             PRIMARY KEY (pipeline, load, seq))"
        ))
        .await;
    match created {
        Ok(()) => Ok(()),
        Err(e)
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
                || e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE)
                // Its row type, created in the same race.
                || e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// For each of the load's columns, the Arrow type it is sent as and the server's type.
fn wire_columns(
    schema: &Schema,
    columns: &[TargetColumn],
) -> Result<Vec<(DataType, tokio_postgres::types::Type)>, String> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for f in schema.fields() {
        let Some(c) = columns.iter().find(|c| c.name == *f.name()) else {
            problems.push(format!("the table has no column `{}`", f.name()));
            continue;
        };
        match pg::wire_type(f.data_type(), c) {
            Ok(t) => out.push((t, c.pg.clone())),
            Err(why) => problems.push(format!("column `{}`: {why}", f.name())),
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems.join("; ")) }
}

/// Run `rows` and send them through `copy` (a `COPY … FROM STDIN (FORMAT binary)`), each
/// column cast to its wire type. Returns the rows the server took, the executed plan and the bytes sent.
async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    state: &SessionState,
    rows: LogicalPlan,
    copy: &str,
    wire: &[(DataType, tokio_postgres::types::Type)],
    task: &str,
    output: &str,
) -> Result<(u64, Arc<dyn datafusion::physical_plan::ExecutionPlan>, u64), SinkError> {
    let copy_err = |e: tokio_postgres::Error| TableError::server(output, PgError::Server(e));
    let rows_err = |message: String| SinkError::Table(TableError::Rows { output: output.to_string(), message });
    let physical = state.create_physical_plan(&rows).await?;
    let mut stream = execute_stream(physical.clone(), state.task_ctx())?;
    let sink = tx.copy_in::<_, bytes::Bytes>(copy).await.map_err(copy_err)?;
    futures::pin_mut!(sink);
    let types: Vec<_> = wire.iter().map(|(_, t)| t.clone()).collect();
    let options = CastOptions { safe: false, ..Default::default() };
    let mut buf = BytesMut::with_capacity(CHUNK + CHUNK / 4);
    pg::copy_header(&mut buf);
    let (mut chunks, mut bytes) = (0u64, 0u64);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let cols: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .zip(wire)
            .zip(batch.schema().fields())
            .map(|((a, (t, _)), f)| {
                if a.data_type() == t {
                    Ok(a.clone())
                } else {
                    cast_with_options(a, t, &options)
                        .map_err(|e| rows_err(format!("column `{}` cannot be written as {t}: {e}", f.name())))
                }
            })
            .collect::<Result<_, _>>()?;
        pg::encode(&cols, &types, &mut buf).map_err(rows_err)?;
        if buf.len() >= CHUNK {
            bytes += buf.len() as u64;
            sink.send(buf.split().freeze()).await.map_err(copy_err)?;
            chunks += 1;
            if chunks == 1 {
                failpoint::hit("mid_copy", task).await.map_err(SinkError::Failpoint)?;
            }
        }
    }
    pg::copy_trailer(&mut buf);
    bytes += buf.len() as u64;
    sink.send(buf.split().freeze()).await.map_err(copy_err)?;
    let n = sink.finish().await.map_err(copy_err)?;
    Ok((n, physical, bytes))
}

/// The latest record of `task`, if the commit table exists and holds one.
async fn latest_record(
    client: &impl GenericClient,
    commits: &str,
    pipeline: &str,
    task: &str,
) -> Result<Option<CommitRecord>, PgError> {
    let exists = client.query_one("SELECT to_regclass($1)::oid", &[&commits]).await?;
    if exists.get::<_, Option<u32>>(0).is_none() {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!("SELECT record::text FROM {commits} WHERE pipeline = $1 AND load = $2 ORDER BY seq DESC LIMIT 1"),
            &[&pipeline, &task],
        )
        .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let text: String = r.get(0);
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| PgError::Value { column: "record".into(), message: format!("{commits}: {e}") })
        }
    }
}
