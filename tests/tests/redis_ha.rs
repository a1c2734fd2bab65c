//! Redis high availability, black-box: nodes on a TLS-only `redis-server` (a test CA made with
//! `openssl`; a wrong CA is refused at start), and on a Sentinel-managed master whose SIGKILL
//! under a [`DurableLoad`] must cost no acknowledged message and no false `friend:offline`.
//!
//! The Sentinel test prints one `FAULT …` line with what it measured (`--no-capture` shows it);
//! the README's Guarantees section quotes it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_test_support::ScratchDir;
use switchboard_tests::faults::{DurableLoad, OwnPostgres, Targets, hs256_token};
use switchboard_tests::redis_ha::{MASTER_NAME, SentinelGroup, TestCa, TlsRedis, cli};
use switchboard_tests::{
    Node, SioClient, SioPacket, binary_path, http_get, without_switchboard_env,
};
use tokio::process::Command;

/// HS256 secret of every node here.
const SECRET: &str = "switchboard-redis-ha-tests-secret-0123456";
/// Longest any recovery may take before the test fails (times are measured, not asserted).
const RECOVERY: Duration = Duration::from_secs(40);

async fn client(addr: SocketAddr, user: &str) -> SioClient {
    SioClient::connect(addr, json!({ "token": hs256_token(SECRET, user) })).await
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// `args` plus what every node here needs.
fn node_args(node_id: &str, database: &str, redis: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--jwt-secret",
        SECRET,
        "--node-id",
        node_id,
        "--database-url",
        database,
        "--socket-event-limit",
        "1000000",
        "--user-message-limit",
        "1000000",
        "--drain-secs",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(redis.iter().map(|s| s.to_string()));
    args
}

async fn start_node(args: &[String]) -> Node {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start(&args).await
}

/// Keep sending `signal`s from `from` to `to_user` (on `to`) every 100 ms until one arrives;
/// returns how long that took. Only `signal` packets are taken from `to`'s buffer.
async fn until_signal_flows(from: &mut SioClient, to: &mut SioClient, to_user: &str) -> Duration {
    let started = Instant::now();
    let mut n = 0u64;
    loop {
        assert!(
            started.elapsed() < RECOVERY,
            "signals to {to_user} did not flow within {RECOVERY:?}"
        );
        n += 1;
        from.emit("signal", json!({ "to": to_user, "data": { "n": n } }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut got = false;
        for packet in to.take_buffered() {
            match &packet {
                SioPacket::Event { name, .. } if name == "signal" => got = true,
                SioPacket::Closed(how) => panic!("{to_user}'s connection ended: {how:?}"),
                _ => {}
            }
        }
        if got {
            return started.elapsed();
        }
        let _ = from.take_buffered();
    }
}

/// `presence:query` of `user` until it answers `status` (refusals meanwhile are counted);
/// returns how long it took and how many queries were refused.
async fn until_status(client: &mut SioClient, user: &str, status: &str) -> (Duration, u64) {
    let started = Instant::now();
    let mut refused = 0;
    loop {
        let reply = client
            .call("presence:query", json!({ "userIds": [user] }))
            .await;
        if reply["ok"] == true && status_in(&reply, user) == Some(status) {
            return (started.elapsed(), refused);
        }
        if reply["ok"] != true {
            refused += 1;
        }
        assert!(
            started.elapsed() < RECOVERY,
            "{user} not {status:?} after {RECOVERY:?}: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_in<'a>(reply: &'a Value, user: &str) -> Option<&'a str> {
    let statuses = &reply["statuses"];
    statuses[user]
        .as_str()
        .or_else(|| statuses.as_array()?.iter().find(|s| s["userId"] == user)?["status"].as_str())
}

async fn health(addr: SocketAddr) -> Value {
    http_get(addr, "/health").await.json()
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_the_test_ca_and_a_client_certificate_carries_the_cluster() {
    let ca = TestCa::new();
    // The server insists on a client certificate: the pool and the subscriber both present it.
    let redis = TlsRedis::start(&ca, true).await;
    let db = ScratchDir::new();
    let database = format!("sqlite://{}?mode=rwc", db.0.join("cluster.db").display());
    let (ca_file, cert, key) = (
        ca.path("ca.crt").display().to_string(),
        ca.path("client.crt").display().to_string(),
        ca.path("client.key").display().to_string(),
    );
    let url = redis.url();
    let tls = [
        "--redis-url",
        url.as_str(),
        "--redis-ca-file",
        &ca_file,
        "--redis-client-cert-file",
        &cert,
        "--redis-client-key-file",
        &key,
        "--allow-sqlite-cluster",
    ];
    let a = start_node(&node_args("tls-a", &database, &tls)).await;
    let b = start_node(&node_args("tls-b", &database, &tls)).await;
    let mut x = client(a.addr(), "x-on-a").await;
    let mut y = client(b.addr(), "y-on-b").await;
    // Cross-node pub/sub (the subscriber) and presence (the pool) both go through TLS.
    until_signal_flows(&mut y, &mut x, "x-on-a").await;
    until_status(&mut y, "x-on-a", "online").await;
    let h = health(a.addr()).await;
    assert_eq!(h["redis"], "up", "{h}");
    assert_eq!(h["redis_mode"], "single", "{h}");
    assert_eq!(
        h["redis_master"],
        format!("127.0.0.1:{}", redis.port),
        "{h}"
    );
    // The keys really are in the TLS server.
    let members = redis.cli(&ca, &["SMEMBERS", "user:x-on-a:sockets"]).await;
    assert!(members.contains(x.socket_id()), "{members:?}");
    a.assert_no_panic();
    b.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rediss_server_signed_by_another_ca_is_refused_with_a_clear_error() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let redis = TlsRedis::start(&ca, false).await;
    let dir = ScratchDir::new();
    let url = redis.url();
    let wrong_ca = other.path("ca.crt").display().to_string();
    let mut cmd = Command::new(binary_path());
    cmd.current_dir(&dir.0)
        .args(node_args("tls-wrong", "sqlite://n.db?mode=rwc", &[]))
        .args(["--listen", "127.0.0.1:0", "--allow-sqlite-cluster"])
        .args(["--redis-url", &url, "--redis-ca-file", &wrong_ca])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    without_switchboard_env(&mut cmd);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("the node exits")
        .expect("run the node");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "started anyway:\n{output}");
    assert!(!output.contains("\"message\":\"listening\""), "{output}");
    assert!(
        output.contains("SWITCHBOARD_REDIS_CA_FILE") && output.contains("certificate"),
        "no clear certificate error:\n{output}"
    );
}

// ---------------------------------------------------------------------------------------------
// Sentinel

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_under_load_loses_no_acked_message_and_no_user() {
    let pg = OwnPostgres::start();
    let mut group = SentinelGroup::start().await;
    let sentinels = group.sentinels();
    let redis = [
        "--redis-sentinels",
        sentinels.as_str(),
        "--redis-master-name",
        MASTER_NAME,
    ];
    let mut a = start_node(&node_args("ha-a", &pg.url(), &redis)).await;
    let mut b = start_node(&node_args("ha-b", &pg.url(), &redis)).await;
    let first_master = group.data_ports[0];
    let h = health(a.addr()).await;
    assert_eq!(h["redis_mode"], "sentinel", "{h}");

    let targets: Targets = Arc::new(Mutex::new(vec![a.addr(), b.addr()]));
    let load = DurableLoad::start(targets.clone(), SECRET, 4, 3);
    let mut x = client(a.addr(), "x-on-a").await;
    let mut y = client(b.addr(), "y-on-b").await;
    let mut q = client(b.addr(), "q-on-b").await;
    // The watcher only watches: whatever it receives stays in its buffer for the final check.
    let mut watcher = client(b.addr(), "watcher").await;
    let reply = watcher
        .call(
            "presence:subscribe",
            json!({ "userIds": ["x-on-a", "y-on-b"] }),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    until_signal_flows(&mut y, &mut x, "x-on-a").await;
    until_status(&mut y, "x-on-a", "online").await;
    assert_eq!(
        health(a.addr()).await["redis_master"],
        format!("127.0.0.1:{first_master}")
    );
    load.wait_acked(300, RECOVERY).await;
    let refused_before = load.report().refused;

    group.kill(first_master).await;
    let killed = Instant::now();
    // Both measured from the kill, side by side: signals y → x, presence queries from q.
    let (signals_back, (presence_back, presence_refused)) = tokio::join!(
        until_signal_flows(&mut y, &mut x, "x-on-a"),
        until_status(&mut q, "x-on-a", "online")
    );
    let since_kill = killed.elapsed();
    let promoted = group.data_ports[1];
    assert_eq!(group.master_port().await, Some(promoted));
    // The promoted master holds x's socket (replicated, or re-asserted by node A).
    let sockets = cli(promoted, &["SMEMBERS", "user:x-on-a:sockets"]).await;
    assert!(sockets.contains(x.socket_id()), "{sockets:?}");
    // Both nodes follow the new master.
    until_both_on(&a, &b, promoted).await;
    load.wait_acked(300, RECOVERY).await;
    let report = load.finish().await;
    report.assert_no_loss("Sentinel failover");

    // A planned failover back to the old master (restarted empty, now a replica in sync): the
    // master the nodes are connected to is demoted under them.
    group.restart(first_master).await;
    let load = DurableLoad::start(targets, SECRET, 4, 3);
    load.wait_acked(200, RECOVERY).await;
    group.failover().await;
    let asked = Instant::now();
    until_both_on(&a, &b, first_master).await;
    let followed = asked.elapsed();
    until_signal_flows(&mut y, &mut x, "x-on-a").await;
    until_status(&mut q, "x-on-a", "online").await;
    load.wait_acked(300, RECOVERY).await;
    let planned = load.finish().await;
    planned.assert_no_loss("planned Sentinel failover");

    let false_offline: Vec<SioPacket> = watcher
        .take_buffered()
        .into_iter()
        .filter(|p| matches!(p, SioPacket::Event { name, .. } if name == "friend:offline"))
        .collect();
    assert!(
        false_offline.is_empty(),
        "users that stayed connected were reported offline: {false_offline:?}"
    );
    for node in [&a, &b] {
        assert!(
            node.logs().contains("+switch-master"),
            "the node did not follow +switch-master"
        );
    }
    a.assert_healthy().await;
    b.assert_healthy().await;
    eprintln!(
        "FAULT sentinel: master SIGKILLed -> cross-node signals back {}, presence queries \
         answered right {} after the kill ({presence_refused} refused meanwhile; both within {}); \
         durable acked={} refused during failover={} in doubt={} longest stall {} missing=0; \
         planned failover (SENTINEL FAILOVER) -> both nodes on the new master {} after asking, \
         durable acked={} refused={} in doubt={} longest stall {} missing=0; friend:offline for \
         connected users: 0",
        secs(signals_back),
        secs(presence_back),
        secs(since_kill),
        report.acked,
        report.refused - refused_before,
        report.in_doubt,
        secs(report.longest_stall),
        secs(followed),
        planned.acked,
        planned.refused,
        planned.in_doubt,
        secs(planned.longest_stall)
    );
}

/// Wait until both nodes report Redis up on the master at `port`.
async fn until_both_on(a: &Node, b: &Node, port: u16) {
    for node in [a, b] {
        let deadline = Instant::now() + RECOVERY;
        loop {
            let h = health(node.addr()).await;
            if h["redis_master"] == format!("127.0.0.1:{port}") && h["redis"] == "up" {
                break;
            }
            assert!(Instant::now() < deadline, "{h}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
