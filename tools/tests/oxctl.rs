//! The `oxctl` client: output and exit codes.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Output};

fn oxctl(d: &Daemon, args: &[&str]) -> Output {
    Command::new(OXCTL)
        .arg("-s")
        .arg(&d.sock)
        .args(args)
        .output()
        .expect("run oxctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn success_prints_pretty_json() {
    let d = Daemon::start();
    let out = oxctl(&d, &["spdk_get_version"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\n  \""), "pretty-printed: {stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["version"], "oxstor v0.1.0");

    let out = oxctl(
        &d,
        &[
            "bdev_malloc_create",
            r#"{"name":"M7","num_blocks":64,"block_size":512}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "M7",
        "a name prints bare, like rpc.py"
    );
    assert_eq!(bdev_names(&d), vec!["M7"]);
}

#[test]
fn rpc_error_exits_one() {
    let d = Daemon::start();
    let out = oxctl(&d, &["bdev_malloc_delete", r#"{"name":"ghost"}"#]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("error -19: "), "{err}");
    assert!(out.stdout.is_empty());
    let out = oxctl(&d, &["no_such_method"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error -32601: "));
}

#[test]
fn bad_params_argument_exits_two() {
    let d = Daemon::start();
    let out = oxctl(&d, &["bdev_get_bdevs", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not valid JSON"));
    let out = oxctl(&d, &["bdev_get_bdevs", "42"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("object or array"));
}

#[test]
fn connection_failure_exits_two() {
    let dir = TempDir::new("nodaemon");
    let sock = dir.path("nobody.sock");
    let out = Command::new(OXCTL)
        .arg("-s")
        .arg(&sock)
        .arg("spdk_get_version")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot connect") && err.contains("nobody.sock"),
        "{err}"
    );
}

#[test]
fn socket_from_environment() {
    let d = Daemon::start();
    let out = Command::new(OXCTL)
        .env("OXSTOR_RPC_SOCK", &d.sock)
        .arg("rpc_get_methods")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().any(|m| m == "bdev_get_iostat"));
}
