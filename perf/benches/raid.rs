//! `cargo bench -p oxstor-perf --bench raid`: the RAID figures of issue 4, in the harness
//! style of `benches/oxperf.rs` (the in-process engine, the code path of `oxperf bdev`).
//!
//! - **raid0 overhead**: raid0 over 4 null bdevs against one null bdev, 4 KiB randread QD128
//!   on one core; the two runs alternate (the machine drifts), median of the runs, and the
//!   ratio (target >= 0.9).
//! - **rebuild rate**: a raid1 (2 x malloc) and a raid5 (4 x malloc, 64 KiB strips) lose a
//!   member and rebuild onto a new malloc bdev, on one core: MiB/s of the member rebuilt with
//!   no user I/O, then with a concurrent 4 KiB randread and a 4 KiB randwrite load at QD16
//!   on the array (on the same core), and the user IOPS during the rebuild (the array's
//!   iostat between rebuild start and end), next to the same load's IOPS on the degraded
//!   array with no rebuild. Every member is written before the runs, so no copy reads
//!   untouched (shared zero page) memory.
//!
//! - **write-intent bitmap cost**: raid1 over 2 malloc bdevs, 4 KiB randwrite QD32 from
//!   two cores (one job per core), with a superblock (so a bitmap) and without; interleaved.
//!
//! Environment: `OXPERF_RAID_BENCH` = comma list of `raid0`, `rebuild`, `bitmap` (default
//! all);
//! `OXPERF_BENCH_SECS` = seconds per load run (default 3); `OXPERF_BENCH_RUNS` = runs per
//! figure (default 3); `OXPERF_REBUILD_MIB` = member size for the rebuild runs (default 1024);
//! `OXPERF_REBUILD_WINDOW_KB` = `process_window_size_kb` for them (default: the default, 1024);
//! `OXPERF_REBUILD_LEVELS` = comma list of `raid1`, `raid5` (default both).

use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{blocking, IoStatus, IoType};
use oxstor_perf::config::{self, Call};
use oxstor_perf::engine::{self, RunOptions};
use oxstor_perf::run::{job_specs, run_bdev, BdevRun};
use oxstor_perf::stats::Totals;
use oxstor_perf::workload::Workload;
use oxstor_reactor::{CoreMask, Runtime, RuntimeConfig};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s: &f64| s > 0.0)
        .unwrap_or(default)
}

fn secs() -> f64 {
    env_f64("OXPERF_BENCH_SECS", 3.0)
}

fn runs() -> usize {
    env_f64("OXPERF_BENCH_RUNS", 3.0) as usize
}

fn call(method: &str, params: Value) -> Call {
    Call {
        subsystem: "bdev".into(),
        method: method.into(),
        params,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn wanted(part: &str) -> bool {
    match std::env::var("OXPERF_RAID_BENCH") {
        Ok(s) => s.split(',').any(|p| p.trim() == part),
        Err(_) => true,
    }
}

fn main() {
    println!(
        "oxperf raid bench: {} run(s) per figure, {}s loads, one core (core 0)\n",
        runs(),
        secs()
    );
    if wanted("raid0") {
        raid0_overhead();
    }
    if wanted("rebuild") {
        rebuild_rates();
    }
    if wanted("bitmap") {
        bitmap_cost();
    }
}

// ---------------------------------------------------------------------------------------
// Write-intent bitmap on the write path.
// ---------------------------------------------------------------------------------------

fn raid1_randwrite(superblock: bool) -> Result<f64, String> {
    let mut config: Vec<Call> = (0..2)
        .map(|i| {
            call(
                "bdev_malloc_create",
                json!({"name": format!("Bm{i}"), "num_blocks": 65536, "block_size": 4096}),
            )
        })
        .collect();
    config.push(call(
        "bdev_raid_create",
        json!({"name": "Bm", "raid_level": "raid1", "base_bdevs": ["Bm0", "Bm1"],
               "superblock": superblock}),
    ));
    let cores = CoreMask::from_cores(vec![0, 1]).map_err(|e| e.to_string())?;
    let run = BdevRun {
        config,
        cores,
        backoff: true,
        bdevs: vec!["Bm".into()],
        options: RunOptions {
            queue_depth: 32,
            io_size: 4096,
            workload: Workload::RandWrite,
            duration: Duration::from_secs_f64(secs()),
            // The first write to each region waits for its bit to reach the disk.
            warmup: Duration::from_millis(500),
            ..Default::default()
        },
    };
    let report = run_bdev(&run, &mut |_| {}).map_err(|e| e.to_string())?;
    if !report.is_clean() {
        return Err(format!("{} I/O errors", report.failed()));
    }
    Ok(Totals::of(&report.jobs).iops)
}

fn bitmap_cost() {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..runs() {
        match (raid1_randwrite(true), raid1_randwrite(false)) {
            (Ok(a), Ok(b)) => {
                println!(
                    "run {i}: raid1 randwrite with bitmap {a:>10.0}  without {b:>10.0}  ratio {:.3}",
                    a / b
                );
                with.push(a);
                without.push(b);
            }
            (a, b) => println!("run {i}: FAILED: {:?} {:?}", a.err(), b.err()),
        }
    }
    if with.is_empty() {
        return;
    }
    let (a, b) = (median(with), median(without));
    println!(
        "{:<48} {:>12.0}",
        "raid1 2x malloc 4KiB randwrite QD32, 2 cores, bitmap", a
    );
    println!("{:<48} {:>12.0}", "  same without superblock/bitmap", b);
    println!("{:<48} {:>12.3}\n", "  with / without", a / b);
}

// ---------------------------------------------------------------------------------------
// raid0 over 4 null bdevs against one null bdev.
// ---------------------------------------------------------------------------------------

fn null_call(name: &str) -> Call {
    call(
        "bdev_null_create",
        json!({"name": name, "num_blocks": 2097152, "block_size": 4096}),
    )
}

/// CPU time (user + system) this process has used, dead threads included, in seconds.
fn cpu_secs() -> f64 {
    let read = || -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after = stat.get(stat.rfind(')')? + 2..)?;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    };
    read().unwrap_or(0.0)
}

/// One run: (IOPS, I/Os per CPU-second). The second is what a shared, noisy machine
/// perturbs least: the reactor never idles under this load, so CPU time is its time.
fn randread_qd128(config: &[Call]) -> Result<(f64, f64), String> {
    let cpu0 = cpu_secs();
    let run = BdevRun {
        config: config.to_vec(),
        cores: CoreMask::single(0),
        backoff: true,
        bdevs: Vec::new(),
        options: RunOptions {
            queue_depth: 128,
            io_size: 4096,
            workload: Workload::RandRead,
            duration: Duration::from_secs_f64(secs()),
            ..Default::default()
        },
    };
    let report = run_bdev(&run, &mut |_| {}).map_err(|e| e.to_string())?;
    let cpu = (cpu_secs() - cpu0).max(0.01);
    if !report.is_clean() {
        return Err(format!("{} I/O errors", report.failed()));
    }
    let iops = Totals::of(&report.jobs).iops;
    Ok((iops, iops * secs() / cpu))
}

fn raid0_overhead() {
    let one = vec![null_call("Null0")];
    let mut raid0: Vec<Call> = (0..4).map(|i| null_call(&format!("N{i}"))).collect();
    raid0.push(call(
        "bdev_raid_create",
        json!({"name": "R0", "raid_level": "raid0", "strip_size_kb": 64,
               "base_bdevs": ["N0", "N1", "N2", "N3"]}),
    ));
    let (mut nulls, mut raids, mut cpu_n, mut cpu_r) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs() {
        match (randread_qd128(&one), randread_qd128(&raid0)) {
            (Ok((n, cn)), Ok((r, cr))) => {
                println!(
                    "run {i}: null {n:>11.0}  raid0 {r:>11.0}  ratio {:.3}   per CPU-s: null {cn:>11.0}  raid0 {cr:>11.0}  ratio {:.3}",
                    r / n,
                    cr / cn
                );
                nulls.push(n);
                raids.push(r);
                cpu_n.push(cn);
                cpu_r.push(cr);
            }
            (a, b) => println!("run {i}: FAILED: {:?} {:?}", a.err(), b.err()),
        }
    }
    if nulls.is_empty() {
        return;
    }
    let (n, r) = (median(nulls), median(raids));
    let (cn, cr) = (median(cpu_n), median(cpu_r));
    println!(
        "{:<48} {:>12.0}   per CPU-s {:>12.0}",
        "raid0 over 4 null, 4KiB randread QD128", r, cr
    );
    println!(
        "{:<48} {:>12.0}   per CPU-s {:>12.0}",
        "  one null bdev, same runs", n, cn
    );
    println!(
        "{:<48} {:>12.3}   per CPU-s {:>12.3}\n",
        "  raid0 / null (target >= 0.9)",
        r / n,
        cr / cn
    );
}

// ---------------------------------------------------------------------------------------
// Rebuild rate.
// ---------------------------------------------------------------------------------------

const BS: u64 = 4096;

struct Rebuilt {
    mib_s: f64,
    secs: f64,
    /// User IOPS on the array while the rebuild ran (None without a load).
    user_iops: Option<f64>,
    /// The load ended before the rebuild did (figures cover the overlap only).
    partial: bool,
}

/// One sample of the rebuild: time, target blocks done, array read+write ops so far.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    blocks: u64,
    ops: u64,
}

fn raid_info(name: &str) -> Value {
    oxstor_raid::rpc::get_bdevs(serde_json::from_value(json!({"category": "all"})).unwrap())
        .ok()
        .and_then(|v| v.as_array()?.iter().find(|r| r["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

fn ops(entry: &Arc<BdevEntry>) -> u64 {
    let s = registry::iostat(entry);
    s.read.ops + s.write.ops
}

/// Samples the rebuild of `raid` every few ms until it is over; the last sample is its end.
fn watch(raid: &Arc<BdevEntry>, member_blocks: u64, started: Instant) -> Vec<Sample> {
    let name = raid.name().to_string();
    let mut samples = vec![Sample {
        at: started,
        blocks: 0,
        ops: ops(raid),
    }];
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let v = raid_info(&name);
        let at = Instant::now();
        let ops = ops(raid);
        match v["process"]["progress"]["blocks"].as_u64() {
            Some(blocks) => samples.push(Sample { at, blocks, ops }),
            None => {
                samples.push(Sample {
                    at,
                    blocks: member_blocks,
                    ops,
                });
                return samples;
            }
        }
        if at.duration_since(started) > Duration::from_secs(600) {
            return samples;
        }
    }
}

/// A raid of `level` over `members` mallocs of `mib` MiB each, member 0 removed and a new
/// malloc added: the rebuild, with `load` on the array meanwhile if given. Without
/// `rebuild`, no malloc is added: `load` runs on the degraded array (the reference for the
/// user IOPS during a rebuild).
fn rebuild_run(
    level: &str,
    members: usize,
    mib: u64,
    load: Option<Workload>,
    rebuild: bool,
) -> Result<Rebuilt, String> {
    let rt = Runtime::start(RuntimeConfig {
        cores: CoreMask::single(0),
        backoff: true,
        ..Default::default()
    })
    .map_err(|e| format!("cannot start the reactors: {e}"))?;
    registry::set_runtime(Some(rt.handle()));
    let result = rebuild_session(&rt, level, members, mib, load, rebuild);
    rt.handle().run_on_all(registry::drop_core_channels);
    registry::unregister_all();
    registry::set_runtime(None);
    rt.shutdown();
    result
}

fn rebuild_session(
    rt: &Runtime,
    level: &str,
    members: usize,
    mib: u64,
    load: Option<Workload>,
    rebuild: bool,
) -> Result<Rebuilt, String> {
    let blocks = mib * 1024 * 1024 / BS;
    let names: Vec<String> = (0..members).map(|i| format!("RbM{i}")).collect();
    let mut calls: Vec<Call> = names
        .iter()
        .chain(std::iter::once(&"RbNew".to_string()))
        .map(|n| {
            call(
                "bdev_malloc_create",
                json!({"name": n, "num_blocks": blocks, "block_size": BS}),
            )
        })
        .collect();
    config::apply_all(&calls).map_err(|e| e.to_string())?;
    // Touch every page of every member (and of the new one) before measuring.
    for n in names.iter().chain(std::iter::once(&"RbNew".to_string())) {
        let e = registry::lookup(n).map_err(|e| e.to_string())?;
        let (st, _) = blocking::io(
            0,
            &e,
            IoType::WriteZeroes,
            0,
            blocks,
            None,
            Duration::from_secs(60),
        )
        .map_err(|e| e.to_string())?;
        if st != IoStatus::Success {
            return Err(format!("write_zeroes on {n}: {st:?}"));
        }
    }
    let mut params = json!({"name": "RbR", "raid_level": level, "base_bdevs": names});
    if level != "raid1" {
        params["strip_size_kb"] = json!(64);
    }
    calls = vec![call("bdev_raid_create", params)];
    config::apply_all(&calls).map_err(|e| e.to_string())?;
    let raid = registry::lookup("RbR").map_err(|e| e.to_string())?;
    oxstor_raid::rpc::remove_base_bdev(
        serde_json::from_value(json!({"name": names[0]})).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let member_blocks = raid_info("RbR")["base_bdevs_list"][1]["data_size"]
        .as_u64()
        .unwrap_or(blocks);
    let add = || -> Result<Instant, String> {
        let t0 = Instant::now();
        oxstor_raid::rpc::add_base_bdev(
            serde_json::from_value(json!({"raid_bdev": "RbR", "base_bdev": "RbNew"}))
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        Ok(t0)
    };
    let load_secs = secs();
    let samples = match load {
        None => {
            let t0 = add()?;
            watch(&raid, member_blocks, t0)
        }
        Some(workload) => {
            let specs = job_specs(&["RbR".to_string()], 1).map_err(|e| e.to_string())?;
            let opts = RunOptions {
                queue_depth: 16,
                io_size: 4096,
                workload,
                duration: Duration::from_secs_f64(load_secs),
                ..Default::default()
            };
            if !rebuild {
                let jobs = engine::run_with(&rt.handle(), &specs, &opts, &mut || {})
                    .map_err(|e| e.to_string())?;
                if jobs.iter().any(|j| j.failed > 0) {
                    return Err("user I/O failed on the degraded array".into());
                }
                return Ok(Rebuilt {
                    mib_s: 0.0,
                    secs: load_secs,
                    user_iops: Some(Totals::of(&jobs).iops),
                    partial: false,
                });
            }
            let started = Arc::new(AtomicBool::new(false));
            let (tx, rx) = std::sync::mpsc::channel();
            let watcher = {
                let (raid, started) = (raid.clone(), started.clone());
                std::thread::spawn(move || {
                    while !started.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    let t0 = rx.recv().ok()?;
                    Some(watch(&raid, member_blocks, t0))
                })
            };
            let mut add_error = None;
            let jobs = engine::run_with(&rt.handle(), &specs, &opts, &mut || {
                match add() {
                    Ok(t0) => {
                        let _ = tx.send(t0);
                    }
                    Err(e) => add_error = Some(e),
                }
                started.store(true, Ordering::Release);
            });
            let load_end = Instant::now();
            let samples = watcher.join().ok().flatten();
            if let Some(e) = add_error {
                return Err(e);
            }
            let jobs = jobs.map_err(|e| e.to_string())?;
            if jobs.iter().any(|j| j.failed > 0) {
                return Err("user I/O failed during the rebuild".into());
            }
            let samples = samples.ok_or("the rebuild was never watched")?;
            // Figures cover the time the load and the rebuild overlapped.
            let kept: Vec<Sample> = samples
                .iter()
                .copied()
                .filter(|s| s.at <= load_end)
                .collect();
            let partial = kept.len() < samples.len();
            let (first, last) = (samples[0], *kept.last().unwrap_or(&samples[0]));
            let t = last.at.duration_since(first.at).as_secs_f64().max(1e-9);
            return Ok(Rebuilt {
                mib_s: last.blocks as f64 * BS as f64 / t / (1 << 20) as f64,
                secs: t,
                user_iops: Some((last.ops - first.ops) as f64 / t),
                partial,
            });
        }
    };
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let t = last.at.duration_since(first.at).as_secs_f64().max(1e-9);
    let v = raid_info("RbR");
    if v["num_base_bdevs_operational"].as_u64() != Some(members as u64) {
        return Err(format!("the rebuild did not complete: {v}"));
    }
    Ok(Rebuilt {
        mib_s: last.blocks as f64 * BS as f64 / t / (1 << 20) as f64,
        secs: t,
        user_iops: None,
        partial: false,
    })
}

fn rebuild_rates() {
    let mib = env_f64("OXPERF_REBUILD_MIB", 1024.0) as u64;
    let window_kb = env_f64(
        "OXPERF_REBUILD_WINDOW_KB",
        oxstor_raid::rebuild::DEFAULT_WINDOW_KB as f64,
    ) as u64;
    if let Err(e) =
        oxstor_raid::rebuild::set_options(oxstor_raid::rebuild::BdevRaidSetOptionsParams {
            process_window_size_kb: Some(window_kb),
            process_max_bandwidth_mb_sec: Some(0),
            ..Default::default()
        })
    {
        return println!("rebuild: bdev_raid_set_options: {e}");
    }
    println!(
        "rebuild onto a new malloc member ({mib} MiB members, {window_kb} KiB windows), one core; user load QD16 4 KiB"
    );
    println!(
        "{:<44} {:>10} {:>8} {:>12}",
        "test", "MiB/s", "secs", "user IOPS"
    );
    let levels = std::env::var("OXPERF_REBUILD_LEVELS").unwrap_or("raid1,raid5".into());
    for (level, members) in [("raid1", 2), ("raid5", 4)] {
        if !levels.split(',').any(|l| l.trim() == level) {
            continue;
        }
        for load in [None, Some(Workload::RandRead), Some(Workload::RandWrite)] {
            let label = match load {
                None => format!("{level} x{members}, no user I/O"),
                Some(w) => format!("{level} x{members}, with {w:?} QD16"),
            };
            if let Some(w) = load {
                let degraded: Vec<f64> = (0..runs())
                    .filter_map(|_| match rebuild_run(level, members, mib, load, false) {
                        Ok(f) => f.user_iops,
                        Err(e) => {
                            println!("{level} degraded {w:?}: FAILED: {e}");
                            None
                        }
                    })
                    .collect();
                if !degraded.is_empty() {
                    println!(
                        "{:<44} {:>10} {:>8} {:>12.0}   runs {:?}",
                        format!("{level} x{members}, degraded, no rebuild, {w:?} QD16"),
                        "-",
                        "-",
                        median(degraded.clone()),
                        degraded.iter().map(|x| x.round()).collect::<Vec<_>>()
                    );
                }
            }
            let mut figs = Vec::new();
            for _ in 0..runs() {
                match rebuild_run(level, members, mib, load, true) {
                    Ok(f) => figs.push(f),
                    Err(e) => println!("{label:<44} FAILED: {e}"),
                }
            }
            if figs.is_empty() {
                continue;
            }
            let rate = median(figs.iter().map(|f| f.mib_s).collect());
            let t = median(figs.iter().map(|f| f.secs).collect());
            let iops = figs
                .iter()
                .map(|f| f.user_iops)
                .collect::<Option<Vec<f64>>>()
                .map(median);
            let partial = figs.iter().any(|f| f.partial);
            println!(
                "{label:<44} {rate:>10.0} {t:>8.2} {:>12}{}   runs {:?}",
                iops.map_or("-".to_string(), |x| format!("{x:.0}")),
                if partial {
                    "  (load ended before the rebuild: overlap only)"
                } else {
                    ""
                },
                figs.iter().map(|f| f.mib_s.round()).collect::<Vec<_>>()
            );
        }
    }
}
