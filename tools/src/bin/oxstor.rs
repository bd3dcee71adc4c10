//! `oxstor`: the storage target daemon (see `oxstor_tools::daemon`).

use clap::Parser;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = oxstor_tools::daemon::Args::parse();
    std::process::exit(oxstor_tools::daemon::run(args));
}
