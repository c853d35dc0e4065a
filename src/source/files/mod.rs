//! Files in a store as a source: CSV, newline-delimited JSON and Parquet, plain or compressed.
//!
//! - `infer`: list the files and work out the schema (compile time);
//! - `table`: the table of a set of files, read lazily, and conversion of columns read with
//!   another type than the extract's;
//! - `drift`: files whose columns differ (CSV read by its own headers, columns that appear or
//!   disappear);
//! - `tolerant`: the reader that sets malformed rows aside (`bad_rows: skip | quarantine`).

pub mod drift;
pub mod infer;
pub mod table;
pub mod tolerant;
pub mod xml;
mod xml_split;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::parsers::CompressionTypeVariant;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::FileFormat as DfFileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use object_store::ObjectMeta;

use crate::spec::{FileFormat, InputCompression};
use crate::storage::{FileGlob, Store};

/// A files source as compile resolved it.
#[derive(Debug)]
pub struct FilesPlan {
    pub store: Arc<Store>,
    pub glob: FileGlob,
    pub format: InputFormat,
    /// The schema files are read with; differs from the task schema when values need a
    /// conversion after reading (a CSV `null` text, decimals rounded to their scale).
    pub read_schema: SchemaRef,
    /// The columns whose type `schema:` declares (the others' are inferred).
    pub declared: Vec<String>,
    /// The files matched when the plan was made: the run reads exactly these (an incremental
    /// extract: those of them that are new to the load it feeds).
    pub files: Vec<ObjectMeta>,
}

impl FilesPlan {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// How `files` (this run's share of the source) are read: CSV files by their own headers;
    /// a column the newest file lacks is an error, or NULL for the files without it on a full
    /// refresh (see `drift`). `footers`: the run's cache of Parquet footers, so that the scan
    /// does not read them again.
    pub async fn layout(
        &self,
        files: &[ObjectMeta],
        footers: Option<&drift::FooterCache>,
        full_refresh: bool,
    ) -> Result<drift::Layout, drift::DriftError> {
        drift::layout(&self.store, &self.format, &self.read_schema, files, &self.files, footers, full_refresh).await
    }

    /// A scan of `files` with `read_schema` (the extract's read schema, or a group's): the
    /// strict reader, or with `bad` the tolerant one, which sets malformed rows aside into
    /// `bad`. `schema`: the extract's table schema.
    pub fn scan(
        &self,
        files: &[ObjectMeta],
        read_schema: SchemaRef,
        schema: &SchemaRef,
        bad: Option<&Arc<tolerant::BadRows>>,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        if let Some(plan) = &self.format.xml {
            // XML is read by weir's own reader, which names a malformed record itself.
            let bad = bad.cloned().unwrap_or_else(|| tolerant::BadRows::new(true, false));
            let parts = xml::partitions(
                self.store.object_store.clone(),
                &self.store.root,
                files,
                &self.format,
                plan.clone(),
                read_schema.clone(),
                bad,
            );
            return Ok(Arc::new(datafusion::catalog::streaming::StreamingTable::try_new(read_schema, parts)?));
        }
        Ok(match bad {
            Some(bad) => {
                let parts = tolerant::partitions(
                    self.store.object_store.clone(),
                    &self.store.root,
                    files,
                    &self.format,
                    read_schema.clone(),
                    schema,
                    bad.clone(),
                );
                Arc::new(datafusion::catalog::streaming::StreamingTable::try_new(read_schema, parts)?)
            }
            None => Arc::new(table::FileSetTable::new(
                read_schema,
                self.format.file_format(false).ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal("XML is read by its own reader".into())
                })?,
                self.store.object_store_url.clone(),
                files.to_vec(),
            )),
        })
    }

    /// The extract's table over `files` laid out as `layout` says, each group scanned by
    /// `scan` (a local scan, or a listing table a cluster can be sent), its columns converted
    /// to `schema`'s types where they were read with others (see `table::typed_columns`).
    pub fn table_of(
        &self,
        schema: &SchemaRef,
        files: &[ObjectMeta],
        layout: drift::Layout,
        scan: impl Fn(&[ObjectMeta], SchemaRef) -> datafusion::error::Result<Arc<dyn TableProvider>>,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let table = match layout {
            None => scan(files, self.read_schema.clone())?,
            Some(groups) => drift::table(&self.read_schema, &groups, scan)?,
        };
        if self.read_schema != *schema {
            table::typed_columns(table, schema, self.format.csv.null.as_deref())
        } else {
            Ok(table)
        }
    }
}

/// How input files are parsed.
#[derive(Debug, Clone)]
pub struct InputFormat {
    pub kind: FileFormat,
    pub compression: InputCompression,
    pub csv: CsvSettings,
    pub infer_rows: usize,
    /// XML: how the files become rows.
    pub xml: Option<Arc<xml::XmlPlan>>,
}

#[derive(Debug, Clone)]
pub struct CsvSettings {
    pub header: bool,
    pub delimiter: u8,
    pub quote: u8,
    pub escape: Option<u8>,
    /// Text read as NULL besides the empty field.
    pub null: Option<String>,
    pub comment: Option<u8>,
    pub multiline: bool,
}

impl Default for CsvSettings {
    fn default() -> Self {
        CsvSettings {
            header: true,
            delimiter: b',',
            quote: b'"',
            escape: None,
            null: None,
            comment: None,
            multiline: false,
        }
    }
}

impl CsvSettings {
    /// A record reader with these settings (delimiter, quote, escape, comment lines): the one
    /// every reader of CSV text in weir uses, so that all count fields alike.
    pub fn reader(&self) -> csv_core::Reader {
        let mut b = csv_core::ReaderBuilder::new();
        b.delimiter(self.delimiter).quote(self.quote);
        if let Some(e) = self.escape {
            b.escape(Some(e)).double_quote(false);
        }
        if let Some(cm) = self.comment {
            b.comment(Some(cm));
        }
        b.build()
    }
}

impl InputFormat {
    /// The compression of the input's files, as DataFusion names it.
    pub fn compression_type(&self) -> FileCompressionType {
        FileCompressionType::from(match self.compression {
            InputCompression::None => CompressionTypeVariant::UNCOMPRESSED,
            InputCompression::Gzip => CompressionTypeVariant::GZIP,
            InputCompression::Zstd => CompressionTypeVariant::ZSTD,
            InputCompression::Bzip2 => CompressionTypeVariant::BZIP2,
            InputCompression::Xz => CompressionTypeVariant::XZ,
        })
    }

    /// The DataFusion file format for this input (`None`: XML, which weir reads itself).
    /// `for_inference` reads NULL texts as NULL when sampling types.
    pub fn file_format(&self, for_inference: bool) -> Option<Arc<dyn DfFileFormat>> {
        let compression = self.compression_type();
        Some(match self.kind {
            FileFormat::Csv => {
                let c = &self.csv;
                let mut f = CsvFormat::default()
                    .with_has_header(c.header)
                    .with_delimiter(c.delimiter)
                    .with_quote(c.quote)
                    .with_escape(c.escape)
                    .with_comment(c.comment)
                    .with_newlines_in_values(c.multiline)
                    .with_schema_infer_max_rec(self.infer_rows)
                    .with_file_compression_type(compression);
                if for_inference && let Some(n) = &c.null {
                    f = f.with_null_regex(Some(format!("^(|{})$", regex::escape(n))));
                }
                Arc::new(f)
            }
            FileFormat::Json => Arc::new(
                JsonFormat::default()
                    .with_schema_infer_max_rec(self.infer_rows)
                    .with_file_compression_type(compression),
            ),
            FileFormat::Parquet => Arc::new(ParquetFormat::default()),
            FileFormat::Xml => return None,
        })
    }
}
