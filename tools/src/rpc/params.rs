//! Decoding `params` into a handler's serde struct.
//!
//! SPDK methods take named parameters only, so a positional array is refused rather than
//! letting serde map it onto struct fields by position. Absent params decode as `{}`, which
//! lets serde name the first missing required field ("missing field `num_blocks`").

use super::RpcError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

pub fn decode<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    let value = match params {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(RpcError::invalid_params("params must be a JSON object")),
    };
    serde_json::from_value(value).map_err(RpcError::invalid_params)
}

/// For methods that take no parameters: `{}` or nothing; anything else is an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// The common `{"name": ...}` parameter of delete methods.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameParam {
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        num_blocks: u64,
    }

    #[test]
    fn missing_params_name_the_field() {
        let e = decode::<P>(None).unwrap_err();
        assert_eq!(e.code, super::super::error::INVALID_PARAMS);
        assert!(
            e.message.contains("missing field `num_blocks`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn arrays_and_unknown_fields_are_refused() {
        assert!(decode::<P>(Some(json!([1]))).is_err());
        let e = decode::<P>(Some(json!({"num_blocks": 1, "x": 2}))).unwrap_err();
        assert!(e.message.contains("unknown field `x`"), "{}", e.message);
        assert!(decode::<NoParams>(Some(json!({}))).is_ok());
        assert!(decode::<NoParams>(Some(json!({"a": 1}))).is_err());
    }
}
