//! Settings views (`SHOW`, `information_schema.df_settings`) never return a
//! secret's value: the `value` of every secret setting is masked.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;

use crate::secret;

pub(super) fn mentions_settings(plan: &LogicalPlan, sql: &str) -> bool {
    let head = sql.trim_start().to_ascii_lowercase();
    head.starts_with("show") || head.contains("df_settings") || matches!(plan, LogicalPlan::DescribeTable(_))
}

/// Masks the `value` column of rows whose `name` is a secret setting.
pub(super) fn mask_setting_values(batch: &RecordBatch) -> Result<RecordBatch, DataFusionError> {
    let schema = batch.schema();
    let (Ok(name_idx), Ok(value_idx)) = (schema.index_of("name"), schema.index_of("value")) else {
        return Ok(batch.clone());
    };
    let cast = |i: usize| arrow::compute::cast(batch.column(i), &DataType::Utf8);
    let names = cast(name_idx)?;
    let values = cast(value_idx)?;
    let names = names.as_any().downcast_ref::<StringArray>().expect("cast to Utf8");
    let values = values.as_any().downcast_ref::<StringArray>().expect("cast to Utf8");
    let masked: StringArray = (0..batch.num_rows())
        .map(|i| {
            if values.is_null(i) {
                None
            } else if secret::is_secret_key(names.value(i)) {
                Some(secret::MASK.to_owned())
            } else {
                Some(values.value(i).to_owned())
            }
        })
        .collect();
    let masked = arrow::compute::cast(&(Arc::new(masked) as ArrayRef), schema.field(value_idx).data_type())?;
    let mut columns = batch.columns().to_vec();
    columns[value_idx] = masked;
    Ok(RecordBatch::try_new(schema, columns)?)
}
