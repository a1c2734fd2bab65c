//! Fuzz the Engine.IO websocket text decoder; whatever decodes must re-encode to the same packet.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::engineio::{Frame, Packet};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(packet) = Packet::decode_text(text) {
        let Frame::Text(encoded) = packet.encode() else {
            panic!("a decoded text packet encoded to a binary frame");
        };
        assert_eq!(encoded, text);
    }
});
