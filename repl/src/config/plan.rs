//! Turning a resolved resource into the daemon's JSON-RPC calls, the way drbdadm turns it into
//! drbdsetup commands.
//!
//! `up` follows `adm_up()`'s deferred stages: the resource, then every local disk, then the
//! network — `repl_new_peer` for every connection of this host, `repl_new_path` for every path,
//! and `repl_connect` last (drbdadm runs each stage for all connections before the next one).

use super::error::ConfigError;
use super::model::{Connection, Host, Resource};
use serde_json::{json, Value};
use std::fmt;

/// One JSON-RPC call to make.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RpcCall {
    pub method: String,
    pub params: Value,
}

impl RpcCall {
    pub fn new(method: &str, params: Value) -> RpcCall {
        RpcCall {
            method: method.to_string(),
            params,
        }
    }
}

impl fmt::Display for RpcCall {
    /// `method {"compact":"json"}`, as `oxadm --dry-run` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.params)
    }
}

/// The `on` section of `local_host`; the error lists the hosts there are.
pub fn local_host<'a>(res: &'a Resource, local_host: &str) -> Result<&'a Host, ConfigError> {
    res.host(local_host).ok_or_else(|| {
        ConfigError::at(
            &res.loc,
            format!(
                "resource {} has no 'on {local_host}' section (its hosts: {})",
                res.name,
                res.host_names().join(", ")
            ),
        )
    })
}

fn node_id(res: &Resource, h: &Host) -> Result<u32, ConfigError> {
    h.node_id.ok_or_else(|| {
        ConfigError::at(
            &h.loc,
            format!(
                "resource {}: node-id is missing in 'on {}'",
                res.name, h.name
            ),
        )
    })
}

/// The calls of `oxadm up`.
pub fn plan_up(res: &Resource, local: &str) -> Result<Vec<RpcCall>, ConfigError> {
    let me = local_host(res, local)?;
    let mut calls = vec![RpcCall::new(
        "repl_new_resource",
        json!({ "name": res.name, "node_id": node_id(res, me)? }),
    )];
    calls.extend(plan_attach(res, local, None)?);
    let conns = peers(res, local, None)?;
    for (c, peer) in &conns {
        let net = res.sections.net.merged(&c.net);
        let disk = res.sections.disk.merged(&c.disk);
        calls.push(RpcCall::new(
            "repl_new_peer",
            json!({
                "resource": res.name,
                "peer_node_id": node_id(res, peer)?,
                "peer_name": peer.name,
                "net": net.to_json(),
                "disk": disk.to_json(),
            }),
        ));
    }
    for (c, peer) in &conns {
        for p in &c.paths {
            let addr = |h: &str| {
                p.endpoint(h)
                    .and_then(|e| e.address.as_ref())
                    .map(|a| a.to_string())
                    .ok_or_else(|| {
                        ConfigError::at(&p.loc, format!("path has no address for '{h}'"))
                    })
            };
            calls.push(RpcCall::new(
                "repl_new_path",
                json!({
                    "resource": res.name,
                    "peer_node_id": node_id(res, peer)?,
                    "local_addr": addr(local)?,
                    "remote_addr": addr(&peer.name)?,
                }),
            ));
        }
    }
    for (_, peer) in &conns {
        calls.push(RpcCall::new(
            "repl_connect",
            json!({ "resource": res.name, "peer_node_id": node_id(res, peer)? }),
        ));
    }
    Ok(calls)
}

/// The calls of `oxadm down`.
pub fn plan_down(res: &Resource) -> Vec<RpcCall> {
    vec![RpcCall::new("repl_down", json!({ "resource": res.name }))]
}

/// The connections of `local` (all, or only the one to `peer`) with the peer's host.
pub fn peers<'a>(
    res: &'a Resource,
    local: &str,
    peer: Option<&str>,
) -> Result<Vec<(&'a Connection, &'a Host)>, ConfigError> {
    local_host(res, local)?;
    let mut out = Vec::new();
    for c in &res.connections {
        let Some(name) = c.peer_of(local) else {
            continue;
        };
        if peer.is_some_and(|p| p != name) {
            continue;
        }
        let h = res.host(name).ok_or_else(|| {
            ConfigError::at(&c.loc, format!("connection names unknown host '{name}'"))
        })?;
        out.push((c, h));
    }
    if let (Some(p), true) = (peer, out.is_empty()) {
        let names: Vec<&str> = res
            .connections_of(local)
            .filter_map(|c| c.peer_of(local))
            .collect();
        return Err(ConfigError::at(
            &res.loc,
            format!(
                "resource {}: '{local}' has no connection to '{p}' (its peers: {})",
                res.name,
                names.join(", ")
            ),
        ));
    }
    Ok(out)
}

/// Local volumes (all, or only `volume`), checked to exist.
fn volumes<'a>(
    res: &'a Resource,
    local: &str,
    volume: Option<u32>,
) -> Result<Vec<&'a super::model::Volume>, ConfigError> {
    let me = local_host(res, local)?;
    let vols: Vec<_> = me
        .volumes
        .iter()
        .filter(|v| volume.is_none_or(|n| v.number == n))
        .collect();
    if let (Some(n), true) = (volume, vols.is_empty()) {
        return Err(ConfigError::at(
            &me.loc,
            format!("resource {}: 'on {local}' has no volume {n}", res.name),
        ));
    }
    Ok(vols)
}

/// `repl_attach` for every local volume with a disk (or only `volume`).
pub fn plan_attach(
    res: &Resource,
    local: &str,
    volume: Option<u32>,
) -> Result<Vec<RpcCall>, ConfigError> {
    let mut calls = Vec::new();
    for v in volumes(res, local, volume)? {
        let Some(disk) = v.disk.as_ref().and_then(|d| d.bdev()) else {
            continue;
        };
        let Some(dev) = &v.device else { continue };
        calls.push(RpcCall::new(
            "repl_attach",
            json!({
                "resource": res.name,
                "volume": v.number,
                "device": dev.name,
                "disk": disk,
                "meta_disk": "internal",
            }),
        ));
    }
    Ok(calls)
}

/// `repl_detach` for every local volume with a disk (or only `volume`).
pub fn plan_detach(
    res: &Resource,
    local: &str,
    volume: Option<u32>,
) -> Result<Vec<RpcCall>, ConfigError> {
    Ok(volumes(res, local, volume)?
        .into_iter()
        .filter(|v| v.disk.as_ref().and_then(|d| d.bdev()).is_some())
        .map(|v| {
            RpcCall::new(
                "repl_detach",
                json!({ "resource": res.name, "volume": v.number }),
            )
        })
        .collect())
}

/// `repl_create_md` for every local volume with a disk (or only `volume`).
pub fn plan_create_md(
    res: &Resource,
    local: &str,
    volume: Option<u32>,
) -> Result<Vec<RpcCall>, ConfigError> {
    Ok(volumes(res, local, volume)?
        .into_iter()
        .filter(|v| v.disk.as_ref().and_then(|d| d.bdev()).is_some())
        .map(|v| {
            RpcCall::new(
                "repl_create_md",
                json!({ "resource": res.name, "volume": v.number }),
            )
        })
        .collect())
}

fn per_peer(
    res: &Resource,
    local: &str,
    peer: Option<&str>,
    method: &str,
    extra: &[(&str, Value)],
) -> Result<Vec<RpcCall>, ConfigError> {
    let mut calls = Vec::new();
    for (_, h) in peers(res, local, peer)? {
        let mut params = json!({ "resource": res.name, "peer_node_id": node_id(res, h)? });
        for (k, v) in extra {
            params[*k] = v.clone();
        }
        calls.push(RpcCall::new(method, params));
    }
    Ok(calls)
}

/// `repl_connect` to every peer (or only `peer`).
pub fn plan_connect(
    res: &Resource,
    local: &str,
    peer: Option<&str>,
    discard_my_data: bool,
) -> Result<Vec<RpcCall>, ConfigError> {
    per_peer(
        res,
        local,
        peer,
        "repl_connect",
        &[("discard_my_data", Value::Bool(discard_my_data))],
    )
}

/// `repl_disconnect` from every peer (or only `peer`).
pub fn plan_disconnect(
    res: &Resource,
    local: &str,
    peer: Option<&str>,
) -> Result<Vec<RpcCall>, ConfigError> {
    per_peer(res, local, peer, "repl_disconnect", &[])
}

/// `repl_verify` against every peer (or only `peer`).
pub fn plan_verify(
    res: &Resource,
    local: &str,
    peer: Option<&str>,
) -> Result<Vec<RpcCall>, ConfigError> {
    per_peer(res, local, peer, "repl_verify", &[])
}

pub fn plan_primary(res: &Resource, force: bool) -> Vec<RpcCall> {
    vec![RpcCall::new(
        "repl_primary",
        json!({ "resource": res.name, "force": force }),
    )]
}

pub fn plan_secondary(res: &Resource) -> Vec<RpcCall> {
    vec![RpcCall::new(
        "repl_secondary",
        json!({ "resource": res.name }),
    )]
}

pub fn plan_new_current_uuid(res: &Resource, clear_bitmap: bool) -> Vec<RpcCall> {
    vec![RpcCall::new(
        "repl_new_current_uuid",
        json!({ "resource": res.name, "clear_bitmap": clear_bitmap }),
    )]
}

/// `repl_status` for one resource, or all of them.
pub fn plan_status(resource: Option<&str>) -> RpcCall {
    match resource {
        Some(r) => RpcCall::new("repl_status", json!({ "resource": r })),
        None => RpcCall::new("repl_status", json!({})),
    }
}
