//! The per-node SessionRegistry: indexes every live Session and delivers local fan-out.
//!
//! Sessions are created on the HTTP worker that accepted them (spreading them over the
//! workers' arbiters) and registered here before the handshake is answered, so a client's next
//! request always finds its session. Once a socket authenticates, the registry indexes it by
//! user and room, and by the users it watches for presence. A delivery is encoded once by the
//! sender and the same frames go to every target session.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use serde_json::json;
use switchboard_protocol::socketio::Packet;

use crate::presence::{Status, UserId};
use crate::session::{Push, ServerDisconnect, Session, SetRooms};
use crate::transport::{Outgoing, Sid};

/// Register a freshly started session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    /// Its id.
    pub sid: Sid,
    /// Its address.
    pub addr: Addr<Session>,
}

/// A session has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    /// Its id.
    pub sid: Sid,
}

/// Find a session by sid.
#[derive(Message)]
#[rtype(result = "Option<Addr<Session>>")]
pub struct Lookup {
    /// The id the client sent.
    pub sid: Sid,
}

/// How many sessions are live on this node.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountSessions;

/// A session's socket authenticated as `user` and joined `rooms`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Authenticated {
    /// The session.
    pub sid: Sid,
    /// The user.
    pub user: UserId,
    /// Rooms from the token.
    pub rooms: Vec<String>,
}

/// Start or stop watching users' presence for a session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch {
    /// The watching session.
    pub sid: Sid,
    /// The watched users.
    pub users: Vec<String>,
    /// True to watch, false to stop.
    pub watch: bool,
}

/// Who a delivery is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every socket of a user.
    User(String),
    /// Every member socket of a room.
    Room(String),
    /// Every authenticated socket.
    All,
}

/// Deliver already-encoded frames to the local sockets of `target`.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Deliver {
    /// Who gets it.
    pub target: Target,
    /// The encoded packet (one text frame plus any binary attachments).
    pub frames: Arc<[Outgoing]>,
    /// A session to leave out (the sender's own socket).
    pub except: Option<Sid>,
    /// Whether it may be dropped for a congested client.
    pub volatile: bool,
}

/// What changed about a user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    /// The user's first socket connected.
    Online,
    /// The user's last socket left.
    Offline,
    /// The user set a status.
    Status(Status),
}

/// A presence transition to tell the user's watchers about.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PresenceChanged {
    /// Whose presence.
    pub user: UserId,
    /// What changed.
    pub change: PresenceChange,
}

/// Add (or remove) every local socket of `user` to (from) `room`; answers how many sockets.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RoomMembership {
    /// The user.
    pub user: String,
    /// The room.
    pub room: String,
    /// True to join, false to leave.
    pub join: bool,
}

/// The users and socket count of a room on this node.
#[derive(Message)]
#[rtype(result = "(Vec<String>, usize)")]
pub struct RoomMembers {
    /// The room.
    pub room: String,
}

/// Disconnect every local socket of a user; answers how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct DisconnectUser {
    /// The user.
    pub user: String,
}

struct Entry {
    addr: Addr<Session>,
    user: Option<UserId>,
    rooms: HashSet<String>,
    watching: HashSet<String>,
}

/// The per-node registry of sessions (see the module docs).
#[derive(Default)]
pub struct SessionRegistry {
    sessions: HashMap<Sid, Entry>,
    users: HashMap<String, HashSet<Sid>>,
    rooms: HashMap<String, HashSet<Sid>>,
    watchers: HashMap<String, HashSet<Sid>>,
}

impl SessionRegistry {
    /// Start the registry on the current arbiter.
    pub fn start_default() -> Addr<Self> {
        SessionRegistry::create(|ctx| {
            // Sessions deregister with `do_send`; HTTP handlers `send` and wait for room.
            ctx.set_mailbox_capacity(4096);
            SessionRegistry::default()
        })
    }

    fn sids_of(&self, target: &Target) -> Vec<Sid> {
        match target {
            Target::User(user) => self.users.get(user).map(collect).unwrap_or_default(),
            Target::Room(room) => self.rooms.get(room).map(collect).unwrap_or_default(),
            Target::All => self
                .sessions
                .iter()
                .filter(|(_, e)| e.user.is_some())
                .map(|(sid, _)| sid.clone())
                .collect(),
        }
    }

    fn push(&self, sid: &Sid, frames: &Arc<[Outgoing]>, volatile: bool) {
        if let Some(entry) = self.sessions.get(sid) {
            entry.addr.do_send(Push {
                frames: frames.clone(),
                volatile,
            });
        }
    }

    fn join(&mut self, sid: &Sid, room: &str) -> bool {
        let Some(entry) = self.sessions.get_mut(sid) else {
            return false;
        };
        if !entry.rooms.insert(room.to_string()) {
            return false;
        }
        self.rooms
            .entry(room.to_string())
            .or_default()
            .insert(sid.clone());
        true
    }

    fn leave(&mut self, sid: &Sid, room: &str) -> bool {
        let Some(entry) = self.sessions.get_mut(sid) else {
            return false;
        };
        if !entry.rooms.remove(room) {
            return false;
        }
        remove_from(&mut self.rooms, room, sid);
        true
    }
}

fn collect(set: &HashSet<Sid>) -> Vec<Sid> {
    set.iter().cloned().collect()
}

fn remove_from(index: &mut HashMap<String, HashSet<Sid>>, key: &str, sid: &Sid) {
    if let Some(set) = index.get_mut(key) {
        set.remove(sid);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// Encode `[event, data]` on `/` once, as frames ready to share.
pub fn encode_event(event: &str, data: serde_json::Value) -> Arc<[Outgoing]> {
    Packet::event("/", event, vec![data])
        .to_frames()
        .into_iter()
        .map(Outgoing::from)
        .collect()
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;
}

impl Handler<Register> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Register, _ctx: &mut Context<Self>) {
        self.sessions.insert(
            msg.sid,
            Entry {
                addr: msg.addr,
                user: None,
                rooms: HashSet::new(),
                watching: HashSet::new(),
            },
        );
    }
}

impl Handler<Unregister> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _ctx: &mut Context<Self>) {
        let Some(entry) = self.sessions.remove(&msg.sid) else {
            return;
        };
        if let Some(user) = &entry.user {
            remove_from(&mut self.users, user, &msg.sid);
        }
        for room in &entry.rooms {
            remove_from(&mut self.rooms, room, &msg.sid);
        }
        for watched in &entry.watching {
            remove_from(&mut self.watchers, watched, &msg.sid);
        }
    }
}

impl Handler<Lookup> for SessionRegistry {
    type Result = Option<Addr<Session>>;

    fn handle(&mut self, msg: Lookup, _ctx: &mut Context<Self>) -> Self::Result {
        self.sessions
            .get(&msg.sid)
            .map(|e| &e.addr)
            .filter(|addr| addr.connected())
            .cloned()
    }
}

impl Handler<CountSessions> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, _msg: CountSessions, _ctx: &mut Context<Self>) -> usize {
        self.sessions.len()
    }
}

impl Handler<Authenticated> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Authenticated, _ctx: &mut Context<Self>) {
        let Some(entry) = self.sessions.get_mut(&msg.sid) else {
            return;
        };
        entry.user = Some(msg.user.clone());
        self.users
            .entry(msg.user.to_string())
            .or_default()
            .insert(msg.sid.clone());
        for room in &msg.rooms {
            self.join(&msg.sid, room);
        }
    }
}

impl Handler<Watch> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Watch, _ctx: &mut Context<Self>) {
        let Some(entry) = self.sessions.get_mut(&msg.sid) else {
            return;
        };
        for user in msg.users {
            if msg.watch {
                entry.watching.insert(user.clone());
                self.watchers
                    .entry(user)
                    .or_default()
                    .insert(msg.sid.clone());
            } else {
                entry.watching.remove(&user);
                remove_from(&mut self.watchers, &user, &msg.sid);
            }
        }
    }
}

impl Handler<Deliver> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Context<Self>) {
        for sid in self.sids_of(&msg.target) {
            if msg.except.as_ref() != Some(&sid) {
                self.push(&sid, &msg.frames, msg.volatile);
            }
        }
    }
}

impl Handler<PresenceChanged> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: PresenceChanged, _ctx: &mut Context<Self>) {
        let Some(watchers) = self.watchers.get(&*msg.user) else {
            return;
        };
        let frames = match msg.change {
            PresenceChange::Online => encode_event("friend:online", json!({"userId": &*msg.user})),
            PresenceChange::Offline => {
                encode_event("friend:offline", json!({"userId": &*msg.user}))
            }
            PresenceChange::Status(status) => encode_event(
                "friend:status",
                json!({"userId": &*msg.user, "status": status.as_str()}),
            ),
        };
        for sid in watchers {
            self.push(sid, &frames, false);
        }
    }
}

impl Handler<RoomMembership> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, msg: RoomMembership, _ctx: &mut Context<Self>) -> usize {
        let sids = self.users.get(&msg.user).map(collect).unwrap_or_default();
        let mut changed = 0;
        for sid in &sids {
            let ok = if msg.join {
                self.join(sid, &msg.room)
            } else {
                self.leave(sid, &msg.room)
            };
            if ok {
                changed += 1;
                if let Some(entry) = self.sessions.get(sid) {
                    entry.addr.do_send(SetRooms {
                        room: msg.room.clone(),
                        member: msg.join,
                    });
                }
            }
        }
        changed
    }
}

impl Handler<RoomMembers> for SessionRegistry {
    type Result = MessageResult<RoomMembers>;

    fn handle(&mut self, msg: RoomMembers, _ctx: &mut Context<Self>) -> Self::Result {
        let sids = self.rooms.get(&msg.room);
        let mut users: Vec<String> = sids
            .into_iter()
            .flatten()
            .filter_map(|sid| self.sessions.get(sid)?.user.as_ref().map(|u| u.to_string()))
            .collect();
        users.sort();
        users.dedup();
        MessageResult((users, sids.map_or(0, HashSet::len)))
    }
}

impl Handler<DisconnectUser> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, msg: DisconnectUser, _ctx: &mut Context<Self>) -> usize {
        let sids = self.users.get(&msg.user).map(collect).unwrap_or_default();
        for sid in &sids {
            if let Some(entry) = self.sessions.get(sid) {
                entry.addr.do_send(ServerDisconnect);
            }
        }
        sids.len()
    }
}
