//! Settings: `key = value` pairs from a config file, `--conf`, SQL `SET` and REST jobs.
//!
//! Every knob a user can turn is a dotted key. The same keys work everywhere:
//!
//! | where                         | example                                   |
//! |-------------------------------|-------------------------------------------|
//! | config file (`--config`, `QUIVER_CONFIG`) | `s3.endpoint = "http://minio:9000"` or a `[s3]` table |
//! | command line                  | `--conf s3.region=eu-west-1`              |
//! | SQL                           | `SET s3.region = 'eu-west-1';`            |
//! | REST job                      | `"conf": {"s3.region": "eu-west-1"}`      |
//!
//! Keys under `s3.` configure storage (see [`crate::storage`]); every other key is a
//! DataFusion (`datafusion.*`), Ballista (`ballista.*`) or Quiver (`quiver.*`)
//! session option, validated when a session is built.
//!
//! ```
//! use quiver_core::config::Settings;
//! let s = Settings::parse_pairs(["s3.region=eu-west-1", "datafusion.execution.batch_size=4096"]).unwrap();
//! assert_eq!(s.get("s3.region"), Some("eu-west-1"));
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::secret;

/// Environment variable naming the config file every `quiver` role reads.
pub const CONFIG_ENV: &str = "QUIVER_CONFIG";

/// Errors in configuration given by the user.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, or holds a value that is not a scalar.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, as the parser says it.
        message: String,
    },
    /// A `--conf`/`--param` argument is not of the form `key=value`.
    #[error("'{pair}' is not of the form key=value")]
    BadPair {
        /// The argument as given (secret values masked).
        pair: String,
    },
    /// A key no part of Quiver knows.
    #[error("unknown setting '{key}': {hint}")]
    UnknownKey {
        /// The key.
        key: String,
        /// What to do instead.
        hint: String,
    },
    /// A known key with a value it cannot take.
    #[error("invalid value for '{key}': {message}")]
    InvalidValue {
        /// The key.
        key: String,
        /// Why the value was refused (never the value itself when it is secret).
        message: String,
    },
}

/// An ordered set of settings. Later sources override earlier ones with [`Settings::merge`].
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Settings(BTreeMap<String, String>);

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

impl Settings {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Settings from a client's request, kept as given: unlike
    /// [`Settings::set`], nothing is registered as a secret yet, so a request
    /// that is refused cannot make the process mask arbitrary words in its
    /// logs. Call [`Settings::register_secrets`] once they are checked.
    pub fn unchecked(pairs: BTreeMap<String, String>) -> Self {
        Self(pairs)
    }

    /// Registers the value of every secret key for scrubbing.
    pub fn register_secrets(&self) {
        secret::register_settings(self.iter());
    }

    /// Parses `key=value` arguments, as given to `--conf`.
    pub fn parse_pairs<I, S>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut settings = Self::new();
        for pair in pairs {
            let (key, value) = split_pair(pair.as_ref())?;
            settings.set(key, value);
        }
        Ok(settings)
    }

    /// Reads a TOML config file; nested tables become dotted keys (`[s3] region = ..`
    /// is `s3.region`).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; see [`Settings::from_file`].
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut settings = Self::new();
        flatten("", &table, &mut settings)?;
        Ok(settings)
    }

    /// Loads the config file named by `path`, or by `QUIVER_CONFIG` when `path` is
    /// `None`; no file means no settings.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let from_env = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        match path.map(Path::to_owned).or(from_env) {
            Some(path) => Self::from_file(&path),
            None => Ok(Self::new()),
        }
    }

    /// Sets one key; secret values are registered for scrubbing.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        if secret::is_secret_key(&key) {
            secret::register(&value);
        }
        self.0.insert(key, value);
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Overrides these settings with `other`'s.
    pub fn merge(&mut self, other: &Settings) {
        for (k, v) in &other.0 {
            self.set(k.clone(), v.clone());
        }
    }

    /// Iterates over `(key, value)` in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when there are no settings.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The settings whose keys start with `prefix.`, with the prefix removed.
    pub fn section(&self, prefix: &str) -> Settings {
        let dotted = format!("{prefix}.");
        Settings(
            self.0
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(&dotted).map(|k| (k.to_owned(), v.clone())))
                .collect(),
        )
    }

    /// The settings whose keys do not start with `prefix.`.
    pub fn without_section(&self, prefix: &str) -> Settings {
        let dotted = format!("{prefix}.");
        Settings(
            self.0
                .iter()
                .filter(|(k, _)| !k.starts_with(&dotted))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// A copy safe to show or store: secret values are masked.
    pub fn redacted(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), secret::display_value(k, v).into_owned()))
            .collect()
    }
}

impl FromIterator<(String, String)> for Settings {
    fn from_iter<T: IntoIterator<Item = (String, String)>>(iter: T) -> Self {
        let mut s = Settings::new();
        for (k, v) in iter {
            s.set(k, v);
        }
        s
    }
}

/// Parses a boolean setting: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`,
/// in any case. The one boolean parser of every setting and environment
/// variable Quiver reads.
///
/// ```
/// use quiver_core::config::parse_bool;
/// assert!(parse_bool("s3.allow_http", " ON ").unwrap());
/// assert!(!parse_bool("s3.allow_http", "0").unwrap());
/// assert!(parse_bool("s3.allow_http", "maybe").unwrap_err().to_string().contains("s3.allow_http"));
/// ```
pub fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::InvalidValue {
            key: key.into(),
            message: format!("'{value}' is not true or false"),
        }),
    }
}

/// Splits `key=value`; the key is trimmed, the value kept as given.
pub fn split_pair(pair: &str) -> Result<(&str, &str), ConfigError> {
    match pair.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim(), value)),
        _ => Err(ConfigError::BadPair {
            pair: secret::redact(pair).into_owned(),
        }),
    }
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Settings) -> Result<(), String> {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten(&key, inner, out)?,
            toml::Value::String(s) => out.set(key, s.clone()),
            toml::Value::Integer(i) => out.set(key, i.to_string()),
            toml::Value::Float(f) => out.set(key, f.to_string()),
            toml::Value::Boolean(b) => out.set(key, b.to_string()),
            toml::Value::Datetime(d) => out.set(key, d.to_string()),
            toml::Value::Array(_) => {
                return Err(format!("'{key}' is a list; settings take a single value"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_tables_and_dotted_keys_flatten_alike() {
        let a = Settings::from_toml("[s3]\nregion = \"eu\"\nallow_http = true\n").unwrap();
        let b = Settings::from_toml("s3.region = \"eu\"\ns3.allow_http = true\n").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get("s3.allow_http"), Some("true"));
    }

    #[test]
    fn lists_are_refused_with_the_key() {
        let err = Settings::from_toml("s3.region = [\"a\"]").unwrap_err();
        assert!(err.contains("s3.region"), "{err}");
    }

    #[test]
    fn bad_pairs_are_refused() {
        assert!(Settings::parse_pairs(["novalue"]).is_err());
        assert!(Settings::parse_pairs(["=x"]).is_err());
        let s = Settings::parse_pairs(["a.b= c=d"]).unwrap();
        assert_eq!(s.get("a.b"), Some(" c=d"));
    }

    #[test]
    fn sections_split_storage_from_session_settings() {
        let s = Settings::parse_pairs(["s3.region=eu", "datafusion.x=1"]).unwrap();
        assert_eq!(s.section("s3").get("region"), Some("eu"));
        assert_eq!(s.without_section("s3").get("datafusion.x"), Some("1"));
        assert!(s.without_section("s3").get("s3.region").is_none());
    }

    #[test]
    fn debug_and_redacted_mask_secrets() {
        let s = Settings::parse_pairs(["s3.secret_access_key=hunter2hunter2"]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2hunter2"));
        assert_eq!(s.redacted()["s3.secret_access_key"], secret::MASK);
    }
}
