//! JSON-RPC errors with SPDK's codes: the protocol's own (-32xxx) and `-errno` for operations.

use oxstor_bdev::BdevError;
use serde_json::{json, Value};

pub const PARSE_ERROR: i32 = -32700;
pub const INVALID_REQUEST: i32 = -32600;
pub const METHOD_NOT_FOUND: i32 = -32601;
pub const INVALID_PARAMS: i32 = -32602;
pub const INTERNAL_ERROR: i32 = -32603;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error {code}: {}", self.short_message())]
pub struct RpcError {
    pub code: i32,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    pub fn parse_error(why: impl std::fmt::Display) -> RpcError {
        RpcError::new(PARSE_ERROR, format!("Parse error: {why}"))
    }

    pub fn invalid_request(why: impl std::fmt::Display) -> RpcError {
        RpcError::new(INVALID_REQUEST, format!("Invalid request: {why}"))
    }

    pub fn method_not_found(method: &str) -> RpcError {
        RpcError::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))
    }

    pub fn invalid_params(why: impl std::fmt::Display) -> RpcError {
        RpcError::new(INVALID_PARAMS, format!("Invalid parameters: {why}"))
    }

    /// An operation failure reported SPDK's way: the code is `-errno`.
    pub fn errno(errno: i32, message: impl Into<String>) -> RpcError {
        RpcError::new(-errno.abs(), message)
    }

    /// The `error` member of a JSON-RPC response.
    pub fn to_json(&self) -> Value {
        json!({ "code": self.code, "message": self.short_message() })
    }

    /// The message, cut to [`MAX_MESSAGE_BYTES`]: errors often quote the offending input,
    /// and echoing a multi-MiB parameter back (or into the log) helps nobody.
    pub fn short_message(&self) -> std::borrow::Cow<'_, str> {
        if self.message.len() <= MAX_MESSAGE_BYTES {
            return self.message.as_str().into();
        }
        let mut end = MAX_MESSAGE_BYTES;
        while !self.message.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &self.message[..end], self.message.len()).into()
    }
}

pub const MAX_MESSAGE_BYTES: usize = 1024;

impl From<BdevError> for RpcError {
    fn from(e: BdevError) -> RpcError {
        RpcError::errno(e.errno(), e.to_string())
    }
}
