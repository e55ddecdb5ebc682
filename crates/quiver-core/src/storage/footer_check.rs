//! A Parquet footer that claims more metadata than its file holds, refused
//! with an error before the Parquet reader sees it.
//!
//! parquet 59.3.2 finds the metadata by subtracting the length the footer
//! claims from the file's size, unchecked: a damaged footer makes an
//! inverted range and the reader panics slicing the bytes it prefetched
//! (found by `tests/it/fuzz.rs`). Every read of a file's tail goes through
//! [`ObjectStore::get_ranges`] (DataFusion prefetches the last bytes of a
//! Parquet file that way), so [`FooterCheck`] looks at each range that ends
//! with the Parquet magic and refuses one whose footer claims more metadata
//! than the bytes before it.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};

/// The magic that ends every Parquet file.
const MAGIC: &[u8; 4] = b"PAR1";

/// An object store whose ranged reads refuse damaged Parquet footers; see
/// the [module docs](self).
#[derive(Debug)]
pub struct FooterCheck {
    inner: Arc<dyn ObjectStore>,
}

impl FooterCheck {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

impl fmt::Display for FooterCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// An error when `bytes`, the bytes at `range` of `location`, end with a
/// Parquet footer that claims more metadata than the `range.end` bytes
/// before it (the whole file, when the range is the file's tail).
///
/// ```
/// use quiver_core::storage::footer_check::check_tail;
/// let mut tail = vec![0u8; 12];
/// tail.extend_from_slice(&1000u32.to_le_bytes());
/// tail.extend_from_slice(b"PAR1");
/// let err = check_tail(&"t/a.parquet".into(), &(0..20), &tail).unwrap_err();
/// assert!(err.to_string().contains("claims 1000 bytes of metadata"), "{err}");
/// tail[12..16].copy_from_slice(&4u32.to_le_bytes());
/// assert!(check_tail(&"t/a.parquet".into(), &(0..20), &tail).is_ok());
/// ```
pub fn check_tail(location: &Path, range: &Range<u64>, bytes: &[u8]) -> object_store::Result<()> {
    let Some(footer) = bytes.len().checked_sub(8).map(|at| &bytes[at..]) else {
        return Ok(());
    };
    if &footer[4..] != MAGIC {
        return Ok(());
    }
    let claimed = u64::from(u32::from_le_bytes(footer[..4].try_into().expect("four bytes")));
    if claimed + 8 <= range.end {
        return Ok(());
    }
    Err(object_store::Error::Generic {
        store: "Parquet",
        source: format!(
            "{location} is not a valid Parquet file: its footer claims {claimed} bytes of metadata, more \
             than the {} bytes before it; the file is damaged or was cut short",
            range.end.saturating_sub(8)
        )
        .into(),
    })
}

#[async_trait]
impl ObjectStore for FooterCheck {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        let buffers = self.inner.get_ranges(location, ranges).await?;
        for (range, bytes) in ranges.iter().zip(&buffers) {
            check_tail(location, range, bytes)?;
        }
        Ok(buffers)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
