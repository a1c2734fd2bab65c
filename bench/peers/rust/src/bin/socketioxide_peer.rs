//! `socketioxide-peer`: the benchmark peer on socketioxide + axum, with the same events and
//! semantics as `bench/peers/node/server.js`: HS256 JWT at CONNECT (`auth.token` or `?token=`,
//! `sub` = user, `rooms` claim joined at connect), `authenticated` after connect, `signal`
//! relayed volatile to every socket of the recipient, `room:emit` fanned out as `room:msg` to
//! a room the sender is in, `message:send` acked with an increasing in-memory id and delivered
//! as `message:received`. Cluster mode through socketioxide-redis when REDIS_URL is set.
//!
//! Usage: `[PORT=0] JWT_SECRET=s [REDIS_URL=redis://…] socketioxide-peer`; once listening it
//! prints one JSON line `{"message":"listening","addr":"127.0.0.1:<port>"}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide_redis::drivers::redis::redis_client as redis;
use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};

/// Shared by every handler through socketioxide's state.
struct Peer {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
    /// Last `messageId` handed out (per process, like the Node peer).
    next_id: AtomicU64,
    /// `serverInstance` in `authenticated`.
    instance: String,
}

/// Who a socket is, stored in its extensions by the auth middleware.
#[derive(Clone)]
struct Identity {
    user: Arc<str>,
    rooms: Arc<[String]>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    rooms: Vec<Value>,
}

#[derive(Deserialize)]
struct Auth {
    token: Option<String>,
}

/// Refusal reason sent in the CONNECT_ERROR packet.
#[derive(Debug)]
struct AuthFailed;

impl std::fmt::Display for AuthFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("auth_failed")
    }
}

#[derive(Deserialize)]
struct SignalIn {
    to: String,
    #[serde(default)]
    data: Value,
}

#[derive(Serialize)]
struct SignalOut<'a> {
    from: &'a str,
    data: &'a Value,
}

#[derive(Deserialize)]
struct RoomIn {
    room: String,
    #[serde(default)]
    data: Value,
}

#[derive(Serialize)]
struct RoomOut<'a> {
    room: &'a str,
    from: &'a str,
    data: &'a Value,
}

#[derive(Deserialize)]
struct MessageIn {
    to: String,
    text: String,
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Authenticated<'a> {
    socket_id: String,
    user_id: &'a str,
    device_id: String,
    server_instance: &'a str,
}

/// The acknowledgement of `signal` and `room:emit` when the client asks for one.
#[derive(Serialize)]
struct Ok {
    ok: bool,
}

/// The `?token=` query parameter of the handshake request, if any.
fn query_token<A: Adapter>(s: &SocketRef<A>) -> Option<String> {
    let parts = s.req_parts();
    parts
        .uri
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_owned)
}

/// Connect middleware: verify the token and remember the identity, or refuse the CONNECT.
async fn authenticate<A: Adapter>(
    s: SocketRef<A>,
    TryData(auth): TryData<Auth>,
    State(peer): State<Arc<Peer>>,
) -> Result<(), AuthFailed> {
    let token = auth
        .ok()
        .and_then(|a| a.token)
        .or_else(|| query_token(&s))
        .ok_or(AuthFailed)?;
    let claims = jsonwebtoken::decode::<Claims>(&token, &peer.key, &peer.validation)
        .map_err(|_| AuthFailed)?
        .claims;
    if claims.sub.is_empty() {
        return Err(AuthFailed);
    }
    let rooms: Vec<String> = claims
        .rooms
        .into_iter()
        .filter_map(|r| match r {
            Value::String(r) => Some(r),
            _ => None,
        })
        .collect();
    s.extensions.insert(Identity {
        user: claims.sub.into(),
        rooms: rooms.into(),
    });
    Ok(())
}

async fn on_connect<A: Adapter>(
    s: SocketRef<A>,
    Extension(id): Extension<Identity>,
    State(peer): State<Arc<Peer>>,
) {
    s.join(format!("user:{}", id.user));
    for room in id.rooms.iter() {
        s.join(format!("room:{room}"));
    }
    s.on("signal", on_signal);
    s.on("room:emit", on_room_emit);
    s.on("message:send", on_message_send);
    let sid = s.id.to_string();
    let hello = Authenticated {
        socket_id: sid.clone(),
        user_id: &id.user,
        device_id: sid,
        server_instance: &peer.instance,
    };
    // A socket gone already has nothing to be told.
    let _ = s.emit("authenticated", &hello);
}

async fn on_signal<A: Adapter>(
    io: SocketIo<A>,
    Extension(id): Extension<Identity>,
    Data(p): Data<SignalIn>,
    ack: AckSender<A>,
) {
    let out = SignalOut {
        from: &id.user,
        data: &p.data,
    };
    // Volatile: a recipient that cannot take it now simply misses it, as in the Node peer.
    let _ = io
        .to(format!("user:{}", p.to))
        .volatile()
        .emit("signal", &out)
        .await;
    let _ = ack.send(&Ok { ok: true });
}

async fn on_room_emit<A: Adapter>(
    s: SocketRef<A>,
    io: SocketIo<A>,
    Extension(id): Extension<Identity>,
    Data(p): Data<RoomIn>,
    ack: AckSender<A>,
) {
    let room = format!("room:{}", p.room);
    if !s.rooms().iter().any(|r| *r == room) {
        return;
    }
    let out = RoomOut {
        room: &p.room,
        from: &id.user,
        data: &p.data,
    };
    // io.to (not s.to) so the sender, a member too, gets its own emit like with socket.io.
    let _ = io.to(room).volatile().emit("room:msg", &out).await;
    let _ = ack.send(&Ok { ok: true });
}

async fn on_message_send<A: Adapter>(
    io: SocketIo<A>,
    Extension(id): Extension<Identity>,
    State(peer): State<Arc<Peer>>,
    Data(p): Data<MessageIn>,
    ack: AckSender<A>,
) {
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let message_id = peer.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let _ = ack.send(&serde_json::json!({
        "ok": true, "messageId": message_id, "createdAt": created_at
    }));
    let out = MessageOut {
        message_id,
        from: &id.user,
        to: &p.to,
        text: &p.text,
        created_at,
    };
    let _ = io
        .to(format!("user:{}", p.to))
        .emit("message:received", &out)
        .await;
}

fn main() {
    // socket.io's Node server does not raise it; a Rust server has to do it itself.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("socketioxide-peer: could not raise the open files limit: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("socketioxide-peer: tokio runtime: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = runtime.block_on(serve()) {
        eprintln!("socketioxide-peer: {e}");
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
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;

    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 30;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let peer = Arc::new(Peer {
        key: jsonwebtoken::DecodingKey::from_secret(secret.as_bytes())?,
        validation,
        next_id: AtomicU64::new(0),
        instance: format!("socketioxide-{}", addr.port()),
    });
    // The Node peer's maxHttpBufferSize; ping interval/timeout are socket.io's defaults already.
    let builder = SocketIo::builder().max_payload(1_000_000).with_state(peer);

    let layer = match std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => {
            // The adapter's drivers speak RESP3.
            let url = if url.contains("protocol=") {
                url
            } else if url.contains('?') {
                format!("{url}&protocol=resp3")
            } else {
                format!("{url}?protocol=resp3")
            };
            let client = redis::Client::open(url)?;
            let adapter = RedisAdapterCtr::new_with_redis(&client).await?;
            let (layer, io) = builder
                .with_adapter::<RedisAdapter<_>>(adapter)
                .build_layer();
            io.ns("/", on_connect.with(authenticate)).await?;
            axum::Router::new().layer(layer)
        }
        None => {
            let (layer, io) = builder.build_layer();
            io.ns("/", on_connect.with(authenticate));
            axum::Router::new().layer(layer)
        }
    };

    println!(r#"{{"message":"listening","addr":"{addr}"}}"#);
    // No Nagle delay on small frames, like Node's http server (noDelay) and the other servers.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, layer).await?;
    Ok(())
}
