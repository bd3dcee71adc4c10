//! The nvmf_* RPC methods with SPDK's names and parameters, and the calls save_config writes
//! to recreate the target.

use super::controller;
use super::listener;
use super::subsystem::{parse_uuid, ListenAddress, Namespace, Subsystem};
use crate::spec::nqn::{validate_nqn, DISCOVERY_NQN};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};

/// An RPC failure: a JSON-RPC error code (SPDK's) and a message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct NvmfError {
    pub code: i32,
    pub message: String,
}

impl NvmfError {
    fn invalid(message: impl Into<String>) -> Self {
        NvmfError {
            code: -32602,
            message: message.into(),
        }
    }
    fn errno(errno: i32, message: impl Into<String>) -> Self {
        NvmfError {
            code: -errno,
            message: message.into(),
        }
    }
}

/// `nvmf_create_transport` parameters (SPDK's names). Unused SPDK knobs are accepted so
/// SPDK configs load, and written back by save_config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportOptions {
    pub trtype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_name: Option<String>,
    #[serde(default = "d_qd")]
    pub max_queue_depth: u32,
    #[serde(default = "d_qpairs")]
    pub max_io_qpairs_per_ctrlr: u32,
    #[serde(default = "d_icd")]
    pub in_capsule_data_size: u32,
    #[serde(default = "d_io")]
    pub max_io_size: u32,
    #[serde(default = "d_io")]
    pub io_unit_size: u32,
    #[serde(default = "d_qd")]
    pub max_aq_depth: u32,
    #[serde(default = "d_true")]
    pub c2h_success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_shared_buffers: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buf_cache_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dif_insert_or_strip: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sock_priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_timeout_sec: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zcopy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_wr_pool_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_msg_num: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_qpairs_per_ctrlr: Option<u32>,
}

fn d_qd() -> u32 {
    128
}
fn d_qpairs() -> u32 {
    127
}
fn d_icd() -> u32 {
    4096
}
fn d_io() -> u32 {
    131072
}
fn d_true() -> bool {
    true
}

impl TransportOptions {
    pub fn tcp_defaults() -> TransportOptions {
        serde_json::from_value(json!({"trtype": "TCP"})).unwrap_or_else(|_| unreachable!())
    }
}

struct TargetState {
    transport: Option<TransportOptions>,
    subsystems: Vec<Arc<Subsystem>>,
}

static TARGET: Mutex<TargetState> = Mutex::new(TargetState {
    transport: None,
    subsystems: Vec::new(),
});

fn target() -> MutexGuard<'static, TargetState> {
    TARGET.lock().unwrap_or_else(|p| p.into_inner())
}

/// The TCP transport's options (defaults until nvmf_create_transport is called).
pub fn transport_options() -> TransportOptions {
    target()
        .transport
        .clone()
        .unwrap_or_else(TransportOptions::tcp_defaults)
}

pub fn find_subsystem(nqn: &str) -> Option<Arc<Subsystem>> {
    if nqn == DISCOVERY_NQN {
        return Some(discovery_subsystem());
    }
    target().subsystems.iter().find(|s| s.nqn == nqn).cloned()
}

pub fn subsystems() -> Vec<Arc<Subsystem>> {
    target().subsystems.clone()
}

fn discovery_subsystem() -> Arc<Subsystem> {
    static DISCOVERY: std::sync::OnceLock<Arc<Subsystem>> = std::sync::OnceLock::new();
    DISCOVERY
        .get_or_init(|| {
            Arc::new(Subsystem::new(
                DISCOVERY_NQN.to_string(),
                String::new(),
                String::new(),
                0,
                true,
                1,
                0xFFEF,
                false,
            ))
        })
        .clone()
}

fn subsystem(nqn: &str) -> Result<Arc<Subsystem>, NvmfError> {
    find_subsystem(nqn)
        .filter(|s| !s.is_discovery())
        .ok_or_else(|| NvmfError::invalid(format!("Unable to find subsystem with NQN {nqn}")))
}

pub fn create_transport(opts: TransportOptions) -> Result<bool, NvmfError> {
    if !opts.trtype.eq_ignore_ascii_case("tcp") {
        return Err(NvmfError::invalid(format!(
            "Transport type '{}' is not supported (only TCP)",
            opts.trtype
        )));
    }
    if opts.max_queue_depth < 2 || opts.max_queue_depth > 4096 {
        return Err(NvmfError::invalid("max_queue_depth must be in 2..=4096"));
    }
    if opts.max_aq_depth < 2 || opts.max_aq_depth > 4096 {
        return Err(NvmfError::invalid("max_aq_depth must be in 2..=4096"));
    }
    if !opts.in_capsule_data_size.is_multiple_of(16) || opts.in_capsule_data_size > 131072 {
        return Err(NvmfError::invalid(
            "in_capsule_data_size must be a multiple of 16, at most 131072",
        ));
    }
    if !(4096..=131072).contains(&opts.max_io_size) || !opts.max_io_size.is_power_of_two() {
        return Err(NvmfError::invalid(
            "max_io_size must be a power of two between 4096 and 131072",
        ));
    }
    if opts.max_io_qpairs_per_ctrlr == 0 || opts.max_io_qpairs_per_ctrlr > 1024 {
        return Err(NvmfError::invalid(
            "max_io_qpairs_per_ctrlr must be in 1..=1024",
        ));
    }
    let mut t = target();
    if t.transport.is_some() {
        return Err(NvmfError::errno(
            libc::EEXIST,
            "Transport type TCP already exists",
        ));
    }
    t.transport = Some(opts);
    Ok(true)
}

pub fn get_transports() -> Value {
    match &target().transport {
        Some(t) => json!([serde_json::to_value(t).unwrap_or(Value::Null)]),
        None => json!([]),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSubsystemParams {
    pub nqn: String,
    #[serde(default)]
    pub tgt_name: Option<String>,
    #[serde(default)]
    pub serial_number: Option<String>,
    #[serde(default)]
    pub model_number: Option<String>,
    #[serde(default)]
    pub allow_any_host: bool,
    #[serde(default)]
    pub max_namespaces: Option<u32>,
    #[serde(default)]
    pub ana_reporting: bool,
    #[serde(default)]
    pub min_cntlid: Option<u16>,
    #[serde(default)]
    pub max_cntlid: Option<u16>,
    #[serde(default)]
    pub max_discard_size_kib: Option<u64>,
    #[serde(default)]
    pub max_write_zeroes_size_kib: Option<u64>,
}

fn check_ascii_field(name: &str, value: &str, max: usize) -> Result<(), NvmfError> {
    if value.len() > max || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(NvmfError::invalid(format!(
            "{name} must be at most {max} printable ASCII characters"
        )));
    }
    Ok(())
}

pub fn create_subsystem(p: CreateSubsystemParams) -> Result<bool, NvmfError> {
    validate_nqn(&p.nqn).map_err(|e| NvmfError::invalid(format!("Invalid NQN {}: {e}", p.nqn)))?;
    if p.nqn == DISCOVERY_NQN {
        return Err(NvmfError::invalid("the discovery subsystem always exists"));
    }
    let serial = p
        .serial_number
        .unwrap_or_else(|| "00000000000000000000".into());
    let model = p
        .model_number
        .unwrap_or_else(|| "oxstor bdev Controller".into());
    check_ascii_field("serial_number", &serial, 20)?;
    check_ascii_field("model_number", &model, 40)?;
    let min = p.min_cntlid.unwrap_or(1);
    let max = p.max_cntlid.unwrap_or(0xFFEF);
    if min == 0 || max > 0xFFEF || min > max {
        return Err(NvmfError::invalid(
            "cntlid range must satisfy 1 <= min <= max <= 65519",
        ));
    }
    let mut t = target();
    if t.subsystems.iter().any(|s| s.nqn == p.nqn) {
        return Err(NvmfError::invalid(format!(
            "Subsystem NQN {} already exists",
            p.nqn
        )));
    }
    t.subsystems.push(Arc::new(Subsystem::new(
        p.nqn,
        serial,
        model,
        p.max_namespaces.unwrap_or(0),
        p.allow_any_host,
        min,
        max,
        p.ana_reporting,
    )));
    Ok(true)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NqnParams {
    pub nqn: String,
    #[serde(default)]
    pub tgt_name: Option<String>,
}

pub fn delete_subsystem(p: NqnParams) -> Result<bool, NvmfError> {
    let sub = subsystem(&p.nqn)?;
    for ctrl in controller::of_subsystem(&sub.nqn) {
        controller::destroy(&ctrl, "subsystem deleted");
    }
    let listeners: Vec<ListenAddress> = sub.state().listeners.drain(..).collect();
    for l in listeners {
        listener::release(l.addr);
    }
    sub.state().namespaces.clear();
    target().subsystems.retain(|s| s.nqn != p.nqn);
    Ok(true)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceParams {
    pub bdev_name: String,
    #[serde(default)]
    pub nsid: Option<u32>,
    #[serde(default)]
    pub nguid: Option<String>,
    #[serde(default)]
    pub eui64: Option<String>,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub anagrpid: Option<u32>,
    #[serde(default)]
    pub ptpl_file: Option<String>,
    #[serde(default)]
    pub no_auto_visible: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNsParams {
    pub nqn: String,
    pub namespace: NamespaceParams,
    #[serde(default)]
    pub tgt_name: Option<String>,
}

fn parse_hex<const N: usize>(name: &str, s: &str) -> Result<[u8; N], NvmfError> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; N];
    if hex.len() != N * 2 {
        return Err(NvmfError::invalid(format!(
            "{name} must be {} hex digits",
            N * 2
        )));
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = hex
            .get(i * 2..i * 2 + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| NvmfError::invalid(format!("{name} is not hexadecimal")))?;
    }
    Ok(out)
}

pub fn add_ns(p: AddNsParams) -> Result<u32, NvmfError> {
    let sub = subsystem(&p.nqn)?;
    let ns = &p.namespace;
    if ns.anagrpid.is_some_and(|g| g == 0) {
        return Err(NvmfError::invalid("anagrpid must be non-zero"));
    }
    let entry = oxstor_bdev::registry::lookup(&ns.bdev_name)
        .map_err(|e| NvmfError::invalid(format!("Unable to add namespace: {e}")))?;
    let nsid = {
        let st = sub.state();
        let nsid = match ns.nsid {
            Some(0) | None => (1..=u32::MAX - 1)
                .find(|n| !st.namespaces.contains_key(n))
                .unwrap_or(0),
            Some(n) if n == u32::MAX => return Err(NvmfError::invalid("Invalid NSID")),
            Some(n) => n,
        };
        if st.namespaces.contains_key(&nsid) {
            return Err(NvmfError::invalid(format!(
                "Requested NSID {nsid} already in use"
            )));
        }
        if sub.max_namespaces > 0
            && (nsid > sub.max_namespaces || st.namespaces.len() as u32 >= sub.max_namespaces)
        {
            return Err(NvmfError::invalid(
                "Subsystem has no room for another namespace",
            ));
        }
        nsid
    };
    let claim = oxstor_bdev::registry::claim(&ns.bdev_name, &format!("nvmf:{}", sub.nqn))
        .map_err(|e| NvmfError::errno(e.errno(), format!("Unable to add namespace: {e}")))?;
    let mut params = json!({ "bdev_name": ns.bdev_name, "nsid": nsid });
    let mut namespace = Namespace::new(nsid, entry, Some(claim), Value::Null);
    if let Some(u) = &ns.uuid {
        namespace.uuid = parse_uuid(u).ok_or_else(|| NvmfError::invalid("invalid uuid"))?;
        params["uuid"] = json!(u);
    }
    if let Some(g) = &ns.nguid {
        namespace.nguid = parse_hex::<16>("nguid", g)?;
        params["nguid"] = json!(g);
    }
    if let Some(e) = &ns.eui64 {
        namespace.eui64 = parse_hex::<8>("eui64", e)?;
        params["eui64"] = json!(e);
    }
    namespace.params = params;
    sub.state().namespaces.insert(nsid, Arc::new(namespace));
    controller::namespace_changed(&sub, nsid);
    Ok(nsid)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveNsParams {
    pub nqn: String,
    pub nsid: u32,
    #[serde(default)]
    pub tgt_name: Option<String>,
}

pub fn remove_ns(p: RemoveNsParams) -> Result<bool, NvmfError> {
    let sub = subsystem(&p.nqn)?;
    if sub.state().namespaces.remove(&p.nsid).is_none() {
        return Err(NvmfError::invalid(format!("Invalid NSID {}", p.nsid)));
    }
    controller::namespace_changed(&sub, p.nsid);
    Ok(true)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenAddressParams {
    pub trtype: String,
    #[serde(default)]
    pub adrfam: Option<String>,
    pub traddr: String,
    #[serde(default)]
    pub trsvcid: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerParams {
    pub nqn: String,
    pub listen_address: ListenAddressParams,
    #[serde(default)]
    pub tgt_name: Option<String>,
    #[serde(default)]
    pub secure_channel: Option<bool>,
    #[serde(default)]
    pub ana_state: Option<String>,
    #[serde(default)]
    pub sock_impl: Option<String>,
}

fn resolve(la: &ListenAddressParams) -> Result<ListenAddress, NvmfError> {
    if !la.trtype.eq_ignore_ascii_case("tcp") {
        return Err(NvmfError::invalid(format!(
            "Transport type '{}' is not supported",
            la.trtype
        )));
    }
    let adrfam = la.adrfam.clone().unwrap_or_else(|| "IPv4".into());
    if !["ipv4", "ipv6"].contains(&adrfam.to_ascii_lowercase().as_str()) {
        return Err(NvmfError::invalid(format!(
            "adrfam '{adrfam}' is not supported"
        )));
    }
    let trsvcid = la.trsvcid.clone().unwrap_or_else(|| "4420".into());
    let port: u16 = trsvcid
        .parse()
        .map_err(|_| NvmfError::invalid(format!("trsvcid '{trsvcid}' is not a port number")))?;
    let host = if adrfam.eq_ignore_ascii_case("ipv6") && !la.traddr.starts_with('[') {
        format!("[{}]", la.traddr)
    } else {
        la.traddr.clone()
    };
    let addr: SocketAddr = format!("{host}:{port}")
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| NvmfError::invalid(format!("cannot resolve traddr '{}'", la.traddr)))?;
    Ok(ListenAddress {
        trtype: "TCP".into(),
        adrfam: if addr.is_ipv6() {
            "IPv6".into()
        } else {
            "IPv4".into()
        },
        traddr: la.traddr.clone(),
        trsvcid,
        addr,
    })
}

pub fn add_listener(p: ListenerParams) -> Result<bool, NvmfError> {
    let sub = subsystem(&p.nqn)?;
    if p.secure_channel == Some(true) {
        return Err(NvmfError::invalid(
            "secure_channel (TLS) is not supported yet",
        ));
    }
    let la = resolve(&p.listen_address)?;
    if sub.state().listeners.iter().any(|l| l.addr == la.addr) {
        return Err(NvmfError::invalid("Listener already exists"));
    }
    listener::acquire(la.addr).map_err(|e| {
        NvmfError::errno(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("Unable to listen on {}: {e}", la.addr),
        )
    })?;
    sub.state().listeners.push(la);
    Ok(true)
}

pub fn remove_listener(p: ListenerParams) -> Result<bool, NvmfError> {
    let sub = subsystem(&p.nqn)?;
    let la = resolve(&p.listen_address)?;
    let removed = {
        let mut st = sub.state();
        let before = st.listeners.len();
        st.listeners.retain(|l| l.addr != la.addr);
        before != st.listeners.len()
    };
    if !removed {
        return Err(NvmfError::invalid("Listener not found"));
    }
    listener::release(la.addr);
    Ok(true)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostParams {
    pub nqn: String,
    pub host: String,
    #[serde(default)]
    pub tgt_name: Option<String>,
    #[serde(default)]
    pub psk: Option<String>,
    #[serde(default)]
    pub dhchap_key: Option<String>,
    #[serde(default)]
    pub dhchap_ctrlr_key: Option<String>,
}

pub fn add_host(p: HostParams) -> Result<bool, NvmfError> {
    let sub = subsystem(&p.nqn)?;
    if p.psk.is_some() || p.dhchap_key.is_some() || p.dhchap_ctrlr_key.is_some() {
        return Err(NvmfError::invalid(
            "TLS PSK and DH-HMAC-CHAP are not supported yet",
        ));
    }
    validate_nqn(&p.host)
        .map_err(|e| NvmfError::invalid(format!("Invalid host NQN {}: {e}", p.host)))?;
    let mut st = sub.state();
    if st.hosts.contains(&p.host) {
        return Err(NvmfError::invalid(format!(
            "Host {} already allowed",
            p.host
        )));
    }
    st.hosts.push(p.host);
    Ok(true)
}

pub fn remove_host(p: HostParams) -> Result<bool, NvmfError> {
    let sub = subsystem(&p.nqn)?;
    let mut st = sub.state();
    let before = st.hosts.len();
    st.hosts.retain(|h| h != &p.host);
    if before == st.hosts.len() {
        return Err(NvmfError::invalid(format!("Host {} not found", p.host)));
    }
    drop(st);
    // A removed host loses its controllers, as in SPDK.
    for ctrl in controller::of_subsystem(&sub.nqn) {
        if ctrl.hostnqn == p.host && !sub.host_allowed(&p.host) {
            controller::destroy(&ctrl, "host removed");
        }
    }
    Ok(true)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowAnyHostParams {
    pub nqn: String,
    pub allow_any_host: bool,
    #[serde(default)]
    pub tgt_name: Option<String>,
}

pub fn allow_any_host(p: AllowAnyHostParams) -> Result<bool, NvmfError> {
    let sub = subsystem(&p.nqn)?;
    sub.state().allow_any_host = p.allow_any_host;
    Ok(true)
}

fn listen_json(l: &ListenAddress) -> Value {
    json!({"trtype": l.trtype, "adrfam": l.adrfam, "traddr": l.traddr, "trsvcid": l.trsvcid})
}

pub fn get_subsystems() -> Value {
    let disc = discovery_subsystem();
    let mut out = vec![json!({
        "nqn": disc.nqn,
        "subtype": "Discovery",
        "listen_addresses": listener::addresses().iter().map(|a| json!({
            "trtype": "TCP", "adrfam": if a.is_ipv6() {"IPv6"} else {"IPv4"},
            "traddr": a.ip().to_string(), "trsvcid": a.port().to_string()})).collect::<Vec<_>>(),
        "allow_any_host": true,
        "hosts": [],
    })];
    for s in subsystems() {
        let st = s.state();
        out.push(json!({
            "nqn": s.nqn,
            "subtype": "NVMe",
            "listen_addresses": st.listeners.iter().map(listen_json).collect::<Vec<_>>(),
            "allow_any_host": st.allow_any_host,
            "hosts": st.hosts.iter().map(|h| json!({"nqn": h})).collect::<Vec<_>>(),
            "serial_number": s.serial_number,
            "model_number": s.model_number,
            "max_namespaces": s.max_namespaces,
            "min_cntlid": s.min_cntlid,
            "max_cntlid": s.max_cntlid,
            "namespaces": st.namespaces.values().map(|n| json!({
                "nsid": n.nsid,
                "bdev_name": n.bdev_name,
                "name": n.bdev_name,
                "nguid": hex(&n.nguid),
                "eui64": hex(&n.eui64),
                "uuid": n.entry.bdev.uuid(),
            })).collect::<Vec<_>>(),
            "controllers": controller::of_subsystem(&s.nqn).len(),
        }));
    }
    Value::Array(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The calls that recreate the target, for save_config's "nvmf" subsystem.
pub fn config_calls() -> Vec<Value> {
    let mut calls = Vec::new();
    if let Some(t) = &target().transport {
        calls.push(json!({"method": "nvmf_create_transport", "params": t}));
    }
    for s in subsystems() {
        let st = s.state();
        calls.push(json!({"method": "nvmf_create_subsystem", "params": {
            "nqn": s.nqn, "serial_number": s.serial_number, "model_number": s.model_number,
            "allow_any_host": st.allow_any_host, "max_namespaces": s.max_namespaces,
            "min_cntlid": s.min_cntlid, "max_cntlid": s.max_cntlid, "ana_reporting": s.ana_reporting,
        }}));
        for h in &st.hosts {
            calls.push(
                json!({"method": "nvmf_subsystem_add_host", "params": {"nqn": s.nqn, "host": h}}),
            );
        }
        for n in st.namespaces.values() {
            calls.push(json!({"method": "nvmf_subsystem_add_ns", "params": {"nqn": s.nqn, "namespace": n.params}}));
        }
        for l in &st.listeners {
            calls.push(json!({"method": "nvmf_subsystem_add_listener", "params": {
                "nqn": s.nqn, "listen_address": listen_json(l)}}));
        }
    }
    calls
}

/// Closes every connection and listener and forgets all subsystems (daemon shutdown).
pub fn shutdown() {
    for s in subsystems() {
        let _ = delete_subsystem(NqnParams {
            nqn: s.nqn.clone(),
            tgt_name: None,
        });
    }
    listener::release_all();
    super::conn::close_all();
    target().transport = None;
}

pub fn get_stats() -> Value {
    let per_core = super::conn::stats();
    json!({
        "tick_rate": 1_000_000_000u64,
        "poll_groups": per_core.iter().enumerate().map(|(i, s)| json!({
            "name": format!("nvmf_tgt_poll_group_{i:03}"),
            "admin_qpairs": s.admin_qpairs,
            "io_qpairs": s.io_qpairs,
            "current_admin_qpairs": s.current_admin_qpairs,
            "current_io_qpairs": s.current_io_qpairs,
            "pending_bdev_io": s.pending_bdev_io,
            "completed_nvme_io": s.completed_nvme_io,
            "transports": [{"trtype": "TCP", "pdu_errors": s.pdu_errors}],
        })).collect::<Vec<_>>(),
    })
}
