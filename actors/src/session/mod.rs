//! The Session actor: one per Engine.IO connection, whatever carries it.
//!
//! A Session owns everything about its connection: the heartbeat (it pings; no pong within
//! pingTimeout closes it), the connect timeout, a bounded outbound queue, the polling→websocket
//! upgrade and the Socket.IO state. Transports only move frames: polling HTTP handlers send
//! [`PollGet`]/[`PollPostStart`]/[`PollPostBody`], a websocket transport actor attaches with
//! [`AttachWebSocket`] and forwards [`WsInbound`] packets.

mod product;
pub mod socketio;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use switchboard_protocol::engineio::{self, Handshake, Packet as EioPacket};
use switchboard_protocol::socketio::{self as socketio_packet, Limits};
use tokio::sync::oneshot;
use tracing::{debug, info};

use crate::metrics::{MeteredAddr, ReasonLabel, TransportLabel, metrics};
use crate::registry::{SessionRegistry, Unregister};
use crate::transport::{
    AttachWebSocket, CloseReason, Outgoing, PollError, PollGet, PollPostBody, PollPostStart, Sid,
    WsClosed, WsInbound, WsOut, WsOutbound,
};
use product::UserState;
pub use product::{
    Congested, ErrorCode, HandshakeInfo, Maintenance, Product, ProductLimits, Push,
    ServerDisconnect, SetRooms, Shutdown,
};
pub use socketio::SocketIoMode;
use socketio::{Output, SocketIo, Violation};

/// Most records one polling POST may hold (bounds work per request, not memory: the body is
/// already capped by maxPayload).
const MAX_POST_RECORDS: usize = 10_000;

/// Longest a closed polling session waits for the GET that collects its final packets.
const MAX_LINGER: Duration = Duration::from_secs(5);

/// Per-session settings, shared by every session of a node.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How often the server pings.
    pub ping_interval: Duration,
    /// How long a pong may take before the session is closed.
    pub ping_timeout: Duration,
    /// How long a Socket.IO client may take to send its first CONNECT.
    pub connect_timeout: Duration,
    /// How long a polling→websocket upgrade may take once the probe websocket is open.
    pub upgrade_timeout: Duration,
    /// Engine.IO maxPayload: bytes per polling POST or websocket message.
    pub max_payload: usize,
    /// Outbound frames a session may hold for a client that is not reading before it is closed
    /// as `slow_client` (polling buffer, and the websocket transport's mailbox).
    pub max_buffered_frames: usize,
    /// Socket.IO decoder limits.
    pub limits: Limits,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            connect_timeout: Duration::from_millis(45_000),
            upgrade_timeout: Duration::from_millis(10_000),
            max_payload: 1_000_000,
            max_buffered_frames: 1024,
            limits: Limits::default(),
        }
    }
}

/// What the session speaks above Engine.IO.
#[derive(Clone)]
pub enum SessionKind {
    /// Bare Engine.IO that echoes every message (the Engine.IO conformance endpoint).
    EngineEcho,
    /// Socket.IO as the protocol test suites' reference server.
    Conformance,
    /// The product: authenticated Socket.IO with Switchboard's events.
    Product(Arc<Product>),
}

/// How the client first reached the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialTransport {
    /// HTTP long-polling (may upgrade to websocket later).
    Polling,
    /// A websocket whose transport actor will attach right after the session starts.
    WebSocket,
}

/// Everything a new session needs.
pub struct SessionInit {
    /// Its Engine.IO id.
    pub sid: Sid,
    /// Node-wide session settings.
    pub config: Arc<SessionConfig>,
    /// The registry that supervises it.
    pub registry: MeteredAddr<SessionRegistry>,
    /// The protocol above Engine.IO.
    pub kind: SessionKind,
    /// The transport of the handshake.
    pub transport: InitialTransport,
    /// What the handshake request said about the client.
    pub handshake: HandshakeInfo,
}

/// A websocket transport attached to the session, told apart from others by its id.
struct WsLink {
    id: u64,
    out: WsOut,
}

enum Transport {
    Polling {
        /// The pending GET, answered as soon as there is something to send.
        get: Option<oneshot::Sender<Vec<u8>>>,
        /// A POST is being read.
        posting: bool,
    },
    /// A websocket session whose transport has not attached yet.
    WsPending,
    WebSocket(WsLink),
}

enum Upper {
    Echo,
    // Boxed: the Socket.IO state is large and an echo session needs none of it.
    SocketIo(Box<SocketIo>),
}

/// One Engine.IO connection (see the module docs).
pub struct Session {
    sid: Sid,
    config: Arc<SessionConfig>,
    registry: MeteredAddr<SessionRegistry>,
    upper: Upper,
    transport: Transport,
    /// A websocket probing an upgrade from polling.
    probe: Option<WsLink>,
    /// The probe was answered: polling GETs get a noop until the upgrade completes.
    probed: bool,
    /// Product mode: the application context.
    product: Option<Arc<Product>>,
    /// Product mode: the handshake request's client details.
    handshake: HandshakeInfo,
    /// Product mode: the authenticated user, once CONNECT succeeded.
    user: Option<UserState>,
    /// Product mode: the (user, socket) of a CONNECT waiting for presence to admit it; if the
    /// session ends first, the socket is withdrawn from presence again.
    admitting: Option<(crate::presence::UserId, String)>,
    /// `engineio_sessions_active{transport}` this session counts under.
    transport_label: &'static str,
    /// Frames waiting for a polling GET (or for the websocket to attach).
    buffer: VecDeque<Outgoing>,
    ping_timer: Option<SpawnHandle>,
    pong_timer: Option<SpawnHandle>,
    connect_timer: Option<SpawnHandle>,
    upgrade_timer: Option<SpawnHandle>,
    closing: Option<CloseReason>,
}

impl Session {
    /// Start a session on the current arbiter and return its address.
    pub fn start_with(init: SessionInit) -> MeteredAddr<Session> {
        MeteredAddr::new(Session::create(|ctx| {
            // Transports use `send`, which waits when the mailbox is full: a little headroom
            // keeps bursts of polling requests from queuing behind one another.
            ctx.set_mailbox_capacity(64);
            Session::new(init)
        }))
    }

    fn new(init: SessionInit) -> Self {
        let limits = init.config.limits;
        let (upper, app) = match init.kind {
            SessionKind::EngineEcho => (Upper::Echo, None),
            SessionKind::Conformance => (
                Upper::SocketIo(Box::new(SocketIo::new(SocketIoMode::Conformance, limits))),
                None,
            ),
            SessionKind::Product(app) => (
                Upper::SocketIo(Box::new(SocketIo::new(SocketIoMode::Product, limits))),
                Some(app),
            ),
        };
        let transport = match init.transport {
            InitialTransport::Polling => Transport::Polling {
                get: None,
                posting: false,
            },
            InitialTransport::WebSocket => Transport::WsPending,
        };
        Session {
            sid: init.sid,
            config: init.config,
            registry: init.registry,
            upper,
            transport,
            probe: None,
            probed: false,
            product: app,
            handshake: init.handshake,
            user: None,
            admitting: None,
            transport_label: match init.transport {
                InitialTransport::Polling => "polling",
                InitialTransport::WebSocket => "websocket",
            },
            buffer: VecDeque::new(),
            ping_timer: None,
            pong_timer: None,
            connect_timer: None,
            upgrade_timer: None,
            closing: None,
        }
    }

    fn handshake(&self) -> EioPacket {
        let upgrades = match self.transport {
            Transport::Polling { .. } => vec!["websocket".to_string()],
            _ => Vec::new(),
        };
        Handshake {
            sid: self.sid.to_string(),
            upgrades,
            ping_interval: self.config.ping_interval.as_millis() as u64,
            ping_timeout: self.config.ping_timeout.as_millis() as u64,
            max_payload: self.config.max_payload as u64,
        }
        .packet()
    }

    /// Queue one frame for the client on whatever transport is current.
    fn send(&mut self, frame: Outgoing, ctx: &mut Context<Self>) {
        self.send_frame(frame, false, ctx);
    }

    /// Queue one frame; a volatile one is dropped instead of closing a congested client.
    fn send_frame(&mut self, frame: Outgoing, volatile: bool, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        let congested = match &mut self.transport {
            Transport::WebSocket(link) => match link.out.try_send(WsOutbound::Frame(frame)) {
                Ok(()) => false,
                Err(SendError::Full(_)) => true,
                Err(SendError::Closed(_)) => {
                    self.close(CloseReason::TransportClose, ctx);
                    return;
                }
            },
            Transport::Polling { .. } | Transport::WsPending => {
                if self.buffer.len() >= self.config.max_buffered_frames {
                    true
                } else {
                    self.buffer.push_back(frame);
                    self.flush_polling();
                    false
                }
            }
        };
        if congested {
            if volatile {
                metrics().volatile_dropped.inc();
            } else {
                self.close(CloseReason::SlowClient, ctx);
            }
        }
    }

    /// Send a Socket.IO packet (one text frame plus any attachments).
    fn send_sio(&mut self, packet: &socketio_packet::Packet, ctx: &mut Context<Self>) {
        for frame in packet.to_frames() {
            self.send(Outgoing::from(frame), ctx);
        }
    }

    fn send_packet(&mut self, packet: &EioPacket, ctx: &mut Context<Self>) {
        self.send(Outgoing::packet(packet), ctx);
    }

    /// Answer the pending GET with everything buffered.
    fn flush_polling(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        if let Transport::Polling { get, .. } = &mut self.transport
            && let Some(reply) = get.take()
        {
            let frames: Vec<_> = self.buffer.drain(..).map(|f| f.to_frame()).collect();
            // A client that went away mid-GET loses nothing it could still have read.
            let _ = reply.send(engineio::payload::encode(&frames));
        }
    }

    /// Answer a pending GET with one packet and nothing else (close or noop).
    fn answer_get_with(&mut self, packet: EioPacket) {
        if let Transport::Polling { get, .. } = &mut self.transport
            && let Some(reply) = get.take()
        {
            let frames = [packet.encode()];
            let _ = reply.send(engineio::payload::encode(&frames));
        }
    }

    fn close(&mut self, reason: CloseReason, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(reason);
        info!(sid = %self.sid, reason = reason.as_str(), "session closed");
        let m = metrics();
        m.disconnects
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
        if reason == CloseReason::SlowClient {
            m.error("slow_client");
        }
        match &self.transport {
            Transport::WebSocket(link) => link.out.do_send(WsOutbound::Close {
                code: reason.ws_code(),
                reason: reason.as_str(),
            }),
            Transport::Polling { get, .. } => {
                let waiting = get.is_some();
                if reason == CloseReason::ClientClose {
                    // Node answers a GET pending at a client close with a noop.
                    self.answer_get_with(EioPacket::Noop);
                } else if reason == CloseReason::BadPollingRequest
                    || (waiting && self.buffer.is_empty())
                {
                    self.answer_get_with(EioPacket::Close);
                } else {
                    // Deliver what is queued (an error, a `41`) first and the close packet in a
                    // later response: socket.io-client handles Socket.IO packets a tick after
                    // the Engine.IO close of the same payload. With no GET waiting, the next
                    // one collects them.
                    self.flush_polling();
                    self.close_probe(reason);
                    let linger = self.config.ping_timeout.min(MAX_LINGER);
                    ctx.run_later(linger, |_, ctx| ctx.stop());
                    return;
                }
            }
            Transport::WsPending => {}
        }
        self.close_probe(reason);
        ctx.stop();
    }

    fn close_probe(&mut self, reason: CloseReason) {
        if let Some(probe) = self.probe.take() {
            probe.out.do_send(WsOutbound::Close {
                code: reason.ws_code(),
                reason: reason.as_str(),
            });
        }
    }

    fn schedule_ping(&mut self, ctx: &mut Context<Self>) {
        let interval = self.config.ping_interval;
        self.ping_timer = Some(ctx.run_later(interval, |act, ctx| {
            act.ping_timer = None;
            act.send_packet(&EioPacket::Ping(String::new()), ctx);
            let timeout = act.config.ping_timeout;
            act.pong_timer = Some(ctx.run_later(timeout, |act, ctx| {
                act.pong_timer = None;
                act.close(CloseReason::PingTimeout, ctx);
            }));
        }));
    }

    fn on_pong(&mut self, ctx: &mut Context<Self>) {
        // A pong with no ping outstanding is ignored: it must not double the ping timer.
        if let Some(handle) = self.pong_timer.take() {
            ctx.cancel_future(handle);
            self.schedule_ping(ctx);
        }
    }

    /// One packet from the client, over polling or the current websocket.
    fn on_packet(&mut self, packet: EioPacket, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        match packet {
            EioPacket::Close => self.close(CloseReason::ClientClose, ctx),
            EioPacket::Ping(data) => self.send_packet(&EioPacket::Pong(data), ctx),
            EioPacket::Pong(_) => self.on_pong(ctx),
            EioPacket::Message(text) => self.on_message(Message::Text(text), ctx),
            EioPacket::Binary(data) => self.on_message(Message::Binary(data), ctx),
            EioPacket::Noop => {}
            EioPacket::Open(_) | EioPacket::Upgrade => {
                self.close(CloseReason::ProtocolViolation, ctx)
            }
        }
    }

    fn on_message(&mut self, message: Message, ctx: &mut Context<Self>) {
        match &mut self.upper {
            Upper::Echo => {
                let packet = match message {
                    Message::Text(text) => EioPacket::Message(text),
                    Message::Binary(data) => EioPacket::Binary(data),
                };
                self.send_packet(&packet, ctx);
            }
            Upper::SocketIo(sio) => {
                let mut outputs = Vec::new();
                let result = match message {
                    Message::Text(text) => sio.on_text(&text, &mut outputs),
                    Message::Binary(data) => sio.on_binary(data, &mut outputs),
                };
                for output in outputs {
                    match output {
                        Output::Reply(packet) => self.send_sio(&packet, ctx),
                        Output::Connect { nsp, auth } => self.product_connect(&nsp, auth, ctx),
                        Output::Event { data, id, size, .. } => {
                            self.product_event(data, id, size, ctx)
                        }
                        Output::Disconnected { .. } => self.close(CloseReason::ClientClose, ctx),
                    }
                }
                if let Err(violation) = result {
                    self.violation(&violation, ctx);
                    return;
                }
                self.stop_connect_timer(ctx);
            }
        }
    }

    /// Once a namespace is joined the connect timeout no longer applies.
    fn stop_connect_timer(&mut self, ctx: &mut Context<Self>) {
        if let Upper::SocketIo(sio) = &self.upper
            && sio.connected()
            && let Some(handle) = self.connect_timer.take()
        {
            ctx.cancel_future(handle);
        }
    }

    fn violation(&mut self, violation: &Violation, ctx: &mut Context<Self>) {
        metrics().error("protocol_violation");
        debug!(sid = %self.sid, %violation, "protocol violation");
        self.close(CloseReason::ProtocolViolation, ctx);
    }

    /// A packet from the probe websocket during an upgrade.
    fn on_probe_packet(&mut self, packet: EioPacket, ctx: &mut Context<Self>) {
        match packet {
            EioPacket::Ping(data) if data == "probe" => {
                if let Some(probe) = &self.probe {
                    let pong = Outgoing::packet(&EioPacket::Pong(data));
                    if probe.out.try_send(WsOutbound::Frame(pong)).is_err() {
                        self.abort_upgrade(ctx);
                        return;
                    }
                }
                // Release the client's GET so it can send the upgrade packet; a GET that
                // arrives after the probe is answered the same way (Node's noop loop).
                self.probed = true;
                self.answer_get_with(EioPacket::Noop);
            }
            EioPacket::Upgrade => {
                let Some(out) = self.probe.take() else { return };
                if let Some(handle) = self.upgrade_timer.take() {
                    ctx.cancel_future(handle);
                }
                self.answer_get_with(EioPacket::Noop);
                self.transport = Transport::WebSocket(out);
                self.count_transport(-1);
                self.transport_label = "websocket";
                self.count_transport(1);
                debug!(sid = %self.sid, "upgraded to websocket");
                let buffered: Vec<_> = self.buffer.drain(..).collect();
                for frame in buffered {
                    self.send(frame, ctx);
                }
            }
            _ => self.abort_upgrade(ctx),
        }
    }

    fn abort_upgrade(&mut self, ctx: &mut Context<Self>) {
        self.probed = false;
        if let Some(handle) = self.upgrade_timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(probe) = self.probe.take() {
            probe.out.do_send(WsOutbound::Close {
                code: 1002,
                reason: "upgrade aborted",
            });
        }
    }

    fn count_transport(&self, delta: i64) {
        metrics()
            .sessions_active
            .get_or_create(&TransportLabel {
                transport: self.transport_label,
            })
            .inc_by(delta);
    }

    fn is_active_ws(&self, id: u64) -> bool {
        matches!(&self.transport, Transport::WebSocket(link) if link.id == id)
    }

    fn is_probe(&self, id: u64) -> bool {
        self.probe.as_ref().is_some_and(|p| p.id == id)
    }
}

enum Message {
    Text(String),
    Binary(Bytes),
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        crate::metrics::actor_started("session");
        self.count_transport(1);
        let open = self.handshake();
        self.send_packet(&open, ctx);
        self.schedule_ping(ctx);
        if let Upper::SocketIo(_) = self.upper {
            let timeout = self.config.connect_timeout;
            self.connect_timer = Some(ctx.run_later(timeout, |act, ctx| {
                act.connect_timer = None;
                act.close(CloseReason::ConnectTimeout, ctx);
            }));
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        crate::metrics::actor_stopped("session");
        self.count_transport(-1);
        self.product_stopped();
        if self.closing.is_none() {
            // Stopped without a close (the system is going down): tell a waiting GET.
            self.answer_get_with(EioPacket::Close);
        }
        self.registry.do_send(Unregister {
            sid: self.sid.clone(),
        });
    }
}

impl Handler<AttachWebSocket> for Session {
    type Result = ();

    fn handle(&mut self, msg: AttachWebSocket, ctx: &mut Context<Self>) {
        let refuse = |out: &WsOut, reason| out.do_send(WsOutbound::Close { code: 1002, reason });
        if self.closing.is_some() {
            refuse(&msg.out, "session closed");
            return;
        }
        let link = WsLink {
            id: msg.id,
            out: msg.out,
        };
        match (&self.transport, msg.upgrade) {
            (Transport::WsPending, false) => {
                self.transport = Transport::WebSocket(link);
                let buffered: Vec<_> = self.buffer.drain(..).collect();
                for frame in buffered {
                    self.send(frame, ctx);
                }
            }
            (Transport::Polling { .. }, true) if self.probe.is_none() => {
                self.probe = Some(link);
                let timeout = self.config.upgrade_timeout;
                self.upgrade_timer = Some(ctx.run_later(timeout, |act, ctx| {
                    act.upgrade_timer = None;
                    act.abort_upgrade(ctx);
                }));
            }
            _ => refuse(&link.out, "upgrade refused"),
        }
    }
}

impl Handler<WsInbound> for Session {
    type Result = ();

    fn handle(&mut self, msg: WsInbound, ctx: &mut Context<Self>) {
        // Packets from a refused or replaced websocket are ignored.
        if self.is_probe(msg.id) {
            self.on_probe_packet(msg.packet, ctx);
        } else if self.is_active_ws(msg.id) {
            self.on_packet(msg.packet, ctx);
        }
    }
}

impl Handler<WsClosed> for Session {
    type Result = ();

    fn handle(&mut self, msg: WsClosed, ctx: &mut Context<Self>) {
        if self.is_probe(msg.id) {
            // The probe went away: the upgrade failed, polling goes on.
            self.abort_upgrade(ctx);
            return;
        }
        // A refused extra websocket closing says nothing about this session's own transport.
        let own = self.is_active_ws(msg.id)
            || (matches!(self.transport, Transport::WsPending) && self.probe.is_none());
        if own {
            let reason = if msg.error {
                CloseReason::TransportError
            } else {
                CloseReason::TransportClose
            };
            self.close(reason, ctx);
        }
    }
}

impl Handler<PollGet> for Session {
    type Result = Result<(), PollError>;

    fn handle(&mut self, msg: PollGet, ctx: &mut Context<Self>) -> Self::Result {
        let Transport::Polling { get, .. } = &mut self.transport else {
            return Err(PollError::WrongTransport);
        };
        if self.closing.is_some() {
            // A lingering closed session: hand over its final packets, then the close packet.
            *get = Some(msg.reply);
            if self.buffer.is_empty() {
                self.answer_get_with(EioPacket::Close);
                ctx.stop();
            } else {
                self.flush_polling();
            }
            return Ok(());
        }
        if get.is_some() {
            self.close(CloseReason::BadPollingRequest, ctx);
            return Err(PollError::Overlap);
        }
        *get = Some(msg.reply);
        if self.probed && self.probe.is_some() && self.buffer.is_empty() {
            self.answer_get_with(EioPacket::Noop);
        } else {
            self.flush_polling();
        }
        Ok(())
    }
}

impl Handler<PollPostStart> for Session {
    type Result = Result<(), PollError>;

    fn handle(&mut self, _msg: PollPostStart, ctx: &mut Context<Self>) -> Self::Result {
        let Transport::Polling { posting, .. } = &mut self.transport else {
            return Err(PollError::WrongTransport);
        };
        if *posting {
            self.close(CloseReason::BadPollingRequest, ctx);
            return Err(PollError::Overlap);
        }
        *posting = true;
        Ok(())
    }
}

impl Handler<PollPostBody> for Session {
    type Result = Result<(), PollError>;

    fn handle(&mut self, msg: PollPostBody, ctx: &mut Context<Self>) -> Self::Result {
        let Transport::Polling { posting, .. } = &mut self.transport else {
            return Err(PollError::WrongTransport);
        };
        *posting = false;
        let body = match msg.body {
            Ok(body) => body,
            Err(err) => {
                self.close(CloseReason::BadPollingRequest, ctx);
                return Err(err);
            }
        };
        let packets = match engineio::payload::decode(&body, MAX_POST_RECORDS) {
            Ok(packets) => packets,
            Err(err) => {
                debug!(sid = %self.sid, %err, "bad polling payload");
                self.close(CloseReason::ProtocolViolation, ctx);
                return Err(PollError::BadPayload);
            }
        };
        for packet in packets {
            self.on_packet(packet, ctx);
        }
        Ok(())
    }
}

impl crate::metrics::MeteredActor for Session {
    const NAME: &'static str = "session";
}

crate::metered!(Session: AttachWebSocket, WsInbound, WsClosed, PollGet, PollPostStart, PollPostBody,
    Push, Congested, ServerDisconnect, SetRooms, Maintenance, Shutdown);
