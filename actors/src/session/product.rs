//! Product mode of a Session: JWT auth at CONNECT and Switchboard's application events.
//!
//! Validation, the per-socket rate limit and replies happen here; anything that needs another
//! actor (presence, the per-user limit, the journal, delivery to other sockets) is a typed
//! message to that actor, awaited without blocking the session.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::{Value, json};
use switchboard_protocol::events::{
    self, MessageSend, MessageSync, PresenceUsers, RoomEmit, Signal, StatusSet, Typing,
};
use switchboard_protocol::socketio::Packet;
use tracing::{info, warn};

use super::Session;
use crate::auth::{AuthError, Authenticator};
use crate::journal::{
    ConnectionClosed, ConnectionOpened, Journal, JournalError, StoreMessage, SyncMessages,
};
use crate::metrics::{EventLabel, MeteredAddr, StatusLabel, event_label, metrics};
use crate::presence::{
    Presence, PresenceConnect, PresenceDisconnect, QueryStatuses, SetStatus, Status, UserId,
};
use crate::ratelimit::TokenBucket;
use crate::ratelimiter::{CheckMessage, RateLimiter};
use crate::registry::{
    Authenticated, Deliver, DirectLink, SessionRegistry, Target, Watch, encode_event,
};
use crate::transport::{CloseReason, Outgoing, random_id};

/// Longest a socket's token timer runs (ten years); later expiries are treated as this.
const MAX_TOKEN_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

/// Most users one socket may watch with `presence:subscribe` (each costs a channel in cluster
/// mode).
const MAX_WATCHED: usize = 1000;

/// Most `message:send` events one socket may have waiting (beyond the per-socket rate limit,
/// this bounds memory while the database is slow).
const MAX_QUEUED_SENDS: usize = 256;

/// Longest device id or platform name kept from a client.
const MAX_DEVICE_LEN: usize = 128;

/// Per-socket and per-event limits of product mode.
#[derive(Debug, Clone)]
pub struct ProductLimits {
    /// Largest application event (JSON text plus attachments).
    pub max_event_bytes: usize,
    /// Events one socket may send per window.
    pub socket_events: u32,
    /// The per-socket window.
    pub socket_window: Duration,
}

/// Everything product-mode sessions share: identity checks and the node's actors.
pub struct Product {
    /// This node's id (`serverInstance`).
    pub node_id: String,
    /// Verifies tokens.
    pub auth: Arc<Authenticator>,
    /// The node's registry (delivery and indexes).
    pub registry: MeteredAddr<SessionRegistry>,
    /// Presence.
    pub presence: MeteredAddr<Presence>,
    /// Per-user limits.
    pub rate_limiter: MeteredAddr<RateLimiter>,
    /// Stored messages.
    pub journal: MeteredAddr<Journal>,
    /// Limits.
    pub limits: ProductLimits,
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
}

/// The authenticated socket of a product-mode session.
pub(super) struct UserState {
    socket_id: String,
    user: UserId,
    rooms: HashSet<String>,
    bucket: TokenBucket,
    /// Application events received from the client (for the connection log).
    received: u32,
    /// Application events pushed to the client (for the connection log); the registry counts
    /// the deliveries it writes straight into this socket's websocket.
    sent: Arc<AtomicU32>,
    /// When the socket was admitted (connection duration metric).
    since: Instant,
    /// `message:send` events waiting for the one in flight.
    sends: VecDeque<(MessageSend, Option<u64>)>,
    /// A `message:send` is being checked or stored.
    sending: bool,
    /// Users whose presence this socket watches (bounded by [`MAX_WATCHED`]).
    watching: HashSet<String>,
}

/// Deliver `[event, data]` to every socket of a user, encoded once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Push {
    /// Encoded frames shared by every recipient.
    pub frames: Arc<[Outgoing]>,
    /// Whether it may be dropped for a congested client.
    pub volatile: bool,
    /// The event name (metrics label).
    pub event: &'static str,
}

/// A delivery the registry tried to write straight into this socket's websocket found its
/// queue full: the client is too slow for a message that may not be dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Congested;

/// The application disconnects this socket (server API).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ServerDisconnect;

/// The node is draining: say `server:shutdown {reconnect:true}` and close (websocket 1001), so
/// the client reconnects to another node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The node is about to drain: say `server:maintenance`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Maintenance;

/// The server API changed this socket's membership of a room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRooms {
    /// The room.
    pub room: String,
    /// Member or not.
    pub member: bool,
}

/// A closed set of application error codes sent in `error` events and error acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Wrong types, missing fields, empty text.
    InvalidPayload,
    /// The event is larger than the configured maximum.
    PayloadTooLarge,
    /// No such event.
    UnknownEvent,
    /// `room:emit` to a room the socket is not in.
    NotMember,
    /// Over a rate limit.
    RateLimited,
    /// The token expired.
    TokenExpired,
    /// A node-side failure; the client may retry.
    Internal,
    /// A backing service (Redis, the database) is down; the client may retry later.
    ServiceUnavailable,
}

impl ErrorCode {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidPayload => "invalid_payload",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::NotMember => "not_member",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Internal => "internal",
            ErrorCode::ServiceUnavailable => "service_unavailable",
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bounded(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty() && s.len() <= MAX_DEVICE_LEN)
        .map(str::to_string)
}

impl Session {
    fn product(&self) -> Option<Arc<Product>> {
        self.product.clone()
    }

    /// Authenticate a CONNECT to `/` and join it, or refuse it with `auth_failed`.
    pub(super) fn product_connect(
        &mut self,
        nsp: &str,
        auth: Option<Value>,
        ctx: &mut Context<Self>,
    ) {
        let Some(product) = self.product() else {
            return;
        };
        let auth = auth.unwrap_or(Value::Null);
        let token = auth
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| self.handshake.bearer.clone())
            .or_else(|| self.handshake.query_token.clone());
        let identity = match token {
            Some(token) => product.auth.verify(&token),
            None => Err(AuthError::MissingToken),
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(err) => {
                info!(sid = %self.sid, reason = err.reason(), "auth_failed");
                metrics()
                    .connections
                    .get_or_create(&StatusLabel {
                        status: "auth_failed",
                    })
                    .inc();
                let refusal = Packet::connect_error_with_data(
                    nsp,
                    "auth_failed",
                    json!({"reason": err.reason()}),
                );
                self.send_sio(&refusal, ctx);
                return;
            }
        };
        if self.admitting.is_some() {
            // A second CONNECT while the first is still being admitted.
            return;
        }
        let socket_id = random_id();
        let device = bounded(auth.get("deviceId").and_then(Value::as_str))
            .or_else(|| bounded(self.handshake.device_id.as_deref()))
            .unwrap_or_else(|| socket_id.clone());
        let user: UserId = Arc::from(identity.user_id.as_str());
        // Admitted only once presence has the socket: in cluster mode a Redis outage refuses
        // the connection clearly instead of leaving it half-registered.
        self.admitting = Some((user.clone(), socket_id.clone()));
        let admit = product.presence.send(PresenceConnect {
            user: user.clone(),
            socket: socket_id.clone(),
            device: device.clone(),
        });
        let nsp = nsp.to_string();
        ctx.spawn(admit.into_actor(self).map(move |result, act, ctx| {
            act.admitting = None;
            let admitted = matches!(result, Ok(Ok(())));
            if act.closing.is_some() {
                if admitted {
                    product.presence.do_send(PresenceDisconnect {
                        user,
                        socket: socket_id,
                    });
                }
                return;
            }
            if !admitted {
                warn!(sid = %act.sid, "presence unavailable; connection refused");
                metrics()
                    .connections
                    .get_or_create(&StatusLabel { status: "rejected" })
                    .inc();
                let refusal = Packet::connect_error_with_data(
                    &nsp,
                    "service_unavailable",
                    json!({"reason": "service_unavailable"}),
                );
                act.send_sio(&refusal, ctx);
                return;
            }
            act.admit(&product, &nsp, identity, user, socket_id, device, ctx);
        }));
    }

    /// Join the namespace and announce the authenticated socket.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        product: &Arc<Product>,
        nsp: &str,
        identity: crate::auth::Identity,
        user: UserId,
        socket_id: String,
        device: String,
        ctx: &mut Context<Self>,
    ) {
        if let super::Upper::SocketIo(sio) = &mut self.upper {
            sio.join(nsp, &socket_id);
        }
        self.stop_connect_timer(ctx);
        self.send_sio(&Packet::connect_ok(nsp, &socket_id), ctx);
        let hello = json!({
            "socketId": socket_id,
            "userId": &*user,
            "deviceId": device,
            "serverInstance": product.node_id,
        });
        self.send_event("authenticated", hello, ctx);
        info!(
            sid = %self.sid,
            socketId = %socket_id,
            userId = %user,
            deviceId = %device,
            platform = self.handshake.platform.as_deref().unwrap_or(""),
            ipAddress = self.handshake.remote_addr.as_deref().unwrap_or(""),
            serverInstance = %product.node_id,
            event = "connect",
            "socket authenticated"
        );
        product.journal.do_send(ConnectionOpened {
            socket_id: socket_id.clone(),
            user_id: user.clone(),
            device_id: device.clone(),
            server_instance: product.node_id.clone(),
            ip_address: self.handshake.remote_addr.clone().unwrap_or_default(),
            user_agent: self.handshake.user_agent.clone(),
            connected_at: std::time::SystemTime::now(),
        });
        let sent = Arc::new(AtomicU32::new(0));
        // Only a socket already on its websocket: after a later upgrade a direct delivery could
        // overtake Pushes still waiting in this session's mailbox.
        let direct = match &self.transport {
            super::Transport::WebSocket(link) => Some(DirectLink {
                out: link.out.clone(),
                sent: sent.clone(),
            }),
            _ => None,
        };
        // After the `authenticated` event above: nothing delivered here can overtake it.
        product.registry.do_send(Authenticated {
            sid: self.sid.clone(),
            socket_id: socket_id.clone(),
            device,
            user: user.clone(),
            rooms: identity.rooms.clone(),
            direct,
        });
        let expires_in = identity
            .expires_at
            .saturating_add(product.auth.leeway_secs())
            .saturating_sub(unix_now());
        // Capped: a far-future `exp` must not overflow the timer's deadline.
        let expires_in = Duration::from_secs(expires_in.min(MAX_TOKEN_LIFETIME_SECS));
        ctx.run_later(expires_in, |act, ctx| act.token_expired(ctx));
        self.user = Some(UserState {
            socket_id,
            user,
            rooms: identity.rooms.into_iter().collect(),
            bucket: TokenBucket::new(
                product.limits.socket_events,
                product.limits.socket_window,
                Instant::now(),
            ),
            received: 0,
            sent,
            since: Instant::now(),
            sends: VecDeque::new(),
            sending: false,
            watching: HashSet::new(),
        });
        let m = metrics();
        m.connections
            .get_or_create(&StatusLabel { status: "accepted" })
            .inc();
        m.connections_active.inc();
    }

    fn token_expired(&mut self, ctx: &mut Context<Self>) {
        self.send_event(
            "error",
            json!({"code": ErrorCode::TokenExpired.as_str(), "message": "the token expired"}),
            ctx,
        );
        self.send_sio(&Packet::disconnect("/"), ctx);
        self.close(CloseReason::TokenExpired, ctx);
    }

    /// The session is gone: its user's socket leaves presence.
    pub(super) fn product_stopped(&mut self) {
        // Stopped while presence was admitting the socket: the answer will never be handled, so
        // withdraw it now (the presence mailbox keeps the order: connect, then this).
        if let (Some(product), Some((user, socket))) = (&self.product, self.admitting.take()) {
            product
                .presence
                .do_send(PresenceDisconnect { user, socket });
        }
        if let (Some(product), Some(user)) = (&self.product, self.user.take()) {
            let reason = self.closing.unwrap_or(CloseReason::ServerShutdown);
            info!(
                sid = %self.sid,
                socketId = %user.socket_id,
                userId = %user.user,
                ipAddress = self.handshake.remote_addr.as_deref().unwrap_or(""),
                serverInstance = %product.node_id,
                event = "disconnect",
                reason = reason.as_str(),
                duration = user.since.elapsed().as_millis() as u64,
                messagesReceived = user.received,
                messagesSent = user.sent.load(Ordering::Relaxed),
                "socket disconnected"
            );
            let m = metrics();
            m.connections_active.dec();
            m.connection_duration
                .observe(user.since.elapsed().as_secs_f64());
            let reason = self.closing.unwrap_or(CloseReason::ServerShutdown);
            product.journal.do_send(ConnectionClosed {
                socket_id: user.socket_id.clone(),
                reason: reason.as_str().to_string(),
                messages_sent: user.sent.load(Ordering::Relaxed),
                messages_received: user.received,
                disconnected_at: std::time::SystemTime::now(),
            });
            product.presence.do_send(PresenceDisconnect {
                user: user.user,
                socket: user.socket_id,
            });
        }
    }

    fn send_event(&mut self, event: &str, data: Value, ctx: &mut Context<Self>) {
        crate::metrics::message_sent(event_label(event));
        self.send_sio(&Packet::event("/", event, vec![data]), ctx);
    }

    fn ack(&mut self, id: u64, data: Value, ctx: &mut Context<Self>) {
        self.send_sio(&Packet::ack("/", id, vec![data], Vec::new()), ctx);
    }

    fn reply_ok(&mut self, id: Option<u64>, data: Value, ctx: &mut Context<Self>) {
        if let Some(id) = id {
            self.ack(id, data, ctx);
        }
    }

    /// An error goes to the ack when the client asked for one, else to an `error` event.
    fn reply_error(
        &mut self,
        id: Option<u64>,
        code: ErrorCode,
        message: &str,
        ctx: &mut Context<Self>,
    ) {
        metrics().error(code.as_str());
        let error = json!({"code": code.as_str(), "message": message});
        match id {
            Some(id) => self.ack(id, json!({"ok": false, "error": error}), ctx),
            None => self.send_event("error", error, ctx),
        }
    }

    fn rate_limited(&mut self, id: Option<u64>, retry: Duration, ctx: &mut Context<Self>) {
        metrics().error("rate_limited");
        let retry_ms = crate::ratelimit::ceil_millis(retry).max(1);
        self.send_event("rate_limited", json!({"retryAfterMs": retry_ms}), ctx);
        if let Some(id) = id {
            let error = json!({
                "code": ErrorCode::RateLimited.as_str(),
                "message": "rate limit exceeded",
                "retryAfterMs": retry_ms,
            });
            self.ack(id, json!({"ok": false, "error": error}), ctx);
        }
    }

    /// One application event from the authenticated socket.
    pub(super) fn product_event(
        &mut self,
        data: Vec<Value>,
        id: Option<u64>,
        size: usize,
        ctx: &mut Context<Self>,
    ) {
        let Some(product) = self.product() else {
            return;
        };
        let Some(user) = self.user.as_mut() else {
            return;
        };
        user.received = user.received.saturating_add(1);
        let name = data.first().and_then(Value::as_str).unwrap_or_default();
        metrics()
            .messages_received
            .get_or_create(&EventLabel {
                event_type: event_label(name),
            })
            .inc();
        if let Err(retry) = user.bucket.try_take(Instant::now()) {
            self.rate_limited(id, retry, ctx);
            return;
        }
        if size > product.limits.max_event_bytes {
            let message = format!(
                "events are limited to {} bytes",
                product.limits.max_event_bytes
            );
            self.reply_error(id, ErrorCode::PayloadTooLarge, &message, ctx);
            return;
        }
        let name = data.first().and_then(Value::as_str).unwrap_or_default();
        let arg = data.get(1);
        let result = match name {
            "message:send" => events::parse(arg).map(|p| self.message_send(&product, p, id, ctx)),
            "message:sync" => events::parse(arg.or(Some(&json!({}))))
                .map(|p| self.message_sync(&product, p, id, ctx)),
            "typing" => events::parse(arg).map(|p| self.typing(&product, p, id, ctx)),
            "signal" => events::parse(arg).map(|p| self.signal(&product, p, id, ctx)),
            "room:emit" => events::parse(arg).map(|p| self.room_emit(&product, p, id, ctx)),
            "presence:subscribe" => {
                events::parse(arg).map(|p| self.presence_watch(&product, p, true, id, ctx))
            }
            "presence:unsubscribe" => {
                events::parse(arg).map(|p| self.presence_watch(&product, p, false, id, ctx))
            }
            "presence:query" => {
                events::parse(arg).map(|p| self.presence_query(&product, p, id, ctx))
            }
            "status:set" => events::parse(arg).map(|p| self.status_set(&product, p, id, ctx)),
            _ => {
                let message = format!("unknown event {name:?}");
                self.reply_error(id, ErrorCode::UnknownEvent, &message, ctx);
                return;
            }
        };
        if let Err(message) = result {
            self.reply_error(id, ErrorCode::InvalidPayload, &message, ctx);
        }
    }

    fn me(&self) -> Option<(UserId, crate::transport::Sid)> {
        self.user
            .as_ref()
            .map(|u| (u.user.clone(), self.sid.clone()))
    }

    /// Queue a `message:send`: each socket has one in flight at a time, so its messages are
    /// stored, acked and delivered in the order it sent them.
    fn message_send(
        &mut self,
        product: &Arc<Product>,
        msg: MessageSend,
        id: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let Some(user) = self.user.as_mut() else {
            return;
        };
        if user.sends.len() >= MAX_QUEUED_SENDS {
            let message = "too many messages waiting for the database; slow down";
            self.reply_error(id, ErrorCode::ServiceUnavailable, message, ctx);
            return;
        }
        user.sends.push_back((msg, id));
        if !user.sending {
            self.next_send(product, ctx);
        }
    }

    /// Start the oldest queued `message:send`, if any.
    fn next_send(&mut self, product: &Arc<Product>, ctx: &mut Context<Self>) {
        let Some(state) = self.user.as_mut() else {
            return;
        };
        let Some((msg, id)) = state.sends.pop_front() else {
            state.sending = false;
            return;
        };
        state.sending = true;
        let (user, sid) = (state.user.clone(), self.sid.clone());
        let text = events::sanitize_text(&msg.text);
        let product = product.clone();
        let check = product
            .rate_limiter
            .send(CheckMessage { user: user.clone() });
        ctx.spawn(check.into_actor(self).map(move |verdict, act, ctx| {
            let refusal = match verdict {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(retry))) => Some(Err(retry)),
                Ok(Err(err)) => {
                    warn!(%err, "rate limiter unavailable");
                    Some(Ok((ErrorCode::ServiceUnavailable, "try again later")))
                }
                Err(err) => {
                    warn!(%err, "rate limiter unavailable");
                    Some(Ok((ErrorCode::Internal, "try again")))
                }
            };
            if let Some(refusal) = refusal {
                match refusal {
                    Err(retry) => act.rate_limited(id, retry, ctx),
                    Ok((code, message)) => act.reply_error(id, code, message, ctx),
                }
                return act.next_send(&product, ctx);
            }
            let store = product.journal.send(StoreMessage {
                from: user,
                to: msg.to,
                text,
            });
            ctx.spawn(store.into_actor(act).map(move |stored, act, ctx| {
                match stored {
                    Ok(Ok(stored)) => {
                        act.reply_ok(
                            id,
                            json!({"ok": true, "messageId": stored.message_id, "createdAt": stored.created_at}),
                            ctx,
                        );
                        let body = serde_json::to_value(&stored).unwrap_or(Value::Null);
                        product.registry.do_send(Deliver {
                            target: Target::User(stored.to.clone()),
                            frames: encode_event("message:received", body.clone()),
                            except: None,
                            volatile: false,
                            event: "message:received",
                        });
                        product.registry.do_send(Deliver {
                            target: Target::User(stored.from.clone()),
                            frames: encode_event("message:sent", body),
                            except: Some(sid),
                            volatile: false,
                            event: "message:sent",
                        });
                    }
                    Ok(Err(JournalError::Invalid(why))) => {
                        act.reply_error(id, ErrorCode::InvalidPayload, why, ctx)
                    }
                    Ok(Err(err)) if err.is_unavailable() => {
                        warn!(%err, "journal unavailable");
                        act.reply_error(id, ErrorCode::ServiceUnavailable, "try again later", ctx);
                    }
                    Ok(Err(err)) => {
                        warn!(%err, "journal error");
                        act.reply_error(id, ErrorCode::Internal, "try again", ctx);
                    }
                    Err(err) => {
                        warn!(%err, "journal mailbox");
                        act.reply_error(id, ErrorCode::Internal, "try again", ctx);
                    }
                }
                act.next_send(&product, ctx);
            }));
        }));
    }

    fn message_sync(
        &mut self,
        product: &Arc<Product>,
        msg: MessageSync,
        id: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let Some((user, _)) = self.me() else { return };
        let page = product.journal.send(SyncMessages {
            user,
            after: msg.after,
            limit: msg.page_size(),
        });
        ctx.spawn(page.into_actor(self).map(move |page, act, ctx| match page {
            Ok(Ok(page)) => act.reply_ok(
                id,
                json!({"ok": true, "messages": page.messages, "hasMore": page.has_more}),
                ctx,
            ),
            Ok(Err(err)) if err.is_unavailable() => {
                act.reply_error(id, ErrorCode::ServiceUnavailable, "try again later", ctx)
            }
            Ok(Err(_)) | Err(_) => act.reply_error(id, ErrorCode::Internal, "try again", ctx),
        }));
    }

    fn typing(
        &mut self,
        product: &Arc<Product>,
        msg: Typing,
        id: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let Some((user, _)) = self.me() else { return };
        product.registry.do_send(Deliver {
            target: Target::User(msg.to),
            frames: encode_event("typing", json!({"from": &*user})),
            except: None,
            volatile: true,
            event: "typing",
        });
        self.reply_ok(id, json!({"ok": true}), ctx);
    }

    fn signal(
        &mut self,
        product: &Arc<Product>,
        msg: Signal,
        id: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let Some((user, _)) = self.me() else { return };
        product.registry.do_send(Deliver {
            target: Target::User(msg.to),
            frames: encode_event("signal", json!({"from": &*user, "data": msg.data})),
            except: None,
            volatile: true,
            event: "signal",
        });
        self.reply_ok(id, json!({"ok": true}), ctx);
    }

    fn room_emit(
        &mut self,
        product: &Arc<Product>,
        msg: RoomEmit,
        id: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let Some(user) = &self.user else { return };
        if !user.rooms.contains(&msg.room) {
            let message = format!("not a member of room {:?}", msg.room);
            self.reply_error(id, ErrorCode::NotMember, &message, ctx);
            return;
        }
        let frames = encode_event(
            "room:msg",
            json!({"room": msg.room, "from": &*user.user, "data": msg.data}),
        );
        product.registry.do_send(Deliver {
            target: Target::Room(msg.room),
            frames,
            except: None,
            volatile: true,
            event: "room:msg",
        });
        self.reply_ok(id, json!({"ok": true}), ctx);
    }

    fn presence_watch(
        &mut self,
        product: &Arc<Product>,
        msg: PresenceUsers,
        watch: bool,
        id: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let Some(user) = self.user.as_mut() else {
            return;
        };
        if watch {
            let added = msg
                .user_ids
                .iter()
                .filter(|u| !user.watching.contains(*u))
                .count();
            if user.watching.len() + added > MAX_WATCHED {
                let message = format!("a socket may watch at most {MAX_WATCHED} users");
                self.reply_error(id, ErrorCode::InvalidPayload, &message, ctx);
                return;
            }
            user.watching.extend(msg.user_ids.iter().cloned());
        } else {
            for u in &msg.user_ids {
                user.watching.remove(u);
            }
        }
        // Watch first, then read statuses: a transition in between is reported, never missed.
        product.registry.do_send(Watch {
            sid: self.sid.clone(),
            users: msg.user_ids.clone(),
            watch,
        });
        if watch {
            self.presence_query(product, msg, id, ctx);
        } else {
            self.reply_ok(id, json!({"ok": true}), ctx);
        }
    }

    fn presence_query(
        &mut self,
        product: &Arc<Product>,
        msg: PresenceUsers,
        id: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let query = product.presence.send(QueryStatuses {
            users: msg.user_ids,
        });
        ctx.spawn(
            query
                .into_actor(self)
                .map(move |statuses, act, ctx| match statuses {
                    Ok(Ok(statuses)) => {
                        let statuses: serde_json::Map<String, Value> = statuses
                            .into_iter()
                            .map(|(u, s)| (u, Value::from(s.as_str())))
                            .collect();
                        act.reply_ok(id, json!({"ok": true, "statuses": statuses}), ctx);
                    }
                    Ok(Err(_)) => act.reply_error(
                        id,
                        ErrorCode::ServiceUnavailable,
                        "presence is unavailable; try again later",
                        ctx,
                    ),
                    Err(_) => act.reply_error(id, ErrorCode::Internal, "try again", ctx),
                }),
        );
    }

    fn status_set(
        &mut self,
        product: &Arc<Product>,
        msg: StatusSet,
        id: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let Some((user, _)) = self.me() else { return };
        let Some(status) = Status::settable(&msg.status) else {
            return;
        };
        let set = product.presence.send(SetStatus { user, status });
        ctx.spawn(
            set.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(Ok(())) => act.reply_ok(id, json!({"ok": true}), ctx),
                    _ => act.reply_error(
                        id,
                        ErrorCode::ServiceUnavailable,
                        "presence is unavailable; try again later",
                        ctx,
                    ),
                }),
        );
    }
}

impl Handler<Push> for Session {
    type Result = ();

    fn handle(&mut self, msg: Push, ctx: &mut Context<Self>) {
        if let Some(user) = &self.user {
            user.sent.fetch_add(1, Ordering::Relaxed);
        }
        crate::metrics::message_sent(msg.event);
        for frame in msg.frames.iter() {
            self.send_frame(frame.clone(), msg.volatile, ctx);
        }
    }
}

impl Handler<Congested> for Session {
    type Result = ();

    fn handle(&mut self, _msg: Congested, ctx: &mut Context<Self>) {
        self.close(CloseReason::SlowClient, ctx);
    }
}

impl Handler<ServerDisconnect> for Session {
    type Result = ();

    fn handle(&mut self, _msg: ServerDisconnect, ctx: &mut Context<Self>) {
        if self.user.is_some() {
            self.send_sio(&Packet::disconnect("/"), ctx);
        }
        self.close(CloseReason::ServerDisconnect, ctx);
    }
}

impl Handler<Maintenance> for Session {
    type Result = ();

    fn handle(&mut self, _msg: Maintenance, ctx: &mut Context<Self>) {
        if self.user.is_some() {
            self.send_event("server:maintenance", json!({"reconnect": true}), ctx);
        }
    }
}

impl Handler<Shutdown> for Session {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        if self.user.is_some() {
            self.send_event("server:shutdown", json!({"reconnect": true}), ctx);
        }
        self.close(CloseReason::ServerShutdown, ctx);
    }
}

impl Handler<SetRooms> for Session {
    type Result = ();

    fn handle(&mut self, msg: SetRooms, _ctx: &mut Context<Self>) {
        if let Some(user) = &mut self.user {
            if msg.member {
                user.rooms.insert(msg.room);
            } else {
                user.rooms.remove(&msg.room);
            }
        }
    }
}
