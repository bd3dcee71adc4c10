//! The activity log (after DRBD's `drbd_actlog.c`, simplified to snapshot transactions): the
//! set of "hot" 4 MiB extents where writes may be in flight.
//!
//! A write may start only once every extent it touches is in a transaction on disk, so after a
//! crash the hot extents (plus the bitmaps) are all that can differ between the nodes; they
//! are marked out of sync for every peer ([`extent_bits`]) and resynced. The set is bounded
//! (`capacity` extents); an extent with no write in flight (refcount 0) may be evicted, least
//! recently used first, when a new one is needed. Before a transaction that drops an extent
//! is written, the bitmap pages covering that extent must be on disk.
//!
//! Each transaction is a snapshot of the whole set in one 4 KiB block, written to ring slot
//! `tr_number % AL_SLOTS`; recovery takes the valid block with the highest number
//! ([`ActivityLog::recover`]). Little-endian:
//!
//! ```text
//!  0 magic u32 0x4f58414c ("OXAL" as a BE string)   4 version u32 (1)
//!  8 tr_number u64      16 count u32      20 crc32c u32 (whole block, this field zeroed)
//! 24 count × extent number u32, ascending; the rest zero
//! ```
//!
//! Write path of the runtime: [`ActivityLog::begin`] (Hot → submit; NeedsCommit → wait for
//! the next transaction; Full → retry after a write completes), [`ActivityLog::end`] when the
//! write completes. Commit loop: while [`ActivityLog::has_pending`], write the bitmap pages of
//! the extents returned by [`ActivityLog::prepare_commit`], then its block, then call
//! [`ActivityLog::commit_done`] and start the writes waiting on it
//! ([`ActivityLog::is_committed`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::RangeInclusive;

use super::layout::{AL_EXTENT_BYTES, AL_SLOTS, BM_BLOCK_BYTES, META_BLOCK};
use super::superblock::block_crc;
use super::MetaError;

/// The magic at byte 0 (bytes "LAXO" little-endian).
pub const AL_MAGIC: u32 = 0x4f58_414c;
/// The only transaction format version.
pub const AL_VERSION: u32 = 1;
/// Bytes before the extent list.
pub const AL_HEADER_LEN: usize = 24;
/// Most extents one transaction block holds: the largest capacity.
pub const MAX_CAPACITY: usize = (META_BLOCK as usize - AL_HEADER_LEN) / 4;
const BLOCK_LEN: usize = META_BLOCK as usize;
const WHAT: &str = "activity log transaction";

mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const TR: usize = 8;
    pub const COUNT: usize = 16;
    pub const CRC: usize = 20;
}

/// Bitmap bits per extent (1024).
pub const BITS_PER_EXTENT: u64 = AL_EXTENT_BYTES / BM_BLOCK_BYTES;

/// The bitmap bit range `[first, end)` of `extent` (clamp `end` to the bitmap's size).
pub fn extent_bits(extent: u32) -> (u64, u64) {
    let first = u64::from(extent) * BITS_PER_EXTENT;
    (first, first + BITS_PER_EXTENT)
}

/// The 4096-byte block of transaction `tr_number` holding `extents` (sorted; at most
/// [`MAX_CAPACITY`], the rest is cut).
pub fn encode_transaction(tr_number: u64, extents: &[u32]) -> Vec<u8> {
    let mut sorted: Vec<u32> = extents.iter().copied().take(MAX_CAPACITY).collect();
    sorted.sort_unstable();
    let mut b = vec![0u8; BLOCK_LEN];
    b[field::MAGIC..field::MAGIC + 4].copy_from_slice(&AL_MAGIC.to_le_bytes());
    b[field::VERSION..field::VERSION + 4].copy_from_slice(&AL_VERSION.to_le_bytes());
    b[field::TR..field::TR + 8].copy_from_slice(&tr_number.to_le_bytes());
    b[field::COUNT..field::COUNT + 4].copy_from_slice(&(sorted.len() as u32).to_le_bytes());
    for (dst, e) in b[AL_HEADER_LEN..].chunks_exact_mut(4).zip(&sorted) {
        dst.copy_from_slice(&e.to_le_bytes());
    }
    let crc = block_crc(&b, field::CRC);
    b[field::CRC..field::CRC + 4].copy_from_slice(&crc.to_le_bytes());
    b
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..)
        .and_then(|rest| rest.first_chunk::<4>())
        .map_or(0, |x| u32::from_le_bytes(*x))
}

/// Decodes one transaction block: `(tr_number, extents)`. Never panics.
pub fn parse_transaction(b: &[u8]) -> Result<(u64, Vec<u32>), MetaError> {
    let Some(b) = b.get(..BLOCK_LEN) else {
        return Err(MetaError::TooShort {
            what: WHAT,
            len: b.len(),
            need: BLOCK_LEN,
        });
    };
    let magic = u32_at(b, field::MAGIC);
    if magic != AL_MAGIC {
        return Err(MetaError::BadMagic {
            what: WHAT,
            found: u64::from(magic),
        });
    }
    let version = u32_at(b, field::VERSION);
    if version != AL_VERSION {
        return Err(MetaError::UnsupportedVersion {
            what: WHAT,
            found: version,
            supported: AL_VERSION,
        });
    }
    let stored = u32_at(b, field::CRC);
    let computed = block_crc(b, field::CRC);
    if stored != computed {
        return Err(MetaError::BadCrc {
            what: WHAT,
            stored,
            computed,
        });
    }
    let count = u32_at(b, field::COUNT);
    if count as usize > MAX_CAPACITY {
        return Err(MetaError::BadAlCount {
            count,
            max: MAX_CAPACITY as u32,
        });
    }
    let tr = b
        .get(field::TR..)
        .and_then(|rest| rest.first_chunk::<8>())
        .map_or(0, |x| u64::from_le_bytes(*x));
    let extents = (0..count as usize)
        .map(|i| u32_at(b, AL_HEADER_LEN + 4 * i))
        .collect();
    Ok((tr, extents))
}

/// What [`ActivityLog::begin`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Every extent is in a transaction on disk; refcounts taken: the write may start.
    Hot,
    /// Refcounts taken, but some extent is not on disk yet: the write must wait until a
    /// transaction including it is written ([`ActivityLog::is_committed`]).
    NeedsCommit,
    /// Not enough room (too few extents without writes in flight); nothing changed. Retry
    /// after some write completes. Also returned, always, for a range longer than the
    /// capacity: the caller must split such writes.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not in any transaction written or being written.
    Pending,
    /// In transaction `tr`, not yet known to be on disk.
    InFlight(u64),
    /// On disk.
    Committed,
}

#[derive(Debug, Clone)]
struct Entry {
    refs: u32,
    state: State,
    /// Key in `idle` while `refs == 0`.
    idle_since: Option<u64>,
}

/// The in-memory activity log.
#[derive(Debug, Clone)]
pub struct ActivityLog {
    capacity: usize,
    entries: HashMap<u32, Entry>,
    /// Extents with no write in flight, by when they became idle (LRU first).
    idle: BTreeMap<u64, u32>,
    clock: u64,
    next_tr: u64,
    /// Entries in state `Pending`.
    uncovered: usize,
    /// Prepared transactions not yet done: their number and the not-yet-committed extents
    /// they cover.
    in_flight: VecDeque<(u64, Vec<u32>)>,
    /// Dropped from the set since the last prepared transaction.
    evicted: Vec<u32>,
}

impl ActivityLog {
    /// An empty log of `capacity` extents (clamped to 1..=[`MAX_CAPACITY`]); the first
    /// transaction is number 1.
    pub fn new(capacity: usize) -> ActivityLog {
        ActivityLog {
            capacity: capacity.clamp(1, MAX_CAPACITY),
            entries: HashMap::new(),
            idle: BTreeMap::new(),
            clock: 0,
            next_tr: 1,
            uncovered: 0,
            in_flight: VecDeque::new(),
            evicted: Vec::new(),
        }
    }

    /// Continues the numbering after `last_tr`, the newest transaction found on disk (from
    /// [`ActivityLog::recover`]): the next one is `last_tr + 1`, so it supersedes every block
    /// in the ring. Must be called before the first [`ActivityLog::prepare_commit`] of a log
    /// attached to existing metadata.
    pub fn set_tr_number(&mut self, last_tr: u64) {
        self.next_tr = last_tr.saturating_add(1);
    }

    /// The number the next transaction will get.
    pub fn next_tr(&self) -> u64 {
        self.next_tr
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Extents in the set (hot, pending or idle).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The extents touched by the byte range (empty range for `len_bytes == 0`). Extent
    /// numbers past `u32::MAX` (16 PiB) are clamped.
    pub fn extents_of(offset_bytes: u64, len_bytes: u64) -> RangeInclusive<u32> {
        if len_bytes == 0 {
            #[allow(clippy::reversed_empty_ranges)]
            return 1..=0;
        }
        let clamp = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
        let first = offset_bytes / AL_EXTENT_BYTES;
        let last = offset_bytes.saturating_add(len_bytes - 1) / AL_EXTENT_BYTES;
        clamp(first)..=clamp(last)
    }

    fn range_len(extents: &RangeInclusive<u32>) -> u64 {
        if extents.is_empty() {
            0
        } else {
            u64::from(*extents.end() - *extents.start()) + 1
        }
    }

    /// Takes a reference on every extent of `extents` for a write about to start; see
    /// [`Begin`]. May evict idle extents (least recently used first) to make room.
    pub fn begin(&mut self, extents: RangeInclusive<u32>) -> Begin {
        let n = Self::range_len(&extents);
        if n == 0 {
            return Begin::Hot;
        }
        if n > self.capacity as u64 {
            return Begin::Full;
        }
        let mut new = 0;
        let mut idle_inside = 0;
        for e in extents.clone() {
            match self.entries.get(&e) {
                None => new += 1,
                Some(entry) if entry.refs == 0 => idle_inside += 1,
                Some(_) => {}
            }
        }
        let free = self.capacity - self.entries.len();
        let evictable = self.idle.len() - idle_inside;
        if new > free + evictable {
            return Begin::Full;
        }
        let mut ready = true;
        // Existing extents first, so the evictions below cannot take one of them.
        for e in extents.clone() {
            if let Some(entry) = self.entries.get_mut(&e) {
                if let Some(since) = entry.idle_since.take() {
                    self.idle.remove(&since);
                }
                entry.refs += 1;
                ready &= entry.state == State::Committed;
            }
        }
        for e in extents {
            if self.entries.contains_key(&e) {
                continue;
            }
            if self.entries.len() >= self.capacity {
                self.evict_lru();
            }
            self.evicted.retain(|&x| x != e);
            self.entries.insert(
                e,
                Entry {
                    refs: 1,
                    state: State::Pending,
                    idle_since: None,
                },
            );
            self.uncovered += 1;
            ready = false;
        }
        if ready {
            Begin::Hot
        } else {
            Begin::NeedsCommit
        }
    }

    fn evict_lru(&mut self) {
        if let Some((_, e)) = self.idle.pop_first() {
            if let Some(entry) = self.entries.remove(&e) {
                if entry.state == State::Pending {
                    self.uncovered -= 1;
                }
            }
            self.evicted.push(e);
        }
    }

    /// Drops the references [`ActivityLog::begin`] took (when the write completed). Extents
    /// without a reference are ignored.
    pub fn end(&mut self, extents: RangeInclusive<u32>) {
        let n = Self::range_len(&extents);
        if n == 0 {
            return;
        }
        let targets: Vec<u32> = if n <= self.entries.len() as u64 {
            extents.collect()
        } else {
            let mut v: Vec<u32> = self
                .entries
                .keys()
                .copied()
                .filter(|e| extents.contains(e))
                .collect();
            v.sort_unstable();
            v
        };
        for e in targets {
            let Some(entry) = self.entries.get_mut(&e) else {
                continue;
            };
            if entry.refs == 0 {
                continue;
            }
            entry.refs -= 1;
            if entry.refs == 0 {
                self.clock += 1;
                entry.idle_since = Some(self.clock);
                self.idle.insert(self.clock, e);
            }
        }
    }

    /// Whether a transaction should be written: some extent waits for one, or extents were
    /// dropped since the last one.
    pub fn has_pending(&self) -> bool {
        self.uncovered > 0 || !self.evicted.is_empty()
    }

    /// Whether every extent of `extents` is in a transaction on disk (a write waiting after
    /// [`Begin::NeedsCommit`] may start).
    pub fn is_committed(&self, extents: RangeInclusive<u32>) -> bool {
        if Self::range_len(&extents) > self.entries.len() as u64 {
            return false;
        }
        extents.into_iter().all(|e| {
            self.entries
                .get(&e)
                .is_some_and(|entry| entry.state == State::Committed)
        })
    }

    /// Snapshots the set as the next transaction: `(tr_number, 4096-byte block, extents
    /// dropped since the previous transaction)`. Write the bitmap pages of the dropped extents
    /// first, then the block at ring slot `tr_number % AL_SLOTS`, then call
    /// [`ActivityLog::commit_done`].
    pub fn prepare_commit(&mut self) -> (u64, Vec<u8>, Vec<u32>) {
        let tr = self.next_tr;
        self.next_tr += 1;
        let mut snapshot: Vec<u32> = self.entries.keys().copied().collect();
        snapshot.sort_unstable();
        let mut covered = Vec::new();
        for e in &snapshot {
            if let Some(entry) = self.entries.get_mut(e) {
                match entry.state {
                    State::Pending => {
                        entry.state = State::InFlight(tr);
                        covered.push(*e);
                    }
                    State::InFlight(_) => covered.push(*e),
                    State::Committed => {}
                }
            }
        }
        self.uncovered = 0;
        if !covered.is_empty() {
            self.in_flight.push_back((tr, covered));
        }
        let mut evicted = std::mem::take(&mut self.evicted);
        evicted.sort_unstable();
        evicted.dedup();
        (tr, encode_transaction(tr, &snapshot), evicted)
    }

    /// Transaction `tr_number` is on disk: the extents it holds are committed. Unknown or
    /// stale numbers are ignored.
    pub fn commit_done(&mut self, tr_number: u64) {
        while self.in_flight.front().is_some_and(|(t, _)| *t <= tr_number) {
            let Some((_, extents)) = self.in_flight.pop_front() else {
                break;
            };
            for e in extents {
                if let Some(entry) = self.entries.get_mut(&e) {
                    if matches!(entry.state, State::InFlight(t) if t <= tr_number) {
                        entry.state = State::Committed;
                    }
                }
            }
        }
    }

    /// The newest valid transaction in the ring (`slots[i]` = the block at ring slot `i`):
    /// `(tr_number, extents)`. Torn or invalid blocks, and valid blocks in the wrong slot, are
    /// skipped; with none valid the result is `(0, [])`. Needs exactly [`AL_SLOTS`] blocks.
    pub fn recover(slots: &[Vec<u8>]) -> Result<(u64, Vec<u32>), MetaError> {
        if slots.len() != AL_SLOTS as usize {
            return Err(MetaError::WrongSlotCount {
                found: slots.len(),
                expected: AL_SLOTS as usize,
            });
        }
        let mut best: Option<(u64, Vec<u32>)> = None;
        for (i, block) in slots.iter().enumerate() {
            let Ok((tr, mut extents)) = parse_transaction(block) else {
                continue;
            };
            if tr % AL_SLOTS != i as u64 || best.as_ref().is_some_and(|(b, _)| *b >= tr) {
                continue;
            }
            extents.sort_unstable();
            extents.dedup();
            best = Some((tr, extents));
        }
        Ok(best.unwrap_or((0, Vec::new())))
    }

    /// The extents in the set, ascending.
    pub fn active_extents(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.entries.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Empties the set (no write may be in flight); the dropped extents are reported by the
    /// next [`ActivityLog::prepare_commit`], whose transaction records the empty set.
    pub fn clear(&mut self) {
        let mut dropped: Vec<u32> = self.entries.keys().copied().collect();
        self.evicted.append(&mut dropped);
        self.entries.clear();
        self.idle.clear();
        self.in_flight.clear();
        self.uncovered = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(blocks: &[(u64, Vec<u32>)]) -> Vec<Vec<u8>> {
        let mut slots = vec![vec![0u8; 4096]; AL_SLOTS as usize];
        for (tr, extents) in blocks {
            slots[(tr % AL_SLOTS) as usize] = encode_transaction(*tr, extents);
        }
        slots
    }

    #[test]
    fn extents_of_ranges() {
        const M: u64 = 1 << 20;
        assert_eq!(ActivityLog::extents_of(0, 4096), 0..=0);
        assert_eq!(ActivityLog::extents_of(4 * M - 512, 1024), 0..=1);
        assert_eq!(ActivityLog::extents_of(8 * M, 4 * M), 2..=2);
        assert!(ActivityLog::extents_of(8 * M, 0).is_empty());
        assert_eq!(
            ActivityLog::extents_of(u64::MAX - 10, 100),
            u32::MAX..=u32::MAX
        );
        assert_eq!(extent_bits(2), (2048, 3072));
        assert_eq!(MAX_CAPACITY, 1018);
    }

    #[test]
    fn begin_commit_end() {
        let mut al = ActivityLog::new(4);
        assert!(!al.has_pending());
        assert_eq!(al.begin(0..=1), Begin::NeedsCommit);
        assert!(al.has_pending());
        assert!(!al.is_committed(0..=1));
        // Another write to a pending extent also waits.
        assert_eq!(al.begin(1..=1), Begin::NeedsCommit);
        let (tr, block, evicted) = al.prepare_commit();
        assert_eq!(tr, 1);
        assert!(evicted.is_empty());
        assert!(!al.has_pending());
        assert_eq!(parse_transaction(&block), Ok((1, vec![0, 1])));
        // Still not on disk: a third write waits too.
        assert_eq!(al.begin(0..=0), Begin::NeedsCommit);
        al.commit_done(tr);
        assert!(al.is_committed(0..=1));
        assert_eq!(al.begin(0..=1), Begin::Hot);
        assert_eq!(al.active_extents(), vec![0, 1]);
        // Refcounts: 0 has 3 holders, 1 has 3.
        al.end(0..=1);
        al.end(0..=1);
        al.end(1..=1);
        al.end(0..=0);
        al.end(0..=0); // extra ends are ignored
        assert_eq!(al.begin(ActivityLog::extents_of(0, 0)), Begin::Hot);
        // Stale or unknown commit numbers are ignored.
        al.commit_done(0);
        al.commit_done(99);
        assert!(al.is_committed(0..=1));
    }

    #[test]
    fn eviction_is_lru_and_reported() {
        let mut al = ActivityLog::new(3);
        for e in [10, 11, 12] {
            assert_eq!(al.begin(e..=e), Begin::NeedsCommit);
        }
        let (tr, _, _) = al.prepare_commit();
        al.commit_done(tr);
        // All busy: a fourth extent does not fit, nothing changes.
        assert_eq!(al.begin(13..=13), Begin::Full);
        assert_eq!(al.active_extents(), vec![10, 11, 12]);
        assert!(!al.has_pending());
        al.end(11..=11);
        al.end(10..=10);
        // 11 became idle first: it is evicted first.
        assert_eq!(al.begin(13..=13), Begin::NeedsCommit);
        assert_eq!(al.active_extents(), vec![10, 12, 13]);
        // A range needing two new extents with only one evictable: Full, nothing changes.
        assert_eq!(al.begin(20..=21), Begin::Full);
        assert_eq!(al.active_extents(), vec![10, 12, 13]);
        // An idle extent inside the range is reused, not evicted, even when it is the LRU one.
        assert_eq!(al.begin(9..=10), Begin::Full);
        al.end(12..=12);
        assert_eq!(al.begin(9..=10), Begin::NeedsCommit);
        assert_eq!(al.active_extents(), vec![9, 10, 13]);
        let (tr, block, evicted) = al.prepare_commit();
        assert_eq!(evicted, vec![11, 12]);
        assert_eq!(parse_transaction(&block).unwrap().1, al.active_extents());
        al.commit_done(tr);
        // Longer than the capacity: always Full.
        assert_eq!(al.begin(0..=3), Begin::Full);
    }

    #[test]
    fn evicted_then_readded_before_commit() {
        let mut al = ActivityLog::new(1);
        assert_eq!(al.begin(5..=5), Begin::NeedsCommit);
        let (tr, _, _) = al.prepare_commit();
        al.commit_done(tr);
        al.end(5..=5);
        assert_eq!(al.begin(6..=6), Begin::NeedsCommit); // evicts 5
        al.end(6..=6);
        assert_eq!(al.begin(5..=5), Begin::NeedsCommit); // evicts 6, 5 is back
        let (_, block, evicted) = al.prepare_commit();
        // 5 is in the new snapshot, so only 6 (never committed) is reported dropped.
        assert_eq!(evicted, vec![6]);
        assert_eq!(parse_transaction(&block).unwrap().1, vec![5]);
    }

    #[test]
    fn overlapping_commits() {
        let mut al = ActivityLog::new(8);
        al.begin(1..=1);
        let (t1, _, _) = al.prepare_commit();
        al.begin(2..=2);
        assert!(al.has_pending());
        let (t2, b2, _) = al.prepare_commit();
        assert_eq!(parse_transaction(&b2).unwrap().1, vec![1, 2]);
        // The later snapshot lands first: it covers both.
        al.commit_done(t2);
        assert!(al.is_committed(1..=2));
        al.commit_done(t1);
        assert!(al.is_committed(1..=2));
        // Added while a commit is in flight: needs the next one.
        al.begin(3..=3);
        let (t3, _, _) = al.prepare_commit();
        al.begin(4..=4);
        al.commit_done(t3);
        assert!(al.is_committed(3..=3));
        assert!(!al.is_committed(4..=4));
        assert!(al.has_pending());
    }

    #[test]
    fn clear_and_numbering() {
        let mut al = ActivityLog::new(8);
        al.set_tr_number(41);
        assert_eq!(al.next_tr(), 42);
        al.begin(1..=2);
        let (tr, _, _) = al.prepare_commit();
        assert_eq!(tr, 42);
        al.commit_done(tr);
        al.end(1..=2);
        al.clear();
        assert!(al.is_empty());
        assert!(al.has_pending());
        let (tr, block, evicted) = al.prepare_commit();
        assert_eq!(tr, 43);
        assert_eq!(evicted, vec![1, 2]);
        assert_eq!(parse_transaction(&block), Ok((43, vec![])));
        assert!(!al.has_pending());
    }

    #[test]
    fn recovery() {
        assert_eq!(ActivityLog::recover(&ring(&[])), Ok((0, vec![])));
        assert_eq!(
            ActivityLog::recover(&[]),
            Err(MetaError::WrongSlotCount {
                found: 0,
                expected: 8
            })
        );
        // The ring wrapped: 9..=16 present, 16 newest.
        let blocks: Vec<(u64, Vec<u32>)> = (9..=16).map(|t| (t, vec![t as u32, 100])).collect();
        let slots = ring(&blocks);
        assert_eq!(ActivityLog::recover(&slots), Ok((16, vec![16, 100])));
        // The newest block is torn: fall back to the previous one.
        let mut torn = slots.clone();
        torn[0][2000] ^= 0x40;
        assert_eq!(ActivityLog::recover(&torn), Ok((15, vec![15, 100])));
        // Transaction 24 half-written over 16 (same slot; new head, old tail): back to 15.
        let mut half = slots.clone();
        let many: Vec<u32> = (0..300).collect();
        let newer = encode_transaction(24, &many);
        half[0][..512].copy_from_slice(&newer[..512]);
        assert_eq!(ActivityLog::recover(&half), Ok((15, vec![15, 100])));
        // A valid block in the wrong slot is ignored.
        let mut wrong = slots.clone();
        wrong[3] = encode_transaction(100, &[7]);
        assert_eq!(ActivityLog::recover(&wrong), Ok((16, vec![16, 100])));
        // Short blocks are invalid, not errors.
        let mut short = slots;
        short[0].truncate(100);
        assert_eq!(ActivityLog::recover(&short), Ok((15, vec![15, 100])));

        // End to end: a log's own blocks recover to its active set.
        let mut al = ActivityLog::new(16);
        let mut slots = ring(&[]);
        for e in 0..40u32 {
            al.begin(e..=e);
            let (tr, block, _) = al.prepare_commit();
            slots[(tr % AL_SLOTS) as usize] = block;
            al.commit_done(tr);
            al.end(e..=e);
        }
        assert_eq!(ActivityLog::recover(&slots), Ok((40, al.active_extents())));
        assert_eq!(al.active_extents(), (24..40).collect::<Vec<_>>());
    }

    #[test]
    fn transaction_refusals_and_no_panic() {
        let good = encode_transaction(7, &[3, 1, 2]);
        assert_eq!(parse_transaction(&good), Ok((7, vec![1, 2, 3])));
        assert!(matches!(
            parse_transaction(&good[..4095]),
            Err(MetaError::TooShort { .. })
        ));
        assert!(matches!(
            parse_transaction(&[0; 4096]),
            Err(MetaError::BadMagic { found: 0, .. })
        ));
        let mut b = good.clone();
        b[4] = 9;
        assert!(matches!(
            parse_transaction(&b),
            Err(MetaError::UnsupportedVersion { found: 9, .. })
        ));
        let mut b = good.clone();
        b[100] = 1;
        assert!(matches!(
            parse_transaction(&b),
            Err(MetaError::BadCrc { .. })
        ));
        let mut b = good.clone();
        b[16..20].copy_from_slice(&2000u32.to_le_bytes());
        let crc = block_crc(&b, 20);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            parse_transaction(&b),
            Err(MetaError::BadAlCount {
                count: 2000,
                max: 1018
            })
        );
        let full: Vec<u32> = (0..2000).collect();
        assert_eq!(
            parse_transaction(&encode_transaction(1, &full))
                .unwrap()
                .1
                .len(),
            MAX_CAPACITY
        );

        let mut state = 0xdead_beef_cafe_f00du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..100_000u32 {
            let mut b = good.clone();
            for _ in 0..(round % 4 + 1) {
                let r = next();
                b[((r >> 8) % 64) as usize] = (r >> 32) as u8;
            }
            if round % 2 == 0 {
                let crc = block_crc(&b, 20);
                b[20..24].copy_from_slice(&crc.to_le_bytes());
            }
            let len = if round % 8 == 0 {
                (next() % 4097) as usize
            } else {
                4096
            };
            if let Ok((_, extents)) = parse_transaction(&b[..len]) {
                assert!(extents.len() <= MAX_CAPACITY);
            }
        }
    }

    /// Random begin/end/commit sequences keep the invariants.
    #[test]
    fn random_operations() {
        let mut state = 0x1234_5678u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut al = ActivityLog::new(6);
        let mut writes: Vec<RangeInclusive<u32>> = Vec::new();
        let mut slots = ring(&[]);
        let mut last_done = 0;
        for _ in 0..20_000 {
            match next() % 5 {
                0 | 1 => {
                    let first = (next() % 12) as u32;
                    let r = first..=first + (next() % 2) as u32;
                    match al.begin(r.clone()) {
                        Begin::Full => {}
                        _ => writes.push(r),
                    }
                }
                2 => {
                    if !writes.is_empty() {
                        let r = writes.swap_remove((next() as usize) % writes.len());
                        al.end(r);
                    }
                }
                _ => {
                    if al.has_pending() {
                        let (tr, block, _) = al.prepare_commit();
                        slots[(tr % AL_SLOTS) as usize] = block;
                        al.commit_done(tr);
                        last_done = tr;
                    }
                }
            }
            assert!(al.len() <= al.capacity());
            // Every extent with a write in flight is in the set.
            for r in &writes {
                for e in r.clone() {
                    assert!(al.entries.contains_key(&e));
                }
            }
            let refs: u32 = al.entries.values().map(|e| e.refs).sum();
            let expect: usize = writes.iter().map(|r| r.clone().count()).sum();
            assert_eq!(refs as usize, expect);
            assert_eq!(
                al.idle.len(),
                al.entries.values().filter(|e| e.refs == 0).count()
            );
        }
        let recovered = ActivityLog::recover(&slots).unwrap();
        assert_eq!(recovered.0, last_done);
    }
}
