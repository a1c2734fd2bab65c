//! A client that stops reading is closed as `slow_client` once its bounded outbound queue is
//! full; the node's memory stays bounded and every other socket keeps receiving.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use switchboard_actors::auth::mint_hs256;
use switchboard_tests::{HttpResponse, Node, RawWs, SioClient, raw_request, scrape_metrics};

const SECRET: &str = "slow-client-test-secret-0123456789abcdef";
const API_KEY: &str = "slow-client-api-key-0123456789abcdef";

async fn emit_to(
    addr: SocketAddr,
    user: &str,
    event: &str,
    data: serde_json::Value,
) -> HttpResponse {
    let body = json!({"to": {"user": user}, "event": event, "data": data}).to_string();
    let request = format!(
        "POST /api/v1/emit HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_request(addr, request.as_bytes()).await
}

/// The value of the first sample of `name` whose labels contain `label`.
fn sample(exposition: &str, name: &str, label: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_slow_client() {
    let node = Node::start(&[
        "--jwt-secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--max-buffered-frames",
        "64",
    ])
    .await;
    let addr = node.addr();

    // The slow client authenticates and then never reads again.
    let mut slow = RawWs::connect(addr, "/socket.io/?EIO=4&transport=websocket").await;
    let token = mint_hs256(SECRET.as_bytes(), "slowpoke", 3600, &[]);
    slow.send_frame(0x1, format!(r#"40{{"token":"{token}"}}"#).as_bytes())
        .await;
    let mut fast = SioClient::connect(
        addr,
        json!({"token": mint_hs256(SECRET.as_bytes(), "fast", 3600, &[])}),
    )
    .await;
    // Wait until the slow socket is authenticated (it counts as an active connection).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sample(&scrape_metrics(addr).await, "socket_connections_active", "") != Some(2.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slowpoke never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let rss_before = sample(
        &scrape_metrics(addr).await,
        "process_resident_memory_bytes",
        "",
    )
    .unwrap_or(0.0);
    // Far more than the socket buffers and the 64-frame queue can hold.
    let blob = "x".repeat(32 * 1024);
    let mut closed = false;
    for round in 0..600 {
        let res = emit_to(
            addr,
            "slowpoke",
            "bulk",
            json!({"round": round, "blob": blob}),
        )
        .await;
        assert_eq!(res.status, 202);
        if round % 50 == 0 {
            // Everyone else keeps receiving while the slow client backs up.
            let res = emit_to(addr, "fast", "tick", json!(round)).await;
            assert_eq!(res.status, 202);
            assert_eq!(fast.event("tick").await, json!(round));
            let metrics = scrape_metrics(addr).await;
            if sample(
                &metrics,
                "socket_disconnects_total",
                r#"reason="slow_client""#,
            ) >= Some(1.0)
            {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the slow client was never closed as slow_client");
    let metrics = scrape_metrics(addr).await;
    assert!(
        sample(
            &metrics,
            "socket_errors_total",
            r#"error_type="slow_client""#
        ) >= Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "socket_connections_active", ""),
        Some(1.0),
        "only the fast client is left"
    );
    // Bounded: the queue holds 64 frames (2 MiB of these), whatever was emitted.
    let rss = sample(&metrics, "process_resident_memory_bytes", "").unwrap_or(f64::MAX);
    assert!(
        rss - rss_before < 32.0 * 1024.0 * 1024.0,
        "RSS grew from {rss_before} to {rss}"
    );
    // The fast client still works after the slow one is gone.
    let res = emit_to(addr, "fast", "tick", json!("after")).await;
    assert_eq!(res.status, 202);
    assert_eq!(fast.event("tick").await, json!("after"));
    node.assert_no_panic();
}

/// A client that stops reading, with nothing sent to it, is still subject to the heartbeat: it
/// cannot answer the pings it no longer reads, so the server closes it for the ping timeout,
/// while a client that answers keeps its session across many ping intervals.
#[tokio::test]
async fn a_client_that_stops_reading_still_meets_its_heartbeat() {
    let node = Node::start(&[
        "--jwt-secret",
        SECRET,
        "--ping-interval-ms",
        "300",
        "--ping-timeout-ms",
        "300",
    ])
    .await;
    let addr = node.addr();
    let mut silent = RawWs::connect(addr, "/socket.io/?EIO=4&transport=websocket").await;
    let token = mint_hs256(SECRET.as_bytes(), "silent", 3600, &[]);
    silent
        .send_frame(0x1, format!(r#"40{{"token":"{token}"}}"#).as_bytes())
        .await;
    let mut awake = SioClient::connect(
        addr,
        json!({"token": mint_hs256(SECRET.as_bytes(), "awake", 3600, &[])}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = scrape_metrics(addr).await;
        let timeouts = sample(&metrics, "socket_disconnects_total", r#"reason="timeout""#);
        if timeouts >= Some(1.0) {
            assert_eq!(
                sample(&metrics, "socket_connections_active", ""),
                Some(1.0),
                "only the client that answers pings is left"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silent client was never timed out by the heartbeat"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Many ping intervals later the client that answers is still served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        awake
            .call("presence:query", json!({"userIds": ["silent"]}))
            .await["ok"],
        true
    );
    node.assert_no_panic();
}
