//! nvmf_* methods: thin adapters onto the NVMe-oF/TCP target in `oxstor_nvme::target::rpc`,
//! which already speaks SPDK's parameter structs.

use super::params::{decode, NoParams};
use super::{RpcError, RpcResult};
use crate::context::Context;
use oxstor_nvme::target::rpc::{self as nvmf, NvmfError};
use serde_json::{json, Value};

impl From<NvmfError> for RpcError {
    fn from(e: NvmfError) -> Self {
        RpcError::new(e.code, e.message)
    }
}

fn done(r: Result<bool, NvmfError>) -> RpcResult {
    Ok(Value::Bool(r?))
}

pub fn create_transport(_: &Context, p: Option<Value>) -> RpcResult {
    done(nvmf::create_transport(decode(p)?))
}

pub fn get_transports(_: &Context, p: Option<Value>) -> RpcResult {
    if p.is_some() {
        let _: serde_json::Map<String, Value> = decode(p)?;
    }
    Ok(nvmf::get_transports())
}

pub fn create_subsystem(_: &Context, p: Option<Value>) -> RpcResult {
    done(nvmf::create_subsystem(decode(p)?))
}

pub fn delete_subsystem(_: &Context, p: Option<Value>) -> RpcResult {
    done(nvmf::delete_subsystem(decode(p)?))
}

pub fn subsystem_add_ns(_: &Context, p: Option<Value>) -> RpcResult {
    Ok(json!(nvmf::add_ns(decode(p)?)?))
}

pub fn subsystem_remove_ns(_: &Context, p: Option<Value>) -> RpcResult {
    done(nvmf::remove_ns(decode(p)?))
}

pub fn subsystem_add_listener(_: &Context, p: Option<Value>) -> RpcResult {
    done(nvmf::add_listener(decode(p)?))
}

pub fn subsystem_remove_listener(_: &Context, p: Option<Value>) -> RpcResult {
    done(nvmf::remove_listener(decode(p)?))
}

pub fn subsystem_add_host(_: &Context, p: Option<Value>) -> RpcResult {
    done(nvmf::add_host(decode(p)?))
}

pub fn subsystem_remove_host(_: &Context, p: Option<Value>) -> RpcResult {
    done(nvmf::remove_host(decode(p)?))
}

pub fn subsystem_allow_any_host(_: &Context, p: Option<Value>) -> RpcResult {
    done(nvmf::allow_any_host(decode(p)?))
}

pub fn get_subsystems(_: &Context, p: Option<Value>) -> RpcResult {
    if p.is_some() {
        let _: serde_json::Map<String, Value> = decode(p)?;
    }
    Ok(nvmf::get_subsystems())
}

pub fn get_stats(_: &Context, p: Option<Value>) -> RpcResult {
    let _: NoParams = decode(p.or(Some(json!({}))))?;
    Ok(nvmf::get_stats())
}

/// save_config's "nvmf" subsystem.
pub fn config_calls() -> Vec<Value> {
    nvmf::config_calls()
}

/// `bdev_nvme_attach_controller`: a remote NVMe/TCP namespace becomes local bdevs
/// (`<name>n<nsid>`); answers their names as SPDK does.
pub fn nvme_attach_controller(_: &Context, p: Option<Value>) -> RpcResult {
    let names = oxstor_nvme::host::attach(decode(p)?)?;
    Ok(json!(names))
}

pub fn nvme_detach_controller(_: &Context, p: Option<Value>) -> RpcResult {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Detach {
        name: String,
        #[serde(default)]
        trtype: Option<String>,
        #[serde(default)]
        traddr: Option<String>,
        #[serde(default)]
        adrfam: Option<String>,
        #[serde(default)]
        trsvcid: Option<String>,
        #[serde(default)]
        subnqn: Option<String>,
    }
    let d: Detach = decode(p)?;
    let _ = (&d.trtype, &d.traddr, &d.adrfam, &d.trsvcid, &d.subnqn);
    oxstor_nvme::host::detach(&d.name)?;
    Ok(Value::Bool(true))
}

pub fn nvme_get_controllers(_: &Context, p: Option<Value>) -> RpcResult {
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Get {
        #[serde(default)]
        name: Option<String>,
    }
    let g: Get = match p {
        Some(p) => decode(Some(p))?,
        None => Get::default(),
    };
    if let Some(n) = &g.name {
        if !oxstor_nvme::host::controller_names().contains(n) {
            return Err(RpcError::errno(
                libc::ENODEV,
                format!("Controller {n} not found"),
            ));
        }
    }
    Ok(oxstor_nvme::host::get_controllers(g.name.as_deref()))
}
