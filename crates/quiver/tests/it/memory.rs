//! An executor under `--memory-limit` with data larger than the limit: the
//! sort and the aggregation spill to disk and give the right answers; a hash
//! join, which cannot spill its build side, fails with an out-of-memory
//! message and a hint, the same join as a sort-merge join (the hint's
//! setting) spills and answers right, and the executor lives on.

use std::fmt::Write as _;

use quiver_core::api::{JobDetail, JobState};

use crate::harness::{Cluster, ClusterOptions, S3Server};
use crate::tally::Tally;

/// Rows of the test table: about 32 MB of CSV, as much again in memory.
const ROWS: u64 = 600_000;
/// The executor's memory for query operators.
const LIMIT: &str = "32MiB";

/// `k,s,x` with `s` a distinct 32-character key per row, in no order.
fn write_table(path: &std::path::Path) {
    let mut text = String::with_capacity(60 * ROWS as usize);
    text.push_str("k,s,x\n");
    for i in 0..ROWS {
        // An odd multiplier is a bijection of u64: the keys are distinct.
        let mixed = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        writeln!(text, "{},{mixed:016x}{:016x},{i}", mixed >> 20, !mixed).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn script(csv: &std::path::Path, query: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE t (k BIGINT, s VARCHAR, x BIGINT) STORED AS CSV LOCATION '{}' \
         OPTIONS ('format.has_header' 'true');\n{query}",
        csv.display()
    )
}

/// Spills the job's operators named `operator` reported, from the stage plans.
fn spills(job: &JobDetail, operator: &str) -> u64 {
    job.queries
        .iter()
        .flat_map(|q| q.stages.iter())
        .flat_map(|s| s.plan.lines())
        .filter(|l| l.trim_start().starts_with(operator))
        .filter_map(|l| {
            let count = l.split("spill_count=").nth(1)?;
            let digits: String = count.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn an_executor_under_a_memory_limit_spills_sorts_aggregates_and_sort_merge_joins_and_survives_a_hash_join() {
    let s3 = S3Server::start();
    let cluster = Cluster::start(
        &s3,
        ClusterOptions {
            executors: 1,
            executor_args: vec!["--memory-limit".into(), LIMIT.into()],
            ..Default::default()
        },
    );
    let csv = cluster.dir.join("t.csv");
    write_table(&csv);
    let wait = std::time::Duration::from_secs(600);
    // Every query below needs more memory than the limit: a fault each.
    let mut tally = Tally::new("memory_limit");

    // A full sort of every row (a window over the whole table), and a group
    // per row: each spills and answers one value per row of the table.
    for (name, sql, column, operator) in [
        (
            "sort",
            "SELECT max(rn) AS m FROM (SELECT row_number() OVER (ORDER BY s) AS rn FROM t);",
            "m",
            "SortExec",
        ),
        (
            "aggregate",
            "SELECT count(*) AS groups FROM (SELECT s, count(*) AS c FROM t GROUP BY s);",
            "groups",
            "AggregateExec",
        ),
    ] {
        let id = cluster.submit_rest(&script(&csv, sql), name);
        let job = cluster.wait_job(&id, wait);
        tally.faults += 1;
        tally.job(job.summary.state == JobState::Succeeded);
        assert_eq!(job.summary.state, JobState::Succeeded, "{name}: {:?}", job.summary);
        let answer = cluster.result_column(&id, column)[0];
        tally.answer(answer == ROWS);
        assert_eq!(answer, ROWS, "{name}");
        assert!(spills(&job, operator) > 0, "the {name} did not spill");
    }

    // A join whose build side cannot fit: a clear failure, not a crash.
    let id = cluster.submit_rest(
        &script(&csv, "SELECT count(*) AS pairs FROM t a JOIN t b ON a.s = b.s;"),
        "join",
    );
    let job = cluster.wait_job(&id, wait);
    let error = job.summary.error.clone().unwrap_or_default();
    tally.faults += 1;
    tally.job(job.summary.state == JobState::Failed && error.contains("hint: a hash join"));
    assert_eq!(job.summary.state, JobState::Failed, "{:?}", job.summary);
    assert!(
        error.contains("Failed to allocate") && error.contains("hint: a hash join"),
        "{error}"
    );

    // The same join as a sort-merge join, which Ballista's adaptive planner
    // chooses when a build partition is larger than the setting the hint
    // names: its sorts spill and it answers one pair per row. Its two sorts
    // run at once, each keeping a reservation for merging its spills (10 MB
    // by default): under a 32 MiB pool they keep less. A merge reads one
    // batch of each spill file at a time; with 8192-row batches, two merges
    // and their sorts' shares could fill the pool when the tasks' timing
    // made them overlap (seen once under the whole suite's load), so the
    // batches are smaller.
    let id = cluster.submit_rest(
        &script(
            &csv,
            "SET ballista.optimizer.hash_join_max_build_partition_bytes = '1048576';\n\
             SET datafusion.execution.sort_spill_reservation_bytes = '1048576';\n\
             SET datafusion.execution.batch_size = '1024';\n\
             SELECT count(*) AS pairs FROM t a JOIN t b ON a.s = b.s;",
        ),
        "sort-merge join",
    );
    let job = cluster.wait_job(&id, wait);
    tally.faults += 1;
    tally.job(job.summary.state == JobState::Succeeded);
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary);
    let pairs = cluster.result_column(&id, "pairs")[0];
    tally.answer(pairs == ROWS);
    assert_eq!(pairs, ROWS, "sort-merge join");
    let plans: String = job
        .queries
        .iter()
        .flat_map(|q| q.stages.iter())
        .map(|s| s.plan.as_str())
        .collect();
    assert!(plans.contains("SortMergeJoin"), "not a sort-merge join:\n{plans}");
    assert!(
        spills(&job, "SortExec") + spills(&job, "SortMergeJoin") > 0,
        "the join did not spill:\n{plans}"
    );

    // The executor is still there and runs the next job.
    assert_eq!(cluster.executors_alive().len(), 1);
    let id = cluster.submit_rest(&script(&csv, "SELECT count(*) AS n FROM t WHERE x < 10;"), "after");
    let job = cluster.wait_job(&id, wait);
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary);
    assert_eq!(cluster.result_column(&id, "n")[0], 10);
    tally.panics = cluster.logs().matches("panicked at").count() as u64;
    tally.record();
    assert_eq!(tally.panics, 0, "{}", cluster.logs());
}
