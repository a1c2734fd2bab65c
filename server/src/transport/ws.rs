//! The websocket transport: one task per client websocket that owns the TCP stream and moves
//! frames between it and the Session.
//!
//! It owns no session state. It is a task, not an actor, so that an idle websocket costs
//! little: no read or write buffer is held between frames, and nothing of the HTTP dispatcher
//! outlives the handshake. Frames to the client arrive on a bounded [`WsOut`] queue; while the
//! client does not read, the task stops taking from it, so the queue fills and the writer
//! sees a slow client. Metrics keep the `ws_transport` actor name.
//!
//! The transport also owns the Engine.IO revision's websocket framing ([`WsFraming`]): a v3
//! binary message carries its type byte, or travels as base64 text, while the Session and the
//! fan-out deal in v4 frames only.
//!
//! With permessage-deflate negotiated ([`WsDeflate`]) it compresses messages from the threshold
//! up and inflates the client's compressed ones: the compressed message is bounded by
//! maxPayload (the codec's and the reassembly's cap), the inflated one by `max_inflated`.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::Duration;

use actix_http::ws::{
    CloseCode, CloseReason, Codec, Frame, Item, Message, OpCode, Parser, ProtocolError,
};
use actix_rt::net::TcpStream;
use bytes::{Buf, Bytes, BytesMut};
use prometheus_client::metrics::counter::Counter;
use switchboard_actors::metrics::{self, Metered};
use switchboard_actors::ports::session::{
    AttachWebSocket, SessionPort, ToSession, WsClosed, WsInbound,
};
use switchboard_actors::transport::{
    Outgoing, WsOutReceiver, WsOutbound, next_transport_id, ws_out,
};
use switchboard_protocol::engineio::{self, Packet, v3};
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::deflate::{self, InflateError, WsDeflate};

/// Stop taking frames from the queue while this much is unwritten (the client is not reading).
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Read at least this much at a time.
const READ_CHUNK: usize = 4 * 1024;
/// How long a closing websocket waits for its last bytes to drain and for the client's end.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// RSV1: the frame (the first of its message) is compressed (RFC 7692).
const RSV1: u8 = 0x40;

/// How Engine.IO packets map to websocket frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsFraming {
    /// Engine.IO v4: a binary frame is a binary message, as is.
    V4,
    /// Engine.IO v3: a binary frame is the type byte `4` and the message; with `base64` (the
    /// client's `b64=1`) binary messages are sent as `b4<base64>` text frames instead.
    V3 {
        /// The client cannot take binary frames.
        base64: bool,
    },
}

impl WsFraming {
    /// The packet of a text frame.
    fn decode_text(self, text: &str) -> Result<Packet, engineio::DecodeError> {
        match self {
            WsFraming::V4 => Packet::decode_text(text),
            WsFraming::V3 { .. } => v3::decode_text(text),
        }
    }

    /// The packet of a binary frame.
    fn decode_binary(self, data: Bytes) -> Result<Packet, engineio::DecodeError> {
        match self {
            WsFraming::V4 => Ok(Packet::from_binary(data)),
            WsFraming::V3 { .. } => v3::decode_binary(data),
        }
    }

    /// The frame that carries a binary message.
    fn binary_message(self, data: Bytes) -> Message {
        match self {
            WsFraming::V4 => Message::Binary(data),
            WsFraming::V3 { base64 } => match v3::binary_frame(&data, base64) {
                engineio::Frame::Text(text) => Message::Text(text.into()),
                engineio::Frame::Binary(data) => Message::Binary(data),
            },
        }
    }
}

/// One client websocket (see the module docs).
pub struct WsTransport {
    id: u64,
    io: TcpStream,
    codec: Codec,
    /// Bytes read but not yet decoded; empty (unallocated) between frames.
    read: BytesMut,
    /// Bytes encoded but not yet written; empty (unallocated) when all is written.
    write: BytesMut,
    session: SessionPort,
    queue: WsOutReceiver,
    /// Frames taken from the queue and not yet encoded.
    taken: VecDeque<Metered<WsOutbound>>,
    max_payload: usize,
    /// A fragmented message being reassembled: (is text, is compressed, bytes so far).
    fragments: Option<(bool, bool, BytesMut)>,
    /// The Engine.IO revision's framing.
    framing: WsFraming,
    /// permessage-deflate, when negotiated.
    deflate: Option<WsDeflate>,
    /// The frame at the head of `read` had RSV1 (cleared there, since the codec refuses it).
    compressed: bool,
}

/// How the websocket ended.
enum End {
    /// A close handshake, the client going away, or the Session closing it.
    Clean,
    /// A protocol error: the client gets a Close frame with this code and reason.
    Fail(CloseCode, String),
}

/// What woke the task.
enum Ready {
    Outbound,
    Writable,
    Readable,
}

/// How a websocket is served, as its handshake settled it.
#[derive(Debug, Clone, Copy)]
pub struct WsOptions {
    /// The Engine.IO revision's framing.
    pub framing: WsFraming,
    /// permessage-deflate, when negotiated.
    pub deflate: Option<WsDeflate>,
    /// Engine.IO maxPayload: the largest message, as received.
    pub max_payload: usize,
    /// Frames the outbound queue holds.
    pub mailbox: usize,
    /// Bytes the outbound queue holds.
    pub mailbox_bytes: usize,
}

impl WsTransport {
    /// Serve a websocket whose handshake was just answered; `read` holds any bytes the client
    /// sent after its handshake. `upgrade` when it upgrades a polling session.
    pub async fn serve(
        io: TcpStream,
        read: BytesMut,
        session: SessionPort,
        upgrade: bool,
        options: WsOptions,
    ) {
        let WsOptions {
            framing,
            deflate,
            max_payload,
            mailbox,
            mailbox_bytes,
        } = options;
        let (out, queue) = ws_out(mailbox, mailbox_bytes);
        let mut transport = WsTransport {
            id: next_transport_id(),
            io,
            codec: Codec::new().max_size(max_payload),
            read,
            write: BytesMut::new(),
            session,
            queue,
            taken: VecDeque::new(),
            max_payload,
            fragments: None,
            framing,
            deflate,
            compressed: false,
        };
        metrics::actor_started("ws_transport");
        transport
            .session
            .do_send(ToSession::AttachWebSocket(AttachWebSocket {
                id: transport.id,
                out,
                upgrade,
            }));
        let error = match transport.run().await {
            Ok(End::Clean) => false,
            Ok(End::Fail(code, why)) => {
                debug!(why, "closing websocket");
                transport.encode(Message::Close(Some(CloseReason {
                    code,
                    description: Some(why),
                })));
                true
            }
            // The TCP connection failed (reset): the client is gone, like a clean end.
            Err(err) => {
                debug!(%err, "websocket i/o");
                false
            }
        };
        transport.queue.close();
        transport.taken.clear();
        // The Session hears of the end first: it must not wait for the linger below.
        transport.session.do_send(ToSession::WsClosed(WsClosed {
            id: transport.id,
            error,
        }));
        metrics::actor_stopped("ws_transport");
        let _ = tokio::time::timeout(CLOSE_LINGER, transport.linger()).await;
    }

    /// Move frames both ways until the websocket ends.
    async fn run(&mut self) -> io::Result<End> {
        // Frames the client sent right behind its handshake.
        if !self.read.is_empty()
            && let Some(end) = self.decode()
        {
            return Ok(end);
        }
        loop {
            // Idle sockets hold no read buffer: not the HTTP dispatcher's (8 KiB), and not one
            // reserved for a read that found nothing (readiness stays set after a read that got
            // data, so the read after it usually returns WouldBlock).
            if self.read.is_empty() && self.read.capacity() > 0 {
                self.read = BytesMut::new();
            }
            match self.ready().await? {
                Ready::Outbound => {
                    if self.encode_taken() {
                        return Ok(End::Clean);
                    }
                    self.flush()?;
                }
                Ready::Writable => self.flush()?,
                Ready::Readable => {
                    if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
                        self.read.reserve(READ_CHUNK);
                    }
                    match self.io.try_read_buf(&mut self.read) {
                        Ok(0) => return Ok(End::Clean),
                        Ok(_) => {
                            if let Some(end) = self.decode() {
                                return Ok(end);
                            }
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                        Err(err) => return Err(err),
                    }
                }
            }
        }
    }

    /// Wait for frames to send, room to write, or bytes to read.
    fn ready(&mut self) -> impl Future<Output = io::Result<Ready>> + '_ {
        poll_fn(|cx| {
            if self.write.len() < WRITE_HIGH_WATER
                && (!self.taken.is_empty() || self.queue.poll_take(cx, &mut self.taken).is_ready())
            {
                return Poll::Ready(Ok(Ready::Outbound));
            }
            if !self.write.is_empty()
                && let Poll::Ready(r) = self.io.poll_write_ready(cx)
            {
                return Poll::Ready(r.map(|()| Ready::Writable));
            }
            self.io
                .poll_read_ready(cx)
                .map(|r| r.map(|()| Ready::Readable))
        })
    }

    /// Encode taken frames until the write buffer is full; true once a Close is encoded.
    fn encode_taken(&mut self) -> bool {
        static COUNTER: OnceLock<Counter> = OnceLock::new();
        let counter =
            COUNTER.get_or_init(|| metrics::message_counter("ws_transport", "WsOutbound"));
        while self.write.len() < WRITE_HIGH_WATER {
            let Some(item) = self.taken.pop_front() else {
                break;
            };
            let started = item.start("ws_transport", counter);
            let close = match item.msg {
                WsOutbound::Frame(Outgoing::Text(text)) => {
                    self.encode_data(Message::Text(text));
                    false
                }
                WsOutbound::Frame(Outgoing::Binary(data)) => {
                    self.encode_data(self.framing.binary_message(data));
                    false
                }
                WsOutbound::Close { code, reason } => {
                    self.encode(Message::Close(Some(CloseReason {
                        code: CloseCode::from(code),
                        description: Some(reason.to_string()),
                    })));
                    true
                }
            };
            metrics::handled("ws_transport", started);
            if close {
                return true;
            }
        }
        false
    }

    /// Encode a data message, compressed when permessage-deflate is on and it is big enough.
    fn encode_data(&mut self, msg: Message) {
        let Some(deflate) = self.deflate else {
            return self.encode(msg);
        };
        let (op, payload) = match &msg {
            Message::Text(text) => (OpCode::Text, &text.as_bytes()[..]),
            Message::Binary(data) => (OpCode::Binary, &data[..]),
            _ => return self.encode(msg),
        };
        if payload.len() < deflate.threshold {
            return self.encode(msg);
        }
        let Some(packed) = deflate::deflate(payload) else {
            return self.encode(msg);
        };
        let start = self.write.len();
        Parser::write_message(&mut self.write, packed, op, true, false);
        self.write[start] |= RSV1;
    }

    fn encode(&mut self, msg: Message) {
        use actix_codec::Encoder;
        // Encoding into a BytesMut cannot fail for a server codec.
        let _ = self.codec.encode(msg, &mut self.write);
    }

    /// Write what the socket takes now.
    fn flush(&mut self) -> io::Result<()> {
        while !self.write.is_empty() {
            match self.io.try_write(&self.write) {
                Ok(n) => self.write.advance(n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) => return Err(err),
            }
        }
        // Idle sockets hold no write buffer.
        self.write = BytesMut::new();
        Ok(())
    }

    /// Decode every whole frame read so far; `Some` when the websocket ends.
    fn decode(&mut self) -> Option<End> {
        use actix_codec::Decoder;
        loop {
            if let Some(end) = self.take_rsv1() {
                return Some(end);
            }
            match self.codec.decode(&mut self.read) {
                Ok(Some(frame)) => {
                    if let Some(end) = self.on_frame(frame) {
                        return Some(end);
                    }
                }
                Ok(None) => return None,
                Err(ProtocolError::Overflow) => {
                    return Some(End::Fail(CloseCode::Size, "message too big".into()));
                }
                Err(err) => return Some(End::Fail(CloseCode::Protocol, err.to_string())),
            }
        }
    }

    /// With permessage-deflate, note and clear RSV1 of the frame at the head of `read` (the
    /// codec refuses reserved bits); only a message's first data frame may carry it.
    fn take_rsv1(&mut self) -> Option<End> {
        let first = self.read.first_mut()?;
        if self.deflate.is_none() || *first & RSV1 == 0 {
            return None;
        }
        let opcode = *first & 0x0f;
        // 1 and 2: text and binary; continuation (0) and control frames may not set it.
        if opcode != 1 && opcode != 2 {
            return Some(End::Fail(
                CloseCode::Protocol,
                "RSV1 on a continuation or control frame".into(),
            ));
        }
        *first &= !RSV1;
        self.compressed = true;
        None
    }

    /// A whole compressed message, inflated; its end when it is a bomb or not deflate.
    fn inflate(&self, data: &[u8]) -> Result<Bytes, End> {
        let cap = self.deflate.map_or(0, |d| d.max_inflated);
        deflate::inflate(data, cap)
            .map(Bytes::from)
            .map_err(|err| match err {
                InflateError::TooBig => {
                    End::Fail(CloseCode::Size, "message too big once inflated".into())
                }
                InflateError::Corrupt => {
                    End::Fail(CloseCode::Invalid, "invalid compressed message".into())
                }
            })
    }

    fn on_frame(&mut self, frame: Frame) -> Option<End> {
        let compressed = std::mem::take(&mut self.compressed);
        match frame {
            Frame::Text(_) | Frame::Binary(_) if self.fragments.is_some() => Some(End::Fail(
                CloseCode::Protocol,
                "data frame inside a fragmented message".into(),
            )),
            Frame::Text(data) if compressed => match self.inflate(&data) {
                Ok(data) => self.on_text(data),
                Err(end) => Some(end),
            },
            Frame::Binary(data) if compressed => match self.inflate(&data) {
                Ok(data) => self.on_binary(data),
                Err(end) => Some(end),
            },
            // `take_rsv1` lets RSV1 through on first frames only: inflated once all are in.
            Frame::Continuation(item) if compressed => self.on_fragment(item, true),
            Frame::Text(data) => self.on_text(data),
            Frame::Binary(data) => self.on_binary(data),
            Frame::Continuation(item) => self.on_fragment(item, false),
            Frame::Ping(data) => {
                self.encode(Message::Pong(data));
                None
            }
            Frame::Pong(_) => None,
            Frame::Close(reason) => {
                // Answer the close handshake with the client's own code.
                self.encode(Message::Close(reason));
                Some(End::Clean)
            }
        }
    }

    fn on_text(&mut self, data: Bytes) -> Option<End> {
        let Ok(text) = std::str::from_utf8(&data) else {
            return Some(End::Fail(CloseCode::Invalid, "invalid utf-8".into()));
        };
        let packet = self.framing.decode_text(text);
        self.inbound(packet)
    }

    fn on_binary(&mut self, data: Bytes) -> Option<End> {
        let packet = self.framing.decode_binary(data);
        self.inbound(packet)
    }

    /// Hand a decoded packet to the session; a frame that did not decode ends the websocket.
    fn inbound(&mut self, packet: Result<Packet, engineio::DecodeError>) -> Option<End> {
        match packet {
            Ok(packet) => {
                self.session.do_send(ToSession::WsInbound(WsInbound {
                    id: self.id,
                    packet,
                }));
                None
            }
            Err(_) => Some(End::Fail(
                CloseCode::Protocol,
                "invalid engine.io packet".into(),
            )),
        }
    }

    fn on_fragment(&mut self, item: Item, compressed: bool) -> Option<End> {
        let (first, text, chunk, last) = match item {
            Item::FirstText(b) => (true, true, b, false),
            Item::FirstBinary(b) => (true, false, b, false),
            Item::Continue(b) => (false, false, b, false),
            Item::Last(b) => (false, false, b, true),
        };
        if first {
            if self.fragments.is_some() {
                return Some(End::Fail(
                    CloseCode::Protocol,
                    "new message inside a fragmented one".into(),
                ));
            }
            self.fragments = Some((text, compressed, BytesMut::new()));
        }
        let Some((is_text, _, buf)) = self.fragments.as_mut() else {
            return Some(End::Fail(
                CloseCode::Protocol,
                "continuation without a first frame".into(),
            ));
        };
        if buf.len() + chunk.len() > self.max_payload {
            self.fragments = None;
            return Some(End::Fail(CloseCode::Size, "message too big".into()));
        }
        buf.extend_from_slice(&chunk);
        if !last {
            return None;
        }
        let is_text = *is_text;
        let (_, compressed, buf) = self.fragments.take()?;
        let data = if compressed {
            match self.inflate(&buf) {
                Ok(data) => data,
                Err(end) => return Some(end),
            }
        } else {
            buf.freeze()
        };
        if is_text {
            self.on_text(data)
        } else {
            self.on_binary(data)
        }
    }

    /// After the end: write what is left (the Close frame), half-close, and read until the
    /// client closes too, so unread input does not turn our close into a reset.
    async fn linger(&mut self) {
        while !self.write.is_empty() {
            if self.io.writable().await.is_err() || self.flush().is_err() {
                return;
            }
        }
        if self.io.shutdown().await.is_err() {
            return;
        }
        // On the heap: a buffer here would be part of every connection's task.
        let mut sink = BytesMut::new();
        loop {
            if self.io.readable().await.is_err() {
                return;
            }
            sink.clear();
            sink.reserve(1024);
            match self.io.try_read_buf(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}
