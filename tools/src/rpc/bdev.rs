//! bdev_* methods: thin adapters from SPDK's parameters onto `oxstor_bdev`'s modules.
//!
//! The module functions already speak SPDK's parameter structs and errno-carrying errors, so
//! each handler is decode → call → shape the answer. Creates answer the new bdev's name and
//! deletes answer `true`, as SPDK does.

use super::bdev_json;
use super::params::{decode, NameParam, NoParams};
use super::{RpcError, RpcResult};
use crate::context::Context;
use oxstor_bdev::{delay, error, malloc, null, registry, uring, BdevEntry};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn created(name: String) -> RpcResult {
    Ok(Value::String(name))
}

pub fn malloc_create(_: &Context, p: Option<Value>) -> RpcResult {
    created(malloc::create(decode(p)?)?)
}

pub fn malloc_delete(_: &Context, p: Option<Value>) -> RpcResult {
    malloc::delete(&decode::<NameParam>(p)?.name)?;
    Ok(Value::Bool(true))
}

pub fn null_create(_: &Context, p: Option<Value>) -> RpcResult {
    created(null::create(decode(p)?)?)
}

pub fn null_delete(_: &Context, p: Option<Value>) -> RpcResult {
    null::delete(&decode::<NameParam>(p)?.name)?;
    Ok(Value::Bool(true))
}

pub fn uring_create(_: &Context, p: Option<Value>) -> RpcResult {
    created(uring::create(decode(p)?)?)
}

pub fn uring_delete(_: &Context, p: Option<Value>) -> RpcResult {
    uring::delete(&decode::<NameParam>(p)?.name)?;
    Ok(Value::Bool(true))
}

pub fn delay_create(_: &Context, p: Option<Value>) -> RpcResult {
    created(delay::create(decode(p)?)?)
}

pub fn delay_delete(_: &Context, p: Option<Value>) -> RpcResult {
    delay::delete(&decode::<NameParam>(p)?.name)?;
    Ok(Value::Bool(true))
}

pub fn error_create(_: &Context, p: Option<Value>) -> RpcResult {
    created(error::create(decode(p)?)?)
}

pub fn error_delete(_: &Context, p: Option<Value>) -> RpcResult {
    error::delete(&decode::<NameParam>(p)?.name)?;
    Ok(Value::Bool(true))
}

pub fn error_inject_error(_: &Context, p: Option<Value>) -> RpcResult {
    error::inject(&decode(p)?)?;
    Ok(Value::Bool(true))
}

/// Examination (of partition tables, RAID superblocks...) is synchronous in oxstor, so there
/// is never anything to wait for; SPDK configs call this, so it must succeed.
pub fn wait_for_examine(_: &Context, p: Option<Value>) -> RpcResult {
    decode::<NoParams>(p)?;
    Ok(Value::Bool(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBdevsParams {
    #[serde(default)]
    name: Option<String>,
    /// Milliseconds to wait for `name` to appear (SPDK's semantics).
    #[serde(default)]
    timeout: Option<u64>,
}

/// Upper bound on `timeout`, so one call cannot park a connection thread for hours.
const MAX_WAIT: Duration = Duration::from_secs(600);

fn find_bdev(name: &str) -> Option<Arc<BdevEntry>> {
    // SPDK accepts a bdev's UUID wherever it accepts its name (the UUID is an alias).
    registry::list()
        .into_iter()
        .find(|e| e.name() == name || e.bdev.uuid().eq_ignore_ascii_case(name))
}

fn wait_for_bdev(name: &str, timeout_ms: u64) -> Result<Arc<BdevEntry>, RpcError> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms).min(MAX_WAIT);
    loop {
        if let Some(e) = find_bdev(name) {
            return Ok(e);
        }
        if Instant::now() >= deadline {
            return Err(oxstor_bdev::BdevError::NotFound(name.to_string()).into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn get_bdevs(_: &Context, p: Option<Value>) -> RpcResult {
    let p: GetBdevsParams = decode(p)?;
    let entries = match &p.name {
        Some(name) => vec![wait_for_bdev(name, p.timeout.unwrap_or(0))?],
        None => registry::list(),
    };
    Ok(Value::Array(
        entries.iter().map(bdev_json::describe).collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetIostatParams {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    per_channel: Option<bool>,
}

pub fn get_iostat(_: &Context, p: Option<Value>) -> RpcResult {
    let p: GetIostatParams = decode(p)?;
    if p.per_channel == Some(true) {
        return Err(RpcError::errno(
            libc::EOPNOTSUPP,
            "per_channel statistics are not supported",
        ));
    }
    let entries = match &p.name {
        Some(name) => {
            vec![find_bdev(name).ok_or_else(|| oxstor_bdev::BdevError::NotFound(name.clone()))?]
        }
        None => registry::list(),
    };
    let bdevs: Vec<Value> = entries
        .iter()
        .map(|e| registry::iostat(e).to_spdk_json(e.name()))
        .collect();
    Ok(json!({
        "tick_rate": bdev_json::TICK_RATE,
        "ticks": oxstor_reactor::clock::now_ns(),
        "bdevs": bdevs,
    }))
}
