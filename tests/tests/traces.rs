//! OpenTelemetry traces across nodes: two real nodes on the real Redis (127.0.0.1:6379, a key
//! prefix of their own), a real backend answering the hooks over HTTP, and an OTLP receiver
//! that decodes what the nodes export with the official protobuf definitions.
//!
//! A cross-node `message:send` must be one trace with spans from both nodes (the event, the
//! backend's `authorize` call, the journal commit and the Redis publish on the sender's node,
//! the delivery on the recipient's), the hook request must carry that trace's `traceparent`, a
//! client's own `traceparent` must be honoured (and, with a zero sample ratio, be the only
//! trace kept), a CONNECT is a trace with its `connect` hook call, log lines written inside a
//! traced span carry its trace id, a failed hook call is a failed span, the spans still queued
//! are flushed when a node stops, and a node without an endpoint must export nothing at all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;
use serde_json::{Value, json};
use switchboard_tests::{Node, SioClient};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const SECRET: &str = "traces-test-secret-at-least-32-bytes!!";
const CLUSTER_KEY: &str = "traces-cluster-key-of-at-least-32-bytes";
const HOOK_SECRET: &str = "traces-hook-secret";
/// Export every 100 ms instead of every 5 s, so the test waits little.
const FAST_EXPORT: &[(&str, &str)] = &[("OTEL_BSP_SCHEDULE_DELAY", "100")];
/// How long spans may take to reach the receiver.
const EXPORT_WAIT: Duration = Duration::from_secs(10);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn token(user: &str) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("hmac key");
    let claims = json!({"sub": user, "exp": now() + 3600});
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign a token")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> String {
    hex(&(0..bytes).map(|_| rand::random::<u8>()).collect::<Vec<_>>())
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 server (keep-alive, Content-Length bodies), for the receiver and backend.

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

type Handler = Arc<dyn Fn(&Request) -> (u16, Vec<u8>) + Send + Sync>;

/// Serve on 127.0.0.1:0 until the test ends; every request is kept, in order.
async fn serve(handler: Handler) -> (SocketAddr, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (handler, kept) = (handler.clone(), kept.clone());
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                while let Some(request) = read_request(&mut read).await {
                    let (status, body) = handler(&request);
                    kept.lock().unwrap().push(request);
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if write.write_all(head.as_bytes()).await.is_err()
                        || write.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn read_request(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<Request> {
    let mut line = String::new();
    if read.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        read.read_line(&mut line).await.ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    read.read_exact(&mut body).await.ok()?;
    Some(Request {
        path,
        headers,
        body,
    })
}

/// The application's backend: allows every connect and every target, except that asking
/// about `broken-user` fails with a 500.
async fn backend() -> (SocketAddr, Arc<Mutex<Vec<Request>>>) {
    serve(Arc::new(|request: &Request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let answer = match request.path.as_str() {
            "/connect" => json!({"allow": true}),
            "/authorize" if body["targets"] == json!(["broken-user"]) => {
                return (500, b"{}".to_vec());
            }
            "/authorize" => json!({"allowed": body["targets"], "cacheSecs": 0}),
            _ => json!({"result": null}),
        };
        (200, answer.to_string().into_bytes())
    }))
    .await
}

/// The OTLP receiver.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    /// `service.instance.id` of the node that exported it.
    instance: String,
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// The span status: whether it failed.
    error: bool,
}

impl Receiver {
    async fn start() -> Receiver {
        let (addr, requests) = serve(Arc::new(|_: &Request| (200, Vec::new()))).await;
        Receiver { addr, requests }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far (each request decoded with the official definitions).
    fn spans(&self) -> Vec<Span> {
        let requests = self.requests.lock().unwrap().clone();
        let mut spans = Vec::new();
        for request in requests {
            assert_eq!(request.path, "/v1/traces", "OTLP/HTTP traces path");
            assert_eq!(
                request.headers.get("content-type").map(String::as_str),
                Some("application/x-protobuf"),
                "OTLP/HTTP with protobuf bodies"
            );
            let export = ExportTraceServiceRequest::decode(request.body.as_slice())
                .expect("an ExportTraceServiceRequest");
            for resource_spans in export.resource_spans {
                let attributes = resource_spans
                    .resource
                    .map(|r| r.attributes)
                    .unwrap_or_default();
                let instance = attribute(&attributes, "service.instance.id");
                let service = attribute(&attributes, "service.name");
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        spans.push(Span {
                            instance: instance.clone(),
                            service: service.clone(),
                            name: span.name,
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            error: span
                                .status
                                .is_some_and(|s| s.code == StatusCode::Error as i32),
                        });
                    }
                }
            }
        }
        spans
    }

    /// Wait until the spans of `trace_id` satisfy `done`; answer them.
    async fn trace(&self, trace_id: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + EXPORT_WAIT;
        loop {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if done(&spans) {
                return spans;
            }
            if Instant::now() > deadline {
                panic!(
                    "trace {trace_id} incomplete after {EXPORT_WAIT:?}: {spans:#?}\nall spans: {:#?}",
                    self.spans()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> String {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

fn find<'a>(spans: &'a [Span], instance: &str, name: &str) -> Option<&'a Span> {
    spans
        .iter()
        .find(|s| s.instance == instance && s.name == name)
}

fn has(spans: &[Span], instance: &str, name: &str) -> bool {
    find(spans, instance, name).is_some()
}

// ---------------------------------------------------------------------------------------------
// The cluster

struct Cluster {
    a: Node,
    b: Node,
    backend: Arc<Mutex<Vec<Request>>>,
    receiver: Receiver,
}

const NODE_A: &str = "trace-node-a";
const NODE_B: &str = "trace-node-b";

impl Cluster {
    async fn start() -> Cluster {
        let receiver = Receiver::start().await;
        let (backend_addr, backend) = backend().await;
        let prefix = format!("traces-{}-{}:", std::process::id(), random_hex(4));
        let hook_url = format!("http://{backend_addr}");
        let endpoint = receiver.endpoint();
        let args = |node: &'static str| -> Vec<String> {
            [
                "--node-id",
                node,
                "--redis-url",
                "redis://127.0.0.1:6379",
                "--redis-prefix",
                &prefix,
                "--allow-sqlite-cluster",
                "--jwt-secret",
                SECRET,
                "--cluster-key",
                CLUSTER_KEY,
                "--hook-url",
                &hook_url,
                "--hook-secret",
                HOOK_SECRET,
                "--hook-authorize",
                "message:send",
                "--otlp-endpoint",
                &endpoint,
                "--log",
                "info,switchboard_actors::hooks=debug",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let start = |node| {
            let args = args(node);
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Node::start_with_env(&args, FAST_EXPORT).await
            }
        };
        let a = start(NODE_A).await;
        let b = start(NODE_B).await;
        Cluster {
            a,
            b,
            backend,
            receiver,
        }
    }

    /// `alice` on node A and `bob` on node B, under names unique to the test.
    async fn clients(&self, tag: &str) -> (SioClient, SioClient, String) {
        let (alice, bob) = (format!("alice-{tag}"), format!("bob-{tag}"));
        let a = SioClient::connect(
            self.a.addr(),
            json!({"token": token(&alice), "deviceId": "a"}),
        )
        .await;
        let b = SioClient::connect(
            self.b.addr(),
            json!({"token": token(&bob), "deviceId": "b"}),
        )
        .await;
        (a, b, bob)
    }

    /// The `traceparent` of the `authorize` request that asked about `target`.
    fn hook_traceparent(&self, target: &str) -> String {
        self.traceparent_of("/authorize", |body| body["targets"] == json!([target]))
    }

    /// The `traceparent` of the last request to `path` whose body matches.
    fn traceparent_of(&self, path: &str, matches: impl Fn(&Value) -> bool) -> String {
        let requests = self.backend.lock().unwrap().clone();
        let request = requests
            .iter()
            .rev()
            .find(|r| {
                r.path == path
                    && serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| matches(&b))
            })
            .unwrap_or_else(|| panic!("no matching {path} request: {requests:?}"));
        request
            .headers
            .get("traceparent")
            .cloned()
            .unwrap_or_else(|| panic!("the authorize request has no traceparent: {request:?}"))
    }
}

/// The spans one cross-node `message:send` must produce, by node.
fn complete(spans: &[Span]) -> bool {
    [
        "event message:send",
        "hook authorize",
        "journal commit",
        "redis publish",
    ]
    .iter()
    .all(|name| has(spans, NODE_A, name))
        && has(spans, NODE_B, "cluster deliver")
}

#[tokio::test]
async fn a_cross_node_send_is_one_trace_with_spans_from_both_nodes() {
    let cluster = Cluster::start().await;
    let (mut alice, mut bob, bob_id) = cluster.clients("one").await;

    let ack = alice
        .call(
            "message:send",
            json!({"to": bob_id, "text": "traced hello"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "ack {ack}");
    let received = bob.event("message:received").await;
    assert_eq!(received["text"], "traced hello");

    // The trace is the one the hook request named.
    let traceparent = cluster.hook_traceparent(&bob_id);
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent}");
    let (trace_id, hook_span_id) = (parts[1], parts[2]);

    let spans = cluster.receiver.trace(trace_id, complete).await;
    let event = find(&spans, NODE_A, "event message:send").unwrap();
    let hook = find(&spans, NODE_A, "hook authorize").unwrap();
    let commit = find(&spans, NODE_A, "journal commit").unwrap();
    let publish = find(&spans, NODE_A, "redis publish").unwrap();
    let deliver = find(&spans, NODE_B, "cluster deliver").unwrap();
    // One trace, rooted at the event on node A, crossing into node B.
    assert_eq!(event.parent_span_id, "", "the event starts the trace");
    assert_eq!(
        hook.span_id, hook_span_id,
        "the header names the hook's span"
    );
    assert_eq!(hook.parent_span_id, event.span_id);
    assert_eq!(commit.parent_span_id, event.span_id);
    assert_eq!(publish.parent_span_id, event.span_id);
    assert_eq!(deliver.parent_span_id, publish.span_id, "B joins A's trace");
    assert!(spans.iter().all(|s| s.service == "switchboard"));
    // Every span of the trace is one of these two nodes'.
    assert!(
        spans
            .iter()
            .all(|s| s.instance == NODE_A || s.instance == NODE_B),
        "{spans:#?}"
    );

    // Each CONNECT is a trace of its own, with the `connect` hook call in it.
    let traceparent = cluster.traceparent_of("/connect", |body| body["userId"] == bob_id);
    let connect_trace = traceparent.split('-').nth(1).unwrap().to_owned();
    assert_ne!(connect_trace, trace_id);
    let spans = cluster
        .receiver
        .trace(&connect_trace, |spans| {
            has(spans, NODE_B, "connect") && has(spans, NODE_B, "hook connect")
        })
        .await;
    let connect = find(&spans, NODE_B, "connect").unwrap();
    let hook = find(&spans, NODE_B, "hook connect").unwrap();
    assert_eq!(hook.parent_span_id, connect.span_id);

    cluster.a.assert_no_panic();
    cluster.b.assert_no_panic();
}

#[tokio::test]
async fn a_clients_traceparent_is_honoured_and_log_lines_carry_its_trace_id() {
    let cluster = Cluster::start().await;
    let (mut alice, mut bob, bob_id) = cluster.clients("two").await;

    let trace_id = random_hex(16);
    let client_span = random_hex(8);
    let meta = json!({"traceparent": format!("00-{trace_id}-{client_span}-01")});
    let ack = alice
        .call(
            "message:send",
            json!({"to": bob_id, "text": "from a traced client", "meta": meta}),
        )
        .await;
    assert_eq!(ack["ok"], true, "ack {ack}");
    bob.event("message:received").await;

    let spans = cluster.receiver.trace(&trace_id, complete).await;
    let event = find(&spans, NODE_A, "event message:send").unwrap();
    assert_eq!(
        event.parent_span_id, client_span,
        "the client's span is the parent"
    );
    let traceparent = cluster.hook_traceparent(&bob_id);
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "hook traceparent {traceparent}"
    );

    // A hook that fails logs (at debug) inside its span: the line names the client's trace.
    let failing = json!({"traceparent": format!("00-{trace_id}-{client_span}-01")});
    let ack = alice
        .call(
            "message:send",
            json!({"to": "broken-user", "text": "x", "meta": failing}),
        )
        .await;
    assert_eq!(ack["error"]["code"], "service_unavailable", "ack {ack}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = cluster.a.logs();
        let line = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "hook failed");
        if let Some(line) = line {
            assert_eq!(line["trace_id"], trace_id.as_str(), "log line {line}");
            break;
        }
        assert!(Instant::now() < deadline, "no `hook failed` line:\n{logs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The failed call is a failed span of the same trace.
    let spans = cluster
        .receiver
        .trace(&trace_id, |spans| {
            spans.iter().any(|s| s.name == "hook authorize" && s.error)
        })
        .await;
    assert!(
        spans.iter().any(|s| s.name == "hook authorize" && !s.error),
        "the answered call did not fail: {spans:#?}"
    );
    // The log has the trace ids, not the traced spans' own open/close lines.
    assert!(
        !cluster.a.logs().contains("switchboard::trace"),
        "{}",
        cluster.a.logs()
    );
    // Malformed client trace contexts are ignored: the event starts a trace of its own.
    for bad in [json!("garbage"), json!(42), json!("00-zz-yy-01")] {
        let ack = alice
            .call(
                "message:send",
                json!({"to": bob_id, "text": "bad meta", "meta": {"traceparent": bad}}),
            )
            .await;
        assert_eq!(ack["ok"], true, "ack {ack}");
    }
    cluster.a.assert_no_panic();
    cluster.b.assert_no_panic();
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported() {
    let receiver = Receiver::start().await;
    let (backend_addr, backend) = backend().await;
    let hook_url = format!("http://{backend_addr}");
    // The SDK's own endpoint variable points at the receiver: still nothing may be sent.
    let otel_endpoint = receiver.endpoint();
    let mut env = FAST_EXPORT.to_vec();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", &otel_endpoint));
    let node = Node::start_with_env(
        &[
            "--jwt-secret",
            SECRET,
            "--hook-url",
            &hook_url,
            "--hook-secret",
            HOOK_SECRET,
            "--hook-authorize",
            "message:send",
            "--log",
            "info,switchboard_actors::hooks=debug",
        ],
        &env,
    )
    .await;
    let mut alice = SioClient::connect(
        node.addr(),
        json!({"token": token("alice-off"), "deviceId": "a"}),
    )
    .await;
    let _bob = SioClient::connect(
        node.addr(),
        json!({"token": token("bob-off"), "deviceId": "b"}),
    )
    .await;
    let meta = json!({"traceparent": format!("00-{}-{}-01", random_hex(16), random_hex(8))});
    let ack = alice
        .call(
            "message:send",
            json!({"to": "bob-off", "text": "untraced", "meta": meta}),
        )
        .await;
    assert_eq!(ack["ok"], true, "ack {ack}");
    let ack = alice
        .call("message:send", json!({"to": "broken-user", "text": "x"}))
        .await;
    assert_eq!(ack["error"]["code"], "service_unavailable", "ack {ack}");

    // Several export intervals pass with nothing sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.requests.lock().unwrap().len(),
        0,
        "nothing exported"
    );
    let requests = backend.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.path == "/authorize"),
        "the backend was asked: {requests:?}"
    );
    for request in &requests {
        assert!(
            !request.headers.contains_key("traceparent"),
            "no traceparent without tracing: {request:?}"
        );
    }
    let logs = node.logs();
    assert!(logs.contains("hook failed"), "{logs}");
    assert!(
        !logs.contains("trace_id"),
        "no trace ids in the log:\n{logs}"
    );
    node.assert_no_panic();
}

#[tokio::test]
async fn a_zero_ratio_exports_only_the_traces_a_sampled_client_started() {
    let receiver = Receiver::start().await;
    let endpoint = receiver.endpoint();
    let node = Node::start_with_env(
        &[
            "--jwt-secret",
            SECRET,
            "--otlp-endpoint",
            &endpoint,
            "--trace-sample-ratio",
            "0",
        ],
        FAST_EXPORT,
    )
    .await;
    let mut alice = SioClient::connect(
        node.addr(),
        json!({"token": token("alice-ratio"), "deviceId": "a"}),
    )
    .await;
    let mut bob = SioClient::connect(
        node.addr(),
        json!({"token": token("bob-ratio"), "deviceId": "b"}),
    )
    .await;
    // Started here: not sampled.
    let ack = alice
        .call(
            "message:send",
            json!({"to": "bob-ratio", "text": "unsampled"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "ack {ack}");
    bob.event("message:received").await;
    // Started by the client, sampled: kept, with the node's spans in it.
    let trace_id = random_hex(16);
    let meta = json!({"traceparent": format!("00-{trace_id}-{}-01", random_hex(8))});
    let ack = alice
        .call(
            "message:send",
            json!({"to": "bob-ratio", "text": "sampled", "meta": meta}),
        )
        .await;
    assert_eq!(ack["ok"], true, "ack {ack}");
    bob.event("message:received").await;
    let node_id = |spans: &[Span]| spans.first().map(|s| s.instance.clone());
    let spans = receiver
        .trace(&trace_id, |spans| {
            let instance = node_id(spans).unwrap_or_default();
            has(spans, &instance, "event message:send") && has(spans, &instance, "journal commit")
        })
        .await;
    assert!(!spans.is_empty());
    // A few more export intervals: still nothing from any other trace.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let others: Vec<Span> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id != trace_id)
        .collect();
    assert!(others.is_empty(), "unsampled spans exported: {others:#?}");
    node.assert_no_panic();
}

#[tokio::test]
async fn spans_still_queued_are_flushed_when_the_node_stops() {
    let receiver = Receiver::start().await;
    let endpoint = receiver.endpoint();
    // Batches are due only after a minute: only the flush at exit can send this one.
    let node = Node::start_with_env(
        &[
            "--jwt-secret",
            SECRET,
            "--otlp-endpoint",
            &endpoint,
            "--drain-secs",
            "1",
        ],
        &[("OTEL_BSP_SCHEDULE_DELAY", "60000")],
    )
    .await;
    let alice = SioClient::connect(
        node.addr(),
        json!({"token": token("alice-flush"), "deviceId": "a"}),
    )
    .await;
    alice.disconnect().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.requests.lock().unwrap().len(),
        0,
        "nothing due yet"
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &node.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + EXPORT_WAIT;
    while !receiver.spans().iter().any(|s| s.name == "connect") {
        assert!(
            Instant::now() < deadline,
            "no connect span flushed at exit; node output:\n{}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.assert_no_panic();
}
