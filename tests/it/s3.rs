//! Pipelines with their inputs and their lake on S3: an S3-compatible server (moto, from
//! `.ci/requirements.txt`) on 127.0.0.1, started once per test process. Outputs are
//! downloaded and read back like the local ones.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::common::*;

/// The secret access key every S3 test passes to weir through `${env:WEIR_S3_SECRET}`: unique,
/// so that a test can grep any output for it.
pub const SECRET: &str = "wEiRcAnArY-7f3a91d2c4b85e60";

struct Server {
    port: u16,
    /// Every request line the server served.
    log: PathBuf,
    // stdin kept open: the server stops when this process exits and the pipe closes
    _child: Child,
}

fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let python = test_python()?;
            let log = std::env::temp_dir().join(format!("weir-s3-requests-{}.log", std::process::id()));
            let mut child = Command::new(&python)
                .arg(repo().join("tests/support/s3_server.py"))
                .arg(&log)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("starting the S3 test server with {python}: {e}"));
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            let port = line.trim().strip_prefix("port ").and_then(|p| p.parse().ok()).unwrap_or_else(|| {
                panic!("the S3 test server did not start (is moto[server] installed in {python}?): {line:?}")
            });
            Some(Server { port, log, _child: child })
        })
        .as_ref()
}

/// A bucket of its own on the test server.
pub struct Bucket {
    pub name: String,
    pub endpoint: String,
}

impl Bucket {
    /// A new bucket, or `None` when the tests run without a Python (outside CI).
    pub fn new() -> Option<Bucket> {
        static N: AtomicU32 = AtomicU32::new(0);
        let s = server()?;
        let name = format!("weir-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let endpoint = format!("http://127.0.0.1:{}", s.port);
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        write!(
            conn,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            s.port
        )
        .unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
            "creating bucket {name}: {reply}"
        );
        Some(Bucket { name, endpoint })
    }

    /// The `stores:` entry of a store on `prefix` of this bucket (the secret from the
    /// environment, as users write it).
    pub fn store(&self, prefix: &str) -> String {
        self.store_at(&self.endpoint, prefix)
    }

    /// Like [`Bucket::store`], through another endpoint (a proxy).
    pub fn store_at(&self, endpoint: &str, prefix: &str) -> String {
        format!(
            "{{ url: \"s3://{}/{prefix}\", options: {{ endpoint: \"{endpoint}\", allow_http: true, region: us-east-1, access_key_id: weir-test, secret_access_key: \"${{env:WEIR_S3_SECRET}}\" }} }}",
            self.name
        )
    }

    fn client(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(&self.name)
            .with_region("us-east-1")
            .with_access_key_id("weir-test")
            .with_secret_access_key(SECRET)
            .build()
            .unwrap()
    }

    /// The request lines the server has served for this bucket so far (`GET
    /// /bucket?list-type=2&prefix=raw%2F… HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&server().unwrap().log).unwrap_or_default();
        let me = format!("/{}", self.name);
        log.lines()
            .filter_map(|l| {
                let start = l.find('"')? + 1;
                let req = &l[start..start + l[start..].find('"')?];
                let path = req.split(' ').nth(1)?;
                (path == me || path.starts_with(&format!("{me}/")) || path.starts_with(&format!("{me}?")))
                    .then(|| req.to_string())
            })
            .collect()
    }

    /// Upload one local file to `key`.
    pub fn put_file(&self, file: &Path, key: &str) {
        let bytes = std::fs::read(file).unwrap();
        block_on(self.client().put(&ObjectPath::from(key), bytes.into())).unwrap();
    }

    /// Upload every file under `dir` to `prefix/…`.
    pub fn put_dir(&self, dir: &Path, prefix: &str) {
        for f in files_under(dir) {
            let rel = f.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
            self.put_file(&f, &format!("{prefix}/{rel}"));
        }
    }

    /// The keys under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let c = self.client();
        let mut keys: Vec<String> = block_on(async {
            c.list(Some(&ObjectPath::from(prefix))).map_ok(|m| m.location.to_string()).try_collect::<Vec<_>>().await
        })
        .unwrap();
        keys.sort();
        keys
    }

    /// Download everything under `prefix` into a fresh local directory `to`.
    pub fn get_dir(&self, prefix: &str, to: &Path) -> PathBuf {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).unwrap();
        let c = self.client();
        for key in self.keys(prefix) {
            let rel = key.strip_prefix(prefix).unwrap().trim_start_matches('/');
            let dst = to.join(rel);
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            let bytes =
                block_on(async { c.get(&ObjectPath::parse(key.as_str()).unwrap()).await?.bytes().await }).unwrap();
            std::fs::write(dst, bytes).unwrap();
        }
        to.to_path_buf()
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A project whose pipeline `p.yaml` reads `raw` and writes `lake` on a bucket.
struct S3Project {
    p: Project,
    b: Bucket,
}

impl S3Project {
    fn new(tasks: &str) -> Option<S3Project> {
        let b = Bucket::new()?;
        let p = Project::new();
        p.write(
            "p.yaml",
            format!("pipeline: s3\nstores:\n  raw: {}\n  lake: {}\ntasks:\n{tasks}", b.store("raw"), b.store("lake")),
        );
        Some(S3Project { p, b })
    }

    fn weir(&self, args: &[&str]) -> Run {
        self.p.weir_env(args, &[("WEIR_S3_SECRET", SECRET)])
    }

    fn weir_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = vec![("WEIR_S3_SECRET", SECRET)];
        all.extend_from_slice(env);
        self.p.weir_env(args, &all)
    }

    /// Write a CSV delivery of `ids` (each with `version`) and upload it as `raw/{name}`.
    fn deliver(&self, name: &str, ids: std::ops::Range<u32>, version: u32) {
        let s = delivery_csv(ids, version);
        let f = self.p.write(&format!("raw/{name}"), s);
        self.b.put_file(&f, &format!("raw/{name}"));
    }

    /// The output `lake/{dir}`, downloaded.
    fn output(&self, dir: &str) -> PathBuf {
        self.b.get_dir(&format!("lake/{dir}"), &self.p.join(&format!("pulled/{dir}")))
    }

    fn by_id(&self, dir: &str) -> BTreeMap<u32, Vec<u32>> {
        versions_by_id(read_rows(&self.output(dir)))
    }
}

/// The demo pipeline, its inputs and its lake on S3, writes what it writes on local disk.
#[test]
fn demo_on_s3_writes_what_it_writes_on_local_disk() {
    let Some(b) = Bucket::new() else { return };
    let p = Project::new();
    p.copy_from_repo("pipelines", "pipelines");
    p.copy_from_repo("examples/shop/data", "examples/shop/data");
    p.weir(&["run", "pipelines/"]).ok();

    b.put_dir(&p.join("examples/shop/data"), "data");
    let yaml = std::fs::read_to_string(p.join("pipelines/daily_orders.yaml")).unwrap();
    let s3 = yaml
        .replace("raw: { url: \"file://${data}\" }", &format!("raw: {}", b.store("data")))
        .replace("lake: { url: \"file://${lake}\" }", &format!("lake: {}", b.store("lake")));
    assert_ne!(s3, yaml, "the demo's stores moved: update this test");
    p.write("s3/daily_orders.yaml", s3);
    let r = p.weir_env(&["run", "s3/"], &[("WEIR_S3_SECRET", SECRET)]);
    r.ok();

    let marts: Vec<String> = std::fs::read_dir(p.join("lake/marts"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(marts.len() >= 3, "{marts:?}");
    for mart in marts {
        let mut local = read_rows(&p.join(&format!("lake/marts/{mart}")));
        let mut remote = read_rows(&b.get_dir(&format!("lake/marts/{mart}"), &p.join(&format!("pulled/{mart}"))));
        local.sort();
        remote.sort();
        assert!(!local.is_empty(), "{mart}");
        assert_eq!(local, remote, "{mart} differs between local disk and S3");
    }
    // published files carry their commit; nothing of staging is left
    let keys = b.keys("lake");
    assert!(keys.iter().all(|k| !k.contains(".weir-staging-")), "{keys:?}");
    assert!(
        keys.iter().filter(|k| k.ends_with(".parquet")).all(|k| k
            .rsplit('/')
            .next()
            .unwrap()
            .starts_with("c0000000001-")),
        "{keys:?}"
    );
}

const APPEND: &str = "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: append }\n";

/// Every load mode and both formats on S3, fed incrementally; a second delivery updates
/// some ids. The outputs hold what the modes promise.
#[test]
fn every_mode_and_format_on_s3() {
    let mut tasks = String::from(
        "  src:\n    extract: { store: raw, path: \"in/*.csv\", incremental: { new_files: true } }\n  all:\n    extract: { store: raw, path: \"in/*.csv\" }\n",
    );
    for format in ["parquet", "delta"] {
        for (mode, extra) in [
            ("append", ""),
            ("merge", ", keys: [id]"),
            ("replace_partitions", ", partition_by: [region]"),
            ("overwrite", ""),
        ] {
            tasks.push_str(&format!(
                "  {mode}_{format}:\n    load: {{ from: {}, store: lake, path: {mode}_{format}/, mode: {mode}, format: {format}{extra} }}\n",
                if mode == "overwrite" { "all" } else { "src" }
            ));
        }
    }
    let Some(s) = S3Project::new(&tasks) else { return };
    s.deliver("in/d1.csv", 0..100, 1);
    s.weir(&["run", "p.yaml"]).ok();
    s.deliver("in/d2.csv", 50..120, 2);
    s.weir(&["run", "p.yaml"]).ok();

    let read = |format: &str, dir: &str| -> BTreeMap<u32, Vec<u32>> {
        let local = s.output(dir);
        versions_by_id(if format == "delta" { read_delta_rows(&local) } else { read_rows(&local) })
    };
    for format in ["parquet", "delta"] {
        let append = read(format, &format!("append_{format}"));
        assert_eq!(append.len(), 120, "{format}");
        assert!((50..100).all(|i| append[&i] == vec![1, 2]), "{format} append keeps both versions");
        let merge = read(format, &format!("merge_{format}"));
        assert_eq!(merge.len(), 120, "{format}");
        assert!(merge.iter().all(|(i, v)| *v == vec![if *i < 50 { 1 } else { 2 }]), "{format} merge: {merge:?}");
        // the second delivery holds both regions: both partitions are replaced by it
        let parts = read(format, &format!("replace_partitions_{format}"));
        assert_eq!(parts.keys().copied().collect::<Vec<_>>(), (50..120).collect::<Vec<_>>(), "{format}");
        // overwrite, from every file: the whole table again
        assert_eq!(read(format, &format!("overwrite_{format}")), append, "{format}");
    }
    // a run with nothing new is up to date
    let r = s.weir(&["run", "p.yaml"]);
    r.ok();
    assert!(status_of(&r.stdout, "merge_parquet").contains("up to date"), "{}", r.stdout);
}

/// The new-file ledger goes by ETag: a file uploaded again with the same content is not read
/// again; new content under the same name is a changed file.
#[test]
fn the_ledger_goes_by_etag_on_s3() {
    let Some(s) = S3Project::new(APPEND) else { return };
    s.deliver("d1.csv", 0..10, 1);
    s.weir(&["run", "p.yaml"]).ok();
    // the same bytes again: a new Last-Modified, the same ETag
    std::thread::sleep(std::time::Duration::from_millis(1100));
    s.deliver("d1.csv", 0..10, 1);
    let r = s.weir(&["run", "p.yaml"]);
    r.ok();
    assert!(status_of(&r.stdout, "out").contains("up to date"), "{}", r.stdout);
    // New content under the same name (another ETag) is a changed file: `append` refuses to
    // add its rows a second time, and loads nothing.
    s.deliver("d1.csv", 0..10, 2);
    let r = s.weir(&["run", "p.yaml"]);
    r.code(1);
    assert!(r.stderr.contains("raw: d1.csv changed since this load appended it"), "{}", r.stderr);
    let out = s.by_id("out");
    assert!(out.values().all(|v| *v == vec![1]), "{out:?}");
}

/// Killed at every point of a load on S3, including between the first copied file and the
/// commit record, and between the record and the deletes: the next run completes the work,
/// every row is loaded once, and nothing uncommitted is left in the output.
#[test]
fn killed_runs_on_s3_lose_and_double_nothing() {
    let merge = "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: merge, keys: [id], partition_by: [region] }\n";
    for (tasks, mode) in [(APPEND, "append"), (merge, "merge")] {
        for point in
            ["after_data_files", "mid_publish", "before_cleanup", "after_publish", "after_publish_before_state"]
        {
            let Some(s) = S3Project::new(tasks) else { return };
            s.deliver("d1.csv", 0..100, 1);
            s.weir(&["run", "p.yaml"]).ok();
            s.deliver("d2.csv", 60..160, 2);
            let r = s.weir_env(&["run", "p.yaml"], &[("WEIR_FAILPOINT", &format!("{point}@out=kill"))]);
            assert_ne!(r.code, 0, "{mode}: killed at {point}");
            s.deliver("d3.csv", 160..170, 3);
            s.weir(&["run", "p.yaml"]).ok();
            let out = s.by_id("out");
            assert_eq!(out.len(), 170, "{mode}: killed at {point}");
            for (id, v) in &out {
                let want = match (mode, *id) {
                    ("append", 60..100) => vec![1, 2],
                    (_, 0..60) => vec![1],
                    (_, 60..160) => vec![2],
                    _ => vec![3],
                };
                assert_eq!(*v, want, "{mode}: killed at {point}: id {id}");
            }
            // the output holds its committed version only
            let keys = s.b.keys("lake/out");
            let latest = keys.iter().filter(|k| k.contains("/_weir/commits/")).max().unwrap().clone();
            let record: serde_json::Value = serde_json::from_slice(
                &std::fs::read(s.output("out").join("_weir/commits").join(latest.rsplit('/').next().unwrap())).unwrap(),
            )
            .unwrap();
            let seq = record["seq"].as_u64().unwrap();
            for k in keys.iter().filter(|k| k.ends_with(".parquet")) {
                let name = k.rsplit('/').next().unwrap();
                let file_seq: u64 = name[1..11].parse().unwrap();
                assert!(file_seq <= seq, "{mode}: killed at {point}: {k} is above commit {seq}");
            }
            let r = s.weir(&["run", "p.yaml"]);
            assert!(status_of(&r.stdout, "out").contains("up to date"), "{mode}: killed at {point}:\n{}", r.stdout);
        }
    }
}

/// A load whose output gained a commit it did not read (another writer, or an earlier
/// attempt whose publish reported an error but landed) publishes nothing.
#[test]
fn a_load_over_an_output_that_moved_publishes_nothing() {
    let Some(s) = S3Project::new(APPEND) else { return };
    s.deliver("d1.csv", 0..10, 1);
    s.weir(&["run", "p.yaml"]).ok();
    s.deliver("d2.csv", 10..20, 2);
    // stop the run once its state is read, then let another run commit first
    let slow =
        s.p.command(&["run", "p.yaml"])
            .env("WEIR_S3_SECRET", SECRET)
            .env("WEIR_FAILPOINT", "task_start@out=sleep(3000)")
            .env("WEIR_STATE", s.p.join("other.db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    s.weir(&["run", "p.yaml"]).ok();
    let out = slow.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("the output changed since this run read its state"),
        "{stdout}\n{stderr}"
    );
    let by_id = s.by_id("out");
    assert_eq!(by_id.len(), 20);
    assert!(by_id.values().all(|v| v.len() == 1), "{by_id:?}");
}

/// An incremental run with nothing new on S3 lists, and reads nothing: compile takes the
/// schemas it inferred before from the state store, the extract finds no new file, the
/// load is up to date. The listing of a glob starts at its literal prefix.
#[test]
fn an_incremental_no_op_on_s3_only_lists() {
    let tasks = "  src:\n    extract: { store: raw, path: \"in/2026-*/*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: append }\n";
    let Some(s) = S3Project::new(tasks) else { return };
    for day in 1..=3 {
        for k in 0..5 {
            s.deliver(&format!("in/2026-01-0{day}/{k}.csv"), day * 100 + k * 10..day * 100 + k * 10 + 10, 1);
        }
    }
    s.deliver("other/noise.csv", 0..1, 9);
    s.weir(&["run", "p.yaml"]).ok();
    assert_eq!(s.by_id("out").len(), 150);

    let before = s.b.requests().len();
    let r = s.weir(&["run", "p.yaml", "--metrics-file", "m.prom"]);
    r.ok();
    assert!(status_of(&r.stdout, "out").contains("up to date"), "{}", r.stdout);
    // weir's own count, by store and operation
    let metrics = std::fs::read_to_string(s.p.join("m.prom")).unwrap();
    let calls: Vec<&str> = metrics.lines().filter(|l| l.starts_with("weir_store_requests_total{")).collect();
    assert!(!calls.is_empty(), "{metrics}");
    for line in &calls {
        assert!(line.contains("op=\"list\""), "a no-op run made a call other than LIST: {line}\n{metrics}");
    }
    // and the server's: LISTs only, under the glob's literal prefix and the output
    let served: Vec<String> = s.b.requests()[before..].to_vec();
    assert!(!served.is_empty());
    for req in &served {
        assert!(req.starts_with("GET ") && req.contains("list-type=2"), "not a LIST: {req}\nall: {served:#?}");
        assert!(req.contains("prefix=raw/in/") || req.contains("prefix=lake/out/"), "{req}");
    }

    // a new file: read alone
    s.deliver("in/2026-01-04/0.csv", 1000..1010, 2);
    let r = s.weir(&["run", "p.yaml", "--json"]);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["tasks"][0]["files"], 1, "{report}");
    assert_eq!(s.by_id("out").len(), 160);
}

/// A server that denies every request with a 403 whose message echoes the request's headers
/// (the worst case: credentials in an error body that object_store puts in its error).
fn denying_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut headers = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                headers.push_str(line.trim_end());
                headers.push(' ');
            }
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied; you sent: {}</Message></Error>",
                headers.replace('&', "&amp;").replace('<', "&lt;")
            );
            let _ = conn.write_all(
                format!("HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    .as_bytes(),
            );
        }
    });
    port
}

/// Credentials never surface: a secret from `${env:...}` and credentials written in the
/// pipeline file, through successful runs, a denied store whose errors echo the request
/// headers, and a wrong endpoint — in logs at every level, errors, `weir plan`, the run
/// history, the state store, metrics, the HTTP API and webhook bodies.
#[test]
fn credentials_never_surface() {
    use crate::serve::{Daemon, Receiver, http, runs};
    const TOKEN: &str = "sEsSiOnCaNaRy-5d2e8b71";
    const KEY_ID: &str = "AKIDCANARY7Q4W9Z";
    let Some(b) = Bucket::new() else { return };
    let denied = denying_server();
    let closed = crate::serve::free_port();
    let hook = Receiver::start(0);
    let moto = b.endpoint.clone();
    // (another bucket name off the test server: one bucket, one set of options)
    let store = |endpoint: &str, prefix: &str| {
        format!(
            "{{ url: \"s3://{}/{prefix}\", options: {{ endpoint: \"{endpoint}\", allow_http: true, region: us-east-1, access_key_id: {KEY_ID}, secret_access_key: \"${{env:WEIR_S3_SECRET}}\", session_token: {TOKEN}, max_retries: 1, retry_timeout: 2s }} }}",
            if endpoint == moto { b.name.as_str() } else { "elsewhere" }
        )
    };
    let pipeline = |name: &str, raw: &str, lake: &str| {
        format!(
            "pipeline: {name}\nnotify:\n  - url: \"{}\"\nstores:\n  raw: {}\n  lake: {}\ntasks:\n  src:\n    extract: {{ store: raw, path: \"in/*.csv\" }}\n  out:\n    load: {{ from: src, store: lake, path: out/ }}\n",
            hook.url(),
            store(raw, "raw"),
            store(lake, "lake")
        )
    };
    let p = Project::new();
    let f = p.write("in/d1.csv", "id,version\n1,1\n");
    b.put_file(&f, "raw/in/d1.csv");
    p.write("p/ok.yaml", pipeline("ok", &moto, &moto));
    p.write("p/denied_load.yaml", pipeline("denied_load", &moto, &format!("http://127.0.0.1:{denied}")));
    p.write("p/denied_read.yaml", pipeline("denied_read", &format!("http://127.0.0.1:{denied}"), &moto));
    p.write("p/closed.yaml", pipeline("closed", &moto, &format!("http://127.0.0.1:{closed}")));
    let env = [("WEIR_S3_SECRET", SECRET), ("RUST_LOG", "trace")];

    let seen = std::cell::RefCell::new(String::new());
    let look = |what: &str, text: &str| {
        seen.borrow_mut().push_str(&format!("\n=== {what}\n{text}"));
    };
    for file in ["ok", "denied_load", "denied_read", "closed"] {
        let path = format!("p/{file}.yaml");
        for args in [vec!["-vvv", "run", path.as_str()], vec!["plan", path.as_str()], vec!["validate", path.as_str()]] {
            let r = p.weir_env(&args, &env);
            if file == "ok" {
                r.ok();
            }
            look(&format!("{args:?} stdout"), &r.stdout);
            look(&format!("{args:?} stderr"), &r.stderr);
        }
    }
    // the failures are reported, with the server's own words
    assert!(seen.borrow().contains("AccessDenied"), "{}", seen.borrow());
    // … which echo the session token: the redaction, not luck, keeps it out
    assert!(seen.borrow().to_lowercase().contains("x-amz-security-token: ***"), "{}", seen.borrow());
    for args in [vec!["runs", "--dir", "p", "--json"], vec!["runs", "--dir", "p"]] {
        let r = p.weir_env(&args, &env);
        look(&format!("{args:?}"), &format!("{}{}", r.stdout, r.stderr));
    }
    for r in runs(&p, "denied_load") {
        let r = p.weir_env(&["runs", "--dir", "p", &r.run_id], &env);
        look("runs RUN", &format!("{}{}", r.stdout, r.stderr));
    }

    // the daemon: API, metrics, webhooks
    let d = Daemon::start(&p, &[], &env);
    for name in ["ok", "denied_load", "closed"] {
        let (status, body) = http("POST", d.port, &format!("/api/pipelines/{name}/run"), None);
        assert_eq!(status, 202, "{body}");
        look("POST run", &body);
    }
    d.wait_for("the runs and alerts", || {
        hook.bodies.lock().unwrap().len() >= 2
            && ["denied_load", "closed"]
                .iter()
                .all(|n| runs(&p, n).iter().filter(|r| r.status == "failed").count() >= 2)
    });
    for path in ["/api/pipelines", "/api/runs", "/api/alerts", "/api/ticks", "/metrics", "/healthz"] {
        let (_, body) = http("GET", d.port, path, None);
        look(path, &body);
    }
    for r in runs(&p, "denied_load") {
        let (_, body) = http("GET", d.port, &format!("/api/runs/{}", r.run_id), None);
        look("/api/runs/ID", &body);
    }
    let (_, log) = d.stop();
    look("daemon log", &log);
    for body in hook.bodies.lock().unwrap().iter() {
        look("webhook", &body.to_string());
    }
    // the state store, byte for byte
    look("state.db", &String::from_utf8_lossy(&std::fs::read(p.join("p/.weir/state.db")).unwrap()));

    let seen = seen.into_inner();
    assert!(seen.contains("denied_load"), "{seen}");
    for canary in [SECRET, TOKEN, KEY_ID] {
        for form in [canary.to_string(), canary.to_lowercase(), canary.replace('-', "%2D")] {
            if let Some(at) = seen.find(&form) {
                let from = seen[..at].rfind("\n===").unwrap_or(0);
                panic!("{canary} surfaced:\n{}", &seen[from..(at + 200).min(seen.len())]);
            }
        }
    }
}

/// A TCP proxy to the S3 test server that drops its first `drop_first` connections once the
/// request is in (no answer: a lost request) and delays every other one by `delay`.
fn flaky_proxy(drop_first: u32, delay: std::time::Duration) -> (u16, std::sync::Arc<AtomicU32>) {
    let upstream = server().unwrap().port;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(AtomicU32::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut client) = conn else { continue };
            let n = count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                if n < drop_first {
                    let mut buf = [0u8; 512];
                    let _ = client.read(&mut buf);
                    return; // dropped: closed without an answer
                }
                std::thread::sleep(delay);
                let Ok(mut up) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { return };
                let (mut c2, mut u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                let t = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut up, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
                let _ = t.join();
            });
        }
    });
    (port, seen)
}

/// Requests lost or slow on the way to S3 are retried by the object store client: the run
/// succeeds and loads every row once.
#[test]
fn lost_and_slow_requests_are_retried_and_lose_nothing() {
    let Some(b) = Bucket::new() else { return };
    let (port, connections) = flaky_proxy(3, std::time::Duration::from_millis(150));
    let via = format!("http://127.0.0.1:{port}");
    let p = Project::new();
    p.write(
        "p.yaml",
        format!(
            "pipeline: flaky\nstores:\n  raw: {}\n  lake: {}\ntasks:\n  src:\n    extract: {{ store: raw, path: \"*.csv\", incremental: {{ new_files: true }} }}\n  out:\n    load: {{ from: src, store: lake, path: out/, mode: append }}\n",
            b.store_at(&via, "raw"),
            b.store_at(&via, "lake")
        ),
    );
    let s = S3Project { p, b };
    s.deliver("d1.csv", 0..100, 1);
    let r = s.weir_env(&["run", "p.yaml"], &[("RUST_LOG", "object_store=info")]);
    r.ok();
    // the object store client saw the lost requests and tried again
    assert!(r.stderr.contains("backing off"), "{}", r.stderr);
    s.deliver("d2.csv", 100..150, 2);
    s.weir(&["run", "p.yaml"]).ok();
    assert!(connections.load(Ordering::SeqCst) > 3, "the proxy was not used");
    let out = s.by_id("out");
    assert_eq!(out.len(), 150);
    assert!(out.values().all(|v| v.len() == 1), "{out:?}");
}

/// Delta on S3, killed before and after its log entry: every row once.
#[test]
fn killed_delta_runs_on_s3_lose_and_double_nothing() {
    let tasks = "  src:\n    extract: { store: raw, path: \"*.csv\", incremental: { new_files: true } }\n  out:\n    load: { from: src, store: lake, path: out/, mode: append, format: delta }\n";
    for point in ["after_data_files", "before_publish", "after_publish", "after_publish_before_state"] {
        let Some(s) = S3Project::new(tasks) else { return };
        s.deliver("d1.csv", 0..50, 1);
        s.weir(&["run", "p.yaml"]).ok();
        s.deliver("d2.csv", 50..90, 2);
        let r = s.weir_env(&["run", "p.yaml"], &[("WEIR_FAILPOINT", &format!("{point}@out=kill"))]);
        assert_ne!(r.code, 0, "killed at {point}");
        s.weir(&["run", "p.yaml"]).ok();
        let out = versions_by_id(read_delta_rows(&s.output("out")));
        assert_eq!(out.len(), 90, "killed at {point}");
        assert!(out.values().all(|v| v.len() == 1), "killed at {point}: {out:?}");
    }
}

/// SIGKILL at random moments of runs over many files on S3, then a clean run: every row once,
/// and nothing above the latest commit is left in the output.
#[test]
fn kill_at_random_moments_on_s3_loads_every_row_once() {
    let Some(s) = S3Project::new(APPEND) else { return };
    let mut next = 0;
    for k in 0..6u32 {
        s.deliver(&format!("d{k:02}.csv"), next..next + 1_000, k);
        next += 1_000;
    }
    for k in 0..8u64 {
        s.p.weir_killed_after_env(
            &["run", "p.yaml"],
            std::time::Duration::from_millis(40 + 60 * k),
            &[("WEIR_S3_SECRET", SECRET)],
        );
        s.deliver(&format!("e{k:02}.csv"), next..next + 200, 100 + k as u32);
        next += 200;
    }
    s.weir(&["run", "p.yaml"]).ok();
    let out = s.by_id("out");
    assert_eq!(out.len() as u32, next);
    assert!(out.values().all(|v| v.len() == 1));
}

/// Partition directories on S3 are Hive's too: NULL is `__HIVE_DEFAULT_PARTITION__` and special
/// characters are escaped once in the keys (not escaped again by the object store client), in
/// a merge that rewrites them and a replace_partitions.
#[test]
fn partition_keys_on_s3_are_hive_names() {
    let tasks = "  src:\n    extract: { store: raw, path: \"*.ndjson\", incremental: { new_files: true } }\n  m:\n    load: { from: src, store: lake, path: m/, mode: merge, keys: [id], partition_by: [region] }\n  r:\n    load: { from: src, store: lake, path: r/, mode: replace_partitions, partition_by: [region] }\n";
    let Some(s) = S3Project::new(tasks) else { return };
    let put = |name: &str, text: &str| {
        let f = s.p.write(&format!("raw/{name}"), text);
        s.b.put_file(&f, &format!("raw/{name}"));
    };
    put(
        "a.ndjson",
        "{\"id\": 1, \"region\": \"a=b/c\"}\n{\"id\": 2, \"region\": null}\n{\"id\": 3, \"region\": \"100%\"}\n",
    );
    s.weir(&["run", "p.yaml"]).ok();
    put("b.ndjson", "{\"id\": 2, \"region\": null}\n{\"id\": 4, \"region\": \"100%\"}\n");
    s.weir(&["run", "p.yaml"]).ok();
    for t in ["m", "r"] {
        let dirs: std::collections::BTreeSet<String> =
            s.b.keys(&format!("lake/{t}"))
                .iter()
                .filter(|k| k.ends_with(".parquet"))
                .map(|k| k.split('/').nth(2).unwrap().to_string())
                .collect();
        assert_eq!(
            dirs.into_iter().collect::<Vec<_>>(),
            ["region=100%25", "region=__HIVE_DEFAULT_PARTITION__", "region=a%3Db%2Fc"],
            "{t}"
        );
        let mut ids: Vec<String> = read_rows(&s.output(t)).iter().map(|r| r["id"].clone()).collect();
        ids.sort();
        // replace_partitions replaced the `100%` partition with the second delivery's rows.
        let want: &[&str] = if t == "m" { &["1", "2", "3", "4"] } else { &["1", "2", "4"] };
        assert_eq!(ids, want, "{t}");
    }
}
