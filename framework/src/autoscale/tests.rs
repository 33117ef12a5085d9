use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600_000;
const PERIOD_MS: i64 = 30_000;
const MINUTE: i64 = 60_000;

fn sample(at_ms: i64, active: u64, running: u64) -> Sample {
    Sample {
        at_ms,
        active,
        running,
        succeeded: 0,
        failed: 0,
    }
}

/// Samples every 30 s, the newest taken at `NOW`, with these (active,
/// running) counts, oldest first.
fn history(counts: &[(u64, u64)]) -> History {
    let mut history = History::new(Duration::from_secs(30), Duration::from_secs(86_400));
    let newest = counts.len() as i64 - 1;
    for (i, &(active, running)) in counts.iter().enumerate() {
        history.push(sample(
            NOW - (newest - i as i64) * PERIOD_MS,
            active,
            running,
        ));
    }
    history
}

/// Ten samples with 1, 2, ..., 10 active tasks (the newest 10), none running:
/// the first at NOW - 4.5 min.
fn ten() -> History {
    history(&(1..=10).map(|active| (active, 0)).collect::<Vec<_>>())
}

fn input(history: &History, target_nodes: u32) -> EvalInput<'_> {
    EvalInput {
        now_ms: NOW,
        history,
        current_nodes: 3,
        target_nodes,
    }
}

fn run_with(text: &str, history: &History, target_nodes: u32) -> Result<Evaluation, EvalError> {
    let formula = Formula::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    formula.evaluate(&input(history, target_nodes))
}

fn run(text: &str, history: &History) -> Evaluation {
    run_with(text, history, 4).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// The value of `expr` over `ten()`.
fn value(expr: &str) -> Value {
    let text = format!("x = {expr}");
    run(&text, &ten())
        .variables
        .remove("x")
        .expect("x is assigned")
}

fn double(expr: &str) -> f64 {
    match value(expr) {
        Value::Double(x) => x,
        other => panic!("{expr}: expected a double, got {other:?}"),
    }
}

fn eval_error(text: &str, history: &History) -> EvalError {
    match run_with(text, history, 4) {
        Ok(evaluation) => panic!("{text:?} evaluated to {evaluation:?}"),
        Err(error) => error,
    }
}

fn at(index: usize, target: &str) -> StatementRef {
    StatementRef {
        index,
        target: target.to_owned(),
    }
}

fn vars(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

// ---------------------------------------------------------------------------
// Parse errors.

#[test]
fn bad_formulas_are_refused_with_position_and_reason() {
    let over_size = format!("a = 1{}", " ".repeat(MAX_FORMULA_BYTES - 4));
    let over_count = "a = 1;".repeat(MAX_STATEMENTS + 1);
    let too_deep = format!("a = {}1{}", "(".repeat(33), ")".repeat(33));
    // (formula, line, column, a fragment of the message)
    #[rustfmt::skip]
    let table: Vec<(&str, usize, usize, &str)> = vec![
        ("a 1", 1, 3, r#"expected "=" after the variable name"#),
        ("$tasks\n", 2, 1, r#"expected "=" after the variable name"#),
        ("a = 1\n\nb = 2", 3, 1, r#"expected ";" between statements"#),
        ("a = 1 2", 1, 7, r#"expected ";" between statements"#),
        ("a = b = c", 1, 7, r#"expected ";" between statements"#),
        ("a = (1 + 2", 1, 11, r#"expected ")" to close the "(" at line 1, column 5"#),
        ("a = (\n1 + (2)", 2, 8, r#"")" to close the "(" at line 1, column 5"#),
        ("a = min(1 2)", 1, 11, r#"expected "," or ")" to close the "(" at line 1, column 8"#),
        ("a = 1)", 1, 6, r#"unmatched ")""#),
        ("a = 1 + * 2", 1, 9, r#"expected an expression (a number, a variable, a function call or "(")"#),
        ("a = 1;\nb = 2 +", 2, 8, "expected an expression"),
        ("a == 1", 1, 4, "expected an expression"),
        ("a = 1 ? 2", 1, 10, r#"expected ":""#),
        ("a = \"abc", 1, 9, r#"closing '"'"#),
        ("= 3", 1, 1, "expected a statement"),
        ("a = 1; 5 = 3", 1, 8, "expected a statement"),
        ("a = $PendingTasks.GetSample", 1, 28, r#"expected "(""#),
        ("a = $PendingTasks.", 1, 19, "expected a method name"),
        ("x = 1; y = 2; zzzzzzz = maxx(3)", 1, 25,
         "unknown function `maxx`; the functions are avg, ceil, floor, len, max, min, percentile, range, round, std, sum, time"),
        ("a = Min(1)", 1, 5, "unknown function `Min`"),
        ("a = percentile(1)", 1, 5, "`percentile` takes 2 arguments, got 1"),
        ("a = min()", 1, 5, "`min` takes at least 1 argument, got 0"),
        ("a = time(1)", 1, 5, "`time` takes no arguments, got 1"),
        ("a = $ActiveTasks.Count(1)", 1, 18, "`Count` takes no arguments, got 1"),
        ("a = $ActiveTasks.GetSample(1, 2, 3, 4)", 1, 18, "`GetSample` takes 1 to 3 arguments, got 4"),
        ("a = $PendingTasks.GetSampel(1)", 1, 19,
         "unknown method `GetSampel`; the methods are Count, GetSample, GetSamplePercent, GetSamplePeriod, HistoryBeginTime"),
        ("a = 1; b = a.GetSample(1)", 1, 14, "`GetSample` can be called only on a sample metric"),
        ("a = $ActiveTasks.GetSample(1).Count()", 1, 31, "`Count` can be called only on a sample metric"),
        ("a = $pendingtasks.Count()", 1, 19, "only on a sample metric"),
        ("a = $PendingTasks + 1", 1, 5, "$PendingTasks is a sample metric, not a value; call GetSample on it"),
        ("a = max($RunningTasks)", 1, 9, "e.g. $RunningTasks.GetSample(1)"),
        ("$PendingTasks = 1", 1, 1,
         "$PendingTasks is read-only; only $TargetDedicatedNodes and $NodeDeallocationOption can be assigned"),
        ("a = 1;\n$CurrentDedicatedNodes = 2", 2, 1, "$CurrentDedicatedNodes is read-only"),
        ("TimeInterval_Second = 2", 1, 1, "`TimeInterval_Second` is a constant"),
        ("a = 1;\nb =   tasks", 2, 7, "`tasks` is used before it is assigned"),
        ("a = a + 1", 1, 5, "`a` is used before it is assigned"),
        ("$x = 1; y = x", 1, 13, "`x` is used before it is assigned"),
        ("a = $NodeDeallocationOption", 1, 5, "`$NodeDeallocationOption` is used before it is assigned"),
        ("$NodeDeallocationOption = \"sometimes\"", 1, 27,
         "`sometimes` is not a node deallocation option; expected requeue, terminate or taskcompletion"),
        ("$NodeDeallocationOption = TaskCompletion", 1, 27, "`TaskCompletion` is not a node deallocation option"),
        ("$NodeDeallocationOption = (\"later\")", 1, 27, "`later` is not a node deallocation option"),
        ("a = 1e999", 1, 5, "the number is too large"),
        (&over_size, 1, MAX_FORMULA_BYTES + 1, "the formula is 8193 bytes long; the limit is 8192 bytes"),
        (&over_count, 1, 601, "the formula has more than 100 statements"),
        (&too_deep, 1, 37, "nests deeper than 32 levels"),
        ("", 1, 1, "the formula has no statements"),
        ("  ;; // nothing\n", 1, 1, "the formula has no statements"),
    ];
    assert!(table.len() >= 15);
    for (formula, line, column, fragment) in table {
        let error = Formula::parse(formula).expect_err(formula);
        assert_eq!(
            (error.line, error.column),
            (line, column),
            "{formula:?}: {error}"
        );
        assert!(error.message.contains(fragment), "{formula:?}: {error}");
        // Messages speak of the language, never of grammar rules.
        for rule in ["infix_op", "operand", "expr", "EOI", "sep", "target"] {
            let rule = format!("{rule} ");
            assert!(!error.message.contains(&rule), "{formula:?}: {error}");
        }
    }
}

#[test]
fn formula_error_displays_its_position() {
    let error = Formula::parse("a 1").unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"line 1, column 3: expected "=" after the variable name"#
    );
}

#[test]
fn limits_are_inclusive() {
    let at_size = format!("a = 1{}", " ".repeat(MAX_FORMULA_BYTES - 5));
    assert_eq!(at_size.len(), MAX_FORMULA_BYTES);
    assert!(Formula::parse(&at_size).is_ok());
    assert!(Formula::parse(&"a = 1;".repeat(MAX_STATEMENTS)).is_ok());
    // Empty statements and semicolons in strings or comments do not count.
    let padded = format!("{}{}", "a = 1;;".repeat(MAX_STATEMENTS), "// ;;;");
    assert!(Formula::parse(&padded).is_ok());
    let deepest = format!("a = {}1{}", "(".repeat(32), ")".repeat(32));
    assert!(Formula::parse(&deepest).is_ok());
}

#[test]
fn syntax_is_flexible_where_azure_is() {
    let formula = "// sizes\n$a=1;b = 2 ;\n\n ;c=\t$a+b // three\n;d = .5 + 2.5E1 + 1e3;";
    let evaluation = run(formula, &ten());
    assert_eq!(evaluation.variables["c"], Value::Double(3.0));
    assert_eq!(evaluation.variables["d"], Value::Double(1025.5));
    assert_eq!(Formula::parse(formula).unwrap().text(), formula);
}

// ---------------------------------------------------------------------------
// Azure's documented examples.

const AZURE_PENDING: &str = "startingNumberOfVMs = 1;
maxNumberofVMs = 25;
pendingTaskSamplePercent = $PendingTasks.GetSamplePercent(180 * TimeInterval_Second);
pendingTaskSamples = pendingTaskSamplePercent < 70 ? startingNumberOfVMs : avg($PendingTasks.GetSample(180 * TimeInterval_Second));
$TargetDedicatedNodes=min(maxNumberofVMs, pendingTaskSamples);
$NodeDeallocationOption = taskcompletion;";

#[test]
fn azure_pending_tasks_example() {
    // The last 6 samples (those in the last 180 s) have 6, 8, ..., 16 pending tasks.
    let full = history(&[
        (0, 1),
        (0, 1),
        (4, 2),
        (6, 2),
        (8, 2),
        (10, 2),
        (12, 2),
        (14, 2),
    ]);
    let evaluation = run(AZURE_PENDING, &full);
    assert_eq!(evaluation.target_nodes, 11);
    assert_eq!(evaluation.deallocation, DeallocationOption::TaskCompletion);
    assert_eq!(
        evaluation.variables,
        vars(&[
            ("$NodeDeallocationOption", text("taskcompletion")),
            ("$TargetDedicatedNodes", Value::Double(11.0)),
            ("maxNumberofVMs", Value::Double(25.0)),
            ("pendingTaskSamplePercent", Value::Double(100.0)),
            ("pendingTaskSamples", Value::Double(11.0)),
            ("startingNumberOfVMs", Value::Double(1.0)),
        ])
    );

    // 3 of the 6 expected samples: 50% < 70%, so the starting size.
    let sparse = history(&[(40, 0), (40, 0), (40, 0)]);
    let evaluation = run(AZURE_PENDING, &sparse);
    assert_eq!(
        evaluation.variables["pendingTaskSamplePercent"],
        Value::Double(50.0)
    );
    assert_eq!(evaluation.target_nodes, 1);
}

const AZURE_ACTIVE: &str = "// Get pending tasks for the past 15 minutes.
$samples = $ActiveTasks.GetSamplePercent(TimeInterval_Minute * 15);
// If we have fewer than 70 percent data points, we use the last sample point, otherwise we use the maximum of last sample point and the history average.
$tasks = $samples < 70 ? max(0, $ActiveTasks.GetSample(1)) : max( $ActiveTasks.GetSample(1), avg($ActiveTasks.GetSample(TimeInterval_Minute * 15)));
// If number of pending tasks is not 0, set targetVM to pending tasks, otherwise half of current dedicated.
$targetVMs = $tasks > 0 ? $tasks : max(0, $TargetDedicatedNodes / 2);
// The pool size is capped at 20, if target VM value is more than that, set it to 20. This value should be adjusted according to your use case.
cappedPoolSize = 20;
$TargetDedicatedNodes = max(0, min($targetVMs, cappedPoolSize));
// Set node deallocation mode - keep nodes active only until tasks finish
$NodeDeallocationOption = taskcompletion;";

#[test]
fn azure_active_tasks_example() {
    // 10 of the 30 samples expected in 15 minutes: use the latest, 7.
    let mut counts = vec![(3, 0); 9];
    counts.push((7, 0));
    let evaluation = run_with(AZURE_ACTIVE, &history(&counts), 4).unwrap();
    assert_eq!(
        evaluation.variables,
        vars(&[
            ("$NodeDeallocationOption", text("taskcompletion")),
            ("$TargetDedicatedNodes", Value::Double(7.0)),
            ("$samples", Value::Double(10.0 * 100.0 / 30.0)),
            ("$targetVMs", Value::Double(7.0)),
            ("$tasks", Value::Double(7.0)),
            ("cappedPoolSize", Value::Double(20.0)),
        ])
    );
    assert_eq!(evaluation.target_nodes, 7);

    // A full history: max(10, (29 × 30 + 10) / 30) = 29.33..., capped at 20.
    let mut counts = vec![(30, 0); 30];
    counts.push((10, 0));
    let evaluation = run_with(AZURE_ACTIVE, &history(&counts), 4).unwrap();
    assert_eq!(evaluation.variables["$samples"], Value::Double(100.0));
    assert_eq!(evaluation.variables["$tasks"], Value::Double(880.0 / 30.0));
    assert_eq!(evaluation.target_nodes, 20);

    // No tasks: half the current target, 9 / 2 = 4.5, rounds half away from zero.
    let evaluation = run_with(AZURE_ACTIVE, &history(&[(0, 0); 31]), 9).unwrap();
    assert_eq!(evaluation.variables["$targetVMs"], Value::Double(4.5));
    assert_eq!(evaluation.target_nodes, 5);
}

#[test]
fn azure_pending_halves_example() {
    let formula = "$TargetDedicatedNodes = min(4, $PendingTasks.GetSample(1) > 0 ? ceil($PendingTasks.GetSample(1) / 2) : 0);";
    for (active, running, nodes) in [(3, 2, 3), (15, 5, 4), (0, 0, 0), (1, 0, 1)] {
        let evaluation = run(formula, &history(&[(100, 100), (active, running)]));
        assert_eq!(
            evaluation.target_nodes, nodes,
            "{active} + {running} pending"
        );
        assert_eq!(evaluation.deallocation, DeallocationOption::Requeue);
    }
}

// ---------------------------------------------------------------------------
// Operators.

#[test]
fn precedence_and_associativity() {
    let cases = [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),
        ("2 * 3 % 4", 2.0),
        ("12 / 2 / 3", 2.0),
        ("2 + 3 > 4 && 1", 1.0),
        ("1 || 0 && 0", 1.0),
        ("0 && 0 || 1", 1.0),
        ("1 < 2 == 1", 1.0),
        ("3 == 3 > 2", 0.0),
        ("-2 * 3", -6.0),
        ("2 - -3", 5.0),
        ("!0 + 1", 2.0),
        ("- -3", 3.0),
        ("!!5", 1.0),
        ("0 ? 1 : 0 ? 2 : 3", 3.0),
        ("0 ? 1 : 1 ? 2 : 3", 2.0),
        ("1 ? 0 ? 4 : 5 : 6", 5.0),
        ("1 + 1 ? 10 : 20", 10.0),
        ("0 || 0 ? 1 : 2", 2.0),
        ("1 ? 2 : 3 + 4", 2.0),
        ("0 ? 2 : 3 + 4", 7.0),
    ];
    for (expr, expected) in cases {
        assert_eq!(double(expr), expected, "{expr}");
    }
}

#[test]
fn comparisons_and_logic_yield_one_or_zero() {
    let cases = [
        ("3 >= 3", 1.0),
        ("3 > 3", 0.0),
        ("2 <= 1", 0.0),
        ("1 < 2", 1.0),
        ("2 != 2", 0.0),
        ("2 == 2", 1.0),
        ("5 && 7", 1.0),
        ("0 || 0", 0.0),
        ("-3 || 0", 1.0),
        ("!3", 0.0),
        ("\"a\" == \"a\"", 1.0),
        ("requeue != \"requeue\"", 0.0),
        ("TimeInterval_Minute < TimeInterval_Hour", 1.0),
        ("TimeInterval_Day == TimeInterval_Hour * 24", 1.0),
        ("$ActiveTasks.HistoryBeginTime() < time()", 1.0),
        ("time() >= time()", 1.0),
        // A one-element vector stands for its number.
        ("$ActiveTasks.GetSample(1) > 9", 1.0),
    ];
    for (expr, expected) in cases {
        assert_eq!(double(expr), expected, "{expr}");
    }
}

#[test]
fn logic_and_ternary_evaluate_only_what_they_need() {
    assert_eq!(double("0 && 1 / 0"), 0.0);
    assert_eq!(double("1 || 1 / 0"), 1.0);
    assert_eq!(double("1 ? 5 : 1 / 0"), 5.0);
    assert_eq!(double("0 ? 1 / 0 : 6"), 6.0);
    let empty = history(&[]);
    assert_eq!(
        run("x = 0 && $ActiveTasks.GetSample(1)", &empty).variables["x"],
        Value::Double(0.0)
    );
}

#[test]
fn vector_arithmetic_is_elementwise() {
    let cases = [
        ("$ActiveTasks.GetSample(3) * 2", vec![16.0, 18.0, 20.0]),
        ("10 - $ActiveTasks.GetSample(3)", vec![2.0, 1.0, 0.0]),
        (
            "$ActiveTasks.GetSample(3) + $ActiveTasks.GetSample(3)",
            vec![16.0, 18.0, 20.0],
        ),
        (
            "$ActiveTasks.GetSample(2) / $ActiveTasks.GetSample(2)",
            vec![1.0, 1.0],
        ),
        ("$ActiveTasks.GetSample(3) % 4", vec![0.0, 1.0, 2.0]),
        ("-$ActiveTasks.GetSample(2)", vec![-9.0, -10.0]),
        ("$ActiveTasks.GetSample(1) / 2", vec![5.0]),
        ("-$ActiveTasks.GetSample(1) + 1", vec![-9.0]),
    ];
    for (expr, expected) in cases {
        assert_eq!(value(expr), Value::Vector(expected), "{expr}");
    }
}

#[test]
fn time_arithmetic() {
    let cases = [
        ("TimeInterval_Minute * 2", Value::Interval(2 * MINUTE)),
        ("2 * TimeInterval_Minute", Value::Interval(2 * MINUTE)),
        ("TimeInterval_Second * 1.5", Value::Interval(1_500)),
        (
            "TimeInterval_Second * $ActiveTasks.GetSample(1)",
            Value::Interval(10_000),
        ),
        ("TimeInterval_Hour / 4", Value::Interval(15 * MINUTE)),
        ("TimeInterval_Second / 3", Value::Interval(333)),
        (
            "TimeInterval_Hour + TimeInterval_Minute",
            Value::Interval(61 * MINUTE),
        ),
        (
            "TimeInterval_Hour - TimeInterval_Minute",
            Value::Interval(59 * MINUTE),
        ),
        ("-TimeInterval_Second", Value::Interval(-1_000)),
        (
            "TimeInterval_Hour / TimeInterval_Minute",
            Value::Double(60.0),
        ),
        ("TimeInterval_Zero", Value::Interval(0)),
        ("TimeInterval_Microsecond", Value::Interval(0)),
        ("TimeInterval_Millisecond", Value::Interval(1)),
        ("TimeInterval_Day", Value::Interval(86_400_000)),
        ("TimeInterval_Week", Value::Interval(7 * 86_400_000)),
        ("TimeInterval_Year", Value::Interval(365 * 86_400_000)),
        ("time()", Value::Timestamp(NOW)),
        (
            "time() - TimeInterval_Hour",
            Value::Timestamp(NOW - 60 * MINUTE),
        ),
        (
            "time() + TimeInterval_Minute",
            Value::Timestamp(NOW + MINUTE),
        ),
        (
            "TimeInterval_Minute + time()",
            Value::Timestamp(NOW + MINUTE),
        ),
        (
            "time() - $ActiveTasks.HistoryBeginTime()",
            Value::Interval(9 * PERIOD_MS),
        ),
    ];
    for (expr, expected) in cases {
        assert_eq!(value(expr), expected, "{expr}");
    }
}

#[test]
fn type_errors_name_the_operator_and_the_types() {
    let cases = [
        ("\"a\" + 1", "`+` does not apply to a string and a number"),
        (
            "time() + time()",
            "`+` does not apply to a timestamp and a timestamp",
        ),
        (
            "TimeInterval_Second * \"x\"",
            "`*` does not apply to a time interval and a string",
        ),
        (
            "TimeInterval_Second * TimeInterval_Second",
            "`*` does not apply to a time interval and a time interval",
        ),
        (
            "time() < 5",
            "`<` does not apply to a timestamp and a number",
        ),
        (
            "\"a\" < \"b\"",
            "`<` does not apply to a string and a string",
        ),
        (
            "$ActiveTasks.GetSample(2) > 1",
            "`>` does not apply to a vector of 2 numbers and a number",
        ),
        ("-\"a\"", "`-` does not apply to a string"),
        ("!time()", "`!` does not apply to a timestamp"),
        (
            "\"a\" && 1",
            "the operand of `&&` must be a number, got a string",
        ),
        (
            "time() ? 1 : 2",
            "the condition of `?:` must be a number, got a timestamp",
        ),
        (
            "min(1, \"a\")",
            "`min` takes numbers and vectors, got a string",
        ),
        (
            "ceil(time())",
            "`ceil` takes a number or a vector, got a timestamp",
        ),
        (
            "$ActiveTasks.GetSample(\"a\")",
            "expected an interval, or a start and an end",
        ),
        (
            "$ActiveTasks.GetSample(1, \"a\")",
            "a range's start and end must be timestamps or intervals",
        ),
    ];
    for (expr, message) in cases {
        let error = eval_error(&format!("a = 1; x = {expr}"), &ten());
        match &error {
            EvalError::Type {
                at: place,
                message: m,
            } => {
                assert_eq!(*place, at(2, "x"), "{expr}");
                assert!(m.contains(message), "{expr}: {m}");
            }
            other => panic!("{expr}: {other:?}"),
        }
        let shown = error.to_string();
        assert!(
            shown.starts_with("statement 2 (x = ...): "),
            "{expr}: {shown}"
        );
        assert!(shown.contains(message), "{expr}: {shown}");
    }
}

#[test]
fn length_mismatch_and_division_by_zero() {
    let error = eval_error(
        "x = $ActiveTasks.GetSample(3) + $ActiveTasks.GetSample(2)",
        &ten(),
    );
    assert_eq!(
        error,
        EvalError::LengthMismatch {
            at: at(1, "x"),
            op: "+",
            left: 3,
            right: 2
        }
    );
    assert_eq!(
        error.to_string(),
        "statement 1 (x = ...): `+` on vectors of different lengths (3 and 2)"
    );
    for (expr, op) in [
        ("1 / 0", "/"),
        ("5 % 0", "%"),
        ("$ActiveTasks.GetSample(3) / 0", "/"),
        ("2 / ($ActiveTasks.GetSample(1) - 10)", "/"),
        ("TimeInterval_Second / 0", "/"),
        ("TimeInterval_Second / TimeInterval_Zero", "/"),
    ] {
        let error = eval_error(&format!("x = {expr}"), &ten());
        assert_eq!(
            error,
            EvalError::DivisionByZero { at: at(1, "x"), op },
            "{expr}"
        );
        assert_eq!(
            error.to_string(),
            format!("statement 1 (x = ...): division by zero in `{op}`")
        );
    }
}

#[test]
fn out_of_range_times_are_errors() {
    for expr in [
        "TimeInterval_Year * 1e300",
        "time() + TimeInterval_Year * 2.8e8 + TimeInterval_Year * 2.8e8",
    ] {
        let error = eval_error(&format!("x = {expr}"), &ten());
        assert!(
            matches!(error, EvalError::OutOfRange { .. }),
            "{expr}: {error}"
        );
    }
}

// ---------------------------------------------------------------------------
// Functions.

#[test]
fn statistics_over_numbers_and_vectors() {
    let cases = [
        ("min(3, $ActiveTasks.GetSample(3), 1)", 1.0),
        ("min($ActiveTasks.GetSample(3))", 8.0),
        ("max(3, $ActiveTasks.GetSample(3), 1)", 10.0),
        ("max(-1)", -1.0),
        ("sum(1, 2, $ActiveTasks.GetSample(2))", 22.0),
        ("avg($ActiveTasks.GetSample(4))", 8.5),
        ("avg(1, 2)", 1.5),
        ("std(2, 4, 4, 4, 5, 5, 7, 9)", 2.0),
        ("std(5)", 0.0),
        ("range($ActiveTasks.GetSample(3), 2)", 8.0),
        ("len($ActiveTasks.GetSample(4))", 4.0),
        ("len(5)", 1.0),
    ];
    for (expr, expected) in cases {
        assert_eq!(double(expr), expected, "{expr}");
    }
}

#[test]
fn percentile_interpolates_between_closest_ranks() {
    let all = "$ActiveTasks.GetSample(10)"; // 1, 2, ..., 10
    let cases = [
        (0.0, 1.0),
        (100.0, 10.0),
        (50.0, 5.5),
        (25.0, 3.25),
        (75.0, 7.75),
    ];
    for (p, expected) in cases {
        assert_eq!(
            double(&format!("percentile({all}, {p})")),
            expected,
            "p = {p}"
        );
    }
    assert!((double(&format!("percentile({all}, 90)")) - 9.1).abs() < 1e-9);
    // The data need not be sorted: [-8, -9, -10].
    assert_eq!(
        double("percentile($ActiveTasks.GetSample(3) * -1, 50)"),
        -9.0
    );
    assert_eq!(double("percentile(4, 30)"), 4.0);

    let error = eval_error(&format!("x = percentile({all}, 101)"), &ten());
    assert_eq!(
        error,
        EvalError::BadArgument {
            at: at(1, "x"),
            call: "percentile".to_owned(),
            message: "the percentage must be between 0 and 100, got 101".to_owned(),
        }
    );
}

#[test]
fn rounding_functions() {
    let cases = [
        ("ceil(2.1)", 3.0),
        ("ceil(-2.1)", -2.0),
        ("floor(2.9)", 2.0),
        ("floor(-2.1)", -3.0),
        ("round(2.5)", 3.0),
        ("round(-2.5)", -3.0),
        ("round(0.5)", 1.0),
        ("round(2.4999)", 2.0),
        ("round(-0.4)", -0.0),
    ];
    for (expr, expected) in cases {
        assert_eq!(double(expr), expected, "{expr}");
    }
    // 8 / 4, 9 / 4, 10 / 4 = 2, 2.25, 2.5.
    assert_eq!(
        value("round($ActiveTasks.GetSample(3) / 4)"),
        Value::Vector(vec![2.0, 2.0, 3.0])
    );
    assert_eq!(
        value("ceil($ActiveTasks.GetSample(3) / 4)"),
        Value::Vector(vec![2.0, 3.0, 3.0])
    );
    assert_eq!(
        value("floor($ActiveTasks.GetSample(3) / 4)"),
        Value::Vector(vec![2.0, 2.0, 2.0])
    );
}

// ---------------------------------------------------------------------------
// Sample metrics.

#[test]
fn get_sample_by_count_interval_and_range() {
    let cases: [(&str, &[f64]); 9] = [
        ("GetSample(1)", &[10.0]),
        ("GetSample(3)", &[8.0, 9.0, 10.0]),
        ("GetSample(2.9)", &[9.0, 10.0]),
        (
            "GetSample(100)",
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
        ),
        // (now - 90 s, now]: the sample taken exactly 90 s ago is out.
        ("GetSample(TimeInterval_Second * 90)", &[8.0, 9.0, 10.0]),
        (
            "GetSample(TimeInterval_Minute * 2, TimeInterval_Minute)",
            &[7.0, 8.0],
        ),
        (
            "GetSample(time() - TimeInterval_Minute, time())",
            &[9.0, 10.0],
        ),
        ("GetSample(TimeInterval_Minute, time())", &[9.0, 10.0]),
        (
            "GetSample(TimeInterval_Minute * 10, 50)",
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
        ),
    ];
    for (call, expected) in cases {
        let expr = format!("$ActiveTasks.{call}");
        assert_eq!(value(&expr), Value::Vector(expected.to_vec()), "{call}");
    }
    let expr = "$ActiveTasks.GetSample(TimeInterval_Minute * 2, TimeInterval_Minute, 100)";
    assert_eq!(value(expr), Value::Vector(vec![7.0, 8.0]));
}

#[test]
fn each_metric_reads_its_count() {
    let mut history = History::new(Duration::from_secs(30), Duration::from_secs(600));
    history.push(Sample {
        at_ms: NOW,
        active: 1,
        running: 2,
        succeeded: 3,
        failed: 4,
    });
    let formula = "p = $PendingTasks.GetSample(1); a = $ActiveTasks.GetSample(1); r = $RunningTasks.GetSample(1); s = $SucceededTasks.GetSample(1); f = $FailedTasks.GetSample(1)";
    let variables = run(formula, &history).variables;
    for (name, expected) in [("p", 3.0), ("a", 1.0), ("r", 2.0), ("s", 3.0), ("f", 4.0)] {
        assert_eq!(variables[name], Value::Vector(vec![expected]), "{name}");
    }
}

#[test]
fn sample_percent_period_count_and_begin() {
    let cases = [
        // 10 of the 20 samples expected in 10 minutes.
        (
            "$ActiveTasks.GetSamplePercent(TimeInterval_Minute * 10)",
            Value::Double(50.0),
        ),
        (
            "$ActiveTasks.GetSamplePercent(TimeInterval_Minute * 2)",
            Value::Double(100.0),
        ),
        (
            "$ActiveTasks.GetSamplePercent(TimeInterval_Hour)",
            Value::Double(10.0 * 100.0 / 120.0),
        ),
        (
            "$ActiveTasks.GetSamplePercent(TimeInterval_Minute * 2, TimeInterval_Minute)",
            Value::Double(100.0),
        ),
        (
            "$ActiveTasks.GetSamplePercent(TimeInterval_Minute * 20, TimeInterval_Minute * 10)",
            Value::Double(0.0),
        ),
        // An empty range still expects one sample.
        (
            "$ActiveTasks.GetSamplePercent(TimeInterval_Zero)",
            Value::Double(0.0),
        ),
        ("$ActiveTasks.GetSamplePeriod()", Value::Interval(PERIOD_MS)),
        ("$ActiveTasks.Count()", Value::Double(10.0)),
        (
            "$ActiveTasks.HistoryBeginTime()",
            Value::Timestamp(NOW - 9 * PERIOD_MS),
        ),
    ];
    for (expr, expected) in cases {
        assert_eq!(value(expr), expected, "{expr}");
    }
    assert_eq!(
        run("c = $PendingTasks.Count()", &history(&[])).variables["c"],
        Value::Double(0.0)
    );
}

#[test]
fn sample_errors() {
    let formula = "x = $ActiveTasks.GetSample(TimeInterval_Minute * 20, TimeInterval_Minute * 10)";
    let error = eval_error(formula, &ten());
    assert_eq!(
        error,
        EvalError::NoSamples {
            at: at(1, "x"),
            call: "$ActiveTasks.GetSample(00:20:00, 00:10:00)".to_owned(),
            history: "the history begins at 2025-12-31T23:55:30Z".to_owned(),
        }
    );
    assert_eq!(
        error.to_string(),
        "statement 1 (x = ...): $ActiveTasks.GetSample(00:20:00, 00:10:00): no samples in that range; the history begins at 2025-12-31T23:55:30Z"
    );

    let formula = "a = 1; $tasks = $ActiveTasks.GetSample(TimeInterval_Second * 300)";
    assert_eq!(
        eval_error(formula, &history(&[])).to_string(),
        "statement 2 ($tasks = ...): $ActiveTasks.GetSample(00:05:00): no samples in that range; the history is empty"
    );
    let error = eval_error("b = $PendingTasks.HistoryBeginTime()", &history(&[]));
    assert!(matches!(error, EvalError::NoSamples { .. }), "{error}");
    let error = eval_error("b = $PendingTasks.GetSample(1)", &history(&[]));
    assert!(matches!(error, EvalError::NoSamples { .. }), "{error}");

    let error = eval_error(
        "x = $ActiveTasks.GetSample(TimeInterval_Minute * 10, 60)",
        &ten(),
    );
    assert_eq!(
        error,
        EvalError::TooFewSamples {
            at: at(1, "x"),
            call: "$ActiveTasks.GetSample(00:10:00, 60)".to_owned(),
            found: 50.0,
            required: 60.0,
        }
    );
    assert_eq!(
        error.to_string(),
        "statement 1 (x = ...): $ActiveTasks.GetSample(00:10:00, 60): only 50% of the expected samples exist, fewer than the 60% required"
    );
    let error = eval_error("x = $ActiveTasks.GetSample(TimeInterval_Hour, 10)", &ten());
    assert!(
        matches!(error, EvalError::TooFewSamples { found, .. } if found == 8.3),
        "{error}"
    );

    for (call, message) in [
        ("GetSample(0)", "the count must be at least 1, got 0"),
        (
            "GetSample(TimeInterval_Minute, TimeInterval_Hour)",
            "the range starts at",
        ),
        ("GetSample(-TimeInterval_Minute)", "the range starts at"),
        (
            "GetSample(TimeInterval_Minute, 120)",
            "the percentage must be between 0 and 100",
        ),
    ] {
        let error = eval_error(&format!("x = $ActiveTasks.{call}"), &ten());
        match &error {
            EvalError::BadArgument { message: m, .. } => {
                assert!(m.contains(message), "{call}: {error}")
            }
            _ => panic!("{call}: {error:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Service variables and results.

#[test]
fn variables_hold_every_variable_read_or_assigned() {
    let evaluation = run(
        "a = $CurrentDedicatedNodes + 1; $b = a * $TargetDedicatedNodes",
        &ten(),
    );
    assert_eq!(
        evaluation.variables,
        vars(&[
            ("$CurrentDedicatedNodes", Value::Double(3.0)),
            ("$NodeDeallocationOption", text("requeue")),
            ("$TargetDedicatedNodes", Value::Double(4.0)),
            ("$b", Value::Double(16.0)),
            ("a", Value::Double(4.0)),
        ])
    );
    // The target is kept when the formula does not assign it.
    assert_eq!(evaluation.target_nodes, 4);
    assert_eq!(evaluation.deallocation, DeallocationOption::Requeue);

    // `$x` and `x` are different variables; reassignment replaces.
    let evaluation = run(
        "$x = 1; x = 2; x = x + 10; y = $x + x; s = \"text\"",
        &ten(),
    );
    assert_eq!(evaluation.variables["y"], Value::Double(13.0));
    assert_eq!(evaluation.variables["s"], text("text"));
    assert!(!evaluation.variables.contains_key("$CurrentDedicatedNodes"));
}

#[test]
fn target_is_rounded_and_clamped() {
    for (expr, nodes) in [
        ("2.5", 3),
        ("2.4999", 2),
        ("-3", 0),
        ("-0.5", 0),
        ("$ActiveTasks.GetSample(1)", 10),
        ("1e12", u32::MAX),
    ] {
        let evaluation = run(&format!("$TargetDedicatedNodes = {expr}"), &ten());
        assert_eq!(evaluation.target_nodes, nodes, "{expr}");
    }
    let error = eval_error("$TargetDedicatedNodes = 1e308 * 10", &ten());
    assert_eq!(
        error,
        EvalError::OutOfRange {
            at: at(1, "$TargetDedicatedNodes"),
            message: "$TargetDedicatedNodes must be a finite number, got inf".to_owned(),
        }
    );
    let error = eval_error("$TargetDedicatedNodes = $ActiveTasks.GetSample(2)", &ten());
    assert!(
        error
            .to_string()
            .contains("$TargetDedicatedNodes must be a number, got a vector of 2 numbers"),
        "{error}"
    );
}

#[test]
fn deallocation_option_is_checked_and_readable() {
    let evaluation = run(
        "$NodeDeallocationOption = terminate; t = $NodeDeallocationOption == \"terminate\"",
        &ten(),
    );
    assert_eq!(evaluation.deallocation, DeallocationOption::Terminate);
    assert_eq!(evaluation.variables["t"], Value::Double(1.0));
    let evaluation = run(
        "d = \"taskcompletion\"; $NodeDeallocationOption = d",
        &ten(),
    );
    assert_eq!(evaluation.deallocation, DeallocationOption::TaskCompletion);

    let error = eval_error("d = \"sometimes\";\n$NodeDeallocationOption = d", &ten());
    assert_eq!(
        error,
        EvalError::BadDeallocation {
            at: at(2, "$NodeDeallocationOption"),
            value: "sometimes".to_owned(),
        }
    );
    assert_eq!(
        error.to_string(),
        "statement 2 ($NodeDeallocationOption = ...): `sometimes` is not a node deallocation option; expected requeue, terminate or taskcompletion"
    );
    let error = eval_error(
        "$NodeDeallocationOption = \"task\" + \"completion\"",
        &ten(),
    );
    assert!(matches!(error, EvalError::Type { .. }), "{error}");
    let error = eval_error("$NodeDeallocationOption = 1 + 1", &ten());
    assert!(matches!(error, EvalError::BadDeallocation { ref value, .. } if value == "2"));
}

#[test]
fn deallocation_option_names() {
    assert_eq!(DeallocationOption::default(), DeallocationOption::Requeue);
    assert_eq!(DeallocationOption::Requeue.as_str(), "requeue");
    assert_eq!(DeallocationOption::Terminate.as_str(), "terminate");
    assert_eq!(
        DeallocationOption::TaskCompletion.as_str(),
        "taskcompletion"
    );
    let json = serde_json::to_string(&DeallocationOption::TaskCompletion).unwrap();
    assert_eq!(json, "\"taskcompletion\"");
}

// ---------------------------------------------------------------------------
// History.

#[test]
fn history_drops_old_samples_and_ignores_older_ones() {
    let mut history = History::new(Duration::from_secs(30), Duration::from_secs(60));
    assert!(history.is_empty());
    assert_eq!(history.period(), Duration::from_secs(30));
    for seconds in [0, 30, 60] {
        history.push(sample(seconds * 1_000, 1, 0));
    }
    assert_eq!(history.len(), 3);
    // 90 s: the sample at 0 s is now more than 60 s older than the newest.
    history.push(sample(90_000, 2, 0));
    assert_eq!(history.len(), 3);
    assert_eq!(history.begin_ms(), Some(30_000));
    // Older than the newest: ignored.
    history.push(sample(45_000, 9, 0));
    assert_eq!(history.len(), 3);
    // At the newest's time: replaces it.
    history.push(sample(90_000, 7, 0));
    assert_eq!(history.len(), 3);
    assert_eq!(history.latest(1).map(|s| s.active).collect::<Vec<_>>(), [7]);
    // A long gap drops everything before it.
    history.push(sample(1_000_000, 3, 0));
    assert_eq!(history.len(), 1);
    assert!(!history.is_empty());
}

// ---------------------------------------------------------------------------
// Display and serialisation.

#[test]
fn values_display_like_azure() {
    let cases = [
        (Value::Double(3.0), "3"),
        (Value::Double(2.5), "2.5"),
        (Value::Vector(vec![1.0, 2.0, 3.5]), "[1, 2, 3.5]"),
        (Value::Vector(vec![]), "[]"),
        (text("taskcompletion"), "taskcompletion"),
        (Value::Timestamp(NOW), "2026-01-01T00:00:00Z"),
        (Value::Timestamp(NOW + 250), "2026-01-01T00:00:00.250Z"),
        (
            Value::Timestamp(i64::MAX),
            "9223372036854775807 ms after the Unix epoch",
        ),
        (Value::Interval(5 * MINUTE), "00:05:00"),
        (Value::Interval(250), "00:00:00.250"),
        (Value::Interval(26 * 60 * MINUTE + 1_000), "1d 02:00:01"),
        (Value::Interval(-MINUTE), "-00:01:00"),
        (Value::Interval(i64::MIN), "-106751991167d 07:12:55.808"),
    ];
    for (value, shown) in cases {
        assert_eq!(value.to_string(), shown);
    }
}

#[test]
fn values_serialise_as_json() {
    let json = |value: Value| serde_json::to_value(value).unwrap();
    assert_eq!(json(Value::Double(2.5)), serde_json::json!(2.5));
    assert_eq!(json(Value::Double(f64::NAN)), serde_json::Value::Null);
    assert_eq!(
        json(Value::Vector(vec![1.0, f64::INFINITY])),
        serde_json::json!([1.0, null])
    );
    assert_eq!(
        json(Value::Interval(5 * MINUTE)),
        serde_json::json!("00:05:00")
    );
    assert_eq!(
        json(Value::Timestamp(NOW)),
        serde_json::json!("2026-01-01T00:00:00Z")
    );
    assert_eq!(json(text("requeue")), serde_json::json!("requeue"));

    let evaluation = run(
        "$TargetDedicatedNodes = 2; $NodeDeallocationOption = taskcompletion",
        &ten(),
    );
    assert_eq!(
        serde_json::to_value(&evaluation).unwrap(),
        serde_json::json!({
            "target_nodes": 2,
            "deallocation": "taskcompletion",
            "variables": {
                "$NodeDeallocationOption": "taskcompletion",
                "$TargetDedicatedNodes": 2.0,
            },
        })
    );
    let error = Formula::parse("a 1").unwrap_err();
    assert_eq!(
        serde_json::to_value(&error).unwrap(),
        serde_json::json!({ "line": 1, "column": 3, "message": "expected \"=\" after the variable name" })
    );
}

// ---------------------------------------------------------------------------
// Robustness.

/// A tiny xorshift64 generator, so the test needs no crate and is repeatable.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const TOKENS: &[&str] = &[
    "a",
    "$b",
    "x",
    "$TargetDedicatedNodes",
    "$NodeDeallocationOption",
    "$CurrentDedicatedNodes",
    "$PendingTasks",
    "$ActiveTasks",
    ".GetSample(",
    ".GetSamplePercent(",
    ".Count()",
    ".HistoryBeginTime()",
    ".GetSamplePeriod()",
    "min(",
    "max(",
    "avg(",
    "percentile(",
    "round(",
    "len(",
    "std(",
    "range(",
    "time()",
    "TimeInterval_Minute",
    "TimeInterval_Second",
    "TimeInterval_Zero",
    "requeue",
    "taskcompletion",
    "\"terminate\"",
    "\"",
    "0",
    "1",
    "2.5",
    "1e3",
    "100",
    "-1",
    "1e308",
    "(",
    ")",
    ",",
    ";",
    "=",
    "==",
    "+",
    "-",
    "*",
    "/",
    "%",
    "<",
    ">=",
    "&&",
    "||",
    "!",
    "?",
    ":",
    ".",
    " ",
    "\n",
    "// c\n",
    "é",
    "\u{0}",
    "\t",
];

fn check_no_panic(text: &str, histories: &[History]) {
    match Formula::parse(text) {
        Ok(formula) => {
            for history in histories {
                let _ = formula
                    .evaluate(&input(history, 5))
                    .map_err(|e| e.to_string());
            }
        }
        Err(error) => {
            assert!(error.line >= 1 && error.column >= 1, "{text:?}: {error}");
            assert!(!error.message.is_empty());
        }
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let histories = [ten(), history(&[])];
    let seeds = [
        AZURE_PENDING,
        AZURE_ACTIVE,
        "x = $ActiveTasks.GetSample(TimeInterval_Minute * 2, 1, 50)",
    ];
    let mut parsed = 0;
    for round in 0..6_000 {
        let text = match round % 3 {
            // Token soup.
            0 => (0..rng.below(40))
                .map(|_| rng.pick(TOKENS))
                .collect::<String>(),
            // Random characters, ASCII-heavy.
            1 => (0..rng.below(60))
                .map(|_| match rng.below(10) {
                    0 => char::from_u32(rng.next() as u32 % 0x11_0000).unwrap_or('?'),
                    _ => (32 + rng.below(95) as u8) as char,
                })
                .collect(),
            // A valid formula with a few bytes replaced or removed.
            _ => {
                let mut bytes = seeds[rng.below(seeds.len())].as_bytes().to_vec();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(bytes.len());
                    match rng.below(2) {
                        0 => bytes[i] = rng.pick(TOKENS).as_bytes()[0],
                        _ => {
                            bytes.remove(i);
                        }
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        if Formula::parse(&text).is_ok() {
            parsed += 1;
        }
        check_no_panic(&text, &histories);
    }
    // The soup and the mutations reach evaluation, not only parse errors.
    assert!(parsed > 50, "only {parsed} garbage formulas parsed");
}

#[test]
fn extreme_inputs_never_panic() {
    let histories = [ten(), history(&[])];
    let huge_history = {
        let mut history = History::new(Duration::ZERO, Duration::MAX);
        history.push(sample(i64::MIN, u64::MAX, u64::MAX));
        history.push(sample(i64::MAX, u64::MAX, 1));
        history
    };
    let texts = [
        "x = $ActiveTasks.GetSample(1e308)".to_owned(),
        "x = $ActiveTasks.GetSample(-1e308)".to_owned(),
        "x = $ActiveTasks.GetSample(TimeInterval_Year * 1e10)".to_owned(),
        "x = $PendingTasks.GetSample(TimeInterval_Year * 2.9e8, 0)".to_owned(),
        "x = $PendingTasks.GetSamplePercent(time() - time() - TimeInterval_Year * 2.9e8)"
            .to_owned(),
        "x = time() - TimeInterval_Year * 2.9e8 - TimeInterval_Year * 2.9e8".to_owned(),
        "x = percentile($ActiveTasks.GetSample(3) / 0.0000001 - 1e308, 33)".to_owned(),
        "x = 0 / 0.5 * 1e308 * 1e308 - 1e308 * 1e308; $TargetDedicatedNodes = x".to_owned(),
        format!("x = {}", ["1"; 3_000].join("+")),
        format!("x = {}1", "-!".repeat(3_000)),
        format!("x = {}1{}", "min(".repeat(32), ")".repeat(32)),
        "(".repeat(MAX_FORMULA_BYTES),
        "x = ".to_owned() + &"\"".repeat(MAX_FORMULA_BYTES - 4),
    ];
    for text in &texts {
        check_no_panic(text, &histories);
        check_no_panic(text, std::slice::from_ref(&huge_history));
    }
}

#[test]
fn deepest_formulas_fit_a_small_stack() {
    // MAX_NESTING bounds the parser's recursion; 1 MiB (half a test
    // thread's stack) is ample even for unoptimised builds.
    let texts = [
        format!("a = {}1{}", "(".repeat(32), ")".repeat(32)),
        format!("a = {}1{}", "max(".repeat(32), ")".repeat(32)),
        format!("a = {}1{}", "1 ? ".repeat(32), " : 1".repeat(32)),
        format!("a = {}1{}", "(1 ? ".repeat(16), " : 1)".repeat(16)),
    ];
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            for text in &texts {
                let evaluation = run(text, &ten());
                assert_eq!(evaluation.variables["a"], Value::Double(1.0), "{text}");
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
