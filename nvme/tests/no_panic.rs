//! Feeds ~200k pseudo-random and mutated inputs through every parser and
//! checks that none panics and that accepted PDUs have consistent layouts.
//! Deterministic (fixed xorshift seeds), so a failure reproduces exactly;
//! `nvme/fuzz/` holds the coverage-guided cargo-fuzz equivalent.

use oxstor_nvme::pdu::{
    encode_capsule_cmd, encode_capsule_resp, CommonHeader, DataPdu, IcReq, IcResp, Negotiated, Pdu,
    PduHeader, PduType, R2t, Role, TermReq, COMMON_HEADER_LEN, DIGEST_LEN, MAX_HEADER_LEN,
};
use oxstor_nvme::spec::command::{Command, CommandBuilder, SglDescriptor};
use oxstor_nvme::spec::completion::{Completion, Status};
use oxstor_nvme::spec::fabrics::{
    Connect, ConnectData, ConnectDataFields, PropertyGet, PropertySet,
};
use oxstor_nvme::spec::log::copy_log_window;
use oxstor_nvme::spec::nqn::{fixed_field_str, space_padded_field_str, validate_nqn};
use oxstor_nvme::spec::registers::{Cap, Cc, Csts, Property};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
}

fn random_negotiated(rng: &mut XorShift) -> Negotiated {
    let pda = |rng: &mut XorShift| match rng.below(8) {
        0 => rng.byte(),
        1..=3 => 0,
        _ => rng.below(32) as u8,
    };
    Negotiated {
        local_role: if rng.bool() {
            Role::Host
        } else {
            Role::Controller
        },
        header_digest: rng.bool(),
        data_digest: rng.bool(),
        cpda: pda(rng),
        hpda: pda(rng),
        max_h2c_data: match rng.below(4) {
            0 => rng.next() as u32,
            _ => 4096 << rng.below(6),
        },
        max_in_capsule_data: match rng.below(4) {
            0 => rng.next() as u32,
            _ => 8192,
        },
    }
}

/// Valid PDUs of every type, as a sender with `negotiated` would emit them.
fn seed_pdus(rng: &mut XorShift, negotiated: &Negotiated) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let mut push = |buf: &[u8], len: Result<usize, _>, data_len: usize, rng: &mut XorShift| {
        if let Ok(len) = len {
            let mut pdu = buf[..len].to_vec();
            pdu.extend(rng.bytes(data_len + DIGEST_LEN));
            seeds.push(pdu);
        }
    };
    let mut buf = [0u8; 256];
    let command = CommandBuilder::nvm_io(rng.byte(), 1, rng.next(), rng.next() as u32)
        .cid(rng.next() as u16)
        .sgl(SglDescriptor::in_capsule(0, 64))
        .build();
    let data_len = rng.below(300) as usize;
    let len = encode_capsule_cmd(&command, data_len, negotiated, &mut buf);
    push(&buf, len, data_len, rng);
    let completion = Completion::new(rng.next() as u16, Status::from_field(rng.next() as u16));
    let len = encode_capsule_resp(&completion, negotiated, &mut buf);
    push(&buf, len, 0, rng);
    let data_pdu = DataPdu {
        cccid: rng.next() as u16,
        ttag: rng.next() as u16,
        data_offset: rng.below(1 << 20) as u32,
        data_len: rng.below(200) as u32,
        last: rng.bool(),
        success: rng.bool(),
    };
    let len = data_pdu.encode_h2c(negotiated, &mut buf);
    push(&buf, len, data_pdu.data_len as usize, rng);
    let len = data_pdu.encode_c2h(negotiated, &mut buf);
    push(&buf, len, data_pdu.data_len as usize, rng);
    let r2t = R2t {
        cccid: rng.next() as u16,
        ttag: rng.next() as u16,
        offset: rng.below(1 << 20) as u32,
        len: rng.below(1 << 20) as u32,
    };
    let len = r2t.encode(negotiated, &mut buf);
    push(&buf, len, 0, rng);
    let ic_req = IcReq {
        pfv: 0,
        hpda: rng.below(32) as u8,
        header_digest: rng.bool(),
        data_digest: rng.bool(),
        max_r2t: rng.next() as u32,
    };
    let len = ic_req.encode(&mut buf);
    push(&buf, len, 0, rng);
    let ic_resp = IcResp {
        pfv: 0,
        cpda: rng.below(32) as u8,
        header_digest: rng.bool(),
        data_digest: rng.bool(),
        max_h2c_data: 4096,
    };
    let len = ic_resp.encode(&mut buf);
    push(&buf, len, 0, rng);
    let offending_len = rng.below(160) as usize;
    let offending = rng.bytes(offending_len);
    let term_req = TermReq {
        fes: rng.next() as u16,
        fei: rng.next() as u32,
    };
    let role = if rng.bool() {
        Role::Host
    } else {
        Role::Controller
    };
    let len = term_req.encode(role, &offending, &mut buf);
    push(&buf, len, 0, rng);
    seeds
}

fn mutate(rng: &mut XorShift, input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !input.is_empty() => {
                let at = rng.below(input.len() as u64) as usize;
                input[at] = rng.byte();
            }
            1 if !input.is_empty() => {
                // Header bytes are where the interesting checks are.
                let at = rng.below(input.len().min(24) as u64) as usize;
                input[at] ^= 1 << rng.below(8);
            }
            2 => input.truncate(rng.below(input.len() as u64 + 1) as usize),
            3 => {
                let extra = rng.below(16) as usize;
                input.extend(rng.bytes(extra));
            }
            4 if input.len() >= 8 => {
                let plen = match rng.below(3) {
                    0 => rng.next() as u32,
                    _ => input.len() as u32 + rng.below(9) as u32 - 4,
                };
                input[4..8].copy_from_slice(&plen.to_le_bytes());
            }
            _ if input.len() > 3 => input[3] = rng.byte(),
            _ => {}
        }
    }
}

fn exercise_command(command: &Command<'_>) {
    let _ = (
        command.opcode(),
        command.flags(),
        command.fuse(),
        command.data_pointer_kind(),
    );
    let _ = (
        command.cid(),
        command.nsid(),
        command.fabrics_type(),
        command.cdw2(),
        command.cdw3(),
    );
    let _ = (
        command.metadata_pointer(),
        command.sgl().kind(),
        command.dword(99),
    );
    let _ = (
        command.cdw10(),
        command.cdw11(),
        command.cdw12(),
        command.cdw13(),
    );
    let _ = (
        command.cdw14(),
        command.cdw15(),
        command.starting_lba(),
        command.block_count(),
    );
    let _ = (
        command.force_unit_access(),
        command.limited_retry(),
        command.write_zeroes_deallocate(),
    );
    let _ = (
        command.dsm_range_count(),
        command.dsm_deallocate(),
        command.identify_cns(),
    );
    let _ = (
        command.identify_cntid(),
        command.identify_csi(),
        command.get_log_page().byte_len(),
    );
    let _ = (
        command.feature_id(),
        command.feature_save(),
        command.feature_select(),
    );
    let _ = (command.abort_sqid(), command.abort_cid());
    let _ = Connect::from_command(command);
    if let Some(get) = PropertyGet::from_command(command) {
        let _ = Property::resolve(get.offset, get.size());
    }
    if let Some(set) = PropertySet::from_command(command) {
        let _ = Property::resolve_writable(set.offset, set.size());
    }
}

fn exercise_pdu(bytes: &[u8], negotiated: &Negotiated) {
    let Ok(common) = CommonHeader::parse(bytes) else {
        assert!(bytes.len() < COMMON_HEADER_LEN);
        return;
    };
    let Ok(layout) = common.layout(negotiated) else {
        assert!(Pdu::parse(bytes, negotiated).is_err());
        return;
    };
    let header_len = layout.header_with_digest_len();
    assert!(header_len <= MAX_HEADER_LEN);
    assert!(layout.data_offset >= header_len || layout.pdu_type.is_term_req());
    let digest = if layout.data_digest { DIGEST_LEN } else { 0 };
    assert_eq!(
        layout.data_offset + layout.data_len + digest,
        layout.pdu_len,
        "{layout:?}"
    );
    assert_eq!(
        layout.padding_len() + layout.data_len + digest,
        layout.bytes_after_header()
    );
    if layout.data_digest {
        assert!(layout.data_len > 0);
    }

    match Pdu::parse(bytes, negotiated) {
        Ok(pdu) => {
            assert_eq!(pdu.layout, layout);
            assert!(bytes.len() >= header_len);
            match pdu.header {
                PduHeader::CapsuleCmd(command) => exercise_command(&command),
                PduHeader::H2cData(data) | PduHeader::C2hData(data) => {
                    assert_eq!(data.data_len as usize, layout.data_len);
                }
                PduHeader::R2t(r2t) => assert!(r2t.len > 0),
                PduHeader::IcResp(resp) => assert!(resp.max_h2c_data >= 4096),
                PduHeader::IcReq(_)
                | PduHeader::H2cTermReq(_)
                | PduHeader::C2hTermReq(_)
                | PduHeader::CapsuleResp(_) => {}
            }
            if let Some(range) = bytes.get(layout.data_range()) {
                let _ = oxstor_nvme::pdu::data_digest(range);
            }
        }
        Err(error) => {
            let _ = (
                error.term_req_fields(),
                TermReq::for_error(&error),
                error.to_string(),
            );
        }
    }
}

#[test]
fn pdu_parser_survives_arbitrary_and_mutated_input() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0usize;
    for round in 0..120_000u32 {
        let negotiated = random_negotiated(&mut rng);
        let mut input = if round % 4 == 0 {
            let len = rng.below(200) as usize;
            let mut bytes = rng.bytes(len);
            if len >= 3 && rng.bool() {
                // Plausible type and HLEN get random input past the first checks.
                bytes[0] = rng.below(10) as u8;
                bytes[2] = [24u8, 72, 128][rng.below(3) as usize];
            }
            bytes
        } else {
            // Seeds from a peer: flip the role so they are receivable.
            let peer = Negotiated {
                local_role: other(negotiated.local_role),
                ..negotiated
            };
            let seeds = seed_pdus(&mut rng, &peer);
            let mut pick = seeds[rng.below(seeds.len() as u64) as usize].clone();
            if rng.below(8) != 0 {
                mutate(&mut rng, &mut pick);
            }
            pick
        };
        if rng.below(16) == 0 {
            input.truncate(rng.below(COMMON_HEADER_LEN as u64) as usize);
        }
        exercise_pdu(&input, &negotiated);
        if Pdu::parse(&input, &negotiated).is_ok() {
            accepted += 1;
        }
    }
    // The mutator must not be so aggressive that nothing valid gets through.
    assert!(accepted > 10_000, "only {accepted} inputs parsed");
}

#[test]
fn encoded_pdus_parse_back_at_the_peer() {
    let mut rng = XorShift(0x0123_4567_89AB_CDEF);
    for _ in 0..20_000 {
        let mut negotiated = random_negotiated(&mut rng);
        negotiated.cpda %= 32;
        negotiated.hpda %= 32;
        negotiated.max_in_capsule_data = u32::MAX;
        negotiated.max_h2c_data = u32::MAX;
        for pdu in seed_pdus(&mut rng, &negotiated) {
            let pdu_type = PduType::from_u8(pdu[0]).expect("encoders emit valid types");
            let sender = pdu_type.sender();
            // Encoders serve both roles; a PDU is only checked against the
            // side it is meant for. IC and termination PDUs are exchanged
            // without digests, whatever was negotiated.
            let receiver =
                if matches!(pdu_type, PduType::IcReq | PduType::IcResp) || pdu_type.is_term_req() {
                    Negotiated::initial(other(sender))
                } else if sender == negotiated.local_role {
                    Negotiated {
                        local_role: other(sender),
                        ..negotiated
                    }
                } else {
                    continue;
                };
            let parsed = Pdu::parse(&pdu, &receiver);
            assert!(
                parsed.is_ok(),
                "{parsed:?} for {:x?} at {receiver:?}",
                &pdu[..8]
            );
        }
    }
}

fn other(role: Role) -> Role {
    match role {
        Role::Host => Role::Controller,
        Role::Controller => Role::Host,
    }
}

#[test]
fn spec_parsers_survive_arbitrary_and_mutated_input() {
    let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
    let valid_connect = ConnectDataFields {
        host_id: [7; 16],
        cntlid: 0xFFFF,
        subsystem_nqn: "nqn.2024-01.io.oxstor:disk0",
        host_nqn: "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    }
    .encode()
    .unwrap();
    let nqns = [
        "nqn.2014-08.org.nvmexpress.discovery",
        "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "nqn.2016-06.io.spdk:cnode1",
    ];
    for round in 0..60_000u32 {
        let len = rng.below(1100) as usize;
        let random = rng.bytes(len);

        let mut sqe = if round % 2 == 0 {
            random.clone()
        } else {
            CommandBuilder::fabrics([0u8, 1, 4][rng.below(3) as usize])
                .cdw10(rng.next() as u32)
                .cdw11(rng.next() as u32)
                .cdw12(rng.next() as u32)
                .byte(40, rng.byte())
                .build()
                .to_vec()
        };
        mutate(&mut rng, &mut sqe);
        if let Ok(command) = Command::parse(&sqe) {
            exercise_command(&command);
        }
        let _ = Completion::parse(&random).map(|cqe| cqe.encode());

        let mut connect = valid_connect.to_vec();
        for _ in 0..rng.below(6) {
            let at = rng.below(connect.len() as u64) as usize;
            connect[at] = rng.byte();
        }
        connect.truncate(if rng.below(16) == 0 {
            rng.below(1024) as usize
        } else {
            1024
        });
        if let Ok(data) = ConnectData::parse(&connect) {
            let _ = (data.host_id(), data.cntlid());
            if let Ok(nqn) = data.subsystem_nqn() {
                let _ = validate_nqn(nqn);
            }
            if let Ok(nqn) = data.host_nqn() {
                let _ = validate_nqn(nqn);
            }
        }

        let mut nqn = nqns[rng.below(nqns.len() as u64) as usize]
            .as_bytes()
            .to_vec();
        mutate(&mut rng, &mut nqn);
        let _ = validate_nqn(&String::from_utf8_lossy(&nqn));
        let _ = validate_nqn(&String::from_utf8_lossy(&random));
        let _ = (fixed_field_str(&random), space_padded_field_str(&nqn));

        let _ = Property::resolve(rng.next() as u32 % 64, Some(rng.byte() % 10));
        let _ = (
            Cap::from_bits(rng.next()).to_bits(),
            Cc::from_bits(rng.next() as u32).to_bits(),
        );
        let _ = Csts::from_bits(rng.next() as u32).to_bits();
        let mut window = vec![0u8; rng.below(600) as usize];
        let offset = if rng.bool() {
            rng.next()
        } else {
            rng.below(1200)
        };
        let _ = copy_log_window(&random, offset, &mut window);
        let _ = SglDescriptor::parse(&std::array::from_fn(|_| rng.byte())).kind();
    }
}
