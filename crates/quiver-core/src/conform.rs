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
//! such columns back to the declared type. Flight also sends every column
//! as nullable; batches get their declared nullability back (`c IS TRUE`
//! cannot be NULL), so what a query returns has the schema it declares.
//! Batches of other columns than declared (other names, another count) are
//! an error, never relabelled: they are another operator's rows.
//! Batches whose schema already matches pass through untouched;
//! [`crate::client_planner`] puts one above the client's distributed query.
//!
//! Errors cross the wire as text as well; a [`ConformExec`] gives an
//! executor's error back its engine form ([`crate::remote_error`]).

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{DataFusionError, Result};

use crate::batch_map::{BatchMap, BatchMapExec};

/// Casts its input's batches to the schema its input declares; see the
/// [module docs](self).
pub type ConformExec = BatchMapExec<Conform>;

/// The rewrite of [`ConformExec`]: [`conform_batch`].
#[derive(Debug)]
pub struct Conform;

impl BatchMap for Conform {
    const NAME: &'static str = "ConformExec";

    fn map(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
        conform_batch(batch, schema)
    }

    fn map_error(error: DataFusionError) -> DataFusionError {
        crate::remote_error::restore(error)
    }
}

/// Checks that its input's batches hold no NULL where the input declares
/// a column non-nullable; see [`DeclaredNulls`].
pub type DeclaredNullsExec = BatchMapExec<DeclaredNulls>;

/// The rewrite of [`DeclaredNullsExec`]: a batch with a NULL in a column its
/// plan declares non-nullable fails, with Arrow's error (`Column 'c' is
/// declared as non-nullable but contains null values`), as it does in one
/// process when the batch is built. Rows that crossed Flight are not
/// checked so on their way (the plan format does not keep every operator's
/// nullability), so the client puts it where a declaration is a constraint:
/// under an `INSERT` into a table with `NOT NULL` columns.
#[derive(Debug)]
pub struct DeclaredNulls;

impl BatchMap for DeclaredNulls {
    const NAME: &'static str = "DeclaredNullsExec";

    fn map(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
        if schema.fields().iter().all(|f| f.is_nullable()) {
            return Ok(batch);
        }
        Ok(with_schema(schema, batch.columns().to_vec(), batch.num_rows())?)
    }
}

/// The error for rows of other columns than their plan declares: rows of
/// another operator than the one read (Ballista's adaptive planner can
/// re-plan a query after its last stage ran, and then hand out the output of
/// a stage it added, such as a join's input). Passed on, they were a wrong
/// answer under the query's column names, or a panic in the operator above.
fn other_columns(got: &SchemaRef, want: &SchemaRef) -> DataFusionError {
    let names = |s: &SchemaRef| {
        s.fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    DataFusionError::Execution(format!(
        "the cluster returned rows of other columns ({}) than this step of the query reads ({}); \
         Quiver refused them rather than answer with another operator's rows. This is a fault in \
         the cluster's planning (the scheduler's log shows the job's stages), not in the query",
        names(got),
        names(want)
    ))
}

/// `columns` as a batch of `schema` with `rows` rows, checked against it
/// (types, and NULLs in columns it declares non-nullable).
fn with_schema(
    schema: &SchemaRef,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> std::result::Result<RecordBatch, ArrowError> {
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
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
/// use arrow::array::{Array, BooleanArray, StringArray};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use quiver_core::conform::conform_batch;
///
/// let hydrated = RecordBatch::try_from_iter([("p", Arc::new(StringArray::from(vec!["a", "b"])) as _)]).unwrap();
/// let dict = DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8));
/// let declared = Arc::new(Schema::new(vec![Field::new("p", dict.clone(), true)]));
/// let batch = conform_batch(hydrated, &declared).unwrap();
/// assert_eq!(batch.column(0).data_type(), &dict);
///
/// // A column that arrived nullable gets its declared nullability back.
/// let flags = RecordBatch::try_from_iter([("t", Arc::new(BooleanArray::from(vec![true, false])) as _)]).unwrap();
/// let declared = Arc::new(Schema::new(vec![Field::new("t", DataType::Boolean, false)]));
/// assert!(!conform_batch(flags, &declared).unwrap().schema().field(0).is_nullable());
///
/// // Rows of other columns are another operator's: refused, not relabelled.
/// let other = RecordBatch::try_from_iter([("u", Arc::new(BooleanArray::from(vec![true])) as _)]).unwrap();
/// assert!(conform_batch(other, &declared).is_err());
/// ```
pub fn conform_batch(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    let pairs = || batch.schema_ref().fields().iter().zip(schema.fields());
    if batch.num_columns() != schema.fields().len() || !pairs().all(|(got, want)| got.name() == want.name()) {
        return Err(other_columns(batch.schema_ref(), schema));
    }
    if pairs().all(|(got, want)| got.data_type() == want.data_type()) {
        // Only nullability or metadata differ (Flight sends every column
        // as nullable): the declared schema, unless a column holds NULLs
        // it declares it cannot; that batch is left as it came, for the
        // plan above to judge ([`DeclaredNullsExec`] where it matters).
        return Ok(with_schema(schema, batch.columns().to_vec(), batch.num_rows()).unwrap_or(batch));
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
    Ok(with_schema(schema, columns, batch.num_rows())?)
}
