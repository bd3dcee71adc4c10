//! Workload kinds, the read/write mix and offset generation.

use crate::PerfError;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Read,
    Write,
    RandRead,
    RandWrite,
    Rw,
    RandRw,
    Verify,
}

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::Read,
        Workload::Write,
        Workload::RandRead,
        Workload::RandWrite,
        Workload::Rw,
        Workload::RandRw,
        Workload::Verify,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::RandRead => "randread",
            Workload::RandWrite => "randwrite",
            Workload::Rw => "rw",
            Workload::RandRw => "randrw",
            Workload::Verify => "verify",
        }
    }

    /// Offsets are random (otherwise sequential, wrapping at the end of the range).
    pub fn is_random(self) -> bool {
        matches!(
            self,
            Workload::RandRead | Workload::RandWrite | Workload::RandRw
        )
    }

    /// Whether the workload writes (and so needs the bdev opened for writing).
    pub fn writes(self) -> bool {
        !matches!(self, Workload::Read | Workload::RandRead)
    }

    /// Whether `-M` (the read percentage) applies.
    pub fn is_mixed(self) -> bool {
        matches!(self, Workload::Rw | Workload::RandRw)
    }

    /// Percentage of reads for a given `-M` (only mixed workloads use the mix).
    pub fn read_percent(self, rwmixread: u8) -> u8 {
        match self {
            Workload::Read | Workload::RandRead => 100,
            Workload::Write | Workload::RandWrite => 0,
            Workload::Rw | Workload::RandRw => rwmixread.min(100),
            Workload::Verify => 0,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = PerfError;
    fn from_str(s: &str) -> Result<Self, PerfError> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                PerfError::usage(format!(
                    "unknown workload '{s}' (expected one of: {})",
                    names.join(", ")
                ))
            })
    }
}

/// xorshift64*: a few cycles per number, good enough to spread offsets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Any non-zero state works; mix the seed so nearby seeds diverge at once.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0) without a division: the high half of a 64×64 product.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Picks I/O offsets inside one job's range, in units of whole I/Os ("chunks").
#[derive(Debug, Clone)]
pub struct Offsets {
    /// First block of the range.
    pub start_block: u64,
    /// Number of I/O-sized chunks in the range.
    pub chunks: u64,
    /// Blocks per I/O.
    pub io_blocks: u64,
    random: bool,
    next: u64,
}

impl Offsets {
    pub fn new(start_block: u64, chunks: u64, io_blocks: u64, random: bool) -> Offsets {
        Offsets {
            start_block,
            chunks: chunks.max(1),
            io_blocks,
            random,
            next: 0,
        }
    }

    /// Next chunk index: random, or sequential wrapping around.
    #[inline]
    pub fn next_chunk(&mut self, rng: &mut Rng) -> u64 {
        if self.random {
            rng.below(self.chunks)
        } else {
            let c = self.next;
            self.next += 1;
            if self.next == self.chunks {
                self.next = 0;
            }
            c
        }
    }

    #[inline]
    pub fn block_of(&self, chunk: u64) -> u64 {
        self.start_block + chunk * self.io_blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(w.name().parse::<Workload>().unwrap(), w);
        }
        let e = "randomread".parse::<Workload>().unwrap_err().to_string();
        assert!(e.contains("randomread") && e.contains("randread"), "{e}");
    }

    #[test]
    fn random_offsets_stay_in_range_and_aligned() {
        let mut rng = Rng::new(1);
        let mut o = Offsets::new(100, 10, 8, true);
        let mut seen = [false; 10];
        for _ in 0..10_000 {
            let c = o.next_chunk(&mut rng);
            assert!(c < 10);
            seen[c as usize] = true;
            assert_eq!((o.block_of(c) - 100) % 8, 0);
        }
        assert!(seen.iter().all(|&s| s), "every chunk is eventually chosen");
    }

    #[test]
    fn sequential_offsets_wrap() {
        let mut rng = Rng::new(1);
        let mut o = Offsets::new(0, 3, 4, false);
        let got: Vec<u64> = (0..7)
            .map(|_| {
                let c = o.next_chunk(&mut rng);
                o.block_of(c)
            })
            .collect();
        assert_eq!(got, vec![0, 4, 8, 0, 4, 8, 0]);
    }

    #[test]
    fn mix() {
        assert_eq!(Workload::Read.read_percent(30), 100);
        assert_eq!(Workload::RandRw.read_percent(30), 30);
        assert_eq!(Workload::Write.read_percent(30), 0);
    }
}
