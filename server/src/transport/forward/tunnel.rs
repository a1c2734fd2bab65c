//! A websocket upgrade for another node's session: the handshake is sent on to the owner over
//! a new TCP connection and its answer relayed to the client byte for byte; after a `101` the two
//! connections are bridged until either ends. Frames are not decoded here: the owner sees the
//! client's own handshake (key, extensions) and frames, and the client sees the owner's.

use std::io;
use std::time::Duration;

use actix_codec::Framed;
use actix_http::{RequestHead, h1};
use actix_rt::net::TcpStream;
use bytes::{Buf, BytesMut};
use switchboard_actors::directory::Peer;
use switchboard_actors::metrics::metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{CONNECT_TIMEOUT, Forwarder, MARKER, Refusal, count, forwarded_for};
use crate::AppState;

/// Longest response head accepted from the owner.
const MAX_HEAD: usize = 16 * 1024;
/// Longest non-101 response body relayed (the owner's error answers are a few bytes).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Once one side of a bridge has ended, how long the other may take to finish.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

type Client = Framed<TcpStream, h1::Codec>;

/// Forward the websocket handshake `head` (read from `client`) to `peer`. Until the owner has
/// answered, a failure hands `client` back with the reason, for the caller to answer; after
/// that the owner's answer is the client's, and a `101` starts the bridge.
pub async fn tunnel(
    client: Client,
    head: &RequestHead,
    state: &AppState,
    peer: Peer,
) -> Result<(), (Client, Refusal)> {
    // `route` answers Remote only when forwarding is on.
    let Some(forwarder) = &state.forward else {
        return Err((client, Refusal::OwnerUnknown));
    };
    let answer = tokio::time::timeout(forwarder.timeout, handshake(forwarder, head, &peer))
        .await
        .unwrap_or(Err(Refusal::Timeout));
    let (upstream, response, status) = match answer {
        Ok(answer) => answer,
        Err(why) => {
            count("websocket", Err(why));
            tracing::debug!(owner = %peer.node, outcome = why.outcome(), "forwarded websocket failed");
            return Err((client, why));
        }
    };
    count("websocket", Ok(()));
    crate::logging::websocket_access(head, status);
    let parts = client.into_parts();
    let (client, early) = (parts.io, parts.read_buf);
    actix_rt::spawn(async move {
        if status == 101 {
            bridge(client, early, upstream, response).await;
        } else {
            relay_error(client, upstream, response).await;
        }
    });
    Ok(())
}

/// Connect, send the handshake, read the owner's head. Answers the connection, what was read
/// (the head and any bytes after it) and the status.
async fn handshake(
    forwarder: &Forwarder,
    head: &RequestHead,
    peer: &Peer,
) -> Result<(TcpStream, BytesMut, u16), Refusal> {
    let connect = TcpStream::connect((peer.addr.host.as_str(), peer.addr.port));
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => return Err(Refusal::OwnerUnreachable),
        Err(_) => return Err(Refusal::Timeout),
    };
    let _ = upstream.set_nodelay(true);
    let request = request_head(head, forwarder);
    upstream
        .write_all(&request)
        .await
        .map_err(|_| Refusal::OwnerUnreachable)?;
    let mut read = BytesMut::with_capacity(1024);
    loop {
        if read.len() >= MAX_HEAD {
            return Err(Refusal::OwnerUnreachable);
        }
        let n = upstream
            .read_buf(&mut read)
            .await
            .map_err(|_| Refusal::OwnerUnreachable)?;
        if n == 0 {
            return Err(Refusal::OwnerUnreachable);
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&read) {
            Ok(httparse::Status::Complete(_)) => {
                let status = response.code.unwrap_or(502);
                return Ok((upstream, read, status));
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err(Refusal::OwnerUnreachable),
        }
    }
}

/// The client's handshake as the owner gets it: every header but a client's own marker and
/// `X-Forwarded-For`, which are replaced.
fn request_head(head: &RequestHead, forwarder: &Forwarder) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        head.uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in head.headers().iter() {
        if matches!(name.as_str(), "x-forwarded-for" | "content-length" | MARKER) {
            continue;
        }
        header(&mut out, name.as_str(), value.as_bytes());
    }
    if let Some(xff) = forwarded_for(head.headers(), head.peer_addr) {
        header(&mut out, "x-forwarded-for", xff.as_bytes());
    }
    header(&mut out, MARKER, forwarder.node_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Relay the owner's `101` (and anything behind it) and what the client sent behind its
/// handshake (`early`), then bytes both ways until one side ends; the other then gets
/// [`CLOSE_LINGER`] to finish.
async fn bridge(
    client: TcpStream,
    mut early: BytesMut,
    upstream: TcpStream,
    mut response: BytesMut,
) {
    let gauge = &metrics().forward_tunnels_active;
    gauge.inc();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let result: io::Result<()> = async {
        while response.has_remaining() {
            client_write.write_all_buf(&mut response).await?;
        }
        while early.has_remaining() {
            upstream_write.write_all_buf(&mut early).await?;
        }
        let up = async {
            let copied = tokio::io::copy(&mut client_read, &mut upstream_write).await;
            let _ = upstream_write.shutdown().await;
            copied
        };
        let down = async {
            let copied = tokio::io::copy(&mut upstream_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
            copied
        };
        tokio::pin!(up, down);
        tokio::select! {
            _ = &mut up => { let _ = tokio::time::timeout(CLOSE_LINGER, down).await; }
            _ = &mut down => { let _ = tokio::time::timeout(CLOSE_LINGER, up).await; }
        }
        Ok(())
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(%err, "forwarded websocket ended");
    }
    gauge.dec();
}

/// Relay a refusal from the owner (a `400 Session ID unknown`, a 403…) and close.
async fn relay_error(mut client: TcpStream, mut upstream: TcpStream, mut response: BytesMut) {
    let relay = async {
        let length = {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&response) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let length = parsed
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    length.map(|l| head_len + l.min(MAX_ERROR_BODY))
                }
                _ => None,
            }
        };
        let limit = length.unwrap_or(MAX_HEAD + MAX_ERROR_BODY);
        while response.len() < limit {
            if upstream.read_buf(&mut response).await? == 0 {
                break;
            }
        }
        response.truncate(limit);
        client.write_all(&response).await?;
        client.shutdown().await
    };
    if let Err(err) = tokio::time::timeout(CLOSE_LINGER, relay)
        .await
        .unwrap_or(Err(io::ErrorKind::TimedOut.into()))
    {
        tracing::debug!(%err, "relaying the owner's refusal of a websocket");
    }
}
