//! `weir test`: a pipeline's tests, run in-process on fixture rows. Given tasks are tables of
//! their rows, the others' queries run over them, in run order; nothing is read from or
//! written to a store.
//! Checks run on each computed table (a quarantine sets rows aside in memory); a load's output
//! is what weir's own Parquet sink leaves in an in-memory store (see `docs/design/tests.md`).

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
    // A test of checks alone computes every table.
    if test.expect.is_empty() {
        needed.extend(plan.graph.node_indices().filter(|&i| !matches!(plan.task(i).kind, TaskKind::Load(_))));
    }
    let ctx = SessionContext::new_with_state(crate::compile::session_state(
        crate::compile::session_config(),
        Default::default(),
    ));
    let mut outputs: HashMap<NodeIndex, Vec<RecordBatch>> = HashMap::new();
    let mut failures = Vec::new();
    let mut tripped: Vec<(String, super::checks::CheckResult)> = Vec::new();
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
                load_output(&ctx, &plan.pipeline, &node.name, l, &node.schema, before)
                    .await
                    .map_err(|e| format!("load `{}`: {e}", node.name))?
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
        if !node.checks.is_empty() && !matches!(node.kind, TaskKind::Load(_)) {
            let env = super::checks::CheckEnv {
                pipeline: &plan.pipeline,
                run_id: "test",
                logical_time: chrono::Utc::now(),
                staging_dir: Path::new("."),
                set_aside: false,
            };
            let cancel = tokio_util::sync::CancellationToken::new();
            let checked = super::checks::evaluate(&ctx, node, &env, None, &cancel)
                .await
                .map_err(|e| format!("checks of `{}`: {e}", node.name))?;
            tripped.extend(
                checked
                    .results
                    .into_iter()
                    .filter(|r| r.status != super::checks::CheckStatus::Passed)
                    .map(|r| (node.name.clone(), r)),
            );
        }
        // What consumers read: the rows that passed a quarantine.
        let batches = match (&node.kind, node.quarantine.as_ref().is_some_and(|q| q.checks)) {
            (TaskKind::Load(_), _) | (_, false) => batches,
            (_, true) => ctx
                .table(node.name.as_str())
                .await
                .map_err(|e| e.to_string())?
                .collect()
                .await
                .map_err(|e| e.to_string())?,
        };
        if let Some(expected) = test.expect.get(&node.name) {
            failures.extend(compare(&node.name, &node.schema, &batches, expected, base));
        }
        outputs.insert(i, batches);
    }
    failures.extend(judge_checks(test, &tripped));
    Ok(failures)
}

/// Checks that tripped and were not expected to, and checks expected to trip that did not.
fn judge_checks(test: &TestCase, tripped: &[(String, super::checks::CheckResult)]) -> Vec<String> {
    let expected: &[String] = test.expect_checks.as_ref().map(|e| e.failed.as_slice()).unwrap_or(&[]);
    let matches = |want: &str, task: &str, r: &super::checks::CheckResult| {
        let (t, c) = want.split_once('.').map_or((None, want), |(t, c)| (Some(t), c));
        t.is_none_or(|t| t == task) && (c == r.name || c == r.kind)
    };
    let mut out = Vec::new();
    for (task, r) in tripped {
        if !expected.iter().any(|w| matches(w, task, r)) {
            let mut m = format!("check `{task}.{}` {}: {}", r.name, r.status.as_str(), r.message);
            for s in r.samples.iter().take(super::checks::SAMPLES) {
                let cells: Vec<String> = s.0.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                m.push_str(&format!("\n  {{ {} }}", cells.join(", ")));
            }
            out.push(m);
        }
    }
    for w in expected {
        if !tripped.iter().any(|(task, r)| matches(w, task, r)) {
            out.push(format!("check `{w}` was expected to fail, and did not"));
        }
    }
    out
}

static OUTPUTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What load `l` (task `task`, writing `schema`) leaves in its output when it held `before`:
/// the real Parquet sink writes to an in-memory store (a database table's load too: its
/// modes' rules are the same), first `before` (an overwrite), then the load's input in its
/// mode; the output is read back as a reader sees it.
async fn load_output(
    ctx: &SessionContext,
    pipeline: &str,
    task: &str,
    l: &crate::compile::LoadPlan,
    schema: &SchemaRef,
    before: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>, String> {
    let n = OUTPUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let url = format!("memory://weir-test-{}-{n}/out", std::process::id());
    let store = Arc::new(crate::storage::Store::new("test", &url, &[], Path::new(".")).map_err(|e| e.to_string())?);
    ctx.register_object_store(store.object_store_url.as_ref(), store.object_store.clone());
    // The sink's local scratch space (merges may spill there), removed after.
    let scratch = std::env::temp_dir().join(format!("weir-test-{}-{n}", std::process::id()));
    let result: Result<Vec<RecordBatch>, String> = async {
        use crate::compile::{FilesTarget, LoadPlan, LoadTarget};
        let target = |mode: LoadMode| LoadPlan {
            from: l.from.clone(),
            mode,
            partition_by: l.partition_by.clone(),
            keys: l.keys.clone(),
            order_by: l.order_by.clone(),
            delete_when: l.delete_when.clone(),
            target: LoadTarget::Files(FilesTarget {
                store: store.clone(),
                path: "data".into(),
                format: crate::spec::OutputFormat::Parquet,
                compression: crate::spec::OutputCompression::Zstd,
                compression_level: crate::compile::DEFAULT_ZSTD_LEVEL,
                row_group_rows: crate::compile::DEFAULT_ROW_GROUP_ROWS,
                max_rows_per_file: crate::compile::DEFAULT_MAX_ROWS_PER_FILE,
            }),
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let write = |load: LoadPlan, df: datafusion::dataframe::DataFrame| {
            let scratch = scratch.join("load");
            let cancel = cancel.clone();
            async move {
                let df = crate::sink::storable(df, crate::spec::OutputFormat::Parquet).map_err(|e| e.to_string())?;
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let request = crate::sink::LoadRequest {
                    load: &load,
                    pipeline,
                    task,
                    run_id: "test",
                    full_refresh: false,
                    consumed: Default::default(),
                    scratch,
                    base_seq: None,
                };
                match crate::sink::load(&ctx.state(), df.logical_plan().clone(), schema, request, &cancel).await {
                    Ok(_) => Ok(()),
                    Err(crate::sink::LoadError::Failed(e)) => Err(e.to_string()),
                    Err(crate::sink::LoadError::Cancelled) => Err("cancelled".to_string()),
                }
            }
        };
        if !before.is_empty() {
            let table = MemTable::try_new(nullable(schema), vec![before]).map_err(|e| e.to_string())?;
            let df = ctx.read_table(Arc::new(table)).map_err(|e| e.to_string())?;
            write(target(LoadMode::Overwrite), df).await?;
        }
        let input = ctx.table(l.from.as_str()).await.map_err(|e| e.to_string())?;
        write(target(l.mode), input).await?;
        match crate::sink::read_parquet_output(ctx, &store, "data", schema, &l.partition_by).await {
            Ok(Some(df)) => df.collect().await.map_err(|e| e.to_string()),
            Ok(None) => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
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
                "csv" => {
                    // The header names the columns the file has, in its order.
                    let mut header = String::new();
                    std::io::BufRead::read_line(&mut std::io::BufReader::new(open()?), &mut header)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    let mut fields = Vec::new();
                    for name in header.trim_end_matches(['\r', '\n']).split(',') {
                        let name = name.trim().trim_matches('"');
                        let f = schema
                            .field_with_name(name)
                            .map_err(|_| format!("{}: no column `{name}` in the task", path.display()))?;
                        fields.push(f.clone());
                    }
                    let file_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
                    let batches = datafusion::arrow::csv::ReaderBuilder::new(file_schema)
                        .with_header(true)
                        .build(open()?)
                        .map_err(|e| format!("{}: {e}", path.display()))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    batches.iter().map(|b| conform(b, schema)).collect()
                }
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
                        out.push(conform(&b, schema).map_err(|e| format!("{}: {e}", path.display()))?);
                    }
                    Ok(out)
                }
            }
        }
    }
}

/// `b`'s rows in the columns of `schema`: by name, cast to the column's type; a column `b`
/// lacks is NULL.
fn conform(b: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let cols = schema
        .fields()
        .iter()
        .map(|f| match b.column_by_name(f.name()) {
            Some(c) => datafusion::arrow::compute::cast(c, f.data_type()).map_err(|e| e.to_string()),
            None => Ok(datafusion::arrow::array::new_null_array(f.data_type(), b.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())
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
