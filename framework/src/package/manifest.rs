//! `assembly.toml`: the cloud assembly's manifest.
//!
//! ```toml
//! splitter = "splitter.wasm"      # optional, default "splitter.wasm"
//! processor = "processor.wasm"    # optional, default "processor.wasm"
//!
//! [parameters.paths]
//! type = "int"            # int | float | string | bool | enum
//! default = 100000        # optional; without a default the parameter is required
//! description = "Monte Carlo paths"
//! min = 1                 # int and float only
//! max = 100000000
//!
//! [parameters.method]
//! type = "enum"
//! values = ["a", "b"]     # enum only: the allowed choices
//! default = "a"
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::PackageError;
use super::archive::check_relative_path;
use super::params::{Bound, out_of_range};

/// The most parameters an application may declare.
pub const MAX_PARAMETERS: usize = 256;

/// The longest parameter name, in bytes.
const MAX_NAME_LEN: usize = 64;

/// Integer bounds must be exact as JSON numbers in every client, so they are limited to the
/// integers an f64 represents exactly.
const MAX_EXACT_INT: i64 = 1 << 53;

/// A validated cloud assembly manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The normalised path of the job splitter component inside the assembly zip.
    pub splitter: String,
    /// The normalised path of the task processor component inside the assembly zip.
    pub processor: String,
    /// The declared job parameters, by name.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamDecl>,
}

/// The declaration of one job parameter. In JSON:
/// `{"type":"int","default":100000,"description":"Monte Carlo paths","min":1}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDecl {
    /// The parameter's type.
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// The value used when a job does not set the parameter, of the parameter's type;
    /// `None` makes the parameter required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// A human-readable description, shown in the portal's job form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The smallest allowed value (int and float only).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_bound"
    )]
    pub min: Option<f64>,
    /// The largest allowed value (int and float only).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_bound"
    )]
    pub max: Option<f64>,
    /// The allowed values of an enum parameter; empty for other types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The type of a job parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// A 64-bit signed integer.
    Int,
    /// A finite 64-bit float.
    Float,
    /// A UTF-8 string.
    String,
    /// `true` or `false`.
    Bool,
    /// One of the strings listed in [`ParamDecl::values`].
    Enum,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::String => "string",
            ParamType::Bool => "bool",
            ParamType::Enum => "enum",
        })
    }
}

/// Writes integral bounds as JSON integers (`1`, not `1.0`), which reads naturally for int
/// parameters; both forms deserialize to the same f64.
fn serialize_bound<S: Serializer>(bound: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match bound {
        Some(b) if b.fract() == 0.0 && b.abs() <= MAX_EXACT_INT as f64 => {
            s.serialize_i64(*b as i64)
        }
        Some(b) => s.serialize_f64(*b),
        None => s.serialize_none(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    splitter: Option<String>,
    processor: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, RawParam>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type")]
    kind: ParamType,
    default: Option<toml::Value>,
    description: Option<String>,
    min: Option<toml::Value>,
    max: Option<toml::Value>,
    values: Option<Vec<String>>,
}

/// Parses and validates the text of `assembly.toml`.
///
/// Unknown keys are rejected. Component paths must be safe relative paths (see
/// [`check_relative_path`]) ending in `.wasm`, and are stored
/// normalised. Parameter names match `[a-z][a-z0-9_]{0,63}`; at most 256 parameters.
/// `values` is required for (and only allowed on) enum parameters and must be non-empty and
/// unique; `min`/`max` are only allowed on int and float parameters, and `min <= max`. A
/// default must have the parameter's type and satisfy its bounds or values. Syntax errors
/// carry line and column; other errors name the parameter or key at fault.
pub fn parse_manifest(text: &str) -> Result<Manifest, PackageError> {
    let raw: RawManifest =
        toml::from_str(text).map_err(|e| PackageError::Manifest(e.to_string()))?;
    let splitter = component_path("splitter", raw.splitter)?;
    let processor = component_path("processor", raw.processor)?;
    if raw.parameters.len() > MAX_PARAMETERS {
        return Err(PackageError::Manifest(format!(
            "{} parameters are declared; at most {MAX_PARAMETERS} are allowed",
            raw.parameters.len()
        )));
    }
    let mut parameters = BTreeMap::new();
    for (name, raw) in raw.parameters {
        let decl = check_param(&name, raw)
            .map_err(|message| PackageError::Manifest(format!("parameter `{name}`: {message}")))?;
        parameters.insert(name, decl);
    }
    Ok(Manifest {
        splitter,
        processor,
        parameters,
    })
}

fn component_path(key: &str, given: Option<String>) -> Result<String, PackageError> {
    let given = given.unwrap_or_else(|| format!("{key}.wasm"));
    let path = check_relative_path(&given).map_err(|e| {
        let reason = match e {
            PackageError::UnsafePath { reason, .. } => reason,
            other => other.to_string(),
        };
        PackageError::Manifest(format!(
            "`{key}` = {given:?} is not a safe relative path: {reason}"
        ))
    })?;
    if !path.ends_with(".wasm") {
        return Err(PackageError::Manifest(format!(
            "`{key}` = {given:?} must name a `.wasm` file"
        )));
    }
    Ok(path)
}

fn check_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let valid = name.len() <= MAX_NAME_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "the name must start with a lowercase letter and contain only lowercase letters, digits and `_` (at most {MAX_NAME_LEN} characters)"
        ))
    }
}

fn check_param(name: &str, raw: RawParam) -> Result<ParamDecl, String> {
    check_name(name)?;
    let kind = raw.kind;
    let numeric = matches!(kind, ParamType::Int | ParamType::Float);
    let values = match (kind, raw.values) {
        (ParamType::Enum, Some(values)) => check_values(values)?,
        (ParamType::Enum, None) => {
            return Err("an enum parameter needs `values`, the list of allowed choices".to_owned());
        }
        (_, Some(_)) => {
            return Err(format!(
                "`values` is only allowed on enum parameters, and this one is {kind}"
            ));
        }
        (_, None) => Vec::new(),
    };
    if !numeric && (raw.min.is_some() || raw.max.is_some()) {
        return Err(format!(
            "`min` and `max` are only allowed on int and float parameters, and this one is {kind}"
        ));
    }
    let min = raw.min.map(|v| bound("min", kind, &v)).transpose()?;
    let max = raw.max.map(|v| bound("max", kind, &v)).transpose()?;
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        return Err(format!("min {lo} is greater than max {hi}"));
    }
    let mut decl = ParamDecl {
        kind,
        default: None,
        description: raw.description,
        min,
        max,
        values,
    };
    if let Some(given) = raw.default {
        decl.default = Some(default_value(&decl, &given)?);
    }
    Ok(decl)
}

fn check_values(values: Vec<String>) -> Result<Vec<String>, String> {
    if values.is_empty() {
        return Err("`values` is empty; list at least one allowed choice".to_owned());
    }
    let mut seen = HashSet::new();
    if let Some(repeated) = values.iter().find(|v| !seen.insert(v.as_str())) {
        return Err(format!("`values` lists {repeated:?} more than once"));
    }
    Ok(values)
}

fn bound(key: &str, kind: ParamType, value: &toml::Value) -> Result<f64, String> {
    match (kind, value) {
        (ParamType::Int, toml::Value::Integer(i)) if i.unsigned_abs() <= MAX_EXACT_INT as u64 => {
            Ok(*i as f64)
        }
        (ParamType::Int, toml::Value::Integer(i)) => Err(format!(
            "{key} {i} is too large; int bounds must be within ±{MAX_EXACT_INT}"
        )),
        (ParamType::Float, toml::Value::Integer(i)) => Ok(*i as f64),
        (ParamType::Float, toml::Value::Float(f)) if f.is_finite() => Ok(*f),
        _ => Err(format!("{key} {value} is not {}", article(kind))),
    }
}

/// Converts a TOML default to its canonical JSON value and checks it against the
/// declaration.
fn default_value(decl: &ParamDecl, given: &toml::Value) -> Result<Value, String> {
    let not_kind = || format!("default {given} is not {}", article(decl.kind));
    let value = match (decl.kind, given) {
        (ParamType::Int, toml::Value::Integer(i)) => Value::from(*i),
        (ParamType::Float, toml::Value::Integer(i)) => Value::from(*i as f64),
        (ParamType::Float, toml::Value::Float(f)) if f.is_finite() => Value::from(*f),
        (ParamType::String, toml::Value::String(s)) => Value::from(s.as_str()),
        (ParamType::Bool, toml::Value::Boolean(b)) => Value::from(*b),
        (ParamType::Enum, toml::Value::String(s)) if decl.values.contains(s) => {
            Value::from(s.as_str())
        }
        (ParamType::Enum, toml::Value::String(_)) => {
            return Err(format!(
                "default {given} is not one of the values {}",
                quoted_list(&decl.values)
            ));
        }
        _ => return Err(not_kind()),
    };
    match out_of_range(&value, decl.min, decl.max) {
        Some(Bound::Below(min)) => Err(format!("default {given} is below min {min}")),
        Some(Bound::Above(max)) => Err(format!("default {given} is above max {max}")),
        None => Ok(value),
    }
}

/// "an int", "a float", ...: the type with its indefinite article, for messages.
pub(crate) fn article(kind: ParamType) -> &'static str {
    match kind {
        ParamType::Int => "an int",
        ParamType::Float => "a float",
        ParamType::String => "a string",
        ParamType::Bool => "a bool",
        ParamType::Enum => "an enum value",
    }
}

/// `"a", "b"`: a list of strings quoted for messages.
pub(crate) fn quoted_list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::package::archive::testzip::expect_err;

    const FULL: &str = r#"
splitter = "bin/split.wasm"
processor = "./bin//process.wasm"

[parameters.paths]
type = "int"
default = 100000
description = "Monte Carlo paths"
min = 1
max = 100000000

[parameters.confidence]
type = "float"
default = 0.95
min = 0
max = 1

[parameters.method]
type = "enum"
values = ["sobol", "halton"]
default = "sobol"

[parameters.label]
type = "string"

[parameters.antithetic]
type = "bool"
default = true
"#;

    #[test]
    fn a_full_manifest_is_parsed_and_normalised() {
        let m = parse_manifest(FULL).expect("valid manifest");
        assert_eq!(m.splitter, "bin/split.wasm");
        assert_eq!(m.processor, "bin/process.wasm");
        assert_eq!(
            m.parameters.keys().collect::<Vec<_>>(),
            ["antithetic", "confidence", "label", "method", "paths"]
        );
        assert_eq!(
            m.parameters["paths"],
            ParamDecl {
                kind: ParamType::Int,
                default: Some(json!(100000)),
                description: Some("Monte Carlo paths".into()),
                min: Some(1.0),
                max: Some(100_000_000.0),
                values: vec![],
            }
        );
        assert_eq!(m.parameters["confidence"].default, Some(json!(0.95)));
        assert_eq!(m.parameters["confidence"].min, Some(0.0));
        assert_eq!(m.parameters["method"].values, ["sobol", "halton"]);
        assert_eq!(m.parameters["label"].default, None);
        assert_eq!(m.parameters["antithetic"].default, Some(json!(true)));
    }

    #[test]
    fn components_default_to_the_conventional_names() {
        let m = parse_manifest("").expect("an empty manifest is valid");
        assert_eq!(
            m,
            Manifest {
                splitter: "splitter.wasm".into(),
                processor: "processor.wasm".into(),
                parameters: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn declarations_serialize_to_the_api_json_and_back() {
        let m = parse_manifest(FULL).expect("valid manifest");
        let paths = serde_json::to_value(&m.parameters["paths"]).expect("serialize");
        assert_eq!(
            paths,
            json!({"type": "int", "default": 100000, "description": "Monte Carlo paths",
                   "min": 1, "max": 100000000})
        );
        let method = serde_json::to_value(&m.parameters["method"]).expect("serialize");
        assert_eq!(
            method,
            json!({"type": "enum", "default": "sobol", "values": ["sobol", "halton"]})
        );
        let text = serde_json::to_string(&m).expect("serialize");
        let back: Manifest = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, m);
        let half: ParamDecl =
            serde_json::from_value(json!({"type": "float", "min": 0.5})).expect("fractional");
        assert_eq!(half.min, Some(0.5));
        assert_eq!(
            serde_json::to_value(&half).expect("serialize")["min"],
            json!(0.5)
        );
    }

    #[test]
    fn syntax_and_shape_errors_carry_line_and_column() {
        for (text, want) in [
            ("splitter = \"s.wasm\"\nprocessor = \n", "line 2, column 13"),
            ("colour = 1\n", "unknown field `colour`"),
            (
                "[parameters.paths]\ntype = \"integer\"\n",
                "line 2, column 8",
            ),
            (
                "[parameters.paths]\ntype = \"integer\"\n",
                "unknown variant `integer`",
            ),
            (
                "[parameters.paths]\ntype = \"int\"\nhelp = \"x\"\n",
                "line 3, column 1",
            ),
            (
                "[parameters.paths]\ntype = \"int\"\nhelp = \"x\"\n",
                "unknown field `help`",
            ),
            ("[parameters.paths]\ndefault = 1\n", "missing field `type`"),
            ("[parameters.paths]\ndefault = 1\n", "line 1, column 1"),
        ] {
            let err = expect_err(parse_manifest(text), "invalid_manifest", want);
            assert!(matches!(err, PackageError::Manifest(_)));
        }
    }

    fn param(body: &str) -> String {
        format!("[parameters.p]\n{body}\n")
    }

    #[test]
    fn semantic_errors_name_the_parameter_and_the_problem() {
        let too_many: String = (0..=MAX_PARAMETERS)
            .map(|i| format!("[parameters.p{i}]\ntype = \"bool\"\n"))
            .collect();
        let cases = [
            (
                param("type = \"int\"\ndefault = 1.5"),
                "parameter `p`: default 1.5 is not an int",
            ),
            (
                param("type = \"int\"\ndefault = \"7\""),
                "default \"7\" is not an int",
            ),
            (
                param("type = \"float\"\ndefault = nan"),
                "default nan is not a float",
            ),
            (
                param("type = \"float\"\ndefault = inf"),
                "default inf is not a float",
            ),
            (
                param("type = \"string\"\ndefault = 1979-05-27"),
                "is not a string",
            ),
            (
                param("type = \"bool\"\ndefault = \"yes\""),
                "default \"yes\" is not a bool",
            ),
            (
                param("type = \"int\"\ndefault = 0\nmin = 1"),
                "default 0 is below min 1",
            ),
            (
                param("type = \"float\"\ndefault = 1.5\nmax = 1"),
                "default 1.5 is above max 1",
            ),
            (
                param("type = \"int\"\nmin = 5\nmax = 1"),
                "min 5 is greater than max 1",
            ),
            (param("type = \"int\"\nmin = 0.5"), "min 0.5 is not an int"),
            (
                param("type = \"float\"\nmax = \"high\""),
                "max \"high\" is not a float",
            ),
            (
                param("type = \"int\"\nmax = 9007199254740993"),
                "max 9007199254740993 is too large",
            ),
            (
                param("type = \"string\"\nmin = 1"),
                "`min` and `max` are only allowed on int and float parameters, and this one is string",
            ),
            (
                param("type = \"bool\"\nmax = 1"),
                "only allowed on int and float",
            ),
            (
                param("type = \"int\"\nvalues = [\"a\"]"),
                "`values` is only allowed on enum parameters, and this one is int",
            ),
            (param("type = \"enum\""), "an enum parameter needs `values`"),
            (param("type = \"enum\"\nvalues = []"), "`values` is empty"),
            (
                param("type = \"enum\"\nvalues = [\"a\", \"b\", \"a\"]"),
                "`values` lists \"a\" more than once",
            ),
            (
                param("type = \"enum\"\nvalues = [\"a\", \"b\"]\ndefault = \"c\""),
                "default \"c\" is not one of the values \"a\", \"b\"",
            ),
            (
                param("type = \"enum\"\nvalues = [\"a\"]\ndefault = 1"),
                "default 1 is not an enum value",
            ),
            (
                "[parameters.Paths]\ntype = \"int\"\n".to_owned(),
                "parameter `Paths`: the name must start with a lowercase letter",
            ),
            (
                "[parameters.1st]\ntype = \"int\"\n".to_owned(),
                "parameter `1st`",
            ),
            (
                "[parameters.a-b]\ntype = \"int\"\n".to_owned(),
                "parameter `a-b`",
            ),
            (
                format!("[parameters.{}]\ntype = \"int\"\n", "a".repeat(65)),
                "at most 64 characters",
            ),
            (
                too_many,
                "257 parameters are declared; at most 256 are allowed",
            ),
            (
                "splitter = \"../s.wasm\"\n".to_owned(),
                "`splitter` = \"../s.wasm\" is not a safe relative path: it contains a `..` component",
            ),
            (
                "processor = \"/abs/p.wasm\"\n".to_owned(),
                "`processor` = \"/abs/p.wasm\" is not a safe relative path: it is an absolute path",
            ),
            (
                "processor = \"p.wat\"\n".to_owned(),
                "`processor` = \"p.wat\" must name a `.wasm` file",
            ),
            ("splitter = \"\"\n".to_owned(), "the name is empty"),
        ];
        for (text, want) in cases {
            let err = expect_err(parse_manifest(&text), "invalid_manifest", want);
            assert!(
                err.to_string().starts_with("invalid assembly.toml: "),
                "{err}"
            );
        }
    }

    #[test]
    fn boundary_values_are_accepted() {
        let name = "a".repeat(64);
        let text = format!(
            "[parameters.{name}]\ntype = \"int\"\nmin = -9007199254740992\nmax = 9007199254740992\ndefault = 9007199254740992\n\
             [parameters.z_9]\ntype = \"float\"\nmin = 1\nmax = 1\ndefault = 1\n\
             [parameters.e]\ntype = \"enum\"\nvalues = [\"only\"]\n"
        );
        let m = parse_manifest(&text).expect("valid");
        assert_eq!(m.parameters[&name].max, Some(9_007_199_254_740_992.0));
        assert_eq!(m.parameters["z_9"].default, Some(json!(1.0)));
        let exactly: String = (0..MAX_PARAMETERS)
            .map(|i| format!("[parameters.p{i}]\ntype = \"bool\"\n"))
            .collect();
        assert_eq!(
            parse_manifest(&exactly)
                .expect("256 is allowed")
                .parameters
                .len(),
            256
        );
    }

    #[test]
    fn int_defaults_are_compared_with_bounds_exactly() {
        // 2^53 + 1 rounds to 2^53 as an f64, which would wrongly pass `max = 2^53`.
        let text = param("type = \"int\"\nmax = 9007199254740992\ndefault = 9007199254740993");
        expect_err(
            parse_manifest(&text),
            "invalid_manifest",
            "default 9007199254740993 is above max 9007199254740992",
        );
    }

    /// Property tests of what parses untrusted input; `.ci/run` runs them
    /// again with many more cases.
    mod fuzz {
        use super::*;

        proptest::proptest! {
            /// Any text, and any mutation of a valid manifest, either parses or
            /// is refused with an `invalid_manifest` message; never a panic.
            #[test]
            fn arbitrary_manifests_never_panic(
                text in ".{0,400}",
                at in proptest::prelude::any::<proptest::sample::Index>(),
                insert in "[\\[\\]=\"a-z0-9 .\n-]{0,12}",
            ) {
                for candidate in [text.clone(), {
                    let mut full = FULL.to_string();
                    let i = at.index(full.len());
                    let i = (0..=i).rev().find(|&i| full.is_char_boundary(i)).unwrap_or(0);
                    full.insert_str(i, &insert);
                    full
                }] {
                    if let Err(e) = parse_manifest(&candidate) {
                        proptest::prop_assert_eq!(e.kind(), "invalid_manifest");
                        proptest::prop_assert!(!e.to_string().is_empty());
                    }
                }
            }
        }
    }
}
