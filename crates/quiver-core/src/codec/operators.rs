//! DataFusion 55 operators its plan format cannot carry, and how Quiver's
//! physical codec carries them: each as [`MAGIC`], a kind byte, then a prost
//! message made of DataFusion's own proto types.
//!
//! * A write to Arrow IPC files: a [`DataSinkExec`] over an [`ArrowSink`]
//!   ([`crate::arrow_writes`]), as its [`FileSinkConfig`] and sort order.
//! * A [`PiecewiseMergeJoinExec`] (`datafusion.optimizer.enable_piecewise_merge_join`):
//!   its two expressions, operator and join type. One that keeps the
//!   unmatched rows of its buffered side (left and full joins) is refused:
//!   each task holds the whole buffered side but sees only its own streamed
//!   rows, so it cannot tell which buffered rows no task matched.
//! * A [`PartitionedTopKExec`] (`datafusion.optimizer.enable_window_topn`):
//!   its ordering, partition prefix, fetch and window function. It keeps the
//!   top rows of each window partition in its input partition, and its input
//!   is partitioned by the window partition's keys, so the tasks split it as
//!   one process's threads do.
//! * A [`RecursiveQueryExec`] and its [`WorkTableExec`] (`WITH RECURSIVE`):
//!   the query's name, schema and `DISTINCT`, the work table's name and
//!   columns. They always travel inside one task ([`crate::local_plan`]);
//!   decoding the query hands its work table to the work table scan again.
//!
//! [`FileSinkConfig`]: datafusion::datasource::physical_plan::FileSinkConfig

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinType, Result, plan_err};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::{LexOrdering, LexRequirement, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::PiecewiseMergeJoinExec;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::sorts::partitioned_topk::{PartitionedTopKExec, WindowFnKind};
use datafusion::physical_plan::work_table::WorkTableExec;
use datafusion_proto::physical_plan::from_proto::parse_physical_sort_exprs;
use datafusion_proto::physical_plan::to_proto::serialize_physical_sort_exprs;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

use super::{MAGIC, codec_err};
use crate::arrow_writes::ArrowSink;

const KIND_ARROW_SINK: u8 = 10;
const KIND_PIECEWISE_MERGE_JOIN: u8 = 12;
const KIND_PARTITIONED_TOPK: u8 = 13;
const KIND_RECURSIVE_QUERY: u8 = 15;
const KIND_WORK_TABLE: u8 = 16;

/// An [`ArrowSink`]'s write: the sink's config and the order its input must have.
#[derive(Clone, PartialEq, prost::Message)]
struct ArrowSinkNode {
    #[prost(message, optional, tag = "1")]
    config: Option<protobuf::FileSinkConfig>,
    #[prost(message, optional, tag = "2")]
    sort_order: Option<protobuf::PhysicalSortExprNodeCollection>,
}

/// A piecewise merge join; its inputs are the buffered then the streamed side.
#[derive(Clone, PartialEq, prost::Message)]
struct PiecewiseMergeJoinNode {
    #[prost(message, optional, tag = "1")]
    on_buffered: Option<protobuf::PhysicalExprNode>,
    #[prost(message, optional, tag = "2")]
    on_streamed: Option<protobuf::PhysicalExprNode>,
    /// [`RANGE_OPERATORS`]' index of the comparison.
    #[prost(uint32, tag = "3")]
    operator: u32,
    #[prost(enumeration = "protobuf::JoinType", tag = "4")]
    join_type: i32,
}

/// A per-partition top-K under a window function.
#[derive(Clone, PartialEq, prost::Message)]
struct PartitionedTopKNode {
    #[prost(message, repeated, tag = "1")]
    expr: Vec<protobuf::PhysicalSortExprNode>,
    #[prost(uint64, tag = "2")]
    partition_prefix_len: u64,
    #[prost(uint64, tag = "3")]
    fetch: u64,
    /// `RANK()` rather than `ROW_NUMBER()`.
    #[prost(bool, tag = "4")]
    rank: bool,
}

/// A recursive query; its inputs are the static then the recursive term.
#[derive(Clone, PartialEq, prost::Message)]
struct RecursiveQueryNode {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    schema: Option<protobuf::Schema>,
    #[prost(bool, tag = "3")]
    distinct: bool,
}

/// The scan of a recursive query's work table: its name and the columns it
/// reads. Which of the query's columns those are is found again when the
/// query is decoded ([`with_work_table_columns`]): DataFusion keeps a work
/// table scan's projection to itself.
#[derive(Clone, PartialEq, prost::Message)]
struct WorkTableNode {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    schema: Option<protobuf::Schema>,
}

/// The comparisons a piecewise merge join runs on, by their encoded index.
const RANGE_OPERATORS: [Operator; 4] = [Operator::Lt, Operator::LtEq, Operator::Gt, Operator::GtEq];

fn frame(kind: u8, node: &impl Message, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(MAGIC);
    buf.push(kind);
    node.encode(buf).map_err(|e| codec_err("an operator", e))
}

fn sort_nodes(
    exprs: impl IntoIterator<Item = PhysicalSortExpr>,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Vec<protobuf::PhysicalSortExprNode>> {
    serialize_physical_sort_exprs(exprs, codec, converter)
}

/// Encodes `node` when it is one of these operators; `None` when it is not.
pub(super) fn encode(
    node: &dyn ExecutionPlan,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
    buf: &mut Vec<u8>,
) -> Option<Result<()>> {
    if let Some(exec) = node.downcast_ref::<DataSinkExec>() {
        let sink = exec.sink().downcast_ref::<ArrowSink>()?;
        return Some(encode_arrow_sink(sink, exec.sort_order(), codec, converter, buf));
    }
    if let Some(join) = node.downcast_ref::<PiecewiseMergeJoinExec>() {
        return Some(encode_piecewise_merge_join(join, codec, converter, buf));
    }
    if let Some(query) = node.downcast_ref::<RecursiveQueryExec>() {
        return Some((|| {
            let node = RecursiveQueryNode {
                name: query.name().to_owned(),
                schema: Some(schema_node(&query.schema())?),
                distinct: query.is_distinct(),
            };
            frame(KIND_RECURSIVE_QUERY, &node, buf)
        })());
    }
    if let Some(scan) = node.downcast_ref::<WorkTableExec>() {
        return Some((|| {
            let node = WorkTableNode {
                name: scan.name().to_owned(),
                schema: Some(schema_node(&scan.schema())?),
            };
            frame(KIND_WORK_TABLE, &node, buf)
        })());
    }
    let topk = node.downcast_ref::<PartitionedTopKExec>()?;
    Some((|| {
        let node = PartitionedTopKNode {
            expr: sort_nodes(topk.expr().iter().cloned(), codec, converter)?,
            partition_prefix_len: topk.partition_prefix_len() as u64,
            fetch: topk.fetch() as u64,
            rank: matches!(topk.fn_kind(), WindowFnKind::Rank),
        };
        frame(KIND_PARTITIONED_TOPK, &node, buf)
    })())
}

fn encode_arrow_sink(
    sink: &ArrowSink,
    sort_order: &Option<LexRequirement>,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let sort_order = match sort_order {
        Some(requirement) => Some(protobuf::PhysicalSortExprNodeCollection {
            physical_sort_expr_nodes: sort_nodes(
                requirement.iter().map(|r| PhysicalSortExpr::from(r.clone())),
                codec,
                converter,
            )?,
        }),
        None => None,
    };
    let node = ArrowSinkNode {
        config: Some(sink.config().try_into()?),
        sort_order,
    };
    frame(KIND_ARROW_SINK, &node, buf)
}

fn encode_piecewise_merge_join(
    join: &PiecewiseMergeJoinExec,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
    buf: &mut Vec<u8>,
) -> Result<()> {
    if matches!(join.join_type, JoinType::Left | JoinType::Full) {
        return plan_err!(
            "a piecewise merge join that keeps its left side's unmatched rows ({} join) cannot run on a \
             cluster: each task sees only its own rows of the right side. \
             SET datafusion.optimizer.enable_piecewise_merge_join = false to plan another join",
            join.join_type
        );
    }
    let Some(operator) = RANGE_OPERATORS.iter().position(|o| *o == join.operator) else {
        return plan_err!("a piecewise merge join on {} has no encoding", join.operator);
    };
    let node = PiecewiseMergeJoinNode {
        on_buffered: Some(converter.physical_expr_to_proto(&join.on.0, codec)?),
        on_streamed: Some(converter.physical_expr_to_proto(&join.on.1, codec)?),
        operator: operator as u32,
        join_type: protobuf::JoinType::from(join.join_type).into(),
    };
    frame(KIND_PIECEWISE_MERGE_JOIN, &node, buf)
}

/// Decodes one of these operators of kind `kind`; `None` for other kinds.
pub(super) fn decode(
    kind: u8,
    body: &[u8],
    inputs: &[Arc<dyn ExecutionPlan>],
    ctx: &PhysicalPlanDecodeContext<'_>,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Option<Result<Arc<dyn ExecutionPlan>>> {
    let decoded = match kind {
        KIND_ARROW_SINK => decode_arrow_sink(body, inputs, ctx, converter),
        KIND_PIECEWISE_MERGE_JOIN => decode_piecewise_merge_join(body, inputs, ctx, converter),
        KIND_PARTITIONED_TOPK => decode_partitioned_topk(body, inputs, ctx, converter),
        KIND_RECURSIVE_QUERY => decode_recursive_query(body, inputs),
        KIND_WORK_TABLE => decode_work_table(body, inputs),
        _ => return None,
    };
    Some(decoded)
}

fn decode_arrow_sink(
    body: &[u8],
    inputs: &[Arc<dyn ExecutionPlan>],
    ctx: &PhysicalPlanDecodeContext<'_>,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Arc<dyn ExecutionPlan>> {
    let what = "an Arrow file write";
    let [input] = inputs else {
        return Err(codec_err(what, "expected one input"));
    };
    let node = ArrowSinkNode::decode(body).map_err(|e| codec_err(what, e))?;
    let config = node.config.as_ref().ok_or_else(|| codec_err(what, "no sink config"))?;
    let sort_order = match &node.sort_order {
        Some(order) => {
            let exprs = parse_physical_sort_exprs(&order.physical_sort_expr_nodes, ctx, &input.schema(), converter)?;
            LexRequirement::new(exprs.into_iter().map(Into::into))
        }
        None => None,
    };
    Ok(Arc::new(DataSinkExec::new(
        Arc::clone(input),
        Arc::new(ArrowSink::new(config.try_into()?)),
        sort_order,
    )))
}

fn decode_piecewise_merge_join(
    body: &[u8],
    inputs: &[Arc<dyn ExecutionPlan>],
    ctx: &PhysicalPlanDecodeContext<'_>,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Arc<dyn ExecutionPlan>> {
    let what = "a piecewise merge join";
    let [buffered, streamed] = inputs else {
        return Err(codec_err(what, "expected two inputs"));
    };
    let node = PiecewiseMergeJoinNode::decode(body).map_err(|e| codec_err(what, e))?;
    let expr = |e: &Option<protobuf::PhysicalExprNode>, side: &Arc<dyn ExecutionPlan>| {
        let e = e.as_ref().ok_or_else(|| codec_err(what, "an expression is missing"))?;
        converter.proto_to_physical_expr(e, &side.schema(), ctx)
    };
    let operator = *RANGE_OPERATORS
        .get(node.operator as usize)
        .ok_or_else(|| codec_err(what, "unknown operator"))?;
    let join_type = protobuf::JoinType::try_from(node.join_type).map_err(|e| codec_err(what, e))?;
    Ok(Arc::new(PiecewiseMergeJoinExec::try_new(
        Arc::clone(buffered),
        Arc::clone(streamed),
        (expr(&node.on_buffered, buffered)?, expr(&node.on_streamed, streamed)?),
        operator,
        join_type.into(),
        // What DataFusion's planner gives it: the session's target partitions.
        ctx.task_ctx().session_config().target_partitions(),
    )?))
}

fn decode_partitioned_topk(
    body: &[u8],
    inputs: &[Arc<dyn ExecutionPlan>],
    ctx: &PhysicalPlanDecodeContext<'_>,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Arc<dyn ExecutionPlan>> {
    let what = "a per-partition top-K";
    let [input] = inputs else {
        return Err(codec_err(what, "expected one input"));
    };
    let node = PartitionedTopKNode::decode(body).map_err(|e| codec_err(what, e))?;
    let exprs = parse_physical_sort_exprs(&node.expr, ctx, &input.schema(), converter)?;
    let expr = LexOrdering::new(exprs).ok_or_else(|| codec_err(what, "no ordering"))?;
    let kind = match node.rank {
        true => WindowFnKind::Rank,
        false => WindowFnKind::RowNumber,
    };
    let count = |n: u64| usize::try_from(n).map_err(|e| codec_err(what, e));
    Ok(Arc::new(PartitionedTopKExec::try_new(
        Arc::clone(input),
        expr,
        count(node.partition_prefix_len)?,
        count(node.fetch)?,
        kind,
    )?))
}

fn schema_node(schema: &Schema) -> Result<protobuf::Schema> {
    Ok(schema.try_into()?)
}

fn schema_of(node: Option<&protobuf::Schema>, what: &str) -> Result<SchemaRef> {
    let node = node.ok_or_else(|| codec_err(what, "no schema"))?;
    Ok(Arc::new(Schema::try_from(node)?))
}

fn decode_recursive_query(body: &[u8], inputs: &[Arc<dyn ExecutionPlan>]) -> Result<Arc<dyn ExecutionPlan>> {
    let what = "a recursive query";
    let [static_term, recursive_term] = inputs else {
        return Err(codec_err(what, "expected two inputs"));
    };
    let node = RecursiveQueryNode::decode(body).map_err(|e| codec_err(what, e))?;
    let schema = schema_of(node.schema.as_ref(), what)?;
    let recursive_term = with_work_table_columns(Arc::clone(recursive_term), &node.name, &schema)?;
    Ok(Arc::new(RecursiveQueryExec::try_new(
        node.name,
        schema,
        Arc::clone(static_term),
        recursive_term,
        node.distinct,
    )?))
}

fn decode_work_table(body: &[u8], inputs: &[Arc<dyn ExecutionPlan>]) -> Result<Arc<dyn ExecutionPlan>> {
    let what = "a recursive query's work table";
    if !inputs.is_empty() {
        return Err(codec_err(what, "expected no inputs"));
    }
    let node = WorkTableNode::decode(body).map_err(|e| codec_err(what, e))?;
    Ok(Arc::new(WorkTableExec::new(
        node.name,
        schema_of(node.schema.as_ref(), what)?,
        None,
    )?))
}

/// `recursive_term` with its scan of work table `name` reading the columns
/// it read before encoding out of the rows the query puts in its work table
/// (of `schema`, the query's own), found by name: a recursive query's
/// columns have distinct names.
fn with_work_table_columns(
    recursive_term: Arc<dyn ExecutionPlan>,
    name: &str,
    schema: &SchemaRef,
) -> Result<Arc<dyn ExecutionPlan>> {
    recursive_term
        .transform_down(|node| {
            let Some(scan) = node.downcast_ref::<WorkTableExec>().filter(|s| s.name() == name) else {
                return Ok(Transformed::no(node));
            };
            let columns = scan
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    schema.index_of(f.name()).map_err(|_| {
                        codec_err(
                            "a recursive query's work table",
                            format!("column {} is not a column of recursive query {name}", f.name()),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let projection = (columns != (0..schema.fields().len()).collect::<Vec<_>>()).then_some(columns);
            Ok(Transformed::yes(
                Arc::new(WorkTableExec::new(name.to_owned(), Arc::clone(schema), projection)?)
                    as Arc<dyn ExecutionPlan>,
            ))
        })
        .map(|t| t.data)
}
