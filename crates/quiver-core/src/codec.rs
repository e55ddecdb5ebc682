//! Plan codecs: how Quiver's own table types travel from client to scheduler to executors.
//!
//! Ballista serializes plans with datafusion-proto, which knows DataFusion's
//! built-in tables. [`QuiverLogicalCodec`] adds Quiver's: today the
//! [`GlobTable`] (a file listing narrowed by a pattern). It wraps Ballista's
//! codec and passes everything else through unchanged. Every role must use the
//! same codecs; [`crate::session::SessionFactory`] hands them out.
//!
//! Quiver's payloads start with [`MAGIC`] and a kind byte, so they are never
//! confused with Ballista's.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::catalog::TableProvider;
use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::listing::ListingTable;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, LogicalPlanBuilder, ScalarUDF, WindowUDF};
use datafusion_proto::logical_plan::{AsLogicalPlan, LogicalExtensionCodec};
use datafusion_proto::protobuf::LogicalPlanNode;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::tables::GlobTable;

/// First bytes of every payload Quiver's codecs write.
pub const MAGIC: &[u8; 4] = b"QVR1";
const KIND_GLOB_TABLE: u8 = 1;

#[derive(Serialize, Deserialize)]
struct GlobHeader {
    locations: Vec<String>,
}

/// Ballista's logical codec plus Quiver's table types.
#[derive(Debug, Default)]
pub struct QuiverLogicalCodec {
    inner: BallistaLogicalExtensionCodec,
}

fn codec_err(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("cannot decode {what} sent by a Quiver client: {e}"))
}

impl QuiverLogicalCodec {
    fn encode_glob(&self, table_ref: &TableReference, table: &GlobTable, buf: &mut Vec<u8>) -> Result<()> {
        let listing: Arc<dyn TableProvider> = Arc::clone(table.listing()) as _;
        let scan = LogicalPlanBuilder::scan(table_ref.clone(), provider_as_source(listing), None)?.build()?;
        let plan = LogicalPlanNode::try_from_logical_plan(&scan, self)?.encode_to_vec();
        let header = serde_json::to_vec(&GlobHeader {
            locations: table.locations().to_vec(),
        })
        .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        buf.extend_from_slice(MAGIC);
        buf.push(KIND_GLOB_TABLE);
        buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&plan);
        Ok(())
    }

    fn decode_glob(&self, body: &[u8], ctx: &TaskContext) -> Result<Arc<dyn TableProvider>> {
        let len_bytes: [u8; 4] = body
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| codec_err("a pattern table", "truncated"))?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        let header: GlobHeader = serde_json::from_slice(
            body.get(4..4 + len)
                .ok_or_else(|| codec_err("a pattern table", "truncated"))?,
        )
        .map_err(|e| codec_err("a pattern table", e))?;
        let node = LogicalPlanNode::decode(&body[4 + len..]).map_err(|e| codec_err("a pattern table", e))?;
        let plan = node.try_into_logical_plan(ctx, self)?;
        let LogicalPlan::TableScan(scan) = plan else {
            return Err(codec_err("a pattern table", "expected a table scan"));
        };
        let provider = source_as_provider(&scan.source)?;
        let listing = provider
            .downcast_ref::<ListingTable>()
            .ok_or_else(|| codec_err("a pattern table", "expected a listing table"))?;
        Ok(Arc::new(GlobTable::new(listing, header.locations)?))
    }
}

impl LogicalExtensionCodec for QuiverLogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        if let Some(rest) = buf.strip_prefix(MAGIC.as_slice()) {
            return match rest.split_first() {
                Some((&KIND_GLOB_TABLE, body)) => self.decode_glob(body, ctx),
                _ => Err(codec_err(
                    "a table",
                    "unknown table kind (client and cluster versions differ?)",
                )),
            };
        }
        self.inner.try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(glob) = node.downcast_ref::<GlobTable>() {
            return self.encode_glob(table_ref, glob, buf);
        }
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn glob_tables_keep_their_pattern_through_serialization() {
        let dir = tempfile::tempdir().unwrap();
        for (name, v) in [("keep-1.csv", 1), ("keep-2.csv", 2), ("skip.csv", 100)] {
            std::fs::write(dir.path().join(name), format!("x\n{v}\n")).unwrap();
        }
        let ctx = SessionContext::new();
        crate::tables::install(&ctx);
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE t (x BIGINT) STORED AS CSV LOCATION '{}/keep-*.csv' OPTIONS ('format.has_header' 'true')",
            dir.path().display()
        ))
        .await
        .unwrap();
        let plan = ctx
            .sql("SELECT sum(x) AS s FROM t")
            .await
            .unwrap()
            .into_unoptimized_plan();
        let codec = QuiverLogicalCodec::default();
        let bytes = LogicalPlanNode::try_from_logical_plan(&plan, &codec)
            .unwrap()
            .encode_to_vec();

        // Another process: decode and run.
        let other = SessionContext::new();
        let decoded = LogicalPlanNode::decode(bytes.as_slice())
            .unwrap()
            .try_into_logical_plan(&other.task_ctx(), &codec)
            .unwrap();
        let batches = other
            .execute_logical_plan(decoded)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| 3 "), "the pattern must still exclude skip.csv: {text}");
    }
}
