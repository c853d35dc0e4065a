//! The command line's arguments (clap).

use super::*;

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Declarative data pipelines: YAML compiled into a DAG of extract, SQL transform and load tasks"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// More logging: -v info, -vv debug, -vvv trace. `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The state store (SQLite). Default: `.weir/state.db` beside the pipelines.
    #[arg(long, env = "WEIR_STATE", global = true)]
    pub state: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The documents `weir schema` describes.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SchemaKind {
    /// Pipeline files (`pipeline.schema.json`).
    Pipeline,
    /// `weir lineage --format json` (`docs/lineage.schema.json`).
    Lineage,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

/// Which change data capture extracts `weir cdc` acts on.
#[derive(clap::Args, Debug)]
pub struct CdcTarget {
    #[arg(default_value = "pipelines")]
    pub path: PathBuf,
    /// Only these extract tasks.
    #[arg(long, short = 't', value_delimiter = ',')]
    pub task: Vec<String>,
    #[command(flatten)]
    pub vars: VarArgs,
}

#[derive(Subcommand, Debug)]
pub enum CdcAction {
    /// Each slot: the position it is at and the WAL it holds on its server.
    Status(CdcTarget),
    /// Drop the slots (and the publications weir created), so that the servers stop keeping
    /// WAL for them. Changes made while a slot is gone are lost to it: the next run of such an
    /// extract asks for `--full-refresh`, which reads the table again.
    Drop(CdcTarget),
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and compile pipelines; report every problem at once.
    Validate {
        /// Pipeline files or directories of them.
        #[arg(default_value = "pipelines")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Show the DAG: tasks in run order, what each reads and writes, and output schemas.
    Plan {
        #[arg(default_value = "pipelines")]
        path: PathBuf,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Run pipelines.
    Run {
        #[arg(default_value = "pipelines")]
        path: PathBuf,
        /// Run only these tasks: names, `+name` (with everything upstream), `name+` (with
        /// everything downstream). Repeat or separate with commas. Tasks whose tables the
        /// selection reads run too.
        #[arg(long, short = 's', value_delimiter = ',')]
        select: Vec<String>,
        /// Rebuild outputs from all input: incremental extracts read everything, and every load
        /// replaces its output.
        #[arg(long)]
        full_refresh: bool,
        /// Continue a failed or cancelled run: its loads that committed are not run again, its
        /// materialized transforms are reused; everything else runs.
        #[arg(long, value_name = "RUN_ID")]
        resume: Option<String>,
        /// The run's logical date (`${run_date}`), YYYY-MM-DD. Default: today (UTC).
        #[arg(long, value_name = "DATE")]
        run_date: Option<String>,
        /// Print the run report as JSON on stdout instead of the table.
        #[arg(long)]
        json: bool,
        /// DataFusion partitions per query. Default: CPU cores (1 under `--memory-limit`).
        #[arg(long)]
        target_partitions: Option<usize>,
        /// Also write the run's metrics (the names `weir serve` exports) to this file in the
        /// Prometheus text format, atomically: for node_exporter's textfile collector.
        #[arg(long, value_name = "FILE")]
        metrics_file: Option<PathBuf>,
        /// Memory budget for running queries (e.g. `2GB`, `512MiB`): sorts, aggregations and
        /// joins that need more spill to disk instead. Half goes to DataFusion's spilling pool,
        /// half is headroom for readers, writers and operators' transient copies. Default: no limit.
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        memory_limit: Option<usize>,
        /// Where the SQL runs, overriding the pipeline's `engine`: `local`, `ballista` (the
        /// pipeline's cluster, or an in-process standalone one), `standalone`, or a Ballista
        /// scheduler `df://host:port`. Ballista is in the default build (cargo feature `distributed`).
        #[arg(long, value_name = "ENGINE")]
        engine: Option<String>,
        #[command(flatten)]
        openlineage: OpenLineageArgs,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Run the pipelines of a directory on their schedules: a daemon with metrics, alerts and
    /// an HTTP API. Stops on SIGTERM / Ctrl-C, letting running runs finish.
    Serve {
        /// The directory of pipeline files.
        #[arg(default_value = "pipelines")]
        dir: PathBuf,
        /// Where the HTTP server listens (`/metrics`, `/healthz`, `/api`).
        #[arg(long, default_value = "127.0.0.1:9187")]
        listen: std::net::SocketAddr,
        /// Bearer token for `/api` (required when listening on a non-loopback address).
        #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Run what is due now (ticks since the last handled one, by each catch-up policy),
        /// check freshness, deliver alerts, and exit: for running from cron.
        #[arg(long)]
        once: bool,
        /// How long running runs get to finish after SIGTERM before they are cancelled.
        #[arg(long, default_value = "60s", value_parser = parse_duration_arg)]
        grace: Duration,
        /// How often pipeline files are checked for changes.
        #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
        reload_interval: Duration,
        /// How often freshness is checked for `stale` alerts.
        #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
        stale_interval: Duration,
        /// The wait before a webhook's first retry (then ×4 each time, 5 attempts).
        #[arg(long, default_value = "1s", value_parser = parse_duration_arg)]
        alert_backoff: Duration,
        /// The daemon's own webhook (repeatable; env `WEIR_NOTIFY`, comma-separated): it gets the
        /// `stale` alerts of pipelines with no webhook of their own to tell — none configured, or
        /// their file deleted or unreadable.
        #[arg(long, value_name = "URL", env = "WEIR_NOTIFY", hide_env_values = true, value_delimiter = ',')]
        notify: Vec<String>,
        /// Memory budget for each run's queries, as for `weir run`.
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        memory_limit: Option<usize>,
        /// DataFusion partitions per query, as for `weir run`.
        #[arg(long)]
        target_partitions: Option<usize>,
        #[command(flatten)]
        openlineage: OpenLineageArgs,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Change data capture slots of the pipelines' `cdc` extracts: see them, drop them.
    Cdc {
        #[command(subcommand)]
        action: CdcAction,
    },
    /// Print the DAG as Graphviz DOT or a Mermaid flowchart.
    Graph {
        #[arg(default_value = "pipelines")]
        path: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Run history from the state store.
    Runs {
        /// Only this pipeline's runs.
        pipeline: Option<String>,
        /// The directory whose state store is read (when --state is not given).
        #[arg(long, default_value = "pipelines")]
        dir: PathBuf,
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Show the tasks of this run.
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Column-level lineage: where every column comes from, through every task, read from the
    /// planned queries.
    Lineage {
        #[arg(default_value = "pipelines")]
        path: PathBuf,
        /// Where this column comes from, through every task: `task.column` (or
        /// `pipeline.task.column`).
        #[arg(long, value_name = "TASK.COLUMN", conflicts_with = "downstream")]
        column: Option<String>,
        /// What depends on this column: the columns, rows and checks it reaches.
        #[arg(long, value_name = "TASK.COLUMN")]
        downstream: Option<String>,
        #[arg(long, value_enum, default_value_t = LineageFormat::Text)]
        format: LineageFormat,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Run the pipelines' tests (`tests:`) on their fixture rows, in-process. Exit 1 when one
    /// fails.
    Test {
        #[arg(default_value = "pipelines")]
        path: PathBuf,
        /// Only the tests whose name contains one of these texts, or that give or expect
        /// rows of one of these tasks.
        #[arg(long, value_delimiter = ',')]
        select: Vec<String>,
        /// Also write the results as JUnit XML to this file (for CI systems).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Print a JSON Schema: of pipeline files (default), or of `weir lineage --format json`.
    Schema {
        #[arg(value_enum, default_value_t = SchemaKind::Pipeline)]
        of: SchemaKind,
    },
    /// Run a Ballista scheduler or executor of this build (cargo feature `distributed`): a
    /// cluster for `engine: { ballista: ... }` on the same DataFusion and Ballista versions as
    /// this weir. The arguments are those of Ballista's `ballista-scheduler` and
    /// `ballista-executor` (`weir cluster executor --help`).
    #[cfg(feature = "distributed")]
    Cluster {
        #[arg(value_enum)]
        role: cluster::Role,
        /// Ballista's own arguments, e.g. `--bind-port 50050`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

/// Where OpenLineage events go, replacing the pipelines' `openlineage` settings. The API key
/// is read from `OPENLINEAGE_API_KEY` only (never a flag: command lines are visible to
/// every user of the machine); `OPENLINEAGE_ENDPOINT`, `OPENLINEAGE_NAMESPACE` and
/// `OPENLINEAGE_DISABLED=true` are read too.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OpenLineageArgs {
    /// Send OpenLineage events to this consumer (e.g. Marquez at `http://127.0.0.1:5000`):
    /// they are POSTed to `URL/api/v1/lineage`.
    #[arg(long, value_name = "URL", env = "OPENLINEAGE_URL", hide_env_values = true)]
    pub openlineage_url: Option<String>,
    /// Append OpenLineage events to this file, one JSON object per line.
    #[arg(long, value_name = "FILE", env = "WEIR_OPENLINEAGE_FILE")]
    pub openlineage_file: Option<PathBuf>,
}

impl OpenLineageArgs {
    pub fn overrides(&self) -> crate::openlineage::Overrides {
        crate::openlineage::Overrides::new(self.openlineage_url.clone(), self.openlineage_file.clone())
    }
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct VarArgs {
    /// Set a variable: `--var region=north`. Overrides `vars:` in the file.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
}

pub(super) fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (write e.g. 500ms, 30s, 2m)"))
}

pub(super) fn parse_size_arg(s: &str) -> Result<usize, String> {
    crate::spec::parse_size(s)
}

#[cfg(test)]
#[test]
fn sizes_parse_in_powers_of_1024() {
    assert_eq!(parse_size_arg("2GB"), Ok(2 << 30));
    assert_eq!(parse_size_arg("512MiB"), Ok(512 << 20));
    assert_eq!(parse_size_arg("1.5g"), Ok(3 << 29));
    assert_eq!(parse_size_arg("1000"), Ok(1000));
    assert!(parse_size_arg("2XB").is_err());
    assert!(parse_size_arg("GB").is_err());
    assert!(parse_size_arg("0").is_err());
}

pub(super) fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    let k = k.trim();
    if !spec::is_identifier(k) {
        return Err(format!("invalid variable name `{k}`"));
    }
    Ok((k.to_string(), v.to_string()))
}
