//! The JSON-RPC 2.0 envelope: validate a request, dispatch it, build the response.
//!
//! Transport-free: the server hands in each JSON value read from a socket and writes back
//! whatever comes out. Notifications (no `id`) run but get no response; batches (arrays) are
//! supported and answered with an array of the non-notification responses.

use crate::context::Context;
use crate::rpc::{self, RpcError};
use serde_json::{json, Map, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub fn response(id: Value, outcome: Result<Value, RpcError>) -> Value {
    match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(e) => json!({ "jsonrpc": "2.0", "id": id, "error": e.to_json() }),
    }
}

/// Handles one JSON value from the wire: a request, a notification or a batch.
pub fn handle_message(ctx: &Context, msg: Value) -> Option<Value> {
    match msg {
        Value::Array(items) if items.is_empty() => Some(response(
            Value::Null,
            Err(RpcError::invalid_request("empty batch")),
        )),
        Value::Array(items) => {
            let out: Vec<Value> = items
                .into_iter()
                .filter_map(|item| handle_request(ctx, item))
                .collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        other => handle_request(ctx, other),
    }
}

/// The checked parts of a request object.
struct Request {
    /// None for a notification.
    id: Option<Value>,
    method: String,
    params: Option<Value>,
}

fn parse_request(obj: Map<String, Value>) -> Result<Request, (Value, RpcError)> {
    let id = obj.get("id").cloned();
    let id_ok = matches!(
        id,
        None | Some(Value::Null | Value::String(_) | Value::Number(_))
    );
    if !id_ok {
        return Err((
            Value::Null,
            RpcError::invalid_request("id must be a string, a number or null"),
        ));
    }
    let reply_id = id.clone().unwrap_or(Value::Null);
    let invalid = |why: &str| (reply_id.clone(), RpcError::invalid_request(why));
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let method = match obj.get("method") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err(invalid("\"method\" must be a string")),
    };
    let params = match obj.get("params") {
        None | Some(Value::Null) => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p.clone()),
        Some(_) => return Err(invalid("\"params\" must be an object or an array")),
    };
    Ok(Request { id, method, params })
}

fn handle_request(ctx: &Context, msg: Value) -> Option<Value> {
    let Value::Object(obj) = msg else {
        return Some(response(
            Value::Null,
            Err(RpcError::invalid_request("a request must be a JSON object")),
        ));
    };
    // A malformed request is answered even without an id: the sender cannot have meant it
    // as a valid notification, and silence would leave it guessing.
    let req = match parse_request(obj) {
        Ok(r) => r,
        Err((id, e)) => return Some(response(id, Err(e))),
    };
    tracing::debug!("rpc: {}", req.method);
    // A bug in one handler must cost that request, not the connection or the daemon.
    let outcome = catch_unwind(AssertUnwindSafe(|| rpc::call(ctx, &req.method, req.params)))
        .unwrap_or_else(|_| {
            Err(RpcError::new(
                rpc::error::INTERNAL_ERROR,
                format!("internal error while running {}", req.method),
            ))
        });
    if let Err(e) = &outcome {
        tracing::info!("rpc {} failed: {e}", req.method);
    }
    req.id.map(|id| response(id, outcome))
}
