//! Engine.IO v4 wire rules on `/socket.io/` (protocol notes, section 2), against `--conformance`
//! nodes: handshakes, every error code, polling semantics, the polling→websocket upgrade and the
//! heartbeat.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use switchboard_tests::{
    CONFORMANCE, Node, POLLING_HANDSHAKE, Polling, RS, TEXT_PLAIN, Ws, WsEvent, connect_reply_sid,
    health_sessions, http_get, http_get_with_headers, http_post, polling_handshake, raw_request,
    wait_for_sessions, within, ws_connect,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

// ----- handshakes -------------------------------------------------------------------------------

#[tokio::test]
async fn polling_handshake_sends_open_packet_with_conformance_settings() {
    let node = Node::start(CONFORMANCE).await;
    let res = http_get(node.addr(), POLLING_HANDSHAKE).await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=UTF-8"),
        "content-type of the polling handshake"
    );
    assert_eq!(res.header("cache-control"), Some("no-store"), "{res:?}");
    let text = res.text();
    assert!(text.starts_with('0'), "handshake body {text:?}");
    let hs: serde_json::Value = serde_json::from_str(&text[1..]).expect("handshake JSON");
    let sid = hs["sid"].as_str().expect("sid is a string");
    assert!(!sid.is_empty(), "sid is empty");
    assert_eq!(hs["upgrades"], json!(["websocket"]));
    assert_eq!(hs["pingInterval"], json!(300));
    assert_eq!(hs["pingTimeout"], json!(200));
    assert_eq!(hs["maxPayload"], json!(1_000_000));
    assert_eq!(health_sessions(node.addr()).await, 1);
}

#[tokio::test]
async fn polling_handshakes_get_distinct_sids() {
    let node = Node::start(CONFORMANCE).await;
    let (_, a) = polling_handshake(node.addr()).await;
    let (_, b) = polling_handshake(node.addr()).await;
    assert_ne!(a, b);
}

#[tokio::test]
async fn websocket_handshake_offers_no_upgrades() {
    let node = Node::start(CONFORMANCE).await;
    let (_ws, hs) = ws_connect(node.addr()).await;
    assert!(hs["sid"].as_str().is_some_and(|s| !s.is_empty()), "{hs}");
    assert_eq!(hs["upgrades"], json!([]));
    assert_eq!(hs["pingInterval"], json!(300));
    assert_eq!(hs["pingTimeout"], json!(200));
    assert_eq!(hs["maxPayload"], json!(1_000_000));
}

#[tokio::test]
async fn explicit_flags_override_conformance_settings() {
    let node = Node::start(&[
        "--conformance",
        "--ping-interval-ms",
        "4000",
        "--ping-timeout-ms",
        "3000",
        "--max-payload",
        "1000",
    ])
    .await;
    let (hs, _) = polling_handshake(node.addr()).await;
    assert_eq!(hs["pingInterval"], json!(4000));
    assert_eq!(hs["pingTimeout"], json!(3000));
    assert_eq!(hs["maxPayload"], json!(1000));
}

// ----- error codes ------------------------------------------------------------------------------

#[tokio::test]
async fn error_0_transport_unknown() {
    let node = Node::start(CONFORMANCE).await;
    for path in [
        "/socket.io/?EIO=4",
        "/socket.io/?EIO=4&transport=foo",
        "/socket.io/?EIO=4&transport=__proto__",
    ] {
        http_get(node.addr(), path)
            .await
            .assert_eio_error(400, 0, "Transport unknown");
    }
    assert_eq!(health_sessions(node.addr()).await, 0);
}

#[tokio::test]
async fn error_1_session_id_unknown_on_get_and_post() {
    let node = Node::start(CONFORMANCE).await;
    let path = "/socket.io/?EIO=4&transport=polling&sid=doesnotexist";
    http_get(node.addr(), path)
        .await
        .assert_eio_error(400, 1, "Session ID unknown");
    http_post(node.addr(), path, TEXT_PLAIN, b"40")
        .await
        .assert_eio_error(400, 1, "Session ID unknown");
}

#[tokio::test]
async fn error_2_handshake_with_post() {
    let node = Node::start(CONFORMANCE).await;
    http_post(node.addr(), POLLING_HANDSHAKE, TEXT_PLAIN, b"40")
        .await
        .assert_eio_error(400, 2, "Bad handshake method");
    assert_eq!(health_sessions(node.addr()).await, 0);
}

#[tokio::test]
async fn error_3_websocket_transport_without_upgrade() {
    let node = Node::start(CONFORMANCE).await;
    http_get(node.addr(), "/socket.io/?EIO=4&transport=websocket")
        .await
        .assert_eio_error(400, 3, "Bad request");
    assert_eq!(health_sessions(node.addr()).await, 0);
}

/// The contract names no status for a disallowed Origin. Node's engine.io refuses only a
/// syntactically bad Origin (code 3) and leaves allow-listing to the browser; a server that is
/// given an allow-list should refuse the rest. This accepts either mapping — 400 with code 3
/// ("Bad request") or 403 with code 4 ("Forbidden") — and requires that no session is created and
/// that the response does not grant the foreign origin.
#[tokio::test]
async fn cors_disallowed_origin_is_refused() {
    let node = Node::start(&["--conformance", "--cors-origins", "http://allowed.example"]).await;
    let res = http_get_with_headers(
        node.addr(),
        POLLING_HANDSHAKE,
        &[("Origin", "http://evil.example")],
    )
    .await;
    match res.status {
        400 => res.assert_eio_error(400, 3, "Bad request"),
        403 => res.assert_eio_error(403, 4, "Forbidden"),
        _ => panic!("disallowed Origin: expected 400 code 3 or 403 code 4, got {res:?}"),
    }
    let granted = res.header("access-control-allow-origin");
    assert!(
        granted != Some("*") && granted != Some("http://evil.example"),
        "disallowed Origin was granted: {res:?}"
    );
    assert_eq!(health_sessions(node.addr()).await, 0);
}

#[tokio::test]
async fn cors_allowed_origin_is_reflected() {
    let node = Node::start(&["--conformance", "--cors-origins", "http://allowed.example"]).await;
    let res = http_get_with_headers(
        node.addr(),
        POLLING_HANDSHAKE,
        &[("Origin", "http://allowed.example")],
    )
    .await;
    assert_eq!(res.status, 200, "{res:?}");
    assert!(res.text().starts_with("0{"), "{res:?}");
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("http://allowed.example"),
        "{res:?}"
    );
}

#[tokio::test]
async fn error_5_unsupported_protocol_version() {
    let node = Node::start(CONFORMANCE).await;
    for path in [
        "/socket.io/?transport=polling",
        "/socket.io/?EIO=3&transport=polling",
        "/socket.io/?EIO=abc&transport=polling",
    ] {
        http_get(node.addr(), path)
            .await
            .assert_eio_error(400, 5, "Unsupported protocol version");
    }
    assert_eq!(health_sessions(node.addr()).await, 0);
}

#[tokio::test]
async fn websocket_upgrade_with_bad_eio_is_rejected_before_101() {
    let node = Node::start(CONFORMANCE).await;
    let req = format!(
        "GET /socket.io/?EIO=3&transport=websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        node.addr()
    );
    let res = raw_request(node.addr(), req.as_bytes()).await;
    assert_eq!(res.status, 400, "{res:?}");
    assert_eq!(health_sessions(node.addr()).await, 0);
}

#[tokio::test]
async fn websocket_handshakes_elsewhere_are_refused_and_leave_nothing() {
    let node = Node::start(CONFORMANCE).await;
    let upgrade = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    // Every request with `Upgrade: websocket` is answered by the websocket handshake, whatever
    // its path: other paths are not found, a polling request is a bad request.
    let res = raw_request(node.addr(), upgrade("/health/live").as_bytes()).await;
    assert_eq!(res.status, 404, "{res:?}");
    let res = raw_request(
        node.addr(),
        upgrade("/socket.io/?EIO=4&transport=polling").as_bytes(),
    )
    .await;
    res.assert_eio_error(400, 3, "Bad request");
    // An upgrade without its Sec-WebSocket-Key cannot complete: refused before a session exists.
    let res = raw_request(
        node.addr(),
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\
          Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    res.assert_eio_error(400, 3, "Bad request");
    assert_eq!(health_sessions(node.addr()).await, 0);
    // The node still answers websockets.
    let (_ws, open) = ws_connect(node.addr()).await;
    assert!(open["sid"].is_string(), "{open}");
}

// ----- polling ----------------------------------------------------------------------------------

#[tokio::test]
async fn polling_connect_round_trip() {
    let node = Node::start(CONFORMANCE).await;
    let s = Polling::open(node.addr()).await;
    s.post_ok("40").await;
    let records = s.recv(2).await;
    let socket_sid = connect_reply_sid(&records[0], "");
    assert_ne!(
        socket_sid, s.sid,
        "the socket id must not be the Engine.IO sid"
    );
    assert_eq!(records[1], r#"42["auth",{}]"#);

    s.post_ok(r#"42["message","hello",1]"#).await;
    assert_eq!(s.recv(1).await, [r#"42["message-back","hello",1]"#]);
}

#[tokio::test]
async fn polling_post_may_batch_records() {
    let node = Node::start(CONFORMANCE).await;
    let s = Polling::open(node.addr()).await;
    s.post_ok(&format!(r#"40{RS}42["message","a"]{RS}42["message","b"]"#))
        .await;
    let records = s.recv(4).await;
    connect_reply_sid(&records[0], "");
    assert_eq!(
        records[1..],
        [
            r#"42["auth",{}]"#,
            r#"42["message-back","a"]"#,
            r#"42["message-back","b"]"#
        ]
    );
}

#[tokio::test]
async fn polling_post_over_max_payload_gets_413_and_closes_session() {
    let node = Node::start(&["--conformance", "--max-payload", "1000"]).await;
    let s = Polling::open(node.addr()).await;
    assert_eq!(s.handshake["maxPayload"], json!(1000));
    let body = format!(r#"42["message","{}"]"#, "a".repeat(2000));
    let res = s.post(&body).await;
    assert_eq!(res.status, 413, "{res:?}");
    s.get().await.assert_eio_error(400, 1, "Session ID unknown");
    assert_eq!(health_sessions(node.addr()).await, 0);
}

#[tokio::test]
async fn polling_post_at_max_payload_is_accepted() {
    let node = Node::start(&["--conformance", "--max-payload", "1000"]).await;
    let s = Polling::open(node.addr()).await;
    s.post_ok("40").await;
    s.recv(2).await;
    let prefix = r#"42["message",""#;
    let body = format!("{prefix}{}\"]", "a".repeat(1000 - prefix.len() - 2));
    assert_eq!(body.len(), 1000);
    s.post_ok(&body).await;
    let back = s.recv(1).await;
    assert!(back[0].starts_with(r#"42["message-back","aaa"#), "{back:?}");
}

#[tokio::test]
async fn overlapping_get_is_refused_and_closes_session() {
    let node = Node::start(CONFORMANCE).await;
    let s = Polling::open(node.addr()).await;
    let first = {
        let (addr, path) = (s.addr, s.path());
        tokio::spawn(async move { http_get(addr, &path).await })
    };
    // Not an assertion: let the first GET reach the server before the second one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = s.get().await;
    assert_eq!(second.status, 400, "overlapping GET: {second:?}");
    let first = within("the first GET", first)
        .await
        .expect("first GET task");
    assert_eq!(first.status, 200, "pending GET: {first:?}");
    assert_eq!(first.text(), "1", "pending GET after the overlap");
    s.get().await.assert_eio_error(400, 1, "Session ID unknown");
}

#[tokio::test]
async fn post_close_while_get_pending_answers_noop() {
    let node = Node::start(CONFORMANCE).await;
    let s = Polling::open(node.addr()).await;
    let pending = {
        let (addr, path) = (s.addr, s.path());
        tokio::spawn(async move { http_get(addr, &path).await })
    };
    // Not an assertion: let the GET become pending first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.post_ok("1").await;
    let pending = within("the pending GET", pending).await.expect("GET task");
    assert_eq!(pending.status, 200, "{pending:?}");
    assert_eq!(pending.text(), "6", "pending GET after the client's close");
    s.get().await.assert_eio_error(400, 1, "Session ID unknown");
    wait_for_sessions(node.addr(), 0).await;
}

#[tokio::test]
async fn overlapping_post_is_refused_and_closes_session() {
    let node = Node::start(CONFORMANCE).await;
    let s = Polling::open(node.addr()).await;
    // A POST whose body never completes keeps the first POST in flight.
    let mut first = TcpStream::connect(node.addr()).await.expect("connect");
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {TEXT_PLAIN}\r\n\
         Content-Length: 100\r\n\r\n42[",
        s.path(),
        node.addr()
    );
    first.write_all(head.as_bytes()).await.expect("write");
    // Not an assertion: let the first POST reach the server.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = s.post(r#"42["message",1]"#).await;
    assert_eq!(second.status, 400, "overlapping POST: {second:?}");
    s.get().await.assert_eio_error(400, 1, "Session ID unknown");
    drop(first);
    wait_for_sessions(node.addr(), 0).await;
}

#[tokio::test]
async fn polling_post_as_octet_stream_is_refused_and_closes_session() {
    let node = Node::start(CONFORMANCE).await;
    let s = Polling::open(node.addr()).await;
    let res = http_post(node.addr(), &s.path(), "application/octet-stream", b"40").await;
    assert_eq!(res.status, 400, "{res:?}");
    s.get().await.assert_eio_error(400, 1, "Session ID unknown");
}

#[tokio::test]
async fn polling_client_ping_gets_pong() {
    let node = Node::start(CONFORMANCE).await;
    let s = Polling::open(node.addr()).await;
    s.post_ok("2").await;
    assert_eq!(s.get_records().await, ["3"]);
}

#[tokio::test]
async fn polling_server_pings_and_closes_silent_client() {
    let node = Node::start(CONFORMANCE).await;
    let s = Polling::open(node.addr()).await;
    let start = Instant::now();
    assert_eq!(s.get_records().await, ["2"], "first GET after ~300 ms");
    let pinged = start.elapsed();
    assert!(
        pinged >= Duration::from_millis(250),
        "ping after {pinged:?}, pingInterval is 300 ms"
    );
    // Do not answer: the next GET is closed with `1` when pingTimeout (200 ms) expires.
    let res = s.get().await;
    let closed = start.elapsed();
    if res.status == 200 {
        assert_eq!(res.text(), "1", "GET pending at ping timeout");
    } else {
        res.assert_eio_error(400, 1, "Session ID unknown");
    }
    assert!(
        closed >= Duration::from_millis(450),
        "closed after {closed:?}, before pingInterval + pingTimeout"
    );
    wait_for_sessions(node.addr(), 0).await;
}

// ----- upgrade ----------------------------------------------------------------------------------

#[tokio::test]
async fn polling_upgrades_to_websocket() {
    // A long ping interval keeps a ping from answering the pending GET instead of the noop.
    let node = Node::start(&["--conformance", "--ping-interval-ms", "10000"]).await;
    let s = Polling::open(node.addr()).await;
    s.post_ok("40").await;
    let records = s.recv(2).await;
    connect_reply_sid(&records[0], "");

    let pending = {
        let (addr, path) = (s.addr, s.path());
        tokio::spawn(async move { http_get(addr, &path).await })
    };
    let mut ws = Ws::connect(
        node.addr(),
        &format!("/socket.io/?EIO=4&transport=websocket&sid={}", s.sid),
    )
    .await;
    ws.send_text("2probe").await;
    assert_eq!(ws.recv_text().await, "3probe");
    let pending = within("the pending GET during upgrade", pending)
        .await
        .expect("GET task");
    assert_eq!(pending.status, 200, "{pending:?}");
    assert_eq!(pending.text(), "6", "pending GET during upgrade");

    ws.send_text("5").await;
    ws.send_text(r#"42["message","upgraded"]"#).await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"42["message-back","upgraded"]"#
    );

    let res = s.get().await;
    assert_eq!(res.status, 400, "polling GET after upgrade: {res:?}");
    res.assert_eio_error(400, 3, "Bad request");
    assert_eq!(health_sessions(node.addr()).await, 1);
}

#[tokio::test]
async fn polling_get_arriving_after_the_probe_gets_a_noop() {
    // The client's GET may reach the server only after `2probe` was answered: it must still be
    // released with a noop, or the client never sends the upgrade packet.
    let node = Node::start(&["--conformance", "--ping-interval-ms", "10000"]).await;
    let s = Polling::open(node.addr()).await;
    s.post_ok("40").await;
    s.recv(2).await;
    let mut ws = Ws::connect(
        node.addr(),
        &format!("/socket.io/?EIO=4&transport=websocket&sid={}", s.sid),
    )
    .await;
    ws.send_text("2probe").await;
    assert_eq!(ws.recv_text().await, "3probe");
    let late = s.get().await;
    assert_eq!(late.status, 200, "{late:?}");
    assert_eq!(late.text(), "6", "GET after the probe");
    ws.send_text("5").await;
    ws.send_text(r#"42["message","upgraded"]"#).await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"42["message-back","upgraded"]"#
    );
}

#[tokio::test]
async fn second_websocket_for_upgraded_sid_is_refused_and_first_survives() {
    let node = Node::start(&["--conformance", "--ping-interval-ms", "10000"]).await;
    let s = Polling::open(node.addr()).await;
    s.post_ok("40").await;
    s.recv(2).await;
    let path = format!("/socket.io/?EIO=4&transport=websocket&sid={}", s.sid);
    let mut ws = Ws::connect(node.addr(), &path).await;
    ws.send_text("2probe").await;
    assert_eq!(ws.recv_text().await, "3probe");
    ws.send_text("5").await;
    ws.send_text(r#"42["message","upgraded"]"#).await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"42["message-back","upgraded"]"#
    );

    // Refused either at the handshake or by an immediate close.
    let url = format!("ws://{}{path}", node.addr());
    if let Ok((mut second, _)) = within("second websocket", connect_async(&url)).await {
        let event = within("the second websocket's fate", second.next()).await;
        assert!(
            matches!(event, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
            "second websocket for an upgraded sid got {event:?}"
        );
    }
    // The session's own websocket is unaffected.
    ws.send_text(r#"42["message","still"]"#).await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"42["message-back","still"]"#
    );
    assert_eq!(health_sessions(node.addr()).await, 1);
}

#[tokio::test]
async fn upgrade_flushes_buffered_packets_to_websocket() {
    let node = Node::start(&["--conformance", "--ping-interval-ms", "10000"]).await;
    let s = Polling::open(node.addr()).await;
    let mut ws = Ws::connect(
        node.addr(),
        &format!("/socket.io/?EIO=4&transport=websocket&sid={}", s.sid),
    )
    .await;
    ws.send_text("2probe").await;
    assert_eq!(ws.recv_text().await, "3probe");
    // CONNECT over polling during the upgrade: the reply is buffered until `5`.
    s.post_ok("40").await;
    ws.send_text("5").await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let t = ws.recv_text_answering_pings().await;
        if t != "6" {
            got.push(t);
        }
    }
    connect_reply_sid(&got[0], "");
    assert_eq!(got[1], r#"42["auth",{}]"#);
}

// ----- heartbeat --------------------------------------------------------------------------------

#[tokio::test]
async fn websocket_client_that_never_pongs_is_closed() {
    let node = Node::start(CONFORMANCE).await;
    let (mut ws, _) = ws_connect(node.addr()).await;
    let start = Instant::now();
    ws.send_text("40").await;
    connect_reply_sid(&ws.recv_text().await, "");
    assert_eq!(ws.recv_text().await, r#"42["auth",{}]"#);
    assert_eq!(ws.recv_text().await, "2", "server ping");
    let pinged = start.elapsed();
    assert!(
        pinged >= Duration::from_millis(250),
        "ping after {pinged:?}, pingInterval is 300 ms"
    );
    // Never answer. The server closes once pingTimeout (200 ms) has passed.
    let event = ws.recv().await;
    let closed = start.elapsed();
    assert!(
        matches!(event, WsEvent::Close(_) | WsEvent::Ended(_)),
        "expected the connection to close, got {event:?}"
    );
    assert!(
        closed >= Duration::from_millis(450) && closed <= Duration::from_millis(2000),
        "closed after {closed:?}; expected about 500 ms (pingInterval + pingTimeout)"
    );
    wait_for_sessions(node.addr(), 0).await;
}

#[tokio::test]
async fn websocket_client_answering_pings_stays_connected() {
    let node = Node::start(CONFORMANCE).await;
    let (mut ws, _) = ws_connect(node.addr()).await;
    ws.connect_default_namespace().await;
    let start = Instant::now();
    let mut pings = 0;
    while pings < 4 {
        assert_eq!(ws.recv_text().await, "2");
        ws.send_text("3").await;
        pings += 1;
    }
    assert!(start.elapsed() >= Duration::from_millis(900));
    ws.send_text(r#"42["message","still here"]"#).await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"42["message-back","still here"]"#
    );
    assert_eq!(health_sessions(node.addr()).await, 1);
}

#[tokio::test]
async fn websocket_client_ping_gets_pong() {
    let node = Node::start(CONFORMANCE).await;
    let (mut ws, _) = ws_connect(node.addr()).await;
    ws.send_text("2").await;
    assert_eq!(ws.recv_text().await, "3");
}

// ----- other endpoints --------------------------------------------------------------------------

#[tokio::test]
async fn health_endpoints() {
    let node = Node::start(&["--conformance", "--node-id", "node-a"]).await;
    let res = http_get(node.addr(), "/health").await;
    assert_eq!(res.status, 200, "{res:?}");
    let body = res.json();
    assert_eq!(body["status"], json!("ok"), "{body}");
    assert_eq!(body["node"], json!("node-a"), "{body}");
    assert_eq!(body["sessions"], json!(0), "{body}");
    assert_eq!(body["draining"], json!(false), "{body}");
    assert_eq!(http_get(node.addr(), "/health/live").await.status, 200);
    assert_eq!(http_get(node.addr(), "/health/ready").await.status, 200);
}

#[tokio::test]
async fn engineio_endpoint_echoes_text_and_binary() {
    let node = Node::start(CONFORMANCE).await;
    let mut ws = Ws::connect(node.addr(), "/engine.io/?EIO=4&transport=websocket").await;
    let open = ws.recv_text().await;
    assert!(open.starts_with("0{"), "{open:?}");
    ws.send_text("4hello").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4hello");
    ws.send_binary(&[1, 2, 3]).await;
    loop {
        match ws.recv().await {
            WsEvent::Text(t) if t == "2" => ws.send_text("3").await,
            WsEvent::Binary(b) => {
                assert_eq!(&b[..], [1, 2, 3]);
                break;
            }
            other => panic!("expected the binary echo, got {other:?}"),
        }
    }
}

// ----- strict session ends ------------------------------------------------------------------------

/// After the server ends a polling session, the next request with its sid is
/// `400 {"code":1,"message":"Session ID unknown"}`, as the reference server answers.
async fn assert_session_unknown(p: &Polling) {
    let res = within("the session to be forgotten", async {
        loop {
            let res = p.get().await;
            if res.status == 400 {
                return res;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        res.json(),
        json!({"code": 1, "message": "Session ID unknown"}),
        "{res:?}"
    );
}

#[tokio::test]
async fn after_a_protocol_violation_the_sid_is_unknown() {
    let node = Node::start(CONFORMANCE).await;
    let p = Polling::open(node.addr()).await;
    // An upgrade packet over polling is a violation: the session ends at once.
    let res = p.post("5").await;
    assert_eq!(res.status, 200, "{res:?}");
    let res = p.get().await;
    assert_eq!(res.status, 400, "the very next GET: {res:?}");
    assert_session_unknown(&p).await;
}

#[tokio::test]
async fn after_the_clients_close_packet_the_sid_is_unknown() {
    let node = Node::start(CONFORMANCE).await;
    let p = Polling::open(node.addr()).await;
    p.post_ok("1").await;
    assert_session_unknown(&p).await;
}

#[tokio::test]
async fn a_client_that_never_polls_is_timed_out_on_schedule_and_forgotten() {
    // Conformance settings: ping at 300 ms, pong due 200 ms later; the client never polls, so it
    // never even receives the ping.
    let node = Node::start(CONFORMANCE).await;
    let p = Polling::open(node.addr()).await;
    let started = Instant::now();
    wait_for_sessions(node.addr(), 0).await;
    let elapsed = started.elapsed();
    // A generous bound: what matters is that it happens without the client polling.
    assert!(
        elapsed < Duration::from_secs(3),
        "timed out after {elapsed:?}"
    );
    let res = p.get().await;
    assert_eq!(res.status, 400, "{res:?}");
    assert_eq!(
        res.json(),
        json!({"code": 1, "message": "Session ID unknown"})
    );
}
