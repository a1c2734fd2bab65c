//! The Engine.IO state machine of one session: its transport (polling, websocket, the upgrade
//! between them), the heartbeat, the connect timeout and the bounded outbox.
//!
//! A session speaks one Engine.IO revision ([`Protocol`]). In v4 the server pings and the
//! client answers; in v3 the client pings, the server answers, and a client that has not
//! pinged within `pingInterval + pingTimeout` is closed. v3 also has its own handshake and
//! polling framing; its websocket framing belongs to the websocket transport.
//!
//! Pure: time comes in as `now`, deadlines go out as [`Engine::next_deadline`], and whatever
//! must reach a transport or the layer above goes through [`Wire`]. The Session actor arms one
//! timer at the next deadline and implements `Wire` over its real transports; the tests below
//! drive the machine with made-up instants and a recording `Wire`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_protocol::engineio::{self, Frame, Handshake, Packet, v3};

use super::SessionConfig;
use crate::ids::Sid;
use crate::ports::session::{PollBody, PollError};
use crate::transport::{CloseReason, Outgoing};

/// Most records one polling POST may hold (bounds work per request, not memory: the body is
/// already capped by maxPayload).
const MAX_POST_RECORDS: usize = 10_000;

/// Longest a closed polling session waits for the GET that collects its final packets.
const MAX_LINGER: Duration = Duration::from_secs(5);

/// How the client first reached the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialTransport {
    /// HTTP long-polling (may upgrade to websocket later).
    Polling,
    /// A websocket whose transport will attach right after the session starts.
    WebSocket,
}

/// The Engine.IO revision a session speaks (fixed by its handshake's `EIO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `EIO=4`: the server pings; polling records joined by `\x1e`.
    V4,
    /// `EIO=3`: the client pings; length-prefixed polling records. `base64` when the handshake
    /// asked for binary as base64 (`b64=1`, as Node clients do): polling then never uses the
    /// binary framing.
    V3 {
        /// The client cannot take the binary polling framing.
        base64: bool,
    },
}

/// Why a frame could not be written to a websocket transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// Its queue is full: the client does not read.
    Full,
    /// The transport has ended.
    Closed,
}

/// One Engine.IO message for the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

/// Something the layer around the machine must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message for the layer above (Socket.IO, or the echo).
    Message(Message),
    /// The session started closing, for this reason (once).
    Closing(CloseReason),
    /// A volatile frame was dropped for a congested client.
    VolatileDropped,
    /// The session moved from polling to its websocket.
    Upgraded,
}

/// What the machine needs from the actor around it.
pub trait Wire {
    /// Write one frame to websocket `link` without waiting.
    fn ws_send(&mut self, link: u64, frame: Outgoing) -> Result<(), WsError>;
    /// Send websocket `link` a Close frame and forget it.
    fn ws_close(&mut self, link: u64, code: u16, reason: &'static str);
    /// Answer the pending polling GET with this body.
    fn answer_get(&mut self, body: PollBody);
    /// Tell the actor something happened.
    fn event(&mut self, event: Event);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Polling {
        /// A GET waits for packets.
        get: bool,
        /// A POST is being read.
        posting: bool,
    },
    /// A websocket session whose transport has not attached yet.
    WsPending,
    WebSocket(u64),
}

/// One session's Engine.IO state (see the module docs).
#[derive(Debug)]
pub struct Engine {
    config: Arc<SessionConfig>,
    protocol: Protocol,
    transport: Transport,
    /// A websocket probing an upgrade from polling.
    probe: Option<u64>,
    /// The probe was answered: polling GETs get a noop until the upgrade completes.
    probed: bool,
    /// Frames waiting for a polling GET (or for the websocket to attach).
    buffer: VecDeque<Outgoing>,
    /// Bytes in `buffer` (kept, so a send does not walk the buffer).
    buffered_bytes: usize,
    /// v4: when the next ping is due.
    ping_at: Option<Instant>,
    /// v4: when an unanswered ping times out.
    pong_by: Option<Instant>,
    /// v3: when a client that has not pinged since is closed (`pingInterval + pingTimeout`
    /// after its last ping, or after the handshake).
    client_ping_by: Option<Instant>,
    /// When a client that has not joined a namespace is dropped.
    connect_by: Option<Instant>,
    /// When an unfinished upgrade is abandoned.
    upgrade_by: Option<Instant>,
    /// When a closed polling session stops waiting for its last GET.
    linger_until: Option<Instant>,
    closing: Option<CloseReason>,
    done: bool,
}

impl Engine {
    /// A fresh Engine.IO v4 session; `awaits_connect` arms the connect timeout (Socket.IO
    /// sessions).
    pub fn new(
        config: Arc<SessionConfig>,
        initial: InitialTransport,
        awaits_connect: bool,
        now: Instant,
    ) -> Self {
        Engine::with_protocol(config, Protocol::V4, initial, awaits_connect, now)
    }

    /// A fresh session of the given Engine.IO revision.
    pub fn with_protocol(
        config: Arc<SessionConfig>,
        protocol: Protocol,
        initial: InitialTransport,
        awaits_connect: bool,
        now: Instant,
    ) -> Self {
        let (ping_at, client_ping_by) = match protocol {
            Protocol::V4 => (Some(now + config.ping_interval), None),
            Protocol::V3 { .. } => (None, Some(now + client_ping_window(&config))),
        };
        Engine {
            ping_at,
            client_ping_by,
            protocol,
            connect_by: awaits_connect.then(|| now + config.connect_timeout),
            config,
            transport: match initial {
                InitialTransport::Polling => Transport::Polling {
                    get: false,
                    posting: false,
                },
                InitialTransport::WebSocket => Transport::WsPending,
            },
            probe: None,
            probed: false,
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            pong_by: None,
            upgrade_by: None,
            linger_until: None,
            closing: None,
            done: false,
        }
    }

    /// The settings the session runs with.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The Engine.IO revision the session speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Queue the handshake (the OPEN packet).
    pub fn open(&mut self, sid: &Sid, now: Instant, io: &mut impl Wire) {
        let upgrades = match self.transport {
            Transport::Polling { .. } => vec!["websocket".to_string()],
            _ => Vec::new(),
        };
        let ping_interval = self.config.ping_interval.as_millis() as u64;
        let ping_timeout = self.config.ping_timeout.as_millis() as u64;
        let open = match self.protocol {
            Protocol::V4 => Handshake {
                sid: sid.to_string(),
                upgrades,
                ping_interval,
                ping_timeout,
                max_payload: self.config.max_payload as u64,
            }
            .packet(),
            Protocol::V3 { .. } => v3::Handshake {
                sid: sid.to_string(),
                upgrades,
                ping_interval,
                ping_timeout,
            }
            .packet(),
        };
        self.send_packet(&open, now, io);
    }

    /// `polling` or `websocket` (the `engineio_sessions_active` label).
    pub fn transport_name(&self) -> &'static str {
        match self.transport {
            Transport::Polling { .. } => "polling",
            Transport::WsPending | Transport::WebSocket(_) => "websocket",
        }
    }

    /// Whether the session has a transport to answer on (a websocket session's attached).
    pub fn attached(&self) -> bool {
        self.transport != Transport::WsPending
    }

    /// The websocket the session is on, once it is.
    pub fn active_ws(&self) -> Option<u64> {
        match self.transport {
            Transport::WebSocket(link) => Some(link),
            _ => None,
        }
    }

    /// Why the session is closing, once it is.
    pub fn closing(&self) -> Option<CloseReason> {
        self.closing
    }

    /// Whether the session has ended and its actor should stop.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The earliest deadline, for the actor's one timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        [
            self.ping_at,
            self.pong_by,
            self.client_ping_by,
            self.connect_by,
            self.upgrade_by,
            self.linger_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Run whatever is due at `now`.
    pub fn on_timer(&mut self, now: Instant, io: &mut impl Wire) {
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if due(self.linger_until) {
            self.linger_until = None;
            self.done = true;
            return;
        }
        if due(self.connect_by) {
            self.connect_by = None;
            self.close(CloseReason::ConnectTimeout, now, io);
        }
        if due(self.pong_by) || due(self.client_ping_by) {
            self.pong_by = None;
            self.client_ping_by = None;
            self.close(CloseReason::PingTimeout, now, io);
        }
        if due(self.upgrade_by) {
            self.upgrade_by = None;
            self.abort_upgrade(io);
        }
        if due(self.ping_at) {
            self.ping_at = None;
            if self.closing.is_none() {
                self.send_packet(&Packet::Ping(String::new()), now, io);
                self.pong_by = Some(now + self.config.ping_timeout);
            }
        }
    }

    /// A namespace was joined: the connect timeout no longer applies.
    pub fn joined(&mut self) {
        self.connect_by = None;
    }

    /// Queue one frame for the client on whatever transport is current; a volatile one is
    /// dropped instead of closing a congested client.
    pub fn send(&mut self, frame: Outgoing, volatile: bool, now: Instant, io: &mut impl Wire) {
        if self.closing.is_some() {
            return;
        }
        let congested = match self.transport {
            Transport::WebSocket(link) => match io.ws_send(link, frame) {
                Ok(()) => false,
                Err(WsError::Full) => true,
                Err(WsError::Closed) => {
                    self.close(CloseReason::TransportClose, now, io);
                    return;
                }
            },
            Transport::Polling { .. } | Transport::WsPending => {
                let over_bytes = !self.buffer.is_empty()
                    && self.buffered_bytes + frame.len() > self.config.max_buffered_bytes;
                if self.buffer.len() >= self.config.max_buffered_frames || over_bytes {
                    true
                } else {
                    self.buffered_bytes += frame.len();
                    self.buffer.push_back(frame);
                    self.flush_polling(io);
                    false
                }
            }
        };
        if congested {
            if volatile {
                io.event(Event::VolatileDropped);
            } else {
                self.close(CloseReason::SlowClient, now, io);
            }
        }
    }

    fn send_packet(&mut self, packet: &Packet, now: Instant, io: &mut impl Wire) {
        self.send(Outgoing::packet(packet), false, now, io);
    }

    /// Answer the pending GET with everything buffered.
    fn flush_polling(&mut self, io: &mut impl Wire) {
        if self.buffer.is_empty() {
            return;
        }
        if let Transport::Polling { get, .. } = &mut self.transport
            && *get
        {
            *get = false;
            self.buffered_bytes = 0;
            let frames: Vec<_> = self.buffer.drain(..).map(|f| f.to_frame()).collect();
            io.answer_get(self.poll_body(&frames));
        }
    }

    /// A GET response body in the session's polling framing.
    fn poll_body(&self, frames: &[Frame]) -> PollBody {
        match self.protocol {
            Protocol::V4 => PollBody::text(engineio::payload::encode(frames)),
            Protocol::V3 { base64 } => {
                let body = v3::payload::encode(frames, !base64);
                PollBody {
                    binary: body.is_binary(),
                    body: body.into_bytes(),
                }
            }
        }
    }

    /// Answer a pending GET with one packet and nothing else (close or noop).
    fn answer_get_with(&mut self, packet: Packet, io: &mut impl Wire) {
        if let Transport::Polling { get, .. } = &mut self.transport
            && *get
        {
            *get = false;
            let body = self.poll_body(&[packet.encode()]);
            io.answer_get(body);
        }
    }

    /// Close the session: websocket Close frame, or the polling close rules (Node's).
    pub fn close(&mut self, reason: CloseReason, now: Instant, io: &mut impl Wire) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(reason);
        io.event(Event::Closing(reason));
        match self.transport {
            Transport::WebSocket(link) => io.ws_close(link, reason.ws_code(), reason.as_str()),
            Transport::Polling { get, .. } => {
                if reason == CloseReason::ClientClose {
                    // Node answers a GET pending at a client close with a noop.
                    self.answer_get_with(Packet::Noop, io);
                } else if !reason.drains() || (get && self.buffer.is_empty()) {
                    self.buffer.clear();
                    self.buffered_bytes = 0;
                    self.answer_get_with(Packet::Close, io);
                } else {
                    // Deliver what is queued (an error, a `41`) first and the close packet in a
                    // later response: socket.io-client handles Socket.IO packets a tick after
                    // the Engine.IO close of the same payload. With no GET waiting, the next
                    // one collects them.
                    self.flush_polling(io);
                    self.close_probe(reason, io);
                    self.linger_until = Some(now + self.config.ping_timeout.min(MAX_LINGER));
                    return;
                }
            }
            Transport::WsPending => {}
        }
        self.close_probe(reason, io);
        self.done = true;
    }

    fn close_probe(&mut self, reason: CloseReason, io: &mut impl Wire) {
        if let Some(probe) = self.probe.take() {
            io.ws_close(probe, reason.ws_code(), reason.as_str());
        }
    }

    /// The actor is stopping without having closed (the node is going down).
    pub fn stopped(&mut self, io: &mut impl Wire) {
        if self.closing.is_none() {
            self.answer_get_with(Packet::Close, io);
        }
    }

    /// One packet from the client, over polling or the current websocket.
    pub fn on_packet(&mut self, packet: Packet, now: Instant, io: &mut impl Wire) {
        if self.closing.is_some() {
            return;
        }
        match packet {
            Packet::Close => self.close(CloseReason::ClientClose, now, io),
            Packet::Ping(data) => {
                if let Protocol::V3 { .. } = self.protocol {
                    self.client_ping_by = Some(now + client_ping_window(&self.config));
                }
                self.send_packet(&Packet::Pong(data), now, io);
            }
            // In v3 only the client pings: a pong from it is out of place (Node: "invalid
            // heartbeat direction").
            Packet::Pong(_) if matches!(self.protocol, Protocol::V3 { .. }) => {
                self.close(CloseReason::ProtocolViolation, now, io)
            }
            Packet::Pong(_) => {
                // A pong with no ping outstanding is ignored: it must not double the pings.
                if self.pong_by.take().is_some() {
                    self.ping_at = Some(now + self.config.ping_interval);
                }
            }
            Packet::Message(text) => io.event(Event::Message(Message::Text(text))),
            Packet::Binary(data) => io.event(Event::Message(Message::Binary(data))),
            Packet::Noop => {}
            Packet::Open(_) | Packet::Upgrade => {
                self.close(CloseReason::ProtocolViolation, now, io)
            }
        }
    }

    /// A websocket transport wants to attach (fresh connection, or an upgrade probe).
    pub fn attach_ws(&mut self, link: u64, upgrade: bool, now: Instant, io: &mut impl Wire) {
        if self.closing.is_some() {
            io.ws_close(link, 1002, "session closed");
            return;
        }
        match (self.transport, upgrade) {
            (Transport::WsPending, false) => {
                self.transport = Transport::WebSocket(link);
                self.buffered_bytes = 0;
                let buffered: Vec<_> = self.buffer.drain(..).collect();
                for frame in buffered {
                    self.send(frame, false, now, io);
                }
            }
            (Transport::Polling { .. }, true) if self.probe.is_none() => {
                self.probe = Some(link);
                self.upgrade_by = Some(now + self.config.upgrade_timeout);
            }
            _ => io.ws_close(link, 1002, "upgrade refused"),
        }
    }

    /// A packet from a websocket: the probe's during an upgrade, or the session's own.
    pub fn ws_inbound(&mut self, link: u64, packet: Packet, now: Instant, io: &mut impl Wire) {
        // Packets from a refused or replaced websocket are ignored.
        if self.probe == Some(link) {
            self.on_probe_packet(packet, now, io);
        } else if self.active_ws() == Some(link) {
            self.on_packet(packet, now, io);
        }
    }

    fn on_probe_packet(&mut self, packet: Packet, now: Instant, io: &mut impl Wire) {
        let Some(probe) = self.probe else { return };
        match packet {
            Packet::Ping(data) if data == "probe" => {
                let pong = Outgoing::packet(&Packet::Pong(data));
                if io.ws_send(probe, pong).is_err() {
                    self.abort_upgrade(io);
                    return;
                }
                // Release the client's GET so it can send the upgrade packet; a GET that
                // arrives after the probe is answered the same way (Node's noop loop).
                self.probed = true;
                self.answer_get_with(Packet::Noop, io);
            }
            Packet::Upgrade => {
                self.probe = None;
                self.upgrade_by = None;
                self.answer_get_with(Packet::Noop, io);
                self.transport = Transport::WebSocket(probe);
                io.event(Event::Upgraded);
                self.buffered_bytes = 0;
                let buffered: Vec<_> = self.buffer.drain(..).collect();
                for frame in buffered {
                    self.send(frame, false, now, io);
                }
            }
            _ => self.abort_upgrade(io),
        }
    }

    fn abort_upgrade(&mut self, io: &mut impl Wire) {
        self.probed = false;
        self.upgrade_by = None;
        if let Some(probe) = self.probe.take() {
            io.ws_close(probe, 1002, "upgrade aborted");
        }
    }

    /// A websocket went away.
    pub fn ws_closed(&mut self, link: u64, error: bool, now: Instant, io: &mut impl Wire) {
        if self.probe == Some(link) {
            // The probe went away: the upgrade failed, polling goes on.
            self.abort_upgrade(io);
            return;
        }
        // A refused extra websocket closing says nothing about this session's own transport.
        let own = self.active_ws() == Some(link)
            || (self.transport == Transport::WsPending && self.probe.is_none());
        if own {
            let reason = if error {
                CloseReason::TransportError
            } else {
                CloseReason::TransportClose
            };
            self.close(reason, now, io);
        }
    }

    /// A polling GET arrives; on `Ok` the actor keeps its reply and calls
    /// [`Engine::get_waiting`].
    pub fn poll_get(&mut self, now: Instant, io: &mut impl Wire) -> Result<(), PollError> {
        let Transport::Polling { get, .. } = self.transport else {
            return Err(PollError::WrongTransport);
        };
        if self.closing.is_none() && get {
            self.close(CloseReason::BadPollingRequest, now, io);
            return Err(PollError::Overlap);
        }
        if let Transport::Polling { get, .. } = &mut self.transport {
            *get = true;
        }
        Ok(())
    }

    /// The accepted GET waits: answer it now if there is something to say.
    pub fn get_waiting(&mut self, io: &mut impl Wire) {
        if self.closing.is_some() {
            // A lingering closed session: hand over its final packets, then the close packet.
            if self.buffer.is_empty() {
                self.answer_get_with(Packet::Close, io);
                self.done = true;
            } else {
                self.flush_polling(io);
            }
        } else if self.probed && self.probe.is_some() && self.buffer.is_empty() {
            self.answer_get_with(Packet::Noop, io);
        } else {
            self.flush_polling(io);
        }
    }

    /// A polling POST starts.
    pub fn poll_post_start(&mut self, now: Instant, io: &mut impl Wire) -> Result<(), PollError> {
        let Transport::Polling { posting, .. } = self.transport else {
            return Err(PollError::WrongTransport);
        };
        if posting {
            self.close(CloseReason::BadPollingRequest, now, io);
            return Err(PollError::Overlap);
        }
        if let Transport::Polling { posting, .. } = &mut self.transport {
            *posting = true;
        }
        Ok(())
    }

    /// A polling POST's body (or why it could not be read): its packets, to be handed to
    /// [`Engine::on_packet`] one by one. `binary`: it came as `application/octet-stream`,
    /// which only v3's binary framing may.
    pub fn poll_post_body(
        &mut self,
        body: Result<Bytes, PollError>,
        binary: bool,
        now: Instant,
        io: &mut impl Wire,
    ) -> Result<Vec<Packet>, PollError> {
        let Transport::Polling { posting, .. } = &mut self.transport else {
            return Err(PollError::WrongTransport);
        };
        *posting = false;
        let body = match body {
            // EIO4 polling bodies are text; Node refuses binary ones and closes the session.
            Ok(_) if binary && self.protocol == Protocol::V4 => Err(PollError::BadPayload),
            body => body,
        };
        let body = match body {
            Ok(body) => body,
            Err(err) => {
                self.close(CloseReason::BadPollingRequest, now, io);
                return Err(err);
            }
        };
        let decoded = match self.protocol {
            Protocol::V4 => engineio::payload::decode(&body, MAX_POST_RECORDS),
            Protocol::V3 { .. } => v3::payload::decode(&body, binary, MAX_POST_RECORDS),
        };
        decoded.map_err(|_| {
            self.close(CloseReason::ProtocolViolation, now, io);
            PollError::BadPayload
        })
    }
}

/// How long a v3 client may go without pinging (Node: `pingInterval + pingTimeout`).
fn client_ping_window(config: &SessionConfig) -> Duration {
    config.ping_interval + config.ping_timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the machine asks of its transports.
    #[derive(Default)]
    struct Rec {
        ws: Vec<(u64, String)>,
        ws_closed: Vec<(u64, u16, &'static str)>,
        gets: Vec<String>,
        /// GETs answered in v3's binary framing.
        binary_gets: Vec<Vec<u8>>,
        events: Vec<Event>,
        /// Websocket links whose queue is full.
        full: Vec<u64>,
    }

    impl Wire for Rec {
        fn ws_send(&mut self, link: u64, frame: Outgoing) -> Result<(), WsError> {
            if self.full.contains(&link) {
                return Err(WsError::Full);
            }
            if self.ws_closed.iter().any(|c| c.0 == link) {
                return Err(WsError::Closed);
            }
            let Outgoing::Text(text) = frame else {
                panic!("binary frame")
            };
            self.ws.push((link, text.to_string()));
            Ok(())
        }
        fn ws_close(&mut self, link: u64, code: u16, reason: &'static str) {
            self.ws_closed.push((link, code, reason));
        }
        fn answer_get(&mut self, body: PollBody) {
            if body.binary {
                self.binary_gets.push(body.body);
            } else {
                self.gets.push(String::from_utf8(body.body).unwrap());
            }
        }
        fn event(&mut self, event: Event) {
            self.events.push(event);
        }
    }

    impl Rec {
        fn closing(&self) -> Vec<CloseReason> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    Event::Closing(r) => Some(*r),
                    _ => None,
                })
                .collect()
        }
    }

    fn config() -> Arc<SessionConfig> {
        Arc::new(SessionConfig {
            ping_interval: Duration::from_millis(1000),
            ping_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(3000),
            upgrade_timeout: Duration::from_millis(800),
            max_buffered_frames: 4,
            ..SessionConfig::default()
        })
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn text(s: &str) -> Outgoing {
        Outgoing::packet(&Packet::Message(s.into()))
    }

    /// A polling session whose handshake the first GET collected.
    fn polling(t0: Instant, io: &mut Rec) -> Engine {
        let mut e = Engine::new(config(), InitialTransport::Polling, true, t0);
        e.open(&Sid::from("sid1"), t0, io);
        e.poll_get(t0, io).unwrap();
        e.get_waiting(io);
        assert!(
            io.gets
                .remove(0)
                .starts_with(r#"0{"sid":"sid1","upgrades":["websocket"]"#)
        );
        e
    }

    #[test]
    fn the_first_get_carries_the_handshake_and_later_frames_wait_for_a_get() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.send(text("a"), false, t0, &mut io);
        e.send(text("b"), false, t0, &mut io);
        assert!(io.gets.is_empty(), "no GET waiting");
        e.poll_get(t0, &mut io).unwrap();
        e.get_waiting(&mut io);
        assert_eq!(io.gets, vec!["4a\u{1e}4b"]);
        assert_eq!(e.transport_name(), "polling");
    }

    #[test]
    fn a_ping_is_sent_at_the_interval_and_a_missing_pong_closes_at_the_timeout() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.joined();
        assert_eq!(e.next_deadline(), Some(ms(t0, 1000)));
        e.on_timer(ms(t0, 999), &mut io);
        assert!(io.events.is_empty(), "nothing is due before the interval");
        e.on_timer(ms(t0, 1000), &mut io);
        assert_eq!(
            e.next_deadline(),
            Some(ms(t0, 1500)),
            "pong due a timeout later"
        );
        // Nobody polled for the ping: the timeout still counts from the ping.
        e.on_timer(ms(t0, 1500), &mut io);
        assert_eq!(io.closing(), vec![CloseReason::PingTimeout]);
    }

    #[test]
    fn a_pong_schedules_the_next_ping_and_a_stray_pong_is_ignored() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.joined();
        e.on_packet(Packet::Pong(String::new()), ms(t0, 10), &mut io);
        assert_eq!(
            e.next_deadline(),
            Some(ms(t0, 1000)),
            "a stray pong moves nothing"
        );
        e.on_timer(ms(t0, 1000), &mut io);
        e.on_packet(Packet::Pong(String::new()), ms(t0, 1200), &mut io);
        assert_eq!(e.next_deadline(), Some(ms(t0, 2200)));
        assert!(io.closing().is_empty());
    }

    #[test]
    fn a_client_that_never_connects_is_dropped_at_the_connect_timeout() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = Engine::new(config(), InitialTransport::WebSocket, true, t0);
        e.attach_ws(7, false, t0, &mut io);
        for (i, answered) in [(1000, 1500), (2500, 3000)] {
            e.on_timer(ms(t0, i), &mut io);
            e.on_packet(Packet::Pong(String::new()), ms(t0, answered - 100), &mut io);
        }
        e.on_timer(ms(t0, 3000), &mut io);
        assert_eq!(io.closing(), vec![CloseReason::ConnectTimeout]);
        assert_eq!(io.ws_closed, vec![(7, 1000, "connect_timeout")]);
        assert!(e.done());
    }

    #[test]
    fn a_websocket_gets_the_frames_queued_before_it_attached() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = Engine::new(config(), InitialTransport::WebSocket, false, t0);
        e.open(&Sid::from("s"), t0, &mut io);
        e.send(text("early"), false, t0, &mut io);
        assert!(io.ws.is_empty());
        e.attach_ws(3, false, t0, &mut io);
        assert_eq!(io.ws.len(), 2);
        assert!(io.ws[0].1.starts_with(r#"0{"sid":"s","upgrades":[]"#));
        assert_eq!(io.ws[1], (3, "4early".into()));
        assert_eq!(e.active_ws(), Some(3));
        e.attach_ws(4, false, t0, &mut io);
        assert_eq!(io.ws_closed, vec![(4, 1002, "upgrade refused")]);
    }

    #[test]
    fn the_upgrade_probes_then_moves_the_buffer_to_the_websocket() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.attach_ws(9, true, t0, &mut io);
        e.poll_get(t0, &mut io).unwrap();
        e.get_waiting(&mut io);
        assert!(io.gets.is_empty(), "the GET waits during the probe");
        e.ws_inbound(9, Packet::Ping("probe".into()), t0, &mut io);
        assert_eq!(io.ws, vec![(9, "3probe".into())]);
        assert_eq!(
            io.gets,
            vec!["6"],
            "the waiting GET is released with a noop"
        );
        e.send(text("queued"), false, t0, &mut io);
        e.ws_inbound(9, Packet::Upgrade, t0, &mut io);
        assert_eq!(io.ws[1], (9, "4queued".into()));
        assert!(io.events.contains(&Event::Upgraded));
        assert_eq!(e.transport_name(), "websocket");
        assert_eq!(e.poll_get(t0, &mut io), Err(PollError::WrongTransport));
    }

    #[test]
    fn an_upgrade_that_stalls_is_aborted_and_polling_goes_on() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.attach_ws(9, true, t0, &mut io);
        assert_eq!(e.next_deadline(), Some(ms(t0, 800)));
        e.on_timer(ms(t0, 800), &mut io);
        assert_eq!(io.ws_closed, vec![(9, 1002, "upgrade aborted")]);
        assert!(io.closing().is_empty());
        assert_eq!(e.transport_name(), "polling");
    }

    #[test]
    fn overlapping_gets_close_the_session() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.poll_get(t0, &mut io).unwrap();
        assert_eq!(e.poll_get(t0, &mut io), Err(PollError::Overlap));
        assert_eq!(io.gets, vec!["1"], "the first GET gets the close packet");
        assert_eq!(io.closing(), vec![CloseReason::BadPollingRequest]);
        assert!(e.done());
    }

    #[test]
    fn overlapping_posts_and_bad_bodies_close_the_session() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.poll_post_start(t0, &mut io).unwrap();
        let packets = e
            .poll_post_body(Ok(Bytes::from_static(b"4hi\x1e2")), false, t0, &mut io)
            .unwrap();
        assert_eq!(
            packets,
            vec![Packet::Message("hi".into()), Packet::Ping(String::new())]
        );
        e.poll_post_start(t0, &mut io).unwrap();
        assert_eq!(e.poll_post_start(t0, &mut io), Err(PollError::Overlap));
        assert_eq!(io.closing(), vec![CloseReason::BadPollingRequest]);

        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.poll_post_start(t0, &mut io).unwrap();
        let bad = e.poll_post_body(Ok(Bytes::from_static(b"9??")), false, t0, &mut io);
        assert_eq!(bad, Err(PollError::BadPayload));
        assert_eq!(io.closing(), vec![CloseReason::ProtocolViolation]);
    }

    #[test]
    fn a_client_that_does_not_read_is_closed_and_volatile_frames_are_dropped_first() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        for i in 0..4 {
            e.send(text(&i.to_string()), false, t0, &mut io);
        }
        e.send(text("v"), true, t0, &mut io);
        assert_eq!(io.events, vec![Event::VolatileDropped]);
        e.send(text("x"), false, t0, &mut io);
        assert_eq!(io.closing(), vec![CloseReason::SlowClient]);

        let mut io = Rec::default();
        let mut e = Engine::new(config(), InitialTransport::WebSocket, false, t0);
        e.attach_ws(1, false, t0, &mut io);
        io.full.push(1);
        e.send(text("v"), true, t0, &mut io);
        e.send(text("x"), false, t0, &mut io);
        assert_eq!(io.closing(), vec![CloseReason::SlowClient]);
        assert_eq!(io.ws_closed, vec![(1, 1008, "slow_client")]);
    }

    #[test]
    fn the_polling_buffer_is_bounded_in_bytes_too() {
        let t0 = Instant::now();
        let config = Arc::new(SessionConfig {
            max_buffered_frames: 100,
            max_buffered_bytes: 1000,
            ..(*config()).clone()
        });
        let mut io = Rec::default();
        let mut e = Engine::new(config, InitialTransport::Polling, true, t0);
        e.open(&Sid::from("s"), t0, &mut io);
        // The first GET takes the open packet; nothing is waiting after it.
        e.poll_get(t0, &mut io).unwrap();
        e.get_waiting(&mut io);
        io.gets.clear();
        // One frame larger than the bound is taken (a lone frame always is)...
        e.send(text(&"a".repeat(1500)), false, t0, &mut io);
        assert!(io.closing().is_empty());
        // ...but nothing more while it waits: a volatile one is dropped, another closes.
        e.send(text("v"), true, t0, &mut io);
        assert_eq!(io.events, vec![Event::VolatileDropped]);
        e.send(text("x"), false, t0, &mut io);
        assert_eq!(io.closing(), vec![CloseReason::SlowClient]);
    }

    #[test]
    fn a_closed_polling_session_hands_over_its_last_frames_then_stops() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.send(text("bye"), false, t0, &mut io);
        e.close(CloseReason::ServerDisconnect, t0, &mut io);
        assert!(!e.done(), "it lingers for the GET that collects the frames");
        assert_eq!(e.next_deadline(), Some(ms(t0, 500)));
        e.poll_get(t0, &mut io).unwrap();
        e.get_waiting(&mut io);
        assert_eq!(io.gets, vec!["4bye"]);
        e.poll_get(t0, &mut io).unwrap();
        e.get_waiting(&mut io);
        assert_eq!(io.gets[1], "1");
        assert!(e.done());
    }

    #[test]
    fn a_ping_timeout_ends_a_polling_session_at_once_even_with_frames_queued() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.joined();
        e.send(text("unread"), false, t0, &mut io);
        e.on_timer(ms(t0, 1000), &mut io);
        assert!(!e.done());
        // The client never polled for the ping: closed exactly a timeout after it was sent.
        assert_eq!(e.next_deadline(), Some(ms(t0, 1500)));
        e.on_timer(ms(t0, 1500), &mut io);
        assert_eq!(io.closing(), vec![CloseReason::PingTimeout]);
        assert!(e.done(), "no linger: the next GET is 'Session ID unknown'");
        assert!(
            io.gets.is_empty(),
            "nothing queued is delivered after a timeout"
        );
    }

    #[test]
    fn a_protocol_violation_ends_a_polling_session_at_once() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.send(text("queued"), false, t0, &mut io);
        e.on_packet(Packet::Upgrade, t0, &mut io);
        assert_eq!(io.closing(), vec![CloseReason::ProtocolViolation]);
        assert!(e.done());
        // A GET that was waiting gets the close packet, and only that.
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.poll_get(t0, &mut io).unwrap();
        e.get_waiting(&mut io);
        e.on_packet(Packet::Open(String::new()), t0, &mut io);
        assert_eq!(io.gets, vec!["1"]);
        assert!(e.done());
    }

    #[test]
    fn a_lingering_session_stops_when_nobody_collects() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.send(text("bye"), false, t0, &mut io);
        e.close(CloseReason::ServerShutdown, t0, &mut io);
        e.on_timer(ms(t0, 500), &mut io);
        assert!(e.done());
    }

    #[test]
    fn a_client_close_answers_a_waiting_get_with_a_noop() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.poll_get(t0, &mut io).unwrap();
        e.get_waiting(&mut io);
        e.on_packet(Packet::Close, t0, &mut io);
        assert_eq!(io.gets, vec!["6"]);
        assert_eq!(io.closing(), vec![CloseReason::ClientClose]);
        assert!(e.done());
    }

    #[test]
    fn the_websocket_going_away_closes_the_session_but_a_refused_one_does_not() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = Engine::new(config(), InitialTransport::WebSocket, false, t0);
        e.attach_ws(1, false, t0, &mut io);
        e.ws_closed(2, false, t0, &mut io);
        assert!(io.closing().is_empty());
        e.ws_closed(1, true, t0, &mut io);
        assert_eq!(io.closing(), vec![CloseReason::TransportError]);
    }

    #[test]
    fn open_and_upgrade_packets_from_the_client_are_violations_and_messages_go_up() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = Engine::new(config(), InitialTransport::WebSocket, false, t0);
        e.attach_ws(1, false, t0, &mut io);
        e.ws_inbound(1, Packet::Message("m".into()), t0, &mut io);
        e.ws_inbound(1, Packet::Binary(Bytes::from_static(b"b")), t0, &mut io);
        e.ws_inbound(1, Packet::Ping("x".into()), t0, &mut io);
        assert_eq!(io.ws.last(), Some(&(1, "3x".to_string())));
        e.ws_inbound(1, Packet::Upgrade, t0, &mut io);
        assert_eq!(
            io.events,
            vec![
                Event::Message(Message::Text("m".into())),
                Event::Message(Message::Binary(Bytes::from_static(b"b"))),
                Event::Closing(CloseReason::ProtocolViolation),
            ]
        );
    }

    /// A v3 polling session whose handshake the first GET collected.
    fn polling_v3(t0: Instant, base64: bool, io: &mut Rec) -> Engine {
        let protocol = Protocol::V3 { base64 };
        let mut e = Engine::with_protocol(config(), protocol, InitialTransport::Polling, true, t0);
        e.open(&Sid::from("sid3"), t0, io);
        e.poll_get(t0, io).unwrap();
        e.get_waiting(io);
        let open =
            r#"0{"sid":"sid3","upgrades":["websocket"],"pingInterval":1000,"pingTimeout":500}"#;
        assert_eq!(io.gets.remove(0), format!("{}:{open}", open.len()));
        e
    }

    #[test]
    fn a_v3_server_never_pings_and_answers_the_clients_pings() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling_v3(t0, true, &mut io);
        e.joined();
        // The client must ping within pingInterval + pingTimeout of the handshake.
        assert_eq!(e.next_deadline(), Some(ms(t0, 1500)));
        e.on_timer(ms(t0, 1000), &mut io);
        e.poll_get(ms(t0, 1000), &mut io).unwrap();
        e.get_waiting(&mut io);
        assert!(io.gets.is_empty(), "no server ping at the interval");
        e.on_packet(Packet::Ping(String::new()), ms(t0, 1200), &mut io);
        assert_eq!(io.gets, vec!["1:3"], "the pong goes to the waiting GET");
        assert_eq!(e.next_deadline(), Some(ms(t0, 2700)), "the window restarts");
        // Pinging every interval keeps it open well past several windows.
        for at in [2200, 3200, 4200, 5200] {
            e.on_timer(ms(t0, at - 1), &mut io);
            e.on_packet(Packet::Ping(String::new()), ms(t0, at), &mut io);
        }
        assert!(io.closing().is_empty());
        assert_eq!(e.next_deadline(), Some(ms(t0, 6700)));
    }

    #[test]
    fn a_v3_client_that_stops_pinging_is_closed_after_interval_plus_timeout() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = Engine::with_protocol(
            config(),
            Protocol::V3 { base64: false },
            InitialTransport::WebSocket,
            false,
            t0,
        );
        e.attach_ws(5, false, t0, &mut io);
        e.on_packet(Packet::Ping(String::new()), ms(t0, 400), &mut io);
        assert_eq!(io.ws.last(), Some(&(5, "3".to_string())));
        // Messages are no heartbeat: only a ping moves the deadline (as in engine.io 6).
        e.on_packet(Packet::Message("x".into()), ms(t0, 1800), &mut io);
        e.on_timer(ms(t0, 1899), &mut io);
        assert!(io.closing().is_empty());
        e.on_timer(ms(t0, 1900), &mut io);
        assert_eq!(io.closing(), vec![CloseReason::PingTimeout]);
        assert_eq!(io.ws_closed, vec![(5, 1000, "timeout")]);
        assert!(e.done());
    }

    #[test]
    fn a_pong_from_a_v3_client_is_a_violation() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling_v3(t0, true, &mut io);
        e.on_packet(Packet::Pong(String::new()), t0, &mut io);
        assert_eq!(io.closing(), vec![CloseReason::ProtocolViolation]);
    }

    #[test]
    fn v3_polling_uses_the_binary_framing_only_for_binary_and_when_allowed() {
        let t0 = Instant::now();
        let binary = Outgoing::Binary(Bytes::from_static(&[1, 2, 3]));
        // A base64 client (Node, `b64=1`) gets `b4<base64>` records.
        let mut io = Rec::default();
        let mut e = polling_v3(t0, true, &mut io);
        e.send(text("51-[]"), false, t0, &mut io);
        e.send(binary.clone(), false, t0, &mut io);
        e.poll_get(t0, &mut io).unwrap();
        e.get_waiting(&mut io);
        assert_eq!(io.gets, vec!["6:451-[]6:b4AQID"]);
        // An XHR2 client gets the binary framing, but text stays text.
        let mut io = Rec::default();
        let mut e = polling_v3(t0, false, &mut io);
        e.send(text("hi"), false, t0, &mut io);
        e.poll_get(t0, &mut io).unwrap();
        e.get_waiting(&mut io);
        assert_eq!(io.gets, vec!["3:4hi"]);
        e.send(text("51-[]"), false, t0, &mut io);
        e.send(binary, false, t0, &mut io);
        e.poll_get(t0, &mut io).unwrap();
        e.get_waiting(&mut io);
        assert_eq!(
            io.binary_gets,
            vec![[&[0, 6, 0xFF][..], b"451-[]", &[1, 4, 0xFF, 4, 1, 2, 3]].concat()]
        );
    }

    #[test]
    fn v3_posts_decode_in_either_framing_and_v4_refuses_binary_bodies() {
        let t0 = Instant::now();
        let mut io = Rec::default();
        let mut e = polling_v3(t0, false, &mut io);
        e.poll_post_start(t0, &mut io).unwrap();
        let packets = e.poll_post_body(Ok(Bytes::from_static(b"1:26:b4AQID")), false, t0, &mut io);
        assert_eq!(
            packets,
            Ok(vec![
                Packet::Ping(String::new()),
                Packet::Binary(Bytes::from_static(&[1, 2, 3])),
            ])
        );
        e.poll_post_start(t0, &mut io).unwrap();
        let body = Bytes::from_static(&[0, 1, 0xFF, b'2', 1, 2, 0xFF, 4, 9]);
        let packets = e.poll_post_body(Ok(body), true, t0, &mut io);
        assert_eq!(
            packets,
            Ok(vec![
                Packet::Ping(String::new()),
                Packet::Binary(Bytes::from_static(&[9])),
            ])
        );
        // The v4 separator framing is not v3's.
        e.poll_post_start(t0, &mut io).unwrap();
        let bad = e.poll_post_body(Ok(Bytes::from_static(b"2\x1e2")), false, t0, &mut io);
        assert_eq!(bad, Err(PollError::BadPayload));
        assert_eq!(io.closing(), vec![CloseReason::ProtocolViolation]);

        let mut io = Rec::default();
        let mut e = polling(t0, &mut io);
        e.poll_post_start(t0, &mut io).unwrap();
        let bad = e.poll_post_body(Ok(Bytes::from_static(b"2")), true, t0, &mut io);
        assert_eq!(bad, Err(PollError::BadPayload));
        assert_eq!(io.closing(), vec![CloseReason::BadPollingRequest]);
    }
}
