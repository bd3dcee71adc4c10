//! oxstor-nvme: NVMe spec types, the NVMe/TCP PDU codec, target and host.
//!
//! The crate is layered like a network stack, bottom up:
//!
//! * [`spec`]: the NVMe Base 2.0 and NVMe over Fabrics 1.1 data structures
//!   (submission and completion queue entries, Fabrics commands, Identify
//!   data, log pages, controller properties, NQNs). Pure data: no I/O, no
//!   allocation on the hot path.
//! * [`pdu`]: the NVMe/TCP 1.0 PDU codec. It tells a transport how many bytes
//!   to read next, validates headers (reporting the Fatal Error Status and
//!   Fatal Error Information a C2HTermReq / H2CTermReq must carry), and
//!   encodes headers into caller-owned buffers. Payload bytes never pass
//!   through the codec: it only says where they are.
//!
//! Every parser here accepts arbitrary bytes without panicking; see
//! `tests/no_panic.rs`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bytes;
#[allow(missing_docs)]
pub mod host;
pub mod pdu;
pub mod spec;
mod staging;
#[allow(missing_docs)]
pub mod target;
