//! The Journal's database operations: plain async functions over a cloned
//! [`DatabaseConnection`], each one transaction at most, spawned by the actor.
//!
//! Everything here is portable between SQLite and PostgreSQL except the spots marked
//! "PostgreSQL only" / "per backend". Raw SQL uses `$n` placeholders, which both accept, and
//! `ON CONFLICT`, which both have (SQLite since 3.24, `RETURNING` since 3.35).
//!
//! Every function that writes a row the webhooks describe takes that row's events and writes
//! them in the same transaction.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::prelude::{DateTimeUtc, Expr, Uuid};
use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait,
};

use super::JournalConfig;
use super::entities::{message, presence_log, room_membership, socket_connection, webhook_outbox};
use super::outbox::{self, DEAD, LEASE, PENDING};
use super::rows::{ClosedRow, LogPlan, MessageBatch, Outcome};
use crate::ports::journal::JournalError;

/// Key of the PostgreSQL advisory lock that serialises message commits across nodes.
const MESSAGES_LOCK: i64 = 0x5357_4d53; // "SWMS"
/// Key of the PostgreSQL advisory lock held while one node migrates.
const MIGRATION_LOCK: i64 = 0x5357_4d47; // "SWMG"
/// Rows per `INSERT` statement, well under both backends' bind-parameter limits.
const ROWS_PER_INSERT: usize = 1000;

/// Run `op`, turning database errors and a missed `limit` into [`JournalError`].
pub(super) async fn bounded<T>(
    limit: Duration,
    op: impl Future<Output = Result<T, DbErr>>,
) -> Result<T, JournalError> {
    match tokio::time::timeout(limit, op).await {
        Ok(result) => result.map_err(JournalError::from),
        Err(_) => Err(JournalError::timed_out(limit)),
    }
}

/// A transaction that will write. On SQLite it takes the write lock at `BEGIN`
/// (`IMMEDIATE`): a deferred one that reads first fails at its first write, without waiting,
/// when another connection committed in between (`SQLITE_BUSY_SNAPSHOT`). PostgreSQL ignores
/// the mode.
async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// Open a pool on `url` (`sqlite://path?mode=rwc` or `postgres://…`).
pub(super) async fn connect(
    url: &str,
    config: &JournalConfig,
) -> Result<DatabaseConnection, JournalError> {
    let sqlite = url.starts_with("sqlite:");
    if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(JournalError::Config(
            "expected sqlite://… or postgres://…".into(),
        ));
    }
    let mut options = ConnectOptions::new(url);
    options
        .connect_timeout(config.db_timeout)
        .acquire_timeout(config.db_timeout)
        .max_connections(config.max_connections.max(1))
        .sqlx_logging(false);
    if sqlite {
        if url.contains(":memory:") || url.contains("mode=memory") {
            // Every connection to `:memory:` is a database of its own: keep exactly one, forever.
            options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            // WAL: readers (`message:sync`) do not wait for the writer, and a commit is one
            // append. Concurrent writers wait on SQLite's busy timeout (5 s in sqlx).
            options.map_sqlx_sqlite_opts(|o| o.journal_mode(SqliteJournalMode::Wal));
        }
    }
    // The pool's own timeouts bound each attempt; this bounds the whole handshake.
    bounded(config.db_timeout * 2, Database::connect(options))
        .await
        .map_err(|err| redact(err, url))
}

/// `err` without the URL in its text (the URL may carry a password).
fn redact(err: JournalError, url: &str) -> JournalError {
    let hide = |msg: String| msg.replace(url, "<database url>");
    match err {
        JournalError::Unavailable(msg) => JournalError::Unavailable(hide(msg)),
        JournalError::Database(msg) => JournalError::Database(hide(msg)),
        other => other,
    }
}

/// Apply pending migrations. On PostgreSQL nodes that start together take turns.
pub(super) async fn migrate(db: &DatabaseConnection) -> Result<(), JournalError> {
    let result = async {
        if db.get_database_backend() == DbBackend::Postgres {
            // PostgreSQL only: DDL is transactional, so migrate inside one transaction that
            // holds a lock; a second node waits, then finds nothing pending.
            let txn = db.begin().await?;
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [MIGRATION_LOCK.into()],
            ))
            .await?;
            Migrator::up(&txn, None).await?;
            txn.commit().await
        } else {
            Migrator::up(db, None).await
        }
    }
    .await;
    result.map_err(|err| match JournalError::from(err) {
        JournalError::Database(msg) => JournalError::Migration(msg),
        other => other,
    })
}

/// Insert `rows` in statements of at most [`ROWS_PER_INSERT`] rows, in order.
async fn insert_all<A>(db: &impl ConnectionTrait, mut rows: Vec<A>) -> Result<(), DbErr>
where
    A: ActiveModelTrait,
{
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(ROWS_PER_INSERT));
        A::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
        rows = rest;
    }
    Ok(())
}

/// Insert one group of messages and their `message.stored` events in one transaction; the
/// batch back, with the messages' ids, ascending.
///
/// Ids are handed out in `VALUES` order within the statement, so the ascending ids belong to
/// the rows in the order given.
pub(super) async fn insert_messages(
    db: DatabaseConnection,
    batch: MessageBatch,
    committing: Arc<AtomicBool>,
) -> Result<(MessageBatch, Vec<Outcome>), DbErr> {
    let txn = begin_write(&db).await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        // PostgreSQL only: with several nodes, ids from the sequence could otherwise commit out
        // of order, and a `message:sync` cursor past a later id would skip an earlier one that
        // committed late. Holding this lock until commit makes commit order = id order. (SQLite
        // has one writer anyway.) Group commit makes it one lock per batch.
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [MESSAGES_LOCK.into()],
        ))
        .await?;
    }
    // Under the lock (on SQLite the write lock, taken at BEGIN), so no other commit adds a client id meanwhile;
    // the unique index stands behind this.
    let stored = stored_client_ids(&txn, &batch).await?;
    let (insert, slots) = batch.plan(&stored);
    let mut ids = if insert.is_empty() {
        Vec::new()
    } else {
        message::Entity::insert_many(batch.models(&insert))
            .exec_with_returning_keys(&txn)
            .await?
    };
    ids.sort_unstable();
    if ids.len() != insert.len() {
        // Rolled back: acknowledging rows we cannot name would lose them.
        return Err(DbErr::Custom(format!(
            "{} messages inserted, {} ids returned",
            insert.len(),
            ids.len()
        )));
    }
    insert_all(&txn, batch.events(&insert, &ids)).await?;
    // From here a lost answer leaves the outcome unknown.
    committing.store(true, Ordering::SeqCst);
    txn.commit().await?;
    let new_id = |i: usize| insert.iter().position(|&j| j == i).map(|k| ids[k]);
    let outcomes = slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| match slot {
            Ok(first) if first == i => Outcome::New(new_id(i).unwrap_or_default()),
            Ok(first) => {
                let m = &batch.messages[first];
                Outcome::Earlier(message::Model {
                    id: new_id(first).unwrap_or_default(),
                    from_user: m.from.clone(),
                    to_user: m.to.clone(),
                    body: m.text.clone(),
                    created_at: batch.created_at,
                    client_msg_id: m.client_msg_id.clone(),
                })
            }
            Err(j) => Outcome::Earlier(stored[j].clone()),
        })
        .collect();
    Ok((batch, outcomes))
}

/// The stored rows that carry a `(sender, clientMsgId)` of the batch.
async fn stored_client_ids(
    txn: &impl ConnectionTrait,
    batch: &MessageBatch,
) -> Result<Vec<message::Model>, DbErr> {
    let mut any = Condition::any();
    let mut asked = false;
    for m in &batch.messages {
        if let Some(cid) = &m.client_msg_id {
            asked = true;
            any = any.add(
                Condition::all()
                    .add(message::Column::FromUser.eq(m.from.as_str()))
                    .add(message::Column::ClientMsgId.eq(cid.as_str())),
            );
        }
    }
    if !asked {
        return Ok(Vec::new());
    }
    message::Entity::find().filter(any).all(txn).await
}

/// Messages to or from `user` with an id above `after`, ascending, at most `limit`.
///
/// One statement, so both directions come from one snapshot; each half is a range scan of
/// its `(to_user, id)` / `(from_user, id)` index. `UNION` drops the duplicate of a message a
/// user sent to themselves. `$n` placeholders work on both backends.
pub(super) async fn sync(
    db: DatabaseConnection,
    user: String,
    after: i64,
    limit: i64,
) -> Result<Vec<message::Model>, DbErr> {
    const SQL: &str = r#"
        SELECT "id", "from_user", "to_user", "body", "created_at" FROM (
            SELECT "id", "from_user", "to_user", "body", "created_at" FROM "messages"
            WHERE "to_user" = $1 AND "id" > $2 ORDER BY "id" LIMIT $3
        ) AS "received"
        UNION
        SELECT "id", "from_user", "to_user", "body", "created_at" FROM (
            SELECT "id", "from_user", "to_user", "body", "created_at" FROM "messages"
            WHERE "from_user" = $1 AND "id" > $2 ORDER BY "id" LIMIT $3
        ) AS "sent"
        ORDER BY "id" LIMIT $3"#;
    let stmt = Statement::from_sql_and_values(
        db.get_database_backend(),
        SQL,
        [user.into(), after.into(), limit.into()],
    );
    message::Entity::find().from_raw_sql(stmt).all(&db).await
}

/// Write one planned batch of log rows in one transaction: inserts first, then the closes of
/// rows written earlier, then the batch's outbox rows (a close's event only if it closed a
/// row).
pub(super) async fn write_logs(db: DatabaseConnection, plan: LogPlan) -> Result<(), DbErr> {
    let txn = begin_write(&db).await?;
    insert_all(&txn, plan.opened).await?;
    insert_all(&txn, plan.presence).await?;
    let mut closed_a_row = Vec::with_capacity(plan.closed.len());
    for close in plan.closed {
        closed_a_row.push(close_connection(&txn, close).await? > 0);
    }
    let events = plan
        .events
        .into_iter()
        .filter(|e| e.if_closed.is_none_or(|i| closed_a_row[i]))
        .map(|e| e.row)
        .collect();
    insert_all(&txn, events).await?;
    txn.commit().await
}

/// Close the open row of one socket.
async fn close_connection(db: &impl ConnectionTrait, close: ClosedRow) -> Result<u64, DbErr> {
    use socket_connection::Column;
    let duration = seconds_since_connected(db.get_database_backend(), close.disconnected_at);
    let result = socket_connection::Entity::update_many()
        .col_expr(Column::DisconnectedAt, Expr::value(close.disconnected_at))
        .col_expr(Column::DisconnectReason, Expr::value(close.reason))
        .col_expr(Column::MessagesSent, Expr::value(close.messages_sent))
        .col_expr(
            Column::MessagesReceived,
            Expr::value(close.messages_received),
        )
        .col_expr(Column::DurationSeconds, duration)
        .filter(Column::SocketId.eq(close.socket_id))
        .filter(Column::DisconnectedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Close every row `server_instance` left open; how many. With `webhooks`, each closed row
/// gets its `socket.disconnected` event in the same transaction (`RETURNING` names the rows
/// this statement closed, so two nodes sweeping at once write each event once).
pub(super) async fn close_stale(
    db: DatabaseConnection,
    server_instance: String,
    reason: String,
    at: DateTimeUtc,
    webhooks: bool,
) -> Result<u64, DbErr> {
    use socket_connection::Column;
    let duration = seconds_since_connected(db.get_database_backend(), at);
    let update = socket_connection::Entity::update_many()
        .col_expr(Column::DisconnectedAt, Expr::value(at))
        .col_expr(Column::DisconnectReason, Expr::value(reason.clone()))
        .col_expr(Column::DurationSeconds, duration)
        .filter(Column::ServerInstance.eq(server_instance.clone()))
        .filter(Column::DisconnectedAt.is_null());
    if !webhooks {
        return Ok(update.exec(&db).await?.rows_affected);
    }
    let txn = begin_write(&db).await?;
    let closed = update.exec_with_returning(&txn).await?;
    let events = closed
        .iter()
        .map(|row| {
            outbox::socket_disconnected(
                Uuid::new_v4(),
                &row.socket_id,
                &row.user_id,
                &server_instance,
                &reason,
                at,
            )
            .model(at)
        })
        .collect();
    insert_all(&txn, events).await?;
    txn.commit().await?;
    Ok(closed.len() as u64)
}

/// Delete connections closed before `connections_before`, presence rows older than
/// `presence_before`, and dead outbox rows written before `connections_before`; the three
/// counts.
/// Rows deleted by one retention sweep.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Swept {
    pub connections: u64,
    pub presence: u64,
    pub messages: u64,
    pub dead_webhooks: u64,
}

pub(super) async fn retention(
    db: DatabaseConnection,
    connections_before: DateTimeUtc,
    presence_before: DateTimeUtc,
    messages_before: Option<DateTimeUtc>,
) -> Result<Swept, DbErr> {
    let connections = socket_connection::Entity::delete_many()
        .filter(socket_connection::Column::DisconnectedAt.lt(connections_before))
        .exec(&db)
        .await?;
    let presence = presence_log::Entity::delete_many()
        .filter(presence_log::Column::Timestamp.lt(presence_before))
        .exec(&db)
        .await?;
    let dead = webhook_outbox::Entity::delete_many()
        .filter(webhook_outbox::Column::Status.eq(DEAD))
        .filter(webhook_outbox::Column::CreatedAt.lt(connections_before))
        .exec(&db)
        .await?;
    let messages = match messages_before {
        Some(before) => {
            message::Entity::delete_many()
                .filter(message::Column::CreatedAt.lt(before))
                .exec(&db)
                .await?
                .rows_affected
        }
        None => 0,
    };
    Ok(Swept {
        connections: connections.rows_affected,
        presence: presence.rows_affected,
        messages,
        dead_webhooks: dead.rows_affected,
    })
}

// --- room memberships -----------------------------------------------------------------------

/// Add a membership; whether it is new. A new one writes `room.joined` (given its event id)
/// in the same transaction. `ON CONFLICT DO NOTHING` makes concurrent adds of the same
/// membership insert (and announce) it once.
pub(super) async fn add_membership(
    db: DatabaseConnection,
    room: String,
    user: String,
    at: DateTimeUtc,
    event_id: Option<Uuid>,
) -> Result<bool, DbErr> {
    const SQL: &str = r#"
        INSERT INTO "room_memberships" ("room", "user_id", "created_at") VALUES ($1, $2, $3)
        ON CONFLICT ("room", "user_id") DO NOTHING"#;
    let txn = begin_write(&db).await?;
    let stmt = Statement::from_sql_and_values(
        txn.get_database_backend(),
        SQL,
        [room.as_str().into(), user.as_str().into(), at.into()],
    );
    let added = txn.execute_raw(stmt).await?.rows_affected() > 0;
    if let (true, Some(event_id)) = (added, event_id) {
        let event = outbox::membership_changed(event_id, true, &room, &user, at);
        insert_all(&txn, vec![event.model(at)]).await?;
    }
    txn.commit().await?;
    Ok(added)
}

/// Remove a membership; whether it existed. A removal writes `room.left` in the same
/// transaction.
pub(super) async fn remove_membership(
    db: DatabaseConnection,
    room: String,
    user: String,
    at: DateTimeUtc,
    event_id: Option<Uuid>,
) -> Result<bool, DbErr> {
    use room_membership::Column;
    let txn = begin_write(&db).await?;
    let removed = room_membership::Entity::delete_many()
        .filter(Column::Room.eq(room.as_str()))
        .filter(Column::UserId.eq(user.as_str()))
        .exec(&txn)
        .await?
        .rows_affected
        > 0;
    if let (true, Some(event_id)) = (removed, event_id) {
        let event = outbox::membership_changed(event_id, false, &room, &user, at);
        insert_all(&txn, vec![event.model(at)]).await?;
    }
    txn.commit().await?;
    Ok(removed)
}

/// The rooms of `user`, unsorted.
pub(super) async fn memberships_of(
    db: DatabaseConnection,
    user: String,
) -> Result<Vec<String>, DbErr> {
    use room_membership::Column;
    room_membership::Entity::find()
        .select_only()
        .column(Column::Room)
        .filter(Column::UserId.eq(user))
        .into_tuple()
        .all(&db)
        .await
}

/// The members of `room`, unsorted.
pub(super) async fn members_of(db: DatabaseConnection, room: String) -> Result<Vec<String>, DbErr> {
    use room_membership::Column;
    room_membership::Entity::find()
        .select_only()
        .column(Column::UserId)
        .filter(Column::Room.eq(room))
        .into_tuple()
        .all(&db)
        .await
}

// --- webhook delivery -----------------------------------------------------------------------

/// Take or extend the delivery lease for `holder` until `expires_at`; whether `holder` holds
/// it now. One statement: the insert of a free lease, or the update of one that lapsed before
/// `now` or is `holder`'s own, is atomic on both backends (PostgreSQL re-checks the `WHERE` on
/// the locked row), and `RETURNING` yields a row only when it happened.
pub(super) async fn acquire_lease(
    db: DatabaseConnection,
    holder: String,
    now: DateTimeUtc,
    expires_at: DateTimeUtc,
) -> Result<bool, DbErr> {
    const SQL: &str = r#"
        INSERT INTO "webhook_lease" ("name", "holder", "expires_at") VALUES ($1, $2, $3)
        ON CONFLICT ("name") DO UPDATE
            SET "holder" = excluded."holder", "expires_at" = excluded."expires_at"
            WHERE "webhook_lease"."expires_at" < $4 OR "webhook_lease"."holder" = $2
        RETURNING "holder""#;
    let stmt = Statement::from_sql_and_values(
        db.get_database_backend(),
        SQL,
        [LEASE.into(), holder.into(), expires_at.into(), now.into()],
    );
    Ok(db.query_one_raw(stmt).await?.is_some())
}

/// The oldest `limit` pending outbox rows, ascending by id (the `(status, id)` index).
pub(super) async fn pending_webhooks(
    db: DatabaseConnection,
    limit: u64,
) -> Result<Vec<webhook_outbox::Model>, DbErr> {
    use webhook_outbox::Column;
    webhook_outbox::Entity::find()
        .filter(Column::Status.eq(PENDING))
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(&db)
        .await
}

/// What to do with outbox rows named by id.
#[derive(Debug, Clone, Copy)]
pub(super) enum OutboxChange {
    /// Delivered: delete.
    Ack,
    /// Failed once more: count the attempt.
    Fail,
    /// Given up on: mark `dead`.
    DeadLetter,
}

/// Apply `change` to the rows `ids` (in statements of [`ROWS_PER_INSERT`] ids); how many rows
/// were found. Fail and dead-letter touch pending rows only.
pub(super) async fn change_webhooks(
    db: DatabaseConnection,
    ids: Vec<i64>,
    change: OutboxChange,
) -> Result<u64, DbErr> {
    use webhook_outbox::Column;
    let mut changed = 0;
    for chunk in ids.chunks(ROWS_PER_INSERT) {
        let ids = chunk.iter().copied();
        let result = match change {
            OutboxChange::Ack => {
                webhook_outbox::Entity::delete_many()
                    .filter(Column::Id.is_in(ids))
                    .exec(&db)
                    .await?
                    .rows_affected
            }
            OutboxChange::Fail => {
                webhook_outbox::Entity::update_many()
                    .col_expr(
                        Column::Attempts,
                        // Called by path: importing the trait makes `max` on integers ambiguous.
                        sea_orm::sea_query::ExprTrait::add(Expr::col(Column::Attempts), 1),
                    )
                    .filter(Column::Id.is_in(ids))
                    .filter(Column::Status.eq(PENDING))
                    .exec(&db)
                    .await?
                    .rows_affected
            }
            OutboxChange::DeadLetter => {
                webhook_outbox::Entity::update_many()
                    .col_expr(Column::Status, Expr::value(DEAD))
                    .filter(Column::Id.is_in(ids))
                    .filter(Column::Status.eq(PENDING))
                    .exec(&db)
                    .await?
                    .rows_affected
            }
        };
        changed += result;
    }
    Ok(changed)
}

/// Pending outbox rows.
pub(super) async fn webhook_depth(db: DatabaseConnection) -> Result<u64, DbErr> {
    webhook_outbox::Entity::find()
        .filter(webhook_outbox::Column::Status.eq(PENDING))
        .count(&db)
        .await
}

/// `duration_seconds` of a row closed at `at`: whole seconds since its `connected_at`, never
/// negative. Per backend: SQLite keeps timestamps as RFC 3339 text (`julianday` reads it),
/// PostgreSQL as `timestamptz`.
fn seconds_since_connected(backend: DbBackend, at: DateTimeUtc) -> Expr {
    match backend {
        DbBackend::Postgres => Expr::cust_with_values(
            r#"GREATEST(0, CAST(FLOOR(EXTRACT(EPOCH FROM (CAST($1 AS timestamptz) - "connected_at"))) AS INTEGER))"#,
            [at],
        ),
        // ROUND(…, 3) first: julianday is a double, and 90 s must not come out as 89.
        _ => Expr::cust_with_values(
            r#"MAX(0, CAST(ROUND((julianday(?) - julianday("connected_at")) * 86400, 3) AS INTEGER))"#,
            [at],
        ),
    }
}
