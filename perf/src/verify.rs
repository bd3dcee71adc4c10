//! The verify workload's block format and checker.
//!
//! Every block written carries a 32-byte header and a payload derived from it:
//!
//! | bytes  | field                                                          |
//! |--------|----------------------------------------------------------------|
//! | 0..8   | magic `OXPERFV1`                                               |
//! | 8..16  | LBA the block was written to                                   |
//! | 16..24 | generation: a per-job write counter                            |
//! | 24..28 | crc32c of the whole block with these four bytes left out       |
//! | 28..32 | zero                                                           |
//! | 32..   | pseudo-random bytes seeded by (LBA, generation)                |
//!
//! A read-back is checked for the header, then the checksum (corruption anywhere in the
//! block), then the LBA (misdirected I/O), then the generation (stale data: an older write
//! came back).

use std::fmt;

pub const MAGIC: [u8; 8] = *b"OXPERFV1";
pub const HEADER_LEN: usize = 32;

fn block_crc(block: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&block[..24]), &block[28..])
}

fn seed(lba: u64, generation: u64) -> u64 {
    (lba ^ generation.rotate_left(32) ^ 0x5851_f42d_4c95_7f2d) | 1
}

/// Fills `buf` (whole blocks of `block_size` bytes) for a write at `first_lba`.
pub fn fill(buf: &mut [u8], block_size: usize, first_lba: u64, generation: u64) {
    for (i, block) in buf.chunks_exact_mut(block_size).enumerate() {
        let lba = first_lba + i as u64;
        block[..8].copy_from_slice(&MAGIC);
        block[8..16].copy_from_slice(&lba.to_le_bytes());
        block[16..24].copy_from_slice(&generation.to_le_bytes());
        block[24..32].fill(0);
        let mut x = seed(lba, generation);
        for word in block[HEADER_LEN..].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
        let crc = block_crc(block);
        block[24..28].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Overwrites each block's header so a read that moves no data cannot pass the check.
pub fn poison(buf: &mut [u8], block_size: usize) {
    for block in buf.chunks_exact_mut(block_size) {
        block[..HEADER_LEN].fill(0);
    }
}

/// What a bad block looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// No oxperf header at all (never written, overwritten by something else, or a read
    /// that moved no data).
    NoHeader { lba: u64 },
    /// The checksum does not match the contents: the data was corrupted.
    Checksum {
        lba: u64,
        stored: u32,
        computed: u32,
    },
    /// The block carries another LBA's data.
    WrongLba { lba: u64, found: u64 },
    /// An older (or otherwise different) write of this LBA came back.
    Stale { lba: u64, expected: u64, found: u64 },
}

impl Mismatch {
    pub fn lba(&self) -> u64 {
        match *self {
            Mismatch::NoHeader { lba }
            | Mismatch::Checksum { lba, .. }
            | Mismatch::WrongLba { lba, .. }
            | Mismatch::Stale { lba, .. } => lba,
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Mismatch::NoHeader { lba } => {
                write!(f, "LBA {lba} (0x{lba:x}): no verify header in the data read back")
            }
            Mismatch::Checksum { lba, stored, computed } => write!(
                f,
                "LBA {lba} (0x{lba:x}): data corruption: crc32c 0x{computed:08x}, header says 0x{stored:08x}"
            ),
            Mismatch::WrongLba { lba, found } => write!(
                f,
                "LBA {lba} (0x{lba:x}): read back the block written for LBA {found} (0x{found:x})"
            ),
            Mismatch::Stale { lba, expected, found } if found < expected => write!(
                f,
                "LBA {lba} (0x{lba:x}): stale data: generation {found}, expected {expected}"
            ),
            Mismatch::Stale { lba, expected, found } => write!(
                f,
                "LBA {lba} (0x{lba:x}): unexpected generation {found}, expected {expected}"
            ),
        }
    }
}

/// Checks `buf` read back from `first_lba`, expecting `generation`. Reports the first bad block.
pub fn check(
    buf: &[u8],
    block_size: usize,
    first_lba: u64,
    generation: u64,
) -> Result<(), Mismatch> {
    for (i, block) in buf.chunks_exact(block_size).enumerate() {
        let lba = first_lba + i as u64;
        if block[..8] != MAGIC {
            return Err(Mismatch::NoHeader { lba });
        }
        let word = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&block[r]);
            u64::from_le_bytes(b)
        };
        let mut c = [0u8; 4];
        c.copy_from_slice(&block[24..28]);
        let stored = u32::from_le_bytes(c);
        let computed = block_crc(block);
        if stored != computed {
            return Err(Mismatch::Checksum {
                lba,
                stored,
                computed,
            });
        }
        let found_lba = word(8..16);
        if found_lba != lba {
            return Err(Mismatch::WrongLba {
                lba,
                found: found_lba,
            });
        }
        let found = word(16..24);
        if found != generation {
            return Err(Mismatch::Stale {
                lba,
                expected: generation,
                found,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detection() {
        let bs = 512;
        let mut buf = vec![0u8; bs * 4];
        fill(&mut buf, bs, 100, 7);
        assert_eq!(check(&buf, bs, 100, 7), Ok(()));

        // A flipped payload byte in the third block: corruption at LBA 102.
        let mut bad = buf.clone();
        bad[2 * bs + 300] ^= 0x40;
        assert!(matches!(
            check(&bad, bs, 100, 7),
            Err(Mismatch::Checksum { lba: 102, .. })
        ));

        // An older generation: stale.
        let mut old = vec![0u8; bs * 4];
        fill(&mut old, bs, 100, 6);
        let e = check(&old, bs, 100, 7).unwrap_err();
        assert_eq!(
            e,
            Mismatch::Stale {
                lba: 100,
                expected: 7,
                found: 6
            }
        );
        assert!(e.to_string().contains("stale") && e.to_string().contains("LBA 100"));

        // Data written for another LBA.
        assert_eq!(
            check(&buf, bs, 96, 7),
            Err(Mismatch::WrongLba {
                lba: 96,
                found: 100
            })
        );

        // A read that moved nothing.
        poison(&mut buf, bs);
        assert_eq!(
            check(&buf, bs, 100, 7),
            Err(Mismatch::NoHeader { lba: 100 })
        );
    }
}
