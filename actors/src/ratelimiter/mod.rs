//! The RateLimiter actor: per-user limits that hold across all of a user's sockets.
//!
//! Single-node mode keeps one exact sliding window per user in memory (idle windows are dropped
//! periodically so memory follows active users); cluster mode keeps the window in Redis, one Lua
//! script per hit, so a user with sockets on several nodes gets the limit in total.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bb8_redis::RedisConnectionManager;

use crate::bridge::RedisSettings;
use crate::presence::{StoreError, UserId};
use crate::ratelimit::SlidingWindow;

/// How often idle in-memory windows are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A verdict in flight: `Ok(Ok(()))` allowed, `Ok(Err(retry_after))` refused.
pub type LimitFuture =
    Pin<Box<dyn Future<Output = Result<Result<(), Duration>, StoreError>> + Send>>;

/// Where the windows live.
pub trait RateStore: Send + Sync + 'static {
    /// Count one hit of `user`.
    fn hit(&self, user: UserId) -> LimitFuture;
    /// Drop state that no longer matters (idle windows).
    fn prune(&self) {}
}

/// Windows in memory (single node).
pub struct MemoryRateStore {
    limit: u32,
    window: Duration,
    users: Mutex<HashMap<UserId, SlidingWindow>>,
}

impl MemoryRateStore {
    /// At most `limit` hits per `window` per user.
    pub fn new(limit: u32, window: Duration) -> Self {
        MemoryRateStore {
            limit,
            window,
            users: Mutex::new(HashMap::new()),
        }
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, SlidingWindow>> {
        // Uncontended (one actor); a poisoned map is still a valid map.
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RateStore for MemoryRateStore {
    fn hit(&self, user: UserId) -> LimitFuture {
        let (limit, window) = (self.limit, self.window);
        let verdict = self
            .users()
            .entry(user)
            .or_insert_with(|| SlidingWindow::new(limit, window))
            .try_hit(Instant::now());
        Box::pin(async move { Ok(verdict) })
    }

    fn prune(&self) {
        let now = Instant::now();
        self.users().retain(|_, w| !w.is_idle(now));
    }
}

/// Windows in Redis (cluster).
pub struct RedisRateStore {
    pool: bb8::Pool<RedisConnectionManager>,
    settings: RedisSettings,
    limit: u32,
    window: Duration,
    script: Arc<redis::Script>,
}

impl RedisRateStore {
    /// At most `limit` hits per `window` per user, cluster-wide.
    pub fn new(
        pool: bb8::Pool<RedisConnectionManager>,
        settings: RedisSettings,
        limit: u32,
        window: Duration,
    ) -> Self {
        RedisRateStore {
            pool,
            settings,
            limit,
            window,
            script: Arc::new(redis::Script::new(include_str!("sliding_window.lua"))),
        }
    }
}

impl RateStore for RedisRateStore {
    fn hit(&self, user: UserId) -> LimitFuture {
        let pool = self.pool.clone();
        let key = self.settings.key(&format!("rate_limit:{user}:messages"));
        let script = self.script.clone();
        let (limit, window) = (self.limit, self.window.as_millis() as u64);
        Box::pin(async move {
            let mut conn = pool.get().await?;
            crate::metrics::redis_command("EVALSHA");
            let retry_ms: i64 = script
                .key(key)
                .arg(window)
                .arg(limit)
                .arg(crate::transport::random_id())
                .invoke_async(&mut *conn)
                .await?;
            Ok(if retry_ms <= 0 {
                Ok(())
            } else {
                Err(Duration::from_millis(retry_ms as u64))
            })
        })
    }
}

/// Count one `message:send` of `user`: `Ok(Err(retry_after))` when over the limit,
/// `Err` when the store cannot answer.
#[derive(Message)]
#[rtype(result = "Result<Result<(), Duration>, StoreError>")]
pub struct CheckMessage {
    /// The sender.
    pub user: UserId,
}

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
        self.store.hit(msg.user)
    }
}

impl crate::metrics::MeteredActor for RateLimiter {
    const NAME: &'static str = "rate_limiter";
}

crate::metered!(RateLimiter: CheckMessage);
