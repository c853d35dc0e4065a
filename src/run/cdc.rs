//! Change data capture extracts in a run (see `source::postgres::cdc`): the changes since the
//! position the loads committed are staged like any extract's rows, the new position goes to
//! the loads' commit records, and the slot moves only after they have committed.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::catalog::streaming::StreamingTable;
use datafusion::prelude::{SessionContext, ident, lit};
use petgraph::graph::NodeIndex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::RunOptions;
use super::error::TaskError;
use super::error::cancellable;
use super::incremental::{ExtractInput, ExtractResult, position_value};
use super::tasks::{Outcome, TaskEnv, staged_table};
use crate::compile::{Plan, TaskKind};
use crate::failpoint;
use crate::source::SourcePlan;
use crate::source::postgres::cdc::{self, CdcPlan, Changes, LSN, OP};
use crate::source::postgres::pgoutput::lsn_text;
use crate::source::postgres::{PgPlan, open_snapshot};

/// A slot after a run: where it is, and how much WAL it holds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlotReport {
    pub task: String,
    pub slot: String,
    /// WAL the server keeps for the slot, in bytes.
    pub lag_bytes: u64,
    /// The `lag_alert` threshold.
    pub alert_bytes: Option<u64>,
}

/// Read the changes (after the table's snapshot on a first run), stage them, and record the
/// new position for the loads of the pass.
#[allow(clippy::too_many_arguments)]
pub(super) async fn extract(
    ctx: &SessionContext,
    i: NodeIndex,
    name: &str,
    pg: &Arc<PgPlan>,
    c: &CdcPlan,
    input: Option<&ExtractInput>,
    env: &TaskEnv,
    cancel: &CancellationToken,
) -> Result<Outcome, TaskError> {
    let position = input.and_then(|x| x.position);
    let confirmed = cancellable(cancel, cdc::prepare(pg, c)).await?;
    if let Some(p) = position
        && confirmed > p
    {
        return Err(TaskError::fatal(format!(
            "slot `{}` is at {}, past the position the loads downstream committed ({}): the changes in between are no longer in the slot. Run `weir run --full-refresh` to read the table again",
            c.slot,
            lsn_text(confirmed),
            lsn_text(p)
        )));
    }
    let schema = pg.schema();
    let (df, changes, first) = match position {
        Some(p) => {
            let changes = Arc::new(Changes::new(pg.clone(), c.clone(), Some(p), None, None));
            let table = StreamingTable::try_new(schema.clone(), vec![changes.clone()])?;
            (ctx.read_table(Arc::new(table))?, changes, false)
        }
        None => {
            let (parts, snapshot, wal_end) = cancellable(cancel, open_snapshot(pg.clone(), None)).await?;
            failpoint::hit("source_snapshot", name).await?;
            let table = StreamingTable::try_new(pg.table_schema(), parts)?;
            let mut columns: Vec<_> = pg.columns.iter().map(|col| ident(&col.name)).collect();
            columns.push(lit("insert").alias(OP));
            columns.push(lit(0i64).alias(LSN));
            let rows = ctx.read_table(Arc::new(table))?.select(columns)?;
            let changes = Arc::new(Changes::new(pg.clone(), c.clone(), None, Some(snapshot), Some(wal_end)));
            let stream = StreamingTable::try_new(schema.clone(), vec![changes.clone()])?;
            (rows.union(ctx.read_table(Arc::new(stream))?)?, changes, true)
        }
    };
    let area = super::stage::Area::Local(&env.staging_dir);
    let (written, files) =
        super::stage::stage_parquet(&area, &ctx.state(), df.logical_plan().clone(), name, cancel).await?;
    failpoint::hit("cdc_changes_read", name).await?;
    let progress = changes.progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Every transaction the slot can still give ends past its confirmed position.
    let base = position.unwrap_or(confirmed);
    let next = progress.end.map_or(base, |e| e.max(base));
    // No change, but the server's WAL moved on (other tables): once that is a quarter of
    // `lag_alert` (at most 64 MiB), the loads commit the new position with no rows, so that the
    // slot can move and the server can drop that WAL.
    let idle_limit = c.lag_alert.map_or(64 << 20, |l| (l / 4).min(64 << 20));
    let empty = written.rows == 0 && next.saturating_sub(base) < idle_limit;
    env.pass
        .results
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(i, ExtractResult { empty, watermark: Some(position_value(next)), null_cursors: 0 });
    let bytes = files.iter().map(|f| f.size).sum();
    ctx.register_table(name, Arc::new(staged_table(schema, files).with_rows(written.rows)))?;
    let tx = |n: u64| if n == 1 { "1 transaction".to_string() } else { format!("{n} transactions") };
    let mut note = if first {
        format!(
            "first run: {} rows of the table in one snapshot, then {} changes in {} (slot `{}`)",
            written.rows.saturating_sub(progress.changes),
            progress.changes,
            tx(progress.transactions),
            c.slot
        )
    } else {
        format!("{} changes in {} since {}", progress.changes, tx(progress.transactions), lsn_text(base))
    };
    if progress.skipped > 0 {
        note.push_str(&format!("; {} already in the output passed over", tx(progress.skipped)));
    }
    note.push_str(&format!("; position now {}", lsn_text(next)));
    Ok(Outcome {
        rows_out: Some(written.rows),
        bytes_written: Some(bytes),
        staged: true,
        note: Some(note),
        ..Default::default()
    })
}

/// After a run: move each selected change data capture extract's slot up to the lowest
/// position its loads have committed (never past what one of them still needs), and report
/// the WAL each slot holds. A slot that cannot be moved is reported, not fatal: it only holds
/// WAL for longer, and the next run moves it.
pub(super) async fn advance_slots(plan: &Plan, opts: &RunOptions, selection: &HashSet<NodeIndex>) -> Vec<SlotReport> {
    let mut out = Vec::new();
    for &i in &plan.order {
        let TaskKind::Extract(e) = &plan.task(i).kind else { continue };
        let SourcePlan::Database(db) = &e.source else { continue };
        let Some((pg, c)) = db.cdc() else { continue };
        if !selection.contains(&i) {
            continue;
        }
        let name = &plan.task(i).name;
        let loads: HashSet<NodeIndex> = plan
            .order
            .iter()
            .copied()
            .filter(|&l| matches!(plan.task(l).kind, TaskKind::Load(_)) && plan.incremental_sources(l).contains(&i))
            .collect();
        let states = match super::incremental::load_states(plan, &loads, opts.state.as_deref()).await {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(task = %name, slot = %c.slot, "the slot was not moved: {err}");
                continue;
            }
        };
        let to = states
            .values()
            .filter_map(|s| s.extract(name).and_then(|x| x.watermark.as_ref()))
            .filter(|w| w.data_type == super::incremental::POSITION_TYPE)
            .filter_map(|w| crate::source::postgres::pgoutput::parse_lsn(&w.value))
            .min();
        if failpoint::hit("cdc_before_advance", name).await.is_err() {
            continue;
        }
        match cdc::advance(&pg.store, &c.slot, to).await {
            Ok(Some(lag)) => {
                if c.lag_alert.is_some_and(|limit| lag > limit) {
                    tracing::warn!(task = %name, slot = %c.slot, lag_bytes = lag, "the slot holds more WAL than `lag_alert`");
                }
                out.push(SlotReport {
                    task: name.clone(),
                    slot: c.slot.clone(),
                    lag_bytes: lag,
                    alert_bytes: c.lag_alert,
                });
            }
            Ok(None) => {}
            Err(err) => {
                let msg = plan.secrets.redact(&crate::source::postgres::error_text(&err));
                tracing::warn!(task = %name, slot = %c.slot, "the slot was not moved: {msg}");
            }
        }
    }
    out
}
