//! Replaying SPDK JSON config files in-process.
//!
//! A config is `{"subsystems":[{"subsystem":"bdev","config":[{"method":..,"params":..}]}]}`:
//! the list of RPC calls that recreate the state. oxperf runs the bdev create calls directly
//! against `oxstor_bdev`, through [`METHODS`], a table of `(method, handler)`. New bdev
//! modules (RAID, the NVMe/TCP host) add one line there.

use crate::PerfError;
use oxstor_bdev::{delay, error, malloc, null, uring, BdevError};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What applying one call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A bdev with this name was created.
    Created(String),
    /// The call changed existing state (an error injection, say).
    Done,
    /// Bookkeeping with no meaning in-process (options, wait_for_examine).
    Ignored,
}

type Handler = fn(Value) -> Result<Applied, PerfError>;

/// Every method oxperf can replay.
pub const METHODS: &[(&str, Handler)] = &[
    ("bdev_malloc_create", |p| {
        create("bdev_malloc_create", p, malloc::create)
    }),
    ("bdev_null_create", |p| {
        create("bdev_null_create", p, null::create)
    }),
    ("bdev_uring_create", |p| {
        create("bdev_uring_create", p, uring::create)
    }),
    ("bdev_delay_create", |p| {
        create("bdev_delay_create", p, delay::create)
    }),
    ("bdev_error_create", |p| {
        create("bdev_error_create", p, error::create)
    }),
    ("bdev_raid_create", |p| {
        create("bdev_raid_create", p, oxstor_raid::rpc::create)
    }),
    ("bdev_nvme_attach_controller", |p| {
        let params: oxstor_nvme::host::AttachParams =
            parse_params("bdev_nvme_attach_controller", p)?;
        oxstor_nvme::host::attach(params)
            .map(|names| Applied::Created(names.join(",")))
            .map_err(|e| bdev_err("bdev_nvme_attach_controller", e))
    }),
    ("repl_new_resource", |p| {
        repl("repl_new_resource", p, oxstor_repl::rpc::new_resource)
    }),
    ("repl_attach", |p| {
        let params: oxstor_repl::rpc::Attach = parse_params("repl_attach", p)?;
        let device = params.device.clone();
        oxstor_repl::rpc::attach(params)
            .map_err(|e| PerfError::run(format!("repl_attach failed: {e}")))?;
        Ok(Applied::Created(device))
    }),
    ("repl_new_peer", |p| {
        repl("repl_new_peer", p, oxstor_repl::rpc::new_peer)
    }),
    ("repl_new_path", |p| {
        repl("repl_new_path", p, oxstor_repl::rpc::new_path)
    }),
    ("repl_connect", |p| {
        repl("repl_connect", p, oxstor_repl::rpc::connect)
    }),
    ("repl_primary", |p| {
        repl("repl_primary", p, oxstor_repl::rpc::primary)
    }),
    ("repl_wait_sync", |p| {
        repl("repl_wait_sync", p, oxstor_repl::rpc::wait_sync)
    }),
    ("bdev_error_inject_error", |p| {
        let params: error::InjectParams = parse_params("bdev_error_inject_error", p)?;
        error::inject(&params).map_err(|e| bdev_err("bdev_error_inject_error", e))?;
        Ok(Applied::Done)
    }),
];

/// Calls that only tune things oxperf does not have (or that are implicit in-process).
const IGNORED: &[&str] = &[
    "bdev_wait_for_examine",
    "bdev_examine",
    "framework_set_scheduler",
    "framework_wait_init",
    "sock_set_default_impl",
];

fn is_ignored(method: &str) -> bool {
    IGNORED.contains(&method) || method.ends_with("_set_options")
}

fn bdev_err(method: &str, e: BdevError) -> PerfError {
    PerfError::run(format!("{method} failed: {e}"))
}

fn parse_params<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, PerfError> {
    let params = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params
    };
    serde_json::from_value(params)
        .map_err(|e| PerfError::usage(format!("{method}: invalid params: {e}")))
}

fn create<T: DeserializeOwned>(
    method: &str,
    params: Value,
    f: fn(T) -> Result<String, BdevError>,
) -> Result<Applied, PerfError> {
    let p: T = parse_params(method, params)?;
    f(p).map(Applied::Created).map_err(|e| bdev_err(method, e))
}

/// A replication call: the resource lives in this process (oxperf is the Primary) and its
/// peers are daemons.
fn repl<T: DeserializeOwned>(
    method: &str,
    params: Value,
    f: fn(T) -> Result<Value, String>,
) -> Result<Applied, PerfError> {
    let p: T = parse_params(method, params)?;
    f(p).map(|_| Applied::Done)
        .map_err(|e| PerfError::run(format!("{method} failed: {e}")))
}

fn unknown(method: &str) -> PerfError {
    let known: Vec<&str> = METHODS.iter().map(|(m, _)| *m).collect();
    PerfError::usage(format!(
        "unsupported config method '{method}' (oxperf can replay: {})",
        known.join(", ")
    ))
}

/// Applies one call. Unknown methods are an error that lists what is supported.
pub fn apply(method: &str, params: Value) -> Result<Applied, PerfError> {
    if let Some((_, handler)) = METHODS.iter().find(|(m, _)| *m == method) {
        return handler(params);
    }
    if is_ignored(method) {
        return Ok(Applied::Ignored);
    }
    Err(unknown(method))
}

/// One call of a config file.
#[derive(Debug, Clone)]
pub struct Call {
    pub subsystem: String,
    pub method: String,
    pub params: Value,
}

/// Extracts the calls of an SPDK JSON config, in order.
pub fn parse(text: &str) -> Result<Vec<Call>, PerfError> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| PerfError::usage(format!("config is not valid JSON: {e}")))?;
    let subsystems = root
        .get("subsystems")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            PerfError::usage(
                "config has no \"subsystems\" array (expected SPDK's JSON config format)",
            )
        })?;
    let mut calls = Vec::new();
    for (i, s) in subsystems.iter().enumerate() {
        let name = s.get("subsystem").and_then(Value::as_str).ok_or_else(|| {
            PerfError::usage(format!("subsystems[{i}] has no \"subsystem\" name"))
        })?;
        let config = match s.get("config") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(PerfError::usage(format!(
                    "subsystem {name}: \"config\" must be an array"
                )))
            }
        };
        for (j, c) in config.iter().enumerate() {
            let method = c.get("method").and_then(Value::as_str).ok_or_else(|| {
                PerfError::usage(format!("subsystem {name}: config[{j}] has no \"method\""))
            })?;
            calls.push(Call {
                subsystem: name.to_string(),
                method: method.to_string(),
                params: c.get("params").cloned().unwrap_or(Value::Null),
            });
        }
    }
    Ok(calls)
}

/// Applies every call in order (after checking that every method is known, so a typo fails
/// before anything is created); returns the names of the bdevs created.
pub fn apply_all(calls: &[Call]) -> Result<Vec<String>, PerfError> {
    if let Some(c) = calls
        .iter()
        .find(|c| !METHODS.iter().any(|(m, _)| *m == c.method) && !is_ignored(&c.method))
    {
        return Err(unknown(&c.method));
    }
    let mut created = Vec::new();
    for c in calls {
        if let Applied::Created(name) = apply(&c.method, c.params.clone())? {
            created.push(name);
            // Arrays with superblocks assemble from their members as they appear, as in
            // the daemon (and before any error injection that follows in the config).
            oxstor_raid::rpc::examine_all();
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spdk_shape() {
        let calls = parse(
            r#"{"subsystems":[{"subsystem":"accel","config":null},
            {"subsystem":"bdev","config":[{"method":"bdev_set_options","params":{}},
             {"method":"bdev_null_create","params":{"name":"Null0","num_blocks":8,"block_size":512}},
             {"method":"bdev_wait_for_examine"}]}]}"#,
        )
        .unwrap();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[1].method, "bdev_null_create");
        assert_eq!(calls[2].params, Value::Null);
        assert!(parse("{}").is_err());
        assert!(parse("not json").is_err());
    }

    #[test]
    fn unknown_and_ignored_methods() {
        assert_eq!(
            apply("bdev_wait_for_examine", Value::Null).unwrap(),
            Applied::Ignored
        );
        assert_eq!(
            apply("iobuf_set_options", Value::Null).unwrap(),
            Applied::Ignored
        );
        let err = apply("bdev_frobnicate", Value::Null)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bdev_frobnicate") && err.contains("bdev_malloc_create"),
            "{err}"
        );
        let bad = apply("bdev_null_create", serde_json::json!({"name": "x"})).unwrap_err();
        assert!(matches!(bad, PerfError::Usage(_)), "{bad}");
    }
}
