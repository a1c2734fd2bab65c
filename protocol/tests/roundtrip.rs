//! Property tests: every packet survives encode → decode, and no input makes a decoder panic.

use proptest::prelude::*;
use serde_json::{Map, Value};
use switchboard_protocol::Bytes;
use switchboard_protocol::engineio::{self, Frame, payload, v3};
use switchboard_protocol::socketio::{
    self, Assembly, Decoded, Limits, PacketData, RESERVED_EVENTS,
};

// ---------------------------------------------------------------- generators

fn bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

/// Any text without the polling separator (Engine.IO leaves that to the sender).
fn record_text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.replace('\u{1e}', ""))
}

fn eio_packet(text: BoxedStrategy<String>) -> impl Strategy<Value = engineio::Packet> {
    use engineio::Packet;
    prop_oneof![
        text.clone().prop_map(Packet::Open),
        Just(Packet::Close),
        text.clone().prop_map(Packet::Ping),
        text.clone().prop_map(Packet::Pong),
        text.prop_map(Packet::Message),
        bytes().prop_map(Packet::Binary),
        Just(Packet::Upgrade),
        Just(Packet::Noop),
    ]
}

/// Any finite float (JSON has no NaN or infinity); `float_roundtrip` parses them back exactly.
fn finite_float() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite", |f| f.is_finite())
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_float().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            // Keys without `_` so no generated object looks like a placeholder.
            proptest::collection::vec(("[a-z0-9 é]{0,8}", inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    proptest::collection::vec(("[a-zA-Z]{0,8}", json_value()), 0..5)
        .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>()))
}

fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![Just("/".to_owned()), "/[a-zA-Z0-9_/.é-]{0,24}",]
}

fn event_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>()
            .prop_filter("reserved", |name| !RESERVED_EVENTS.contains(&name.as_str()))
            .prop_map(Value::String),
        any::<u32>().prop_map(Value::from),
        finite_float().prop_map(Value::from),
    ]
}

/// Args with a placeholder for every attachment, at random positions.
fn args_with_attachments() -> impl Strategy<Value = (Vec<Value>, Vec<Bytes>)> {
    (
        proptest::collection::vec(json_value(), 0..4),
        proptest::collection::vec(bytes(), 0..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut args, attachments, at)| {
            for num in 0..attachments.len() {
                let placeholder = serde_json::json!({ "_placeholder": true, "num": num });
                let index = at.index(args.len() + 1);
                if num % 2 == 1 {
                    // Nest some placeholders to exercise the walk.
                    args.insert(index, serde_json::json!({ "file": [placeholder] }));
                } else {
                    args.insert(index, placeholder);
                }
            }
            (args, attachments)
        })
}

fn sio_data() -> impl Strategy<Value = PacketData> {
    prop_oneof![
        proptest::option::of(json_object()).prop_map(PacketData::Connect),
        Just(PacketData::Disconnect),
        (
            event_name(),
            args_with_attachments(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(name, (mut data, attachments), id)| {
                data.insert(0, name);
                PacketData::Event {
                    data,
                    id,
                    attachments,
                }
            }),
        (args_with_attachments(), any::<u64>()).prop_map(|((data, attachments), id)| {
            PacketData::Ack {
                data,
                id,
                attachments,
            }
        }),
        prop_oneof![json_object(), any::<String>().prop_map(Value::String)]
            .prop_map(PacketData::ConnectError),
    ]
}

fn sio_packet() -> impl Strategy<Value = socketio::Packet> {
    (namespace(), sio_data()).prop_map(|(nsp, data)| socketio::Packet { nsp, data })
}

/// Text built from the pieces of the Socket.IO wire form, to reach deep decoder paths.
fn sio_like_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just(r#"{"_placeholder":true,"num":"#.to_owned()),
        Just(r#""_placeholder":true"#.to_owned()),
        Just(r#""num":"#.to_owned()),
        Just(r#""connect""#.to_owned()),
        Just("\"ev\"".to_owned()),
        Just("null".to_owned()),
        Just("-1".to_owned()),
        "[0-9]{1,4}",
        "\"[a-z]{0,3}\"",
        "[0-9a-z/,-]",
    ];
    // Attachment counts mostly where they belong, sometimes where they do not.
    let count = prop_oneof![4 => "[1-3]-", 1 => "[0-9]{1,25}-"];
    let head = prop_oneof![
        (
            prop::sample::select(vec!['5', '6']),
            proptest::option::weighted(0.9, count.clone())
        ),
        (
            prop::sample::select(vec!['0', '1', '2', '3', '4', '7']),
            proptest::option::weighted(0.1, count)
        ),
    ];
    (
        head,
        proptest::option::of("/[a-z]{0,4},?"),
        "[0-9]{0,3}",
        prop_oneof![
            // Fragments: mostly invalid JSON.
            (
                proptest::option::of(Just("[")),
                proptest::collection::vec(piece, 0..12),
                proptest::option::of(Just("]")),
            )
                .prop_map(|(open, body, close)| {
                    format!(
                        "{}{}{}",
                        open.unwrap_or(""),
                        body.concat(),
                        close.unwrap_or("")
                    )
                }),
            // Valid JSON of the right and wrong shapes, placeholders included.
            args_with_attachments().prop_map(|(args, _)| Value::Array(args).to_string()),
            json_value().prop_map(|value| value.to_string()),
        ],
    )
        .prop_map(|((kind, count), nsp, id, body)| {
            let mut text = String::from(kind);
            text.push_str(count.as_deref().unwrap_or(""));
            text.push_str(nsp.as_deref().unwrap_or(""));
            text.push_str(&id);
            text.push_str(&body);
            text
        })
}

/// Bodies built from the pieces of the polling wire form.
fn payload_like_body() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => Just(vec![0x1e]),
        6 => "[0-7b][a-zA-Z0-9+/=]{0,8}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..4),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

/// Bodies built from the pieces of both Engine.IO v3 polling framings.
fn v3_payload_like_body() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        // Text framing: a length that may or may not match what follows.
        4 => ("[0-9]{1,3}", "[0-6b][a-zA-Z0-9+/=:é😀]{0,6}")
            .prop_map(|(len, record)| format!("{len}:{record}").into_bytes()),
        2 => Just(b"0:".to_vec()),
        // Binary framing: marker, digit bytes, 0xFF, a record.
        4 => (0u8..3, proptest::collection::vec(0u8..11, 0..3), proptest::collection::vec(any::<u8>(), 0..6))
            .prop_map(|(marker, digits, record)| {
                [&[marker][..], &digits, &[0xFF], &record].concat()
            }),
        1 => proptest::collection::vec(any::<u8>(), 0..4),
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

// ---------------------------------------------------------------- helpers

fn decode_eio_frame(frame: Frame) -> Result<engineio::Packet, engineio::DecodeError> {
    match frame {
        Frame::Text(text) => engineio::Packet::decode_text(&text),
        Frame::Binary(data) => Ok(engineio::Packet::from_binary(data)),
    }
}

/// Decode a Socket.IO packet and feed it the given attachments.
fn decode_sio(
    text: &str,
    attachments: &[Bytes],
) -> Result<socketio::Packet, socketio::DecodeError> {
    let mut pending = match socketio::Packet::decode(text, &Limits::default())? {
        Decoded::Complete(packet) => {
            assert!(attachments.is_empty(), "attachments left over");
            return Ok(packet);
        }
        Decoded::Partial(pending) => pending,
    };
    assert_eq!(pending.expected(), attachments.len());
    for (i, attachment) in attachments.iter().enumerate() {
        match pending.push(attachment.clone())? {
            Assembly::Pending(next) => pending = next,
            Assembly::Complete(packet) => {
                assert_eq!(i + 1, attachments.len(), "completed early");
                return Ok(packet);
            }
        }
    }
    panic!("never completed")
}

// ---------------------------------------------------------------- properties

proptest! {
    #[test]
    fn engineio_packet_roundtrip(packet in eio_packet(any::<String>().boxed())) {
        prop_assert_eq!(decode_eio_frame(packet.encode()), Ok(packet));
    }

    #[test]
    fn polling_payload_roundtrip(
        packets in proptest::collection::vec(eio_packet(record_text().boxed()), 1..8)
    ) {
        let frames: Vec<Frame> = packets.iter().map(engineio::Packet::encode).collect();
        let body = payload::encode(&frames);
        prop_assert_eq!(payload::decode(&body, packets.len()), Ok(packets.clone()));
        if packets.len() > 1 {
            prop_assert_eq!(
                payload::decode(&body, packets.len() - 1),
                Err(engineio::DecodeError::TooManyRecords)
            );
        }
    }

    #[test]
    fn socketio_packet_roundtrip(packet in sio_packet()) {
        let (text, attachments) = packet.encode();
        prop_assert_eq!(decode_sio(&text, &attachments), Ok(packet.clone()));

        let frames = packet.to_frames();
        prop_assert_eq!(frames.len(), 1 + attachments.len());
        prop_assert_eq!(&frames[0], &Frame::Text(format!("4{text}")));
        for (frame, attachment) in frames[1..].iter().zip(&attachments) {
            prop_assert_eq!(frame, &Frame::Binary(attachment.clone()));
        }
    }

    #[test]
    fn socketio_over_polling_roundtrip(packet in sio_packet()) {
        // The full path a polling client takes: socket.io → frames → payload → back.
        let frames = packet.to_frames();
        let body = payload::encode(&frames);
        let mut decoded = payload::decode(&body, frames.len()).map_err(|e| TestCaseError::fail(e.to_string()))?.into_iter();
        let Some(engineio::Packet::Message(text)) = decoded.next() else {
            return Err(TestCaseError::fail("expected a message first"));
        };
        let attachments: Vec<Bytes> = decoded
            .map(|p| match p {
                engineio::Packet::Binary(data) => Ok(data),
                other => Err(TestCaseError::fail(format!("expected binary, got {other:?}"))),
            })
            .collect::<Result<_, _>>()?;
        prop_assert_eq!(decode_sio(&text, &attachments), Ok(packet));
    }

    #[test]
    fn engineio_v3_websocket_roundtrip(
        packet in eio_packet(any::<String>().boxed()),
        base64 in any::<bool>(),
    ) {
        let again = match v3::encode(&packet, base64) {
            Frame::Text(text) => v3::decode_text(&text),
            Frame::Binary(data) => v3::decode_binary(data),
        };
        prop_assert_eq!(again, Ok(packet));
    }

    #[test]
    fn engineio_v3_payload_roundtrip(
        packets in proptest::collection::vec(eio_packet(any::<String>().boxed()), 1..8)
    ) {
        // No separator to avoid in v3: any text survives its length prefix.
        let frames: Vec<Frame> = packets.iter().map(engineio::Packet::encode).collect();
        let text = v3::payload::encode_text(&frames);
        let binary = v3::payload::encode_binary(&frames);
        let n = packets.len();
        prop_assert_eq!(v3::payload::decode(text.as_bytes(), false, n), Ok(packets.clone()));
        prop_assert_eq!(v3::payload::decode(&binary, true, n), Ok(packets.clone()));
        for binary_ok in [false, true] {
            let body = v3::payload::encode(&frames, binary_ok);
            let is_binary = body.is_binary();
            prop_assert_eq!(is_binary, binary_ok && packets.iter().any(|p| matches!(p, engineio::Packet::Binary(_))));
            prop_assert_eq!(v3::payload::decode(&body.into_bytes(), is_binary, n), Ok(packets.clone()));
        }
        if n > 1 {
            prop_assert_eq!(
                v3::payload::decode(text.as_bytes(), false, n - 1),
                Err(engineio::DecodeError::TooManyRecords)
            );
            prop_assert_eq!(
                v3::payload::decode(&binary, true, n - 1),
                Err(engineio::DecodeError::TooManyRecords)
            );
        }
    }

    #[test]
    fn socketio_over_v3_polling_roundtrip(packet in sio_packet(), binary_ok in any::<bool>()) {
        // What a v2 client reads: socket.io → frames → v3 payload (either framing) → back.
        let frames = packet.to_frames();
        let body = v3::payload::encode(&frames, binary_ok);
        let is_binary = body.is_binary();
        let mut decoded = v3::payload::decode(&body.into_bytes(), is_binary, frames.len())
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .into_iter();
        let Some(engineio::Packet::Message(text)) = decoded.next() else {
            return Err(TestCaseError::fail("expected a message first"));
        };
        let attachments: Vec<Bytes> = decoded
            .map(|p| match p {
                engineio::Packet::Binary(data) => Ok(data),
                other => Err(TestCaseError::fail(format!("expected binary, got {other:?}"))),
            })
            .collect::<Result<_, _>>()?;
        prop_assert_eq!(decode_sio(&text, &attachments), Ok(packet));
    }

    #[test]
    fn v3_payload_decode_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        binary in any::<bool>(),
    ) {
        let _ = v3::payload::decode(&body, binary, 64);
    }

    #[test]
    fn v3_payload_like_bodies_never_panic_and_reencode(body in v3_payload_like_body()) {
        for binary in [false, true] {
            if let Ok(packets) = v3::payload::decode(&body, binary, 64) {
                let frames: Vec<Frame> = packets.iter().map(engineio::Packet::encode).collect();
                let text = v3::payload::encode_text(&frames);
                prop_assert_eq!(v3::payload::decode(text.as_bytes(), false, 64), Ok(packets.clone()));
                if !packets.is_empty() {
                    let again = v3::payload::encode_binary(&frames);
                    prop_assert_eq!(v3::payload::decode(&again, true, 64), Ok(packets));
                }
            }
        }
    }

    #[test]
    fn engineio_decode_text_never_panics(text in any::<String>()) {
        let _ = engineio::Packet::decode_text(&text);
    }

    #[test]
    fn payload_decode_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = payload::decode(&body, 64);
    }

    #[test]
    fn payload_like_bodies_never_panic_and_reencode(body in payload_like_body()) {
        if let Ok(packets) = payload::decode(&body, 64) {
            // A body that decodes re-encodes to one that decodes the same way.
            let frames: Vec<Frame> = packets.iter().map(engineio::Packet::encode).collect();
            prop_assert_eq!(payload::decode(&payload::encode(&frames), 64), Ok(packets));
        }
    }

    #[test]
    fn socketio_decode_never_panics(text in any::<String>()) {
        if let Ok(Decoded::Partial(pending)) = socketio::Packet::decode(&text, &Limits::default()) {
            let _ = pending.push(Bytes::new());
        }
    }

    #[test]
    fn socketio_like_text_never_panics_and_reencodes(text in sio_like_text()) {
        let decoded = match socketio::Packet::decode(&text, &Limits::default()) {
            Ok(Decoded::Complete(packet)) => Some(packet),
            Ok(Decoded::Partial(mut pending)) => loop {
                match pending.push(Bytes::from_static(b"x")) {
                    Ok(Assembly::Pending(next)) => pending = next,
                    Ok(Assembly::Complete(packet)) => break Some(packet),
                    Err(_) => break None,
                }
            },
            Err(_) => None,
        };
        if let Some(packet) = decoded {
            // Whatever decodes is re-encoded canonically and decodes to the same packet.
            let (text, attachments) = packet.encode();
            prop_assert_eq!(decode_sio(&text, &attachments), Ok(packet));
        }
    }
}
