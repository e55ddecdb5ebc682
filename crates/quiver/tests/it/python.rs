//! The Python package (`python/`): its pytest suite starts its own S3 server
//! and cluster from the `quiver` binary under test and covers the client, the
//! Airflow provider in a real Airflow 3, Flight SQL through ADBC, and the
//! example notebook run headless.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::quiver_bin;

/// The Python of the test environment `scripts/test` builds.
pub fn python() -> PathBuf {
    std::env::var_os("QUIVER_PYTHON")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/quiver-python/venv/bin/python")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("no Python test environment: run scripts/test (it builds one), or set QUIVER_PYTHON to a python with python/requirements-test.txt and ./python installed")
        })
}

#[test]
fn python_client_airflow_provider_flight_sql_and_notebook() {
    let python = python();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../python");
    let out = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::Warning",
            "tests",
        ])
        .current_dir(&dir)
        .env("QUIVER_BIN", quiver_bin())
        .env_remove("QUIVER_SCHEDULER")
        .env_remove("QUIVER_TOKEN")
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pytest failed\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed"), "{stdout}");
    assert!(!stdout.contains("skipped"), "nothing may be skipped:\n{stdout}");
}
