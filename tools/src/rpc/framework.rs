//! Framework methods: version, method listing, reactor statistics, config dump, shutdown.

use super::bdev_json::TICK_RATE;
use super::params::{decode, NoParams};
use super::{RpcError, RpcResult, METHODS};
use crate::context::Context;
use serde::Deserialize;
use serde_json::{json, Value};

pub fn get_version(_: &Context, p: Option<Value>) -> RpcResult {
    decode::<NoParams>(p)?;
    Ok(json!({
        "version": "oxstor v0.1.0",
        "fields": { "major": 0, "minor": 1, "patch": 0, "suffix": "" },
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetMethodsParams {
    // SPDK's flags; every oxstor method is callable at runtime and there are no aliases,
    // so both are accepted and change nothing.
    #[serde(default)]
    #[allow(dead_code)]
    current: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    include_aliases: Option<bool>,
}

pub fn get_methods(_: &Context, p: Option<Value>) -> RpcResult {
    decode::<GetMethodsParams>(p)?;
    Ok(Value::Array(
        METHODS.iter().map(|m| json!(m.name)).collect(),
    ))
}

fn poller_json(id: u64, name: &str, period_ns: u64) -> Value {
    json!({ "name": name, "id": id, "state": "waiting", "period_ticks": period_ns })
}

/// SPDK's shape, one lightweight thread per reactor (oxstor runs no other kind).
pub fn get_reactors(ctx: &Context, p: Option<Value>) -> RpcResult {
    decode::<NoParams>(p)?;
    let mut reactors = Vec::new();
    for s in ctx.runtime.stats() {
        // Pollers live in the reactor's thread-local state: ask the reactor itself.
        let pollers = ctx
            .runtime
            .run_on(s.index, oxstor_reactor::reactor::poller_names);
        let (timed, active): (Vec<_>, Vec<_>) = pollers.into_iter().partition(|p| p.2 > 0);
        let cpumask = if s.cpu < 128 {
            format!("0x{:x}", 1u128 << s.cpu)
        } else {
            format!("[{}]", s.cpu)
        };
        reactors.push(json!({
            "lcore": s.cpu,
            "busy": s.busy_ns,
            "idle": s.idle_ns,
            "in_interrupt": false,
            "irq": 0,
            "sys": 0,
            "usr": 0,
            "lw_threads": [{
                "name": format!("reactor_{}", s.cpu),
                "id": s.index,
                "cpumask": cpumask,
                "elapsed": s.busy_ns + s.idle_ns,
                "active_pollers": active.iter().map(|p| poller_json(p.0, p.1, p.2)).collect::<Vec<_>>(),
                "timed_pollers": timed.iter().map(|p| poller_json(p.0, p.1, p.2)).collect::<Vec<_>>(),
            }],
        }));
    }
    Ok(json!({ "tick_rate": TICK_RATE, "reactors": reactors }))
}

pub fn save_config(_: &Context, p: Option<Value>) -> RpcResult {
    decode::<NoParams>(p)?;
    Ok(crate::config::save::save_config())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KillParams {
    sig_name: String,
}

/// SPDK's way to stop the target over RPC. Every accepted signal means the same orderly
/// shutdown here (SIGKILL included: a client asking nicely gets a clean stop, not a crash).
pub fn kill_instance(ctx: &Context, p: Option<Value>) -> RpcResult {
    let p: KillParams = decode(p)?;
    let sig = p.sig_name.trim_start_matches("SIG");
    if !matches!(sig, "INT" | "TERM" | "QUIT" | "HUP" | "KILL") {
        return Err(RpcError::invalid_params(format!(
            "unsupported sig_name '{}' (SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGKILL)",
            p.sig_name
        )));
    }
    ctx.shutdown
        .request(format!("spdk_kill_instance SIG{sig} over RPC"));
    Ok(Value::Bool(true))
}
