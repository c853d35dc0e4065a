//! The cluster a run's SQL executes on, when the engine is Ballista.
//!
//! weir keeps the DAG, extract listing, incremental state, checks, loads and commits; the
//! transforms' queries run on the cluster. Tables cross between the two only as files: an
//! extract is registered on the cluster as a listing table over its files, a transform is a
//! view (fused into its consumer's query on the cluster) or written by the executors as
//! Parquet to the staging area, and a table weir computed itself (a checked, quarantined or
//! tolerant-read extract) is written there by weir. In-memory tables never cross: Ballista
//! serializes every plan it runs, and only listing tables and views survive that.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::FileFormat as DfFileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStoreExt};

use super::RunError;
use crate::compile::{BallistaPlan, EnginePlan, Plan};
use crate::storage::Store;

/// A run's connection to a Ballista cluster and its staging area.
pub struct Cluster {
    /// The cluster's session: queries planned here run on its executors.
    pub ctx: SessionContext,
    staging: Staging,
    /// `df://host:port`, or the standalone cluster's address.
    pub scheduler: String,
}

/// Where tables are handed over between weir and the executors.
enum Staging {
    /// This run's local staging directory (the standalone cluster, or executors on this host).
    Local(PathBuf),
    /// A directory of a store every executor reaches: `<path>/<pipeline>/<run_id>`.
    Store { store: Arc<Store>, rel: String },
}

impl Cluster {
    /// The URL of the staging directory for `name` (ends with `/`).
    pub fn dir_url(&self, name: &str) -> String {
        match &self.staging {
            Staging::Local(dir) => {
                let d = dir.join(name);
                let d = std::path::absolute(&d).unwrap_or(d);
                format!("file://{}/", d.display())
            }
            Staging::Store { store, rel } => store.url_of(&store.path(&format!("{rel}/{name}")), true),
        }
    }

    /// What DataFusion knows the staging store by.
    pub fn object_store_url(&self) -> ObjectStoreUrl {
        match &self.staging {
            Staging::Local(_) => ObjectStoreUrl::local_filesystem(),
            Staging::Store { store, .. } => store.object_store_url.clone(),
        }
    }

    /// Create the staging directory of `name` where directories exist (local disk).
    pub fn prepare(&self, name: &str) -> std::io::Result<()> {
        if let Staging::Local(dir) = &self.staging {
            std::fs::create_dir_all(dir.join(name))?;
        }
        Ok(())
    }

    /// The files staged for `name`.
    pub async fn list(&self, name: &str) -> datafusion::error::Result<Vec<ObjectMeta>> {
        match &self.staging {
            Staging::Local(dir) => super::stage::list_local(&dir.join(name)).await,
            Staging::Store { store, rel } => {
                let prefix = store.path(&format!("{rel}/{name}"));
                let mut files = Vec::new();
                let mut stream = store.object_store.list(Some(&prefix));
                while let Some(m) = stream.next().await {
                    files.push(m.map_err(|e| datafusion::error::DataFusionError::ObjectStore(Box::new(e)))?);
                }
                files.sort_by(|a, b| a.location.cmp(&b.location));
                Ok(files)
            }
        }
    }

    /// Remove what earlier runs of the pipeline left on the staging store (killed or failed
    /// runs), except `keep` (this run, and a run being resumed).
    async fn sweep(&self, pipeline_rel: &str, keep: &[&str]) {
        let Staging::Store { store, .. } = &self.staging else { return };
        let prefix = store.path(pipeline_rel);
        let mut stream = store.object_store.list(Some(&prefix));
        let mut old = Vec::new();
        while let Some(Ok(m)) = stream.next().await {
            let run =
                m.location.prefix_match(&prefix).and_then(|mut parts| parts.next()).map(|p| p.as_ref().to_string());
            if run.is_some_and(|r| !keep.contains(&r.as_str())) {
                old.push(m.location);
            }
        }
        for p in old {
            let _ = store.object_store.delete(&p).await;
        }
    }

    /// Remove this run's staged tables (after it succeeded).
    pub async fn clean(&self) {
        match &self.staging {
            Staging::Local(_) => {} // the run's staging directory goes as a whole
            Staging::Store { store, rel } => {
                let prefix = store.path(rel);
                let mut stream = store.object_store.list(Some(&prefix));
                let mut all = Vec::new();
                while let Some(Ok(m)) = stream.next().await {
                    all.push(m.location);
                }
                for p in all {
                    let _ = store.object_store.delete(&p).await;
                }
            }
        }
    }
}

/// A listing table over `urls` (files, or directories ending with `/`): the kind of table a
/// cluster can be sent.
pub fn listing_table(
    urls: &[String],
    format: Arc<dyn DfFileFormat>,
    schema: SchemaRef,
) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    let paths = urls.iter().map(ListingTableUrl::parse).collect::<datafusion::error::Result<Vec<_>>>()?;
    // Any name: explicit files keep theirs (`.csv.gz`, no extension), staged files end `.parquet`.
    let options = ListingOptions::new(format).with_file_extension("");
    let config = ListingTableConfig::new_with_multi_paths(paths).with_listing_options(options).with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// A listing table over the Parquet files staged in a directory.
pub fn staged_listing(dir_url: &str, schema: SchemaRef) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    listing_table(&[dir_url.to_string()], Arc::new(ParquetFormat::default()), schema)
}

/// The cluster a run uses, or `None` for the local engine.
pub async fn connect(
    plan: &Plan,
    engine: &EnginePlan,
    staging_dir: &std::path::Path,
    run_id: &str,
    resumed: Option<&str>,
    target_partitions: Option<usize>,
) -> Result<Option<Arc<Cluster>>, RunError> {
    let EnginePlan::Ballista(b) = engine else { return Ok(None) };
    let staging = match &b.staging {
        Some((store, path)) => {
            Staging::Store { store: store.clone(), rel: format!("{path}/{}/{run_id}", plan.pipeline) }
        }
        None => Staging::Local(staging_dir.to_path_buf()),
    };
    let (ctx, scheduler) = ballista::session(plan, b, target_partitions).await?;
    let cluster = Cluster { ctx, staging, scheduler };
    if let Some((_, path)) = &b.staging {
        let mut keep = vec![run_id];
        keep.extend(resumed);
        cluster.sweep(&format!("{path}/{}", plan.pipeline), &keep).await;
    }
    tracing::info!(scheduler = %cluster.scheduler, "SQL runs on the Ballista cluster");
    Ok(Some(Arc::new(cluster)))
}

#[cfg(not(feature = "distributed"))]
mod ballista {
    use super::*;

    pub async fn session(
        _plan: &Plan,
        _engine: &BallistaPlan,
        _target_partitions: Option<usize>,
    ) -> Result<(SessionContext, String), RunError> {
        Err(RunError::Engine(
            "this weir was built without Ballista (`--no-default-features` left out the cargo feature `distributed`): build it with default features, or run with `--engine local`".into(),
        ))
    }
}

#[cfg(feature = "distributed")]
mod ballista {
    use super::*;
    use ::ballista::prelude::SessionContextExt;
    use ballista_core::extension::SessionConfigExt;
    use datafusion::execution::runtime_env::RuntimeEnv;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionConfig;
    use tokio::sync::OnceCell;

    /// The in-process standalone cluster: one scheduler and one executor for the whole
    /// process, started on first use. Runs register their stores in its runtime.
    struct Standalone {
        url: String,
        runtime: Arc<RuntimeEnv>,
    }

    static STANDALONE: OnceCell<Standalone> = OnceCell::const_new();

    async fn standalone() -> Result<&'static Standalone, RunError> {
        STANDALONE
            .get_or_try_init(|| async {
                let err = |what: &str, e: &dyn std::fmt::Display| {
                    RunError::Engine(format!("cannot start the standalone Ballista {what}: {e}"))
                };
                let runtime = Arc::new(RuntimeEnv::default());
                let config = crate::compile::session_config().upgrade_for_ballista();
                let state = SessionStateBuilder::new()
                    .with_config(config)
                    .with_runtime_env(runtime.clone())
                    .with_default_features()
                    .build();
                // Each job's session is built from the settings it arrives with (Ballista's
                // `new_standalone_scheduler_from_state` would hand every job this one state and
                // drop the pipeline's `engine.ballista.settings`), over weir's runtime, where
                // runs register their stores.
                let codec = ballista_core::serde::BallistaCodec::new(
                    state.config().ballista_logical_extension_codec(),
                    state.config().ballista_physical_extension_codec(),
                );
                let job_runtime = runtime.clone();
                let session_builder: ballista_scheduler::scheduler_server::SessionBuilder =
                    Arc::new(move |config: SessionConfig| {
                        Ok(SessionStateBuilder::new()
                            .with_config(config)
                            .with_runtime_env(job_runtime.clone())
                            .with_default_features()
                            .build())
                    });
                let base = state.config().clone();
                let config_producer: ballista_core::ConfigProducer = Arc::new(move || base.clone());
                let addr = ballista_scheduler::standalone::new_standalone_scheduler_with_builder(
                    session_builder,
                    config_producer,
                    codec,
                )
                .await
                .map_err(|e| err("scheduler", &e))?;
                let url = format!("http://localhost:{}", addr.port());
                let mut tries = 0;
                let client = loop {
                    match ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient::connect(
                        url.clone(),
                    )
                    .await
                    {
                        Ok(c) => break c,
                        Err(e) if tries >= 100 => return Err(err("scheduler", &e)),
                        Err(_) => {
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                };
                let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
                ballista_executor::new_standalone_executor_from_state(client, cores, &state)
                    .await
                    .map_err(|e| err("executor", &e))?;
                Ok(Standalone { url: format!("df://localhost:{}", addr.port()), runtime })
            })
            .await
    }

    /// The run's session on the cluster: queries planned in it are sent to the scheduler.
    pub async fn session(
        plan: &Plan,
        engine: &BallistaPlan,
        target_partitions: Option<usize>,
    ) -> Result<(SessionContext, String), RunError> {
        let mut config = crate::compile::session_config();
        if let Some(n) = target_partitions {
            config = config.with_target_partitions(n.max(1));
        }
        let engine_err =
            |e: datafusion::error::DataFusionError| RunError::Engine(plan.secrets.redact(&e.strip_backtrace()));
        // Ballista's own defaults first (what `remote_with_state` would apply), then the
        // pipeline's settings over them; the session carries them to scheduler and executors.
        config = config.upgrade_for_ballista();
        for (k, v) in &engine.settings {
            config.options_mut().set(k, v).map_err(engine_err)?;
        }
        let (url, runtime) = match engine.scheduler.as_deref() {
            None => {
                let s = standalone().await?;
                // The standalone executor reads and writes through this runtime's stores.
                for store in &plan.stores {
                    s.runtime.register_object_store(store.object_store_url.as_ref(), store.object_store.clone());
                }
                (s.url.clone(), s.runtime.clone())
            }
            Some(url) => {
                // Remote executors build their S3 client from the session's `s3.*` settings.
                config = config.with_option_extension(ballista_core::object_store::S3Options::default());
                if let Some(s3) = plan.stores.iter().find(|s| s.backend == crate::storage::Backend::S3) {
                    for (k, v) in crate::compile::engine::s3_settings(s3) {
                        config.options_mut().set(&format!("s3.{k}"), &v).map_err(engine_err)?;
                    }
                }
                let runtime = Arc::new(RuntimeEnv::default());
                for store in &plan.stores {
                    runtime.register_object_store(store.object_store_url.as_ref(), store.object_store.clone());
                }
                (url.to_string(), runtime)
            }
        };
        let state = crate::compile::session_state(config, runtime);
        let ctx = SessionContext::remote_with_state(&url, state).await.map_err(engine_err)?;
        Ok((ctx, url))
    }
}
