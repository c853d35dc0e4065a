//! A files source at compile time: list the files and work out the schema, from footers and
//! samples of rows, cached by the files' identity.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::InputFormat;
use crate::source::SchemaCache;
use crate::spec::{FileFormat, InputCompression};
use crate::storage::{FileGlob, StorageError, Store};

/// Parquet files sampled for schema inference.
pub const PARQUET_SCHEMA_SAMPLE: usize = 16;

#[derive(Debug)]
pub enum InferError {
    NoFiles {
        pattern: String,
        store: String,
        url: String,
    },
    Storage(StorageError),
    Infer {
        file: String,
        error: String,
    },
    /// Files that store a column with different types, and no `schema:` type for it.
    TypeConflict {
        column: String,
        first: (String, DataType),
        other: (String, DataType),
    },
    UnknownColumn {
        column: String,
        known: Vec<String>,
    },
    ColumnCount {
        declared: usize,
        found: usize,
    },
}

/// List an extract's files and work out its schema: inferred from a sample, with the
/// declared types applied. Returns (files, table schema, read schema).
pub async fn infer(
    state: &datafusion::execution::session_state::SessionState,
    cache: Option<&dyn SchemaCache>,
    _name: &str,
    store: &Arc<Store>,
    glob: &FileGlob,
    format: &InputFormat,
    declared: &[(String, DataType)],
) -> Result<(Vec<object_store::ObjectMeta>, SchemaRef, SchemaRef), InferError> {
    let files = store.list(glob).await.map_err(InferError::Storage)?;
    if files.is_empty() {
        return Err(InferError::NoFiles {
            pattern: glob.pattern.clone(),
            store: store.name.clone(),
            url: store.display_url.clone(),
        });
    }
    // XML: the columns are the fields, text unless declared; no file is read.
    if let Some(plan) = &format.xml {
        for (col, _) in declared {
            if !plan.columns.contains(col) {
                return Err(InferError::UnknownColumn { column: col.clone(), known: plan.columns.clone() });
            }
        }
        let schema = plan.schema(declared);
        return Ok((files, schema.clone(), schema));
    }
    let sample: &[object_store::ObjectMeta] = match format.kind {
        FileFormat::Parquet => &files[..files.len().min(PARQUET_SCHEMA_SAMPLE)],
        _ => &files,
    };
    let key = cache.map(|_| schema_key(store, sample, format, declared));
    let cached = match (cache, &key) {
        (Some(c), Some(k)) => c.schema(k).and_then(|bytes| schema_from_bytes(&bytes)),
        _ => None,
    };
    let inferred = match cached {
        Some(s) => s,
        None => {
            let s = infer_sample(state, store, &files, sample, format, declared).await?;
            if let (Some(c), Some(k)) = (cache, &key) {
                c.put_schema(k, &schema_bytes(&s));
            }
            s
        }
    };
    // A UTF-8 byte order mark is not part of the first column's name.
    let inferred = match inferred.fields().first() {
        Some(f) if f.name().starts_with('\u{feff}') => {
            let mut fields: Vec<Field> = inferred.fields().iter().map(|f| f.as_ref().clone()).collect();
            let name = fields[0].name().trim_start_matches('\u{feff}').to_string();
            fields[0] = fields[0].clone().with_name(name);
            Arc::new(Schema::new(fields))
        }
        _ => inferred,
    };
    let schema = apply_declared(&inferred, declared, format)?;
    // Columns read with another type and converted after reading (`run::table::typed_columns`):
    // every CSV column as text when a `null` text must be told from values; CSV and JSON
    // decimals with all the digits past their scale that fit, as Arrow's parsers drop the
    // digits past the scale where SQL rounds on them.
    let read_type = |dt: &DataType| -> DataType {
        match (format.kind, dt) {
            (FileFormat::Csv, _) if format.csv.null.is_some() => DataType::Utf8,
            (FileFormat::Csv | FileFormat::Json, DataType::Decimal128(p, s)) if *p < 38 => {
                DataType::Decimal128(38, s + (38 - *p) as i8)
            }
            (FileFormat::Csv | FileFormat::Json, DataType::Decimal128(_, s)) => DataType::Decimal256(76, s + 38),
            (FileFormat::Csv | FileFormat::Json, DataType::Decimal256(p, s)) if *p < 76 => {
                DataType::Decimal256(76, s + (76 - *p) as i8)
            }
            _ => dt.clone(),
        }
    };
    let read_schema = if schema.fields().iter().any(|f| &read_type(f.data_type()) != f.data_type()) {
        Arc::new(Schema::new(
            schema.fields().iter().map(|f| Field::new(f.name(), read_type(f.data_type()), true)).collect::<Vec<_>>(),
        ))
    } else {
        schema.clone()
    };
    Ok((files, schema, read_schema))
}

/// The cache key of the schema inferred from `sample` with `format`: the files' identity
/// (path, size, ETag or modification time), every setting of the format, and the declared
/// types (which let Parquet files that disagree on a column's type be read together).
fn schema_key(
    store: &Store,
    sample: &[object_store::ObjectMeta],
    format: &InputFormat,
    declared: &[(String, DataType)],
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"weir-schema-2\0");
    h.update(store.display_url.as_bytes());
    h.update(format!("\0{format:?}\0{declared:?}\0").as_bytes());
    for m in sample {
        let version = m.e_tag.clone().unwrap_or_else(|| m.last_modified.to_rfc3339());
        h.update(format!("{}\0{}\0{version}\0", m.location, m.size).as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// A schema as Arrow IPC flatbuffer bytes (a `Schema` root; read back with `root_as_schema`).
pub fn schema_bytes(schema: &Schema) -> Vec<u8> {
    datafusion::arrow::ipc::convert::IpcSchemaEncoder::new().schema_to_fb(schema).finished_data().to_vec()
}

/// The schema [`schema_bytes`] wrote; `None` when the bytes are not one.
pub fn schema_from_bytes(bytes: &[u8]) -> Option<SchemaRef> {
    let fb = datafusion::arrow::ipc::root_as_schema(bytes).ok()?;
    Some(Arc::new(datafusion::arrow::ipc::convert::fb_to_schema(fb)))
}

/// The schema of `sample` (of the extract's `files`), read from the files.
async fn infer_sample(
    state: &datafusion::execution::session_state::SessionState,
    store: &Arc<Store>,
    files: &[object_store::ObjectMeta],
    sample: &[object_store::ObjectMeta],
    format: &InputFormat,
    declared: &[(String, DataType)],
) -> Result<SchemaRef, InferError> {
    let Some(df_format) = format.file_format(true) else {
        return Err(InferError::Infer { file: String::new(), error: "XML files are not sampled".into() });
    };
    let inferred = match df_format.infer_schema(state, &store.object_store, sample).await {
        Ok(s) => s,
        // Parquet files that store a column with different types (a column that widened):
        // each file's schema; a declared type reads them all (the reader casts each file's
        // values to it), else the first conflict is the error.
        Err(_) if format.kind == FileFormat::Parquet && sample.len() > 1 => {
            let mut merged: Vec<(Field, String)> = Vec::new();
            for f in sample {
                let one = df_format
                    .infer_schema(state, &store.object_store, std::slice::from_ref(f))
                    .await
                    .map_err(|e| InferError::Infer { file: store.relative(&f.location), error: e.strip_backtrace() })?;
                for field in one.fields() {
                    let declared_type = declared.iter().find(|(c, _)| c == field.name()).map(|(_, t)| t);
                    match merged.iter().find(|(m, _)| m.name() == field.name()) {
                        None => merged.push((field.as_ref().clone(), store.relative(&f.location))),
                        Some((m, _)) if m.data_type() == field.data_type() || declared_type.is_some() => {}
                        Some((m, first)) => {
                            return Err(InferError::TypeConflict {
                                column: field.name().clone(),
                                first: (first.clone(), m.data_type().clone()),
                                other: (store.relative(&f.location), field.data_type().clone()),
                            });
                        }
                    }
                }
            }
            Arc::new(Schema::new(merged.into_iter().map(|(f, _)| f).collect::<Vec<_>>()))
        }
        // Text files that disagree on a column's type (`1` in one, `1.5` in another; seconds
        // here, microseconds there): each file's schema, merged to the type that holds both.
        Err(datafusion::error::DataFusionError::ArrowError(e, _))
            if format.kind != FileFormat::Parquet
                && matches!(e.as_ref(), datafusion::arrow::error::ArrowError::SchemaError(_)) =>
        {
            let mut merged: Option<Schema> = None;
            for f in sample {
                let one = df_format
                    .infer_schema(state, &store.object_store, std::slice::from_ref(f))
                    .await
                    .map_err(|e| InferError::Infer { file: store.relative(&f.location), error: e.strip_backtrace() })?;
                merged = Some(match merged {
                    None => one.as_ref().clone(),
                    Some(m) => crate::types::widen_schemas(&m, &one),
                });
            }
            Arc::new(merged.unwrap_or_else(Schema::empty))
        }
        // Malformed rows in the sample are the run's business (it names them, or sets them
        // aside with `bad_rows`), not the pipeline's: sample the rows that can be read.
        Err(_)
            if format.kind != FileFormat::Parquet
                && let Some(s) = infer_tolerant(store, &files[0], format).await =>
        {
            Arc::new(s)
        }
        Err(e) => {
            return Err(InferError::Infer {
                file: sample.first().map(|f| store.relative(&f.location)).unwrap_or_default(),
                error: e.strip_backtrace(),
            });
        }
    };
    Ok(inferred)
}

/// The schema of a text file some of whose first rows are malformed: CSV lines with the
/// header's number of fields (JSON lines that parse), from the first MiB of `file`.
async fn infer_tolerant(store: &Store, file: &object_store::ObjectMeta, format: &InputFormat) -> Option<Schema> {
    if format.compression != InputCompression::None {
        return None;
    }
    let end = file.size.min(1 << 20);
    let bytes = object_store::ObjectStoreExt::get_range(&store.object_store, &file.location, 0..end).await.ok()?;
    let text: &[u8] = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    // Whole lines only.
    let text = if end < file.size { &text[..memchr::memrchr(b'\n', text)? + 1] } else { text };
    match format.kind {
        FileFormat::Json => {
            let values = text
                .split(|b| *b == b'\n')
                .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
                .filter(|v| v.is_object())
                .take(format.infer_rows)
                .map(Ok::<_, datafusion::arrow::error::ArrowError>);
            datafusion::arrow::json::reader::infer_json_schema_from_iterator(values).ok()
        }
        FileFormat::Csv => {
            let c = &format.csv;
            let count = |line: &[u8]| -> usize {
                let mut r = c.reader();
                let mut out = [0u8; 8192];
                let mut ends = [0usize; 1024];
                let (_, _, _, n) = r.read_record(line, &mut out, &mut ends);
                if n > 0 {
                    return n;
                }
                let (_, _, _, m) = r.read_record(&[], &mut out, &mut ends);
                m
            };
            let mut lines = text.split_inclusive(|b| *b == b'\n');
            let mut kept: Vec<u8> = Vec::new();
            let mut width = 0;
            if c.header {
                let h = lines.next()?;
                kept.extend_from_slice(h);
                width = count(h);
            }
            for l in lines {
                let n = count(l);
                if width == 0 {
                    width = n;
                }
                if n == width && std::str::from_utf8(l).is_ok() {
                    kept.extend_from_slice(l);
                }
            }
            let mut f = datafusion::arrow::csv::reader::Format::default()
                .with_header(c.header)
                .with_delimiter(c.delimiter)
                .with_quote(c.quote);
            if let Some(e) = c.escape {
                f = f.with_escape(e);
            }
            if let Some(cm) = c.comment {
                f = f.with_comment(cm);
            }
            let (schema, _) = f.infer_schema(std::io::Cursor::new(kept), Some(format.infer_rows)).ok()?;
            Some(schema)
        }
        FileFormat::Parquet | FileFormat::Xml => None,
    }
}

fn apply_declared(
    inferred: &Schema,
    declared: &[(String, DataType)],
    format: &InputFormat,
) -> Result<SchemaRef, InferError> {
    if declared.is_empty() {
        return Ok(Arc::new(Schema::new(
            inferred.fields().iter().map(|f| Field::new(f.name(), f.data_type().clone(), true)).collect::<Vec<_>>(),
        )));
    }
    if format.kind == FileFormat::Csv && !format.csv.header {
        if declared.len() != inferred.fields().len() {
            return Err(InferError::ColumnCount { declared: declared.len(), found: inferred.fields().len() });
        }
        return Ok(Arc::new(Schema::new(
            declared.iter().map(|(n, t)| Field::new(n, t.clone(), true)).collect::<Vec<_>>(),
        )));
    }
    let known: Vec<String> = inferred.fields().iter().map(|f| f.name().clone()).collect();
    for (col, _) in declared {
        if !known.contains(col) {
            return Err(InferError::UnknownColumn { column: col.clone(), known });
        }
    }
    Ok(Arc::new(Schema::new(
        inferred
            .fields()
            .iter()
            .map(|f| {
                let t = declared
                    .iter()
                    .find(|(n, _)| n == f.name())
                    .map(|(_, t)| t.clone())
                    .unwrap_or_else(|| f.data_type().clone());
                Field::new(f.name(), t, true)
            })
            .collect::<Vec<_>>(),
    )))
}
