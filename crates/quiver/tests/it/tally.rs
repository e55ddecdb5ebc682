//! The reliability suite's figures. Each test that injects faults records
//! what it injected and what it saw; `scripts/test` adds the records up into
//! one line at the end of the run (`scripts/reliability-summary`).
//!
//! Tests record before they assert where they can, so a wrong answer or a
//! panic shows in the summary; a test that fails before it records leaves
//! no record, and fails the suite.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// What one test injected and what came of it.
#[derive(Debug, Default, Serialize)]
pub struct Tally {
    /// The test, as the summary names it.
    pub test: &'static str,
    /// Faults injected: processes killed or stopped, servers stopped, queries
    /// past a memory limit, damaged files and random statements.
    pub faults: u64,
    /// Jobs that had to give an answer or a clear failure.
    pub jobs: u64,
    /// Of those, the ones that did.
    pub jobs_completed: u64,
    /// Answers compared with the right ones.
    pub answers_checked: u64,
    /// Of those, the ones that differed.
    pub wrong_results: u64,
    /// Panics in the cluster's logs or the client.
    pub panics: u64,
    /// The longest time from a fault to the job's right answer or its clear
    /// failure.
    pub worst_recovery_s: f64,
}

impl Tally {
    pub fn new(test: &'static str) -> Tally {
        Tally {
            test,
            ..Tally::default()
        }
    }

    /// One more job that had to complete; `completed` says whether it did.
    pub fn job(&mut self, completed: bool) {
        self.jobs += 1;
        self.jobs_completed += u64::from(completed);
    }

    /// One more answer compared with the right one; `right` says whether it was.
    pub fn answer(&mut self, right: bool) {
        self.answers_checked += 1;
        self.wrong_results += u64::from(!right);
    }

    /// A recovery time, kept if it is the worst so far.
    pub fn recovery(&mut self, took: Duration) {
        self.worst_recovery_s = self.worst_recovery_s.max(took.as_secs_f64());
    }

    /// The directory the records go to (`scripts/test` empties it first).
    pub fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reliability")
    }

    /// Writes the record and prints it.
    pub fn record(&self) {
        let dir = Tally::dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(format!("{}.json", self.test));
        let json = serde_json::to_string(self).unwrap();
        std::fs::write(&path, &json).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("reliability record: {json}");
    }
}
