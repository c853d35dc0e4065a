//! Where a pipeline's SQL runs: `engine: local` or `engine: { ballista: ... }`, checked
//! against the stores (what a cluster's executors can reach).

use std::sync::Arc;

use crate::diag::{Diagnostic, did_you_mean};
use crate::spec::{self, LoadedPipeline};
use crate::storage::{Backend, Store};
use crate::ypath;

/// The scheduler port Ballista uses when a `df://` URL leaves it out.
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// Where staged tables go on the staging store when `staging.path` is left out.
pub const DEFAULT_STAGING_PATH: &str = "_weir_staging";

/// Where the SQL of a run executes.
#[derive(Debug, Clone, Default)]
pub enum EnginePlan {
    /// DataFusion inside weir.
    #[default]
    Local,
    /// A Ballista cluster.
    Ballista(BallistaPlan),
}

#[derive(Debug, Clone, Default)]
pub struct BallistaPlan {
    /// `df://host:port` of the scheduler; `None`: an in-process standalone cluster.
    pub scheduler: Option<String>,
    /// Where tasks hand tables to each other: a store and a directory in it. `None`: the
    /// run's local staging directory.
    pub staging: Option<(Arc<Store>, String)>,
    /// `ballista.*` settings sent with each query (checked).
    pub settings: Vec<(String, String)>,
}

impl EnginePlan {
    pub fn name(&self) -> &'static str {
        match self {
            EnginePlan::Local => "local",
            EnginePlan::Ballista(_) => "ballista",
        }
    }

    /// What `weir plan` shows.
    pub fn describe(&self) -> String {
        match self {
            EnginePlan::Local => "local (DataFusion in weir)".to_string(),
            EnginePlan::Ballista(b) => {
                let at = match &b.scheduler {
                    Some(s) => format!("scheduler {s}"),
                    None => "standalone, in-process".to_string(),
                };
                let staging = match &b.staging {
                    Some((store, path)) => format!("staging on store `{}` under {path}/", store.name),
                    None => "staging on local disk".to_string(),
                };
                let settings = match b.settings.len() {
                    0 => String::new(),
                    1 => "; 1 setting".to_string(),
                    n => format!("; {n} settings"),
                };
                format!("ballista ({at}; {staging}{settings})")
            }
        }
    }

    /// The engine `weir run --engine VALUE` asks for: `local`, `ballista` (the pipeline's
    /// cluster settings, or a standalone cluster) or a scheduler URL `df://host:port`.
    pub fn with_override(&self, value: &str, stores: &[Arc<Store>]) -> Result<EnginePlan, String> {
        let value = value.trim();
        let mut b = match self {
            EnginePlan::Ballista(b) => b.clone(),
            EnginePlan::Local => BallistaPlan::default(),
        };
        match value {
            "local" => return Ok(EnginePlan::Local),
            "ballista" => {}
            "standalone" => b.scheduler = None,
            url => b.scheduler = Some(scheduler_url(url)?),
        }
        if b.scheduler.is_some()
            && let Some(problem) = cluster_problems(stores).into_iter().next()
        {
            return Err(problem);
        }
        Ok(EnginePlan::Ballista(b))
    }
}

/// `df://host[:port]`, normalized with the port.
pub fn scheduler_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| {
        format!("`{text}` is not a scheduler URL ({e}); write `df://host:port`, or `local`, `ballista` or `standalone`")
    })?;
    if url.scheme() != "df" {
        return Err(format!("scheduler URL `{text}` must start with `df://` (e.g. `df://localhost:50050`)"));
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("scheduler URL `{text}` has no host"))?;
    if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() {
        return Err(format!("scheduler URL `{text}` must be only `df://host:port`"));
    }
    Ok(format!("df://{host}:{}", url.port().unwrap_or(DEFAULT_SCHEDULER_PORT)))
}

/// Why executors of a remote cluster could not reach this pipeline's stores. The stock
/// `ballista-executor` and `ballista-scheduler` read `s3://` (one endpoint and one set of
/// credentials per session, given as `s3.*` settings) and local paths.
pub fn cluster_problems(stores: &[Arc<Store>]) -> Vec<String> {
    let mut out = Vec::new();
    let mut s3: Option<(&str, Vec<(String, String)>)> = None;
    for s in stores {
        match s.backend {
            Backend::Memory => out.push(format!(
                "store `{}` is in-process memory: a cluster's executors cannot reach it; use `file://` or `s3://`",
                s.name
            )),
            Backend::Local(_) => {}
            Backend::S3 => {
                let settings = s3_settings(s);
                match &s3 {
                    None => s3 = Some((&s.name, settings)),
                    Some((first, seen)) if *seen != settings => out.push(format!(
                        "stores `{first}` and `{}` use different S3 endpoints or credentials: a Ballista session carries one S3 configuration to its executors",
                        s.name
                    )),
                    Some(_) => {}
                }
            }
            Backend::Gcs | Backend::Azure => out.push(format!(
                "store `{}` ({}) cannot be read by the stock Ballista executors, which read `s3://` and local paths; run this pipeline with `engine: local`, or use the standalone cluster (`engine: {{ ballista: {{}} }}`)",
                s.name, s.display_url
            )),
        }
    }
    out
}

/// The `s3.*` session settings Ballista's executors build their S3 client from, taken from
/// a store's options (`object_store` key names, with or without the `aws_` prefix).
pub fn s3_settings(store: &Store) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in store.options() {
        let k = k.to_ascii_lowercase();
        let key = k.strip_prefix("aws_").unwrap_or(&k);
        let name = match key {
            "access_key_id" => "access_key_id",
            "secret_access_key" => "secret_access_key",
            "session_token" | "token" => "session_token",
            "region" | "default_region" => "region",
            "endpoint" | "endpoint_url" => "endpoint",
            "allow_http" => "allow_http",
            _ => continue,
        };
        out.push((name.to_string(), v.clone()));
    }
    out.sort();
    out
}

/// What is wrong with an `engine.ballista.settings` entry.
#[derive(Debug)]
pub struct SettingProblem {
    pub message: String,
    pub help: Option<String>,
    /// The value is wrong (else the key).
    pub at_value: bool,
}

impl SettingProblem {
    fn key(message: String, help: Option<String>) -> Self {
        SettingProblem { message, help, at_value: false }
    }
    #[cfg(feature = "distributed")]
    fn value(message: String) -> Self {
        SettingProblem { message, help: None, at_value: true }
    }
}

/// Why `engine.ballista.settings` cannot hold `key: value`, with a suggestion. Only
/// `ballista.*` keys are accepted; with the `distributed` feature the key must be one Ballista
/// knows and the value must parse as its type (Ballista itself would panic on an executor
/// reading a malformed value). Without the feature only the prefix is checked: such a build
/// refuses to run on Ballista anyway.
pub fn check_setting(key: &str, value: &str) -> Result<(), SettingProblem> {
    if !key.starts_with("ballista.") {
        let help = if key.starts_with("datafusion.") {
            "weir sets DataFusion's settings itself, the same on both engines, so that results match"
        } else {
            "Ballista's settings start with `ballista.`, e.g. `ballista.shuffle.compression.codec`"
        };
        return Err(SettingProblem::key(
            format!("`{key}` is not a Ballista setting: only `ballista.*` keys go here"),
            Some(help.into()),
        ));
    }
    #[cfg(feature = "distributed")]
    {
        use ballista_core::config::BallistaConfig;
        use ballista_core::extension::SessionConfigExt;
        let entries = BallistaConfig::valid_entries();
        let Some(entry) = entries.get(key) else {
            return Err(SettingProblem::key(
                format!("unknown Ballista setting `{key}`"),
                did_you_mean(key, entries.keys().map(String::as_str)),
            ));
        };
        BallistaConfig::parse_value(value, entry.data_type().clone()).map_err(|e| {
            SettingProblem::value(format!("`{value}` is not a valid value for `{key}` (a {}): {e}", entry.data_type()))
        })?;
        let mut config = datafusion::prelude::SessionConfig::new_with_ballista();
        config.options_mut().set(key, value).map_err(|e| SettingProblem::value(e.strip_backtrace()))?;
        // Settings Ballista parses further when it uses them.
        if let Err(e) = config.ballista_config().shuffle_compression_codec() {
            return Err(SettingProblem::value(e.strip_backtrace()));
        }
    }
    #[cfg(not(feature = "distributed"))]
    let _ = value;
    Ok(())
}

/// Compile the `engine` key.
pub fn compile_engine(
    p: &LoadedPipeline,
    stores: &indexmap::IndexMap<String, Arc<Store>>,
    diags: &mut Vec<Diagnostic>,
) -> EnginePlan {
    let Some(spec::Engine::Ballista(b)) = &p.spec.engine else {
        return EnginePlan::Local;
    };
    let mut plan = BallistaPlan::default();
    if let Some(s) = &b.scheduler {
        match scheduler_url(s) {
            Ok(url) => plan.scheduler = Some(url),
            Err(e) => diags.push(p.diag_value("engine", &ypath!["engine", "ballista", "scheduler"], s.len(), e)),
        }
    }
    if let Some(st) = &b.staging {
        match stores.get(&st.store) {
            Some(store) => {
                let path = st.path.clone().unwrap_or_else(|| DEFAULT_STAGING_PATH.to_string());
                let path = path.trim_matches('/').to_string();
                if path.is_empty() || path.split('/').any(|s| s == "..") {
                    diags.push(p.diag_value(
                        "engine",
                        &ypath!["engine", "ballista", "staging", "path"],
                        path.len(),
                        "the staging path must be a directory inside the store (not its root, no `..`)",
                    ));
                }
                plan.staging = Some((store.clone(), path));
            }
            None => diags.push(
                p.diag_value(
                    "unknown-store",
                    &ypath!["engine", "ballista", "staging", "store"],
                    st.store.len(),
                    format!("unknown store `{}` for the engine's staging", st.store),
                )
                .maybe_help(did_you_mean(&st.store, stores.keys().map(String::as_str))),
            ),
        }
    }
    for (key, value) in &b.settings {
        let value = value.to_string();
        match check_setting(key, &value) {
            Ok(()) => plan.settings.push((key.clone(), value)),
            Err(problem) => {
                let path = ypath!["engine", "ballista", "settings", key.as_str()];
                let d = if problem.at_value {
                    p.diag_value("engine-setting", &path, value.len(), problem.message)
                } else {
                    p.diag_key("engine-setting", &path, problem.message)
                };
                diags.push(d.maybe_help(problem.help));
            }
        }
    }
    if plan.scheduler.is_some() {
        let all: Vec<Arc<Store>> = stores.values().cloned().collect();
        for problem in cluster_problems(&all) {
            diags.push(p.diag_key("engine", &ypath!["engine", "ballista", "scheduler"], problem));
        }
    }
    EnginePlan::Ballista(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_urls() {
        assert_eq!(scheduler_url("df://localhost").unwrap(), "df://localhost:50050");
        assert_eq!(scheduler_url("df://10.0.0.5:6000").unwrap(), "df://10.0.0.5:6000");
        assert!(scheduler_url("http://localhost:50050").unwrap_err().contains("df://"));
        assert!(scheduler_url("localhost:50050").is_err());
        assert!(scheduler_url("df://host:1/path").is_err());
    }

    #[test]
    fn overrides() {
        let local = EnginePlan::Local;
        assert!(matches!(local.with_override("local", &[]).unwrap(), EnginePlan::Local));
        let EnginePlan::Ballista(b) = local.with_override("ballista", &[]).unwrap() else { panic!() };
        assert!(b.scheduler.is_none());
        let EnginePlan::Ballista(b) = local.with_override("df://h:7", &[]).unwrap() else { panic!() };
        assert_eq!(b.scheduler.as_deref(), Some("df://h:7"));
        let remote = EnginePlan::Ballista(b);
        let EnginePlan::Ballista(b) = remote.with_override("standalone", &[]).unwrap() else { panic!() };
        assert!(b.scheduler.is_none());
        assert!(local.with_override("sparky", &[]).is_err());
    }

    #[test]
    fn s3_settings_from_store_options() {
        let opts = vec![
            ("endpoint".to_string(), "http://127.0.0.1:9000".to_string()),
            ("aws_access_key_id".to_string(), "AK".to_string()),
            ("secret_access_key".to_string(), "SK".to_string()),
            ("allow_http".to_string(), "true".to_string()),
            ("max_retries".to_string(), "3".to_string()),
        ];
        let s = Store::new("lake", "s3://bucket/x", &opts, std::path::Path::new("/")).unwrap();
        let got = s3_settings(&s);
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["access_key_id", "allow_http", "endpoint", "secret_access_key"]);
        let other = Store::new("raw", "s3://other/y", &opts[..1], std::path::Path::new("/")).unwrap();
        let problems = cluster_problems(&[Arc::new(s), Arc::new(other)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let gcs = Store::new("g", "gs://b/p", &[], std::path::Path::new("/")).unwrap();
        assert!(cluster_problems(&[Arc::new(gcs)])[0].contains("stock Ballista executors"));
    }
}
