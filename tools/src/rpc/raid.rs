//! bdev_raid_* methods: thin adapters onto `oxstor_raid::rpc`, which speaks SPDK's parameters.

use super::params::decode;
use super::RpcResult;
use crate::context::Context;
use oxstor_raid::rpc as raid;
use serde_json::Value;

pub fn create(_: &Context, p: Option<Value>) -> RpcResult {
    raid::create(decode(p)?)?;
    // SPDK answers true; the array is then visible through bdev_get_bdevs.
    Ok(Value::Bool(true))
}

pub fn delete(_: &Context, p: Option<Value>) -> RpcResult {
    raid::delete(decode(p)?)?;
    Ok(Value::Bool(true))
}

pub fn get_bdevs(_: &Context, p: Option<Value>) -> RpcResult {
    Ok(raid::get_bdevs(decode(p)?)?)
}

pub fn add_base_bdev(_: &Context, p: Option<Value>) -> RpcResult {
    raid::add_base_bdev(decode(p)?)?;
    Ok(Value::Bool(true))
}

pub fn remove_base_bdev(_: &Context, p: Option<Value>) -> RpcResult {
    raid::remove_base_bdev(decode(p)?)?;
    Ok(Value::Bool(true))
}

/// `bdev_raid_set_options`: rebuild window size and bandwidth cap, for running and future
/// rebuilds.
pub fn set_options(_: &Context, p: Option<Value>) -> RpcResult {
    raid::set_options(decode(p)?)?;
    Ok(Value::Bool(true))
}

/// `bdev_raid_scrub`: md's check/repair; progress and `mismatch_cnt` under `scrub` in
/// bdev_raid_get_bdevs.
pub fn scrub(_: &Context, p: Option<Value>) -> RpcResult {
    Ok(raid::scrub(decode(p)?)?)
}
