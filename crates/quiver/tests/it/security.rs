//! The cluster's doors: what a submitted script may reach, what is recorded of
//! the secrets it carries, and how the scheduler starts with a token file.

use crate::harness::{S3Server, shared, walk};

/// A script that sets a secret, takes a secret parameter, reads the settings
/// view every way it can and explains a plan that quotes the parameter: the
/// values appear in no record, page, log or output.
#[test]
fn secrets_a_script_sets_or_is_given_leave_no_trace() {
    let s = shared();
    const SET_SECRET: &str = "set-in-script-secret-8c41d7";
    const PARAM_SECRET: &str = "param-secret-value-3e9a5f";
    let script = format!(
        "SET s3.secret_access_key = '{SET_SECRET}';\n\
         SELECT value AS v FROM information_schema.df_settings WHERE name = 's3.secret_access_key';\n\
         SELECT upper(value) AS v FROM information_schema.df_settings WHERE name LIKE '%secret%';\n\
         SELECT count(*) AS n FROM (VALUES ('${{api_token}}')) AS t(x) WHERE x <> '';\n\
         EXPLAIN SELECT count(*) AS n FROM (VALUES ('${{api_token}}')) AS t(x) WHERE x <> '';\n\
         SELECT '${{api_token}}' AS echoed;\n"
    );
    let param = format!("api_token={PARAM_SECRET}");
    let run = s.cluster.submit(
        &script,
        &["--param", &param, "--name", "secret-trace", "--format", "csv"],
    );
    run.ok();
    assert!(
        run.stdout.contains("****"),
        "the settings view shows no mask:\n{}",
        run.stdout
    );

    let list = s.cluster.get_json("/api/v1/jobs?q=secret-trace");
    let id = list["jobs"][0]["id"].as_str().expect("the job is listed").to_owned();
    let detail = s.cluster.get_json(&format!("/api/v1/jobs/{id}"));
    assert_eq!(detail["params"]["api_token"], "****", "{detail}");

    let mut places = vec![
        (
            "quiver submit's output".to_owned(),
            format!("{}{}", run.stdout, run.stderr),
        ),
        ("the REST job".to_owned(), detail.to_string()),
        (
            "the UI job page".to_owned(),
            s.cluster.get(&format!("/ui/jobs/{id}")).text().unwrap(),
        ),
        ("the process logs".to_owned(), s.cluster.logs()),
    ];
    for statement in 1..=6 {
        let path = format!("/api/v1/jobs/{id}/result?statement={statement}");
        places.push((path.clone(), s.cluster.get(&path).text().unwrap()));
    }
    for file in walk(&s.cluster.history) {
        let bytes = std::fs::read(&file).unwrap();
        places.push((file.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
    }
    for (place, text) in &places {
        for secret in [SET_SECRET, PARAM_SECRET] {
            assert!(
                !text.to_lowercase().contains(secret),
                "{place} holds a secret ({secret}):\n{text}"
            );
        }
    }
}

/// In a cluster, a script reaches local files only under the directories the
/// operator allowed; `/etc` is not among them.
#[test]
fn local_paths_outside_the_allowed_directories_are_refused() {
    let s = shared();
    let climbing = format!(
        "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '{}/../etc/passwd' \
         OPTIONS ('format.has_header' 'false', 'format.delimiter' '|');\nSELECT * FROM pw;",
        std::env::temp_dir().display()
    );
    for (sql, what) in [
        (
            "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd' \
             OPTIONS ('format.has_header' 'false', 'format.delimiter' '|');\nSELECT * FROM pw;",
            "read /etc/passwd",
        ),
        (climbing.as_str(), "climb out of an allowed directory with .."),
        (
            "COPY (SELECT 1 AS x) TO '/etc/quiver-was-here.csv' STORED AS CSV;",
            "write under /etc",
        ),
        (
            "CREATE TABLE d USING delta LOCATION '/etc/quiver-delta' AS SELECT 1 AS x;",
            "create a Delta table under /etc",
        ),
    ] {
        let run = s.cluster.submit(sql, &[]);
        assert_ne!(run.code, 0, "a script could {what}:\n{}", run.stdout);
        assert!(
            run.stderr.contains("local path") && run.stderr.contains("--allow-local-paths"),
            "refusing to {what} says why and what to do:\n{}",
            run.stderr
        );
        assert!(!run.stdout.contains("root:"), "{}", run.stdout);
    }
    assert!(!std::path::Path::new("/etc/quiver-was-here.csv").exists());
    assert!(!std::path::Path::new("/etc/quiver-delta").exists());

    // The directories allowed to this test cluster still work.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rows.csv"), "x\n1\n2\n").unwrap();
    let sql = format!(
        "CREATE EXTERNAL TABLE r STORED AS CSV LOCATION '{}/rows.csv' OPTIONS ('format.has_header' 'true');\n\
         SELECT sum(x) AS s FROM r;",
        dir.path().display()
    );
    let run = s.cluster.submit(&sql, &["--format", "csv"]);
    run.ok();
    assert!(run.stdout.contains('3'), "{}", run.stdout);
}

/// The result proxy on the scheduler's port fetches only from the cluster's
/// own executors: a ticket naming any other host:port is refused, and no
/// connection is made to it.
#[test]
fn the_result_proxy_reaches_only_the_clusters_executors() {
    let s = shared();
    // Where the ticket points: a port on this machine that counts connections.
    let bait = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    bait.set_nonblocking(true).unwrap();
    let status = fetch_partition(&s.cluster.url, "127.0.0.1", bait.local_addr().unwrap().port())
        .expect("the proxy fetched from a host that is not an executor");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    assert!(status.message().contains("not an executor of this cluster"), "{status}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        bait.accept().is_err(),
        "the scheduler connected to the host the ticket named"
    );
}

/// An executor's Flight port serves shuffle files and results only to its
/// cluster (other executors, the scheduler's proxy): a client without the
/// cluster secret's proof gets UNAUTHENTICATED and no data, while the
/// cluster's own multi-stage queries, whose shuffles go executor to
/// executor, still run.
#[test]
fn an_executors_flight_port_answers_only_its_cluster() {
    let s = shared();
    // One of the executors the harness started (a test may add and kill
    // others, which stay listed as alive until their heartbeats lapse).
    let executor = s
        .cluster
        .executors_alive()
        .into_iter()
        .find(|e| s.cluster.executors.iter().any(|(id, _)| *id == e.id))
        .expect("an alive executor the harness started");
    let url = format!("http://{}:{}", executor.host, executor.port);
    let status = fetch_partition(&url, &executor.host, executor.port)
        .expect("the executor answered a client without the cluster secret");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");

    // A query whose stages shuffle between the executors still runs.
    let run = s.cluster.submit(
        &format!(
            "{}SELECT c.customer_id, count(*) AS n FROM orders_csv c JOIN orders_csv d ON c.order_id = d.order_id \
             GROUP BY c.customer_id ORDER BY n DESC, c.customer_id LIMIT 3;",
            crate::data::ddl("lake")
        ),
        &["--format", "csv"],
    );
    run.ok();
}

/// With a token, the result proxy serves only fetches that prove it: a
/// client without the token gets UNAUTHENTICATED even for a ticket naming a
/// real executor, while `quiver sql` given the token gets its rows.
#[test]
fn the_result_proxy_needs_the_token_when_the_scheduler_has_one() {
    let s3 = crate::data::sample_lake();
    let token = "proxy-test-token-8c41";
    let cluster = crate::harness::Cluster::start(
        &s3,
        crate::harness::ClusterOptions {
            token: Some(token.into()),
            ..Default::default()
        },
    );
    let executor = cluster.executors_alive().into_iter().next().expect("an alive executor");

    let status = fetch_partition(&cluster.url, &executor.host, executor.port)
        .expect("the proxy answered a fetch without the token's proof");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    assert!(status.message().contains("access token"), "{status}");
    // Another proof (the cluster secret's kind, from the same token) is no
    // proof of the token.
    let wrong = quiver_core::proof::Proof::derive(quiver_core::proof::ProofKind::Executor, token);
    let status = fetch_partition_as(&cluster.url, &executor.host, executor.port, Some(&wrong.user_agent()))
        .expect("the proxy answered a fetch with another kind of proof");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    // The token's proof passes the token check (the job in the ticket does
    // not exist, so the job check refuses it).
    let proof = quiver_core::proof::Proof::derive(quiver_core::proof::ProofKind::ResultFetch, token);
    let status = fetch_partition_as(&cluster.url, &executor.host, executor.port, Some(&proof.user_agent()));
    assert!(
        status.as_ref().is_none_or(|s| s.code() != tonic::Code::Unauthenticated),
        "{status:?}"
    );

    // Quiver's client, given the token, fetches its rows through the proxy.
    let run = cluster.sql(
        &format!("{}SELECT count(*) AS n FROM orders_csv", crate::data::ddl("lake")),
        &["--format", "csv"],
    );
    run.ok();
    assert!(run.stdout.contains(&crate::data::ORDERS.to_string()), "{}", run.stdout);
}

/// An empty token file would leave the scheduler open while its operator
/// believes it closed: it is a start-up error.
#[test]
fn an_empty_token_file_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "\n").unwrap();
    let log = dir.path().join("scheduler.log");
    let mut child = std::process::Command::new(crate::harness::quiver_bin())
        .args(["scheduler", "--bind", "127.0.0.1", "--port"])
        .arg(crate::harness::free_port().to_string())
        .arg("--token-file")
        .arg(&token_file)
        .env_remove("QUIVER_TOKEN")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // A scheduler that starts keeps running; one that refuses exits at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the scheduler started with an empty token file: {stderr}"
    );
    assert!(stderr.contains("is empty"), "{stderr}");
}

/// A registration without the executor's specification panicked a handler
/// inside Ballista, on a scheduler open to anyone (no cluster secret): it
/// is refused with a message instead, and the scheduler goes on.
#[test]
fn an_incomplete_registration_is_refused_not_a_panic() {
    use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
    use ballista_core::serde::protobuf::{ExecutorRegistration, RegisterExecutorParams};

    let dir = tempfile::tempdir().unwrap();
    let port = crate::harness::free_port();
    let mut cmd = std::process::Command::new(crate::harness::quiver_bin());
    cmd.args(["scheduler", "--bind", "127.0.0.1", "--port", &port.to_string()])
        .env_remove(quiver_core::cluster_secret::ENV)
        .env_remove("QUIVER_TOKEN")
        .env("QUIVER_LOG", "info");
    let mut scheduler = crate::harness::Proc::spawn("open-scheduler", &mut cmd, dir.path());
    let url = format!("http://127.0.0.1:{port}");
    let answer = crate::harness::block_on(async {
        let mut client = loop {
            match SchedulerGrpcClient::connect(url.clone()).await {
                Ok(client) => break client,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        };
        client
            .register_executor(RegisterExecutorParams {
                metadata: Some(ExecutorRegistration {
                    id: "bare".into(),
                    host: Some("127.0.0.1".into()),
                    port: 1,
                    grpc_port: 2,
                    ballista_protocol_version: ballista_core::BALLISTA_PROTOCOL_VERSION,
                    ..Default::default()
                }),
            })
            .await
    });
    let status = answer.expect_err("a registration without its specification was taken");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(status.message().contains("specification"), "{status}");
    assert!(scheduler.running());
    let health = reqwest::blocking::get(format!("{url}/healthz")).unwrap();
    assert!(health.status().is_success());
    let log = scheduler.log_text();
    assert!(!log.contains("panicked at"), "{log}");
    scheduler.kill();
}

/// A job that names its own S3 endpoint without credentials is not signed
/// with the scheduler's: the endpoint it chose never sees them.
#[test]
fn a_job_naming_another_endpoint_gets_no_process_credentials() {
    // A second S3 server stands for a host the job chose. It takes the same
    // keys as the cluster's, so a read signed with the process's credentials
    // would succeed; an unsigned one is refused.
    let other = S3Server::start();
    other.create_bucket("elsewhere");
    other.put("elsewhere", "x/a.csv", "a\n1\n");
    let s = shared();
    let sql = format!(
        "SET s3.endpoint = '{}';\n\
         CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 's3://elsewhere/x/' OPTIONS ('format.has_header' 'true');\n\
         SELECT * FROM t;",
        other.endpoint
    );
    let run = s.cluster.submit(&sql, &[]);
    assert_ne!(
        run.code, 0,
        "the job read another endpoint signed with the scheduler's credentials:\n{}",
        run.stdout
    );

    // With credentials of its own, the job reads it.
    let sql = format!(
        "SET s3.access_key_id = '{}';\nSET s3.secret_access_key = '{}';\n{sql}",
        crate::harness::ACCESS_KEY,
        crate::harness::SECRET_KEY
    );
    s.cluster.submit(&sql, &[]).ok();
}

/// The UI's sign-in: the cookie is derived from the token, not the token,
/// expires, opens the UI but is no bearer token, and signs out; redirects
/// stay on this server; pages forbid framing and foreign scripts. And a
/// client cannot end another job as if it were its session.
#[test]
fn the_ui_sign_in_cookie_headers_and_redirects_hold() {
    use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE, X_FRAME_OPTIONS};

    let token = "ui-sign-in-token-71c2e0";
    let s3 = crate::data::sample_lake();
    let cluster = crate::harness::Cluster::start(
        &s3,
        crate::harness::ClusterOptions {
            executors: 1,
            token: Some(token.into()),
            ..Default::default()
        },
    );
    let browser = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |next: &str| {
        browser
            .post(format!("{}/ui/login", cluster.url))
            .form(&[("token", token), ("next", next)])
            .send()
            .unwrap()
    };

    let r = login("/ui/jobs");
    assert_eq!(r.headers()[LOCATION], "/ui/jobs");
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(!cookie.contains(token), "the cookie holds the token: {cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("Max-Age="), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let value = pair.split_once('=').unwrap().1.to_owned();

    let page = browser
        .get(format!("{}/ui/jobs", cluster.url))
        .header(reqwest::header::COOKIE, &pair)
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200, "the cookie opens the UI");
    assert_eq!(page.headers()[X_FRAME_OPTIONS], "DENY");
    let csp = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let api = browser
        .get(format!("{}/api/v1/jobs", cluster.url))
        .bearer_auth(&value)
        .send()
        .unwrap();
    assert_eq!(api.status().as_u16(), 401, "the cookie's value is not a bearer token");

    for next in ["//evil.example/", "/\\evil.example/", "https://evil.example/"] {
        let r = login(next);
        assert_eq!(r.headers()[LOCATION], "/ui", "next={next}");
    }

    let out = browser.get(format!("{}/ui/logout", cluster.url)).send().unwrap();
    let cleared = out.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    // A running submitted script is not a session a client may close.
    let id = cluster.submit_rest(&crate::jobs_api::long_query(), "not-a-session");
    let r = cluster.post(&format!("/api/v1/sessions/{id}/close"), &serde_json::json!({}));
    assert_eq!(r.status().as_u16(), 409, "{}", r.text().unwrap());
    let r = cluster.post(&format!("/api/v1/jobs/{id}/cancel"), &serde_json::json!({}));
    assert!(r.status().is_success());
    cluster.wait_state(
        &id,
        quiver_core::api::JobState::Cancelled,
        std::time::Duration::from_secs(60),
    );
}

/// A job past its timeout is stopped, fails with the reason, and leaves the
/// cluster free for the next job.
#[test]
fn a_job_past_its_timeout_is_stopped_and_fails() {
    let s = shared();
    let started = std::time::Instant::now();
    let run = s
        .cluster
        .submit(&crate::jobs_api::long_query(), &["--timeout", "3", "--name", "timed"]);
    let took = started.elapsed();
    assert_ne!(run.code, 0, "a job past its timeout succeeded:\n{}", run.stdout);
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    assert!(
        took < std::time::Duration::from_secs(60),
        "the timeout stopped the job after {took:?}"
    );
    let list = s.cluster.get_json("/api/v1/jobs?q=timed");
    assert_eq!(list["jobs"][0]["state"], "failed", "{list}");
    s.cluster.submit("SELECT 1 AS one;", &[]).ok();
}

/// With a cluster secret (every test cluster has one), a process that
/// reaches the scheduler's port but does not hold the secret cannot
/// register as an executor, so it receives no task.
#[test]
fn an_executor_without_the_cluster_secret_cannot_join() {
    let s = shared();
    let id = format!("rogue-{}", crate::harness::free_port());
    let mut cmd = s.cluster.executor_command(&id, 8);
    cmd.env_remove(quiver_core::cluster_secret::ENV)
        .args(["--connect-timeout", "5"]);
    let mut rogue = crate::harness::Proc::spawn(&id, &mut cmd, &s.cluster.dir);
    crate::harness::wait_for(
        "the scheduler to refuse the rogue executor",
        std::time::Duration::from_secs(30),
        || {
            s.cluster
                .scheduler
                .log_text()
                .contains("does not prove it holds the cluster secret")
        },
    );
    // Jobs run, and none of their tasks on the rogue.
    let run = s.cluster.submit(
        &format!("{}SELECT count(*) AS n FROM orders_parquet;", crate::data::ddl("lake")),
        &[],
    );
    run.ok();
    let executors = s.cluster.get_json("/api/v1/executors");
    assert!(
        !executors.to_string().contains(&id),
        "the rogue executor is listed: {executors}"
    );
    let log = rogue.log_text();
    assert!(
        !log.contains("Received task") && !log.contains("launch"),
        "the rogue received work:\n{log}"
    );
    rogue.kill();
}

/// Asks the Flight service at `url` for a partition said to be on
/// `host:port`, as a client without the cluster secret; the error it got,
/// or `None` when it was answered.
fn fetch_partition(url: &str, host: &str, port: u16) -> Option<tonic::Status> {
    fetch_partition_as(url, host, port, None)
}

/// [`fetch_partition`], with `user_agent` on the call when given.
fn fetch_partition_as(url: &str, host: &str, port: u16, user_agent: Option<&str>) -> Option<tonic::Status> {
    let fetch = ballista_core::serde::protobuf::FetchPartition {
        job_id: "job-anything".into(),
        stage_id: 1,
        partition_id: 0,
        host: host.into(),
        port: u32::from(port),
        ..Default::default()
    };
    fetch_through(url, fetch, user_agent)
}

/// Sends `fetch` as a Flight ticket to `url`, with `user_agent` when
/// given; the error it got, or `None` when it was answered.
fn fetch_through(
    url: &str,
    fetch: ballista_core::serde::protobuf::FetchPartition,
    user_agent: Option<&str>,
) -> Option<tonic::Status> {
    use arrow_flight::Ticket;
    use arrow_flight::flight_service_client::FlightServiceClient;
    use ballista_core::serde::protobuf::Action;
    use ballista_core::serde::protobuf::action::ActionType;
    use prost::Message;

    let ticket = Action {
        settings: vec![],
        action_type: Some(ActionType::FetchPartition(fetch)),
    }
    .encode_to_vec();
    crate::harness::block_on(async {
        let mut endpoint = tonic::transport::Channel::from_shared(url.to_owned()).unwrap();
        if let Some(agent) = user_agent {
            endpoint = endpoint.user_agent(agent.to_owned()).unwrap();
        }
        let channel = endpoint.connect().await.unwrap();
        let mut client = FlightServiceClient::new(channel);
        match client.do_get(Ticket { ticket: ticket.into() }).await {
            Ok(response) => response.into_inner().message().await.err(),
            Err(status) => Some(status),
        }
    })
}

/// Each job's results open only to its own fetch proof: a ticket for a
/// finished query's results, sent with another session's proof or with
/// none, is refused; with the proof of the job the query belongs to, it
/// passes. (Quiver's clients get their session's proof when it opens, and
/// the scheduler's own runs of a script use the script job's.)
#[test]
fn a_jobs_results_cannot_be_fetched_with_another_jobs_proof() {
    use quiver_core::proof::fetch_user_agent;

    let s = shared();
    let id = s.cluster.submit_rest(
        &format!(
            "{}SELECT day, count(*) AS n, sum(amount) AS total FROM orders_parquet GROUP BY day;",
            crate::data::ddl("lake")
        ),
        "fetch-owner",
    );
    let job = s.cluster.wait_job(&id, std::time::Duration::from_secs(120));
    assert_eq!(
        job.summary.state,
        quiver_core::api::JobState::Succeeded,
        "{:?}",
        job.summary
    );
    let query = job.queries.last().expect("the job ran a query");
    let last = query
        .stages
        .iter()
        .find(|stage| stage.outputs.is_empty())
        .expect("a final stage");
    let task = last
        .tasks
        .iter()
        .find(|t| t.executor_id.is_some() && !t.partitions.is_empty())
        .expect("a task of the final stage");
    let executors = s.cluster.get_json("/api/v1/executors");
    let executor = executors
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"].as_str() == task.executor_id.as_deref())
        .expect("the task's executor is listed");
    let fetch = ballista_core::serde::protobuf::FetchPartition {
        job_id: query.id.clone(),
        stage_id: last.id as u32,
        partition_id: task.partitions[0] as u32,
        host: executor["host"].as_str().unwrap().into(),
        port: executor["port"].as_u64().unwrap() as u32,
        ..Default::default()
    };

    // Another session's proof, as the scheduler hands it out.
    let opened = s.cluster.post(
        "/api/v1/sessions",
        &serde_json::json!({"name": "another-session", "source": "shell"}),
    );
    assert_eq!(opened.status().as_u16(), 201);
    let other: quiver_core::api::OpenedSession = opened.json().unwrap();
    for agent in [Some(fetch_user_agent(None, Some(&other.fetch_proof))), None] {
        let status =
            fetch_through(&s.cluster.url, fetch.clone(), agent.as_deref()).expect("another job's results were served");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
        assert!(status.message().contains("another job"), "{status}");
    }
    // The proof of the job the query belongs to opens its results.
    let secret = quiver_core::cluster_secret::ClusterSecret::new(crate::harness::CLUSTER_SECRET).unwrap();
    let own = fetch_user_agent(None, Some(&secret.job_fetch_proof(&id)));
    let status = fetch_through(&s.cluster.url, fetch, Some(&own));
    assert!(
        status
            .as_ref()
            .is_none_or(|s| s.code() != tonic::Code::PermissionDenied),
        "{status:?}"
    );
    let _ = s.cluster.post(
        &format!("/api/v1/sessions/{}/close", other.job.id),
        &serde_json::json!({}),
    );
}

/// With `--tls-cert` and `--tls-key` the scheduler's port speaks TLS only:
/// a plain-HTTP client gets no answer, an HTTPS client that does not trust
/// the CA is refused, and executors, `quiver sql`, `quiver submit` and REST
/// work over it with the CA (`QUIVER_CA_FILE`). Executors given the same
/// options (and the scheduler `--executor-tls`) serve their task and Flight
/// ports over TLS only, and read each other's shuffle data over TLS. The CA
/// and the certificate are made for this test.
#[test]
fn with_tls_the_port_refuses_plain_http_and_clients_with_the_ca_work() {
    use crate::harness::{Cluster, ClusterOptions};
    let s = shared();
    let cluster = Cluster::start(
        &s.s3,
        ClusterOptions {
            token: Some("tls-test-token-6d1f0b2e".into()),
            tls: true,
            ..Default::default()
        },
    );
    // Cluster::start waited for the executor: it registered over TLS.
    assert!(cluster.url.starts_with("https://"), "{}", cluster.url);

    let plain = format!("http://127.0.0.1:{}/healthz", cluster.port);
    let answer = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .unwrap()
        .get(&plain)
        .send();
    assert!(answer.is_err(), "a plain-HTTP request was answered: {answer:?}");
    let untrusted = reqwest::blocking::Client::new()
        .get(format!("{}/healthz", cluster.url))
        .send();
    assert!(untrusted.is_err(), "the test CA's certificate was trusted without it");

    let health = cluster.http().get(format!("{}/healthz", cluster.url)).send().unwrap();
    assert!(health.status().is_success());
    assert_eq!(cluster.get("/api/v1/executors").status().as_u16(), 200);

    // Executors serve TLS only too: a plain client of an executor's Flight
    // port gets no answer; one that trusts the CA gets through the
    // handshake, and then needs the cluster secret's proof like any other.
    let executor = cluster.executors_alive().into_iter().next().expect("an alive executor");
    let flight = format!("{}:{}", executor.host, executor.port);
    let ca = std::fs::read(cluster.ca_file.as_ref().unwrap()).unwrap();
    let (plain, trusted) = crate::harness::block_on(async {
        use arrow_flight::Criteria;
        use arrow_flight::flight_service_client::FlightServiceClient;
        use tonic::transport::{Certificate, Channel, ClientTlsConfig};
        let plain = match Channel::from_shared(format!("http://{flight}"))
            .unwrap()
            .connect()
            .await
        {
            Err(e) => Err(e.to_string()),
            Ok(channel) => FlightServiceClient::new(channel)
                .list_flights(Criteria::default())
                .await
                .map(|_| ())
                .map_err(|status| status.to_string()),
        };
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        let channel = Channel::from_shared(format!("https://{flight}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .expect("a TLS connection to the executor's Flight port, trusting the CA");
        let trusted = FlightServiceClient::new(channel)
            .list_flights(Criteria::default())
            .await;
        (plain, trusted.map(|_| ()))
    });
    let plain = plain.expect_err("an executor's Flight port answered a plain client");
    assert!(
        !plain.contains("cluster secret"),
        "a plain call reached the service: {plain}"
    );
    let status = trusted.expect_err("the Flight port answered a client without the cluster secret");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    for (id, executor) in &cluster.executors {
        let log = strip_ansi(&executor.log_text());
        assert!(
            log.contains("task port listening") && log.contains("tls=true"),
            "{id} serves no TLS:\n{log}"
        );
    }

    // A query planned by the CLI: Ballista's gRPC to the scheduler and the
    // result fetch through its Flight proxy over TLS, the scheduler's tasks
    // to the executors' task ports and its result fetches from their Flight
    // ports over TLS, and its stages' shuffle reads between the two
    // executors over TLS.
    let run = cluster.sql(
        "SELECT value % 7 AS k, count(*) AS n FROM generate_series(1, 70000) GROUP BY 1 ORDER BY 1",
        &["--format", "csv"],
    );
    run.ok();
    let rows = crate::harness::csv_rows(&run.stdout);
    assert_eq!(rows.len(), 8, "{}", run.stdout);
    assert!(rows[1..].iter().all(|r| r[1] == "10000"), "{}", run.stdout);
    // A submitted script: REST over TLS, planned by the job service.
    let run = cluster.submit(
        "SELECT count(*) AS n FROM generate_series(1, 4242);",
        &["--format", "csv", "--name", "over-tls"],
    );
    run.ok();
    assert!(run.stdout.contains("4242"), "{}", run.stdout);

    // The Python client, over REST and over Flight SQL (ADBC).
    let out = std::process::Command::new(crate::python::python())
        .args([
            "-c",
            "from quiver_client import QuiverClient\n\
             q = QuiverClient()\n\
             print('rest', q.sql('SELECT 40 + 2 AS a').to_pydict())\n\
             print('flight', q.query('SELECT 6 * 7 AS b').to_pydict())",
        ])
        .env("QUIVER_SCHEDULER", &cluster.url)
        .env("QUIVER_TOKEN", cluster.token.as_deref().unwrap())
        .env(quiver_core::tls::CA_FILE_ENV, cluster.ca_file.as_ref().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("rest {'a': [42]}") && stdout.contains("flight {'b': [42]}"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the CA the CLI refuses the certificate and says so.
    let mut cmd = cluster.quiver(&["sql", "-e", "SELECT 1"]);
    cmd.env_remove(quiver_core::tls::CA_FILE_ENV);
    let refused = crate::harness::Run::from(cmd.output().unwrap());
    assert_ne!(refused.code, 0, "the CLI trusted the scheduler without the CA");
    assert!(
        refused.stderr.to_lowercase().contains("certificate"),
        "{}",
        refused.stderr
    );
    // A bad CA file is a clear error, not a panic.
    let mut cmd = cluster.quiver(&["sql", "-e", "SELECT 1"]);
    cmd.env(quiver_core::tls::CA_FILE_ENV, cluster.dir.join("no-such-ca.pem"));
    let bad = crate::harness::Run::from(cmd.output().unwrap());
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("cannot read CA file"), "{}", bad.stderr);

    let logs = cluster.logs();
    assert_eq!(logs.matches("panicked at").count(), 0, "{logs}");
    assert!(!logs.contains("tls-test-token-6d1f0b2e"), "the token reached a log");
}

/// An executor that serves TLS cannot join a scheduler that dials
/// executors without it (each task it was sent would fail): it stops at
/// start-up and says which option is missing.
#[test]
fn an_executor_and_its_scheduler_must_agree_on_tls() {
    let s = shared();
    let id = format!("tls-only-{}", crate::harness::free_port());
    let certs = s.cluster.dir.join(format!("{id}-certs"));
    std::fs::create_dir_all(&certs).unwrap();
    let ca = crate::harness::TestCa::make(&certs);
    let mut cmd = s.cluster.executor_command(&id, 1);
    cmd.args(["--connect-timeout", "5", "--tls-cert"])
        .arg(&ca.cert)
        .arg("--tls-key")
        .arg(&ca.key);
    let mut executor = crate::harness::Proc::spawn(&id, &mut cmd, &s.cluster.dir);
    crate::harness::wait_for("the executor to stop", std::time::Duration::from_secs(60), || {
        !executor.running()
    });
    let log = executor.log_text();
    assert!(log.contains("--executor-tls"), "{log}");
    assert!(!log.contains("panicked at"), "{log}");
    assert!(!s.cluster.executors_alive().iter().any(|e| e.id == id));
}

/// Anyone who reaches an executor's gRPC port could launch tasks there,
/// stop the executor, cancel its tasks or drop a job's shuffle data:
/// Ballista serves those calls with no check. The executor serves that
/// port itself (its task port) and answers only its scheduler: a process
/// without the cluster secret gets UNAUTHENTICATED for each call, and the
/// executor keeps running the scheduler's tasks. Behind the task port,
/// Ballista's own server (on a loopback port) runs no task that lacks the
/// scheduler's task proof either: a task sent there is refused before its
/// plan runs.
#[test]
fn an_executors_task_port_answers_only_its_scheduler() {
    use std::sync::Arc;

    use ballista_core::execution_plans::ShuffleWriterExec;
    use ballista_core::serde::protobuf::executor_grpc_client::ExecutorGrpcClient;
    use ballista_core::serde::protobuf::{
        CancelTasksParams, LaunchMultiTaskParams, MultiTaskDefinition, RemoveJobDataParams, StopExecutorParams, TaskId,
    };
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_plan::ExecutionPlan;
    use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
    use datafusion_proto::physical_plan::AsExecutionPlan;
    use datafusion_proto::protobuf::PhysicalPlanNode;
    use prost::Message;

    // A cluster of its own: the target executor is its only one, so no
    // other test sees it come and go.
    let s3 = crate::data::sample_lake();
    let cluster = crate::harness::Cluster::start(
        &s3,
        crate::harness::ClusterOptions {
            executors: 0,
            ..Default::default()
        },
    );
    let grpc_port = crate::harness::free_port();
    let id = format!("target-{grpc_port}");
    let mut cmd = cluster.executor_command_on(&id, 1, grpc_port);
    let mut target = crate::harness::Proc::spawn(&id, &mut cmd, &cluster.dir);
    crate::harness::wait_for(
        "the target executor to register",
        std::time::Duration::from_secs(60),
        || cluster.executors_alive().iter().any(|e| e.id == id),
    );

    let work_dir = cluster.dir.join(&id);
    let job_id = format!("rogue-job-{grpc_port}");
    let plan: Arc<dyn ExecutionPlan> = Arc::new(
        ShuffleWriterExec::try_new(
            job_id.clone().into(),
            1,
            Arc::new(PlaceholderRowExec::new(Arc::new(Schema::empty()))),
            work_dir.display().to_string(),
        )
        .unwrap(),
    );
    let factory = quiver_core::session::SessionFactory::new(&quiver_core::config::Settings::new()).unwrap();
    let codec = factory.physical_codec();
    let plan = PhysicalPlanNode::try_from_physical_plan(plan, codec.as_ref())
        .unwrap()
        .encode_to_vec();
    let launch = LaunchMultiTaskParams {
        multi_tasks: vec![MultiTaskDefinition {
            task_ids: vec![TaskId {
                task_id: 1,
                task_attempt_num: 0,
                global_output_partition_ids: vec![0],
                ..Default::default()
            }],
            job_id: job_id.clone(),
            stage_id: 1,
            stage_attempt_num: 0,
            plan,
            session_id: "rogue-session".into(),
            launch_time: 0,
            props: vec![],
        }],
        scheduler_endpoint: format!("127.0.0.1:{}", cluster.port),
    };
    let answers = crate::harness::block_on(async {
        let mut client = ExecutorGrpcClient::connect(format!("http://127.0.0.1:{grpc_port}"))
            .await
            .expect("the executor's task port answers");
        vec![
            ("launch", client.launch_multi_task(launch.clone()).await.err()),
            (
                "stop",
                client
                    .stop_executor(StopExecutorParams {
                        executor_id: id.clone(),
                        reason: "a rogue asks".into(),
                        force: true,
                    })
                    .await
                    .err(),
            ),
            (
                "cancel",
                client
                    .cancel_tasks(CancelTasksParams { task_infos: vec![] })
                    .await
                    .err(),
            ),
            (
                "remove job data",
                client
                    .remove_job_data(RemoveJobDataParams {
                        job_id: job_id.clone(),
                        ..Default::default()
                    })
                    .await
                    .err(),
            ),
        ]
    });
    for (call, refused) in answers {
        let status = refused.unwrap_or_else(|| panic!("the task port answered a rogue {call} call"));
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{call}: {status}");
    }

    // Ballista's own server behind the task port, reached from this machine.
    let log = strip_ansi(&target.log_text());
    let ballista_port: u16 = log
        .split("ballista_port=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("the executor did not log its loopback task server:\n{log}"));
    let answer = crate::harness::block_on(async {
        let mut client = ExecutorGrpcClient::connect(format!("http://127.0.0.1:{ballista_port}"))
            .await
            .expect("Ballista's task server answers on loopback");
        client.launch_multi_task(launch).await
    });
    // Ballista takes the task and runs it in the background; what counts is
    // that it never runs.
    eprintln!("launch answered: {:?}", answer.map(|r| r.into_inner()));
    let output = work_dir.join(&job_id);
    crate::harness::wait_for(
        "the executor to refuse or run the task",
        std::time::Duration::from_secs(30),
        || target.log_text().contains("refused a task") || output.exists(),
    );
    assert!(!output.exists(), "the rogue task ran: {} exists", output.display());

    // The executor is still there, and the scheduler's own tasks run on it
    // (through the task port, with the proof).
    assert!(target.running(), "the executor stopped:\n{}", target.log_text());
    let run = cluster.submit(
        &format!("{}SELECT count(*) AS n FROM orders_parquet;", crate::data::ddl("lake")),
        &[],
    );
    run.ok();
    assert!(cluster.executors_alive().iter().any(|e| e.id == id));
    assert!(!target.log_text().contains("panicked at"), "{}", target.log_text());
    target.kill();
}

/// `text` without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
