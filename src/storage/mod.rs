//! Named stores: a URL (`file://`, `s3://`, `gs://`, `az://`, `memory://`) and options
//! turned into an `Arc<dyn ObjectStore>`, plus glob listing under a store.
//!
//! Building a store does no I/O. Listing does one LIST under the glob's literal prefix.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use datafusion::execution::object_store::ObjectStoreUrl;
use futures::TryStreamExt;
use globset::{GlobBuilder, GlobMatcher};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

pub mod counted;
pub use counted::STORE_REQUESTS_TOTAL;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unsupported store URL scheme `{scheme}`")]
    Scheme { scheme: String },
    #[error("invalid store URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("unknown option `{key}` for a {kind} store")]
    Option { key: String, kind: &'static str },
    #[error("option `{key}`: {reason}")]
    OptionValue { key: String, reason: String },
    #[error("cannot build the {kind} store: {source}")]
    Build { kind: &'static str, source: object_store::Error },
    #[error("invalid glob `{pattern}`: {reason}")]
    Glob { pattern: String, reason: String },
    #[error("listing {} in store `{store}`: {source}", if prefix.is_empty() { "the root".to_string() } else { format!("`{prefix}`") })]
    List { store: String, prefix: String, source: object_store::Error },
}

/// Requests that fail transiently (connection errors, 5xx, throttling) are retried with
/// exponential backoff up to this many times …
pub const DEFAULT_MAX_RETRIES: usize = 5;
/// … and for at most this long from the first attempt (object_store's own default is 10
/// retries over 3 minutes: too long for a mistyped endpoint to be reported).
pub const DEFAULT_RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Options weir reads itself rather than passing them to the object store builder.
pub const RETRY_OPTIONS: &[&str] = &["max_retries", "retry_timeout"];

/// The retry settings in `options` (`max_retries`, `retry_timeout`), and the other options.
fn retry_config(
    options: &[(String, String)],
) -> Result<(object_store::RetryConfig, Vec<(String, String)>), StorageError> {
    let mut retry = object_store::RetryConfig {
        max_retries: DEFAULT_MAX_RETRIES,
        retry_timeout: DEFAULT_RETRY_TIMEOUT,
        ..Default::default()
    };
    let mut rest = Vec::new();
    for (k, v) in options {
        let bad = |reason: &str| StorageError::OptionValue { key: k.clone(), reason: reason.to_string() };
        match k.as_str() {
            "max_retries" => retry.max_retries = v.trim().parse().map_err(|_| bad("must be a whole number"))?,
            "retry_timeout" => {
                retry.retry_timeout =
                    humantime::parse_duration(v.trim()).map_err(|_| bad("must be a duration like `30s` or `2m`"))?
            }
            _ => rest.push((k.clone(), v.clone())),
        }
    }
    Ok((retry, rest))
}

/// Whether a store option holds a credential (its value is redacted wherever it could show).
pub fn is_credential(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "token", "password", "sas", "access_key", "account_key", "service_account_key", "client_id"]
        .iter()
        .any(|w| k.contains(w))
        && !k.ends_with("_url")
        || k == "api_key"
}

/// What kind of backend a store is; decides the publish protocol of loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A local directory (absolute path).
    Local(PathBuf),
    S3,
    Gcs,
    Azure,
    Memory,
}

/// A named, resolved store.
#[derive(Debug)]
pub struct Store {
    pub name: String,
    /// The URL as shown to users (`file:///abs/dir`, `s3://bucket/prefix`).
    pub display_url: String,
    pub backend: Backend,
    /// What DataFusion's object store registry knows this store by (`s3://bucket`).
    pub object_store_url: ObjectStoreUrl,
    /// The store's root inside the object store (`prefix`, or the absolute local path).
    pub root: ObjectPath,
    pub object_store: Arc<dyn ObjectStore>,
    /// Options, for telling apart two stores on the same bucket.
    options: Vec<(String, String)>,
}

static MEMORY_STORES: LazyLock<Mutex<HashMap<String, Arc<InMemory>>>> = LazyLock::new(Default::default);

impl Store {
    /// Resolve `url` (relative `file://` paths against `base_dir`) with `options`. The object
    /// store counts the calls made through it (`counted`).
    pub fn new(name: &str, url: &str, options: &[(String, String)], base_dir: &Path) -> Result<Store, StorageError> {
        let mut store = Self::build(name, url, options, base_dir)?;
        store.object_store = Arc::new(counted::Counted { inner: store.object_store, store: name.to_string() });
        Ok(store)
    }

    fn build(name: &str, url: &str, options: &[(String, String)], base_dir: &Path) -> Result<Store, StorageError> {
        let url = url.trim();
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("file".to_string(), url),
        };
        let bad = |reason: &str| StorageError::Url { url: url.to_string(), reason: reason.to_string() };
        match scheme.as_str() {
            "file" => {
                if let Some((k, _)) = options.first() {
                    return Err(StorageError::Option { key: k.clone(), kind: "local file" });
                }
                let p = Path::new(rest);
                let abs = if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) };
                let abs = std::path::absolute(&abs).map_err(|e| bad(&e.to_string()))?;
                let abs = normalize(&abs);
                let root = ObjectPath::from_absolute_path(&abs).map_err(|e| bad(&e.to_string()))?;
                Ok(Store {
                    name: name.to_string(),
                    display_url: format!("file://{}", abs.display()),
                    backend: Backend::Local(abs),
                    object_store_url: ObjectStoreUrl::local_filesystem(),
                    root,
                    object_store: Arc::new(object_store::local::LocalFileSystem::new()),
                    options: Vec::new(),
                })
            }
            "memory" => {
                let key = rest.split('/').next().unwrap_or("").to_string();
                let prefix = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
                let store =
                    MEMORY_STORES.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default().clone();
                let osu = ObjectStoreUrl::parse(format!("memory://{key}")).map_err(|e| bad(&e.to_string()))?;
                Ok(Store {
                    name: name.to_string(),
                    display_url: url.to_string(),
                    backend: Backend::Memory,
                    object_store_url: osu,
                    root: ObjectPath::from(prefix),
                    object_store: store,
                    options: options.to_vec(),
                })
            }
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "adl" => {
                let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
                let (retry, options) = retry_config(options)?;
                let options = options.as_slice();
                let host =
                    parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("missing bucket or container"))?;
                let (backend, kind, store): (Backend, &'static str, Arc<dyn ObjectStore>) = match scheme.as_str() {
                    "s3" | "s3a" => {
                        let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url).with_retry(retry);
                        for (k, v) in options {
                            let key = k.parse().map_err(|_| StorageError::Option { key: k.clone(), kind: "S3" })?;
                            b = b.with_config(key, v);
                        }
                        let s = b.build().map_err(|e| StorageError::Build { kind: "S3", source: e })?;
                        (Backend::S3, "S3", Arc::new(s))
                    }
                    "gs" => {
                        let mut b =
                            object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(url).with_retry(retry);
                        for (k, v) in options {
                            let key = k.parse().map_err(|_| StorageError::Option { key: k.clone(), kind: "GCS" })?;
                            b = b.with_config(key, v);
                        }
                        let s = b.build().map_err(|e| StorageError::Build { kind: "GCS", source: e })?;
                        (Backend::Gcs, "GCS", Arc::new(s))
                    }
                    _ => {
                        let mut b =
                            object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url).with_retry(retry);
                        for (k, v) in options {
                            let key = k.parse().map_err(|_| StorageError::Option { key: k.clone(), kind: "Azure" })?;
                            b = b.with_config(key, v);
                        }
                        let s = b.build().map_err(|e| StorageError::Build { kind: "Azure", source: e })?;
                        (Backend::Azure, "Azure", Arc::new(s))
                    }
                };
                let _ = kind;
                // abfss://container@account.dfs.core.windows.net/path: the container is the user part.
                let authority = match parsed.username() {
                    "" => host.to_string(),
                    user => format!("{user}@{host}"),
                };
                let osu = ObjectStoreUrl::parse(format!("{}://{authority}", parsed.scheme()))
                    .map_err(|e| bad(&e.to_string()))?;
                let prefix = parsed.path().trim_matches('/');
                Ok(Store {
                    name: name.to_string(),
                    display_url: url.to_string(),
                    backend,
                    object_store_url: osu,
                    root: ObjectPath::from(prefix),
                    object_store: store,
                    options: options.to_vec(),
                })
            }
            other => Err(StorageError::Scheme { scheme: other.to_string() }),
        }
    }

    /// The store's client options (credentials included: secrets, never show them).
    pub fn options(&self) -> &[(String, String)] {
        &self.options
    }

    /// Whether two stores can share DataFusion's registration of the same URL.
    pub fn conflicts_with(&self, other: &Store) -> bool {
        self.object_store_url == other.object_store_url
            && self.backend != Backend::Memory
            && !matches!(self.backend, Backend::Local(_))
            && self.options != other.options
    }

    /// The path of `location` relative to the store's root (as messages name a file).
    pub fn relative(&self, location: &ObjectPath) -> String {
        location
            .prefix_match(&self.root)
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
            .unwrap_or_else(|| location.to_string())
    }

    /// The object path of `rel` (relative to the store's root). `rel` holds names as they are
    /// stored (a listed file's path parts, a Hive directory `region=a%3Db`): they are kept as
    /// they are, not escaped again; only a part an object path cannot hold is escaped.
    pub fn path(&self, rel: &str) -> ObjectPath {
        let mut p = self.root.clone();
        for part in rel.split('/').filter(|s| !s.is_empty() && *s != ".") {
            p = p.join(object_store::path::PathPart::parse(part).unwrap_or_else(|_| part.into()));
        }
        p
    }

    /// A URL DataFusion can read or write (`file:///abs/dir/`, `s3://bucket/prefix/dir/`).
    /// Each part of `path` is percent-encoded as a URL path segment: DataFusion decodes the
    /// URL's path back into an object path, so a part holding `%`, `#` or `?` (a Hive
    /// directory `region=100%25`) names that same object, not another one.
    pub fn url_of(&self, path: &ObjectPath, dir: bool) -> String {
        let mut url: url::Url = AsRef::<url::Url>::as_ref(&self.object_store_url).clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path.parts());
            if dir {
                segments.push("");
            }
        }
        url.to_string()
    }

    /// The local directory of `rel`, for local stores.
    pub fn local_path(&self, rel: &str) -> Option<PathBuf> {
        match &self.backend {
            Backend::Local(root) => {
                let mut p = root.clone();
                for part in rel.split('/').filter(|s| !s.is_empty() && *s != ".") {
                    p.push(part);
                }
                Some(p)
            }
            _ => None,
        }
    }

    /// Every object matching `glob`, sorted by path. Lists only under the glob's literal prefix.
    pub async fn list(&self, glob: &FileGlob) -> Result<Vec<ObjectMeta>, StorageError> {
        let prefix = self.path(&glob.prefix);
        let err = |e| StorageError::List { store: self.name.clone(), prefix: glob.prefix.clone(), source: e };
        let mut out: Vec<ObjectMeta> = Vec::new();
        if glob.matcher.is_none() && !glob.prefix.ends_with('/') && !glob.prefix.is_empty() {
            // A plain path: the object itself, if it exists, else a directory.
            match self.object_store.head(&prefix).await {
                Ok(meta) => return Ok(vec![meta]),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(err(e)),
            }
        }
        let mut stream = self.object_store.list(Some(&prefix));
        let root_parts = self.root.parts().count();
        while let Some(meta) = stream.try_next().await.map_err(err)? {
            let rel: Vec<String> = meta.location.parts().skip(root_parts).map(|p| p.as_ref().to_string()).collect();
            if rel.iter().any(|p| p.starts_with('.') || p.starts_with('_')) {
                continue; // hidden files, _SUCCESS markers, in-progress writes
            }
            let rel = rel.join("/");
            if let Some(m) = &glob.matcher
                && !m.is_match(&rel)
            {
                continue;
            }
            out.push(meta);
        }
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }
}

/// A path or glob relative to a store's root, split at its first glob character.
#[derive(Debug, Clone)]
pub struct FileGlob {
    pub pattern: String,
    /// The literal part before the first glob character (what is listed).
    pub prefix: String,
    pub matcher: Option<GlobMatcher>,
}

impl FileGlob {
    pub fn new(pattern: &str) -> Result<FileGlob, StorageError> {
        let pattern = pattern.trim().trim_start_matches("./").trim_start_matches('/').to_string();
        let first_glob = pattern.find(['*', '?', '[', '{']);
        let Some(at) = first_glob else {
            return Ok(FileGlob { prefix: pattern.clone(), pattern, matcher: None });
        };
        let prefix = match pattern[..at].rfind('/') {
            Some(slash) => pattern[..=slash].to_string(),
            None => String::new(),
        };
        let matcher = GlobBuilder::new(&pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| StorageError::Glob { pattern: pattern.clone(), reason: e.kind().to_string() })?
            .compile_matcher();
        Ok(FileGlob { pattern, prefix, matcher: Some(matcher) })
    }

    pub fn is_glob(&self) -> bool {
        self.matcher.is_some()
    }
}

/// Lexically remove `.` and `..` (the directory may not exist yet).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::PutPayload;

    #[test]
    fn globs_split_at_literal_prefix() {
        let g = FileGlob::new("orders/2024/*.csv").unwrap();
        assert_eq!(g.prefix, "orders/2024/");
        assert!(g.matcher.as_ref().unwrap().is_match("orders/2024/a.csv"));
        assert!(!g.matcher.as_ref().unwrap().is_match("orders/2024/x/a.csv"));
        let g = FileGlob::new("**/*.json").unwrap();
        assert_eq!(g.prefix, "");
        assert!(g.matcher.as_ref().unwrap().is_match("a/b/c.json"));
        let g = FileGlob::new("customers.parquet").unwrap();
        assert!(!g.is_glob());
    }

    #[test]
    fn relative_file_urls_resolve_against_the_pipeline_dir() {
        let s = Store::new("raw", "file://data/../raw", &[], Path::new("/p/pipelines")).unwrap();
        assert_eq!(s.backend, Backend::Local(PathBuf::from("/p/pipelines/raw")));
        assert_eq!(s.url_of(&s.path("a/b.csv"), false), "file:///p/pipelines/raw/a/b.csv");
        assert_eq!(s.url_of(&s.path("a"), true), "file:///p/pipelines/raw/a/");
        // A part's `%`, `#` and `?` are escaped, so that DataFusion's decoding of the URL's path
        // gives back the object path.
        let special = s.path("region=100%25/x#y?z w.parquet");
        let url = s.url_of(&special, false);
        assert_eq!(url, "file:///p/pipelines/raw/region=100%2525/x%23y%3Fz%20w.parquet");
        let parsed = datafusion::datasource::listing::ListingTableUrl::parse(&url).unwrap();
        assert_eq!(parsed.prefix(), &special);
        let s = Store::new("abs", "file:///tmp/x", &[], Path::new("/p")).unwrap();
        assert_eq!(s.backend, Backend::Local(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn cloud_urls_build_clients_without_io() {
        let opts =
            vec![("region".to_string(), "eu-west-1".to_string()), ("allow_http".to_string(), "true".to_string())];
        let s = Store::new("lake", "s3://bucket/marts", &opts, Path::new(".")).unwrap();
        assert_eq!(s.object_store_url.as_str(), "s3://bucket/");
        assert_eq!(s.root.as_ref(), "marts");
        let bad = Store::new("lake", "s3://bucket/marts", &[("regoin".into(), "x".into())], Path::new("."));
        assert!(matches!(bad, Err(StorageError::Option { .. })));
        assert!(matches!(Store::new("x", "ftp://h/p", &[], Path::new(".")), Err(StorageError::Scheme { .. })));
    }

    #[test]
    fn gcs_and_azure_urls_build_clients_without_io() {
        let s = Store::new("g", "gs://bucket/raw/data", &[("service_account_key".into(), "{}".into())], Path::new("."));
        // an invalid key is reported when building, not at first use
        assert!(matches!(s, Err(StorageError::Build { kind: "GCS", .. })), "{s:?}");
        let s = Store::new("g", "gs://bucket/raw/data", &[], Path::new(".")).unwrap();
        assert_eq!(s.backend, Backend::Gcs);
        assert_eq!((s.object_store_url.as_str(), s.root.as_ref()), ("gs://bucket/", "raw/data"));

        let opts =
            vec![("account_name".to_string(), "acct".to_string()), ("access_key".to_string(), "a2V5".to_string())];
        let s = Store::new("a", "az://container/marts", &opts, Path::new(".")).unwrap();
        assert_eq!(s.backend, Backend::Azure);
        assert_eq!((s.object_store_url.as_str(), s.root.as_ref()), ("az://container/", "marts"));
        let s = Store::new("a", "abfss://container@acct.dfs.core.windows.net/lake", &opts, Path::new(".")).unwrap();
        assert_eq!(s.object_store_url.as_str(), "abfss://container@acct.dfs.core.windows.net/");
        assert_eq!(s.root.as_ref(), "lake");
        let bad = Store::new("a", "az://container/x", &[("acount_name".into(), "x".into())], Path::new("."));
        assert!(matches!(bad, Err(StorageError::Option { kind: "Azure", .. })));
    }

    #[tokio::test]
    async fn lists_matching_files_only() {
        let s = Store::new("m", "memory://list-test/root", &[], Path::new(".")).unwrap();
        for p in
            ["root/a/1.csv", "root/a/2.csv", "root/a/_SUCCESS", "root/a/sub/3.csv", "root/b/4.csv", "root/a/.5.csv"]
        {
            s.object_store.put(&ObjectPath::from(p), PutPayload::from_static(b"x")).await.unwrap();
        }
        let names = |v: Vec<ObjectMeta>| v.into_iter().map(|m| m.location.to_string()).collect::<Vec<_>>();
        assert_eq!(names(s.list(&FileGlob::new("a/*.csv").unwrap()).await.unwrap()), ["root/a/1.csv", "root/a/2.csv"]);
        assert_eq!(
            names(s.list(&FileGlob::new("a/").unwrap()).await.unwrap()),
            ["root/a/1.csv", "root/a/2.csv", "root/a/sub/3.csv"]
        );
        assert_eq!(names(s.list(&FileGlob::new("b/4.csv").unwrap()).await.unwrap()), ["root/b/4.csv"]);
        assert!(s.list(&FileGlob::new("c/*.csv").unwrap()).await.unwrap().is_empty());
    }
}

/// Whether a DataFusion error may pass if the work is tried again: storage and I/O trouble
/// (not a missing object or a path that cannot be); planning and data errors will not.
pub fn is_transient(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError;
    match e {
        DataFusionError::ObjectStore(os) => {
            !matches!(**os, object_store::Error::NotFound { .. } | object_store::Error::InvalidPath { .. })
        }
        DataFusionError::IoError(io) => {
            !matches!(io.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied)
        }
        DataFusionError::Context(_, inner) => is_transient(inner),
        DataFusionError::Shared(inner) => is_transient(inner),
        DataFusionError::External(inner) => {
            inner
                .downcast_ref::<object_store::Error>()
                .is_some_and(|e| !matches!(e, object_store::Error::NotFound { .. }))
                || inner.downcast_ref::<std::io::Error>().is_some()
        }
        _ => false,
    }
}
