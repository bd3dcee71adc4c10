//! One client connection: a stream of concatenated JSON values in, one response per request
//! out, in order.
//!
//! Like SPDK, no framing is required (newlines are just whitespace): [`framing::Scanner`]
//! finds where each value ends. Anything that leaves the byte stream in an unknown state —
//! malformed JSON, a request over the size cap — is answered with an error and then the
//! connection is closed, since there is no telling where the next request would start. A
//! client vanishing mid-request only ends its own thread.

use super::framing::Scanner;
use crate::context::Context;
use crate::jsonrpc;
use crate::rpc::RpcError;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// Largest single request accepted (SPDK's limit too).
pub const MAX_REQUEST_BYTES: usize = 32 << 20;

const READ_CHUNK: usize = 64 << 10;

fn send(out: &mut UnixStream, msg: &Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    out.write_all(&bytes)
}

/// Answers an error that ends the connection.
fn fail(out: &mut UnixStream, err: RpcError) {
    tracing::info!("rpc: closing connection: {err}");
    let _ = send(out, &jsonrpc::response(Value::Null, Err(err)));
}

/// Parses and answers one complete value; false if the connection must close.
fn answer(ctx: &Context, out: &mut UnixStream, bytes: &[u8]) -> bool {
    let msg: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            fail(out, RpcError::parse_error(e));
            return false;
        }
    };
    match jsonrpc::handle_message(ctx, msg) {
        None => true,
        Some(reply) => match send(out, &reply) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("rpc: cannot answer client: {e}");
                false
            }
        },
    }
}

pub fn serve(mut stream: UnixStream, ctx: &Context) {
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("rpc: cannot clone client socket: {e}");
            return;
        }
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut scanner = Scanner::default();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        while let Some(end) = scanner.scan(&buf) {
            if !answer(ctx, &mut out, &buf[..end]) {
                return;
            }
            buf.drain(..end);
            scanner = Scanner::default();
        }
        if !scanner.started() {
            // Nothing but whitespace buffered: do not let it count toward the cap.
            buf.clear();
            scanner = Scanner::default();
        }
        if buf.len() > MAX_REQUEST_BYTES {
            fail(
                &mut out,
                RpcError::invalid_request(format!("request exceeds {MAX_REQUEST_BYTES} bytes")),
            );
            return;
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!("rpc: read failed: {e}");
                return;
            }
        };
        if n == 0 {
            if let Some(end) = scanner.finish(&buf) {
                answer(ctx, &mut out, &buf[..end]);
            } else if scanner.started() {
                tracing::debug!("rpc: client went away mid-request");
            }
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
