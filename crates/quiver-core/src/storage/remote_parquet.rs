//! How Parquet scans of object stores read: the next row group ahead while
//! one decodes, and page indexes kept with the cached footer.
//!
//! [`remote_parquet`] wraps the reader factory of every Parquet scan of an
//! object store in a plan (scans of local files read as DataFusion reads
//! them: read-ahead measured no faster there). Its readers do two things.
//!
//! **Read-ahead.** DataFusion's Parquet scan asks for a row group's bytes
//! only once the previous row group is decoded, so over S3 each scan
//! alternates between waiting on the network and using the CPU. A reader
//! answers a request for row group *n* and, when the scan reads its row
//! groups in order, starts fetching the same columns of row group *n + 1*
//! in the background (whole column chunks, one `get_ranges` call, so the
//! object store coalesces them as it does for the scan). The next request is
//! served from those bytes when they cover it, and read as usual when they
//! do not. It costs one row group's selected columns in memory per scanning
//! file (not read ahead when they exceed [`MAX_AHEAD_BYTES`], so a file
//! written with Spark's 128 MiB row groups does not double a task's memory),
//! and at most one row group fetched for nothing where the scan skips row
//! groups (statistics; a row group outside the scan's byte range is never
//! fetched ahead). A failed read-ahead is dropped, and the scan reads the
//! bytes itself, so it reports the error if there is one.
//! `quiver.parquet_read_ahead = false` turns it off for a session.
//!
//! **Page indexes.** DataFusion loads a file's footer without its page
//! index and, when a filter can use the page index, reads the index from
//! the store again at every file open of every query: the footer cache
//! keeps the footer only. The readers ask for the footer with its page
//! index, so the cache keeps both (usually one request: the index sits
//! just before the footer, inside the footer read's tail) and later opens
//! of the file read neither.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileScanConfig, FileScanConfigBuilder, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, RowGroupMetaData};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::options::QuiverOptions;

/// The most bytes one reader fetches ahead: the next row group's selected
/// columns are read ahead only when they fit.
pub const MAX_AHEAD_BYTES: u64 = 32 << 20;

/// Wraps the reader factory of every Parquet scan of an object store in
/// `plan` in Quiver's (the [module docs](self) say what its readers do),
/// reading ahead when `read_ahead` says so. Scans of local files, scans
/// already wrapped, and scans without a reader factory (DataFusion then
/// builds its own) are left as they are.
pub fn remote_parquet(plan: Arc<dyn ExecutionPlan>, read_ahead: ReadAhead) -> Result<Arc<dyn ExecutionPlan>> {
    remote_parquet_in(plan, Stores::Remote, read_ahead)
}

/// Whether scans read the next row group ahead (`quiver.parquet_read_ahead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAhead {
    /// Fetch the next row group's columns while one decodes.
    On,
    /// Fetch a row group's bytes when the scan asks for them.
    Off,
}

impl ReadAhead {
    /// What a session's `quiver.parquet_read_ahead` says (on without Quiver options).
    pub fn of(options: Option<&QuiverOptions>) -> Self {
        match options.is_none_or(|o| o.parquet_read_ahead) {
            true => ReadAhead::On,
            false => ReadAhead::Off,
        }
    }
}

/// Which scans [`read_ahead_in`] wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stores {
    /// Scans of object stores, not of the local file system.
    Remote,
    /// Every scan (the tests read local files).
    #[cfg(test)]
    All,
}

fn remote_parquet_in(
    plan: Arc<dyn ExecutionPlan>,
    stores: Stores,
    read_ahead: ReadAhead,
) -> Result<Arc<dyn ExecutionPlan>> {
    wrap_reader_factories(plan, stores, |factory| {
        (!format!("{factory:?}").starts_with(RemoteParquetFactory::NAME))
            .then(|| Arc::new(RemoteParquetFactory::new(Arc::clone(factory), read_ahead)) as _)
    })
}

/// Replaces the reader factory of every Parquet scan of `stores` in `plan`
/// with what `wrap` makes of it (`None`: the scan keeps its factory).
fn wrap_reader_factories(
    plan: Arc<dyn ExecutionPlan>,
    stores: Stores,
    wrap: impl Fn(&Arc<dyn ParquetFileReaderFactory>) -> Option<Arc<dyn ParquetFileReaderFactory>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        let Some(source) = config.file_source().downcast_ref::<ParquetSource>() else {
            return Ok(Transformed::no(node));
        };
        if stores == Stores::Remote && config.object_store_url == ObjectStoreUrl::local_filesystem() {
            return Ok(Transformed::no(node));
        }
        let Some(factory) = source.parquet_file_reader_factory().and_then(&wrap) else {
            return Ok(Transformed::no(node));
        };
        let source = source.clone().with_parquet_file_reader_factory(factory);
        let config = FileScanConfigBuilder::from(config.clone())
            .with_source(Arc::new(source))
            .build();
        Ok(Transformed::yes(
            DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
        ))
    })
    .map(|t| t.data)
}

/// [`remote_parquet`] as the last physical optimizer rule of a
/// single-process session (executors apply [`remote_parquet`] to their
/// tasks' plans themselves).
#[derive(Debug, Default)]
pub struct RemoteParquet;

impl PhysicalOptimizerRule for RemoteParquet {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        remote_parquet(plan, ReadAhead::of(config.extensions.get::<QuiverOptions>()))
    }

    fn name(&self) -> &str {
        "remote_parquet"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A [`ParquetFileReaderFactory`] whose readers read the next row group
/// ahead and ask for page indexes with footers; the bytes come from the
/// readers of the factory it wraps.
pub struct RemoteParquetFactory {
    inner: Arc<dyn ParquetFileReaderFactory>,
    read_ahead: ReadAhead,
    /// The metadata of the files being read, by path: DataFusion loads a
    /// file's metadata through one reader and may decode through another
    /// (after reading bloom filters), which must still know the row groups.
    metadata: Arc<Mutex<HashMap<Path, Weak<ParquetMetaData>>>>,
}

impl RemoteParquetFactory {
    const NAME: &'static str = "RemoteParquetFactory";

    /// Reads through the readers `inner` creates.
    pub fn new(inner: Arc<dyn ParquetFileReaderFactory>, read_ahead: ReadAhead) -> Self {
        Self {
            inner,
            read_ahead,
            metadata: Arc::default(),
        }
    }
}

impl fmt::Debug for RemoteParquetFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(Self::NAME)
            .field("inner", &self.inner)
            .field("read_ahead", &self.read_ahead)
            .finish()
    }
}

impl ParquetFileReaderFactory for RemoteParquetFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let inner = self
            .inner
            .create_reader(partition_index, file.clone(), metadata_size_hint, metrics)?;
        Ok(Box::new(RemoteParquetReader {
            inner,
            source: ReaderSource {
                factory: Arc::clone(&self.inner),
                partition_index,
                file,
                metadata_size_hint,
                metrics: metrics.clone(),
            },
            read_ahead: self.read_ahead,
            known: Arc::clone(&self.metadata),
            metadata: None,
            last_row_group: None,
            ahead: Vec::new(),
        }))
    }
}

/// What a reader needs to create another reader of the same file.
struct ReaderSource {
    factory: Arc<dyn ParquetFileReaderFactory>,
    partition_index: usize,
    file: PartitionedFile,
    metadata_size_hint: Option<usize>,
    metrics: ExecutionPlanMetricsSet,
}

impl ReaderSource {
    fn reader(&self) -> Result<Box<dyn AsyncFileReader + Send>> {
        self.factory.create_reader(
            self.partition_index,
            self.file.clone(),
            self.metadata_size_hint,
            &self.metrics,
        )
    }

    /// Whether DataFusion reads `row_group` in this scan's part of the file
    /// (it assigns a row group to the part holding its first page).
    fn owns(&self, row_group: &RowGroupMetaData) -> bool {
        let Some(range) = &self.file.range else {
            return true;
        };
        let Some(first) = row_group.columns().first() else {
            return false;
        };
        let offset = first
            .dictionary_page_offset()
            .unwrap_or_else(|| first.data_page_offset());
        range.contains(offset)
    }
}

/// Column chunks of one row group being fetched, or fetched, ahead.
struct Ahead {
    row_group: usize,
    chunks: Vec<Range<u64>>,
    state: AheadState,
}

enum AheadState {
    Fetching(JoinHandle<Result<Vec<Bytes>, ParquetError>>),
    Fetched(Vec<Bytes>),
    /// The fetch failed: the scan reads these bytes itself.
    Failed,
}

impl Ahead {
    async fn settle(&mut self) {
        if let AheadState::Fetching(task) = &mut self.state {
            self.state = match task.await {
                Ok(Ok(bytes)) => AheadState::Fetched(bytes),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "reading a row group ahead failed; the scan reads it itself");
                    AheadState::Failed
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reading a row group ahead stopped; the scan reads it itself");
                    AheadState::Failed
                }
            };
        }
    }

    /// The bytes of `range` if this read-ahead fetched them.
    fn slice(&self, range: &Range<u64>) -> Option<Bytes> {
        let AheadState::Fetched(bytes) = &self.state else {
            return None;
        };
        self.chunks.iter().zip(bytes).find_map(|(chunk, bytes)| {
            (chunk.start <= range.start && range.end <= chunk.end)
                .then(|| bytes.slice((range.start - chunk.start) as usize..(range.end - chunk.start) as usize))
        })
    }

    fn covers(&self, range: &Range<u64>) -> bool {
        !matches!(self.state, AheadState::Failed)
            && self
                .chunks
                .iter()
                .any(|chunk| chunk.start <= range.start && range.end <= chunk.end)
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        if let AheadState::Fetching(task) = &self.state {
            task.abort();
        }
    }
}

/// Reads what the scan asks for and the next row group's same columns ahead.
struct RemoteParquetReader {
    inner: Box<dyn AsyncFileReader + Send>,
    source: ReaderSource,
    read_ahead: ReadAhead,
    known: Arc<Mutex<HashMap<Path, Weak<ParquetMetaData>>>>,
    metadata: Option<Arc<ParquetMetaData>>,
    /// The row group of the scan's last request, to tell an in-order scan.
    last_row_group: Option<usize>,
    ahead: Vec<Ahead>,
}

impl RemoteParquetReader {
    fn path(&self) -> &Path {
        &self.source.file.object_meta.location
    }

    fn metadata(&mut self) -> Option<Arc<ParquetMetaData>> {
        if self.metadata.is_none() {
            self.metadata = self.known.lock().get(self.path()).and_then(Weak::upgrade);
        }
        self.metadata.clone()
    }

    /// Starts fetching `chunks` of `row_group` unless they are on their way.
    fn fetch_ahead(&mut self, row_group: usize, chunks: Vec<Range<u64>>) {
        let bytes: u64 = chunks.iter().map(|c| c.end - c.start).sum();
        if chunks.is_empty()
            || bytes > MAX_AHEAD_BYTES
            || self
                .ahead
                .iter()
                .any(|a| a.row_group == row_group && a.chunks == chunks)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(mut reader) = self.source.reader() else {
            return;
        };
        tracing::trace!(path = %self.path(), row_group, bytes, "reading a row group ahead");
        let ranges = chunks.clone();
        let task = runtime.spawn(async move { reader.get_byte_ranges(ranges).await });
        self.ahead.push(Ahead {
            row_group,
            chunks,
            state: AheadState::Fetching(task),
        });
    }

    async fn read(&mut self, ranges: Vec<Range<u64>>) -> Result<Vec<Bytes>, ParquetError> {
        if self.read_ahead == ReadAhead::Off {
            return self.inner.get_byte_ranges(ranges).await;
        }
        let Some((metadata, request)) = self
            .metadata()
            .and_then(|m| Request::of(&m, &ranges).map(|request| (m, request)))
        else {
            return self.inner.get_byte_ranges(ranges).await;
        };

        // Read-aheads of row groups the scan has gone past are dropped.
        self.ahead.retain(|a| a.row_group >= request.row_group);
        let mut out: Vec<Option<Bytes>> = vec![None; ranges.len()];
        for ahead in self.ahead.iter_mut().filter(|a| a.row_group == request.row_group) {
            if ranges.iter().any(|r| ahead.covers(r)) {
                ahead.settle().await;
                for (slot, range) in out.iter_mut().zip(&ranges) {
                    if slot.is_none() {
                        *slot = ahead.slice(range);
                    }
                }
            }
        }

        // An in-order scan gets the next row group's same columns ahead.
        let in_order = self
            .last_row_group
            .is_none_or(|last| request.row_group == last || request.row_group == last + 1);
        self.last_row_group = Some(request.row_group);
        let next = request.row_group + 1;
        if in_order && next < metadata.num_row_groups() && self.source.owns(metadata.row_group(next)) {
            let chunks = request
                .columns
                .iter()
                .map(|&c| chunk(metadata.row_group(next), c))
                .collect();
            self.fetch_ahead(next, chunks);
        }

        let missing: Vec<Range<u64>> = ranges
            .iter()
            .zip(&out)
            .filter(|(_, slot)| slot.is_none())
            .map(|(range, _)| range.clone())
            .collect();
        if missing.len() == ranges.len() {
            return self.inner.get_byte_ranges(ranges).await;
        }
        let mut fetched = if missing.is_empty() {
            Vec::new()
        } else {
            self.inner.get_byte_ranges(missing).await?
        }
        .into_iter();
        out.into_iter()
            .map(|slot| match slot {
                Some(bytes) => Ok(bytes),
                None => fetched
                    .next()
                    .ok_or_else(|| ParquetError::General("the reader returned fewer ranges than asked for".into())),
            })
            .collect()
    }
}

impl AsyncFileReader for RemoteParquetReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, ParquetError>> {
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>, ParquetError>> {
        self.read(ranges).boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>, ParquetError>> {
        // The footer with its page index, so a metadata cache keeps both.
        let options = options.cloned().unwrap_or_default();
        let options = match options.column_index_policy() {
            PageIndexPolicy::Skip => options.with_page_index_policy(PageIndexPolicy::Optional),
            _ => options,
        };
        async move {
            let metadata = self.inner.get_metadata(Some(&options)).await?;
            self.metadata = Some(Arc::clone(&metadata));
            let mut known = self.known.lock();
            known.retain(|_, m| m.strong_count() > 0);
            known.insert(self.path().clone(), Arc::downgrade(&metadata));
            Ok(metadata)
        }
        .boxed()
    }
}

/// The byte range of column `column`'s chunk in `row_group`.
fn chunk(row_group: &RowGroupMetaData, column: usize) -> Range<u64> {
    let (start, len) = row_group.column(column).byte_range();
    start..start + len
}

/// A scan's request, in the file's terms: one row group, some of its columns.
#[derive(Debug, PartialEq)]
struct Request {
    row_group: usize,
    columns: Vec<usize>,
}

impl Request {
    /// The row group and columns `ranges` lie in; `None` when they are not
    /// all inside column chunks of one row group (nothing is read ahead).
    fn of(metadata: &ParquetMetaData, ranges: &[Range<u64>]) -> Option<Self> {
        let first = ranges.first()?;
        let row_group = (0..metadata.num_row_groups()).find(|&i| {
            let group = metadata.row_group(i);
            (0..group.num_columns()).any(|c| contains(&chunk(group, c), first))
        })?;
        let group = metadata.row_group(row_group);
        let mut columns = Vec::new();
        for range in ranges {
            let column = (0..group.num_columns()).find(|&c| contains(&chunk(group, c), range))?;
            if !columns.contains(&column) {
                columns.push(column);
            }
        }
        Some(Self { row_group, columns })
    }
}

fn contains(outer: &Range<u64>, inner: &Range<u64>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::prelude::{ParquetReadOptions, SessionContext};

    /// A Parquet file of `groups` row groups of 100 rows (`id`, `name`, `score`).
    fn write_file(path: &std::path::Path, groups: usize) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("score", DataType::Int64, false),
        ]));
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build();
        let mut writer =
            ArrowWriter::try_new(std::fs::File::create(path).unwrap(), Arc::clone(&schema), Some(props)).unwrap();
        for g in 0..groups as i64 {
            let ids: Vec<i64> = (g * 100..g * 100 + 100).collect();
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("name-{i}")))),
                    Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % 7))),
                ],
            )
            .unwrap();
            writer.write(&batch).unwrap();
        }
        writer.close().unwrap();
    }

    #[test]
    fn a_request_is_placed_in_its_row_group_and_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_file(&path, 3);
        let file = std::fs::File::open(&path).unwrap();
        let metadata = datafusion::parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&file)
            .unwrap();
        let group = metadata.row_group(1);
        let name = chunk(group, 1);
        let score = chunk(group, 2);
        // A page inside a chunk counts as that chunk.
        let page = name.start + 1..name.end - 1;
        assert_eq!(
            Request::of(&metadata, &[page, score.clone()]),
            Some(Request {
                row_group: 1,
                columns: vec![1, 2]
            })
        );
        // Ranges in two row groups, or outside every chunk, are not planned.
        assert_eq!(Request::of(&metadata, &[chunk(metadata.row_group(0), 0), score]), None);
        let end = std::fs::metadata(&path).unwrap().len();
        let footer = end - 8..end;
        assert_eq!(Request::of(&metadata, std::slice::from_ref(&footer)), None);
    }

    /// Calls to `get_byte_ranges`: which reader made it, and its ranges.
    type Calls = Arc<Mutex<Vec<(usize, Vec<Range<u64>>)>>>;

    /// Records every `get_byte_ranges` call its readers make, numbering
    /// the readers in the order they are created.
    #[derive(Debug)]
    struct Recording {
        inner: Arc<dyn ParquetFileReaderFactory>,
        readers: std::sync::atomic::AtomicUsize,
        calls: Calls,
    }

    struct RecordingReader {
        inner: Box<dyn AsyncFileReader + Send>,
        id: usize,
        calls: Calls,
    }

    impl ParquetFileReaderFactory for Recording {
        fn create_reader(
            &self,
            partition_index: usize,
            file: PartitionedFile,
            hint: Option<usize>,
            metrics: &ExecutionPlanMetricsSet,
        ) -> Result<Box<dyn AsyncFileReader + Send>> {
            Ok(Box::new(RecordingReader {
                inner: self.inner.create_reader(partition_index, file, hint, metrics)?,
                id: self.readers.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                calls: Arc::clone(&self.calls),
            }))
        }
    }

    impl AsyncFileReader for RecordingReader {
        fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, ParquetError>> {
            self.inner.get_bytes(range)
        }

        fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>, ParquetError>> {
            self.calls.lock().push((self.id, ranges.clone()));
            self.inner.get_byte_ranges(ranges)
        }

        fn get_metadata<'a>(
            &'a mut self,
            options: Option<&'a ArrowReaderOptions>,
        ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>, ParquetError>> {
            self.inner.get_metadata(options)
        }
    }

    /// A scan of every row group asks the store for each row group once: the
    /// first through the scan's own reader, every later one through a
    /// read-ahead reader, as whole column chunks, and the scan's own
    /// requests for them are served from those bytes.
    #[tokio::test]
    async fn each_row_group_is_read_once_ahead_of_the_scan() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_file(&path, 12);
        let ctx = SessionContext::new_with_config(datafusion::prelude::SessionConfig::new().with_target_partitions(1));
        ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default())
            .await?;
        let sql = "SELECT sum(length(name)), sum(score) FROM t WHERE score >= 0";
        let calls = Calls::default();
        let plan = ctx.sql(sql).await?.create_physical_plan().await?;
        let recorded = wrap_reader_factories(plan, Stores::All, |inner| {
            Some(Arc::new(Recording {
                inner: Arc::clone(inner),
                readers: Default::default(),
                calls: Arc::clone(&calls),
            }) as _)
        })?;
        let batches = datafusion::physical_plan::collect(
            remote_parquet_in(recorded, Stores::All, ReadAhead::On)?,
            ctx.task_ctx(),
        )
        .await?;
        assert_eq!(
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string(),
            ctx.sql(sql).await?.to_string().await?
        );

        let file = std::fs::File::open(&path).unwrap();
        let metadata = datafusion::parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&file)
            .unwrap();
        let mut asked: Vec<(usize, usize, Vec<Range<u64>>)> = calls
            .lock()
            .iter()
            .filter_map(|(reader, ranges)| {
                let request = Request::of(&metadata, ranges)?;
                assert_eq!(request.columns, [1, 2], "{ranges:?}");
                Some((request.row_group, *reader, ranges.clone()))
            })
            .collect();
        asked.sort_by_key(|(group, reader, _)| (*group, *reader));
        assert_eq!(
            asked.iter().map(|(group, ..)| *group).collect::<Vec<_>>(),
            (0..12).collect::<Vec<_>>(),
            "each row group once: {asked:?}"
        );
        let scan = asked[0].1;
        for (group, reader, ranges) in &asked[1..] {
            assert_ne!(*reader, scan, "row group {group} was read by the scan, not ahead");
            let group = metadata.row_group(*group);
            assert_eq!(ranges, &vec![chunk(group, 1), chunk(group, 2)]);
        }
        Ok(())
    }

    /// The reader factories of a plan's Parquet scans, as their debug names.
    fn factories(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
        let mut out = Vec::new();
        plan.apply(|node| {
            if let Some(exec) = node.downcast_ref::<DataSourceExec>()
                && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
                && let Some(source) = config.file_source().downcast_ref::<ParquetSource>()
            {
                out.push(format!("{:?}", source.parquet_file_reader_factory()));
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        out
    }

    /// Only scans of object stores read ahead, and a scan is wrapped once.
    #[tokio::test]
    async fn local_files_are_read_as_they_were() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_file(&path, 2);
        let ctx = SessionContext::new();
        ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default())
            .await?;
        let plan = ctx.sql("SELECT sum(id) FROM t").await?.create_physical_plan().await?;
        let local = remote_parquet(Arc::clone(&plan), ReadAhead::On)?;
        assert!(
            factories(&local)
                .iter()
                .all(|f| !f.contains(RemoteParquetFactory::NAME)),
            "{:?}",
            factories(&local)
        );
        let all = remote_parquet_in(
            remote_parquet_in(plan, Stores::All, ReadAhead::On)?,
            Stores::All,
            ReadAhead::On,
        )?;
        let wrapped = factories(&all);
        assert_eq!(wrapped.len(), 1);
        assert_eq!(wrapped[0].matches(RemoteParquetFactory::NAME).count(), 1, "{wrapped:?}");
        Ok(())
    }

    /// The page index a session's footer cache holds for `path`: `None`
    /// when the footer is not cached, `Some(false)` when it is cached alone.
    fn cached_page_index(ctx: &SessionContext, path: &std::path::Path) -> Option<bool> {
        let location = Path::from_filesystem_path(path).unwrap();
        let cached = ctx
            .runtime_env()
            .cache_manager
            .get_file_metadata_cache()
            .get(&location)?;
        let parquet = cached
            .file_metadata
            .as_any()
            .downcast_ref::<datafusion::datasource::physical_plan::parquet::metadata::CachedParquetMetaData>()?
            .parquet_metadata()
            .clone();
        Some(parquet.column_index().is_some() && parquet.offset_index().is_some())
    }

    /// A filter that the page index serves makes DataFusion read the index
    /// at every file open; through these readers the footer cache keeps it
    /// with the footer, so it is read once.
    #[tokio::test]
    async fn the_footer_cache_keeps_the_page_index() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_file(&path, 12);
        let sql = "SELECT sum(score) FROM t WHERE id BETWEEN 250 AND 260";
        for wrapped in [false, true] {
            let ctx = SessionContext::new();
            ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default())
                .await?;
            let mut plan = ctx.sql(sql).await?.create_physical_plan().await?;
            // As on an executor: the scan is the first to read the footer
            // (planning here cached it, page index and all).
            let location = Path::from_filesystem_path(&path).unwrap();
            ctx.runtime_env()
                .cache_manager
                .get_file_metadata_cache()
                .remove(&location);
            assert_eq!(cached_page_index(&ctx, &path), None);
            if wrapped {
                plan = remote_parquet_in(plan, Stores::All, ReadAhead::On)?;
            }
            let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await?;
            assert_eq!(
                datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string(),
                ctx.sql(sql).await?.to_string().await?
            );
            assert_eq!(cached_page_index(&ctx, &path), Some(wrapped), "wrapped: {wrapped}");
        }
        Ok(())
    }

    /// Every answer is the same with and without read-ahead, whatever the
    /// scan selects: all row groups, some columns, row groups skipped by
    /// statistics, and a file split between partitions.
    #[tokio::test]
    async fn scans_answer_the_same_with_read_ahead() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_file(&path, 12);
        let queries = [
            "SELECT count(*), sum(id), sum(length(name)), sum(score) FROM t",
            "SELECT sum(score) FROM t WHERE score > 3",
            "SELECT min(name), max(name) FROM t WHERE id BETWEEN 250 AND 320 OR id > 1150",
            "SELECT id, name FROM t WHERE id % 97 = 0 ORDER BY id",
        ];
        for partitions in [1, 3] {
            let config = datafusion::prelude::SessionConfig::new()
                .with_target_partitions(partitions)
                .with_repartition_file_min_size(1)
                .set_bool("datafusion.execution.parquet.pushdown_filters", partitions == 3);
            let ctx = SessionContext::new_with_config(config);
            ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default())
                .await?;
            for sql in queries {
                // Two plans: a plan's dynamic filters keep what its run found.
                let plain = ctx.sql(sql).await?.create_physical_plan().await?;
                let ahead = remote_parquet_in(
                    ctx.sql(sql).await?.create_physical_plan().await?,
                    Stores::All,
                    ReadAhead::On,
                )?;
                let expected = datafusion::physical_plan::collect(plain, ctx.task_ctx()).await?;
                let got = datafusion::physical_plan::collect(ahead, ctx.task_ctx()).await?;
                assert_eq!(
                    datafusion::arrow::util::pretty::pretty_format_batches(&got)?.to_string(),
                    datafusion::arrow::util::pretty::pretty_format_batches(&expected)?.to_string(),
                    "{sql} with {partitions} partitions"
                );
            }
        }
        Ok(())
    }
}
