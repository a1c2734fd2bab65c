//! A socket's life: JWT auth at CONNECT, admission through presence, the `authenticated`
//! announcement, the token's expiry, disconnects, and the clean-up when the session ends.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use switchboard_protocol::events::{EventName, check_id};
use switchboard_protocol::socketio::Packet;
use tracing::{info, warn};

use super::errors::Refusal;
use std::collections::{BTreeMap, HashSet};

use switchboard_protocol::offset::{Offset, append_offset};

use super::{Conn, Done, RoomClaim, Socket, User, event, settle_quietly, work};
use crate::auth::{AuthError, Identity};
use crate::ids::{Room, Sid, SocketId, UserId};
use crate::keys::Channel;
use crate::metrics::metrics;
use crate::ports::bridge::{Hold, Release};
use crate::ports::hooks::FailurePolicy;
use crate::ports::hooks::{AskConnect, ConnectAnswer, ConnectRequest, HookFailure};
use crate::ports::journal::MembershipsOf;
use crate::ports::journal::{ConnectionClosed, ConnectionOpened};
use crate::ports::presence::{Admit, PresenceConnect, PresenceDisconnect, SocketPresence};
use crate::ports::recovery::{Recorded, SaveSession, SavedSession, TakeSession};
use crate::ports::registry::{Authenticated, DirectLink};
use crate::ports::registry::{Recover, Watch};
use crate::ports::session::Push;
use crate::ratelimit::TokenBucket;
use crate::transport::CloseReason;
use crate::transport::Outgoing;

/// Refused logins after which a connection is closed (`login_refused`).
const MAX_LOGIN_FAILURES: u8 = 3;

/// CONNECT packets a connection may send before it is admitted (a refused namespace or a
/// retry after a hook failure count too); past them it is closed.
const MAX_CONNECTS_BEFORE_LOGIN: u8 = 8;

/// Longest a socket's token timer runs (ten years); later expiries are treated as this.
const MAX_TOKEN_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

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
    /// A recovery asked for: the client's `pid` and last offset.
    attempt: Option<(String, Offset)>,
    /// The state the client's `pid` named (its socket id is `socket` now).
    restored: Option<SavedSession>,
    /// Its channels are held at the bridge until the registry needs them (cluster mode).
    held: bool,
}

/// A recovered socket waiting for its missed events: what its CONNECT answer and
/// `authenticated` still need, and the deliveries held meanwhile.
pub struct Recovering {
    nsp: String,
    pid: String,
    hello: Value,
    /// Deliveries that arrived during the replay, in order.
    pub(super) held: Vec<Push>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Authenticate a CONNECT to `nsp` and ask presence to admit it, or refuse it with
/// `auth_failed`.
pub(super) fn connect(s: &mut Socket, conn: &mut dyn Conn, nsp: String, auth: Option<Value>) {
    if s.admitting.is_some() {
        // A second CONNECT while the first is still being admitted.
        return;
    }
    // Each CONNECT costs a token check: a connection gets a few, an address a few a minute.
    s.connects = s.connects.saturating_add(1);
    if s.connects > MAX_CONNECTS_BEFORE_LOGIN {
        return conn.close(CloseReason::LoginRefused);
    }
    if client_ip(s).is_some_and(|ip| s.app.logins.blocked(ip, Instant::now())) {
        return refuse_login(s, conn, &nsp, "too_many_attempts");
    }
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
        Err(err) => return refuse_login(s, conn, &nsp, err.reason()),
    };
    // The device the client names (auth, else the header): checked like every id, and bound
    // to the token's `did` when it has one.
    let named = match auth.get("deviceId") {
        Some(Value::String(d)) => Some(d.clone()),
        Some(Value::Null) | None => s.handshake.device_id.clone(),
        Some(_) => return refuse_login(s, conn, &nsp, "invalid_device_id"),
    };
    // An empty one is no device id (the socket id stands in), as before.
    let named = named.filter(|d| !d.is_empty());
    if named.as_deref().is_some_and(|d| check_id(d).is_err()) {
        return refuse_login(s, conn, &nsp, "invalid_device_id");
    }
    if let Some(did) = &identity.device
        && named.as_deref() != Some(did.as_str())
    {
        return refuse_login(s, conn, &nsp, "device_mismatch");
    }
    let socket = SocketId::random();
    let device = named.unwrap_or_else(|| socket.to_string());
    let user = UserId::from(identity.user_id.as_str());
    s.admitting = Some((user.clone(), socket.clone()));
    // socket.io-client sends `{pid, offset}` (beside the app's own auth) when it reconnects.
    let recovery = s.app.recovery.as_ref().filter(|_| !s.handshake.legacy);
    let attempt = match (recovery, auth.get("pid"), auth.get("offset")) {
        (Some(_), Some(Value::String(pid)), Some(Value::String(offset))) => offset
            .parse::<Offset>()
            .ok()
            .filter(|_| !pid.is_empty() && pid.len() <= 64)
            .map(|offset| (pid.clone(), offset)),
        _ => None,
    };
    let admission = Box::new(Admission {
        nsp,
        rooms: identity.rooms.iter().map(Room::from).collect(),
        identity,
        user,
        socket,
        device,
        data: None,
        attempt,
        restored: None,
        held: false,
    });
    let mut auth = auth;
    if let Some(map) = auth.as_object_mut() {
        for key in ["token", "pid", "offset"] {
            map.remove(key);
        }
    }
    match (&s.app.recovery, &admission.attempt) {
        (Some(recovery), Some((pid, _))) => {
            let take = recovery.take.send(TakeSession {
                pid: pid.clone(),
                user: admission.user.to_string(),
            });
            s.pending_auth = Some(auth);
            conn.spawn(work(async move {
                let saved = match take.await {
                    Ok(Ok(saved)) => saved,
                    _ => None,
                };
                Done::Taken(admission, saved)
            }));
        }
        _ => ask_backend(s, conn, admission, auth),
    }
}

/// Refuse a CONNECT whose credentials did not check out with `auth_failed`; the connection
/// closes after [`MAX_LOGIN_FAILURES`] of them, or at once when its address is over budget.
fn refuse_login(s: &mut Socket, conn: &mut dyn Conn, nsp: &str, reason: &'static str) {
    let now = Instant::now();
    let ip = client_ip(s);
    if let Some(suppressed) = s.app.auth_log.admit(now) {
        let ip = s.handshake.remote_addr.as_deref().unwrap_or("");
        info!(session = %conn.sid().public(), ip, reason, suppressed, "auth_failed");
    }
    metrics().connection("auth_failed");
    let over_budget = reason == "too_many_attempts";
    if let Some(ip) = ip.filter(|_| !over_budget) {
        s.app.logins.failed(ip, now);
    }
    s.failures = s.failures.saturating_add(1);
    conn.refuse_connect(&Packet::connect_error_with_data(
        nsp,
        "auth_failed",
        json!({ "reason": reason }),
    ));
    if (over_budget || s.failures >= MAX_LOGIN_FAILURES) && !conn.closing() {
        conn.close(CloseReason::LoginRefused);
    }
}

/// The client's address, when the handshake had one.
fn client_ip(s: &Socket) -> Option<IpAddr> {
    s.handshake.remote_addr.as_deref()?.parse().ok()
}

/// The recovery store answered: a state of the same user is restored (its socket id, rooms
/// and watches), anything else connects as a new socket.
pub(super) fn taken(
    s: &mut Socket,
    conn: &mut dyn Conn,
    mut admission: Admission,
    saved: Option<SavedSession>,
) {
    let auth = s.pending_auth.take().unwrap_or(Value::Null);
    if conn.closing() {
        s.admitting = None;
        return;
    }
    // A pid is no proof of identity: the token's user must be the one who left it.
    if let Some(saved) = saved.filter(|saved| saved.user == *admission.user) {
        admission.socket = SocketId::from(saved.socket.as_str());
        for room in &saved.rooms {
            let room = Room::from(room.as_str());
            if !admission.rooms.contains(&room) {
                admission.rooms.push(room);
            }
        }
        s.admitting = Some((admission.user.clone(), admission.socket.clone()));
        admission.restored = Some(saved);
    }
    ask_backend(s, conn, Box::new(admission), auth);
}

/// Ask the backend's `connect` hook (when there is a backend), then admit.
fn ask_backend(s: &mut Socket, conn: &mut dyn Conn, admission: Box<Admission>, auth: Value) {
    let Some(hooks) = &s.app.hooks else {
        return admit(s, conn, admission);
    };
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
    let asked = hooks.connect.send(AskConnect {
        request,
        span: crate::traces::current(),
    });
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
            info!(session = %conn.sid().public(), userId = %admission.user, %reason, "connect_refused");
            metrics().connection("refused");
            ("connect_refused", reason)
        }
        Err(failure) => {
            let open = s.app.hooks.as_ref().map(|h| h.failure) == Some(FailurePolicy::Open);
            warn!(session = %conn.sid().public(), %failure, open, "connect hook failed");
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
    let hold = ports.hold.clone();
    let sid = conn.sid().clone();
    let max_sockets = s.app.limits.max_sockets_per_user;
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
            max_sockets,
        });
        let result = settle_quietly(admitted.await);
        // Cluster mode: the CONNECT is answered once the socket's channels are subscribed, so
        // what is sent to it after the answer reaches it. (A bridge that cannot tell does not
        // hold the socket up: frames meanwhile are lost to it as to every socket.)
        if let (Some(hold), Ok(Admit::Yes)) = (hold, &result) {
            let mut channels = vec![Channel::User(admission.user.clone())];
            channels.extend(admission.rooms.iter().cloned().map(Channel::Room));
            let held = hold.send(Hold { sid, channels });
            admission.held = true;
            if let Ok(Err(err)) = held.await {
                tracing::debug!(%err, "channels not confirmed before the CONNECT answer");
            }
        }
        Done::Admitted(admission, result)
    }));
}

/// Presence answered: join the namespace and announce the socket, or refuse the CONNECT.
pub(super) fn admitted(
    s: &mut Socket,
    conn: &mut dyn Conn,
    admission: Admission,
    result: Result<Admit, Refusal>,
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
        attempt,
        restored,
        held,
    } = admission;
    if conn.closing() {
        release(s, conn.sid(), held);
        if result == Ok(Admit::Yes) {
            s.app
                .ports
                .presence_disconnect
                .do_send(PresenceDisconnect { user, socket });
        }
        return;
    }
    let (message, reason) = match result {
        Ok(Admit::Yes) => ("", ""),
        Ok(Admit::TooManySockets) => {
            info!(session = %conn.sid().public(), userId = %user, "too many sockets; connection refused");
            ("connect_refused", "too_many_sockets")
        }
        Err(_) => {
            warn!(session = %conn.sid().public(), "presence unavailable; connection refused");
            ("service_unavailable", "service_unavailable")
        }
    };
    if !message.is_empty() {
        metrics().connection("rejected");
        let refusal = Packet::connect_error_with_data(&nsp, message, json!({ "reason": reason }));
        conn.refuse_connect(&refusal);
        return;
    }
    let app = s.app.clone();
    conn.join(&nsp, &socket);
    let mut hello = json!({
        "socketId": socket,
        "userId": user,
        "deviceId": device,
        "serverInstance": app.node_id,
    });
    if let Some(data) = data {
        hello["data"] = data;
    }
    // A recovered socket answers its CONNECT once its missed events are read (they go first).
    let recovering = match (&restored, &attempt) {
        (Some(_), Some((pid, _))) => Some(Box::new(Recovering {
            nsp: nsp.clone(),
            pid: pid.clone(),
            hello: hello.clone(),
            held: Vec::new(),
        })),
        _ => None,
    };
    let recovery = app.recovery.as_ref().filter(|_| !s.handshake.legacy);
    let pid = recovery.map(|_| match &recovering {
        Some(r) => r.pid.clone(),
        None => crate::ids::random_id(),
    });
    if recovering.is_none() {
        answer_connect(conn, &nsp, &socket, pid.as_deref(), hello, false);
    }
    info!(
        session = %conn.sid().public(),
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
    // overtake Pushes still waiting in the session's mailbox. A recovering socket's live
    // deliveries wait behind its replay, so they go through the session too.
    let direct = conn
        .direct_link()
        .filter(|_| recovering.is_none())
        .map(|out| DirectLink {
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
        held,
        offsets: pid.is_some(),
    });
    let expires_in = identity
        .expires_at
        .saturating_add(app.auth.leeway_secs())
        .saturating_sub(unix_now());
    // Capped: a far-future `exp` must not overflow the timer's deadline.
    let expires_in = Duration::from_secs(expires_in.min(MAX_TOKEN_LIFETIME_SECS));
    conn.later(expires_in, Done::TokenExpired);
    let watching: HashSet<UserId> = restored
        .iter()
        .flat_map(|saved| saved.watching.iter().map(|u| UserId::from(u.as_str())))
        .collect();
    if !watching.is_empty() {
        app.ports.watch.do_send(Watch {
            sid: conn.sid().clone(),
            users: watching.iter().cloned().collect(),
            watch: true,
            // What the socket watched before it comes back whole.
            max_per_user: 0,
        });
    }
    if let (Some(recovery), Some((_, after))) = (&app.recovery, &attempt)
        && recovering.is_some()
    {
        // Sent after `Authenticated` and the watches: the registry reads the streams once the
        // socket receives live events, so none falls between.
        let mut streams = vec![Channel::User(user.clone()), Channel::Broadcast];
        streams.extend(rooms.iter().map(|r| Channel::Room(r.clone())));
        streams.extend(watching.iter().map(|u| Channel::Watch(u.clone())));
        let read = recovery.recover.send(Recover {
            streams,
            after: *after,
        });
        conn.spawn(work(async move {
            Done::Replayed(match read.await {
                Ok(Ok(events)) => events,
                _ => None,
            })
        }));
    }
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
        watching,
        pid,
        recovering,
    });
    if let Some(user) = &s.user {
        user.keep(&app);
    }
    let m = metrics();
    m.connection("accepted");
    m.connections_active.inc();
}

/// The CONNECT answer (with the recovery `pid` when recovery is on) and `authenticated`.
fn answer_connect(
    conn: &mut dyn Conn,
    nsp: &str,
    socket: &SocketId,
    pid: Option<&str>,
    mut hello: Value,
    recovered: bool,
) {
    match pid {
        Some(pid) => conn.emit(&Packet::connect_ok_with_pid(nsp, socket, pid)),
        None => conn.emit(&Packet::connect_ok(nsp, socket)),
    }
    if recovered {
        hello["recovered"] = true.into();
    }
    event(conn, EventName::Authenticated, hello);
}

/// The missed events were read: answer the CONNECT (recovered, with the same pid, when all of
/// them could be read; as a new socket otherwise), replay them in order, then the deliveries
/// held meanwhile that the replay did not cover.
pub(super) fn replayed(s: &mut Socket, conn: &mut dyn Conn, events: Option<Vec<Recorded>>) {
    let Some(user) = s.user.as_mut() else { return };
    let Some(recovering) = user.recovering.take() else {
        return;
    };
    let Recovering {
        nsp,
        pid,
        hello,
        held,
    } = *recovering;
    let recovered = events.is_some();
    let pid = if recovered {
        pid
    } else {
        crate::ids::random_id()
    };
    user.pid = Some(pid.clone());
    answer_connect(conn, &nsp, &user.socket, Some(&pid), hello, recovered);
    // The streams are read one after another, so a held delivery may be newer than one stream's
    // read and older than the next one's: merge by offset (one clock orders every stream), each
    // offset once, rather than dropping what is older than the last replayed event.
    let mut ordered: BTreeMap<Offset, Option<Vec<Outgoing>>> = BTreeMap::new();
    for recorded in events.unwrap_or_default() {
        let frames = (recorded.except.as_ref() != Some(&user.socket))
            .then(|| with_offset(&recorded.frames, &recorded.offset))
            .flatten();
        ordered.insert(recorded.offset, frames);
    }
    let mut unordered = Vec::new();
    for push in held {
        match push.offset {
            Some(offset) => {
                ordered
                    .entry(offset)
                    .or_insert_with(|| Some(push.frames.to_vec()));
            }
            None => unordered.push(push),
        }
    }
    for frames in ordered.into_values().flatten() {
        user.sent.fetch_add(1, Ordering::Relaxed);
        conn.send(&frames, false);
    }
    for push in unordered {
        user.sent.fetch_add(1, Ordering::Relaxed);
        crate::metrics::message_sent(push.event);
        conn.send(&push.frames, push.volatile);
    }
    info!(session = %conn.sid().public(), socketId = %user.socket, recovered, "socket recovered");
}

/// `frames` with `offset` appended to the event as its last argument.
fn with_offset(frames: &[Outgoing], offset: &Offset) -> Option<Vec<Outgoing>> {
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

/// Let go of the channels a CONNECT held at the bridge (cluster mode), when it held any.
fn release(s: &Socket, sid: &Sid, held: bool) {
    if let Some(port) = s.app.ports.release.as_ref().filter(|_| held) {
        port.do_send(Release { sid: sid.clone() });
    }
}

/// The session is gone: the socket leaves presence and its connection row closes.
pub(super) fn stopped(s: &mut Socket, sid: &Sid, reason: Option<CloseReason>) {
    // Stopped while admitting: a hold may have been taken (after it, in the bridge's mailbox).
    release(s, sid, s.admitting.is_some());
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
        session = %sid.public(),
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
    if let (Some(recovery), Some(pid)) = (&app.recovery, &user.pid) {
        // socket.io's rule: a socket that did not choose to leave may come back. An Engine.IO
        // close packet alone (the engine closed under the socket) is not leaving.
        let recoverable = matches!(
            reason,
            CloseReason::ClientClose if !s.left
        ) || matches!(
            reason,
            CloseReason::TransportClose
                | CloseReason::TransportError
                | CloseReason::PingTimeout
                | CloseReason::ServerShutdown
                | CloseReason::SlowClient
        );
        if recoverable {
            recovery.save.do_send(SaveSession {
                pid: pid.clone(),
                session: user.saved(),
                ttl_secs: recovery.window.as_secs().max(1),
            });
        } else {
            recovery.take.do_send(TakeSession {
                pid: pid.clone(),
                user: user.user.to_string(),
            });
        }
    }
    app.ports.presence_disconnect.do_send(PresenceDisconnect {
        user: user.user,
        socket: user.socket,
    });
}
