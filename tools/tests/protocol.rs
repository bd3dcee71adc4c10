//! JSON-RPC 2.0 framing and every kind of bad input: each gets the right error code and the
//! daemon keeps serving.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn code(resp: &Value) -> i64 {
    resp["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {resp}"))
}

#[test]
fn malformed_json_is_a_parse_error() {
    let d = Daemon::start();
    let out = d.raw(br#"{"jsonrpc":"2.0","method":"spdk_get_version","id":1"#); // truncated
    assert!(
        out.is_empty(),
        "a truncated request is a disconnect, not an answer: {out:?}"
    );
    let out = d.raw(br#"{"jsonrpc":"2.0","method": nope}"#);
    assert_eq!(out.len(), 1);
    assert_eq!(code(&out[0]), -32700);
    assert_eq!(out[0]["id"], Value::Null);
    // Nesting deeper than the parser allows is an error, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let out = d.raw(deep.as_bytes());
    assert_eq!(code(&out[0]), -32700);
    // After a parse error the connection is closed: the request behind it is not run.
    let out = d.raw(b"{oops} {\"jsonrpc\":\"2.0\",\"method\":\"spdk_get_version\",\"id\":2}");
    assert_eq!(out.len(), 1);
    assert_eq!(code(&out[0]), -32700);
    d.assert_alive();
    assert_no_panic(&d.stderr());
}

#[test]
fn unknown_method() {
    let d = Daemon::start();
    let (c, msg) = d.err("bdev_frobnicate", Value::Null);
    assert_eq!(c, -32601);
    assert!(msg.contains("bdev_frobnicate"), "{msg}");
    d.assert_alive();
}

#[test]
fn missing_wrong_and_unknown_params() {
    let d = Daemon::start();
    let (c, msg) = d.err(
        "bdev_malloc_create",
        json!({"name": "M", "block_size": 512}),
    );
    assert_eq!(c, -32602);
    assert!(msg.contains("missing field `num_blocks`"), "{msg}");
    let (c, msg) = d.err(
        "bdev_malloc_create",
        json!({"num_blocks": "many", "block_size": 512}),
    );
    assert_eq!(c, -32602);
    assert!(msg.contains("invalid type"), "{msg}");
    let (c, msg) = d.err(
        "bdev_malloc_create",
        json!({"num_blocks": 8, "block_size": 512, "colour": "blue"}),
    );
    assert_eq!(c, -32602);
    assert!(msg.contains("unknown field `colour`"), "{msg}");
    let (c, _) = d.err("bdev_malloc_delete", json!(["M"]));
    assert_eq!(c, -32602, "positional params are refused");
    let (c, msg) = d.err("bdev_malloc_delete", Value::Null);
    assert_eq!(c, -32602);
    assert!(msg.contains("missing field `name`"), "{msg}");
    let (c, _) = d.err("spdk_kill_instance", json!({"sig_name": "SIGWINCH"}));
    assert_eq!(c, -32602);
    assert!(bdev_names(&d).is_empty());
    d.assert_alive();
}

#[test]
fn invalid_request_shapes() {
    let d = Daemon::start();
    let cases: &[&[u8]] = &[
        br#"{"method":"spdk_get_version","id":1}"#, // no jsonrpc
        br#"{"jsonrpc":"1.0","method":"spdk_get_version","id":1}"#, // wrong version
        br#"{"jsonrpc":"2.0","id":1}"#,             // no method
        br#"{"jsonrpc":"2.0","method":7,"id":1}"#,  // method not a string
        br#"{"jsonrpc":"2.0","method":"spdk_get_version","params":3,"id":1}"#,
        br#"{"jsonrpc":"2.0","method":"spdk_get_version","id":{"a":1}}"#,
        br#""just a string""#,
        br#"[]"#,
    ];
    for case in cases {
        let out = d.raw(case);
        assert_eq!(out.len(), 1, "{}", String::from_utf8_lossy(case));
        assert_eq!(code(&out[0]), -32600, "{}", String::from_utf8_lossy(case));
    }
    // The id is echoed when it could be read.
    let out = d.raw(br#"{"jsonrpc":"1.0","method":"x","id":"abc"}"#);
    assert_eq!(out[0]["id"], "abc");
    d.assert_alive();
}

#[test]
fn concatenated_requests_notifications_and_batches() {
    let d = Daemon::start();
    // No newline framing: three values back to back, the middle one a notification.
    let mut bytes = request("spdk_get_version", Value::Null, 1);
    bytes.extend_from_slice(
        br#"{"jsonrpc":"2.0","method":"bdev_null_create","params":{"name":"N0","num_blocks":8,"block_size":512}}"#,
    );
    bytes.extend(request("bdev_get_bdevs", Value::Null, 3));
    let out = d.raw(&bytes);
    assert_eq!(out.len(), 2, "the notification is not answered: {out:?}");
    assert_eq!(out[0]["id"], 1);
    assert_eq!(out[0]["result"]["version"], "oxstor v0.1.0");
    assert_eq!(out[1]["id"], 3);
    assert_eq!(out[1]["result"][0]["name"], "N0", "the notification ran");

    // A notification for an unknown method is silent too.
    let out = d.raw(br#"{"jsonrpc":"2.0","method":"nope"}"#);
    assert!(out.is_empty());

    let out = d.raw(
        br#"[{"jsonrpc":"2.0","method":"spdk_get_version","id":"a"},
             {"jsonrpc":"2.0","method":"nope","id":"b"},
             {"jsonrpc":"2.0","method":"bdev_wait_for_examine"},
             5]"#,
    );
    assert_eq!(out.len(), 1);
    let batch = out[0].as_array().expect("batch answer");
    assert_eq!(batch.len(), 3);
    assert_eq!(batch[0]["id"], "a");
    assert!(batch[0]["result"].is_object());
    assert_eq!(code(&batch[1]), -32601);
    assert_eq!(code(&batch[2]), -32600);
}

#[test]
fn several_mib_request_is_answered() {
    let d = Daemon::start();
    let big = "x".repeat(5 << 20);
    let out = d.raw(&request(
        "bdev_malloc_create",
        json!({"name": big, "num_blocks": 8, "block_size": 512}),
        9,
    ));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["id"], 9);
    assert_eq!(code(&out[0]), -22, "an over-long name is refused");
    let msg = out[0]["error"]["message"].as_str().unwrap();
    assert!(msg.len() < 2048, "the error does not echo MiBs back");
    assert!(bdev_names(&d).is_empty());
    d.assert_alive();
}

#[test]
fn request_over_the_cap_is_refused() {
    let d = Daemon::start();
    let mut s = UnixStream::connect(&d.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut writer = s.try_clone().unwrap();
    // 40 MiB inside one string: the daemon must stop reading at 32 MiB.
    let feeder = std::thread::spawn(move || {
        let _ = writer
            .write_all(br#"{"jsonrpc":"2.0","method":"spdk_get_version","id":1,"params":{"pad":""#);
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..40 {
            if writer.write_all(&chunk).is_err() {
                return false; // the daemon hung up, as it should
            }
        }
        let _ = writer.write_all(br#""}}"#);
        true
    });
    let out = read_all_values(BufReader::new(&mut s));
    let _ = feeder.join();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(code(&out[0]), -32600);
    assert!(
        out[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeds"),
        "{}",
        out[0]
    );
    d.assert_alive();
}

#[test]
fn client_disconnecting_mid_request_does_not_affect_others() {
    let d = Daemon::start();
    let mut other = d.client();
    assert!(other.call("spdk_get_version", None).is_ok());
    for _ in 0..5 {
        let mut s = UnixStream::connect(&d.sock).unwrap();
        s.write_all(br#"{"jsonrpc":"2.0","method":"bdev_malloc_create","params":{"num_bl"#)
            .unwrap();
        drop(s);
    }
    // A client that sends a full request and leaves without reading its answer.
    let mut s = UnixStream::connect(&d.sock).unwrap();
    s.write_all(&request("bdev_get_bdevs", Value::Null, 1))
        .unwrap();
    drop(s);
    // The long-lived connection still works, as do new ones.
    assert!(other.call("spdk_get_version", None).is_ok());
    d.assert_alive();
    assert_no_panic(&d.stderr());
}

#[test]
fn concurrent_clients_and_a_connection_cap() {
    let d = Daemon::start();
    // Hold 64 idle connections: the 65th is refused, the daemon survives.
    let mut held: Vec<UnixStream> = Vec::new();
    for _ in 0..64 {
        let s = UnixStream::connect(&d.sock).unwrap();
        held.push(s);
    }
    // The accept thread takes connections in order, so all 64 are registered before this.
    let mut extra = UnixStream::connect(&d.sock).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = String::new();
    let _ = extra.read_to_string(&mut text);
    let v: Value = serde_json::from_str(text.trim()).expect("refusal message");
    assert_eq!(code(&v), -16);
    drop(held);
    std::thread::sleep(Duration::from_millis(200));

    // Eight clients at once, each creating and deleting its own bdev.
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let sock = d.sock.clone();
            std::thread::spawn(move || {
                let mut c = oxstor_tools::client::Client::connect(&sock, None).unwrap();
                let name = format!("C{i}");
                let p = json!({"name": name, "num_blocks": 64, "block_size": 512});
                assert_eq!(c.call("bdev_null_create", Some(p)).unwrap(), name.as_str());
                c.call("bdev_null_delete", Some(json!({ "name": name })))
                    .unwrap();
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    assert!(bdev_names(&d).is_empty());
    d.assert_alive();
}
