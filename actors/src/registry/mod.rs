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
//! registry its transport ([`DirectLink`](crate::ports::registry::DirectLink)): single-frame deliveries are written straight into it
//! (one hop, not two through the Session), and the registry bumps the session's `sent` counter
//! (an atomic shared with it, for the connection log) — the one sanctioned shared handle.
//!
//! In cluster mode the registry also tells the RedisBridge which channels the node needs (a
//! user's channel while it holds one of the user's sockets, a room's while it holds a member, a
//! watch channel while a local socket watches that user) and publishes every delivery, presence
//! change and control action to the target's channel, so other nodes serve their own sockets.
//!
//! # Layout
//! - this file: the actor shell (deliveries, cluster frames, drain).
//! - [`index`]: the pure core (who is here, which channels that needs).
//! - [`crate::ports::registry`]: the messages it accepts.

pub mod index;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actix::dev::channel::{AddressReceiver, channel};
use actix::prelude::*;
use bytestring::ByteString;
use serde_json::json;
use switchboard_protocol::cluster::{Body, ClusterFrame, Part, PresenceWire};
use switchboard_protocol::events::EventName;

use crate::ids::{NodeId, Room, Sid, UserId};
use crate::keys::{Channel, Keys};
use crate::metrics::{MeteredActor, messages_sent, metrics};
use crate::ports::Port;
use crate::ports::bridge::{Publish, Subscribe};
use crate::ports::presence::{RoomsChanged, Status};
use crate::ports::registry::{
    AttachCluster, Authenticated, ClusterInbound, CountSessions, Deliver, DisconnectUser,
    DrainLocal, LiveSockets, Lookup, PresenceChange, PresenceChanged, Register, RoomMembership,
    Target, Unregister, Watch,
};
use crate::ports::registry::{AttachPresence, JoinRoom};
use crate::ports::session::{Push, SessionPort, SetRooms, ToSession};
use crate::store::now_micros;
use crate::transport::{Outgoing, WsOutbound, encode_event};
use index::{Entry, Index, Socket};

/// Mailbox capacity: sessions deregister with `do_send`; HTTP handlers `send` and wait for room.
const MAILBOX: usize = 4096;

/// The registry's link to the other nodes (cluster mode).
struct ClusterLink {
    node_id: NodeId,
    keys: Keys,
    publish: Port<Publish>,
    subscribe: Port<Subscribe>,
}

impl ClusterLink {
    fn publish(&self, channel: &Channel, body: Body) {
        let frame = ClusterFrame {
            origin: self.node_id.to_string(),
            sent_at_micros: now_micros(),
            body,
        };
        self.publish.do_send(Publish {
            channel: self.keys.channel(channel),
            payload: frame.encode().into(),
        });
    }

    fn need(&self, channel: &Channel, on: bool) {
        self.subscribe.do_send(Subscribe {
            channel: self.keys.channel(channel),
            on,
        });
    }
}

/// The per-node registry of sessions (see the module docs).
#[derive(Default)]
pub struct SessionRegistry {
    index: Index<SessionPort>,
    cluster: Option<ClusterLink>,
    /// Where room changes of connected sockets go (Presence).
    rooms: Option<Port<RoomsChanged>>,
}

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

    /// Tell the bridge about channels whose need changed.
    fn need(&self, channels: impl IntoIterator<Item = (Channel, bool)>) {
        if let Some(c) = &self.cluster {
            for (channel, on) in channels {
                c.need(&channel, on);
            }
        }
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
        self.index.each_target(target, |sid, entry| {
            if except != Some(sid) && push(entry, frames, volatile, event) {
                sent += 1;
            }
        });
        messages_sent(event, sent);
    }

    fn notify_watchers(&self, user: &UserId, change: PresenceChange) {
        let (event, data) = match change {
            PresenceChange::Online => (EventName::FriendOnline, json!({"userId": user})),
            PresenceChange::Offline => (EventName::FriendOffline, json!({"userId": user})),
            PresenceChange::Status(status) => (
                EventName::FriendStatus,
                json!({"userId": user, "status": status.as_str()}),
            ),
        };
        let event = event.as_str();
        let mut frames = None;
        let mut sent = 0;
        self.index.each_watcher(user, |_, entry| {
            let frames = frames.get_or_insert_with(|| encode_event(event, data.clone()));
            if push(entry, frames, false, event) {
                sent += 1;
            }
        });
        messages_sent(event, sent);
    }

    /// Put one session in a room (or take it out); true when that changed anything. The
    /// bridge hears of a channel the node now needs, presence of the socket's new room.
    fn set_room(&mut self, sid: &Sid, room: &Room, join: bool) -> bool {
        let (ok, channel) = if join {
            self.index.join(sid, room)
        } else {
            self.index.leave(sid, room)
        };
        self.need(channel.map(|c| (c, join)));
        if ok
            && let (Some(presence), Some(socket)) = (
                &self.rooms,
                self.index.get(sid).and_then(|e| e.socket.as_ref()),
            )
        {
            presence.do_send(RoomsChanged {
                user: socket.user.clone(),
                socket: socket.id.clone(),
                rooms: vec![room.clone()],
                join,
            });
        }
        ok
    }

    fn membership_local(&mut self, user: &UserId, room: &Room, join: bool) -> usize {
        let mut changed = 0;
        for sid in self.index.sessions_of(user) {
            if self.set_room(&sid, room, join) {
                changed += 1;
                if let Some(entry) = self.index.get(&sid) {
                    entry.handle.do_send(ToSession::SetRooms(SetRooms {
                        room: room.clone(),
                        member: join,
                    }));
                }
            }
        }
        changed
    }

    fn disconnect_local(&self, user: &UserId) -> usize {
        let sids = self.index.sessions_of(user);
        for sid in &sids {
            if let Some(entry) = self.index.get(sid) {
                entry.handle.do_send(ToSession::Disconnect);
            }
        }
        sids.len()
    }
}

/// Hand `frames` to one session; true when they went straight to its websocket, which the
/// caller counts as sent (one counter update per fan-out, not per socket).
fn push(
    entry: &Entry<SessionPort>,
    frames: &Arc<[Outgoing]>,
    volatile: bool,
    event: &'static str,
) -> bool {
    let direct = entry.socket.as_ref().and_then(|s| s.direct.as_ref());
    // Several frames (binary attachments) go through the Session: all or none may be queued.
    if let (Some(direct), [frame]) = (direct, &frames[..]) {
        match direct.out.try_send(WsOutbound::Frame(frame.clone())) {
            Ok(()) => {
                direct.sent.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Err(SendError::Full(_)) if volatile => {
                metrics().volatile_dropped.inc();
            }
            Err(SendError::Full(_)) => entry.handle.do_send(ToSession::Congested),
            // The transport has stopped; its session is closing on its own.
            Err(SendError::Closed(_)) => {}
        }
        return false;
    }
    entry.handle.do_send(ToSession::Push(Push {
        frames: frames.clone(),
        volatile,
        event,
    }));
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

impl Actor for SessionRegistry {
    type Context = Context<Self>;
}

impl Handler<Register> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Register, _ctx: &mut Context<Self>) {
        self.index.register(msg.sid, msg.port);
    }
}

impl Handler<Unregister> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _ctx: &mut Context<Self>) {
        let gone = self.index.unregister(&msg.sid, Instant::now());
        self.need(gone.into_iter().map(|c| (c, false)));
    }
}

impl Handler<Lookup> for SessionRegistry {
    type Result = Option<SessionPort>;

    fn handle(&mut self, msg: Lookup, _ctx: &mut Context<Self>) -> Self::Result {
        self.index
            .get(&msg.sid)
            .map(|e| &e.handle)
            .filter(|port| port.connected())
            .cloned()
    }
}

impl Handler<CountSessions> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, _msg: CountSessions, _ctx: &mut Context<Self>) -> usize {
        self.index.len()
    }
}

impl Handler<Authenticated> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Authenticated, _ctx: &mut Context<Self>) {
        let socket = Socket {
            id: msg.socket,
            user: msg.user,
            device: msg.device,
            direct: msg.direct,
        };
        let (reconnected, needed) =
            self.index
                .authenticate(&msg.sid, socket, &msg.rooms, Instant::now());
        if reconnected {
            metrics().reconnections.inc();
        }
        self.need(needed.into_iter().map(|c| (c, true)));
    }
}

impl Handler<Watch> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Watch, _ctx: &mut Context<Self>) {
        let changed = self.index.watch(&msg.sid, msg.users, msg.watch);
        self.need(changed);
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
            let channel = match msg.target {
                Target::User(user) => Channel::User(user),
                Target::Room(room) => Channel::Room(room),
                Target::All => Channel::Broadcast,
            };
            c.publish(
                &channel,
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
                &Channel::Watch(msg.user.clone()),
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
                &Channel::User(msg.user.clone()),
                Body::Membership {
                    user: msg.user.to_string(),
                    room: msg.room.to_string(),
                    join: msg.join,
                },
            );
        }
        changed
    }
}

impl Handler<JoinRoom> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: JoinRoom, _ctx: &mut Context<Self>) {
        self.set_room(&msg.sid, &msg.room, msg.join);
    }
}

impl Handler<AttachPresence> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: AttachPresence, _ctx: &mut Context<Self>) {
        self.rooms = Some(msg.rooms);
    }
}

impl Handler<DisconnectUser> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, msg: DisconnectUser, _ctx: &mut Context<Self>) -> usize {
        let n = self.disconnect_local(&msg.user);
        if let Some(c) = &self.cluster {
            c.publish(
                &Channel::User(msg.user.clone()),
                Body::DisconnectUser {
                    user: msg.user.to_string(),
                },
            );
        }
        n
    }
}

impl Handler<DrainLocal> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, msg: DrainLocal, _ctx: &mut Context<Self>) -> usize {
        for entry in self.index.entries() {
            entry.handle.do_send(match msg {
                DrainLocal::Maintenance => ToSession::Maintenance,
                DrainLocal::Shutdown => ToSession::Shutdown,
            });
        }
        self.index.len()
    }
}

impl Handler<LiveSockets> for SessionRegistry {
    type Result = MessageResult<LiveSockets>;

    fn handle(&mut self, _msg: LiveSockets, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.index.live_sockets())
    }
}

impl Handler<AttachCluster> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: AttachCluster, _ctx: &mut Context<Self>) {
        let link = ClusterLink {
            node_id: msg.node_id,
            keys: msg.keys,
            publish: msg.publish,
            subscribe: msg.subscribe,
        };
        // Channels the node already needs (sockets that connected before the bridge).
        for channel in self.index.channels() {
            link.need(&channel, true);
        }
        self.cluster = Some(link);
    }
}

impl Handler<ClusterInbound> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: ClusterInbound, _ctx: &mut Context<Self>) {
        let Some(c) = &self.cluster else { return };
        let Some(channel) = c.keys.parse_channel(&msg.channel) else {
            return;
        };
        // Only the actions that make sense on a channel are honoured; anything else is dropped.
        match (channel, msg.frame.body) {
            (
                channel @ (Channel::User(_) | Channel::Room(_) | Channel::Broadcast),
                Body::Deliver {
                    except,
                    volatile,
                    parts,
                },
            ) => {
                let target = match channel {
                    Channel::User(user) => Target::User(user),
                    Channel::Room(room) => Target::Room(room),
                    _ => Target::All,
                };
                let Some(frames) = from_parts(parts) else {
                    return;
                };
                let except = except.map(Sid::from);
                self.deliver_local(&target, &frames, except.as_ref(), volatile, "other");
            }
            (Channel::Watch(user), Body::Presence { user: who, change }) if *user == *who => {
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
            (Channel::User(user), Body::DisconnectUser { user: who }) if *user == *who => {
                self.disconnect_local(&user);
            }
            (
                Channel::User(user),
                Body::Membership {
                    user: who,
                    room,
                    join,
                },
            ) if *user == *who => {
                self.membership_local(&user, &room.into(), join);
            }
            _ => {}
        }
    }
}

impl MeteredActor for SessionRegistry {
    const NAME: &'static str = "session_registry";
}

crate::metered!(SessionRegistry: Register, Unregister, Lookup, CountSessions, Authenticated, Watch,
    Deliver, PresenceChanged, RoomMembership, DisconnectUser,
    MessageResult(LiveSockets), AttachCluster, ClusterInbound, DrainLocal, JoinRoom, AttachPresence);
