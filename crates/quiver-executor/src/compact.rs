//! Compacting batches before they are shuffled.
//!
//! Two kinds of batch hold far more memory than their rows need, and both
//! reach shuffle writers in ordinary queries:
//!
//! - **String views.** Parquet files written by arrow-rs based tools
//!   (tpchgen-cli, delta-rs, Polars) declare their strings as `Utf8View`, and
//!   DataFusion reads them so. A view array does not own its strings: it
//!   points into the data buffers of the page it was decoded from. Filters,
//!   joins, `TopK` and limits keep those buffers alive, so a batch of 20 rows
//!   can still hold megabytes of page data, and Arrow IPC writes every
//!   referenced buffer whole. Measured on TPC-H SF1, the last stage of Q10
//!   (20 rows) wrote 6 MB of shuffle data and its result took 1.5 s to reach
//!   the client.
//! - **Slices of large arrays.** An aggregation emits its groups as slices of
//!   one array per column. IPC writes only the slice, but Ballista's sort
//!   shuffle writer budgets its buffered batches by the memory they hold
//!   (`get_array_memory_size`), which counts the whole array for every slice.
//!   TPC-H Q18's partial aggregation (1.5 M groups in 184 batches) looked like
//!   4.3 GB to it and spilled 16 times within its 256 MiB budget.
//!
//! [`CompactExec`] sits under each stage's shuffle writer and copies such
//! columns into buffers of their own when the buffers they hold are mostly
//! bytes they do not use. Other columns pass through untouched.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryViewArray, GenericByteViewArray, MutableArrayData, RecordBatch, StringViewArray, make_array,
};
use datafusion::arrow::datatypes::{ByteViewType, SchemaRef};
use datafusion::common::Result;
use quiver_core::batch_map::{BatchMap, BatchMapExec};

/// Columns holding more than this many times the bytes their rows use are
/// compacted. Below it the copy costs more than the bytes it saves.
const WASTE_FACTOR: usize = 2;

/// ... and waste at least this many bytes: small arrays always hold some
/// unused capacity (allocations are rounded up to 64 bytes).
const MIN_WASTE: usize = 32 * 1024;

/// Passes its input through, compacting columns that hold far more buffer
/// bytes than their rows use. See the [module docs](self).
pub type CompactExec = BatchMapExec<Compact>;

/// The rewrite of [`CompactExec`]: [`compact_batch`].
#[derive(Debug)]
pub struct Compact;

impl BatchMap for Compact {
    const NAME: &'static str = "CompactExec";

    fn map(batch: RecordBatch, _schema: &SchemaRef) -> Result<RecordBatch> {
        compact_batch(batch)
    }
}

/// `batch` with its wasteful columns compacted.
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
        compact_slice(column)
    }
}

/// A copy of `column` owning just its rows' bytes, when it is a slice of a
/// much larger array.
fn compact_slice(column: &dyn Array) -> Option<ArrayRef> {
    let held = column.get_buffer_memory_size();
    let data = column.to_data();
    // An error means a layout the size cannot be computed for: leave it be.
    let used = data.get_slice_memory_size().ok()?;
    if !wasteful(held, used) {
        return None;
    }
    let mut copy = MutableArrayData::new(vec![&data], false, data.len());
    // Fails only on offset overflow, which a copy of an existing array cannot hit.
    copy.try_extend(0, 0, data.len()).ok()?;
    Some(make_array(copy.freeze()))
}

fn compact_views<T: ByteViewType + ?Sized>(views: &GenericByteViewArray<T>) -> Option<ArrayRef> {
    let held = views.data_buffers().iter().map(|b| b.len()).sum();
    wasteful(held, views.total_buffer_bytes_used()).then(|| Arc::new(views.gc()) as ArrayRef)
}

fn wasteful(held: usize, used: usize) -> bool {
    held > used.saturating_mul(WASTE_FACTOR) && held - used >= MIN_WASTE
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

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
    fn a_slice_of_a_large_array_is_copied_and_keeps_its_values() {
        let numbers = Int64Array::from_iter((0..100_000).map(|i| (i % 7 != 0).then_some(i)));
        let names: StringArray = (0..100_000).map(|i| Some(format!("name {i}"))).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(numbers), Arc::new(names)]).unwrap();
        let slice = batch.slice(50_000, 8192);
        assert!(
            slice.get_array_memory_size() > 1_000_000,
            "the slice holds the whole arrays"
        );
        let compacted = compact_batch(slice.clone()).unwrap();
        assert!(
            compacted.get_array_memory_size() < 300_000,
            "only the slice's rows are kept: {}",
            compacted.get_array_memory_size()
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
