//! The `oxperf bdev` flow as a library call: start reactors, replay the config, pick the
//! jobs, run them, tear everything down. The binary and `cargo bench` both use it.

use crate::config::{self, Call};
use crate::engine::{self, JobSpec, RunOptions};
use crate::stats::JobResult;
use crate::PerfError;
use oxstor_bdev::registry;
use oxstor_reactor::{CoreMask, Runtime, RuntimeConfig};

/// Everything one `oxperf bdev` run needs.
#[derive(Debug, Clone)]
pub struct BdevRun {
    /// Config calls to replay (bdev creation, error injection).
    pub config: Vec<Call>,
    pub cores: CoreMask,
    /// Idle back-off of the reactors (off: spin).
    pub backoff: bool,
    /// Bdevs to drive; empty means every bdev no other bdev has claimed.
    pub bdevs: Vec<String>,
    pub options: RunOptions,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: RunOptions,
    pub core_mask: String,
    pub jobs: Vec<JobResult>,
}

impl Report {
    pub fn failed(&self) -> u64 {
        self.jobs.iter().map(|j| j.failed).sum()
    }
    pub fn mismatches(&self) -> u64 {
        self.jobs.iter().map(|j| j.mismatches).sum()
    }
    /// Whether the run found I/O errors or bad data.
    pub fn is_clean(&self) -> bool {
        self.failed() == 0 && self.mismatches() == 0
    }
}

/// The reactors and bdevs of one run; dropping it removes the bdevs and stops the reactors.
struct Session {
    runtime: Option<Runtime>,
}

impl Session {
    fn start(cores: &CoreMask, backoff: bool) -> Result<Session, PerfError> {
        let available = std::thread::available_parallelism().map_or(usize::MAX, |n| n.get());
        if let Some(&c) = cores.cores().iter().find(|&&c| c >= available) {
            return Err(PerfError::usage(format!(
                "core mask {cores} names core {c}, but this machine has {available} core(s)"
            )));
        }
        let rt = Runtime::start(RuntimeConfig {
            cores: cores.clone(),
            backoff,
            ..Default::default()
        })
        .map_err(|e| PerfError::run(format!("cannot start the reactors: {e}")))?;
        registry::set_runtime(Some(rt.handle()));
        Ok(Session { runtime: Some(rt) })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Replicated volumes go down first (links closed, metadata clean) while their
            // disks still exist, as in the daemon; open links would otherwise stall the stop.
            // Then channels (stacked bdevs hold their base's), on the cores that own them,
            // then the bdevs newest first, then the reactors.
            oxstor_repl::rpc::shutdown_all();
            rt.handle().run_on_all(registry::drop_core_channels);
            // Remote controllers say goodbye (shutdown notification) before their bdevs go.
            oxstor_nvme::host::detach_all();
            registry::unregister_all();
            registry::set_runtime(None);
            rt.shutdown();
        }
    }
}

/// The default jobs: every bdev not claimed by another bdev, or the named ones, on every core.
pub fn job_specs(named: &[String], cores: usize) -> Result<Vec<JobSpec>, PerfError> {
    let bdevs: Vec<String> = if named.is_empty() {
        registry::list()
            .into_iter()
            .filter(|e| e.claimed_by().is_none())
            .map(|e| e.name().to_string())
            .collect()
    } else {
        for n in named {
            registry::lookup(n).map_err(|_| {
                let known: Vec<String> = registry::list()
                    .iter()
                    .map(|e| e.name().to_string())
                    .collect();
                PerfError::usage(format!(
                    "bdev {n} not found (the config created: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?;
        }
        named.to_vec()
    };
    if bdevs.is_empty() {
        return Err(PerfError::usage(
            "the config creates no bdev to run on (add a bdev_*_create call)",
        ));
    }
    Ok(bdevs
        .iter()
        .flat_map(|b| {
            (0..cores).map(move |core_index| JobSpec {
                bdev: b.clone(),
                core_index,
            })
        })
        .collect())
}

/// Runs the whole thing. `on_start` is called once the jobs are checked, just before I/O.
pub fn run_bdev(run: &BdevRun, on_start: &mut dyn FnMut(&[JobSpec])) -> Result<Report, PerfError> {
    if run.options.workload.is_mixed() && run.options.rwmixread > 100 {
        return Err(PerfError::usage("-M (rwmixread) must be between 0 and 100"));
    }
    let session = Session::start(&run.cores, run.backoff)?;
    config::apply_all(&run.config)?;
    let specs = job_specs(&run.bdevs, run.cores.cores().len())?;
    let handle = match &session.runtime {
        Some(rt) => rt.handle(),
        None => return Err(PerfError::run("the reactors are not running")),
    };
    let jobs = engine::run_with(&handle, &specs, &run.options, &mut || on_start(&specs))?;
    drop(session);
    Ok(Report {
        options: run.options.clone(),
        core_mask: run.cores.to_string(),
        jobs,
    })
}
