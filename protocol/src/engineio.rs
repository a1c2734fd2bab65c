//! Engine.IO v4 packets: one ASCII type digit followed by UTF-8 data, or a raw
//! binary message.
//!
//! On a websocket every packet is one frame ([`Packet::encode`] /
//! [`Packet::decode_text`] / [`Packet::from_binary`]). HTTP long-polling joins the
//! same frames into one body, see [`payload`]. The older revision 3, which Socket.IO
//! 1.x/2.x clients speak, carries the same packets in other framings: see [`v3`].

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub mod payload;
pub mod v3;

/// Engine.IO protocol revision this codec speaks (the `EIO` query parameter).
pub const PROTOCOL: &str = "4";

/// An Engine.IO protocol revision, as the `EIO` query parameter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// `EIO=3`: Socket.IO 1.x/2.x clients; the client pings, polling records are
    /// length-prefixed ([`v3`]).
    V3,
    /// `EIO=4`: current clients; the server pings, polling records are joined by `\x1e`.
    V4,
}

impl Revision {
    /// The revision an `EIO` query value names, if this crate speaks it (`"3"` or `"4"`
    /// exactly: no leading zeros, signs or spaces).
    pub fn from_query(value: &str) -> Option<Revision> {
        match value {
            v3::PROTOCOL => Some(Revision::V3),
            PROTOCOL => Some(Revision::V4),
            _ => None,
        }
    }
}

/// Record separator between packets of a polling payload (ASCII RS).
pub const SEPARATOR: u8 = 0x1e;

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0`: handshake JSON text, sent by the server once per session.
    Open(String),
    /// `1`: either side ends the session.
    Close,
    /// `2`: heartbeat; the data is `"probe"` during an upgrade and empty otherwise.
    Ping(String),
    /// `3`: heartbeat answer, echoing the ping's data.
    Pong(String),
    /// `4`: a text message (a Socket.IO packet, for Socket.IO).
    Message(String),
    /// A binary message: a raw websocket binary frame, or a `b<base64>` polling record.
    Binary(Bytes),
    /// `5`: the client switches from polling to the websocket.
    Upgrade,
    /// `6`: no-op, used to release a pending poll during an upgrade.
    Noop,
}

/// One websocket frame's worth of an encoded packet (also the unit a polling payload joins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame: type digit and data.
    Text(String),
    /// A binary frame: the raw bytes of a binary message.
    Binary(Bytes),
}

/// Why an Engine.IO packet or polling payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet (or a polling record) has no type character.
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type `0`–`6` (nor `b` in a polling record).
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// A close, upgrade or noop packet carries data.
    #[error("unexpected data {0:?} after a packet type that takes none")]
    UnexpectedData(char),
    /// A `b` polling record is not standard base64.
    #[error("invalid base64 in a binary record")]
    InvalidBase64,
    /// The polling payload is not UTF-8 text.
    #[error("polling payload is not valid UTF-8")]
    InvalidUtf8,
    /// The polling payload holds more records than the caller allows.
    #[error("too many records in a polling payload")]
    TooManyRecords,
    /// An Engine.IO v3 binary message does not start with the message type byte (4).
    #[error("binary packet of type {0} (only messages may be binary)")]
    UnknownBinaryType(u8),
    /// An Engine.IO v3 polling record's length is missing, not decimal, too long, or does
    /// not match the data that follows it.
    #[error("invalid record length in a polling payload")]
    InvalidLength,
    /// An Engine.IO v3 binary polling record starts with neither 0 (text) nor 1 (binary).
    #[error("invalid record marker {0} in a binary polling payload")]
    InvalidMarker(u8),
}

impl Packet {
    /// Decode a websocket text frame (or one polling record that is not `b…`).
    pub fn decode_text(text: &str) -> Result<Packet, DecodeError> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or(DecodeError::Empty)?;
        let data = chars.as_str();
        match kind {
            '0' => Ok(Packet::Open(data.to_owned())),
            '1' => without_data(data, Packet::Close),
            '2' => Ok(Packet::Ping(data.to_owned())),
            '3' => Ok(Packet::Pong(data.to_owned())),
            '4' => Ok(Packet::Message(data.to_owned())),
            '5' => without_data(data, Packet::Upgrade),
            '6' => without_data(data, Packet::Noop),
            other => Err(DecodeError::UnknownType(other)),
        }
    }

    /// A websocket binary frame is a binary message.
    pub fn from_binary(data: Bytes) -> Packet {
        Packet::Binary(data)
    }

    /// Encode for a websocket (text `"<digit><data>"`, or Frame::Binary for Packet::Binary).
    pub fn encode(&self) -> Frame {
        let (digit, data) = match self {
            Packet::Open(data) => ('0', data.as_str()),
            Packet::Close => ('1', ""),
            Packet::Ping(data) => ('2', data.as_str()),
            Packet::Pong(data) => ('3', data.as_str()),
            Packet::Message(data) => ('4', data.as_str()),
            Packet::Binary(data) => return Frame::Binary(data.clone()),
            Packet::Upgrade => ('5', ""),
            Packet::Noop => ('6', ""),
        };
        let mut text = String::with_capacity(1 + data.len());
        text.push(digit);
        text.push_str(data);
        Frame::Text(text)
    }
}

/// Accept a packet type that carries no data only when nothing follows it.
fn without_data(data: &str, packet: Packet) -> Result<Packet, DecodeError> {
    match data.chars().next() {
        None => Ok(packet),
        Some(c) => Err(DecodeError::UnexpectedData(c)),
    }
}

/// Handshake sent in the open packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    /// Engine.IO session id (private to the connection, not the Socket.IO socket id).
    pub sid: String,
    /// Transports the client may upgrade to: `["websocket"]` on polling, `[]` on a websocket.
    pub upgrades: Vec<String>,
    /// Milliseconds between server pings.
    pub ping_interval: u64,
    /// Milliseconds the client has to answer a ping.
    pub ping_timeout: u64,
    /// Largest polling POST body the server accepts, in bytes.
    pub max_payload: u64,
}

impl Handshake {
    /// The open packet carrying this handshake as JSON.
    pub fn packet(&self) -> Packet {
        // A struct of strings and integers always serializes; the fallback is unreachable.
        Packet::Open(serde_json::to_string(self).unwrap_or_default())
    }
}

/// Standard Engine.IO error codes (HTTP mapping lives in the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// `transport` missing or unknown.
    UnknownTransport = 0,
    /// `sid` unknown or expired.
    UnknownSid = 1,
    /// A handshake (no `sid`) with a method other than GET.
    BadHandshakeMethod = 2,
    /// Malformed request, e.g. a transport mismatch or a bad Origin.
    BadRequest = 3,
    /// The request was refused by the server's admission check.
    Forbidden = 4,
    /// `EIO` missing, not a number, or a revision the server does not accept (`3` unless
    /// allowed).
    UnsupportedProtocolVersion = 5,
}

impl ErrorCode {
    /// The numeric code sent to the client.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The message Node's engine.io sends with this code.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::UnknownTransport => "Transport unknown",
            ErrorCode::UnknownSid => "Session ID unknown",
            ErrorCode::BadHandshakeMethod => "Bad handshake method",
            ErrorCode::BadRequest => "Bad request",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    /// `{"code":N,"message":"…"}`
    pub fn to_json(self) -> String {
        // The messages are fixed ASCII without quotes or backslashes: no escaping needed.
        format!(
            r#"{{"code":{},"message":"{}"}}"#,
            self.code(),
            self.message()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(packet: &Packet) -> String {
        match packet.encode() {
            Frame::Text(text) => text,
            Frame::Binary(_) => panic!("expected a text frame"),
        }
    }

    #[test]
    fn decodes_every_text_type() {
        let open = r#"{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        let cases = [
            (format!("0{open}"), Packet::Open(open.to_owned())),
            ("1".to_owned(), Packet::Close),
            ("2".to_owned(), Packet::Ping(String::new())),
            ("2probe".to_owned(), Packet::Ping("probe".to_owned())),
            ("3".to_owned(), Packet::Pong(String::new())),
            ("3probe".to_owned(), Packet::Pong("probe".to_owned())),
            ("4hello".to_owned(), Packet::Message("hello".to_owned())),
            ("4".to_owned(), Packet::Message(String::new())),
            ("4héllo ✓".to_owned(), Packet::Message("héllo ✓".to_owned())),
            ("5".to_owned(), Packet::Upgrade),
            ("6".to_owned(), Packet::Noop),
        ];
        for (wire, packet) in cases {
            assert_eq!(Packet::decode_text(&wire), Ok(packet.clone()), "{wire}");
            assert_eq!(text(&packet), wire);
        }
    }

    #[test]
    fn binary_frames_are_binary_messages() {
        let data = Bytes::from_static(&[1, 2, 3]);
        let packet = Packet::from_binary(data.clone());
        assert_eq!(packet, Packet::Binary(data.clone()));
        assert_eq!(packet.encode(), Frame::Binary(data));
    }

    #[test]
    fn rejects_malformed_text() {
        assert_eq!(Packet::decode_text(""), Err(DecodeError::Empty));
        assert_eq!(Packet::decode_text("7"), Err(DecodeError::UnknownType('7')));
        assert_eq!(Packet::decode_text("b"), Err(DecodeError::UnknownType('b')));
        assert_eq!(
            Packet::decode_text("é4"),
            Err(DecodeError::UnknownType('é'))
        );
        assert_eq!(
            Packet::decode_text("1x"),
            Err(DecodeError::UnexpectedData('x'))
        );
        assert_eq!(
            Packet::decode_text("5probe"),
            Err(DecodeError::UnexpectedData('p'))
        );
        assert_eq!(
            Packet::decode_text("6 "),
            Err(DecodeError::UnexpectedData(' '))
        );
    }

    #[test]
    fn handshake_packet_is_camel_case_json() {
        let handshake = Handshake {
            sid: "abc".to_owned(),
            upgrades: vec!["websocket".to_owned()],
            ping_interval: 25000,
            ping_timeout: 20000,
            max_payload: 1_000_000,
        };
        let packet = handshake.packet();
        assert_eq!(
            text(&packet),
            r#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        let Packet::Open(json) = packet else {
            panic!("expected an open packet")
        };
        assert_eq!(
            serde_json::from_str::<Handshake>(&json).ok(),
            Some(handshake)
        );
    }

    #[test]
    fn revisions_are_named_exactly() {
        assert_eq!(Revision::from_query("4"), Some(Revision::V4));
        assert_eq!(Revision::from_query("3"), Some(Revision::V3));
        for other in ["", "2", "5", "04", "+4", " 3", "3 ", "4.0", "three"] {
            assert_eq!(Revision::from_query(other), None, "{other:?}");
        }
    }

    #[test]
    fn error_codes_match_node() {
        assert_eq!(
            ErrorCode::UnknownTransport.to_json(),
            r#"{"code":0,"message":"Transport unknown"}"#
        );
        assert_eq!(
            ErrorCode::UnknownSid.to_json(),
            r#"{"code":1,"message":"Session ID unknown"}"#
        );
        assert_eq!(
            ErrorCode::BadHandshakeMethod.to_json(),
            r#"{"code":2,"message":"Bad handshake method"}"#
        );
        assert_eq!(
            ErrorCode::BadRequest.to_json(),
            r#"{"code":3,"message":"Bad request"}"#
        );
        assert_eq!(
            ErrorCode::Forbidden.to_json(),
            r#"{"code":4,"message":"Forbidden"}"#
        );
        assert_eq!(
            ErrorCode::UnsupportedProtocolVersion.to_json(),
            r#"{"code":5,"message":"Unsupported protocol version"}"#
        );
    }
}
