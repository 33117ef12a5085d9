//! The checked syntax tree and the language's vocabulary: service
//! variables, constants, operators, functions, sample metrics and their
//! methods.

use super::{DeallocationOption, Sample, Value};

/// The pool's target, read-write; the formula's result.
pub(super) const TARGET_NODES: &str = "$TargetDedicatedNodes";
/// The pool's current size, read-only.
pub(super) const CURRENT_NODES: &str = "$CurrentDedicatedNodes";
/// How nodes are removed; written by the formula, readable once written.
pub(super) const DEALLOCATION: &str = "$NodeDeallocationOption";

/// One `target = expr` statement.
#[derive(Clone, Debug)]
pub(super) struct Statement {
    /// The variable assigned, as written (with its `$` if it has one).
    pub target: String,
    pub role: Role,
    pub expr: Expr,
}

/// What an assignment writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    User,
    TargetNodes,
    Deallocation,
}

/// An expression, checked at parse time: every variable it reads is
/// assigned before, and every function and method exists and gets a number
/// of arguments it accepts.
#[derive(Clone, Debug)]
pub(super) enum Expr {
    Literal(Value),
    Var(String),
    /// Prefix operators, outermost first.
    Unary {
        ops: Vec<UnaryOp>,
        operand: Box<Expr>,
    },
    /// Left-associative operators of one precedence level, kept flat so that
    /// a long `a + b + c + ...` needs no deep recursion to evaluate or drop.
    Chain {
        first: Box<Expr>,
        rest: Vec<(BinOp, Expr)>,
    },
    Ternary {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    Call {
        func: Func,
        args: Vec<Expr>,
    },
    Sample {
        metric: Metric,
        method: Method,
        args: Vec<Expr>,
    },
}

/// A prefix operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UnaryOp {
    Neg,
    Not,
}

impl UnaryOp {
    pub fn from_symbol(symbol: &str) -> Option<Self> {
        match symbol {
            "-" => Some(Self::Neg),
            "!" => Some(Self::Not),
            _ => None,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Self::Neg => "-",
            Self::Not => "!",
        }
    }
}

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl BinOp {
    const ALL: [BinOp; 13] = [
        Self::Or,
        Self::And,
        Self::Eq,
        Self::Ne,
        Self::Lt,
        Self::Le,
        Self::Gt,
        Self::Ge,
        Self::Add,
        Self::Sub,
        Self::Mul,
        Self::Div,
        Self::Mod,
    ];

    pub fn from_symbol(symbol: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.symbol() == symbol)
    }

    /// Operators of higher levels bind tighter: `||` is 0, `*` is 5.
    pub fn level(self) -> u8 {
        match self {
            Self::Or => 0,
            Self::And => 1,
            Self::Eq | Self::Ne => 2,
            Self::Lt | Self::Le | Self::Gt | Self::Ge => 3,
            Self::Add | Self::Sub => 4,
            Self::Mul | Self::Div | Self::Mod => 5,
        }
    }

    /// One above the tightest level: operands.
    pub const OPERAND_LEVEL: u8 = 6;

    pub fn symbol(self) -> &'static str {
        match self {
            Self::Or => "||",
            Self::And => "&&",
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
            Self::Mod => "%",
        }
    }
}

/// How many arguments a function or method takes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Arity {
    min: usize,
    max: Option<usize>,
}

impl Arity {
    const fn exactly(n: usize) -> Self {
        Self {
            min: n,
            max: Some(n),
        }
    }

    pub fn accepts(self, n: usize) -> bool {
        n >= self.min && self.max.is_none_or(|max| n <= max)
    }

    /// "takes ..." in an error message.
    pub fn describe(self) -> String {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        match self.max {
            Some(0) => "no arguments".to_owned(),
            Some(max) if max == self.min => format!("{max} argument{}", plural(max)),
            Some(max) => format!("{} to {max} arguments", self.min),
            None => format!("at least {} argument{}", self.min, plural(self.min)),
        }
    }
}

/// A built-in function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Func {
    Avg,
    Ceil,
    Floor,
    Len,
    Max,
    Min,
    Percentile,
    Range,
    Round,
    Std,
    Sum,
    Time,
}

impl Func {
    /// In name order, as error messages list them.
    pub const ALL: [Func; 12] = [
        Self::Avg,
        Self::Ceil,
        Self::Floor,
        Self::Len,
        Self::Max,
        Self::Min,
        Self::Percentile,
        Self::Range,
        Self::Round,
        Self::Std,
        Self::Sum,
        Self::Time,
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Avg => "avg",
            Self::Ceil => "ceil",
            Self::Floor => "floor",
            Self::Len => "len",
            Self::Max => "max",
            Self::Min => "min",
            Self::Percentile => "percentile",
            Self::Range => "range",
            Self::Round => "round",
            Self::Std => "std",
            Self::Sum => "sum",
            Self::Time => "time",
        }
    }

    pub fn arity(self) -> Arity {
        match self {
            Self::Avg | Self::Max | Self::Min | Self::Range | Self::Std | Self::Sum => {
                Arity { min: 1, max: None }
            }
            Self::Ceil | Self::Floor | Self::Len | Self::Round => Arity::exactly(1),
            Self::Percentile => Arity::exactly(2),
            Self::Time => Arity::exactly(0),
        }
    }
}

/// A sample metric: a task count recorded in every [`Sample`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Metric {
    Active,
    Failed,
    Pending,
    Running,
    Succeeded,
}

impl Metric {
    /// In name order, as error messages list them.
    pub const ALL: [Metric; 5] = [
        Self::Active,
        Self::Failed,
        Self::Pending,
        Self::Running,
        Self::Succeeded,
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "$ActiveTasks",
            Self::Failed => "$FailedTasks",
            Self::Pending => "$PendingTasks",
            Self::Running => "$RunningTasks",
            Self::Succeeded => "$SucceededTasks",
        }
    }

    /// This metric's value in one sample.
    pub fn of(self, sample: &Sample) -> f64 {
        let count = match self {
            Self::Active => sample.active,
            Self::Failed => sample.failed,
            Self::Pending => sample.active.saturating_add(sample.running),
            Self::Running => sample.running,
            Self::Succeeded => sample.succeeded,
        };
        count as f64
    }
}

/// A method of a sample metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Method {
    Count,
    GetSample,
    GetSamplePercent,
    GetSamplePeriod,
    HistoryBeginTime,
}

impl Method {
    /// In name order, as error messages list them.
    pub const ALL: [Method; 5] = [
        Self::Count,
        Self::GetSample,
        Self::GetSamplePercent,
        Self::GetSamplePeriod,
        Self::HistoryBeginTime,
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::GetSample => "GetSample",
            Self::GetSamplePercent => "GetSamplePercent",
            Self::GetSamplePeriod => "GetSamplePeriod",
            Self::HistoryBeginTime => "HistoryBeginTime",
        }
    }

    pub fn arity(self) -> Arity {
        match self {
            Self::GetSample => Arity {
                min: 1,
                max: Some(3),
            },
            Self::GetSamplePercent => Arity {
                min: 1,
                max: Some(2),
            },
            Self::Count | Self::GetSamplePeriod | Self::HistoryBeginTime => Arity::exactly(0),
        }
    }
}

/// A variable the service provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Service {
    Metric(Metric),
    CurrentNodes,
    TargetNodes,
    Deallocation,
}

impl Service {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            TARGET_NODES => Some(Self::TargetNodes),
            CURRENT_NODES => Some(Self::CurrentNodes),
            DEALLOCATION => Some(Self::Deallocation),
            _ => Metric::from_name(name).map(Self::Metric),
        }
    }
}

/// Milliseconds in a day, for interval constants and display.
pub(super) const DAY_MS: i64 = 86_400_000;

/// The value of a named constant: the deallocation keywords (strings) and
/// the `TimeInterval_*` constants.
///
/// Intervals are whole milliseconds, so `TimeInterval_Microsecond` is zero.
pub(super) fn constant(name: &str) -> Option<Value> {
    if let Some(option) = DeallocationOption::from_name(name) {
        return Some(Value::Text(option.as_str().to_owned()));
    }
    let ms = match name.strip_prefix("TimeInterval_")? {
        "Zero" | "Microsecond" => 0,
        "Millisecond" => 1,
        "Second" => 1_000,
        "Minute" => 60_000,
        "Hour" => 3_600_000,
        "Day" => DAY_MS,
        "Week" => 7 * DAY_MS,
        "Year" => 365 * DAY_MS,
        _ => return None,
    };
    Some(Value::Interval(ms))
}
