//! Polling payloads: records joined by 0x1e; binary records are `b` + standard base64 (with padding).
//!
//! A GET response and a POST body are both one payload. Text records are encoded
//! packets as on a websocket; the data of a text packet must not itself contain the
//! separator, which Engine.IO leaves to the sender.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;

use super::{DecodeError, Frame, Packet, SEPARATOR};

/// Standard alphabet; padding written on encode, optional on decode (clients differ).
pub(super) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Marks a binary record in a polling payload.
const BINARY_PREFIX: char = 'b';

/// Decode a POST body. `max_records` bounds the number of records (error TooManyRecords).
pub fn decode(body: &[u8], max_records: usize) -> Result<Vec<Packet>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)?;
    // Count first so an oversized body is refused before any base64 work.
    let records = text.bytes().filter(|&b| b == SEPARATOR).count() + 1;
    if records > max_records {
        return Err(DecodeError::TooManyRecords);
    }
    let mut packets = Vec::with_capacity(records);
    for record in text.split(char::from(SEPARATOR)) {
        packets.push(decode_record(record)?);
    }
    Ok(packets)
}

/// Encode frames for a GET response body (Frame::Text as is, Frame::Binary as `b<base64>`).
pub fn encode(frames: &[Frame]) -> Vec<u8> {
    let len: usize = frames
        .iter()
        .map(|frame| match frame {
            Frame::Text(text) => text.len(),
            Frame::Binary(data) => 1 + base64::encoded_len(data.len(), true).unwrap_or(0),
        })
        .sum::<usize>()
        + frames.len().saturating_sub(1);
    // Every record is text (base64 is ASCII), so build a String and hand out its bytes.
    let mut body = String::with_capacity(len);
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            body.push(char::from(SEPARATOR));
        }
        match frame {
            Frame::Text(text) => body.push_str(text),
            Frame::Binary(data) => {
                body.push(BINARY_PREFIX);
                BASE64.encode_string(data, &mut body);
            }
        }
    }
    body.into_bytes()
}

/// Decode one record: `b<base64>` or a text packet.
fn decode_record(record: &str) -> Result<Packet, DecodeError> {
    match record.strip_prefix(BINARY_PREFIX) {
        Some(base64) => BASE64
            .decode(base64)
            .map(|data| Packet::Binary(Bytes::from(data)))
            .map_err(|_| DecodeError::InvalidBase64),
        None => Packet::decode_text(record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 16;

    #[test]
    fn decodes_text_and_binary_records() {
        let body = b"4hello\x1e4world\x1ebAQID";
        assert_eq!(
            decode(body, LIMIT),
            Ok(vec![
                Packet::Message("hello".to_owned()),
                Packet::Message("world".to_owned()),
                Packet::Binary(Bytes::from_static(&[1, 2, 3])),
            ])
        );
    }

    #[test]
    fn encodes_text_and_binary_frames() {
        let frames = [
            Frame::Text("4hello".to_owned()),
            Frame::Text("4world".to_owned()),
            Frame::Binary(Bytes::from_static(&[1, 2, 3])),
        ];
        assert_eq!(encode(&frames), b"4hello\x1e4world\x1ebAQID".to_vec());
    }

    #[test]
    fn binary_encoding_pads_and_decoding_accepts_both() {
        let frames = [Frame::Binary(Bytes::from_static(&[1, 2]))];
        assert_eq!(encode(&frames), b"bAQI=".to_vec());
        let expected = Ok(vec![Packet::Binary(Bytes::from_static(&[1, 2]))]);
        assert_eq!(decode(b"bAQI=", LIMIT), expected);
        assert_eq!(decode(b"bAQI", LIMIT), expected);
        assert_eq!(decode(b"b", LIMIT), Ok(vec![Packet::Binary(Bytes::new())]));
    }

    #[test]
    fn socketio_binary_event_over_polling() {
        let body = b"451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID";
        assert_eq!(
            decode(body, LIMIT),
            Ok(vec![
                Packet::Message(r#"51-["message-back",{"_placeholder":true,"num":0}]"#.to_owned()),
                Packet::Binary(Bytes::from_static(&[1, 2, 3])),
            ])
        );
    }

    #[test]
    fn single_and_control_records() {
        assert_eq!(decode(b"1", LIMIT), Ok(vec![Packet::Close]));
        assert_eq!(decode(b"6", LIMIT), Ok(vec![Packet::Noop]));
        assert_eq!(encode(&[Frame::Text("6".to_owned())]), b"6".to_vec());
        assert_eq!(encode(&[]), Vec::<u8>::new());
    }

    #[test]
    fn rejects_malformed_payloads() {
        assert_eq!(decode(b"", LIMIT), Err(DecodeError::Empty));
        assert_eq!(decode(b"4a\x1e\x1e4b", LIMIT), Err(DecodeError::Empty));
        assert_eq!(decode(b"4a\x1e", LIMIT), Err(DecodeError::Empty));
        assert_eq!(
            decode(b"4a\x1e9", LIMIT),
            Err(DecodeError::UnknownType('9'))
        );
        assert_eq!(decode(b"5x", LIMIT), Err(DecodeError::UnexpectedData('x')));
        assert_eq!(decode(b"4\xff\xfe", LIMIT), Err(DecodeError::InvalidUtf8));
        assert_eq!(decode(b"b\xc3", LIMIT), Err(DecodeError::InvalidUtf8));
        assert_eq!(decode(b"b!!!!", LIMIT), Err(DecodeError::InvalidBase64));
        assert_eq!(decode(b"bAQ-_", LIMIT), Err(DecodeError::InvalidBase64));
        assert_eq!(decode(b"bA", LIMIT), Err(DecodeError::InvalidBase64));
        assert_eq!(decode(b"bAQID\n", LIMIT), Err(DecodeError::InvalidBase64));
    }

    #[test]
    fn bounds_the_record_count() {
        assert_eq!(decode(b"6\x1e6\x1e6", 3).map(|p| p.len()), Ok(3));
        assert_eq!(
            decode(b"6\x1e6\x1e6\x1e6", 3),
            Err(DecodeError::TooManyRecords)
        );
        assert_eq!(decode(b"6", 0), Err(DecodeError::TooManyRecords));
    }
}
