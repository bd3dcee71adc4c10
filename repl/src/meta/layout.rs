//! Where the internal metadata lives on the backing device (all of it at the end, as DRBD's
//! `meta-disk internal`).
//!
//! From the end of the device (its size rounded down to 4 KiB):
//!
//! ```text
//! sb_offset  = end - 4 KiB                          superblock
//! al_offset  = sb_offset - AL_SLOTS × 4 KiB          activity-log ring
//! bm_offset  = al_offset - MAX_PEERS × bm_bytes_per_peer   bitmaps, peer slot 0 first
//! data       = [0, data_bytes), data_bytes ≤ bm_offset
//! ```
//!
//! `data_bytes` is the largest multiple of `max(4096, block_size)` whose bitmaps (one bit per
//! 4 KiB, each peer's rounded up to whole 4 KiB pages) still fit, so the layout depends only on
//! the device size and block size: the same device always gives the same layout. Any slack
//! (less than one data unit plus a little bitmap rounding) lies between the data and bitmaps.

use super::superblock::Superblock;
use super::MetaError;

/// Size of every metadata block (superblock, AL transaction, bitmap page).
pub const META_BLOCK: u64 = 4096;
/// Peer slots (bitmaps and bitmap UUIDs) kept by each node.
pub const MAX_PEERS: usize = 4;
/// Data bytes covered by one bitmap bit.
pub const BM_BLOCK_BYTES: u64 = 4096;
/// Data bytes covered by one activity-log extent.
pub const AL_EXTENT_BYTES: u64 = 4 << 20;
/// Transaction blocks in the activity-log ring.
pub const AL_SLOTS: u64 = 8;
/// Smallest data area accepted.
pub const MIN_DATA_BYTES: u64 = 1 << 20;
/// Bits in one 4 KiB bitmap page.
pub const BM_PAGE_BITS: u64 = META_BLOCK * 8;
/// Data bytes covered by one bitmap page (128 MiB).
pub const BM_PAGE_DATA_BYTES: u64 = BM_PAGE_BITS * BM_BLOCK_BYTES;

/// Byte offsets of the metadata areas on one backing device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaLayout {
    /// Size of the backing device as given.
    pub device_bytes: u64,
    /// Replicated data, `[0, data_bytes)`: a multiple of 4096 and of the block size.
    pub data_bytes: u64,
    /// Bitmap bits per peer: `data_bytes / 4096`.
    pub bits: u64,
    /// Start of peer slot 0's bitmap.
    pub bm_offset: u64,
    /// Bytes of one peer's bitmap, a multiple of 4096 (whole pages).
    pub bm_bytes_per_peer: u64,
    /// Start of the activity-log ring.
    pub al_offset: u64,
    /// The superblock: the last 4 KiB block.
    pub sb_offset: u64,
}

/// Bitmap bytes for one peer when the data area is `data_bytes`.
fn bm_bytes_for(data_bytes: u64) -> u64 {
    data_bytes
        .div_ceil(BM_BLOCK_BYTES)
        .div_ceil(8)
        .div_ceil(META_BLOCK)
        * META_BLOCK
}

impl MetaLayout {
    /// The layout for a device of `device_bytes` with `block_size`-byte blocks (a power of two,
    /// 512..=65536). Refuses devices leaving less than [`MIN_DATA_BYTES`] of data.
    pub fn for_device(device_bytes: u64, block_size: u32) -> Result<MetaLayout, MetaError> {
        if !block_size.is_power_of_two() || !(512..=65536).contains(&block_size) {
            return Err(MetaError::BadBlockSize(block_size));
        }
        let unit = META_BLOCK.max(u64::from(block_size));
        let end = device_bytes / META_BLOCK * META_BLOCK;
        let fixed = META_BLOCK * (1 + AL_SLOTS);
        // Bytes shared by the bitmaps and the data.
        let avail = end.saturating_sub(fixed);
        // With `pages` bitmap pages per peer, data is limited both by what the bits cover and
        // by the space the pages leave; the best page count is where the two limits cross.
        let per_page = BM_PAGE_DATA_BYTES + MAX_PEERS as u64 * META_BLOCK;
        let crossing = avail / per_page;
        let mut data_bytes = 0;
        for pages in [crossing, crossing + 1] {
            let by_bits = pages.saturating_mul(BM_PAGE_DATA_BYTES);
            let by_space =
                avail.saturating_sub(pages.saturating_mul(MAX_PEERS as u64 * META_BLOCK));
            data_bytes = data_bytes.max(by_bits.min(by_space) / unit * unit);
        }
        if end < fixed || data_bytes < MIN_DATA_BYTES {
            return Err(MetaError::DeviceTooSmall {
                device_bytes,
                data_bytes,
                min_data: MIN_DATA_BYTES,
            });
        }
        let bm_bytes_per_peer = bm_bytes_for(data_bytes);
        let sb_offset = end - META_BLOCK;
        let al_offset = sb_offset - AL_SLOTS * META_BLOCK;
        let bm_offset = al_offset - MAX_PEERS as u64 * bm_bytes_per_peer;
        Ok(MetaLayout {
            device_bytes,
            data_bytes,
            bits: data_bytes / BM_BLOCK_BYTES,
            bm_offset,
            bm_bytes_per_peer,
            al_offset,
            sb_offset,
        })
    }

    /// Pages (4 KiB blocks) in one peer's bitmap: `ceil(bits / 32768)`.
    pub fn bitmap_pages(&self) -> u64 {
        self.bits.div_ceil(BM_PAGE_BITS)
    }

    /// Device offset of `page` of `peer_slot`'s bitmap. Out-of-range arguments are clamped to
    /// the last slot / last page (never panics); see [`MetaLayout::checked_bitmap_page_offset`].
    pub fn bitmap_page_offset(&self, peer_slot: usize, page: u64) -> u64 {
        let slot = peer_slot.min(MAX_PEERS - 1) as u64;
        let page = page.min(self.bitmap_pages().saturating_sub(1));
        self.bm_offset + slot * self.bm_bytes_per_peer + page * META_BLOCK
    }

    /// [`MetaLayout::bitmap_page_offset`], or `None` when the slot or page does not exist.
    pub fn checked_bitmap_page_offset(&self, peer_slot: usize, page: u64) -> Option<u64> {
        (peer_slot < MAX_PEERS && page < self.bitmap_pages())
            .then(|| self.bitmap_page_offset(peer_slot, page))
    }

    /// Device offset of activity-log ring slot `slot % AL_SLOTS` (so a transaction number may
    /// be passed directly).
    pub fn al_slot_offset(&self, slot: u64) -> u64 {
        self.al_offset + (slot % AL_SLOTS) * META_BLOCK
    }

    /// Checks that a superblock read from this device describes this layout's data size.
    pub fn check_superblock(&self, sb: &Superblock) -> Result<(), MetaError> {
        if sb.data_bytes != self.data_bytes {
            return Err(MetaError::DataSizeMismatch {
                stored: sb.data_bytes,
                layout: self.data_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_invariants(l: &MetaLayout, block_size: u32) {
        let unit = META_BLOCK.max(u64::from(block_size));
        let end = l.device_bytes / META_BLOCK * META_BLOCK;
        assert_eq!(l.sb_offset, end - META_BLOCK);
        assert_eq!(l.al_offset, l.sb_offset - AL_SLOTS * META_BLOCK);
        assert_eq!(
            l.bm_offset + MAX_PEERS as u64 * l.bm_bytes_per_peer,
            l.al_offset
        );
        assert_eq!(l.data_bytes % unit, 0);
        assert!(l.data_bytes >= MIN_DATA_BYTES);
        assert!(l.data_bytes <= l.bm_offset, "{l:?}");
        assert_eq!(l.bits, l.data_bytes / BM_BLOCK_BYTES);
        assert_eq!(l.bm_bytes_per_peer % META_BLOCK, 0);
        assert!(l.bm_bytes_per_peer * 8 >= l.bits);
        assert_eq!(l.bitmap_pages() * META_BLOCK, l.bm_bytes_per_peer);
        // Maximal: one more data unit would not fit with its bitmaps.
        let more = l.data_bytes + unit;
        assert!(
            more + MAX_PEERS as u64 * bm_bytes_for(more) > l.al_offset,
            "{l:?}"
        );
    }

    #[test]
    fn small_and_typical_devices() {
        let l = MetaLayout::for_device(1 << 30, 512).unwrap();
        check_invariants(&l, 512);
        assert_eq!(l.sb_offset, (1 << 30) - 4096);
        assert_eq!(l.al_offset, (1 << 30) - 9 * 4096);
        // 1 GiB needs 8 pages per peer: 32 pages of bitmaps.
        assert_eq!(l.bm_bytes_per_peer, 8 * 4096);
        assert_eq!(l.data_bytes, (1 << 30) - 9 * 4096 - 32 * 4096);
        assert_eq!(l.bitmap_page_offset(0, 0), l.bm_offset);
        assert_eq!(
            l.bitmap_page_offset(1, 2),
            l.bm_offset + 8 * 4096 + 2 * 4096
        );
        assert_eq!(l.bitmap_page_offset(9, 99), l.bitmap_page_offset(3, 7));
        assert_eq!(
            l.checked_bitmap_page_offset(3, 7),
            Some(l.bitmap_page_offset(3, 7))
        );
        assert_eq!(l.checked_bitmap_page_offset(4, 0), None);
        assert_eq!(l.checked_bitmap_page_offset(0, 8), None);
        assert_eq!(l.al_slot_offset(0), l.al_offset);
        assert_eq!(l.al_slot_offset(9), l.al_offset + 4096);

        // Unaligned size: the tail is ignored.
        let l = MetaLayout::for_device((64 << 20) + 1000, 4096).unwrap();
        check_invariants(&l, 4096);
        assert_eq!(l.sb_offset, (64 << 20) - 4096);

        // Large block size.
        let l = MetaLayout::for_device(3 << 30, 65536).unwrap();
        check_invariants(&l, 65536);
        assert_eq!(l.data_bytes % 65536, 0);
    }

    #[test]
    fn refusals() {
        for bs in [0, 1, 256, 513, 3000, 131072] {
            assert_eq!(
                MetaLayout::for_device(1 << 30, bs),
                Err(MetaError::BadBlockSize(bs))
            );
        }
        for dev in [0, 4095, 4096, 9 * 4096, 1 << 20, (1 << 20) + 9 * 4096] {
            assert!(
                matches!(
                    MetaLayout::for_device(dev, 512),
                    Err(MetaError::DeviceTooSmall { .. })
                ),
                "{dev}"
            );
        }
        // The smallest accepted device: 1 MiB of data, one page per peer, AL and superblock.
        let min = (1 << 20) + 4 * 4096 + 9 * 4096;
        check_invariants(&MetaLayout::for_device(min, 4096).unwrap(), 4096);
        assert!(MetaLayout::for_device(min - 4096, 4096).is_err());
    }

    #[test]
    fn sweep_sizes() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Around the page boundaries (every 128 MiB of data) and random sizes up to 64 TiB.
        for k in 1..40u64 {
            for delta in [-20i64, -5, -1, 0, 1, 5, 20] {
                let dev = (k * (BM_PAGE_DATA_BYTES + 4 * 4096) + 9 * 4096)
                    .saturating_add_signed(delta * 4096);
                let bs = 512 << (next() % 8);
                let l = MetaLayout::for_device(dev, bs).unwrap();
                check_invariants(&l, bs);
            }
        }
        for _ in 0..20_000 {
            let dev = next() % (64u64 << 40);
            let bs = 512 << (next() % 8);
            match MetaLayout::for_device(dev, bs) {
                Ok(l) => check_invariants(&l, bs),
                Err(MetaError::DeviceTooSmall { .. }) => assert!(dev < 2 << 20),
                Err(e) => panic!("{e}"),
            }
        }
        // Never panics, even at the extremes.
        for dev in [u64::MAX, u64::MAX - 4095, u64::MAX / 2] {
            let l = MetaLayout::for_device(dev, 4096).unwrap();
            assert!(l.data_bytes <= l.bm_offset);
        }
    }

    #[test]
    fn superblock_size_check() {
        let l = MetaLayout::for_device(1 << 30, 4096).unwrap();
        let mut sb = Superblock::new_created(0, 77, l.data_bytes, 64);
        assert_eq!(l.check_superblock(&sb), Ok(()));
        sb.data_bytes += 4096;
        assert_eq!(
            l.check_superblock(&sb),
            Err(MetaError::DataSizeMismatch {
                stored: l.data_bytes + 4096,
                layout: l.data_bytes
            })
        );
    }
}
