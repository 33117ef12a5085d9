//! Job parameters at submit time: the values a user gives, checked against the
//! application's declarations.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::num::IntErrorKind;

use serde_json::{Map, Value};

use super::PackageError;
use super::manifest::{ParamDecl, ParamType, article, quoted_list};

/// How much of an offending value an error message quotes.
const SHOWN_VALUE_LEN: usize = 80;

/// Checks the parameters of a job submission and returns the complete parameter object.
///
/// The result has every declared parameter: the given value, or else the default. Names
/// that are not declared and required parameters that are missing are errors.
///
/// Each value may be given as its natural JSON type or as a JSON string holding it (so a
/// CLI can pass `--param paths=1000` as text):
///
/// | type | accepted | output |
/// | --- | --- | --- |
/// | int | an integer JSON number, or a string `i64::from_str` accepts (`"1000"`, `"-5"`; not `"1e3"` or `"1.0"`) | integer |
/// | float | any JSON number, or a string holding a finite number (`"0.95"`, `"1e3"`) | float |
/// | bool | `true`/`false`, or the strings `"true"`/`"false"` | bool |
/// | string | a JSON string | string |
/// | enum | a JSON string among the declared values | string |
///
/// `null` is not a value of any type: omit the parameter to get its default. Int and float
/// values must lie within `min`/`max`; ints are compared exactly, without rounding to f64.
pub fn resolve_parameters(
    decls: &BTreeMap<String, ParamDecl>,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, PackageError> {
    if let Some(unknown) = given.keys().find(|name| !decls.contains_key(*name)) {
        return Err(PackageError::UnknownParameter {
            name: unknown.clone(),
            declared: decls.keys().cloned().collect(),
        });
    }
    let mut resolved = Map::new();
    for (name, decl) in decls {
        let value = match (given.get(name), &decl.default) {
            (Some(value), _) | (None, Some(value)) => coerce(decl, value),
            (None, None) => return Err(PackageError::MissingParameter(name.clone())),
        }
        .map_err(|message| PackageError::Parameter {
            name: name.clone(),
            message,
        })?;
        resolved.insert(name.clone(), value);
    }
    Ok(resolved)
}

/// Converts `value` to the canonical JSON value of the declared type, or explains why not.
fn coerce(decl: &ParamDecl, value: &Value) -> Result<Value, String> {
    let wrong = || format!("must be {}, got {}", article(decl.kind), show(value));
    let canonical = match decl.kind {
        ParamType::Int => Value::from(to_int(value).map_err(|e| e.unwrap_or_else(wrong))?),
        ParamType::Float => Value::from(to_float(value).ok_or_else(wrong)?),
        ParamType::Bool => Value::from(to_bool(value).ok_or_else(wrong)?),
        ParamType::String => Value::from(value.as_str().ok_or_else(wrong)?),
        ParamType::Enum => match value.as_str() {
            Some(s) if decl.values.iter().any(|v| v == s) => Value::from(s),
            _ => {
                return Err(format!(
                    "must be one of {}, got {}",
                    quoted_list(&decl.values),
                    show(value)
                ));
            }
        },
    };
    match out_of_range(&canonical, decl.min, decl.max) {
        Some(Bound::Below(min)) => Err(format!("must be at least {min}, got {}", show(value))),
        Some(Bound::Above(max)) => Err(format!("must be at most {max}, got {}", show(value))),
        None => Ok(canonical),
    }
}

/// An int, or `Err(None)` for a value of the wrong type, or `Err(Some(message))` for an
/// integer outside the i64 range.
fn to_int(value: &Value) -> Result<i64, Option<String>> {
    let too_big = || {
        Some(format!(
            "must be an int between {} and {}, got {}",
            i64::MIN,
            i64::MAX,
            show(value)
        ))
    };
    match value {
        Value::Number(n) if n.is_i64() => n.as_i64().ok_or(None),
        Value::Number(n) if n.is_u64() => Err(too_big()),
        Value::String(s) => s.parse::<i64>().map_err(|e| match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => too_big(),
            _ => None,
        }),
        _ => Err(None),
    }
}

fn to_float(value: &Value) -> Option<f64> {
    let f = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.parse::<f64>().ok()?,
        _ => return None,
    };
    f.is_finite().then_some(f)
}

fn to_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// Which bound a value breaks.
pub(crate) enum Bound {
    Below(f64),
    Above(f64),
}

/// Checks a canonical number against `min` and `max`; other values have no range.
pub(crate) fn out_of_range(value: &Value, min: Option<f64>, max: Option<f64>) -> Option<Bound> {
    let cmp = |bound: f64| match value.as_i64() {
        Some(i) => compare_int(i, bound),
        None => value.as_f64()?.partial_cmp(&bound),
    };
    if let Some(min) = min
        && cmp(min) == Some(Ordering::Less)
    {
        return Some(Bound::Below(min));
    }
    if let Some(max) = max
        && cmp(max) == Some(Ordering::Greater)
    {
        return Some(Bound::Above(max));
    }
    None
}

/// Compares an i64 with an f64 exactly. Rounding `i` to f64 is monotonic, so a strict
/// inequality between the rounded value and `bound` holds for `i` too; only when they are
/// equal can rounding hide a difference, and then `bound` is integral and comparing in
/// i128 is exact.
fn compare_int(i: i64, bound: f64) -> Option<Ordering> {
    match (i as f64).partial_cmp(&bound)? {
        Ordering::Equal => Some(i128::from(i).cmp(&(bound as i128))),
        other => Some(other),
    }
}

/// The value as compact JSON, shortened for messages.
fn show(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(SHOWN_VALUE_LEN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::package::archive::testzip::expect_err;
    use crate::package::parse_manifest;

    fn decls() -> BTreeMap<String, ParamDecl> {
        parse_manifest(
            r#"
[parameters.paths]
type = "int"
default = 100000
min = 1
max = 100000000
[parameters.confidence]
type = "float"
default = 0.95
min = 0
max = 1
[parameters.seed]
type = "int"
[parameters.method]
type = "enum"
values = ["sobol", "halton"]
default = "sobol"
[parameters.label]
type = "string"
default = "run"
[parameters.verbose]
type = "bool"
default = false
"#,
        )
        .expect("valid manifest")
        .parameters
    }

    fn given(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("test input must be an object, got {other}"),
        }
    }

    fn resolve(value: Value) -> Result<Map<String, Value>, PackageError> {
        resolve_parameters(&decls(), &given(value))
    }

    #[test]
    fn defaults_fill_in_everything_not_given() {
        let resolved = resolve(json!({"seed": 42})).expect("valid");
        assert_eq!(
            Value::Object(resolved),
            json!({"paths": 100000, "confidence": 0.95, "seed": 42, "method": "sobol",
                   "label": "run", "verbose": false})
        );
    }

    #[test]
    fn natural_json_values_are_kept() {
        let resolved = resolve(
            json!({"seed": -7, "paths": 5, "confidence": 1, "method": "halton",
                                      "label": "", "verbose": true}),
        )
        .expect("valid");
        assert_eq!(
            Value::Object(resolved),
            json!({"paths": 5, "confidence": 1.0, "seed": -7, "method": "halton",
                   "label": "", "verbose": true})
        );
    }

    #[test]
    fn floats_survive_the_trip_through_json_text_bit_for_bit() {
        // Guests receive parameters as JSON text and results come back the same way;
        // a last-digit error would make wasm and native answers differ by one ulp.
        let mut x = 0.123_456_789_f64;
        for _ in 0..10_000 {
            x = (x * 3.987_654_321 + 0.000_123).fract() * 1.0e6;
            let text =
                serde_json::to_string(&json!({ "confidence": x / 1.0e6, "seed": 1 })).unwrap();
            let parsed: Map<String, Value> = serde_json::from_str(&text).unwrap();
            let resolved = resolve_parameters(&decls(), &parsed).expect("valid");
            let back = resolved["confidence"].as_f64().unwrap();
            assert_eq!(back.to_bits(), (x / 1.0e6).to_bits(), "{text}");
        }
    }

    #[test]
    fn strings_are_coerced_to_the_declared_type() {
        let resolved = resolve(json!({"seed": "-7", "paths": "+1000", "confidence": "1e-1",
                                      "verbose": "true", "label": "42"}))
        .expect("valid");
        assert_eq!(resolved["seed"], json!(-7));
        assert!(resolved["seed"].is_i64());
        assert_eq!(resolved["paths"], json!(1000));
        assert_eq!(resolved["confidence"], json!(0.1));
        assert!(resolved["confidence"].is_f64());
        assert_eq!(resolved["verbose"], json!(true));
        assert_eq!(resolved["label"], json!("42"));
        let off = resolve(json!({"seed": 1, "verbose": "false"})).expect("valid");
        assert_eq!(off["verbose"], json!(false));
    }

    #[test]
    fn ints_cover_the_whole_i64_range_and_nothing_more() {
        let decls: BTreeMap<String, ParamDecl> = parse_manifest("[parameters.n]\ntype = \"int\"\n")
            .expect("valid")
            .parameters;
        for (value, want) in [
            (json!(i64::MAX), json!(i64::MAX)),
            (json!(i64::MIN.to_string()), json!(i64::MIN)),
        ] {
            let resolved =
                resolve_parameters(&decls, &given(json!({ "n": value }))).expect("in range");
            assert_eq!(resolved["n"], want);
        }
        for value in [json!(u64::MAX), json!("9223372036854775808")] {
            expect_err(
                resolve_parameters(&decls, &given(json!({ "n": value }))),
                "invalid_parameter",
                "must be an int between -9223372036854775808 and 9223372036854775807",
            );
        }
    }

    #[test]
    fn wrong_types_are_rejected_with_the_value_shown() {
        for (value, want) in [
            (
                json!({"seed": "abc"}),
                "parameter `seed` must be an int, got \"abc\"",
            ),
            (json!({"seed": 1.5}), "must be an int, got 1.5"),
            (json!({"seed": 1.0}), "must be an int, got 1.0"),
            (json!({"seed": "1e3"}), "must be an int, got \"1e3\""),
            (json!({"seed": "1.0"}), "must be an int, got \"1.0\""),
            (json!({"seed": " 1"}), "must be an int, got \" 1\""),
            (json!({"seed": true}), "must be an int, got true"),
            (json!({"seed": null}), "must be an int, got null"),
            (
                json!({"seed": 1, "confidence": "NaN"}),
                "parameter `confidence` must be a float, got \"NaN\"",
            ),
            (
                json!({"seed": 1, "confidence": "inf"}),
                "must be a float, got \"inf\"",
            ),
            (
                json!({"seed": 1, "confidence": [0.5]}),
                "must be a float, got [0.5]",
            ),
            (
                json!({"seed": 1, "verbose": "yes"}),
                "parameter `verbose` must be a bool, got \"yes\"",
            ),
            (json!({"seed": 1, "verbose": 1}), "must be a bool, got 1"),
            (
                json!({"seed": 1, "verbose": "True"}),
                "must be a bool, got \"True\"",
            ),
            (
                json!({"seed": 1, "label": 5}),
                "parameter `label` must be a string, got 5",
            ),
            (
                json!({"seed": 1, "method": "monte"}),
                "parameter `method` must be one of \"sobol\", \"halton\", got \"monte\"",
            ),
            (
                json!({"seed": 1, "method": 1}),
                "must be one of \"sobol\", \"halton\", got 1",
            ),
        ] {
            let err = expect_err(resolve(value.clone()), "invalid_parameter", want);
            assert!(matches!(err, PackageError::Parameter { .. }), "{value}");
        }
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(500);
        let err = expect_err(resolve(json!({"seed": long})), "invalid_parameter", "xxx…");
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn ranges_are_enforced() {
        for (value, want) in [
            (
                json!({"seed": 1, "paths": 0}),
                "parameter `paths` must be at least 1, got 0",
            ),
            (
                json!({"seed": 1, "paths": "100000001"}),
                "must be at most 100000000, got \"100000001\"",
            ),
            (
                json!({"seed": 1, "confidence": -0.01}),
                "parameter `confidence` must be at least 0, got -0.01",
            ),
            (
                json!({"seed": 1, "confidence": "1.5"}),
                "must be at most 1, got \"1.5\"",
            ),
        ] {
            let err = expect_err(resolve(value), "invalid_parameter", want);
            assert!(
                matches!(err, PackageError::Parameter { ref name, .. } if name == "paths" || name == "confidence")
            );
        }
        let edges =
            resolve(json!({"seed": 1, "paths": 1, "confidence": 1})).expect("bounds are inclusive");
        assert_eq!(
            (edges["paths"].clone(), edges["confidence"].clone()),
            (json!(1), json!(1.0))
        );
    }

    #[test]
    fn int_ranges_are_compared_exactly() {
        let decls: BTreeMap<String, ParamDecl> =
            parse_manifest("[parameters.n]\ntype = \"int\"\nmax = 9007199254740992\n")
                .expect("valid")
                .parameters;
        let ok = resolve_parameters(&decls, &given(json!({"n": 9_007_199_254_740_992i64})));
        assert_eq!(ok.expect("at max")["n"], json!(9_007_199_254_740_992i64));
        expect_err(
            resolve_parameters(&decls, &given(json!({"n": 9_007_199_254_740_993i64}))),
            "invalid_parameter",
            "must be at most 9007199254740992, got 9007199254740993",
        );
    }

    #[test]
    fn unknown_names_are_rejected_with_the_declared_list() {
        let err = expect_err(
            resolve(json!({"seed": 1, "foo": 2})),
            "unknown_parameter",
            "unknown parameter `foo`; this application declares: confidence, label, method, paths, seed, verbose",
        );
        assert!(
            matches!(&err, PackageError::UnknownParameter { name, declared } if name == "foo" && declared.len() == 6)
        );
        expect_err(
            resolve_parameters(&BTreeMap::new(), &given(json!({"x": 1}))),
            "unknown_parameter",
            "unknown parameter `x`; this application declares no parameters",
        );
    }

    #[test]
    fn required_parameters_must_be_given() {
        let err = expect_err(
            resolve(json!({})),
            "missing_parameter",
            "parameter `seed` is required",
        );
        assert!(matches!(&err, PackageError::MissingParameter(name) if name == "seed"));
    }

    #[test]
    fn no_declarations_and_no_values_resolve_to_an_empty_object() {
        let resolved = resolve_parameters(&BTreeMap::new(), &Map::new()).expect("valid");
        assert!(resolved.is_empty());
    }
}
