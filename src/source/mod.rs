//! `source`: one module per kind of source (see `docs/design/connectors.md`). A kind says at
//! compile time what will be read and with which schema — from a catalog or file footers and
//! samples, never by reading the data — and at run time reads it as a DataFusion table. Files,
//! databases (behind the one seam of [`database`]) and HTTP APIs (from their first page).

pub mod database;
pub mod files;
pub mod http;
pub mod mysql;
pub mod postgres;

/// What an extract reads: one variant per kind of source.
#[derive(Debug)]
pub enum SourcePlan {
    /// Files in a store (CSV, JSON, Parquet).
    Files(files::FilesPlan),
    /// A table or query of a database (PostgreSQL, MySQL/MariaDB).
    Database(database::DbPlan),
    /// The pages of an HTTP API.
    Http(http::HttpPlan),
}

impl SourcePlan {
    /// The kind of source, as `weir plan` and messages name it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            SourcePlan::Files(_) => "files",
            SourcePlan::Database(d) => d.kind().id(),
            SourcePlan::Http(_) => "http",
        }
    }
}

/// Where compile keeps the schemas it inferred from input files, keyed by the files' identity
/// (path, size, ETag or time) and the format's settings: a run over files it has seen reads
/// none of them to compile. Implemented by the state store.
pub trait SchemaCache: Send + Sync {
    /// The Arrow IPC encoding of the schema stored under `key`.
    fn schema(&self, key: &str) -> Option<Vec<u8>>;
    /// Store `schema` (Arrow IPC) under `key`.
    fn put_schema(&self, key: &str, schema: &[u8]);
}
