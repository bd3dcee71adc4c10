//! The `oxstor` process from start to exit.
//!
//! Start: reactors → bdev runtime → config replay → RPC socket → "listening" on stderr.
//! Stop (SIGINT, SIGTERM or `spdk_kill_instance`): stop RPC → remove every bdev, stacked ones
//! first (uring bdevs fsync) → stop the reactors once in-flight I/O has completed → remove the
//! socket. Every failure on the way up is a one-line message on stderr and a non-zero exit,
//! after undoing whatever had been started.

use crate::config;
use crate::context::Context;
use crate::server::{socket, Server};
use crate::shutdown::Shutdown;
use clap::Parser;
use oxstor_bdev::registry;
use oxstor_reactor::{CoreMask, Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "oxstor", version, about = "oxstor block storage target")]
pub struct Args {
    /// SPDK-format JSON config to load at start-up.
    #[arg(
        short = 'c',
        long = "json",
        visible_alias = "config",
        value_name = "CONFIG"
    )]
    pub json: Option<PathBuf>,
    /// Cores to run reactors on: a hex mask (0x3) or a list ([0,2-3]).
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    pub core_mask: String,
    /// Unix socket for JSON-RPC.
    #[arg(short = 'r', long = "rpc-socket", default_value = crate::DEFAULT_RPC_SOCKET)]
    pub rpc_socket: PathBuf,
    /// Keep idle reactors spinning instead of sleeping (lowest latency, full CPU use).
    #[arg(long)]
    pub no_backoff: bool,
}

/// Why the daemon could not start; printed as `oxstor: <message>`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    CoreMask(#[from] oxstor_reactor::cpuset::CoreMaskError),
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error("cannot start reactors: {0}")]
    Runtime(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// Forwards SIGINT/SIGTERM to the shutdown latch from signal-hook's own thread, so nothing
/// runs in signal context.
fn watch_signals(shutdown: Arc<Shutdown>) -> Result<(), StartError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(StartError::Signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                shutdown.request(format!("received {name}"));
            }
        })
        .map_err(StartError::Signals)?;
    Ok(())
}

/// Removes every bdev and stops the reactors.
fn stop_engine(rt: Runtime) {
    // Hosts first (their queues hold bdev channels), then the bdevs, newest first.
    oxstor_nvme::target::rpc::shutdown();
    // Replicated volumes go down cleanly (metadata marked clean) while their disks still exist.
    oxstor_repl::rpc::shutdown_all();
    oxstor_nvme::host::detach_all();
    registry::unregister_all();
    registry::set_runtime(None);
    rt.shutdown();
}

/// Runs the daemon; returns the process exit code.
pub fn run(args: Args) -> i32 {
    match serve(args) {
        Ok(reason) => {
            eprintln!("oxstor: shut down ({reason})");
            0
        }
        Err(e) => {
            eprintln!("oxstor: {e}");
            1
        }
    }
}

fn serve(args: Args) -> Result<String, StartError> {
    let cores = CoreMask::parse(&args.core_mask)?;
    // Fail before doing any work if another daemon owns the socket.
    socket::check_available(&args.rpc_socket)?;
    let shutdown = Arc::new(Shutdown::new());
    watch_signals(shutdown.clone())?;

    let rt = Runtime::start(RuntimeConfig {
        cores: cores.clone(),
        backoff: !args.no_backoff,
        ..Default::default()
    })
    .map_err(StartError::Runtime)?;
    registry::set_runtime(Some(rt.handle()));
    tracing::info!("reactors started on cores {cores}");
    let ctx = Context {
        runtime: rt.handle(),
        shutdown: shutdown.clone(),
    };

    if let Some(path) = &args.json {
        match config::load_file(&ctx, path) {
            Ok(n) => tracing::info!("config {}: {n} calls replayed", path.display()),
            Err(e) => {
                stop_engine(rt);
                return Err(e.into());
            }
        }
    }

    let server = match Server::start(&args.rpc_socket, ctx) {
        Ok(s) => s,
        Err(e) => {
            stop_engine(rt);
            return Err(e.into());
        }
    };
    eprintln!("oxstor: listening on {}", server.path().display());

    let reason = shutdown.wait();
    tracing::info!("shutting down: {reason}");
    let socket = server.stop();
    stop_engine(rt);
    socket.remove();
    Ok(reason)
}
