//! Where the scheduler reaches an executor's task port, and how.
//!
//! The scheduler pushes tasks to an executor's gRPC port, and stops it,
//! cancels its tasks and drops a job's shuffle data there. Ballista serves
//! that port with no hook for a check or for TLS, so an executor with a
//! cluster secret or a certificate keeps Ballista's server on a loopback
//! port and serves the port it was given itself (the *task port*: it checks
//! the cluster secret's proof and speaks TLS when given a certificate).
//!
//! Ballista's registration names the loopback port. The executor declares
//! its task port, and whether it speaks TLS, in the user agent of its calls
//! to the scheduler, and the scheduler writes the declared port into the
//! registration before Ballista reads it.
//!
//! ```
//! use quiver_core::task_port::TaskPort;
//! let port = TaskPort { port: 50052, tls: true };
//! let agent = format!("quiver-executor {} tonic/0.14", port.word());
//! assert_eq!(TaskPort::declared(&agent), Some(port));
//! assert_eq!(TaskPort::declared("tonic/0.14"), None);
//! ```

/// An executor's task port, as it declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskPort {
    /// The port.
    pub port: u16,
    /// Whether it speaks TLS only.
    pub tls: bool,
}

/// Where the declaration sits in a user agent.
const KEY: &str = "quiver-task-port=";
/// What follows the port when it speaks TLS.
const TLS_MARK: &str = "+tls";

impl TaskPort {
    /// The user agent word that declares this port.
    pub fn word(&self) -> String {
        let tls = if self.tls { TLS_MARK } else { "" };
        format!("{KEY}{}{tls}", self.port)
    }

    /// The port `user_agent` declares, if it declares one.
    pub fn declared(user_agent: &str) -> Option<TaskPort> {
        let value = user_agent.split_whitespace().find_map(|word| word.strip_prefix(KEY))?;
        let (port, tls) = match value.strip_suffix(TLS_MARK) {
            Some(port) => (port, true),
            None => (value, false),
        };
        Some(TaskPort {
            port: port.parse().ok()?,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_declarations_declare_nothing() {
        assert_eq!(TaskPort::declared("quiver-task-port=70000"), None);
        assert_eq!(TaskPort::declared("quiver-task-port=+tls"), None);
        let plain = TaskPort { port: 1, tls: false };
        assert_eq!(TaskPort::declared(&plain.word()), Some(plain));
    }
}
