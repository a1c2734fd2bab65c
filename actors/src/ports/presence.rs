//! What the Presence actor accepts: sockets coming and going, statuses, and queries.

use actix::prelude::*;
use serde::Serialize;

use crate::ids::{Room, SocketId, UserId};
use crate::store::StoreError;

/// A user's presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// At least one socket connected, active.
    Online,
    /// At least one socket connected, user set away.
    Away,
    /// No socket connected.
    Offline,
}

impl Status {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Offline => "offline",
        }
    }

    /// Parse a status a client may set (`online` or `away`).
    pub fn settable(s: &str) -> Option<Status> {
        match s {
            "online" => Some(Status::Online),
            "away" => Some(Status::Away),
            _ => None,
        }
    }
}

/// One live socket as presence knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPresence {
    /// Its user.
    pub user: UserId,
    /// The public socket id.
    pub socket: SocketId,
    /// The device id.
    pub device: String,
    /// The rooms it is in (counted by `room:presence` cluster-wide).
    pub rooms: Vec<Room>,
}

/// One page of online users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlinePage {
    /// How many users are online in all.
    pub count: usize,
    /// This page, ascending by id.
    pub users: Vec<String>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A socket connected; answers once presence has it (or why it could not).
#[derive(Message)]
#[rtype(result = "Result<Admit, StoreError>")]
pub struct PresenceConnect {
    /// The socket.
    pub socket: SocketPresence,
    /// Most sockets its user may have across the cluster (0: no limit).
    pub max_sockets: usize,
}

/// Whether presence took a connecting socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// It is in.
    Yes,
    /// Its user already has the most sockets allowed.
    TooManySockets,
}

/// A socket of `user` is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PresenceDisconnect {
    /// The user.
    pub user: UserId,
    /// The public socket id.
    pub socket: SocketId,
}

/// A user sets their status.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct SetStatus {
    /// The user.
    pub user: UserId,
    /// The new status.
    pub status: Status,
}

/// Statuses of several users, in the order asked.
#[derive(Message)]
#[rtype(result = "Result<Vec<(UserId, Status)>, StoreError>")]
pub struct QueryStatuses {
    /// Who to look up.
    pub users: Vec<UserId>,
}

/// A page of online users.
#[derive(Message)]
#[rtype(result = "Result<OnlinePage, StoreError>")]
pub struct OnlineUsers {
    /// Page size.
    pub limit: usize,
    /// Start after this id.
    pub cursor: Option<String>,
}

/// A socket joined or left rooms after it connected.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomsChanged {
    /// Its user.
    pub user: UserId,
    /// The socket.
    pub socket: SocketId,
    /// The rooms.
    pub rooms: Vec<Room>,
    /// Joined (true) or left.
    pub join: bool,
}

/// The online members of a room, cluster-wide: distinct users (sorted) and socket count.
#[derive(Message)]
#[rtype(result = "Result<(Vec<UserId>, usize), StoreError>")]
pub struct RoomOnline {
    /// The room.
    pub room: Room,
}

/// The node is leaving the cluster: remove what it registered (after its sockets closed).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Leave;
