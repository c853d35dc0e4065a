//! An `ObjectStore` that counts the calls made through it, by store and operation, into
//! `weir_store_requests_total{store,op}` (see `metrics`). Every store weir builds is wrapped,
//! so DataFusion's reads and Delta's commits are counted too.
//!
//! A call is one request for `head`, `put`, `copy`, `delete` and a single-page `list`; a
//! multipart upload, a listing of several pages, or a ranged read of several ranges may be a
//! few requests under one call.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// The counter of object store calls (`weir_store_requests_total{store,op}`): named here, where
/// the calls are counted; `metrics` describes it with the others.
pub const STORE_REQUESTS_TOTAL: &str = "weir_store_requests_total";

/// `inner`, counting.
#[derive(Debug)]
pub struct Counted {
    pub inner: Arc<dyn ObjectStore>,
    /// The store's name in the pipeline.
    pub store: String,
}

impl Counted {
    fn count(&self, op: &'static str) {
        metrics::counter!(STORE_REQUESTS_TOTAL, "store" => self.store.clone(), "op" => op).increment(1);
    }
}

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl ObjectStore for Counted {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.count("put");
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.count("put");
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.count(if options.head { "head" } else { "get" });
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.count("get");
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.count("delete");
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.count("list");
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.count("list");
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.count("list");
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.count("copy");
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.count("rename");
        self.inner.rename_opts(from, to, options).await
    }
}
