//! Builds the `save_config` document from the section hooks.

use super::sections::SECTIONS;
use serde_json::{json, Value};

pub fn save_config() -> Value {
    // Subsystems keep the order of their first section; later sections of the same
    // subsystem append to it.
    let mut subsystems: Vec<(&str, Vec<Value>)> = Vec::new();
    for section in SECTIONS {
        let calls = (section.calls)();
        match subsystems.iter_mut().find(|(s, _)| *s == section.subsystem) {
            Some((_, list)) => list.extend(calls),
            None => subsystems.push((section.subsystem, calls)),
        }
    }
    let subsystems: Vec<Value> = subsystems
        .into_iter()
        .map(|(subsystem, config)| json!({ "subsystem": subsystem, "config": config }))
        .collect();
    json!({ "subsystems": subsystems })
}
