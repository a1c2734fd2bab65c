//! What the Journal accepts: durable message stores and syncs (answered once committed or
//! read), fire-and-forget log rows, durable room memberships, the webhook outbox, and
//! maintenance requests.
//!
//! # Layout
//! - [`JournalError`], the one error of every request.
//! - Messages: [`StoreMessage`], [`SyncMessages`].
//! - Log rows (fire-and-forget, batched): [`ConnectionOpened`], [`ConnectionClosed`],
//!   [`PresenceLogged`], [`WebhookEvent`].
//! - Memberships: [`AddMembership`], [`RemoveMembership`], [`MembershipsOf`], [`MembersOf`].
//! - Webhook delivery: [`AcquireWebhookLease`], [`TakeWebhooks`], [`AckWebhooks`],
//!   [`FailWebhooks`], [`DeadLetterWebhooks`], [`WebhookDepth`]; the event types in
//!   [`event_types`].
//! - Maintenance: [`CloseStaleConnections`], [`RetentionSweep`], [`CheckDatabase`],
//!   [`JournalStats`], [`Flush`].
//!
//! With webhooks on (`JournalConfig::webhooks`), every request that writes a row the webhooks
//! describe also writes its event to the outbox, in the same transaction: if the row is not
//! written (dropped, refused, rolled back), neither is the event, and the other way round.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use serde::Serialize;

use crate::ids::{NodeId, Room, SocketId, UserId};

/// The `type` of every webhook event the Journal writes (and the usual ones of
/// [`WebhookEvent`]).
pub mod event_types {
    /// A socket authenticated: `{socketId, userId, deviceId, nodeId, ip}` (`ip` null when
    /// unknown).
    pub const SOCKET_CONNECTED: &str = "socket.connected";
    /// A socket went away: `{socketId, userId, nodeId, reason}`. Also written for every row
    /// closed by `CloseStaleConnections` (reason `node_lost`).
    pub const SOCKET_DISCONNECTED: &str = "socket.disconnected";
    /// A user's presence went online: `{userId, deviceId}` (`deviceId` may be null).
    pub const USER_ONLINE: &str = "user.online";
    /// A user's presence went offline: `{userId, deviceId}`.
    pub const USER_OFFLINE: &str = "user.offline";
    /// A durable message was committed: `{messageId, from, to, text, createdAt}`.
    pub const MESSAGE_STORED: &str = "message.stored";
    /// A user joined a room: `{room, userId, source}` (`source` is `api` for durable
    /// memberships; others send their own through `WebhookEvent`).
    pub const ROOM_JOINED: &str = "room.joined";
    /// A user left a room: `{room, userId, source}`.
    pub const ROOM_LEFT: &str = "room.left";
}

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
    /// The commit was sent but its outcome is unknown (the database did not answer in time,
    /// or the connection broke during COMMIT): the message may or may not be stored. The
    /// session answers `in_doubt`; a retry with the same `clientMsgId` is stored at most once.
    #[error("commit outcome unknown: {0}")]
    InDoubt(String),
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

    /// Whether the outcome of a commit is unknown.
    pub fn is_in_doubt(&self) -> bool {
        matches!(self, JournalError::InDoubt(_))
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
    /// A retry: the row was stored earlier under the same `clientMsgId` (this is that row).
    #[serde(skip)]
    pub duplicate: bool,
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
    /// The client's id for the send, unique per sender.
    pub client_msg_id: Option<String>,
    /// The send's span: the commit joins its trace (disabled when traces are off).
    pub span: tracing::Span,
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
    /// The socket's user (for the `socket.disconnected` event; the row already has it).
    pub user_id: UserId,
    /// This node's id (likewise).
    pub server_instance: NodeId,
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

/// A webhook event with no row of its own (e.g. a client joining a room): written to the
/// outbox with the log batches (fire-and-forget, counted against the same queue limit), and
/// only when webhooks are on.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct WebhookEvent {
    /// The event's `type` (at most 64 bytes, no control characters; others are dropped with
    /// a warning), e.g. [`event_types::ROOM_JOINED`].
    pub event_type: Cow<'static, str>,
    /// The event's fields: an object's members become the event's fields (next to `id`,
    /// `type` and `at`, which cannot be overridden); any other value becomes `data`.
    pub data: serde_json::Value,
}

/// Add `user` to `room` durably; answers `true` if the membership is new, `false` if it
/// already existed. Ids are refused (never cleaned) with [`JournalError::Invalid`] when empty,
/// over 255 bytes or holding control characters. A new membership writes `room.joined`
/// (`source: "api"`) in the same transaction.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<bool, JournalError>")]
pub struct AddMembership {
    /// The room.
    pub room: Room,
    /// The member.
    pub user: UserId,
}

/// Remove `user` from `room`; answers whether the membership existed. Ids are checked as for
/// [`AddMembership`]; a removal writes `room.left` in the same transaction.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<bool, JournalError>")]
pub struct RemoveMembership {
    /// The room.
    pub room: Room,
    /// The member.
    pub user: UserId,
}

/// The rooms `user` is a durable member of, sorted (by bytes).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<Room>, JournalError>")]
pub struct MembershipsOf {
    /// Whose memberships.
    pub user: UserId,
}

/// The durable members of `room`, sorted (by bytes).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<UserId>, JournalError>")]
pub struct MembersOf {
    /// Which room.
    pub room: Room,
}

/// Take or extend the webhook delivery lease: answers `true` if `holder` holds it now (it was
/// free, expired, or already `holder`'s, which extends it to `ttl` from now). Atomic across
/// nodes: of two nodes asking at once, one wins. Expiry is judged by the asking node's clock,
/// so nodes' clocks must agree to well within `ttl`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<bool, JournalError>")]
pub struct AcquireWebhookLease {
    /// The node asking.
    pub holder: NodeId,
    /// How long the lease lasts unless extended.
    pub ttl: Duration,
}

/// The oldest pending outbox events, ascending by id, at most `limit`. Stops before the first
/// event written less than `settled_for` ago, so that events whose transactions commit out of
/// id order (other nodes, the message transaction) are still delivered in id order. The window
/// must cover the longest such transaction plus the clock difference between nodes.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<OutboxEvent>, JournalError>")]
pub struct TakeWebhooks {
    /// Most events to answer.
    pub limit: usize,
    /// How old the newest answered event must at least be (a second or two is plenty).
    pub settled_for: Duration,
}

/// Delivered: delete these outbox rows; answers how many there were.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<u64, JournalError>")]
pub struct AckWebhooks {
    /// [`OutboxEvent::id`]s.
    pub ids: Vec<i64>,
}

/// A delivery attempt failed: count it on these rows; answers how many were found.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<u64, JournalError>")]
pub struct FailWebhooks {
    /// [`OutboxEvent::id`]s.
    pub ids: Vec<i64>,
}

/// Give up on these rows: status `dead` (no longer taken, deleted by the retention sweep after
/// the connections' retention); answers how many were found.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<u64, JournalError>")]
pub struct DeadLetterWebhooks {
    /// [`OutboxEvent::id`]s.
    pub ids: Vec<i64>,
}

/// How many outbox events are pending (for `webhook_outbox_depth`).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<u64, JournalError>")]
pub struct WebhookDepth;

/// One pending outbox event, as [`TakeWebhooks`] answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// The row id: the delivery order, and what [`AckWebhooks`] and friends name.
    pub id: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the row was written.
    pub created_at: SystemTime,
    /// The event as receivers get it: `{"id", "type", "at", …fields}`.
    pub event: serde_json::Value,
}

/// Close every `socket_connections` row that `server_instance` left open (at a node's start
/// with its own id, and by the cluster sweep for dead nodes, reason [`NODE_LOST`]); answers how
/// many rows were closed. Rows still queued in this Journal are not affected. With webhooks on,
/// each closed row gets its `socket.disconnected` event in the same transaction.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<u64, JournalError>")]
pub struct CloseStaleConnections {
    /// The node whose rows to close.
    pub server_instance: NodeId,
    /// Their `disconnect_reason`.
    pub reason: String,
}

/// Delete closed connections and presence rows past their age now; answers the two counts.
/// Dead webhook outbox rows older than `connections_older_than` go too (not counted here).
/// The Journal also runs this every `JournalConfig::sweep_interval`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(u64, u64, u64), JournalError>")]
pub struct RetentionSweep {
    /// Delete `socket_connections` rows disconnected longer ago than this.
    pub connections_older_than: Duration,
    /// Delete `presence_logs` rows older than this.
    pub presence_older_than: Duration,
    /// Delete `messages` older than this (`None`: keep every message).
    pub messages_older_than: Option<Duration>,
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
