//! Logging for every role: `tracing` to stderr, with secrets scrubbed from every line.
//!
//! The level comes from `QUIVER_LOG` (or `RUST_LOG`), in `tracing`'s filter
//! syntax, e.g. `QUIVER_LOG=debug` or `QUIVER_LOG=info,ballista_scheduler=debug`.
//! Log records from dependencies that use the `log` crate (Ballista) are routed
//! through the same subscriber, so they are filtered and scrubbed alike.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::secret;

/// Environment variable with the log filter.
pub const LOG_ENV: &str = "QUIVER_LOG";

/// Installs the global subscriber; `default` is the filter when none is set
/// (`"info"` for servers, `"warn"` for interactive commands). Calling it twice
/// is harmless.
pub fn init(default: &str) {
    let filter = std::env::var(LOG_ENV)
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("quiver: ignoring invalid {LOG_ENV} filter '{filter}': {e}");
        EnvFilter::new(default)
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ScrubbedStderr)
        .with_target(true)
        .try_init();
}

/// Writes log lines to stderr with every registered secret masked.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubbedStderr;

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbingWriter<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter::new(io::stderr())
    }
}

/// Buffers one log record and writes it out scrubbed when dropped or flushed.
#[derive(Debug)]
pub struct ScrubbingWriter<W: Write> {
    inner: W,
    buffer: Vec<u8>,
}

impl<W: Write> ScrubbingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buffer: Vec::new(),
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buffer);
        let scrubbed = secret::redact(&text);
        self.inner.write_all(scrubbed.as_bytes())?;
        self.buffer.clear();
        self.inner.flush()
    }
}

impl<W: Write> Write for ScrubbingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit()
    }
}

impl<W: Write> Drop for ScrubbingWriter<W> {
    fn drop(&mut self) {
        let _ = self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_scrubbed_before_they_reach_the_sink() {
        secret::register("log-secret-9876");
        let mut sink = Vec::new();
        {
            let mut w = ScrubbingWriter::new(&mut sink);
            w.write_all(b"connecting with log-secret-").unwrap();
            w.write_all(b"9876 now\n").unwrap();
        }
        assert_eq!(String::from_utf8(sink).unwrap(), "connecting with **** now\n");
    }
}
