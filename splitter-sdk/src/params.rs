use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;

/// The parameters of a job or a task: a JSON object.
///
/// Job parameters have already been checked by the host against the types the
/// application's `assembly.toml` declares, with defaults applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Map<String, Value>);

impl Params {
    /// Wraps a JSON object, e.g. to call a splitter or processor in a native
    /// unit test.
    pub fn new(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// Parses the JSON object the host passes.
    pub(crate) fn parse(json: &str) -> Result<Self, Error> {
        serde_json::from_str(json)
            .map(Self)
            .map_err(|e| Error::new(format!("parameters are not a JSON object: {e}")))
    }

    /// The parameter `name` converted to `T`.
    ///
    /// A missing parameter is read as JSON `null`, so it is an error unless
    /// `T` accepts `null` (an `Option`).
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T, Error> {
        match self.0.get(name) {
            Some(value) => {
                T::deserialize(value).map_err(|e| Error::new(format!("parameter `{name}`: {e}")))
            }
            None => T::deserialize(&Value::Null)
                .map_err(|_| Error::new(format!("parameter `{name}` is missing"))),
        }
    }

    /// The parameter `name` converted to `T`, or `default` when it is missing
    /// or `null`.
    pub fn get_or<T: DeserializeOwned>(&self, name: &str, default: T) -> Result<T, Error> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(_) => self.get(name),
        }
    }

    /// All the parameters converted to `T`, typically a struct deriving
    /// `serde::Deserialize` with one field per parameter.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(&self.0).map_err(|e| Error::new(format!("parameters: {e}")))
    }

    /// The underlying JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl From<Map<String, Value>> for Params {
    fn from(map: Map<String, Value>) -> Self {
        Self(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    fn params(value: Value) -> Params {
        match value {
            Value::Object(map) => Params::new(map),
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn get_reports_missing_and_mistyped_parameters() {
        let p = params(json!({"paths": 10, "name": "x"}));
        assert_eq!(p.get::<u64>("paths"), Ok(10));
        assert_eq!(p.get::<Option<u64>>("absent"), Ok(None));
        assert_eq!(
            p.get::<u64>("absent").unwrap_err().message(),
            "parameter `absent` is missing"
        );
        let wrong = p.get::<u64>("name").unwrap_err();
        assert!(
            wrong
                .message()
                .starts_with("parameter `name`: invalid type"),
            "{wrong}"
        );
        assert_eq!(p.get_or("absent", 7u64), Ok(7));
        assert_eq!(p.get_or("paths", 7u64), Ok(10));
    }

    #[test]
    fn deserialize_reads_the_whole_object() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Settings {
            paths: u64,
        }
        let p = params(json!({"paths": 3}));
        assert_eq!(p.deserialize::<Settings>(), Ok(Settings { paths: 3 }));
        assert!(Params::parse("[1]").is_err());
    }
}
