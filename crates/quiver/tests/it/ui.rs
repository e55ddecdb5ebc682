//! The web UI in headless Chromium: every page loads without console errors
//! and shows what it should; a running job's page follows it live; with a
//! token, the login page lets a person in. Screenshots are kept in
//! `<target>/test-artifacts/ui/`.

use std::time::{Duration, Instant};

use quiver_core::api::JobState;

use crate::browser::Browser;
use crate::data;
use crate::harness::{Cluster, ClusterOptions, S3Server, shared};
use crate::jobs_api::long_query;

#[test]
fn every_page_loads_cleanly_and_shows_the_job() {
    let s = shared();
    let ok = s.cluster.submit_rest(
        &format!(
            "{}SELECT c.country, sum(o.amount) AS amount FROM orders_parquet o JOIN customers c \
             ON c.customer_id = o.customer_id GROUP BY c.country ORDER BY c.country;",
            data::ddl("lake")
        ),
        "ui-join",
    );
    let bad = s
        .cluster
        .submit_rest("SELECT 1;\nSELECT missing_col FROM (SELECT 1 AS a);", "ui-broken");
    let ok_job = s.cluster.wait_job(&ok, Duration::from_secs(60));
    s.cluster.wait_job(&bad, Duration::from_secs(60));
    let query = ok_job.queries.last().unwrap();

    let b = Browser::start();
    let url = |p: &str| format!("{}{p}", s.cluster.url);

    b.goto(&url("/ui"));
    let text = b.text();
    assert!(
        text.contains("executors alive") && text.contains("task slots used"),
        "{text}"
    );
    assert!(text.contains("ui-join"), "recent jobs are listed: {text}");
    b.screenshot("overview");
    assert_eq!(b.console_errors(), Vec::<String>::new(), "overview");

    b.goto(&url("/ui/jobs?q=ui-"));
    let text = b.text();
    assert!(text.contains(&ok) && text.contains(&bad), "{text}");
    assert!(b.count("table.jobs tbody tr .progress") >= 2, "progress bars");
    b.goto(&url("/ui/jobs?q=ui-&state=failed"));
    let text = b.text();
    assert!(
        text.contains(&bad) && !text.contains(&ok),
        "the filter keeps failed jobs only: {text}"
    );
    b.screenshot("jobs");
    assert_eq!(b.console_errors(), Vec::<String>::new(), "jobs");

    b.goto(&url(&format!("/ui/jobs/{ok}")));
    assert_eq!(
        b.count("svg.dag .dag-node"),
        query.stages.len(),
        "one box per stage in the graph"
    );
    assert!(b.count("svg.dag .dag-edge") >= 2, "edges between stages");
    assert_eq!(b.count("table.stages tbody tr"), query.stages.len());
    let tasks: usize = query.stages.iter().map(|s| s.tasks.len()).sum();
    assert_eq!(b.count("table.tasks tbody tr"), tasks, "every task has a row");
    let text = b.text_content();
    for needle in [
        ok.as_str(),
        "SELECT c.country",
        "Rows out",
        "Shuffle write",
        "ShuffleWriterExec",
        "metrics=[",
        "Result of statement 4",
        "BR",
    ] {
        assert!(text.contains(needle), "job page lacks {needle:?}");
    }
    let ran_on: Vec<&str> = query
        .stages
        .iter()
        .flat_map(|s| &s.tasks)
        .filter_map(|t| t.executor_id.as_deref())
        .collect();
    assert!(!ran_on.is_empty());
    for id in ran_on {
        assert!(text.contains(id), "the task table names executor {id}");
    }
    b.screenshot("job");
    assert_eq!(b.console_errors(), Vec::<String>::new(), "job page");

    b.goto(&url(&format!("/ui/jobs/{bad}")));
    let text = b.text();
    assert!(text.contains("missing_col") && text.contains("statement 2"), "{text}");
    b.screenshot("job-failed");
    assert_eq!(b.console_errors(), Vec::<String>::new(), "failed job page");

    b.goto(&url("/ui/executors"));
    let text = b.text();
    for (id, _) in &s.cluster.executors {
        assert!(text.contains(id.as_str()), "{text}");
    }
    assert!(text.contains("alive") && text.contains("ago"), "{text}");
    b.screenshot("executors");
    assert_eq!(b.console_errors(), Vec::<String>::new(), "executors");

    b.goto(&url("/ui/jobs/job-does-not-exist"));
    assert!(b.text().contains("Job not found"));
}

#[test]
fn a_running_job_page_follows_the_job_and_can_cancel_it() {
    let s = shared();
    let id = s.cluster.submit_rest(&long_query(), "ui-live");
    s.cluster.wait_state(&id, JobState::Running, Duration::from_secs(30));
    let b = Browser::start();
    b.goto(&format!("{}/ui/jobs/{id}", s.cluster.url));
    assert!(b.text().contains("Cancel job"));
    assert_eq!(
        b.count("main[data-live=true]"),
        1,
        "a running job's page refreshes itself"
    );
    b.screenshot("job-running");

    b.execute("window.confirm = function () { return true; }");
    b.click("button.danger");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b.text().contains("cancelled") {
        assert!(Instant::now() < deadline, "the page never showed the cancellation");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        s.cluster.wait_job(&id, Duration::from_secs(30)).summary.state,
        JobState::Cancelled
    );
    // Once the job has ended the page stops refreshing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.count("main[data-live=false]") != 1 {
        assert!(
            Instant::now() < deadline,
            "the page kept refreshing after the job ended"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    b.screenshot("job-cancelled");
    assert_eq!(b.console_errors(), Vec::<String>::new());
}

#[test]
fn with_a_token_the_ui_asks_for_it() {
    let s3 = S3Server::start();
    let token = "ui-token-4b1d";
    let cluster = Cluster::start(
        &s3,
        ClusterOptions {
            executors: 1,
            token: Some(token.into()),
            ..Default::default()
        },
    );
    let b = Browser::start();
    b.goto(&format!("{}/ui/executors", cluster.url));
    assert!(b.url().contains("/ui/login"), "{}", b.url());
    assert!(!b.text().contains(token));
    b.type_into("input[name=token]", "wrong");
    b.click("button[type=submit]");
    b.wait_for_text("That token is not right.");
    b.type_into("input[name=token]", token);
    b.click("button[type=submit]");
    // Back where the person was going.
    b.wait_for_url("/ui/executors");
    b.wait_for_text("alive");
    assert!(!b.text().contains(token), "the token is never shown");
    b.screenshot("login-then-executors");
    assert_eq!(b.console_errors(), Vec::<String>::new());
    assert!(!b.text_content().contains(token));
}
