//! Files of one extract whose columns differ: CSV files are read by their own headers, so that
//! `price,qty` in one file and `qty,price` in the next land in the right columns, and a file
//! (CSV or Parquet) that lacks a column is either older than the column (its rows get NULL) or
//! a sign that the column was removed from the source (an error that names the column and the
//! files), whether or not the older files that have it are still there.
//!
//! The extract's columns are those of all its files, matched by name (schema inference merges
//! them so). A file's header is read from its first bytes. Files with the same header are read
//! together, each group with its own column order; their rows are then put in the extract's
//! column order, a column the group lacks as NULL.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::{TableProvider, ViewTable, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, lit};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use super::{CsvSettings, InputFormat};
use crate::spec::{FileFormat, InputCompression};
use crate::storage::Store;

/// Bytes of a file read to find its header; more (up to [`MAX_HEADER`]) when the header is
/// longer.
const HEADER_PROBE: u64 = 64 << 10;
const MAX_HEADER: usize = 1 << 20;

/// Files read together: the same columns in the same order.
#[derive(Debug, Clone)]
pub struct Group {
    pub files: Vec<ObjectMeta>,
    /// The files' columns, in their order, typed as the extract's (`read_schema`).
    pub read_schema: SchemaRef,
    /// The extract's columns these files lack (read as NULL).
    pub missing: Vec<String>,
}

/// DataFusion's cache of Parquet footers (the run's): the footers read here are not read again
/// by the scan.
pub type FooterCache = Arc<datafusion::execution::cache::cache_manager::FileMetadataCache>;

/// How an extract's files are read. `None`: all alike, as the extract's schema says.
pub type Layout = Option<Vec<Group>>;

/// A file whose columns do not fit the extract's.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error(
        "the source's columns changed: column{s} {columns} {are} in older files ({older}) but not in {newest}, the newest; a column that disappears would be loaded as NULL over the values it had. Bring the column back, or accept the change with --full-refresh (the output is rebuilt from every file; rows of the files without the column get NULL in it)",
        s = if .columns.contains(',') { "s" } else { "" },
        are = if .columns.contains(',') { "are" } else { "is" }
    )]
    Removed { columns: String, older: String, newest: String },
    #[error("{file}: its header has column{s} {columns} that the extract's other files do not; schema inference did not see this file (it changed since): run again", s = if .columns.contains(',') { "s" } else { "" })]
    Unknown { file: String, columns: String },
    #[error("{file}: cannot read its columns: {reason}")]
    Header { file: String, reason: String },
}

/// The layout of `files` (some or all of the extract's `all` files): for a CSV extract with a
/// header, groups of files by header; `None` for other formats (Parquet matches columns by name
/// itself) or when every file has the extract's columns in its order. Either way, a column the
/// newest file lacks and older ones have is an error — unless `removed_as_null` (a full
/// refresh, which rebuilds the output from every file: the rows of the files without the
/// column get NULL in it, and no value already loaded is overwritten).
pub async fn layout(
    store: &Store,
    format: &InputFormat,
    read_schema: &SchemaRef,
    files: &[ObjectMeta],
    all: &[ObjectMeta],
    cache: Option<&FooterCache>,
    removed_as_null: bool,
) -> std::result::Result<Layout, DriftError> {
    let show = |f: &ObjectMeta| store.relative(&f.location);
    let csv = format.kind == FileFormat::Csv && format.csv.header;
    if !(csv || format.kind == FileFormat::Parquet) || files.is_empty() {
        return Ok(None);
    }
    // (The futures are made before they are streamed: a stream mapping borrowed items with a
    // closure is not `Send` for every lifetime, which a spawned task needs.)
    let reads: Vec<_> = files.iter().map(|f| header(store, f, format, cache)).collect();
    let headers: Vec<Vec<String>> = futures::stream::iter(reads).buffered(16).try_collect().await?;
    let expected: Vec<&str> = read_schema.fields().iter().map(|f| f.name().as_str()).collect();
    let fits = |h: &Vec<String>| {
        if csv {
            h.iter().map(String::as_str).eq(expected.iter().copied())
        } else {
            expected.iter().all(|c| h.iter().any(|x| x == c))
        }
    };
    if headers.iter().all(fits) {
        return Ok(None);
    }
    // A column missing from a file is fine when the newest file of the extract has it: the file
    // is from before the column was added. The newest file is read here if this run does not.
    let newest =
        all.iter().chain(files).max_by(|a, b| (a.last_modified, &a.location).cmp(&(b.last_modified, &b.location)));
    let newest_columns: Option<Vec<String>> = match newest {
        Some(n) => match files.iter().position(|f| f.location == n.location) {
            Some(k) => Some(headers[k].clone()),
            None => Some(header(store, n, format, cache).await?),
        },
        None => None,
    };
    let mut by_header: BTreeMap<Vec<String>, Vec<ObjectMeta>> = BTreeMap::new();
    for (f, h) in files.iter().zip(headers) {
        by_header.entry(h).or_default().push(f.clone());
    }
    // Columns the newest file lacks, and the files of this run that have them.
    let mut removed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut groups = Vec::with_capacity(by_header.len());
    for (header, files) in &by_header {
        let unknown: Vec<&String> = header.iter().filter(|c| read_schema.field_with_name(c).is_err()).collect();
        if csv && !unknown.is_empty() {
            return Err(DriftError::Unknown { file: show(&files[0]), columns: quoted(unknown) });
        }
        let missing: Vec<String> =
            expected.iter().filter(|c| !header.iter().any(|h| h == *c)).map(|c| c.to_string()).collect();
        if let Some(newest) = &newest_columns {
            for m in missing.iter().filter(|m| !newest.contains(m)) {
                removed.entry(m.clone()).or_default();
            }
        }
        let fields: Vec<Field> = header
            .iter()
            .filter_map(|c| read_schema.field_with_name(c).ok())
            .map(|f| f.clone().with_nullable(true))
            .collect();
        groups.push(Group { files: files.clone(), read_schema: Arc::new(Schema::new(fields)), missing });
    }
    if !removed.is_empty() && !removed_as_null {
        for (header, files) in &by_header {
            for (column, having) in removed.iter_mut() {
                if header.contains(column) {
                    having.extend(files.iter().map(show));
                }
            }
        }
        if removed.values().all(Vec::is_empty) {
            // This run reads none of the files that have them: name some that earlier runs read.
            let mut others: Vec<&ObjectMeta> =
                all.iter().filter(|f| !files.iter().any(|g| g.location == f.location)).collect();
            others.sort_by(|a, b| b.last_modified.cmp(&a.last_modified));
            for f in others.into_iter().take(10) {
                let h = header(store, f, format, cache).await?;
                for (column, having) in removed.iter_mut() {
                    if h.contains(column) {
                        having.push(show(f));
                    }
                }
            }
        }
        let mut older: Vec<String> = removed.values().flatten().cloned().collect();
        older.sort();
        older.dedup();
        let shown = match older.len() {
            0 => "files that earlier runs read".to_string(),
            1..=3 => older.join(", "),
            n => format!("{}, and {} more", older[..3].join(", "), n - 3),
        };
        return Err(DriftError::Removed {
            columns: quoted(removed.keys()),
            older: shown,
            newest: newest.map(show).unwrap_or_default(),
        });
    }
    // Parquet files are read by name, a missing column as NULL: nothing more to do.
    Ok(csv.then_some(groups))
}

fn quoted<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names.into_iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
}

/// The extract's table over `groups`: each group's table (made by `table`, over its files with
/// its column order) with its columns put in `read_schema`'s order, a missing one as NULL; the
/// groups one after the other.
pub fn table(
    read_schema: &SchemaRef,
    groups: &[Group],
    table: impl Fn(&[ObjectMeta], SchemaRef) -> Result<Arc<dyn TableProvider>>,
) -> Result<Arc<dyn TableProvider>> {
    let mut plan: Option<LogicalPlanBuilder> = None;
    for (k, g) in groups.iter().enumerate() {
        let columns = read_schema
            .fields()
            .iter()
            .map(|f| {
                Ok(if g.missing.contains(f.name()) {
                    lit(ScalarValue::try_from(f.data_type())?).alias(f.name())
                } else {
                    Expr::Column(Column::new_unqualified(f.name()))
                })
            })
            .collect::<Result<Vec<Expr>>>()?;
        let scan = LogicalPlanBuilder::scan(
            format!("files{k}"),
            provider_as_source(table(&g.files, g.read_schema.clone())?),
            None,
        )?
        .project(columns)?
        .build()?;
        plan = Some(match plan {
            None => LogicalPlanBuilder::from(scan),
            Some(p) => p.union(scan)?,
        });
    }
    let plan = plan.ok_or_else(|| DataFusionError::Plan("no files".into()))?.build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The column names of `file`: a CSV file's header line (after a byte order mark and comment
/// lines), a Parquet file's schema (from its footer).
async fn header(
    store: &Store,
    file: &ObjectMeta,
    format: &InputFormat,
    cache: Option<&FooterCache>,
) -> std::result::Result<Vec<String>, DriftError> {
    let err = |reason: String| DriftError::Header { file: store.relative(&file.location), reason };
    if format.kind == FileFormat::Parquet {
        use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
        let md = DFParquetMetadata::new(store.object_store.as_ref(), file)
            .with_file_metadata_cache(cache.cloned())
            .fetch_metadata()
            .await
            .map_err(|e| err(e.strip_backtrace()))?;
        let schema = datafusion::parquet::arrow::parquet_to_arrow_schema(
            md.file_metadata().schema_descr(),
            md.file_metadata().key_value_metadata(),
        )
        .map_err(|e| err(e.to_string()))?;
        return Ok(schema.fields().iter().map(|f| f.name().clone()).collect());
    }
    let store: &Arc<dyn ObjectStore> = &store.object_store;
    let c = &format.csv;
    let mut buf: Vec<u8> = Vec::new();
    if format.compression == InputCompression::None {
        let mut end = file.size.min(HEADER_PROBE);
        loop {
            buf = store.get_range(&file.location, 0..end).await.map_err(|e| err(e.to_string()))?.to_vec();
            if first_record(&buf, c, end == file.size).is_some() || end == file.size || end as usize >= MAX_HEADER {
                break;
            }
            end = file.size.min(end * 4);
        }
        let at_end = end == file.size;
        return first_record(&buf, c, at_end).ok_or_else(|| err("no header line in its first MiB".into()));
    }
    let raw = store
        .get(&file.location)
        .await
        .map_err(|e| err(e.to_string()))?
        .into_stream()
        .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))
        .boxed();
    let mut stream = format.compression_type().convert_stream(raw).map_err(|e| err(e.to_string()))?;
    while buf.len() < MAX_HEADER {
        match stream.next().await {
            Some(chunk) => {
                let chunk: Bytes = chunk.map_err(|e| err(e.strip_backtrace()))?;
                buf.extend_from_slice(&chunk);
                if first_record(&buf, c, false).is_some() {
                    break;
                }
            }
            None => return first_record(&buf, c, true).ok_or_else(|| err("the file is empty".into())),
        }
    }
    first_record(&buf, c, false).ok_or_else(|| err("no header line in its first MiB".into()))
}

/// The fields of the first record of `text` (a byte order mark skipped), when it is complete
/// (or `at_end`: the text is the whole file).
fn first_record(text: &[u8], c: &CsvSettings, at_end: bool) -> Option<Vec<String>> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let ends = super::tolerant::record_ends(text, c, 1);
    let end = match ends.first() {
        Some(e) => *e,
        None if at_end && !text.is_empty() => text.len(),
        None => return None,
    };
    let fields = super::tolerant::split_fields(&text[..end], c);
    if fields.is_empty() {
        return None;
    }
    Some(fields.into_iter().map(|f| String::from_utf8_lossy(trim_line_end(&f)).into_owned()).collect())
}

fn trim_line_end(f: &[u8]) -> &[u8] {
    let f = f.strip_suffix(b"\n").unwrap_or(f);
    f.strip_suffix(b"\r").unwrap_or(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_as_csv() {
        let c = CsvSettings::default();
        assert_eq!(first_record(b"a,b\n1,2\n", &c, false), Some(vec!["a".into(), "b".into()]));
        assert_eq!(first_record(b"\xEF\xBB\xBFa,\"b,c\"\r\n1", &c, false), Some(vec!["a".into(), "b,c".into()]));
        assert_eq!(first_record(b"a,b", &c, false), None, "incomplete");
        assert_eq!(first_record(b"a,b", &c, true), Some(vec!["a".into(), "b".into()]));
        let commented = CsvSettings { comment: Some(b'#'), ..CsvSettings::default() };
        assert_eq!(
            first_record(b"# exported\nx;y\n", &CsvSettings { delimiter: b';', ..commented }, false),
            Some(vec!["x".into(), "y".into()])
        );
    }
}
