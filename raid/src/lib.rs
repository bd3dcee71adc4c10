//! oxstor-raid: RAID bdevs in the manner of Linux md.
//!
//! Pure layers (no I/O, unit-tested and fuzzable): [`layout`] maps array blocks to member
//! blocks per level, [`parity`] computes and recovers RAID5/RAID6 parity, [`superblock`] and
//! [`bitmap`] are the on-disk formats. The I/O layers: [`bdev`] is the RAID bdev itself and
//! [`rpc`] its bdev_raid_* methods.

pub mod bitmap;
pub mod layout;
pub mod parity;
pub mod superblock;

pub mod bdev;
pub mod intent;
pub mod persist;
pub mod rebuild;
pub mod rpc;
pub mod scrub;
pub mod stripe;
