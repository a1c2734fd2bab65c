//! Engine.IO v3 / Socket.IO v4 on the wire (`--allow-eio3`), against `--conformance` nodes:
//! refusal without the flag, the v3 handshake and implicit `40`, length-prefixed polling
//! records counted in UTF-16 code units, the binary polling framing, the type byte of binary
//! websocket frames, malformed v3 input, and the heartbeat in which the client pings.

use std::time::{Duration, Instant};

use switchboard_tests::{
    CONFORMANCE, HttpResponse, Node, OP_BINARY, OP_CLOSE, OP_TEXT, RawWs, TEXT_PLAIN, http_get,
    http_post, within,
};

/// A conformance node that takes v3 clients, with a heartbeat slow enough for raw polling.
const EIO3: &[&str] = &[
    "--conformance",
    "--allow-eio3",
    "--ping-interval-ms",
    "10000",
    "--ping-timeout-ms",
    "5000",
];

const OCTET_STREAM: &str = "application/octet-stream";

fn path(query: &str) -> String {
    format!("/socket.io/?EIO=3&{query}")
}

/// The records of a v3 text-framed body, split by their UTF-16 lengths (panics when malformed).
fn records(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (len, after) = rest.split_once(':').expect("a length prefix");
        let units: usize = len.parse().expect("a decimal length");
        let mut counted = 0;
        let end = after
            .char_indices()
            .find_map(|(at, c)| {
                let here = (counted == units).then_some(at);
                counted += c.len_utf16();
                here
            })
            .unwrap_or(after.len());
        out.push(after[..end].to_owned());
        rest = &after[end..];
    }
    out
}

/// `<utf-16 length>:<record>` for each record.
fn frame(records: &[&str]) -> String {
    records
        .iter()
        .map(|r| format!("{}:{r}", r.encode_utf16().count()))
        .collect()
}

/// Open a v3 polling session; returns its sid and the records of the first GET.
async fn handshake(node: &Node, extra: &str) -> (String, Vec<String>) {
    let res = http_get(node.addr(), &path(&format!("transport=polling{extra}"))).await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    let records = records(&res.text());
    let open: serde_json::Value =
        serde_json::from_str(records[0].strip_prefix('0').expect("an open packet")).unwrap();
    (open["sid"].as_str().unwrap().to_owned(), records)
}

async fn get(node: &Node, sid: &str) -> HttpResponse {
    http_get(node.addr(), &path(&format!("transport=polling&sid={sid}"))).await
}

async fn post(node: &Node, sid: &str, content_type: &str, body: &[u8]) -> HttpResponse {
    let path = path(&format!("transport=polling&sid={sid}"));
    http_post(node.addr(), &path, content_type, body).await
}

#[tokio::test]
async fn eio3_is_refused_without_the_flag_and_other_revisions_always() {
    let node = Node::start(CONFORMANCE).await;
    for query in ["EIO=3&transport=polling", "EIO=3&transport=polling&b64=1"] {
        let res = http_get(node.addr(), &format!("/socket.io/?{query}")).await;
        res.assert_eio_error(400, 5, "Unsupported protocol version");
    }
    let node = Node::start(EIO3).await;
    for query in [
        "EIO=2&transport=polling",
        "EIO=03&transport=polling",
        "EIO=5&transport=polling",
        "transport=polling",
    ] {
        let res = http_get(node.addr(), &format!("/socket.io/?{query}")).await;
        res.assert_eio_error(400, 5, "Unsupported protocol version");
    }
    // EIO4 is untouched by the flag.
    let res = http_get(node.addr(), "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(res.status, 200);
    assert!(res.text().contains("\"maxPayload\""), "{}", res.text());
}

#[tokio::test]
async fn the_v3_handshake_has_no_max_payload_and_is_followed_by_the_implicit_connect() {
    let node = Node::start(EIO3).await;
    let (sid, records) = handshake(&node, "&b64=1").await;
    let open: serde_json::Value = serde_json::from_str(&records[0][1..]).unwrap();
    assert_eq!(
        open,
        serde_json::json!({
            "sid": sid,
            "upgrades": ["websocket"],
            "pingInterval": 10000,
            "pingTimeout": 5000,
        })
    );
    assert_eq!(
        records[1..],
        ["40"],
        "Socket.IO v4 joins `/` without a CONNECT"
    );
}

#[tokio::test]
async fn polling_records_are_counted_in_utf16_code_units() {
    let node = Node::start(EIO3).await;
    let (sid, _) = handshake(&node, "&b64=1").await;
    // 4 bytes, 2 code units each: a byte count would cut the record short.
    let message = r#"42["message","é😀😀",1]"#;
    let body = frame(&[message, "2"]);
    assert_ne!(body.len(), message.encode_utf16().count() + 5);
    let res = post(&node, &sid, TEXT_PLAIN, body.as_bytes()).await;
    assert_eq!((res.status, res.text()), (200, "ok".to_owned()));
    let res = get(&node, &sid).await;
    assert_eq!(
        res.text(),
        frame(&[r#"42["message-back","é😀😀",1]"#, "3"]),
        "the echo and the pong"
    );
}

#[tokio::test]
async fn binary_travels_as_base64_records_or_in_the_binary_framing() {
    let node = Node::start(EIO3).await;
    let event = r#"451-["message",{"_placeholder":true,"num":0}]"#;
    let back = r#"451-["message-back",{"_placeholder":true,"num":0}]"#;

    // b64=1 (Node clients): base64 records both ways.
    let (sid, _) = handshake(&node, "&b64=1").await;
    let res = post(
        &node,
        &sid,
        TEXT_PLAIN,
        frame(&[event, "b4AQID"]).as_bytes(),
    )
    .await;
    assert_eq!(res.status, 200, "{res:?}");
    let res = get(&node, &sid).await;
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    assert_eq!(res.text(), frame(&[back, "b4AQID"]));

    // Without b64 (XHR2 browsers): a GET that holds binary uses the binary framing, and so may
    // a POST.
    let (sid, _) = handshake(&node, "").await;
    let mut body = vec![0];
    body.extend(event.len().to_string().bytes().map(|d| d - b'0'));
    body.push(0xFF);
    body.extend_from_slice(event.as_bytes());
    body.extend_from_slice(&[1, 4, 0xFF, 4, 1, 2, 3]);
    let res = post(&node, &sid, OCTET_STREAM, &body).await;
    assert_eq!(res.status, 200, "{res:?}");
    let res = get(&node, &sid).await;
    assert_eq!(res.header("content-type"), Some(OCTET_STREAM));
    let mut expected = vec![0];
    expected.extend(back.len().to_string().bytes().map(|d| d - b'0'));
    expected.push(0xFF);
    expected.extend_from_slice(back.as_bytes());
    expected.extend_from_slice(&[1, 4, 0xFF, 4, 1, 2, 3]);
    assert_eq!(res.body, expected);
    // Text-only answers stay text.
    let res = post(&node, &sid, TEXT_PLAIN, b"1:2").await;
    assert_eq!(res.status, 200);
    let res = get(&node, &sid).await;
    assert_eq!(
        (res.header("content-type"), res.text()),
        (Some("text/plain; charset=UTF-8"), "1:3".to_owned())
    );
}

#[tokio::test]
async fn malformed_v3_bodies_close_the_session_and_never_the_node() {
    let node = Node::start(EIO3).await;
    let bodies: [(&str, &[u8]); 8] = [
        (TEXT_PLAIN, b"4hello\x1e4world"),
        (TEXT_PLAIN, b"9:4short"),
        (TEXT_PLAIN, b"99999999999:4"),
        (TEXT_PLAIN, "2:4😀".as_bytes()),
        (TEXT_PLAIN, b"3:b2AQ"),
        (OCTET_STREAM, &[7, 1, 0xFF, b'2']),
        (OCTET_STREAM, &[1, 2, 0xFF, 2, 9]),
        (OCTET_STREAM, &[0, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 0xFF]),
    ];
    for (content_type, body) in bodies {
        let (sid, _) = handshake(&node, "&b64=1").await;
        let res = post(&node, &sid, content_type, body).await;
        res.assert_eio_error(400, 3, "Bad request");
        get(&node, &sid)
            .await
            .assert_eio_error(400, 1, "Session ID unknown");
    }
    node.assert_no_panic();
}

#[tokio::test]
async fn websocket_binary_frames_carry_the_type_byte() {
    let node = Node::start(EIO3).await;
    let mut ws = RawWs::connect(node.addr(), &path("transport=websocket")).await;
    let open = ws.recv_text_answering_pings().await;
    assert!(open.starts_with(r#"0{"sid":"#), "{open}");
    assert!(
        open.contains(r#""upgrades":[]"#) && !open.contains("maxPayload"),
        "{open}"
    );
    assert_eq!(ws.recv_text_answering_pings().await, "40");
    ws.send_text(r#"451-["message",{"_placeholder":true,"num":0}]"#)
        .await;
    ws.send_frame(OP_BINARY, &[4, 1, 2, 3]).await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"451-["message-back",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(ws.recv_frame().await, Some((OP_BINARY, vec![4, 1, 2, 3])));
    // A base64 message in a text frame is a binary message too.
    ws.send_text(r#"451-["message",{"_placeholder":true,"num":0}]"#)
        .await;
    ws.send_text("b4CQgH").await;
    ws.recv_text_answering_pings().await;
    assert_eq!(ws.recv_frame().await, Some((OP_BINARY, vec![4, 9, 8, 7])));
    // A binary frame without the message type byte is a protocol error.
    ws.send_frame(OP_BINARY, &[1, 2, 3]).await;
    assert_eq!(
        ws.expect_close().await,
        Some((1002, "invalid engine.io packet".to_owned()))
    );

    // With b64=1 the server writes binary as base64 text.
    let mut ws = RawWs::connect(node.addr(), &path("transport=websocket&b64=1")).await;
    ws.recv_text_answering_pings().await;
    ws.recv_text_answering_pings().await;
    ws.send_text(r#"451-["message",{"_placeholder":true,"num":0}]"#)
        .await;
    ws.send_frame(OP_BINARY, &[4, 1, 2, 3]).await;
    ws.recv_text_answering_pings().await;
    assert_eq!(ws.recv_frame().await, Some((OP_TEXT, b"b4AQID".to_vec())));
    node.assert_no_panic();
}

#[tokio::test]
async fn the_client_pings_and_a_silent_client_is_closed_after_interval_plus_timeout() {
    // Conformance heartbeat: 300 ms interval, 200 ms timeout.
    let node = Node::start(&["--conformance", "--allow-eio3"]).await;
    let mut ws = RawWs::connect(node.addr(), &path("transport=websocket")).await;
    ws.recv_frame().await;
    ws.recv_frame().await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        ws.send_text("2").await;
        assert_eq!(ws.recv_frame().await, Some((OP_TEXT, b"3".to_vec())));
    }
    // Silence: closed 500 ms after the last ping, never pinged by the server.
    let silent = Instant::now();
    let frame = within("the close", ws.recv_frame()).await;
    let elapsed = silent.elapsed();
    match frame {
        Some((OP_CLOSE, data)) => assert_eq!(&data[2..], b"timeout"),
        other => panic!("expected the Close frame, got {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(1500),
        "closed {elapsed:?} after the last ping"
    );

    // A pong from a v3 client is out of place.
    let mut ws = RawWs::connect(node.addr(), &path("transport=websocket")).await;
    ws.recv_frame().await;
    ws.recv_frame().await;
    ws.send_text("3").await;
    assert_eq!(
        ws.expect_close().await,
        Some((1002, "protocol_violation".to_owned()))
    );
}
