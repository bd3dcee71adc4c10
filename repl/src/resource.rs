//! A replication resource: its role, its local volume and its peers, living on one reactor
//! (the resource's *home core*).
//!
//! Everything that orders writes — sequence numbers, epochs, the transfer log, the overlap
//! check, bitmaps, the activity log — belongs to the home core, so none of it takes a lock.
//! Control calls (RPCs, the connector threads) reach it with [`with_resource`] messages; the
//! bdev's channels on other cores relay writes to it (see `device.rs`).

use crate::connect::Connector;
use crate::link::Link;
use crate::options::{DiskOptions, NetOptions};
use crate::state::{ConnState, DiskState, ReplState, Role};
use crate::volume::Volume;
use oxstor_bdev::BdevIo;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What other threads may read without a message: the device's gatekeeping flags.
pub struct Shared {
    pub name: String,
    pub home: usize,
    pub primary: AtomicBool,
    /// The local disk state, as `DiskState::to_wire`.
    pub disk: AtomicU8,
}

impl Shared {
    pub fn is_primary(&self) -> bool {
        self.primary.load(Ordering::Acquire)
    }
    pub fn disk_state(&self) -> DiskState {
        DiskState::from_wire(self.disk.load(Ordering::Acquire))
    }
}

/// Resource name → home core and shared flags, for the control path.
static DIRECTORY: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());

pub fn directory() -> std::sync::MutexGuard<'static, Vec<Arc<Shared>>> {
    DIRECTORY.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn find_shared(name: &str) -> Option<Arc<Shared>> {
    directory().iter().find(|s| s.name == name).cloned()
}

thread_local! {
    static RESOURCES: RefCell<HashMap<String, Rc<Resource>>> = RefCell::new(HashMap::new());
}

/// The resource named `name` if it lives on this core.
pub fn local(name: &str) -> Option<Rc<Resource>> {
    RESOURCES.with(|r| r.borrow().get(name).cloned())
}

pub(crate) fn insert_local(res: Rc<Resource>) {
    RESOURCES.with(|r| r.borrow_mut().insert(res.name.clone(), res));
}

pub(crate) fn remove_local(name: &str) -> Option<Rc<Resource>> {
    RESOURCES.with(|r| r.borrow_mut().remove(name))
}

/// Runs `f` on the resource's home core and waits for its answer (control path only).
pub fn with_resource<R: Send + 'static>(
    name: &str,
    f: impl FnOnce(&Rc<Resource>) -> Result<R, String> + Send + 'static,
) -> Result<R, String> {
    let shared = find_shared(name).ok_or_else(|| format!("resource '{name}' does not exist"))?;
    let rt = oxstor_bdev::registry::runtime().ok_or("no reactor runtime is running")?;
    let name = name.to_string();
    rt.run_on(shared.home, move || match local(&name) {
        Some(r) => f(&r),
        None => Err(format!("resource '{name}' does not exist")),
    })
}

/// A write waiting to start (overlap, activity log, metadata update).
pub struct Waiting {
    pub io: Box<BdevIo>,
    /// Activity-log extents already taken (refcounted) for it.
    pub extents: Option<std::ops::RangeInclusive<u32>>,
    /// For AL waiters: the commit number that covers them.
    pub al_commit: u64,
}

/// An epoch being received from the Primary.
pub struct RxEpoch {
    pub barrier: Option<u32>,
    pub pending: u32,
}

pub struct SyncRun {
    pub source: bool,
    pub total_bits: u64,
    pub done_bits: u64,
    pub next_bit: u64,
    pub inflight: u32,
    pub started: Instant,
    pub resynced_blocks: u64,
    /// The peer's bitmap has fully arrived (a source pushes only after that).
    pub peer_bitmap_in: bool,
    pub tokens: f64,
    pub last_refill: Instant,
    /// (time, done_bits) samples for the speed shown in status.
    pub samples: VecDeque<(Instant, u64)>,
}

/// A verify range in flight: (first block, blocks, the peer's digests, ours).
pub type VerifyPending = (u64, u32, Option<Vec<u32>>, Option<Vec<u32>>);

/// Ranges sent in one epoch, until the epoch's BarrierAck.
pub type TlEpoch = (u32, Vec<(u64, u64)>);

pub struct VerifyRun {
    pub next_block: u64,
    pub inflight: u32,
    pub done_blocks: u64,
    pub out_of_sync: u64,
    pub started: Instant,
    /// block_id → (range, peer digests, local digests).
    pub pending: HashMap<u64, VerifyPending>,
    pub finished: bool,
}

pub struct Peer {
    pub node_id: u8,
    pub name: String,
    pub slot: usize,
    pub net: NetOptions,
    pub disk_opts: DiskOptions,
    pub discard_node: Option<u8>,
    pub resource: Weak<Resource>,
    pub paths: RefCell<Vec<(SocketAddr, SocketAddr)>>,
    pub conn_state: Cell<ConnState>,
    pub repl_state: Cell<ReplState>,
    pub link: RefCell<Option<Rc<Link>>>,
    pub peer_role: Cell<Role>,
    pub peer_disk: Cell<DiskState>,
    pub connector: RefCell<Option<Connector>>,
    pub listening: RefCell<Option<SocketAddr>>,
    pub discard_my_data: Cell<bool>,
    pub last_error: RefCell<String>,
    pub split_brain: Cell<bool>,
    // Primary side: epochs and the transfer log (ranges not yet covered by a BarrierAck).
    pub epoch: Cell<u32>,
    pub epoch_writes: Cell<u32>,
    pub close_epoch: Cell<bool>,
    pub seq: Cell<u32>,
    pub tl: RefCell<VecDeque<TlEpoch>>,
    // Receiving side.
    pub rx_epochs: RefCell<VecDeque<RxEpoch>>,
    pub rx_base: Cell<u64>,
    pub sync: RefCell<Option<SyncRun>>,
    pub verify: RefCell<Option<VerifyRun>>,
    pub sync_poller: Cell<Option<oxstor_reactor::PollerId>>,
    pub(crate) apply_done: RefCell<Option<Rc<crate::apply::ApplyDone>>>,
}

impl Peer {
    pub fn established_link(&self) -> Option<Rc<Link>> {
        if self.conn_state.get() != ConnState::Connected {
            return None;
        }
        self.link
            .borrow()
            .as_ref()
            .filter(|l| !l.dead.get())
            .cloned()
    }
}

pub struct Resource {
    pub name: String,
    pub node_id: u8,
    pub shared: Arc<Shared>,
    pub role: Cell<Role>,
    pub volume: RefCell<Option<Rc<Volume>>>,
    pub peers: RefCell<Vec<Rc<Peer>>>,
    /// A new current UUID is due at the next write (a Primary lost or lacks a peer).
    pub need_new_gen: Cell<bool>,
    pub(crate) writes: RefCell<crate::write::WriteState>,
}

impl Resource {
    pub fn new(name: String, node_id: u8, shared: Arc<Shared>) -> Rc<Resource> {
        Rc::new(Resource {
            name,
            node_id,
            shared,
            role: Cell::new(Role::Secondary),
            volume: RefCell::new(None),
            peers: RefCell::new(Vec::new()),
            need_new_gen: Cell::new(false),
            writes: RefCell::new(crate::write::WriteState::default()),
        })
    }

    pub fn volume(&self) -> Option<Rc<Volume>> {
        self.volume.borrow().clone()
    }

    pub fn peer(&self, node_id: u8) -> Option<Rc<Peer>> {
        self.peers
            .borrow()
            .iter()
            .find(|p| p.node_id == node_id)
            .cloned()
    }

    pub fn peer_index(&self, node_id: u8) -> Option<usize> {
        self.peers
            .borrow()
            .iter()
            .position(|p| p.node_id == node_id)
    }

    pub fn set_disk_state(&self, s: DiskState) {
        let old = self.disk_state();
        if let Some(v) = self.volume() {
            v.disk_state.set(s);
        }
        self.shared.disk.store(s.to_wire(), Ordering::Release);
        // Every connected peer hears of the change, not only the one a resync runs with:
        // otherwise a third node keeps showing (and deciding on) a stale disk state.
        if old != s {
            if let Ok(peers) = self.peers.try_borrow() {
                let state = crate::wire::State {
                    role: self.role.get().to_wire(),
                    disk: s.to_wire(),
                    flags: 0,
                };
                for p in peers.iter() {
                    if let Some(link) = p.established_link() {
                        link.data.send(&crate::wire::Packet::State(state));
                    }
                }
            }
        }
    }

    pub fn disk_state(&self) -> DiskState {
        self.volume()
            .map_or(DiskState::Diskless, |v| v.disk_state.get())
    }

    pub fn set_role(&self, r: Role) {
        self.role.set(r);
        self.shared
            .primary
            .store(r == Role::Primary, Ordering::Release);
    }
}
