//! Apache Spark's function library (datafusion-spark), behind `quiver.spark_functions`.
//!
//! A session that starts with `quiver.spark_functions = true` plans with
//! Spark's scalar, aggregate and window functions and Spark's expression
//! planner (`EXTRACT`, `SUBSTRING` as Spark reads them). Spark's versions
//! replace DataFusion's functions of the same name, so `concat('a', NULL)`
//! is NULL, as in Spark, and functions DataFusion lacks (`sha2`,
//! `xxhash64`, `next_day`, `try_sum`, ...) are there.
//!
//! The scheduler and executors resolve a call by its name in their own
//! registry, which holds DataFusion's functions: a plan calling Spark's
//! `concat` would run DataFusion's there, and `sha2` would not be found.
//! So the plan codecs ([`crate::codec`]) mark each call of one of this
//! library's functions ([`SparkFunctions::is_scalar`] and its siblings) and
//! decode marked calls from this library ([`SparkFunctions::scalar`]),
//! whatever the decoding process's sessions hold.
//!
//! ```
//! use datafusion::execution::SessionStateBuilder;
//! use quiver_core::spark_functions::{SparkFunctions, with_spark_functions};
//!
//! let state = with_spark_functions(SessionStateBuilder::new().with_default_features()).build();
//! let sha2 = state.scalar_functions().get("sha2").expect("Spark's sha2");
//! assert!(SparkFunctions::get().is_scalar(sha2));
//! // DataFusion's own functions are not marked.
//! let plain = SessionStateBuilder::new().with_default_features().build();
//! assert!(!SparkFunctions::get().is_scalar(&plain.scalar_functions()["concat"]));
//! ```

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{AggregateUDF, LogicalPlan, ScalarUDF, Statement, WindowUDF};
use datafusion::prelude::SessionConfig;
use datafusion_spark::SessionStateBuilderSpark;

use crate::options::{QuiverOptions, SettingValue, quiver_options};

/// Adds Spark's functions and expression planner to `builder` (after the
/// functions it holds, so that Spark's versions win).
pub fn with_spark_functions(builder: SessionStateBuilder) -> SessionStateBuilder {
    builder.with_spark_features()
}

/// The key of the setting.
pub const SETTING: &str = "quiver.spark_functions";

/// Why `plan` cannot run in a session configured by `config`: a `SET` or
/// `RESET` of [`SETTING`] that would change it. The functions a session
/// plans with are chosen when it starts; a running session keeps them, so
/// a change is refused rather than ignored.
pub fn refused_change(plan: &LogicalPlan, config: &SessionConfig) -> Option<String> {
    let wanted = match plan {
        LogicalPlan::Statement(Statement::SetVariable(set)) if set.variable.eq_ignore_ascii_case(SETTING) => {
            // A bad value is the setting's own error, given when it is set.
            SettingValue::parse_setting(SETTING, &set.value).ok()?
        }
        LogicalPlan::Statement(Statement::ResetVariable(reset)) if reset.variable.eq_ignore_ascii_case(SETTING) => {
            QuiverOptions::default().spark_functions
        }
        _ => return None,
    };
    let current = quiver_options(config).spark_functions;
    (wanted != current).then(|| {
        format!(
            "{SETTING} is chosen when a session starts and this one started with {current}; \
             start a new session with --conf {SETTING}={wanted} (or put it in the job's conf)"
        )
    })
}

/// What the library needs of a function: the names it answers to and the
/// type that implements it.
trait Function {
    fn names(&self) -> Vec<String>;
    fn implementation(&self) -> TypeId;
}

macro_rules! function {
    ($udf:ty) => {
        impl Function for $udf {
            fn names(&self) -> Vec<String> {
                std::iter::once(self.name().to_owned())
                    .chain(self.aliases().iter().cloned())
                    .collect()
            }

            fn implementation(&self) -> TypeId {
                let inner: &dyn Any = self.inner().as_ref();
                inner.type_id()
            }
        }
    };
}

function!(ScalarUDF);
function!(AggregateUDF);
function!(WindowUDF);

/// One kind of function of the library, by every name it answers to.
#[derive(Debug)]
struct Kind<F> {
    by_name: HashMap<String, Arc<F>>,
}

impl<F: Function> Kind<F> {
    fn new(functions: Vec<Arc<F>>) -> Self {
        let mut by_name = HashMap::new();
        for f in functions {
            for name in f.names() {
                by_name.entry(name).or_insert_with(|| Arc::clone(&f));
            }
        }
        Self { by_name }
    }

    /// Whether `f`, called `name`, is the library's function of that name:
    /// the same implementation type (its settings may differ).
    fn holds(&self, name: &str, f: &F) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|ours| ours.implementation() == f.implementation())
    }

    fn get(&self, name: &str, what: &str) -> Result<Arc<F>> {
        self.by_name.get(name).cloned().ok_or_else(|| {
            DataFusionError::Plan(format!(
                "a plan calls Spark's {what} function {name}, which this build's Spark library (datafusion-spark) lacks; \
                 run the client and the cluster at the same Quiver version"
            ))
        })
    }
}

/// datafusion-spark's functions, built once per process.
#[derive(Debug)]
pub struct SparkFunctions {
    scalar: Kind<ScalarUDF>,
    aggregate: Kind<AggregateUDF>,
    window: Kind<WindowUDF>,
}

static LIBRARY: LazyLock<SparkFunctions> = LazyLock::new(|| SparkFunctions {
    scalar: Kind::new(datafusion_spark::all_default_scalar_functions()),
    aggregate: Kind::new(datafusion_spark::all_default_aggregate_functions()),
    window: Kind::new(datafusion_spark::all_default_window_functions()),
});

impl SparkFunctions {
    /// The library.
    pub fn get() -> &'static SparkFunctions {
        &LIBRARY
    }

    /// Whether `f` is one of Spark's scalar functions.
    pub fn is_scalar(&self, f: &ScalarUDF) -> bool {
        self.scalar.holds(f.name(), f)
    }

    /// Whether `f` is one of Spark's aggregate functions.
    pub fn is_aggregate(&self, f: &AggregateUDF) -> bool {
        self.aggregate.holds(f.name(), f)
    }

    /// Whether `f` is one of Spark's window functions.
    pub fn is_window(&self, f: &WindowUDF) -> bool {
        self.window.holds(f.name(), f)
    }

    /// Spark's scalar function `name`.
    pub fn scalar(&self, name: &str) -> Result<Arc<ScalarUDF>> {
        self.scalar.get(name, "scalar")
    }

    /// Spark's aggregate function `name`.
    pub fn aggregate(&self, name: &str) -> Result<Arc<AggregateUDF>> {
        self.aggregate.get(name, "aggregate")
    }

    /// Spark's window function `name`.
    pub fn window(&self, name: &str) -> Result<Arc<WindowUDF>> {
        self.window.get(name, "window")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_functions_replace_datafusions_of_the_same_name() {
        let library = SparkFunctions::get();
        let plain = SessionStateBuilder::new().with_default_features().build();
        let spark = with_spark_functions(SessionStateBuilder::new().with_default_features()).build();
        // A name both have: the session holds Spark's, which is marked.
        assert!(!library.is_scalar(&plain.scalar_functions()["concat"]));
        assert!(library.is_scalar(&spark.scalar_functions()["concat"]));
        assert!(library.is_aggregate(&spark.aggregate_functions()["try_sum"]));
        assert!(plain.scalar_functions().get("sha2").is_none());
        // Unknown names are refused with the reason.
        let err = library.scalar("no_such_spark_function").unwrap_err().to_string();
        assert!(
            err.contains("no_such_spark_function") && err.contains("same Quiver version"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_running_session_keeps_its_choice() {
        use datafusion::prelude::SessionContext;
        let config = SessionConfig::new().with_option_extension(QuiverOptions::default());
        let ctx = SessionContext::new_with_config(config);
        let state = ctx.state();
        let plan = |sql: &'static str| {
            let state = state.clone();
            async move { state.create_logical_plan(sql).await.unwrap() }
        };
        let err = refused_change(&plan("SET quiver.spark_functions = true").await, state.config()).unwrap();
        assert!(err.contains("--conf quiver.spark_functions=true"), "{err}");
        // Setting what the session already has, and other keys, pass.
        assert_eq!(
            refused_change(&plan("SET quiver.spark_functions = off").await, state.config()),
            None
        );
        assert_eq!(
            refused_change(&plan("RESET quiver.spark_functions").await, state.config()),
            None
        );
        assert_eq!(
            refused_change(&plan("SET quiver.semi_join_reduction = false").await, state.config()),
            None
        );
    }
}
