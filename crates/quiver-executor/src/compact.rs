//! Compacting string views before they are shuffled.
//!
//! Parquet files written by arrow-rs based tools (tpchgen-cli, delta-rs,
//! Polars) declare their strings as `Utf8View`, and DataFusion reads them so.
//! A view array does not own its strings: it points into the data buffers of
//! the page it was decoded from. Filters, joins, `TopK` and limits keep those
//! buffers alive, so a batch of 20 rows can still hold megabytes of page data.
//! In one process that costs nothing; across a shuffle it does, because Arrow
//! IPC writes every referenced buffer whole. Measured on TPC-H SF1, the last
//! stage of Q10 (20 rows) wrote 6 MB of shuffle data and its result took
//! 1.5 s to reach the client.
//!
//! [`CompactViewsExec`] sits under each stage's shuffle writer and copies the
//! strings a view column still references into fresh buffers when the
//! buffers are mostly unreferenced bytes. Columns without views pass through
//! untouched.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryViewArray, GenericByteViewArray, RecordBatch, StringViewArray};
use datafusion::arrow::datatypes::ByteViewType;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

/// Buffers holding more than this many times the bytes their views reference
/// are compacted. Below it the copy costs more than the bytes it saves.
const WASTE_FACTOR: usize = 2;

/// Passes its input through, compacting view columns that reference far
/// more buffer bytes than they use. See the [module docs](self).
#[derive(Debug)]
pub struct CompactViewsExec {
    input: Arc<dyn ExecutionPlan>,
}

impl CompactViewsExec {
    /// Wraps `input`.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self { input }
    }

    /// Whether `input` produces any view column (otherwise wrapping is pointless).
    pub fn useful_for(input: &dyn ExecutionPlan) -> bool {
        input
            .schema()
            .fields()
            .iter()
            .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView))
    }
}

impl DisplayAs for CompactViewsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CompactViewsExec")
    }
}

impl ExecutionPlan for CompactViewsExec {
    fn name(&self) -> &str {
        "CompactViewsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Properties are the input's whichever the mode.
        match children.pop() {
            Some(input) if children.is_empty() => Ok(Arc::new(Self::new(input))),
            _ => Err(datafusion::common::DataFusionError::Internal(
                "CompactViewsExec takes exactly one child".into(),
            )),
        }
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let schema = self.input.schema();
        let input = self.input.execute(partition, context)?;
        let stream = input.map(|batch| batch.and_then(compact_batch));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// `batch` with its wasteful view columns compacted.
pub fn compact_batch(batch: RecordBatch) -> Result<RecordBatch> {
    let mut columns: Option<Vec<ArrayRef>> = None;
    for (i, column) in batch.columns().iter().enumerate() {
        if let Some(compacted) = compact_column(column.as_ref()) {
            columns.get_or_insert_with(|| batch.columns().to_vec())[i] = compacted;
        }
    }
    match columns {
        None => Ok(batch),
        Some(columns) => Ok(RecordBatch::try_new(batch.schema(), columns)?),
    }
}

fn compact_column(column: &dyn Array) -> Option<ArrayRef> {
    if let Some(strings) = column.as_any().downcast_ref::<StringViewArray>() {
        compact_views(strings)
    } else if let Some(bytes) = column.as_any().downcast_ref::<BinaryViewArray>() {
        compact_views(bytes)
    } else {
        None
    }
}

fn compact_views<T: ByteViewType + ?Sized>(views: &GenericByteViewArray<T>) -> Option<ArrayRef> {
    let held = views.data_buffers().iter().map(|b| b.len()).sum();
    wasteful(held, views.total_buffer_bytes_used()).then(|| Arc::new(views.gc()) as ArrayRef)
}

fn wasteful(held: usize, used: usize) -> bool {
    held > 0 && held > used.saturating_mul(WASTE_FACTOR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    fn long(i: usize) -> String {
        format!("a string long enough not to be inlined in its view, number {i}")
    }

    #[test]
    fn a_small_slice_of_views_is_compacted_and_keeps_its_values() {
        let strings: StringViewArray = (0..1000).map(|i| Some(long(i))).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("n", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(strings), Arc::new(Int32Array::from_iter_values(0..1000))],
        )
        .unwrap();
        let slice = batch.slice(10, 3);
        let held = |b: &RecordBatch| {
            b.column(0)
                .as_any()
                .downcast_ref::<StringViewArray>()
                .unwrap()
                .data_buffers()
                .iter()
                .map(|d| d.len())
                .sum::<usize>()
        };
        let compacted = compact_batch(slice.clone()).unwrap();
        assert!(held(&slice) > 50_000, "the slice still holds every string");
        assert!(
            held(&compacted) < 500,
            "only the three strings are kept: {}",
            held(&compacted)
        );
        assert_eq!(compacted, slice);
    }

    #[test]
    fn dense_views_and_other_columns_pass_through() {
        let strings: StringViewArray = (0..10).map(|i| Some(long(i))).collect();
        let plain = StringArray::from(vec!["x"; 10]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Utf8View, false),
            Field::new("p", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(strings), Arc::new(plain)]).unwrap();
        let out = compact_batch(batch.clone()).unwrap();
        assert!(Arc::ptr_eq(out.column(0), batch.column(0)));
        assert!(Arc::ptr_eq(out.column(1), batch.column(1)));
    }
}
