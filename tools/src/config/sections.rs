//! The subsystems `save_config` writes, in dependency order, and who writes each.
//!
//! To make another layer part of the saved config, add a [`ConfigSection`] here: the nvmf
//! target appends `ConfigSection { subsystem: "nvmf", calls: nvmf::config_calls }` after the
//! bdev entries, since namespaces refer to bdevs. Several sections may name the same subsystem;
//! their calls are concatenated, in table order, into one subsystem entry. Bdevs stacked by
//! other modules (RAID, replication) need no section of their own: their `Bdev::config_call`
//! puts them in the registry's creation order.

use oxstor_bdev::registry;
use serde_json::{json, Value};

/// One contributor to `save_config`: the subsystem it belongs to and its calls.
pub struct ConfigSection {
    pub subsystem: &'static str,
    /// Returns `{"method": .., "params": ..}` objects in the order they must be replayed.
    pub calls: fn() -> Vec<Value>,
}

pub const SECTIONS: &[ConfigSection] = &[
    // Global options first, as SPDK writes them: they apply to what is created after.
    ConfigSection {
        subsystem: "bdev",
        calls: raid_options,
    },
    ConfigSection {
        subsystem: "bdev",
        calls: bdev_calls,
    },
    // Must stay the last bdev section: SPDK configs end the bdev subsystem with it.
    ConfigSection {
        subsystem: "bdev",
        calls: bdev_examine_barrier,
    },
    // Namespaces refer to bdevs, so the target comes after them.
    ConfigSection {
        subsystem: "nvmf",
        calls: crate::rpc::nvmf::config_calls,
    },
];

/// Every registered bdev's create call, in creation order (bases before what stacks on them).
fn bdev_calls() -> Vec<Value> {
    registry::list()
        .iter()
        .filter_map(|e| e.bdev.config_call())
        .map(|c| json!({ "method": c.method, "params": c.params }))
        .collect()
}

/// `bdev_raid_set_options` when the RAID options differ from their defaults (SPDK always
/// writes it; a default config stays as short as before).
fn raid_options() -> Vec<Value> {
    use oxstor_raid::rebuild;
    let current = rebuild::options();
    let defaults = json!({
        "process_window_size_kb": rebuild::DEFAULT_WINDOW_KB,
        "process_max_bandwidth_mb_sec": 0,
        "process_queue_depth": rebuild::MAX_WINDOWS_IN_FLIGHT,
        "start_dirty_degraded": false,
    });
    if current == defaults {
        return Vec::new();
    }
    vec![json!({ "method": "bdev_raid_set_options", "params": current })]
}

fn bdev_examine_barrier() -> Vec<Value> {
    vec![json!({ "method": "bdev_wait_for_examine" })]
}
