//! The NVMe/TCP transport PDU codec (NVMe/TCP Transport Specification 1.0).
//!
//! Every PDU starts with an 8-byte common header (type, flags, HLEN, PDO,
//! PLEN), followed by the rest of the PDU-specific header, an optional
//! 4-byte header digest, padding up to PDO, optional data, and an optional
//! 4-byte data digest:
//!
//! ```text
//! | CH (8) | PSH (HLEN - 8) | HDGST (4)? | PAD | DATA | DDGST (4)? |
//! 0                         HLEN              PDO                  PLEN
//! ```
//!
//! The codec is built for a streaming receiver that never copies payload:
//!
//! 1. read 8 bytes; [`CommonHeader::parse`] then [`CommonHeader::layout`]
//!    validate them against the [`Negotiated`] connection parameters and
//!    return a [`PduLayout`] saying how long the header is, where the data
//!    starts and how long it is;
//! 2. read the rest of the header (up to [`PduLayout::header_with_digest_len`],
//!    at most [`MAX_HEADER_LEN`] bytes) and call [`Pdu::parse`], which checks
//!    the header digest and the PDU-specific fields and returns a typed view;
//! 3. skip [`PduLayout::padding_len`] bytes, receive
//!    [`PduLayout::data_len`] bytes straight into the caller's own buffer,
//!    then check the data digest with [`verify_data_digest`].
//!
//! Validation failures are [`PduError::Fatal`], carrying the Fatal Error
//! Status and Fatal Error Information (the offset of the lowest offending
//! header byte) that the receiver must put in its C2HTermReq / H2CTermReq
//! before closing the connection. Fields are checked in header order so the
//! lowest offending field is the one reported.
//!
//! Encoders write a PDU header (and header digest and padding) into a
//! caller-provided buffer and return its length; the caller sends its data
//! from wherever it lives, followed by [`data_digest`] of it if data digests
//! are on. The codec never handles PDU payload itself.
//!
//! ```
//! use oxstor_nvme::pdu::{
//!     encode_capsule_cmd, CommonHeader, Negotiated, Pdu, PduHeader, Role, COMMON_HEADER_LEN,
//!     MAX_HEADER_LEN,
//! };
//! use oxstor_nvme::spec::command::{CommandBuilder, SglDescriptor};
//!
//! // A host sends a Write with 512 bytes of in-capsule data...
//! let host = Negotiated { header_digest: true, ..Negotiated::initial(Role::Host) };
//! let sqe = CommandBuilder::nvm_io(0x01, 1, 0, 1).sgl(SglDescriptor::in_capsule(0, 512)).build();
//! let mut wire = [0u8; MAX_HEADER_LEN];
//! let header_len = encode_capsule_cmd(&sqe, 512, &host, &mut wire)?;
//!
//! // ...and the controller receives it in steps.
//! let controller = Negotiated { local_role: Role::Controller, ..host };
//! let layout = CommonHeader::parse(&wire[..COMMON_HEADER_LEN])?.layout(&controller)?;
//! assert_eq!(layout.header_with_digest_len(), header_len);
//! let pdu = Pdu::parse(&wire[..layout.header_with_digest_len()], &controller)?;
//! let PduHeader::CapsuleCmd(command) = pdu.header else { unreachable!() };
//! assert_eq!(command.opcode(), 0x01);
//! // Now skip layout.padding_len() bytes and receive layout.data_len (512)
//! // bytes into the command's own buffer.
//! assert_eq!((layout.padding_len(), layout.data_len), (0, 512));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod digest;
mod encode;
mod error;
mod header;
mod parse;

pub use digest::{data_digest, header_digest, verify_data_digest, DataDigest, DigestMismatch};
pub use encode::{encode_capsule_cmd, encode_capsule_resp, EncodeError};
pub use error::{FatalErrorStatus, PduError};
pub use header::{CommonHeader, PduLayout};
pub use parse::{DataPdu, IcReq, IcResp, Pdu, PduHeader, R2t, TermReq};

/// Size of the common header.
pub const COMMON_HEADER_LEN: usize = 8;
/// Size of a header or data digest.
pub const DIGEST_LEN: usize = 4;
/// HLEN and PLEN of ICReq and ICResp.
pub const IC_PDU_LEN: usize = 128;
/// HLEN of CapsuleCmd: common header plus a 64-byte SQE.
pub const CAPSULE_CMD_HEADER_LEN: usize = 72;
/// HLEN of CapsuleResp: common header plus a 16-byte CQE.
pub const CAPSULE_RESP_HEADER_LEN: usize = 24;
/// HLEN of H2CData and C2HData.
pub const DATA_HEADER_LEN: usize = 24;
/// HLEN of R2T.
pub const R2T_HEADER_LEN: usize = 24;
/// HLEN of H2CTermReq and C2HTermReq.
pub const TERM_REQ_HEADER_LEN: usize = 24;
/// Most bytes of the offending PDU header a termination request carries.
pub const TERM_REQ_MAX_DATA_LEN: usize = 128;
/// Largest header including its digest: a receive buffer this big holds
/// any PDU header.
pub const MAX_HEADER_LEN: usize = IC_PDU_LEN;
/// Smallest MAXH2CDATA a controller may advertise.
pub const MIN_MAX_H2C_DATA: u32 = 4096;
/// Largest HPDA / CPDA value (alignment (31 + 1) * 4 = 128 bytes).
pub const MAX_PDU_DATA_ALIGNMENT: u8 = 31;

/// Common header flags.
pub mod flags {
    /// A header digest follows the header.
    pub const HDGSTF: u8 = 0x01;
    /// A data digest follows the data.
    pub const DDGSTF: u8 = 0x02;
    /// H2CData / C2HData: last data PDU of the command's transfer.
    pub const LAST_PDU: u8 = 0x04;
    /// C2HData: the command completed successfully; no CapsuleResp follows.
    pub const SUCCESS: u8 = 0x08;
}

/// ICReq / ICResp DGST field bits.
pub mod digest_enable {
    /// Header digests requested / enabled.
    pub const HEADER: u8 = 0x01;
    /// Data digests requested / enabled.
    pub const DATA: u8 = 0x02;
}

/// Which end of a connection a side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The host (initiator).
    Host,
    /// The controller (target).
    Controller,
}

/// PDU types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PduType {
    /// Initialize Connection Request.
    IcReq = 0x00,
    /// Initialize Connection Response.
    IcResp = 0x01,
    /// Host to Controller Terminate Connection Request.
    H2cTermReq = 0x02,
    /// Controller to Host Terminate Connection Request.
    C2hTermReq = 0x03,
    /// Command Capsule.
    CapsuleCmd = 0x04,
    /// Response Capsule.
    CapsuleResp = 0x05,
    /// Host to Controller Data.
    H2cData = 0x06,
    /// Controller to Host Data.
    C2hData = 0x07,
    /// Ready to Transfer.
    R2t = 0x09,
}

impl PduType {
    /// The PDU type for a wire value, if it is one.
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0x00 => Self::IcReq,
            0x01 => Self::IcResp,
            0x02 => Self::H2cTermReq,
            0x03 => Self::C2hTermReq,
            0x04 => Self::CapsuleCmd,
            0x05 => Self::CapsuleResp,
            0x06 => Self::H2cData,
            0x07 => Self::C2hData,
            0x09 => Self::R2t,
            _ => return None,
        })
    }

    /// Who sends this PDU type: bit 0 of the type is the direction.
    pub const fn sender(self) -> Role {
        if self as u8 & 1 == 0 {
            Role::Host
        } else {
            Role::Controller
        }
    }

    /// The HLEN this PDU type must carry.
    pub const fn header_len(self) -> usize {
        match self {
            Self::IcReq | Self::IcResp => IC_PDU_LEN,
            Self::CapsuleCmd => CAPSULE_CMD_HEADER_LEN,
            Self::H2cTermReq
            | Self::C2hTermReq
            | Self::CapsuleResp
            | Self::H2cData
            | Self::C2hData
            | Self::R2t => 24,
        }
    }

    /// Whether the PDU may carry a header digest when they are enabled.
    pub const fn has_header_digest(self) -> bool {
        !matches!(
            self,
            Self::IcReq | Self::IcResp | Self::H2cTermReq | Self::C2hTermReq
        )
    }

    /// Whether the PDU may carry data protected by a data digest and
    /// aligned by PDO.
    pub const fn carries_data(self) -> bool {
        matches!(self, Self::CapsuleCmd | Self::H2cData | Self::C2hData)
    }

    /// Whether this is a termination request.
    pub const fn is_term_req(self) -> bool {
        matches!(self, Self::H2cTermReq | Self::C2hTermReq)
    }

    /// The flags the PDU type may carry.
    pub const fn valid_flags(self) -> u8 {
        match self {
            Self::IcReq | Self::IcResp | Self::H2cTermReq | Self::C2hTermReq => 0,
            Self::CapsuleCmd => flags::HDGSTF | flags::DDGSTF,
            Self::CapsuleResp | Self::R2t => flags::HDGSTF,
            Self::H2cData => flags::HDGSTF | flags::DDGSTF | flags::LAST_PDU,
            Self::C2hData => flags::HDGSTF | flags::DDGSTF | flags::LAST_PDU | flags::SUCCESS,
        }
    }
}

/// The connection parameters agreed in the ICReq / ICResp exchange, plus
/// which side is using them. Parsing checks PDUs sent by the other side;
/// encoding produces PDUs sent by `local_role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// This side of the connection.
    pub local_role: Role,
    /// Header digests on.
    pub header_digest: bool,
    /// Data digests on.
    pub data_digest: bool,
    /// Controller PDU Data Alignment: data in PDUs the host sends starts at
    /// a multiple of (CPDA + 1) * 4 bytes.
    pub cpda: u8,
    /// Host PDU Data Alignment: data in PDUs the controller sends starts at
    /// a multiple of (HPDA + 1) * 4 bytes.
    pub hpda: u8,
    /// MAXH2CDATA: most data bytes in one H2CData PDU.
    pub max_h2c_data: u32,
    /// Most in-capsule data bytes in one CapsuleCmd the controller accepts
    /// (IOCCSZ * 16 - 64 on I/O queues; 8192 on the admin queue is usual).
    pub max_in_capsule_data: u32,
}

impl Negotiated {
    /// Parameters before the ICReq / ICResp exchange: no digests, 4-byte
    /// alignment, the minimum MAXH2CDATA and 8 KiB of in-capsule data.
    pub const fn initial(local_role: Role) -> Self {
        Self {
            local_role,
            header_digest: false,
            data_digest: false,
            cpda: 0,
            hpda: 0,
            max_h2c_data: MIN_MAX_H2C_DATA,
            max_in_capsule_data: 8192,
        }
    }

    /// Parameters after the exchange: the controller's ICResp decides the
    /// digests, CPDA and MAXH2CDATA; the host's ICReq gives HPDA.
    pub const fn from_exchange(
        local_role: Role,
        request: &IcReq,
        response: &IcResp,
        max_in_capsule_data: u32,
    ) -> Self {
        Self {
            local_role,
            header_digest: response.header_digest,
            data_digest: response.data_digest,
            cpda: response.cpda,
            hpda: request.hpda,
            max_h2c_data: response.max_h2c_data,
            max_in_capsule_data,
        }
    }

    /// Data alignment in bytes for PDUs sent by `sender`.
    pub const fn data_alignment(&self, sender: Role) -> usize {
        let pda = match sender {
            Role::Host => self.cpda,
            Role::Controller => self.hpda,
        };
        (pda as usize + 1) * 4
    }
}

#[cfg(test)]
mod tests;
