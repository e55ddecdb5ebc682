//! Operators that rewrite each batch of their input and change nothing else:
//! same schema, partitioning and order.
//!
//! A [`BatchMap`] names the rewrite; [`BatchMapExec`] is the operator around
//! it. Quiver's [`crate::conform::ConformExec`] (rows given back their
//! declared types) and the executor's `CompactExec` (wasteful columns
//! compacted before a shuffle) are two of them. `single_input_methods!`
//! writes the methods every such operator around one input shares.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::StreamExt;

/// The [`ExecutionPlan`] methods of an operator around one input (its
/// `input` field) that keeps the input's properties and order and holds no
/// expressions. `|this, input| expr` builds the operator again from
/// `this` (`&Self`) around a new `input`.
macro_rules! single_input_methods {
    ($name:expr, |$this:ident, $input:ident| $rebuild:expr) => {
        fn properties(&self) -> &std::sync::Arc<datafusion::physical_plan::PlanProperties> {
            self.input.properties()
        }

        fn children(&self) -> Vec<&std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            vec![&self.input]
        }

        fn maintains_input_order(&self) -> Vec<bool> {
            vec![true]
        }

        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(
                &std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion>,
        ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }

        fn replace_children(
            self: std::sync::Arc<Self>,
            mut children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
            _options: datafusion::physical_plan::ReplaceChildrenOptions,
        ) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            // Properties are the input's whichever the mode.
            match children.pop() {
                Some($input) if children.is_empty() => {
                    let $this = &*self;
                    Ok(std::sync::Arc::new($rebuild))
                }
                _ => datafusion::common::internal_err!("{} takes exactly one child", $name),
            }
        }

        fn with_new_children(
            self: std::sync::Arc<Self>,
            children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
        ) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            self.replace_children(
                children,
                datafusion::physical_plan::ReplaceChildrenOptions::new(
                    datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
                ),
            )
        }
    };
}
pub(crate) use single_input_methods;

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

    single_input_methods!(M::NAME, |_this, input| Self::new(input));

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
