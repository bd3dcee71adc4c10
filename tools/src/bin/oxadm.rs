//! `oxadm`: replicated resources from drbd.conf-style files, like `drbdadm`.
//!
//! Reads the resource file (`-c`, default /etc/oxstor/oxstor.conf, with its includes), resolves
//! it like drbdadm's post_parse and sends the daemon the `repl_*` JSON-RPC calls for a command:
//! `oxadm up r0` runs `repl_new_resource`, `repl_attach`, `repl_new_peer`, `repl_new_path` and
//! `repl_connect` in drbdadm's order and stops at the first error. `--dry-run` prints the calls.
//!
//! Exit status: 0 success, 1 the daemon answered with an error, 2 bad arguments, 10 the
//! configuration is wrong (unreadable, invalid, unknown resource or host), 20 the daemon could
//! not be reached (or the connection broke).

use clap::{Parser, Subcommand};
use oxstor_repl::config::{self, plan, Config, ConfigError, Resource, RpcCall};
use oxstor_tools::client::{Client, ClientError};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXIT_DAEMON: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_CONFIG: u8 = 10;
const EXIT_UNREACHABLE: u8 = 20;

#[derive(Debug, Parser)]
#[command(
    name = "oxadm",
    version,
    about = "Administer oxstor replicated resources (like drbdadm)",
    after_help = "RESOURCE is a resource name or 'all'. connect, disconnect and verify also take \
                  RESOURCE:PEER; attach, detach and create-md also take RESOURCE/VOLUME."
)]
struct Args {
    /// The resource file (includes are followed).
    #[arg(
        short = 'c',
        long = "config-file",
        global = true,
        default_value = "/etc/oxstor/oxstor.conf"
    )]
    config: PathBuf,
    /// This machine's name in the `on` sections (default: the host name).
    #[arg(long = "host", global = true)]
    host: Option<String>,
    /// The daemon's RPC socket.
    #[arg(short = 's', long = "server", global = true, env = "OXSTOR_RPC_SOCK",
          default_value = oxstor_tools::DEFAULT_RPC_SOCKET)]
    socket: PathBuf,
    /// Print the RPC calls instead of sending them.
    #[arg(short = 'd', long = "dry-run", global = true)]
    dry_run: bool,
    /// Seconds to wait for each answer.
    #[arg(short = 't', long = "timeout", global = true, default_value_t = 60.0)]
    timeout: f64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the resource, attach its disks and connect to its peers.
    Up { resource: String },
    /// Tear the resource down.
    Down { resource: String },
    /// Attach the local disks.
    Attach { resource: String },
    /// Detach the local disks.
    Detach { resource: String },
    /// (Re)connect to the peers.
    Connect {
        resource: String,
        /// Become the sync target, discarding local changes after a split brain.
        #[arg(long)]
        discard_my_data: bool,
    },
    /// Disconnect from the peers.
    Disconnect { resource: String },
    /// Promote to Primary.
    Primary {
        resource: String,
        /// Promote even without UpToDate data.
        #[arg(long)]
        force: bool,
    },
    /// Demote to Secondary.
    Secondary { resource: String },
    /// Show roles, disk and connection states (no config needed).
    Status {
        /// A resource name, or 'all' (the default).
        resource: Option<String>,
        /// Print the daemon's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Print the resolved configuration (implicit connection, node-ids); no daemon needed.
    Dump { resource: String },
    /// Start an online verify against the peers.
    Verify { resource: String },
    /// Write fresh metadata to the local disks.
    CreateMd { resource: String },
    /// Wait until every peer is connected and no resync runs (drbdadm wait-sync).
    WaitSync {
        resource: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300.0)]
        wait: f64,
    },
    /// Start a new data generation (e.g. to skip the initial sync).
    NewCurrentUuid {
        resource: String,
        /// Also mark all data in sync with the peers.
        #[arg(long)]
        clear_bitmap: bool,
    },
}

/// Why oxadm stops, with its exit status.
struct Fail(u8, String);

impl From<ConfigError> for Fail {
    fn from(e: ConfigError) -> Fail {
        Fail(EXIT_CONFIG, e.to_string())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            eprintln!("oxadm: {msg}");
            ExitCode::from(code)
        }
    }
}

/// `NAME`, `NAME:PEER` or `NAME/VOLUME`.
struct Target {
    name: String,
    peer: Option<String>,
    volume: Option<u32>,
}

fn target(spec: &str, peer_ok: bool, volume_ok: bool) -> Result<Target, Fail> {
    if peer_ok {
        if let Some((n, p)) = spec.split_once(':') {
            return Ok(Target {
                name: n.to_string(),
                peer: Some(p.to_string()),
                volume: None,
            });
        }
    }
    if volume_ok {
        if let Some((n, v)) = spec.split_once('/') {
            let volume = v
                .parse()
                .map_err(|_| Fail(EXIT_USAGE, format!("bad volume number in '{spec}'")))?;
            return Ok(Target {
                name: n.to_string(),
                peer: None,
                volume: Some(volume),
            });
        }
    }
    Ok(Target {
        name: spec.to_string(),
        peer: None,
        volume: None,
    })
}

fn hostname() -> Result<String, Fail> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Fail(
                EXIT_CONFIG,
                "cannot determine this machine's host name; use --host".into(),
            )
        })
}

/// The resources `name` means: one, or with `all` every one (those with an `on` section for
/// `host` if given).
fn select<'a>(cfg: &'a Config, name: &str, host: Option<&str>) -> Result<Vec<&'a Resource>, Fail> {
    if name == "all" {
        return Ok(cfg
            .resources
            .iter()
            .filter(|r| host.is_none_or(|h| r.host(h).is_some()))
            .collect());
    }
    cfg.resource(name).map(|r| vec![r]).ok_or_else(|| {
        let names: Vec<&str> = cfg.resources.iter().map(|r| r.name.as_str()).collect();
        Fail(
            EXIT_CONFIG,
            format!(
                "'{name}' is not defined in your config (resources: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        )
    })
}

fn run(args: &Args) -> Result<(), Fail> {
    if let Cmd::Status { resource, json } = &args.cmd {
        let which = resource.as_deref().filter(|r| *r != "all");
        return status(args, which, *json);
    }
    let cfg = config::load(&args.config)?;
    let (spec, peer_ok, volume_ok, needs_host) = match &args.cmd {
        Cmd::Up { resource } => (resource, false, false, true),
        Cmd::Attach { resource } | Cmd::Detach { resource } | Cmd::CreateMd { resource } => {
            (resource, false, true, true)
        }
        Cmd::Connect { resource, .. } | Cmd::Disconnect { resource } | Cmd::Verify { resource } => {
            (resource, true, false, true)
        }
        Cmd::Down { resource }
        | Cmd::Primary { resource, .. }
        | Cmd::Secondary { resource }
        | Cmd::NewCurrentUuid { resource, .. }
        | Cmd::WaitSync { resource, .. }
        | Cmd::Dump { resource } => (resource, false, false, false),
        Cmd::Status { .. } => unreachable!("handled above"),
    };
    let t = target(spec, peer_ok, volume_ok)?;
    let host = match (&args.host, needs_host) {
        (Some(h), _) => Some(h.clone()),
        (None, true) => Some(hostname()?),
        (None, false) => None,
    };
    let resources = select(&cfg, &t.name, host.as_deref().filter(|_| needs_host))?;

    if let Cmd::Dump { .. } = args.cmd {
        let mut out = std::io::stdout().lock();
        for r in resources {
            let _ = writeln!(out, "{}", config::dump(r));
        }
        return Ok(());
    }

    let local = host.as_deref().unwrap_or_default();
    let peer = t.peer.as_deref();
    let mut calls: Vec<RpcCall> = Vec::new();
    for r in resources {
        calls.extend(match &args.cmd {
            Cmd::Up { .. } => plan::plan_up(r, local)?,
            Cmd::Down { .. } => plan::plan_down(r),
            Cmd::Attach { .. } => plan::plan_attach(r, local, t.volume)?,
            Cmd::Detach { .. } => plan::plan_detach(r, local, t.volume)?,
            Cmd::CreateMd { .. } => plan::plan_create_md(r, local, t.volume)?,
            Cmd::Connect {
                discard_my_data, ..
            } => plan::plan_connect(r, local, peer, *discard_my_data)?,
            Cmd::Disconnect { .. } => plan::plan_disconnect(r, local, peer)?,
            Cmd::Verify { .. } => plan::plan_verify(r, local, peer)?,
            Cmd::Primary { force, .. } => plan::plan_primary(r, *force),
            Cmd::Secondary { .. } => plan::plan_secondary(r),
            Cmd::NewCurrentUuid { clear_bitmap, .. } => {
                plan::plan_new_current_uuid(r, *clear_bitmap)
            }
            Cmd::WaitSync { wait, .. } => vec![RpcCall {
                method: "repl_wait_sync".into(),
                params: json!({"resource": r.name, "timeout_s": wait}),
            }],
            Cmd::Status { .. } | Cmd::Dump { .. } => unreachable!("handled above"),
        });
    }
    if args.dry_run {
        let mut out = std::io::stdout().lock();
        for c in &calls {
            let _ = writeln!(out, "{c}");
        }
        return Ok(());
    }
    if calls.is_empty() {
        return Ok(());
    }
    let mut client = connect(args)?;
    for c in &calls {
        call(&mut client, c)?;
    }
    Ok(())
}

fn connect(args: &Args) -> Result<Client, Fail> {
    let wait = match &args.cmd {
        Cmd::WaitSync { wait, .. } => *wait + 5.0,
        _ => 0.0,
    };
    let timeout = (args.timeout > 0.0)
        .then(|| Duration::try_from_secs_f64(args.timeout.max(wait)).ok())
        .flatten();
    Client::connect(&args.socket, timeout).map_err(|e| Fail(EXIT_UNREACHABLE, e.to_string()))
}

fn call(client: &mut Client, c: &RpcCall) -> Result<Value, Fail> {
    client
        .call(&c.method, Some(c.params.clone()))
        .map_err(|e| match e {
            ClientError::Rpc(e) => Fail(
                EXIT_DAEMON,
                format!("{c} failed: error {}: {}", e.code, e.message),
            ),
            e => Fail(EXIT_UNREACHABLE, format!("{c} failed: {e}")),
        })
}

fn status(args: &Args, resource: Option<&str>, json: bool) -> Result<(), Fail> {
    let c = plan::plan_status(resource);
    if args.dry_run {
        println!("{c}");
        return Ok(());
    }
    let mut client = connect(args)?;
    let v = call(&mut client, &c)?;
    let text = if json {
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    } else {
        format_status(&v)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("Unknown")
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], |a| a.as_slice())
}

/// `drbdadm status` style: resource and role, local disks, then each peer with its role (or
/// connection state) and per-volume replication. Sizes are KiB, like drbdsetup's.
fn format_status(v: &Value) -> String {
    let list: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        _ => Vec::new(),
    };
    let mut out = String::new();
    for r in list {
        let volumes = arr(r, "volumes");
        let multi = volumes.len() > 1;
        let vol_prefix = |x: &Value| -> String {
            match (multi, x.get("volume").and_then(Value::as_u64)) {
                (true, Some(n)) => format!("volume:{n} "),
                _ => String::new(),
            }
        };
        out += &format!("{} role:{}\n", s(r, "name"), s(r, "role"));
        for vol in volumes {
            out += &format!("  {}disk:{}\n", vol_prefix(vol), s(vol, "disk_state"));
        }
        for c in arr(r, "connections") {
            let state = s(c, "connection_state");
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("node-id:{}", c["peer_node_id"]));
            if state != "Connected" {
                out += &format!("  {name} connection:{state}\n");
                continue;
            }
            out += &format!("  {name} role:{}\n", s(c, "peer_role"));
            for pd in arr(c, "peer_devices") {
                out += &peer_device_lines(pd, &vol_prefix(pd));
            }
        }
        out += "\n";
    }
    out
}

fn peer_device_lines(pd: &Value, prefix: &str) -> String {
    let repl = s(pd, "replication_state");
    let syncing = repl.starts_with("Sync") || repl.starts_with("PausedSync");
    let verifying = repl.starts_with("Verify");
    let num = |k: &str| pd.get(k).and_then(Value::as_f64);
    let mut line = format!("    {prefix}");
    if repl != "Established" {
        line += &format!("replication:{repl} ");
    }
    line += &format!("peer-disk:{}", s(pd, "peer_disk_state"));
    let done = if verifying {
        num("verify_done_percent").or(num("done_percent"))
    } else if syncing {
        num("done_percent")
    } else {
        None
    };
    if let Some(d) = done {
        line += &format!(" done:{d:.2}");
    }
    line += "\n";
    let oos = num("out_of_sync_kib").unwrap_or(0.0);
    if !syncing && oos > 0.0 {
        line += &format!("      out-of-sync:{oos}\n");
    }
    match (num("verify_done_percent"), num("verify_out_of_sync_kib")) {
        (Some(p), found) if !verifying => {
            line += &format!(
                "      verify-done:{p:.2} verify-out-of-sync:{}\n",
                found.unwrap_or(0.0)
            )
        }
        (None, Some(found)) if found > 0.0 => {
            line += &format!("      verify-out-of-sync:{found}\n")
        }
        (_, Some(found)) if verifying => line += &format!("      verify-out-of-sync:{found}\n"),
        _ => {}
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_like_drbdadm() {
        let v = json!([{"name":"r0","node_id":0,"role":"Primary",
            "volumes":[{"volume":0,"device":"ox0","disk":"Malloc1","disk_state":"UpToDate","size_blocks":262144,"block_size":4096}],
            "connections":[{"peer_node_id":1,"name":"hw2","connection_state":"Connected","peer_role":"Secondary","protocol":"C",
                "peer_devices":[{"volume":0,"replication_state":"SyncSource","peer_disk_state":"Inconsistent","out_of_sync_kib":1234,
                    "done_percent":45.2,"resync_rate_kib_s":10240,"eta_s":12,"verify_done_percent":null,"verify_out_of_sync_kib":0}]},
                {"peer_node_id":2,"name":"hw3","connection_state":"Connecting"}]}]);
        assert_eq!(
            format_status(&v),
            "r0 role:Primary\n  disk:UpToDate\n  hw2 role:Secondary\n    replication:SyncSource peer-disk:Inconsistent done:45.20\n  hw3 connection:Connecting\n\n"
        );
    }

    #[test]
    fn status_out_of_sync_and_verify() {
        let pd = json!({"volume":0,"replication_state":"Established","peer_disk_state":"UpToDate",
            "out_of_sync_kib":64,"done_percent":null,"verify_done_percent":null,"verify_out_of_sync_kib":64});
        assert_eq!(
            peer_device_lines(&pd, ""),
            "    peer-disk:UpToDate\n      out-of-sync:64\n      verify-out-of-sync:64\n"
        );
        let pd = json!({"volume":1,"replication_state":"VerifyS","peer_disk_state":"UpToDate",
            "out_of_sync_kib":0,"done_percent":null,"verify_done_percent":12.345,"verify_out_of_sync_kib":8});
        assert_eq!(
            peer_device_lines(&pd, "volume:1 "),
            "    volume:1 replication:VerifyS peer-disk:UpToDate done:12.35\n      verify-out-of-sync:8\n"
        );
    }
}
