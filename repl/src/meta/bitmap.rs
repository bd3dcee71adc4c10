//! One peer's dirty bitmap, in memory: one bit per 4 KiB of data, set = "this block may differ
//! on that peer" (DRBD's out-of-sync bitmap).
//!
//! The bits live in `u64` words, bit `i` being bit `i % 64` of word `i / 64`. On disk each
//! peer's bitmap is a run of 4 KiB pages of 512 little-endian words ([`PAGE_BITS`] bits), with
//! no header: the superblock's bitmap UUID says what the bits are relative to. Every change
//! marks its page dirty so the runtime writes back only the changed pages
//! ([`Bitmap::dirty_pages`], [`Bitmap::page_bytes`], [`Bitmap::mark_clean`]).
//!
//! The set-bit count is kept incrementally, and bits past [`Bitmap::bits`] are always zero.
//! Out-of-range arguments are clamped; nothing here panics.

use super::layout::{BM_BLOCK_BYTES, META_BLOCK};
use super::MetaError;

/// Bits in one 4 KiB page.
pub const PAGE_BITS: u64 = META_BLOCK * 8;
/// Words in one page.
const PAGE_WORDS: usize = (PAGE_BITS / 64) as usize;
const PAGE_BYTES: usize = META_BLOCK as usize;

/// The bit range `[first, end)` covering every 4 KiB block touched by the byte range (a
/// partial block counts). Empty (`first == end`) when `len_bytes` is 0.
pub fn blocks_to_bits(offset_bytes: u64, len_bytes: u64) -> (u64, u64) {
    let first = offset_bytes / BM_BLOCK_BYTES;
    if len_bytes == 0 {
        return (first, first);
    }
    let end = offset_bytes
        .saturating_add(len_bytes)
        .div_ceil(BM_BLOCK_BYTES);
    (first, end.max(first))
}

/// The bit range `[first, end)` of the 4 KiB blocks lying entirely inside the byte range (the
/// ones a completed write of that range makes in sync). Empty when none does.
pub fn blocks_to_full_bits(offset_bytes: u64, len_bytes: u64) -> (u64, u64) {
    let first = offset_bytes.div_ceil(BM_BLOCK_BYTES);
    let end = offset_bytes.saturating_add(len_bytes) / BM_BLOCK_BYTES;
    (first, end.max(first))
}

/// The byte range `(offset, len)` covered by bits `[first_bit, end_bit)`.
pub fn bits_to_bytes(first_bit: u64, end_bit: u64) -> (u64, u64) {
    let offset = first_bit.saturating_mul(BM_BLOCK_BYTES);
    let len = end_bit
        .saturating_sub(first_bit)
        .saturating_mul(BM_BLOCK_BYTES);
    (offset, len)
}

/// A dirty bitmap for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    bits: u64,
    words: Vec<u64>,
    count: u64,
    /// One bit per page: changed since the page was last written (or loaded).
    dirty: Vec<u64>,
}

impl Bitmap {
    /// An all-clear bitmap of `bits` bits, every page clean.
    pub fn new(bits: u64) -> Bitmap {
        let words = bits.div_ceil(64) as usize;
        let pages = bits.div_ceil(PAGE_BITS) as usize;
        Bitmap {
            bits,
            words: vec![0; words],
            count: 0,
            dirty: vec![0; pages.div_ceil(64)],
        }
    }

    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// Set bits (O(1)).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Pages of the on-disk form: `ceil(bits / PAGE_BITS)`.
    pub fn pages(&self) -> u64 {
        self.bits.div_ceil(PAGE_BITS)
    }

    /// The words; bits past [`Bitmap::bits`] in the last word are zero.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Mask of the bits of word `w` that lie inside the bitmap.
    fn valid_mask(&self, w: usize) -> u64 {
        let start = w as u64 * 64;
        match self.bits.saturating_sub(start) {
            n if n >= 64 => u64::MAX,
            n => (1u64 << n) - 1,
        }
    }

    fn mark_word_dirty(&mut self, w: usize) {
        let page = w / PAGE_WORDS;
        if let Some(d) = self.dirty.get_mut(page / 64) {
            *d |= 1 << (page % 64);
        }
    }

    /// Stores `new` into word `w` and keeps the count and dirty pages; returns the bits changed.
    fn store(&mut self, w: usize, new: u64) -> u64 {
        let old = self.words[w];
        if old == new {
            return 0;
        }
        self.words[w] = new;
        self.count = self.count - u64::from(old.count_ones()) + u64::from(new.count_ones());
        self.mark_word_dirty(w);
        u64::from((old ^ new).count_ones())
    }

    fn apply_range(&mut self, first: u64, end: u64, set: bool) -> u64 {
        let end = end.min(self.bits);
        if first >= end {
            return 0;
        }
        let (first_word, last_word) = ((first / 64) as usize, ((end - 1) / 64) as usize);
        let mut changed = 0;
        for w in first_word..=last_word {
            let lo = if w == first_word { first % 64 } else { 0 };
            let hi = if w == last_word { (end - 1) % 64 } else { 63 };
            let mask = (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
            let old = self.words[w];
            changed += self.store(w, if set { old | mask } else { old & !mask });
        }
        changed
    }

    /// Sets bits `[first_bit, end_bit)` (clamped); returns how many were newly set.
    pub fn set_range(&mut self, first_bit: u64, end_bit: u64) -> u64 {
        self.apply_range(first_bit, end_bit, true)
    }

    /// Clears bits `[first_bit, end_bit)` (clamped); returns how many were newly cleared.
    pub fn clear_range(&mut self, first_bit: u64, end_bit: u64) -> u64 {
        self.apply_range(first_bit, end_bit, false)
    }

    /// Whether `bit` is set (false past the end).
    pub fn test(&self, bit: u64) -> bool {
        bit < self.bits && self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    /// The first set bit at or after `from_bit`, skipping clear words.
    pub fn next_set(&self, from_bit: u64) -> Option<u64> {
        if from_bit >= self.bits {
            return None;
        }
        let mut w = (from_bit / 64) as usize;
        let mut word = self.words[w] & (u64::MAX << (from_bit % 64));
        loop {
            if word != 0 {
                return Some(w as u64 * 64 + u64::from(word.trailing_zeros()));
            }
            w += 1;
            word = *self.words.get(w)?;
        }
    }

    /// The first clear bit at or after `from_bit`, or [`Bitmap::bits`] when there is none
    /// (so `next_set` .. `next_clear` is a run of set bits).
    pub fn next_clear(&self, from_bit: u64) -> u64 {
        if from_bit >= self.bits {
            return self.bits;
        }
        let mut w = (from_bit / 64) as usize;
        let mut word = !self.words[w] & (u64::MAX << (from_bit % 64));
        loop {
            if word != 0 {
                return (w as u64 * 64 + u64::from(word.trailing_zeros())).min(self.bits);
            }
            w += 1;
            match self.words.get(w) {
                Some(x) => word = !x,
                None => return self.bits,
            }
        }
    }

    /// Sets every bit; returns how many were newly set.
    pub fn set_all(&mut self) -> u64 {
        self.set_range(0, self.bits)
    }

    /// Clears every bit; returns how many were newly cleared.
    pub fn clear_all(&mut self) -> u64 {
        self.clear_range(0, self.bits)
    }

    /// ORs `words` into the bitmap starting at word `first_word` (merging a chunk received from
    /// a peer). Words or bits past the end are ignored. Returns how many bits were newly set.
    pub fn or_words(&mut self, first_word: u64, words: &[u64]) -> u64 {
        let Ok(start) = usize::try_from(first_word) else {
            return 0;
        };
        let mut newly = 0;
        for (i, src) in words.iter().enumerate() {
            let Some(w) = start.checked_add(i).filter(|&w| w < self.words.len()) else {
                break;
            };
            let new = self.words[w] | (src & self.valid_mask(w));
            newly += self.store(w, new);
        }
        newly
    }

    /// The on-disk image of `page`: 4096 bytes, 512 little-endian words (zero past the end,
    /// and all zero for a page that does not exist).
    pub fn page_bytes(&self, page: u64) -> Vec<u8> {
        let mut out = vec![0u8; PAGE_BYTES];
        if let Some(words) = self.page_words(page) {
            for (dst, w) in out.chunks_exact_mut(8).zip(&self.words[words]) {
                dst.copy_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// Index range of `page`'s words, `None` if the page does not exist.
    fn page_words(&self, page: u64) -> Option<std::ops::Range<usize>> {
        if page >= self.pages() {
            return None;
        }
        let start = page as usize * PAGE_WORDS;
        Some(start..(start + PAGE_WORDS).min(self.words.len()))
    }

    /// Replaces `page` with its on-disk image (the first 4096 bytes of `bytes`; bits past the
    /// end are ignored). The page is clean afterwards.
    pub fn load_page(&mut self, page: u64, bytes: &[u8]) -> Result<(), MetaError> {
        let Some(bytes) = bytes.get(..PAGE_BYTES) else {
            return Err(MetaError::TooShort {
                what: "bitmap page",
                len: bytes.len(),
                need: PAGE_BYTES,
            });
        };
        let Some(words) = self.page_words(page) else {
            return Err(MetaError::PageOutOfRange {
                page,
                pages: self.pages(),
            });
        };
        for (w, src) in words.zip(bytes.chunks_exact(8)) {
            let value = u64::from_le_bytes(src.try_into().unwrap_or_default());
            self.store(w, value & self.valid_mask(w));
        }
        self.mark_clean(page);
        Ok(())
    }

    /// Pages changed since they were last marked clean, ascending.
    pub fn dirty_pages(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, &d) in self.dirty.iter().enumerate() {
            let mut d = d;
            while d != 0 {
                out.push(i as u64 * 64 + u64::from(d.trailing_zeros()));
                d &= d - 1;
            }
        }
        out
    }

    /// Whether `page` changed since it was last marked clean.
    pub fn is_page_dirty(&self, page: u64) -> bool {
        let Ok(page) = usize::try_from(page) else {
            return false;
        };
        self.dirty
            .get(page / 64)
            .is_some_and(|d| d & (1 << (page % 64)) != 0)
    }

    /// Records that `page` was written (ignored for pages that do not exist).
    pub fn mark_clean(&mut self, page: u64) {
        let Ok(page) = usize::try_from(page) else {
            return;
        };
        if let Some(d) = self.dirty.get_mut(page / 64) {
            *d &= !(1 << (page % 64));
        }
    }

    /// Marks every page dirty (e.g. to write the whole bitmap when metadata is created).
    pub fn mark_all_dirty(&mut self) {
        let pages = self.pages();
        for (i, d) in self.dirty.iter_mut().enumerate() {
            let remaining = pages - i as u64 * 64;
            *d = if remaining >= 64 {
                u64::MAX
            } else {
                (1 << remaining) - 1
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    #[test]
    fn byte_ranges_to_bits() {
        assert_eq!(blocks_to_bits(0, 4096), (0, 1));
        assert_eq!(blocks_to_bits(512, 512), (0, 1));
        assert_eq!(blocks_to_bits(4000, 200), (0, 2));
        assert_eq!(blocks_to_bits(8192, 8192), (2, 4));
        assert_eq!(blocks_to_bits(8192, 0), (2, 2));
        assert_eq!(
            blocks_to_bits(u64::MAX, 10),
            (u64::MAX / 4096, u64::MAX.div_ceil(4096))
        );
        assert_eq!(blocks_to_full_bits(0, 4096), (0, 1));
        assert_eq!(blocks_to_full_bits(512, 512), (1, 1));
        assert_eq!(blocks_to_full_bits(512, 8192), (1, 2));
        assert_eq!(blocks_to_full_bits(4000, 200), (1, 1));
        assert_eq!(blocks_to_full_bits(8192, 12288), (2, 5));
        assert_eq!(
            blocks_to_full_bits(u64::MAX, u64::MAX).0,
            u64::MAX.div_ceil(4096)
        );
        assert_eq!(bits_to_bytes(2, 5), (8192, 12288));
        assert_eq!(bits_to_bytes(5, 2), (20480, 0));
    }

    #[test]
    fn basics() {
        let mut bm = Bitmap::new(100);
        assert_eq!((bm.bits(), bm.count(), bm.pages()), (100, 0, 1));
        assert_eq!(bm.set_range(10, 70), 60);
        assert_eq!(bm.set_range(0, 20), 10);
        assert_eq!(bm.count(), 70);
        assert_eq!(bm.set_range(90, 1000), 10);
        assert_eq!(bm.count(), 80);
        assert_eq!(bm.words()[1] >> 36, 0, "no bits past the end");
        assert!(bm.test(99) && !bm.test(100) && !bm.test(u64::MAX));
        assert_eq!(bm.next_set(70), Some(90));
        assert_eq!(bm.next_clear(0), 70);
        assert_eq!(bm.next_clear(95), 100);
        assert_eq!(bm.next_set(100), None);
        assert_eq!(bm.clear_range(50, 95), 25);
        assert_eq!(bm.dirty_pages(), vec![0]);
        bm.mark_clean(0);
        assert!(bm.dirty_pages().is_empty());
        assert_eq!(bm.clear_range(60, 80), 0);
        assert!(bm.dirty_pages().is_empty(), "no change, no dirty page");
        assert_eq!(bm.set_all(), 100 - 55);
        assert_eq!(bm.count(), 100);
        assert_eq!(bm.clear_all(), 100);
        assert_eq!(bm.set_range(5, 5), 0);
        assert_eq!(bm.set_range(7, 3), 0);
        assert_eq!(bm.or_words(1, &[u64::MAX, u64::MAX]), 36);
        assert_eq!(bm.or_words(u64::MAX, &[1]), 0);
        assert_eq!(bm.count(), 36);

        let mut empty = Bitmap::new(0);
        assert_eq!(empty.set_all(), 0);
        assert_eq!(empty.next_set(0), None);
        assert_eq!(empty.pages(), 0);
        assert!(empty.load_page(0, &[0; 4096]).is_err());
        assert_eq!(empty.page_bytes(0), vec![0; 4096]);
    }

    #[test]
    fn pages_round_trip() {
        let bits = 2 * PAGE_BITS + 1000;
        let mut bm = Bitmap::new(bits);
        assert_eq!(bm.pages(), 3);
        bm.set_range(5, 6);
        bm.set_range(PAGE_BITS * 2 + 990, bits);
        assert_eq!(bm.dirty_pages(), vec![0, 2]);
        let mut copy = Bitmap::new(bits);
        for page in bm.dirty_pages() {
            let bytes = bm.page_bytes(page);
            assert_eq!(bytes.len(), 4096);
            copy.load_page(page, &bytes).unwrap();
            bm.mark_clean(page);
        }
        assert_eq!(copy.words(), bm.words());
        assert_eq!(copy.count(), 11);
        assert!(copy.dirty_pages().is_empty());
        // Loading replaces: a page of ones sets only the bits that exist.
        copy.load_page(2, &[0xff; 4096]).unwrap();
        assert_eq!(copy.count(), 1 + 1000);
        assert!(!copy.is_page_dirty(2));
        // Refusals.
        assert_eq!(
            copy.load_page(3, &[0; 4096]),
            Err(MetaError::PageOutOfRange { page: 3, pages: 3 })
        );
        assert!(matches!(
            copy.load_page(0, &[0; 100]),
            Err(MetaError::TooShort { len: 100, .. })
        ));
        copy.mark_all_dirty();
        assert_eq!(copy.dirty_pages(), vec![0, 1, 2]);
        copy.mark_clean(u64::MAX);
        assert!(!copy.is_page_dirty(u64::MAX));
        // Large page counts: the dirty set spans several words.
        let mut big = Bitmap::new(130 * PAGE_BITS);
        big.mark_all_dirty();
        assert_eq!(big.dirty_pages().len(), 130);
    }

    /// Random operations against a `Vec<bool>` model: contents, count and dirty pages agree.
    #[test]
    fn matches_naive_model() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for &bits in &[1u64, 63, 64, 65, 1000, 3 * PAGE_BITS + 77] {
            let mut bm = Bitmap::new(bits);
            let mut model = vec![false; bits as usize];
            let mut model_dirty = vec![false; bits.div_ceil(PAGE_BITS) as usize];
            let ops = 2000;
            for op in 0..ops {
                let span = if rng.below(if bits > 10_000 { 32 } else { 4 }) == 0 {
                    bits + 10
                } else {
                    300
                };
                let first = rng.below(bits + 5);
                let end = first + rng.below(span);
                match rng.below(12) {
                    0..=3 => {
                        let mut newly = 0;
                        for b in first..end.min(bits) {
                            if !model[b as usize] {
                                model[b as usize] = true;
                                model_dirty[(b / PAGE_BITS) as usize] = true;
                                newly += 1;
                            }
                        }
                        assert_eq!(bm.set_range(first, end), newly);
                    }
                    4..=6 => {
                        let mut cleared = 0;
                        for b in first..end.min(bits) {
                            if model[b as usize] {
                                model[b as usize] = false;
                                model_dirty[(b / PAGE_BITS) as usize] = true;
                                cleared += 1;
                            }
                        }
                        assert_eq!(bm.clear_range(first, end), cleared);
                    }
                    7 => {
                        let first_word = rng.below(bits.div_ceil(64) + 2);
                        let words: Vec<u64> = (0..rng.below(20))
                            .map(|_| rng.next() & rng.next() & rng.next())
                            .collect();
                        let mut newly = 0;
                        for (i, w) in words.iter().enumerate() {
                            for j in 0..64 {
                                let b = (first_word + i as u64) * 64 + j;
                                if b < bits && w & (1 << j) != 0 && !model[b as usize] {
                                    model[b as usize] = true;
                                    model_dirty[(b / PAGE_BITS) as usize] = true;
                                    newly += 1;
                                }
                            }
                        }
                        assert_eq!(bm.or_words(first_word, &words), newly);
                    }
                    8 => {
                        let from = rng.below(bits + 3);
                        let expect = (from..bits).find(|&b| model[b as usize]);
                        assert_eq!(bm.next_set(from), expect);
                        let expect = (from..bits).find(|&b| !model[b as usize]).unwrap_or(bits);
                        assert_eq!(bm.next_clear(from), expect.max(from.min(bits)));
                    }
                    9 => {
                        let page = rng.below(bm.pages());
                        bm.mark_clean(page);
                        model_dirty[page as usize] = false;
                    }
                    10 => {
                        // Reload a page from a random image.
                        let page = rng.below(bm.pages());
                        let image: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
                        bm.load_page(page, &image).unwrap();
                        for i in 0..PAGE_BITS {
                            let b = page * PAGE_BITS + i;
                            if b < bits {
                                model[b as usize] = image[(i / 8) as usize] & (1 << (i % 8)) != 0;
                            }
                        }
                        model_dirty[page as usize] = false;
                    }
                    _ => {
                        if rng.below(8) == 0 {
                            let before = model.iter().filter(|&&x| !x).count() as u64;
                            assert_eq!(bm.set_all(), before);
                        } else {
                            let before = model.iter().filter(|&&x| x).count() as u64;
                            assert_eq!(bm.clear_all(), before);
                        }
                        let v = bm.count() == bits;
                        for (p, d) in model_dirty.iter_mut().enumerate() {
                            let range =
                                p as u64 * PAGE_BITS..((p as u64 + 1) * PAGE_BITS).min(bits);
                            if range.clone().any(|b| model[b as usize] != v) {
                                *d = true;
                            }
                            for b in range {
                                model[b as usize] = v;
                            }
                        }
                    }
                }
                let b = rng.below(bits + 2);
                assert_eq!(bm.test(b), b < bits && model[b as usize]);
                if op % 97 == 0 || bits < 10_000 {
                    let count = model.iter().filter(|&&x| x).count() as u64;
                    assert_eq!(bm.count(), count, "bits {bits} op {op}");
                    for (i, &m) in model.iter().enumerate() {
                        assert_eq!(bm.test(i as u64), m, "bit {i}");
                    }
                    let dirty: Vec<u64> = (0..model_dirty.len() as u64)
                        .filter(|&p| model_dirty[p as usize])
                        .collect();
                    assert_eq!(bm.dirty_pages(), dirty);
                    // Bits past the end stay zero.
                    let last = bm.words().last().copied().unwrap_or(0);
                    if bits % 64 != 0 {
                        assert_eq!(last >> (bits % 64), 0);
                    }
                    let from_words: u64 =
                        bm.words().iter().map(|w| u64::from(w.count_ones())).sum();
                    assert_eq!(from_words, count);
                }
            }
        }
    }

    #[test]
    fn sparse_scan_is_fast() {
        // 1 TiB of data: 2^28 bits; a scan over a nearly empty map must skip words.
        let mut bm = Bitmap::new(1 << 28);
        bm.set_range(5, 6);
        bm.set_range((1 << 28) - 1, 1 << 28);
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(b) = bm.next_set(at) {
            found.push(b);
            at = b + 1;
        }
        assert_eq!(found, vec![5, (1 << 28) - 1]);
        assert_eq!(bm.dirty_pages(), vec![0, (1 << 28) / PAGE_BITS - 1]);
    }
}
