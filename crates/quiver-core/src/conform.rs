//! Rows that crossed Arrow Flight, given back the types their plan declares.
//!
//! Ballista's executors serve shuffle partitions and results over Arrow
//! Flight with the encoder's default of *hydrating* dictionaries: a
//! `Dictionary(UInt16, Utf8)` column (a hive partition column, an
//! `arrow_cast(.., 'Dictionary(..)')`) arrives as plain `Utf8`. The plan
//! above still expects the dictionary, so a cluster failed where one process
//! answered: `RowConverter column schema mismatch, expected Dictionary(UInt16,
//! Utf8) got Utf8` in a `GROUP BY` over a partition column, `Mismatch between
//! schema and batches` in `CREATE TABLE ... AS VALUES`.
//!
//! [`ConformExec`] sits above every operator that reads over Flight (the
//! executors' shuffle readers, the client's distributed query) and casts
//! such columns back to the declared type. Batches whose types already match
//! pass through untouched; [`crate::client_planner`] puts one above the
//! client's distributed query.

use std::fmt;
use std::sync::Arc;

use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

/// Casts its input's batches to the schema its input declares; see the
/// [module docs](self).
#[derive(Debug)]
pub struct ConformExec {
    input: Arc<dyn ExecutionPlan>,
}

impl ConformExec {
    /// `input`, whose batches will carry the types `input.schema()` declares.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self { input }
    }
}

/// Whether `schema` holds a dictionary anywhere (the type Flight hydrates).
pub fn has_dictionary(schema: &SchemaRef) -> bool {
    fn holds(t: &DataType) -> bool {
        match t {
            DataType::Dictionary(_, _) => true,
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) | DataType::Map(f, _) => {
                holds(f.data_type())
            }
            DataType::Struct(fields) => fields.iter().any(|f| holds(f.data_type())),
            _ => false,
        }
    }
    schema.fields().iter().any(|f| holds(f.data_type()))
}

/// `batch` with the types of `schema` (same columns in the same order).
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Array, StringArray};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use quiver_core::conform::conform_batch;
///
/// let hydrated = RecordBatch::try_from_iter([("p", Arc::new(StringArray::from(vec!["a", "b"])) as _)]).unwrap();
/// let dict = DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8));
/// let declared = Arc::new(Schema::new(vec![Field::new("p", dict.clone(), true)]));
/// let batch = conform_batch(hydrated, &declared).unwrap();
/// assert_eq!(batch.column(0).data_type(), &dict);
/// ```
pub fn conform_batch(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema_ref() == schema
        || batch
            .schema_ref()
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(got, want)| got.data_type() == want.data_type())
    {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

impl DisplayAs for ConformExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ConformExec")
    }
}

impl ExecutionPlan for ConformExec {
    fn name(&self) -> &str {
        "ConformExec"
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
            _ => datafusion::common::internal_err!("ConformExec takes exactly one input"),
        }
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let schema = self.input.schema();
        let stream = self.input.execute(partition, context)?;
        let declared = Arc::clone(&schema);
        let conformed = stream.map(move |batch| batch.and_then(|b| conform_batch(b, &declared)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, conformed)))
    }
}
