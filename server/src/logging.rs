//! The access-log span of each HTTP request.
//!
//! tracing-actix-web's default span records the full request target, query string included, and
//! Socket.IO clients may put their JWT in `?token=`: this span records the path only. It also
//! adopts a caller's `X-Request-Id` (a load balancer's) instead of always minting a new one.
//! Websocket handshakes never reach the App (see `engineio::upgrade`): they log one access
//! event each, [`websocket_access`].

use actix_http::RequestHead;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

/// Longest incoming request id adopted; longer ones are replaced by our own.
const MAX_REQUEST_ID: usize = 128;

/// Root span without query strings, with the caller's request id when it sends one.
pub struct AccessSpan;

impl RootSpanBuilder for AccessSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID)
            .map(str::to_string)
            .unwrap_or_else(|| {
                request
                    .extensions()
                    .get::<RequestId>()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            });
        let route = request.match_pattern().unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.path = %request.path(),
            http.client_ip = %request.connection_info().realip_remote_addr().unwrap_or(""),
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
            request_id = %request_id,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// The access event of a websocket handshake (answered outside the App, so without a span).
pub fn websocket_access(head: &RequestHead, status: u16) {
    let header = |name: &str| head.headers().get(name).and_then(|v| v.to_str().ok());
    // The first X-Forwarded-For hop is the client behind a load balancer.
    let client_ip = header("x-forwarded-for")
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string())
        .or_else(|| head.peer_addr.map(|a| a.ip().to_string()))
        .unwrap_or_default();
    tracing::info!(
        http.method = %head.method,
        http.path = %head.uri.path(),
        http.status_code = status,
        http.client_ip = %client_ip,
        request_id = header("x-request-id")
            .filter(|v| v.len() <= MAX_REQUEST_ID)
            .unwrap_or(""),
        "websocket upgrade"
    );
}
