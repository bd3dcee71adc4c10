//! Encoders: each writes one PDU header (plus header digest and padding up
//! to the data) into a caller-provided buffer and returns the bytes written.
//! Data is never copied: the caller sends it next, then its [`data_digest`]
//! when [`PduLayout::data_digest`] says so.
//!
//! [`data_digest`]: super::data_digest
//! [`PduLayout::data_digest`]: super::PduLayout::data_digest

use super::digest::header_digest;
use super::parse::field;
use super::{
    digest_enable, flags, DataPdu, IcReq, IcResp, Negotiated, PduType, R2t, Role, TermReq,
    DIGEST_LEN, TERM_REQ_MAX_DATA_LEN,
};
use crate::bytes::{put_array, put_u16, put_u32, put_u8};
use crate::spec::command::COMMAND_LEN;
use crate::spec::completion::Completion;

/// Why a PDU header could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The output buffer is too small.
    #[error("PDU header needs {needed} bytes, buffer has {available}")]
    BufferTooSmall {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The PDU would be longer than PLEN can express.
    #[error("PDU length does not fit in 32 bits")]
    PduTooLong,
    /// The negotiated data alignment puts the data past byte 255, which PDO
    /// cannot express.
    #[error("data alignment of {0} bytes is not encodable in PDO")]
    AlignmentTooLarge(usize),
}

/// Writes the common header and the parts every PDU type shares; the
/// caller-supplied closure fills the PDU-specific fields in `header[8..hlen]`.
fn encode_pdu(
    buf: &mut [u8],
    pdu_type: PduType,
    extra_flags: u8,
    data_len: usize,
    negotiated: &Negotiated,
    fill_fields: impl FnOnce(&mut [u8]),
) -> Result<usize, EncodeError> {
    let hlen = pdu_type.header_len();
    let header_digest_on = negotiated.header_digest && pdu_type.has_header_digest();
    let full_hlen = hlen + if header_digest_on { DIGEST_LEN } else { 0 };
    let has_data = data_len > 0;
    let data_digest_on = negotiated.data_digest && has_data && pdu_type.carries_data();

    let (header_bytes, pdo) = if has_data && pdu_type.carries_data() {
        let alignment = negotiated.data_alignment(negotiated.local_role);
        let pdo = full_hlen.div_ceil(alignment) * alignment;
        let pdo_byte = u8::try_from(pdo).map_err(|_| EncodeError::AlignmentTooLarge(alignment))?;
        (pdo, pdo_byte)
    } else {
        // No data, or a termination request whose data (the offending
        // header) follows the header directly with PDO 0.
        (full_hlen, 0)
    };
    let pdu_len = header_bytes
        .checked_add(data_len)
        .and_then(|len| len.checked_add(if data_digest_on { DIGEST_LEN } else { 0 }))
        .and_then(|len| u32::try_from(len).ok())
        .ok_or(EncodeError::PduTooLong)?;

    let available = buf.len();
    let out = buf
        .get_mut(..header_bytes)
        .ok_or(EncodeError::BufferTooSmall {
            needed: header_bytes,
            available,
        })?;
    out.fill(0);
    let mut pdu_flags = extra_flags;
    if header_digest_on {
        pdu_flags |= flags::HDGSTF;
    }
    if data_digest_on {
        pdu_flags |= flags::DDGSTF;
    }
    put_u8(out, 0, pdu_type as u8);
    put_u8(out, 1, pdu_flags);
    put_u8(out, 2, hlen as u8);
    put_u8(out, 3, pdo);
    put_u32(out, 4, pdu_len);
    if let Some(fields) = out.get_mut(..hlen) {
        fill_fields(fields);
    }
    if header_digest_on {
        let digest = header_digest(out.get(..hlen).unwrap_or_default());
        put_u32(out, hlen, digest);
    }
    Ok(header_bytes)
}

impl IcReq {
    /// Writes the 128-byte ICReq.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let negotiated = Negotiated::initial(Role::Host);
        encode_pdu(buf, PduType::IcReq, 0, 0, &negotiated, |header| {
            put_u16(header, field::PFV, self.pfv);
            put_u8(header, field::PDA, self.hpda);
            put_u8(
                header,
                field::DGST,
                digest_bits(self.header_digest, self.data_digest),
            );
            put_u32(header, field::IC_LIMIT, self.max_r2t);
        })
    }
}

impl IcResp {
    /// Writes the 128-byte ICResp.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let negotiated = Negotiated::initial(Role::Controller);
        encode_pdu(buf, PduType::IcResp, 0, 0, &negotiated, |header| {
            put_u16(header, field::PFV, self.pfv);
            put_u8(header, field::PDA, self.cpda);
            put_u8(
                header,
                field::DGST,
                digest_bits(self.header_digest, self.data_digest),
            );
            put_u32(header, field::IC_LIMIT, self.max_h2c_data);
        })
    }
}

fn digest_bits(header: bool, data: bool) -> u8 {
    (if header { digest_enable::HEADER } else { 0 }) | (if data { digest_enable::DATA } else { 0 })
}

impl TermReq {
    /// Writes a complete termination request sent by `sender` (H2CTermReq
    /// from a host, C2HTermReq from a controller), carrying up to 128 bytes
    /// of `offending_header`. Returns the whole PDU's length.
    pub fn encode(
        &self,
        sender: Role,
        offending_header: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let pdu_type = match sender {
            Role::Host => PduType::H2cTermReq,
            Role::Controller => PduType::C2hTermReq,
        };
        let carried = offending_header
            .get(..TERM_REQ_MAX_DATA_LEN)
            .unwrap_or(offending_header);
        let total = pdu_type.header_len() + carried.len();
        if buf.len() < total {
            return Err(EncodeError::BufferTooSmall {
                needed: total,
                available: buf.len(),
            });
        }
        let negotiated = Negotiated::initial(sender);
        let header_len = encode_pdu(buf, pdu_type, 0, carried.len(), &negotiated, |header| {
            put_u16(header, field::FES, self.fes);
            put_u32(header, field::FEI, self.fei);
        })?;
        if let Some(data) = buf.get_mut(header_len..header_len + carried.len()) {
            data.copy_from_slice(carried);
        }
        Ok(total)
    }
}

/// Writes a CapsuleCmd header for `command` followed by
/// `in_capsule_data_len` bytes of data the caller sends next, aligned to the
/// controller's CPDA. Returns the bytes written (the data's offset).
pub fn encode_capsule_cmd(
    command: &[u8; COMMAND_LEN],
    in_capsule_data_len: usize,
    negotiated: &Negotiated,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    encode_pdu(
        buf,
        PduType::CapsuleCmd,
        0,
        in_capsule_data_len,
        negotiated,
        |header| {
            put_array(header, field::SQE, *command);
        },
    )
}

/// Writes a CapsuleResp carrying `completion`. Returns the PDU's length.
pub fn encode_capsule_resp(
    completion: &Completion,
    negotiated: &Negotiated,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    encode_pdu(buf, PduType::CapsuleResp, 0, 0, negotiated, |header| {
        put_array(header, field::CQE, completion.encode());
    })
}

impl DataPdu {
    /// Writes an H2CData header (`self.success` is ignored); `data_len`
    /// bytes of data follow. Returns the bytes written (the data's offset).
    pub fn encode_h2c(
        &self,
        negotiated: &Negotiated,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let extra_flags = if self.last { flags::LAST_PDU } else { 0 };
        self.encode(PduType::H2cData, extra_flags, self.ttag, negotiated, buf)
    }

    /// Writes a C2HData header aligned to the host's HPDA; `data_len` bytes
    /// of data follow. SUCCESS implies LAST_PDU. Returns the bytes written.
    pub fn encode_c2h(
        &self,
        negotiated: &Negotiated,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let extra_flags = match (self.last || self.success, self.success) {
            (true, true) => flags::LAST_PDU | flags::SUCCESS,
            (true, false) => flags::LAST_PDU,
            (false, _) => 0,
        };
        self.encode(PduType::C2hData, extra_flags, 0, negotiated, buf)
    }

    fn encode(
        &self,
        pdu_type: PduType,
        extra_flags: u8,
        ttag: u16,
        negotiated: &Negotiated,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let data_len = usize::try_from(self.data_len).map_err(|_| EncodeError::PduTooLong)?;
        encode_pdu(buf, pdu_type, extra_flags, data_len, negotiated, |header| {
            put_u16(header, field::CCCID, self.cccid);
            put_u16(header, field::TTAG, ttag);
            put_u32(header, field::DATA_OFFSET, self.data_offset);
            put_u32(header, field::DATA_LEN, self.data_len);
        })
    }
}

impl R2t {
    /// Writes an R2T. Returns the PDU's length.
    pub fn encode(&self, negotiated: &Negotiated, buf: &mut [u8]) -> Result<usize, EncodeError> {
        encode_pdu(buf, PduType::R2t, 0, 0, negotiated, |header| {
            put_u16(header, field::CCCID, self.cccid);
            put_u16(header, field::TTAG, self.ttag);
            put_u32(header, field::DATA_OFFSET, self.offset);
            put_u32(header, field::DATA_LEN, self.len);
        })
    }
}
