//! The replicated volume as a bdev (`device ox0;`), so it can be exported over NVMe/TCP or
//! stacked like any other.
//!
//! Reads go straight to the local disk from whichever core submits them (zero-copy, no
//! message), as long as the local disk is UpToDate. Writes must be ordered by the resource's
//! home core: submitted there, they enter the write path directly; submitted on another core,
//! they are relayed — the data is copied into a buffer that travels to the home core in a
//! message, and the status comes back the same way. A Secondary is not writable: writes fail
//! with EROFS and exporters report the namespace as write protected.

use crate::resource::{local, Shared};
use crate::state::DiskState;
use oxstor_bdev::{
    complete_later, registry, Bdev, BdevChannel, BdevEntry, BdevError, BdevIo, ConfigCall,
    Geometry, IoBuf, IoDone, IoStatus, IoType,
};
use oxstor_reactor::DmaBuf;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Writes reach peers in packets of at most this much data.
pub const MAX_TRANSFER_BYTES: u32 = 128 * 1024;

pub fn max_transfer_blocks(block_size: u32) -> u32 {
    (MAX_TRANSFER_BYTES / block_size).max(1)
}

pub struct ReplBdev {
    name: String,
    uuid: String,
    shared: Arc<Shared>,
    backing: Arc<BdevEntry>,
    geometry: Geometry,
}

impl ReplBdev {
    pub fn register(
        name: &str,
        shared: Arc<Shared>,
        backing: Arc<BdevEntry>,
        block_size: u32,
        blocks: u64,
    ) -> Result<(), BdevError> {
        let mut geometry = Geometry::new(block_size, blocks);
        geometry.max_transfer_blocks = max_transfer_blocks(block_size);
        registry::register(Arc::new(ReplBdev {
            name: name.to_string(),
            uuid: oxstor_bdev::new_uuid(),
            shared,
            backing,
            geometry,
        }))?;
        Ok(())
    }
}

impl Bdev for ReplBdev {
    fn name(&self) -> &str {
        &self.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn module(&self) -> &'static str {
        "repl"
    }
    fn product_name(&self) -> &'static str {
        "Replicated volume"
    }
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn io_type_supported(&self, t: IoType) -> bool {
        matches!(t, IoType::Read | IoType::Write | IoType::Flush)
    }
    fn writable(&self) -> bool {
        self.shared.is_primary()
    }
    fn create_channel(&self) -> Result<Box<dyn BdevChannel>, BdevError> {
        let backing = self.backing.channel()?;
        let here = oxstor_reactor::core_index();
        let home = (here == Some(self.shared.home))
            .then(|| local(&self.shared.name))
            .flatten();
        Ok(Box::new(ReplChannel {
            shared: self.shared.clone(),
            backing,
            home: home.map(|r| Rc::downgrade(&r)),
            here: here.unwrap_or(0),
            device: self.name.clone(),
            passthrough: Rc::new(Passthrough),
        }))
    }
    /// Created by `oxadm up` (repl_attach), not by replaying a bdev call.
    fn config_call(&self) -> Option<ConfigCall> {
        None
    }
    fn driver_info(&self) -> serde_json::Value {
        serde_json::json!({
            "resource": self.shared.name,
            "role": if self.shared.is_primary() { "Primary" } else { "Secondary" },
            "disk_state": self.shared.disk_state().to_string(),
            "backing": self.backing.name(),
        })
    }
}

struct ReplChannel {
    shared: Arc<Shared>,
    backing: Rc<oxstor_bdev::IoChannel>,
    home: Option<std::rc::Weak<crate::resource::Resource>>,
    here: usize,
    device: String,
    passthrough: Rc<Passthrough>,
}

/// Hands a passthrough I/O's result back to the original descriptor.
struct Passthrough;

impl IoDone for Passthrough {
    fn io_done(&self, io: Box<BdevIo>, _tag: u64) {
        let status = io.status;
        io.complete(status);
    }
}

impl BdevChannel for ReplChannel {
    fn submit(&self, io: Box<BdevIo>) {
        match io.io_type {
            IoType::Read | IoType::Flush => {
                if self.shared.disk_state() != DiskState::UpToDate {
                    return complete_later(io, IoStatus::Failed(libc::EIO));
                }
                // Same descriptor, same offset, down to the local disk: forwarded, so it
                // costs no frame of ours; behind another forward it needs one.
                let offset = io.offset_blocks;
                if let Err(io) = self.backing.forward(io, offset) {
                    self.backing.submit(io, self.passthrough.clone(), 0);
                }
            }
            IoType::Write => {
                if !self.shared.is_primary() {
                    return complete_later(io, IoStatus::Failed(libc::EROFS));
                }
                match self.home.as_ref().and_then(|w| w.upgrade()) {
                    Some(res) => res.submit_write(io),
                    None => relay(self.here, &self.shared, &self.device, io),
                }
            }
            _ => complete_later(io, IoStatus::Failed(libc::ENOTSUP)),
        }
    }
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static RELAYED: RefCell<HashMap<u64, Box<BdevIo>>> = RefCell::new(HashMap::new());
}

/// Sends a write to the home core; the answer completes `io` back here.
fn relay(here: usize, shared: &Arc<Shared>, device: &str, io: Box<BdevIo>) {
    let Some(rt) = oxstor_reactor::reactor::handle() else {
        return complete_later(io, IoStatus::Failed(libc::EIO));
    };
    let Some(mut data) = DmaBuf::alloc(io.buf.len()) else {
        return complete_later(io, IoStatus::Failed(libc::ENOMEM));
    };
    data.as_mut_slice().copy_from_slice(io.buf.as_slice());
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    let (offset, blocks) = (io.offset_blocks, io.num_blocks);
    RELAYED.with(|r| r.borrow_mut().insert(token, io));
    let device = device.to_string();
    let back = rt.clone();
    rt.send(shared.home, move || {
        let answer = move |status: IoStatus| {
            back.send(here, move || {
                if let Some(io) = RELAYED.with(|r| r.borrow_mut().remove(&token)) {
                    io.complete(status);
                }
            });
        };
        let entry = match registry::lookup(&device) {
            Ok(e) => e,
            Err(_) => return answer(IoStatus::Failed(libc::ENODEV)),
        };
        let channel = match entry.channel() {
            Ok(c) => c,
            Err(_) => return answer(IoStatus::Failed(libc::ENODEV)),
        };
        let io = BdevIo::new(IoType::Write, offset, blocks, IoBuf::Dma(data));
        channel.submit(
            io,
            Rc::new(RelayDone(RefCell::new(Some(Box::new(answer))))),
            0,
        );
    });
}

type Answer = Box<dyn FnOnce(IoStatus)>;

struct RelayDone(RefCell<Option<Answer>>);

impl IoDone for RelayDone {
    fn io_done(&self, io: Box<BdevIo>, _tag: u64) {
        if let Some(f) = self.0.borrow_mut().take() {
            f(io.status);
        }
    }
}
