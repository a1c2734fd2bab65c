//! What the Journal accepts: durable message stores and syncs (answered once committed or
//! read), fire-and-forget log rows, and maintenance requests.

use std::time::{Duration, SystemTime};

use actix::prelude::*;
use serde::Serialize;

use crate::ids::{NodeId, SocketId, UserId};

/// The `disconnect_reason` of rows closed by [`CloseStaleConnections`] for a lost node.
pub const NODE_LOST: &str = "node_lost";

/// Why a Journal request failed. The variants are stable; callers branch on them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The database cannot be reached, did not answer in time, or the journal's backlog is
    /// full. Retryable: the session answers `service_unavailable`.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused a statement (a bug or a schema mismatch, not an outage).
    #[error("database error: {0}")]
    Database(String),
    /// The request cannot be stored as given (e.g. a user id over 255 characters).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The database URL is unusable (unparsable, or neither `sqlite:` nor `postgres:`).
    #[error("invalid database url: {0}")]
    Config(String),
    /// Applying the migrations failed at startup.
    #[error("database migration failed: {0}")]
    Migration(String),
}

impl JournalError {
    /// Whether retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, JournalError::Unavailable(_))
    }
}

/// A stored direct message, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    /// Increasing id: the order of commit.
    pub message_id: u64,
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Sanitised text.
    pub text: String,
    /// Commit time, ms since the Unix epoch.
    pub created_at: u64,
}

/// Store a message; answers once its row is committed.
#[derive(Message)]
#[rtype(result = "Result<StoredMessage, JournalError>")]
pub struct StoreMessage {
    /// Sender.
    pub from: UserId,
    /// Recipient.
    pub to: UserId,
    /// Text; control characters other than `\n` and `\t` are removed.
    pub text: String,
}

/// Messages to or from `user` with an id above `after`, ascending.
#[derive(Message)]
#[rtype(result = "Result<SyncPage, JournalError>")]
pub struct SyncMessages {
    /// Whose messages.
    pub user: UserId,
    /// Exclusive lower bound on the id.
    pub after: u64,
    /// Page size.
    pub limit: usize,
}

/// One page of `message:sync`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncPage {
    /// Ascending by id.
    pub messages: Vec<StoredMessage>,
    /// More messages follow the last one.
    pub has_more: bool,
}

/// A socket authenticated: log a `socket_connections` row (batched, fire-and-forget).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ConnectionOpened {
    /// The Socket.IO socket id; [`ConnectionClosed`] names the row by it.
    pub socket_id: SocketId,
    /// The JWT subject.
    pub user_id: UserId,
    /// The client's device id.
    pub device_id: String,
    /// This node's id.
    pub server_instance: NodeId,
    /// The peer address (empty when unknown).
    pub ip_address: String,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// When the socket authenticated.
    pub connected_at: SystemTime,
}

/// A socket went away: close its row (batched, fire-and-forget; works even while the
/// matching [`ConnectionOpened`] is still queued).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ConnectionClosed {
    /// The socket id given to [`ConnectionOpened`].
    pub socket_id: SocketId,
    /// Why (a `CloseReason` name such as `client_disconnect` or `server_shutdown`).
    pub reason: String,
    /// Events the server sent to the socket.
    pub messages_sent: u32,
    /// Events the socket sent.
    pub messages_received: u32,
    /// When it went away.
    pub disconnected_at: SystemTime,
}

/// A presence transition: log a `presence_logs` row (batched, fire-and-forget).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PresenceLogged {
    /// Whose presence.
    pub user_id: UserId,
    /// `online`, `away` or `offline`.
    pub status: String,
    /// The device that caused it, if one did.
    pub device_id: Option<String>,
    /// When.
    pub at: SystemTime,
}

/// Close every `socket_connections` row that `server_instance` left open (at a node's start
/// with its own id, and by the cluster sweep for dead nodes, reason [`NODE_LOST`]); answers how
/// many rows were closed. Rows still queued in this Journal are not affected.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<u64, JournalError>")]
pub struct CloseStaleConnections {
    /// The node whose rows to close.
    pub server_instance: NodeId,
    /// Their `disconnect_reason`.
    pub reason: String,
}

/// Delete closed connections and presence rows past their age now; answers the two counts.
/// The Journal also runs this every [`JournalConfig::sweep_interval`].
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(u64, u64), JournalError>")]
pub struct RetentionSweep {
    /// Delete `socket_connections` rows disconnected longer ago than this.
    pub connections_older_than: Duration,
    /// Delete `presence_logs` rows older than this.
    pub presence_older_than: Duration,
}

/// A cheap round trip to the database (for `/health`).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), JournalError>")]
pub struct CheckDatabase;

/// Read the Journal's counters (answered with [`Stats`]).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Stats")]
pub struct JournalStats;

/// Write every log row queued so far, now (graceful shutdown); also starts the pending
/// message transaction at once. Fails if a batch fails.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), JournalError>")]
pub struct Flush;

/// The Journal's counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Log rows queued, plus those in the batch being written.
    pub queue_depth: usize,
    /// Log rows dropped: queue full, or refused by the database.
    pub dropped: u64,
    /// Log batches committed.
    pub flushes: u64,
    /// Log batches that failed (and were retried).
    pub failed_flushes: u64,
    /// How long the last log batch took, committed or not, in ms.
    pub last_flush_ms: u64,
    /// Message transactions committed (group commits).
    pub message_batches: u64,
    /// Messages committed.
    pub messages_stored: u64,
    /// Message stores waiting for a transaction (not counting the one being committed).
    pub pending_messages: usize,
}
