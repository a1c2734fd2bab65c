//! The node's Prometheus metrics and the actor mailbox instrumentation.
//!
//! One [`Metrics`] per process ([`metrics()`]), registered with the `server_instance` label once
//! the node id is known ([`init`]). Metric values are atomics: actors update them without sharing
//! any other state. Each metric is declared once, in the table of [`Metrics`]: field, type,
//! exported name and help text together.
//!
//! # Layout
//! - this file: the metrics table, label sets and the small counting helpers.
//! - [`metered`]: mailbox instrumentation ([`Metered`], [`MeteredAddr`], [`metered!`](crate::metered)).
//! - `process`: `process_*` gauges read from `/proc` at scrape time.

pub mod metered;
mod process;

use std::borrow::Cow;
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use metered::{
    ActorHandles, DepthGuard, Metered, MeteredActor, MeteredAddr, handled, message_counter,
};
pub use process::refresh_process;

/// One-field label sets: `Name(label)` derives `struct Name { pub label: &'static str }`.
macro_rules! label_sets {
    ($($(#[$doc:meta])* $name:ident($field:ident);)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        pub struct $name {
            /// The label value (bounded: a fixed set of names).
            pub $field: &'static str,
        }
    )*};
}

label_sets! {
    /// `{actor}`: an actor type.
    ActorLabel(actor);
    /// `{status}`: a connection outcome.
    StatusLabel(status);
    /// `{reason}`: a close reason.
    ReasonLabel(reason);
    /// `{event_type}`: a known event name, or `other`.
    EventLabel(event_type);
    /// `{error_type}`: an error kind.
    ErrorLabel(error_type);
    /// `{transport}`: `polling` or `websocket`.
    TransportLabel(transport);
    /// `{command}`: a Redis command.
    CommandLabel(command);
    /// `{hook}`: a backend hook.
    HookLabel(hook);
    /// `{outcome}`: how a delivery ended.
    OutcomeLabel(outcome);
}

/// Label set `{hook, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookOutcomeLabel {
    /// The hook.
    pub hook: &'static str,
    /// `ok` or why it failed.
    pub outcome: &'static str,
}

/// Label set `{kind, outcome}` of a forwarded request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabel {
    /// `poll_get`, `poll_post` or `websocket`.
    pub kind: &'static str,
    /// `ok` or why it was not served by its owner.
    pub outcome: &'static str,
}

/// Label set `{actor, message}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActorMessageLabel {
    /// Actor type.
    pub actor: &'static str,
    /// Message type.
    pub message: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 10 µs … ~42 s.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 12))
}

fn duration_histogram() -> Histogram {
    Histogram::new([1.0, 5.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0])
}

/// Declares [`Metrics`]: each line is `field: Type [= constructor], "exported_name", "help"`.
/// Counters are named without `_total`, which the encoder adds.
macro_rules! metrics_table {
    ($($field:ident: $ty:ty $(= $init:expr)?, $name:literal, $help:literal;)*) => {
        /// Every metric the node exports.
        pub struct Metrics {
            /// The registry `/metrics` encodes.
            pub registry: Registry,
            /// The per-actor series of every name in [`ACTORS`], resolved once: a `Family`
            /// lookup takes a lock and hashes the label, and every actor message would
            /// otherwise pay a few.
            actor_handles: Vec<(&'static str, ActorHandles)>,
            $(
                #[doc = concat!("`", $name, "`: ", $help, ".")]
                pub $field: $ty,
            )*
        }

        impl Metrics {
            fn declare(registry: &mut Registry) -> Self {
                $(
                    let $field: $ty = metrics_table!(@init $($init)?);
                    registry.register($name, $help, $field.clone());
                )*
                Metrics {
                    registry: Registry::default(),
                    actor_handles: Vec::new(),
                    $($field,)*
                }
            }
        }
    };
    (@init) => { Default::default() };
    (@init $init:expr) => { $init };
}

metrics_table! {
    connections: Family<StatusLabel, Counter>, "socket_connections",
        "Socket.IO connections attempted, by outcome";
    connections_active: Gauge, "socket_connections_active", "Authenticated sockets connected";
    sessions_active: Family<TransportLabel, Gauge>, "engineio_sessions_active",
        "Engine.IO sessions on the node";
    connection_duration: Histogram = duration_histogram(), "socket_connection_duration_seconds",
        "Connection duration at disconnect";
    disconnects: Family<ReasonLabel, Counter>, "socket_disconnects", "Disconnects by close reason";
    messages_sent: Family<EventLabel, Counter>, "socket_messages_sent", "Events sent to clients";
    messages_received: Family<EventLabel, Counter>, "socket_messages_received",
        "Events received from clients";
    errors: Family<ErrorLabel, Counter>, "socket_errors", "Errors by type";
    reconnections: Counter, "socket_reconnections",
        "Clients that reconnected (same user and device within 60 s)";
    volatile_dropped: Counter, "socket_volatile_dropped",
        "Volatile frames dropped for congested clients";
    redis_connected: Gauge, "redis_connected",
        "The node's Redis subscriber is connected (0 in single-node mode)";
    pubsub_latency: Histogram = latency_histogram(), "redis_pub_sub_latency_seconds",
        "Publish to receive latency of cross-node frames";
    redis_commands: Family<CommandLabel, Counter>, "redis_commands", "Redis commands executed";
    redis_pool_active: Gauge, "redis_connection_pool_active", "Redis pool connections in use";
    pubsub_gaps: Counter, "redis_pubsub_gaps", "Subscriber reconnects (frames may have been lost)";
    journal_queue_depth: Gauge, "journal_queue_depth", "Log rows waiting to be written";
    journal_dropped: Counter, "journal_dropped",
        "Log rows dropped because the database was slow or down";
    journal_flush: Histogram = latency_histogram(), "journal_flush_seconds",
        "Duration of one batched write";
    database_up: Gauge, "database_up", "The last database check succeeded";
    actor_instances: Family<ActorLabel, Gauge>, "actor_instances",
        "Per-connection actors (session, ws_transport) alive now";
    mailbox_depth: Family<ActorLabel, Gauge>, "actor_mailbox_depth",
        "Messages queued for actors of this type";
    actor_messages: Family<ActorMessageLabel, Counter>, "actor_messages", "Messages handled";
    actor_wait: HistogramFamily<ActorLabel> = Family::new_with_constructor(latency_histogram),
        "actor_message_wait_seconds",
        "Time between enqueue and handling (every 8th message per actor type)";
    actor_handle: HistogramFamily<ActorLabel> = Family::new_with_constructor(latency_histogram),
        "actor_message_handle_seconds", "Handler run time (every 8th message per actor type)";
    actor_restarts: Family<ActorLabel, Counter>, "actor_restarts", "Supervised actor restarts";
    process_rss: Gauge, "process_resident_memory_bytes", "Resident memory";
    process_cpu: Counter<f64, std::sync::atomic::AtomicU64>, "process_cpu_seconds",
        "User and system CPU time";
    process_open_fds: Gauge, "process_open_fds", "Open file descriptors";
    process_max_fds: Gauge, "process_max_fds", "Open-file limit";
    process_start: Gauge, "process_start_time_seconds", "Start time, Unix seconds";
    draining: Gauge, "node_draining", "The node is draining";
    hook_requests: Family<HookOutcomeLabel, Counter>, "hook_requests",
        "Backend hook calls by outcome (ok, timeout, unreachable, bad_status, bad_answer, circuit_open)";
    hook_duration: HistogramFamily<HookLabel> = Family::new_with_constructor(latency_histogram),
        "hook_duration_seconds", "Backend hook call duration";
    hook_circuit_open: Family<HookLabel, Gauge>, "hook_circuit_open",
        "The hook's circuit is open (1): the backend kept failing and is not asked";
    hook_cache_hits: Counter, "hook_cache_hits",
        "Authorize decisions answered from the node's decision cache";
    webhook_outbox_depth: Gauge, "webhook_outbox_depth", "Webhook events not yet delivered";
    webhook_deliveries: Family<OutcomeLabel, Counter>, "webhook_deliveries",
        "Webhook events by delivery outcome (delivered, failed, dead)";
    forward_requests: Family<ForwardLabel, Counter>, "forward_requests",
        "Requests for a session on another node, by kind (poll_get, poll_post, websocket) and \
         outcome (ok, owner_unknown, owner_unreachable, timeout, too_large, bad_body, loop)";
    forward_tunnels_active: Gauge, "forward_tunnels_active",
        "Websockets this node bridges to the node that owns their session";
}

/// Kinds of forwarded requests (`forward_requests_total{kind}`).
pub const FORWARD_KINDS: [&str; 3] = ["poll_get", "poll_post", "websocket"];

/// Every actor type that is instrumented, for pre-registering their series at zero.
pub const ACTORS: [&str; 10] = [
    "session",
    "ws_transport",
    "session_registry",
    "redis_bridge",
    "presence",
    "rate_limiter",
    "journal",
    "hooks",
    "webhooks",
    "recovery",
];

impl Metrics {
    fn new(node_id: &str) -> Self {
        let mut registry = Registry::with_labels(
            [(
                Cow::Borrowed("server_instance"),
                Cow::Owned(node_id.to_string()),
            )]
            .into_iter(),
        );
        let m = Metrics::declare(&mut registry);
        // Series that should exist from the first scrape, at zero.
        let mut actor_handles = Vec::with_capacity(ACTORS.len());
        for actor in ACTORS {
            let _ = m.actor_restarts.get_or_create(&ActorLabel { actor });
            actor_handles.push((actor, ActorHandles::resolve(&m, actor)));
        }
        for actor in ["session", "ws_transport"] {
            let _ = m.actor_instances.get_or_create(&ActorLabel { actor });
        }
        for status in ["accepted", "auth_failed", "rejected"] {
            let _ = m.connections.get_or_create(&StatusLabel { status });
        }
        for transport in ["polling", "websocket"] {
            let _ = m
                .sessions_active
                .get_or_create(&TransportLabel { transport });
        }
        let _ = m.errors.get_or_create(&ErrorLabel {
            error_type: "slow_client",
        });
        // Alerts watch these from the first scrape, backend or not.
        for hook in ["connect", "authorize", "rpc"] {
            let _ = m.hook_circuit_open.get_or_create(&HookLabel { hook });
        }
        for outcome in ["delivered", "failed", "dead"] {
            let _ = m
                .webhook_deliveries
                .get_or_create(&OutcomeLabel { outcome });
        }
        let _ = m.disconnects.get_or_create(&ReasonLabel {
            reason: "slow_client",
        });
        for kind in FORWARD_KINDS {
            let _ = m.forward_requests.get_or_create(&ForwardLabel {
                kind,
                outcome: "ok",
            });
        }
        Metrics {
            registry,
            actor_handles,
            ..m
        }
    }

    /// The cached series of `actor`, if it is one of [`ACTORS`].
    fn actor_handles(&self, actor: &str) -> Option<&ActorHandles> {
        self.actor_handles
            .iter()
            .find(|(name, _)| *name == actor)
            .map(|(_, handles)| handles)
    }

    /// Count one error of a kind.
    pub fn error(&self, error_type: &'static str) {
        self.errors.get_or_create(&ErrorLabel { error_type }).inc();
    }

    /// Count one connection attempt's outcome (`accepted`, `auth_failed`, `rejected`).
    pub fn connection(&self, status: &'static str) {
        self.connections
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    /// Count one forwarded request of `kind` that ended with `outcome`.
    pub fn forwarded(&self, kind: &'static str, outcome: &'static str) {
        self.forward_requests
            .get_or_create(&ForwardLabel { kind, outcome })
            .inc();
    }

    /// Move `engineio_sessions_active{transport}` by `delta`.
    pub fn sessions(&self, transport: &'static str, delta: i64) {
        self.sessions_active
            .get_or_create(&TransportLabel { transport })
            .inc_by(delta);
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Create the process's metrics with this node's id (first call wins).
pub fn init(node_id: &str) -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(node_id))
}

/// The process's metrics (labelled `server_instance="unknown"` if [`init`] was never called).
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new("unknown"))
}

/// Count an actor of type `actor` as alive (call from `started`; pair with [`actor_stopped`]).
pub fn actor_started(actor: &'static str) {
    metrics()
        .actor_instances
        .get_or_create(&ActorLabel { actor })
        .inc();
}

/// Count an actor of type `actor` as gone (call from `stopped`).
pub fn actor_stopped(actor: &'static str) {
    metrics()
        .actor_instances
        .get_or_create(&ActorLabel { actor })
        .dec();
}

/// Count one event pushed to a client (`socket_messages_sent_total{event_type}`).
pub fn message_sent(event_type: &'static str) {
    messages_sent(event_type, 1);
}

/// Count `n` pushes of one event (a fan-out counts once).
pub fn messages_sent(event_type: &'static str, n: u64) {
    if n > 0 {
        metrics()
            .messages_sent
            .get_or_create(&EventLabel { event_type })
            .inc_by(n);
    }
}

/// Count one event received from a client (`socket_messages_received_total{event_type}`).
pub fn message_received(event_type: &'static str) {
    metrics()
        .messages_received
        .get_or_create(&EventLabel { event_type })
        .inc();
}

/// Count one Redis command (`redis_commands_total{command}`).
pub fn redis_command(command: &'static str) {
    metrics()
        .redis_commands
        .get_or_create(&CommandLabel { command })
        .inc();
}

/// Count a supervised restart of an actor type.
pub fn restarted(actor: &'static str) {
    metrics()
        .actor_restarts
        .get_or_create(&ActorLabel { actor })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_metric_is_exported_once() {
        let m = Metrics::new("test-node");
        m.connection("accepted");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        for family in [
            "socket_connections",
            "socket_connections_active",
            "engineio_sessions_active",
            "actor_mailbox_depth",
            "process_cpu_seconds",
            "node_draining",
        ] {
            let help = format!("# HELP {family} ");
            assert_eq!(text.matches(&help).count(), 1, "{family} in\n{text}");
        }
        assert!(text.contains(
            "socket_connections_total{server_instance=\"test-node\",status=\"accepted\"} 1"
        ));
    }
}
