//! Failed statements: the engine's error made readable, with the statement,
//! its script line, a storage or memory hint, and the file a scan could not
//! decode.

use std::sync::Arc;

use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use super::{RunError, StatementFailure, StatementRunner};
use crate::ctas::parse_ctas;
use crate::messages::{clean_message, is_decode_error, memory_hint, script_positions};
use crate::remote_error;
use crate::script::Statement;
use crate::secret;
use crate::storage::{S3Options, explain_storage_error};

impl StatementRunner {
    pub(super) async fn failure(&self, statement: &Statement, err: RunError) -> StatementFailure {
        let message = match err {
            RunError::User(message) => message,
            RunError::Engine(e) => {
                let mut message = self.describe(&e, statement.line);
                if is_decode_error(&message) {
                    let sql = match parse_ctas(&statement.sql) {
                        Ok(Some(ctas)) => ctas.query,
                        _ => statement.sql.clone(),
                    };
                    if let Some(file) = self.find_unreadable_file(&sql).await {
                        message = format!("{message}\n  in file: {file}");
                    }
                }
                message
            }
        };
        let first_line = crate::script::short_first_line(&statement.sql, 80);
        StatementFailure {
            index: statement.index,
            line: statement.line,
            first_line: secret::redact(&first_line).into_owned(),
            message: secret::redact(&message).into_owned(),
        }
    }

    /// Finds the file a failed scan could not decode: reads each file of the
    /// statement's tables on its own, here, until one fails. Engine errors do
    /// not say which file they came from; users need to know.
    async fn find_unreadable_file(&self, sql: &str) -> Option<String> {
        const MAX_FILES: usize = 1000;
        let plan = self.ctx.state().create_logical_plan(sql).await.ok()?;
        let mut tables: Vec<Arc<dyn datafusion::catalog::TableProvider>> = Vec::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Ok(provider) = datafusion::catalog::default_table_source::source_as_provider(&scan.source)
                && provider.downcast_ref::<ListingTable>().is_some()
            {
                tables.push(provider);
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        let local = SessionContext::new_with_state(
            datafusion::execution::SessionStateBuilder::new()
                .with_config(self.ctx.copied_config())
                .with_runtime_env(self.ctx.runtime_env())
                .with_default_features()
                .build(),
        );
        let mut probed = 0;
        for provider in tables {
            let table = provider.downcast_ref::<ListingTable>()?;
            let options = table.options().clone();
            let file_schema = crate::tables::file_schema(table);
            for path in table.table_paths() {
                let store = self.ctx.runtime_env().object_store(path).ok()?;
                let files: Vec<_> = store.list(Some(path.prefix())).try_collect().await.ok()?;
                for meta in files {
                    let key = meta.location.to_string();
                    if !key.ends_with(&options.file_extension) || !path.contains(&meta.location, true) {
                        continue;
                    }
                    probed += 1;
                    if probed > MAX_FILES {
                        return None;
                    }
                    let url = format!("{}{}", path.object_store().as_str(), key);
                    let Ok(file_url) = ListingTableUrl::parse(&url) else {
                        continue;
                    };
                    let single_options = ListingOptions::new(Arc::clone(&options.format))
                        .with_file_extension(options.file_extension.clone());
                    let config = ListingTableConfig::new(file_url)
                        .with_listing_options(single_options)
                        .with_schema(Arc::clone(&file_schema));
                    let Ok(single) = ListingTable::try_new(config) else {
                        continue;
                    };
                    let read = async { local.read_table(Arc::new(single))?.collect().await };
                    if read.await.is_err() {
                        return Some(url);
                    }
                }
            }
        }
        None
    }

    /// Turns an engine error into a message for a person: parser positions are
    /// given in script lines, storage failures get a hint.
    fn describe(&self, err: &DataFusionError, first_line: usize) -> String {
        let mut message = clean_message(&err.to_string());
        if let Some(place) = remote_error::where_failed(err) {
            message = format!("{message} ({place})");
        }
        message = script_positions(&message, first_line);
        let session_s3 = self
            .ctx
            .state()
            .config()
            .options()
            .extensions
            .get::<S3Options>()
            .map(S3Options::settings)
            .unwrap_or_default();
        let effective = self.storage.effective(&session_s3);
        if let Some(hint) = explain_storage_error(&message, &effective) {
            message = format!("{message}\n  hint: {hint}");
        } else if let Some(hint) = memory_hint(&message) {
            message = format!("{message}\n  hint: {hint}");
        }
        message
    }
}
