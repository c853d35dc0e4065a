//! `weir lineage`: column-level lineage as text, JSON, Graphviz DOT or a Mermaid flowchart.

use std::fmt::Write as _;

use super::*;
use crate::compile::lineage::{
    self, ColumnDep, Direction, Focus, How, LineageDocument, PipelineLineage, Reach, TaskDocument,
};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LineageFormat {
    Text,
    Json,
    Dot,
    Mermaid,
}

/// `weir lineage PATH [--column T.C | --downstream T.C] [--format F]`.
pub(super) async fn lineage_cmd(
    path: &Path,
    column: Option<&str>,
    downstream: Option<&str>,
    format: LineageFormat,
    vars: &VarArgs,
    cache: Option<&dyn compile::SchemaCache>,
) -> i32 {
    let plans = match compile_path(path, vars, cache).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let asked = column.map(|c| (c, Direction::Upstream)).or(downstream.map(|c| (c, Direction::Downstream)));
    let mut focus: Option<(usize, Focus)> = None;
    if let Some((text, direction)) = asked {
        match find_column(&plans, text) {
            Ok((k, task, col)) => focus = lineage::focus(&plans[k], &task, &col, direction).map(|f| (k, f)),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_INVALID;
            }
        }
    }
    let mut pipelines: Vec<PipelineLineage> = Vec::new();
    for (k, p) in plans.iter().enumerate() {
        match &focus {
            Some((fk, f)) if *fk == k => {
                let mut doc = lineage::pipeline_document(p, &p.source.name);
                lineage::narrow(&mut doc, f);
                pipelines.push(doc);
            }
            Some(_) => {}
            None => pipelines.push(lineage::pipeline_document(p, &p.source.name)),
        }
    }
    let doc = LineageDocument { weir_lineage: lineage::DOCUMENT_VERSION, pipelines, focus: focus.map(|(_, f)| f) };
    let text = match format {
        LineageFormat::Json => serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n",
        LineageFormat::Text => match &doc.focus {
            Some(f) => focus_text(&doc, f, &plans),
            None => document_text(&doc),
        },
        LineageFormat::Dot => to_dot(&doc),
        LineageFormat::Mermaid => to_mermaid(&doc),
    };
    // Paths and URLs can hold `${env:…}` values.
    let secrets = Secrets::new();
    for p in &plans {
        secrets.merge(&p.secrets);
    }
    out!("{}", secrets.redact(&text));
    EXIT_OK
}

/// `task.column` or `pipeline.task.column`: the plan (by position), task and column.
fn find_column(plans: &[Plan], text: &str) -> Result<(usize, String, String), String> {
    let mut candidates: Vec<(usize, String, String)> = Vec::new();
    if let Some((task, col)) = text.split_once('.') {
        candidates.extend(
            plans
                .iter()
                .enumerate()
                .filter_map(|(k, p)| p.index_of(task).map(|_| (k, task.to_string(), col.to_string()))),
        );
    }
    if candidates.is_empty()
        && let Some((pipeline, rest)) = text.split_once('.')
        && let Some((task, col)) = rest.split_once('.')
    {
        candidates.extend(
            plans
                .iter()
                .enumerate()
                .filter(|(_, p)| p.pipeline == pipeline && p.index_of(task).is_some())
                .map(|(k, _)| (k, task.to_string(), col.to_string())),
        );
    }
    match candidates.len() {
        0 => {
            let tasks: Vec<&str> = plans.iter().flat_map(|p| p.tasks().map(|t| t.name.as_str())).collect();
            let task = text.split_once('.').map_or(text, |(t, _)| t);
            let hint =
                crate::diag::did_you_mean(task, tasks.iter().copied()).map(|h| format!(" ({h})")).unwrap_or_default();
            if !text.contains('.') {
                return Err(format!("`{text}`: name a column as `task.column`"));
            }
            Err(format!("`{text}`: no task `{task}`{hint}"))
        }
        1 => {
            let (k, task, col) = candidates.remove(0);
            let t = plans[k].task(plans[k].index_of(&task).ok_or("task vanished")?);
            if t.schema.index_of(&col).is_err() {
                let names: Vec<&str> = t.schema.fields().iter().map(|f| f.name().as_str()).collect();
                let hint = match crate::diag::did_you_mean(&col, names.iter().copied()) {
                    Some(h) => format!(" ({h})"),
                    None => format!(" (its columns: {})", names.join(", ")),
                };
                return Err(format!("task `{task}` has no column `{col}`{hint}"));
            }
            Ok((k, task, col))
        }
        _ => {
            let which: Vec<String> =
                candidates.iter().map(|(k, t, c)| format!("{}.{t}.{c}", plans[*k].pipeline)).collect();
            Err(format!("`{text}` is in several pipelines: name one of {}", which.join(", ")))
        }
    }
}

/// Dependencies grouped by how: `copy a.x, b.y · transform c.z`.
fn deps_text(deps: &[ColumnDep]) -> String {
    let mut by: std::collections::BTreeMap<How, Vec<String>> = Default::default();
    for d in deps {
        by.entry(d.how).or_default().push(format!("{}.{}", d.task, d.column));
    }
    by.into_iter().map(|(h, cols)| format!("{} {}", h.name(), cols.join(", "))).collect::<Vec<_>>().join(" · ")
}

fn task_header(t: &TaskDocument) -> String {
    match &t.dataset {
        Some(d) => format!("{} · {} · {} {}: {}", t.task, t.kind, d.kind, d.store, d.name),
        None => format!("{} · {}", t.task, t.kind),
    }
}

/// Every task and column of every pipeline.
fn document_text(doc: &LineageDocument) -> String {
    let mut s = String::new();
    for (k, p) in doc.pipelines.iter().enumerate() {
        if k > 0 {
            s.push('\n');
        }
        let _ = writeln!(s, "pipeline {} ({})", p.pipeline, p.file);
        for t in &p.tasks {
            let _ = writeln!(s, "\n{}", task_header(t));
            let width = t.columns.iter().map(|c| c.name.len()).max().unwrap_or(0).max(6);
            for c in &t.columns {
                let mut what = match (&c.field, c.from.is_empty()) {
                    (Some(f), _) => format!("field {f}"),
                    (None, false) => deps_text(&c.from),
                    (None, true) => "(no column: a constant or a count)".to_string(),
                };
                if c.partition {
                    what.push_str("  [partition]");
                }
                let _ = writeln!(s, "  {:width$}  ← {what}", c.name);
            }
            if !t.rows.is_empty() {
                let _ = writeln!(s, "  {:width$}  ← {}", "(rows)", deps_text(&t.rows));
            }
            for c in &t.checks {
                let reads: Vec<String> = c.reads.iter().map(|r| format!("{}.{}", r.task, r.column)).collect();
                let reads = if reads.is_empty() { "no column".to_string() } else { reads.join(", ") };
                let _ = writeln!(s, "  check {} ({}) reads {reads}", c.name, c.kind);
            }
        }
    }
    s
}

/// The answer to `--column` or `--downstream`.
fn focus_text(doc: &LineageDocument, f: &Focus, plans: &[Plan]) -> String {
    let mut s = String::new();
    let verb = match f.direction {
        Direction::Upstream => "comes from",
        Direction::Downstream => "is used by",
    };
    let _ = writeln!(s, "{}.{} (pipeline {}) {verb}:", f.task, f.column, f.pipeline);
    let tasks: HashMap<&str, &TaskDocument> =
        doc.pipelines.iter().flat_map(|p| p.tasks.iter().map(|t| (t.task.as_str(), t))).collect();
    let plan = plans.iter().find(|p| p.pipeline == f.pipeline);
    let width_of = |task: &str| {
        plan.and_then(|p| p.index_of(task)).map(|i| plan.map_or(0, |p| p.task(i).schema.fields().len())).unwrap_or(0)
    };
    let detail = |r: &Reach| -> String {
        let t = tasks.get(r.task.as_str());
        let field = t
            .and_then(|t| t.columns.iter().find(|c| c.name == r.column))
            .and_then(|c| c.field.clone())
            .map(|f| format!(", field {f}"))
            .unwrap_or_default();
        match (t.and_then(|t| t.dataset.as_ref()), r.kind.as_str()) {
            (Some(d), "load") => format!("written to {}: {}", d.store, d.name),
            (Some(d), _) => format!("read from {}: {}{field}", d.store, d.name),
            (None, _) => String::new(),
        }
    };
    let values: Vec<(&Reach, How)> =
        f.reaches.iter().flat_map(|r| r.how.iter().filter(|h| h.direct()).map(move |h| (r, *h))).collect();
    let rows: Vec<(&Reach, How)> =
        f.reaches.iter().flat_map(|r| r.how.iter().filter(|h| !h.direct()).map(move |h| (r, *h))).collect();
    if values.is_empty() && rows.is_empty() {
        let _ = writeln!(
            s,
            "  nothing: {}",
            match f.direction {
                Direction::Upstream => "a constant, or a source field",
                Direction::Downstream => "no task reads it",
            }
        );
    }
    let name_width = f.reaches.iter().map(|r| r.task.len() + r.column.len() + 1).max().unwrap_or(0).max(8);
    if !values.is_empty() {
        let _ = writeln!(s, "  values:");
        for (r, h) in &values {
            let name = format!("{}.{}", r.task, r.column);
            let _ = writeln!(s, "    {:9}  {}", h.name(), format!("{name:name_width$}  {}", detail(r)).trim_end());
        }
    }
    if !rows.is_empty() {
        let _ = writeln!(s, "  rows:");
        // Downstream, a task whose every column is reached the same way is one line.
        let mut shown: HashSet<(String, How)> = HashSet::new();
        for (r, h) in &rows {
            let all = f.direction == Direction::Downstream && {
                let n = rows.iter().filter(|(o, oh)| o.task == r.task && oh == h).count();
                n > 1 && n == width_of(&r.task)
            };
            if all {
                if shown.insert((r.task.clone(), *h)) {
                    let name = format!("{}.*", r.task);
                    let _ = writeln!(
                        s,
                        "    {:9}  {}",
                        h.name(),
                        format!("{name:name_width$}  (every column) {}", detail(r)).trim_end()
                    );
                }
                continue;
            }
            let name = format!("{}.{}", r.task, r.column);
            let _ = writeln!(s, "    {:9}  {}", h.name(), format!("{name:name_width$}  {}", detail(r)).trim_end());
        }
    }
    if !f.checks.is_empty() {
        let _ = writeln!(s, "  checks:");
        for c in &f.checks {
            let _ = writeln!(s, "    {}: {} ({}) reads {}", c.task, c.check, c.kind, c.column);
        }
    }
    s
}

/// The column graph both drawings show: a box per task, a node per column (and one for the
/// rows, when they depend on anything), an edge per dependency. Nodes are numbered `n0`,
/// `n1`, … in order of appearance (names can hold any character).
struct Drawing {
    boxes: Vec<DrawnBox>,
    /// (from node, to node, how).
    edges: Vec<(String, String, How)>,
}

struct DrawnBox {
    id: String,
    label: String,
    /// (node, column name).
    columns: Vec<(String, String)>,
    rows: Option<String>,
}

impl Drawing {
    fn of(doc: &LineageDocument) -> Drawing {
        let mut ids: HashMap<(usize, String, String), String> = HashMap::new();
        let mut id = |k: usize, task: &str, column: &str| {
            let n = ids.len();
            ids.entry((k, task.to_string(), column.to_string())).or_insert_with(|| format!("n{n}")).clone()
        };
        let (mut boxes, mut edges) = (Vec::new(), Vec::new());
        for (k, p) in doc.pipelines.iter().enumerate() {
            for t in &p.tasks {
                // `\0` cannot be in a column's name: the box's own node.
                let mut b = DrawnBox {
                    id: id(k, &t.task, "\0box"),
                    label: format!("{} ({})", t.task, t.kind),
                    columns: Vec::new(),
                    rows: None,
                };
                for c in &t.columns {
                    let node = id(k, &t.task, &c.name);
                    for d in &c.from {
                        edges.push((id(k, &d.task, &d.column), node.clone(), d.how));
                    }
                    b.columns.push((node, c.name.clone()));
                }
                if !t.rows.is_empty() {
                    let node = id(k, &t.task, "\0rows");
                    for d in &t.rows {
                        edges.push((id(k, &d.task, &d.column), node.clone(), d.how));
                    }
                    b.rows = Some(node);
                }
                boxes.push(b);
            }
        }
        Drawing { boxes, edges }
    }
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn mermaid_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "#quot;"))
}

/// Column-level Graphviz DOT: a cluster per task, a node per column (and one for its rows),
/// an edge per dependency labelled with how; dashed when it decides rows.
fn to_dot(doc: &LineageDocument) -> String {
    let d = Drawing::of(doc);
    let mut s = String::from(
        "digraph lineage {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
    );
    for b in &d.boxes {
        let _ = writeln!(s, "  subgraph cluster_{} {{\n    label={};", b.id, dot_quote(&b.label));
        for (node, name) in &b.columns {
            let _ = writeln!(s, "    {node} [label={}];", dot_quote(name));
        }
        if let Some(node) = &b.rows {
            let _ = writeln!(s, "    {node} [label=\"(rows)\", shape=note];");
        }
        s.push_str("  }\n");
    }
    for (from, to, how) in &d.edges {
        let style = if how.direct() { "" } else { ", style=dashed" };
        let _ = writeln!(s, "  {from} -> {to} [label={}{style}];", dot_quote(how.name()));
    }
    s.push_str("}\n");
    s
}

/// Column-level Mermaid flowchart, shaped as [`to_dot`].
fn to_mermaid(doc: &LineageDocument) -> String {
    let d = Drawing::of(doc);
    let mut s = String::from("flowchart LR\n");
    for b in &d.boxes {
        let _ = writeln!(s, "  subgraph {}[{}]", b.id, mermaid_quote(&b.label));
        for (node, name) in &b.columns {
            let _ = writeln!(s, "    {node}[{}]", mermaid_quote(name));
        }
        if let Some(node) = &b.rows {
            let _ = writeln!(s, "    {node}>\"(rows)\"]");
        }
        s.push_str("  end\n");
    }
    for (from, to, how) in &d.edges {
        let arrow = if how.direct() { "-->" } else { "-.->" };
        let _ = writeln!(s, "  {from} {arrow}|{}| {to}", how.name());
    }
    s
}
