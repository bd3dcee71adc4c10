//! Subsystems: an NQN, its namespaces (bdevs), who may connect, and where it listens.

use crate::spec::nqn::DISCOVERY_NQN;
use oxstor_bdev::{BdevEntry, ClaimGuard};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A namespace: one bdev exported under an NSID.
pub struct Namespace {
    pub nsid: u32,
    pub bdev_name: String,
    pub entry: Arc<BdevEntry>,
    pub uuid: [u8; 16],
    pub nguid: [u8; 16],
    pub eui64: [u8; 8],
    /// Whether the namespace refuses writes (a replication Secondary exports one).
    pub read_only: bool,
    _claim: Option<ClaimGuard>,
    /// The parameters as given, for save_config.
    pub params: serde_json::Value,
}

impl Namespace {
    pub fn new(
        nsid: u32,
        entry: Arc<BdevEntry>,
        claim: Option<ClaimGuard>,
        params: serde_json::Value,
    ) -> Namespace {
        let uuid = parse_uuid(entry.bdev.uuid()).unwrap_or([0; 16]);
        let mut eui64 = [0u8; 8];
        eui64.copy_from_slice(&uuid[8..16]);
        Namespace {
            nsid,
            bdev_name: entry.name().to_string(),
            uuid,
            nguid: uuid,
            eui64,
            read_only: false,
            entry,
            _claim: claim,
            params,
        }
    }
}

pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A transport address a subsystem listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    pub trtype: String,
    pub adrfam: String,
    pub traddr: String,
    pub trsvcid: String,
    pub addr: SocketAddr,
}

pub struct SubsystemState {
    pub allow_any_host: bool,
    pub hosts: Vec<String>,
    pub namespaces: BTreeMap<u32, Arc<Namespace>>,
    pub listeners: Vec<ListenAddress>,
    pub next_cntlid: u16,
    /// NSIDs changed since each controller last read the Changed Namespace List.
    pub changed: Vec<u32>,
}

pub struct Subsystem {
    pub nqn: String,
    pub serial_number: String,
    pub model_number: String,
    pub max_namespaces: u32,
    pub min_cntlid: u16,
    pub max_cntlid: u16,
    pub ana_reporting: bool,
    state: Mutex<SubsystemState>,
    /// Bumped on every namespace change, so I/O queues can refresh their cached channels
    /// with one relaxed load per command.
    generation: AtomicU64,
}

impl Subsystem {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        nqn: String,
        serial_number: String,
        model_number: String,
        max_namespaces: u32,
        allow_any_host: bool,
        min_cntlid: u16,
        max_cntlid: u16,
        ana_reporting: bool,
    ) -> Subsystem {
        Subsystem {
            nqn,
            serial_number,
            model_number,
            max_namespaces,
            min_cntlid,
            max_cntlid,
            ana_reporting,
            state: Mutex::new(SubsystemState {
                allow_any_host,
                hosts: Vec::new(),
                namespaces: BTreeMap::new(),
                listeners: Vec::new(),
                next_cntlid: min_cntlid,
                changed: Vec::new(),
            }),
            generation: AtomicU64::new(1),
        }
    }

    pub fn is_discovery(&self) -> bool {
        self.nqn == DISCOVERY_NQN
    }

    pub fn state(&self) -> MutexGuard<'_, SubsystemState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        let st = self.state();
        st.allow_any_host || st.hosts.iter().any(|h| h == hostnqn)
    }

    pub fn namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        self.state().namespaces.get(&nsid).cloned()
    }

    /// Allocates a controller ID in [min_cntlid, max_cntlid], skipping ones in use.
    pub fn allocate_cntlid(&self, in_use: impl Fn(u16) -> bool) -> Option<u16> {
        let mut st = self.state();
        let span = (self.max_cntlid - self.min_cntlid) as u32 + 1;
        for _ in 0..span {
            let id = st.next_cntlid;
            st.next_cntlid = if id >= self.max_cntlid {
                self.min_cntlid
            } else {
                id + 1
            };
            if !in_use(id) {
                return Some(id);
            }
        }
        None
    }
}
