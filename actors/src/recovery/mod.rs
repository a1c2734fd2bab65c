//! The Recovery actor: connection state recovery, socket.io-client's own mechanism.
//!
//! A socket that goes away for a reason it did not choose (its transport closed, a ping
//! timeout, the node shutting down) leaves its state — user, socket id, rooms, watches —
//! under a private `pid` for the recovery window; every recoverable event (non-volatile
//! deliveries: messages, room messages, presence notifications, server-API emits) is recorded
//! per channel with its offset. A client that comes back within the window with `{pid,
//! offset}` gets its state back and every event it missed, in order, on whichever node it
//! lands. Single-node mode keeps all of it in memory ([`store::MemoryRecoveryStore`]; the
//! registry sends the events as it delivers them); cluster mode in Redis
//! ([`redis_store::RedisRecoveryStore`]; the RedisBridge records each event in the same script
//! that publishes it).
//!
//! # Layout
//! - this file: the actor shell.
//! - [`log`]: the pure in-memory log of events and sessions.
//! - [`store`]: the [`store::RecoveryStore`] trait and the memory store; [`redis_store`].
//! - [`crate::ports::recovery`]: the messages it accepts.

pub mod log;
pub mod redis_store;
pub mod store;

use std::time::Duration;

use actix::prelude::*;
use tracing::debug;

use crate::metrics::MeteredActor;
use crate::ports::recovery::{Record, Recorded, Replay, SaveSession, TakeSession};
use crate::store::StoreError;
use store::SharedRecoveryStore;

/// How often the in-memory store drops what is past the window.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// The Recovery actor (see the module docs).
pub struct Recovery {
    store: SharedRecoveryStore,
}

impl Recovery {
    /// A recovery actor over `store`.
    pub fn new(store: SharedRecoveryStore) -> Self {
        Recovery { store }
    }
}

impl Actor for Recovery {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
        ctx.run_interval(TRIM_EVERY, |act, _ctx| act.store.trim());
    }
}

impl Supervised for Recovery {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::metrics::restarted("recovery");
    }
}

impl Handler<SaveSession> for Recovery {
    type Result = ();

    fn handle(&mut self, msg: SaveSession, ctx: &mut Context<Self>) {
        let save = self
            .store
            .save(msg.pid, msg.session, Duration::from_secs(msg.ttl_secs));
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(save).map(|result, _act, _ctx| {
                if let Err(err) = result {
                    debug!(%err, "recovery state not saved");
                }
            }),
        );
    }
}

impl Handler<TakeSession> for Recovery {
    type Result = ResponseFuture<Result<Option<crate::ports::recovery::SavedSession>, StoreError>>;

    fn handle(&mut self, msg: TakeSession, _ctx: &mut Context<Self>) -> Self::Result {
        self.store.take(msg.pid, msg.user)
    }
}

impl Handler<Record> for Recovery {
    type Result = ();

    fn handle(&mut self, msg: Record, _ctx: &mut Context<Self>) {
        self.store.record(msg.stream, msg.event, msg.live);
    }
}

impl Handler<Replay> for Recovery {
    type Result = ResponseFuture<Result<Option<Vec<Recorded>>, StoreError>>;

    fn handle(&mut self, msg: Replay, _ctx: &mut Context<Self>) -> Self::Result {
        self.store.replay(msg.streams, msg.after)
    }
}

impl MeteredActor for Recovery {
    const NAME: &'static str = "recovery";
}

crate::metered!(Recovery: SaveSession, TakeSession, Record, Replay);
