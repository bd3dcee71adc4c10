//! NVMe spec types: the data structures of NVMe Base 2.0 and NVMe over
//! Fabrics 1.1 that a Fabrics target and host exchange.
//!
//! This layer knows byte layouts and field meanings, nothing about queues,
//! sockets or state machines. Structures come in two shapes:
//!
//! * views over borrowed bytes for what is received ([`Command`],
//!   [`ConnectData`]), which check the length once at construction and then
//!   read fields straight from the buffer;
//! * plain structs with an `encode` method for what is built and sent
//!   (Identify data, log pages, [`Completion`]), which fill a caller-visible
//!   byte array with every reserved byte zeroed.
//!
//! Field offsets follow the NVMe Base Specification 2.0 and agree with
//! Linux's `include/linux/nvme.h`, which is what the Linux host reads; the
//! unit tests pin every offset that host reads.

pub mod command;
pub mod completion;
pub mod fabrics;
pub mod identify;
pub mod log;
pub mod nqn;
pub mod opcodes;
pub mod registers;

pub use command::{Command, CommandBuilder, GetLogPage, SglDescriptor, SglKind};
pub use completion::{Completion, Status, StatusCodeType};
pub use fabrics::{Connect, ConnectData, ConnectDataFields, PropertyGet, PropertySet};
pub use nqn::{fixed_field_str, validate_nqn, NqnError, DISCOVERY_NQN};

/// A buffer was too short for the fixed-size structure it should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{actual}-byte buffer is shorter than the {needed}-byte structure")]
pub struct LengthError {
    /// Bytes the structure occupies.
    pub needed: usize,
    /// Bytes the buffer had.
    pub actual: usize,
}

/// Borrows the first `N` bytes of `bytes` as an array, or says how short it is.
pub(crate) fn fixed<const N: usize>(bytes: &[u8]) -> Result<&[u8; N], LengthError> {
    bytes.first_chunk::<N>().ok_or(LengthError {
        needed: N,
        actual: bytes.len(),
    })
}
