//! Typed views of validated PDU headers.

use super::digest::header_digest;
use super::error::{FatalErrorStatus, PduError};
use super::header::{CommonHeader, PduLayout};
use super::{digest_enable, flags, Negotiated, PduType, MAX_PDU_DATA_ALIGNMENT, MIN_MAX_H2C_DATA};
use crate::bytes::{array_at, u16_at, u32_at, u8_at};
use crate::spec::command::{Command, COMMAND_LEN};
use crate::spec::completion::{Completion, COMPLETION_LEN};

/// Byte offsets of PDU-specific fields, reported as FEI.
pub(crate) mod field {
    pub const PFV: usize = 8;
    /// ICReq HPDA, ICResp CPDA.
    pub const PDA: usize = 10;
    pub const DGST: usize = 11;
    /// ICReq MAXR2T, ICResp MAXH2CDATA.
    pub const IC_LIMIT: usize = 12;
    pub const FES: usize = 8;
    pub const FEI: usize = 10;
    pub const CCCID: usize = 8;
    pub const TTAG: usize = 10;
    /// DATAO / R2TO.
    pub const DATA_OFFSET: usize = 12;
    /// DATAL / R2TL.
    pub const DATA_LEN: usize = 16;
    pub const SQE: usize = 8;
    pub const CQE: usize = 8;
}

/// Initialize Connection Request fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcReq {
    /// PDU Format Version; 0 is NVMe/TCP 1.0.
    pub pfv: u16,
    /// Host PDU Data Alignment (0..=31).
    pub hpda: u8,
    /// Host asks for header digests.
    pub header_digest: bool,
    /// Host asks for data digests.
    pub data_digest: bool,
    /// Most outstanding R2Ts per command, 0-based.
    pub max_r2t: u32,
}

/// Initialize Connection Response fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcResp {
    /// PDU Format Version; 0 is NVMe/TCP 1.0.
    pub pfv: u16,
    /// Controller PDU Data Alignment (0..=31).
    pub cpda: u8,
    /// Header digests enabled.
    pub header_digest: bool,
    /// Data digests enabled.
    pub data_digest: bool,
    /// Most data bytes per H2CData PDU (>= 4096, a multiple of 4).
    pub max_h2c_data: u32,
}

/// Terminate Connection Request fields (either direction). The offending
/// header bytes it carries are the PDU's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermReq {
    /// Fatal Error Status as received; see [`FatalErrorStatus::from_u16`].
    pub fes: u16,
    /// Fatal Error Information.
    pub fei: u32,
}

impl TermReq {
    /// The request reporting `error`, if the error calls for one.
    pub const fn for_error(error: &PduError) -> Option<Self> {
        match error.term_req_fields() {
            Some((fes, fei)) => Some(Self { fes, fei }),
            None => None,
        }
    }
}

/// H2CData / C2HData fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPdu {
    /// Command Capsule CID of the command the data belongs to.
    pub cccid: u16,
    /// Transfer Tag from the R2T (H2CData only; reserved in C2HData).
    pub ttag: u16,
    /// DATAO: offset of this data in the command's buffer.
    pub data_offset: u32,
    /// DATAL: bytes of data in this PDU.
    pub data_len: u32,
    /// LAST_PDU flag.
    pub last: bool,
    /// SUCCESS flag (C2HData only): no CapsuleResp will follow.
    pub success: bool,
}

/// Ready to Transfer fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    /// Command Capsule CID of the command asking for data.
    pub cccid: u16,
    /// Transfer Tag the H2CData PDUs must echo.
    pub ttag: u16,
    /// R2TO: offset in the command's buffer of the data requested.
    pub offset: u32,
    /// R2TL: bytes requested.
    pub len: u32,
}

/// The PDU-specific part of a validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduHeader<'a> {
    /// ICReq.
    IcReq(IcReq),
    /// ICResp.
    IcResp(IcResp),
    /// H2CTermReq.
    H2cTermReq(TermReq),
    /// C2HTermReq.
    C2hTermReq(TermReq),
    /// CapsuleCmd: the SQE, read in place. In-capsule data is the PDU's data.
    CapsuleCmd(Command<'a>),
    /// CapsuleResp.
    CapsuleResp(Completion),
    /// H2CData.
    H2cData(DataPdu),
    /// C2HData.
    C2hData(DataPdu),
    /// R2T.
    R2t(R2t),
}

/// A validated PDU header and the layout of the rest of the PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pdu<'a> {
    /// Where the padding, data and digests lie.
    pub layout: PduLayout,
    /// The PDU-specific fields.
    pub header: PduHeader<'a>,
}

impl<'a> Pdu<'a> {
    /// Validates a PDU header: `bytes` starts at the PDU and holds at least
    /// the header and its digest ([`PduLayout::header_with_digest_len`]
    /// bytes); anything after that is ignored.
    pub fn parse(bytes: &'a [u8], negotiated: &Negotiated) -> Result<Self, PduError> {
        let layout = CommonHeader::parse(bytes)?.layout(negotiated)?;
        let needed = layout.header_with_digest_len();
        let header = bytes
            .get(..layout.header_len)
            .filter(|_| bytes.len() >= needed)
            .ok_or(PduError::Incomplete {
                needed,
                available: bytes.len(),
            })?;
        if layout.header_digest {
            let received = u32_at(bytes, layout.header_len);
            if header_digest(header) != received {
                return Err(PduError::fatal(FatalErrorStatus::HeaderDigestError));
            }
        }
        let header =
            match layout.pdu_type {
                PduType::IcReq => PduHeader::IcReq(parse_ic_req(header)?),
                PduType::IcResp => PduHeader::IcResp(parse_ic_resp(header)?),
                PduType::H2cTermReq => PduHeader::H2cTermReq(parse_term_req(header)),
                PduType::C2hTermReq => PduHeader::C2hTermReq(parse_term_req(header)),
                PduType::CapsuleCmd => {
                    let sqe = header
                        .get(field::SQE..field::SQE + COMMAND_LEN)
                        .and_then(|sqe| sqe.first_chunk::<COMMAND_LEN>())
                        .ok_or(PduError::invalid_field(super::header::field::HLEN))?;
                    PduHeader::CapsuleCmd(Command::new(sqe))
                }
                PduType::CapsuleResp => PduHeader::CapsuleResp(Completion::from_bytes(
                    &array_at::<COMPLETION_LEN>(header, field::CQE),
                )),
                PduType::H2cData => PduHeader::H2cData(parse_data(header, &layout, negotiated)?),
                PduType::C2hData => PduHeader::C2hData(parse_data(header, &layout, negotiated)?),
                PduType::R2t => PduHeader::R2t(parse_r2t(header)?),
            };
        Ok(Self { layout, header })
    }
}

fn parse_ic_req(header: &[u8]) -> Result<IcReq, PduError> {
    let pfv = u16_at(header, field::PFV);
    if pfv != 0 {
        return Err(PduError::invalid_field(field::PFV));
    }
    let hpda = u8_at(header, field::PDA);
    if hpda > MAX_PDU_DATA_ALIGNMENT {
        return Err(PduError::invalid_field(field::PDA));
    }
    let dgst = u8_at(header, field::DGST);
    Ok(IcReq {
        pfv,
        hpda,
        header_digest: dgst & digest_enable::HEADER != 0,
        data_digest: dgst & digest_enable::DATA != 0,
        max_r2t: u32_at(header, field::IC_LIMIT),
    })
}

fn parse_ic_resp(header: &[u8]) -> Result<IcResp, PduError> {
    let pfv = u16_at(header, field::PFV);
    if pfv != 0 {
        return Err(PduError::invalid_field(field::PFV));
    }
    let cpda = u8_at(header, field::PDA);
    if cpda > MAX_PDU_DATA_ALIGNMENT {
        return Err(PduError::invalid_field(field::PDA));
    }
    let dgst = u8_at(header, field::DGST);
    let max_h2c_data = u32_at(header, field::IC_LIMIT);
    // A whole number of dwords: the low two bits are clear.
    if max_h2c_data < MIN_MAX_H2C_DATA || max_h2c_data & 0x3 != 0 {
        return Err(PduError::invalid_field(field::IC_LIMIT));
    }
    Ok(IcResp {
        pfv,
        cpda,
        header_digest: dgst & digest_enable::HEADER != 0,
        data_digest: dgst & digest_enable::DATA != 0,
        max_h2c_data,
    })
}

fn parse_term_req(header: &[u8]) -> TermReq {
    TermReq {
        fes: u16_at(header, field::FES),
        fei: u32_at(header, field::FEI),
    }
}

fn parse_data(
    header: &[u8],
    layout: &PduLayout,
    negotiated: &Negotiated,
) -> Result<DataPdu, PduError> {
    let pdu = DataPdu {
        cccid: u16_at(header, field::CCCID),
        ttag: u16_at(header, field::TTAG),
        data_offset: u32_at(header, field::DATA_OFFSET),
        data_len: u32_at(header, field::DATA_LEN),
        last: layout.flags & flags::LAST_PDU != 0,
        success: layout.flags & flags::SUCCESS != 0,
    };
    if pdu.data_offset.checked_add(pdu.data_len).is_none() {
        return Err(PduError::Fatal {
            status: FatalErrorStatus::DataTransferOutOfRange,
            information: field::DATA_OFFSET as u32,
        });
    }
    if usize::try_from(pdu.data_len).ok() != Some(layout.data_len) {
        return Err(PduError::invalid_field(field::DATA_LEN));
    }
    if layout.pdu_type == PduType::H2cData && pdu.data_len > negotiated.max_h2c_data {
        return Err(PduError::Fatal {
            status: FatalErrorStatus::DataTransferLimitExceeded,
            information: field::DATA_LEN as u32,
        });
    }
    Ok(pdu)
}

fn parse_r2t(header: &[u8]) -> Result<R2t, PduError> {
    let r2t = R2t {
        cccid: u16_at(header, field::CCCID),
        ttag: u16_at(header, field::TTAG),
        offset: u32_at(header, field::DATA_OFFSET),
        len: u32_at(header, field::DATA_LEN),
    };
    if r2t.offset.checked_add(r2t.len).is_none() {
        return Err(PduError::Fatal {
            status: FatalErrorStatus::DataTransferOutOfRange,
            information: field::DATA_OFFSET as u32,
        });
    }
    if r2t.len == 0 {
        return Err(PduError::invalid_field(field::DATA_LEN));
    }
    Ok(r2t)
}
