//! The repl_* RPC methods: what `oxadm` (like drbdsetup) asks the daemon to do.
//!
//! Each runs on the control thread, reaches the resource on its home core with a message, and
//! answers with a clear error string when something is refused.

use crate::connect::{self, Connector, PeerTarget};
use crate::device::ReplBdev;
use crate::meta::superblock::meta_flag;
use crate::options::{self, OptionMap};
use crate::resource::{self, directory, find_shared, local, with_resource, Peer, Resource, Shared};
use crate::state::{ConnState, DiskState, ReplState, Role};
use crate::volume::{self, Volume};
use crate::wire::{self, Packet};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::Arc;

pub type RpcResult = Result<Value, String>;

fn runtime() -> Result<oxstor_reactor::Handle, String> {
    oxstor_bdev::registry::runtime().ok_or_else(|| "no reactor runtime is running".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewResource {
    pub name: String,
    pub node_id: u32,
}

pub fn new_resource(p: NewResource) -> RpcResult {
    if p.name.is_empty()
        || p.name.len() > wire::MAX_NAME
        || !p
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(format!(
            "invalid resource name '{}' (1-{} characters of A-Z a-z 0-9 _ - .)",
            p.name,
            wire::MAX_NAME
        ));
    }
    if p.node_id > 31 {
        return Err(format!("node_id {} is out of range 0..31", p.node_id));
    }
    let rt = runtime()?;
    let home = {
        let mut dir = directory();
        if dir.iter().any(|s| s.name == p.name) {
            return Err(format!("resource '{}' already exists", p.name));
        }
        let home = dir.len() % rt.num_reactors().max(1);
        let shared = Arc::new(Shared {
            name: p.name.clone(),
            home,
            primary: AtomicBool::new(false),
            disk: AtomicU8::new(DiskState::Diskless.to_wire()),
        });
        dir.push(shared);
        home
    };
    let shared = find_shared(&p.name).ok_or("resource vanished")?;
    let node_id = p.node_id as u8;
    rt.run_on(home, move || {
        let name = shared.name.clone();
        resource::insert_local(Resource::new(name, node_id, shared));
    });
    tracing::info!(
        "resource {} created (node-id {node_id}, home core {home})",
        p.name
    );
    Ok(Value::Bool(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attach {
    pub resource: String,
    #[serde(default)]
    pub volume: u32,
    pub device: String,
    pub disk: String,
    #[serde(default = "internal")]
    pub meta_disk: String,
    #[serde(default)]
    pub disk_options: OptionMap,
}

fn internal() -> String {
    "internal".into()
}

pub fn attach(p: Attach) -> RpcResult {
    if p.meta_disk != "internal" {
        return Err(format!(
            "meta-disk '{}': only internal metadata is supported",
            p.meta_disk
        ));
    }
    if p.volume > u16::MAX as u32 {
        return Err(format!("volume {} is out of range", p.volume));
    }
    let shared = find_shared(&p.resource)
        .ok_or_else(|| format!("resource '{}' does not exist", p.resource))?;
    let disk_opts = options::parse_disk(&p.disk_options)?;
    let (node_id, attached) =
        with_resource(&p.resource, |r| Ok((r.node_id, r.volume().is_some())))?;
    if attached {
        return Err(format!(
            "resource '{}' already has a disk attached (one volume per resource)",
            p.resource
        ));
    }
    if oxstor_bdev::registry::lookup(&p.device).is_ok() {
        return Err(format!("device name '{}' is already a bdev", p.device));
    }
    let loaded = volume::load(
        shared.home,
        &p.resource,
        node_id,
        &p.disk,
        disk_opts.al_extents,
    )?;
    let backing = loaded.backing.clone();
    let block_size = loaded.block_size;
    let blocks = loaded.layout.data_bytes / block_size as u64;
    let device = p.device.clone();
    let number = p.volume as u16;
    with_resource(&p.resource, move |r| {
        let vol = Rc::new(Volume::new(number, device, loaded));
        let state = vol.disk_state.get();
        *r.volume.borrow_mut() = Some(vol.clone());
        r.set_disk_state(state);
        // Record that writes may now be in flight (cleared by a clean detach).
        vol.persist_sb(|_| {});
        Ok(())
    })?;
    if let Err(e) = ReplBdev::register(&p.device, shared.clone(), backing, block_size, blocks) {
        let _ = with_resource(&p.resource, |r| {
            r.volume.borrow_mut().take();
            r.set_disk_state(DiskState::Diskless);
            Ok(())
        });
        return Err(e.to_string());
    }
    let state = shared.disk_state();
    tracing::info!(
        "resource {}: disk {} attached as {} ({blocks} blocks), {state}",
        p.resource,
        p.disk,
        p.device
    );
    Ok(Value::String(p.device))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPeer {
    pub resource: String,
    pub peer_node_id: u32,
    #[serde(default)]
    pub peer_name: Option<String>,
    #[serde(default)]
    pub net: OptionMap,
    #[serde(default)]
    pub disk: OptionMap,
}

pub fn new_peer(p: NewPeer) -> RpcResult {
    if p.peer_node_id > 31 {
        return Err(format!(
            "peer_node_id {} is out of range 0..31",
            p.peer_node_id
        ));
    }
    let net = options::parse_net(&p.net)?;
    let disk_opts = options::parse_disk(&p.disk)?;
    let pid = p.peer_node_id as u8;
    let name = p
        .peer_name
        .clone()
        .unwrap_or_else(|| format!("peer-node-{pid}"));
    with_resource(&p.resource, move |r| {
        if pid == r.node_id {
            return Err(format!("peer node-id {pid} is this node's own node-id"));
        }
        if r.peer(pid).is_some() {
            return Err(format!(
                "resource '{}' already has peer node-id {pid}",
                r.name
            ));
        }
        let vol = r
            .volume()
            .ok_or("attach a disk before adding peers (diskless nodes are not supported)")?;
        let slot = vol
            .sb
            .borrow_mut()
            .peer_slot_or_assign(pid)
            .map_err(|e| e.to_string())?;
        vol.persist_sb(|_| {});
        let discard_node =
            net.discard_node_name
                .as_ref()
                .map(|n| if *n == name { pid } else { r.node_id });
        let peer = Rc::new(Peer {
            node_id: pid,
            name,
            slot,
            net,
            disk_opts,
            discard_node,
            resource: Rc::downgrade(r),
            paths: RefCell::new(Vec::new()),
            conn_state: Cell::new(ConnState::StandAlone),
            repl_state: Cell::new(ReplState::Off),
            link: RefCell::new(None),
            peer_role: Cell::new(Role::Unknown),
            peer_disk: Cell::new(DiskState::DUnknown),
            connector: RefCell::new(None),
            listening: RefCell::new(None),
            discard_my_data: Cell::new(false),
            last_error: RefCell::new(String::new()),
            split_brain: Cell::new(false),
            epoch: Cell::new(1),
            epoch_writes: Cell::new(0),
            close_epoch: Cell::new(false),
            seq: Cell::new(0),
            tl: RefCell::new(VecDeque::new()),
            rx_epochs: RefCell::new(VecDeque::new()),
            rx_base: Cell::new(0),
            sync: RefCell::new(None),
            verify: RefCell::new(None),
            sync_poller: Cell::new(None),
            apply_done: RefCell::new(None),
        });
        if r.role.get() == Role::Primary {
            r.need_new_gen.set(true);
        }
        r.peers.borrow_mut().push(peer);
        Ok(Value::Bool(true))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPath {
    pub resource: String,
    pub peer_node_id: u32,
    pub local_addr: String,
    pub remote_addr: String,
}

fn parse_addr(what: &str, s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{what} '{s}' is not IP:PORT"))
}

pub fn new_path(p: NewPath) -> RpcResult {
    let local_addr = parse_addr("local_addr", &p.local_addr)?;
    let remote_addr = parse_addr("remote_addr", &p.remote_addr)?;
    let pid = p.peer_node_id.min(255) as u8;
    with_resource(&p.resource, move |r| {
        let peer = r
            .peer(pid)
            .ok_or_else(|| format!("resource '{}' has no peer node-id {pid}", r.name))?;
        let mut paths = peer.paths.borrow_mut();
        if paths.contains(&(local_addr, remote_addr)) {
            return Err("that path exists already".into());
        }
        if !paths.is_empty() {
            return Err("only one path per connection is supported".into());
        }
        paths.push((local_addr, remote_addr));
        Ok(Value::Bool(true))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRef {
    pub resource: String,
    pub peer_node_id: u32,
    #[serde(default)]
    pub discard_my_data: bool,
}

pub fn connect(p: PeerRef) -> RpcResult {
    let pid = p.peer_node_id.min(255) as u8;
    let name = p.resource.clone();
    let home = find_shared(&name)
        .ok_or_else(|| format!("resource '{name}' does not exist"))?
        .home;
    let discard = p.discard_my_data;
    let target = with_resource(&p.resource, move |r| {
        let peer = r
            .peer(pid)
            .ok_or_else(|| format!("resource '{}' has no peer node-id {pid}", r.name))?;
        peer.discard_my_data.set(discard);
        if peer.connector.borrow().is_some() {
            return Ok(None);
        }
        let (local_addr, remote) = *peer
            .paths
            .borrow()
            .first()
            .ok_or("no path to the peer; add one with repl_new_path")?;
        let mut proto = wire::Protocol {
            protocol: peer.net.protocol.to_wire(),
            after_sb_0pri: 0,
            after_sb_1pri: 0,
            after_sb_2pri: 0,
            discard_node: 0xff,
            flags: 0,
        };
        if discard {
            proto.flags |= 1;
        }
        Ok(Some(PeerTarget {
            resource: r.name.clone(),
            my_node_id: r.node_id,
            peer_node_id: pid,
            local: local_addr,
            remote,
            connect_int: peer.net.connect_int,
            protocol: proto,
        }))
    })?;
    let Some(target) = target else {
        return Ok(Value::Bool(true));
    };
    let acceptor = target.my_node_id > target.peer_node_id;
    let local_addr = target.local;
    if acceptor {
        connect::listen(local_addr)?;
    }
    let rt = runtime()?;
    let (n1, n2) = (name.clone(), name.clone());
    let rt2 = rt.clone();
    let connector = Connector::spawn(
        target,
        move || {
            rt.run_on(home, {
                let n1 = n1.clone();
                move || local(&n1).and_then(|r| r.peer(pid).and_then(|p| r.local_view(&p)))
            })
        },
        move |hs| {
            let n2 = n2.clone();
            rt2.run_on(home, move || match local(&n2) {
                Some(r) => r.adopt(pid, hs),
                None => Err(("the resource is gone".to_string(), false)),
            })
        },
    );
    with_resource(&name, move |r| {
        let peer = r.peer(pid).ok_or("peer removed")?;
        *peer.connector.borrow_mut() = Some(connector);
        if acceptor {
            *peer.listening.borrow_mut() = Some(local_addr);
        }
        if peer.conn_state.get() == ConnState::StandAlone {
            peer.conn_state.set(ConnState::Connecting);
        }
        Ok(Value::Bool(true))
    })
}

fn disconnect_on_home(r: &Rc<Resource>, peer: &Rc<Peer>) {
    if let Some(c) = peer.connector.borrow_mut().take() {
        c.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(addr) = peer.listening.borrow_mut().take() {
        connect::unlisten(addr);
    }
    let link = peer.link.borrow().clone();
    if let Some(link) = link {
        link.fail("disconnect requested");
    }
    peer.conn_state.set(ConnState::StandAlone);
    let _ = r;
}

pub fn disconnect(p: PeerRef) -> RpcResult {
    let pid = p.peer_node_id.min(255) as u8;
    with_resource(&p.resource, move |r| {
        let peer = r
            .peer(pid)
            .ok_or_else(|| format!("resource '{}' has no peer node-id {pid}", r.name))?;
        disconnect_on_home(r, &peer);
        Ok(Value::Bool(true))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Primary {
    pub resource: String,
    #[serde(default)]
    pub force: bool,
}

pub fn primary(p: Primary) -> RpcResult {
    let force = p.force;
    with_resource(&p.resource, move |r| {
        if r.role.get() == Role::Primary {
            return Ok(Value::Bool(true));
        }
        let vol = r
            .volume()
            .ok_or("no disk attached (diskless Primary is not supported)")?;
        if let Some(other) = r
            .peers
            .borrow()
            .iter()
            .find(|p| p.established_link().is_some() && p.peer_role.get() == Role::Primary)
        {
            return Err(format!(
                "{} is Primary; only one Primary at a time",
                other.name
            ));
        }
        let disk = vol.disk_state.get();
        let mut regenerate = false;
        if disk != DiskState::UpToDate {
            if !force {
                return Err(format!("the local disk is {disk}; only an UpToDate disk can be promoted (use --force to declare this node's data good)"));
            }
            if r.peers
                .borrow()
                .iter()
                .any(|p| p.established_link().is_some() && p.peer_disk.get() == DiskState::UpToDate)
            {
                return Err(
                    "a connected peer is UpToDate: let the resync finish instead of forcing".into(),
                );
            }
            let mut sb = vol.sb.borrow_mut();
            sb.flags |= meta_flag::CONSISTENT;
            sb.flags &= !meta_flag::OUTDATED;
            regenerate = true;
        }
        if regenerate {
            // This node's data becomes the truth: a new generation every peer lacks.
            let absent: Vec<u8> = r.peers.borrow().iter().map(|p| p.node_id).collect();
            let uuid = crate::meta::generation::random_uuid();
            crate::meta::generation::new_generation(&mut vol.sb.borrow_mut(), &absent, uuid);
            r.set_disk_state(DiskState::UpToDate);
            tracing::warn!(
                "{}: forced Primary; new current UUID {uuid:016X}, peers will be fully synced",
                r.name
            );
        }
        vol.sb.borrow_mut().flags |= meta_flag::PRIMARY;
        vol.persist_sb(|_| {});
        r.set_role(Role::Primary);
        r.need_new_gen.set(
            !regenerate
                && r.peers
                    .borrow()
                    .iter()
                    .any(|p| p.established_link().is_none()),
        );
        let peers = r.peers.borrow().clone();
        for peer in peers {
            if let Some(link) = peer.established_link() {
                if regenerate {
                    // Reconnect so the handshake decides the (full) sync.
                    link.fail("forced Primary: reconnecting to resync");
                } else {
                    link.data.send(&Packet::State(wire::State {
                        role: Role::Primary.to_wire(),
                        disk: DiskState::UpToDate.to_wire(),
                        flags: 0,
                    }));
                }
            }
        }
        tracing::info!("{}: role Primary", r.name);
        Ok(Value::Bool(true))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRef {
    pub resource: String,
    #[serde(default)]
    pub volume: Option<u32>,
}

pub fn secondary(p: ResourceRef) -> RpcResult {
    with_resource(&p.resource, |r| {
        demote(r);
        Ok(Value::Bool(true))
    })
}

fn demote(r: &Rc<Resource>) {
    if r.role.get() != Role::Primary {
        return;
    }
    r.set_role(Role::Secondary);
    r.need_new_gen.set(false);
    if let Some(vol) = r.volume() {
        vol.sb.borrow_mut().flags &= !meta_flag::PRIMARY;
        vol.persist_bitmaps(|_| {});
        vol.persist_sb(|_| {});
    }
    for peer in r.peers.borrow().iter() {
        if let Some(link) = peer.established_link() {
            link.data.send(&Packet::State(wire::State {
                role: Role::Secondary.to_wire(),
                disk: r.disk_state().to_wire(),
                flags: 0,
            }));
        }
    }
    tracing::info!("{}: role Secondary", r.name);
}

/// Detaches the disk: no more I/O, metadata written clean, claim released.
fn detach_disk(name: &str) -> Result<(), String> {
    let (device, primary) = with_resource(name, |r| {
        let vol = r.volume().ok_or("no disk attached")?;
        Ok((vol.device.clone(), r.role.get() == Role::Primary))
    })?;
    if primary {
        return Err(
            "demote to Secondary before detaching (a diskless Primary is not supported)".into(),
        );
    }
    with_resource(name, |r| {
        for p in r.peers.borrow().clone() {
            disconnect_on_home(r, &p);
        }
        Ok(())
    })?;
    oxstor_bdev::registry::unregister(&device, Some("repl")).map_err(|e| e.to_string())?;
    let shared = find_shared(name).ok_or("resource vanished")?;
    let rt = runtime()?;
    let name2 = name.to_string();
    let rx = rt.call_on(
        shared.home,
        move |reply: oxstor_reactor::runtime::Reply<Result<(), String>>| {
            let Some(r) = local(&name2) else {
                return reply.send(Err("resource vanished".into()));
            };
            let Some(vol) = r.volume() else {
                return reply.send(Ok(()));
            };
            let clean = r.writes.borrow().inflight.is_empty();
            if clean {
                vol.sb.borrow_mut().flags |= meta_flag::AL_CLEAN;
            }
            vol.sb.borrow_mut().flags &= !meta_flag::PRIMARY;
            vol.persist_bitmaps(|_| {});
            let r2 = r.clone();
            vol.persist_sb(move |ok| {
                r2.volume.borrow_mut().take();
                r2.set_disk_state(DiskState::Diskless);
                reply.send(if ok {
                    Ok(())
                } else {
                    Err("writing the metadata failed".into())
                });
            });
        },
    );
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .map_err(|_| "detach timed out".to_string())?
}

pub fn detach(p: ResourceRef) -> RpcResult {
    detach_disk(&p.resource)?;
    Ok(Value::Bool(true))
}

pub fn down(p: ResourceRef) -> RpcResult {
    let name = p.resource;
    // Refuse before changing anything (as drbdsetup does for an open device): otherwise the
    // unregister in detach_disk fails only after the demotion and the disconnects.
    let device = with_resource(&name, |r| Ok(r.volume().map(|v| v.device.clone())))?;
    if let Some(holder) = device
        .as_deref()
        .and_then(|d| oxstor_bdev::registry::lookup(d).ok())
        .and_then(|e| e.claimed_by())
    {
        return Err(format!(
            "device {} is in use by {holder}; remove it from there first",
            device.unwrap_or_default()
        ));
    }
    with_resource(&name, |r| {
        demote(r);
        for peer in r.peers.borrow().clone() {
            disconnect_on_home(r, &peer);
        }
        Ok(())
    })?;
    let attached = with_resource(&name, |r| Ok(r.volume().is_some()))?;
    if attached {
        detach_disk(&name)?;
    }
    let shared = find_shared(&name).ok_or("resource vanished")?;
    let rt = runtime()?;
    let n = name.clone();
    rt.run_on(shared.home, move || {
        resource::remove_local(&n);
    });
    directory().retain(|s| s.name != name);
    tracing::info!("resource {name} is down");
    Ok(Value::Bool(true))
}

/// Brings every resource down (daemon shutdown): peers disconnected, metadata clean.
pub fn shutdown_all() {
    let names: Vec<String> = directory().iter().map(|s| s.name.clone()).collect();
    for name in names {
        if let Err(e) = down(ResourceRef {
            resource: name.clone(),
            volume: None,
        }) {
            tracing::warn!("resource {name}: {e}");
        }
    }
}

pub fn verify(p: PeerRef) -> RpcResult {
    let pid = p.peer_node_id.min(255) as u8;
    with_resource(&p.resource, move |r| {
        let peer = r
            .peer(pid)
            .ok_or_else(|| format!("resource '{}' has no peer node-id {pid}", r.name))?;
        r.start_verify(&peer)?;
        Ok(Value::Bool(true))
    })
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {
    #[serde(default)]
    pub resource: Option<String>,
}

pub fn status(p: StatusParams) -> RpcResult {
    let names: Vec<String> = directory()
        .iter()
        .filter(|s| p.resource.as_ref().is_none_or(|n| *n == s.name))
        .map(|s| s.name.clone())
        .collect();
    if let Some(n) = &p.resource {
        if names.is_empty() {
            return Err(format!("resource '{n}' does not exist"));
        }
    }
    let mut out = Vec::new();
    for name in names {
        out.push(with_resource(&name, |r| Ok(status_of(r)))?);
    }
    Ok(Value::Array(out))
}

fn status_of(r: &Rc<Resource>) -> Value {
    let vol = r.volume();
    let volumes: Vec<Value> = vol
        .iter()
        .map(|v| {
            json!({
                "volume": v.number,
                "device": v.device,
                "disk": v.backing.name(),
                "disk_state": v.disk_state.get().to_string(),
                "size_blocks": v.data_blocks,
                "block_size": v.block_size,
                "current_uuid": format!("{:016X}", v.sb.borrow().current_uuid),
            })
        })
        .collect();
    let connections: Vec<Value> = r
        .peers
        .borrow()
        .iter()
        .map(|p| {
            let connected = p.established_link().is_some();
            let bits = vol.as_ref().map_or(0, |v| v.dirty_count(p.slot));
            let (done, rate, eta) = match (p.sync.borrow().as_ref(), connected) {
                (Some(run), true) => {
                    let total = run.total_bits.max(1) as f64;
                    let done = 100.0 * (1.0 - bits as f64 / total).clamp(0.0, 1.0);
                    let rate = match (run.samples.front(), run.samples.back()) {
                        (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) as f64 * 4.0 / (b.0 - a.0).as_secs_f64(),
                        _ => 0.0,
                    };
                    let eta = if rate > 0.0 { Some((bits as f64 * 4.0 / rate).ceil() as u64) } else { None };
                    (Some((done * 100.0).round() / 100.0), Some(rate.round() as u64), eta)
                }
                _ => (None, None, None),
            };
            let verify = p.verify.borrow();
            let vblocks = vol.as_ref().map_or(1, |v| v.data_blocks.max(1));
            let vbs = vol.as_ref().map_or(4096, |v| v.block_size as u64);
            json!({
                "peer_node_id": p.node_id,
                "name": p.name,
                "connection_state": p.conn_state.get().to_string(),
                "peer_role": p.peer_role.get().to_string(),
                "protocol": p.net.protocol.name(),
                "split_brain": p.split_brain.get(),
                "last_error": *p.last_error.borrow(),
                "peer_devices": [{
                    "volume": vol.as_ref().map_or(0, |v| v.number),
                    "replication_state": p.repl_state.get().to_string(),
                    "peer_disk_state": p.peer_disk.get().to_string(),
                    "out_of_sync_kib": bits * 4,
                    "done_percent": done,
                    "resync_rate_kib_s": rate,
                    "eta_s": eta,
                    "resynced_blocks": p.sync.borrow().as_ref().map_or(0, |s| s.resynced_blocks),
                    "verify_done_percent": verify.as_ref().map(|v| (10000.0 * v.done_blocks as f64 / vblocks as f64).round() / 100.0),
                    "verify_out_of_sync_kib": verify.as_ref().map_or(0, |v| v.out_of_sync * vbs / 1024),
                    "verify_finished": verify.as_ref().map(|v| v.finished),
                }],
            })
        })
        .collect();
    json!({
        "name": r.name,
        "node_id": r.node_id,
        "role": r.role.get().to_string(),
        "volumes": volumes,
        "connections": connections,
    })
}

pub fn create_md(_p: ResourceRef) -> RpcResult {
    Err("metadata is created by repl_attach when the disk has none; nothing to do".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCurrentUuid {
    pub resource: String,
    #[serde(default)]
    pub clear_bitmap: bool,
}

pub fn new_current_uuid(p: NewCurrentUuid) -> RpcResult {
    let _ = p.clear_bitmap;
    Err(format!(
        "{}: new-current-uuid is not supported yet; use `oxadm primary --force` on one node to start the initial sync",
        p.resource
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitSync {
    pub resource: String,
    #[serde(default = "default_wait")]
    pub timeout_s: f64,
}

fn default_wait() -> f64 {
    300.0
}

/// `drbdadm wait-sync`: waits until every peer is connected with no resync running (and the
/// local disk UpToDate or the peers' disks UpToDate); errors on timeout or a StandAlone peer.
pub fn wait_sync(p: WaitSync) -> RpcResult {
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_secs_f64(p.timeout_s.clamp(0.0, 86400.0));
    loop {
        let state = with_resource(&p.resource, |r| {
            let mut waiting = Vec::new();
            for peer in r.peers.borrow().iter() {
                match peer.conn_state.get() {
                    ConnState::StandAlone => {
                        return Err(format!(
                            "{} is StandAlone{}",
                            peer.name,
                            if peer.last_error.borrow().is_empty() {
                                String::new()
                            } else {
                                format!(": {}", peer.last_error.borrow())
                            }
                        ))
                    }
                    ConnState::Connected
                        if matches!(
                            peer.repl_state.get(),
                            ReplState::Established | ReplState::VerifyS | ReplState::VerifyT
                        ) => {}
                    _ => waiting.push(format!(
                        "{} ({}, {})",
                        peer.name,
                        peer.conn_state.get(),
                        peer.repl_state.get()
                    )),
                }
            }
            Ok(waiting)
        })?;
        if state.is_empty() {
            return Ok(Value::Bool(true));
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("timed out waiting for {}", state.join(", ")));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
