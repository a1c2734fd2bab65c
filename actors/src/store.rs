//! What the presence and rate-limit stores share: the error a store answers when it cannot, and
//! the Redis settings, pool and command counter of cluster mode.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::connector::Connector;
use crate::keys::Keys;
use crate::metrics::redis_command;

/// A store operation in flight.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// A store that cannot answer (Redis down or too slow).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct StoreError(pub String);

impl From<redis::RedisError> for StoreError {
    fn from(err: redis::RedisError) -> Self {
        StoreError(err.to_string())
    }
}

impl From<redis::ParsingError> for StoreError {
    fn from(err: redis::ParsingError) -> Self {
        StoreError(err.to_string())
    }
}

impl<E: std::fmt::Display + std::fmt::Debug + std::error::Error + 'static> From<bb8::RunError<E>>
    for StoreError
{
    fn from(err: bb8::RunError<E>) -> Self {
        StoreError(err.to_string())
    }
}

/// Redis connection settings shared by every Redis-backed actor.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://…` URL of the one server (what [`pool`] connects to; a node started with a
    /// [`Connector`] uses that instead).
    pub url: String,
    /// Key and channel names.
    pub keys: Keys,
    /// Signs and checks cluster frames; `None` (no `SWITCHBOARD_CLUSTER_KEY`): frames are
    /// neither signed nor checked.
    pub cluster_keys: Option<std::sync::Arc<crate::signing::ClusterKeys>>,
}

/// The pool the Redis-backed stores share (its connections come from a [`Connector`]).
pub type RedisPool = bb8::Pool<Connector>;

/// Build a pool on the one plain server at `settings.url`.
pub fn pool(settings: &RedisSettings) -> Result<RedisPool, redis::RedisError> {
    Ok(pool_on(Connector::single(&settings.url, None)?))
}

/// Build the pool on `connector`; it connects on demand, so a node starts while Redis is down.
pub fn pool_on(connector: Connector) -> RedisPool {
    bb8::Pool::builder()
        .max_size(16)
        .connection_timeout(Duration::from_secs(2))
        .min_idle(Some(0))
        .build_unchecked(connector)
}

/// A Redis command, counted in `redis_commands_total`.
pub fn cmd(name: &'static str) -> redis::Cmd {
    redis_command(name);
    redis::cmd(name)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Microseconds since the Unix epoch (cluster frame timestamps).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
