//! What the SessionRegistry accepts: session bookkeeping from the transports and sessions,
//! deliveries and watches from the application, presence transitions from Presence, frames
//! from the RedisBridge and operator actions from the server API.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use actix::prelude::*;
use switchboard_protocol::cluster::ClusterFrame;

use super::Port;
use super::bridge::{Publish, PublishRecorded, Release, Subscribe, SubscribedNow};
use super::presence::{RoomsChanged, SocketPresence, Status};
use super::recovery::{Record, Recorded, Replay};
use super::session::SessionPort;
use crate::ids::{NodeId, Room, Sid, SocketId, UserId};
use crate::keys::{Channel, Keys};
use crate::store::StoreError;
use crate::transport::{Outgoing, WsOut};
use switchboard_protocol::offset::Offset;

/// Register a freshly started session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    /// Its id.
    pub sid: Sid,
    /// Its port.
    pub port: SessionPort,
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
#[rtype(result = "Option<SessionPort>")]
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
    pub socket: SocketId,
    /// The device id.
    pub device: String,
    /// The user.
    pub user: UserId,
    /// Rooms from the token.
    pub rooms: Vec<Room>,
    /// Its websocket, when deliveries may be written into it directly.
    pub direct: Option<DirectLink>,
    /// The session held its channels at the bridge while its CONNECT waited: release them
    /// once the registry needs them.
    pub held: bool,
    /// Recoverable events carry their offset (recovery on, a client that can recover).
    pub offsets: bool,
}

/// A session's websocket transport, written into directly by the registry.
pub struct DirectLink {
    /// The transport.
    pub out: WsOut,
    /// The session's count of pushed events (connection log).
    pub sent: Arc<AtomicU32>,
}

/// Start or stop watching users' presence for a session; answers false (and changes nothing)
/// when the session's user would watch more than `max_per_user` users on this node.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Watch {
    /// The watching session.
    pub sid: Sid,
    /// The watched users.
    pub users: Vec<UserId>,
    /// True to watch, false to stop.
    pub watch: bool,
    /// Most users one user's sessions on this node may watch together (0: no limit).
    pub max_per_user: usize,
}

/// Who a delivery is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every socket of a user.
    User(UserId),
    /// Every member socket of a room.
    Room(Room),
    /// Every authenticated socket.
    All,
}

/// Deliver already-encoded frames to the sockets of `target`, on this node and (in cluster
/// mode) on every other.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Deliver {
    /// Who gets it.
    pub target: Target,
    /// The encoded packet (one text frame plus any binary attachments).
    pub frames: Arc<[Outgoing]>,
    /// A socket to leave out (the sender's own).
    pub except: Option<SocketId>,
    /// Whether it may be dropped for a congested client.
    pub volatile: bool,
    /// The event name, for `socket_messages_sent_total{event_type}` (bounded label).
    pub event: &'static str,
    /// The span of the work that sends it: a publish joins its trace (disabled when traces
    /// are off).
    pub span: tracing::Span,
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

/// A socket joins (or leaves) a room of its own accord (`room:join`, `room:leave`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct JoinRoom {
    /// The session.
    pub sid: Sid,
    /// The room.
    pub room: Room,
    /// Join (true) or leave.
    pub join: bool,
}

/// Where the registry reports room changes of connected sockets (Presence, for the
/// cluster-wide `room:presence`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachPresence {
    /// Presence's port.
    pub rooms: Port<RoomsChanged>,
}

/// Add (or remove) every socket of `user` to (from) `room`, cluster-wide; answers how many
/// sockets of this node changed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RoomMembership {
    /// The user.
    pub user: UserId,
    /// The room.
    pub room: Room,
    /// True to join, false to leave.
    pub join: bool,
}

/// Disconnect every socket of a user, cluster-wide; answers how many on this node.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct DisconnectUser {
    /// The user.
    pub user: UserId,
}

/// A stage of this node's drain, applied to its local sessions only; answers how many.
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
pub struct AttachCluster {
    /// This node's id (frame origin).
    pub node_id: NodeId,
    /// Channel naming.
    pub keys: Keys,
    /// Where frames are published.
    pub publish: Port<Publish>,
    /// Where recoverable frames are recorded and published.
    pub publish_recorded: Port<PublishRecorded>,
    /// Where the node's channel needs are sent.
    pub subscribe: Port<Subscribe>,
    /// Where the registry asks whether channels are in place (a join answers then).
    pub ready: Port<SubscribedNow>,
    /// Where connecting sessions' holds are released.
    pub release: Port<Release>,
    /// Signs published frames, when a cluster key is set.
    pub cluster_keys: Option<std::sync::Arc<crate::signing::ClusterKeys>>,
}

/// A frame from another node (or this node's own recorded event), from the RedisBridge.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClusterInbound {
    /// The channel it arrived on.
    pub channel: String,
    /// The decoded frame.
    pub frame: ClusterFrame,
    /// A recorded (recoverable) event's offset.
    pub offset: Option<Offset>,
}

/// Turn on connection state recovery: where recoverable events are recorded (single node;
/// cluster nodes record through the bridge) and replayed from.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachRecovery {
    /// Single node: the Recovery actor's record port.
    pub record: Option<Port<Record>>,
    /// The Recovery actor's replay port.
    pub replay: Port<Replay>,
    /// Recovery streams' length bound and window (cluster mode: passed to the recording
    /// script).
    pub window: std::time::Duration,
}

/// A recovering socket's missed events: registered first (this message follows its
/// `Authenticated` in the registry's mailbox), then read, so none falls between.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<Recorded>>, StoreError>")]
pub struct Recover {
    /// The channels the socket listens to.
    pub streams: Vec<Channel>,
    /// The last offset the client saw.
    pub after: Offset,
}
