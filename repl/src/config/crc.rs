//! drbd-utils' own crc32c, used only to derive implicit node-ids.
//!
//! It is the reflected Castagnoli table update (polynomial 0x82F63B78) started from the caller's
//! seed, with no initial and no final inversion, so `drbd_crc32c(0, b"")` is 0 and the result
//! differs from a standard CRC-32C (which the `crc32c` crate computes).

const POLY: u32 = 0x82F6_3B78;

const TABLE: [u32; 256] = make_table();

const fn make_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            bit += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// The table update over `data`, starting from `seed`.
pub fn drbd_crc32c(seed: u32, data: &[u8]) -> u32 {
    data.iter().fold(seed, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// The seed drbdadm uses for implicit node-ids.
pub const NODE_ID_SEED: u32 = 0x1a65_6f21;

/// The hash drbdadm compares, as the C `int` it is stored in: over the IP address string only.
pub fn address_hash(ip: &str) -> i32 {
    drbd_crc32c(NODE_ID_SEED, ip.as_bytes()) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit at a time, straight from the polynomial: an independent implementation.
    fn bitwise(seed: u32, data: &[u8]) -> u32 {
        let mut c = seed;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = (c >> 1) ^ (POLY & (c & 1).wrapping_neg());
            }
        }
        c
    }

    #[test]
    fn table_entries() {
        // Well-known entries of the reflected Castagnoli table.
        assert_eq!(TABLE[0], 0);
        assert_eq!(TABLE[1], 0xF26B_8303);
        assert_eq!(TABLE[128], 0x82F6_3B78);
        assert_eq!(TABLE[255], 0xAD7D_5351);
    }

    #[test]
    fn no_inversions() {
        assert_eq!(drbd_crc32c(0, b""), 0);
        assert_eq!(drbd_crc32c(NODE_ID_SEED, b""), NODE_ID_SEED);
        // The standard CRC-32C check value is 0xE3069283; ours is not inverted on either end.
        let standard = !drbd_crc32c(!0, b"123456789");
        assert_eq!(standard, 0xE306_9283);
        assert_eq!(standard, crc32c::crc32c(b"123456789"));
        assert_ne!(drbd_crc32c(0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn address_hashes_computed_independently() {
        // Values computed with a separate bit-at-a-time Python implementation.
        let cases: &[(&str, u32, i32)] = &[
            ("127.0.0.1", 0xa910_937e, -1_458_531_458),
            ("127.0.0.2", 0xba40_608a, -1_170_186_102),
            ("10.11.56.2", 0x78fa_97ca, 2_029_688_778),
            ("10.11.56.3", 0x8a91_14c9, -1_970_203_447),
            ("10.1.1.31", 0x1de7_89f0, 501_713_392),
            ("10.1.1.32", 0x0eb7_7a04, 246_905_348),
            ("fd00::1", 0x1386_2b8a, 327_560_074),
            ("a", 0x4161_78d3, 1_096_906_963),
        ];
        for &(ip, unsigned, signed) in cases {
            assert_eq!(drbd_crc32c(NODE_ID_SEED, ip.as_bytes()), unsigned, "{ip}");
            assert_eq!(address_hash(ip), signed, "{ip}");
            assert_eq!(bitwise(NODE_ID_SEED, ip.as_bytes()), unsigned, "{ip}");
        }
    }

    #[test]
    fn table_matches_bitwise() {
        let mut x = 0x1234_5678u32;
        for len in 0..64 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            assert_eq!(drbd_crc32c(x, &data), bitwise(x, &data));
        }
    }
}
