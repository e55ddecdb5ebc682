//! Bad input gets a clear error, and the cluster stays healthy: after each
//! case, every process is still running, none panicked, and the next job succeeds.

use std::sync::Mutex;

use crate::data;
use crate::harness::{ACCESS_KEY, Run, SECRET_KEY, Shared, csv_rows, free_port, shared, walk};

/// The cluster is shared; bad-input cases run one at a time so a failure is
/// attributed to the right case.
static SERIAL: Mutex<()> = Mutex::new(());

#[track_caller]
fn assert_healthy(s: &Shared) {
    let run = s.cluster.sql(
        &format!("{}SELECT count(*) AS n FROM orders_parquet;", data::ddl("lake")),
        &["--format", "csv"],
    );
    run.ok();
    assert_eq!(csv_rows(&run.stdout)[1], vec![data::ORDERS.to_string()]);
    let logs = s.cluster.logs();
    assert!(!logs.contains("panicked"), "a process panicked:\n{logs}");
    assert_eq!(s.cluster.executors_alive().len(), 2, "both executors stay alive");
}

#[track_caller]
fn assert_fails_with(run: &Run, needles: &[&str]) {
    run.failed();
    for n in needles {
        assert!(run.stderr.contains(n), "expected {n:?} in stderr:\n{}", run.stderr);
    }
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn invalid_sql_reports_the_statement_and_position() {
    let s = shared();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = s.cluster.submit("SELECT 1;\n\nSELECT a\n  FROMM t;", &[]);
    assert_fails_with(&run, &["statement 2 (line 3: SELECT a)", "line 4, column"]);
    let run = s.cluster.sql("SELEC 1", &[]);
    assert_fails_with(&run, &["statement 1 (line 1: SELEC 1)", "line 1, column 1"]);
    assert_healthy(s);
}

#[test]
fn unknown_table_and_column_are_named() {
    let s = shared();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = s.cluster.submit("SELECT * FROM no_such_table;", &[]);
    assert_fails_with(&run, &["no_such_table", "not found"]);
    let run = s.cluster.sql(
        &format!("{}SELECT no_such_column FROM customers;", data::ddl("lake")),
        &[],
    );
    assert_fails_with(&run, &["no_such_column"]);
    assert_healthy(s);
}

#[test]
fn missing_bucket_and_object_are_explained() {
    let s = shared();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = s.cluster.submit(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://no-such-bucket/data/';\nSELECT * FROM t;",
        &[],
    );
    assert_fails_with(&run, &["statement 1", "bucket does not exist"]);
    let run = s.cluster.submit(
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 's3://lake/no/such/file.csv';\nSELECT * FROM t;",
        &[],
    );
    assert_fails_with(&run, &["statement 1", "s3://lake/no/such/file.csv"]);
    assert_healthy(s);
}

#[test]
fn wrong_credentials_are_rejected_without_showing_the_secret() {
    let s = shared();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let wrong_secret = "definitely-wrong-secret-31337";
    let script = format!("{}SELECT count(*) FROM orders_parquet;", data::ddl("lake"));
    let id_conf = format!("s3.access_key_id={ACCESS_KEY}");
    let secret_conf = format!("s3.secret_access_key={wrong_secret}");
    let run = s.cluster.submit(&script, &["--conf", &id_conf, "--conf", &secret_conf]);
    assert_fails_with(&run, &["credentials were rejected"]);
    assert!(!run.stderr.contains(wrong_secret) && !run.stdout.contains(wrong_secret));

    // Client-side sessions too.
    let run = s.cluster.sql(&script, &["--conf", &id_conf, "--conf", &secret_conf]);
    assert_fails_with(&run, &["credentials were rejected"]);
    assert!(!run.stderr.contains(wrong_secret));

    // Neither the secret that was wrong nor the one that is right shows in any log
    // or stored job record.
    let logs = s.cluster.logs();
    assert!(!logs.contains(wrong_secret), "a log holds the secret");
    assert!(!logs.contains(SECRET_KEY), "a log holds the real secret");
    for entry in walk(&s.cluster.history) {
        let text = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&text);
        assert!(
            !text.contains(wrong_secret) && !text.contains(SECRET_KEY),
            "{} holds a secret",
            entry.display()
        );
    }
    assert_healthy(s);
}

#[test]
fn unreachable_endpoint_fails_fast_with_a_hint() {
    let s = shared();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dead = format!("s3.endpoint=http://127.0.0.1:{}", free_port());
    let started = std::time::Instant::now();
    let run = s.cluster.submit(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://lake/orders_parquet/';\nSELECT count(*) FROM t;",
        &["--conf", &dead],
    );
    assert_fails_with(&run, &["cannot reach the S3 endpoint"]);
    assert!(started.elapsed().as_secs() < 60, "took {:?}", started.elapsed());
    assert_healthy(s);
}

#[test]
fn malformed_csv_row_names_the_file() {
    let s = shared();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    s.s3.put("lake", "bad_csv/part-0.csv", b"a,b\n1,2\n3,4\n".to_vec());
    s.s3.put("lake", "bad_csv/part-1.csv", b"a,b\n5,6\n7,8,9,10\n".to_vec());
    let run = s.cluster.submit(
        "CREATE EXTERNAL TABLE bad (a BIGINT, b BIGINT) STORED AS CSV LOCATION 's3://lake/bad_csv/' \
         OPTIONS ('format.has_header' 'true');\nSELECT sum(a) FROM bad;",
        &[],
    );
    assert_fails_with(&run, &["statement 2", "s3://lake/bad_csv/part-1.csv"]);
    assert_healthy(s);
}

#[test]
fn malformed_json_line_names_the_file() {
    let s = shared();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    s.s3.put("lake", "bad_json/a.json", b"{\"x\": 1}\n{\"x\": 2}\n".to_vec());
    s.s3.put("lake", "bad_json/b.json", b"{\"x\": 3}\n{\"x\": \n".to_vec());
    let run = s.cluster.submit(
        "CREATE EXTERNAL TABLE badj (x BIGINT) STORED AS JSON LOCATION 's3://lake/bad_json/';\nSELECT sum(x) FROM badj;",
        &[],
    );
    assert_fails_with(&run, &["statement 2", "s3://lake/bad_json/b.json"]);
    assert_healthy(s);
}

#[test]
fn corrupt_parquet_names_the_file() {
    let s = shared();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let good = s.s3.get("lake", "orders_parquet/part-0.parquet");
    s.s3.put("lake", "bad_parquet/good.parquet", good.clone());
    let mut corrupt = good;
    let mid = corrupt.len() / 2;
    for b in &mut corrupt[8..mid] {
        *b = 0xAB;
    }
    s.s3.put("lake", "bad_parquet/corrupt.parquet", corrupt);
    let run = s.cluster.submit(
        "CREATE EXTERNAL TABLE badp (order_id BIGINT, customer_id BIGINT, amount DOUBLE, qty BIGINT, day VARCHAR) \
         STORED AS PARQUET LOCATION 's3://lake/bad_parquet/';\nSELECT sum(amount) FROM badp;",
        &[],
    );
    assert_fails_with(&run, &["statement 2", "s3://lake/bad_parquet/corrupt.parquet"]);
    assert_healthy(s);
}

#[test]
fn bad_settings_and_flags_are_usage_errors() {
    let s = shared();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = s
        .cluster
        .submit("SELECT 1;", &["--conf", "datafusion.execution.nope=1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("unknown setting 'datafusion.execution.nope'"),
        "{}",
        run.stderr
    );
    let run = s.cluster.submit("SELECT 1;", &["--conf", "novalue"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("'novalue' is not of the form key=value"),
        "{}",
        run.stderr
    );
    let run = Run::from(s.cluster.quiver(&["submit", "/no/such/script.sql"]).output().unwrap());
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("cannot read /no/such/script.sql"), "{}", run.stderr);
    assert_healthy(s);
}
