//! The RateLimiter actor: per-user limits that hold across all of a user's sockets.
//!
//! Single-node mode keeps one exact sliding window per user in memory (idle windows are dropped
//! periodically so memory follows active users); cluster mode keeps the window in Redis, one Lua
//! script per hit, so a user with sockets on several nodes gets the limit in total.
//!
//! # Layout
//! - this file: the actor shell.
//! - [`crate::ratelimit`]: the pure windows (shared with the per-socket token bucket).
//! - [`store`]: the [`RateStore`] trait, the in-memory and the Redis store
//!   (`sliding_window.lua`).
//! - [`crate::ports::ratelimiter`]: the message it accepts.

pub mod store;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::metrics::MeteredActor;
use crate::ports::ratelimiter::CheckMessage;
use crate::store::StoreError;
pub use store::{LimitFuture, MemoryRateStore, RateStore, RedisRateStore};

/// How often idle in-memory windows are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The RateLimiter actor (see the module docs).
pub struct RateLimiter {
    store: Arc<dyn RateStore>,
}

impl RateLimiter {
    /// A limiter over `store`.
    pub fn new(store: Arc<dyn RateStore>) -> Self {
        RateLimiter { store }
    }

    /// The single-node limiter: at most `limit` messages per `window` per user.
    pub fn in_memory(limit: u32, window: Duration) -> Self {
        RateLimiter::new(Arc::new(MemoryRateStore::new(limit, window)))
    }
}

impl Actor for RateLimiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(PRUNE_EVERY, |act, _ctx| act.store.prune());
    }
}

impl Supervised for RateLimiter {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::metrics::restarted("rate_limiter");
    }
}

impl Handler<CheckMessage> for RateLimiter {
    type Result = ResponseFuture<Result<Result<(), Duration>, StoreError>>;

    fn handle(&mut self, msg: CheckMessage, _ctx: &mut Context<Self>) -> Self::Result {
        self.store.hit(msg.user, msg.bytes)
    }
}

impl MeteredActor for RateLimiter {
    const NAME: &'static str = "rate_limiter";
}

crate::metered!(RateLimiter: CheckMessage);
