//! The Journal against real databases: every scenario runs on a temporary SQLite file and on
//! a throwaway PostgreSQL database (see `switchboard_test_support::TestDb`).
//!
//! # Layout
//! - messages, connection and presence rows, retention, outages;
//! - durable room memberships;
//! - the webhook outbox: which events each request writes, that an event and its row are
//!   written together or not at all, and the delivery operations (lease, take, ack, fail,
//!   dead-letter, depth).

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use futures_util::future::join_all;
use migration::{Migrator, MigratorTrait, SchemaManager};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use serde_json::{Value, json};
use switchboard_actors::journal::entities::{
    message, presence_log, room_membership, socket_connection, webhook_outbox,
};
use switchboard_actors::journal::{Journal, JournalConfig};
use switchboard_actors::ports::journal::{
    AckWebhooks, AcquireWebhookLease, AddMembership, CheckDatabase, CloseStaleConnections,
    ConnectionClosed, ConnectionOpened, DeadLetterWebhooks, FailWebhooks, Flush, JournalError,
    JournalStats, MembersOf, MembershipsOf, NODE_LOST, OutboxEvent, PresenceLogged,
    RemoveMembership, RetentionSweep, Stats, StoreMessage, StoredMessage, SyncMessages,
    TakeWebhooks, WebhookDepth, WebhookEvent,
};
use switchboard_actors::{NodeId, Room, UserId};
use switchboard_test_support::{
    Backend, TcpProxy, TestDb, on_both_backends, postgres_server_url, server_address, with_database,
};

on_both_backends!(
    #[actix::test]
    migrations_go_up_down_and_up_again,
    a_client_msg_id_is_stored_once_per_sender,
    concurrent_stores_share_transactions,
    sync_pages_through_both_directions_in_order,
    connection_rows_are_opened_and_closed,
    a_close_right_after_its_open_lands_in_the_same_batch,
    presence_transitions_are_logged,
    control_characters_do_not_fail_a_batch,
    a_full_queue_drops_and_counts,
    stale_connections_of_a_node_are_closed,
    retention_deletes_only_old_rows,
    an_unreachable_database_fails_fast,
    rows_from_elsewhere_are_swept_too,
    memberships_are_idempotent_sorted_and_checked,
    concurrent_adds_of_one_membership_announce_it_once,
    with_webhooks_each_event_is_written_once_with_its_fields,
    with_webhooks_off_no_outbox_rows_are_written,
    a_refused_transaction_leaves_neither_rows_nor_events,
    a_dropped_or_refused_log_row_takes_only_its_own_event,
    the_webhook_lease_has_one_holder_at_a_time,
    outbox_rows_are_taken_in_order_acked_failed_and_dead_lettered,
    the_settle_window_holds_back_everything_behind_a_fresh_row,
);

fn fast_config() -> JournalConfig {
    JournalConfig {
        flush_interval: Duration::from_millis(10),
        db_timeout: Duration::from_secs(2),
        ..JournalConfig::default()
    }
}

/// A migrated database and a started Journal on it.
async fn journal(backend: Backend, config: JournalConfig) -> (TestDb, Addr<Journal>) {
    let db = TestDb::create(backend).await;
    let journal = Journal::connect(&db.url, config).await.unwrap().start();
    // Let `started` run (mailbox size, timers) before the test floods it.
    journal.send(JournalStats).await.unwrap();
    (db, journal)
}

fn user(name: &str) -> UserId {
    UserId::from(name)
}

async fn store(journal: &Addr<Journal>, from: &str, to: &str, text: &str) -> StoredMessage {
    journal
        .send(StoreMessage {
            from: user(from),
            to: to.into(),
            text: text.into(),
            client_msg_id: None,
            span: tracing::Span::none(),
        })
        .await
        .unwrap()
        .unwrap()
}

async fn read_stats(journal: &Addr<Journal>) -> Stats {
    journal.send(JournalStats).await.unwrap()
}

async fn flush(journal: &Addr<Journal>) {
    journal.send(Flush).await.unwrap().unwrap();
}

fn opened(socket: &str, user_id: &str, node: &str, connected_at: SystemTime) -> ConnectionOpened {
    ConnectionOpened {
        socket_id: socket.into(),
        user_id: user(user_id),
        device_id: format!("{user_id}-phone"),
        server_instance: node.into(),
        ip_address: "10.1.2.3".into(),
        user_agent: Some("test-agent/1.0".into()),
        connected_at,
    }
}

fn closed(socket: &str, reason: &str, disconnected_at: SystemTime) -> ConnectionClosed {
    ConnectionClosed {
        socket_id: socket.into(),
        user_id: user("someone"),
        server_instance: "node-a".into(),
        reason: reason.into(),
        messages_sent: 7,
        messages_received: 3,
        disconnected_at,
    }
}

async fn connection(db: &DatabaseConnection, socket: &str) -> socket_connection::Model {
    socket_connection::Entity::find()
        .filter(socket_connection::Column::SocketId.eq(socket))
        .one(db)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no row for {socket}"))
}

fn ago(secs: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(secs)
}

async fn migrations_go_up_down_and_up_again(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.inspect().await;
    let tables = [
        "socket_connections",
        "presence_logs",
        "messages",
        "room_memberships",
        "webhook_outbox",
        "webhook_lease",
    ];
    Migrator::up(&db, None).await.unwrap();
    let manager = SchemaManager::new(&db);
    for table in tables {
        assert!(manager.has_table(table).await.unwrap(), "{table} after up");
    }
    Migrator::down(&db, None).await.unwrap();
    for table in tables {
        assert!(
            !manager.has_table(table).await.unwrap(),
            "{table} after down"
        );
    }
    Migrator::up(&db, None).await.unwrap();
    assert!(
        Migrator::get_pending_migrations(&db)
            .await
            .unwrap()
            .is_empty()
    );
    // Connecting migrates again: nothing pending is fine, and the tables work.
    let journal = Journal::connect(&test_db.url, fast_config())
        .await
        .unwrap()
        .start();
    let stored = store(&journal, "a", "b", "hello").await;
    assert_eq!(stored.message_id, 1);
    journal.send(CheckDatabase).await.unwrap().unwrap();
}

async fn concurrent_stores_share_transactions(backend: Backend) {
    let (_db, journal) = journal(backend, fast_config()).await;
    let sends = (0..200).map(|i| {
        journal.send(StoreMessage {
            from: user(&format!("u{}", i % 7)),
            to: format!("u{}", (i + 1) % 7).into(),
            text: format!("m{i}"),
            client_msg_id: None,
            span: tracing::Span::none(),
        })
    });
    let stored: Vec<StoredMessage> = join_all(sends)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    for (i, message) in stored.iter().enumerate() {
        assert_eq!(
            message.text,
            format!("m{i}"),
            "each requester gets its own row"
        );
    }
    let ids: Vec<u64> = stored.iter().map(|m| m.message_id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids ascend in arrival order: {ids:?}"
    );
    let stats = read_stats(&journal).await;
    assert_eq!(stats.messages_stored, 200);
    assert!(
        stats.message_batches <= 10,
        "200 stores took {} transactions",
        stats.message_batches
    );

    // A steady stream: 50 clients, each sending its next message when the last is acked.
    let clients = (0..50).map(|c| {
        let journal = journal.clone();
        async move {
            for i in 0..20 {
                store(&journal, &format!("c{c}"), "hub", &format!("{i}")).await;
            }
        }
    });
    let started = Instant::now();
    join_all(clients).await;
    let elapsed = started.elapsed();
    let batches = read_stats(&journal).await.message_batches - stats.message_batches;
    assert!(
        batches <= 100,
        "1000 acked-one-at-a-time stores took {batches} transactions ({elapsed:?})"
    );
}

async fn sync_pages_through_both_directions_in_order(backend: Backend) {
    let (_db, journal) = journal(backend, fast_config()).await;
    let mut bobs = Vec::new();
    for i in 0..5 {
        bobs.push(
            store(&journal, "alice", "bob", &format!("a→b {i}"))
                .await
                .message_id,
        );
        store(&journal, "carol", "dave", "unrelated").await;
        if i % 2 == 0 {
            bobs.push(
                store(&journal, "bob", "alice", &format!("b→a {i}"))
                    .await
                    .message_id,
            );
        }
    }
    bobs.push(
        store(&journal, "bob", "bob", "note to self")
            .await
            .message_id,
    );

    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = journal
            .send(SyncMessages {
                user: user("bob"),
                after,
                limit: 3,
            })
            .await
            .unwrap()
            .unwrap();
        assert!(page.messages.len() <= 3);
        seen.extend(page.messages.iter().map(|m| m.message_id));
        let Some(last) = page.messages.last() else {
            assert!(!page.has_more);
            break;
        };
        assert!(
            page.messages
                .iter()
                .all(|m| m.from == "bob" || m.to == "bob")
        );
        after = last.message_id;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen, bobs, "every message of bob's once, in order");

    let all = journal
        .send(SyncMessages {
            user: user("alice"),
            after: 0,
            limit: 100,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all.messages.len(), 8);
    assert!(!all.has_more);
    let json = serde_json::to_value(&all.messages[0]).unwrap();
    assert_eq!(json["messageId"], all.messages[0].message_id);
    assert!(json["createdAt"].as_u64().unwrap() > 1_600_000_000_000);
    let nobody = journal
        .send(SyncMessages {
            user: user("nobody"),
            after: 0,
            limit: 10,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(nobody.messages.is_empty() && !nobody.has_more);
}

async fn connection_rows_are_opened_and_closed(backend: Backend) {
    let (test_db, journal) = journal(backend, fast_config()).await;
    journal.do_send(opened("s1", "alice", "node-a", ago(90)));
    flush(&journal).await;
    let db = test_db.inspect().await;
    let row = connection(&db, "s1").await;
    assert_eq!(row.user_id, "alice");
    assert_eq!(row.device_id, "alice-phone");
    assert_eq!(row.server_instance.as_deref(), Some("node-a"));
    assert_eq!(row.ip_address, "10.1.2.3");
    assert_eq!(row.user_agent.as_deref(), Some("test-agent/1.0"));
    assert_eq!(row.disconnected_at, None);
    assert_eq!((row.messages_sent, row.messages_received), (0, 0));

    // The close lands in a later batch: an UPDATE of the row written above.
    journal.do_send(closed("s1", "client_disconnect", SystemTime::now()));
    flush(&journal).await;
    let row = connection(&db, "s1").await;
    assert_eq!(row.disconnect_reason.as_deref(), Some("client_disconnect"));
    assert_eq!((row.messages_sent, row.messages_received), (7, 3));
    assert!(row.disconnected_at.is_some());
    let duration = row.duration_seconds.unwrap();
    assert!((89..=91).contains(&duration), "duration {duration}");
}

async fn a_close_right_after_its_open_lands_in_the_same_batch(backend: Backend) {
    let config = JournalConfig {
        // Nothing flushes until asked: both rows are queued together.
        flush_interval: Duration::from_secs(3600),
        ..fast_config()
    };
    let (test_db, journal) = journal(backend, config).await;
    journal.do_send(opened("s1", "alice", "node-a", ago(30)));
    journal.do_send(closed("s1", "transport_close", SystemTime::now()));
    journal.do_send(opened("s2", "bob", "node-a", ago(5)));
    assert_eq!(read_stats(&journal).await.queue_depth, 3);
    flush(&journal).await;
    let stats = read_stats(&journal).await;
    assert_eq!((stats.queue_depth, stats.flushes), (0, 1));
    let db = test_db.inspect().await;
    let s1 = connection(&db, "s1").await;
    assert_eq!(s1.disconnect_reason.as_deref(), Some("transport_close"));
    assert_eq!((s1.messages_sent, s1.messages_received), (7, 3));
    assert!((29..=31).contains(&s1.duration_seconds.unwrap()));
    let s2 = connection(&db, "s2").await;
    assert_eq!((s2.disconnected_at, s2.duration_seconds), (None, None));
}

async fn presence_transitions_are_logged(backend: Backend) {
    let (test_db, journal) = journal(backend, fast_config()).await;
    for (status, device) in [
        ("online", Some("phone")),
        ("away", None),
        ("offline", Some("phone")),
    ] {
        journal.do_send(PresenceLogged {
            user_id: user("alice"),
            status: status.into(),
            device_id: device.map(String::from),
            at: SystemTime::now(),
        });
    }
    flush(&journal).await;
    let db = test_db.inspect().await;
    let rows = presence_log::Entity::find().all(&db).await.unwrap();
    let got: Vec<(&str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.status.as_str(), r.device_id.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("online", Some("phone")),
            ("away", None),
            ("offline", Some("phone"))
        ]
    );
    assert!(rows.iter().all(|r| r.user_id == "alice"));
}

async fn control_characters_do_not_fail_a_batch(backend: Backend) {
    let config = JournalConfig {
        flush_interval: Duration::from_secs(3600),
        ..fast_config()
    };
    let (test_db, journal) = journal(backend, config).await;
    let stored = store(&journal, "alice", "bob", "nul\u{0}here\u{7}\nline\ttab").await;
    assert_eq!(stored.text, "nulhere\nline\ttab");
    let synced = journal
        .send(SyncMessages {
            user: user("bob"),
            after: 0,
            limit: 10,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(synced.messages[0].text, "nulhere\nline\ttab");

    // One batch: clean rows with dirty free-text columns, and rows whose ids hold control
    // characters (refused, never cleaned into someone else's id).
    journal.do_send(opened("clean", "alice", "node-a", SystemTime::now()));
    journal.do_send(ConnectionOpened {
        socket_id: "dirty\u{0}".into(),
        user_id: user("alice"),
        device_id: "d1".into(),
        server_instance: "node-a".into(),
        ip_address: "1".repeat(100),
        user_agent: Some("agent\u{0}".into()),
        connected_at: SystemTime::now(),
    });
    journal.do_send(ConnectionOpened {
        socket_id: "forged".into(),
        user_id: user("al\u{0}ice"),
        device_id: "d1".into(),
        server_instance: "node-a".into(),
        ip_address: "127.0.0.1".into(),
        user_agent: None,
        connected_at: SystemTime::now(),
    });
    journal.do_send(PresenceLogged {
        user_id: user("bob\u{0}"),
        status: "online".into(),
        device_id: None,
        at: SystemTime::now(),
    });
    journal.do_send(PresenceLogged {
        user_id: user("bob"),
        status: "online\u{0}-and-a-very-long-status".into(),
        device_id: None,
        at: SystemTime::now(),
    });
    flush(&journal).await;
    let stats = read_stats(&journal).await;
    assert_eq!(
        (stats.flushes, stats.failed_flushes, stats.dropped),
        (1, 0, 0)
    );
    let db = test_db.inspect().await;
    connection(&db, "clean").await;
    let dirty = connection(&db, "dirty").await;
    assert_eq!(dirty.user_id, "alice");
    assert_eq!(dirty.ip_address.len(), 45);
    assert_eq!(dirty.user_agent.as_deref(), Some("agent"));
    let rows = socket_connection::Entity::find().all(&db).await.unwrap();
    assert_eq!(
        rows.len(),
        2,
        "the row with a forged user id is not written"
    );
    let presence = presence_log::Entity::find().all(&db).await.unwrap();
    assert_eq!(presence.len(), 1, "the row for a forged bob is not written");
    assert_eq!(presence[0].user_id, "bob");
    assert_eq!(
        presence[0].status, "online-and-a-very-lo",
        "cut to VARCHAR(20)"
    );
}

async fn a_full_queue_drops_and_counts(backend: Backend) {
    let config = JournalConfig {
        queue_limit: 10,
        batch_size: 1000,
        flush_interval: Duration::from_secs(3600),
        ..fast_config()
    };
    let (test_db, journal) = journal(backend, config).await;
    for i in 0..25 {
        journal.do_send(PresenceLogged {
            user_id: user(&format!("u{i}")),
            status: "online".into(),
            device_id: None,
            at: SystemTime::now(),
        });
    }
    let stats = read_stats(&journal).await;
    assert_eq!((stats.queue_depth, stats.dropped), (10, 15));
    flush(&journal).await;
    let db = test_db.inspect().await;
    let kept = presence_log::Entity::find().all(&db).await.unwrap();
    let users: Vec<String> = kept.into_iter().map(|r| r.user_id).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    assert_eq!(
        users, expected,
        "the oldest rows are kept, the newest dropped"
    );
}

async fn stale_connections_of_a_node_are_closed(backend: Backend) {
    let (test_db, journal) = journal(backend, fast_config()).await;
    journal.do_send(opened("a1", "alice", "node-a", ago(120)));
    journal.do_send(opened("a2", "bob", "node-a", ago(60)));
    journal.do_send(opened("a3", "carol", "node-a", ago(60)));
    journal.do_send(closed("a3", "client_disconnect", ago(30)));
    journal.do_send(opened("b1", "dave", "node-b", ago(60)));
    flush(&journal).await;
    let closed = journal
        .send(CloseStaleConnections {
            server_instance: "node-a".into(),
            reason: NODE_LOST.into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed, 2);
    let db = test_db.inspect().await;
    let a1 = connection(&db, "a1").await;
    assert_eq!(a1.disconnect_reason.as_deref(), Some("node_lost"));
    assert!((119..=121).contains(&a1.duration_seconds.unwrap()));
    assert_eq!(
        connection(&db, "a2").await.disconnect_reason.as_deref(),
        Some("node_lost")
    );
    let a3 = connection(&db, "a3").await;
    assert_eq!(a3.disconnect_reason.as_deref(), Some("client_disconnect"));
    assert_eq!(connection(&db, "b1").await.disconnected_at, None);
    let again = journal
        .send(CloseStaleConnections {
            server_instance: "node-a".into(),
            reason: NODE_LOST.into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, 0);
}

async fn retention_deletes_only_old_rows(backend: Backend) {
    let (test_db, journal) = journal(backend, fast_config()).await;
    const DAY: u64 = 24 * 3600;
    // Connections: closed 8 days ago (old), closed 1 day ago, and open for 10 days.
    journal.do_send(opened("old", "u", "n", ago(9 * DAY)));
    journal.do_send(closed("old", "client_disconnect", ago(8 * DAY)));
    journal.do_send(opened("recent", "u", "n", ago(2 * DAY)));
    journal.do_send(closed("recent", "client_disconnect", ago(DAY)));
    journal.do_send(opened("open", "u", "n", ago(10 * DAY)));
    // A connection closed in a later batch (so through the UPDATE path), 8 days ago.
    journal.do_send(opened("old-update", "u", "n", ago(9 * DAY)));
    flush(&journal).await;
    journal.do_send(closed("old-update", "client_disconnect", ago(8 * DAY)));
    for (status, age) in [("old", 31 * DAY), ("recent", 29 * DAY), ("now", 0)] {
        journal.do_send(PresenceLogged {
            user_id: user("u"),
            status: status.into(),
            device_id: None,
            at: ago(age),
        });
    }
    flush(&journal).await;
    // Messages: one stored now, one a year old.
    let recent = store(&journal, "alice", "bob", "recent").await;
    message::Entity::insert(message::ActiveModel {
        id: NotSet,
        from_user: Set("alice".into()),
        to_user: Set("bob".into()),
        body: Set("a year old".into()),
        created_at: Set(ago(365 * DAY).into()),
        client_msg_id: Set(None),
    })
    .exec_without_returning(&test_db.inspect().await)
    .await
    .unwrap();
    let deleted = journal
        .send(RetentionSweep {
            connections_older_than: Duration::from_secs(7 * DAY),
            presence_older_than: Duration::from_secs(30 * DAY),
            messages_older_than: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        deleted,
        (2, 1, 0),
        "messages are kept without a message retention"
    );
    let deleted = journal
        .send(RetentionSweep {
            connections_older_than: Duration::from_secs(7 * DAY),
            presence_older_than: Duration::from_secs(30 * DAY),
            messages_older_than: Some(Duration::from_secs(30 * DAY)),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted, (0, 0, 1), "the year-old message goes");
    let left: Vec<i64> = message::Entity::find()
        .all(&test_db.inspect().await)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left, [recent.message_id as i64]);
    let db = test_db.inspect().await;
    let mut sockets: Vec<String> = socket_connection::Entity::find()
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.socket_id)
        .collect();
    sockets.sort();
    assert_eq!(sockets, vec!["open", "recent"]);
    let statuses: HashSet<String> = presence_log::Entity::find()
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, HashSet::from(["recent".into(), "now".into()]));
}

async fn an_unreachable_database_fails_fast(backend: Backend) {
    let config = JournalConfig {
        db_timeout: Duration::from_secs(1),
        ..fast_config()
    };
    let url = match backend {
        Backend::Sqlite => "sqlite:///nonexistent-directory/switchboard.db?mode=rwc".to_string(),
        // Nothing listens on port 1.
        Backend::Postgres => {
            with_database(&postgres_server_url().replace(":5432", ":1"), "switchboard")
        }
    };
    let started = Instant::now();
    let err = Journal::connect(&url, config.clone()).await.err().unwrap();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        Journal::connect("mysql://x", config).await,
        Err(JournalError::Config(_))
    ));
}

/// The database goes away under a running Journal and comes back (PostgreSQL behind a proxy
/// that can be cut).
#[actix::test]
async fn postgres_outage_fails_stores_keeps_log_rows_and_recovers() {
    let test_db = TestDb::create(Backend::Postgres).await;
    let mut proxy = TcpProxy::start(server_address(&test_db.url)).await;
    let config = JournalConfig {
        db_timeout: Duration::from_secs(1),
        flush_interval: Duration::from_millis(10),
        ..JournalConfig::default()
    };
    let journal = Journal::connect(&proxy.url(&test_db.url), config)
        .await
        .unwrap()
        .start();
    store(&journal, "alice", "bob", "before").await;

    proxy.cut().await;
    let started = Instant::now();
    let err = journal
        .send(StoreMessage {
            from: user("alice"),
            to: "bob".into(),
            text: "during".into(),
            client_msg_id: None,
            span: tracing::Span::none(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        journal
            .send(CheckDatabase)
            .await
            .unwrap()
            .unwrap_err()
            .is_unavailable()
    );
    for i in 0..5 {
        journal.do_send(PresenceLogged {
            user_id: user(&format!("u{i}")),
            status: "online".into(),
            device_id: None,
            at: SystemTime::now(),
        });
    }
    assert!(journal.send(Flush).await.unwrap().is_err());
    let down = read_stats(&journal).await;
    assert_eq!(
        (down.queue_depth, down.dropped),
        (5, 0),
        "rows kept while down"
    );
    assert!(down.failed_flushes > 0);

    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let result = journal
            .send(StoreMessage {
                from: user("alice"),
                to: "bob".into(),
                text: "after".into(),
                client_msg_id: None,
                span: tracing::Span::none(),
            })
            .await
            .unwrap();
        match result {
            Ok(_) => break,
            Err(err) if Instant::now() < deadline => {
                assert!(err.is_unavailable(), "{err:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("no recovery: {err}"),
        }
    }
    // The queued rows are written by the routine flush, without being asked.
    let db = test_db.inspect().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while presence_log::Entity::find().count(&db).await.unwrap() < 5 {
        assert!(Instant::now() < deadline, "queued rows never written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read_stats(&journal).await.queue_depth, 0);
}

/// A row written straight through the entities (what an older node might have left) is
/// closed by the stale sweep like any other.
async fn rows_from_elsewhere_are_swept_too(backend: Backend) {
    let (test_db, journal) = journal(backend, fast_config()).await;
    let db = test_db.inspect().await;
    let connected_at = sea_orm::prelude::DateTimeUtc::from(ago(10));
    socket_connection::Entity::insert(socket_connection::ActiveModel {
        id: Set(uuid::Uuid::new_v4()),
        user_id: Set("u".into()),
        socket_id: Set("foreign".into()),
        device_id: Set("d".into()),
        server_instance: Set(Some("node-z".into())),
        ip_address: Set("".into()),
        user_agent: Set(None),
        connected_at: Set(connected_at),
        disconnected_at: Set(None),
        disconnect_reason: Set(None),
        messages_sent: Set(0),
        messages_received: Set(0),
        duration_seconds: Set(None),
    })
    .exec_without_returning(&db)
    .await
    .unwrap();
    let closed = journal
        .send(CloseStaleConnections {
            server_instance: "node-z".into(),
            reason: NODE_LOST.into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed, 1);
    assert!((9..=11).contains(&connection(&db, "foreign").await.duration_seconds.unwrap()));
}

// --- room memberships ------------------------------------------------------------------------

fn room(name: &str) -> Room {
    Room::from(name)
}

async fn add(journal: &Addr<Journal>, r: &str, u: &str) -> Result<bool, JournalError> {
    journal
        .send(AddMembership {
            room: room(r),
            user: user(u),
        })
        .await
        .unwrap()
}

async fn remove(journal: &Addr<Journal>, r: &str, u: &str) -> Result<bool, JournalError> {
    journal
        .send(RemoveMembership {
            room: room(r),
            user: user(u),
        })
        .await
        .unwrap()
}

async fn rooms_of(journal: &Addr<Journal>, u: &str) -> Vec<Room> {
    journal
        .send(MembershipsOf { user: user(u) })
        .await
        .unwrap()
        .unwrap()
}

async fn members_of(journal: &Addr<Journal>, r: &str) -> Vec<UserId> {
    journal
        .send(MembersOf { room: room(r) })
        .await
        .unwrap()
        .unwrap()
}

async fn memberships_are_idempotent_sorted_and_checked(backend: Backend) {
    let (test_db, journal) = journal(backend, fast_config()).await;
    assert_eq!(add(&journal, "doc:b", "alice").await, Ok(true));
    assert_eq!(
        add(&journal, "doc:b", "alice").await,
        Ok(false),
        "idempotent"
    );
    assert_eq!(add(&journal, "doc:a", "alice").await, Ok(true));
    assert_eq!(add(&journal, "Doc:C", "alice").await, Ok(true));
    assert_eq!(add(&journal, "doc:b", "bob").await, Ok(true));
    assert_eq!(add(&journal, "doc:b", "Zed").await, Ok(true));
    // Sorted by bytes, whatever the database's collation: upper case first.
    assert_eq!(
        rooms_of(&journal, "alice").await,
        ["Doc:C", "doc:a", "doc:b"]
    );
    assert_eq!(members_of(&journal, "doc:b").await, ["Zed", "alice", "bob"]);
    assert!(rooms_of(&journal, "nobody").await.is_empty());
    assert!(members_of(&journal, "empty-room").await.is_empty());

    assert_eq!(remove(&journal, "doc:b", "alice").await, Ok(true));
    assert_eq!(
        remove(&journal, "doc:b", "alice").await,
        Ok(false),
        "idempotent"
    );
    assert_eq!(remove(&journal, "never", "alice").await, Ok(false));
    assert_eq!(rooms_of(&journal, "alice").await, ["Doc:C", "doc:a"]);
    assert_eq!(members_of(&journal, "doc:b").await, ["Zed", "bob"]);

    // Refused, never cleaned: a cleaned id would name someone else.
    let long = "x".repeat(256);
    let wide = "é".repeat(128); // 128 characters, 256 bytes
    let max = "y".repeat(255);
    for (r, u) in [
        ("", "alice"),
        ("doc:a", ""),
        (long.as_str(), "alice"),
        ("doc:a", wide.as_str()),
        ("doc\u{0}a", "alice"),
        ("doc:a", "ali\nce"),
        ("doc:a", "\u{1b}[31m"),
    ] {
        assert!(
            matches!(add(&journal, r, u).await, Err(JournalError::Invalid(_))),
            "add {r:?} {u:?}"
        );
        assert!(
            matches!(remove(&journal, r, u).await, Err(JournalError::Invalid(_))),
            "remove {r:?} {u:?}"
        );
    }
    for bad in ["", "a\u{0}b", long.as_str()] {
        let of = journal
            .send(MembershipsOf { user: user(bad) })
            .await
            .unwrap();
        assert!(matches!(of, Err(JournalError::Invalid(_))), "{bad:?}");
        let of = journal.send(MembersOf { room: room(bad) }).await.unwrap();
        assert!(matches!(of, Err(JournalError::Invalid(_))), "{bad:?}");
    }
    assert_eq!(add(&journal, &max, &max).await, Ok(true), "255 bytes fit");
    assert_eq!(rooms_of(&journal, &max).await, [max.as_str()]);

    let db = test_db.inspect().await;
    let rows = room_membership::Entity::find().all(&db).await.unwrap();
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|r| r.created_at.timestamp() > 1_600_000_000)
    );
}

async fn concurrent_adds_of_one_membership_announce_it_once(backend: Backend) {
    let (test_db, journal) = journal(backend, webhooks_config()).await;
    let adds = (0..10).map(|_| add(&journal, "lobby", "alice"));
    let added: Vec<bool> = join_all(adds)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(added.iter().filter(|a| **a).count(), 1, "{added:?}");
    let removes = (0..10).map(|_| remove(&journal, "lobby", "alice"));
    let removed: Vec<bool> = join_all(removes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(removed.iter().filter(|r| **r).count(), 1, "{removed:?}");
    let db = test_db.inspect().await;
    assert_eq!(
        event_types(&outbox_rows(&db).await),
        ["room.joined", "room.left"]
    );
}

// --- the webhook outbox ----------------------------------------------------------------------

fn webhooks_config() -> JournalConfig {
    JournalConfig {
        webhooks: true,
        ..fast_config()
    }
}

/// Every outbox row, by id.
async fn outbox_rows(db: &DatabaseConnection) -> Vec<webhook_outbox::Model> {
    webhook_outbox::Entity::find()
        .order_by_asc(webhook_outbox::Column::Id)
        .all(db)
        .await
        .unwrap()
}

fn event_types(rows: &[webhook_outbox::Model]) -> Vec<&str> {
    rows.iter().map(|r| r.event_type.as_str()).collect()
}

/// The event of a row, checked against its columns.
fn event_of(row: &webhook_outbox::Model) -> Value {
    let event: Value = serde_json::from_str(&row.payload).unwrap();
    assert_eq!(event["id"], row.event_id, "id = event_id");
    assert_eq!(event["type"], row.event_type, "type = event_type");
    assert!(event["at"].as_u64().unwrap() > 1_600_000_000_000, "{event}");
    assert_eq!((row.status.as_str(), row.attempts), ("pending", 0));
    event
}

/// `event` without `id` and `at`, for comparing the rest.
fn fields(mut event: Value) -> Value {
    let map = event.as_object_mut().unwrap();
    map.remove("id");
    map.remove("at");
    event
}

fn closed_by(socket: &str, user_id: &str, node: &str, reason: &str) -> ConnectionClosed {
    ConnectionClosed {
        socket_id: socket.into(),
        user_id: user(user_id),
        server_instance: node.into(),
        reason: reason.into(),
        messages_sent: 1,
        messages_received: 2,
        disconnected_at: SystemTime::now(),
    }
}

fn presence(user_id: &str, status: &str, device: Option<&str>) -> PresenceLogged {
    PresenceLogged {
        user_id: user(user_id),
        status: status.into(),
        device_id: device.map(String::from),
        at: SystemTime::now(),
    }
}

fn webhook(event_type: &'static str, data: Value) -> WebhookEvent {
    WebhookEvent {
        event_type: event_type.into(),
        data,
    }
}

/// One of every request that writes a row a webhook describes (see the event list in
/// `with_webhooks_each_event_is_written_once_with_its_fields`).
async fn one_of_everything(journal: &Addr<Journal>) {
    // A connection opened and closed in different batches (the close is an UPDATE).
    journal.do_send(opened("s1", "alice", "node-a", ago(60)));
    flush(journal).await;
    journal.do_send(closed_by("s1", "alice", "node-a", "client_disconnect"));
    // One opened and closed within a batch (the close is folded into the insert).
    journal.do_send(opened("s2", "bob", "node-a", ago(5)));
    journal.do_send(closed_by("s2", "bob", "node-a", "timeout"));
    // A close of a row that does not exist: no row closed, so no event.
    journal.do_send(closed_by("ghost", "carol", "node-a", "timeout"));
    journal.do_send(presence("alice", "online", Some("alice-phone")));
    journal.do_send(presence("alice", "away", None));
    journal.do_send(presence("alice", "offline", None));
    flush(journal).await;
    store(journal, "alice", "bob", "hi\u{0} bob").await;
    assert_eq!(add(journal, "doc:1", "alice").await, Ok(true));
    assert_eq!(add(journal, "doc:1", "alice").await, Ok(false));
    assert_eq!(remove(journal, "doc:1", "alice").await, Ok(true));
    assert_eq!(remove(journal, "doc:1", "alice").await, Ok(false));
    journal.do_send(webhook(
        "room.joined",
        json!({"room": "doc:2", "userId": "carol", "source": "client", "id": "forged"}),
    ));
    journal.do_send(WebhookEvent {
        event_type: "bad\u{0}type".into(),
        data: json!({}),
    });
    flush(journal).await;
    // A node's rows closed by the sweep.
    journal.do_send(opened("s3", "dave", "node-b", ago(10)));
    flush(journal).await;
    let closed = CloseStaleConnections {
        server_instance: "node-b".into(),
        reason: NODE_LOST.into(),
    };
    assert_eq!(journal.send(closed.clone()).await.unwrap(), Ok(1));
    assert_eq!(journal.send(closed).await.unwrap(), Ok(0));
}

async fn with_webhooks_each_event_is_written_once_with_its_fields(backend: Backend) {
    let (test_db, journal) = journal(backend, webhooks_config()).await;
    one_of_everything(&journal).await;
    let db = test_db.inspect().await;
    let rows = outbox_rows(&db).await;
    assert_eq!(
        event_types(&rows),
        [
            "socket.connected",
            "socket.disconnected",
            "socket.connected",
            "socket.disconnected",
            "user.online",
            "user.offline",
            "message.stored",
            "room.joined",
            "room.left",
            "room.joined",
            "socket.connected",
            "socket.disconnected",
        ]
    );
    let events: Vec<Value> = rows.iter().map(event_of).collect();
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
    let expected = [
        json!({"type": "socket.connected", "socketId": "s1", "userId": "alice",
               "deviceId": "alice-phone", "nodeId": "node-a", "ip": "10.1.2.3"}),
        json!({"type": "socket.disconnected", "socketId": "s1", "userId": "alice",
               "nodeId": "node-a", "reason": "client_disconnect"}),
        json!({"type": "socket.connected", "socketId": "s2", "userId": "bob",
               "deviceId": "bob-phone", "nodeId": "node-a", "ip": "10.1.2.3"}),
        json!({"type": "socket.disconnected", "socketId": "s2", "userId": "bob",
               "nodeId": "node-a", "reason": "timeout"}),
        json!({"type": "user.online", "userId": "alice", "deviceId": "alice-phone"}),
        json!({"type": "user.offline", "userId": "alice", "deviceId": null}),
        json!({"type": "message.stored", "messageId": 1, "from": "alice", "to": "bob",
               "text": "hi bob", "createdAt": events[6]["createdAt"]}),
        json!({"type": "room.joined", "room": "doc:1", "userId": "alice", "source": "api"}),
        json!({"type": "room.left", "room": "doc:1", "userId": "alice", "source": "api"}),
        json!({"type": "room.joined", "room": "doc:2", "userId": "carol", "source": "client"}),
        json!({"type": "socket.connected", "socketId": "s3", "userId": "dave",
               "deviceId": "dave-phone", "nodeId": "node-b", "ip": "10.1.2.3"}),
        json!({"type": "socket.disconnected", "socketId": "s3", "userId": "dave",
               "nodeId": "node-b", "reason": "node_lost"}),
    ];
    for (i, (event, expected)) in events.iter().zip(&expected).enumerate() {
        assert_eq!(&fields(event.clone()), expected, "event {i}");
    }
    // `at` is when it happened: the connect time, the message's commit time.
    let s1 = connection(&db, "s1").await;
    assert_eq!(events[0]["at"], s1.connected_at.timestamp_millis());
    assert_eq!(events[6]["at"], events[6]["createdAt"]);
    let stored = message::Entity::find().one(&db).await.unwrap().unwrap();
    assert_eq!(events[6]["createdAt"], stored.created_at.timestamp_millis());
    assert_ne!(
        events[9]["id"], "forged",
        "a WebhookEvent cannot set the id"
    );
    let depth = journal.send(WebhookDepth).await.unwrap().unwrap();
    assert_eq!(depth, rows.len() as u64);
}

async fn with_webhooks_off_no_outbox_rows_are_written(backend: Backend) {
    let (test_db, journal) = journal(backend, fast_config()).await;
    one_of_everything(&journal).await;
    let db = test_db.inspect().await;
    assert!(outbox_rows(&db).await.is_empty());
    assert_eq!(journal.send(WebhookDepth).await.unwrap(), Ok(0));
    // The rows themselves are there.
    assert_eq!(
        socket_connection::Entity::find().count(&db).await.unwrap(),
        3
    );
    assert_eq!(presence_log::Entity::find().count(&db).await.unwrap(), 3);
    assert_eq!(message::Entity::find().count(&db).await.unwrap(), 1);
}

/// The outbox table goes away under a running Journal: every transaction that would write an
/// event fails as a whole, so its rows are not written either.
async fn a_refused_transaction_leaves_neither_rows_nor_events(backend: Backend) {
    let (test_db, journal) = journal(backend, webhooks_config()).await;
    let db = test_db.inspect().await;
    db.execute_unprepared(r#"DROP TABLE "webhook_outbox""#)
        .await
        .unwrap();

    let err = journal
        .send(StoreMessage {
            from: user("alice"),
            to: "bob".into(),
            text: "lost".into(),
            client_msg_id: None,
            span: tracing::Span::none(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, JournalError::Database(_)), "{err:?}");
    assert_eq!(message::Entity::find().count(&db).await.unwrap(), 0);

    assert!(matches!(
        add(&journal, "doc:1", "alice").await,
        Err(JournalError::Database(_))
    ));
    assert_eq!(room_membership::Entity::find().count(&db).await.unwrap(), 0);

    journal.do_send(opened("s1", "alice", "node-a", SystemTime::now()));
    journal.do_send(presence("alice", "online", None));
    journal.do_send(presence("alice", "away", None));
    flush(&journal).await;
    let stats = read_stats(&journal).await;
    // `away` has no event: only its row is written. The batch was refused, then each row
    // alone; the two with events were dropped.
    assert_eq!((stats.dropped, stats.queue_depth), (2, 0), "{stats:?}");
    assert_eq!(
        socket_connection::Entity::find().count(&db).await.unwrap(),
        0
    );
    let presence_rows = presence_log::Entity::find().all(&db).await.unwrap();
    let statuses: Vec<&str> = presence_rows.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["away"]);
}

/// One row of a batch is refused (a test-only unique index allows one presence row per user):
/// the batch is retried row by row, and only that row's event is missing.
async fn a_dropped_or_refused_log_row_takes_only_its_own_event(backend: Backend) {
    let config = JournalConfig {
        queue_limit: 4,
        flush_interval: Duration::from_secs(3600),
        ..webhooks_config()
    };
    let (test_db, journal) = journal(backend, config).await;
    let db = test_db.inspect().await;
    db.execute_unprepared(
        r#"CREATE UNIQUE INDEX "test_one_presence_row_per_user" ON "presence_logs" ("user_id")"#,
    )
    .await
    .unwrap();
    journal.do_send(presence("alice", "online", Some("a1")));
    journal.do_send(presence("bob", "online", Some("b1")));
    journal.do_send(presence("alice", "offline", Some("a1"))); // refused by the index
    journal.do_send(webhook("custom.kept", json!({"n": 1})));
    // Past the queue limit: dropped with its event.
    journal.do_send(presence("carol", "online", Some("c1")));
    journal.do_send(webhook("custom.dropped", json!({"n": 2})));
    flush(&journal).await;
    let stats = read_stats(&journal).await;
    assert_eq!((stats.dropped, stats.queue_depth), (3, 0), "{stats:?}");
    let rows = outbox_rows(&db).await;
    assert_eq!(
        event_types(&rows),
        ["user.online", "user.online", "custom.kept"]
    );
    let users: Vec<Value> = rows.iter().map(|r| event_of(r)["userId"].clone()).collect();
    assert_eq!(users, [json!("alice"), json!("bob"), Value::Null]);
    let presence_rows = presence_log::Entity::find().all(&db).await.unwrap();
    let got: Vec<(&str, &str)> = presence_rows
        .iter()
        .map(|r| (r.user_id.as_str(), r.status.as_str()))
        .collect();
    assert_eq!(got, [("alice", "online"), ("bob", "online")]);
}

async fn lease(journal: &Addr<Journal>, holder: &str, ttl: Duration) -> bool {
    journal
        .send(AcquireWebhookLease {
            holder: NodeId::from(holder),
            ttl,
        })
        .await
        .unwrap()
        .unwrap()
}

async fn the_webhook_lease_has_one_holder_at_a_time(backend: Backend) {
    let (_db, journal) = journal(backend, fast_config()).await;
    const LONG: Duration = Duration::from_secs(60);
    let contenders = (0..8).map(|i| {
        let journal = journal.clone();
        async move { (i, lease(&journal, &format!("node-{i}"), LONG).await) }
    });
    let winners: Vec<usize> = join_all(contenders)
        .await
        .into_iter()
        .filter_map(|(i, won)| won.then_some(i))
        .collect();
    assert_eq!(winners.len(), 1, "winners {winners:?}");
    let winner = format!("node-{}", winners[0]);
    let other = format!("node-{}", (winners[0] + 1) % 8);
    assert!(
        lease(&journal, &winner, LONG).await,
        "the holder extends it"
    );
    assert!(!lease(&journal, &other, LONG).await);

    // The holder shortens it to 2 s and stops extending: it lapses, another node takes it.
    let short = Duration::from_secs(2);
    assert!(lease(&journal, &winner, short).await);
    assert!(!lease(&journal, &other, LONG).await, "not before it lapses");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !lease(&journal, &other, LONG).await {
        assert!(Instant::now() < deadline, "the lease never lapsed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !lease(&journal, &winner, LONG).await,
        "the old holder lost it"
    );
    assert!(lease(&journal, &other, LONG).await);

    let invalid = journal
        .send(AcquireWebhookLease {
            holder: NodeId::from(""),
            ttl: LONG,
        })
        .await
        .unwrap();
    assert!(matches!(invalid, Err(JournalError::Invalid(_))));
}

async fn take(journal: &Addr<Journal>, limit: usize, settled_for: Duration) -> Vec<OutboxEvent> {
    journal
        .send(TakeWebhooks { limit, settled_for })
        .await
        .unwrap()
        .unwrap()
}

fn numbers(events: &[OutboxEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.event["n"].as_u64().unwrap())
        .collect()
}

async fn outbox_rows_are_taken_in_order_acked_failed_and_dead_lettered(backend: Backend) {
    let (test_db, journal) = journal(backend, webhooks_config()).await;
    for n in 0..6 {
        journal.do_send(webhook("test.numbered", json!({"n": n})));
    }
    flush(&journal).await;
    let depth = || async { journal.send(WebhookDepth).await.unwrap().unwrap() };
    assert_eq!(depth().await, 6);

    let first = take(&journal, 3, Duration::ZERO).await;
    assert_eq!(numbers(&first), [0, 1, 2]);
    assert!(first.windows(2).all(|w| w[0].id < w[1].id), "ascending ids");
    assert!(first.iter().all(|e| e.attempts == 0));
    assert_eq!(first[0].event["type"], "test.numbered");
    let age = SystemTime::now()
        .duration_since(first[0].created_at)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(60), "created_at {age:?} ago");
    assert!(first[0].created_at > UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    assert!(take(&journal, 0, Duration::ZERO).await.is_empty());

    let ids = |events: &[OutboxEvent], at: &[usize]| -> Vec<i64> {
        at.iter().map(|i| events[*i].id).collect()
    };
    // Taking is not removing: the same rows again, until acknowledged.
    assert_eq!(take(&journal, 3, Duration::ZERO).await, first);
    let fail = FailWebhooks {
        ids: ids(&first, &[0]),
    };
    assert_eq!(journal.send(fail.clone()).await.unwrap(), Ok(1));
    assert_eq!(journal.send(fail).await.unwrap(), Ok(1));
    let again = take(&journal, 1, Duration::ZERO).await;
    assert_eq!((numbers(&again), again[0].attempts), (vec![0], 2));

    let dead = DeadLetterWebhooks {
        ids: ids(&first, &[1]),
    };
    assert_eq!(journal.send(dead.clone()).await.unwrap(), Ok(1));
    assert_eq!(journal.send(dead).await.unwrap(), Ok(0), "dead already");
    assert_eq!(depth().await, 5);
    assert_eq!(numbers(&take(&journal, 3, Duration::ZERO).await), [0, 2, 3]);

    let ack = AckWebhooks {
        ids: ids(&first, &[0, 2]),
    };
    assert_eq!(journal.send(ack.clone()).await.unwrap(), Ok(2));
    assert_eq!(journal.send(ack).await.unwrap(), Ok(0), "acked already");
    assert_eq!(
        journal.send(AckWebhooks { ids: vec![] }).await.unwrap(),
        Ok(0)
    );
    assert_eq!(depth().await, 3);
    assert_eq!(
        numbers(&take(&journal, 10, Duration::ZERO).await),
        [3, 4, 5]
    );

    // Retention: the dead row goes once it is older than the connections' retention.
    let db = test_db.inspect().await;
    let dead_rows = || async {
        webhook_outbox::Entity::find()
            .filter(webhook_outbox::Column::Status.eq("dead"))
            .count(&db)
            .await
            .unwrap()
    };
    let sweep = |age: Duration| RetentionSweep {
        connections_older_than: age,
        presence_older_than: age,
        messages_older_than: None,
    };
    journal
        .send(sweep(Duration::from_secs(3600)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead_rows().await, 1, "kept while young");
    tokio::time::sleep(Duration::from_millis(20)).await;
    journal.send(sweep(Duration::ZERO)).await.unwrap().unwrap();
    assert_eq!(dead_rows().await, 0, "swept once old");
    assert_eq!(depth().await, 3, "pending rows are never swept");
}

/// Rows can commit out of id order (other nodes, the message transaction): a fresh row holds
/// back every row behind it, even settled ones.
async fn the_settle_window_holds_back_everything_behind_a_fresh_row(backend: Backend) {
    let (test_db, journal) = journal(backend, webhooks_config()).await;
    journal.do_send(webhook("test.fresh", json!({"n": 1})));
    flush(&journal).await;
    // A row with a higher id written an hour ago, as a slow transaction elsewhere might.
    let db = test_db.inspect().await;
    webhook_outbox::Entity::insert(webhook_outbox::ActiveModel {
        id: NotSet,
        event_id: Set(uuid::Uuid::new_v4().to_string()),
        event_type: Set("test.old".into()),
        payload: Set(r#"{"type":"test.old","n":2}"#.into()),
        created_at: Set(ago(3600).into()),
        status: Set("pending".into()),
        attempts: Set(0),
    })
    .exec_without_returning(&db)
    .await
    .unwrap();
    let settle = Duration::from_secs(600);
    assert!(take(&journal, 10, settle).await.is_empty());
    assert_eq!(numbers(&take(&journal, 10, Duration::ZERO).await), [1, 2]);
    // Once the fresh row has settled (here: a shorter window), both go, in id order.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let both = take(&journal, 10, Duration::from_millis(10)).await;
    assert_eq!(numbers(&both), [1, 2]);
}

fn with_client_id(from: &str, to: &str, text: &str, cid: &str) -> StoreMessage {
    StoreMessage {
        from: user(from),
        to: to.into(),
        text: text.into(),
        client_msg_id: Some(cid.into()),
        span: tracing::Span::none(),
    }
}

async fn a_client_msg_id_is_stored_once_per_sender(backend: Backend) {
    let (_db, journal) = journal(backend, fast_config()).await;
    let first = journal
        .send(with_client_id("alice", "bob", "hello", "c-1"))
        .await
        .unwrap()
        .unwrap();
    assert!(!first.duplicate);
    // A retry, even with other text: the first row, marked as a duplicate.
    let retry = journal
        .send(with_client_id("alice", "bob", "hello again", "c-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (retry.message_id, retry.text.as_str(), retry.duplicate),
        (first.message_id, "hello", true)
    );
    // The same id from another sender is another message.
    let other = journal
        .send(with_client_id("carol", "bob", "hi", "c-1"))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(other.message_id, first.message_id);
    // Concurrent retries land in one batch: one row, every answer naming it.
    let answers = join_all(
        (0..5).map(|i| journal.send(with_client_id("alice", "bob", &format!("burst {i}"), "c-2"))),
    )
    .await;
    let ids: HashSet<u64> = answers
        .into_iter()
        .map(|a| a.unwrap().unwrap().message_id)
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let page = journal
        .send(SyncMessages {
            user: user("bob"),
            after: 0,
            limit: 100,
        })
        .await
        .unwrap()
        .unwrap();
    let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["hello", "hi", "burst 0"],
        "each client id stored once"
    );
    let bad = journal
        .send(with_client_id("alice", "bob", "x", "bad\u{7}id"))
        .await
        .unwrap();
    assert!(matches!(bad, Err(JournalError::Invalid(_))), "{bad:?}");
}

/// A COMMIT that outlives the database timeout answers `InDoubt`, not "unavailable": the row
/// may be in (here it is: a deferred trigger makes the commit slow, not failed), and a retry
/// with the same client id finds it.
#[actix::test]
async fn a_commit_without_an_answer_is_in_doubt_and_a_retry_finds_the_row() {
    let test_db = TestDb::create(Backend::Postgres).await;
    let config = JournalConfig {
        db_timeout: Duration::from_secs(1),
        flush_interval: Duration::from_millis(10),
        ..JournalConfig::default()
    };
    let journal = Journal::connect(&test_db.url, config)
        .await
        .unwrap()
        .start();
    let db = test_db.inspect().await;
    for sql in [
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON messages \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
    ] {
        db.execute_unprepared(sql).await.unwrap();
    }
    let err = journal
        .send(with_client_id("alice", "bob", "slow", "c-slow"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_in_doubt(), "{err:?}");
    db.execute_unprepared("DROP TRIGGER slow_commit ON messages")
        .await
        .unwrap();
    // The commit finished after the answer: the retry is answered with that row.
    let deadline = Instant::now() + Duration::from_secs(10);
    let retry = loop {
        match journal
            .send(with_client_id("alice", "bob", "slow", "c-slow"))
            .await
            .unwrap()
        {
            Ok(stored) => break stored,
            Err(err) if Instant::now() < deadline => {
                assert!(err.is_unavailable() || err.is_in_doubt(), "{err:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("{err:?}"),
        }
    };
    assert!(retry.duplicate, "{retry:?}");
    let rows = message::Entity::find().all(&db).await.unwrap();
    assert_eq!(rows.len(), 1, "stored once");
}

/// SQLite: a send with a client id reads before it writes. Another connection that holds the
/// write lock and commits meanwhile (here: the node's own log writer, played by a second
/// connection) must make the send wait, not fail it (a deferred transaction would fail with
/// `SQLITE_BUSY_SNAPSHOT` at its first write).
#[actix::test]
async fn a_client_id_send_waits_for_another_sqlite_writer() {
    let test_db = TestDb::create(Backend::Sqlite).await;
    let journal = Journal::connect(&test_db.url, fast_config())
        .await
        .unwrap()
        .start();
    journal.send(JournalStats).await.unwrap();
    let other = test_db.inspect().await;
    let txn = other
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        })
        .await
        .unwrap();
    txn.execute_unprepared(
        r#"INSERT INTO "room_memberships" ("room", "user_id", "created_at")
           VALUES ('r', 'u', '2026-12-03 00:00:00')"#,
    )
    .await
    .unwrap();
    let send = tokio::spawn(journal.send(with_client_id("alice", "bob", "waits", "c-w")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    txn.commit().await.unwrap();
    let stored = send.await.unwrap().unwrap();
    assert!(stored.is_ok(), "{stored:?}");
}
