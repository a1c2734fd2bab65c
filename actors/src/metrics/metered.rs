//! Mailbox instrumentation: actix cannot report an `Addr`'s mailbox depth, so messages to
//! instrumented actors travel inside [`Metered`].
//!
//! Sending one raises `actor_mailbox_depth{actor}` and stamps the enqueue time (one message in
//! eight per actor type); handling it records the wait and handle times and counts it; its
//! guard lowers the depth when the message is handled *or* dropped unhandled, so rejected
//! messages never leak depth. [`MeteredAddr`] sends through the wrapper with the same method
//! names as `Addr`, and [`metered!`](crate::metered) writes the forwarding handler for each
//! (actor, message) pair.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix::dev::{Request, ToEnvelope};
use actix::prelude::*;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::{ActorLabel, ActorMessageLabel, Metrics, metrics};

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
    pub(super) fn resolve(m: &Metrics, actor: &'static str) -> ActorHandles {
        let label = ActorLabel { actor };
        ActorHandles {
            depth: m.mailbox_depth.get_or_create(&label).clone(),
            sent: Arc::default(),
            wait: m.actor_wait.get_or_create(&label).clone(),
            handle: m.actor_handle.get_or_create(&label).clone(),
        }
    }

    /// The handles of `actor`: cached for the names in [`ACTORS`](super::ACTORS), looked up
    /// otherwise.
    fn of(actor: &'static str) -> Cow<'static, ActorHandles> {
        let m = metrics();
        match m.actor_handles(actor) {
            Some(handles) => Cow::Borrowed(handles),
            None => Cow::Owned(ActorHandles::resolve(m, actor)),
        }
    }
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
