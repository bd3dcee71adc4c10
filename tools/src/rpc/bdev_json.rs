//! A bdev as SPDK's `bdev_get_bdevs` describes it, so SPDK tooling can read our answers.

use oxstor_bdev::{BdevEntry, IoType};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Our "ticks" are nanoseconds.
pub const TICK_RATE: u64 = 1_000_000_000;

/// I/O types SPDK lists that no oxstor bdev implements yet; reported `false` so the key set
/// matches what SPDK clients expect.
const UNSUPPORTED_SPDK_IO_TYPES: &[&str] = &[
    "compare_and_write",
    "abort",
    "seek_hole",
    "seek_data",
    "copy",
    "nvme_admin",
    "nvme_io",
    "nvme_io_md",
    "zcopy",
    "get_zone_info",
    "zone_management",
    "zone_append",
];

pub fn describe(entry: &Arc<BdevEntry>) -> Value {
    let b = &entry.bdev;
    let g = b.geometry();
    let mut io_types = Map::new();
    for t in IoType::ALL {
        io_types.insert(t.name().into(), Value::Bool(b.io_type_supported(t)));
    }
    for name in UNSUPPORTED_SPDK_IO_TYPES {
        io_types.insert((*name).into(), Value::Bool(false));
    }
    let info = match b.driver_info() {
        Value::Null => json!({}),
        v => v,
    };
    let mut out = json!({
        "name": b.name(),
        "aliases": [],
        "product_name": b.product_name(),
        "block_size": g.block_size,
        "num_blocks": g.num_blocks,
        "uuid": b.uuid(),
        "assigned_rate_limits": {
            "rw_ios_per_sec": 0,
            "rw_mbytes_per_sec": 0,
            "r_mbytes_per_sec": 0,
            "w_mbytes_per_sec": 0,
        },
        "claimed": false,
        "zoned": false,
        "supported_io_types": io_types,
        "driver_specific": { b.module(): info },
    });
    if let Value::Object(o) = &mut out {
        if let Some(holder) = entry.claimed_by() {
            o.insert("claimed".into(), Value::Bool(true));
            // SPDK only names the claim type when there is a claim; ours are all exclusive.
            o.insert("claim_type".into(), json!("exclusive_write"));
            o.insert("claimed_by".into(), json!(holder));
        }
        if g.optimal_io_boundary != 0 {
            o.insert("optimal_io_boundary".into(), json!(g.optimal_io_boundary));
        }
        if g.write_unit_size > 1 {
            o.insert("write_unit_size".into(), json!(g.write_unit_size));
        }
    }
    out
}
