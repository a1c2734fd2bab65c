//! The admin page's live feed on `/admin/live`: one [`Viewer`] (an actix-web-actors
//! `WebsocketContext` actor) per open page, which pushes the overview every [`PUSH_EVERY`].
//!
//! The first text message must be `{"key": "<api key>"}` (never the URL: it would land in access
//! logs); it is checked like an `/api/v1` bearer key, wrong keys counting towards the same
//! per-address 429 rule. Until then nothing is pushed, and after [`LOGIN_WITHIN`] the socket is
//! closed.
//!
//! The node's listeners hand websocket upgrades to an upgrade hook, not to the App, so
//! [`serve`] answers the handshake on the raw stream and bridges it to the actor's input and
//! output streams. A viewer that stops reading stalls only its own actor (actix-web issue 2441):
//! its timers stop with it, nothing queues up, and a write that cannot finish within
//! [`WRITE_TIMEOUT`] ends the connection.

use std::net::IpAddr;
use std::time::Duration;

use actix::prelude::*;
use actix_codec::Framed;
use actix_http::error::PayloadError;
use actix_http::h1;
use actix_http::ws::{self as http_ws, CloseCode, CloseReason};
use actix_http::{ConnectionType, Request, Response, body::BodySize};
use actix_rt::net::TcpStream;
use actix_web::web;
use actix_web_actors::ws;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt, stream};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stats::{GetOverview, Stats};
use crate::AppState;
use crate::api;

/// How often an authenticated viewer gets the overview.
pub const PUSH_EVERY: Duration = Duration::from_secs(1);

/// How long a new socket has to send its key.
pub const LOGIN_WITHIN: Duration = Duration::from_secs(10);

/// Longest one write to the viewer may take before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message a viewer may send (the key message is tiny).
const MAX_FRAME: usize = 4 * 1024;

/// The login message.
#[derive(Deserialize)]
struct Login {
    key: String,
}

/// The key a login message carries; `None` (a wrong key) for anything else.
fn presented_key(text: &str) -> Option<String> {
    serde_json::from_str::<Login>(text)
        .ok()
        .map(|login| login.key)
}

/// One open admin page's live feed.
pub struct Viewer {
    state: web::Data<AppState>,
    stats: Addr<Stats>,
    peer: Option<IpAddr>,
    authed: bool,
    /// An overview request is out: the next tick does not send another.
    asking: bool,
}

impl Viewer {
    /// A viewer for a page connected from `peer`.
    pub fn new(state: web::Data<AppState>, stats: Addr<Stats>, peer: Option<IpAddr>) -> Self {
        Viewer {
            state,
            stats,
            peer,
            authed: false,
            asking: false,
        }
    }

    fn login(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        match api::check_key(&self.state, self.peer, presented_key(text).as_deref()) {
            Ok(_) => {
                self.authed = true;
                ctx.text(json!({"type": "ready", "node": self.state.node_id}).to_string());
                self.push(ctx);
                ctx.run_interval(PUSH_EVERY, |act, ctx| act.push(ctx));
            }
            Err(err) => {
                ctx.text(
                    json!({"type": "error", "code": err.code, "message": err.message}).to_string(),
                );
                refuse(ctx, err.code);
            }
        }
    }

    fn push(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.asking {
            return;
        }
        self.asking = true;
        let ask = self.stats.send(GetOverview);
        ctx.spawn(ask.into_actor(self).map(|overview, act, ctx| {
            act.asking = false;
            if let Ok(Some(overview)) = overview {
                ctx.text(overview);
            }
        }));
    }
}

/// Close with a policy-violation code and stop.
fn refuse(ctx: &mut ws::WebsocketContext<Viewer>, why: &str) {
    ctx.close(Some(CloseReason {
        code: CloseCode::Policy,
        description: Some(why.to_string()),
    }));
    ctx.stop();
}

impl Actor for Viewer {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_later(LOGIN_WITHIN, |act, ctx| {
            if !act.authed {
                refuse(ctx, "no key");
            }
        });
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Viewer {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Message::Text(text)) if !self.authed => self.login(&text, ctx),
            Ok(ws::Message::Ping(bytes)) => ctx.pong(&bytes),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            // Nothing else is asked of an authenticated viewer.
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}

/// Answer a websocket handshake for `/admin/live` on the raw stream and run a [`Viewer`] on it.
pub async fn serve(
    req: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
    state: web::Data<AppState>,
    stats: Addr<Stats>,
) -> Result<(), actix_web::Error> {
    let head = req.head();
    if let Err(err) = http_ws::verify_handshake(head) {
        crate::logging::websocket_access(head, 400);
        let (res, body) = Response::from(err).into_parts();
        return refuse_handshake(framed, res, body).await;
    }
    crate::logging::websocket_access(head, 101);
    let (res, _) = http_ws::handshake_response(head).finish().into_parts();
    framed
        .send(h1::Message::Item((res, BodySize::None)))
        .await?;
    let peer = req.peer_addr().map(|addr| addr.ip());
    let parts = framed.into_parts();
    actix_rt::spawn(bridge(
        parts.io,
        parts.read_buf,
        Viewer::new(state, stats, peer),
    ));
    Ok(())
}

/// Write a refusal on the raw stream and close it.
async fn refuse_handshake(
    mut framed: Framed<TcpStream, h1::Codec>,
    mut res: Response<()>,
    body: actix_http::body::BoxBody,
) -> Result<(), actix_web::Error> {
    let body = actix_web::body::to_bytes(body).await.unwrap_or_default();
    res.head_mut().set_connection_type(ConnectionType::Close);
    framed
        .send(h1::Message::Item((res, BodySize::Sized(body.len() as u64))))
        .await?;
    framed.send(h1::Message::Chunk(Some(body))).await?;
    framed.send(h1::Message::Chunk(None)).await?;
    Ok(())
}

/// Feed the socket's bytes to the viewer's `WebsocketContext` and write what it encodes, until
/// either side ends.
async fn bridge(io: TcpStream, already_read: BytesMut, viewer: Viewer) {
    let (read, mut write) = io.into_split();
    let first = (!already_read.is_empty()).then(|| Ok(already_read.freeze()));
    let rest = stream::unfold(Some(read), |read| async move {
        let mut read = read?;
        let mut buf = BytesMut::with_capacity(MAX_FRAME);
        match read.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(read))),
            Err(err) => Some((Err(PayloadError::Io(err)), None)),
        }
    });
    let input = stream::iter(first).chain(rest);
    let codec = http_ws::Codec::new().max_size(MAX_FRAME);
    let output = ws::WebsocketContext::with_codec(viewer, input, codec);
    let mut output = std::pin::pin!(output);
    while let Some(chunk) = output.next().await {
        let Ok(chunk): Result<Bytes, _> = chunk else {
            break;
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_login_message_presents_a_key() {
        assert_eq!(presented_key(r#"{"key":"k1"}"#).as_deref(), Some("k1"));
        assert_eq!(presented_key("k1"), None, "a bare key is not a login");
        assert_eq!(presented_key(r#"{"token":"k1"}"#), None);
        assert_eq!(presented_key(r#"{"key":1}"#), None);
    }
}
