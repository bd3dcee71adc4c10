//! The 8-byte common header and the checks that need nothing else.

use std::ops::Range;

use super::error::PduError;
use super::{
    flags, Negotiated, PduType, COMMON_HEADER_LEN, DIGEST_LEN, IC_PDU_LEN, TERM_REQ_HEADER_LEN,
    TERM_REQ_MAX_DATA_LEN,
};
use crate::bytes::{u32_at, u8_at};

/// Offsets of the common header fields, reported as FEI.
pub(crate) mod field {
    pub const PDU_TYPE: usize = 0;
    pub const FLAGS: usize = 1;
    pub const HLEN: usize = 2;
    pub const PDO: usize = 3;
    pub const PLEN: usize = 4;
}

/// The common header every PDU starts with, as received (unvalidated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    /// PDU-type byte.
    pub pdu_type: u8,
    /// FLAGS byte.
    pub flags: u8,
    /// HLEN: header length, excluding the header digest.
    pub hlen: u8,
    /// PDO: offset of the data from the PDU start (0 without data).
    pub pdo: u8,
    /// PLEN: total PDU length including digests and padding.
    pub plen: u32,
}

/// Where the parts of a validated PDU lie, in bytes from the PDU start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduLayout {
    /// The PDU type.
    pub pdu_type: PduType,
    /// The FLAGS byte.
    pub flags: u8,
    /// HLEN.
    pub header_len: usize,
    /// A header digest follows the header.
    pub header_digest: bool,
    /// Where the data starts (equal to the end of the header and its digest
    /// when there is no data).
    pub data_offset: usize,
    /// Bytes of data, excluding padding and data digest. For a termination
    /// request, the offending PDU header it carries.
    pub data_len: usize,
    /// A data digest follows the data.
    pub data_digest: bool,
    /// PLEN.
    pub pdu_len: usize,
}

impl PduLayout {
    /// Header length including the header digest: the bytes to read before
    /// calling [`super::Pdu::parse`].
    pub const fn header_with_digest_len(&self) -> usize {
        self.header_len
            .saturating_add(if self.header_digest { DIGEST_LEN } else { 0 })
    }

    /// Padding bytes between the header digest and the data.
    pub const fn padding_len(&self) -> usize {
        self.data_offset
            .saturating_sub(self.header_with_digest_len())
    }

    /// The data's byte range in the PDU.
    pub const fn data_range(&self) -> Range<usize> {
        self.data_offset..self.data_offset.saturating_add(self.data_len)
    }

    /// Where the data digest starts, if there is one.
    pub const fn data_digest_offset(&self) -> Option<usize> {
        if self.data_digest {
            Some(self.data_offset.saturating_add(self.data_len))
        } else {
            None
        }
    }

    /// Bytes after the header and its digest: padding, data and data digest.
    pub const fn bytes_after_header(&self) -> usize {
        self.pdu_len.saturating_sub(self.header_with_digest_len())
    }

    /// Whether the LAST_PDU flag is set (H2CData / C2HData).
    pub const fn is_last_pdu(&self) -> bool {
        self.flags & flags::LAST_PDU != 0
    }
}

impl CommonHeader {
    /// Reads the first 8 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, PduError> {
        if bytes.len() < COMMON_HEADER_LEN {
            return Err(PduError::Incomplete {
                needed: COMMON_HEADER_LEN,
                available: bytes.len(),
            });
        }
        Ok(Self {
            pdu_type: u8_at(bytes, field::PDU_TYPE),
            flags: u8_at(bytes, field::FLAGS),
            hlen: u8_at(bytes, field::HLEN),
            pdo: u8_at(bytes, field::PDO),
            plen: u32_at(bytes, field::PLEN),
        })
    }

    /// Validates the common header against the connection parameters and
    /// lays out the PDU. Fields are checked in wire order so the error names
    /// the lowest offending one.
    pub fn layout(&self, negotiated: &Negotiated) -> Result<PduLayout, PduError> {
        let pdu_type = PduType::from_u8(self.pdu_type)
            .filter(|pdu_type| pdu_type.sender() != negotiated.local_role)
            .ok_or(PduError::invalid_field(field::PDU_TYPE))?;

        let plen = usize::try_from(self.plen).unwrap_or(usize::MAX);
        if pdu_type.is_term_req()
            && !(TERM_REQ_HEADER_LEN..=TERM_REQ_HEADER_LEN + TERM_REQ_MAX_DATA_LEN).contains(&plen)
        {
            return Err(PduError::MalformedTermReq { plen: self.plen });
        }

        // As received: the flags and PDO decide where the sender put the
        // data; whether that matches the negotiation is checked below.
        let hlen = usize::from(self.hlen);
        let pdo = usize::from(self.pdo);
        let received_full_hlen = hlen
            + if self.flags & flags::HDGSTF != 0 {
                DIGEST_LEN
            } else {
                0
            };
        let received_data_and_digest = if pdu_type.carries_data() && plen != received_full_hlen {
            plen.saturating_sub(pdo)
        } else {
            0
        };

        let valid_flags = pdu_type.valid_flags();
        if self.flags & !valid_flags != 0 {
            return Err(PduError::invalid_field(field::FLAGS));
        }
        let mut expected_digest_flags = 0;
        if negotiated.header_digest {
            expected_digest_flags |= flags::HDGSTF;
        }
        if negotiated.data_digest && received_data_and_digest != 0 {
            expected_digest_flags |= flags::DDGSTF;
        }
        if expected_digest_flags & valid_flags != self.flags & (flags::HDGSTF | flags::DDGSTF) {
            return Err(PduError::invalid_field(field::FLAGS));
        }
        if pdu_type == PduType::C2hData
            && self.flags & (flags::SUCCESS | flags::LAST_PDU) == flags::SUCCESS
        {
            return Err(PduError::invalid_field(field::FLAGS));
        }

        if hlen != pdu_type.header_len() {
            return Err(PduError::invalid_field(field::HLEN));
        }
        let header_digest = self.flags & flags::HDGSTF != 0;
        let full_hlen = received_full_hlen;

        if pdu_type.carries_data() {
            let no_data = received_data_and_digest == 0 && pdo == 0;
            let aligned = pdo % negotiated.data_alignment(pdu_type.sender()) == 0;
            if !no_data && (pdo < full_hlen || pdo > plen || !aligned) {
                return Err(PduError::invalid_field(field::PDO));
            }
        } else if pdo != 0 {
            return Err(PduError::invalid_field(field::PDO));
        }

        if plen < full_hlen {
            return Err(PduError::invalid_field(field::PLEN));
        }
        let data_digest = self.flags & flags::DDGSTF != 0;
        let (data_offset, data_len) = match pdu_type {
            PduType::IcReq | PduType::IcResp => {
                if plen != IC_PDU_LEN {
                    return Err(PduError::invalid_field(field::PLEN));
                }
                (full_hlen, 0)
            }
            PduType::CapsuleResp | PduType::R2t => {
                if plen != full_hlen {
                    return Err(PduError::invalid_field(field::PLEN));
                }
                (full_hlen, 0)
            }
            PduType::H2cTermReq | PduType::C2hTermReq => (hlen, plen - hlen),
            PduType::CapsuleCmd | PduType::H2cData | PduType::C2hData => {
                // A digest protects at least one byte of data.
                if data_digest && received_data_and_digest <= DIGEST_LEN {
                    return Err(PduError::invalid_field(field::PLEN));
                }
                let digest_len = if data_digest { DIGEST_LEN } else { 0 };
                let data_len = received_data_and_digest - digest_len;
                if pdu_type == PduType::CapsuleCmd
                    && data_len > negotiated.max_in_capsule_data as usize
                {
                    return Err(PduError::Fatal {
                        status: super::FatalErrorStatus::DataTransferLimitExceeded,
                        information: field::PLEN as u32,
                    });
                }
                let data_offset = if pdo == 0 { full_hlen } else { pdo };
                (data_offset, data_len)
            }
        };

        Ok(PduLayout {
            pdu_type,
            flags: self.flags,
            header_len: hlen,
            header_digest,
            data_offset,
            data_len,
            data_digest,
            pdu_len: plen,
        })
    }
}
