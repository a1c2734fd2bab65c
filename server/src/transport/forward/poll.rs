//! Polling requests for another node's session: the GET (a long-poll: it may wait at the owner
//! up to the ping interval) and the POST (its body read and capped here first), sent through
//! the worker's HTTP client, whose keep-alive connections to the other nodes are reused.

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use awc::error::SendRequestError;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use switchboard_actors::directory::Peer;

use super::{CONNECT_TIMEOUT, MARKER, Refusal, count, forwarded_for, hop_by_hop};
use crate::AppState;
use crate::transport::engineio::BODY_TIMEOUT;

/// Pooled connections to other nodes are dropped before the other node's own keep-alive
/// timeout (5 s, actix-http's default) can close them under a request.
const POOL_KEEP_ALIVE: Duration = Duration::from_secs(4);

thread_local! {
    /// One client per HTTP worker (awc is single-threaded); no connection limit, since every
    /// waiting long-poll holds one connection.
    static CLIENT: awc::Client = awc::Client::builder()
        .no_default_headers()
        .disable_redirects()
        .disable_timeout()
        .connector(
            awc::Connector::new()
                .limit(0)
                .timeout(CONNECT_TIMEOUT)
                .conn_keep_alive(POOL_KEEP_ALIVE),
        )
        .finish();
}

/// Serve a polling GET or POST for a session `peer` owns, through `peer`.
pub async fn poll(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    peer: Peer,
) -> Result<HttpResponse, Refusal> {
    let post = req.method() == Method::POST;
    let kind = super::poll_kind(req.method());
    let result = forward(req, payload, state, &peer, post).await;
    count(kind, result.as_ref().map(|_| ()).map_err(|why| *why));
    if let Err(why) = result {
        tracing::debug!(owner = %peer.node, kind, outcome = why.outcome(), "forwarded request failed");
    }
    result
}

async fn forward(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    peer: &Peer,
    post: bool,
) -> Result<HttpResponse, Refusal> {
    // unwrap-free: `route` answers Remote only when forwarding is on.
    let Some(forwarder) = &state.forward else {
        return Err(Refusal::OwnerUnknown);
    };
    let (body, timeout) = if post {
        (
            read_body(payload, forwarder.max_payload).await?,
            forwarder.timeout,
        )
    } else {
        (Bytes::new(), forwarder.timeout + forwarder.poll_wait)
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", peer.addr.base);
    // The owner compresses (it gets the client's Accept-Encoding); its bytes and
    // Content-Encoding are relayed as they are.
    let mut request = CLIENT
        .with(|client| client.request(req.method().clone(), url))
        .no_decompress()
        .timeout(timeout);
    for (name, value) in req.headers() {
        if !hop_by_hop(name.as_str())
            && !matches!(
                name.as_str(),
                "host" | "content-length" | "x-forwarded-for" | MARKER
            )
        {
            request = request.append_header((name.clone(), value.clone()));
        }
    }
    if let Some(xff) = forwarded_for(req.headers(), req.peer_addr())
        && let Ok(xff) = HeaderValue::from_str(&xff)
    {
        request = request.insert_header((HeaderName::from_static("x-forwarded-for"), xff));
    }
    if let Ok(me) = HeaderValue::from_str(forwarder.node_id.as_str()) {
        request = request.insert_header((HeaderName::from_static(MARKER), me));
    }
    let response = request.send_body(body).await.map_err(|err| match err {
        SendRequestError::Timeout => Refusal::Timeout,
        _ => Refusal::OwnerUnreachable,
    })?;
    let mut relayed = HttpResponse::build(response.status());
    let mut length = None;
    for (name, value) in response.headers() {
        match name.as_str() {
            "content-length" => length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok()),
            n if hop_by_hop(n) => {}
            _ => {
                relayed.append_header((name.clone(), value.clone()));
            }
        }
    }
    // The body follows the head at once (the owner answers a poll with everything it has).
    Ok(match length {
        Some(length) => relayed.body(SizedStream::new(length, response)),
        None => relayed.streaming(response),
    })
}

/// A POST body, whole, at most `limit` bytes. Binary (octet-stream) bodies go to the owner
/// like any other: it refuses them itself.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, Refusal> {
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| Refusal::BadBody)?;
            if buf.len() + chunk.len() > limit {
                return Err(Refusal::TooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or(Err(Refusal::BodyTimeout))
}
