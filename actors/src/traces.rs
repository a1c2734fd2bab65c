//! OpenTelemetry traces, as the actors make them.
//!
//! Off unless the node exports traces ([`enable`], called once at start): every constructor
//! here then answers [`Span::none`] after one relaxed load, so the hot paths build nothing.
//! Spans are `tracing` spans with target [`TARGET`] and always an explicit parent (the node's
//! exporter selects that target; the JSON log leaves these spans out and prints their trace id
//! instead). A span travels between actors inside the message that carries the work, and
//! between nodes as a [`TraceParent`] in the cluster frame.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use switchboard_protocol::trace::TraceParent;

/// The `tracing` target of every span made here.
pub const TARGET: &str = "switchboard::trace";

static ON: AtomicBool = AtomicBool::new(false);

/// Turn span building on (the node installed an exporter).
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether spans are built.
#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The traced span the caller runs in, to hand on with a message ([`Span::none`] when traces
/// are off or the caller runs in no span of ours).
pub fn current() -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = Span::current();
    if ours(&span) { span } else { Span::none() }
}

/// Whether `span` is one of the spans made here.
fn ours(span: &Span) -> bool {
    span.metadata().is_some_and(|m| m.target() == TARGET)
}

/// A socket's CONNECT: authentication, the `connect` hook, admission.
pub fn connect(sid: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, parent: None, "connect", otel.kind = "server", sid)
}

/// One client event; `remote` is the client's own `traceparent`, if it sent one.
pub fn event(name: &str, socket: &str, user: &str, remote: Option<TraceParent>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "event",
        otel.name = format!("event {name}"),
        otel.kind = "server",
        event.name = name,
        socket.id = socket,
        user.id = user,
    );
    adopt(&span, remote);
    span
}

/// A call to the backend's `hook`, inside the work that asked.
pub fn hook(parent: &Span, hook: &str, url: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        parent: parent,
        "hook",
        otel.name = format!("hook {hook}"),
        otel.kind = "client",
        hook,
        http.request.method = "POST",
        url.full = url,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// One message transaction of the Journal: a child of the first traced store in it, linked to
/// the others (a batch serves many traces).
pub fn commit(stores: &[Span], messages: usize) -> Span {
    if !enabled() {
        return Span::none();
    }
    let mut traced = stores.iter().filter(|s| ours(s));
    let Some(first) = traced.next() else {
        return Span::none();
    };
    let span = tracing::info_span!(
        target: TARGET,
        parent: first,
        "journal commit",
        otel.kind = "internal",
        db.operation.name = "INSERT messages",
        messages,
        otel.status_code = tracing::field::Empty,
    );
    for other in traced {
        span.add_link(other.context().span().span_context().clone());
    }
    span
}

/// A publish to Redis of work done in `parent`.
pub fn publish(parent: &Span, channel: &str) -> Span {
    if !enabled() || !ours(parent) {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        parent: parent,
        "redis publish",
        otel.kind = "producer",
        messaging.system = "redis",
        messaging.destination.name = channel,
    )
}

/// Local delivery of a frame another node published; `remote` is its publishing span.
pub fn deliver(channel: &str, origin: &str, remote: Option<TraceParent>) -> Span {
    if !enabled() || remote.is_none() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "cluster deliver",
        otel.kind = "consumer",
        messaging.system = "redis",
        messaging.destination.name = channel,
        origin,
    );
    adopt(&span, remote);
    span
}

/// Mark `span` as failed (the exporter's span status).
pub fn failed(span: &Span) {
    span.record("otel.status_code", "error");
}

/// `span`'s W3C trace context, to pass on (`None` when it is not traced).
pub fn traceparent(span: &Span) -> Option<TraceParent> {
    if !enabled() || !ours(span) {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    TraceParent::new(
        sc.trace_id().to_bytes(),
        sc.span_id().to_bytes(),
        sc.trace_flags().to_u8(),
    )
}

/// The trace id of the innermost traced span the caller runs in, for its log lines.
pub fn current_trace_id() -> Option<String> {
    if !enabled() {
        return None;
    }
    let span = Span::current();
    if !ours(&span) {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Make `remote` the parent of the new `span`.
fn adopt(span: &Span, remote: Option<TraceParent>) {
    let Some(remote) = remote else { return };
    let parent = SpanContext::new(
        TraceId::from_bytes(remote.trace_id),
        SpanId::from_bytes(remote.span_id),
        TraceFlags::new(remote.flags),
        true,
        TraceState::default(),
    );
    // Fails only for a span no exporter sees, which has nothing to join.
    let _ = span.set_parent(Context::new().with_remote_span_context(parent));
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn spans_adopt_a_remote_parent_and_pass_their_own_on() {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            enable();
            let client = TraceParent::parse(CLIENT);
            let event = event("message:send", "s1", "alice", client);
            let own = traceparent(&event).expect("a traced event");
            assert_eq!(own.trace_id, client.unwrap().trace_id, "the client's trace");
            assert_ne!(own.span_id, client.unwrap().span_id, "a span of its own");
            assert!(own.sampled());

            let hook = hook(&event, "authorize", "http://backend/authorize");
            let hooked = traceparent(&hook).expect("a traced hook call");
            assert_eq!(hooked.trace_id, own.trace_id);
            assert_ne!(hooked.span_id, own.span_id);

            // Inside the event, `current` hands it on; the commit of two sends is the first's.
            let entered = event.enter();
            let handed = current();
            drop(entered);
            let commit = commit(&[Span::none(), handed], 2);
            assert_eq!(traceparent(&commit).unwrap().trace_id, own.trace_id);

            // A frame's trace context makes the delivery a child of the publish.
            let publish = publish(&event, "sb:user:bob");
            let sent = traceparent(&publish).unwrap();
            let delivery = deliver("sb:user:bob", "node-a", Some(sent));
            assert_eq!(traceparent(&delivery).unwrap().trace_id, own.trace_id);
            // An untraced frame delivers without a span; so does untraced work.
            assert!(deliver("sb:user:bob", "node-a", None).is_none());
            assert!(publish_of_none().is_none());
        });
    }

    fn publish_of_none() -> Span {
        publish(&Span::none(), "sb:user:bob")
    }
}
