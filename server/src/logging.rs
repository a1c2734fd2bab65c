//! The access-log span of each HTTP request.
//!
//! tracing-actix-web's default span records the full request target, query string included, and
//! Socket.IO clients may put their JWT in `?token=`: this span records the path only. It also
//! adopts a caller's `X-Request-Id` (a load balancer's) instead of always minting a new one.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

/// Longest incoming request id adopted; longer ones are replaced by our own.
const MAX_REQUEST_ID: usize = 128;

/// Root span without query strings, with the caller's request id when it sends one.
pub struct AccessSpan;

/// Whether the request asks for a websocket upgrade.
fn is_websocket_upgrade(request: &ServiceRequest) -> bool {
    request
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

impl RootSpanBuilder for AccessSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // A websocket's response body is the socket's whole life: the middleware enters the
        // request span on every poll of it, i.e. for every frame (~6 % of a core in a 50k
        // deliveries/s fan-out profile). Upgrades get no span, and one access event instead
        // (`on_request_end`).
        if is_websocket_upgrade(request) {
            return Span::none();
        }
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
        if span.is_none() {
            if let Ok(response) = outcome {
                let request = response.request();
                tracing::info!(
                    http.method = %request.method(),
                    http.path = %request.path(),
                    http.status_code = response.status().as_u16(),
                    http.client_ip = %request.connection_info().realip_remote_addr().unwrap_or(""),
                    request_id = %request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .filter(|v| v.len() <= MAX_REQUEST_ID)
                        .unwrap_or(""),
                    "websocket upgrade"
                );
            }
            return;
        }
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
