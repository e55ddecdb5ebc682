//! The TPC-H harness at a tiny scale: all 22 queries on a Quiver cluster
//! (scheduler + two executors, as processes) give DuckDB's answers.
//!
//! `benches/tpch/run.py` does the work: it generates SF0.01 with tpchgen-cli,
//! starts the cluster with this build's `quiver`, runs each query once, and
//! with `--check` fails when any answer differs from DuckDB's.

use crate::harness::{Run, which};

#[test]
fn tpch_sf0_01_answers_match_duckdb_on_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = which("python3").expect("python3");
    let out = dir.path().join("out");
    let run = Run::from(
        std::process::Command::new(python)
            .arg(repo.join("benches/tpch/run.py"))
            .args([
                "--scale",
                "0.01",
                "--engines",
                "quiver-cluster,duckdb",
                "--runs",
                "0",
                "--warmup",
                "0",
                "--check",
            ])
            .arg("--quiver")
            .arg(env!("CARGO_BIN_EXE_quiver"))
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap(),
    );
    run.ok();
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("All answers match DuckDB's"), "{report}");
    for q in 1..=22 {
        assert!(
            report.contains(&format!("| q{q} |")),
            "q{q} missing from the report:\n{report}"
        );
    }
}
