//! Autoscale formulas in Azure Batch's autoscale language, so that a pool
//! can be sized by the formula an Azure user already has.
//!
//! # The language
//!
//! A formula is a list of `variable = expression` statements separated by
//! `;` (a trailing `;` and empty statements are allowed; `//` starts a line
//! comment). Variables are identifiers, optionally prefixed with `$`; names
//! are case-sensitive, and `$x` and `x` are different variables.
//!
//! The service provides these variables:
//!
//! - `$PendingTasks` (active + running), `$ActiveTasks`, `$RunningTasks`,
//!   `$SucceededTasks`, `$FailedTasks`: **sample metrics**, read only through
//!   their methods: `GetSample(count)`, `GetSample(interval[, percent])`,
//!   `GetSample(start, end[, percent])` (a vector, oldest first; `start` and
//!   `end` are timestamps or intervals meaning "that long ago"),
//!   `GetSamplePercent(interval)`, `GetSamplePercent(start, end)`,
//!   `GetSamplePeriod()`, `Count()` and `HistoryBeginTime()`. A range holds
//!   the samples taken after its start and up to its end (so back-to-back
//!   ranges share none); the samples expected in it are its length over the
//!   sample period, at least one, and a percentage is of those, at most 100.
//! - `$CurrentDedicatedNodes`: the pool's size, read-only.
//! - `$TargetDedicatedNodes`: the pool's target, starting at the current
//!   one; its final value is the formula's result.
//! - `$NodeDeallocationOption`: `requeue` unless the formula assigns
//!   `requeue`, `terminate` or `taskcompletion`; readable once assigned.
//!
//! Values are numbers, vectors of numbers, strings, timestamps and time
//! intervals (see [`Value`]). Literals are numbers (`3`, `2.5`, `1e3`),
//! double-quoted strings, the bare keywords `requeue`, `terminate` and
//! `taskcompletion`, and the constants `TimeInterval_Zero`, `_Microsecond`,
//! `_Millisecond`, `_Second`, `_Minute`, `_Hour`, `_Day`, `_Week` and
//! `_Year` (365 days). Intervals have millisecond resolution, so
//! `TimeInterval_Microsecond` is zero.
//!
//! Operators, lowest precedence first: `c ? a : b` (right-associative),
//! `||`, `&&`, `==` `!=`, `<` `<=` `>` `>=`, `+` `-`, `*` `/` `%`, prefix
//! `-` `!`, then method calls. Comparisons and logic give 1 or 0; `&&`, `||`
//! and `?:` evaluate only the operands they need. Arithmetic works on
//! numbers, elementwise on vectors (with a number, or with a vector of the
//! same length), and on time: interval × number, interval ÷ number,
//! interval ± interval, interval ÷ interval, timestamp ± interval and
//! timestamp − timestamp. A one-element vector is accepted wherever a
//! number is needed.
//!
//! Functions: `min`, `max`, `avg`, `sum`, `std` (population standard
//! deviation) and `range` (max − min) over any mix of numbers and vectors;
//! `percentile(v, p)` (p from 0 to 100, interpolating linearly between the
//! closest ranks, as Excel's `PERCENTILE.INC`); `ceil`, `floor` and `round` (half away from zero), on
//! a number or elementwise; `len(v)`; `time()` (now).
//!
//! # Checking and evaluation
//!
//! [`Formula::parse`] refuses, with a line, a column and what was expected:
//! text over [`MAX_FORMULA_BYTES`], over [`MAX_STATEMENTS`] statements or
//! nesting parentheses and `?:` more than 32 deep (checked before parsing,
//! which bounds the parser's recursion), syntax errors, unknown
//! functions and methods, wrong argument counts, sample metrics used
//! without a method, assignments to read-only variables, variables read
//! before they are assigned, and literal deallocation options that do not
//! exist. Because statements run in order and cannot be skipped, a formula
//! that passes never reads a variable without a value.
//!
//! [`Formula::evaluate`] runs the statements in order over a [`History`] of
//! samples and reports every variable's value, the target node count
//! (rounded half away from zero, at least 0) and the deallocation option.
//! What only values reveal (types, empty sample ranges, division by zero,
//! vectors of different lengths) is an [`EvalError`] naming the statement;
//! the pool should then keep its target.

mod ast;
mod eval;
mod history;
mod parse;
#[cfg(test)]
mod tests;
mod value;

use std::collections::BTreeMap;
use std::fmt;

pub use history::{History, Sample};
pub use value::Value;

/// The longest formula accepted, in bytes.
pub const MAX_FORMULA_BYTES: usize = 8192;
/// The most statements a formula may have (empty ones not counted).
pub const MAX_STATEMENTS: usize = 100;

/// A parsed, checked formula.
#[derive(Clone, Debug)]
pub struct Formula {
    text: String,
    statements: Vec<ast::Statement>,
    /// Whether `$CurrentDedicatedNodes` is read, so it is reported then.
    reads_current_nodes: bool,
}

/// Why a formula is refused: where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("line {line}, column {column}: {message}")]
pub struct FormulaError {
    /// The 1-based line of the problem.
    pub line: usize,
    /// The 1-based column (in characters) of the problem.
    pub column: usize,
    /// What is wrong, or what was expected there.
    pub message: String,
}

/// The statement an evaluation error happened in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementRef {
    /// The statement's 1-based position among the formula's statements.
    pub index: usize,
    /// The variable the statement assigns, as written.
    pub target: String,
}

impl fmt::Display for StatementRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "statement {} ({} = ...)", self.index, self.target)
    }
}

/// Why an evaluation failed (the pool keeps its target).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A sample query found no sample in its range.
    #[error("{at}: {call}: no samples in that range; {history}")]
    NoSamples {
        /// Where.
        at: StatementRef,
        /// The query, with its arguments' values.
        call: String,
        /// What the history holds instead.
        history: String,
    },
    /// Fewer samples exist in a range than the query's minimum percentage.
    #[error(
        "{at}: {call}: only {found}% of the expected samples exist, fewer than the {required}% required"
    )]
    TooFewSamples {
        /// Where.
        at: StatementRef,
        /// The query, with its arguments' values.
        call: String,
        /// The percentage that exists, to one decimal.
        found: f64,
        /// The percentage the query asked for.
        required: f64,
    },
    /// An elementwise operation on vectors of different lengths.
    #[error("{at}: `{op}` on vectors of different lengths ({left} and {right})")]
    LengthMismatch {
        /// Where.
        at: StatementRef,
        /// The operator.
        op: &'static str,
        /// The left vector's length.
        left: usize,
        /// The right vector's length.
        right: usize,
    },
    /// A division or remainder by zero.
    #[error("{at}: division by zero in `{op}`")]
    DivisionByZero {
        /// Where.
        at: StatementRef,
        /// The operator.
        op: &'static str,
    },
    /// `$NodeDeallocationOption` was assigned something that is not an option.
    #[error(
        "{at}: `{value}` is not a node deallocation option; expected requeue, terminate or taskcompletion"
    )]
    BadDeallocation {
        /// Where.
        at: StatementRef,
        /// The value assigned.
        value: String,
    },
    /// A value of a type the operator, function or assignment does not take.
    #[error("{at}: {message}")]
    Type {
        /// Where.
        at: StatementRef,
        /// What was expected and what was found.
        message: String,
    },
    /// An argument outside what a function or method accepts.
    #[error("{at}: {call}: {message}")]
    BadArgument {
        /// Where.
        at: StatementRef,
        /// The function or method.
        call: String,
        /// What is wrong with the argument.
        message: String,
    },
    /// A result that cannot be represented (a non-finite target, a time
    /// beyond the range of milliseconds in an `i64`).
    #[error("{at}: {message}")]
    OutOfRange {
        /// Where.
        at: StatementRef,
        /// What is out of range.
        message: String,
    },
}

/// What a formula is evaluated against.
#[derive(Clone, Copy, Debug)]
pub struct EvalInput<'a> {
    /// Now, in milliseconds since the Unix epoch; sample ranges end here.
    pub now_ms: i64,
    /// The pool's samples.
    pub history: &'a History,
    /// `$CurrentDedicatedNodes`.
    pub current_nodes: u32,
    /// The pool's target before the formula runs: `$TargetDedicatedNodes`'s initial value.
    pub target_nodes: u32,
}

/// How nodes are removed when the target shrinks below the busy nodes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeallocationOption {
    /// Stop the node's tasks now and queue them again.
    #[default]
    Requeue,
    /// Stop the node's tasks now; they are not run again.
    Terminate,
    /// Let the node's running tasks finish, then remove it.
    TaskCompletion,
}

impl DeallocationOption {
    const ALL: [DeallocationOption; 3] = [Self::Requeue, Self::Terminate, Self::TaskCompletion];

    /// The option's name in formulas: `requeue`, `terminate` or `taskcompletion`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requeue => "requeue",
            Self::Terminate => "terminate",
            Self::TaskCompletion => "taskcompletion",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|option| option.as_str() == name)
    }
}

/// The result of an evaluation.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// $TargetDedicatedNodes after the formula ran, rounded half away from
    /// zero and clamped at 0 (the caller clamps to the pool's min/max).
    pub target_nodes: u32,
    /// $NodeDeallocationOption after the formula ran.
    pub deallocation: DeallocationOption,
    /// Every variable the formula assigned or read, service variables
    /// included, by name (with their `$` if written so), in name order.
    /// `$TargetDedicatedNodes` and `$NodeDeallocationOption` are always
    /// there; sample metrics, which have no single value, never are.
    pub variables: BTreeMap<String, Value>,
}

impl Formula {
    /// Parses and checks a formula.
    pub fn parse(text: &str) -> Result<Formula, FormulaError> {
        let parsed = parse::parse(text)?;
        Ok(Formula {
            text: text.to_owned(),
            statements: parsed.statements,
            reads_current_nodes: parsed.reads_current_nodes,
        })
    }

    /// The formula's text, as given to [`Formula::parse`].
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Runs the formula's statements in order against `input`.
    pub fn evaluate(&self, input: &EvalInput<'_>) -> Result<Evaluation, EvalError> {
        eval::run(&self.statements, self.reads_current_nodes, input)
    }
}
