//! Header and data digests: CRC32C (Castagnoli), stored little-endian.

/// A data digest that did not match the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("data digest mismatch: PDU carried {received:#010x}, data hashes to {computed:#010x}")]
pub struct DigestMismatch {
    /// The digest in the PDU.
    pub received: u32,
    /// The digest of the data received.
    pub computed: u32,
}

/// The header digest of `header` (the HLEN bytes of a PDU header).
pub fn header_digest(header: &[u8]) -> u32 {
    crc32c::crc32c(header)
}

/// The data digest of `data`, when it is in one piece.
pub fn data_digest(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Checks `data` against the 4 digest bytes that followed it on the wire.
///
/// NVMe/TCP has no Fatal Error Status for a data digest error: the command
/// the data belongs to fails (e.g. with Transient Transport Error) and the
/// receiver decides whether to keep the connection.
pub fn verify_data_digest(data: &[u8], received: [u8; 4]) -> Result<(), DigestMismatch> {
    let received = u32::from_le_bytes(received);
    let computed = data_digest(data);
    if computed == received {
        Ok(())
    } else {
        Err(DigestMismatch { received, computed })
    }
}

/// A data digest computed over data that arrives or leaves in pieces
/// (scatter-gather buffers, several socket reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataDigest {
    crc: u32,
}

impl DataDigest {
    /// A digest over no data yet.
    pub const fn new() -> Self {
        Self { crc: 0 }
    }

    /// Adds the next piece of data.
    pub fn update(&mut self, piece: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, piece);
    }

    /// The digest of everything added so far.
    pub const fn value(&self) -> u32 {
        self.crc
    }

    /// The digest's wire bytes.
    pub const fn to_bytes(&self) -> [u8; 4] {
        self.crc.to_le_bytes()
    }

    /// Checks the digest against the 4 bytes that followed the data.
    pub fn verify(&self, received: [u8; 4]) -> Result<(), DigestMismatch> {
        let received = u32::from_le_bytes(received);
        if self.crc == received {
            Ok(())
        } else {
            Err(DigestMismatch {
                received,
                computed: self.crc,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-at-a-time CRC32C (reflected polynomial 0x82F63B78), written from
    /// the definition to cross-check the crate.
    pub(crate) fn reference_crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn matches_the_standard_check_value() {
        assert_eq!(reference_crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(data_digest(b"123456789"), 0xE306_9283);
        assert_eq!(data_digest(&[]), 0);
        // RFC 3720 (iSCSI) B.4 vector: 32 bytes of zeros.
        assert_eq!(data_digest(&[0; 32]), 0x8A91_36AA);
    }

    #[test]
    fn crate_matches_reference() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 3, 8, 15, 64, 72, 999, 1000] {
            assert_eq!(
                data_digest(&data[..len]),
                reference_crc32c(&data[..len]),
                "len {len}"
            );
        }
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..=255).collect();
        let mut digest = DataDigest::new();
        for piece in data.chunks(37) {
            digest.update(piece);
        }
        assert_eq!(digest.value(), data_digest(&data));
        assert_eq!(digest.verify(digest.to_bytes()), Ok(()));
        assert_eq!(verify_data_digest(&data, digest.to_bytes()), Ok(()));
        let wrong = verify_data_digest(&data, [0; 4]).unwrap_err();
        assert_eq!(wrong.computed, data_digest(&data));
        assert!(digest.verify([1, 2, 3, 4]).is_err());
    }
}
