//! Logs are JSON lines with request ids, and never contain a client's token.

use switchboard_tests::{Node, Ws, http_get, http_get_with_headers, raw_request};

const SECRET_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.never-log-this-signature";

#[tokio::test]
async fn access_logs_carry_request_ids_and_no_tokens() {
    let node = Node::start(&["--jwt-secret", "a-test-secret-of-at-least-32-bytes!!"]).await;
    let addr = node.addr();
    // A token in the query string and in the Authorization header of handshakes.
    let res = http_get(
        addr,
        &format!("/socket.io/?EIO=4&transport=polling&token={SECRET_TOKEN}"),
    )
    .await;
    assert_eq!(res.status, 200);
    let res = http_get_with_headers(
        addr,
        "/socket.io/?EIO=4&transport=polling",
        &[
            ("Authorization", &format!("Bearer {SECRET_TOKEN}")),
            ("X-Request-Id", "req-from-the-balancer-42"),
        ],
    )
    .await;
    assert_eq!(res.status, 200);

    let access = wait_for_log_lines(&node, 2, |v| v["span"]["name"] == "HTTP request").await;
    assert!(
        access
            .iter()
            .any(|v| v["span"]["request_id"] == "req-from-the-balancer-42"),
        "the caller's X-Request-Id is adopted: {access:?}"
    );
    assert!(
        access.iter().all(|v| v["span"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())),
        "every request has an id"
    );
}

#[tokio::test]
async fn websocket_handshakes_log_one_access_event_without_the_token() {
    let node = Node::start(&["--jwt-secret", "a-test-secret-of-at-least-32-bytes!!"]).await;
    let addr = node.addr();
    let mut ws = Ws::connect(
        addr,
        &format!("/socket.io/?EIO=4&transport=websocket&token={SECRET_TOKEN}"),
    )
    .await;
    assert!(ws.recv_text().await.starts_with('0'), "open packet");
    // A refused handshake (no EIO) is logged with its status, and the caller's request id.
    let refused = raw_request(
        addr,
        b"GET /socket.io/?transport=websocket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Request-Id: ws-req-7\r\n\r\n",
    )
    .await;
    assert_eq!(refused.status, 400);

    let events = wait_for_log_lines(&node, 2, |v| v["message"] == "websocket upgrade").await;
    let status = |v: &serde_json::Value| v["http.status_code"].as_u64();
    assert!(
        events
            .iter()
            .any(|v| status(v) == Some(101) && v["http.path"] == "/socket.io/"),
        "the accepted handshake is logged: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|v| status(v) == Some(400) && v["request_id"] == "ws-req-7"),
        "the refused handshake is logged with its request id: {events:?}"
    );
}

/// Wait until the node has logged `n` JSON lines that `keep` selects, and check that no token
/// reached its logs.
async fn wait_for_log_lines(
    node: &Node,
    n: usize,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let logs = node.logs();
        let lines: Vec<serde_json::Value> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| keep(v))
            .collect();
        if lines.len() >= n {
            assert!(
                !logs.contains("never-log-this-signature") && !logs.contains("c2VjcmV0"),
                "a token reached the logs:\n{logs}"
            );
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} of the expected log lines:\n{logs}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The sid lets whoever holds it read the session's polling answers, so logs name a session by
/// a public id derived from it (issue #17, finding 5).
#[tokio::test]
async fn logs_name_sessions_by_a_public_id_never_the_sid() {
    let node = Node::start(&["--jwt-secret", "a-test-secret-of-at-least-32-bytes!!"]).await;
    let (mut ws, open) = switchboard_tests::ws_connect(node.addr()).await;
    let sid = open["sid"].as_str().expect("sid").to_string();
    // Three refused logins: three `auth_failed` lines, then the connection is closed.
    for _ in 0..3 {
        ws.send_text(r#"40{"token":"not-a-token"}"#).await;
        assert!(ws.recv_text_answering_pings().await.starts_with("44"));
    }
    let refused = wait_for_log_lines(&node, 3, |v| v["message"] == "auth_failed").await;
    let closed = wait_for_log_lines(&node, 1, |v| v["message"] == "session closed").await;
    let public = refused[0]["session"]
        .as_str()
        .expect("a session field")
        .to_string();
    assert_eq!(public.len(), 12, "{public}");
    assert!(refused.iter().all(|v| v["session"] == public.as_str()));
    assert_eq!(
        closed[0]["session"],
        public.as_str(),
        "one session, one name"
    );
    assert_eq!(closed[0]["reason"], "login_refused");
    let logs = node.logs();
    assert!(!logs.contains(&sid), "the sid reached the logs:\n{logs}");
}
