//! End-to-end tests of the config module: parse → post_parse → dump / plan.

use super::include::tests::MemFs;
use super::*;
use serde_json::json;

const ISSUE: &str = "resource r0 {
  on hw1 { device ox0; disk Raid5; address 127.0.0.1:7788; meta-disk internal; }
  on hw2 { device ox0; disk Malloc1; address 127.0.0.2:7788; meta-disk internal; }
}
";

const SEED: &str = "resource r0 {
on hw1 {
device /dev/drbd0;
disk /dev/sdb1;
address 10.11.56.2:7788;
meta-disk internal;
}
on hw2 {
device /dev/drbd0;
disk /dev/sdb1;
address 10.11.56.3:7788;
meta-disk internal;
}
}
";

fn res(text: &str) -> Resource {
    let mut cfg = load_str(text, "r0.res").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.resources.len(), 1);
    cfg.resources.remove(0)
}

fn err(text: &str) -> String {
    load_str(text, "r0.res").unwrap_err().to_string()
}

fn ids(r: &Resource) -> Vec<(&str, u32)> {
    r.hosts
        .iter()
        .map(|h| (h.name.as_str(), h.node_id.unwrap()))
        .collect()
}

fn ends(c: &Connection) -> Vec<Vec<String>> {
    c.paths
        .iter()
        .map(|p| {
            p.hosts
                .iter()
                .map(|e| format!("{}={}", e.host, e.address.as_ref().unwrap()))
                .collect()
        })
        .collect()
}

/// dump → parse → post_parse gives the same resolved resource (and dumping that is stable).
fn round_trip(r: &Resource) {
    let text = dump(r);
    let mut again = load_str(&text, "dump.res").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again.resources.len(), 1);
    let again = again.resources.remove(0);
    assert_eq!(&again, r, "{text}");
    assert_eq!(
        dump(&again).lines().skip(1).collect::<Vec<_>>(),
        text.lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn issue_example() {
    let r = res(ISSUE);
    assert_eq!(r.name, "r0");
    // crc32c(0x1a656f21, "127.0.0.1") = 0xa910937e (-1458531458),
    // crc32c(0x1a656f21, "127.0.0.2") = 0xba40608a (-1170186102): hw2's is larger.
    assert_eq!(ids(&r), [("hw1", 1), ("hw2", 0)]);
    let hw1 = r.host("hw1").unwrap();
    assert_eq!(hw1.volumes.len(), 1);
    assert_eq!(hw1.volumes[0].device.as_ref().unwrap().name, "ox0");
    assert_eq!(hw1.volumes[0].disk, Some(Disk::Bdev("Raid5".into())));
    assert_eq!(r.connections.len(), 1);
    assert_eq!(
        ends(&r.connections[0]),
        [["hw1=127.0.0.1:7788", "hw2=127.0.0.2:7788"]]
    );
    round_trip(&r);
}

#[test]
fn seed_example_signed_comparison() {
    let r = res(SEED);
    // "10.11.56.2" hashes to 0x78fa97ca (positive), "10.11.56.3" to 0x8a9114c9 (top bit set,
    // -1970203447 as an int). Signed, hw1's is larger and gets node-id 0; an unsigned
    // comparison would have given it 1.
    assert_eq!(ids(&r), [("hw1", 0), ("hw2", 1)]);
    let unsigned = |ip: &str| crc::drbd_crc32c(crc::NODE_ID_SEED, ip.as_bytes());
    assert!(unsigned("10.11.56.2") < unsigned("10.11.56.3"));
    assert!(crc::address_hash("10.11.56.2") > crc::address_hash("10.11.56.3"));
    let v = &r.host("hw2").unwrap().volumes[0];
    assert_eq!(
        v.device,
        Some(Device {
            name: "drbd0".into(),
            minor: None
        })
    );
    assert_eq!(v.disk, Some(Disk::Bdev("/dev/sdb1".into())));
    round_trip(&r);
}

#[test]
fn implicit_node_ids_follow_file_order_and_partial_ids() {
    // Swapping the sections swaps nothing: the id follows the address.
    let r = res(
        "resource r { on b { device x; disk y; address 10.11.56.3:1; }
                              on a { device x; disk y; address 10.11.56.2:1; } }",
    );
    assert_eq!(ids(&r), [("b", 1), ("a", 0)]);
    // One explicit id: nothing is derived, and the other host lacks one.
    let e = err("resource r {\n on a { node-id 0; device x; disk y; address 10.0.0.1:1; }\n on b { device x; disk y; address 10.0.0.2:1; }\n}");
    assert_eq!(e, "r0.res:3: node-id is missing in 'on b'");
}

#[test]
fn equal_hashes_are_bad_luck() {
    let e = err("resource r0 {
  on hw1 { device ox0; disk a; address 127.0.0.1:7788; }
  on hw2 { device ox0; disk b; address 127.0.0.1:7789; }
}");
    assert!(e.starts_with("r0.res:1: "), "{e}");
    assert!(e.contains("BAD LUCK, equal hashes"), "{e}");
}

#[test]
fn explicit_connection_with_port_overrides() {
    let r = res("global { usage-count yes; udev-always-use-vnr; }
resource r0 {
      net {
	      cram-hmac-alg sha1;
	      shared-secret \"FooFunFactory\";
      }
      volume 0 {
	      device    \"/dev/drbd1\";
	      disk      \"/dev/sda7\";
	      meta-disk internal;
      }
      on \"alice\" {
	      node-id   0;
	      address   10.1.1.31:7000;
      }
      on \"bob\" {
	      node-id   1;
	      address   10.1.1.32:7000;
      }
      connection {
	      host      \"alice\"  port 7001;
	      host      \"bob\"    address 192.168.0.2:7002;
	      net {
			protocol C;
	      }
      }
}");
    assert_eq!(ids(&r), [("alice", 0), ("bob", 1)]);
    assert!(r.volumes.is_empty(), "folded into the hosts");
    assert_eq!(
        r.host("bob").unwrap().volumes[0]
            .device
            .as_ref()
            .unwrap()
            .name,
        "drbd1"
    );
    assert_eq!(
        ends(&r.connections[0]),
        [["alice=10.1.1.31:7001", "bob=192.168.0.2:7002"]]
    );
    assert_eq!(r.connections[0].net.get("protocol"), Some("C"));
    assert_eq!(r.sections.net.get("shared-secret"), Some("FooFunFactory"));
    round_trip(&r);
}

#[test]
fn multipath_connection() {
    let r = res("resource r {
  volume 0 { device ox0; disk M0; }
  on a { node-id 3; address 10.0.0.1:7000; }
  on b { node-id 7; address 10.0.0.2:7000; }
  connection {
    path { host a address 10.0.0.1:7000; host b address 10.0.0.2:7000; }
    path { host a address ipv6 [fd00::1]:7000; host b address ipv6 [fd00::2]:7000; }
    net { protocol A; }
  }
}");
    assert_eq!(
        ends(&r.connections[0]),
        [
            ["a=10.0.0.1:7000", "b=10.0.0.2:7000"],
            ["a=[fd00::1]:7000", "b=[fd00::2]:7000"]
        ]
    );
    round_trip(&r);
    let calls = plan_up(&r, "b").unwrap();
    let paths: Vec<_> = calls
        .iter()
        .filter(|c| c.method == "repl_new_path")
        .map(|c| c.params.clone())
        .collect();
    assert_eq!(
        paths,
        [
            json!({"resource":"r","peer_node_id":3,"local_addr":"10.0.0.2:7000","remote_addr":"10.0.0.1:7000"}),
            json!({"resource":"r","peer_node_id":3,"local_addr":"[fd00::2]:7000","remote_addr":"[fd00::1]:7000"}),
        ]
    );
}

#[test]
fn mesh_of_three() {
    let r = res("resource r {
  device ox0; disk M0; meta-disk internal;
  on a { node-id 0; address 10.0.0.1:7000; }
  on b { node-id 1; address 10.0.0.2:7000; }
  on c { node-id 2; address 10.0.0.3:7000; disk none; }
  connection-mesh { hosts a b c; net { protocol C; ping-int 10; } }
}");
    assert!(r.meshes.is_empty());
    let pairs: Vec<_> = r.connections.iter().map(|c| c.hosts().unwrap()).collect();
    assert_eq!(pairs, [("a", "b"), ("a", "c"), ("b", "c")]);
    assert!(r
        .connections
        .iter()
        .all(|c| c.net.get("ping-int") == Some("10")));
    assert_eq!(r.host("c").unwrap().volumes[0].disk, Some(Disk::None));
    round_trip(&r);
    let calls = plan_up(&r, "c").unwrap();
    let methods: Vec<_> = calls.iter().map(|c| c.method.as_str()).collect();
    // Diskless: no attach. Stages as drbdadm runs them: peers, paths, connects.
    assert_eq!(
        methods,
        [
            "repl_new_resource",
            "repl_new_peer",
            "repl_new_peer",
            "repl_new_path",
            "repl_new_path",
            "repl_connect",
            "repl_connect"
        ]
    );
    assert_eq!(calls[1].params["peer_name"], "a");
    assert_eq!(calls[2].params["peer_name"], "b");
}

#[test]
fn mesh_keeps_explicit_connections() {
    let r = res("resource r {
  device ox0; disk M0;
  on a { node-id 0; address 10.0.0.1:7000; }
  on b { node-id 1; address 10.0.0.2:7000; }
  on c { node-id 2; address 10.0.0.3:7000; }
  connection { host a port 7100; host b port 7100; net { protocol A; } }
  connection-mesh { hosts a b c; }
}");
    assert_eq!(r.connections.len(), 3);
    assert_eq!(r.connections[0].net.get("protocol"), Some("A"));
    assert_eq!(ends(&r.connections[0])[0][0], "a=10.0.0.1:7100");
}

#[test]
fn volumes_inherit_and_override() {
    let r = res("resource r {
  volume 0 { device ox0; disk D0; }
  volume 1 { device ox1; disk D1; }
  on a { address 10.0.0.1:1; disk Local0; volume 1 { disk none; } volume 2 { device ox2; disk D2; } }
  on b { address 10.0.0.2:1; }
}");
    let a: Vec<_> = r
        .host("a")
        .unwrap()
        .volumes
        .iter()
        .map(|v| {
            (
                v.number,
                v.device.clone().unwrap().name,
                v.disk.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        a,
        [
            (0, "ox0".to_string(), Disk::Bdev("Local0".into())),
            (1, "ox1".to_string(), Disk::None),
            (2, "ox2".to_string(), Disk::Bdev("D2".into())),
        ]
    );
    assert_eq!(r.host("b").unwrap().volumes.len(), 2);
    round_trip(&r);
    let attach: Vec<_> = plan_attach(&r, "a", None)
        .unwrap()
        .into_iter()
        .map(|c| c.params["volume"].as_u64().unwrap())
        .collect();
    assert_eq!(attach, [0, 2]);
}

#[test]
fn common_resource_connection_inheritance() {
    let text = "common {
  net { protocol B; after-sb-0pri discard-zero-changes; ping-int 5; }
  disk { resync-rate 50M; c-max-rate 200M; }
  handlers { split-brain \"/usr/lib/drbd/notify-split-brain.sh root\"; }
}
resource r0 {
  net { ping-int 10; }
  disk { resync-rate 100M; }
  on hw1 { device ox0; disk Raid5; address 127.0.0.1:7788; node-id 0; }
  on hw2 { device ox0; disk Malloc1; address 127.0.0.2:7788; node-id 1; }
  connection { host hw1; host hw2; net { protocol C; } disk { c-max-rate 400M; } }
}
resource r1 { on hw1 { node-id 0; } }
";
    let cfg = load_str(text, "x.res").unwrap();
    let r = cfg.resource("r0").unwrap();
    assert_eq!(
        r.sections.handlers.get("split-brain"),
        Some("/usr/lib/drbd/notify-split-brain.sh root")
    );
    assert_eq!(
        cfg.resource("r1").unwrap().sections.net.get("protocol"),
        Some("B")
    );
    round_trip(r);
    let calls = plan_up(r, "hw1").unwrap();
    let peer = calls.iter().find(|c| c.method == "repl_new_peer").unwrap();
    assert_eq!(
        peer.params,
        json!({
            "resource": "r0", "peer_node_id": 1, "peer_name": "hw2",
            "net": {"protocol": "C", "after-sb-0pri": "discard-zero-changes", "ping-int": "10"},
            "disk": {"resync-rate": "100M", "c-max-rate": "400M"},
        })
    );
    // Order is kept: common's keys first, in common's order.
    let keys: Vec<_> = peer.params["net"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys.len(), 3);
}

#[test]
fn plan_up_issue_example_in_order() {
    let r = res(ISSUE);
    let calls = plan_up(&r, "hw1").unwrap();
    let expect = [
        ("repl_new_resource", json!({"name":"r0","node_id":1})),
        (
            "repl_attach",
            json!({"resource":"r0","volume":0,"device":"ox0","disk":"Raid5","meta_disk":"internal"}),
        ),
        (
            "repl_new_peer",
            json!({"resource":"r0","peer_node_id":0,"peer_name":"hw2","net":{},"disk":{}}),
        ),
        (
            "repl_new_path",
            json!({"resource":"r0","peer_node_id":0,"local_addr":"127.0.0.1:7788","remote_addr":"127.0.0.2:7788"}),
        ),
        ("repl_connect", json!({"resource":"r0","peer_node_id":0})),
    ];
    assert_eq!(calls.len(), expect.len());
    for (c, (m, p)) in calls.iter().zip(expect) {
        assert_eq!((c.method.as_str(), &c.params), (m, &p));
    }
    assert_eq!(
        calls[0].to_string(),
        r#"repl_new_resource {"name":"r0","node_id":1}"#
    );
    let hw2 = plan_up(&r, "hw2").unwrap();
    assert_eq!(hw2[0].params["node_id"], 0);
    assert_eq!(hw2[1].params["disk"], "Malloc1");
    assert_eq!(hw2[3].params["local_addr"], "127.0.0.2:7788");
}

#[test]
fn plan_unknown_host_and_builders() {
    let r = res(ISSUE);
    let e = plan_up(&r, "hw9").unwrap_err();
    assert_eq!(
        e.to_string(),
        "r0.res:1: resource r0 has no 'on hw9' section (its hosts: hw1, hw2)"
    );
    assert_eq!(
        plan_down(&r),
        [RpcCall::new("repl_down", json!({"resource":"r0"}))]
    );
    assert_eq!(
        plan_connect(&r, "hw1", None, true).unwrap(),
        [RpcCall::new(
            "repl_connect",
            json!({"resource":"r0","peer_node_id":0,"discard_my_data":true})
        )]
    );
    assert_eq!(
        plan_disconnect(&r, "hw2", Some("hw1")).unwrap()[0].params,
        json!({"resource":"r0","peer_node_id":1})
    );
    assert!(plan_disconnect(&r, "hw2", Some("hw3"))
        .unwrap_err()
        .reason
        .contains("no connection to 'hw3' (its peers: hw1)"));
    assert_eq!(
        plan_verify(&r, "hw1", None).unwrap()[0].method,
        "repl_verify"
    );
    assert_eq!(
        plan_detach(&r, "hw1", None).unwrap()[0].params,
        json!({"resource":"r0","volume":0})
    );
    assert_eq!(
        plan_create_md(&r, "hw1", Some(0)).unwrap()[0],
        RpcCall::new("repl_create_md", json!({"resource":"r0","volume":0}))
    );
    assert!(plan_attach(&r, "hw1", Some(4)).is_err());
    assert_eq!(
        plan_primary(&r, true)[0].params,
        json!({"resource":"r0","force":true})
    );
    assert_eq!(plan_secondary(&r)[0].method, "repl_secondary");
    assert_eq!(
        plan_new_current_uuid(&r, false)[0].params,
        json!({"resource":"r0","clear_bitmap":false})
    );
    assert_eq!(plan_status(None).params, json!({}));
    assert_eq!(plan_status(Some("r0")).params, json!({"resource":"r0"}));
}

#[test]
fn semantic_errors_carry_file_and_line() {
    // Three hosts without connections.
    assert_eq!(
        err("\nresource r0 {\n on a { node-id 0; }\n on b { node-id 1; }\n on c { node-id 2; }\n}"),
        "r0.res:2: Resource r0: Use explicit 'connection' sections with more than two 'on' sections."
    );
    // Missing node-id with an explicit connection.
    assert_eq!(
        err("resource r0 {\n on hw1 { device x; disk y; address 10.0.0.1:1; }\n on hw2 { node-id 1; device x; disk y; address 10.0.0.2:1; }\n connection { host hw1; host hw2; }\n}"),
        "r0.res:2: node-id is missing in 'on hw1'"
    );
    // Duplicate node-ids.
    assert_eq!(
        err("resource r0 {\n on a { node-id 1; device x; disk y; address 10.0.0.1:1; }\n on b { node-id 1; device x; disk y; address 10.0.0.2:1; }\n}"),
        "r0.res:3: node-id 1 of 'on b' is also used by 'on a'"
    );
    // Connection sections.
    let e = err(
        "resource r0 {\n on a { node-id 0; address 10.0.0.1:1; }\n connection {\n  host a;\n }\n}",
    );
    assert!(
        e.starts_with("r0.res:3: ") && e.contains("exactly two hosts"),
        "{e}"
    );
    let e = err("resource r0 {\n on a { node-id 0; address 10.0.0.1:1; }\n connection { }\n}");
    assert!(
        e.starts_with("r0.res:3: ") && e.contains("two 'host' lines"),
        "{e}"
    );
    let e = err("resource r0 {\n on a { node-id 0; address 10.0.0.1:1; }\n connection {\n  host a;\n  host zz;\n }\n}");
    assert!(
        e.starts_with("r0.res:5: ") && e.contains("host 'zz', which has no 'on' section"),
        "{e}"
    );
    let e = err("resource r0 {\n on a { node-id 0; }\n on b { node-id 1; address 10.0.0.1:1; }\n connection { host a; host b; }\n}");
    assert!(e.contains("host 'a' has no address"), "{e}");
    let e = err("resource r0 {\n on a { node-id 0; address 10.0.0.1:1; }\n connection { host a; host a; }\n}");
    assert!(e.contains("two different hosts"), "{e}");
    let e = err("resource r0 {\n on a { node-id 0; address 10.0.0.1:1; }\n on b { node-id 1; address 10.0.0.2:1; }\n connection { host a; host b; }\n connection { host b; host a; }\n}");
    assert!(
        e.starts_with("r0.res:5: ") && e.contains("duplicate connection"),
        "{e}"
    );
    let e = err("resource r0 {\n on a { node-id 0; address 10.0.0.1:1; }\n on b { node-id 1; address 10.0.0.2:1; }\n on c { node-id 2; address 10.0.0.3:1; }\n connection { path { host a; host b; } path { host a; host c; } }\n}");
    assert!(e.contains("same hosts"), "{e}");
    let e = err("resource r0 {\n on a { node-id 0; address 10.0.0.1:1; }\n connection-mesh { hosts a q; }\n}");
    assert!(e.starts_with("r0.res:3: ") && e.contains("host 'q'"), "{e}");
    let e = err("resource r0 {\n on a { node-id 0; }\n on b { node-id 1; }\n connection-mesh { hosts a b; }\n}");
    assert!(e.contains("has no address"), "{e}");
    // Implicit connection needs addresses.
    let e = err("resource r0 {\n on a { }\n on b { address 10.0.0.2:1; }\n}");
    assert_eq!(e, "r0.res:2: address is missing in 'on a'");
    // Volumes.
    let e = err("resource r0 {\n on a {\n  node-id 0;\n  volume 0 { device x; }\n }\n}");
    assert!(
        e.starts_with("r0.res:4: ") && e.contains("has no 'disk'"),
        "{e}"
    );
    let e = err("resource r0 {\n on a {\n  node-id 0;\n  volume 0 { disk x; }\n }\n}");
    assert!(
        e.starts_with("r0.res:4: ") && e.contains("has no 'device'"),
        "{e}"
    );
    let e = err("resource r0 {\n on a { node-id 0; volume 0 { device x; disk a; } volume 1 { device x; disk b; } }\n}");
    assert!(e.contains("same device 'x'"), "{e}");
}

#[test]
fn syntax_errors_through_load() {
    assert_eq!(
        err("resource r0 {\n  on hw1 {\n    device ox0;\n    address 127.0.0.1:7788;\n    meta-disk internal;\n    node-id 0;\n    disk Malloc1\n  }\n}\n"),
        "r0.res:7: expected ';' after 'disk Malloc1'"
    );
    assert_eq!(
        err("resource r0 {\n on hw1 {\n  device ox0;\n  disks Malloc1;\n }\n}"),
        "r0.res:4: unknown keyword 'disks' in 'on hw1'"
    );
    assert_eq!(
        err("resource r0 {\n on hw1 {\n  address 127.0.0.300:7788;\n }\n}"),
        "r0.res:3: bad address '127.0.0.300:7788': not an IPv4 address"
    );
    let e = err("resource r0 {\n on hw1 {\n  meta-disk /dev/sdc1;\n }\n}");
    assert_eq!(
        e,
        "r0.res:3: only internal metadata is supported (meta-disk /dev/sdc1)"
    );
    let e = err("resource r0 {\n net {\n  protocol X;\n }\n}");
    assert_eq!(e, "r0.res:3: protocol must be A, B or C, not 'X'");
}

#[test]
fn include_then_resolve() {
    let fs = MemFs::with(&[
        ("/etc/oxstor/oxstor.conf", "include \"oxstor.d/*.res\";\n"),
        ("/etc/oxstor/oxstor.d/r0.res", ISSUE),
        (
            "/etc/oxstor/oxstor.d/bad.res",
            "resource r1 {\n on x { node-id 0; }\n on y { }\n connection { host x; host y; }\n}\n",
        ),
    ]);
    let mut cfg = parse_file_with(std::path::Path::new("/etc/oxstor/oxstor.conf"), &fs).unwrap();
    let e = post_parse(&mut cfg).unwrap_err();
    assert_eq!(e.file, "/etc/oxstor/oxstor.d/bad.res");
    assert_eq!(e.line, 4, "{e}");
}

#[test]
fn post_parse_is_idempotent() {
    for text in [ISSUE, SEED] {
        let mut cfg = load_str(text, "x").unwrap();
        let before = cfg.clone();
        post_parse(&mut cfg).unwrap();
        assert_eq!(cfg, before);
    }
}

#[test]
fn dump_quotes_what_needs_quoting() {
    let r = res("resource \"r 0\" {
  handlers { split-brain \"a \\\"quoted\\\" cmd; #x\"; }
  net { shared-secret \"\"; }
  on \"host one\" { node-id 0; address 10.0.0.1:1; volume 0 { device \"/dev//dev/x\"; disk \"none\"; } }
  on h2 { node-id 1; address 10.0.0.2:1; volume 0 { device d; disk none; } }
}");
    assert_eq!(
        r.host("host one").unwrap().volumes[0].disk,
        Some(Disk::Bdev("none".into()))
    );
    assert_eq!(
        r.host("host one").unwrap().volumes[0]
            .device
            .as_ref()
            .unwrap()
            .name,
        "/dev/x"
    );
    round_trip(&r);
}
