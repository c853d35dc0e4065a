//! The events' JSON, built from the plan (jobs, datasets, schemas, column lineage) and the
//! run's reports (statistics, checks, errors). Facets are those of the OpenLineage spec
//! 2-0-2, each with the `_schemaURL` of the version written here.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use petgraph::graph::NodeIndex;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::compile::lineage::{Dep, How};
use crate::compile::{LoadTarget, Plan, TaskKind, TaskNode};
use crate::run::{CheckStatus, TaskReport};
use crate::source::SourcePlan;
use crate::source::database::{DbKind, Relation};
use crate::storage::{Backend, Store};

/// Who wrote the events: weir and its version.
pub const PRODUCER: &str = concat!("urn:weir:", env!("CARGO_PKG_VERSION"));

const RUN_EVENT: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const SCHEMA: &str = "https://openlineage.io/spec/facets/1-1-1/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
const COLUMN_LINEAGE: &str =
    "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet";
const OUTPUT_STATISTICS: &str = "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet";
const INPUT_STATISTICS: &str = "https://openlineage.io/spec/facets/1-0-0/InputStatisticsInputDatasetFacet.json#/$defs/InputStatisticsInputDatasetFacet";
const ASSERTIONS: &str = "https://openlineage.io/spec/facets/1-0-1/DataQualityAssertionsDatasetFacet.json#/$defs/DataQualityAssertionsDatasetFacet";
const PARENT: &str = "https://openlineage.io/spec/facets/1-1-0/ParentRunFacet.json#/$defs/ParentRunFacet";
const ERROR_MESSAGE: &str =
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
const JOB_TYPE: &str = "https://openlineage.io/spec/facets/2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
const SQL: &str = "https://openlineage.io/spec/facets/1-1-0/SQLJobFacet.json#/$defs/SQLJobFacet";
const DOCUMENTATION: &str =
    "https://openlineage.io/spec/facets/1-1-0/DocumentationJobFacet.json#/$defs/DocumentationJobFacet";
const ENGINE: &str =
    "https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet";
const NOMINAL_TIME: &str =
    "https://openlineage.io/spec/facets/1-0-1/NominalTimeRunFacet.json#/$defs/NominalTimeRunFacet";
const TAGS: &str = "https://openlineage.io/spec/facets/1-0-0/TagsRunFacet.json#/$defs/TagsRunFacet";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Start,
    Complete,
    Fail,
    Abort,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Start => "START",
            Kind::Complete => "COMPLETE",
            Kind::Fail => "FAIL",
            Kind::Abort => "ABORT",
        }
    }
}

/// A dataset's identity: (namespace, name).
pub(super) type DatasetId = (String, String);
/// Input fields: a dataset, a field of it, and how (each `How` once).
type Fields = Vec<(DatasetId, String, Vec<How>)>;
/// Per output column, its input fields.
type ColumnFields = Vec<(String, Fields)>;

pub(super) struct Events<'a> {
    pub plan: &'a Plan,
    /// Of the jobs, and of the tables between tasks.
    pub namespace: &'a str,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A facet: its fields with `_producer` and `_schemaURL`.
fn facet(schema_url: &str, body: Value) -> Value {
    let mut v = json!({ "_producer": PRODUCER, "_schemaURL": schema_url });
    if let (Value::Object(m), Value::Object(b)) = (&mut v, body) {
        m.extend(b);
    }
    v
}

impl Events<'_> {
    /// The pipeline run's event.
    pub(super) fn run_event(
        &self,
        kind: Kind,
        at: DateTime<Utc>,
        run: Uuid,
        weir_run_id: &str,
        nominal: Option<DateTime<Utc>>,
        error: Option<&str>,
    ) -> Value {
        let mut run_facets = self.run_facets(weir_run_id, kind, error);
        if let Some(t) = nominal {
            run_facets.insert("nominalTime".into(), facet(NOMINAL_TIME, json!({ "nominalStartTime": time(t) })));
        }
        let mut job_facets = serde_json::Map::new();
        job_facets.insert(
            "jobType".into(),
            facet(JOB_TYPE, json!({ "processingType": "BATCH", "integration": "WEIR", "jobType": "DAG" })),
        );
        if let Some(d) = &self.plan.description {
            job_facets.insert("documentation".into(), facet(DOCUMENTATION, json!({ "description": d })));
        }
        json!({
            "eventType": kind.name(),
            "eventTime": time(at),
            "producer": PRODUCER,
            "schemaURL": RUN_EVENT,
            "run": { "runId": run.to_string(), "facets": run_facets },
            "job": { "namespace": self.namespace, "name": self.plan.pipeline, "facets": job_facets },
            "inputs": [],
            "outputs": [],
        })
    }

    /// A task's event; `report` on its end (statistics, checks, error). `None` for a task the
    /// plan does not have.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn task_event(
        &self,
        task: &str,
        kind: Kind,
        at: DateTime<Utc>,
        id: Uuid,
        parent: Uuid,
        weir_run_id: &str,
        report: Option<&TaskReport>,
    ) -> Option<Value> {
        let i = self.plan.index_of(task)?;
        let node = self.plan.task(i);
        let mut run_facets = self.run_facets(weir_run_id, kind, report.and_then(|r| r.error.as_deref()));
        let pipeline_job = json!({ "namespace": self.namespace, "name": self.plan.pipeline });
        let parent_run = json!({ "runId": parent.to_string() });
        run_facets.insert(
            "parent".into(),
            facet(
                PARENT,
                json!({ "run": parent_run, "job": pipeline_job, "root": { "run": parent_run, "job": pipeline_job } }),
            ),
        );
        let mut job_facets = serde_json::Map::new();
        job_facets.insert(
            "jobType".into(),
            facet(JOB_TYPE, json!({ "processingType": "BATCH", "integration": "WEIR", "jobType": "TASK" })),
        );
        if let Some((query, dialect)) = self.query(node) {
            job_facets.insert(
                "sql".into(),
                facet(SQL, json!({ "query": self.plan.secrets.redact(query), "dialect": dialect })),
            );
        }
        if let Some(d) = &node.description {
            job_facets.insert("documentation".into(), facet(DOCUMENTATION, json!({ "description": d })));
        }
        let (inputs, outputs) = self.datasets(i, report);
        Some(json!({
            "eventType": kind.name(),
            "eventTime": time(at),
            "producer": PRODUCER,
            "schemaURL": RUN_EVENT,
            "run": { "runId": id.to_string(), "facets": run_facets },
            "job": {
                "namespace": self.namespace,
                "name": format!("{}.{}", self.plan.pipeline, node.name),
                "facets": job_facets,
            },
            "inputs": inputs,
            "outputs": outputs,
        }))
    }

    fn run_facets(&self, weir_run_id: &str, kind: Kind, error: Option<&str>) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        let version = env!("CARGO_PKG_VERSION");
        m.insert(
            "processing_engine".into(),
            facet(ENGINE, json!({ "version": version, "name": "weir", "openlineageAdapterVersion": version })),
        );
        m.insert(
            "tags".into(),
            facet(TAGS, json!({ "tags": [ { "key": "weir.run_id", "value": weir_run_id, "source": "WEIR" } ] })),
        );
        if kind == Kind::Fail
            && let Some(e) = error
        {
            m.insert(
                "errorMessage".into(),
                facet(ERROR_MESSAGE, json!({ "message": e, "programmingLanguage": "rust" })),
            );
        }
        m
    }

    /// The SQL a task runs, and its dialect: a transform's query, a database query extract's.
    fn query<'n>(&self, node: &'n TaskNode) -> Option<(&'n str, &'static str)> {
        match &node.kind {
            TaskKind::Transform(t) => Some((t.sql.as_str(), "datafusion")),
            TaskKind::Extract(e) => match &e.source {
                SourcePlan::Database(d) => match d.relation() {
                    Relation::Query(q) => Some((q.as_str(), d.kind().id())),
                    Relation::Table(_) => None,
                },
                _ => None,
            },
            TaskKind::Load(_) => None,
        }
    }

    /// The table a task hands to the tasks after it.
    fn table(&self, task: &str) -> DatasetId {
        (self.namespace.to_string(), format!("{}.{}", self.plan.pipeline, task))
    }

    /// A task's input and output datasets, with facets: schemas and column lineage always,
    /// statistics and check results once it has ended.
    fn datasets(&self, i: NodeIndex, report: Option<&TaskReport>) -> (Vec<Value>, Vec<Value>) {
        let node = self.plan.task(i);
        match &node.kind {
            TaskKind::Extract(e) => {
                let source = source_dataset(&e.source);
                let mut inputs = Vec::new();
                if let Some(id) = &source {
                    let mut facets = serde_json::Map::new();
                    let fields: Vec<Value> = node
                        .lineage
                        .fields
                        .iter()
                        .zip(node.schema.fields().iter())
                        .filter(|(f, _)| !f.is_empty())
                        .map(|(f, c)| json!({ "name": f, "type": c.data_type().to_string() }))
                        .collect();
                    if !fields.is_empty() {
                        facets.insert("schema".into(), facet(SCHEMA, json!({ "fields": fields })));
                    }
                    let mut input_facets = serde_json::Map::new();
                    if let Some(r) = report {
                        let mut stats = serde_json::Map::new();
                        put(&mut stats, "rowCount", r.rows_in);
                        put(&mut stats, "size", r.bytes_read);
                        put(&mut stats, "fileCount", r.files);
                        if !stats.is_empty() {
                            input_facets
                                .insert("inputStatistics".into(), facet(INPUT_STATISTICS, Value::Object(stats)));
                        }
                    }
                    inputs.push(dataset(id, facets, Some(("inputFacets", input_facets))));
                }
                // Each column is read from a field of the source.
                let lineage: ColumnFields = match &source {
                    Some(id) => node
                        .schema
                        .fields()
                        .iter()
                        .zip(&node.lineage.fields)
                        .filter(|(_, f)| !f.is_empty())
                        .map(|(c, f)| (c.name().clone(), vec![(id.clone(), f.clone(), vec![How::Copy])]))
                        .collect(),
                    None => Vec::new(),
                };
                let output = self.output(node, self.table(&node.name), lineage, Vec::new(), report, false);
                (inputs, vec![output])
            }
            TaskKind::Transform(t) => {
                let inputs = t.inputs.iter().map(|n| self.input_table(n)).collect();
                let (columns, rows) = self.lineage_of(node);
                (inputs, vec![self.output(node, self.table(&node.name), columns, rows, report, false)])
            }
            TaskKind::Load(l) => {
                let target = match &l.target {
                    LoadTarget::Files(f) => store_dataset(&f.store, &f.path, false),
                    LoadTarget::Table(t) => table_dataset(t.store.kind(), t.store.display_url(), &t.table),
                };
                let (columns, rows) = self.lineage_of(node);
                (vec![self.input_table(&l.from)], vec![self.output(node, target, columns, rows, report, true)])
            }
        }
    }

    /// The table of task `name` as an input, with its schema.
    fn input_table(&self, name: &str) -> Value {
        let mut facets = serde_json::Map::new();
        if let Some(i) = self.plan.index_of(name) {
            facets.insert("schema".into(), schema_facet(self.plan.task(i)));
        }
        dataset(&self.table(name), facets, None)
    }

    /// Per column, the columns of input tables it depends on; and the columns that decide the
    /// rows — from the task's lineage, as compile found it.
    fn lineage_of(&self, node: &TaskNode) -> (ColumnFields, Fields) {
        let columns = node
            .schema
            .fields()
            .iter()
            .zip(&node.lineage.columns)
            .map(|(c, deps)| (c.name().clone(), self.group(deps)))
            .collect();
        (columns, self.group(&node.lineage.rows))
    }

    /// Dependencies grouped by the column they are on.
    fn group(&self, deps: &[Dep]) -> Fields {
        let mut by: BTreeMap<(String, String), Vec<How>> = BTreeMap::new();
        for d in deps {
            let hows = by.entry((d.task.clone(), d.column.clone())).or_default();
            if !hows.contains(&d.how) {
                hows.push(d.how);
            }
        }
        by.into_iter().map(|((task, column), hows)| (self.table(&task), column, hows)).collect()
    }

    /// A task's output dataset.
    fn output(
        &self,
        node: &TaskNode,
        id: DatasetId,
        columns: ColumnFields,
        rows: Fields,
        report: Option<&TaskReport>,
        load: bool,
    ) -> Value {
        let mut facets = serde_json::Map::new();
        facets.insert("schema".into(), schema_facet(node));
        let fields: serde_json::Map<String, Value> = columns
            .into_iter()
            .filter(|(_, deps)| !deps.is_empty())
            .map(|(c, deps)| (c, json!({ "inputFields": input_fields(deps) })))
            .collect();
        if !fields.is_empty() || !rows.is_empty() {
            let mut body = json!({ "fields": fields });
            if !rows.is_empty() {
                body["dataset"] = Value::Array(input_fields(rows));
            }
            facets.insert("columnLineage".into(), facet(COLUMN_LINEAGE, body));
        }
        if let Some(r) = report.filter(|r| !r.checks.is_empty()) {
            let assertions: Vec<Value> = r
                .checks
                .iter()
                .map(|c| {
                    let mut a = json!({ "assertion": c.name, "success": c.status == CheckStatus::Passed });
                    if let Some(col) = checked_column(node, &c.name) {
                        a["column"] = Value::String(col);
                    }
                    a
                })
                .collect();
            facets.insert("dataQualityAssertions".into(), facet(ASSERTIONS, json!({ "assertions": assertions })));
        }
        let mut output_facets = serde_json::Map::new();
        if let Some(r) = report {
            let mut stats = serde_json::Map::new();
            put(&mut stats, "rowCount", r.rows_out);
            if load {
                put(&mut stats, "size", r.bytes_written);
                put(&mut stats, "fileCount", r.files);
            }
            if !stats.is_empty() {
                output_facets.insert("outputStatistics".into(), facet(OUTPUT_STATISTICS, Value::Object(stats)));
            }
        }
        dataset(&id, facets, Some(("outputFacets", output_facets)))
    }
}

fn put(m: &mut serde_json::Map<String, Value>, key: &str, v: Option<u64>) {
    if let Some(v) = v {
        m.insert(key.into(), json!(v));
    }
}

fn dataset(
    id: &DatasetId,
    facets: serde_json::Map<String, Value>,
    io: Option<(&str, serde_json::Map<String, Value>)>,
) -> Value {
    let mut v = json!({ "namespace": id.0, "name": id.1, "facets": facets });
    if let Some((key, m)) = io {
        v[key] = Value::Object(m);
    }
    v
}

fn schema_facet(node: &TaskNode) -> Value {
    let fields: Vec<Value> =
        node.schema.fields().iter().map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() })).collect();
    facet(SCHEMA, json!({ "fields": fields }))
}

/// OpenLineage's name for how a value depends on another: DIRECT (where values come from) or
/// INDIRECT (which rows there are), and the subtype.
fn transformation(h: How) -> Value {
    let (t, subtype) = match h {
        How::Copy => ("DIRECT", "IDENTITY"),
        How::Transform => ("DIRECT", "TRANSFORMATION"),
        How::Aggregate => ("DIRECT", "AGGREGATION"),
        How::Filter => ("INDIRECT", "FILTER"),
        How::Join => ("INDIRECT", "JOIN"),
        How::GroupBy => ("INDIRECT", "GROUP_BY"),
        How::Window => ("INDIRECT", "WINDOW"),
        How::Sort => ("INDIRECT", "SORT"),
    };
    json!({ "type": t, "subtype": subtype })
}

fn input_fields(deps: Fields) -> Vec<Value> {
    deps.into_iter()
        .map(|((ns, name), field, hows)| {
            json!({
                "namespace": ns,
                "name": name,
                "field": field,
                "transformations": hows.into_iter().map(transformation).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// The one column of its own task a check reads, if it reads one.
fn checked_column(node: &TaskNode, check: &str) -> Option<String> {
    let reads = &node.lineage.checks.iter().find(|c| c.name == check)?.reads;
    match reads.as_slice() {
        [(task, column)] if *task == node.name => Some(column.clone()),
        _ => None,
    }
}

/// Where an extract reads, as OpenLineage names datasets; `None` for a database query (weir
/// does not parse the database's SQL: the query is in the job's `sql` facet).
pub(super) fn source_dataset(source: &SourcePlan) -> Option<DatasetId> {
    match source {
        SourcePlan::Files(f) => Some(store_dataset(&f.store, &f.glob.pattern, true)),
        SourcePlan::Database(d) => match d.relation() {
            Relation::Table(t) => Some(table_dataset(d.kind(), d.store().1, t)),
            Relation::Query(_) => None,
        },
        SourcePlan::Http(h) => Some(h.origin_and_path()),
    }
}

/// A path under a store: namespace `file` (local), `s3://bucket`, `gs://bucket`,
/// `abfss://container@account.dfs.core.windows.net`, …; the name is the path from the
/// bucket's root (absolute for local files). For a glob, the directory before its first
/// wildcard: the files a load wrote and those an extract reads then have one name.
pub(super) fn store_dataset(store: &Store, path: &str, glob: bool) -> DatasetId {
    let path = if glob { literal_prefix(path) } else { path.trim_matches('/').to_string() };
    let root = store.root.as_ref();
    let joined = match (root.is_empty(), path.is_empty()) {
        (true, _) => path,
        (false, true) => root.to_string(),
        (false, false) => format!("{root}/{path}"),
    };
    match &store.backend {
        Backend::Local(_) => ("file".to_string(), format!("/{}", joined.trim_start_matches('/'))),
        Backend::Memory => (format!("memory://{}", store.name), joined),
        _ => (store.object_store_url.as_str().trim_end_matches('/').to_string(), joined),
    }
}

/// The directories of a glob before its first wildcard (`orders/2026/*.csv` → `orders/2026`);
/// the whole path when it has none.
fn literal_prefix(pattern: &str) -> String {
    let parts: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let wild = |p: &str| p.contains(['*', '?', '[', '{']);
    match parts.iter().position(|p| wild(p)) {
        Some(k) => parts[..k].join("/"),
        None => parts.join("/"),
    }
}

/// A database table: namespace `postgres://host:port` or `mysql://host:port`, name
/// `database.schema.table` (PostgreSQL; `public` when unqualified) or `database.table` (MySQL).
pub(super) fn table_dataset(kind: DbKind, display_url: &str, table: &str) -> DatasetId {
    let (scheme, default_port) = match kind {
        DbKind::Postgres => ("postgres", 5432),
        DbKind::Mysql => ("mysql", 3306),
    };
    let url = url::Url::parse(display_url).ok();
    let host = url.as_ref().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_else(|| "localhost".into());
    let port = url.as_ref().and_then(|u| u.port()).unwrap_or(default_port);
    let database = url.as_ref().map(|u| u.path().trim_matches('/').to_string()).unwrap_or_default();
    let parts: Vec<String> =
        table.split('.').map(|p| p.trim().trim_matches(|c| c == '"' || c == '`').to_string()).collect();
    let name = match (kind, parts.len()) {
        (DbKind::Postgres, 1) => format!("{database}.public.{}", parts[0]),
        (DbKind::Postgres, 2) => format!("{database}.{}.{}", parts[0], parts[1]),
        (DbKind::Mysql, 1) => format!("{database}.{}", parts[0]),
        _ => parts.join("."),
    };
    (format!("{scheme}://{host}:{port}"), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glob_is_named_by_its_directory() {
        assert_eq!(literal_prefix("orders/*.csv"), "orders");
        assert_eq!(literal_prefix("marts/daily/**/*.parquet"), "marts/daily");
        assert_eq!(literal_prefix("data.csv"), "data.csv");
        assert_eq!(literal_prefix("*.json"), "");
        assert_eq!(literal_prefix("/a/b{1,2}/c"), "a");
    }

    #[test]
    fn tables_are_named_as_openlineage_names_them() {
        let pg = |t| table_dataset(DbKind::Postgres, "postgres://weir@127.0.0.1:5433/shop", t);
        assert_eq!(pg("customers"), ("postgres://127.0.0.1:5433".into(), "shop.public.customers".into()));
        assert_eq!(pg("analytics.\"Orders\""), ("postgres://127.0.0.1:5433".into(), "shop.analytics.Orders".into()));
        let my = |t| table_dataset(DbKind::Mysql, "mysql://etl@db.example/erp", t);
        assert_eq!(my("orders"), ("mysql://db.example:3306".into(), "erp.orders".into()));
        assert_eq!(my("other.orders"), ("mysql://db.example:3306".into(), "other.orders".into()));
    }

    #[test]
    fn store_paths_are_named_from_the_bucket_root() {
        let dir = std::env::temp_dir();
        let local = Store::new("lake", dir.to_str().unwrap(), &[], std::path::Path::new(".")).unwrap();
        let (ns, name) = store_dataset(&local, "marts/daily", false);
        assert_eq!(ns, "file");
        assert_eq!(name, format!("{}/marts/daily", dir.display().to_string().trim_end_matches('/')));
        let s3 =
            Store::new("s3", "s3://bucket/prefix", &[("region".into(), "us-east-1".into())], std::path::Path::new("."))
                .unwrap();
        assert_eq!(store_dataset(&s3, "in/*.csv", true), ("s3://bucket".into(), "prefix/in".into()));
    }

    #[test]
    fn every_kind_of_dependency_has_an_openlineage_transformation() {
        use How::*;
        for h in [Copy, Transform, Aggregate, Filter, Join, GroupBy, Window, Sort] {
            let t = transformation(h);
            assert_eq!(t["type"] == "DIRECT", h.direct(), "{h:?}");
        }
    }
}
