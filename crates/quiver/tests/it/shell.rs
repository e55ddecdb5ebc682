//! The interactive shell, driven through a pseudo-terminal like a person would.

use crate::harness::shared;

#[test]
fn interactive_shell_edits_describes_times_and_remembers() {
    let s = shared();
    let history = s.cluster.dir.join("interactive_history");
    let mut cmd = s.cluster.quiver(&["sql", "--name", "interactive"]);
    cmd.env("QUIVER_HISTORY_FILE", &history);
    let mut p = rexpect::session::spawn_command(cmd, Some(60_000)).unwrap();
    p.exp_string("quiver> ").unwrap();

    // Each line is typed only once the prompt is back: the line editor drops
    // what arrives while it is still reading the previous line.
    p.send_line("SELECT 40").unwrap();
    p.exp_string("...> ").unwrap();
    p.send_line("  + 2 AS answer;").unwrap();
    p.exp_string("| 42     |").unwrap();
    p.exp_string("1 row").unwrap();

    for (line, shows) in [
        ("\\timing", &["Timing is on."][..]),
        ("SELECT 1 AS one;", &["Time: "]),
        ("\\d", &["No tables"]),
        (
            "CREATE EXTERNAL TABLE customers STORED AS JSON LOCATION 's3://lake/customers/';",
            &["table customers created"],
        ),
        ("\\d", &["s3://lake/customers/"]),
        ("\\d customers", &["country", "location: s3://lake/customers/"]),
        ("\\d nope", &["no table or view named 'nope'"]),
        // An error does not end the session.
        ("SELECT * FROM missing_table;", &["not found"]),
        ("SELECT count(*) AS n FROM customers;", &["| 50 |"]),
    ] {
        p.exp_string("quiver> ").unwrap();
        p.send_line(line).unwrap();
        for text in shows {
            p.exp_string(text)
                .unwrap_or_else(|e| panic!("after {line:?}, expected {text:?}: {e}"));
        }
    }

    p.exp_string("quiver> ").unwrap();
    p.send_line("\\q").unwrap();
    p.exp_eof().unwrap();

    let remembered = std::fs::read_to_string(&history).unwrap();
    assert!(
        remembered.contains("SELECT count(*) AS n FROM customers;"),
        "{remembered}"
    );
    assert!(remembered.contains("+ 2 AS answer;"), "{remembered}");

    // The session was one job, ended when the shell quit.
    let list = s.cluster.get_json("/api/v1/jobs?q=interactive&source=shell");
    let job = &list["jobs"][0];
    assert_eq!(job["state"], "succeeded", "{list}");
    assert!(job["query_count"].as_u64().unwrap() >= 3, "{list}");
}

#[test]
fn submit_on_a_terminal_shows_progress_and_ctrl_c_cancels_the_job() {
    let s = shared();
    let script = s.cluster.dir.join("long-for-tty.sql");
    std::fs::write(&script, crate::jobs_api::long_query()).unwrap();
    let cmd = s
        .cluster
        .quiver(&["submit", script.to_str().unwrap(), "--name", "tty-progress"]);
    let mut p = rexpect::session::spawn_command(cmd, Some(60_000)).unwrap();
    // The live bar: tasks done of known tasks, stages, and the running statement.
    p.exp_regex(r"\d+/\d+ tasks").unwrap();
    p.exp_string("statement 4/4").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("interrupted; cancelling job").unwrap();
    p.exp_eof().unwrap();
    match p.process().wait().unwrap() {
        rexpect::process::WaitStatus::Exited(_, code) => assert_eq!(code, 130),
        other => panic!("quiver submit ended with {other:?}"),
    }
    let list = s.cluster.get_json("/api/v1/jobs?q=tty-progress");
    let id = list["jobs"][0]["id"].as_str().unwrap().to_owned();
    let job = s.cluster.wait_job(&id, std::time::Duration::from_secs(30));
    assert_eq!(job.summary.state, quiver_core::api::JobState::Cancelled);
}

#[test]
fn sql_f_runs_a_file_and_stops_at_the_first_error() {
    let s = shared();
    let file = s.cluster.dir.join("shell-file.sql");
    std::fs::write(
        &file,
        "SELECT 1 AS a;\nSELECT b FROM (SELECT 1 AS a);\nSELECT 3 AS c;\n",
    )
    .unwrap();
    let run = crate::harness::Run::from(
        s.cluster
            .quiver(&["sql", "-f", file.to_str().unwrap(), "--format", "csv"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout, "a\n1\n");
    assert!(
        run.stderr
            .contains("statement 2 (line 2: SELECT b FROM (SELECT 1 AS a))"),
        "{}",
        run.stderr
    );
}
