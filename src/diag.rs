//! Diagnostics shared by the stages that read user input (`spec`, `compile`):
//! a message located in a pipeline file, with the task it concerns and a
//! suggestion where one helps. Rendered with `miette` at the CLI edge.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{LabeledSpan, NamedSource, SourceCode};

/// A pipeline file's text, kept so that diagnostics can quote it.
#[derive(Debug)]
pub struct SourceFile {
    /// Path as given (used to resolve relative paths).
    pub path: PathBuf,
    /// Name shown in messages (the path as the user wrote it).
    pub name: String,
    named: NamedSource<String>,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: &Path, text: String) -> Self {
        let name = path.display().to_string();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            path: path.to_path_buf(),
            named: NamedSource::new(name.clone(), text).with_language("yaml"),
            name,
            line_starts,
        }
    }

    pub fn text(&self) -> &str {
        self.named.inner()
    }

    /// Byte offset of a 1-based line and 1-based column counted in characters.
    pub fn offset_of(&self, line: usize, col: usize) -> usize {
        let text = self.text();
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return text.len();
        };
        let line_text = &text[start..];
        let line_end = line_text.find('\n').unwrap_or(line_text.len());
        let line_text = &line_text[..line_end];
        let byte_in_line =
            line_text.char_indices().nth(col.saturating_sub(1)).map(|(i, _)| i).unwrap_or(line_text.len());
        start + byte_in_line
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text().len());
        let line_idx = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line_idx];
        let col = self.text()[start..offset].chars().count() + 1;
        (line_idx + 1, col)
    }

    /// The text of a 1-based line, without its line break.
    pub fn line_text(&self, line: usize) -> Option<&str> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let rest = &self.text()[start..];
        Some(rest[..rest.find('\n').unwrap_or(rest.len())].trim_end_matches('\r'))
    }

    /// Location covering `len` bytes from `offset`.
    pub fn location(&self, offset: usize, len: usize) -> Location {
        let (line, col) = self.line_col(offset);
        Location { offset, len, line, col }
    }
}

/// A place in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Byte offset.
    pub offset: usize,
    /// Length in bytes of the highlighted text (0 for a point).
    pub len: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

/// One problem found in user input.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Stable class of the problem, e.g. `unknown-key`, `cycle`, `sql-plan`.
    pub code: &'static str,
    pub message: String,
    pub source: Option<Arc<SourceFile>>,
    pub location: Option<Location>,
    /// Short text shown under the highlighted source.
    pub label: Option<String>,
    /// The task the problem is in, if any.
    pub task: Option<String>,
    /// A suggestion, e.g. "did you mean `store`?".
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic { code, message: message.into(), source: None, location: None, label: None, task: None, help: None }
    }

    pub fn at(mut self, source: &Arc<SourceFile>, location: Option<Location>) -> Self {
        self.source = Some(source.clone());
        self.location = location;
        self
    }

    pub fn task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// `file:line:col` of the problem, or the file name alone.
    pub fn place(&self) -> Option<String> {
        let source = self.source.as_ref()?;
        Some(match self.location {
            Some(l) => format!("{}:{}:{}", source.name, l.line, l.col),
            None => source.name.clone(),
        })
    }

    /// The message with the task prefixed, as shown in headings.
    pub fn headline(&self) -> String {
        match &self.task {
            Some(t) => format!("task `{t}`: {}", self.message),
            None => self.message.clone(),
        }
    }
}

/// One line: `file:line:col: task `t`: message (help)`. Used in logs and the state store.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(place) = self.place() {
            write!(f, "{place}: ")?;
        }
        write!(f, "{}", self.headline())?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Adapter that renders a [`Diagnostic`] with miette: heading, source excerpt, help.
pub struct Rendered<'a>(pub &'a Diagnostic);

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.headline())?;
        if self.0.location.is_none()
            && let Some(place) = self.0.place()
        {
            write!(f, "\n  in {place}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rendered<'_> {}

impl miette::Diagnostic for Rendered<'_> {
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.0.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.0.location?;
        self.0.source.as_ref().map(|s| &s.named as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let loc = self.0.location?;
        self.0.source.as_ref()?;
        Some(Box::new(std::iter::once(LabeledSpan::new(self.0.label.clone(), loc.offset, loc.len))))
    }
}

/// "did you mean `x`?" for the closest candidate, if one is close enough.
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate closest to `word` by Jaro-Winkler similarity, if similar enough.
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// One diagnostic as text, the way compilers print them (`color` off for logs and pipes).
pub fn render(d: &Diagnostic, color: bool) -> String {
    let theme = if color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100).with_context_lines(1);
    let mut s = String::new();
    if handler.render_report(&mut s, &Rendered(d)).is_err() {
        s = d.to_string();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_round_trip() {
        let src = SourceFile::new(Path::new("p.yaml"), "a: 1\nbé: 2\nc: 3\n".into());
        let off = src.offset_of(2, 3);
        assert_eq!(&src.text()[off..off + 1], ":");
        assert_eq!(src.line_col(off), (2, 3));
        assert_eq!(src.line_text(3), Some("c: 3"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("stor", ["store", "path", "format"]), Some("store"));
        assert_eq!(closest("zzz", ["store", "path"]), None);
        assert_eq!(did_you_mean("ordrs", ["orders", "customers"]).as_deref(), Some("did you mean `orders`?"));
    }
}

/// An error and its causes, as one line: `outer: cause: root cause` (a cause whose text the
/// outer message already holds is not repeated).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cause = c.source();
    }
    s
}

/// Bytes as people read them: `812 B`, `1.8 KB`, `3.4 MB` (powers of 1000), in the CLI's run
/// lines and on the status page alike.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// A length of time as people read it: `850 ms`, `12.34 s`, `4m 05s`, `3h 02m`, `2d 04h`.
pub fn fmt_duration(d: std::time::Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    let s = d.as_secs();
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600)
    }
}
