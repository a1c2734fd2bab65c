//! A socket's life: JWT auth at CONNECT, admission through presence, the `authenticated`
//! announcement, the token's expiry, disconnects, and the clean-up when the session ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use switchboard_protocol::events::EventName;
use switchboard_protocol::socketio::Packet;
use tracing::{info, warn};

use super::errors::Refusal;
use super::{Conn, Done, RoomClaim, Socket, User, event, settle_quietly, work};
use crate::auth::{AuthError, Identity};
use crate::ids::{Room, Sid, SocketId, UserId};
use crate::metrics::metrics;
use crate::ports::hooks::FailurePolicy;
use crate::ports::hooks::{AskConnect, ConnectAnswer, ConnectRequest, HookFailure};
use crate::ports::journal::MembershipsOf;
use crate::ports::journal::{ConnectionClosed, ConnectionOpened};
use crate::ports::presence::{PresenceConnect, PresenceDisconnect, SocketPresence};
use crate::ports::registry::{Authenticated, DirectLink};
use crate::ratelimit::TokenBucket;
use crate::transport::CloseReason;

/// Longest a socket's token timer runs (ten years); later expiries are treated as this.
const MAX_TOKEN_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

/// Longest device id or platform name kept from a client.
const MAX_DEVICE_LEN: usize = 128;

/// Longest the durable room memberships may take to load at connect; past it the socket
/// connects without them (logged), rather than waiting on a slow database.
const MEMBERSHIPS_TIMEOUT: Duration = Duration::from_secs(1);

/// A CONNECT whose token checked out, on its way through the backend's `connect` hook and
/// presence.
pub struct Admission {
    nsp: String,
    identity: Identity,
    user: UserId,
    socket: SocketId,
    device: String,
    /// Rooms to join: the token's, the backend's, the durable memberships.
    rooms: Vec<Room>,
    /// The backend's `data`, echoed in `authenticated`.
    data: Option<Value>,
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

/// Authenticate a CONNECT to `nsp` and ask presence to admit it, or refuse it with
/// `auth_failed`.
pub(super) fn connect(s: &mut Socket, conn: &mut dyn Conn, nsp: String, auth: Option<Value>) {
    let auth = auth.unwrap_or(Value::Null);
    let token = auth
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| s.handshake.bearer.clone())
        .or_else(|| s.handshake.query_token.clone());
    let identity = match token {
        Some(token) => s.app.auth.verify(&token),
        None => Err(AuthError::MissingToken),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(err) => {
            info!(sid = %conn.sid(), reason = err.reason(), "auth_failed");
            metrics().connection("auth_failed");
            let refusal = Packet::connect_error_with_data(
                &nsp,
                "auth_failed",
                json!({"reason": err.reason()}),
            );
            conn.refuse_connect(&refusal);
            return;
        }
    };
    if s.admitting.is_some() {
        // A second CONNECT while the first is still being admitted.
        return;
    }
    let socket = SocketId::random();
    let device = bounded(auth.get("deviceId").and_then(Value::as_str))
        .or_else(|| bounded(s.handshake.device_id.as_deref()))
        .unwrap_or_else(|| socket.to_string());
    let user = UserId::from(identity.user_id.as_str());
    s.admitting = Some((user.clone(), socket.clone()));
    let admission = Box::new(Admission {
        nsp,
        rooms: identity.rooms.iter().map(Room::from).collect(),
        identity,
        user,
        socket,
        device,
        data: None,
    });
    let Some(hooks) = &s.app.hooks else {
        return admit(s, conn, admission);
    };
    let mut auth = auth;
    if let Some(map) = auth.as_object_mut() {
        map.remove("token");
    }
    let request = ConnectRequest {
        user_id: admission.user.to_string(),
        device_id: admission.device.clone(),
        socket_id: admission.socket.to_string(),
        node_id: s.app.node_id.to_string(),
        claims: admission.identity.claims.clone(),
        auth,
        ip: s.handshake.remote_addr.clone(),
        user_agent: s.handshake.user_agent.clone(),
        origin: s.handshake.origin.clone(),
    };
    let asked = hooks.connect.send(AskConnect { request });
    conn.spawn(work(async move {
        let answer = match asked.await {
            Ok(answer) => answer,
            Err(_) => Err(HookFailure::Unreachable(
                "the hooks actor is restarting".into(),
            )),
        };
        Done::ConnectHooked(admission, answer)
    }));
}

/// The backend's `connect` hook answered: go on to presence, or refuse the CONNECT.
pub(super) fn hooked(
    s: &mut Socket,
    conn: &mut dyn Conn,
    mut admission: Admission,
    answer: Result<ConnectAnswer, HookFailure>,
) {
    if conn.closing() {
        s.admitting = None;
        return;
    }
    let refusal = match answer {
        Ok(ConnectAnswer::Allow { rooms, data }) => {
            for room in rooms {
                if !admission.rooms.contains(&room) {
                    admission.rooms.push(room);
                }
            }
            admission.data = data;
            return admit(s, conn, Box::new(admission));
        }
        Ok(ConnectAnswer::Refuse { reason }) => {
            info!(sid = %conn.sid(), userId = %admission.user, %reason, "connect_refused");
            metrics().connection("refused");
            ("connect_refused", reason)
        }
        Err(failure) => {
            let open = s.app.hooks.as_ref().map(|h| h.failure) == Some(FailurePolicy::Open);
            warn!(sid = %conn.sid(), %failure, open, "connect hook failed");
            if open {
                return admit(s, conn, Box::new(admission));
            }
            metrics().connection("rejected");
            ("service_unavailable", "backend_unavailable".to_string())
        }
    };
    s.admitting = None;
    let (message, reason) = refusal;
    conn.refuse_connect(&Packet::connect_error_with_data(
        &admission.nsp,
        message,
        json!({ "reason": reason }),
    ));
}

/// Load the durable room memberships, then have presence admit the socket: in cluster mode a
/// Redis outage refuses the connection clearly instead of leaving it half-registered.
fn admit(s: &mut Socket, conn: &mut dyn Conn, mut admission: Box<Admission>) {
    let ports = &s.app.ports;
    let memberships = ports.memberships_of.send(MembershipsOf {
        user: admission.user.clone(),
    });
    let presence = ports.presence_connect.clone();
    conn.spawn(work(async move {
        match tokio::time::timeout(MEMBERSHIPS_TIMEOUT, memberships).await {
            Ok(Ok(Ok(rooms))) => {
                for room in rooms {
                    if !admission.rooms.contains(&room) {
                        admission.rooms.push(room);
                    }
                }
            }
            other => {
                let why = match other {
                    Ok(Ok(Err(err))) => err.to_string(),
                    Ok(Err(err)) => err.to_string(),
                    _ => "no answer in time".to_string(),
                };
                warn!(userId = %admission.user, %why, "durable room memberships not loaded");
                metrics().error("memberships_unavailable");
            }
        }
        let admitted = presence.send(PresenceConnect {
            socket: SocketPresence {
                user: admission.user.clone(),
                socket: admission.socket.clone(),
                device: admission.device.clone(),
                rooms: admission.rooms.clone(),
            },
        });
        let result = settle_quietly(admitted.await);
        Done::Admitted(admission, result)
    }));
}

/// Presence answered: join the namespace and announce the socket, or refuse the CONNECT.
pub(super) fn admitted(
    s: &mut Socket,
    conn: &mut dyn Conn,
    admission: Admission,
    result: Result<(), Refusal>,
) {
    s.admitting = None;
    let Admission {
        nsp,
        identity,
        user,
        socket,
        device,
        rooms,
        data,
    } = admission;
    if conn.closing() {
        if result.is_ok() {
            s.app
                .ports
                .presence_disconnect
                .do_send(PresenceDisconnect { user, socket });
        }
        return;
    }
    if result.is_err() {
        warn!(sid = %conn.sid(), "presence unavailable; connection refused");
        metrics().connection("rejected");
        let refusal = Packet::connect_error_with_data(
            &nsp,
            "service_unavailable",
            json!({"reason": "service_unavailable"}),
        );
        conn.refuse_connect(&refusal);
        return;
    }
    let app = s.app.clone();
    conn.join(&nsp, &socket);
    conn.emit(&Packet::connect_ok(&nsp, &socket));
    let mut hello = json!({
        "socketId": socket,
        "userId": user,
        "deviceId": device,
        "serverInstance": app.node_id,
    });
    if let Some(data) = data {
        hello["data"] = data;
    }
    event(conn, EventName::Authenticated, hello);
    info!(
        sid = %conn.sid(),
        socketId = %socket,
        userId = %user,
        deviceId = %device,
        platform = s.handshake.platform.as_deref().unwrap_or(""),
        ipAddress = s.handshake.remote_addr.as_deref().unwrap_or(""),
        serverInstance = %app.node_id,
        event = "connect",
        "socket authenticated"
    );
    app.ports.connection_opened.do_send(ConnectionOpened {
        socket_id: socket.clone(),
        user_id: user.clone(),
        device_id: device.clone(),
        server_instance: app.node_id.clone(),
        ip_address: s.handshake.remote_addr.clone().unwrap_or_default(),
        user_agent: s.handshake.user_agent.clone(),
        connected_at: SystemTime::now(),
    });
    let sent = Arc::new(AtomicU32::new(0));
    // Only a socket already on its websocket: after a later upgrade a direct delivery could
    // overtake Pushes still waiting in the session's mailbox.
    let direct = conn.direct_link().map(|out| DirectLink {
        out,
        sent: sent.clone(),
    });
    // After the `authenticated` event above: nothing delivered here can overtake it.
    app.ports.authenticated.do_send(Authenticated {
        sid: conn.sid().clone(),
        socket: socket.clone(),
        device,
        user: user.clone(),
        rooms: rooms.clone(),
        direct,
    });
    let expires_in = identity
        .expires_at
        .saturating_add(app.auth.leeway_secs())
        .saturating_sub(unix_now());
    // Capped: a far-future `exp` must not overflow the timer's deadline.
    let expires_in = Duration::from_secs(expires_in.min(MAX_TOKEN_LIFETIME_SECS));
    conn.later(expires_in, Done::TokenExpired);
    s.user = Some(User {
        socket,
        user,
        rooms: rooms.into_iter().collect(),
        claim: Arc::new(RoomClaim {
            rooms: identity.rooms,
            patterns: identity.room_patterns,
        }),
        bucket: TokenBucket::new(
            app.limits.socket_events,
            app.limits.socket_window,
            Instant::now(),
        ),
        received: 0,
        sent,
        since: Instant::now(),
        sends: Default::default(),
        sending: false,
        watching: Default::default(),
    });
    let m = metrics();
    m.connection("accepted");
    m.connections_active.inc();
}

/// The token expired: say so and disconnect.
pub(super) fn token_expired(s: &mut Socket, conn: &mut dyn Conn) {
    if s.user.is_none() {
        return;
    }
    let refusal = Refusal::token_expired();
    event(
        conn,
        EventName::Error,
        json!({"code": refusal.code.as_str(), "message": refusal.message}),
    );
    conn.emit(&Packet::disconnect("/"));
    conn.close(CloseReason::TokenExpired);
}

/// The server API disconnects this socket.
pub(super) fn disconnect(s: &mut Socket, conn: &mut dyn Conn) {
    if s.user.is_some() {
        conn.emit(&Packet::disconnect("/"));
    }
    conn.close(CloseReason::ServerDisconnect);
}

/// The session is gone: the socket leaves presence and its connection row closes.
pub(super) fn stopped(s: &mut Socket, sid: &Sid, reason: Option<CloseReason>) {
    let app = &s.app;
    // Stopped while presence was admitting the socket: the answer will never be handled, so
    // withdraw it now (the presence mailbox keeps the order: connect, then this).
    if let Some((user, socket)) = s.admitting.take() {
        app.ports
            .presence_disconnect
            .do_send(PresenceDisconnect { user, socket });
    }
    let Some(user) = s.user.take() else { return };
    let reason = reason.unwrap_or(CloseReason::ServerShutdown);
    let sent = user.sent.load(Ordering::Relaxed);
    info!(
        sid = %sid,
        socketId = %user.socket,
        userId = %user.user,
        ipAddress = s.handshake.remote_addr.as_deref().unwrap_or(""),
        serverInstance = %app.node_id,
        event = "disconnect",
        reason = reason.as_str(),
        duration = user.since.elapsed().as_millis() as u64,
        messagesReceived = user.received,
        messagesSent = sent,
        "socket disconnected"
    );
    let m = metrics();
    m.connections_active.dec();
    m.connection_duration
        .observe(user.since.elapsed().as_secs_f64());
    app.ports.connection_closed.do_send(ConnectionClosed {
        socket_id: user.socket.clone(),
        user_id: user.user.clone(),
        server_instance: app.node_id.clone(),
        reason: reason.as_str().to_string(),
        messages_sent: sent,
        messages_received: user.received,
        disconnected_at: SystemTime::now(),
    });
    app.ports.presence_disconnect.do_send(PresenceDisconnect {
        user: user.user,
        socket: user.socket,
    });
}
