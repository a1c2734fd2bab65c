//! What a Session accepts: everything reaches it as one [`ToSession`] through its
//! [`SessionPort`], from the transports (polling handlers, the websocket task) and from the
//! registry (deliveries and commands).
//!
//! One enum rather than one message type per sender: the registry and the transports hold a
//! session's port for its whole life, and one port per session costs one allocation where a
//! `Recipient` per message type would cost one each.

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use switchboard_protocol::engineio;
use switchboard_protocol::offset::Offset;

use super::Port;
use crate::ids::Room;
use crate::transport::{Outgoing, WsOut};

/// The handle the registry and the transports hold for one session.
pub type SessionPort = Port<ToSession>;

/// Everything a Session is told. Transport messages answer whether the request was
/// acceptable; the others always answer `Ok`.
#[derive(Message)]
#[rtype(result = "Result<(), PollError>")]
pub enum ToSession {
    /// A websocket transport attaches (fresh connection or upgrade).
    AttachWebSocket(AttachWebSocket),
    /// One decoded Engine.IO packet from a websocket.
    WsInbound(WsInbound),
    /// A websocket is gone.
    WsClosed(WsClosed),
    /// A polling GET: the session answers on `reply` when it has packets.
    PollGet(PollGet),
    /// A polling POST starts (checked for overlap before the body is read).
    PollPostStart,
    /// The POST body, or why it could not be read.
    PollPostBody(PollPostBody),
    /// Deliver already-encoded frames (from the registry's fan-out).
    Push(Push),
    /// A delivery written straight into this socket's websocket found its queue full: the
    /// client is too slow for a message that may not be dropped.
    Congested,
    /// The application disconnects this socket (server API).
    Disconnect,
    /// The server API changed this socket's membership of a room.
    SetRooms(SetRooms),
    /// The node is about to drain: say `server:maintenance`.
    Maintenance,
    /// The node is draining: say `server:shutdown {reconnect:true}` and close (websocket 1001),
    /// so the client reconnects to another node.
    Shutdown,
}

impl ToSession {
    /// Every variant's label, in [`ToSession::index`] order.
    pub const LABELS: [&'static str; 12] = [
        "AttachWebSocket",
        "WsInbound",
        "WsClosed",
        "PollGet",
        "PollPostStart",
        "PollPostBody",
        "Push",
        "Congested",
        "Disconnect",
        "SetRooms",
        "Maintenance",
        "Shutdown",
    ];

    /// The variant's position in [`ToSession::LABELS`] (its `actor_messages_total` label).
    pub fn index(&self) -> usize {
        match self {
            ToSession::AttachWebSocket(_) => 0,
            ToSession::WsInbound(_) => 1,
            ToSession::WsClosed(_) => 2,
            ToSession::PollGet(_) => 3,
            ToSession::PollPostStart => 4,
            ToSession::PollPostBody(_) => 5,
            ToSession::Push(_) => 6,
            ToSession::Congested => 7,
            ToSession::Disconnect => 8,
            ToSession::SetRooms(_) => 9,
            ToSession::Maintenance => 10,
            ToSession::Shutdown => 11,
        }
    }
}

/// Attach this websocket (fresh connection or upgrade).
pub struct AttachWebSocket {
    /// The transport's id (see [`crate::transport::next_transport_id`]).
    pub id: u64,
    /// Where the session writes frames (bounded with `try_send`; overflow means a slow client).
    pub out: WsOut,
    /// True when this websocket upgrades an existing polling session.
    pub upgrade: bool,
}

/// One decoded Engine.IO packet from the client.
#[derive(Debug)]
pub struct WsInbound {
    /// The transport's id.
    pub id: u64,
    /// The packet.
    pub packet: engineio::Packet,
}

/// The websocket is gone.
#[derive(Debug)]
pub struct WsClosed {
    /// The transport's id.
    pub id: u64,
    /// Whether it closed because of an error (protocol error) rather than a clean close.
    pub error: bool,
}

/// A polling GET; the session answers on `reply` when it has packets.
pub struct PollGet {
    /// The encoded payload body, sent once.
    pub reply: tokio::sync::oneshot::Sender<PollBody>,
}

/// The answer to a polling GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollBody {
    /// The encoded payload.
    pub body: Vec<u8>,
    /// Whether it is in Engine.IO v3's binary framing (`application/octet-stream`) rather
    /// than text (`text/plain; charset=UTF-8`).
    pub binary: bool,
}

impl PollBody {
    /// A text payload.
    pub fn text(body: Vec<u8>) -> Self {
        PollBody {
            body,
            binary: false,
        }
    }
}

/// The POST body, or why it could not be read.
pub struct PollPostBody {
    /// The body, or the error that ended reading it.
    pub body: Result<Bytes, PollError>,
    /// Whether it came as `application/octet-stream` (Engine.IO v3's binary framing).
    pub binary: bool,
}

/// A polling request that broke the rules; maps to an Engine.IO error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// A second GET while one is pending, or a second POST while one is in flight.
    #[error("overlapping polling request")]
    Overlap,
    /// The session no longer uses polling (upgraded to websocket) or never did.
    #[error("session does not use polling")]
    WrongTransport,
    /// The body did not decode as an Engine.IO payload.
    #[error("malformed polling payload")]
    BadPayload,
    /// The body exceeded maxPayload.
    #[error("payload too large")]
    TooLarge,
}

/// Deliver `[event, data]` (already encoded, shared by every recipient) to this socket.
pub struct Push {
    /// Encoded frames shared by every recipient.
    pub frames: Arc<[Outgoing]>,
    /// Whether it may be dropped for a congested client.
    pub volatile: bool,
    /// The event name (metrics label).
    pub event: &'static str,
    /// A recoverable event's offset (already in the frames), so a recovering socket can tell
    /// what its replay already covered.
    pub offset: Option<Offset>,
}

/// A room membership change for this socket.
pub struct SetRooms {
    /// The room.
    pub room: Room,
    /// Member or not.
    pub member: bool,
}
