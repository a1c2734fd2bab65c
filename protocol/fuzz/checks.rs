//! Entry logic of the fuzz targets, shared with `protocol/tests/fuzz_regressions.rs`.
//!
//! Each function takes one raw fuzz input and panics when an invariant breaks; the fuzz
//! targets (`fuzz_targets/*.rs`) and the stable regression test both include this file with
//! `#[path = …] mod checks;`, so a corpus or crash file is judged the same way in both. It
//! lives outside the protocol crate, which does no I/O and has no test-only code.

use switchboard_protocol::Bytes;
use switchboard_protocol::cluster::ClusterFrame;
use switchboard_protocol::engineio::{self, Frame, payload, v3};
use switchboard_protocol::socketio::{self, Assembly, Decoded, Limits};

/// Record limit for polling payloads, like a server's.
pub const MAX_RECORDS: usize = 256;

/// A target's check: panics when the input breaks an invariant.
pub type Check = fn(&[u8]);

/// Every target, by the name of its `fuzz_targets/<name>.rs` file and corpus directory.
pub const TARGETS: [(&str, Check); 5] = [
    ("engineio_packet", engineio_packet),
    ("engineio_payload", engineio_payload),
    ("engineio_v3_payload", engineio_v3_payload),
    ("socketio_packet", socketio_packet),
    ("cluster_frame", cluster_frame),
];

/// Engine.IO websocket text frame: whatever decodes re-encodes to the same text.
pub fn engineio_packet(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(packet) = engineio::Packet::decode_text(text) {
        let Frame::Text(encoded) = packet.encode() else {
            panic!("a decoded text packet encoded to a binary frame");
        };
        assert_eq!(encoded, text);
    }
}

/// Polling payload: whatever decodes re-encodes to a body that decodes the same.
pub fn engineio_payload(data: &[u8]) {
    if let Ok(packets) = payload::decode(data, MAX_RECORDS) {
        assert!(!packets.is_empty() && packets.len() <= MAX_RECORDS);
        let frames: Vec<Frame> = packets.iter().map(engineio::Packet::encode).collect();
        assert_eq!(
            payload::decode(&payload::encode(&frames), MAX_RECORDS),
            Ok(packets)
        );
    }
}

/// Engine.IO v3 polling payload, read in both framings (text, then binary).
///
/// Whatever decodes re-encodes, in either framing, to a body that decodes the same; and every
/// decoded packet survives the v3 websocket encoding, binary or base64.
pub fn engineio_v3_payload(data: &[u8]) {
    for binary in [false, true] {
        let Ok(packets) = v3::payload::decode(data, binary, MAX_RECORDS) else {
            continue;
        };
        assert!(packets.len() <= MAX_RECORDS);
        let frames: Vec<Frame> = packets.iter().map(engineio::Packet::encode).collect();
        let text = v3::payload::encode_text(&frames);
        assert_eq!(
            v3::payload::decode(text.as_bytes(), false, MAX_RECORDS),
            Ok(packets.clone())
        );
        if !packets.is_empty() {
            let bytes = v3::payload::encode_binary(&frames);
            assert_eq!(
                v3::payload::decode(&bytes, true, MAX_RECORDS),
                Ok(packets.clone())
            );
        }
        for packet in &packets {
            for base64 in [false, true] {
                let again = match v3::encode(packet, base64) {
                    Frame::Text(text) => v3::decode_text(&text),
                    Frame::Binary(data) => v3::decode_binary(data),
                };
                assert_eq!(again.as_ref(), Ok(packet));
            }
        }
    }
}

/// Socket.IO packet and attachment reassembly.
///
/// Input: a text packet, then optionally `\0` and attachment bytes, split at further `\0`s.
/// Whatever completes must re-encode to a packet that decodes the same, both as text plus
/// attachments and as the Engine.IO frames a websocket would carry.
pub fn socketio_packet(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    let Some(Ok(text)) = parts.next().map(std::str::from_utf8) else {
        return;
    };
    let limits = Limits::default();
    let packet = match socketio::Packet::decode(text, &limits) {
        Err(_) => return,
        Ok(Decoded::Complete(packet)) => packet,
        Ok(Decoded::Partial(mut pending)) => loop {
            // Too few attachments in the input simply leaves the packet pending.
            let Some(part) = parts.next() else { return };
            match pending.push(Bytes::copy_from_slice(part)) {
                Ok(Assembly::Pending(next)) => pending = next,
                Ok(Assembly::Complete(packet)) => break packet,
                Err(_) => return,
            }
        },
    };

    let (encoded, attachments) = packet.encode();
    assert_eq!(reassemble(&encoded, &attachments, &limits), packet);

    // The websocket form: "4" + the same text, then one binary frame per attachment.
    let frames = packet.to_frames();
    assert_eq!(frames.len(), 1 + attachments.len());
    assert_eq!(frames[0], Frame::Text(format!("4{encoded}")));
    for (frame, attachment) in frames[1..].iter().zip(&attachments) {
        assert_eq!(frame, &Frame::Binary(attachment.clone()));
    }
}

/// Decode a re-encoded packet and feed it exactly its attachments; panic on any refusal.
fn reassemble(text: &str, attachments: &[Bytes], limits: &Limits) -> socketio::Packet {
    let mut pending = match socketio::Packet::decode(text, limits) {
        Ok(Decoded::Complete(again)) => {
            assert!(attachments.is_empty(), "attachments left over ({text})");
            return again;
        }
        Ok(Decoded::Partial(pending)) => pending,
        Err(err) => panic!("re-encoded packet does not decode: {err} ({text})"),
    };
    assert_eq!(pending.expected(), attachments.len(), "({text})");
    for (i, attachment) in attachments.iter().enumerate() {
        match pending.push(attachment.clone()) {
            Ok(Assembly::Pending(next)) => pending = next,
            Ok(Assembly::Complete(again)) => {
                assert_eq!(i + 1, attachments.len(), "completed early ({text})");
                return again;
            }
            Err(err) => panic!("re-encoded attachment refused: {err} ({text})"),
        }
    }
    panic!("re-encoded packet never completed ({text})")
}

/// Cluster frame: whatever decodes re-encodes to the same bytes (and decodes again the same).
pub fn cluster_frame(data: &[u8]) {
    if let Ok(frame) = ClusterFrame::decode(data) {
        let encoded = frame.encode();
        assert_eq!(encoded, data);
        assert_eq!(ClusterFrame::decode(&encoded), Ok(frame));
    }
}
