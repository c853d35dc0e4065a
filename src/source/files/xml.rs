//! XML files as a source (`format: xml`): the elements at `xml.record` are the rows, the
//! values at `xml.fields`' paths their columns.
//!
//! - **Streaming.** A file is read in chunks (decompressed on the way) on a blocking thread,
//!   in bounded memory whatever its size: quick-xml's reader over a slice (twice as fast as
//!   over a `BufRead`) tokenizes one window at a time, the bytes arrived up to the last `<`
//!   (`Feed`); markup a window cuts is read again at the start of the next. Namespaces are
//!   resolved by quick-xml's resolver, pushed only by the elements that declare some (the
//!   namespace-aware reader pushes every element: most of its cost on documents without
//!   any). The reader keeps, for each open element, the paths it can still lead to (the
//!   record's, the fields'); an element on none of them is skipped whole, its events only
//!   counted, and only the selected values are decoded.
//! - **Values.** An element's text (its text and CDATA, entities resolved; NULL when it has
//!   none), or an attribute's value. Absolute paths capture a value outside the record (a
//!   header) that applies to the records after it, until the element enclosing both ends.
//!   `[]` makes a list with one item per occurrence. Text is converted to the `schema:` types
//!   batch by batch (surrounding whitespace trimmed for non-text types).
//! - **Malformed input** is a bad row with file, line and column: a value that is not of its
//!   type, an element that repeats where one is expected, an end tag that does not match, an
//!   unknown entity, a file that ends inside a record. With `bad_rows: fail` the first stops
//!   the run; `skip` and `quarantine` drop the record and go on. A syntax error the reader
//!   cannot resynchronize from ends the file with one bad row saying so.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, ListBuilder, RecordBatch, StringBuilder};
use datafusion::arrow::compute::{CastOptions, cast_with_options, filter};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{StreamExt, TryStreamExt};
use indexmap::IndexMap;
use object_store::{GetOptions, ObjectMeta, ObjectStore};
use quick_xml::Reader;
use quick_xml::events::Event;
use quick_xml::name::{NamespaceResolver, ResolveResult};
use smallvec::SmallVec;

use super::InputFormat;
use super::tolerant::{BadRow, BadRows};

/// Rows per batch.
const BATCH_ROWS: usize = 8192;
/// Chunks of a file in flight between the fetching task and the parsing thread.
const CHUNKS_IN_FLIGHT: usize = 2;
/// Bytes of an uncompressed file read at a time.
const FETCH: u64 = 2 << 20;
/// Decompressed bytes handed to the parser at a time.
const GATHER: usize = 1 << 20;

/// One step of a path: an element (or attribute) name, with the namespace URI its prefix
/// stands for (`None`: any namespace).
#[derive(Debug, Clone, PartialEq)]
struct Step {
    ns: Option<Vec<u8>>,
    local: Vec<u8>,
}

impl Step {
    fn matches(&self, ns: &ResolveResult, local: &[u8]) -> bool {
        self.local == local
            && match &self.ns {
                None => true,
                Some(uri) => matches!(ns, ResolveResult::Bound(n) if n.as_ref() == uri.as_slice()),
            }
    }
}

/// FNV-1a: element names are short, and std's SipHash cost 4% of a read.
#[derive(Debug, Clone, Copy, Default)]
struct Fnv;

impl std::hash::BuildHasher for Fnv {
    type Hasher = FnvHasher;
    fn build_hasher(&self) -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

struct FnvHasher(u64);

impl std::hash::Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A column's path, compiled.
#[derive(Debug, Clone)]
struct FieldPath {
    /// Outside the record, from the root (`absolute`), or below the record.
    absolute: bool,
    /// Element steps (empty: the record itself).
    steps: Vec<Step>,
    /// The step after which `[]` stands: one list item per occurrence of that element.
    list_at: Option<usize>,
    /// An attribute of the last element, instead of its text.
    attr: Option<Step>,
    /// Absolute paths: how many leading steps they share with the record's path (the value
    /// holds until the element at that depth ends).
    scope: usize,
}

/// How an extract's XML files become rows (compile resolved it).
#[derive(Debug, Clone)]
pub struct XmlPlan {
    record: Vec<Step>,
    /// The relative fields by the local name of their first step (the record's children are
    /// most of the elements read: one lookup each).
    first_step: std::collections::HashMap<Vec<u8>, Vec<usize>, Fnv>,
    /// Column names, in order.
    pub columns: Vec<String>,
    fields: Vec<FieldPath>,
}

impl XmlPlan {
    /// The plan of `record` and `fields` (name → path) with `namespaces` (prefix → URI); the
    /// problems, by field (`None`: the record path), when a path does not parse.
    pub fn new(
        record: &str,
        fields: &IndexMap<String, String>,
        namespaces: Option<&IndexMap<String, String>>,
    ) -> std::result::Result<XmlPlan, Vec<(Option<String>, String)>> {
        let mut problems = Vec::new();
        let step = |s: &str| -> std::result::Result<Step, String> {
            let (prefix, local) = match s.split_once(':') {
                Some((p, l)) => (Some(p), l),
                None => (None, s),
            };
            if local.is_empty() || local.contains(['[', ']', '@', ' ', '*']) {
                return Err(format!("`{s}` is not an element name"));
            }
            let ns = match prefix {
                None => None,
                Some(p) => match namespaces.and_then(|n| n.get(p)) {
                    Some(uri) => Some(uri.as_bytes().to_vec()),
                    None => return Err(format!("prefix `{p}` is not in `namespaces`")),
                },
            };
            Ok(Step { ns, local: local.as_bytes().to_vec() })
        };
        let mut record_steps = Vec::new();
        match record.strip_prefix('/') {
            Some(rest) if !rest.is_empty() => {
                for s in rest.split('/') {
                    match step(s) {
                        Ok(st) => record_steps.push(st),
                        Err(e) => problems.push((None, e)),
                    }
                }
            }
            _ => problems.push((None, format!("`{record}` is not an absolute path such as `/ORDERS/ORDER`"))),
        }
        let mut out = Vec::new();
        for (name, path) in fields {
            let mut problem = |e: String| problems.push((Some(name.clone()), e));
            let absolute = path.starts_with('/');
            let body = path.trim_start_matches('/');
            let mut parts: Vec<&str> = if body == "." || body.is_empty() { vec![] } else { body.split('/').collect() };
            let attr = match parts.last() {
                Some(last) if last.starts_with('@') => {
                    let a = &last[1..];
                    parts.pop();
                    match step(a) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            problem(e);
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let mut steps = Vec::new();
            let mut list_at = None;
            let mut bad = false;
            for (k, part) in parts.iter().enumerate() {
                let name = match part.strip_suffix("[]") {
                    Some(n) => {
                        if list_at.is_some() {
                            problem(format!("`{path}` has `[]` twice: one list per column"));
                            bad = true;
                        }
                        list_at = Some(k);
                        n
                    }
                    None => part,
                };
                match step(name) {
                    Ok(s) => steps.push(s),
                    Err(e) => {
                        problem(format!("in `{path}`: {e}"));
                        bad = true;
                    }
                }
            }
            if bad {
                continue;
            }
            let mut scope = 0;
            // (Against a record path that did not parse, there is nothing to check.)
            if absolute && !record_steps.is_empty() {
                if steps.is_empty() {
                    problem(format!("`{path}` names no element"));
                    continue;
                }
                if list_at.is_some() {
                    problem(format!("`{path}`: `[]` applies to paths below the record"));
                    continue;
                }
                scope = steps.iter().zip(&record_steps).take_while(|(a, b)| a == b).count();
                if scope == record_steps.len() {
                    let rel = path.trim_start_matches(record).trim_start_matches('/');
                    problem(format!(
                        "`{path}` is inside the record: write it relative to it (`{}`)",
                        if rel.is_empty() { "." } else { rel }
                    ));
                    continue;
                }
                if scope == steps.len() && attr.is_none() {
                    problem(format!(
                        "`{path}` encloses the record: name a value (an element beside it, or `@attribute`)"
                    ));
                    continue;
                }
            }
            out.push(FieldPath { absolute, steps, list_at, attr, scope });
        }
        if fields.is_empty() {
            problems.push((None, "`fields` names no column".into()));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut first_step: std::collections::HashMap<Vec<u8>, Vec<usize>, Fnv> = Default::default();
        for (k, f) in out.iter().enumerate() {
            if !f.absolute
                && let Some(s) = f.steps.first()
            {
                first_step.entry(s.local.clone()).or_default().push(k);
            }
        }
        Ok(XmlPlan { record: record_steps, first_step, columns: fields.keys().cloned().collect(), fields: out })
    }

    /// Whether column `k` is a list.
    /// The depth of the elements a big file may be cut before, and their name: the record
    /// itself, or the element that encloses every header an absolute field reads (so that a
    /// part holds its records' headers). `None`: no depth below the root is safe, or the
    /// element's name is bound to a namespace.
    fn split_at(&self) -> Option<(usize, Vec<u8>)> {
        let mut depth = self.record.len().checked_sub(1)?;
        for f in self.fields.iter().filter(|f| f.absolute) {
            depth = depth.min(f.scope.checked_sub(1)?);
        }
        let step = &self.record[depth];
        (depth > 0 && step.ns.is_none()).then(|| (depth, step.local.clone()))
    }

    pub fn is_list(&self, k: usize) -> bool {
        self.fields[k].list_at.is_some()
    }

    /// The schema of the rows: text (a list of text for `[]`), or the type `declared` gives.
    pub fn schema(&self, declared: &[(String, DataType)]) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let t = declared.iter().find(|(n, _)| n == name).map_or(DataType::Utf8, |(_, t)| t.clone());
                let t = if self.is_list(k) { DataType::List(Arc::new(Field::new("item", t, true))) } else { t };
                Field::new(name, t, true)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }
}

/// The chunks of a file arriving from the fetching task, handed to the parser as windows:
/// the bytes not parsed yet, up to the last `<` in them (an element's text never spans two
/// windows, and a tag spans two only inside a comment, CDATA or a processing instruction:
/// see `parse_file`). quick-xml's reader over a slice tokenizes about twice as fast as over
/// a `BufRead`.
struct Feed {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes>>,
    position: Rc<Position>,
    /// Every chunk has arrived.
    finished: bool,
    /// The last window ended inside markup: the next one must reach past this.
    past: usize,
}

impl Feed {
    /// The next window (`position.bytes[..n]`) and whether it is the file's last; `None` at
    /// the end of the file. A failed fetch is its error.
    fn window(&mut self) -> Result<Option<(usize, bool)>> {
        loop {
            {
                let bytes = self.position.bytes.borrow();
                if self.finished {
                    return Ok((!bytes.is_empty()).then_some((bytes.len(), true)));
                }
                if let Some(i) = memchr::memrchr(b'<', &bytes)
                    && i > self.past
                {
                    self.past = 0;
                    return Ok(Some((i, false)));
                }
            }
            match self.rx.blocking_recv() {
                Some(Ok(c)) => self.position.bytes.borrow_mut().extend_from_slice(&c),
                Some(Err(e)) => return Err(e),
                None => self.finished = true,
            }
        }
    }

    /// The parser is done with the first `n` bytes (`inside`: it stopped at markup the
    /// window cut, which the next window must reach past).
    fn advance(&mut self, n: usize, inside: Option<usize>) {
        let p = &self.position;
        // Line breaks up to here are counted before their bytes go.
        p.consumed.set(p.base.get() + n as u64);
        p.here();
        p.bytes.borrow_mut().drain(..n);
        p.base.set(p.base.get() + n as u64);
        self.past = inside.map_or(0, |end| end - n);
    }
}

/// The bytes being parsed, and where the parser is in the file: line breaks are counted
/// when a position is asked for, from where the last count stopped.
#[derive(Default)]
struct Position {
    /// The file's bytes from offset `base` that are not parsed yet (the window at the start).
    bytes: std::cell::RefCell<Vec<u8>>,
    base: Cell<u64>,
    /// Offset after the last event read.
    consumed: Cell<u64>,
    /// Line breaks before offset `counted`, and the offset after the last one.
    counted: Cell<u64>,
    lines: Cell<u64>,
    line_start: Cell<u64>,
}

impl Position {
    /// 1-based line and column of the consumed offset.
    fn here(&self) -> (u64, u64) {
        let (from, to) = (self.counted.get(), self.consumed.get());
        if to > from {
            let bytes = self.bytes.borrow();
            let base = self.base.get();
            let part = &bytes[(from - base) as usize..(to - base) as usize];
            // One pass: how many line breaks, and where the last one is.
            let (mut count, mut last) = (0u64, None);
            for i in memchr::memchr_iter(b'\n', part) {
                count += 1;
                last = Some(i);
            }
            if let Some(last) = last {
                self.lines.set(self.lines.get() + count);
                self.line_start.set(from + last as u64 + 1);
            }
            self.counted.set(to);
        }
        // Inside the start tags put before a part (never where a record starts) the offset
        // can be before its line's start: column 1 then.
        (self.lines.get() + 1, self.consumed.get().saturating_sub(self.line_start.get()) + 1)
    }
}

/// The rows of one batch, as text.
struct Rows {
    scalars: Vec<Option<StringBuilder>>,
    lists: Vec<Option<ListBuilder<StringBuilder>>>,
    /// Line and column where each row's record starts.
    at: Vec<(u64, u64)>,
}

impl Rows {
    fn new(plan: &XmlPlan) -> Rows {
        let n = plan.columns.len();
        Rows {
            scalars: (0..n).map(|k| (!plan.is_list(k)).then(StringBuilder::new)).collect(),
            lists: (0..n).map(|k| plan.is_list(k).then(|| ListBuilder::new(StringBuilder::new()))).collect(),
            at: Vec::new(),
        }
    }
}

/// One record's values while it is read.
struct Record {
    scalars: Vec<Option<String>>,
    lists: Vec<Vec<Option<String>>>,
    at: (u64, u64),
    /// Why the record is malformed (the first reason), and where.
    bad: Option<(String, Option<String>, (u64, u64))>,
}

/// An open element the reader did not skip.
struct Frame {
    /// Its qualified name as written, to match its end tag.
    name: SmallVec<[u8; 24]>,
    /// Outside the record: the absolute paths (`usize::MAX`: the record's) whose first steps
    /// lead here. Inside: the fields whose steps below the record lead here (the record's own
    /// frame: none; its children are looked up in `XmlPlan::first_step`).
    live: Live,
    /// Depth below the record (0: the record), when inside one.
    inside: Option<usize>,
    /// The fields whose value is this element's text, and the text so far.
    capture: Live,
    text: Option<String>,
    /// It declares namespaces (pushed on the resolver).
    declares: bool,
}

/// Field indices, mostly a few.
type Live = SmallVec<[usize; 4]>;

/// What a file's parse hands on.
struct Out<'a> {
    plan: &'a XmlPlan,
    schema: &'a SchemaRef,
    file: &'a str,
    bad: &'a BadRows,
    tx: &'a tokio::sync::mpsc::Sender<Result<RecordBatch>>,
}

impl Out<'_> {
    /// Convert `rows` to the schema's types and send them; rows with a value that is not of
    /// its column's type become bad rows.
    fn flush(&self, rows: &mut Rows) -> Result<bool> {
        if rows.at.is_empty() {
            return Ok(true);
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.plan.columns.len());
        let mut keep: Option<Vec<bool>> = None;
        let options = CastOptions { safe: false, ..Default::default() };
        for (k, field) in self.schema.fields().iter().enumerate() {
            let text: ArrayRef = match (&mut rows.scalars[k], &mut rows.lists[k]) {
                (Some(b), _) => Arc::new(b.finish()),
                (_, Some(b)) => Arc::new(b.finish()),
                _ => unreachable!("every column has a builder"),
            };
            if text.data_type() == field.data_type() {
                columns.push(text);
                continue;
            }
            match cast_with_options(&text, field.data_type(), &options) {
                Ok(a) => columns.push(a),
                Err(_) => {
                    // Find the values that do not convert, one by one.
                    let lenient = cast_with_options(&text, field.data_type(), &CastOptions::default())
                        .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
                    let keep = keep.get_or_insert_with(|| vec![true; text.len()]);
                    for (i, kept) in keep.iter_mut().enumerate() {
                        let failed = !text.is_null(i) && lenient.is_null(i)
                            || (self.plan.is_list(k)
                                && !text.is_null(i)
                                && {
                                    let (t, l) = (text.slice(i, 1), lenient.slice(i, 1));
                                    let t = t.as_any().downcast_ref::<datafusion::arrow::array::ListArray>();
                                    let l = l.as_any().downcast_ref::<datafusion::arrow::array::ListArray>();
                                    matches!((t, l), (Some(t), Some(l)) if t.value(0).null_count() != l.value(0).null_count())
                                });
                        if failed && *kept {
                            *kept = false;
                            let value =
                                datafusion::arrow::util::display::array_value_to_string(&text, i).unwrap_or_default();
                            let (line, col) = rows.at[i];
                            self.bad.add(BadRow {
                                file: self.file.to_string(),
                                line,
                                column: Some(field.name().clone()),
                                value: Some(value.clone()),
                                reason: format!(
                                    "`{value}` is not a {} (the record starts at column {col})",
                                    crate::types::sql_name(field.data_type())
                                ),
                                raw: value,
                            })?;
                        }
                    }
                    columns.push(lenient);
                }
            }
        }
        rows.at.clear();
        let mut batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        if let Some(keep) = keep {
            let mask = BooleanArray::from(keep);
            let cols = batch.columns().iter().map(|c| filter(c, &mask)).collect::<std::result::Result<Vec<_>, _>>()?;
            batch = RecordBatch::try_new(self.schema.clone(), cols)?;
        }
        if batch.num_rows() == 0 {
            return Ok(true);
        }
        Ok(self.tx.blocking_send(Ok(batch)).is_ok())
    }
}

/// Parse one file from `chunks`, sending batches through `out`. Returns when the file ends,
/// the receiver has gone, or a bad row stops the run (`bad.first_only`).
fn parse_file(mut feed: Feed, out: &Out<'_>) -> Result<()> {
    let plan = out.plan;
    let position = feed.position.clone();
    // Namespace bindings in force: pushed by the (few) elements that declare some.
    let mut resolver = NamespaceResolver::default();
    let mut rows = Rows::new(plan);
    let mut stack: Vec<Frame> = Vec::new();
    let mut record: Option<Record> = None;
    // An element skipped whole: its name, and how many of that name are open in it.
    let mut skip: Option<(SmallVec<[u8; 24]>, usize)> = None;
    // Absolute values in force: by field, with the depth they hold until.
    let mut context: Vec<Option<String>> = vec![None; plan.fields.len()];
    let n_fields = plan.fields.len();
    let bad_row = |reason: String, column: Option<String>, at: (u64, u64)| BadRow {
        file: out.file.to_string(),
        line: at.0,
        column,
        value: None,
        reason: format!("{reason} (line {}, column {})", at.0, at.1),
        raw: String::new(),
    };
    // The live paths at the root: the record's and every absolute field's.
    let root_live: Live =
        std::iter::once(usize::MAX).chain((0..n_fields).filter(|&k| plan.fields[k].absolute)).collect();
    let no_fields: Vec<usize> = Vec::new();
    'windows: while let Some((cut, last)) = feed.window()? {
        let bytes = position.bytes.borrow();
        let base = position.base.get();
        let mut reader = Reader::from_reader(&bytes[..cut]);
        {
            let c = reader.config_mut();
            c.check_end_names = false;
            c.expand_empty_elements = false;
            // Elements opened in an earlier window end in this one (the stack is ours).
            c.allow_unmatched_ends = true;
        }
        // Bytes passed over without the reader (skipped leaves): the reader's offsets are
        // this much behind the window's.
        let mut jumped = 0u64;
        let stopped = loop {
            let before = jumped + reader.buffer_position();
            let event = reader.read_event();
            position.consumed.set(base + jumped + reader.buffer_position());
            let event = match event {
                Ok(Event::Eof) => break (cut, None),
                Ok(e) => e,
                // The window ends inside this markup: the next one starts with it.
                Err(e) if !last && window_cut_it(&e, cut - before as usize) => break (before as usize, Some(cut)),
                Err(e) => {
                    position.consumed.set(base + before);
                    stop_file(&e, &position, out, &mut rows)?;
                    break 'windows;
                }
            };
            if let Some((name, open)) = skip.as_mut() {
                match &event {
                    Event::Start(s) if s.name().as_ref() == name.as_slice() => *open += 1,
                    Event::End(e) if e.name().as_ref() == name.as_slice() => {
                        *open -= 1;
                        if *open == 0 {
                            skip = None;
                        }
                    }
                    _ => {}
                }
                continue;
            }
            match event {
                Event::Start(ref s) | Event::Empty(ref s) => {
                    let empty = matches!(event, Event::Empty(_));
                    // (`attributes_raw`: what follows the name.)
                    let declares = memchr::memmem::find(s.attributes_raw(), b"xmlns").is_some();
                    if declares && let Err(e) = resolver.push(s) {
                        stop_file(&quick_xml::Error::Namespace(e), &position, out, &mut rows)?;
                        break 'windows;
                    }
                    let (ns, local) = resolver.resolve_element(s.name());
                    let local = local.as_ref();
                    let depth = stack.len();
                    let (parent_live, parent_inside): (&[usize], Option<usize>) = match stack.last() {
                        Some(f) => (&f.live, f.inside),
                        None => (&root_live, None),
                    };
                    let mut live = Live::new();
                    let mut capture = Live::new();
                    let mut inside = parent_inside.map(|d| d + 1);
                    let mut starts_record = false;
                    match parent_inside {
                        None => {
                            for &k in parent_live {
                                let steps = if k == usize::MAX { &plan.record } else { &plan.fields[k].steps };
                                if depth < steps.len() && steps[depth].matches(&ns, local) {
                                    if k == usize::MAX && depth + 1 == steps.len() {
                                        starts_record = true;
                                    } else {
                                        live.push(k);
                                    }
                                    if k != usize::MAX && depth + 1 == steps.len() {
                                        capture.push(k);
                                    }
                                }
                            }
                            if starts_record {
                                inside = Some(0);
                                live.clear();
                                capture.clear();
                                capture.extend(
                                    (0..n_fields)
                                        .filter(|&k| !plan.fields[k].absolute && plan.fields[k].steps.is_empty()),
                                );
                                let at = position.here();
                                record = Some(Record {
                                    scalars: vec![None; n_fields],
                                    lists: vec![Vec::new(); n_fields],
                                    at,
                                    bad: None,
                                });
                            }
                        }
                        Some(below) => {
                            let candidates: &[usize] =
                                if below == 0 { plan.first_step.get(local).unwrap_or(&no_fields) } else { parent_live };
                            for &k in candidates {
                                let f = &plan.fields[k];
                                if below < f.steps.len() && f.steps[below].matches(&ns, local) {
                                    live.push(k);
                                    if f.list_at == Some(below)
                                        && let Some(r) = record.as_mut()
                                    {
                                        r.lists[k].push(None);
                                    }
                                    if below + 1 == f.steps.len() {
                                        capture.push(k);
                                    }
                                }
                            }
                        }
                    }
                    if live.is_empty() && capture.is_empty() && !starts_record {
                        // Nothing of interest below: skipped whole.
                        if declares {
                            resolver.pop();
                        }
                        if !empty {
                            // A leaf (most skipped elements): its text holds no `<`, so when
                            // the next `<` starts its end tag, the reader jumps past that.
                            let name = s.name();
                            let rest: &[u8] = reader.get_ref();
                            if let Some(i) = memchr::memchr(b'<', rest)
                                && let Some(tag) = rest.get(i + 1..i + 3 + name.as_ref().len())
                                && tag[0] == b'/'
                                && tag[tag.len() - 1] == b'>'
                                && &tag[1..tag.len() - 1] == name.as_ref()
                            {
                                let n = i + tag.len() + 1;
                                *reader.get_mut() = &rest[n..];
                                jumped += n as u64;
                                position.consumed.set(base + jumped + reader.buffer_position());
                            } else {
                                skip = Some((SmallVec::from_slice(name.as_ref()), 1));
                            }
                        }
                        continue;
                    }
                    // Attributes captured here.
                    let mut text_capture = Live::new();
                    for &k in &capture {
                        let f = &plan.fields[k];
                        let Some(attr) = &f.attr else {
                            text_capture.push(k);
                            continue;
                        };
                        let mut value = None;
                        for a in s.attributes().with_checks(false).flatten() {
                            let (ans, alocal) = resolver.resolve_attribute(a.key);
                            if attr.matches(&ans, alocal.as_ref()) {
                                value = Some(a.unescape_value().map(|v| v.into_owned()));
                                break;
                            }
                        }
                        let at = position.here();
                        match value {
                            Some(Ok(v)) => set_value(plan, &mut record, &mut context, k, v, at),
                            Some(Err(e)) => mark_bad(&mut record, format!("attribute value: {e}"), Some(k), plan, at),
                            None => {}
                        }
                    }
                    if empty {
                        // `<x/>`: no text (NULL), and no children.
                        if declares {
                            resolver.pop();
                        }
                        if starts_record {
                            finish_record(&mut record, &mut rows, &context, out)?;
                            if rows.at.len() >= BATCH_ROWS && !out.flush(&mut rows)? {
                                return Ok(());
                            }
                        }
                        continue;
                    }
                    stack.push(Frame {
                        name: SmallVec::from_slice(s.name().as_ref()),
                        live,
                        inside,
                        text: (!text_capture.is_empty()).then(String::new),
                        capture: text_capture,
                        declares,
                    });
                }
                Event::Text(t) => append_text(&mut stack, &mut record, plan, &position, "text", || t.xml10_content()),
                Event::CData(t) => append_text(&mut stack, &mut record, plan, &position, "CDATA", || t.decode()),
                Event::GeneralRef(r) => {
                    if let Some(f) = stack.last_mut()
                        && let Some(text) = f.text.as_mut()
                    {
                        let resolved = match r.resolve_char_ref() {
                            Ok(Some(c)) => Some(c.to_string()),
                            Ok(None) => r
                                .decode()
                                .ok()
                                .and_then(|name| quick_xml::escape::resolve_xml_entity(&name).map(str::to_string)),
                            Err(_) => None,
                        };
                        match resolved {
                            Some(v) => text.push_str(v.as_str()),
                            None => {
                                let at = position.here();
                                let name = String::from_utf8_lossy(&r).into_owned();
                                mark_bad(
                                    &mut record,
                                    format!("unknown entity `&{name};`"),
                                    f.capture.first().copied(),
                                    plan,
                                    at,
                                )
                            }
                        }
                    }
                }
                Event::End(e) => {
                    let name = e.name();
                    let Some(top) = stack.last() else {
                        let at = position.here();
                        let tag = String::from_utf8_lossy(name.as_ref()).into_owned();
                        report(
                            out,
                            &mut rows,
                            bad_row(format!("malformed XML: end tag `</{tag}>` without a start"), None, at),
                        )?;
                        continue;
                    };
                    if top.name.as_slice() != name.as_ref() {
                        let at = position.here();
                        let tag = String::from_utf8_lossy(name.as_ref()).into_owned();
                        let open = String::from_utf8_lossy(&top.name).into_owned();
                        let reason = format!("malformed XML: end tag `</{tag}>` where `</{open}>` was expected");
                        if record.is_some() {
                            mark_bad(&mut record, reason, None, plan, at);
                        } else {
                            report(out, &mut rows, bad_row(reason, None, at))?;
                        }
                        // Resynchronize: close up to the element it ends, if it is open.
                        match stack.iter().rposition(|f| f.name.as_slice() == name.as_ref()) {
                            Some(i) => {
                                while stack.len() > i + 1 {
                                    close(
                                        &mut stack,
                                        &mut record,
                                        &mut rows,
                                        &mut context,
                                        plan,
                                        out,
                                        &position,
                                        &mut resolver,
                                    )?;
                                }
                            }
                            None => continue,
                        }
                    }
                    if !close(&mut stack, &mut record, &mut rows, &mut context, plan, out, &position, &mut resolver)? {
                        return Ok(());
                    }
                }
                _ => {}
            }
        };
        drop(reader);
        drop(bytes);
        feed.advance(stopped.0, stopped.1);
    }
    if let Some(r) = record.take() {
        report(out, &mut rows, bad_row("the file ends inside a record (is it truncated?)".into(), None, r.at))?;
    }
    out.flush(&mut rows)?;
    Ok(())
}

/// Text (or CDATA) of the innermost element, appended when the element's text is captured;
/// decoded only then.
fn append_text<'t>(
    stack: &mut [Frame],
    record: &mut Option<Record>,
    plan: &XmlPlan,
    position: &Position,
    what: &str,
    decode: impl FnOnce() -> std::result::Result<std::borrow::Cow<'t, str>, quick_xml::encoding::EncodingError>,
) {
    let Some(f) = stack.last_mut() else { return };
    let Some(text) = f.text.as_mut() else { return };
    match decode() {
        Ok(v) => text.push_str(v.as_ref()),
        Err(e) => mark_bad(record, format!("{what}: {e}"), f.capture.first().copied(), plan, position.here()),
    }
}

/// Close the innermost open element: its text goes to the fields that capture it; a
/// record's end makes a row. `false`: the receiver has gone.
fn close(
    stack: &mut Vec<Frame>,
    record: &mut Option<Record>,
    rows: &mut Rows,
    context: &mut [Option<String>],
    plan: &XmlPlan,
    out: &Out<'_>,
    position: &Position,
    resolver: &mut NamespaceResolver,
) -> Result<bool> {
    let Some(frame) = stack.pop() else { return Ok(true) };
    if frame.declares {
        resolver.pop();
    }
    let at = position.here();
    // An element without text is NULL, as a missing one. (The last field that captures it
    // takes the text itself.)
    if let Some(text) = frame.text
        && !text.is_empty()
        && let Some((&last, others)) = frame.capture.split_last()
    {
        for &k in others {
            set_value(plan, record, context, k, text.clone(), at);
        }
        set_value(plan, record, context, last, text, at);
    }
    // Absolute values end with the element that encloses them and the record (the one at
    // depth `scope - 1`).
    if frame.inside.is_none() {
        let depth = stack.len();
        for (k, f) in plan.fields.iter().enumerate() {
            if f.absolute && f.scope == depth + 1 {
                context[k] = None;
            }
        }
    }
    if frame.inside == Some(0) {
        finish_record(record, rows, context, out)?;
        if rows.at.len() >= BATCH_ROWS {
            return out.flush(rows);
        }
    }
    Ok(true)
}

/// Field `k`'s value `v`: into the record, or into the context when it is absolute.
fn set_value(
    plan: &XmlPlan,
    record: &mut Option<Record>,
    context: &mut [Option<String>],
    k: usize,
    v: String,
    at: (u64, u64),
) {
    let f = &plan.fields[k];
    if f.absolute {
        context[k] = Some(v);
        return;
    }
    let Some(r) = record.as_mut() else { return };
    let slot = if f.list_at.is_some() {
        match r.lists[k].last_mut() {
            Some(s) => s,
            None => return,
        }
    } else {
        &mut r.scalars[k]
    };
    if slot.is_some() {
        let path = plan.columns[k].clone();
        mark_bad(
            record,
            format!(
                "the value of column `{path}` occurs more than once in the record: read every one with `[]` in its path"
            ),
            Some(k),
            plan,
            at,
        );
        return;
    }
    *slot = Some(v);
}

fn mark_bad(record: &mut Option<Record>, reason: String, k: Option<usize>, plan: &XmlPlan, at: (u64, u64)) {
    if let Some(r) = record.as_mut()
        && r.bad.is_none()
    {
        r.bad = Some((reason, k.map(|k| plan.columns[k].clone()), at));
    }
}

/// Whether the reader's error is one a window's end can cause: markup (or a reference) not
/// closed before the end (`rest` bytes after where it starts).
fn window_cut_it(e: &quick_xml::Error, rest: usize) -> bool {
    use quick_xml::errors::{IllFormedError, SyntaxError};
    match e {
        // `<!` too near the end to tell a comment, CDATA or a DOCTYPE (`<![CDATA[`).
        quick_xml::Error::Syntax(SyntaxError::InvalidBangMarkup) => rest < 9,
        quick_xml::Error::Syntax(s) => matches!(
            s,
            SyntaxError::UnclosedPI
                | SyntaxError::UnclosedXmlDecl
                | SyntaxError::UnclosedComment
                | SyntaxError::UnclosedDoctype
                | SyntaxError::UnclosedCData
                | SyntaxError::UnclosedTag
                | SyntaxError::UnclosedSingleQuotedAttributeValue
                | SyntaxError::UnclosedDoubleQuotedAttributeValue
        ),
        quick_xml::Error::IllFormed(IllFormedError::UnclosedReference) => true,
        _ => false,
    }
}

/// The reader failed: one bad row for the rest of the file (the records before it are read).
fn stop_file(e: &quick_xml::Error, position: &Position, out: &Out<'_>, rows: &mut Rows) -> Result<()> {
    let at = position.here();
    let row = BadRow {
        file: out.file.to_string(),
        line: at.0,
        column: None,
        value: None,
        reason: format!("malformed XML: {e}; the rest of the file was not read (line {}, column {})", at.0, at.1),
        raw: String::new(),
    };
    report(out, rows, row)
}

/// A bad row. When the first stops the run, the rows before it are converted first: a value
/// of theirs that is not of its type comes earlier in the file.
fn report(out: &Out<'_>, rows: &mut Rows, row: BadRow) -> Result<()> {
    if out.bad.first_only {
        out.flush(rows)?;
    }
    out.bad.add(row)
}

/// The record read: a row (with the absolute values in force), or a bad row.
fn finish_record(
    record: &mut Option<Record>,
    rows: &mut Rows,
    context: &[Option<String>],
    out: &Out<'_>,
) -> Result<()> {
    let Some(r) = record.take() else { return Ok(()) };
    if let Some((reason, column, at)) = r.bad {
        return report(
            out,
            rows,
            BadRow {
                file: out.file.to_string(),
                line: at.0,
                column,
                value: None,
                reason: format!("{reason} (line {}, column {}; the record starts on line {})", at.0, at.1, r.at.0),
                raw: String::new(),
            },
        );
    }
    // Values of other types than text are read without surrounding whitespace.
    let typed = |k: usize| match out.schema.field(k).data_type() {
        DataType::Utf8 => false,
        DataType::List(f) => f.data_type() != &DataType::Utf8,
        _ => true,
    };
    fn trimmed(typed: bool, v: Option<&str>) -> Option<&str> {
        v.map(|v| if typed { v.trim_matches(|c: char| c.is_ascii_whitespace()) } else { v })
    }
    let value = |k: usize, v| trimmed(typed(k), v);
    for (k, builder) in rows.scalars.iter_mut().enumerate() {
        if let Some(b) = builder {
            let v = if out.plan.fields[k].absolute { context[k].as_deref() } else { r.scalars[k].as_deref() };
            b.append_option(value(k, v));
        }
    }
    for (k, builder) in rows.lists.iter_mut().enumerate() {
        if let Some(b) = builder {
            for item in &r.lists[k] {
                b.values().append_option(value(k, item.as_deref()));
            }
            b.append(true);
        }
    }
    rows.at.push(r.at);
    Ok(())
}

/// The partitions of a read of `files` (at most one per core), each reading its share of the
/// files one after another; malformed records go to `bad`.
pub fn partitions(
    store: Arc<dyn ObjectStore>,
    root: &object_store::path::Path,
    files: &[ObjectMeta],
    format: &InputFormat,
    plan: Arc<XmlPlan>,
    schema: SchemaRef,
    bad: Arc<BadRows>,
) -> Vec<Arc<dyn PartitionStream>> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    // Fewer files than cores: the big ones are cut, where that is safe (see `xml_split`).
    let split = plan
        .split_at()
        .filter(|_| files.len() < cores && cores > 1 && format.compression == crate::spec::InputCompression::None);
    let min = split_min();
    let mut items: Vec<Item> = Vec::new();
    for f in files {
        let name = f
            .location
            .prefix_match(root)
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
            .unwrap_or_else(|| f.location.to_string());
        match &split {
            Some((depth, local)) if f.size >= min => {
                let cuts = Arc::new(tokio::sync::OnceCell::new());
                for index in 0..cores {
                    let part = Part { cuts: cuts.clone(), index, parts: cores, depth: *depth, local: local.clone() };
                    items.push(Item { file: f.clone(), name: name.clone(), part: Some(part) });
                }
            }
            _ => items.push(Item { file: f.clone(), name, part: None }),
        }
    }
    let n = items.len().clamp(1, cores);
    let mut shares: Vec<Vec<Item>> = (0..n).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % n].push(item);
    }
    shares
        .into_iter()
        .map(|files| {
            Arc::new(Share {
                store: store.clone(),
                files,
                format: format.clone(),
                plan: plan.clone(),
                schema: schema.clone(),
                bad: bad.clone(),
            }) as Arc<dyn PartitionStream>
        })
        .collect()
}

/// Files at least this big are cut (`WEIR_XML_SPLIT_MIN`, in bytes, says otherwise: tests).
fn split_min() -> u64 {
    std::env::var("WEIR_XML_SPLIT_MIN").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(64 << 20)
}

/// A file, or a part of one, to read.
#[derive(Debug, Clone)]
struct Item {
    file: ObjectMeta,
    /// As messages name it.
    name: String,
    part: Option<Part>,
}

/// Part `index` of `parts` of a file cut at elements at `depth` named `local`; the cuts are
/// found once, by whichever part asks first.
#[derive(Debug, Clone)]
struct Part {
    cuts: Arc<tokio::sync::OnceCell<Vec<super::xml_split::Cut>>>,
    index: usize,
    parts: usize,
    depth: usize,
    local: Vec<u8>,
}

/// What one item reads: bytes `start..end` of the file, with `prefix` before them and
/// `suffix` after, the first at line `lines + 1` (its line starting at `line_start`).
struct Span {
    start: u64,
    end: u64,
    prefix: Bytes,
    suffix: Bytes,
    lines: u64,
    line_start: u64,
    /// Part 0 of a file being cut reads up to `end` (the first share) while the file is
    /// scanned, then up to the cut the scan found (the whole file when it found none).
    then: Option<Part>,
}

impl Part {
    /// The file's cuts, scanned by the first part to ask.
    async fn cuts(&self, store: &dyn ObjectStore, file: &ObjectMeta, name: &str) -> &[super::xml_split::Cut] {
        self.cuts
            .get_or_init(|| async {
                // A scan that fails leaves the file whole: its read reports it.
                let cuts = super::xml_split::cuts(store, file, self.parts, self.depth, &self.local)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::debug!(file = %name, error = %e, "XML file not cut: its scan failed");
                        Vec::new()
                    });
                if cuts.len() + 1 == self.parts {
                    tracing::debug!(file = %name, parts = self.parts, "XML file read in parts");
                } else {
                    tracing::debug!(file = %name, "XML file read whole: no safe place to cut it");
                }
                cuts
            })
            .await
    }
}

/// One partition: some of the files.
#[derive(Debug)]
struct Share {
    store: Arc<dyn ObjectStore>,
    files: Vec<Item>,
    format: InputFormat,
    plan: Arc<XmlPlan>,
    schema: SchemaRef,
    bad: Arc<BadRows>,
}

impl PartitionStream for Share {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        let (store, files, format, plan, schema, bad) = (
            self.store.clone(),
            self.files.clone(),
            self.format.clone(),
            self.plan.clone(),
            self.schema.clone(),
            self.bad.clone(),
        );
        builder.spawn(async move {
            for Item { file, name, part } in files {
                let whole = Span {
                    start: 0,
                    end: file.size,
                    prefix: Bytes::new(),
                    suffix: Bytes::new(),
                    lines: 0,
                    line_start: 0,
                    then: None,
                };
                let span = match &part {
                    None => whole,
                    // Part 0 starts at once: its cut is at or after the first share.
                    Some(p) if p.index == 0 => {
                        let end = super::xml_split::shares(file.size, p.parts).first().copied().unwrap_or(file.size);
                        Span { end, then: Some(p.clone()), ..whole }
                    }
                    Some(p) => {
                        let cuts = p.cuts(store.as_ref(), &file, &name).await;
                        if cuts.len() + 1 < p.parts {
                            // Not cut: part 0 reads it all.
                            continue;
                        }
                        let from = &cuts[p.index - 1];
                        let to = cuts.get(p.index);
                        Span {
                            start: from.at,
                            end: to.map_or(file.size, |c| c.at),
                            prefix: from.prefix.clone(),
                            suffix: to.map_or_else(Bytes::new, |c| c.suffix.clone()),
                            lines: from.lines,
                            line_start: from.line_start,
                            then: None,
                        }
                    }
                };
                let (span_start, prefix_len, span_lines, span_line_start) =
                    (span.start, span.prefix.len() as u64, span.lines, span.line_start);
                let (chunk_tx, chunk_rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(CHUNKS_IN_FLIGHT);
                // The file's bytes, decompressed, on this task; parsed on a blocking thread.
                let fetch = {
                    let (store, file, format, name) = (store.clone(), file.clone(), format.clone(), name.clone());
                    async move {
                        let location = file.location.clone();
                        // Uncompressed: large ranges (a local store's stream comes in 8 KiB
                        // chunks, each a wake-up of the parsing thread).
                        if format.compression == crate::spec::InputCompression::None {
                            if !span.prefix.is_empty() && chunk_tx.send(Ok(span.prefix.clone())).await.is_err() {
                                return;
                            }
                            let (mut at, mut until, mut suffix) = (span.start, span.end, span.suffix.clone());
                            let mut then = span.then.clone();
                            loop {
                                if at >= until {
                                    let Some(p) = then.take() else { break };
                                    let cuts = p.cuts(store.as_ref(), &file, &name).await;
                                    match cuts.first() {
                                        Some(c) if cuts.len() + 1 == p.parts => {
                                            (until, suffix) = (c.at, c.suffix.clone());
                                        }
                                        _ => until = file.size,
                                    }
                                    if at >= until {
                                        break;
                                    }
                                }
                                let end = (at + FETCH).min(until);
                                let opts = GetOptions {
                                    range: Some(object_store::GetRange::Bounded(at..end)),
                                    ..Default::default()
                                };
                                let got = match store.get_opts(&location, opts).await {
                                    Ok(g) => g.bytes().await,
                                    Err(e) => Err(e),
                                };
                                let chunk = got.map_err(|e| DataFusionError::ObjectStore(Box::new(e)));
                                let failed = chunk.is_err();
                                if chunk_tx.send(chunk).await.is_err() || failed {
                                    return;
                                }
                                at = end;
                            }
                            if !suffix.is_empty() {
                                let _ = chunk_tx.send(Ok(suffix)).await;
                            }
                            return;
                        }
                        let got = store.get_opts(&location, GetOptions::default()).await;
                        let raw = match got {
                            Ok(g) => g.into_stream().map_err(|e| DataFusionError::ObjectStore(Box::new(e))).boxed(),
                            Err(e) => {
                                let _ = chunk_tx.send(Err(DataFusionError::ObjectStore(Box::new(e)))).await;
                                return;
                            }
                        };
                        let mut stream = match format.compression_type().convert_stream(raw) {
                            Ok(s) => s,
                            Err(e) => {
                                let _ = chunk_tx.send(Err(e)).await;
                                return;
                            }
                        };
                        // Decompressed chunks are small: gathered into larger ones.
                        let mut gathered = bytes::BytesMut::new();
                        while let Some(chunk) = stream.next().await {
                            match chunk {
                                Ok(c) => {
                                    gathered.extend_from_slice(&c);
                                    if gathered.len() >= GATHER
                                        && chunk_tx.send(Ok(gathered.split().freeze())).await.is_err()
                                    {
                                        return;
                                    }
                                }
                                Err(e) => {
                                    let _ = chunk_tx.send(Err(e)).await;
                                    return;
                                }
                            }
                        }
                        if !gathered.is_empty() {
                            let _ = chunk_tx.send(Ok(gathered.freeze())).await;
                        }
                    }
                };
                let parse = {
                    let (plan, schema, bad, tx, name) =
                        (plan.clone(), schema.clone(), bad.clone(), tx.clone(), name.clone());
                    tokio::task::spawn_blocking(move || {
                        // Offsets are the file's: the prefix stands just before the span.
                        let position = Position {
                            base: Cell::new(span_start - prefix_len),
                            consumed: Cell::new(span_start - prefix_len),
                            counted: Cell::new(span_start - prefix_len),
                            lines: Cell::new(span_lines),
                            line_start: Cell::new(span_line_start),
                            ..Default::default()
                        };
                        let feed = Feed { rx: chunk_rx, position: Rc::new(position), finished: false, past: 0 };
                        let out = Out { plan: &plan, schema: &schema, file: &name, bad: &bad, tx: &tx };
                        parse_file(feed, &out)
                    })
                };
                let (_, parsed) = futures::join!(fetch, parse);
                tracing::debug!(file = %name, part = part.as_ref().map(|p| p.index), "XML file read");
                match parsed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        // A bad row that stops the run names itself.
                        let e = match bad.first() {
                            Some(row) if bad.first_only => {
                                DataFusionError::Execution(format!("malformed XML record: {row}"))
                            }
                            _ => e,
                        };
                        let _ = tx.send(Err(e)).await;
                        return Ok(());
                    }
                    Err(e) => return Err(DataFusionError::External(Box::new(e))),
                }
            }
            Ok(())
        });
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows (as a table) and bad rows of `doc` read in chunks of `size` bytes.
    fn read(doc: &[u8], size: usize, plan: &XmlPlan, schema: &SchemaRef) -> (String, Vec<String>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let (chunk_tx, chunk_rx) = tokio::sync::mpsc::channel(doc.len() + 1);
        for c in doc.chunks(size) {
            chunk_tx.try_send(Ok(Bytes::copy_from_slice(c))).expect("room for every chunk");
        }
        drop(chunk_tx);
        let bad = BadRows::new(false, true);
        let feed = Feed { rx: chunk_rx, position: Rc::new(Position::default()), finished: false, past: 0 };
        let out = Out { plan, schema, file: "t.xml", bad: &bad, tx: &tx };
        parse_file(feed, &out).expect("parsed");
        drop(tx);
        let mut batches = Vec::new();
        while let Ok(b) = rx.try_recv() {
            batches.push(b.expect("a batch"));
        }
        let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("printed").to_string();
        let bad = bad.take().into_iter().map(|r| format!("{}: {:?} {}", r.line, r.column, r.reason)).collect();
        (table, bad)
    }

    /// Windows end before the last `<` of what has arrived: wherever the chunks of a file
    /// end (inside a comment, CDATA, a processing instruction, a DOCTYPE, a reference, a tag,
    /// a namespace declaration), the rows, their values and the bad rows' lines and columns
    /// are those of a read of the whole file at once.
    #[test]
    fn every_cut_of_a_file_reads_as_the_whole_file() {
        let mut doc = String::from(concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<!DOCTYPE feed [ <!ELEMENT feed ANY> ]>\n",
            "<!-- a comment with < and > and <tags/> in it -->\n",
            "<feed xmlns:h=\"urn:head\">\n",
            "  <h:head><h:id>H-1</h:id></h:head>\n",
            "  <?pi with <angle> brackets ?>\n",
            "  <item code=\"A&amp;1\">\n",
            "    <name>first &amp; &#x41; <![CDATA[<raw> & ]]>text</name>\n",
            "    <n> 1 </n>\n",
            "    <skip><skip><deep>x</deep></skip><other/></skip>\n",
            "    <zz>skipped &amp; text</zz><zz><![CDATA[<zz>]]></zz><zz>a</zz ><zz></zz><n2>x</n2>\n",
            "    <tag>a</tag><tag/><tag>c<!-- < --></tag>\n",
            "  </item>\n",
            "  <item xmlns=\"urn:default\" xmlns:q=\"urn:p\" code=\"B\">\n",
            "    <name>second</name><q:extra>in p</q:extra>\n",
            "    <n>2</n>\n",
            "  </item>\n",
            "  <item xmlns:q=\"urn:other\" code='C'><q:extra>not p</q:extra><n>3</n></item>\n",
            "  <item code=\"D\"/>\n",
            "  <item code=\"X\"><n>four</n></item>\n",
        ));
        for i in 0..12 {
            doc.push_str(&format!(
                "  <item code=\"g{i}\">\r\n    <zz>z{i}</zz><name>generated\r\nline {i}</name><n>{i}</n><zz/><tag>t{i}</tag>\r\n  </item>\n"
            ));
        }
        doc.push_str("  <h:head><h:id>H-2</h:id></h:head>\n  <item code=\"E\"><n>5</n></item>\n</feed>\n");
        let fields: IndexMap<String, String> = [
            ("code", "@code"),
            ("name", "name"),
            ("n", "n"),
            ("tags", "tag[]"),
            ("extra", "p:extra"),
            ("head", "/feed/h:head/h:id"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let namespaces: IndexMap<String, String> =
            [("p", "urn:p"), ("h", "urn:head")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let plan = XmlPlan::new("/feed/item", &fields, Some(&namespaces)).expect("a plan");
        let schema = plan.schema(&[("n".to_string(), DataType::Int64)]);
        let whole = read(doc.as_bytes(), doc.len(), &plan, &schema);
        // What the whole read says, checked once by eye and pinned here.
        assert!(whole.0.contains("| A&1  | first & A <raw> & text"), "{}", whole.0);
        assert!(whole.0.contains("| in p"), "{}", whole.0);
        assert!(!whole.0.contains("not p"), "{}", whole.0);
        // Line breaks in text are normalized (`\r\n` to `\n`).
        assert!(whole.0.contains("| g11  | generated ") && whole.0.contains("| line 11 "), "{}", whole.0);
        assert!(!whole.0.contains('\r'), "{}", whole.0);
        assert!(whole.0.contains("| E    |") && whole.0.contains("H-2"), "{}", whole.0);
        assert_eq!(whole.0.matches("H-1").count(), 16, "{}", whole.0);
        assert_eq!(whole.1.len(), 1, "{:?}", whole.1);
        assert!(whole.1[0].starts_with("20: Some(\"n\")"), "{:?}", whole.1);
        for size in 1..doc.len() {
            assert_eq!(read(doc.as_bytes(), size, &plan, &schema), whole, "chunks of {size} bytes");
        }
        // Malformed markup in the middle ends the file where it is, however it arrives.
        let broken = doc.replacen("<?pi", "<!pi", 1);
        let whole = read(broken.as_bytes(), broken.len(), &plan, &schema);
        assert_eq!(whole.1.len(), 1, "{:?}", whole.1);
        assert!(whole.1[0].starts_with("6: None malformed XML: syntax error"), "{:?}", whole.1);
        // A skipped leaf is passed over without its events; its line breaks still count.
        let jumped = doc.replace("<zz>z3</zz>", "<zz>z\n\n3</zz>");
        let (table, bad) = read(jumped.as_bytes(), jumped.len(), &plan, &schema);
        assert_eq!(table, read(doc.as_bytes(), doc.len(), &plan, &schema).0);
        assert!(bad[0].starts_with("20: Some(\"n\")"), "{bad:?}");
        let late = jumped.replace("<n>four</n>", "<n>4</n>").replace("<n>11</n>", "<n>eleven</n>");
        let (_, bad) = read(late.as_bytes(), 1000, &plan, &schema);
        assert!(bad[0].starts_with("67: Some(\"n\")"), "{bad:?}");
        for size in 1..broken.len() {
            assert_eq!(read(broken.as_bytes(), size, &plan, &schema), whole, "chunks of {size} bytes");
        }
    }
}
