//! Flight SQL transactions, for the clients that insist on them.
//!
//! ADBC with autocommit off (what Airflow's `DbApiHook` asks for) will not
//! run a statement on a server that reports no transaction support. Quiver
//! accepts transactions with honest semantics: statements take effect when
//! they run (a Delta commit, a written file), `commit` ends the transaction,
//! and `rollback` succeeds only while nothing in it has written; otherwise it
//! fails and says what already took effect.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tonic::Status;

/// Transactions not ended after this long are forgotten (their client is gone).
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

struct Open {
    began: Instant,
    /// Statements in it that wrote (DDL, INSERT, COPY, ...).
    writes: Vec<String>,
}

/// Open transactions, by id.
#[derive(Default)]
pub struct Transactions {
    open: Mutex<HashMap<Bytes, Open>>,
    next: Mutex<u64>,
}

impl Transactions {
    /// Starts a transaction; its id.
    pub fn begin(&self) -> Bytes {
        let id = {
            let mut next = self.next.lock();
            *next += 1;
            Bytes::from(format!("quiver-txn-{}", *next))
        };
        let mut open = self.open.lock();
        open.retain(|_, t| t.began.elapsed() < ABANDONED_AFTER);
        open.insert(
            id.clone(),
            Open {
                began: Instant::now(),
                writes: vec![],
            },
        );
        id
    }

    /// Refuses an id that is not an open transaction.
    pub fn check(&self, id: &Bytes) -> Result<(), Status> {
        if self.open.lock().contains_key(id) {
            Ok(())
        } else {
            Err(Status::not_found(
                "no such open transaction (it ended, or the scheduler restarted)",
            ))
        }
    }

    /// Notes that `statement` wrote within transaction `id`.
    pub fn wrote(&self, id: &Bytes, statement: &str) {
        if let Some(t) = self.open.lock().get_mut(id) {
            t.writes.push(quiver_core::script::short_first_line(statement, 60));
        }
    }

    /// Ends a transaction: a commit always, a rollback only if nothing
    /// wrote (a refused rollback leaves the transaction open, to commit).
    pub fn end(&self, id: &Bytes, commit: bool) -> Result<(), Status> {
        let mut open = self.open.lock();
        let t = open
            .get(id)
            .ok_or_else(|| Status::not_found("no such open transaction (it ended, or the scheduler restarted)"))?;
        if !commit && !t.writes.is_empty() {
            return Err(Status::failed_precondition(format!(
                "cannot roll back: Quiver statements take effect when they run, and these already did: {}",
                t.writes.join("; ")
            )));
        }
        open.remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_works_only_while_nothing_wrote() {
        let txns = Transactions::default();
        let read_only = txns.begin();
        txns.check(&read_only).unwrap();
        txns.end(&read_only, false).unwrap();
        assert!(txns.check(&read_only).is_err(), "ended once");

        let writing = txns.begin();
        txns.wrote(&writing, "INSERT INTO t SELECT 1");
        let err = txns.end(&writing, false).unwrap_err();
        assert!(err.message().contains("INSERT INTO t"), "{err}");
        txns.end(&writing, true).expect("still open after the refused rollback");

        let committed = txns.begin();
        txns.wrote(&committed, "COPY ...");
        txns.end(&committed, true).unwrap();
        assert!(txns.end(&committed, true).is_err());
    }
}
