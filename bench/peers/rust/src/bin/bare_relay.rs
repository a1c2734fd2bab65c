//! `bare-relay`: the cost floor for the benchmarks. tokio + tokio-tungstenite and a hand-written
//! minimal Engine.IO v4 / Socket.IO v5 over websocket (no polling, no binary, namespace `/`
//! only), with the semantics of `bench/peers/node/server.js`: HS256 JWT at CONNECT, then
//! `authenticated`; `signal` relayed to every socket of the recipient; `room:emit` fanned out
//! as `room:msg` to a room the sender is in; `message:send` acked with an in-memory id and
//! delivered as `message:received`. Each outgoing frame is built once and shared by all its
//! recipients; each connection has one task and an unbounded queue of frames.
//!
//! Usage: `[PORT=0] JWT_SECRET=s bare-relay`; once listening it prints one JSON line
//! `{"message":"listening","addr":"127.0.0.1:<port>"}`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

const PING_INTERVAL: Duration = Duration::from_millis(25_000);
const PING_TIMEOUT: Duration = Duration::from_millis(20_000);
/// socket.io's default `connectTimeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(45_000);
const MAX_PAYLOAD: usize = 1_000_000;
/// Lock shards of the user and room maps.
const SHARDS: usize = 64;

type Tx = mpsc::UnboundedSender<Utf8Bytes>;
/// One lock shard: name → (connection id, its queue) of every connection under that name.
type Shard = HashMap<Arc<str>, Vec<(u64, Tx)>>;

/// Name → senders of the connections registered under it, split over [`SHARDS`] locks.
struct Registry {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Registry {
    fn new() -> Self {
        Registry {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, key: &Arc<str>, conn: u64, tx: &Tx) {
        self.shard(key)
            .entry(key.clone())
            .or_default()
            .push((conn, tx.clone()));
    }

    fn remove(&self, key: &str, conn: u64) {
        let mut shard = self.shard(key);
        if let Some(list) = shard.get_mut(key) {
            list.retain(|(c, _)| *c != conn);
            if list.is_empty() {
                shard.remove(key);
            }
        }
    }

    /// Queue `frame` to every connection under `key` (a refcount bump each, no copy).
    fn send(&self, key: &str, frame: &Utf8Bytes) {
        if let Some(list) = self.shard(key).get(key) {
            for (_, tx) in list {
                // A connection that is closing no longer reads its queue.
                let _ = tx.send(frame.clone());
            }
        }
    }
}

struct Hub {
    users: Registry,
    rooms: Registry,
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
    next_conn: AtomicU64,
    next_message: AtomicU64,
    /// Makes sids of different runs differ.
    sid_prefix: String,
    instance: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    rooms: Vec<Value>,
}

#[derive(Deserialize)]
struct Auth<'a> {
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct SignalIn<'a> {
    #[serde(borrow)]
    to: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RoomIn<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(borrow)]
    to: Cow<'a, str>,
    #[serde(borrow)]
    text: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageOut<'a> {
    message_id: u64,
    from: &'a str,
    to: &'a str,
    text: &'a str,
    created_at: u64,
}

/// The Socket.IO side of a connection once CONNECT succeeded.
struct Joined {
    user: Arc<str>,
    /// `user` as a JSON string, spliced into outgoing frames.
    user_json: String,
    rooms: Vec<Arc<str>>,
}

/// One connection's state.
struct Session<'h> {
    hub: &'h Hub,
    conn: u64,
    sid: String,
    tx: Tx,
    query_token: Option<String>,
    joined: Option<Joined>,
}

/// What the connection loop does after a frame.
enum Next {
    Continue,
    Close,
}

impl Session<'_> {
    fn queue(&self, frame: String) {
        let _ = self.tx.send(Utf8Bytes::from(frame));
    }

    /// One Engine.IO packet from the client.
    fn on_text(&mut self, text: &str) -> Next {
        match text.as_bytes().first() {
            Some(b'4') => self.on_socketio(&text[1..]),
            Some(b'1') => Next::Close,
            // Pongs are handled by the caller; a client ping (EIO3 habit) gets its pong.
            Some(b'2') => {
                self.queue(format!("3{}", &text[1..]));
                Next::Continue
            }
            Some(_) => Next::Continue,
            None => Next::Close,
        }
    }

    /// One Socket.IO packet: `<type>[/ns,][ackid][json]`.
    fn on_socketio(&mut self, packet: &str) -> Next {
        let Some(&kind) = packet.as_bytes().first() else {
            return Next::Close;
        };
        let mut rest = &packet[1..];
        if rest.starts_with('/') {
            let (ns, after) = rest.split_once(',').unwrap_or((rest, ""));
            if ns != "/" {
                if kind == b'0' {
                    self.queue(format!(r#"44{ns},{{"message":"Invalid namespace"}}"#));
                }
                return Next::Continue;
            }
            rest = after;
        }
        match kind {
            b'0' => {
                self.on_connect(rest);
                Next::Continue
            }
            b'1' => Next::Close,
            b'2' => {
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                let ack = rest[..digits].parse::<u64>().ok();
                self.on_event(ack, &rest[digits..])
            }
            _ => Next::Continue,
        }
    }

    fn on_connect(&mut self, payload: &str) {
        if self.joined.is_some() {
            return;
        }
        let token = serde_json::from_str::<Auth>(payload)
            .ok()
            .and_then(|a| a.token)
            .map(Cow::into_owned)
            .or_else(|| self.query_token.clone());
        let Some(claims) = token.and_then(|t| self.verify(&t)) else {
            self.queue(r#"44{"message":"auth_failed","data":{"reason":"invalid_token"}}"#.into());
            return;
        };
        let hub = self.hub;
        let user: Arc<str> = claims.sub.into();
        let rooms: Vec<Arc<str>> = claims
            .rooms
            .into_iter()
            .filter_map(|r| match r {
                Value::String(r) => Some(r.into()),
                _ => None,
            })
            .collect();
        hub.users.add(&user, self.conn, &self.tx);
        for room in &rooms {
            hub.rooms.add(room, self.conn, &self.tx);
        }
        let user_json = json_str(&user);
        let socket_id = format!("{}s", self.sid);
        self.queue(format!(r#"40{{"sid":"{socket_id}"}}"#));
        self.queue(format!(
            r#"42["authenticated",{{"socketId":"{socket_id}","userId":{user_json},"deviceId":"{socket_id}","serverInstance":"{}"}}]"#,
            hub.instance
        ));
        self.joined = Some(Joined {
            user,
            user_json,
            rooms,
        });
    }

    fn verify(&self, token: &str) -> Option<Claims> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.hub.key, &self.hub.validation)
            .ok()?
            .claims;
        (!claims.sub.is_empty()).then_some(claims)
    }

    /// `[name, arg, …]` with an optional ack id.
    fn on_event(&mut self, ack: Option<u64>, json: &str) -> Next {
        let Some(joined) = &self.joined else {
            return Next::Continue;
        };
        let Ok(args) = serde_json::from_str::<Vec<&RawValue>>(json) else {
            return Next::Close; // socket.io closes on a packet it cannot parse
        };
        let Some(Ok(name)) = args
            .first()
            .map(|n| serde_json::from_str::<Cow<str>>(n.get()))
        else {
            return Next::Close;
        };
        let arg = args.get(1).map_or("null", |a| a.get());
        let hub = self.hub;
        match &*name {
            "signal" => {
                let Ok(p) = serde_json::from_str::<SignalIn>(arg) else {
                    return Next::Continue;
                };
                let frame = format!(
                    r#"42["signal",{{"from":{},"data":{}}}]"#,
                    joined.user_json,
                    p.data.map_or("null", RawValue::get)
                );
                hub.users.send(&p.to, &Utf8Bytes::from(frame));
            }
            "room:emit" => {
                let Ok(p) = serde_json::from_str::<RoomIn>(arg) else {
                    return Next::Continue;
                };
                if !joined.rooms.iter().any(|r| **r == *p.room) {
                    return Next::Continue;
                }
                let frame = format!(
                    r#"42["room:msg",{{"room":{},"from":{},"data":{}}}]"#,
                    json_str(&p.room),
                    joined.user_json,
                    p.data.map_or("null", RawValue::get)
                );
                hub.rooms.send(&p.room, &Utf8Bytes::from(frame));
            }
            "message:send" => {
                let Ok(p) = serde_json::from_str::<MessageIn>(arg) else {
                    return Next::Continue;
                };
                let message_id = hub.next_message.fetch_add(1, Ordering::Relaxed) + 1;
                let created_at = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                if let Some(id) = ack {
                    self.queue(format!(
                        r#"43{id}[{{"ok":true,"messageId":{message_id},"createdAt":{created_at}}}]"#
                    ));
                }
                let out = MessageOut {
                    message_id,
                    from: &joined.user,
                    to: &p.to,
                    text: &p.text,
                    created_at,
                };
                if let Ok(body) = serde_json::to_string(&out) {
                    let frame = format!(r#"42["message:received",{body}]"#);
                    hub.users.send(&p.to, &Utf8Bytes::from(frame));
                }
                return Next::Continue;
            }
            _ => return Next::Continue,
        }
        if let Some(id) = ack {
            self.queue(format!(r#"43{id}[{{"ok":true}}]"#));
        }
        Next::Continue
    }

    fn leave(&mut self) {
        if let Some(joined) = self.joined.take() {
            self.hub.users.remove(&joined.user, self.conn);
            for room in &joined.rooms {
                self.hub.rooms.remove(room, self.conn);
            }
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Accept only `/socket.io/?EIO=4&transport=websocket…`; keep a `token` query parameter.
fn check_request(req: &Request, token: &mut Option<String>) -> Result<(), &'static str> {
    if !req.uri().path().starts_with("/socket.io/") {
        return Err("unknown path");
    }
    let (mut eio, mut ws) = (false, false);
    for kv in req.uri().query().unwrap_or("").split('&') {
        match kv.split_once('=') {
            Some(("EIO", "4")) => eio = true,
            Some(("transport", "websocket")) => ws = true,
            Some(("token", t)) => *token = Some(t.to_owned()),
            _ => {}
        }
    }
    if !eio {
        return Err("unsupported protocol version");
    }
    if !ws {
        return Err("websocket transport only");
    }
    Ok(())
}

async fn connection(hub: Arc<Hub>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut query_token = None;
    // tungstenite's callback signature fixes the large error type.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        check_request(req, &mut query_token)
            .map(|()| resp)
            .map_err(|why| {
                let mut err = ErrorResponse::new(Some(why.to_owned()));
                *err.status_mut() = StatusCode::BAD_REQUEST;
                err
            })
    };
    // tungstenite allocates the read buffer eagerly (128 KiB by default): the bench's frames
    // are small, so 4 KiB per connection is plenty.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(MAX_PAYLOAD))
        .max_frame_size(Some(MAX_PAYLOAD));
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let conn = hub.next_conn.fetch_add(1, Ordering::Relaxed);
    let sid = format!("{}{conn:x}", hub.sid_prefix);
    let open = format!(
        r#"0{{"sid":"{sid}","upgrades":[],"pingInterval":{},"pingTimeout":{},"maxPayload":{MAX_PAYLOAD}}}"#,
        PING_INTERVAL.as_millis(),
        PING_TIMEOUT.as_millis()
    );
    if ws.send(Message::text(open)).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Utf8Bytes>();
    let mut session = Session {
        hub: &hub,
        conn,
        sid,
        tx,
        query_token,
        joined: None,
    };
    let connect_by = Instant::now() + CONNECT_TIMEOUT;
    // One timer: the next ping while idle, the pong deadline while a ping is out.
    let timer = tokio::time::sleep(PING_INTERVAL);
    tokio::pin!(timer);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                // Batch whatever else is queued into one flush.
                if ws.feed(Message::Text(frame)).await.is_err() {
                    break;
                }
                let mut failed = false;
                while let Ok(frame) = rx.try_recv() {
                    if ws.feed(Message::Text(frame)).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || ws.flush().await.is_err() {
                    break;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if text.as_str().starts_with('3') {
                        awaiting_pong = false;
                        timer.as_mut().reset(Instant::now() + PING_INTERVAL);
                    } else if let Next::Close = session.on_text(text.as_str()) {
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) | Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            () = &mut timer => {
                if awaiting_pong || (session.joined.is_none() && Instant::now() >= connect_by) {
                    break;
                }
                if ws.send(Message::text("2")).await.is_err() {
                    break;
                }
                awaiting_pong = true;
                timer.as_mut().reset(Instant::now() + PING_TIMEOUT);
            }
        }
    }
    session.leave();
    let _ = ws.close(None).await;
}

fn main() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("bare-relay: could not raise the open files limit: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bare-relay: tokio runtime: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = runtime.block_on(serve()) {
        eprintln!("bare-relay: {e}");
        std::process::exit(1);
    }
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .filter(|p| !p.is_empty())
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(0);
    let secret = std::env::var("JWT_SECRET").unwrap_or_else(|_| "bench-secret".to_owned());
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 30;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let hub = Arc::new(Hub {
        users: Registry::new(),
        rooms: Registry::new(),
        key: jsonwebtoken::DecodingKey::from_secret(secret.as_bytes())?,
        validation,
        next_conn: AtomicU64::new(0),
        next_message: AtomicU64::new(0),
        sid_prefix: format!("{:x}-", started & 0xff_ffff_ffff),
        instance: format!("bare-{}", addr.port()),
    });
    println!(r#"{{"message":"listening","addr":"{addr}"}}"#);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(hub.clone(), stream));
            }
            // Out of file descriptors or similar: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
