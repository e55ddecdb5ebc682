//! Storage: the one place where S3 configuration is read and object stores are built.
//!
//! Scheduler, executors and clients all resolve `s3://bucket/key` through a
//! [`QuiverObjectStoreRegistry`], so a path means the same thing in every process.
//!
//! # Where settings come from
//!
//! A store's [`S3Settings`] are resolved per key, first match wins:
//!
//! 1. the job's session: `SET s3.endpoint = '...'`, `--conf s3.endpoint=...`, REST
//!    `conf`. These travel with the job to the scheduler and every executor.
//! 2. this process's config file (`s3.*` keys).
//! 3. this process's environment, by the AWS conventions: `AWS_ACCESS_KEY_ID`,
//!    `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`
//!    (or `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`),
//!    `AWS_ALLOW_HTTP`, `AWS_S3_ADDRESSING_STYLE` (`path` or `virtual`).
//!
//! Process-level settings (2 and 3) stay in their process: a laptop that reaches
//! MinIO as `localhost:9000` and executors that reach it as `minio:9000` each use
//! their own endpoint. Credentials stay with their endpoint: a job that names
//! another endpoint and no credentials sends its requests unsigned.
//!
//! # Local files
//!
//! `file://` URLs and plain paths go through the process's [`LocalPaths`]
//! policy: any path in embedded mode and the CLI, only the directories given
//! to `--allow-local-paths` in a cluster's scheduler and executors.
//!
//! When an endpoint is set, requests use path-style addressing (what MinIO
//! expects) and plain `http://` is allowed if the endpoint says so. Without
//! credentials, requests are sent unsigned, for public buckets.
//!
//! # Reuse
//!
//! Stores are built once per bucket and effective settings and shared by every
//! session of the process ([`StorageContext`]).
//!
//! # Damaged files
//!
//! Every store the registry hands out (built here, by `LocalPaths`, or
//! registered) refuses a Parquet footer that claims
//! more metadata than its file holds ([`footer_check`]), which would panic
//! the Parquet reader.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use parking_lot::{Mutex, RwLock};
use url::Url;

use crate::config::{ConfigError, Settings, parse_bool};
use crate::secret;
pub(crate) use footer_check::FooterCheck;

mod bucket;
pub mod footer_check;
mod local;
pub mod remote_parquet;

pub use bucket::{BucketCreated, BucketError, create_bucket};
pub use local::LocalPaths;

crate::settings_struct! {
    /// Storage settings for S3-compatible endpoints (MinIO, AWS S3, ...): the
    /// `s3.*` keys.
    ///
    /// Every field is optional; unset fields fall back as described in the
    /// [module docs](self).
    #[derive(Eq, Hash)]
    pub struct S3Settings prefix "s3" {
        /// S3 access key id (env AWS_ACCESS_KEY_ID)
        access_key_id: Option<String> = None,
        /// S3 secret access key (env AWS_SECRET_ACCESS_KEY); never shown
        secret_access_key: Option<String> = None,
        /// S3 session token for temporary credentials (env AWS_SESSION_TOKEN); never shown
        session_token: Option<String> = None,
        /// S3 region (env AWS_REGION); us-east-1 when unset
        region: Option<String> = None,
        /// S3 endpoint URL, e.g. http://minio:9000 (env AWS_ENDPOINT_URL)
        endpoint: Option<String> = None,
        /// allow plain http; true by default for http:// endpoints (env AWS_ALLOW_HTTP)
        allow_http: Option<bool> = None,
        /// path-style addressing; true by default when an endpoint is set (env AWS_S3_ADDRESSING_STYLE)
        path_style: Option<bool> = None,
    }
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("S3Settings");
        for (key, value) in self.values() {
            let shown = value.map(|v| secret::display_value(key, &v).into_owned());
            out.field(key, &shown);
        }
        out.finish()
    }
}

impl S3Settings {
    /// The secret values among these settings (secret access key, session token).
    ///
    /// ```
    /// let mut s3 = quiver_core::storage::S3Settings::default();
    /// s3.set("secret_access_key", "s3cr3t-value").unwrap();
    /// s3.set("region", "eu-west-1").unwrap();
    /// assert_eq!(s3.secrets().collect::<Vec<_>>(), ["s3cr3t-value"]);
    /// ```
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        [&self.secret_access_key, &self.session_token]
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Sets one key (without the `s3.` prefix); secret values are registered
    /// for scrubbing and the endpoint must be a URL.
    pub fn set(&mut self, key: &str, value: &str) -> std::result::Result<(), ConfigError> {
        if secret::is_secret_key(key) {
            secret::register(value);
        }
        if key == "endpoint" {
            let endpoint = value.trim();
            if !endpoint.is_empty() {
                let url = Url::parse(endpoint).map_err(|e| ConfigError::InvalidValue {
                    key: "s3.endpoint".into(),
                    message: format!("'{endpoint}' is not a URL ({e}); write it as http://host:port"),
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(ConfigError::InvalidValue {
                        key: "s3.endpoint".into(),
                        message: format!("'{endpoint}' must start with http:// or https://"),
                    });
                }
            }
        }
        self.set_key(key, value)
    }

    /// Reads the `s3.*` section of `settings` (keys without the prefix).
    pub fn from_section(section: &Settings) -> std::result::Result<Self, ConfigError> {
        let mut s = Self::default();
        for (key, value) in section.iter() {
            s.set(key, value)?;
        }
        Ok(s)
    }

    /// Reads the AWS environment variables of this process.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the AWS variables through `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| lookup(n))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let secret_access_key = get(&["AWS_SECRET_ACCESS_KEY"]);
        let session_token = get(&["AWS_SESSION_TOKEN"]);
        for value in secret_access_key.iter().chain(session_token.iter()) {
            secret::register(value);
        }
        Self {
            access_key_id: get(&["AWS_ACCESS_KEY_ID"]),
            secret_access_key,
            session_token,
            region: get(&["AWS_REGION", "AWS_DEFAULT_REGION"]),
            endpoint: get(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]),
            allow_http: get(&["AWS_ALLOW_HTTP"]).and_then(|v| parse_bool("AWS_ALLOW_HTTP", &v).ok()),
            path_style: get(&["AWS_S3_ADDRESSING_STYLE"]).map(|v| v != "virtual"),
        }
    }

    /// Fills every unset field from `fallback`.
    pub fn or(mut self, fallback: &S3Settings) -> S3Settings {
        fn fill<T: Clone>(v: &mut Option<T>, f: &Option<T>) {
            if v.is_none() {
                v.clone_from(f);
            }
        }
        // Credentials come as a pair: never mix a key id from one source with a
        // secret from another. And they stay with their endpoint: a session that
        // names another endpoint without credentials is sent unsigned, never
        // signed with this process's keys to a host the session chose.
        let other_endpoint = self.endpoint.is_some() && self.endpoint != fallback.endpoint;
        if self.access_key_id.is_none() && self.secret_access_key.is_none() && !other_endpoint {
            self.access_key_id.clone_from(&fallback.access_key_id);
            self.secret_access_key.clone_from(&fallback.secret_access_key);
            self.session_token.clone_from(&fallback.session_token);
        }
        fill(&mut self.region, &fallback.region);
        fill(&mut self.endpoint, &fallback.endpoint);
        fill(&mut self.allow_http, &fallback.allow_http);
        fill(&mut self.path_style, &fallback.path_style);
        self
    }

    /// The endpoint requests go to, for messages: the configured one or AWS's.
    pub fn endpoint_for_display(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| {
            format!(
                "https://s3.{}.amazonaws.com",
                self.region.as_deref().unwrap_or("us-east-1")
            )
        })
    }

    /// Builds an S3 object store for `bucket` with these settings.
    pub fn build_store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        let endpoint = self.endpoint.as_deref();
        let is_http = endpoint.is_some_and(|e| e.starts_with("http://"));
        let allow_http = self.allow_http.unwrap_or(is_http);
        if is_http && !allow_http {
            return Err(DataFusionError::Configuration(format!(
                "S3 endpoint {} is plain http but s3.allow_http is false; use an https endpoint or set s3.allow_http=true",
                endpoint.unwrap_or_default()
            )));
        }
        let path_style = self.path_style.unwrap_or(endpoint.is_some());
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(self.region.as_deref().unwrap_or("us-east-1"))
            .with_virtual_hosted_style_request(!path_style)
            .with_allow_http(allow_http)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(300)),
            )
            // Fail fast on a dead endpoint instead of retrying for minutes.
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(20),
            });
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(key)) => {
                builder = builder.with_access_key_id(id).with_secret_access_key(key);
                if let Some(token) = &self.session_token {
                    builder = builder.with_token(token);
                }
            }
            (Some(_), None) => {
                return Err(DataFusionError::Configuration(
                    "an S3 access key id is set but no secret access key: set AWS_SECRET_ACCESS_KEY or s3.secret_access_key"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(DataFusionError::Configuration(
                    "an S3 secret access key is set but no access key id: set AWS_ACCESS_KEY_ID or s3.access_key_id"
                        .into(),
                ));
            }
            // No credentials: anonymous requests rather than minutes spent probing
            // instance metadata that does not exist outside AWS.
            (None, None) => builder = builder.with_skip_signature(true),
        }
        let store = builder.build().map_err(|e| {
            DataFusionError::Configuration(format!(
                "cannot configure S3 for bucket '{bucket}': {}",
                secret::redact(&e.to_string())
            ))
        })?;
        Ok(Arc::new(store))
    }
}

/// The `s3.*` session options: what `SET s3.region = '...'` changes.
///
/// Clones share their values, so the registry built for a session sees the
/// session's later `SET`s.
#[derive(Clone, Default)]
pub struct S3Options {
    inner: Arc<RwLock<S3Settings>>,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.read().fmt(f)
    }
}

impl S3Options {
    /// The current settings.
    pub fn settings(&self) -> S3Settings {
        self.inner.read().clone()
    }
}

impl ConfigExtension for S3Options {
    const PREFIX: &'static str = "s3";
}

impl ExtensionOptions for S3Options {
    crate::extension_options_any!();

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        self.inner
            .write()
            .set(key, value)
            .map_err(|e| DataFusionError::Configuration(e.to_string()))
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        self.inner.read().config_entries()
    }
}

/// Process-wide storage state: this process's default settings, its stores
/// and which local files its jobs may touch.
#[derive(Debug)]
pub struct StorageContext {
    defaults: S3Settings,
    stores: Mutex<HashMap<(String, S3Settings), Arc<dyn ObjectStore>>>,
    local_paths: LocalPaths,
    local: Arc<dyn ObjectStore>,
}

impl Default for StorageContext {
    fn default() -> Self {
        Self::with_defaults(S3Settings::default())
    }
}

impl StorageContext {
    /// Storage for this process: `s3.*` keys of its config file over its environment.
    pub fn new(config_file: &Settings) -> std::result::Result<Self, ConfigError> {
        let from_file = S3Settings::from_section(&config_file.section("s3"))?;
        Ok(Self::with_defaults(from_file.or(&S3Settings::from_env())))
    }

    /// Storage with exactly these defaults (tests, embedding).
    pub fn with_defaults(defaults: S3Settings) -> Self {
        let local_paths = LocalPaths::default();
        Self {
            defaults,
            stores: Mutex::default(),
            local: local_paths.store(),
            local_paths,
        }
    }

    /// The same storage, with jobs' local paths limited by `policy`.
    pub fn with_local_paths(self, policy: LocalPaths) -> Self {
        Self {
            local: policy.store(),
            local_paths: policy,
            ..self
        }
    }

    /// Which local files this process's jobs may touch.
    pub fn local_paths(&self) -> &LocalPaths {
        &self.local_paths
    }

    /// This process's default settings.
    pub fn defaults(&self) -> &S3Settings {
        &self.defaults
    }

    /// The store for `bucket` under `session` settings, built on first use.
    pub fn s3_store(&self, bucket: &str, session: &S3Settings) -> Result<Arc<dyn ObjectStore>> {
        let effective = session.clone().or(&self.defaults);
        let key = (bucket.to_owned(), effective);
        if let Some(store) = self.stores.lock().get(&key) {
            return Ok(Arc::clone(store));
        }
        let store: Arc<dyn ObjectStore> = Arc::new(FooterCheck::new(key.1.build_store(bucket)?));
        tracing::debug!(bucket, endpoint = %key.1.endpoint_for_display(), "built S3 object store");
        self.stores.lock().insert(key, Arc::clone(&store));
        Ok(store)
    }

    /// The effective settings a session would use (for messages).
    pub fn effective(&self, session: &S3Settings) -> S3Settings {
        session.clone().or(&self.defaults)
    }

    /// Storage options for the `deltalake` crate, which builds its own object
    /// stores for the Delta log: the same effective settings, in its keys.
    pub fn delta_options(&self, session: &S3Settings) -> HashMap<String, String> {
        let s = self.effective(session);
        let mut o = HashMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                o.insert(k.to_owned(), v);
            }
        };
        let endpoint = s.endpoint.clone();
        let is_http = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
        put("AWS_ACCESS_KEY_ID", s.access_key_id.clone());
        put("AWS_SECRET_ACCESS_KEY", s.secret_access_key.clone());
        put("AWS_SESSION_TOKEN", s.session_token.clone());
        put(
            "AWS_REGION",
            Some(s.region.clone().unwrap_or_else(|| "us-east-1".into())),
        );
        put("AWS_ENDPOINT_URL", endpoint.clone());
        put("AWS_ALLOW_HTTP", Some(s.allow_http.unwrap_or(is_http).to_string()));
        let path_style = s.path_style.unwrap_or(endpoint.is_some());
        put("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", Some((!path_style).to_string()));
        if s.access_key_id.is_none() {
            put("AWS_SKIP_SIGNATURE", Some("true".into()));
        }
        // Commits are atomic through conditional puts (If-None-Match), which
        // AWS S3 and MinIO support.
        put("AWS_CONDITIONAL_PUT", Some("etag".into()));
        o
    }
}

/// Resolves object store URLs for one session: `s3://`, `file://` and plain
/// paths, plus stores registered explicitly (e.g. by the Delta integration).
pub struct QuiverObjectStoreRegistry {
    options: S3Options,
    storage: Arc<StorageContext>,
    registered: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl fmt::Debug for QuiverObjectStoreRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuiverObjectStoreRegistry")
            .field("options", &self.options)
            .field("registered", &self.registered.read().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl QuiverObjectStoreRegistry {
    /// A registry for the session whose `s3.*` options are `options`.
    pub fn new(options: S3Options, storage: Arc<StorageContext>) -> Self {
        Self {
            options,
            storage,
            registered: RwLock::default(),
        }
    }
}

fn store_key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.authority())
}

impl ObjectStoreRegistry for QuiverObjectStoreRegistry {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        let checked: Arc<dyn ObjectStore> = Arc::new(FooterCheck::new(store));
        self.registered.write().insert(store_key(url), checked)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.registered
            .write()
            .remove(&store_key(url))
            .ok_or_else(|| DataFusionError::Execution(format!("no object store registered for {url}")))
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if let Some(store) = self.registered.read().get(&store_key(url)) {
            return Ok(Arc::clone(store));
        }
        match url.scheme() {
            "" | "file" => Ok(Arc::clone(&self.storage.local)),
            "s3" | "s3a" => {
                let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                    DataFusionError::Configuration(format!("'{url}' has no bucket name; write s3://bucket/path"))
                })?;
                self.storage.s3_store(bucket, &self.options.settings())
            }
            other => Err(DataFusionError::Configuration(format!(
                "unsupported storage scheme '{other}://' in {url}: Quiver reads s3://bucket/path, file:// and local paths"
            ))),
        }
    }
}

/// A hint for a storage failure, from the text of an engine error.
///
/// Object store errors carry the server's reply; this turns the common ones into
/// what to do about them. `None` when the error is not a recognised storage error.
pub fn explain_storage_error(message: &str, effective: &S3Settings) -> Option<String> {
    let endpoint = effective.endpoint_for_display();
    let m = message;
    let has = |needle: &str| m.contains(needle);
    if has("NoSuchBucket") {
        return Some(format!(
            "the bucket does not exist at {endpoint}: create it, or check the bucket name in the path"
        ));
    }
    if has("InvalidAccessKeyId") || has("SignatureDoesNotMatch") || has("InvalidToken") {
        return Some(format!(
            "the S3 credentials were rejected by {endpoint}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or s3.access_key_id / s3.secret_access_key)"
        ));
    }
    if has("AccessDenied") || has("403 Forbidden") {
        let what = if effective.access_key_id.is_none() {
            "no S3 credentials are configured, so the request was anonymous: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        } else {
            "these credentials may not access this bucket or key"
        };
        return Some(format!("access denied by {endpoint}: {what}"));
    }
    if has("Connection refused")
        || has("error sending request")
        || has("dns error")
        || has("failed to lookup address")
        || has("timed out")
        || has("tcp connect error")
    {
        return Some(format!(
            "cannot reach the S3 endpoint {endpoint}: is it running and reachable from this host? Check AWS_ENDPOINT_URL or s3.endpoint"
        ));
    }
    if has("NoSuchKey") || has("Object at location") && has("not found") {
        return Some("the object does not exist: check the path".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionConfig;

    #[test]
    fn env_lookup_follows_aws_conventions() {
        let env: HashMap<&str, &str> = [
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret-1234"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL", "http://minio:9000"),
        ]
        .into();
        let s = S3Settings::from_lookup(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(s.access_key_id.as_deref(), Some("AKIA"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.endpoint.as_deref(), Some("http://minio:9000"));
        assert!(!format!("{s:?}").contains("envsecret-1234"));
    }

    #[test]
    fn session_settings_override_defaults_but_credentials_stay_paired() {
        let defaults = S3Settings {
            access_key_id: Some("default-id".into()),
            secret_access_key: Some("default-secret".into()),
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        let mut session = S3Settings::default();
        session.set("region", "eu-west-1").unwrap();
        let eff = session.clone().or(&defaults);
        assert_eq!(eff.region.as_deref(), Some("eu-west-1"));
        assert_eq!(eff.access_key_id.as_deref(), Some("default-id"));

        session.set("access_key_id", "session-id").unwrap();
        let eff = session.or(&defaults);
        assert_eq!(eff.access_key_id.as_deref(), Some("session-id"));
        assert_eq!(eff.secret_access_key, None, "never mix credential sources");
    }

    #[test]
    fn credentials_stay_with_their_endpoint() {
        let defaults = S3Settings {
            access_key_id: Some("default-id".into()),
            secret_access_key: Some("default-secret".into()),
            endpoint: Some("http://minio:9000".into()),
            ..Default::default()
        };
        let mut elsewhere = S3Settings::default();
        elsewhere.set("endpoint", "http://attacker.example:9000").unwrap();
        let eff = elsewhere.or(&defaults);
        assert_eq!((eff.access_key_id, eff.secret_access_key), (None, None));

        let mut same = S3Settings::default();
        same.set("endpoint", "http://minio:9000").unwrap();
        assert_eq!(same.or(&defaults).secret_access_key.as_deref(), Some("default-secret"));
    }

    #[test]
    fn bad_values_are_refused_clearly() {
        let mut s = S3Settings::default();
        let err = s.set("endpoint", "minio:9000").unwrap_err().to_string();
        assert!(err.contains("http://"), "{err}");
        let err = s.set("allow_http", "maybe").unwrap_err().to_string();
        assert!(err.contains("true or false"), "{err}");
        let err = s.set("endpiont", "x").unwrap_err().to_string();
        assert!(err.contains("s3.endpoint"), "{err}");
    }

    #[test]
    fn set_through_session_config_reaches_the_shared_options() {
        let options = S3Options::default();
        let mut config = SessionConfig::new().with_option_extension(options.clone());
        config.options_mut().set("s3.region", "ap-south-1").unwrap();
        assert_eq!(options.settings().region.as_deref(), Some("ap-south-1"));
        let keys: Vec<_> = config
            .options()
            .entries()
            .into_iter()
            .filter(|e| e.key.starts_with("s3."))
            .map(|e| (e.key, e.value))
            .collect();
        assert!(keys.contains(&("s3.region".into(), Some("ap-south-1".into()))));
    }

    #[test]
    fn stores_are_built_once_per_bucket_and_settings() {
        let storage = Arc::new(StorageContext::with_defaults(S3Settings {
            endpoint: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        }));
        let registry = QuiverObjectStoreRegistry::new(S3Options::default(), Arc::clone(&storage));
        let url = Url::parse("s3://bucket-a/x.csv").unwrap();
        let a = registry.get_store(&url).unwrap();
        let b = registry.get_store(&url).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = registry.get_store(&Url::parse("s3://bucket-b/").unwrap()).unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(storage.stores.lock().len(), 2);
    }

    #[test]
    fn delta_options_carry_the_effective_settings() {
        let storage = StorageContext::with_defaults(S3Settings {
            endpoint: Some("http://minio:9000".into()),
            access_key_id: Some("id".into()),
            secret_access_key: Some("secret-value".into()),
            ..Default::default()
        });
        let mut session = S3Settings::default();
        session.set("region", "eu-west-3").unwrap();
        let o = storage.delta_options(&session);
        assert_eq!(o["AWS_ENDPOINT_URL"], "http://minio:9000");
        assert_eq!(o["AWS_REGION"], "eu-west-3");
        assert_eq!(o["AWS_ALLOW_HTTP"], "true");
        assert_eq!(o["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"], "false");
        assert_eq!(o["AWS_SECRET_ACCESS_KEY"], "secret-value");
    }

    #[test]
    fn http_endpoint_with_allow_http_false_is_refused() {
        let s = S3Settings {
            endpoint: Some("http://minio:9000".into()),
            allow_http: Some(false),
            ..Default::default()
        };
        let err = s.build_store("b").unwrap_err().to_string();
        assert!(err.contains("allow_http"), "{err}");
    }

    #[test]
    fn storage_errors_get_hints() {
        let s = S3Settings {
            endpoint: Some("http://127.0.0.1:9000".into()),
            ..Default::default()
        };
        let hint = explain_storage_error("... <Code>NoSuchBucket</Code> ...", &s).unwrap();
        assert!(
            hint.contains("bucket does not exist at http://127.0.0.1:9000"),
            "{hint}"
        );
        let hint = explain_storage_error("tcp connect error: Connection refused", &s).unwrap();
        assert!(hint.contains("cannot reach"), "{hint}");
        assert!(explain_storage_error("Schema error: no field x", &s).is_none());
    }
}
