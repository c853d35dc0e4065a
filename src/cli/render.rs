//! Everything printed for humans: diagnostics, progress, the run report, `weir plan`,
//! tables, counts, sizes and durations.

use super::*;

/// Print diagnostics the way compilers do: heading, source excerpt, help.
pub fn print_diagnostics(diags: &[Diagnostic]) {
    let stderr = std::io::stderr();
    let color = stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = String::new();
    for d in diags {
        out.push_str(&render_diagnostic(d, color));
        out.push('\n');
    }
    let n = diags.len();
    out.push_str(&format!("{n} problem{} found\n", if n == 1 { "" } else { "s" }));
    let _ = stderr.lock().write_all(crate::secrets::global().redact(&out).as_bytes());
}

/// One diagnostic as text (`color` off for tests and pipes).
pub fn render_diagnostic(d: &Diagnostic, color: bool) -> String {
    crate::diag::render(d, color)
}

/// Task progress: a bar on a terminal, one line per task otherwise.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    running: Mutex<Vec<String>>,
}

impl Progress {
    pub(super) fn new(plan: &Plan) -> Arc<Progress> {
        let tty = std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let b = indicatif::ProgressBar::new(plan.graph.node_count() as u64);
            let style = indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:20}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> ");
            b.set_style(style);
            b.set_prefix(plan.pipeline.clone());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Arc::new(Progress { bar, running: Mutex::new(Vec::new()) })
    }

    pub(super) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn line(&self, s: String) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn update(&self) {
        if let Some(b) = &self.bar {
            let r = self.running.lock().unwrap_or_else(|e| e.into_inner());
            b.set_message(format!("running: {}", r.join(", ")));
        }
    }
}

impl Observer for Progress {
    fn task_started(&self, task: &str, kind: &str) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).push(task.to_string());
        self.update();
        if self.bar.is_none() {
            self.line(format!("start  {task} ({kind})"));
        }
    }

    fn task_retrying(&self, task: &str, attempt: u32, error: &str, wait: Duration) {
        self.line(format!("retry  {task}: attempt {attempt} failed ({error}); retrying in {}", fmt_duration(wait)));
    }

    fn task_finished(&self, r: &TaskReport) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).retain(|t| t != &r.name);
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        self.update();
        let what = match r.status {
            TaskStatus::Succeeded => "ok    ",
            TaskStatus::Fused => "fused ",
            TaskStatus::Failed => "FAILED",
            TaskStatus::Skipped => "skip  ",
            TaskStatus::Cancelled => "cancel",
            TaskStatus::UpToDate => "fresh ",
        };
        let mut detail = Vec::new();
        if let Some(n) = r.rows_out {
            detail.push(format!("{} rows", fmt_count(n)));
        }
        if let (Some(f), Some(b)) = (r.files, r.bytes_read) {
            detail.push(format!("{f} file{}, {}", if f == 1 { "" } else { "s" }, fmt_bytes(b)));
        }
        if let Some(b) = r.bytes_written {
            detail.push(format!("{} written", fmt_bytes(b)));
        }
        if let Some(d) = r.duration {
            detail.push(fmt_duration(d));
        }
        if !r.checks.is_empty() {
            detail.push(checks_summary(&r.checks));
        }
        if let Some(e) = &r.error {
            detail.push(e.clone());
        } else if let Some(n) = &r.note
            && (r.status != TaskStatus::Succeeded || r.kind == "extract")
        {
            detail.push(n.clone());
        }
        self.line(format!("{what} {} ({}) {}", r.name, r.kind, detail.join(", ")));
    }
}

pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (k, c) in s.chars().enumerate() {
        if k > 0 && (s.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub use crate::diag::{fmt_bytes, fmt_duration};

/// `checks: 6 passed, 1 warned`
pub fn checks_summary(checks: &[CheckResult]) -> String {
    let mut parts = Vec::new();
    for (status, word) in [
        (CheckStatus::Passed, "passed"),
        (CheckStatus::Warned, "warned"),
        (CheckStatus::Quarantined, "quarantined"),
        (CheckStatus::Failed, "failed"),
    ] {
        let n = checks.iter().filter(|c| c.status == status).count();
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    format!("checks: {}", parts.join(", "))
}

/// The run summary table.
/// Rows under a header, columns padded to their widest cell; columns from `right` on are
/// right-aligned (numbers).
pub(super) fn text_table<R: AsRef<[String]>>(header: &[&str], rows: &[R], right: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (k, c) in row.as_ref().iter().enumerate() {
            widths[k] = widths[k].max(c.chars().count());
        }
    }
    let fmt_row = |cells: &[String]| -> String {
        let mut line = String::from(" ");
        for (k, c) in cells.iter().enumerate() {
            let pad = widths[k] - c.chars().count();
            if k >= right {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            }
            line.push_str("  ");
        }
        line.trim_end().to_string() + "\n"
    };
    let mut s = fmt_row(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in rows {
        s.push_str(&fmt_row(row.as_ref()));
    }
    s
}

pub fn render_report(r: &RunReport, secrets: &Secrets) -> String {
    let mut s =
        format!("\nRun {} of `{}`: {} in {}\n\n", r.run_id, r.pipeline, r.status.as_str(), fmt_duration(r.duration));
    let header = ["task", "kind", "status", "rows in", "rows out", "read", "written", "time"];
    let dash = || "-".to_string();
    let rows: Vec<[String; 8]> = r
        .tasks
        .iter()
        .map(|t| {
            [
                t.name.clone(),
                t.kind.to_string(),
                t.status.as_str().to_string(),
                t.rows_in.map(fmt_count).unwrap_or_else(dash),
                t.rows_out.map(fmt_count).unwrap_or_else(dash),
                t.bytes_read.map(fmt_bytes).unwrap_or_else(dash),
                t.bytes_written.map(fmt_bytes).unwrap_or_else(dash),
                t.duration.map(fmt_duration).unwrap_or_else(dash),
            ]
        })
        .collect();
    s.push_str(&text_table(&header, &rows, 3));
    let failures: Vec<&TaskReport> = r.tasks.iter().filter(|t| t.status == TaskStatus::Failed).collect();
    if !failures.is_empty() {
        s.push('\n');
        for t in failures {
            s.push_str(&format!(
                "task `{}` failed: {}\n",
                t.name,
                secrets.redact(t.error.as_deref().unwrap_or("unknown error"))
            ));
        }
    }
    let tripped: Vec<(&TaskReport, &CheckResult)> = r
        .tasks
        .iter()
        .flat_map(|t| t.checks.iter().map(move |c| (t, c)))
        .filter(|(_, c)| c.status != CheckStatus::Passed)
        .collect();
    let all_checks: Vec<CheckResult> = r.tasks.iter().flat_map(|t| t.checks.iter().cloned()).collect();
    if !all_checks.is_empty() {
        s.push_str(&format!("\n{}\n", checks_summary(&all_checks)));
    }
    for (t, c) in tripped {
        let status = match c.status {
            CheckStatus::Failed => "FAILED",
            CheckStatus::Warned => "warning",
            CheckStatus::Quarantined => "quarantined",
            CheckStatus::Passed => "passed",
        };
        s.push_str(&format!("  {status}: {}.{} ({}): {}\n", t.name, c.name, c.kind, secrets.redact(&c.message)));
        for row in &c.samples {
            let mut line = secrets.redact(&row.to_string());
            if line.chars().count() > 160 {
                line = line.chars().take(157).collect::<String>() + "...";
            }
            s.push_str(&format!("      {line}\n"));
        }
    }
    for t in r.tasks.iter().filter(|t| t.quarantined.is_some()) {
        if let Some(note) = &t.note {
            s.push_str(&format!("  {}: {}\n", t.name, note));
        }
    }
    let skipped = r.tasks.iter().filter(|t| t.status == TaskStatus::Skipped).count();
    if skipped > 0 {
        s.push_str(&format!(
            "{skipped} task{} skipped because an upstream task failed or the run was cancelled\n",
            if skipped == 1 { "" } else { "s" }
        ));
    }
    s
}

/// Schedule, webhooks and freshness for `weir plan` (empty when there are none).
pub fn render_watch(w: &crate::compile::schedule::Watch, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut s = String::new();
    if let Some(sch) = &w.schedule {
        let mut next = Vec::new();
        let mut t = now;
        while next.len() < 3 {
            let Some(n) = sch.next_after(t) else { break };
            next.push(n.with_timezone(&sch.timezone).format("%Y-%m-%d %H:%M:%S %Z").to_string());
            t = n;
        }
        s.push_str(&format!(
            "  schedule  {}, catchup {}, overlap {} (weir serve); next: {}\n",
            sch.describe(),
            format!("{:?}", sch.catchup).to_lowercase(),
            format!("{:?}", sch.overlap).to_lowercase(),
            next.join(", ")
        ));
    }
    for n in &w.notify {
        let on: Vec<&str> = n.on.iter().map(|e| e.as_str()).collect();
        s.push_str(&format!("  notify    *** on {}\n", on.join(", ")));
    }
    if let Some(d) = w.stale_after {
        s.push_str(&format!("  freshness stale after {} without a successful run\n", humantime::format_duration(d)));
    }
    s
}
/// `weir plan` output.
pub fn render_plan(p: &Plan, reads: &HashMap<NodeIndex, Vec<String>>) -> String {
    let mut s = format!("Pipeline `{}` ({})\n", p.pipeline, p.source.name);
    if let Some(d) = &p.description {
        s.push_str(&format!("  {}\n", d.trim()));
    }
    s.push_str(&render_watch(&p.watch, chrono::Utc::now()));
    if let crate::compile::EnginePlan::Ballista(_) = &p.engine {
        s.push_str(&format!("  engine    {}\n", p.engine.describe()));
    }
    s.push_str(&format!("\n{} tasks in run order, at most {} at once:\n", p.graph.node_count(), p.max_parallel));
    for (k, &i) in p.order.iter().enumerate() {
        let t = p.task(i);
        s.push_str(&format!("\n{:>3}. {} ({})\n", k + 1, t.name, t.kind.name()));
        if let Some(d) = &t.description {
            s.push_str(&wrap_text("     about    ", d.trim()));
        }
        let ups = p.upstream_names(i);
        match &t.kind {
            TaskKind::Extract(crate::compile::ExtractPlan {
                source: crate::compile::SourcePlan::Database(pg), ..
            }) => {
                let (store, url) = pg.store();
                s.push_str(&format!(
                    "     reads    {store}: {} ({}, {url})\n",
                    pg.relation().describe(),
                    pg.kind().id(),
                ));
                s.push_str(&wrap_text("     query    ", &pg.describe_read()));
            }
            TaskKind::Extract(crate::compile::ExtractPlan {
                source: crate::compile::SourcePlan::Http(h),
                incremental: inc,
                ..
            }) => {
                s.push_str(&format!("     reads    {}: GET {} (json)\n", h.store.name, h.describe()));
                if let Some(paging) = &h.request.paginate {
                    s.push_str(&format!("     pages    {}\n", crate::source::http::paging_text(paging)));
                }
                if let Some((n, per)) = h.request.rate {
                    s.push_str(&format!(
                        "     rate     at most {n} request{} per {}\n",
                        if n == 1 { "" } else { "s" },
                        humantime::format_duration(per)
                    ));
                }
                if inc.is_some() {
                    for line in reads
                        .get(&i)
                        .cloned()
                        .unwrap_or_else(|| vec!["rows past the watermark (no load reads it)".into()])
                    {
                        s.push_str(&format!("     incremental  {line}\n"));
                    }
                }
            }
            TaskKind::Extract(crate::compile::ExtractPlan {
                source: crate::compile::SourcePlan::Files(e),
                incremental: inc,
                ..
            }) => {
                let fmt = format!("{:?}", e.format.kind).to_lowercase();
                s.push_str(&format!(
                    "     reads    {}: {} ({fmt}) — {} file{}, {}\n",
                    e.store.name,
                    e.glob.pattern,
                    e.files.len(),
                    if e.files.len() == 1 { "" } else { "s" },
                    fmt_bytes(e.bytes())
                ));
                if let Some(inc) = inc {
                    let lines = reads.get(&i).cloned().unwrap_or_else(|| {
                        vec![if inc.watermark.is_some() && !inc.new_files {
                            "rows past the watermark (no load reads it)".into()
                        } else {
                            "new files (no load reads it)".into()
                        }]
                    });
                    for line in lines {
                        s.push_str(&format!("     incremental  {line}\n"));
                    }
                }
            }
            TaskKind::Transform(tr) => {
                s.push_str(&format!(
                    "     reads    {}\n",
                    if tr.inputs.is_empty() { "(no tables)".to_string() } else { tr.inputs.join(", ") }
                ));
                let how = match tr.execution {
                    Execution::Fused => "fused into its consumer's query",
                    Execution::Shared => "materialized once (read by several tasks)",
                    Execution::ChainBreak => "materialized (ends a chain of fused queries)",
                    Execution::Checked => "materialized (checked before its consumers read it)",
                };
                s.push_str(&format!("     runs     {how}\n"));
            }
            TaskKind::Load(l) => {
                let mode = crate::sink::mode_name(l.mode);
                let mut how = match l.files() {
                    Some(f) => format!("{}, {mode}", format!("{:?}", f.format).to_lowercase()),
                    None => format!("{} table, {mode}", l.target_kind()),
                };
                if !l.partition_by.is_empty() {
                    how.push_str(&format!(", partitioned by {}", l.partition_by.join(", ")));
                }
                s.push_str(&format!("     writes   {} ({how}) from {}\n", l.describe_target(), l.from));
            }
        }
        if !t.checks.is_empty() {
            let names: Vec<String> = t
                .checks
                .iter()
                .map(|c| match c.severity {
                    spec::Severity::Warn => format!("{} (warn)", c.name),
                    spec::Severity::Error => c.name.clone(),
                })
                .collect();
            s.push_str(&wrap_columns("     checks   ", &names));
        }
        if let TaskKind::Extract(e) = &t.kind
            && e.bad_rows != spec::BadRowsMode::Fail
        {
            let mode = format!("{:?}", e.bad_rows).to_lowercase();
            s.push_str(&format!("     bad rows {mode}\n"));
        }
        if let Some(q) = &t.quarantine {
            s.push_str(&format!("     quarantine  {}: {}/{}/{}/\n", q.store.name, q.path, p.pipeline, t.name));
        }
        let extra: Vec<&str> = ups
            .iter()
            .copied()
            .filter(|u| match &t.kind {
                TaskKind::Transform(tr) => !tr.inputs.iter().any(|x| x == u),
                TaskKind::Load(l) => l.from != *u,
                _ => true,
            })
            .collect();
        if !extra.is_empty() {
            s.push_str(&format!("     after    {}\n", extra.join(", ")));
        }
        if !t.schema.fields().is_empty() {
            let cols: Vec<String> =
                t.schema.fields().iter().map(|f| format!("{} {}", f.name(), sql_name(f.data_type()))).collect();
            s.push_str(&wrap_columns("     columns  ", &cols));
        }
    }
    let stores: Vec<String> =
        p.stores.iter().map(|st| format!("  {}: {}", st.name, p.secrets.redact(&st.display_url))).collect();
    if !stores.is_empty() {
        s.push_str("\nStores:\n");
        s.push_str(&stores.join("\n"));
        s.push('\n');
    }
    s
}

/// `text` after `prefix`, wrapped at 100 columns under it.
pub(super) fn wrap_text(prefix: &str, text: &str) -> String {
    let indent = " ".repeat(prefix.len());
    let mut out = String::new();
    let mut line = prefix.to_string();
    for word in text.split_whitespace() {
        if line.len() + word.len() + 1 > 100 && line.len() > prefix.len() {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.clone();
        }
        if line.len() > prefix.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

pub(super) fn wrap_columns(prefix: &str, cols: &[String]) -> String {
    let indent = " ".repeat(prefix.len());
    let mut out = String::new();
    let mut line = prefix.to_string();
    for (k, c) in cols.iter().enumerate() {
        let piece = if k + 1 < cols.len() { format!("{c}, ") } else { c.clone() };
        if line.len() + piece.len() > 100 && line.trim().len() > prefix.trim().len() {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.clone();
        }
        line.push_str(&piece);
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}
