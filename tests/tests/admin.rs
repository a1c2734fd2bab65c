//! The operator surface and the start-up refusals (issue #17, findings 6, 8 and 11): the admin
//! listener, the API key's length and its failure limit, the cached database check, `nosniff`,
//! the CORS preflight, and the configurations a node must refuse to start with.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use switchboard_test_support::ScratchDir;
use switchboard_tests::faults::Redis;
use switchboard_tests::{
    HttpResponse, Node, TIMEOUT, binary_path, http_get, http_get_with_headers, raw_request,
    within_for, without_switchboard_env,
};
use tokio::process::Command;

/// A key of the accepted length.
const KEY: &str = "admin-tests-api-key-0123456789abcdef";
const SECRET: &str = "admin-tests-jwt-secret";

/// A guard against a node that runs when it should have exited, not a timing check.
const EXIT_GUARD: Duration = Duration::from_secs(60);

/// What one run of the binary printed.
struct Run {
    status: ExitStatus,
    output: String,
}

/// Run the binary with exactly `args` (no `SWITCHBOARD_*` from the test process) until it exits.
async fn run_to_exit(args: &[&str]) -> Run {
    let dir = ScratchDir::new();
    let mut cmd = Command::new(binary_path());
    cmd.current_dir(&dir.0)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    without_switchboard_env(&mut cmd);
    let out = within_for(EXIT_GUARD, "switchboard to exit", cmd.output())
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary_path().display()));
    Run {
        status: out.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The run exited non-zero, never listened, and said `why`.
fn assert_refused(run: &Run, why: &str) {
    assert!(
        !run.status.success(),
        "exit {:?}:\n{}",
        run.status,
        run.output
    );
    assert!(
        !run.output.contains("\"message\":\"listening\""),
        "the node must not listen:\n{}",
        run.output
    );
    assert!(run.output.contains(why), "{why:?} not in:\n{}", run.output);
}

/// The address of the node's `admin listening` log line.
async fn admin_addr(node: &Node) -> SocketAddr {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let found = node.logs().lines().find_map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).ok()?;
            (json["message"] == "admin listening").then(|| json["addr"].as_str()?.parse().ok())?
        });
        if let Some(addr) = found {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "no admin listening line:\n{}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until the node has logged `text`.
async fn wait_log(node: &Node, text: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while !node.logs().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in:\n{}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn api_get(addr: SocketAddr, path: &str, key: &str) -> HttpResponse {
    http_get_with_headers(addr, path, &[("Authorization", &format!("Bearer {key}"))]).await
}

/// The value of an unlabelled-but-for-`server_instance` sample on `/metrics`.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} sample in:\n{metrics}"))
}

// ---------------------------------------------------------------------------------------------
// Finding 6: the admin listener, the key, the limit, the cached check.

#[tokio::test]
async fn the_api_and_metrics_are_only_on_the_admin_listener() {
    let node = Node::start(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--api-key",
        KEY,
        "--jwt-secret",
        SECRET,
    ])
    .await;
    let (public, admin) = (node.addr(), admin_addr(&node).await);
    assert_ne!(public, admin);

    for path in [
        "/api/v1/online",
        "/metrics",
        "/admin",
        "/admin/api/overview",
    ] {
        let res = api_get(public, path, KEY).await;
        assert_eq!(res.status, 404, "public {path}: {res:?}");
    }
    let res = http_get(admin, "/admin").await;
    assert_eq!(res.status, 200, "admin page: {res:?}");
    let res = api_get(admin, "/api/v1/online", KEY).await;
    assert_eq!(res.status, 200, "admin API: {res:?}");
    let res = http_get(admin, "/metrics").await;
    assert_eq!(res.status, 200, "admin /metrics: {res:?}");
    assert!(
        res.text().contains("database_checks_total"),
        "{}",
        res.text()
    );
    for addr in [public, admin] {
        for path in ["/health", "/health/live", "/health/ready"] {
            let res = http_get(addr, path).await;
            assert_eq!(res.status, 200, "{addr}{path}: {res:?}");
        }
    }
    // Clients only on the public listener.
    let eio = "/socket.io/?EIO=4&transport=polling";
    assert_eq!(http_get(public, eio).await.status, 200);
    assert_eq!(http_get(admin, eio).await.status, 404);
    node.assert_no_panic();
}

#[tokio::test]
async fn without_an_admin_listener_everything_stays_on_the_public_one() {
    let node = Node::start(&["--api-key", KEY, "--jwt-secret", SECRET]).await;
    assert_eq!(
        api_get(node.addr(), "/api/v1/online", KEY).await.status,
        200
    );
    assert_eq!(http_get(node.addr(), "/metrics").await.status, 200);
    assert_eq!(http_get(node.addr(), "/admin").await.status, 200);
    assert!(!node.logs().contains("admin listening"));
}

#[tokio::test]
async fn a_short_api_key_is_refused_at_start() {
    let run = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        "0123456789abcdef0123456789abcde",
    ])
    .await;
    assert_refused(&run, "the server API key must be at least 32");
}

#[tokio::test]
async fn wrong_keys_are_answered_429_past_ten_a_second() {
    let node = Node::start(&["--api-key", KEY, "--jwt-secret", SECRET]).await;
    let addr = node.addr();
    let mut statuses = Vec::new();
    for _ in 0..15 {
        statuses.push(api_get(addr, "/api/v1/online", "wrong-key").await.status);
    }
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        (1..=10).contains(&unauthorized) && statuses.ends_with(&[429, 429, 429]),
        "{statuses:?}"
    );
    let limited = api_get(addr, "/api/v1/online", KEY).await;
    if limited.status == 429 {
        assert_eq!(limited.header("retry-after"), Some("1"), "{limited:?}");
        assert_eq!(limited.json()["error"]["code"], "rate_limited");
    }
    // The limit is per second: the right key works again after it.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(api_get(addr, "/api/v1/online", KEY).await.status, 200);
    node.assert_no_panic();
}

#[tokio::test]
async fn a_readiness_flood_costs_about_one_database_check_a_second() {
    let node = Node::start(&["--jwt-secret", SECRET]).await;
    let addr = node.addr();
    let checks = || async move {
        sample(
            &http_get(addr, "/metrics").await.text(),
            "database_checks_total",
        )
    };
    let before = checks().await;
    let started = Instant::now();
    let (mut asked, mut answered) = (0, 0);
    // Long enough to span a few cache periods.
    while started.elapsed() < Duration::from_millis(2_500) {
        asked += 10;
        let batch: Vec<_> = (0..10)
            .map(|_| tokio::spawn(async move { http_get(addr, "/health/ready").await.status }))
            .collect();
        for handle in batch {
            if handle.await.expect("request task") == 200 {
                answered += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = checks().await;
    assert_eq!(answered, asked, "every probe answered ready");
    // One per started second of the flood, plus the two scrapes' own.
    let allowed = elapsed.ceil() + 2.0;
    assert!(
        after - before <= allowed,
        "{} database checks for {asked} probes in {elapsed:.2} s (at most {allowed})",
        after - before
    );
    node.assert_no_panic();
}

// ---------------------------------------------------------------------------------------------
// Finding 11: headers.

#[tokio::test]
async fn every_response_says_nosniff_and_preflight_does_not_echo_headers() {
    let node = Node::start(&["--jwt-secret", SECRET]).await;
    for path in [
        "/health",
        "/no-such-page",
        "/socket.io/?EIO=4&transport=polling",
    ] {
        let res = http_get(node.addr(), path).await;
        assert_eq!(
            res.header("x-content-type-options"),
            Some("nosniff"),
            "{path}: {res:?}"
        );
    }
    // A refused websocket handshake is written past the App: it says nosniff too.
    let upgrade = format!(
        "GET /socket.io/?EIO=4&transport=websocket&sid=unknown HTTP/1.1\r\nHost: {}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        node.addr()
    );
    let res = raw_request(node.addr(), upgrade.as_bytes()).await;
    assert_eq!(res.status, 400, "{res:?}");
    assert_eq!(
        res.header("x-content-type-options"),
        Some("nosniff"),
        "{res:?}"
    );
    let preflight = format!(
        "OPTIONS /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: x-evil, content-type\r\n\r\n",
        node.addr()
    );
    let res = raw_request(node.addr(), preflight.as_bytes()).await;
    let allowed = res
        .header("access-control-allow-headers")
        .unwrap_or_else(|| panic!("no allow-headers: {res:?}"));
    assert!(!allowed.contains("x-evil"), "{allowed}");
    assert!(allowed.contains("content-type"), "{allowed}");
}

// ---------------------------------------------------------------------------------------------
// Finding 8: configurations that would break the guarantees.

#[tokio::test]
async fn cluster_mode_on_sqlite_is_refused() {
    let run = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        "redis://127.0.0.1:1",
        "--jwt-secret",
        SECRET,
    ])
    .await;
    assert_refused(&run, "needs a shared PostgreSQL database-url");
}

#[tokio::test]
async fn cluster_mode_with_a_random_secret_is_refused() {
    let run = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        "redis://127.0.0.1:1",
        "--allow-sqlite-cluster",
    ])
    .await;
    assert_refused(&run, "a random secret differs on every node");
}

#[tokio::test]
async fn a_node_id_alive_in_redis_is_refused_and_a_dead_one_is_not() {
    let redis = Redis::start().await;
    let url = redis.url();
    let args = [
        "--node-id",
        "twin",
        "--redis-url",
        &url,
        "--allow-sqlite-cluster",
        "--jwt-secret",
        SECRET,
    ];
    let first = Node::start(&args).await;
    let deadline = Instant::now() + TIMEOUT;
    while redis.command(&["EXISTS", "node:twin:alive"]).await != ":1" {
        assert!(Instant::now() < deadline, "the first node never beat");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = run_to_exit(&[&["--listen", "127.0.0.1:0"][..], &args].concat()).await;
    assert_refused(&second, "node id \\\"twin\\\" is alive in Redis");

    // Killed (no clean leave): its key outlives it, yet a restart under the same id starts.
    first.kill().await;
    assert_eq!(redis.command(&["EXISTS", "node:twin:alive"]).await, ":1");
    let restarted = Node::start(&args).await;
    assert!(
        restarted.logs().contains("was not refreshed"),
        "{}",
        restarted.logs()
    );
    restarted.assert_no_panic();
}

// ---------------------------------------------------------------------------------------------
// Finding 11: values that would panic or truncate, and the secret's source.

#[tokio::test]
async fn overflowing_durations_are_refused_with_their_names() {
    for (flag, value) in [
        ("--drain-secs", "18446744073709551615"),
        ("--retention-connections-days", "4294967296"),
        ("--webhook-max-age-hours", "18446744073709551615"),
        ("--forward-timeout-ms", "18446744073709551615"),
    ] {
        let run = run_to_exit(&["--listen", "127.0.0.1:0", flag, value]).await;
        let name = flag.trim_start_matches("--");
        assert_refused(&run, &format!("{name} = {value} is over its limit"));
        assert!(!run.output.contains("panicked"), "{}", run.output);
    }
    let run = run_to_exit(&["--listen", "127.0.0.1:0", "--workers", "0"]).await;
    assert_refused(&run, "at least one HTTP worker");
    assert!(!run.output.contains("panicked"), "{}", run.output);
}

#[tokio::test]
async fn the_secret_can_come_from_a_file_and_a_flag_is_warned_about() {
    let dir = ScratchDir::new();
    let file = dir.0.join("jwt-secret");
    std::fs::write(&file, format!("{SECRET}\n")).expect("write the secret");
    let file = file.to_str().expect("a UTF-8 path");
    let node = Node::start(&["--jwt-secret-file", file]).await;
    // The demo token would be logged before this line.
    wait_log(&node, "node started").await;
    let logs = node.logs();
    assert!(
        !logs.contains("demo token"),
        "a random secret was used:\n{logs}"
    );
    assert!(!logs.contains("process list"), "{logs}");

    let flagged = Node::start(&["--jwt-secret", SECRET]).await;
    assert!(
        flagged.logs().contains("process list"),
        "{}",
        flagged.logs()
    );

    let missing = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret-file",
        "/nonexistent",
    ])
    .await;
    assert_refused(&missing, "jwt-secret-file /nonexistent");
}
