//! Engine.IO v3 polling payloads: length-prefixed records, in one of two framings.
//!
//! * **Text** (`text/plain; charset=UTF-8`): `<length>:<record>` repeated, where the length
//!   counts the record's UTF-16 code units, as JavaScript's `String.length` does (`19:42["m","é"]`
//!   is 19 code units and 20 bytes). A binary message is the record `b4<base64>`. This is what
//!   a client that cannot take binary (Node, `b64=1`) reads and writes.
//! * **Binary** (`application/octet-stream`, XHR2 browsers): per record, a marker byte (0 text,
//!   1 binary), the decimal digits of its length one byte each (`1 2` for 12), `0xFF`, then the
//!   record: UTF-8 text (length in bytes) or, for a binary message, the type byte 4 and the data.
//!   engine.io uses it for a GET only when the payload holds binary and the client did not ask
//!   for base64; a browser client POSTs it when it sends binary.
//!
//! Decoding is strict and bounded: lengths are at most [`MAX_LENGTH_DIGITS`] digits, checked
//! against the bytes actually present, the record count is capped by the caller, and no
//! allocation is sized by a claimed length. An empty text record (`0:`) is skipped, as
//! engine.io-parser 2 does, and an empty list encodes to `0:`.

use bytes::Bytes;

use super::{decode_binary, decode_text};
use crate::engineio::{DecodeError, Frame, Packet};

/// Most digits a record length may have (9 999 999 999 is far past any body a server reads).
pub const MAX_LENGTH_DIGITS: usize = 10;

/// Marks a text record in the binary framing.
const TEXT_MARKER: u8 = 0;
/// Marks a binary record in the binary framing.
const BINARY_MARKER: u8 = 1;
/// Ends a record's length in the binary framing.
const LENGTH_END: u8 = 0xFF;

/// An encoded polling body and its framing (which decides its `Content-Type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The text framing: `text/plain; charset=UTF-8`.
    Text(String),
    /// The binary framing: `application/octet-stream`.
    Binary(Vec<u8>),
}

impl Body {
    /// Whether this is the binary framing.
    pub fn is_binary(&self) -> bool {
        matches!(self, Body::Binary(_))
    }

    /// The body's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Body::Text(text) => text.into_bytes(),
            Body::Binary(bytes) => bytes,
        }
    }
}

/// Encode frames for a GET response: the binary framing when `binary_ok` and a frame is
/// binary (engine.io's rule), else the text framing.
pub fn encode(frames: &[Frame], binary_ok: bool) -> Body {
    if binary_ok && frames.iter().any(|f| matches!(f, Frame::Binary(_))) {
        Body::Binary(encode_binary(frames))
    } else {
        Body::Text(encode_text(frames))
    }
}

/// The text framing; binary frames become `b4<base64>` records.
pub fn encode_text(frames: &[Frame]) -> String {
    if frames.is_empty() {
        return "0:".to_owned();
    }
    let mut body = String::new();
    for frame in frames {
        match frame {
            Frame::Text(text) => {
                body.push_str(&text.encode_utf16().count().to_string());
                body.push(':');
                body.push_str(text);
            }
            Frame::Binary(data) => {
                let record = super::base64_message(data);
                // Base64 is ASCII: bytes and UTF-16 code units agree.
                body.push_str(&record.len().to_string());
                body.push(':');
                body.push_str(&record);
            }
        }
    }
    body
}

/// The binary framing.
pub fn encode_binary(frames: &[Frame]) -> Vec<u8> {
    let mut body = Vec::new();
    for frame in frames {
        let (marker, len) = match frame {
            Frame::Text(text) => (TEXT_MARKER, text.len()),
            Frame::Binary(data) => (BINARY_MARKER, 1 + data.len()),
        };
        body.push(marker);
        body.extend(len.to_string().bytes().map(|digit| digit - b'0'));
        body.push(LENGTH_END);
        match frame {
            Frame::Text(text) => body.extend_from_slice(text.as_bytes()),
            Frame::Binary(data) => {
                body.push(super::MESSAGE_TYPE);
                body.extend_from_slice(data);
            }
        }
    }
    body
}

/// Decode a POST body in the framing its `Content-Type` names (`binary`: octet-stream).
pub fn decode(body: &[u8], binary: bool, max_records: usize) -> Result<Vec<Packet>, DecodeError> {
    if binary {
        decode_binary_body(body, max_records)
    } else {
        decode_text_body(body, max_records)
    }
}

/// Decode the text framing. `max_records` bounds the records, empty ones included.
pub fn decode_text_body(body: &[u8], max_records: usize) -> Result<Vec<Packet>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)?;
    if text.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut packets = Vec::new();
    let mut records = 0;
    let mut rest = text;
    while !rest.is_empty() {
        records += 1;
        if records > max_records {
            return Err(DecodeError::TooManyRecords);
        }
        let colon = rest
            .bytes()
            .take(MAX_LENGTH_DIGITS + 1)
            .position(|b| b == b':')
            .ok_or(DecodeError::InvalidLength)?;
        let units = parse_length(rest[..colon].bytes().map(|b| b.wrapping_sub(b'0')))?;
        rest = &rest[colon + 1..];
        let end = utf16_prefix(rest, units)?;
        let (record, after) = rest.split_at(end);
        rest = after;
        // engine.io-parser 2 skips empty records (an empty list encodes to `0:`).
        if !record.is_empty() {
            packets.push(decode_text(record)?);
        }
    }
    Ok(packets)
}

/// Decode the binary framing. `max_records` bounds the records.
pub fn decode_binary_body(body: &[u8], max_records: usize) -> Result<Vec<Packet>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut packets = Vec::new();
    let mut rest = body;
    while let Some((&marker, after)) = rest.split_first() {
        if packets.len() == max_records {
            return Err(DecodeError::TooManyRecords);
        }
        if marker != TEXT_MARKER && marker != BINARY_MARKER {
            return Err(DecodeError::InvalidMarker(marker));
        }
        let end = after
            .iter()
            .take(MAX_LENGTH_DIGITS + 1)
            .position(|&b| b == LENGTH_END)
            .ok_or(DecodeError::InvalidLength)?;
        let len = parse_length(after[..end].iter().copied())?;
        let after = &after[end + 1..];
        if len > after.len() {
            return Err(DecodeError::InvalidLength);
        }
        let (record, after) = after.split_at(len);
        rest = after;
        packets.push(if marker == TEXT_MARKER {
            let text = std::str::from_utf8(record).map_err(|_| DecodeError::InvalidUtf8)?;
            decode_text(text)?
        } else {
            decode_binary(Bytes::copy_from_slice(record))?
        });
    }
    Ok(packets)
}

/// A record length from its decimal digit values (each 0–9), 1 to [`MAX_LENGTH_DIGITS`] of them.
fn parse_length(digits: impl Iterator<Item = u8>) -> Result<usize, DecodeError> {
    let mut len: usize = 0;
    let mut count = 0;
    for digit in digits {
        count += 1;
        if digit > 9 || count > MAX_LENGTH_DIGITS {
            return Err(DecodeError::InvalidLength);
        }
        len = len
            .checked_mul(10)
            .and_then(|len| len.checked_add(usize::from(digit)))
            .ok_or(DecodeError::InvalidLength)?;
    }
    if count == 0 {
        return Err(DecodeError::InvalidLength);
    }
    Ok(len)
}

/// The byte length of the first `units` UTF-16 code units of `text`; an error when `text` is
/// shorter or the count would split a surrogate pair.
fn utf16_prefix(text: &str, units: usize) -> Result<usize, DecodeError> {
    let mut counted = 0;
    for (at, c) in text.char_indices() {
        if counted >= units {
            return if counted == units {
                Ok(at)
            } else {
                Err(DecodeError::InvalidLength)
            };
        }
        counted += c.len_utf16();
    }
    if counted == units {
        Ok(text.len())
    } else {
        Err(DecodeError::InvalidLength)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 16;

    fn text(s: &str) -> Frame {
        Frame::Text(s.to_owned())
    }

    #[test]
    fn text_lengths_count_utf16_code_units() {
        // Checked against engine.io-parser 2.2.1 (`encodePayload` without binary support).
        let frames = [text(r#"42["message",1,"é"]"#), text("4😀"), text("2")];
        let body = encode_text(&frames);
        assert_eq!(body, "19:42[\"message\",1,\"é\"]3:4😀1:2");
        assert_eq!(
            decode_text_body(body.as_bytes(), LIMIT),
            Ok(vec![
                Packet::Message(r#"2["message",1,"é"]"#.into()),
                Packet::Message("😀".into()),
                Packet::Ping(String::new()),
            ])
        );
    }

    #[test]
    fn the_handshake_and_connect_travel_as_node_sends_them() {
        let open =
            r#"0{"sid":"x","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000}"#;
        let body = encode_text(&[text(open), text("40")]);
        assert_eq!(body, format!("{}:{open}2:40", open.len()));
    }

    #[test]
    fn binary_messages_are_base64_records_in_the_text_framing() {
        let frames = [
            text(r#"451-["m",{"_placeholder":true,"num":0}]"#),
            Frame::Binary(Bytes::from_static(&[1, 2, 3])),
        ];
        let body = encode(&frames, false);
        assert_eq!(
            body,
            Body::Text(r#"39:451-["m",{"_placeholder":true,"num":0}]6:b4AQID"#.into())
        );
        assert_eq!(
            decode(body.into_bytes().as_slice(), false, LIMIT),
            Ok(vec![
                Packet::Message(r#"51-["m",{"_placeholder":true,"num":0}]"#.into()),
                Packet::Binary(Bytes::from_static(&[1, 2, 3])),
            ])
        );
    }

    #[test]
    fn the_binary_framing_matches_engine_io_parser() {
        // The example in the Engine.IO v3 spec: "hello" as text, then binary 1 2 3 4.
        let frames = [
            text("4hello"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
        ];
        let body = encode(&frames, true);
        assert!(body.is_binary());
        let bytes = body.into_bytes();
        assert_eq!(
            bytes,
            [&[0, 6, 0xFF][..], b"4hello", &[1, 5, 0xFF, 4, 1, 2, 3, 4]].concat()
        );
        assert_eq!(
            decode(&bytes, true, LIMIT),
            Ok(vec![
                Packet::Message("hello".into()),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            ])
        );
        // Text lengths count bytes in this framing; more digits, more bytes.
        let long = format!("4{}", "é".repeat(10));
        let bytes = encode_binary(&[text(&long)]);
        assert_eq!(&bytes[..4], &[0, 2, 1, 0xFF]);
        assert_eq!(
            decode_binary_body(&bytes, LIMIT),
            Ok(vec![Packet::Message("é".repeat(10))])
        );
    }

    #[test]
    fn without_binary_frames_or_permission_the_text_framing_is_used() {
        assert_eq!(encode(&[text("6")], true), Body::Text("1:6".into()));
        assert_eq!(encode(&[], true), Body::Text("0:".into()));
        assert_eq!(decode_text_body(b"0:", LIMIT), Ok(vec![]));
        assert_eq!(decode_text_body(b"0:1:60:", LIMIT), Ok(vec![Packet::Noop]));
    }

    #[test]
    fn malformed_text_bodies_are_refused() {
        let cases: [(&[u8], DecodeError); 14] = [
            (b"", DecodeError::Empty),
            (b"1:", DecodeError::InvalidLength),
            (b"2:6", DecodeError::InvalidLength),
            (b":6", DecodeError::InvalidLength),
            (b"1", DecodeError::InvalidLength),
            (b"x:6", DecodeError::InvalidLength),
            (b" 1:6", DecodeError::InvalidLength),
            (b"-1:6", DecodeError::InvalidLength),
            (b"12345678901:6", DecodeError::InvalidLength),
            (b"1:61:", DecodeError::InvalidLength),
            // One code unit of a surrogate pair.
            ("2:4😀".as_bytes(), DecodeError::InvalidLength),
            (b"1:9", DecodeError::UnknownType('9')),
            (b"2:b2", DecodeError::UnknownType('2')),
            (b"1:\xff", DecodeError::InvalidUtf8),
        ];
        for (body, err) in cases {
            assert_eq!(
                decode_text_body(body, LIMIT),
                Err(err),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn malformed_binary_bodies_are_refused() {
        let cases: [(&[u8], DecodeError); 10] = [
            (b"", DecodeError::Empty),
            (&[2, 1, 0xFF, b'6'], DecodeError::InvalidMarker(2)),
            (&[0, 0xFF, b'6'], DecodeError::InvalidLength),
            (&[0, 1, b'6'], DecodeError::InvalidLength),
            (&[0, 10, 0xFF, b'6'], DecodeError::InvalidLength),
            (&[0, 2, 0xFF, b'6'], DecodeError::InvalidLength),
            (&[0, 0, 0xFF], DecodeError::Empty),
            (&[1, 0, 0xFF], DecodeError::Empty),
            (&[1, 2, 0xFF, 2, 1], DecodeError::UnknownBinaryType(2)),
            (&[0, 1, 0xFF, 0xC3], DecodeError::InvalidUtf8),
        ];
        for (body, err) in cases {
            assert_eq!(decode_binary_body(body, LIMIT), Err(err), "{body:?}");
        }
        let eleven_digits = [&[0u8][..], &[1; 11], &[0xFF]].concat();
        assert_eq!(
            decode_binary_body(&eleven_digits, LIMIT),
            Err(DecodeError::InvalidLength)
        );
    }

    #[test]
    fn bounds_the_record_count() {
        assert_eq!(decode_text_body(b"1:61:61:6", 3).map(|p| p.len()), Ok(3));
        assert_eq!(
            decode_text_body(b"1:61:61:61:6", 3),
            Err(DecodeError::TooManyRecords)
        );
        // Empty records count too: they are still work.
        assert_eq!(
            decode_text_body(b"0:0:0:0:", 3),
            Err(DecodeError::TooManyRecords)
        );
        let four = encode_binary(&[text("6"), text("6"), text("6"), text("6")]);
        assert_eq!(decode_binary_body(&four, 4).map(|p| p.len()), Ok(4));
        assert_eq!(
            decode_binary_body(&four, 3),
            Err(DecodeError::TooManyRecords)
        );
    }

    #[test]
    fn a_claimed_length_past_the_body_allocates_nothing() {
        assert_eq!(
            decode_text_body(b"9999999999:4x", LIMIT),
            Err(DecodeError::InvalidLength)
        );
        let claim = [&[1u8][..], &[9; 10], &[0xFF, 4]].concat();
        assert_eq!(
            decode_binary_body(&claim, LIMIT),
            Err(DecodeError::InvalidLength)
        );
    }
}
