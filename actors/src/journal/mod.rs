//! The Journal actor: the node's only writer to the database (SQLite or PostgreSQL, sea-orm).
//!
//! It owns these tables (created by the `migration` crate):
//! - `messages`: durable direct messages. [`StoreMessage`] is answered only once its row is
//!   committed, with the row's id, which is the [`SyncMessages`] cursor. Stores that arrive
//!   within [`JournalConfig::message_batch_window`] share one transaction (group commit), and
//!   while one transaction is out the next group gathers, so the database sees a handful of
//!   transactions per second rather than one per message.
//! - `socket_connections` and `presence_logs`: fire-and-forget log rows ([`ConnectionOpened`],
//!   [`ConnectionClosed`], [`PresenceLogged`], sent with `do_send`). They wait in a bounded
//!   queue and are written in batches, at most one batch at a time, in arrival order. Past
//!   [`JournalConfig::queue_limit`] rows new ones are dropped and counted, so an outage costs
//!   log rows, never memory.
//! - `room_memberships`: the server API's durable memberships ([`AddMembership`] …), each
//!   request one short transaction, answered once committed.
//! - `webhook_outbox` and `webhook_lease`: with [`JournalConfig::webhooks`] on, every row
//!   above that a webhook describes (a connection opened or closed, a user online or offline,
//!   a message stored, a membership added or removed) carries its event, which is written in
//!   the same transaction, so a dropped, refused or rolled-back row takes its event with it.
//!   [`WebhookEvent`]s of other actors travel with the log rows. The deliverer (elsewhere)
//!   takes, acknowledges and retries events through [`TakeWebhooks`] and friends, holding
//!   [`AcquireWebhookLease`] so one node delivers at a time.
//!
//! No handler waits for the database: every statement runs in a future spawned on the actor's
//! context and bounded by [`JournalConfig::db_timeout`]. While the database is down, stores
//! fail fast with [`JournalError::Unavailable`], log rows wait (up to the limit), and writes
//! resume by themselves when it returns.
//!
//! Every text column is cleaned of control characters (PostgreSQL refuses `\u0000`, and one
//! refused row would fail its whole batch) and cut to its column's length. Should the
//! database still refuse a batch, its rows are retried one by one and only the offending row
//! is dropped.
//!
//! # Layout
//! - this file: the actor shell (group commit, log batching, retries, sweeps).
//! - `rows`: the pure core (text cleaning, id checks, the bounded queue, batch planning).
//! - `outbox`: the pure side of the webhook outbox (events as JSON, the settle window).
//! - `store`: the SQL, one async function per operation.
//! - `error`: the classification of database errors into [`JournalError`].
//! - [`entities`]: the sea-orm entities of the tables.
//! - [`crate::ports::journal`]: the messages it accepts.

pub mod entities;
mod error;
mod outbox;
mod rows;
mod store;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use sea_orm::DatabaseConnection;
use sea_orm::prelude::DateTimeUtc;
use tokio::sync::oneshot;
use tracing::{Instrument, error, info, warn};
use uuid::Uuid;

use crate::ids::{Room, UserId};
use crate::metrics::metrics;
use crate::ports::journal::{
    AckWebhooks, AcquireWebhookLease, AddMembership, CheckDatabase, CloseStaleConnections,
    ConnectionClosed, ConnectionOpened, DeadLetterWebhooks, FailWebhooks, Flush, JournalError,
    JournalStats, MembersOf, MembershipsOf, OutboxEvent, PresenceLogged, RemoveMembership,
    RetentionSweep, Stats, StoreMessage, StoredMessage, SyncMessages, SyncPage, TakeWebhooks,
    WebhookDepth, WebhookEvent,
};
use crate::traces;
use entities::message;
use rows::{
    ClosedRow, LogPlan, LogQueue, LogRow, MessageBatch, NewMessage, OpenedRow, Outcome,
    PresenceRow, check_id, clean, limits,
};
use store::OutboxChange;

/// Longest a retention sweep may run before it is abandoned (and retried next interval).
const SWEEP_TIMEOUT: Duration = Duration::from_secs(600);
/// First wait before retrying a failed log flush; doubles up to [`JournalConfig::db_timeout`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Mailbox size: sessions `send` stores and syncs and wait for room.
const MAILBOX: usize = 4096;

/// Tuning of the Journal; the defaults suit a node with tens of thousands of sockets.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// Log rows per batch (default 500): a full batch is flushed at once.
    pub batch_size: usize,
    /// Longest a log row waits for a batch to fill (default 50 ms).
    pub flush_interval: Duration,
    /// Log rows held (queued plus being written) before new ones are dropped (default 10 000).
    pub queue_limit: usize,
    /// Longest a message store waits for others to share its transaction (default 5 ms;
    /// zero: commit at once, still grouping whatever arrives while a commit is out).
    pub message_batch_window: Duration,
    /// Most messages per transaction (default 256).
    pub message_batch_size: usize,
    /// Message stores waiting for a transaction before new ones fail `Unavailable`
    /// (default 10 000).
    pub message_queue_limit: usize,
    /// How long closed `socket_connections` rows are kept (default 7 days).
    pub retention_connections: Duration,
    /// How long `presence_logs` rows are kept (default 30 days).
    pub retention_presence: Duration,
    /// How long `messages` are kept (default `None`: for ever).
    pub retention_messages: Option<Duration>,
    /// How often the retention sweep runs (default 1 hour; the first run is one interval, at
    /// most a minute, after start).
    pub sweep_interval: Duration,
    /// Bound on connecting, acquiring a pooled connection and each operation (default 5 s).
    pub db_timeout: Duration,
    /// Pooled connections (default 10; an in-memory SQLite database always uses one).
    pub max_connections: u32,
    /// Write webhook events to `webhook_outbox`, each in its row's transaction (default false:
    /// no outbox rows at all; turn on when a webhook URL is configured).
    pub webhooks: bool,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            batch_size: 500,
            flush_interval: Duration::from_millis(50),
            queue_limit: 10_000,
            message_batch_window: Duration::from_millis(5),
            message_batch_size: 256,
            message_queue_limit: 10_000,
            retention_connections: Duration::from_secs(7 * 24 * 3600),
            retention_presence: Duration::from_secs(30 * 24 * 3600),
            retention_messages: None,
            sweep_interval: Duration::from_secs(3600),
            db_timeout: Duration::from_secs(5),
            max_connections: 10,
            webhooks: false,
        }
    }
}

/// A [`StoreMessage`] waiting for its transaction.
struct PendingStore {
    message: NewMessage,
    reply: oneshot::Sender<Result<StoredMessage, JournalError>>,
    /// The send's span (disabled when traces are off).
    span: tracing::Span,
}

/// The Journal actor (see the module docs).
pub struct Journal {
    db: DatabaseConnection,
    config: JournalConfig,
    /// Stores waiting for the next message transaction, in arrival order.
    pending: VecDeque<PendingStore>,
    /// The window timer of the next message transaction.
    store_timer: Option<SpawnHandle>,
    /// A message transaction is out; the next one waits for it (ids then commit in order).
    storing: bool,
    logs: LogQueue,
    /// [`Flush`] requests: answered once every row up to the sequence number is written.
    flush_waiters: Vec<(u64, oneshot::Sender<Result<(), JournalError>>)>,
    /// After a failed flush, no routine flush before this.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Rows still to write one per batch, after the database refused a batch.
    isolate: usize,
    /// The last push was dropped (so only the first drop of a run is logged).
    dropping: bool,
    sweeping: bool,
    stats: Stats,
    /// Messages seen by [`Journal::deliberately_dropped`] (fault-injection builds only).
    #[cfg(feature = "fault-drop-acked")]
    fault_counter: u64,
}

/// Fault-injection builds drop one acknowledged message in this many.
#[cfg(feature = "fault-drop-acked")]
pub const FAULT_DROP_EVERY: u64 = 1000;

/// Ids acknowledged for deliberately dropped messages start here (far above real ids).
const FAKE_ID_BASE: i64 = 9_000_000_000_000;

impl Journal {
    /// Connect to `database_url` (`sqlite://path?mode=rwc` or `postgres://…`) and apply the
    /// migrations. Fails with `Unavailable` within about `2 × db_timeout` if the database
    /// cannot be reached.
    pub async fn connect(database_url: &str, config: JournalConfig) -> Result<Self, JournalError> {
        let db = store::connect(database_url, &config).await?;
        store::migrate(&db).await?;
        Ok(Journal::new(db, config))
    }

    /// [`Journal::connect`], retried a few times: nodes starting together on one database may
    /// race on the first migration (SQLite has no migration lock).
    pub async fn connect_retrying(
        database_url: &str,
        config: JournalConfig,
    ) -> Result<Self, JournalError> {
        let mut attempt = 1;
        loop {
            match Journal::connect(database_url, config.clone()).await {
                Ok(journal) => return Ok(journal),
                Err(err) if attempt < 5 && !matches!(err, JournalError::Config(_)) => {
                    warn!(%err, attempt, "database not ready; retrying");
                    tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// A Journal over an already opened, already migrated pool.
    pub fn new(db: DatabaseConnection, config: JournalConfig) -> Self {
        Journal {
            db,
            logs: LogQueue::new(config.queue_limit),
            config,
            pending: VecDeque::new(),
            store_timer: None,
            storing: false,
            flush_waiters: Vec::new(),
            retry_at: None,
            backoff: FIRST_BACKOFF,
            isolate: 0,
            dropping: false,
            sweeping: false,
            stats: Stats::default(),
            #[cfg(feature = "fault-drop-acked")]
            fault_counter: 0,
        }
    }

    // --- messages -------------------------------------------------------------------------

    /// Start the next message transaction now, or arm the window timer.
    fn schedule_store(&mut self, ctx: &mut Context<Self>) {
        if self.storing {
            // The transaction that is out starts the next one when it ends.
            return;
        }
        if self.pending.len() >= self.config.message_batch_size
            || self.config.message_batch_window.is_zero()
        {
            self.store_batch(ctx);
        } else if self.store_timer.is_none() {
            let window = self.config.message_batch_window;
            self.store_timer = Some(ctx.run_later(window, |act, ctx| {
                act.store_timer = None;
                act.store_batch(ctx);
            }));
        }
    }

    /// Commit up to `message_batch_size` waiting stores (and, with webhooks, their events)
    /// in one transaction.
    fn store_batch(&mut self, ctx: &mut Context<Self>) {
        if self.storing || self.pending.is_empty() {
            return;
        }
        if let Some(timer) = self.store_timer.take() {
            ctx.cancel_future(timer);
        }
        let n = self
            .pending
            .len()
            .min(self.config.message_batch_size.max(1));
        let created_at = db_time(SystemTime::now());
        let mut batch = MessageBatch {
            messages: Vec::with_capacity(n),
            created_at,
            event_ids: None,
        };
        // Per store, in arrival order: its reply, and its message if it is deliberately
        // dropped (the others travel in `batch` and come back with it).
        let mut slots = Vec::with_capacity(n);
        let mut spans = Vec::new();
        for p in self.pending.drain(..n).collect::<Vec<_>>() {
            if traces::enabled() {
                spans.push(p.span);
            }
            if self.deliberately_dropped() {
                slots.push((p.reply, Some(p.message)));
            } else {
                batch.messages.push(p.message);
                slots.push((p.reply, None));
            }
        }
        if self.config.webhooks {
            batch.event_ids = Some(batch.messages.iter().map(|_| Uuid::new_v4()).collect());
        }
        self.storing = true;
        let committing = Arc::new(AtomicBool::new(false));
        let commit = traces::commit(&spans, n);
        drop(spans);
        let op = store::bounded(
            self.config.db_timeout,
            store::insert_messages(self.db.clone(), batch, committing.clone()),
        )
        .instrument(commit.clone());
        ctx.spawn(op.into_actor(self).map(move |result, act, ctx| {
            act.storing = false;
            if result.is_err() {
                traces::failed(&commit);
            }
            match result {
                Ok((batch, outcomes)) => {
                    act.stats.message_batches += 1;
                    let created_at_ms =
                        |t: DateTimeUtc| u64::try_from(t.timestamp_millis()).unwrap_or(0);
                    let mut stored = batch.messages.into_iter().zip(outcomes);
                    for (reply, dropped) in slots {
                        let stored = match dropped {
                            Some(message) => {
                                act.stats.messages_stored += 1;
                                StoredMessage {
                                    message_id: u64::try_from(
                                        FAKE_ID_BASE
                                            + i64::try_from(act.stats.messages_stored).unwrap_or(0),
                                    )
                                    .unwrap_or(0),
                                    from: message.from,
                                    to: message.to,
                                    text: message.text,
                                    created_at: created_at_ms(created_at),
                                    duplicate: false,
                                }
                            }
                            // Same length: one outcome per message.
                            None => match stored.next() {
                                Some((message, Outcome::New(id))) => {
                                    act.stats.messages_stored += 1;
                                    StoredMessage {
                                        message_id: u64::try_from(id).unwrap_or(0),
                                        from: message.from,
                                        to: message.to,
                                        text: message.text,
                                        created_at: created_at_ms(created_at),
                                        duplicate: false,
                                    }
                                }
                                Some((_, Outcome::Earlier(row))) => StoredMessage {
                                    duplicate: true,
                                    ..to_stored(row)
                                },
                                None => continue,
                            },
                        };
                        // A requester that gave up is no reason to worry.
                        let _ = reply.send(Ok(stored));
                    }
                }
                Err(err) => {
                    // Lost during COMMIT: the rows may be in. A retry with the same
                    // `clientMsgId` finds them.
                    let err = match err {
                        JournalError::Unavailable(why) if committing.load(Ordering::SeqCst) => {
                            JournalError::InDoubt(why)
                        }
                        other => other,
                    };
                    warn!(%err, messages = slots.len(), "message store failed");
                    // The stores queued behind this one would meet the same outage: fail them
                    // now rather than one timeout per batch later.
                    let behind: Vec<_> = if err.is_unavailable() || err.is_in_doubt() {
                        act.pending.drain(..).map(|p| p.reply).collect()
                    } else {
                        Vec::new()
                    };
                    let unavailable = JournalError::Unavailable(err.to_string());
                    for reply in slots.into_iter().map(|(reply, _)| reply) {
                        let _ = reply.send(Err(err.clone()));
                    }
                    // Never sent to the database: plainly unavailable.
                    for reply in behind {
                        let _ = reply.send(Err(unavailable.clone()));
                    }
                }
            }
            // Whatever arrived meanwhile has waited one transaction already: go now.
            act.store_batch(ctx);
        }));
    }

    /// Whether to acknowledge the next message without storing it: only in builds with the
    /// `fault-drop-acked` feature (one in [`FAULT_DROP_EVERY`]), which exist so that loss
    /// checkers can prove they notice a loss. Always false in a normal build.
    fn deliberately_dropped(&mut self) -> bool {
        #[cfg(feature = "fault-drop-acked")]
        {
            self.fault_counter += 1;
            self.fault_counter.is_multiple_of(FAULT_DROP_EVERY)
        }
        #[cfg(not(feature = "fault-drop-acked"))]
        false
    }

    // --- log rows -------------------------------------------------------------------------

    fn push_log(&mut self, row: LogRow, ctx: &mut Context<Self>) {
        if !self.logs.push(row) {
            if !self.dropping {
                warn!(
                    limit = self.config.queue_limit,
                    "journal queue full: dropping log rows"
                );
            }
            self.dropping = true;
            return;
        }
        self.dropping = false;
        if self.logs.waiting() >= self.config.batch_size {
            self.flush_logs(ctx);
        }
    }

    /// Write the next batch of log rows, unless one is out or a retry is not yet due (a
    /// [`Flush`] request overrides the backoff).
    fn flush_logs(&mut self, ctx: &mut Context<Self>) {
        if self.logs.is_out() {
            return;
        }
        if self.flush_waiters.is_empty() && self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let max = if self.isolate > 0 {
            1
        } else {
            self.config.batch_size
        };
        let Some(batch) = self.logs.take(max) else {
            return;
        };
        let plan = LogPlan::new(&batch.rows, db_time(SystemTime::now()));
        let started = Instant::now();
        let op = store::bounded(
            self.config.db_timeout,
            store::write_logs(self.db.clone(), plan),
        );
        ctx.spawn(op.into_actor(self).map(move |result, act, ctx| {
            act.stats.last_flush_ms = started.elapsed().as_millis() as u64;
            crate::metrics::metrics()
                .journal_flush
                .observe(started.elapsed().as_secs_f64());
            let rows = batch.rows.len();
            match result {
                Ok(()) => {
                    act.stats.flushes += 1;
                    act.isolate = act.isolate.saturating_sub(rows);
                    act.logs.written(batch);
                    if act.retry_at.take().is_some() {
                        info!("journal writes resumed");
                    }
                    act.backoff = FIRST_BACKOFF;
                }
                Err(err) if err.is_unavailable() => {
                    act.stats.failed_flushes += 1;
                    act.logs.retry(batch);
                    if act.retry_at.is_none() {
                        warn!(%err, queued = act.logs.depth(), "journal writes failing; rows kept");
                    }
                    act.retry_at = Some(Instant::now() + act.backoff);
                    act.backoff = (act.backoff * 2).min(act.config.db_timeout.max(FIRST_BACKOFF));
                    for (_, waiter) in act.flush_waiters.drain(..) {
                        let _ = waiter.send(Err(err.clone()));
                    }
                    return;
                }
                Err(err) => {
                    act.stats.failed_flushes += 1;
                    if rows > 1 {
                        // Find the row the database refuses: retry these one by one.
                        warn!(%err, rows, "journal batch refused; retrying row by row");
                        act.isolate = rows;
                        act.logs.retry(batch);
                    } else {
                        error!(%err, row = ?batch.rows, "journal row refused; dropped");
                        act.isolate = act.isolate.saturating_sub(1);
                        act.logs.give_up(batch);
                    }
                }
            }
            act.answer_flush_waiters();
            if act.logs.waiting() >= act.config.batch_size
                || act.isolate > 0
                || !act.flush_waiters.is_empty()
            {
                act.flush_logs(ctx);
            }
        }));
    }

    /// Answer the [`Flush`] requests whose rows are all written.
    fn answer_flush_waiters(&mut self) {
        let (done, waiting) = std::mem::take(&mut self.flush_waiters)
            .into_iter()
            .partition(|(seq, _)| self.logs.is_done(*seq));
        self.flush_waiters = waiting;
        for (_, waiter) in done {
            let _ = waiter.send(Ok(()));
        }
    }

    // --- sweeps ---------------------------------------------------------------------------

    fn run_retention(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        self.sweeping = true;
        let op = retention(
            self.db.clone(),
            RetentionSweep {
                connections_older_than: self.config.retention_connections,
                presence_older_than: self.config.retention_presence,
                messages_older_than: self.config.retention_messages,
            },
        );
        ctx.spawn(op.into_actor(self).map(|result, act, _| {
            act.sweeping = false;
            match result {
                Ok(swept) => {
                    info!(
                        connections = swept.connections,
                        presence = swept.presence,
                        messages = swept.messages,
                        dead_webhooks = swept.dead_webhooks,
                        "journal retention sweep"
                    )
                }
                Err(err) => warn!(%err, "journal retention sweep failed"),
            }
        }));
    }
}

/// Delete rows past their age (see [`RetentionSweep`]); dead outbox rows go after the
/// connections' age.
async fn retention(
    db: DatabaseConnection,
    ages: RetentionSweep,
) -> Result<store::Swept, JournalError> {
    let now = SystemTime::now();
    let before = |age: Duration| db_time(now.checked_sub(age).unwrap_or(UNIX_EPOCH));
    store::bounded(
        SWEEP_TIMEOUT,
        store::retention(
            db,
            before(ages.connections_older_than),
            before(ages.presence_older_than),
            ages.messages_older_than.map(before),
        ),
    )
    .await
}

/// `t` as stored: UTC, whole milliseconds (so SQLite's text timestamps compare in order).
fn db_time(t: SystemTime) -> DateTimeUtc {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    DateTimeUtc::from_timestamp_millis(ms).unwrap_or_default()
}

fn to_stored(m: message::Model) -> StoredMessage {
    StoredMessage {
        message_id: u64::try_from(m.id).unwrap_or(0),
        from: m.from_user,
        to: m.to_user,
        text: m.body,
        created_at: u64::try_from(m.created_at.timestamp_millis()).unwrap_or(0),
        duplicate: false,
    }
}

impl Actor for Journal {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        // After a restart, stores may be waiting already.
        if !self.pending.is_empty() {
            self.schedule_store(ctx);
        }
        let tick = self.config.flush_interval.max(Duration::from_millis(1));
        ctx.run_interval(tick, |act, ctx| {
            if act.logs.waiting() > 0 {
                act.flush_logs(ctx);
            }
        });
        let sweep = self.config.sweep_interval.max(Duration::from_secs(1));
        ctx.run_later(sweep.min(Duration::from_secs(60)), move |act, ctx| {
            act.run_retention(ctx);
            ctx.run_interval(sweep, |act, ctx| act.run_retention(ctx));
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let lost = self.logs.depth();
        if lost > 0 {
            warn!(rows = lost, "journal stopped with unwritten log rows");
        }
    }
}

/// A restart (under `actix::Supervisor`) keeps the queue; the batch and the message
/// transaction that were out are lost with the old context.
impl Supervised for Journal {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::metrics::restarted("journal");
        self.logs.abandon_out();
        self.storing = false;
        self.store_timer = None;
        self.sweeping = false;
    }
}

impl Handler<StoreMessage> for Journal {
    type Result = ResponseFuture<Result<StoredMessage, JournalError>>;

    fn handle(&mut self, msg: StoreMessage, ctx: &mut Context<Self>) -> Self::Result {
        // Ids are checked, never cleaned or cut: either would file the message under someone
        // else.
        let client_id = msg.client_msg_id.as_deref().unwrap_or("-");
        let refused = if let Err(err) = check_ids(&[&msg.from, &msg.to, client_id]) {
            Some(err)
        } else if self.pending.len() >= self.config.message_queue_limit {
            Some(JournalError::Unavailable("message backlog full".into()))
        } else {
            None
        };
        if let Some(err) = refused {
            return Box::pin(async move { Err(err) });
        }
        let (reply, answer) = oneshot::channel();
        self.pending.push_back(PendingStore {
            message: NewMessage {
                from: msg.from.to_string(),
                to: msg.to.to_string(),
                text: clean(&msg.text, limits::UNBOUNDED),
                client_msg_id: msg.client_msg_id,
            },
            reply,
            span: msg.span,
        });
        self.schedule_store(ctx);
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(JournalError::Unavailable("the journal stopped".into())))
        })
    }
}

impl Handler<SyncMessages> for Journal {
    type Result = ResponseFuture<Result<SyncPage, JournalError>>;

    fn handle(&mut self, msg: SyncMessages, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(err) = check_ids(&[&msg.user]) {
            return refused(err);
        }
        let user = msg.user.to_string();
        let after = i64::try_from(msg.after).unwrap_or(i64::MAX);
        // One more than asked for tells whether more follow.
        let fetch = i64::try_from(msg.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let op = store::bounded(
            self.config.db_timeout,
            store::sync(self.db.clone(), user, after, fetch),
        );
        let limit = msg.limit;
        Box::pin(async move {
            let mut messages: Vec<StoredMessage> = op.await?.into_iter().map(to_stored).collect();
            let has_more = messages.len() > limit;
            messages.truncate(limit);
            Ok(SyncPage { messages, has_more })
        })
    }
}

impl Handler<ConnectionOpened> for Journal {
    type Result = ();

    fn handle(&mut self, msg: ConnectionOpened, ctx: &mut Context<Self>) {
        if let Err(err) = check_ids(&[&msg.user_id, &msg.device_id]) {
            // Login checks these ids; a row that names no one is not written.
            warn!(%err, "connection row refused");
            metrics().error("journal_invalid_row");
            return;
        }
        let mut row = OpenedRow {
            id: Uuid::new_v4(),
            socket_id: clean(&msg.socket_id, limits::SOCKET_ID),
            user_id: msg.user_id.to_string(),
            device_id: msg.device_id.clone(),
            server_instance: clean(&msg.server_instance, limits::SERVER_INSTANCE),
            ip_address: clean(&msg.ip_address, limits::IP_ADDRESS),
            user_agent: msg.user_agent.map(|ua| clean(&ua, limits::UNBOUNDED)),
            connected_at: db_time(msg.connected_at),
            event: None,
        };
        if self.config.webhooks {
            row.event = Some(outbox::socket_connected(Uuid::new_v4(), &row));
        }
        self.push_log(LogRow::Opened(row), ctx);
    }
}

impl Handler<ConnectionClosed> for Journal {
    type Result = ();

    fn handle(&mut self, msg: ConnectionClosed, ctx: &mut Context<Self>) {
        let mut row = ClosedRow {
            socket_id: clean(&msg.socket_id, limits::SOCKET_ID),
            reason: clean(&msg.reason, limits::REASON),
            messages_sent: i32::try_from(msg.messages_sent).unwrap_or(i32::MAX),
            messages_received: i32::try_from(msg.messages_received).unwrap_or(i32::MAX),
            disconnected_at: db_time(msg.disconnected_at),
            event: None,
        };
        if self.config.webhooks {
            // Cleaned as the open row's columns were, so the two events name the same ids.
            row.event = Some(outbox::socket_disconnected(
                Uuid::new_v4(),
                &row.socket_id,
                &clean(&msg.user_id, limits::USER_ID),
                &clean(&msg.server_instance, limits::SERVER_INSTANCE),
                &row.reason,
                row.disconnected_at,
            ));
        }
        self.push_log(LogRow::Closed(row), ctx);
    }
}

impl Handler<PresenceLogged> for Journal {
    type Result = ();

    fn handle(&mut self, msg: PresenceLogged, ctx: &mut Context<Self>) {
        let device = msg.device_id.as_deref().unwrap_or("-");
        if let Err(err) = check_ids(&[&msg.user_id, device]) {
            warn!(%err, "presence row refused");
            metrics().error("journal_invalid_row");
            return;
        }
        let mut row = PresenceRow {
            user_id: msg.user_id.to_string(),
            status: clean(&msg.status, limits::STATUS),
            device_id: msg.device_id,
            at: db_time(msg.at),
            event: None,
        };
        if self.config.webhooks {
            row.event = outbox::presence_changed(Uuid::new_v4(), &row);
        }
        self.push_log(LogRow::Presence(row), ctx);
    }
}

impl Handler<WebhookEvent> for Journal {
    type Result = ();

    fn handle(&mut self, msg: WebhookEvent, ctx: &mut Context<Self>) {
        if !self.config.webhooks {
            return;
        }
        match outbox::custom(Uuid::new_v4(), &msg.event_type, msg.data, SystemTime::now()) {
            Some(row) => self.push_log(LogRow::Webhook(row), ctx),
            None => warn!(
                event_type = %msg.event_type.escape_debug(),
                "webhook event type refused (empty, over 64 bytes or control characters); dropped"
            ),
        }
    }
}

impl Handler<CloseStaleConnections> for Journal {
    type Result = ResponseFuture<Result<u64, JournalError>>;

    fn handle(&mut self, msg: CloseStaleConnections, _ctx: &mut Context<Self>) -> Self::Result {
        let op = store::bounded(
            self.config.db_timeout,
            store::close_stale(
                self.db.clone(),
                clean(&msg.server_instance, limits::SERVER_INSTANCE),
                clean(&msg.reason, limits::REASON),
                db_time(SystemTime::now()),
                self.config.webhooks,
            ),
        );
        Box::pin(op)
    }
}

impl Handler<RetentionSweep> for Journal {
    type Result = ResponseFuture<Result<(u64, u64, u64), JournalError>>;

    fn handle(&mut self, msg: RetentionSweep, _ctx: &mut Context<Self>) -> Self::Result {
        let op = retention(self.db.clone(), msg);
        Box::pin(async move {
            let swept = op.await?;
            Ok((swept.connections, swept.presence, swept.messages))
        })
    }
}

/// `Err(Invalid)` unless every id passes [`check_id`].
fn check_ids(ids: &[&str]) -> Result<(), JournalError> {
    ids.iter()
        .try_for_each(|id| check_id(id))
        .map_err(JournalError::Invalid)
}

/// A request refused before it reached the database.
fn refused<T: 'static>(err: JournalError) -> ResponseFuture<Result<T, JournalError>> {
    Box::pin(async move { Err(err) })
}

impl Handler<AddMembership> for Journal {
    type Result = ResponseFuture<Result<bool, JournalError>>;

    fn handle(&mut self, msg: AddMembership, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(err) = check_ids(&[&msg.room, &msg.user]) {
            return refused(err);
        }
        let event_id = self.config.webhooks.then(Uuid::new_v4);
        Box::pin(store::bounded(
            self.config.db_timeout,
            store::add_membership(
                self.db.clone(),
                msg.room.to_string(),
                msg.user.to_string(),
                db_time(SystemTime::now()),
                event_id,
            ),
        ))
    }
}

impl Handler<RemoveMembership> for Journal {
    type Result = ResponseFuture<Result<bool, JournalError>>;

    fn handle(&mut self, msg: RemoveMembership, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(err) = check_ids(&[&msg.room, &msg.user]) {
            return refused(err);
        }
        let event_id = self.config.webhooks.then(Uuid::new_v4);
        Box::pin(store::bounded(
            self.config.db_timeout,
            store::remove_membership(
                self.db.clone(),
                msg.room.to_string(),
                msg.user.to_string(),
                db_time(SystemTime::now()),
                event_id,
            ),
        ))
    }
}

impl Handler<MembershipsOf> for Journal {
    type Result = ResponseFuture<Result<Vec<Room>, JournalError>>;

    fn handle(&mut self, msg: MembershipsOf, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(err) = check_ids(&[&msg.user]) {
            return refused(err);
        }
        let op = store::bounded(
            self.config.db_timeout,
            store::memberships_of(self.db.clone(), msg.user.to_string()),
        );
        Box::pin(async move {
            // Sorted here, by bytes: database collations differ between backends.
            let mut rooms = op.await?;
            rooms.sort_unstable();
            Ok(rooms.into_iter().map(Room::from).collect())
        })
    }
}

impl Handler<MembersOf> for Journal {
    type Result = ResponseFuture<Result<Vec<UserId>, JournalError>>;

    fn handle(&mut self, msg: MembersOf, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(err) = check_ids(&[&msg.room]) {
            return refused(err);
        }
        let op = store::bounded(
            self.config.db_timeout,
            store::members_of(self.db.clone(), msg.room.to_string()),
        );
        Box::pin(async move {
            let mut users = op.await?;
            users.sort_unstable();
            Ok(users.into_iter().map(UserId::from).collect())
        })
    }
}

impl Handler<AcquireWebhookLease> for Journal {
    type Result = ResponseFuture<Result<bool, JournalError>>;

    fn handle(&mut self, msg: AcquireWebhookLease, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(err) = check_ids(&[&msg.holder]) {
            return refused(err);
        }
        let now = SystemTime::now();
        let expires_at = now.checked_add(msg.ttl).unwrap_or(now);
        Box::pin(store::bounded(
            self.config.db_timeout,
            store::acquire_lease(
                self.db.clone(),
                msg.holder.to_string(),
                db_time(now),
                db_time(expires_at),
            ),
        ))
    }
}

impl Handler<TakeWebhooks> for Journal {
    type Result = ResponseFuture<Result<Vec<OutboxEvent>, JournalError>>;

    fn handle(&mut self, msg: TakeWebhooks, _ctx: &mut Context<Self>) -> Self::Result {
        if msg.limit == 0 {
            return Box::pin(async { Ok(Vec::new()) });
        }
        let now = SystemTime::now();
        let cutoff = db_time(now.checked_sub(msg.settled_for).unwrap_or(UNIX_EPOCH));
        let limit = u64::try_from(msg.limit).unwrap_or(u64::MAX);
        let op = store::bounded(
            self.config.db_timeout,
            store::pending_webhooks(self.db.clone(), limit),
        );
        Box::pin(async move {
            let mut rows = op.await?;
            rows.truncate(outbox::settled(&rows, cutoff));
            Ok(rows.into_iter().map(outbox::to_event).collect())
        })
    }
}

impl Journal {
    fn change_webhooks(
        &self,
        ids: Vec<i64>,
        change: OutboxChange,
    ) -> ResponseFuture<Result<u64, JournalError>> {
        if ids.is_empty() {
            return Box::pin(async { Ok(0) });
        }
        Box::pin(store::bounded(
            self.config.db_timeout,
            store::change_webhooks(self.db.clone(), ids, change),
        ))
    }
}

impl Handler<AckWebhooks> for Journal {
    type Result = ResponseFuture<Result<u64, JournalError>>;

    fn handle(&mut self, msg: AckWebhooks, _ctx: &mut Context<Self>) -> Self::Result {
        self.change_webhooks(msg.ids, OutboxChange::Ack)
    }
}

impl Handler<FailWebhooks> for Journal {
    type Result = ResponseFuture<Result<u64, JournalError>>;

    fn handle(&mut self, msg: FailWebhooks, _ctx: &mut Context<Self>) -> Self::Result {
        self.change_webhooks(msg.ids, OutboxChange::Fail)
    }
}

impl Handler<DeadLetterWebhooks> for Journal {
    type Result = ResponseFuture<Result<u64, JournalError>>;

    fn handle(&mut self, msg: DeadLetterWebhooks, _ctx: &mut Context<Self>) -> Self::Result {
        self.change_webhooks(msg.ids, OutboxChange::DeadLetter)
    }
}

impl Handler<WebhookDepth> for Journal {
    type Result = ResponseFuture<Result<u64, JournalError>>;

    fn handle(&mut self, _msg: WebhookDepth, _ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(store::bounded(
            self.config.db_timeout,
            store::webhook_depth(self.db.clone()),
        ))
    }
}

impl Handler<CheckDatabase> for Journal {
    type Result = ResponseFuture<Result<(), JournalError>>;

    fn handle(&mut self, _msg: CheckDatabase, _ctx: &mut Context<Self>) -> Self::Result {
        let db = self.db.clone();
        let limit = self.config.db_timeout;
        Box::pin(async move { store::bounded(limit, db.ping()).await })
    }
}

impl Handler<JournalStats> for Journal {
    type Result = MessageResult<JournalStats>;

    fn handle(&mut self, _msg: JournalStats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(Stats {
            queue_depth: self.logs.depth(),
            dropped: self.logs.dropped(),
            pending_messages: self.pending.len(),
            ..self.stats
        })
    }
}

impl Handler<Flush> for Journal {
    type Result = ResponseFuture<Result<(), JournalError>>;

    fn handle(&mut self, _msg: Flush, ctx: &mut Context<Self>) -> Self::Result {
        self.store_batch(ctx);
        let target = self.logs.last_seq();
        if self.logs.is_done(target) {
            return Box::pin(async { Ok(()) });
        }
        let (reply, answer) = oneshot::channel();
        self.flush_waiters.push((target, reply));
        self.flush_logs(ctx);
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(JournalError::Unavailable("the journal stopped".into())))
        })
    }
}

impl crate::metrics::MeteredActor for Journal {
    const NAME: &'static str = "journal";
}

crate::metered!(Journal: StoreMessage, SyncMessages, ConnectionOpened, ConnectionClosed,
    PresenceLogged, WebhookEvent, CloseStaleConnections, RetentionSweep, CheckDatabase,
    MessageResult(JournalStats), Flush, AddMembership, RemoveMembership, MembershipsOf,
    MembersOf, AcquireWebhookLease, TakeWebhooks, AckWebhooks, FailWebhooks,
    DeadLetterWebhooks, WebhookDepth);
