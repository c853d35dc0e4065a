//! The tolerant reader of CSV and newline-delimited JSON (`bad_rows: skip | quarantine`, and
//! naming the first bad row when `bad_rows: fail` meets one).
//!
//! Files are cut into pieces at line boundaries (a piece owns the lines that start in its byte
//! range; compressed files and CSV with `multiline: true` are one piece), read in parallel as
//! the partitions of a streaming table. A piece is decoded a batch of rows at a time by arrow's
//! own decoders: a batch that decodes is passed on as it is, so clean files pay only for the
//! cutting. A batch that fails is decoded again record by record: the records that decode go
//! on, in order; the others become [`BadRow`]s with file, line (counted in the file, so quoted
//! line breaks keep numbers right), column, value and reason.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};

use super::{CsvSettings, InputFormat};
use crate::spec::{FileFormat, InputCompression};
use crate::types::sql_name;

/// Rows per decoded batch.
const BATCH_ROWS: usize = 8192;
/// Pieces are at least this big.
const MIN_PIECE: u64 = 32 << 20;
/// Raw text kept per bad row.
const MAX_RAW: usize = 4096;
/// Bytes read per request.
const FETCH: u64 = 8 << 20;
/// Bytes buffered before batches are cut.
const READ_AHEAD: usize = 4 << 20;

/// A row that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    /// The file, as the extract's store names it.
    pub file: String,
    /// 1-based line of the file where the row starts.
    pub line: u64,
    pub column: Option<String>,
    pub value: Option<String>,
    pub reason: String,
    /// The row's text (invalid UTF-8 replaced), cut at 4 KiB.
    pub raw: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(c) = &self.column {
            write!(f, "column {c}: ")?;
        }
        f.write_str(&self.reason)
    }
}

/// Where bad rows go: counted, kept (up to a bound) for the quarantine, or turned into an error.
#[derive(Debug, Default)]
pub struct BadRows {
    inner: Mutex<BadRowsInner>,
    /// Stop at the first bad row (to name it).
    pub first_only: bool,
    /// Keep every bad row (for the quarantine); otherwise only the first few, and count.
    pub keep_all: bool,
}

/// Bad rows kept when they are only counted (`bad_rows: skip`), to name the first.
const KEPT_WHEN_COUNTING: usize = 100;

#[derive(Debug, Default)]
struct BadRowsInner {
    count: u64,
    rows: Vec<BadRow>,
}

impl BadRows {
    pub fn new(first_only: bool, keep_all: bool) -> Arc<BadRows> {
        Arc::new(BadRows { inner: Mutex::default(), first_only, keep_all })
    }

    /// The first bad row found so far.
    pub fn first(&self) -> Option<BadRow> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).rows.first().cloned()
    }

    pub(super) fn add(&self, row: BadRow) -> Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.count += 1;
        if self.keep_all || g.rows.len() < KEPT_WHEN_COUNTING {
            g.rows.push(row);
        }
        if self.first_only {
            return Err(DataFusionError::Execution("a bad row was found".into()));
        }
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).count
    }

    /// The bad rows, in file and line order.
    pub fn take(&self) -> Vec<BadRow> {
        let mut rows = std::mem::take(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()).rows);
        rows.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        rows
    }
}

/// One partition of the tolerant scan: the lines starting in `range` of `file`.
#[derive(Debug, Clone)]
struct Piece {
    store: Arc<dyn ObjectStore>,
    file: ObjectMeta,
    /// Shown in bad rows: the path relative to the store root.
    name: String,
    range: Range<u64>,
    format: Arc<InputFormat>,
    schema: SchemaRef,
    /// Columns read as text or wider decimals that become decimals (their index in `schema`,
    /// their type): a value that does not fit after rounding is a bad row here, not an error
    /// later (see `table::typed_columns`).
    decimals: Arc<Vec<(usize, DataType)>>,
    bad: Arc<BadRows>,
}

/// The partitions reading `files` tolerantly into `schema` (the extract's read schema, or a
/// group's); `target` is the extract's table schema, the types the columns end up with.
pub fn partitions(
    store: Arc<dyn ObjectStore>,
    root: &object_store::path::Path,
    files: &[ObjectMeta],
    format: &InputFormat,
    schema: SchemaRef,
    target: &SchemaRef,
    bad: Arc<BadRows>,
) -> Vec<Arc<dyn PartitionStream>> {
    let format = Arc::new(format.clone());
    let decimals: Arc<Vec<(usize, DataType)>> = Arc::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .filter_map(|(k, f)| {
                let t = target.field_with_name(f.name()).ok()?.data_type();
                (t != f.data_type() && matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)))
                    .then(|| (k, t.clone()))
            })
            .collect(),
    );
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) as u64;
    let total: u64 = files.iter().map(|f| f.size).sum();
    // Tests cut small files into many pieces to exercise the boundaries.
    let target = std::env::var("WEIR_TEST_PIECE_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| (total / cores).max(MIN_PIECE))
        .max(1);
    let mut out: Vec<Arc<dyn PartitionStream>> = Vec::new();
    for f in files {
        let name = f
            .location
            .prefix_match(root)
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
            .unwrap_or_else(|| f.location.to_string());
        let splittable =
            format.compression == InputCompression::None && !(format.kind == FileFormat::Csv && format.csv.multiline);
        let n = if splittable { f.size.div_ceil(target).max(1) } else { 1 };
        for k in 0..n {
            let range = (f.size * k / n)..(f.size * (k + 1) / n);
            out.push(Arc::new(Piece {
                store: store.clone(),
                file: f.clone(),
                name: name.clone(),
                range,
                format: format.clone(),
                schema: schema.clone(),
                decimals: decimals.clone(),
                bad: bad.clone(),
            }));
        }
    }
    out
}

impl PartitionStream for Piece {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 4);
        let tx = builder.tx();
        let piece = self.clone();
        builder.spawn(async move {
            piece
                .read(|batch| {
                    let tx = tx.clone();
                    async move { tx.send(Ok(batch)).await.map_err(|_| DataFusionError::Execution("stopped".into())) }
                })
                .await
        });
        builder.build()
    }
}

impl Piece {
    /// Read the piece, handing each decoded batch to `emit`.
    async fn read<F, Fut>(&self, emit: F) -> Result<()>
    where
        F: Fn(RecordBatch) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        // Start one byte early: the piece's first line is the one after the first line break
        // at or after `start - 1`.
        let from = self.range.start.saturating_sub(1);
        let compressed = self.format.compression != InputCompression::None;
        // Compressed files are streamed through the decompressor; others are read in large
        // ranges (a local store's stream would come in 8 KiB chunks).
        let mut stream: Option<futures::stream::BoxStream<'static, Result<Bytes>>> = if compressed {
            let got = self.store.get_opts(&self.file.location, GetOptions::default()).await?;
            let raw = got.into_stream().map_err(|e| DataFusionError::ObjectStore(Box::new(e))).boxed();
            Some(self.format.compression_type().convert_stream(raw)?.boxed())
        } else {
            None
        };
        let mut fetched = from;
        let mut decoder = PieceDecoder::new(self);
        // `buf[pos..]` is not decoded yet; `offset` is the absolute offset of `buf[pos]`
        // (uncompressed pieces), to know where the piece ends.
        let mut offset = if compressed { 0 } else { from };
        let mut buf: Vec<u8> = Vec::new();
        let mut pos = 0usize;
        let mut started = self.range.start == 0;
        let mut eof = false;
        let mut need_more = false;
        loop {
            // Read on until a good share of a batch is buffered (or at least one more chunk
            // when the buffer held no whole batch).
            while !eof && (buf.len() - pos < READ_AHEAD || need_more) {
                need_more = false;
                let chunk = match stream.as_mut() {
                    Some(s) => s.next().await.transpose()?,
                    None if fetched < self.file.size => {
                        let end = (fetched + FETCH).min(self.file.size);
                        let opts = GetOptions { range: Some(GetRange::Bounded(fetched..end)), ..Default::default() };
                        let bytes = self.store.get_opts(&self.file.location, opts).await?.bytes().await?;
                        fetched = end;
                        Some(bytes)
                    }
                    None => None,
                };
                match chunk {
                    Some(c) => {
                        if pos > 0 {
                            buf.drain(..pos);
                            pos = 0;
                        }
                        buf.extend_from_slice(&c);
                    }
                    None => eof = true,
                }
            }
            if !started {
                // Skip to the first line break at or after `from`.
                match memchr::memchr(b'\n', &buf[pos..]) {
                    Some(i) => {
                        offset += i as u64 + 1;
                        pos += i + 1;
                        started = true;
                        decoder.first_offset = offset;
                    }
                    None if eof => return Ok(()),
                    None => {
                        offset += (buf.len() - pos) as u64;
                        pos = buf.len();
                        continue;
                    }
                }
            }
            // Whole batches of lines (or records), up to the piece's end.
            loop {
                if !compressed && offset >= self.range.end && self.range.end < self.file.size {
                    return Ok(());
                }
                // The piece ends before the file: is its last line in the buffer, whole?
                let ends_here = !compressed && self.range.end < self.file.size && {
                    let limit = (self.range.end - offset) as usize;
                    limit <= buf.len() - pos && memchr::memchr(b'\n', &buf[pos + limit.saturating_sub(1)..]).is_some()
                };
                let Some(len) = decoder.next_batch_len(&buf[pos..], eof || ends_here) else {
                    need_more = true;
                    break;
                };
                // Do not cross the piece's end: cut after the last line starting before it.
                let len = if compressed || self.range.end >= self.file.size {
                    len
                } else {
                    let limit = self.range.end.saturating_sub(offset);
                    if (len as u64) > limit { cut_lines(&buf[pos..pos + len], limit as usize) } else { len }
                };
                if len == 0 {
                    return Ok(());
                }
                decoder.batch(&buf[pos..pos + len], &emit).await?;
                pos += len;
                offset += len as u64;
                if self.bad.first_only && self.bad.count() > 0 {
                    return Ok(());
                }
            }
            if eof {
                if pos < buf.len() {
                    decoder.batch(&buf[pos..], &emit).await?;
                }
                return Ok(());
            }
        }
    }
}

/// The length of the lines of `buf` that start before `limit`.
fn cut_lines(buf: &[u8], limit: usize) -> usize {
    let mut end = 0;
    while end < limit && end < buf.len() {
        end = match memchr::memchr(b'\n', &buf[end..]) {
            Some(i) => end + i + 1,
            None => buf.len(),
        };
    }
    end
}

/// Decodes a piece's batches, in order, keeping the line count.
struct PieceDecoder<'a> {
    piece: &'a Piece,
    /// Lines before the current batch within the piece.
    lines: u64,
    /// Lines of the file before the piece (found when a bad row needs them).
    lines_before: Option<u64>,
    /// The absolute offset of the piece's first line.
    first_offset: u64,
    /// The header (and a BOM) are still to be skipped.
    header_pending: bool,
    bom_pending: bool,
}

impl<'a> PieceDecoder<'a> {
    fn new(piece: &'a Piece) -> Self {
        let at_start = piece.range.start == 0;
        PieceDecoder {
            piece,
            lines: 0,
            lines_before: if at_start { Some(0) } else { None },
            first_offset: piece.range.start,
            header_pending: at_start && piece.format.kind == FileFormat::Csv && piece.format.csv.header,
            bom_pending: at_start,
        }
    }

    /// The length of the next batch in `buf`: `BATCH_ROWS` lines (or records, for multiline
    /// CSV), or everything at the end of the input; `None` when more input is needed.
    fn next_batch_len(&self, buf: &[u8], eof: bool) -> Option<usize> {
        if self.piece.format.kind == FileFormat::Csv && self.piece.format.csv.multiline {
            let ends = record_ends(buf, &self.piece.format.csv, BATCH_ROWS + usize::from(self.header_pending));
            return match ends.last() {
                Some(&e) if ends.len() > BATCH_ROWS => Some(e),
                _ if eof => (!buf.is_empty()).then_some(buf.len()),
                _ => None,
            };
        }
        let mut n = 0;
        for i in memchr::memchr_iter(b'\n', buf) {
            n += 1;
            if n == BATCH_ROWS {
                return Some(i + 1);
            }
        }
        if eof { (!buf.is_empty()).then_some(buf.len()) } else { None }
    }

    async fn batch<F, Fut>(&mut self, bytes: &[u8], emit: &F) -> Result<()>
    where
        F: Fn(RecordBatch) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let mut bytes = bytes;
        if self.bom_pending {
            self.bom_pending = false;
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        let first_line = self.lines;
        self.lines += memchr::memchr_iter(b'\n', bytes).count() as u64;
        let mut first_line = first_line;
        if self.header_pending {
            self.header_pending = false;
            let Some(header) = self.records(bytes).first().cloned() else { return Ok(()) };
            first_line += memchr::memchr_iter(b'\n', &bytes[..header.end]).count() as u64;
            bytes = &bytes[header.end..];
        }
        self.decode_or_split(bytes, first_line, emit).await
    }

    async fn decode_or_split<F, Fut>(&mut self, bytes: &[u8], first_line: u64, emit: &F) -> Result<()>
    where
        F: Fn(RecordBatch) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(());
        }
        let whole = self.balanced(bytes);
        match self.decode(bytes) {
            Ok(Some(b)) if whole => emit(b).await,
            Ok(None) if whole => Ok(()),
            _ => {
                // Record by record: good ones go on (together, in order), bad ones are reported.
                let mut good: Vec<RecordBatch> = Vec::new();
                let mut line = first_line;
                let mut start = 0;
                for r in self.records(bytes) {
                    let rec = &bytes[start..r.end];
                    let rec_line = line + leading_blank_lines(rec);
                    line += memchr::memchr_iter(b'\n', rec).count() as u64;
                    start = r.end;
                    if rec.iter().all(|b| b.is_ascii_whitespace()) {
                        continue;
                    }
                    let comment = self.piece.format.csv.comment.is_some_and(|c| trim_record(rec).first() == Some(&c));
                    let decoded = match self.decode(rec) {
                        // A record that vanished (not a comment) was cut by a quote that never closed.
                        _ if !self.balanced(rec) => Err(ArrowError::CsvError("unterminated quoted field".into())),
                        Ok(None) if !comment && self.piece.format.kind == FileFormat::Csv => {
                            Err(ArrowError::CsvError("unterminated quoted field".into()))
                        }
                        other => other,
                    };
                    match decoded {
                        Ok(Some(b)) => good.push(b),
                        Ok(None) => {}
                        Err(e) => {
                            let bad = self.explain(rec, rec_line, &e).await;
                            self.piece.bad.add(bad)?;
                        }
                    }
                }
                if !good.is_empty() {
                    emit(datafusion::arrow::compute::concat_batches(&self.piece.schema, &good)?).await?;
                }
                Ok(())
            }
        }
    }

    /// Whether every quote of CSV `bytes` closes (an even number of quote characters; with an
    /// escape character this cannot be told cheaply, and the decoder's word is taken).
    fn balanced(&self, bytes: &[u8]) -> bool {
        let c = &self.piece.format.csv;
        self.piece.format.kind != FileFormat::Csv
            || c.escape.is_some()
            || memchr::memchr_iter(c.quote, bytes).count().is_multiple_of(2)
    }

    /// Decode `bytes` (whole records) into one batch: an error when a record cannot be read,
    /// also when a decimal read as text does not parse or fit (see `table::typed_text`).
    fn decode(&self, bytes: &[u8]) -> std::result::Result<Option<RecordBatch>, ArrowError> {
        let batch = self.decode_text(bytes)?;
        if let Some(b) = &batch {
            for (k, dt) in self.piece.decimals.iter() {
                if let Some(v) = self.bad_decimal(b.column(*k), dt) {
                    return Err(ArrowError::CastError(format!("{v:?} is not a {}", sql_name(dt))));
                }
            }
        }
        Ok(batch)
    }

    /// The first value of a column that does not become a value of decimal `dt` (as text; NULL,
    /// an empty field and the `null` text are NULL, not bad).
    fn bad_decimal(&self, read: &datafusion::arrow::array::ArrayRef, dt: &DataType) -> Option<String> {
        use datafusion::arrow::array::{Array, AsArray};
        let converted = super::table::to_decimal(read, dt, true).ok()?;
        let null_text = self.piece.format.csv.null.as_deref();
        (0..read.len()).find_map(|i| {
            if read.is_null(i) || !converted.is_null(i) {
                return None;
            }
            let v = match read.as_string_opt::<i32>() {
                Some(s) => s.value(i).to_string(),
                None => datafusion::arrow::util::display::array_value_to_string(read, i).ok()?,
            };
            (!v.is_empty() && Some(v.as_str()) != null_text).then_some(v)
        })
    }

    fn decode_text(&self, bytes: &[u8]) -> std::result::Result<Option<RecordBatch>, ArrowError> {
        let schema = self.piece.schema.clone();
        match self.piece.format.kind {
            FileFormat::Json => {
                let mut d = datafusion::arrow::json::ReaderBuilder::new(schema)
                    .with_batch_size(BATCH_ROWS + 16)
                    .build_decoder()?;
                feed(bytes, |b| d.decode(b))?;
                d.flush()
            }
            _ => {
                let c = &self.piece.format.csv;
                let mut b = datafusion::arrow::csv::ReaderBuilder::new(schema)
                    .with_header(false)
                    .with_delimiter(c.delimiter)
                    .with_quote(c.quote)
                    .with_batch_size(BATCH_ROWS + 16);
                if let Some(e) = c.escape {
                    b = b.with_escape(e);
                }
                if let Some(cm) = c.comment {
                    b = b.with_comment(cm);
                }
                let mut d = b.build_decoder();
                let rest = feed(bytes, |b| d.decode(b))?;
                // An unterminated quote swallows the rest: arrow keeps it pending.
                if !rest.is_empty() {
                    return Err(ArrowError::CsvError("unterminated quoted field".into()));
                }
                d.flush()
            }
        }
    }

    /// The byte ranges of the records of `bytes` (lines for JSON and single-line CSV).
    fn records(&self, bytes: &[u8]) -> Vec<Range<usize>> {
        if self.piece.format.kind == FileFormat::Csv && self.piece.format.csv.multiline {
            let mut out = Vec::new();
            let mut start = 0;
            for end in record_ends(bytes, &self.piece.format.csv, usize::MAX) {
                out.push(start..end);
                start = end;
            }
            if start < bytes.len() {
                out.push(start..bytes.len());
            }
            return out;
        }
        let mut out = Vec::new();
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', bytes) {
            out.push(start..i + 1);
            start = i + 1;
        }
        if start < bytes.len() {
            out.push(start..bytes.len());
        }
        out
    }

    /// Why `rec` (starting at `line` within the piece) cannot be read.
    async fn explain(&mut self, rec: &[u8], line: u64, e: &ArrowError) -> BadRow {
        let before = match self.lines_before {
            Some(n) => n,
            None => {
                let n = self.count_lines_before().await.unwrap_or(0);
                self.lines_before = Some(n);
                n
            }
        };
        let trimmed = trim_record(rec);
        let mut raw = String::from_utf8_lossy(&trimmed[..trimmed.len().min(MAX_RAW)]).into_owned();
        if trimmed.len() > MAX_RAW {
            raw.push('…');
        }
        let mut bad = BadRow {
            file: self.piece.name.clone(),
            line: before + line + 1,
            column: None,
            value: None,
            reason: String::new(),
            raw,
        };
        let fields = self.piece.schema.fields();
        let msg = e.to_string();
        if self.piece.format.kind == FileFormat::Json {
            bad.reason = format!("not a JSON object of the extract's columns: {}", clean_arrow(&msg));
            return bad;
        }
        let c = &self.piece.format.csv;
        let values = split_fields(trimmed, c);
        if msg.contains("unterminated quoted field") {
            bad.reason = "unterminated quoted field (a quote opens and never closes)".into();
        } else if values.len() != fields.len() {
            bad.reason = format!("{} fields, expected {}", values.len(), fields.len());
        } else if let Some(k) = values.iter().position(|v| std::str::from_utf8(v).is_err()) {
            bad.column = Some(fields[k].name().clone());
            bad.value = Some(String::from_utf8_lossy(&values[k]).into_owned());
            bad.reason = "invalid UTF-8".into();
        } else if let Some((k, dt)) = self.piece.decimals.iter().find(|(k, dt)| {
            values.get(*k).is_some_and(|v| {
                let text: datafusion::arrow::array::ArrayRef =
                    Arc::new(datafusion::arrow::array::StringArray::from(vec![
                        String::from_utf8_lossy(v).into_owned(),
                    ]));
                self.bad_decimal(&text, dt).is_some()
            })
        }) {
            let v = String::from_utf8_lossy(&values[*k]).into_owned();
            let fits_type = super::table::to_decimal(
                &(Arc::new(datafusion::arrow::array::StringArray::from(vec![v.clone()]))
                    as datafusion::arrow::array::ArrayRef),
                &DataType::Decimal256(
                    76,
                    match dt {
                        DataType::Decimal128(_, s) | DataType::Decimal256(_, s) => *s,
                        _ => 0,
                    },
                ),
                false,
            )
            .is_ok();
            bad.reason = if fits_type {
                format!("{v:?} does not fit {} (rounded to its scale)", sql_name(dt))
            } else {
                format!("{v:?} is not a {}", sql_name(dt))
            };
            bad.column = Some(fields[*k].name().clone());
            bad.value = Some(v);
        } else if let Some(k) = parse_error_column(&msg).filter(|k| *k < fields.len()).or_else(|| {
            // Find the field that does not convert to its column's type.
            values.iter().zip(fields.iter()).position(|(v, f)| {
                let text = String::from_utf8_lossy(v);
                if text.is_empty() || f.data_type().is_null() {
                    return false;
                }
                let arr = datafusion::arrow::array::StringArray::from(vec![text.as_ref()]);
                let opts = datafusion::arrow::compute::CastOptions { safe: false, ..Default::default() };
                datafusion::arrow::compute::cast_with_options(&arr, f.data_type(), &opts).is_err()
            })
        }) {
            let v = String::from_utf8_lossy(&values[k]).into_owned();
            bad.reason = format!("{v:?} is not a {}", sql_name(fields[k].data_type()));
            bad.column = Some(fields[k].name().clone());
            bad.value = Some(v);
        } else {
            bad.reason = clean_arrow(&msg);
        }
        bad
    }

    /// Line breaks in the file before the piece's first line.
    async fn count_lines_before(&self) -> Result<u64> {
        if self.first_offset == 0 {
            return Ok(0);
        }
        let opts = GetOptions { range: Some(GetRange::Bounded(0..self.first_offset)), ..Default::default() };
        let mut s = self.piece.store.get_opts(&self.piece.file.location, opts).await?.into_stream();
        let mut n = 0u64;
        while let Some(chunk) = s.next().await {
            n += memchr::memchr_iter(b'\n', &chunk?).count() as u64;
        }
        Ok(n)
    }
}

/// Hand `bytes` to a decoder until it takes no more; what it left.
fn feed(
    bytes: &[u8],
    mut decode: impl FnMut(&[u8]) -> std::result::Result<usize, ArrowError>,
) -> std::result::Result<&[u8], ArrowError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = decode(rest)?;
        if n == 0 {
            break;
        }
        rest = &rest[n..];
    }
    Ok(rest)
}

/// Blank lines (only `\r`/`\n`) at the start of a record.
fn leading_blank_lines(rec: &[u8]) -> u64 {
    let mut n = 0;
    for &b in rec {
        match b {
            b'\n' => n += 1,
            b'\r' | b' ' | b'\t' => {}
            _ => break,
        }
    }
    n
}

/// A record without its line terminator and leading blank lines.
fn trim_record(rec: &[u8]) -> &[u8] {
    let start = rec.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(rec.len());
    let mut end = rec.len();
    while end > start && matches!(rec[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    &rec[start..end]
}

/// The ends of up to `max` whole records of `buf`, found with `csv_core`.
pub(crate) fn record_ends(buf: &[u8], c: &CsvSettings, max: usize) -> Vec<usize> {
    let mut r = c.reader();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut field = [0u8; 1024];
    let mut ends = [0usize; 64];
    while pos < buf.len() && out.len() < max {
        let (res, nin, _, _) = r.read_record(&buf[pos..], &mut field, &mut ends);
        pos += nin;
        match res {
            csv_core::ReadRecordResult::Record => out.push(pos),
            csv_core::ReadRecordResult::InputEmpty | csv_core::ReadRecordResult::End => break,
            csv_core::ReadRecordResult::OutputFull | csv_core::ReadRecordResult::OutputEndsFull => {}
        }
    }
    out
}

/// The fields of one record, unquoted.
pub(crate) fn split_fields(rec: &[u8], c: &CsvSettings) -> Vec<Vec<u8>> {
    let mut r = c.reader();
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut pos = 0;
    let mut buf = [0u8; 4096];
    loop {
        let input = &rec[pos..];
        let (res, nin, nout) = r.read_field(input, &mut buf);
        pos += nin;
        cur.extend_from_slice(&buf[..nout]);
        match res {
            csv_core::ReadFieldResult::InputEmpty => {
                if pos >= rec.len() {
                    // end of input: flush the last field
                    let (res, _, nout) = r.read_field(&[], &mut buf);
                    cur.extend_from_slice(&buf[..nout]);
                    if matches!(res, csv_core::ReadFieldResult::Field { .. }) {
                        out.push(std::mem::take(&mut cur));
                    }
                    break;
                }
            }
            csv_core::ReadFieldResult::OutputFull => {}
            csv_core::ReadFieldResult::Field { record_end } => {
                out.push(std::mem::take(&mut cur));
                if record_end {
                    break;
                }
            }
            csv_core::ReadFieldResult::End => break,
        }
    }
    out
}

/// `... for column 3 at line ...` → 3.
fn parse_error_column(msg: &str) -> Option<usize> {
    let rest = msg.split("for column ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn clean_arrow(m: &str) -> String {
    m.trim_start_matches("Csv error: ")
        .trim_start_matches("Json error: ")
        .trim_start_matches("Parser error: ")
        .to_string()
}

/// Whether a task's error looks like one of the strict readers' complaints about a file's
/// content (then [`first_bad_row`] can say where).
pub fn looks_like_bad_input(message: &str) -> bool {
    [
        "Parser error",
        "Csv error",
        "Json error",
        "incorrect number of fields",
        "invalid UTF-8",
        "Error while parsing value",
        "unterminated",
        "Cannot cast string",
        "too large to store in a Decimal",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Write `rows` to `rel` in `store` as one Parquet file (complete or absent). Returns its URL.
pub async fn write_quarantine(
    store: &crate::storage::Store,
    rel: &str,
    rows: &[BadRow],
    run_id: &str,
) -> Result<String> {
    use datafusion::arrow::array::{StringArray, UInt64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("line", DataType::UInt64, false),
        Field::new("column", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("_run_id", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.file.as_str()))),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.line))),
            Arc::new(rows.iter().map(|r| r.column.as_deref()).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| r.value.as_deref()).collect::<StringArray>()),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.reason.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.raw.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|_| run_id))),
        ],
    )?;
    let path = store.path(rel);
    let writer = object_store::buffered::BufWriter::new(store.object_store.clone(), path.clone());
    let mut w = datafusion::parquet::arrow::AsyncArrowWriter::try_new(writer, schema, None)?;
    w.write(&batch).await?;
    w.close().await?;
    Ok(store.url_of(&path, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_records() {
        let c = CsvSettings::default();
        assert_eq!(split_fields(b"a,\"b,c\",d", &c), vec![b"a".to_vec(), b"b,c".to_vec(), b"d".to_vec()]);
        assert_eq!(split_fields(b"a,,", &c).len(), 3);
        let ends = record_ends(b"a,\"x\ny\"\nb,c\n", &c, 10);
        assert_eq!(ends, vec![8, 12]);
        assert_eq!(parse_error_column("Error while parsing value 'x' as type 'Int64' for column 2 at line 0"), Some(2));
        assert_eq!(cut_lines(b"ab\ncd\nef\n", 4), 6);
        assert_eq!(cut_lines(b"ab\ncd\nef", 7), 8);
        assert_eq!(cut_lines(b"ab\ncd\nef\n", 3), 3);
    }
}
