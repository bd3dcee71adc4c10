//! `oxctl`: make one JSON-RPC call to the daemon and print the result.
//!
//! Exit status: 0 on success, 1 when the daemon answers with an error, 2 when the call could
//! not be made (no daemon, bad arguments, broken connection).

use clap::Parser;
use oxstor_tools::client::{Client, ClientError};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "oxctl", version, about = "Call an oxstor JSON-RPC method")]
struct Args {
    /// The daemon's RPC socket.
    #[arg(short = 's', long = "server", env = "OXSTOR_RPC_SOCK",
          default_value = oxstor_tools::DEFAULT_RPC_SOCKET)]
    socket: PathBuf,
    /// Seconds to wait for the answer.
    #[arg(short = 't', long = "timeout", default_value_t = 60.0)]
    timeout: f64,
    /// Method name; `oxctl rpc_get_methods` lists them.
    method: String,
    /// Parameters as a JSON object (or array), e.g. '{"name":"Malloc0"}'.
    params: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let params = match args.params.as_deref().map(serde_json::from_str::<Value>) {
        None => None,
        Some(Ok(v @ (Value::Object(_) | Value::Array(_)))) => Some(v),
        Some(Ok(_)) => {
            eprintln!("oxctl: JSON_PARAMS must be a JSON object or array");
            return ExitCode::from(2);
        }
        Some(Err(e)) => {
            eprintln!("oxctl: JSON_PARAMS is not valid JSON: {e}");
            return ExitCode::from(2);
        }
    };
    let timeout = (args.timeout > 0.0)
        .then(|| Duration::try_from_secs_f64(args.timeout).ok())
        .flatten();
    let result =
        Client::connect(&args.socket, timeout).and_then(|mut c| c.call(&args.method, params));
    match result {
        Ok(value) => {
            // Like SPDK's rpc.py: a bare string result (a new bdev's name) prints unquoted.
            let text = match value {
                Value::String(s) => s,
                v => serde_json::to_string_pretty(&v).unwrap_or_default(),
            };
            // A closed pipe (`oxctl ... | head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
        Err(ClientError::Rpc(e)) => {
            eprintln!("error {}: {}", e.code, e.message);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("oxctl: {e}");
            ExitCode::from(2)
        }
    }
}
