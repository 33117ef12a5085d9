//! Running checked statements over a history of samples.

use std::collections::BTreeMap;
use std::slice;

use super::ast::{
    BinOp, CURRENT_NODES, DEALLOCATION, Expr, Func, Method, Metric, Role, Statement, TARGET_NODES,
    UnaryOp,
};
use super::{DeallocationOption, EvalError, EvalInput, Evaluation, StatementRef, Value};

/// Runs `statements` in order; the variables they assign are visible to the
/// statements after them.
pub(super) fn run(
    statements: &[Statement],
    reads_current_nodes: bool,
    input: &EvalInput<'_>,
) -> Result<Evaluation, EvalError> {
    let mut target = f64::from(input.target_nodes);
    let mut deallocation = DeallocationOption::default();
    let mut variables = BTreeMap::from([
        (TARGET_NODES.to_owned(), Value::Double(target)),
        (DEALLOCATION.to_owned(), text(deallocation)),
    ]);
    if reads_current_nodes {
        let current = Value::Double(f64::from(input.current_nodes));
        variables.insert(CURRENT_NODES.to_owned(), current);
    }
    for (i, statement) in statements.iter().enumerate() {
        let at = StatementRef {
            index: i + 1,
            target: statement.target.clone(),
        };
        let evaluator = Evaluator {
            input: *input,
            variables: &variables,
            at: &at,
        };
        let value = evaluator.eval(&statement.expr)?;
        let value = match statement.role {
            Role::User => value,
            Role::TargetNodes => {
                target = evaluator.target_nodes(value)?;
                Value::Double(target)
            }
            Role::Deallocation => {
                deallocation = evaluator.deallocation(value)?;
                text(deallocation)
            }
        };
        variables.insert(statement.target.clone(), value);
    }
    Ok(Evaluation {
        target_nodes: node_count(target),
        deallocation,
        variables,
    })
}

fn text(option: DeallocationOption) -> Value {
    Value::Text(option.as_str().to_owned())
}

/// A finite target as a node count: rounded half away from zero, negative
/// to 0, and beyond `u32::MAX` to `u32::MAX` (`as` saturates).
fn node_count(target: f64) -> u32 {
    target.round().max(0.0) as u32
}

fn boolean(b: bool) -> Value {
    Value::Double(if b { 1.0 } else { 0.0 })
}

/// Evaluates the expressions of one statement.
struct Evaluator<'a> {
    input: EvalInput<'a>,
    variables: &'a BTreeMap<String, Value>,
    at: &'a StatementRef,
}

impl Evaluator<'_> {
    fn eval(&self, expr: &Expr) -> Result<Value, EvalError> {
        match expr {
            Expr::Literal(value) => Ok(value.clone()),
            // The parser refuses reads before assignment, so this always finds one.
            Expr::Var(name) => self
                .variables
                .get(name)
                .cloned()
                .ok_or_else(|| self.type_error(format!("`{name}` has no value"))),
            Expr::Unary { ops, operand } => {
                let operand = self.eval(operand)?;
                ops.iter()
                    .rev()
                    .try_fold(operand, |value, &op| self.unary(op, value))
            }
            Expr::Chain { first, rest } => self.chain(first, rest),
            Expr::Ternary {
                cond,
                then,
                otherwise,
            } => {
                if self.truth(&self.eval(cond)?, "the condition of `?:`")? {
                    self.eval(then)
                } else {
                    self.eval(otherwise)
                }
            }
            Expr::Call { func, args } => self.call(*func, self.eval_all(args)?),
            Expr::Sample {
                metric,
                method,
                args,
            } => self.sample(*metric, *method, &self.eval_all(args)?),
        }
    }

    fn eval_all(&self, exprs: &[Expr]) -> Result<Vec<Value>, EvalError> {
        exprs.iter().map(|e| self.eval(e)).collect()
    }

    // -- Errors: every one names the statement.

    fn type_error(&self, message: String) -> EvalError {
        EvalError::Type {
            at: self.at.clone(),
            message,
        }
    }

    fn mismatch(&self, op: &str, left: &Value, right: &Value) -> EvalError {
        let (left, right) = (left.describe(), right.describe());
        self.type_error(format!("`{op}` does not apply to {left} and {right}"))
    }

    fn bad_argument(&self, call: &str, message: String) -> EvalError {
        EvalError::BadArgument {
            at: self.at.clone(),
            call: call.to_owned(),
            message,
        }
    }

    fn out_of_range(&self, message: String) -> EvalError {
        EvalError::OutOfRange {
            at: self.at.clone(),
            message,
        }
    }

    fn division_by_zero(&self, op: BinOp) -> EvalError {
        EvalError::DivisionByZero {
            at: self.at.clone(),
            op: op.symbol(),
        }
    }

    // -- Assignments to service variables.

    fn target_nodes(&self, value: Value) -> Result<f64, EvalError> {
        let Some(nodes) = value.as_double() else {
            let found = value.describe();
            return Err(self.type_error(format!("{TARGET_NODES} must be a number, got {found}")));
        };
        if !nodes.is_finite() {
            let message = format!("{TARGET_NODES} must be a finite number, got {nodes}");
            return Err(self.out_of_range(message));
        }
        Ok(nodes)
    }

    fn deallocation(&self, value: Value) -> Result<DeallocationOption, EvalError> {
        match &value {
            Value::Text(name) => DeallocationOption::from_name(name),
            _ => None,
        }
        .ok_or_else(|| EvalError::BadDeallocation {
            at: self.at.clone(),
            value: value.to_string(),
        })
    }

    // -- Operators.

    /// A number as a condition: non-zero is true.
    fn truth(&self, value: &Value, what: &str) -> Result<bool, EvalError> {
        value.as_double().map(|x| x != 0.0).ok_or_else(|| {
            self.type_error(format!("{what} must be a number, got {}", value.describe()))
        })
    }

    fn unary(&self, op: UnaryOp, value: Value) -> Result<Value, EvalError> {
        match (op, value) {
            (UnaryOp::Neg, Value::Double(x)) => Ok(Value::Double(-x)),
            (UnaryOp::Neg, Value::Vector(xs)) => Ok(Value::Vector(xs.iter().map(|x| -x).collect())),
            (UnaryOp::Neg, Value::Interval(ms)) => self.interval(ms.checked_neg()),
            (UnaryOp::Not, value) if value.as_double().is_some() => {
                Ok(boolean(value.as_double() == Some(0.0)))
            }
            (op, value) => Err(self.type_error(format!(
                "`{}` does not apply to {}",
                op.symbol(),
                value.describe()
            ))),
        }
    }

    /// One precedence level's operators, left to right. Such a chain holds
    /// either one logical operator or none, so `&&` and `||` can stop the
    /// whole chain as soon as its result is known: `x > 0 && 10 / x > 1`
    /// never divides by zero.
    fn chain(&self, first: &Expr, rest: &[(BinOp, Expr)]) -> Result<Value, EvalError> {
        let mut acc = self.eval(first)?;
        for (op, operand) in rest {
            acc = match op {
                BinOp::And | BinOp::Or => {
                    let what = match op {
                        BinOp::And => "the operand of `&&`",
                        _ => "the operand of `||`",
                    };
                    let left = self.truth(&acc, what)?;
                    if left == (*op == BinOp::Or) {
                        return Ok(boolean(left));
                    }
                    boolean(self.truth(&self.eval(operand)?, what)?)
                }
                BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                    self.compare(*op, &acc, &self.eval(operand)?)?
                }
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => {
                    self.arithmetic(*op, acc, self.eval(operand)?)?
                }
            };
        }
        Ok(acc)
    }

    /// Numbers (one-element vectors included), two intervals, two
    /// timestamps, or two strings for `==` and `!=`. NaN compares unequal
    /// to everything.
    fn compare(&self, op: BinOp, left: &Value, right: &Value) -> Result<Value, EvalError> {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let ordering = match (left, right) {
            (Value::Interval(a), Value::Interval(b))
            | (Value::Timestamp(a), Value::Timestamp(b)) => Some(a.cmp(b)),
            (Value::Text(a), Value::Text(b)) if matches!(op, BinOp::Eq | BinOp::Ne) => {
                Some(a.cmp(b))
            }
            _ => match (left.as_double(), right.as_double()) {
                (Some(a), Some(b)) => a.partial_cmp(&b),
                _ => return Err(self.mismatch(op.symbol(), left, right)),
            },
        };
        let holds = match op {
            BinOp::Eq => ordering == Some(Equal),
            BinOp::Ne => ordering != Some(Equal),
            BinOp::Lt => ordering == Some(Less),
            BinOp::Le => matches!(ordering, Some(Less | Equal)),
            BinOp::Gt => ordering == Some(Greater),
            BinOp::Ge => matches!(ordering, Some(Greater | Equal)),
            _ => return Err(self.mismatch(op.symbol(), left, right)),
        };
        Ok(boolean(holds))
    }

    /// Time arithmetic first, then numbers elementwise.
    fn arithmetic(&self, op: BinOp, left: Value, right: Value) -> Result<Value, EvalError> {
        use Value::{Interval, Timestamp};
        match (op, &left, &right) {
            (BinOp::Add, Interval(a), Interval(b)) => self.interval(a.checked_add(*b)),
            (BinOp::Sub, Interval(a), Interval(b)) => self.interval(a.checked_sub(*b)),
            (BinOp::Add, Timestamp(t), Interval(i)) | (BinOp::Add, Interval(i), Timestamp(t)) => {
                self.timestamp(t.checked_add(*i))
            }
            (BinOp::Sub, Timestamp(t), Interval(i)) => self.timestamp(t.checked_sub(*i)),
            (BinOp::Sub, Timestamp(a), Timestamp(b)) => self.interval(a.checked_sub(*b)),
            (BinOp::Div, Interval(_), Interval(0)) => Err(self.division_by_zero(op)),
            (BinOp::Div, Interval(a), Interval(b)) => Ok(Value::Double(*a as f64 / *b as f64)),
            (BinOp::Mul, Interval(i), k) | (BinOp::Mul, k, Interval(i)) => match k.as_double() {
                Some(k) => self.interval_ms(*i as f64 * k),
                None => Err(self.mismatch(op.symbol(), &left, &right)),
            },
            (BinOp::Div, Interval(i), k) => match k.as_double() {
                Some(0.0) => Err(self.division_by_zero(op)),
                Some(k) => self.interval_ms(*i as f64 / k),
                None => Err(self.mismatch(op.symbol(), &left, &right)),
            },
            _ => self.elementwise(op, left, right),
        }
    }

    /// Numbers with numbers; vectors with a number, or with a vector of the same length.
    fn elementwise(&self, op: BinOp, left: Value, right: Value) -> Result<Value, EvalError> {
        let apply = |a: f64, b: f64| self.number_op(op, a, b);
        let vector = |xs: Result<Vec<f64>, EvalError>| xs.map(Value::Vector);
        match (left, right) {
            (Value::Double(a), Value::Double(b)) => apply(a, b).map(Value::Double),
            (Value::Vector(xs), Value::Double(b)) => {
                vector(xs.iter().map(|&a| apply(a, b)).collect())
            }
            (Value::Double(a), Value::Vector(ys)) => {
                vector(ys.iter().map(|&b| apply(a, b)).collect())
            }
            (Value::Vector(xs), Value::Vector(ys)) if xs.len() == ys.len() => {
                vector(xs.iter().zip(&ys).map(|(&a, &b)| apply(a, b)).collect())
            }
            (Value::Vector(xs), Value::Vector(ys)) => Err(EvalError::LengthMismatch {
                at: self.at.clone(),
                op: op.symbol(),
                left: xs.len(),
                right: ys.len(),
            }),
            (left, right) => Err(self.mismatch(op.symbol(), &left, &right)),
        }
    }

    fn number_op(&self, op: BinOp, a: f64, b: f64) -> Result<f64, EvalError> {
        match op {
            BinOp::Add => Ok(a + b),
            BinOp::Sub => Ok(a - b),
            BinOp::Mul => Ok(a * b),
            BinOp::Div | BinOp::Mod if b == 0.0 => Err(self.division_by_zero(op)),
            BinOp::Div => Ok(a / b),
            BinOp::Mod => Ok(a % b),
            _ => Err(self.type_error(format!("`{}` is not arithmetic", op.symbol()))),
        }
    }

    fn interval(&self, ms: Option<i64>) -> Result<Value, EvalError> {
        ms.map(Value::Interval)
            .ok_or_else(|| self.out_of_range("the time interval is out of range".to_owned()))
    }

    fn timestamp(&self, ms: Option<i64>) -> Result<Value, EvalError> {
        ms.map(Value::Timestamp)
            .ok_or_else(|| self.out_of_range("the timestamp is out of range".to_owned()))
    }

    /// An interval from a computed number of milliseconds, rounded to a whole one.
    fn interval_ms(&self, ms: f64) -> Result<Value, EvalError> {
        // Comfortably inside i64, so the cast below cannot saturate.
        const LIMIT: f64 = 9.0e18;
        let ms = ms.round();
        self.interval((ms.is_finite() && ms.abs() < LIMIT).then_some(ms as i64))
    }

    // -- Functions.

    fn call(&self, func: Func, args: Vec<Value>) -> Result<Value, EvalError> {
        match (func, args.as_slice()) {
            (Func::Time, []) => Ok(Value::Timestamp(self.input.now_ms)),
            (Func::Len, [Value::Vector(xs)]) => Ok(Value::Double(xs.len() as f64)),
            (Func::Len, [Value::Double(_)]) => Ok(Value::Double(1.0)),
            (Func::Ceil | Func::Floor | Func::Round, [value]) => self.rounding(func, value),
            (Func::Percentile, [data, percent]) => self.percentile(data, percent),
            (_, values) => {
                let numbers = self.numbers(func, values)?;
                statistic(func, &numbers).map(Value::Double).ok_or_else(|| {
                    let found = join(values.iter().map(Value::describe));
                    self.type_error(format!("`{}` does not take ({found})", func.name()))
                })
            }
        }
    }

    /// The numbers of doubles and vectors, flattened; at least one.
    fn numbers(&self, func: Func, values: &[Value]) -> Result<Vec<f64>, EvalError> {
        let mut numbers = Vec::new();
        for value in values {
            match value {
                Value::Double(x) => numbers.push(*x),
                Value::Vector(xs) => numbers.extend(xs),
                other => {
                    let (name, found) = (func.name(), other.describe());
                    let message = format!("`{name}` takes numbers and vectors, got {found}");
                    return Err(self.type_error(message));
                }
            }
        }
        if numbers.is_empty() {
            return Err(self.bad_argument(func.name(), "no numbers to work on".to_owned()));
        }
        Ok(numbers)
    }

    fn rounding(&self, func: Func, value: &Value) -> Result<Value, EvalError> {
        let round: fn(f64) -> f64 = match func {
            Func::Ceil => f64::ceil,
            Func::Floor => f64::floor,
            // Rust's `round` rounds half away from zero, as Azure does.
            _ => f64::round,
        };
        match value {
            Value::Double(x) => Ok(Value::Double(round(*x))),
            Value::Vector(xs) => Ok(Value::Vector(xs.iter().map(|&x| round(x)).collect())),
            other => Err(self.type_error(format!(
                "`{}` takes a number or a vector, got {}",
                func.name(),
                other.describe()
            ))),
        }
    }

    fn percentile(&self, data: &Value, percent: &Value) -> Result<Value, EvalError> {
        let mut numbers = self.numbers(Func::Percentile, slice::from_ref(data))?;
        let Some(p) = percent.as_double() else {
            let found = percent.describe();
            let message = format!("`percentile` takes a percentage second, got {found}");
            return Err(self.type_error(message));
        };
        self.check_percentage("percentile", p)?;
        numbers.sort_by(f64::total_cmp);
        Ok(Value::Double(interpolated_percentile(&numbers, p)))
    }

    fn check_percentage(&self, call: &str, p: f64) -> Result<(), EvalError> {
        if (0.0..=100.0).contains(&p) {
            return Ok(());
        }
        let message = format!("the percentage must be between 0 and 100, got {p}");
        Err(self.bad_argument(call, message))
    }

    // -- Sample metrics.

    fn sample(&self, metric: Metric, method: Method, args: &[Value]) -> Result<Value, EvalError> {
        let history = self.input.history;
        let call = format!(
            "{}.{}({})",
            metric.name(),
            method.name(),
            join(args.iter().map(Value::to_string))
        );
        match (method, args) {
            (Method::Count, []) => Ok(Value::Double(history.len() as f64)),
            (Method::GetSamplePeriod, []) => Ok(Value::Interval(history.period_ms())),
            (Method::HistoryBeginTime, []) => match history.begin_ms() {
                Some(ms) => Ok(Value::Timestamp(ms)),
                None => Err(self.no_samples(call)),
            },
            (Method::GetSamplePercent, range) => {
                let (start, end) = self.range(&call, range)?;
                Ok(Value::Double(history.percent_between(start, end)))
            }
            (Method::GetSample, args) => self.get_sample(metric, call, args),
            _ => Err(self.type_error(format!("{call}: wrong number of arguments"))),
        }
    }

    /// `GetSample(count)`, or a range optionally followed by a percentage.
    fn get_sample(&self, metric: Metric, call: String, args: &[Value]) -> Result<Value, EvalError> {
        let history = self.input.history;
        if let [count] = args
            && let Some(count) = count.as_double()
        {
            if count.is_nan() || count < 1.0 {
                let message = format!("the count must be at least 1, got {count}");
                return Err(self.bad_argument(&call, message));
            }
            // `as` saturates, and a fraction is dropped.
            let samples = history.latest(count as usize).map(|s| metric.of(s));
            return self.non_empty(call, samples.collect());
        }
        let (range, percent) = match args {
            [range @ .., percent] if !range.is_empty() && percent.as_double().is_some() => {
                (range, percent.as_double())
            }
            _ => (args, None),
        };
        let (start, end) = self.range(&call, range)?;
        if let Some(required) = percent {
            self.check_percentage(&call, required)?;
            let found = history.percent_between(start, end);
            if found < required {
                return Err(EvalError::TooFewSamples {
                    at: self.at.clone(),
                    call,
                    // Down, so that a shortfall never prints as the required value.
                    found: (found * 10.0).floor() / 10.0,
                    required,
                });
            }
        }
        let samples = history.between(start, end).map(|s| metric.of(s));
        self.non_empty(call, samples.collect())
    }

    fn non_empty(&self, call: String, samples: Vec<f64>) -> Result<Value, EvalError> {
        if samples.is_empty() {
            return Err(self.no_samples(call));
        }
        Ok(Value::Vector(samples))
    }

    fn no_samples(&self, call: String) -> EvalError {
        let history = match self.input.history.begin_ms() {
            Some(ms) => format!("the history begins at {}", Value::Timestamp(ms)),
            None => "the history is empty".to_owned(),
        };
        EvalError::NoSamples {
            at: self.at.clone(),
            call,
            history,
        }
    }

    /// A sample range `(start, end]` in ms: one interval (ending now), or a
    /// start and an end, each a timestamp or an interval meaning that long ago.
    fn range(&self, call: &str, args: &[Value]) -> Result<(i64, i64), EvalError> {
        let (start, end) = match args {
            [Value::Interval(ago)] => (self.ago(*ago)?, self.input.now_ms),
            [start, end] => (self.time_point(call, start)?, self.time_point(call, end)?),
            _ => {
                let found = join(args.iter().map(Value::describe));
                return Err(self.type_error(format!(
                    "{call}: expected an interval, or a start and an end (timestamps or intervals), got ({found})"
                )));
            }
        };
        if start > end {
            let (start, end) = (Value::Timestamp(start), Value::Timestamp(end));
            let message = format!("the range starts at {start}, after it ends at {end}");
            return Err(self.bad_argument(call, message));
        }
        Ok((start, end))
    }

    fn time_point(&self, call: &str, value: &Value) -> Result<i64, EvalError> {
        match value {
            Value::Timestamp(ms) => Ok(*ms),
            Value::Interval(ago) => self.ago(*ago),
            other => Err(self.type_error(format!(
                "{call}: a range's start and end must be timestamps or intervals, got {}",
                other.describe()
            ))),
        }
    }

    /// The timestamp `ago` before now.
    fn ago(&self, ago: i64) -> Result<i64, EvalError> {
        self.input
            .now_ms
            .checked_sub(ago)
            .ok_or_else(|| self.out_of_range("the timestamp is out of range".to_owned()))
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// The statistic functions over a non-empty list of numbers; `None` for
/// the other functions.
fn statistic(func: Func, numbers: &[f64]) -> Option<f64> {
    let n = numbers.len() as f64;
    let min = || numbers.iter().copied().fold(f64::INFINITY, f64::min);
    let max = || numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = || numbers.iter().sum::<f64>() / n;
    match func {
        Func::Min => Some(min()),
        Func::Max => Some(max()),
        Func::Range => Some(max() - min()),
        Func::Sum => Some(numbers.iter().sum()),
        Func::Avg => Some(mean()),
        // Population standard deviation: the mean squared deviation's root.
        Func::Std => {
            let mean = mean();
            Some((numbers.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt())
        }
        Func::Ceil | Func::Floor | Func::Len | Func::Percentile | Func::Round | Func::Time => None,
    }
}

/// The `p`th percentile (0 to 100) of sorted numbers by linear
/// interpolation between the closest ranks: the 0-based rank is
/// `p / 100 × (n − 1)`, and a fractional rank weighs its two neighbours
/// (Excel's `PERCENTILE.INC`, NumPy's default). So the 0th is the minimum,
/// the 100th the maximum and the 50th the median.
fn interpolated_percentile(sorted: &[f64], p: f64) -> f64 {
    let last = sorted.len().saturating_sub(1);
    let rank = p / 100.0 * last as f64;
    let lower = (rank.floor() as usize).min(last);
    let upper = (lower + 1).min(last);
    let weight = rank - lower as f64;
    match (sorted.get(lower), sorted.get(upper)) {
        (Some(&a), Some(&b)) if weight > 0.0 => a + (b - a) * weight,
        (Some(&a), _) => a,
        _ => f64::NAN,
    }
}
