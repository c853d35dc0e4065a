//! `weir cdc status|drop`: the replication slots of change data capture extracts. Both work
//! from the pipeline files alone (no compile, no table described): a pipeline whose table is
//! gone no longer validates, and its slot, which keeps the server's WAL, must still go.

use super::*;
use crate::source::postgres::cdc::{self, CdcPlan};
use crate::source::postgres::pgoutput::lsn_text;
use crate::source::postgres::{PgStore, is_postgres_url};

/// A change data capture extract as its pipeline file declares it.
struct Declared {
    pipeline: String,
    task: String,
    store: PgStore,
    cdc: CdcPlan,
    secrets: Secrets,
}

/// Every `cdc` extract of the pipelines under `path` (all, or those named in `tasks`).
fn declared(path: &Path, vars: &VarArgs, tasks: &[String]) -> Result<Vec<Declared>, i32> {
    let files = spec::discover(std::slice::from_ref(&path.to_path_buf())).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_INVALID
    })?;
    let opts = load_options(vars, &run::new_run_id(), &today());
    let mut out = Vec::new();
    for f in files {
        let p = match spec::load(&f, &opts) {
            Ok(p) => p,
            Err(SpecError::Invalid(d)) => {
                print_diagnostics(&d);
                return Err(EXIT_INVALID);
            }
            Err(e) => {
                eprintln!("error: {}", crate::secrets::global().redact(&e.to_string()));
                return Err(EXIT_INVALID);
            }
        };
        for (name, task) in &p.spec.tasks {
            let Some(e) = &task.extract else { continue };
            let Some(c) = e.incremental.as_ref().and_then(|i| i.cdc.as_ref()) else { continue };
            if !tasks.is_empty() && !tasks.contains(name) {
                continue;
            }
            let Some(s) = p.spec.stores.get(&e.store).filter(|s| is_postgres_url(&s.url)) else {
                eprintln!("error: {}.{name}: store `{}` is not a PostgreSQL store", p.name, e.store);
                return Err(EXIT_INVALID);
            };
            let options: Vec<(String, String)> = s.options.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            for (k, v) in &options {
                if k == "password" {
                    crate::spec::add_secret(&p.secrets, v);
                }
            }
            if let Some(pw) = url::Url::parse(&s.url).ok().and_then(|u| u.password().map(str::to_string)) {
                crate::spec::add_secret(&p.secrets, &pw);
            }
            let store = PgStore::new(&e.store, &s.url, &options).map_err(|err| {
                eprintln!("error: {}.{name}: store `{}`: {}", p.name, e.store, p.secrets.redact(&err.to_string()));
                EXIT_INVALID
            })?;
            // Sizes that do not parse are `validate`'s business; status and drop do not use them.
            let size =
                |t: &Option<String>| t.as_deref().and_then(|t| crate::spec::parse_size(t).ok()).map(|n| n as u64);
            let cdc = CdcPlan::new(c, size(&c.lag_alert), size(&c.decoding_memory));
            out.push(Declared { pipeline: p.name.clone(), task: name.clone(), store, cdc, secrets: p.secrets.clone() });
        }
    }
    Ok(out)
}

pub(super) async fn cdc_cmd(action: &CdcAction) -> i32 {
    let (target, dropping) = match action {
        CdcAction::Status(t) => (t, false),
        CdcAction::Drop(t) => (t, true),
    };
    let tasks = &target.task;
    let found = match declared(&target.path, &target.vars, tasks) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let mut code = EXIT_OK;
    let mut lines = Vec::new();
    for d in &found {
        let (c, store) = (&d.cdc, &d.store);
        let who = format!("{}.{} (slot `{}` on store `{}`)", d.pipeline, d.task, c.slot, store.name);
        let line = if dropping {
            match cdc::drop(store, c).await {
                Ok((true, true)) => format!("{who}: dropped, with publication `{}`", c.publication),
                Ok((true, false)) => format!("{who}: dropped"),
                Ok((false, true)) => format!("{who}: no slot; publication `{}` dropped", c.publication),
                Ok((false, false)) => format!("{who}: no slot"),
                Err(err) => {
                    code = EXIT_FAILED;
                    format!("{who}: {}", crate::source::postgres::error_text(&err))
                }
            }
        } else {
            match cdc::status(store, &c.slot).await {
                Ok(Some((at, lag))) => {
                    let alert = match c.lag_alert {
                        Some(limit) if lag > limit => format!(" — more than `lag_alert` ({limit} bytes)"),
                        _ => String::new(),
                    };
                    format!("{who}: at {}, holding {lag} bytes of WAL{alert}", lsn_text(at))
                }
                Ok(None) => format!("{who}: no slot yet (the first run creates it)"),
                Err(err) => {
                    code = EXIT_FAILED;
                    format!("{who}: {}", crate::source::postgres::error_text(&err))
                }
            }
        };
        lines.push(d.secrets.redact(&line));
    }
    for t in tasks {
        if !found.iter().any(|d| &d.task == t) {
            lines.push(format!("no change data capture extract `{t}`"));
            code = EXIT_INVALID;
        }
    }
    if lines.is_empty() {
        lines.push("no change data capture extracts".into());
    }
    outln!("{}", lines.join("\n"));
    code
}
