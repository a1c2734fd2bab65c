//! What the Recovery actor accepts: a socket's state saved for the recovery window and taken
//! back once, and the recoverable events a reconnecting socket missed.

use std::sync::Arc;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use switchboard_protocol::offset::Offset;

use crate::ids::SocketId;
use crate::keys::Channel;
use crate::store::StoreError;
use crate::transport::Outgoing;

/// What a socket had, kept under its private `pid` for the recovery window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    /// Its user: a recovery must present a token for the same user.
    pub user: String,
    /// Its socket id, which the recovered socket keeps.
    pub socket: String,
    /// Its rooms.
    pub rooms: Vec<String>,
    /// The users whose presence it watched.
    pub watching: Vec<String>,
}

/// A recoverable event as recorded: its offset and its frames (without the offset argument).
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Where it is in the order of recoverable events.
    pub offset: Offset,
    /// The encoded event.
    pub frames: Arc<[Outgoing]>,
    /// A socket it was not for (the sender's own, for `message:sent`).
    pub except: Option<SocketId>,
}

/// Keep a socket's state for `ttl_secs`, under `pid` (replacing what was kept before).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaveSession {
    /// The private recovery id.
    pub pid: String,
    /// The state.
    pub session: SavedSession,
    /// How long to keep it.
    pub ttl_secs: u64,
}

/// Take a kept state of `user` (at most once: it is removed); another user's is left alone.
#[derive(Message)]
#[rtype(result = "Result<Option<SavedSession>, StoreError>")]
pub struct TakeSession {
    /// The private recovery id the client sent.
    pub pid: String,
    /// The user the token names.
    pub user: String,
}

/// Single-node mode: record a recoverable event of `stream` (the registry sends these in the
/// order it delivers).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record {
    /// The channel it went to.
    pub stream: Channel,
    /// The event.
    pub event: Recorded,
    /// Whether a connected socket of this node got it (a room or watch event nobody got and
    /// no kept session reads is not recorded).
    pub live: bool,
}

/// The recoverable events of `streams` after `after`, in order; `None` when some of them are
/// gone (trimmed by time or length), so the socket cannot be recovered whole.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<Recorded>>, StoreError>")]
pub struct Replay {
    /// The channels the socket listened to.
    pub streams: Vec<Channel>,
    /// The last offset the client saw.
    pub after: Offset,
}
