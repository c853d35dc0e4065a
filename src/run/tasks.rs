//! The per-kind task runners: extract, transform, load.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigNonZeroUsize;
use datafusion::common::config::ConfigOptions;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use object_store::ObjectMeta;
use petgraph::graph::NodeIndex;
use tokio_util::sync::CancellationToken;

use super::Observer;
pub(super) use super::error::{TaskError, cancellable};
use super::incremental::{ExtractInput, ExtractResult};
use super::table::FusedView;
use crate::compile::{Execution, ExtractPlan, LoadPlan, Plan, SourcePlan, TaskKind, TransformPlan};
use crate::failpoint;
use crate::sink::{self};
use crate::source::files::table::FileSetTable;
use crate::source::files::tolerant::BadRows;
use crate::spec::{BadRowsMode, FileFormat};

pub(super) struct TaskEnv {
    pub run_id: String,
    /// This run's staging directory (local disk).
    pub staging_dir: PathBuf,
    pub observer: Option<Arc<dyn Observer>>,
    /// How fused views plan their part of a query (see [`super::table::unoptimized`]).
    pub planning: Arc<datafusion::execution::session_state::SessionState>,
    /// The pass this task runs in: what incremental extracts read, what they found.
    pub pass: super::incremental::PassRef,
    pub state: Option<Arc<crate::state::StateStore>>,
    pub pipeline: String,
    /// The time `freshness` checks measure from.
    pub logical_time: chrono::DateTime<chrono::Utc>,
    /// The cluster the transforms run on (`engine: ballista`); `None`: this process.
    pub cluster: Option<Arc<super::engine::Cluster>>,
}

#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub fused: bool,
    /// An incremental extract with nothing new.
    pub up_to_date: bool,
    pub rows_in: Option<u64>,
    pub rows_out: Option<u64>,
    pub bytes_read: Option<u64>,
    pub bytes_written: Option<u64>,
    pub files: Option<u64>,
    pub note: Option<String>,
    /// The task's table is staged (local files), not read from its sources on demand.
    pub staged: bool,
    pub checks: Vec<super::checks::CheckResult>,
    /// An error-severity check failed: the task fails with this message.
    pub gate: Option<String>,
    /// Rows set aside by quarantine.
    pub quarantined: Option<u64>,
    /// Malformed input rows left out (`bad_rows: skip | quarantine`).
    pub bad_rows: Option<u64>,
}

/// Run task `i`. `cancel` stops it at any point before it publishes; publishing, once begun,
/// runs to its end.
pub(super) async fn execute(
    ctx: &SessionContext,
    plan: &Plan,
    i: NodeIndex,
    env: &TaskEnv,
    cancel: &CancellationToken,
) -> Result<Outcome, TaskError> {
    let node = plan.task(i);
    cancellable(cancel, failpoint::hit("task_start", &node.name)).await?;
    let result = match (run_task(ctx, plan, i, env, cancel).await, &env.cluster) {
        (Ok(out), Some(cluster)) => share(ctx, cluster, plan, i, env, out, cancel).await,
        (result, _) => result,
    };
    match result {
        Err(e) if !e.cancelled && crate::source::files::tolerant::looks_like_bad_input(&e.message) => {
            // Name the first malformed row of the extracts this task reads.
            match super::malformed::first_bad_row(plan, i, &env.pass).await {
                Some((j, row)) => Err(TaskError::fatal(format!(
                    "extract `{}` has a malformed row: {row}; {}",
                    plan.task(j).name,
                    bad_row_hint(plan, j, &row)
                ))),
                None => Err(e),
            }
        }
        other => other,
    }
}

/// What to do about a malformed row. A value that does not fit a column whose type was
/// inferred from the first rows most likely means the sample was too small, not that the row
/// is bad: setting it aside would drop good rows, so the type comes first.
fn bad_row_hint(plan: &Plan, extract: NodeIndex, row: &crate::source::files::tolerant::BadRow) -> String {
    let aside = "set `bad_rows: skip` or `bad_rows: quarantine` on it to set such rows aside";
    let TaskKind::Extract(e) = &plan.task(extract).kind else { return aside.into() };
    let Some(f) = e.files() else { return aside.into() };
    let (Some(column), Some(value)) = (&row.column, &row.value) else { return aside.into() };
    let Ok(field) = plan.task(extract).schema.field_with_name(column) else { return aside.into() };
    if f.declared.contains(column) || row.reason == "invalid UTF-8" {
        return aside.into();
    }
    let fits = crate::compile::types::widen(field.data_type(), &crate::compile::types::text_value_type(value));
    format!(
        "`{column}` is {} by inference from the first {} rows: if the value is right, declare a type that holds it (`schema: {{ {column}: {} }}`) or sample more rows (`infer_rows`); if the row is wrong, {aside}",
        crate::compile::types::sql_name(field.data_type()),
        f.format.infer_rows,
        crate::compile::types::sql_name(&fits)
    )
}

async fn run_task(
    ctx: &SessionContext,
    plan: &Plan,
    i: NodeIndex,
    env: &TaskEnv,
    cancel: &CancellationToken,
) -> Result<Outcome, TaskError> {
    let node = plan.task(i);
    // `bad_rows: skip | quarantine`: the tolerant reader, staged like a checked table.
    let bad = match &node.kind {
        TaskKind::Extract(e)
            if e.bad_rows != BadRowsMode::Fail && e.files().is_some_and(|f| f.format.kind != FileFormat::Parquet) =>
        {
            Some(BadRows::new(false, e.bad_rows == BadRowsMode::Quarantine))
        }
        _ => None,
    };
    let mut out = match &node.kind {
        TaskKind::Extract(e) => match (&e.source, env.pass.inputs.get(&i)) {
            (SourcePlan::Database(db), input) => database_extract(ctx, plan, i, e, db, input, env, cancel).await,
            (SourcePlan::Http(h), input) => http_extract(ctx, i, &node.name, e, h, input, env, cancel).await,
            (SourcePlan::Files(_), Some(input)) => {
                incremental_extract(ctx, i, &node.name, &node.schema, e, input, bad.as_ref(), env, cancel).await
            }
            (SourcePlan::Files(f), None) => {
                extract(ctx, &node.name, &node.schema, e, &f.files, bad.as_ref(), env.pass.full_refresh).await
            }
        },
        TaskKind::Transform(t) => match &env.cluster {
            Some(cluster) => cluster_transform(ctx, cluster, plan, i, t, cancel).await,
            None => transform(ctx, &node.name, t, env, cancel).await,
        },
        TaskKind::Load(l) => load(ctx, plan, i, &node.name, l, env, cancel).await,
    }?;
    if (node.checks.is_empty() && bad.is_none()) || out.up_to_date || out.fused {
        return Ok(out);
    }
    // Checks and consumers read the same rows, computed once; staging them computes the
    // row-level checks on the way.
    let mut scanned = None;
    if !out.staged {
        let clock = std::time::Instant::now();
        let df = ctx.table(node.name.as_str()).await?;
        let spec = super::checks::scan_spec(&ctx.state(), node, df.schema())?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let dir = env.staging_dir.join(&node.name);
        let staged = cancellable(cancel, super::stage::stage_checked(ctx, df, &dir, Arc::new(spec))).await?;
        tracing::debug!(task = %node.name, ms = clock.elapsed().as_millis() as u64, "checks: table staged and scanned");
        let table = FileSetTable::new(
            schema,
            Arc::new(datafusion::datasource::file_format::arrow::ArrowFormat),
            ObjectStoreUrl::local_filesystem(),
            staged.files.clone(),
        )
        .with_rows(staged.results.rows);
        ctx.deregister_table(node.name.as_str())?;
        ctx.register_table(node.name.as_str(), Arc::new(table))?;
        if matches!(node.kind, TaskKind::Transform(_)) {
            out.rows_in = Some(staged.rows_in);
        }
        out.rows_out = Some(staged.results.rows);
        out.bytes_written = Some(staged.files.iter().map(|f| f.size).sum());
        out.staged = true;
        scanned = Some(staged.results);
    }
    if let (Some(bad), TaskKind::Extract(e)) = (&bad, &node.kind) {
        let n = bad.count();
        let rows = bad.take();
        out.bad_rows = Some(n);
        if let Some(first) = rows.first() {
            let rows_word = if n == 1 { "row" } else { "rows" };
            let what = match (e.bad_rows, &node.quarantine) {
                (BadRowsMode::Quarantine, Some(q)) => {
                    let rel = format!("{}/{}/{}/{}.bad_rows.parquet", q.path, env.pipeline, node.name, env.run_id);
                    let url = cancellable(
                        cancel,
                        crate::source::files::tolerant::write_quarantine(&q.store, &rel, &rows, &env.run_id),
                    )
                    .await?;
                    format!("{n} malformed {rows_word} quarantined to {url}")
                }
                _ => format!("{n} malformed {rows_word} skipped"),
            };
            tracing::warn!(task = %node.name, rows = n, first = %first, "{what}");
            out.note = Some(match out.note.take() {
                Some(x) => format!("{x}; {what} (first: {first})"),
                None => format!("{what} (first: {first})"),
            });
        }
    }
    if node.checks.is_empty() {
        return Ok(out);
    }
    let check_env = super::checks::CheckEnv {
        pipeline: &env.pipeline,
        run_id: &env.run_id,
        logical_time: env.logical_time,
        staging_dir: &env.staging_dir,
        set_aside: true,
    };
    let checked = super::checks::evaluate(ctx, node, &check_env, scanned, cancel).await?;
    if let Some(file) = &checked.quarantine_file {
        out.quarantined = Some(checked.quarantined);
        out.rows_out = Some(checked.passed());
        let q = format!(
            "{} rows checked: {} passed, {} quarantined to {file}",
            checked.rows,
            checked.passed(),
            checked.quarantined
        );
        out.note = Some(match out.note.take() {
            Some(n) => format!("{n}; {q}"),
            None => q,
        });
    }
    out.checks = checked.results;
    out.gate = checked.gate;
    Ok(out)
}

/// Register the extract's files as a table. Nothing is read until a consumer scans it (but
/// the headers of CSV files).
async fn extract(
    ctx: &SessionContext,
    name: &str,
    schema: &SchemaRef,
    e: &ExtractPlan,
    files: &[ObjectMeta],
    bad: Option<&Arc<BadRows>>,
    full_refresh: bool,
) -> Result<Outcome, TaskError> {
    ctx.register_table(name, file_table(ctx, schema, e, files, bad, full_refresh).await?)?;
    Ok(Outcome {
        files: Some(files.len() as u64),
        bytes_read: Some(files.iter().map(|f| f.size).sum()),
        ..Default::default()
    })
}

/// A database extract: its parts read in one snapshot, streamed into local staging (so that
/// every consumer reads the same rows, and the source is read once), then registered.
#[allow(clippy::too_many_arguments)]
async fn database_extract(
    ctx: &SessionContext,
    plan: &Plan,
    i: NodeIndex,
    e: &ExtractPlan,
    db: &crate::source::database::DbPlan,
    input: Option<&ExtractInput>,
    env: &TaskEnv,
    cancel: &CancellationToken,
) -> Result<Outcome, TaskError> {
    let node = plan.task(i);
    let name = node.name.as_str();
    if let Some((pg, c)) = db.cdc() {
        return super::cdc::extract(ctx, i, name, pg, c, input, env, cancel).await;
    }
    let schema = db.schema();
    // With a watermark, only rows past it (and rows with a NULL cursor, to count them) are
    // read: the condition goes to the server.
    let watermark = input.zip(e.incremental.as_ref().and_then(|inc| inc.watermark.as_ref()));
    let filter = match watermark {
        Some((ExtractInput { after: Some(after), .. }, w)) => {
            Some(db.watermark_filter(&w.column, after).ok_or_else(|| {
                TaskError::fatal(format!("the watermark of `{}` ({after}) has no SQL literal", w.column))
            })?)
        }
        _ => None,
    };
    // One consumer and nothing to check: the rows stream from the server into its query.
    let consumers: Vec<NodeIndex> = plan
        .graph
        .edges_directed(i, petgraph::Direction::Outgoing)
        .filter(|e| *e.weight() == crate::compile::Edge::Data)
        .map(|e| petgraph::visit::EdgeRef::target(&e))
        .collect();
    if watermark.is_none()
        && env.cluster.is_none()
        && node.checks.is_empty()
        && let [only] = consumers.as_slice()
        && plan.task(*only).checks.is_empty()
    {
        let table = crate::source::database::DbTable { plan: db.clone(), task: name.to_string() };
        ctx.register_table(name, Arc::new(table))?;
        let parts = db.partition().map_or(1, |p| p.parts);
        return Ok(Outcome {
            note: Some(if parts > 1 {
                format!("streamed into its consumer: {parts} parts read in one snapshot")
            } else {
                "streamed into its consumer".to_string()
            }),
            ..Default::default()
        });
    }
    let parts = cancellable(cancel, db.open_where(filter)).await?;
    failpoint::hit("source_snapshot", name).await?;
    let n_parts = parts.len();
    let table = datafusion::catalog::streaming::StreamingTable::try_new(schema.clone(), parts)?;
    let df = ctx.read_table(Arc::new(table))?;
    if let Some((input, w)) = watermark {
        let mut out = watermarked(ctx, i, name, &schema, w, input, df, env, cancel).await?;
        if n_parts > 1 {
            out.note = out.note.map(|n| format!("{n}; {n_parts} parts read in one snapshot"));
        }
        return Ok(out);
    }
    let area = super::stage::Area::Local(&env.staging_dir);
    let (written, files) =
        super::stage::stage_parquet(&area, &ctx.state(), df.logical_plan().clone(), name, cancel).await?;
    let bytes = files.iter().map(|f| f.size).sum();
    ctx.register_table(name, Arc::new(staged_table(schema, files).with_rows(written.rows)))?;
    Ok(Outcome {
        rows_out: Some(written.rows),
        bytes_written: Some(bytes),
        staged: true,
        note: (n_parts > 1).then(|| format!("{n_parts} parts read in one snapshot")),
        ..Default::default()
    })
}

/// An HTTP extract: its pages read one after another into local staging (an API is read
/// once per run: every consumer reads the same rows). With a watermark, `${watermark}` is
/// the committed one and the rows are filtered by it again (APIs' "since" is often
/// inclusive).
#[allow(clippy::too_many_arguments)]
async fn http_extract(
    ctx: &SessionContext,
    i: NodeIndex,
    name: &str,
    e: &ExtractPlan,
    h: &crate::source::http::HttpPlan,
    input: Option<&ExtractInput>,
    env: &TaskEnv,
    cancel: &CancellationToken,
) -> Result<Outcome, TaskError> {
    use crate::source::http::{HttpError, HttpRead, Stats};
    let watermark = input.zip(e.incremental.as_ref().and_then(|inc| inc.watermark.as_ref()));
    let after = match watermark {
        Some((ExtractInput { after: Some(after), .. }, w)) => {
            Some(crate::source::http::watermark_text(after).ok_or_else(|| {
                TaskError::fatal(format!("the watermark of `{}` ({after}) has no text to send", w.column))
            })?)
        }
        _ => None,
    };
    let stats = Arc::new(Stats::default());
    let read = HttpRead { plan: h.clone(), after, stats: stats.clone() };
    let table = datafusion::catalog::streaming::StreamingTable::try_new(h.schema.clone(), vec![Arc::new(read)])?;
    let df = ctx.read_table(Arc::new(table))?;
    let result = match watermark {
        Some((input, w)) => {
            let cursor = datafusion::prelude::ident(&w.column);
            let df = match &input.after {
                Some(after) => {
                    df.filter(cursor.clone().gt(datafusion::prelude::lit(after.clone())).or(cursor.is_null()))?
                }
                None => df,
            };
            watermarked(ctx, i, name, &h.schema, w, input, df, env, cancel).await
        }
        None => {
            let area = super::stage::Area::Local(&env.staging_dir);
            match super::stage::stage_parquet(&area, &ctx.state(), df.logical_plan().clone(), name, cancel).await {
                Ok((written, files)) => {
                    let bytes = files.iter().map(|f| f.size).sum();
                    ctx.register_table(name, Arc::new(staged_table(h.schema.clone(), files).with_rows(written.rows)))?;
                    Ok(Outcome {
                        rows_out: Some(written.rows),
                        bytes_written: Some(bytes),
                        staged: true,
                        ..Default::default()
                    })
                }
                Err(e) => Err(e),
            }
        }
    };
    let mut out = match result {
        Ok(out) => out,
        Err(err) => {
            // Fields the schema lacks: the next compile reads them (the cached schema gets
            // them), this run loads nothing.
            if let Some(HttpError::NewFields { schema, .. }) = err.source.as_deref().and_then(|e| HttpError::inside(e))
                && let Some(state) = &env.state
            {
                crate::source::SchemaCache::put_schema(
                    state.as_ref(),
                    &h.cache_key,
                    &crate::source::files::infer::schema_bytes(schema),
                );
            }
            return Err(err);
        }
    };
    let (records, pages, requests, retries) =
        (stats.get(&stats.records), stats.get(&stats.pages), stats.get(&stats.requests), stats.get(&stats.retries));
    let what = format!(
        "{records} record{} in {pages} page{} ({requests} request{}{})",
        if records == 1 { "" } else { "s" },
        if pages == 1 { "" } else { "s" },
        if requests == 1 { "" } else { "s" },
        if retries > 0 { format!(", {retries} retried") } else { String::new() }
    );
    out.note = Some(match out.note.take() {
        Some(n) => format!("{what}; {n}"),
        None => what,
    });
    out.bytes_read = Some(stats.get(&stats.bytes));
    Ok(out)
}

/// The table of an extract's `files` (see `source::files::table_of`).
async fn file_table(
    ctx: &SessionContext,
    schema: &SchemaRef,
    e: &ExtractPlan,
    files: &[ObjectMeta],
    bad: Option<&Arc<BadRows>>,
    full_refresh: bool,
) -> Result<Arc<dyn TableProvider>, TaskError> {
    let Some(f) = e.files() else {
        return Err(TaskError::fatal(format!("extract `{}` does not read files", e.source.kind_name())));
    };
    let cache = ctx.runtime_env().cache_manager.get_file_metadata_cache();
    let layout = f.layout(files, Some(&cache), full_refresh).await.map_err(|d| TaskError::fatal(d.to_string()))?;
    Ok(f.table_of(schema, files, layout, |files, read_schema| Ok(f.scan(files, read_schema, schema, bad)?))?)
}

/// An incremental extract: only new files, only rows past the watermark. With a watermark the
/// rows read are staged (so that the watermark is the greatest cursor actually passed on),
/// and counted.
#[allow(clippy::too_many_arguments)]
async fn incremental_extract(
    ctx: &SessionContext,
    i: NodeIndex,
    name: &str,
    schema: &SchemaRef,
    e: &ExtractPlan,
    input: &ExtractInput,
    bad: Option<&Arc<BadRows>>,
    env: &TaskEnv,
    cancel: &CancellationToken,
) -> Result<Outcome, TaskError> {
    let bytes: u64 = input.files.iter().map(|f| f.size).sum();
    let unchanged =
        if input.unchanged > 0 { format!(", {} unchanged not read", input.unchanged) } else { String::new() };
    let watermark = e.incremental.as_ref().and_then(|inc| inc.watermark.as_ref());
    let Some(w) = watermark.filter(|_| !input.files.is_empty()) else {
        let empty = input.files.is_empty();
        env.pass
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(i, ExtractResult { empty, watermark: input.watermark.clone(), null_cursors: 0 });
        let mut out = extract(ctx, name, schema, e, &input.files, bad, env.pass.full_refresh).await?;
        out.up_to_date = empty;
        out.note = Some(if empty {
            format!("no new files{unchanged}")
        } else if e.incremental.as_ref().is_some_and(|inc| inc.new_files) {
            format!(
                "{} new or changed file{}{unchanged}",
                input.files.len(),
                if input.files.len() == 1 { "" } else { "s" }
            )
        } else {
            "all files".to_string()
        });
        return Ok(out);
    };
    // Rows past the watermark, bound as a typed literal (never SQL text).
    let df = ctx.read_table(file_table(ctx, schema, e, &input.files, bad, env.pass.full_refresh).await?)?;
    let cursor = datafusion::prelude::ident(&w.column);
    let df = match &input.after {
        Some(after) => df.filter(cursor.clone().gt(datafusion::prelude::lit(after.clone())).or(cursor.is_null()))?,
        None => df,
    };
    let mut out = watermarked(ctx, i, name, schema, w, input, df, env, cancel).await?;
    out.note = out.note.map(|n| format!("{n}{unchanged}"));
    out.files = Some(input.files.len() as u64);
    out.bytes_read = Some(bytes);
    Ok(out)
}

/// Stage `df` (the rows past the watermark, and those with a NULL cursor), record the new
/// watermark for the loads of the pass, and register the staged rows as the extract's table.
#[allow(clippy::too_many_arguments)]
async fn watermarked(
    ctx: &SessionContext,
    i: NodeIndex,
    name: &str,
    schema: &SchemaRef,
    w: &crate::compile::WatermarkPlan,
    input: &ExtractInput,
    df: datafusion::dataframe::DataFrame,
    env: &TaskEnv,
    cancel: &CancellationToken,
) -> Result<Outcome, TaskError> {
    let dir = env.staging_dir.join(format!("{name}.delta"));
    let staged = cancellable(cancel, super::stage::stage_watermarked(ctx, df, &w.column, &dir)).await?;
    let seen = staged.max.clone();
    let new = super::incremental::max_watermark(input.previous.clone(), seen);
    let empty = staged.rows == 0;
    env.pass.results.lock().unwrap_or_else(|p| p.into_inner()).insert(
        i,
        ExtractResult {
            empty,
            watermark: new.as_ref().map(|v| super::incremental::watermark_value(&w.column, v)),
            null_cursors: staged.nulls,
        },
    );
    ctx.register_table(name, Arc::new(staged_table(schema.clone(), staged.files.clone()).with_rows(staged.rows)))?;
    let mut note = match (&input.after, &new) {
        (Some(after), _) => format!("rows with {} > {}", w.column, super::incremental::display(after)),
        (None, _) => "all rows (no watermark yet)".to_string(),
    };
    if let Some(v) = &new {
        note.push_str(&format!("; watermark now {}", super::incremental::display(v)));
    }
    if staged.nulls > 0 {
        note.push_str(&format!("; {} rows with a NULL `{}` not loaded", staged.nulls, w.column));
        tracing::warn!(task = %name, rows = staged.nulls, column = %w.column, "rows with a NULL cursor are not loaded");
    }
    Ok(Outcome {
        staged: true,
        up_to_date: empty,
        rows_in: Some(staged.rows_in),
        rows_out: Some(staged.rows),
        note: Some(note),
        ..Default::default()
    })
}

pub(super) fn staged_table(schema: SchemaRef, files: Vec<ObjectMeta>) -> FileSetTable {
    FileSetTable::staged(schema, files)
}

/// Register staged Parquet files (of an earlier run) as task `i`'s table.
pub(super) fn register_staged(
    ctx: &SessionContext,
    plan: &Plan,
    i: NodeIndex,
    files: Vec<ObjectMeta>,
) -> Result<(), TaskError> {
    let node = plan.task(i);
    let table = staged_table(node.schema.clone(), files);
    ctx.register_table(node.name.as_str(), Arc::new(table))?;
    Ok(())
}

async fn transform(
    ctx: &SessionContext,
    name: &str,
    t: &TransformPlan,
    env: &TaskEnv,
    cancel: &CancellationToken,
) -> Result<Outcome, TaskError> {
    let df = ctx.sql_with_options(&t.sql, crate::compile::sql::query_only()).await?;
    if !t.execution.materialized() {
        ctx.register_table(name, Arc::new(FusedView::new(df.logical_plan().clone(), t.sql.clone(), &env.planning)))?;
        return Ok(Outcome { fused: true, note: Some("fused into its consumer".into()), ..Default::default() });
    }
    if t.execution == Execution::Checked {
        // Staged by the checks, which compute their counts while the rows are written.
        ctx.register_table(name, df.into_view())?;
        return Ok(Outcome {
            note: Some("materialized: checked before its consumers read it".into()),
            ..Default::default()
        });
    }
    // Computed once, staged as Parquet on local disk.
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let area = super::stage::Area::Local(&env.staging_dir);
    let (written, files) =
        super::stage::stage_parquet(&area, &ctx.state(), df.logical_plan().clone(), name, cancel).await?;
    let bytes = files.iter().map(|f| f.size).sum();
    let n = files.len() as u64;
    ctx.register_table(name, Arc::new(staged_table(schema, files).with_rows(written.rows)))?;
    Ok(Outcome {
        staged: true,
        rows_in: Some(written.rows_in),
        rows_out: Some(written.rows),
        bytes_written: Some(bytes),
        files: Some(n),
        note: Some(
            match t.execution {
                Execution::ChainBreak => "materialized: it ends a long chain of fused queries",
                _ => "materialized: read by several tasks",
            }
            .into(),
        ),
        ..Default::default()
    })
}

/// A transform on the cluster. Read only by other queries, it is a view there (fused into
/// their queries, as locally); otherwise the executors write it as Parquet to the staging
/// area, where loads and checks in weir and the cluster's queries both read it.
async fn cluster_transform(
    ctx: &SessionContext,
    cluster: &super::engine::Cluster,
    plan: &Plan,
    i: NodeIndex,
    t: &TransformPlan,
    cancel: &CancellationToken,
) -> Result<Outcome, TaskError> {
    let node = plan.task(i);
    let name = node.name.as_str();
    let df = cluster.ctx.sql_with_options(&t.sql, crate::compile::sql::query_only()).await?;
    let only_queries_read_it = plan.graph.edges_directed(i, petgraph::Direction::Outgoing).all(|e| {
        use petgraph::visit::EdgeRef;
        let c = plan.task(e.target());
        *e.weight() != crate::compile::Edge::Data || (matches!(c.kind, TaskKind::Transform(_)) && c.checks.is_empty())
    });
    if t.execution == Execution::Fused && only_queries_read_it {
        cluster.ctx.register_table(name, df.into_view())?;
        return Ok(Outcome {
            fused: true,
            note: Some("fused into its consumer, on the cluster".into()),
            ..Default::default()
        });
    }
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let area = super::stage::Area::Cluster(cluster);
    let (written, files) =
        super::stage::stage_parquet(&area, &cluster.ctx.state(), df.logical_plan().clone(), name, cancel).await?;
    cluster.ctx.deregister_table(name)?;
    cluster.ctx.register_table(name, super::engine::staged_listing(&area.url(name), schema.clone())?)?;
    let bytes = files.iter().map(|f| f.size).sum();
    let n = files.len() as u64;
    let table = FileSetTable::new(schema, Arc::new(ParquetFormat::default()), area.object_store_url(), files)
        .with_rows(written.rows);
    ctx.register_table(name, Arc::new(table))?;
    Ok(Outcome {
        staged: true,
        rows_out: Some(written.rows),
        bytes_written: Some(bytes),
        files: Some(n),
        note: Some("computed on the cluster, staged as Parquet".into()),
        ..Default::default()
    })
}

/// Make task `i`'s table readable by the cluster's queries, when a transform reads it: an
/// extract's files as they are, or a table weir computed itself (staged for checks or
/// malformed rows, quarantined, past a watermark) written to the staging area as Parquet.
async fn share(
    ctx: &SessionContext,
    cluster: &super::engine::Cluster,
    plan: &Plan,
    i: NodeIndex,
    env: &TaskEnv,
    out: Outcome,
    cancel: &CancellationToken,
) -> Result<Outcome, TaskError> {
    let node = plan.task(i);
    let name = node.name.as_str();
    let read_by_queries = plan.graph.edges_directed(i, petgraph::Direction::Outgoing).any(|e| {
        use petgraph::visit::EdgeRef;
        *e.weight() == crate::compile::Edge::Data && matches!(plan.task(e.target()).kind, TaskKind::Transform(_))
    });
    if out.fused || out.up_to_date || out.gate.is_some() || !read_by_queries {
        return Ok(out);
    }
    match &node.kind {
        TaskKind::Load(_) => return Ok(out),
        // Already on the cluster, unless quarantine left weir a table of the passing rows.
        TaskKind::Transform(_) if out.quarantined.is_none() => return Ok(out),
        TaskKind::Extract(e)
            if !out.staged
                && node.checks.is_empty()
                && let Some(f) = e.files()
                && let Some(format) = f.format.file_format(false) =>
        {
            let files = env.pass.inputs.get(&i).map(|x| x.files.as_slice()).unwrap_or(f.files.as_slice());
            if !files.is_empty() {
                // Listing tables: the kind of table a cluster can be sent.
                let layout =
                    f.layout(files, None, env.pass.full_refresh).await.map_err(|d| TaskError::fatal(d.to_string()))?;
                let table = f.table_of(&node.schema, files, layout, |files, read_schema| {
                    let urls: Vec<String> = files.iter().map(|m| f.store.url_of(&m.location, false)).collect();
                    super::engine::listing_table(&urls, format.clone(), read_schema)
                })?;
                cluster.ctx.register_table(name, table)?;
                return Ok(out);
            }
        }
        _ => {}
    }
    let dir = format!("{name}.shared");
    let df = ctx.table(name).await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let area = super::stage::Area::Cluster(cluster);
    super::stage::stage_parquet(&area, &ctx.state(), df.logical_plan().clone(), &dir, cancel).await?;
    cluster.ctx.deregister_table(name)?;
    cluster.ctx.register_table(name, super::engine::staged_listing(&area.url(&dir), schema)?)?;
    Ok(out)
}

async fn load(
    ctx: &SessionContext,
    plan: &Plan,
    i: NodeIndex,
    name: &str,
    l: &LoadPlan,
    env: &TaskEnv,
    cancel: &CancellationToken,
) -> Result<Outcome, TaskError> {
    let mut df = ctx.table(l.from.as_str()).await?;
    // Per-load writer settings.
    let mut options: ConfigOptions = ctx.state().config_options().as_ref().clone();
    if let Some(f) = l.files() {
        df = sink::storable(df, f.format)?;
        options.execution.minimum_parallel_output_files = ConfigNonZeroUsize::try_new(1)?;
        options.execution.soft_max_rows_per_output_file = ConfigNonZeroUsize::try_new(f.max_rows_per_file)?;
    }
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let state = super::table::derive_state(ctx.state(), options.into()).build();
    let request = sink::LoadRequest {
        load: l,
        pipeline: &plan.pipeline,
        task: name,
        run_id: &env.run_id,
        full_refresh: env.pass.full_refresh,
        consumed: env.pass.consumed(plan, i),
        scratch: env.staging_dir.join(format!("{name}.load")),
        base_seq: env.pass.base_seqs.get(&i).copied(),
    };
    // The sink the load's format says; cancellable until its output starts changing.
    let (written, record) = match sink::load(&state, df.logical_plan().clone(), schema, request, cancel).await {
        Ok(done) => done,
        Err(sink::LoadError::Cancelled) => return Err(TaskError::cancelled()),
        Err(sink::LoadError::Failed(e)) => return Err(e.into()),
    };
    // The output holds the commit record; the state store caches it.
    failpoint::hit("after_publish_before_state", name).await?;
    if let Some(state) = &env.state
        && let Err(e) = state.record_commit(&record)
    {
        // The output is committed; the next run reads the record from it.
        tracing::warn!(task = %name, "the state store could not record commit {}: {e}", record.seq);
    }
    failpoint::hit("after_state", name).await?;
    Ok(Outcome {
        rows_in: Some(written.rows_in),
        rows_out: Some(written.rows),
        bytes_written: Some(written.bytes),
        files: Some(written.files),
        ..Default::default()
    })
}
