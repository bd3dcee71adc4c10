//! What every RPC handler may reach besides the bdev registry (which is global).

use crate::shutdown::Shutdown;
use oxstor_reactor::Handle;
use std::sync::Arc;

/// Shared by all connection threads and the config loader.
#[derive(Clone)]
pub struct Context {
    /// The running reactors (for framework_get_reactors and per-core queries).
    pub runtime: Handle,
    /// Tripped by `spdk_kill_instance`.
    pub shutdown: Arc<Shutdown>,
}
