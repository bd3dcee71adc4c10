//! The NVMe-oF/TCP target: subsystems and namespaces, controllers and their queues, exported
//! to hosts over NVMe/TCP.
//!
//! Layers, top down:
//!
//! - [`rpc`]: the nvmf_* methods (SPDK's names and parameters) and what save_config writes;
//! - [`subsystem`]: subsystems, namespaces (bdevs), allowed hosts, listeners;
//! - [`controller`]: controller state shared by one admin and N I/O queues (properties,
//!   features, keep-alive, asynchronous events);
//! - [`admin`] and [`io_cmd`]: command execution, admin queue vs I/O queues;
//! - [`conn`]: one TCP connection = one queue pair, pinned to one reactor for life; it turns
//!   the PDU stream into commands and completions into PDUs;
//! - [`listener`]: accepting connections and spreading them over the reactors.
//!
//! Control-path state (subsystems, controllers) sits behind mutexes; the I/O path of a queue
//! pair touches only its own core's state.

pub mod admin;
pub mod conn;
pub mod controller;
pub mod discovery;
pub mod io_cmd;
pub mod listener;
pub mod rpc;
pub mod subsystem;

pub use rpc::TransportOptions;
