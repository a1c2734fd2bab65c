//! The access-log span of each HTTP request.
//!
//! tracing-actix-web's default span records the full request target, query string included, and
//! Socket.IO clients may put their JWT in `?token=`: this span records the path only. It also
//! adopts a caller's `X-Request-Id` (a load balancer's) instead of always minting a new one.
//! Websocket handshakes never reach the App (see `engineio::upgrade`): they log one access
//! event each, [`websocket_access`]. [`init`] sets up the JSON log (and the trace exporter's
//! layer beside it).

use actix_http::RequestHead;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use opentelemetry::TraceId;
use switchboard_actors::traces;
use tracing::{Event, Span, Subscriber};
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};
use tracing_opentelemetry::OtelData;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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

/// Set up the JSON log on stdout with `filter` and, when `traces` is given, the span exporter
/// beside it (each with its own filter, so a quiet log level still exports every span).
pub fn init(filter: &str, traces: Option<opentelemetry_sdk::trace::Tracer>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{FilterExt, Targets};
    use tracing_subscriber::fmt::format::{FmtSpan, JsonFields};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let Some(tracer) = traces else {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            // One access-log line per HTTP request (tracing-actix-web's span, with its request id).
            .with_span_events(FmtSpan::CLOSE)
            .with_env_filter(filter)
            .init();
        return;
    };
    let ours = || Targets::new().with_target(traces::TARGET, tracing::Level::TRACE);
    let format = tracing_subscriber::fmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false);
    let log = tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .with_span_events(FmtSpan::CLOSE)
        .event_format(WithTraceId(format))
        // The log sees the traced spans too: their trace id goes on the lines written in them.
        .with_filter(filter.or(ours()));
    let export = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_filter(ours());
    tracing_subscriber::registry().with(log).with(export).init();
    traces::enable();
}

/// The JSON log line, with `"trace_id"` first when it is written inside a traced span; the
/// traced spans' own close events are left out (the exporter has them).
struct WithTraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        if meta.is_span() && meta.target() == traces::TARGET {
            return Ok(());
        }
        let trace_id = ctx.lookup_current().and_then(|span| {
            span.scope().find_map(|span| {
                let extensions = span.extensions();
                extensions.get::<OtelData>().and_then(OtelData::trace_id)
            })
        });
        let Some(trace_id) = trace_id.filter(|id| *id != TraceId::INVALID) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}
