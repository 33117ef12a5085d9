//! The values of the language, how they print and how they serialise.

use std::fmt;

use chrono::{DateTime, SecondsFormat};
use serde::{Serialize, Serializer};

use super::ast::DAY_MS;

/// A value of the language.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number (`double`).
    Double(f64),
    /// A vector of numbers (`doubleVec`), such as samples, oldest first.
    Vector(Vec<f64>),
    /// A string, such as a node deallocation option.
    Text(String),
    /// A point in time, in milliseconds since the Unix epoch.
    Timestamp(i64),
    /// A time interval, in milliseconds.
    Interval(i64),
}

impl Value {
    /// The number this value stands for where a number is needed: a double,
    /// or a vector of exactly one element.
    pub(super) fn as_double(&self) -> Option<f64> {
        match self {
            Value::Double(x) => Some(*x),
            Value::Vector(xs) => match xs.as_slice() {
                [x] => Some(*x),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value's type in words, for error messages.
    pub(super) fn describe(&self) -> String {
        match self {
            Value::Double(_) => "a number".to_owned(),
            Value::Vector(xs) if xs.len() == 1 => "a vector of 1 number".to_owned(),
            Value::Vector(xs) => format!("a vector of {} numbers", xs.len()),
            Value::Text(_) => "a string".to_owned(),
            Value::Timestamp(_) => "a timestamp".to_owned(),
            Value::Interval(_) => "a time interval".to_owned(),
        }
    }
}

/// Azure-like: `3`, `2.5`, `[1, 2, 3]`, `taskcompletion`,
/// `2026-01-01T00:00:00Z`, `00:05:00`, `00:00:00.250`, `2d 01:00:00`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Double(x) => write!(f, "{x}"),
            Value::Vector(xs) => {
                f.write_str("[")?;
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            Value::Text(text) => f.write_str(text),
            Value::Timestamp(ms) => fmt_timestamp(*ms, f),
            Value::Interval(ms) => fmt_interval(*ms, f),
        }
    }
}

fn fmt_timestamp(ms: i64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match DateTime::from_timestamp_millis(ms) {
        Some(at) => f.write_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        // Beyond chrono's years ±262143: still say what it is.
        None => write!(f, "{ms} ms after the Unix epoch"),
    }
}

fn fmt_interval(ms: i64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if ms < 0 {
        f.write_str("-")?;
    }
    let ms = ms.unsigned_abs();
    let days = ms / DAY_MS.unsigned_abs();
    let rest = ms % DAY_MS.unsigned_abs();
    if days > 0 {
        write!(f, "{days}d ")?;
    }
    let (hours, minutes, seconds) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1_000 % 60);
    write!(f, "{hours:02}:{minutes:02}:{seconds:02}")?;
    match rest % 1_000 {
        0 => Ok(()),
        fraction => write!(f, ".{fraction:03}"),
    }
}

/// Doubles as numbers (non-finite ones as null, which JSON cannot hold
/// otherwise), vectors as arrays of them, everything else as its display
/// string.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let finite = |x: f64| x.is_finite().then_some(x);
        match self {
            Value::Double(x) => finite(*x).serialize(serializer),
            Value::Vector(xs) => serializer.collect_seq(xs.iter().map(|x| finite(*x))),
            _ => serializer.collect_str(self),
        }
    }
}
