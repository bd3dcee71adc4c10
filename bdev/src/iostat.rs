//! Per-bdev, per-core I/O statistics: ops, bytes and latency sum/min/max per I/O type.
//!
//! Each core counts in its own cells (no atomics on the I/O path); `bdev_get_iostat` sums the
//! cores with a message to each.

use crate::io::{BdevIo, IoType};
use oxstor_reactor::clock;
use serde::Serialize;
use std::cell::Cell;

#[derive(Default)]
struct TypeStat {
    ops: Cell<u64>,
    bytes: Cell<u64>,
    lat_sum: Cell<u64>,
    lat_min: Cell<u64>,
    lat_max: Cell<u64>,
}

pub struct IoStat {
    block_size: u64,
    types: [TypeStat; 7],
    errors: Cell<u64>,
}

fn slot(t: IoType) -> usize {
    match t {
        IoType::Read => 0,
        IoType::Write => 1,
        IoType::Flush => 2,
        IoType::Unmap => 3,
        IoType::WriteZeroes => 4,
        IoType::Reset => 5,
        IoType::Compare => 6,
    }
}

impl IoStat {
    pub fn new(block_size: u32) -> IoStat {
        IoStat {
            block_size: block_size as u64,
            types: Default::default(),
            errors: Cell::new(0),
        }
    }

    /// Counts one completed I/O. Latencies stay in raw ticks here (no conversion per I/O);
    /// [`snapshot`](Self::snapshot) turns them into nanoseconds.
    #[inline]
    pub(crate) fn record(&self, io: &BdevIo, start_ticks: u64, now_ticks: u64) {
        if !io.status.is_success() {
            self.errors.set(self.errors.get() + 1);
            return;
        }
        let s = &self.types[slot(io.io_type)];
        let lat = now_ticks.saturating_sub(start_ticks);
        s.ops.set(s.ops.get() + 1);
        s.bytes.set(s.bytes.get() + io.num_blocks * self.block_size);
        s.lat_sum.set(s.lat_sum.get() + lat);
        if s.lat_min.get() == 0 || lat < s.lat_min.get() {
            s.lat_min.set(lat);
        }
        if lat > s.lat_max.get() {
            s.lat_max.set(lat);
        }
    }

    pub fn snapshot(&self) -> IoStatSnapshot {
        let get = |t: IoType| {
            let s = &self.types[slot(t)];
            let ns = |ticks: u64| clock::ticks_to_ns(0, ticks);
            TypeSnapshot {
                ops: s.ops.get(),
                bytes: s.bytes.get(),
                lat_sum_ns: ns(s.lat_sum.get()),
                lat_min_ns: ns(s.lat_min.get()),
                lat_max_ns: ns(s.lat_max.get()),
            }
        };
        IoStatSnapshot {
            read: get(IoType::Read),
            write: get(IoType::Write),
            unmap: get(IoType::Unmap),
            flush: get(IoType::Flush),
            write_zeroes: get(IoType::WriteZeroes),
            reset: get(IoType::Reset),
            compare: get(IoType::Compare),
            errors: self.errors.get(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TypeSnapshot {
    pub ops: u64,
    pub bytes: u64,
    pub lat_sum_ns: u64,
    pub lat_min_ns: u64,
    pub lat_max_ns: u64,
}

impl TypeSnapshot {
    fn merge(&mut self, o: &TypeSnapshot) {
        self.ops += o.ops;
        self.bytes += o.bytes;
        self.lat_sum_ns += o.lat_sum_ns;
        if o.lat_min_ns != 0 && (self.lat_min_ns == 0 || o.lat_min_ns < self.lat_min_ns) {
            self.lat_min_ns = o.lat_min_ns;
        }
        self.lat_max_ns = self.lat_max_ns.max(o.lat_max_ns);
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct IoStatSnapshot {
    pub read: TypeSnapshot,
    pub write: TypeSnapshot,
    pub unmap: TypeSnapshot,
    pub flush: TypeSnapshot,
    pub write_zeroes: TypeSnapshot,
    pub reset: TypeSnapshot,
    pub compare: TypeSnapshot,
    pub errors: u64,
}

impl IoStatSnapshot {
    pub fn merge(&mut self, o: &IoStatSnapshot) {
        self.read.merge(&o.read);
        self.write.merge(&o.write);
        self.unmap.merge(&o.unmap);
        self.flush.merge(&o.flush);
        self.write_zeroes.merge(&o.write_zeroes);
        self.reset.merge(&o.reset);
        self.compare.merge(&o.compare);
        self.errors += o.errors;
    }

    /// SPDK's `bdev_get_iostat` entry for one bdev (ticks are nanoseconds: tick_rate 1e9).
    pub fn to_spdk_json(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "bytes_read": self.read.bytes,
            "num_read_ops": self.read.ops,
            "bytes_written": self.write.bytes,
            "num_write_ops": self.write.ops,
            "bytes_unmapped": self.unmap.bytes,
            "num_unmap_ops": self.unmap.ops,
            "bytes_copied": 0,
            "num_copy_ops": 0,
            "read_latency_ticks": self.read.lat_sum_ns,
            "max_read_latency_ticks": self.read.lat_max_ns,
            "min_read_latency_ticks": self.read.lat_min_ns,
            "write_latency_ticks": self.write.lat_sum_ns,
            "max_write_latency_ticks": self.write.lat_max_ns,
            "min_write_latency_ticks": self.write.lat_min_ns,
            "unmap_latency_ticks": self.unmap.lat_sum_ns,
            "max_unmap_latency_ticks": self.unmap.lat_max_ns,
            "min_unmap_latency_ticks": self.unmap.lat_min_ns,
            "num_flush_ops": self.flush.ops,
            "flush_latency_ticks": self.flush.lat_sum_ns,
            "num_write_zeroes_ops": self.write_zeroes.ops,
            "bytes_write_zeroed": self.write_zeroes.bytes,
            "write_zeroes_latency_ticks": self.write_zeroes.lat_sum_ns,
            "num_reset_ops": self.reset.ops,
            "num_compare_ops": self.compare.ops,
            "io_error": self.errors,
        })
    }
}
