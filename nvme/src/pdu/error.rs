//! Errors a received PDU header can have, in the terms the termination
//! request that reports them uses.

use std::fmt;

/// Fatal Error Status: why a connection is being terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FatalErrorStatus {
    /// Invalid PDU Header Field; FEI is the offset of the field.
    InvalidHeaderField = 0x01,
    /// PDU Sequence Error: a valid PDU arrived when it is not allowed.
    PduSequenceError = 0x02,
    /// Header Digest Error.
    HeaderDigestError = 0x03,
    /// Data Transfer Out of Range: data outside the command's buffer.
    DataTransferOutOfRange = 0x04,
    /// Data Transfer Limit Exceeded (C2HTermReq), or R2T Limit Exceeded
    /// (H2CTermReq): the same code in either direction.
    DataTransferLimitExceeded = 0x05,
    /// Unsupported Parameter: a valid value this side does not support.
    UnsupportedParameter = 0x06,
}

impl FatalErrorStatus {
    /// The status for a wire value, if it is a defined one.
    pub const fn from_u16(value: u16) -> Option<Self> {
        Some(match value {
            0x01 => Self::InvalidHeaderField,
            0x02 => Self::PduSequenceError,
            0x03 => Self::HeaderDigestError,
            0x04 => Self::DataTransferOutOfRange,
            0x05 => Self::DataTransferLimitExceeded,
            0x06 => Self::UnsupportedParameter,
            _ => return None,
        })
    }
}

impl fmt::Display for FatalErrorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidHeaderField => "invalid PDU header field",
            Self::PduSequenceError => "PDU sequence error",
            Self::HeaderDigestError => "header digest error",
            Self::DataTransferOutOfRange => "data transfer out of range",
            Self::DataTransferLimitExceeded => "data transfer limit exceeded",
            Self::UnsupportedParameter => "unsupported parameter",
        })
    }
}

/// Why a received PDU header cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// The caller passed fewer header bytes than the PDU needs: read more
    /// before parsing. Not a protocol error.
    #[error("need {needed} header bytes, have {available}")]
    Incomplete {
        /// Bytes needed.
        needed: usize,
        /// Bytes passed.
        available: usize,
    },
    /// A protocol error: send a termination request with these FES / FEI,
    /// then close the connection.
    #[error("{status} (FES {:#x}), FEI {information}", status_code(.status))]
    Fatal {
        /// Fatal Error Status.
        status: FatalErrorStatus,
        /// Fatal Error Information: the byte offset in the PDU header of
        /// the field to blame (required for an invalid header field), or 0.
        information: u32,
    },
    /// A termination request with an impossible length: close the
    /// connection without sending anything, as the transport spec requires.
    #[error("termination request with invalid PDU length {plen}")]
    MalformedTermReq {
        /// The PLEN received.
        plen: u32,
    },
}

fn status_code(status: &FatalErrorStatus) -> u16 {
    *status as u16
}

impl PduError {
    /// Invalid PDU Header Field at byte `offset`.
    pub const fn invalid_field(offset: usize) -> Self {
        Self::Fatal {
            status: FatalErrorStatus::InvalidHeaderField,
            information: offset as u32,
        }
    }

    /// PDU Sequence Error, for a transport's state machine to report a
    /// well-formed PDU that arrived out of turn (e.g. a second ICReq).
    pub const fn sequence_error() -> Self {
        Self::fatal(FatalErrorStatus::PduSequenceError)
    }

    /// Data Transfer Out of Range, for a transport to report an H2CData /
    /// C2HData / R2T outside the command's buffer.
    pub const fn data_out_of_range() -> Self {
        Self::fatal(FatalErrorStatus::DataTransferOutOfRange)
    }

    /// Unsupported Parameter for the field at byte `offset` (e.g. an HPDA the
    /// controller cannot honour).
    pub const fn unsupported_parameter(offset: usize) -> Self {
        Self::Fatal {
            status: FatalErrorStatus::UnsupportedParameter,
            information: offset as u32,
        }
    }

    /// A fatal error without field information.
    pub const fn fatal(status: FatalErrorStatus) -> Self {
        Self::Fatal {
            status,
            information: 0,
        }
    }

    /// The (FES, FEI) a termination request reporting this error carries, or
    /// `None` if no termination request is to be sent.
    pub const fn term_req_fields(&self) -> Option<(u16, u32)> {
        match self {
            Self::Fatal {
                status,
                information,
            } => Some((*status as u16, *information)),
            Self::Incomplete { .. } | Self::MalformedTermReq { .. } => None,
        }
    }
}
