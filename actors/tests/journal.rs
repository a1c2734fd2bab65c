//! The Journal against real databases: every scenario runs on a temporary SQLite file and on
//! a throwaway PostgreSQL database (see `switchboard_test_support::TestDb`).

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use futures_util::future::join_all;
use migration::{Migrator, MigratorTrait, SchemaManager};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use switchboard_actors::UserId;
use switchboard_actors::journal::entities::{presence_log, socket_connection};
use switchboard_actors::journal::{Journal, JournalConfig};
use switchboard_actors::ports::journal::{
    CheckDatabase, CloseStaleConnections, ConnectionClosed, ConnectionOpened, Flush, JournalError,
    JournalStats, NODE_LOST, PresenceLogged, RetentionSweep, Stats, StoreMessage, StoredMessage,
    SyncMessages,
};
use switchboard_test_support::{
    Backend, TcpProxy, TestDb, on_both_backends, postgres_server_url, server_address, with_database,
};

on_both_backends!(
    #[actix::test]
    migrations_go_up_down_and_up_again,
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
    let tables = ["socket_connections", "presence_logs", "messages"];
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

    // One batch with a clean row and rows full of NULs and over-long values.
    journal.do_send(opened("clean", "alice", "node-a", SystemTime::now()));
    journal.do_send(ConnectionOpened {
        socket_id: "dirty\u{0}".into(),
        user_id: user("al\u{0}ice"),
        device_id: "d\u{0}".into(),
        server_instance: "node-a".into(),
        ip_address: "1".repeat(100),
        user_agent: Some("agent\u{0}".into()),
        connected_at: SystemTime::now(),
    });
    journal.do_send(PresenceLogged {
        user_id: user("bob\u{0}"),
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
    let presence = presence_log::Entity::find()
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(presence.user_id, "bob");
    assert_eq!(
        presence.status, "online-and-a-very-lo",
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
    let deleted = journal
        .send(RetentionSweep {
            connections_older_than: Duration::from_secs(7 * DAY),
            presence_older_than: Duration::from_secs(30 * DAY),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted, (2, 1));
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
