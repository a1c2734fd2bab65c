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
use tracing::debug;

use crate::ids::{NodeId, Room, Sid, SocketId, UserId};
use crate::keys::{Channel, Keys};
use crate::metrics::{MeteredActor, messages_sent, metrics};
use crate::ports::Port;
use crate::ports::bridge::{Publish, PublishRecorded, Release, Subscribe, SubscribedNow};
use crate::ports::presence::{RoomsChanged, Status};
use crate::ports::recovery::{Record, Recorded, Replay};
use crate::ports::registry::{
    AttachCluster, Authenticated, ClusterInbound, CountSessions, Deliver, DisconnectUser,
    DrainLocal, LiveSockets, Lookup, PresenceChange, PresenceChanged, Register, RoomMembership,
    Target, Unregister, Watch,
};
use crate::ports::registry::{AttachPresence, AttachRecovery, JoinRoom, Recover};
use crate::ports::session::{Push, SessionPort, SetRooms, ToSession};
use crate::store::StoreError;
use crate::store::now_micros;
use crate::traces::{self, TraceParent};
use crate::transport::{Outgoing, WsOutbound, encode_event};
use index::{Entry, Index, Socket};
use switchboard_protocol::offset::{Offset, append_offset};
use tracing::Span;

/// Mailbox capacity: sessions deregister with `do_send`; HTTP handlers `send` and wait for room.
const MAILBOX: usize = 4096;

/// The registry's link to the other nodes (cluster mode).
struct ClusterLink {
    node_id: NodeId,
    keys: Keys,
    publish: Port<Publish>,
    publish_recorded: Port<PublishRecorded>,
    subscribe: Port<Subscribe>,
    ready: Port<SubscribedNow>,
    release: Port<Release>,
    cluster_keys: Option<std::sync::Arc<crate::signing::ClusterKeys>>,
}

impl ClusterLink {
    /// The signed frame; `trace` (inside the signed bytes) lets the receivers join the trace.
    fn frame(&self, body: Body, trace: Option<TraceParent>) -> bytes::Bytes {
        let frame = ClusterFrame {
            origin: self.node_id.to_string(),
            sent_at_micros: now_micros(),
            trace,
            body,
        }
        .encode();
        match &self.cluster_keys {
            Some(keys) => keys.seal(&frame).into(),
            None => frame.into(),
        }
    }

    /// Publish `body`; work done in `parent` (a traced span, or none) is traced on.
    fn publish(&self, channel: &Channel, body: Body, parent: &Span) {
        let channel = self.keys.channel(channel);
        let span = traces::publish(parent, &channel);
        let payload = self.frame(body, traces::traceparent(&span));
        self.publish.do_send(Publish {
            channel,
            payload,
            span,
        });
    }

    /// Record a recoverable event in the channel's stream and publish it with its offset;
    /// every node, this one included, delivers it when it comes back.
    fn publish_recorded(&self, channel: &Channel, body: Body, parent: &Span) {
        let name = self.keys.channel(channel);
        let span = traces::publish(parent, &name);
        let payload = self.frame(body, traces::traceparent(&span));
        self.publish_recorded.do_send(PublishRecorded {
            channel: name,
            stream: self.keys.stream(channel),
            payload,
            span,
        });
    }

    fn need(&self, channel: &Channel, on: bool) {
        self.subscribe.do_send(Subscribe {
            channel: self.keys.channel(channel),
            on,
        });
    }
}

/// The registry's part in connection state recovery.
struct RecoveryLink {
    /// Single node: where recoverable events are recorded, and the last offset given.
    record: Option<(Port<Record>, Offset)>,
    replay: Port<Replay>,
}

impl RecoveryLink {
    /// The next offset of the single node's order (never going back, even with the clock).
    fn next_offset(last: &mut Offset) -> Offset {
        let ms = (now_micros() / 1000).max(last.ms);
        *last = Offset {
            ms,
            seq: last.seq + 1,
        };
        *last
    }
}

/// The per-node registry of sessions (see the module docs).
#[derive(Default)]
pub struct SessionRegistry {
    index: Index<SessionPort>,
    cluster: Option<ClusterLink>,
    /// Where room changes of connected sockets go (Presence).
    rooms: Option<Port<RoomsChanged>>,
    recovery: Option<RecoveryLink>,
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

    /// Answers once the node is subscribed to `channels` (at once on a single node, or when the
    /// bridge cannot tell): what is published to them from then on reaches this node.
    fn ready(&self, channels: Vec<Channel>) -> ResponseFuture<()> {
        let Some(c) = self.cluster.as_ref().filter(|_| !channels.is_empty()) else {
            return Box::pin(async {});
        };
        let channels = channels.iter().map(|ch| c.keys.channel(ch)).collect();
        let confirm = c.ready.send(SubscribedNow { channels });
        Box::pin(async move {
            if let Ok(Err(err)) = confirm.await {
                debug!(%err, "subscription not confirmed");
            }
        })
    }

    /// Tell the bridge about channels whose need changed.
    fn need(&self, channels: impl IntoIterator<Item = (Channel, bool)>) {
        if let Some(c) = &self.cluster {
            for (channel, on) in channels {
                c.need(&channel, on);
            }
        }
    }

    /// Deliver to this node's sockets of `channel` only; a recoverable event's `offset` is
    /// appended as its last argument (once, for every recipient). How many sockets got it.
    fn deliver_to(
        &self,
        channel: &Channel,
        frames: &Arc<[Outgoing]>,
        except: Option<&SocketId>,
        volatile: bool,
        event: &'static str,
        offset: Option<Offset>,
    ) -> u64 {
        let stamped = match offset {
            Some(offset) => match with_offset(frames, &offset) {
                Some(frames) => Some(frames),
                None => return 0,
            },
            None => None,
        };
        let mut sent = 0;
        let mut visit = |_: &Sid, entry: &Entry<SessionPort>| {
            let socket = entry.socket.as_ref();
            let excepted = except.is_some_and(|x| socket.is_some_and(|s| s.id == *x));
            // A client that cannot recover (Socket.IO v2) gets the event without its offset.
            let frames = match &stamped {
                Some(stamped) if socket.is_none_or(|s| s.offsets) => stamped,
                _ => frames,
            };
            if !excepted && push(entry, frames, volatile, event, offset) {
                sent += 1;
            }
        };
        match channel {
            Channel::User(user) => self.index.each_target(&Target::User(user.clone()), visit),
            Channel::Room(room) => self.index.each_target(&Target::Room(room.clone()), visit),
            Channel::Broadcast => self.index.each_target(&Target::All, visit),
            Channel::Watch(user) => self.index.each_watcher(user, &mut visit),
            Channel::Node(_) => {}
        }
        messages_sent(event, sent);
        sent
    }

    /// Deliver `frames` to `channel`'s sockets on every node: recorded for recovery when it is
    /// recoverable (not volatile) and recovery is on.
    fn deliver(
        &mut self,
        channel: Channel,
        frames: Arc<[Outgoing]>,
        except: Option<SocketId>,
        volatile: bool,
        event: &'static str,
        span: &Span,
    ) {
        let body = |frames: &[Outgoing], except: &Option<SocketId>| Body::Deliver {
            except: except.as_ref().map(|s| s.to_string()),
            volatile,
            parts: to_parts(frames),
        };
        if !volatile && let Some(recovery) = &mut self.recovery {
            if let Some(c) = &self.cluster {
                c.publish_recorded(&channel, body(&frames, &except), span);
                return;
            }
            if let Some((record, last)) = &mut recovery.record {
                let offset = RecoveryLink::next_offset(last);
                let record = record.clone();
                let sent = self.deliver_to(
                    &channel,
                    &frames,
                    except.as_ref(),
                    false,
                    event,
                    Some(offset),
                );
                record.do_send(Record {
                    stream: channel,
                    event: Recorded {
                        offset,
                        frames,
                        except,
                    },
                    live: sent > 0,
                });
                return;
            }
        }
        self.deliver_to(&channel, &frames, except.as_ref(), volatile, event, None);
        if let Some(c) = &self.cluster {
            c.publish(&channel, body(&frames, &except), span);
        }
    }

    fn notify_watchers(&self, user: &UserId, change: PresenceChange) {
        let (event, frames) = presence_frames(user, change);
        self.deliver_to(
            &Channel::Watch(user.clone()),
            &frames,
            None,
            false,
            event,
            None,
        );
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
    offset: Option<Offset>,
) -> bool {
    let direct = entry.socket.as_ref().and_then(|s| s.direct.as_ref());
    // Several frames (binary attachments) go through the Session: all or none may be queued.
    if let (Some(direct), [frame]) = (direct, &frames[..]) {
        // Counted before the frame is queued: the client may read it and disconnect before
        // this thread gets on, and the session reads the count when it stops.
        direct.sent.fetch_add(1, Ordering::Relaxed);
        let queued = direct.out.try_send(WsOutbound::Frame(frame.clone()));
        if queued.is_err() {
            direct.sent.fetch_sub(1, Ordering::Relaxed);
        }
        match queued {
            Ok(()) => return true,
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
        offset,
    }));
    false
}

/// `frames` with `offset` appended to the event as its last argument.
fn with_offset(frames: &Arc<[Outgoing]>, offset: &Offset) -> Option<Arc<[Outgoing]>> {
    let (Outgoing::Text(text), rest) = frames.split_first()? else {
        return None;
    };
    let text = append_offset(text, offset)?;
    Some(
        std::iter::once(Outgoing::Text(text.into()))
            .chain(rest.iter().cloned())
            .collect(),
    )
}

/// The encoded `friend:*` event of a presence change.
fn presence_frames(user: &UserId, change: PresenceChange) -> (&'static str, Arc<[Outgoing]>) {
    let (event, data) = match change {
        PresenceChange::Online => (EventName::FriendOnline, json!({"userId": user})),
        PresenceChange::Offline => (EventName::FriendOffline, json!({"userId": user})),
        PresenceChange::Status(status) => (
            EventName::FriendStatus,
            json!({"userId": user, "status": status.as_str()}),
        ),
    };
    (event.as_str(), encode_event(event.as_str(), data))
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
            offsets: msg.offsets,
        };
        let (reconnected, needed) =
            self.index
                .authenticate(&msg.sid, socket, &msg.rooms, Instant::now());
        if reconnected {
            metrics().reconnections.inc();
        }
        self.need(needed.into_iter().map(|c| (c, true)));
        // After the needs above, in the bridge's mailbox: the channels never drop in between.
        if let Some(c) = self.cluster.as_ref().filter(|_| msg.held) {
            c.release.do_send(Release { sid: msg.sid });
        }
    }
}

impl Handler<Watch> for SessionRegistry {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: Watch, _ctx: &mut Context<Self>) -> Self::Result {
        if msg.watch && !self.index.may_watch(&msg.sid, &msg.users, msg.max_per_user) {
            return Box::pin(async { false });
        }
        let channels: Vec<Channel> = match msg.watch {
            true => msg.users.iter().cloned().map(Channel::Watch).collect(),
            false => Vec::new(),
        };
        let changed = self.index.watch(&msg.sid, msg.users, msg.watch);
        self.need(changed);
        let ready = self.ready(channels);
        Box::pin(async move {
            ready.await;
            true
        })
    }
}

impl Handler<Deliver> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Context<Self>) {
        let channel = match msg.target {
            Target::User(user) => Channel::User(user),
            Target::Room(room) => Channel::Room(room),
            Target::All => Channel::Broadcast,
        };
        self.deliver(
            channel,
            msg.frames,
            msg.except,
            msg.volatile,
            msg.event,
            &msg.span,
        );
    }
}

impl Handler<PresenceChanged> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: PresenceChanged, _ctx: &mut Context<Self>) {
        let (event, frames) = presence_frames(&msg.user, msg.change);
        // The watchers on every node get the same encoded event (and, with recovery, offset).
        self.deliver(
            Channel::Watch(msg.user),
            frames,
            None,
            false,
            event,
            &Span::none(),
        );
    }
}

impl Handler<Recover> for SessionRegistry {
    type Result = ResponseFuture<Result<Option<Vec<Recorded>>, StoreError>>;

    fn handle(&mut self, msg: Recover, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(recovery) = &self.recovery else {
            return Box::pin(async { Ok(None) });
        };
        let replay = Replay {
            streams: msg.streams,
            after: msg.after,
        };
        match &self.cluster {
            Some(c) => {
                // Cluster: read the streams only once this node receives what is published
                // to them, so no event falls between the replay and the live stream.
                let channels = replay.streams.iter().map(|ch| c.keys.channel(ch)).collect();
                let confirm = c.ready.send(SubscribedNow { channels });
                let port = recovery.replay.clone();
                Box::pin(async move {
                    let not_now = |e: String| StoreError(e);
                    confirm
                        .await
                        .map_err(|e| not_now(e.to_string()))?
                        .map_err(not_now)?;
                    port.send(replay)
                        .await
                        .map_err(|e| StoreError(e.to_string()))?
                })
            }
            _ => {
                // Single node: sent now, after every event recorded so far (one mailbox).
                let asked = recovery.replay.send(replay);
                Box::pin(async move { asked.await.map_err(|e| StoreError(e.to_string()))? })
            }
        }
    }
}

impl Handler<AttachRecovery> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: AttachRecovery, _ctx: &mut Context<Self>) {
        self.recovery = Some(RecoveryLink {
            record: msg.record.map(|port| (port, Offset { ms: 0, seq: 0 })),
            replay: msg.replay,
        });
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
                &Span::none(),
            );
        }
        changed
    }
}

impl Handler<JoinRoom> for SessionRegistry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: JoinRoom, _ctx: &mut Context<Self>) -> Self::Result {
        self.set_room(&msg.sid, &msg.room, msg.join);
        self.ready(match msg.join {
            true => vec![Channel::Room(msg.room)],
            false => Vec::new(),
        })
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
                &Span::none(),
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
            publish_recorded: msg.publish_recorded,
            subscribe: msg.subscribe,
            ready: msg.ready,
            release: msg.release,
            cluster_keys: msg.cluster_keys,
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
                channel @ (Channel::User(_)
                | Channel::Room(_)
                | Channel::Broadcast
                | Channel::Watch(_)),
                Body::Deliver {
                    except,
                    volatile,
                    parts,
                },
            ) => {
                let Some(frames) = from_parts(parts) else {
                    return;
                };
                let span = traces::deliver(&msg.channel, &msg.frame.origin, msg.frame.trace);
                let _entered = span.enter();
                let except = except.map(SocketId::from);
                let offset = msg.offset;
                self.deliver_to(
                    &channel,
                    &frames,
                    except.as_ref(),
                    volatile,
                    "other",
                    offset,
                );
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
    MessageResult(LiveSockets), AttachCluster, ClusterInbound, DrainLocal, JoinRoom, AttachPresence,
    Recover, AttachRecovery);
