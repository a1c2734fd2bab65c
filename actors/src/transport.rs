//! What a connection's frames are made of, why a connection ends, and the bounded queue a
//! websocket transport task reads its frames from.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::Waker;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use serde_json::Value;
use switchboard_protocol::engineio::{self, Frame};
use switchboard_protocol::socketio::{Packet, PacketData};

use crate::metrics::Metered;

/// A process-unique id for a websocket transport, so a session can tell its own transport's
/// packets from those of a refused or replaced one.
pub fn next_transport_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One encoded Engine.IO packet, ready for a websocket frame or a polling record.
///
/// Text is a `ByteString` so that one encoding can be shared by many sessions without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text frame: `<type digit><data>`.
    Text(ByteString),
    /// A binary message.
    Binary(Bytes),
}

impl Outgoing {
    /// Encode an Engine.IO packet once.
    pub fn packet(packet: &engineio::Packet) -> Self {
        Self::from(packet.encode())
    }

    /// Size in bytes, for outbound accounting.
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Text(s) => s.len(),
            Outgoing::Binary(b) => b.len(),
        }
    }

    /// Whether the frame carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The protocol crate's frame, for polling payload encoding.
    pub fn to_frame(&self) -> Frame {
        match self {
            Outgoing::Text(s) => Frame::Text(s.to_string()),
            Outgoing::Binary(b) => Frame::Binary(b.clone()),
        }
    }
}

/// Encode `[event, data]` on `/` once, as frames ready to share between recipients.
pub fn encode_event(event: &str, data: Value) -> Arc<[Outgoing]> {
    encode_event_with(event, data, Vec::new())
}

/// [`encode_event`] for data whose placeholders refer to binary `attachments` (one text frame,
/// then one binary frame per attachment).
pub fn encode_event_with(event: &str, data: Value, attachments: Vec<Bytes>) -> Arc<[Outgoing]> {
    Packet {
        nsp: "/".into(),
        data: PacketData::Event {
            data: vec![Value::String(event.into()), data],
            id: None,
            attachments,
        },
    }
    .to_frames()
    .into_iter()
    .map(Outgoing::from)
    .collect()
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Self {
        match frame {
            Frame::Text(s) => Outgoing::Text(ByteString::from(s)),
            Frame::Binary(b) => Outgoing::Binary(b),
        }
    }
}

/// Why a session ended: a closed set with stable names (logged, and later journaled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent an Engine.IO `close` packet.
    ClientClose,
    /// The transport closed (websocket closed, TCP gone).
    TransportClose,
    /// The transport failed (websocket protocol error, invalid UTF-8, oversize message).
    TransportError,
    /// No pong within pingTimeout.
    PingTimeout,
    /// No Socket.IO CONNECT within the connect timeout.
    ConnectTimeout,
    /// The client broke the Engine.IO or Socket.IO protocol.
    ProtocolViolation,
    /// The outbound queue filled up because the client does not read.
    SlowClient,
    /// A polling request broke the rules (overlapping GET/POST, oversized body).
    BadPollingRequest,
    /// The polling→websocket upgrade did not finish in time.
    UpgradeTimeout,
    /// The node is shutting down.
    ServerShutdown,
    /// The socket's token expired.
    TokenExpired,
    /// The application disconnected the user (server API).
    ServerDisconnect,
    /// A Socket.IO v4 (socket.io 2.x) client's implicit connection to `/` was refused (its
    /// token, the backend, or presence): it was told why, and cannot stay on no namespace.
    ConnectRefused,
    /// Too many refused logins on one connection, or from one address: each costs a token
    /// check, so the connection is not left open for more.
    LoginRefused,
}

impl CloseReason {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "client_disconnect",
            CloseReason::TransportClose => "transport_close",
            CloseReason::TransportError => "transport_error",
            CloseReason::PingTimeout => "timeout",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::ProtocolViolation => "protocol_violation",
            CloseReason::SlowClient => "slow_client",
            CloseReason::BadPollingRequest => "bad_polling_request",
            CloseReason::UpgradeTimeout => "upgrade_timeout",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::ServerDisconnect => "server_disconnect",
            CloseReason::ConnectRefused => "connect_refused",
            CloseReason::LoginRefused => "login_refused",
        }
    }

    /// Whether the client should still get what was queued before the close (a closing
    /// server speaks its last words: `server:shutdown`, the disconnect packet). After a broken
    /// rule, a timeout or the client's own close nothing more is sent and the session is
    /// forgotten at once, as the reference server does: the next request with its sid is
    /// "Session ID unknown".
    pub fn drains(self) -> bool {
        matches!(
            self,
            CloseReason::ServerShutdown
                | CloseReason::ServerDisconnect
                | CloseReason::TokenExpired
                | CloseReason::ConnectTimeout
                | CloseReason::ConnectRefused
                | CloseReason::LoginRefused
        )
    }

    /// The websocket close code a client sees for this reason.
    pub fn ws_code(self) -> u16 {
        match self {
            CloseReason::ClientClose
            | CloseReason::TransportClose
            | CloseReason::PingTimeout
            | CloseReason::ConnectTimeout
            | CloseReason::BadPollingRequest
            | CloseReason::UpgradeTimeout
            | CloseReason::TokenExpired
            | CloseReason::ServerDisconnect
            | CloseReason::ConnectRefused => 1000,
            CloseReason::ServerShutdown => 1001,
            CloseReason::ProtocolViolation | CloseReason::TransportError => 1002,
            CloseReason::SlowClient | CloseReason::LoginRefused => 1008,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Session → websocket transport.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum WsOutbound {
    /// Write one frame.
    Frame(Outgoing),
    /// Send a Close frame with this code and reason, then stop.
    Close {
        /// Websocket close code.
        code: u16,
        /// Short reason text.
        reason: &'static str,
    },
}

/// Where a Session (and the registry, for direct deliveries) write to a websocket transport.
///
/// A bounded queue rather than an actor mailbox: the transport is a plain task, and an idle
/// queue costs no allocation. Items are [`Metered`] as `ws_transport`, like a mailbox.
#[derive(Clone)]
pub struct WsOut {
    queue: Arc<OutQueue>,
    bound: usize,
    /// Bytes of frames the queue may hold (a lone frame is always taken).
    max_bytes: usize,
}

/// The transport's end of a [`WsOut`] queue; dropping it closes the queue.
pub struct WsOutReceiver {
    queue: Arc<OutQueue>,
}

struct OutQueue {
    state: Mutex<OutState>,
}

struct OutState {
    items: VecDeque<Metered<WsOutbound>>,
    /// Bytes of the frames in `items`.
    bytes: usize,
    waker: Option<Waker>,
    closed: bool,
}

impl WsOutbound {
    /// Bytes it puts on the queue.
    fn len(&self) -> usize {
        match self {
            WsOutbound::Frame(frame) => frame.len(),
            _ => 0,
        }
    }
}

/// A queue for one websocket transport that `try_send` keeps to `bound` frames and
/// `max_bytes` bytes.
pub fn ws_out(bound: usize, max_bytes: usize) -> (WsOut, WsOutReceiver) {
    let queue = Arc::new(OutQueue {
        state: Mutex::new(OutState {
            items: VecDeque::new(),
            bytes: 0,
            waker: None,
            closed: false,
        }),
    });
    (
        WsOut {
            queue: queue.clone(),
            bound: bound.max(1),
            max_bytes: max_bytes.max(1),
        },
        WsOutReceiver { queue },
    )
}

impl OutQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutState> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl WsOut {
    fn push(&self, msg: WsOutbound, bounded: bool) -> Result<(), SendError<WsOutbound>> {
        let size = msg.len();
        let msg = Metered::new("ws_transport", msg);
        let waker = {
            let mut state = self.queue.lock();
            if state.closed {
                return Err(SendError::Closed(msg.msg));
            }
            let over_bytes = !state.items.is_empty() && state.bytes + size > self.max_bytes;
            if bounded && (state.items.len() >= self.bound || over_bytes) {
                return Err(SendError::Full(msg.msg));
            }
            state.bytes += size;
            state.items.push_back(msg);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Send regardless of the bound (close frames).
    pub fn do_send(&self, msg: WsOutbound) {
        let _ = self.push(msg, false);
    }

    /// Send unless the queue is full (a client that does not read) or the transport is gone.
    pub fn try_send(&self, msg: WsOutbound) -> Result<(), SendError<WsOutbound>> {
        self.push(msg, true)
    }
}

impl WsOutReceiver {
    /// Move every queued item into `into` (which should be empty), or wait for one.
    pub fn poll_take(
        &self,
        cx: &mut std::task::Context<'_>,
        into: &mut VecDeque<Metered<WsOutbound>>,
    ) -> std::task::Poll<()> {
        let mut state = self.queue.lock();
        if state.items.is_empty() {
            if !state
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.waker = Some(cx.waker().clone());
            }
            return std::task::Poll::Pending;
        }
        // Swapping keeps both buffers' capacity: no allocation per batch.
        std::mem::swap(&mut state.items, into);
        state.bytes = 0;
        std::task::Poll::Ready(())
    }

    /// Refuse further frames and drop the queued ones (the transport has ended).
    pub fn close(&self) {
        // Dropped after the lock is released: each item lowers a metrics gauge.
        let items = {
            let mut state = self.queue.lock();
            state.closed = true;
            state.waker = None;
            state.bytes = 0;
            std::mem::take(&mut state.items)
        };
        drop(items);
    }
}

impl Drop for WsOutReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    fn frame(n: usize) -> WsOutbound {
        WsOutbound::Frame(Outgoing::Text("x".repeat(n).into()))
    }

    #[test]
    fn the_queue_is_bounded_in_frames_and_in_bytes_and_empties_when_taken() {
        let (out, rx) = ws_out(3, 100);
        assert!(
            out.try_send(frame(150)).is_ok(),
            "a lone frame is always taken"
        );
        assert!(matches!(out.try_send(frame(1)), Err(SendError::Full(_))));
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut into = VecDeque::new();
        assert!(rx.poll_take(&mut cx, &mut into).is_ready());
        for _ in 0..3 {
            assert!(out.try_send(frame(10)).is_ok());
        }
        assert!(
            matches!(out.try_send(frame(10)), Err(SendError::Full(_))),
            "three frames"
        );
        into.clear();
        assert!(rx.poll_take(&mut cx, &mut into).is_ready());
        assert!(out.try_send(frame(60)).is_ok());
        assert!(
            matches!(out.try_send(frame(60)), Err(SendError::Full(_))),
            "over 100 bytes"
        );
        out.do_send(frame(60));
        assert_eq!(rx.queue.lock().items.len(), 2, "do_send ignores the bounds");
    }
}
