//! W3C trace context: the `traceparent` value (`00-<trace id>-<parent id>-<flags>`).
//!
//! It arrives from clients (an event's `meta.traceparent`) and inside cluster frames, so parsing
//! is strict and total: anything malformed is `None`, never a panic. The binary form (25 bytes:
//! trace id, parent id, flags) is what cluster frames carry.

use std::fmt;

use serde_json::Value;

/// A parsed `traceparent`: the trace, the caller's span in it, and the trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never all zeros).
    pub trace_id: [u8; 16],
    /// The parent span's id (never all zeros).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

/// Length of a version-00 `traceparent`.
const TEXT_LEN: usize = 55;
/// Length of the binary form.
pub const BINARY_LEN: usize = 25;

impl TraceParent {
    /// Parse a `traceparent` header value; `None` for anything the W3C spec says to ignore.
    pub fn parse(text: &str) -> Option<TraceParent> {
        let text = text.trim_matches([' ', '\t']).as_bytes();
        if text.len() < TEXT_LEN {
            return None;
        }
        let version = hex_byte(&text[0..2])?;
        // Version ff is forbidden; version 00 has exactly four fields; a later version may
        // append fields after a dash, which we ignore.
        let length_ok = match version {
            0xff => false,
            0x00 => text.len() == TEXT_LEN,
            _ => text.len() == TEXT_LEN || text[TEXT_LEN] == b'-',
        };
        if !length_ok || text[2] != b'-' || text[35] != b'-' || text[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&text[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, byte) in span_id.iter_mut().enumerate() {
            *byte = hex_byte(&text[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&text[53..55])?;
        TraceParent::new(trace_id, span_id, flags)
    }

    /// A trace parent from its parts; `None` when either id is all zeros (invalid).
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<TraceParent> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// Whether the caller sampled the trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        let mut out = String::with_capacity(32);
        for byte in self.trace_id {
            push_hex(&mut out, byte);
        }
        out
    }

    /// The binary form carried in cluster frames.
    pub fn to_bytes(&self) -> [u8; BINARY_LEN] {
        let mut out = [0u8; BINARY_LEN];
        out[..16].copy_from_slice(&self.trace_id);
        out[16..24].copy_from_slice(&self.span_id);
        out[24] = self.flags;
        out
    }

    /// Read the binary form; `None` when an id is all zeros.
    pub fn from_bytes(bytes: &[u8; BINARY_LEN]) -> Option<TraceParent> {
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(&bytes[..16]);
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&bytes[16..24]);
        TraceParent::new(trace_id, span_id, bytes[24])
    }

    /// The `traceparent` a client put in an event's first argument, as
    /// `{"meta": {"traceparent": "00-…"}}`; `None` when absent or malformed.
    pub fn from_event(data: &[Value]) -> Option<TraceParent> {
        let text = data.get(1)?.get("meta")?.get("traceparent")?.as_str()?;
        TraceParent::parse(text)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(TEXT_LEN);
        out.push_str("00-");
        out.push_str(&self.trace_id_hex());
        out.push('-');
        for byte in self.span_id {
            push_hex(&mut out, byte);
        }
        out.push('-');
        push_hex(&mut out, self.flags);
        f.write_str(&out)
    }
}

/// Two lowercase hex digits (the spec allows no uppercase).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(*pair.first()?)? << 4 | digit(*pair.get(1)?)?)
}

fn push_hex(out: &mut String, byte: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(DIGITS[usize::from(byte >> 4)] as char);
    out.push(DIGITS[usize::from(byte & 15)] as char);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let tp = TraceParent::parse(GOOD).expect("valid");
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), GOOD);
        assert_eq!(TraceParent::from_bytes(&tp.to_bytes()), Some(tp));
        // Optional whitespace around a header value is allowed.
        assert_eq!(TraceParent::parse(&format!(" {GOOD}\t")), Some(tp));
        let unsampled = GOOD.replace("-01", "-00");
        assert!(!TraceParent::parse(&unsampled).expect("valid").sampled());
    }

    #[test]
    fn a_later_version_may_append_fields() {
        let later = GOOD.replacen("00", "01", 1);
        assert!(TraceParent::parse(&format!("{later}-whatever")).is_some());
        assert!(TraceParent::parse(&later).is_some());
        assert!(TraceParent::parse(&format!("{later}x")).is_none());
        // Version 00 has exactly four fields.
        assert!(TraceParent::parse(&format!("{GOOD}-extra")).is_none());
    }

    #[test]
    fn bad_input_is_ignored() {
        let bad = [
            "",
            "00",
            "garbage",
            &GOOD[..54],
            &GOOD.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
            &GOOD.replace("00f067aa0ba902b7", &"0".repeat(16)),
            &GOOD.replacen("00", "ff", 1),
            &GOOD.to_uppercase(),
            &GOOD.replace('-', "_"),
            &GOOD.replacen("4b", "4g", 1),
            &GOOD.replace("-01", "-0x"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01é",
            "é0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ];
        for text in bad {
            assert_eq!(TraceParent::parse(text), None, "{text:?}");
        }
        assert_eq!(TraceParent::from_bytes(&[0; BINARY_LEN]), None);
    }

    #[test]
    fn any_string_parses_without_panicking() {
        // Every prefix and every single-byte corruption of a valid value.
        for cut in 0..=GOOD.len() {
            let _ = TraceParent::parse(&GOOD[..cut]);
        }
        for i in 0..GOOD.len() {
            for c in ['-', 'g', 'é', '\0', ' '] {
                let mut s = GOOD.to_string();
                s.replace_range(i..i + 1, &c.to_string());
                let _ = TraceParent::parse(&s);
            }
        }
    }

    #[test]
    fn an_events_meta_may_carry_one() {
        let data = |arg: Value| vec![json!("message:send"), arg];
        let tp = TraceParent::parse(GOOD);
        assert_eq!(
            TraceParent::from_event(&data(json!({"to": "b", "meta": {"traceparent": GOOD}}))),
            tp
        );
        for arg in [
            json!({"to": "b"}),
            json!({"meta": "x"}),
            json!({"meta": {"traceparent": 7}}),
            json!({"meta": {"traceparent": "nope"}}),
            json!("text"),
            json!(null),
        ] {
            assert_eq!(TraceParent::from_event(&data(arg.clone())), None, "{arg}");
        }
        assert_eq!(TraceParent::from_event(&[]), None);
    }
}
