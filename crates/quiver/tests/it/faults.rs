//! Faults injected into a running cluster of real processes: an executor
//! stopped with SIGTERM mid-query, one SIGKILLed while it holds shuffle
//! output a running query still needs, the last executor lost, an executor
//! coming back.

use std::time::{Duration, Instant};

use quiver_core::api::{ExecutorInfo, ExecutorState, JobDetail, JobList, JobState, StageState};

use crate::harness::{Cluster, ClusterOptions, S3Server, wait_for};
use crate::slow_link::SlowLink;
use crate::tally::Tally;

/// The executor timeout these tests run with: the default.
const EXECUTOR_TIMEOUT: Duration = quiver_scheduler::SchedulerOptions::DEFAULT_EXECUTOR_TIMEOUT;

/// Three stages over the sample orders (60 rows, three days): a scan, a
/// 60⁴-row cross product aggregated per day, the final sort.
fn slow_job() -> String {
    crate::data::sample_orders_ddl()
        + "SELECT a.day, count(*) AS n FROM orders a, orders b, orders c, orders d GROUP BY a.day ORDER BY a.day;"
}

/// True once a stage of the job has succeeded (its output lives on the
/// executors) and tasks of a later one are running.
fn past_first_stage(cluster: &Cluster, id: &str) -> bool {
    let job = cluster.job(id);
    let done = job
        .queries
        .iter()
        .flat_map(|q| q.stages.iter())
        .any(|s| s.state == StageState::Succeeded);
    done && job.summary.progress.tasks_running > 0
}

/// Counts a job that had to succeed with the integer column `n` equal to
/// `expected`, then asserts both.
fn succeeded_with(tally: &mut Tally, cluster: &Cluster, job: &JobDetail, expected: &[u64]) {
    let succeeded = job.summary.state == JobState::Succeeded;
    tally.job(succeeded);
    assert!(succeeded, "{:?}\n{}", job.summary, cluster.logs());
    let right = cluster.result_column(&job.summary.id, "n") == expected;
    tally.answer(right);
    assert!(right, "job {} answered otherwise", job.summary.id);
}

#[test]
fn executor_loss_is_seen_recovered_from_and_reported() {
    let s3 = S3Server::start();
    let mut cluster = Cluster::start(
        &s3,
        ClusterOptions {
            executor_timeout_secs: EXECUTOR_TIMEOUT.as_secs(),
            ..Default::default()
        },
    );
    let expected = [4_320_000, 4_320_000, 4_320_000];
    let mut tally = Tally::new("executor_loss");

    // Undisturbed, for the time it takes.
    let started = Instant::now();
    let id = cluster.submit_rest(&slow_job(), "undisturbed");
    let job = cluster.wait_job(&id, Duration::from_secs(300));
    let undisturbed = started.elapsed();
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary);
    assert_eq!(cluster.result_column(&id, "n"), expected);

    // SIGTERM: the executor stops taking tasks, deregisters and exits; the
    // job it served completes on the other one.
    let id = cluster.submit_rest(&slow_job(), "one-executor-stopped");
    wait_for("the job's tasks to run", Duration::from_secs(120), || {
        cluster.job(&id).summary.progress.tasks_running > 0
    });
    let (stopped, mut proc) = cluster.executors.remove(0);
    let status = proc.terminate(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "the executor did not exit cleanly on SIGTERM: {status:?}\n{}",
        proc.log_text()
    );
    let exited = Instant::now();
    wait_for("the stopped executor to leave", EXECUTOR_TIMEOUT, || {
        cluster.executors_alive().iter().all(|e| e.id != stopped)
    });
    let left = exited.elapsed();
    let job = cluster.wait_job(&id, Duration::from_secs(300));
    succeeded_with(&mut tally, &cluster, &job, &expected);
    let replacement = cluster.spawn_executor(5, 2);
    cluster.executors.push(replacement);
    wait_for("a replacement executor", Duration::from_secs(60), || {
        cluster.executors_alive().len() >= 2
    });

    // SIGKILL an executor once the first stage's output is on the executors.
    let id = cluster.submit_rest(&slow_job(), "one-executor-killed");
    wait_for("the job to pass its first stage", Duration::from_secs(120), || {
        past_first_stage(&cluster, &id)
    });
    let (victim, mut proc) = cluster.executors.remove(0);
    proc.kill();
    let killed = Instant::now();
    wait_for("the executor to show as lost", EXECUTOR_TIMEOUT * 2, || {
        let all: Vec<ExecutorInfo> = serde_json::from_value(cluster.get_json("/api/v1/executors")).unwrap();
        all.iter().any(|e| e.id == victim && e.state == ExecutorState::Lost)
    });
    let seen = killed.elapsed();
    let job = cluster.wait_job(&id, Duration::from_secs(300));
    let recovered = killed.elapsed();
    succeeded_with(&mut tally, &cluster, &job, &expected);
    // Times are reported below, not asserted; these bounds only tell a
    // recovery from a hang on a loaded machine. (The job runs again from the
    // start when Ballista loses track of it: loss, 5 s of stall, a whole run,
    // up to three runs. With a release build compiling beside the suite, one
    // recovery took 155 s after a 19 s undisturbed run; idle, 27 s.)
    assert!(
        seen <= EXECUTOR_TIMEOUT + Duration::from_secs(5),
        "the loss was seen {seen:?} after the kill"
    );
    assert!(
        recovered <= Duration::from_secs(60) + undisturbed * 6,
        "the job finished {recovered:?} after the kill (undisturbed: {undisturbed:?})"
    );

    // The last executor lost: the job fails with a reason, it does not hang.
    let id = cluster.submit_rest(&slow_job(), "no-executor-left");
    wait_for("the job's tasks to run", Duration::from_secs(120), || {
        cluster.job(&id).summary.progress.tasks_running > 0
    });
    let (_, mut last) = cluster.executors.remove(0);
    last.kill();
    let killed = Instant::now();
    let job = cluster.wait_job(&id, Duration::from_secs(120));
    let failed_after = killed.elapsed();
    let error = job.summary.error.clone().unwrap_or_default();
    tally.job(job.summary.state == JobState::Failed && error.contains("executor"));
    assert_eq!(job.summary.state, JobState::Failed, "{:?}", job.summary);
    assert!(error.contains("executor"), "{error}");
    assert!(
        failed_after <= Duration::from_secs(60),
        "failed {failed_after:?} after the kill"
    );

    // An executor that comes back is used again.
    let back = cluster.spawn_executor(7, 2);
    cluster.executors.push(back);
    wait_for("an executor to register again", Duration::from_secs(60), || {
        !cluster.executors_alive().is_empty()
    });
    let id = cluster.submit_rest(&slow_job(), "after-recovery");
    let job = cluster.wait_job(&id, Duration::from_secs(300));
    succeeded_with(&mut tally, &cluster, &job, &expected);

    // Every job above gave the right answer or the failure it had to; no
    // process panicked.
    let logs = cluster.logs();
    assert!(!logs.contains("panicked at"), "a process panicked:\n{logs}");
    tally.faults = 3;
    tally.panics = logs.matches("panicked at").count() as u64;
    for took in [left, recovered, failed_after] {
        tally.recovery(took);
    }
    tally.record();
    eprintln!(
        "executor loss (SIGTERM, SIGKILL, last executor SIGKILLed): undisturbed {:.1}s, stopped executor gone {:.1}s after it exited, loss seen {:.1}s after the kill, job done {:.1}s after it, \
         no executor left: failed {:.1}s after the kill ({error})",
        undisturbed.as_secs_f64(),
        left.as_secs_f64(),
        seen.as_secs_f64(),
        recovered.as_secs_f64(),
        failed_after.as_secs_f64()
    );
}

/// TPC-H at SF0.1 (Parquet, tpchgen-cli) under `dir`, and the script that
/// declares its tables and runs Q21 (13 stages: the query vanilla Ballista
/// never answers after an executor is killed).
fn tpch_q21(dir: &std::path::Path) -> String {
    let data = dir.join("tpch-sf0.1");
    let tool = crate::harness::which("tpchgen-cli").expect("tpchgen-cli (pip install tpchgen-cli; scripts/test does)");
    let out = std::process::Command::new(tool)
        .args(["parquet", "-s", "0.1", "--parts=2"])
        .arg(format!("--output-dir={}", data.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tpchgen-cli: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let q21 = std::fs::read_to_string(repo.join("benches/tpch/queries/q21.sql")).unwrap();
    let ddl: String = ["supplier", "lineitem", "orders", "nation"]
        .iter()
        .map(|t| {
            format!(
                "CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION '{}/{t}/';\n",
                data.display()
            )
        })
        .collect();
    format!("{ddl}{};", q21.trim().trim_end_matches(';'))
}

#[test]
fn tpch_q21_answers_after_an_executor_is_killed_mid_query() {
    let s3 = S3Server::start();
    let mut cluster = Cluster::start(
        &s3,
        ClusterOptions {
            executor_timeout_secs: EXECUTOR_TIMEOUT.as_secs(),
            ..Default::default()
        },
    );
    let mut tally = Tally::new("tpch_q21_executor_killed");
    let script = tpch_q21(&cluster.dir);
    let rows = |cluster: &Cluster, id: &str| cluster.get_json(&format!("/api/v1/jobs/{id}/result"))["rows"].clone();

    let started = Instant::now();
    let id = cluster.submit_rest(&script, "q21-undisturbed");
    let job = cluster.wait_job(&id, Duration::from_secs(600));
    let undisturbed = started.elapsed();
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary);
    let expected = rows(&cluster, &id);
    assert!(
        expected.as_array().is_some_and(|r| !r.is_empty()),
        "Q21 answered no rows: {expected}"
    );

    let id = cluster.submit_rest(&script, "q21-executor-killed");
    wait_for("Q21 to pass its first stage", Duration::from_secs(300), || {
        past_first_stage(&cluster, &id)
    });
    let (_, mut victim) = cluster.executors.remove(0);
    victim.kill();
    tally.faults += 1;
    let killed = Instant::now();
    let job = cluster.wait_job(&id, Duration::from_secs(600));
    let recovered = killed.elapsed();
    let completed = job.summary.state == JobState::Succeeded;
    tally.job(completed);
    tally.recovery(recovered);
    if completed {
        tally.answer(rows(&cluster, &id) == expected);
    }
    let logs = cluster.logs();
    tally.panics = logs.matches("panicked at").count() as u64;
    tally.record();
    eprintln!(
        "q21 fault: undisturbed {:.1}s; answered {:.1}s after an executor was killed",
        undisturbed.as_secs_f64(),
        recovered.as_secs_f64()
    );
    assert!(completed, "{:?}\n{logs}", job.summary);
    assert_eq!(rows(&cluster, &id), expected, "Q21 answered otherwise after the kill");
    assert_eq!(tally.panics, 0, "a process panicked:\n{logs}");
    // As above: a bound that tells a recovery from a hang, not a timing.
    assert!(
        recovered <= Duration::from_secs(60) + undisturbed * 6,
        "Q21 finished {recovered:?} after the kill (undisturbed: {undisturbed:?})"
    );
}

#[test]
fn a_restarted_scheduler_gets_its_executors_back_and_fails_what_was_running() {
    let s3 = S3Server::start();
    let options = ClusterOptions::default();
    let mut cluster = Cluster::start(&s3, ClusterOptions::default());
    let script = cluster.dir.join("slow.sql");
    std::fs::write(&script, slow_job()).unwrap();

    // A client following a running job when the scheduler dies.
    let client = cluster
        .quiver(&["submit", script.to_str().unwrap(), "--name", "interrupted"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = {
        let mut found = None;
        wait_for("the job to run", Duration::from_secs(120), || {
            let list: JobList = serde_json::from_value(cluster.get_json("/api/v1/jobs")).unwrap();
            found = list
                .jobs
                .into_iter()
                .find(|j| j.name == "interrupted" && j.progress.tasks_running > 0)
                .map(|j| j.id);
            found.is_some()
        });
        found.unwrap()
    };
    cluster.scheduler.kill();
    let killed = Instant::now();
    let out = client.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("scheduler"), "the client's error: {stderr}");

    // The same scheduler comes back: the executors, never restarted, return;
    // the job that was running is failed with the reason; history is kept.
    cluster.scheduler = cluster.spawn_scheduler(&options);
    cluster.wait_http();
    wait_for("the executors to re-register", Duration::from_secs(60), || {
        cluster.executors_alive().len() == 2
    });
    let back = killed.elapsed();
    let job = cluster.job(&id);
    assert_eq!(job.summary.state, JobState::Failed, "{:?}", job.summary);
    assert!(
        job.summary.error.as_deref().unwrap_or("").contains("scheduler stopped"),
        "{:?}",
        job.summary
    );
    let again = cluster.submit_rest(&slow_job(), "after-restart");
    let job = cluster.wait_job(&again, Duration::from_secs(300));
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary);
    assert_eq!(cluster.result_column(&again, "n"), [4_320_000, 4_320_000, 4_320_000]);
    let mut tally = Tally::new("scheduler_restart");
    tally.faults = 1;
    tally.job(true);
    tally.job(true);
    tally.answer(true);
    tally.recovery(back);
    tally.panics = cluster.logs().matches("panicked at").count() as u64;
    tally.record();
    assert_eq!(tally.panics, 0, "a process panicked:\n{}", cluster.logs());
}

#[test]
fn an_s3_server_stopped_mid_job_fails_it_cleanly_and_the_next_job_runs() {
    let mut s3 = crate::data::sample_lake();
    let cluster = Cluster::start(&s3, ClusterOptions::default());
    // Reads S3 first, computes for seconds, writes to S3 last.
    let copy = format!(
        "{}COPY (SELECT a.day, count(*) AS n FROM orders_csv a, orders_csv b, orders_csv c GROUP BY a.day) \
         TO 's3://lake/fault-out/' STORED AS PARQUET;",
        crate::data::ddl("lake")
    );
    let id = cluster.submit_rest(&copy, "s3-stopped");
    wait_for("the job to pass its first stage", Duration::from_secs(120), || {
        past_first_stage(&cluster, &id)
    });
    s3.stop();
    let stopped = Instant::now();
    let job = cluster.wait_job(&id, Duration::from_secs(180));
    let failed_after = stopped.elapsed();
    assert_eq!(job.summary.state, JobState::Failed, "{:?}", job.summary);
    let error = job.summary.error.clone().unwrap_or_default();
    assert!(
        error.contains("127.0.0.1") || error.contains("S3"),
        "the error does not say what could not be reached: {error}"
    );
    assert!(
        failed_after <= Duration::from_secs(90),
        "failed {failed_after:?} after S3 stopped"
    );

    // S3 back: nothing of the failed write is visible, and the next job runs.
    s3.restart();
    assert_eq!(s3.list("lake", "fault-out/"), Vec::<String>::new());
    let id = cluster.submit_rest(
        &format!("{}SELECT count(*) AS n FROM orders_csv;", crate::data::ddl("lake")),
        "after-s3",
    );
    let job = cluster.wait_job(&id, Duration::from_secs(120));
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary);
    assert_eq!(cluster.result_column(&id, "n"), [crate::data::ORDERS as u64]);
    let mut tally = Tally::new("s3_stopped");
    tally.faults = 1;
    tally.job(true);
    tally.job(true);
    tally.answer(true);
    tally.recovery(failed_after);
    tally.record();
    eprintln!(
        "s3 fault: the job failed {:.1}s after S3 stopped: {error}",
        failed_after.as_secs_f64()
    );
}

#[test]
fn an_s3_server_slowed_mid_job_still_gets_the_whole_answer_written() {
    let s3 = crate::data::sample_lake();
    let link = SlowLink::start(&s3);
    let cluster = Cluster::start(&link, ClusterOptions::default());
    // Reads S3 first, computes for seconds, writes to S3 last.
    let copy = |out: &str| {
        format!(
            "{}COPY (SELECT a.day, count(*) AS n FROM orders_csv a, orders_csv b, orders_csv c GROUP BY a.day) \
             TO 's3://lake/{out}/' STORED AS PARQUET;",
            crate::data::ddl("lake")
        )
    };
    let started = Instant::now();
    let id = cluster.submit_rest(&copy("fast-out"), "s3-fast");
    let job = cluster.wait_job(&id, Duration::from_secs(300));
    let fast = started.elapsed();
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary);

    // Every chunk to and from S3 held back a quarter of a second once the
    // job has read its input: the write crawls, but lands whole.
    let mut tally = Tally::new("s3_slowed");
    let started = Instant::now();
    let id = cluster.submit_rest(&copy("slow-out"), "s3-slowed");
    wait_for("the job to pass its first stage", Duration::from_secs(120), || {
        past_first_stage(&cluster, &id)
    });
    link.slow_down(Duration::from_millis(250));
    tally.faults = 1;
    let job = cluster.wait_job(&id, Duration::from_secs(600));
    let slowed = started.elapsed();
    link.slow_down(Duration::ZERO);
    tally.job(job.summary.state == JobState::Succeeded);
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary);

    // What it wrote is all there: one row per day, every pair counted.
    let id = cluster.submit_rest(
        "CREATE EXTERNAL TABLE written STORED AS PARQUET LOCATION 's3://lake/slow-out/';\n\
         SELECT count(*) AS days, sum(n) AS total FROM written;",
        "read-back",
    );
    let job = cluster.wait_job(&id, Duration::from_secs(120));
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary);
    let days = crate::data::orders()
        .iter()
        .map(|o| o.day)
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let total = (crate::data::ORDERS as u64).pow(3);
    let right = cluster.result_column(&id, "days") == [days] && cluster.result_column(&id, "total") == [total];
    tally.answer(right);
    tally.panics = cluster.logs().matches("panicked at").count() as u64;
    tally.record();
    assert!(
        right,
        "the slowed job's output is not whole: {}",
        cluster.get_json(&format!("/api/v1/jobs/{id}/result"))
    );
    assert_eq!(tally.panics, 0, "{}", cluster.logs());
    eprintln!(
        "s3 slowed: the job took {:.1}s with every chunk held back 250 ms after its first stage, {:.1}s undisturbed",
        slowed.as_secs_f64(),
        fast.as_secs_f64()
    );
}
