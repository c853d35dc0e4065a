//! Pipelines on Azure Blob Storage, against Azurite (the Azure Storage emulator from npm),
//! when `.ci/run` could install it (`WEIR_TEST_AZURITE`: its `azurite-blob` executable).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::TryStreamExt;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::common::*;

/// Azurite's well-known account key, passed to weir through `${env:WEIR_AZ_KEY}`.
const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

struct Azurite {
    port: u16,
    _child: Child,
}

fn azurite() -> Option<&'static Azurite> {
    static AZURITE: OnceLock<Option<Azurite>> = OnceLock::new();
    AZURITE
        .get_or_init(|| {
            let Some(exe) = std::env::var_os("WEIR_TEST_AZURITE").filter(|v| !v.is_empty()) else {
                eprintln!("skipping: WEIR_TEST_AZURITE is not set (.ci/run sets it when npm can install Azurite)");
                return None;
            };
            let python = test_python()?;
            let mut child = Command::new(&python)
                .arg(repo().join("tests/support/azurite.py"))
                .arg(&exe)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            let port = line
                .trim()
                .strip_prefix("port ")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("Azurite did not start: {line:?}"));
            Some(Azurite { port, _child: child })
        })
        .as_ref()
}

/// A project on its own prefix of the `weir` container.
struct AzProject {
    p: Project,
    prefix: String,
    endpoint: String,
}

impl AzProject {
    fn new(tasks: &str) -> Option<AzProject> {
        static N: AtomicU32 = AtomicU32::new(0);
        let a = azurite()?;
        let prefix = format!("t{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let endpoint = format!("http://127.0.0.1:{}/devstoreaccount1", a.port);
        let store = |sub: &str| {
            format!(
                "{{ url: \"az://weir/{prefix}/{sub}\", options: {{ account_name: devstoreaccount1, access_key: \"${{env:WEIR_AZ_KEY}}\", endpoint: \"{endpoint}\", allow_http: true }} }}"
            )
        };
        let p = Project::new();
        p.write(
            "p.yaml",
            format!("pipeline: az\nstores:\n  raw: {}\n  lake: {}\ntasks:\n{tasks}", store("raw"), store("lake")),
        );
        Some(AzProject { p, prefix, endpoint })
    }

    fn client(&self) -> MicrosoftAzure {
        MicrosoftAzureBuilder::new()
            .with_account("devstoreaccount1")
            .with_access_key(KEY)
            .with_container_name("weir")
            .with_endpoint(self.endpoint.clone())
            .with_allow_http(true)
            .build()
            .unwrap()
    }

    fn weir_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = vec![("WEIR_AZ_KEY", KEY)];
        all.extend_from_slice(env);
        self.p.weir_env(args, &all)
    }

    fn deliver(&self, name: &str, ids: std::ops::Range<u32>, version: u32) {
        let s = delivery_csv(ids, version);
        let key = ObjectPath::from(format!("{}/raw/{name}", self.prefix).as_str());
        block_on(self.client().put(&key, s.into_bytes().into())).unwrap();
    }

    fn keys(&self, sub: &str) -> Vec<String> {
        let c = self.client();
        let prefix = ObjectPath::from(format!("{}/{sub}", self.prefix).as_str());
        let mut keys: Vec<String> =
            block_on(async { c.list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect::<Vec<_>>().await })
                .unwrap();
        keys.sort();
        keys
    }

    /// `lake/{dir}`, downloaded.
    fn output(&self, dir: &str) -> PathBuf {
        let to = self.p.join(&format!("pulled/{dir}"));
        let _ = std::fs::remove_dir_all(&to);
        let c = self.client();
        let base = format!("{}/lake/{dir}", self.prefix);
        for key in self.keys(&format!("lake/{dir}")) {
            let dst = to.join(key.strip_prefix(&base).unwrap().trim_start_matches('/'));
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            let bytes = block_on(async { c.get(&ObjectPath::from(key.as_str())).await?.bytes().await }).unwrap();
            std::fs::write(dst, bytes).unwrap();
        }
        to
    }
}

fn by_id(dir: &Path, delta: bool) -> BTreeMap<u32, Vec<u32>> {
    versions_by_id(if delta { read_delta_rows(dir) } else { read_rows(dir) })
}

/// Append, merge and Delta on Azure, fed incrementally, killed between the first published
/// file and the commit record once: every row once, as on local disk and S3.
#[test]
fn pipelines_on_azure_through_azurite() {
    let tasks = "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  app:\n    load: { from: src, store: lake, path: app/, mode: append }\n  mrg:\n    load: { from: src, store: lake, path: mrg/, mode: merge, keys: [id], partition_by: [region] }\n  dlt:\n    load: { from: src, store: lake, path: dlt/, mode: merge, keys: [id], format: delta }\n";
    let Some(a) = AzProject::new(tasks) else { return };
    a.deliver("d1.csv", 0..100, 1);
    a.weir_env(&["run", "p.yaml"], &[]).ok();
    a.deliver("d2.csv", 60..160, 2);
    let r = a.weir_env(&["run", "p.yaml"], &[("WEIR_FAILPOINT", "mid_publish@app=kill")]);
    assert_ne!(r.code, 0);
    a.weir_env(&["run", "p.yaml"], &[]).ok();

    let app = by_id(&a.output("app"), false);
    assert_eq!(app.len(), 160);
    assert!((60..100).all(|i| app[&i] == vec![1, 2]), "{app:?}");
    assert!(app.iter().all(|(i, v)| (60..100).contains(i) || v.len() == 1), "{app:?}");
    for (dir, delta) in [("mrg", false), ("dlt", true)] {
        let m = by_id(&a.output(dir), delta);
        assert_eq!(m.len(), 160, "{dir}");
        assert!(m.iter().all(|(i, v)| *v == vec![if *i < 60 { 1 } else { 2 }]), "{dir}: {m:?}");
    }
    // nothing of staging or of the killed publish is left
    let keys = a.keys("lake");
    assert!(keys.iter().all(|k| !k.contains(".weir-staging-")), "{keys:?}");
    let r = a.weir_env(&["run", "p.yaml"], &[]);
    r.ok();
    assert!(status_of(&r.stdout, "app").contains("up to date"), "{}", r.stdout);
}
