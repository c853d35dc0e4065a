//! `spec`: read pipeline files, substitute `${...}`, and parse them into the typed
//! [`Pipeline`]. Every problem becomes a [`Diagnostic`] with file, line, column and task;
//! all of them are collected before failing.
//!
//! This stage knows nothing of DataFusion or object stores.

pub mod interp;
pub mod span;
mod types;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

pub use types::*;

use crate::diag::{Diagnostic, Location, SourceFile, did_you_mean};
use crate::secrets::Secrets;
use crate::ypath;
use interp::{InterpError, Interpolator, OffsetMap, VarValue};
use span::{LazySpans, Pos, Seg, SpanIndex, Style, YamlPath};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read pipeline file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("no pipeline files (*.yaml, *.yml) in {0}")]
    NoPipelines(PathBuf),
    #[error("{} problem{} found", .0.len(), if .0.len() == 1 { "" } else { "s" })]
    Invalid(Vec<Diagnostic>),
}

/// Looks up an environment variable (replaceable in tests).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What a load needs besides the file: overrides and the run's built-ins.
#[derive(Clone)]
pub struct LoadOptions {
    /// `--var name=value` overrides, applied over the file's `vars`.
    pub vars: IndexMap<String, String>,
    /// `${run_id}`.
    pub run_id: String,
    /// `${run_date}`, the run's logical date (YYYY-MM-DD).
    pub run_date: String,
    pub env: EnvLookup,
}

impl LoadOptions {
    pub fn new(run_id: impl Into<String>, run_date: impl Into<String>) -> Self {
        LoadOptions {
            vars: IndexMap::new(),
            run_id: run_id.into(),
            run_date: run_date.into(),
            env: Arc::new(|name| std::env::var(name).ok()),
        }
    }
}

/// A parsed pipeline file, with what is needed to point at places in it.
#[derive(Debug)]
pub struct LoadedPipeline {
    /// The pipeline's name (`pipeline:` or the file stem).
    pub name: String,
    pub source: Arc<SourceFile>,
    /// The directory holding the file; relative `file://` URLs resolve against it.
    pub dir: PathBuf,
    pub spec: Pipeline,
    /// Resolved variables, built-ins included.
    pub vars: IndexMap<String, VarValue>,
    pub secrets: Secrets,
    pub spans: LazySpans,
    /// Problems found in the file that do not stop compilation (compile reports them with its
    /// own, so that one run of `weir validate` shows everything).
    pub problems: Vec<Diagnostic>,
    /// Tasks that could not be parsed: they exist for name resolution but have no content.
    pub broken: Vec<String>,
    /// Stores that could not be parsed, likewise.
    pub broken_stores: Vec<String>,
    /// For strings that contained `${`: the text before substitution and where parts came from.
    substituted: HashMap<YamlPath, (String, OffsetMap)>,
}

/// The variables every pipeline has: `run_id`, `run_date`.
pub fn is_builtin_var(name: &str) -> bool {
    name == "run_id" || name == "run_date"
}

impl LoadedPipeline {
    /// Whether the pipeline has a variable `name`: declared under `vars:` or used as
    /// `${name}` somewhere in the file (so that `--var name=…` changes something).
    pub fn uses_var(&self, name: &str) -> bool {
        if self.spec.vars.contains_key(name) {
            return true;
        }
        let text = self.source.text();
        let at = |k: usize| text[k..].starts_with(name) && text[k + name.len()..].starts_with(['}', ':']);
        text.match_indices("${").any(|(k, _)| at(k + 2))
    }
}

/// The pipeline files named by `paths`: files as given, directories by their `*.yaml` /
/// `*.yml` files in name order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, SpecError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| SpecError::Read { path: p.clone(), source: e })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect();
            if found.is_empty() {
                return Err(SpecError::NoPipelines(p.clone()));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// The test files beside the pipeline files of `dir`: `dir/tests/*.yaml` (and `*.yml`),
/// sorted, each parsed; a file that is not a test file is reported with its place.
pub fn load_test_files(dir: &Path) -> Result<Vec<(PathBuf, TestFile)>, SpecError> {
    let tests = dir.join("tests");
    let Ok(entries) = std::fs::read_dir(&tests) else { return Ok(Vec::new()) };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.is_file() && matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    let mut diags = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| SpecError::Read { path: path.clone(), source: e })?;
        let source = Arc::new(SourceFile::new(&path, text));
        let de = serde_yaml::Deserializer::from_str(source.text());
        match serde_path_to_error::deserialize::<_, TestFile>(de) {
            Ok(t) => out.push((path, t)),
            Err(e) => {
                let inner = e.inner();
                let loc = inner.location().map(|l| source.location(l.index(), 0));
                let at = e.path().to_string();
                let msg = inner.to_string();
                let msg = msg.find(" at line ").map_or(msg.clone(), |i| msg[..i].to_string());
                let what = if at == "." { msg } else { format!("{at}: {msg}") };
                diags.push(Diagnostic::new("test-file", format!("invalid test file: {what}")).at(&source, loc));
            }
        }
    }
    if diags.is_empty() { Ok(out) } else { Err(SpecError::Invalid(diags)) }
}

/// Read and parse one pipeline file.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedPipeline, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError::Read { path: path.to_path_buf(), source: e })?;
    parse(path, text, opts)
}

/// Parse a pipeline from text (`path` names it and anchors relative paths).
pub fn parse(path: &Path, text: String, opts: &LoadOptions) -> Result<LoadedPipeline, SpecError> {
    let source = Arc::new(SourceFile::new(path, text));
    let mut p = Parser {
        source: source.clone(),
        spans: LazySpans::new(source.clone()),
        diags: Vec::new(),
        unusable: Vec::new(),
    };

    let mut root: Value = match serde_yaml::from_str(source.text()) {
        Ok(v) => v,
        Err(e) => {
            let mut loc = e.location().map(|l| source.location(l.index(), 0));
            let msg = e.to_string();
            if msg.contains("duplicate entry") {
                // serde_yaml points at the map; point at the repeated key instead.
                let spans = SpanIndex::build(source.text());
                if let Some((parent, pos, key)) = spans.duplicates().first() {
                    let off = source.offset_of(pos.line, pos.col);
                    loc = Some(Location { offset: off, len: key.len(), line: pos.line, col: pos.col });
                    let what = if *parent == ypath!["tasks"] {
                        format!("task `{key}` is defined twice")
                    } else if parent.segments().is_empty() {
                        format!("key `{key}` appears twice")
                    } else {
                        format!("key `{key}` appears twice in `{parent}`")
                    };
                    let d = Diagnostic::new("duplicate-key", what)
                        .at(&source, loc)
                        .help("each key may appear once in a map; task names must be unique");
                    return Err(SpecError::Invalid(vec![d]));
                }
            }
            let msg = match msg.find(" at line ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            let help = msg
                .contains("duplicate entry")
                .then(|| "each key may appear once in a map; task names must be unique".to_string());
            let d = Diagnostic::new("yaml", format!("invalid YAML: {msg}")).at(&source, loc).maybe_help(help);
            return Err(SpecError::Invalid(vec![d]));
        }
    };
    if let Err(e) = root.apply_merge() {
        p.push(Diagnostic::new("yaml", format!("invalid YAML merge key: {e}")).at(&source, None));
        return Err(SpecError::Invalid(p.diags));
    }
    let Value::Mapping(_) = root else {
        let d = Diagnostic::new("yaml", "a pipeline file must be a YAML map with a `tasks:` key")
            .at(&source, Some(source.location(0, 0)));
        return Err(SpecError::Invalid(vec![d]));
    };

    // Variables: built-ins, then the file's in order (each may use the ones before it and the
    // environment), then --var overrides.
    let secrets = Secrets::new();
    let vars = p.resolve_vars(&root, opts, &secrets);

    // Substitute ${...} in every string value except under `vars` (already resolved).
    let mut substituted = HashMap::new();
    {
        let interp = Interpolator { vars: &vars, env: opts.env.as_ref() };
        if let Value::Mapping(m) = &mut root {
            for (k, v) in m.iter_mut() {
                let Some(k) = k.as_str() else { continue };
                if k == "vars" {
                    continue;
                }
                p.substitute(v, &ypath![k], &interp, &secrets, &mut substituted);
            }
        }
    }

    let (spec, broken, broken_stores) = p.typed_pipeline(root);
    let Some(spec) = spec else {
        return Err(SpecError::Invalid(p.diags));
    };
    let name = spec.pipeline.clone().unwrap_or_else(|| {
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pipeline".into())
    });
    let mut broken = broken;
    broken.extend(p.check_shape(&spec, &name));
    for t in std::mem::take(&mut p.unusable) {
        if spec.tasks.contains_key(&t) && !broken.contains(&t) {
            broken.push(t);
        }
    }
    let mut spec = spec;
    spec.tasks.retain(|n, _| !broken.contains(n));
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    Ok(LoadedPipeline {
        name,
        source,
        dir,
        spec,
        vars,
        secrets,
        spans: p.spans,
        problems: p.diags,
        broken,
        broken_stores,
        substituted,
    })
}

struct Parser {
    source: Arc<SourceFile>,
    spans: LazySpans,
    diags: Vec<Diagnostic>,
    /// Tasks with a value that could not be substituted: compiling them would only add noise.
    unusable: Vec<String>,
}

impl Parser {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn loc(&self, pos: Option<Pos>, len: usize) -> Option<Location> {
        let pos = pos?;
        let off = self.source.offset_of(pos.line, pos.col);
        Some(Location { offset: off, len, line: pos.line, col: pos.col })
    }

    /// A diagnostic pointing at the key of `path` (or the nearest ancestor present).
    fn at_key(&self, code: &'static str, path: &YamlPath, message: impl Into<String>) -> Diagnostic {
        let len = match path.segments().last() {
            Some(Seg::Key(k)) if self.spans.get(path).is_some() => k.len(),
            _ => 0,
        };
        let mut d = Diagnostic::new(code, message).at(&self.source, self.loc(self.spans.key_pos(path), len));
        if let Some(t) = path.task() {
            d = d.task(t);
        }
        d
    }

    /// A diagnostic pointing at the value of `path`.
    fn at_value(&self, code: &'static str, path: &YamlPath, len: usize, message: impl Into<String>) -> Diagnostic {
        let mut d = Diagnostic::new(code, message).at(&self.source, self.loc(self.spans.value_pos(path), len));
        if let Some(t) = path.task() {
            d = d.task(t);
        }
        d
    }

    fn resolve_vars(&mut self, root: &Value, opts: &LoadOptions, secrets: &Secrets) -> IndexMap<String, VarValue> {
        let mut vars = IndexMap::new();
        vars.insert("run_id".to_string(), VarValue { value: opts.run_id.clone(), secret: false });
        vars.insert("run_date".to_string(), VarValue { value: opts.run_date.clone(), secret: false });
        if let Some(Value::Mapping(m)) = root.get("vars") {
            for (k, v) in m {
                let Some(name) = k.as_str() else {
                    self.push(self.at_key("vars", &ypath!["vars"], "variable names must be text"));
                    continue;
                };
                let path = ypath!["vars", name];
                if !is_identifier(name) {
                    self.push(
                        self.at_key("vars", &path, format!("invalid variable name `{name}`"))
                            .help("use letters, digits and `_`, starting with a letter or `_`"),
                    );
                    continue;
                }
                if is_builtin_var(name) {
                    self.push(self.at_key(
                        "vars",
                        &path,
                        format!("`{name}` is a built-in variable and cannot be redefined"),
                    ));
                    continue;
                }
                if let Some(o) = opts.vars.get(name) {
                    vars.insert(name.to_string(), VarValue { value: o.clone(), secret: false });
                    continue;
                }
                let raw = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        self.push(self.at_value(
                            "vars",
                            &path,
                            0,
                            format!("variable `{name}` must be a string, number or boolean"),
                        ));
                        continue;
                    }
                };
                let interp = Interpolator { vars: &vars, env: opts.env.as_ref() };
                match interp.interpolate(&raw) {
                    Ok(r) => {
                        for s in &r.env_values {
                            add_secret(secrets, s);
                        }
                        vars.insert(name.to_string(), VarValue { value: r.text, secret: r.secret });
                    }
                    Err(errs) => self.interp_errors(&path, &raw, errs),
                }
            }
        } else if let Some(v) = root.get("vars")
            && !v.is_null()
        {
            self.push(self.at_value("vars", &ypath!["vars"], 0, "`vars` must be a map of name: value"));
        }
        for (k, v) in &opts.vars {
            vars.entry(k.clone()).or_insert_with(|| VarValue { value: v.clone(), secret: false });
        }
        vars
    }

    fn interp_errors(&mut self, path: &YamlPath, raw: &str, errs: Vec<InterpError>) {
        if let Some(t) = path.task() {
            self.unusable.push(t.to_string());
        }
        for e in errs {
            let loc =
                locate_in_scalar(&self.source, &self.spans, path, raw, e.offset).map(|l| Location { len: e.len, ..l });
            let mut d = Diagnostic::new("variable", e.message).at(&self.source, loc).maybe_help(e.help);
            if let Some(t) = path.task() {
                d = d.task(t);
            }
            self.push(d);
        }
    }

    fn substitute(
        &mut self,
        v: &mut Value,
        path: &YamlPath,
        interp: &Interpolator<'_>,
        secrets: &Secrets,
        out: &mut HashMap<YamlPath, (String, OffsetMap)>,
    ) {
        match v {
            Value::String(s) => {
                if !s.contains('$') {
                    return;
                }
                if is_sql_path(path) {
                    let raw = s.clone();
                    for (off, len) in interp.secret_placeholders(&raw) {
                        let loc =
                            locate_in_scalar(&self.source, &self.spans, path, &raw, off).map(|l| Location { len, ..l });
                        let mut d = Diagnostic::new(
                            "secret-in-sql",
                            "values read from the environment are secrets and cannot be used in SQL",
                        )
                        .at(&self.source, loc)
                        .help("pass non-secret values with `vars:` or `--var name=value`");
                        if let Some(t) = path.task() {
                            d = d.task(t);
                            self.unusable.push(t.to_string());
                        }
                        self.push(d);
                    }
                }
                // `${watermark}` in an HTTP extract's path or parameters is filled in at run
                // time by the source: kept as written.
                if is_http_request_path(path) && s.contains(WATERMARK_PLACEHOLDER) {
                    *s = s
                        .replace("$${watermark}", "\u{0}")
                        .replace(WATERMARK_PLACEHOLDER, "$${watermark}")
                        .replace('\u{0}', "$${watermark}");
                }
                match interp.interpolate(s) {
                    Ok(r) => {
                        for e in &r.env_values {
                            add_secret(secrets, e);
                        }
                        let raw = std::mem::replace(s, r.text);
                        out.insert(path.clone(), (raw, r.map));
                    }
                    Err(errs) => {
                        let raw = s.clone();
                        self.interp_errors(path, &raw, errs);
                    }
                }
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.substitute(item, &path.index(i), interp, secrets, out);
                }
            }
            Value::Mapping(m) => {
                for (k, item) in m.iter_mut() {
                    if let Some(k) = k.as_str() {
                        let p = path.key(k);
                        self.substitute(item, &p, interp, secrets, out);
                    }
                }
            }
            Value::Tagged(t) => self.substitute(&mut t.value, path, interp, secrets, out),
            _ => {}
        }
    }

    /// Deserialize the top level, each store and each task separately, so that a problem in
    /// one place does not hide the problems elsewhere. Returns the pipeline (None when its
    /// top level is unusable) and the names of the tasks and stores that failed to parse.
    fn typed_pipeline(&mut self, mut root: Value) -> (Option<Pipeline>, Vec<String>, Vec<String>) {
        let (mut broken_tasks, mut broken_stores) = (Vec::new(), Vec::new());
        let Value::Mapping(map) = &mut root else { return (None, broken_tasks, broken_stores) };
        let tasks_value = map.remove("tasks");
        let stores_value = map.remove("stores");
        map.insert(Value::String("tasks".into()), Value::Mapping(Default::default()));

        // The top level: a key that fails is reported and left out, and the rest parsed again.
        let mut top = None;
        for _ in 0..32 {
            match self.typed::<Pipeline>(&root, &YamlPath::root()) {
                Ok(p) => {
                    top = Some(p);
                    break;
                }
                Err(path) => {
                    let Some(Seg::Key(key)) = path.segments().first().cloned() else { break };
                    let removed = match &mut root {
                        Value::Mapping(m) if key != "tasks" => m.remove(key.as_str()).is_some(),
                        _ => false,
                    };
                    if !removed {
                        break;
                    }
                }
            }
        }

        let mut stores = IndexMap::new();
        match stores_value {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    let Some(name) = k.as_str().map(str::to_string) else { continue };
                    match self.typed::<Store>(&v, &ypath!["stores", &name]) {
                        Ok(st) => {
                            stores.insert(name, st);
                        }
                        Err(_) => broken_stores.push(name),
                    }
                }
            }
            Some(other) => self.push(self.at_value(
                "type",
                &ypath!["stores"],
                0,
                format!("`stores` must be a map of store name: store, found {}", kind_of(&other)),
            )),
        }

        let mut tasks = IndexMap::new();
        match tasks_value {
            None => {
                self.push(
                    self.at_key("missing-key", &YamlPath::root(), "missing required key `tasks`")
                        .help("a pipeline lists its tasks under `tasks:`"),
                );
                return (None, broken_tasks, broken_stores);
            }
            Some(Value::Mapping(m)) => {
                if m.is_empty() {
                    self.push(self.at_key(
                        "missing-key",
                        &ypath!["tasks"],
                        "`tasks` is empty: a pipeline needs at least one task",
                    ));
                }
                for (k, v) in m {
                    let Some(name) = k.as_str().map(str::to_string) else {
                        self.push(self.at_key(
                            "task-name",
                            &ypath!["tasks"],
                            format!("task names must be text, found {}", kind_of(&k)),
                        ));
                        continue;
                    };
                    let path = ypath!["tasks", &name];
                    if v.is_null() {
                        self.push(
                            self.at_key("task-kind", &path, format!("task `{name}` is empty"))
                                .task(&name)
                                .help("give it one of `extract:`, `transform:` or `load:`"),
                        );
                        broken_tasks.push(name);
                        continue;
                    }
                    match self.typed_without_unknown_keys::<Task>(v, &path) {
                        Ok(t) => {
                            tasks.insert(name, t);
                        }
                        Err(_) => broken_tasks.push(name),
                    }
                }
            }
            Some(other) => {
                self.push(self.at_value(
                    "type",
                    &ypath!["tasks"],
                    0,
                    format!("`tasks` must be a map of task name: task, found {}", kind_of(&other)),
                ));
                return (None, broken_tasks, broken_stores);
            }
        }
        let top = top.map(|mut t| {
            t.tasks = tasks;
            t.stores = stores;
            t
        });
        (top, broken_tasks, broken_stores)
    }

    /// Deserialize `v`, reporting each unknown key and leaving it out, so that the rest of a
    /// task with a misspelt key is still compiled (and its other problems, and those of the
    /// tasks that read it, are reported in the same round). Any other problem is final.
    fn typed_without_unknown_keys<T: DeserializeOwned>(
        &mut self,
        mut v: Value,
        base: &YamlPath,
    ) -> Result<T, YamlPath> {
        for attempt in 0..32 {
            let rel = match self.typed::<T>(&v, base) {
                Ok(t) => return Ok(t),
                Err(rel) => rel,
            };
            let code = self.diags.last().map(|d| d.code);
            // A required key missing once a misspelt one is left out is the same mistake
            // (`pth:` for `path:`): said once.
            if attempt > 0 && code == Some("missing-key") {
                self.diags.pop();
                return Err(rel);
            }
            if code != Some("unknown-key") || !remove_at(&mut v, rel.segments()) {
                return Err(rel);
            }
        }
        Err(YamlPath::root())
    }

    /// Deserialize `v`; on failure report it and return the path of the problem.
    fn typed<T: DeserializeOwned>(&mut self, v: &Value, base: &YamlPath) -> Result<T, YamlPath> {
        match serde_path_to_error::deserialize::<_, T>(v) {
            Ok(t) => Ok(t),
            Err(e) => {
                let mut path = base.clone();
                for seg in e.path().iter() {
                    match seg {
                        serde_path_to_error::Segment::Map { key } => path = path.key(key.clone()),
                        serde_path_to_error::Segment::Seq { index } => path = path.index(*index),
                        _ => {}
                    }
                }
                let d = self.serde_error(&path, &e.into_inner().to_string());
                self.push(d);
                Err(path
                    .segments()
                    .get(base.segments().len()..)
                    .map(|rest| {
                        let mut p = YamlPath::root();
                        for s in rest {
                            p = match s {
                                Seg::Key(k) => p.key(k.clone()),
                                Seg::Index(i) => p.index(*i),
                            };
                        }
                        p
                    })
                    .unwrap_or_default())
            }
        }
    }

    /// Turn a serde message into a located diagnostic with a suggestion.
    fn serde_error(&self, path: &YamlPath, msg: &str) -> Diagnostic {
        let ticked =
            |s: &str| -> Vec<String> { s.split('`').skip(1).step_by(2).map(str::to_string).collect::<Vec<_>>() };
        let where_ = if path.segments().is_empty() { "the pipeline".to_string() } else { format!("`{path}`") };
        if let Some(rest) = msg.strip_prefix("unknown field ") {
            let names = ticked(rest);
            let key = names.first().cloned().unwrap_or_default();
            // serde_path_to_error's path ends with the unknown key itself
            let (path, where_) = match path.segments().last() {
                Some(Seg::Key(k)) if *k == key => {
                    let parent = path.parent().unwrap_or_default();
                    let w =
                        if parent.segments().is_empty() { "the pipeline".to_string() } else { format!("`{parent}`") };
                    (parent, w)
                }
                _ => (path.clone(), where_),
            };
            let expected: Vec<&str> = names.iter().skip(1).map(String::as_str).collect();
            let help = did_you_mean(&key, expected.iter().copied())
                .unwrap_or_else(|| format!("known keys here: {}", expected.join(", ")));
            return self.at_key("unknown-key", &path.key(&key), format!("unknown key `{key}` in {where_}")).help(help);
        }
        if let Some(rest) = msg.strip_prefix("unknown variant ") {
            let names = ticked(rest);
            let value = names.first().cloned().unwrap_or_default();
            let expected: Vec<&str> = names.iter().skip(1).map(String::as_str).collect();
            let help = did_you_mean(&value, expected.iter().copied())
                .unwrap_or_else(|| format!("expected one of: {}", expected.join(", ")));
            return self
                .at_value("unknown-value", path, value.len(), format!("unknown value `{value}` for `{path}`"))
                .help(help);
        }
        if let Some(rest) = msg.strip_prefix("missing field ") {
            let key = ticked(rest).into_iter().next().unwrap_or_default();
            return self.at_key("missing-key", path, format!("missing required key `{key}` in {where_}"));
        }
        if msg.contains("found unit value, expected field identifier") {
            return self
                .at_value(
                    "unknown-key",
                    path,
                    0,
                    format!("a key in `{path}` is YAML's null (`null` or `~`), not a name"),
                )
                .help("quote it if you meant the word: `\"null\": …`; for the CSV null text the key is `null_value`");
        }
        if msg.contains("did not match any variant of untagged enum Scalar") {
            return self.at_value("type", path, 0, format!("`{path}` must be a string, number or boolean"));
        }
        let msg = msg.replace("invalid type: ", "wrong type: found ");
        self.at_value("type", path, 0, format!("{msg} at `{path}`"))
    }

    /// Structural rules the types cannot express.
    /// Returns the tasks whose shape is wrong (they are left out of compilation).
    fn check_shape(&mut self, spec: &Pipeline, name: &str) -> Vec<String> {
        let mut broken = Vec::new();
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') || name.is_empty() {
            let path = ypath!["pipeline"];
            self.push(
                self.at_value("pipeline-name", &path, name.len(), format!("invalid pipeline name `{name}`"))
                    .help("use letters, digits, `_` and `-`"),
            );
        }
        if let Some(f) = &spec.freshness {
            self.check_duration(&ypath!["freshness", "warn_after"], Some(&f.warn_after));
            self.check_duration(&ypath!["freshness", "remind_every"], f.remind_every.as_ref());
        }
        if let Some(o) = &spec.openlineage {
            self.check_duration(&ypath!["openlineage", "timeout"], o.timeout.as_ref());
        }
        if spec.max_parallel == Some(0) {
            self.push(self.at_value("range", &ypath!["max_parallel"], 1, "`max_parallel` must be at least 1"));
        }
        if let Some(d) = &spec.defaults {
            self.check_duration(&ypath!["defaults", "retry_backoff"], d.retry_backoff.as_ref());
            self.check_duration(&ypath!["defaults", "timeout"], d.timeout.as_ref());
        }
        for (sname, _) in &spec.stores {
            if !is_identifier(sname) {
                self.push(
                    self.at_key("store-name", &ypath!["stores", sname], format!("invalid store name `{sname}`"))
                        .help("use letters, digits and `_`, starting with a letter or `_`"),
                );
            }
        }
        for (tname, task) in &spec.tasks {
            let path = ypath!["tasks", tname];
            if !is_task_name(tname) {
                let lower: String = tname
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
                    .collect();
                broken.push(tname.clone());
                self.push(
                    self.at_key("task-name", &path, format!("invalid task name `{tname}`"))
                        .help(format!(
                            "task names are table names in SQL: lowercase letters, digits and `_`, starting with a letter or `_` (e.g. `{lower}`)"
                        )),
                );
            }
            let kinds: Vec<&str> = [
                task.extract.as_ref().map(|_| "extract"),
                task.transform.as_ref().map(|_| "transform"),
                task.load.as_ref().map(|_| "load"),
            ]
            .into_iter()
            .flatten()
            .collect();
            if kinds.len() != 1 {
                broken.push(tname.clone());
            }
            match kinds.len() {
                0 => self.push(
                    self.at_key(
                        "task-kind",
                        &path,
                        format!("task `{tname}` has none of `extract`, `transform`, `load`"),
                    )
                    .help("a task does exactly one of them"),
                ),
                1 => {}
                _ => self.push(
                    self.at_key(
                        "task-kind",
                        &path.key(kinds[1]),
                        format!("task `{tname}` has both `{}` and `{}`", kinds[0], kinds[1]),
                    )
                    .help("a task does exactly one thing: split it into two tasks"),
                ),
            }
            self.check_duration(&path.key("retry_backoff"), task.retry_backoff.as_ref());
            self.check_duration(&path.key("timeout"), task.timeout.as_ref());
            if let Some(e) = &task.extract
                && let Some(inc) = &e.incremental
                && !inc.new_files
                && inc.watermark.is_none()
                && inc.cdc.is_none()
            {
                self.push(
                    self.at_key(
                        "incremental",
                        &path.key("extract").key("incremental"),
                        "`incremental` says neither `new_files: true`, `watermark` nor `cdc`",
                    )
                    .help("read new files with `new_files: true`, new rows with `watermark: { column: … }`, a table's changes with `cdc: { slot: … }`; or remove `incremental`"),
                );
            }
        }
        broken
    }

    fn check_duration(&mut self, path: &YamlPath, d: Option<&Duration>) {
        if let Some(d) = d
            && let Err(e) = parse_duration(d)
        {
            self.push(
                self.at_value("duration", path, d.0.len(), format!("invalid duration `{}`: {e}", d.0))
                    .help("write a number with a unit, e.g. `500ms`, `5s`, `10m`, `2h`"),
            );
        }
    }
}

pub(crate) fn add_secret(secrets: &Secrets, value: &str) {
    secrets.add(value);
    crate::secrets::global().add(value);
}

pub fn parse_duration(d: &Duration) -> Result<std::time::Duration, String> {
    humantime::parse_duration(d.0.trim()).map_err(|e| e.to_string())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Paths whose string is SQL (secrets are refused there).
/// The placeholder of an HTTP extract's committed watermark.
pub const WATERMARK_PLACEHOLDER: &str = "${watermark}";

/// `tasks.<t>.extract.http.path` and `tasks.<t>.extract.http.params.<p>`.
fn is_http_request_path(path: &YamlPath) -> bool {
    match path.segments() {
        [Seg::Key(t), _, Seg::Key(e), Seg::Key(h), Seg::Key(f)] => {
            t == "tasks" && e == "extract" && h == "http" && f == "path"
        }
        [Seg::Key(t), _, Seg::Key(e), Seg::Key(h), Seg::Key(f), _] => {
            t == "tasks" && e == "extract" && h == "http" && f == "params"
        }
        _ => false,
    }
}

fn is_sql_path(path: &YamlPath) -> bool {
    match path.segments() {
        [Seg::Key(t), _, Seg::Key(k), Seg::Key(f)] => {
            t == "tasks" && ((k == "transform" && f == "sql") || (k == "load" && f == "delete_when"))
        }
        [Seg::Key(t), _, Seg::Key(k), Seg::Index(_), Seg::Key(f)] => {
            t == "tasks" && k == "checks" && (f == "sql" || f == "expression")
        }
        _ => false,
    }
}

pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Task names are SQL table names: lowercase so that unquoted SQL finds them.
pub fn is_task_name(s: &str) -> bool {
    is_identifier(s) && !s.chars().any(|c| c.is_ascii_uppercase())
}

/// The file position of byte `offset` within the string value at `path` (`raw` is that
/// value as written, before substitution).
fn locate_in_scalar(
    source: &SourceFile,
    spans: &SpanIndex,
    path: &YamlPath,
    raw: &str,
    offset: usize,
) -> Option<Location> {
    let node = spans.get(path)?;
    let offset = offset.min(raw.len());
    let before = &raw[..offset];
    let (line, col) = match node.style {
        Style::Plain | Style::Collection => (node.value.line, node.value.col + before.chars().count()),
        Style::SingleQuoted | Style::DoubleQuoted => {
            let nl = before.matches('\n').count();
            if nl == 0 {
                (node.value.line, node.value.col + 1 + before.chars().count())
            } else {
                (node.value.line, node.value.col)
            }
        }
        Style::Literal | Style::Folded => {
            // The marker of a block scalar is its first content line, at the block's indentation.
            let first = node.value.line;
            let indent = node.value.col - 1;
            let k = before.matches('\n').count();
            let col_chars = before.rsplit('\n').next().unwrap_or("").chars().count();
            if node.style == Style::Folded && k == 0 && before.contains(' ') {
                // Folded lines are joined with spaces: point at the start of the block.
                (first, indent + 1)
            } else {
                (first + k, indent + col_chars + 1)
            }
        }
    };
    let off = source.offset_of(line, col);
    Some(Location { offset: off, len: 0, line, col })
}

impl LoadedPipeline {
    /// A diagnostic pointing at the key of `path` in this file.
    pub fn diag_key(&self, code: &'static str, path: &YamlPath, message: impl Into<String>) -> Diagnostic {
        let len = match path.segments().last() {
            Some(Seg::Key(k)) if self.spans.get(path).is_some() => k.len(),
            _ => 0,
        };
        let loc = self.spans.key_pos(path).map(|p| self.pos_loc(p, len));
        let mut d = Diagnostic::new(code, message).at(&self.source, loc);
        if let Some(t) = path.task() {
            d = d.task(t);
        }
        d
    }

    /// A diagnostic pointing at the value of `path`; `len` bytes are highlighted.
    pub fn diag_value(
        &self,
        code: &'static str,
        path: &YamlPath,
        len: usize,
        message: impl Into<String>,
    ) -> Diagnostic {
        let quoted = matches!(self.spans.get(path).map(|n| n.style), Some(Style::SingleQuoted | Style::DoubleQuoted));
        let loc = self.spans.value_pos(path).map(|p| self.pos_loc(p, if quoted { len + 2 } else { len }));
        let mut d = Diagnostic::new(code, message).at(&self.source, loc);
        if let Some(t) = path.task() {
            d = d.task(t);
        }
        d
    }

    /// A diagnostic pointing inside the string at `path`: `offset`/`len` are byte offsets in
    /// the substituted text (`text`), e.g. an SQL error's position.
    pub fn diag_in_value(
        &self,
        code: &'static str,
        path: &YamlPath,
        text: &str,
        offset: usize,
        len: usize,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (raw, raw_off, raw_len) = match self.substituted.get(path) {
            Some((raw, map)) => {
                let start = map.to_source(offset);
                let end = map.to_source(offset + len).max(start);
                (raw.as_str(), start, end - start)
            }
            None => (text, offset, len),
        };
        let loc =
            locate_in_scalar(&self.source, &self.spans, path, raw, raw_off).map(|l| Location { len: raw_len, ..l });
        let loc = loc.or_else(|| self.spans.value_pos(path).map(|p| self.pos_loc(p, 0)));
        let mut d = Diagnostic::new(code, message).at(&self.source, loc);
        if let Some(t) = path.task() {
            d = d.task(t);
        }
        d
    }

    fn pos_loc(&self, p: Pos, len: usize) -> Location {
        let offset = self.source.offset_of(p.line, p.col);
        let len = len.min(self.source.text().len().saturating_sub(offset));
        Location { offset, len, line: p.line, col: p.col }
    }

    /// Resolved retries / backoff / timeout for a task (task value, else defaults).
    pub fn task_policy(&self, task: &Task) -> TaskPolicy {
        let d = self.spec.defaults.clone().unwrap_or_default();
        let dur = |x: Option<&Duration>| x.and_then(|x| parse_duration(x).ok());
        TaskPolicy {
            retries: task.retries.or(d.retries).unwrap_or(0),
            retry_backoff: dur(task.retry_backoff.as_ref().or(d.retry_backoff.as_ref()))
                .unwrap_or(std::time::Duration::from_secs(5)),
            timeout: dur(task.timeout.as_ref().or(d.timeout.as_ref())),
        }
    }
}

/// How a task is retried and timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskPolicy {
    pub retries: u32,
    pub retry_backoff: std::time::Duration,
    pub timeout: Option<std::time::Duration>,
}

/// The JSON Schema of pipeline files.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Pipeline);
    serde_json::to_value(&schema).unwrap_or(serde_json::Value::Null)
}

/// A size like `2GB`, `512MiB`, `1.5G` or `1000000` (bytes); `K`/`M`/`G`/`T` are powers of 1024
/// with or without `i`/`B` (as memory is counted).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a size (write e.g. 2GB, 512MiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().trim_end_matches('B').trim_end_matches('I') {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (write e.g. 2GB, 512MiB)")),
    };
    let bytes = n * mult;
    if !(1.0..=(usize::MAX as f64)).contains(&bytes) {
        return Err(format!("`{s}` is not a usable size"));
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LoadOptions {
        let mut o = LoadOptions::new("r1", "2026-01-02");
        o.env = Arc::new(|n| (n == "SECRET").then(|| "hunter22".to_string()));
        o
    }

    fn diags(text: &str) -> Vec<Diagnostic> {
        match parse(Path::new("p.yaml"), text.to_string(), &opts()) {
            Err(SpecError::Invalid(d)) => d,
            Ok(p) if !p.problems.is_empty() => p.problems,
            Ok(_) => panic!("expected errors"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn parses_a_pipeline() {
        let text = "vars: { region: north, tag: \"${region}-${run_date}\" }\nstores: { raw: { url: \"file://data\" } }\ntasks:\n  orders:\n    extract: { store: raw, path: \"o/*.csv\" }\n  t:\n    transform:\n      sql: SELECT * FROM orders WHERE r = '${tag}'\n";
        let p = parse(Path::new("dir/daily.yaml"), text.into(), &opts()).unwrap();
        assert_eq!(p.name, "daily");
        assert_eq!(p.dir, PathBuf::from("dir"));
        assert_eq!(p.vars["tag"].value, "north-2026-01-02");
        let sql = &p.spec.tasks["t"].transform.as_ref().unwrap().sql;
        assert_eq!(sql, "SELECT * FROM orders WHERE r = 'north-2026-01-02'");
    }

    #[test]
    fn collects_errors_from_every_task() {
        let text = "tasks:\n  a:\n    extract: { stor: raw, path: x.csv }\n  b:\n    load: { from: a, store: lake, path: out/, mode: apend }\n  c:\n    transform: { sql: SELECT 1 }\n    checks: [x]\n";
        let d = diags(text);
        assert_eq!(d.len(), 3, "{d:#?}");
        assert_eq!(d[0].message, "unknown key `stor` in `tasks.a.extract`");
        assert_eq!(d[0].help.as_deref(), Some("did you mean `store`?"));
        assert_eq!((d[0].location.unwrap().line, d[0].location.unwrap().col), (3, 16));
        assert_eq!(d[0].task.as_deref(), Some("a"));
        assert_eq!(d[1].message, "unknown value `apend` for `tasks.b.load.mode`");
        assert_eq!(d[1].help.as_deref(), Some("did you mean `append`?"));
        assert_eq!(d[1].location.unwrap().line, 5);
        assert_eq!(d[2].code, "type", "{d:#?}");
        assert_eq!(d[2].location.unwrap().line, 8);
    }

    #[test]
    fn secrets_refused_in_sql_and_registered() {
        let text = "vars: { pw: \"${env:SECRET}\" }\ntasks:\n  t:\n    transform:\n      sql: |\n        SELECT 1\n        WHERE x = '${pw}'\n";
        let d = diags(text);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, "secret-in-sql");
        let l = d[0].location.unwrap();
        assert_eq!((l.line, l.col), (7, 20));
    }

    #[test]
    fn locates_inside_literal_sql_after_substitution() {
        let text = "vars: { longer_name: x }\ntasks:\n  t:\n    transform:\n      sql: |\n        SELECT '${longer_name}' AS a,\n          bad_col\n";
        let p = parse(Path::new("p.yaml"), text.into(), &opts()).unwrap();
        let path = ypath!["tasks", "t", "transform", "sql"];
        let sql = &p.spec.tasks["t"].transform.as_ref().unwrap().sql;
        let off = sql.find("bad_col").unwrap();
        let d = p.diag_in_value("sql", &path, sql, off, 7, "x");
        let l = d.location.unwrap();
        assert_eq!((l.line, l.col, l.len), (7, 11, 7));
        // on the same line as a substitution, columns shift by the placeholder's length
        let off = sql.find("AS").unwrap();
        let l = p.diag_in_value("sql", &path, sql, off, 2, "x").location.unwrap();
        assert_eq!((l.line, l.col), (6, 33));
    }

    #[test]
    fn yaml_syntax_and_duplicates() {
        let d = diags("tasks:\n  a: { extract: { store: raw, path: x }\n");
        assert_eq!(d[0].code, "yaml");
        let d = diags("tasks:\n  a:\n    transform: { sql: SELECT 1 }\n  a:\n    transform: { sql: SELECT 2 }\n");
        assert_eq!(d[0].code, "duplicate-key");
        assert_eq!(d[0].message, "task `a` is defined twice");
        assert_eq!(d[0].location.unwrap().line, 4);
    }

    #[test]
    fn task_shape_rules() {
        let d = diags(
            "tasks:\n  Orders:\n    transform: { sql: SELECT 1 }\n  both:\n    transform: { sql: SELECT 1 }\n    load: { from: x, store: s, path: p }\n  none:\n    depends_on: [both]\n",
        );
        let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "invalid task name `Orders`",
                "task `both` has both `transform` and `load`",
                "task `none` has none of `extract`, `transform`, `load`"
            ]
        );
    }
}

/// Remove the entry at `path` (a key of a mapping, an item of a sequence) from `v`.
fn remove_at(v: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut cur = v;
    for seg in parents {
        cur = match (seg, cur) {
            (Seg::Key(k), Value::Mapping(m)) => match m.get_mut(k.as_str()) {
                Some(next) => next,
                None => return false,
            },
            (Seg::Index(i), Value::Sequence(items)) => match items.get_mut(*i) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Seg::Key(k), Value::Mapping(m)) => m.remove(k.as_str()).is_some(),
        _ => false,
    }
}
