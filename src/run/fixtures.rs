//! `weir test`: a pipeline's tests, run in-process on fixture rows. Given tasks are tables of
//! their rows, the others' queries run over them, in run order; nothing is read from or
//! written to a store.
//!
//! Work in progress (branch `wip/weir-test`): loads after `merge` and `replace_partitions`,
//! and checks with quarantine, are not evaluated yet.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use petgraph::graph::NodeIndex;

use crate::compile::{Plan, TaskKind};
use crate::spec::{Fixture, LoadMode, TestCase};

/// What one test found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestOutcome {
    pub name: String,
    /// Empty: passed.
    pub failures: Vec<String>,
    pub ms: u64,
}

/// Run `test` of `plan`; fixture files are relative to `base`.
pub async fn run_test(plan: &Plan, test: &TestCase, base: &Path) -> TestOutcome {
    let clock = std::time::Instant::now();
    let failures = match run(plan, test, base).await {
        Ok(f) => f,
        Err(e) => vec![e],
    };
    TestOutcome { name: test.name.clone(), failures, ms: clock.elapsed().as_millis() as u64 }
}

async fn run(plan: &Plan, test: &TestCase, base: &Path) -> Result<Vec<String>, String> {
    let names: Vec<&str> = plan.tasks().map(|t| t.name.as_str()).collect();
    let index = |name: &str| -> Result<NodeIndex, String> {
        plan.index_of(name).ok_or_else(|| {
            let hint =
                crate::diag::did_you_mean(name, names.iter().copied()).map(|h| format!(" ({h})")).unwrap_or_default();
            format!("no task `{name}` in pipeline `{}`{hint}", plan.pipeline)
        })
    };
    // The tasks to compute: those expected and everything they read.
    let mut needed = std::collections::HashSet::new();
    for name in test.expect.keys() {
        let i = index(name)?;
        needed.insert(i);
        needed.extend(plan.ancestors(i));
    }
    for name in test.given.keys() {
        index(name)?;
    }
    let ctx = SessionContext::new_with_state(crate::compile::session_state(
        crate::compile::session_config(),
        Default::default(),
    ));
    let mut outputs: HashMap<NodeIndex, Vec<RecordBatch>> = HashMap::new();
    let mut failures = Vec::new();
    for &i in &plan.order {
        if !needed.contains(&i) {
            continue;
        }
        let node = plan.task(i);
        let given = test.given.get(&node.name);
        let batches = match (&node.kind, given) {
            (TaskKind::Load(l), _) => {
                let before = match given {
                    Some(f) => fixture(f, &node.schema, base).map_err(|e| format!("given `{}`: {e}", node.name))?,
                    None => Vec::new(),
                };
                let input = plan.index_of(&l.from).and_then(|j| outputs.get(&j)).cloned().unwrap_or_default();
                match l.mode {
                    LoadMode::Overwrite => input,
                    LoadMode::Append => before.into_iter().chain(input).collect(),
                    other => {
                        return Err(format!(
                            "load `{}`: `mode: {}` is not evaluated by `weir test` yet",
                            node.name,
                            crate::sink::mode_name(other)
                        ));
                    }
                }
            }
            (_, Some(f)) => fixture(f, &node.schema, base).map_err(|e| format!("given `{}`: {e}", node.name))?,
            (TaskKind::Extract(_), None) => Vec::new(),
            (TaskKind::Transform(t), None) => {
                let df = ctx.sql_with_options(&t.sql, crate::compile::sql::query_only()).await.map_err(|e| {
                    format!("`{}`: {}", node.name, crate::compile::clean_df_message(&e.strip_backtrace()))
                })?;
                df.collect().await.map_err(|e| {
                    format!("`{}`: {}", node.name, crate::compile::clean_df_message(&e.strip_backtrace()))
                })?
            }
        };
        if !matches!(node.kind, TaskKind::Load(_)) {
            let schema = match (given, batches.first()) {
                (Some(_), _) => nullable(&node.schema),
                (None, Some(b)) => b.schema(),
                (None, None) => node.schema.clone(),
            };
            let table = MemTable::try_new(schema, vec![batches.clone()]).map_err(|e| e.to_string())?;
            ctx.register_table(node.name.as_str(), Arc::new(table)).map_err(|e| e.to_string())?;
        }
        if let Some(expected) = test.expect.get(&node.name) {
            failures.extend(compare(&node.name, &node.schema, &batches, expected, base));
        }
        outputs.insert(i, batches);
    }
    Ok(failures)
}

/// `schema` with every column nullable: fixtures name only the columns they need.
fn nullable(schema: &SchemaRef) -> SchemaRef {
    Arc::new(datafusion::arrow::datatypes::Schema::new(
        schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
    ))
}

/// The rows of fixture `f`, typed by `schema` (every column nullable).
fn fixture(f: &Fixture, schema: &SchemaRef, base: &Path) -> Result<Vec<RecordBatch>, String> {
    let schema = &nullable(schema);
    match f {
        Fixture::Rows(rows) => {
            let mut text = Vec::new();
            for (k, row) in rows.iter().enumerate() {
                for column in row.keys() {
                    if schema.index_of(column).is_err() {
                        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                        let hint = crate::diag::did_you_mean(column, names.iter().copied())
                            .unwrap_or_else(|| format!("its columns: {}", names.join(", ")));
                        return Err(format!("row {}: no column `{column}` ({hint})", k + 1));
                    }
                }
                serde_json::to_writer(&mut text, row).map_err(|e| e.to_string())?;
                text.push(b'\n');
            }
            let reader = datafusion::arrow::json::ReaderBuilder::new(schema.clone())
                .build(std::io::Cursor::new(text))
                .map_err(|e| e.to_string())?;
            reader.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
        }
        Fixture::File(file) => {
            let (kind, path) = match (&file.csv, &file.json, &file.parquet) {
                (Some(p), None, None) => ("csv", p),
                (None, Some(p), None) => ("json", p),
                (None, None, Some(p)) => ("parquet", p),
                _ => return Err("a fixture file is one of `csv`, `json` or `parquet`".into()),
            };
            let path = base.join(path);
            let open = || std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()));
            match kind {
                "csv" => datafusion::arrow::csv::ReaderBuilder::new(schema.clone())
                    .with_header(true)
                    .build(open()?)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{}: {e}", path.display())),
                "json" => datafusion::arrow::json::ReaderBuilder::new(schema.clone())
                    .build(std::io::BufReader::new(open()?))
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{}: {e}", path.display())),
                _ => {
                    let reader =
                        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(open()?)
                            .and_then(|b| b.build())
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                    let mut out = Vec::new();
                    for b in reader {
                        let b = b.map_err(|e| format!("{}: {e}", path.display()))?;
                        let cols = schema
                            .fields()
                            .iter()
                            .map(|f| match b.column_by_name(f.name()) {
                                Some(c) => {
                                    datafusion::arrow::compute::cast(c, f.data_type()).map_err(|e| e.to_string())
                                }
                                None => Ok(datafusion::arrow::array::new_null_array(f.data_type(), b.num_rows())),
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        out.push(RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())?);
                    }
                    Ok(out)
                }
            }
        }
    }
}

/// Rows as text, one string per row, on `columns`.
fn rendered(batches: &[RecordBatch], columns: &[String]) -> Result<Vec<String>, String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let mut formatters = Vec::new();
        for c in columns {
            let array = b.column_by_name(c).ok_or_else(|| format!("no column `{c}`"))?;
            formatters.push(ArrayFormatter::try_new(array.as_ref(), &options).map_err(|e| e.to_string())?);
        }
        for r in 0..b.num_rows() {
            let cells: Vec<String> =
                columns.iter().zip(&formatters).map(|(c, f)| format!("{c}: {}", f.value(r))).collect();
            rows.push(format!("{{ {} }}", cells.join(", ")));
        }
    }
    Ok(rows)
}

/// The differences between the rows of task `name` and the rows expected, ignoring order, on
/// the columns the expected rows name.
fn compare(name: &str, schema: &SchemaRef, actual: &[RecordBatch], expected: &Fixture, base: &Path) -> Vec<String> {
    let columns: Vec<String> = match expected {
        Fixture::Rows(rows) => {
            let mut c: Vec<String> = Vec::new();
            for f in schema.fields() {
                if rows.iter().any(|r| r.contains_key(f.name())) {
                    c.push(f.name().clone());
                }
            }
            c
        }
        Fixture::File(_) => schema.fields().iter().map(|f| f.name().clone()).collect(),
    };
    let want = match fixture(expected, schema, base).and_then(|b| rendered(&b, &columns)) {
        Ok(w) => w,
        Err(e) => return vec![format!("expect `{name}`: {e}")],
    };
    let got = match rendered(actual, &columns) {
        Ok(g) => g,
        Err(e) => return vec![format!("`{name}`: {e}")],
    };
    let mut missing = want.clone();
    let mut extra = Vec::new();
    for row in got {
        match missing.iter().position(|w| *w == row) {
            Some(k) => {
                missing.swap_remove(k);
            }
            None => extra.push(row),
        }
    }
    if missing.is_empty() && extra.is_empty() {
        return Vec::new();
    }
    missing.sort();
    extra.sort();
    let mut m = format!("`{name}`: the rows differ ({} expected)", want.len());
    for r in &missing {
        m.push_str(&format!("\n  - {r}"));
    }
    for r in &extra {
        m.push_str(&format!("\n  + {r}"));
    }
    vec![m]
}
