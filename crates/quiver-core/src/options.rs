//! Typed settings declared once: each key's field, type, default and doc.
//!
//! [`settings_struct!`] turns one list into a struct, its `Default`, the
//! table of its keys ([`KeyDoc`]), and `set_key`/`values` that read and write
//! fields by key, so the keys a user can `SET`, the fields code reads and the
//! documentation `quiver config keys` prints cannot fall out of step (as
//! DataFusion generates its configuration docs from its config structs).
//! Values are parsed by [`SettingValue`]; booleans by the one
//! [`parse_bool`](crate::config::parse_bool).
//!
//! [`QuiverOptions`] are the `quiver.*` session options; the `s3.*` keys are
//! [`S3Settings`](crate::storage::S3Settings).

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionConfig;

use crate::api::JobSource;
use crate::config::{ConfigError, parse_bool};

/// One documented key of a settings struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    /// The full key, prefix included (`quiver.semi_join_reduction`).
    pub key: String,
    /// What it does.
    pub doc: &'static str,
    /// Its default, as it would be written in `SET`; `None` when unset.
    pub default: Option<String>,
}

/// A value a setting can hold: how it is parsed from text and shown as text.
pub trait SettingValue: Sized {
    /// Parses `value` given for `key` (the key only serves the message).
    fn parse_setting(key: &str, value: &str) -> Result<Self, ConfigError>;
    /// The value as text; `None` when unset.
    fn show_setting(&self) -> Option<String>;
}

impl SettingValue for bool {
    /// A bare key (empty value) turns a flag on, as `--flag` does.
    fn parse_setting(key: &str, value: &str) -> Result<Self, ConfigError> {
        if value.trim().is_empty() {
            return Ok(true);
        }
        parse_bool(key, value)
    }

    fn show_setting(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl SettingValue for Option<bool> {
    fn parse_setting(key: &str, value: &str) -> Result<Self, ConfigError> {
        if value.trim().is_empty() {
            return Ok(None);
        }
        parse_bool(key, value).map(Some)
    }

    fn show_setting(&self) -> Option<String> {
        self.map(|b| b.to_string())
    }
}

impl SettingValue for Option<String> {
    /// Surrounding blanks are dropped; an empty value unsets the key.
    fn parse_setting(_key: &str, value: &str) -> Result<Self, ConfigError> {
        Ok(Some(value.trim().to_owned()).filter(|v| !v.is_empty()))
    }

    fn show_setting(&self) -> Option<String> {
        self.clone()
    }
}

impl SettingValue for Option<JobSource> {
    fn parse_setting(key: &str, value: &str) -> Result<Self, ConfigError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        value.parse().map(Some).map_err(|message| ConfigError::InvalidValue {
            key: key.to_owned(),
            message,
        })
    }

    fn show_setting(&self) -> Option<String> {
        self.map(|s| s.to_string())
    }
}

/// The `as_any`, `as_any_mut` and `cloned` methods every DataFusion
/// `ExtensionOptions` implementation spells the same way (for a `Clone` type).
#[macro_export]
macro_rules! extension_options_any {
    () => {
        fn as_any(&self) -> &dyn ::std::any::Any {
            self
        }

        fn as_any_mut(&mut self) -> &mut dyn ::std::any::Any {
            self
        }

        fn cloned(&self) -> ::std::boxed::Box<dyn ::datafusion::common::config::ExtensionOptions> {
            ::std::boxed::Box::new(self.clone())
        }
    };
}

/// Declares a settings struct from one list of `/// doc` + `field: Type = default`.
///
/// ```
/// quiver_core::settings_struct! {
///     /// Knobs of a demo.
///     pub struct Demo prefix "demo" {
///         /// turn the demo on
///         enabled: bool = true,
///         /// who to greet
///         name: Option<String> = None,
///     }
/// }
/// let mut demo = Demo::default();
/// demo.set_key("enabled", "off").unwrap();
/// assert!(!demo.enabled);
/// assert_eq!(Demo::keys()[1].key, "demo.name");
/// assert!(demo.set_key("nope", "1").unwrap_err().to_string().contains("demo.enabled, demo.name"));
/// ```
#[macro_export]
macro_rules! settings_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident prefix $prefix:literal {
            $(
                #[doc = $doc:literal]
                $field:ident : $ty:ty = $default:expr,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq)]
        $vis struct $name {
            $(
                #[doc = $doc]
                pub $field: $ty,
            )*
        }

        impl ::std::default::Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl $name {
            /// The prefix of these keys (`prefix.key`).
            pub const PREFIX: &'static str = $prefix;

            /// Every key with its documentation and default.
            pub fn keys() -> ::std::vec::Vec<$crate::options::KeyDoc> {
                let defaults = Self::default();
                ::std::vec![$(
                    $crate::options::KeyDoc {
                        key: ::std::format!("{}.{}", $prefix, stringify!($field)),
                        doc: $doc.trim(),
                        default: $crate::options::SettingValue::show_setting(&defaults.$field),
                    },
                )*]
            }

            /// Sets the field named `key` (without the prefix) from text.
            pub fn set_key(&mut self, key: &str, value: &str) -> ::std::result::Result<(), $crate::config::ConfigError> {
                match key {
                    $(
                        stringify!($field) => {
                            self.$field = <$ty as $crate::options::SettingValue>::parse_setting(
                                &::std::format!("{}.{}", $prefix, key),
                                value,
                            )?;
                        }
                    )*
                    other => {
                        return Err($crate::config::ConfigError::UnknownKey {
                            key: ::std::format!("{}.{}", $prefix, other),
                            hint: ::std::format!(
                                "known {} settings are {}",
                                $prefix,
                                [$(::std::format!("{}.{}", $prefix, stringify!($field))),*].join(", ")
                            ),
                        });
                    }
                }
                Ok(())
            }

            /// `(key without prefix, value as text)` for every field, in
            /// declaration order.
            pub fn values(&self) -> ::std::vec::Vec<(&'static str, ::std::option::Option<::std::string::String>)> {
                ::std::vec![$(
                    (stringify!($field), $crate::options::SettingValue::show_setting(&self.$field)),
                )*]
            }

            /// The values as DataFusion's config entries (what `SHOW ALL` lists).
            pub fn config_entries(&self) -> ::std::vec::Vec<::datafusion::common::config::ConfigEntry> {
                self.values()
                    .into_iter()
                    .zip(Self::keys())
                    .map(|((_, value), doc)| ::datafusion::common::config::ConfigEntry {
                        key: doc.key,
                        value,
                        description: doc.doc,
                    })
                    .collect()
            }
        }
    };
}

settings_struct! {
    /// The `quiver.*` session options: what `SET quiver.<key> = ...` changes.
    #[derive(Debug)]
    pub struct QuiverOptions prefix "quiver" {
        /// id of the Quiver job this session's queries belong to
        job_id: Option<String> = None,
        /// where the job came from: submit, rest, shell, dataframe or client
        job_source: Option<JobSource> = None,
        /// refuse Delta VACUUM with a retention below the table's safety period (default 7 days)
        delta_retention_check: bool = true,
        /// join a table that a constant filter narrows to the table its keys point at before the other joins
        join_filtered_dimensions_first: bool = true,
        /// narrow the subquery side of EXISTS, IN and NOT EXISTS joins to the keys a constant-filtered outer table holds
        semi_join_reduction: bool = true,
        /// plan with Apache Spark's functions (datafusion-spark: sha2, next_day, try_sum, ...) and Spark's EXTRACT and SUBSTRING; Spark's versions replace DataFusion's of the same name; read when a session starts (--conf, a job's conf)
        spark_functions: bool = false,
        /// let an executor's tasks reuse the Parquet footers it read for earlier jobs, checked against each file's size and modification time
        shared_footer_cache: bool = true,
        /// while a Parquet scan of an object store (S3) decodes one row group, fetch the next one's columns
        parquet_read_ahead: bool = true,
        /// let every task of a stage write its own files of a COPY or INSERT into a directory, instead of shuffling all rows to one task that writes them
        distributed_writes: bool = true,
        /// set by the scheduler from the cluster secret: executors run only tasks that carry it (a client's value is replaced)
        task_proof: Option<String> = None,
        /// where CREATE TABLE ... AS without a LOCATION writes: <dir>/<table>/ (Spark's spark.sql.warehouse.dir); a scheduler keeping history in S3 defaults it to warehouse/ beside the history, embedded mode to ./quiver-warehouse
        warehouse_dir: Option<String> = None,
    }
}

impl ConfigExtension for QuiverOptions {
    const PREFIX: &'static str = "quiver";
}

impl ExtensionOptions for QuiverOptions {
    crate::extension_options_any!();

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        self.set_key(key, value)
            .map_err(|e| DataFusionError::Configuration(e.to_string()))
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        self.config_entries()
    }
}

/// The Quiver options of a session (the defaults when it has none).
pub fn quiver_options(config: &SessionConfig) -> QuiverOptions {
    config
        .options()
        .extensions
        .get::<QuiverOptions>()
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_a_key_a_doc_and_a_value() {
        let keys = QuiverOptions::keys();
        let values = QuiverOptions::default().values();
        assert_eq!(keys.len(), values.len());
        for (doc, (field, _)) in keys.iter().zip(&values) {
            assert_eq!(doc.key, format!("quiver.{field}"));
            assert!(!doc.doc.is_empty(), "{field} has no doc");
        }
    }

    #[test]
    fn flags_take_the_one_boolean_spelling_list() {
        let mut o = QuiverOptions::default();
        for (text, expected) in [
            ("FALSE", false),
            ("on", true),
            ("0", false),
            ("", true),
            (" yes ", true),
        ] {
            o.set_key("semi_join_reduction", text).unwrap();
            assert_eq!(o.semi_join_reduction, expected, "{text:?}");
        }
        let err = o.set_key("delta_retention_check", "maybe").unwrap_err();
        assert!(err.to_string().contains("quiver.delta_retention_check"), "{err}");
    }

    #[test]
    fn job_sources_are_typed() {
        let mut o = QuiverOptions::default();
        o.set_key("job_source", "shell").unwrap();
        assert_eq!(o.job_source, Some(JobSource::Shell));
        assert!(o.set_key("job_source", "spark").is_err());
    }
}
