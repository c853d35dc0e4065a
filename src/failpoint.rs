//! Named fail points for crash and concurrency tests, set with `WEIR_FAILPOINT`:
//!
//! ```text
//! WEIR_FAILPOINT="before_publish=kill"                   # SIGKILL the process there
//! WEIR_FAILPOINT="task_start@slow_a=sleep(800),task_start@slow_b=sleep(800)"
//! WEIR_FAILPOINT="after_data_files@orders_mart=error"    # the task fails there
//! ```
//!
//! Points: `task_start`, `after_data_files` (a load's files are written to staging),
//! `before_publish`, `mid_publish` (object stores: the first data file is in place, the
//! commit record not yet), `before_cleanup` (object stores: committed, the previous
//! version's files not yet deleted), `after_publish` (the output is committed), `after_publish_before_state`
//! (committed, the state store not yet updated), `after_state`, `mid_copy` (a table load has sent
//! its first chunk of `COPY` data), `source_snapshot` (a database
//! extract's parts have adopted their snapshot, nothing read yet). Actions: `kill`, `panic`, `exit(N)`, `sleep(MS)`,
//! `error` (a permanent failure), `transient(N)` (a retryable I/O failure the first N times).
//! `@task` limits a point to one task. Unset, a fail point costs one check of an empty map.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Kill,
    Panic,
    Exit(i32),
    Sleep(u64),
    Error,
    Transient(u32),
}

/// How a fail point made the task fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Will fail again: not worth a retry.
    Permanent(String),
    /// Like a network hiccup: retried.
    Transient(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Permanent(m) | Failure::Transient(m) => f.write_str(m),
        }
    }
}

static HITS: LazyLock<std::sync::Mutex<HashMap<String, std::sync::Arc<AtomicU32>>>> = LazyLock::new(Default::default);

static POINTS: LazyLock<HashMap<(String, Option<String>), Action>> =
    LazyLock::new(|| std::env::var("WEIR_FAILPOINT").map(|v| parse(&v)).unwrap_or_default());

fn parse(spec: &str) -> HashMap<(String, Option<String>), Action> {
    let mut out = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((point, action)) = item.split_once('=') else {
            continue;
        };
        let (name, task) = match point.split_once('@') {
            Some((n, t)) => (n.trim().to_string(), Some(t.trim().to_string())),
            None => (point.trim().to_string(), None),
        };
        let action = action.trim();
        let arg = |a: &str| a.split_once('(').and_then(|(_, r)| r.strip_suffix(')')).map(str::trim).map(str::to_string);
        let a = match action {
            "kill" => Action::Kill,
            "panic" => Action::Panic,
            "error" => Action::Error,
            a if a.starts_with("exit") => Action::Exit(arg(a).and_then(|x| x.parse().ok()).unwrap_or(1)),
            a if a.starts_with("sleep") => Action::Sleep(arg(a).and_then(|x| x.parse().ok()).unwrap_or(1000)),
            a if a.starts_with("transient") => Action::Transient(arg(a).and_then(|x| x.parse().ok()).unwrap_or(1)),
            _ => continue,
        };
        out.insert((name, task), a);
    }
    out
}

/// Reach fail point `name` in `task`. Returns the failure for `error` and `transient`.
pub async fn hit(name: &str, task: &str) -> Result<(), Failure> {
    if POINTS.is_empty() {
        return Ok(());
    }
    let action = POINTS
        .get(&(name.to_string(), Some(task.to_string())))
        .or_else(|| POINTS.get(&(name.to_string(), None)))
        .cloned();
    match action {
        None => Ok(()),
        Some(Action::Kill) => {
            tracing::warn!(failpoint = name, task, "fail point: SIGKILL");
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
            std::process::abort()
        }
        Some(Action::Panic) => panic!("fail point {name} in task {task}"),
        Some(Action::Exit(code)) => std::process::exit(code),
        Some(Action::Sleep(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        }
        Some(Action::Error) => Err(Failure::Permanent(format!("fail point `{name}` triggered"))),
        Some(Action::Transient(times)) => {
            let counter =
                HITS.lock().unwrap_or_else(|e| e.into_inner()).entry(format!("{name}@{task}")).or_default().clone();
            let n = counter.fetch_add(1, Ordering::SeqCst);
            if n < times {
                Err(Failure::Transient(format!("fail point `{name}`: transient failure {} of {times}", n + 1)))
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points() {
        let p = parse("before_publish=kill, task_start@a=sleep(250),x@t=exit(3),bad,y=nope,e=error,t=transient(2)");
        assert_eq!(p[&("before_publish".into(), None)], Action::Kill);
        assert_eq!(p[&("task_start".into(), Some("a".into()))], Action::Sleep(250));
        assert_eq!(p[&("x".into(), Some("t".into()))], Action::Exit(3));
        assert_eq!(p[&("e".into(), None)], Action::Error);
        assert_eq!(p[&("t".into(), None)], Action::Transient(2));
        assert_eq!(p.len(), 5);
    }
}
