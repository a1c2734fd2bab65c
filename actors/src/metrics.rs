//! The node's Prometheus metrics and the actor mailbox instrumentation.
//!
//! One [`Metrics`] per process ([`metrics()`]), registered with the `server_instance` label once
//! the node id is known ([`init`]). Metric values are atomics: actors update them without sharing
//! any other state.
//!
//! Mailbox depth cannot be read from an actix `Addr`, so messages to instrumented actors travel
//! inside [`Metered`]: sending one raises `actor_mailbox_depth{actor}` and stamps the enqueue time;
//! handling it records the wait and handle times and counts it; its guard lowers the depth when
//! the message is handled *or* dropped unhandled, so rejected messages never leak depth.
//! [`MeteredAddr`] sends through the wrapper with the same method names as `Addr`, and
//! [`metered!`](crate::metered) writes the forwarding handler for each (actor, message) pair.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::dev::{Request, ToEnvelope};
use actix::prelude::*;
use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set `{actor}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActorLabel {
    /// Actor type.
    pub actor: &'static str,
}

/// Label set `{actor, message}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActorMessageLabel {
    /// Actor type.
    pub actor: &'static str,
    /// Message type.
    pub message: &'static str,
}

/// Label set `{status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// Outcome.
    pub status: &'static str,
}

/// Label set `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Close reason.
    pub reason: &'static str,
}

/// Label set `{event_type}` (bounded: known events, or `other`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// Event name.
    pub event_type: &'static str,
}

/// Label set `{error_type}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// Error kind.
    pub error_type: &'static str,
}

/// Label set `{transport}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// `polling` or `websocket`.
    pub transport: &'static str,
}

/// Label set `{command}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    /// Redis command.
    pub command: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 10 µs … ~42 s.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 12))
}

/// Every metric the node exports (names as in the metrics contract; counters without `_total`,
/// which the encoder adds).
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// The per-actor series of every name in [`ACTORS`], resolved once: a `Family` lookup takes
    /// a lock and hashes the label, and every actor message would otherwise pay a few.
    actor_handles: Vec<(&'static str, ActorHandles)>,
    /// `socket_connections_total{status}`.
    pub connections: Family<StatusLabel, Counter>,
    /// `socket_connections_active`.
    pub connections_active: Gauge,
    /// `engineio_sessions_active{transport}`.
    pub sessions_active: Family<TransportLabel, Gauge>,
    /// `socket_connection_duration_seconds`.
    pub connection_duration: Histogram,
    /// `socket_disconnects_total{reason}`.
    pub disconnects: Family<ReasonLabel, Counter>,
    /// `socket_messages_sent_total{event_type}`.
    pub messages_sent: Family<EventLabel, Counter>,
    /// `socket_messages_received_total{event_type}`.
    pub messages_received: Family<EventLabel, Counter>,
    /// `socket_errors_total{error_type}`.
    pub errors: Family<ErrorLabel, Counter>,
    /// `socket_reconnections_total`.
    pub reconnections: Counter,
    /// `socket_volatile_dropped_total`.
    pub volatile_dropped: Counter,
    /// `redis_connected`.
    pub redis_connected: Gauge,
    /// `redis_pub_sub_latency_seconds`.
    pub pubsub_latency: Histogram,
    /// `redis_commands_total{command}`.
    pub redis_commands: Family<CommandLabel, Counter>,
    /// `redis_connection_pool_active`.
    pub redis_pool_active: Gauge,
    /// `redis_pubsub_gaps_total`.
    pub pubsub_gaps: Counter,
    /// `journal_queue_depth`.
    pub journal_queue_depth: Gauge,
    /// `journal_dropped_total`.
    pub journal_dropped: Counter,
    /// `journal_flush_seconds`.
    pub journal_flush: Histogram,
    /// `database_up`.
    pub database_up: Gauge,
    /// `actor_mailbox_depth{actor}`.
    pub mailbox_depth: Family<ActorLabel, Gauge>,
    /// `actor_instances{actor}`: per-connection actors (`session`, `ws_transport`) alive now,
    /// for leak checks.
    pub actor_instances: Family<ActorLabel, Gauge>,
    /// `actor_messages_total{actor,message}`.
    pub actor_messages: Family<ActorMessageLabel, Counter>,
    /// `actor_message_wait_seconds{actor}`.
    pub actor_wait: HistogramFamily<ActorLabel>,
    /// `actor_message_handle_seconds{actor}`.
    pub actor_handle: HistogramFamily<ActorLabel>,
    /// `actor_restarts_total{actor}`.
    pub actor_restarts: Family<ActorLabel, Counter>,
    /// `process_resident_memory_bytes`.
    pub process_rss: Gauge,
    /// `process_cpu_seconds_total` (raised to the value read from /proc at each scrape).
    pub process_cpu: Counter<f64, std::sync::atomic::AtomicU64>,
    /// `process_open_fds`.
    pub process_open_fds: Gauge,
    /// `process_max_fds`.
    pub process_max_fds: Gauge,
    /// `process_start_time_seconds`.
    pub process_start: Gauge,
    /// `node_draining`.
    pub draining: Gauge,
}

/// Every actor type that is instrumented, for pre-registering their series at zero.
pub const ACTORS: [&str; 7] = [
    "session",
    "ws_transport",
    "session_registry",
    "redis_bridge",
    "presence",
    "rate_limiter",
    "journal",
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
        let m = Metrics {
            actor_handles: Vec::new(),
            connections: Family::default(),
            connections_active: Gauge::default(),
            sessions_active: Family::default(),
            connection_duration: Histogram::new([
                1.0, 5.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
            disconnects: Family::default(),
            messages_sent: Family::default(),
            messages_received: Family::default(),
            errors: Family::default(),
            reconnections: Counter::default(),
            volatile_dropped: Counter::default(),
            redis_connected: Gauge::default(),
            pubsub_latency: latency_histogram(),
            redis_commands: Family::default(),
            redis_pool_active: Gauge::default(),
            pubsub_gaps: Counter::default(),
            journal_queue_depth: Gauge::default(),
            journal_dropped: Counter::default(),
            journal_flush: latency_histogram(),
            database_up: Gauge::default(),
            mailbox_depth: Family::default(),
            actor_instances: Family::default(),
            actor_messages: Family::default(),
            actor_wait: Family::new_with_constructor(latency_histogram),
            actor_handle: Family::new_with_constructor(latency_histogram),
            actor_restarts: Family::default(),
            process_rss: Gauge::default(),
            process_cpu: Counter::default(),
            process_open_fds: Gauge::default(),
            process_max_fds: Gauge::default(),
            process_start: Gauge::default(),
            draining: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "socket_connections",
            "Socket.IO connections attempted, by outcome",
            m.connections.clone(),
        );
        r.register(
            "socket_connections_active",
            "Authenticated sockets connected",
            m.connections_active.clone(),
        );
        r.register(
            "engineio_sessions_active",
            "Engine.IO sessions on the node",
            m.sessions_active.clone(),
        );
        r.register(
            "socket_connection_duration_seconds",
            "Connection duration at disconnect",
            m.connection_duration.clone(),
        );
        r.register(
            "socket_disconnects",
            "Disconnects by close reason",
            m.disconnects.clone(),
        );
        r.register(
            "socket_messages_sent",
            "Events sent to clients",
            m.messages_sent.clone(),
        );
        r.register(
            "socket_messages_received",
            "Events received from clients",
            m.messages_received.clone(),
        );
        r.register("socket_errors", "Errors by type", m.errors.clone());
        r.register(
            "socket_reconnections",
            "Clients that reconnected (same user and device within 60 s)",
            m.reconnections.clone(),
        );
        r.register(
            "socket_volatile_dropped",
            "Volatile frames dropped for congested clients",
            m.volatile_dropped.clone(),
        );
        r.register(
            "redis_connected",
            "The node's Redis subscriber is connected (0 in single-node mode)",
            m.redis_connected.clone(),
        );
        r.register(
            "redis_pub_sub_latency_seconds",
            "Publish to receive latency of cross-node frames",
            m.pubsub_latency.clone(),
        );
        r.register(
            "redis_commands",
            "Redis commands executed",
            m.redis_commands.clone(),
        );
        r.register(
            "redis_connection_pool_active",
            "Redis pool connections in use",
            m.redis_pool_active.clone(),
        );
        r.register(
            "redis_pubsub_gaps",
            "Subscriber reconnects (frames may have been lost)",
            m.pubsub_gaps.clone(),
        );
        r.register(
            "journal_queue_depth",
            "Log rows waiting to be written",
            m.journal_queue_depth.clone(),
        );
        r.register(
            "journal_dropped",
            "Log rows dropped because the database was slow or down",
            m.journal_dropped.clone(),
        );
        r.register(
            "journal_flush_seconds",
            "Duration of one batched write",
            m.journal_flush.clone(),
        );
        r.register(
            "database_up",
            "The last database check succeeded",
            m.database_up.clone(),
        );
        r.register(
            "actor_instances",
            "Per-connection actors (session, ws_transport) alive now",
            m.actor_instances.clone(),
        );
        r.register(
            "actor_mailbox_depth",
            "Messages queued for actors of this type",
            m.mailbox_depth.clone(),
        );
        r.register(
            "actor_messages",
            "Messages handled",
            m.actor_messages.clone(),
        );
        r.register(
            "actor_message_wait_seconds",
            "Time between enqueue and handling (every 8th message per actor type)",
            m.actor_wait.clone(),
        );
        r.register(
            "actor_message_handle_seconds",
            "Handler run time (every 8th message per actor type)",
            m.actor_handle.clone(),
        );
        r.register(
            "actor_restarts",
            "Supervised actor restarts",
            m.actor_restarts.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory",
            m.process_rss.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "User and system CPU time",
            m.process_cpu.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors",
            m.process_open_fds.clone(),
        );
        r.register(
            "process_max_fds",
            "Open-file limit",
            m.process_max_fds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "Start time, Unix seconds",
            m.process_start.clone(),
        );
        r.register("node_draining", "The node is draining", m.draining.clone());
        // Series that should exist from the first scrape, at zero.
        let mut actor_handles = Vec::with_capacity(ACTORS.len());
        for actor in ACTORS {
            let label = ActorLabel { actor };
            let _ = m.actor_restarts.get_or_create(&label);
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
        let _ = m.disconnects.get_or_create(&ReasonLabel {
            reason: "slow_client",
        });
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

/// Event names used as label values; anything else is `other` (label values stay bounded).
pub fn event_label(name: &str) -> &'static str {
    const KNOWN: [&str; 20] = [
        "message:send",
        "message:sync",
        "message:received",
        "message:sent",
        "typing",
        "signal",
        "room:emit",
        "room:msg",
        "presence:subscribe",
        "presence:unsubscribe",
        "presence:query",
        "status:set",
        "friend:online",
        "friend:offline",
        "authenticated",
        "error",
        "rate_limited",
        "friend:status",
        "server:maintenance",
        "server:shutdown",
    ];
    KNOWN
        .iter()
        .find(|k| **k == name)
        .copied()
        .unwrap_or("other")
}

/// The series one actor type reports its messages under.
#[derive(Clone)]
pub struct ActorHandles {
    /// `actor_mailbox_depth{actor}`.
    depth: Gauge,
    /// Messages sent to this actor type, to pick the ones timed.
    sent: Arc<AtomicU64>,
    /// `actor_message_wait_seconds{actor}`.
    wait: Histogram,
    /// `actor_message_handle_seconds{actor}`.
    handle: Histogram,
}

impl ActorHandles {
    fn resolve(m: &Metrics, actor: &'static str) -> ActorHandles {
        let label = ActorLabel { actor };
        ActorHandles {
            depth: m.mailbox_depth.get_or_create(&label).clone(),
            sent: Arc::default(),
            wait: m.actor_wait.get_or_create(&label).clone(),
            handle: m.actor_handle.get_or_create(&label).clone(),
        }
    }

    /// The handles of `actor`: cached for the names in [`ACTORS`], looked up otherwise.
    fn of(actor: &'static str) -> Cow<'static, ActorHandles> {
        let m = metrics();
        match m.actor_handles(actor) {
            Some(handles) => Cow::Borrowed(handles),
            None => Cow::Owned(ActorHandles::resolve(m, actor)),
        }
    }
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

/// `actor_messages_total{actor,message}` of one (actor, message) pair; the [`metered!`] macro
/// keeps one per pair in a static.
pub fn message_counter(actor: &'static str, message: &'static str) -> Counter {
    metrics()
        .actor_messages
        .get_or_create(&ActorMessageLabel { actor, message })
        .clone()
}

/// Lowers the mailbox depth gauge when the message is handled or dropped.
pub struct DepthGuard(Gauge);

impl Drop for DepthGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One message in this many per actor type is timed: two clock reads and two histogram
/// updates per message cost more than the hops they measure (quantiles stay meaningful).
const TIME_EVERY: u64 = 8;

/// A message on its way to an instrumented actor.
pub struct Metered<M> {
    /// The message.
    pub msg: M,
    /// When it was sent, if this message is one of those timed.
    pub enqueued: Option<Instant>,
    /// Keeps the depth gauge raised while the message waits.
    pub guard: DepthGuard,
}

impl<M: Message> Message for Metered<M> {
    type Result = M::Result;
}

impl<M> Metered<M> {
    /// Wrap `msg` for `actor`, raising its mailbox depth.
    pub fn new(actor: &'static str, msg: M) -> Self {
        let handles = ActorHandles::of(actor);
        let gauge = handles.depth.clone();
        gauge.inc();
        let timed = handles
            .sent
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(TIME_EVERY);
        Metered {
            msg,
            enqueued: timed.then(Instant::now),
            guard: DepthGuard(gauge),
        }
    }

    /// Count the message and, if it is timed, record its wait (call at the start of
    /// handling); answers the handle-time start of a timed message.
    pub fn start(&self, actor: &'static str, counter: &Counter) -> Option<Instant> {
        counter.inc();
        let enqueued = self.enqueued?;
        let now = Instant::now();
        ActorHandles::of(actor)
            .wait
            .observe(now.duration_since(enqueued).as_secs_f64());
        Some(now)
    }
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

/// Record how long a timed message's handler ran.
pub fn handled(actor: &'static str, started: Option<Instant>) {
    if let Some(started) = started {
        ActorHandles::of(actor)
            .handle
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The label an actor type reports under.
pub trait MeteredActor: Actor {
    /// `actor` label value.
    const NAME: &'static str;
}

/// An `Addr` that sends through [`Metered`], with the same method names.
pub struct MeteredAddr<A: Actor> {
    addr: Addr<A>,
}

impl<A: Actor> Clone for MeteredAddr<A> {
    fn clone(&self) -> Self {
        MeteredAddr {
            addr: self.addr.clone(),
        }
    }
}

impl<A: MeteredActor> MeteredAddr<A> {
    /// Instrument `addr`.
    pub fn new(addr: Addr<A>) -> Self {
        MeteredAddr { addr }
    }

    /// The plain address (for messages that are not instrumented).
    pub fn addr(&self) -> &Addr<A> {
        &self.addr
    }

    /// Whether the actor is still running.
    pub fn connected(&self) -> bool {
        self.addr.connected()
    }

    /// Send without waiting for the answer (ignores mailbox capacity, like `Addr::do_send`).
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Metered<M>>,
        A::Context: ToEnvelope<A, Metered<M>>,
    {
        self.addr.do_send(Metered::new(A::NAME, msg));
    }

    /// Send and wait for the answer.
    pub fn send<M>(&self, msg: M) -> Request<A, Metered<M>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Metered<M>>,
        A::Context: ToEnvelope<A, Metered<M>>,
    {
        self.addr.send(Metered::new(A::NAME, msg))
    }

    /// Send unless the mailbox is full (the message comes back in the error).
    pub fn try_send<M>(&self, msg: M) -> Result<(), SendError<M>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Metered<M>>,
        A::Context: ToEnvelope<A, Metered<M>>,
    {
        self.addr
            .try_send(Metered::new(A::NAME, msg))
            .map_err(|err| match err {
                SendError::Full(m) => SendError::Full(m.msg),
                SendError::Closed(m) => SendError::Closed(m.msg),
            })
    }
}

/// Write the forwarding `Handler<Metered<M>>` for (actor, message) pairs.
///
/// `metered!(Actor: Msg1, Msg2)` forwards to `Handler<Msg>`; a message whose handler answers
/// with `MessageResult` is listed as `MessageResult(Msg)`.
#[macro_export]
macro_rules! metered {
    ($actor:ty : $($rest:tt)*) => {
        $crate::metered!(@each $actor; $($rest)*);
    };
    (@each $actor:ty; ) => {};
    (@each $actor:ty; MessageResult($msg:ty) $(, $($rest:tt)*)?) => {
        impl ::actix::Handler<$crate::metrics::Metered<$msg>> for $actor {
            type Result = ::actix::MessageResult<$crate::metrics::Metered<$msg>>;

            fn handle(
                &mut self,
                m: $crate::metrics::Metered<$msg>,
                ctx: &mut <Self as ::actix::Actor>::Context,
            ) -> Self::Result {
                static COUNTER: ::std::sync::OnceLock<$crate::metrics::Counter> =
                    ::std::sync::OnceLock::new();
                let name = <$actor as $crate::metrics::MeteredActor>::NAME;
                let counter = COUNTER
                    .get_or_init(|| $crate::metrics::message_counter(name, stringify!($msg)));
                let started = m.start(name, counter);
                let $crate::metrics::Metered { msg, guard, .. } = m;
                drop(guard);
                let out = <Self as ::actix::Handler<$msg>>::handle(self, msg, ctx);
                $crate::metrics::handled(name, started);
                ::actix::MessageResult(out.0)
            }
        }
        $crate::metered!(@each $actor; $($($rest)*)?);
    };
    (@each $actor:ty; $msg:ty $(, $($rest:tt)*)?) => {
        impl ::actix::Handler<$crate::metrics::Metered<$msg>> for $actor {
            type Result = <$actor as ::actix::Handler<$msg>>::Result;

            fn handle(
                &mut self,
                m: $crate::metrics::Metered<$msg>,
                ctx: &mut <Self as ::actix::Actor>::Context,
            ) -> Self::Result {
                static COUNTER: ::std::sync::OnceLock<$crate::metrics::Counter> =
                    ::std::sync::OnceLock::new();
                let name = <$actor as $crate::metrics::MeteredActor>::NAME;
                let counter = COUNTER
                    .get_or_init(|| $crate::metrics::message_counter(name, stringify!($msg)));
                let started = m.start(name, counter);
                let $crate::metrics::Metered { msg, guard, .. } = m;
                drop(guard);
                let out = <Self as ::actix::Handler<$msg>>::handle(self, msg, ctx);
                $crate::metrics::handled(name, started);
                out
            }
        }
        $crate::metered!(@each $actor; $($($rest)*)?);
    };
}

/// Refresh the process gauges from /proc (called at scrape time).
pub fn refresh_process() {
    let m = metrics();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
    {
        m.process_rss.set(kb * 1024);
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        // Fields after the command name, which is in parentheses and may contain spaces.
        && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
    {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line (index 11, 12 here).
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let total = (ticks(11) + ticks(12)) / clock_ticks();
        let seen = m.process_cpu.get();
        if total > seen {
            m.process_cpu.inc_by(total - seen);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        m.process_open_fds.set(dir.count() as i64);
    }
    if let Ok((soft, _)) = rlimit_nofile() {
        m.process_max_fds.set(soft as i64);
    }
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux platform we run on.
    100.0
}

fn rlimit_nofile() -> Result<(u64, u64), std::io::Error> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| std::io::Error::other("no open-files line"))?;
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums.as_slice() {
        [soft, hard, ..] => Ok((*soft, *hard)),
        _ => Err(std::io::Error::other("unparsable open-files line")),
    }
}
