//! What every RAID test binary shares: one reactor runtime (the bdev registry is
//! process-wide) and a lock for tests that touch global state.

#![allow(dead_code)]

use oxstor_bdev::registry;
use oxstor_reactor::{CoreMask, Handle, Runtime, RuntimeConfig};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// One runtime on cores 0 and 1 for the whole test binary.
pub fn rt() -> Handle {
    static RT: OnceLock<Mutex<Runtime>> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        let rt = Runtime::start(RuntimeConfig {
            cores: CoreMask::from_cores(vec![0, 1]).unwrap(),
            ..Default::default()
        })
        .unwrap();
        registry::set_runtime(Some(rt.handle()));
        Mutex::new(rt)
    });
    rt.lock().unwrap().handle()
}

/// Rebuild options, examine state and the like are global: such tests run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `bdev_raid_get_bdevs` entry of array `name` (Null if there is none).
pub fn raid_info(name: &str) -> serde_json::Value {
    let params = serde_json::from_value(serde_json::json!({"category": "all"})).unwrap();
    let all = oxstor_raid::rpc::get_bdevs(params).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

pub fn mk_malloc(name: &str, blocks: u64, block_size: u32) {
    let params = serde_json::json!({"name": name, "num_blocks": blocks, "block_size": block_size});
    oxstor_bdev::malloc::create(serde_json::from_value(params).unwrap()).unwrap();
}

pub fn mk_uring(name: &str, path: &std::path::Path, block_size: u32) {
    let params = serde_json::json!({"name": name, "filename": path.to_str().unwrap(),
                                    "block_size": block_size});
    oxstor_bdev::uring::create(serde_json::from_value(params).unwrap()).unwrap();
}
