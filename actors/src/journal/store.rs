//! The Journal's database operations: plain async functions over a cloned
//! [`DatabaseConnection`], each one transaction at most, spawned by the actor.
//!
//! Everything here is portable between SQLite and PostgreSQL except the two spots marked
//! "PostgreSQL only" / "per backend".

use std::future::Future;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::prelude::{DateTimeUtc, Expr};
use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, Statement, TransactionTrait,
};

use super::JournalConfig;
use super::entities::{message, presence_log, socket_connection};
use super::rows::{ClosedRow, LogPlan};
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

/// Insert one group of messages in one transaction; their ids, ascending.
///
/// Ids are handed out in `VALUES` order within the statement, so the ascending ids belong to
/// the rows in the order given.
pub(super) async fn insert_messages(
    db: DatabaseConnection,
    rows: Vec<message::ActiveModel>,
) -> Result<Vec<i64>, DbErr> {
    let txn = db.begin().await?;
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
    let mut ids = message::Entity::insert_many(rows)
        .exec_with_returning_keys(&txn)
        .await?;
    txn.commit().await?;
    ids.sort_unstable();
    Ok(ids)
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
/// rows written earlier.
pub(super) async fn write_logs(db: DatabaseConnection, plan: LogPlan) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    let mut opened = plan.opened;
    while !opened.is_empty() {
        let rest = opened.split_off(opened.len().min(ROWS_PER_INSERT));
        socket_connection::Entity::insert_many(opened)
            .exec_without_returning(&txn)
            .await?;
        opened = rest;
    }
    let mut presence = plan.presence;
    while !presence.is_empty() {
        let rest = presence.split_off(presence.len().min(ROWS_PER_INSERT));
        presence_log::Entity::insert_many(presence)
            .exec_without_returning(&txn)
            .await?;
        presence = rest;
    }
    for close in plan.closed {
        close_connection(&txn, close).await?;
    }
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

/// Close every row `server_instance` left open; how many.
pub(super) async fn close_stale(
    db: DatabaseConnection,
    server_instance: String,
    reason: String,
    at: DateTimeUtc,
) -> Result<u64, DbErr> {
    use socket_connection::Column;
    let duration = seconds_since_connected(db.get_database_backend(), at);
    let result = socket_connection::Entity::update_many()
        .col_expr(Column::DisconnectedAt, Expr::value(at))
        .col_expr(Column::DisconnectReason, Expr::value(reason))
        .col_expr(Column::DurationSeconds, duration)
        .filter(Column::ServerInstance.eq(server_instance))
        .filter(Column::DisconnectedAt.is_null())
        .exec(&db)
        .await?;
    Ok(result.rows_affected)
}

/// Delete connections closed before `connections_before` and presence rows older than
/// `presence_before`; the two counts.
pub(super) async fn retention(
    db: DatabaseConnection,
    connections_before: DateTimeUtc,
    presence_before: DateTimeUtc,
) -> Result<(u64, u64), DbErr> {
    let connections = socket_connection::Entity::delete_many()
        .filter(socket_connection::Column::DisconnectedAt.lt(connections_before))
        .exec(&db)
        .await?;
    let presence = presence_log::Entity::delete_many()
        .filter(presence_log::Column::Timestamp.lt(presence_before))
        .exec(&db)
        .await?;
    Ok((connections.rows_affected, presence.rows_affected))
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
