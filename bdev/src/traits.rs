//! The module interface: what a bdev must tell the generic layer, and nothing more.

use crate::io::{BdevIo, IoType};
use crate::BdevError;

/// Geometry the generic layer honours on every I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub block_size: u32,
    pub num_blocks: u64,
    /// Split I/O so no child crosses a multiple of this many blocks (0: no boundary).
    pub optimal_io_boundary: u32,
    /// Writes must be a multiple of this many blocks (1 for most bdevs).
    pub write_unit_size: u32,
    /// Largest transfer the module accepts in one I/O, in blocks (0: the layer's default).
    pub max_transfer_blocks: u32,
}

impl Geometry {
    pub fn new(block_size: u32, num_blocks: u64) -> Geometry {
        Geometry {
            block_size,
            num_blocks,
            optimal_io_boundary: 0,
            write_unit_size: 1,
            max_transfer_blocks: 0,
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.num_blocks * self.block_size as u64
    }
}

/// One JSON-RPC call that recreates a bdev: what `save_config` writes.
#[derive(Debug, Clone)]
pub struct ConfigCall {
    pub method: &'static str,
    pub params: serde_json::Value,
}

/// A block device module's function table.
pub trait Bdev: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn uuid(&self) -> &str;
    /// The module name ("malloc", "null", ...), also the key of `driver_specific`.
    fn module(&self) -> &'static str;
    fn product_name(&self) -> &'static str;
    fn geometry(&self) -> Geometry;
    fn io_type_supported(&self, io_type: IoType) -> bool;
    /// Creates this core's channel. Called on the reactor thread that will use it.
    fn create_channel(&self) -> Result<Box<dyn BdevChannel>, BdevError>;
    /// The RPC that recreates this bdev, or None if it is created implicitly.
    fn config_call(&self) -> Option<ConfigCall>;
    /// Whether writes are accepted now. A replicated volume in the Secondary role is not
    /// writable; exporters report that to hosts (NVMe: namespace write protected).
    fn writable(&self) -> bool {
        true
    }
    fn driver_info(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Called once after the bdev left the registry and every core dropped its channel:
    /// flush, close, release claims.
    fn destroy(&self) {}
}

/// A bdev's per-core state. It lives and dies on one reactor thread.
///
/// `submit` must not complete the I/O before returning (use [`crate::complete_later`] for
/// immediate answers): the caller may be in the middle of its own completion handling.
pub trait BdevChannel {
    fn submit(&self, io: Box<BdevIo>);
}
