//! The Session actor: one per Engine.IO connection, whatever carries it.
//!
//! A Session owns everything about its connection: the heartbeat (it pings; no pong within
//! pingTimeout closes it), the connect timeout, a bounded outbound queue, the polling→websocket
//! upgrade and the Socket.IO state. Transports only move frames: polling HTTP handlers send
//! [`PollGet`]/[`PollPostStart`]/[`PollPostBody`], a websocket transport actor attaches with
//! [`AttachWebSocket`] and forwards [`WsInbound`] packets.

pub mod socketio;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use switchboard_protocol::engineio::{self, Handshake, Packet as EioPacket};
use switchboard_protocol::socketio::Limits;
use tokio::sync::oneshot;
use tracing::{debug, info};

use crate::registry::{SessionRegistry, Unregister};
use crate::transport::{
    AttachWebSocket, CloseReason, Outgoing, PollError, PollGet, PollPostBody, PollPostStart, Sid,
    WsClosed, WsInbound, WsOutbound,
};
pub use socketio::SocketIoMode;
use socketio::{SocketIo, Violation};

/// Most records one polling POST may hold (bounds work per request, not memory: the body is
/// already capped by maxPayload).
const MAX_POST_RECORDS: usize = 10_000;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Bare Engine.IO that echoes every message (the Engine.IO conformance endpoint).
    EngineEcho,
    /// Socket.IO in the given mode.
    SocketIo(SocketIoMode),
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
    pub registry: Addr<SessionRegistry>,
    /// The protocol above Engine.IO.
    pub kind: SessionKind,
    /// The transport of the handshake.
    pub transport: InitialTransport,
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
    WebSocket(Recipient<WsOutbound>),
}

enum Upper {
    Echo,
    SocketIo(SocketIo),
}

/// One Engine.IO connection (see the module docs).
pub struct Session {
    sid: Sid,
    config: Arc<SessionConfig>,
    registry: Addr<SessionRegistry>,
    upper: Upper,
    transport: Transport,
    /// A websocket probing an upgrade from polling.
    probe: Option<Recipient<WsOutbound>>,
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
    pub fn start_with(init: SessionInit) -> Addr<Session> {
        Session::create(|ctx| {
            // Transports use `send`, which waits when the mailbox is full: a little headroom
            // keeps bursts of polling requests from queuing behind one another.
            ctx.set_mailbox_capacity(64);
            Session::new(init)
        })
    }

    fn new(init: SessionInit) -> Self {
        let upper = match init.kind {
            SessionKind::EngineEcho => Upper::Echo,
            SessionKind::SocketIo(mode) => Upper::SocketIo(SocketIo::new(mode, init.config.limits)),
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
        if self.closing.is_some() {
            return;
        }
        match &mut self.transport {
            Transport::WebSocket(out) => match out.try_send(WsOutbound::Frame(frame)) {
                Ok(()) => {}
                Err(SendError::Full(_)) => self.close(CloseReason::SlowClient, ctx),
                Err(SendError::Closed(_)) => self.close(CloseReason::TransportClose, ctx),
            },
            Transport::Polling { .. } | Transport::WsPending => {
                if self.buffer.len() >= self.config.max_buffered_frames {
                    self.close(CloseReason::SlowClient, ctx);
                    return;
                }
                self.buffer.push_back(frame);
                self.flush_polling();
            }
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
        match &self.transport {
            Transport::WebSocket(out) => out.do_send(WsOutbound::Close {
                code: reason.ws_code(),
                reason: reason.as_str(),
            }),
            Transport::Polling { .. } => {
                // Node answers a GET pending at a client close with a noop, otherwise with close.
                let packet = if reason == CloseReason::ClientClose {
                    EioPacket::Noop
                } else {
                    EioPacket::Close
                };
                self.answer_get_with(packet);
            }
            Transport::WsPending => {}
        }
        if let Some(probe) = self.probe.take() {
            probe.do_send(WsOutbound::Close {
                code: reason.ws_code(),
                reason: reason.as_str(),
            });
        }
        ctx.stop();
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
                let was_connected = sio.connected();
                let mut replies = Vec::new();
                let result = match message {
                    Message::Text(text) => sio.on_text(&text, &mut replies),
                    Message::Binary(data) => sio.on_binary(data, &mut replies),
                };
                let now_connected = sio.connected();
                for packet in &replies {
                    for frame in packet.to_frames() {
                        self.send(Outgoing::from(frame), ctx);
                    }
                }
                if let Err(violation) = result {
                    self.violation(&violation, ctx);
                    return;
                }
                if !was_connected
                    && now_connected
                    && let Some(handle) = self.connect_timer.take()
                {
                    ctx.cancel_future(handle);
                }
            }
        }
    }

    fn violation(&mut self, violation: &Violation, ctx: &mut Context<Self>) {
        debug!(sid = %self.sid, %violation, "protocol violation");
        self.close(CloseReason::ProtocolViolation, ctx);
    }

    /// A packet from the probe websocket during an upgrade.
    fn on_probe_packet(&mut self, packet: EioPacket, ctx: &mut Context<Self>) {
        match packet {
            EioPacket::Ping(data) if data == "probe" => {
                if let Some(probe) = &self.probe {
                    let pong = Outgoing::packet(&EioPacket::Pong(data));
                    if probe.try_send(WsOutbound::Frame(pong)).is_err() {
                        self.abort_upgrade(ctx);
                        return;
                    }
                }
                // Release the client's pending GET so it can send the upgrade packet.
                self.answer_get_with(EioPacket::Noop);
            }
            EioPacket::Upgrade => {
                let Some(out) = self.probe.take() else { return };
                if let Some(handle) = self.upgrade_timer.take() {
                    ctx.cancel_future(handle);
                }
                self.answer_get_with(EioPacket::Noop);
                self.transport = Transport::WebSocket(out);
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
        if let Some(handle) = self.upgrade_timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(probe) = self.probe.take() {
            probe.do_send(WsOutbound::Close {
                code: 1002,
                reason: "upgrade aborted",
            });
        }
    }
}

enum Message {
    Text(String),
    Binary(Bytes),
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
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
        let refuse = |out: &Recipient<WsOutbound>, reason| {
            out.do_send(WsOutbound::Close { code: 1002, reason })
        };
        if self.closing.is_some() {
            refuse(&msg.out, "session closed");
            return;
        }
        match (&self.transport, msg.upgrade) {
            (Transport::WsPending, false) => {
                self.transport = Transport::WebSocket(msg.out);
                let buffered: Vec<_> = self.buffer.drain(..).collect();
                for frame in buffered {
                    self.send(frame, ctx);
                }
            }
            (Transport::Polling { .. }, true) if self.probe.is_none() => {
                self.probe = Some(msg.out);
                let timeout = self.config.upgrade_timeout;
                self.upgrade_timer = Some(ctx.run_later(timeout, |act, ctx| {
                    act.upgrade_timer = None;
                    act.abort_upgrade(ctx);
                }));
            }
            _ => refuse(&msg.out, "upgrade refused"),
        }
    }
}

impl Handler<WsInbound> for Session {
    type Result = ();

    fn handle(&mut self, msg: WsInbound, ctx: &mut Context<Self>) {
        if self.probe.is_some() && matches!(self.transport, Transport::Polling { .. }) {
            self.on_probe_packet(msg.packet, ctx);
        } else if matches!(self.transport, Transport::WebSocket(_)) {
            self.on_packet(msg.packet, ctx);
        }
    }
}

impl Handler<WsClosed> for Session {
    type Result = ();

    fn handle(&mut self, msg: WsClosed, ctx: &mut Context<Self>) {
        if self.probe.is_some() && matches!(self.transport, Transport::Polling { .. }) {
            // The probe went away: the upgrade failed, polling goes on.
            self.abort_upgrade(ctx);
            return;
        }
        if matches!(
            self.transport,
            Transport::WebSocket(_) | Transport::WsPending
        ) {
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
        if get.is_some() {
            self.close(CloseReason::BadPollingRequest, ctx);
            return Err(PollError::Overlap);
        }
        *get = Some(msg.reply);
        self.flush_polling();
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
