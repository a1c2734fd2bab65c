//! Where the recovery state lives: in memory (single node) or in Redis (cluster), behind one
//! trait.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard_protocol::offset::Offset;

use super::log::RecoveryLog;
use crate::keys::Channel;
use crate::ports::recovery::{Recorded, SavedSession};
use crate::store::StoreFuture;

/// Recovery operations.
pub trait RecoveryStore: Send + Sync + 'static {
    /// Keep a session for `ttl` under `pid`.
    fn save(&self, pid: String, session: SavedSession, ttl: Duration) -> StoreFuture<()>;
    /// Take a kept session of `user`, once (another user's stays).
    fn take(&self, pid: String, user: String) -> StoreFuture<Option<SavedSession>>;
    /// The events of `streams` after `after`; `None` when some are gone.
    fn replay(&self, streams: Vec<Channel>, after: Offset) -> StoreFuture<Option<Vec<Recorded>>>;
    /// Single node: record an event (cluster nodes record with the publish).
    fn record(&self, _stream: Channel, _event: Recorded, _live: bool) {}
    /// Drop what is past the window.
    fn trim(&self) {}
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The single-node store.
pub struct MemoryRecoveryStore {
    log: Mutex<RecoveryLog>,
}

impl MemoryRecoveryStore {
    /// Events and sessions kept `window`, at most `max_len` events per channel.
    pub fn new(window: Duration, max_len: usize) -> Self {
        MemoryRecoveryStore {
            log: Mutex::new(RecoveryLog::new(window.as_millis() as u64, max_len)),
        }
    }

    fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut RecoveryLog) -> T) -> StoreFuture<T> {
        let out = f(&mut self.log());
        Box::pin(async move { Ok(out) })
    }

    fn log(&self) -> std::sync::MutexGuard<'_, RecoveryLog> {
        // Only the Recovery actor calls it: never contended; a poisoned log is still a log.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RecoveryStore for MemoryRecoveryStore {
    fn save(&self, pid: String, session: SavedSession, ttl: Duration) -> StoreFuture<()> {
        self.with(move |log| log.save(pid, session, now_ms(), ttl.as_millis() as u64))
    }

    fn take(&self, pid: String, user: String) -> StoreFuture<Option<SavedSession>> {
        self.with(move |log| log.take(&pid, &user, now_ms()))
    }

    fn replay(&self, streams: Vec<Channel>, after: Offset) -> StoreFuture<Option<Vec<Recorded>>> {
        self.with(move |log| log.replay(&streams, after, now_ms()))
    }

    fn record(&self, stream: Channel, event: Recorded, live: bool) {
        self.log().append(stream, event, live);
    }

    fn trim(&self) {
        self.log().trim(now_ms());
    }
}

/// A store shared by reference (tests and the actor).
pub type SharedRecoveryStore = Arc<dyn RecoveryStore>;
