//! The schema of Arrow IPC files read from their footers, so that
//! `CREATE EXTERNAL TABLE ... STORED AS ARROW` without columns works on S3.
//!
//! DataFusion 55 infers an Arrow file's schema on an object store from the
//! file's first bytes, assuming the 8-byte padding after the `ARROW1` magic
//! that the format's spec shows; arrow-rs pads that header to 64 bytes
//! (apache/arrow-rs#6311), so the Arrow files DataFusion itself writes could
//! not be read back from S3 ("Unable to read IPC message schema"). Local
//! files were fine: DataFusion reads those through the footer.
//! [`declare_arrow_schema`] reads each file's footer instead (two ranged
//! reads of the file's end) and hands DataFusion the statement with the
//! columns declared.
//!
//! Files in the streaming format (no footer) are left to DataFusion.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, Result, exec_datafusion_err, plan_err};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTableUrl};
use datafusion::logical_expr::CreateExternalTable;
use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

/// The magic that starts and ends an Arrow IPC file.
const MAGIC: &[u8; 6] = b"ARROW1";

/// Bytes after the footer: its length (i32, little-endian), then the magic.
const TRAILER: u64 = 4 + MAGIC.len() as u64;

/// `cmd` with its columns read from its Arrow files' footers, when it is a
/// `STORED AS ARROW` table without declared columns; `cmd` as it is
/// otherwise. Partition columns (declared, or found in `key=value`
/// directories) are strings, as for other formats.
pub async fn declare_arrow_schema<'a>(
    state: &dyn Session,
    cmd: &'a CreateExternalTable,
) -> Result<Cow<'a, CreateExternalTable>> {
    if !cmd.file_type.eq_ignore_ascii_case("arrow") || !cmd.schema.fields().is_empty() {
        return Ok(Cow::Borrowed(cmd));
    }
    let urls = cmd
        .locations
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = urls.first() else {
        return Ok(Cow::Borrowed(cmd));
    };
    let store = state.runtime_env().object_store(first)?;
    let mut schemas = Vec::new();
    for url in &urls {
        let files: Vec<ObjectMeta> = url
            .list_all_files(state, store.as_ref(), "")
            .await?
            .try_collect()
            .await?;
        for file in &files {
            schemas.push(Arc::unwrap_or_clone(file_schema(state, &store, file).await?));
        }
    }
    if schemas.is_empty() {
        return plan_err!(
            "no Arrow files at {}: declare the table's columns or write files there first",
            first
        );
    }
    let files = Schema::try_merge(schemas)?;

    let infer_partitions = state.config_options().execution.listing_table_factory_infer_partitions;
    let partitions = if cmd.table_partition_cols.is_empty() && infer_partitions {
        ListingOptions::new(Arc::new(ArrowFormat))
            .with_file_extension("")
            .infer_partitions(state, first)
            .await?
    } else {
        cmd.table_partition_cols.clone()
    };
    let mut fields: Vec<Field> = files
        .fields()
        .iter()
        .filter(|f| !partitions.contains(f.name()))
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(partitions.iter().map(|p| Field::new(p, DataType::Utf8, true)));
    let schema = Schema::new(fields).with_metadata(files.metadata().clone());

    let mut declared = cmd.clone();
    declared.schema = Arc::new(DFSchema::try_from(schema)?);
    declared.table_partition_cols = partitions;
    Ok(Cow::Owned(declared))
}

/// The schema in `file`'s footer; DataFusion's inference for a file without one.
async fn file_schema(state: &dyn Session, store: &Arc<dyn ObjectStore>, file: &ObjectMeta) -> Result<SchemaRef> {
    let size = file.size;
    let at = |what: &str| format!("{what} of Arrow file {}", file.location);
    if size < 2 * MAGIC.len() as u64 + TRAILER {
        return ArrowFormat.infer_schema(state, store, std::slice::from_ref(file)).await;
    }
    let trailer = store.get_range(&file.location, size - TRAILER..size).await?;
    if trailer[4..] != MAGIC[..] {
        // The streaming format: no footer, and no padded header either.
        return ArrowFormat.infer_schema(state, store, std::slice::from_ref(file)).await;
    }
    let length = i32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let length = u64::try_from(length).unwrap_or(u64::MAX);
    if length == 0 || length > size - TRAILER - MAGIC.len() as u64 {
        return Err(exec_datafusion_err!(
            "{}: the footer claims {length} bytes in a file of {size}; is the file complete?",
            at("reading the schema")
        ));
    }
    let footer = store
        .get_range(&file.location, size - TRAILER - length..size - TRAILER)
        .await?;
    let footer =
        arrow::ipc::root_as_footer(&footer).map_err(|e| exec_datafusion_err!("{}: {e}", at("reading the footer")))?;
    let schema = footer
        .schema()
        .ok_or_else(|| exec_datafusion_err!("{}: the footer holds no schema", at("reading the schema")))?;
    Ok(Arc::new(arrow::ipc::convert::fb_to_schema(schema)))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
    use datafusion::logical_expr::{DdlStatement, LogicalPlan};
    use datafusion::prelude::SessionContext;

    use super::*;

    fn write_arrow(path: &std::path::Path, alignment: usize) {
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as _),
            ("name", Arc::new(StringArray::from(vec!["a", "b"])) as _),
        ])
        .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let options = IpcWriteOptions::try_new(alignment, false, arrow::ipc::MetadataVersion::V5).unwrap();
        let mut writer =
            FileWriter::try_new_with_options(std::fs::File::create(path).unwrap(), &batch.schema(), options).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
    }

    async fn parse(ctx: &SessionContext, sql: &str) -> CreateExternalTable {
        match ctx.state().create_logical_plan(sql).await.unwrap() {
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) => *cmd,
            other => panic!("not a CREATE EXTERNAL TABLE: {other}"),
        }
    }

    async fn declared(ctx: &SessionContext, sql: &str) -> CreateExternalTable {
        let cmd = parse(ctx, sql).await;
        declare_arrow_schema(&ctx.state(), &cmd).await.unwrap().into_owned()
    }

    #[tokio::test]
    async fn columns_come_from_the_footers_with_any_padding() {
        let dir = tempfile::tempdir().unwrap();
        write_arrow(&dir.path().join("t/day=1/a.arrow"), 64);
        write_arrow(&dir.path().join("t/day=2/b.arrow"), 8);
        let ctx = SessionContext::new();
        let sql = format!(
            "CREATE EXTERNAL TABLE t STORED AS ARROW LOCATION '{}/t/'",
            dir.path().display()
        );
        let cmd = declared(&ctx, &sql).await;
        let columns: Vec<(String, DataType)> = cmd
            .schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        assert_eq!(
            columns,
            [
                ("id".to_owned(), DataType::Int64),
                ("name".to_owned(), DataType::Utf8),
                ("day".to_owned(), DataType::Utf8)
            ]
        );
        assert_eq!(cmd.table_partition_cols, ["day"]);
    }

    #[tokio::test]
    async fn declared_columns_and_other_formats_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        write_arrow(&dir.path().join("t/a.arrow"), 64);
        let ctx = SessionContext::new();
        let location = dir.path().join("t/");
        for sql in [
            format!(
                "CREATE EXTERNAL TABLE t (id BIGINT) STORED AS ARROW LOCATION '{}/'",
                location.display()
            ),
            format!(
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{}/'",
                location.display()
            ),
        ] {
            let cmd = parse(&ctx, &sql).await;
            assert!(matches!(
                declare_arrow_schema(&ctx.state(), &cmd).await.unwrap(),
                Cow::Borrowed(_)
            ));
        }
    }

    #[tokio::test]
    async fn a_damaged_footer_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t/a.arrow");
        write_arrow(&path, 64);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10..n - 6].copy_from_slice(&i32::MAX.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let ctx = SessionContext::new();
        let sql = format!(
            "CREATE EXTERNAL TABLE t STORED AS ARROW LOCATION '{}/t/'",
            dir.path().display()
        );
        let cmd = parse(&ctx, &sql).await;
        let err = declare_arrow_schema(&ctx.state(), &cmd).await.unwrap_err().to_string();
        assert!(err.contains("a.arrow") && err.contains("footer claims"), "{err}");
    }
}
