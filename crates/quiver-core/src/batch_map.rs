//! Operators that rewrite each batch of their input and change nothing else:
//! same schema, partitioning and order.
//!
//! A [`BatchMap`] names the rewrite; [`BatchMapExec`] is the operator around
//! it. Quiver's [`crate::conform::ConformExec`] (rows given back their
//! declared types) and the executor's `CompactExec` (wasteful columns
//! compacted before a shuffle) are two of them.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

/// A rewrite of each batch that keeps the input's schema.
pub trait BatchMap: fmt::Debug + Send + Sync + 'static {
    /// The operator's name in plans.
    const NAME: &'static str;

    /// `batch`, rewritten; `schema` is the schema the input declares.
    fn map(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch>;

    /// An error of the input, rewritten; unchanged unless a rewrite says so.
    fn map_error(error: DataFusionError) -> DataFusionError {
        error
    }
}

/// Passes its input through [`BatchMap::map`]; see the [module docs](self).
#[derive(Debug)]
pub struct BatchMapExec<M: BatchMap> {
    input: Arc<dyn ExecutionPlan>,
    map: PhantomData<M>,
}

impl<M: BatchMap> BatchMapExec<M> {
    /// Wraps `input`.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            input,
            map: PhantomData,
        }
    }
}

impl<M: BatchMap> DisplayAs for BatchMapExec<M> {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(M::NAME)
    }
}

impl<M: BatchMap> ExecutionPlan for BatchMapExec<M> {
    fn name(&self) -> &str {
        M::NAME
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
            _ => internal_err!("{} takes exactly one child", M::NAME),
        }
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let schema = self.input.schema();
        let input = self.input.execute(partition, context)?;
        let declared = Arc::clone(&schema);
        let stream = input.map(move |batch| match batch {
            Ok(b) => M::map(b, &declared),
            Err(e) => Err(M::map_error(e)),
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
