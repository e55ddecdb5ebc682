//! Job history: job records and results, kept in an object store.
//!
//! One layout serves every backend (memory, a local directory, an S3 prefix):
//!
//! ```text
//! <prefix>/jobs/<job id>/summary.json    what the jobs list shows
//! <prefix>/jobs/<job id>/detail.json     statements, queries, stages, tasks
//! <prefix>/jobs/<job id>/result-<n>.arrow  rows of statement n (Arrow IPC)
//! ```
//!
//! Summaries are small and read at startup; details and results are read on
//! demand, so a scheduler with thousands of jobs in history starts fast and
//! stays small.

use std::io::Cursor;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use quiver_core::api::{JobDetail, JobSummary};
use quiver_core::storage::{S3Settings, StorageContext};

/// Where history is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryLocation {
    /// In memory: lost when the scheduler stops.
    Memory,
    /// A local directory.
    Dir(std::path::PathBuf),
    /// An S3 bucket and key prefix (`s3://bucket/prefix`).
    S3 {
        /// The bucket.
        bucket: String,
        /// Key prefix inside it.
        prefix: String,
    },
}

impl std::str::FromStr for HistoryLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" || s.is_empty() {
            return Ok(Self::Memory);
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("'{s}' has no bucket; write s3://bucket/prefix"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        Ok(Self::Dir(s.into()))
    }
}

impl HistoryLocation {
    /// The default warehouse (`quiver.warehouse_dir`) of a scheduler keeping
    /// history here: `warehouse` beside the history in its bucket. `None` for
    /// history in memory or a directory: executors write tables, and a
    /// scheduler's directory is not theirs.
    ///
    /// ```
    /// use quiver_scheduler::history::HistoryLocation;
    /// let history: HistoryLocation = "s3://quiver/history".parse().unwrap();
    /// assert_eq!(history.warehouse().as_deref(), Some("s3://quiver/warehouse/"));
    /// let nested: HistoryLocation = "s3://ops/quiver/history".parse().unwrap();
    /// assert_eq!(nested.warehouse().as_deref(), Some("s3://ops/quiver/warehouse/"));
    /// assert_eq!("memory".parse::<HistoryLocation>().unwrap().warehouse(), None);
    /// ```
    pub fn warehouse(&self) -> Option<String> {
        match self {
            Self::S3 { bucket, prefix } => {
                let parent = prefix.rsplit_once('/').map_or("", |(parent, _)| parent);
                let mut dir = format!("s3://{bucket}/");
                if !parent.is_empty() {
                    dir.push_str(parent);
                    dir.push('/');
                }
                dir.push_str("warehouse/");
                Some(dir)
            }
            Self::Memory | Self::Dir(_) => None,
        }
    }
}

impl std::fmt::Display for HistoryLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Dir(d) => write!(f, "{}", d.display()),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Failures reading or writing history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store failed.
    #[error("job history at {location}: {source}")]
    Store {
        /// Where history is kept.
        location: String,
        /// What failed.
        source: object_store::Error,
    },
    /// A record could not be (de)serialized.
    #[error("job history record {path}: {message}")]
    Record {
        /// The record.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The location could not be set up.
    #[error("cannot use {location} for job history: {message}")]
    Setup {
        /// Where.
        location: String,
        /// Why.
        message: String,
    },
}

/// Job records and results in an object store.
#[derive(Debug, Clone)]
pub struct HistoryStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
}

impl HistoryStore {
    /// Opens history at `location`; S3 locations use `storage`'s credentials.
    pub fn open(location: &HistoryLocation, storage: &StorageContext) -> Result<Self, HistoryError> {
        let setup = |message: String| HistoryError::Setup {
            location: location.to_string(),
            message,
        };
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match location {
            HistoryLocation::Memory => (Arc::new(InMemory::new()), Path::default()),
            HistoryLocation::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| setup(e.to_string()))?;
                // Automatic cleanup removes a job's directory with its last file.
                let store = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| setup(e.to_string()))?
                    .with_automatic_cleanup(true);
                (Arc::new(store), Path::default())
            }
            HistoryLocation::S3 { bucket, prefix } => {
                let store = storage
                    .s3_store(bucket, &S3Settings::default())
                    .map_err(|e| setup(e.to_string()))?;
                (store, Path::from(prefix.as_str()))
            }
        };
        Ok(Self {
            store,
            prefix,
            location: location.to_string(),
        })
    }

    fn path(&self, job: &str, file: &str) -> Path {
        self.prefix.clone().join("jobs").join(job).join(file)
    }

    fn store_err(&self, source: object_store::Error) -> HistoryError {
        HistoryError::Store {
            location: self.location.clone(),
            source,
        }
    }

    async fn put_json<T: serde::Serialize>(&self, path: Path, value: &T) -> Result<(), HistoryError> {
        let bytes = serde_json::to_vec(value).map_err(|e| HistoryError::Record {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.store_err(e))?;
        Ok(())
    }

    async fn get_bytes(&self, path: &Path) -> Result<Option<Bytes>, HistoryError> {
        match self.store.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.store_err(e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err(e)),
        }
    }

    /// Saves a job's record (summary and detail).
    pub async fn put_job(&self, detail: &JobDetail) -> Result<(), HistoryError> {
        self.put_json(self.path(&detail.summary.id, "detail.json"), detail)
            .await?;
        self.put_json(self.path(&detail.summary.id, "summary.json"), &detail.summary)
            .await
    }

    /// Reads a job's detail.
    pub async fn get_job(&self, id: &str) -> Result<Option<JobDetail>, HistoryError> {
        let path = self.path(id, "detail.json");
        let Some(bytes) = self.get_bytes(&path).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| HistoryError::Record {
                path: path.to_string(),
                message: e.to_string(),
            })
    }

    /// Reads every job summary. Unreadable records are skipped with a warning.
    pub async fn list_summaries(&self) -> Result<Vec<JobSummary>, HistoryError> {
        let root = self.prefix.clone().join("jobs");
        let objects: Vec<_> = self
            .store
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| self.store_err(e))?;
        let mut summaries = Vec::new();
        for meta in objects
            .into_iter()
            .filter(|m| m.location.filename() == Some("summary.json"))
        {
            match self.get_bytes(&meta.location).await? {
                Some(bytes) => match serde_json::from_slice::<JobSummary>(&bytes) {
                    Ok(s) => summaries.push(s),
                    Err(e) => tracing::warn!(path = %meta.location, "skipping unreadable job record: {e}"),
                },
                None => continue,
            }
        }
        Ok(summaries)
    }

    /// Deletes everything kept for a job.
    pub async fn delete_job(&self, id: &str) -> Result<(), HistoryError> {
        let dir = self.prefix.clone().join("jobs").join(id);
        let objects: Vec<_> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| self.store_err(e))?;
        for meta in objects {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_err(e)),
            }
        }
        Ok(())
    }

    /// Saves the rows of statement `statement` of job `id`.
    pub async fn put_result(
        &self,
        id: &str,
        statement: usize,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<(), HistoryError> {
        let path = self.path(id, &format!("result-{statement}.arrow"));
        let record_err = |e: arrow::error::ArrowError| HistoryError::Record {
            path: path.to_string(),
            message: e.to_string(),
        };
        let mut buf = Vec::new();
        {
            let mut writer = FileWriter::try_new(&mut buf, schema).map_err(record_err)?;
            for b in batches {
                writer.write(b).map_err(record_err)?;
            }
            writer.finish().map_err(record_err)?;
        }
        self.store
            .put(&path, PutPayload::from(buf))
            .await
            .map_err(|e| self.store_err(e))?;
        Ok(())
    }

    /// Reads the rows of statement `statement` of job `id`.
    pub async fn get_result(
        &self,
        id: &str,
        statement: usize,
    ) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>, HistoryError> {
        let path = self.path(id, &format!("result-{statement}.arrow"));
        let Some(bytes) = self.get_bytes(&path).await? else {
            return Ok(None);
        };
        let record_err = |e: arrow::error::ArrowError| HistoryError::Record {
            path: path.to_string(),
            message: e.to_string(),
        };
        let reader = FileReader::try_new(Cursor::new(bytes), None).map_err(record_err)?;
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(record_err)?;
        Ok(Some((schema, batches)))
    }

    /// Where history is kept, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use quiver_core::api::{JobSource, JobState, Progress};

    fn detail(id: &str) -> JobDetail {
        JobDetail {
            summary: JobSummary {
                id: id.into(),
                name: "n".into(),
                source: JobSource::Rest,
                state: JobState::Succeeded,
                submitted_at: 1,
                started_at: Some(2),
                finished_at: Some(3),
                duration_ms: Some(1),
                progress: Progress::default(),
                query_count: 0,
                error: None,
            },
            sql: Some("SELECT 1".into()),
            params: Default::default(),
            conf: Default::default(),
            statements: vec![],
            queries: vec![],
            outputs: vec![],
        }
    }

    #[tokio::test]
    async fn jobs_and_results_round_trip_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let location = HistoryLocation::Dir(dir.path().to_owned());
        let storage = StorageContext::with_defaults(Default::default());
        let store = HistoryStore::open(&location, &storage).unwrap();
        store.put_job(&detail("job-a")).await.unwrap();
        store.put_job(&detail("job-b")).await.unwrap();
        let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
        store
            .put_result("job-a", 1, &batch.schema(), std::slice::from_ref(&batch))
            .await
            .unwrap();

        // A second store over the same directory (a restarted scheduler) sees it all.
        let reopened = HistoryStore::open(&location, &storage).unwrap();
        let mut ids: Vec<_> = reopened
            .list_summaries()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        ids.sort();
        assert_eq!(ids, vec!["job-a", "job-b"]);
        assert_eq!(reopened.get_job("job-a").await.unwrap().unwrap(), detail("job-a"));
        let (_, rows) = reopened.get_result("job-a", 1).await.unwrap().unwrap();
        assert_eq!(rows, vec![batch]);
        assert!(reopened.get_job("job-zzz").await.unwrap().is_none());

        reopened.delete_job("job-a").await.unwrap();
        assert!(reopened.get_job("job-a").await.unwrap().is_none());
        assert!(reopened.get_result("job-a", 1).await.unwrap().is_none());
    }

    #[test]
    fn locations_parse() {
        assert_eq!("memory".parse::<HistoryLocation>().unwrap(), HistoryLocation::Memory);
        assert_eq!(
            "s3://b/quiver/history/".parse::<HistoryLocation>().unwrap(),
            HistoryLocation::S3 {
                bucket: "b".into(),
                prefix: "quiver/history".into()
            }
        );
        assert!("s3:///x".parse::<HistoryLocation>().is_err());
    }
}
