//! Faults, black-box: two product-mode nodes sharing a PostgreSQL server and a `redis-server` of
//! the test's own, with a [`DurableLoad`] of `message:send`s running through every fault. Each test
//! injects one fault (a node SIGKILLed or SIGSTOPped, Redis killed, paused or its script cache
//! flushed, PostgreSQL crash-stopped, a node partitioned from Redis in a network namespace), then
//! measures how long clients took to get back to normal and audits through `message:sync` that no
//! acknowledged message was lost or stored twice. The checker itself is proven first: on a clean
//! run it finds every message, and on the `fault-drop-acked` build (one acked message in 1000
//! deliberately not stored) it finds exactly the dropped ones.
//!
//! Each test prints one `FAULT …` line with what it measured (`--no-capture` shows them); the
//! README's Guarantees section quotes them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_tests::faults::{
    DurableLoad, LoadReport, Netns, OwnPostgres, Redis, Targets, signal,
};
use switchboard_tests::{Node, SioClient, SioPacket, WsEvent, metric};

/// HS256 secret of every node here.
const SECRET: &str = "switchboard-fault-tests-secret-0123456789";
/// Senders of the durable load.
const SENDERS: usize = 4;
/// Recipients of the durable load.
const RECIPIENTS: usize = 3;
/// Longest any recovery may take before the test fails (recovery times are measured, not
/// asserted tighter: this only keeps a broken recovery from hanging the test).
const RECOVERY: Duration = Duration::from_secs(40);

/// The fault-injection build (`cargo build -p switchboard --features fault-drop-acked`, copied to
/// `target/debug/switchboard-drop-acked` by scripts/test), or `$SWITCHBOARD_DROP_ACKED_BIN`.
fn dropping_binary() -> PathBuf {
    match std::env::var_os("SWITCHBOARD_DROP_ACKED_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/switchboard-drop-acked")
        }
    }
}

/// Flags of a node on this PostgreSQL and Redis.
fn node_args(database: &str, redis: &str, node_id: &str) -> Vec<String> {
    [
        "--jwt-secret",
        SECRET,
        "--node-id",
        node_id,
        "--database-url",
        database,
        "--redis-url",
        redis,
        "--socket-event-limit",
        "1000000",
        "--user-message-limit",
        "1000000",
        "--drain-secs",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn start_node(database: &str, redis: &str, node_id: &str) -> Node {
    start_node_binary(&switchboard_tests::binary_path(), database, redis, node_id).await
}

async fn start_node_binary(
    bin: &std::path::Path,
    database: &str,
    redis: &str,
    node_id: &str,
) -> Node {
    let args = node_args(database, redis, node_id);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start_binary(bin, &args).await
}

fn targets(addrs: &[SocketAddr]) -> Targets {
    Arc::new(Mutex::new(addrs.to_vec()))
}

fn set_targets(targets: &Targets, addrs: &[SocketAddr]) {
    *targets.lock().unwrap_or_else(|e| e.into_inner()) = addrs.to_vec();
}

async fn client(addr: SocketAddr, user: &str) -> SioClient {
    let token = switchboard_tests::faults::hs256_token(SECRET, user);
    SioClient::connect(addr, json!({ "token": token })).await
}

/// Seconds with millisecond precision, for the FAULT lines.
fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// Keep sending `signal {to, data: {n}}` from `from` every 100 ms until `to` receives one sent
/// after this call started; returns how long that took (cross-node delivery is back).
async fn until_signal_flows(from: &mut SioClient, to: &mut SioClient, to_user: &str) -> Duration {
    let started = Instant::now();
    let mut n = 0u64;
    // Whatever arrived before now does not count.
    to.take_buffered();
    loop {
        assert!(
            started.elapsed() < RECOVERY,
            "signals to {to_user} did not flow again within {RECOVERY:?}"
        );
        n += 1;
        from.emit("signal", json!({ "to": to_user, "data": { "n": n } }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = to.take_buffered().into_iter().any(|p| {
            matches!(&p, SioPacket::Event { name, args } if name == "signal"
                && args.first().and_then(|a| a["data"]["n"].as_u64()).is_some())
        });
        if got {
            return started.elapsed();
        }
        // Drain pings etc. that are not ours; a closed connection ends the test.
        let _ = from.take_buffered();
    }
}

/// `presence:query` of `user` through `client`: its status string.
async fn status_of(client: &mut SioClient, user: &str) -> String {
    let reply = client
        .call("presence:query", json!({ "userIds": [user] }))
        .await;
    assert_eq!(reply["ok"], true, "presence:query: {reply}");
    let statuses = &reply["statuses"];
    statuses[user]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            statuses
                .as_array()
                .and_then(|a| a.iter().find(|s| s["userId"] == user))
                .and_then(|s| s["status"].as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| panic!("presence:query has no status for {user}: {reply}"))
}

/// Poll `presence:query` until `user` has `status`; returns how long it took.
async fn until_status(client: &mut SioClient, user: &str, status: &str) -> Duration {
    let started = Instant::now();
    loop {
        let got = status_of(client, user).await;
        if got == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < RECOVERY,
            "{user} still {got:?} (expected {status:?}) after {RECOVERY:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Once 200 more sends are acked: stop the load, audit it (no acked message lost or stored
/// twice) and check that both nodes are alive and never panicked.
async fn audit(load: DurableLoad, case: &str, a: &mut Node, b: &mut Node) -> LoadReport {
    load.wait_acked(200, RECOVERY).await;
    let report = load.finish().await;
    report.assert_no_loss(case);
    a.assert_healthy().await;
    b.assert_healthy().await;
    report
}

/// Two nodes (ids `fault-a`, `fault-b`) on a fresh PostgreSQL and Redis.
struct Setup {
    pg: OwnPostgres,
    redis: Redis,
    a: Node,
    b: Node,
}

impl Setup {
    async fn start() -> Setup {
        let pg = OwnPostgres::start();
        let redis = Redis::start().await;
        let a = start_node(&pg.url(), &redis.url(), "fault-a").await;
        let b = start_node(&pg.url(), &redis.url(), "fault-b").await;
        Setup { pg, redis, a, b }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loss_checker_passes_a_clean_run_and_catches_a_dropping_build() {
    // Control: no fault, every acked message is found once.
    let setup = Setup::start().await;
    let load = DurableLoad::start(
        targets(&[setup.a.addr(), setup.b.addr()]),
        SECRET,
        SENDERS,
        RECIPIENTS,
    );
    load.wait_acked(2500, RECOVERY).await;
    let clean = load.finish().await;
    clean.assert_no_loss("control run");
    assert_eq!(clean.in_doubt + clean.refused, 0, "control run: {clean:?}");

    // The same load on a build that acks one message in 1000 without storing it: one node, so
    // its count is exact.
    let bin = dropping_binary();
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p switchboard --features fault-drop-acked` \
         and copy target/debug/switchboard there (scripts/test does)",
        bin.display()
    );
    let lossy_node = start_node_binary(&bin, &setup.pg.url(), &setup.redis.url(), "lossy").await;
    assert!(
        lossy_node.logs().contains("FAULT-INJECTION BUILD"),
        "not the fault-injection build: {}",
        bin.display()
    );
    let load = DurableLoad::start(targets(&[lossy_node.addr()]), SECRET, SENDERS, RECIPIENTS);
    load.wait_acked(3200, RECOVERY).await;
    let lossy = load.finish().await;
    let expected = lossy.acked / 1000;
    assert_eq!(
        lossy.missing, expected,
        "the checker must find exactly the deliberately dropped messages: {lossy:?}"
    );
    assert!(lossy.missing >= 3, "{lossy:?}");
    assert!(clean.is_clean() && !lossy.is_clean(), "{clean:?} {lossy:?}");
    eprintln!(
        "FAULT checker: clean run acked={} found={} missing=0; dropping build acked={} missing={} (expected {expected})",
        clean.acked, clean.found, lossy.acked, lossy.missing
    );
    lossy_node.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_node_under_load_loses_no_acked_message() {
    let setup = Setup::start().await;
    let Setup {
        pg,
        redis: _redis,
        a,
        mut b,
    } = setup;
    let load_targets = targets(&[a.addr(), b.addr()]);
    let load = DurableLoad::start(load_targets.clone(), SECRET, SENDERS, RECIPIENTS);
    let mut victim = client(a.addr(), "victim").await;
    let mut watcher = client(b.addr(), "watcher").await;
    let reply = watcher
        .call("presence:subscribe", json!({ "userIds": ["victim"] }))
        .await;
    assert_eq!(reply["ok"], true, "presence:subscribe: {reply}");
    assert_eq!(status_of(&mut watcher, "victim").await, "online");
    load.wait_acked(500, RECOVERY).await;

    let killed_at = Instant::now();
    a.kill().await;
    set_targets(&load_targets, &[b.addr()]);
    // What the victim's client sees: its connection ends at once.
    let how = victim.closed_within(Duration::from_secs(5)).await;
    assert!(
        matches!(how, WsEvent::Ended(_) | WsEvent::Close(_)),
        "{how:?}"
    );
    let sends_back = load.wait_acked(200, RECOVERY).await;
    // Presence: the dead node's users go offline once its liveness key expires and a peer sweeps.
    until_status(&mut watcher, "victim", "offline").await;
    let offline_after = killed_at.elapsed();
    let offline_event = watcher.event("friend:offline").await;
    assert_eq!(offline_event["userId"], "victim", "{offline_event}");

    // The victim reconnects to the surviving node and is online again.
    let _victim = client(b.addr(), "victim").await;
    until_status(&mut watcher, "victim", "online").await;
    let report = load.finish().await;
    report.assert_no_loss("SIGKILL of a node");
    b.assert_healthy().await;
    eprintln!(
        "FAULT sigkill: senders back after {} (in doubt {}, reconnects {}, longest stall {}); \
         victim offline for peers {} after the kill; acked={} missing=0",
        secs(sends_back),
        report.in_doubt,
        report.reconnects,
        secs(report.longest_stall),
        secs(offline_after),
        report.acked
    );
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_sigcont_of_a_node_resubscribes_and_counts_the_gap() {
    let Setup {
        pg: _pg,
        redis,
        mut a,
        mut b,
    } = Setup::start().await;
    // A small pub/sub buffer, so Redis cuts the stopped node's subscriber off quickly.
    redis
        .command(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 262144 131072 1",
        ])
        .await;
    let load = DurableLoad::start(targets(&[a.addr(), b.addr()]), SECRET, SENDERS, RECIPIENTS);
    let mut x = client(a.addr(), "x-on-a").await;
    let mut y = client(b.addr(), "y-on-b").await;
    until_signal_flows(&mut y, &mut x, "x-on-a").await;
    load.wait_acked(300, RECOVERY).await;
    let gaps_before = metric(a.addr(), "redis_pubsub_gaps_total").await;

    signal(a.pid(), "STOP");
    // 24 MB for x while A cannot read: more than the kernel's socket buffers hold, so Redis's
    // output buffer for A's subscriber passes its 256 KiB hard limit.
    let blob = "z".repeat(4096);
    for n in 0..6000 {
        y.emit(
            "signal",
            json!({ "to": "x-on-a", "data": { "fill": n, "blob": blob } }),
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let clients_before = redis.cli(&["CLIENT", "LIST"]).await.join("\n");
    signal(a.pid(), "CONT");
    let resumed = Instant::now();

    // The gap is counted, the subscriber is back, cross-node delivery flows again.
    let gap_counted = loop {
        let gaps = metric(a.addr(), "redis_pubsub_gaps_total").await;
        if gaps > gaps_before {
            break resumed.elapsed();
        }
        assert!(
            resumed.elapsed() < RECOVERY,
            "node A never counted a pub/sub gap; Redis clients while A was stopped:\n{clients_before}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    until_signal_flows(&mut y, &mut x, "x-on-a").await;
    let flowing = resumed.elapsed();
    let report = audit(load, "SIGSTOP/SIGCONT of a node", &mut a, &mut b).await;
    eprintln!(
        "FAULT sigstop: 3 s stopped; gap counted {} after SIGCONT; cross-node signals flowing \
         again {} after SIGCONT; durable acked={} in doubt={} longest stall {} missing=0",
        secs(gap_counted),
        secs(flowing),
        report.acked,
        report.in_doubt,
        secs(report.longest_stall)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_killed_and_restarted_costs_no_acked_message() {
    let Setup {
        pg: _pg,
        mut redis,
        mut a,
        mut b,
    } = Setup::start().await;
    let load = DurableLoad::start(targets(&[a.addr(), b.addr()]), SECRET, SENDERS, RECIPIENTS);
    let mut x = client(a.addr(), "x-on-a").await;
    let mut y = client(b.addr(), "y-on-b").await;
    until_signal_flows(&mut y, &mut x, "x-on-a").await;
    load.wait_acked(300, RECOVERY).await;

    // Paused (SIGSTOP) for 3 s: commands and publishes stall, then resume.
    signal(redis.pid(), "STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(redis.pid(), "CONT");
    let after_pause = until_signal_flows(&mut y, &mut x, "x-on-a").await;
    load.wait_acked(200, RECOVERY).await;

    // Killed and restarted empty on the same port.
    redis.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await;
    let restarted = Instant::now();
    let after_restart = until_signal_flows(&mut y, &mut x, "x-on-a").await;
    // Presence is re-asserted into the empty Redis.
    until_status(&mut y, "x-on-a", "online").await;
    let presence_back = restarted.elapsed();
    let report = audit(load, "Redis paused, killed and restarted", &mut a, &mut b).await;
    eprintln!(
        "FAULT redis: paused 3 s -> cross-node signals back {} after resume; killed 1 s and \
         restarted empty -> signals back {} after restart, presence back {}; durable acked={} \
         refused={} in doubt={} longest stall {} missing=0",
        secs(after_pause),
        secs(after_restart),
        secs(presence_back),
        report.acked,
        report.refused,
        report.in_doubt,
        secs(report.longest_stall)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_cache_is_reloaded() {
    let Setup {
        pg: _pg,
        redis,
        mut a,
        mut b,
    } = Setup::start().await;
    let load = DurableLoad::start(targets(&[a.addr(), b.addr()]), SECRET, SENDERS, RECIPIENTS);
    let mut watcher = client(b.addr(), "watcher").await;
    load.wait_acked(200, RECOVERY).await;
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]).await, "+OK");
    // Every script runs again after the flush: presence connect/disconnect, status, limits.
    let x = client(a.addr(), "x-after-flush").await;
    assert_eq!(status_of(&mut watcher, "x-after-flush").await, "online");
    x.disconnect().await;
    until_status(&mut watcher, "x-after-flush", "offline").await;
    let reply = watcher
        .call("status:set", json!({ "status": "away" }))
        .await;
    assert_eq!(reply["ok"], true, "status:set after SCRIPT FLUSH: {reply}");
    let report = audit(load, "SCRIPT FLUSH", &mut a, &mut b).await;
    assert_eq!(report.refused + report.in_doubt, 0, "{report:?}");
    for node in [&a, &b] {
        assert!(
            !node.logs().contains("NOSCRIPT"),
            "a NOSCRIPT error reached the logs:\n{}",
            node.logs()
        );
    }
    eprintln!(
        "FAULT script-flush: presence and limits kept working; acked={} refused=0 missing=0",
        report.acked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_refuses_clearly_and_recovers() {
    let Setup {
        pg,
        redis: _redis,
        mut a,
        mut b,
    } = Setup::start().await;
    let load = DurableLoad::start(targets(&[a.addr(), b.addr()]), SECRET, SENDERS, RECIPIENTS);
    let mut x = client(a.addr(), "x-on-a").await;
    let mut y = client(b.addr(), "y-on-b").await;
    load.wait_acked(300, RECOVERY).await;
    let before = load.report();

    pg.stop();
    let stopped = Instant::now();
    // Realtime traffic does not need the database.
    let realtime = until_signal_flows(&mut y, &mut x, "x-on-a").await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(stopped.elapsed())).await;
    // A send waits at most the journal's 5 s database timeout (the pool keeps trying to
    // connect until then): stay down until one is answered, so the refusal is always seen.
    let refused_before = before.refused + before.in_doubt;
    while load.report().refused + load.report().in_doubt <= refused_before
        && stopped.elapsed() < Duration::from_secs(15)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = load.report();
    let outage = stopped.elapsed();
    pg.start_again();
    let restarted = Instant::now();
    let sends_back = load.wait_acked(1, RECOVERY).await;
    let report = audit(load, "PostgreSQL stopped and restarted", &mut a, &mut b).await;
    assert!(
        during.refused + during.in_doubt > before.refused + before.in_doubt,
        "sends during the outage were neither refused nor in doubt: {during:?}"
    );
    assert!(
        report
            .samples
            .iter()
            .any(|s| s.contains("unavailable") || s.contains("no ack")),
        "no clear refusal recorded: {report:?}"
    );
    eprintln!(
        "FAULT postgres: stopped {}; signals kept flowing ({} to confirm); sends refused={} \
         in doubt={} during the outage; acks back {} after restart; acked={} missing=0",
        secs(outage),
        secs(realtime),
        report.refused,
        report.in_doubt,
        secs(sends_back.min(restarted.elapsed())),
        report.acked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_partitioned_from_redis_heals() {
    let pg = OwnPostgres::start();
    // Redis in a network namespace of its own, reached by each node over its own veth pair.
    let ns = Netns::new(2);
    let redis = Redis::start_with(ns.launcher(), "0.0.0.0", 6379).await;
    let url_a = format!("redis://{}:6379", ns.address(0));
    let url_b = format!("redis://{}:6379", ns.address(1));
    let mut a = start_node(&pg.url(), &url_a, "fault-a").await;
    let mut b = start_node(&pg.url(), &url_b, "fault-b").await;
    let load = DurableLoad::start(targets(&[a.addr(), b.addr()]), SECRET, SENDERS, RECIPIENTS);
    let mut x = client(a.addr(), "x-on-a").await;
    let mut y = client(b.addr(), "y-on-b").await;
    until_signal_flows(&mut y, &mut x, "x-on-a").await;
    assert_eq!(status_of(&mut y, "x-on-a").await, "online");
    load.wait_acked(300, RECOVERY).await;

    // 15 s of silence between A and Redis: longer than the 10 s node liveness TTL, so B's sweep
    // declares A's users offline meanwhile.
    ns.cut(0);
    let cut = Instant::now();
    let offline_seen = until_status(&mut y, "x-on-a", "offline").await;
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(cut.elapsed())).await;
    let during = load.report();
    ns.heal(0);
    let healed = Instant::now();
    let flowing = until_signal_flows(&mut y, &mut x, "x-on-a").await;
    until_status(&mut y, "x-on-a", "online").await;
    let online_again = healed.elapsed();
    let report = audit(load, "node partitioned from Redis", &mut a, &mut b).await;
    eprintln!(
        "FAULT partition: A cut from Redis 15 s; peers saw A's user offline after {}; after \
         healing, cross-node signals back in {}, presence online again in {}; durable sends \
         during the cut acked={} (database unaffected); total acked={} missing=0",
        secs(offline_seen),
        secs(flowing),
        secs(online_again),
        during.acked,
        report.acked
    );
    redis.stop().await;
    drop(ns);
}
