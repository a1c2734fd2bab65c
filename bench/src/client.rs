//! One Socket.IO client over a websocket: connects from a chosen source address,
//! authenticates with a JWT, answers pings, and reports events to the [`Recorder`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_protocol::engineio::{self, Frame};
use switchboard_protocol::socketio::{self, Decoded, PacketData};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::stats::Recorder;

/// Where and how clients connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The servers' addresses (cluster nodes); client `i` connects to `servers[i % len]`.
    pub servers: Vec<SocketAddr>,
    /// Local addresses client sockets bind to, used round-robin.
    pub sources: Vec<IpAddr>,
    /// Budget for TCP connect + websocket handshake + CONNECT + `authenticated`.
    pub connect_timeout: Duration,
}

/// What a client task is asked to do.
#[derive(Debug)]
enum Out {
    /// Send one text frame.
    Text(String),
    /// Leave the namespace (`41`), close the websocket and end the task.
    Close,
}

/// Ack waiters of one connection.
type Pending = Mutex<HashMap<u64, oneshot::Sender<Vec<Value>>>>;

/// A connected, authenticated client. Dropping it closes the connection.
#[derive(Debug)]
pub struct Conn {
    /// Frames to the client task.
    out: mpsc::UnboundedSender<Out>,
    /// Next ack id.
    next_ack: AtomicU64,
    /// Ack waiters by id, shared with the task.
    pending: Arc<Pending>,
    /// Set once the close is ours, so the task does not count it as an error.
    closing: Arc<AtomicBool>,
    /// Becomes `true` when the client task ends (the connection is gone).
    ended: watch::Receiver<bool>,
}

impl Conn {
    /// Emit `name` with one argument, without an ack.
    pub fn emit(&self, name: &str, arg: Value) {
        let packet = socketio::Packet::event("/", name, vec![arg]);
        self.send_packet(&packet);
    }

    /// Emit `name` with one argument and an ack id; the receiver gets the ack's arguments.
    pub fn emit_with_ack(&self, name: &str, arg: Value) -> oneshot::Receiver<Vec<Value>> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let packet = socketio::Packet::new(
            "/",
            PacketData::Event {
                data: vec![Value::String(name.to_owned()), arg],
                id: Some(id),
                attachments: Vec::new(),
            },
        );
        self.send_packet(&packet);
        rx
    }

    /// Queue the text frames of a packet (this codec never produces attachments here).
    fn send_packet(&self, packet: &socketio::Packet) {
        for frame in packet.to_frames() {
            if let Frame::Text(text) = frame {
                // A closed task already counted its own ending.
                let _ = self.out.send(Out::Text(text));
            }
        }
    }

    /// Wait until the connection is gone (closed by either side or failed).
    pub async fn closed(&mut self) {
        // An error means the task is gone without saying so: closed as well.
        let _ = self.ended.wait_for(|ended| *ended).await;
    }

    /// Leave the namespace and close the websocket.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        let _ = self.out.send(Out::Close);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

/// The websocket type used by the clients.
type Ws = WebSocketStream<TcpStream>;

/// Connect client `member` from `source` to `server`, authenticate with `token`, and start its
/// task.
pub async fn connect(
    target: &Target,
    server: SocketAddr,
    source: IpAddr,
    token: &str,
    member: u64,
    recorder: Arc<Recorder>,
) -> Result<Conn, String> {
    let ws = tokio::time::timeout(target.connect_timeout, handshake(server, source, token))
        .await
        .map_err(|_| format!("connect from {source} to {server}: timed out"))??;
    let (tx, rx) = mpsc::unbounded_channel();
    let pending: Arc<Pending> = Arc::new(Mutex::new(HashMap::new()));
    let closing = Arc::new(AtomicBool::new(false));
    let (ended_tx, ended) = watch::channel(false);
    recorder.connected();
    let task = run(ws, rx, pending.clone(), closing.clone(), member, recorder);
    tokio::spawn(async move {
        task.await;
        let _ = ended_tx.send(true);
    });
    Ok(Conn {
        out: tx,
        next_ack: AtomicU64::new(0),
        pending,
        closing,
        ended,
    })
}

/// TCP connect from `source`, websocket upgrade, Engine.IO open, Socket.IO CONNECT with
/// `{token}`, then wait for `authenticated`.
async fn handshake(server: SocketAddr, source: IpAddr, token: &str) -> Result<Ws, String> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect from {source} to {server}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let url = format!(
        "ws://{server}/socket.io/?EIO={}&transport=websocket",
        engineio::PROTOCOL
    );
    // tungstenite allocates a 128 KiB read buffer per socket by default (~130 KiB of RSS per
    // client); the frames here are small, and the buffer grows when one is not.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("websocket handshake: {e}"))?;

    match next_packet(&mut ws).await? {
        engineio::Packet::Open(json) => {
            serde_json::from_str::<engineio::Handshake>(&json)
                .map_err(|e| format!("open packet: {e}"))?;
        }
        other => return Err(format!("expected the open packet, got {other:?}")),
    }
    let connect = socketio::Packet::new("/", PacketData::Connect(Some(json!({ "token": token }))));
    send_packet(&mut ws, &connect).await?;
    let mut joined = false;
    loop {
        match next_packet(&mut ws).await? {
            engineio::Packet::Ping(data) => send_text(&mut ws, pong(data)).await?,
            engineio::Packet::Message(text) => match decode(&text)? {
                PacketData::Connect(_) => joined = true,
                PacketData::ConnectError(err) => return Err(format!("connect refused: {err}")),
                data @ PacketData::Event { .. } => {
                    if joined && data.event_name() == Some("authenticated") {
                        return Ok(ws);
                    }
                }
                other => return Err(format!("unexpected packet during connect: {other:?}")),
            },
            engineio::Packet::Close => return Err("server closed during connect".to_owned()),
            _ => {}
        }
    }
}

/// The pong answering a ping.
fn pong(data: String) -> String {
    match engineio::Packet::Pong(data).encode() {
        Frame::Text(t) => t,
        Frame::Binary(_) => "3".to_owned(),
    }
}

/// Decode a Socket.IO packet carried in an Engine.IO message.
fn decode(text: &str) -> Result<PacketData, String> {
    match socketio::Packet::decode(text, &socketio::Limits::default()) {
        Ok(Decoded::Complete(packet)) => Ok(packet.data),
        Ok(Decoded::Partial(_)) => Err("unexpected binary packet".to_owned()),
        Err(e) => Err(format!("bad Socket.IO packet {text:?}: {e}")),
    }
}

/// Send one Socket.IO packet on the websocket.
async fn send_packet(ws: &mut Ws, packet: &socketio::Packet) -> Result<(), String> {
    for frame in packet.to_frames() {
        if let Frame::Text(text) = frame {
            send_text(ws, text).await?;
        }
    }
    Ok(())
}

/// Send one text frame.
async fn send_text(ws: &mut Ws, text: String) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("websocket send: {e}"))
}

/// The next Engine.IO packet (websocket ping/pong frames skipped).
async fn next_packet(ws: &mut Ws) -> Result<engineio::Packet, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return engineio::Packet::decode_text(t.as_str())
                    .map_err(|e| format!("bad Engine.IO packet: {e}"));
            }
            Some(Ok(Message::Binary(_))) => return Err("unexpected binary frame".to_owned()),
            Some(Ok(Message::Close(frame))) => return Err(format!("websocket closed: {frame:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("websocket: {e}")),
            None => return Err("websocket ended".to_owned()),
        }
    }
}

/// The client task: writes queued frames, reads and dispatches server packets.
async fn run(
    mut ws: Ws,
    mut rx: mpsc::UnboundedReceiver<Out>,
    pending: Arc<Pending>,
    closing: Arc<AtomicBool>,
    member: u64,
    recorder: Arc<Recorder>,
) {
    let ended: Result<(), String> = async {
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Out::Text(text)) => send_text(&mut ws, text).await?,
                    Some(Out::Close) | None => {
                        closing.store(true, Ordering::Relaxed);
                        let leave = socketio::Packet::disconnect("/");
                        // The server may already be gone; the close is best effort.
                        let _ = send_packet(&mut ws, &leave).await;
                        let _ = ws.close(None).await;
                        return Ok(());
                    }
                },
                packet = next_packet(&mut ws) => match packet? {
                    engineio::Packet::Ping(data) => send_text(&mut ws, pong(data)).await?,
                    engineio::Packet::Message(text) => match decode(&text)? {
                        PacketData::Event { data, .. } => {
                            if let Some(name) = data.first().and_then(Value::as_str) {
                                recorder.on_event(member, name, &data[1..]);
                            }
                        }
                        PacketData::Ack { data, id, .. } => {
                            let waiter = pending
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&id);
                            match waiter {
                                Some(tx) => {
                                    let _ = tx.send(data);
                                }
                                None => recorder.error(format!("ack {id} nobody waits for")),
                            }
                        }
                        PacketData::Disconnect => return Err("server disconnected the socket".to_owned()),
                        other => recorder.error(format!("unexpected packet {other:?}")),
                    },
                    engineio::Packet::Close => return Err("server closed the session".to_owned()),
                    _ => {}
                },
            }
        }
    }
    .await;
    recorder.disconnected();
    if let Err(e) = ended
        && !closing.load(Ordering::Relaxed)
    {
        if recorder.drops_expected {
            // The scenario kills servers on purpose and reconnects: a drop, not an error.
            recorder.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            recorder.error(format!("client {member}: {e}"));
        }
    }
}
