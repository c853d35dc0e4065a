//! `sink::table`: a database table as a load's output — PostgreSQL ([`postgres`]) and
//! MySQL/MariaDB ([`mysql`]), with the same promises as files: all or nothing, exactly once.
//!
//! A load is one transaction on one connection, holding a lock of the load (a second run of
//! the same load is refused at once, writing nothing). The table's columns are read; a
//! missing table is created from the load's columns (`keys` its primary key), missing
//! columns are added with `on_schema_change: add_columns`, and anything else that does not
//! fit is refused, naming both sides. The rows go by the server's bulk path (binary `COPY`;
//! `LOAD DATA LOCAL INFILE` from a stream) straight into the table for `overwrite` and
//! `append`, and into a temporary table for `merge` (this run's rows, one per key, with a
//! `weir_delete` flag from `delete_when`) and `replace_partitions`, from which one `DELETE`
//! and one `INSERT … SELECT` apply them. The load's commit record (what it consumed, the
//! whole state) is inserted into the commit table `weir_commits` beside the table, keyed by
//! (pipeline, load, seq): a second writer of the same commit fails on the key, so the record
//! is also the fence. Until `COMMIT` readers see the table as it was; killed at any step, the
//! server rolls everything back.

pub mod mysql;
pub mod postgres;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{LogicalPlan, lit};

use super::commit::{CommitRecord, LoadState};
use super::writer::WriteOutcome;
use super::{LoadRequest, SinkError};
use crate::compile::TableTarget;
use crate::source::database::{DbError, DbStore};
use crate::spec::LoadMode;

/// The commit table, beside the table a load writes.
const COMMITS: &str = "weir_commits";
/// Records kept per load (older ones are deleted by each commit; only the latest counts).
const KEEP_RECORDS: i64 = 20;
/// Bytes of row data sent at a time.
const CHUNK: usize = 1 << 20;
/// The flag column of a merge's staged rows.
const DELETE_FLAG: &str = "weir_delete";

/// Why a table load did not commit (the table is as it was).
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{output}: {}", source.text())]
    Server {
        output: String,
        #[source]
        source: DbError,
    },
    #[error("{output}: {problems}")]
    Columns { output: String, problems: String },
    #[error(
        "{output}: another run of load `{load}` is writing to this table (it holds the load's lock; or the server is still rolling back a run that was killed): nothing of this run was written; run again when it has finished"
    )]
    Busy { output: String, load: String },
    #[error("{output}: {message}")]
    Rows { output: String, message: String },
}

impl TableError {
    pub fn is_transient(&self) -> bool {
        match self {
            TableError::Server { source, .. } => source.is_transient(),
            TableError::Busy { .. } => true,
            _ => false,
        }
    }

    /// A server error of the load writing `output`.
    fn server(output: &str, source: impl Into<DbError>) -> SinkError {
        SinkError::Table(TableError::Server { output: output.to_string(), source: source.into() })
    }
}

/// How a table load's output is named in messages: `store: table t`.
fn output_name(t: &TableTarget) -> String {
    format!("{}: table {}", t.store.name(), t.table)
}

/// The state the latest commit record of load `task` beside `t`'s table holds (the default
/// when there is none, or no commit table).
pub async fn read_state(t: &TableTarget, pipeline: &str, task: &str) -> Result<LoadState, SinkError> {
    let record = match &t.store {
        DbStore::Postgres(store) => postgres::latest(store, t, pipeline, task).await?,
        DbStore::Mysql(store) => mysql::latest(store, t, pipeline, task).await?,
    };
    let mut state = LoadState::default();
    if let Some(r) = record {
        state.apply(&r);
    }
    Ok(state)
}

/// Write `plan`'s rows into the table of `t` as the load's mode says, in one transaction
/// with the load's commit record.
pub async fn load(
    state: &SessionState,
    plan: LogicalPlan,
    schema: SchemaRef,
    t: &TableTarget,
    req: LoadRequest<'_>,
) -> Result<(WriteOutcome, CommitRecord), SinkError> {
    match &t.store {
        DbStore::Postgres(store) => postgres::load(state, plan, schema, store, t, req).await,
        DbStore::Mysql(store) => mysql::load(state, plan, schema, store, t, req).await,
    }
}

/// The commit this load writes after `current` (the latest record in the table), holding the
/// whole state: the current one with this run's consumption, or this run's alone when the
/// table is rebuilt. `Err` when the output moved on since the run read its state.
fn next_record(current: Option<&CommitRecord>, req: &mut LoadRequest<'_>) -> Result<CommitRecord, SinkError> {
    let latest = current.map_or(0, |r| r.seq);
    if let Some(base) = req.base_seq
        && base != latest
    {
        return Err(SinkError::Moved { expected: base, found: latest });
    }
    let mut extracts = std::mem::take(&mut req.consumed);
    if !rebuilds(req)
        && let Some(r) = current
    {
        let mut state = LoadState::default();
        state.apply(r);
        extracts = state.with(&extracts);
    }
    Ok(CommitRecord::new(req, latest + 1, true, extracts))
}

/// Whether the load replaces the whole table.
fn rebuilds(req: &LoadRequest<'_>) -> bool {
    req.full_refresh || req.load.mode == LoadMode::Overwrite
}

/// This run's rows as the table load sends them.
struct Rows {
    plan: LogicalPlan,
    /// A merge's rows (one per key) with the `weir_delete` flag as their last column.
    merge: bool,
    /// The rows the load read (a merge counts them before it reduces them).
    rows_in: Option<u64>,
}

/// This run's rows: a merge's are checked and reduced to one per key first, and carry the
/// delete flag (a full refresh drops the deleted ones instead).
async fn rows(
    state: &SessionState,
    plan: LogicalPlan,
    schema: &SchemaRef,
    req: &LoadRequest<'_>,
) -> Result<Rows, SinkError> {
    let load = req.load;
    if load.mode != LoadMode::Merge {
        return Ok(Rows { plan, merge: false, rows_in: None });
    }
    let p = super::merge::prepare_rows(state, plan, schema, load, &req.scratch).await?;
    // No rows: nothing staged to read (the commit still records what was consumed).
    let mut df = if p.rows == 0 {
        p.ctx.read_table(Arc::new(datafusion::datasource::empty::EmptyTable::new(schema.clone())))?
    } else {
        p.ctx.table(p.source).await?
    };
    let flag = super::merge::delete_predicate(state, load, schema)?;
    let rows_in = Some(p.rows_in);
    if req.full_refresh {
        // A rebuild from a merge's rows: one per key, deletes dropped.
        if let Some(flag) = flag {
            df = df.filter(datafusion::logical_expr::not(flag))?;
        }
        return Ok(Rows { plan: df.logical_plan().clone(), merge: false, rows_in });
    }
    let mut exprs: Vec<_> = schema.fields().iter().map(|f| datafusion::prelude::ident(f.name())).collect();
    exprs.push(flag.unwrap_or(lit(false)).alias(DELETE_FLAG));
    Ok(Rows { plan: df.select(exprs)?.logical_plan().clone(), merge: true, rows_in })
}

/// `cols` of `a` and `b` joined by `op` (`a.c = b.c AND …`), each name quoted by `quote`.
fn join_on(a: &str, b: &str, cols: &[String], op: &str, quote: fn(&str) -> String) -> String {
    cols.iter().map(|c| format!("{a}.{c} {op} {b}.{c}", c = quote(c))).collect::<Vec<_>>().join(" AND ")
}

/// The table as SQL, and its commit table (beside it: in the same schema or database).
fn names(table: &str, dialect: &dyn crate::source::database::Dialect) -> (String, String) {
    use crate::source::database::Relation;
    let quoted = Relation::Table(table.to_string()).from_sql(dialect);
    let commits = match table.rsplit_once('.') {
        Some((schema, _)) => format!("{}.{COMMITS}", Relation::Table(schema.to_string()).from_sql(dialect)),
        None => COMMITS.to_string(),
    };
    (quoted, commits)
}
