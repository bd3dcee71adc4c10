//! A resource's local disk: the backing bdev, its metadata (superblock with generation
//! UUIDs, one dirty bitmap per peer slot, the activity log) and the metadata writes.
//!
//! Attaching reads the metadata with blocking I/O on the control path ([`load`]), then the
//! volume lives on the resource's home core. Metadata writes from the I/O path go through
//! [`MetaQueue`], which keeps one batch in flight and coalesces what arrives meanwhile, so a
//! burst of activity-log commits costs one write per block.

use crate::meta::activity_log::ActivityLog;
use crate::meta::bitmap::Bitmap;
use crate::meta::layout::{MetaLayout, AL_SLOTS, MAX_PEERS, META_BLOCK};
use crate::meta::superblock::{meta_flag, Superblock};
use crate::state::DiskState;
use oxstor_bdev::{
    blocking, registry, BdevEntry, BdevIo, ClaimGuard, IoBuf, IoChannel, IoDone, IoStatus, IoType,
};
use oxstor_reactor::DmaBuf;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

const META_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything read from disk at attach time, built on the control thread and sent to the
/// home core.
pub struct LoadedMeta {
    pub backing: Arc<BdevEntry>,
    pub claim: ClaimGuard,
    pub layout: MetaLayout,
    pub block_size: u32,
    pub sb: Superblock,
    pub bitmaps: Vec<Bitmap>,
    /// Extents of the activity log's newest transaction, and its number.
    pub al_extents: Vec<u32>,
    pub al_tr: u64,
    /// The metadata was created by this attach.
    pub created: bool,
}

/// One blocking metadata read (`data` None, `len` bytes) or write (`data`), at byte `offset`.
fn meta_io(
    core: usize,
    entry: &Arc<BdevEntry>,
    block_size: u32,
    offset: u64,
    len: u64,
    data: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let bs = block_size as u64;
    let (io_type, verb) = match data {
        None => (IoType::Read, "reading"),
        Some(_) => (IoType::Write, "writing"),
    };
    let (st, bytes) = blocking::io(
        core,
        entry,
        io_type,
        offset / bs,
        len / bs,
        data,
        META_IO_TIMEOUT,
    )
    .map_err(|e| format!("{verb} metadata of {}: {e}", entry.name()))?;
    if !st.is_success() {
        return Err(format!(
            "{verb} metadata of {} at byte {offset}: {st:?}",
            entry.name()
        ));
    }
    Ok(bytes)
}

fn meta_read(
    core: usize,
    entry: &Arc<BdevEntry>,
    block_size: u32,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, String> {
    meta_io(core, entry, block_size, offset, len, None)
}

fn meta_write(
    core: usize,
    entry: &Arc<BdevEntry>,
    block_size: u32,
    offset: u64,
    data: &[u8],
) -> Result<(), String> {
    meta_io(
        core,
        entry,
        block_size,
        offset,
        data.len() as u64,
        Some(data),
    )
    .map(drop)
}

/// Claims `disk`, reads (or, when there is none, creates) its internal metadata. Control
/// path only: blocks on I/O issued on reactor `core`.
pub fn load(
    core: usize,
    resource: &str,
    node_id: u8,
    disk: &str,
    al_extents: u32,
) -> Result<LoadedMeta, String> {
    let claim = registry::claim(disk, &format!("repl:{resource}")).map_err(|e| e.to_string())?;
    let backing = claim.entry().clone();
    let g = backing.bdev.geometry();
    let layout =
        MetaLayout::for_device(g.size_bytes(), g.block_size).map_err(|e| format!("{disk}: {e}"))?;
    let bs = g.block_size;
    let sb_bytes = meta_read(core, &backing, bs, layout.sb_offset, META_BLOCK)?;
    let (sb, created) = match Superblock::parse(&sb_bytes) {
        Ok(sb) => {
            if sb.node_id != node_id {
                return Err(format!(
                    "{disk}: its metadata belongs to node-id {}, not {node_id} (wrong disk or wrong host?)",
                    sb.node_id
                ));
            }
            if sb.data_bytes != layout.data_bytes {
                return Err(format!(
                    "{disk}: metadata says {} data bytes but the disk now holds {} (resize is not supported)",
                    sb.data_bytes, layout.data_bytes
                ));
            }
            (sb, false)
        }
        Err(reason) => {
            let blank = sb_bytes.iter().all(|&b| b == 0);
            if !blank {
                tracing::warn!(
                    "{disk}: no valid replication metadata ({reason}); creating new metadata"
                );
            }
            let sb = Superblock::new_created(
                node_id,
                crate::meta::generation::random_uuid(),
                layout.data_bytes,
                al_extents.min(crate::meta::activity_log::MAX_CAPACITY as u32),
            );
            create_meta(core, &backing, bs, &layout, &sb)?;
            tracing::info!(
                "{disk}: created replication metadata for node-id {node_id}, {} data bytes",
                layout.data_bytes
            );
            (sb, true)
        }
    };
    let mut bitmaps = Vec::with_capacity(MAX_PEERS);
    for slot in 0..MAX_PEERS {
        let mut bm = Bitmap::new(layout.bits);
        if sb.peers[slot].node_id.is_some() {
            read_bitmap(core, &backing, bs, &layout, slot, &mut bm)?;
        }
        bitmaps.push(bm);
    }
    let mut slots = Vec::with_capacity(AL_SLOTS as usize);
    for s in 0..AL_SLOTS {
        slots.push(meta_read(
            core,
            &backing,
            bs,
            layout.al_slot_offset(s),
            META_BLOCK,
        )?);
    }
    let (al_tr, al_extents) =
        ActivityLog::recover(&slots).map_err(|e| format!("{disk}: activity log: {e}"))?;
    Ok(LoadedMeta {
        backing,
        claim,
        layout,
        block_size: bs,
        sb,
        bitmaps,
        al_extents,
        al_tr,
        created,
    })
}

fn read_bitmap(
    core: usize,
    entry: &Arc<BdevEntry>,
    bs: u32,
    layout: &MetaLayout,
    slot: usize,
    bm: &mut Bitmap,
) -> Result<(), String> {
    const CHUNK_PAGES: u64 = 64;
    let pages = layout.bitmap_pages();
    let mut page = 0;
    while page < pages {
        let n = CHUNK_PAGES.min(pages - page);
        let data = meta_read(
            core,
            entry,
            bs,
            layout.bitmap_page_offset(slot, page),
            n * META_BLOCK,
        )?;
        for i in 0..n {
            let at = (i * META_BLOCK) as usize;
            bm.load_page(page + i, &data[at..at + META_BLOCK as usize])
                .map_err(|e| e.to_string())?;
        }
        page += n;
    }
    for p in bm.dirty_pages() {
        bm.mark_clean(p);
    }
    Ok(())
}

fn create_meta(
    core: usize,
    entry: &Arc<BdevEntry>,
    bs: u32,
    layout: &MetaLayout,
    sb: &Superblock,
) -> Result<(), String> {
    // Zero the bitmaps and the activity log, then write the superblock last: a crash in
    // between leaves no valid superblock, so the next attach starts over.
    let start = layout.bm_offset;
    let end = layout.sb_offset;
    let zeros = vec![0u8; 1 << 20];
    let mut at = start;
    while at < end {
        let n = (end - at).min(zeros.len() as u64);
        meta_write(core, entry, bs, at, &zeros[..n as usize])?;
        at += n;
    }
    meta_write(core, entry, bs, layout.sb_offset, &sb.encode())
}

/// Writes the superblock from the control path (attach, detach, create-md).
pub fn write_superblock_blocking(
    core: usize,
    entry: &Arc<BdevEntry>,
    bs: u32,
    layout: &MetaLayout,
    sb: &Superblock,
) -> Result<(), String> {
    meta_write(core, entry, bs, layout.sb_offset, &sb.encode())
}

/// The attached disk, on the home core.
pub struct Volume {
    pub number: u16,
    pub device: String,
    pub backing: Arc<BdevEntry>,
    _claim: ClaimGuard,
    pub layout: MetaLayout,
    pub block_size: u32,
    pub data_blocks: u64,
    pub sb: RefCell<Superblock>,
    /// Indexed by peer slot.
    pub bitmaps: RefCell<Vec<Bitmap>>,
    pub al: RefCell<ActivityLog>,
    pub disk_state: Cell<DiskState>,
    pub meta: Rc<MetaQueue>,
}

impl Volume {
    pub fn new(number: u16, device: String, m: LoadedMeta) -> Volume {
        let data_blocks = m.layout.data_bytes / m.block_size as u64;
        let mut al = ActivityLog::new(m.sb.al_capacity as usize);
        let mut sb = m.sb;
        let attach = sb.on_attach();
        let (crashed, unclean) = (attach.crashed_primary, attach.al_dirty);
        let mut bitmaps = m.bitmaps;
        if (crashed || unclean) && !m.created {
            // Writes may have been in flight in the hot extents: they may differ from every
            // peer, in either direction.
            let mut marked = 0;
            for e in &m.al_extents {
                let first = *e as u64
                    * (crate::meta::layout::AL_EXTENT_BYTES / crate::meta::layout::BM_BLOCK_BYTES);
                let last = first
                    + crate::meta::layout::AL_EXTENT_BYTES / crate::meta::layout::BM_BLOCK_BYTES;
                for (slot, bm) in bitmaps.iter_mut().enumerate() {
                    if sb.peers[slot].node_id.is_some() {
                        marked += bm.set_range(first, last.min(bm.bits()));
                    }
                }
            }
            tracing::warn!(
                "{device}: unclean shutdown{}; {} activity-log extents marked out of sync ({marked} bits)",
                if crashed { " of a Primary" } else { "" },
                m.al_extents.len()
            );
        }
        al.set_tr_number(m.al_tr);
        let disk_state = if sb.flags & meta_flag::CONSISTENT == 0 {
            DiskState::Inconsistent
        } else if sb.flags & meta_flag::OUTDATED != 0 {
            DiskState::Outdated
        } else {
            DiskState::UpToDate
        };
        let meta = Rc::new(MetaQueue::new(m.backing.clone(), m.block_size));
        Volume {
            number,
            device,
            backing: m.backing,
            _claim: m.claim,
            layout: m.layout,
            block_size: m.block_size,
            data_blocks,
            sb: RefCell::new(sb),
            bitmaps: RefCell::new(bitmaps),
            al: RefCell::new(al),
            disk_state: Cell::new(disk_state),
            meta,
        }
    }

    /// This core's channel to the backing bdev.
    pub fn channel(&self) -> Option<Rc<IoChannel>> {
        self.backing.channel().ok()
    }

    pub fn bits_per_block(&self) -> u64 {
        // One bit covers 4 KiB; blocks are ≤ 4 KiB or multiples of it.
        1
    }

    /// Bitmap bits covering blocks `[offset, offset + n)`.
    pub fn bit_range(&self, offset: u64, n: u64) -> (u64, u64) {
        crate::meta::bitmap::blocks_to_bits(
            offset * self.block_size as u64,
            n * self.block_size as u64,
        )
    }

    /// Blocks covered by bits `[first, end)`, clipped to the data area.
    pub fn bits_to_blocks(&self, first: u64, end: u64) -> (u64, u64) {
        let bb = crate::meta::layout::BM_BLOCK_BYTES;
        let bs = self.block_size as u64;
        let off = first * bb / bs;
        let end_blocks = (end * bb / bs).min(self.data_blocks);
        (off, end_blocks.saturating_sub(off))
    }

    /// Queues the superblock for writing; `then(ok)` runs once it is on disk.
    pub fn persist_sb(&self, then: impl FnOnce(bool) + 'static) {
        let bytes = self.sb.borrow().encode();
        self.meta
            .write(vec![(self.layout.sb_offset, bytes)], Box::new(then));
    }

    /// Queues every changed bitmap page for writing.
    pub fn persist_bitmaps(&self, then: impl FnOnce(bool) + 'static) {
        let mut blocks = Vec::new();
        let mut bms = self.bitmaps.borrow_mut();
        for (slot, bm) in bms.iter_mut().enumerate() {
            for page in bm.dirty_pages() {
                blocks.push((
                    self.layout.bitmap_page_offset(slot, page),
                    bm.page_bytes(page),
                ));
                bm.mark_clean(page);
            }
        }
        drop(bms);
        self.meta.write(blocks, Box::new(then));
    }

    pub fn dirty_count(&self, slot: usize) -> u64 {
        self.bitmaps.borrow().get(slot).map_or(0, Bitmap::count)
    }
}

type MetaDone = Box<dyn FnOnce(bool)>;

/// Serialized metadata writes: one batch in flight, later requests coalesced into the next.
pub struct MetaQueue {
    backing: Arc<BdevEntry>,
    block_size: u32,
    queued: RefCell<Vec<(u64, Vec<u8>)>>,
    waiters: RefCell<Vec<MetaDone>>,
    in_flight: Cell<bool>,
}

struct MetaBatch {
    queue: Rc<MetaQueue>,
    remaining: Cell<usize>,
    ok: Cell<bool>,
    waiters: RefCell<Vec<MetaDone>>,
}

impl IoDone for MetaBatch {
    fn io_done(&self, io: Box<BdevIo>, _tag: u64) {
        if !io.status.is_success() {
            tracing::error!(
                "replication metadata write at block {} failed: {:?}",
                io.offset_blocks,
                io.status
            );
            self.ok.set(false);
        }
        let left = self.remaining.get() - 1;
        self.remaining.set(left);
        if left == 0 {
            let ok = self.ok.get();
            for w in self.waiters.borrow_mut().drain(..) {
                w(ok);
            }
            self.queue.in_flight.set(false);
            self.queue.start();
        }
    }
}

impl MetaQueue {
    fn new(backing: Arc<BdevEntry>, block_size: u32) -> MetaQueue {
        MetaQueue {
            backing,
            block_size,
            queued: RefCell::new(Vec::new()),
            waiters: RefCell::new(Vec::new()),
            in_flight: Cell::new(false),
        }
    }

    /// Writes `blocks` (byte offset, 4 KiB of bytes) and then calls `then`.
    pub fn write(self: &Rc<Self>, blocks: Vec<(u64, Vec<u8>)>, then: MetaDone) {
        {
            let mut q = self.queued.borrow_mut();
            for (off, bytes) in blocks {
                // A newer image of the same block replaces the queued one.
                if let Some(slot) = q.iter_mut().find(|(o, _)| *o == off) {
                    slot.1 = bytes;
                } else {
                    q.push((off, bytes));
                }
            }
        }
        self.waiters.borrow_mut().push(then);
        if !self.in_flight.get() {
            self.start();
        }
    }

    fn start(self: &Rc<Self>) {
        let blocks = std::mem::take(&mut *self.queued.borrow_mut());
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        if waiters.is_empty() && blocks.is_empty() {
            return;
        }
        let Some(channel) = self.backing.channel().ok() else {
            for w in waiters {
                w(false);
            }
            return;
        };
        if blocks.is_empty() {
            for w in waiters {
                w(true);
            }
            return;
        }
        self.in_flight.set(true);
        let batch = Rc::new(MetaBatch {
            queue: self.clone(),
            remaining: Cell::new(blocks.len()),
            ok: Cell::new(true),
            waiters: RefCell::new(waiters),
        });
        let bs = self.block_size as u64;
        for (off, bytes) in blocks {
            let buf = match DmaBuf::alloc(bytes.len()) {
                Some(mut b) => {
                    b.as_mut_slice().copy_from_slice(&bytes);
                    IoBuf::Dma(b)
                }
                None => IoBuf::None,
            };
            let io = BdevIo::new(IoType::Write, off / bs, bytes.len() as u64 / bs, buf);
            channel.submit(io, batch.clone(), 0);
        }
    }
}

/// Completes an I/O by calling a closure: for control-ish work on the home core (resync reads,
/// verify reads) where one allocation per I/O does not matter.
type DoneFn = Box<dyn FnOnce(Box<BdevIo>)>;

pub struct OnDone(RefCell<Option<DoneFn>>);

impl OnDone {
    pub fn new(f: impl FnOnce(Box<BdevIo>) + 'static) -> Rc<OnDone> {
        Rc::new(OnDone(RefCell::new(Some(Box::new(f)))))
    }
}

impl IoDone for OnDone {
    fn io_done(&self, io: Box<BdevIo>, _tag: u64) {
        if let Some(f) = self.0.borrow_mut().take() {
            f(io);
        }
    }
}

pub fn io_ok(io: &BdevIo) -> bool {
    io.status == IoStatus::Success
}
