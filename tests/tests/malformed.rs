//! Malformed Socket.IO traffic over websocket (contract: "Protocol violations"). Each bad packet,
//! sent by a client that has joined `/`, must close only that client's session — a Close frame
//! with 1002 and a reason for a protocol error, 1007 for invalid UTF-8, 1009 for a message over
//! maxPayload — while a canary client on the same node keeps exchanging `message`/`message-back`,
//! the node never panics and `/health` ends up counting only the canary.

use switchboard_tests::{
    CONFORMANCE, Canary, Node, OP_TEXT, RawWs, WS_PATH, WsEvent, wait_for_sessions, ws_connect,
};
use tokio_tungstenite::tungstenite::Message;

/// What the offending client sends after joining `/`.
enum Send {
    /// Frames through tokio-tungstenite; the last one is the violation.
    Frames(Vec<Message>),
    /// One text frame with these (not UTF-8) bytes, written by hand.
    RawText(Vec<u8>),
}

/// How the server must react.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A Close frame with this code.
    Close(u16),
    /// Either a Close 1002, or the echo `42["message-back",…]` (for input that is valid JSON a
    /// server may reasonably accept, such as a number too large for f64).
    CloseOrEcho,
}

const PROTOCOL_ERROR: u16 = 1002;
const INVALID_PAYLOAD: u16 = 1007;
const TOO_BIG: u16 = 1009;

/// A placeholder for attachment `num`.
fn placeholder(num: u32) -> String {
    format!(r#"{{"_placeholder":true,"num":{num}}}"#)
}

fn text(t: impl Into<String>) -> Send {
    Send::Frames(vec![Message::text(t.into())])
}

/// Every case: (name, what to send, expected reaction).
fn cases() -> Vec<(&'static str, Send, Expect)> {
    use Expect::Close;
    let deep = format!(r#"42["a",{}{}]"#, "[".repeat(10_000), "]".repeat(10_000));
    let huge_number = format!(r#"42["message",{}]"#, "7".repeat(100_000));
    let oversized = format!(r#"42["message","{}"]"#, "a".repeat(1_100_000));
    vec![
        ("type out of range", text("47"), Close(PROTOCOL_ERROR)),
        ("type not a digit", text("4x"), Close(PROTOCOL_ERROR)),
        (
            "binary event without attachment count",
            text(r#"45["a"]"#),
            Close(PROTOCOL_ERROR),
        ),
        (
            "attachment count overflowing u64",
            text(r#"4599999999999999999999-["a"]"#),
            Close(PROTOCOL_ERROR),
        ),
        (
            "attachment count over the limit",
            text(format!(r#"45100-["a",{}]"#, placeholder(0))),
            Close(PROTOCOL_ERROR),
        ),
        (
            "event payload is an object",
            text(r#"42{"a":1}"#),
            Close(PROTOCOL_ERROR),
        ),
        (
            "event payload is a string",
            text(r#"42"str""#),
            Close(PROTOCOL_ERROR),
        ),
        (
            "event payload is empty",
            text("42[]"),
            Close(PROTOCOL_ERROR),
        ),
        (
            "event name is an object",
            text("42[{}]"),
            Close(PROTOCOL_ERROR),
        ),
        (
            "event name is null",
            text("42[null]"),
            Close(PROTOCOL_ERROR),
        ),
        ("deep JSON nesting", text(deep), Close(PROTOCOL_ERROR)),
        (
            "reserved event name",
            text(r#"42["connect"]"#),
            Close(PROTOCOL_ERROR),
        ),
        (
            "event for a namespace not joined",
            text(r#"42/custom,["message"]"#),
            Close(PROTOCOL_ERROR),
        ),
        (
            "second CONNECT to a joined namespace",
            text("40"),
            Close(PROTOCOL_ERROR),
        ),
        (
            "binary frame when no attachment is awaited",
            Send::Frames(vec![Message::binary(vec![1u8, 2, 3])]),
            Close(PROTOCOL_ERROR),
        ),
        (
            "text packet while an attachment is awaited",
            Send::Frames(vec![
                Message::text(format!(r#"451-["message",{}]"#, placeholder(0))),
                Message::text(r#"42["message","x"]"#),
            ]),
            Close(PROTOCOL_ERROR),
        ),
        (
            "placeholder out of range",
            Send::Frames(vec![
                Message::text(format!(r#"451-["message",{}]"#, placeholder(5))),
                Message::binary(vec![1u8]),
            ]),
            Close(PROTOCOL_ERROR),
        ),
        (
            "invalid UTF-8 in a text frame",
            Send::RawText(b"42[\"message\",\"\xff\xfe\"]".to_vec()),
            Close(INVALID_PAYLOAD),
        ),
        (
            "number with 100k digits",
            text(huge_number),
            Expect::CloseOrEcho,
        ),
        ("message over maxPayload", text(oversized), Close(TOO_BIG)),
    ]
}

/// Run one case against `node` with a fresh offender; check its outcome, then that the canary
/// still round-trips and only the canary's session is left.
async fn run_case(node: &mut Node, canary: &mut Canary, name: &str, send: Send, expect: Expect) {
    let (event, send_error) = match send {
        Send::Frames(frames) => {
            let (mut ws, _) = ws_connect(node.addr()).await;
            ws.connect_default_namespace().await;
            ws.send_and_recv(frames).await
        }
        Send::RawText(bytes) => (raw_invalid_text(node, &bytes).await, None),
    };
    let detail = || format!("case {name:?}: got {event:?} (send error: {send_error:?})");
    match (expect, &event) {
        (Expect::Close(code), WsEvent::Close(Some((got, reason)))) => {
            assert_eq!(*got, code, "close code; {}", detail());
            if code == PROTOCOL_ERROR {
                assert!(!reason.is_empty(), "close reason is empty; {}", detail());
            }
        }
        (Expect::CloseOrEcho, WsEvent::Close(Some((got, reason)))) => {
            assert_eq!(*got, PROTOCOL_ERROR, "close code; {}", detail());
            assert!(!reason.is_empty(), "close reason is empty; {}", detail());
        }
        (Expect::CloseOrEcho, WsEvent::Text(t)) => {
            assert!(
                t.starts_with(r#"42["message-back","#),
                "expected a Close 1002 or the echo; {}",
                detail()
            );
        }
        (Expect::Close(code), _) => panic!("expected a Close frame {code}; {}", detail()),
        (Expect::CloseOrEcho, _) => panic!("expected a Close 1002 or the echo; {}", detail()),
    }
    // The offender is dropped here, so an echoed case ends its session too.
    canary.round_trip(&format!("after {name}")).await;
    wait_for_sessions(node.addr(), 1).await;
    node.assert_healthy().await;
}

/// Join `/` by hand, send a text frame holding `bytes`, and return how the server reacted.
async fn raw_invalid_text(node: &Node, bytes: &[u8]) -> WsEvent {
    let mut ws = RawWs::connect(node.addr(), WS_PATH).await;
    let open = ws.recv_text_answering_pings().await;
    assert!(open.starts_with("0{"), "open packet {open:?}");
    ws.send_text("40").await;
    let reply = ws.recv_text_answering_pings().await;
    assert!(reply.starts_with("40{"), "CONNECT reply {reply:?}");
    assert_eq!(ws.recv_text_answering_pings().await, r#"42["auth",{}]"#);
    ws.send_frame(OP_TEXT, bytes).await;
    match ws.expect_close().await {
        Some(frame) => WsEvent::Close(Some(frame)),
        None => WsEvent::Ended("connection ended without a Close frame".to_owned()),
    }
}

/// Start a conformance node with a connected canary.
async fn node_with_canary() -> (Node, Canary) {
    let node = Node::start(CONFORMANCE).await;
    let mut canary = Canary::connect(node.addr()).await;
    canary.round_trip("before").await;
    (node, canary)
}

/// One test per case, so a report names exactly what broke.
async fn single(name: &str) {
    let (mut node, mut canary) = node_with_canary().await;
    let (name, send, expect) = cases()
        .into_iter()
        .find(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("no case named {name:?}"));
    run_case(&mut node, &mut canary, name, send, expect).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn type_out_of_range() {
    single("type out of range").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn type_not_a_digit() {
    single("type not a digit").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_event_without_attachment_count() {
    single("binary event without attachment count").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attachment_count_overflowing_u64() {
    single("attachment count overflowing u64").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attachment_count_over_the_limit() {
    single("attachment count over the limit").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn event_payload_is_an_object() {
    single("event payload is an object").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn event_payload_is_a_string() {
    single("event payload is a string").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn event_payload_is_empty() {
    single("event payload is empty").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn event_name_is_an_object() {
    single("event name is an object").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn event_name_is_null() {
    single("event name is null").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_json_nesting() {
    single("deep JSON nesting").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_event_name() {
    single("reserved event name").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn event_for_a_namespace_not_joined() {
    single("event for a namespace not joined").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn second_connect_to_a_joined_namespace() {
    single("second CONNECT to a joined namespace").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_frame_when_no_attachment_is_awaited() {
    single("binary frame when no attachment is awaited").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn text_packet_while_an_attachment_is_awaited() {
    single("text packet while an attachment is awaited").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn placeholder_out_of_range() {
    single("placeholder out of range").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_in_a_text_frame() {
    single("invalid UTF-8 in a text frame").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn number_with_100k_digits() {
    single("number with 100k digits").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn message_over_max_payload() {
    single("message over maxPayload").await;
}

/// All cases one after another against one node and one canary.
#[tokio::test(flavor = "multi_thread")]
async fn all_cases_in_sequence_leave_only_the_canary() {
    let (mut node, mut canary) = node_with_canary().await;
    for (name, send, expect) in cases() {
        run_case(&mut node, &mut canary, name, send, expect).await;
    }
    wait_for_sessions(node.addr(), 1).await;
    node.assert_healthy().await;
}

#[test]
fn every_case_has_its_own_test() {
    // Keeps the per-case tests above in step with `cases()`.
    let names: Vec<_> = cases().into_iter().map(|(n, _, _)| n).collect();
    let source = include_str!("malformed.rs");
    for name in names {
        assert!(
            source.contains(&format!("single({name:?})")),
            "case {name:?} has no test"
        );
    }
}
