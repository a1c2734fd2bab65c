//! Fuzz the polling payload decoder; whatever decodes must re-encode to a body that decodes the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::engineio::{Frame, Packet, payload};

/// Record limit for the fuzzer, like a server's.
const MAX_RECORDS: usize = 256;

fuzz_target!(|data: &[u8]| {
    if let Ok(packets) = payload::decode(data, MAX_RECORDS) {
        let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
        assert_eq!(
            payload::decode(&payload::encode(&frames), MAX_RECORDS),
            Ok(packets)
        );
    }
});
