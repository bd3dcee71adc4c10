//! A minimal JSON-RPC client for the daemon's Unix socket (used by `oxctl` and the tests).

use crate::rpc::RpcError;
use serde_json::{json, Value};
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {}: {source} (is oxstor running?)", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad response from the daemon: {0}")]
    Protocol(String),
    /// The daemon answered with a JSON-RPC error.
    #[error("error {}: {}", .0.code, .0.message)]
    Rpc(RpcError),
}

pub struct Client {
    writer: UnixStream,
    // Kept across calls so bytes buffered past one response are not lost.
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Client {
    pub fn connect(path: &Path, timeout: Option<Duration>) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next_id: 1,
        })
    }

    /// Sends one request and waits for its response.
    pub fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({ "jsonrpc": "2.0", "method": method, "id": id });
        if let (Some(p), Value::Object(o)) = (params, &mut req) {
            o.insert("params".into(), p);
        }
        let mut bytes =
            serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        bytes.push(b'\n');
        self.writer.write_all(&bytes)?;
        let resp = serde_json::Deserializer::from_reader(&mut self.reader)
            .into_iter::<Value>()
            .next()
            .ok_or_else(|| ClientError::Protocol("connection closed before a response".into()))?
            .map_err(|e| {
                if e.is_io() || e.is_eof() {
                    ClientError::Protocol(format!("connection lost: {e}"))
                } else {
                    ClientError::Protocol(e.to_string())
                }
            })?;
        Self::unwrap_response(resp, id)
    }

    fn unwrap_response(resp: Value, id: u64) -> Result<Value, ClientError> {
        if let Some(err) = resp.get("error") {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return Err(ClientError::Rpc(RpcError::new(code as i32, message)));
        }
        if resp.get("id") != Some(&json!(id)) {
            return Err(ClientError::Protocol(format!(
                "response for another request: {resp}"
            )));
        }
        resp.get("result")
            .cloned()
            .ok_or_else(|| ClientError::Protocol(format!("no result in {resp}")))
    }
}
