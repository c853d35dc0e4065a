//! `weir cluster scheduler|executor`: a Ballista scheduler or executor from this very build
//! (cargo feature `distributed`), so that a cluster runs the DataFusion, Arrow and Ballista
//! versions of the weir that sends it work. The arguments are Ballista's own (its stock
//! `ballista-scheduler` and `ballista-executor` binaries take the same), and so is the
//! behaviour: S3 support from the session's `s3.*` settings, logs on stdout or in `--log-dir`.

use std::sync::Arc;

use ballista_core::config::LogRotationPolicy;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

/// Which Ballista process to run.
#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
pub enum Role {
    Scheduler,
    Executor,
}

/// Runs the process until it stops; returns the exit code.
pub fn main(role: Role, args: &[String]) -> i32 {
    let name = match role {
        Role::Scheduler => "weir cluster scheduler",
        Role::Executor => "weir cluster executor",
    };
    let argv = std::iter::once(name.to_string()).chain(args.iter().cloned());
    // Ballista's scheduler builds deep plans: its own binary gives worker threads 32 MiB.
    let runtime = match tokio::runtime::Builder::new_multi_thread().thread_stack_size(32 << 20).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    let result = match role {
        Role::Scheduler => {
            let opt = match ballista_scheduler::config::Config::try_parse_from(argv) {
                Ok(o) => o,
                Err(e) => return usage(e),
            };
            runtime.block_on(scheduler(opt))
        }
        Role::Executor => {
            let opt = match ballista_executor::config::Config::try_parse_from(argv) {
                Ok(o) => o,
                Err(e) => return usage(e),
            };
            runtime.block_on(executor(opt))
        }
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

fn usage(e: clap::Error) -> i32 {
    let _ = e.print();
    if e.use_stderr() { EXIT_INVALID } else { EXIT_OK }
}

/// Logs as Ballista's binaries write them: `RUST_LOG` or the level setting, to stdout or to a
/// rolling file in `log_dir`.
fn init_logs(level: &str, threads: bool, log_dir: Option<&str>, prefix: &str, rotation: LogRotationPolicy) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_thread_names(threads)
        .with_thread_ids(threads)
        .with_env_filter(filter);
    let _ = match log_dir {
        Some(dir) => {
            let file = match rotation {
                LogRotationPolicy::Minutely => tracing_appender::rolling::minutely(dir, prefix),
                LogRotationPolicy::Hourly => tracing_appender::rolling::hourly(dir, prefix),
                LogRotationPolicy::Daily => tracing_appender::rolling::daily(dir, prefix),
                LogRotationPolicy::Never => tracing_appender::rolling::never(dir, prefix),
            };
            builder.with_writer(file).try_init()
        }
        None => builder.with_writer(std::io::stdout).try_init(),
    };
}

async fn scheduler(opt: ballista_scheduler::config::Config) -> ballista_core::error::Result<()> {
    use ballista_core::error::BallistaError;
    use ballista_core::object_store::{session_config_with_s3_support, session_state_with_s3_support};
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;

    let prefix = format!("scheduler_{}_{}_{}", opt.namespace, opt.external_host, opt.bind_port);
    init_logs(&opt.log_level_setting, opt.print_thread_info, opt.log_dir.as_deref(), &prefix, opt.log_rotation_policy);
    let addr = format!("{}:{}", opt.bind_host, opt.bind_port)
        .parse()
        .map_err(|e: std::net::AddrParseError| BallistaError::Configuration(e.to_string()))?;
    let config: SchedulerConfig = opt.try_into()?;
    let config = config
        .with_override_config_producer(Arc::new(session_config_with_s3_support))
        .with_override_session_builder(Arc::new(session_state_with_s3_support));
    let cluster = BallistaCluster::new_from_config(&config).await?;
    ballista_scheduler::scheduler_process::start_server(cluster, addr, Arc::new(config)).await
}

async fn executor(opt: ballista_executor::config::Config) -> ballista_core::error::Result<()> {
    use ballista_core::error::BallistaError;
    use ballista_core::object_store::{runtime_env_with_s3_support, session_config_with_s3_support};
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};

    let health_addr: std::net::SocketAddr = format!("{}:{}", opt.bind_host, opt.bind_health_port)
        .parse()
        .map_err(|e| BallistaError::General(format!("invalid --bind-health-port address: {e}")))?;
    let mut config: ExecutorProcessConfig = opt.try_into()?;
    config.override_config_producer = Some(Arc::new(session_config_with_s3_support));
    config.override_runtime_producer = Some(Arc::new(runtime_env_with_s3_support));
    init_logs(
        &config.special_mod_log_level,
        config.print_thread_info,
        config.log_dir.as_deref(),
        &config.log_file_name_prefix(),
        config.log_rotation_policy,
    );
    // `/healthz` (the process is up) and `/readyz` (it heartbeats), as the stock binary serves.
    let (stop_health, health_stopped) = tokio::sync::oneshot::channel();
    let health = ballista_executor::health::spawn_health_server(health_addr, config.health.clone(), health_stopped);
    let result = start_executor_process(Arc::new(config)).await;
    let _ = stop_health.send(());
    if let Err(e) = health.await {
        tracing::warn!("the executor's health server ended badly: {e}");
    }
    result
}
