//! `--json` config files: SPDK's format, round trips through save_config, and clear failures.

mod common;

use common::*;
use serde_json::{json, Value};

fn write_json(path: &std::path::Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

#[test]
fn save_config_round_trip_is_byte_identical() {
    let d = Daemon::start();
    let file = d.dir.path("disk.img");
    file_of_size(&file, 4 << 20);
    malloc(&d, "M0");
    malloc(&d, "M1");
    d.ok(
        "bdev_null_create",
        json!({"name": "N0", "num_blocks": 1024, "block_size": 4096}),
    );
    d.ok(
        "bdev_uring_create",
        json!({"name": "U0", "filename": file, "block_size": 512}),
    );
    d.ok(
        "bdev_delay_create",
        json!({"base_bdev_name": "M0", "name": "D0", "avg_read_latency": 5,
               "p99_read_latency": 50, "avg_write_latency": 6, "p99_write_latency": 60}),
    );
    d.ok("bdev_error_create", json!({"base_name": "M1"}));
    let saved = d.ok("save_config", Value::Null);

    let sub = &saved["subsystems"][0];
    assert_eq!(sub["subsystem"], "bdev");
    let methods: Vec<&str> = sub["config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "bdev_malloc_create",
            "bdev_malloc_create",
            "bdev_null_create",
            "bdev_uring_create",
            "bdev_delay_create",
            "bdev_error_create",
            "bdev_wait_for_examine"
        ]
    );

    let dir = TempDir::new("cfg");
    let cfg = dir.path("saved.json");
    write_json(&cfg, &saved);
    let cfg_str = cfg.to_str().unwrap().to_string();
    let d2 = Daemon::start_with(&["--json", &cfg_str]);
    let again = d2.ok("save_config", Value::Null);
    assert_eq!(
        serde_json::to_string(&saved).unwrap(),
        serde_json::to_string(&again).unwrap(),
        "save_config after --json differs"
    );
    // UUIDs survive, so hosts see the same devices.
    assert_eq!(
        d.ok("bdev_get_bdevs", json!({"name": "D0"}))[0]["uuid"],
        d2.ok("bdev_get_bdevs", json!({"name": "D0"}))[0]["uuid"]
    );
    // -c is accepted as an alias.
    drop(d2);
    let d3 = Daemon::start_with(&["-c", &cfg_str]);
    assert_eq!(bdev_names(&d3).len(), 6);
}

#[test]
fn empty_daemon_saves_just_the_barrier() {
    let d = Daemon::start();
    assert_eq!(
        d.ok("save_config", Value::Null),
        json!({"subsystems":[
            {"subsystem":"bdev","config":[{"method":"bdev_wait_for_examine"}]},
            {"subsystem":"nvmf","config":[]}
        ]})
    );
}

#[test]
fn spdk_bookkeeping_and_unknown_empty_subsystems_are_accepted() {
    let dir = TempDir::new("spdk");
    let cfg = dir.path("spdk.json");
    write_json(
        &cfg,
        &json!({"subsystems": [
            {"subsystem": "keyring", "config": []},
            {"subsystem": "iobuf", "config": [
                {"method": "iobuf_set_options", "params": {"small_pool_count": 8192}}]},
            {"subsystem": "sock", "config": [
                {"method": "sock_impl_set_options", "params": {"impl_name": "posix"}}]},
            {"subsystem": "vmd", "config": null},
            {"subsystem": "accel", "config": [{"method": "accel_set_options", "params": {}}]},
            {"subsystem": "bdev", "config": [
                {"method": "bdev_set_options", "params": {"bdev_io_pool_size": 65535}},
                {"method": "bdev_raid_set_options", "params": {"process_window_size_kb": 1024}},
                {"method": "bdev_nvme_set_options", "params": {"action_on_timeout": "none"}},
                {"method": "bdev_nvme_set_hotplug", "params": {"enable": false}},
                {"method": "bdev_malloc_create",
                 "params": {"name": "Malloc0", "num_blocks": 2048, "block_size": 512}},
                {"method": "bdev_wait_for_examine"}]},
            {"subsystem": "nvmf", "config": [
                {"method": "nvmf_set_config", "params": {}},
                {"method": "nvmf_set_max_subsystems", "params": {"max_subsystems": 1024}},
                {"method": "nvmf_set_crdt", "params": {}}]},
            {"subsystem": "scsi"}
        ]}),
    );
    let d = Daemon::start_in(dir, &["--json", cfg.to_str().unwrap()]);
    assert_eq!(bdev_names(&d), vec!["Malloc0"]);
}

enum Body {
    Json(Value),
    Text(&'static str),
    Missing,
}

/// Each bad config: the daemon exits 1, names the file (and the call), and does not panic.
#[test]
fn invalid_configs_fail_cleanly() {
    let dir = TempDir::new("bad");
    let good_malloc = json!({"method": "bdev_malloc_create",
                             "params": {"name": "M0", "num_blocks": 64, "block_size": 512}});
    let cases: Vec<(&str, Body, &[&str])> = vec![
        ("missing.json", Body::Missing, &["cannot read"]),
        (
            "garbage.json",
            Body::Text("{\"subsystems\": [ oops"),
            &["not valid JSON"],
        ),
        ("shape.json", Body::Json(json!([1, 2])), &["\"subsystems\""]),
        (
            "noname.json",
            Body::Json(json!({"subsystems": [{"config": []}]})),
            &["subsystem"],
        ),
        (
            "cfgtype.json",
            Body::Json(json!({"subsystems": [{"subsystem": "bdev", "config": {"a": 1}}]})),
            &["must be an array"],
        ),
        (
            "nomethod.json",
            Body::Json(json!({"subsystems": [{"subsystem": "bdev", "config": [{"params": {}}]}]})),
            &["call #1", "method"],
        ),
        (
            "dup.json",
            Body::Json(json!({"subsystems": [{"subsystem": "bdev",
                                        "config": [good_malloc.clone(), good_malloc.clone()]}]})),
            &["call #2", "bdev_malloc_create", "-17", "already exists"],
        ),
        (
            "unknown.json",
            Body::Json(json!({"subsystems": [{"subsystem": "bdev",
                                        "config": [{"method": "bdev_frob_create", "params": {}}]}]})),
            &["bdev_frob_create", "-32601"],
        ),
        (
            "params.json",
            Body::Json(json!({"subsystems": [{"subsystem": "bdev", "config": [
                {"method": "bdev_null_create", "params": {"name": "N", "block_size": 512}}]}]})),
            &["bdev_null_create", "missing field `num_blocks`"],
        ),
        (
            "claimed.json",
            Body::Json(json!({"subsystems": [{"subsystem": "bdev", "config": [
                good_malloc.clone(),
                {"method": "bdev_error_create", "params": {"base_name": "M0"}},
                {"method": "bdev_malloc_delete", "params": {"name": "M0"}}]}]})),
            &["call #3", "-16"],
        ),
    ];
    for (file, body, expect) in cases {
        let path = dir.path(file);
        match body {
            Body::Json(doc) => write_json(&path, &doc),
            Body::Text(text) => std::fs::write(&path, text).unwrap(),
            Body::Missing => {}
        }
        let run_dir = TempDir::new("badrun");
        let f = Daemon::expect_failure(&run_dir, &["--json", path.to_str().unwrap()]);
        assert_eq!(f.status.code(), Some(1), "{file}: {}", f.stderr);
        assert_no_panic(&f.stderr);
        assert!(
            f.stderr.contains(file),
            "{file}: message must name the file:\n{}",
            f.stderr
        );
        for e in expect {
            assert!(
                f.stderr.contains(e),
                "{file}: expected {e:?} in:\n{}",
                f.stderr
            );
        }
        assert!(
            !run_dir.path("rpc.sock").exists(),
            "{file}: a failed start leaves no socket"
        );
    }
}

#[test]
fn nvmf_target_round_trips_through_save_config() {
    let d = Daemon::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let nqn = "nqn.2016-06.io.oxstor:saved";
    malloc(&d, "M0");
    malloc(&d, "M1");
    d.ok(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "in_capsule_data_size": 8192}),
    );
    d.ok(
        "nvmf_create_subsystem",
        json!({"nqn": nqn, "serial_number": "SN42", "model_number": "oxstor test"}),
    );
    d.ok("nvmf_subsystem_add_host", json!({"nqn": nqn, "host": "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555"}));
    d.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": "M0"}}),
    );
    d.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": "M1", "nsid": 7}}),
    );
    d.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": port}}),
    );
    // A namespace claims its bdev: deleting it is refused while exported.
    assert_eq!(d.err("bdev_malloc_delete", json!({"name": "M0"})).0, -16);
    let saved = d.ok("save_config", Value::Null);
    let nvmf = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "nvmf")
        .expect("an nvmf subsystem in save_config");
    let methods: Vec<&str> = nvmf["config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "nvmf_create_transport",
            "nvmf_create_subsystem",
            "nvmf_subsystem_add_host",
            "nvmf_subsystem_add_ns",
            "nvmf_subsystem_add_ns",
            "nvmf_subsystem_add_listener"
        ]
    );
    drop(d); // frees the port for the restarted daemon

    let dir = TempDir::new("nvmfcfg");
    let cfg = dir.path("saved.json");
    write_json(&cfg, &saved);
    let d2 = Daemon::start_with(&["--json", cfg.to_str().unwrap()]);
    assert_eq!(d2.ok("save_config", Value::Null), saved);
    let subs = d2.ok("nvmf_get_subsystems", Value::Null);
    let sub = subs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["nqn"] == nqn)
        .expect("subsystem restored");
    assert_eq!(sub["namespaces"].as_array().map(Vec::len), Some(2));
    assert_eq!(sub["listen_addresses"][0]["trsvcid"], json!(port));
    assert_eq!(sub["allow_any_host"], json!(false));
}
