//! SPDK-format JSON configuration: loading (`--json`) and producing it (`save_config`).
//!
//! A config is nothing but a list of RPC calls grouped by subsystem:
//! `{"subsystems":[{"subsystem":"bdev","config":[{"method":..,"params":..}]}]}`. Loading replays
//! each call through the method table; saving asks each [`sections::SECTIONS`] hook for the
//! calls that would recreate the current state. Because both ends use the same methods, a saved
//! config loads back into an identical state.

pub mod ignored;
pub mod load;
pub mod save;
pub mod sections;

pub use load::{load_file, ConfigError};
pub use save::save_config;
pub use sections::{ConfigSection, SECTIONS};
