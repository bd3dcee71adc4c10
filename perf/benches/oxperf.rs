//! `cargo bench -p oxstor-perf`: the figures, each the median of three short runs of
//! the in-process engine (the same code path as `oxperf bdev`).
//!
//! - null bdev, 4 KiB randread, QD128, one core (compare: SPDK bdevperf 14.45 M IOPS here)
//! - malloc bdev, 4 KiB randwrite, QD32, one core
//! - null bdev, QD1 latency, reactor back-off on vs off
//! - uring bdev on a file, 4 KiB randread, QD128, and fio (io_uring, O_DIRECT) on the same
//!   file when fio is installed
//!
//! `OXPERF_BENCH_SECS` changes the length of each run (default 3).

use oxstor_perf::config::Call;
use oxstor_perf::engine::RunOptions;
use oxstor_perf::run::{run_bdev, BdevRun, Report};
use oxstor_perf::stats::{LatencySummary, Totals};
use oxstor_perf::workload::Workload;
use oxstor_reactor::CoreMask;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const RUNS: usize = 3;

fn secs() -> f64 {
    std::env::var("OXPERF_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s: &f64| s > 0.0)
        .unwrap_or(3.0)
}

fn call(method: &str, params: Value) -> Call {
    Call {
        subsystem: "bdev".into(),
        method: method.into(),
        params,
    }
}

struct Figure {
    iops: f64,
    mib_s: f64,
    lat: LatencySummary,
}

fn figure(r: &Report) -> Figure {
    let t = Totals::of(&r.jobs);
    Figure {
        iops: t.iops,
        mib_s: t.mib_s,
        lat: t.latency(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One run of `workload` at depth `qd` on core 0.
fn one_run(config: &[Call], workload: Workload, qd: u32, backoff: bool) -> Result<Figure, String> {
    let run = BdevRun {
        config: config.to_vec(),
        cores: CoreMask::single(0),
        backoff,
        bdevs: Vec::new(),
        options: RunOptions {
            queue_depth: qd,
            io_size: 4096,
            workload,
            duration: Duration::from_secs_f64(secs()),
            ..Default::default()
        },
    };
    let report = run_bdev(&run, &mut |_| {}).map_err(|e| e.to_string())?;
    if !report.is_clean() {
        return Err(format!(
            "{} I/O errors, {} mismatches",
            report.failed(),
            report.mismatches()
        ));
    }
    Ok(figure(&report))
}

/// Runs the setup RUNS times; returns the per-metric medians and the IOPS range.
fn bench(
    config: Vec<Call>,
    workload: Workload,
    qd: u32,
    backoff: bool,
) -> Result<(Figure, f64, f64), String> {
    let mut figs = Vec::new();
    for _ in 0..RUNS {
        figs.push(one_run(&config, workload, qd, backoff)?);
    }
    let pick = |f: &dyn Fn(&Figure) -> f64| median(figs.iter().map(f).collect());
    let lo = figs.iter().map(|f| f.iops).fold(f64::MAX, f64::min);
    let hi = figs.iter().map(|f| f.iops).fold(0.0, f64::max);
    Ok((
        Figure {
            iops: pick(&|f| f.iops),
            mib_s: pick(&|f| f.mib_s),
            lat: LatencySummary {
                mean: pick(&|f| f.lat.mean),
                min: pick(&|f| f.lat.min),
                p50: pick(&|f| f.lat.p50),
                p90: pick(&|f| f.lat.p90),
                p99: pick(&|f| f.lat.p99),
                p99_9: pick(&|f| f.lat.p99_9),
                p99_99: pick(&|f| f.lat.p99_99),
                max: pick(&|f| f.lat.max),
            },
        },
        lo,
        hi,
    ))
}

fn print_row(name: &str, r: Result<(Figure, f64, f64), String>) {
    match r {
        Ok((f, lo, hi)) => println!(
            "{name:<44} {:>12.0} ({:>5.2}-{:<5.2} M) {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            f.iops,
            lo / 1e6,
            hi / 1e6,
            f.mib_s,
            f.lat.mean,
            f.lat.p50,
            f.lat.p99,
            f.lat.p99_9
        ),
        Err(e) => println!("{name:<44} FAILED: {e}"),
    }
}

fn null_config() -> Vec<Call> {
    vec![call(
        "bdev_null_create",
        json!({"name": "Null0", "num_blocks": 2097152, "block_size": 4096}),
    )]
}

/// A data file for the uring comparison, written once (real blocks, not a sparse hole).
fn data_file() -> std::io::Result<PathBuf> {
    const SIZE: u64 = 512 << 20;
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oxperf-bench-uring.img");
    if std::fs::metadata(&path)
        .map(|m| m.len() == SIZE)
        .unwrap_or(false)
    {
        return Ok(path);
    }
    use std::io::Write;
    let mut f = std::fs::File::create(&path)?;
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 7 + 3) as u8).collect();
    for _ in 0..SIZE >> 20 {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    Ok(path)
}

fn fio(path: &Path) -> Result<(f64, f64, f64), String> {
    let out = Command::new("fio")
        .args([
            "--name=oxperf-compare",
            &format!("--filename={}", path.display()),
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=randread",
            "--bs=4k",
            "--iodepth=128",
            "--numjobs=1",
            "--cpus_allowed=0",
            "--time_based",
            &format!("--runtime={}", secs().ceil() as u64),
            "--output-format=json",
        ])
        .output()
        .map_err(|e| format!("cannot run fio: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("fio output: {e}"))?;
    let read = &v["jobs"][0]["read"];
    let iops = read["iops"].as_f64().ok_or("fio: no read.iops")?;
    let mean = read["clat_ns"]["mean"].as_f64().unwrap_or(0.0) / 1000.0;
    let p99 = read["clat_ns"]["percentile"]["99.000000"]
        .as_f64()
        .unwrap_or(0.0)
        / 1000.0;
    Ok((iops, mean, p99))
}

fn main() {
    // `cargo bench` passes --bench; nothing else is understood.
    println!(
        "oxperf bench: median of {RUNS} runs of {}s each, one core (core 0)\n",
        secs()
    );
    println!(
        "{:<44} {:>12} {:>17} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "test", "IOPS", "(range)", "MiB/s", "avg us", "p50 us", "p99 us", "p99.9"
    );
    print_row(
        "null 4KiB randread QD128 (SPDK: 14.45M)",
        bench(null_config(), Workload::RandRead, 128, true),
    );
    print_row(
        "malloc 4KiB randwrite QD32",
        bench(
            vec![call(
                "bdev_malloc_create",
                json!({"name": "Malloc0", "num_blocks": 65536, "block_size": 4096}),
            )],
            Workload::RandWrite,
            32,
            true,
        ),
    );
    print_row(
        "null 4KiB randread QD1, back-off on",
        bench(null_config(), Workload::RandRead, 1, true),
    );
    print_row(
        "null 4KiB randread QD1, back-off off",
        bench(null_config(), Workload::RandRead, 1, false),
    );
    raid_figures();
    idle_cpu();
    match data_file() {
        Ok(path) => {
            // The virtual disk drifts a lot; alternate oxperf and fio so both see the same.
            let config = vec![call(
                "bdev_uring_create",
                json!({"name": "Uring0", "filename": path.to_str(), "block_size": 4096}),
            )];
            let has_fio = Command::new("fio").arg("--version").output().is_ok();
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..RUNS {
                match one_run(&config, Workload::RandRead, 128, true) {
                    Ok(f) => ours.push(f.iops),
                    Err(e) => println!("uring file 4KiB randread QD128  FAILED: {e}"),
                }
                if has_fio {
                    match fio(&path) {
                        Ok(r) => theirs.push(r.0),
                        Err(e) => println!("fio io_uring direct 4KiB randread QD128  FAILED: {e}"),
                    }
                }
            }
            if ours.len() == RUNS {
                let o = median(ours.clone());
                println!(
                    "{:<44} {:>12.0}   runs {:?}",
                    "uring file 4KiB randread QD128", o, ours
                );
                if theirs.len() == RUNS {
                    let f = median(theirs.clone());
                    println!(
                        "{:<44} {:>12.0}   runs {:?}",
                        "fio io_uring direct 4KiB randread QD128", f, theirs
                    );
                    println!("{:<44} {:>12.2}", "  oxperf / fio (target >= 0.95)", o / f);
                } else if !has_fio {
                    println!("(fio is not installed: skipping the fio io_uring comparison)");
                }
            }
        }
        Err(e) => println!("uring file benchmark skipped: cannot write the data file: {e}"),
    }
}

/// CPU used by two idle reactors over 10 s (utime + stime of this process, from /proc).
fn idle_cpu() {
    let cpu_ns = || -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after = stat.get(stat.rfind(')')? + 2..)?;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks * 10_000_000)
    };
    let rt = match oxstor_reactor::Runtime::start(oxstor_reactor::RuntimeConfig {
        cores: CoreMask::from_cores(vec![0, 1]).unwrap_or_else(|_| CoreMask::single(0)),
        ..Default::default()
    }) {
        Ok(rt) => rt,
        Err(e) => return println!("idle CPU: cannot start reactors: {e}"),
    };
    std::thread::sleep(Duration::from_millis(500));
    let (Some(before), t0) = (cpu_ns(), std::time::Instant::now()) else {
        return println!("idle CPU: /proc/self/stat unreadable");
    };
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_ns().unwrap_or(before).saturating_sub(before);
    let pct = used as f64 * 100.0 / t0.elapsed().as_nanos() as f64;
    println!(
        "{:<44} {:>11.2}%   (target <= 2%)",
        "idle: 2 reactors, 10 s, CPU", pct
    );
    rt.shutdown();
}

/// RAID overhead: raid0 over four null bdevs against one null bdev (target >= 0.9x), and the
/// parity rates against memcpy measured in the same run (target >= 50%).
fn raid_figures() {
    let nulls: Vec<Call> = (0..4)
        .map(|i| {
            call(
                "bdev_null_create",
                json!({"name": format!("N{i}"), "num_blocks": 2097152, "block_size": 4096}),
            )
        })
        .collect();
    let mut raid0 = nulls;
    raid0.push(call(
        "bdev_raid_create",
        json!({"name": "R0", "raid_level": "raid0", "strip_size_kb": 64,
               "base_bdevs": ["N0", "N1", "N2", "N3"]}),
    ));
    let (mut one, mut striped) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        if let Ok(f) = one_run(&null_config(), Workload::RandRead, 128, true) {
            one.push(f.iops);
        }
        match one_run(&raid0, Workload::RandRead, 128, true) {
            Ok(f) => striped.push(f.iops),
            Err(e) => println!("raid0 4x null 4KiB randread QD128  FAILED: {e}"),
        }
    }
    if one.len() == RUNS && striped.len() == RUNS {
        let (o, r) = (median(one), median(striped));
        println!(
            "{:<44} {:>12.0}",
            "raid0 over 4 null, 4KiB randread QD128", r
        );
        println!("{:<44} {:>12.0}", "  one null bdev, same run", o);
        println!("{:<44} {:>12.2}", "  raid0 / null (target >= 0.9)", r / o);
    }
    let rates = oxstor_raid::parity::measure_parity_rate();
    println!(
        "{:<44} {:>8.1} GiB/s memcpy, {:.1} raid5 P ({:.0}%), {:.1} raid6 P+Q ({:.0}%)",
        "parity rate (1 MiB of data per op)",
        rates.memcpy_gib_s,
        rates.raid5_p_gib_s,
        rates.raid5_p_gib_s * 100.0 / rates.memcpy_gib_s,
        rates.raid6_pq_gib_s,
        rates.raid6_pq_gib_s * 100.0 / rates.memcpy_gib_s,
    );
}
