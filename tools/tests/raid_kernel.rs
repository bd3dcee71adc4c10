//! A raid5 over four error-injection bdevs, exported over NVMe/TCP to the Linux kernel
//! initiator in a QEMU guest (scripts/initiator/guest-raid5-failure.sh): fio writes with
//! crc32c verification while the host fails one member; the array goes degraded and every
//! verify pass still succeeds.
//!
//! Needs root and QEMU like kernel_initiator.rs. Set OXSTOR_SKIP_VM=1 to skip it.

mod common;

use common::{free_port, Daemon};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const NQN: &str = "nqn.2016-06.io.oxstor:raid5";

fn raid(d: &Daemon) -> Value {
    let all = d.ok("bdev_raid_get_bdevs", json!({"category": "all"}));
    all.as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "R5"))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn raid5_member_failure_under_kernel_fio_verify() {
    if std::env::var("OXSTOR_SKIP_VM").as_deref() == Ok("1") {
        eprintln!("skipped: OXSTOR_SKIP_VM=1");
        return;
    }
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/initiator");
    let port = free_port().to_string();
    let mut d = Daemon::start_with(&["-m", "0x3"]);
    let mut members = Vec::new();
    for i in 0..4 {
        d.ok(
            "bdev_malloc_create",
            json!({"name": format!("M{i}"), "num_blocks": 8192, "block_size": 4096}),
        );
        d.ok("bdev_error_create", json!({"base_name": format!("M{i}")}));
        members.push(format!("EE_M{i}"));
    }
    d.ok(
        "bdev_raid_create",
        json!({"name": "R5", "raid_level": "raid5", "strip_size_kb": 64, "base_bdevs": members}),
    );
    let r = raid(&d);
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["num_base_bdevs_operational"], 4, "{r}");
    d.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    d.ok(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true, "serial_number": "OXR5"}),
    );
    d.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "R5"}}),
    );
    d.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "listen_address": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": port}}),
    );

    let mut child = Command::new(scripts.join("linux-nvme-tcp.sh"))
        .args(["--kernel-quiet", "-t", "600", "-p", &port])
        .args(["-e", &format!("NVME_NQN={NQN}")])
        .arg(scripts.join("guest-raid5-failure.sh"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the QEMU initiator harness");
    let stderr = child.stderr.take().expect("piped stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let mut console = String::new();
    let mut injected = false;
    let mut writes_at_injection = 0;
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let Ok(line) = line else { break };
        if line.contains("@@FAIL-A-MEMBER@@") && !injected {
            // Step 1 wrote 4096 blocks; fail the member once step 2 is well under way.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            loop {
                let st = d.ok("bdev_get_iostat", json!({"name": "R5"}));
                writes_at_injection = st["bdevs"][0]["num_write_ops"].as_u64().unwrap_or(0);
                if writes_at_injection >= 4096 + 256 || std::time::Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            d.ok(
                "bdev_error_inject_error",
                json!({"name": "EE_M2", "io_type": "all", "error_type": "failure", "num": 1_000_000_000u64}),
            );
            injected = true;
        }
        console.push_str(&line);
        console.push('\n');
    }
    let status = child.wait().expect("harness exit status");
    console.push_str(&stderr_reader.join().unwrap_or_default());
    assert!(
        injected,
        "the guest never asked for the member failure:\n{console}"
    );
    assert!(
        status.success(),
        "guest checks failed ({status}):\n{console}\n{}",
        d.stderr()
    );
    for check in [
        "connect",
        "fio-verify-healthy",
        "fio-verify-during-member-failure",
        "fio-verify-only-degraded",
        "fio-verify-degraded-writes",
        "disconnect",
    ] {
        assert!(
            console.contains(&format!("CHECK {check} ok")),
            "check {check} missing:\n{console}"
        );
    }
    assert!(console.contains("ALL CHECKS PASSED"), "{console}");

    // The failure landed while the guest's fio was writing, and the array is degraded.
    let st = d.ok("bdev_get_iostat", json!({"name": "R5"}));
    let writes_end = st["bdevs"][0]["num_write_ops"].as_u64().unwrap_or(0);
    eprintln!("R5 writes: {writes_at_injection} at the failure, {writes_end} at the end");
    assert!(
        writes_at_injection > 4096 && writes_at_injection < 4096 + 8192,
        "the failure came while the second fio pass was writing: {writes_at_injection} writes"
    );
    assert_eq!(writes_end, 4 * 4096, "every fio write reached the array");
    let r = raid(&d);
    assert_eq!(r["state"], "online", "degraded but serving: {r}");
    assert_eq!(r["num_base_bdevs_operational"], 3, "{r}");
    let failed: Vec<&Value> = r["base_bdevs_list"]
        .as_array()
        .expect("base_bdevs_list")
        .iter()
        .filter(|b| b["is_configured"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{r}");
    assert_eq!(failed[0]["name"], "EE_M2", "{r}");

    let status = d.terminate();
    assert!(status.success(), "daemon exit: {status}");
    common::assert_no_panic(&d.stderr());
}
