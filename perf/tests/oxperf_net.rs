//! `oxperf net rtt|stream`: the loopback TCP baselines run and report positive numbers.

use serde_json::Value;
use std::process::Command;

const OXPERF: &str = env!("CARGO_BIN_EXE_oxperf");

fn run_json(args: &[&str]) -> Value {
    let out = Command::new(OXPERF)
        .args(args)
        .args(["--output", "json"])
        .output()
        .expect("run oxperf");
    assert!(
        out.status.success(),
        "oxperf {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn rtt_reports_positive_latencies() {
    let v = run_json(&["net", "rtt", "-n", "300", "--size", "4k", "-c", "0x1"]);
    assert_eq!(v["test"], "rtt");
    assert_eq!(v["size"], 4096);
    for k in ["min", "p50", "p99", "mean"] {
        let x = v["rtt_us"][k].as_f64().unwrap_or(0.0);
        assert!(x > 0.0, "{k} = {x} in {v}");
    }
    assert_eq!(v["client_core"], 0);
}

#[test]
fn stream_reports_positive_throughput() {
    let v = run_json(&["net", "stream", "-t", "0.2", "-o", "64k"]);
    assert_eq!(v["test"], "stream");
    assert!(v["bytes"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(v["mib_s"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
}

#[test]
fn text_output_and_bad_args() {
    let out = Command::new(OXPERF)
        .args(["net", "rtt", "-n", "50"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("p50"));
    let bad = Command::new(OXPERF)
        .args(["net", "rtt", "--addr", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
