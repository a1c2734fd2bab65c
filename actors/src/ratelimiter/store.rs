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
    /// Count one hit of `user` carrying `bytes` (against the daily byte quota).
    fn hit(&self, user: UserId, bytes: u64) -> LimitFuture;
    /// Drop state that no longer matters (idle windows).
    fn prune(&self) {}
}

const DAY_MS: u64 = 24 * 3600 * 1000;

/// The UTC day of `unix_ms` and the time left in it.
fn day_of(unix_ms: u64) -> (u64, Duration) {
    (
        unix_ms / DAY_MS,
        Duration::from_millis(DAY_MS - unix_ms % DAY_MS),
    )
}

/// Bytes a user stored today, against the daily quota (`quota` 0: no quota). Refused hits
/// change nothing.
#[derive(Debug, Default)]
struct DailyBytes {
    day: u64,
    used: u64,
}

impl DailyBytes {
    fn try_add(&mut self, bytes: u64, quota: u64, unix_ms: u64) -> Result<(), Duration> {
        let (day, left) = day_of(unix_ms);
        if day != self.day {
            *self = DailyBytes { day, used: 0 };
        }
        if quota > 0 && self.used.saturating_add(bytes) > quota {
            return Err(left);
        }
        self.used = self.used.saturating_add(bytes);
        Ok(())
    }
}

/// Windows in memory (single node).
pub struct MemoryRateStore {
    limit: u32,
    window: Duration,
    daily_bytes: u64,
    users: Mutex<HashMap<UserId, (SlidingWindow, DailyBytes)>>,
}

impl MemoryRateStore {
    /// At most `limit` hits per `window` per user.
    pub fn new(limit: u32, window: Duration) -> Self {
        MemoryRateStore {
            limit,
            window,
            daily_bytes: 0,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// And at most `bytes` a day per user (0: no quota).
    pub fn with_daily_bytes(mut self, bytes: u64) -> Self {
        self.daily_bytes = bytes;
        self
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, (SlidingWindow, DailyBytes)>> {
        // Uncontended (one actor); a poisoned map is still a valid map.
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RateStore for MemoryRateStore {
    fn hit(&self, user: UserId, bytes: u64) -> LimitFuture {
        let (limit, window, quota) = (self.limit, self.window, self.daily_bytes);
        let mut users = self.users();
        let (rate, daily) = users
            .entry(user)
            .or_insert_with(|| (SlidingWindow::new(limit, window), DailyBytes::default()));
        // The quota first: a hit it refuses must not use up the window.
        let verdict = daily.try_add(bytes, quota, unix_ms()).and_then(|()| {
            rate.try_hit(Instant::now()).inspect_err(|_| {
                // The window refused the hit: its bytes were not stored.
                daily.used = daily.used.saturating_sub(bytes);
            })
        });
        Box::pin(async move { Ok(verdict) })
    }

    fn prune(&self) {
        let now = Instant::now();
        let today = day_of(unix_ms()).0;
        self.users()
            .retain(|_, (w, d)| !w.is_idle(now) || (d.day == today && d.used > 0));
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Windows in Redis (cluster).
pub struct RedisRateStore {
    pool: RedisPool,
    keys: Keys,
    limit: u32,
    window: Duration,
    daily_bytes: u64,
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
            daily_bytes: 0,
            script: Arc::new(redis::Script::new(include_str!("sliding_window.lua"))),
        }
    }

    /// And at most `bytes` a day per user, cluster-wide (0: no quota).
    pub fn with_daily_bytes(mut self, bytes: u64) -> Self {
        self.daily_bytes = bytes;
        self
    }
}

impl RateStore for RedisRateStore {
    fn hit(&self, user: UserId, bytes: u64) -> LimitFuture {
        let pool = self.pool.clone();
        let key = self.keys.rate_limit_messages(&user);
        // Today by this node's clock: a few seconds of skew at midnight only moves which
        // day a message counts against.
        let (day, left) = day_of(unix_ms());
        let bytes_key = self.keys.rate_limit_bytes(&user, day);
        let script = self.script.clone();
        let (limit, window) = (self.limit, self.window.as_millis() as u64);
        let quota = self.daily_bytes;
        Box::pin(async move {
            let mut conn = pool.get().await?;
            crate::metrics::redis_command("EVALSHA");
            let retry_ms: i64 = script
                .key(key)
                .key(bytes_key)
                .arg(window)
                .arg(limit)
                .arg(random_id())
                .arg(quota)
                .arg(bytes)
                .arg(left.as_millis() as u64)
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
