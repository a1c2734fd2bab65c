//! Frames that travel between nodes over Redis pub/sub.
//!
//! A frame says who sent it (origin node), when (for the pub/sub latency metric) and what to do:
//! deliver already-encoded Engine.IO frames to the local sockets of the channel's target, or a
//! control action (presence change, disconnect a user, room membership). The encoding is a small
//! length-prefixed binary format; decoding is strict and bounded, because anything on a Redis
//! channel may be foreign or hostile.

use bytes::Bytes;

use crate::trace::{BINARY_LEN, TraceParent};

/// First bytes of every frame without a trace context (format version 1).
pub const MAGIC: &[u8; 3] = b"SB1";
/// First bytes of a frame with a trace context: the 25-byte binary `traceparent` follows, then
/// the rest of a version-1 frame. Only traced frames use it, so nodes without tracing keep
/// exchanging version-1 frames.
pub const MAGIC_TRACED: &[u8; 3] = b"SB2";
/// Largest frame accepted.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Most parts (one text frame plus attachments) one delivery may carry.
pub const MAX_PARTS: usize = 64;
/// Longest string field (node id, user id, room, sid).
pub const MAX_FIELD: usize = 1024;

/// First bytes of a recorded frame: `SR`, one length byte, the offset (`<ms>-<seq>`), then an
/// ordinary frame. The Redis script that records a recoverable event publishes it this way, so
/// every node learns the event's offset with the event.
pub const RECORDED_MAGIC: &[u8; 2] = b"SR";

/// Split a published payload into its offset (recorded frames only) and the frame bytes.
pub fn split_recorded(payload: &[u8]) -> Result<(Option<&str>, &[u8]), FrameError> {
    let Some(rest) = payload.strip_prefix(RECORDED_MAGIC) else {
        return Ok((None, payload));
    };
    let (&len, rest) = rest.split_first().ok_or(FrameError::Length)?;
    let len = len as usize;
    if rest.len() < len || len == 0 {
        return Err(FrameError::Length);
    }
    let (offset, frame) = rest.split_at(len);
    let offset = std::str::from_utf8(offset).map_err(|_| FrameError::Utf8)?;
    Ok((Some(offset), frame))
}

/// One encoded Engine.IO frame inside a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// A text frame (valid UTF-8).
    Text(Bytes),
    /// A binary frame.
    Binary(Bytes),
}

/// A presence transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceWire {
    /// First socket of the user connected somewhere.
    Online,
    /// Last socket of the user left.
    Offline,
    /// The user set a status (`online` or `away`).
    Status(String),
}

/// What a frame asks the receiving nodes to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Deliver `parts` to the local sockets of the channel's target.
    Deliver {
        /// A session id to leave out (the sender's own socket).
        except: Option<String>,
        /// May be dropped for congested clients.
        volatile: bool,
        /// The encoded packet.
        parts: Vec<Part>,
    },
    /// A user's presence changed.
    Presence {
        /// The user.
        user: String,
        /// What changed.
        change: PresenceWire,
    },
    /// Disconnect every local socket of a user.
    DisconnectUser {
        /// The user.
        user: String,
    },
    /// Add or remove a user's local sockets to or from a room.
    Membership {
        /// The user.
        user: String,
        /// The room.
        room: String,
        /// Join (true) or leave.
        join: bool,
    },
}

/// One cross-node frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFrame {
    /// The node that published it.
    pub origin: String,
    /// Publish time, microseconds since the Unix epoch.
    pub sent_at_micros: u64,
    /// The publishing span, so the receiving node's work joins the sender's trace.
    pub trace: Option<TraceParent>,
    /// The action.
    pub body: Body,
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not one of ours (wrong magic) or an unknown version.
    #[error("not a switchboard frame")]
    Foreign,
    /// Larger than [`MAX_FRAME_BYTES`].
    #[error("frame too large")]
    TooLarge,
    /// Ended early, or bytes left over.
    #[error("truncated or padded frame")]
    Length,
    /// A field is out of range (unknown kind, too many parts, field too long).
    #[error("invalid field")]
    Invalid,
    /// A text part or string field is not UTF-8.
    #[error("invalid UTF-8")]
    Utf8,
}

const KIND_DELIVER: u8 = 1;
const KIND_PRESENCE: u8 = 2;
const KIND_DISCONNECT: u8 = 3;
const KIND_MEMBERSHIP: u8 = 4;

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Fields are bounded by the callers' own validation; truncation would corrupt, so clamp
    // the length prefix to what we write.
    let len = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

impl ClusterFrame {
    /// Encode to bytes for `PUBLISH`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + BINARY_LEN + self.payload_len());
        match &self.trace {
            Some(trace) => {
                out.extend_from_slice(MAGIC_TRACED);
                out.extend_from_slice(&trace.to_bytes());
            }
            None => out.extend_from_slice(MAGIC),
        }
        out.extend_from_slice(&self.sent_at_micros.to_be_bytes());
        put_str(&mut out, &self.origin);
        match &self.body {
            Body::Deliver {
                except,
                volatile,
                parts,
            } => {
                out.push(KIND_DELIVER);
                out.push(u8::from(*volatile));
                put_str(&mut out, except.as_deref().unwrap_or(""));
                out.push(parts.len().min(u8::MAX as usize) as u8);
                for part in parts {
                    let (tag, data) = match part {
                        Part::Text(b) => (0u8, b),
                        Part::Binary(b) => (1u8, b),
                    };
                    out.push(tag);
                    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
                    out.extend_from_slice(data);
                }
            }
            Body::Presence { user, change } => {
                out.push(KIND_PRESENCE);
                put_str(&mut out, user);
                let status = match change {
                    PresenceWire::Online => "+",
                    PresenceWire::Offline => "-",
                    PresenceWire::Status(s) => s.as_str(),
                };
                put_str(&mut out, status);
            }
            Body::DisconnectUser { user } => {
                out.push(KIND_DISCONNECT);
                put_str(&mut out, user);
            }
            Body::Membership { user, room, join } => {
                out.push(KIND_MEMBERSHIP);
                put_str(&mut out, user);
                put_str(&mut out, room);
                out.push(u8::from(*join));
            }
        }
        out
    }

    fn payload_len(&self) -> usize {
        match &self.body {
            Body::Deliver { parts, .. } => parts
                .iter()
                .map(|p| match p {
                    Part::Text(b) | Part::Binary(b) => b.len() + 5,
                })
                .sum(),
            _ => 0,
        }
    }

    /// Strict, bounded decode of a frame received from Redis.
    pub fn decode(bytes: &[u8]) -> Result<ClusterFrame, FrameError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge);
        }
        let mut r = Reader { buf: bytes };
        let trace = match r.take(3).map_err(|_| FrameError::Foreign)? {
            magic if magic == MAGIC => None,
            magic if magic == MAGIC_TRACED => {
                let mut binary = [0u8; BINARY_LEN];
                binary.copy_from_slice(r.take(BINARY_LEN)?);
                // Strict like every field: a zero id is invalid (and would not re-encode).
                Some(TraceParent::from_bytes(&binary).ok_or(FrameError::Invalid)?)
            }
            _ => return Err(FrameError::Foreign),
        };
        let sent_at_micros = r.u64()?;
        let origin = r.string()?;
        if origin.is_empty() {
            return Err(FrameError::Invalid);
        }
        let body = match r.u8()? {
            KIND_DELIVER => {
                let volatile = r.flag()?;
                let except = Some(r.string()?).filter(|s| !s.is_empty());
                let count = r.u8()? as usize;
                if count == 0 || count > MAX_PARTS {
                    return Err(FrameError::Invalid);
                }
                let mut parts = Vec::with_capacity(count);
                for _ in 0..count {
                    let tag = r.u8()?;
                    let len = r.u32()? as usize;
                    let data = r.take(len)?;
                    parts.push(match tag {
                        0 => {
                            std::str::from_utf8(data).map_err(|_| FrameError::Utf8)?;
                            Part::Text(Bytes::copy_from_slice(data))
                        }
                        1 => Part::Binary(Bytes::copy_from_slice(data)),
                        _ => return Err(FrameError::Invalid),
                    });
                }
                Body::Deliver {
                    except,
                    volatile,
                    parts,
                }
            }
            KIND_PRESENCE => {
                let user = r.string()?;
                let change = match r.string()?.as_str() {
                    "+" => PresenceWire::Online,
                    "-" => PresenceWire::Offline,
                    s @ ("online" | "away") => PresenceWire::Status(s.to_string()),
                    _ => return Err(FrameError::Invalid),
                };
                Body::Presence { user, change }
            }
            KIND_DISCONNECT => Body::DisconnectUser { user: r.string()? },
            KIND_MEMBERSHIP => Body::Membership {
                user: r.string()?,
                room: r.string()?,
                join: r.flag()?,
            },
            _ => return Err(FrameError::Invalid),
        };
        if !r.buf.is_empty() {
            return Err(FrameError::Length);
        }
        Ok(ClusterFrame {
            origin,
            sent_at_micros,
            trace,
            body,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if n > self.buf.len() {
            return Err(FrameError::Length);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn flag(&mut self) -> Result<bool, FrameError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FrameError::Invalid),
        }
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self) -> Result<String, FrameError> {
        let b = self.take(2)?;
        let len = u16::from_be_bytes([b[0], b[1]]) as usize;
        if len > MAX_FIELD {
            return Err(FrameError::Invalid);
        }
        let data = self.take(len)?;
        String::from_utf8(data.to_vec()).map_err(|_| FrameError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver() -> ClusterFrame {
        ClusterFrame {
            origin: "node-1".into(),
            sent_at_micros: 1_700_000_000_000_000,
            trace: None,
            body: Body::Deliver {
                except: Some("sid123".into()),
                volatile: true,
                parts: vec![
                    Part::Text(Bytes::from_static(
                        b"451-[\"x\",{\"_placeholder\":true,\"num\":0}]",
                    )),
                    Part::Binary(Bytes::from_static(&[1, 2, 3])),
                ],
            },
        }
    }

    #[test]
    fn every_body_round_trips() {
        let frames = [
            deliver(),
            ClusterFrame {
                origin: "n".into(),
                sent_at_micros: 1,
                trace: None,
                body: Body::Presence {
                    user: "dave".into(),
                    change: PresenceWire::Status("away".into()),
                },
            },
            ClusterFrame {
                origin: "n".into(),
                sent_at_micros: 2,
                trace: None,
                body: Body::Presence {
                    user: "dave".into(),
                    change: PresenceWire::Offline,
                },
            },
            ClusterFrame {
                origin: "n".into(),
                sent_at_micros: 3,
                trace: None,
                body: Body::DisconnectUser { user: "eve".into() },
            },
            ClusterFrame {
                origin: "n".into(),
                sent_at_micros: 4,
                trace: None,
                body: Body::Membership {
                    user: "eve".into(),
                    room: "r".into(),
                    join: false,
                },
            },
        ];
        for frame in frames {
            assert_eq!(ClusterFrame::decode(&frame.encode()), Ok(frame));
        }
    }

    #[test]
    fn traced_frames_carry_the_trace_and_untraced_ones_keep_version_1() {
        let plain = deliver().encode();
        assert_eq!(&plain[..3], MAGIC);
        let trace = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let traced = ClusterFrame { trace, ..deliver() };
        let bytes = traced.encode();
        assert_eq!(&bytes[..3], MAGIC_TRACED);
        assert_eq!(bytes.len(), plain.len() + BINARY_LEN);
        assert_eq!(ClusterFrame::decode(&bytes), Ok(traced));
        for cut in 3..bytes.len() {
            assert!(ClusterFrame::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // An all-zero trace id is refused, like any invalid field.
        let mut zeroed = bytes.clone();
        zeroed[3..19].fill(0);
        assert_eq!(ClusterFrame::decode(&zeroed), Err(FrameError::Invalid));
    }

    #[test]
    fn foreign_truncated_padded_and_oversized_frames_are_refused() {
        assert_eq!(ClusterFrame::decode(b"hello"), Err(FrameError::Foreign));
        assert_eq!(ClusterFrame::decode(b""), Err(FrameError::Foreign));
        let bytes = deliver().encode();
        for cut in 3..bytes.len() {
            assert!(ClusterFrame::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(ClusterFrame::decode(&padded), Err(FrameError::Length));
        let mut huge = MAGIC.to_vec();
        huge.resize(MAX_FRAME_BYTES + 1, 0);
        assert_eq!(ClusterFrame::decode(&huge), Err(FrameError::TooLarge));
    }

    #[test]
    fn invalid_text_and_claimed_lengths_are_refused() {
        let mut frame = deliver();
        if let Body::Deliver { parts, .. } = &mut frame.body {
            parts[0] = Part::Text(Bytes::from_static(&[0xff, 0xfe]));
        }
        assert_eq!(ClusterFrame::decode(&frame.encode()), Err(FrameError::Utf8));
        // A part claiming 4 GB in a tiny frame fails on length, allocating nothing.
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&0u64.to_be_bytes());
        bytes.extend_from_slice(&[0, 1, b'n', KIND_DELIVER, 0, 0, 0, 1, 0]);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(ClusterFrame::decode(&bytes), Err(FrameError::Length));
    }

    #[test]
    fn recorded_frames_carry_their_offset_before_the_frame() {
        let frame = b"SB1rest";
        assert_eq!(split_recorded(frame), Ok((None, &frame[..])));
        let mut recorded = b"SR".to_vec();
        recorded.push(4);
        recorded.extend_from_slice(b"12-3");
        recorded.extend_from_slice(frame);
        assert_eq!(split_recorded(&recorded), Ok((Some("12-3"), &frame[..])));
        assert_eq!(split_recorded(b"SR"), Err(FrameError::Length));
        assert_eq!(split_recorded(b"SR\x09abc"), Err(FrameError::Length));
        assert_eq!(split_recorded(b"SR\x00abc"), Err(FrameError::Length));
    }
}
