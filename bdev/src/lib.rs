//! oxstor-bdev: block devices that stack.
//!
//! A bdev module implements the small [`Bdev`] trait (SPDK's function table): geometry, which
//! I/O types it supports, how to make a per-core [`BdevChannel`], and the RPC call that
//! recreates it. Everything generic lives here, once, for every module:
//!
//! - the [`registry`]: names, creation order (for `save_config`), exclusive claims;
//! - [`IoChannel`]: one per (bdev, core); validates, splits on the optimal boundary and the
//!   maximum transfer size, and keeps iostat;
//! - [`BdevIo`]: the I/O descriptor. Completion is a stack of frames, so a stacked bdev
//!   (delay over error over uring) forwards the *same* descriptor down and gets it back on the
//!   way up: no allocation per I/O per layer.
//!
//! Base bdevs: [`malloc`], [`null`], [`uring`]; test bdevs: [`delay`], [`error`].

pub mod blocking;
mod channel;
mod defer;
mod error_type;
mod io;
mod iobuf;
pub mod iostat;
pub mod registry;
mod traits;

pub mod delay;
pub mod error;
pub mod malloc;
pub mod null;
pub mod uring;

pub use channel::IoChannel;
pub use defer::complete_later;
pub use error_type::BdevError;
pub use io::{BdevIo, IoDone, IoStatus, IoType};
pub use iobuf::IoBuf;
pub use registry::{BdevEntry, ClaimGuard};
pub use traits::{Bdev, BdevChannel, ConfigCall, Geometry};

/// Generates a random RFC 4122 version-4 UUID string (for bdevs created without one).
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b.copy_from_slice(&t.to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

/// Checks a UUID string's shape (8-4-4-4-12 hex digits).
pub fn is_valid_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(&n, p)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}
