//! The delay bdev: passes I/O to a base bdev and holds each completion for a configured
//! latency: the average for 99% of I/Os, the p99 figure for the rest. For testing how the
//! stack behaves over slow or jittery devices.

use crate::io::{BdevIo, IoDone, IoType};
use crate::null::resolve_uuid;
use crate::traits::{Bdev, BdevChannel, ConfigCall, Geometry};
use crate::{registry, BdevError, ClaimGuard, IoChannel};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `bdev_delay_create` parameters (SPDK's names; latencies in microseconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayParams {
    pub base_bdev_name: String,
    pub name: String,
    pub avg_read_latency: u64,
    pub p99_read_latency: u64,
    pub avg_write_latency: u64,
    pub p99_write_latency: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

pub struct DelayBdev {
    params: DelayParams,
    uuid: String,
    geometry: Geometry,
    supported: [bool; 7],
    base: Mutex<Option<ClaimGuard>>,
}

pub fn create(mut params: DelayParams) -> Result<String, BdevError> {
    if params.p99_read_latency < params.avg_read_latency
        || params.p99_write_latency < params.avg_write_latency
    {
        return Err(BdevError::Invalid(
            "p99 latency must not be below the average".into(),
        ));
    }
    if registry::lookup(&params.name).is_ok() {
        return Err(BdevError::Exists(params.name));
    }
    let guard = registry::claim(&params.base_bdev_name, "delay")?;
    let base = guard.entry().bdev.clone();
    let uuid = resolve_uuid(&params.uuid)?;
    params.uuid = Some(uuid.clone());
    let name = params.name.clone();
    registry::register(Arc::new(DelayBdev {
        params,
        uuid,
        geometry: base.geometry(),
        supported: IoType::ALL.map(|t| base.io_type_supported(t)),
        base: Mutex::new(Some(guard)),
    }))?;
    Ok(name)
}

pub fn delete(name: &str) -> Result<(), BdevError> {
    registry::unregister(name, Some("delay"))
}

impl Bdev for DelayBdev {
    fn name(&self) -> &str {
        &self.params.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn module(&self) -> &'static str {
        "delay"
    }
    fn product_name(&self) -> &'static str {
        "delay"
    }
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn io_type_supported(&self, t: IoType) -> bool {
        self.supported[t as usize]
    }
    fn create_channel(&self) -> Result<Box<dyn BdevChannel>, BdevError> {
        let base = {
            let guard = self.base.lock().unwrap_or_else(|p| p.into_inner());
            let entry = guard
                .as_ref()
                .ok_or_else(|| BdevError::NotFound(self.params.base_bdev_name.clone()))?;
            entry.entry().channel()?
        };
        let us = 1000;
        let p = &self.params;
        let state = Rc::new(DelayState {
            base,
            latency_ns: [
                p.avg_read_latency * us,
                p.p99_read_latency * us,
                p.avg_write_latency * us,
                p.p99_write_latency * us,
            ],
            rng: Cell::new(0x9e37_79b9_7f4a_7c15),
        });
        Ok(Box::new(DelayChannel { state }))
    }
    fn config_call(&self) -> Option<ConfigCall> {
        Some(ConfigCall {
            method: "bdev_delay_create",
            params: serde_json::to_value(&self.params).unwrap_or_default(),
        })
    }
    fn driver_info(&self) -> serde_json::Value {
        serde_json::json!({ "base_bdev_name": self.params.base_bdev_name })
    }
    fn destroy(&self) {
        self.base.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

struct DelayState {
    base: Rc<IoChannel>,
    latency_ns: [u64; 4],
    rng: Cell<u64>,
}

impl DelayState {
    fn one_in_a_hundred(&self) -> bool {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x.is_multiple_of(100)
    }
}

impl IoDone for DelayState {
    fn io_done(&self, io: Box<BdevIo>, _tag: u64) {
        let class = match io.io_type {
            IoType::Read => 0,
            _ => 2,
        } + usize::from(self.one_in_a_hundred());
        // A reactor timer (not a poller) holds the I/O, so an idle reactor can still sleep
        // until the deadline instead of spinning on it.
        oxstor_reactor::schedule_after(Duration::from_nanos(self.latency_ns[class]), move || {
            let status = io.status;
            io.complete(status);
        });
    }
}

struct DelayChannel {
    state: Rc<DelayState>,
}

impl BdevChannel for DelayChannel {
    fn submit(&self, io: Box<BdevIo>) {
        self.state.base.submit(io, self.state.clone(), 0);
    }
}
