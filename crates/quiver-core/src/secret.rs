//! Secrets: which settings are secret, and scrubbing their values out of text.
//!
//! Quiver keeps credentials out of every log line, error message, job record and
//! page. Two mechanisms work together:
//!
//! * [`is_secret_key`] tells which configuration keys hold secrets, so code that
//!   shows settings (job records, `\d`, `SHOW`) prints [`MASK`] instead of the value.
//! * A process-wide set of known secret values ([`register`]) lets [`redact`] scrub
//!   them out of free text that came from somewhere else (an engine error that
//!   quotes a table option, a dependency's debug log). The log writer installed by
//!   [`crate::logging`] passes every line through [`redact`].
//!
//! ```
//! quiver_core::secret::register("s3cr3t-value");
//! assert_eq!(quiver_core::secret::redact("key=s3cr3t-value"), "key=****");
//! assert!(quiver_core::secret::is_secret_key("s3.secret_access_key"));
//! ```

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use parking_lot::RwLock;

/// What a secret value is replaced with wherever it would be shown.
pub const MASK: &str = "****";

/// Values shorter than this are not scrubbed from free text: replacing every `a`
/// in a log because someone used `a` as a password would destroy the log and
/// protect nothing.
const MIN_SCRUB_LEN: usize = 4;

static KNOWN: LazyLock<RwLock<Vec<String>>> = LazyLock::new(|| RwLock::new(Vec::new()));

/// Returns true when `key` names a setting whose value is a secret.
///
/// Matches the storage keys (`s3.secret_access_key`, `s3.session_token`), the
/// equivalent table options DataFusion users know (`aws.secret_access_key`), the
/// scheduler's access token, and anything that calls itself a password or secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("secret") || key.contains("password") || key.ends_with("token")
}

/// Remembers `value` as a secret so [`redact`] scrubs it from text from now on.
pub fn register(value: &str) {
    let value = value.trim();
    if value.len() < MIN_SCRUB_LEN {
        return;
    }
    let mut known = KNOWN.write();
    if !known.iter().any(|k| k == value) {
        known.push(value.to_owned());
        // Longest first, so a secret that contains another is scrubbed whole.
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// Registers the value of every secret setting among `settings`.
pub fn register_settings<'a>(settings: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (key, value) in settings {
        if is_secret_key(key) {
            register(value);
        }
    }
}

/// The SHA-256 digest of a credential: what Quiver keeps and compares
/// instead of the credential itself. Digests are compared in constant time,
/// and two digests are the same length whatever they were made from, so a
/// comparison leaks neither the credential's bytes nor its length.
///
/// ```
/// use quiver_core::secret::Digest;
/// let kept = Digest::of(&[b"a-token"]);
/// assert!(kept.matches(&Digest::of(&[b"a-token"])));
/// assert!(!kept.matches(&Digest::of(&[b"a-tokem"])));
/// assert_eq!(kept.hex().len(), 64);
/// ```
#[derive(Clone, Copy)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `parts`, one after the other.
    pub fn of(parts: &[&[u8]]) -> Self {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        Self(hasher.finalize().into())
    }

    /// True when both are the digest of the same bytes (constant time).
    pub fn matches(&self, other: &Digest) -> bool {
        self.0.iter().zip(&other.0).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Lowercase hexadecimal, for a value derived from a secret.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(****)")
    }
}

/// Replaces every registered secret value in `text` with [`MASK`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read();
    if !known.iter().any(|k| text.contains(k.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for secret in known.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// `sql` as it may be recorded: the secrets it sets itself
/// ([`crate::script::secret_values`]) are registered, then every known secret
/// is scrubbed.
///
/// ```
/// let text = quiver_core::secret::redact_sql("SET s3.secret_access_key = 'set-in-sql-42'");
/// assert_eq!(text, "SET s3.secret_access_key = '****'");
/// ```
pub fn redact_sql(sql: &str) -> String {
    for value in crate::script::secret_values(sql) {
        register(&value);
    }
    redact(sql).into_owned()
}

/// `batch` with the secrets this process knows scrubbed from its text
/// columns: what a job's stored result and `EXPLAIN` text pass through.
pub fn redact_batch(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut columns = batch.columns().to_vec();
    for (i, field) in batch.schema().fields().iter().enumerate() {
        if !matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            continue;
        }
        let text = arrow::compute::cast(batch.column(i), &DataType::Utf8)?;
        let text = text.as_any().downcast_ref::<StringArray>().expect("cast to Utf8");
        let scrubbed: StringArray = text.iter().map(|v| v.map(|v| redact(v).into_owned())).collect();
        columns[i] = arrow::compute::cast(&(Arc::new(scrubbed) as ArrayRef), field.data_type())?;
    }
    RecordBatch::try_new(batch.schema(), columns)
}

/// Shows `value` for `key` as it may be displayed: masked when the key is secret.
pub fn display_value<'a>(key: &str, value: &'a str) -> Cow<'a, str> {
    if is_secret_key(key) && !value.is_empty() {
        Cow::Borrowed(MASK)
    } else {
        redact(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "s3.secret_access_key",
            "s3.session_token",
            "aws.secret_access_key",
            "AWS_SECRET_ACCESS_KEY",
            "quiver.auth.token",
            "db.password",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["s3.access_key_id", "s3.endpoint", "datafusion.execution.batch_size"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn registered_values_are_scrubbed_longest_first() {
        register("abcd1234");
        register("abcd1234-longer");
        assert_eq!(redact("x abcd1234-longer y abcd1234"), "x **** y ****");
        assert_eq!(redact("nothing here"), "nothing here");
    }

    #[test]
    fn short_values_are_not_scrubbed() {
        register("ab");
        assert_eq!(redact("abab"), "abab");
    }

    #[test]
    fn display_value_masks_secret_keys() {
        assert_eq!(display_value("s3.secret_access_key", "zzz"), MASK);
        assert_eq!(display_value("s3.region", "eu-west-1"), "eu-west-1");
    }
}
