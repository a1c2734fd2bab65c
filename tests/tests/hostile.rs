//! Hostile input against a product-mode cluster: two nodes (`--jwt-secret`, `--api-key`,
//! `--redis-url`) on a dedicated `redis-server` child, each with one canary client. The canaries
//! are owned by a background task that keeps exchanging numbered `signal`s both ways (and every
//! tenth round a `message:send` with its ack) while the attacks run, and fails on any loss,
//! duplicate, disconnect or stray packet.
//!
//! After every hostile case the harness checks ([`Cluster::check`]): both nodes alive and never
//! panicked; the canaries finished a round (with a `message:send`) and nothing went wrong meanwhile;
//! `/health` sessions back to 1 per node; `process_open_fds` back within [`FD_SLACK`] of its
//! baseline; the Redis keys (names) and pub/sub channels back to their baseline (rate-limit window
//! and recovery keys excepted: they are created by the canaries' own traffic and must carry a TTL).
//!
//! The cases are grouped into a few tests (each with its own Redis and node pair), so a failure
//! names its group and its case (every assertion message starts with the case name). Within a
//! group, a case known to leave state behind runs last so it does not hide the others.
//!
//! Slow by design: `polling_body_trickle_is_timed_out` waits for the server's 30 s body timeout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_protocol::cluster::{Body, ClusterFrame, Part};
use switchboard_tests::faults::Redis;
use switchboard_tests::{
    Node, OP_BINARY, OP_CLOSE, OP_TEXT, Polling, RawWs, SioClient, SioPacket, WS_PATH, WsEvent,
    health_sessions, http_get, http_get_with_headers, metric, ws_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// HS256 secret of every HS256 node here.
const SECRET: &str = "switchboard-hostile-tests-secret-0123456789";
/// Server API key.
const API_KEY: &str = "hostile-api-key-0123456789abcdef0123";
/// The canary users (one per node) and the attacker.
const CANARY_A: &str = "canary-a";
const CANARY_B: &str = "canary-b";
const ATTACKER: &str = "mallory";
/// Node ids.
const NODE_A: &str = "hostile-a";
const NODE_B: &str = "hostile-b";

/// Websocket close codes.
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_PAYLOAD: u16 = 1007;
const TOO_BIG: u16 = 1009;

/// Continuation opcode (not exported by the fixture under this name).
const OP_CONT: u8 = 0x0;

/// Open fds a node may keep above its baseline once a case is over (accept backlog, Redis
/// reconnects, the database pool).
const FD_SLACK: f64 = 4.0;
/// RSS growth allowed across a memory case.
const RSS_SLACK: f64 = 50.0 * 1024.0 * 1024.0;
/// Longest wait for the node to settle back to its baseline after a case.
const SETTLE: Duration = Duration::from_secs(10);

/// Run a test body on its own runtime in a thread with a large stack: the bodies are long
/// async fns whose futures overflow a test thread's default stack in debug builds.
fn big_stack<F>(body: fn() -> F)
where
    F: std::future::Future<Output = ()> + 'static,
{
    let thread = std::thread::Builder::new()
        .name("hostile".into())
        .stack_size(64 * 1024 * 1024)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(Box::pin(body()));
        })
        .expect("spawn the test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

/// Every key but the rate-limit windows, which the canaries' own `message:send`s (and an
/// attacker's) create and which expire on their own; see [`assert_windows_expire`].
async fn lasting_keys(redis: &Redis) -> Vec<String> {
    let mut keys = redis.keys().await;
    keys.retain(|k| !expiring(k));
    keys
}

/// Keys traffic creates that must expire: rate-limit windows and recovery state (saved sessions,
/// per-channel streams, the offset clock).
fn expiring(key: &str) -> bool {
    key.starts_with("rate_limit:") || key.starts_with("rec:")
}

/// Every expiring key has a TTL (none is kept forever).
async fn assert_windows_expire(redis: &Redis, case: &str) {
    for key in redis.keys().await {
        if !expiring(&key) {
            continue;
        }
        let ttl = redis
            .try_command(&[b"PTTL", key.as_bytes()])
            .await
            .unwrap_or_else(|e| panic!("PTTL {key}: {e}"));
        let ttl = String::from_utf8_lossy(&ttl);
        // -2: expired meanwhile.
        assert!(
            ttl.trim() != ":-1",
            "case {case:?}: expiring key {key} has no TTL"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The test RSA key pair of the actors crate's unit tests.
fn rsa_private_pem() -> Vec<u8> {
    std::fs::read(data_dir().join("rsa_private.pem")).expect("read rsa_private.pem")
}

fn rsa_public_path() -> PathBuf {
    data_dir().join("rsa_public.pem")
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../actors/tests/data")
}

fn b64(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).expect("json"))
}

fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("sign a token")
}

fn hs256(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("hmac key");
    sign(&Header::new(Algorithm::HS256), claims, &key)
}

fn rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(&rsa_private_pem()).expect("rsa key");
    sign(&Header::new(Algorithm::RS256), claims, &key)
}

fn claims(user: &str) -> Value {
    json!({"sub": user, "exp": now() + 3600})
}

/// Which key the nodes verify with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyMode {
    Hs256,
    Rs256,
}

impl KeyMode {
    fn token(self, user: &str) -> String {
        match self {
            KeyMode::Hs256 => hs256(&claims(user)),
            KeyMode::Rs256 => rs256(&claims(user)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster and its canaries

struct Cluster {
    redis: Redis,
    /// The attacked node.
    a: Node,
    /// The second node (hosts canary B).
    b: Node,
    /// The canary pair, exchanging in the background.
    canaries: Canaries,
    key: KeyMode,
    fds_a: f64,
    fds_b: f64,
    keys: Vec<String>,
    channels: Vec<String>,
}

impl Cluster {
    /// Redis, node A with `extra_a` flags, node B, one canary on each, baselines taken.
    async fn start(key: KeyMode, extra_a: &[&str]) -> Cluster {
        let redis = Redis::start().await;
        let url = redis.url();
        let public_key = rsa_public_path().display().to_string();
        let args = |node: &'static str| {
            let mut args: Vec<String> = vec![
                "--node-id".into(),
                node.into(),
                "--api-key".into(),
                API_KEY.into(),
                "--redis-url".into(),
                url.clone(),
                // Each node on its own SQLite file: fine for what this suite checks.
                "--allow-sqlite-cluster".into(),
                "--user-message-limit".into(),
                "100000".into(),
                "--socket-event-limit".into(),
                "100000".into(),
                "--log".into(),
                "info,switchboard_actors::bridge=debug".into(),
            ];
            match key {
                KeyMode::Hs256 => args.extend(["--jwt-secret".into(), SECRET.into()]),
                KeyMode::Rs256 => args.extend(["--jwt-public-key-file".into(), public_key.clone()]),
            }
            args
        };
        let mut args_a = args(NODE_A);
        args_a.extend(extra_a.iter().map(|s| s.to_string()));
        let args_b = args(NODE_B);
        let a = Node::start(&args_a.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let b = Node::start(&args_b.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let canary_a = SioClient::connect(
            a.addr(),
            json!({"token": key.token(CANARY_A), "deviceId": "canary-a-dev"}),
        )
        .await;
        let canary_b = SioClient::connect(
            b.addr(),
            json!({"token": key.token(CANARY_B), "deviceId": "canary-b-dev"}),
        )
        .await;
        let canaries = Canaries::start(canary_a, canary_b).await;
        let mut cluster = Cluster {
            redis,
            a,
            b,
            canaries,
            key,
            fds_a: 0.0,
            fds_b: 0.0,
            keys: Vec::new(),
            channels: Vec::new(),
        };
        cluster.fds_a = metric(cluster.a.addr(), "process_open_fds").await;
        cluster.fds_b = metric(cluster.b.addr(), "process_open_fds").await;
        cluster.keys = lasting_keys(&cluster.redis).await;
        cluster.channels = cluster.redis.channels().await;
        cluster.check("baseline").await;
        cluster
    }

    /// A fresh authenticated raw websocket client of `user` on node A.
    async fn attacker(&self, user: &str) -> RawWs {
        self.attacker_with_token(&self.key.token(user)).await
    }

    /// A fresh raw websocket client on node A, authenticated with `token`.
    async fn attacker_with_token(&self, token: &str) -> RawWs {
        let mut ws = RawWs::connect(self.a.addr(), WS_PATH).await;
        let open = ws.recv_text_answering_pings().await;
        assert!(open.starts_with("0{"), "open packet {open:?}");
        ws.send_text(&format!(
            "40{}",
            json!({"token": token, "deviceId": "attacker"})
        ))
        .await;
        let reply = ws.recv_text_answering_pings().await;
        assert!(reply.starts_with("40{"), "CONNECT reply {reply:?}");
        let hello = ws.recv_text_answering_pings().await;
        assert!(
            hello.starts_with(r#"42["authenticated","#),
            "expected `authenticated`, got {hello:?}"
        );
        ws
    }

    /// Everything the harness promises after a case (see the module docs).
    async fn check(&mut self, case: &str) {
        self.a.assert_healthy().await;
        self.b.assert_healthy().await;
        self.canaries.check(case).await;
        settle(case, "sessions on node A", || async {
            let n = health_sessions(self.a.addr()).await;
            (n == 1, format!("{n}"))
        })
        .await;
        settle(case, "sessions on node B", || async {
            let n = health_sessions(self.b.addr()).await;
            (n == 1, format!("{n}"))
        })
        .await;
        let (base_a, base_b) = (self.fds_a, self.fds_b);
        settle(case, "open fds on node A", || async {
            let n = metric(self.a.addr(), "process_open_fds").await;
            (n <= base_a + FD_SLACK, format!("{n} (baseline {base_a})"))
        })
        .await;
        settle(case, "open fds on node B", || async {
            let n = metric(self.b.addr(), "process_open_fds").await;
            (n <= base_b + FD_SLACK, format!("{n} (baseline {base_b})"))
        })
        .await;
        let base = self.keys.clone();
        settle(case, "Redis keys", || async {
            let keys = lasting_keys(&self.redis).await;
            (keys == base, format!("{keys:?} (baseline {base:?})"))
        })
        .await;
        assert_windows_expire(&self.redis, case).await;
        let base = self.channels.clone();
        settle(case, "Redis pub/sub channels", || async {
            let channels = self.redis.channels().await;
            (
                channels == base,
                format!("{channels:?} (baseline {base:?})"),
            )
        })
        .await;
    }

    async fn stop(self) {
        let Cluster {
            redis,
            a,
            b,
            canaries,
            ..
        } = self;
        canaries.task.abort();
        a.kill().await;
        b.kill().await;
        redis.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The canaries

/// What the test asks the canaries' task.
enum CanaryCmd {
    /// Finish a round with a `message:send`, then answer (the task panics on any failure).
    Check {
        case: String,
        reply: oneshot::Sender<()>,
    },
    /// Deliveries the next rounds must see exactly once besides their own traffic (`signal`
    /// payloads for canary A and canary B), e.g. a forged cluster frame.
    Expect {
        a: Vec<Value>,
        b: Vec<Value>,
        reply: oneshot::Sender<()>,
    },
}

/// The two canaries, owned by a task that keeps exchanging numbered `signal`s both ways (and
/// every tenth round a `message:send` A → B with its ack), checking that each arrives exactly
/// once and that nothing else arrives. Any failure panics the task; the next check reports it.
struct Canaries {
    cmd: mpsc::UnboundedSender<CanaryCmd>,
    task: JoinHandle<()>,
}

impl Canaries {
    async fn start(mut a: SioClient, mut b: SioClient) -> Canaries {
        warm_up(&mut a, &mut b).await;
        let (cmd, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            let mut label = "baseline".to_owned();
            let (mut extra_a, mut extra_b) = (Vec::new(), Vec::new());
            loop {
                n += 1;
                round(
                    &mut a,
                    &mut b,
                    n,
                    &label,
                    n.is_multiple_of(10),
                    &mut extra_a,
                    &mut extra_b,
                )
                .await;
                match rx.try_recv() {
                    Ok(CanaryCmd::Check { case, reply }) => {
                        label = format!("after {case}");
                        n += 1;
                        round(&mut a, &mut b, n, &case, true, &mut extra_a, &mut extra_b).await;
                        let deadline = Instant::now() + Duration::from_secs(5);
                        while !(extra_a.is_empty() && extra_b.is_empty()) {
                            assert!(
                                Instant::now() < deadline,
                                "case {case:?}: expected deliveries never came: A {extra_a:?}, B {extra_b:?}"
                            );
                            n += 1;
                            round(&mut a, &mut b, n, &case, false, &mut extra_a, &mut extra_b)
                                .await;
                        }
                        let _ = reply.send(());
                    }
                    Ok(CanaryCmd::Expect { a, b, reply }) => {
                        extra_a.extend(a);
                        extra_b.extend(b);
                        let _ = reply.send(());
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {}
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Canaries { cmd, task }
    }

    /// Tell the canaries to expect these extra `signal` payloads; returns once they know.
    async fn expect(&self, a: Vec<Value>, b: Vec<Value>) {
        let (reply, done) = oneshot::channel();
        let _ = self.cmd.send(CanaryCmd::Expect { a, b, reply });
        let told = tokio::time::timeout(Duration::from_secs(30), done).await;
        assert!(
            matches!(told, Ok(Ok(()))),
            "the canaries' task did not take the expected deliveries: {told:?}"
        );
    }

    /// One more round with a `message:send`; panics with the task's failure if it had one.
    async fn check(&mut self, case: &str) {
        let (reply, done) = oneshot::channel();
        let sent = self.cmd.send(CanaryCmd::Check {
            case: case.to_owned(),
            reply,
        });
        // Some(true): answered; Some(false): the task is gone; None: no answer in time.
        let answered = match sent {
            Ok(()) => match tokio::time::timeout(Duration::from_secs(30), done).await {
                Ok(Ok(())) => Some(true),
                Ok(Err(_)) => Some(false),
                Err(_) => None,
            },
            Err(_) => Some(false),
        };
        match answered {
            Some(true) => {}
            Some(false) => {
                // The task ended: it panicked; report why.
                let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
                match task.await {
                    Err(e) if e.is_panic() => {
                        let payload = e.into_panic();
                        let why = payload
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        panic!("case {case:?}: the canaries failed: {why}")
                    }
                    other => panic!("case {case:?}: the canaries' task ended: {other:?}"),
                }
            }
            None => panic!("case {case:?}: the canaries did not finish a round within 30 s"),
        }
    }
}

/// Signal both ways until each canary has received one (the cross-node subscriptions are made
/// asynchronously), then forget the warm-up traffic.
async fn warm_up(a: &mut SioClient, b: &mut SioClient) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut got_a, mut got_b) = (false, false);
    while !(got_a && got_b) {
        assert!(
            Instant::now() < deadline,
            "the canaries never received each other's signals"
        );
        a.emit("signal", json!({"to": CANARY_B, "data": "warm-up"}));
        b.emit("signal", json!({"to": CANARY_A, "data": "warm-up"}));
        tokio::time::sleep(Duration::from_millis(200)).await;
        got_a |= a.pending_events("signal") > 0;
        got_b |= b.pending_events("signal") > 0;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.take_buffered();
    b.take_buffered();
}

/// One round: a numbered signal each way, each received exactly once (expected extras are
/// accepted once each), optionally a `message:send` A → B, and no stray packet.
async fn round(
    a: &mut SioClient,
    b: &mut SioClient,
    n: u64,
    label: &str,
    message: bool,
    extra_a: &mut Vec<Value>,
    extra_b: &mut Vec<Value>,
) {
    let data = json!({"n": n, "case": label});
    a.emit("signal", json!({"to": CANARY_B, "data": data}));
    b.emit("signal", json!({"to": CANARY_A, "data": data}));
    expect_signal(b, CANARY_A, &data, extra_b, label, "B").await;
    expect_signal(a, CANARY_B, &data, extra_a, label, "A").await;
    if message {
        let text = format!("message {n} ({label})");
        let ack = a
            .call("message:send", json!({"to": CANARY_B, "text": text}))
            .await;
        assert_eq!(
            ack["ok"], true,
            "{label}: canary A's message:send ack {ack}"
        );
        let received = b.event("message:received").await;
        assert_eq!(
            (&received["messageId"], &received["text"], &received["from"]),
            (&ack["messageId"], &json!(text), &json!(CANARY_A)),
            "{label}: canary B's message:received {received}"
        );
    }
    // Room for a duplicate or a stray packet to arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (who, client, extra) in [("A", a, extra_a), ("B", b, extra_b)] {
        let mut stray = client.take_buffered();
        stray.retain(|p| match p {
            SioPacket::Event { name, args } if name == "signal" && args.len() == 1 => {
                match extra.iter().position(|e| *e == args[0]) {
                    Some(pos) => {
                        extra.remove(pos);
                        false
                    }
                    None => true,
                }
            }
            _ => true,
        });
        assert!(
            stray.is_empty(),
            "{label}: canary {who} received more than expected: {stray:?}"
        );
    }
}

async fn expect_signal(
    client: &mut SioClient,
    from: &str,
    data: &Value,
    extra: &mut Vec<Value>,
    label: &str,
    who: &str,
) {
    loop {
        let got = client.event("signal").await;
        if let Some(pos) = extra.iter().position(|e| *e == got) {
            extra.remove(pos);
            continue;
        }
        assert_eq!(
            got,
            json!({"from": from, "data": data}),
            "{label}: canary {who}'s signal {n}",
            n = data["n"]
        );
        return;
    }
}

/// Poll `probe` (is it settled?, description) until it says settled, at most [`SETTLE`].
async fn settle<F, Fut>(case: &str, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, String)>,
{
    let deadline = Instant::now() + SETTLE;
    loop {
        let (ok, last) = probe().await;
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "case {case:?}: {what} did not return to the baseline within {SETTLE:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP that tolerates a server closing mid-request

/// How an HTTP exchange ended.
#[derive(Debug)]
struct Raw {
    /// The status of the response, if one arrived.
    status: Option<u16>,
    /// Everything read, as text.
    text: String,
}

impl Raw {
    /// The body after the head, when there was a response.
    fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.body())
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self:?}"))
    }

    fn assert_eio_error(&self, case: &str, status: u16, code: u64, message: &str) {
        assert_eq!(self.status, Some(status), "case {case:?}: {self:?}");
        assert_eq!(
            self.json(),
            json!({"code": code, "message": message}),
            "case {case:?}: error body"
        );
    }
}

/// Write `request` while reading the answer until EOF (requests here say `Connection: close`
/// or are refused), at most `limit`.
async fn exchange_raw(addr: SocketAddr, request: &[u8], limit: Duration) -> Raw {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (mut reader, mut writer) = stream.split();
    let write = async {
        for chunk in request.chunks(64 * 1024) {
            if writer.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let read = async {
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 16 * 1024];
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return buf,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let (buf, ()) = match tokio::time::timeout(limit, async { tokio::join!(read, write) }).await {
        Ok(done) => done,
        Err(_) => panic!("the server neither answered nor closed within {limit:?}"),
    };
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    Raw { status, text }
}

fn get(addr: SocketAddr, path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n")
        .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// HTTP / Engine.IO

#[test]
fn http_and_engineio_requests() {
    big_stack(http_and_engineio_requests_body);
}

async fn http_and_engineio_requests_body() {
    let mut c = Cluster::start(
        KeyMode::Hs256,
        &[
            "--cors-origins",
            "http://ok.example",
            "--max-payload",
            "100000",
        ],
    )
    .await;
    let addr = c.a.addr();
    let limit = Duration::from_secs(10);

    // Query validation: EIO, transport.
    for (case, path, code, message) in [
        (
            "missing EIO",
            "/socket.io/?transport=polling",
            5,
            "Unsupported protocol version",
        ),
        (
            "EIO=3",
            "/socket.io/?EIO=3&transport=polling",
            5,
            "Unsupported protocol version",
        ),
        (
            "EIO=abc",
            "/socket.io/?EIO=abc&transport=polling",
            5,
            "Unsupported protocol version",
        ),
        (
            "EIO empty",
            "/socket.io/?EIO=&transport=polling",
            5,
            "Unsupported protocol version",
        ),
        (
            "missing transport",
            "/socket.io/?EIO=4",
            0,
            "Transport unknown",
        ),
        (
            "transport=__proto__",
            "/socket.io/?EIO=4&transport=__proto__",
            0,
            "Transport unknown",
        ),
        (
            "transport=constructor",
            "/socket.io/?EIO=4&transport=constructor",
            0,
            "Transport unknown",
        ),
        (
            "transport=POLLING",
            "/socket.io/?EIO=4&transport=POLLING",
            0,
            "Transport unknown",
        ),
        (
            "transport with NUL",
            "/socket.io/?EIO=4&transport=polling%00",
            0,
            "Transport unknown",
        ),
        (
            "unknown sid",
            "/socket.io/?EIO=4&transport=polling&sid=nope",
            1,
            "Session ID unknown",
        ),
        (
            "bad percent-encoding",
            "/socket.io/?EIO=4&transport=polling&sid=%ZZ",
            1,
            "Session ID unknown",
        ),
    ] {
        let res = exchange_raw(addr, &get(addr, path, ""), limit).await;
        res.assert_eio_error(case, 400, code, message);
        c.check(case).await;
    }

    let case = "10 KB sid";
    let path = format!(
        "/socket.io/?EIO=4&transport=polling&sid={}",
        "s".repeat(10 * 1024)
    );
    exchange_raw(addr, &get(addr, &path, ""), limit)
        .await
        .assert_eio_error(case, 400, 1, "Session ID unknown");
    c.check(case).await;

    for (case, method) in [("POST handshake", "POST"), ("PUT handshake", "PUT")] {
        let req = format!(
            "{method} /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {addr}\r\n\
             Connection: close\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n40"
        );
        exchange_raw(addr, req.as_bytes(), limit)
            .await
            .assert_eio_error(case, 400, 2, "Bad handshake method");
        c.check(case).await;
    }

    // Oversized heads: refused (431/400) or closed, never served.
    let case = "250 headers";
    let mut headers = String::new();
    for i in 0..250 {
        headers.push_str(&format!("X-Header-{i}: v\r\n"));
    }
    let res = exchange_raw(
        addr,
        &get(addr, "/socket.io/?EIO=4&transport=polling", &headers),
        limit,
    )
    .await;
    assert!(
        matches!(res.status, None | Some(400 | 431)),
        "case {case:?}: expected 431/400 or a close, got {res:?}"
    );
    eprintln!("{case}: status {:?}", res.status);
    c.check(case).await;

    let case = "20 MB header";
    let mut req = get(addr, "/health", "").to_vec();
    req.truncate(req.len() - 2);
    req.extend_from_slice(b"X-Big: ");
    req.extend(std::iter::repeat_n(b'a', 20 * 1024 * 1024));
    req.extend_from_slice(b"\r\n\r\n");
    let res = exchange_raw(addr, &req, Duration::from_secs(30)).await;
    assert!(
        matches!(res.status, None | Some(400 | 431)),
        "case {case:?}: expected 431/400 or a close, got {}",
        &res.text[..res.text.len().min(300)]
    );
    eprintln!("{case}: status {:?}", res.status);
    c.check(case).await;

    // CORS allow-list.
    for origin in [
        "http://evil.example",
        "http://ok.example.evil.example",
        "null",
        "http://OK.example",
    ] {
        let case = format!("polling handshake from Origin {origin}");
        let res = exchange_raw(
            addr,
            &get(
                addr,
                "/socket.io/?EIO=4&transport=polling",
                &format!("Origin: {origin}\r\n"),
            ),
            limit,
        )
        .await;
        res.assert_eio_error(&case, 403, 4, "Forbidden");
        c.check(&case).await;
        let case = format!("websocket upgrade from Origin {origin}");
        let headers = format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n"
        );
        let res = exchange_raw(addr, &get(addr, WS_PATH, &headers), limit).await;
        res.assert_eio_error(&case, 403, 4, "Forbidden");
        c.check(&case).await;
    }
    let case = "polling handshake from the allowed Origin";
    let res = http_get_origin(addr, "http://ok.example").await;
    assert_eq!(res.status, Some(200), "case {case:?}: {res:?}");
    let sid = serde_json::from_str::<Value>(res.body().trim_start_matches('0'))
        .ok()
        .and_then(|v| v["sid"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("case {case:?}: no sid in {res:?}"));
    let s = Polling {
        addr,
        sid,
        handshake: Value::Null,
    };
    s.post_ok("1").await;
    c.check(case).await;

    // Polling POST bodies.
    for (case, body) in [
        (
            "polling POST with a garbage body",
            b"garbage\x1e\x1e!!zz".to_vec(),
        ),
        (
            "polling POST with invalid UTF-8",
            b"4\xff\xfe\x1e40".to_vec(),
        ),
        ("polling POST with an empty body", Vec::new()),
    ] {
        let s = Polling::open(addr).await;
        let res = exchange_raw(
            addr,
            &post(addr, &s.path(), "text/plain;charset=UTF-8", &body),
            limit,
        )
        .await;
        assert!(
            matches!(res.status, Some(200 | 400)),
            "case {case:?}: {res:?}"
        );
        // Either refused (400) or accepted as a parse error: the session must be gone.
        let open = close_polling(&s).await;
        eprintln!(
            "{case}: {:?} {:?}; session left open: {open}",
            res.status,
            res.body()
        );
        assert!(
            !open,
            "case {case:?}: the session is still open after {res:?}"
        );
        c.check(case).await;
    }

    let case = "polling POST over maxPayload";
    let s = Polling::open(addr).await;
    let body = format!("4{}", "a".repeat(100_000));
    let res = exchange_raw(
        addr,
        &post(addr, &s.path(), "text/plain;charset=UTF-8", body.as_bytes()),
        limit,
    )
    .await;
    assert_eq!(res.status, Some(413), "case {case:?}: {res:?}");
    expect_session_gone(case, &s).await;
    c.check(case).await;

    let case = "polling POST with a Content-Length overflowing u64";
    let s = Polling::open(addr).await;
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: text/plain\r\n\
         Content-Length: 99999999999999999999999\r\n\r\n40",
        s.path()
    );
    let res = exchange_raw(addr, req.as_bytes(), limit).await;
    assert!(
        matches!(res.status, None | Some(400 | 413)),
        "case {case:?}: {res:?}"
    );
    close_polling(&s).await;
    c.check(case).await;

    let case = "polling POST with a huge chunk size";
    let s = Polling::open(addr).await;
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: text/plain\r\n\
         Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n40\r\n0\r\n\r\n",
        s.path()
    );
    let res = exchange_raw(addr, req.as_bytes(), limit).await;
    assert!(
        matches!(res.status, None | Some(400 | 413)),
        "case {case:?}: {res:?}"
    );
    close_polling(&s).await;
    c.check(case).await;

    let case = "overlapping polls";
    let s = Polling::open(addr).await;
    let first = {
        let path = s.path();
        tokio::spawn(async move { exchange_raw(addr, &get(addr, &path, ""), limit).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = exchange_raw(addr, &get(addr, &s.path(), ""), limit).await;
    second.assert_eio_error(case, 400, 3, "Bad request");
    let first = first.await.expect("the first poll");
    assert_eq!(
        (first.status, first.body()),
        (Some(200), "1"),
        "case {case:?}: the pending poll"
    );
    expect_session_gone(case, &s).await;
    c.check(case).await;

    // A v4 client sending pings: answered, and a burst leaves the connection usable.
    let case = "v4 client pings";
    let mut ws = c.attacker(ATTACKER).await;
    let mut burst = Vec::new();
    for _ in 0..1000 {
        burst.extend(ws_frame(true, 0, OP_TEXT, Some([1, 2, 3, 4]), b"2"));
    }
    burst.extend(ws_frame(
        true,
        0,
        OP_TEXT,
        Some([1, 2, 3, 4]),
        br#"421["message:sync",{"limit":1}]"#,
    ));
    let mut pongs = 0;
    let got = ws
        .write_while_reading(&burst, limit, |op, data| {
            if op == OP_TEXT && data == b"3" {
                pongs += 1;
            }
            op != OP_TEXT || data != b"3"
        })
        .await;
    let last = got
        .frames
        .last()
        .map(|(op, d)| (*op, String::from_utf8_lossy(d).into_owned()));
    assert_eq!(
        pongs, 1000,
        "case {case:?}: pongs; frames end with {last:?}"
    );
    assert!(
        matches!(&last, Some((OP_TEXT, t)) if t.starts_with(r#"431[{"ok":true"#)),
        "case {case:?}: expected the sync ack after the pongs, got {last:?}"
    );
    drop(ws);
    c.check(case).await;

    let case = "polling GET and POST on a websocket session's sid";
    let mut ws = RawWs::connect(addr, WS_PATH).await;
    let open = ws.recv_text_answering_pings().await;
    let sid = serde_json::from_str::<Value>(&open[1..]).expect("open packet")["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    exchange_raw(addr, &get(addr, &path, ""), limit)
        .await
        .assert_eio_error(case, 400, 3, "Bad request");
    exchange_raw(addr, &post(addr, &path, "text/plain", b"40"), limit)
        .await
        .assert_eio_error(case, 400, 3, "Bad request");
    drop(ws);
    c.check(case).await;

    let case = "failed websocket upgrade of a polling session";
    let s = Polling::open(addr).await;
    let path = format!("/socket.io/?EIO=4&transport=websocket&sid={}", s.sid);
    let res = exchange_raw(
        addr,
        &get(
            addr,
            &path,
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
        ),
        limit,
    )
    .await;
    assert!(
        matches!(res.status, Some(400..=499)),
        "case {case:?}: expected one 4xx, got {res:?}"
    );
    s.post_ok("3").await;
    assert!(
        close_polling(&s).await,
        "case {case:?}: the polling session died"
    );
    c.check(case).await;

    // The server API (`--api-key`): refusals are one JSON error each.
    let auth = format!("Authorization: Bearer {API_KEY}\r\n");
    let api = |method: &str, path: &str, headers: &str, body: &[u8]| {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        req
    };
    let emit = |event: &str| {
        json!({"to": {"user": "nobody"}, "event": event, "data": 1})
            .to_string()
            .into_bytes()
    };
    let huge_body = format!(
        r#"{{"to":{{"all":true}},"event":"x","data":"{}"}}"#,
        "a".repeat(2 << 20)
    );
    let long_id = format!("/api/v1/users/{}/disconnect", "u".repeat(10_000));
    let many_ids = format!(
        "/api/v1/presence?userIds={}",
        (0..1001)
            .map(|i| format!("u{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let api_cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "API without a key",
            api("POST", "/api/v1/emit", "", &emit("x")),
            401,
            "unauthorized",
        ),
        (
            "API with a wrong key",
            api(
                "POST",
                "/api/v1/emit",
                "Authorization: Bearer hostile-api-kez\r\n",
                &emit("x"),
            ),
            401,
            "unauthorized",
        ),
        (
            "API with the key as Basic",
            api(
                "POST",
                "/api/v1/emit",
                &format!("Authorization: Basic {API_KEY}\r\n"),
                &emit("x"),
            ),
            401,
            "unauthorized",
        ),
        (
            "API emit of `connect`",
            api("POST", "/api/v1/emit", &auth, &emit("connect")),
            400,
            "bad_request",
        ),
        (
            "API emit of `error`",
            api("POST", "/api/v1/emit", &auth, &emit("error")),
            400,
            "bad_request",
        ),
        (
            "API emit of `authenticated`",
            api("POST", "/api/v1/emit", &auth, &emit("authenticated")),
            400,
            "bad_request",
        ),
        (
            "API emit with a non-JSON body",
            api("POST", "/api/v1/emit", &auth, b"{not json"),
            400,
            "bad_request",
        ),
        (
            "API emit with a deeply nested body",
            api(
                "POST",
                "/api/v1/emit",
                &auth,
                format!(
                    r#"{{"to":{{"all":true}},"event":"x","data":{}{}}}"#,
                    "[".repeat(100_000),
                    "]".repeat(100_000)
                )
                .as_bytes(),
            ),
            400,
            "bad_request",
        ),
        (
            "API disconnect of a 10 KB user id",
            api("POST", &long_id, &auth, b""),
            400,
            "bad_request",
        ),
        (
            "API presence of 1001 users",
            api("GET", &many_ids, &auth, b""),
            400,
            "bad_request",
        ),
        (
            "API online with limit 0",
            api("GET", "/api/v1/online?limit=0", &auth, b""),
            400,
            "bad_request",
        ),
        (
            "API online with a limit overflowing u64",
            api(
                "GET",
                "/api/v1/online?limit=99999999999999999999999",
                &auth,
                b"",
            ),
            400,
            "bad_request",
        ),
    ];
    for (case, req, status, code) in api_cases {
        let res = exchange_raw(addr, &req, limit).await;
        assert_eq!(res.status, Some(status), "case {case:?}: {res:?}");
        assert_eq!(res.json()["error"]["code"], code, "case {case:?}: {res:?}");
        c.check(case).await;
    }
    let case = "API emit with a 2 MB body";
    let res = exchange_raw(
        addr,
        &api("POST", "/api/v1/emit", &auth, huge_body.as_bytes()),
        limit,
    )
    .await;
    assert!(
        matches!(res.status, None | Some(413)),
        "case {case:?}: expected 413 or a close, got {}",
        &res.text[..res.text.len().min(300)]
    );
    eprintln!(
        "{case}: {:?} {:?}",
        res.status,
        &res.body()[..res.body().len().min(200)]
    );
    c.check(case).await;

    // Last: a failure here (a leaked session) would hide the cases after it.
    // Broken websocket upgrades: refused with one 4xx, and no session left behind.
    for (case, headers) in [
        (
            "upgrade without Sec-WebSocket-Key",
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
        ),
        (
            "upgrade with Sec-WebSocket-Version 8",
            "Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
        ),
        (
            "upgrade without Connection: Upgrade",
            "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n",
        ),
    ] {
        let res = exchange_raw(addr, &get(addr, WS_PATH, headers), limit).await;
        let status = res.status.unwrap_or(0);
        assert!(
            (400..500).contains(&status),
            "case {case:?}: expected one 4xx refusal, got {res:?}"
        );
        c.check(case).await;
    }

    c.stop().await;
}

async fn http_get_origin(addr: SocketAddr, origin: &str) -> Raw {
    exchange_raw(
        addr,
        &get(
            addr,
            "/socket.io/?EIO=4&transport=polling",
            &format!("Origin: {origin}\r\n"),
        ),
        Duration::from_secs(10),
    )
    .await
}

fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// One GET on the polling session, given up after 3 s (an open session with nothing queued
/// holds the GET until its next ping): None when it is still held.
async fn poll_once(s: &Polling) -> Option<Raw> {
    tokio::time::timeout(
        Duration::from_secs(3),
        exchange_raw(s.addr, &get(s.addr, &s.path(), ""), Duration::from_secs(10)),
    )
    .await
    .ok()
}

/// The polling session must be closed: a GET answers `1` (close) or 400 "Session ID unknown".
async fn expect_session_gone(case: &str, s: &Polling) {
    match poll_once(s).await {
        None => panic!("case {case:?}: the session is still open (a GET is held)"),
        Some(res) if res.status == Some(200) => assert!(
            res.body().split('\u{1e}').any(|r| r == "1"),
            "case {case:?}: the session is still open; GET answered {res:?}"
        ),
        Some(res) => res.assert_eio_error(case, 400, 1, "Session ID unknown"),
    }
}

/// End a polling session that may or may not still be open; true when it was still open.
async fn close_polling(s: &Polling) -> bool {
    match poll_once(s).await {
        Some(res) if res.status != Some(200) => false,
        Some(res) if res.body().split('\u{1e}').any(|r| r == "1") => false,
        _ => {
            let _ = s.post("1").await;
            true
        }
    }
}

#[test]
fn slowloris_head_is_cut_off() {
    big_stack(slowloris_head_is_cut_off_body);
}

async fn slowloris_head_is_cut_off_body() {
    let mut c = Cluster::start(KeyMode::Hs256, &[]).await;
    let addr = c.a.addr();
    let case = "request head sent a byte at a time";
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}",
        "a".repeat(200)
    );
    let start = Instant::now();
    let mut closed_after = None;
    let mut answer = Vec::new();
    'outer: for byte in head.bytes() {
        if stream.write_all(&[byte]).await.is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        // Read for 200 ms: an answer (408) or the end of the stream stops the trickle.
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed_after = Some(start.elapsed());
                break 'outer;
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if start.elapsed() > Duration::from_secs(12) {
            break;
        }
    }
    let closed_after = closed_after.unwrap_or_else(|| {
        panic!(
            "case {case:?}: still open after {:?} of trickling; read {:?}",
            start.elapsed(),
            String::from_utf8_lossy(&answer)
        )
    });
    assert!(
        closed_after <= Duration::from_secs(10),
        "case {case:?}: closed only after {closed_after:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "case {case:?}: expected a 408 or a plain close, got {answer:?}"
    );
    c.check(case).await;
    c.stop().await;
}

#[test]
fn polling_body_trickle_is_timed_out() {
    big_stack(polling_body_trickle_is_timed_out_body);
}

async fn polling_body_trickle_is_timed_out_body() {
    let mut c = Cluster::start(KeyMode::Hs256, &[]).await;
    let addr = c.a.addr();
    let case = "polling POST body trickled";
    let s = Polling::open(addr).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: text/plain\r\n\
         Content-Length: 1000\r\n\r\n4",
        s.path()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let start = Instant::now();
    let mut answer = Vec::new();
    // The server's body timeout is 30 s (BODY_TIMEOUT): trickle a byte a second for up to 40 s.
    loop {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => {
                if stream.write_all(b"a").await.is_err() {
                    break;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "case {case:?}: neither answered nor closed after {:?}",
            start.elapsed()
        );
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "case {case:?}: expected 408 or a close after {:?}, got {answer:?}",
        start.elapsed()
    );
    expect_session_gone(case, &s).await;
    c.check(case).await;
    c.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Websocket frames

const MASK: Option<[u8; 4]> = Some([0x12, 0x34, 0x56, 0x78]);

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    ws_frame(true, 0, opcode, MASK, payload)
}

#[test]
fn websocket_frames() {
    big_stack(websocket_frames_body);
}

async fn websocket_frames_body() {
    let mut c = Cluster::start(KeyMode::Hs256, &["--max-payload", "100000"]).await;
    let limit = Duration::from_secs(15);
    let event = br#"42["message:sync",{}]"#;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "unmasked frame",
            ws_frame(true, 0, OP_TEXT, None, event),
            PROTOCOL_ERROR,
        ),
        (
            "RSV1 set",
            ws_frame(true, 4, OP_TEXT, MASK, event),
            PROTOCOL_ERROR,
        ),
        (
            "RSV2 and RSV3 set",
            ws_frame(true, 3, OP_TEXT, MASK, event),
            PROTOCOL_ERROR,
        ),
        (
            "reserved data opcode 0x3",
            masked(0x3, event),
            PROTOCOL_ERROR,
        ),
        (
            "reserved control opcode 0xB",
            masked(0xB, b""),
            PROTOCOL_ERROR,
        ),
        (
            "invalid UTF-8 in a text frame",
            masked(OP_TEXT, b"42[\"message:sync\",\"\xff\xfe\"]"),
            INVALID_PAYLOAD,
        ),
        (
            "invalid UTF-8 across fragments",
            [
                ws_frame(false, 0, OP_TEXT, MASK, b"42[\"x\",\"\xe2\x82"),
                ws_frame(true, 0, OP_CONT, MASK, b"\xff\"]"),
            ]
            .concat(),
            INVALID_PAYLOAD,
        ),
        (
            "message over maxPayload",
            masked(OP_TEXT, format!("4{}", "a".repeat(100_001)).as_bytes()),
            TOO_BIG,
        ),
        (
            "fragmented message over maxPayload",
            [
                ws_frame(false, 0, OP_TEXT, MASK, &[b'a'; 40_000]),
                ws_frame(false, 0, OP_CONT, MASK, &[b'a'; 40_000]),
                ws_frame(true, 0, OP_CONT, MASK, &[b'a'; 40_000]),
            ]
            .concat(),
            TOO_BIG,
        ),
        (
            "frame claiming 2^63 bytes",
            {
                let mut f = vec![0x80 | OP_BINARY, 0x80 | 127];
                f.extend_from_slice(&(1u64 << 63).to_be_bytes());
                f.extend_from_slice(&[0, 0, 0, 0]);
                f.extend_from_slice(&[0u8; 64]);
                f
            },
            TOO_BIG,
        ),
        (
            "ping with a 126-byte payload",
            masked(0x9, &[b'p'; 126]),
            PROTOCOL_ERROR,
        ),
        (
            "fragmented ping",
            ws_frame(false, 0, 0x9, MASK, b"ping"),
            PROTOCOL_ERROR,
        ),
        (
            "continuation without a first frame",
            masked(OP_CONT, b"x"),
            PROTOCOL_ERROR,
        ),
        (
            "new text message inside a fragmented one",
            [
                ws_frame(false, 0, OP_TEXT, MASK, b"42"),
                ws_frame(true, 0, OP_TEXT, MASK, b"42"),
            ]
            .concat(),
            PROTOCOL_ERROR,
        ),
    ];
    for (case, bytes, code) in cases {
        let mut ws = c.attacker(ATTACKER).await;
        let (close, exchange) = ws.write_and_expect_close(&bytes, limit).await;
        match close {
            Some((got, reason)) => {
                assert_eq!(
                    got, code,
                    "case {case:?}: close code (reason {reason:?}); {exchange:?}"
                );
                assert!(!reason.is_empty(), "case {case:?}: empty close reason");
            }
            None => panic!("case {case:?}: expected a Close {code}, got {exchange:?}"),
        }
        let other: Vec<_> = exchange
            .frames
            .iter()
            .filter(|(op, _)| *op != OP_CLOSE)
            .collect();
        assert!(
            other.is_empty(),
            "case {case:?}: frames before the Close: {other:?}"
        );
        drop(ws);
        c.check(case).await;
    }

    // Engine.IO packets a client has no business sending on a websocket-only session: ignored
    // (the connection stays usable) or refused with one Close 1002 and a reason.
    for (case, packet) in [
        ("Engine.IO open from the client", "0{}"),
        ("Engine.IO upgrade without probe", "5"),
        ("Engine.IO noop from the client", "6"),
        ("Engine.IO type 7", "7"),
        ("Engine.IO empty text frame", ""),
        ("Engine.IO unsolicited pong", "3"),
        ("Engine.IO probe ping", "2probe"),
    ] {
        let mut ws = c.attacker(ATTACKER).await;
        let (texts, close) = send_texts(case, &mut ws, &[packet], 0).await;
        let outcome = match &close {
            None if texts.is_empty() || texts == ["3probe"] => {
                assert_usable(case, &mut ws).await;
                "ignored"
            }
            Some((PROTOCOL_ERROR, reason)) if !reason.is_empty() && texts.is_empty() => "closed",
            _ => panic!(
                "case {case:?}: expected it ignored or one Close 1002, got {texts:?} {close:?}"
            ),
        };
        eprintln!("{case}: {outcome} {texts:?} {close:?}");
        drop(ws);
        c.check(case).await;
    }

    // A Close frame with a code a client may not send: the server closes (any way).
    for (case, payload) in [
        ("Close with code 999", vec![0x03, 0xE7]),
        ("Close with a 1-byte payload", vec![0x03]),
        (
            "Close with invalid UTF-8 reason",
            vec![0x03, 0xE8, 0xff, 0xfe],
        ),
    ] {
        let mut ws = c.attacker(ATTACKER).await;
        let (close, exchange) = ws
            .write_and_expect_close(&masked(OP_CLOSE, &payload), limit)
            .await;
        eprintln!("{case}: {close:?} eof {}", exchange.eof);
        let other: Vec<_> = exchange
            .frames
            .iter()
            .filter(|(op, _)| *op != OP_CLOSE)
            .collect();
        assert!(
            other.is_empty(),
            "case {case:?}: unexpected frames {other:?}"
        );
        drop(ws);
        c.check(case).await;
    }

    let case = "100,000 one-byte continuation frames";
    let rss_before = metric(c.a.addr(), "process_resident_memory_bytes").await;
    let mut ws = c.attacker(ATTACKER).await;
    let mut bytes = ws_frame(false, 0, OP_TEXT, MASK, b"4");
    let tiny = ws_frame(false, 0, OP_CONT, MASK, b"x");
    for _ in 0..100_000 {
        bytes.extend_from_slice(&tiny);
    }
    bytes.extend(ws_frame(true, 0, OP_CONT, MASK, b"x"));
    let (close, exchange) = ws
        .write_and_expect_close(&bytes, Duration::from_secs(30))
        .await;
    assert!(
        matches!(&close, Some((TOO_BIG, _))),
        "case {case:?}: expected a Close 1009 once the assembled size passes maxPayload, got \
         {close:?}; {exchange:?}"
    );
    drop(ws);
    c.check(case).await;
    let rss_after = metric(c.a.addr(), "process_resident_memory_bytes").await;
    assert!(
        rss_after <= rss_before + RSS_SLACK,
        "case {case:?}: RSS grew from {rss_before} to {rss_after}"
    );

    c.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Socket.IO packets

/// Send `text` frames on `ws` and read until a Close or `want` text frames.
async fn send_texts(
    case: &str,
    ws: &mut RawWs,
    texts: &[&str],
    want: usize,
) -> (Vec<String>, Option<(u16, String)>) {
    let mut bytes = Vec::new();
    for t in texts {
        bytes.extend(masked(OP_TEXT, t.as_bytes()));
    }
    let mut seen = 0;
    // Nothing wanted: listen a little while for anything unexpected.
    let limit = if want == 0 {
        Duration::from_millis(700)
    } else {
        Duration::from_secs(15)
    };
    let exchange = ws
        .write_while_reading(&bytes, limit, |op, _| {
            if op == OP_TEXT {
                seen += 1;
            }
            op == OP_CLOSE || seen >= want
        })
        .await;
    assert!(
        want == 0 || !exchange.timed_out,
        "case {case:?}: waited {limit:?} for {want} text frames; got {:?}",
        exchange
            .frames
            .iter()
            .map(|(op, d)| (
                *op,
                String::from_utf8_lossy(&d[..d.len().min(200)]).into_owned()
            ))
            .collect::<Vec<_>>()
    );
    let mut texts = Vec::new();
    let mut close = None;
    for (op, data) in exchange.frames {
        match op {
            OP_TEXT => texts.push(String::from_utf8_lossy(&data).into_owned()),
            OP_CLOSE if data.len() >= 2 => {
                close = Some((
                    u16::from_be_bytes([data[0], data[1]]),
                    String::from_utf8_lossy(&data[2..]).into_owned(),
                ))
            }
            OP_CLOSE => close = Some((1005, String::new())),
            other => texts.push(format!("<opcode {other}>")),
        }
    }
    (texts, close)
}

/// `message:sync` with an ack id answers `ok:true`.
async fn assert_usable(case: &str, ws: &mut RawWs) {
    let (texts, close) = send_texts(case, ws, &[r#"42900["message:sync",{"limit":1}]"#], 1).await;
    assert!(
        close.is_none() && texts.len() == 1 && texts[0].starts_with(r#"43900[{"ok":true"#),
        "case {case:?}: the connection is not usable afterwards: {texts:?} {close:?}"
    );
}

#[test]
fn socketio_packets() {
    big_stack(socketio_packets_body);
}

async fn socketio_packets_body() {
    let mut c = Cluster::start(KeyMode::Hs256, &[]).await;

    // Reserved event names (socket.io-parser's list): a protocol error.
    for name in [
        "connect",
        "disconnect",
        "connect_error",
        "disconnecting",
        "newListener",
    ] {
        let case = format!("client emits reserved event {name:?}");
        let mut ws = c.attacker(ATTACKER).await;
        let packet = format!(r#"42["{name}",{{}}]"#);
        let (texts, close) = send_texts(&case, &mut ws, &[&packet], 1).await;
        assert!(
            texts.is_empty() && matches!(&close, Some((PROTOCOL_ERROR, r)) if !r.is_empty()),
            "case {case:?}: expected one Close 1002 with a reason, got {texts:?} {close:?}"
        );
        drop(ws);
        c.check(&case).await;
    }

    // `error` is not reserved by socket.io-parser: an unknown event for the product.
    let case = "client emits \"error\"";
    let mut ws = c.attacker(ATTACKER).await;
    let (texts, close) = send_texts(case, &mut ws, &[r#"427["error",{"code":"x"}]"#], 1).await;
    assert!(
        close.is_none()
            && texts.len() == 1
            && texts[0].starts_with(r#"437[{"ok":false,"error":{"code":"unknown_event""#),
        "case {case:?}: expected the ack {{ok:false, error:unknown_event}}, got {texts:?} {close:?}"
    );
    assert_usable(case, &mut ws).await;
    drop(ws);
    c.check(case).await;

    // Ack ids.
    let case = "ack id overflowing u64";
    let mut ws = c.attacker(ATTACKER).await;
    let (texts, close) = send_texts(case, &mut ws, &["43999999999999999999999[]"], 1).await;
    assert!(
        texts.is_empty() && matches!(&close, Some((PROTOCOL_ERROR, r)) if !r.is_empty()),
        "case {case:?}: expected one Close 1002 with a reason, got {texts:?} {close:?}"
    );
    drop(ws);
    c.check(case).await;

    let case = "event with an ack id overflowing u64";
    let mut ws = c.attacker(ATTACKER).await;
    let (texts, close) = send_texts(
        case,
        &mut ws,
        &[r#"42999999999999999999999["message:sync",{}]"#],
        1,
    )
    .await;
    assert!(
        texts.is_empty() && matches!(&close, Some((PROTOCOL_ERROR, r)) if !r.is_empty()),
        "case {case:?}: expected one Close 1002 with a reason, got {texts:?} {close:?}"
    );
    drop(ws);
    c.check(case).await;

    let case = "ack for an id the server never used";
    let mut ws = c.attacker(ATTACKER).await;
    let (texts, close) =
        send_texts(case, &mut ws, &["43123[]", "4318446744073709551615[1]"], 0).await;
    assert!(
        texts.is_empty() && close.is_none(),
        "case {case:?}: expected the acks to be ignored, got {texts:?} {close:?}"
    );
    assert_usable(case, &mut ws).await;
    drop(ws);
    c.check(case).await;

    // Huge numbers.
    let case = "signal with a 100k-digit number";
    let mut ws = c.attacker(ATTACKER).await;
    let packet = format!(
        r#"421["signal",{{"to":"{CANARY_B}","data":{}}}]"#,
        "7".repeat(100_000)
    );
    let (texts, close) = send_texts(case, &mut ws, &[&packet], 1).await;
    // Valid JSON (RFC 8259 sets no limit), but not representable: refusing the event with
    // payload_too_large, or the packet as malformed (one Close 1002), are both clear.
    let refused = close.is_none()
        && texts.len() == 1
        && texts[0].starts_with(r#"431[{"ok":false,"error":{"code":"payload_too_large""#);
    let closed = texts.is_empty() && matches!(&close, Some((PROTOCOL_ERROR, r)) if !r.is_empty());
    assert!(
        refused || closed,
        "case {case:?}: expected the ack payload_too_large or one Close 1002, got {texts:?} {close:?}"
    );
    eprintln!("{case}: {texts:?} {close:?}");
    if refused {
        assert_usable(case, &mut ws).await;
    }
    drop(ws);
    c.check(case).await;

    let case = "message:sync with a 30k-digit `after`";
    let mut ws = c.attacker(ATTACKER).await;
    let packet = format!(r#"421["message:sync",{{"after":{}}}]"#, "9".repeat(30_000));
    let (texts, close) = send_texts(case, &mut ws, &[&packet], 1).await;
    let refused = texts.len() == 1
        && texts[0].starts_with(r#"431[{"ok":false,"error":{"code":"invalid_payload""#)
        && close.is_none();
    let closed = texts.is_empty() && matches!(&close, Some((PROTOCOL_ERROR, r)) if !r.is_empty());
    assert!(
        refused || closed,
        "case {case:?}: expected the ack invalid_payload or one Close 1002, got {texts:?} {close:?}"
    );
    if refused {
        assert_usable(case, &mut ws).await;
    }
    drop(ws);
    c.check(case).await;

    // 10,000 CONNECTs to namespaces that do not exist.
    let case = "10,000 CONNECTs to unknown namespaces";
    let rss_before = metric(c.a.addr(), "process_resident_memory_bytes").await;
    let mut ws = c.attacker(ATTACKER).await;
    let packets: Vec<String> = (0..10_000).map(|i| format!("40/ns{i},")).collect();
    let refs: Vec<&str> = packets.iter().map(String::as_str).collect();
    let (texts, close) = send_texts(case, &mut ws, &refs, 10_000).await;
    match &close {
        None => {
            assert_eq!(texts.len(), 10_000, "case {case:?}: replies");
            for (i, t) in texts.iter().enumerate() {
                assert_eq!(
                    t,
                    &format!(r#"44/ns{i},{{"message":"Invalid namespace"}}"#),
                    "case {case:?}: reply {i}"
                );
            }
            assert_usable(case, &mut ws).await;
            eprintln!(
                "{case}: every CONNECT refused with CONNECT_ERROR; the connection stays usable"
            );
        }
        Some((code, reason)) => {
            eprintln!(
                "{case}: closed with {code} {reason:?} after {} CONNECT_ERRORs",
                texts.len()
            );
            assert!(
                *code == PROTOCOL_ERROR || *code == 1008,
                "case {case:?}: closed with {code} {reason:?}"
            );
        }
    }
    drop(ws);
    c.check(case).await;
    let rss_after = metric(c.a.addr(), "process_resident_memory_bytes").await;
    assert!(
        rss_after <= rss_before + RSS_SLACK,
        "case {case:?}: RSS grew from {rss_before} to {rss_after}"
    );

    // Binary attachments before CONNECT (so before auth).
    let case = "binary attachment and a 10 MB binary frame before CONNECT";
    let mut ws = RawWs::connect(c.a.addr(), WS_PATH).await;
    let open = ws.recv_text_answering_pings().await;
    assert!(open.starts_with("0{"), "open packet {open:?}");
    let mut bytes = masked(OP_TEXT, br#"451-["x",{"_placeholder":true,"num":0}]"#);
    bytes.extend(masked(OP_BINARY, &vec![0xAB; 10 * 1024 * 1024]));
    let (close, exchange) = ws
        .write_and_expect_close(&bytes, Duration::from_secs(30))
        .await;
    assert!(
        matches!(&close, Some((PROTOCOL_ERROR | TOO_BIG, r)) if !r.is_empty()),
        "case {case:?}: expected one Close 1002/1009 with a reason, got {close:?}; {exchange:?}"
    );
    eprintln!("{case}: {close:?}");
    drop(ws);
    c.check(case).await;

    for (case, frames) in [
        (
            "binary event with a small attachment before CONNECT",
            [
                masked(OP_TEXT, br#"451-["x",{"_placeholder":true,"num":0}]"#),
                masked(OP_BINARY, b"\x01\x02"),
            ]
            .concat(),
        ),
        (
            "message:send before CONNECT",
            masked(
                OP_TEXT,
                br#"421["message:send",{"to":"offline-user","text":"pre-auth"}]"#,
            ),
        ),
    ] {
        let mut ws = RawWs::connect(c.a.addr(), WS_PATH).await;
        let open = ws.recv_text_answering_pings().await;
        assert!(open.starts_with("0{"), "open packet {open:?}");
        let (close, exchange) = ws
            .write_and_expect_close(&frames, Duration::from_secs(10))
            .await;
        assert!(
            matches!(&close, Some((PROTOCOL_ERROR, r)) if !r.is_empty())
                && exchange.frames.len() == 1,
            "case {case:?}: expected one Close 1002 with a reason, got {close:?}; {exchange:?}"
        );
        drop(ws);
        c.check(case).await;
    }

    let case = "binary attachment where message:send wants text";
    let mut ws = c.attacker(ATTACKER).await;
    let mut bytes = masked(
        OP_TEXT,
        br#"451-7["message:send",{"to":"offline-user","text":{"_placeholder":true,"num":0}}]"#,
    );
    bytes.extend(masked(OP_BINARY, b"\x00\x01binary"));
    let exchange = ws
        .write_while_reading(&bytes, Duration::from_secs(10), |_, _| true)
        .await;
    let first = exchange
        .frames
        .first()
        .map(|(op, d)| (*op, String::from_utf8_lossy(d).into_owned()));
    assert!(
        matches!(&first, Some((OP_TEXT, t)) if t.starts_with(r#"437[{"ok":false,"error":{"code":"invalid_payload""#)),
        "case {case:?}: expected the ack invalid_payload, got {first:?}"
    );
    assert_usable(case, &mut ws).await;
    drop(ws);
    c.check(case).await;

    // Subscriptions an attacker makes must all go when it leaves (pub/sub channels checked).
    let case = "presence:subscribe to 1000 users and 200 rooms in the token";
    let rooms: Vec<String> = (0..200).map(|i| format!("room-{i}")).collect();
    let token = hs256(&json!({"sub": ATTACKER, "exp": now() + 3600, "rooms": rooms}));
    let mut ws = c.attacker_with_token(&token).await;
    let ids: Vec<String> = (0..1000).map(|i| format!("watched-{i}")).collect();
    let packet = format!(r#"425["presence:subscribe",{}]"#, json!({"userIds": ids}));
    let (texts, close) = send_texts(case, &mut ws, &[&packet], 1).await;
    assert!(
        close.is_none() && texts.len() == 1 && texts[0].starts_with(r#"435[{"ok":true"#),
        "case {case:?}: {:?} {close:?}",
        texts
            .iter()
            .map(|t| &t[..t.len().min(200)])
            .collect::<Vec<_>>()
    );
    let channels = c.redis.channels().await;
    assert!(
        channels.iter().any(|ch| ch == "sb:watch:watched-999")
            && channels.iter().any(|ch| ch == "sb:room:room-199"),
        "case {case:?}: the node did not subscribe as expected: {} channels",
        channels.len()
    );
    drop(ws);
    c.check(case).await;

    // Payload values at and past the edges of their types: one ack each, `ok` or
    // `invalid_payload`, never a dropped connection.
    let case = "payload values past their types' edges";
    let long_to = "u".repeat(5000);
    let edge_cases: Vec<(String, bool)> = vec![
        (r#"["message:sync",{"limit":-1}]"#.into(), false),
        (r#"["message:sync",{"limit":1e308}]"#.into(), false),
        (r#"["message:sync",{"limit":100000}]"#.into(), true),
        (r#"["message:sync",{"after":-5}]"#.into(), false),
        (r#"["message:sync",{"after":1.5}]"#.into(), false),
        (
            r#"["message:sync",{"after":18446744073709551615}]"#.into(),
            true,
        ),
        (
            r#"["message:sync",{"after":9223372036854775808}]"#.into(),
            true,
        ),
        (r#"["message:sync",null]"#.into(), false),
        (r#"["message:send",{"to":"","text":"x"}]"#.into(), false),
        (
            format!(r#"["message:send",{{"to":"{long_to}","text":"x"}}]"#),
            false,
        ),
        (
            r#"["message:send",{"to":"offline-user","text":"   "}]"#.into(),
            false,
        ),
        (
            r#"["message:send",{"to":{"$ne":null},"text":"x"}]"#.into(),
            false,
        ),
        (r#"["status:set",{"status":"__proto__"}]"#.into(), false),
        (r#"["status:set",{"status":"offline"}]"#.into(), false),
        (r#"["presence:query",{"userIds":[1,2]}]"#.into(), false),
        (r#"["room:emit",{"room":"","data":1}]"#.into(), false),
        (
            r#"["room:emit",{"room":"not-joined","data":1}]"#.into(),
            false,
        ),
    ];
    let mut ws = c.attacker(ATTACKER).await;
    for (i, (payload, ok)) in edge_cases.iter().enumerate() {
        let id = 100 + i;
        let packet = format!("42{id}{payload}");
        let (texts, close) = send_texts(case, &mut ws, &[&packet], 1).await;
        let expected = if *ok {
            format!(r#"43{id}[{{"ok":true"#)
        } else {
            format!(r#"43{id}[{{"ok":false,"error":{{"code":"#)
        };
        assert!(
            close.is_none() && texts.len() == 1 && texts[0].starts_with(&expected),
            "case {case:?}: {payload:.100}: expected one ack starting {expected}, got {texts:?} {close:?}"
        );
        if !ok {
            assert!(
                texts[0].contains(r#""code":"invalid_payload""#)
                    || texts[0].contains(r#""code":"not_member""#),
                "case {case:?}: {payload:.100}: {}",
                texts[0]
            );
        }
    }
    assert_usable(case, &mut ws).await;
    drop(ws);
    c.check(case).await;

    // Control characters in a durable message.
    let case = "NUL and control characters in message:send";
    let mut ws = c.attacker(ATTACKER).await;
    let (texts, close) = send_texts(
        case,
        &mut ws,
        &[
            r#"421["message:send",{"to":"offline-user","text":"a\u0000b\u0007c\nd"}]"#,
            r#"422["message:send",{"to":"offline-user","text":"\u0000\u0001"}]"#,
            r#"423["message:send",{"to":"offline-user","text":"normal"}]"#,
        ],
        3,
    )
    .await;
    assert!(
        close.is_none() && texts.len() == 3,
        "case {case:?}: {texts:?} {close:?}"
    );
    // Acks may come in any order (the durable send waits for the journal): index them by id.
    let mut acks = vec![Value::Null; 3];
    for t in &texts {
        let id: usize = t
            .get(2..3)
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("case {case:?}: not an ack 431..433: {t:?}"));
        let json = t.get(3..).unwrap_or_default();
        acks[id - 1] = serde_json::from_str::<Value>(json)
            .map(|v| v[0].clone())
            .unwrap_or_else(|e| panic!("case {case:?}: ack {t:?}: {e}"));
    }
    assert_eq!(acks[0]["ok"], true, "case {case:?}: ack 1 {}", acks[0]);
    assert_eq!(
        acks[1]["error"]["code"], "invalid_payload",
        "case {case:?}: a text of only control characters is empty once sanitised: {}",
        acks[1]
    );
    assert_eq!(acks[2]["ok"], true, "case {case:?}: ack 3 {}", acks[2]);
    // The journal writes in batches: sync until both rows are there.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (texts, close) =
            send_texts(case, &mut ws, &[r#"424["message:sync",{"after":0}]"#], 1).await;
        assert!(
            close.is_none() && texts.len() == 1,
            "case {case:?}: sync {texts:?} {close:?}"
        );
        let ack: Value = serde_json::from_str(&texts[0][3..]).expect("sync ack");
        let got: Vec<&str> = ack[0]["messages"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["text"].as_str()).collect())
            .unwrap_or_default();
        if got == ["abc\nd", "normal"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "case {case:?}: message:sync returns {got:?}, expected the sanitised texts; {}",
            texts[0]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(ws);
    c.check(case).await;

    let case = "lone UTF-16 surrogate in message:send";
    let mut ws = c.attacker(ATTACKER).await;
    let (texts, close) = send_texts(
        case,
        &mut ws,
        &[r#"421["message:send",{"to":"offline-user","text":"x\ud800y"}]"#],
        1,
    )
    .await;
    let refused = close.is_none()
        && texts.len() == 1
        && texts[0].starts_with(r#"431[{"ok":false,"error":{"code":"invalid_payload""#);
    let closed = texts.is_empty() && matches!(&close, Some((PROTOCOL_ERROR, r)) if !r.is_empty());
    assert!(
        refused || closed,
        "case {case:?}: expected the ack invalid_payload or one Close 1002, got {texts:?} {close:?}"
    );
    drop(ws);
    c.check(case).await;

    c.stop().await;
}

// ---------------------------------------------------------------------------------------------
// JWT

/// CONNECT with `auth` on a fresh websocket to node A: the refusal reason, or "accepted".
async fn connect_reason(c: &Cluster, auth: Value) -> (String, Duration) {
    let start = Instant::now();
    let result = SioClient::try_connect(c.a.addr(), auth).await;
    let elapsed = start.elapsed();
    match result {
        Ok(client) => {
            client.disconnect().await;
            ("accepted".to_owned(), elapsed)
        }
        Err(refusal) => {
            let json: Value = refusal
                .strip_prefix("44")
                .and_then(|j| serde_json::from_str(j).ok())
                .unwrap_or_else(|| panic!("CONNECT_ERROR is not `44{{json}}`: {refusal:?}"));
            assert_eq!(json["message"], "auth_failed", "CONNECT_ERROR {refusal}");
            let reason = json["data"]["reason"]
                .as_str()
                .unwrap_or_else(|| panic!("CONNECT_ERROR without a reason: {refusal}"))
                .to_owned();
            (reason, elapsed)
        }
    }
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.{}.", b64(header), b64(claims))
}

#[test]
fn jwt_tokens() {
    big_stack(jwt_tokens_body);
}

async fn jwt_tokens_body() {
    let mut c = Cluster::start(
        KeyMode::Hs256,
        &["--max-payload", "2000000", "--connect-timeout-ms", "2000"],
    )
    .await;
    let me = claims(ATTACKER);
    let hs512 = sign(
        &Header::new(Algorithm::HS512),
        &me,
        &EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
    );
    let other_secret = EncodingKey::from_secret(b"not the secret at all").expect("key");
    // A listener standing in for a key server: nothing may ever connect to it.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let trap_url = format!("http://{}", trap.local_addr().expect("addr"));
    let mut pointing = Header::new(Algorithm::HS256);
    pointing.kid = Some("../../etc/passwd".into());
    pointing.jku = Some(format!("{trap_url}/jwks.json"));
    pointing.x5u = Some(format!("{trap_url}/cert.pem"));
    let pointing_forged = sign(&pointing, &me, &other_secret);
    let pointing_genuine = sign(
        &pointing,
        &me,
        &EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
    );
    // An embedded `jwk` naming the attacker's own HMAC key (`k` = base64url of the secret).
    let jwk_header = json!({
        "alg": "HS256",
        "jwk": {"kty": "oct", "k": URL_SAFE_NO_PAD.encode("not the secret at all")},
        "jku": format!("{trap_url}/jwks.json"),
    });
    let jwk_token = {
        let unsigned = format!("{}.{}", b64(&jwk_header), b64(&me));
        // Signed with the attacker's key through jsonwebtoken's HS256 on the same input.
        let sig = jsonwebtoken::crypto::sign(unsigned.as_bytes(), &other_secret, Algorithm::HS256)
            .expect("sign");
        format!("{unsigned}.{sig}")
    };
    let huge = "a".repeat(1024 * 1024);
    let just_over = format!("{}.{}", "a".repeat(8 * 1024), "b");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no token", json!({}), "missing_token"),
        (
            "alg none",
            json!({"token": unsigned(&json!({"alg":"none","typ":"JWT"}), &me)}),
            "invalid_algorithm",
        ),
        (
            "alg NONE",
            json!({"token": unsigned(&json!({"alg":"NONE"}), &me)}),
            "invalid_algorithm",
        ),
        (
            "alg nOnE",
            json!({"token": unsigned(&json!({"alg":"nOnE"}), &me)}),
            "invalid_algorithm",
        ),
        (
            "alg none with a signature",
            json!({"token": format!("{}c2ln", unsigned(&json!({"alg":"none"}), &me))}),
            "invalid_algorithm",
        ),
        (
            "alg hs256 (lower case)",
            json!({"token": format!("{}c2ln", unsigned(&json!({"alg":"hs256"}), &me))}),
            "invalid_algorithm",
        ),
        (
            "HS512 with the right secret",
            json!({"token": hs512}),
            "invalid_algorithm",
        ),
        (
            "RS256 token on an HS256 node",
            json!({"token": rs256(&me)}),
            "invalid_algorithm",
        ),
        (
            "missing exp",
            json!({"token": hs256(&json!({"sub": ATTACKER}))}),
            "missing_claim",
        ),
        (
            "string exp",
            json!({"token": hs256(&json!({"sub": ATTACKER, "exp": (now() + 600).to_string()}))}),
            "missing_claim",
        ),
        (
            "string nbf",
            json!({"token": hs256(&json!({"sub": ATTACKER, "exp": now() + 600, "nbf": "soon"}))}),
            "malformed",
        ),
        (
            "missing sub",
            json!({"token": hs256(&json!({"exp": now() + 600}))}),
            "missing_claim",
        ),
        (
            "numeric sub",
            json!({"token": hs256(&json!({"sub": 42, "exp": now() + 600}))}),
            "missing_claim",
        ),
        (
            "expired",
            json!({"token": hs256(&json!({"sub": ATTACKER, "exp": now() - 600}))}),
            "expired",
        ),
        (
            "nbf in the future",
            json!({"token": hs256(&json!({"sub": ATTACKER, "exp": now() + 6000, "nbf": now() + 3000}))}),
            "not_yet_valid",
        ),
        (
            "kid/jku/x5u headers, wrong key",
            json!({"token": pointing_forged}),
            "invalid_signature",
        ),
        (
            "embedded jwk with the attacker's key",
            json!({"token": jwk_token}),
            "invalid_signature",
        ),
        (
            "kid/jku/x5u headers, right key",
            json!({"token": pointing_genuine}),
            "accepted",
        ),
        (
            "token not a string",
            json!({"token": {"alg": "none"}}),
            "missing_token",
        ),
        ("garbage token", json!({"token": "a.b.c"}), "malformed"),
        (
            "1 MB token in CONNECT auth",
            json!({"token": huge}),
            "token_too_large",
        ),
        (
            "token one byte over 8 KiB",
            json!({"token": just_over}),
            "token_too_large",
        ),
    ];
    for (case, auth, expected) in cases {
        let (reason, elapsed) = connect_reason(&c, auth).await;
        assert_eq!(reason, expected, "case {case:?}: CONNECT outcome");
        assert!(
            elapsed < Duration::from_secs(2),
            "case {case:?}: took {elapsed:?} (a fetch?)"
        );
        c.check(case).await;
    }
    // Nothing ever connected to the key-server stand-in.
    let accepted = tokio::time::timeout(Duration::from_millis(500), trap.accept()).await;
    assert!(
        accepted.is_err(),
        "the node connected to the URL in a token header: {accepted:?}"
    );

    let case = "1000 refused CONNECTs on one connection, then a valid one";
    let rss_before = metric(c.a.addr(), "process_resident_memory_bytes").await;
    let mut ws = RawWs::connect(c.a.addr(), WS_PATH).await;
    let open = ws.recv_text_answering_pings().await;
    assert!(
        open.starts_with("0{"),
        "case {case:?}: open packet {open:?}"
    );
    let bad = format!("40{}", json!({"token": "a.b.c"}));
    let packets = vec![bad.as_str(); 1000];
    let (texts, close) = send_texts(case, &mut ws, &packets, 1000).await;
    match &close {
        None => {
            let expected = r#"44{"message":"auth_failed","data":{"reason":"malformed"}}"#;
            assert!(
                texts.len() == 1000 && texts.iter().all(|t| t == expected),
                "case {case:?}: {} replies, first {:?}",
                texts.len(),
                texts.first()
            );
            let good = format!("40{}", json!({"token": hs256(&me)}));
            let (texts, close) = send_texts(case, &mut ws, &[&good], 2).await;
            assert!(
                close.is_none()
                    && texts.len() == 2
                    && texts[0].starts_with("40{")
                    && texts[1].starts_with(r#"42["authenticated""#),
                "case {case:?}: the valid CONNECT after the refusals: {texts:?} {close:?}"
            );
            eprintln!("{case}: all refused, connection stays usable");
        }
        Some((code, reason)) => {
            eprintln!(
                "{case}: closed {code} {reason:?} after {} refusals",
                texts.len()
            );
            assert!(!reason.is_empty(), "case {case:?}: empty close reason");
        }
    }
    drop(ws);
    c.check(case).await;
    let rss_after = metric(c.a.addr(), "process_resident_memory_bytes").await;
    assert!(
        rss_after <= rss_before + RSS_SLACK,
        "case {case:?}: RSS grew from {rss_before} to {rss_after}"
    );

    let case = "refused CONNECT, then silence: closed at the connect timeout";
    let mut ws = RawWs::connect(c.a.addr(), WS_PATH).await;
    let open = ws.recv_text_answering_pings().await;
    assert!(
        open.starts_with("0{"),
        "case {case:?}: open packet {open:?}"
    );
    let start = Instant::now();
    let bad = format!("40{}", json!({"token": "a.b.c"}));
    let (texts, close) = send_texts(case, &mut ws, &[&bad], 1).await;
    assert!(
        close.is_none() && texts.len() == 1 && texts[0].starts_with("44{"),
        "case {case:?}: {texts:?} {close:?}"
    );
    let close = ws.expect_close().await;
    let elapsed = start.elapsed();
    assert!(
        matches!(&close, Some((1000, r)) if r == "connect_timeout")
            && elapsed < Duration::from_secs(4),
        "case {case:?}: expected Close 1000 connect_timeout after ~2 s, got {close:?} after {elapsed:?}"
    );
    drop(ws);
    c.check(case).await;

    // Tokens on the handshake request.
    let addr = c.a.addr();
    for (case, path, headers) in [
        (
            "1 MB token in ?token=",
            format!("{WS_PATH}&token={huge}"),
            String::new(),
        ),
        (
            "1 MB token in Authorization",
            WS_PATH.to_owned(),
            format!("Authorization: Bearer {huge}\r\n"),
        ),
    ] {
        let headers = format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{headers}"
        );
        let res = exchange_raw(addr, &get(addr, &path, &headers), Duration::from_secs(10)).await;
        assert!(
            matches!(res.status, None | Some(400 | 414 | 431)),
            "case {case:?}: expected 431/414/400 or a close, got {}",
            &res.text[..res.text.len().min(300)]
        );
        eprintln!("{case}: status {:?}", res.status);
        c.check(case).await;
    }
    for (case, path, headers, expected) in [
        (
            "forged token in Authorization",
            WS_PATH.to_owned(),
            format!(
                "Authorization: Bearer {}\r\n",
                unsigned(&json!({"alg":"none"}), &me)
            ),
            "invalid_algorithm",
        ),
        (
            "token one byte over 8 KiB in Authorization",
            WS_PATH.to_owned(),
            format!("Authorization: Bearer {just_over}\r\n"),
            "token_too_large",
        ),
        (
            "token one byte over 8 KiB in ?token=",
            format!("{WS_PATH}&token={just_over}"),
            String::new(),
            "token_too_large",
        ),
    ] {
        let mut ws = RawWs::connect_with_headers(addr, &path, &headers).await;
        let open = ws.recv_text_answering_pings().await;
        assert!(
            open.starts_with("0{"),
            "case {case:?}: open packet {open:?}"
        );
        ws.send_text("40").await;
        let reply = ws.recv_text_answering_pings().await;
        assert_eq!(
            reply,
            format!(r#"44{{"message":"auth_failed","data":{{"reason":"{expected}"}}}}"#),
            "case {case:?}"
        );
        drop(ws);
        c.check(case).await;
    }
    c.stop().await;
}

#[test]
fn jwt_algorithm_confusion_on_an_rs256_node() {
    big_stack(jwt_algorithm_confusion_on_an_rs256_node_body);
}

async fn jwt_algorithm_confusion_on_an_rs256_node_body() {
    let mut c = Cluster::start(KeyMode::Rs256, &[]).await;
    let me = claims(ATTACKER);
    let public_pem = std::fs::read(rsa_public_path()).expect("read the public key");
    let tampered = {
        let token = rs256(&me);
        let parts: Vec<&str> = token.split('.').collect();
        format!("{}.{}.{}", parts[0], b64(&claims("admin")), parts[2])
    };
    let confused = sign(
        &Header::new(Algorithm::HS256),
        &me,
        &EncodingKey::from_secret(&public_pem).expect("key"),
    );
    for (case, auth, expected) in [
        (
            "HS256 signed with the RS256 public key",
            json!({"token": confused}),
            "invalid_algorithm",
        ),
        (
            "alg none on an RS256 node",
            json!({"token": unsigned(&json!({"alg":"none"}), &me)}),
            "invalid_algorithm",
        ),
        (
            "HS256 with the HS secret on an RS256 node",
            json!({"token": hs256(&me)}),
            "invalid_algorithm",
        ),
        (
            "RS256 with a tampered payload",
            json!({ "token": tampered }),
            "invalid_signature",
        ),
        ("valid RS256", json!({"token": rs256(&me)}), "accepted"),
    ] {
        let (reason, _) = connect_reason(&c, auth).await;
        assert_eq!(reason, expected, "case {case:?}: CONNECT outcome");
        c.check(case).await;
    }
    c.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Cluster frames

fn deliver(origin: &str, text: &str) -> ClusterFrame {
    ClusterFrame {
        origin: origin.to_owned(),
        sent_at_micros: now() * 1_000_000,
        trace: None,
        body: Body::Deliver {
            except: None,
            volatile: false,
            parts: vec![Part::Text(bytes::Bytes::from(text.to_owned()))],
        },
    }
}

/// How many "dropped a foreign frame" lines a node has logged.
fn dropped(node: &Node) -> usize {
    node.logs().matches("dropped a foreign frame").count()
}

#[test]
fn cluster_frames() {
    big_stack(cluster_frames_body);
}

async fn cluster_frames_body() {
    let mut c = Cluster::start(KeyMode::Hs256, &[]).await;
    let user_a = format!("sb:user:{CANARY_A}");
    let forged_signal = format!(r#"42["signal",{{"from":"{ATTACKER}","data":"forged"}}]"#);
    let genuine = deliver("evil-node", &forged_signal).encode();
    let mut oversized = deliver("evil-node", "42[\"signal\",\"x\"]").encode();
    oversized.extend(std::iter::repeat_n(b'x', 5 * 1024 * 1024));
    let big_parts = {
        let text = format!(
            r#"42["signal",{{"from":"x","data":"{}"}}]"#,
            "x".repeat(5 * 1024 * 1024)
        );
        deliver("evil-node", &text).encode()
    };
    let mut bad_utf8 = deliver("evil-node", "42[\"a\"]").encode();
    let len = bad_utf8.len();
    bad_utf8[len - 2] = 0xff;
    let mut length_lie = deliver("evil-node", "42[\"a\"]").encode();
    // The part length field (after magic, time, origin, kind, flag, except, count, tag).
    let at = 3 + 8 + 2 + "evil-node".len() + 1 + 1 + 2 + 1 + 1;
    length_lie[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    let rejected: Vec<(&str, Vec<u8>)> = vec![
        ("foreign bytes", b"hello, switchboard".to_vec()),
        ("empty payload", Vec::new()),
        ("magic only", b"SB1".to_vec()),
        ("truncated frame", genuine[..genuine.len() - 5].to_vec()),
        (
            "frame with trailing bytes",
            [genuine.clone(), b"zz".to_vec()].concat(),
        ),
        ("5 MB payload after a valid frame", oversized),
        ("5 MB text part", big_parts),
        ("invalid UTF-8 text part", bad_utf8),
        ("part length claiming 4 GiB", length_lie),
        (
            "wrong version magic",
            [b"SB2".as_slice(), &genuine[3..]].concat(),
        ),
    ];
    for (name, payload) in rejected {
        for channel in [user_a.as_str(), "sb:broadcast"] {
            let case = format!("{name} on {channel}");
            let before = dropped(&c.a);
            let receivers = c.redis.publish(channel, &payload).await;
            assert!(
                receivers >= 1,
                "case {case:?}: nobody subscribes to {channel}"
            );
            settle(&case, "the node's count of dropped frames", || async {
                let n = dropped(&c.a);
                (n == before + 1, format!("{n} (before {before})"))
            })
            .await;
            c.check(&case).await;
        }
    }

    // A well-formed Deliver from a node that does not exist is delivered: frames are not
    // authenticated (anyone who can PUBLISH on the Redis can speak for a node).
    let case = "well-formed Deliver from a fake origin on the canary's user channel";
    // Told first: the canaries' task must know before the frame can arrive.
    c.canaries
        .expect(vec![json!({"from": ATTACKER, "data": "forged"})], vec![])
        .await;
    let receivers = c.redis.publish(&user_a, &genuine).await;
    assert_eq!(receivers, 1, "case {case:?}: subscribers");
    c.check(case).await;

    let case = "well-formed Deliver from a fake origin on sb:broadcast";
    c.canaries
        .expect(
            vec![json!({"from": ATTACKER, "data": "forged"})],
            vec![json!({"from": ATTACKER, "data": "forged"})],
        )
        .await;
    let receivers = c.redis.publish("sb:broadcast", &genuine).await;
    assert_eq!(receivers, 2, "case {case:?}: subscribers");
    c.check(case).await;

    // A frame claiming to come from node A itself is dropped by node A as its own echo.
    let case = "well-formed Deliver claiming node A's own origin";
    let own = deliver(NODE_A, &forged_signal).encode();
    let receivers = c.redis.publish(&user_a, &own).await;
    assert_eq!(receivers, 1, "case {case:?}: subscribers");
    c.check(case).await;

    // Observation: a forged DisconnectUser on a user's channel is obeyed (no authentication).
    let case = "forged DisconnectUser on a victim's user channel";
    let mut victim = SioClient::connect(
        c.b.addr(),
        json!({"token": hs256(&claims("victim")), "deviceId": "victim-dev"}),
    )
    .await;
    let frame = ClusterFrame {
        origin: "evil-node".into(),
        sent_at_micros: now() * 1_000_000,
        trace: None,
        body: Body::DisconnectUser {
            user: "victim".into(),
        },
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.redis.publish("sb:user:victim", &frame.encode()).await == 0 {
        assert!(
            Instant::now() < deadline,
            "case {case:?}: node B never subscribed to the victim"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ended = victim.closed_within(Duration::from_secs(5)).await;
    eprintln!(
        "{case}: the victim's connection ended: {ended:?}; buffered {:?}",
        victim.take_buffered()
    );
    drop(victim);
    c.check(case).await;

    // Control actions on channels where they are not honoured.
    let case = "DisconnectUser for canary A on sb:broadcast";
    let frame = ClusterFrame {
        origin: "evil-node".into(),
        sent_at_micros: now() * 1_000_000,
        trace: None,
        body: Body::DisconnectUser {
            user: CANARY_A.into(),
        },
    };
    c.redis.publish("sb:broadcast", &frame.encode()).await;
    c.check(case).await;
    let case = "DisconnectUser for canary A on canary B's channel";
    c.redis
        .publish(&format!("sb:user:{CANARY_B}"), &frame.encode())
        .await;
    c.check(case).await;

    c.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Floods, measured: a canary's latency while the node is flooded (reported, not asserted)

/// Latency percentiles (ms) of a canary's `presence:query` round trips.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, usize) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (at(0.5), at(0.99), samples.len())
}

/// Round trips of `canary` every 10 ms until `stop` is set.
async fn sample_canary(
    canary: &mut SioClient,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t0 = Instant::now();
        let id = canary.emit_with_ack("presence:query", json!({"userIds": [CANARY_B]}));
        let ack = canary.ack(id).await;
        samples.push(t0.elapsed());
        assert_eq!(ack["ok"], true, "the canary is answered: {ack}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    samples
}

/// A request to sample until the flag is set, and where to send the samples.
type SampleRequest = (
    Arc<std::sync::atomic::AtomicBool>,
    oneshot::Sender<Vec<Duration>>,
);

/// The canary client on a thread and runtime of its own (pinned to `core` when given), so the
/// flooders' tasks never delay its round trips from the client side.
struct Canary {
    requests: mpsc::UnboundedSender<SampleRequest>,
}

impl Canary {
    /// Connect the canary as `CANARY_A` to `addr` from its own thread.
    async fn start(addr: SocketAddr, core: Option<core_affinity::CoreId>) -> Canary {
        let (requests, mut incoming) = mpsc::unbounded_channel::<SampleRequest>();
        let (ready, connected) = oneshot::channel();
        std::thread::Builder::new()
            .name("canary".into())
            .spawn(move || {
                if let Some(core) = core {
                    assert!(core_affinity::set_for_current(core), "pin the canary");
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the canary's runtime");
                runtime.block_on(async move {
                    let mut canary = SioClient::connect(
                        addr,
                        json!({"token": KeyMode::Hs256.token(CANARY_A), "deviceId": "canary"}),
                    )
                    .await;
                    let _ = ready.send(());
                    while let Some((stop, reply)) = incoming.recv().await {
                        let _ = reply.send(sample_canary(&mut canary, stop).await);
                    }
                });
            })
            .expect("spawn the canary thread");
        connected.await.expect("the canary connected");
        Canary { requests }
    }

    /// The canary's round trips until `stop` is set.
    async fn sample(&self, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<Duration> {
        let (reply, samples) = oneshot::channel();
        self.requests
            .send((stop, reply))
            .expect("the canary thread runs");
        samples.await.expect("the canary's samples")
    }
}

/// Run `attack` for `secs` while the canary samples; print the canary's latency.
async fn measured<F>(canary: &Canary, phase: &str, secs: u64, attack: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let attacking = tokio::spawn(async move {
        let out = attack.await;
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    });
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let samples = canary.sample(stop).await;
    timer.abort();
    let out = attacking.await.expect("the attack task");
    let (p50, p99, n) = percentiles(samples);
    eprintln!("CANARY phase={phase} samples={n} p50_ms={p50:.2} p99_ms={p99:.2}");
    out
}

/// With two cores or more: the node and the canary on the first, the flooders on the others.
fn flood_cores() -> Option<(core_affinity::CoreId, Vec<core_affinity::CoreId>)> {
    let mut cores = core_affinity::get_core_ids()?;
    if cores.len() < 2 {
        return None;
    }
    let first = cores.remove(0);
    Some((first, cores))
}

/// Probes and scrapes over an address's rate wait for their turn, and past a second's wait are
/// refused with `429` (held for that second, so ignoring refusals gains nothing); an
/// `X-Forwarded-For` from an untrusted peer does not buy a fresh budget.
#[tokio::test]
async fn probe_floods_are_paced_per_address() {
    let node = Node::start(&["--jwt-secret", SECRET, "--probes-per-ip-per-sec", "5"]).await;
    let addr = node.addr();
    let replies = futures_util::future::join_all((0..40).map(|i| async move {
        let path = if i % 2 == 0 {
            "/metrics"
        } else {
            "/health/live"
        };
        let forged = format!("203.0.113.{i}");
        let started = Instant::now();
        let res = http_get_with_headers(addr, path, &[("X-Forwarded-For", &forged)]).await;
        (res.status, started.elapsed())
    }))
    .await;
    let served: Vec<_> = replies.iter().filter(|(s, _)| *s == 200).collect();
    let refused: Vec<_> = replies.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(served.len() + refused.len(), 40, "{replies:?}");
    // A burst of 5, then one every 200 ms for at most a second: 10 (11 at a slot boundary).
    assert!(
        (9..=11).contains(&served.len()),
        "served {} of 40: {replies:?}",
        served.len()
    );
    let delayed = served
        .iter()
        .filter(|(_, took)| *took >= Duration::from_millis(150))
        .count();
    assert!(delayed >= 4, "the ones past the burst waited: {replies:?}");
    assert!(
        refused
            .iter()
            .all(|(_, took)| *took >= Duration::from_millis(900)),
        "refusals are held for a second: {replies:?}"
    );
    // The budget refills: after a quiet while, probes are served at once again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let started = Instant::now();
    assert_eq!(http_get(addr, "/health/live").await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(150));
}

#[test]
fn floods_leave_the_canary_answering() {
    let cores = flood_cores();
    let flooders = cores.as_ref().map(|(_, rest)| rest.clone());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(64 * 1024 * 1024)
        .on_thread_start(move || {
            if let Some(rest) = &flooders {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                core_affinity::set_for_current(rest[i % rest.len()]);
            }
        })
        .build()
        .expect("a tokio runtime");
    runtime.block_on(floods_body(cores.map(|(first, _)| first)));
}

/// A `/health` + `/metrics` flood, 2,000 sockets of one user and a login flood against a
/// one-worker node, one after another, with a canary measuring its round trips throughout
/// (`cargo nextest run -p switchboard-tests --test hostile floods --no-capture` prints the
/// `CANARY` lines). Asserted: the canary is answered throughout, and each flood meets its
/// limit (refused logins, the socket cap); times are reported, never asserted. With `core`, the
/// node and the canary run on that core and the flooders on the others.
async fn floods_body(core: Option<core_affinity::CoreId>) {
    let node = Node::start(&[
        "--jwt-secret",
        SECRET,
        "--workers",
        "1",
        "--user-message-limit",
        "100000",
        "--socket-event-limit",
        "100000",
    ])
    .await;
    let addr = node.addr();
    if let Some(core) = core {
        let pinned = std::process::Command::new("taskset")
            .args([
                "-a",
                "-p",
                "-c",
                &core.id.to_string(),
                &node.pid().to_string(),
            ])
            .output()
            .expect("taskset (util-linux)");
        assert!(pinned.status.success(), "taskset: {pinned:?}");
    }
    eprintln!("CANARY cores: node and canary on {core:?}, flooders on the others");
    let canary = Canary::start(addr, core).await;
    measured(
        &canary,
        "baseline",
        3,
        tokio::time::sleep(Duration::from_secs(3)),
    )
    .await;

    let deadline = || Instant::now() + Duration::from_secs(3);
    let requests = measured(&canary, "health+metrics flood", 3, async move {
        let until = deadline();
        let mut tasks = Vec::new();
        for i in 0..8 {
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                let path = if i % 2 == 0 {
                    "/health/ready"
                } else {
                    "/metrics"
                };
                while Instant::now() < until {
                    let res = http_get(addr, path).await;
                    assert!(
                        [200, 503, 429].contains(&res.status),
                        "{path}: {}",
                        res.status
                    );
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("an http flooder");
        }
        total
    })
    .await;
    eprintln!("CANARY health+metrics flood: {requests} requests");
    // Paced at the default 50 a second per address (a second's worth at once), whatever the
    // flooders' pace: 3 s plus the burst, and the requests still in flight at the end.
    assert!(
        requests <= 50 * 4 + 8,
        "{requests} probe requests answered in 3 s: not paced"
    );

    let (admitted, refused) = measured(&canary, "2000 sockets of one user", 3, async move {
        let mut tasks = Vec::new();
        for chunk in 0..20 {
            tasks.push(tokio::spawn(async move {
                let (mut admitted, mut refused, mut kept) = (0u32, 0u32, Vec::new());
                for i in 0..100 {
                    let auth = json!({
                        "token": KeyMode::Hs256.token(ATTACKER),
                        "deviceId": format!("d-{chunk}-{i}"),
                    });
                    match SioClient::try_connect(addr, auth).await {
                        Ok(client) => {
                            admitted += 1;
                            kept.push(client);
                        }
                        Err(refusal) => {
                            assert!(refusal.contains("too_many_sockets"), "{refusal}");
                            refused += 1;
                        }
                    }
                }
                (admitted, refused, kept)
            }));
        }
        let (mut admitted, mut refused, mut kept) = (0, 0, Vec::new());
        for t in tasks {
            let (a, r, k) = t.await.expect("a socket opener");
            admitted += a;
            refused += r;
            kept.extend(k);
        }
        drop(kept);
        (admitted, refused)
    })
    .await;
    eprintln!("CANARY 2000 sockets: {admitted} admitted, {refused} refused");
    assert_eq!(admitted, 50, "the default cap of 50 sockets per user");
    assert_eq!(refused, 1950);
    // Last: past its budget the address (every client here) is refused for a minute.
    let (attempts, unchecked) = measured(&canary, "login flood", 3, async move {
        let until = deadline();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            tasks.push(tokio::spawn(async move {
                let (mut attempts, mut unchecked) = (0u64, 0u64);
                while Instant::now() < until {
                    let (mut ws, _) = switchboard_tests::ws_connect(addr).await;
                    // Until the node closes the connection (after three refusals).
                    for _ in 0..4 {
                        ws.send_text(r#"40{"token":"not-a-token"}"#).await;
                        match tokio::time::timeout(Duration::from_secs(2), ws.recv()).await {
                            Ok(WsEvent::Text(t)) if t.starts_with("44") => {
                                attempts += 1;
                                unchecked += u64::from(t.contains("too_many_attempts"));
                            }
                            _ => break,
                        }
                    }
                }
                (attempts, unchecked)
            }));
        }
        let mut total = (0, 0);
        for t in tasks {
            let (a, u) = t.await.expect("a login flooder");
            total = (total.0 + a, total.1 + u);
        }
        total
    })
    .await;
    eprintln!("CANARY login flood: {attempts} refused logins, {unchecked} of them unchecked");
    assert!(attempts > 30, "the flood ran: {attempts}");
    assert!(
        unchecked >= attempts - 30,
        "past the address's 30 a minute, logins are refused unchecked: {unchecked} of {attempts}"
    );

    measured(
        &canary,
        "after",
        2,
        tokio::time::sleep(Duration::from_secs(2)),
    )
    .await;
}
