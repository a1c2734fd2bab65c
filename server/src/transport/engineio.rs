//! HTTP side of Engine.IO: query validation, handshakes, long-polling GET/POST and the websocket
//! upgrade. Every protocol error is mapped to its HTTP response in [`EioError::response`] only.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws as actix_ws;
use bytes::BytesMut;
use futures_util::StreamExt;
use switchboard_actors::metrics::MeteredAddr;
use switchboard_actors::registry::{Lookup, Register};
use switchboard_actors::session::{
    HandshakeInfo, InitialTransport, Session, SessionInit, SessionKind,
};
use switchboard_actors::transport::{PollError, PollGet, PollPostBody, PollPostStart, Sid};
use switchboard_protocol::engineio::{ErrorCode, PROTOCOL};
use tokio::sync::oneshot;

use super::ws::WsTransport;
use crate::AppState;

/// How long a polling POST body may take to arrive (Node: httpRequestBodyTimeout).
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Route `/socket.io/` (or `/engine.io/`) requests for sessions of `kind`.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    kind: SessionKind,
) -> HttpResponse {
    let origin_ok = state.cors.allows(&req);
    let mut response = if !origin_ok {
        EioError::Coded(ErrorCode::Forbidden).response()
    } else if req.method() == Method::OPTIONS {
        state.cors.preflight(&req)
    } else {
        serve(&req, payload, &state, kind)
            .await
            .unwrap_or_else(EioError::response)
    };
    if origin_ok {
        state.cors.decorate(&req, &mut response);
    }
    response
}

async fn serve(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    kind: SessionKind,
) -> Result<HttpResponse, EioError> {
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map_err(|_| EioError::Coded(ErrorCode::BadRequest))?
        .into_inner();
    let transport = match query.get("transport").map(String::as_str) {
        Some("polling") => TransportName::Polling,
        Some("websocket") => TransportName::WebSocket,
        _ => return Err(EioError::Coded(ErrorCode::UnknownTransport)),
    };
    if query.get("EIO").map(String::as_str) != Some(PROTOCOL) {
        return Err(EioError::Coded(ErrorCode::UnsupportedProtocolVersion));
    }
    let is_upgrade = is_websocket_upgrade(req);
    if transport == TransportName::WebSocket && !is_upgrade {
        return Err(EioError::Coded(ErrorCode::BadRequest));
    }
    match query.get("sid") {
        Some(sid) => {
            let session = state
                .registry
                .send(Lookup {
                    sid: Sid::from(sid.as_str()),
                })
                .await?
                .ok_or(EioError::Coded(ErrorCode::UnknownSid))?;
            match transport {
                TransportName::WebSocket => start_websocket(req, payload, state, session, true),
                TransportName::Polling if req.method() == Method::GET => poll_get(&session).await,
                TransportName::Polling if req.method() == Method::POST => {
                    poll_post(req, payload, state, &session).await
                }
                TransportName::Polling => Err(EioError::Coded(ErrorCode::BadRequest)),
            }
        }
        None => {
            if req.method() != Method::GET {
                return Err(EioError::Coded(ErrorCode::BadHandshakeMethod));
            }
            if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(EioError::Draining);
            }
            // A websocket handshake that cannot succeed must not leave a session behind.
            if transport == TransportName::WebSocket && actix_ws::handshake(req).is_err() {
                return Err(EioError::Coded(ErrorCode::BadRequest));
            }
            let initial = match transport {
                TransportName::Polling => InitialTransport::Polling,
                TransportName::WebSocket => InitialTransport::WebSocket,
            };
            let sid = Sid::random();
            let session = Session::start_with(SessionInit {
                sid: sid.clone(),
                config: state.session.clone(),
                registry: state.registry.clone(),
                kind,
                transport: initial,
                handshake: handshake_info(req, &query),
            });
            state
                .registry
                .send(Register {
                    sid,
                    addr: session.clone(),
                })
                .await?;
            match transport {
                // The session queued its open packet: the first GET carries it.
                TransportName::Polling => poll_get(&session).await,
                TransportName::WebSocket => start_websocket(req, payload, state, session, false),
            }
        }
    }
}

/// What the handshake request says about the client (for auth and logs).
fn handshake_info(req: &HttpRequest, query: &HashMap<String, String>) -> HandshakeInfo {
    let header = |name: &str| {
        req.headers()
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
        remote_addr: req.peer_addr().map(|a| a.ip().to_string()),
    }
}

fn is_websocket_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn start_websocket(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    session: MeteredAddr<Session>,
    upgrade: bool,
) -> Result<HttpResponse, EioError> {
    let transport = WsTransport::new(
        session,
        upgrade,
        state.session.max_payload,
        state.session.max_buffered_frames,
    );
    actix_ws::WsResponseBuilder::new(transport, req, payload)
        .frame_size(state.session.max_payload)
        .start()
        .map_err(|_| EioError::Coded(ErrorCode::BadRequest))
}

async fn poll_get(session: &MeteredAddr<Session>) -> Result<HttpResponse, EioError> {
    let (reply, body) = oneshot::channel();
    session.send(PollGet { reply }).await??;
    // A session that stops without answering behaves like a close packet.
    let body = body.await.unwrap_or_else(|_| b"1".to_vec());
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=UTF-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}

async fn poll_post(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
    session: &MeteredAddr<Session>,
) -> Result<HttpResponse, EioError> {
    session.send(PollPostStart).await??;
    let binary_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    let body = if binary_body {
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
                session.do_send(PollPostBody {
                    body: Err(PollError::BadPayload),
                });
                return Err(EioError::BodyTimeout);
            }
        }
    };
    session.send(PollPostBody { body }).await??;
    Ok(HttpResponse::Ok().content_type("text/html").body("ok"))
}

/// The CORS policy: any origin, or an allow-list.
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
    pub fn allows(&self, req: &HttpRequest) -> bool {
        match (&self.allowed, req.headers().get(header::ORIGIN)) {
            (Some(list), Some(origin)) => origin
                .to_str()
                .is_ok_and(|o| list.iter().any(|allowed| allowed == o)),
            _ => true,
        }
    }

    /// Answer a preflight request.
    pub fn preflight(&self, req: &HttpRequest) -> HttpResponse {
        let mut res = HttpResponse::NoContent();
        res.insert_header((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            "GET,HEAD,PUT,PATCH,POST,DELETE",
        ));
        if let Some(h) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            res.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone()));
        }
        res.finish()
    }

    /// Add the CORS headers to a response for an allowed request.
    pub fn decorate(&self, req: &HttpRequest, res: &mut HttpResponse) {
        let headers = res.headers_mut();
        match (&self.allowed, req.headers().get(header::ORIGIN)) {
            (None, _) => {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
            (Some(_), Some(origin)) => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            (Some(_), None) => {}
        }
    }
}
