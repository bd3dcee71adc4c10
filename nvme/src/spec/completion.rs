//! The 16-byte completion queue entry (CQE) and its status field.
//!
//! A [`Completion`] is small enough to be passed around by value; it is
//! decoded from and encoded to its 16 wire bytes. [`Status`] splits the
//! 15-bit status field into its parts and names the codes a target returns.

use super::{fixed, LengthError};
use crate::bytes::{put_u16, put_u32, u16_at, u32_at};

/// Size of a completion queue entry.
pub const COMPLETION_LEN: usize = 16;

/// Abort command result: DW0 bit 0 set means the command was not aborted.
pub const ABORT_NOT_ABORTED: u32 = 1;

/// Status Code Type (SCT): which table the status code belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StatusCodeType(pub u8);

impl StatusCodeType {
    /// Generic Command Status.
    pub const GENERIC: Self = Self(0);
    /// Command Specific Status.
    pub const COMMAND_SPECIFIC: Self = Self(1);
    /// Media and Data Integrity Errors.
    pub const MEDIA_AND_DATA_INTEGRITY: Self = Self(2);
    /// Path Related Status.
    pub const PATH: Self = Self(3);
    /// Vendor Specific.
    pub const VENDOR_SPECIFIC: Self = Self(7);
}

/// The status field of a completion, without the phase tag.
///
/// Wire layout of the 16-bit field (CQE bytes 14..16): bit 0 phase tag,
/// bits 8:1 SC, bits 11:9 SCT, bits 13:12 CRD, bit 14 More, bit 15 DNR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status {
    /// Status Code Type.
    pub code_type: StatusCodeType,
    /// Status Code.
    pub code: u8,
    /// Command Retry Delay: index into the host's CRDT table (0 = none).
    pub retry_delay: u8,
    /// More: extra information is in the Error Information log.
    pub more: bool,
    /// Do Not Retry.
    pub do_not_retry: bool,
}

macro_rules! status_consts {
    ($($(#[$doc:meta])* $name:ident = ($sct:ident, $sc:expr);)*) => {
        impl Status {
            $(
                $(#[$doc])*
                pub const $name: Status = Status::new(StatusCodeType::$sct, $sc);
            )*
        }
    };
}

status_consts! {
    /// Successful Completion.
    SUCCESS = (GENERIC, 0x00);
    /// Invalid Command Opcode.
    INVALID_OPCODE = (GENERIC, 0x01);
    /// Invalid Field in Command.
    INVALID_FIELD = (GENERIC, 0x02);
    /// Command ID Conflict.
    COMMAND_ID_CONFLICT = (GENERIC, 0x03);
    /// Data Transfer Error.
    DATA_TRANSFER_ERROR = (GENERIC, 0x04);
    /// Commands Aborted due to Power Loss Notification.
    ABORTED_POWER_LOSS = (GENERIC, 0x05);
    /// Internal Error.
    INTERNAL_ERROR = (GENERIC, 0x06);
    /// Command Abort Requested.
    ABORT_REQUESTED = (GENERIC, 0x07);
    /// Command Aborted due to SQ Deletion.
    ABORTED_SQ_DELETION = (GENERIC, 0x08);
    /// Command Aborted due to Failed Fused Command.
    ABORTED_FAILED_FUSED = (GENERIC, 0x09);
    /// Command Aborted due to Missing Fused Command.
    ABORTED_MISSING_FUSED = (GENERIC, 0x0A);
    /// Invalid Namespace or Format.
    INVALID_NAMESPACE_OR_FORMAT = (GENERIC, 0x0B);
    /// Command Sequence Error.
    COMMAND_SEQUENCE_ERROR = (GENERIC, 0x0C);
    /// Invalid SGL Segment Descriptor.
    INVALID_SGL_SEGMENT_DESCRIPTOR = (GENERIC, 0x0D);
    /// Invalid Number of SGL Descriptors.
    INVALID_SGL_DESCRIPTOR_COUNT = (GENERIC, 0x0E);
    /// Data SGL Length Invalid.
    DATA_SGL_LENGTH_INVALID = (GENERIC, 0x0F);
    /// Metadata SGL Length Invalid.
    METADATA_SGL_LENGTH_INVALID = (GENERIC, 0x10);
    /// SGL Descriptor Type Invalid.
    SGL_DESCRIPTOR_TYPE_INVALID = (GENERIC, 0x11);
    /// Invalid Use of Controller Memory Buffer.
    INVALID_CMB_USE = (GENERIC, 0x12);
    /// PRP Offset Invalid.
    PRP_OFFSET_INVALID = (GENERIC, 0x13);
    /// Atomic Write Unit Exceeded.
    ATOMIC_WRITE_UNIT_EXCEEDED = (GENERIC, 0x14);
    /// Operation Denied.
    OPERATION_DENIED = (GENERIC, 0x15);
    /// SGL Offset Invalid.
    SGL_OFFSET_INVALID = (GENERIC, 0x16);
    /// Host Identifier Inconsistent Format.
    HOST_ID_INCONSISTENT_FORMAT = (GENERIC, 0x18);
    /// Keep Alive Timer Expired.
    KEEP_ALIVE_EXPIRED = (GENERIC, 0x19);
    /// Keep Alive Timeout Invalid.
    KEEP_ALIVE_TIMEOUT_INVALID = (GENERIC, 0x1A);
    /// SGL Data Block Granularity Invalid.
    SGL_DATA_BLOCK_GRANULARITY_INVALID = (GENERIC, 0x1E);
    /// Namespace is Write Protected: the status for a write to a read-only
    /// namespace.
    NAMESPACE_WRITE_PROTECTED = (GENERIC, 0x20);
    /// Command Interrupted.
    COMMAND_INTERRUPTED = (GENERIC, 0x21);
    /// Transient Transport Error.
    TRANSIENT_TRANSPORT_ERROR = (GENERIC, 0x22);
    /// LBA Out of Range.
    LBA_OUT_OF_RANGE = (GENERIC, 0x80);
    /// Capacity Exceeded.
    CAPACITY_EXCEEDED = (GENERIC, 0x81);
    /// Namespace Not Ready.
    NAMESPACE_NOT_READY = (GENERIC, 0x82);
    /// Reservation Conflict.
    RESERVATION_CONFLICT = (GENERIC, 0x83);

    /// Completion Queue Invalid.
    COMPLETION_QUEUE_INVALID = (COMMAND_SPECIFIC, 0x00);
    /// Invalid Queue Identifier.
    INVALID_QUEUE_IDENTIFIER = (COMMAND_SPECIFIC, 0x01);
    /// Invalid Queue Size.
    INVALID_QUEUE_SIZE = (COMMAND_SPECIFIC, 0x02);
    /// Abort Command Limit Exceeded.
    ABORT_COMMAND_LIMIT_EXCEEDED = (COMMAND_SPECIFIC, 0x03);
    /// Asynchronous Event Request Limit Exceeded.
    ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED = (COMMAND_SPECIFIC, 0x05);
    /// Invalid Log Page.
    INVALID_LOG_PAGE = (COMMAND_SPECIFIC, 0x09);
    /// Invalid Format.
    INVALID_FORMAT = (COMMAND_SPECIFIC, 0x0A);
    /// Feature Identifier Not Saveable.
    FEATURE_NOT_SAVEABLE = (COMMAND_SPECIFIC, 0x0D);
    /// Feature Not Changeable.
    FEATURE_NOT_CHANGEABLE = (COMMAND_SPECIFIC, 0x0E);
    /// Feature Not Namespace Specific.
    FEATURE_NOT_NAMESPACE_SPECIFIC = (COMMAND_SPECIFIC, 0x0F);
    /// NVM commands: Conflicting Attributes.
    CONFLICTING_ATTRIBUTES = (COMMAND_SPECIFIC, 0x80);
    /// NVM commands: Invalid Protection Information.
    INVALID_PROTECTION_INFORMATION = (COMMAND_SPECIFIC, 0x81);
    /// NVM commands: Attempted Write to Read Only Range.
    WRITE_TO_READ_ONLY_RANGE = (COMMAND_SPECIFIC, 0x82);
    /// Fabrics Connect: Incompatible Format.
    CONNECT_INCOMPATIBLE_FORMAT = (COMMAND_SPECIFIC, 0x80);
    /// Fabrics Connect: Controller Busy.
    CONNECT_CONTROLLER_BUSY = (COMMAND_SPECIFIC, 0x81);
    /// Fabrics Connect: Connect Invalid Parameters.
    CONNECT_INVALID_PARAMETERS = (COMMAND_SPECIFIC, 0x82);
    /// Fabrics Connect: Connect Restart Discovery.
    CONNECT_RESTART_DISCOVERY = (COMMAND_SPECIFIC, 0x83);
    /// Fabrics Connect: Connect Invalid Host.
    CONNECT_INVALID_HOST = (COMMAND_SPECIFIC, 0x84);

    /// Write Fault.
    WRITE_FAULT = (MEDIA_AND_DATA_INTEGRITY, 0x80);
    /// Unrecovered Read Error.
    UNRECOVERED_READ_ERROR = (MEDIA_AND_DATA_INTEGRITY, 0x81);
    /// Compare Failure.
    COMPARE_FAILURE = (MEDIA_AND_DATA_INTEGRITY, 0x85);
    /// Access Denied.
    ACCESS_DENIED = (MEDIA_AND_DATA_INTEGRITY, 0x86);
    /// Deallocated or Unwritten Logical Block.
    DEALLOCATED_OR_UNWRITTEN_BLOCK = (MEDIA_AND_DATA_INTEGRITY, 0x87);

    /// Internal Path Error.
    INTERNAL_PATH_ERROR = (PATH, 0x00);
    /// Asymmetric Access Inaccessible.
    ANA_INACCESSIBLE = (PATH, 0x02);
    /// Asymmetric Access Transition.
    ANA_TRANSITION = (PATH, 0x03);
    /// Controller Pathing Error.
    CONTROLLER_PATHING_ERROR = (PATH, 0x60);
    /// Host Pathing Error.
    HOST_PATHING_ERROR = (PATH, 0x70);
    /// Command Aborted By Host.
    ABORTED_BY_HOST = (PATH, 0x71);
}

impl Status {
    /// A status with the given type and code; More, DNR and CRD clear.
    pub const fn new(code_type: StatusCodeType, code: u8) -> Self {
        Self {
            code_type,
            code,
            retry_delay: 0,
            more: false,
            do_not_retry: false,
        }
    }

    /// The same status with Do Not Retry set.
    pub const fn with_dnr(mut self) -> Self {
        self.do_not_retry = true;
        self
    }

    /// The same status with More set.
    pub const fn with_more(mut self) -> Self {
        self.more = true;
        self
    }

    /// Whether this is Successful Completion.
    pub const fn is_success(&self) -> bool {
        self.code_type.0 == 0 && self.code == 0
    }

    /// Whether type and code match `other`, ignoring DNR, More and CRD.
    pub const fn same_code(&self, other: Status) -> bool {
        self.code_type.0 == other.code_type.0 && self.code == other.code
    }

    /// The 16-bit status field with the phase tag bit clear.
    pub const fn to_field(&self) -> u16 {
        ((self.code as u16) << 1)
            | (((self.code_type.0 & 0x7) as u16) << 9)
            | (((self.retry_delay & 0x3) as u16) << 12)
            | ((self.more as u16) << 14)
            | ((self.do_not_retry as u16) << 15)
    }

    /// Decodes the 16-bit status field, ignoring the phase tag bit.
    pub const fn from_field(field: u16) -> Self {
        Self {
            code: (field >> 1) as u8,
            code_type: StatusCodeType(((field >> 9) & 0x7) as u8),
            retry_delay: ((field >> 12) & 0x3) as u8,
            more: field & (1 << 14) != 0,
            do_not_retry: field & (1 << 15) != 0,
        }
    }
}

/// A completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Completion {
    /// Command specific result (e.g. the controller ID for Connect).
    pub dw0: u32,
    /// Command specific result, upper half for 8-byte results.
    pub dw1: u32,
    /// Submission queue head pointer.
    pub sq_head: u16,
    /// Submission queue identifier.
    pub sq_id: u16,
    /// Command identifier of the completed command.
    pub cid: u16,
    /// Status field.
    pub status: Status,
    /// Phase tag (bit 0 of the status halfword); unused over Fabrics.
    pub phase: bool,
}

impl Completion {
    /// A completion for `cid` with `status`, everything else zero.
    pub const fn new(cid: u16, status: Status) -> Self {
        Self {
            dw0: 0,
            dw1: 0,
            sq_head: 0,
            sq_id: 0,
            cid,
            status,
            phase: false,
        }
    }

    /// A completion carrying a 64-bit result in DW1:DW0 (Property Get).
    pub const fn with_result_u64(mut self, value: u64) -> Self {
        self.dw0 = value as u32;
        self.dw1 = (value >> 32) as u32;
        self
    }

    /// The 64-bit result DW1:DW0.
    pub const fn result_u64(&self) -> u64 {
        (self.dw0 as u64) | ((self.dw1 as u64) << 32)
    }

    /// Decodes the first 16 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, LengthError> {
        fixed::<COMPLETION_LEN>(bytes).map(Self::from_bytes)
    }

    /// Decodes a CQE.
    pub fn from_bytes(bytes: &[u8; COMPLETION_LEN]) -> Self {
        let status_field = u16_at(bytes, 14);
        Self {
            dw0: u32_at(bytes, 0),
            dw1: u32_at(bytes, 4),
            sq_head: u16_at(bytes, 8),
            sq_id: u16_at(bytes, 10),
            cid: u16_at(bytes, 12),
            status: Status::from_field(status_field),
            phase: status_field & 1 != 0,
        }
    }

    /// Encodes the CQE.
    pub fn encode(&self) -> [u8; COMPLETION_LEN] {
        let mut bytes = [0; COMPLETION_LEN];
        put_u32(&mut bytes, 0, self.dw0);
        put_u32(&mut bytes, 4, self.dw1);
        put_u16(&mut bytes, 8, self.sq_head);
        put_u16(&mut bytes, 10, self.sq_id);
        put_u16(&mut bytes, 12, self.cid);
        put_u16(
            &mut bytes,
            14,
            self.status.to_field() | u16::from(self.phase),
        );
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_field_layout() {
        // Linux: NVME_SC_INVALID_FIELD = 0x2, shifted left by one in the CQE.
        assert_eq!(Status::INVALID_FIELD.to_field(), 0x0004);
        assert_eq!(Status::INVALID_FIELD.with_dnr().to_field(), 0x8004);
        // Command specific 0x82 = Linux NVME_SC_CONNECT_INVALID_PARAM (0x182) << 1.
        assert_eq!(Status::CONNECT_INVALID_PARAMETERS.to_field(), 0x182 << 1);
        // Media 0x85 = Linux NVME_SC_COMPARE_FAILED (0x285) << 1.
        assert_eq!(Status::COMPARE_FAILURE.to_field(), 0x285 << 1);
        assert_eq!(Status::HOST_PATHING_ERROR.to_field(), 0x370 << 1);
        assert_eq!(Status::SUCCESS.with_more().to_field(), 1 << 14);
    }

    #[test]
    fn status_field_round_trips() {
        for field in (0..=u16::MAX).step_by(7) {
            let status = Status::from_field(field);
            assert_eq!(status.to_field(), field & !1);
        }
        assert!(Status::SUCCESS.is_success());
        assert!(!Status::INVALID_OPCODE.is_success());
        assert!(Status::INVALID_FIELD
            .with_dnr()
            .same_code(Status::INVALID_FIELD));
    }

    #[test]
    fn completion_layout() {
        let cqe = Completion {
            dw0: 0x1122_3344,
            dw1: 0x5566_7788,
            sq_head: 0x0102,
            sq_id: 0x0304,
            cid: 0x0506,
            status: Status::LBA_OUT_OF_RANGE.with_dnr(),
            phase: true,
        };
        let bytes = cqe.encode();
        assert_eq!(
            bytes,
            [
                0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55, 0x02, 0x01, 0x04, 0x03, 0x06, 0x05,
                0x01, 0x81
            ]
        );
        assert_eq!(Completion::from_bytes(&bytes), cqe);
        assert_eq!(Completion::parse(&bytes[..15]).unwrap_err().needed, 16);
        assert_eq!(
            Completion::new(1, Status::SUCCESS)
                .with_result_u64(0x1_0000_0002)
                .result_u64(),
            0x1_0000_0002
        );
    }
}
