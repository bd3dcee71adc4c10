//! RPC methods: the table, the handlers, their error type and params decoding.
//!
//! A handler is a plain function `fn(&Context, Option<Value>) -> RpcResult`: it gets the raw
//! `params` (absent or a JSON object/array) and returns the `result` value or an [`RpcError`].
//! Handlers never see the JSON-RPC envelope, so the same function serves the socket, config
//! replay and tests alike.

pub mod bdev;
mod bdev_json;
pub mod error;
pub mod framework;
pub mod methods;
pub mod nvmf;
pub mod params;
pub mod raid;
pub mod repl;

pub use error::RpcError;
pub use methods::{find, Method, METHODS};

use crate::context::Context;
use serde_json::Value;

pub type RpcResult = Result<Value, RpcError>;

/// A method implementation: params in, result out.
pub type Handler = fn(&Context, Option<Value>) -> RpcResult;

/// Runs `method` with `params`: the single entry point for the server and config replay.
pub fn call(ctx: &Context, method: &str, params: Option<Value>) -> RpcResult {
    let result = match find(method) {
        Some(m) => (m.handler)(ctx, params),
        None => Err(RpcError::method_not_found(method)),
    };
    // A new bdev may carry a RAID superblock: let arrays assemble themselves from their
    // members, as md does when a disk appears (SPDK's examine). Config replay comes here too.
    if result.is_ok() && creates_bdevs(method) {
        oxstor_raid::rpc::examine_all();
    }
    result
}

fn creates_bdevs(method: &str) -> bool {
    method.starts_with("bdev_") && method.ends_with("_create")
        || method == "bdev_nvme_attach_controller"
}
