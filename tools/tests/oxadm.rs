//! The `oxadm` binary: config handling, dry runs and exit codes (no daemon is started: the
//! daemon's repl_* methods are tested with the daemon).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const OXADM: &str = env!("CARGO_BIN_EXE_oxadm");

const ISSUE: &str = "resource r0 {
  on hw1 { device ox0; disk Raid5; address 127.0.0.1:7788; meta-disk internal; }
  on hw2 { device ox0; disk Malloc1; address 127.0.0.2:7788; meta-disk internal; }
}
";

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("oxadm-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn oxadm(conf: &Path, args: &[&str]) -> Output {
    Command::new(OXADM)
        .arg("-c")
        .arg(conf)
        .args(args)
        .env_remove("OXSTOR_RPC_SOCK")
        .output()
        .expect("run oxadm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn dump_shows_node_ids_and_the_implicit_connection() {
    let d = Dir::new("dump");
    let conf = d.file("oxstor.conf", ISSUE);
    let out = oxadm(&conf, &["dump", "r0"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dump = text(&out.stdout);
    assert!(dump.contains("resource r0 {"), "{dump}");
    assert!(dump.contains("node-id 1;"), "{dump}");
    assert!(dump.contains("node-id 0;"), "{dump}");
    assert!(dump.contains("connection {"), "{dump}");
    assert!(
        dump.contains("host hw1 address ipv4 127.0.0.1:7788;"),
        "{dump}"
    );
    // The dump is itself a valid config that dumps the same.
    let again = d.file("again.conf", &dump);
    let out2 = oxadm(&again, &["dump", "all"]);
    assert_eq!(out2.status.code(), Some(0), "{}", text(&out2.stderr));
    let strip = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(strip(&text(&out2.stdout)), strip(&dump));
}

#[test]
fn broken_file_exits_10_with_file_and_line() {
    let d = Dir::new("broken");
    let conf = d.file(
        "r0.res",
        "resource r0 {\n  on hw1 {\n    device ox0;\n    disk Malloc1\n    meta-disk internal;\n  }\n}\n",
    );
    let out = oxadm(&conf, &["--host", "hw1", "up", "r0"]);
    assert_eq!(out.status.code(), Some(10));
    let err = text(&out.stderr);
    let want = format!("{}:4: expected ';' after 'disk Malloc1'", conf.display());
    assert!(err.contains(&want), "{err}");

    let out = oxadm(&d.0.join("missing.conf"), &["dump", "r0"]);
    assert_eq!(out.status.code(), Some(10));
    assert!(text(&out.stderr).contains("missing.conf: cannot read"));

    let conf = d.file("ok.conf", ISSUE);
    let out = oxadm(&conf, &["dump", "r9"]);
    assert_eq!(out.status.code(), Some(10));
    assert!(text(&out.stderr).contains("'r9' is not defined"));
}

#[test]
fn unknown_host_exits_10_listing_the_hosts() {
    let d = Dir::new("host");
    let conf = d.file("oxstor.conf", ISSUE);
    let out = oxadm(&conf, &["--host", "hw9", "--dry-run", "up", "r0"]);
    assert_eq!(out.status.code(), Some(10));
    let err = text(&out.stderr);
    assert!(err.contains("hw9") && err.contains("hw1, hw2"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn dry_run_up_prints_the_calls_in_order() {
    let d = Dir::new("dry");
    let conf = d.file("oxstor.conf", ISSUE);
    let out = oxadm(&conf, &["--host", "hw1", "-d", "up", "r0"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // serde_json (without preserve_order) prints object keys sorted.
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            r#"repl_new_resource {"name":"r0","node_id":1}"#,
            r#"repl_attach {"device":"ox0","disk":"Raid5","meta_disk":"internal","resource":"r0","volume":0}"#,
            r#"repl_new_peer {"disk":{},"net":{},"peer_name":"hw2","peer_node_id":0,"resource":"r0"}"#,
            r#"repl_new_path {"local_addr":"127.0.0.1:7788","peer_node_id":0,"remote_addr":"127.0.0.2:7788","resource":"r0"}"#,
            r#"repl_connect {"peer_node_id":0,"resource":"r0"}"#,
        ]
    );
    // Options after the command work too, and the other commands plan their calls.
    let out = oxadm(
        &conf,
        &[
            "connect",
            "r0",
            "--host",
            "hw2",
            "--dry-run",
            "--discard-my-data",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        r#"repl_connect {"discard_my_data":true,"peer_node_id":1,"resource":"r0"}"#
    );
    let out = oxadm(&conf, &["-d", "primary", "--force", "r0"]);
    assert_eq!(
        text(&out.stdout).trim(),
        r#"repl_primary {"force":true,"resource":"r0"}"#
    );
    let out = oxadm(&conf, &["-d", "--host", "hw2", "create-md", "r0/0"]);
    assert_eq!(
        text(&out.stdout).trim(),
        r#"repl_create_md {"resource":"r0","volume":0}"#
    );
    let out = oxadm(&conf, &["-d", "new-current-uuid", "--clear-bitmap", "all"]);
    assert_eq!(
        text(&out.stdout).trim(),
        r#"repl_new_current_uuid {"clear_bitmap":true,"resource":"r0"}"#
    );
    let out = oxadm(&conf, &["-d", "down", "r0"]);
    assert_eq!(text(&out.stdout).trim(), r#"repl_down {"resource":"r0"}"#);
}

#[test]
fn no_daemon_exits_20() {
    let d = Dir::new("nodaemon");
    let conf = d.file("oxstor.conf", ISSUE);
    let sock = d.0.join("no-such.sock");
    let sock = sock.to_str().unwrap();
    let out = oxadm(&conf, &["-s", sock, "status", "r0"]);
    assert_eq!(out.status.code(), Some(20), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot connect"));
    let out = oxadm(&conf, &["-s", sock, "--host", "hw1", "up", "r0"]);
    assert_eq!(out.status.code(), Some(20), "{}", text(&out.stderr));
}
