//! The write-intent bitmap of a superblock array, wired to its I/O ([`crate::bitmap`] is the
//! pure logic and on-disk format; this is the glue).
//!
//! - **Writes** (raid1 and raid10 mirror writes, unmap and write-zeroes) call
//!   [`ArrayIntent::begin_write`] before they fan out. If a region's bit is not yet on disk
//!   the write is held (retried on its core every few tens of microseconds) while a helper
//!   thread flushes the bitmap image to every in-service member at the superblock's bitmap
//!   offset; the write goes once [`ArrayIntent::write_may_go`] says its regions are persisted.
//!   Completion calls [`ArrayIntent::end_write`]. A write whose regions are all dirty on disk
//!   already (the common case) takes no lock: it is counted in its core's own
//!   [`IntentCore`], and whatever clears a bit checks those counts first (see
//!   [`ArrayIntent`]).
//! - **Clearing** is lazy: a timer on the first reactor runs [`WriteIntent::sweep`] every
//!   [`sweep_period`] and flushes what became clean. While the array is degraded nothing is
//!   cleared.
//! - **Unclean shutdown**: assembly ([`crate::persist`]) loads the bitmap of the first
//!   current member and copies only the dirty regions: a raid1 from the first member to the
//!   others ([`resync_raid1`]), a raid10 from copy 0 to copy 1 of every chunk piece in them
//!   ([`resync_raid10`]); `last_resync` in `bdev_raid_get_bdevs` tells how many.
//! - **Re-add**: a member removed (or failed) gets a per-member delta; when the same member
//!   (same member uuid in its superblock) is added back, the rebuild copies only the delta's
//!   regions and those dirty when it starts ([`ArrayIntent::rebuild_ranges`]), counted in
//!   `last_rebuild`. The regions are array blocks; the raid10 rebuild
//!   maps them to the chunk pieces its target holds, the raid5/raid6 rebuild
//!   ([`crate::rebuild`]) to every stripe with a data block in them (their parity changed
//!   too).
//!
//! Bitmap I/O is blocking I/O on the first reactor ([`crate::persist`]), done from helper
//! threads, serialised by one lock per array so images land in the order they were rendered.
//! If a bitmap write fails on every member the bitmap is marked failed and writes no longer
//! wait for it (a later restart then resyncs everything: the image is not trusted).
//!
//! raid5/raid6 writes are marked too (in [`crate::stripe`]); after an unclean shutdown the
//! stripes under each dirty region are read and rewritten through the array right after
//! assembly (full-stripe writes: parity from the data alone).
//!
//! Limitations: a raid10 resync skips chunks one of
//! whose copies is missing (the bits stay, for that member's return). The bitmap's events
//! count is not compared with the superblock's (the bitmap is always written before the
//! data).

use crate::bitmap::{BitmapView, MemberDelta, WriteIntent, DEFAULT_CHUNK_BYTES, HEADER_LEN};
use serde_json::{json, Value};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

static CHUNK_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_CHUNK_BYTES);
static SWEEP_MS: AtomicU64 = AtomicU64::new(5000);

/// Bytes of array data per bitmap bit for arrays created from now on (default 64 MiB, as
/// mdadm). Rounded to a power-of-two number of blocks; grown if the bitmap would not fit
/// before the data area. For tests and small arrays.
pub fn set_chunk_bytes(bytes: u64) {
    CHUNK_BYTES.store(bytes.max(1), Ordering::Relaxed);
}

/// How often idle regions are swept (two idle sweeps clear a bit). Default 5 s.
pub fn set_sweep_period(period: Duration) {
    SWEEP_MS.store(period.as_millis().max(1) as u64, Ordering::Relaxed);
}

pub fn sweep_period() -> Duration {
    Duration::from_millis(SWEEP_MS.load(Ordering::Relaxed))
}

/// Chunk blocks for a new bitmap: the configured size, grown until the image fits `room`.
pub(crate) fn choose_chunk_blocks(array_blocks: u64, block_size: u32, room: u64) -> u64 {
    let bs = u64::from(block_size.max(1));
    let mut chunk = (CHUNK_BYTES.load(Ordering::Relaxed) / bs)
        .max(1)
        .next_power_of_two();
    while (crate::bitmap::image_len(array_blocks.div_ceil(chunk)) as u64) > room
        && chunk < (1 << 40)
    {
        chunk *= 2;
    }
    chunk
}

/// Renders the on-disk image of `wi`'s current bits (a superset of what is persisted).
pub(crate) fn render(wi: &WriteIntent, array_blocks: u64) -> Vec<u8> {
    let mut out = vec![0u8; wi.image_len()];
    out[..8].copy_from_slice(&crate::bitmap::MAGIC);
    out[8..12].copy_from_slice(&crate::bitmap::VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&wi.chunk_blocks().to_le_bytes());
    out[32..40].copy_from_slice(&wi.regions().to_le_bytes());
    out[40..48].copy_from_slice(&array_blocks.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..12]), &[0; 4]);
    let crc = crc32c::crc32c_append(crc, &out[16..HEADER_LEN]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    for region in wi.dirty_regions() {
        if let Some(b) = out.get_mut(HEADER_LEN + (region / 8) as usize) {
            *b |= 1 << (region % 8);
        }
    }
    out
}

/// Parses an image read from disk; Err means "do not trust it: everything is dirty".
pub(crate) fn load(
    bytes: &[u8],
    array_blocks: u64,
    chunk_blocks: u64,
) -> Result<WriteIntent, String> {
    let view = BitmapView::new_checked(bytes, array_blocks).map_err(|e| e.to_string())?;
    if view.chunk_blocks() != chunk_blocks {
        return Err(format!(
            "bitmap chunk {} differs from the superblock's {chunk_blocks}",
            view.chunk_blocks()
        ));
    }
    WriteIntent::load(&view, view.events()).map_err(|e| e.to_string())
}

/// A bitmap with every region dirty (nothing on disk yet says otherwise).
pub(crate) fn all_dirty(array_blocks: u64, chunk_blocks: u64) -> Option<WriteIntent> {
    let mut wi = WriteIntent::new(array_blocks, chunk_blocks).ok()?;
    if array_blocks > 0 {
        let _ = wi.mark(0, array_blocks);
        let _ = wi.finish_write(0, array_blocks);
    }
    Some(wi)
}

/// What the last resync or rebuild did, for `bdev_raid_get_bdevs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub regions: u64,
    pub bytes: u64,
    /// Whole member (no usable bitmap delta).
    pub full: bool,
}

/// How [`ArrayIntent::begin_write`] let a write go; hand it back to
/// [`ArrayIntent::end_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Begin {
    /// Out of range: not counted (the write fails further down anyway).
    #[default]
    Unmarked,
    /// Its regions are dirty on disk: counted on this core only, no lock taken.
    Fast,
    /// Marked under the lock and may go now.
    Go,
    /// Marked under the lock; hold it until [`ArrayIntent::write_may_go`].
    Hold,
}

impl Begin {
    /// For carrying it in a descriptor's scratch word.
    pub(crate) fn code(self) -> u64 {
        match self {
            Begin::Unmarked => 0,
            Begin::Fast => 1,
            Begin::Go => 2,
            Begin::Hold => 3,
        }
    }

    pub(crate) fn from_code(code: u64) -> Begin {
        match code {
            1 => Begin::Fast,
            2 => Begin::Go,
            3 => Begin::Hold,
            _ => Begin::Unmarked,
        }
    }
}

/// One core's share of the bitmap's bookkeeping (one per RAID channel): writes in flight
/// per region that took the lock-free path, and the regions it wrote since the last sweep.
/// Only its own core writes here; the sweeper only reads (and resets `touched`).
pub(crate) struct IntentCore {
    pending: Box<[AtomicU32]>,
    touched: Box<[AtomicU64]>,
}

/// The bitmap of one running array.
///
/// **Write path without the lock.** A write whose regions are all dirty *on disk* needs
/// nothing from the bitmap but to be counted while in flight, so that no sweep clears those
/// bits under it. `fast` holds those regions (a copy of [`WriteIntent::fast_word`] the
/// writers read); a writer counts itself in its core's [`IntentCore`] first, then checks
/// `fast`. Everything that would clear a bit (the sweep, a resync) first takes the region
/// out of `fast`, then looks at every core's count; both sides use sequentially consistent
/// operations, so either the writer sees the region gone (and takes the locked path, which
/// marks it again and waits for the disk) or the sweeper sees the write (and keeps the bit).
/// While a member delta is tracked, `fast` is empty: every write must reach the delta.
pub struct ArrayIntent {
    me: Weak<ArrayIntent>,
    wi: Mutex<WriteIntent>,
    /// Regions a write may enter without the lock (see above).
    fast: Box<[AtomicU64]>,
    /// log2 of the region size in blocks, and the region count.
    chunk_shift: u32,
    regions: u64,
    cores: Mutex<Vec<Weak<IntentCore>>>,
    /// Serialises image writes so they land in render order.
    io_lock: Mutex<()>,
    array_id: u64,
    array_blocks: u64,
    block_size: u32,
    offset_bytes: u64,
    flusher: AtomicBool,
    initial_written: AtomicBool,
    failed: AtomicBool,
    closed: AtomicBool,
    /// A returning member whose superblock matched its slot: (bdev name, slot).
    returning: Mutex<Option<(String, usize)>>,
    /// The regions the running rebuild copies (None: all).
    rebuild_regions: Mutex<Option<(usize, Vec<Range<u64>>)>>,
    copied_bytes: AtomicU64,
    last_rebuild: Mutex<Option<Copied>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ArrayIntent {
    pub(crate) fn new(
        wi: WriteIntent,
        array_id: u64,
        array_blocks: u64,
        block_size: u32,
        offset_bytes: u64,
    ) -> Arc<ArrayIntent> {
        let words = wi.word_count();
        let chunk_shift = wi.chunk_blocks().trailing_zeros();
        let regions = wi.regions();
        Arc::new_cyclic(|me| ArrayIntent {
            me: me.clone(),
            wi: Mutex::new(wi),
            fast: (0..words).map(|_| AtomicU64::new(0)).collect(),
            chunk_shift,
            regions,
            cores: Mutex::new(Vec::new()),
            io_lock: Mutex::new(()),
            array_id,
            array_blocks,
            block_size,
            offset_bytes,
            flusher: AtomicBool::new(false),
            initial_written: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            returning: Mutex::new(None),
            rebuild_regions: Mutex::new(None),
            copied_bytes: AtomicU64::new(0),
            last_rebuild: Mutex::new(None),
        })
    }

    pub fn chunk_blocks(&self) -> u64 {
        lock(&self.wi).chunk_blocks()
    }

    pub fn offset_bytes(&self) -> u64 {
        self.offset_bytes
    }

    pub fn dirty_count(&self) -> u64 {
        lock(&self.wi).dirty_count()
    }

    /// Starts the sweeper and writes the current image (so a fresh array has a valid one).
    pub(crate) fn start(&self) {
        self.kick();
        let Some(rt) = oxstor_bdev::registry::runtime() else {
            return;
        };
        let weak = self.me.clone();
        rt.send(0, move || schedule_sweep(weak, std::time::Instant::now()));
    }

    /// This core's counters (one per RAID channel).
    pub(crate) fn register_core(&self) -> Arc<IntentCore> {
        let n = self.regions as usize;
        let core = Arc::new(IntentCore {
            pending: (0..n).map(|_| AtomicU32::new(0)).collect(),
            touched: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        });
        let mut cores = lock(&self.cores);
        cores.retain(|c| c.strong_count() > 0);
        cores.push(Arc::downgrade(&core));
        core
    }

    /// Regions of `[offset, offset+blocks)`; None if out of range.
    fn region_range(&self, offset: u64, blocks: u64) -> Option<Range<u64>> {
        let end = offset.checked_add(blocks)?;
        if end > self.array_blocks {
            return None;
        }
        if blocks == 0 {
            return Some(0..0);
        }
        Some(offset >> self.chunk_shift..((end - 1) >> self.chunk_shift) + 1)
    }

    fn is_fast(&self, region: u64) -> bool {
        self.fast[(region / 64) as usize].load(Ordering::SeqCst) >> (region % 64) & 1 == 1
    }

    /// Marks a write of `blocks` at array block `offset` on the core owning `core`; see
    /// [`Begin`]. Whatever it returns goes to [`Self::end_write`] when the write is done.
    pub(crate) fn begin_write(&self, core: &IntentCore, offset: u64, blocks: u64) -> Begin {
        let Some(regions) = self.region_range(offset, blocks) else {
            return Begin::Unmarked;
        };
        for r in regions.clone() {
            core.pending[r as usize].fetch_add(1, Ordering::SeqCst);
        }
        if regions.clone().all(|r| self.is_fast(r)) {
            for r in regions {
                let (word, bit) = (&core.touched[(r / 64) as usize], 1u64 << (r % 64));
                if word.load(Ordering::Relaxed) & bit == 0 {
                    word.fetch_or(bit, Ordering::Relaxed);
                }
            }
            return Begin::Fast;
        }
        for r in regions {
            core.pending[r as usize].fetch_sub(1, Ordering::SeqCst);
        }
        let Ok(mark) = lock(&self.wi).mark(offset, blocks) else {
            return Begin::Unmarked;
        };
        if mark.may_proceed || self.failed.load(Ordering::Acquire) {
            return Begin::Go;
        }
        self.kick();
        Begin::Hold
    }

    pub(crate) fn write_may_go(&self, offset: u64, blocks: u64) -> bool {
        self.failed.load(Ordering::Acquire)
            || lock(&self.wi).is_persisted(offset, blocks).unwrap_or(true)
    }

    pub(crate) fn end_write(&self, core: &IntentCore, offset: u64, blocks: u64, how: Begin) {
        match how {
            Begin::Unmarked => {}
            Begin::Fast => {
                if let Some(regions) = self.region_range(offset, blocks) {
                    for r in regions {
                        core.pending[r as usize].fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            Begin::Go | Begin::Hold => {
                let _ = lock(&self.wi).finish_write(offset, blocks);
            }
        }
    }

    fn live_cores(&self) -> Vec<Arc<IntentCore>> {
        let mut cores = lock(&self.cores);
        cores.retain(|c| c.strong_count() > 0);
        cores.iter().filter_map(Weak::upgrade).collect()
    }

    /// Before a bit may be cleared: takes `region` out of the fast set, then says whether a
    /// lock-free write is still in flight there (then the bit must stay). The cores are
    /// listed after the revocation: a channel registered later sees the region gone.
    fn revoke_busy(&self, region: u64) -> bool {
        self.fast[(region / 64) as usize].fetch_and(!(1u64 << (region % 64)), Ordering::SeqCst);
        self.live_cores()
            .iter()
            .any(|c| c.pending[region as usize].load(Ordering::SeqCst) > 0)
    }

    /// Republishes the fast set from the bitmap (call with the lock held, after any change).
    fn refresh_fast(&self, wi: &WriteIntent) {
        for (i, word) in self.fast.iter().enumerate() {
            word.store(wi.fast_word(i), Ordering::SeqCst);
        }
    }

    /// Lock-free writes since the last sweep count as writes: their regions are not idle.
    fn absorb_touched(&self, cores: &[Arc<IntentCore>], wi: &mut WriteIntent) {
        for c in cores {
            for (i, word) in c.touched.iter().enumerate() {
                let mut bits = word.swap(0, Ordering::Relaxed);
                while bits != 0 {
                    let b = bits.trailing_zeros() as u64;
                    wi.touch(i as u64 * 64 + b);
                    bits &= bits - 1;
                }
            }
        }
    }

    /// Dirty regions with their array block ranges.
    pub(crate) fn dirty_region_ranges(&self) -> Vec<(u64, Range<u64>)> {
        let wi = lock(&self.wi);
        wi.dirty_regions()
            .map(|r| (r, wi.region_blocks(r)))
            .collect()
    }

    /// A resync made `regions` consistent: clear them (unless degraded) and flush.
    pub(crate) fn clear_synced(&self, regions: Range<u64>) {
        let mut wi = lock(&self.wi);
        let cleaned = wi.clear_synced_with(regions, |r| self.revoke_busy(r));
        self.refresh_fast(&wi);
        drop(wi);
        if cleaned > 0 {
            self.kick();
        }
    }

    pub(crate) fn set_degraded(&self, degraded: bool) {
        lock(&self.wi).set_degraded(degraded);
    }

    /// `slot` left (failed or removed): from now on its missed regions are tracked. A second
    /// call (a failed member then removed) keeps the delta that started at the first.
    pub(crate) fn member_removed(&self, slot: usize) {
        let mut wi = lock(&self.wi);
        if !wi.tracked_members().any(|s| s == slot as u32) {
            // Every write from now on takes the locked path, which records it in the
            // delta; lock-free writes already in flight are in dirty regions, which the
            // delta starts with.
            for word in self.fast.iter() {
                word.store(0, Ordering::SeqCst);
            }
            wi.member_removed(slot as u32);
        }
        self.refresh_fast(&wi);
    }

    /// A member was added in a new slot (a raid1 grew): the next flush writes the whole
    /// image, so the new member holds a complete bitmap too.
    pub(crate) fn member_added(&self) {
        self.initial_written.store(false, Ordering::Release);
        self.kick();
    }

    /// Before `add_member`: `base` is the member that left `slot` (its superblock says so).
    pub(crate) fn note_returning(&self, base: &str, slot: usize) {
        *lock(&self.returning) = Some((base.to_string(), slot));
    }

    /// A rebuild of `slot` by `base` starts: decides what it copies. Returns the regions'
    /// count when it is a delta rebuild.
    pub(crate) fn prepare_rebuild(&self, slot: usize, base: &str, delta_ok: bool) -> Option<u64> {
        let returning = lock(&self.returning).take();
        let same = returning.is_some_and(|(b, s)| b == base && s == slot);
        let mut wi = lock(&self.wi);
        let delta: Option<MemberDelta> = wi.member_readded(slot as u32);
        self.copied_bytes.store(0, Ordering::Relaxed);
        let ranges: Option<Vec<Range<u64>>> = if !(same && delta_ok) {
            None
        } else if let Some(d) = delta {
            Some(d.regions().map(|r| wi.region_blocks(r)).collect())
        } else {
            // Not tracked since it left (e.g. a restart in between): degraded arrays keep
            // every bit, so the dirty regions cover what it missed.
            Some(wi.dirty_regions().map(|r| wi.region_blocks(r)).collect())
        };
        let count = ranges.as_ref().map(|r| r.len() as u64);
        self.refresh_fast(&wi);
        drop(wi);
        *lock(&self.rebuild_regions) = ranges.map(|r| (slot, r));
        count
    }

    /// The array blocks the rebuild of `target` must copy: the regions
    /// [`Self::prepare_rebuild`] chose plus every region dirty now; None: all of them.
    ///
    /// Call it once `target` is REBUILDING. A write that began after `prepare_rebuild` took
    /// the delta, but fanned out before the member turned REBUILDING, skipped the member and
    /// is in no delta; its region was marked dirty before it fanned out, though, and nothing
    /// is cleared while the array is degraded, so the dirty set read afterwards holds it.
    pub(crate) fn rebuild_ranges(&self, target: usize) -> Option<Vec<Range<u64>>> {
        let dirty: Vec<Range<u64>> = {
            let wi = lock(&self.wi);
            wi.dirty_regions().map(|r| wi.region_blocks(r)).collect()
        };
        let mut prepared = lock(&self.rebuild_regions);
        let (slot, ranges) = prepared.as_mut()?;
        if *slot != target {
            return None;
        }
        // Both lists hold whole regions (`region_blocks`): a region in both is equal ranges.
        ranges.extend(dirty);
        ranges.sort_by_key(|r| r.start);
        ranges.dedup();
        Some(ranges.clone())
    }

    pub(crate) fn add_copied(&self, bytes: u64) {
        self.copied_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn rebuild_finished(&self, target: usize, ok: bool) {
        let regions = lock(&self.rebuild_regions).take();
        let (count, full) = match regions {
            Some((slot, r)) if slot == target => (r.len() as u64, false),
            _ => (0, true),
        };
        let copied = Copied {
            regions: count,
            bytes: self.copied_bytes.load(Ordering::Relaxed),
            full,
        };
        // A full rebuild that copied nothing (an empty member) has nothing to report.
        if ok && !(copied.full && copied.bytes == 0) {
            *lock(&self.last_rebuild) = Some(copied);
        }
    }

    pub(crate) fn info(&self, last_resync: Option<Copied>) -> Value {
        let wi = lock(&self.wi);
        let mut v = json!({
            "chunk_blocks": wi.chunk_blocks(),
            "regions": wi.regions(),
            "dirty_regions": wi.dirty_count(),
            "offset_bytes": self.offset_bytes,
            "failed": self.failed.load(Ordering::Relaxed),
        });
        if let Some(r) = last_resync {
            v["last_resync"] = json!({"regions": r.regions, "bytes": r.bytes, "full": r.full});
        }
        if let Some(r) = *lock(&self.last_rebuild) {
            v["last_rebuild"] =
                json!({"regions": r.regions, "bytes_copied": r.bytes, "full": r.full});
        }
        v
    }

    /// The array is going away. `clean`: write the final image (bits of regions still
    /// held stay set: harmless, they are swept after the next start).
    pub(crate) fn close(&self, clean: bool) {
        self.closed.store(true, Ordering::Release);
        if clean {
            self.flush_now();
        }
    }

    /// Makes sure a helper thread flushes the bitmap.
    fn kick(&self) {
        if self.flusher.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            self.flusher.store(false, Ordering::Release);
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("raid-bitmap".into())
            .spawn(move || loop {
                me.flush_now();
                me.flusher.store(false, Ordering::Release);
                let again = lock(&me.wi).needs_flush() && !me.failed.load(Ordering::Acquire);
                if !again || me.flusher.swap(true, Ordering::AcqRel) {
                    break;
                }
            });
        if spawned.is_err() {
            self.flusher.store(false, Ordering::Release);
            self.failed.store(true, Ordering::Release);
        }
    }

    /// Writes pending changes (blocking; not on a reactor).
    fn flush_now(&self) {
        let _io = lock(&self.io_lock);
        let bs = u64::from(self.block_size.max(1));
        if !self.initial_written.swap(true, Ordering::AcqRel) {
            // Whatever the area held before (a fresh array, an image we did not trust):
            // replace it with the current bits, a superset of what is persisted.
            let mut img = render(&lock(&self.wi), self.array_blocks);
            img.resize((img.len() as u64).div_ceil(bs) as usize * bs as usize, 0);
            if !self.write_image(img) {
                self.initial_written.store(false, Ordering::Release);
            }
        }
        loop {
            let (len, image_len) = {
                let wi = lock(&self.wi);
                (wi.image_len(), wi.image_len() as u64)
            };
            let mut buf = vec![0u8; (image_len.div_ceil(bs) * bs) as usize];
            let flush = match lock(&self.wi).begin_flush(&mut buf[..len]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => break,
            };
            let ok = self.write_image(buf);
            let mut wi = lock(&self.wi);
            wi.end_flush(flush, ok);
            self.refresh_fast(&wi);
            drop(wi);
            if !ok {
                tracing::error!(
                    "raid array {}: write-intent bitmap cannot be written; writes no longer wait for it",
                    self.array_id
                );
                self.failed.store(true, Ordering::Release);
                break;
            }
        }
    }

    /// Writes the image to every in-service member; true if at least one took it.
    fn write_image(&self, buf: Vec<u8>) -> bool {
        let Some(raid) = crate::bdev::list()
            .into_iter()
            .find(|r| r.id() == self.array_id)
        else {
            return false;
        };
        let mut snap = raid.snapshot();
        for _ in 0..200 {
            if snap.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            snap = raid.snapshot();
        }
        let Some(snap) = snap else { return false };
        let bs = u64::from(self.block_size.max(1));
        let blocks = buf.len() as u64 / bs;
        let mut any = false;
        for (entry, state) in snap.members {
            use crate::superblock::MemberState;
            let Some(entry) = entry else { continue };
            if !matches!(state, MemberState::Active | MemberState::Rebuilding) {
                continue;
            }
            match crate::persist::member_io(
                &entry,
                self.offset_bytes / bs,
                blocks,
                Some(buf.clone()),
            ) {
                Ok(_) => any = true,
                Err(e) => {
                    tracing::warn!("raid {}: bitmap write to {}: {e}", snap.name, entry.name())
                }
            }
        }
        any
    }

    /// One sweep; flushes if bits became clean.
    fn sweep(&self) {
        let cores = self.live_cores();
        let mut wi = lock(&self.wi);
        self.absorb_touched(&cores, &mut wi);
        let cleaned = wi.sweep_with(|r| self.revoke_busy(r));
        self.refresh_fast(&wi);
        drop(wi);
        if cleaned > 0 {
            self.kick();
        }
    }
}

/// The sweeper: a timer on the first reactor that ticks at most every 250 ms (so a new
/// [`set_sweep_period`] takes effect soon) and sweeps once per period.
fn schedule_sweep(weak: Weak<ArrayIntent>, last: std::time::Instant) {
    let tick = sweep_period().min(Duration::from_millis(250));
    oxstor_reactor::schedule_after(tick, move || {
        let Some(intent) = weak.upgrade() else { return };
        if intent.closed.load(Ordering::Acquire) {
            return;
        }
        let mut last = last;
        if last.elapsed() >= sweep_period() {
            intent.sweep();
            last = std::time::Instant::now();
        }
        drop(intent);
        schedule_sweep(weak, last);
    });
}

/// raid1 resync after an unclean shutdown: copies each dirty region from `members[0]` to the
/// others (members: registry entries in slot order, data at `data_offset` blocks). Returns
/// (regions, bytes) copied. Blocking; control thread only.
pub(crate) fn resync_raid1(
    wi: &WriteIntent,
    members: &[Arc<oxstor_bdev::registry::BdevEntry>],
    data_offset: u64,
    block_size: u32,
) -> Result<Copied, String> {
    let Some((src, dsts)) = members.split_first() else {
        return Ok(Copied::default());
    };
    let bs = u64::from(block_size.max(1));
    let piece = (128 * 1024 / bs).max(1);
    let mut done = Copied::default();
    let regions: Vec<u64> = wi.dirty_regions().collect();
    for region in regions {
        let range = wi.region_blocks(region);
        let mut pos = range.start;
        while pos < range.end {
            let len = piece.min(range.end - pos);
            let data = crate::persist::member_io(src, data_offset + pos, len, None)?;
            for d in dsts {
                crate::persist::member_io(d, data_offset + pos, len, Some(data.clone()))?;
            }
            pos += len;
        }
        done.regions += 1;
        done.bytes += (range.end - range.start) * bs;
    }
    Ok(done)
}

/// raid10 resync after an unclean shutdown: for every chunk piece of each dirty region,
/// copies copy 0 over copy 1 (`members`: slot order, None where a slot is missing; such
/// pieces are skipped). Returns (regions, array bytes) covered. Blocking; control thread only.
pub(crate) fn resync_raid10(
    wi: &WriteIntent,
    layout: &crate::layout::Layout,
    members: &[Option<Arc<oxstor_bdev::registry::BdevEntry>>],
    data_offset: u64,
    block_size: u32,
) -> Result<Copied, String> {
    let bs = u64::from(block_size.max(1));
    let piece_blocks = (128 * 1024 / bs).max(1);
    let mut done = Copied::default();
    let regions: Vec<u64> = wi.dirty_regions().collect();
    for region in regions {
        let range = wi.region_blocks(region);
        let pieces = layout
            .map(range.start, range.end - range.start)
            .map_err(|e| e.to_string())?;
        for piece in pieces {
            let (Some(first), Some(second)) = (piece.copy(0), piece.copy(1)) else {
                return Err("raid10 piece without two copies".into());
            };
            let member = |m: usize| members.get(m).and_then(Option::as_ref);
            let (Some(src), Some(dst)) = (member(first.member), member(second.member)) else {
                continue;
            };
            let mut at = 0;
            while at < piece.blocks {
                let len = piece_blocks.min(piece.blocks - at);
                let data = crate::persist::member_io(
                    src,
                    data_offset + first.member_offset + at,
                    len,
                    None,
                )?;
                crate::persist::member_io(
                    dst,
                    data_offset + second.member_offset + at,
                    len,
                    Some(data),
                )?;
                at += len;
            }
        }
        done.regions += 1;
        done.bytes += (range.end - range.start) * bs;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_image_parses_back() {
        let mut wi = WriteIntent::new(1000, 16).unwrap();
        wi.mark(20, 1).unwrap();
        wi.mark(999, 1).unwrap();
        let img = render(&wi, 1000);
        let back = load(&img, 1000, 16).unwrap();
        assert_eq!(back.dirty_regions().collect::<Vec<_>>(), vec![1, 62]);
        assert!(load(&img, 1000, 32).is_err());
        let mut bad = img.clone();
        bad[20] ^= 1;
        assert!(load(&bad, 1000, 16).is_err());
        assert_eq!(all_dirty(1000, 16).unwrap().dirty_count(), 63);
    }

    #[test]
    fn chunk_grows_to_fit() {
        let c = choose_chunk_blocks(1 << 40, 512, 4096);
        assert!(crate::bitmap::image_len((1u64 << 40).div_ceil(c)) <= 4096);
    }
}
