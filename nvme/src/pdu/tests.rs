use super::*;
use crate::spec::command::{CommandBuilder, SglDescriptor, SglKind};
use crate::spec::completion::{Completion, Status};
use crate::spec::opcodes::io;

fn controller(header_digest: bool, data_digest: bool) -> Negotiated {
    Negotiated {
        header_digest,
        data_digest,
        max_h2c_data: 65536,
        ..Negotiated::initial(Role::Controller)
    }
}

fn host(header_digest: bool, data_digest: bool) -> Negotiated {
    Negotiated {
        local_role: Role::Host,
        ..controller(header_digest, data_digest)
    }
}

fn fatal(status: FatalErrorStatus, information: u32) -> PduError {
    PduError::Fatal {
        status,
        information,
    }
}

fn invalid(offset: u32) -> PduError {
    fatal(FatalErrorStatus::InvalidHeaderField, offset)
}

/// Parses the header of `pdu` the way a streaming transport does: common
/// header first, then exactly the header and its digest.
fn receive<'a>(pdu: &'a [u8], negotiated: &Negotiated) -> Result<Pdu<'a>, PduError> {
    let layout =
        CommonHeader::parse(&pdu[..COMMON_HEADER_LEN.min(pdu.len())])?.layout(negotiated)?;
    let header_len = layout.header_with_digest_len().min(pdu.len());
    let parsed = Pdu::parse(&pdu[..header_len], negotiated)?;
    assert_eq!(parsed.layout, layout);
    Ok(parsed)
}

fn read_command_bytes() -> [u8; 64] {
    CommandBuilder::nvm_io(io::READ, 1, 0x1234, 8)
        .cid(1)
        .sgl(SglDescriptor::transport_data_block(4096))
        .build()
}

#[test]
fn ic_req_known_bytes() {
    let request = IcReq {
        pfv: 0,
        hpda: 0,
        header_digest: true,
        data_digest: true,
        max_r2t: 0,
    };
    let mut buf = [0xEE; 200];
    assert_eq!(request.encode(&mut buf), Ok(128));
    let mut expected = [0u8; 128];
    expected[..16].copy_from_slice(&[
        0x00, 0x00, 0x80, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 0x03, 0, 0, 0, 0,
    ]);
    assert_eq!(&buf[..128], &expected[..]);

    let pdu = receive(&buf[..128], &Negotiated::initial(Role::Controller)).unwrap();
    assert_eq!(pdu.header, PduHeader::IcReq(request));
    assert_eq!(pdu.layout.data_len, 0);
    assert_eq!(pdu.layout.pdu_len, 128);
}

#[test]
fn ic_req_field_errors() {
    let mut buf = [0u8; 128];
    IcReq {
        pfv: 0,
        hpda: 31,
        header_digest: false,
        data_digest: false,
        max_r2t: 3,
    }
    .encode(&mut buf)
    .unwrap();
    let negotiated = Negotiated::initial(Role::Controller);
    assert!(receive(&buf, &negotiated).is_ok());

    let mut wrong_pfv = buf;
    wrong_pfv[8] = 1;
    assert_eq!(receive(&wrong_pfv, &negotiated), Err(invalid(8)));

    let mut wrong_hpda = buf;
    wrong_hpda[10] = 32;
    assert_eq!(receive(&wrong_hpda, &negotiated), Err(invalid(10)));

    let mut wrong_plen = buf;
    wrong_plen[4] = 132;
    assert_eq!(receive(&wrong_plen, &negotiated), Err(invalid(4)));

    let mut wrong_hlen = buf;
    wrong_hlen[2] = 72;
    assert_eq!(receive(&wrong_hlen, &negotiated), Err(invalid(2)));

    let mut digest_flag = buf;
    digest_flag[1] = flags::HDGSTF;
    assert_eq!(receive(&digest_flag, &negotiated), Err(invalid(1)));

    let mut nonzero_pdo = buf;
    nonzero_pdo[3] = 8;
    assert_eq!(receive(&nonzero_pdo, &negotiated), Err(invalid(3)));

    // A host never receives an ICReq.
    assert_eq!(
        receive(&buf, &Negotiated::initial(Role::Host)),
        Err(invalid(0))
    );
}

#[test]
fn ic_resp_round_trip_and_errors() {
    let response = IcResp {
        pfv: 0,
        cpda: 0,
        header_digest: true,
        data_digest: false,
        max_h2c_data: 131072,
    };
    let mut buf = [0u8; 128];
    response.encode(&mut buf).unwrap();
    assert_eq!(
        &buf[..16],
        &[1, 0, 128, 0, 128, 0, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0]
    );
    let negotiated = Negotiated::initial(Role::Host);
    assert_eq!(
        receive(&buf, &negotiated).unwrap().header,
        PduHeader::IcResp(response)
    );

    for (max_h2c_data, ok) in [
        (4096, true),
        (4095, false),
        (4098, false),
        (0, false),
        (u32::MAX - 3, true),
    ] {
        let mut bytes = buf;
        bytes[12..16].copy_from_slice(&u32::to_le_bytes(max_h2c_data));
        let result = receive(&bytes, &negotiated).map(|_| ());
        assert_eq!(
            result,
            if ok { Ok(()) } else { Err(invalid(12)) },
            "{max_h2c_data}"
        );
    }
    let mut wrong_cpda = buf;
    wrong_cpda[10] = 200;
    assert_eq!(receive(&wrong_cpda, &negotiated), Err(invalid(10)));
    let mut wrong_pfv = buf;
    wrong_pfv[9] = 1;
    assert_eq!(receive(&wrong_pfv, &negotiated), Err(invalid(8)));
}

#[test]
fn negotiated_from_exchange() {
    let request = IcReq {
        pfv: 0,
        hpda: 3,
        header_digest: true,
        data_digest: true,
        max_r2t: 0,
    };
    let response = IcResp {
        pfv: 0,
        cpda: 1,
        header_digest: true,
        data_digest: false,
        max_h2c_data: 8192,
    };
    let negotiated = Negotiated::from_exchange(Role::Host, &request, &response, 4096);
    assert!(negotiated.header_digest && !negotiated.data_digest);
    assert_eq!(negotiated.data_alignment(Role::Host), 8);
    assert_eq!(negotiated.data_alignment(Role::Controller), 16);
    assert_eq!(negotiated.max_h2c_data, 8192);
}

#[test]
fn capsule_cmd_read_with_header_digest_matches_hand_computed_vector() {
    let command = read_command_bytes();
    let negotiated = host(true, false);
    let mut buf = [0u8; MAX_HEADER_LEN];
    let written = encode_capsule_cmd(&command, 0, &negotiated, &mut buf).unwrap();
    assert_eq!(written, 76);
    assert_eq!(&buf[..8], &[0x04, 0x01, 72, 0, 76, 0, 0, 0]);
    assert_eq!(&buf[8..72], &command[..]);
    // CRC32C of the 72 header bytes, computed by an independent bitwise
    // implementation outside this crate.
    assert_eq!(&buf[72..76], &0x4D6B_3A86u32.to_le_bytes());
    assert_eq!(header_digest(&buf[..72]), 0x4D6B_3A86);

    let pdu = receive(&buf[..76], &controller(true, false)).unwrap();
    let PduHeader::CapsuleCmd(cmd) = pdu.header else {
        panic!("expected a command capsule, got {:?}", pdu.header);
    };
    assert_eq!(cmd.opcode(), io::READ);
    assert_eq!(cmd.starting_lba(), 0x1234);
    assert_eq!(cmd.nlb_zero_based(), 7);
    assert_eq!(
        cmd.sgl().kind(),
        SglKind::TransportDataBlock { length: 4096 }
    );
    assert_eq!(pdu.layout.data_len, 0);
    assert_eq!(pdu.layout.bytes_after_header(), 0);

    let mut corrupted = buf;
    corrupted[50] ^= 0x01;
    assert_eq!(
        receive(&corrupted[..76], &controller(true, false)),
        Err(fatal(FatalErrorStatus::HeaderDigestError, 0))
    );
    // Digests were negotiated but the flag is missing.
    let mut unflagged = buf;
    unflagged[1] = 0;
    assert_eq!(
        receive(&unflagged[..76], &controller(true, false)),
        Err(invalid(1))
    );
    // The flag is set but digests were not negotiated.
    assert_eq!(
        receive(&buf[..76], &controller(false, false)),
        Err(invalid(1))
    );
}

#[test]
fn capsule_cmd_with_in_capsule_data_and_data_digest() {
    let data: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
    let command = CommandBuilder::nvm_io(io::WRITE, 1, 0, 1)
        .cid(2)
        .sgl(SglDescriptor::in_capsule(0, 512))
        .build();
    let negotiated = host(false, true);
    let mut header = [0u8; MAX_HEADER_LEN];
    let written = encode_capsule_cmd(&command, data.len(), &negotiated, &mut header).unwrap();
    assert_eq!(written, 72);
    assert_eq!(
        &header[..8],
        &[0x04, flags::DDGSTF, 72, 72, 0x4C, 0x02, 0, 0]
    ); // PLEN 588

    let mut wire = header[..written].to_vec();
    wire.extend_from_slice(&data);
    wire.extend_from_slice(&data_digest(&data).to_le_bytes());
    let pdu = receive(&wire, &controller(false, true)).unwrap();
    let layout = pdu.layout;
    assert_eq!(layout.data_range(), 72..584);
    assert_eq!(layout.padding_len(), 0);
    assert_eq!(layout.data_digest_offset(), Some(584));
    assert_eq!(layout.bytes_after_header(), 516);
    let received = &wire[layout.data_range()];
    let digest: [u8; 4] = wire[584..588].try_into().unwrap();
    assert_eq!(verify_data_digest(received, digest), Ok(()));
    assert!(verify_data_digest(&received[1..], digest).is_err());

    // Too much in-capsule data for the queue.
    let small = Negotiated {
        max_in_capsule_data: 256,
        ..controller(false, true)
    };
    assert_eq!(
        receive(&wire, &small),
        Err(fatal(FatalErrorStatus::DataTransferLimitExceeded, 4))
    );
    // Data present but the data digest flag is missing.
    let mut unflagged = wire.clone();
    unflagged[1] = 0;
    assert_eq!(
        receive(&unflagged, &controller(false, true)),
        Err(invalid(1))
    );
}

#[test]
fn capsule_cmd_pdo_respects_cpda() {
    let command = read_command_bytes();
    let negotiated = Negotiated {
        cpda: 7,
        ..host(true, false)
    };
    let mut buf = [0xEE; MAX_HEADER_LEN];
    let written = encode_capsule_cmd(&command, 100, &negotiated, &mut buf).unwrap();
    // Header + digest is 76 bytes; the next multiple of (7 + 1) * 4 is 96.
    assert_eq!(written, 96);
    assert_eq!(buf[3], 96);
    assert_eq!(u32::from_le_bytes(buf[4..8].try_into().unwrap()), 196);
    assert!(buf[76..96].iter().all(|&b| b == 0), "padding is zeroed");

    let receiver = Negotiated {
        cpda: 7,
        ..controller(true, false)
    };
    let layout = receive(&buf[..96], &receiver).unwrap().layout;
    assert_eq!(layout.padding_len(), 20);
    assert_eq!(layout.data_range(), 96..196);

    // PDO not a multiple of the alignment; the header digest must be
    // recomputed since PDO is covered by it.
    let mut misaligned = buf;
    misaligned[3] = 80;
    let digest = header_digest(&misaligned[..72]);
    misaligned[72..76].copy_from_slice(&digest.to_le_bytes());
    assert_eq!(receive(&misaligned[..96], &receiver), Err(invalid(3)));
    // PDO inside the header digest.
    let mut overlapping = buf;
    overlapping[3] = 72;
    assert_eq!(
        receive(&overlapping[..96], &controller(true, false)),
        Err(invalid(3))
    );

    let too_coarse = Negotiated {
        cpda: 255,
        ..host(false, false)
    };
    assert_eq!(
        encode_capsule_cmd(&command, 1, &too_coarse, &mut buf),
        Err(EncodeError::AlignmentTooLarge(1024))
    );
}

#[test]
fn capsule_resp_round_trip() {
    let completion = Completion::new(1, Status::SUCCESS);
    let mut buf = [0u8; 64];
    let written = encode_capsule_resp(&completion, &controller(true, false), &mut buf).unwrap();
    assert_eq!(written, 28);
    assert_eq!(&buf[..8], &[0x05, 0x01, 24, 0, 28, 0, 0, 0]);
    assert_eq!(
        &buf[24..28],
        &0x5446_B823u32.to_le_bytes(),
        "independently computed"
    );
    let pdu = receive(&buf[..28], &host(true, false)).unwrap();
    assert_eq!(pdu.header, PduHeader::CapsuleResp(completion));

    let mut long = [0u8; 64];
    encode_capsule_resp(&completion, &controller(false, false), &mut long).unwrap();
    long[4] = 32;
    assert_eq!(receive(&long[..32], &host(false, false)), Err(invalid(4)));
    assert_eq!(
        encode_capsule_resp(&completion, &controller(false, false), &mut buf[..23]),
        Err(EncodeError::BufferTooSmall {
            needed: 24,
            available: 23
        })
    );
}

#[test]
fn h2c_data_round_trip_and_checks() {
    let data_pdu = DataPdu {
        cccid: 5,
        ttag: 9,
        data_offset: 8192,
        data_len: 4096,
        last: true,
        success: false,
    };
    let mut buf = [0u8; 64];
    let written = data_pdu.encode_h2c(&host(true, true), &mut buf).unwrap();
    assert_eq!(written, 28);
    assert_eq!(&buf[..8], &[0x06, 0x07, 24, 28, 0x20, 0x10, 0, 0]); // PLEN 28 + 4096 + 4
    assert_eq!(
        &buf[8..24],
        &[5, 0, 9, 0, 0, 0x20, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0]
    );
    let pdu = receive(&buf[..28], &controller(true, true)).unwrap();
    assert_eq!(pdu.header, PduHeader::H2cData(data_pdu));
    assert!(pdu.layout.is_last_pdu());
    assert_eq!(pdu.layout.data_range(), 28..4124);

    // DATAL disagrees with PLEN.
    let mut mismatched = [0u8; 64];
    DataPdu {
        data_len: 4000,
        ..data_pdu
    }
    .encode_h2c(&host(false, false), &mut mismatched)
    .unwrap();
    mismatched[16..20].copy_from_slice(&4096u32.to_le_bytes());
    assert_eq!(
        receive(&mismatched[..24], &controller(false, false)),
        Err(invalid(16))
    );

    // More than MAXH2CDATA.
    let small = Negotiated {
        max_h2c_data: 4092,
        ..controller(false, false)
    };
    let mut big = [0u8; 64];
    data_pdu.encode_h2c(&host(false, false), &mut big).unwrap();
    assert_eq!(
        receive(&big[..24], &small),
        Err(fatal(FatalErrorStatus::DataTransferLimitExceeded, 16))
    );

    // DATAO + DATAL wraps.
    let mut wrapping = [0u8; 64];
    DataPdu {
        data_offset: u32::MAX,
        ..data_pdu
    }
    .encode_h2c(&host(false, false), &mut wrapping)
    .unwrap();
    assert_eq!(
        receive(&wrapping[..24], &controller(false, false)),
        Err(fatal(FatalErrorStatus::DataTransferOutOfRange, 12))
    );

    // SUCCESS is not an H2CData flag.
    let mut bad_flags = big;
    bad_flags[1] |= flags::SUCCESS;
    assert_eq!(
        receive(&bad_flags[..24], &controller(false, false)),
        Err(invalid(1))
    );
}

#[test]
fn c2h_data_uses_host_alignment_and_success_flag() {
    let data_pdu = DataPdu {
        cccid: 3,
        ttag: 0,
        data_offset: 0,
        data_len: 512,
        last: false,
        success: true,
    };
    let sender = Negotiated {
        hpda: 3,
        ..controller(false, false)
    };
    let mut buf = [0u8; 64];
    let written = data_pdu.encode_c2h(&sender, &mut buf).unwrap();
    assert_eq!(written, 32, "24-byte header padded to a multiple of 16");
    assert_eq!(buf[1], flags::LAST_PDU | flags::SUCCESS);
    let receiver = Negotiated {
        hpda: 3,
        ..host(false, false)
    };
    let pdu = receive(&buf[..32], &receiver).unwrap();
    assert_eq!(
        pdu.header,
        PduHeader::C2hData(DataPdu {
            last: true,
            ..data_pdu
        })
    );
    assert_eq!(pdu.layout.padding_len(), 8);

    let mut success_only = buf;
    success_only[1] = flags::SUCCESS;
    assert_eq!(receive(&success_only[..32], &receiver), Err(invalid(1)));
    // A controller never receives C2HData.
    assert_eq!(
        receive(&buf[..32], &controller(false, false)),
        Err(invalid(0))
    );
}

#[test]
fn data_digest_flag_rules() {
    // Digests on but no data: DDGSTF must be clear.
    let mut buf = [0u8; 64];
    DataPdu {
        cccid: 1,
        ttag: 1,
        data_offset: 0,
        data_len: 0,
        last: true,
        success: false,
    }
    .encode_h2c(&host(false, true), &mut buf)
    .unwrap();
    assert_eq!(buf[1], flags::LAST_PDU);
    assert!(receive(&buf[..24], &controller(false, true)).is_ok());
    let mut flagged = buf;
    flagged[1] |= flags::DDGSTF;
    assert_eq!(
        receive(&flagged[..24], &controller(false, true)),
        Err(invalid(1))
    );

    // A data digest with no data in front of it.
    let mut digest_only = [0u8; 64];
    digest_only[..8].copy_from_slice(&[0x06, flags::DDGSTF, 24, 24, 28, 0, 0, 0]);
    assert_eq!(
        receive(&digest_only[..24], &controller(false, true)),
        Err(invalid(4))
    );
}

#[test]
fn r2t_round_trip_and_checks() {
    let r2t = R2t {
        cccid: 7,
        ttag: 1,
        offset: 0,
        len: 65536,
    };
    let mut buf = [0u8; 64];
    assert_eq!(r2t.encode(&controller(false, false), &mut buf), Ok(24));
    assert_eq!(&buf[..8], &[0x09, 0, 24, 0, 24, 0, 0, 0]);
    assert_eq!(
        receive(&buf[..24], &host(false, false)).unwrap().header,
        PduHeader::R2t(r2t)
    );

    let mut zero_len = [0u8; 64];
    R2t { len: 0, ..r2t }
        .encode(&controller(false, false), &mut zero_len)
        .unwrap();
    assert_eq!(
        receive(&zero_len[..24], &host(false, false)),
        Err(invalid(16))
    );

    let mut with_pdo = buf;
    with_pdo[3] = 24;
    assert_eq!(
        receive(&with_pdo[..24], &host(false, false)),
        Err(invalid(3))
    );

    let mut with_data = buf;
    with_data[4] = 28;
    assert_eq!(
        receive(&with_data[..24], &host(false, false)),
        Err(invalid(4))
    );

    let mut hlen = buf;
    hlen[2] = 28;
    assert_eq!(receive(&hlen[..24], &host(false, false)), Err(invalid(2)));
}

#[test]
fn term_req_round_trip_and_length_rules() {
    let offending = [0xAB; 200];
    let term_req = TermReq {
        fes: FatalErrorStatus::InvalidHeaderField as u16,
        fei: 3,
    };
    let mut buf = [0u8; 256];
    let written = term_req
        .encode(Role::Controller, &offending, &mut buf)
        .unwrap();
    assert_eq!(written, 152, "at most 128 bytes of the offending header");
    assert_eq!(
        &buf[..14],
        &[0x03, 0, 24, 0, 152, 0, 0, 0, 1, 0, 3, 0, 0, 0]
    );
    let pdu = receive(&buf[..152], &host(true, true)).unwrap();
    assert_eq!(pdu.header, PduHeader::C2hTermReq(term_req));
    assert_eq!(pdu.layout.data_range(), 24..152);
    assert!(!pdu.layout.header_digest && !pdu.layout.data_digest);

    let short = term_req
        .encode(Role::Host, &offending[..8], &mut buf)
        .unwrap();
    assert_eq!(short, 32);
    assert_eq!(
        receive(&buf[..32], &controller(false, false))
            .unwrap()
            .header,
        PduHeader::H2cTermReq(term_req)
    );

    for plen in [23u32, 153, u32::MAX] {
        let mut bad = buf;
        bad[4..8].copy_from_slice(&plen.to_le_bytes());
        assert_eq!(
            receive(&bad[..32], &controller(false, false)),
            Err(PduError::MalformedTermReq { plen })
        );
    }
    assert!(term_req
        .encode(Role::Host, &offending, &mut buf[..100])
        .is_err());
}

#[test]
fn error_to_term_req() {
    let error = invalid(3);
    assert_eq!(error.term_req_fields(), Some((1, 3)));
    assert_eq!(TermReq::for_error(&error), Some(TermReq { fes: 1, fei: 3 }));
    assert_eq!(
        TermReq::for_error(&PduError::MalformedTermReq { plen: 0 }),
        None
    );
    assert_eq!(PduError::sequence_error().term_req_fields(), Some((2, 0)));
    assert_eq!(
        FatalErrorStatus::from_u16(5),
        Some(FatalErrorStatus::DataTransferLimitExceeded)
    );
    assert_eq!(FatalErrorStatus::from_u16(7), None);
    assert_eq!(
        error.to_string(),
        "invalid PDU header field (FES 0x1), FEI 3"
    );
}

#[test]
fn unknown_types_and_short_input() {
    let mut header = [0u8; 24];
    header[..8].copy_from_slice(&[0x08, 0, 24, 0, 24, 0, 0, 0]);
    assert_eq!(receive(&header, &controller(false, false)), Err(invalid(0)));
    header[0] = 0xFF;
    assert_eq!(receive(&header, &host(false, false)), Err(invalid(0)));

    assert_eq!(
        CommonHeader::parse(&[0; 7]),
        Err(PduError::Incomplete {
            needed: 8,
            available: 7
        })
    );
    let mut buf = [0u8; 128];
    encode_capsule_cmd(&read_command_bytes(), 0, &host(true, false), &mut buf).unwrap();
    assert_eq!(
        Pdu::parse(&buf[..75], &controller(true, false)),
        Err(PduError::Incomplete {
            needed: 76,
            available: 75
        })
    );
}
