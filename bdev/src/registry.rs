//! The bdev registry: names, creation order, exclusive claims, and per-core channels.
//!
//! The registry is control-path state behind a mutex. The I/O path never touches it: a core
//! gets an [`IoChannel`] once (cached per core) and submits through that.

use crate::channel::IoChannel;
use crate::iostat::{IoStat, IoStatSnapshot};
use crate::traits::Bdev;
use crate::BdevError;
use oxstor_reactor::Handle;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A registered bdev and its bookkeeping.
pub struct BdevEntry {
    id: u64,
    pub bdev: Arc<dyn Bdev>,
    claim: Mutex<Option<String>>,
}

impl BdevEntry {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn name(&self) -> &str {
        self.bdev.name()
    }

    /// The module holding the exclusive claim, if any.
    pub fn claimed_by(&self) -> Option<String> {
        self.claim.lock().map(|c| c.clone()).unwrap_or(None)
    }

    /// This core's channel for the bdev, created on first use. Must run on a reactor.
    pub fn channel(self: &Arc<Self>) -> Result<Rc<IoChannel>, BdevError> {
        if let Some(ch) = CHANNELS.with(|c| c.borrow().get(&self.id).cloned()) {
            return Ok(ch);
        }
        if !oxstor_reactor::is_reactor_thread() {
            return Err(BdevError::NoRuntime);
        }
        let inner = self.bdev.create_channel()?;
        let stat = stat_for(self.id, self.bdev.geometry().block_size);
        let ch = Rc::new(IoChannel::new(self.clone(), inner, stat));
        CHANNELS.with(|c| c.borrow_mut().insert(self.id, ch.clone()));
        Ok(ch)
    }
}

/// Holds an exclusive claim on a bdev until dropped (a RAID member, a delay bdev's base).
pub struct ClaimGuard {
    entry: Arc<BdevEntry>,
}

impl ClaimGuard {
    pub fn entry(&self) -> &Arc<BdevEntry> {
        &self.entry
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Ok(mut c) = self.entry.claim.lock() {
            *c = None;
        }
    }
}

struct Registry {
    // Insertion order is creation order, which is dependency order for save_config.
    bdevs: Vec<Arc<BdevEntry>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { bdevs: Vec::new() });
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static RUNTIME: RwLock<Option<Handle>> = RwLock::new(None);

thread_local! {
    static CHANNELS: RefCell<HashMap<u64, Rc<IoChannel>>> = RefCell::new(HashMap::new());
    static STATS: RefCell<HashMap<u64, Rc<IoStat>>> = RefCell::new(HashMap::new());
}

fn stat_for(id: u64, block_size: u32) -> Rc<IoStat> {
    STATS.with(|s| {
        s.borrow_mut()
            .entry(id)
            .or_insert_with(|| Rc::new(IoStat::new(block_size)))
            .clone()
    })
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tells the bdev layer which reactors to use for per-core work (deletes, iostat).
pub fn set_runtime(handle: Option<Handle>) {
    *RUNTIME.write().unwrap_or_else(|p| p.into_inner()) = handle;
}

pub fn runtime() -> Option<Handle> {
    RUNTIME.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Adds a bdev; its name must be unique (aliases are not supported).
pub fn register(bdev: Arc<dyn Bdev>) -> Result<Arc<BdevEntry>, BdevError> {
    let name = bdev.name().to_string();
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
        return Err(BdevError::Invalid(format!("invalid bdev name '{name}'")));
    }
    let mut reg = registry();
    if reg.bdevs.iter().any(|e| e.name() == name) {
        return Err(BdevError::Exists(name));
    }
    let entry = Arc::new(BdevEntry {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        bdev,
        claim: Mutex::new(None),
    });
    reg.bdevs.push(entry.clone());
    tracing::info!("bdev {name} registered");
    Ok(entry)
}

pub fn lookup(name: &str) -> Result<Arc<BdevEntry>, BdevError> {
    registry()
        .bdevs
        .iter()
        .find(|e| e.name() == name)
        .cloned()
        .ok_or_else(|| BdevError::NotFound(name.to_string()))
}

/// All bdevs in creation order.
pub fn list() -> Vec<Arc<BdevEntry>> {
    registry().bdevs.clone()
}

/// Takes the exclusive claim on `name` for `owner`.
pub fn claim(name: &str, owner: &str) -> Result<ClaimGuard, BdevError> {
    let entry = lookup(name)?;
    let mut c = entry.claim.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(holder) = c.as_ref() {
        return Err(BdevError::Claimed(name.to_string(), holder.clone()));
    }
    *c = Some(owner.to_string());
    drop(c);
    Ok(ClaimGuard { entry })
}

/// Opens a bdev for I/O. Opening for writes fails if a module holds the claim.
pub fn open(name: &str, write: bool) -> Result<Arc<BdevEntry>, BdevError> {
    let entry = lookup(name)?;
    if write {
        if let Some(holder) = entry.claimed_by() {
            return Err(BdevError::Claimed(name.to_string(), holder));
        }
    }
    Ok(entry)
}

/// Removes a bdev: refuses if claimed or owned by another module; drops every core's
/// channel (waiting for the reactors), then lets the module destroy it.
pub fn unregister(name: &str, module: Option<&str>) -> Result<(), BdevError> {
    let entry = {
        let mut reg = registry();
        let pos = reg
            .bdevs
            .iter()
            .position(|e| e.name() == name)
            .ok_or_else(|| BdevError::NotFound(name.to_string()))?;
        let e = &reg.bdevs[pos];
        if let Some(m) = module {
            if e.bdev.module() != m {
                return Err(BdevError::NotFound(format!("{name} (not a {m} bdev)")));
            }
        }
        if let Some(holder) = e.claimed_by() {
            return Err(BdevError::Claimed(name.to_string(), holder));
        }
        reg.bdevs.remove(pos)
    };
    let id = entry.id;
    if let Some(rt) = runtime() {
        rt.run_on_all(move || {
            CHANNELS.with(|c| c.borrow_mut().remove(&id));
            STATS.with(|s| s.borrow_mut().remove(&id));
        });
    } else {
        CHANNELS.with(|c| c.borrow_mut().remove(&id));
    }
    entry.bdev.destroy();
    tracing::info!("bdev {name} unregistered");
    Ok(())
}

/// Drops this core's channels (reactor shutdown) so modules release their per-core state.
pub fn drop_core_channels() {
    let channels = CHANNELS.with(|c| std::mem::take(&mut *c.borrow_mut()));
    drop(channels);
}

/// Removes every bdev, newest first (stacked ones before their bases): clean shutdown.
pub fn unregister_all() {
    loop {
        let Some(last) = list().pop() else { break };
        let name = last.name().to_string();
        // Release any claim: its holder is being torn down too, in the same order.
        if let Ok(mut c) = last.claim.lock() {
            *c = None;
        }
        if let Err(e) = unregister(&name, None) {
            tracing::error!("cannot remove bdev {name} at shutdown: {e}");
            break;
        }
    }
}

/// Sums every core's iostat for one bdev.
pub fn iostat(entry: &Arc<BdevEntry>) -> IoStatSnapshot {
    let id = entry.id;
    let mut total = IoStatSnapshot::default();
    let per_core = match runtime() {
        Some(rt) => {
            rt.run_on_all(move || STATS.with(|s| s.borrow().get(&id).map(|st| st.snapshot())))
        }
        None => Vec::new(),
    };
    for snap in per_core.into_iter().flatten() {
        total.merge(&snap);
    }
    total
}
