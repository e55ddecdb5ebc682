//! Printing query results for people (`table`) and machines (`csv`, `json`).
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::Int64Array;
//! use arrow::record_batch::RecordBatch;
//! use quiver_core::output::{OutputFormat, render};
//! let batch = RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
//! let csv = render(OutputFormat::Csv, &batch.schema(), &[batch.clone()]).unwrap();
//! assert_eq!(csv, "n\n1\n2\n");
//! let json = render(OutputFormat::Json, &batch.schema(), &[batch]).unwrap();
//! assert_eq!(json, "{\"n\":1}\n{\"n\":2}\n");
//! ```

use std::str::FromStr;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// A boxed table for terminals.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// Newline-delimited JSON, one object per row.
    Json,
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "json" | "ndjson" => Ok(Self::Json),
            other => Err(format!("unknown format '{other}': use table, csv or json")),
        }
    }
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Table => "table",
            Self::Csv => "csv",
            Self::Json => "json",
        })
    }
}

/// Renders `batches` (with `schema`, which matters when there are no rows).
pub fn render(format: OutputFormat, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String, ArrowError> {
    match format {
        OutputFormat::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                let empty = RecordBatch::new_empty(schema.clone());
                return Ok(format!("{}\n", arrow::util::pretty::pretty_format_batches(&[empty])?));
            }
            Ok(format!("{}\n", arrow::util::pretty::pretty_format_batches(batches)?))
        }
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            {
                let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut buf);
                if batches.is_empty() {
                    writer.write(&RecordBatch::new_empty(schema.clone()))?;
                }
                for b in batches {
                    writer.write(b)?;
                }
            }
            String::from_utf8(buf).map_err(|e| ArrowError::ExternalError(Box::new(e)))
        }
        OutputFormat::Json => {
            let mut buf = Vec::new();
            {
                let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
                for b in batches {
                    writer.write(b)?;
                }
                writer.finish()?;
            }
            String::from_utf8(buf).map_err(|e| ArrowError::ExternalError(Box::new(e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn empty_results_still_show_their_columns() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let table = render(OutputFormat::Table, &schema, &[]).unwrap();
        assert!(table.contains("| a |"), "{table}");
        assert_eq!(render(OutputFormat::Csv, &schema, &[]).unwrap(), "a\n");
        assert_eq!(render(OutputFormat::Json, &schema, &[]).unwrap(), "");
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let batch = RecordBatch::try_from_iter([
            ("s", Arc::new(StringArray::from(vec!["a,b", "plain"])) as _),
            ("n", Arc::new(Int64Array::from(vec![Some(1), None])) as _),
        ])
        .unwrap();
        let csv = render(OutputFormat::Csv, &batch.schema(), &[batch]).unwrap();
        assert_eq!(csv, "s,n\n\"a,b\",1\nplain,\n");
    }

    #[test]
    fn formats_parse_from_flags() {
        assert_eq!("CSV".parse::<OutputFormat>().unwrap(), OutputFormat::Csv);
        assert!("xml".parse::<OutputFormat>().is_err());
    }
}
