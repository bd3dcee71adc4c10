//! Arbitrary bytes and connection parameters through the PDU header parser.
//! Beyond "no panic", accepted headers must describe a self-consistent PDU.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use oxstor_nvme::pdu::{CommonHeader, Negotiated, Pdu, PduHeader, Role, DIGEST_LEN};

#[derive(Debug, Arbitrary)]
struct Input {
    controller: bool,
    header_digest: bool,
    data_digest: bool,
    cpda: u8,
    hpda: u8,
    max_h2c_data: u32,
    max_in_capsule_data: u32,
    bytes: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let negotiated = Negotiated {
        local_role: if input.controller {
            Role::Controller
        } else {
            Role::Host
        },
        header_digest: input.header_digest,
        data_digest: input.data_digest,
        cpda: input.cpda,
        hpda: input.hpda,
        max_h2c_data: input.max_h2c_data,
        max_in_capsule_data: input.max_in_capsule_data,
    };
    let Ok(common) = CommonHeader::parse(&input.bytes) else {
        return;
    };
    let Ok(layout) = common.layout(&negotiated) else {
        assert!(Pdu::parse(&input.bytes, &negotiated).is_err());
        return;
    };
    let digest = if layout.data_digest { DIGEST_LEN } else { 0 };
    assert_eq!(
        layout.data_offset + layout.data_len + digest,
        layout.pdu_len
    );
    if let Ok(pdu) = Pdu::parse(&input.bytes, &negotiated) {
        assert_eq!(pdu.layout, layout);
        if let PduHeader::CapsuleCmd(command) = pdu.header {
            let _ = (
                command.sgl().kind(),
                command.starting_lba(),
                command.get_log_page(),
            );
        }
    }
});
