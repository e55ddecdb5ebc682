//! Delta Lake on a cluster of two executors over S3 (moto_server, whose
//! conditional put is atomic as Delta commits need; MinIO's is too).
//!
//! The other writer and reader is the Python `deltalake` package from PyPI,
//! driven by `tests/python/delta_peer.py`.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use quiver_core::api::JobState;
use serde_json::Value;

use crate::harness::{Cluster, ClusterOptions, MotoServer, Run, S3Like, free_port, which};

struct DeltaEnv {
    s3: MotoServer,
    cluster: Cluster,
}

fn env() -> &'static DeltaEnv {
    static ENV: OnceLock<DeltaEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let s3 = MotoServer::start();
        s3.create_bucket("lake");
        let cluster = Cluster::start(&s3, ClusterOptions::default());
        DeltaEnv { s3, cluster }
    })
}

/// A fresh table location.
fn location(name: &str) -> String {
    format!("s3://lake/delta/{name}-{}", free_port())
}

/// Runs the Python peer; returns what it printed, as JSON.
fn peer(args: &[&str]) -> Value {
    let python = which("python3").expect("python3");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/delta_peer.py");
    let e = env();
    let mut cmd = Command::new(python);
    cmd.arg(script).args(args).env("TEST_S3_ENDPOINT", e.s3.endpoint());
    for (k, v) in e.s3.env() {
        cmd.env(k, v);
    }
    let out = Run::from(cmd.output().unwrap());
    out.ok();
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("peer printed {:?}: {e}", out.stdout))
}

/// Rows of the last query of `sql`, run with `quiver sql -e`, sorted by `id`.
fn rows(sql: &str) -> Vec<Value> {
    let run = env().cluster.sql(sql, &["--format", "json"]);
    run.ok();
    let mut rows: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    rows.sort_by_key(|r| r["id"].as_i64().unwrap_or(i64::MIN));
    rows
}

/// Rows as the Python reader prints them, normalized like Quiver's JSON
/// (Quiver leaves nulls out of its JSON objects).
fn normalized(rows: &Value) -> Vec<Value> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut o = r.as_object().unwrap().clone();
            o.retain(|_, v| !v.is_null());
            Value::Object(o)
        })
        .collect()
}

fn register(name: &str, uri: &str) -> String {
    format!("CREATE EXTERNAL TABLE {name} STORED AS DELTA LOCATION '{uri}';\n")
}

#[test]
fn tables_written_by_python_read_correctly_at_every_version() {
    let uri = location("from-python");
    let made = peer(&["make_history", &uri]);
    assert_eq!(made["version"], 3);
    for version in 0..=3 {
        let expected = normalized(&peer(&["read", &uri, &version.to_string()]));
        let got = rows(&format!(
            "{}SELECT * FROM t VERSION AS OF {version};",
            register("t", &uri)
        ));
        assert_eq!(got, expected, "version {version}");
    }
    // The latest version: the added column, the delete.
    let latest = rows(&format!("{}SELECT * FROM t;", register("t", &uri)));
    assert_eq!(latest, normalized(&peer(&["read", &uri])));
    assert!(latest.iter().all(|r| r["id"] != 2), "order 2 was deleted");
    assert_eq!(latest.iter().find(|r| r["id"] == 9).unwrap()["score"], 0.5);

    // A pinned table, by option and by timestamp.
    let pinned = rows(&format!(
        "CREATE EXTERNAL TABLE t1 STORED AS DELTA LOCATION '{uri}' OPTIONS ('version' '1');\nSELECT * FROM t1;"
    ));
    assert_eq!(pinned, normalized(&peer(&["read", &uri, "1"])));
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let by_time = rows(&format!(
        "{}SELECT * FROM t TIMESTAMP AS OF '{now}';",
        register("t", &uri)
    ));
    assert_eq!(by_time, latest);

    let run = env().cluster.sql(
        &format!("{}SELECT * FROM t VERSION AS OF 17;", register("t", &uri)),
        &[],
    );
    run.failed();
    assert!(run.stderr.contains("no such version"), "{}", run.stderr);
}

#[test]
fn a_table_needing_an_unsupported_reader_feature_is_refused() {
    let uri = location("dv");
    peer(&["deletion_vectors", &uri]);
    let run = env()
        .cluster
        .sql(&format!("{}SELECT * FROM t;", register("t", &uri)), &[]);
    run.failed();
    assert!(run.stderr.contains("deletion vectors"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "no rows come back: {}", run.stdout);
}

#[test]
fn writes_by_the_cluster_are_read_back_by_python() {
    let uri = location("written");
    let e = env();
    let script = format!(
        "CREATE TABLE sales USING delta PARTITIONED BY (region) LOCATION '{uri}' AS
           SELECT * FROM (VALUES (1, 'EU', 10.0), (2, 'US', 20.0), (3, 'EU', 30.0), (4, 'APAC', 40.0)) AS v(id, region, amount);
         INSERT INTO sales VALUES (5, 'US', 50.0), (6, 'EU', 60.0);"
    );
    let run = e.cluster.submit(&script, &["--name", "delta-writes"]);
    run.ok();
    assert_eq!(peer(&["version", &uri]), 1, "CTAS and INSERT are one commit each");
    let python = normalized(&peer(&["read", &uri]));
    assert_eq!(python.len(), 6);
    assert_eq!(
        rows(&format!("{}SELECT * FROM sales;", register("sales", &uri))),
        python
    );

    // The Parquet files were written by tasks on the executors.
    let list = e.cluster.get_json("/api/v1/jobs?q=delta-writes");
    let job = e.cluster.job(list["jobs"][0]["id"].as_str().unwrap());
    let write_stages: Vec<_> = job
        .queries
        .iter()
        .flat_map(|q| &q.stages)
        .filter(|s| s.plan.contains("DeltaWriteExec"))
        .collect();
    assert!(!write_stages.is_empty(), "the writes ran as stages on the cluster");
    let writers: BTreeSet<&str> = write_stages
        .iter()
        .flat_map(|s| &s.tasks)
        .filter_map(|t| t.executor_id.as_deref())
        .collect();
    let executors: BTreeSet<&str> = e.cluster.executors.iter().map(|(id, _)| id.as_str()).collect();
    assert!(!writers.is_empty() && writers.is_subset(&executors), "{writers:?}");

    // Overwrite replaces everything in one commit.
    e.cluster
        .submit(
            &format!(
                "{}INSERT OVERWRITE sales SELECT 7, 'EU', 70.0;",
                register("sales", &uri)
            ),
            &[],
        )
        .ok();
    assert_eq!(peer(&["version", &uri]), 2);
    assert_eq!(
        normalized(&peer(&["read", &uri])),
        vec![serde_json::json!({"id": 7, "region": "EU", "amount": 70.0})]
    );
}

#[test]
fn scans_are_spread_over_executors_and_skip_files() {
    let uri = location("pruned");
    let e = env();
    // Eight files: four regions, two appends.
    let mut script = format!(
        "CREATE TABLE events USING delta PARTITIONED BY (region) LOCATION '{uri}' AS
           SELECT id, region, id * 1.5 AS value FROM (VALUES (1,'EU'),(2,'US'),(3,'APAC'),(4,'LATAM')) AS v(id, region);\n"
    );
    script.push_str("INSERT INTO events SELECT id + 100, region, value FROM events;\n");
    e.cluster.submit(&script, &[]).ok();

    let full = e.cluster.submit_rest(
        &format!("{}SELECT count(*) AS n FROM events;", register("events", &uri)),
        "delta-full-scan",
    );
    let full = e.cluster.wait_job(&full, Duration::from_secs(60));
    assert_eq!(full.summary.state, JobState::Succeeded, "{:?}", full.summary.error);
    let scan_stage = |job: &quiver_core::api::JobDetail| {
        job.queries
            .last()
            .unwrap()
            .stages
            .iter()
            .find(|s| s.plan.contains("DataSourceExec"))
            .cloned()
            .expect("a scan stage")
    };
    // The scan metrics say how many files each query opened.
    let files_opened = |plan: &str| -> u64 {
        let at = plan
            .find("files_opened=")
            .unwrap_or_else(|| panic!("no files_opened metric in:\n{plan}"));
        plan[at + "files_opened=".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let full_scan = scan_stage(&full);
    assert!(full_scan.plan.contains("file_type=parquet"), "{}", full_scan.plan);
    assert_eq!(files_opened(&full_scan.plan), 8, "every file:\n{}", full_scan.plan);
    let readers: BTreeSet<&str> = full_scan
        .tasks
        .iter()
        .filter_map(|t| t.executor_id.as_deref())
        .collect();
    assert_eq!(readers.len(), 2, "the scan's tasks ran on both executors: {readers:?}");

    // A partition filter reads only that partition's files.
    let eu = e.cluster.submit_rest(
        &format!(
            "{}SELECT count(*) AS n FROM events WHERE region = 'EU';",
            register("events", &uri)
        ),
        "delta-partition-scan",
    );
    let eu = e.cluster.wait_job(&eu, Duration::from_secs(60));
    let eu_scan = scan_stage(&eu);
    assert_eq!(files_opened(&eu_scan.plan), 2, "{}", eu_scan.plan);
    assert!(!eu_scan.plan.contains("region=US"), "{}", eu_scan.plan);
    let preview = e.cluster.get_json(&format!("/api/v1/jobs/{}/result", eu.summary.id));
    assert_eq!(preview["rows"][0]["n"], 2);

    // Min/max statistics skip files too: ids above 100 are only in the second commit.
    let late = e.cluster.submit_rest(
        &format!(
            "{}SELECT count(*) AS n FROM events WHERE id > 100;",
            register("events", &uri)
        ),
        "delta-stats-scan",
    );
    let late = e.cluster.wait_job(&late, Duration::from_secs(60));
    assert_eq!(files_opened(&scan_stage(&late).plan), 4);
    let preview = e.cluster.get_json(&format!("/api/v1/jobs/{}/result", late.summary.id));
    assert_eq!(preview["rows"][0]["n"], 4);
}

#[test]
fn merge_update_and_delete_change_rows_as_expected() {
    let uri = location("upserts");
    let e = env();
    let script = format!(
        "CREATE TABLE stock USING delta LOCATION '{uri}' AS
           SELECT * FROM (VALUES (1, 'apple', 10), (2, 'pear', 20), (3, 'plum', 30)) AS v(id, name, qty);
         UPDATE stock SET qty = qty + 5 WHERE name = 'pear';
         DELETE FROM stock WHERE id = 3;
         MERGE INTO stock t USING (SELECT * FROM (VALUES (1, 'apple', 99), (4, 'fig', 40)) AS v(id, name, qty)) s
           ON t.id = s.id
           WHEN MATCHED THEN UPDATE SET qty = s.qty
           WHEN NOT MATCHED THEN INSERT (id, name, qty) VALUES (s.id, s.name, s.qty);"
    );
    let run = e.cluster.submit(&script, &[]);
    run.ok();
    assert!(
        run.stderr.contains("1 row updated") && run.stderr.contains("1 row deleted"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("1 inserted, 1 updated"), "{}", run.stderr);
    let expected = serde_json::json!([
        {"id": 1, "name": "apple", "qty": 99},
        {"id": 2, "name": "pear", "qty": 25},
        {"id": 4, "name": "fig", "qty": 40}
    ]);
    assert_eq!(normalized(&peer(&["read", &uri])), normalized(&expected));
    assert_eq!(
        rows(&format!("{}SELECT * FROM stock;", register("stock", &uri))),
        normalized(&expected)
    );
}

#[test]
fn history_optimize_and_vacuum() {
    let uri = location("maintained");
    let e = env();
    let mut script = format!("CREATE TABLE m USING delta LOCATION '{uri}' AS SELECT 1 AS id;\n");
    for i in 2..=4 {
        script.push_str(&format!("INSERT INTO m VALUES ({i});\n"));
    }
    e.cluster.submit(&script, &[]).ok();

    let history = rows(&format!("{}DESCRIBE HISTORY m;", register("m", &uri)));
    let run = e.cluster.sql(
        &format!("{}DESCRIBE HISTORY m;", register("m", &uri)),
        &["--format", "json"],
    );
    let history_rows: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(history.len(), 4);
    assert_eq!(history_rows[0]["version"], 3);
    assert_eq!(history_rows[0]["operation"], "WRITE");
    assert_eq!(history_rows[3]["operation"], "CREATE TABLE");

    let optimized = rows(&format!("{}OPTIMIZE m;", register("m", &uri)));
    assert_eq!(optimized[0]["files_removed"], 4);
    assert_eq!(optimized[0]["files_added"], 1);

    let run = e
        .cluster
        .sql(&format!("{}VACUUM m RETAIN 0 HOURS;", register("m", &uri)), &[]);
    run.failed();
    assert!(run.stderr.contains("168-hour safety period"), "{}", run.stderr);
    let dry = rows(&format!(
        "{}SET quiver.delta_retention_check = false;\nVACUUM m RETAIN 0 HOURS DRY RUN;",
        register("m", &uri)
    ));
    assert_eq!(dry.len(), 4, "the four compacted files would go: {dry:?}");
    let gone = rows(&format!(
        "{}SET quiver.delta_retention_check = false;\nVACUUM m RETAIN 0 HOURS;",
        register("m", &uri)
    ));
    assert_eq!(gone.len(), 4);
    // The latest version still reads; an old one now lacks its files and says so.
    let ids: Vec<i64> = rows(&format!("{}SELECT id FROM m;", register("m", &uri)))
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    let run = e
        .cluster
        .sql(&format!("{}SELECT * FROM m VERSION AS OF 1;", register("m", &uri)), &[]);
    run.failed();
}

#[test]
fn concurrent_appends_all_land() {
    let uri = location("concurrent");
    let e = env();
    e.cluster
        .submit(
            &format!("CREATE TABLE c USING delta LOCATION '{uri}' AS SELECT 0 AS writer, 0 AS n;"),
            &[],
        )
        .ok();
    let writers: Vec<_> = (1..=3)
        .map(|w| {
            let script = e.cluster.dir.join(format!("append-{w}-{}.sql", free_port()));
            let mut sql = register("c", &uri);
            for n in 1..=3 {
                sql.push_str(&format!("INSERT INTO c VALUES ({w}, {n});\n"));
            }
            std::fs::write(&script, sql).unwrap();
            e.cluster
                .quiver(&["submit", script.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in writers {
        let out = Run::from(w.wait_with_output().unwrap());
        out.ok();
    }
    assert_eq!(
        peer(&["version", &uri]),
        9,
        "nine appends, nine commits after the create"
    );
    let all = rows(&format!(
        "{}SELECT writer, n FROM c WHERE writer > 0;",
        register("c", &uri)
    ));
    assert_eq!(all.len(), 9);
    let python = peer(&["read", &uri]);
    assert_eq!(python.as_array().unwrap().len(), 10);
}

#[test]
fn failed_and_cancelled_writes_commit_nothing() {
    let uri = location("atomic");
    let e = env();
    e.cluster
        .submit(
            &format!("CREATE TABLE a USING delta LOCATION '{uri}' AS SELECT * FROM (VALUES (1), (2)) AS v(id);"),
            &[],
        )
        .ok();
    // Fails while executors are writing: the division fails on row 3.
    let run = e.cluster.submit(
        &format!(
            "{}INSERT INTO a SELECT CAST(10 / (3 - id) AS BIGINT) FROM (SELECT * FROM (VALUES (1), (2), (3)) AS v(id));",
            register("a", &uri)
        ),
        &[],
    );
    run.failed();
    assert!(run.stderr.contains("division by zero"), "{}", run.stderr);
    assert_eq!(peer(&["version", &uri]), 0, "nothing was committed");
    assert_eq!(peer(&["read", &uri]).as_array().unwrap().len(), 2);

    // Cancelled while the big insert runs.
    let id = e.cluster.submit_rest(
        &format!(
            "{}INSERT INTO a SELECT x.id FROM a x, (SELECT * FROM unnest(range(1, 5000000))) y;",
            register("a", &uri)
        ),
        "delta-cancelled",
    );
    e.cluster.wait_state(&id, JobState::Running, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let r = e
        .cluster
        .post(&format!("/api/v1/jobs/{id}/cancel"), &serde_json::json!({}));
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        e.cluster.wait_job(&id, Duration::from_secs(60)).summary.state,
        JobState::Cancelled
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(peer(&["version", &uri]), 0, "a cancelled job commits nothing");
}
