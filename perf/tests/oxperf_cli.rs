//! End-to-end tests of the `oxperf` binary: short runs against in-process bdevs.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const OXPERF: &str = env!("CARGO_BIN_EXE_oxperf");

/// A scratch file under the target dir (tmpfs /tmp would refuse O_DIRECT for uring).
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oxperf-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", std::process::id()))
}

/// Writes an SPDK JSON config with these bdev-subsystem calls.
fn config(name: &str, calls: Value) -> PathBuf {
    let path = scratch(&format!("{name}.json"));
    let cfg = serde_json::json!({"subsystems": [{"subsystem": "bdev", "config": calls}]});
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

fn null_config(name: &str) -> PathBuf {
    config(
        name,
        serde_json::json!([
            {"method": "bdev_null_create",
             "params": {"name": "Null0", "num_blocks": 262144, "block_size": 4096}},
            {"method": "bdev_wait_for_examine"}
        ]),
    )
}

fn malloc_config(name: &str) -> PathBuf {
    config(
        name,
        serde_json::json!([
            {"method": "bdev_malloc_create",
             "params": {"name": "Malloc0", "num_blocks": 4096, "block_size": 4096}}
        ]),
    )
}

fn oxperf(args: &[&str]) -> Output {
    Command::new(OXPERF)
        .args(args)
        .output()
        .expect("run oxperf")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `oxperf bdev --json CFG ARGS --output json` and parses the result.
fn run_json(cfg: &Path, args: &[&str]) -> (Output, Value) {
    let cfg = cfg.to_str().unwrap();
    let mut all = vec!["bdev", "--json", cfg];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let out = oxperf(&all);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        )
    });
    (out, v)
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v}"))
}

/// Every key DESIGN.md requires, with sane values.
fn assert_schema(v: &Value) {
    assert!(num(v, "iops") > 0.0, "{v}");
    assert!(num(v, "mib_s") > 0.0, "{v}");
    let lat = &v["latency_us"];
    for key in ["mean", "min", "p50", "p90", "p99", "p99.9", "p99.99", "max"] {
        assert!(
            lat[key].as_f64().is_some_and(|x| x >= 0.0),
            "latency_us.{key}: {v}"
        );
    }
    let (min, p50, p90, p99, p999, p9999, max) = (
        num(lat, "min"),
        num(lat, "p50"),
        num(lat, "p90"),
        num(lat, "p99"),
        num(lat, "p99.9"),
        num(lat, "p99.99"),
        num(lat, "max"),
    );
    assert!(min <= p50 && p50 <= p90 && p90 <= p99, "{lat}");
    assert!(p99 <= p999 && p999 <= p9999 && p9999 <= max, "{lat}");
    assert!(num(lat, "mean") > 0.0 && num(lat, "mean") <= max, "{lat}");
    assert!(max > 0.0, "{lat}");
}

#[test]
fn null_randread_prints_bdevperf_table_and_ladder() {
    let cfg = null_config("text");
    let out = oxperf(&[
        "bdev",
        "--json",
        cfg.to_str().unwrap(),
        "-q",
        "32",
        "-o",
        "4k",
        "-w",
        "randread",
        "-t",
        "1",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.starts_with("Running I/O for 1 seconds..."), "{text}");
    for needle in [
        "Latency(us)",
        "runtime(s)",
        "IOPS",
        "MiB/s",
        "Fail/s",
        "TO/s",
        "Average",
        "Job: Null0 (Core Mask 0x1)",
        "Latency percentiles (us):",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // The Total row: runtime, IOPS, MiB/s, Fail/s, TO/s, average, min, max.
    let total = text
        .lines()
        .find(|l| l.starts_with("Total"))
        .unwrap_or_else(|| panic!("no Total line in\n{text}"));
    let cols: Vec<f64> = total
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|c| c.parse().unwrap())
        .collect();
    assert_eq!(cols.len(), 8, "{total}");
    assert!(cols[0] > 0.5, "runtime {total}");
    assert!(cols[1] > 0.0, "IOPS {total}");
    assert!(
        (cols[2] - cols[1] * 4096.0 / 1048576.0).abs() < cols[2] * 0.01 + 0.01,
        "{total}"
    );
    assert_eq!(cols[3], 0.0, "no failures: {total}");
    assert!(
        cols[6] <= cols[5] && cols[5] <= cols[7],
        "min <= avg <= max: {total}"
    );
    // The ladder: p50 .. p99.99 in order, non-decreasing.
    let ladder: Vec<(f64, f64)> = text
        .lines()
        .skip_while(|l| !l.starts_with("Latency percentiles (us):"))
        .skip(1)
        .take(5)
        .map(|l| {
            let (p, v) = l
                .split_once("% :")
                .unwrap_or_else(|| panic!("bad ladder line {l:?}"));
            (
                p.trim().parse().unwrap(),
                v.trim().trim_end_matches("us").parse().unwrap(),
            )
        })
        .collect();
    let pcts: Vec<f64> = ladder.iter().map(|x| x.0).collect();
    assert_eq!(pcts, vec![50.0, 90.0, 99.0, 99.9, 99.99]);
    assert!(ladder.windows(2).all(|w| w[0].1 <= w[1].1), "{ladder:?}");
    assert!(text.contains(" 99.00000% : "), "{text}");
}

#[test]
fn json_output_has_the_design_schema() {
    let cfg = null_config("json");
    let (out, v) = run_json(
        &cfg,
        &["-q", "16", "-o", "4096", "-w", "randread", "-t", "1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_schema(&v);
    assert_eq!(v["workload"], "randread");
    assert_eq!(v["queue_depth"], 16);
    assert_eq!(v["io_size"], 4096);
    assert_eq!(v["io_failed"], 0);
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["job"], "Null0");
    assert_eq!(jobs[0]["writes"], 0, "randread only reads");
    assert!(jobs[0]["reads"].as_u64().unwrap() > 0);
    // MiB/s follows from IOPS and the I/O size.
    let expect = num(&v, "iops") * 4096.0 / 1048576.0;
    assert!((num(&v, "mib_s") - expect).abs() < expect * 1e-6);
}

#[test]
fn two_cores_run_one_job_each() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return; // the mask below needs two cores
    }
    let cfg = null_config("twocore");
    let (out, v) = run_json(
        &cfg,
        &["-q", "8", "-o", "4k", "-w", "read", "-t", "1", "-m", "0x3"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_schema(&v);
    let jobs = v["jobs"].as_array().unwrap();
    let cores: Vec<u64> = jobs.iter().map(|j| j["core"].as_u64().unwrap()).collect();
    assert_eq!(cores, vec![0, 1]);
    let sum: f64 = jobs.iter().map(|j| num(j, "iops")).sum();
    assert!(
        (sum - num(&v, "iops")).abs() < 1e-6 * sum,
        "total is the sum of the jobs"
    );
}

#[test]
fn malloc_verify_passes() {
    let cfg = malloc_config("verify");
    let (out, v) = run_json(&cfg, &["-q", "16", "-o", "8k", "-w", "verify", "-t", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_schema(&v);
    assert_eq!(v["mismatches"], 0);
    assert_eq!(v["io_failed"], 0);
    let job = &v["jobs"][0];
    assert_eq!(job["verify_range"]["start"], 0);
    assert_eq!(job["verify_range"]["length"], 4096);
    // Every write is read back: as many reads as writes, give or take the pairs in flight.
    let (r, w) = (
        job["reads"].as_u64().unwrap(),
        job["writes"].as_u64().unwrap(),
    );
    assert!(
        r > 0 && w > 0 && r.abs_diff(w) <= 16,
        "reads {r} writes {w}"
    );
}

#[test]
fn verify_text_mentions_the_range_and_result() {
    let cfg = malloc_config("verify-text");
    let out = oxperf(&[
        "bdev",
        "--json",
        cfg.to_str().unwrap(),
        "-q",
        "4",
        "-o",
        "4096",
        "-w",
        "verify",
        "-t",
        "1",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("Verification LBA range: start 0x0 length 0x1000"),
        "{text}"
    );
    assert!(
        text.contains("Verify: 0 I/O failed, 0 mismatch(es)"),
        "{text}"
    );
}

#[test]
fn verify_over_corrupting_error_bdev_fails_and_names_the_lba() {
    let cfg = config(
        "corrupt",
        serde_json::json!([
            {"method": "bdev_malloc_create",
             "params": {"name": "Malloc0", "num_blocks": 4096, "block_size": 4096}},
            {"method": "bdev_error_create", "params": {"base_name": "Malloc0"}},
            {"method": "bdev_error_inject_error",
             "params": {"name": "EE_Malloc0", "io_type": "read", "error_type": "corrupt_data",
                        "num": 1, "corrupt_offset": 1000, "corrupt_value": 255}}
        ]),
    );
    let (out, v) = run_json(&cfg, &["-q", "8", "-o", "4k", "-w", "verify", "-t", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // Malloc0 is claimed by the error bdev, so only EE_Malloc0 runs.
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["job"], "EE_Malloc0");
    assert_eq!(v["mismatches"], 1, "exactly one read was corrupted: {v}");
    assert_eq!(v["io_failed"], 0);
    let err = stderr(&out);
    assert!(err.contains("verify mismatch on EE_Malloc0: LBA "), "{err}");
    assert!(err.contains("data corruption"), "{err}");
    assert!(err.contains("FAILED"), "{err}");
}

#[test]
fn injected_write_failures_are_counted_and_fail_the_run() {
    let cfg = config(
        "fail",
        serde_json::json!([
            {"method": "bdev_malloc_create",
             "params": {"name": "Malloc0", "num_blocks": 4096, "block_size": 4096}},
            {"method": "bdev_error_create", "params": {"base_name": "Malloc0"}},
            {"method": "bdev_error_inject_error",
             "params": {"name": "EE_Malloc0", "io_type": "write", "error_type": "failure",
                        "num": 3}}
        ]),
    );
    let (out, v) = run_json(&cfg, &["-q", "4", "-o", "4k", "-w", "randwrite", "-t", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(v["io_failed"], 3, "{v}");
    assert_eq!(v["jobs"][0]["errors"].as_array().unwrap().len(), 3);
    assert!(stderr(&out).contains("write of LBA "), "{}", stderr(&out));
}

#[test]
fn rw_mix_follows_rwmixread() {
    let cfg = malloc_config("mix");
    for (workload, mix, lo, hi) in [("randrw", "70", 0.65, 0.75), ("rw", "50", 0.45, 0.55)] {
        let (out, v) = run_json(
            &cfg,
            &["-q", "8", "-o", "4k", "-w", workload, "-M", mix, "-t", "1"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_schema(&v);
        let job = &v["jobs"][0];
        let (r, w) = (
            job["reads"].as_f64().unwrap(),
            job["writes"].as_f64().unwrap(),
        );
        assert!(r + w > 2000.0, "enough I/O to judge the mix: {r} {w}");
        let ratio = r / (r + w);
        assert!(
            ratio > lo && ratio < hi,
            "{workload} -M {mix}: read ratio {ratio}"
        );
    }
    let (out, v) = run_json(
        &cfg,
        &["-q", "8", "-o", "4k", "-w", "randrw", "-M", "0", "-t", "1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["jobs"][0]["reads"], 0);
}

#[test]
fn uring_bdev_on_a_temp_file() {
    let file = scratch("uring.img");
    std::fs::write(&file, vec![0x5a; 16 << 20]).unwrap();
    let cfg = config(
        "uring",
        serde_json::json!([
            {"method": "bdev_uring_create",
             "params": {"name": "Uring0", "filename": file.to_str().unwrap(), "block_size": 4096}}
        ]),
    );
    let (out, v) = run_json(&cfg, &["-q", "16", "-o", "4k", "-w", "randread", "-t", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_schema(&v);
    assert_eq!(v["jobs"][0]["job"], "Uring0");
    assert_eq!(v["io_failed"], 0);

    let (out, v) = run_json(&cfg, &["-q", "8", "-o", "16k", "-w", "verify", "-t", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["mismatches"], 0);
    assert!(num(&v, "iops") > 0.0);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn delay_bdev_runs_instead_of_its_base() {
    let cfg = config(
        "delay",
        serde_json::json!([
            {"method": "bdev_malloc_create",
             "params": {"name": "Malloc0", "num_blocks": 4096, "block_size": 4096}},
            {"method": "bdev_delay_create",
             "params": {"base_bdev_name": "Malloc0", "name": "Delay0",
                        "avg_read_latency": 200, "p99_read_latency": 200,
                        "avg_write_latency": 200, "p99_write_latency": 200}}
        ]),
    );
    let (out, v) = run_json(&cfg, &["-q", "4", "-o", "4k", "-w", "randread", "-t", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{v}");
    assert_eq!(jobs[0]["job"], "Delay0");
    assert_schema(&v);
    assert_eq!(v["io_failed"], 0);
}

#[test]
fn named_bdevs_select_the_jobs() {
    let cfg = config(
        "named",
        serde_json::json!([
            {"method": "bdev_null_create",
             "params": {"name": "Null0", "num_blocks": 1024, "block_size": 512}},
            {"method": "bdev_null_create",
             "params": {"name": "Null1", "num_blocks": 1024, "block_size": 512}}
        ]),
    );
    let (out, v) = run_json(
        &cfg,
        &[
            "-q", "2", "-o", "512", "-w", "read", "-t", "1", "-b", "Null1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Null1"]);
    let (out, v) = run_json(&cfg, &["-q", "2", "-o", "512", "-w", "read", "-t", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        v["jobs"].as_array().unwrap().len(),
        2,
        "both bdevs by default"
    );
}

/// Runs oxperf expecting a usage error whose message contains every `needles`.
fn expect_error(args: &[&str], needles: &[&str]) {
    let out = oxperf(args);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "{args:?} should fail; stdout: {}",
        stdout(&out)
    );
    assert_ne!(out.status.code(), None, "{args:?} must exit, not crash");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}:\n{err}");
    }
    assert!(
        stdout(&out).is_empty() || !stdout(&out).contains("Total"),
        "{args:?}"
    );
}

#[test]
fn bad_arguments_give_clear_errors() {
    let cfg = null_config("bad");
    let c = cfg.to_str().unwrap();
    let base = |extra: &[&'static str]| {
        let mut v: Vec<String> = [
            "bdev", "--json", c, "-q", "4", "-o", "4k", "-w", "randread", "-t", "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for e in extra {
            v.push(e.to_string());
        }
        v
    };
    let run = |args: Vec<String>, needles: &[&str]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_error(&refs, needles);
    };
    run(
        [
            "bdev",
            "--json",
            c,
            "-q",
            "4",
            "-o",
            "4k",
            "-w",
            "randomread",
            "-t",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        &["unknown workload 'randomread'", "randread"],
    );
    run(
        [
            "bdev", "--json", c, "-q", "0", "-o", "4k", "-w", "read", "-t", "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        &["queue depth"],
    );
    run(
        [
            "bdev",
            "--json",
            c,
            "-q",
            "4000000000",
            "-o",
            "4k",
            "-w",
            "read",
            "-t",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        &["queue depth) must be between 1 and 65536"],
    );
    run(
        [
            "bdev", "--json", c, "-q", "4", "-o", "4x", "-w", "read", "-t", "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        &["invalid size '4x'"],
    );
    run(
        [
            "bdev", "--json", c, "-q", "4", "-o", "4k", "-w", "read", "-t", "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        &["-t must be a positive number of seconds"],
    );
    run(
        base(&["-M", "30"]),
        &["-M (rwmixread) applies only to rw and randrw"],
    );
    run(
        [
            "bdev", "--json", c, "-q", "4", "-o", "4k", "-w", "randrw", "-M", "101", "-t", "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        &["between 0 and 100"],
    );
    run(base(&["-b", "Nope0"]), &["bdev Nope0 not found", "Null0"]);
    run(base(&["-m", "0x0"]), &["invalid core mask"]);
    run(base(&["-m", "0x10000"]), &["core mask", "core 16"]);
    run(base(&["--output", "xml"]), &["xml"]);
    // Missing required options are clap errors.
    expect_error(&["bdev", "--json", c, "-q", "4"], &["required"]);
    expect_error(
        &["bdev", "-q", "4", "-o", "4k", "-w", "read", "-t", "1"],
        &["--json"],
    );
    // Config problems.
    expect_error(
        &[
            "bdev",
            "--json",
            "/nonexistent/oxperf.json",
            "-q",
            "1",
            "-o",
            "4k",
            "-w",
            "read",
            "-t",
            "1",
        ],
        &["cannot read config /nonexistent/oxperf.json"],
    );
    let garbage = scratch("garbage.json");
    std::fs::write(&garbage, "{ not json").unwrap();
    expect_error(
        &[
            "bdev",
            "--json",
            garbage.to_str().unwrap(),
            "-q",
            "1",
            "-o",
            "4k",
            "-w",
            "read",
            "-t",
            "1",
        ],
        &["not valid JSON"],
    );
    let unknown = config(
        "unknown-method",
        serde_json::json!([{"method": "bdev_frobnicate_create", "params": {}}]),
    );
    expect_error(
        &[
            "bdev",
            "--json",
            unknown.to_str().unwrap(),
            "-q",
            "1",
            "-o",
            "4k",
            "-w",
            "read",
            "-t",
            "1",
        ],
        &[
            "unsupported config method 'bdev_frobnicate_create'",
            "bdev_malloc_create",
        ],
    );
    let bad_params = config(
        "bad-params",
        serde_json::json!([{"method": "bdev_null_create", "params": {"name": "N", "block_size": 512}}]),
    );
    expect_error(
        &[
            "bdev",
            "--json",
            bad_params.to_str().unwrap(),
            "-q",
            "1",
            "-o",
            "4k",
            "-w",
            "read",
            "-t",
            "1",
        ],
        &["bdev_null_create", "num_blocks"],
    );
    let empty = config("empty", serde_json::json!([]));
    expect_error(
        &[
            "bdev",
            "--json",
            empty.to_str().unwrap(),
            "-q",
            "1",
            "-o",
            "4k",
            "-w",
            "read",
            "-t",
            "1",
        ],
        &["no bdev"],
    );
}

#[test]
fn io_size_must_be_a_multiple_of_the_block_size() {
    let cfg = malloc_config("bs"); // 4096-byte blocks
    let c = cfg.to_str().unwrap();
    for size in ["512", "6k"] {
        let out = oxperf(&[
            "bdev", "--json", c, "-q", "1", "-o", size, "-w", "randread", "-t", "1",
        ]);
        assert_eq!(out.status.code(), Some(2), "{size}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("not a multiple of bdev Malloc0's block size 4096"),
            "{err}"
        );
        assert!(
            !stdout(&out).contains("Running I/O"),
            "fails before starting"
        );
    }
    let out = oxperf(&[
        "bdev", "--json", c, "-q", "1", "-o", "32M", "-w", "randread", "-t", "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("larger than bdev Malloc0"),
        "{}",
        stderr(&out)
    );
    // Verify needs room for every slot of the queue.
    let out = oxperf(&[
        "bdev", "--json", c, "-q", "64", "-o", "1M", "-w", "verify", "-t", "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("too small to verify"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn nvme_subcommand_reports_an_unreachable_target_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let trid =
        format!("trtype:tcp traddr:127.0.0.1 trsvcid:{port} subnqn:nqn.2016-06.io.oxstor:none");
    let out = oxperf(&[
        "nvme", "-r", &trid, "-q", "1", "-o", "4k", "-w", "randread", "-t", "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bdev_nvme_attach_controller failed"),
        "{}",
        stderr(&out)
    );
    let out = oxperf(&[
        "nvme",
        "-r",
        "trtype:rdma traddr:1.2.3.4",
        "-q",
        "1",
        "-o",
        "4k",
        "-w",
        "read",
        "-t",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("only TCP"), "{}", stderr(&out));
}

#[test]
fn every_raid_level_passes_verify() {
    for (level, strip) in [
        ("raid0", Some(64)),
        ("concat", None),
        ("raid1", None),
        ("raid10", Some(64)),
        ("raid5", Some(64)),
        ("raid6", Some(64)),
    ] {
        let mut calls: Vec<Value> = (0..4)
            .map(|i| {
                serde_json::json!({"method": "bdev_malloc_create",
                    "params": {"name": format!("M{i}"), "num_blocks": 8192, "block_size": 4096}})
            })
            .collect();
        let mut raid = serde_json::json!({"name": "R0", "raid_level": level,
            "base_bdevs": ["M0", "M1", "M2", "M3"]});
        if let Some(kb) = strip {
            raid["strip_size_kb"] = serde_json::json!(kb);
        }
        calls.push(serde_json::json!({"method": "bdev_raid_create", "params": raid}));
        let cfg = config(&format!("raid-{level}"), Value::Array(calls));
        let (out, v) = run_json(
            &cfg,
            &[
                "-q", "16", "-o", "16k", "-w", "verify", "-t", "1", "-m", "0x3",
            ],
        );
        assert!(out.status.success(), "{level}: {}", stderr(&out));
        assert_eq!(v["mismatches"].as_u64(), Some(0), "{level}: {v}");
        assert!(num(&v, "iops") > 0.0, "{level}: {v}");
        let jobs = v["jobs"].as_array().unwrap();
        assert!(
            jobs.iter().all(|j| j["job"] == "R0"),
            "only the array runs, not its members: {v}"
        );
    }
}
