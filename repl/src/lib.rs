//! oxstor-repl: a replication bdev in the manner of DRBD 9.
//!
//! Pure layers (no I/O, unit-tested and fuzzable): [`config`] reads resource files in drbd.conf
//! syntax and resolves them like drbdadm's post_parse; [`wire`] is the packet codec; [`meta`]
//! is the on-disk metadata (superblock with generation UUIDs, per-peer bitmaps, activity log)
//! and the generation-UUID comparison that picks a resync direction.
//!
//! The runtime: a [`resource`] lives on one reactor (its home core) with its [`volume`] (the
//! backing bdev and its metadata) and its peers. [`connect`] establishes connections on
//! control threads and hands them to the home core, where [`adopt`] decides the resync
//! direction and a [`link`] carries the two streams. [`write`] is the Primary's write path,
//! [`apply`] the receiving side, [`resync`] resync and online verify, [`device`] the bdev
//! hosts see, and [`rpc`] the repl_* methods `oxadm` calls.

pub mod config;
pub mod meta;
pub mod wire;

pub mod adopt;
pub mod apply;
pub mod connect;
pub mod device;
pub mod link;
pub mod options;
pub mod resource;
pub mod resync;
pub mod rpc;
pub mod state;
pub mod volume;
mod write;
