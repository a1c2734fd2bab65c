//! The application: what Switchboard does with an authenticated socket's events.
//!
//! A Session owns the connection (Engine.IO, the transports, the heartbeat, the outbox) and the
//! Socket.IO layer; everything above — authentication and admission at CONNECT, the per-socket
//! event limit, the built-in events and their error codes — lives here, in one [`Socket`] per
//! session. The Session hands it CONNECTs, events and commands, and lends it a [`Conn`] to
//! answer through; anything that needs another actor is a typed message sent through a
//! [`Port`], whose answer comes back later as a [`Done`], so no handler waits.
//!
//! # Layout
//! - this file: [`App`] (what the sockets of a node share), [`Socket`], [`Conn`], dispatch.
//! - `connect`: token checks, admission through presence, the token's expiry, the end.
//! - `messages`: `message:send` (one in flight per socket, in order) and `message:sync`.
//! - `presence`: `presence:subscribe` / `unsubscribe` / `query`, `status:set`.
//! - `rooms`: `room:join`, `room:leave`, `room:presence`, `room:emit`, and membership changes
//!   from the server API.
//! - `signals`: `typing` and `signal` (volatile relays).
//! - `gate`: the backend's `authorize` hook in front of the actions it is asked about, with
//!   the node's decision cache.
//! - `rpc`: custom events, answered by the backend's `rpc` hook.
//! - [`errors`]: every failure mapped to the client-facing [`errors::ErrorCode`].

mod connect;
pub mod errors;
mod gate;
mod messages;
mod presence;
mod rooms;
mod rpc;
mod signals;

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use actix::MailboxError;
use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_protocol::events::{ClientEvent, EventName, MessageSend};
use switchboard_protocol::socketio::Packet;
use tracing::warn;

use crate::auth::Authenticator;
use crate::decisions::DecisionCache;
use crate::ids::{NodeId, Room, Sid, SocketId, UserId};
use crate::logins::{LogSampler, LoginGuard};
use crate::metrics::{message_received, message_sent, metrics};
use crate::ports::Port;
use crate::ports::bridge::{Hold, Release};
use crate::ports::hooks::{
    Action, AskAuthorize, AskConnect, AskRpc, ConnectAnswer, Decision, FailurePolicy, HookFailure,
    RpcAnswer,
};
use crate::ports::journal::{
    ConnectionClosed, ConnectionOpened, MembershipsOf, StoreMessage, StoredMessage, SyncMessages,
    SyncPage, WebhookEvent,
};
use crate::ports::presence::{
    Admit, PresenceConnect, PresenceDisconnect, QueryStatuses, RoomOnline, SetStatus, Status,
};
use crate::ports::ratelimiter::CheckMessage;
use crate::ports::recovery::{Recorded, SaveSession, SavedSession, TakeSession};
use crate::ports::registry::{Authenticated, Deliver, JoinRoom, Recover, Watch};
use crate::ports::session::Push;
use crate::ratelimit::TokenBucket;
use crate::traces::{self, TraceParent};
use crate::transport::{CloseReason, Outgoing, WsOut};
use errors::Refusal;

/// Per-socket and per-event limits.
#[derive(Debug, Clone)]
pub struct AppLimits {
    /// Largest application event (JSON text plus attachments).
    pub max_event_bytes: usize,
    /// Events one socket may send per window.
    pub socket_events: u32,
    /// The per-socket window.
    pub socket_window: Duration,
    /// Most sockets one user may have across the cluster (0: no limit).
    pub max_sockets_per_user: usize,
    /// Most users one user's sockets on a node may watch together (0: no limit).
    pub max_watches_per_user: usize,
    /// Failed logins one client address may make per minute on a node (0: no limit).
    pub login_failures_per_ip: u32,
}

/// The actors the application talks to, one port per message it sends.
#[derive(Clone)]
pub struct AppPorts {
    /// Registry: a socket authenticated.
    pub authenticated: Port<Authenticated>,
    /// Registry: presence watches.
    pub watch: Port<Watch>,
    /// Registry: deliveries.
    pub deliver: Port<Deliver>,
    /// Presence: admit a socket.
    pub presence_connect: Port<PresenceConnect>,
    /// Presence: a socket left.
    pub presence_disconnect: Port<PresenceDisconnect>,
    /// Presence: statuses.
    pub query_statuses: Port<QueryStatuses>,
    /// Presence: a user sets a status.
    pub set_status: Port<SetStatus>,
    /// RateLimiter: the per-user message limit.
    pub check_message: Port<CheckMessage>,
    /// Journal: store a message.
    pub store_message: Port<StoreMessage>,
    /// Journal: read messages.
    pub sync_messages: Port<SyncMessages>,
    /// Journal: a connection row opens.
    pub connection_opened: Port<ConnectionOpened>,
    /// Journal: a connection row closes.
    pub connection_closed: Port<ConnectionClosed>,
    /// Journal: a user's durable room memberships.
    pub memberships_of: Port<MembershipsOf>,
    /// Journal: a webhook event with no row of its own.
    pub webhook_event: Port<WebhookEvent>,
    /// Registry: a socket joins or leaves a room.
    pub join_room: Port<JoinRoom>,
    /// Presence: a room's online members, cluster-wide.
    pub room_online: Port<RoomOnline>,
    /// Bridge (cluster mode): a connecting socket holds its channels until the registry needs
    /// them.
    pub hold: Option<Port<Hold>>,
    /// Bridge (cluster mode): a socket that held its channels went away before the registry
    /// took them over.
    pub release: Option<Port<Release>>,
}

/// Connection state recovery, as the sockets use it.
#[derive(Clone)]
pub struct RecoveryClient {
    /// How long a socket's state and missed events are kept after it goes.
    pub window: Duration,
    /// Recovery: keep a socket's state.
    pub save: Port<SaveSession>,
    /// Recovery: take a kept state (or forget one).
    pub take: Port<TakeSession>,
    /// Registry: a recovering socket's missed events.
    pub recover: Port<Recover>,
}

/// The application's backend, as the sockets reach it.
#[derive(Clone)]
pub struct HookClient {
    /// The actions `authorize` is asked about; any other costs nothing.
    pub actions: HashSet<Action>,
    /// What a failed call means.
    pub failure: FailurePolicy,
    /// Decisions read without a message.
    pub cache: Arc<DecisionCache>,
    /// The Hooks actor: `connect`.
    pub connect: Port<AskConnect>,
    /// The Hooks actor: `authorize`.
    pub authorize: Port<AskAuthorize>,
    /// The Hooks actor: `rpc`.
    pub rpc: Port<AskRpc>,
}

/// What every socket of a node shares.
pub struct App {
    /// This node's id (`serverInstance`).
    pub node_id: NodeId,
    /// Verifies tokens.
    pub auth: Arc<Authenticator>,
    /// The actors it talks to.
    pub ports: AppPorts,
    /// Limits.
    pub limits: AppLimits,
    /// The application's backend, when one is configured.
    pub hooks: Option<HookClient>,
    /// Whether lifecycle webhooks are on (events are written to the outbox).
    pub webhooks: bool,
    /// Connection state recovery, when it is on.
    pub recovery: Option<RecoveryClient>,
    /// Failed logins per client address.
    pub logins: LoginGuard,
    /// Samples the `auth_failed` log line.
    pub auth_log: LogSampler,
}

/// What the handshake HTTP request said about the client.
#[derive(Debug, Clone, Default)]
pub struct HandshakeInfo {
    /// `Authorization: Bearer …`.
    pub bearer: Option<String>,
    /// `?token=…`.
    pub query_token: Option<String>,
    /// `X-Device-Id`.
    pub device_id: Option<String>,
    /// `X-Platform`, kept for logs.
    pub platform: Option<String>,
    /// `User-Agent`, kept in the connection log.
    pub user_agent: Option<String>,
    /// The peer address.
    pub remote_addr: Option<String>,
    /// `Origin` (browsers).
    pub origin: Option<String>,
    /// A Socket.IO v2 client (Engine.IO v3): it cannot recover, so it gets no pid or offsets.
    pub legacy: bool,
}

/// Work for another actor; its answer comes back to the socket as a [`Done`] (inside the span
/// the work was started in, so a chain of steps stays one trace).
pub type Work = Pin<Box<dyn Future<Output = Done>>>;

/// What the application needs from the connection it serves (the Session implements it).
pub trait Conn {
    /// The Engine.IO session id (logs).
    fn sid(&self) -> &Sid;
    /// Whether the connection is closing (answers arriving now have nobody to go to).
    fn closing(&self) -> bool;
    /// Queue encoded frames for the client; volatile ones may be dropped for a slow client.
    fn send(&mut self, frames: &[Outgoing], volatile: bool);
    /// The namespace `nsp` is joined as socket `socket` (the connect timeout stops).
    fn join(&mut self, nsp: &str, socket: &SocketId);
    /// Close the connection.
    fn close(&mut self, reason: CloseReason);
    /// The websocket queue, if the connection is already on its websocket.
    fn direct_link(&self) -> Option<WsOut>;
    /// Run `work` and hand its [`Done`] back to [`Socket::done`].
    fn spawn(&mut self, work: Work);
    /// Hand `done` back to [`Socket::done`] after `after`.
    fn later(&mut self, after: Duration, done: Done);

    /// Send one Socket.IO packet.
    fn emit(&mut self, packet: &Packet) {
        let frames: Vec<Outgoing> = packet.to_frames().into_iter().map(Outgoing::from).collect();
        self.send(&frames, false);
    }

    /// Refuse a CONNECT with this CONNECT_ERROR packet. A Socket.IO v4 (socket.io 2.x) client
    /// is connected to `/` implicitly and cannot be left on no namespace: refusing that, the
    /// connection also says DISCONNECT and closes.
    fn refuse_connect(&mut self, refusal: &Packet);
}

/// An answer from another actor, or a timer, back at its socket.
pub enum Done {
    /// The backend's `connect` hook answered.
    ConnectHooked(Box<connect::Admission>, Result<ConnectAnswer, HookFailure>),
    /// Presence answered the admission of a CONNECT.
    Admitted(Box<connect::Admission>, Result<Admit, Refusal>),
    /// The backend's `authorize` hook answered for an event waiting at the gate.
    Gated {
        /// The event.
        event: Box<ClientEvent>,
        /// Its binary attachments.
        attachments: Vec<Bytes>,
        /// Its ack id.
        id: Option<u64>,
        /// Targets the cache had already refused.
        cached: Decision,
        /// The backend's decision about the others.
        result: Result<Decision, HookFailure>,
    },
    /// The backend's `authorize` hook answered for the `message:send` in flight.
    SendAuthorized {
        /// The message.
        msg: MessageSend,
        /// Its ack id.
        id: Option<u64>,
        /// The decision.
        result: Result<Decision, HookFailure>,
    },
    /// The backend's `rpc` hook answered a custom event.
    Rpc {
        /// Its ack id.
        id: Option<u64>,
        /// The answer.
        result: Result<RpcAnswer, HookFailure>,
    },
    /// The recovery store answered whether the client's `pid` names a kept state.
    Taken(Box<connect::Admission>, Option<SavedSession>),
    /// The registry read a recovering socket's missed events (`None`: not recoverable whole).
    Replayed(Option<Vec<Recorded>>),
    /// Presence answered `room:presence`.
    RoomPresence {
        /// Its ack id.
        id: Option<u64>,
        /// The room.
        room: Room,
        /// The online members and socket count.
        result: Result<(Vec<UserId>, usize), Refusal>,
    },
    /// The token's `exp` passed.
    TokenExpired,
    /// The per-user limit answered for the `message:send` in flight.
    SendChecked {
        /// The message.
        msg: MessageSend,
        /// Its ack id.
        id: Option<u64>,
        /// Allowed, or refused.
        verdict: Result<(), Refusal>,
    },
    /// The Journal answered the store of the `message:send` in flight.
    SendStored {
        /// Its ack id.
        id: Option<u64>,
        /// The stored row.
        result: Result<StoredMessage, Refusal>,
    },
    /// The Journal answered a `message:sync`.
    Synced {
        /// Its ack id.
        id: Option<u64>,
        /// The page.
        result: Result<SyncPage, Refusal>,
    },
    /// Presence answered a status query.
    Statuses {
        /// Its ack id.
        id: Option<u64>,
        /// Users the backend did not allow asking about.
        denied: Vec<String>,
        /// The statuses, in the order asked.
        result: Result<Vec<(UserId, Status)>, Refusal>,
    },
    /// The registry refused a `presence:subscribe`: over the user's watch budget.
    WatchRefused {
        /// Its ack id.
        id: Option<u64>,
        /// The users the socket had added for it.
        added: Vec<UserId>,
        /// Why.
        refusal: Refusal,
    },
    /// An action is done (`status:set` stored, `room:join` in place): `{ok: true}` or the
    /// refusal.
    Settled {
        /// Its ack id.
        id: Option<u64>,
        /// Done, or refused.
        result: Result<(), Refusal>,
    },
}

/// A command for one socket from outside (the registry, on behalf of the server API or the
/// drain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Disconnect the socket (server API).
    Disconnect,
    /// Join or leave a room (server API).
    SetRooms {
        /// The room.
        room: Room,
        /// Member or not.
        member: bool,
    },
    /// The node is about to drain.
    Maintenance,
    /// The node is draining: the client should reconnect elsewhere.
    Shutdown,
}

/// The application state of one session (see the module docs).
pub struct Socket {
    app: Arc<App>,
    handshake: HandshakeInfo,
    /// The (user, socket) of a CONNECT waiting for presence to admit it; if the session ends
    /// first, the socket is withdrawn from presence again.
    admitting: Option<(UserId, SocketId)>,
    /// The client left with a Socket.IO DISCONNECT (its state is not kept for recovery).
    left: bool,
    /// The authenticated user, once admitted.
    user: Option<User>,
    /// A recovering CONNECT's auth payload while its saved state is looked up (for the
    /// backend's `connect` hook).
    pending_auth: Option<Value>,
    /// CONNECT packets received while not admitted.
    connects: u8,
    /// Refused logins on this connection.
    failures: u8,
}

/// An authenticated socket.
struct User {
    socket: SocketId,
    user: UserId,
    rooms: HashSet<Room>,
    /// The token's exact rooms and prefix patterns: rooms the client may join by itself.
    claim: Arc<RoomClaim>,
    bucket: TokenBucket,
    /// Application events received from the client (for the connection log).
    received: u32,
    /// Application events pushed to the client (for the connection log); the registry counts
    /// the deliveries it writes straight into this socket's websocket.
    sent: Arc<AtomicU32>,
    /// When the socket was admitted (connection duration metric).
    since: Instant,
    /// `message:send` events waiting for the one in flight.
    sends: VecDeque<(MessageSend, Option<u64>, tracing::Span)>,
    /// A `message:send` is being checked or stored.
    sending: bool,
    /// Users whose presence this socket watches (bounded by `presence::MAX_WATCHED`).
    watching: HashSet<UserId>,
    /// The private recovery id, when recovery is on.
    pid: Option<String>,
    /// A recovering socket: what the CONNECT answer still waits for, and the deliveries held
    /// until the missed events are replayed.
    recovering: Option<Box<connect::Recovering>>,
}

impl User {
    /// What to keep for recovery.
    fn saved(&self) -> SavedSession {
        SavedSession {
            user: self.user.to_string(),
            socket: self.socket.to_string(),
            rooms: self.rooms.iter().map(|r| r.to_string()).collect(),
            watching: self.watching.iter().map(|u| u.to_string()).collect(),
        }
    }

    /// Keep the socket's state while it is connected (refreshed on every change), so a node
    /// that dies does not take it along.
    fn keep(&self, app: &App) {
        if let (Some(recovery), Some(pid)) = (&app.recovery, &self.pid) {
            recovery.save.do_send(SaveSession {
                pid: pid.clone(),
                session: self.saved(),
                ttl_secs: (recovery.window + KEPT_WHILE_CONNECTED).as_secs(),
            });
        }
    }
}

/// How long past the window a connected socket's state is kept (it is refreshed on changes,
/// and set to the window when the socket goes).
const KEPT_WHILE_CONNECTED: Duration = Duration::from_secs(6 * 3600);

/// The rooms a token lets its client join.
#[derive(Debug, Default)]
struct RoomClaim {
    rooms: Vec<String>,
    patterns: Vec<String>,
}

impl RoomClaim {
    fn allows(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| r == room)
            || self.patterns.iter().any(|p| room.starts_with(p.as_str()))
    }
}

impl Socket {
    /// The application side of a new session.
    pub fn new(app: Arc<App>, handshake: HandshakeInfo) -> Self {
        Socket {
            app,
            handshake,
            admitting: None,
            left: false,
            user: None,
            pending_auth: None,
            connects: 0,
            failures: 0,
        }
    }

    /// Whether the socket has been admitted.
    pub fn authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// A CONNECT to namespace `nsp` with its `auth` payload.
    pub fn connect(&mut self, conn: &mut dyn Conn, nsp: String, auth: Option<Value>) {
        let span = traces::connect(conn.sid());
        let _entered = span.enter();
        connect::connect(self, conn, nsp, auth);
    }

    /// One application event (`[name, args…]`, its ack id and encoded size).
    pub fn event(
        &mut self,
        conn: &mut dyn Conn,
        data: Vec<Value>,
        id: Option<u64>,
        attachments: Vec<Bytes>,
        size: usize,
    ) {
        let app = self.app.clone();
        let Some(user) = self.user.as_mut() else {
            return;
        };
        user.received = user.received.saturating_add(1);
        let name = data.first().and_then(Value::as_str).unwrap_or_default();
        message_received(EventName::label(name));
        // The event's span lives as long as the work it starts (messages carry it on).
        let span = if traces::enabled() {
            let remote = TraceParent::from_event(&data);
            traces::event(EventName::label(name), &user.socket, &user.user, remote)
        } else {
            tracing::Span::none()
        };
        let _entered = span.enter();
        if let Err(retry) = user.bucket.try_take(Instant::now()) {
            return fail(conn, id, Refusal::rate_limited(retry));
        }
        if size > app.limits.max_event_bytes {
            return fail(conn, id, Refusal::too_large(app.limits.max_event_bytes));
        }
        let event = match ClientEvent::parse(data) {
            Ok(event) => event,
            Err(err) => return fail(conn, id, err.into()),
        };
        match event {
            // Gated inside its queue, so one socket's messages keep their order.
            ClientEvent::MessageSend(msg) => messages::send(&app, user, conn, msg, id),
            ClientEvent::MessageSync(msg) => messages::sync(&app, user, conn, msg, id),
            ClientEvent::PresenceUnsubscribe(msg) => {
                presence::watch(&app, user, conn, msg.user_ids, false, Vec::new(), id)
            }
            ClientEvent::StatusSet(msg) => presence::set_status(&app, user, conn, msg, id),
            ClientEvent::RoomLeave(msg) => rooms::leave(&app, user, conn, msg.room, id),
            ClientEvent::RoomPresence(msg) => rooms::presence(&app, user, conn, msg.room, id),
            ClientEvent::Custom { name, args } => {
                rpc::call(&app, user, conn, name, args, attachments, id)
            }
            gated => gate::check(&app, user, conn, gated, attachments, id),
        }
    }

    /// A binary event grew past the size cap while its attachments arrived (dropped).
    pub fn too_large(&mut self, conn: &mut dyn Conn, id: Option<u64>) {
        if self.user.is_some() {
            fail(
                conn,
                id,
                Refusal::too_large(self.app.limits.max_event_bytes),
            );
        }
    }

    /// An answer from another actor (or a timer) for this socket.
    pub fn done(&mut self, conn: &mut dyn Conn, done: Done) {
        let app = self.app.clone();
        match done {
            Done::ConnectHooked(admission, answer) => {
                connect::hooked(self, conn, *admission, answer)
            }
            Done::Admitted(admission, result) => connect::admitted(self, conn, *admission, result),
            Done::Gated {
                event,
                attachments,
                id,
                cached,
                result,
            } => {
                if let Some(user) = self.user.as_mut() {
                    gate::answered(&app, user, conn, *event, attachments, id, cached, result);
                }
            }
            Done::SendAuthorized { msg, id, result } => {
                if let Some(user) = self.user.as_mut() {
                    messages::authorized(&app, user, conn, msg, id, result);
                }
            }
            Done::Rpc { id, result } => rpc::answered(conn, id, result),
            Done::RoomPresence { id, room, result } => {
                rooms::presence_answered(conn, id, room, result)
            }
            Done::Taken(admission, saved) => connect::taken(self, conn, *admission, saved),
            Done::Replayed(events) => connect::replayed(self, conn, events),
            Done::TokenExpired => connect::token_expired(self, conn),
            Done::SendChecked { msg, id, verdict } => {
                if let Some(user) = self.user.as_mut() {
                    messages::checked(&app, user, conn, msg, id, verdict);
                }
            }
            Done::SendStored { id, result } => {
                if let Some(user) = self.user.as_mut() {
                    messages::stored(&app, user, conn, id, result);
                }
            }
            Done::Synced { id, result } => match result {
                Ok(page) => ack(
                    conn,
                    id,
                    json!({"ok": true, "messages": page.messages, "hasMore": page.has_more}),
                ),
                Err(refusal) => fail(conn, id, refusal),
            },
            Done::Statuses { id, denied, result } => presence::statuses(conn, id, denied, result),
            Done::WatchRefused { id, added, refusal } => {
                if let Some(user) = self.user.as_mut() {
                    presence::watch_refused(&app, user, conn, id, added, refusal);
                }
            }
            Done::Settled { id, result } => match result {
                Ok(()) => ack(conn, id, json!({"ok": true})),
                Err(refusal) => fail(conn, id, refusal),
            },
        }
    }

    /// A command from outside.
    pub fn command(&mut self, conn: &mut dyn Conn, command: Command) {
        match command {
            Command::Disconnect => connect::disconnect(self, conn),
            Command::SetRooms { room, member } => {
                if let Some(user) = self.user.as_mut() {
                    rooms::set(&self.app, user, room, member);
                }
            }
            Command::Maintenance => {
                if self.user.is_some() {
                    event(
                        conn,
                        EventName::ServerMaintenance,
                        json!({"reconnect": true}),
                    );
                }
            }
            Command::Shutdown => {
                if self.user.is_some() {
                    event(conn, EventName::ServerShutdown, json!({"reconnect": true}));
                }
                conn.close(CloseReason::ServerShutdown);
            }
        }
    }

    /// A delivery from the registry for this socket: held while a recovering socket's missed
    /// events are being read (handed back otherwise, to be sent), and counted.
    pub fn pushed(&mut self, push: Push) -> Option<Push> {
        let Some(user) = self.user.as_mut() else {
            return Some(push);
        };
        if let Some(recovering) = &mut user.recovering {
            recovering.held.push(push);
            return None;
        }
        user.sent.fetch_add(1, Ordering::Relaxed);
        Some(push)
    }

    /// The client said Socket.IO DISCONNECT: it chose to leave.
    pub fn left(&mut self) {
        self.left = true;
    }

    /// The session is gone (`reason` is `None` when the node stopped it without a close).
    pub fn stopped(&mut self, sid: &Sid, reason: Option<CloseReason>) {
        connect::stopped(self, sid, reason);
    }
}

/// Ack `id` with `data`, when the client asked for an answer.
fn ack(conn: &mut dyn Conn, id: Option<u64>, data: Value) {
    if let Some(id) = id {
        conn.emit(&Packet::ack("/", id, vec![data], Vec::new()));
    }
}

/// Emit `[name, data]` to this socket.
fn event(conn: &mut dyn Conn, name: EventName, data: Value) {
    message_sent(name.as_str());
    conn.emit(&Packet::event("/", name.as_str(), vec![data]));
}

/// Refuse an event: the ack when the client asked for one, else an `error` event. A rate
/// limit also gets `rate_limited {retryAfterMs}`, whether or not there is an ack.
fn fail(conn: &mut dyn Conn, id: Option<u64>, refusal: Refusal) {
    let code = refusal.code.as_str();
    metrics().error(code);
    let mut error = json!({"code": code, "message": refusal.message});
    if let Some(reason) = &refusal.reason {
        error["reason"] = reason.as_str().into();
    }
    if let Some(retry) = refusal.retry_after {
        let retry_ms = crate::ratelimit::ceil_millis(retry).max(1);
        error["retryAfterMs"] = retry_ms.into();
        event(
            conn,
            EventName::RateLimited,
            json!({"retryAfterMs": retry_ms}),
        );
        if id.is_none() {
            return;
        }
    }
    match id {
        Some(_) => ack(conn, id, json!({"ok": false, "error": error})),
        None => event(conn, EventName::Error, error),
    }
}

/// The answer of a request to another actor, as the client will see a failure; failures are
/// logged with `what` (the actor asked).
fn settle<T, E>(
    answer: Result<Result<T, E>, MailboxError>,
    what: &'static str,
) -> Result<T, Refusal>
where
    E: Into<Refusal> + std::fmt::Display,
{
    match answer {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => {
            warn!(%err, "{what} failed");
            Err(err.into())
        }
        Err(err) => {
            warn!(%err, "{what} mailbox");
            Err(err.into())
        }
    }
}

/// [`settle`] for requests whose errors are ordinary outcomes (no log line).
fn settle_quietly<T, E: Into<Refusal>>(
    answer: Result<Result<T, E>, MailboxError>,
) -> Result<T, Refusal> {
    answer.map_err(Refusal::from)?.map_err(Into::into)
}

/// Pin a future that answers with a [`Done`].
fn work(fut: impl Future<Output = Done> + 'static) -> Work {
    Box::pin(fut)
}
