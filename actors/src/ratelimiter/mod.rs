//! The RateLimiter actor: per-user limits that hold across all of a user's sockets.
//!
//! Single-node mode keeps one exact sliding window per user in memory; idle windows are dropped
//! periodically so memory follows active users, not all users ever seen.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::presence::UserId;
use crate::ratelimit::SlidingWindow;

/// How often idle windows are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Count one `message:send` of `user`; `Err(retry_after)` when over the limit.
#[derive(Message)]
#[rtype(result = "Result<(), Duration>")]
pub struct CheckMessage {
    /// The sender.
    pub user: UserId,
}

/// The RateLimiter actor (see the module docs).
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    users: HashMap<UserId, SlidingWindow>,
}

impl RateLimiter {
    /// At most `limit` messages per `window` per user.
    pub fn new(limit: u32, window: Duration) -> Self {
        RateLimiter {
            limit,
            window,
            users: HashMap::new(),
        }
    }
}

impl Actor for RateLimiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(PRUNE_EVERY, |act, _ctx| {
            let now = Instant::now();
            act.users.retain(|_, w| !w.is_idle(now));
        });
    }
}

impl Handler<CheckMessage> for RateLimiter {
    type Result = Result<(), Duration>;

    fn handle(&mut self, msg: CheckMessage, _ctx: &mut Context<Self>) -> Self::Result {
        let (limit, window) = (self.limit, self.window);
        self.users
            .entry(msg.user)
            .or_insert_with(|| SlidingWindow::new(limit, window))
            .try_hit(Instant::now())
    }
}
