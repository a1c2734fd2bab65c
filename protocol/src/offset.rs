//! Connection state recovery offsets: every recoverable event carries one as its last
//! argument (a string, as socket.io-client expects), and a reconnecting client sends the last
//! one it saw. An offset is `<ms>-<seq>`: the milliseconds and sequence number of the event in
//! the node's (or the cluster's) one ordering of recoverable events — ordered first by `ms`,
//! then by `seq`, the same order as Redis stream ids.

use std::fmt;
use std::str::FromStr;

/// The position of a recoverable event (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset {
    /// Milliseconds (Unix time, never decreasing along the order).
    pub ms: u64,
    /// Sequence number within the order.
    pub seq: u64,
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Not an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an offset (`<ms>-<seq>`)")]
pub struct BadOffset;

impl FromStr for Offset {
    type Err = BadOffset;

    fn from_str(s: &str) -> Result<Self, BadOffset> {
        let (ms, seq) = s.split_once('-').ok_or(BadOffset)?;
        let digits = |v: &str| {
            (!v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .ok_or(BadOffset)
        };
        Ok(Offset {
            ms: digits(ms)?,
            seq: digits(seq)?,
        })
    }
}

/// The text frame of an encoded event (`42[...]`, `451-[...]`, with or without a namespace or
/// ack id) with `offset` appended as its last argument; `None` when `text` is not an event.
pub fn append_offset(text: &str, offset: &Offset) -> Option<String> {
    let body = text.strip_suffix(']')?;
    if !(text.starts_with("42") || text.starts_with("45")) {
        return None;
    }
    Some(format!("{body},\"{offset}\"]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_print_and_order_like_stream_ids() {
        let a: Offset = "1700000000000-7".parse().unwrap();
        assert_eq!(
            a,
            Offset {
                ms: 1_700_000_000_000,
                seq: 7
            }
        );
        assert_eq!(a.to_string(), "1700000000000-7");
        let b: Offset = "1700000000000-10".parse().unwrap();
        let c: Offset = "1700000000001-1".parse().unwrap();
        assert!(a < b && b < c);
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-1-1",
            "+1-1",
            "99999999999999999999999-1",
        ] {
            assert!(bad.parse::<Offset>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_offset_becomes_the_last_argument() {
        let o = Offset { ms: 5, seq: 6 };
        assert_eq!(
            append_offset(r#"42["ev",{"a":1}]"#, &o).unwrap(),
            r#"42["ev",{"a":1},"5-6"]"#
        );
        assert_eq!(
            append_offset(r#"451-["ev",{"_placeholder":true,"num":0}]"#, &o).unwrap(),
            r#"451-["ev",{"_placeholder":true,"num":0},"5-6"]"#
        );
        assert_eq!(append_offset("40", &o), None);
        assert_eq!(append_offset(r#"43[1]"#, &o), None);
    }
}
