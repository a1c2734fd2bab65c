//! Socket.IO v5 packets, carried in Engine.IO messages.
//!
//! Wire form: `<type>[<attachments>-][<nsp>,][<ack id>][<JSON payload>]`. Decoding is
//! as strict as Node's socket.io-parser 4.2: every malformed packet is a typed
//! [`DecodeError`], which a server answers by closing the connection. Binary packets
//! (types 5 and 6) decode to a [`PartialPacket`] that collects the attachments that
//! follow as separate Engine.IO binary messages.

use std::fmt::{Display, Write as _};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::engineio::Frame;

/// Namespace of a packet that does not name one.
pub const DEFAULT_NAMESPACE: &str = "/";

/// Event names a client may not emit (socket.io-parser's reserved list).
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Preallocate at most this many attachment slots, whatever the limits allow.
const MAX_PREALLOCATED_ATTACHMENTS: usize = 16;

/// Decoder limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most binary attachments one packet may announce (socket.io-parser default: 10).
    pub max_attachments: usize,
    /// Longest namespace accepted, in bytes (default 256).
    pub max_namespace_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_attachments: 10,
            max_namespace_len: 256,
        }
    }
}

/// One Socket.IO packet with its namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// Namespace, `"/"` when the wire form does not name one.
    pub nsp: String,
    /// Type and payload.
    pub data: PacketData,
}

/// The type of a Socket.IO packet and its payload.
#[derive(Debug, Clone, PartialEq)]
pub enum PacketData {
    /// `0`: client → server: auth object (None when absent); server → client: `{"sid":…}`.
    Connect(Option<Value>),
    /// `1`: leave (client) or close (server) one namespace.
    Disconnect,
    /// `2` / `5`: `data[0]` is the event name (string, or a number), the rest are args.
    /// Binary events keep `{"_placeholder":true,"num":i}` in `data` and carry the buffers in `attachments`.
    Event {
        /// Event name followed by the arguments.
        data: Vec<Value>,
        /// Ack id the receiver must answer with, if the sender wants an ack.
        id: Option<u64>,
        /// Binary attachments in placeholder `num` order; empty for a plain event.
        attachments: Vec<Bytes>,
    },
    /// `3` / `6`: the answer to an event that carried an ack id.
    Ack {
        /// Ack arguments (may be empty).
        data: Vec<Value>,
        /// Ack id of the event being answered.
        id: u64,
        /// Binary attachments in placeholder `num` order; empty for a plain ack.
        attachments: Vec<Bytes>,
    },
    /// `4`: server → client error object, e.g. `{"message":"Invalid namespace"}`.
    ConnectError(Value),
}

/// Why a Socket.IO packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet has no type character.
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type `0`–`6`.
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// A binary packet lacks a valid `N-` count, or N is 0 or above the limit.
    #[error("invalid attachment count")]
    InvalidAttachmentCount,
    /// A non-binary packet announces attachments.
    #[error("attachment count on a non-binary packet")]
    AttachmentsOnNonBinary,
    /// The namespace is too long or holds control characters.
    #[error("invalid namespace")]
    InvalidNamespace,
    /// The ack id does not fit in a u64.
    #[error("invalid ack id")]
    InvalidAckId,
    /// The payload is not JSON (including nesting past serde_json's recursion limit).
    #[error("invalid JSON payload: {0}")]
    InvalidJson(String),
    /// The payload has the wrong JSON shape for the packet type.
    #[error("invalid payload: {0}")]
    InvalidPayload(&'static str),
    /// An event uses a name reserved by Socket.IO.
    #[error("reserved event name {0:?}")]
    ReservedEventName(String),
    /// An ack carries no ack id.
    #[error("ack without an ack id")]
    MissingAckId,
    /// A placeholder's `num` is not an index of an announced attachment.
    #[error("attachment placeholder out of range or malformed")]
    PlaceholderOutOfRange,
    /// A binary message arrived while no attachment was awaited (raised by callers).
    #[error("unexpected binary attachment")]
    UnexpectedAttachment,
}

/// Result of decoding a text packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A packet with nothing left to wait for.
    Complete(Packet),
    /// A binary packet whose `attachments` binary frames are still to come.
    Partial(PartialPacket),
}

/// A binary event or ack waiting for its attachments.
#[derive(Debug, Clone, PartialEq)]
pub struct PartialPacket {
    /// Namespace of the packet.
    nsp: String,
    /// Payload with its placeholders (already checked against `expected`).
    data: Vec<Value>,
    /// Event or ack, with its id.
    kind: BinaryKind,
    /// Attachments received so far.
    attachments: Vec<Bytes>,
    /// Attachment count announced by the `N-` header; at least 1.
    expected: usize,
}

/// Which binary packet a [`PartialPacket`] completes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryKind {
    /// `5`, with an optional ack id.
    Event(Option<u64>),
    /// `6`, with its required ack id.
    Ack(u64),
}

/// Progress of a [`PartialPacket`] after one attachment.
#[derive(Debug, Clone, PartialEq)]
pub enum Assembly {
    /// More attachments are still to come.
    Pending(PartialPacket),
    /// All attachments arrived.
    Complete(Packet),
}

impl PartialPacket {
    /// Feed one binary attachment; returns the finished packet once all arrived
    /// (placeholders validated at completion).
    pub fn push(mut self, attachment: Bytes) -> Result<Assembly, DecodeError> {
        // Placeholders were checked against `expected` when the header was decoded, so
        // a packet completed here references only attachments it holds.
        self.attachments.push(attachment);
        if self.attachments.len() < self.expected {
            return Ok(Assembly::Pending(self));
        }
        let PartialPacket {
            nsp,
            data,
            kind,
            attachments,
            ..
        } = self;
        let data = match kind {
            BinaryKind::Event(id) => PacketData::Event {
                data,
                id,
                attachments,
            },
            BinaryKind::Ack(id) => PacketData::Ack {
                data,
                id,
                attachments,
            },
        };
        Ok(Assembly::Complete(Packet { nsp, data }))
    }

    /// Number of attachments the packet announced (its `N-` header).
    pub fn expected(&self) -> usize {
        self.expected
    }

    /// Number of attachments received so far.
    pub fn received(&self) -> usize {
        self.attachments.len()
    }

    /// Namespace of the packet, so a caller can refuse it before the attachments arrive.
    pub fn nsp(&self) -> &str {
        &self.nsp
    }

    /// The ack id a binary event asks for (a binary ack's own id), so a caller refusing the
    /// packet early can still answer it.
    pub fn ack_id(&self) -> Option<u64> {
        match self.kind {
            BinaryKind::Event(id) => id,
            BinaryKind::Ack(id) => Some(id),
        }
    }

    /// Whether it is a binary event (not a binary ack).
    pub fn is_event(&self) -> bool {
        matches!(self.kind, BinaryKind::Event(_))
    }
}

/// Packet type digits of the wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl Kind {
    /// The kind for a type character.
    fn from_char(c: char) -> Option<Kind> {
        Some(match c {
            '0' => Kind::Connect,
            '1' => Kind::Disconnect,
            '2' => Kind::Event,
            '3' => Kind::Ack,
            '4' => Kind::ConnectError,
            '5' => Kind::BinaryEvent,
            '6' => Kind::BinaryAck,
            _ => return None,
        })
    }

    /// Whether the packet announces attachments.
    fn is_binary(self) -> bool {
        matches!(self, Kind::BinaryEvent | Kind::BinaryAck)
    }
}

impl Packet {
    /// Strict decode of a text packet (the EIO message text after the `4`).
    pub fn decode(text: &str, limits: &Limits) -> Result<Decoded, DecodeError> {
        let mut chars = text.chars();
        let first = chars.next().ok_or(DecodeError::Empty)?;
        let kind = Kind::from_char(first).ok_or(DecodeError::UnknownType(first))?;
        let mut rest = chars.as_str();

        let (digits, after) = split_digits(rest);
        let expected = if kind.is_binary() {
            let after = after
                .strip_prefix('-')
                .ok_or(DecodeError::InvalidAttachmentCount)?;
            // Checked before anything is sized by it.
            let count = parse_decimal(digits)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n >= 1 && n <= limits.max_attachments)
                .ok_or(DecodeError::InvalidAttachmentCount)?;
            rest = after;
            count
        } else {
            if !digits.is_empty() && after.starts_with('-') {
                return Err(DecodeError::AttachmentsOnNonBinary);
            }
            0
        };

        // The namespace runs to the first comma or to the end (`40/custom` is valid).
        let nsp = if rest.starts_with('/') {
            let (nsp, after) = rest.split_once(',').unwrap_or((rest, ""));
            if nsp.len() > limits.max_namespace_len || nsp.chars().any(char::is_control) {
                return Err(DecodeError::InvalidNamespace);
            }
            rest = after;
            nsp
        } else {
            DEFAULT_NAMESPACE
        };

        let (digits, after) = split_digits(rest);
        let id = if digits.is_empty() {
            None
        } else {
            Some(parse_decimal(digits).ok_or(DecodeError::InvalidAckId)?)
        };
        rest = after;

        let payload = if rest.is_empty() {
            None
        } else {
            // serde_json's recursion limit (128) turns deep nesting into an error.
            let value = serde_json::from_str::<Value>(rest)
                .map_err(|err| DecodeError::InvalidJson(err.to_string()))?;
            Some(value)
        };

        let nsp = nsp.to_owned();
        let data = match kind {
            Kind::Connect => {
                no_ack_id(id)?;
                match payload {
                    None => PacketData::Connect(None),
                    Some(value @ Value::Object(_)) => PacketData::Connect(Some(value)),
                    Some(_) => {
                        return Err(DecodeError::InvalidPayload(
                            "CONNECT payload must be an object",
                        ));
                    }
                }
            }
            Kind::Disconnect => {
                no_ack_id(id)?;
                if payload.is_some() {
                    return Err(DecodeError::InvalidPayload("DISCONNECT takes no payload"));
                }
                PacketData::Disconnect
            }
            Kind::Event => PacketData::Event {
                data: event_data(payload)?,
                id,
                attachments: Vec::new(),
            },
            Kind::Ack => PacketData::Ack {
                data: ack_data(payload)?,
                id: id.ok_or(DecodeError::MissingAckId)?,
                attachments: Vec::new(),
            },
            Kind::ConnectError => {
                no_ack_id(id)?;
                match payload {
                    Some(value @ (Value::Object(_) | Value::String(_))) => {
                        PacketData::ConnectError(value)
                    }
                    _ => {
                        return Err(DecodeError::InvalidPayload(
                            "CONNECT_ERROR payload must be an object or a string",
                        ));
                    }
                }
            }
            Kind::BinaryEvent | Kind::BinaryAck => {
                let (data, kind) = if kind == Kind::BinaryEvent {
                    (event_data(payload)?, BinaryKind::Event(id))
                } else {
                    let data = ack_data(payload)?;
                    (data, BinaryKind::Ack(id.ok_or(DecodeError::MissingAckId)?))
                };
                check_placeholders(&data, expected)?;
                return Ok(Decoded::Partial(PartialPacket {
                    nsp,
                    data,
                    kind,
                    attachments: Vec::with_capacity(expected.min(MAX_PREALLOCATED_ATTACHMENTS)),
                    expected,
                }));
            }
        };
        Ok(Decoded::Complete(Packet { nsp, data }))
    }

    /// Encode: returns the text (without the EIO `4` prefix) and the binary attachments.
    /// Writes `N-` when attachments is non-empty; writes `nsp,` only when nsp != "/".
    pub fn encode(&self) -> (String, Vec<Bytes>) {
        let mut text = String::new();
        let attachments = self.write_text(&mut text);
        (text, attachments.to_vec())
    }

    /// Encode straight into Engine.IO frames: Frame::Text("4" + text) followed by one Frame::Binary per attachment.
    pub fn to_frames(&self) -> Vec<Frame> {
        let mut text = String::from("4");
        let attachments = self.write_text(&mut text);
        let mut frames = Vec::with_capacity(1 + attachments.len());
        frames.push(Frame::Text(text));
        frames.extend(attachments.iter().cloned().map(Frame::Binary));
        frames
    }

    /// Append the wire text to `out` and return the attachments that follow it.
    fn write_text(&self, out: &mut String) -> &[Bytes] {
        let (digit, id, payload, attachments): (char, Option<u64>, Payload<'_>, &[Bytes]) =
            match &self.data {
                PacketData::Connect(auth) => ('0', None, Payload::Value(auth.as_ref()), &[]),
                PacketData::Disconnect => ('1', None, Payload::Value(None), &[]),
                PacketData::Event {
                    data,
                    id,
                    attachments,
                } => {
                    let digit = if attachments.is_empty() { '2' } else { '5' };
                    (digit, *id, Payload::Array(data), attachments)
                }
                PacketData::Ack {
                    data,
                    id,
                    attachments,
                } => {
                    let digit = if attachments.is_empty() { '3' } else { '6' };
                    (digit, Some(*id), Payload::Array(data), attachments)
                }
                PacketData::ConnectError(value) => ('4', None, Payload::Value(Some(value)), &[]),
            };
        out.push(digit);
        if !attachments.is_empty() {
            push_display(out, attachments.len());
            out.push('-');
        }
        if !self.nsp.is_empty() && self.nsp != DEFAULT_NAMESPACE {
            out.push_str(&self.nsp);
            out.push(',');
        }
        if let Some(id) = id {
            push_display(out, id);
        }
        match payload {
            Payload::Value(None) => {}
            Payload::Value(Some(value)) => push_display(out, value),
            Payload::Array(values) => {
                out.push('[');
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_display(out, value);
                }
                out.push(']');
            }
        }
        attachments
    }

    /// A CONNECT reply accepting the socket: `0[nsp,]{"sid":sid}`.
    pub fn connect_ok(nsp: &str, sid: &str) -> Packet {
        Packet::new(nsp, PacketData::Connect(Some(json!({ "sid": sid }))))
    }

    /// A CONNECT answer offering connection state recovery: `0[nsp,]{"sid":sid,"pid":pid}`.
    pub fn connect_ok_with_pid(nsp: &str, sid: &str, pid: &str) -> Packet {
        Packet::new(
            nsp,
            PacketData::Connect(Some(json!({ "sid": sid, "pid": pid }))),
        )
    }

    /// A CONNECT refusal: `4[nsp,]{"message":message}`.
    pub fn connect_error(nsp: &str, message: &str) -> Packet {
        Packet::new(nsp, PacketData::ConnectError(json!({ "message": message })))
    }

    /// A CONNECT refusal with middleware data: `4[nsp,]{"message":message,"data":data}`.
    pub fn connect_error_with_data(nsp: &str, message: &str, data: Value) -> Packet {
        Packet::new(
            nsp,
            PacketData::ConnectError(json!({ "message": message, "data": data })),
        )
    }

    /// A DISCONNECT for one namespace: `1[nsp,]`.
    pub fn disconnect(nsp: &str) -> Packet {
        Packet::new(nsp, PacketData::Disconnect)
    }

    /// An event without ack id or attachments: `2[nsp,][name,...args]`.
    pub fn event(nsp: &str, name: &str, args: Vec<Value>) -> Packet {
        let mut data = Vec::with_capacity(1 + args.len());
        data.push(Value::String(name.to_owned()));
        data.extend(args);
        Packet::new(
            nsp,
            PacketData::Event {
                data,
                id: None,
                attachments: Vec::new(),
            },
        )
    }

    /// An ack answering ack id `id` (binary when `attachments` is non-empty).
    pub fn ack(nsp: &str, id: u64, data: Vec<Value>, attachments: Vec<Bytes>) -> Packet {
        Packet::new(
            nsp,
            PacketData::Ack {
                data,
                id,
                attachments,
            },
        )
    }

    /// A packet for namespace `nsp`.
    pub fn new(nsp: &str, data: PacketData) -> Packet {
        Packet {
            nsp: nsp.to_owned(),
            data,
        }
    }
}

impl PacketData {
    /// The event name of an Event when it is a string.
    pub fn event_name(&self) -> Option<&str> {
        match self {
            PacketData::Event { data, .. } => data.first().and_then(Value::as_str),
            _ => None,
        }
    }
}

/// The JSON part of a packet being encoded.
enum Payload<'a> {
    /// A single value, or nothing.
    Value(Option<&'a Value>),
    /// Event or ack arguments, written as one array.
    Array(&'a [Value]),
}

/// Append `value`'s display form to `out`.
fn push_display(out: &mut String, value: impl Display) {
    // Writing to a String cannot fail, and neither can serializing a `Value`
    // (its map keys are always strings).
    let _ = write!(out, "{value}");
}

/// Split `s` into its leading ASCII digits and the rest.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// Parse ASCII digits as a u64; None when empty or overflowing.
fn parse_decimal(digits: &str) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.bytes().try_fold(0u64, |n, d| {
        n.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })
}

/// Refuse an ack id on a packet type that cannot be acknowledged.
fn no_ack_id(id: Option<u64>) -> Result<(), DecodeError> {
    match id {
        None => Ok(()),
        Some(_) => Err(DecodeError::InvalidPayload(
            "only events and acks carry an ack id",
        )),
    }
}

/// Validate an EVENT payload: a non-empty array named by a non-reserved string or a number.
fn event_data(payload: Option<Value>) -> Result<Vec<Value>, DecodeError> {
    const SHAPE: &str = "EVENT payload must be a non-empty array";
    let Some(Value::Array(data)) = payload else {
        return Err(DecodeError::InvalidPayload(SHAPE));
    };
    match data.first() {
        None => Err(DecodeError::InvalidPayload(SHAPE)),
        Some(Value::String(name)) if RESERVED_EVENTS.contains(&name.as_str()) => {
            Err(DecodeError::ReservedEventName(name.clone()))
        }
        Some(Value::String(_) | Value::Number(_)) => Ok(data),
        Some(_) => Err(DecodeError::InvalidPayload(
            "event name must be a string or a number",
        )),
    }
}

/// Validate an ACK payload: an array, possibly empty.
fn ack_data(payload: Option<Value>) -> Result<Vec<Value>, DecodeError> {
    match payload {
        Some(Value::Array(data)) => Ok(data),
        _ => Err(DecodeError::InvalidPayload("ACK payload must be an array")),
    }
}

/// Check that every `{"_placeholder":true,…}` object has an integer `num` below `count`.
fn check_placeholders(data: &[Value], count: usize) -> Result<(), DecodeError> {
    // An explicit stack: the depth is bounded by serde_json anyway, but this needs no
    // recursion at all.
    let mut stack: Vec<&Value> = data.iter().collect();
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                // Same test as socket.io-parser: only `_placeholder === true` marks one.
                if map.get("_placeholder") == Some(&Value::Bool(true)) {
                    let in_range = map
                        .get("num")
                        .and_then(Value::as_u64)
                        .and_then(|num| usize::try_from(num).ok())
                        .is_some_and(|num| num < count);
                    if !in_range {
                        return Err(DecodeError::PlaceholderOutOfRange);
                    }
                } else {
                    stack.extend(map.values());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<Decoded, DecodeError> {
        Packet::decode(text, &Limits::default())
    }

    fn complete(text: &str) -> Packet {
        match decode(text) {
            Ok(Decoded::Complete(packet)) => packet,
            other => panic!("{text}: expected a complete packet, got {other:?}"),
        }
    }

    fn partial(text: &str) -> PartialPacket {
        match decode(text) {
            Ok(Decoded::Partial(partial)) => partial,
            other => panic!("{text}: expected a partial packet, got {other:?}"),
        }
    }

    fn error(text: &str) -> DecodeError {
        match decode(text) {
            Err(err) => err,
            Ok(other) => panic!("{text}: expected an error, got {other:?}"),
        }
    }

    fn text(packet: &Packet) -> String {
        let (text, attachments) = packet.encode();
        assert!(attachments.is_empty());
        text
    }

    fn event(nsp: &str, data: Value, id: Option<u64>) -> Packet {
        let Value::Array(data) = data else {
            panic!("event data must be an array")
        };
        Packet::new(
            nsp,
            PacketData::Event {
                data,
                id,
                attachments: Vec::new(),
            },
        )
    }

    /// Decode `wire` to `packet`, and encode `packet` back to `wire`.
    fn both_ways(wire: &str, packet: Packet) {
        assert_eq!(complete(wire), packet, "decoding {wire}");
        assert_eq!(text(&packet), wire, "encoding {packet:?}");
    }

    #[test]
    fn connect() {
        both_ways("0", Packet::new("/", PacketData::Connect(None)));
        both_ways(
            r#"0{"token":"x"}"#,
            Packet::new("/", PacketData::Connect(Some(json!({"token": "x"})))),
        );
        both_ways(
            "0/custom,",
            Packet::new("/custom", PacketData::Connect(None)),
        );
        both_ways(
            r#"0/custom,{"a":1}"#,
            Packet::new("/custom", PacketData::Connect(Some(json!({"a": 1})))),
        );
        // The trailing comma is optional when nothing follows the namespace.
        assert_eq!(
            complete("0/custom"),
            Packet::new("/custom", PacketData::Connect(None))
        );
        // An explicit default namespace is the default namespace.
        assert_eq!(complete("0/,"), Packet::new("/", PacketData::Connect(None)));
    }

    #[test]
    fn connect_replies() {
        both_ways(r#"0{"sid":"abc"}"#, Packet::connect_ok("/", "abc"));
        both_ways(
            r#"0/custom,{"sid":"abc"}"#,
            Packet::connect_ok("/custom", "abc"),
        );
        both_ways(
            r#"4{"message":"Invalid namespace"}"#,
            Packet::connect_error("/", "Invalid namespace"),
        );
        both_ways(
            r#"4/custom,{"message":"Invalid namespace"}"#,
            Packet::connect_error("/custom", "Invalid namespace"),
        );
        both_ways(
            r#"4{"message":"nope","data":{"z":1,"a":2}}"#,
            Packet::connect_error_with_data("/", "nope", json!({"z": 1, "a": 2})),
        );
        // Older servers send a bare string.
        assert_eq!(
            complete(r#"4"Not authorized""#),
            Packet::new("/", PacketData::ConnectError(json!("Not authorized")))
        );
    }

    #[test]
    fn disconnect() {
        both_ways("1", Packet::disconnect("/"));
        both_ways("1/custom,", Packet::disconnect("/custom"));
        assert_eq!(complete("1/custom"), Packet::disconnect("/custom"));
    }

    #[test]
    fn events() {
        both_ways(
            r#"2["hello",1]"#,
            Packet::event("/", "hello", vec![json!(1)]),
        );
        both_ways(
            r#"2/custom,12["ev"]"#,
            event("/custom", json!(["ev"]), Some(12)),
        );
        both_ways(r#"212["ev"]"#, event("/", json!(["ev"]), Some(12)));
        both_ways(r#"20["ev"]"#, event("/", json!(["ev"]), Some(0)));
        both_ways(
            r#"2["ev",{"z":1,"a":[true,null,"é"]}]"#,
            event("/", json!(["ev", {"z": 1, "a": [true, null, "é"]}]), None),
        );
        // Numbers are valid event names.
        both_ways("2[1.5]", event("/", json!([1.5]), None));
        both_ways("2[7,\"x\"]", event("/", json!([7, "x"]), None));
        assert_eq!(complete("2[7]").data.event_name(), None);
        assert_eq!(complete(r#"2["hello",1]"#).data.event_name(), Some("hello"));
        // The largest ack id fits.
        assert_eq!(
            complete(r#"218446744073709551615["ev"]"#),
            event("/", json!(["ev"]), Some(u64::MAX))
        );
    }

    #[test]
    fn acks() {
        both_ways(
            "3/custom,5[]",
            Packet::ack("/custom", 5, Vec::new(), Vec::new()),
        );
        both_ways(
            r#"31["ok",{"n":2}]"#,
            Packet::ack("/", 1, vec![json!("ok"), json!({"n": 2})], Vec::new()),
        );
    }

    #[test]
    fn binary_event_waits_for_its_attachment() {
        let wire = r#"51-["message-back",{"_placeholder":true,"num":0}]"#;
        let pending = partial(wire);
        assert_eq!((pending.expected(), pending.received()), (1, 0));
        assert_eq!(pending.nsp(), "/");
        let attachment = Bytes::from_static(&[1, 2, 3]);
        let packet = match pending.push(attachment.clone()) {
            Ok(Assembly::Complete(packet)) => packet,
            other => panic!("expected a complete packet, got {other:?}"),
        };
        let expected = Packet::new(
            "/",
            PacketData::Event {
                data: vec![
                    json!("message-back"),
                    json!({"_placeholder": true, "num": 0}),
                ],
                id: None,
                attachments: vec![attachment.clone()],
            },
        );
        assert_eq!(packet, expected);
        assert_eq!(packet.encode(), (wire.to_owned(), vec![attachment.clone()]));
        assert_eq!(
            packet.to_frames(),
            vec![Frame::Text(format!("4{wire}")), Frame::Binary(attachment)]
        );
    }

    #[test]
    fn binary_ack_waits_for_its_attachment() {
        let wire = r#"61-/custom,3[{"_placeholder":true,"num":0}]"#;
        let pending = partial(wire);
        assert_eq!(pending.nsp(), "/custom");
        let attachment = Bytes::from_static(b"\x00\xff");
        let packet = match pending.push(attachment.clone()) {
            Ok(Assembly::Complete(packet)) => packet,
            other => panic!("expected a complete packet, got {other:?}"),
        };
        let expected = Packet::ack(
            "/custom",
            3,
            vec![json!({"_placeholder": true, "num": 0})],
            vec![attachment.clone()],
        );
        assert_eq!(packet, expected);
        assert_eq!(packet.encode(), (wire.to_owned(), vec![attachment]));
    }

    #[test]
    fn binary_event_with_two_attachments_and_an_ack_id() {
        let wire =
            r#"52-/a,9["up",{"f":[{"_placeholder":true,"num":1}]},{"_placeholder":true,"num":0}]"#;
        let pending = partial(wire);
        assert_eq!(pending.expected(), 2);
        let pending = match pending.push(Bytes::from_static(b"first")) {
            Ok(Assembly::Pending(pending)) => pending,
            other => panic!("expected a pending packet, got {other:?}"),
        };
        assert_eq!(pending.received(), 1);
        let packet = match pending.push(Bytes::from_static(b"second")) {
            Ok(Assembly::Complete(packet)) => packet,
            other => panic!("expected a complete packet, got {other:?}"),
        };
        assert_eq!(packet.nsp, "/a");
        let PacketData::Event {
            id, attachments, ..
        } = &packet.data
        else {
            panic!("expected an event")
        };
        assert_eq!(*id, Some(9));
        assert_eq!(attachments, &[&b"first"[..], &b"second"[..]]);
        assert_eq!(packet.encode().0, wire);
    }

    #[test]
    fn rejects_unknown_and_empty() {
        assert_eq!(error(""), DecodeError::Empty);
        assert_eq!(error("7"), DecodeError::UnknownType('7'));
        assert_eq!(error("x2[\"a\"]"), DecodeError::UnknownType('x'));
        assert_eq!(error("é"), DecodeError::UnknownType('é'));
    }

    #[test]
    fn rejects_bad_attachment_counts() {
        assert_eq!(error(r#"5["a"]"#), DecodeError::InvalidAttachmentCount);
        assert_eq!(error(r#"5-["a"]"#), DecodeError::InvalidAttachmentCount);
        assert_eq!(error(r#"50-["a"]"#), DecodeError::InvalidAttachmentCount);
        assert_eq!(error(r#"51["a"]"#), DecodeError::InvalidAttachmentCount);
        assert_eq!(
            error(r#"5999999999999999999999-["a"]"#),
            DecodeError::InvalidAttachmentCount
        );
        assert_eq!(
            error(r#"511-["a",{"_placeholder":true,"num":0}]"#),
            DecodeError::InvalidAttachmentCount
        );
        assert_eq!(
            error(&format!("5{}-[\"a\"]", "9".repeat(100_000))),
            DecodeError::InvalidAttachmentCount
        );
        // Ten is the default limit and is accepted.
        assert_eq!(partial(r#"510-["a"]"#).expected(), 10);
        let tight = Limits {
            max_attachments: 2,
            ..Limits::default()
        };
        assert_eq!(
            Packet::decode(r#"53-["a"]"#, &tight),
            Err(DecodeError::InvalidAttachmentCount)
        );
        // A huge limit still allocates nothing up front for a huge claim.
        let loose = Limits {
            max_attachments: usize::MAX,
            ..Limits::default()
        };
        let Ok(Decoded::Partial(pending)) =
            Packet::decode(&format!("5{}-[\"a\"]", u64::MAX), &loose)
        else {
            panic!("expected a partial packet")
        };
        assert!(pending.attachments.capacity() <= MAX_PREALLOCATED_ATTACHMENTS);
        assert_eq!(error(r#"21-["a"]"#), DecodeError::AttachmentsOnNonBinary);
        assert_eq!(error(r#"31-[]"#), DecodeError::AttachmentsOnNonBinary);
    }

    #[test]
    fn rejects_bad_namespaces_and_ack_ids() {
        let long = format!("2/{},[\"a\"]", "n".repeat(256));
        assert_eq!(error(&long), DecodeError::InvalidNamespace);
        let fits = format!("2/{},[\"a\"]", "n".repeat(255));
        assert_eq!(complete(&fits).nsp.len(), 256);
        assert_eq!(error("2/a\nb,[\"a\"]"), DecodeError::InvalidNamespace);
        assert_eq!(
            error(r#"218446744073709551616["ev"]"#),
            DecodeError::InvalidAckId
        );
        assert_eq!(
            error(&format!("2/a,{}[\"ev\"]", "1".repeat(100_000))),
            DecodeError::InvalidAckId
        );
    }

    #[test]
    fn rejects_wrong_payload_shapes() {
        let shape = |text: &str| match error(text) {
            DecodeError::InvalidPayload(_) => {}
            other => panic!("{text}: expected InvalidPayload, got {other:?}"),
        };
        shape(r#"2{"a":1}"#);
        shape("2[null]");
        shape("2[{}]");
        shape("2[[\"a\"]]");
        shape("2[true]");
        shape("2[]");
        shape("2");
        shape("2/custom,");
        shape("2\"a\"");
        shape(r#"1{"x":1}"#);
        shape("1/custom,[]");
        shape("0[1]");
        shape("0\"x\"");
        shape("0null");
        shape("012{}");
        shape("11");
        shape("4");
        shape("4[1]");
        shape("4null");
        shape("31");
        shape("31{}");
        shape("31\"a\"");
        shape("51-");
        shape(r#"51-{"a":1}"#);
        shape("61-1");
    }

    #[test]
    fn rejects_reserved_event_names() {
        for name in RESERVED_EVENTS {
            assert_eq!(
                error(&format!("2[\"{name}\"]")),
                DecodeError::ReservedEventName(name.to_owned())
            );
            assert_eq!(
                error(&format!(
                    "51-[\"{name}\",{{\"_placeholder\":true,\"num\":0}}]"
                )),
                DecodeError::ReservedEventName(name.to_owned())
            );
        }
        // Only the exact names are reserved.
        assert_eq!(
            complete(r#"2["Connect"]"#).data.event_name(),
            Some("Connect")
        );
    }

    #[test]
    fn rejects_acks_without_id() {
        assert_eq!(error("3[]"), DecodeError::MissingAckId);
        assert_eq!(error("3/custom,[]"), DecodeError::MissingAckId);
        assert_eq!(
            error(r#"61-[{"_placeholder":true,"num":0}]"#),
            DecodeError::MissingAckId
        );
    }

    #[test]
    fn rejects_bad_placeholders() {
        for placeholder in [
            r#"{"_placeholder":true,"num":1}"#,
            r#"{"_placeholder":true,"num":-1}"#,
            r#"{"_placeholder":true,"num":0.5}"#,
            r#"{"_placeholder":true,"num":"0"}"#,
            r#"{"_placeholder":true}"#,
            r#"{"deep":[[{"_placeholder":true,"num":18446744073709551615}]]}"#,
        ] {
            assert_eq!(
                error(&format!("51-[\"a\",{placeholder}]")),
                DecodeError::PlaceholderOutOfRange,
                "{placeholder}"
            );
        }
        // Only `_placeholder: true` marks a placeholder, and plain events carry none.
        assert_eq!(
            partial(r#"51-["a",{"_placeholder":1,"num":9}]"#).expected(),
            1
        );
        assert_eq!(
            complete(r#"2["a",{"_placeholder":true,"num":9}]"#)
                .data
                .event_name(),
            Some("a")
        );
    }

    #[test]
    fn rejects_bad_json() {
        let json = |text: &str| match error(text) {
            DecodeError::InvalidJson(_) => {}
            other => panic!("{text}: expected InvalidJson, got {other:?}"),
        };
        json(r#"2["a""#);
        json(r#"2["a"]x"#);
        json("2[\"a\",]");
        json("2[\"a\",NaN]");
        json("0{'a':1}");
        json("2-");
        let deep = format!("2[\"a\",{}{}]", "[".repeat(200), "]".repeat(200));
        match error(&deep) {
            DecodeError::InvalidJson(message) => {
                assert!(message.contains("recursion"), "{message}")
            }
            other => panic!("expected InvalidJson, got {other:?}"),
        }
    }

    #[test]
    fn huge_numbers_do_not_panic() {
        let digits = "9".repeat(100_000);
        // serde_json reports the number as out of range; an f64 would be fine too.
        for text in [
            format!("2[\"a\",{digits}]"),
            format!("2[\"a\",0.{digits}]"),
            format!("2[\"a\",1e{digits}]"),
            format!("2[{digits}]"),
        ] {
            match decode(&text) {
                Ok(Decoded::Complete(_)) | Err(DecodeError::InvalidJson(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn keeps_object_key_order() {
        let wire = r#"2["ev",{"zeta":1,"alpha":2,"mid":{"b":0,"a":1}}]"#;
        assert_eq!(text(&complete(wire)), wire);
    }

    #[test]
    fn empty_namespace_encodes_as_default() {
        assert_eq!(text(&Packet::disconnect("")), "1");
    }
}
