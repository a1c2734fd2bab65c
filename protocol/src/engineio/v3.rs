//! Engine.IO v3 (`EIO=3`), the revision Socket.IO 1.x/2.x clients speak (engine.io-parser 2).
//!
//! The packets are v4's [`Packet`]s; what differs is how they travel:
//!
//! * **websocket**: text frames are as in v4. A binary message is a binary frame whose first
//!   byte is the packet type (`0x04`, message) followed by the data; a client that cannot take
//!   binary (`b64=1` on its request) gets, and may send, a text frame `b4<base64>` instead
//!   ([`decode_text`], [`decode_binary`], [`binary_frame`]).
//! * **polling**: records are length-prefixed instead of separated, in a text or a binary
//!   framing ([`payload`]).
//! * **handshake**: no `maxPayload` ([`Handshake`]).
//! * **heartbeat**: the client pings and the server answers; that rule lives in the session.

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::payload::BASE64;
use super::{DecodeError, Frame, Packet};

pub mod payload;

/// The `EIO` query value of this revision.
pub const PROTOCOL: &str = "3";

/// Type byte that starts a binary message (the only packet type that may be binary).
const MESSAGE_TYPE: u8 = 4;

/// Prefix of a base64-encoded binary message in a text frame or text polling record.
const BASE64_MESSAGE: &str = "b4";

/// Decode a websocket text frame (or a text polling record): a v4 text packet, or `b4<base64>`.
pub fn decode_text(text: &str) -> Result<Packet, DecodeError> {
    let Some(rest) = text.strip_prefix('b') else {
        return Packet::decode_text(text);
    };
    let mut chars = rest.chars();
    match chars.next() {
        None => Err(DecodeError::Empty),
        Some('4') => BASE64
            .decode(chars.as_str())
            .map(|data| Packet::Binary(Bytes::from(data)))
            .map_err(|_| DecodeError::InvalidBase64),
        // A binary ping, pong or open means nothing: only messages carry binary.
        Some(other) => Err(DecodeError::UnknownType(other)),
    }
}

/// Decode a websocket binary frame (or a binary polling record): type byte `4`, then the data.
pub fn decode_binary(data: Bytes) -> Result<Packet, DecodeError> {
    match data.first() {
        None => Err(DecodeError::Empty),
        Some(&MESSAGE_TYPE) => Ok(Packet::Binary(data.slice(1..))),
        Some(&other) => Err(DecodeError::UnknownBinaryType(other)),
    }
}

/// The v3 form of a binary message: a binary frame with the type byte in front, or, for a
/// client that asked for base64, the text frame `b4<base64>`.
pub fn binary_frame(data: &[u8], base64: bool) -> Frame {
    if base64 {
        Frame::Text(base64_message(data))
    } else {
        let mut bytes = Vec::with_capacity(1 + data.len());
        bytes.push(MESSAGE_TYPE);
        bytes.extend_from_slice(data);
        Frame::Binary(Bytes::from(bytes))
    }
}

/// `b4<base64>`: a binary message as text.
fn base64_message(data: &[u8]) -> String {
    let mut text = String::with_capacity(
        BASE64_MESSAGE.len() + base64::encoded_len(data.len(), true).unwrap_or(0),
    );
    text.push_str(BASE64_MESSAGE);
    BASE64.encode_string(data, &mut text);
    text
}

/// Encode a packet for a v3 websocket (text frames as in v4; binary as [`binary_frame`]).
pub fn encode(packet: &Packet, base64: bool) -> Frame {
    match packet {
        Packet::Binary(data) => binary_frame(data, base64),
        other => other.encode(),
    }
}

/// Handshake sent in the open packet of a v3 session: v4's without `maxPayload`, which
/// engine.io 3 never sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    /// Engine.IO session id.
    pub sid: String,
    /// Transports the client may upgrade to: `["websocket"]` on polling, `[]` on a websocket.
    pub upgrades: Vec<String>,
    /// Milliseconds between the client's pings.
    pub ping_interval: u64,
    /// Milliseconds the client waits for the server's pong.
    pub ping_timeout: u64,
}

impl Handshake {
    /// The open packet carrying this handshake as JSON.
    pub fn packet(&self) -> Packet {
        // A struct of strings and integers always serializes; the fallback is unreachable.
        Packet::Open(serde_json::to_string(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames_are_v4_packets_or_base64_messages() {
        assert_eq!(decode_text("2"), Ok(Packet::Ping(String::new())));
        assert_eq!(decode_text("2probe"), Ok(Packet::Ping("probe".into())));
        assert_eq!(
            decode_text("42[\"a\"]"),
            Ok(Packet::Message("2[\"a\"]".into()))
        );
        assert_eq!(
            decode_text("b4AQID"),
            Ok(Packet::Binary(Bytes::from_static(&[1, 2, 3])))
        );
        assert_eq!(decode_text("b4"), Ok(Packet::Binary(Bytes::new())));
    }

    #[test]
    fn malformed_text_frames_are_refused() {
        assert_eq!(decode_text(""), Err(DecodeError::Empty));
        assert_eq!(decode_text("b"), Err(DecodeError::Empty));
        assert_eq!(decode_text("b2AQID"), Err(DecodeError::UnknownType('2')));
        assert_eq!(decode_text("bé"), Err(DecodeError::UnknownType('é')));
        assert_eq!(decode_text("b4!!"), Err(DecodeError::InvalidBase64));
        assert_eq!(decode_text("7"), Err(DecodeError::UnknownType('7')));
    }

    #[test]
    fn binary_frames_carry_the_type_byte() {
        assert_eq!(
            decode_binary(Bytes::from_static(&[4, 1, 2])),
            Ok(Packet::Binary(Bytes::from_static(&[1, 2])))
        );
        assert_eq!(
            decode_binary(Bytes::from_static(&[4])),
            Ok(Packet::Binary(Bytes::new()))
        );
        assert_eq!(decode_binary(Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(
            decode_binary(Bytes::from_static(&[2, 1])),
            Err(DecodeError::UnknownBinaryType(2))
        );
        assert_eq!(
            decode_binary(Bytes::from_static(b"4x")),
            Err(DecodeError::UnknownBinaryType(b'4'))
        );
    }

    #[test]
    fn binary_messages_encode_as_type_byte_or_base64() {
        let packet = Packet::Binary(Bytes::from_static(&[1, 2, 3]));
        assert_eq!(
            encode(&packet, false),
            Frame::Binary(Bytes::from_static(&[4, 1, 2, 3]))
        );
        assert_eq!(encode(&packet, true), Frame::Text("b4AQID".into()));
        assert_eq!(encode(&Packet::Noop, false), Frame::Text("6".into()));
        for base64 in [false, true] {
            let back = match encode(&packet, base64) {
                Frame::Text(text) => decode_text(&text),
                Frame::Binary(data) => decode_binary(data),
            };
            assert_eq!(back, Ok(packet.clone()));
        }
    }

    #[test]
    fn the_handshake_has_no_max_payload() {
        let handshake = Handshake {
            sid: "abc".into(),
            upgrades: vec!["websocket".into()],
            ping_interval: 25000,
            ping_timeout: 20000,
        };
        assert_eq!(
            handshake.packet(),
            Packet::Open(
                r#"{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000}"#
                    .into()
            )
        );
    }
}
