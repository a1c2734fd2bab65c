//! The Session actor: one per Engine.IO connection, whatever carries it.
//!
//! A Session owns its connection: the Engine.IO state ([`engine::Engine`]: transports, the
//! polling→websocket upgrade, heartbeat, connect timeout, bounded outbox) and the Socket.IO
//! layer ([`socketio::SocketIo`]). What the application does with a socket lives in
//! [`crate::app`]; the Session hands it CONNECTs and events and lends it a [`Conn`] to answer
//! through. Transports only move frames: polling handlers and the websocket task reach the
//! session through its [`SessionPort`].
//!
//! # Layout
//! - this file: the actor shell. It implements the engine's [`Wire`] over the real
//!   transports, arms one timer at the engine's next deadline, and turns engine events into
//!   metrics, logs and calls to the layer above.
//! - [`engine`]: the pure Engine.IO state machine, unit-tested with made-up instants.
//! - [`socketio`]: the pure Socket.IO layer (namespaces, binary reassembly, conformance rules).

pub mod engine;
pub mod socketio;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use switchboard_protocol::engineio::Packet as EioPacket;
use switchboard_protocol::socketio::{Limits, Packet};
use tokio::sync::oneshot;
use tracing::{debug, info};

use crate::app::{App, Command, Conn, Done, HandshakeInfo, Work};
use crate::ids::{Sid, SocketId};
use crate::metrics::{
    Counter, Metered, MeteredActor, ReasonLabel, handled, message_counter, message_sent, metrics,
};
use crate::ports::Port;
use crate::ports::registry::Unregister;
use crate::ports::session::{PollBody, PollError, SessionPort, ToSession};
use crate::transport::{CloseReason, Outgoing, WsOut, WsOutbound};
use engine::{Engine, Event, Message, Wire, WsError};
pub use engine::{InitialTransport, Protocol};
pub use socketio::SocketIoMode;
use socketio::{Output, Revision, SocketIo, Violation};

/// Longest a binary packet may wait for its attachments.
const ATTACHMENT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// as `slow_client` (polling buffer, and the websocket transport's queue).
    pub max_buffered_frames: usize,
    /// The same bound in bytes (a lone frame is always taken): a few large server-API emits
    /// fill it long before the frame count does.
    pub max_buffered_bytes: usize,
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
            max_buffered_bytes: 4 * 1024 * 1024,
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
    Product(Arc<App>),
}

/// Everything a new session needs.
pub struct SessionInit {
    /// Its Engine.IO id.
    pub sid: Sid,
    /// Node-wide session settings.
    pub config: Arc<SessionConfig>,
    /// Where it reports that it stopped (the registry).
    pub registry: Port<Unregister>,
    /// The protocol above Engine.IO.
    pub kind: SessionKind,
    /// The transport of the handshake.
    pub transport: InitialTransport,
    /// The Engine.IO revision of the handshake (Socket.IO v4 goes with v3, v5 with v4).
    pub protocol: Protocol,
    /// What the handshake request said about the client.
    pub handshake: HandshakeInfo,
    /// Held for the session's life and dropped with it (its client address's place in the
    /// per-address session count).
    pub slot: Option<Box<dyn Send>>,
}

enum Upper {
    Echo,
    // Boxed: the Socket.IO and application state is large and an echo session needs none.
    SocketIo(Box<SocketIoUpper>),
}

struct SocketIoUpper {
    sio: SocketIo,
    /// When a binary packet's missing attachments stop being waited for (the connection is
    /// then closed): a client cannot make the node hold a partial packet forever.
    attachments_by: Option<Instant>,
    /// Product mode: the application side of the socket.
    app: Option<crate::app::Socket>,
}

/// The websocket transports attached: the session's own and, during an upgrade, the probe.
#[derive(Default)]
struct Links([Option<(u64, WsOut)>; 2]);

impl Links {
    fn add(&mut self, id: u64, out: WsOut) {
        match self.0.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some((id, out)),
            // Both slots taken (a third websocket): the engine refuses it by id.
            None => out.do_send(WsOutbound::Close {
                code: 1002,
                reason: "upgrade refused",
            }),
        }
    }

    fn get(&self, id: u64) -> Option<&WsOut> {
        self.0
            .iter()
            .flatten()
            .find(|(i, _)| *i == id)
            .map(|(_, o)| o)
    }

    fn take(&mut self, id: u64) -> Option<WsOut> {
        let slot = self
            .0
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|(i, _)| *i == id))?;
        slot.take().map(|(_, out)| out)
    }
}

/// The engine's [`Wire`] over the session's real transports.
struct Io<'a> {
    links: &'a mut Links,
    get: &'a mut Option<oneshot::Sender<PollBody>>,
    events: &'a mut Vec<Event>,
}

impl Wire for Io<'_> {
    fn ws_send(&mut self, link: u64, frame: Outgoing) -> Result<(), WsError> {
        let out = self.links.get(link).ok_or(WsError::Closed)?;
        out.try_send(WsOutbound::Frame(frame))
            .map_err(|err| match err {
                SendError::Full(_) => WsError::Full,
                SendError::Closed(_) => WsError::Closed,
            })
    }

    fn ws_close(&mut self, link: u64, code: u16, reason: &'static str) {
        if let Some(out) = self.links.take(link) {
            out.do_send(WsOutbound::Close { code, reason });
        }
    }

    fn answer_get(&mut self, body: PollBody) {
        if let Some(reply) = self.get.take() {
            // A client that went away mid-GET loses nothing it could still have read.
            let _ = reply.send(body);
        }
    }

    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
}

/// One Engine.IO connection (see the module docs).
pub struct Session {
    sid: Sid,
    engine: Engine,
    upper: Upper,
    links: Links,
    /// The pending polling GET's reply.
    get: Option<oneshot::Sender<PollBody>>,
    registry: Port<Unregister>,
    /// `engineio_sessions_active{transport}` this session counts under.
    transport_label: &'static str,
    /// The one timer, armed at the engine's next deadline.
    timer: Option<(Instant, SpawnHandle)>,
    /// The layer above was told the session is open (once a transport can carry its answer).
    upper_open: bool,
    /// Given back when the session is dropped (see [`SessionInit::slot`]).
    _slot: Option<Box<dyn Send>>,
}

impl Session {
    /// Start a session on the current arbiter and return its port.
    pub fn start_with(init: SessionInit) -> SessionPort {
        let addr = Session::create(|ctx| {
            // Transports use `send`, which waits when the mailbox is full: a little headroom
            // keeps bursts of polling requests from queuing behind one another.
            ctx.set_mailbox_capacity(64);
            Session::new(init)
        });
        Port::new(&addr)
    }

    fn new(init: SessionInit) -> Self {
        let limits = init.config.limits;
        let revision = match init.protocol {
            Protocol::V4 => Revision::V5,
            Protocol::V3 { .. } => Revision::V4,
        };
        let upper = match init.kind {
            SessionKind::EngineEcho => Upper::Echo,
            SessionKind::Conformance => Upper::SocketIo(Box::new(SocketIoUpper {
                sio: SocketIo::new(SocketIoMode::Conformance, limits).with_revision(revision),
                attachments_by: None,
                app: None,
            })),
            SessionKind::Product(app) => Upper::SocketIo(Box::new(SocketIoUpper {
                sio: SocketIo::new(SocketIoMode::Product, limits)
                    .with_revision(revision)
                    .with_event_cap(app.limits.max_event_bytes),
                attachments_by: None,
                app: Some(crate::app::Socket::new(app, init.handshake)),
            })),
        };
        let awaits_connect = matches!(upper, Upper::SocketIo(_));
        let engine = Engine::with_protocol(
            init.config,
            init.protocol,
            init.transport,
            awaits_connect,
            Instant::now(),
        );
        Session {
            sid: init.sid,
            transport_label: engine.transport_name(),
            engine,
            upper,
            links: Links::default(),
            get: None,
            registry: init.registry,
            timer: None,
            upper_open: false,
            _slot: init.slot,
        }
    }

    /// Run `f` on the engine, then handle what it reported.
    fn run<R>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut Engine, &mut Io<'_>) -> R,
    ) -> R {
        let mut events = Vec::new();
        let out = {
            let mut io = Io {
                links: &mut self.links,
                get: &mut self.get,
                events: &mut events,
            };
            f(&mut self.engine, &mut io)
        };
        for event in events {
            self.on_event(event, ctx);
        }
        out
    }

    fn on_event(&mut self, event: Event, ctx: &mut Context<Self>) {
        match event {
            Event::Message(message) => self.on_message(message, ctx),
            Event::Closing(reason) => {
                info!(session = %self.sid.public(), reason = reason.as_str(), "session closed");
                let m = metrics();
                m.disconnects
                    .get_or_create(&ReasonLabel {
                        reason: reason.as_str(),
                    })
                    .inc();
                if reason == CloseReason::SlowClient {
                    m.error("slow_client");
                }
            }
            Event::VolatileDropped => {
                metrics().volatile_dropped.inc();
            }
            Event::Upgraded => {
                metrics().sessions(self.transport_label, -1);
                self.transport_label = self.engine.transport_name();
                metrics().sessions(self.transport_label, 1);
                debug!(session = %self.sid.public(), "upgraded to websocket");
            }
        }
    }

    /// One Engine.IO message for the layer above.
    fn on_message(&mut self, message: Message, ctx: &mut Context<Self>) {
        if matches!(self.upper, Upper::Echo) {
            let packet = match message {
                Message::Text(text) => EioPacket::Message(text),
                Message::Binary(data) => EioPacket::Binary(data),
            };
            let now = Instant::now();
            self.run(ctx, |e, io| {
                e.send(Outgoing::packet(&packet), false, now, io)
            });
            return;
        }
        let Upper::SocketIo(up) = &mut self.upper else {
            return;
        };
        let mut outputs = Vec::new();
        let result = match message {
            Message::Text(text) => up.sio.on_text(&text, &mut outputs),
            Message::Binary(data) => up.sio.on_binary(data, &mut outputs),
        };
        up.attachments_by = match (up.sio.awaiting_attachments(), up.attachments_by) {
            (false, _) => None,
            (true, None) => Some(Instant::now() + ATTACHMENT_TIMEOUT),
            (true, by) => by,
        };
        self.apply(outputs, result, ctx);
    }

    /// The Engine.IO session is open: a Socket.IO v4 client is now on `/` (see
    /// [`SocketIo::open`]).
    fn open_upper(&mut self, ctx: &mut Context<Self>) {
        // A websocket session waits for its transport: what `/` answers (even a refusal that
        // closes the session) must reach the client.
        if self.upper_open || !self.engine.attached() {
            return;
        }
        self.upper_open = true;
        let Upper::SocketIo(up) = &mut self.upper else {
            return;
        };
        let mut outputs = Vec::new();
        up.sio.open(&mut outputs);
        self.apply(outputs, Ok(()), ctx);
    }

    /// Carry out what the Socket.IO layer asked for, then close on a violation.
    fn apply(
        &mut self,
        outputs: Vec<Output>,
        result: Result<(), Violation>,
        ctx: &mut Context<Self>,
    ) {
        for output in outputs {
            match output {
                Output::Reply(packet) => self.with_conn(ctx, |_, conn| conn.emit(&packet)),
                Output::Connect { nsp, auth } => {
                    self.with_app(ctx, |socket, conn| socket.connect(conn, nsp, auth))
                }
                Output::Event {
                    data,
                    id,
                    size,
                    attachments,
                    ..
                } => self.with_app(ctx, |socket, conn| {
                    socket.event(conn, data, id, attachments, size)
                }),
                Output::TooLarge { id } => {
                    self.with_app(ctx, |socket, conn| socket.too_large(conn, id))
                }
                Output::Disconnected { .. } => {
                    self.with_app(ctx, |socket, _| socket.left());
                    self.close(CloseReason::ClientClose, ctx)
                }
            }
        }
        match result {
            Err(violation) => {
                metrics().error("protocol_violation");
                debug!(session = %self.sid.public(), %violation, "protocol violation");
                self.close(CloseReason::ProtocolViolation, ctx);
            }
            Ok(()) => {
                if let Upper::SocketIo(up) = &self.upper
                    && up.sio.connected()
                {
                    self.engine.joined();
                }
            }
        }
    }

    fn close(&mut self, reason: CloseReason, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.run(ctx, |e, io| e.close(reason, now, io));
    }

    /// Lend the layer above a [`Conn`] (with the application socket, in product mode).
    fn with_conn(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(Option<&mut crate::app::Socket>, &mut SessionConn<'_>),
    ) {
        let Upper::SocketIo(up) = &mut self.upper else {
            return;
        };
        let SocketIoUpper { sio, app, .. } = &mut **up;
        let mut events = Vec::new();
        {
            let mut conn = SessionConn {
                sid: &self.sid,
                engine: &mut self.engine,
                io: Io {
                    links: &mut self.links,
                    get: &mut self.get,
                    events: &mut events,
                },
                sio,
                ctx,
            };
            f(app.as_mut(), &mut conn);
        }
        for event in events {
            self.on_event(event, ctx);
        }
    }

    /// [`Session::with_conn`] for product-mode sessions only.
    fn with_app(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut crate::app::Socket, &mut SessionConn<'_>),
    ) {
        self.with_conn(ctx, |app, conn| {
            if let Some(app) = app {
                f(app, conn);
            }
        });
    }

    fn has_app(&self) -> bool {
        matches!(&self.upper, Upper::SocketIo(up) if up.app.is_some())
    }

    /// An answer for the application arrived.
    fn app_done(&mut self, done: Done, ctx: &mut Context<Self>) {
        self.with_app(ctx, |socket, conn| socket.done(conn, done));
        self.settle(ctx);
    }

    /// A command for the application (or, without one, its connection-level meaning).
    fn command(&mut self, command: Command, ctx: &mut Context<Self>) {
        if self.has_app() {
            self.with_app(ctx, |socket, conn| socket.command(conn, command));
            return;
        }
        match command {
            Command::Disconnect => self.close(CloseReason::ServerDisconnect, ctx),
            Command::Shutdown => self.close(CloseReason::ServerShutdown, ctx),
            Command::SetRooms { .. } | Command::Maintenance => {}
        }
    }

    /// After every input: stop when the engine is done, else keep the timer at its deadline.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        if self.engine.done() {
            ctx.stop();
            return;
        }
        let attachments_by = match &self.upper {
            Upper::SocketIo(up) => up.attachments_by,
            Upper::Echo => None,
        };
        let deadline = match (self.engine.next_deadline(), attachments_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.timer.as_ref().map(|(at, _)| *at) == deadline {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = deadline {
            let delay = at.saturating_duration_since(Instant::now());
            let handle = ctx.run_later(delay, |act, ctx| {
                act.timer = None;
                let now = Instant::now();
                if let Upper::SocketIo(up) = &mut act.upper
                    && up.attachments_by.is_some_and(|by| by <= now)
                {
                    up.attachments_by = None;
                    metrics().error("protocol_violation");
                    debug!(session = %act.sid.public(), "binary attachments did not arrive in time");
                    act.close(CloseReason::ProtocolViolation, ctx);
                }
                act.run(ctx, |e, io| e.on_timer(now, io));
                act.settle(ctx);
            });
            self.timer = Some((at, handle));
        }
    }

    /// Everything a session is told, from its port.
    fn on_input(&mut self, msg: ToSession, ctx: &mut Context<Self>) -> Result<(), PollError> {
        let now = Instant::now();
        match msg {
            ToSession::AttachWebSocket(attach) => {
                self.links.add(attach.id, attach.out);
                self.run(ctx, |e, io| e.attach_ws(attach.id, attach.upgrade, now, io));
                self.open_upper(ctx);
            }
            ToSession::WsInbound(inbound) => {
                self.run(ctx, |e, io| {
                    e.ws_inbound(inbound.id, inbound.packet, now, io)
                });
            }
            ToSession::WsClosed(closed) => {
                self.run(ctx, |e, io| e.ws_closed(closed.id, closed.error, now, io));
                // The transport is gone either way: forget its queue.
                self.links.take(closed.id);
            }
            ToSession::PollGet(get) => {
                self.run(ctx, |e, io| e.poll_get(now, io))?;
                self.get = Some(get.reply);
                self.run(ctx, |e, io| e.get_waiting(io));
            }
            ToSession::PollPostStart => self.run(ctx, |e, io| e.poll_post_start(now, io))?,
            ToSession::PollPostBody(post) => {
                let packets = self.run(ctx, |e, io| {
                    e.poll_post_body(post.body, post.binary, now, io)
                })?;
                for packet in packets {
                    self.run(ctx, |e, io| e.on_packet(packet, now, io));
                }
            }
            ToSession::Push(push) => {
                let push = match &mut self.upper {
                    Upper::SocketIo(up) => match &mut up.app {
                        Some(app) => app.pushed(push),
                        None => Some(push),
                    },
                    Upper::Echo => Some(push),
                };
                if let Some(push) = push {
                    message_sent(push.event);
                    let volatile = push.volatile;
                    self.run(ctx, |e, io| {
                        for frame in push.frames.iter() {
                            e.send(frame.clone(), volatile, now, io);
                        }
                    });
                }
            }
            ToSession::Congested => self.close(CloseReason::SlowClient, ctx),
            ToSession::Disconnect => self.command(Command::Disconnect, ctx),
            ToSession::SetRooms(set) => self.command(
                Command::SetRooms {
                    room: set.room,
                    member: set.member,
                },
                ctx,
            ),
            ToSession::Maintenance => self.command(Command::Maintenance, ctx),
            ToSession::Shutdown => self.command(Command::Shutdown, ctx),
        }
        Ok(())
    }
}

/// The [`Conn`] the Session lends the application.
struct SessionConn<'a> {
    sid: &'a Sid,
    engine: &'a mut Engine,
    io: Io<'a>,
    sio: &'a mut SocketIo,
    ctx: &'a mut Context<Session>,
}

impl Conn for SessionConn<'_> {
    fn sid(&self) -> &Sid {
        self.sid
    }

    fn closing(&self) -> bool {
        self.engine.closing().is_some()
    }

    fn send(&mut self, frames: &[Outgoing], volatile: bool) {
        let now = Instant::now();
        for frame in frames {
            self.engine.send(frame.clone(), volatile, now, &mut self.io);
        }
    }

    fn join(&mut self, nsp: &str, socket: &SocketId) {
        self.sio.join(nsp, socket);
        self.engine.joined();
    }

    fn close(&mut self, reason: CloseReason) {
        self.engine.close(reason, Instant::now(), &mut self.io);
    }

    fn direct_link(&self) -> Option<WsOut> {
        let link = self.engine.active_ws()?;
        self.io.links.get(link).cloned()
    }

    fn spawn(&mut self, work: Work) {
        let span = crate::traces::current();
        self.ctx.spawn(
            actix::fut::wrap_future::<_, Session>(work).map(move |done, act, ctx| {
                let _entered = span.enter();
                act.app_done(done, ctx)
            }),
        );
    }

    fn later(&mut self, after: Duration, done: Done) {
        self.ctx
            .run_later(after, move |act, ctx| act.app_done(done, ctx));
    }

    fn emit(&mut self, packet: &Packet) {
        let packet = self.sio.for_client(packet);
        let frames: Vec<Outgoing> = packet.to_frames().into_iter().map(Outgoing::from).collect();
        self.send(&frames, false);
    }

    fn refuse_connect(&mut self, refusal: &Packet) {
        self.emit(refusal);
        if self.sio.implicit(&refusal.nsp) {
            self.emit(&Packet::disconnect(&refusal.nsp));
            self.close(CloseReason::ConnectRefused);
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        crate::metrics::actor_started("session");
        metrics().sessions(self.transport_label, 1);
        let (sid, now) = (self.sid.clone(), Instant::now());
        self.run(ctx, |e, io| e.open(&sid, now, io));
        self.open_upper(ctx);
        self.settle(ctx);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        crate::metrics::actor_stopped("session");
        metrics().sessions(self.transport_label, -1);
        let reason = self.engine.closing();
        if let Upper::SocketIo(up) = &mut self.upper
            && let Some(app) = &mut up.app
        {
            app.stopped(&self.sid, reason);
        }
        self.run(ctx, |e, io| e.stopped(io));
        self.registry.do_send(Unregister {
            sid: self.sid.clone(),
        });
    }
}

impl MeteredActor for Session {
    const NAME: &'static str = "session";
}

impl Handler<Metered<ToSession>> for Session {
    type Result = Result<(), PollError>;

    fn handle(&mut self, m: Metered<ToSession>, ctx: &mut Context<Self>) -> Self::Result {
        // One counter per variant: `actor_messages_total{actor="session",message=…}`.
        static COUNTERS: [OnceLock<Counter>; ToSession::LABELS.len()] =
            [const { OnceLock::new() }; ToSession::LABELS.len()];
        let i = m.msg.index();
        let counter = COUNTERS[i].get_or_init(|| message_counter(Self::NAME, ToSession::LABELS[i]));
        let started = m.start(Self::NAME, counter);
        let Metered { msg, guard, .. } = m;
        drop(guard);
        let out = self.on_input(msg, ctx);
        self.settle(ctx);
        handled(Self::NAME, started);
        out
    }
}
