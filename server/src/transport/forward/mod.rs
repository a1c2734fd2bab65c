//! Forwarding: any node serves any request. A polling request or websocket upgrade whose sid
//! another node owns is proxied to that node, so a load balancer needs no session affinity.
//!
//! # How a request finds its owner
//! In cluster mode every sid ends in its node's [`NodeTag`] (`<random>.<tag>`), and every node
//! publishes its internal URL in Redis (`node:{id}:addr`). The [`Directory`] keeps tag → URL in
//! memory, so routing a request costs no Redis round trip: [`route`] answers [`Route::Local`]
//! for an untagged sid or one of this node's, [`Route::Remote`] for a known other node.
//!
//! # Bounds
//! - One hop: a forwarded request carries [`MARKER`] (the forwarding node's id); a node never
//!   forwards a request that carries it. A marked request for a sid that is not here is refused
//!   (400, `Session ID unknown`) and counted as `loop`. There is no cluster secret yet to sign
//!   the marker with; it gives nothing but "do not forward", so a forged one only gets its
//!   sender a 400. Load balancers should still strip it from client requests (README).
//! - Time: connecting takes at most [`CONNECT_TIMEOUT`]; the owner's answer may take the
//!   configured forward timeout, plus the ping interval for a long-poll GET.
//! - Size: a POST body is read (up to maxPayload, else 413 and nothing is forwarded) before it
//!   is forwarded.
//! - An owner that is gone (unknown, refusing connections, dying mid-request, too slow) gets
//!   the client the normal `400 {"code":1,"message":"Session ID unknown"}`, so it reconnects.
//!
//! # Layout
//! - this file: the [`Forwarder`], routing, the marker, and this node's advertised URL.
//! - `poll`: polling GET and POST through the node's HTTP client (awc, one per worker).
//! - `tunnel`: the websocket upgrade, relayed byte for byte over a TCP connection to the owner.

mod poll;
mod tunnel;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderMap;
use actix_web::web;
use switchboard_actors::directory::{Directory, Peer, PeerAddr};
use switchboard_actors::metrics::metrics;
use switchboard_actors::{NodeId, NodeTag, Sid};

pub use poll::poll;
pub use tunnel::tunnel;

use crate::AppState;

/// The header that marks a request one node forwarded to another (its value: the forwarding
/// node's id). Honoured only as "never forward this again".
pub const MARKER: &str = "x-switchboard-forwarded";

/// How long connecting to the owner may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the directory re-reads the node addresses (the liveness keys' refresh period).
pub const DIRECTORY_REFRESH: Duration = Duration::from_secs(2);

/// What this node forwards with; present in cluster mode with forwarding on.
pub struct Forwarder {
    node_id: NodeId,
    tag: NodeTag,
    directory: Arc<Directory>,
    /// How long the owner may take beyond what the request itself waits.
    timeout: Duration,
    /// How long a long-poll GET may wait at its owner (the ping interval).
    poll_wait: Duration,
    /// Engine.IO maxPayload: the cap on a forwarded POST body.
    max_payload: usize,
}

impl Forwarder {
    /// A forwarder for `node_id` over `directory`.
    pub fn new(
        node_id: NodeId,
        directory: Arc<Directory>,
        timeout: Duration,
        poll_wait: Duration,
        max_payload: usize,
    ) -> Forwarder {
        Forwarder {
            tag: NodeTag::of(&node_id),
            node_id,
            directory,
            timeout,
            poll_wait,
            max_payload,
        }
    }

    /// The tag this node's sids carry.
    pub fn tag(&self) -> &NodeTag {
        &self.tag
    }
}

/// Where a request with a sid is served.
pub enum Route {
    /// Here: the sid is this node's, or names no node.
    Local,
    /// By its owner, through this node.
    Remote(Peer),
    /// Nowhere: answered with an error at once.
    Refused(Refusal),
}

/// Why a request for another node's session was not served by that node. Mapped to HTTP in
/// `engineio` (`EioError`), like every Engine.IO error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The sid names a node the directory does not know (gone for longer than its TTL).
    OwnerUnknown,
    /// The owner refused the connection or broke it.
    OwnerUnreachable,
    /// The owner did not answer in time.
    Timeout,
    /// The request was already forwarded once.
    Loop,
    /// A POST body over maxPayload (not forwarded).
    TooLarge,
    /// A POST body that did not arrive in time.
    BodyTimeout,
    /// A POST body that could not be read, or a binary one.
    BadBody,
}

impl Refusal {
    /// The `outcome` label of `forward_requests_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            Refusal::OwnerUnknown => "owner_unknown",
            Refusal::OwnerUnreachable => "owner_unreachable",
            Refusal::Timeout => "timeout",
            Refusal::Loop => "loop",
            Refusal::TooLarge => "too_large",
            Refusal::BodyTimeout => "timeout",
            Refusal::BadBody => "bad_body",
        }
    }
}

/// Count one forwarded request's end.
fn count(kind: &'static str, outcome: Result<(), Refusal>) {
    let outcome = match outcome {
        Ok(()) => "ok",
        Err(why) => why.outcome(),
    };
    metrics().forwarded(kind, outcome);
}

/// Where the request of `kind` for `sid` (with `headers`) is served.
pub async fn route(state: &AppState, sid: &str, headers: &HeaderMap, kind: &'static str) -> Route {
    let Some(forwarder) = &state.forward else {
        return Route::Local;
    };
    let Some(tag) = Sid::node_tag(sid) else {
        return Route::Local;
    };
    if tag == forwarder.tag.as_str() {
        return Route::Local;
    }
    if headers.contains_key(MARKER) {
        count(kind, Err(Refusal::Loop));
        return Route::Refused(Refusal::Loop);
    }
    match forwarder.directory.resolve(tag).await {
        Some(peer) => Route::Remote(peer),
        None => {
            count(kind, Err(Refusal::OwnerUnknown));
            Route::Refused(Refusal::OwnerUnknown)
        }
    }
}

/// The `kind` label of a polling request with `method`.
pub fn poll_kind(method: &actix_web::http::Method) -> &'static str {
    if method == actix_web::http::Method::POST {
        "poll_post"
    } else {
        "poll_get"
    }
}

/// [`route`] for a websocket upgrade request, whose query has not been parsed yet.
pub async fn route_upgrade(state: &AppState, head: &actix_http::RequestHead) -> Route {
    if state.forward.is_none() {
        return Route::Local;
    }
    let query = head.uri.query().unwrap_or("");
    let Ok(query) = web::Query::<HashMap<String, String>>::from_query(query) else {
        return Route::Local;
    };
    match query.get("sid") {
        Some(sid) => route(state, sid, head.headers(), "websocket").await,
        None => Route::Local,
    }
}

/// `X-Forwarded-For` for the owner: the incoming one with the client's address appended.
fn forwarded_for(headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<String> {
    let previous = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    match (previous, peer) {
        (Some(previous), Some(peer)) => Some(format!("{previous}, {}", peer.ip())),
        (Some(previous), None) => Some(previous.to_string()),
        (None, Some(peer)) => Some(peer.ip().to_string()),
        (None, None) => None,
    }
}

/// Request headers that describe one connection, not the request: never passed on.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// This node's internal base URL (see `--advertise-url`): the configured one (a URL, or a bare
/// host or IP to which the listener's port is added), else the listen address when it is a
/// specific IP, else what the hostname resolves to (preferring a non-loopback address).
pub fn advertised_url(
    configured: Option<&str>,
    listen: SocketAddr,
    hostname: Option<String>,
) -> Result<String, String> {
    let port = listen.port();
    let url = match configured.map(str::trim).filter(|c| !c.is_empty()) {
        Some(url) if url.contains("://") => url.to_string(),
        Some(host) => match host.parse::<IpAddr>() {
            Ok(ip) => format!("http://{}", SocketAddr::new(ip, port)),
            Err(_) if host.parse::<SocketAddr>().is_ok() || host.contains(':') => {
                format!("http://{host}")
            }
            Err(_) => format!("http://{host}:{port}"),
        },
        None if !listen.ip().is_unspecified() => format!("http://{listen}"),
        None => {
            let host = hostname.ok_or("no hostname to derive it from")?;
            let resolved: Vec<SocketAddr> = (host.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect)
                .unwrap_or_default();
            let reachable = |a: &&SocketAddr| !a.ip().is_loopback();
            match resolved
                .iter()
                .filter(reachable)
                .find(|a| a.is_ipv4())
                .or_else(|| resolved.iter().find(reachable))
                .or_else(|| resolved.iter().find(|a| a.is_ipv4()))
                .or(resolved.first())
            {
                Some(addr) => format!("http://{addr}"),
                None => format!("http://{host}:{port}"),
            }
        }
    };
    match PeerAddr::parse(&url) {
        Some(addr) => Ok(addr.base),
        None => Err(format!(
            "{url:?} is not an http://host:port URL other nodes can reach"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    #[test]
    fn the_advertised_url_follows_the_documented_rule() {
        let any = addr("0.0.0.0:3000");
        assert_eq!(
            advertised_url(Some("http://10.1.2.3:4000/"), any, None),
            Ok("http://10.1.2.3:4000".into())
        );
        assert_eq!(
            advertised_url(Some("10.1.2.3"), any, None),
            Ok("http://10.1.2.3:3000".into())
        );
        assert_eq!(
            advertised_url(Some("fd00::7"), any, None),
            Ok("http://[fd00::7]:3000".into())
        );
        assert_eq!(
            advertised_url(Some("sb-0.sb-headless"), any, None),
            Ok("http://sb-0.sb-headless:3000".into())
        );
        assert_eq!(
            advertised_url(Some("10.1.2.3:4000"), any, None),
            Ok("http://10.1.2.3:4000".into())
        );
        assert!(advertised_url(Some("https://10.1.2.3"), any, None).is_err());
        // A specific listen address is reachable as it is.
        assert_eq!(
            advertised_url(None, addr("127.0.0.1:4567"), None),
            Ok("http://127.0.0.1:4567".into())
        );
        assert_eq!(
            advertised_url(None, addr("[::1]:4567"), None),
            Ok("http://[::1]:4567".into())
        );
        // 0.0.0.0: the hostname's address.
        assert_eq!(
            advertised_url(None, any, Some("localhost".into())),
            Ok("http://127.0.0.1:3000".into()),
            "IPv4 first"
        );
        assert!(advertised_url(None, any, None).is_err());
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let mut headers = HeaderMap::new();
        let peer = Some(addr("192.0.2.1:5555"));
        assert_eq!(forwarded_for(&headers, peer).as_deref(), Some("192.0.2.1"));
        headers.insert(
            actix_web::http::header::HeaderName::from_static("x-forwarded-for"),
            actix_web::http::header::HeaderValue::from_static("203.0.113.9"),
        );
        assert_eq!(
            forwarded_for(&headers, peer).as_deref(),
            Some("203.0.113.9, 192.0.2.1")
        );
    }
}
