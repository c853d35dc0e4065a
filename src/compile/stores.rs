//! Stores: each `stores:` entry resolved to a `storage::Store` (URL, options, credentials),
//! with the options each kind of store knows.

use super::*;

impl Compiler<'_> {
    pub(super) fn stores(&mut self) -> indexmap::IndexMap<String, Arc<Store>> {
        let p = self.p;
        let mut out: indexmap::IndexMap<String, Arc<Store>> = indexmap::IndexMap::new();
        for (name, s) in &p.spec.stores {
            let options: Vec<(String, String)> = s.options.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            for (k, v) in &options {
                if crate::storage::is_credential(k) {
                    crate::spec::add_secret(&p.secrets, v);
                }
            }
            if crate::source::http::is_http_url(&s.url) {
                self.http_store(name, &s.url, &options);
                continue;
            }
            if let Some(kind) = crate::source::database::DbKind::of_url(&s.url) {
                self.database_store(kind, name, &s.url, &options);
                continue;
            }
            match Store::new(name, &s.url, &options, &p.dir) {
                Ok(store) => {
                    if let Some(other) = out.values().find(|o| o.conflicts_with(&store)) {
                        self.diags.push(
                            p.diag_key(
                                "store",
                                &ypath!["stores", name],
                                format!(
                                    "stores `{}` and `{name}` use the same bucket with different options",
                                    other.name
                                ),
                            )
                            .help("use one store for the bucket, with one set of options"),
                        );
                    }
                    out.insert(name.clone(), Arc::new(store));
                }
                Err(StorageError::OptionValue { key, reason }) => {
                    self.diags.push(p.diag_key(
                        "store-option",
                        &ypath!["stores", name, "options", &key],
                        format!("option `{key}` {reason}"),
                    ));
                }
                Err(StorageError::Option { key, kind }) => {
                    let known: Vec<&str> =
                        known_options(kind).iter().chain(crate::storage::RETRY_OPTIONS).copied().collect();
                    self.diags.push(
                        p.diag_key(
                            "store-option",
                            &ypath!["stores", name, "options", &key],
                            format!("unknown option `{key}` for a {kind} store"),
                        )
                        .maybe_help(did_you_mean(&key, known.iter().copied())),
                    );
                }
                Err(e) => {
                    let d = p.diag_value(
                        "store",
                        &ypath!["stores", name, "url"],
                        s.url.len(),
                        p.secrets.redact(&e.to_string()),
                    );
                    let d = match e {
                        StorageError::Scheme { .. } => {
                            d.help("supported: file://, s3://, gs://, az://, abfss://, memory://")
                        }
                        _ => d,
                    };
                    self.diags.push(d);
                }
            }
        }
        out
    }

    /// A database store (`postgres://`, `mysql://`).
    fn database_store(
        &mut self,
        kind: crate::source::database::DbKind,
        name: &str,
        url: &str,
        options: &[(String, String)],
    ) {
        use crate::source::database::{DbError, DbStore};
        use crate::source::mysql::MyError;
        use crate::source::postgres::PgError;
        let (options_known, server) = (kind.options(), kind.server_name());
        let p = self.p;
        // The URL's own password is a secret too.
        if let Ok(u) = url::Url::parse(url)
            && let Some(pw) = u.password()
        {
            crate::spec::add_secret(&p.secrets, pw);
            if let Ok(decoded) = percent_encoding::percent_decode_str(pw).decode_utf8() {
                crate::spec::add_secret(&p.secrets, &decoded);
            }
        }
        match DbStore::new(kind, name, url, options) {
            Ok(s) => {
                self.databases.insert(name.to_string(), s);
            }
            Err(DbError::Postgres(PgError::UnknownOption(key)) | DbError::Mysql(MyError::UnknownOption(key))) => self.diags.push(
                p.diag_key(
                    "store-option",
                    &ypath!["stores", name, "options", &key],
                    format!("unknown option `{key}` for a {server} store"),
                )
                .maybe_help(did_you_mean(&key, options_known.iter().copied()).or_else(|| Some(format!("known: {}", options_known.join(", "))))),
            ),
            Err(
                DbError::Postgres(PgError::Option { key, reason }) | DbError::Mysql(MyError::Option { key, reason }),
            ) => self.diags.push(p.diag_key(
                "store-option",
                &ypath!["stores", name, "options", &key],
                format!("option `{key}` {reason}"),
            )),
            Err(e) => self.diags.push(
                p.diag_value("store", &ypath!["stores", name, "url"], url.len(), p.secrets.redact(&e.to_string()))
                    .help(format!("write {}://user@host:port/database, with the password in `options: {{ password: \"${{env:…}}\" }}`", kind.id())),
            ),
        }
    }

    pub(super) fn unknown_store(&self, task: &str, section: &str, store: &str) -> Diagnostic {
        let path = ypath!["tasks", task, section, "store"];
        let known: Vec<&str> = self.p.spec.stores.keys().map(String::as_str).collect();
        let help = did_you_mean(store, known.iter().copied()).unwrap_or_else(|| {
            if known.is_empty() {
                "define it under `stores:` (no stores are defined)".to_string()
            } else {
                format!("define it under `stores:`; defined: {}", known.join(", "))
            }
        });
        self.p.diag_value("unknown-store", &path, store.len(), format!("unknown store `{store}`")).help(help)
    }
}

/// A directory inside a store (a load's output, a quarantine), normalized: no leading or
/// trailing `/`, no `.` or `..` segments, no glob characters. `None` when it is not one.
pub(super) fn store_dir(raw: &str) -> Option<String> {
    let rel = raw.trim().trim_matches('/').trim_start_matches("./").to_string();
    let bad = rel.is_empty() || rel.split('/').any(|s| s == ".." || s == ".") || rel.contains(['*', '?', '[', '{']);
    (!bad).then_some(rel)
}

pub(super) fn known_options(kind: &str) -> &'static [&'static str] {
    match kind {
        "S3" => &[
            "access_key_id",
            "secret_access_key",
            "session_token",
            "region",
            "endpoint",
            "bucket",
            "virtual_hosted_style_request",
            "allow_http",
            "skip_signature",
            "unsigned_payload",
            "checksum_algorithm",
            "conditional_put",
            "imdsv1_fallback",
            "default_region",
            "s3_express",
            "request_payer",
            "timeout",
            "connect_timeout",
            "proxy_url",
        ],
        "GCS" => &[
            "service_account_path",
            "service_account_key",
            "application_credentials",
            "bucket",
            "timeout",
            "proxy_url",
        ],
        "Azure" => &[
            "account_name",
            "access_key",
            "client_id",
            "client_secret",
            "tenant_id",
            "sas_token",
            "token",
            "use_emulator",
            "endpoint",
            "use_fabric_endpoint",
            "container_name",
            "timeout",
            "proxy_url",
        ],
        _ => &[],
    }
}
