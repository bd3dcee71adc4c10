//! The generic per-core channel every I/O enters through: checks, split, iostat.

use crate::complete_later;
use crate::io::{BdevIo, IoDone, IoStatus, IoType};
use crate::iobuf::IoBuf;
use crate::iostat::IoStat;
use crate::registry::BdevEntry;
use crate::traits::{BdevChannel, Geometry};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// Largest transfer a single I/O reaches a module with, unless the module says less.
pub const DEFAULT_MAX_TRANSFER_BYTES: u64 = 128 * 1024;

pub struct IoChannel {
    entry: Arc<BdevEntry>,
    inner: Box<dyn BdevChannel>,
    stat: Rc<IoStat>,
    geometry: Geometry,
    supported: [bool; 7],
    max_transfer_blocks: u64,
}

impl IoChannel {
    pub(crate) fn new(
        entry: Arc<BdevEntry>,
        inner: Box<dyn BdevChannel>,
        stat: Rc<IoStat>,
    ) -> Self {
        let geometry = entry.bdev.geometry();
        let supported = IoType::ALL.map(|t| entry.bdev.io_type_supported(t));
        let max_transfer_blocks = match geometry.max_transfer_blocks {
            0 => (DEFAULT_MAX_TRANSFER_BYTES / geometry.block_size as u64).max(1),
            n => n as u64,
        };
        IoChannel {
            entry,
            inner,
            stat,
            geometry,
            supported,
            max_transfer_blocks,
        }
    }

    pub fn entry(&self) -> &Arc<BdevEntry> {
        &self.entry
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Submits `io`; `done.io_done(io, tag)` runs on this core when it completes.
    pub fn submit(&self, mut io: Box<BdevIo>, done: Rc<dyn IoDone>, tag: u64) {
        io.push_frame(
            done,
            tag,
            Some(self.stat.clone()),
            oxstor_reactor::now_ticks(),
        );
        if let Err(errno) = self.check(&io) {
            complete_later(io, IoStatus::Failed(errno));
            return;
        }
        if self.needs_split(&io) {
            split(self, io);
        } else {
            self.inner.submit(io);
        }
    }

    /// Hands `io`, which the calling layer received with a frame of its own, to this member
    /// at `offset_blocks` without a frame for the caller: when the I/O completes, the
    /// caller's submitter gets it back directly, with its original offset and this member's
    /// statistics counted (see [`crate::io`]). For layers that only remap. Gives `io` back
    /// when a forward is already pending (a forwarding layer over another one); the caller
    /// then submits it normally.
    #[inline]
    pub fn forward(&self, mut io: Box<BdevIo>, offset_blocks: u64) -> Result<(), Box<BdevIo>> {
        if !io.can_forward() {
            return Err(io);
        }
        io.set_forwarded(offset_blocks, self.stat.clone());
        if let Err(errno) = self.check(&io) {
            complete_later(io, IoStatus::Failed(errno));
        } else if self.needs_split(&io) {
            split(self, io);
        } else {
            self.inner.submit(io);
        }
        Ok(())
    }

    fn check(&self, io: &BdevIo) -> Result<(), i32> {
        let t = io.io_type;
        if !self.supported[t as usize] {
            return Err(libc::ENOTSUP);
        }
        let g = &self.geometry;
        if t != IoType::Flush && t != IoType::Reset {
            let end = io
                .offset_blocks
                .checked_add(io.num_blocks)
                .ok_or(libc::EINVAL)?;
            if io.num_blocks == 0 || end > g.num_blocks {
                return Err(libc::EINVAL);
            }
        }
        if t.has_data() && io.buf.len() as u64 != io.num_blocks * g.block_size as u64 {
            return Err(libc::EINVAL);
        }
        if t == IoType::Write && g.write_unit_size > 1 {
            let unit = g.write_unit_size as u64;
            if !io.offset_blocks.is_multiple_of(unit) || !io.num_blocks.is_multiple_of(unit) {
                return Err(libc::EINVAL);
            }
        }
        Ok(())
    }

    fn needs_split(&self, io: &BdevIo) -> bool {
        if !io.io_type.has_data() {
            return false;
        }
        if io.num_blocks > self.max_transfer_blocks {
            return true;
        }
        let b = self.geometry.optimal_io_boundary as u64;
        b > 0 && io.offset_blocks / b != (io.offset_blocks + io.num_blocks - 1) / b
    }

    fn child_len(&self, offset: u64, remaining: u64) -> u64 {
        let mut len = remaining.min(self.max_transfer_blocks);
        let b = self.geometry.optimal_io_boundary as u64;
        if b > 0 {
            len = len.min(b - offset % b);
        }
        len
    }
}

/// A parent I/O waiting for its children.
struct SplitParent {
    parent: RefCell<Option<Box<BdevIo>>>,
    outstanding: Cell<u64>,
    status: Cell<IoStatus>,
}

impl IoDone for SplitParent {
    fn io_done(&self, child: Box<BdevIo>, _tag: u64) {
        if !child.status.is_success() && self.status.get().is_success() {
            self.status.set(child.status);
        }
        drop(child);
        self.outstanding.set(self.outstanding.get() - 1);
        if self.outstanding.get() == 0 {
            if let Some(parent) = self.parent.borrow_mut().take() {
                parent.complete(self.status.get());
            }
        }
    }
}

fn split(ch: &IoChannel, mut parent: Box<BdevIo>) {
    let bs = ch.geometry.block_size as u64;
    let mut ranges = Vec::new();
    let (mut off, end) = (
        parent.offset_blocks,
        parent.offset_blocks + parent.num_blocks,
    );
    while off < end {
        let len = ch.child_len(off, end - off);
        ranges.push((off, len));
        off += len;
    }
    let state = Rc::new(SplitParent {
        parent: RefCell::new(None),
        outstanding: Cell::new(ranges.len() as u64),
        status: Cell::new(IoStatus::Success),
    });
    let base = parent.offset_blocks;
    let io_type = parent.io_type;
    // A layer below may forward a child and count its latency from this frame's start.
    let start = oxstor_reactor::now_ticks();
    let children: Vec<Box<BdevIo>> = ranges
        .iter()
        .map(|&(o, n)| {
            let window = IoBuf::window(
                &mut parent.buf,
                ((o - base) * bs) as usize,
                (n * bs) as usize,
                state.clone(),
            );
            let mut child = BdevIo::new(io_type, o, n, window);
            child.push_frame(state.clone(), 0, None, start);
            child
        })
        .collect();
    *state.parent.borrow_mut() = Some(parent);
    for child in children {
        ch.inner.submit(child);
    }
}
