//! Arbitrary bytes through the replication packet codec: a 16-byte header, then its payload
//! (only the fixed body for `Data`/`RsData`, whose block data the receiver reads itself).
//! Beyond "no panic", an accepted packet must re-encode to exactly the bytes it came from,
//! and `Packet::parse` must also survive headers that `Header::parse` never produced.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxstor_repl::wire::{Cmd, Header, Packet, HEADER_LEN, MAX_PAYLOAD};

fuzz_target!(|bytes: &[u8]| {
    let Some((head, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return;
    };
    if let Ok(hdr) = Header::parse(head) {
        let body_len = hdr.cmd.body_len();
        assert!(hdr.len <= MAX_PAYLOAD && hdr.len as usize >= body_len);
        let payload = if hdr.cmd.carries_data() {
            &rest[..rest.len().min(body_len)]
        } else {
            rest
        };
        if let Ok(packet) = Packet::parse(&hdr, payload) {
            assert_eq!(packet.cmd(), hdr.cmd);
            let data_len = if hdr.cmd.carries_data() {
                hdr.len - body_len as u32
            } else {
                0
            };
            let again = packet.encode(hdr.volume, data_len);
            assert_eq!(&again[..HEADER_LEN], &head[..]);
            assert_eq!(&again[HEADER_LEN..], payload);
        }
    }
    // An unchecked header (any known command, len taken from the input as is).
    if let Some(cmd) = Cmd::from_u16(u16::from_be_bytes([head[6], head[7]])) {
        let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        let _ = Packet::parse(&Header { volume: 0, cmd, len }, rest);
    }
});
