//! The YAML surface: plain serde + schemars types, no behaviour.
//!
//! Doc comments here become the descriptions in `pipeline.schema.json` and
//! in the reference documentation, so they are written for pipeline authors.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A weir pipeline: named stores, variables and a set of tasks (extract, transform, load)
/// whose data dependencies form a DAG.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "weir pipeline")]
pub struct Pipeline {
    /// Name of the pipeline, used in run records and metrics. Defaults to the file name
    /// without its extension. Letters, digits, `_` and `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,

    /// Free text shown by `weir plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// Variables, substituted as `${name}` in every string value (store URLs, paths, SQL).
    /// Values may use `${env:NAME}` / `${env:NAME:-default}` (secrets: never logged, refused
    /// in SQL), the built-ins `${run_id}` and `${run_date}` (the run's logical date,
    /// YYYY-MM-DD) and variables defined above them. `weir run --var name=value` overrides.
    /// Write `$${` for a literal `${`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub vars: IndexMap<String, Scalar>,

    /// Named stores: object stores and directories that extracts read from and loads write to,
    /// and databases that extracts read from.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub stores: IndexMap<String, Store>,

    /// Settings every task inherits unless it sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Defaults>,

    /// How many tasks may run at once. Independent branches of the DAG run concurrently up to
    /// this limit; DataFusion also parallelizes inside each task. Default: the number of CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_parallel: Option<u32>,

    /// The tasks. Each key is the task's name, which is also its table name in SQL: lowercase
    /// letters, digits and `_`, starting with a letter or `_`.
    pub tasks: IndexMap<String, Task>,

    /// When `weir serve` runs the pipeline. `weir run` ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,

    /// Webhooks called when something goes wrong (or right again) under `weir serve`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,

    /// How long the pipeline may go without a successful run before `weir serve` raises a
    /// `stale` alert (the dead-man's switch: it fires even if the pipeline never started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,

    /// Where the pipeline's SQL runs: `local` (default: DataFusion inside weir) or
    /// `{ ballista: { ... } }` (an Apache DataFusion Ballista cluster). `weir run --engine`
    /// overrides it. Ballista is in weir's default build (the cargo feature `distributed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,

    /// Unit tests of the pipeline's logic on fixture rows, run in-process by `weir test`: no
    /// store is read or written. More can be in `tests/*.yaml` beside the pipeline file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestCase>,
    /// Where `weir run` and `weir serve` send OpenLineage run events (START, COMPLETE,
    /// FAIL, ABORT) for each run and each task, with datasets, schemas, column lineage,
    /// output statistics and check results. `weir run --openlineage-url/--openlineage-file`
    /// and the `OPENLINEAGE_*` environment variables override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openlineage: Option<OpenLineage>,
}

/// One test: rows given to some tasks, rows expected of others.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the test shows, as reports name it.
    pub name: String,
    /// Rows of tasks, by task name: the rows an extract reads or a transform returns (its query
    /// is not run), or a load's output before the run. Tasks not given are empty tables with
    /// their compiled schema. Values are typed by the task's schema.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub given: IndexMap<String, Fixture>,
    /// Rows expected of tasks, by task name: a transform's rows, or a load's output after its
    /// mode is applied. Compared without regard to order, on the columns the expected rows
    /// name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub expect: IndexMap<String, Fixture>,
    /// The checks expected to fail, by check name (`unique_order_id`) or kind (`unique`),
    /// optionally `task.check`; every other check must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_checks: Option<ExpectChecks>,
}

/// A file of tests beside pipelines (`tests/*.yaml` in the pipelines' directory).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The pipeline the tests are of (its `pipeline:` name, or its file's stem); may be left
    /// out when the directory has one pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    pub tests: Vec<TestCase>,
}

/// Rows: written out, or read from a file beside the pipeline.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum Fixture {
    /// A list of rows, each a map of column: value.
    Rows(Vec<IndexMap<String, serde_json::Value>>),
    /// A file of rows (path relative to the file the test is in).
    File(FixtureFile),
}

/// A fixture file: one of `csv` (with a header), `json` (newline-delimited) or `parquet`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FixtureFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<String>,
}

/// Checks a test expects to fail.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectChecks {
    /// Checks that must fail (or, with `severity: warn`, warn).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// Where a pipeline's SQL runs.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// DataFusion inside the weir process.
    Local,
    /// A DataFusion Ballista cluster: transforms run on its executors; weir keeps the DAG,
    /// extract listing, checks, commits and state.
    Ballista(BallistaEngine),
}

impl<'de> Deserialize<'de> for Engine {
    /// `local` or `{ ballista: { ... } }` (`{ ballista: {} }`: a standalone cluster). serde_yaml
    /// reads enums from YAML tags only; pipelines write them as a one-key map.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_yaml::Value::deserialize(d)?;
        match v {
            serde_yaml::Value::String(s) => match s.as_str() {
                "local" => Ok(Engine::Local),
                other => Err(D::Error::custom(format!(
                    "unknown engine `{other}`: write `local`, or `{{ ballista: {{}} }}` (a standalone cluster), or `{{ ballista: {{ scheduler: \"df://host:50050\" }} }}`"
                ))),
            },
            serde_yaml::Value::Mapping(m) if m.len() == 1 => match m.into_iter().next() {
                Some((serde_yaml::Value::String(k), body)) if k == "ballista" => {
                    let body = if body.is_null() { serde_yaml::Value::Mapping(Default::default()) } else { body };
                    BallistaEngine::deserialize(body)
                        .map(Engine::Ballista)
                        .map_err(|e| D::Error::custom(format!("in `ballista`: {e}")))
                }
                Some((k, _)) => Err(D::Error::custom(format!(
                    "unknown engine `{}`: the engines are `local` and `ballista`",
                    serde_yaml::to_string(&k).unwrap_or_default().trim()
                ))),
                None => Err(D::Error::custom("empty engine")),
            },
            _ => Err(D::Error::custom("`engine` is `local`, `ballista` or `{ ballista: { ... } }`")),
        }
    }
}

/// A Ballista cluster.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BallistaEngine {
    /// The scheduler, `df://host:port` (port 50050 when left out). Without it weir starts an
    /// in-process standalone cluster (a scheduler and an executor inside weir): the same
    /// planning, serialization and execution path, on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,

    /// Where tasks hand tables to each other (Parquet under the run id): a store every
    /// executor can read and write, and a directory in it. Default: weir's local staging
    /// directory, which only executors on this machine can reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<EngineStaging>,

    /// Ballista settings for the run's queries, sent with each of them to the scheduler and
    /// the executors: `ballista.*` keys as Ballista documents them, for example
    /// `ballista.optimizer.broadcast_join_threshold_bytes: 268435456` (join sides estimated
    /// below 256 MiB are broadcast rather than shuffled) or `ballista.shuffle.compression.codec:
    /// zstd`. Keys and values are checked when the pipeline is compiled. DataFusion's own
    /// `datafusion.*` settings are not accepted here: weir sets them, the same for both
    /// engines, so that a pipeline gives the same results on either.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub settings: IndexMap<String, Scalar>,
}

/// A staging location for a Ballista cluster.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineStaging {
    /// A store defined under `stores`.
    pub store: String,
    /// Directory relative to the store's root. Default `_weir_staging`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A cron schedule, read by `weir serve`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// A cron expression: 5 fields (`minute hour day-of-month month day-of-week`) or 6 with
    /// seconds first. Lists, ranges, steps, names (`MON`, `JAN`), `L`, `W` and `#` are
    /// understood; when both day fields are restricted, a day matching either runs (as in
    /// classic cron). Examples: `0 2 * * *` (02:00 daily), `*/15 * * * *`, `0 6 * * MON-FRI`.
    pub cron: String,

    /// The IANA time zone the cron fields are read in, e.g. `Europe/Berlin`. Default `UTC`.
    /// Ticks follow daylight saving time: a time skipped by the change runs at the first
    /// valid time after it, and a time repeated by it runs once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,

    /// Ticks missed while the daemon was down (or while the pipeline file was invalid):
    /// `none` skips them, `last` (default) runs the newest one once, `all` runs each, oldest
    /// first (at most 100; older ones are recorded as skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup: Option<Catchup>,

    /// A tick that comes while the previous run is still going: `skip` (default) records it
    /// as skipped, `queue` runs it when the current run ends (one tick waits at most; more
    /// are skipped). Two runs of one pipeline never overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
}

/// What happens to ticks missed while the daemon was down.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Catchup {
    None,
    #[default]
    Last,
    All,
}

/// What happens to a tick that comes while the previous run is still going.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    #[default]
    Skip,
    Queue,
}

/// A webhook. The body is Slack-compatible JSON: `{"text": ...}` with plain text, plus the
/// fields `event`, `pipeline`, `run_id`, `task` and `error`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// Where to POST. Treated as a secret whatever its source (webhook URLs carry tokens):
    /// never logged, shown as `***`. Use `${env:NAME}`.
    pub url: String,

    /// Which events: `failure` (a run failed), `check_failed` (an error-severity check
    /// failed), `recovered` (the first success after a failure or a stale alert), `stale` (no
    /// successful run within `freshness.warn_after`), `cdc_lag` (after a run, a change data
    /// capture slot holds more WAL than its `lag_alert`; raised again only after it came back
    /// under). Default: all five.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<NotifyEvent>,
}

/// An event that can be sent to a webhook.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Failure,
    CheckFailed,
    Recovered,
    Stale,
    CdcLag,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 5] = [
        NotifyEvent::Failure,
        NotifyEvent::CheckFailed,
        NotifyEvent::Recovered,
        NotifyEvent::Stale,
        NotifyEvent::CdcLag,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            NotifyEvent::Failure => "failure",
            NotifyEvent::CheckFailed => "check_failed",
            NotifyEvent::Recovered => "recovered",
            NotifyEvent::Stale => "stale",
            NotifyEvent::CdcLag => "cdc_lag",
        }
    }
}

/// OpenLineage transports: an HTTP endpoint (Marquez or any OpenLineage consumer), a file of
/// newline-delimited JSON events, or both. A transport that fails never fails a run: the
/// failure is logged and counted (`weir_openlineage_events_total{outcome="failed"}`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenLineage {
    /// The consumer's base URL, e.g. `http://127.0.0.1:5000` for Marquez: events are POSTed
    /// to `{url}/{endpoint}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The path under `url` events are POSTed to. Default `api/v1/lineage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Sent as `Authorization: Bearer <api_key>`. A secret: never logged, shown as `***`.
    /// Use `${env:NAME}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// A file events are appended to, one JSON object per line (relative paths: to the
    /// pipeline file's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The namespace of the pipeline's jobs and of the tables between its tasks. Default
    /// `weir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// How long one HTTP request may take, e.g. `5s` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// How fresh the pipeline's outputs must be.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// No successful run for longer than this raises a `stale` alert, e.g. `26h` for a daily
    /// pipeline. Counted from the last success, or from when the daemon first saw the
    /// pipeline if it never succeeded.
    pub warn_after: Duration,
    /// While the pipeline stays stale and no `stale` alert for this silence was delivered
    /// (every webhook attempt failed), the alert is raised again this often. Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_every: Option<Duration>,
}

/// A YAML scalar used as a text value (strings, numbers and booleans are accepted).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::String(s) => f.write_str(s),
            Scalar::Integer(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A named store: an object store or directory, or a database.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// Where the store's root is: `file://relative/dir` (relative to the pipeline file),
    /// `file:///absolute/dir`, `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` (or `abfss://container@account.dfs.core.windows.net/prefix`),
    /// or `memory://name` (in-process, for tests). A database: `postgres://user@host:port/db`.
    pub url: String,

    /// Options for the object store client, as understood by `object_store`'s builders:
    /// for S3 e.g. `region`, `endpoint`, `access_key_id`, `secret_access_key`,
    /// `allow_http`, `virtual_hosted_style_request`; for GCS `service_account_path`; for
    /// Azure `account_name`, `access_key`. PostgreSQL: `password`, `sslmode` (`prefer`,
    /// `disable`), `connect_timeout`, `application_name`. Use `${env:NAME}` for credentials.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub options: IndexMap<String, Scalar>,
}

/// Settings every task inherits.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// How many times a task is retried after a transient failure (I/O, network). Errors that
    /// cannot succeed on a retry (invalid SQL, missing columns) are not retried. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,

    /// Wait before the first retry, doubled for each further one, with jitter. A duration such
    /// as `500ms`, `5s`, `2m`. Default `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<Duration>,

    /// A task running longer than this is cancelled and fails (nothing it wrote is published).
    /// A duration such as `30m`, `2h`. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// A duration written with units: `250ms`, `5s`, `10m`, `2h`, `1h 30m`, `1d`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(transparent)]
pub struct Duration(#[schemars(regex(pattern = r"^\s*\d+\s*[a-zA-Z]+(\s*\d+\s*[a-zA-Z]+)*\s*$"))] pub String);

/// One task of the pipeline: exactly one of `extract`, `transform` or `load`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["extract"]},
    {"required": ["transform"]},
    {"required": ["load"]}
]))]
pub struct Task {
    /// Free text shown by `weir plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// Read files from a store, or a table or query from a database. The task's table is the
    /// rows read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<Box<Extract>>,

    /// Compute a table with SQL over other tasks' tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transform>,

    /// Write another task's table to a store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Box<Load>>,

    /// Extra ordering: this task starts only after these tasks succeeded. Data dependencies
    /// (tables read in SQL, `load.from`) are found automatically and need not be listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,

    /// Overrides `defaults.retries` for this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,

    /// Overrides `defaults.retry_backoff` for this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<Duration>,

    /// Overrides `defaults.timeout` for this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,

    /// Gates on the task's rows (extracts and transforms). They run when the task's table is
    /// ready and before any task downstream starts: a failing check of severity `error` fails
    /// the task, so nothing downstream runs and no load downstream publishes anything.
    /// Warnings are reported and do not block. Each item names one kind of check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,

    /// What a failing row-level check (`not_null`, `unique`, `accepted_values`, `expression`,
    /// `relationships`) does: `block` (default) fails the task; `quarantine` takes the failing
    /// rows out of the flow and writes them, with the checks they fail and why, to the
    /// quarantine location, while the passing rows go on. Table-level checks (`row_count`,
    /// `freshness`, `schema`, `sql`) always gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_check_failure: Option<OnCheckFailure>,

    /// Where `on_check_failure: quarantine` writes the rows it sets aside. Default: the store of
    /// the first load downstream, under `_quarantine/`. Files are
    /// `<path>/<pipeline>/<task>/<run_id>.parquet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<QuarantineSpec>,
}

/// One check: exactly one of `not_null`, `unique`, `accepted_values`, `expression`,
/// `row_count`, `relationships`, `freshness`, `schema` or `sql`, with optional `name`,
/// `severity` and thresholds.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["not_null"]},
    {"required": ["unique"]},
    {"required": ["accepted_values"]},
    {"required": ["expression"]},
    {"required": ["row_count"]},
    {"required": ["relationships"]},
    {"required": ["freshness"]},
    {"required": ["schema"]},
    {"required": ["sql"]}
]))]
pub struct Check {
    /// Rows where any of these columns is NULL fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_null: Option<Columns>,

    /// These columns, together, identify a row: every row of a key that occurs more than once
    /// fails. Rows with a NULL in a key column are not counted (that is `not_null`'s job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<Columns>,

    /// Rows whose `column` holds a value outside `values` fail (NULL passes: use `not_null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_values: Option<AcceptedValues>,

    /// A SQL condition on the row's own columns, e.g. `amount >= 0`. Rows for which it is
    /// false or NULL fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,

    /// The table's row count must be within `min` and `max` (both optional, inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<RowCount>,

    /// Every non-NULL value of `column` must exist in column `field` of task `to` (an extract
    /// or transform of this pipeline, which then runs first). Rows without a match fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationships: Option<Relationships>,

    /// The newest value of a timestamp or date column must be no older than `max_age`,
    /// measured from the run's logical time (the start of `weir run`; the scheduled time of a
    /// `weir serve` run). Timestamps without a time zone are taken as UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<FreshnessCheck>,

    /// These columns must exist with these types (SQL type names as in `extract.schema`,
    /// e.g. `bigint`, `decimal(12,2)`, `varchar`, `timestamp`). Other columns may exist too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<IndexMap<String, String>>,

    /// A query over this task's table (and tables upstream of it): every row it returns is a
    /// failure, e.g. `SELECT * FROM orders WHERE shipped_at < ordered_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,

    /// Name in reports, state and alerts; unique within the task. Default: the kind and its
    /// columns, e.g. `not_null_order_id_customer_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,

    /// `error` (default): a failure fails the task and blocks everything downstream. `warn`:
    /// a failure is reported and nothing is blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,

    /// When the check fails, on the number or share of failing rows: an operator (`>`, `>=`,
    /// `<`, `<=`, `=`, `!=`) and a count or a percentage of the rows checked, e.g. `"> 0"`,
    /// `">= 10"`, `"> 1%"`. Default `"> 0"` (with `severity: warn`, none). For row-level
    /// checks and `sql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_if: Option<String>,

    /// When the check warns (if it does not fail), in the same form as `error_if`.
    /// Default `"> 0"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_if: Option<String>,
}

/// `accepted_values`: a column and the values it may hold.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptedValues {
    pub column: String,
    /// The accepted values, written as the column's values (text, numbers, booleans, dates
    /// as `2026-01-31`).
    pub values: Vec<Scalar>,
}

/// `row_count`: bounds on the number of rows, inclusive.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RowCount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

/// `relationships`: a foreign key into another task's table.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Relationships {
    /// The column of this task holding the references.
    pub column: String,
    /// The task referred to.
    pub to: String,
    /// The column of `to` the values must be found in.
    pub field: String,
}

/// `freshness`: how old the newest row may be.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreshnessCheck {
    /// A timestamp or date column.
    pub column: String,
    /// A duration such as `26h`, `2d`, `90m`.
    pub max_age: Duration,
}

/// How serious a check's failure is.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fail the task and block everything downstream.
    #[default]
    Error,
    /// Report, and go on.
    Warn,
}

/// What failing row-level checks do.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnCheckFailure {
    /// The task fails; nothing downstream runs.
    #[default]
    Block,
    /// Failing rows are written to the quarantine location and left out; the rest go on.
    Quarantine,
}

/// Where quarantined rows are written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantineSpec {
    /// A store defined under `stores`. Default: the store of the first load downstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Directory relative to the store's root. Default `_quarantine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Read files matching a path or glob from a store.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Extract {
    /// Name of a store defined under `stores`.
    pub store: String,

    /// Files: path or glob relative to the store's root, e.g. `orders/*.csv`,
    /// `events/**/*.json.gz`, `customers.parquet`. Only the part before the first glob
    /// character is listed. Required for file stores; not used by database stores.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,

    /// Databases: the table (or view) to read, schema-qualified or not (`public.customers`,
    /// `orders`). Every column is read, in one snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,

    /// Databases: one SELECT statement to read instead of a table. Anything else (DDL, DML,
    /// several statements) is refused at validate; it runs in a read-only transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,

    /// Databases: read in `parts` key ranges of `column` on as many connections at once, all in
    /// one snapshot (PostgreSQL), so that the parts together are the table as of one instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<SourcePartition>,

    /// File format. Default: from the path's extension (`.csv`, `.json`/`.jsonl`/`.ndjson`,
    /// `.parquet`), ignoring a compression suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FileFormat>,

    /// Compression of CSV and JSON files. Default: from the path's extension
    /// (`.gz`, `.zst`, `.bz2`, `.xz`), else none. Parquet files carry their own compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<InputCompression>,

    /// CSV reading options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvOptions>,

    /// XML files (`format: xml`, or a `.xml` path): which element is a row, and the path of
    /// each column's value. Required for XML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xml: Option<XmlOptions>,

    /// HTTP APIs (the store is an `http://` or `https://` URL): the resource to read, its
    /// parameters, where the records are in each response and how to get the next page.
    /// Responses are JSON (`format: json`, the default for an HTTP store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpOptions>,

    /// Column types, by column name, in SQL type names: `bigint`, `integer`, `smallint`,
    /// `double`, `real`, `decimal(p,s)`, `varchar`, `boolean`, `date`, `timestamp`,
    /// `timestamp with time zone`. Columns not listed keep their inferred type. For CSV and
    /// JSON without this key, types are inferred from the first `infer_rows` rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<IndexMap<String, String>>,

    /// How many rows of CSV/JSON are sampled to infer column types. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub infer_rows: Option<usize>,

    /// Read only what is new since the loads downstream last committed: new and changed
    /// files (`new_files: true`), rows past a watermark (`watermark: {column, lookback}`), or
    /// both. What a load consumed is committed atomically with its data, so a crash and a
    /// re-run read every row exactly once. `weir run --full-refresh` reads everything again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
    /// What a malformed row of a CSV or JSON file does: `fail` (default) stops the run with the
    /// file, line, column and value; `skip` leaves it out and counts it; `quarantine` leaves it
    /// out and writes its text, file, line and reason to the quarantine location (see the
    /// task's `quarantine`). Malformed: too many or too few fields, a value that is not of its
    /// column's type, invalid UTF-8, an unterminated quote, a line that is not a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_rows: Option<BadRowsMode>,
}

impl Extract {
    /// Which of the keys that belong to one kind of source this extract sets, by name.
    pub fn kind_keys(&self) -> Vec<&'static str> {
        [
            ("path", !self.path.is_empty()),
            ("format", self.format.is_some()),
            ("compression", self.compression.is_some()),
            ("csv", self.csv.is_some()),
            ("xml", self.xml.is_some()),
            ("http", self.http.is_some()),
            ("infer_rows", self.infer_rows.is_some()),
            ("bad_rows", self.bad_rows.is_some()),
            ("table", self.table.is_some()),
            ("query", self.query.is_some()),
            ("partition", self.partition.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }
}

/// How XML files become rows. Paths are element names separated by `/`, `prefix:name` for an
/// element of a namespace in `namespaces` (a name without a prefix matches that name in any
/// namespace).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XmlOptions {
    /// The repeated element that is one row, as an absolute path from the document's root
    /// element: `/ORDERS05/IDOC/E1EDP01`.
    pub record: String,
    /// The columns, in order: name → path of the value. Relative to the record: `POSEX` (the
    /// text of a child element), `E1EDP19/IDTNR` (of a grandchild), `MENGE/@unit` (an
    /// attribute), `@SEGMENT` (an attribute of the record), `.` (the record's own text).
    /// Absolute (`/ORDERS05/IDOC/EDI_DC40/DOCNUM`): the value of an element outside the record
    /// that comes before it in the file (a header), repeated on each row until the element
    /// that encloses both ends. `[]` after a step (`E1EDPT2[]/TDLINE`, `TDLINE[]`): every
    /// occurrence, as a list. A missing element is NULL; an element that repeats where one
    /// is expected is a malformed row. Values are text unless `schema` gives a type.
    pub fields: IndexMap<String, String>,
    /// Namespace prefixes the paths use: prefix → namespace URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<IndexMap<String, String>>,
}

/// How an HTTP API is read: one GET per page, JSON responses.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpOptions {
    /// The resource, relative to the store's URL (`contacts`, `v1/devices`), or absolute on
    /// the store's host (`/v2/contacts`).
    pub path: String,
    /// Query parameters of every request. `${watermark}` in a value is the committed
    /// watermark of `incremental.watermark` (minus its `lookback`), written as text
    /// (`2026-11-01T08:00:00Z` for a timestamp with time zone, `2026-11-01` for a date, the
    /// number for an integer); on a first run or `--full-refresh` the parameter is left out.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, Scalar>,
    /// Request headers besides authentication (`Accept`, an API version). Secrets belong in
    /// the store's options.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// Where the records are in each response: a dot path to a list (`data.items`). Default:
    /// the response itself is the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
    /// How to ask for the next page. Default: one request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paginate: Option<Paginate>,
    /// At most `requests` requests in any window of `per` (retries count). Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// Pagination: one of the styles APIs use (exactly one key).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Paginate {
    /// The response names the next page's cursor (`meta.next_cursor`), sent back as `param`.
    /// Done when the cursor is missing, null or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorPaging>,
    /// Numbered pages: `param` = 1, 2, … (from `first`), with `size_param` = `size`. Done at
    /// the first page with fewer than `size` records (or none, without `size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<PagePaging>,
    /// Offsets: `param` = 0, `limit`, 2×`limit`, … with `limit_param` = `limit`. Done at the
    /// first page with fewer than `limit` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<OffsetPaging>,
    /// The response holds the next page's URL at this dot path (`links.next`). Done when it
    /// is missing or null. The URL must be on the store's host (credentials go nowhere else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_url: Option<String>,
    /// `true`: the next page's URL is the `Link: <…>; rel="next"` response header (RFC 8288,
    /// as GitHub's API). Done when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_header: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CursorPaging {
    /// The query parameter the cursor is sent as.
    pub param: String,
    /// Dot path of the next cursor in the response.
    pub next: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PagePaging {
    /// The query parameter of the page number.
    pub param: String,
    /// The query parameter of the page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_param: Option<String>,
    /// Records per page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub size: Option<u64>,
    /// The first page's number. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OffsetPaging {
    /// The query parameter of the offset.
    pub param: String,
    /// The query parameter of the page size.
    pub limit_param: String,
    /// Records per page.
    #[schemars(range(min = 1))]
    pub limit: u64,
}

/// A request rate that is never exceeded.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window.
    #[schemars(range(min = 1))]
    pub requests: u32,
    /// The window: `1s`, `1m`.
    pub per: Duration,
}

/// How a database extract is cut into parallel range reads.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourcePartition {
    /// An integer, date or timestamp column whose range (minimum to maximum, read in the
    /// snapshot) is cut into `parts` equal ranges; NULL keys are read by the last part.
    pub column: String,
    /// How many ranges, each read on its own connection. 1 to 64.
    #[schemars(range(min = 1, max = 64))]
    pub parts: u32,
}

/// What a malformed input row does.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BadRowsMode {
    /// Stop, naming the file, line, column and value.
    #[default]
    Fail,
    /// Leave it out, and count it in the run report.
    Skip,
    /// Leave it out, and write it to the quarantine location with its file, line and reason.
    Quarantine,
}

/// What an incremental extract reads: new files and/or rows past a watermark, or (databases)
/// the changes captured from the database's log.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// Read only files that the loads downstream have not consumed yet, and files that changed
    /// since (a different size, modification time or ETag: the whole file is read again).
    /// Files already consumed and unchanged are not opened at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_files: bool,

    /// Read only rows whose `column` is greater than the highest value a previous run loaded
    /// (minus `lookback`). With `new_files: true` as well, only new and changed files are
    /// scanned for such rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Watermark>,

    /// PostgreSQL: read the table's inserts, updates and deletes from a logical replication
    /// slot, exactly once. The first run (and `--full-refresh`) reads the table itself, in a
    /// snapshot, then the changes made since; later runs read the changes since the position
    /// the loads downstream committed. Each row carries the table's columns plus `_op`
    /// (`insert`, `update`, `delete`) and `_lsn` (its order), for a `mode: merge` load with
    /// `order_by: _lsn` and `delete_when: "_op = 'delete'"`. Needs `wal_level = logical`, a
    /// user with the REPLICATION attribute, and a primary key or `REPLICA IDENTITY FULL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdc: Option<Cdc>,
}

/// Change data capture through a logical replication slot.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Cdc {
    /// The replication slot (lower-case letters, digits, `_`), created by the first run. It
    /// keeps the server's WAL from the position committed last: drop it with `weir cdc drop`
    /// when the pipeline goes away.
    pub slot: String,

    /// The publication to read, which must publish the table. Default: one named like the
    /// slot, created by the first run for the table (which needs the table's owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<String>,

    /// Memory the server may use to decode this slot's changes before it spills them to disk
    /// (`logical_decoding_work_mem`, set for weir's session only): `256MB`, `1GB`. Default
    /// `512MB`; the server's default (64MB) makes a large transaction spill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_memory: Option<String>,

    /// Raise a `cdc_lag` alert (and set `weir_cdc_slot_lag_bytes`) when, after a run, the slot
    /// holds more WAL than this: `512MB`, `2GB`. Default `1GB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_alert: Option<String>,
}

/// A cursor column that only grows (an update timestamp, an increasing id).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Watermark {
    /// The cursor column: an integer, decimal, date, timestamp or text column of the extract.
    /// Rows with a NULL cursor are never read (the run counts them).
    pub column: String,

    /// Read again this far behind the watermark, to pick up rows that arrived late with an
    /// older cursor value: a duration (`2h`, `1d`) for timestamp and date columns, a number
    /// for integer and decimal columns. Rows inside the window are read again, so `lookback`
    /// requires every load downstream to use `mode: merge` with `keys`. Default: none (rows
    /// are read when their cursor is strictly greater than the watermark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback: Option<Scalar>,
}

/// One column name, or a list of them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum Columns {
    One(String),
    Many(Vec<String>),
}

impl Columns {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Columns::One(c) => vec![c.clone()],
            Columns::Many(v) => v.clone(),
        }
    }
}

/// Input file format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Delimited text (see `csv` options).
    Csv,
    /// Newline-delimited JSON: one object per line.
    Json,
    /// Apache Parquet.
    Parquet,
    /// XML: the elements named by `xml.record` are the rows (see `xml`).
    Xml,
}

/// Compression of text input files.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InputCompression {
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

/// How CSV files are read.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// The first line holds column names. Default true. Without a header, columns are
    /// named `column_1`, `column_2`, … unless `schema` names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<bool>,

    /// Field separator, one character. Default `,`. Write `"\t"` for tab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,

    /// Quote character. Default `"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<char>,

    /// Escape character inside quoted fields, e.g. `\`. Default: none (a quote is escaped by
    /// doubling it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escape: Option<char>,

    /// A field equal to this text is read as NULL, e.g. `NA`, `NULL` or `\N` (empty fields
    /// are always NULL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_value: Option<String>,

    /// Lines starting with this character are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<char>,

    /// Quoted fields may contain line breaks. Default false (faster: files can be split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<bool>,
}

/// Compute a table with one SQL query.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// One query (`SELECT`, `WITH … SELECT`, `VALUES`) over other tasks, referenced by their
    /// names. DDL, DML, `COPY`, `SET`, table functions and file paths are refused.
    /// `${vars}` are substituted first; `${env:…}` values are refused here.
    pub sql: String,
}

/// Write a task's table to a store.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// The task whose table is written.
    pub from: String,

    /// Name of a store defined under `stores`: a file or object store (with `path`) or a
    /// database store (with `table`).
    pub store: String,

    /// File and object stores: the directory relative to the store's root, e.g.
    /// `marts/orders/`. The load owns it: an `overwrite` replaces everything in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,

    /// Database stores (PostgreSQL, MySQL/MariaDB): the table written, schema-qualified or
    /// not (`analytics.orders`). Created from the load's columns when it does not exist
    /// (`keys` become its primary key); rows are bulk-copied into it and every mode is
    /// applied in one transaction, together with the load's commit record (in the table
    /// `weir_commits` of the same schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,

    /// Database tables: what to do when the table lacks columns the load has. `fail`
    /// (default): an error naming both sides. `add_columns`: the missing columns are added
    /// (nullable) in the load's transaction. A column the table has and the load lacks is
    /// written NULL (or its default) either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_schema_change: Option<OnSchemaChange>,

    /// Output table format. Default `parquet`.
    #[serde(default)]
    pub format: OutputFormat,

    /// How the output relates to what is already there. Default `overwrite`.
    #[serde(default)]
    pub mode: LoadMode,

    /// Columns whose values make hive-style directories (`region=north/`). The columns are
    /// stored in the directory names, not in the files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,

    /// Parquet compression codec. Default `zstd`.
    #[serde(default)]
    pub compression: OutputCompression,

    /// Compression level: `zstd` 1–22 (default 1: fast, and with weir's per-column encodings
    /// as small as other engines' level 3), `gzip` 0–10 (default 6). Higher levels make
    /// smaller files and slower writes. Only for `zstd` and `gzip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<u32>,

    /// Rows per Parquet row group. Default 1,048,576 (one million).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub row_group_rows: Option<usize>,

    /// A new file is started after about this many rows. Default 10,000,000. Parquet outputs
    /// only (`deltalake` sizes a Delta table's files itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_rows_per_file: Option<usize>,

    /// `mode: merge`: the column(s) identifying a row. A row of this run replaces the row
    /// with the same keys, or is added when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Columns>,

    /// `mode: merge`: when this run holds several rows with the same keys, the one with the
    /// greatest value of these column(s) wins (NULL is lowest). Without `order_by`, several
    /// rows per key are an error. Two rows tied on `order_by` are an error too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_by: Option<Columns>,

    /// `mode: merge`: a SQL condition on this run's rows, e.g. `op = 'D'`. A row for which it
    /// is true deletes the row with its keys from the output and is not written itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_when: Option<String>,
}

/// A database table load: what to do when the table lacks columns of the load.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnSchemaChange {
    /// Refuse the load, naming the table's columns and the load's.
    #[default]
    Fail,
    /// Add the missing columns (nullable) in the load's transaction.
    AddColumns,
}

/// Output table format.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// A directory of Parquet files, published atomically.
    #[default]
    Parquet,
    /// A Delta Lake table: every load is one Delta commit, which also records what the load
    /// consumed. Readable by Spark, DuckDB (`delta_scan`), Polars and the `deltalake` package.
    Delta,
}

/// How a load's output relates to what is already there.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// Replace the whole output with this run's rows.
    #[default]
    Overwrite,
    /// Add this run's rows to the output.
    Append,
    /// Create-or-update by `keys`: rows of this run replace the rows with the same keys,
    /// others are added; only the files that can hold those keys are rewritten.
    Merge,
    /// Replace only the partitions (`partition_by`) present in this run's rows; the other
    /// partitions stay as they are.
    ReplacePartitions,
}

/// Parquet compression codec for outputs.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputCompression {
    #[default]
    Zstd,
    Snappy,
    Gzip,
    Lz4,
    None,
}
