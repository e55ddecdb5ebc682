//! The job service over REST: submit, follow, fail, cancel, list; history across
//! a scheduler restart; retention; access tokens; metrics.

use std::time::Duration;

use quiver_core::api::JobState;
use serde_json::json;

use crate::data;
use crate::harness::{Cluster, ClusterOptions, Run, S3Server, shared};

/// A query that keeps two executors busy for many seconds (64 million rows).
pub fn long_query() -> String {
    format!(
        "{}SELECT count(*) FROM orders_parquet a, orders_parquet b, orders_parquet c \
         WHERE a.amount + b.amount + c.amount > 1.0;",
        data::ddl("lake")
    )
}

#[test]
fn rest_submit_follow_and_read_the_result() {
    let s = shared();
    let body = json!({
        "name": "rest-by-day",
        "sql": format!("{}SELECT day, count(*) AS n FROM orders_csv WHERE qty >= ${{q}} GROUP BY day ORDER BY day;", data::ddl("lake")),
        "params": {"q": "3"},
        "conf": {"datafusion.execution.batch_size": "1024"}
    });
    let r = s.cluster.post("/api/v1/jobs", &body);
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<serde_json::Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = s.cluster.wait_job(&id, Duration::from_secs(120));
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary.error);
    assert_eq!(job.summary.source, quiver_core::api::JobSource::Rest);
    assert_eq!(job.statements.len(), 4);
    assert!(job.statements.iter().all(|st| st.state == JobState::Succeeded));
    assert_eq!(job.conf["datafusion.execution.batch_size"], "1024");
    let p = &job.summary.progress;
    assert!(p.tasks_total > 0 && p.tasks_done == p.tasks_total, "{p:?}");
    assert!(p.stages_done == p.stages_total && p.stages_total >= 2, "{p:?}");
    assert!(job.summary.started_at.is_some() && job.summary.finished_at >= job.summary.started_at);
    let q = job
        .queries
        .iter()
        .find(|q| q.statement == Some(4))
        .expect("the SELECT's query");
    assert!(q.stages.iter().all(|st| !st.plan.is_empty()));
    assert!(
        q.stages.iter().any(|st| st.plan.contains("metrics=[")),
        "plans carry metrics"
    );

    let expected: Vec<(String, usize)> = data::DAYS
        .iter()
        .map(|d| {
            (
                d.to_string(),
                data::orders().iter().filter(|o| &o.day == d && o.qty >= 3).count(),
            )
        })
        .collect();
    let preview = s.cluster.get_json(&format!("/api/v1/jobs/{id}/result"));
    assert_eq!(preview["statement"], 4);
    assert_eq!(preview["total_rows"], 4);
    for (row, (day, n)) in preview["rows"].as_array().unwrap().iter().zip(&expected) {
        assert_eq!(row["day"], day.as_str());
        assert_eq!(row["n"], *n as u64);
    }
    let csv = s
        .cluster
        .get(&format!("/api/v1/jobs/{id}/result?format=csv"))
        .text()
        .unwrap();
    assert_eq!(csv.lines().next(), Some("day,n"));
    assert_eq!(csv.lines().count(), 5);
    let r = s.cluster.get(&format!("/api/v1/jobs/{id}/result?statement=1"));
    assert_eq!(r.status().as_u16(), 404, "a CREATE has no result");
}

#[test]
fn a_failing_job_reports_its_error() {
    let s = shared();
    let id = s
        .cluster
        .submit_rest("SELECT 1;\nSELECT nothing FROM nowhere;\nSELECT 3;", "rest-fails");
    let job = s.cluster.wait_job(&id, Duration::from_secs(60));
    assert_eq!(job.summary.state, JobState::Failed);
    let error = job.summary.error.unwrap();
    assert!(
        error.contains("statement 2 (line 2: SELECT nothing FROM nowhere)") && error.contains("nowhere"),
        "{error}"
    );
    assert_eq!(job.statements[0].state, JobState::Succeeded);
    assert_eq!(job.statements[1].state, JobState::Failed);
    assert_eq!(job.statements[2].state, JobState::Queued, "statement 3 never ran");
}

#[test]
fn cancelling_a_long_job_stops_its_tasks() {
    let s = shared();
    let id = s.cluster.submit_rest(&long_query(), "rest-long");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = s.cluster.job(&id);
        if job.summary.progress.tasks_running > 0 {
            break;
        }
        assert!(
            !job.summary.state.is_terminal(),
            "the long job ended before it could be cancelled: {:?}",
            job.summary
        );
        assert!(std::time::Instant::now() < deadline, "no task started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = s.cluster.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({}));
    assert_eq!(r.status().as_u16(), 200);
    let job = s.cluster.wait_job(&id, Duration::from_secs(30));
    assert_eq!(job.summary.state, JobState::Cancelled);
    assert!(job.queries.iter().all(|q| q.state.is_terminal()), "{:?}", job.queries);
    // The executors let go of the cancelled tasks.
    crate::harness::wait_for("executors to stop the cancelled tasks", Duration::from_secs(30), || {
        s.cluster.executors_alive().iter().all(|e| e.running_tasks == 0)
    });
    let again = s.cluster.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({}));
    assert_eq!(again.status().as_u16(), 409);
    // And the cluster serves the next job.
    let next = s.cluster.submit_rest("SELECT 42 AS answer;", "after-cancel");
    assert_eq!(
        s.cluster.wait_job(&next, Duration::from_secs(60)).summary.state,
        JobState::Succeeded
    );
}

#[test]
fn jobs_list_filters_and_pages() {
    let s = shared();
    let tag = format!("pager-{}", crate::harness::free_port());
    let mut ids = vec![];
    for i in 0..5 {
        let sql = if i == 2 { "SELECT broken_column;" } else { "SELECT 1;" };
        ids.push(s.cluster.submit_rest(sql, &format!("{tag}-{i}")));
    }
    for id in &ids {
        s.cluster.wait_job(id, Duration::from_secs(60));
    }
    let page = s.cluster.get_json(&format!("/api/v1/jobs?q={tag}&limit=2"));
    assert_eq!(page["total"], 5);
    let names: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![format!("{tag}-4"), format!("{tag}-3")], "newest first");
    let last = s.cluster.get_json(&format!("/api/v1/jobs?q={tag}&limit=2&offset=4"));
    assert_eq!(last["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(last["jobs"][0]["name"], format!("{tag}-0"));
    let failed = s.cluster.get_json(&format!("/api/v1/jobs?q={tag}&state=failed"));
    assert_eq!(failed["total"], 1);
    assert_eq!(failed["jobs"][0]["id"], ids[2].as_str());
    let since = failed["jobs"][0]["submitted_at"].as_u64().unwrap();
    let later = s.cluster.get_json(&format!("/api/v1/jobs?q={tag}&since={since}"));
    assert_eq!(later["total"], 3, "jobs 2, 3 and 4 were submitted at or after job 2");
    let bad = s.cluster.get("/api/v1/jobs?state=sleeping");
    assert_eq!(bad.status().as_u16(), 400);
}

#[test]
fn bad_requests_get_clear_errors() {
    let s = shared();
    let cases = [
        (json!({"sql": "SELECT ${x};"}), "--param x=VALUE"),
        (
            json!({"sql": "SELECT 1;", "conf": {"datafusion.bogus": "1"}}),
            "unknown setting 'datafusion.bogus'",
        ),
        (json!({"sql": "   "}), "no SQL statement"),
        (json!({"name": "no sql"}), "invalid request body"),
    ];
    for (body, needle) in cases {
        let r = s.cluster.post("/api/v1/jobs", &body);
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let e: serde_json::Value = r.json().unwrap();
        assert!(
            e["error"].as_str().unwrap().contains(needle),
            "{e} should mention {needle}"
        );
    }
    // A body past the limit: 413, said plainly, and the scheduler carries on.
    let huge = json!({"sql": format!("SELECT 1; -- {}", "x".repeat(3 * 1024 * 1024))});
    let r = s.cluster.post("/api/v1/jobs", &huge);
    assert_eq!(r.status().as_u16(), 413);
    let e: serde_json::Value = r.json().unwrap();
    assert!(e["error"].as_str().unwrap().contains("larger than 2 MiB"), "{e}");
    let r = s.cluster.get("/api/v1/jobs/job-00000000-000000-0000");
    assert_eq!(r.status().as_u16(), 404);
    assert!(
        r.json::<serde_json::Value>().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("no job")
    );
}

#[test]
fn metrics_and_openapi_are_served() {
    let s = shared();
    let id = s.cluster.submit_rest("SELECT 1;", "metrics-probe");
    s.cluster.wait_job(&id, Duration::from_secs(60));
    let text = s.cluster.get("/metrics").text().unwrap();
    for needle in [
        "quiver_jobs_submitted_total",
        "quiver_jobs_finished_total{state=\"succeeded\"}",
        "quiver_job_duration_seconds_count",
        "quiver_running_tasks",
        "quiver_executors_alive 2",
    ] {
        assert!(text.contains(needle), "{needle} missing from /metrics:\n{text}");
    }
    let spec = s.cluster.get_json("/api/v1/openapi.json");
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/jobs/{id}/result",
        "/api/v1/executors",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[test]
fn history_survives_a_scheduler_restart() {
    let s3 = crate::data::sample_lake();
    let mut cluster = Cluster::start(
        &s3,
        ClusterOptions {
            executors: 1,
            ..Default::default()
        },
    );
    let done = cluster.submit_rest(
        &format!("{}SELECT count(*) AS n FROM orders_parquet;", data::ddl("lake")),
        "before-restart",
    );
    let before = cluster.wait_job(&done, Duration::from_secs(60));
    assert_eq!(before.summary.state, JobState::Succeeded);
    let running = cluster.submit_rest(&long_query(), "interrupted");
    cluster.wait_state(&running, JobState::Running, Duration::from_secs(30));

    cluster.scheduler.kill();
    cluster.scheduler = cluster.spawn_scheduler(&ClusterOptions::default());
    cluster.wait_http();

    let after = cluster.job(&done);
    assert_eq!(after.summary.state, JobState::Succeeded);
    assert_eq!(
        after.queries, before.queries,
        "stages, tasks and metrics come back as they were"
    );
    let preview = cluster.get_json(&format!("/api/v1/jobs/{done}/result"));
    assert_eq!(preview["rows"][0]["n"], data::ORDERS);
    let interrupted = cluster.job(&running);
    assert_eq!(interrupted.summary.state, JobState::Failed);
    assert!(
        interrupted
            .summary
            .error
            .unwrap()
            .contains("scheduler stopped while this job was running")
    );

    // The executor finds the new scheduler and work goes on.
    crate::harness::wait_for("the executor to re-register", Duration::from_secs(60), || {
        cluster.executors_alive().len() == 1
    });
    let next = cluster.submit_rest("SELECT 7 AS n;", "after-restart");
    assert_eq!(
        cluster.wait_job(&next, Duration::from_secs(60)).summary.state,
        JobState::Succeeded
    );
}

#[test]
fn history_keeps_only_the_configured_number_of_jobs() {
    let s3 = S3Server::start();
    let cluster = Cluster::start(
        &s3,
        ClusterOptions {
            executors: 1,
            scheduler_args: vec!["--history-max-jobs".into(), "3".into()],
            ..Default::default()
        },
    );
    let mut ids = vec![];
    for i in 0..5 {
        let id = cluster.submit_rest("SELECT 1;", &format!("kept-{i}"));
        cluster.wait_job(&id, Duration::from_secs(60));
        ids.push(id);
    }
    let list = cluster.get_json("/api/v1/jobs");
    assert_eq!(list["total"], 3);
    assert_eq!(cluster.get(&format!("/api/v1/jobs/{}", ids[0])).status().as_u16(), 404);
    let on_disk = std::fs::read_dir(cluster.history.join("jobs")).unwrap().count();
    assert_eq!(on_disk, 3, "removed jobs are removed from the history directory too");
}

#[test]
fn a_token_guards_the_api_the_cli_and_submission() {
    let s3 = crate::data::sample_lake();
    let token = "quiver-access-token-7f3a9";
    let mut cluster = Cluster::start(
        &s3,
        ClusterOptions {
            executors: 1,
            token: Some(token.into()),
            ..Default::default()
        },
    );
    // Without the token.
    let anonymous = reqwest::blocking::Client::new();
    for path in ["/api/v1/jobs", "/api/v1/executors", "/metrics", "/api/v1/openapi.json"] {
        let r = anonymous.get(format!("{}{path}", cluster.url)).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    let r = anonymous
        .post(format!("{}/api/v1/jobs", cluster.url))
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = anonymous.get(format!("{}/ui/jobs", cluster.url)).send().unwrap();
    assert!(
        r.url().path().starts_with("/ui/login"),
        "the UI sends people to its login page"
    );
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            anonymous
                .get(format!("{}{path}", cluster.url))
                .send()
                .unwrap()
                .status()
                .as_u16(),
            200,
            "{path}"
        );
    }
    // With it.
    assert_eq!(cluster.get("/api/v1/jobs").status().as_u16(), 200);
    let run = cluster.submit("SELECT 1 AS one;", &["--format", "csv"]);
    run.ok();
    let run = cluster.sql(
        &format!("{}SELECT count(*) AS n FROM customers;", data::ddl("lake")),
        &["--format", "csv"],
    );
    run.ok();
    assert!(run.stdout.contains("\n50\n"), "{}", run.stdout);

    // The CLI without it.
    cluster.token = None;
    let run = cluster.submit("SELECT 1;", &[]);
    run.failed();
    assert!(run.stderr.contains("QUIVER_TOKEN"), "{}", run.stderr);
    let run = Run::from(cluster.quiver(&["sql", "-e", "SELECT 1"]).output().unwrap());
    run.failed();
    assert!(run.stderr.contains("QUIVER_TOKEN"), "{}", run.stderr);
    cluster.token = Some("not-the-token".into());
    let run = cluster.submit("SELECT 1;", &[]);
    run.failed();
    assert!(run.stderr.contains("refused"), "{}", run.stderr);

    assert!(!cluster.logs().contains(token), "the token must never be logged");
    cluster.token = Some(token.into());
}
