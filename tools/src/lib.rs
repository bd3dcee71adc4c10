//! oxstor-tools: the control plane around the engine.
//!
//! The daemon (`oxstor`) starts the reactors and then spends its life on the *control path*:
//! a JSON-RPC 2.0 server on a Unix socket, with one OS thread per client, none of them a
//! reactor. Every operation a user (or a config file) can ask for is a method in one table,
//! [`rpc::methods::METHODS`]; the server, the config loader and `save_config` all go through it,
//! so "config" and "RPC" can never drift apart.
//!
//! Layers, bottom up:
//! - [`rpc`]: the method table, the handlers (per area), the error type and params decoding;
//! - [`jsonrpc`]: the JSON-RPC 2.0 envelope: request validation, dispatch, responses;
//! - [`server`]: the Unix socket, per-connection streams of concatenated JSON values, limits;
//! - [`config`]: loading SPDK-format JSON configs and producing `save_config`;
//! - [`daemon`]: start-up and orderly shutdown of the whole process;
//! - [`client`]: what `oxctl` (and the tests) use to make one call.

pub mod client;
pub mod config;
pub mod context;
pub mod daemon;
pub mod jsonrpc;
pub mod rpc;
pub mod server;
pub mod shutdown;

/// Where the daemon listens and the client connects unless told otherwise.
pub const DEFAULT_RPC_SOCKET: &str = "/var/tmp/oxstor.sock";
