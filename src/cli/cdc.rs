//! `weir cdc status|drop`: the replication slots of change data capture extracts.

use super::*;
use crate::source::SourcePlan;
use crate::source::postgres::cdc;
use crate::source::postgres::pgoutput::lsn_text;

pub(super) async fn cdc_cmd(action: &CdcAction) -> i32 {
    let (path, tasks, vars, dropping) = match action {
        CdcAction::Status { path, task, vars } => (path, task, vars, false),
        CdcAction::Drop { path, task, vars } => (path, task, vars, true),
    };
    let plans = match compile_paths(std::slice::from_ref(path), vars, &run::new_run_id(), &today(), None).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut code = EXIT_OK;
    let mut found = HashSet::new();
    let mut lines = Vec::new();
    for plan in &plans {
        for &i in &plan.order {
            let node = plan.task(i);
            let TaskKind::Extract(e) = &node.kind else { continue };
            let SourcePlan::Postgres(pg) = &e.source else { continue };
            let Some(c) = &pg.cdc else { continue };
            if !tasks.is_empty() && !tasks.contains(&node.name) {
                continue;
            }
            found.insert(node.name.clone());
            let who = format!("{}.{} (slot `{}` on store `{}`)", plan.pipeline, node.name, c.slot, pg.store.name);
            let line = if dropping {
                match cdc::drop(&pg.store, c).await {
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
                match cdc::status(&pg.store, &c.slot).await {
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
            lines.push(plan.secrets.redact(&line));
        }
    }
    for t in tasks {
        if !found.contains(t) {
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
