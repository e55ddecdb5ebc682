//! The small commands around the engine: `quiver fs` against a real S3
//! server, `quiver health` against real servers, `quiver config keys`.

use std::process::Command;

use crate::harness::{Run, S3Server, free_port, quiver_bin, shared};

fn quiver(s3: &S3Server, args: &[&str]) -> Run {
    let mut cmd = Command::new(quiver_bin());
    cmd.args(args).env_remove("QUIVER_CONFIG");
    for (k, v) in s3.env() {
        cmd.env(k, v);
    }
    Run::from(cmd.output().unwrap())
}

#[test]
fn fs_makes_buckets_uploads_a_tree_lists_and_downloads_it() {
    let s3 = S3Server::start();
    let made = quiver(&s3, &["fs", "mb", "s3://fresh", "s3://other"]);
    made.ok();
    assert!(made.stdout.contains("created bucket s3://fresh"), "{}", made.stdout);
    // Again: the buckets exist and belong to these credentials; not an error.
    quiver(&s3, &["fs", "mb", "s3://fresh"]).ok();

    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs/data");
    let up = quiver(
        &s3,
        &["fs", "cp", "--recursive", data.to_str().unwrap(), "s3://fresh/sample"],
    );
    up.ok();
    let keys = s3.list("fresh", "sample");
    assert!(keys.contains(&"sample/customers.json".to_string()), "{keys:?}");
    assert!(
        keys.contains(&"sample/orders/day=2024-03-01/part-0.csv".to_string()),
        "{keys:?}"
    );
    assert_eq!(
        s3.get("fresh", "sample/customers.json"),
        std::fs::read(data.join("customers.json")).unwrap()
    );

    let top = quiver(&s3, &["fs", "ls", "s3://fresh/sample/"]);
    top.ok();
    assert!(
        top.stdout.contains("PRE") && top.stdout.contains("sample/orders/"),
        "{}",
        top.stdout
    );
    assert!(top.stdout.contains("sample/customers.json"), "{}", top.stdout);
    let all = quiver(&s3, &["fs", "ls", "-r", "s3://fresh/sample"]);
    assert_eq!(all.ok().stdout.lines().count(), keys.len(), "{}", all.stdout);

    let out = tempfile::tempdir().unwrap();
    quiver(
        &s3,
        &[
            "fs",
            "cp",
            "-r",
            "s3://fresh/sample/orders",
            out.path().to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(
        std::fs::read(out.path().join("day=2024-03-02/part-0.csv")).unwrap(),
        std::fs::read(data.join("orders/day=2024-03-02/part-0.csv")).unwrap()
    );
    let one = out.path().join("c.json");
    quiver(
        &s3,
        &["fs", "cp", "s3://fresh/sample/customers.json", one.to_str().unwrap()],
    )
    .ok();
    assert!(one.is_file());

    // Mistakes are named.
    let dir = quiver(&s3, &["fs", "cp", data.to_str().unwrap(), "s3://fresh/x/"]);
    assert_eq!(dir.code, 2, "{dir:?}");
    assert!(dir.stderr.contains("add --recursive"), "{}", dir.stderr);
    let missing = quiver(
        &s3,
        &["fs", "cp", "s3://fresh/no/such.csv", out.path().to_str().unwrap()],
    );
    missing.failed();
    assert!(missing.stderr.contains("s3://fresh/no/such.csv"), "{}", missing.stderr);
    let nobucket = quiver(&s3, &["fs", "ls", "s3://nope/"]);
    nobucket.failed();
    assert!(
        nobucket.stderr.contains("hint: the bucket does not exist"),
        "{}",
        nobucket.stderr
    );
    assert!(!format!("{made:?}{up:?}{missing:?}{nobucket:?}").contains(crate::harness::SECRET_KEY));
}

#[test]
fn health_probes_the_scheduler_and_fails_on_a_closed_port() {
    let s = shared();
    let ok = Run::from(
        Command::new(quiver_bin())
            .args(["health", &format!("{}/healthz", s.cluster.url)])
            .output()
            .unwrap(),
    );
    ok.ok();
    let closed = Run::from(
        Command::new(quiver_bin())
            .args(["health", &format!("http://127.0.0.1:{}/readyz", free_port())])
            .output()
            .unwrap(),
    );
    closed.failed();
    assert!(closed.stderr.contains("unhealthy"), "{}", closed.stderr);
}

#[test]
fn config_keys_lists_every_quiver_and_storage_setting() {
    let run = Run::from(
        Command::new(quiver_bin())
            .args(["config", "keys", "--json"])
            .output()
            .unwrap(),
    );
    let keys: Vec<serde_json::Value> = serde_json::from_str(&run.ok().stdout).unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k["key"].as_str().unwrap()).collect();
    for expected in [
        "quiver.semi_join_reduction",
        "quiver.shared_footer_cache",
        "s3.endpoint",
        "s3.secret_access_key",
        "ballista.optimizer.broadcast_join_threshold_rows",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    assert!(keys.iter().all(|k| !k["doc"].as_str().unwrap().is_empty()));
}
