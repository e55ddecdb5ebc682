//! Errors raised on an executor, given back their engine form on the client.
//!
//! Ballista reports a failed task to the scheduler as text: the executor
//! Debug-prints the error (`DataFusionError(ArrowError(DivideByZero, None))`)
//! and the client receives `Execution error: Job J failed: Job failed due to
//! stage S failed: Task failed due to runtime execution error: ...`. One
//! process would have said `Arrow error: Divide by zero error`, and tests,
//! tools and users that match on DataFusion's messages saw something else.
//!
//! The executor wraps a failing task's error in a [`TaskError`]
//! ([`TaskError::wrap`]): its Debug form carries the error's Display text
//! between known markers, and its `source()` is the original error, so
//! Ballista still tells retryable I/O and fetch failures from the rest. The
//! client's [`restore`] finds that text in the job's failure and rebuilds the
//! error whose Display is the same text, with the job and stage as a
//! [`Diagnostic`] note ([`where_failed`]).
//!
//! ```
//! use datafusion::arrow::error::ArrowError;
//! use datafusion::error::DataFusionError;
//! use quiver_core::remote_error::{TaskError, restore};
//!
//! let raised = DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None);
//! // What Ballista makes of the executor's error on its way to the client:
//! let reported = format!(
//!     "Job 0Ab failed: Job failed due to stage 2 failed: Task failed due to runtime execution error: {:?}\n",
//!     TaskError::wrap(raised),
//! );
//! let received = restore(DataFusionError::Execution(reported));
//! assert_eq!(received.to_string(), "Arrow error: Divide by zero error");
//! ```

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use arrow::error::ArrowError;
use ballista_core::error::BallistaError;
use datafusion::common::Diagnostic;
use datafusion::error::DataFusionError;
use datafusion::parquet::errors::ParquetError;

/// Starts the Display text inside a [`TaskError`]'s Debug form; a JSON
/// string follows, then `)`.
const MARKER: &str = "QuiverTaskError(";

/// An executor's task error, carried to the client as its Display text; see
/// the [module docs](self).
pub struct TaskError {
    text: String,
    cause: DataFusionError,
}

impl TaskError {
    /// `error`, wrapped so that the client can rebuild it.
    pub fn wrap(error: DataFusionError) -> DataFusionError {
        let text = raised(&error);
        DataFusionError::External(Box::new(TaskError { text, cause: error }))
    }
}

/// The Display text of the error an operator raised, inside the layers a
/// stage adds on its way out: Ballista's shuffle writer turns its input's
/// error into a `BallistaError` (an Arrow error becomes
/// `BallistaError::ArrowError`) and boxes that as `External`, and a
/// repartition hands each output a `Shared` copy. One process adds none of
/// them.
fn raised(mut error: &DataFusionError) -> String {
    loop {
        error = match error {
            DataFusionError::Shared(inner) => inner.as_ref(),
            DataFusionError::External(inner) => {
                if let Some(inner) = inner.downcast_ref::<DataFusionError>() {
                    inner
                } else if let Some(inner) = inner.downcast_ref::<Arc<DataFusionError>>() {
                    inner.as_ref()
                } else {
                    match inner.downcast_ref::<BallistaError>() {
                        Some(BallistaError::DataFusionError(inner)) => inner.as_ref(),
                        // Prints as DataFusion's Arrow variant does.
                        Some(arrow @ BallistaError::ArrowError(_)) => return arrow.to_string(),
                        _ => return error.strip_backtrace(),
                    }
                }
            }
            _ => return error.strip_backtrace(),
        };
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(&self.text).map_err(|_| fmt::Error)?;
        write!(f, "{MARKER}{json})")
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Error for TaskError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.cause)
    }
}

/// An error known only by its text; the payload of rebuilt `External`
/// errors, whose Display adds nothing to it.
#[derive(Debug)]
struct Text(String);

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Text {}

/// Where a query failed on the cluster, as [`restore`] notes it: the
/// diagnostic's message, e.g. `query 0Ab, stage 2`.
pub fn where_failed(error: &DataFusionError) -> Option<&str> {
    error
        .diagnostic()
        .filter(|d| d.message.starts_with("query "))
        .map(|d| d.message.as_str())
}

/// `error` as the failing process raised it, when it is a distributed
/// query's failure that carries it; otherwise `error` unchanged. See the
/// [module docs](self).
pub fn restore(error: DataFusionError) -> DataFusionError {
    let DataFusionError::Execution(message) = &error else {
        return error;
    };
    let Some((job, rest)) = message.strip_prefix("Job ").and_then(|m| m.split_once(" failed: ")) else {
        return error;
    };
    let stage = rest
        .strip_prefix("Job failed due to stage ")
        .and_then(|s| s.split_once(' '))
        .map(|(id, _)| id);
    let rebuilt = match rest.find(MARKER) {
        Some(at) => {
            let json = &rest[at + MARKER.len()..];
            match serde_json::Deserializer::from_str(json).into_iter::<String>().next() {
                Some(Ok(text)) => Some(from_display(&text)),
                _ => None,
            }
        }
        // Failures the scheduler raised itself (planning a stage) arrive as
        // plain Display text.
        None if stage.is_none() => known_prefix(rest.trim_end()),
        None => None,
    };
    let Some(rebuilt) = rebuilt else {
        return error;
    };
    let note = match stage {
        Some(stage) => format!("query {job}, stage {stage}"),
        None => format!("query {job}"),
    };
    rebuilt.with_diagnostic(Diagnostic::new_error(note, None))
}

/// The error whose Display is `text`; an `Execution` error holding `text`
/// when no variant prints it exactly.
fn from_display(text: &str) -> DataFusionError {
    known_prefix(text).unwrap_or_else(|| DataFusionError::Execution(text.to_owned()))
}

/// The error whose Display is `text`, when `text` starts with the prefix of
/// a variant that can be rebuilt from its message.
fn known_prefix(text: &str) -> Option<DataFusionError> {
    DATAFUSION_VARIANTS
        .iter()
        .find_map(|(prefix, rebuild)| text.strip_prefix(prefix).map(|rest| (rebuild, rest)))
        .and_then(|(rebuild, rest)| rebuild(rest))
}

/// Rebuilds a `DataFusionError` variant from the message after its Display
/// prefix; `None` when the message is not one the variant prints.
type RebuildDataFusion = fn(&str) -> Option<DataFusionError>;

/// The `DataFusionError` variants [`known_prefix`] rebuilds, by Display prefix.
const DATAFUSION_VARIANTS: &[(&str, RebuildDataFusion)] = &[
    ("Arrow error: ", |m| {
        Some(DataFusionError::ArrowError(Box::new(arrow_from_display(m)), None))
    }),
    ("Parquet error: ", |m| {
        m.strip_prefix("Parquet error: ")
            .map(|m| DataFusionError::ParquetError(Box::new(ParquetError::General(m.to_owned()))))
    }),
    ("IO error: ", |m| {
        Some(DataFusionError::IoError(std::io::Error::other(m.to_owned())))
    }),
    ("This feature is not implemented: ", |m| {
        Some(DataFusionError::NotImplemented(m.to_owned()))
    }),
    ("Internal error: ", |m| {
        // Display appends a request to file a bug; the message is before it.
        let message = m.split_once(".\nThis issue was likely caused").map_or(m, |(m, _)| m);
        Some(DataFusionError::Internal(message.to_owned()))
    }),
    ("Error during planning: ", |m| Some(DataFusionError::Plan(m.to_owned()))),
    ("Invalid or Unsupported Configuration: ", |m| {
        Some(DataFusionError::Configuration(m.to_owned()))
    }),
    ("Execution error: ", |m| Some(DataFusionError::Execution(m.to_owned()))),
    ("Resources exhausted: ", |m| {
        Some(DataFusionError::ResourcesExhausted(m.to_owned()))
    }),
    ("External error: ", |m| {
        Some(DataFusionError::External(Box::new(Text(m.to_owned()))))
    }),
    ("Substrait error: ", |m| Some(DataFusionError::Substrait(m.to_owned()))),
    ("FFI error: ", |m| Some(DataFusionError::Ffi(m.to_owned()))),
];

/// The Arrow error whose Display is `text`.
fn arrow_from_display(text: &str) -> ArrowError {
    match text {
        "Divide by zero error" => return ArrowError::DivideByZero,
        "Dictionary key bigger than the key type" => return ArrowError::DictionaryKeyOverflowError,
        "Run end encoded array index overflow error" => return ArrowError::RunEndIndexOverflowError,
        _ => {}
    }
    ARROW_VARIANTS
        .iter()
        .find_map(|(prefix, rebuild)| text.strip_prefix(prefix).map(|rest| rebuild(rest.to_owned())))
        .unwrap_or_else(|| ArrowError::ExternalError(Box::new(Text(text.to_owned()))))
}

/// Rebuilds an `ArrowError` variant from the message after its Display prefix.
type RebuildArrow = fn(String) -> ArrowError;

/// The `ArrowError` variants [`arrow_from_display`] rebuilds, by Display
/// prefix; anything else becomes an `ExternalError` ("External error: ").
const ARROW_VARIANTS: &[(&str, RebuildArrow)] = &[
    ("Not yet implemented: ", ArrowError::NotYetImplemented),
    ("External error: ", |m| ArrowError::ExternalError(Box::new(Text(m)))),
    ("Cast error: ", ArrowError::CastError),
    ("Memory error: ", ArrowError::MemoryError),
    ("Parser error: ", ArrowError::ParseError),
    ("Schema error: ", ArrowError::SchemaError),
    ("Compute error: ", ArrowError::ComputeError),
    ("Arithmetic overflow: ", ArrowError::ArithmeticOverflow),
    ("Avro error: ", ArrowError::AvroError),
    ("Csv error: ", ArrowError::CsvError),
    ("Json error: ", ArrowError::JsonError),
    ("Io error: ", |m| {
        ArrowError::IoError(m.clone(), std::io::Error::other(m))
    }),
    ("Ipc error: ", ArrowError::IpcError),
    ("Invalid argument error: ", ArrowError::InvalidArgumentError),
    ("Parquet argument error: ", ArrowError::ParquetError),
    ("C Data interface error: ", ArrowError::CDataInterface),
];

#[cfg(test)]
mod tests {
    use ballista_core::serde::protobuf::FailedTask;
    use ballista_core::serde::protobuf::failed_task::FailedReason;

    use super::*;

    /// What the client receives when an executor's task fails with `raised`.
    fn reported(raised: DataFusionError) -> DataFusionError {
        let ballista = format!("{:?}", TaskError::wrap(raised));
        DataFusionError::Execution(format!(
            "Job 9xZ failed: Job failed due to stage 3 failed: Task failed due to runtime execution error: \
             DataFusionError({ballista})\n"
        ))
    }

    #[test]
    fn executor_errors_read_as_one_process_would_print_them() {
        let cases = [
            DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None),
            DataFusionError::ArrowError(Box::new(ArrowError::CastError("Cannot cast 'a' to Int32".into())), None),
            DataFusionError::ArrowError(
                Box::new(ArrowError::ExternalError(Box::new(DataFusionError::Execution(
                    "nested \"quoted\" (parens)\nline two".into(),
                )))),
                None,
            ),
            DataFusionError::Execution("row 3: value out of range".into()),
            DataFusionError::Plan("no such column".into()),
            DataFusionError::Internal("invariant broken".into()),
            DataFusionError::ResourcesExhausted("Failed to allocate additional 8 MB".into()),
            DataFusionError::NotImplemented("unsupported type".into()),
        ];
        for raised in cases {
            let want = raised.strip_backtrace();
            let got = restore(reported(raised));
            assert_eq!(got.to_string(), want);
            assert_eq!(where_failed(&got), Some("query 9xZ, stage 3"));
        }
    }

    fn shuffled_again() -> DataFusionError {
        DataFusionError::Shared(Arc::new(
            BallistaError::from(DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None))
                .into_datafusion(),
        ))
    }

    #[test]
    fn layers_a_stage_adds_are_peeled() {
        let divide = || DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None);
        let boxed = DataFusionError::External(Box::new(divide()));
        let shared = DataFusionError::Shared(Arc::new(DataFusionError::External(Box::new(divide()))));
        // What Ballista's shuffle writer returns for an operator's Arrow error.
        let shuffled = BallistaError::from(divide()).into_datafusion();
        let nested = BallistaError::DataFusionError(Box::new(shuffled_again())).into_datafusion();
        for layered in [boxed, shared, shuffled, nested] {
            assert_eq!(
                restore(reported(layered)).to_string(),
                "Arrow error: Divide by zero error"
            );
        }
        // An external error that is not the engine's keeps its wording.
        let foreign = DataFusionError::External(Box::new(std::io::Error::other("socket closed")));
        assert_eq!(restore(reported(foreign)).to_string(), "External error: socket closed");
    }

    #[test]
    fn the_variant_comes_back_where_it_can() {
        let got = restore(reported(DataFusionError::Plan("x".into())));
        assert!(matches!(got.find_root(), DataFusionError::Plan(m) if m == "x"));
        let got = restore(reported(DataFusionError::ArrowError(
            Box::new(ArrowError::DivideByZero),
            None,
        )));
        assert!(
            matches!(got.find_root(), DataFusionError::ArrowError(e, _) if matches!(**e, ArrowError::DivideByZero))
        );
    }

    #[test]
    fn ballista_still_sees_the_cause() {
        let io = DataFusionError::IoError(std::io::Error::other("connection reset"));
        let wrapped = TaskError::wrap(io);
        assert!(matches!(wrapped.find_root(), DataFusionError::IoError(_)));
        let failed = FailedTask::from(BallistaError::from(wrapped));
        assert!(failed.retryable);
        assert!(matches!(failed.failed_reason, Some(FailedReason::IoError(_))));

        // A lost map output still sends the scheduler back to re-run it.
        let lost = BallistaError::FetchFailed("exec-1".into(), 2, 5, "connection refused".into());
        let failed = FailedTask::from(BallistaError::from(TaskError::wrap(lost.into_datafusion())));
        match failed.failed_reason {
            Some(FailedReason::FetchPartitionError(f)) => {
                assert_eq!(
                    (f.executor_id.as_str(), f.map_stage_id, f.map_partition_id),
                    ("exec-1", 2, 5)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scheduler_failures_and_other_errors() {
        let planning = DataFusionError::Execution("Job 7 failed: Error during planning: bad stage".into());
        let got = restore(planning);
        assert_eq!(got.to_string(), "Error during planning: bad stage");
        assert_eq!(where_failed(&got), Some("query 7"));

        // Nothing to rebuild: left as it came.
        for untouched in [
            "Job 7 failed: Job failed due to stage 1 failed: Task 3 in Stage 1 failed 4 times",
            "Job 7 failed: executor lost",
            "plain execution error",
        ] {
            let got = restore(DataFusionError::Execution(untouched.into()));
            assert_eq!(got.to_string(), format!("Execution error: {untouched}"));
            assert_eq!(where_failed(&got), None);
        }
        // No variant prints a context's text as it is: the text is kept whole.
        let context = DataFusionError::Context("reading t".into(), Box::new(DataFusionError::Execution("boom".into())));
        let got = restore(reported(context));
        assert_eq!(
            got.to_string(),
            "Execution error: reading t\ncaused by\nExecution error: boom"
        );

        let plan = restore(DataFusionError::Plan("p".into()));
        assert_eq!(plan.to_string(), "Error during planning: p");
    }
}
