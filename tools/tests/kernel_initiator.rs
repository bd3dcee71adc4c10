//! The judge of the NVMe/TCP target: Debian's own Linux kernel initiator (nvme-tcp, nvme-cli,
//! fio) in a QEMU guest, against the real daemon on this host. One guest boot runs every
//! check in scripts/initiator/guest-kernel-initiator.sh.
//!
//! Needs root (the harness installs QEMU and fetches the kernel package with apt on first
//! use). Set OXSTOR_SKIP_VM=1 to skip it explicitly on machines that cannot run it.

mod common;

use common::{free_port, Daemon};
use serde_json::json;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const NQN: &str = "nqn.2016-06.io.oxstor:cnode1";
const DENIED_NQN: &str = "nqn.2016-06.io.oxstor:denied";
const OTHER_HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";

#[test]
fn linux_kernel_initiator_discovers_connects_and_verifies() {
    if std::env::var("OXSTOR_SKIP_VM").as_deref() == Ok("1") {
        eprintln!("skipped: OXSTOR_SKIP_VM=1");
        return;
    }
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/initiator");
    let port = free_port().to_string();
    let mut d = Daemon::start_with(&["-m", "0x3"]);
    d.ok(
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": 65536, "block_size": 4096}),
    );
    d.ok(
        "bdev_malloc_create",
        json!({"name": "Malloc1", "num_blocks": 1024, "block_size": 4096}),
    );
    d.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    d.ok(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true, "serial_number": "OX0001"}),
    );
    d.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0"}}),
    );
    d.ok(
        "nvmf_create_subsystem",
        json!({"nqn": DENIED_NQN, "serial_number": "OX0002"}),
    );
    d.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": DENIED_NQN, "host": OTHER_HOST}),
    );
    d.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": DENIED_NQN, "namespace": {"bdev_name": "Malloc1"}}),
    );
    for nqn in [NQN, DENIED_NQN] {
        d.ok(
            "nvmf_subsystem_add_listener",
            json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": port}}),
        );
    }
    d.ok(
        "bdev_malloc_create",
        json!({"name": "Malloc2", "num_blocks": 2048, "block_size": 4096}),
    );
    let mut child = Command::new(scripts.join("linux-nvme-tcp.sh"))
        .args(["--kernel-quiet", "-t", "600", "-p", &port])
        .args([
            "-e",
            &format!("NVME_NQN={NQN}"),
            "-e",
            &format!("NVME_NQN_DENIED={DENIED_NQN}"),
        ])
        .args(["-e", "EXPECT_BYTES=268435456", "-e", "EXPECT_SERIAL=OX0001"])
        .arg(scripts.join("guest-kernel-initiator.sh"))
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
    // Follow the console: when the guest asks, hot-add a namespace while it is connected.
    let mut console = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let Ok(line) = line else { break };
        if line.contains("@@ADD-NAMESPACE-2@@") {
            d.ok(
                "nvmf_subsystem_add_ns",
                json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc2", "nsid": 2}}),
            );
        }
        console.push_str(&line);
        console.push('\n');
    }
    let status = child.wait().expect("harness exit status");
    console.push_str(&stderr_reader.join().unwrap_or_default());
    assert!(
        status.success(),
        "guest checks failed ({status}):\n{console}"
    );
    for check in [
        "discover",
        "connect",
        "namespace-hot-add-aer",
        "namespace-size",
        "id-ctrl",
        "id-ns",
        "smart-log",
        "fio-randwrite-4k-verify-64MiB",
        "fio-write-128k-verify",
        "flush-write-zeroes-dsm",
        "denied-host-refused",
        "disconnect",
    ] {
        assert!(
            console.contains(&format!("CHECK {check} ok")),
            "check {check} missing:\n{console}"
        );
    }
    assert!(console.contains("ALL CHECKS PASSED"), "{console}");

    // The daemon saw the host come and go without a single error.
    let stats = d.ok("nvmf_get_stats", json!({}));
    let io_qpairs: u64 = stats["poll_groups"]
        .as_array()
        .map(|g| g.iter().map(|p| p["io_qpairs"].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0);
    assert!(io_qpairs >= 2, "the host used several I/O queues: {stats}");
    let status = d.terminate();
    assert!(status.success(), "daemon exit: {status}");
    let log = d.stderr();
    common::assert_no_panic(&log);
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains(" ERROR ")
                || (l.contains(" WARN ")
                    && !l.contains("not allowed to connect")
                    && !l.contains("hugepages"))
        })
        .collect();
    assert!(
        errors.is_empty(),
        "daemon logged problems:\n{}",
        errors.join("\n")
    );
}
