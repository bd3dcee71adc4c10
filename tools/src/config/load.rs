//! Replaying an SPDK JSON config through the method table at start-up.
//!
//! Loading stops at the first failing call: a target that came up with half its config
//! would serve the wrong thing, so the daemon refuses to start instead and says which call
//! failed.

use super::ignored::is_ignored;
use crate::context::Context;
use crate::rpc::{self, RpcError};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {}: not valid JSON: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("config {}: {what}", path.display())]
    Shape { path: PathBuf, what: String },
    #[error(
        "config {}: subsystem '{subsystem}', call #{index} ({method}) failed: error {}: {}",
        path.display(), error.code, error.short_message()
    )]
    Call {
        path: PathBuf,
        subsystem: String,
        /// 1-based position of the call inside its subsystem's list.
        index: usize,
        method: String,
        error: RpcError,
    },
}

/// Reads `path` and replays it; returns how many calls ran.
pub fn load_file(ctx: &Context, path: &Path) -> Result<usize, ConfigError> {
    let text = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: Value = serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    apply(ctx, &doc, path)
}

/// Replays an already parsed config document; `path` is only used in messages.
pub fn apply(ctx: &Context, doc: &Value, path: &Path) -> Result<usize, ConfigError> {
    let shape = |what: String| ConfigError::Shape {
        path: path.to_path_buf(),
        what,
    };
    let subsystems = doc
        .get("subsystems")
        .and_then(Value::as_array)
        .ok_or_else(|| shape("expected an object with a \"subsystems\" array".into()))?;
    let mut ran = 0;
    for (n, sub) in subsystems.iter().enumerate() {
        let name = sub
            .get("subsystem")
            .and_then(Value::as_str)
            .ok_or_else(|| shape(format!("subsystems[{n}] has no \"subsystem\" name")))?;
        let calls = match sub.get("config") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(calls)) => calls,
            Some(_) => {
                return Err(shape(format!(
                    "subsystem '{name}': \"config\" must be an array"
                )))
            }
        };
        for (i, call) in calls.iter().enumerate() {
            let method = call.get("method").and_then(Value::as_str).ok_or_else(|| {
                shape(format!(
                    "subsystem '{name}', call #{}: no \"method\" string",
                    i + 1
                ))
            })?;
            let params = call.get("params").cloned();
            let fail = |error: RpcError| ConfigError::Call {
                path: path.to_path_buf(),
                subsystem: name.to_string(),
                index: i + 1,
                method: method.to_string(),
                error,
            };
            if rpc::find(method).is_none() {
                if is_ignored(method) {
                    tracing::debug!("config: ignoring SPDK option call {method}");
                    continue;
                }
                return Err(fail(RpcError::method_not_found(method)));
            }
            if !matches!(params, None | Some(Value::Null) | Some(Value::Object(_))) {
                return Err(fail(RpcError::invalid_params(
                    "params must be a JSON object",
                )));
            }
            rpc::call(ctx, method, params).map_err(fail)?;
            tracing::debug!("config: {name}: {method} done");
            ran += 1;
        }
    }
    Ok(ran)
}
