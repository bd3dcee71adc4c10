//! Controllers: what one host association shares across its admin and I/O queues.
//!
//! A controller lives as long as its admin queue. Its I/O queues may sit on other reactors, so
//! its state is shared behind mutexes; only admin commands and queue setup touch it, never the
//! per-command I/O path.

use super::subsystem::Subsystem;
use crate::spec::registers::{Cc, Csts};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Asynchronous event: notice (type 2), namespace attribute changed (info 0), log page 0x04.
pub const AER_NAMESPACE_CHANGED: u32 = 0x02 | (0x04 << 16);
/// How many Asynchronous Event Requests a host may leave outstanding (AERL is 0-based).
pub const AER_LIMIT: usize = 4;

pub struct Registers {
    pub cc: Cc,
    pub csts: Csts,
}

pub struct Features {
    pub num_io_queues: u16,
    pub async_event_config: u32,
    pub volatile_write_cache: bool,
}

pub struct Aer {
    /// CIDs of Asynchronous Event Requests waiting for an event.
    pub outstanding: Vec<u16>,
    /// Events that arrived with no request outstanding.
    pub pending: VecDeque<u32>,
    /// NSIDs for the Changed Namespace List log page.
    pub changed_namespaces: Vec<u32>,
}

pub struct IoQueueRef {
    pub qid: u16,
    pub core: usize,
    pub conn: u64,
}

pub struct Controller {
    pub cntlid: u16,
    pub subsystem: Arc<Subsystem>,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    pub admin_core: usize,
    pub admin_conn: u64,
    pub max_io_queues: u16,
    pub queue_depth: u16,
    regs: Mutex<Registers>,
    features: Mutex<Features>,
    aer: Mutex<Aer>,
    io_queues: Mutex<Vec<IoQueueRef>>,
    kato_ms: AtomicU32,
    last_keepalive_ns: AtomicU64,
    dead: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Controller {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cntlid: u16,
        subsystem: Arc<Subsystem>,
        hostnqn: String,
        hostid: [u8; 16],
        admin_core: usize,
        admin_conn: u64,
        max_io_queues: u16,
        queue_depth: u16,
        kato_ms: u32,
    ) -> Controller {
        Controller {
            cntlid,
            subsystem,
            hostnqn,
            hostid,
            admin_core,
            admin_conn,
            max_io_queues,
            queue_depth,
            regs: Mutex::new(Registers {
                cc: Cc::from_bits(0),
                csts: Csts::from_bits(0),
            }),
            features: Mutex::new(Features {
                num_io_queues: max_io_queues,
                async_event_config: 0,
                volatile_write_cache: true,
            }),
            aer: Mutex::new(Aer {
                outstanding: Vec::new(),
                pending: VecDeque::new(),
                changed_namespaces: Vec::new(),
            }),
            io_queues: Mutex::new(Vec::new()),
            kato_ms: AtomicU32::new(kato_ms),
            last_keepalive_ns: AtomicU64::new(oxstor_reactor::clock::now_ns()),
            dead: AtomicBool::new(false),
        }
    }

    pub fn regs(&self) -> MutexGuard<'_, Registers> {
        lock(&self.regs)
    }

    pub fn features(&self) -> MutexGuard<'_, Features> {
        lock(&self.features)
    }

    pub fn aer(&self) -> MutexGuard<'_, Aer> {
        lock(&self.aer)
    }

    pub fn is_ready(&self) -> bool {
        self.regs().csts.ready
    }

    pub fn kato_ms(&self) -> u32 {
        self.kato_ms.load(Ordering::Relaxed)
    }

    pub fn set_kato_ms(&self, ms: u32) {
        self.kato_ms.store(ms, Ordering::Relaxed);
        self.keep_alive();
    }

    pub fn keep_alive(&self) {
        self.last_keepalive_ns
            .store(oxstor_reactor::clock::now_ns(), Ordering::Relaxed);
    }

    /// Whether the host has been silent for longer than its keep-alive timeout allows. We
    /// give it half a timeout of slack, as hosts send at KATO/2 intervals at best.
    pub fn keep_alive_expired(&self, now_ns: u64) -> bool {
        let kato = self.kato_ms() as u64;
        kato > 0
            && now_ns.saturating_sub(self.last_keepalive_ns.load(Ordering::Relaxed))
                > (kato + kato / 2) * 1_000_000
    }

    pub fn add_io_queue(&self, q: IoQueueRef) -> bool {
        let mut qs = lock(&self.io_queues);
        if qs.iter().any(|e| e.qid == q.qid) {
            return false;
        }
        qs.push(q);
        true
    }

    pub fn remove_io_queue(&self, conn: u64) {
        lock(&self.io_queues).retain(|q| q.conn != conn);
    }

    pub fn io_queue_count(&self) -> usize {
        lock(&self.io_queues).len()
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// Records an asynchronous event; returns the CID of a waiting request to complete, if any.
    pub fn raise_event(&self, event: u32) -> Option<u16> {
        let mut aer = self.aer();
        match aer.outstanding.pop() {
            Some(cid) => Some(cid),
            None => {
                aer.pending.push_back(event);
                None
            }
        }
    }
}

static CONTROLLERS: Mutex<Vec<Arc<Controller>>> = Mutex::new(Vec::new());

pub fn register(ctrl: Arc<Controller>) {
    lock(&CONTROLLERS).push(ctrl);
}

pub fn find(nqn: &str, cntlid: u16) -> Option<Arc<Controller>> {
    lock(&CONTROLLERS)
        .iter()
        .find(|c| c.cntlid == cntlid && c.subsystem.nqn == nqn)
        .cloned()
}

pub fn cntlid_in_use(nqn: &str, cntlid: u16) -> bool {
    find(nqn, cntlid).is_some()
}

pub fn of_subsystem(nqn: &str) -> Vec<Arc<Controller>> {
    lock(&CONTROLLERS)
        .iter()
        .filter(|c| c.subsystem.nqn == nqn)
        .cloned()
        .collect()
}

pub fn on_core(core: usize) -> Vec<Arc<Controller>> {
    lock(&CONTROLLERS)
        .iter()
        .filter(|c| c.admin_core == core)
        .cloned()
        .collect()
}

pub fn count() -> usize {
    lock(&CONTROLLERS).len()
}

/// Ends a controller: forgets it and closes every queue it has, on whichever core.
pub fn destroy(ctrl: &Arc<Controller>, reason: &str) {
    if ctrl.dead.swap(true, Ordering::SeqCst) {
        return;
    }
    lock(&CONTROLLERS).retain(|c| !Arc::ptr_eq(c, ctrl));
    tracing::info!(
        "controller {} of {} (host {}) destroyed: {reason}",
        ctrl.cntlid,
        ctrl.subsystem.nqn,
        ctrl.hostnqn
    );
    let mut queues: Vec<(usize, u64)> = lock(&ctrl.io_queues)
        .drain(..)
        .map(|q| (q.core, q.conn))
        .collect();
    queues.push((ctrl.admin_core, ctrl.admin_conn));
    let Some(rt) = oxstor_bdev::registry::runtime() else {
        return;
    };
    for (core, conn) in queues {
        rt.send(core, move || super::conn::close_by_id(conn));
    }
}

/// Tells every controller of `subsystem` that namespace `nsid` changed (added, removed,
/// resized), completing an Asynchronous Event Request where the host enabled the notice.
pub fn namespace_changed(subsystem: &Subsystem, nsid: u32) {
    subsystem.bump_generation();
    for ctrl in of_subsystem(&subsystem.nqn) {
        {
            let mut aer = ctrl.aer();
            if !aer.changed_namespaces.contains(&nsid) {
                aer.changed_namespaces.push(nsid);
            }
        }
        // Async Event Configuration bit 8: namespace attribute notices.
        if ctrl.features().async_event_config & (1 << 8) == 0 {
            continue;
        }
        if let Some(cid) = ctrl.raise_event(AER_NAMESPACE_CHANGED) {
            let (core, conn) = (ctrl.admin_core, ctrl.admin_conn);
            if let Some(rt) = oxstor_bdev::registry::runtime() {
                rt.send(core, move || {
                    super::conn::complete_aer(conn, cid, AER_NAMESPACE_CHANGED)
                });
            }
        }
    }
}
