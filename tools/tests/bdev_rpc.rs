//! bdev_* and framework_* methods against a real daemon.

mod common;

use common::*;
use serde_json::{json, Value};

#[test]
fn version_methods_and_reactors() {
    let d = Daemon::start();
    let v = d.ok("spdk_get_version", Value::Null);
    assert_eq!(
        v,
        json!({"version":"oxstor v0.1.0","fields":{"major":0,"minor":1,"patch":0,"suffix":""}})
    );
    let methods = d.ok("rpc_get_methods", Value::Null);
    let methods: Vec<&str> = methods
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for m in [
        "spdk_get_version",
        "bdev_malloc_create",
        "bdev_error_inject_error",
        "save_config",
        "spdk_kill_instance",
        "framework_get_reactors",
    ] {
        assert!(methods.contains(&m), "{m} missing from {methods:?}");
    }
    let r = d.ok("framework_get_reactors", Value::Null);
    assert_eq!(r["tick_rate"], 1_000_000_000u64);
    let reactors = r["reactors"].as_array().unwrap();
    assert_eq!(reactors.len(), 1);
    assert_eq!(reactors[0]["lcore"], 0);
    assert_eq!(reactors[0]["in_interrupt"], false);
    assert!(reactors[0]["busy"].is_u64() && reactors[0]["idle"].is_u64());
    let lw = &reactors[0]["lw_threads"][0];
    assert_eq!(lw["name"], "reactor_0");
    assert_eq!(lw["cpumask"], "0x1");
    // A method that takes no parameters refuses some.
    let (code, msg) = d.err("spdk_get_version", json!({"verbose": true}));
    assert_eq!(code, -32602);
    assert!(msg.contains("unknown field `verbose`"), "{msg}");
}

#[test]
fn malloc_create_list_delete() {
    let d = Daemon::start();
    assert_eq!(bdev_names(&d), Vec::<String>::new());
    let auto = d.ok(
        "bdev_malloc_create",
        json!({"num_blocks": 256, "block_size": 4096}),
    );
    assert_eq!(auto, "Malloc0", "SPDK-style automatic name");
    let uuid = "6f3c7c41-1d5a-4c2e-9a41-3f0e2b1c8d77";
    let name = d.ok(
        "bdev_malloc_create",
        json!({"name": "M1", "num_blocks": 2048, "block_size": 512, "uuid": uuid, "optimal_io_boundary": 64}),
    );
    assert_eq!(name, "M1");
    let all = d.ok("bdev_get_bdevs", Value::Null);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let b = &d.ok("bdev_get_bdevs", json!({"name": "M1"}))[0];
    assert_eq!(b["name"], "M1");
    assert_eq!(b["product_name"], "Malloc disk");
    assert_eq!(b["block_size"], 512);
    assert_eq!(b["num_blocks"], 2048);
    assert_eq!(b["uuid"], uuid);
    assert_eq!(b["aliases"], json!([]));
    assert_eq!(b["claimed"], false);
    assert_eq!(b["zoned"], false);
    assert_eq!(b["optimal_io_boundary"], 64);
    assert_eq!(b["assigned_rate_limits"]["rw_ios_per_sec"], 0);
    for t in [
        "read",
        "write",
        "unmap",
        "flush",
        "reset",
        "write_zeroes",
        "compare",
    ] {
        assert_eq!(b["supported_io_types"][t], true, "{t}");
    }
    assert!(b["driver_specific"]["malloc"].is_object());
    // Lookup by UUID works too (SPDK treats it as an alias).
    assert_eq!(
        d.ok("bdev_get_bdevs", json!({"name": uuid}))[0]["name"],
        "M1"
    );

    assert_eq!(d.ok("bdev_malloc_delete", json!({"name": "M1"})), true);
    assert_eq!(bdev_names(&d), vec!["Malloc0"]);
    let (code, msg) = d.err("bdev_malloc_delete", json!({"name": "M1"}));
    assert_eq!(code, -19, "{msg}");
    let (code, _) = d.err("bdev_get_bdevs", json!({"name": "M1"}));
    assert_eq!(code, -19);
}

#[test]
fn null_create_list_delete() {
    let d = Daemon::start();
    let name = d.ok(
        "bdev_null_create",
        json!({"name": "Null0", "num_blocks": 1 << 20, "block_size": 4096}),
    );
    assert_eq!(name, "Null0");
    let b = &d.ok("bdev_get_bdevs", json!({"name": "Null0"}))[0];
    assert_eq!(b["product_name"], "Null disk");
    assert_eq!(b["num_blocks"], 1 << 20);
    assert_eq!(b["supported_io_types"]["compare"], false);
    assert!(b["driver_specific"].get("null").is_some());
    // Wrong module: a null bdev is not deleted by bdev_malloc_delete.
    assert_eq!(d.err("bdev_malloc_delete", json!({"name": "Null0"})).0, -19);
    assert_eq!(d.ok("bdev_null_delete", json!({"name": "Null0"})), true);
    assert!(bdev_names(&d).is_empty());
    // Bad geometry is an operation error (-EINVAL), not a params error.
    let (code, msg) = d.err(
        "bdev_null_create",
        json!({"name": "N", "num_blocks": 8, "block_size": 1000}),
    );
    assert_eq!(code, -22, "{msg}");
}

#[test]
fn uring_on_a_temp_file() {
    let d = Daemon::start();
    let file = d.dir.path("disk.img");
    file_of_size(&file, 8 << 20);
    let name = d.ok(
        "bdev_uring_create",
        json!({"name": "U0", "filename": file, "block_size": 4096}),
    );
    assert_eq!(name, "U0");
    let b = &d.ok("bdev_get_bdevs", json!({"name": "U0"}))[0];
    assert_eq!(b["block_size"], 4096);
    assert_eq!(b["num_blocks"], 2048);
    assert_eq!(
        b["driver_specific"]["uring"]["filename"],
        file.to_str().unwrap()
    );
    assert_eq!(d.ok("bdev_uring_delete", json!({"name": "U0"})), true);
    assert!(bdev_names(&d).is_empty());
    // A missing file is -ENOENT with the path in the message.
    let (code, msg) = d.err(
        "bdev_uring_create",
        json!({"name": "U1", "filename": d.dir.path("missing.img")}),
    );
    assert_eq!(code, -2, "{msg}");
    assert!(msg.contains("missing.img"), "{msg}");
}

#[test]
fn delay_and_error_stack_over_malloc() {
    let d = Daemon::start();
    malloc(&d, "Base0");
    malloc(&d, "Base1");
    let delay = d.ok(
        "bdev_delay_create",
        json!({"base_bdev_name": "Base0", "name": "Delay0", "avg_read_latency": 10,
               "p99_read_latency": 20, "avg_write_latency": 10, "p99_write_latency": 20}),
    );
    assert_eq!(delay, "Delay0");
    let ee = d.ok("bdev_error_create", json!({"base_name": "Base1"}));
    assert_eq!(ee, "EE_Base1");

    let all = d.ok("bdev_get_bdevs", Value::Null);
    let by_name = |n: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} not listed"))
    };
    assert_eq!(by_name("Base0")["claimed"], true);
    assert_eq!(by_name("Base0")["claim_type"], "exclusive_write");
    assert_eq!(by_name("Base1")["claimed"], true);
    assert_eq!(by_name("Delay0")["claimed"], false);
    assert_eq!(by_name("Delay0")["num_blocks"], 2048);
    assert_eq!(
        by_name("Delay0")["driver_specific"]["delay"]["base_bdev_name"],
        "Base0"
    );
    assert_eq!(by_name("EE_Base1")["product_name"], "Error Injection Disk");

    // A claimed base cannot be deleted: -EBUSY, and it is still there.
    let (code, msg) = d.err("bdev_malloc_delete", json!({"name": "Base0"}));
    assert_eq!(code, -16, "{msg}");
    let (code, _) = d.err("bdev_malloc_delete", json!({"name": "Base1"}));
    assert_eq!(code, -16);
    assert_eq!(bdev_names(&d).len(), 4);
    // A claimed base cannot be claimed twice.
    let (code, _) = d.err(
        "bdev_delay_create",
        json!({"base_bdev_name": "Base0", "name": "Delay1", "avg_read_latency": 1,
               "p99_read_latency": 1, "avg_write_latency": 1, "p99_write_latency": 1}),
    );
    assert_eq!(code, -16);

    // Removing the top releases the claim.
    assert_eq!(d.ok("bdev_delay_delete", json!({"name": "Delay0"})), true);
    assert_eq!(d.ok("bdev_error_delete", json!({"name": "EE_Base1"})), true);
    assert_eq!(d.ok("bdev_malloc_delete", json!({"name": "Base0"})), true);
    assert_eq!(d.ok("bdev_malloc_delete", json!({"name": "Base1"})), true);
    assert!(bdev_names(&d).is_empty());
    d.assert_alive();
}

#[test]
fn error_injection_via_rpc() {
    let d = Daemon::start();
    malloc(&d, "M0");
    d.ok("bdev_error_create", json!({"base_name": "M0"}));
    for (io_type, error_type) in [
        ("read", "failure"),
        ("write", "nomem"),
        ("all", "failure"),
        ("read", "corrupt_data"),
        ("clear", "clear"),
    ] {
        let r = d.ok(
            "bdev_error_inject_error",
            json!({"name": "EE_M0", "io_type": io_type, "error_type": error_type, "num": 3}),
        );
        assert_eq!(r, true, "{io_type}/{error_type}");
    }
    let (code, msg) = d.err(
        "bdev_error_inject_error",
        json!({"name": "EE_M0", "io_type": "read", "error_type": "explode"}),
    );
    assert_eq!(code, -22);
    assert!(msg.contains("explode"), "{msg}");
    // Only error bdevs take injections.
    let (code, _) = d.err(
        "bdev_error_inject_error",
        json!({"name": "M0", "io_type": "read", "error_type": "failure"}),
    );
    assert_eq!(code, -22);
    let (code, _) = d.err(
        "bdev_error_inject_error",
        json!({"name": "nope", "io_type": "read", "error_type": "failure"}),
    );
    assert_eq!(code, -19);
    let (code, msg) = d.err(
        "bdev_error_inject_error",
        json!({"name": "EE_M0", "io_type": "read"}),
    );
    assert_eq!(code, -32602);
    assert!(msg.contains("missing field `error_type`"), "{msg}");
}

#[test]
fn iostat_shape_counts_only_the_examine_probe() {
    let d = Daemon::start();
    malloc(&d, "M0");
    d.ok(
        "bdev_null_create",
        json!({"name": "N0", "num_blocks": 64, "block_size": 512}),
    );
    let s = d.ok("bdev_get_iostat", Value::Null);
    assert_eq!(s["tick_rate"], 1_000_000_000u64);
    assert!(s["ticks"].as_u64().unwrap() > 0);
    let bdevs = s["bdevs"].as_array().unwrap();
    assert_eq!(bdevs.len(), 2);
    assert_eq!(bdevs[0]["name"], "M0");
    for key in [
        "bytes_written",
        "num_write_ops",
        "num_unmap_ops",
        "write_latency_ticks",
        "io_error",
    ] {
        assert_eq!(bdevs[0][key], 0, "{key}");
        assert_eq!(bdevs[1][key], 0, "{key}");
    }
    // The only I/O so far is RAID examine reading each new bdev's superblock area once.
    for b in bdevs {
        assert_eq!(b["num_read_ops"], 1, "{b}");
        assert_eq!(b["bytes_read"], 4096, "{b}");
    }
    let one = d.ok("bdev_get_iostat", json!({"name": "N0"}));
    assert_eq!(one["bdevs"].as_array().unwrap().len(), 1);
    assert_eq!(one["bdevs"][0]["name"], "N0");
    assert_eq!(d.err("bdev_get_iostat", json!({"name": "zz"})).0, -19);
}

#[test]
fn bdev_name_used_twice() {
    let d = Daemon::start();
    malloc(&d, "Malloc0");
    let (code, msg) = d.err(
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": 16, "block_size": 512}),
    );
    assert_eq!(code, -17);
    assert_eq!(msg, "bdev Malloc0 already exists");
    // The name is taken across modules too.
    let (code, _) = d.err(
        "bdev_null_create",
        json!({"name": "Malloc0", "num_blocks": 16, "block_size": 512}),
    );
    assert_eq!(code, -17);
    assert_eq!(bdev_names(&d), vec!["Malloc0"]);
    d.assert_alive();
}

#[test]
fn get_bdevs_waits_for_timeout() {
    let d = Daemon::start();
    let t = std::time::Instant::now();
    let (code, _) = d.err("bdev_get_bdevs", json!({"name": "later", "timeout": 300}));
    assert_eq!(code, -19);
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
    // Created while another client waits: the waiter sees it.
    let sock = d.sock.clone();
    let waiter = std::thread::spawn(move || {
        let mut c = oxstor_tools::client::Client::connect(&sock, None).unwrap();
        c.call(
            "bdev_get_bdevs",
            Some(json!({"name": "later", "timeout": 10000})),
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    malloc(&d, "later");
    let got = waiter.join().unwrap().expect("waiter result");
    assert_eq!(got[0]["name"], "later");
    assert_eq!(d.ok("bdev_wait_for_examine", Value::Null), true);
}
