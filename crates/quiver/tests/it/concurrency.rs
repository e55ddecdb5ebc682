//! Many jobs at once on a cluster of real processes: all answered right,
//! short jobs not starved by a long one, a full queue refused with a reason.

use std::time::{Duration, Instant};

use quiver_core::api::{JobState, SubmitJob};

use crate::harness::{Cluster, ClusterOptions, S3Server};
use crate::tally::Tally;

/// A two-stage query whose answer tells which job it was: `n * 1000 + 20`
/// (20 orders on the first day).
fn short_job(n: u64) -> String {
    format!(
        "{}SELECT {n} * 1000 + count(*) AS v FROM orders WHERE day = '2024-03-01';",
        crate::data::sample_orders_ddl()
    )
}

/// Seconds of cross product over the orders.
fn long_job() -> String {
    format!(
        "{}SELECT count(*) AS n FROM orders a, orders b, orders c, orders d;",
        crate::data::sample_orders_ddl()
    )
}

/// Runs a short job and waits for it; its wall time.
fn run_short(cluster: &Cluster, n: u64) -> Duration {
    let started = Instant::now();
    let id = cluster.submit_rest(&short_job(n), &format!("short-{n}"));
    let job = cluster.wait_job(&id, Duration::from_secs(120));
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary);
    assert_eq!(cluster.result_column(&id, "v")[0], n * 1000 + 20);
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn twenty_jobs_at_once_short_jobs_beside_a_long_one_and_a_full_queue() {
    let s3 = S3Server::start();
    let cluster = Cluster::start(
        &s3,
        ClusterOptions {
            scheduler_args: vec![
                "--max-running-jobs".into(),
                "4".into(),
                "--max-queued-jobs".into(),
                "30".into(),
                "--max-result-bytes".into(),
                "1048576".into(),
            ],
            ..Default::default()
        },
    );

    // 20 jobs from four clients at once, each with its own answer.
    let started = Instant::now();
    let ids: Vec<(u64, String)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4u64)
            .map(|client| {
                let cluster = &cluster;
                scope.spawn(move || {
                    (0..5u64)
                        .map(|i| {
                            let n = client * 5 + i + 1;
                            (n, cluster.submit_rest(&short_job(n), &format!("burst-{n}")))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    let mut tally = Tally::new("concurrency");
    for (n, id) in &ids {
        let job = cluster.wait_job(id, Duration::from_secs(300));
        tally.job(job.summary.state == JobState::Succeeded);
        assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary);
        let v = cluster.result_column(id, "v")[0];
        tally.answer(v == n * 1000 + 20);
        assert_eq!(v, n * 1000 + 20, "job {id}");
    }
    let burst = started.elapsed();

    // Short jobs alone, then beside a long one: they still run.
    let alone = median((1..=3).map(|n| run_short(&cluster, 100 + n)).collect());
    let long = cluster.submit_rest(&long_job(), "long");
    crate::harness::wait_for("the long job to run", Duration::from_secs(60), || {
        cluster.job(&long).summary.progress.tasks_running > 0
    });
    let beside = median((1..=3).map(|n| run_short(&cluster, 200 + n)).collect());
    assert!(
        !cluster.job(&long).summary.state.is_terminal(),
        "the long job ended before the short ones were measured: make it longer"
    );

    // A full queue: the long job holds slots, one more runs, the rest wait
    // until the queue limit, then submissions are refused with a reason.
    let limited_body = |n: u64| {
        serde_json::to_value(SubmitJob {
            sql: long_job(),
            name: Some(format!("queued-{n}")),
            ..Default::default()
        })
        .unwrap()
    };
    let mut refused = None;
    let mut accepted = vec![];
    for n in 0..40 {
        let r = cluster.post("/api/v1/jobs", &limited_body(n));
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().unwrap();
        if status == 201 {
            accepted.push(body["id"].as_str().unwrap().to_owned());
        } else {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("40 long jobs were all accepted with a queue limit of 30");
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("queue is full") && message.contains("--max-queued-jobs"),
        "{message}"
    );
    for id in accepted.iter().chain([&long]) {
        let _ = cluster.post(&format!("/api/v1/jobs/{id}/cancel"), &serde_json::json!({}));
    }

    // A job's results share one byte budget (1 MiB here): the first large
    // result is cut at it and says so, the next gets nothing, and the job
    // succeeds.
    let big = "SELECT value, value * 2 AS twice FROM generate_series(1, 1000000);";
    let id = cluster.submit_rest(&format!("{big}\n{big}"), "over-budget");
    let job = cluster.wait_job(&id, Duration::from_secs(300));
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary);
    let (first, second) = (&job.statements[0], &job.statements[1]);
    let kept = first.result_rows.unwrap_or_default();
    assert!(first.result_truncated && kept > 0 && kept < 1_000_000, "{first:?}");
    let summary = first.summary.as_deref().unwrap_or_default();
    assert!(
        summary.contains("byte limit") && summary.contains("1.0 MiB"),
        "{summary}"
    );
    assert!(second.result_truncated && second.result_rows == Some(0), "{second:?}");

    // The refused submission is the fault: the queue overflowed.
    tally.faults = 1;
    tally.panics = cluster.logs().matches("panicked at").count() as u64;
    tally.record();
    assert_eq!(tally.panics, 0, "{}", cluster.logs());
    eprintln!(
        "concurrency: 20 jobs from 4 clients all right in {:.1}s; a short job took {:.2}s alone and {:.2}s \
         beside a long one (medians of 3); refused after {} queued with HTTP {status}",
        burst.as_secs_f64(),
        alone.as_secs_f64(),
        beside.as_secs_f64(),
        accepted.len()
    );
}
