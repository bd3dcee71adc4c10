//! The write-intent bitmap: one bit per region of the array ("chunk", 64 MiB by default as
//! in mdadm) saying "writes may have been in flight here".
//!
//! Rules (md's, `md.4` and `bitmap.md`):
//! - a region's bit reaches the disk *before* any write to the region is issued;
//! - it is cleared lazily, after the region has seen no writes for [`IDLE_SWEEPS`] sweeps
//!   (the caller sweeps every few seconds), or as soon as a resync of the region completes;
//! - while the array is degraded nothing is cleared, so a member that comes back only needs
//!   the dirty regions rebuilt;
//! - after an unclean shutdown only the dirty regions are resynced.
//!
//! On top of md, [`WriteIntent`] keeps a per-removed-member *delta*: the regions written
//! since that member left, so each returning member gets exactly its own delta even when
//! members come and go at different times.
//!
//! Pure logic, no I/O: [`WriteIntent::mark`] says whether a write may proceed and whether a
//! flush is needed; [`WriteIntent::begin_flush`] renders the on-disk image for the bdev layer
//! to write and [`WriteIntent::end_flush`] records that it landed.
//!
//! On-disk format (little-endian), a zero-copy [`BitmapView`]:
//!
//! ```text
//!  0 magic "OXBITMAP"   8 version u32   12 crc32c u32 (of the 64-byte header, crc zeroed)
//! 16 chunk blocks u64  24 events u64 (array events at the last flush)
//! 32 bit count u64     40 array blocks u64   48..64 reserved
//! 64 bits, LSB first: bit i is byte i/8, bit i%8
//! ```
//! The crc covers the header only, so a flush may rewrite just the blocks of bits that
//! changed.

use std::ops::Range;

/// The magic at byte 0.
pub const MAGIC: [u8; 8] = *b"OXBITMAP";
/// The only version we write and read.
pub const VERSION: u32 = 1;
/// Bytes of header before the bits.
pub const HEADER_LEN: usize = 64;
/// mdadm's default chunk: 64 MiB, here in 4 KiB blocks.
pub const DEFAULT_CHUNK_BYTES: u64 = 64 << 20;
/// Idle sweeps after which a region with no writes becomes clean (md: 2 sweeps of 5 s).
pub const IDLE_SWEEPS: u8 = 2;

mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const CRC: usize = 12;
    pub const CHUNK_BLOCKS: usize = 16;
    pub const EVENTS: usize = 24;
    pub const BIT_COUNT: usize = 32;
    pub const ARRAY_BLOCKS: usize = 40;
}

/// Why a bitmap image or geometry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    #[error("bitmap buffer is {len} bytes, need {need}")]
    TooShort { len: usize, need: usize },
    #[error("no oxstor bitmap (magic {0:02x?})")]
    BadMagic([u8; 8]),
    #[error("bitmap version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u32),
    #[error("bitmap header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("bitmap chunk of {0} blocks is not a power of two")]
    ChunkNotPowerOfTwo(u64),
    #[error("bitmap has {found} bits but {array_blocks} blocks in {chunk_blocks}-block chunks need {expected}")]
    BitCountMismatch {
        found: u64,
        expected: u64,
        array_blocks: u64,
        chunk_blocks: u64,
    },
    #[error("bitmap describes {found} array blocks, the array has {expected}")]
    ArraySizeMismatch { found: u64, expected: u64 },
    #[error("blocks {offset}+{blocks} lie beyond the array's {array_blocks} blocks")]
    OutOfRange {
        offset: u64,
        blocks: u64,
        array_blocks: u64,
    },
}

/// Bytes needed for the image of a bitmap with `bits` bits (header included).
pub fn image_len(bits: u64) -> usize {
    HEADER_LEN + bits.div_ceil(8) as usize
}

fn regions_needed(array_blocks: u64, chunk_blocks: u64) -> u64 {
    array_blocks.div_ceil(chunk_blocks)
}

fn header_crc(header: &[u8]) -> u32 {
    let before = header.get(..field::CRC).unwrap_or_default();
    let after = header.get(field::CRC + 4..HEADER_LEN).unwrap_or_default();
    let crc = crc32c::crc32c_append(crc32c::crc32c(before), &[0; 4]);
    crc32c::crc32c_append(crc, after)
}

fn u64_at(buf: &[u8], offset: usize) -> u64 {
    buf.get(offset..)
        .and_then(|rest| rest.first_chunk::<8>())
        .map_or(0, |bytes| u64::from_le_bytes(*bytes))
}

fn u32_at(buf: &[u8], offset: usize) -> u32 {
    buf.get(offset..)
        .and_then(|rest| rest.first_chunk::<4>())
        .map_or(0, |bytes| u32::from_le_bytes(*bytes))
}

fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(offset..offset + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Zero-copy view over a bitmap image. Reads never panic; bits past the buffer read as set
/// (the safe answer: "may be dirty").
#[derive(Debug, Clone, Copy)]
pub struct BitmapView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> BitmapView<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        BitmapView { buffer }
    }

    /// Checks magic, version, header crc, chunk size, that the bit count fits
    /// `array_blocks`, and that the buffer holds every bit.
    pub fn new_checked(buffer: T, array_blocks: u64) -> Result<Self, BitmapError> {
        let view = BitmapView { buffer };
        let bytes = view.buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(BitmapError::TooShort {
                len: bytes.len(),
                need: HEADER_LEN,
            });
        }
        let magic: [u8; 8] = bytes[..8].try_into().unwrap_or_default();
        if magic != MAGIC {
            return Err(BitmapError::BadMagic(magic));
        }
        if view.version() != VERSION {
            return Err(BitmapError::UnsupportedVersion(view.version()));
        }
        let computed = header_crc(bytes);
        if computed != view.crc() {
            return Err(BitmapError::BadCrc {
                stored: view.crc(),
                computed,
            });
        }
        let chunk = view.chunk_blocks();
        if !chunk.is_power_of_two() {
            return Err(BitmapError::ChunkNotPowerOfTwo(chunk));
        }
        if view.array_blocks() != array_blocks {
            return Err(BitmapError::ArraySizeMismatch {
                found: view.array_blocks(),
                expected: array_blocks,
            });
        }
        let expected = regions_needed(array_blocks, chunk);
        if view.bit_count() != expected {
            return Err(BitmapError::BitCountMismatch {
                found: view.bit_count(),
                expected,
                array_blocks,
                chunk_blocks: chunk,
            });
        }
        let need = image_len(expected);
        if bytes.len() < need {
            return Err(BitmapError::TooShort {
                len: bytes.len(),
                need,
            });
        }
        Ok(view)
    }

    pub fn version(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::VERSION)
    }
    pub fn crc(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::CRC)
    }
    pub fn chunk_blocks(&self) -> u64 {
        u64_at(self.buffer.as_ref(), field::CHUNK_BLOCKS)
    }
    /// Array events count when the bitmap was last flushed.
    pub fn events(&self) -> u64 {
        u64_at(self.buffer.as_ref(), field::EVENTS)
    }
    pub fn bit_count(&self) -> u64 {
        u64_at(self.buffer.as_ref(), field::BIT_COUNT)
    }
    pub fn array_blocks(&self) -> u64 {
        u64_at(self.buffer.as_ref(), field::ARRAY_BLOCKS)
    }

    /// Whether region `region` is dirty.
    pub fn bit(&self, region: u64) -> bool {
        let byte = HEADER_LEN as u64 + region / 8;
        usize::try_from(byte)
            .ok()
            .and_then(|byte| self.buffer.as_ref().get(byte))
            .is_none_or(|&b| b >> (region % 8) & 1 == 1)
    }

    /// Whether this bitmap can be trusted with a superblock at `superblock_events`: md
    /// accepts a bitmap whose events equal the superblock's or are one greater (the bitmap
    /// is flushed before the superblock). An older bitmap may miss writes.
    pub fn is_current_for(&self, superblock_events: u64) -> bool {
        let events = self.events();
        events == superblock_events || events == superblock_events.wrapping_add(1)
    }
}

/// A growable-once set of bits, one per region.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bits {
    words: Vec<u64>,
    len: u64,
}

impl Bits {
    fn new(len: u64) -> Bits {
        Bits {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    fn get(&self, bit: u64) -> bool {
        self.words
            .get((bit / 64) as usize)
            .is_some_and(|w| w >> (bit % 64) & 1 == 1)
    }

    /// Sets `bit`; returns whether it was clear.
    fn set(&mut self, bit: u64) -> bool {
        match self.words.get_mut((bit / 64) as usize) {
            Some(word) => {
                let mask = 1u64 << (bit % 64);
                let was_clear = *word & mask == 0;
                *word |= mask;
                was_clear
            }
            None => false,
        }
    }

    fn clear(&mut self, bit: u64) {
        if let Some(word) = self.words.get_mut((bit / 64) as usize) {
            *word &= !(1u64 << (bit % 64));
        }
    }

    fn set_all(&mut self) {
        for bit in 0..self.len {
            self.set(bit);
        }
    }

    fn ones(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as u64;
                    rest &= rest - 1;
                    index as u64 * 64 + bit
                })
            })
        })
    }

    fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// Regions written while a member was away: what it needs when it comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDelta {
    /// The slot the member held.
    pub slot: u32,
    bits: Bits,
    chunk_blocks: u64,
}

impl MemberDelta {
    /// Regions to rebuild on the returning member, in order.
    pub fn regions(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.ones()
    }

    /// The same as array block ranges.
    pub fn block_ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        let chunk = self.chunk_blocks;
        self.bits.ones().map(move |r| r * chunk..(r + 1) * chunk)
    }

    pub fn region_count(&self) -> u64 {
        self.bits.count()
    }
}

/// What [`WriteIntent::mark`] decided for one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Regions whose bit was clear in memory and is now set: they must be persisted before
    /// the write proceeds (empty when none). Their hull, for choosing what to write.
    pub newly_dirty: Range<u64>,
    /// Whether every region of the write is already dirty on disk, so the write may go now.
    /// If not, hold it until [`WriteIntent::is_persisted`] says so after a flush.
    pub may_proceed: bool,
}

/// A flush in progress, from [`WriteIntent::begin_flush`] to [`WriteIntent::end_flush`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a flush must be ended with end_flush"]
pub struct Flush {
    /// Bytes of the image to write (header and bits).
    pub len: usize,
}

/// The in-memory write-intent state of an array.
#[derive(Debug, Clone)]
pub struct WriteIntent {
    chunk_blocks: u64,
    array_blocks: u64,
    events: u64,
    /// Regions that may have writes in flight (the bits we want on disk).
    intent: Bits,
    /// Regions known to be set on disk: writes to them may proceed.
    persisted: Bits,
    /// Regions the flush in flight is setting.
    flushing: Bits,
    flush_in_flight: bool,
    /// Writes in flight per region.
    pending: Vec<u32>,
    /// Sweeps since the region's last write.
    idle: Vec<u8>,
    /// Degraded: keep every bit (a returning member needs them).
    hold_bits: bool,
    deltas: Vec<MemberDelta>,
}

impl WriteIntent {
    /// A clean bitmap for an array of `array_blocks` with `chunk_blocks` per region.
    pub fn new(array_blocks: u64, chunk_blocks: u64) -> Result<WriteIntent, BitmapError> {
        if !chunk_blocks.is_power_of_two() {
            return Err(BitmapError::ChunkNotPowerOfTwo(chunk_blocks));
        }
        let regions = regions_needed(array_blocks, chunk_blocks);
        Ok(WriteIntent {
            chunk_blocks,
            array_blocks,
            events: 0,
            intent: Bits::new(regions),
            persisted: Bits::new(regions),
            flushing: Bits::new(regions),
            flush_in_flight: false,
            pending: vec![0; regions as usize],
            idle: vec![0; regions as usize],
            hold_bits: false,
            deltas: Vec::new(),
        })
    }

    /// Loads the bitmap read from disk. If it is older than the superblock (see
    /// [`BitmapView::is_current_for`]) every region is taken as dirty: a full resync.
    pub fn load<T: AsRef<[u8]>>(
        view: &BitmapView<T>,
        superblock_events: u64,
    ) -> Result<WriteIntent, BitmapError> {
        let mut bitmap = WriteIntent::new(view.array_blocks(), view.chunk_blocks())?;
        bitmap.events = superblock_events;
        if view.is_current_for(superblock_events) {
            for region in 0..bitmap.regions() {
                if view.bit(region) {
                    bitmap.intent.set(region);
                    bitmap.persisted.set(region);
                }
            }
        } else {
            bitmap.intent.set_all();
            // Not persisted: the next flush writes the all-dirty image with fresh events.
        }
        Ok(bitmap)
    }

    pub fn regions(&self) -> u64 {
        self.intent.len
    }

    pub fn chunk_blocks(&self) -> u64 {
        self.chunk_blocks
    }

    /// Array blocks covered by `region`.
    pub fn region_blocks(&self, region: u64) -> Range<u64> {
        let start = region
            .saturating_mul(self.chunk_blocks)
            .min(self.array_blocks);
        start
            ..start
                .saturating_add(self.chunk_blocks)
                .min(self.array_blocks)
    }

    /// Regions touched by array blocks `offset..offset+blocks`.
    pub fn regions_for(&self, offset: u64, blocks: u64) -> Result<Range<u64>, BitmapError> {
        match offset.checked_add(blocks) {
            Some(end) if end <= self.array_blocks => {
                if blocks == 0 {
                    return Ok(0..0);
                }
                Ok(offset / self.chunk_blocks..end.div_ceil(self.chunk_blocks))
            }
            _ => Err(BitmapError::OutOfRange {
                offset,
                blocks,
                array_blocks: self.array_blocks,
            }),
        }
    }

    /// Records a write about to start. Counts it as in flight until [`Self::finish_write`],
    /// sets the regions' bits (and those of every removed member's delta), and says whether
    /// the write may go now.
    pub fn mark(&mut self, offset: u64, blocks: u64) -> Result<Mark, BitmapError> {
        let regions = self.regions_for(offset, blocks)?;
        let mut newly_dirty: Option<Range<u64>> = None;
        let mut may_proceed = true;
        for region in regions {
            let index = region as usize;
            self.pending[index] = self.pending[index].saturating_add(1);
            self.idle[index] = 0;
            if self.intent.set(region) {
                newly_dirty = Some(match newly_dirty {
                    Some(range) => range.start..region + 1,
                    None => region..region + 1,
                });
            }
            may_proceed &= self.persisted.get(region);
            for delta in &mut self.deltas {
                delta.bits.set(region);
            }
        }
        Ok(Mark {
            newly_dirty: newly_dirty.unwrap_or(0..0),
            may_proceed,
        })
    }

    /// Records that a write marked earlier has completed.
    pub fn finish_write(&mut self, offset: u64, blocks: u64) -> Result<(), BitmapError> {
        for region in self.regions_for(offset, blocks)? {
            let index = region as usize;
            self.pending[index] = self.pending[index].saturating_sub(1);
            self.idle[index] = 0;
        }
        Ok(())
    }

    /// Whether every region of the range is dirty on disk (a held write may go).
    pub fn is_persisted(&self, offset: u64, blocks: u64) -> Result<bool, BitmapError> {
        Ok(self
            .regions_for(offset, blocks)?
            .all(|region| self.persisted.get(region)))
    }

    /// Whether the on-disk bitmap differs from the in-memory one (bits to set or clear).
    pub fn needs_flush(&self) -> bool {
        self.intent.words != self.persisted.words
    }

    pub fn flush_in_flight(&self) -> bool {
        self.flush_in_flight
    }

    /// Sets the array events count written with the next flush.
    pub fn set_events(&mut self, events: u64) {
        self.events = events;
    }

    /// Bytes of the on-disk image.
    pub fn image_len(&self) -> usize {
        image_len(self.regions())
    }

    /// Starts a flush: renders the image into `out` (at least [`Self::image_len`] bytes).
    /// Returns `None` if a flush is already in flight (call again after it ends) or nothing
    /// changed. While it is in flight, regions it clears count as not persisted, because the
    /// disk may already hold either value.
    pub fn begin_flush(&mut self, out: &mut [u8]) -> Result<Option<Flush>, BitmapError> {
        if self.flush_in_flight || !self.needs_flush() {
            return Ok(None);
        }
        let len = self.image_len();
        if out.len() < len {
            return Err(BitmapError::TooShort {
                len: out.len(),
                need: len,
            });
        }
        self.render(&mut out[..len]);
        for (index, word) in self.persisted.words.iter_mut().enumerate() {
            let intent = self.intent.words[index];
            self.flushing.words[index] = intent & !*word;
            *word &= intent;
        }
        self.flush_in_flight = true;
        Ok(Some(Flush { len }))
    }

    /// Ends a flush. On success the regions it set become persisted (held writes to them may
    /// go); on failure nothing is persisted and the bdev layer should fail the bitmap.
    pub fn end_flush(&mut self, flush: Flush, written: bool) {
        let _ = flush;
        if written {
            for (word, flushing) in self.persisted.words.iter_mut().zip(&self.flushing.words) {
                *word |= flushing;
            }
        }
        self.flushing.words.fill(0);
        self.flush_in_flight = false;
    }

    fn render(&self, out: &mut [u8]) {
        out.fill(0);
        put(out, field::MAGIC, &MAGIC);
        put(out, field::VERSION, &VERSION.to_le_bytes());
        put(out, field::CHUNK_BLOCKS, &self.chunk_blocks.to_le_bytes());
        put(out, field::EVENTS, &self.events.to_le_bytes());
        put(out, field::BIT_COUNT, &self.regions().to_le_bytes());
        put(out, field::ARRAY_BLOCKS, &self.array_blocks.to_le_bytes());
        let crc = header_crc(out);
        put(out, field::CRC, &crc.to_le_bytes());
        for region in self.intent.ones() {
            if let Some(byte) = out.get_mut(HEADER_LEN + (region / 8) as usize) {
                *byte |= 1 << (region % 8);
            }
        }
    }

    /// One idle sweep (the caller runs one every few seconds): dirty regions with no write
    /// in flight age by one, and those idle for [`IDLE_SWEEPS`] become clean. Returns how
    /// many became clean (if any, a flush is due, at leisure). Does nothing while degraded.
    pub fn sweep(&mut self) -> u64 {
        self.sweep_with(|_| false)
    }

    /// [`Self::sweep`] for a caller that also counts writes outside this structure:
    /// `busy(region)` is asked just before a region would become clean, and a region it
    /// calls busy stays dirty (as if a write were in flight there).
    pub fn sweep_with(&mut self, mut busy: impl FnMut(u64) -> bool) -> u64 {
        if self.hold_bits {
            return 0;
        }
        let mut cleaned = 0;
        let dirty: Vec<u64> = self.intent.ones().collect();
        for region in dirty {
            let index = region as usize;
            if self.pending[index] != 0 {
                continue;
            }
            self.idle[index] = self.idle[index].saturating_add(1);
            if self.idle[index] >= IDLE_SWEEPS {
                if busy(region) {
                    self.idle[index] = 0;
                    continue;
                }
                self.intent.clear(region);
                self.idle[index] = 0;
                cleaned += 1;
            }
        }
        cleaned
    }

    /// Marks `regions` clean at once after a resync made them consistent (unless writes are
    /// in flight there, or the array is degraded). Returns how many became clean.
    pub fn clear_synced(&mut self, regions: Range<u64>) -> u64 {
        self.clear_synced_with(regions, |_| false)
    }

    /// [`Self::clear_synced`] with `busy` as in [`Self::sweep_with`].
    pub fn clear_synced_with(
        &mut self,
        regions: Range<u64>,
        mut busy: impl FnMut(u64) -> bool,
    ) -> u64 {
        if self.hold_bits {
            return 0;
        }
        let mut cleaned = 0;
        for region in regions.start..regions.end.min(self.regions()) {
            if self.pending[region as usize] == 0 && self.intent.get(region) && !busy(region) {
                self.intent.clear(region);
                cleaned += 1;
            }
        }
        cleaned
    }

    /// A write happened in `region` that [`Self::mark`] did not see (it was counted
    /// elsewhere): the region is not idle.
    pub fn touch(&mut self, region: u64) {
        if let Some(idle) = self.idle.get_mut(region as usize) {
            *idle = 0;
        }
    }

    /// Words (64 regions each) of [`Self::fast_word`].
    pub fn word_count(&self) -> usize {
        self.intent.words.len()
    }

    /// Regions `64 * index ..` whose bit is set on disk (no flush in flight clears it) and
    /// that no member delta tracks: a write there needs nothing from the bitmap but to be
    /// counted while in flight. 0 while any delta is tracked.
    pub fn fast_word(&self, index: usize) -> u64 {
        if !self.deltas.is_empty() {
            return 0;
        }
        let persisted = self.persisted.words.get(index).copied().unwrap_or(0);
        persisted & self.intent.words.get(index).copied().unwrap_or(0)
    }

    /// While degraded, bits are never cleared, so a re-added member can be rebuilt from
    /// the bitmap even after a restart.
    pub fn set_degraded(&mut self, degraded: bool) {
        self.hold_bits = degraded;
    }

    /// Dirty regions, in order: what to resync after an unclean shutdown.
    pub fn dirty_regions(&self) -> impl Iterator<Item = u64> + '_ {
        self.intent.ones()
    }

    pub fn dirty_count(&self) -> u64 {
        self.intent.count()
    }

    /// Starts tracking the regions written while the member in `slot` is away. Regions
    /// dirty now are included: writes in flight when it left may have missed it.
    pub fn member_removed(&mut self, slot: u32) {
        self.deltas.retain(|delta| delta.slot != slot);
        self.deltas.push(MemberDelta {
            slot,
            bits: self.intent.clone(),
            chunk_blocks: self.chunk_blocks,
        });
    }

    /// The member in `slot` is back: returns the regions it missed (`None` if it was not
    /// being tracked, e.g. after a restart: then use [`Self::dirty_regions`], which kept every
    /// bit while degraded) and stops tracking it.
    pub fn member_readded(&mut self, slot: u32) -> Option<MemberDelta> {
        let index = self.deltas.iter().position(|delta| delta.slot == slot)?;
        Some(self.deltas.swap_remove(index))
    }

    /// Slots whose deltas are being tracked.
    pub fn tracked_members(&self) -> impl Iterator<Item = u32> + '_ {
        self.deltas.iter().map(|delta| delta.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 16;

    fn bitmap() -> WriteIntent {
        // 10 regions, the last one short.
        WriteIntent::new(9 * CHUNK + 5, CHUNK).unwrap()
    }

    fn flush(bitmap: &mut WriteIntent) -> Vec<u8> {
        let mut image = vec![0u8; bitmap.image_len()];
        let flush = bitmap.begin_flush(&mut image).unwrap().expect("a flush");
        bitmap.end_flush(flush, true);
        image
    }

    #[test]
    fn geometry() {
        let b = bitmap();
        assert_eq!(b.regions(), 10);
        assert_eq!(b.region_blocks(9), 144..149);
        assert_eq!(b.regions_for(15, 2), Ok(0..2));
        assert_eq!(b.regions_for(16, 16), Ok(1..2));
        assert_eq!(b.regions_for(3, 0), Ok(0..0));
        assert!(b.regions_for(140, 10).is_err());
        assert_eq!(
            WriteIntent::new(100, 24).unwrap_err(),
            BitmapError::ChunkNotPowerOfTwo(24)
        );
        assert_eq!(image_len(10), 66);
    }

    #[test]
    fn write_waits_for_the_bit_on_disk() {
        let mut b = bitmap();
        let mark = b.mark(20, 20).unwrap();
        assert_eq!(mark.newly_dirty, 1..3);
        assert!(!mark.may_proceed);
        assert!(b.needs_flush());
        // A second write to the same region during the flush waits too, and needs no new bit.
        let mut image = vec![0u8; b.image_len()];
        let f = b.begin_flush(&mut image).unwrap().unwrap();
        let second = b.mark(33, 1).unwrap();
        assert_eq!(second.newly_dirty, 0..0);
        assert!(!second.may_proceed);
        // Only one flush at a time.
        assert_eq!(b.begin_flush(&mut image).unwrap(), None);
        b.end_flush(f, true);
        assert!(b.is_persisted(20, 20).unwrap());
        assert!(!b.needs_flush());
        // Now writes there go at once.
        assert!(b.mark(17, 3).unwrap().may_proceed);
        // The image has bits 1 and 2.
        let view = BitmapView::new_checked(&image[..], 149).unwrap();
        assert_eq!(
            (0..10).filter(|&r| view.bit(r)).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(view.chunk_blocks(), CHUNK);
    }

    #[test]
    fn failed_flush_persists_nothing() {
        let mut b = bitmap();
        b.mark(0, 1).unwrap();
        let mut image = vec![0u8; b.image_len()];
        let f = b.begin_flush(&mut image).unwrap().unwrap();
        b.end_flush(f, false);
        assert!(!b.is_persisted(0, 1).unwrap());
        assert!(b.needs_flush());
    }

    #[test]
    fn lazy_clearing_after_idle_sweeps() {
        let mut b = bitmap();
        b.mark(0, 40).unwrap();
        flush(&mut b);
        b.finish_write(0, 32).unwrap(); // regions 0 and 1 done; region 2 still busy
        assert_eq!(b.sweep(), 0);
        assert_eq!(b.sweep(), 2);
        assert_eq!(b.dirty_regions().collect::<Vec<_>>(), vec![2]);
        // The clear must reach the disk; while that flush is in flight region 0 is not
        // "persisted", so a new write there waits.
        let mut image = vec![0u8; b.image_len()];
        let f = b.begin_flush(&mut image).unwrap().unwrap();
        let mark = b.mark(0, 1).unwrap();
        assert_eq!(mark.newly_dirty, 0..1);
        assert!(!mark.may_proceed);
        b.end_flush(f, true);
        assert!(!b.is_persisted(0, 1).unwrap());
        flush(&mut b);
        assert!(b.is_persisted(0, 1).unwrap());
        // A write resets the idle count.
        b.finish_write(0, 1).unwrap();
        b.finish_write(32, 8).unwrap();
        b.sweep();
        b.mark(32, 1).unwrap();
        b.finish_write(32, 1).unwrap();
        assert_eq!(b.sweep(), 1); // region 0 (second idle sweep); region 2 restarted
        assert_eq!(b.sweep(), 1);
        assert_eq!(b.dirty_count(), 0);
    }

    #[test]
    fn clear_after_resync_and_hold_while_degraded() {
        let mut b = bitmap();
        b.mark(0, 149).unwrap();
        b.finish_write(0, 149).unwrap();
        flush(&mut b);
        b.set_degraded(true);
        assert_eq!(b.sweep(), 0);
        assert_eq!(b.sweep(), 0);
        assert_eq!(b.clear_synced(0..10), 0);
        b.set_degraded(false);
        b.mark(50, 1).unwrap(); // region 3 busy
        assert_eq!(b.clear_synced(0..5), 4);
        assert_eq!(
            b.dirty_regions().collect::<Vec<_>>(),
            vec![3, 5, 6, 7, 8, 9]
        );
    }

    #[test]
    fn image_round_trip_and_stale_bitmap() {
        let mut b = bitmap();
        b.set_events(41);
        b.mark(0, 1).unwrap();
        b.mark(148, 1).unwrap();
        let image = flush(&mut b);
        let view = BitmapView::new_checked(&image[..], 149).unwrap();
        assert_eq!(view.events(), 41);
        assert!(view.is_current_for(41));
        assert!(view.is_current_for(40));
        assert!(!view.is_current_for(42));
        let loaded = WriteIntent::load(&view, 41).unwrap();
        assert_eq!(loaded.dirty_regions().collect::<Vec<_>>(), vec![0, 9]);
        assert!(loaded.is_persisted(0, 1).unwrap());
        assert!(!loaded.needs_flush());
        // Superblock moved on without the bitmap: everything is suspect.
        let stale = WriteIntent::load(&view, 50).unwrap();
        assert_eq!(stale.dirty_count(), 10);
        assert!(stale.needs_flush());
    }

    #[test]
    fn image_refusals() {
        let mut b = bitmap();
        b.mark(0, 1).unwrap();
        let image = flush(&mut b);
        assert!(matches!(
            BitmapView::new_checked(&image[..10], 149),
            Err(BitmapError::TooShort { .. })
        ));
        assert_eq!(
            BitmapView::new_checked(&image[..65], 149).unwrap_err(),
            BitmapError::TooShort { len: 65, need: 66 }
        );
        assert!(matches!(
            BitmapView::new_checked(&[0u8; 80][..], 149),
            Err(BitmapError::BadMagic(_))
        ));
        let mut bad = image.clone();
        bad[field::EVENTS] ^= 1;
        assert!(matches!(
            BitmapView::new_checked(&bad[..], 149),
            Err(BitmapError::BadCrc { .. })
        ));
        assert_eq!(
            BitmapView::new_checked(&image[..], 150).unwrap_err(),
            BitmapError::ArraySizeMismatch {
                found: 149,
                expected: 150
            }
        );
        let mut count = image.clone();
        put(&mut count, field::BIT_COUNT, &11u64.to_le_bytes());
        let crc = header_crc(&count);
        put(&mut count, field::CRC, &crc.to_le_bytes());
        assert!(matches!(
            BitmapView::new_checked(&count[..], 149),
            Err(BitmapError::BitCountMismatch {
                found: 11,
                expected: 10,
                ..
            })
        ));
        let mut version = image.clone();
        put(&mut version, field::VERSION, &9u32.to_le_bytes());
        let crc = header_crc(&version);
        put(&mut version, field::CRC, &crc.to_le_bytes());
        assert_eq!(
            BitmapView::new_checked(&version[..], 149).unwrap_err(),
            BitmapError::UnsupportedVersion(9)
        );
        // Unchecked views never panic and read missing bits as dirty.
        let short = BitmapView::new_unchecked(&image[..3]);
        assert!(short.bit(5));
        assert_eq!(short.events(), 0);
        let mut too_small = [0u8; 8];
        assert!(b.mark(1, 1).is_ok());
        assert!(b.begin_flush(&mut too_small).is_err() || !b.needs_flush());
    }

    #[test]
    fn fast_words_follow_the_disk_and_busy_regions_stay_dirty() {
        let mut b = bitmap();
        b.mark(0, 1).unwrap();
        b.mark(3 * CHUNK, 1).unwrap();
        assert_eq!(b.fast_word(0), 0, "nothing is on disk yet");
        let mut img = vec![0u8; b.image_len()];
        let f = b.begin_flush(&mut img).unwrap().unwrap();
        assert_eq!(b.fast_word(0), 0, "a flush in flight persists nothing yet");
        b.end_flush(f, true);
        assert_eq!(b.fast_word(0), 0b1001);
        b.finish_write(0, 1).unwrap();
        b.finish_write(3 * CHUNK, 1).unwrap();
        // Region 3 is busy elsewhere: it stays dirty however long it idles here.
        for _ in 0..IDLE_SWEEPS {
            b.sweep_with(|r| r == 3);
        }
        assert_eq!(b.dirty_regions().collect::<Vec<_>>(), vec![3]);
        assert_eq!(b.fast_word(0), 0b1000, "region 0 is clean in memory");
        // Touched regions do not age.
        b.touch(3);
        b.sweep();
        assert_eq!(b.dirty_count(), 1);
        b.sweep();
        assert_eq!(b.dirty_count(), 0);
        assert_eq!(b.clear_synced_with(0..10, |_| true), 0);
        // A tracked member delta turns the fast path off.
        b.mark(5 * CHUNK, 1).unwrap();
        let f = b.begin_flush(&mut img).unwrap().unwrap();
        b.end_flush(f, true);
        assert_eq!(b.fast_word(0), 1 << 5);
        b.member_removed(1);
        assert_eq!(b.fast_word(0), 0);
        b.member_readded(1).unwrap();
        assert_eq!(b.fast_word(0), 1 << 5);
        assert_eq!(b.word_count(), 1);
    }

    #[test]
    fn member_deltas() {
        let mut b = bitmap();
        b.mark(0, 1).unwrap(); // region 0 in flight when member 2 leaves
        b.member_removed(2);
        b.mark(40, 1).unwrap(); // region 2
        b.member_removed(0);
        b.mark(100, 1).unwrap(); // region 6
        assert_eq!(b.tracked_members().collect::<Vec<_>>(), vec![2, 0]);
        let delta2 = b.member_readded(2).unwrap();
        assert_eq!(delta2.regions().collect::<Vec<_>>(), vec![0, 2, 6]);
        assert_eq!(delta2.block_ranges().next(), Some(0..16));
        let delta0 = b.member_readded(0).unwrap();
        assert_eq!(delta0.regions().collect::<Vec<_>>(), vec![0, 2, 6]);
        assert_eq!(delta0.region_count(), 3);
        assert_eq!(b.member_readded(0), None);
        // Without in-flight writes at removal, the delta holds only later writes.
        let mut c = bitmap();
        c.member_removed(1);
        c.mark(70, 1).unwrap();
        assert_eq!(
            c.member_readded(1).unwrap().regions().collect::<Vec<_>>(),
            vec![4]
        );
    }
}
