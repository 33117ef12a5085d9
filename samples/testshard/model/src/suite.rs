use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// The parameters of a `testshard` job, as its `assembly.toml` declares them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestshardParams {
    /// The suite file: the job input of that name if the job has one, else
    /// the file of that path in the application image.
    pub suite: String,
    /// How many shards (tasks) run the cases; fewer when there are fewer cases.
    pub shards: u32,
}

impl TestshardParams {
    /// The most shards a job may ask for.
    pub const MAX_SHARDS: u32 = 1000;

    /// Checks the ranges, with messages for the job's user.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=Self::MAX_SHARDS).contains(&self.shards) {
            return Err(format!(
                "`shards` must be between 1 and {}, not {}",
                Self::MAX_SHARDS,
                self.shards
            ));
        }
        if self.suite.trim().is_empty() {
            return Err("`suite` must name a suite file".into());
        }
        Ok(())
    }
}

/// One test case: run `program` with `args`; it passes when the program
/// exits with `expected_exit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// The case's name, unique in the suite.
    pub name: String,
    /// The WASI command program, under `/app` (absolute or relative to it).
    pub program: String,
    /// Its arguments, without the program name.
    #[serde(default)]
    pub args: Vec<String>,
    /// The exit status that means success (default 0).
    #[serde(default)]
    pub expected_exit: i32,
    /// How long the case is expected to take, in milliseconds.
    pub estimated_ms: u64,
}

/// A test suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// The suite's name (default `suite`).
    #[serde(default = "default_name")]
    pub name: String,
    /// The cases, in the order the report lists them.
    pub cases: Vec<TestCase>,
}

fn default_name() -> String {
    "suite".into()
}

/// Parses a suite from JSON, or from TOML when `file_name` ends in `.toml`
/// (`[[cases]]` tables), and checks it: at least one case, unique non-empty
/// names, a program for every case.
pub fn parse_suite(file_name: &str, text: &str) -> Result<Suite, String> {
    let suite: Suite = if file_name.ends_with(".toml") {
        toml::from_str(text).map_err(|e| format!("`{file_name}` is not a valid suite: {e}"))?
    } else {
        serde_json::from_str(text)
            .map_err(|e| format!("`{file_name}` is not a valid suite: {e}"))?
    };
    if suite.cases.is_empty() {
        return Err(format!("`{file_name}` has no test case"));
    }
    let mut names = HashSet::new();
    for (i, case) in suite.cases.iter().enumerate() {
        if case.name.trim().is_empty() {
            return Err(format!("`{file_name}`: case {} has no name", i + 1));
        }
        if !names.insert(case.name.as_str()) {
            return Err(format!(
                "`{file_name}`: two cases are named `{}`",
                case.name
            ));
        }
        if case.program.trim().is_empty() {
            return Err(format!(
                "`{file_name}`: case `{}` has no program",
                case.name
            ));
        }
    }
    Ok(suite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_parse_from_json_and_toml() {
        let json = r#"{"name": "s", "cases": [
            {"name": "a", "program": "bin/checks.wasm", "args": ["pass"], "estimated_ms": 5},
            {"name": "b", "program": "/app/bin/checks.wasm", "args": ["exit", "1"], "expected_exit": 1, "estimated_ms": 7}
        ]}"#;
        let suite = parse_suite("suite.json", json).unwrap();
        assert_eq!(suite.cases.len(), 2);
        assert_eq!(suite.cases[1].expected_exit, 1);
        assert_eq!(suite.cases[0].expected_exit, 0);

        let toml = "name = \"s\"\n[[cases]]\nname = \"a\"\nprogram = \"bin/checks.wasm\"\nargs = [\"pass\"]\nestimated_ms = 5\n\n[[cases]]\nname = \"b\"\nprogram = \"/app/bin/checks.wasm\"\nargs = [\"exit\", \"1\"]\nexpected_exit = 1\nestimated_ms = 7\n";
        assert_eq!(parse_suite("suite.toml", toml).unwrap(), suite);
    }

    #[test]
    fn bad_suites_are_refused_with_a_reason() {
        let err = |text: &str| parse_suite("s.json", text).unwrap_err();
        assert!(err("not json").contains("`s.json` is not a valid suite"));
        assert!(err(r#"{"cases": []}"#).contains("no test case"));
        let twice = r#"{"cases": [{"name": "a", "program": "p", "estimated_ms": 1},
                                  {"name": "a", "program": "p", "estimated_ms": 1}]}"#;
        assert!(err(twice).contains("two cases are named `a`"));
        assert!(err(r#"{"cases": [{"name": "a", "program": "p"}]}"#).contains("estimated_ms"));
        let params = TestshardParams {
            suite: "s.json".into(),
            shards: 0,
        };
        assert!(params.validate().unwrap_err().contains("`shards`"));
    }
}
