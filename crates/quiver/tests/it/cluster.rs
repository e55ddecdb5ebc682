//! Jobs on a real cluster (scheduler + two executors) over a real S3 server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use quiver_core::api::JobState;

use crate::data::{self, ORDERS, expected_by_country};
use crate::harness::{Cluster, ClusterOptions, csv_rows, shared};

fn by_country_query(table: &str) -> String {
    format!(
        "SELECT c.country, round(sum(o.amount), 2) AS amount, count(*) AS orders \
         FROM {table} o JOIN customers c ON c.customer_id = o.customer_id \
         GROUP BY c.country ORDER BY c.country"
    )
}

fn expected_rows() -> Vec<Vec<String>> {
    let mut rows = vec![vec!["country".to_string(), "amount".into(), "orders".into()]];
    for (country, (amount, count)) in expected_by_country() {
        let rounded = (amount * 100.0).round() / 100.0;
        rows.push(vec![country.to_string(), format!("{rounded:?}"), count.to_string()]);
    }
    rows
}

#[test]
fn submit_reads_csv_json_and_parquet_from_s3() {
    let s = shared();
    let script = format!(
        "{}\n{};\n{};\nSELECT count(*) AS n, count(DISTINCT day) AS days FROM orders_csv;",
        data::ddl("lake"),
        by_country_query("orders_csv"),
        by_country_query("orders_parquet")
    );
    let run = s.cluster.submit(&script, &["--format", "csv", "--name", "by-country"]);
    run.ok();
    // Three results, one after the other, each with its header.
    let rows = csv_rows(&run.stdout);
    let expected = expected_rows();
    let n = expected.len();
    assert_eq!(rows[..n], expected[..], "CSV-backed result\n{}", run.stdout);
    assert_eq!(rows[n..2 * n], expected[..], "Parquet-backed result\n{}", run.stdout);
    assert_eq!(
        rows[2 * n..],
        [
            vec!["n".to_string(), "days".into()],
            vec![ORDERS.to_string(), "4".into()]
        ]
    );
    assert!(run.stderr.contains("succeeded"), "{}", run.stderr);
}

#[test]
fn sql_e_runs_a_client_session_with_the_same_answers() {
    let s = shared();
    let sql = format!("{}{};", data::ddl("lake"), by_country_query("orders_parquet"));
    let run = s.cluster.sql(&sql, &["--format", "csv"]);
    run.ok();
    assert_eq!(csv_rows(&run.stdout), expected_rows());

    // The session shows up as a finished shell job with its queries.
    let list = s.cluster.get_json("/api/v1/jobs?source=shell&limit=100");
    let jobs = list["jobs"].as_array().unwrap();
    assert!(
        jobs.iter()
            .any(|j| j["state"] == "succeeded" && j["query_count"].as_u64().unwrap_or(0) >= 1),
        "{list}"
    );
}

#[test]
fn json_output_is_one_object_per_row() {
    let s = shared();
    let run = s.cluster.sql(
        &format!(
            "{}SELECT country, count(*) AS n FROM customers GROUP BY country ORDER BY country;",
            data::ddl("lake")
        ),
        &["--format", "json"],
    );
    run.ok();
    let rows: Vec<serde_json::Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0], serde_json::json!({"country": "BR", "n": 10}));
}

#[test]
fn both_executors_run_tasks_of_one_query() {
    // A cluster of its own: on the shared one, other tests' long queries may
    // hold one executor's slots.
    let s3 = crate::data::sample_lake();
    let cluster = Cluster::start(&s3, ClusterOptions::default());
    let id = cluster.submit_rest(
        &format!(
            "{}SELECT o.day, c.country, sum(o.amount) AS amount FROM orders_parquet o \
             JOIN customers c ON c.customer_id = o.customer_id GROUP BY o.day, c.country ORDER BY 1, 2;",
            data::ddl("lake")
        ),
        "spread",
    );
    let job = cluster.wait_job(&id, Duration::from_secs(120));
    assert_eq!(job.summary.state, JobState::Succeeded, "{:?}", job.summary.error);
    let query = job.queries.last().expect("the SELECT ran as a query");
    let executors: BTreeSet<&str> = query
        .stages
        .iter()
        .flat_map(|s| s.tasks.iter())
        .filter_map(|t| t.executor_id.as_deref())
        .collect();
    let registered: BTreeSet<String> = cluster.executors.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        executors.iter().map(|e| e.to_string()).collect::<BTreeSet<_>>(),
        registered,
        "tasks of query {} ran on {executors:?}",
        query.id
    );
    assert!(query.stages.len() >= 2, "a join and aggregate has several stages");
    // The result preview comes back through the scheduler.
    let preview = cluster.get_json(&format!("/api/v1/jobs/{id}/result?limit=3"));
    assert_eq!(preview["total_rows"], 20);
    assert_eq!(preview["rows"].as_array().unwrap().len(), 3);
    assert_eq!(preview["columns"], serde_json::json!(["day", "country", "amount"]));
}

#[test]
fn writes_go_to_s3_and_read_back() {
    let s = shared();
    let script = format!(
        "{ddl}
         COPY (SELECT order_id, amount, day FROM orders_parquet WHERE qty = 1)
           TO 's3://lake/out/copy/' STORED AS PARQUET PARTITIONED BY (day);
         CREATE TABLE big_orders USING json PARTITIONED BY (country) LOCATION 's3://lake/out/big/' AS
           SELECT o.order_id, o.amount, c.country FROM orders_csv o JOIN customers c ON c.customer_id = o.customer_id
           WHERE o.amount > 90;
         CREATE EXTERNAL TABLE small_orders (order_id BIGINT, amount DOUBLE)
           STORED AS CSV LOCATION 's3://lake/out/small/' OPTIONS ('format.has_header' 'true');
         INSERT INTO small_orders SELECT order_id, amount FROM orders_parquet WHERE amount < 5;
         INSERT INTO small_orders SELECT order_id, amount FROM orders_parquet WHERE amount < 2;",
        ddl = data::ddl("lake")
    );
    s.cluster.submit(&script, &[]).ok();

    let orders = data::orders();
    let qty1 = orders.iter().filter(|o| o.qty == 1).count();
    let big = orders.iter().filter(|o| o.amount > 90.0).count();
    let small = orders.iter().filter(|o| o.amount < 5.0).count() + orders.iter().filter(|o| o.amount < 2.0).count();

    // Hive-style directories in the bucket.
    let keys = s.s3.list("lake", "out/copy");
    for day in data::DAYS {
        assert!(keys.iter().any(|k| k.contains(&format!("day={day}/"))), "{keys:?}");
    }
    assert!(s.s3.list("lake", "out/big").iter().any(|k| k.contains("country=DE/")));

    // A new session reads everything back.
    let check = "CREATE EXTERNAL TABLE copied STORED AS PARQUET PARTITIONED BY (day) LOCATION 's3://lake/out/copy/';
         CREATE EXTERNAL TABLE big STORED AS JSON PARTITIONED BY (country) LOCATION 's3://lake/out/big/';
         CREATE EXTERNAL TABLE small (order_id BIGINT, amount DOUBLE) STORED AS CSV LOCATION 's3://lake/out/small/'
           OPTIONS ('format.has_header' 'true');
         SELECT (SELECT count(*) FROM copied) AS copied, (SELECT count(DISTINCT day) FROM copied) AS days,
                (SELECT count(*) FROM big) AS big, (SELECT count(*) FROM small) AS small;";
    let run = s.cluster.sql(check, &["--format", "csv"]);
    run.ok();
    assert_eq!(
        csv_rows(&run.stdout),
        vec![
            vec!["copied".to_string(), "days".into(), "big".into(), "small".into()],
            vec![qty1.to_string(), "4".into(), big.to_string(), small.to_string()]
        ]
    );
}

#[test]
fn params_fill_placeholders_and_name_missing_ones() {
    let s = shared();
    let script = format!(
        "{}SELECT count(*) AS n FROM orders_csv WHERE day = '${{day}}' AND qty >= ${{min_qty}};",
        data::ddl("lake")
    );
    let run = s.cluster.submit(
        &script,
        &["--param", "day=2024-01-02", "--param", "min_qty=3", "--format", "csv"],
    );
    run.ok();
    let expected = data::orders()
        .iter()
        .filter(|o| o.day == "2024-01-02" && o.qty >= 3)
        .count();
    assert_eq!(csv_rows(&run.stdout)[1], vec![expected.to_string()]);

    let run = s.cluster.submit(&script, &["--param", "day=2024-01-02"]);
    run.failed();
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("${min_qty}") && run.stderr.contains("--param min_qty=VALUE"),
        "{}",
        run.stderr
    );
}

#[test]
fn detach_prints_the_job_id_and_jobs_show_follows_it() {
    let s = shared();
    let run = s
        .cluster
        .submit("SELECT 1 AS one;", &["--detach", "--name", "detached"]);
    run.ok();
    let id = run.stdout.trim();
    assert!(id.starts_with("job-"), "{}", run.stdout);
    let job = s.cluster.wait_job(id, Duration::from_secs(60));
    assert_eq!(job.summary.state, JobState::Succeeded);
    assert_eq!(job.summary.name, "detached");

    let show = crate::harness::Run::from(s.cluster.quiver(&["jobs", "show", id]).output().unwrap());
    show.ok();
    assert!(
        show.stdout.contains(id) && show.stdout.contains("succeeded"),
        "{}",
        show.stdout
    );
    let list = crate::harness::Run::from(
        s.cluster
            .quiver(&["jobs", "list", "--name", "detached"])
            .output()
            .unwrap(),
    );
    list.ok();
    assert!(list.stdout.contains(id), "{}", list.stdout);
}

#[test]
fn a_failed_statement_stops_the_script_and_sets_the_exit_code() {
    let s = shared();
    let run = s.cluster.submit(
        "SELECT 1 AS a;\n\nSELECT nope FROM (SELECT 1 AS a);\nSELECT 3;",
        &["--format", "csv"],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.starts_with("a\n1\n"),
        "the first statement's result is printed: {}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("statement 2 (line 3: SELECT nope FROM (SELECT 1 AS a))"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains('3'), "statement 3 must not run: {}", run.stdout);
}

/// The DataFrame job in `jobs/`: runs against the cluster from this process,
/// reads the sample data from S3, writes Parquet to S3, and shows up as a
/// named job.
/// Files under each `qty=N/` directory of `prefix`.
fn files_per_qty(s3: &crate::harness::S3Server, prefix: &str) -> BTreeMap<String, usize> {
    let mut files = BTreeMap::new();
    for key in s3.list("lake", prefix) {
        if let Some(dir) = key.split('/').find(|part| part.starts_with("qty=")) {
            *files.entry(dir.to_owned()).or_insert(0) += 1;
        }
    }
    files
}

#[test]
fn writes_run_in_every_task_of_the_stage_making_their_rows() {
    let s = shared();
    let copy = |out: &str| {
        format!(
            "{ddl}COPY (SELECT order_id, amount, qty FROM orders_parquet) TO 's3://lake/out/{out}/' \
             STORED AS PARQUET PARTITIONED BY (qty);",
            ddl = data::ddl("lake")
        )
    };
    // orders_parquet is four files, and every file holds every qty: each
    // task writes a file of each qty.
    s.cluster.submit(&copy("spread"), &[]).ok();
    let spread = files_per_qty(&s.s3, "out/spread/");
    assert_eq!(spread.len(), 5, "{spread:?}");
    assert!(spread.values().all(|&n| n >= 2), "a file per task and qty: {spread:?}");

    // In one task when the session says so: one file per qty.
    s.cluster
        .submit(&copy("single"), &["--conf", "quiver.distributed_writes=false"])
        .ok();
    let single = files_per_qty(&s.s3, "out/single/");
    assert!(single.len() == 5 && single.values().all(|&n| n == 1), "{single:?}");

    // Arrow IPC files too, and an INSERT into an Arrow table; all read back,
    // the Arrow files with the columns in their footers.
    let arrow = format!(
        "{ddl}COPY (SELECT order_id, amount FROM orders_parquet) TO 's3://lake/out/arrow/' STORED AS ARROW;
         CREATE EXTERNAL TABLE arrow_orders (order_id BIGINT, amount DOUBLE) STORED AS ARROW LOCATION 's3://lake/out/arrow/';
         INSERT INTO arrow_orders SELECT order_id, amount FROM orders_parquet WHERE amount < 5;",
        ddl = data::ddl("lake")
    );
    s.cluster.submit(&arrow, &[]).ok();
    let check = "CREATE EXTERNAL TABLE spread STORED AS PARQUET PARTITIONED BY (qty) LOCATION 's3://lake/out/spread/';
         CREATE EXTERNAL TABLE single STORED AS PARQUET PARTITIONED BY (qty) LOCATION 's3://lake/out/single/';
         CREATE EXTERNAL TABLE arrow_orders STORED AS ARROW LOCATION 's3://lake/out/arrow/';
         SELECT (SELECT count(*) FROM spread) AS spread, (SELECT count(*) FROM single) AS single,
                (SELECT count(*) FROM spread WHERE qty = '3') AS qty3, (SELECT count(*) FROM arrow_orders) AS arrow;";
    let run = s.cluster.sql(check, &["--format", "csv"]);
    run.ok();
    let orders = data::orders();
    let qty3 = orders.iter().filter(|o| o.qty == 3).count();
    let arrow_rows = orders.len() + orders.iter().filter(|o| o.amount < 5.0).count();
    assert_eq!(
        csv_rows(&run.stdout),
        vec![
            vec!["spread".to_string(), "single".into(), "qty3".into(), "arrow".into()],
            vec![
                orders.len().to_string(),
                orders.len().to_string(),
                qty3.to_string(),
                arrow_rows.to_string()
            ]
        ]
    );
}

#[test]
fn dataframe_job_reads_s3_writes_parquet_and_is_a_named_job() {
    let s = shared();
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs/data");
    let mut expected_revenue = 0.0;
    let mut expected_orders = 0;
    for day in std::fs::read_dir(sample.join("orders")).unwrap() {
        let day = day.unwrap().path();
        for file in std::fs::read_dir(&day).unwrap() {
            let file = file.unwrap().path();
            let text = std::fs::read_to_string(&file).unwrap();
            let key = format!(
                "sample/orders/{}/{}",
                day.file_name().unwrap().to_str().unwrap(),
                file.file_name().unwrap().to_str().unwrap()
            );
            s.s3.put("lake", &key, text.clone().into_bytes());
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split(',').collect();
                if f[6] == "shipped" {
                    expected_orders += 1;
                    expected_revenue += f[4].parse::<f64>().unwrap() * f[5].parse::<f64>().unwrap();
                }
            }
        }
    }
    s.s3.put(
        "lake",
        "sample/customers.json",
        std::fs::read(sample.join("customers.json")).unwrap(),
    );

    let mut conf = vec![];
    for (k, v) in &s.cluster.env {
        let key = match *k {
            "AWS_ACCESS_KEY_ID" => "s3.access_key_id",
            "AWS_SECRET_ACCESS_KEY" => "s3.secret_access_key",
            "AWS_ENDPOINT_URL" => "s3.endpoint",
            _ => continue,
        };
        conf.push(format!("{key}={v}"));
    }
    let args = quiver_jobs::orders_report::Args {
        input: "s3://lake/sample".into(),
        output: "s3://lake/report/orders/".into(),
        scheduler: Some(s.cluster.url.clone()),
        name: "orders-report-test".into(),
        conf,
    };
    let summary = crate::harness::block_on(quiver_jobs::orders_report::run(args)).unwrap();
    assert!(summary.rows_written > 0);

    let job = s.cluster.job(&summary.job_id);
    assert_eq!(job.summary.name, "orders-report-test");
    assert_eq!(job.summary.source, quiver_core::api::JobSource::Dataframe);
    assert_eq!(job.summary.state, JobState::Succeeded);
    assert!(!job.queries.is_empty(), "the job's queries are recorded");

    let run = s.cluster.sql(
        "CREATE EXTERNAL TABLE report STORED AS PARQUET PARTITIONED BY (day) LOCATION 's3://lake/report/orders/';
         SELECT count(*) AS rows, sum(orders) AS orders, round(sum(revenue), 2) AS revenue FROM report;",
        &["--format", "csv"],
    );
    run.ok();
    let rows = csv_rows(&run.stdout);
    assert_eq!(rows[1][0], summary.rows_written.to_string());
    assert_eq!(rows[1][1], expected_orders.to_string());
    let revenue: f64 = rows[1][2].parse().unwrap();
    assert!(
        (revenue - expected_revenue).abs() < 0.05,
        "{revenue} vs {expected_revenue}"
    );
}
