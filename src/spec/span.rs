//! Where each YAML node is in the file, by path (`tasks.orders.extract.store`), so that
//! every later error can point at a line and column. Built from `yaml-rust2`'s marked
//! events; the typed values themselves come from `serde_yaml`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A path to a YAML node: map keys and sequence indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct YamlPath(Vec<Seg>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl YamlPath {
    pub fn root() -> Self {
        YamlPath(Vec::new())
    }

    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.into()));
        p
    }

    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    pub fn segments(&self) -> &[Seg] {
        &self.0
    }

    pub fn parent(&self) -> Option<YamlPath> {
        if self.0.is_empty() { None } else { Some(YamlPath(self.0[..self.0.len() - 1].to_vec())) }
    }

    /// `tasks.orders` when the path starts with `tasks.<name>`.
    pub fn task(&self) -> Option<&str> {
        match self.0.as_slice() {
            [Seg::Key(t), Seg::Key(name), ..] if t == "tasks" => Some(name),
            _ => None,
        }
    }
}

impl std::fmt::Display for YamlPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Build a path from string keys: `ypath!["tasks", name, "extract"]`.
#[macro_export]
macro_rules! ypath {
    ($($k:expr),* $(,)?) => {{
        let p = $crate::spec::span::YamlPath::root();
        $( let p = p.key($k); )*
        p
    }};
}

/// 1-based line and column (in characters), as yaml-rust2 reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos { line: m.line(), col: m.col() + 1 }
    }
}

/// How a scalar was written, to map offsets inside it (SQL errors) back to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
    Collection,
}

#[derive(Debug, Clone, Copy)]
pub struct NodeSpan {
    /// Where the key is, for map entries.
    pub key: Option<Pos>,
    /// Where the value starts.
    pub value: Pos,
    pub style: Style,
}

/// A [`SpanIndex`] built on first use: a valid pipeline that needs no message never pays for
/// the second parse of its file.
#[derive(Debug)]
pub struct LazySpans {
    text: std::sync::Arc<crate::diag::SourceFile>,
    index: std::sync::OnceLock<SpanIndex>,
}

impl LazySpans {
    pub fn new(text: std::sync::Arc<crate::diag::SourceFile>) -> Self {
        LazySpans { text, index: std::sync::OnceLock::new() }
    }
}

impl std::ops::Deref for LazySpans {
    type Target = SpanIndex;
    fn deref(&self) -> &SpanIndex {
        self.index.get_or_init(|| SpanIndex::build(self.text.text()))
    }
}

#[derive(Debug, Default)]
pub struct SpanIndex {
    nodes: HashMap<YamlPath, NodeSpan>,
    /// Keys that appear twice in one map: (map path, position of the repeat, key).
    duplicates: Vec<(YamlPath, Pos, String)>,
}

impl SpanIndex {
    /// Index a YAML document. Returns an empty index if the text does not parse (the
    /// serde_yaml error reports that).
    pub fn build(text: &str) -> SpanIndex {
        let mut b = Builder { index: SpanIndex::default(), stack: Vec::new() };
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut b, false).is_err() {
            return b.index;
        }
        b.index
    }

    pub fn duplicates(&self) -> &[(YamlPath, Pos, String)] {
        &self.duplicates
    }

    pub fn get(&self, path: &YamlPath) -> Option<&NodeSpan> {
        self.nodes.get(path)
    }

    /// Position of the key of `path`, or the value, or the nearest ancestor's.
    pub fn key_pos(&self, path: &YamlPath) -> Option<Pos> {
        let mut p = Some(path.clone());
        while let Some(cur) = p {
            if let Some(n) = self.nodes.get(&cur) {
                return Some(n.key.unwrap_or(n.value));
            }
            p = cur.parent();
        }
        None
    }

    /// Position of the value of `path`, or the nearest ancestor's.
    pub fn value_pos(&self, path: &YamlPath) -> Option<Pos> {
        let mut p = Some(path.clone());
        while let Some(cur) = p {
            if let Some(n) = self.nodes.get(&cur) {
                return Some(n.value);
            }
            p = cur.parent();
        }
        None
    }

    /// The keys present in the map at `path`, in file order.
    pub fn keys_of(&self, path: &YamlPath) -> Vec<(String, Pos)> {
        let depth = path.0.len();
        let mut keys: Vec<(String, Pos)> = self
            .nodes
            .iter()
            .filter(|(p, _)| p.0.len() == depth + 1 && p.0[..depth] == path.0[..])
            .filter_map(|(p, n)| match (&p.0[depth], n.key) {
                (Seg::Key(k), Some(pos)) => Some((k.clone(), pos)),
                _ => None,
            })
            .collect();
        keys.sort_by_key(|(_, p)| (p.line, p.col));
        keys
    }
}

enum Frame {
    Map { path: YamlPath, pending_key: Option<(String, Pos)> },
    Seq { path: YamlPath, next: usize },
}

struct Builder {
    index: SpanIndex,
    stack: Vec<Frame>,
}

impl Builder {
    /// The path and key position the next value gets, advancing the parent frame.
    fn take_slot(&mut self) -> Option<(YamlPath, Option<Pos>)> {
        match self.stack.last_mut() {
            None => Some((YamlPath::root(), None)),
            Some(Frame::Map { path, pending_key }) => {
                let (k, pos) = pending_key.take()?;
                Some((path.key(k), Some(pos)))
            }
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                Some((p, None))
            }
        }
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { pending_key: None, .. }))
    }

    fn record(&mut self, path: YamlPath, key: Option<Pos>, value: Pos, style: Style) {
        match self.index.nodes.entry(path) {
            std::collections::hash_map::Entry::Occupied(e) => {
                if let (Some(k), Some(Seg::Key(name))) = (key, e.key().segments().last()) {
                    let parent = e.key().parent().unwrap_or_default();
                    self.index.duplicates.push((parent, k, name.clone()));
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(NodeSpan { key, value, style });
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::Scalar(value, style, _, _) => {
                if self.expecting_key() {
                    if let Some(Frame::Map { pending_key, .. }) = self.stack.last_mut() {
                        *pending_key = Some((value, pos));
                    }
                    return;
                }
                if let Some((path, key)) = self.take_slot() {
                    let style = match style {
                        TScalarStyle::Plain => Style::Plain,
                        TScalarStyle::SingleQuoted => Style::SingleQuoted,
                        TScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                        TScalarStyle::Literal => Style::Literal,
                        TScalarStyle::Folded => Style::Folded,
                    };
                    self.record(path, key, pos, style);
                }
            }
            Event::Alias(_) => {
                if self.expecting_key() {
                    // An aliased key: rare; give it a placeholder name so the map stays in step.
                    if let Some(Frame::Map { pending_key, .. }) = self.stack.last_mut() {
                        *pending_key = Some(("<alias>".into(), pos));
                    }
                    return;
                }
                if let Some((path, key)) = self.take_slot() {
                    self.record(path, key, pos, Style::Plain);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                if self.expecting_key() {
                    // A complex (non-scalar) key: track it without recording positions.
                    if let Some(Frame::Map { pending_key, .. }) = self.stack.last_mut() {
                        *pending_key = Some(("<complex>".into(), pos));
                    }
                    self.stack.push(if is_map {
                        Frame::Map { path: YamlPath(vec![Seg::Key("<complex-key>".into())]), pending_key: None }
                    } else {
                        Frame::Seq { path: YamlPath(vec![Seg::Key("<complex-key>".into())]), next: 0 }
                    });
                    return;
                }
                let (path, key) = self.take_slot().unwrap_or((YamlPath(vec![Seg::Key("<lost>".into())]), None));
                self.record(path.clone(), key, pos, Style::Collection);
                self.stack.push(if is_map {
                    Frame::Map { path, pending_key: None }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys_and_values() {
        let text = "pipeline: p\ntasks:\n  orders:\n    extract: { store: raw, path: \"a.csv\" }\n  t:\n    transform:\n      sql: |\n        SELECT 1\nlist: [a, b]\n";
        let idx = SpanIndex::build(text);
        let store = idx.get(&ypath!["tasks", "orders", "extract", "store"]).unwrap();
        assert_eq!(store.key, Some(Pos { line: 4, col: 16 }));
        assert_eq!(store.value, Pos { line: 4, col: 23 });
        let path = idx.get(&ypath!["tasks", "orders", "extract", "path"]).unwrap();
        assert_eq!(path.style, Style::DoubleQuoted);
        let sql = idx.get(&ypath!["tasks", "t", "transform", "sql"]).unwrap();
        assert_eq!(sql.style, Style::Literal);
        assert_eq!(sql.key, Some(Pos { line: 7, col: 7 }));
        assert!(idx.get(&ypath!["list"].index(1)).is_some());
        let keys: Vec<String> = idx.keys_of(&ypath!["tasks"]).into_iter().map(|k| k.0).collect();
        assert_eq!(keys, ["orders", "t"]);
        // a path that does not exist falls back to its nearest ancestor
        assert_eq!(idx.key_pos(&ypath!["tasks", "orders", "nope"]), Some(Pos { line: 3, col: 3 }));
    }
}
