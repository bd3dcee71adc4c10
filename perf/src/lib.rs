//! oxstor-perf: the `oxperf` load generator, bdevperf-style.
//!
//! The pieces are independent so an NVMe/TCP initiator job can reuse all of them:
//!
//! - [`config`]: replays SPDK JSON config files (the bdev create calls) in-process, through a
//!   method table (`apply(method, params)`) that RAID / NVMe methods can join later;
//! - [`workload`]: workload kinds, the read/write mix and the offset generators;
//! - [`verify`]: the self-describing block format (LBA, generation, crc32c) and its checker;
//! - [`engine`]: per-core, completion-driven jobs that keep `-q` I/Os in flight against any
//!   bdev, recording per-I/O latency into per-job hdrhistograms;
//! - [`stats`]: job results, merging and the percentile summary;
//! - [`output`]: bdevperf-style text and the JSON schema of DESIGN.md;
//! - [`net`]: `oxperf net`, loopback TCP round-trip and single-stream baselines (std::net);
//! - [`run`]: the whole `oxperf bdev` flow (runtime, config, jobs, teardown) as a function,
//!   used by the binary and by `cargo bench`.
//!
//! The NVMe/TCP host is planned as an ordinary bdev, so `oxperf nvme` will create that bdev
//! (one more entry in the config method table) and run the same engine on it.

pub mod config;
pub mod engine;
pub mod net;
pub mod output;
pub mod run;
pub mod size;
pub mod stats;
pub mod verify;
pub mod workload;

/// Everything that can go wrong in oxperf, as a message meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// Bad command-line arguments or config contents (exit code 2 in the binary).
    #[error("{0}")]
    Usage(String),
    /// A failure while running (exit code 1).
    #[error("{0}")]
    Run(String),
}

impl PerfError {
    pub fn usage(msg: impl Into<String>) -> PerfError {
        PerfError::Usage(msg.into())
    }
    pub fn run(msg: impl Into<String>) -> PerfError {
        PerfError::Run(msg.into())
    }
}
