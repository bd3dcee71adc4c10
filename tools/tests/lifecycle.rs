//! Start-up and shutdown of the daemon process: signals, the socket file, bad arguments.

mod common;

use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::time::Duration;

#[test]
fn socket_is_private() {
    let d = Daemon::start();
    let meta = std::fs::metadata(&d.sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn sigterm_exits_zero_and_removes_the_socket() {
    let mut d = Daemon::start();
    let file = d.dir.path("disk.img");
    file_of_size(&file, 1 << 20);
    malloc(&d, "M0");
    d.ok(
        "bdev_delay_create",
        json!({"base_bdev_name": "M0", "name": "D0", "avg_read_latency": 1,
               "p99_read_latency": 1, "avg_write_latency": 1, "p99_write_latency": 1}),
    );
    d.ok("bdev_uring_create", json!({"name": "U0", "filename": file}));
    // An idle client stays connected through shutdown.
    let _idle = d.client();
    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "{}", d.stderr());
    assert!(!d.sock.exists(), "socket file left behind");
    let err = d.stderr();
    assert_no_panic(&err);
    assert!(err.contains("SIGTERM"), "{err}");
    // Stacked bdevs go before their bases.
    let d0 = err.find("bdev D0 unregistered").expect("D0 removed");
    let m0 = err.find("bdev M0 unregistered").expect("M0 removed");
    assert!(d0 < m0, "{err}");
}

#[test]
fn sigint_also_shuts_down_cleanly() {
    let mut d = Daemon::start();
    let pid = d.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(d.wait(Duration::from_secs(30)).code(), Some(0));
    assert!(!d.sock.exists());
}

#[test]
fn kill_instance_rpc_shuts_down() {
    let mut d = Daemon::start();
    malloc(&d, "M0");
    assert_eq!(
        d.ok("spdk_kill_instance", json!({"sig_name": "SIGTERM"})),
        true
    );
    assert_eq!(d.wait(Duration::from_secs(30)).code(), Some(0));
    assert!(!d.sock.exists());
    assert!(d.stderr().contains("bdev M0 unregistered"));
}

#[test]
fn refuses_a_socket_a_live_daemon_owns() {
    let d = Daemon::start();
    let sock = d.sock.to_str().unwrap().to_string();
    let other = TempDir::new("second");
    let f = Daemon::expect_failure(&other, &["-r", &sock]);
    assert_eq!(f.status.code(), Some(1));
    assert!(f.stderr.contains("already serving"), "{}", f.stderr);
    assert_no_panic(&f.stderr);
    // The first daemon is untouched.
    d.assert_alive();
}

#[test]
fn replaces_a_stale_socket() {
    let dir = TempDir::new("stale");
    // A socket file nobody listens on any more.
    drop(UnixListener::bind(dir.path("rpc.sock")).unwrap());
    assert!(dir.path("rpc.sock").exists());
    let d = Daemon::start_in(dir, &[]);
    d.assert_alive();
}

#[test]
fn refuses_to_replace_a_regular_file() {
    let dir = TempDir::new("regular");
    std::fs::write(dir.path("rpc.sock"), b"precious").unwrap();
    let f = Daemon::expect_failure(&dir, &[]);
    assert_eq!(f.status.code(), Some(1));
    assert!(f.stderr.contains("not a socket"), "{}", f.stderr);
    assert_eq!(std::fs::read(dir.path("rpc.sock")).unwrap(), b"precious");
}

#[test]
fn bad_core_mask_is_a_clear_error() {
    let dir = TempDir::new("mask");
    let f = Daemon::expect_failure(&dir, &["-m", "0xZZ"]);
    assert_ne!(f.status.code(), Some(0));
    assert!(f.stderr.contains("0xZZ"), "{}", f.stderr);
    assert_no_panic(&f.stderr);
}

#[test]
fn no_backoff_flag_runs() {
    let d = Daemon::start_with(&["--no-backoff"]);
    let r = d.ok("framework_get_reactors", Value::Null);
    assert_eq!(r["reactors"].as_array().unwrap().len(), 1);
}
