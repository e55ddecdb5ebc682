//! Delta Lake tables, read and written by the cluster.
//!
//! deltalake 1.1 reads tables through its own scan operator, which has no
//! physical codec, so a plan containing it cannot leave the process that
//! planned it. Quiver reads a Delta table differently: [`DeltaTable`] replays
//! the log (with deltalake) where the query is planned, picks the live files,
//! skips files by partition values and min/max statistics, and hands them to
//! DataFusion's own Parquet scan — an operator every process can decode. So
//! the files of one table are read by many tasks on many executors.
//!
//! Writes go the same way: executors write Parquet files ([`write`](mod@write)'s
//! `DeltaWriteExec`, one per input partition) and one final task commits them
//! to the log in a single atomic commit (`DeltaCommitExec`). A job that fails
//! or is cancelled before that task leaves the table as it was.
//!
//! Commits rely on the object store's conditional put (`If-None-Match`), which
//! AWS S3 and MinIO support: two writers racing for the same log version get
//! one success and one retry, never a corrupt log.
//!
//! What Quiver refuses to read, rather than return wrong rows: tables whose
//! files carry deletion vectors, tables with column mapping, and any reader
//! feature it does not know.

pub mod sql;
pub mod table;
pub mod write;

use std::collections::HashMap;
use std::sync::Once;

use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionConfig;
use deltalake::DeltaTableBuilder;
use url::Url;

pub use table::{DeltaTable, DeltaTableFactory, TableVersion};

use crate::storage::{S3Options, StorageContext};

/// Registers deltalake's S3 handlers (once per process).
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| deltalake::aws::register_handlers(None));
}

/// Turns a table location as written by a user into a URL with a trailing
/// slash: `s3://b/t`, `/data/t` and `file:///data/t` all work.
pub fn table_url(location: &str) -> Result<Url> {
    let location = location.trim();
    let mut url = match Url::parse(location) {
        Ok(url) if url.scheme().len() > 1 => url,
        _ => {
            let path = std::path::absolute(location)
                .map_err(|e| DataFusionError::Plan(format!("Delta table location '{location}': {e}")))?;
            Url::from_directory_path(&path)
                .map_err(|_| DataFusionError::Plan(format!("Delta table location '{location}' is not a valid path")))?
        }
    };
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

/// The storage options deltalake needs to reach the table at `url` in
/// `config`'s session, from the process's [`StorageContext`] and the session's
/// `s3.*` settings; refused when `url` is a local path the process's
/// [`LocalPaths`](crate::storage::LocalPaths) policy does not allow.
pub(crate) fn storage_options(config: &SessionConfig, url: &Url) -> Result<HashMap<String, String>> {
    let session = config
        .options()
        .extensions
        .get::<S3Options>()
        .map(S3Options::settings)
        .unwrap_or_default();
    match config.get_extension::<StorageContext>() {
        Some(storage) => {
            storage.local_paths().check_url(url)?;
            Ok(storage.delta_options(&session))
        }
        None => Ok(StorageContext::default().delta_options(&session)),
    }
}

/// Opens the Delta log at `url` as of `version`.
pub(crate) async fn open(
    url: &Url,
    version: &TableVersion,
    options: HashMap<String, String>,
) -> Result<deltalake::DeltaTable> {
    register();
    let mut builder = DeltaTableBuilder::from_url(url.clone())
        .map_err(delta_err)?
        .with_storage_options(options);
    builder = match version {
        TableVersion::Latest => builder,
        TableVersion::Version(v) => builder.with_version((*v).max(0) as u64),
        TableVersion::Timestamp(t) => builder.with_timestamp(*t),
    };
    builder.load().await.map_err(|e| match e {
        deltalake::DeltaTableError::NotATable(_) => DataFusionError::Plan(format!(
            "{url} is not a Delta table (no _delta_log): create it with CREATE TABLE ... USING delta LOCATION '{url}' AS SELECT ..."
        )),
        other => delta_err(other),
    })
}

/// A deltalake error as an engine error, secrets scrubbed.
pub(crate) fn delta_err(e: deltalake::DeltaTableError) -> DataFusionError {
    DataFusionError::External(Box::new(std::io::Error::other(
        crate::secret::redact(&e.to_string()).into_owned(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::runner::{OutputKind, StatementRunner};
    use crate::script::Script;
    use crate::session::SessionFactory;
    use crate::storage::S3Settings;

    async fn run_all(runner: &StatementRunner, text: &str) -> Vec<crate::runner::StatementOutput> {
        let script = Script::parse(text, &Default::default()).unwrap();
        let mut out = vec![];
        for s in &script.statements {
            out.push(runner.run(s).await.unwrap_or_else(|e| panic!("{e}")));
        }
        out
    }

    fn text(out: &crate::runner::StatementOutput) -> String {
        arrow::util::pretty::pretty_format_batches(&out.batches)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn a_table_is_created_appended_filtered_and_read_in_the_past() {
        let dir = tempfile::tempdir().unwrap();
        let storage = std::sync::Arc::new(StorageContext::with_defaults(S3Settings::default()));
        let factory = SessionFactory::with_storage(std::sync::Arc::clone(&storage), Settings::new()).unwrap();
        let runner = StatementRunner::new(factory.local_context(&Settings::new()).unwrap(), storage);
        let loc = dir.path().join("t");
        let out = run_all(
            &runner,
            &format!(
                "CREATE TABLE t USING delta PARTITIONED BY (k) LOCATION '{}' AS
                   SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'a')) AS v(x, k);
                 INSERT INTO t VALUES (4, 'b');
                 SELECT k, count(*) AS n, sum(x) AS s FROM t WHERE k = 'b' GROUP BY k;
                 SELECT count(*) AS n FROM t VERSION AS OF 0;",
                loc.display()
            ),
        )
        .await;
        assert!(
            matches!(out[0].kind, OutputKind::Written { rows: 3, .. }),
            "{:?}",
            out[0].kind
        );
        assert!(
            matches!(out[1].kind, OutputKind::Written { rows: 1, .. }),
            "{:?}",
            out[1].kind
        );
        assert!(text(&out[2]).contains("| b | 2 | 6 |"), "{}", text(&out[2]));
        assert!(text(&out[3]).contains("| 3 |"), "{}", text(&out[3]));
        assert!(loc.join("_delta_log").join("00000000000000000001.json").exists());
        assert!(loc.join("k=a").is_dir(), "hive-style partition directories");
    }

    #[test]
    fn locations_become_directory_urls() {
        assert_eq!(table_url("s3://b/t").unwrap().as_str(), "s3://b/t/");
        assert_eq!(table_url("s3://b/t/").unwrap().as_str(), "s3://b/t/");
        assert_eq!(table_url("/data/t").unwrap().as_str(), "file:///data/t/");
    }
}
