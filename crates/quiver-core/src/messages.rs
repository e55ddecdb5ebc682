//! Engine errors as messages a person can act on.

/// Strips layers of wrapping the engine adds around the message that matters.
///
/// A task failure on the cluster arrives as `Execution error: Job J failed:
/// Job failed due to stage S failed: Task failed due to runtime execution
/// error: DataFusionError(Shared(External(ArrowError(CsvError("...")))))`;
/// this turns it into `malformed CSV: ... (query J, stage S)`.
pub fn clean_message(message: &str) -> String {
    let mut m = message.trim().to_owned();
    loop {
        let before = m.len();
        for prefix in ["External error: ", "Arrow error: External error: ", "Execution error: "] {
            if let Some(rest) = m.strip_prefix(prefix) {
                m = rest.trim().to_owned();
            }
        }
        if m.len() == before {
            break;
        }
    }
    // An executor's error rebuilt on the client (`remote_error`).
    if m == "Arrow error: Divide by zero error" {
        return "division by zero".into();
    }
    for (engine, plain) in [
        ("Arrow error: Csv error: ", "malformed CSV: "),
        ("Arrow error: Json error: ", "malformed JSON: "),
    ] {
        if let Some(rest) = m.strip_prefix(engine) {
            return format!("{plain}{rest}");
        }
    }
    let task = regex::Regex::new(
        r"(?s)^Job (\S+) failed: Job failed due to stage (\d+) failed: Task failed due to runtime execution error: (.*)$",
    )
    .expect("valid regex");
    if let Some(c) = task.captures(&m) {
        let (mut inner, kinds) = unwrap_debug(&c[3]);
        if inner == "DivideByZero" {
            inner = "division by zero".into();
        }
        let kind = if kinds.iter().any(|k| k == "CsvError") {
            "malformed CSV: "
        } else if kinds.iter().any(|k| k == "JsonError") {
            "malformed JSON: "
        } else {
            ""
        };
        return format!("{kind}{inner} (query {}, stage {})", &c[1], &c[2]);
    }
    let job = regex::Regex::new(r"(?s)^Job (\S+) failed: (.*)$").expect("valid regex");
    if let Some(c) = job.captures(&m) {
        return format!("{} (query {})", unwrap_debug(&c[2]).0, &c[1]);
    }
    // The parser's errors arrive Debug-printed: `SQL error: ParserError("...")`.
    if let Some(rest) = m.strip_prefix("SQL error: ") {
        let (inner, kinds) = unwrap_debug(rest);
        if kinds.iter().any(|k| k == "ParserError" || k == "TokenizerError") {
            return format!("syntax error: {inner}");
        }
    }
    m
}

/// Peels `Name(...)` layers of a Debug-printed error; returns the innermost
/// text and the names peeled.
fn unwrap_debug(text: &str) -> (String, Vec<String>) {
    let layer = regex::Regex::new(r"(?s)^([A-Za-z]+)\((.*)\)$").expect("valid regex");
    let mut s = text.trim().to_owned();
    let mut names = Vec::new();
    while let Some(c) = layer.captures(&s) {
        names.push(c[1].to_owned());
        s = c[2].trim().to_owned();
    }
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s = s[1..s.len() - 1].replace("\\\"", "\"").replace("\\n", "\n");
    }
    (s, names)
}

/// True for errors that come from decoding a file's contents.
pub fn is_decode_error(message: &str) -> bool {
    [
        "malformed CSV",
        "malformed JSON",
        "Parquet error",
        "Csv error",
        "Json error",
        "Invalid Parquet",
    ]
    .iter()
    .any(|n| message.contains(n))
}

/// What to do about an operator that ran out of memory, when `message` says
/// one did. Sorts and aggregations spill to disk; a hash join's build side
/// cannot, so it must fit, or the join must be a sort-merge join: Ballista's
/// adaptive planner chooses one when a build partition is larger than
/// `ballista.optimizer.hash_join_max_build_partition_bytes` (64 MiB).
pub fn memory_hint(message: &str) -> Option<&'static str> {
    let out_of_memory = [
        "Failed to allocate additional",
        "Resources exhausted",
        "Not enough memory",
    ]
    .iter()
    .any(|n| message.contains(n));
    if !out_of_memory {
        None
    } else if message.contains("HashJoin") {
        Some(
            "a hash join keeps its smaller side in memory and cannot spill it to disk: \
             SET ballista.optimizer.hash_join_max_build_partition_bytes below each task's share of the \
             executors' --memory-limit to make such joins sort-merge joins, which spill; or give the executors \
             more memory, or more executors or slots so each partition holds less",
        )
    } else {
        Some("the query needs more memory than an executor's --memory-limit allows, even spilling to disk: raise it")
    }
}

/// Rewrites the parser's `Line: N, Column: C` (relative to the statement) into
/// script lines.
pub fn script_positions(message: &str, first_line: usize) -> String {
    let re = regex::Regex::new(r"Line: (\d+), Column: (\d+)").expect("valid regex");
    re.replace_all(message, |caps: &regex::Captures| {
        let line: usize = caps[1].parse().unwrap_or(1);
        format!("line {}, column {}", first_line + line.saturating_sub(1), &caps[2])
    })
    .into_owned()
}

/// The innermost cause of an error chain: "Connection refused" rather than
/// "error sending request".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_errors_get_a_hint() {
        let join = "Failed to allocate additional 8.5 MB for HashJoinInput[1] with 10.3 MB already allocated";
        assert!(memory_hint(join).unwrap().contains("cannot spill"));
        let sort = "Resources exhausted: Failed to allocate additional 10.0 MB for ExternalSorterMerge[1]";
        assert!(memory_hint(sort).unwrap().contains("--memory-limit"));
        assert_eq!(memory_hint("table 't' not found"), None);
    }

    #[test]
    fn cluster_task_failures_are_unwrapped() {
        let raw = "Execution error: Job 038G failed: Job failed due to stage 0 failed: Task failed due to runtime \
                   execution error: DataFusionError(Shared(External(ArrowError(CsvError(\"incorrect number of fields \\\"x\\\"\")))))";
        assert_eq!(
            clean_message(raw),
            "malformed CSV: incorrect number of fields \"x\" (query 038G, stage 0)"
        );
        assert_eq!(clean_message("External error: Execution error: plain"), "plain");
        assert_eq!(
            clean_message("Arrow error: Csv error: too many fields"),
            "malformed CSV: too many fields"
        );
        assert_eq!(clean_message("Arrow error: Divide by zero error"), "division by zero");
    }

    #[test]
    fn parser_errors_read_as_syntax_errors() {
        assert_eq!(
            clean_message("SQL error: ParserError(\"Expected: an SQL statement, found: SELEC at Line: 1, Column: 1\")"),
            "syntax error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1"
        );
    }

    #[test]
    fn parser_positions_become_script_lines() {
        assert_eq!(
            script_positions("Expected: x at Line: 2, Column: 5", 10),
            "Expected: x at line 11, column 5"
        );
    }
}
