//! The per-node SessionRegistry: indexes every live Session and delivers local fan-out.
//!
//! Sessions are created on the HTTP worker that accepted them (spreading them over the
//! workers' arbiters) and registered here before the handshake is answered, so a client's next
//! request always finds its session. A node runs the registry on its first HTTP worker's
//! arbiter ([`SessionRegistry::deferred`]): with one worker (a one-core pod, or a node pinned
//! to a core) a delivery never leaves that thread, and with more, only sessions on the other
//! workers pay a thread hop.
//!
//! Once a socket authenticates, the registry indexes it by user and room, and by the users it
//! watches for presence. A delivery is encoded once by the sender and the same frames go to
//! every target session. A socket already on its websocket when it authenticates hands the
//! registry its transport ([`DirectLink`]): single-frame deliveries are written straight into it
//! (one hop, not two through the Session), and the registry bumps the session's `sent` counter
//! (an atomic shared with it, for the connection log).
//!
//! In cluster mode the registry also tells the RedisBridge which channels the node needs (a
//! user's channel while it holds one of the user's sockets, a room's while it holds a member, a
//! watch channel while a local socket watches that user) and publishes every delivery, presence
//! change and control action to the target's channel, so other nodes serve their own sockets.

use std::collections::{HashMap as StdMap, HashSet as StdSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use actix::dev::channel::{AddressReceiver, channel};
use actix::prelude::*;
use serde_json::json;
use switchboard_protocol::socketio::Packet;

use bytestring::ByteString;
use switchboard_protocol::cluster::{Body, ClusterFrame, Part, PresenceWire};

use crate::bridge::{ClusterInbound, Publish, RedisBridge, RedisSettings, Subscribe, now_micros};
use crate::metrics::{MeteredAddr, metrics};
use crate::presence::{SocketPresence, Status, UserId};
use crate::session::{Congested, Maintenance, Push, ServerDisconnect, Session, SetRooms, Shutdown};
use crate::transport::{Outgoing, Sid, WsOut, WsOutbound};

/// The registry's maps use a fast seeded hash: it hashes a user or room name on every delivery.
type HashMap<K, V> = StdMap<K, V, foldhash::fast::RandomState>;
/// See [`HashMap`].
type HashSet<T> = StdSet<T, foldhash::fast::RandomState>;

/// Register a freshly started session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    /// Its id.
    pub sid: Sid,
    /// Its address.
    pub addr: MeteredAddr<Session>,
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
#[rtype(result = "Option<MeteredAddr<Session>>")]
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
    /// The public socket id.
    pub socket_id: String,
    /// The device id.
    pub device: String,
    /// The user.
    pub user: UserId,
    /// Rooms from the token.
    pub rooms: Vec<String>,
    /// Its websocket, when deliveries may be written into it directly.
    pub direct: Option<DirectLink>,
}

/// A session's websocket transport, written into directly by the registry.
pub struct DirectLink {
    /// The transport.
    pub out: WsOut,
    /// The session's count of pushed events (connection log).
    pub sent: Arc<AtomicU32>,
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
    /// The event name, for `socket_messages_sent_total{event_type}` (bounded label).
    pub event: &'static str,
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

/// A stage of this node's drain, applied to its local sessions only.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "usize")]
pub enum DrainLocal {
    /// Tell every socket `server:maintenance`.
    Maintenance,
    /// Tell every socket `server:shutdown {reconnect:true}` and close it.
    Shutdown,
}

/// Every authenticated socket on this node, for presence re-assertion.
#[derive(Message)]
#[rtype(result = "Vec<SocketPresence>")]
pub struct LiveSockets;

/// Connect the registry to the cluster (cluster mode only).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachBridge {
    /// This node's id (frame origin).
    pub node_id: String,
    /// Key and channel naming.
    pub settings: RedisSettings,
    /// The bridge.
    pub bridge: MeteredAddr<RedisBridge>,
}

struct ClusterLink {
    node_id: String,
    settings: RedisSettings,
    bridge: MeteredAddr<RedisBridge>,
}

impl ClusterLink {
    fn publish(&self, channel: String, body: Body) {
        let frame = ClusterFrame {
            origin: self.node_id.clone(),
            sent_at_micros: now_micros(),
            body,
        };
        self.bridge.do_send(Publish {
            channel,
            payload: frame.encode().into(),
        });
    }

    fn subscribe(&self, channel: String, on: bool) {
        self.bridge.do_send(Subscribe { channel, on });
    }

    fn channel_of(&self, target: &Target) -> String {
        match target {
            Target::User(user) => self.settings.user_channel(user),
            Target::Room(room) => self.settings.room_channel(room),
            Target::All => self.settings.broadcast_channel(),
        }
    }
}

struct Entry {
    addr: MeteredAddr<Session>,
    socket_id: String,
    device: String,
    user: Option<UserId>,
    rooms: HashSet<String>,
    watching: HashSet<String>,
    direct: Option<DirectLink>,
}

/// The per-node registry of sessions (see the module docs).
#[derive(Default)]
pub struct SessionRegistry {
    sessions: HashMap<Sid, Entry>,
    users: HashMap<String, HashSet<Sid>>,
    rooms: HashMap<String, HashSet<Sid>>,
    watchers: HashMap<String, HashSet<Sid>>,
    cluster: Option<ClusterLink>,
    /// (user, device) → when its last socket here left, to count reconnections.
    recent: HashMap<(String, String), std::time::Instant>,
    /// When `recent` is next swept of entries older than the window (on a disconnect).
    sweep_recent_at: Option<std::time::Instant>,
}

/// A socket of the same user and device within this long after a disconnect is a reconnection.
const RECONNECT_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Most recent disconnects remembered for that count (memory bound).
const MAX_RECENT: usize = 100_000;

/// Mailbox capacity: sessions deregister with `do_send`; HTTP handlers `send` and wait for room.
const MAILBOX: usize = 4096;

/// The mailbox of a registry not started yet; [`DeferredRegistry::start_here`] starts it.
pub struct DeferredRegistry(Mutex<Option<AddressReceiver<SessionRegistry>>>);

impl DeferredRegistry {
    /// Start the registry on the current arbiter, unless an earlier call started it.
    pub fn start_here(&self) {
        if let Some(rx) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Context::with_receiver(rx).run(SessionRegistry::default());
        }
    }
}

impl SessionRegistry {
    /// An address now and the registry later, on the arbiter that calls
    /// [`DeferredRegistry::start_here`] first; messages sent meanwhile wait in its mailbox.
    pub fn deferred() -> (Addr<Self>, Arc<DeferredRegistry>) {
        let (tx, rx) = channel(MAILBOX);
        (
            Addr::new(tx),
            Arc::new(DeferredRegistry(Mutex::new(Some(rx)))),
        )
    }

    /// Visit the local sessions a target addresses, without copying the index (hot path).
    fn each_target(&self, target: &Target, mut visit: impl FnMut(&Sid)) {
        match target {
            Target::User(user) => self.users.get(user).into_iter().flatten().for_each(visit),
            Target::Room(room) => self.rooms.get(room).into_iter().flatten().for_each(visit),
            Target::All => {
                for (sid, entry) in &self.sessions {
                    if entry.user.is_some() {
                        visit(sid);
                    }
                }
            }
        }
    }

    /// Hand `frames` to one session; true when they went straight to its websocket, which the
    /// caller counts as sent (one counter update per fan-out, not per socket).
    fn push(
        &self,
        sid: &Sid,
        frames: &Arc<[Outgoing]>,
        volatile: bool,
        event: &'static str,
    ) -> bool {
        let Some(entry) = self.sessions.get(sid) else {
            return false;
        };
        // Several frames (binary attachments) go through the Session: all or none may be queued.
        if let (Some(direct), [frame]) = (&entry.direct, &frames[..]) {
            match direct.out.try_send(WsOutbound::Frame(frame.clone())) {
                Ok(()) => {
                    direct.sent.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(SendError::Full(_)) if volatile => {
                    metrics().volatile_dropped.inc();
                }
                Err(SendError::Full(_)) => entry.addr.do_send(Congested),
                // The transport has stopped; its session is closing on its own.
                Err(SendError::Closed(_)) => {}
            }
            return false;
        }
        entry.addr.do_send(Push {
            frames: frames.clone(),
            volatile,
            event,
        });
        false
    }

    fn join(&mut self, sid: &Sid, room: &str) -> bool {
        let Some(entry) = self.sessions.get_mut(sid) else {
            return false;
        };
        if !entry.rooms.insert(room.to_string()) {
            return false;
        }
        if index_add(&mut self.rooms, room, sid)
            && let Some(c) = &self.cluster
        {
            c.subscribe(c.settings.room_channel(room), true);
        }
        true
    }

    fn leave(&mut self, sid: &Sid, room: &str) -> bool {
        let Some(entry) = self.sessions.get_mut(sid) else {
            return false;
        };
        if !entry.rooms.remove(room) {
            return false;
        }
        if remove_from(&mut self.rooms, room, sid)
            && let Some(c) = &self.cluster
        {
            c.subscribe(c.settings.room_channel(room), false);
        }
        true
    }

    /// Deliver to this node's sockets only.
    fn deliver_local(
        &self,
        target: &Target,
        frames: &Arc<[Outgoing]>,
        except: Option<&Sid>,
        volatile: bool,
        event: &'static str,
    ) {
        let mut sent = 0;
        self.each_target(target, |sid| {
            if except != Some(sid) && self.push(sid, frames, volatile, event) {
                sent += 1;
            }
        });
        crate::metrics::messages_sent(event, sent);
    }

    fn notify_watchers(&self, user: &str, change: PresenceChange) {
        let Some(watchers) = self.watchers.get(user) else {
            return;
        };
        let (event, data) = match change {
            PresenceChange::Online => ("friend:online", json!({"userId": user})),
            PresenceChange::Offline => ("friend:offline", json!({"userId": user})),
            PresenceChange::Status(status) => (
                "friend:status",
                json!({"userId": user, "status": status.as_str()}),
            ),
        };
        let frames = encode_event(event, data);
        let sent = watchers
            .iter()
            .filter(|sid| self.push(sid, &frames, false, event))
            .count();
        crate::metrics::messages_sent(event, sent as u64);
    }

    fn membership_local(&mut self, user: &str, room: &str, join: bool) -> usize {
        let sids = self.users.get(user).map(collect).unwrap_or_default();
        let mut changed = 0;
        for sid in &sids {
            let ok = if join {
                self.join(sid, room)
            } else {
                self.leave(sid, room)
            };
            if ok {
                changed += 1;
                if let Some(entry) = self.sessions.get(sid) {
                    entry.addr.do_send(SetRooms {
                        room: room.to_string(),
                        member: join,
                    });
                }
            }
        }
        changed
    }

    fn disconnect_local(&self, user: &str) -> usize {
        let sids = self.users.get(user).map(collect).unwrap_or_default();
        for sid in &sids {
            if let Some(entry) = self.sessions.get(sid) {
                entry.addr.do_send(ServerDisconnect);
            }
        }
        sids.len()
    }
}

fn collect(set: &HashSet<Sid>) -> Vec<Sid> {
    set.iter().cloned().collect()
}

/// Add `sid` under `key`; true when the key is new (first local member).
fn index_add(index: &mut HashMap<String, HashSet<Sid>>, key: &str, sid: &Sid) -> bool {
    match index.get_mut(key) {
        Some(set) => {
            set.insert(sid.clone());
            false
        }
        None => {
            index.insert(key.to_string(), HashSet::from_iter([sid.clone()]));
            true
        }
    }
}

/// Remove `sid` from `key`; true when that emptied the key (last local member gone).
fn remove_from(index: &mut HashMap<String, HashSet<Sid>>, key: &str, sid: &Sid) -> bool {
    if let Some(set) = index.get_mut(key) {
        set.remove(sid);
        if set.is_empty() {
            index.remove(key);
            return true;
        }
    }
    false
}

fn to_parts(frames: &[Outgoing]) -> Vec<Part> {
    frames
        .iter()
        .map(|f| match f {
            Outgoing::Text(s) => Part::Text(s.as_bytes().clone()),
            Outgoing::Binary(b) => Part::Binary(b.clone()),
        })
        .collect()
}

fn from_parts(parts: Vec<Part>) -> Option<Arc<[Outgoing]>> {
    parts
        .into_iter()
        .map(|p| match p {
            Part::Text(b) => ByteString::try_from(b).ok().map(Outgoing::Text),
            Part::Binary(b) => Some(Outgoing::Binary(b)),
        })
        .collect()
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
                socket_id: String::new(),
                device: String::new(),
                user: None,
                rooms: HashSet::default(),
                watching: HashSet::default(),
                direct: None,
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
            let now = std::time::Instant::now();
            // Swept once a window (so it holds at most two windows of disconnects), or when full.
            if self.recent.len() >= MAX_RECENT || self.sweep_recent_at.is_none_or(|at| now >= at) {
                self.recent
                    .retain(|_, at| now.duration_since(*at) < RECONNECT_WINDOW);
                self.sweep_recent_at = Some(now + RECONNECT_WINDOW);
            }
            if self.recent.len() < MAX_RECENT {
                self.recent
                    .insert((user.to_string(), entry.device.clone()), now);
            }
        }
        let mut gone = Vec::new();
        if let Some(user) = &entry.user
            && remove_from(&mut self.users, user, &msg.sid)
        {
            gone.push((ChannelKind::User, user.to_string()));
        }
        for room in &entry.rooms {
            if remove_from(&mut self.rooms, room, &msg.sid) {
                gone.push((ChannelKind::Room, room.clone()));
            }
        }
        for watched in &entry.watching {
            if remove_from(&mut self.watchers, watched, &msg.sid) {
                gone.push((ChannelKind::Watch, watched.clone()));
            }
        }
        if let Some(c) = &self.cluster {
            for (kind, name) in gone {
                c.subscribe(kind.channel(&c.settings, &name), false);
            }
        }
    }
}

impl Handler<Lookup> for SessionRegistry {
    type Result = Option<MeteredAddr<Session>>;

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
        if self
            .recent
            .remove(&(msg.user.to_string(), msg.device.clone()))
            .is_some_and(|at| at.elapsed() < RECONNECT_WINDOW)
        {
            crate::metrics::metrics().reconnections.inc();
        }
        entry.user = Some(msg.user.clone());
        entry.direct = msg.direct;
        entry.socket_id = msg.socket_id;
        entry.device = msg.device;
        if index_add(&mut self.users, &msg.user, &msg.sid)
            && let Some(c) = &self.cluster
        {
            c.subscribe(c.settings.user_channel(&msg.user), true);
        }
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
            let changed = if msg.watch {
                entry.watching.insert(user.clone());
                index_add(&mut self.watchers, &user, &msg.sid)
            } else {
                entry.watching.remove(&user);
                remove_from(&mut self.watchers, &user, &msg.sid)
            };
            if changed && let Some(c) = &self.cluster {
                c.subscribe(c.settings.watch_channel(&user), msg.watch);
            }
        }
    }
}

impl Handler<Deliver> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Context<Self>) {
        self.deliver_local(
            &msg.target,
            &msg.frames,
            msg.except.as_ref(),
            msg.volatile,
            msg.event,
        );
        if let Some(c) = &self.cluster {
            c.publish(
                c.channel_of(&msg.target),
                Body::Deliver {
                    except: msg.except.map(|s| s.to_string()),
                    volatile: msg.volatile,
                    parts: to_parts(&msg.frames),
                },
            );
        }
    }
}

impl Handler<PresenceChanged> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: PresenceChanged, _ctx: &mut Context<Self>) {
        self.notify_watchers(&msg.user, msg.change);
        if let Some(c) = &self.cluster {
            let change = match msg.change {
                PresenceChange::Online => PresenceWire::Online,
                PresenceChange::Offline => PresenceWire::Offline,
                PresenceChange::Status(s) => PresenceWire::Status(s.as_str().to_string()),
            };
            c.publish(
                c.settings.watch_channel(&msg.user),
                Body::Presence {
                    user: msg.user.to_string(),
                    change,
                },
            );
        }
    }
}

impl Handler<RoomMembership> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, msg: RoomMembership, _ctx: &mut Context<Self>) -> usize {
        let changed = self.membership_local(&msg.user, &msg.room, msg.join);
        if let Some(c) = &self.cluster {
            c.publish(
                c.settings.user_channel(&msg.user),
                Body::Membership {
                    user: msg.user,
                    room: msg.room,
                    join: msg.join,
                },
            );
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
        let n = self.disconnect_local(&msg.user);
        if let Some(c) = &self.cluster {
            c.publish(
                c.settings.user_channel(&msg.user),
                Body::DisconnectUser { user: msg.user },
            );
        }
        n
    }
}

impl Handler<DrainLocal> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, msg: DrainLocal, _ctx: &mut Context<Self>) -> usize {
        for entry in self.sessions.values() {
            match msg {
                DrainLocal::Maintenance => entry.addr.do_send(Maintenance),
                DrainLocal::Shutdown => entry.addr.do_send(Shutdown),
            }
        }
        self.sessions.len()
    }
}

impl Handler<LiveSockets> for SessionRegistry {
    type Result = MessageResult<LiveSockets>;

    fn handle(&mut self, _msg: LiveSockets, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.sessions
                .values()
                .filter_map(|e| {
                    Some(SocketPresence {
                        user: e.user.clone()?,
                        socket: e.socket_id.clone(),
                        device: e.device.clone(),
                    })
                })
                .collect(),
        )
    }
}

impl Handler<AttachBridge> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: AttachBridge, _ctx: &mut Context<Self>) {
        let link = ClusterLink {
            node_id: msg.node_id,
            settings: msg.settings,
            bridge: msg.bridge,
        };
        // Channels the node already needs (sockets that connected before the bridge).
        for user in self.users.keys() {
            link.subscribe(link.settings.user_channel(user), true);
        }
        for room in self.rooms.keys() {
            link.subscribe(link.settings.room_channel(room), true);
        }
        for user in self.watchers.keys() {
            link.subscribe(link.settings.watch_channel(user), true);
        }
        self.cluster = Some(link);
    }
}

/// Which family a channel belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelKind {
    User,
    Room,
    Watch,
}

impl ChannelKind {
    fn channel(self, settings: &RedisSettings, name: &str) -> String {
        match self {
            ChannelKind::User => settings.user_channel(name),
            ChannelKind::Room => settings.room_channel(name),
            ChannelKind::Watch => settings.watch_channel(name),
        }
    }
}

/// What a channel name addresses.
enum Addressed {
    Target(Target),
    Watch(String),
    Node,
}

fn parse_channel(prefix: &str, channel: &str) -> Option<Addressed> {
    let name = channel.strip_prefix(prefix)?.strip_prefix("sb:")?;
    if let Some(user) = name.strip_prefix("user:") {
        Some(Addressed::Target(Target::User(user.to_string())))
    } else if let Some(room) = name.strip_prefix("room:") {
        Some(Addressed::Target(Target::Room(room.to_string())))
    } else if let Some(user) = name.strip_prefix("watch:") {
        Some(Addressed::Watch(user.to_string()))
    } else if name == "broadcast" {
        Some(Addressed::Target(Target::All))
    } else if name.starts_with("node:") {
        Some(Addressed::Node)
    } else {
        None
    }
}

impl Handler<ClusterInbound> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: ClusterInbound, _ctx: &mut Context<Self>) {
        let Some(c) = &self.cluster else { return };
        let Some(addressed) = parse_channel(&c.settings.prefix, &msg.channel) else {
            return;
        };
        // Only the actions that make sense on a channel are honoured; anything else is dropped.
        match (addressed, msg.frame.body) {
            (
                Addressed::Target(target),
                Body::Deliver {
                    except,
                    volatile,
                    parts,
                },
            ) => {
                let Some(frames) = from_parts(parts) else {
                    return;
                };
                let except = except.map(|s| Sid::from(s.as_str()));
                self.deliver_local(&target, &frames, except.as_ref(), volatile, "other");
            }
            (Addressed::Watch(user), Body::Presence { user: who, change }) if user == who => {
                let change = match change {
                    PresenceWire::Online => PresenceChange::Online,
                    PresenceWire::Offline => PresenceChange::Offline,
                    PresenceWire::Status(s) => match Status::settable(&s) {
                        Some(status) => PresenceChange::Status(status),
                        None => return,
                    },
                };
                self.notify_watchers(&user, change);
            }
            (Addressed::Target(Target::User(user)), Body::DisconnectUser { user: who })
                if user == who =>
            {
                self.disconnect_local(&user);
            }
            (
                Addressed::Target(Target::User(user)),
                Body::Membership {
                    user: who,
                    room,
                    join,
                },
            ) if user == who => {
                self.membership_local(&user, &room, join);
            }
            _ => {}
        }
    }
}

impl crate::metrics::MeteredActor for SessionRegistry {
    const NAME: &'static str = "session_registry";
}

crate::metered!(SessionRegistry: Register, Unregister, Lookup, CountSessions, Authenticated, Watch,
    Deliver, PresenceChanged, RoomMembership, MessageResult(RoomMembers), DisconnectUser,
    MessageResult(LiveSockets), AttachBridge, ClusterInbound, DrainLocal);
