//! Persistence, black-box: a real node on a real database, driven by real Socket.IO clients;
//! what it wrote is read back from the database with sea-orm.
//!
//! Every scenario runs twice, as `scenario::sqlite` (a file in a temporary directory) and
//! `scenario::postgres` (a throwaway database `switchboard_test_<random>` on the PostgreSQL server
//! at `SWITCHBOARD_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`,
//! dropped at the end even when the test fails). The database outage runs on PostgreSQL only,
//! behind a TCP proxy the test cuts and restores.
//!
//! Log rows are written in batches (about every 50 ms): every wait for them is a bounded poll,
//! never a fixed sleep.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::prelude::{DateTimeUtc, Uuid};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Statement,
};
use serde_json::{Value, json};
use switchboard_actors::auth::mint_hs256;
use switchboard_actors::journal::entities::{message, presence_log, socket_connection};
use switchboard_test_support::{
    Backend, ScratchDir, TcpProxy, TestDb, on_both_backends, server_address,
};
use switchboard_tests::{Node, SioClient, WsEvent, binary_path, http_get, metric, within_for};

/// The HS256 secret every node here verifies tokens with.
const SECRET: &str = "switchboard-persistence-tests-secret";

/// `--node-id` of every node here (the `server_instance` column).
const NODE_ID: &str = "persist-1";

/// Longest a batched log row may take to show up in the database.
const ROWS_TIMEOUT: Duration = Duration::from_secs(10);

on_both_backends!(
    #[tokio::test]
    migration_cli_creates_and_drops_the_tables,
    connection_rows_record_sessions_and_close_reasons,
    presence_transitions_are_logged_in_order,
    durable_messages_survive_reconnects_and_restarts,
    an_offline_burst_is_synced_once_in_order,
    pipelined_sends_keep_the_senders_order,
    retention_sweep_deletes_exactly_the_rows_past_their_age,
);

// ---------------------------------------------------------------------------------------------
// Databases

/// The tables of the database (SQLite's internal ones left out), sorted.
async fn tables(db: &DatabaseConnection, backend: Backend) -> Vec<String> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' ORDER BY name"
        }
        Backend::Postgres => {
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY 1"
        }
    };
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("list tables: {e}"));
    rows.iter()
        .map(|row| row.try_get::<String>("", "name").expect("a table name"))
        .collect()
}

/// Every `socket_connections` row of `user`, oldest connection first.
async fn connection_rows(db: &DatabaseConnection, user: &str) -> Vec<socket_connection::Model> {
    socket_connection::Entity::find()
        .filter(socket_connection::Column::UserId.eq(user))
        .order_by_asc(socket_connection::Column::ConnectedAt)
        .all(db)
        .await
        .unwrap_or_else(|e| panic!("read socket_connections: {e}"))
}

/// Every `presence_logs` row of `user`, in insertion order.
async fn presence_rows(db: &DatabaseConnection, user: &str) -> Vec<presence_log::Model> {
    presence_log::Entity::find()
        .filter(presence_log::Column::UserId.eq(user))
        .order_by_asc(presence_log::Column::Id)
        .all(db)
        .await
        .unwrap_or_else(|e| panic!("read presence_logs: {e}"))
}

/// The statuses of `user`'s presence rows, in order.
async fn presence_statuses(db: &DatabaseConnection, user: &str) -> Vec<String> {
    presence_rows(db, user)
        .await
        .into_iter()
        .map(|r| r.status)
        .collect()
}

/// The row of `socket_id`, once it exists.
async fn open_row(db: &DatabaseConnection, socket_id: &str) -> socket_connection::Model {
    eventually(
        &format!("the socket_connections row of {socket_id}"),
        ROWS_TIMEOUT,
        || async {
            socket_connection::Entity::find()
                .filter(socket_connection::Column::SocketId.eq(socket_id))
                .one(db)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "no row yet".to_string())
        },
    )
    .await
}

/// The row of `socket_id`, once it is closed (`disconnected_at` set).
async fn closed_row(db: &DatabaseConnection, socket_id: &str) -> socket_connection::Model {
    eventually(
        &format!("socket {socket_id}'s row to be closed"),
        ROWS_TIMEOUT,
        || async {
            let row = socket_connection::Entity::find()
                .filter(socket_connection::Column::SocketId.eq(socket_id))
                .one(db)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "no row yet".to_string())?;
            if row.disconnected_at.is_some() {
                Ok(row)
            } else {
                Err(format!("still open: {row:?}"))
            }
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Nodes, clients, waits

/// Start a product-mode node on `database_url` with the test secret and node id, a per-user
/// message limit no scenario reaches, and `extra` flags.
async fn start_node(database_url: &str, extra: &[&str]) -> Node {
    let mut args = vec![
        "--jwt-secret",
        SECRET,
        "--node-id",
        NODE_ID,
        "--database-url",
        database_url,
        "--user-message-limit",
        "10000",
    ];
    args.extend_from_slice(extra);
    Node::start(&args).await
}

/// An authenticated client of `user` on device `device`.
async fn client(node: &Node, user: &str, device: &str) -> SioClient {
    let token = mint_hs256(SECRET.as_bytes(), user, 3600, &[]);
    let client = SioClient::connect(node.addr(), json!({"token": token, "deviceId": device})).await;
    assert_eq!(
        client.hello["userId"], user,
        "authenticated: {}",
        client.hello
    );
    assert_eq!(
        client.hello["deviceId"], device,
        "authenticated: {}",
        client.hello
    );
    assert_eq!(
        client.hello["serverInstance"], NODE_ID,
        "authenticated: {}",
        client.hello
    );
    client
}

/// Poll `probe` every 50 ms until it answers `Ok`, for at most `limit`; on timeout, panic with
/// `what` and the last `Err`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `message:send` with an ack, which must be `ok`; returns the message as `message:sync` and
/// `message:received` carry it.
async fn send(client: &mut SioClient, from: &str, to: &str, text: &str) -> Value {
    let ack = client
        .call("message:send", json!({"to": to, "text": text}))
        .await;
    stored_message(&ack, from, to, text)
}

/// The message an `ok` ack of `message:send` stands for.
fn stored_message(ack: &Value, from: &str, to: &str, text: &str) -> Value {
    assert_eq!(ack["ok"], true, "message:send ack: {ack}");
    let id = ack["messageId"]
        .as_u64()
        .unwrap_or_else(|| panic!("messageId is not a positive integer: {ack}"));
    let created_at = ack["createdAt"]
        .as_u64()
        .unwrap_or_else(|| panic!("createdAt is not a number: {ack}"));
    json!({"messageId": id, "from": from, "to": to, "text": text, "createdAt": created_at})
}

fn message_id(message: &Value) -> u64 {
    message["messageId"]
        .as_u64()
        .unwrap_or_else(|| panic!("no messageId in {message}"))
}

/// One `message:sync` page: its messages and `hasMore`.
async fn sync_page(client: &mut SioClient, after: u64, limit: u64) -> (Vec<Value>, bool) {
    let ack = client
        .call("message:sync", json!({"after": after, "limit": limit}))
        .await;
    assert_eq!(ack["ok"], true, "message:sync ack: {ack}");
    let messages = ack["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("messages is not an array: {ack}"))
        .clone();
    let has_more = ack["hasMore"]
        .as_bool()
        .unwrap_or_else(|| panic!("hasMore is not a boolean: {ack}"));
    (messages, has_more)
}

/// Walk `message:sync` from `after` in pages of `limit`: every page is full while `hasMore`,
/// ids strictly ascend across pages; returns every message and the page sizes.
async fn sync_all(client: &mut SioClient, after: u64, limit: u64) -> (Vec<Value>, Vec<usize>) {
    let mut all: Vec<Value> = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor = after;
    loop {
        let (page, has_more) = sync_page(client, cursor, limit).await;
        sizes.push(page.len());
        for message in &page {
            let id = message_id(message);
            assert!(
                id > cursor,
                "message {id} in a page after cursor {cursor}: {message}"
            );
            cursor = id;
        }
        all.extend(page.iter().cloned());
        if !has_more {
            return (all, sizes);
        }
        assert_eq!(
            page.len() as u64,
            limit,
            "a page with hasMore must be full; after {after}, pages so far {sizes:?}"
        );
        assert!(sizes.len() < 10_000, "message:sync never ends");
    }
}

/// `GET /health` until it answers `status` with `"database": database`.
async fn wait_for_health(addr: SocketAddr, status: u16, database: &str) -> Value {
    eventually(
        &format!("GET /health {status} with database {database:?}"),
        Duration::from_secs(20),
        || async {
            let res = http_get(addr, "/health").await;
            let body = res.json();
            if res.status == status && body["database"] == database {
                Ok(body)
            } else {
                Err(format!("{} {body}", res.status))
            }
        },
    )
    .await
}

/// `metric` until it equals `value`.
async fn wait_for_metric(addr: SocketAddr, name: &str, value: f64) {
    eventually(
        &format!("{name} == {value}"),
        Duration::from_secs(20),
        || async {
            let got = metric(addr, name).await;
            if got == value {
                Ok(())
            } else {
                Err(format!("{name} = {got}"))
            }
        },
    )
    .await
}

fn millis(at: DateTimeUtc) -> i64 {
    at.timestamp_millis()
}

fn now_millis() -> i64 {
    millis(DateTimeUtc::from(SystemTime::now()))
}

// ---------------------------------------------------------------------------------------------
// Migrations

/// The migration CLI: `$SWITCHBOARD_MIGRATION_BIN`, or the workspace's debug build.
fn migration_binary() -> PathBuf {
    match std::env::var_os("SWITCHBOARD_MIGRATION_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/migration"),
    }
}

/// Run the migration CLI against `url` with `args`; panics unless it succeeds.
async fn migration_cli(url: &str, args: &[&str]) {
    let bin = migration_binary();
    assert!(
        bin.is_file(),
        "migration CLI not found at {}: run `cargo build -p migration` first \
         (or point SWITCHBOARD_MIGRATION_BIN at it)",
        bin.display()
    );
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("-u")
        .arg(url)
        .args(args)
        // The CLI reads these too; only the flags given here may count.
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_SCHEMA")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = within_for(
        Duration::from_secs(60),
        &format!("migration {args:?}"),
        cmd.output(),
    )
    .await
    .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "migration {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Journal tables, sorted.
const JOURNAL_TABLES: [&str; 6] = [
    "messages",
    "presence_logs",
    "room_memberships",
    "socket_connections",
    "webhook_lease",
    "webhook_outbox",
];

/// Which of the Journal tables exist.
async fn journal_tables(db: &DatabaseConnection, backend: Backend) -> Vec<String> {
    tables(db, backend)
        .await
        .into_iter()
        .filter(|t| JOURNAL_TABLES.contains(&t.as_str()))
        .collect()
}

/// `migration up` creates the tables, `down` rolls back the last migration (the messages'
/// client id column), another `down` the webhook outbox and lease, `down -n 4` the other four, `up` brings them all back; a node then starts
/// on the database (nothing left to migrate) and stores a message in it.
async fn migration_cli_creates_and_drops_the_tables(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    migration_cli(&test_db.url, &["up"]).await;
    let db = test_db.inspect().await;
    assert_eq!(
        journal_tables(&db, backend).await,
        JOURNAL_TABLES,
        "tables after `up`"
    );
    assert!(
        tables(&db, backend)
            .await
            .contains(&"seaql_migrations".to_string()),
        "the migration history table after `up`"
    );

    let client_ids = "SELECT client_msg_id FROM messages";
    assert!(db.execute_unprepared(client_ids).await.is_ok());
    migration_cli(&test_db.url, &["down"]).await;
    assert_eq!(
        journal_tables(&db, backend).await,
        JOURNAL_TABLES,
        "tables after `down` (the last migration, a column, rolled back)"
    );
    assert!(
        db.execute_unprepared(client_ids).await.is_err(),
        "messages.client_msg_id is gone after `down`"
    );
    migration_cli(&test_db.url, &["down"]).await;
    assert_eq!(
        journal_tables(&db, backend).await,
        [
            "messages",
            "presence_logs",
            "room_memberships",
            "socket_connections"
        ],
        "tables after a second `down` (the webhook tables rolled back)"
    );
    migration_cli(&test_db.url, &["down", "-n", "4"]).await;
    assert_eq!(
        journal_tables(&db, backend).await,
        Vec::<String>::new(),
        "tables after rolling every migration back"
    );

    migration_cli(&test_db.url, &["up"]).await;
    assert_eq!(
        journal_tables(&db, backend).await,
        JOURNAL_TABLES,
        "tables after `up` again"
    );
    let mut node = start_node(&test_db.url, &[]).await;
    let mut alice = client(&node, "alice", "alice-phone").await;
    let stored = send(&mut alice, "alice", "bob", "first").await;
    assert_eq!(message_id(&stored), 1, "the first message of a fresh table");
    node.assert_healthy().await;
}

// ---------------------------------------------------------------------------------------------
// Connection rows

/// One row per authenticated socket, closed at disconnect with the reason and the event counts:
/// a clean `41` + Close (`client_disconnect`), a dropped TCP connection (`transport_close` or
/// `transport_error`), and a client that stops answering pings (`timeout`).
async fn connection_rows_record_sessions_and_close_reasons(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let started = now_millis();
    let mut node = start_node(
        &test_db.url,
        &["--ping-interval-ms", "300", "--ping-timeout-ms", "200"],
    )
    .await;
    let db = test_db.inspect().await;

    let mut bob = client(&node, "bob", "bob-phone").await;
    let mut alice = client(&node, "alice", "alice-laptop").await;
    let alice_socket = alice.socket_id().to_owned();
    let bob_socket = bob.socket_id().to_owned();

    // The open row is there while the socket is connected.
    let open = open_row(&db, &alice_socket).await;
    assert_eq!(open.user_id, "alice");
    assert_eq!(open.device_id, "alice-laptop");
    assert_eq!(open.server_instance.as_deref(), Some(NODE_ID));
    assert_eq!(
        (open.disconnected_at, open.disconnect_reason.as_deref()),
        (None, None)
    );
    assert_eq!(open.duration_seconds, None);

    // Alice sends 5 events (3 typing, 2 message:send); Bob gets 5 pushes.
    for _ in 0..3 {
        alice.emit("typing", json!({"to": "bob"}));
    }
    for i in 0..2 {
        send(&mut alice, "alice", "bob", &format!("hello {i}")).await;
    }
    for _ in 0..3 {
        assert_eq!(bob.event("typing").await, json!({"from": "alice"}));
    }
    for _ in 0..2 {
        bob.event("message:received").await;
    }
    // Bob sends 1 event; Alice gets 1 push.
    bob.emit("typing", json!({"to": "alice"}));
    assert_eq!(alice.event("typing").await, json!({"from": "bob"}));

    alice.disconnect().await;
    let row = closed_row(&db, &alice_socket).await;
    let closed_by = now_millis();
    assert_eq!(row.user_id, "alice");
    assert_eq!(row.device_id, "alice-laptop");
    assert_eq!(row.server_instance.as_deref(), Some(NODE_ID));
    assert_eq!(row.ip_address, "127.0.0.1");
    assert_eq!(row.disconnect_reason.as_deref(), Some("client_disconnect"));
    assert_eq!(
        (row.messages_received, row.messages_sent),
        (5, 1),
        "(events alice sent, events pushed to alice)"
    );
    let (connected, disconnected) = (
        millis(row.connected_at),
        millis(row.disconnected_at.expect("closed")),
    );
    assert!(
        started - 1000 <= connected
            && connected <= disconnected
            && disconnected <= closed_by + 1000,
        "connected_at {connected}, disconnected_at {disconnected}, test ran {started}..{closed_by}"
    );
    let duration = row
        .duration_seconds
        .expect("duration_seconds of a closed row");
    assert!(
        duration >= 0 && i64::from(duration) <= (closed_by - started) / 1000 + 1,
        "duration_seconds {duration}"
    );
    assert_eq!(connection_rows(&db, "alice").await.len(), 1, "alice's rows");

    // Bob's network goes away: no Close frame, no `41`.
    bob.drop_connection().await;
    let row = closed_row(&db, &bob_socket).await;
    assert!(
        matches!(
            row.disconnect_reason.as_deref(),
            Some("transport_close" | "transport_error")
        ),
        "reason of a dropped connection: {row:?}"
    );
    assert_eq!(
        (row.messages_received, row.messages_sent),
        (1, 5),
        "(events bob sent, events pushed to bob)"
    );
    assert_eq!(row.device_id, "bob-phone");
    assert!(row.duration_seconds.is_some_and(|d| d >= 0), "{row:?}");
    assert_eq!(connection_rows(&db, "bob").await.len(), 1, "bob's rows");

    // Carol stops answering pings: the node times her out (ping 300 ms + timeout 200 ms).
    let mut carol = client(&node, "carol", "carol-tablet").await;
    let carol_socket = carol.socket_id().to_owned();
    carol.stop_answering_pings();
    let how = carol.closed_within(Duration::from_secs(5)).await;
    assert!(
        matches!(how, WsEvent::Close(_) | WsEvent::Ended(_)),
        "{how:?}"
    );
    let row = closed_row(&db, &carol_socket).await;
    assert_eq!(row.disconnect_reason.as_deref(), Some("timeout"), "{row:?}");
    assert_eq!((row.messages_received, row.messages_sent), (0, 0));

    let all = socket_connection::Entity::find().all(&db).await.unwrap();
    assert_eq!(all.len(), 3, "one row per socket: {all:#?}");
    node.assert_healthy().await;
}

// ---------------------------------------------------------------------------------------------
// Presence rows

/// Transitions only, in order: the first socket logs `online` (with its device), a second
/// socket nothing, `status:set away` logs `away` (a repeated `away` nothing), the last socket
/// leaving logs `offline` (the first leaving nothing).
async fn presence_transitions_are_logged_in_order(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let mut node = start_node(&test_db.url, &[]).await;
    let db = test_db.inspect().await;

    let phone = client(&node, "alice", "alice-phone").await;
    eventually("alice's online row", ROWS_TIMEOUT, || async {
        let statuses = presence_statuses(&db, "alice").await;
        if statuses == ["online"] {
            Ok(())
        } else {
            Err(format!("{statuses:?}"))
        }
    })
    .await;
    let mut laptop = client(&node, "alice", "alice-laptop").await;
    let ack = laptop.call("status:set", json!({"status": "away"})).await;
    assert_eq!(ack, json!({"ok": true}));
    let ack = laptop.call("status:set", json!({"status": "away"})).await;
    assert_eq!(ack, json!({"ok": true}));
    phone.disconnect().await;
    // Alice is still connected (laptop): the presence query is the barrier after the phone left.
    let ack = laptop
        .call("presence:query", json!({"userIds": ["alice"]}))
        .await;
    assert_eq!(ack["statuses"]["alice"], "away", "{ack}");
    laptop.disconnect().await;

    // Rows are written in arrival order: once `offline` is there, everything before it is.
    let rows = eventually("alice's offline row", ROWS_TIMEOUT, || async {
        let rows = presence_rows(&db, "alice").await;
        if rows.iter().any(|r| r.status == "offline") {
            Ok(rows)
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await;
    let got: Vec<(&str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.status.as_str(), r.device_id.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("online", Some("alice-phone")),
            ("away", None),
            ("offline", None)
        ],
        "alice's presence rows"
    );
    let times: Vec<i64> = rows.iter().map(|r| millis(r.timestamp)).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "timestamps in order: {times:?}"
    );
    assert!(
        (now_millis() - times[0]).abs() < 60_000,
        "timestamps are now-ish: {times:?}"
    );
    let everyone = presence_log::Entity::find().all(&db).await.unwrap();
    assert_eq!(everyone.len(), 3, "no rows for anyone else: {everyone:#?}");
    node.assert_healthy().await;
}

// ---------------------------------------------------------------------------------------------
// Durable messages

/// Acked messages are committed: Bob, offline, gets them by `message:sync` after connecting
/// (whole and in pages of 2), live ones by push with the same id, the ones sent while he was
/// away again from his cursor; and after the node is killed and a new one starts on the same
/// database, everything is still there, ids keep ascending, and the sockets the dead node left
/// open are closed as `node_lost`.
async fn durable_messages_survive_reconnects_and_restarts(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let node = start_node(&test_db.url, &[]).await;
    let db = test_db.inspect().await;
    let mut alice = client(&node, "alice", "alice-phone").await;

    // Bob is offline.
    let mut expected: Vec<Value> = Vec::new();
    for i in 1..=5 {
        expected.push(send(&mut alice, "alice", "bob", &format!("while away {i}")).await);
    }
    let ids: Vec<u64> = expected.iter().map(message_id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "acked ids ascend: {ids:?}"
    );

    let mut bob = client(&node, "bob", "bob-phone").await;
    let (whole, has_more) = sync_page(&mut bob, 0, 100).await;
    assert_eq!(whole, expected, "message:sync {{after: 0}}");
    assert!(!has_more);
    let (paged, sizes) = sync_all(&mut bob, 0, 2).await;
    assert_eq!(sizes, [2, 2, 1], "page sizes with limit 2");
    assert_eq!(paged, expected, "message:sync in pages of 2");
    let last = message_id(&expected[4]);
    let (rest, has_more) = sync_page(&mut bob, last, 100).await;
    assert_eq!((rest.len(), has_more), (0, false), "nothing after the last");
    assert_eq!(
        bob.pending_events("message:received"),
        0,
        "messages sent while offline come by sync, not as pushes"
    );

    // Bob online: a live message arrives as a push with the id sync will show; his reply is
    // his message too.
    let live = send(&mut alice, "alice", "bob", "live").await;
    assert_eq!(bob.event("message:received").await, live);
    expected.push(live);
    let reply = send(&mut bob, "bob", "alice", "reply").await;
    assert_eq!(alice.event("message:received").await, reply);
    expected.push(reply.clone());
    let cursor = message_id(&reply);

    // Bob leaves; three more arrive; from his cursor he gets exactly those.
    bob.disconnect().await;
    let mut missed = Vec::new();
    for i in 1..=3 {
        missed.push(send(&mut alice, "alice", "bob", &format!("missed {i}")).await);
    }
    let mut bob = client(&node, "bob", "bob-tablet").await;
    let (got, sizes) = sync_all(&mut bob, cursor, 2).await;
    assert_eq!(got, missed, "message:sync from bob's cursor");
    assert_eq!(sizes, [2, 1]);
    expected.extend(missed);

    // Crash: the node is killed with two sockets open (their rows written first).
    let open_sockets = [alice.socket_id().to_owned(), bob.socket_id().to_owned()];
    for socket in &open_sockets {
        open_row(&db, socket).await;
    }
    drop((alice, bob));
    node.kill().await;

    let mut node = start_node(&test_db.url, &[]).await;
    let mut bob = client(&node, "bob", "bob-phone").await;
    let (everything, sizes) = sync_all(&mut bob, 0, 100).await;
    assert_eq!(sizes, [10]);
    assert_eq!(everything, expected, "every message after a restart");
    let mut alice = client(&node, "alice", "alice-phone").await;
    let after_restart = send(&mut alice, "alice", "bob", "after restart").await;
    assert!(
        message_id(&after_restart) > message_id(expected.last().unwrap()),
        "ids keep ascending across restarts: {after_restart} after {}",
        expected.last().unwrap()
    );
    assert_eq!(bob.event("message:received").await, after_restart);
    expected.push(after_restart);
    let (everything, _) = sync_all(&mut bob, 0, 4).await;
    assert_eq!(everything, expected, "every message, in pages of 4");

    // The new node closed what the killed one (same node id) left open.
    for socket in &open_sockets {
        let row = closed_row(&db, socket).await;
        assert_eq!(
            row.disconnect_reason.as_deref(),
            Some("node_lost"),
            "{row:?}"
        );
        assert!(row.duration_seconds.is_some_and(|d| d >= 0), "{row:?}");
    }
    node.assert_healthy().await;
}

/// Two senders fire 30 and 20 messages at an offline recipient without waiting for acks (so
/// stores share transactions); unrelated traffic runs alongside. The recipient's sync walks
/// exactly the 50 acked messages, ascending, none twice, each as acked.
async fn an_offline_burst_is_synced_once_in_order(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let mut node = start_node(&test_db.url, &[]).await;
    let mut alice = client(&node, "alice", "alice-phone").await;
    let mut carol = client(&node, "carol", "carol-phone").await;
    let mut dave = client(&node, "dave", "dave-phone").await;

    let mut pending = Vec::new();
    let mut unrelated = Vec::new();
    for i in 0..30 {
        let text = format!("alice {i}");
        pending.push((
            "alice",
            alice.emit_with_ack("message:send", json!({"to": "bob", "text": &text})),
            text,
        ));
        if i < 20 {
            let text = format!("carol {i}");
            pending.push((
                "carol",
                carol.emit_with_ack("message:send", json!({"to": "bob", "text": &text})),
                text,
            ));
        }
        if i < 5 {
            unrelated.push(
                dave.emit_with_ack("message:send", json!({"to": "erin", "text": "unrelated"})),
            );
        }
    }
    for id in unrelated {
        assert_eq!(dave.ack(id).await["ok"], true);
    }
    let mut expected = Vec::new();
    for (from, id, text) in pending {
        let sender = if from == "alice" {
            &mut alice
        } else {
            &mut carol
        };
        let ack = sender.ack(id).await;
        expected.push(stored_message(&ack, from, "bob", &text));
    }
    expected.sort_by_key(message_id);
    let ids: Vec<u64> = expected.iter().map(message_id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "50 distinct ids: {ids:?}"
    );

    let mut bob = client(&node, "bob", "bob-phone").await;
    let (got, sizes) = sync_all(&mut bob, 0, 7).await;
    assert_eq!(sizes, [7, 7, 7, 7, 7, 7, 7, 1], "pages of 7");
    assert_eq!(
        got, expected,
        "bob's 50 messages, ascending, once each, as acked"
    );
    let (got, _) = sync_all(&mut bob, 0, 500).await;
    assert_eq!(got, expected, "the same in one page");
    // Erin's messages are hers only.
    let mut erin = client(&node, "erin", "erin-phone").await;
    let (theirs, _) = sync_all(&mut erin, 0, 100).await;
    assert_eq!(theirs.len(), 5, "{theirs:?}");
    assert!(
        theirs
            .iter()
            .all(|m| m["from"] == "dave" && m["to"] == "erin")
    );
    node.assert_healthy().await;
}

/// One socket sends 20 messages without waiting for each ack (what a chat client does when its
/// user types fast): their ids, the recipient's sync, and the live pushes keep the order the
/// socket sent them in.
async fn pipelined_sends_keep_the_senders_order(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let mut node = start_node(&test_db.url, &[]).await;
    let mut alice = client(&node, "alice", "alice-phone").await;
    let texts: Vec<String> = (0..20).map(|i| format!("offline {i}")).collect();
    let ids: Vec<u64> = texts
        .iter()
        .map(|text| alice.emit_with_ack("message:send", json!({"to": "bob", "text": text})))
        .collect();
    let mut acked = Vec::new();
    for (id, text) in ids.into_iter().zip(&texts) {
        let ack = alice.ack(id).await;
        acked.push(stored_message(&ack, "alice", "bob", text));
    }
    let message_ids: Vec<u64> = acked.iter().map(message_id).collect();
    assert!(
        message_ids.windows(2).all(|w| w[0] < w[1]),
        "ids in the order alice sent the messages: {:?}",
        acked
            .iter()
            .map(|m| (message_id(m), m["text"].as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
    );
    let mut bob = client(&node, "bob", "bob-phone").await;
    let (synced, _) = sync_all(&mut bob, 0, 100).await;
    let synced_texts: Vec<&str> = synced
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(synced_texts, texts, "bob's sync, in the order alice sent");

    // Bob online: the pushes come in the order alice sent.
    let texts: Vec<String> = (0..20).map(|i| format!("live {i}")).collect();
    let ids: Vec<u64> = texts
        .iter()
        .map(|text| alice.emit_with_ack("message:send", json!({"to": "bob", "text": text})))
        .collect();
    for id in ids {
        assert_eq!(alice.ack(id).await["ok"], true);
    }
    let mut pushed = Vec::new();
    for _ in 0..texts.len() {
        let message = bob.event("message:received").await;
        pushed.push(message["text"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        pushed, texts,
        "message:received pushes, in the order alice sent"
    );
    node.assert_healthy().await;
}

// ---------------------------------------------------------------------------------------------
// Retention

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// `switchboard --retention-sweep` on `url` with `extra` flags: must exit 0 after logging
/// `retention sweep done`; returns its (connections, presence) deletion counts.
async fn retention_sweep(url: &str, extra: &[&str]) -> (u64, u64) {
    let scratch = ScratchDir::new();
    let mut cmd = tokio::process::Command::new(binary_path());
    cmd.current_dir(&scratch.0)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            url,
            "--retention-sweep",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHBOARD_") {
            cmd.env_remove(key);
        }
    }
    let out = within_for(
        Duration::from_secs(60),
        "switchboard --retention-sweep to exit",
        cmd.output(),
    )
    .await
    .unwrap_or_else(|e| panic!("run switchboard --retention-sweep: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "switchboard --retention-sweep {extra:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let done = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "retention sweep done")
        .unwrap_or_else(|| panic!("no `retention sweep done` line:\n{stdout}"));
    let count = |field: &str| {
        done[field]
            .as_u64()
            .unwrap_or_else(|| panic!("`{field}` of {done}"))
    };
    (count("connections"), count("presence"))
}

/// A closed (or, without `closed_ago`, open) connection row written straight to the table.
async fn seed_connection(
    db: &DatabaseConnection,
    n: u128,
    socket: &str,
    connected_ago: Duration,
    closed_ago: Option<Duration>,
) {
    let at = |ago: Duration| DateTimeUtc::from(SystemTime::now() - ago);
    socket_connection::Entity::insert(socket_connection::ActiveModel {
        id: Set(Uuid::from_u128(n)),
        user_id: Set("seeded".into()),
        socket_id: Set(socket.into()),
        device_id: Set("seeded-device".into()),
        server_instance: Set(Some("old-node".into())),
        ip_address: Set("10.0.0.1".into()),
        user_agent: Set(None),
        connected_at: Set(at(connected_ago)),
        disconnected_at: Set(closed_ago.map(at)),
        disconnect_reason: Set(closed_ago.map(|_| "client_disconnect".into())),
        messages_sent: Set(0),
        messages_received: Set(0),
        duration_seconds: Set(closed_ago.map(|closed| {
            i32::try_from(connected_ago.saturating_sub(closed).as_secs()).unwrap_or(i32::MAX)
        })),
    })
    .exec_without_returning(db)
    .await
    .unwrap_or_else(|e| panic!("seed connection {socket}: {e}"));
}

/// A presence row `ago` old, its status naming it.
async fn seed_presence(db: &DatabaseConnection, status: &str, ago: Duration) {
    presence_log::Entity::insert(presence_log::ActiveModel {
        id: NotSet,
        user_id: Set("seeded".into()),
        status: Set(status.into()),
        device_id: Set(None),
        timestamp: Set(DateTimeUtc::from(SystemTime::now() - ago)),
    })
    .exec_without_returning(db)
    .await
    .unwrap_or_else(|e| panic!("seed presence {status}: {e}"));
}

/// The socket ids of the connection rows left, sorted.
async fn sockets_left(db: &DatabaseConnection) -> Vec<String> {
    let mut sockets: Vec<String> = socket_connection::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.socket_id)
        .collect();
    sockets.sort();
    sockets
}

/// `switchboard --retention-sweep` (a cron job's command) deletes closed connection rows
/// disconnected longer ago than `--retention-connections-days` (7) and presence rows older than
/// `--retention-presence-days` (30), exactly those: open connections of any age, younger rows
/// and stored messages stay; a second run deletes nothing; shorter retentions delete more.
async fn retention_sweep_deletes_exactly_the_rows_past_their_age(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    // On a fresh database the sweep migrates it and has nothing to delete.
    assert_eq!(
        retention_sweep(&test_db.url, &[]).await,
        (0, 0),
        "fresh database"
    );
    let db = test_db.inspect().await;
    seed_connection(&db, 1, "closed-8d", 9 * DAY, Some(8 * DAY)).await;
    seed_connection(&db, 2, "closed-6d", 6 * DAY + HOUR, Some(6 * DAY)).await;
    seed_connection(&db, 3, "closed-1h", 2 * HOUR, Some(HOUR)).await;
    seed_connection(&db, 4, "open-10d", 10 * DAY, None).await;
    seed_presence(&db, "31d", 31 * DAY).await;
    seed_presence(&db, "29d", 29 * DAY).await;
    seed_presence(&db, "1h", HOUR).await;
    message::Entity::insert(message::ActiveModel {
        id: NotSet,
        from_user: Set("alice".into()),
        to_user: Set("bob".into()),
        body: Set("a year old".into()),
        created_at: Set(DateTimeUtc::from(SystemTime::now() - 400 * DAY)),
        client_msg_id: Set(None),
    })
    .exec_without_returning(&db)
    .await
    .unwrap();

    assert_eq!(
        retention_sweep(&test_db.url, &[]).await,
        (1, 1),
        "default retention: 7 days of closed connections, 30 days of presence"
    );
    assert_eq!(
        sockets_left(&db).await,
        ["closed-1h", "closed-6d", "open-10d"]
    );
    assert_eq!(presence_statuses(&db, "seeded").await, ["29d", "1h"]);
    assert_eq!(
        retention_sweep(&test_db.url, &[]).await,
        (0, 0),
        "a second sweep"
    );

    let one_day = [
        "--retention-connections-days",
        "1",
        "--retention-presence-days",
        "1",
    ];
    assert_eq!(
        retention_sweep(&test_db.url, &one_day).await,
        (1, 1),
        "one day of everything"
    );
    assert_eq!(sockets_left(&db).await, ["closed-1h", "open-10d"]);
    assert_eq!(presence_statuses(&db, "seeded").await, ["1h"]);
    assert_eq!(
        message::Entity::find().count(&db).await.unwrap(),
        1,
        "stored messages are never swept"
    );
}

// ---------------------------------------------------------------------------------------------
// Database outage (PostgreSQL behind a proxy the test cuts)

/// The database goes away under a running node (PostgreSQL behind a TCP proxy that is cut):
/// realtime delivery goes on, durable sends and syncs fail with `service_unavailable` (never a
/// false `ok`), `/health` says 503 with the database down, log rows past the queue limit are
/// dropped and counted in `journal_dropped_total`; once the proxy is back, durable sends work
/// again without a restart, the kept rows are written, and the refused message never appears.
#[tokio::test]
async fn database_outage_keeps_realtime_and_fails_durable_sends_clearly() {
    const QUEUE_LIMIT: usize = 5;
    const CYCLES: usize = 5;
    let test_db = TestDb::create(Backend::Postgres).await;
    let mut proxy = TcpProxy::start(server_address(&test_db.url)).await;
    let proxied = proxy.url(&test_db.url);
    let limit = QUEUE_LIMIT.to_string();
    let mut node = start_node(&proxied, &["--journal-queue-limit", &limit]).await;
    let addr = node.addr();
    let db = test_db.inspect().await;

    let mut alice = client(&node, "alice", "alice-phone").await;
    let mut bob = client(&node, "bob", "bob-phone").await;
    let ack = alice
        .call("presence:subscribe", json!({"userIds": ["carol"]}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let before = send(&mut alice, "alice", "bob", "before").await;
    assert_eq!(bob.event("message:received").await, before);

    // Quiet: the four log rows so far (two opens, two onlines) are written, the queue is empty.
    eventually("alice's and bob's log rows", ROWS_TIMEOUT, || async {
        let conns =
            connection_rows(&db, "alice").await.len() + connection_rows(&db, "bob").await.len();
        let presence =
            presence_rows(&db, "alice").await.len() + presence_rows(&db, "bob").await.len();
        if (conns, presence) == (2, 2) {
            Ok(())
        } else {
            Err(format!("{conns} connection rows, {presence} presence rows"))
        }
    })
    .await;
    wait_for_metric(addr, "journal_queue_depth", 0.0).await;
    assert_eq!(metric(addr, "journal_dropped_total").await, 0.0);
    wait_for_metric(addr, "database_up", 1.0).await;

    proxy.cut().await;

    // Realtime delivery does not need the database.
    alice.emit("typing", json!({"to": "bob"}));
    assert_eq!(bob.event("typing").await, json!({"from": "alice"}));
    alice.emit("signal", json!({"to": "bob", "data": {"sdp": "offer"}}));
    assert_eq!(
        bob.event("signal").await,
        json!({"from": "alice", "data": {"sdp": "offer"}})
    );

    // A durable send fails clearly, within a bound, and is not delivered.
    let id = alice.emit_with_ack("message:send", json!({"to": "bob", "text": "during"}));
    let ack = alice.ack_within(Duration::from_secs(15), id).await;
    assert_eq!(ack["ok"], false, "a send while the database is down: {ack}");
    assert_eq!(ack["error"]["code"], "service_unavailable", "{ack}");
    assert!(
        ack["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{ack}"
    );
    let id = bob.emit_with_ack("message:sync", json!({"after": 0}));
    let ack = bob.ack_within(Duration::from_secs(15), id).await;
    assert_eq!(ack["ok"], false, "a sync while the database is down: {ack}");
    assert_eq!(ack["error"]["code"], "service_unavailable", "{ack}");
    assert_eq!(bob.pending_events("message:received"), 0);

    let health = wait_for_health(addr, 503, "down").await;
    assert_eq!(health["status"], "unavailable", "{health}");
    wait_for_metric(addr, "database_up", 0.0).await;

    // Log rows: each cycle is 4 (online, open, close, offline); the queue keeps QUEUE_LIMIT.
    for _ in 0..CYCLES {
        let carol = client(&node, "carol", "carol-phone").await;
        assert_eq!(
            alice.event("friend:online").await,
            json!({"userId": "carol"})
        );
        carol.disconnect().await;
        assert_eq!(
            alice.event("friend:offline").await,
            json!({"userId": "carol"})
        );
    }
    let generated = (4 * CYCLES) as f64;
    let (depth, dropped) = eventually(
        "every outage log row to be queued or dropped",
        Duration::from_secs(10),
        || async {
            let depth = metric(addr, "journal_queue_depth").await;
            let dropped = metric(addr, "journal_dropped_total").await;
            if depth + dropped >= generated {
                Ok((depth, dropped))
            } else {
                Err(format!("queue depth {depth}, dropped {dropped}"))
            }
        },
    )
    .await;
    assert_eq!(
        (depth, dropped),
        (QUEUE_LIMIT as f64, generated - QUEUE_LIMIT as f64),
        "(journal_queue_depth, journal_dropped_total) after {generated} rows while down"
    );

    proxy.restore().await;

    // Durable sends work again, without a restart; every refusal meanwhile is the clear one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let id = alice.emit_with_ack("message:send", json!({"to": "bob", "text": "after"}));
        let ack = alice.ack_within(Duration::from_secs(15), id).await;
        if ack["ok"] == true {
            break stored_message(&ack, "alice", "bob", "after");
        }
        assert_eq!(ack["error"]["code"], "service_unavailable", "{ack}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "durable sends still fail 30 s after the database came back: {ack}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(bob.event("message:received").await, after);
    wait_for_health(addr, 200, "up").await;
    wait_for_metric(addr, "database_up", 1.0).await;
    wait_for_metric(addr, "journal_queue_depth", 0.0).await;
    assert_eq!(
        metric(addr, "journal_dropped_total").await,
        generated - QUEUE_LIMIT as f64,
        "nothing more dropped after the recovery"
    );
    let (everything, _) = sync_all(&mut bob, 0, 100).await;
    assert_eq!(
        everything,
        [before, after],
        "the refused message never appears"
    );

    // The rows kept through the outage are the oldest five: carol's first cycle (online,
    // open, close, offline) and the online of her second; the rest were dropped.
    assert_eq!(
        presence_statuses(&db, "carol").await,
        ["online", "offline", "online"],
        "carol's presence rows"
    );
    let carol_rows = connection_rows(&db, "carol").await;
    assert_eq!(carol_rows.len(), 1, "{carol_rows:#?}");
    assert_eq!(
        carol_rows[0].disconnect_reason.as_deref(),
        Some("client_disconnect")
    );
    node.assert_healthy().await;
}
