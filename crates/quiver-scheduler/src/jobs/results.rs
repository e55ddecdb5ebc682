//! Stored results of script jobs: all rows (CSV, Arrow) or a JSON preview.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use quiver_core::api::ResultPreview;

use super::{JobError, JobService};

/// A statement's stored rows: (statement number, schema, batches, truncated).
pub type StoredResult = (usize, SchemaRef, Vec<RecordBatch>, bool);

impl JobService {
    /// The stored rows of statement `statement` (the last query when `None`).
    pub async fn result(&self, id: &str, statement: Option<usize>) -> Result<StoredResult, JobError> {
        let detail = self.detail(id).await?;
        let chosen = match statement {
            Some(n) => detail
                .statements
                .iter()
                .find(|s| s.index == n)
                .ok_or_else(|| JobError::NotFound(format!("job {id} has no statement {n}")))?,
            None => detail
                .statements
                .iter()
                .rev()
                .find(|s| s.result_rows.is_some())
                .ok_or_else(|| JobError::NotFound(format!("job {id} has no query result")))?,
        };
        if chosen.result_rows.is_none() {
            return Err(JobError::NotFound(format!(
                "statement {} of job {id} has no stored result ({})",
                chosen.index,
                if chosen.state.is_terminal() {
                    "it returns no rows"
                } else {
                    "it has not finished"
                }
            )));
        }
        let (schema, batches) = self
            .history
            .get_result(id, chosen.index)
            .await?
            .ok_or_else(|| JobError::NotFound(format!("the result of job {id} is no longer in history")))?;
        Ok((chosen.index, schema, batches, chosen.result_truncated))
    }

    /// A JSON preview of a result: at most `limit` rows.
    pub async fn preview(&self, id: &str, statement: Option<usize>, limit: usize) -> Result<ResultPreview, JobError> {
        let (index, schema, batches, truncated) = self.result(id, statement).await?;
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut rows = Vec::new();
        let mut left = limit;
        for b in &batches {
            if left == 0 {
                break;
            }
            let take = b.num_rows().min(left);
            rows.extend(batch_to_json(&b.slice(0, take)));
            left -= take;
        }
        Ok(ResultPreview {
            job_id: id.to_owned(),
            statement: index,
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            types: schema.fields().iter().map(|f| f.data_type().to_string()).collect(),
            rows,
            total_rows: total as u64,
            truncated,
        })
    }
}

/// Rows of a batch as JSON objects.
pub(crate) fn batch_to_json(batch: &RecordBatch) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut buf = Vec::new();
    {
        let mut writer = arrow::json::ArrayWriter::new(&mut buf);
        if writer.write(batch).is_err() || writer.finish().is_err() {
            return vec![];
        }
    }
    if buf.is_empty() {
        return vec![];
    }
    serde_json::from_slice(&buf).unwrap_or_default()
}
