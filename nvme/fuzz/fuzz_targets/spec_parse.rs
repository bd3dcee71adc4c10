//! Arbitrary bytes through the spec-layer parsers: a 64-byte SQE (and the
//! Fabrics commands inside it), a CQE, the 1024-byte Connect data and NQNs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxstor_nvme::spec::command::Command;
use oxstor_nvme::spec::completion::Completion;
use oxstor_nvme::spec::fabrics::{Connect, ConnectData, PropertyGet, PropertySet};
use oxstor_nvme::spec::nqn::{fixed_field_str, validate_nqn};
use oxstor_nvme::spec::registers::Property;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(command) = Command::parse(bytes) {
        let _ = (
            command.sgl().kind(),
            command.starting_lba(),
            command.block_count(),
        );
        let _ = (command.get_log_page().byte_len(), command.fabrics_type());
        let _ = Connect::from_command(&command);
        if let Some(get) = PropertyGet::from_command(&command) {
            let _ = Property::resolve(get.offset, get.size());
        }
        if let Some(set) = PropertySet::from_command(&command) {
            let _ = Property::resolve_writable(set.offset, set.size());
        }
    }
    if let Ok(completion) = Completion::parse(bytes) {
        assert_eq!(Completion::from_bytes(&completion.encode()), completion);
    }
    if let Ok(data) = ConnectData::parse(bytes) {
        let _ = (data.host_id(), data.cntlid());
        if let Ok(nqn) = data.host_nqn() {
            let _ = validate_nqn(nqn);
        }
        let _ = data.subsystem_nqn().map(validate_nqn);
    }
    if let Ok(text) = fixed_field_str(bytes) {
        let _ = validate_nqn(text);
    }
});
