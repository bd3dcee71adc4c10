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
