//! One behaviour suite for the presence and rate-limit stores, run against the in-memory store
//! (single node) and the Redis store (cluster) — a real Redis at `SWITCHBOARD_TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379`), isolated by a random key prefix.

use std::sync::Arc;
use std::time::Duration;

use switchboard_actors::ids::random_id;
use switchboard_actors::keys::Keys;
use switchboard_actors::ports::presence::{SocketPresence, Status};
use switchboard_actors::presence::redis_store::RedisPresenceStore;
use switchboard_actors::presence::{MemoryPresenceStore, PresenceStore};
use switchboard_actors::ratelimiter::{MemoryRateStore, RateStore, RedisRateStore};
use switchboard_actors::store::{self, RedisSettings};
use switchboard_actors::{NodeId, Room, UserId};

fn redis_settings() -> RedisSettings {
    RedisSettings {
        url: std::env::var("SWITCHBOARD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        keys: Keys::new(format!("test-{}:", random_id())),
        cluster_keys: None,
    }
}

fn sock(user: &str, socket: &str, device: &str) -> SocketPresence {
    SocketPresence {
        user: UserId::from(user),
        socket: socket.into(),
        device: device.into(),
        rooms: Vec::new(),
    }
}

/// The behaviour every presence store must have.
async fn presence_behaviour(store: Arc<dyn PresenceStore>) {
    let dave = UserId::from("dave");
    assert!(
        store.connect(sock("dave", "s1", "phone"), 0).await.unwrap() == Some(true),
        "first socket → online"
    );
    assert_eq!(
        store
            .connect(sock("dave", "s2", "laptop"), 0)
            .await
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        store
            .connect(sock("dave", "s3", "laptop"), 3)
            .await
            .unwrap(),
        Some(false),
        "the third of three allowed"
    );
    assert_eq!(
        store
            .connect(sock("dave", "s4", "laptop"), 3)
            .await
            .unwrap(),
        None,
        "a fourth is refused, and not recorded"
    );
    assert_eq!(
        store
            .connect(sock("dave", "s3", "laptop"), 3)
            .await
            .unwrap(),
        Some(false),
        "a known socket is never refused"
    );
    assert_eq!(
        store.devices("dave".into()).await.unwrap(),
        vec!["laptop", "phone"]
    );

    // A device stays while another socket of it remains.
    assert!(!store.disconnect(dave.clone(), "s3".into()).await.unwrap());
    assert_eq!(
        store.devices("dave".into()).await.unwrap(),
        vec!["laptop", "phone"]
    );
    assert!(!store.disconnect(dave.clone(), "s1".into()).await.unwrap());
    assert_eq!(store.devices("dave".into()).await.unwrap(), vec!["laptop"]);

    // Status: only an online user's, reported once per change.
    assert!(store.set_status(dave.clone(), Status::Away).await.unwrap());
    assert!(!store.set_status(dave.clone(), Status::Away).await.unwrap());
    assert!(
        !store
            .set_status(UserId::from("nobody"), Status::Away)
            .await
            .unwrap()
    );
    let statuses = store
        .statuses(vec!["dave".into(), "nobody".into()])
        .await
        .unwrap();
    assert_eq!(
        statuses,
        vec![
            ("dave".into(), Status::Away),
            ("nobody".into(), Status::Offline)
        ]
    );

    // Online listing pages in id order.
    for u in ["carol", "alice", "bob"] {
        store
            .connect(sock(u, &format!("{u}-s"), "d"), 0)
            .await
            .unwrap();
    }
    let page = store.online(2, None).await.unwrap();
    assert_eq!(page.count, 4);
    assert_eq!(page.users, vec!["alice", "bob"]);
    let rest = store.online(2, page.next_cursor.clone()).await.unwrap();
    assert_eq!(rest.users, vec!["carol", "dave"]);
    assert_eq!(rest.next_cursor, None);

    // Last socket → offline, exactly once.
    assert!(
        store.disconnect(dave.clone(), "s2".into()).await.unwrap(),
        "last socket → offline"
    );
    assert!(!store.disconnect(dave.clone(), "s2".into()).await.unwrap());
    assert_eq!(
        store.statuses(vec!["dave".into()]).await.unwrap(),
        vec![("dave".into(), Status::Offline)]
    );
    assert!(store.devices("dave".into()).await.unwrap().is_empty());
    assert_eq!(store.online(10, None).await.unwrap().count, 3);
    room_behaviour(store).await;
}

/// Rooms: members counted per socket, listed per user, gone with their sockets.
async fn room_behaviour(store: Arc<dyn PresenceStore>) {
    let room = Room::from("doc:1");
    let mut in_room = sock("rita", "r1", "d");
    in_room.rooms = vec![room.clone(), Room::from("other")];
    store.connect(in_room, 0).await.unwrap();
    store.connect(sock("rita", "r2", "d"), 0).await.unwrap();
    store.connect(sock("sam", "sa1", "d"), 0).await.unwrap();
    let online = |store: Arc<dyn PresenceStore>, room: Room| async move {
        store.room_online(room).await.unwrap()
    };
    assert_eq!(
        online(store.clone(), room.clone()).await,
        (vec!["rita".into()], 1)
    );
    store
        .rooms("rita".into(), "r2".into(), vec![room.clone()], true)
        .await
        .unwrap();
    store
        .rooms("sam".into(), "sa1".into(), vec![room.clone()], true)
        .await
        .unwrap();
    assert_eq!(
        online(store.clone(), room.clone()).await,
        (vec!["rita".into(), "sam".into()], 3)
    );
    store
        .rooms("sam".into(), "sa1".into(), vec![room.clone()], false)
        .await
        .unwrap();
    store.disconnect("rita".into(), "r1".into()).await.unwrap();
    assert_eq!(
        online(store.clone(), room.clone()).await,
        (vec!["rita".into()], 1)
    );
    assert_eq!(
        online(store.clone(), Room::from("other")).await,
        (vec![], 0),
        "left with its socket"
    );
    store.disconnect("rita".into(), "r2".into()).await.unwrap();
    store.disconnect("sam".into(), "sa1".into()).await.unwrap();
    assert_eq!(online(store, room).await, (vec![], 0));
}

/// The behaviour every rate store must have: exact limit, then a retry hint.
async fn rate_behaviour(a: Arc<dyn RateStore>, b: Arc<dyn RateStore>) {
    let user = UserId::from(format!("u-{}", random_id()).as_str());
    for i in 0..30 {
        let store = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            store.hit(user.clone(), 10).await.unwrap(),
            Ok(()),
            "hit {i}"
        );
    }
    for store in [&a, &b] {
        let retry = store.hit(user.clone(), 10).await.unwrap().unwrap_err();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(60),
            "{retry:?}"
        );
    }
    let other = UserId::from("someone-else");
    assert_eq!(
        a.hit(other, 10).await.unwrap(),
        Ok(()),
        "limits are per user"
    );
}

/// The daily byte quota (1000 bytes here): exact across stores, refused with the time left in
/// the day, a refused hit uses up neither the quota nor the window.
async fn quota_behaviour(a: Arc<dyn RateStore>, b: Arc<dyn RateStore>) {
    let user = UserId::from(format!("q-{}", random_id()).as_str());
    assert_eq!(a.hit(user.clone(), 600).await.unwrap(), Ok(()));
    let retry = b.hit(user.clone(), 500).await.unwrap().unwrap_err();
    assert!(
        retry > Duration::ZERO,
        "until the end of the day: {retry:?}"
    );
    assert!(retry <= Duration::from_secs(24 * 3600), "{retry:?}");
    // The refused 500 bytes were not counted: 400 more fit exactly.
    assert_eq!(b.hit(user.clone(), 400).await.unwrap(), Ok(()));
    assert!(
        a.hit(user.clone(), 1).await.unwrap().is_err(),
        "the quota is full"
    );
    let other = UserId::from(format!("q-{}", random_id()).as_str());
    assert_eq!(
        a.hit(other, 1000).await.unwrap(),
        Ok(()),
        "quotas are per user"
    );
}

#[actix::test]
async fn memory_presence_store() {
    presence_behaviour(Arc::new(MemoryPresenceStore::default())).await;
}

#[actix::test]
async fn redis_presence_store() {
    let settings = redis_settings();
    let pool = store::pool(&settings).unwrap();
    let store = RedisPresenceStore::new(pool.clone(), &settings, NodeId::from("node-a"));
    presence_behaviour(Arc::new(store)).await;
    // Everything the scripts wrote for users is gone or under a TTL.
    let mut conn = pool.get().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", settings.keys.prefix()))
        .query_async(&mut *conn)
        .await
        .unwrap();
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut *conn)
            .await
            .unwrap();
        let owned = key.ends_with("online_users")
            || key.contains(":user:")
            || key.contains("node:node-a:sockets");
        assert!(ttl > 0 || owned, "{key} has no TTL and no owner");
    }
}

#[actix::test]
async fn memory_rate_store() {
    let store: Arc<dyn RateStore> = Arc::new(MemoryRateStore::new(30, Duration::from_secs(60)));
    rate_behaviour(store.clone(), store).await;
    let store: Arc<dyn RateStore> =
        Arc::new(MemoryRateStore::new(30, Duration::from_secs(60)).with_daily_bytes(1000));
    quota_behaviour(store.clone(), store).await;
}

#[actix::test]
async fn redis_rate_store_is_exact_across_nodes() {
    let settings = redis_settings();
    let pool = store::pool(&settings).unwrap();
    let node = |pool| -> Arc<dyn RateStore> {
        Arc::new(RedisRateStore::new(
            pool,
            &settings,
            30,
            Duration::from_secs(60),
        ))
    };
    // Two stores on one Redis behave like two nodes.
    rate_behaviour(node(pool.clone()), node(pool.clone())).await;
    let quota = |pool| -> Arc<dyn RateStore> {
        Arc::new(
            RedisRateStore::new(pool, &settings, 30, Duration::from_secs(60))
                .with_daily_bytes(1000),
        )
    };
    quota_behaviour(quota(pool.clone()), quota(pool)).await;
}

#[actix::test]
async fn redis_sweep_removes_a_dead_nodes_sockets() {
    let settings = redis_settings();
    let pool = store::pool(&settings).unwrap();
    let dead = RedisPresenceStore::new(pool.clone(), &settings, NodeId::from("dead"));
    let alive = RedisPresenceStore::new(pool.clone(), &settings, NodeId::from("alive"));
    dead.heartbeat_node().await.unwrap();
    alive.heartbeat_node().await.unwrap();
    dead.connect(sock("frank", "f1", "d"), 0).await.unwrap();
    alive.connect(sock("gina", "g1", "d"), 0).await.unwrap();
    // Nothing is swept while the node is alive.
    assert!(
        alive
            .sweep_dead_nodes(false)
            .await
            .unwrap()
            .nodes
            .is_empty()
    );
    let mut conn = pool.get().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(settings.keys.node_alive("dead"))
        .query_async(&mut *conn)
        .await
        .unwrap();
    let swept = alive.sweep_dead_nodes(false).await.unwrap();
    assert_eq!(swept.nodes, vec!["dead"]);
    assert_eq!(swept.offline, vec![UserId::from("frank")]);
    assert_eq!(
        alive
            .statuses(vec!["frank".into(), "gina".into()])
            .await
            .unwrap(),
        vec![
            ("frank".into(), Status::Offline),
            ("gina".into(), Status::Online)
        ]
    );
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(settings.keys.nodes())
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(nodes, vec!["alive"]);
}

#[actix::test]
async fn redis_reconcile_reasserts_after_data_loss() {
    let settings = redis_settings();
    let pool = store::pool(&settings).unwrap();
    let store = RedisPresenceStore::new(pool.clone(), &settings, NodeId::from("n1"));
    store.connect(sock("hana", "h1", "d"), 0).await.unwrap();
    store.connect(sock("ivan", "i1", "d"), 0).await.unwrap();
    // Redis "loses" hana's keys.
    let mut conn = pool.get().await.unwrap();
    for key in ["user:hana:sockets", "socket:h1:user", "user:hana:status"] {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{}{key}", settings.keys.prefix()))
            .query_async(&mut *conn)
            .await
            .unwrap();
    }
    // ivan's socket is no longer live on this node; hana's is.
    let t = store
        .reconcile(vec![sock("hana", "h1", "d")])
        .await
        .unwrap();
    assert_eq!(t.online, vec![UserId::from("hana")]);
    assert_eq!(t.offline, vec![UserId::from("ivan")]);
    assert_eq!(
        store
            .statuses(vec!["hana".into(), "ivan".into()])
            .await
            .unwrap(),
        vec![
            ("hana".into(), Status::Online),
            ("ivan".into(), Status::Offline)
        ]
    );
}

#[actix::test]
async fn redis_node_addresses_are_published_with_the_liveness_key_and_read_by_the_directory() {
    use switchboard_actors::NodeTag;
    use switchboard_actors::directory::Directory;
    use switchboard_actors::presence::redis_store::NODE_ALIVE_TTL_SECS;

    let settings = redis_settings();
    let pool = store::pool(&settings).unwrap();
    let a = RedisPresenceStore::new(pool.clone(), &settings, NodeId::from("addr-a"))
        .advertising(Some("http://10.0.0.1:3000".into()));
    let b = RedisPresenceStore::new(pool.clone(), &settings, NodeId::from("addr-b"))
        .advertising(Some("http://10.0.0.2:3000".into()));
    let silent = RedisPresenceStore::new(pool.clone(), &settings, NodeId::from("addr-c"));
    let directory = Directory::new(pool.clone(), settings.keys.clone());
    let tag = |n: &str| NodeTag::of(&NodeId::from(n)).as_str().to_string();
    assert_eq!(directory.lookup(&tag("addr-a")), None, "nothing read yet");
    for store in [&a, &b, &silent] {
        store.heartbeat_node().await.unwrap();
    }
    // Published beside the liveness key, with its TTL.
    let mut conn = pool.get().await.unwrap();
    let key = settings.keys.node_addr("addr-a");
    let (url, ttl): (Option<String>, i64) = redis::pipe()
        .cmd("GET")
        .arg(&key)
        .cmd("TTL")
        .arg(&key)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(url.as_deref(), Some("http://10.0.0.1:3000"));
    assert!(ttl > 0 && ttl <= NODE_ALIVE_TTL_SECS as i64, "ttl {ttl}");
    // A miss refreshes the directory once; then lookups are from memory.
    let peer = directory.resolve(&tag("addr-a")).await.expect("a is known");
    assert_eq!(peer.node, NodeId::from("addr-a"));
    assert_eq!(
        (peer.addr.host.as_str(), peer.addr.port),
        ("10.0.0.1", 3000)
    );
    assert_eq!(
        directory
            .lookup(&tag("addr-b"))
            .map(|p| p.addr.base.clone()),
        Some("http://10.0.0.2:3000".to_string())
    );
    assert_eq!(
        directory.lookup(&tag("addr-c")),
        None,
        "a node that publishes nothing"
    );
    // Leaving removes the address; the next refresh forgets the node.
    a.leave().await.unwrap();
    let url: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(url, None);
    directory.refresh().await.unwrap();
    assert_eq!(directory.lookup(&tag("addr-a")), None);
    assert!(directory.lookup(&tag("addr-b")).is_some());
    b.leave().await.unwrap();
    silent.leave().await.unwrap();
}
