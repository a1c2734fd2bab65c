//! Socket.IO v5 on `/socket.io/` (protocol notes, section 3): namespaces, the conformance echo
//! handlers, and the connect timeout for a session that never sends CONNECT.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_tests::{
    CONFORMANCE, Node, Polling, RS, WsEvent, connect_reply_sid, health_sessions, wait_for_sessions,
    ws_connect,
};

#[tokio::test]
async fn websocket_session_without_connect_is_closed_after_connect_timeout() {
    let node = Node::start(CONFORMANCE).await;
    let (mut ws, _) = ws_connect(node.addr()).await;
    let start = Instant::now();
    // Answer pings so only the missing CONNECT can end the session.
    let event = ws.recv_answering_pings().await;
    let closed = start.elapsed();
    assert!(
        matches!(event, WsEvent::Close(_) | WsEvent::Ended(_)),
        "expected the connection to close, got {event:?}"
    );
    assert!(
        closed >= Duration::from_millis(900) && closed <= Duration::from_millis(3000),
        "closed after {closed:?}; the conformance connect timeout is 1 s"
    );
    wait_for_sessions(node.addr(), 0).await;
}

#[tokio::test]
async fn polling_session_without_connect_is_closed_after_connect_timeout() {
    let node = Node::start(CONFORMANCE).await;
    let s = Polling::open(node.addr()).await;
    let start = Instant::now();
    loop {
        let res = s.get().await;
        if res.status != 200 {
            res.assert_eio_error(400, 1, "Session ID unknown");
            break;
        }
        let body = res.text();
        match body.as_str() {
            "2" => s.post_ok("3").await,
            "1" => break,
            _ => panic!("unexpected records before the connect timeout: {body:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "session still open after {:?}",
            start.elapsed()
        );
    }
    let closed = start.elapsed();
    assert!(
        closed >= Duration::from_millis(900),
        "closed after {closed:?}, before the 1 s connect timeout"
    );
    wait_for_sessions(node.addr(), 0).await;
}

#[tokio::test]
async fn connected_session_outlives_connect_timeout() {
    let node = Node::start(CONFORMANCE).await;
    let (mut ws, _) = ws_connect(node.addr()).await;
    ws.connect_default_namespace().await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(ws.recv_text().await, "2");
        ws.send_text("3").await;
    }
    ws.send_text(r#"42["message",1]"#).await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"42["message-back",1]"#
    );
    assert_eq!(health_sessions(node.addr()).await, 1);
}

#[tokio::test]
async fn custom_namespace_connect_passes_auth() {
    let node = Node::start(CONFORMANCE).await;
    let (mut ws, _) = ws_connect(node.addr()).await;
    ws.send_text(r#"40/custom,{"token":"abc"}"#).await;
    connect_reply_sid(&ws.recv_text_answering_pings().await, "/custom,");
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"42/custom,["auth",{"token":"abc"}]"#
    );
    ws.send_text(r#"42/custom,["message","x"]"#).await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"42/custom,["message-back","x"]"#
    );
}

#[tokio::test]
async fn namespaces_share_one_connection_with_distinct_socket_ids() {
    let node = Node::start(CONFORMANCE).await;
    let (mut ws, _) = ws_connect(node.addr()).await;
    let root = ws.connect_default_namespace().await;
    ws.send_text("40/custom,").await;
    let custom = connect_reply_sid(&ws.recv_text_answering_pings().await, "/custom,");
    assert_ne!(root, custom);
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"42/custom,["auth",{}]"#
    );
    assert_eq!(health_sessions(node.addr()).await, 1);
}

#[tokio::test]
async fn unknown_namespace_is_refused_and_connection_stays() {
    let node = Node::start(CONFORMANCE).await;
    let (mut ws, _) = ws_connect(node.addr()).await;
    ws.send_text("40/nope,").await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"44/nope,{"message":"Invalid namespace"}"#
    );
    ws.connect_default_namespace().await;
}

#[tokio::test]
async fn message_with_ack_is_acknowledged_with_same_args() {
    let node = Node::start(CONFORMANCE).await;
    let (mut ws, _) = ws_connect(node.addr()).await;
    ws.connect_default_namespace().await;
    ws.send_text(r#"4217["message-with-ack",1,"2",{"3":[4]}]"#)
        .await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"4317[1,"2",{"3":[4]}]"#
    );
}

#[tokio::test]
async fn binary_message_is_echoed_with_attachment() {
    let node = Node::start(CONFORMANCE).await;
    let (mut ws, _) = ws_connect(node.addr()).await;
    ws.connect_default_namespace().await;
    ws.send_text(r#"451-["message",{"_placeholder":true,"num":0}]"#)
        .await;
    ws.send_binary(&[1, 2, 3]).await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"451-["message-back",{"_placeholder":true,"num":0}]"#
    );
    match ws.recv().await {
        WsEvent::Binary(b) => assert_eq!(&b[..], [1, 2, 3]),
        other => panic!("expected the attachment, got {other:?}"),
    }
}

#[tokio::test]
async fn polling_binary_message_round_trip() {
    let node = Node::start(CONFORMANCE).await;
    let s = Polling::open(node.addr()).await;
    s.post_ok("40").await;
    s.recv(2).await;
    s.post_ok(&format!(
        r#"451-["message",{{"_placeholder":true,"num":0}}]{RS}bAQID"#
    ))
    .await;
    assert_eq!(
        s.recv(2).await,
        [
            r#"451-["message-back",{"_placeholder":true,"num":0}]"#,
            "bAQID"
        ]
    );
}

#[tokio::test]
async fn client_disconnect_leaves_namespace_and_keeps_connection() {
    let node = Node::start(CONFORMANCE).await;
    let (mut ws, _) = ws_connect(node.addr()).await;
    ws.connect_default_namespace().await;
    ws.send_text("41").await;
    // No reply to `41`; rejoining must work on the same Engine.IO connection.
    ws.connect_default_namespace().await;
    assert_eq!(health_sessions(node.addr()).await, 1);
}

#[tokio::test]
async fn default_mode_uses_production_settings() {
    let node = Node::start(&[]).await;
    let (mut ws, hs) = ws_connect(node.addr()).await;
    assert_eq!(hs["pingInterval"], json!(25000));
    assert_eq!(hs["pingTimeout"], json!(20000));
    assert_eq!(hs["maxPayload"], json!(1_000_000));
    // The product authenticates every CONNECT; without a token it is refused, and the
    // connection stays usable for a retry.
    ws.send_text("40").await;
    assert_eq!(
        ws.recv_text().await,
        r#"44{"message":"auth_failed","data":{"reason":"missing_token"}}"#
    );
    ws.send_text(r#"40{"token":"not.a.jwt"}"#).await;
    assert_eq!(
        ws.recv_text().await,
        r#"44{"message":"auth_failed","data":{"reason":"malformed"}}"#
    );
    // Only `/` exists outside conformance mode.
    ws.send_text("40/custom,").await;
    assert_eq!(
        ws.recv_text().await,
        r#"44/custom,{"message":"Invalid namespace"}"#
    );
    node.assert_no_panic();
}
