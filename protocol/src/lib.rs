//! Engine.IO v4 and Socket.IO v5 codec: text and bytes in, typed packets out.
//!
//! The crate is pure: it never performs I/O, never panics on peer input, and never
//! allocates in proportion to a number the peer merely claims. Transports (HTTP
//! long-polling, websockets) and session state live in the crates that use it.
//!
//! # Layout
//!
//! * [`engineio`] — Engine.IO v4 packets ([`engineio::Packet`]), the websocket frame
//!   they travel in ([`engineio::Frame`]), polling payloads ([`engineio::payload`]),
//!   the handshake and the standard error codes; [`engineio::v3`] carries the same
//!   packets in the framings of Engine.IO v3 (Socket.IO 1.x/2.x clients).
//! * [`socketio`] — Socket.IO v5 packets carried inside Engine.IO messages, with
//!   strict validation and reassembly of binary attachments
//!   ([`socketio::PartialPacket`]).
//! * [`cluster`] — frames between nodes; [`trace`] — the W3C `traceparent` they and
//!   clients' events may carry.
//!
//! Socket.IO sits on top of Engine.IO: a Socket.IO packet encodes to one Engine.IO
//! message plus one Engine.IO binary message per attachment
//! ([`socketio::Packet::to_frames`]).

pub mod binary;
pub mod cluster;
pub mod engineio;
pub mod events;
pub mod offset;
pub mod socketio;
pub mod trace;

pub use bytes::Bytes;
