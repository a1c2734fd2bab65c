//! HTTP side of Engine.IO: query validation, handshakes, long-polling GET/POST and the websocket
//! handshake. Every protocol error is mapped to its HTTP response in [`EioError::response`] only.
//!
//! `EIO=4` is always served; `EIO=3` (Socket.IO 1.x/2.x clients) only with `--allow-eio3`, and
//! anything else is 400 "Unsupported protocol version". A v3 client that cannot take binary asks
//! for base64 with `b64` (on its polling handshake, or on its websocket request); the others
//! get the binary polling framing (`application/octet-stream`) when a GET carries binary.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::{ConnectionType, Request, RequestHead, Response, h1, ws};
use actix_rt::net::TcpStream;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use switchboard_actors::Sid;
use switchboard_actors::app::HandshakeInfo;
use switchboard_actors::ports::registry::{Lookup, Register};
use switchboard_actors::ports::session::{
    PollBody, PollError, PollGet, PollPostBody, SessionPort, ToSession,
};
use switchboard_actors::session::{InitialTransport, Protocol, Session, SessionInit, SessionKind};
use switchboard_protocol::engineio::{ErrorCode, Revision};
use tokio::sync::oneshot;

use super::addresses::Crowded;
use super::deflate::{self, WsDeflate};
use super::forward::{self, Refusal, Route};
use super::ws::{WsFraming, WsOptions, WsTransport};
use crate::AppState;

/// How long a polling POST body may take to arrive (Node: httpRequestBodyTimeout).
pub(super) const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// An Engine.IO request that cannot be served.
#[derive(Debug, Clone, Copy)]
enum EioError {
    /// One of the standard coded errors.
    Coded(ErrorCode),
    /// A polling POST body over maxPayload.
    TooLarge,
    /// A polling POST body that did not arrive in time.
    BodyTimeout,
    /// The session's actor is gone (it stopped between lookup and use).
    Gone,
    /// The node is draining and takes no new sessions.
    Draining,
    /// The client's address is over its handshakes or open sessions.
    Crowded(Crowded),
}

impl EioError {
    /// The one place Engine.IO errors become HTTP responses.
    fn response(self) -> HttpResponse {
        match self {
            EioError::Coded(code) => {
                let status = if code == ErrorCode::Forbidden {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::BAD_REQUEST
                };
                HttpResponse::build(status)
                    .content_type("application/json")
                    .body(code.to_json())
            }
            EioError::TooLarge => HttpResponse::PayloadTooLarge().finish(),
            EioError::BodyTimeout => HttpResponse::RequestTimeout().finish(),
            EioError::Gone => EioError::Coded(ErrorCode::UnknownSid).response(),
            EioError::Crowded(why) => HttpResponse::TooManyRequests()
                .content_type("application/json")
                .body(
                    serde_json::json!({
                        "code": ErrorCode::Forbidden.code(),
                        "message": match why {
                            Crowded::Handshakes => "Too many handshakes from this address",
                            Crowded::Sessions => "Too many sessions from this address",
                        },
                    })
                    .to_string(),
                ),
            EioError::Draining => HttpResponse::ServiceUnavailable()
                .insert_header((header::RETRY_AFTER, "1"))
                .content_type("application/json")
                .body(r#"{"code":503,"message":"Server draining"}"#),
        }
    }
}

impl From<PollError> for EioError {
    fn from(err: PollError) -> Self {
        match err {
            PollError::TooLarge => EioError::TooLarge,
            PollError::Overlap | PollError::WrongTransport | PollError::BadPayload => {
                EioError::Coded(ErrorCode::BadRequest)
            }
        }
    }
}

impl From<Refusal> for EioError {
    fn from(why: Refusal) -> Self {
        match why {
            Refusal::TooLarge => EioError::TooLarge,
            Refusal::BodyTimeout => EioError::BodyTimeout,
            Refusal::BadBody => EioError::Coded(ErrorCode::BadRequest),
            // The owner is gone or out of reach: to the client, its session is.
            Refusal::OwnerUnknown
            | Refusal::OwnerUnreachable
            | Refusal::Timeout
            | Refusal::Loop => EioError::Coded(ErrorCode::UnknownSid),
        }
    }
}

impl From<MailboxError> for EioError {
    fn from(_: MailboxError) -> Self {
        EioError::Gone
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransportName {
    Polling,
    WebSocket,
}

/// A valid Engine.IO request's query.
struct EioQuery {
    /// Every parameter (`sid`, `token`, `b64`, …).
    params: HashMap<String, String>,
    /// The transport it names.
    transport: TransportName,
    /// The Engine.IO revision it names.
    revision: Revision,
}

impl EioQuery {
    /// A v3 client that cannot take binary frames or bodies says `b64` (any non-empty value,
    /// as engine.io reads it).
    fn base64(&self) -> bool {
        self.params.get("b64").is_some_and(|v| !v.is_empty())
    }
}

/// Route `/socket.io/` (or `/engine.io/`) requests for sessions of `kind`. Websocket
/// handshakes do not come here: they are answered by [`upgrade`].
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    kind: SessionKind,
) -> HttpResponse {
    let origin_ok = state.cors.allows(req.headers());
    let mut response = if !origin_ok {
        EioError::Coded(ErrorCode::Forbidden).response()
    } else if req.method() == Method::OPTIONS {
        state.cors.preflight(req.headers())
    } else {
        serve(&req, payload, &state, kind)
            .await
            .unwrap_or_else(EioError::response)
    };
    if origin_ok {
        state.cors.decorate(req.headers(), response.headers_mut());
    }
    response
}

async fn serve(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    kind: SessionKind,
) -> Result<HttpResponse, EioError> {
    let query = parse_query(req.head(), state.allow_eio3)?;
    if query.transport == TransportName::WebSocket {
        // A websocket handshake with its upgrade headers goes to `upgrade`, not here.
        return Err(EioError::Coded(ErrorCode::BadRequest));
    }
    let session = match query.params.get("sid") {
        Some(sid) => {
            match forward::route(state, sid, req.headers(), forward::poll_kind(req.method())).await
            {
                Route::Local => lookup(state, sid).await?,
                Route::Remote(owner) => return Ok(forward::poll(req, payload, state, owner).await?),
                Route::Refused(why) => return Err(why.into()),
            }
        }
        None => {
            let session = open_session(req.head(), &query, state, kind).await?;
            // The session queued its open packet: the first GET carries it.
            return poll_get(req, state, &session, query.revision).await;
        }
    };
    match *req.method() {
        Method::GET => poll_get(req, state, &session, query.revision).await,
        Method::POST => poll_post(req, payload, state, &session, query.revision).await,
        _ => Err(EioError::Coded(ErrorCode::BadRequest)),
    }
}

/// The query of an Engine.IO request, if it is valid: `EIO=4`, or `EIO=3` when `allow_eio3`.
fn parse_query(head: &RequestHead, allow_eio3: bool) -> Result<EioQuery, EioError> {
    let params = web::Query::<HashMap<String, String>>::from_query(head.uri.query().unwrap_or(""))
        .map_err(|_| EioError::Coded(ErrorCode::BadRequest))?
        .into_inner();
    let transport = match params.get("transport").map(String::as_str) {
        Some("polling") => TransportName::Polling,
        Some("websocket") => TransportName::WebSocket,
        _ => return Err(EioError::Coded(ErrorCode::UnknownTransport)),
    };
    let revision = match params.get("EIO").and_then(|v| Revision::from_query(v)) {
        Some(Revision::V3) if !allow_eio3 => None,
        revision => revision,
    }
    .ok_or(EioError::Coded(ErrorCode::UnsupportedProtocolVersion))?;
    Ok(EioQuery {
        params,
        transport,
        revision,
    })
}

/// The running session `sid` names.
async fn lookup(state: &AppState, sid: &str) -> Result<SessionPort, EioError> {
    state
        .registry
        .send(Lookup {
            sid: Sid::from(sid),
        })
        .await?
        .ok_or(EioError::Coded(ErrorCode::UnknownSid))
}

/// Start and register a session for a handshake request (one without a sid).
async fn open_session(
    head: &RequestHead,
    query: &EioQuery,
    state: &AppState,
    kind: SessionKind,
) -> Result<SessionPort, EioError> {
    if head.method != Method::GET {
        return Err(EioError::Coded(ErrorCode::BadHandshakeMethod));
    }
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(EioError::Draining);
    }
    let client = state.proxies.client_of(head);
    let slot = match client.filter(|_| state.addresses.enabled()) {
        Some(ip) => Some(
            state
                .addresses
                .admit(ip, std::time::Instant::now())
                .map_err(EioError::Crowded)?,
        ),
        None => None,
    };
    let sid = state.new_sid();
    let session = Session::start_with(SessionInit {
        sid: sid.clone(),
        config: state.session.clone(),
        registry: state.unregister.clone(),
        kind,
        transport: match query.transport {
            TransportName::Polling => InitialTransport::Polling,
            TransportName::WebSocket => InitialTransport::WebSocket,
        },
        protocol: match query.revision {
            Revision::V4 => Protocol::V4,
            Revision::V3 => Protocol::V3 {
                base64: query.base64(),
            },
        },
        handshake: HandshakeInfo {
            legacy: query.revision == Revision::V3,
            remote_addr: client.map(|ip| ip.to_string()),
            ..handshake_info(head, &query.params)
        },
        slot: slot.map(|slot| Box::new(slot) as Box<dyn Send>),
    });
    state
        .registry
        .send(Register {
            sid,
            port: session.clone(),
        })
        .await?;
    Ok(session)
}

/// What the handshake request says about the client (for auth and logs).
fn handshake_info(head: &RequestHead, query: &HashMap<String, String>) -> HandshakeInfo {
    let header = |name: &str| {
        head.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let bearer = header("authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string())
    });
    HandshakeInfo {
        bearer,
        query_token: query.get("token").cloned(),
        device_id: header("x-device-id"),
        platform: header("x-platform"),
        user_agent: header("user-agent"),
        remote_addr: head.peer_addr.map(|a| a.ip().to_string()),
        origin: header("origin"),
        legacy: false,
    }
}

/// Answer a request that asks for a websocket (any request with `Upgrade: websocket`): the
/// Engine.IO websocket handshake, after which the TCP stream is handed to a [`WsTransport`]
/// task. The HTTP dispatcher and its buffers are gone by then (see the ws module docs).
pub async fn upgrade(
    req: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
    state: web::Data<AppState>,
) -> Result<(), actix_web::Error> {
    let head = req.head();
    let kind = match head.uri.path() {
        "/socket.io" | "/socket.io/" => Some(state.kind.clone()),
        "/engine.io" | "/engine.io/" if matches!(state.kind, SessionKind::Conformance) => {
            Some(SessionKind::EngineEcho)
        }
        _ => None,
    };
    let origin_ok = state.cors.allows(head.headers());
    let accepted = match kind {
        None => Err(HttpResponse::NotFound().finish()),
        Some(_) if !origin_ok => Err(EioError::Coded(ErrorCode::Forbidden).response()),
        Some(kind) => match forward::route_upgrade(&state, head).await {
            Route::Local => open_websocket(head, &state, kind)
                .await
                .map_err(EioError::response),
            Route::Remote(owner) => match forward::tunnel(framed, head, &state, owner).await {
                Ok(()) => return Ok(()),
                Err((client, why)) => {
                    framed = client;
                    Err(EioError::from(why).response())
                }
            },
            Route::Refused(why) => Err(EioError::from(why).response()),
        },
    };
    let (session, upgrading, framing) = match accepted {
        Ok(accepted) => accepted,
        Err(mut response) => {
            if origin_ok {
                state.cors.decorate(head.headers(), response.headers_mut());
            }
            // Written on the raw stream, past the App's DefaultHeaders.
            response.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            crate::logging::websocket_access(head, response.status().as_u16());
            let (mut res, body) = Response::from(response).into_parts();
            let body = actix_web::body::to_bytes(body).await.unwrap_or_default();
            res.head_mut().set_connection_type(ConnectionType::Close);
            framed
                .send(h1::Message::Item((res, BodySize::Sized(body.len() as u64))))
                .await?;
            framed.send(h1::Message::Chunk(Some(body))).await?;
            framed.send(h1::Message::Chunk(None)).await?;
            return Ok(());
        }
    };
    crate::logging::websocket_access(head, StatusCode::SWITCHING_PROTOCOLS.as_u16());
    let mut answer = ws::handshake_response(head);
    let deflate = state.ws_deflate.enabled.then(|| {
        let offers = head
            .headers()
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .filter_map(|v| v.to_str().ok());
        deflate::negotiate(offers)
    });
    let deflate = match deflate.flatten() {
        Some(accepted) => {
            answer.insert_header((header::SEC_WEBSOCKET_EXTENSIONS, accepted));
            Some(WsDeflate {
                threshold: state.ws_deflate.threshold,
                max_inflated: state.max_inflated,
            })
        }
        None => None,
    };
    let (res, _) = answer.finish().into_parts();
    // On failure the Session's websocket never attaches: its handshake timeout ends it.
    framed
        .send(h1::Message::Item((res, BodySize::None)))
        .await?;
    let parts = framed.into_parts();
    let session_config = &state.session;
    actix_rt::spawn(WsTransport::serve(
        parts.io,
        parts.read_buf,
        session,
        upgrading,
        WsOptions {
            framing,
            deflate,
            max_payload: session_config.max_payload,
            mailbox: session_config.max_buffered_frames,
            mailbox_bytes: session_config.max_buffered_bytes,
        },
    ));
    Ok(())
}

/// The session a valid websocket handshake attaches to, whether it upgrades from polling, and
/// the websocket framing of its Engine.IO revision.
async fn open_websocket(
    head: &RequestHead,
    state: &AppState,
    kind: SessionKind,
) -> Result<(SessionPort, bool, WsFraming), EioError> {
    let query = parse_query(head, state.allow_eio3)?;
    // A websocket handshake that cannot succeed must not leave a session behind.
    if query.transport != TransportName::WebSocket || ws::verify_handshake(head).is_err() {
        return Err(EioError::Coded(ErrorCode::BadRequest));
    }
    let framing = match query.revision {
        Revision::V4 => WsFraming::V4,
        Revision::V3 => WsFraming::V3 {
            base64: query.base64(),
        },
    };
    match query.params.get("sid") {
        Some(sid) => Ok((lookup(state, sid).await?, true, framing)),
        None => Ok((
            open_session(head, &query, state, kind).await?,
            false,
            framing,
        )),
    }
}

async fn poll_get(
    req: &HttpRequest,
    state: &AppState,
    session: &SessionPort,
    revision: Revision,
) -> Result<HttpResponse, EioError> {
    let (reply, body) = oneshot::channel();
    session
        .send(ToSession::PollGet(PollGet { reply }))
        .await??;
    // A session that stops without answering behaves like a close packet.
    let body = body.await.unwrap_or_else(|_| {
        let close = match revision {
            Revision::V4 => &b"1"[..],
            Revision::V3 => b"1:1",
        };
        PollBody::text(close.to_vec())
    });
    let content_type = if body.binary {
        "application/octet-stream"
    } else {
        "text/plain; charset=UTF-8"
    };
    let mut response = HttpResponse::Ok();
    response
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-store"));
    let compression = state.http_compression;
    if compression.enabled {
        // The answer depends on Accept-Encoding even when this one is sent as it is.
        response.insert_header((header::VARY, "Accept-Encoding"));
    }
    if let Some(coding) = compression.coding_for(req.headers(), body.body.len()) {
        match coding.encode(&body.body) {
            Ok(packed) => {
                response.insert_header((header::CONTENT_ENCODING, coding.name()));
                return Ok(response.body(packed));
            }
            // Writing to memory does not fail; if it did, the plain body is still right.
            Err(err) => tracing::warn!(%err, "compressing a polling answer failed"),
        }
    }
    Ok(response.body(body.body))
}

async fn poll_post(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
    session: &SessionPort,
    revision: Revision,
) -> Result<HttpResponse, EioError> {
    session.send(ToSession::PollPostStart).await??;
    let binary_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    let body = if binary_body && revision == Revision::V4 {
        // EIO4 polling bodies are text; Node refuses binary ones and closes the session.
        Err(PollError::BadPayload)
    } else {
        let limit = state.session.max_payload;
        let read = async {
            let mut buf = BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|_| PollError::BadPayload)?;
                if buf.len() + chunk.len() > limit {
                    return Err(PollError::TooLarge);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(buf.freeze())
        };
        match tokio::time::timeout(BODY_TIMEOUT, read).await {
            Ok(body) => body,
            Err(_) => {
                session.do_send(ToSession::PollPostBody(PollPostBody {
                    body: Err(PollError::BadPayload),
                    binary: binary_body,
                }));
                return Err(EioError::BodyTimeout);
            }
        }
    };
    session
        .send(ToSession::PollPostBody(PollPostBody {
            body,
            binary: binary_body,
        }))
        .await??;
    Ok(HttpResponse::Ok().content_type("text/html").body("ok"))
}

/// Request headers a browser may send cross-origin (what socket.io-client's polling uses).
const ALLOWED_HEADERS: &str = "content-type, authorization";

/// The CORS policy: any origin (`*`, never with credentials), or an allow-list.
#[derive(Debug, Clone)]
pub struct Cors {
    allowed: Option<Vec<String>>,
}

impl Cors {
    /// `None` allows every origin.
    pub fn new(allowed: Option<Vec<String>>) -> Self {
        Cors { allowed }
    }

    /// Requests without an Origin (non-browser clients) are always allowed.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        match (&self.allowed, headers.get(header::ORIGIN)) {
            (Some(list), Some(origin)) => origin
                .to_str()
                .is_ok_and(|o| list.iter().any(|allowed| allowed == o)),
            _ => true,
        }
    }

    /// Answer a preflight request.
    pub fn preflight(&self, headers: &HeaderMap) -> HttpResponse {
        let mut res = HttpResponse::NoContent();
        res.insert_header((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            "GET,HEAD,PUT,PATCH,POST,DELETE",
        ));
        // A fixed list, never an echo of what the request asks for.
        if headers.contains_key(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            res.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS));
        }
        res.finish()
    }

    /// Add the CORS headers to the response to an allowed request.
    pub fn decorate(&self, request: &HeaderMap, response: &mut HeaderMap) {
        match (&self.allowed, request.get(header::ORIGIN)) {
            (None, _) => {
                response.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
            (Some(_), Some(origin)) => {
                response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                response.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                // Appended: a compressed answer also varies on Accept-Encoding.
                response.append(header::VARY, HeaderValue::from_static("Origin"));
            }
            (Some(_), None) => {}
        }
    }
}
