//! `openlineage`: where the pipeline's OpenLineage events go (the events themselves are built
//! and sent by `crate::openlineage`, from the plan and the run's reports).

use std::path::PathBuf;
use std::time::Duration;

use crate::diag::Diagnostic;
use crate::spec::{LoadedPipeline, parse_duration};
use crate::ypath;

/// The namespace of jobs (and of the tables between tasks) when none is set.
pub const DEFAULT_NAMESPACE: &str = "weir";
/// The path under the URL events are POSTed to when none is set (Marquez's).
pub const DEFAULT_ENDPOINT: &str = "api/v1/lineage";
/// How long one HTTP request may take when no `timeout` is set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The compiled `openlineage` key, or the flags' and environment's settings. `api_key` is a
/// secret (registered with the pipeline's secrets).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenLineagePlan {
    /// The full URL events are POSTed to (`url` joined with `endpoint`).
    pub url: Option<String>,
    pub api_key: Option<String>,
    /// The NDJSON file, absolute or relative to the working directory.
    pub file: Option<PathBuf>,
    pub namespace: String,
    pub timeout: Duration,
}

impl OpenLineagePlan {
    /// Whether events go anywhere.
    pub fn enabled(&self) -> bool {
        self.url.is_some() || self.file.is_some()
    }
}

/// `url` joined with `endpoint` (`api/v1/lineage` when `None`); `Err` when `url` is not an
/// http(s) URL.
pub fn endpoint_url(url: &str, endpoint: Option<&str>) -> Result<String, String> {
    // The URL is not quoted: it may carry a token.
    let u = url::Url::parse(url.trim()).map_err(|e| format!("the URL is not valid: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("the URL is not an http:// or https:// URL".to_string());
    }
    let endpoint = endpoint.unwrap_or(DEFAULT_ENDPOINT).trim().trim_start_matches('/');
    let base = u.as_str().trim_end_matches('/');
    Ok(if endpoint.is_empty() { base.to_string() } else { format!("{base}/{endpoint}") })
}

/// Compile `openlineage`, pushing a located diagnostic per mistake.
pub(crate) fn compile(p: &LoadedPipeline, diags: &mut Vec<Diagnostic>) -> Option<OpenLineagePlan> {
    let o = p.spec.openlineage.as_ref()?;
    if let Some(k) = &o.api_key {
        crate::spec::add_secret(&p.secrets, k);
    }
    let mut plan = OpenLineagePlan {
        url: None,
        api_key: o.api_key.clone().filter(|k| !k.trim().is_empty()),
        file: o.file.as_ref().filter(|f| !f.trim().is_empty()).map(|f| p.dir.join(f.trim())),
        namespace: o.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        timeout: o.timeout.as_ref().and_then(|d| parse_duration(d).ok()).unwrap_or(DEFAULT_TIMEOUT),
    };
    if let Some(url) = o.url.as_ref().filter(|u| !u.trim().is_empty()) {
        match endpoint_url(url, o.endpoint.as_deref()) {
            Ok(u) => plan.url = Some(u),
            Err(e) => diags.push(
                p.diag_value("openlineage-url", &ypath!["openlineage", "url"], url.len(), e)
                    .help("the consumer's base URL, e.g. `http://127.0.0.1:5000` for Marquez"),
            ),
        }
    }
    if plan.namespace.trim().is_empty() {
        diags.push(p.diag_key("openlineage-namespace", &ypath!["openlineage", "namespace"], "`namespace` is empty"));
    }
    if !plan.enabled() && o.url.is_none() {
        diags.push(
            p.diag_key("openlineage-transport", &ypath!["openlineage"], "`openlineage` sends events nowhere")
                .help("set `url` (an OpenLineage HTTP endpoint such as Marquez) or `file` (NDJSON), or both"),
        );
    }
    Some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_joins_the_url_and_its_path() {
        assert_eq!(endpoint_url("http://127.0.0.1:5000", None).unwrap(), "http://127.0.0.1:5000/api/v1/lineage");
        assert_eq!(endpoint_url("http://h:1/base/", Some("/events")).unwrap(), "http://h:1/base/events");
        assert_eq!(endpoint_url("https://h/x", Some("")).unwrap(), "https://h/x");
        assert!(endpoint_url("ftp://h", None).unwrap_err().contains("not an http"));
        assert!(endpoint_url("not a url", None).is_err());
    }
}
