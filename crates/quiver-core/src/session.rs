//! Session setup: one [`SessionFactory`] builds every DataFusion session of a process.
//!
//! The client that plans a query, the scheduler that turns it into stages and the
//! executors that run its tasks must agree on session options, functions, codecs
//! and storage. Each role builds a `SessionFactory` from its config file at
//! startup and takes its sessions from it:
//!
//! * clients: [`SessionFactory::remote_context`] (a Ballista-backed `SessionContext`),
//! * the scheduler: [`SessionFactory::session_builder`] and [`SessionFactory::config_producer`],
//! * executors: [`SessionFactory::runtime_producer`] and [`SessionFactory::config_producer`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use quiver_core::config::Settings;
//! use quiver_core::session::{JobInfo, SessionFactory};
//! let factory = SessionFactory::new(&Settings::load(None)?)?;
//! let job = JobInfo::new("report", quiver_core::api::JobSource::Dataframe);
//! // Plan with 4 partitions per stage: the cluster's 4 task slots.
//! let ctx = factory.remote_context("http://localhost:50050", &job, &Settings::new(), None, None, Some(4))?;
//! ctx.sql("SELECT 1").await?.show().await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::{ConfigProducer, RuntimeProducer};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::{
    CacheManagerConfig, DEFAULT_METADATA_CACHE_LIMIT, FileMetadataCache,
};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::context::SessionState;
use datafusion::execution::disk_manager::{DiskManager, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;

use crate::api::JobSource;
use crate::client_planner::ClientQueryPlanner;
use crate::config::{ConfigError, Settings};
use crate::optimizer;
use crate::options::{QuiverOptions, quiver_options};
use crate::secret;
use crate::spark_functions::with_spark_functions;
use crate::storage::{LocalPaths, QuiverObjectStoreRegistry, S3Options, StorageContext};

/// Engine settings where Quiver's default differs from Ballista's, each with
/// why. Every session starts from these; the config
/// file, `--conf` and `SET` override them (`SHOW ALL` lists the value in force).
///
/// * `ballista.optimizer.broadcast_join_threshold_rows`: Ballista broadcasts
///   a join's build side when its estimate is under 128 MiB
///   (`broadcast_join_threshold_bytes`) and, for the usual estimate that has
///   a row count but no byte size, under 1 million rows. DataFusion's filter
///   estimates assume 20% of rows pass a predicate it cannot bound, so a
///   selective filter on a large table (TPC-H Q12's 31,000 of 6 million
///   lineitems, estimated at 1.2 million) is shuffled with its whole other
///   side instead of broadcast. 4 million rows, with the byte cap kept,
///   broadcasts those sides; higher limits gained nothing more and
///   broadcast larger sides (the A/B is in `benches/README.md`).
///
/// Two more give a Spark SQL user Spark's answer where DataFusion's differs
/// silently (`tests/slt/spark_habits.slt`; the README lists the rest):
///
/// * `datafusion.sql_parser.enable_subquery_sort_elimination`: DataFusion
///   drops the `ORDER BY` of a subquery, so `SELECT * FROM (SELECT ... ORDER
///   BY x DESC) LIMIT 10` returns ten arbitrary rows; Spark, PostgreSQL and
///   DuckDB return the top ten. Off, the sort is kept and the limit above
///   turns it into a top-N.
/// * `datafusion.sql_parser.default_null_ordering`: Spark sorts NULLs first
///   in ascending and last in descending order (`nulls_min`); DataFusion
///   the other way round (`nulls_max`, PostgreSQL's rule).
pub const ENGINE_DEFAULTS: &[(&str, &str)] = &[
    ("ballista.optimizer.broadcast_join_threshold_rows", "4000000"),
    ("datafusion.sql_parser.enable_subquery_sort_elimination", "false"),
    ("datafusion.sql_parser.default_null_ordering", "nulls_min"),
];

/// `builder` with Quiver's analyzer rules after the engine's
/// ([`optimizer::analyzer_rules`]; `with_analyzer_rules` would replace them).
fn with_analyzer_rules(builder: SessionStateBuilder) -> SessionStateBuilder {
    optimizer::analyzer_rules()
        .into_iter()
        .fold(builder, SessionStateBuilder::with_analyzer_rule)
}

/// The scheduler's session builder type (Ballista's `SessionBuilder`).
pub type SessionBuilder = Arc<dyn Fn(SessionConfig) -> Result<SessionState> + Send + Sync>;

/// Which Quiver job a query belongs to; travels with every query as `quiver.*` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// The job's name, as shown in the UI (also Ballista's `ballista.job.name`).
    pub name: String,
    /// Where the job came from.
    pub source: JobSource,
    /// The job id assigned by the scheduler's job service, when there is one.
    pub job_id: Option<String>,
}

impl JobInfo {
    /// A job named `name` from `source`, not yet known to the job service.
    pub fn new(name: impl Into<String>, source: JobSource) -> Self {
        Self {
            name: name.into(),
            source,
            job_id: None,
        }
    }
}

/// Builds the sessions of one process; see the [module docs](self).
#[derive(Clone)]
pub struct SessionFactory {
    storage: Arc<StorageContext>,
    defaults: Settings,
    logical_codec: Arc<dyn LogicalExtensionCodec>,
    physical_codec: Arc<dyn PhysicalExtensionCodec>,
}

impl fmt::Debug for SessionFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionFactory")
            .field("storage", &self.storage)
            .field("defaults", &self.defaults)
            .finish()
    }
}

impl SessionFactory {
    /// A factory for a process whose config file holds `config_file`.
    ///
    /// `s3.*` keys become this process's storage defaults; every other key is a
    /// session default, checked here so a typo fails at startup.
    pub fn new(config_file: &Settings) -> std::result::Result<Self, ConfigError> {
        Self::with_local_paths(config_file, LocalPaths::Any)
    }

    /// [`SessionFactory::new`] for a process whose jobs may touch only the
    /// local files `local_paths` allows (a cluster's scheduler and executors).
    pub fn with_local_paths(config_file: &Settings, local_paths: LocalPaths) -> std::result::Result<Self, ConfigError> {
        crate::delta::register();
        let storage = Arc::new(StorageContext::new(config_file)?.with_local_paths(local_paths));
        Self::with_storage(storage, config_file.without_section("s3"))
    }

    /// A factory with the given storage and session defaults.
    pub fn with_storage(storage: Arc<StorageContext>, defaults: Settings) -> std::result::Result<Self, ConfigError> {
        let factory = Self {
            storage,
            defaults: Settings::new(),
            logical_codec: Arc::new(crate::codec::QuiverLogicalCodec::default()),
            physical_codec: Arc::new(crate::codec::QuiverPhysicalCodec::default()),
        };
        let mut probe = factory.base_config();
        apply_settings(&mut probe, &defaults)?;
        Ok(Self { defaults, ..factory })
    }

    /// This process's storage.
    pub fn storage(&self) -> &Arc<StorageContext> {
        &self.storage
    }

    /// The logical plan codec every role must share.
    pub fn logical_codec(&self) -> Arc<dyn LogicalExtensionCodec> {
        Arc::clone(&self.logical_codec)
    }

    /// The physical plan codec every role must share.
    pub fn physical_codec(&self) -> Arc<dyn PhysicalExtensionCodec> {
        Arc::clone(&self.physical_codec)
    }

    /// The functions an executor resolves plans with: every function a
    /// Quiver session plans with. Ballista's own registry lacks DataFusion's
    /// nested (array, map, struct) functions, so a plan calling
    /// `array_sort` or `make_array` could not be decoded on an executor.
    pub fn function_registry(&self) -> Arc<BallistaFunctionRegistry> {
        let state = SessionStateBuilder::new().with_default_features().build();
        let mut registry = BallistaFunctionRegistry::default();
        registry.scalar_functions.extend(state.scalar_functions().clone());
        registry.aggregate_functions.extend(state.aggregate_functions().clone());
        registry.window_functions.extend(state.window_functions().clone());
        Arc::new(registry)
    }

    /// A session config with Quiver's extensions, codecs and this process's defaults.
    pub fn base_config(&self) -> SessionConfig {
        let mut config = SessionConfig::new_with_ballista()
            .with_option_extension(S3Options::default())
            .with_option_extension(QuiverOptions::default())
            .with_information_schema(true)
            .with_ballista_logical_extension_codec(Arc::clone(&self.logical_codec))
            .with_ballista_physical_extension_codec(Arc::clone(&self.physical_codec))
            // Operators that run on executors (Delta writes) reach storage through it.
            .with_extension(Arc::clone(&self.storage));
        for (key, value) in ENGINE_DEFAULTS {
            // Keys and values are checked by a unit test.
            let _ = config.options_mut().set(key, value);
        }
        // Checked in `with_storage`; cannot fail here.
        let _ = apply_settings(&mut config, &self.defaults);
        config
    }

    /// A runtime for a session: object stores resolved through Quiver's registry.
    pub fn runtime_env(&self, config: &SessionConfig, temp_dir: Option<PathBuf>) -> Result<Arc<RuntimeEnv>> {
        let spill = temp_dir.map(spill_to).transpose()?;
        self.runtime_env_with(config, spill, None)
    }

    /// [`Self::runtime_env`] that spills through `spill` (DataFusion's
    /// default disk manager when `None`) and whose Parquet footer cache is
    /// `footers` when given.
    fn runtime_env_with(
        &self,
        config: &SessionConfig,
        spill: Option<Arc<DiskManager>>,
        footers: Option<Arc<FileMetadataCache>>,
    ) -> Result<Arc<RuntimeEnv>> {
        let options = config
            .options()
            .extensions
            .get::<S3Options>()
            .cloned()
            .unwrap_or_default();
        let registry = QuiverObjectStoreRegistry::new(options, Arc::clone(&self.storage));
        let mut builder = RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(registry));
        builder.disk_manager = spill;
        if let Some(footers) = footers {
            builder = builder.with_cache_manager(CacheManagerConfig::default().with_file_metadata_cache(Some(footers)));
        }
        Ok(Arc::new(builder.build()?))
    }

    /// A complete session state for `config`, as the scheduler plans with.
    pub fn session_state(&self, config: SessionConfig) -> Result<SessionState> {
        register_session_secrets(&config);
        let runtime = self.runtime_env(&config, None)?;
        // No Spark functions here, whatever the session's settings: the
        // plan's calls of them are marked and decoded from the library, and
        // a call without the mark is DataFusion's function of that name.
        let builder = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(runtime);
        Ok(with_analyzer_rules(builder)
            // Ballista's list replaces DataFusion's; Quiver's rules follow it.
            .with_optimizer_rules(
                ballista_core::optimizer::ballista_default_optimizer_rules()
                    .into_iter()
                    .chain(optimizer::rules())
                    .collect(),
            )
            .with_scalar_functions(ballista_core::extension::ballista_scalar_functions())
            .with_aggregate_functions(ballista_core::extension::ballista_aggregate_functions())
            .with_window_functions(ballista_core::extension::ballista_window_functions())
            .with_query_planner(Arc::new(crate::scheduler_planner::SchedulerQueryPlanner))
            .build())
    }

    /// The scheduler's session builder.
    pub fn session_builder(&self) -> SessionBuilder {
        let factory = self.clone();
        Arc::new(move |config| factory.session_state(config))
    }

    /// The config producer shared by scheduler and executors.
    pub fn config_producer(&self) -> ConfigProducer {
        let factory = self.clone();
        Arc::new(move || factory.base_config())
    }

    /// The executors' runtime producer; spill files go under `work_dir`.
    ///
    /// Ballista shares a runtime between the tasks of one session, so a
    /// Parquet file's footer (its schema, row groups and statistics) is read
    /// and decoded once per job and executor. Every runtime this producer
    /// makes shares one footer cache instead, so later jobs over the same
    /// files (a scheduled DAG, a dashboard, each `quiver sql` run) skip that
    /// work, as one long-lived DataFusion process does. An entry is used only
    /// while the file has the size and modification time it was read with,
    /// and the cache holds at most DataFusion's default of 50 MiB, least
    /// recently used first out. `quiver.shared_footer_cache = false` gives a
    /// session a cache of its own.
    ///
    /// They also share one disk manager, made on the first call: Ballista
    /// asks for a runtime at every task launch just to decode the task's
    /// plan, and a disk manager over `work_dir` creates a directory there when
    /// built and removes it when dropped. Everything else (object store
    /// registry, file listing and statistics caches) is made per call, as
    /// before, so nothing a session lists or sets reaches another session.
    pub fn runtime_producer(&self, work_dir: Option<PathBuf>) -> RuntimeProducer {
        let factory = self.clone();
        let footers: Arc<FileMetadataCache> =
            Arc::new(DefaultCache::new(DEFAULT_METADATA_CACHE_LIMIT).with_name("QuiverExecutorFooterCache"));
        let spill = SharedDiskManager::new(work_dir);
        Arc::new(move |config: &SessionConfig| {
            register_session_secrets(config);
            let shared = config
                .options()
                .extensions
                .get::<QuiverOptions>()
                .is_none_or(|options| options.shared_footer_cache);
            factory.runtime_env_with(config, spill.get()?, shared.then(|| Arc::clone(&footers)))
        })
    }

    /// A session whose queries run on the cluster at `scheduler_url`
    /// (`http://host:port`), with `settings` (from `--conf`) applied. `token`
    /// is sent with every call when the scheduler requires one (result
    /// fetches carry a proof of it, [`crate::proof`]); result fetches also
    /// carry `fetch_proof`, which the scheduler gave the job (its session)
    /// and without which it serves none of the job's results.
    ///
    /// `parallelism` is the cluster's task slot count when known: stages are
    /// then planned with that many partitions
    /// (`datafusion.execution.target_partitions`), as Spark's default
    /// parallelism follows the cluster's cores, instead of Ballista's fixed
    /// 16. With a few slots, 16 partitions mean 16 tasks per stage, each a
    /// scheduling round trip and a set of shuffle files, for little work
    /// each. A `target_partitions` in `settings` or a later `SET` wins.
    pub fn remote_context(
        &self,
        scheduler_url: &str,
        job: &JobInfo,
        settings: &Settings,
        token: Option<&str>,
        fetch_proof: Option<&str>,
        parallelism: Option<usize>,
    ) -> std::result::Result<SessionContext, SessionError> {
        let mut config = self.base_config().with_ballista_job_name(&job.name);
        if let Some(partitions) = parallelism.filter(|n| *n > 0) {
            config = config.with_target_partitions(partitions);
        }
        // A scheduler at https://... serves TLS only: the session dials it
        // (and fetches results from it) with the roots of QUIVER_CA_FILE.
        let tls = match scheduler_url.starts_with("https://") {
            true => Some(
                crate::tls::ClientTls::from_env()
                    .map_err(SessionError::Config)?
                    .endpoint_override(false),
            ),
            false => None,
        };
        config = config.with_ballista_use_tls(tls.is_some());
        if let Some(token) = token {
            config = config.with_ballista_grpc_metadata(std::collections::HashMap::from([(
                "authorization".to_owned(),
                format!("Bearer {token}"),
            )]));
        }
        // Result fetches through the scheduler's Flight proxy carry no
        // metadata, only what the endpoint sets: a proof of the token, and
        // the proof that opens this job's results.
        let token_proof = token.map(|t| crate::proof::Proof::derive(crate::proof::ProofKind::ResultFetch, t));
        let fetch = (token_proof.is_some() || fetch_proof.is_some()).then(|| {
            crate::proof::user_agent_override(crate::proof::fetch_user_agent(token_proof.as_ref(), fetch_proof))
        });
        if let Some(shape) = crate::tls::chain(tls, fetch) {
            config = config.with_ballista_override_create_grpc_client_endpoint(shape);
        }
        config
            .options_mut()
            .set("quiver.job_source", job.source.as_str())
            .map_err(SessionError::Engine)?;
        if let Some(id) = &job.job_id {
            config
                .options_mut()
                .set("quiver.job_id", id)
                .map_err(SessionError::Engine)?;
        }
        let scheduler_url = scheduler_url.to_owned();
        self.context(config, settings, move |state| {
            let state = state.upgrade_for_ballista(scheduler_url)?;
            let planner = Arc::new(ClientQueryPlanner::new(Arc::clone(state.query_planner())));
            Ok(SessionStateBuilder::new_from_existing(state)
                .with_query_planner(planner)
                .build())
        })
    }

    /// A single-process DataFusion session (no cluster), with the same storage.
    pub fn local_context(&self, settings: &Settings) -> std::result::Result<SessionContext, SessionError> {
        // Executors wrap their tasks' Parquet readers themselves.
        self.context(self.base_config(), settings, |state| {
            Ok(SessionStateBuilder::new_from_existing(state)
                .with_physical_optimizer_rule(Arc::new(crate::storage::remote_parquet::RemoteParquet))
                .build())
        })
    }

    fn context(
        &self,
        mut config: SessionConfig,
        settings: &Settings,
        finish: impl FnOnce(SessionState) -> Result<SessionState>,
    ) -> std::result::Result<SessionContext, SessionError> {
        apply_settings(&mut config, settings)?;
        let runtime = self.runtime_env(&config, None).map_err(SessionError::Engine)?;
        let spark = quiver_options(&config).spark_functions;
        let builder = with_analyzer_rules(
            SessionStateBuilder::new()
                .with_default_features()
                .with_config(config)
                .with_runtime_env(runtime),
        );
        // Appended to DataFusion's own rules (`with_optimizer_rules` would
        // replace them).
        let state = optimizer::rules()
            .into_iter()
            .fold(builder, SessionStateBuilder::with_optimizer_rule)
            .build();
        let state = finish(state).map_err(SessionError::Engine)?;
        // Last: Ballista's upgrade replaces the function lists with its own.
        let state = match spark {
            true => with_spark_functions(SessionStateBuilder::new_from_existing(state)).build(),
            false => state,
        };
        let ctx = SessionContext::new_with_state(state);
        crate::tables::install(&ctx);
        Ok(ctx)
    }
}

/// Why a session could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A setting was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The engine refused the session.
    #[error("cannot set up the session: {0}")]
    Engine(DataFusionError),
}

/// Applies `settings` to `config`, refusing unknown keys and bad values.
pub fn apply_settings(config: &mut SessionConfig, settings: &Settings) -> std::result::Result<(), ConfigError> {
    for (key, value) in settings.iter() {
        config.options_mut().set(key, value).map_err(|e| {
            let message = secret::redact(&e.to_string()).into_owned();
            if message.contains("not found")
                || message.contains("Could not find config namespace")
                || message.contains("unknown setting")
            {
                ConfigError::UnknownKey {
                    key: key.to_owned(),
                    hint:
                        "settings are datafusion.*, ballista.*, s3.* or quiver.* keys (see `SHOW ALL` in `quiver sql`)"
                            .into(),
                }
            } else {
                ConfigError::InvalidValue {
                    key: key.to_owned(),
                    message,
                }
            }
        })?;
    }
    Ok(())
}

fn register_session_secrets(config: &SessionConfig) {
    // Only `s3.*` options hold secrets (`secret_settings_are_s3_options`
    // checks every key), so this does not format every setting of the
    // session, which it is called for at each task launch.
    if let Some(options) = config.options().extensions.get::<S3Options>() {
        options.settings().secrets().for_each(secret::register);
    }
}

/// A disk manager that spills into a new directory under `dir`, made now
/// and removed when the manager is dropped.
fn spill_to(dir: PathBuf) -> Result<Arc<DiskManager>> {
    let manager = DiskManager::builder()
        .with_mode(DiskManagerMode::Directories(vec![dir]))
        .build()?;
    Ok(Arc::new(manager))
}

/// The disk manager of every runtime one executor producer makes, built on
/// first use. Without a `dir`, runtimes get DataFusion's default (the OS
/// temp dir, created lazily).
struct SharedDiskManager {
    dir: Option<PathBuf>,
    built: parking_lot::Mutex<Option<Arc<DiskManager>>>,
}

impl SharedDiskManager {
    fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            built: parking_lot::Mutex::new(None),
        }
    }

    fn get(&self) -> Result<Option<Arc<DiskManager>>> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let mut built = self.built.lock();
        if built.is_none() {
            *built = Some(spill_to(dir.clone())?);
        }
        Ok(built.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::quiver_options;
    use crate::storage::S3Settings;

    fn factory() -> SessionFactory {
        SessionFactory::with_storage(
            Arc::new(StorageContext::with_defaults(S3Settings::default())),
            Settings::new(),
        )
        .unwrap()
    }

    fn value_of(config: &SessionConfig, key: &str) -> Option<String> {
        config.options().entries().into_iter().find(|e| e.key == key)?.value
    }

    #[test]
    fn executors_know_every_function_a_session_plans_with() {
        let factory = SessionFactory::new(&Settings::new()).unwrap();
        let registry = factory.function_registry();
        for name in ["array_sort", "make_array", "named_struct", "abs", "date_trunc"] {
            assert!(registry.scalar_functions.contains_key(name), "{name} is missing");
        }
        assert!(registry.aggregate_functions.contains_key("array_agg"));
        assert!(registry.window_functions.contains_key("row_number"));
    }

    #[test]
    fn engine_defaults_apply_and_settings_override_them() {
        let config = factory().base_config();
        for (key, value) in ENGINE_DEFAULTS {
            let mut probe = SessionConfig::new_with_ballista();
            probe.options_mut().set(key, value).expect("a valid engine default");
            assert_eq!(value_of(&config, key).as_deref(), Some(*value), "{key}");
        }
        let key = "ballista.optimizer.broadcast_join_threshold_rows";
        let overridden = SessionFactory::with_storage(
            Arc::new(StorageContext::with_defaults(S3Settings::default())),
            Settings::parse_pairs([format!("{key}=1000")]).unwrap(),
        )
        .unwrap()
        .base_config();
        assert_eq!(value_of(&overridden, key).as_deref(), Some("1000"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let mut config = factory().base_config();
        let err = apply_settings(
            &mut config,
            &Settings::parse_pairs(["datafusion.execution.nope=1"]).unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");
        let err = apply_settings(
            &mut config,
            &Settings::parse_pairs(["datafusion.execution.batch_size=many"]).unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::InvalidValue { .. }), "{err}");
        let err = apply_settings(&mut config, &Settings::parse_pairs(["quiver.nope=1"]).unwrap()).unwrap_err();
        assert!(err.to_string().contains("quiver.nope"), "{err}");
    }

    #[test]
    fn defaults_from_the_config_file_are_validated_at_startup() {
        let storage = Arc::new(StorageContext::with_defaults(S3Settings::default()));
        let bad = Settings::parse_pairs(["datafusion.nonsense=1"]).unwrap();
        assert!(SessionFactory::with_storage(Arc::clone(&storage), bad).is_err());
        let good = Settings::parse_pairs(["datafusion.execution.batch_size=1024"]).unwrap();
        let f = SessionFactory::with_storage(storage, good).unwrap();
        assert_eq!(f.base_config().batch_size(), 1024);
    }

    #[test]
    fn quiver_options_round_trip_through_entries() {
        let mut config = factory().base_config();
        config.options_mut().set("quiver.job_id", "j-1").unwrap();
        config.options_mut().set("quiver.job_source", "shell").unwrap();
        config
            .options_mut()
            .set("quiver.delta_retention_check", "false")
            .unwrap();
        config
            .options_mut()
            .set("quiver.join_filtered_dimensions_first", "FALSE")
            .unwrap();
        config.options_mut().set("quiver.semi_join_reduction", "false").unwrap();
        config.options_mut().set("quiver.shared_footer_cache", "false").unwrap();
        let pairs: Vec<_> = config
            .options()
            .entries()
            .into_iter()
            .filter(|e| e.key.starts_with("quiver."))
            .collect();
        let mut other = factory().base_config();
        for e in pairs {
            if let Some(v) = e.value {
                other.options_mut().set(&e.key, &v).unwrap();
            }
        }
        let q = quiver_options(&other);
        assert_eq!(q.job_id.as_deref(), Some("j-1"));
        assert_eq!(q.job_source, Some(JobSource::Shell));
        assert!(!q.delta_retention_check);
        assert!(!q.join_filtered_dimensions_first);
        assert!(!q.semi_join_reduction);
        assert!(!q.shared_footer_cache);
        let err = other
            .options_mut()
            .set("quiver.delta_retention_check", "maybe")
            .unwrap_err();
        assert!(err.to_string().contains("'maybe' is not true or false"), "{err}");
    }

    /// Single-process sessions read Parquet from object stores as executors do.
    #[test]
    fn local_sessions_read_remote_parquet_as_executors_do() {
        let ctx = factory().local_context(&Settings::new()).unwrap();
        let rules: Vec<_> = ctx
            .state()
            .physical_optimizers()
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        assert_eq!(rules.last().map(String::as_str), Some("remote_parquet"), "{rules:?}");
    }

    /// A job reading a Parquet file through one executor runtime leaves its
    /// footer for the next job's runtime, unless that job opts out.
    #[tokio::test]
    async fn executor_runtimes_share_parquet_footers_across_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.parquet");
        let writer = factory().local_context(&Settings::new()).unwrap();
        writer
            .sql(&format!(
                "COPY (SELECT 1 AS a) TO '{}' STORED AS PARQUET",
                file.display()
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();

        let producer = factory().runtime_producer(None);
        let first = producer(&factory().base_config()).unwrap();
        let job = SessionContext::new_with_config_rt(factory().base_config(), Arc::clone(&first));
        job.register_parquet("t", file.display().to_string(), Default::default())
            .await
            .unwrap();
        let rows = job
            .sql("SELECT count(*) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(rows[0].num_rows(), 1);
        assert!(!first.cache_manager.get_file_metadata_cache().is_empty());

        let next = producer(&factory().base_config()).unwrap();
        assert_eq!(next.cache_manager.get_file_metadata_cache().len(), 1);
        let mut own = factory().base_config();
        own.options_mut().set("quiver.shared_footer_cache", "false").unwrap();
        let separate = producer(&own).unwrap();
        assert!(separate.cache_manager.get_file_metadata_cache().is_empty());
    }

    /// `register_session_secrets` reads only the `s3.*` options; a secret
    /// setting anywhere else must be registered there too.
    #[test]
    fn secret_settings_are_s3_options() {
        let mut secret_keys: Vec<String> = factory()
            .base_config()
            .options()
            .entries()
            .into_iter()
            .map(|entry| entry.key)
            .filter(|key| secret::is_secret_key(key))
            .collect();
        secret_keys.sort();
        assert_eq!(secret_keys, ["s3.secret_access_key", "s3.session_token"]);
    }

    /// Runtimes for task launches share one spill directory under the work
    /// dir, made once, and nothing a session caches.
    #[test]
    fn executor_runtimes_share_one_disk_manager_and_no_listings() {
        let work = tempfile::tempdir().unwrap();
        let producer = factory().runtime_producer(Some(work.path().to_path_buf()));
        let first = producer(&factory().base_config()).unwrap();
        let second = producer(&factory().base_config()).unwrap();
        assert!(Arc::ptr_eq(&first.disk_manager, &second.disk_manager));
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 1);
        let spill = first.disk_manager.create_tmp_file("test").unwrap();
        assert!(spill.path().is_some_and(|path| path.starts_with(work.path())));

        let listings = |rt: &RuntimeEnv| rt.cache_manager.get_list_files_cache().unwrap();
        assert!(!Arc::ptr_eq(&listings(&first), &listings(&second)));
        drop((first, second, spill));
        let third = producer(&factory().base_config()).unwrap();
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 1);
        drop(third);
    }

    #[tokio::test]
    async fn spark_functions_come_with_the_setting() {
        let plain = factory().local_context(&Settings::new()).unwrap();
        assert!(plain.sql("SELECT sha2('Spark', 256)").await.is_err());
        let mut settings = Settings::new();
        settings.set("quiver.spark_functions", "true");
        let spark = factory().local_context(&settings).unwrap();
        let batches = spark
            .sql("SELECT sha2('Spark', 256)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(batches[0].num_rows(), 1);
    }

    #[tokio::test]
    async fn local_context_runs_sql() {
        let ctx = factory().local_context(&Settings::new()).unwrap();
        let batches = ctx.sql("SELECT 1 + 1 AS two").await.unwrap().collect().await.unwrap();
        assert_eq!(batches[0].num_rows(), 1);
    }

    #[test]
    fn sessions_run_the_engines_rules_and_then_quivers() {
        let local = factory().local_context(&Settings::new()).unwrap().state();
        let scheduler = factory().session_state(factory().base_config()).unwrap();
        for rules in [local.optimizer().rules.clone(), scheduler.optimizer().rules.clone()] {
            let names: Vec<&str> = rules.iter().map(|r| r.name()).collect();
            let position = |name: &str| names.iter().position(|n| *n == name);
            let engine = position("decorrelate_predicate_subquery").expect("DataFusion's rules");
            let quiver: Vec<_> = optimizer::rules().iter().map(|r| position(r.name())).collect();
            assert!(quiver.iter().all(|p| p.is_some_and(|p| p > engine)), "{names:?}");
        }
    }
}
