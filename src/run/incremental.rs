//! What an incremental run reads. Each load's output says what the load has consumed (its
//! commit records, `sink::commit`); the state store caches it and is reconciled with the
//! outputs here, at the start of every run.
//!
//! An extract's delta is computed *per load*: files not in that load's ledger, rows past that
//! load's watermark. Loads whose states agree on every extract they share run together in
//! one *pass* over the DAG; loads that disagree (a run was killed between two publishes) run
//! in separate passes, so that no load is fed rows it has already committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use object_store::ObjectMeta;
use petgraph::graph::NodeIndex;

use super::RunError;
use crate::compile::{ExtractPlan, Lookback, Plan, TaskKind, WatermarkPlan};
use crate::sink::commit::{Consumed, ExtractState, LedgerEntry, LoadState, WatermarkValue};
use crate::state::StateStore;

/// What one pass reads from an incremental extract.
#[derive(Debug, Clone)]
pub struct ExtractInput {
    /// The files to read: all of them, or the new and changed ones.
    pub files: Vec<ObjectMeta>,
    /// Files listed but not read, because the loads of this pass consumed them already.
    pub unchanged: usize,
    /// Read only rows whose cursor is greater than this (the watermark minus the lookback).
    pub after: Option<ScalarValue>,
    /// The watermark before this run, as stored and as a value of the column's type.
    pub watermark: Option<WatermarkValue>,
    pub previous: Option<ScalarValue>,
    /// Change data capture: the position (end of a commit record) up to which the loads of
    /// this pass hold every change; `None` on a first run.
    pub position: Option<u64>,
}

/// What an extract task of a pass found.
#[derive(Debug, Clone, Default)]
pub struct ExtractResult {
    /// Nothing new: no files to read, or no row past the watermark.
    pub empty: bool,
    /// The watermark after this run: the greatest cursor read, or the previous one.
    pub watermark: Option<WatermarkValue>,
    /// Rows read with a NULL cursor (never loaded by a watermark extract).
    pub null_cursors: u64,
}

/// One execution of (part of) the DAG with one set of extract inputs.
#[derive(Debug)]
pub struct Pass {
    /// The tasks of this pass (a subset of the run's selection).
    pub tasks: HashSet<NodeIndex>,
    /// The loads of this pass.
    pub loads: Vec<NodeIndex>,
    pub inputs: HashMap<NodeIndex, ExtractInput>,
    pub results: Mutex<HashMap<NodeIndex, ExtractResult>>,
    pub full_refresh: bool,
    /// The commit each incremental load's state was read from.
    pub base_seqs: HashMap<NodeIndex, u64>,
}

impl Pass {
    /// A task is up to date when all its input comes through incremental extracts and none
    /// of them has anything new. Extracts themselves always run (to find out).
    pub fn up_to_date(&self, plan: &Plan, i: NodeIndex) -> Option<Vec<String>> {
        if matches!(plan.task(i).kind, TaskKind::Extract(_)) {
            return None;
        }
        let sources = plan.incremental_sources(i);
        if sources.is_empty() {
            return None;
        }
        let results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        let all_empty = sources.iter().all(|s| results.get(s).is_some_and(|r| r.empty));
        all_empty.then(|| sources.iter().map(|s| plan.task(*s).name.clone()).collect())
    }

    /// What load `load` consumes in this pass, per incremental extract upstream of it.
    pub fn consumed(&self, plan: &Plan, load: NodeIndex) -> BTreeMap<String, Consumed> {
        let results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeMap::new();
        for &s in plan.incremental_sources(load) {
            let TaskKind::Extract(e) = &plan.task(s).kind else { continue };
            let Some(inc) = &e.incremental else { continue };
            let input = self.inputs.get(&s);
            let result = results.get(&s);
            let files = match (inc.new_files, input) {
                (true, Some(input)) if let Some(f) = e.files() => {
                    input.files.iter().map(|m| LedgerEntry::of(&f.store.name, m)).collect()
                }
                _ => Vec::new(),
            };
            let watermark =
                result.and_then(|r| r.watermark.clone()).or_else(|| input.and_then(|i| i.watermark.clone()));
            out.insert(plan.task(s).name.clone(), Consumed { files, watermark });
        }
        out
    }
}

/// The consumed state of every selected load that reads through an incremental extract:
/// from the state store when it agrees with the output's records, else from the records
/// (and the cache is replaced).
pub async fn load_states(
    plan: &Plan,
    selected: &HashSet<NodeIndex>,
    state: Option<&StateStore>,
) -> Result<HashMap<NodeIndex, LoadState>, RunError> {
    let mut out = HashMap::new();
    for &i in &plan.order {
        if !selected.contains(&i) || plan.incremental_sources(i).is_empty() {
            continue;
        }
        let TaskKind::Load(l) = &plan.task(i).kind else { continue };
        let name = &plan.task(i).name;
        let sink_err = |source: crate::sink::SinkError| RunError::Output { load: name.clone(), source };
        // What the output says: its latest commit, and (read only when the cache is behind)
        // the state its records fold to.
        let output = crate::sink::Output::open(l, &plan.pipeline, name).await.map_err(sink_err)?;
        let latest = output.latest_seq();
        let cached = match state {
            Some(s) => s.load_state(&plan.pipeline, name)?,
            None => None,
        };
        let ls = match cached {
            Some(c) if c.seq == latest => c,
            cached => {
                let from_output = output.read_state().await.map_err(sink_err)?;
                match &cached {
                    Some(c) if c.seq > latest => tracing::warn!(
                        load = %name,
                        cached = c.seq,
                        output = latest,
                        "the output of load `{name}` is older than the state store remembers (restored or deleted?): going by the output"
                    ),
                    Some(c) => {
                        tracing::info!(load = %name, cached = c.seq, output = latest, "state store updated from the output's commit records")
                    }
                    None => {}
                }
                if let Some(s) = state {
                    s.replace_load_state(&plan.pipeline, name, &from_output)?;
                }
                from_output
            }
        };
        out.insert(i, ls);
    }
    Ok(out)
}

/// Group the selected tasks into passes: loads whose states agree on every shared
/// incremental extract run together. Tasks that feed no incremental load run in the first.
pub fn passes(
    plan: &Plan,
    selected: &HashSet<NodeIndex>,
    states: &HashMap<NodeIndex, LoadState>,
    full_refresh: bool,
) -> Result<Vec<Pass>, RunError> {
    let empty = ExtractState::default();
    // For each incremental load: (extract → its state for that extract).
    let mut groups: Vec<(Vec<NodeIndex>, HashMap<NodeIndex, &ExtractState>)> = Vec::new();
    for &i in &plan.order {
        let Some(ls) = states.get(&i) else { continue };
        let mine: HashMap<NodeIndex, &ExtractState> = plan
            .incremental_sources(i)
            .iter()
            .map(|&s| (s, if full_refresh { &empty } else { ls.extract(&plan.task(s).name).unwrap_or(&empty) }))
            .collect();
        let fits = groups.iter_mut().find(|(_, g)| mine.iter().all(|(s, st)| g.get(s).is_none_or(|o| *o == *st)));
        match fits {
            Some((loads, g)) => {
                loads.push(i);
                g.extend(mine);
            }
            None => groups.push((vec![i], mine)),
        }
    }
    let incremental_loads: HashSet<NodeIndex> = states.keys().copied().collect();
    let mut passes = Vec::new();
    if groups.is_empty() {
        groups.push((Vec::new(), HashMap::new()));
    }
    for (k, (loads, extract_states)) in groups.into_iter().enumerate() {
        let mut tasks: HashSet<NodeIndex> = HashSet::new();
        for &l in &loads {
            tasks.insert(l);
            tasks.extend(plan.ancestors(l).into_iter().filter(|a| selected.contains(a)));
        }
        if k == 0 {
            // Everything not on the way to an incremental load.
            let upstream_of_incremental: HashSet<NodeIndex> = incremental_loads
                .iter()
                .flat_map(|&l| plan.ancestors(l).into_iter().chain(std::iter::once(l)))
                .collect();
            tasks.extend(selected.iter().copied().filter(|t| !upstream_of_incremental.contains(t)));
        }
        let mut inputs = HashMap::new();
        for &t in &tasks {
            let TaskKind::Extract(e) = &plan.task(t).kind else { continue };
            if e.incremental.is_none() {
                continue;
            }
            let st = if full_refresh { &empty } else { extract_states.get(&t).copied().unwrap_or(&empty) };
            inputs.insert(t, extract_input(&plan.task(t).name, e, st)?);
        }
        if !full_refresh {
            refuse_appending_changed_files(plan, &loads, &inputs, &extract_states)?;
        }
        let base_seqs = loads.iter().filter_map(|l| states.get(l).map(|s| (*l, s.seq))).collect();
        passes.push(Pass { tasks, loads, inputs, results: Mutex::new(HashMap::new()), full_refresh, base_seqs });
    }
    Ok(passes)
}

/// An `append` load must not be given a file again: a file it appended that has grown or
/// been rewritten since would add its rows twice (`merge` with `keys` replaces them instead).
fn refuse_appending_changed_files(
    plan: &Plan,
    loads: &[NodeIndex],
    inputs: &HashMap<NodeIndex, ExtractInput>,
    states: &HashMap<NodeIndex, &ExtractState>,
) -> Result<(), RunError> {
    for &l in loads {
        let TaskKind::Load(load) = &plan.task(l).kind else { continue };
        if load.mode != crate::spec::LoadMode::Append {
            continue;
        }
        for &s in plan.incremental_sources(l) {
            let (TaskKind::Extract(e), Some(input), Some(st)) = (&plan.task(s).kind, inputs.get(&s), states.get(&s))
            else {
                continue;
            };
            let Some(f) = e.files() else { continue };
            let changed = input
                .files
                .iter()
                .find_map(|m| st.files.get(&(f.store.name.clone(), m.location.to_string())).map(|before| (m, before)));
            if let Some((now, before)) = changed {
                return Err(RunError::Changed {
                    load: plan.task(l).name.clone(),
                    message: format!(
                        "{}: {} changed since this load appended it ({} bytes then, {} now): appending it again would add its rows twice. Nothing was loaded. A source whose files grow or are rewritten needs `mode: merge` with `keys` (rows replace themselves); with `append`, deliver new rows in new files",
                        f.store.name,
                        f.store.relative(&now.location),
                        before.size,
                        now.size
                    ),
                });
            }
        }
    }
    Ok(())
}

/// What an extract reads given a load's state for it.
pub fn extract_input(name: &str, e: &ExtractPlan, st: &ExtractState) -> Result<ExtractInput, RunError> {
    let inc = e.incremental.as_ref();
    let (files, unchanged) = match e.files() {
        Some(f) if inc.is_some_and(|i| i.new_files) => {
            let files: Vec<ObjectMeta> = f.files.iter().filter(|m| !st.has(&f.store.name, m)).cloned().collect();
            let unchanged = f.files.len() - files.len();
            (files, unchanged)
        }
        Some(f) => (f.files.clone(), 0),
        None => (Vec::new(), 0),
    };
    let (after, watermark, previous) = match (inc.and_then(|i| i.watermark.as_ref()), &st.watermark) {
        (Some(w), Some(v)) => {
            let previous = parse_watermark(name, w, v)?;
            (Some(lower_bound(name, w, &previous)?), Some(v.clone()), Some(previous))
        }
        _ => (None, None, None),
    };
    let position = match (inc.is_some_and(|i| i.cdc), &st.watermark) {
        (true, Some(v)) => Some(parse_position(name, v)?),
        _ => None,
    };
    let watermark = if position.is_some() { st.watermark.clone() } else { watermark };
    Ok(ExtractInput { files, unchanged, after, watermark, previous, position })
}

/// The type a change data capture position is stored as (with column `_lsn`).
pub const POSITION_TYPE: &str = "pg_lsn";

/// A change data capture position as the commit records store it.
pub fn position_value(lsn: u64) -> WatermarkValue {
    WatermarkValue {
        column: crate::source::postgres::cdc::LSN.into(),
        data_type: POSITION_TYPE.into(),
        value: crate::source::postgres::pgoutput::lsn_text(lsn),
    }
}

fn parse_position(name: &str, v: &WatermarkValue) -> Result<u64, RunError> {
    let bad = |why: String| RunError::Watermark { extract: name.to_string(), message: why };
    if v.data_type != POSITION_TYPE {
        return Err(bad(format!(
            "the loads downstream committed a watermark on `{}`, not a change data capture position: run `weir run --full-refresh` for them",
            v.column
        )));
    }
    crate::source::postgres::pgoutput::parse_lsn(&v.value)
        .ok_or_else(|| bad(format!("the stored position `{}` is not an LSN", v.value)))
}

/// A watermark as text, in full precision.
pub fn watermark_value(column: &str, v: &ScalarValue) -> WatermarkValue {
    WatermarkValue { column: column.to_string(), data_type: v.data_type().to_string(), value: display(v) }
}

/// A value as Arrow displays it (timestamps as ISO 8601 with all their digits).
pub fn display(v: &ScalarValue) -> String {
    v.to_array()
        .ok()
        .and_then(|a| datafusion::arrow::util::display::array_value_to_string(&a, 0).ok())
        .unwrap_or_else(|| v.to_string())
}

/// The stored watermark as a value of the column's current type.
pub fn parse_watermark(name: &str, w: &WatermarkPlan, v: &WatermarkValue) -> Result<ScalarValue, RunError> {
    let bad = |why: String| RunError::Watermark { extract: name.to_string(), message: why };
    let stored: DataType = v
        .data_type
        .parse()
        .map_err(|e| bad(format!("the stored watermark has an unknown type `{}`: {e}", v.data_type)))?;
    let value = ScalarValue::try_from_string(v.value.clone(), &stored)
        .map_err(|e| bad(format!("the stored watermark `{}` is not a {stored}: {}", v.value, e.strip_backtrace())))?;
    if stored == w.data_type {
        return Ok(value);
    }
    // The column's type changed: the value must survive the conversion exactly.
    let converted = value.cast_to(&w.data_type).ok();
    let back = converted.as_ref().and_then(|c| c.cast_to(&stored).ok());
    match (converted, back) {
        (Some(c), Some(b)) if b == value => Ok(c),
        _ => Err(bad(format!(
            "the watermark `{}` was stored as {stored} but `{}` is now {}, which cannot hold it exactly; run `weir run --full-refresh` for the loads it feeds",
            v.value, w.column, w.data_type
        ))),
    }
}

/// Rows are read when `cursor > watermark - lookback`.
fn lower_bound(name: &str, w: &WatermarkPlan, wm: &ScalarValue) -> Result<ScalarValue, RunError> {
    let Some(lb) = w.lookback else { return Ok(wm.clone()) };
    let bad = |why: String| RunError::Watermark { extract: name.to_string(), message: why };
    let out = match (wm, lb) {
        (ScalarValue::TimestampSecond(Some(x), tz), Lookback::Duration(d)) => {
            ScalarValue::TimestampSecond(Some(x.saturating_sub(d.as_secs() as i64)), tz.clone())
        }
        (ScalarValue::TimestampMillisecond(Some(x), tz), Lookback::Duration(d)) => {
            ScalarValue::TimestampMillisecond(Some(x.saturating_sub(d.as_millis() as i64)), tz.clone())
        }
        (ScalarValue::TimestampMicrosecond(Some(x), tz), Lookback::Duration(d)) => {
            ScalarValue::TimestampMicrosecond(Some(x.saturating_sub(d.as_micros() as i64)), tz.clone())
        }
        (ScalarValue::TimestampNanosecond(Some(x), tz), Lookback::Duration(d)) => {
            ScalarValue::TimestampNanosecond(Some(x.saturating_sub(d.as_nanos() as i64)), tz.clone())
        }
        (ScalarValue::Date32(Some(x)), Lookback::Duration(d)) => {
            ScalarValue::Date32(Some(x.saturating_sub((d.as_secs() / 86_400) as i32)))
        }
        (ScalarValue::Date64(Some(x)), Lookback::Duration(d)) => {
            ScalarValue::Date64(Some(x.saturating_sub(d.as_millis() as i64)))
        }
        (_, Lookback::Number(n)) => {
            let step = ScalarValue::Int64(Some(n))
                .cast_to(&w.data_type)
                .map_err(|e| bad(format!("lookback {n} does not fit the cursor's type: {}", e.strip_backtrace())))?;
            wm.sub_checked(&step).map_err(|e| bad(format!("watermark minus lookback: {}", e.strip_backtrace())))?
        }
        _ => return Err(bad(format!("a lookback of {lb:?} does not apply to a {} cursor", w.data_type))),
    };
    Ok(out)
}

/// The newer of two watermarks (both of the column's type).
pub fn max_watermark(a: Option<ScalarValue>, b: Option<ScalarValue>) -> Option<ScalarValue> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.partial_cmp(&a) == Some(std::cmp::Ordering::Greater) { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Shared with the tasks of a pass.
pub type PassRef = Arc<Pass>;

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;

    fn plan(dt: DataType, lookback: Option<Lookback>) -> WatermarkPlan {
        WatermarkPlan { column: "ts".into(), data_type: dt, lookback }
    }

    #[test]
    fn watermarks_round_trip_in_full_precision() {
        for v in [
            ScalarValue::TimestampNanosecond(Some(1_700_000_000_123_456_789), None),
            ScalarValue::TimestampMicrosecond(Some(1_700_000_000_123_456), Some("UTC".into())),
            ScalarValue::Int64(Some(i64::MAX - 1)),
            ScalarValue::Decimal128(Some(12_345_678_901_234), 20, 4),
            ScalarValue::Date32(Some(19_000)),
            ScalarValue::Utf8(Some("2024-01-01 10:00:00.000001".into())),
        ] {
            let stored = watermark_value("ts", &v);
            let back = parse_watermark("e", &plan(v.data_type(), None), &stored).unwrap();
            assert_eq!(back, v, "{stored:?}");
        }
    }

    #[test]
    fn a_finer_timestamp_type_keeps_the_watermark_and_a_coarser_one_is_refused() {
        let us = watermark_value("ts", &ScalarValue::TimestampMicrosecond(Some(1_700_000_000_123_456), None));
        let ns = parse_watermark("e", &plan(DataType::Timestamp(TimeUnit::Nanosecond, None), None), &us).unwrap();
        assert_eq!(ns, ScalarValue::TimestampNanosecond(Some(1_700_000_000_123_456_000), None));
        let ns_v = watermark_value("ts", &ScalarValue::TimestampNanosecond(Some(1_700_000_000_123_456_789), None));
        let e = parse_watermark("e", &plan(DataType::Timestamp(TimeUnit::Microsecond, None), None), &ns_v).unwrap_err();
        assert!(e.to_string().contains("--full-refresh"), "{e}");
    }

    #[test]
    fn lookback_moves_the_bound_back() {
        let v = watermark_value("ts", &ScalarValue::TimestampMicrosecond(Some(10_000_000_000), None));
        let p = plan(
            DataType::Timestamp(TimeUnit::Microsecond, None),
            Some(Lookback::Duration(std::time::Duration::from_secs(3600))),
        );
        assert_eq!(
            lower_bound("e", &p, &parse_watermark("e", &p, &v).unwrap()).unwrap(),
            ScalarValue::TimestampMicrosecond(Some(10_000_000_000 - 3_600_000_000), None)
        );
        let v = watermark_value("id", &ScalarValue::Int64(Some(500)));
        let p = plan(DataType::Int64, Some(Lookback::Number(100)));
        assert_eq!(
            lower_bound("e", &p, &parse_watermark("e", &p, &v).unwrap()).unwrap(),
            ScalarValue::Int64(Some(400))
        );
        let v = watermark_value("d", &ScalarValue::Date32(Some(100)));
        let p = plan(DataType::Date32, Some(Lookback::Duration(std::time::Duration::from_secs(2 * 86_400))));
        assert_eq!(
            lower_bound("e", &p, &parse_watermark("e", &p, &v).unwrap()).unwrap(),
            ScalarValue::Date32(Some(98))
        );
    }
}
