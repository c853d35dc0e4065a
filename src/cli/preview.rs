//! What `weir plan` says an incremental extract would read: from the loads' outputs.

use super::*;

/// Per incremental extract, what a run would read for each load it feeds (from the loads'
/// outputs, the source of truth).
pub async fn incremental_preview(p: &Plan) -> HashMap<NodeIndex, Vec<String>> {
    let mut out: HashMap<NodeIndex, Vec<String>> = HashMap::new();
    let all: HashSet<NodeIndex> = p.graph.node_indices().collect();
    let states = match run::incremental::load_states(p, &all, None).await {
        Ok(s) => s,
        Err(e) => {
            for &i in &p.order {
                if let TaskKind::Extract(ex) = &p.task(i).kind
                    && ex.incremental.is_some()
                {
                    out.entry(i).or_default().push(format!("unknown: {}", p.secrets.redact(&e.to_string())));
                }
            }
            return out;
        }
    };
    for &l in &p.order {
        let Some(ls) = states.get(&l) else { continue };
        let load = &p.task(l).name;
        for &s in p.incremental_sources(l) {
            let TaskKind::Extract(e) = &p.task(s).kind else { continue };
            let Some(inc) = &e.incremental else { continue };
            let name = &p.task(s).name;
            let empty = Default::default();
            let st = ls.extract(name).unwrap_or(&empty);
            let line = match run::incremental::extract_input(name, e, st) {
                Err(err) => format!("unknown: {err}"),
                Ok(input) => {
                    let mut parts = Vec::new();
                    if inc.new_files {
                        let bytes: u64 = input.files.iter().map(|f| f.size).sum();
                        parts.push(format!(
                            "new files: {} new or changed of {} ({})",
                            input.files.len(),
                            e.files().map_or(0, |f| f.files.len()),
                            fmt_bytes(bytes)
                        ));
                    }
                    if let Some(w) = &inc.watermark {
                        parts.push(match &input.after {
                            Some(after) => format!("rows with {} > {}", w.column, run::incremental::display(after)),
                            None => format!("all rows with a {} (no watermark yet)", w.column),
                        });
                    }
                    if inc.cdc {
                        parts.push(match input.position {
                            Some(at) => {
                                format!("changes committed after {}", crate::source::postgres::pgoutput::lsn_text(at))
                            }
                            None => "the table in one snapshot, then its changes (no position yet)".to_string(),
                        });
                    }
                    format!("{} for load `{load}`", parts.join("; "))
                }
            };
            out.entry(s).or_default().push(line);
        }
    }
    out
}
