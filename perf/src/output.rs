//! Results as bdevperf prints them, and as JSON (the DESIGN.md schema plus extras).

use crate::run::Report;
use crate::stats::{JobResult, LatencySummary, Totals};
use serde_json::{json, Value};
use std::fmt::Write;

/// `Running I/O for N seconds...`, printed before the run starts.
pub fn header(duration_s: f64) -> String {
    if duration_s.fract() == 0.0 {
        format!("Running I/O for {} seconds...", duration_s as u64)
    } else {
        format!("Running I/O for {duration_s} seconds...")
    }
}

fn core_mask(cpu: usize) -> String {
    if cpu < 128 {
        format!("0x{:x}", 1u128 << cpu)
    } else {
        format!("[{cpu}]")
    }
}

const NAME_WIDTH: usize = 28;

/// One table row; `rates` is (runtime s, IOPS, MiB/s, Fail/s).
fn row(out: &mut String, label: &str, indent: bool, rates: [f64; 4], lat: &LatencySummary) {
    let [runtime_s, iops, mib_s, fail_s] = rates;
    // Job rows start with a tab like bdevperf's; pad so the columns still line up.
    let (prefix, width) = if indent {
        ("\t ", NAME_WIDTH - 9)
    } else {
        ("", NAME_WIDTH)
    };
    let _ = writeln!(
        out,
        "{prefix}{label:<width$}: {runtime_s:10.2} {iops:10.2} {mib_s:10.2} {fail_s:10.2} {:8.2} {:10.2} {:10.2} {:10.2}",
        0.0, lat.mean, lat.min, lat.max
    );
}

fn ladder(out: &mut String, title: &str, lat: &LatencySummary) {
    let _ = writeln!(out, "{title}");
    for (p, v) in lat.ladder() {
        let _ = writeln!(out, "  {p:9.5}% : {v:9.3}us");
    }
}

/// The bdevperf-style table and percentile ladder.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let totals = Totals::of(&report.jobs);
    let width = NAME_WIDTH + 2 + 11 * 7 + 9;
    let _ = writeln!(out, "{:>width$}", "Latency(us)");
    let _ = writeln!(
        out,
        "{:<NAME_WIDTH$}: {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "Device Information",
        "runtime(s)",
        "IOPS",
        "MiB/s",
        "Fail/s",
        "TO/s",
        "Average",
        "min",
        "max"
    );
    for j in &report.jobs {
        let _ = writeln!(out, "Job: {} (Core Mask {})", j.bdev, core_mask(j.cpu));
        if let Some((start, len)) = j.verify_range {
            let _ = writeln!(
                out,
                "\t Verification LBA range: start 0x{start:x} length 0x{len:x}"
            );
        }
        row(
            &mut out,
            &j.bdev,
            true,
            [j.runtime_s(), j.iops(), j.mib_s(), j.fail_s()],
            &j.latency(),
        );
    }
    let _ = writeln!(out, "{}", "=".repeat(width));
    let lat = totals.latency();
    row(
        &mut out,
        "Total",
        false,
        [
            totals.runtime_ns as f64 / 1e9,
            totals.iops,
            totals.mib_s,
            totals.fail_s,
        ],
        &lat,
    );
    let _ = writeln!(out);
    if report.jobs.len() > 1 {
        for j in &report.jobs {
            ladder(
                &mut out,
                &format!("Latency summary for {} from core {} (us):", j.bdev, j.cpu),
                &j.latency(),
            );
            let _ = writeln!(out);
        }
    }
    ladder(&mut out, "Latency percentiles (us):", &lat);
    if report.options.workload == crate::workload::Workload::Verify {
        let _ = writeln!(
            out,
            "\nVerify: {} I/O failed, {} mismatch(es)",
            totals.failed, totals.mismatches
        );
    } else if totals.failed > 0 {
        let _ = writeln!(out, "\n{} I/O failed", totals.failed);
    }
    out
}

fn latency_json(l: &LatencySummary) -> Value {
    json!({
        "mean": l.mean,
        "min": l.min,
        "p50": l.p50,
        "p90": l.p90,
        "p99": l.p99,
        "p99.9": l.p99_9,
        "p99.99": l.p99_99,
        "max": l.max,
    })
}

fn job_json(j: &JobResult, report: &Report) -> Value {
    let mut v = json!({
        "job": j.bdev,
        "core": j.cpu,
        "core_mask": core_mask(j.cpu),
        "workload": report.options.workload.name(),
        "queue_depth": report.options.queue_depth,
        "io_size": report.options.io_size,
        "runtime_s": j.runtime_s(),
        "iops": j.iops(),
        "mib_s": j.mib_s(),
        "fail_s": j.fail_s(),
        "reads": j.reads,
        "writes": j.ios - j.reads,
        "io_failed": j.failed,
        "io_timeout": 0,
        "mismatches": j.mismatches,
        "latency_us": latency_json(&j.latency()),
    });
    if let Some((start, len)) = j.verify_range {
        v["verify_range"] = json!({ "start": start, "length": len });
    }
    if !j.errors.is_empty() {
        v["errors"] = json!(j.errors);
    }
    v
}

/// `{"iops","mib_s","latency_us":{...}}` plus extra fields (per-job results, counters).
pub fn json(report: &Report) -> Value {
    let totals = Totals::of(&report.jobs);
    json!({
        "iops": totals.iops,
        "mib_s": totals.mib_s,
        "latency_us": latency_json(&totals.latency()),
        "fail_s": totals.fail_s,
        "io_failed": totals.failed,
        "io_timeout": 0,
        "mismatches": totals.mismatches,
        "workload": report.options.workload.name(),
        "queue_depth": report.options.queue_depth,
        "io_size": report.options.io_size,
        "rwmixread": report.options.workload.read_percent(report.options.rwmixread),
        "runtime_s": totals.runtime_ns as f64 / 1e9,
        "core_mask": report.core_mask,
        "jobs": report.jobs.iter().map(|j| job_json(j, report)).collect::<Vec<_>>(),
    })
}
