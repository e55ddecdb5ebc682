//! Secrets stay out of what statements return.
//!
//! * Settings views (`SHOW`, `information_schema.df_settings`) never return a
//!   secret's value: every scan of `df_settings` is rewritten so its `value`
//!   column reads [`MASK`](secret::MASK) for secret settings, before anything
//!   else in the query sees it: aliases, functions, subqueries, `COPY` and
//!   views all read the masked column.
//!
//! (`EXPLAIN` text, which can quote a literal filled in from a secret
//! parameter, is scrubbed with [`secret::redact_batch`] by the runner.)

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, TableReference};
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, cast, col, lit, when};

use crate::secret;

fn is_settings_table(name: &TableReference) -> bool {
    name.table() == "df_settings" && name.schema() == Some("information_schema")
}

/// `plan` with every scan of `information_schema.df_settings` masked.
pub(super) fn mask_secret_settings(plan: LogicalPlan, state: &SessionState) -> Result<LogicalPlan> {
    let secret_names: Vec<Expr> = state
        .config()
        .options()
        .entries()
        .into_iter()
        .map(|e| e.key)
        .filter(|k| secret::is_secret_key(k))
        .map(lit)
        .collect();
    if secret_names.is_empty() {
        return Ok(plan);
    }
    plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::TableScan(scan) = &node else {
            return Ok(Transformed::no(node));
        };
        if !is_settings_table(&scan.table_name) {
            return Ok(Transformed::no(node));
        }
        let table = scan.table_name.clone();
        let schema = Arc::clone(node.schema());
        let name = Column::new(Some(table.clone()), "name");
        let has_name = schema.has_column(&name);
        let mut exprs = Vec::with_capacity(schema.fields().len());
        for (qualifier, field) in schema.iter() {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            if field.name() != "value" {
                exprs.push(column);
                continue;
            }
            let masked = if has_name {
                when(
                    col(name.clone()).in_list(secret_names.clone(), false),
                    lit(secret::MASK),
                )
                .otherwise(column)?
            } else {
                lit(secret::MASK)
            };
            exprs.push(cast(masked, field.data_type().clone()).alias_qualified(qualifier.cloned(), "value"));
        }
        let masked = Projection::try_new(exprs, Arc::new(node))?;
        Ok(Transformed::yes(LogicalPlan::Projection(masked)))
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::storage::S3Options;

    async fn masked_rows(sql: &str) -> String {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_option_extension(S3Options::default());
        let ctx = SessionContext::new_with_config(config);
        ctx.sql("SET s3.secret_access_key = 'masking-unit-secret'")
            .await
            .unwrap();
        let state = ctx.state();
        let plan = mask_secret_settings(state.create_logical_plan(sql).await.unwrap(), &state).unwrap();
        let batches = ctx.execute_logical_plan(plan).await.unwrap().collect().await.unwrap();
        arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn settings_are_masked_whatever_the_query_does_with_them() {
        for sql in [
            "SHOW s3.secret_access_key",
            "SHOW ALL",
            "SELECT value AS v FROM information_schema.df_settings WHERE name = 's3.secret_access_key'",
            "SELECT upper(value) || '!' AS v FROM information_schema.df_settings WHERE name LIKE '%secret%'",
            "SELECT (SELECT max(value) FROM information_schema.df_settings WHERE name = 's3.secret_access_key') AS v",
            "WITH s AS (SELECT * FROM information_schema.df_settings) SELECT value FROM s WHERE name = 's3.secret_access_key'",
        ] {
            let text = masked_rows(sql).await;
            assert!(!text.to_lowercase().contains("masking-unit-secret"), "{sql}\n{text}");
        }
        let text =
            masked_rows("SELECT value FROM information_schema.df_settings WHERE name = 's3.secret_access_key'").await;
        assert!(text.contains(secret::MASK), "{text}");
        // Settings that are not secret read as they are.
        let text = masked_rows(
            "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'",
        )
        .await;
        assert!(text.contains("8192"), "{text}");
    }
}
