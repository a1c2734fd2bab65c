//! Where the per-user windows live: in memory (single node) or in Redis (cluster), behind
//! one trait that both pass the same behaviour suite (`actors/tests/stores.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ids::{UserId, random_id};
use crate::keys::Keys;
use crate::ratelimit::SlidingWindow;
use crate::store::{RedisPool, RedisSettings, StoreError};

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
    pool: RedisPool,
    keys: Keys,
    limit: u32,
    window: Duration,
    script: Arc<redis::Script>,
}

impl RedisRateStore {
    /// At most `limit` hits per `window` per user, cluster-wide.
    pub fn new(pool: RedisPool, settings: &RedisSettings, limit: u32, window: Duration) -> Self {
        RedisRateStore {
            pool,
            keys: settings.keys.clone(),
            limit,
            window,
            script: Arc::new(redis::Script::new(include_str!("sliding_window.lua"))),
        }
    }
}

impl RateStore for RedisRateStore {
    fn hit(&self, user: UserId) -> LimitFuture {
        let pool = self.pool.clone();
        let key = self.keys.rate_limit_messages(&user);
        let script = self.script.clone();
        let (limit, window) = (self.limit, self.window.as_millis() as u64);
        Box::pin(async move {
            let mut conn = pool.get().await?;
            crate::metrics::redis_command("EVALSHA");
            let retry_ms: i64 = script
                .key(key)
                .arg(window)
                .arg(limit)
                .arg(random_id())
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
